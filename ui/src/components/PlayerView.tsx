import { useEffect, useEffectEvent, useLayoutEffect, useRef, useState, type CSSProperties, type PointerEvent } from "react";
import { useBackend } from "../backend";
import type { Job, LanePeaks, LoopRegion, MixControls, PlayerStatus, SongView, StemControl } from "../bindings";
import { errorText } from "../errors";
import { bpmText, formatDuration, keyText } from "../format";
import { dbText, dbToGain, FADER_MAX_DB, FADER_MIN_DB, gainToDb, loadMix, panText, saveMix } from "../mixPrefs";
import {
  audible,
  clampWindow,
  formatTime,
  frameAt,
  panWindow,
  rulerTicks,
  unityControls,
  xOf,
  zoomWindow,
  type FrameWindow,
} from "../timeline";
import { Alert } from "./Alert";
import { ExportPanel } from "./ExportPanel";
import { LevelMeter } from "./LevelMeter";
import { BeatControls } from "./BeatControls";
import { TempoPitch } from "./TempoPitch";

const LANE_HEIGHT = 64;
const SEEK_STEP_SECONDS = 5;

/** How often the lanes of a song still separating are fetched again. */
const STREAM_PEAKS_MS = 1500;

interface Props {
  song: Job;
  /** Changes whenever a song reaches the library (a song still separating then takes its finished files). */
  version?: number;
  onClose(): void;
}

function Waveform({ peaks, width, color, dim }: { peaks?: LanePeaks; width: number; color: string; dim: boolean }) {
  const ref = useRef<HTMLCanvasElement>(null);
  useEffect(() => {
    const canvas = ref.current;
    if (!canvas || width <= 0) return;
    const dpr = window.devicePixelRatio || 1;
    canvas.width = Math.round(width * dpr);
    canvas.height = Math.round(LANE_HEIGHT * dpr);
    const ctx = canvas.getContext("2d");
    if (!ctx || !peaks) return;
    ctx.clearRect(0, 0, canvas.width, canvas.height);
    ctx.fillStyle = color;
    ctx.globalAlpha = dim ? 0.3 : 1;
    const n = peaks.min.length;
    const mid = canvas.height / 2;
    const w = canvas.width / Math.max(1, n);
    for (let i = 0; i < n; i++) {
      const top = mid - (peaks.max[i] ?? 0) * mid;
      const bottom = mid - (peaks.min[i] ?? 0) * mid;
      ctx.fillRect(i * w, top, Math.max(1, w), Math.max(1, bottom - top));
    }
  }, [peaks, width, color, dim]);
  return <canvas ref={ref} className="lane__wave" style={{ blockSize: LANE_HEIGHT }} aria-hidden="true" />;
}

/** A finished song: waveform lanes, synced playback with per-stem mute/solo/volume, loop, zoom, export. */
/** Elements whose keys are their own (typing or choosing), not the player's. */
const TYPING_FIELDS =
  "input:not([type=range]):not([type=button]), select, textarea, [contenteditable=true], [contenteditable=''], [data-own-keys]";

export function PlayerView({ song, version = 0, onClose }: Props) {
  const backend = useBackend();
  const [view, setView] = useState<SongView | null>(null);
  const [error, setError] = useState<string | null>(null);
  const [status, setStatus] = useState<PlayerStatus | null>(null);
  const [controls, setControls] = useState<MixControls | null>(null);
  const [selected, setSelected] = useState(0);
  const [win, setWin] = useState<FrameWindow | null>(null);
  const [loop, setLoop] = useState<LoopRegion | null>(null);
  const [dragLoop, setDragLoop] = useState<LoopRegion | null>(null);
  const [peaks, setPeaks] = useState<LanePeaks[] | null>(null);
  const [width, setWidth] = useState(0);
  /** Bumped while the song separates, to fetch the lanes again as they fill in. */
  const [peaksTick, setPeaksTick] = useState(0);
  const area = useRef<HTMLDivElement>(null);
  const drag = useRef<{ from: number; x: number } | null>(null);
  const lastScrub = useRef(0);

  useEffect(() => {
    let live = true;
    backend
      .openSong(song.id, (s) => {
        if (live) setStatus(s);
      })
      .then(
        (v) => {
          if (!live) return;
          setView(v);
          // The mix as it was left last time, if it still fits the song.
          const saved = loadMix(v.id, v.stems.length, v.frames);
          setControls(saved?.controls ?? unityControls(v.stems.length));
          setWin(saved?.view ?? { start: 0, end: v.frames });
          setLoop(saved?.loop ?? null);
          if (saved && v.output) {
            backend.setControls(saved.controls).catch((e: unknown) => live && setError(errorText(e)));
            if (saved.loop) backend.setLoop(saved.loop).catch((e: unknown) => live && setError(errorText(e)));
          }
        },
        (e: unknown) => live && setError(errorText(e)),
      );
    return () => {
      live = false;
      void backend.closeSong();
    };
  }, [backend, song.id]);

  // A song still separating: its lanes fill in as segments finish, and once
  // its job is done (a song reached the library) the player takes the
  // finished files, without a gap.
  const streaming = view?.streaming ?? false;
  useEffect(() => {
    if (!streaming) return;
    const t = setInterval(() => setPeaksTick((n) => n + 1), STREAM_PEAKS_MS);
    return () => clearInterval(t);
  }, [streaming]);
  const viewId = view?.id;
  useEffect(() => {
    if (!streaming || viewId === undefined) return;
    let live = true;
    backend.songStreamDone(viewId).then(
      (v) => live && setView(v),
      () => {}, // not done yet: the next song to reach the library asks again
    );
    return () => {
      live = false;
    };
  }, [backend, streaming, viewId, version]);

  useLayoutEffect(() => {
    const el = area.current;
    if (!el) return;
    const measure = () => setWidth(el.clientWidth);
    measure();
    if (typeof ResizeObserver === "undefined") return;
    const ro = new ResizeObserver(measure);
    ro.observe(el);
    return () => ro.disconnect();
  }, [view]);

  useEffect(() => {
    if (!view || !win || width <= 0) return;
    let live = true;
    // One column per device pixel: sharp on HiDPI screens (the backend
    // caps it at 8192).
    const columns = Math.min(8192, Math.round(width * (window.devicePixelRatio || 1)));
    backend.songPeaks(view.id, win.start, win.end, columns).then(
      (p) => live && setPeaks(p),
      (e: unknown) => live && setError(errorText(e)),
    );
    return () => {
      live = false;
    };
  }, [backend, view, win, width, peaksTick]);

  // Remember the mix, loop and zoom for the next time this song opens.
  useEffect(() => {
    // (A/B is a moment's comparison: the song reopens on the mix)
    if (view && controls && win) saveMix(view.id, { controls: { ...controls, original: false }, loop, view: win });
  }, [view, controls, loop, win]);
  const lastLoop = useRef<LoopRegion | null>(null);

  const rate = view?.sampleRate ?? 44_100;
  const frames = view?.frames ?? 0;
  const position = status?.position ?? 0;
  const playing = status?.playing ?? false;
  const canPlay = !!view?.output;

  // Keep the playhead in view while playing: page forward when it leaves.
  useEffect(() => {
    if (!playing || !win || frames === 0) return;
    if (position > win.end || position < win.start) {
      const span = win.end - win.start;
      setWin(clampWindow({ start: position, end: position + span }, frames));
    }
  }, [playing, position, win, frames]);

  function run(action: Promise<void>) {
    action.catch((e: unknown) => setError(errorText(e)));
  }

  function updateControls(next: MixControls) {
    setControls(next);
    if (canPlay) run(backend.setControls(next));
  }

  /** Change one stem's controls. */
  function changeStem(index: number, change: (s: StemControl) => Partial<StemControl>) {
    if (!controls) return;
    updateControls({ ...controls, stems: controls.stems.map((s, i) => (i === index ? { ...s, ...change(s) } : s)) });
  }
  const setPan = (index: number, pan: number) => changeStem(index, () => ({ pan }));
  const setGain = (index: number, gain: number) => changeStem(index, () => ({ gain }));
  const toggle = (index: number, key: "mute" | "solo") => changeStem(index, (s) => ({ [key]: !s[key] }));

  function seek(frame: number) {
    if (!canPlay) return;
    run(backend.seek(Math.max(0, Math.min(frames, Math.round(frame)))));
  }

  function togglePlay() {
    if (!canPlay) return;
    run(playing ? backend.pause() : backend.play());
  }

  function applyLoop(region: LoopRegion | null) {
    setLoop(region);
    if (canPlay) run(backend.setLoop(region));
  }

  // The wheel over the waveforms pans a zoomed view (vertical or horizontal
  // wheel, trackpad swipes) and zooms with Ctrl; an unzoomed view lets the
  // page scroll. A native listener: React's wheel listener is passive.
  const timeline = useRef<HTMLDivElement>(null);
  const onWheel = useEffectEvent((e: WheelEvent) => {
    if (!win || frames === 0) return;
    const delta = Math.abs(e.deltaX) > Math.abs(e.deltaY) ? e.deltaX : e.deltaY;
    if (delta === 0) return;
    if (e.ctrlKey) {
      e.preventDefault();
      zoom(delta > 0 ? 1.25 : 0.8);
      return;
    }
    const span = win.end - win.start;
    if (span >= frames) return;
    e.preventDefault();
    // deltaMode 1 = lines, 2 = pages; pixels otherwise.
    const px = delta * (e.deltaMode === 1 ? 16 : e.deltaMode === 2 ? Math.max(width, 1) : 1);
    setWin(panWindow(win, (px * span) / Math.max(width, 1), frames));
  });
  useEffect(() => {
    const el = timeline.current;
    if (!el) return;
    const handler = (e: WheelEvent) => onWheel(e);
    el.addEventListener("wheel", handler, { passive: false });
    return () => el.removeEventListener("wheel", handler);
  }, [view]);

  function zoom(factor: number) {
    if (!win) return;
    const anchor = position >= win.start && position <= win.end ? position : (win.start + win.end) / 2;
    setWin(zoomWindow(win, factor, anchor, frames));
  }

  const onKey = useEffectEvent((e: KeyboardEvent) => {
    const t = e.target as HTMLElement | null;
    // Transport keys work wherever focus is (a fader, a button) except where
    // keys type or choose: text fields, lists, check boxes, radio buttons and
    // dialogs. A focused fader keeps ↑/↓ for its volume; ←/→ seek.
    if (t && (t.closest(TYPING_FIELDS) || t.closest(".dialog"))) return;
    if (!view || !controls) return;
    if (e.key === " ") {
      e.preventDefault();
      togglePlay();
    } else if (e.key === "ArrowLeft" || e.key === "ArrowRight") {
      e.preventDefault();
      const step = (e.shiftKey ? 1 : SEEK_STEP_SECONDS) * rate * (e.key === "ArrowLeft" ? -1 : 1);
      seek(position + step);
    } else if (e.key === "m" || e.key === "M") {
      toggle(selected, "mute");
    } else if (e.key === "s" || e.key === "S") {
      toggle(selected, "solo");
    } else if (/^[1-9]$/.test(e.key) && Number(e.key) <= view.stems.length) {
      setSelected(Number(e.key) - 1);
    } else if (e.key === "[" || e.key === "]" || e.key === "i" || e.key === "I" || e.key === "o" || e.key === "O") {
      // Loop in ([ or I) / loop out (] or O) at the playhead, keeping the
      // other end when it still makes a region (else the song's start or end).
      const at = Math.round(position);
      const loopIn = e.key === "[" || e.key === "i" || e.key === "I";
      const region = loopIn
        ? { start: at, end: loop && loop.end > at ? loop.end : frames }
        : { start: loop && loop.start < at ? loop.start : 0, end: at };
      if (region.end > region.start) applyLoop(region);
    } else if (e.key === "l" || e.key === "L") {
      // Loop on/off: off keeps the region for the next L.
      if (loop) {
        lastLoop.current = loop;
        applyLoop(null);
      } else if (lastLoop.current) {
        applyLoop(lastLoop.current);
      }
    } else if (e.key === "\\") {
      applyLoop(null);
    }
  });
  useEffect(() => {
    const handler = (e: KeyboardEvent) => onKey(e);
    document.addEventListener("keydown", handler);
    return () => document.removeEventListener("keydown", handler);
  }, []);

  function pointerFrame(e: PointerEvent<HTMLElement>): number {
    const rect = e.currentTarget.getBoundingClientRect();
    return win ? frameAt(e.clientX - rect.left, rect.width, win) : 0;
  }

  function onRulerDown(e: PointerEvent<HTMLDivElement>) {
    e.currentTarget.setPointerCapture?.(e.pointerId);
    drag.current = { from: pointerFrame(e), x: e.clientX };
  }
  function onRulerMove(e: PointerEvent<HTMLDivElement>) {
    const d = drag.current;
    if (!d || Math.abs(e.clientX - d.x) < 4) return;
    const to = pointerFrame(e);
    setDragLoop({ start: Math.min(d.from, to), end: Math.max(d.from, to) });
  }
  function onRulerUp(e: PointerEvent<HTMLDivElement>) {
    const d = drag.current;
    drag.current = null;
    setDragLoop(null);
    if (!d) return;
    if (Math.abs(e.clientX - d.x) < 4) {
      seek(d.from);
      return;
    }
    const to = pointerFrame(e);
    const region = { start: Math.min(d.from, to), end: Math.max(d.from, to) };
    if (region.end > region.start) applyLoop(region);
  }

  if (error && !view) {
    return (
      <section className="player" aria-label="Player">
        <button type="button" className="button" onClick={onClose}>
          Back to library
        </button>
        <Alert title="The song could not be opened">{error}</Alert>
      </section>
    );
  }
  if (!view || !controls || !win) {
    return (
      <section className="player" aria-label="Player" aria-busy="true">
        <p className="muted">Opening “{song.title}”…</p>
      </section>
    );
  }

  const shownLoop = dragLoop ?? loop;
  const playheadX = xOf(position, width, win);
  // Where separation has got to, while it runs.
  const separated = view.streaming ? (status?.separated ?? 0) : null;
  const aheadX = separated === null ? null : Math.max(0, xOf(separated, width, win));
  const stemOffset = view.lanes.length - view.stems.length;

  return (
    <section className="player" aria-label="Player">
      <div className="player__bar">
        <button type="button" className="button" onClick={onClose}>
          Back to library
        </button>
        <h2 className="song__title">{view.title}</h2>
        {(bpmText(song.analysis) || keyText(song.analysis)) && (
          <span className="player__facts muted" data-testid="player-analysis">
            {[bpmText(song.analysis), keyText(song.analysis)].filter(Boolean).join(" · ")}
          </span>
        )}
      </div>
      {view.playerError && (
        <Alert title="Playback is not available">
          {view.playerError} Waveforms and export still work.
        </Alert>
      )}
      {status?.error && <Alert title="Playback stopped">{status.error}</Alert>}
      {error && (
        <Alert title="Something went wrong" onDismiss={() => setError(null)}>
          {error}
        </Alert>
      )}
      <div className="transport" role="toolbar" aria-label="Transport">
        <button
          type="button"
          className="button button--primary transport__play"
          disabled={!canPlay}
          onClick={togglePlay}
          aria-label={playing ? "Pause" : "Play"}
          data-testid="play"
        >
          {playing ? "Pause" : "Play"}
        </button>
        <span className="transport__time" data-testid="position" data-frame={position}>
          {formatTime(position / rate, true)} / {formatDuration(frames / rate)}
        </span>
        <label className="transport__master">
          Master
          <input
            type="range"
            min={0}
            max={2}
            step={0.01}
            value={controls.master}
            aria-label="Master volume"
            onChange={(e) => updateControls({ ...controls, master: Number(e.target.value) })}
          />
        </label>
        <LevelMeter level={status?.master} label="Master" />
        <TempoPitch
          tempo={controls.tempo ?? 1}
          transpose={controls.transpose ?? 0}
          onChange={(tp) => updateControls({ ...controls, ...tp })}
        />
        {view.canCompare && (
          <button
            type="button"
            className="button button--small"
            aria-pressed={controls.original ?? false}
            title="A/B: hear the original song instead of the mix (B), and back"
            onClick={() => updateControls({ ...controls, original: !(controls.original ?? false) })}
            data-testid="ab"
          >
            Hear original
          </button>
        )}
        {view.streaming && (
          <span className="transport__separating muted" role="status" data-testid="separating">
            {status?.waiting
              ? "Waiting for the separation to catch up…"
              : `Separating: ${formatTime((separated ?? 0) / rate)} of ${formatDuration(frames / rate)} ready`}
          </span>
        )}
        <BeatControls
          bpm={song.analysis?.bpm ?? null}
          metronome={controls.metronome ?? false}
          countIn={controls.countIn ?? false}
          countingIn={status?.countingIn ?? false}
          onChange={(change) => updateControls({ ...controls, ...change })}
        />
        <span className="transport__spacer" />
        {loop && (
          <button type="button" className="button" onClick={() => applyLoop(null)}>
            Clear loop ({formatTime(loop.start / rate, true)}–{formatTime(loop.end / rate, true)})
          </button>
        )}
        <button type="button" className="button" onClick={() => zoom(0.5)} aria-label="Zoom in">
          +
        </button>
        <button type="button" className="button" onClick={() => zoom(2)} aria-label="Zoom out">
          −
        </button>
        <button type="button" className="button" onClick={() => setWin({ start: 0, end: frames })}>
          Fit
        </button>
      </div>
      <div className="timeline" ref={timeline}>
        <div className="timeline__head" />
        <div
          className="ruler"
          data-testid="ruler"
          onPointerDown={onRulerDown}
          onPointerMove={onRulerMove}
          onPointerUp={onRulerUp}
          title="Click to seek, drag to loop"
        >
          {rulerTicks(win, width, rate).map((t) => (
            <span key={t} className="ruler__tick" style={{ insetInlineStart: xOf(t * rate, width, win) }}>
              {formatTime(t, t % 1 !== 0)}
            </span>
          ))}
          {shownLoop && (
            <span
              className="ruler__loop"
              style={{
                insetInlineStart: xOf(shownLoop.start, width, win),
                inlineSize: Math.max(1, xOf(shownLoop.end, width, win) - xOf(shownLoop.start, width, win)),
              }}
            />
          )}
        </div>
        {view.lanes.map((lane, li) => {
          const si = li - stemOffset;
          const stem = si >= 0 ? controls.stems[si] : null;
          const heard = si < 0 || audible(controls, si);
          return (
            <div
              key={lane}
              className="lane"
              style={{ "--lane-color": view.laneStyles[li]?.color ?? "#888" } as CSSProperties}
              data-testid="lane"
              data-lane={lane}
              aria-selected={si === selected ? "true" : undefined}
            >
              <div className="lane__controls">
                <button
                  type="button"
                  className="lane__name"
                  disabled={si < 0}
                  onClick={() => si >= 0 && setSelected(si)}
                  aria-label={si >= 0 ? `Select ${lane} (${si + 1})` : lane}
                >
                  {si >= 0 ? `${si + 1} ` : ""}
                  {view.laneStyles[li]?.label ?? lane}
                </button>
                {stem && (
                  <>
                    <button
                      type="button"
                      className="toggle"
                      aria-pressed={stem.mute}
                      aria-label={`Mute ${lane}`}
                      onClick={() => toggle(si, "mute")}
                    >
                      M
                    </button>
                    <button
                      type="button"
                      className="toggle toggle--solo"
                      aria-pressed={stem.solo}
                      aria-label={`Solo ${lane}`}
                      onClick={() => toggle(si, "solo")}
                    >
                      S
                    </button>
                    <input
                      type="range"
                      min={FADER_MIN_DB}
                      max={FADER_MAX_DB}
                      step={0.5}
                      value={gainToDb(stem.gain)}
                      aria-label={`${lane} volume`}
                      aria-valuetext={dbText(stem.gain)}
                      title={`${dbText(stem.gain)} (double-click: 0 dB)`}
                      onChange={(e) => setGain(si, dbToGain(Number(e.target.value)))}
                      onDoubleClick={() => setGain(si, 1)}
                    />
                    <span className="lane__db" aria-hidden="true">
                      {dbText(stem.gain)}
                    </span>
                    <input
                      type="range"
                      className="lane__pan"
                      min={-1}
                      max={1}
                      step={0.05}
                      value={stem.pan ?? 0}
                      aria-label={`${lane} pan`}
                      aria-valuetext={panText(stem.pan ?? 0)}
                      title={`Pan: ${panText(stem.pan ?? 0)} (double-click: centre)`}
                      onChange={(e) => setPan(si, Number(e.target.value))}
                      onDoubleClick={() => setPan(si, 0)}
                    />
                    <LevelMeter level={status?.levels[si]} label={lane} />
                  </>
                )}
              </div>
              <div
                className="lane__area"
                ref={li === 0 ? area : undefined}
                onPointerDown={(e) => {
                  e.currentTarget.setPointerCapture?.(e.pointerId);
                  seek(pointerFrame(e));
                }}
                onPointerMove={(e) => {
                  // Drag to scrub, at most ~20 seeks a second.
                  if (e.buttons !== 1 || e.timeStamp - lastScrub.current < 50) return;
                  lastScrub.current = e.timeStamp;
                  seek(pointerFrame(e));
                }}
              >
                <Waveform
                  peaks={peaks?.find((p) => p.lane === lane)}
                  width={width}
                  color={view.laneStyles[li]?.color ?? "#888"}
                  dim={!heard}
                />
              </div>
            </div>
          );
        })}
        {aheadX !== null && aheadX <= width && (
          <div
            className="separating-ahead"
            style={{ "--x": `${aheadX}px` } as CSSProperties}
            data-testid="separating-ahead"
            aria-hidden="true"
          >
            <span className="separating-ahead__label">Separating ahead</span>
          </div>
        )}
        {playheadX >= 0 && playheadX <= width && (
          <div className="playhead" style={{ "--x": `${playheadX}px` } as CSSProperties} aria-hidden="true" />
        )}
      </div>
      {win.end - win.start < frames && (
        <input
          type="range"
          className="timeline__scroll"
          aria-label="Scroll the waveforms"
          aria-valuetext={`Showing ${formatTime(win.start / rate)} to ${formatTime(win.end / rate)}`}
          data-own-keys=""
          min={0}
          max={frames - (win.end - win.start)}
          step={1}
          value={win.start}
          onChange={(e) => setWin(panWindow(win, Number(e.target.value) - win.start, frames))}
        />
      )}
      <p className="muted player__keys">
        Space play/pause · ←/→ seek 5 s (Shift: 1 s) · 1–{view.stems.length} select a lane · M mute · S solo · I O (or [ ])
        loop in/out · L loop on/off · \ clear loop · double-click a fader: 0 dB, a pan: centre
      </p>
      {view.streaming ? (
        <p className="muted" data-testid="export-later">
          Exports are ready once the separation is done.
        </p>
      ) : (
        <ExportPanel
          songId={view.id}
          stems={view.stems}
          controls={controls}
          loop={loop}
          defaultDir={song.outputDir ? `${song.outputDir}/exports` : ""}
        />
      )}
    </section>
  );
}

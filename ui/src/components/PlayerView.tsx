import { memo, useEffect, useEffectEvent, useLayoutEffect, useRef, useState } from "react";
import type { Job, JobState } from "../bindings";
import { bpmText, keyText } from "../format";
import { audible, formatTime, frameAt, panWindow, zoomWindow, type FrameWindow } from "../timeline";
import { Alert } from "./Alert";
import { ExportPanel } from "./ExportPanel";
import { Lane } from "./player/Lane";
import { Playhead, SeparatingAhead } from "./player/Playhead";
import { Ruler } from "./player/Ruler";
import { useStatus } from "./player/statusStore";
import { Transport } from "./player/Transport";
import { useLanePeaks, usePlayer, zoomAnchor } from "./player/usePlayer";
import { focusLost } from "../focus";

const SEEK_STEP_SECONDS = 5;
/**
 * Ctrl+wheel zoom per pixel of wheel delta: one mouse-wheel notch (100 px)
 * zooms by e^0.2 ≈ 1.22; a trackpad pinch (reported by Chromium-based
 * webviews as Ctrl+wheel with small deltas) zooms smoothly.
 */
const WHEEL_ZOOM_PER_PX = 0.002;

/** The lanes re-render only when their own props change (not with the status stream). */
const MemoLane = memo(Lane);

interface Props {
  song: Job;
  /** Changes whenever a song reaches the library (a song still separating then takes its finished files). */
  version?: number;
  /** The song's job as the queue knows it now (a song played while it
   * separates says when its job fails or is cancelled). */
  jobState?: JobState;
  onClose(): void;
}

/** Elements whose keys are their own (typing or choosing), not the player's. */
const TYPING_FIELDS =
  "input:not([type=range]):not([type=button]), select, textarea, [contenteditable=true], [contenteditable=''], [data-own-keys]";

/** Focused controls Space plays and pauses from: a fader's keys are its arrows. */
const SPACE_FOR_PLAY = "input[type=range], .transport__play";

/**
 * Whether `el` was reached with the keyboard (its focus shows), not left
 * focused by a mouse click: only then does Space press it.
 */
function keyboardFocused(el: Element): boolean {
  try {
    return el.matches(":focus-visible");
  } catch {
    // (An engine without the selector: the control keeps its key.)
    return true;
  }
}

/**
 * A song's player: waveform lanes, synced playback with per-stem
 * mute/solo/volume/pan and meters, speed and pitch, loop, zoom, export; a
 * song still separating plays up to its separated edge.
 *
 * Only the playhead, the clock and the meters follow the ~30 status updates
 * a second (see `player/statusStore`); the lanes render when the mix, the
 * view or the peaks change.
 */
export function PlayerView({ song, version = 0, jobState, onClose }: Props) {
  const { view, controls, win, loop, selected, error, stopped, store, actions } = usePlayer(song.id, version, jobState);
  const [width, setWidth] = useState(0);
  const area = useRef<HTMLDivElement>(null);
  const root = useRef<HTMLElement>(null);
  const timeline = useRef<HTMLDivElement>(null);
  // The button that opened the player went with the page it was on: the
  // keyboard's place is the song's title once it shows (only when the
  // focus was lost, not when the person has put it somewhere since).
  const title = useRef<HTMLHeadingElement>(null);
  const shown = view !== null;
  useEffect(() => {
    if (shown && focusLost()) title.current?.focus();
  }, [shown]);
  const statusError = useStatus(store, (s) => s?.error ?? null);

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

  // One column per device pixel: sharp on HiDPI screens (the backend caps it at 8192).
  const columns = Math.min(8192, Math.round(width * (window.devicePixelRatio || 1)));
  const { peaks, ready } = useLanePeaks(view, win, columns, actions.reportError, stopped !== null);

  const rate = view?.sampleRate ?? 44_100;
  const frames = view?.frames ?? 0;
  /** The loop L turned off, with the rate its frames are at (a song that
   * separated at 44.1 kHz takes its files' rate when they take over). */
  const lastLoop = useRef<{ region: NonNullable<typeof loop>; rate: number } | null>(null);

  /** The frame under a point of the screen (x in client pixels), or undefined off the lanes. */
  const frameUnder = (clientX: number): number | undefined => {
    const el = area.current;
    if (!el || !win) return undefined;
    const rect = el.getBoundingClientRect();
    const x = clientX - rect.left;
    return x >= 0 && x <= rect.width ? frameAt(x, rect.width, win) : undefined;
  };

  // The wheel over the waveforms pans a zoomed view (vertical or horizontal
  // wheel, trackpad swipes) and zooms with Ctrl (around the pointer); an
  // unzoomed view lets the page scroll. A native listener: React's wheel
  // listener is passive.
  const onWheel = useEffectEvent((e: WheelEvent) => {
    if (!win || frames === 0) return;
    const delta = Math.abs(e.deltaX) > Math.abs(e.deltaY) ? e.deltaX : e.deltaY;
    if (delta === 0) return;
    // deltaMode 1 = lines, 2 = pages; pixels otherwise.
    const px = delta * (e.deltaMode === 1 ? 16 : e.deltaMode === 2 ? Math.max(width, 1) : 1);
    if (e.ctrlKey) {
      e.preventDefault();
      actions.zoom(Math.exp(Math.max(-300, Math.min(300, px)) * WHEEL_ZOOM_PER_PX), frameUnder(e.clientX));
      return;
    }
    const span = win.end - win.start;
    if (span >= frames) return;
    e.preventDefault();
    actions.setWin(panWindow(win, (px * span) / Math.max(width, 1), frames));
  });

  // Pinch zoom: two fingers on a touch screen (pointer events; one finger
  // drags the view), and a trackpad pinch where the webview reports it as a
  // gesture (WebKit's `gesturechange`, scale relative to its start).
  const touches = useRef(new Map<number, number>());
  const gesture = useRef<{ win: FrameWindow; anchor: number } | null>(null);
  const onTouchMove = useEffectEvent((e: PointerEvent) => {
    const t = touches.current;
    const before = t.get(e.pointerId);
    if (before === undefined || !win || frames === 0) return;
    if (t.size === 1) {
      t.set(e.pointerId, e.clientX);
      // One finger drags the waveforms along.
      actions.setWin(panWindow(win, -((e.clientX - before) * (win.end - win.start)) / Math.max(width, 1), frames));
      return;
    }
    let other: number | undefined;
    for (const [id, x] of t) {
      if (id !== e.pointerId) {
        other = x;
        break;
      }
    }
    t.set(e.pointerId, e.clientX);
    if (other === undefined) return;
    const was = Math.abs(before - other);
    const now = Math.abs(e.clientX - other);
    if (was < 1 || now < 1) return;
    actions.zoom(was / now, frameUnder((e.clientX + other) / 2));
  });
  const onGesture = useEffectEvent((e: Event, phase: "start" | "change" | "end") => {
    const scale = (e as Event & { scale?: number }).scale;
    const clientX = (e as Event & { clientX?: number }).clientX;
    e.preventDefault();
    if (phase === "start" && win) {
      const under = clientX === undefined ? undefined : frameUnder(clientX);
      gesture.current = { win, anchor: under ?? zoomAnchor(win, store.get()?.position ?? 0) };
    }
    const g = gesture.current;
    if (phase === "change" && g && scale && Number.isFinite(scale) && scale > 0) {
      actions.setWin(zoomWindow(g.win, 1 / scale, g.anchor, frames));
    }
    if (phase === "end") gesture.current = null;
  });
  useEffect(() => {
    const el = timeline.current;
    if (!el) return;
    const t = touches.current;
    const touch =
      (f: (e: PointerEvent) => void): EventListener =>
      (e) => {
        if ((e as PointerEvent).pointerType === "touch") f(e as PointerEvent);
      };
    const forget: EventListener = (e) => t.delete((e as PointerEvent).pointerId);
    const listeners: [string, EventListener][] = [
      ["wheel", (e) => onWheel(e as WheelEvent)],
      // (Not a finger on the ruler: it draws a loop there, and the view
      // moving under it would put the loop's end elsewhere.)
      ["pointerdown", touch((e) => (e.target as Element | null)?.closest?.(".ruler") || t.set(e.pointerId, e.clientX))],
      ["pointermove", touch(onTouchMove)],
      ["pointerup", forget],
      ["pointercancel", forget],
      ["gesturestart", (e) => onGesture(e, "start")],
      ["gesturechange", (e) => onGesture(e, "change")],
      ["gestureend", (e) => onGesture(e, "end")],
    ];
    // (Not passive: the wheel and gestures zoom instead of scrolling the page.)
    for (const [type, listener] of listeners) el.addEventListener(type, listener, { passive: false });
    return () => {
      for (const [type, listener] of listeners) el.removeEventListener(type, listener);
      t.clear();
    };
  }, [view]);

  const onKey = useEffectEvent((e: KeyboardEvent) => {
    const t = e.target as HTMLElement | null;
    // Transport keys work wherever focus is (a fader, a button) except where
    // keys type or choose: text fields, lists, check boxes, radio buttons,
    // dialogs and the tab bar. A focused fader keeps ↑/↓ for its volume;
    // ←/→ seek. Not while another tab shows (the player stays open behind
    // it), nor with Ctrl, Alt or ⌘ (the system's and the webview's
    // shortcuts), nor for a key another handler took.
    if (t && (t.closest(TYPING_FIELDS) || t.closest(".dialog") || t.closest("[role=tab]"))) return;
    if (e.defaultPrevented || e.ctrlKey || e.metaKey || e.altKey) return;
    if (!root.current || root.current.closest("[hidden]")) return;
    // A held key repeats seeks, not toggles.
    if (e.repeat && e.key !== "ArrowLeft" && e.key !== "ArrowRight") return;
    if (!view || !controls) return;
    const position = store.get()?.position ?? 0;
    if (e.key === " ") {
      // Space activates a button or check box reached with the keyboard
      // (Mute, Export, Back); one a mouse click left focused, or nothing
      // of the kind focused (the song's title, where opening puts the
      // focus), and it is play/pause.
      const free =
        !t || t === document.body || t === document.documentElement || t === root.current || t === title.current;
      if (!free && !t.matches(SPACE_FOR_PLAY) && keyboardFocused(t)) return;
      e.preventDefault();
      actions.togglePlay();
    } else if (e.key === "ArrowLeft" || e.key === "ArrowRight") {
      e.preventDefault();
      const step = (e.shiftKey ? 1 : SEEK_STEP_SECONDS) * rate * (e.key === "ArrowLeft" ? -1 : 1);
      actions.seek(position + step);
    } else if (e.key === "m" || e.key === "M") {
      actions.toggle(selected, "mute");
    } else if (e.key === "s" || e.key === "S") {
      actions.toggle(selected, "solo");
    } else if (/^[1-9]$/.test(e.key) && Number(e.key) <= view.stems.length) {
      actions.select(Number(e.key) - 1);
    } else if (e.key === "[" || e.key === "]" || e.key === "i" || e.key === "I" || e.key === "o" || e.key === "O") {
      // Loop in ([ or I) / loop out (] or O) at the playhead, keeping the
      // other end when it still makes a region (else the song's start or end).
      const at = Math.round(position);
      const loopIn = e.key === "[" || e.key === "i" || e.key === "I";
      const region = loopIn
        ? { start: at, end: loop && loop.end > at ? loop.end : frames }
        : { start: loop && loop.start < at ? loop.start : 0, end: at };
      if (region.end > region.start) actions.applyLoop(region);
    } else if (e.key === "l" || e.key === "L") {
      // Loop on/off: off keeps the region for the next L.
      if (loop) {
        lastLoop.current = { region: loop, rate };
        actions.applyLoop(null);
      } else if (lastLoop.current) {
        const { region, rate: was } = lastLoop.current;
        const k = was > 0 ? rate / was : 1;
        const start = Math.round(region.start * k);
        const end = Math.min(frames, Math.round(region.end * k));
        if (end > start) actions.applyLoop({ start, end });
      }
    } else if (e.key === "\\") {
      actions.applyLoop(null);
    }
  });
  useEffect(() => {
    const handler = (e: KeyboardEvent) => onKey(e);
    document.addEventListener("keydown", handler);
    return () => document.removeEventListener("keydown", handler);
  }, []);

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
        <p className="muted">
          Opening “<bdi>{song.title}</bdi>”…
        </p>
      </section>
    );
  }

  const stemOffset = view.lanes.length - view.stems.length;
  const loading = !view.streaming && ready !== null && ready < 1;

  return (
    <section className="player" aria-label="Player" ref={root}>
      <div className="player__bar">
        <button type="button" className="button" onClick={onClose}>
          Back to library
        </button>
        <h2 className="song__title" ref={title} tabIndex={-1}>
          {view.title}
        </h2>
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
      {statusError && <Alert title="Playback stopped">{statusError}</Alert>}
      {stopped && (
        <Alert title="The separation stopped">
          {stopped} What was separated still plays; Retry in the queue separates the song again.
        </Alert>
      )}
      {error && (
        <Alert title="Something went wrong" onDismiss={() => actions.reportError(null)}>
          {error}
        </Alert>
      )}
      <Transport
        view={view}
        controls={controls}
        loop={loop}
        bpm={song.analysis?.bpm ?? null}
        store={store}
        actions={actions}
        stopped={stopped !== null}
      />
      {loading && (
        <div
          className="player__loading muted"
          role="progressbar"
          aria-label="Reading the waveforms"
          aria-valuemin={0}
          aria-valuemax={100}
          aria-valuenow={Math.round((ready ?? 0) * 100)}
          data-testid="peaks-loading"
        >
          Reading the waveforms… {Math.round((ready ?? 0) * 100)} % (the song already plays)
        </div>
      )}
      <div className="timeline" ref={timeline}>
        <div className="timeline__head" />
        <Ruler win={win} width={width} rate={rate} loop={loop} actions={actions} />
        {view.lanes.map((lane, li) => {
          const si = li - stemOffset;
          return (
            <MemoLane
              key={lane}
              lane={lane}
              label={view.laneStyles[li]?.label ?? lane}
              color={view.laneStyles[li]?.color ?? "#888"}
              stemIndex={si}
              stem={si >= 0 ? (controls.stems[si] ?? null) : null}
              heard={si < 0 || audible(controls, si)}
              selected={si === selected}
              peaks={peaks?.find((p) => p.lane === lane)}
              width={width}
              win={win}
              store={store}
              actions={actions}
              areaRef={li === 0 ? area : undefined}
              draggable={!view.streaming}
            />
          );
        })}
        {view.streaming && <SeparatingAhead store={store} win={win} width={width} />}
        <Playhead store={store} win={win} width={width} />
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
          onChange={(e) => actions.setWin(panWindow(win, Number(e.target.value) - win.start, frames))}
        />
      )}
      <p className="muted player__keys">
        Space play/pause · ←/→ seek 5 s (Shift: 1 s) · 1–{view.stems.length} select a lane · M mute · S solo · I O (or [ ])
        loop in/out · L loop on/off · \ clear loop · Ctrl+wheel or pinch: zoom · double-click a fader: 0 dB, a pan: centre · ⠿ drag a stem out
      </p>
      {view.streaming ? (
        <p className="muted" data-testid="export-later">
          {stopped ? "No exports: the separation did not finish." : "Exports are ready once the separation is done."}
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

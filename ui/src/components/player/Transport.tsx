import type { LoopRegion, MixControls, SongView } from "../../bindings";
import { formatDuration } from "../../format";
import { dbText } from "../../mixPrefs";
import { formatTime } from "../../timeline";
import { BeatControls } from "../BeatControls";
import { TempoPitch } from "../TempoPitch";
import { MasterMeter } from "./meters";
import { useStatus, type StatusStore } from "./statusStore";
import type { PlayerActions } from "./usePlayer";

/** Play/pause, following the status stream's `playing` only. */
function PlayButton({ store, disabled, actions }: { store: StatusStore; disabled: boolean; actions: PlayerActions }) {
  const playing = useStatus(store, (s) => s?.playing ?? false);
  return (
    <button
      type="button"
      className="button button--primary transport__play"
      disabled={disabled}
      onClick={actions.togglePlay}
      aria-label={playing ? "Pause" : "Play"}
      data-testid="play"
    >
      {playing ? "Pause" : "Play"}
    </button>
  );
}

/**
 * The playhead's time and the song's length. The playhead's frame and its
 * rate come from the same status: when finished files at another rate take
 * over, the status store changes before the page's view does.
 */
export function Clock({ store, rate, frames }: { store: StatusStore; rate: number; frames: number }) {
  const position = useStatus(store, (s) => s?.position ?? 0);
  const positionRate = useStatus(store, (s) => (s && s.sampleRate > 0 ? s.sampleRate : rate));
  return (
    <span className="transport__time" data-testid="position" data-frame={position} data-rate={positionRate}>
      {formatTime(position / positionRate, true)} / {formatDuration(frames / rate)}
    </span>
  );
}

/** How far a song still separating is, or that the playhead waits for it. */
function Separating({ store, rate, frames }: { store: StatusStore; rate: number; frames: number }) {
  const waiting = useStatus(store, (s) => s?.waiting ?? false);
  // `separated` is null once every frame is (the stems are being written):
  // no status yet is nothing separated.
  const separated = useStatus(store, (s) => (s ? (s.separated === null ? null : Math.floor(s.separated / rate)) : 0));
  return (
    <>
      {/* Not a live region: it changes with every separated segment, and a
          screen reader would talk over the music the whole time. */}
      <span className="transport__separating muted" data-testid="separating">
        {waiting
          ? "Waiting for the separation to catch up…"
          : separated === null
            ? "Separated: writing the stems…"
            : `Separating: ${formatTime(separated)} of ${formatDuration(frames / rate)} ready`}
      </span>
      {/* Said only when the sound stops to wait, and when it goes on. */}
      <span className="visually-hidden" role="status" data-testid="separating-wait">
        {waiting ? "Playback waits for the separation to catch up." : ""}
      </span>
    </>
  );
}

function Beat({
  store,
  bpm,
  controls,
  actions,
}: {
  store: StatusStore;
  bpm: number | null;
  controls: MixControls;
  actions: PlayerActions;
}) {
  const countingIn = useStatus(store, (s) => s?.countingIn ?? false);
  return (
    <BeatControls
      bpm={bpm}
      metronome={controls.metronome ?? false}
      countIn={controls.countIn ?? false}
      countingIn={countingIn}
      onChange={(change) => actions.changeControls(change)}
    />
  );
}

/** The transport bar: play, time, master, speed and pitch, A/B, click track, loop, zoom. */
export function Transport({
  view,
  controls,
  loop,
  bpm,
  store,
  actions,
  stopped = false,
}: {
  view: SongView;
  controls: MixControls;
  loop: LoopRegion | null;
  /** The song's detected tempo, or null. */
  bpm: number | null;
  store: StatusStore;
  actions: PlayerActions;
  /** The song's separation failed or was cancelled (it plays what was separated). */
  stopped?: boolean;
}) {
  const rate = view.sampleRate;
  return (
    <div className="transport" role="toolbar" aria-label="Transport">
      <PlayButton store={store} disabled={!view.output} actions={actions} />
      <Clock store={store} rate={rate} frames={view.frames} />
      <label className="transport__master">
        Master
        <input
          type="range"
          min={0}
          max={2}
          step={0.01}
          value={controls.master}
          aria-label="Master volume"
          // Said as the faders are, in dB (the slider is a linear gain).
          aria-valuetext={dbText(controls.master)}
          title={dbText(controls.master)}
          onChange={(e) => actions.changeControls({ master: Number(e.target.value) })}
        />
      </label>
      <MasterMeter store={store} />
      <TempoPitch
        tempo={controls.tempo ?? 1}
        transpose={controls.transpose ?? 0}
        onChange={(tp) => actions.changeControls(tp)}
      />
      {view.canCompare && (
        <button
          type="button"
          className="button button--small"
          aria-pressed={controls.original ?? false}
          title="A/B: hear the original song instead of the mix (B), and back"
          onClick={() => actions.changeControls({ original: !(controls.original ?? false) })}
          data-testid="ab"
        >
          Hear original
        </button>
      )}
      {view.streaming && !stopped && <Separating store={store} rate={rate} frames={view.frames} />}
      <Beat store={store} bpm={bpm} controls={controls} actions={actions} />
      <span className="transport__spacer" />
      {loop && (
        <button type="button" className="button" onClick={() => actions.applyLoop(null)}>
          Clear loop ({formatTime(loop.start / rate, true)}–{formatTime(loop.end / rate, true)})
        </button>
      )}
      <button type="button" className="button" onClick={() => actions.zoom(0.5)} aria-label="Zoom in">
        +
      </button>
      <button type="button" className="button" onClick={() => actions.zoom(2)} aria-label="Zoom out">
        −
      </button>
      <button type="button" className="button" onClick={() => actions.setWin({ start: 0, end: view.frames })}>
        Fit
      </button>
    </div>
  );
}

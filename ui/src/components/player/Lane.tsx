import { useRef, type CSSProperties, type PointerEvent } from "react";
import type { LanePeaks, StemControl } from "../../bindings";
import { dbText, dbToGain, FADER_MAX_DB, FADER_MIN_DB, gainToDb, panText } from "../../mixPrefs";
import { frameAt, type FrameWindow } from "../../timeline";
import { StemMeter } from "./meters";
import type { StatusStore } from "./statusStore";
import type { PlayerActions } from "./usePlayer";
import { Waveform } from "./Waveform";

export interface LaneProps {
  /** The lane's name (`mixture` or a stem). */
  lane: string;
  /** Name for people and colour, from the model's manifest. */
  label: string;
  color: string;
  /** Index of the stem in the mixer's controls; -1 for the mixture's lane. */
  stemIndex: number;
  stem: StemControl | null;
  heard: boolean;
  selected: boolean;
  peaks: LanePeaks | undefined;
  /** Width of the waveform area in CSS pixels. */
  width: number;
  win: FrameWindow;
  store: StatusStore;
  actions: PlayerActions;
  /** The first lane's waveform area is the one measured for the width. */
  areaRef?: React.Ref<HTMLDivElement>;
  /** The stem's finished file can be dragged out (not while separating). */
  draggable: boolean;
}

/**
 * One waveform lane with its mixer strip (name, mute, solo, fader in dB,
 * pan, meter). Renders when its own props change; its meter alone follows
 * the status stream.
 */
export function Lane({ lane, label, color, stemIndex: si, stem, heard, selected, peaks, width, win, store, actions, areaRef, draggable }: LaneProps) {
  const lastScrub = useRef(0);
  /** Where a touch went down: a tap (it did not move) seeks; a moving touch pans or pinches the view. */
  // The main button went down on the lane (a scrub ends where it comes up).
  const pressed = useRef(false);
  // The frame the lane last sought to.
  const lastFrame = useRef(-1);
  const touch = useRef<{ x: number; y: number } | null>(null);
  const frameOf = (e: PointerEvent<HTMLElement>) => {
    const rect = e.currentTarget.getBoundingClientRect();
    return frameAt(e.clientX - rect.left, rect.width, win);
  };
  return (
    <div
      className="lane"
      style={{ "--lane-color": color } as CSSProperties}
      data-testid="lane"
      data-lane={lane}
      aria-selected={selected ? "true" : undefined}
    >
      <div className="lane__controls">
        <button
          type="button"
          className="lane__name"
          disabled={si < 0}
          onClick={() => si >= 0 && actions.select(si)}
          aria-label={si >= 0 ? `Select ${label} (${si + 1})` : label}
          // Which lane M, S and 1-9 act on, said to screen readers too.
          aria-pressed={si >= 0 ? selected : undefined}
        >
          {si >= 0 ? `${si + 1} ` : ""}
          {label}
        </button>
        {stem && (
          <>
            {draggable && (
              <button
                type="button"
                className="lane__drag"
                aria-label={`Drag ${label} out`}
                title={`Drag the ${label} file into a DAW or a file manager (Enter: open its folder)`}
                onPointerDown={(e) => {
                  // The native drag follows the pressed button, so it starts on the press.
                  if (e.button !== 0) return;
                  e.preventDefault();
                  actions.dragOut({ kind: "stem", index: si });
                }}
                onClick={(e) => {
                  // A keyboard has no drag: the stem's folder opens instead,
                  // to take the file from there. (A mouse's click, detail ≥ 1,
                  // ends a press the drag already had.)
                  if (e.detail === 0) actions.openFolder();
                }}
              >
                ⠿
              </button>
            )}
            <button
              type="button"
              className="toggle"
              aria-pressed={stem.mute}
              aria-label={`Mute ${label}`}
              onClick={() => actions.toggle(si, "mute")}
            >
              M
            </button>
            <button
              type="button"
              className="toggle toggle--solo"
              aria-pressed={stem.solo}
              aria-label={`Solo ${label}`}
              onClick={() => actions.toggle(si, "solo")}
            >
              S
            </button>
            <input
              type="range"
              min={FADER_MIN_DB}
              max={FADER_MAX_DB}
              step={0.5}
              value={gainToDb(stem.gain)}
              aria-label={`${label} volume`}
              aria-valuetext={dbText(stem.gain)}
              title={`${dbText(stem.gain)} (double-click: 0 dB)`}
              onChange={(e) => actions.changeStem(si, () => ({ gain: dbToGain(Number(e.target.value)) }))}
              onDoubleClick={() => actions.changeStem(si, () => ({ gain: 1 }))}
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
              aria-label={`${label} pan`}
              aria-valuetext={panText(stem.pan ?? 0)}
              title={`Pan: ${panText(stem.pan ?? 0)} (double-click: centre)`}
              onChange={(e) => actions.changeStem(si, () => ({ pan: Number(e.target.value) }))}
              onDoubleClick={() => actions.changeStem(si, () => ({ pan: 0 }))}
            />
            <StemMeter store={store} index={si} label={label} />
          </>
        )}
      </div>
      <div
        className="lane__area"
        ref={areaRef}
        onPointerDown={(e) => {
          if (e.pointerType === "touch") {
            touch.current = { x: e.clientX, y: e.clientY };
            return;
          }
          // The main button only: a right click opens a menu, it does not seek.
          if (e.pointerType === "mouse" && e.button !== 0) return;
          e.currentTarget.setPointerCapture?.(e.pointerId);
          pressed.current = true;
          lastFrame.current = frameOf(e);
          actions.seek(lastFrame.current);
        }}
        onPointerMove={(e) => {
          // Drag to scrub, at most ~20 seeks a second: only a press that
          // began on the lane (not one dragged in from a fader or a handle).
          if (e.buttons === 0) pressed.current = false;
          if (!pressed.current || e.pointerType === "touch" || e.buttons !== 1) return;
          if (e.timeStamp - lastScrub.current < 50) return;
          lastScrub.current = e.timeStamp;
          lastFrame.current = frameOf(e);
          actions.seek(lastFrame.current);
        }}
        onPointerUp={(e) => {
          const t = touch.current;
          touch.current = null;
          if (e.pointerType === "touch" && t && Math.hypot(e.clientX - t.x, e.clientY - t.y) < 8) actions.seek(frameOf(e));
          // A scrub ends where the button is let go (its moves are thinned);
          // a click seeks once (a second seek to the same place would
          // repeat a moment of audio).
          const frame = frameOf(e);
          if (pressed.current && e.pointerType !== "touch" && frame !== lastFrame.current) actions.seek(frame);
          pressed.current = false;
        }}
        onPointerCancel={() => {
          touch.current = null;
          pressed.current = false;
        }}
      >
        <Waveform peaks={peaks} width={width} color={color} dim={!heard} />
      </div>
    </div>
  );
}

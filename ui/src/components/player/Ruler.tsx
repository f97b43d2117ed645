import { useRef, useState, type PointerEvent } from "react";
import type { LoopRegion } from "../../bindings";
import { frameAt, rulerLabel, rulerTicks, xOf, type FrameWindow } from "../../timeline";
import type { PlayerActions } from "./usePlayer";

/** Pixels a press may move and still be a click (seek) rather than a drag (loop). */
const CLICK_PX = 4;

/** The time ruler: marks at round times; click to seek, drag to set the loop. */
export function Ruler({
  win,
  width,
  rate,
  loop,
  actions,
}: {
  win: FrameWindow;
  width: number;
  /** The stems' sample rate in Hz. */
  rate: number;
  loop: LoopRegion | null;
  actions: PlayerActions;
}) {
  const drag = useRef<{ from: number; x: number } | null>(null);
  const [dragLoop, setDragLoop] = useState<LoopRegion | null>(null);
  const frameOf = (e: PointerEvent<HTMLElement>) => {
    const rect = e.currentTarget.getBoundingClientRect();
    return frameAt(e.clientX - rect.left, rect.width, win);
  };
  const shown = dragLoop ?? loop;
  const ticks = rulerTicks(win, width, rate);
  // Marks are a step apart; one mark alone is labelled as finely as the
  // window is wide.
  const step = ticks.length > 1 ? (ticks[1] ?? 0) - (ticks[0] ?? 0) : (win.end - win.start) / rate;
  return (
    <div
      className="ruler"
      data-testid="ruler"
      onPointerDown={(e) => {
        // The main button only: a right click opens a menu, it does not seek.
        if (e.pointerType === "mouse" && e.button !== 0) return;
        e.currentTarget.setPointerCapture?.(e.pointerId);
        drag.current = { from: frameOf(e), x: e.clientX };
      }}
      onPointerMove={(e) => {
        const d = drag.current;
        if (d && e.pointerType === "mouse" && e.buttons === 0) {
          // Its release was lost (let go outside the window, a menu that
          // took it): no loop follows the pointer.
          drag.current = null;
          setDragLoop(null);
          return;
        }
        if (!d || Math.abs(e.clientX - d.x) < CLICK_PX) return;
        const to = frameOf(e);
        setDragLoop({ start: Math.min(d.from, to), end: Math.max(d.from, to) });
      }}
      onPointerUp={(e) => {
        const d = drag.current;
        drag.current = null;
        setDragLoop(null);
        if (!d) return;
        if (Math.abs(e.clientX - d.x) < CLICK_PX) {
          actions.seek(d.from);
          return;
        }
        const to = frameOf(e);
        const region = { start: Math.min(d.from, to), end: Math.max(d.from, to) };
        if (region.end > region.start) actions.applyLoop(region);
      }}
      onPointerCancel={() => {
        drag.current = null;
        setDragLoop(null);
      }}
      onLostPointerCapture={() => {
        // (After a release too, which has cleared it already.)
        drag.current = null;
        setDragLoop(null);
      }}
      title="Click to seek, drag to loop"
    >
      {ticks.map((t) => (
        <span key={t} className="ruler__tick" style={{ insetInlineStart: xOf(t * rate, width, win) }}>
          {rulerLabel(t, step)}
        </span>
      ))}
      {shown && (
        <span
          className="ruler__loop"
          style={{
            insetInlineStart: xOf(shown.start, width, win),
            inlineSize: Math.max(1, xOf(shown.end, width, win) - xOf(shown.start, width, win)),
          }}
        />
      )}
    </div>
  );
}

import type { CSSProperties } from "react";
import { xOf, type FrameWindow } from "../../timeline";
import { useStatus, type StatusStore } from "./statusStore";

/** The playhead over the lanes: the one part of the timeline that moves with the status stream. */
export function Playhead({ store, win, width }: { store: StatusStore; win: FrameWindow; width: number }) {
  // Whole pixels: the playhead re-renders only when it moves on screen.
  const x = useStatus(store, (s) => Math.round(xOf(s?.position ?? 0, width, win)));
  if (x < 0 || x > width) return null;
  return <div className="playhead" style={{ "--x": `${x}px` } as CSSProperties} aria-hidden="true" />;
}

/** While the song separates: the part not yet separated, hatched from the separated edge on. */
export function SeparatingAhead({ store, win, width }: { store: StatusStore; win: FrameWindow; width: number }) {
  // (`separated` null once all of it is: nothing is ahead, -1; no status
  // yet: all of it.)
  const x = useStatus(store, (s) =>
    s?.separated === null ? -1 : Math.max(0, Math.round(xOf(s?.separated ?? 0, width, win))),
  );
  if (x < 0 || x > width) return null;
  return (
    <div className="separating-ahead" style={{ "--x": `${x}px` } as CSSProperties} data-testid="separating-ahead" aria-hidden="true">
      <span className="separating-ahead__label">Separating ahead</span>
    </div>
  );
}

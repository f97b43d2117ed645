import { useRef, useState } from "react";
import type { MeterLevel } from "../bindings";

/** Bottom of the meter scale in dBFS (quieter shows as empty). */
export const FLOOR_DB = -60;
/** How long the peak-hold mark stays before it falls to the current peak. */
export const HOLD_MS = 1500;

/** dBFS of a linear level (1.0 = full scale), at least {@link FLOOR_DB}. */
export function toDb(x: number): number {
  return x > 0 ? Math.max(FLOOR_DB, 20 * Math.log10(x)) : FLOOR_DB;
}

/** Where a level sits on the meter, 0 to 1 (dB scale). */
function place(x: number): number {
  return Math.min(1, (toDb(x) - FLOOR_DB) / -FLOOR_DB);
}

/**
 * A level meter: RMS as a bar, the peak held for {@link HOLD_MS} as a mark,
 * and a clip light that stays on once a peak reached full scale until it
 * is clicked. Fed ~30 times a second from the player's status.
 */
export function LevelMeter({ level, label }: { level: MeterLevel | undefined; label: string }) {
  const peak = level?.peak ?? 0;
  const rms = level?.rms ?? 0;
  const held = useRef({ peak: 0, at: 0 });
  const clip = useRef(false);
  const [, redraw] = useState(0);
  const now = Date.now();
  if (peak >= held.current.peak || now - held.current.at > HOLD_MS) held.current = { peak, at: now };
  if (peak >= 1) clip.current = true;
  const clipped = clip.current;
  return (
    // (The clip button beside the meter, not in it: a meter's children are
    // presentational, and a screen reader would not offer it as a button.)
    <div className="meter">
      <div
        className="meter__scale"
        role="meter"
        aria-label={`${label} level`}
        aria-valuemin={FLOOR_DB}
        aria-valuemax={0}
        aria-valuenow={Math.round(toDb(rms))}
        aria-valuetext={`${Math.round(toDb(rms))} dB RMS, peak ${Math.round(toDb(held.current.peak))} dB`}
        data-peak-db={toDb(held.current.peak).toFixed(1)}
      >
        <div className="meter__rms" style={{ inlineSize: `${(place(rms) * 100).toFixed(1)}%` }} />
        <div className="meter__hold" style={{ insetInlineStart: `${(place(held.current.peak) * 100).toFixed(1)}%` }} />
      </div>
      <button
        type="button"
        className="meter__clip"
        aria-pressed={clipped}
        aria-label={clipped ? `${label} clipped: reset` : `${label} not clipping`}
        title={clipped ? "Clipped: click to reset" : "Lights when the level reaches full scale"}
        onClick={() => {
          clip.current = false;
          redraw((n) => n + 1);
        }}
      />
    </div>
  );
}

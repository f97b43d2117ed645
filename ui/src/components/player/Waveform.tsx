import { useEffect, useRef } from "react";
import type { LanePeaks } from "../../bindings";

/** Height of a waveform lane in CSS pixels. */
export const LANE_HEIGHT = 64;

/**
 * One lane's waveform: a min/max bar per column, drawn at the device's
 * pixel ratio (the columns are asked for per device pixel), dimmed when the
 * lane is not heard.
 */
export function Waveform({ peaks, width, color, dim }: { peaks?: LanePeaks; width: number; color: string; dim: boolean }) {
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

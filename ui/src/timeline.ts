// Pure arithmetic of the song view: the visible window of frames, zooming
// around a point, pixel <-> frame mapping, ruler ticks, mixer presets.
import type { MixControls } from "./bindings";

/** The frames shown across the waveform area, `start <= end`. */
export interface FrameWindow {
  start: number;
  end: number;
}

/** Smallest window: 0.05 s at 44.1 kHz, a few samples per pixel. */
export const MIN_WINDOW_FRAMES = 2048;

export function clampWindow(w: FrameWindow, total: number): FrameWindow {
  const length = Math.min(Math.max(w.end - w.start, Math.min(MIN_WINDOW_FRAMES, total)), total);
  const start = Math.min(Math.max(0, w.start), Math.max(0, total - length));
  return { start, end: start + length };
}

/** Zoom by `factor` (< 1 zooms in) keeping `anchor` (a frame) where it is on screen. */
export function zoomWindow(w: FrameWindow, factor: number, anchor: number, total: number): FrameWindow {
  const span = w.end - w.start;
  const ratio = span > 0 ? (anchor - w.start) / span : 0.5;
  const next = span * factor;
  return clampWindow({ start: anchor - ratio * next, end: anchor - ratio * next + next }, total);
}

/** Move the window by `frames` (negative: towards the start), kept inside the song. */
export function panWindow(w: FrameWindow, frames: number, total: number): FrameWindow {
  return clampWindow({ start: w.start + frames, end: w.end + frames }, total);
}

/** The frame under `x` pixels from the left of an area `width` pixels wide. */
export function frameAt(x: number, width: number, w: FrameWindow): number {
  if (width <= 0) return w.start;
  return Math.round(w.start + (Math.min(Math.max(x, 0), width) / width) * (w.end - w.start));
}

/** Pixels from the left where `frame` sits (may be outside `[0, width]`). */
export function xOf(frame: number, width: number, w: FrameWindow): number {
  const span = w.end - w.start;
  return span > 0 ? ((frame - w.start) / span) * width : 0;
}

/** Ruler marks: a "nice" step in seconds giving at least `minPx` pixels between marks. */
/**
 * Ruler marks (seconds) at round times at least `minPx` apart, leaving out
 * any whose label (`labelPx` wide, "12:34.5" at the ruler's size) would run
 * past the right edge.
 */
export function rulerTicks(w: FrameWindow, width: number, sampleRate: number, minPx = 80, labelPx = 48): number[] {
  const seconds = (w.end - w.start) / sampleRate;
  if (seconds <= 0 || width <= 0) return [];
  const steps = [0.01, 0.02, 0.05, 0.1, 0.2, 0.5, 1, 2, 5, 10, 15, 30, 60, 120, 300, 600, 1800];
  const step = steps.find((s) => (s / seconds) * width >= minPx) ?? 3600;
  const first = Math.ceil(w.start / sampleRate / step) * step;
  const ticks: number[] = [];
  for (let t = first; t * sampleRate <= w.end && ticks.length < 200; t += step) {
    if (xOf(t * sampleRate, width, w) + labelPx <= width) ticks.push(t);
  }
  return ticks;
}

/**
 * The label of ruler mark `t` (seconds) among marks `step` seconds apart:
 * whole seconds as `m:ss`, else with tenths, or hundredths when the marks
 * are closer than a tenth (so no two marks read alike).
 */
export function rulerLabel(t: number, step: number): string {
  if (step < 0.1 - 1e-9) return formatTimeHundredths(t);
  return formatTime(t, Math.abs(t - Math.round(t)) > 1e-6);
}

/** `m:ss.cc` (`h:mm:ss.cc` from an hour on), rounded to the hundredth. */
function formatTimeHundredths(seconds: number): string {
  const s = Number.isFinite(seconds) ? Math.max(0, seconds) : 0;
  const cs = Math.round(s * 100);
  const h = Math.floor(cs / 360_000);
  const m = Math.floor((cs % 360_000) / 6000);
  const sec = ((cs % 6000) / 100).toFixed(2).padStart(5, "0");
  return h > 0 ? `${h}:${String(m).padStart(2, "0")}:${sec}` : `${m}:${sec}`;
}

/**
 * A playhead's time: `m:ss`, `h:mm:ss` from an hour on; with tenths
 * (`m:ss.d`) when `precise`, rounded to the nearest tenth (59.96 s is
 * `1:00.0`, never `0:60.0`). Whole seconds are cut, as a clock's are.
 */
export function formatTime(seconds: number, precise = false): string {
  const s = Number.isFinite(seconds) ? Math.max(0, seconds) : 0;
  // In tenths, so that rounding carries into the minutes (a tick at
  // 119.99999 s from summed 0.1 s steps is 2:00.0).
  const tenths = precise ? Math.round(s * 10) : Math.floor(s + 1e-9) * 10;
  const h = Math.floor(tenths / 36_000);
  const m = Math.floor((tenths % 36_000) / 600);
  const rest = (tenths % 600) / 10;
  const sec = precise ? rest.toFixed(1).padStart(4, "0") : String(Math.floor(rest)).padStart(2, "0");
  return h > 0 ? `${h}:${String(m).padStart(2, "0")}:${sec}` : `${m}:${sec}`;
}

/**
 * Export mix presets: one source left out, or that source alone. A preset
 * is offered only for a song that has that source as a stem of its own
 * (see {@link presetsFor}); a two-stem song's complement (`no_vocals`) is
 * the rest of the mix, so "Instrumental" of vocals + no_vocals is
 * no_vocals alone.
 */
export const PRESETS = {
  instrumental: { label: "Instrumental (no vocals)", source: "vocals", alone: false },
  acappella: { label: "A cappella (vocals only)", source: "vocals", alone: true },
  minusDrums: { label: "Minus drums", source: "drums", alone: false },
  minusBass: { label: "Minus bass", source: "bass", alone: false },
} as const;
export type PresetId = keyof typeof PRESETS;

/** The presets a song with `stems` can make, in {@link PRESETS} order. */
export function presetsFor(stems: string[]): PresetId[] {
  return (Object.keys(PRESETS) as PresetId[]).filter((id) => stems.includes(PRESETS[id].source));
}

/** Unity gain on the stems a preset keeps, the others muted. */
export function presetControls(stems: string[], preset: PresetId): MixControls {
  const { source, alone } = PRESETS[preset];
  return {
    stems: stems.map((stem) => ({ gain: 1, mute: (stem === source) !== alone, solo: false })),
    master: 1,
  };
}

/** Unity gain on every stem. */
export function unityControls(count: number): MixControls {
  return { stems: Array.from({ length: count }, () => ({ gain: 1, mute: false, solo: false })), master: 1 };
}

/** Whether a stem is heard under the desk rules (any solo: only soloed stems; mute wins). */
export function audible(controls: MixControls, index: number): boolean {
  const anySolo = controls.stems.some((s) => s.solo);
  const s = controls.stems[index];
  return !!s && !s.mute && (!anySolo || s.solo) && s.gain > 0;
}

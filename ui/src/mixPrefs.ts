// The mixer as the user left it, per song (volumes, pans, mutes, solos,
// speed and pitch, loop, zoom), kept in the webview's localStorage and restored when the song
// opens again. Song ids are never reused, so an id names one song.
import type { LoopRegion, MixControls } from "./bindings";

export interface SavedMix {
  controls: MixControls;
  loop: LoopRegion | null;
  /** The visible frames. */
  view: { start: number; end: number } | null;
  /**
   * The rate in Hz the loop's and view's frames are at (a song saved while
   * it separated is at the stream's 44.1 kHz, its files at their own);
   * absent in mixes saved before: taken as the song's.
   */
  sampleRate?: number;
}

const key = (songId: number) => `stemroom.mix.${songId}`;

function finite(x: unknown): x is number {
  return typeof x === "number" && Number.isFinite(x);
}

/**
 * What was saved for a song with `stems` stems and `frames` frames at
 * `sampleRate` Hz (the loop and view brought to that rate), or null when
 * nothing fits.
 */
export function loadMix(songId: number, stems: number, frames: number, sampleRate?: number): SavedMix | null {
  try {
    const raw = localStorage.getItem(key(songId));
    if (!raw) return null;
    const m = JSON.parse(raw) as SavedMix;
    const c = m.controls;
    if (!c || !finite(c.master) || !Array.isArray(c.stems) || c.stems.length !== stems) return null;
    if (!c.stems.every((s) => finite(s.gain) && typeof s.mute === "boolean" && typeof s.solo === "boolean")) return null;
    if (!c.stems.every((s) => s.pan === undefined || (finite(s.pan) && s.pan >= -1 && s.pan <= 1))) return null;
    // Speed and pitch (saved since they exist; older mixes play as recorded).
    if (c.tempo !== undefined && !(finite(c.tempo) && c.tempo >= 0.5 && c.tempo <= 1.5)) return null;
    if (c.transpose !== undefined && !(finite(c.transpose) && Math.abs(c.transpose) <= 12)) return null;
    if (c.metronome !== undefined && typeof c.metronome !== "boolean") return null;
    if (c.countIn !== undefined && typeof c.countIn !== "boolean") return null;
    // Frames saved at another rate (while the song separated) at this one.
    const k = sampleRate && finite(m.sampleRate) && m.sampleRate > 0 ? sampleRate / m.sampleRate : 1;
    const inSong = (r: { start: number; end: number } | null) => {
      if (!r || !finite(r.start) || !finite(r.end)) return null;
      const at = k === 1 ? r : { start: Math.round(r.start * k), end: Math.round(r.end * k) };
      return at.start >= 0 && at.end <= frames && at.end > at.start ? at : null;
    };
    return { controls: c, loop: inSong(m.loop), view: inSong(m.view), sampleRate };
  } catch {
    return null;
  }
}

export function saveMix(songId: number, mix: SavedMix): void {
  try {
    localStorage.setItem(key(songId), JSON.stringify(mix));
  } catch {
    // Storage full or disabled: the mix is simply not remembered.
  }
}

/** Fader position in dB for a linear gain (0 → the bottom, {@link FADER_MIN_DB}). */
export const FADER_MIN_DB = -60;
export const FADER_MAX_DB = 6;

export function gainToDb(gain: number): number {
  return gain > 0 ? Math.min(FADER_MAX_DB, Math.max(FADER_MIN_DB, 20 * Math.log10(gain))) : FADER_MIN_DB;
}

/** Linear gain for a fader position in dB (the bottom is silence). */
export function dbToGain(db: number): number {
  return db <= FADER_MIN_DB ? 0 : 10 ** (Math.min(FADER_MAX_DB, db) / 20);
}

/** "−6.0 dB", "−∞ dB". */
export function dbText(gain: number): string {
  const db = gainToDb(gain);
  return db <= FADER_MIN_DB ? "−∞ dB" : `${db > 0 ? "+" : db < 0 ? "−" : ""}${Math.abs(db).toFixed(1)} dB`;
}

/** "Centre", "L 50", "R 25" for a balance of -1…1. */
export function panText(pan: number): string {
  const p = Math.round(Math.max(-1, Math.min(1, pan)) * 100);
  return p === 0 ? "Centre" : p < 0 ? `L ${-p}` : `R ${p}`;
}

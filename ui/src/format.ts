import type { JobState, OutputFormat, Preset, SongAnalysis } from "./bindings";

/** `m:ss`, or `h:mm:ss` from an hour on. */
export function formatDuration(seconds: number): string {
  const total = Math.max(0, Math.round(seconds));
  const h = Math.floor(total / 3600);
  const m = Math.floor((total % 3600) / 60);
  const s = String(total % 60).padStart(2, "0");
  return h > 0 ? `${h}:${String(m).padStart(2, "0")}:${s}` : `${m}:${s}`;
}

/** "about 1 min 20 s left"; seconds are dropped from 10 minutes on. */
export function formatEta(seconds: number): string {
  const total = Math.round(seconds);
  if (total < 1) return "almost done";
  const h = Math.floor(total / 3600);
  const m = Math.floor((total % 3600) / 60);
  const s = total % 60;
  const parts: string[] = [];
  if (h > 0) parts.push(`${h} h`);
  if (m > 0) parts.push(`${m} min`);
  if (s > 0 && h === 0 && m < 10) parts.push(`${s} s`);
  return `about ${parts.join(" ")} left`;
}

/** Made once: a formatter is costly to make, and a library lists thousands of dates. */
const dateFormat = new Intl.DateTimeFormat(undefined, { dateStyle: "medium", timeStyle: "short" });

/** Date and time in the user's locale. */
export function formatDate(unixMillis: number): string {
  return dateFormat.format(unixMillis);
}

/** "1.2 MB/s" */
export function formatSpeed(bytesPerSecond: number): string {
  return `${formatBytes(bytesPerSecond)}/s`;
}

/** "166 MB" */
export function formatBytes(bytes: number): string {
  // Each unit from where its rounded figure starts: 999.6 MB is "1.0 GB",
  // not "1000 MB", and 999.6 kB "1 MB".
  if (bytes >= 999.5e6) return `${(bytes / 1e9).toFixed(1)} GB`;
  if (bytes >= 999.5e3) return `${Math.round(bytes / 1e6)} MB`;
  // Nothing is 0 kB (a stalled download's speed), a few bytes 1 kB.
  if (!(bytes > 0)) return "0 kB";
  return `${Math.max(1, Math.round(bytes / 1e3))} kB`;
}

export function isRunning(state: JobState): boolean {
  return (
    state.state === "downloading" ||
    state.state === "decoding" ||
    state.state === "separating" ||
    state.state === "encoding"
  );
}

export function stateLabel(state: JobState): string {
  switch (state.state) {
    case "queued":
      return "Queued";
    case "downloading":
      return state.percent === null ? "Downloading" : `Downloading ${Math.floor(state.percent)} %`;
    case "decoding":
      return "Reading the file";
    case "separating":
      return "Separating";
    case "encoding":
      return "Finishing";
    case "done":
      return "Done";
    case "failed":
      return `Failed: ${state.message}`;
    case "cancelled":
      return "Cancelled";
  }
}

/** Execution provider as people know it: "CPU", "CUDA". */
/** The quality presets, fastest first, as people read them. */
export const PRESETS: { value: Preset; label: string; help: string }[] = [
  {
    value: "fast",
    label: "Fast",
    help: "A compact version of the model (made on this computer the first time, in about half a minute), one pass and less overlap: the quickest, stems within 0.15 dB of Balanced on the test music.",
  },
  {
    value: "balanced",
    label: "Balanced",
    help: "The full model with the settings of the demucs command line: one shifted pass, 25 % overlap.",
  },
  {
    value: "best",
    label: "Best",
    help: "The full model, two shifted passes averaged and 50 % overlap: about three times as long as Balanced for slightly cleaner stems.",
  },
];

/** "Fast", "Balanced", "Best", or "Custom" for options set one by one. */
export function presetLabel(preset: Preset | null | undefined): string {
  return PRESETS.find((p) => p.value === preset)?.label ?? "Custom";
}

export function providerLabel(provider: string): string {
  return provider.toUpperCase();
}

export function formatLabel(format: OutputFormat): string {
  switch (format.kind) {
    case "wav":
      return { int16: "WAV 16-bit", int24: "WAV 24-bit", float32: "WAV 32-bit float" }[format.depth];
    case "flac":
      return `FLAC ${format.bits}-bit`;
    case "mp3":
      return `MP3 ${format.kbps} kbps`;
  }
}

/** Last component of a path, with `/` or `\` separators. */
export function fileName(path: string): string {
  return path.split(/[\\/]/).filter(Boolean).pop() ?? path;
}

/**
 * Where the window loads job `id`'s thumbnail: the app's own `thumb` URI
 * scheme (src-tauri/main.rs), which serves the copy kept when the link was
 * queued, by job id. Custom schemes are `thumb://localhost/…` on Linux and
 * macOS and `http://thumb.localhost/…` on Windows (WebView2), the same rule
 * as `convertFileSrc` in @tauri-apps/api.
 */
export function thumbnailSrc(id: number, userAgent: string = navigator.userAgent): string {
  return userAgent.includes("Windows") ? `http://thumb.localhost/${id}` : `thumb://localhost/${id}`;
}

/** "drums, bass, other and vocals": a list in words. */
export function listWords(items: readonly string[]): string {
  if (items.length <= 1) return items.join("");
  return `${items.slice(0, -1).join(", ")} and ${items[items.length - 1]}`;
}

/** "117.6 BPM", or null when the song has no steady beat (or was not analysed). */
export function bpmText(analysis: SongAnalysis | null | undefined): string | null {
  const bpm = analysis?.bpm;
  // Kept to 0.001 for the beat grid, shown to one decimal (120, not 120.0).
  if (bpm === null || bpm === undefined) return null;
  const shown = Math.round(bpm * 10) / 10;
  return `${Number.isInteger(shown) ? shown : shown.toFixed(1)} BPM`;
}

/** "G♯ minor (1A)": the key with its Camelot code, or null. */
export function keyText(analysis: SongAnalysis | null | undefined): string | null {
  const key = analysis?.key;
  return key ? `${key.name} (${key.camelot})` : null;
}

import type { ExportDest, OutputFormat } from "./bindings";
import { PRESETS, type PresetId } from "./timeline";

/**
 * Export choices remembered from one song to the next: what (kind and mix),
 * format and sample rate across restarts (localStorage), and a folder picked
 * in the native dialog for as long as the app runs (sessionStorage: the
 * backend names that folder by a handle that lives as long as the app).
 */
export interface ExportPrefs {
  kind: "stems" | "mix" | "zip";
  mix: "heard" | PresetId;
  format: OutputFormat;
  rate: "original" | "44100" | "48000";
}

/** A picked folder: the backend's handle and the path shown for it. */
export interface PickedDest {
  dest: ExportDest & { kind: "picked" };
  path: string;
}

const PREFS_KEY = "stemroom.export.v1";
const DEST_KEY = "stemroom.exportDest.v1";
const MP3_KBPS = [128, 160, 192, 224, 256, 320];

export const DEFAULT_EXPORT: ExportPrefs = {
  kind: "mix",
  mix: "instrumental",
  format: { kind: "mp3", kbps: 320 },
  rate: "original",
};

function validFormat(f: unknown): f is OutputFormat {
  if (typeof f !== "object" || f === null) return false;
  const x = f as Record<string, unknown>;
  switch (x.kind) {
    case "mp3":
      return typeof x.kbps === "number" && MP3_KBPS.includes(x.kbps);
    case "flac":
      return x.bits === 16 || x.bits === 24;
    case "wav":
      return x.depth === "int16" || x.depth === "int24" || x.depth === "float32";
    default:
      return false;
  }
}

function read(storage: Storage | undefined, key: string): unknown {
  try {
    const text = storage?.getItem(key);
    return text ? (JSON.parse(text) as unknown) : null;
  } catch {
    return null;
  }
}

function write(storage: Storage | undefined, key: string, value: unknown) {
  try {
    storage?.setItem(key, JSON.stringify(value));
  } catch {
    // Storage full or refused: the choices are simply not remembered.
  }
}

/** The remembered choices, each field checked (a bad one falls back alone). */
export function loadExportPrefs(): ExportPrefs {
  const saved = read(globalThis.localStorage, PREFS_KEY) as Partial<Record<keyof ExportPrefs, unknown>> | null;
  if (!saved || typeof saved !== "object") return DEFAULT_EXPORT;
  const { kind, mix, format, rate } = saved;
  return {
    kind: kind === "stems" || kind === "mix" || kind === "zip" ? kind : DEFAULT_EXPORT.kind,
    mix: mix === "heard" || (typeof mix === "string" && mix in PRESETS) ? (mix as ExportPrefs["mix"]) : DEFAULT_EXPORT.mix,
    format: validFormat(format) ? format : DEFAULT_EXPORT.format,
    rate: rate === "original" || rate === "44100" || rate === "48000" ? rate : DEFAULT_EXPORT.rate,
  };
}

export function saveExportPrefs(prefs: ExportPrefs) {
  write(globalThis.localStorage, PREFS_KEY, prefs);
}

/** The folder picked for exports earlier in this run of the app, if any. */
export function loadPickedDest(): PickedDest | null {
  const saved = read(globalThis.sessionStorage, DEST_KEY) as PickedDest | null;
  const ok =
    saved?.dest?.kind === "picked" && typeof saved.dest.handle === "number" && typeof saved.path === "string";
  return ok ? saved : null;
}

export function savePickedDest(dest: PickedDest | null) {
  if (dest) write(globalThis.sessionStorage, DEST_KEY, dest);
  else globalThis.sessionStorage?.removeItem(DEST_KEY);
}

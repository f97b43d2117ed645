import { createContext, createElement, useContext, type ReactNode } from "react";
import type {
  AddResult,
  AppInfo,
  ErrorCode,
  DragEnd,
  DragOut,
  ExportOptions,
  ExportProgress,
  FolderRef,
  GpuSupport,
  InstallEvent,
  Job,
  SongPeaks,
  LinkEntry,
  LoopRegion,
  MixControls,
  ModelStatus,
  PickedFolder,
  PlayerStatus,
  Program,
  Preset,
  QueueEvent,
  RuntimeStatus,
  ServerInfo,
  Settings,
  SongView,
  YtDlpStatus,
} from "./bindings";

/** Everything the UI asks of the app. Every method rejects with a {@link BackendError}. */
export interface Backend {
  appInfo(): Promise<AppInfo>;
  /** Jobs not in the library: running and queued first (queue order), then failed and cancelled. */
  listQueue(): Promise<Job[]>;
  /** Finished songs whose title contains `search`, newest first. */
  listLibrary(search: string): Promise<Job[]>;
  /**
   * Files, folders or links (links are probed with yt-dlp; playlists come back to choose from).
   * Files already queued or in the library come back in `duplicates` unless `allowDuplicates`.
   */
  addPaths(paths: string[], allowDuplicates?: boolean, preset?: Preset | null): Promise<AddResult>;
  /** Queues chosen entries of a playlist. */
  addLinks(entries: LinkEntry[], preset?: Preset | null): Promise<AddResult>;
  /**
   * Opens the native file dialog and adds what was picked. Every add takes the
   * quality preset the songs separate with (`null`: as the settings say).
   */
  pickFiles(preset?: Preset | null): Promise<AddResult>;
  cancelJob(id: number): Promise<Job>;
  retryJob(id: number): Promise<Job>;
  /** Removes a job or song; `deleteFiles` deletes a song's stems, metadata and peaks, `deleteExports` its exports too. */
  removeJob(id: number, deleteFiles: boolean, deleteExports: boolean): Promise<void>;
  /** Puts the listed queued jobs in this order; returns the new queue. */
  reorderQueue(ids: number[]): Promise<Job[]>;
  getSettings(): Promise<Settings>;
  saveSettings(settings: Settings): Promise<Settings>;
  /**
   * Opens the native folder dialog and saves the chosen library folder; the
   * saved settings, or `null` when the user cancelled. The page never names
   * the folder itself (saveSettings keeps it as it is).
   */
  pickLibraryDir(): Promise<Settings | null>;
  /**
   * Chooses yt-dlp's or ffmpeg's program with the native file dialog
   * (`pick`), or goes back to finding it automatically, and saves that;
   * returns the saved settings (unchanged when the dialog was cancelled).
   */
  chooseProgram(program: Program, pick: boolean): Promise<Settings>;
  /** Opens a folder the backend knows (a song's, an export's) in the file manager. */
  openFolder(folder: FolderRef): Promise<void>;
  /**
   * Downloads (or makes) a model into Stemroom's model folder; `onEvent` hears
   * its progress. One model install at a time; rejects with `cancelled` after
   * {@link Backend.cancelModelFetch} (the partial download is kept and resumes).
   */
  fetchModel(id: string, onEvent: (event: InstallEvent) => void): Promise<ModelStatus>;
  /** Installs a model from a file the user picks (the model or its package); `null` when the dialog is cancelled. */
  fetchModelFromFile(id: string, onEvent: (event: InstallEvent) => void): Promise<ModelStatus | null>;
  cancelModelFetch(): Promise<void>;
  /** Removes a model file from Stemroom's own folder; returns every model's status after. */
  removeModel(id: string): Promise<ModelStatus[]>;
  /** Installs yt-dlp with deno (pinned wheels, no pip) for links; `onEvent` hears its progress. */
  installLinks(onEvent: (event: InstallEvent) => void): Promise<YtDlpStatus>;
  /** The same from a folder of wheels already downloaded, picked in a dialog; `null` when cancelled. */
  installLinksFromFolder(onEvent: (event: InstallEvent) => void): Promise<YtDlpStatus | null>;
  cancelLinksInstall(): Promise<void>;
  /** The GPU, its driver, whether CUDA runs (and why not), what installing GPU support downloads. */
  gpuSupport(): Promise<GpuSupport>;
  /** Downloads, checks and installs GPU support; `onEvent` hears its progress. One at a time. */
  installGpuSupport(onEvent: (event: InstallEvent) => void): Promise<GpuSupport>;
  /** Stops the running install (it rejects with code `cancelled`; downloads are kept). */
  cancelGpuInstall(): Promise<void>;
  /** Downloads and installs ONNX Runtime's CPU build (the fix for a missing runtime). */
  installRuntime(onEvent: (event: InstallEvent) => void): Promise<RuntimeStatus>;
  /** The HTTP service (the `stemroom serve` API on this app's queue): running or not, address, token. */
  serverStatus(): Promise<ServerInfo>;
  /** Starts the HTTP service on 127.0.0.1:`port` (rejects with `invalid_options` when the port is taken). */
  startServer(port: number): Promise<ServerInfo>;
  stopServer(): Promise<ServerInfo>;
  /** Live queue events; resolves to the function that stops them. */
  subscribe(onEvent: (event: QueueEvent) => void): Promise<() => void>;
  /**
   * Opens a finished song for playing and exporting (closing any other), or
   * one still separating (its separated part; `SongView.streaming`);
   * `onStatus` hears the player ~30 times a second while it plays.
   */
  openSong(id: number, onStatus: (status: PlayerStatus) => void): Promise<SongView>;
  /** Closes song `id`'s last open, unless another open came since (the backend may handle the two in either order). */
  closeSong(id: number): Promise<void>;
  /**
   * The open song was still separating (`SongView.streaming`) and its job is
   * done: the player goes on from the finished files without a gap; resolves
   * to the finished song's view (rejects while the job is not done).
   */
  songStreamDone(id: number): Promise<SongView>;
  /** Min/max columns of every lane between two frames. */
  /** The lanes' peaks for frames `start..end` in `columns` columns, and how much of them is known yet. */
  songPeaks(id: number, start: number, end: number, columns: number): Promise<SongPeaks>;
  /**
   * The player commands name their song, and act only while it is the open
   * one (rejecting otherwise): a late command of a song the page has left
   * never reaches the song opened since.
   */
  play(id: number): Promise<void>;
  pause(id: number): Promise<void>;
  /** Jumps to a frame (at the song's sample rate). */
  seek(id: number, frame: number): Promise<void>;
  setLoop(id: number, region: LoopRegion | null): Promise<void>;
  setControls(id: number, controls: MixControls): Promise<void>;
  /** Opens the native folder dialog: the folder's handle and path, `null` when the user cancelled. */
  pickExportDir(): Promise<PickedFolder | null>;
  /** Exports from a song; resolves to the files written. */
  exportSong(id: number, options: ExportOptions, onProgress: (progress: ExportProgress) => void): Promise<string[]>;
  cancelExport(): Promise<void>;
  /**
   * Drags files of a song out of the window (a stem, every stem, or the
   * song's last export) into a DAW or a file manager; call it on a pointer
   * press. Resolves when the drag ends.
   */
  dragOut(id: number, item: DragOut): Promise<DragEnd>;
  /** Files dropped anywhere on the window, as real paths. */
  onFileDrop(handler: (paths: string[]) => void): Promise<() => void>;
  /** Whether files are being dragged over the window. */
  onDragHover(handler: (hovering: boolean) => void): Promise<() => void>;
}

const ERROR_CODES: readonly ErrorCode[] = [
  "bad_input",
  "missing_model",
  "missing_runtime",
  "output",
  "invalid_options",
  "cancelled",
  "audio_device",
  "download",
  "missing_tool",
  "exists",
  "internal",
];

/** A failed backend call: `code` is stable (branch on it), `message` is for people. */
export class BackendError extends Error {
  readonly code: ErrorCode;

  constructor(code: ErrorCode, message: string) {
    super(message);
    this.name = "BackendError";
    this.code = code;
  }
}

function isErrorCode(value: unknown): value is ErrorCode {
  return ERROR_CODES.includes(value as ErrorCode);
}

/** Turns whatever a call rejected with (usually `{code, message}`) into a {@link BackendError}. */
export function toBackendError(error: unknown): BackendError {
  if (error instanceof BackendError) return error;
  if (typeof error === "object" && error !== null && "message" in error) {
    const { code, message } = error as { code?: unknown; message: unknown };
    return new BackendError(isErrorCode(code) ? code : "internal", String(message));
  }
  return new BackendError("internal", typeof error === "string" ? error : "Unexpected error.");
}

const BackendContext = createContext<Backend | null>(null);

export function BackendProvider({ backend, children }: { backend: Backend; children: ReactNode }) {
  return createElement(BackendContext.Provider, { value: backend }, children);
}

export function useBackend(): Backend {
  const backend = useContext(BackendContext);
  if (!backend) throw new Error("useBackend() needs a <BackendProvider> above it");
  return backend;
}

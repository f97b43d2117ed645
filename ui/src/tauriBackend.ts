// The real backend: the commands tauri-specta generated from the Rust
// signatures (./bindings), unwrapped into promises that reject with
// BackendError, plus the window's drag-drop events.
import { Channel } from "@tauri-apps/api/core";
import { getCurrentWebview } from "@tauri-apps/api/webview";
import { toBackendError, type Backend } from "./backend";
import {
  commands,
  type AppError,
  type ExportProgress,
  type InstallEvent,
  type PlayerStatus,
  type QueueEvent,
} from "./bindings";

/** The token of each song's last open (see `openSong`); the first is random, so a reloaded page does not reuse one. */
const openTokens = new Map<number, number>();
let nextOpenToken = Math.floor(Math.random() * 2 ** 31);

/**
 * Until when (ms since the epoch) the window's drag-and-drop events belong
 * to a drag out of the window itself (a stem dragged to a DAW and let go
 * over the window again): they neither show the drop overlay nor add
 * files. Infinity while the drag runs; its end and the window's drop event
 * come in either order, so a second more after it.
 */
let ownDragUntil = 0;
const OWN_DRAG_TAIL_MS = 1000;

function ownDrag(): boolean {
  return Date.now() < ownDragUntil;
}

async function draggingOut<T>(drag: Promise<T>): Promise<T> {
  ownDragUntil = Infinity;
  try {
    return await drag;
  } finally {
    ownDragUntil = Date.now() + OWN_DRAG_TAIL_MS;
  }
}

type Outcome<T> = { status: "ok"; data: T } | { status: "error"; error: AppError };

async function unwrap<T>(outcome: Promise<Outcome<T>>): Promise<T> {
  let result: Outcome<T>;
  try {
    result = await outcome;
  } catch (error) {
    // Framework-level failures (unknown command, bad argument) reject with text.
    throw toBackendError(error);
  }
  if (result.status === "error") throw toBackendError(result.error);
  return result.data;
}

/** A command with no error of its own (it returns nothing): only framework-level failures to turn into {@link BackendError}. */
async function plain<T>(call: Promise<T>): Promise<T> {
  try {
    return await call;
  } catch (error) {
    throw toBackendError(error);
  }
}

export const tauriBackend: Backend = {
  appInfo: () => unwrap(commands.appInfo()),
  listQueue: () => unwrap(commands.listQueue()),
  listLibrary: (search) => unwrap(commands.listLibrary(search)),
  addPaths: (paths, allowDuplicates = false, preset = null) => unwrap(commands.addPaths(paths, allowDuplicates, preset)),
  addLinks: (entries, preset = null) => unwrap(commands.addLinks(entries, preset)),
  pickFiles: (preset = null) => unwrap(commands.pickFiles(preset)),
  cancelJob: (id) => unwrap(commands.cancelJob(id)),
  retryJob: (id) => unwrap(commands.retryJob(id)),
  removeJob: async (id, deleteFiles, deleteExports) => {
    await unwrap(commands.removeJob(id, deleteFiles, deleteExports));
  },
  reorderQueue: (ids) => unwrap(commands.reorderQueue(ids)),
  getSettings: () => unwrap(commands.getSettings()),
  saveSettings: (settings) => unwrap(commands.saveSettings(settings)),
  pickLibraryDir: () => unwrap(commands.pickLibraryDir()),
  chooseProgram: (program, pick) => unwrap(commands.chooseProgram(program, pick)),
  openFolder: async (folder) => {
    await unwrap(commands.openFolder(folder));
  },
  fetchModel: (id, onEvent) => unwrap(commands.fetchModel(id, new Channel<InstallEvent>(onEvent))),
  fetchModelFromFile: (id, onEvent) => unwrap(commands.fetchModelFromFile(id, new Channel<InstallEvent>(onEvent))),
  cancelModelFetch: () => plain(commands.cancelModelFetch()),
  removeModel: (id) => unwrap(commands.removeModel(id)),
  installLinks: (onEvent) => unwrap(commands.installLinks(new Channel<InstallEvent>(onEvent))),
  installLinksFromFolder: (onEvent) =>
    unwrap(commands.installLinksFromFolder(new Channel<InstallEvent>(onEvent))),
  cancelLinksInstall: () => plain(commands.cancelLinksInstall()),
  gpuSupport: () => unwrap(commands.gpuSupport()),
  installGpuSupport: (onEvent) => unwrap(commands.installGpuSupport(new Channel<InstallEvent>(onEvent))),
  cancelGpuInstall: () => plain(commands.cancelGpuInstall()),
  installRuntime: (onEvent) => unwrap(commands.installRuntime(new Channel<InstallEvent>(onEvent))),
  serverStatus: () => unwrap(commands.serverStatus()),
  startServer: (port) => unwrap(commands.startServer(port)),
  stopServer: () => unwrap(commands.stopServer()),

  openSong: (id, onStatus) => {
    // Each open has its own token, and a close names the last open of its
    // song when it is called: a close the backend handles after the next
    // open (of any song, this one again included) leaves that one open.
    const token = (nextOpenToken = (nextOpenToken + 1) >>> 0);
    openTokens.set(id, token);
    return unwrap(commands.openSong(id, token, new Channel<PlayerStatus>(onStatus)));
  },
  closeSong: async (id) => {
    const token = openTokens.get(id);
    if (token === undefined) return;
    openTokens.delete(id);
    await plain(commands.closeSong(token));
  },
  songStreamDone: (id) => unwrap(commands.songStreamDone(id)),
  songPeaks: (id, start, end, columns) => unwrap(commands.songPeaks(id, start, end, columns)),
  play: async (id) => {
    await unwrap(commands.playerPlay(id));
  },
  pause: async (id) => {
    await unwrap(commands.playerPause(id));
  },
  seek: async (id, frame) => {
    await unwrap(commands.playerSeek(id, frame));
  },
  setLoop: async (id, region) => {
    await unwrap(commands.playerSetLoop(id, region));
  },
  setControls: async (id, controls) => {
    await unwrap(commands.playerSetControls(id, controls));
  },
  pickExportDir: () => unwrap(commands.pickExportDir()),
  exportSong: (id, options, onProgress) =>
    unwrap(commands.exportSong(id, options, new Channel<ExportProgress>(onProgress))),
  dragOut: (id, item) => draggingOut(unwrap(commands.dragOut(id, item))),
  cancelExport: async () => {
    await plain(commands.cancelExport());
  },

  async subscribe(onEvent) {
    const channel = new Channel<QueueEvent>(onEvent);
    await plain(commands.subscribe(channel));
    // A channel cannot be closed from this side: stop listening to it.
    return () => {
      channel.onmessage = () => {};
    };
  },

  async onFileDrop(handler) {
    return getCurrentWebview().onDragDropEvent(({ payload }) => {
      if (payload.type !== "drop") return;
      if (!ownDrag()) {
        handler(payload.paths);
        return;
      }
      // Its file names, on the page's root element (`data-dropped-back`),
      // for the window tests: the native drag carried the files back.
      document.documentElement.dataset.droppedBack = payload.paths.map((p) => p.split(/[\\/]/).pop()).join("\n");
    });
  },

  async onDragHover(handler) {
    return getCurrentWebview().onDragDropEvent(({ payload }) => {
      handler((payload.type === "enter" || payload.type === "over") && !ownDrag());
    });
  },
};

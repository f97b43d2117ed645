import { Channel, invoke, type InvokeArgs } from "@tauri-apps/api/core";
import { getCurrentWebview } from "@tauri-apps/api/webview";
import { toBackendError, type Backend } from "./backend";
import type { AddResult, AppInfo, Job, ModelStatus, QueueEvent, Settings } from "./bindings";

async function call<T>(command: string, args?: InvokeArgs): Promise<T> {
  try {
    return await invoke<T>(command, args);
  } catch (error) {
    throw toBackendError(error);
  }
}

export const tauriBackend: Backend = {
  appInfo: () => call<AppInfo>("app_info"),
  listQueue: () => call<Job[]>("list_queue"),
  listLibrary: (search) => call<Job[]>("list_library", { search }),
  addPaths: (paths) => call<AddResult>("add_paths", { paths }),
  pickFiles: () => call<AddResult>("pick_files"),
  cancelJob: (id) => call<Job>("cancel_job", { id }),
  retryJob: (id) => call<Job>("retry_job", { id }),
  removeJob: (id, deleteFiles) => call<void>("remove_job", { id, deleteFiles }),
  reorderQueue: (ids) => call<Job[]>("reorder_queue", { ids }),
  getSettings: () => call<Settings>("get_settings"),
  saveSettings: (settings) => call<Settings>("save_settings", { settings }),
  pickLibraryDir: () => call<string | null>("pick_library_dir"),
  openFolder: (path) => call<void>("open_folder", { path }),
  fetchModel: (id) => call<ModelStatus>("fetch_model", { id }),

  async subscribe(onEvent) {
    const channel = new Channel<QueueEvent>(onEvent);
    await call<void>("subscribe", { channel });
    // A channel cannot be closed from this side: stop listening to it.
    return () => {
      channel.onmessage = () => {};
    };
  },

  async onFileDrop(handler) {
    return getCurrentWebview().onDragDropEvent(({ payload }) => {
      if (payload.type === "drop") handler(payload.paths);
    });
  },

  async onDragHover(handler) {
    return getCurrentWebview().onDragDropEvent(({ payload }) => {
      handler(payload.type === "enter" || payload.type === "over");
    });
  },
};

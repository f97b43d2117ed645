import { beforeEach, describe, expect, it, vi } from "vitest";

const invoke = vi.fn(async (_command: string, _args?: Record<string, unknown>) => ({}));
vi.mock("@tauri-apps/api/core", () => ({
  invoke: (command: string, args?: Record<string, unknown>) => invoke(command, args),
  Channel: class {
    constructor(public onmessage?: unknown) {}
  },
}));
type DragDropPayload = { type: "enter" | "over" | "leave" } | { type: "drop"; paths: string[] };
const dragDropHandlers: ((event: { payload: DragDropPayload }) => void)[] = [];
vi.mock("@tauri-apps/api/webview", () => ({
  getCurrentWebview: () => ({
    onDragDropEvent: async (handler: (event: { payload: DragDropPayload }) => void) => {
      dragDropHandlers.push(handler);
      return () => {};
    },
  }),
}));
function dragDrop(payload: DragDropPayload) {
  for (const h of dragDropHandlers) h({ payload });
}

const { tauriBackend } = await import("./tauriBackend");

/** The token each call sent, in order. */
function tokens(command: string): number[] {
  return invoke.mock.calls.filter(([c]) => c === command).map(([, args]) => args?.token as number);
}

describe("the app's backend", () => {
  beforeEach(() => invoke.mockClear());

  // Leaving a song and opening it (or another) again sends "close" and
  // "open", which the app may handle in either order: each open has its
  // own token and each close names its own open's, so a late close never
  // stops the newer open.
  it("names each open of a song with a new token, and closes by it", async () => {
    await tauriBackend.openSong(5, () => {});
    await tauriBackend.closeSong(5);
    await tauriBackend.openSong(5, () => {});
    await tauriBackend.openSong(6, () => {});
    await tauriBackend.closeSong(6);
    await tauriBackend.closeSong(5);
    const [first, second, third] = tokens("open_song");
    expect(new Set([first, second, third]).size).toBe(3);
    expect(tokens("close_song")).toEqual([first, third, second]);
    // A song not open (or closed already) sends nothing.
    await tauriBackend.closeSong(5);
    await tauriBackend.closeSong(7);
    expect(tokens("close_song")).toHaveLength(3);
  });

  // A stem dragged out of the player and let go over the window again is
  // the app's own drag: no "drop songs" overlay, no add (which switched to
  // the Queue tab to say the file was not added).
  it("ignores its own drag out coming back over the window, and not a drop after it", async () => {
    const drops: string[][] = [];
    const hovers: boolean[] = [];
    await tauriBackend.onFileDrop((paths) => drops.push(paths));
    await tauriBackend.onDragHover((over) => hovers.push(over));
    let endDrag: (end: string) => void = () => {};
    invoke.mockImplementationOnce(async () => new Promise((resolve) => (endDrag = resolve)));
    const dragging = tauriBackend.dragOut(3, { kind: "stem", index: 0 });
    dragDrop({ type: "enter" });
    dragDrop({ type: "drop", paths: ["/songs/a/vocals.wav"] });
    endDrag("cancelled");
    await expect(dragging).resolves.toBe("cancelled");
    // The window's drop event may come just after the drag's end.
    dragDrop({ type: "drop", paths: ["/songs/a/vocals.wav"] });
    expect(drops).toEqual([]);
    expect(hovers.length).toBeGreaterThan(0);
    expect(hovers.every((over) => !over)).toBe(true);
    hovers.length = 0;
    // A drop from elsewhere, later, is taken.
    vi.useFakeTimers({ now: Date.now() + 1500 });
    try {
      dragDrop({ type: "over" });
      dragDrop({ type: "drop", paths: ["/music/b.flac"] });
    } finally {
      vi.useRealTimers();
    }
    expect(drops).toEqual([["/music/b.flac"]]);
    expect(hovers).toEqual([true, false]);
  });

  // Commands without an error type of their own reject with the
  // framework's text: they reject with a BackendError like every other call.
  it("turns a failed cancel or close into a BackendError", async () => {
    invoke.mockRejectedValue("command cancel_gpu_install not found");
    try {
      for (const call of [
        () => tauriBackend.cancelGpuInstall(),
        () => tauriBackend.cancelLinksInstall(),
        () => tauriBackend.cancelModelFetch(),
        () => tauriBackend.cancelExport(),
      ]) {
        await expect(call()).rejects.toMatchObject({ name: "BackendError", code: "internal" });
      }
      invoke.mockResolvedValueOnce({ status: "ok", data: {} });
      await tauriBackend.openSong(8, () => {});
      await expect(tauriBackend.closeSong(8)).rejects.toMatchObject({ name: "BackendError" });
    } finally {
      invoke.mockReset();
      invoke.mockImplementation(async () => ({}));
    }
  });
});

import { beforeEach, describe, expect, it, vi } from "vitest";

const invoke = vi.fn(async (_command: string, _args?: Record<string, unknown>) => ({}));
vi.mock("@tauri-apps/api/core", () => ({
  invoke: (command: string, args?: Record<string, unknown>) => invoke(command, args),
  Channel: class {
    constructor(public onmessage?: unknown) {}
  },
}));
vi.mock("@tauri-apps/api/webview", () => ({ getCurrentWebview: () => ({}) }));

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
});

import { act, fireEvent, screen, waitFor } from "@testing-library/react";
import { describe, expect, it, onTestFinished, vi } from "vitest";
import { mockSong } from "../../mockBackend";
import { renderApp } from "../../test/renderApp";

// Each lane's renders are counted: the real lane, wrapped in a spy.
const laneRenders = vi.hoisted(() => ({ count: 0 }));
vi.mock("./Lane", async (original) => {
  const real = await original<typeof import("./Lane")>();
  return {
    ...real,
    Lane: (props: Parameters<typeof real.Lane>[0]) => {
      laneRenders.count += 1;
      return real.Lane(props);
    },
  };
});

const library = [mockSong({ id: 1, title: "Falcon 69", durationSeconds: 187 })];
const RATE = 44_100;

async function openPlayer(setup?: (backend: ReturnType<typeof renderApp>["backend"]) => void) {
  const app = renderApp({ library });
  setup?.(app.backend);
  await app.user.click(screen.getByRole("tab", { name: "Library" }));
  await app.user.click(await screen.findByRole("button", { name: /Falcon 69/ }));
  await app.user.click(screen.getByRole("button", { name: "Play & export" }));
  await screen.findAllByTestId("lane");
  return app;
}

const shown = () => screen.getByRole("slider", { name: "Scroll the waveforms" }).getAttribute("aria-valuetext");

describe("Player layout", () => {
  it("says the master volume in dB and which lane is selected", async () => {
    const { user } = await openPlayer();
    const master = screen.getByRole("slider", { name: "Master volume" });
    expect(master).toHaveAttribute("aria-valuetext", "0.0 dB");
    fireEvent.change(master, { target: { value: "0.5" } });
    expect(master).toHaveAttribute("aria-valuetext", "−6.0 dB");
    const vocals = screen.getByRole("button", { name: /^Select Vocals/ });
    await user.click(vocals);
    expect(vocals).toHaveAttribute("aria-pressed", "true");
    expect(screen.getByRole("button", { name: /^Select Drums/ })).toHaveAttribute("aria-pressed", "false");
  });

  it("follows the status stream in the playhead, clock and meters only, not the lanes", async () => {
    const { backend } = await openPlayer();
    const before = laneRenders.count;
    // A second of statuses at ~30 a second: position and meters move.
    for (let i = 1; i <= 30; i++) {
      act(() =>
        backend.emitPlayerStatus({
          playing: true,
          position: i * 1470,
          master: { peak: 0.5, rms: 0.25 },
          levels: [0, 1, 2, 3].map((k) => ({ peak: 0.1 * (k + 1) * (i % 3), rms: 0.05 * (k + 1) })),
        }),
      );
    }
    expect(screen.getByTestId("position")).toHaveAttribute("data-frame", String(30 * 1470));
    expect(screen.getByRole("meter", { name: "Vocals level" })).toHaveAttribute("aria-valuenow", "-14");
    // Lanes rendered when playing started (play state is not theirs either): none.
    expect(laneRenders.count - before).toBe(0);
    // A change of the mix renders the lanes (the one stem's props changed).
    await act(async () => {
      fireEvent.click(screen.getByRole("button", { name: "Mute Bass" }));
    });
    expect(laneRenders.count - before).toBeGreaterThan(0);
    expect(laneRenders.count - before).toBeLessThanOrEqual(5);
  });

  it("shows a long song's lanes at once and fills them in as their peaks are read", async () => {
    // jsdom lays nothing out: give the lanes a width, so that peaks are asked for.
    const width = vi.spyOn(HTMLElement.prototype, "clientWidth", "get").mockReturnValue(800);
    onTestFinished(() => width.mockRestore());
    const { backend } = await openPlayer((b) => {
      b.player.peaksReady = 0.4;
    });
    // Playable at once; the waveforms say how far they are read.
    expect(screen.getByRole("button", { name: "Play" })).toBeEnabled();
    const bar = await screen.findByRole("progressbar", { name: "Reading the waveforms" });
    expect(bar).toHaveAttribute("aria-valuenow", "40");
    act(() => {
      backend.player.peaksReady = 0.75;
    });
    await waitFor(() => expect(screen.getByRole("progressbar", { name: "Reading the waveforms" })).toHaveAttribute("aria-valuenow", "75"));
    act(() => {
      backend.player.peaksReady = 1;
    });
    await waitFor(() => expect(screen.queryByRole("progressbar", { name: "Reading the waveforms" })).not.toBeInTheDocument());
  });

  it("zooms with Ctrl+wheel, a trackpad gesture and two fingers; one finger drags the view", async () => {
    await openPlayer();
    const timeline = screen.getByTestId("ruler").parentElement!;
    // Ctrl+wheel: one notch towards you zooms in by e^0.2, keeping the
    // playhead (at 0:00) in place (jsdom lays nothing out, so no lane is
    // under the pointer to zoom around).
    fireEvent.wheel(timeline, { deltaY: -100, ctrlKey: true });
    const span = (187 * RATE) / Math.exp(0.2);
    const t = (f: number) => `${Math.floor(f / RATE / 60)}:${String(Math.floor((f / RATE) % 60)).padStart(2, "0")}`;
    expect(shown()).toBe(`Showing 0:00 to ${t(span)}`);
    // A WebKit trackpad pinch: scale 2 from its start halves the view.
    fireEvent(timeline, new Event("gesturestart", { cancelable: true }));
    const change = new Event("gesturechange", { cancelable: true });
    Object.assign(change, { scale: 2 });
    fireEvent(timeline, change);
    fireEvent(timeline, new Event("gestureend", { cancelable: true }));
    expect(change.defaultPrevented).toBe(true);
    expect(shown()).toBe(`Showing 0:00 to ${t(span / 2)}`);
    // Two fingers 100 px apart spread to 200 px: the view halves again.
    const touch = (type: string, pointerId: number, clientX: number) =>
      fireEvent(timeline, Object.assign(new MouseEvent(type, { bubbles: true, clientX }), { pointerId, pointerType: "touch" }));
    touch("pointerdown", 1, 300);
    touch("pointerdown", 2, 400);
    touch("pointermove", 2, 500);
    touch("pointerup", 2, 500);
    expect(shown()).toBe(`Showing 0:00 to ${t(span / 4)}`);
    // One finger dragging left by the lanes' width moves the view one view
    // later (jsdom's lanes are 0 px wide, taken as 1 px).
    touch("pointermove", 1, 299);
    expect(shown()).toBe(`Showing ${t(span / 4)} to ${t(span / 2)}`);
    touch("pointerup", 1, 299);
    // A finger on the ruler draws a loop there: the view stays put under it.
    const ruler = screen.getByTestId("ruler");
    const onRuler = (type: string, clientX: number) =>
      fireEvent(ruler, Object.assign(new MouseEvent(type, { bubbles: true, clientX }), { pointerId: 7, pointerType: "touch" }));
    onRuler("pointerdown", 100);
    onRuler("pointermove", 400);
    expect(shown()).toBe(`Showing ${t(span / 4)} to ${t(span / 2)}`);
    onRuler("pointerup", 400);
    // A mouse drag on the ruler whose release was lost (let go outside the
    // window) leaves no loop following the pointer.
    const mouse = (type: string, clientX: number, buttons: number) =>
      fireEvent(
        ruler,
        Object.assign(new MouseEvent(type, { bubbles: true, clientX, buttons }), { pointerId: 8, pointerType: "mouse" }),
      );
    mouse("pointerdown", 100, 1);
    mouse("pointermove", 300, 1);
    expect(ruler.querySelector(".ruler__loop")).not.toBeNull();
    mouse("pointermove", 320, 0);
    expect(ruler.querySelector(".ruler__loop")).toBeNull();
  });

  it("pages the view forward as the playhead leaves it, but not back to it once the user looks elsewhere", async () => {
    const { backend } = await openPlayer();
    const timeline = screen.getByTestId("ruler").parentElement!;
    // Ten notches in: the view is the first 187/e^2 s (25.3 s).
    for (let i = 0; i < 10; i++) fireEvent.wheel(timeline, { deltaY: -100, ctrlKey: true });
    const span = Math.round((187 * RATE) / Math.exp(2));
    const t = (f: number) => `${Math.floor(f / RATE / 60)}:${String(Math.floor((f / RATE) % 60)).padStart(2, "0")}`;
    const status = (position: number) =>
      act(() => backend.emitPlayerStatus({ playing: true, position, master: { peak: 0, rms: 0 }, levels: [] }));
    status(10 * RATE);
    expect(shown()).toMatch(/^Showing 0:00 to /);
    // Past the view's end: the view starts at the playhead.
    status(26 * RATE);
    expect(shown()).toMatch(/^Showing 0:26 to /);
    // The user scrolls to the song's end while it plays: it stays there.
    const scroll = screen.getByRole("slider", { name: "Scroll the waveforms" });
    fireEvent.change(scroll, { target: { value: String(187 * RATE - span) } });
    const elsewhere = `Showing ${t(187 * RATE - span)} to 3:07`;
    expect(shown()).toBe(elsewhere);
    status(27 * RATE);
    status(28 * RATE);
    expect(shown()).toBe(elsewhere);
    // Back to the start, paused; a seek while paused leaves the view
    // (statuses say so while paused): play follows it there.
    fireEvent.change(scroll, { target: { value: "0" } });
    act(() => backend.emitPlayerStatus({ playing: false, position: 10 * RATE, master: { peak: 0, rms: 0 }, levels: [] }));
    act(() => backend.emitPlayerStatus({ playing: false, position: 100 * RATE, master: { peak: 0, rms: 0 }, levels: [] }));
    expect(shown()).toMatch(/^Showing 0:00 to /);
    status(100 * RATE);
    expect(shown()).toMatch(/^Showing 1:40 to /);
    // Paused there, the view moved back to the start: play leaves it.
    act(() => backend.emitPlayerStatus({ playing: false, position: 101 * RATE, master: { peak: 0, rms: 0 }, levels: [] }));
    fireEvent.change(scroll, { target: { value: "0" } });
    status(101 * RATE);
    status(102 * RATE);
    expect(shown()).toMatch(/^Showing 0:00 to /);
  });

  it("drags a stem's file, or what was just exported, out of the window", async () => {
    const { backend, user } = await openPlayer();
    // The press starts the native drag; a right button does not.
    fireEvent.pointerDown(screen.getByRole("button", { name: "Drag Vocals out" }), { button: 2 });
    expect(backend.player.drags).toEqual([]);
    fireEvent.pointerDown(screen.getByRole("button", { name: "Drag Vocals out" }), { button: 0 });
    fireEvent.pointerDown(screen.getByRole("button", { name: "Drag Drums out" }), { button: 0 });
    await waitFor(() =>
      expect(backend.player.drags).toEqual([
        { id: 1, item: { kind: "stem", index: 3 } },
        { id: 1, item: { kind: "stem", index: 0 } },
      ]),
    );
    // The drag did not seek or select anything.
    expect(backend.player.status?.position).toBe(0);
    // After an export, its files can be dragged out.
    expect(screen.queryByRole("button", { name: /Drag (it|them) out/ })).not.toBeInTheDocument();
    await user.click(screen.getByRole("button", { name: "Export" }));
    fireEvent.pointerDown(await screen.findByRole("button", { name: /Drag it out/ }), { button: 0 });
    await waitFor(() => expect(backend.player.drags.at(-1)).toEqual({ id: 1, item: { kind: "lastExport" } }));
  });

  it("opens a stem's folder from the keyboard, where its handle cannot drag", async () => {
    const { backend, user } = await openPlayer();
    const openFolder = vi.spyOn(backend, "openFolder");
    const handle = screen.getByRole("button", { name: "Drag Vocals out" });
    handle.focus();
    await user.keyboard("{Enter}");
    expect(openFolder).toHaveBeenCalledWith({ kind: "song", id: 1 });
    await user.keyboard(" ");
    expect(openFolder).toHaveBeenCalledTimes(2);
    // Space went to the handle, not to play.
    expect(backend.player.status?.playing).toBe(false);
    expect(backend.player.drags).toEqual([]);
    // The export's handle is the mouse's: the keyboard has the folder button beside it.
    await user.click(screen.getByRole("button", { name: "Export" }));
    const exportHandle = await screen.findByRole("button", { name: /Drag it out/ });
    expect(exportHandle).toHaveAttribute("tabindex", "-1");
    expect(exportHandle).toHaveAccessibleName(/mouse only/);
  });

  it("scrubs only with a press that began on the lane", async () => {
    const { backend } = await openPlayer();
    const area = screen.getAllByTestId("lane")[1]!.querySelector<HTMLElement>(".lane__area")!;
    vi.spyOn(area, "getBoundingClientRect").mockReturnValue(new DOMRect(0, 0, 1000, 80));
    // Pressed on a fader and dragged over the lane: no seek.
    fireEvent.pointerMove(area, { pointerType: "mouse", buttons: 1, clientX: 500, timeStamp: 1000 });
    await act(async () => {});
    expect(backend.player.status?.position).toBe(0);
    // Pressed on the lane, then moved: it scrubs.
    fireEvent.pointerDown(area, { pointerType: "mouse", button: 0, buttons: 1, clientX: 100 });
    fireEvent.pointerMove(area, { pointerType: "mouse", buttons: 1, clientX: 500, timeStamp: 2000 });
    await waitFor(() => expect(backend.player.status?.position).toBeGreaterThan(80 * RATE));
    fireEvent.pointerUp(area, { pointerType: "mouse", button: 0, clientX: 500 });
    // Let go: a later press elsewhere moved over the lane does not scrub.
    const at = backend.player.status?.position;
    fireEvent.pointerMove(area, { pointerType: "mouse", buttons: 1, clientX: 900, timeStamp: 3000 });
    await act(async () => {});
    expect(backend.player.status?.position).toBe(at);
  });
});

import { fireEvent, screen, waitFor, within } from "@testing-library/react";
import { describe, expect, it, vi } from "vitest";
import { act } from "@testing-library/react";
import { BackendError } from "../backend";
import { mockJob, mockSong } from "../mockBackend";
import { renderApp } from "../test/renderApp";

const library = [mockSong({ id: 1, title: "Falcon 69", durationSeconds: 187 })];

async function openPlayer(options: { playerError?: string } = {}) {
  const app = renderApp({ library, ...options });
  await app.user.click(screen.getByRole("tab", { name: "Library" }));
  await app.user.click(await screen.findByRole("button", { name: /Falcon 69/ }));
  await app.user.click(screen.getByRole("button", { name: "Play & export" }));
  await screen.findAllByTestId("lane");
  return app;
}

const lanes = () => screen.getAllByTestId("lane").map((lane) => lane.dataset.lane);

/**
 * A 48 kHz song played while it separates (its stream at the model's
 * 44.1 kHz, its files at 48 kHz), with a loop set from 5 s to 15 s.
 */
async function separating48kWithLoop() {
  const running = mockJob({
    id: 8,
    title: "48 kHz song",
    durationSeconds: 200,
    state: { state: "separating", segment: 6, total: 8 },
  });
  const app = renderApp({ queue: [running], finishedRate: 48_000 });
  const { backend, user } = app;
  await user.click(await screen.findByRole("button", { name: "Listen now" }));
  await screen.findAllByTestId("lane");
  act(() => backend.emitPlayerStatus({ separated: 150 * 44_100 }));
  await user.keyboard("{ArrowRight}");
  await waitFor(() => expect(backend.player.status?.position).toBe(5 * 44_100));
  await user.keyboard("i");
  await user.keyboard("{ArrowRight}{ArrowRight}");
  await waitFor(() => expect(backend.player.status?.position).toBe(15 * 44_100));
  await user.keyboard("o");
  return app;
}

describe("Player", () => {
  it("shows the mixture and one lane per stem, and plays", async () => {
    const { backend, user } = await openPlayer();
    expect(lanes()).toEqual(["mixture", "drums", "bass", "other", "vocals"]);
    // Names and colours from the model's manifest.
    const names = screen.getAllByTestId("lane").map((l) => l.querySelector(".lane__name")?.textContent);
    expect(names).toEqual(["Original", "1 Drums", "2 Bass", "3 Other", "4 Vocals"]);
    expect(screen.getAllByTestId("lane")[1]!.getAttribute("style")).toContain("#e4572e");
    expect(screen.getByTestId("position")).toHaveTextContent("0:00.0 / 3:07");
    await user.click(screen.getByRole("button", { name: "Play" }));
    expect(backend.player.status?.playing).toBe(true);
    expect(await screen.findByRole("button", { name: "Pause" })).toBeInTheDocument();
    await user.click(screen.getByRole("button", { name: "Pause" }));
    expect(backend.player.status?.playing).toBe(false);
  });

  it("mutes, solos and sets volumes per stem", async () => {
    const { backend, user } = await openPlayer();
    await user.click(screen.getByRole("button", { name: "Mute Vocals" }));
    expect(backend.player.controls?.stems[3]!).toEqual({ gain: 1, mute: true, solo: false });
    expect(screen.getByRole("button", { name: "Mute Vocals" })).toHaveAttribute("aria-pressed", "true");
    await user.click(screen.getByRole("button", { name: "Solo Bass" }));
    expect(backend.player.controls?.stems.map((s) => s.solo)).toEqual([false, true, false, false]);
    // Faders are in dB: -6 dB is half the amplitude; the bottom is silence;
    // a double-click goes back to 0 dB.
    const drums = screen.getByRole("slider", { name: "Drums volume" });
    fireEvent.change(drums, { target: { value: "-6" } });
    expect(backend.player.controls?.stems[0]!.gain).toBeCloseTo(0.501, 3);
    expect(drums).toHaveAttribute("aria-valuetext", "−6.0 dB");
    fireEvent.change(drums, { target: { value: "-60" } });
    expect(backend.player.controls?.stems[0]!.gain).toBe(0);
    expect(drums).toHaveAttribute("aria-valuetext", "−∞ dB");
    fireEvent.doubleClick(drums);
    expect(backend.player.controls?.stems[0]!.gain).toBe(1);
    expect(drums).toHaveValue("0");
    // Pan: a balance from L 100 to R 100; a double-click centres it.
    const pan = screen.getByRole("slider", { name: "Bass pan" });
    fireEvent.change(pan, { target: { value: "-0.5" } });
    expect(backend.player.controls?.stems[1]!.pan).toBe(-0.5);
    expect(pan).toHaveAttribute("aria-valuetext", "L 50");
    fireEvent.doubleClick(pan);
    expect(backend.player.controls?.stems[1]!.pan).toBe(0);
    expect(pan).toHaveAttribute("aria-valuetext", "Centre");
    fireEvent.change(screen.getByRole("slider", { name: "Master volume" }), { target: { value: "0.8" } });
    expect(backend.player.controls?.master).toBe(0.8);
  });

  it("answers the keyboard: space, arrows, number keys, M and S", async () => {
    const { backend, user } = await openPlayer();
    await user.keyboard(" ");
    expect(backend.player.status?.playing).toBe(true);
    await user.keyboard(" ");
    expect(backend.player.status?.playing).toBe(false);
    await user.keyboard("{ArrowRight}");
    await waitFor(() => expect(backend.player.status?.position).toBe(5 * 44_100));
    await user.keyboard("{Shift>}{ArrowLeft}{/Shift}");
    await waitFor(() => expect(backend.player.status?.position).toBe(4 * 44_100));
    await user.keyboard("2s");
    expect(backend.player.controls?.stems.map((s) => s.solo)).toEqual([false, true, false, false]);
    await user.keyboard("4m");
    expect(backend.player.controls?.stems[3]!.mute).toBe(true);
    expect(screen.getAllByTestId("lane")[4]).toHaveAttribute("aria-selected", "true");
  });

  it("sets the loop with I and O, toggles it with L, and remembers the mix per song", async () => {
    const first = await openPlayer();
    await first.user.keyboard("{ArrowRight}");
    await waitFor(() => expect(first.backend.player.status?.position).toBe(5 * 44_100));
    await first.user.keyboard("i");
    expect(first.backend.player.loop).toEqual({ start: 5 * 44_100, end: 187 * 44_100 });
    await first.user.keyboard("{ArrowRight}{ArrowRight}");
    await waitFor(() => expect(first.backend.player.status?.position).toBe(15 * 44_100));
    await first.user.keyboard("o");
    expect(first.backend.player.loop).toEqual({ start: 5 * 44_100, end: 15 * 44_100 });
    await first.user.keyboard("l");
    expect(first.backend.player.loop).toBeNull();
    await first.user.keyboard("l");
    expect(first.backend.player.loop).toEqual({ start: 5 * 44_100, end: 15 * 44_100 });
    await first.user.keyboard("4m");
    fireEvent.change(screen.getByRole("slider", { name: "Bass volume" }), { target: { value: "-12" } });
    first.unmount();

    // Opened again (a new window, the same storage): the mix, the loop are back.
    const again = await openPlayer();
    expect(screen.getByRole("button", { name: "Mute Vocals" })).toHaveAttribute("aria-pressed", "true");
    expect(screen.getByRole("slider", { name: "Bass volume" })).toHaveValue("-12");
    expect(again.backend.player.controls?.stems[3]!.mute).toBe(true);
    expect(again.backend.player.loop).toEqual({ start: 5 * 44_100, end: 15 * 44_100 });
  });

  it("changes speed and pitch, exports them and remembers them", async () => {
    vi.useFakeTimers({ shouldAdvanceTime: true });
    try {
      const first = await openPlayer();
      const speed = screen.getByRole("slider", { name: "Speed" });
      // A dragged slider is sent once it settles, not at every step.
      fireEvent.change(speed, { target: { value: "0.9" } });
      fireEvent.change(speed, { target: { value: "0.8" } });
      expect(screen.getByTestId("tempo")).toHaveTextContent("80 %");
      expect(first.backend.player.controls?.tempo ?? 1).toBe(1);
      // A mute while the speed settles stays (the speed's change is
      // applied to the mix as it is when it lands).
      await first.user.click(screen.getByRole("button", { name: "Mute Vocals" }));
      await vi.advanceTimersByTimeAsync(200);
      expect(first.backend.player.controls?.tempo).toBe(0.8);
      expect(first.backend.player.controls?.stems[3]!.mute).toBe(true);
      await first.user.click(screen.getByRole("button", { name: "Mute Vocals" }));
      await first.user.click(screen.getByRole("button", { name: "Pitch down a semitone" }));
      await first.user.click(screen.getByRole("button", { name: "Pitch down a semitone" }));
      expect(screen.getByTestId("transpose")).toHaveTextContent("−2 st");
      expect(first.backend.player.controls?.transpose).toBe(-2);
      expect(first.backend.player.controls?.tempo).toBe(0.8);
      // The instrumental export carries them, and says so.
      expect(screen.getByTestId("export-speed")).toHaveTextContent("At 80 % speed, pitch −2 st");
      await first.user.click(screen.getByRole("button", { name: "Export" }));
      await screen.findByTestId("exported-file");
      const what = first.backend.player.exports[0]!.what;
      expect(what.kind === "mix" && [what.controls.tempo, what.controls.transpose]).toEqual([0.8, -2]);
      first.unmount();

      // Reopened: speed and pitch are back; double-click resets the speed.
      const again = await openPlayer();
      expect(screen.getByTestId("tempo")).toHaveTextContent("80 %");
      expect(screen.getByTestId("transpose")).toHaveTextContent("−2 st");
      expect(again.backend.player.controls?.tempo).toBe(0.8);
      fireEvent.doubleClick(screen.getByRole("slider", { name: "Speed" }));
      expect(again.backend.player.controls?.tempo).toBe(1);
      await again.user.click(screen.getByRole("button", { name: "Original speed and pitch" }));
      expect(again.backend.player.controls?.transpose).toBe(0);
      expect(screen.queryByTestId("export-speed")).not.toBeInTheDocument();
    } finally {
      vi.useRealTimers();
    }
  });

  it("turns the click track and the count-in on, only for a song with a beat", async () => {
    const { backend, user, unmount } = await openPlayer();
    await user.click(screen.getByRole("button", { name: "Click" }));
    expect(backend.player.controls?.metronome).toBe(true);
    expect(screen.getByRole("button", { name: "Click" })).toHaveAttribute("aria-pressed", "true");
    await user.click(screen.getByRole("button", { name: "Count-in" }));
    expect(backend.player.controls?.countIn).toBe(true);
    unmount();
    const free = [mockSong({ id: 1, title: "Falcon 69", durationSeconds: 187, analysis: { bpm: null, key: null } })];
    const app = renderApp({ library: free });
    await app.user.click(screen.getByRole("tab", { name: "Library" }));
    await app.user.click(await screen.findByRole("button", { name: /Falcon 69/ }));
    await app.user.click(screen.getByRole("button", { name: "Play & export" }));
    await screen.findAllByTestId("lane");
    expect(screen.getByRole("button", { name: "Click" })).toBeDisabled();
    expect(screen.getByRole("button", { name: "Count-in" })).toHaveAttribute("title", "No steady beat was found in this song");
  });

  it("compares the original with the mix (A/B), and reopens on the mix", async () => {
    const first = await openPlayer();
    const ab = screen.getByRole("button", { name: "Hear original" });
    expect(ab).toHaveAttribute("aria-pressed", "false");
    await first.user.click(ab);
    expect(first.backend.player.controls?.original).toBe(true);
    expect(ab).toHaveAttribute("aria-pressed", "true");
    // "What I hear" says it exports the stems' mix, not the original.
    await first.user.click(screen.getByRole("radio", { name: "One mix" }));
    await first.user.selectOptions(screen.getByRole("combobox", { name: "Mix" }), "heard");
    expect(screen.getByTestId("export-ab")).toHaveTextContent("the export is the stems' mix (B)");
    await first.user.click(ab);
    expect(screen.queryByTestId("export-ab")).not.toBeInTheDocument();
    first.unmount();
    const again = await openPlayer();
    expect(screen.getByRole("button", { name: "Hear original" })).toHaveAttribute("aria-pressed", "false");
    expect(again.backend.player.controls?.original ?? false).toBe(false);
  });

  it("keeps the transport keys after a fader or a button was touched", async () => {
    const { backend, user } = await openPlayer();
    const fader = screen.getByRole("slider", { name: "Vocals volume" });
    fader.focus();
    await user.keyboard(" ");
    expect(backend.player.status?.playing).toBe(true);
    await user.keyboard("{ArrowRight}");
    await waitFor(() => expect(backend.player.status?.position).toBe(5 * 44_100));
    // The seek did not move the fader (↑/↓ are left to it: the browser's own).
    expect(fader).toHaveValue("0");
    // A focused Play button plays and pauses once per Space.
    screen.getByRole("button", { name: "Pause" }).focus();
    await user.keyboard(" ");
    expect(backend.player.status?.playing).toBe(false);
    await user.keyboard(" ");
    expect(backend.player.status?.playing).toBe(true);
    // Other buttons keep Space as theirs: it presses them, and the song plays on.
    const mute = screen.getByRole("button", { name: "Mute Vocals" });
    await user.click(mute);
    expect(mute).toHaveAttribute("aria-pressed", "true");
    await user.keyboard(" ");
    expect(mute).toHaveAttribute("aria-pressed", "false");
    expect(backend.player.controls?.stems[3]!.mute).toBe(false);
    expect(backend.player.status?.playing).toBe(true);
    screen.getByRole("button", { name: "Back to library" }).focus();
    await user.keyboard(" ");
    expect(screen.queryAllByTestId("lane")).toHaveLength(0);
    expect(backend.player.status?.playing ?? false).toBe(false);
  });

  it("leaves keys alone behind another tab, with Ctrl, Alt or ⌘, and on a held toggle", async () => {
    const { backend, user } = await openPlayer();
    // Ctrl+S, Alt+M, ⌘+Space are not the player's.
    await user.keyboard("{Control>}s{/Control}{Alt>}m{/Alt}{Meta>} {/Meta}");
    expect(backend.player.status?.playing ?? false).toBe(false);
    expect(backend.player.controls?.stems.some((s) => s.solo || s.mute) ?? false).toBe(false);
    // A held Space toggles once.
    await user.keyboard("[Space>3/]");
    expect(backend.player.status?.playing).toBe(true);
    await user.keyboard(" ");
    expect(backend.player.status?.playing).toBe(false);
    // On the Queue tab the (still open) player does not take Space, arrows or M.
    await user.click(screen.getByRole("tab", { name: "Queue" }));
    await user.keyboard(" m{ArrowRight}");
    expect(backend.player.status?.playing).toBe(false);
    expect(backend.player.status?.position ?? 0).toBe(0);
    expect(backend.player.controls?.stems.some((s) => s.mute) ?? false).toBe(false);
    // Arrows on the tab bar move between tabs, not the playhead.
    screen.getByRole("tab", { name: "Queue" }).focus();
    await user.keyboard("{ArrowRight}");
    expect(backend.player.status?.position ?? 0).toBe(0);
  });

  it("gives the song the same length as the library does", async () => {
    const long = [mockSong({ id: 1, title: "Falcon 69", durationSeconds: 60.6 })];
    const { user } = renderApp({ library: long });
    await user.click(screen.getByRole("tab", { name: "Library" }));
    const item = await screen.findByRole("button", { name: /Falcon 69/ });
    expect(item).toHaveTextContent("1:01");
    await user.click(item);
    await user.click(screen.getByRole("button", { name: "Play & export" }));
    await screen.findAllByTestId("lane");
    expect(screen.getByText(/^0:00\.0 \/ /)).toHaveTextContent("0:00.0 / 1:01");
  });

  it("pans a zoomed view with the wheel and the scroll bar", async () => {
    const { user } = await openPlayer();
    expect(screen.queryByRole("slider", { name: "Scroll the waveforms" })).not.toBeInTheDocument();
    await user.click(screen.getByRole("button", { name: "Zoom in" }));
    await user.click(screen.getByRole("button", { name: "Zoom in" }));
    const bar = screen.getByRole("slider", { name: "Scroll the waveforms" });
    expect(bar).toHaveAttribute("aria-valuetext", "Showing 0:00 to 0:46");
    // The wheel pans (clamped at the song's end)...
    fireEvent.wheel(screen.getByTestId("ruler").parentElement!, { deltaY: 100 });
    expect(bar).toHaveAttribute("aria-valuetext", "Showing 2:20 to 3:07");
    // ...and so does the bar.
    fireEvent.change(bar, { target: { value: String(60 * 44_100) } });
    expect(bar).toHaveAttribute("aria-valuetext", "Showing 1:00 to 1:46");
    // Its arrow keys are its own (not the player's seek).
    expect(bar).toHaveAttribute("data-own-keys");
    await user.click(screen.getByRole("button", { name: "Fit" }));
    expect(screen.queryByRole("slider", { name: "Scroll the waveforms" })).not.toBeInTheDocument();
  });

  it("sets the loop from the keyboard: [ in, ] out, \\ clears", async () => {
    const { backend, user } = await openPlayer();
    await user.keyboard("{ArrowRight}");
    await waitFor(() => expect(backend.player.status?.position).toBe(5 * 44_100));
    await user.keyboard("[[");
    await waitFor(() => expect(backend.player.loop).toEqual({ start: 5 * 44_100, end: expect.any(Number) }));
    const songEnd = backend.player.loop!.end;
    expect(songEnd).toBeGreaterThan(5 * 44_100);
    await user.keyboard("{ArrowRight}{ArrowRight}");
    await waitFor(() => expect(backend.player.status?.position).toBe(15 * 44_100));
    await user.keyboard("]");
    await waitFor(() => expect(backend.player.loop).toEqual({ start: 5 * 44_100, end: 15 * 44_100 }));
    // Loop in after the loop's end keeps a region: it runs to the song's end.
    await user.keyboard("{ArrowRight}[[");
    await waitFor(() => expect(backend.player.loop).toEqual({ start: 20 * 44_100, end: songEnd }));
    await user.keyboard("\\");
    await waitFor(() => expect(backend.player.loop).toBeNull());
  });

  it("opens one folder dialog for a double click on Choose…", async () => {
    const { backend, user } = await openPlayer();
    const real = backend.pickExportDir.bind(backend);
    // The dialog stays open until the person picks.
    let picked = () => {};
    const pick = vi
      .spyOn(backend, "pickExportDir")
      .mockImplementationOnce(() => new Promise<void>((go) => (picked = go)).then(() => real()));
    await user.dblClick(screen.getByRole("button", { name: "Choose…" }));
    expect(pick).toHaveBeenCalledTimes(1);
    await act(async () => picked());
    await waitFor(() => expect(screen.getByTestId("export-dir")).toHaveTextContent("/home/you/Exports"));
    expect(pick).toHaveBeenCalledTimes(1);
  });

  it("exports an instrumental MP3 into the chosen folder", async () => {
    const { backend, user } = await openPlayer();
    expect(screen.getByTestId("export-dir")).toHaveTextContent("/Falcon 69/exports");
    await user.click(screen.getByRole("button", { name: "Choose…" }));
    await waitFor(() => expect(screen.getByTestId("export-dir")).toHaveTextContent("/home/you/Exports"));
    await user.click(screen.getByRole("button", { name: "Export" }));
    const done = await screen.findByRole("status");
    expect(within(done).getByTestId("exported-file")).toHaveTextContent("Falcon 69 - Instrumental.mp3");
    expect(backend.player.exports[0]!.dest).toEqual({ kind: "picked", handle: 0 });
    expect(backend.player.exports[0]!.onClash).toBe("refuse");
    const request = backend.player.exports[0]!;
    expect(request.format).toEqual({ kind: "mp3", kbps: 320 });
    expect(request.region).toBeNull();
    expect(request.what.kind === "mix" && request.what.controls.stems.map((s) => s.mute)).toEqual([
      false,
      false,
      false,
      true,
    ]);
  });

  it("opens the folder the listed files went to, even after another folder is chosen", async () => {
    const { backend, user } = await openPlayer();
    await user.click(screen.getByRole("button", { name: "Choose…" }));
    await waitFor(() => expect(screen.getByTestId("export-dir")).toHaveTextContent("/home/you/Exports"));
    await user.click(screen.getByRole("button", { name: "Export" }));
    await screen.findByTestId("exported-file");
    await user.click(screen.getByRole("button", { name: "Song folder" }));
    const open = vi.spyOn(backend, "openFolder");
    await user.click(screen.getByRole("button", { name: "Open export folder" }));
    expect(open).toHaveBeenCalledWith({ kind: "export", id: 1, dest: { kind: "picked", handle: 0 } });
  });

  it("says when a mix export went over full scale, and not otherwise", async () => {
    const { user } = await openPlayer();
    await user.click(screen.getByRole("button", { name: "Export" }));
    await screen.findByTestId("exported-file");
    expect(screen.queryByTestId("export-warning")).not.toBeInTheDocument();
    fireEvent.change(screen.getByRole("slider", { name: "Master volume" }), { target: { value: "2" } });
    await user.click(screen.getByRole("radio", { name: "One mix" }));
    await user.selectOptions(screen.getByRole("combobox", { name: "Mix" }), "heard");
    await user.click(screen.getByRole("button", { name: "Export" }));
    expect(await screen.findByTestId("export-warning")).toHaveTextContent("The mix went over full scale");
  });

  it("shows the mix heard when the player refuses a change", async () => {
    const { backend, user } = await openPlayer();
    const refused = new BackendError("invalid_options", "The song is not open.");
    vi.spyOn(backend, "setControls").mockRejectedValueOnce(refused).mockRejectedValueOnce(refused);
    // Two changes, both refused: back to the mix heard, not to the first.
    await user.click(screen.getByRole("button", { name: "Mute Vocals" }));
    await user.click(screen.getByRole("button", { name: "Solo Bass" }));
    expect(await screen.findByRole("alert")).toHaveTextContent("The song is not open.");
    await waitFor(() =>
      expect(screen.getByRole("button", { name: "Mute Vocals" })).toHaveAttribute("aria-pressed", "false"),
    );
    expect(screen.getByRole("button", { name: "Solo Bass" })).toHaveAttribute("aria-pressed", "false");
    // The next one goes through.
    await user.click(screen.getByRole("button", { name: "Mute Vocals" }));
    expect(screen.getByRole("button", { name: "Mute Vocals" })).toHaveAttribute("aria-pressed", "true");
    expect(backend.player.controls?.stems[3]?.mute).toBe(true);
  });

  it("says when the export folder cannot be opened", async () => {
    const { backend, user } = await openPlayer();
    await user.click(screen.getByRole("button", { name: "Export" }));
    await screen.findByTestId("exported-file");
    vi.spyOn(backend, "openFolder").mockRejectedValue(new BackendError("output", "the folder is gone"));
    await user.click(screen.getByRole("button", { name: "Open export folder" }));
    const alert = await screen.findByRole("alert");
    expect(alert).toHaveTextContent("The export folder could not be opened");
    expect(alert).toHaveTextContent("the folder is gone");
  });

  it("cancels an export still running when the player is left", async () => {
    const { backend, user } = await openPlayer();
    vi.spyOn(backend, "exportSong").mockReturnValue(new Promise(() => {}));
    const cancel = vi.spyOn(backend, "cancelExport");
    await user.click(screen.getByRole("button", { name: "Export" }));
    expect(await screen.findByRole("button", { name: "Cancel export" })).toBeInTheDocument();
    expect(cancel).not.toHaveBeenCalled();
    await user.click(screen.getByRole("button", { name: "Back to library" }));
    await waitFor(() => expect(cancel).toHaveBeenCalledTimes(1));
  });

  it("takes a cancelled export as the user's choice, not a failure", async () => {
    const { backend, user } = await openPlayer();
    let reject: (e: unknown) => void = () => {};
    vi.spyOn(backend, "exportSong").mockReturnValue(new Promise((_, r) => (reject = r)));
    vi.spyOn(backend, "cancelExport").mockImplementation(async () => reject(new BackendError("cancelled", "The export was cancelled.")));
    await user.click(screen.getByRole("button", { name: "Export" }));
    // Export disabled itself: focus is on the way to stop it, then back.
    const cancelButton = await screen.findByRole("button", { name: "Cancel export" });
    await waitFor(() => expect(cancelButton).toHaveFocus());
    await user.click(cancelButton);
    expect(await screen.findByRole("button", { name: "Export" })).toBeEnabled();
    await waitFor(() => expect(screen.getByRole("button", { name: "Export" })).toHaveFocus());
    expect(screen.queryByRole("alert")).not.toBeInTheDocument();
  });

  it("asks before replacing an earlier export and keeps both by default", async () => {
    const { backend, user } = await openPlayer();
    await user.click(screen.getByRole("button", { name: "Export" }));
    expect(await screen.findByTestId("exported-file")).toHaveTextContent("Falcon 69 - Instrumental.mp3");

    // The same export again: nothing is written until the user chooses.
    await user.click(screen.getByRole("button", { name: "Export" }));
    const ask = await screen.findByRole("alertdialog", { name: "Already exported" });
    expect(ask).toHaveTextContent("Falcon 69 - Instrumental.mp3");
    expect(screen.getByRole("button", { name: "Export" })).toBeDisabled();
    expect(within(ask).getByRole("button", { name: "Keep both" })).toHaveFocus();
    expect(backend.player.exports.map((e) => e.onClash)).toEqual(["refuse", "refuse"]);

    await user.click(within(ask).getByRole("button", { name: "Keep both" }));
    expect(await screen.findByTestId("exported-file")).toHaveTextContent("Falcon 69 - Instrumental (2).mp3");

    await user.click(screen.getByRole("button", { name: "Export" }));
    await user.click(within(await screen.findByRole("alertdialog")).getByRole("button", { name: "Replace" }));
    expect(await screen.findByTestId("exported-file")).toHaveTextContent("Falcon 69 - Instrumental.mp3");
    expect(backend.player.exports.map((e) => e.onClash)).toEqual(["refuse", "refuse", "keepBoth", "refuse", "replace"]);

    // Cancel writes nothing more, and gives the focus back to Export; so
    // does Escape.
    await user.click(screen.getByRole("button", { name: "Export" }));
    await user.click(within(await screen.findByRole("alertdialog")).getByRole("button", { name: "Cancel" }));
    expect(screen.queryByRole("alertdialog")).not.toBeInTheDocument();
    expect(backend.player.exports).toHaveLength(6);
    expect(screen.getByRole("button", { name: "Export" })).toHaveFocus();
    await user.click(screen.getByRole("button", { name: "Export" }));
    await screen.findByRole("alertdialog");
    await user.keyboard("{Escape}");
    expect(screen.queryByRole("alertdialog")).not.toBeInTheDocument();
    expect(screen.getByRole("button", { name: "Export" })).toHaveFocus();
    expect(backend.player.exports).toHaveLength(7);
  });

  it("asks again once the options change while it asks (Replace only replaces what it named)", async () => {
    const { backend, user } = await openPlayer();
    await user.click(screen.getByRole("button", { name: "Export" }));
    await screen.findByTestId("exported-file");
    await user.click(screen.getByRole("button", { name: "Export" }));
    expect(await screen.findByRole("alertdialog", { name: "Already exported" })).toBeInTheDocument();
    await user.selectOptions(screen.getByLabelText("Format"), "WAV 24-bit");
    expect(screen.queryByRole("alertdialog")).not.toBeInTheDocument();
    expect(screen.getByRole("button", { name: "Export" })).toBeEnabled();
    expect(backend.player.exports.map((e) => e.onClash)).toEqual(["refuse", "refuse"]);
  });

  it("brings the export's result into view (the panel sits under the lanes)", async () => {
    const { user } = await openPlayer();
    const scrolled: Element[] = [];
    const spy = vi
      .spyOn(Element.prototype, "scrollIntoView")
      .mockImplementation(function (this: Element) {
        scrolled.push(this);
      });
    await user.click(screen.getByRole("button", { name: "Export" }));
    const done = await screen.findByRole("status");
    await waitFor(() => expect(scrolled.some((el) => el.contains(done))).toBe(true));
    spy.mockRestore();
  });

  it("exports chosen stems as WAV", async () => {
    const { backend, user } = await openPlayer();
    await user.click(screen.getByRole("radio", { name: "Separate stem files" }));
    await user.click(screen.getByRole("checkbox", { name: "drums" }));
    await user.selectOptions(screen.getByLabelText("Format"), "WAV 24-bit");
    await user.click(screen.getByRole("button", { name: "Export" }));
    await screen.findByRole("status");
    expect(screen.getAllByTestId("exported-file").map((f) => f.textContent)).toEqual([
      "Falcon 69 - bass.wav",
      "Falcon 69 - other.wav",
      "Falcon 69 - vocals.wav",
    ]);
    expect(backend.player.exports[0]!.what).toEqual({ kind: "stems", stems: ["bass", "other", "vocals"] });
  });

  it("says why there is no sound and keeps waveforms and export", async () => {
    await openPlayer({ playerError: "no audio output device was found" });
    expect(screen.getByText(/no audio output device was found/)).toBeInTheDocument();
    expect(screen.getByRole("button", { name: "Play" })).toBeDisabled();
    expect(screen.getByRole("button", { name: "Export" })).toBeEnabled();
  });

  it("remembers a speed set just before going back to the library", async () => {
    const { user } = await openPlayer();
    fireEvent.change(screen.getByRole("slider", { name: "Speed" }), { target: { value: "0.85" } });
    // Before the change settles (150 ms).
    await user.click(screen.getByRole("button", { name: "Back to library" }));
    await user.click(await screen.findByRole("button", { name: /Falcon 69/ }));
    await user.click(screen.getByRole("button", { name: "Play & export" }));
    await screen.findAllByTestId("lane");
    expect(screen.getByTestId("tempo")).toHaveTextContent("85 %");
  });

  it("goes back to the library", async () => {
    const { user } = await openPlayer();
    await user.click(screen.getByRole("button", { name: "Back to library" }));
    expect(await screen.findByRole("searchbox", { name: "Search library" })).toBeInTheDocument();
  });

  it("remembers the export choices for the next song, and a picked folder while the app runs", async () => {
    const two = [...library, mockSong({ id: 2, title: "Night Drive", durationSeconds: 200 })];
    const app = renderApp({ library: two, pickedDir: "/home/you/Exports" });
    const { user } = app;
    await user.click(screen.getByRole("tab", { name: "Library" }));
    await user.click(await screen.findByRole("button", { name: /Falcon 69/ }));
    await user.click(screen.getByRole("button", { name: "Play & export" }));
    await screen.findAllByTestId("lane");
    await user.click(screen.getByRole("radio", { name: "Separate stem files" }));
    await user.selectOptions(screen.getByLabelText("Format"), "WAV 24-bit");
    await user.selectOptions(screen.getByLabelText("Sample rate"), "48000");
    await user.click(screen.getByRole("button", { name: "Choose…" }));
    await waitFor(() => expect(screen.getByTestId("export-dir")).toHaveTextContent("/home/you/Exports"));
    await user.click(screen.getByRole("button", { name: "Back to library" }));

    await user.click(await screen.findByRole("button", { name: /Night Drive/ }));
    await user.click(screen.getByRole("button", { name: "Play & export" }));
    await screen.findAllByTestId("lane");
    expect(screen.getByRole("radio", { name: "Separate stem files" })).toBeChecked();
    expect(screen.getByLabelText("Format")).toHaveDisplayValue("WAV 24-bit");
    expect(screen.getByLabelText("Sample rate")).toHaveValue("48000");
    expect(screen.getByTestId("export-dir")).toHaveTextContent("/home/you/Exports");
  });

  it("plays a song while it separates and takes the finished files when it is done", async () => {
    const running = mockJob({
      id: 7,
      title: "Still separating",
      durationSeconds: 200,
      state: { state: "separating", segment: 2, total: 8 },
    });
    const { backend, user } = renderApp({ queue: [running] });
    await user.click(await screen.findByRole("button", { name: "Listen now" }));
    await screen.findAllByTestId("lane");
    expect(lanes()).toEqual(["mixture", "drums", "bass", "other", "vocals"]);
    // A quarter is separated (the player's first status says so): the rest
    // of the timeline is marked, exports wait.
    act(() => backend.emitPlayerStatus({ separated: 50 * 44_100 }));
    expect(screen.getByTestId("separating")).toHaveTextContent("Separating: 0:50 of 3:20 ready");
    expect(screen.getByTestId("separating-ahead")).toBeInTheDocument();
    expect(screen.getByTestId("export-later")).toBeInTheDocument();
    // A/B with the original works while it separates too.
    expect(screen.getByRole("button", { name: "Hear original" })).toHaveAttribute("aria-pressed", "false");
    // Nothing to drag out before the files exist.
    expect(screen.queryByRole("button", { name: /^Drag .* out$/ })).not.toBeInTheDocument();
    await user.click(screen.getByRole("button", { name: "Play" }));
    act(() => backend.emitPlayerStatus({ position: 50 * 44_100, separated: 50 * 44_100, waiting: true }));
    expect(screen.getByTestId("separating")).toHaveTextContent("Waiting for the separation to catch up");
    // All of it separated, the stems being written: not "0:00 ready", nothing hatched.
    act(() => backend.emitPlayerStatus({ position: 60 * 44_100, separated: null, waiting: false }));
    expect(screen.getByTestId("separating")).toHaveTextContent("Separated: writing the stems");
    expect(screen.queryByTestId("separating-ahead")).not.toBeInTheDocument();

    // The job is done: the player goes on with the finished files.
    act(() => void backend.updateJob(7, { ...mockSong({ id: 7, title: "Still separating" }), state: { state: "done" } }));
    await waitFor(() => expect(screen.queryByTestId("separating-ahead")).not.toBeInTheDocument());
    expect(screen.queryByTestId("separating")).not.toBeInTheDocument();
    expect(await screen.findByRole("button", { name: /^Export/ })).toBeInTheDocument();
    expect(backend.player.status?.playing).toBe(true);
    expect(screen.getByRole("button", { name: "Hear original" })).toBeInTheDocument();
  });

  it("says when the song it plays while separating fails or is cancelled, and stops asking for waveforms", async () => {
    const running = mockJob({
      id: 9,
      title: "Doomed",
      durationSeconds: 200,
      state: { state: "separating", segment: 2, total: 8 },
    });
    const { backend, user } = renderApp({ queue: [running] });
    await user.click(await screen.findByRole("button", { name: "Listen now" }));
    await screen.findAllByTestId("lane");
    act(() => void backend.updateJob(9, { state: { state: "failed", code: "output", message: "out of memory" } }));
    const alert = await screen.findByRole("alert");
    expect(alert).toHaveTextContent("The separation stopped");
    expect(alert).toHaveTextContent("The separation failed: out of memory");
    // With what to do, as the queue's row says it.
    expect(alert).toHaveTextContent("Check that the library folder exists");
    expect(screen.getByTestId("export-later")).toHaveTextContent("No exports");
    // Removed from the queue then (from the Queue tab, or by the HTTP
    // service): its working folder goes, so the player closes and says
    // why, and asks nothing more of the song.
    const peaks = vi.spyOn(backend, "songPeaks");
    await act(() => backend.removeJob(9, false, false));
    expect(await screen.findByText(/“Doomed” was removed from the queue before it finished/)).toBeInTheDocument();
    expect(screen.queryAllByTestId("lane")).toHaveLength(0);
    await new Promise((r) => setTimeout(r, 3_200));
    expect(peaks).not.toHaveBeenCalled();
    expect(screen.queryByTestId("separating")).not.toBeInTheDocument();
  });

  it("closes a song played while separating when its running job is deleted through the HTTP service", async () => {
    const running = mockJob({
      id: 10,
      title: "Deleted remotely",
      durationSeconds: 200,
      state: { state: "separating", segment: 2, total: 8 },
    });
    const { backend, user } = renderApp({ queue: [running] });
    await user.click(await screen.findByRole("button", { name: "Listen now" }));
    await screen.findAllByTestId("lane");
    // The service cancels and removes the job: the queue changes.
    act(() => void backend.updateJob(10, { state: { state: "cancelled" } }));
    await act(() => backend.removeJob(10, true, false));
    expect(await screen.findByText(/“Deleted remotely” was removed from the queue/)).toBeInTheDocument();
    expect(screen.queryAllByTestId("lane")).toHaveLength(0);
  });

  it("keeps the loop's place in time when the finished files are at another rate", async () => {
    const { backend, user } = await separating48kWithLoop();
    expect(backend.player.loop).toEqual({ start: 5 * 44_100, end: 15 * 44_100 });

    act(() => void backend.updateJob(8, { ...mockSong({ id: 8, title: "48 kHz song" }), state: { state: "done" } }));
    await waitFor(() => expect(screen.queryByTestId("separating-ahead")).not.toBeInTheDocument());
    expect(backend.player.loop).toEqual({ start: 5 * 48_000, end: 15 * 48_000 });
    // The playhead is at the same time, in the files' frames.
    expect(screen.getByTestId("position")).toHaveAttribute("data-rate", "48000");
    expect(screen.getByTestId("position")).toHaveAttribute("data-frame", String(15 * 48_000));
    expect(screen.getByTestId("position")).toHaveTextContent(/^0:15/);
    // The page's loop moved with it: off and on again, it is the same 5-15 s.
    await user.keyboard("l");
    expect(backend.player.loop).toBeNull();
    await user.keyboard("l");
    expect(backend.player.loop).toEqual({ start: 5 * 48_000, end: 15 * 48_000 });
  });

  it("brings a loop turned off with L to the finished files' rate when it is turned on again", async () => {
    const { backend, user } = await separating48kWithLoop();
    await user.keyboard("l");
    expect(backend.player.loop).toBeNull();

    act(() => void backend.updateJob(8, { ...mockSong({ id: 8, title: "48 kHz song" }), state: { state: "done" } }));
    await waitFor(() => expect(screen.queryByTestId("separating-ahead")).not.toBeInTheDocument());
    await waitFor(() => expect(screen.getByTestId("position")).toHaveAttribute("data-rate", "48000"));
    await user.keyboard("l");
    expect(backend.player.loop).toEqual({ start: 5 * 48_000, end: 15 * 48_000 });
  });
});

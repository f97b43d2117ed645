import { act, screen, waitFor, within } from "@testing-library/react";
import { describe, expect, it, vi } from "vitest";
import { BackendError } from "../backend";
import { mockJob, mockSong } from "../mockBackend";
import { renderApp } from "../test/renderApp";

const library = [
  mockSong({ id: 1, title: "Falcon 69", durationSeconds: 187, finishedAt: Date.UTC(2025, 0, 1) }),
  mockSong({ id: 2, title: "Night Drive", durationSeconds: 241, finishedAt: Date.UTC(2025, 0, 3), provider: "cuda" }),
  mockSong({ id: 3, title: "Falling Slowly", finishedAt: Date.UTC(2025, 0, 2), album: "Once" }),
];

async function openLibrary() {
  const app = renderApp({ library });
  await app.user.click(screen.getByRole("tab", { name: "Library" }));
  await screen.findAllByTestId("library-item");
  return app;
}

const titles = () => screen.getAllByTestId("library-item").map((item) => item.querySelector(".song-item__title")?.textContent);

describe("Library", () => {
  it("lists finished songs newest first with their length and provider", async () => {
    await openLibrary();
    expect(titles()).toEqual(["Night Drive", "Falling Slowly", "Falcon 69"]);
    const [newest] = screen.getAllByTestId("library-item");
    expect(newest).toHaveTextContent("4:01");
    expect(newest).toHaveTextContent("CUDA");
  });

  it("drops a song removed elsewhere (by a client of the HTTP service)", async () => {
    const { backend } = await openLibrary();
    // What the app hears when the service deletes a job: a queue change.
    await backend.removeJob(2, true, false);
    await waitFor(() => expect(titles()).toEqual(["Falling Slowly", "Falcon 69"]));
  });

  it("leaves the player when the song it plays is deleted elsewhere, saying so", async () => {
    const { backend, user } = await openLibrary();
    await user.click(screen.getByRole("button", { name: /Night Drive/ }));
    await user.click(screen.getByRole("button", { name: "Play & export" }));
    await screen.findAllByTestId("lane");
    await backend.removeJob(2, true, false);
    const alert = await screen.findByRole("alert");
    expect(alert).toHaveTextContent("“Night Drive” was deleted from the library, so the player closed.");
    expect(screen.queryAllByTestId("lane")).toEqual([]);
    expect(titles()).toEqual(["Falling Slowly", "Falcon 69"]);
  });

  it("keeps the keyboard's place: on the song's title in the player, on the song in the list after", async () => {
    const { user } = await openLibrary();
    await user.click(screen.getByRole("button", { name: /Night Drive/ }));
    screen.getByRole("button", { name: "Play & export" }).focus();
    await user.keyboard("{Enter}");
    await screen.findAllByTestId("lane");
    await waitFor(() => expect(screen.getByRole("heading", { name: "Night Drive" })).toHaveFocus());
    await user.click(screen.getByRole("button", { name: "Back to library" }));
    await waitFor(() => expect(screen.getByRole("button", { name: /Night Drive/ })).toHaveFocus());
  });

  it("keeps the player when another song is deleted elsewhere, and sees its own deletion under a search", async () => {
    const { backend, user } = await openLibrary();
    await user.click(screen.getByRole("button", { name: /Falling Slowly/ }));
    await user.click(screen.getByRole("button", { name: "Play & export" }));
    await screen.findAllByTestId("lane");
    const list = vi.spyOn(backend, "listLibrary");
    await backend.removeJob(1, true, false);
    await waitFor(() => expect(list).toHaveBeenCalled());
    await new Promise((r) => setTimeout(r, 50));
    expect(screen.getAllByTestId("lane")).not.toEqual([]);
    expect(screen.queryByRole("alert")).not.toBeInTheDocument();

    // Back to the list, a search that leaves the song out, the song opened
    // again from elsewhere (a Finished row): another reload keeps it.
    await user.click(screen.getByRole("button", { name: "Back to library" }));
    await user.type(screen.getByRole("searchbox", { name: "Search library" }), "night");
    await waitFor(() => expect(titles()).toEqual(["Night Drive"]));
    await user.click(screen.getByRole("button", { name: /Night Drive/ }));
    await user.click(screen.getByRole("button", { name: "Play & export" }));
    await screen.findAllByTestId("lane");
    await backend.removeJob(2, true, false);
    // Deleted while the search does not list it: still seen as deleted.
    expect(await screen.findByRole("alert")).toHaveTextContent("“Night Drive” was deleted from the library");
  });

  it("keeps a song the search leaves out, opened from the queue's finished list", async () => {
    const running = mockJob({ id: 7, title: "Fresh Song", state: { state: "separating", segment: 2, total: 8 } });
    const { backend, user } = renderApp({ library, queue: [running] });
    await user.click(screen.getByRole("tab", { name: "Library" }));
    await user.type(screen.getByRole("searchbox", { name: "Search library" }), "once");
    await waitFor(() => expect(titles()).toEqual(["Falling Slowly"]));
    await user.click(screen.getByRole("tab", { name: "Queue" }));
    act(() => void backend.updateJob(7, { ...mockSong({ id: 7, title: "Fresh Song" }), state: { state: "done" } }));
    await user.click(await screen.findByRole("button", { name: "Open in player" }));
    await screen.findAllByTestId("lane");
    await backend.removeJob(1, true, false);
    await new Promise((r) => setTimeout(r, 100));
    expect(screen.getAllByTestId("lane")).not.toEqual([]);
    expect(screen.queryByRole("alert")).not.toBeInTheDocument();
    // Then deleted itself, never listed under this search: seen all the same.
    await backend.removeJob(7, true, false);
    expect(await screen.findByRole("alert")).toHaveTextContent("“Fresh Song” was deleted from the library");
  });

  it("shows a song's album from its tags, and finds songs by album", async () => {
    const { user } = await openLibrary();
    expect(screen.getAllByTestId("library-item")[1]).toHaveTextContent("Once");
    await user.type(screen.getByRole("searchbox", { name: "Search library" }), "once");
    await waitFor(() => expect(titles()).toEqual(["Falling Slowly"]));
  });

  it("shows each song's tempo and key, and nothing for a song without a steady beat", async () => {
    const rubato = mockSong({ id: 4, title: "Rubato", finishedAt: Date.UTC(2024, 0, 2), analysis: { bpm: null, key: null } });
    const { user } = renderApp({ library: [...library, rubato] });
    await user.click(screen.getByRole("tab", { name: "Library" }));
    const items = await screen.findAllByTestId("library-item");
    expect(items[0]).toHaveTextContent("117.6 BPM · G♯ minor (1A)");
    expect(items[3]).toHaveTextContent("Rubato");
    expect(items[3]).not.toHaveTextContent("BPM");
    await user.click(await screen.findByRole("button", { name: /Night Drive/ }));
    expect(await screen.findByTestId("song-bpm")).toHaveTextContent("117.6 BPM");
    expect(screen.getByTestId("song-key")).toHaveTextContent("G♯ minor (1A)");
    await user.click(screen.getByRole("button", { name: "Play & export" }));
    expect(await screen.findByTestId("player-analysis")).toHaveTextContent("117.6 BPM · G♯ minor (1A)");
  });

  it("shows the quality each song was separated with", async () => {
    const fast = mockSong({
      id: 5,
      title: "Quick One",
      finishedAt: Date.UTC(2030, 0, 1),
    });
    fast.options = { ...fast.options, preset: "fast", model: "htdemucs_int8", shifts: 0, overlap: 0.1 };
    const { user } = renderApp({ library: [...library, fast] });
    await user.click(screen.getByRole("tab", { name: "Library" }));
    const items = await screen.findAllByTestId("library-item");
    expect(items[0]).toHaveTextContent("Quick One");
    expect(items[0]).toHaveTextContent("Fast");
    await user.click(await screen.findByRole("button", { name: /Quick One/ }));
    expect(await screen.findByTestId("song-quality")).toHaveTextContent("Fast (htdemucs_int8, 0 shifts, overlap 0.1)");
  });

  it("filters by the search text", async () => {
    const { user } = await openLibrary();
    await user.type(screen.getByRole("searchbox", { name: "Search library" }), "fal");
    await waitFor(() => expect(titles()).toEqual(["Falling Slowly", "Falcon 69"]));
    await user.type(screen.getByRole("searchbox", { name: "Search library" }), "xyz");
    expect(await screen.findByText("No songs match “falxyz”.")).toBeInTheDocument();
  });

  it("shows a song's stems and opens its folder", async () => {
    const { backend, user } = await openLibrary();
    const openFolder = vi.spyOn(backend, "openFolder");
    await user.click(screen.getByRole("button", { name: /Falcon 69/ }));

    const detail = screen.getByRole("region", { name: "Falcon 69" });
    const stems = within(detail).getAllByTestId("stem");
    expect(stems.map((s) => s.textContent)).toEqual([
      "drumsdrums.wav",
      "bassbass.wav",
      "otherother.wav",
      "vocalsvocals.wav",
    ]);
    await user.click(within(detail).getByRole("button", { name: "Open folder" }));
    expect(openFolder).toHaveBeenCalledWith({ kind: "song", id: 1 });
  });

  it("asks before removing a song, and whether to delete its files", async () => {
    const { backend, user } = await openLibrary();
    const removeJob = vi.spyOn(backend, "removeJob");
    await user.click(screen.getByRole("button", { name: /Night Drive/ }));
    const removeButton = screen.getByRole("button", { name: "Remove from library" });

    await user.click(removeButton);
    const dialog = screen.getByRole("dialog", { name: "Remove “Night Drive” from the library?" });
    expect(within(dialog).getByRole("button", { name: "Cancel" })).toHaveFocus();
    // A click on the dialog's text keeps focus in it: Shift+Tab stays
    // inside, Escape still closes.
    await user.click(within(dialog).getByRole("heading"));
    expect(dialog.contains(document.activeElement)).toBe(true);
    await user.keyboard("{Shift>}{Tab}{/Shift}");
    expect(dialog.contains(document.activeElement)).toBe(true);
    await user.keyboard("{Escape}");
    expect(screen.queryByRole("dialog")).not.toBeInTheDocument();
    expect(removeButton).toHaveFocus();
    expect(removeJob).not.toHaveBeenCalled();

    await user.click(removeButton);
    const ask = screen.getByRole("dialog");
    expect(ask).toHaveTextContent("the 4 stem files, stemroom.json and the waveform cache");
    expect(ask).toHaveTextContent("Anything else in the folder stays");
    const exportsBox = within(ask).getByRole("checkbox", { name: "Also delete the exports made into the song's folder" });
    expect(exportsBox).not.toBeChecked();
    await user.click(screen.getByRole("button", { name: "Remove and delete files" }));
    expect(removeJob).toHaveBeenCalledWith(2, true, false);
    await waitFor(() => expect(titles()).toEqual(["Falling Slowly", "Falcon 69"]));
    expect(screen.queryByRole("region", { name: "Night Drive" })).not.toBeInTheDocument();
  });

  it("can remove a song and keep its files", async () => {
    const { backend, user } = await openLibrary();
    const removeJob = vi.spyOn(backend, "removeJob");
    await user.click(screen.getByRole("button", { name: /Falcon 69/ }));
    await user.click(screen.getByRole("button", { name: "Remove from library" }));
    await user.click(screen.getByRole("button", { name: "Remove, keep files" }));
    expect(removeJob).toHaveBeenCalledWith(1, false, false);
    // Its detail closed: the keyboard focus goes to the song before it in
    // the list (it was the last), not to the page's body.
    await waitFor(() => expect(titles()).toEqual(["Night Drive", "Falling Slowly"]));
    await waitFor(() => expect(screen.getByRole("button", { name: /Falling Slowly/ })).toHaveFocus());
  });

  it("deletes the exports too only when they are ticked", async () => {
    const { backend, user } = await openLibrary();
    const removeJob = vi.spyOn(backend, "removeJob");
    await user.click(screen.getByRole("button", { name: /Falcon 69/ }));
    await user.click(screen.getByRole("button", { name: "Remove from library" }));
    await user.click(screen.getByRole("checkbox", { name: "Also delete the exports made into the song's folder" }));
    await user.click(screen.getByRole("button", { name: "Remove and delete files" }));
    expect(removeJob).toHaveBeenCalledWith(1, true, true);
  });

  it("keeps the song chosen while another one is removed, and says why a removal failed", async () => {
    const { backend, user } = await openLibrary();
    const removeJob = backend.removeJob.bind(backend);
    let answer: (ok: boolean) => void = () => {};
    vi.spyOn(backend, "removeJob").mockImplementation(
      (id, deleteFiles, deleteExports) =>
        new Promise<void>((resolve, reject) => {
          answer = (ok) =>
            ok
              ? resolve(removeJob(id, deleteFiles, deleteExports))
              : reject(new BackendError("output", "the folder is read-only"));
        }),
    );

    // Night Drive's removal answers once Falcon 69 is shown: Falcon 69 stays.
    await user.click(screen.getByRole("button", { name: /Night Drive/ }));
    await user.click(screen.getByRole("button", { name: "Remove from library" }));
    await user.click(screen.getByRole("button", { name: "Remove, keep files" }));
    await user.click(screen.getByRole("button", { name: /Falcon 69/ }));
    await act(async () => answer(true));
    await waitFor(() => expect(titles()).toEqual(["Falling Slowly", "Falcon 69"]));
    expect(screen.getByRole("region", { name: "Falcon 69" })).toBeInTheDocument();

    // A failure is said, naming the song, though its detail is gone.
    await user.click(screen.getByRole("button", { name: "Remove from library" }));
    await user.click(screen.getByRole("button", { name: "Remove, keep files" }));
    await user.click(screen.getByRole("button", { name: /Falling Slowly/ }));
    await act(async () => answer(false));
    const alert = await screen.findByRole("alert");
    expect(alert).toHaveTextContent("A song could not be removed");
    expect(alert).toHaveTextContent("“Falcon 69” is still in the library: the folder is read-only");
    expect(screen.getByRole("region", { name: "Falling Slowly" })).toBeInTheDocument();
    expect(titles()).toEqual(["Falling Slowly", "Falcon 69"]);
  });
});

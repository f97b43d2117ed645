import { act, screen, waitFor, within } from "@testing-library/react";
import { describe, expect, it, vi } from "vitest";
import type { AddResult, Job, JobState } from "../bindings";
import { mockJob } from "../mockBackend";
import { renderApp } from "../test/renderApp";

const row = (title: string) => screen.getByText(title).closest<HTMLElement>('[data-testid="job-row"]')!;
const rowTitles = () => screen.getAllByTestId("job-row").map((r) => r.querySelector(".job__title")?.textContent);
const buttonNames = (title: string) => within(row(title)).queryAllByRole("button").map((b) => b.textContent);

/** A finished song from "/music/Army of Me.flac". */
const armyOfMe = mockJob({
  id: 5,
  title: "Army of Me",
  state: { state: "done" },
  source: { kind: "file", path: "/music/Army of Me.flac" },
  finishedAt: Date.UTC(2025, 0, 2),
});

function job(id: number, title: string, state: JobState): Job {
  return mockJob({ id, title, state });
}

describe("Queue", () => {
  it("explains how to add songs when empty", async () => {
    renderApp();
    expect(await screen.findByText("No songs in the queue")).toBeInTheDocument();
    expect(screen.getByText(/Drag audio files onto this window/)).toBeInTheDocument();
  });

  it("adds a dropped file and shows it as a queued job", async () => {
    const { backend } = renderApp();
    const addPaths = vi.spyOn(backend, "addPaths");
    act(() => backend.dropFiles(["/music/Falcon 69.flac"]));

    expect(addPaths).toHaveBeenCalledWith(["/music/Falcon 69.flac"], false, null);
    const added = await screen.findByTestId("job-row");
    expect(added).toHaveAttribute("data-state", "queued");
    expect(added).toHaveAttribute("data-job-id", "1");
    expect(within(added).getByText("Falcon 69")).toBeInTheDocument();
    expect(within(added).getByText("Queued")).toBeInTheDocument();
  });

  it("takes links in the field, not paths", async () => {
    const { backend, user } = renderApp();
    const addPaths = vi.spyOn(backend, "addPaths");
    const field = screen.getByRole("textbox", { name: "Link" });
    await user.type(field, "  /home/you/Music/Falcon 69.flac {Enter}");
    expect(await screen.findByTestId("add-bar-hint")).toHaveTextContent("This field takes links");
    expect(addPaths).not.toHaveBeenCalled();
    expect(field).toHaveValue("  /home/you/Music/Falcon 69.flac ");
  });

  it("adds several links pasted at once, and names a refused link whole", async () => {
    const { backend, user } = renderApp();
    const addPaths = vi.spyOn(backend, "addPaths");
    const field = screen.getByRole("textbox", { name: "Link" });
    await user.click(field);
    await user.paste("https://example.com/One.mp3 https://example.com/Two.mp3");
    await user.keyboard("{Enter}");
    expect(addPaths).toHaveBeenCalledWith(["https://example.com/One.mp3", "https://example.com/Two.mp3"], false, null);
    expect(await screen.findAllByTestId("job-row")).toHaveLength(2);
    await waitFor(() => expect(field).toHaveValue(""));
    addPaths.mockResolvedValueOnce({
      added: [],
      rejected: [{ path: "https://www.youtube.com/watch?v=abc", reason: "This video is unavailable." }],
      duplicates: [],
      skipped: [],
      skippedMore: 0,
      playlists: [],
    });
    await user.paste("https://www.youtube.com/watch?v=abc");
    await user.keyboard("{Enter}");
    const alert = await screen.findByRole("alert");
    expect(alert).toHaveTextContent("1 link was not added");
    expect(within(alert).getAllByRole("listitem").map((li) => li.textContent)).toEqual([
      "https://www.youtube.com/watch?v=abc: This video is unavailable.",
    ]);
  });

  it("adds what the file dialog picked", async () => {
    const { user } = renderApp({ pickedFiles: ["/music/One.mp3", "/music/Two.wav"] });
    await user.click(screen.getByRole("button", { name: "Add files…" }));
    expect(await screen.findAllByTestId("job-row")).toHaveLength(2);
  });

  it("adds songs with the quality chosen beside the field", async () => {
    const { backend, user } = renderApp();
    const addPaths = vi.spyOn(backend, "addPaths");
    const quality = screen.getByRole("combobox", { name: "Quality of songs added now" });
    expect(quality).toHaveValue("");
    await user.selectOptions(quality, "Best");
    act(() => backend.dropFiles(["/music/Slow.flac"]));
    expect(addPaths).toHaveBeenCalledWith(["/music/Slow.flac"], false, "best");
    await screen.findByTestId("job-row");
    const [job] = await backend.listQueue();
    expect(job?.options).toMatchObject({ preset: "best", model: "htdemucs", shifts: 2, overlap: 0.5 });
    // Back to the settings' quality.
    await user.selectOptions(quality, "Quality as in Settings");
    act(() => backend.dropFiles(["/music/Next.flac"]));
    await waitFor(() => expect(addPaths).toHaveBeenLastCalledWith(["/music/Next.flac"], false, null));
  });

  it("lists rejected files with their reason until dismissed", async () => {
    const { backend, user } = renderApp();
    act(() => backend.dropFiles(["/docs/notes.txt"]));

    const alert = await screen.findByRole("alert");
    expect(alert).toHaveTextContent("1 file was not added");
    expect(alert).toHaveTextContent("notes.txt: Not an audio file Stemroom can read.");
    expect(screen.queryByTestId("job-row")).not.toBeInTheDocument();

    await user.click(within(alert).getByRole("button", { name: "Dismiss" }));
    expect(screen.queryByRole("alert")).not.toBeInTheDocument();
  });

  it("shows progress and the time left from progress events", async () => {
    const { backend } = renderApp({ queue: [job(1, "Falcon 69", { state: "decoding" })] });
    const bar = await screen.findByRole("progressbar", { name: "Progress of Falcon 69" });
    expect(bar).toHaveAttribute("aria-valuenow", "0");

    const state: JobState = { state: "separating", segment: 3, total: 11 };
    act(() => backend.emit({ kind: "progress", progress: { id: 1, state, percent: 29.5, etaSeconds: 80, bytesPerSecond: null, notice: null } }));

    expect(bar).toHaveAttribute("aria-valuenow", "30");
    expect(row("Falcon 69")).toHaveAttribute("data-state", "separating");
    expect(within(row("Falcon 69")).getByText("Separating")).toHaveAttribute("title", "Part 3 of 11");
    expect(within(row("Falcon 69")).getByText("30 %")).toBeInTheDocument();
    expect(within(row("Falcon 69")).getByText("about 1 min 20 s left")).toBeInTheDocument();
  });

  it("says why a separated song is held up, until it goes on", async () => {
    const { backend } = renderApp({ queue: [job(1, "Falcon 69", { state: "encoding" })] });
    expect(await screen.findByText("Finishing")).toBeInTheDocument();
    const state: JobState = { state: "encoding" };
    const notice = "The song is separated, but the queue cannot record it (database or disk is full). Trying again every 5 s.";
    act(() => backend.emit({ kind: "progress", progress: { id: 1, state, percent: 95, etaSeconds: 0, bytesPerSecond: null, notice } }));
    expect(within(row("Falcon 69")).getByRole("status")).toHaveTextContent(notice);

    act(() => void backend.updateJob(1, { state: { state: "done" } }));
    expect(screen.queryByText(notice)).not.toBeInTheDocument();
  });

  it("follows jobs changing and moves finished ones to the library", async () => {
    const { backend, user } = renderApp({ queue: [job(1, "Falcon 69", { state: "encoding" })] });
    expect(await screen.findByText("Finishing")).toBeInTheDocument();

    const failed: JobState = { state: "failed", code: "missing_model", message: "The model is gone." };
    act(() => void backend.updateJob(1, { state: failed, durationSeconds: 187 }));
    expect(row("Falcon 69")).toHaveAttribute("data-state", "failed");
    expect(within(row("Falcon 69")).getByText("Failed: The model is gone.")).toBeInTheDocument();
    expect(within(row("Falcon 69")).getByText("3:07")).toBeInTheDocument();
    expect(within(row("Falcon 69")).getByText(/Download the model in Settings/)).toBeInTheDocument();

    act(() => void backend.updateJob(1, { state: { state: "done" }, finishedAt: Date.UTC(2025, 0, 3) }));
    await waitFor(() => expect(screen.queryByTestId("job-row")).not.toBeInTheDocument());
    await user.click(screen.getByRole("tab", { name: "Library" }));
    expect(await screen.findByTestId("library-item")).toHaveTextContent("Falcon 69");
  });

  it("keeps a Done row for each finished song until cleared, and opens it in the player", async () => {
    const { backend, user } = renderApp({
      queue: [job(1, "Falcon 69", { state: "encoding" }), job(2, "Night Drive", { state: "encoding" })],
    });
    expect(await screen.findAllByTestId("job-row")).toHaveLength(2);
    act(() => void backend.updateJob(1, { state: { state: "done" }, finishedAt: Date.UTC(2025, 0, 3) }));
    act(() => void backend.updateJob(2, { state: { state: "done" }, finishedAt: Date.UTC(2025, 0, 4) }));
    await waitFor(() => expect(screen.queryByTestId("job-row")).not.toBeInTheDocument());
    const done = await screen.findAllByTestId("done-row");
    // Newest first, each saying where it went, with a way to play it.
    expect(done.map((r) => r.dataset.jobId)).toEqual(["2", "1"]);
    expect(done[0]).toHaveTextContent("Night DriveDone · in the Library");
    expect(screen.queryByText("No songs in the queue")).not.toBeInTheDocument();

    await user.click(screen.getByRole("button", { name: "Clear Night Drive from this list" }));
    expect(screen.getAllByTestId("done-row")).toHaveLength(1);

    const openSong = vi.spyOn(backend, "openSong");
    const open = within(screen.getByTestId("done-row")).getByRole("button", { name: "Open in player" });
    // Which song it opens is said (several rows have the same button).
    expect(open).toHaveAccessibleDescription(screen.getByTestId("done-row").querySelector(".job__title")?.textContent ?? "?");
    await user.click(open);
    expect(screen.getByRole("tab", { name: "Library" })).toHaveAttribute("aria-selected", "true");
    expect(await screen.findByRole("region", { name: "Player" })).toBeInTheDocument();
    await waitFor(() => expect(openSong).toHaveBeenCalledWith(1, expect.any(Function)));

    await user.click(screen.getByRole("tab", { name: "Queue" }));
    await user.click(screen.getByRole("button", { name: "Clear Falcon 69 from this list" }));
    expect(screen.queryByTestId("done-row")).not.toBeInTheDocument();
    expect(screen.getByText("No songs in the queue")).toBeInTheDocument();
  });

  it("drops a Done row when its song is removed from the library", async () => {
    const { backend, user } = renderApp({
      queue: [job(1, "Falcon 69", { state: "encoding" }), job(2, "Night Drive", { state: "encoding" })],
    });
    expect(await screen.findAllByTestId("job-row")).toHaveLength(2);
    act(() => void backend.updateJob(1, { state: { state: "done" }, finishedAt: Date.UTC(2025, 0, 3) }));
    act(() => void backend.updateJob(2, { state: { state: "done" }, finishedAt: Date.UTC(2025, 0, 4) }));
    expect(await screen.findAllByTestId("done-row")).toHaveLength(2);

    await user.click(screen.getByRole("tab", { name: "Library" }));
    await user.click(await screen.findByRole("button", { name: /Night Drive/ }));
    await user.click(await screen.findByRole("button", { name: "Remove from library" }));
    await user.click(screen.getByRole("button", { name: "Remove, keep files" }));
    await user.click(screen.getByRole("tab", { name: "Queue" }));
    await waitFor(() => expect(screen.getAllByTestId("done-row").map((r) => r.dataset.jobId)).toEqual(["1"]));
  });

  it("says when a song is already in Stemroom, and can open it or separate it again", async () => {
    const { backend, user } = renderApp({ queue: [armyOfMe] });
    act(() => backend.dropFiles(["/music/Army of Me.flac"]));
    const notice = await screen.findByRole("alert");
    expect(notice).toHaveTextContent("This song is already in Stemroom");
    expect(notice).toHaveTextContent("Army of Me.flac is in the library as “Army of Me”.");
    expect(screen.queryByTestId("job-row")).not.toBeInTheDocument();

    // A double click (the backend still at the first) queues it once.
    const real = backend.addPaths.bind(backend);
    let answer = () => {};
    const addPaths = vi.spyOn(backend, "addPaths").mockImplementation(
      (...args) => new Promise<void>((go) => (answer = go)).then(() => real(...args)),
    );
    await user.dblClick(within(notice).getByRole("button", { name: "Separate again" }));
    expect(within(notice).getByRole("button", { name: "Separate again" })).toBeDisabled();
    await act(async () => answer());
    expect(addPaths).toHaveBeenCalledTimes(1);
    expect(addPaths).toHaveBeenCalledWith(["/music/Army of Me.flac"], true, null);
    addPaths.mockRestore();
    expect(await screen.findByTestId("job-row")).toHaveTextContent("Army of Me");
    expect(screen.queryByRole("alert")).not.toBeInTheDocument();

    // Added once more: now it is in the queue (no player for it yet).
    act(() => backend.dropFiles(["/music/Army of Me.flac"]));
    const queued = await screen.findByTestId("duplicate");
    expect(queued).toHaveTextContent("is in the queue");
    expect(within(queued).queryByRole("button", { name: "Open in player" })).not.toBeInTheDocument();
  });

  it("says when a link pasted again is already in the queue, naming the whole link", async () => {
    const { backend, user } = renderApp();
    const field = screen.getByRole("textbox", { name: "Link" });
    await user.type(field, "https://example.com/watch?v=abc{Enter}");
    expect(await screen.findByTestId("job-row")).toBeInTheDocument();
    await user.type(field, "https://EXAMPLE.com/watch?v=abc{Enter}");
    const dup = await screen.findByTestId("duplicate");
    expect(dup).toHaveTextContent("https://EXAMPLE.com/watch?v=abc is in the queue");
    expect(screen.getAllByTestId("job-row")).toHaveLength(1);
    const addPaths = vi.spyOn(backend, "addPaths");
    await user.click(within(dup).getByRole("button", { name: "Separate again" }));
    expect(addPaths).toHaveBeenCalledWith(["https://EXAMPLE.com/watch?v=abc"], true, null);
    await waitFor(() => expect(screen.getAllByTestId("job-row")).toHaveLength(2));
  });

  it("opens a song already in the library from the notice", async () => {
    const { backend, user } = renderApp({ queue: [armyOfMe] });
    const openSong = vi.spyOn(backend, "openSong");
    act(() => backend.dropFiles(["/music/Army of Me.flac"]));
    await user.click(within(await screen.findByRole("alert")).getByRole("button", { name: "Open in player" }));
    expect(await screen.findByRole("region", { name: "Player" })).toBeInTheDocument();
    await waitFor(() => expect(openSong).toHaveBeenCalledWith(5, expect.any(Function)));
  });

  it("names the files it skipped in a dropped folder", async () => {
    const { backend } = renderApp();
    vi.spyOn(backend, "addPaths").mockResolvedValueOnce({
      added: [],
      rejected: [],
      playlists: [],
      duplicates: [],
      skipped: ["cover.jpg", "notes.txt"],
      skippedMore: 3,
    });
    act(() => backend.dropFiles(["/music/Post"]));
    const notice = await screen.findByRole("alert");
    expect(notice).toHaveTextContent("Skipped 5 files that are not audio");
    expect(notice).toHaveTextContent("cover.jpg, notes.txt and 3 more");
    // Each name isolated (a right-to-left name keeps the commas in place).
    expect(within(notice).getByText("notes.txt").tagName).toBe("BDI");
  });

  it("offers only the actions that fit each state", async () => {
    renderApp({
      queue: [
        job(1, "Running", { state: "separating", segment: 1, total: 4 }),
        job(2, "First queued", { state: "queued" }),
        job(3, "Second queued", { state: "queued" }),
        job(4, "Broken", { state: "failed", code: "bad_input", message: "Not audio." }),
        job(5, "Stopped", { state: "cancelled" }),
      ],
    });
    await screen.findByText("Running");

    // A first part is separated: it can be heard while the rest separates.
    expect(buttonNames("Running")).toEqual(["Listen now", "Cancel"]);
    expect(buttonNames("First queued")).toEqual(["Move up", "Move down", "Remove"]);
    expect(within(row("First queued")).getByRole("button", { name: "Move up" })).toBeDisabled();
    expect(within(row("Second queued")).getByRole("button", { name: "Move down" })).toBeDisabled();
    expect(buttonNames("Broken")).toEqual(["Retry", "Remove"]);
    expect(buttonNames("Stopped")).toEqual(["Retry", "Remove"]);
  });

  it("takes one move at a time", async () => {
    const { backend, user } = renderApp({
      queue: [job(1, "Alpha", { state: "queued" }), job(2, "Beta", { state: "queued" }), job(3, "Gamma", { state: "queued" })],
    });
    await screen.findByText("Alpha");
    const real = backend.reorderQueue.bind(backend);
    let answer = () => {};
    const reorder = vi
      .spyOn(backend, "reorderQueue")
      .mockImplementationOnce((ids) => new Promise<void>((go) => (answer = go)).then(() => real(ids)));
    await user.click(within(row("Gamma")).getByRole("button", { name: "Move up" }));
    // Until the first move's list is back, no other move can undo it (the
    // buttons wait, keeping the focus: not disabled).
    const alphaDown = within(row("Alpha")).getByRole("button", { name: "Move down" });
    expect(alphaDown).toHaveAttribute("aria-disabled", "true");
    await user.click(alphaDown);
    expect(reorder).toHaveBeenCalledTimes(1);
    await act(async () => answer());
    await waitFor(() =>
      expect(within(row("Alpha")).getByRole("button", { name: "Move down" })).not.toHaveAttribute("aria-disabled"),
    );
  });

  it("keeps the keyboard focus on Move up through moves, then on Move down at the top", async () => {
    const { user } = renderApp({
      queue: [job(1, "Alpha", { state: "queued" }), job(2, "Beta", { state: "queued" }), job(3, "Gamma", { state: "queued" })],
    });
    await screen.findByText("Alpha");
    within(row("Gamma")).getByRole("button", { name: "Move up" }).focus();
    await user.keyboard("{Enter}");
    await waitFor(() => expect(rowTitles()).toEqual(["Alpha", "Gamma", "Beta"]));
    await waitFor(() => expect(within(row("Gamma")).getByRole("button", { name: "Move up" })).toHaveFocus());
    await user.keyboard("{Enter}");
    await waitFor(() => expect(rowTitles()).toEqual(["Gamma", "Alpha", "Beta"]));
    // At the top, Move up is disabled: the focus goes to Move down.
    await waitFor(() => expect(within(row("Gamma")).getByRole("button", { name: "Move down" })).toHaveFocus());
  });

  it("hands the keyboard focus on after Cancel, Retry and Remove take their buttons away", async () => {
    const { user } = renderApp({
      queue: [
        job(1, "Alpha", { state: "separating", segment: 2, total: 8 }),
        job(2, "Beta", { state: "queued" }),
        job(3, "Gamma", { state: "queued" }),
      ],
    });
    await screen.findByText("Alpha");
    within(row("Alpha")).getByRole("button", { name: "Cancel" }).focus();
    await user.keyboard("{Enter}");
    await waitFor(() => expect(row("Alpha")).toHaveAttribute("data-state", "cancelled"));
    await waitFor(() => expect(within(row("Alpha")).getByRole("button", { name: "Retry" })).toHaveFocus());
    await user.keyboard("{Enter}");
    await waitFor(() => expect(row("Alpha")).toHaveAttribute("data-state", "queued"));
    await waitFor(() => expect(document.activeElement?.closest('[data-job-id="1"]')).not.toBeNull());
    // Remove takes the row: the one now in its place gets the focus.
    within(row("Beta")).getByRole("button", { name: "Remove" }).focus();
    await user.keyboard("{Enter}");
    await waitFor(() => expect(screen.queryByText("Beta")).not.toBeInTheDocument());
    await waitFor(() => expect(document.activeElement?.closest('[data-job-id="3"]')).not.toBeNull());
  });

  it("hands the focus on when a cancelled job stops later, as the real worker's do", async () => {
    const { backend, user } = renderApp({
      queue: [job(1, "Alpha", { state: "separating", segment: 2, total: 8 }), job(2, "Beta", { state: "queued" })],
    });
    await screen.findByText("Alpha");
    // The worker stops at its next check: the answer says still running.
    vi.spyOn(backend, "cancelJob").mockImplementationOnce(async (id) => (await backend.listQueue()).find((j) => j.id === id)!);
    within(row("Alpha")).getByRole("button", { name: "Cancel" }).focus();
    await user.keyboard("{Enter}");
    await screen.findByRole("button", { name: "Cancelling…" });
    act(() => void backend.updateJob(1, { state: { state: "cancelled" } }));
    await waitFor(() => expect(within(row("Alpha")).getByRole("button", { name: "Retry" })).toHaveFocus());
  });

  it("moves a song up even when the one above starts meanwhile", async () => {
    const { backend, user } = renderApp({
      queue: [job(1, "Alpha", { state: "queued" }), job(2, "Beta", { state: "queued" }), job(3, "Gamma", { state: "queued" })],
    });
    await screen.findByText("Alpha");
    // The worker takes Alpha between the click and the reorder.
    const real = backend.reorderQueue.bind(backend);
    vi.spyOn(backend, "reorderQueue").mockImplementationOnce(async (ids) => {
      await backend.updateJob(1, { state: { state: "separating", segment: 1, total: 4 } });
      return real(ids);
    });
    await user.click(within(row("Gamma")).getByRole("button", { name: "Move up" }));
    await waitFor(() => expect(row("Alpha")).toHaveAttribute("data-state", "separating"));
    const queued = () =>
      screen
        .getAllByTestId("job-row")
        .filter((r) => r.dataset.state === "queued")
        .map((r) => r.querySelector(".job__title")?.textContent);
    await waitFor(() => expect(queued()).toEqual(["Gamma", "Beta"]));
    expect(screen.queryByRole("alert")).not.toBeInTheDocument();
  });

  it("cancels, retries, removes and reorders through the backend", async () => {
    const { backend, user } = renderApp({
      queue: [
        job(1, "Alpha", { state: "queued" }),
        job(2, "Beta", { state: "queued" }),
        job(3, "Gamma", { state: "queued" }),
      ],
    });
    const reorder = vi.spyOn(backend, "reorderQueue");
    const cancel = vi.spyOn(backend, "cancelJob");
    const retry = vi.spyOn(backend, "retryJob");
    const remove = vi.spyOn(backend, "removeJob");
    const titles = () => screen.getAllByTestId("job-row").map((r) => r.querySelector(".job__title")?.textContent);
    await screen.findByText("Alpha");

    await user.click(within(row("Gamma")).getByRole("button", { name: "Move up" }));
    expect(reorder).toHaveBeenLastCalledWith([1, 3, 2]);
    await waitFor(() => expect(titles()).toEqual(["Alpha", "Gamma", "Beta"]));

    await user.click(within(row("Alpha")).getByRole("button", { name: "Move down" }));
    expect(reorder).toHaveBeenLastCalledWith([3, 1, 2]);
    await waitFor(() => expect(titles()).toEqual(["Gamma", "Alpha", "Beta"]));

    // A running song: Cancel says "Cancelling…" at once and takes no second click.
    act(() => void backend.updateJob(2, { state: { state: "separating", segment: 1, total: 4 } }));
    let release: () => void = () => {};
    cancel.mockImplementationOnce(async (id) => {
      await new Promise<void>((r) => (release = r));
      return backend.updateJob(id, { state: { state: "cancelled" } });
    });
    await user.click(within(row("Beta")).getByRole("button", { name: "Cancel" }));
    expect(cancel).toHaveBeenCalledWith(2);
    const cancelling = within(row("Beta")).getByRole("button", { name: "Cancelling…" });
    expect(cancelling).toHaveAttribute("aria-disabled", "true");
    act(() => release());
    await waitFor(() => expect(row("Beta")).toHaveAttribute("data-state", "cancelled"));
    // Where Cancel was, Retry is now (Remove comes after it).
    expect(buttonNames("Beta")).toEqual(["Retry", "Remove"]);

    await user.click(within(row("Beta")).getByRole("button", { name: "Retry" }));
    expect(retry).toHaveBeenCalledWith(2);
    await waitFor(() => expect(row("Beta")).toHaveAttribute("data-state", "queued"));

    await user.click(within(row("Gamma")).getByRole("button", { name: "Remove" }));
    expect(remove).toHaveBeenCalledWith(3, false, false);
    await waitFor(() => expect(screen.queryByText("Gamma")).not.toBeInTheDocument());
  });

  it("asks before removing a failed or cancelled job that ran (what it separated goes with it)", async () => {
    const ran = { ...job(1, "Alpha", { state: "failed", code: "output", message: "disk full" }), startedAt: 5 };
    const { backend, user } = renderApp({ queue: [ran, job(2, "Beta", { state: "cancelled" })] });
    await screen.findByText("Alpha");
    const remove = vi.spyOn(backend, "removeJob");
    await user.click(within(row("Alpha")).getByRole("button", { name: "Remove" }));
    const dialog = await screen.findByRole("dialog");
    expect(dialog).toHaveTextContent("What it separated before it failed is deleted with it");
    await user.click(within(dialog).getByRole("button", { name: "Keep it" }));
    expect(remove).not.toHaveBeenCalled();
    await user.click(within(row("Alpha")).getByRole("button", { name: "Remove" }));
    await user.click(within(await screen.findByRole("dialog")).getByRole("button", { name: "Remove" }));
    expect(remove).toHaveBeenCalledWith(1, false, false);
    // One that never started has nothing to lose: removed at once.
    await user.click(within(row("Beta")).getByRole("button", { name: "Remove" }));
    expect(remove).toHaveBeenCalledWith(2, false, false);
    expect(screen.queryByRole("dialog")).not.toBeInTheDocument();
  });

  it("keeps saying Cancelling… until a running song has stopped, as the real worker answers", async () => {
    const { backend, user } = renderApp({ queue: [job(1, "Alpha", { state: "separating", segment: 1, total: 4 })] });
    await screen.findByText("Alpha");
    // The worker sets the job's flag and answers at once, the job still
    // running; it stops at its next check.
    vi.spyOn(backend, "cancelJob").mockImplementationOnce(async (id) =>
      backend.updateJob(id, { state: { state: "separating", segment: 2, total: 4 } }),
    );
    await user.click(within(row("Alpha")).getByRole("button", { name: "Cancel" }));
    await new Promise((r) => setTimeout(r, 50));
    expect(within(row("Alpha")).getByRole("button", { name: "Cancelling…" })).toHaveAttribute("aria-disabled", "true");
    act(() => void backend.updateJob(1, { state: { state: "cancelled" } }));
    await waitFor(() => expect(buttonNames("Alpha")).toEqual(["Retry", "Remove"]));
    // A retry's run is not the cancelled one.
    await user.click(within(row("Alpha")).getByRole("button", { name: "Retry" }));
    act(() => void backend.updateJob(1, { state: { state: "separating", segment: 1, total: 4 }, startedAt: 99 }));
    await waitFor(() => expect(within(row("Alpha")).getByRole("button", { name: "Cancel" })).toBeEnabled());
  });

  it("shows why an action was refused", async () => {
    const { backend, user } = renderApp({ queue: [job(1, "Alpha", { state: "queued" })] });
    await screen.findByText("Alpha");
    vi.spyOn(backend, "removeJob").mockRejectedValueOnce({ code: "invalid_options", message: "“Alpha” is running." });
    await user.click(within(row("Alpha")).getByRole("button", { name: "Remove" }));
    expect(await screen.findByRole("alert")).toHaveTextContent("“Alpha” is running.");
  });

  // A reload answers with what the database held when it was read: a job
  // that failed while it was on its way must not show as running again.
  it("keeps a job's failure that came while a reload was on its way", async () => {
    const running: JobState = { state: "separating", segment: 2, total: 11 };
    const { backend } = renderApp({ queue: [job(1, "Falcon 69", running)] });
    await screen.findByText("Separating");
    let answer: (jobs: Job[]) => void = () => {};
    const before = await backend.listQueue();
    vi.spyOn(backend, "listQueue").mockImplementationOnce(() => new Promise((resolve) => (answer = resolve)));
    // Something else changed: the queue reloads, and its read is slow.
    act(() => backend.emit({ kind: "queueChanged" }));
    const failed: JobState = { state: "failed", code: "bad_input", message: "The file is damaged." };
    act(() => void backend.updateJob(1, { state: failed }));
    expect(row("Falcon 69")).toHaveAttribute("data-state", "failed");
    await act(async () => answer(before));
    expect(row("Falcon 69")).toHaveAttribute("data-state", "failed");
    expect(within(row("Falcon 69")).getByText("Failed: The file is damaged.")).toBeInTheDocument();
  });

  it("opens one file dialog for a double click, and keeps the notices when it is closed without a choice", async () => {
    const { backend, user } = renderApp();
    let close: (result: AddResult) => void = () => {};
    const pickFiles = vi
      .spyOn(backend, "pickFiles")
      .mockImplementation(() => new Promise((resolve) => (close = resolve)));
    act(() => backend.dropFiles(["/music/notes.txt"]));
    expect(await screen.findByText(/notes\.txt/)).toBeInTheDocument();
    await user.dblClick(screen.getByRole("button", { name: "Add files…" }));
    expect(pickFiles).toHaveBeenCalledTimes(1);
    expect(screen.getByRole("button", { name: "Add files…" })).toBeDisabled();
    await act(async () =>
      close({ added: [], rejected: [], duplicates: [], skipped: [], skippedMore: 0, playlists: [] }),
    );
    expect(screen.getByRole("button", { name: "Add files…" })).toBeEnabled();
    expect(screen.getByText(/notes\.txt/)).toBeInTheDocument();
  });

  it("keeps what an add refused when another add answers after it", async () => {
    const { backend, user } = renderApp();
    let answer: (result: AddResult) => void = () => {};
    vi.spyOn(backend, "addPaths").mockImplementationOnce(() => new Promise((resolve) => (answer = resolve)));
    const field = screen.getByRole("textbox", { name: "Link" });
    await user.type(field, "https://example.com/gone{Enter}");
    // A drop while the link is checked: its refusal shows at once.
    act(() => backend.dropFiles(["/music/notes.txt"]));
    expect(await screen.findByText(/notes\.txt/)).toBeInTheDocument();
    // The link's answer comes after: both refusals stay.
    await act(async () =>
      answer({
        added: [],
        rejected: [{ path: "https://example.com/gone", reason: "This video is unavailable." }],
        duplicates: [],
        skipped: [],
        skippedMore: 0,
        playlists: [],
      }),
    );
    const notice = await screen.findByRole("alert");
    expect(notice).toHaveTextContent("notes.txt");
    expect(notice).toHaveTextContent("This video is unavailable.");
  });

  it("keeps a link pasted while the one before was being added", async () => {
    const { backend, user } = renderApp();
    let added: (result: AddResult) => void = () => {};
    vi.spyOn(backend, "addPaths").mockImplementationOnce(() => new Promise((resolve) => (added = resolve)));
    const field = screen.getByRole("textbox", { name: "Link" });
    await user.type(field, "https://example.com/a{Enter}");
    await user.clear(field);
    await user.type(field, "https://example.com/b");
    await act(async () =>
      added({
        added: [mockJob({ id: 9, title: "A" })],
        rejected: [],
        duplicates: [],
        skipped: [],
        skippedMore: 0,
        playlists: [],
      }),
    );
    expect(field).toHaveValue("https://example.com/b");
  });
});

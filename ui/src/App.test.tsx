import { act, render, screen, within } from "@testing-library/react";
import { describe, expect, it, vi } from "vitest";
import { App } from "./App";
import { BackendError, BackendProvider } from "./backend";
import { createMockBackend, mockSong } from "./mockBackend";
import { renderApp } from "./test/renderApp";

describe("App", () => {
  it("has three tabs that switch with the mouse and the arrow keys", async () => {
    const { user } = renderApp();
    const tabs = screen.getAllByRole("tab");
    expect(tabs.map((tab) => tab.textContent)).toEqual(["Queue", "Library", "Settings"]);
    expect(screen.getByRole("tab", { name: "Queue" })).toHaveAttribute("aria-selected", "true");
    expect(screen.getByRole("tabpanel", { name: "Queue" })).toBeVisible();

    await user.click(screen.getByRole("tab", { name: "Library" }));
    expect(screen.getByRole("tabpanel", { name: "Library" })).toBeVisible();
    expect(screen.queryByRole("tabpanel", { name: "Queue" })).not.toBeInTheDocument();

    await user.keyboard("{ArrowRight}");
    expect(screen.getByRole("tab", { name: "Settings" })).toHaveFocus();
    expect(screen.getByRole("tab", { name: "Settings" })).toHaveAttribute("aria-selected", "true");
    await user.keyboard("{Home}");
    expect(screen.getByRole("tab", { name: "Queue" })).toHaveAttribute("aria-selected", "true");
  });

  it("opens every tab at its top", async () => {
    const { user } = renderApp();
    const scroll = vi.spyOn(window, "scrollTo");
    await user.click(screen.getByRole("tab", { name: "Settings" }));
    expect(scroll).toHaveBeenLastCalledWith({ top: 0 });
    scroll.mockClear();
    await user.click(screen.getByRole("tab", { name: "Queue" }));
    expect(scroll).toHaveBeenCalledWith({ top: 0 });
  });

  it("shows what files opened with Stemroom from a file manager did", async () => {
    const song = mockSong({ id: 7, title: "Falcon 69" });
    const { user, backend } = renderApp({ library: [song] });
    await user.click(screen.getByRole("tab", { name: "Library" }));
    act(() =>
      backend.emit({
        kind: "opened",
        result: {
          added: [],
          rejected: [{ path: "/home/you/notes.txt", reason: "not an audio file" }],
          duplicates: [{ path: "/home/you/Falcon 69.wav", existing: song }],
          skipped: [],
          skippedMore: 0,
          playlists: [],
        },
      }),
    );
    expect(screen.getByRole("tab", { name: "Queue" })).toHaveAttribute("aria-selected", "true");
    expect(await screen.findByTestId("duplicate")).toHaveTextContent("Falcon 69.wav is in the library as “Falcon 69”.");
    expect(screen.getByText("1 file was not added")).toBeInTheDocument();
    expect(screen.getByText(/not an audio file/)).toBeInTheDocument();
  });

  it("says when the job database was damaged and rebuilt, until dismissed", async () => {
    const { user } = renderApp({
      library: [mockSong({ id: 3, title: "Falcon 69" })],
      databaseRecovery: {
        setAside: "/home/you/.local/share/stemroom/stemroom.sqlite.damaged-1796571717873",
        problem: "database disk image is malformed",
        jobsRead: 1,
        songsFound: 12,
      },
    });
    const notice = await screen.findByText("Stemroom's job list was damaged and has been rebuilt");
    const alert = notice.closest("[role=alert]") as HTMLElement;
    expect(alert).toHaveTextContent(
      "1 job was read back from it, and 12 songs were found again in the library's folders. Jobs that could not " +
        "be read back are missing from the queue: add their songs again. The damaged file is kept as " +
        "/home/you/.local/share/stemroom/stemroom.sqlite.damaged-1796571717873 (database disk image is malformed).",
    );
    await user.click(within(alert).getByRole("button", { name: "Dismiss" }));
    expect(screen.queryByText("Stemroom's job list was damaged and has been rebuilt")).not.toBeInTheDocument();
  });

  it("says nothing of the job database when it was whole", async () => {
    renderApp();
    expect(await screen.findByRole("tab", { name: "Queue" })).toBeInTheDocument();
    await act(async () => {
      await new Promise((resolve) => setTimeout(resolve, 50));
    });
    expect(screen.queryByText(/job list was damaged/)).not.toBeInTheDocument();
  });

  it("says when dropped files cannot be heard of", async () => {
    const backend = createMockBackend();
    backend.onFileDrop = () => Promise.reject(new BackendError("internal", "no drop events"));
    render(
      <BackendProvider backend={backend}>
        <App />
      </BackendProvider>,
    );
    const alert = await screen.findByRole("alert");
    expect(alert).toHaveTextContent("Files dropped on the window cannot be added");
    expect(alert).toHaveTextContent("no drop events");
    expect(alert).toHaveTextContent("Add files…");
  });

  it("covers the window while files are dragged over it", async () => {
    const { backend } = renderApp();
    await screen.findByText("No songs in the queue");
    act(() => backend.dragHover(true));
    expect(screen.getByText("Drop songs to separate them")).toBeInTheDocument();
    act(() => backend.dragHover(false));
    expect(screen.queryByText("Drop songs to separate them")).not.toBeInTheDocument();
  });

  it("adds dropped files and lists the ones it refused", async () => {
    const { backend, user } = renderApp();
    const addPaths = vi.spyOn(backend, "addPaths");
    await user.click(screen.getByRole("tab", { name: "Settings" }));

    act(() => backend.dragHover(true));
    act(() => backend.dropFiles(["/music/Song.wav", "/music/cover.jpg", "/music/readme"]));

    expect(addPaths).toHaveBeenCalledWith(["/music/Song.wav", "/music/cover.jpg", "/music/readme"], false, null);
    expect(screen.queryByText("Drop songs to separate them")).not.toBeInTheDocument();
    const alert = await screen.findByRole("alert");
    expect(alert).toHaveTextContent("2 files were not added");
    expect(within(alert).getAllByRole("listitem").map((li) => li.textContent)).toEqual([
      "cover.jpg: Not an audio file Stemroom can read.",
      "readme: Not an audio file Stemroom can read.",
    ]);
    expect(within(alert).getByText("cover.jpg").tagName).toBe("BDI");
    // Dropping shows the queue, where the added song now waits.
    expect(screen.getByRole("tab", { name: "Queue" })).toHaveAttribute("aria-selected", "true");
    expect(await screen.findByTestId("job-row")).toHaveTextContent("Song");
  });

  it("leaves a waiting dialog where it is when songs are dropped, adding them all the same", async () => {
    const { backend, user } = renderApp({ library: [mockSong({ id: 3, title: "Falcon 69" })] });
    const addPaths = vi.spyOn(backend, "addPaths");
    await user.click(screen.getByRole("tab", { name: "Library" }));
    await user.click(await screen.findByRole("button", { name: /Falcon 69/ }));
    await user.click(screen.getByRole("button", { name: "Remove from library" }));
    const dialog = await screen.findByRole("dialog");
    act(() => backend.dropFiles(["/music/Song.wav"]));
    expect(addPaths).toHaveBeenCalledWith(["/music/Song.wav"], false, null);
    // Not hidden away, still modal, with the Queue tab shown over it.
    expect(screen.getByRole("tab", { name: "Library" })).toHaveAttribute("aria-selected", "true");
    expect(dialog).toBeVisible();
  });

  it("asks for a dropped link to be pasted, adds the files dropped with it, and ignores its own images", async () => {
    const { backend } = renderApp();
    const addPaths = vi.spyOn(backend, "addPaths");
    await screen.findByText("No songs in the queue");
    act(() => backend.dropFiles(["thumb://localhost/4"]));
    expect(addPaths).not.toHaveBeenCalled();
    expect(screen.queryByRole("alert")).not.toBeInTheDocument();
    act(() => backend.dropFiles(["https://www.youtube.com/watch?v=a b", "/music/Song.wav"]));
    expect(addPaths).toHaveBeenCalledWith(["/music/Song.wav"], false, null);
    const alert = await screen.findByRole("alert");
    expect(alert).toHaveTextContent("paste it in the Link field");
    expect(await screen.findByTestId("job-row")).toHaveTextContent("Song");
  });
});

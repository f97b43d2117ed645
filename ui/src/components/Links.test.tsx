import { act, screen, within } from "@testing-library/react";
import { describe, expect, it, vi } from "vitest";
import { mockJob } from "../mockBackend";
import { renderApp } from "../test/renderApp";

describe("Links", () => {
  it("queues a link under its title and shows the download stage", async () => {
    const { backend, user } = renderApp();
    await user.type(screen.getByRole("textbox", { name: "Link" }), "https://example.com/Night%20Drive.mp3");
    await user.click(screen.getByRole("button", { name: "Add" }));
    const row = await screen.findByTestId("job-row");
    const [job] = await backend.listQueue();
    act(() => {
      backend.updateJob(job!.id, { state: { state: "downloading", percent: 42.7 } });
      backend.emit({
        kind: "progress",
        progress: { id: job!.id, state: { state: "downloading", percent: 42.7 }, percent: 42.7, etaSeconds: 5, bytesPerSecond: 1_500_000, notice: null },
      });
    });
    expect(within(row).getByText("Downloading 42 %")).toBeInTheDocument();
    expect(within(row).getByText("2 MB/s")).toBeInTheDocument();
    expect(within(row).getByRole("progressbar")).toHaveAttribute("aria-valuenow", "43");
  });

  it("lets the user choose playlist entries, each becoming a job", async () => {
    const { backend, user } = renderApp();
    const addLinks = vi.spyOn(backend, "addLinks");
    await user.type(screen.getByRole("textbox", { name: "Link" }), "https://example.com/playlist?id=1");
    await user.click(screen.getByRole("button", { name: "Add" }));
    const dialog = await screen.findByRole("dialog");
    expect(within(dialog).getByText(/3 entries/)).toBeInTheDocument();
    // Its link went to the dialog: the field is free for the next one.
    expect(screen.getByRole("textbox", { name: "Link" })).toHaveValue("");
    await user.click(within(dialog).getByRole("checkbox", { name: /Song Two/ }));
    await user.click(within(dialog).getByRole("button", { name: "Add 2 songs" }));
    expect(addLinks).toHaveBeenCalledWith(
      [expect.objectContaining({ title: "Song One" }), expect.objectContaining({ title: "Song Three" })],
      null,
    );
    expect(screen.queryByRole("dialog")).not.toBeInTheDocument();
    expect((await screen.findAllByTestId("job-row")).map((r) => r.querySelector(".job__title")?.textContent)).toEqual([
      "Song One",
      "Song Three",
    ]);
  });

  it("shows a link's uploader and thumbnail in the queue", async () => {
    renderApp({
      queue: [
        mockJob({
          id: 7,
          title: "Night Drive",
          source: { kind: "url", url: "https://example.com/v/7" },
          uploader: "The Easton Ellises",
          thumbnail: "https://example.com/t/7.jpg",
        }),
      ],
    });
    const row = await screen.findByTestId("job-row");
    expect(within(row).getByText("The Easton Ellises")).toBeInTheDocument();
    // The kept copy, by job id: never the web address (the CSP allows no web images).
    expect(row.querySelector("img")).toHaveAttribute("src", "thumb://localhost/7");
  });

  it("shows the yt-dlp version in Settings", async () => {
    const { user } = renderApp();
    await user.click(screen.getByRole("tab", { name: "Settings" }));
    expect(await screen.findByTestId("ytdlp-status")).toHaveTextContent("yt-dlp 2026.10.26 at");
    expect(screen.getByTestId("ytdlp-youtube")).toHaveTextContent("YouTube support: deno 2.9.8, yt-dlp-ejs 0.8.0");
  });

  it("says which formats need ffmpeg and chooses its program in the native dialog", async () => {
    const { backend, user } = renderApp();
    await user.click(screen.getByRole("tab", { name: "Settings" }));
    expect(await screen.findByTestId("ffmpeg-status")).toHaveTextContent("Installing ffmpeg adds AC-3, WMA, HE-AAC");
    // No text field: the page cannot name a program to run, only open the dialog.
    expect(screen.queryByRole("textbox", { name: "ffmpeg program" })).toBeNull();
    const group = screen.getByRole("group", { name: "ffmpeg program" });
    await user.click(within(group).getByRole("button", { name: "Choose…" }));
    expect(await within(group).findByTestId("ffmpeg-path")).toHaveTextContent("/opt/ffmpeg/bin/ffmpeg");
    expect(await backend.getSettings()).toMatchObject({ ffmpegPath: "/opt/ffmpeg/bin/ffmpeg" });
    await user.click(within(group).getByRole("button", { name: "Find automatically" }));
    expect(await within(group).findByTestId("ffmpeg-path")).toHaveTextContent("Found automatically");
    expect(await backend.getSettings()).toMatchObject({ ffmpegPath: null });
  });

  it("never saves a folder or program the page names", async () => {
    const { backend } = renderApp();
    const before = await backend.getSettings();
    await backend.saveSettings({ ...before, libraryDir: "/etc", ytdlpPath: "/bin/sh", ffmpegPath: "/bin/sh", shifts: 2 });
    expect(await backend.getSettings()).toMatchObject({
      libraryDir: before.libraryDir,
      ytdlpPath: before.ytdlpPath,
      ffmpegPath: before.ffmpegPath,
      shifts: 2,
    });
  });
});

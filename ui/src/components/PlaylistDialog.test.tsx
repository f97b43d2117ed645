import { fireEvent, render, screen, within } from "@testing-library/react";
import userEvent from "@testing-library/user-event";
import { describe, expect, it, vi } from "vitest";
import type { LinkInfo } from "../bindings";
import { PlaylistDialog } from "./PlaylistDialog";

const playlist: LinkInfo = {
  url: "https://example.com/playlist?list=1",
  title: "שירים Mix",
  uploader: "Someone",
  durationSeconds: null,
  thumbnail: null,
  extractor: "Generic",
  isPlaylist: true,
  truncated: false,
  entries: [
    { url: "https://example.com/v/a", title: "Song A", durationSeconds: 180 },
    { url: "https://example.com/v/b", title: "Song B", durationSeconds: 200 },
    { url: "https://example.com/v/a", title: "Song A", durationSeconds: 180 },
  ],
};

function open() {
  const onAdd = vi.fn();
  const onClose = vi.fn();
  render(<PlaylistDialog playlist={playlist} onAdd={onAdd} onClose={onClose} />);
  return { onAdd, onClose, user: userEvent.setup(), dialog: screen.getByRole("dialog") };
}

/** The backdrop with a client area of 800 × 600 (its scroll bar past it). */
function backdrop(dialog: HTMLElement) {
  const el = dialog.parentElement!;
  Object.defineProperty(el, "clientWidth", { value: 800 });
  Object.defineProperty(el, "clientHeight", { value: 600 });
  return el;
}

describe("Playlist dialog", () => {
  it("gives a video listed twice a box per row, and queues it once", async () => {
    const { onAdd, user, dialog } = open();
    const boxes = within(dialog).getAllByRole("checkbox", { name: /Song A/ });
    expect(boxes).toHaveLength(2);
    // Unticking one row leaves the other.
    await user.click(boxes[0]!);
    expect(boxes[0]).not.toBeChecked();
    expect(boxes[1]).toBeChecked();
    await user.click(boxes[0]!);
    // Both rows ticked: the link goes once.
    await user.click(within(dialog).getByRole("button", { name: "Add 2 songs" }));
    expect(onAdd).toHaveBeenCalledWith([playlist.entries[0], playlist.entries[1]]);
  });

  it("isolates remote titles in <bdi>", () => {
    const { dialog } = open();
    expect(within(dialog).getByRole("heading")).toHaveTextContent("“שירים Mix” is a playlist");
    expect(within(dialog).getByText("שירים Mix").tagName).toBe("BDI");
    expect(within(dialog).getByText("Someone").tagName).toBe("BDI");
    expect(within(dialog).getByText("Song B").tagName).toBe("BDI");
  });

  it("closes on a click outside, not on the backdrop's scroll bar or a press that began inside", () => {
    const { onClose, dialog } = open();
    const el = backdrop(dialog);
    // The scroll bar (past the client area).
    fireEvent.mouseDown(el, { button: 0, clientX: 805, clientY: 100 });
    fireEvent.mouseUp(el, { button: 0, clientX: 805, clientY: 300 });
    // Pressed in the dialog (selecting text), let go outside.
    fireEvent.mouseDown(within(dialog).getByText("Song B"), { button: 0 });
    fireEvent.mouseUp(el, { button: 0, clientX: 10, clientY: 10 });
    // Pressed outside, let go on the scroll bar.
    fireEvent.mouseDown(el, { button: 0, clientX: 10, clientY: 10 });
    fireEvent.mouseUp(el, { button: 0, clientX: 805, clientY: 10 });
    expect(onClose).not.toHaveBeenCalled();
    fireEvent.mouseDown(el, { button: 0, clientX: 10, clientY: 10 });
    fireEvent.mouseUp(el, { button: 0, clientX: 12, clientY: 10 });
    expect(onClose).toHaveBeenCalledTimes(1);
  });
});

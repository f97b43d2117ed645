import { act, render, screen } from "@testing-library/react";
import { describe, expect, it } from "vitest";
import type { PlayerStatus } from "../../bindings";
import { createStatusStore } from "./statusStore";
import { Clock } from "./Transport";

function status(position: number, sampleRate: number): PlayerStatus {
  return {
    playing: true,
    position,
    length: 0,
    sampleRate,
    ended: false,
    error: null,
    levels: [],
    master: { peak: 0, rms: 0 },
    countingIn: false,
    separated: null,
    waiting: false,
  };
}

describe("Clock", () => {
  it("reads the playhead at its own status's rate while finished files at another rate take over", () => {
    const store = createStatusStore();
    // The page's view is still the 44.1 kHz stream's, 200 s long.
    render(<Clock store={store} rate={44_100} frames={200 * 44_100} />);
    const clock = screen.getByTestId("position");
    act(() => store.set(status(22 * 44_100 + 22_050, 44_100)));
    expect(clock).toHaveTextContent("0:22.5 / 3:20");
    // The 48 kHz files' player: its frames, at its rate, before the view changes.
    act(() => store.set(status(22 * 48_000 + 24_000, 48_000)));
    expect(clock).toHaveAttribute("data-frame", String(22 * 48_000 + 24_000));
    expect(clock).toHaveAttribute("data-rate", "48000");
    expect(clock).toHaveTextContent("0:22.5 / 3:20");
  });

  it("uses the view's rate before any status", () => {
    const store = createStatusStore();
    render(<Clock store={store} rate={48_000} frames={60 * 48_000} />);
    expect(screen.getByTestId("position")).toHaveAttribute("data-rate", "48000");
    expect(screen.getByTestId("position")).toHaveTextContent("0:00.0 / 1:00");
  });
});

import { act, screen } from "@testing-library/react";
import { describe, expect, it } from "vitest";
import { mockSong } from "../mockBackend";
import { renderApp } from "../test/renderApp";
import { toDb } from "./LevelMeter";

async function openPlayer() {
  const app = renderApp({ library: [mockSong({ id: 1, title: "Falcon 69", durationSeconds: 60 })] });
  await app.user.click(screen.getByRole("tab", { name: "Library" }));
  await app.user.click(await screen.findByRole("button", { name: /Falcon 69/ }));
  await app.user.click(screen.getByRole("button", { name: "Play & export" }));
  await screen.findByRole("meter", { name: "Master level" });
  return app;
}

const level = (peak: number, rms: number) => ({ peak, rms });

describe("level meters", () => {
  it("converts to dBFS with a floor", () => {
    expect(toDb(1)).toBe(0);
    expect(toDb(0.5)).toBeCloseTo(-6.02, 2);
    expect(toDb(0)).toBe(-60);
    expect(toDb(1e-9)).toBe(-60);
  });

  it("shows each stem and the master as heard, holds the peak and latches a clip", async () => {
    const { backend, user } = await openPlayer();
    const vocals = screen.getByRole("meter", { name: "Vocals level" });
    const master = screen.getByRole("meter", { name: "Master level" });
    expect(vocals).toHaveAttribute("aria-valuenow", "-60");

    act(() =>
      backend.emitPlayerStatus({
        levels: [level(0.5, 0.25), level(0.1, 0.05), level(0.2, 0.1), level(0.5, 0.25)],
        master: level(1.2, 0.6),
      }),
    );
    expect(vocals).toHaveAttribute("aria-valuenow", "-12");
    expect(vocals).toHaveAttribute("data-peak-db", "-6.0");
    expect(screen.getByRole("button", { name: "Master clipped: reset" })).toHaveAttribute("aria-pressed", "true");
    expect(screen.getByRole("button", { name: "Vocals not clipping" })).toHaveAttribute("aria-pressed", "false");
    // Beside its meter, not inside it (a meter's children are not offered as controls).
    expect(screen.getByRole("button", { name: "Master clipped: reset" }).closest('[role="meter"]')).toBeNull();

    // Quieter now: the RMS falls at once, the peak mark is held.
    act(() =>
      backend.emitPlayerStatus({
        levels: [level(0.01, 0.005), level(0.01, 0.005), level(0.01, 0.005), level(0.01, 0.005)],
        master: level(0.05, 0.02),
      }),
    );
    expect(vocals).toHaveAttribute("aria-valuenow", "-46");
    expect(vocals).toHaveAttribute("data-peak-db", "-6.0");
    expect(master).toHaveAttribute("aria-valuetext", expect.stringContaining("peak 2 dB"));

    // The clip light stays on until clicked.
    await user.click(screen.getByRole("button", { name: "Master clipped: reset" }));
    expect(screen.getByRole("button", { name: "Master not clipping" })).toHaveAttribute("aria-pressed", "false");
  });
});

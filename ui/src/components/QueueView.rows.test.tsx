import { act, screen } from "@testing-library/react";
import { describe, expect, it, vi } from "vitest";
import type { JobState } from "../bindings";
import * as format from "../format";
import { mockJob } from "../mockBackend";
import { renderApp } from "../test/renderApp";

// Counts the rows' renders: each row formats its song's length.
vi.mock("../format", async (original) => {
  const actual = await original<typeof format>();
  return { ...actual, formatDuration: vi.fn(actual.formatDuration) };
});

describe("Queue rows", () => {
  it("a running job's progress renders its own row only", async () => {
    const queued = Array.from({ length: 300 }, (_, i) =>
      mockJob({ id: i + 2, title: `Song ${i + 2}`, state: { state: "queued" }, durationSeconds: 200 }),
    );
    const running = mockJob({ id: 1, title: "Falcon 69", state: { state: "decoding" }, durationSeconds: 187 });
    const { backend } = renderApp({ queue: [running, ...queued] });
    expect(await screen.findByText("Song 301")).toBeInTheDocument();
    const renders = vi.mocked(format.formatDuration);
    renders.mockClear();
    const state: JobState = { state: "separating", segment: 3, total: 11 };
    act(() =>
      backend.emit({
        kind: "progress",
        progress: { id: 1, state, percent: 29.5, etaSeconds: 80, bytesPerSecond: null, notice: null },
      }),
    );
    expect(screen.getByRole("progressbar", { name: "Progress of Falcon 69" })).toHaveAttribute("aria-valuenow", "30");
    expect(renders.mock.calls.length).toBeGreaterThan(0);
    expect(renders.mock.calls.length).toBeLessThanOrEqual(2);
  });
});

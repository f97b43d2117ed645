import { act, render, screen, waitFor, within } from "@testing-library/react";
import { describe, expect, it, vi } from "vitest";
import { App } from "../App";
import { BackendProvider } from "../backend";
import { BackendError } from "../backend";
import { createMockBackend, mockJob } from "../mockBackend";
import { LISTEN_RETRY_MS } from "./useQueue";

describe("useQueue", () => {
  it("reads the queue only once it listens, so a change between the two is not lost", async () => {
    const backend = createMockBackend({
      queue: [mockJob({ id: 1, title: "Falcon 69", state: { state: "queued" } })],
    });
    // As in the app, the subscription lands a while after it is asked for,
    // and the job fails meanwhile (nobody listens yet: the event is gone).
    const subscribe = backend.subscribe.bind(backend);
    backend.subscribe = (handler) =>
      new Promise((resolve) =>
        setTimeout(() => {
          backend.updateJob(1, { state: { state: "failed", code: "bad_input", message: "Not audio." } });
          resolve(subscribe(handler));
        }, 30),
      );
    render(
      <BackendProvider backend={backend}>
        <App />
      </BackendProvider>,
    );
    const row = await screen.findByTestId("job-row");
    await waitFor(() => expect(row).toHaveAttribute("data-state", "failed"));
    // It stays failed: no earlier read lands over it.
    await new Promise((r) => setTimeout(r, 60));
    expect(screen.getByTestId("job-row")).toHaveAttribute("data-state", "failed");
  });

  it("says when it cannot listen for changes, and listens again after a while", async () => {
    vi.useFakeTimers({ shouldAdvanceTime: true });
    try {
      const backend = createMockBackend({
        queue: [mockJob({ id: 1, title: "Falcon 69", state: { state: "queued" } })],
      });
      const subscribe = backend.subscribe.bind(backend);
      let fails = 1;
      backend.subscribe = (handler) =>
        fails-- > 0 ? Promise.reject(new BackendError("internal", "no channel")) : subscribe(handler);
      render(
        <BackendProvider backend={backend}>
          <App />
        </BackendProvider>,
      );
      // The queue is read all the same, and the banner says it will not move.
      const row = await screen.findByTestId("job-row");
      const alert = await screen.findByRole("alert");
      expect(within(alert).getByText("The queue does not follow changes by itself")).toBeInTheDocument();
      expect(alert).toHaveTextContent("no channel");
      expect(alert).not.toHaveTextContent("could not be loaded");

      await act(async () => {
        await vi.advanceTimersByTimeAsync(LISTEN_RETRY_MS);
      });
      await waitFor(() => expect(screen.queryByRole("alert")).not.toBeInTheDocument());
      act(() => void backend.updateJob(1, { state: { state: "failed", code: "bad_input", message: "Not audio." } }));
      await waitFor(() => expect(row).toHaveAttribute("data-state", "failed"));
    } finally {
      vi.useRealTimers();
    }
  });

  it("stops trying to listen once the window is gone", async () => {
    vi.useFakeTimers({ shouldAdvanceTime: true });
    try {
      const backend = createMockBackend();
      const subscribe = vi.fn(() => Promise.reject(new BackendError("internal", "no channel")));
      backend.subscribe = subscribe;
      const view = render(
        <BackendProvider backend={backend}>
          <App />
        </BackendProvider>,
      );
      await screen.findByText(/does not follow changes/);
      view.unmount();
      await vi.advanceTimersByTimeAsync(LISTEN_RETRY_MS * 3);
      expect(subscribe).toHaveBeenCalledTimes(1);
    } finally {
      vi.useRealTimers();
    }
  });
});

import { render, screen, waitFor } from "@testing-library/react";
import { describe, expect, it } from "vitest";
import { App } from "../App";
import { BackendProvider } from "../backend";
import { createMockBackend, mockJob } from "../mockBackend";

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
});

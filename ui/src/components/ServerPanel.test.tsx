import { render, screen, waitFor } from "@testing-library/react";
import userEvent from "@testing-library/user-event";
import { App } from "../App";
import { BackendProvider } from "../backend";
import { createMockBackend } from "../mockBackend";
import { describe, expect, it, vi } from "vitest";
import { renderApp } from "../test/renderApp";

async function openSettings(options: Parameters<typeof renderApp>[0] = {}) {
  const app = renderApp(options);
  await app.user.click(screen.getByRole("tab", { name: "Settings" }));
  await screen.findByRole("heading", { name: "HTTP service" });
  return app;
}

describe("HTTP service in Settings", () => {
  it("starts on the chosen port, shows the address and token, and stops", async () => {
    const { user, backend } = await openSettings();
    const port = await screen.findByRole("spinbutton", { name: "Port" });
    expect(port).toHaveValue(8000);
    await user.clear(port);
    await user.type(port, "8123");
    await user.click(screen.getByRole("button", { name: "Start" }));
    expect(await screen.findByTestId("server-address")).toHaveTextContent("http://127.0.0.1:8123");
    expect(screen.getByTestId("server-token")).toHaveTextContent("0f".repeat(32));
    expect((await backend.serverStatus()).running).toBe(true);
    // The Start button went with the view it was in: focus is on Stop,
    // not lost to the page's start.
    await waitFor(() => expect(screen.getByRole("button", { name: "Stop" })).toHaveFocus());

    await user.click(screen.getByRole("button", { name: "Stop" }));
    expect(await screen.findByRole("button", { name: "Start" })).toBeInTheDocument();
    expect((await backend.serverStatus()).running).toBe(false);
    await waitFor(() => expect(screen.getByRole("button", { name: "Start" })).toHaveFocus());
  });

  it("starts on Enter in the port field, without saving the settings", async () => {
    const { user, backend } = await openSettings();
    const port = await screen.findByRole("spinbutton", { name: "Port" });
    const save = vi.spyOn(backend, "saveSettings");
    await user.clear(port);
    await user.type(port, "8124{Enter}");
    expect(await screen.findByTestId("server-address")).toHaveTextContent("http://127.0.0.1:8124");
    expect(save).not.toHaveBeenCalled();
  });

  it("still offers Start when the service's status cannot be read", async () => {
    const backend = createMockBackend();
    vi.spyOn(backend, "serverStatus").mockRejectedValueOnce(new Error("busy"));
    const user = userEvent.setup();
    render(
      <BackendProvider backend={backend}>
        <App />
      </BackendProvider>,
    );
    await user.click(screen.getByRole("tab", { name: "Settings" }));
    const start = await screen.findByRole("button", { name: "Start" });
    await waitFor(() => expect(start).toBeEnabled());
    await user.click(start);
    expect(await screen.findByTestId("server-address")).toHaveTextContent("http://127.0.0.1:8000");
    expect((await backend.serverStatus()).running).toBe(true);
  });

  it("says plainly when the port is taken or not a port", async () => {
    const { user } = await openSettings({ busyPorts: [8000] });
    await screen.findByRole("spinbutton", { name: "Port" });
    await user.click(screen.getByRole("button", { name: "Start" }));
    expect(await screen.findByText(/Port 8000 is in use by another program/)).toBeInTheDocument();
    const port = screen.getByRole("spinbutton", { name: "Port" });
    await user.clear(port);
    await user.type(port, "70000");
    await user.click(screen.getByRole("button", { name: "Start" }));
    expect(await screen.findByText("Choose a port from 1 to 65535.")).toBeInTheDocument();
    expect(screen.queryByTestId("server-running")).not.toBeInTheDocument();
  });
});

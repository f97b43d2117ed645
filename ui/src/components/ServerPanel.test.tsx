import { screen } from "@testing-library/react";
import { describe, expect, it } from "vitest";
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

    await user.click(screen.getByRole("button", { name: "Stop" }));
    expect(await screen.findByRole("button", { name: "Start" })).toBeInTheDocument();
    expect((await backend.serverStatus()).running).toBe(false);
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

import { screen, waitFor, within } from "@testing-library/react";
import { describe, expect, it, vi } from "vitest";
import { BackendError } from "../backend";
import { mockModel } from "../mockBackend";
import { renderApp } from "../test/renderApp";

const missing = mockModel({
  installed: false,
  verified: false,
  path: null,
  problem: "The model htdemucs.onnx is not installed.",
});

const banner = () => screen.queryByRole("region", { name: "Finish setting up Stemroom" });

describe("First-run banner", () => {
  it("is absent when everything is installed", async () => {
    renderApp();
    await screen.findByText("No songs in the queue");
    expect(banner()).not.toBeInTheDocument();
  });

  it("shows the missing model on every tab and downloads it", async () => {
    const { backend, user } = renderApp({ models: [missing] });
    const fetchModel = vi.spyOn(backend, "fetchModel");
    expect(await screen.findByRole("region", { name: "Finish setting up Stemroom" })).toBeInTheDocument();
    expect(within(banner()!).getByText("bash scripts/fetch-model.sh htdemucs")).toBeInTheDocument();
    expect(within(banner()!).getByText("The model htdemucs.onnx is not installed.")).toBeInTheDocument();

    await user.click(screen.getByRole("tab", { name: "Library" }));
    expect(banner()).toBeInTheDocument();

    await user.click(within(banner()!).getByRole("button", { name: "Download model" }));
    expect(fetchModel).toHaveBeenCalledWith("htdemucs");
    await vi.waitFor(() => expect(banner()).not.toBeInTheDocument());
  });

  it("shows the download as busy, and why it failed", async () => {
    const { backend, user } = renderApp({ models: [missing] });
    let reject!: (error: unknown) => void;
    vi.spyOn(backend, "fetchModel").mockReturnValueOnce(new Promise((_, r) => (reject = r)));
    await user.click(await screen.findByRole("button", { name: "Download model" }));

    const busy = within(banner()!).getByRole("button", { name: "Downloading…" });
    expect(busy).toBeDisabled();
    reject(new BackendError("output", "No space left on the disk."));

    const alert = await within(banner()!).findByRole("alert");
    expect(alert).toHaveTextContent("No space left on the disk.");
    expect(within(banner()!).getByRole("button", { name: "Download model" })).toBeEnabled();
  });

  it("installs a missing runtime itself (no terminal needed)", async () => {
    const { backend, user } = renderApp({ runtimeFound: false });
    const region = await screen.findByRole("region", { name: "Finish setting up Stemroom" });
    expect(region).toHaveTextContent("ONNX Runtime, which runs the separation, is missing.");
    expect(region).not.toHaveTextContent("setup.sh");
    const install = vi.spyOn(backend, "installRuntime");
    await user.click(within(region).getByRole("button", { name: "Download ONNX Runtime (24 MB)" }));
    expect(install).toHaveBeenCalledOnce();
    // Installed: the banner has nothing left to say (the model is there).
    await waitFor(() =>
      expect(screen.queryByRole("region", { name: "Finish setting up Stemroom" })).not.toBeInTheDocument(),
    );
  });
});

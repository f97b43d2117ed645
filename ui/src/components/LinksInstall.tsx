import { toBackendError, useBackend } from "../backend";
import type { InstallEvent, YtDlpStatus } from "../bindings";
import { errorText } from "../errors";
import { formatBytes } from "../format";
import { useSharedState } from "../hooks/useSharedState";
import { Alert } from "./Alert";
import { ProgressBar } from "./ProgressBar";

/** Size of the yt-dlp install: its pinned wheels (stemroom_library::link::install::ytdlp_wheels). */
export const LINKS_BYTES = 48_539_641;

type Phase =
  | { kind: "idle" }
  | { kind: "installing"; fraction: number | null; cancelError?: string }
  | { kind: "failed"; text: string; cancelled: boolean };

interface Props {
  /** Called with yt-dlp's status once installed. */
  onInstalled(status: YtDlpStatus): void;
}

/**
 * "Install yt-dlp" for links: yt-dlp with deno and YouTube's challenge
 * solvers from pinned PyPI wheels (needs python3, no pip), with progress
 * and cancel; offline, from a folder holding those wheels.
 */
export function LinksInstall({ onInstalled }: Props) {
  const backend = useBackend();
  // Shared: an install started on the welcome screen goes on showing in Settings.
  const [phase, setPhase] = useSharedState<Phase>(backend, "links-install", { kind: "idle" });

  async function install(fromFolder: boolean) {
    setPhase({ kind: "installing", fraction: fromFolder ? null : 0 });
    try {
      const onEvent = (e: InstallEvent) =>
        setPhase((p) => ({
          kind: "installing",
          fraction: e.stage === "downloading" && e.total > 0 ? e.done / e.total : null,
          cancelError: p.kind === "installing" ? p.cancelError : undefined,
        }));
      const status = fromFolder ? await backend.installLinksFromFolder(onEvent) : await backend.installLinks(onEvent);
      setPhase({ kind: "idle" });
      if (status) onInstalled(status);
    } catch (e) {
      const err = toBackendError(e);
      setPhase({ kind: "failed", text: err.message, cancelled: err.code === "cancelled" });
    }
  }

  function cancel() {
    backend.cancelLinksInstall().catch((e: unknown) => {
      const text = errorText(e);
      setPhase((p) => (p.kind === "installing" ? { ...p, cancelError: text } : p));
    });
  }

  return (
    <div className="model-install" data-testid="links-install">
      {phase.kind === "installing" ? (
        <div className="model-install__progress">
          {phase.fraction != null ? (
            <ProgressBar percent={phase.fraction * 100} label="Downloading yt-dlp" />
          ) : (
            <p className="muted">Checking and unpacking…</p>
          )}
          <button type="button" className="button" onClick={cancel}>
            Cancel
          </button>
          {phase.cancelError && <Alert title="The install could not be cancelled">{phase.cancelError}</Alert>}
        </div>
      ) : (
        <div className="button-row">
          <button type="button" className="button button--primary" onClick={() => void install(false)}>
            Install yt-dlp ({formatBytes(LINKS_BYTES)})
          </button>
          <button type="button" className="button" onClick={() => void install(true)}>
            Use wheels I downloaded…
          </button>
        </div>
      )}
      {phase.kind === "failed" && (
        <Alert title={phase.cancelled ? "yt-dlp was not installed" : "yt-dlp could not be installed"}>
          {phase.cancelled ? "Cancelled. What was downloaded is kept: installing again goes on from there." : phase.text}
        </Alert>
      )}
    </div>
  );
}

import type { ModelStatus } from "../bindings";
import type { ModelDownloads } from "../hooks/useAppInfo";
import { formatBytes } from "../format";
import { Alert } from "./Alert";
import { ProgressBar } from "./ProgressBar";

interface Props {
  model: ModelStatus;
  downloads: ModelDownloads;
}

/**
 * Why a model is missing and how to install it: a download with its size,
 * progress and cancel, a file already downloaded (for a computer without
 * internet), or the command.
 */
export function ModelInstall({ model, downloads }: Props) {
  const busy = downloads.busy.has(model.id);
  const progress = downloads.progress[model.id];
  const error = downloads.errors[model.id];
  const action = model.derived
    ? `Make it on this computer (about half a minute), or run:`
    : `Download it here (${formatBytes(model.downloadBytes)}), or run:`;
  return (
    <div className="model-install" data-testid={`model-install-${model.id}`}>
      <p>{model.problem ?? `The model ${model.id} is not installed.`}</p>
      <p>
        {action} <code className="command">{model.fetchCommand}</code>
      </p>
      {busy ? (
        <div className="model-install__progress">
          {progress != null ? (
            <ProgressBar percent={progress * 100} label={`Downloading ${model.id}`} />
          ) : (
            <p className="muted">{model.derived ? "Making the model…" : "Checking and unpacking…"}</p>
          )}
          <button type="button" className="button" onClick={() => downloads.cancel(model.id)}>
            Cancel
          </button>
        </div>
      ) : (
        <div className="button-row">
          <button type="button" className="button button--primary" onClick={() => downloads.start(model.id)}>
            {model.derived ? "Make model" : "Download model"}
          </button>
          {!model.derived && (
            <button type="button" className="button" onClick={() => downloads.startFromFile(model.id)}>
              Use a file I downloaded…
            </button>
          )}
        </div>
      )}
      {error && (
        // While it runs, an error can only be its cancel's (a start clears them).
        <Alert
          title={
            busy ? "It could not be cancelled" : model.derived ? "The model could not be made" : "The download failed"
          }
          onDismiss={() => downloads.dismiss(model.id)}
        >
          {error}
        </Alert>
      )}
    </div>
  );
}

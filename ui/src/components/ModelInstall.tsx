import type { ModelStatus } from "../bindings";
import type { ModelDownloads } from "../hooks/useAppInfo";
import { formatBytes } from "../format";
import { Alert } from "./Alert";

interface Props {
  model: ModelStatus;
  downloads: ModelDownloads;
}

/** Why a model is missing, the command that installs it and a button that does. */
export function ModelInstall({ model, downloads }: Props) {
  const busy = downloads.busy.has(model.id);
  const error = downloads.errors[model.id];
  return (
    <div className="model-install">
      <p>{model.problem ?? `The model ${model.id} is not installed.`}</p>
      <p>
        Download it here ({formatBytes(model.bytes)}), or run: <code className="command">{model.fetchCommand}</code>
      </p>
      <button
        type="button"
        className="button button--primary"
        onClick={() => downloads.start(model.id)}
        disabled={busy}
        aria-busy={busy}
      >
        {busy ? "Downloading…" : "Download model"}
      </button>
      {error && <Alert title="The download failed">{error}</Alert>}
    </div>
  );
}

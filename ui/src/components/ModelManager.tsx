import { useState } from "react";
import type { ModelStatus } from "../bindings";
import type { ModelDownloads } from "../hooks/useAppInfo";
import { formatBytes } from "../format";
import { Alert } from "./Alert";
import { ConfirmDialog } from "./ConfirmDialog";
import { ProgressBar } from "./ProgressBar";

function state(model: ModelStatus): string {
  if (!model.installed) return model.problem?.includes("corrupt") ? "damaged" : "not installed";
  return model.verified ? "installed, verified" : "installed";
}

interface Props {
  models: ModelStatus[];
  downloads: ModelDownloads;
}

/**
 * Every model file Stemroom knows: size, state, where it is, and Download /
 * Make or Remove (only files in Stemroom's own folder can be removed).
 */
export function ModelManager({ models, downloads }: Props) {
  // The model whose removal waits for a yes.
  const [confirmRemove, setConfirmRemove] = useState<ModelStatus | null>(null);
  return (
    <div className="field">
      <span className="field__label" id="model-files">
        Model files
      </span>
      <ul className="model-list" aria-labelledby="model-files">
        {models.map((model) => {
          const busy = downloads.busy.has(model.id);
          const progress = downloads.progress[model.id];
          const error = downloads.errors[model.id];
          return (
            <li key={model.id} className="model-list__row" data-testid={`model-row-${model.id}`}>
              <span className="model-list__name">{model.id}</span>
              <span className="model-list__facts muted">
                {formatBytes(model.bytes)} · {state(model)}
                {model.derived && " · made on this computer"}
                {model.path && ` · ${model.path}`}
              </span>
              {busy ? (
                progress != null ? (
                  <ProgressBar percent={progress * 100} label={`Downloading ${model.id}`} />
                ) : (
                  <span className="muted">{model.derived ? "Making…" : "Checking…"}</span>
                )
              ) : model.installed ? (
                model.removable && (
                  <button
                    type="button"
                    className="button"
                    aria-label={`Remove ${model.id}`}
                    onClick={() => setConfirmRemove(model)}
                  >
                    Remove
                  </button>
                )
              ) : (
                <button
                  type="button"
                  className="button"
                  aria-label={`${model.derived ? "Make" : "Download"} ${model.id}`}
                  onClick={() => downloads.start(model.id)}
                >
                  {model.derived ? "Make" : `Download (${formatBytes(model.downloadBytes)})`}
                </button>
              )}
              {error && (
                <Alert title={`${model.id}: it did not work`} onDismiss={() => downloads.dismiss(model.id)}>
                  {error}
                </Alert>
              )}
            </li>
          );
        })}
      </ul>
      {confirmRemove && (
        <ConfirmDialog
          title={`Remove the model ${confirmRemove.id}?`}
          confirmLabel="Remove"
          onClose={() => setConfirmRemove(null)}
          onConfirm={() => {
            setConfirmRemove(null);
            downloads.remove(confirmRemove.id);
          }}
        >
          <p>
            {confirmRemove.derived
              ? "Songs that use it cannot be separated until it is made again on this computer."
              : `Songs that use it cannot be separated until it is downloaded again (${formatBytes(confirmRemove.downloadBytes)}).`}{" "}
            Songs already separated keep their stems.
          </p>
        </ConfirmDialog>
      )}
    </div>
  );
}

import { useState } from "react";
import { useBackend } from "../backend";
import type { AppInfo } from "../bindings";
import { errorText } from "../errors";
import { formatBytes } from "../format";
import type { ModelDownloads } from "../hooks/useAppInfo";
import { ModelInstall } from "./ModelInstall";

interface Props {
  info: AppInfo;
  downloads: ModelDownloads;
  /** Look at what is installed again (after installing ONNX Runtime). */
  onChanged(): void;
}

/** Size of the ONNX Runtime download (the pinned CPU wheel, runtime::install::cpu_wheels). */
const RUNTIME_BYTES = 23_753_652;

/**
 * Why ONNX Runtime is missing, or (`broken`) why the one found failed to
 * load, and a button that installs it (with progress).
 */
export function RuntimeInstall({
  problem,
  broken = false,
  onChanged,
}: {
  problem: string | null;
  broken?: boolean;
  onChanged(): void;
}) {
  const backend = useBackend();
  const [installing, setInstalling] = useState<number | null>(null);
  const [error, setError] = useState<string | null>(null);

  async function installRuntime() {
    setInstalling(0);
    setError(null);
    try {
      await backend.installRuntime((e) => {
        if (e.stage === "downloading") setInstalling(e.total > 0 ? e.done / e.total : 0);
      });
      onChanged();
    } catch (e) {
      setError(errorText(e));
    } finally {
      setInstalling(null);
    }
  }

  return (
    <div className="banner__item" data-testid={broken ? "runtime-broken" : "runtime-missing"}>
      {broken ? (
        <p>{problem}</p>
      ) : (
        <p>
          ONNX Runtime, which runs the separation, is missing.
          {problem && <span className="muted"> ({problem})</span>}
        </p>
      )}
      <button
        type="button"
        className="button button--primary"
        disabled={installing !== null}
        onClick={() => void installRuntime()}
      >
        {installing === null
          ? `Download ONNX Runtime (${formatBytes(RUNTIME_BYTES)})`
          : `Downloading… ${Math.round(installing * 100)} %`}
      </button>
      {error && <p className="field__help field__help--warning">{error}</p>}
    </div>
  );
}

/** What is still missing before songs can be separated; nothing once all is there. */
export function SetupBanner({ info, downloads, onChanged }: Props) {
  const missing = info.models.filter((model) => !model.installed && !model.derived);
  // Found, but it failed to load in this run: queued songs wait for a restart.
  const broken = info.runtime.found && info.runtime.problem !== null;
  if (info.runtime.found && !broken && missing.length === 0) return null;
  return (
    <section className="banner" aria-labelledby="setup-title">
      <h2 id="setup-title" className="banner__title">
        Finish setting up Stemroom
      </h2>
      {(!info.runtime.found || broken) && (
        <RuntimeInstall problem={info.runtime.problem} broken={broken} onChanged={onChanged} />
      )}
      {missing.map((model) => (
        <ModelInstall key={model.id} model={model} downloads={downloads} />
      ))}
    </section>
  );
}

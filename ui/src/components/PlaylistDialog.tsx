import { useState } from "react";
import type { LinkEntry, LinkInfo } from "../bindings";
import { formatDuration } from "../format";
import { Dialog } from "./Dialog";

interface Props {
  playlist: LinkInfo;
  onAdd(entries: LinkEntry[]): void;
  onClose(): void;
}

/**
 * The chosen entries, each link once: a playlist may list a video twice,
 * and each of its rows has its own box.
 */
function chosenEntries(entries: LinkEntry[], chosen: ReadonlySet<number>): LinkEntry[] {
  const urls = new Set<string>();
  return entries.filter((e, i) => {
    if (!chosen.has(i) || urls.has(e.url)) return false;
    urls.add(e.url);
    return true;
  });
}

/** A playlist link: how many entries it has, and which to add (all by default). */
export function PlaylistDialog({ playlist, onAdd, onClose }: Props) {
  const all = () => new Set(playlist.entries.map((_, i) => i));
  // By position, not link: entries may share one.
  const [chosen, setChosen] = useState<ReadonlySet<number>>(all);
  const count = playlist.entries.length;
  const picked = chosenEntries(playlist.entries, chosen);
  const toggle = (index: number, on: boolean) =>
    setChosen((c) => {
      const next = new Set(c);
      if (on) next.add(index);
      else next.delete(index);
      return next;
    });
  return (
    <Dialog
      title={
        <>
          “<bdi>{playlist.title}</bdi>” is a playlist
        </>
      }
      onClose={onClose}
    >
      <p>
        {count} {count === 1 ? "entry" : "entries"}
        {playlist.truncated && " shown (the list is longer; only these can be added at once)"}
        {playlist.uploader && (
          <>
            {" · "}
            <bdi>{playlist.uploader}</bdi>
          </>
        )}
        . Each one you add becomes its own job.
      </p>
      <div className="playlist__bulk">
        <button type="button" className="button" onClick={() => setChosen(all())}>
          Select all
        </button>
        <button type="button" className="button" onClick={() => setChosen(new Set())}>
          Select none
        </button>
      </div>
      <ul className="playlist" aria-label="Playlist entries">
        {playlist.entries.map((e, i) => (
          <li key={i}>
            <label className="check">
              <input type="checkbox" checked={chosen.has(i)} onChange={(ev) => toggle(i, ev.target.checked)} />
              <span className="playlist__title">
                <bdi>{e.title}</bdi>
              </span>
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
          disabled={picked.length === 0}
          onClick={() => onAdd(picked)}
        >
          Add {picked.length} {picked.length === 1 ? "song" : "songs"}
        </button>
      </div>
    </Dialog>
  );
}

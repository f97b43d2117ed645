import { useEffect, useMemo, useRef, useState } from "react";
import { useBackend } from "../backend";
import type { Job } from "../bindings";
import { errorText } from "../errors";
import { bpmText, formatDate, formatDuration, keyText, presetLabel, providerLabel } from "../format";
import { Alert } from "./Alert";
import { PlayerView } from "./PlayerView";
import { SongDetail } from "./SongDetail";
import { focusLost } from "../focus";

interface Props {
  /** Changes whenever a song reaches the library. */
  version: number;
  /** Changes whenever songs may have been removed elsewhere (the HTTP
   * service's clients): the list reloads. */
  changes?: number;
  /** The queue as the app's one event subscription keeps it (a song
   * played while it separates learns its job's end from it). */
  jobs?: Job[] | null;
  /** Open this song in the player (a new object each time it is asked for). */
  playRequest?: { song: Job; at: number } | null;
}

function meta(song: Job): string {
  return [
    song.album,
    song.durationSeconds !== null && formatDuration(song.durationSeconds),
    bpmText(song.analysis),
    keyText(song.analysis),
    song.options.preset && presetLabel(song.options.preset),
    song.finishedAt !== null && formatDate(song.finishedAt),
    song.provider && providerLabel(song.provider),
  ]
    .filter(Boolean)
    .join(" · ");
}

/** Finished songs, newest first, with a search box and the selected song's detail. */
export function LibraryView({ version, changes = 0, playRequest = null, jobs = null }: Props) {
  const backend = useBackend();
  const [search, setSearch] = useState("");
  const [songs, setSongs] = useState<Job[] | null>(null);
  const [selectedId, setSelectedId] = useState<number | null>(null);
  const [error, setError] = useState<string | null>(null);
  const [reloads, setReloads] = useState(0);
  const [playing, setPlaying] = useState<Job | null>(null);
  const [gone, setGone] = useState<string | null>(null);
  // Removals answer after the user may have chosen another song: what they
  // did is kept here, not in the detail that asked (it may be gone).
  const [removing, setRemoving] = useState<ReadonlySet<number>>(new Set());
  const [removeError, setRemoveError] = useState<{ title: string; text: string } | null>(null);
  const playingNow = useRef(playing);
  useEffect(() => {
    playingNow.current = playing;
  });
  // "Back to library" went with the player: the keyboard goes back to the
  // song's place in the list (once the list shows it).
  const returnTo = useRef<number | null>(null);
  const listRef = useRef<HTMLUListElement>(null);
  const searchRef = useRef<HTMLInputElement>(null);
  // Where a removed song was in the list: the focus goes there (to the
  // song that took its place) once the list shows it gone, if the removal
  // left it nowhere (its detail, where its button was, closed).
  const refocusAt = useRef<{ id: number; at: number } | null>(null);
  const songButtons = () => Array.from(listRef.current?.querySelectorAll<HTMLElement>("[data-song-id]") ?? []);

  useEffect(() => {
    let current = true;
    backend.listLibrary(search).then(
      (found) => {
        if (!current) return;
        setSongs(found);
        setError(null);
        // A song opened while it separated is in the library now: its
        // finished facts (folder, tempo, key) replace the running job's.
        const p = playingNow.current;
        if (!p) return;
        const now = found.find((s) => s.id === p.id);
        if (now) {
          setPlaying((cur) => (cur?.id === p.id ? now : cur));
          return;
        }
        // A finished song missing from the list: left out by the search,
        // or deleted (through the HTTP service: the backend closed it in
        // the player). The whole library, asked now, tells which.
        if (p.state.state !== "done") return;
        backend.listLibrary("").then(
          (all) => {
            if (!current || all.some((s) => s.id === p.id)) return;
            setGone(`“${p.title}” was deleted from the library, so the player closed.`);
            setPlaying((cur) => (cur?.id === p.id ? null : cur));
          },
          () => {},
        );
      },
      (e: unknown) => current && setError(errorText(e)),
    );
    return () => {
      current = false;
    };
  }, [backend, search, version, changes, reloads]);

  useEffect(() => {
    if (playRequest) {
      setSelectedId(playRequest.song.id);
      setPlaying(playRequest.song);
      setGone(null);
    }
  }, [playRequest]);

  // A song played while it separates whose job left the queue without
  // reaching the library (removed after a cancel or a failure, here or
  // through the HTTP service): its working folder is gone and the backend
  // let go of it, so the player closes and says why.
  const streamingGone =
    playing !== null && playing.state.state !== "done" && jobs !== null && !jobs.some((j) => j.id === playing.id);
  useEffect(() => {
    if (!streamingGone || !playing) return;
    let current = true;
    backend.listLibrary("").then(
      (all) => {
        if (!current) return;
        const filed = all.find((s) => s.id === playing.id);
        if (filed) {
          setPlaying((cur) => (cur?.id === filed.id ? filed : cur));
          return;
        }
        setGone(`“${playing.title}” was removed from the queue before it finished, so the player closed.`);
        setPlaying((cur) => (cur?.id === playing.id ? null : cur));
      },
      () => {},
    );
    return () => {
      current = false;
    };
  }, [backend, streamingGone, playing]);

  const selected = songs?.find((song) => song.id === selectedId);

  async function remove(song: Job, deleteFiles: boolean, deleteExports: boolean) {
    setRemoving((current) => new Set(current).add(song.id));
    setRemoveError(null);
    // (Its place before the removal: a reload may show it gone before the
    // answer comes.)
    const at = Math.max(0, songButtons().findIndex((b) => b.dataset.songId === String(song.id)));
    try {
      await backend.removeJob(song.id, deleteFiles, deleteExports);
      refocusAt.current = { id: song.id, at };
      // Only its own detail closes: another song chosen meanwhile stays.
      setSelectedId((current) => (current === song.id ? null : current));
      setReloads((n) => n + 1);
    } catch (e) {
      setRemoveError({ title: song.title, text: errorText(e) });
    } finally {
      setRemoving((current) => {
        const next = new Set(current);
        next.delete(song.id);
        return next;
      });
    }
  }

  // The list is rendered again only when it or the choice changes, not at
  // every progress event of the queue (a library holds thousands of songs).
  const list = useMemo(
    () =>
      songs &&
      songs.length > 0 && (
        <ul className="songs" aria-label="Songs" ref={listRef}>
          {songs.map((song) => (
            <li key={song.id} data-testid="library-item">
              <button
                type="button"
                className="song-item"
                data-song-id={song.id}
                aria-current={song.id === selectedId ? "true" : undefined}
                onClick={() => setSelectedId(song.id)}
              >
                <span className="song-item__title">{song.title}</span>
                <span className="song-item__meta">{meta(song)}</span>
              </button>
            </li>
          ))}
        </ul>
      ),
    [songs, selectedId],
  );

  useEffect(() => {
    const gone = refocusAt.current;
    // (Once the list shows it gone: renders before the reload still have it.)
    if (gone === null || songs === null || songs.some((x) => x.id === gone.id)) return;
    refocusAt.current = null;
    if (!focusLost()) return;
    const buttons = songButtons();
    (buttons[gone.at] ?? buttons[gone.at - 1] ?? searchRef.current)?.focus();
  }, [list, songs]);

  useEffect(() => {
    if (playing || returnTo.current === null) return;
    // Once, at the list's first showing after the player: a song not in
    // it (still separating, left out by the search) takes no focus later,
    // and focus the person put somewhere meanwhile stays.
    const id = returnTo.current;
    returnTo.current = null;
    if (focusLost()) listRef.current?.querySelector<HTMLElement>(`[data-song-id="${id}"]`)?.focus();
  }, [playing, list]);

  if (playing) {
    const jobState = jobs?.find((j) => j.id === playing.id)?.state;
    return (
      <PlayerView
        key={playing.id}
        song={playing}
        version={version}
        jobState={jobState}
        onClose={() => {
          returnTo.current = playing.id;
          setSelectedId(playing.id);
          setPlaying(null);
        }}
      />
    );
  }

  return (
    <div className="library">
      <div className="library__list">
        <input
          ref={searchRef}
          className="input"
          type="search"
          aria-label="Search library"
          placeholder="Search library"
          value={search}
          onChange={(e) => setSearch(e.target.value)}
        />
        {error && <Alert title="The library could not be loaded">{error}</Alert>}
        {gone && <Alert onDismiss={() => setGone(null)}>{gone}</Alert>}
        {removeError && (
          <Alert title="A song could not be removed" onDismiss={() => setRemoveError(null)}>
            “<bdi>{removeError.title}</bdi>” is still in the library: {removeError.text}
          </Alert>
        )}
        {songs?.length === 0 && (
          <p className="empty">
            {search.trim() ? `No songs match “${search.trim()}”.` : "Finished songs appear here. Add songs in the Queue."}
          </p>
        )}
        {list}
      </div>
      <div className="library__detail">
        {selected ? (
          <SongDetail
            key={selected.id}
            song={selected}
            removing={removing.has(selected.id)}
            onRemove={(deleteFiles, deleteExports) => void remove(selected, deleteFiles, deleteExports)}
            onOpen={() => {
              setPlaying(selected);
              setGone(null);
            }}
          />
        ) : (
          songs && songs.length > 0 && <p className="muted library__hint">Choose a song to see its stems.</p>
        )}
      </div>
    </div>
  );
}

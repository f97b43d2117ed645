import { useEffect, useLayoutEffect, useMemo, useRef, useState } from "react";
import { useBackend } from "../../backend";
import type { DragOut, JobState, LanePeaks, LoopRegion, MixControls, SongView, StemControl } from "../../bindings";
import { errorText, hintFor } from "../../errors";
import { loadMix, saveMix } from "../../mixPrefs";
import { clampWindow, unityControls, zoomWindow, type FrameWindow } from "../../timeline";
import { createStatusStore, type StatusStore } from "./statusStore";

/** How often the lanes of a song still separating are fetched again. */
const STREAM_PEAKS_MS = 1500;
/** How often the lanes are fetched again while a finished song's peaks are still being read. */
const LOADING_PEAKS_MS = 300;

/** Where a zoom without a pointer keeps its place: the playhead when it is in view, else the view's middle. */
export function zoomAnchor(win: FrameWindow, position: number): number {
  return position >= win.start && position <= win.end ? position : (win.start + win.end) / 2;
}

/** What the mixer and transport do; stable for the life of the player (safe to pass to memoised lanes). */
export interface PlayerActions {
  /** Replace the whole mix. */
  setControls(next: MixControls): void;
  /** Change some fields of the mix as it is when this runs (a change sent
   * later, such as the speed slider's when it settles, keeps what changed
   * meanwhile). */
  changeControls(change: Partial<MixControls>): void;
  /** Change one stem's controls (index in `view.stems`). */
  changeStem(index: number, change: (s: StemControl) => Partial<StemControl>): void;
  toggle(index: number, key: "mute" | "solo"): void;
  /** Jump to a frame (stems' rate), kept inside the song. */
  seek(frame: number): void;
  togglePlay(): void;
  /** Set (or clear, `null`) the loop region, frames at the stems' rate. */
  applyLoop(region: LoopRegion | null): void;
  /** Zoom by `factor` (< 1 zooms in) around `anchor` (a frame; default: the playhead when shown, else the middle). */
  zoom(factor: number, anchor?: number): void;
  setWin(win: FrameWindow): void;
  select(index: number): void;
  /** Drag files of the song out of the window (call on a pointer press); a finished song only. */
  dragOut(item: DragOut): void;
  /** Open the song's folder in the file manager (a finished song only). */
  openFolder(): void;
  reportError(message: string | null): void;
}

export interface Player {
  view: SongView | null;
  controls: MixControls | null;
  win: FrameWindow | null;
  loop: LoopRegion | null;
  selected: number;
  error: string | null;
  /** A song still separating whose job failed or was cancelled: why (its
   * separated part still plays; no files will take over). */
  stopped: string | null;
  /** The status stream (~30 updates a second): read it with `useStatus`, not through state. */
  store: StatusStore;
  actions: PlayerActions;
}

/**
 * One open song: opens it on the backend (closing it on unmount), restores
 * the mix saved for it, follows a song still separating until its files
 * take over, and keeps the mix, loop and zoom saved.
 *
 * `version` changes whenever a song reaches the library (a song still
 * separating then takes its finished files).
 */
/** The mix and loop the player took last (what is heard). */
type Heard = { controls: MixControls | null; loop: LoopRegion | null };

export function usePlayer(songId: number, version: number, jobState?: JobState): Player {
  const backend = useBackend();
  const store = useMemo(createStatusStore, []);
  const [view, setView] = useState<SongView | null>(null);
  const [error, setError] = useState<string | null>(null);
  const [controls, setControls] = useState<MixControls | null>(null);
  const [selected, setSelected] = useState(0);
  const [win, setWin] = useState<FrameWindow | null>(null);
  const [loop, setLoop] = useState<LoopRegion | null>(null);
  const [stopped, setStopped] = useState<string | null>(null);
  // The player has closed (a control that lands after it, such as the
  // speed a panel sends as it goes, is only remembered for next time).
  const gone = useRef(false);

  useEffect(() => {
    let live = true;
    backend
      .openSong(songId, (s) => {
        // Only statuses at the view's rate: a player that takes over at
        // another rate (below) sends before the page has its new view, and
        // the old one may send once after.
        const rate = latest.current.view?.sampleRate;
        if (live && (rate === undefined || s.sampleRate === rate)) store.set(s);
      })
      .then(
        (v) => {
          if (!live) return;
          setView(v);
          // The mix as it was left last time, if it still fits the song.
          const saved = loadMix(v.id, v.stems.length, v.frames, v.sampleRate);
          setControls(saved?.controls ?? unityControls(v.stems.length));
          setWin(saved?.view ?? { start: 0, end: v.frames });
          setLoop(saved?.loop ?? null);
          // (The player opens at unity, without a loop.)
          heard.current = { controls: unityControls(v.stems.length), loop: null };
          if (saved && v.output) {
            backend.setControls(songId, saved.controls).then(
              () => {
                if (sent.current.controls === 0) heard.current.controls = saved.controls;
              },
              (e: unknown) => live && setError(errorText(e)),
            );
            if (saved.loop) {
              const loop = saved.loop;
              backend.setLoop(songId, loop).then(
                () => {
                  if (sent.current.loop === 0) heard.current.loop = loop;
                },
                (e: unknown) => live && setError(errorText(e)),
              );
            }
          } else if (saved) {
            heard.current = { controls: saved.controls, loop: saved.loop };
          }
        },
        (e: unknown) => live && setError(errorText(e)),
      );
    gone.current = false;
    return () => {
      live = false;
      gone.current = true;
      store.set(null);
      // Nowhere to show it (the player is gone); the next open closes it anyway.
      backend.closeSong(songId).catch((e: unknown) => console.warn("Could not close the song", e));
    };
  }, [backend, songId, store]);

  // A song still separating: once its job is done (a song reached the
  // library) the player takes the finished files, without a gap. Files at
  // another rate than the stream (a 48 kHz song; the stream is at the
  // model's 44.1 kHz) come with frames at their rate: the zoom and the loop
  // keep their place in time (the backend moved the player's loop alike).
  const streaming = view?.streaming ?? false;
  const viewId = view?.id;
  useEffect(() => {
    if (!streaming || viewId === undefined) return;
    let live = true;
    backend.songStreamDone(viewId).then(
      (v) => {
        if (!live) return;
        const before = latest.current.view;
        latest.current.view = v;
        if (before && before.sampleRate !== v.sampleRate && before.sampleRate > 0) {
          const k = v.sampleRate / before.sampleRate;
          setWin((w) => w && clampWindow({ start: w.start * k, end: w.end * k }, v.frames));
          setLoop((l) => l && { start: Math.round(l.start * k), end: Math.round(l.end * k) });
          // The last status until the new player's next one (a paused
          // player sends only on a change).
          const s = store.get();
          if (s && s.sampleRate !== v.sampleRate) {
            const position = Math.round(s.position * k);
            store.set({ ...s, sampleRate: v.sampleRate, position, length: v.frames, separated: null, waiting: false });
          }
        }
        setView(v);
      },
      () => {}, // not done yet: the next song to reach the library asks again
    );
    return () => {
      live = false;
    };
  }, [backend, streaming, viewId, version, store]);

  // A song still separating whose job fails or is cancelled: the player
  // says so (and the waveforms stop asking for more); a retry clears it.
  // A job that leaves the queue after that was removed (a failed or
  // cancelled job is not done without a retry): the message stays. One
  // that leaves it while running is done (the files take over above).
  // The job's state comes from the app's queue (its one event
  // subscription: the backend keeps one channel per window).
  const jobStateKind = jobState?.state;
  // (With what to do about it, as the queue's row says it.)
  const failure =
    jobState?.state === "failed"
      ? [jobState.message, hintFor(jobState.code, "job", jobState.message)].filter(Boolean).join(" ")
      : null;
  useEffect(() => {
    if (!streaming) return;
    if (jobStateKind === "failed") setStopped(`The separation failed: ${failure ?? ""}`);
    else if (jobStateKind === "cancelled") setStopped("The separation was cancelled.");
    else if (jobStateKind !== undefined) setStopped(null);
  }, [streaming, jobStateKind, failure]);

  // Remember the mix, loop and zoom for the next time this song opens.
  useEffect(() => {
    if (view && controls && win) rememberMix(view, controls, loop, win);
  }, [view, controls, loop, win]);

  // The actions read the latest state through a ref, so their identity
  // never changes and lanes re-render only when their own props do.
  const latest = useRef({ view, controls, win, loop });
  // The mix and loop the player last took (what is heard), and the number
  // of the last change sent: a refused change shows what is heard again,
  // unless a later one was sent since (its own answer decides).
  const heard = useRef<Heard>({ controls: null, loop: null });
  const sent = useRef({ controls: 0, loop: 0 });
  useLayoutEffect(() => {
    latest.current = { view, controls, win, loop };
  });
  const actions = useMemo<PlayerActions>(() => {
    const canPlay = () => !!latest.current.view?.output;
    const run = (action: Promise<void>) => {
      action.catch((e: unknown) => setError(errorText(e)));
    };
    // A change sent to the player: once taken it is what is heard; refused,
    // `restore` shows what is heard again, unless a later change of the
    // same kind was sent since (its own answer decides).
    const sendHeard = <K extends keyof Heard>(
      key: K,
      value: Heard[K],
      sending: Promise<void>,
      restore: (heard: Heard[K]) => void,
    ) => {
      const mine = ++sent.current[key];
      sending.then(
        () => {
          if (mine === sent.current[key]) heard.current[key] = value;
        },
        (e: unknown) => {
          setError(errorText(e));
          if (mine === sent.current[key]) restore(heard.current[key]);
        },
      );
    };
    const update = (next: MixControls) => {
      latest.current.controls = next;
      if (gone.current) {
        // (No render will save it: saved here.)
        const { view: v, win: w, loop: l } = latest.current;
        if (v && w) rememberMix(v, next, l, w);
        return;
      }
      setControls(next);
      if (!canPlay()) return;
      // Refused: the buttons and faders show the mix heard.
      sendHeard("controls", next, backend.setControls(songId, next), (back) => {
        if (!back) return;
        latest.current.controls = back;
        setControls(back);
      });
    };
    const changeStem: PlayerActions["changeStem"] = (index, change) => {
      const c = latest.current.controls;
      if (!c) return;
      update({ ...c, stems: c.stems.map((s, i) => (i === index ? { ...s, ...change(s) } : s)) });
    };
    return {
      setControls: update,
      changeControls(change) {
        const c = latest.current.controls;
        if (c) update({ ...c, ...change });
      },
      changeStem,
      toggle: (index, key) => changeStem(index, (s) => ({ [key]: !s[key] })),
      seek(frame) {
        const frames = latest.current.view?.frames ?? 0;
        if (canPlay()) run(backend.seek(songId, Math.max(0, Math.min(frames, Math.round(frame)))));
      },
      togglePlay() {
        if (canPlay()) run(store.get()?.playing ? backend.pause(songId) : backend.play(songId));
      },
      applyLoop(region) {
        latest.current.loop = region;
        setLoop(region);
        if (!canPlay()) return;
        // Refused: the loop shown is the one playing.
        sendHeard("loop", region, backend.setLoop(songId, region), (back) => {
          latest.current.loop = back;
          setLoop(back);
        });
      },
      zoom(factor, anchor) {
        const { win: w, view: v } = latest.current;
        if (!w || !v) return;
        const next = zoomWindow(w, factor, anchor ?? zoomAnchor(w, store.get()?.position ?? 0), v.frames);
        latest.current.win = next;
        setWin(next);
      },
      setWin(next) {
        latest.current.win = next;
        setWin(next);
      },
      select: setSelected,
      dragOut(item) {
        const v = latest.current.view;
        if (!v || v.streaming) return;
        backend.dragOut(v.id, item).catch((e: unknown) => setError(errorText(e)));
      },
      openFolder() {
        const v = latest.current.view;
        if (!v || v.streaming) return;
        backend.openFolder({ kind: "song", id: v.id }).catch((e: unknown) => setError(errorText(e)));
      },
      reportError: setError,
    };
  }, [backend, songId, store]);

  // Keep the playhead in view while playing: page forward when it runs
  // off the view (or a seek or a loop's wrap takes it out). A view the
  // user moved away from the playhead stays where they put it.
  useEffect(() => {
    const frames = view?.frames ?? 0;
    if (!win || frames === 0) return;
    const inView = (p: number) => p <= win.end && p >= win.start;
    // The playhead as last heard playing, or seen paused in the view (or
    // as it was when the view was set): a seek while paused that leaves
    // the view is followed at play; a view moved away while paused is not.
    let before = store.get()?.position;
    return store.subscribe(() => {
      const s = store.get();
      if (!s) return;
      if (!s.playing) {
        if (inView(s.position)) before = s.position;
        return;
      }
      const was = before;
      before = s.position;
      if (was === undefined || !inView(was) || inView(s.position)) return;
      actions.setWin(clampWindow({ start: s.position, end: s.position + (win.end - win.start) }, frames));
    });
  }, [store, win, view, actions]);

  return { view, controls, win, loop, selected, error, stopped, store, actions };
}

/**
 * Save the mix, loop and zoom of `view`'s song for its next opening (A/B
 * is a moment's comparison: the song reopens on the mix).
 */
function rememberMix(view: SongView, controls: MixControls, loop: LoopRegion | null, win: FrameWindow) {
  saveMix(view.id, { controls: { ...controls, original: false }, loop, view: win, sampleRate: view.sampleRate });
}

/**
 * The lanes' peaks for the visible window, `columns` columns wide, fetched
 * again as a song still separating fills in and while a finished song's
 * peaks are still being read (a long song opens before its waveforms are
 * known). `ready` is the part of the lanes known, 0 to 1 (`null` until
 * the first answer).
 */
export function useLanePeaks(
  view: SongView | null,
  win: FrameWindow | null,
  columns: number,
  onError: (message: string) => void,
  /** A separation that stopped: its waveforms will not grow. */
  stopped = false,
): { peaks: LanePeaks[] | null; ready: number | null } {
  const backend = useBackend();
  const [peaks, setPeaks] = useState<LanePeaks[] | null>(null);
  const [ready, setReady] = useState<number | null>(null);
  const [tick, setTick] = useState(0);
  // Requests are numbered: an answer is drawn unless a later one is
  // already on screen. (Dropping every answer but the latest's froze the
  // waveform through a scroll or zoom gesture faster than the backend's
  // answers, and, on a slow machine, a long song's peaks being read.)
  const sent = useRef(0);
  const shown = useRef(0);
  // The latest request answered (or failed).
  const settled = useRef(0);
  // The song the answers are for: another song's never show.
  const song = useRef<number | null>(null);
  song.current = view?.id ?? null;
  useEffect(() => {
    if (!view || !win || columns <= 0) return;
    const n = ++sent.current;
    const id = view.id;
    backend.songPeaks(id, win.start, win.end, columns).then(
      (p) => {
        settled.current = Math.max(settled.current, n);
        if (song.current !== id || n < shown.current) return;
        shown.current = n;
        setPeaks(p.lanes);
        setReady(p.ready);
      },
      (e: unknown) => {
        settled.current = Math.max(settled.current, n);
        if (song.current === id && n === sent.current) onError(errorText(e));
      },
    );
  }, [backend, view, win, columns, tick, onError]);
  // Polled while separating, and while a first answer said the peaks are
  // still being read; not while the last request waits for its answer
  // (requests would pile up on a busy backend).
  const polling = !!view && ((view.streaming && !stopped) || (ready !== null && ready < 1));
  useEffect(() => {
    if (!view || !polling) return;
    const t = setInterval(
      () => {
        if (settled.current === sent.current) setTick((n) => n + 1);
      },
      view.streaming ? STREAM_PEAKS_MS : LOADING_PEAKS_MS,
    );
    return () => clearInterval(t);
  }, [view, polling]);
  return { peaks, ready };
}

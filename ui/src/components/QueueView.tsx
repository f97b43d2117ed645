import { useCallback, useEffect, useLayoutEffect, useRef, useState } from "react";
import { useBackend } from "../backend";
import type { Job, Preset } from "../bindings";
import { errorText } from "../errors";
import { isRunning } from "../format";
import type { QueueState } from "../hooks/useQueue";
import { AddBar } from "./AddBar";
import { Alert } from "./Alert";
import { ConfirmDialog } from "./ConfirmDialog";
import { JobRow, type JobAction } from "./JobRow";
import { focusLost } from "../focus";

interface Props {
  queue: QueueState;
  onPickFiles(): Promise<unknown>;
  onAddLinks(urls: string[]): Promise<boolean>;
  /** The quality songs added now get (`null`: as in Settings). */
  preset: Preset | null;
  onPresetChange(preset: Preset | null): void;
  /** Open a song in the player (Library tab): a finished one, or one separating. */
  onOpenSong(song: Job): void;
}

/** The ids of the queued jobs after moving `id` one place up (-1) or down (+1). */
function moved(queuedIds: number[], id: number, by: -1 | 1): number[] {
  const ids = [...queuedIds];
  const from = ids.indexOf(id);
  const to = from + by;
  if (from < 0 || to < 0 || to >= ids.length) return ids;
  [ids[from], ids[to]] = [ids[to]!, ids[from]!];
  return ids;
}

export function QueueView({ queue, onPickFiles, onAddLinks, preset, onPresetChange, onOpenSong }: Props) {
  const backend = useBackend();
  // What each job's buttons are doing (one job's answer does not free another's).
  const [busy, setBusy] = useState<ReadonlyMap<number, JobAction>>(new Map());
  const [error, setError] = useState<string | null>(null);
  // Running jobs whose cancel was asked: a running job stops at its next
  // check (within a segment, seconds on a CPU), so Cancel keeps saying
  // "Cancelling…" until the job has left the running states.
  // (By run: a job and when that run started, so a retried run of the
  // same job is not taken for the cancelled one.)
  const [cancelling, setCancelling] = useState<ReadonlySet<string>>(new Set());
  const queueList = useRef<HTMLUListElement>(null);
  const runOf = (job: Job) => `${job.id}@${job.startedAt ?? ""}`;
  // Finished songs are listed apart (until cleared), not among the queue.
  const jobs = (queue.jobs ?? []).filter((job) => job.state.state !== "done");
  const runningKey = jobs
    .filter((job) => isRunning(job.state))
    .map(runOf)
    .join(" ");
  useEffect(() => {
    // Forget the runs that ended.
    const running = new Set(runningKey.split(" "));
    setCancelling((c) => ([...c].every((r) => running.has(r)) ? c : new Set([...c].filter((r) => running.has(r)))));
  }, [runningKey]);
  const { finished, clearFinished } = queue;
  const queuedIds = jobs.filter((job) => job.state.state === "queued").map((job) => job.id);
  // Place of each queued job (a lookup per row: a queue holds thousands).
  const queuedAt = new Map(queuedIds.map((id, i) => [id, i]));
  // One move at a time: each sends the whole order it saw, so a second
  // sent before the first's list comes back would undo it.
  const moving = [...busy.values()].some((a) => a === "up" || a === "down");

  // A failed or cancelled job that ran keeps what it separated (it can be
  // heard, and Retry goes on from it): removing it deletes that, so it asks.
  const [confirmRemove, setConfirmRemove] = useState<Job | null>(null);
  function onAction(action: JobAction, job: Job) {
    const stopped = job.state.state === "failed" || job.state.state === "cancelled";
    if (action === "remove" && stopped && job.startedAt !== null) {
      setConfirmRemove(job);
      return;
    }
    void act(action, job);
  }

  /** The queue's rows (not the finished songs'). */
  const queueRows = () => Array.from(queueList.current?.querySelectorAll<HTMLElement>("[data-job-id]") ?? []);

  /**
   * Hand the keyboard focus on after `action` on `job` took its button
   * away (Cancel and Retry are replaced by others, Remove takes the row,
   * a move re-orders the rows), when it was lost: to the row's next
   * control, else the row now at `place` (where the job's was), else the
   * one before.
   */
  function refocus(action: JobAction, job: Job, place: number) {
    // (Or still on this button, now disabled: some browsers keep it
    // there, where no key reaches it.)
    if (!focusLost()) return;
    // A button that takes a key now (not disabled, not waiting).
    const usable = "button:not(:disabled):not([aria-disabled='true'])";
    const enabled = (row: Element | undefined, actions: string[]) =>
      actions.map((a) => row?.querySelector<HTMLElement>(`${usable}[data-action="${a}"]`)).find((b) => b);
    const rows = queueRows();
    const row = rows.find((r) => r.dataset.jobId === String(job.id));
    const after: Record<JobAction, string[]> = {
      up: ["up", "down", "remove"],
      down: ["down", "up", "remove"],
      cancel: ["retry", "remove", "cancel"],
      retry: ["cancel", "up", "down", "remove"],
      remove: [],
    };
    const own = enabled(row, after[action]);
    if (own) {
      own.focus();
      return;
    }
    const near = (row ? [row] : [rows[place], rows[place - 1]]).filter((r): r is HTMLElement => r !== undefined);
    near
      .map((r) => r.querySelector<HTMLElement>(usable))
      .find((b) => b !== null)
      ?.focus();
  }

  // Cancels asked from the keyboard whose job was still running: focus
  // goes on once it stops (its "Cancelling…" button then leaves).
  const cancelledFromKeys = useRef(new Map<number, number>());
  useEffect(() => {
    for (const [id, place] of cancelledFromKeys.current) {
      const job = jobs.find((j) => j.id === id);
      if (job && isRunning(job.state)) continue;
      cancelledFromKeys.current.delete(id);
      if (job) requestAnimationFrame(() => refocus("cancel", job, place));
    }
  });

  async function act(action: JobAction, job: Job) {
    // Focus is handed on after the action only when it was on this row
    // (or in the confirmation it asked): a mouse click in WebKit focuses
    // nothing, and a key pressed later must not act on a button the
    // person did not choose.
    const focused = document.activeElement;
    const fromKeys =
      focused instanceof HTMLElement &&
      (focused.closest(`[data-job-id="${job.id}"]`) !== null || focused.closest('[role="dialog"]') !== null);
    const place = queueRows().findIndex((r) => r.dataset.jobId === String(job.id));
    setBusy((b) => new Map(b).set(job.id, action));
    setError(null);
    try {
      switch (action) {
        case "cancel": {
          const now = await backend.cancelJob(job.id);
          if (isRunning(now.state)) {
            setCancelling((c) => new Set(c).add(runOf(now)));
            if (fromKeys) cancelledFromKeys.current.set(job.id, place);
          }
          break;
        }
        case "retry":
          await backend.retryJob(job.id);
          break;
        case "remove":
          await backend.removeJob(job.id, false, false);
          break;
        case "up":
        case "down":
          await backend.reorderQueue(moved(queuedIds, job.id, action === "up" ? -1 : 1));
          break;
      }
    } catch (e) {
      setError(errorText(e));
    } finally {
      // Free the buttons once the list shows the result (a second "Move
      // up" must start from the order the first one made).
      await queue.refresh();
      setBusy((b) => {
        const next = new Map(b);
        next.delete(job.id);
        return next;
      });
      if (fromKeys) requestAnimationFrame(() => refocus(action, job, place));
    }
  }

  // The rows' callbacks keep their identity (the rows are memoized) and
  // call this render's handlers, which see the current order.
  const latest = useRef({ onAction, onOpenSong });
  useLayoutEffect(() => {
    latest.current = { onAction, onOpenSong };
  });
  const rowAction = useCallback((action: JobAction, job: Job) => latest.current.onAction(action, job), []);
  const rowListen = useCallback((job: Job) => latest.current.onOpenSong(job), []);

  return (
    <div className="queue">
      <AddBar onPickFiles={onPickFiles} onAddLinks={onAddLinks} preset={preset} onPresetChange={onPresetChange} />
      {queue.error && <Alert title="The queue could not be loaded">{queue.error}</Alert>}
      {queue.listenError && (
        <Alert title="The queue does not follow changes by itself">{queue.listenError}</Alert>
      )}
      {error && (
        <Alert title="That did not work" onDismiss={() => setError(null)}>
          {error}
        </Alert>
      )}
      {finished.length > 0 && (
        <section className="finished" aria-label="Finished songs">
          <div className="finished__head">
            <h2 className="finished__title">Finished</h2>
            {finished.length > 1 && (
              <button type="button" className="button button--quiet" onClick={() => clearFinished()}>
                Clear all
              </button>
            )}
          </div>
          <ul className="job-list">
            {finished.map((song) => (
              <li key={song.id} className="job job--done" data-testid="done-row" data-job-id={song.id}>
                <div className="job__main">
                  <p className="job__title" id={`done-title-${song.id}`}>
                    {song.title}
                  </p>
                  <p className="job__meta">
                    <span className="job__state job__state--done">Done · in the Library</span>
                  </p>
                </div>
                <div className="job__actions">
                  {/* (Described by the title: a screen reader tabbing through
                      several says which song each opens.) */}
                  <button
                    type="button"
                    className="button button--primary"
                    aria-describedby={`done-title-${song.id}`}
                    onClick={() => onOpenSong(song)}
                  >
                    Open in player
                  </button>
                  <button
                    type="button"
                    className="button button--quiet"
                    aria-label={`Clear ${song.title} from this list`}
                    onClick={() => clearFinished(song.id)}
                  >
                    Clear
                  </button>
                </div>
              </li>
            ))}
          </ul>
        </section>
      )}
      {queue.jobs !== null && jobs.length === 0 && finished.length === 0 && (
        <div className="empty">
          <p className="empty__title">No songs in the queue</p>
          <p>
            Drag audio files onto this window, choose <strong>Add files…</strong>, or paste a link above.
            Stemroom splits each song into drums, bass, other and vocals, and keeps the results in the Library.
          </p>
        </div>
      )}
      {jobs.length > 0 && (
        <ul className="job-list" aria-label="Songs in the queue" ref={queueList}>
          {jobs.map((job) => {
            const index = queuedAt.get(job.id) ?? -1;
            return (
              <JobRow
                key={job.id}
                job={job}
                progress={queue.progress[job.id]}
                canMove={{ up: index > 0, down: index >= 0 && index < queuedIds.length - 1 }}
                moving={moving}
                busy={busy.get(job.id) ?? (isRunning(job.state) && cancelling.has(runOf(job)) ? "cancel" : null)}
                onAction={rowAction}
                onListen={rowListen}
              />
            );
          })}
        </ul>
      )}
      {confirmRemove && (
        <ConfirmDialog
          title={
            <>
              Remove “<bdi>{confirmRemove.title}</bdi>” from the queue?
            </>
          }
          confirmLabel="Remove"
          onClose={() => setConfirmRemove(null)}
          onConfirm={() => {
            const job = confirmRemove;
            setConfirmRemove(null);
            void act("remove", job);
          }}
        >
          <p>
            What it separated before it {confirmRemove.state.state === "failed" ? "failed" : "was cancelled"} is deleted
            with it: Retry would go on from there instead of starting over.
          </p>
        </ConfirmDialog>
      )}
    </div>
  );
}

import { useCallback, useEffect, useEffectEvent, useRef, useState } from "react";
import { useBackend } from "../backend";
import type { AddResult, Job, JobProgress, JobState, QueueEvent } from "../bindings";
import { errorText } from "../errors";
import { isRunning } from "../format";
import { untilUnmount } from "./untilUnmount";

export type ProgressById = Readonly<Record<number, JobProgress>>;

export interface QueueState {
  /** `null` until the first load. */
  jobs: Job[] | null;
  /** Latest progress of running jobs. */
  progress: ProgressById;
  /** Goes up whenever a song reaches the library. */
  libraryVersion: number;
  /** Goes up whenever jobs are added or removed other than by finishing
   * (the HTTP service's clients included): lists reload. */
  queueVersion: number;
  /** What the last files opened with Stemroom (a file manager's "Open
   * with") did, to show as the window's own adds are (a new object each time). */
  opened: AddResult | null;
  /** Songs finished since the window opened, newest first, until cleared. */
  finished: Job[];
  /** Clear one finished song from the queue view (`undefined`: all of them). */
  clearFinished(id?: number): void;
  /** Why the queue could not be loaded. */
  error: string | null;
  /** Why the queue does not follow changes (it is read, not updated). */
  listenError: string | null;
  refresh(): Promise<void>;
}

function upsert(jobs: Job[], job: Job): Job[] {
  return jobs.some((j) => j.id === job.id) ? jobs.map((j) => (j.id === job.id ? job : j)) : [...jobs, job];
}

function without(progress: ProgressById, id: number): ProgressById {
  if (!(id in progress)) return progress;
  const { [id]: _, ...rest } = progress;
  return rest;
}

/** How long after a failed subscription to the queue's events it is tried again. */
export const LISTEN_RETRY_MS = 2000;

/** The queue, kept live by backend events. */
export function useQueue(): QueueState {
  const backend = useBackend();
  const [jobs, setJobs] = useState<Job[] | null>(null);
  const [progress, setProgress] = useState<ProgressById>({});
  const [libraryVersion, setLibraryVersion] = useState(0);
  const [queueVersion, setQueueVersion] = useState(0);
  const [opened, setOpened] = useState<AddResult | null>(null);
  const [finished, setFinished] = useState<Job[]>([]);
  const [error, setError] = useState<string | null>(null);
  // Apart from `error`: a reload that works does not mean events arrive.
  const [listenError, setListenError] = useState<string | null>(null);

  // Reloads may answer out of order: only the latest one's answer is kept.
  const latestLoad = useRef(0);
  // A reload reads the database before events that arrive while it is on
  // its way (a job that failed or was cancelled meanwhile): what those
  // events said is laid over its answer, or a failed job would show as
  // running again until the next change. Events are numbered; each job
  // keeps what its latest event says, dropped once a reload read after it.
  const eventCount = useRef(0);
  /** Per job, the latest event's number and what events said of it: the
   * whole job (a change) and/or its state (progress), as data, so that a
   * long job's thousands of progress events keep one entry each. */
  const sinceLoad = useRef(new Map<number, { seq: number; job?: Job; state?: JobState }>());
  const refresh = useCallback(async () => {
    const load = ++latestLoad.current;
    const readAfter = eventCount.current;
    try {
      const loaded = await backend.listQueue();
      if (load !== latestLoad.current) return;
      const newer = sinceLoad.current;
      for (const [id, e] of newer) if (e.seq <= readAfter) newer.delete(id);
      setJobs(
        loaded.map((job) => {
          const e = newer.get(job.id);
          if (!e) return job;
          const base = e.job ?? job;
          return e.state ? { ...base, state: e.state } : base;
        }),
      );
      setError(null);
    } catch (e) {
      if (load === latestLoad.current) setError(errorText(e));
    }
  }, [backend]);

  // A finished song removed from the library (from the Library tab, or
  // another window) leaves the Finished list too. Only songs listed before
  // the library was read can go: one that finished meanwhile stays.
  const pruneFinished = useEffectEvent(async () => {
    if (finished.length === 0) return;
    const checked = new Set(finished.map((j) => j.id));
    try {
      const kept = new Set((await backend.listLibrary("")).map((j) => j.id));
      setFinished((current) => current.filter((j) => kept.has(j.id) || !checked.has(j.id)));
    } catch {
      // Checked again at the next change.
    }
  });

  const onEvent = useEffectEvent((event: QueueEvent) => {
    switch (event.kind) {
      case "jobChanged": {
        const { job } = event;
        sinceLoad.current.set(job.id, { seq: ++eventCount.current, job });
        setJobs((current) => upsert(current ?? [], job));
        if (!isRunning(job.state)) setProgress((current) => without(current, job.id));
        if (job.state.state === "done") {
          setLibraryVersion((v) => v + 1);
          setFinished((current) => [job, ...current.filter((j) => j.id !== job.id)]);
          void refresh();
        }
        break;
      }
      case "progress": {
        const update = event.progress;
        const before = sinceLoad.current.get(update.id);
        sinceLoad.current.set(update.id, { seq: ++eventCount.current, job: before?.job, state: update.state });
        setJobs((current) => current?.map((j) => (j.id === update.id ? { ...j, state: update.state } : j)) ?? null);
        setProgress((current) =>
          isRunning(update.state) ? { ...current, [update.id]: update } : without(current, update.id),
        );
        break;
      }
      case "queueChanged":
        setQueueVersion((v) => v + 1);
        void refresh();
        void pruneFinished();
        break;
      case "opened":
        setOpened(event.result);
        break;
    }
  });

  // The first read waits for the subscription: the app's commands run on
  // several threads, so a read sent beside the subscription can answer
  // before it is in place, and a change between the two (a job that failed
  // or finished) would be shown as it was until the next change.
  // A subscription that fails is said and tried again, or the queue would
  // stand still with nothing to say why; once it works, a read catches up
  // on what changed meanwhile.
  useEffect(() => {
    let active = true;
    let stop = () => {};
    let retry: ReturnType<typeof setTimeout> | undefined;
    const listen = (first: boolean) => {
      const registration = backend.subscribe((event) => onEvent(event));
      registration.then(
        () => {
          if (!active) return;
          setListenError(null);
          void refresh();
        },
        () => {
          if (active && first) void refresh();
        },
      );
      stop = untilUnmount(registration, (e) => {
        setListenError(`${errorText(e)} Trying again every ${LISTEN_RETRY_MS / 1000} s.`);
        retry = setTimeout(() => listen(false), LISTEN_RETRY_MS);
      });
    };
    listen(true);
    return () => {
      active = false;
      clearTimeout(retry);
      stop();
    };
  }, [backend, refresh]);

  const clearFinished = useCallback((id?: number) => {
    setFinished((current) => (id === undefined ? [] : current.filter((j) => j.id !== id)));
  }, []);

  return {
    jobs,
    progress,
    libraryVersion,
    queueVersion,
    opened,
    finished,
    clearFinished,
    error,
    listenError,
    refresh,
  };
}

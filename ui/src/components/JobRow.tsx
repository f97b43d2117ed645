import { memo } from "react";
import type { Job, JobProgress } from "../bindings";
import { hintFor } from "../errors";
import { formatDuration, formatEta, formatSpeed, isRunning, stateLabel, thumbnailSrc } from "../format";
import { ProgressBar } from "./ProgressBar";

export type JobAction = "cancel" | "retry" | "remove" | "up" | "down";

interface Props {
  job: Job;
  progress: JobProgress | undefined;
  /** Whether the job can move up / down among the queued ones. */
  canMove: { up: boolean; down: boolean };
  /** A move (of any row) is under way: moves wait for its order. */
  moving: boolean;
  /** The action being carried out on this job, if any (its button says so). */
  busy: JobAction | null;
  onAction(action: JobAction, job: Job): void;
  /** Open the song while it separates (its separated part plays). */
  onListen?(job: Job): void;
}

/** What a button says while its action runs. */
const BUSY_LABEL: Partial<Record<JobAction, string>> = {
  cancel: "Cancelling…",
  retry: "Retrying…",
  remove: "Removing…",
};

/** Whether a row shows the same as before (a queue holds thousands of
 * rows, and a running job's progress comes 10 times a second: only its own
 * row renders again). */
function sameRow(a: Props, b: Props): boolean {
  return (
    a.job === b.job &&
    a.progress === b.progress &&
    a.canMove.up === b.canMove.up &&
    a.canMove.down === b.canMove.down &&
    a.moving === b.moving &&
    a.busy === b.busy &&
    a.onAction === b.onAction &&
    a.onListen === b.onListen
  );
}

export const JobRow = memo(function JobRow({ job, progress, canMove, moving, busy, onAction, onListen }: Props) {
  const { state } = job;
  const running = isRunning(state);
  const queued = state.state === "queued";
  const stopped = state.state === "failed" || state.state === "cancelled";
  const hint = state.state === "failed" ? hintFor(state.code, "job", state.message) : null;
  // Each button is described by the song's title ("Remove, Falcon 69"):
  // tabbing through a long queue, a screen reader says which song.
  const titleId = `job-title-${job.id}`;
  // While an action runs, the buttons wait with `aria-disabled`, not
  // `disabled`: a disabled button drops the keyboard focus, and a person
  // moving a song up several places with Enter would lose their place.
  const button = (action: JobAction, label: string, disabled = false) => {
    const waiting = busy !== null || ((action === "up" || action === "down") && moving);
    return (
      <button
        type="button"
        className="button"
        disabled={disabled}
        aria-disabled={waiting || undefined}
        aria-describedby={titleId}
        data-action={action}
        onClick={() => {
          if (!waiting) onAction(action, job);
        }}
      >
        {busy === action ? (BUSY_LABEL[action] ?? label) : label}
      </button>
    );
  };

  return (
    <li className="job" data-testid="job-row" data-job-id={job.id} data-state={state.state}>
      {job.thumbnail && (
        <img
          draggable={false}
          className="job__thumb"
          src={thumbnailSrc(job.id)}
          alt=""
          loading="lazy"
          onError={(e) => {
            e.currentTarget.hidden = true;
          }}
        />
      )}
      <div className="job__main">
        <p className="job__title" id={titleId}>
          {job.title}
        </p>
        {job.uploader && <p className="job__uploader muted">{job.uploader}</p>}
        <p className="job__meta">
          {job.durationSeconds !== null && <span>{formatDuration(job.durationSeconds)}</span>}
          <span
            className={`job__state job__state--${state.state}`}
            title={state.state === "separating" ? `Part ${state.segment} of ${state.total}` : undefined}
          >
            {stateLabel(state)}
          </span>
          {running && progress && <span className="job__percent">{Math.round(progress.percent)} %</span>}
          {running && progress?.bytesPerSecond != null && <span>{formatSpeed(progress.bytesPerSecond)}</span>}
          {running && progress?.etaSeconds != null && <span>{formatEta(progress.etaSeconds)}</span>}
        </p>
        {hint && <p className="job__hint">{hint}</p>}
        {running && progress?.notice && (
          <p className="job__hint job__hint--warning" role="status">
            {progress.notice}
          </p>
        )}
        {running && <ProgressBar percent={progress?.percent ?? 0} label={`Progress of ${job.title}`} />}
      </div>
      <div className="job__actions">
        {/* A queued song is only moved or removed (nothing to cancel yet);
            a running one only cancelled, so a double click on Cancel never
            lands on Remove. */}
        {queued && button("up", "Move up", !canMove.up)}
        {queued && button("down", "Move down", !canMove.down)}
        {/* Once a first part is separated it can be heard while the rest is. */}
        {onListen && state.state === "separating" && state.segment > 0 && (
          <button
            type="button"
            className="button button--primary"
            title="Play what is separated so far; the rest fills in as it separates"
            aria-describedby={titleId}
            onClick={() => onListen(job)}
          >
            Listen now
          </button>
        )}
        {running && button("cancel", "Cancel")}
        {stopped && button("retry", "Retry")}
        {!running && button("remove", "Remove")}
      </div>
    </li>
  );
}, sameRow);

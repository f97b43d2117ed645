/** Click track and count-in toggles, on the song's detected beat. */
export function BeatControls({
  bpm,
  metronome,
  countIn,
  countingIn,
  onChange,
}: {
  /** The song's tempo, or null when no steady beat was found. */
  bpm: number | null;
  metronome: boolean;
  countIn: boolean;
  countingIn: boolean;
  onChange(change: { metronome?: boolean; countIn?: boolean }): void;
}) {
  const none = bpm === null;
  const why = none ? "No steady beat was found in this song" : undefined;
  return (
    <div className="tempo-pitch" role="group" aria-label="Click track">
      <button
        type="button"
        className="button button--small"
        aria-pressed={metronome}
        disabled={none}
        title={why ?? `A click on every beat (${bpm === null ? "" : Math.round(bpm * 10) / 10} BPM, follows the speed)`}
        onClick={() => onChange({ metronome: !metronome })}
      >
        Click
      </button>
      <button
        type="button"
        className="button button--small"
        aria-pressed={countIn}
        disabled={none}
        title={why ?? "One bar of clicks before playback starts"}
        onClick={() => onChange({ countIn: !countIn })}
      >
        Count-in
      </button>
      {countingIn && (
        <span className="muted" role="status">
          Counting in…
        </span>
      )}
    </div>
  );
}

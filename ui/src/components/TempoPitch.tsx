import { useEffect, useRef, useState } from "react";

/** Limits of the backend's stretcher (crates/playback/src/stretch.rs). */
export const MIN_TEMPO = 0.5;
export const MAX_TEMPO = 1.5;
export const MAX_TRANSPOSE = 12;
/**
 * A new tempo re-reads the audio from the playhead (a short refill), so a
 * dragged slider is sent once it rests this long, not at every step.
 */
export const SETTLE_MS = 150;

/** Whether a speed and pitch change what is heard (as shown: whole percent, whole semitones). */
export function isStretched(tempo: number, transpose: number): boolean {
  return Math.round(tempo * 100) !== 100 || Math.round(transpose) !== 0;
}

/** "85 %". */
export function tempoText(tempo: number): string {
  return `${Math.round(tempo * 100)} %`;
}

/** "+3 st", "−2 st", "0 st". */
export function transposeText(semitones: number): string {
  const s = Math.round(semitones);
  return `${s > 0 ? "+" : s < 0 ? "−" : ""}${Math.abs(s)} st`;
}

interface Props {
  tempo: number;
  transpose: number;
  onChange(change: { tempo: number; transpose: number }): void;
}

/**
 * Speed at the same pitch (50–150 %) and transposition at the same speed
 * (±12 semitones); double-click either to reset. Applied to what is heard
 * and to "what I hear" exports.
 */
export function TempoPitch({ tempo, transpose, onChange }: Props) {
  // The slider follows the pointer at once; the change is sent when it settles.
  const [shown, setShown] = useState(tempo);
  const timer = useRef<ReturnType<typeof setTimeout> | undefined>(undefined);
  // A change not sent yet: sent when the panel goes before it settles
  // (the speed set just before "Back to library" is kept with the song).
  const pending = useRef<(() => void) | null>(null);
  useEffect(() => setShown(tempo), [tempo]);
  useEffect(
    () => () => {
      clearTimeout(timer.current);
      pending.current?.();
    },
    [],
  );

  function setTempo(t: number, now = false) {
    setShown(t);
    clearTimeout(timer.current);
    const send = () => {
      pending.current = null;
      onChange({ tempo: t, transpose });
    };
    pending.current = send;
    if (now) send();
    else timer.current = setTimeout(send, SETTLE_MS);
  }
  function setTranspose(s: number) {
    clearTimeout(timer.current);
    pending.current = null;
    onChange({ tempo: shown, transpose: Math.max(-MAX_TRANSPOSE, Math.min(MAX_TRANSPOSE, Math.round(s))) });
  }

  return (
    <div className="tempo-pitch" role="group" aria-label="Speed and pitch">
      <label className="transport__master" title="Speed without changing the pitch (double-click: 100 %)">
        Speed
        <input
          type="range"
          min={MIN_TEMPO}
          max={MAX_TEMPO}
          step={0.01}
          value={shown}
          aria-label="Speed"
          aria-valuetext={tempoText(shown)}
          onChange={(e) => setTempo(Number(e.target.value))}
          onDoubleClick={() => setTempo(1, true)}
        />
        <span className="tempo-pitch__value" data-testid="tempo" aria-hidden="true">
          {tempoText(shown)}
        </span>
      </label>
      <span className="transport__master" title="Pitch in semitones without changing the speed (double-click: 0)">
        Pitch
        <button
          type="button"
          className="button button--small"
          aria-label="Pitch down a semitone"
          disabled={transpose <= -MAX_TRANSPOSE}
          onClick={() => setTranspose(transpose - 1)}
        >
          ♭
        </button>
        <span className="tempo-pitch__value" data-testid="transpose" onDoubleClick={() => setTranspose(0)}>
          {transposeText(transpose)}
        </span>
        <button
          type="button"
          className="button button--small"
          aria-label="Pitch up a semitone"
          disabled={transpose >= MAX_TRANSPOSE}
          onClick={() => setTranspose(transpose + 1)}
        >
          ♯
        </button>
      </span>
      {isStretched(shown, transpose) && (
        <button
          type="button"
          className="button button--small"
          onClick={() => {
            clearTimeout(timer.current);
            // (A speed still settling is not sent after this, on unmount.)
            pending.current = null;
            setShown(1);
            onChange({ tempo: 1, transpose: 0 });
          }}
        >
          Original speed and pitch
        </button>
      )}
    </div>
  );
}

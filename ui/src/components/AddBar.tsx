import { useState, type FormEvent } from "react";
import type { Preset } from "../bindings";
import { PRESETS } from "../format";

interface Props {
  onPickFiles(): void;
  /** Resolves to whether the path was added (then the field is cleared). */
  onAddPath(path: string): Promise<boolean>;
  /** The quality songs added now separate with (`null`: as in Settings). */
  preset: Preset | null;
  onPresetChange(preset: Preset | null): void;
}

/** "Add files…" (native dialog), a field for a path or link, and the quality they get. */
export function AddBar({ onPickFiles, onAddPath, preset, onPresetChange }: Props) {
  const [value, setValue] = useState("");
  const [busy, setBusy] = useState(false);

  async function submit(event: FormEvent) {
    event.preventDefault();
    const path = value.trim();
    if (!path) return;
    setBusy(true);
    if (await onAddPath(path)) setValue("");
    setBusy(false);
  }

  return (
    <div className="add-bar">
      <button type="button" className="button button--primary" onClick={onPickFiles}>
        Add files…
      </button>
      <form className="add-bar__form" onSubmit={submit}>
        <input
          className="input add-bar__input"
          type="text"
          aria-label="File path or link"
          placeholder="File path or link"
          value={value}
          onChange={(e) => setValue(e.target.value)}
          spellCheck={false}
          autoComplete="off"
        />
        <button type="submit" className="button" disabled={busy || !value.trim()}>
          Add
        </button>
      </form>
      <select
        className="input add-bar__preset"
        aria-label="Quality of songs added now"
        title={PRESETS.find((p) => p.value === preset)?.help ?? "The quality chosen in Settings"}
        value={preset ?? ""}
        onChange={(e) => onPresetChange(e.target.value === "" ? null : (e.target.value as Preset))}
      >
        <option value="">Quality as in Settings</option>
        {PRESETS.map((p) => (
          <option key={p.value} value={p.value}>
            {p.label}
          </option>
        ))}
      </select>
    </div>
  );
}

import { useState, type FormEvent } from "react";

interface Props {
  onPickFiles(): void;
  /** Resolves to whether the path was added (then the field is cleared). */
  onAddPath(path: string): Promise<boolean>;
}

/** "Add files…" (native dialog) and a field for a path or link. */
export function AddBar({ onPickFiles, onAddPath }: Props) {
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
    </div>
  );
}

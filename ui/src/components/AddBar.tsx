import { useRef, useState, type FormEvent } from "react";
import type { Preset } from "../bindings";
import { PRESETS } from "../format";
import { useOneAtATime } from "../hooks/useOneAtATime";

interface Props {
  /** Opens the file dialog; resolves once its files are added (or none were chosen). */
  onPickFiles(): Promise<unknown>;
  /** Adds the links the field holds (one, or several pasted at once);
   * resolves to whether they were added (then the field is cleared, unless
   * it holds other text by then). */
  onAddLinks(urls: string[]): Promise<boolean>;
  /** The quality songs added now separate with (`null`: as in Settings). */
  preset: Preset | null;
  onPresetChange(preset: Preset | null): void;
}

/**
 * Invisible characters a paste can carry at a link's ends (byte order mark,
 * zero-width space and joiners, directional marks, embeddings, overrides
 * and isolates, word joiner, soft hyphen, the Arabic letter mark): the
 * ones the backend's `link::trim_link` takes off too.
 */
const INVISIBLE = "\ufeff\u200b-\u200f\u202a-\u202e\u2060-\u2069\u00ad\u061c";
const ENDS = new RegExp(`^[\\s${INVISIBLE}]+|[\\s${INVISIBLE}]+$`, "g");

/** `text` without white space or invisible characters at either end. */
export function trimLink(text: string): string {
  return text.replace(ENDS, "");
}

/** Whether `text` is a web link (what the field takes). */
export function isLink(text: string): boolean {
  return /^https?:\/\/\S/i.test(trimLink(text));
}

/**
 * The links in `text`: one, or several pasted at once (lines of links that
 * the one-line field joined with spaces, or a list separated by commas or
 * spaces). `null` when any part is not a link: the field takes links only.
 */
export function linksIn(text: string): string[] | null {
  // (A comma inside a link stays: only one before "http" separates.)
  const links = trimLink(text)
    .split(/\s+|,(?=\s*https?:\/\/)/i)
    .map(trimLink)
    .filter(Boolean);
  return links.length > 0 && links.every(isLink) ? links : null;
}

/**
 * "Add files…" (native dialog), a field for a link, and the quality they get.
 * Files come from the dialog, a drop or "Open with": the app adds only files
 * given to it that way, so the field takes links, not paths.
 */
export function AddBar({ onPickFiles, onAddLinks, preset, onPresetChange }: Props) {
  const [value, setValue] = useState("");
  const [busy, setBusy] = useState(false);
  const [picking, runPick] = useOneAtATime();
  const [hint, setHint] = useState(false);
  // Set at once (state shows at the next render): a second Enter before it
  // must not add twice. (A double click on "Add files…" opens one dialog:
  // `useOneAtATime`.)
  const addingNow = useRef(false);

  async function pick() {
    await runPick(onPickFiles);
  }

  async function submit(event: FormEvent) {
    event.preventDefault();
    if (addingNow.current) return;
    const text = trimLink(value);
    if (!text) return;
    const links = linksIn(text);
    if (!links) {
      setHint(true);
      return;
    }
    setHint(false);
    addingNow.current = true;
    setBusy(true);
    try {
      // A link pasted while this one was looked at stays in the field.
      if (await onAddLinks(links)) setValue((current) => (trimLink(current) === text ? "" : current));
    } finally {
      addingNow.current = false;
      setBusy(false);
    }
  }

  return (
    <div className="add-bar">
      <button type="button" className="button button--primary" onClick={() => void pick()} disabled={picking}>
        Add files…
      </button>
      <form className="add-bar__form" onSubmit={submit}>
        <input
          className="input add-bar__input"
          type="text"
          aria-label="Link"
          aria-describedby={hint ? "add-bar-hint" : undefined}
          placeholder="Paste a link (https://…)"
          value={value}
          onChange={(e) => {
            setValue(e.target.value);
            setHint(false);
          }}
          spellCheck={false}
          autoComplete="off"
        />
        <button type="submit" className="button" disabled={busy || !value.trim()}>
          Add
        </button>
      </form>
      {hint && (
        <p id="add-bar-hint" className="add-bar__hint" role="status" data-testid="add-bar-hint">
          This field takes links (http:// or https://). Add files with Add files…, by dropping them on this window,
          or by opening them with Stemroom.
        </p>
      )}
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

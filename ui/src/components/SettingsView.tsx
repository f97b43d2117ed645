import { useEffect, useRef, useState, type FormEvent, type ReactNode } from "react";
import { useBackend } from "../backend";
import type { Device, GpuSupport, ModelStatus, Program, Settings } from "../bindings";
import { errorText } from "../errors";
import { formatBytes, listWords, PRESETS, providerLabel } from "../format";
import type { AppInfoState } from "../hooks/useAppInfo";
import { useOneAtATime } from "../hooks/useOneAtATime";
import { Alert } from "./Alert";
import { FormatField } from "./FormatField";
import { GpuSupportPanel } from "./GpuSupportPanel";
import { LinksInstall } from "./LinksInstall";
import { ModelInstall } from "./ModelInstall";
import { ModelManager } from "./ModelManager";
import { ServerPanel } from "./ServerPanel";

const NOT_SAVED = "The settings were not saved";

/** A helper program: its chosen file (or "found automatically"), what was found, and the buttons that change it. */
function ProgramField(props: {
  id: string;
  label: string;
  value: string | null;
  /** Opens the native file dialog (`true`) or goes back to finding it (`false`). */
  onChoose: (pick: boolean) => void;
  status: string;
  children?: ReactNode;
}) {
  const { id, label, value, onChoose, status, children } = props;
  return (
    <div className="field" role="group" aria-labelledby={`${id}-label`}>
      <span id={`${id}-label`} className="field__label">
        {label}
      </span>
      <div className="path-picker">
        <code className="path-picker__path" data-testid={`${id}-path`}>
          {value ?? "Found automatically"}
        </code>
        <button type="button" className="button" onClick={() => onChoose(true)}>
          Choose…
        </button>
        {value !== null && (
          <button type="button" className="button" onClick={() => onChoose(false)}>
            Find automatically
          </button>
        )}
      </div>
      <p id={`${id}-help`} className="field__help" data-testid={`${id}-status`}>
        {status}
      </p>
      {children}
    </div>
  );
}

type NumberKey = "shifts" | "overlap" | "concurrentJobs" | "maxDownloadMb" | "maxDownloadMinutes";
/** Settings as edited: numbers stay text until saved. */
type Draft = Omit<Settings, NumberKey> & Record<NumberKey, string>;

interface NumberField {
  key: NumberKey;
  label: string;
  min: number;
  max: number;
  step: number;
  help: string;
}

const NUMBER_FIELDS: NumberField[] = [
  {
    key: "shifts",
    label: "Extra passes (shifts)",
    min: 0,
    max: 20,
    step: 1,
    help: "Passes with the song shifted a little, averaged: slightly cleaner stems, each one adds a full pass.",
  },
  {
    key: "overlap",
    label: "Overlap",
    min: 0,
    max: 0.99,
    step: 0.05,
    help: "How much neighbouring segments overlap (0 to 0.99). More overlap is smoother and slower.",
  },
  {
    key: "concurrentJobs",
    label: "Concurrent jobs",
    min: 1,
    max: 8,
    step: 1,
    help: "Songs separated at the same time. One already uses every processor core.",
  },
];

const LINK_FIELDS: NumberField[] = [
  {
    key: "maxDownloadMb",
    label: "Largest download (MB)",
    min: 1,
    max: 100_000,
    step: 1,
    help: "Links to bigger files are refused before they fill the disk (1 GB by default).",
  },
  {
    key: "maxDownloadMinutes",
    label: "Longest download (minutes)",
    min: 1,
    max: 1440,
    step: 1,
    help: "Longer videos and streams are refused before downloading (3 hours by default). Live streams always are.",
  },
];

/** A number input with its help line. */
function NumberInput({ field, value, onChange }: { field: NumberField; value: string; onChange: (v: string) => void }) {
  const { key, label, min, max, step, help } = field;
  return (
    <div className="field">
      <label htmlFor={key}>{label}</label>
      <input
        id={key}
        className="input input--number"
        type="number"
        inputMode={step < 1 ? "decimal" : "numeric"}
        min={min}
        max={max}
        step={step}
        aria-describedby={`${key}-help`}
        value={value}
        onChange={(e) => onChange(e.target.value)}
      />
      <p id={`${key}-help`} className="field__help">
        {help}
      </p>
    </div>
  );
}

const DEVICES: { value: Device; label: string }[] = [
  { value: "auto", label: "Automatic" },
  { value: "cpu", label: "CPU" },
  { value: "cuda", label: "CUDA" },
];

function toDraft(settings: Settings): Draft {
  return {
    ...settings,
    shifts: String(settings.shifts),
    overlap: String(settings.overlap),
    concurrentJobs: String(settings.concurrentJobs),
    maxDownloadMb: String(settings.maxDownloadMb),
    maxDownloadMinutes: String(settings.maxDownloadMinutes),
  };
}

/** The settings to save, or why a field is not a number in its range
 * (whole where its step is: the backend takes those as integers, and would
 * refuse -5 or 1.5 with a message about types, not the field). */
function fromDraft(draft: Draft, saved: Settings | null): Settings | string {
  const numbers = {} as Record<NumberKey, number>;
  for (const { key, label, min, max, step } of [...NUMBER_FIELDS, ...LINK_FIELDS]) {
    // Shifts and overlap are hidden while a preset is chosen (it sets
    // them): what was typed there before is not checked, and the saved
    // values stay.
    if (draft.preset !== null && (key === "shifts" || key === "overlap") && saved) {
      numbers[key] = saved[key];
      continue;
    }
    const value = Number(draft[key]);
    if (draft[key].trim() === "" || !Number.isFinite(value)) return `${label} must be a number.`;
    const whole = step >= 1;
    if ((whole && !Number.isInteger(value)) || value < min || value > max) {
      return `${label} must be ${whole ? "a whole number" : "a number"} from ${min} to ${max} (got ${draft[key].trim()}).`;
    }
    numbers[key] = value;
  }
  return { ...draft, ...numbers };
}

function modelState(model: ModelStatus): string {
  if (!model.installed) return "not installed";
  return model.verified ? "installed and verified" : "installed";
}

interface Props {
  app: AppInfoState;
}

export function SettingsView({ app }: Props) {
  const backend = useBackend();
  const [draft, setDraft] = useState<Draft | null>(null);
  const [loadError, setLoadError] = useState<string | null>(null);
  const [error, setError] = useState<{ title: string; text: string } | null>(null);
  const [saved, setSaved] = useState(false);
  const [saving, setSaving] = useState(false);
  // The library folder's dialog and move are under way.
  const [movingLibrary, runMove] = useOneAtATime();
  // One program dialog at a time (a double click opened two, and the one
  // closed last decided).
  const [, runChoose] = useOneAtATime();
  const [gpu, setGpu] = useState<GpuSupport | null>(null);
  // The settings as last loaded or saved.
  const lastSaved = useRef<Settings | null>(null);

  useEffect(() => {
    backend.getSettings().then(
      (settings) => {
        lastSaved.current = settings;
        setDraft(toDraft(settings));
      },
      (e: unknown) => setLoadError(errorText(e)),
    );
  }, [backend]);

  if (loadError) return <Alert title="The settings could not be loaded">{loadError}</Alert>;
  if (!draft) return null;

  const { info } = app;
  const models = info?.models ?? [];
  const model = models.find((m) => m.id === draft.model);

  function change(changes: Partial<Draft>) {
    setDraft((current) => current && { ...current, ...changes });
    setSaved(false);
  }

  /** A row of number fields, each edited as text until saved. */
  function numberRow(fields: NumberField[]) {
    const values = draft as Draft;
    return (
      <div className="field-row">
        {fields.map((field) => (
          <NumberInput
            key={field.key}
            field={field}
            value={values[field.key]}
            onChange={(v) => change({ [field.key]: v })}
          />
        ))}
      </div>
    );
  }

  // The folder and the programs are chosen in native dialogs and saved by
  // the app at once; the draft only shows them (Save keeps them as they are).
  // Saved already: shown without touching "Settings saved" or the other
  // fields' edits, and an earlier failure to choose is over.
  function chosen(changes: Partial<Draft>, failedTitle: string) {
    setDraft((current) => current && { ...current, ...changes });
    setError((current) => (current?.title === failedTitle ? null : current));
  }

  async function pickLibraryDir() {
    const failed = "The folder could not be chosen";
    // The dialog, then the move of unfinished work (minutes across disks):
    // one at a time.
    await runMove(async () => {
      try {
        const saved = await backend.pickLibraryDir();
        if (saved !== null) chosen({ libraryDir: saved.libraryDir }, failed);
      } catch (e) {
        setError({ title: failed, text: errorText(e) });
      }
    });
  }

  function chooseProgram(program: Program, pick: boolean) {
    return runChoose(async () => {
      const failed = "The program could not be chosen";
      try {
        const saved = await backend.chooseProgram(program, pick);
        chosen(program === "ytdlp" ? { ytdlpPath: saved.ytdlpPath } : { ffmpegPath: saved.ffmpegPath }, failed);
        void app.refresh();
      } catch (e) {
        setError({ title: failed, text: errorText(e) });
      }
    });
  }

  async function save(event: FormEvent) {
    event.preventDefault();
    if (!draft) return;
    const settings = fromDraft(draft, lastSaved.current);
    if (typeof settings === "string") {
      setError({ title: NOT_SAVED, text: settings });
      return;
    }
    setSaving(true);
    setError(null);
    try {
      const now = await backend.saveSettings(settings);
      lastSaved.current = now;
      setDraft(toDraft(now));
      setSaved(true);
      void app.refresh();
    } catch (e) {
      setError({ title: NOT_SAVED, text: errorText(e) });
    } finally {
      setSaving(false);
    }
  }

  return (
    <form className="settings" onSubmit={save} noValidate>
      <p className="muted">
        Separation settings apply to songs added after saving. The library folder and the programs are saved as soon
        as they are chosen.
      </p>

      <section className="settings__group" aria-labelledby="settings-model">
        <h2 id="settings-model" className="settings__heading">
          Separation
        </h2>
        <fieldset className="field preset-choice">
          <legend className="field__label">Quality</legend>
          {[...PRESETS, { value: null, label: "Custom", help: "Choose the model, extra passes and overlap yourself." }].map(
            (p) => (
              <label key={p.label} className="preset-choice__option">
                <input
                  type="radio"
                  name="preset"
                  checked={draft.preset === p.value}
                  onChange={() => change({ preset: p.value })}
                />
                <span className="preset-choice__label">{p.label}</span>
                <span className="field__help">{p.help}</span>
              </label>
            ),
          )}
        </fieldset>

        {draft.preset === null && (
          <div className="field">
            <label htmlFor="model">Model</label>
            <select id="model" className="input" value={draft.model} onChange={(e) => change({ model: e.target.value })}>
              {!model && <option value={draft.model}>{draft.model}</option>}
              {models.map((m) => (
                <option key={m.id} value={m.id}>
                  {m.id} ({modelState(m)})
                </option>
              ))}
            </select>
            {model && (
              <div className="field__help" data-testid="model-help">
                <p>
                  Splits each song into {listWords(model.sources)} · {formatBytes(model.bytes)} · {modelState(model)}
                </p>
                <details>
                  <summary>Details</summary>
                  <p>{model.description}</p>
                </details>
              </div>
            )}
          </div>
        )}
        {model && !model.installed && <ModelInstall model={model} downloads={app.downloads} />}
        <ModelManager models={models} downloads={app.downloads} />

        <div className="field">
          <label htmlFor="device">Device</label>
          <select
            id="device"
            className="input"
            aria-describedby="device-help"
            value={draft.device}
            onChange={(e) => change({ device: e.target.value as Device })}
          >
            {DEVICES.map((d) => (
              <option key={d.value} value={d.value}>
                {d.label}
              </option>
            ))}
          </select>
          <p id="device-help" className="field__help">
            {info?.providerInUse
              ? `Separating on: ${providerLabel(info.providerInUse)}`
              : "Stemroom picks the GPU or the CPU when the first song starts."}
          </p>
          {draft.device === "cuda" && gpu && !gpu.usable && (
            <p className="field__help field__help--warning" data-testid="device-warning">
              CUDA cannot run on this computer, so separations set to CUDA will fail. Choose Automatic to use the GPU
              when it can run and the CPU otherwise.
            </p>
          )}
        </div>
        <GpuSupportPanel onChange={setGpu} />

        {numberRow(draft.preset === null ? NUMBER_FIELDS : NUMBER_FIELDS.filter((f) => f.key === "concurrentJobs"))}
      </section>

      <section className="settings__group" aria-labelledby="settings-output">
        <h2 id="settings-output" className="settings__heading">
          Output
        </h2>
        <div className="field" role="group" aria-labelledby="library-label">
          <span id="library-label" className="field__label">
            Library location
          </span>
          <div className="path-picker">
            <code className="path-picker__path">{draft.libraryDir ?? info?.libraryDir ?? "Default folder"}</code>
            <button type="button" className="button" onClick={pickLibraryDir} disabled={movingLibrary}>
              {movingLibrary ? "Choosing…" : "Change…"}
            </button>
          </div>
        </div>
        <FormatField value={draft.format} onChange={(format) => change({ format })} />
      </section>

      <section className="settings__group" aria-labelledby="settings-links">
        <h2 id="settings-links" className="settings__heading">
          Links
        </h2>
        <ProgramField
          id="ytdlp"
          label="yt-dlp program"
          value={draft.ytdlpPath}
          onChoose={(pick) => void chooseProgram("ytdlp", pick)}
          status={
            info?.ytdlp.found
              ? `yt-dlp ${info.ytdlp.version} at ${info.ytdlp.path}`
              : `Links need yt-dlp: ${info?.ytdlp.problem ?? "checking…"}`
          }
        >
          {info?.ytdlp.found && (
            <p className="field__help" data-testid="ytdlp-youtube">
              {info.ytdlp.jsRuntime && info.ytdlp.ejs
                ? `YouTube support: ${info.ytdlp.jsRuntime}, ${info.ytdlp.ejs}`
                : (info.ytdlp.problem ?? "YouTube support: checking…")}
            </p>
          )}
        </ProgramField>
        {info && (!info.ytdlp.found || info.ytdlp.problem !== null) && !draft.ytdlpPath && (
          <LinksInstall onInstalled={() => void app.refresh()} />
        )}
        {numberRow(LINK_FIELDS)}
      </section>

      <section className="settings__group" aria-labelledby="settings-formats">
        <h2 id="settings-formats" className="settings__heading">
          More file formats
        </h2>
        <ProgramField
          id="ffmpeg"
          label="ffmpeg program"
          value={draft.ffmpegPath}
          onChoose={(pick) => void chooseProgram("ffmpeg", pick)}
          status={
            info?.ffmpeg.found
              ? `ffmpeg ${info.ffmpeg.version ?? ""} at ${info.ffmpeg.path}: AC-3, WMA, HE-AAC and other formats open too.`
              : "Built in: WAV, AIFF, FLAC, MP3, Ogg, Opus, M4A (AAC, ALAC), WebM/MKV. Installing ffmpeg adds AC-3, WMA, HE-AAC and more."
          }
        />
      </section>

      <ServerPanel />

      {error && (
        <Alert title={error.title} onDismiss={() => setError(null)}>
          {error.text}
        </Alert>
      )}
      <div className="settings__actions">
        <button type="submit" className="button button--primary" disabled={saving}>
          {saving ? "Saving…" : "Save"}
        </button>
        <p role="status" className="muted">
          {saved ? "Settings saved." : ""}
        </p>
      </div>
    </form>
  );
}

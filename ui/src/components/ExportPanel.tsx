import { useEffect, useRef, useState } from "react";
import { toBackendError, useBackend } from "../backend";
import type { ExportDest, ExportRate, ExportWhat, LoopRegion, MixControls, OnClash, OutputFormat } from "../bindings";
import { errorText } from "../errors";
import { loadExportPrefs, loadPickedDest, saveExportPrefs, savePickedDest } from "../exportPrefs";
import { fileName } from "../format";
import { PRESETS, presetControls, presetsFor, type PresetId } from "../timeline";
import { isStretched, tempoText, transposeText } from "./TempoPitch";
import { useOneAtATime } from "../hooks/useOneAtATime";
import { Alert } from "./Alert";
import { FormatField } from "./FormatField";
import { ProgressBar } from "./ProgressBar";
import { focusLost } from "../focus";

type Kind = "stems" | "mix" | "zip";
type MixChoice = "heard" | PresetId;

interface Props {
  songId: number;
  stems: string[];
  /** The player's current controls ("what I hear"). */
  controls: MixControls;
  loop: LoopRegion | null;
  /** The song's own export folder, shown until another is chosen. */
  defaultDir: string;
}

/** Where the export goes, with the path shown for it. */
type Dest = { dest: ExportDest; path: string };

/** Export chosen stems, a mix (what I hear, or a preset) or a zip, with progress and cancel. */
export function ExportPanel({ songId, stems, controls, loop, defaultDir }: Props) {
  const backend = useBackend();
  // What was chosen for the last song (kind, mix, format, rate; a folder
  // picked earlier in this run of the app).
  const [remembered] = useState(loadExportPrefs);
  const [kind, setKind] = useState<Kind>(remembered.kind);
  const [chosen, setChosen] = useState<string[]>(stems);
  // The presets this song's stems make ("Minus drums" needs a drums stem);
  // a remembered one it cannot make gives way to what the player plays.
  const presets = presetsFor(stems);
  const [mix, setMix] = useState<MixChoice>(
    remembered.mix === "heard" || presets.includes(remembered.mix) ? remembered.mix : "heard",
  );
  const [onlyLoop, setOnlyLoop] = useState(false);
  const [format, setFormat] = useState<OutputFormat>(remembered.format);
  const [rate, setRate] = useState<"original" | "44100" | "48000">(remembered.rate);
  const [dest, setDest] = useState<Dest>(() => loadPickedDest() ?? { dest: { kind: "songFolder" }, path: defaultDir });
  // A preset this song cannot make ("Minus drums" of a vocals/no_vocals
  // song) gave way to "What I hear" for this song only: the remembered
  // choice stays for the next song until the person picks another mix.
  const [mixPicked, setMixPicked] = useState(false);
  const mixToRemember = mixPicked ? mix : remembered.mix;
  useEffect(
    () => saveExportPrefs({ kind, mix: mixToRemember, format, rate }),
    [kind, mixToRemember, format, rate],
  );
  /** Files that already exist, while the user decides what to do. */
  const [clash, setClash] = useState<string | null>(null);
  // The question was about the files of the options it was asked for:
  // another format, folder or choice of stems names other files, so
  // "Replace" must not apply to them unasked.
  useEffect(() => setClash(null), [kind, chosen, mix, onlyLoop, format, rate, dest]);
  // A loop cleared: the next one is not exported alone unless asked again.
  useEffect(() => {
    if (loop === null) setOnlyLoop(false);
  }, [loop]);
  // The song's own folder as the song knows it now (a song opened while it
  // separated learns its folder when it is filed).
  const destPath = dest.dest.kind === "songFolder" ? defaultDir : dest.path;
  const [running, setRunning] = useState(false);
  const [fraction, setFraction] = useState<number | null>(null);
  // The files of the last export, and the folder they went to (the
  // folder chosen may change after it).
  const [files, setFiles] = useState<string[] | null>(null);
  const [filesDest, setFilesDest] = useState<ExportDest>({ kind: "songFolder" });
  // What the backend said about the files (a mix limited at full scale).
  const [warning, setWarning] = useState<string | null>(null);
  /** What went wrong, with the alert's title (the export, or the folder). */
  const [error, setError] = useState<{ title: string; text: string } | null>(null);
  // An export still running when the panel goes (back to the library, the
  // song closed) is cancelled: nothing would show its end, and the next
  // export would be refused as "already running".
  const exporting = useRef(false);
  useEffect(() => {
    exporting.current = running;
  }, [running]);
  useEffect(
    () => () => {
      if (exporting.current) void backend.cancelExport().catch(() => {});
    },
    [backend],
  );
  // The panel sits under the lanes: bring what the export says (progress,
  // the question, the files, the error) into view, however small the window.
  const outcome = useRef<HTMLDivElement>(null);
  useEffect(() => {
    if (running || clash || files || error) outcome.current?.scrollIntoView?.({ block: "nearest" });
  }, [running, clash, files, error]);

  const stretched = isStretched(controls.tempo ?? 1, controls.transpose ?? 0);

  function what(): ExportWhat {
    switch (kind) {
      case "stems":
        return { kind: "stems", stems: chosen };
      case "zip":
        return { kind: "zip" };
      case "mix":
        return mix === "heard"
          ? { kind: "mix", label: "mix", controls }
          : {
              kind: "mix",
              label: PRESETS[mix].label.replace(/ \(.*\)$/, ""),
              // A preset's stems at the player's speed and pitch.
              controls: { ...presetControls(stems, mix), tempo: controls.tempo ?? 1, transpose: controls.transpose ?? 0 },
            };
    }
  }

  // Focus goes back to Export when the clash question is dismissed (it
  // was disabled while asked: the focus cannot wait there).
  const exportButton = useRef<HTMLButtonElement>(null);
  const refocus = useRef(false);
  function dismissClash() {
    refocus.current = true;
    setClash(null);
  }
  useEffect(() => {
    if (clash === null && refocus.current) {
      refocus.current = false;
      exportButton.current?.focus();
    }
  }, [clash]);

  // The Export button disables itself while the export runs, and the
  // cancel button goes when it ends: focus moves between the two (only
  // when it would otherwise be lost), not to the page's start.
  const cancelButton = useRef<HTMLButtonElement>(null);
  const wasRunning = useRef(running);
  useEffect(() => {
    if (wasRunning.current === running) return;
    wasRunning.current = running;
    if (focusLost()) (running ? cancelButton : exportButton).current?.focus();
  }, [running]);

  async function start(onClash: OnClash) {
    const exportRate: ExportRate = rate === "original" ? { kind: "original" } : { kind: "hz", hz: Number(rate) };
    setRunning(true);
    setFraction(0);
    setFiles(null);
    setWarning(null);
    setError(null);
    setClash(null);
    try {
      const to = dest.dest;
      const written = await backend.exportSong(
        songId,
        { what: what(), region: onlyLoop && loop ? loop : null, format, rate: exportRate, dest: to, onClash },
        (p) => (p.warning ? setWarning(p.warning) : setFraction(p.fraction)),
      );
      setFiles(written);
      setFilesDest(to);
    } catch (e) {
      const err = toBackendError(e);
      if (err.code === "exists") setClash(err.message);
      // Cancel export: the user's choice, not a failure (nothing was written).
      else if (err.code === "cancelled") return;
      else setError({ title: "The export failed", text: errorText(e, "export") });
    } finally {
      setRunning(false);
    }
  }

  // One folder dialog at a time (a double click opened two).
  const [choosing, runChoose] = useOneAtATime();
  function choose() {
    return runChoose(async () => {
      try {
        const picked = await backend.pickExportDir();
        if (picked) {
          const next = { dest: { kind: "picked" as const, handle: picked.handle }, path: picked.path };
          setDest(next);
          savePickedDest(next);
        }
      } catch (e) {
        setError({ title: "The folder could not be chosen", text: errorText(e, "export") });
      }
    });
  }

  const nothingChosen = kind === "stems" && chosen.length === 0;

  return (
    <section className="export" aria-labelledby="export-title">
      <h3 id="export-title" className="song__subtitle">
        Export
      </h3>
      <fieldset className="export__what">
        <legend>What</legend>
        <label className="check">
          <input type="radio" name="export-kind" checked={kind === "mix"} onChange={() => setKind("mix")} />
          One mix
        </label>
        {kind === "mix" && (
          <select
            className="input"
            aria-label="Mix"
            value={mix}
            onChange={(e) => {
              setMix(e.target.value as MixChoice);
              setMixPicked(true);
            }}
          >
            <option value="heard">What I hear (current volumes, pans, mutes and solos)</option>
            {presets.map((id) => (
              <option key={id} value={id}>
                {PRESETS[id].label}
              </option>
            ))}
          </select>
        )}
        {kind === "mix" && mix === "heard" && controls.original && (
          <p className="muted" data-testid="export-ab">
            You are listening to the original (A): the export is the stems' mix (B), with these volumes, pans, mutes and
            solos.
          </p>
        )}
        {kind === "mix" && stretched && (
          <p className="muted" data-testid="export-speed">
            At {tempoText(controls.tempo ?? 1)} speed, pitch {transposeText(controls.transpose ?? 0)}, as in the player.
          </p>
        )}
        <label className="check">
          <input type="radio" name="export-kind" checked={kind === "stems"} onChange={() => setKind("stems")} />
          Separate stem files
        </label>
        {kind === "stems" && (
          <div className="export__stems">
            {stems.map((stem) => (
              <label key={stem} className="check">
                <input
                  type="checkbox"
                  checked={chosen.includes(stem)}
                  onChange={(e) =>
                    setChosen((c) => (e.target.checked ? stems.filter((s) => s === stem || c.includes(s)) : c.filter((s) => s !== stem)))
                  }
                />
                {stem}
              </label>
            ))}
          </div>
        )}
        <label className="check">
          <input type="radio" name="export-kind" checked={kind === "zip"} onChange={() => setKind("zip")} />
          Zip of all stems
        </label>
      </fieldset>
      <label className="check">
        <input
          type="checkbox"
          checked={onlyLoop && loop !== null}
          disabled={loop === null}
          onChange={(e) => setOnlyLoop(e.target.checked)}
        />
        Only the loop region{loop === null && " (drag on the ruler to make one)"}
      </label>
      <FormatField value={format} onChange={setFormat} idPrefix="export-" label="Format" />
      <div className="field">
        <label htmlFor="export-rate">Sample rate</label>
        <select
          id="export-rate"
          className="input"
          value={rate}
          onChange={(e) => setRate(e.target.value as typeof rate)}
        >
          <option value="original">Original</option>
          <option value="44100">44.1 kHz</option>
          <option value="48000">48 kHz</option>
        </select>
      </div>
      <div className="field" role="group" aria-labelledby="export-dir-label">
        <span id="export-dir-label" className="field__label">
          Export folder
        </span>
        <div className="path-picker">
          <code className="path-picker__path" data-testid="export-dir">
            {destPath}
          </code>
          <button type="button" className="button" onClick={() => void choose()} disabled={running || choosing}>
            Choose…
          </button>
          {dest.dest.kind === "picked" && (
            <button
              type="button"
              className="button button--quiet"
              disabled={running}
              onClick={() => {
                setDest({ dest: { kind: "songFolder" }, path: defaultDir });
                savePickedDest(null);
              }}
            >
              Song folder
            </button>
          )}
        </div>
      </div>
      <div ref={outcome} className="export__outcome">
        {clash && (
          <div
            className="alert"
            role="alertdialog"
            aria-labelledby="clash-title"
            aria-describedby="clash-text"
            onKeyDown={(e) => {
              if (e.key === "Escape") {
                e.stopPropagation();
                dismissClash();
              }
            }}
          >
            <p id="clash-title" className="alert__title">
              Already exported
            </p>
            <p id="clash-text">{clash.charAt(0).toUpperCase() + clash.slice(1)}.</p>
            <div className="song__actions">
              {/* The question takes the focus the disabled Export button had. */}
              <button type="button" className="button button--primary" autoFocus onClick={() => void start("keepBoth")}>
                Keep both
              </button>
              <button type="button" className="button" onClick={() => void start("replace")}>
                Replace
              </button>
              <button type="button" className="button button--quiet" onClick={dismissClash}>
                Cancel
              </button>
            </div>
          </div>
        )}
        {error && (
          <Alert title={error.title} onDismiss={() => setError(null)}>
            {error.text}
          </Alert>
        )}
        <div className="song__actions">
          <button
            ref={exportButton}
            type="button"
            className="button button--primary"
            disabled={running || nothingChosen || clash !== null}
            onClick={() => void start("refuse")}
          >
            Export
          </button>
          {running && (
            <button
              ref={cancelButton}
              type="button"
              className="button"
              onClick={() =>
                backend
                  .cancelExport()
                  .catch((e: unknown) => setError({ title: "The export could not be cancelled", text: errorText(e) }))
              }
            >
              Cancel export
            </button>
          )}
        </div>
        {running && <ProgressBar percent={(fraction ?? 0) * 100} label="Export progress" />}
        {files && (
          <div className="export__done" role="status">
            <p>Exported {files.length === 1 ? "1 file" : `${files.length} files`}:</p>
            {warning && (
              <p className="export__warning" data-testid="export-warning">
                {warning}
              </p>
            )}
            <ul>
              {files.map((f) => (
                <li key={f} data-testid="exported-file" title={f}>
                  {fileName(f)}
                </li>
              ))}
            </ul>
            <button
              type="button"
              className="button"
              onClick={() =>
                backend
                  .openFolder({ kind: "export", id: songId, dest: filesDest })
                  .catch((e: unknown) =>
                    setError({ title: "The export folder could not be opened", text: errorText(e, "export") }),
                  )
              }
            >
              Open export folder
            </button>
            <button
              type="button"
              className="button lane__drag--export"
              // A drag needs a pointer: the keyboard has Open export folder beside it.
              tabIndex={-1}
              aria-label={`Drag ${files.length === 1 ? "it" : "them"} out (mouse only; Open export folder does it from the keyboard)`}
              title="Drag the exported files into a DAW or a file manager (mouse only: from the keyboard, use Open export folder)"
              onPointerDown={(e) => {
                // The native drag follows the pressed button, so it starts on the press.
                if (e.button !== 0) return;
                e.preventDefault();
                backend
                  .dragOut(songId, { kind: "lastExport" })
                  .catch((err: unknown) => setError({ title: "The files could not be dragged", text: errorText(err) }));
              }}
            >
              ⠿ Drag {files.length === 1 ? "it" : "them"} out
            </button>
          </div>
        )}
      </div>
    </section>
  );
}

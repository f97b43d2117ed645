import type { OutputFormat } from "../bindings";

const CHOICES: { key: string; label: string; format: OutputFormat }[] = [
  { key: "wav-int16", label: "WAV 16-bit", format: { kind: "wav", depth: "int16" } },
  { key: "wav-int24", label: "WAV 24-bit", format: { kind: "wav", depth: "int24" } },
  { key: "wav-float32", label: "WAV 32-bit float", format: { kind: "wav", depth: "float32" } },
  { key: "flac-16", label: "FLAC 16-bit", format: { kind: "flac", bits: 16 } },
  { key: "flac-24", label: "FLAC 24-bit", format: { kind: "flac", bits: 24 } },
  { key: "mp3", label: "MP3", format: { kind: "mp3", kbps: 320 } },
];

const MP3_RATES = [128, 160, 192, 224, 256, 320];

function keyOf(format: OutputFormat): string {
  switch (format.kind) {
    case "wav":
      return `wav-${format.depth}`;
    case "flac":
      return `flac-${format.bits}`;
    case "mp3":
      return "mp3";
  }
}

interface Props {
  value: OutputFormat;
  onChange(format: OutputFormat): void;
  /** Prefix of the fields' ids (one page may hold two of these). */
  idPrefix?: string;
  label?: string;
}

/** The stem file format, with the MP3 bit rate when MP3 is chosen. */
export function FormatField({ value, onChange, idPrefix = "", label = "Stem format" }: Props) {
  function choose(key: string) {
    const choice = CHOICES.find((c) => c.key === key);
    if (!choice) return;
    // Keep the chosen bit rate when switching to MP3 again.
    onChange(choice.format.kind === "mp3" && value.kind === "mp3" ? value : choice.format);
  }

  return (
    <div className="field-row">
      <div className="field">
        <label htmlFor={`${idPrefix}format`}>{label}</label>
        <select id={`${idPrefix}format`} className="input" value={keyOf(value)} onChange={(e) => choose(e.target.value)}>
          {CHOICES.map((c) => (
            <option key={c.key} value={c.key}>
              {c.label}
            </option>
          ))}
        </select>
      </div>
      {value.kind === "mp3" && (
        <div className="field">
          <label htmlFor={`${idPrefix}bitrate`}>MP3 bit rate</label>
          <select
            id={`${idPrefix}bitrate`}
            className="input"
            value={value.kbps}
            onChange={(e) => onChange({ kind: "mp3", kbps: Number(e.target.value) })}
          >
            {MP3_RATES.map((kbps) => (
              <option key={kbps} value={kbps}>
                {kbps} kbps
              </option>
            ))}
          </select>
        </div>
      )}
    </div>
  );
}

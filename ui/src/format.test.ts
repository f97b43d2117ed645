import { describe, expect, it } from "vitest";
import { bpmText, fileName, formatBytes, formatDuration, formatEta, formatLabel, listWords, stateLabel, thumbnailSrc } from "./format";

describe("formatDuration", () => {
  it.each([
    [0, "0:00"],
    [7.4, "0:07"],
    [59.6, "1:00"],
    [187, "3:07"],
    [3600, "1:00:00"],
    [3725, "1:02:05"],
  ])("%s s is %s", (seconds, text) => {
    expect(formatDuration(seconds)).toBe(text);
  });
});

describe("formatEta", () => {
  it.each([
    [0, "almost done"],
    [0.4, "almost done"],
    [45, "about 45 s left"],
    [60, "about 1 min left"],
    [80, "about 1 min 20 s left"],
    [599, "about 9 min 59 s left"],
    [754, "about 12 min left"],
    [3600, "about 1 h left"],
    [3960, "about 1 h 6 min left"],
  ])("%s s is %s", (seconds, text) => {
    expect(formatEta(seconds)).toBe(text);
  });
});

describe("stateLabel", () => {
  it("names every state in plain words", () => {
    expect(stateLabel({ state: "queued" })).toBe("Queued");
    expect(stateLabel({ state: "decoding" })).toBe("Reading the file");
    // Segments are the engine's business: the row shows a percentage.
    expect(stateLabel({ state: "separating", segment: 3, total: 11 })).toBe("Separating");
    expect(stateLabel({ state: "encoding" })).toBe("Finishing");
    expect(stateLabel({ state: "done" })).toBe("Done");
    expect(stateLabel({ state: "failed", code: "bad_input", message: "Not audio." })).toBe("Failed: Not audio.");
    expect(stateLabel({ state: "cancelled" })).toBe("Cancelled");
  });
});

describe("small helpers", () => {
  it("takes the file name from either kind of path", () => {
    expect(fileName("/music/a/Song.mp3")).toBe("Song.mp3");
    expect(fileName("C:\\Music\\Song.flac")).toBe("Song.flac");
    expect(fileName("/music/folder/")).toBe("folder");
  });

  it("formats sizes and output formats", () => {
    expect(formatBytes(174_263_526)).toBe("174 MB");
    expect(formatBytes(2_500_000_000)).toBe("2.5 GB");
    // Rounded up into the next unit: said in it.
    expect(formatBytes(999_600_000)).toBe("1.0 GB");
    expect(formatBytes(999_600)).toBe("1 MB");
    expect(formatBytes(999_400)).toBe("999 kB");
    expect(formatBytes(0)).toBe("0 kB");
    expect(formatBytes(12)).toBe("1 kB");
    expect(formatLabel({ kind: "wav", depth: "float32" })).toBe("WAV 32-bit float");
    expect(formatLabel({ kind: "flac", bits: 24 })).toBe("FLAC 24-bit");
    expect(formatLabel({ kind: "mp3", kbps: 192 })).toBe("MP3 192 kbps");
  });
});

describe("thumbnailSrc", () => {
  it("names the app's thumb scheme by job id, as WebKitGTK and WebView2 expect", () => {
    expect(thumbnailSrc(7, "Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/605.1.15")).toBe("thumb://localhost/7");
    expect(thumbnailSrc(7, "Mozilla/5.0 (Windows NT 10.0; Win64; x64) Edg/131")).toBe("http://thumb.localhost/7");
  });
});

describe("listWords", () => {
  it("joins with commas and a final and", () => {
    expect(listWords(["drums", "bass", "other", "vocals"])).toBe("drums, bass, other and vocals");
    expect(listWords(["vocals"])).toBe("vocals");
    expect(listWords([])).toBe("");
  });
});

describe("bpmText", () => {
  it("shows the tempo kept to 0.001 with one decimal", () => {
    expect(bpmText({ bpm: 117.647, beatOffset: 0.1, key: null })).toBe("117.6 BPM");
    expect(bpmText({ bpm: 119.98, beatOffset: null, key: null })).toBe("120 BPM");
    expect(bpmText({ bpm: null, beatOffset: null, key: null })).toBeNull();
  });
});

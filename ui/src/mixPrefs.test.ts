import { beforeEach, describe, expect, it } from "vitest";
import { loadMix, saveMix } from "./mixPrefs";

const controls = { stems: [{ gain: 1, mute: false, solo: false }], master: 1 };

describe("saved mixes", () => {
  beforeEach(() => localStorage.clear());

  it("bring a loop and view saved while the song separated (44.1 kHz) to its files' rate", () => {
    saveMix(1, {
      controls,
      loop: { start: 60 * 44_100, end: 90 * 44_100 },
      view: { start: 0, end: 120 * 44_100 },
      sampleRate: 44_100,
    });
    const at48 = loadMix(1, 1, 200 * 48_000, 48_000);
    expect(at48?.loop).toEqual({ start: 60 * 48_000, end: 90 * 48_000 });
    expect(at48?.view).toEqual({ start: 0, end: 120 * 48_000 });
    // The same rate, or a mix saved before rates were: as saved.
    expect(loadMix(1, 1, 200 * 44_100, 44_100)?.loop).toEqual({ start: 60 * 44_100, end: 90 * 44_100 });
    saveMix(2, { controls, loop: { start: 10, end: 20 }, view: null });
    expect(loadMix(2, 1, 100, 48_000)?.loop).toEqual({ start: 10, end: 20 });
  });
});

import { describe, expect, it } from "vitest";
import {
  audible,
  clampWindow,
  formatTime,
  frameAt,
  presetControls,
  presetsFor,
  rulerLabel,
  rulerTicks,
  unityControls,
  xOf,
  zoomWindow,
} from "./timeline";

describe("timeline", () => {
  it("zooms around an anchor that stays where it is on screen", () => {
    const total = 441_000;
    const w = { start: 0, end: total };
    const z = zoomWindow(w, 0.5, 110_250, total);
    expect(z.end - z.start).toBe(220_500);
    expect(xOf(110_250, 1000, z)).toBeCloseTo(xOf(110_250, 1000, w));
    // Zooming out past the song fits it; the window never leaves the song.
    expect(zoomWindow(z, 10, 400_000, total)).toEqual({ start: 0, end: total });
    expect(clampWindow({ start: 430_000, end: 450_000 }, total)).toEqual({ start: 421_000, end: total });
    // Zooming in stops at a minimum window.
    const tiny = zoomWindow({ start: 1000, end: 1100 }, 0.1, 1050, total);
    expect(tiny.end - tiny.start).toBe(2048);
  });

  it("maps pixels to frames and back", () => {
    const w = { start: 44_100, end: 88_200 };
    expect(frameAt(0, 441, w)).toBe(44_100);
    expect(frameAt(441, 441, w)).toBe(88_200);
    expect(frameAt(-5, 441, w)).toBe(44_100);
    expect(frameAt(220.5, 441, w)).toBe(66_150);
    expect(xOf(66_150, 441, w)).toBeCloseTo(220.5);
  });

  it("puts ruler marks at round times at least 80 px apart", () => {
    const ticks = rulerTicks({ start: 0, end: 60 * 44_100 }, 800, 44_100);
    expect(ticks.slice(0, 3)).toEqual([0, 10, 20]);
    expect(rulerTicks({ start: 44_100, end: 2 * 44_100 }, 1000, 44_100).slice(0, 2)).toEqual([1, 1.1]);
    // Zoomed in closer (the closest zoom is 2048 frames): marks a
    // hundredth or more apart, labelled in hundredths, no two alike.
    const close = rulerTicks({ start: 44_100, end: 1.5 * 44_100 }, 1000, 44_100);
    expect(close.map((t) => rulerLabel(t, 0.05))).toEqual([
      "0:01.00",
      "0:01.05",
      "0:01.10",
      "0:01.15",
      "0:01.20",
      "0:01.25",
      "0:01.30",
      "0:01.35",
      "0:01.40",
      "0:01.45",
    ]);
    const closest = rulerTicks({ start: 44_100, end: 44_100 + 2048 }, 1000, 44_100);
    expect(closest.length).toBeGreaterThan(1);
    const labels = closest.map((t) => rulerLabel(t, 0.01));
    expect(new Set(labels).size).toBe(labels.length);
    expect(rulerLabel(61, 1)).toBe("1:01");
    expect(rulerLabel(61.5, 0.5)).toBe("1:01.5");
  });

  it("leaves out a last mark whose label would be cut at the right edge", () => {
    // 60 s over 800 px: a mark every 10 s; 60 s sits at 800 px, 50 s at 667 px.
    const ticks = rulerTicks({ start: 0, end: 60 * 44_100 }, 800, 44_100);
    expect(ticks[ticks.length - 1]).toBe(50);
    expect(rulerTicks({ start: 0, end: 60 * 44_100 }, 800, 44_100, 80, 200)).toEqual([0, 10, 20, 30, 40]);
  });

  it("formats times", () => {
    expect(formatTime(75.26)).toBe("1:15");
    expect(formatTime(75.26, true)).toBe("1:15.3");
    expect(formatTime(5.04, true)).toBe("0:05.0");
    // Rounding carries into the minutes; hours from an hour on.
    expect(formatTime(59.96, true)).toBe("1:00.0");
    expect(formatTime(119.96, true)).toBe("2:00.0");
    expect(formatTime(59.96)).toBe("0:59");
    expect(formatTime(4500)).toBe("1:15:00");
    expect(formatTime(3599.97, true)).toBe("1:00:00.0");
    expect(formatTime(Number.NaN)).toBe("0:00");
  });

  it("applies the desk rules and presets", () => {
    const stems = ["drums", "bass", "other", "vocals"];
    const inst = presetControls(stems, "instrumental");
    expect(stems.filter((_, i) => audible(inst, i))).toEqual(["drums", "bass", "other"]);
    expect(stems.filter((_, i) => audible(presetControls(stems, "acappella"), i))).toEqual(["vocals"]);
    expect(presetsFor(stems)).toEqual(["instrumental", "acappella", "minusDrums", "minusBass"]);
    // Two stems: only the presets of the chosen source, its complement the rest.
    const two = ["vocals", "no_vocals"];
    expect(presetsFor(two)).toEqual(["instrumental", "acappella"]);
    expect(two.filter((_, i) => audible(presetControls(two, "instrumental"), i))).toEqual(["no_vocals"]);
    expect(two.filter((_, i) => audible(presetControls(two, "acappella"), i))).toEqual(["vocals"]);
    expect(presetsFor(["drums", "no_drums"])).toEqual(["minusDrums"]);
    const c = unityControls(4);
    c.stems[1]!.solo = true;
    c.stems[3]!.solo = true;
    c.stems[3]!.mute = true;
    expect(stems.filter((_, i) => audible(c, i))).toEqual(["bass"]);
  });
});

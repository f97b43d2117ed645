import "@testing-library/jest-dom/vitest";
import { cleanup } from "@testing-library/react";
import { afterEach } from "vitest";

afterEach(() => {
  cleanup();
  // Remembered export choices (exportPrefs.ts) do not carry over between tests.
  localStorage.clear();
  sessionStorage.clear();
});

// jsdom does not scroll (and says "not implemented"): a quiet stand-in tests can spy on.
window.scrollTo = (() => {}) as typeof window.scrollTo;
Element.prototype.scrollIntoView = function scrollIntoView() {};

// jsdom has no canvas: waveforms draw nothing in tests (and say nothing).
HTMLCanvasElement.prototype.getContext = (() => null) as typeof HTMLCanvasElement.prototype.getContext;

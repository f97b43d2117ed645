import { toBackendError } from "./backend";
import type { ErrorCode } from "./bindings";

/** Where an error happened, when that changes what to do about it. */
export type ErrorContext = "job" | "export" | "model";

/**
 * What the user can do about an error with this code, if anything.
 *
 * `message` is the backend's own text: two codes cover errors whose advice
 * differs, and the backend's message already says what to do for those
 * (`missing_runtime` for a GPU that cannot be used, as `stemroom -d cuda`
 * exits 5; `missing_tool` for ffmpeg and python3 as well as yt-dlp).
 */
export function hintFor(code: ErrorCode, context: ErrorContext = "job", message = ""): string | null {
  switch (code) {
    case "missing_model":
      // (The model manager's own install failing says what failed.)
      return context === "model" ? null : "Download the model in Settings, then try again.";
    case "missing_runtime":
      // The engine's `DeviceUnavailable`: ONNX Runtime loaded, CUDA did not.
      // A job's message says it already ("The GPU cannot be used: …").
      if (message.startsWith("The GPU cannot be used")) return null;
      if (message.startsWith("device cuda is not available")) {
        return "To separate on the CPU instead, choose Automatic or CPU as the device in Settings, then retry.";
      }
      return "ONNX Runtime is missing: download it from the banner at the top of the window, then retry.";
    case "output":
      if (context === "model") return "Check that the disk holding Stemroom's cache folder has room and can be written.";
      return context === "export"
        ? "Check that the export folder exists and that you can write to it, or choose another folder."
        : "Check that the library folder exists and that you can write to it.";
    case "missing_tool":
      // ffmpeg for a format (`NeedsFfmpeg`) and python3 for yt-dlp's
      // install name themselves and say how to install them.
      // So does a model the recipe could not make (its pip or python).
      if (context === "model" || /\bffmpeg\b|\bpython3\b/.test(message)) return null;
      return "yt-dlp is needed for links: install it in Settings under Links (one button), or set the path of your own yt-dlp there.";
    case "download":
      return "Check the link and the network connection, then retry.";
    case "audio_device":
      return "Check the system's sound settings (is an output device connected and enabled?).";
    case "bad_input":
    case "exists":
    case "invalid_options":
    case "cancelled":
    case "internal":
      return null;
  }
}

/** One plain sentence or two for any error a backend call rejected with. */
export function errorText(error: unknown, context: ErrorContext = "job"): string {
  const { code, message } = toBackendError(error);
  const text = code === "internal" ? `Something went wrong: ${message}` : message;
  return [text, hintFor(code, context, message)].filter(Boolean).join(" ");
}

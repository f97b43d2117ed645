import { toBackendError } from "./backend";
import type { ErrorCode } from "./bindings";

/** Where an error happened, when that changes what to do about it. */
export type ErrorContext = "job" | "export";

/** What the user can do about an error with this code, if anything. */
export function hintFor(code: ErrorCode, context: ErrorContext = "job"): string | null {
  switch (code) {
    case "missing_model":
      return "Download the model in Settings, then try again.";
    case "missing_runtime":
      return "ONNX Runtime is missing: download it from the banner at the top of the window, then retry.";
    case "output":
      return context === "export"
        ? "Check that the export folder exists and that you can write to it, or choose another folder."
        : "Check that the library folder exists and that you can write to it.";
    case "missing_tool":
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
  return [text, hintFor(code, context)].filter(Boolean).join(" ");
}

import { toBackendError } from "./backend";
import type { ErrorCode } from "./bindings";

/** What the user can do about an error with this code, if anything. */
export function hintFor(code: ErrorCode): string | null {
  switch (code) {
    case "missing_model":
      return "Download the model in Settings, then try again.";
    case "missing_runtime":
      return "ONNX Runtime is missing: run `bash scripts/setup.sh`, then restart Stemroom.";
    case "output":
      return "Check that the library folder exists and that you can write to it.";
    case "missing_tool":
      return "yt-dlp is needed for links: run `bash scripts/setup.sh`, or set its path in Settings.";
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
export function errorText(error: unknown): string {
  const { code, message } = toBackendError(error);
  const text = code === "internal" ? `Something went wrong: ${message}` : message;
  return [text, hintFor(code)].filter(Boolean).join(" ");
}

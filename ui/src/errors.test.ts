import { describe, expect, it } from "vitest";
import { BackendError, toBackendError } from "./backend";
import { errorText } from "./errors";

describe("errors", () => {
  it("wraps what invoke rejects with", () => {
    const error = toBackendError({ code: "bad_input", message: "Not an audio file." });
    expect(error).toBeInstanceOf(BackendError);
    expect(error.code).toBe("bad_input");
    expect(toBackendError({ code: "nonsense", message: "x" }).code).toBe("internal");
    expect(toBackendError("boom").message).toBe("boom");
  });

  it("adds what to do, chosen by code", () => {
    expect(errorText(new BackendError("bad_input", "Not an audio file."))).toBe("Not an audio file.");
    expect(errorText(new BackendError("missing_runtime", "No ORT."))).toContain("download it from the banner");
    expect(errorText(new BackendError("missing_runtime", "No ORT."))).not.toContain("setup.sh");
    // An export that cannot be written names the export folder, not the library.
    expect(errorText(new BackendError("output", "cannot write output /x: denied"), "export")).toContain(
      "export folder",
    );
    expect(errorText(new BackendError("output", "cannot write output /x: denied"))).toContain("library folder");
    expect(errorText(new BackendError("missing_model", "Gone."))).toContain("Download the model in Settings");
    expect(errorText(new BackendError("internal", "disk on fire"))).toBe("Something went wrong: disk on fire");
    // A GPU that cannot be used is not a missing ONNX Runtime (its own
    // message says why); the way round it is the CPU.
    const gpu = errorText(
      new BackendError("missing_runtime", "device cuda is not available: No NVIDIA GPU driver was found"),
    );
    expect(gpu).not.toContain("ONNX Runtime is missing");
    expect(gpu).toContain("choose Automatic or CPU");
    const job = "The GPU cannot be used: no driver. Choose Automatic or CPU in Settings to separate on the CPU.";
    expect(errorText(new BackendError("missing_runtime", job))).toBe(job);
    // The model manager's own failure does not send the person to it.
    expect(errorText(new BackendError("missing_model", "x.onnx could not be written."), "model")).toBe(
      "x.onnx could not be written.",
    );
    // ffmpeg and python3 are not yt-dlp: their messages say what to install.
    const ffmpeg = "a.wma: WMA is not among Stemroom's built-in decoders. Installing ffmpeg adds it";
    expect(errorText(new BackendError("missing_tool", ffmpeg))).toBe(ffmpeg);
    expect(errorText(new BackendError("missing_tool", "python3 is needed: not found"))).not.toContain("yt-dlp");
    expect(errorText(new BackendError("missing_tool", "yt-dlp was not found"))).toContain("install it in Settings");
    // A model the recipe could not make is no yt-dlp matter either.
    const recipe = "cannot make the model htdemucs_int8: cannot run pip";
    expect(errorText(new BackendError("missing_tool", recipe), "model")).toBe(recipe);
  });
});

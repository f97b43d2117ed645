import { screen, within } from "@testing-library/react";
import { describe, expect, it, vi } from "vitest";
import { renderApp } from "../test/renderApp";
import { BackendError } from "../backend";
import { mockModel } from "../mockBackend";

async function openSettings(options: Parameters<typeof renderApp>[0] = {}) {
  const app = renderApp(options);
  await app.user.click(screen.getByRole("tab", { name: "Settings" }));
  await screen.findByRole("group", { name: "Quality" });
  return app;
}

/** Settings with the model, shifts and overlap chosen one by one. */
const CUSTOM = { preset: null } as const;

describe("Settings", () => {
  it("loads the saved settings", async () => {
    await openSettings({
      settings: {
        ...CUSTOM,
        device: "cpu",
        shifts: 2,
        overlap: 0.5,
        concurrentJobs: 3,
        format: { kind: "flac", bits: 24 },
      },
      providerInUse: "cpu",
    });
    expect(screen.getByRole("combobox", { name: "Model" })).toHaveValue("htdemucs");
    expect(screen.getByRole("option", { name: "htdemucs (installed and verified)" })).toBeInTheDocument();
    expect(screen.getByRole("combobox", { name: "Device" })).toHaveValue("cpu");
    expect(screen.getByRole("combobox", { name: "Device" })).toHaveAccessibleDescription("Separating on: CPU");
    expect(screen.getByRole("spinbutton", { name: "Extra passes (shifts)" })).toHaveValue(2);
    expect(screen.getByRole("spinbutton", { name: "Overlap" })).toHaveValue(0.5);
    expect(screen.getByRole("spinbutton", { name: "Concurrent jobs" })).toHaveValue(3);
    expect(screen.getByRole("combobox", { name: "Stem format" })).toHaveValue("flac-24");
    expect(screen.getByRole("group", { name: "Library location" })).toHaveTextContent("/home/you/Music/Stemroom");
  });

  it("asks for one library folder at a time, the button busy meanwhile", async () => {
    const { backend, user } = await openSettings();
    let finish: (v: null) => void = () => {};
    const pick = vi.spyOn(backend, "pickLibraryDir").mockImplementation(
      () => new Promise((resolve) => (finish = resolve)),
    );
    const change = screen.getByRole("button", { name: "Change…" });
    await user.click(change);
    expect(screen.getByRole("button", { name: "Choosing…" })).toBeDisabled();
    await user.click(screen.getByRole("button", { name: "Choosing…" }));
    expect(pick).toHaveBeenCalledTimes(1);
    finish(null);
    expect(await screen.findByRole("button", { name: "Change…" })).toBeEnabled();
  });

  it("says when no job has run yet, and describes the model in plain words", async () => {
    await openSettings({ settings: CUSTOM });
    expect(screen.getByText("Stemroom picks the GPU or the CPU when the first song starts.")).toBeInTheDocument();
    const help = screen.getByTestId("model-help");
    expect(help).toHaveTextContent("Splits each song into drums, bass, other and vocals");
    // The technical description waits behind a disclosure.
    expect(screen.getByText("Hybrid Transformer Demucs v4, 4 sources").closest("details")).not.toHaveAttribute("open");
  });

  it("saves changed settings", async () => {
    const { backend, user } = await openSettings();
    const save = vi.spyOn(backend, "saveSettings");

    // Balanced (the default) hides the parts it sets; Custom shows them.
    expect(screen.getByRole("radio", { name: /^Balanced/ })).toBeChecked();
    expect(screen.queryByRole("spinbutton", { name: "Extra passes (shifts)" })).not.toBeInTheDocument();
    await user.click(screen.getByRole("radio", { name: /^Custom/ }));
    await user.selectOptions(screen.getByRole("combobox", { name: "Device" }), "CUDA");
    const shifts = screen.getByRole("spinbutton", { name: "Extra passes (shifts)" });
    await user.clear(shifts);
    await user.type(shifts, "4");
    const overlap = screen.getByRole("spinbutton", { name: "Overlap" });
    await user.clear(overlap);
    await user.type(overlap, "0.4");
    await user.selectOptions(screen.getByRole("combobox", { name: "Stem format" }), "MP3");
    await user.selectOptions(screen.getByRole("combobox", { name: "MP3 bit rate" }), "192 kbps");
    await user.click(screen.getByRole("button", { name: "Change…" }));
    expect(screen.getByRole("group", { name: "Library location" })).toHaveTextContent("/home/you/Stems");
    const largest = screen.getByRole("spinbutton", { name: "Largest download (MB)" });
    expect(largest).toHaveValue(1074);
    expect(screen.getByRole("spinbutton", { name: "Longest download (minutes)" })).toHaveValue(180);
    await user.clear(largest);
    await user.type(largest, "500");
    await user.click(screen.getByRole("button", { name: "Save" }));

    expect(save).toHaveBeenCalledWith({
      preset: null,
      model: "htdemucs",
      device: "cuda",
      shifts: 4,
      overlap: 0.4,
      libraryDir: "/home/you/Stems",
      format: { kind: "mp3", kbps: 192 },
      concurrentJobs: 1,
      ytdlpPath: null,
      ffmpegPath: null,
      maxDownloadMb: 500,
      maxDownloadMinutes: 180,
    });
    expect(await screen.findByRole("status")).toHaveTextContent("Settings saved.");
    expect(await backend.getSettings()).toMatchObject({ device: "cuda", shifts: 4 });
  });

  it("does not check the fields a preset hides: what was typed there before is dropped", async () => {
    const { backend, user } = await openSettings();
    const save = vi.spyOn(backend, "saveSettings");
    const before = await backend.getSettings();
    await user.click(screen.getByRole("radio", { name: /^Custom/ }));
    const shifts = screen.getByRole("spinbutton", { name: "Extra passes (shifts)" });
    await user.clear(shifts);
    await user.type(shifts, "1.5");
    await user.click(screen.getByRole("radio", { name: /^Balanced/ }));
    await user.click(screen.getByRole("button", { name: "Save" }));
    expect(await screen.findByRole("status")).toHaveTextContent("Settings saved.");
    expect(save).toHaveBeenCalledWith(expect.objectContaining({ preset: "balanced", shifts: before.shifts }));
  });

  it("chooses a quality preset, which the next songs separate with", async () => {
    const { backend, user } = await openSettings();
    const quality = screen.getByRole("group", { name: "Quality" });
    for (const name of ["Fast", "Balanced", "Best", "Custom"]) {
      expect(within(quality).getByRole("radio", { name: new RegExp(`^${name}`) })).toBeInTheDocument();
    }
    expect(within(quality).getByText(/within 0.15 dB of Balanced/)).toBeInTheDocument();
    await user.click(within(quality).getByRole("radio", { name: /^Fast/ }));
    expect(screen.queryByRole("combobox", { name: "Model" })).not.toBeInTheDocument();
    expect(screen.getByRole("spinbutton", { name: "Concurrent jobs" })).toBeInTheDocument();
    await user.click(screen.getByRole("button", { name: "Save" }));
    expect(await screen.findByRole("status")).toHaveTextContent("Settings saved.");
    expect(await backend.getSettings()).toMatchObject({ preset: "fast", shifts: 1, overlap: 0.25 });
    // The next song separates with the preset's model, shifts and overlap.
    const { added } = await backend.addPaths(["/home/you/Music/Next.flac"]);
    expect(added[0]?.options).toMatchObject({ preset: "fast", model: "htdemucs_int8", shifts: 0, overlap: 0.1 });
  });

  it("shows what the backend refused", async () => {
    const { backend, user } = await openSettings({ settings: CUSTOM });
    vi.spyOn(backend, "saveSettings").mockRejectedValue(
      new BackendError("invalid_options", "the library folder must be a full path such as /home/you/Music/Stemroom"),
    );
    await user.click(screen.getByRole("button", { name: "Save" }));

    const alert = await screen.findByRole("alert");
    expect(alert).toHaveTextContent("The settings were not saved");
    expect(alert).toHaveTextContent("the library folder must be a full path");
    expect(screen.getByRole("status")).toHaveTextContent("");
  });

  it("refuses numbers out of a field's range, or not whole where it must be, before saving", async () => {
    const { backend, user } = await openSettings({ settings: CUSTOM });
    const save = vi.spyOn(backend, "saveSettings");
    const cases: [string, string, string][] = [
      ["Extra passes (shifts)", "25", "Extra passes (shifts) must be a whole number from 0 to 20 (got 25)."],
      ["Largest download (MB)", "-5", "Largest download (MB) must be a whole number from 1 to 100000 (got -5)."],
      ["Concurrent jobs", "1.5", "Concurrent jobs must be a whole number from 1 to 8 (got 1.5)."],
      ["Overlap", "1.2", "Overlap must be a number from 0 to 0.99 (got 1.2)."],
    ];
    for (const [name, typed, message] of cases) {
      const field = screen.getByRole("spinbutton", { name });
      const before = (field as HTMLInputElement).value;
      await user.clear(field);
      await user.type(field, typed);
      await user.click(screen.getByRole("button", { name: "Save" }));
      expect(await screen.findByRole("alert")).toHaveTextContent(message);
      await user.clear(field);
      await user.type(field, before);
    }
    expect(save).not.toHaveBeenCalled();
  });

  it("refuses a number field left empty", async () => {
    const { backend, user } = await openSettings({ settings: CUSTOM });
    const save = vi.spyOn(backend, "saveSettings");
    await user.clear(screen.getByRole("spinbutton", { name: "Overlap" }));
    await user.click(screen.getByRole("button", { name: "Save" }));
    expect(await screen.findByRole("alert")).toHaveTextContent("Overlap must be a number.");
    expect(save).not.toHaveBeenCalled();
  });

  it("offers to download a missing model", async () => {
    // (The main model is there: a missing one would open the welcome screen.)
    const { backend, user } = await openSettings({
      settings: { ...CUSTOM, model: "htdemucs_ft" },
      models: [
        mockModel(),
        mockModel({
          id: "htdemucs_ft",
          description: "Fine-tuned Hybrid Transformer Demucs v4",
          installed: false,
          verified: false,
          path: null,
          removable: false,
          problem: "The model htdemucs_ft.onnx is not installed.",
          fetchCommand: "stemroom models --fetch htdemucs_ft",
        }),
      ],
    });
    const fetchModel = vi.spyOn(backend, "fetchModel");
    const panel = screen.getByRole("tabpanel", { name: "Settings" });
    expect(within(panel).getByRole("option", { name: "htdemucs_ft (not installed)" })).toBeInTheDocument();
    expect(within(panel).getAllByText("The model htdemucs_ft.onnx is not installed.").length).toBeGreaterThan(0);
    expect(within(panel).getAllByText("stemroom models --fetch htdemucs_ft").length).toBeGreaterThan(0);
    const install = within(panel).getByTestId("model-install-htdemucs_ft");
    await user.click(within(install).getByRole("button", { name: "Download model" }));
    expect(fetchModel).toHaveBeenCalledWith("htdemucs_ft", expect.any(Function));
    expect(
      await within(panel).findByRole("option", { name: "htdemucs_ft (installed and verified)" }),
    ).toBeInTheDocument();
  });
});

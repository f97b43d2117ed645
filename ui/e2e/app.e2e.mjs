// End-to-end test of the real Stemroom app: tauri-driver + WebKitWebDriver
// drive the release binary under Xvfb (scripts/e2e.sh sets that up).
//
// Adds the real Falcon 69 mixture, waits for the real model to finish it,
// checks the four stems in the library, restarts the app on the same data
// directory and finds the song again. Screenshots go to docs/screenshots/.
//
// Environment: STEMROOM_APP (binary), STEMROOM_E2E_INPUT (audio file),
// TAURI_DRIVER (tauri-driver binary), STEMROOM_E2E_SHOTS (screenshot dir).
import { spawn } from "node:child_process";
import { mkdirSync } from "node:fs";
import { setTimeout as sleep } from "node:timers/promises";
import { remote } from "webdriverio";

const app = process.env.STEMROOM_APP;
const input = process.env.STEMROOM_E2E_INPUT;
const shots = process.env.STEMROOM_E2E_SHOTS ?? "docs/screenshots";
const driverBin = process.env.TAURI_DRIVER ?? "tauri-driver";
if (!app || !input) throw new Error("STEMROOM_APP and STEMROOM_E2E_INPUT must be set");
mkdirSync(shots, { recursive: true });

const driver = spawn(driverBin, ["--port", "4444"], { stdio: ["ignore", "inherit", "inherit"] });
let failed = false;

function check(cond, what) {
  if (!cond) throw new Error(`check failed: ${what}`);
  console.log(`ok - ${what}`);
}

async function session() {
  for (let i = 0; ; i++) {
    try {
      return await remote({
        hostname: "127.0.0.1",
        port: 4444,
        logLevel: "warn",
        connectionRetryCount: 0,
        capabilities: { "tauri:options": { application: app } },
      });
    } catch (e) {
      if (i >= 30) throw e;
      await sleep(500);
    }
  }
}

async function tab(b, name) {
  const t = await b.$(`[role="tab"]=${name}`);
  await t.waitForExist({ timeout: 20000 });
  await t.click();
}

async function shot(b, name) {
  await sleep(300);
  await b.saveScreenshot(`${shots}/${name}.png`);
  console.log(`screenshot ${shots}/${name}.png`);
}

try {
  let b = await session();
  await tab(b, "Queue");
  const field = await b.$('[aria-label="File path or link"]');
  await field.waitForExist({ timeout: 20000 });
  await field.setValue(input);
  await (await b.$("button=Add")).click();

  const row = await b.$('[data-testid="job-row"]');
  await row.waitForExist({ timeout: 20000 });
  const id = await row.getAttribute("data-job-id");
  check(Boolean(id), "the song appears in the queue");
  // Watch it separate: wait for a running state with a progress bar.
  await b.waitUntil(async () => /separating/.test((await row.getAttribute("data-state")) ?? ""), {
    timeout: 120000,
    interval: 250,
    timeoutMsg: "job never started separating",
  });
  const bar = await row.$('[role="progressbar"]');
  check(await bar.isExisting(), "a progress bar shows while separating");
  await shot(b, "queue");

  // Done jobs leave the queue for the library.
  await b.waitUntil(
    async () => {
      const r = await b.$(`[data-testid="job-row"][data-job-id="${id}"]`);
      if (!(await r.isExisting())) return true;
      const s = await r.getAttribute("data-state");
      if (s === "failed" || s === "cancelled") throw new Error(`job ended ${s}: ${await r.getText()}`);
      return s === "done";
    },
    { timeout: 600000, interval: 500, timeoutMsg: "job did not finish" },
  );
  await tab(b, "Library");
  const item = await b.$('[data-testid="library-item"]');
  await item.waitForExist({ timeout: 20000 });
  check((await item.getText()).includes("Falcon 69"), "the finished song is in the library");
  await (await item.$("button")).click().catch(async () => item.click());
  await b.waitUntil(async () => (await b.$$('[data-testid="stem"]')).length === 4, {
    timeout: 20000,
    timeoutMsg: "four stems not listed",
  });
  const stemEls = await b.$$('[data-testid="stem"]');
  const stems = [];
  for (let i = 0; i < stemEls.length; i++) stems.push(await stemEls[i].getText());
  for (const s of ["drums", "bass", "other", "vocals"]) {
    check(stems.some((t) => t.includes(s)), `stem ${s} listed`);
  }
  await shot(b, "library");
  await b.deleteSession();

  // Restart on the same data directory: the song is still there.
  b = await session();
  await tab(b, "Library");
  const again = await b.$('[data-testid="library-item"]');
  await again.waitForExist({ timeout: 20000 });
  check((await again.getText()).includes("Falcon 69"), "the song survives a restart");
  await b.deleteSession();
} catch (e) {
  failed = true;
  console.error(e);
} finally {
  driver.kill();
}
process.exit(failed ? 1 : 0);

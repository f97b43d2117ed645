// Helpers shared by the end-to-end scripts (app.e2e.mjs, package.e2e.mjs):
// tauri-driver, WebDriver sessions on the app, checks, clicks, screenshots
// and waiting for a job to finish.
import { spawn } from "node:child_process";
import { mkdirSync } from "node:fs";
import { setTimeout as sleep } from "node:timers/promises";
import { remote } from "webdriverio";

/** Start tauri-driver (`driverBin`) on port 4444; kill it when done. */
export function startDriver(driverBin) {
  return spawn(driverBin, ["--port", "4444"], { stdio: ["ignore", "inherit", "inherit"] });
}

/** Throw unless `cond`; print `ok - what` otherwise. */
export function check(cond, what) {
  if (!cond) throw new Error(`check failed: ${what}`);
  console.log(`ok - ${what}`);
}

/** A WebDriver session on the app at `application`, started with `args` (retried while the driver starts). */
export async function session(application, args = []) {
  for (let i = 0; ; i++) {
    try {
      return await remote({
        hostname: "127.0.0.1",
        port: 4444,
        logLevel: "warn",
        connectionRetryCount: 0,
        capabilities: { "tauri:options": { application, args } },
      });
    } catch (e) {
      if (i >= 30) throw e;
      await sleep(500);
    }
  }
}

/** Click an element scrolled to the middle of the window (at the top, the sticky header would take the click). */
export async function press(b, selector) {
  const el = await b.$(selector);
  await el.waitForExist({ timeout: 10000 });
  await el.scrollIntoView({ block: "center" });
  await el.click();
}

/** A screenshot function writing `<dir>/<name>.png`. */
export function screenshots(dir) {
  mkdirSync(dir, { recursive: true });
  return async (b, name) => {
    await sleep(300);
    await b.saveScreenshot(`${dir}/${name}.png`);
    console.log(`screenshot ${dir}/${name}.png`);
  };
}

/**
 * True when `e` is WebDriver's "stale element reference": the page replaced
 * the element between its lookup and its use. WebKitWebDriver reports it
 * even from a plain `$` while React re-renders the node (a progress bar
 * updated several times a second), so a poll that meets it has simply
 * looked at the wrong moment.
 */
export function isStale(e) {
  return /stale element/i.test(`${e?.name ?? ""} ${e?.message ?? e}`);
}

/**
 * `look` for a poll (`b.waitUntil`'s condition, or a look between waits):
 * a stale element counts as "not yet" (false) and the next poll looks
 * again; any other error is thrown.
 */
export function polling(look) {
  return async () => {
    try {
      return await look();
    } catch (e) {
      if (isStale(e)) return false;
      throw e;
    }
  };
}

/** Wait until queue job `id` is done (or has left the queue); a failed or cancelled one throws. */
export async function waitDone(b, id, timeout = 600000) {
  await b.waitUntil(
    polling(async () => {
      const r = await b.$(`[data-testid="job-row"][data-job-id="${id}"]`);
      if (!(await r.isExisting())) return true;
      const s = await r.getAttribute("data-state");
      if (s === "failed" || s === "cancelled") throw new Error(`job ended ${s}: ${await r.getText()}`);
      return s === "done";
    }),
    { timeout, interval: 500, timeoutMsg: `job ${id} did not finish` },
  );
}

/** Wait until a queue row's text includes `text`. */
export async function waitForRow(b, text, timeout = 30000) {
  await b.waitUntil(
    polling(async () => {
      for (const r of await b.$$('[data-testid="job-row"]')) if ((await r.getText()).includes(text)) return true;
      return false;
    }),
    { timeout, interval: 250, timeoutMsg: `no queue row with “${text}”` },
  );
}

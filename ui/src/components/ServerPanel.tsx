import { useEffect, useRef, useState } from "react";
import { useBackend } from "../backend";
import type { ServerInfo } from "../bindings";
import { errorText } from "../errors";
import { focusLost } from "../focus";
import { Alert } from "./Alert";

/**
 * Settings → HTTP service: start and stop the `stemroom serve` API on this
 * app's queue (loopback only), and show its address and token.
 */
export function ServerPanel() {
  const backend = useBackend();
  const [server, setServer] = useState<ServerInfo | null>(null);
  const [port, setPort] = useState("8000");
  const [busy, setBusy] = useState(false);
  const [error, setError] = useState<string | null>(null);
  const [copied, setCopied] = useState(false);
  // The status could not be read: Start still works (it says if the port
  // is taken), rather than staying disabled for good.
  const [statusFailed, setStatusFailed] = useState(false);

  useEffect(() => {
    backend.serverStatus().then(
      (s) => {
        setServer(s);
        setPort(String(s.port));
      },
      (e: unknown) => {
        setStatusFailed(true);
        setError(errorText(e));
      },
    );
  }, [backend]);

  // Start and Stop disable themselves, then give way to the other view:
  // focus goes to the button that undoes what was done (only when it would
  // otherwise be lost).
  const startButton = useRef<HTMLButtonElement>(null);
  const stopButton = useRef<HTMLButtonElement>(null);
  const running = server?.running ?? false;
  const wasBusy = useRef(busy);
  useEffect(() => {
    const ended = wasBusy.current && !busy;
    wasBusy.current = busy;
    if (ended && focusLost()) (running ? stopButton : startButton).current?.focus();
  }, [running, busy]);

  async function run(action: () => Promise<ServerInfo>) {
    setBusy(true);
    setError(null);
    setCopied(false);
    try {
      setServer(await action());
    } catch (e) {
      setError(errorText(e));
    } finally {
      setBusy(false);
    }
  }

  function start() {
    const n = Number(port);
    if (!Number.isInteger(n) || n < 1 || n > 65535) {
      setError("Choose a port from 1 to 65535.");
      return;
    }
    void run(() => backend.startServer(n));
  }

  async function copyToken() {
    if (!server?.token) return;
    try {
      await navigator.clipboard.writeText(server.token);
      setCopied(true);
    } catch {
      setError("The token could not be copied: select it and copy it by hand.");
    }
  }

  return (
    <section className="settings__group" aria-labelledby="settings-server">
      <h2 id="settings-server" className="settings__heading">
        HTTP service
      </h2>
      <p className="field__help">
        Lets scripts and other programs on this computer add songs and download stems over HTTP (the API of{" "}
        <code>stemroom serve</code>, see the README). Every request needs the token.
      </p>
      {server?.running ? (
        <div className="field" data-testid="server-running">
          <p>
            Running at <code data-testid="server-address">{server.address}</code>
          </p>
          <div className="path-picker">
            <code className="path-picker__path" data-testid="server-token">
              {server.token}
            </code>
            <button type="button" className="button" onClick={() => void copyToken()}>
              {copied ? "Copied" : "Copy token"}
            </button>
          </div>
          <p className="field__help">
            <code>
              curl -H &quot;Authorization: Bearer $TOKEN&quot; -F file=@song.mp3 {server.address}/upload
            </code>
          </p>
          <button
            ref={stopButton}
            type="button"
            className="button"
            disabled={busy}
            onClick={() => void run(() => backend.stopServer())}
          >
            {busy ? "Stopping…" : "Stop"}
          </button>
        </div>
      ) : (
        <div className="field-row">
          <div className="field">
            <label htmlFor="server-port">Port</label>
            <input
              id="server-port"
              className="input input--number"
              type="number"
              inputMode="numeric"
              min={1}
              max={65535}
              value={port}
              onChange={(e) => setPort(e.target.value)}
              onKeyDown={(e) => {
                // The panel sits inside the settings form: Enter here
                // starts the service instead of saving the settings.
                if (e.key === "Enter") {
                  e.preventDefault();
                  if (!busy && (server || statusFailed)) start();
                }
              }}
            />
          </div>
          <div className="field">
            <button
              ref={startButton}
              type="button"
              className="button"
              disabled={busy || (!server && !statusFailed)}
              onClick={start}
            >
              {busy ? "Starting…" : "Start"}
            </button>
          </div>
        </div>
      )}
      {error && (
        <Alert title="The HTTP service" onDismiss={() => setError(null)}>
          {error}
        </Alert>
      )}
    </section>
  );
}

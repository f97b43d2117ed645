import { useCallback, useEffect, useRef, useState } from "react";
import { toBackendError, useBackend } from "../backend";
import type { AppInfo, InstallEvent, ModelStatus } from "../bindings";
import { errorText } from "../errors";

/** Model installs in progress, their progress and failures, by model id. */
export interface ModelDownloads {
  busy: ReadonlySet<string>;
  /** Fraction downloaded (0 to 1) of each busy model; `null` while it is being checked or unpacked. */
  progress: Readonly<Record<string, number | null>>;
  errors: Readonly<Record<string, string>>;
  /** Download (or make) the model. */
  start(id: string): void;
  /** Install it from a file the user picks (the model or its package). */
  startFromFile(id: string): void;
  /** Stop model `id`'s running download (it resumes next time); a failure to is shown in its `errors`. */
  cancel(id: string): void;
  /** Remove the model's file from Stemroom's folder. */
  remove(id: string): void;
  /** Put away model `id`'s failure (it would stay beside a model installed since, say by a job). */
  dismiss(id: string): void;
}

export interface AppInfoState {
  info: AppInfo | null;
  error: string | null;
  refresh(): Promise<void>;
  downloads: ModelDownloads;
}

export function useAppInfo(): AppInfoState {
  const backend = useBackend();
  const [info, setInfo] = useState<AppInfo | null>(null);
  const [error, setError] = useState<string | null>(null);
  const [busy, setBusy] = useState<ReadonlySet<string>>(new Set());
  const [progress, setProgress] = useState<Record<string, number | null>>({});
  const [errors, setErrors] = useState<Record<string, string>>({});

  // The last request for what is installed: an earlier answer that comes
  // after it (app_info runs `yt-dlp --version`, seconds) is older news (a
  // model shown missing again after its install).
  const latest = useRef(0);
  // Refreshes not answered yet: a removal that overtakes one makes its
  // answer old news, and asks again for the rest of it.
  const pending = useRef(0);
  const refresh = useCallback(async () => {
    const mine = ++latest.current;
    pending.current += 1;
    try {
      const answer = await backend.appInfo();
      if (mine !== latest.current) return;
      setInfo(answer);
      setError(null);
    } catch (e) {
      if (mine === latest.current) setError(errorText(e));
    } finally {
      pending.current -= 1;
    }
  }, [backend]);

  const run = useCallback(
    (id: string, install: (onEvent: (event: InstallEvent) => void) => Promise<unknown>) => {
      // What a failed cancel said is old news once the install ends.
      const clearError = () => setErrors(({ [id]: _, ...rest }) => rest);
      setBusy((current) => new Set(current).add(id));
      clearError();
      setProgress((current) => ({ ...current, [id]: null }));
      const onEvent = (event: InstallEvent) => {
        const fraction = event.stage === "downloading" && event.total > 0 ? event.done / event.total : null;
        setProgress((current) => ({ ...current, [id]: fraction }));
      };
      install(onEvent)
        .then(
          () => {
            clearError();
            return refresh();
          },
          (e: unknown) => {
            // A cancel is the user's choice, not a failure to report.
            if (toBackendError(e).code !== "cancelled") setErrors((current) => ({ ...current, [id]: errorText(e, "model") }));
            else clearError();
          },
        )
        .finally(() => {
          setBusy((current) => {
            const next = new Set(current);
            next.delete(id);
            return next;
          });
          setProgress(({ [id]: _, ...rest }) => rest);
        });
    },
    [refresh],
  );

  const start = useCallback((id: string) => run(id, (onEvent) => backend.fetchModel(id, onEvent)), [backend, run]);
  const startFromFile = useCallback(
    (id: string) => run(id, (onEvent) => backend.fetchModelFromFile(id, onEvent)),
    [backend, run],
  );
  const cancel = useCallback(
    (id: string) => {
      backend
        .cancelModelFetch()
        .catch((e: unknown) => setErrors((current) => ({ ...current, [id]: errorText(e, "model") })));
    },
    [backend],
  );
  const remove = useCallback(
    (id: string) => {
      setErrors(({ [id]: _, ...rest }) => rest);
      // A refresh under way (after an install: yt-dlp, ONNX Runtime) is
      // passed over by this one, and its news with it: asked again below.
      const overtook = pending.current > 0;
      const mine = ++latest.current;
      backend.removeModel(id).then(
        (models: ModelStatus[]) => {
          if (mine === latest.current) setInfo((current) => (current ? { ...current, models } : current));
          if (mine !== latest.current || overtook) void refresh();
        },
        (e: unknown) => {
          setErrors((current) => ({ ...current, [id]: errorText(e, "model") }));
          // (A refresh this one passed over had news of its own.)
          void refresh();
        },
      );
    },
    [backend, refresh],
  );

  const dismiss = useCallback((id: string) => setErrors(({ [id]: _, ...rest }) => rest), []);

  useEffect(() => {
    void refresh();
  }, [refresh]);

  return {
    info,
    error,
    refresh,
    downloads: { busy, progress, errors, start, startFromFile, cancel, remove, dismiss },
  };
}

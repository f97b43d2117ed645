import { useCallback, useEffect, useState } from "react";
import { useBackend } from "../backend";
import type { AppInfo } from "../bindings";
import { errorText } from "../errors";

/** Model downloads in progress and their failures, by model id. */
export interface ModelDownloads {
  busy: ReadonlySet<string>;
  errors: Readonly<Record<string, string>>;
  start(id: string): void;
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
  const [errors, setErrors] = useState<Record<string, string>>({});

  const refresh = useCallback(async () => {
    try {
      setInfo(await backend.appInfo());
      setError(null);
    } catch (e) {
      setError(errorText(e));
    }
  }, [backend]);

  const start = useCallback(
    (id: string) => {
      setBusy((current) => new Set(current).add(id));
      setErrors(({ [id]: _, ...rest }) => rest);
      backend
        .fetchModel(id)
        .then(refresh, (e: unknown) => setErrors((current) => ({ ...current, [id]: errorText(e) })))
        .finally(() =>
          setBusy((current) => {
            const next = new Set(current);
            next.delete(id);
            return next;
          }),
        );
    },
    [backend, refresh],
  );

  useEffect(() => {
    void refresh();
  }, [refresh]);

  return { info, error, refresh, downloads: { busy, errors, start } };
}

/**
 * Adapts an async listener registration to an effect cleanup: the listener
 * is removed on cleanup, even when the registration resolves only after it.
 * `onError` hears a registration that failed before the cleanup (without
 * one, it is only logged).
 */
export function untilUnmount(registration: Promise<() => void>, onError?: (error: unknown) => void): () => void {
  let active = true;
  let stop: (() => void) | undefined;
  registration.then(
    (unlisten) => {
      if (active) stop = unlisten;
      else unlisten();
    },
    (error: unknown) => {
      if (!active) return;
      if (onError) onError(error);
      else console.error("Could not listen for app events", error);
    },
  );
  return () => {
    active = false;
    stop?.();
  };
}

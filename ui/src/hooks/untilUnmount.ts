/**
 * Adapts an async listener registration to an effect cleanup: the listener
 * is removed on cleanup, even when the registration resolves only after it.
 */
export function untilUnmount(registration: Promise<() => void>): () => void {
  let active = true;
  let stop: (() => void) | undefined;
  registration.then(
    (unlisten) => {
      if (active) stop = unlisten;
      else unlisten();
    },
    (error: unknown) => console.error("Could not listen for app events", error),
  );
  return () => {
    active = false;
    stop?.();
  };
}

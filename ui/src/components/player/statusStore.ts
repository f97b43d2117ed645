import { useSyncExternalStore } from "react";
import type { PlayerStatus } from "../../bindings";

/**
 * The player's status stream (~30 updates a second from the audio
 * callback's meters and playhead) kept outside React state: a component
 * reads only the part it shows, through {@link useStatus}, and re-renders
 * only when that part changes. Event handlers read {@link StatusStore.get}.
 */
export interface StatusStore {
  get(): PlayerStatus | null;
  set(status: PlayerStatus | null): void;
  subscribe(listener: () => void): () => void;
}

export function createStatusStore(): StatusStore {
  let current: PlayerStatus | null = null;
  const listeners = new Set<() => void>();
  return {
    get: () => current,
    set(status) {
      current = status;
      for (const l of listeners) l();
    },
    subscribe(listener) {
      listeners.add(listener);
      return () => listeners.delete(listener);
    },
  };
}

/**
 * One value derived from the status; the component re-renders when it
 * changes (`Object.is`), so selectors return primitives or objects that
 * the status itself holds (a meter's level).
 */
export function useStatus<T>(store: StatusStore, select: (s: PlayerStatus | null) => T): T {
  const snapshot = () => select(store.get());
  return useSyncExternalStore(store.subscribe, snapshot, snapshot);
}

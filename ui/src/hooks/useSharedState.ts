import { useCallback, useSyncExternalStore } from "react";
import type { Backend } from "../backend";

/**
 * State that outlives the component showing it, one value per key and per
 * backend (a test's mock backend starts empty): an install started on the
 * welcome screen keeps its progress, its Cancel and its result when the
 * same panel shows again in Settings.
 */
interface Slot {
  value: unknown;
  listeners: Set<() => void>;
}

const slots = new WeakMap<Backend, Map<string, Slot>>();

function slotOf(backend: Backend, key: string, initial: unknown): Slot {
  let byKey = slots.get(backend);
  if (!byKey) {
    byKey = new Map();
    slots.set(backend, byKey);
  }
  let slot = byKey.get(key);
  if (!slot) {
    slot = { value: initial, listeners: new Set() };
    byKey.set(key, slot);
  }
  return slot;
}

/** Like `useState`, shared by every component that uses `key` with `backend`. */
export function useSharedState<T>(backend: Backend, key: string, initial: T): [T, (next: T | ((prev: T) => T)) => void] {
  const slot = slotOf(backend, key, initial);
  const value = useSyncExternalStore(
    (listener) => {
      slot.listeners.add(listener);
      return () => slot.listeners.delete(listener);
    },
    () => slot.value as T,
  );
  const set = useCallback(
    (next: T | ((prev: T) => T)) => {
      slot.value = typeof next === "function" ? (next as (prev: T) => T)(slot.value as T) : next;
      for (const l of [...slot.listeners]) l();
    },
    [slot],
  );
  return [value, set];
}

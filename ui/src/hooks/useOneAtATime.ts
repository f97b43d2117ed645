import { useCallback, useRef, useState } from "react";

/**
 * A task the person starts with a button (a native dialog, a move) that
 * runs once at a time: `busy` for the button while it runs, and `run`,
 * which ignores a start while one is under way. The ref answers at once
 * (state shows only at the next render), so a double click before it does
 * not start a second one.
 */
export function useOneAtATime(): [busy: boolean, run: (task: () => Promise<unknown>) => Promise<void>] {
  const [busy, setBusy] = useState(false);
  const now = useRef(false);
  const run = useCallback(async (task: () => Promise<unknown>) => {
    if (now.current) return;
    now.current = true;
    setBusy(true);
    try {
      await task();
    } finally {
      now.current = false;
      setBusy(false);
    }
  }, []);
  return [busy, run];
}

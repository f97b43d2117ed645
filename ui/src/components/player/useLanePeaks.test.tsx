import { act, renderHook } from "@testing-library/react";
import type { ReactNode } from "react";
import { describe, expect, it, vi } from "vitest";
import { BackendProvider } from "../../backend";
import type { SongPeaks, SongView } from "../../bindings";
import { createMockBackend } from "../../mockBackend";
import { useLanePeaks } from "./usePlayer";

const view = { id: 1, streaming: false } as SongView;
/** Answer request `i` with `p`. */
function reply(pending: ((p: SongPeaks) => void)[], i: number, p: SongPeaks) {
  const answerIt = pending[i];
  if (!answerIt) throw new Error(`request ${i} was not sent`);
  answerIt(p);
}
const answer = (mark: number): SongPeaks => ({ lanes: [{ lane: "vocals", min: [-mark], max: [mark] }], ready: 1 });

/** A backend whose peaks answers wait until the test gives them (`pending`, in the order asked). */
function slowBackend() {
  const backend = createMockBackend();
  const pending: ((p: SongPeaks) => void)[] = [];
  vi.spyOn(backend, "songPeaks").mockImplementation(() => new Promise((resolve) => pending.push(resolve)));
  const wrapper = ({ children }: { children: ReactNode }) => (
    <BackendProvider backend={backend}>{children}</BackendProvider>
  );
  return { pending, wrapper };
}

describe("useLanePeaks", () => {
  it("draws each answer that is newer than the one shown, through a gesture faster than the answers", async () => {
    const { pending, wrapper } = slowBackend();
    const onError = vi.fn();
    const { result, rerender } = renderHook(
      ({ start }: { start: number }) => useLanePeaks(view, { start, end: start + 1000 }, 1, onError),
      { wrapper, initialProps: { start: 0 } },
    );
    // A scroll: three windows asked before any answer.
    rerender({ start: 100 });
    rerender({ start: 200 });
    expect(pending).toHaveLength(3);
    // The second answers first: drawn; the first, older, then is not.
    await act(async () => reply(pending, 1, answer(2)));
    expect(result.current.peaks?.[0]?.max).toEqual([2]);
    await act(async () => reply(pending, 0, answer(1)));
    expect(result.current.peaks?.[0]?.max).toEqual([2]);
    await act(async () => reply(pending, 2, answer(3)));
    expect(result.current.peaks?.[0]?.max).toEqual([3]);
    expect(onError).not.toHaveBeenCalled();
  });

  it("does not draw another song's answer", async () => {
    const { pending, wrapper } = slowBackend();
    const { result, rerender } = renderHook(
      ({ song }: { song: SongView }) => useLanePeaks(song, { start: 0, end: 1000 }, 1, () => {}),
      { wrapper, initialProps: { song: view } },
    );
    rerender({ song: { ...view, id: 2 } });
    await act(async () => reply(pending, 0, answer(1)));
    expect(result.current.peaks).toBeNull();
    await act(async () => reply(pending, 1, answer(2)));
    expect(result.current.peaks?.[0]?.max).toEqual([2]);
  });
});

import { fireEvent, render, screen } from "@testing-library/react";
import { describe, expect, it, vi } from "vitest";
import { TempoPitch } from "./TempoPitch";

describe("TempoPitch", () => {
  it("sends a speed change once it settles, or at once when the panel goes first", () => {
    vi.useFakeTimers();
    try {
      const onChange = vi.fn();
      const { unmount } = render(<TempoPitch tempo={1} transpose={0} onChange={onChange} />);
      fireEvent.change(screen.getByRole("slider", { name: "Speed" }), { target: { value: "0.9" } });
      expect(onChange).not.toHaveBeenCalled();
      vi.advanceTimersByTime(1000);
      expect(onChange).toHaveBeenLastCalledWith({ tempo: 0.9, transpose: 0 });
      // Moved, then the player left before the change settled.
      fireEvent.change(screen.getByRole("slider", { name: "Speed" }), { target: { value: "0.85" } });
      unmount();
      expect(onChange).toHaveBeenLastCalledWith({ tempo: 0.85, transpose: 0 });
      expect(onChange).toHaveBeenCalledTimes(2);
      vi.advanceTimersByTime(1000);
      expect(onChange).toHaveBeenCalledTimes(2);
    } finally {
      vi.useRealTimers();
    }
  });

  it("sends nothing older after Original speed and pitch, even when the panel goes at once", () => {
    vi.useFakeTimers();
    try {
      const onChange = vi.fn();
      const { unmount } = render(<TempoPitch tempo={0.9} transpose={0} onChange={onChange} />);
      fireEvent.change(screen.getByRole("slider", { name: "Speed" }), { target: { value: "0.8" } });
      fireEvent.click(screen.getByRole("button", { name: "Original speed and pitch" }));
      unmount();
      vi.advanceTimersByTime(1000);
      expect(onChange).toHaveBeenCalledTimes(1);
      expect(onChange).toHaveBeenLastCalledWith({ tempo: 1, transpose: 0 });
    } finally {
      vi.useRealTimers();
    }
  });
});

import { act, renderHook, waitFor } from "@testing-library/react";
import type { ReactNode } from "react";
import { describe, expect, it, vi } from "vitest";
import { BackendProvider } from "../backend";
import type { AppInfo } from "../bindings";
import { createMockBackend } from "../mockBackend";
import { useAppInfo } from "./useAppInfo";

describe("useAppInfo", () => {
  it("keeps the newest answer when an older refresh answers after it", async () => {
    const backend = createMockBackend();
    const real = await backend.appInfo();
    const stale: AppInfo = { ...real, models: real.models.map((m) => ({ ...m, installed: false })) };
    const fresh: AppInfo = { ...real, models: real.models.map((m) => ({ ...m, installed: true })) };
    let answerFirst: (info: AppInfo) => void = () => {};
    const appInfo = vi
      .spyOn(backend, "appInfo")
      .mockImplementationOnce(() => new Promise((resolve) => (answerFirst = resolve)))
      .mockImplementationOnce(() => Promise.resolve(fresh));
    const wrapper = ({ children }: { children: ReactNode }) => (
      <BackendProvider backend={backend}>{children}</BackendProvider>
    );
    const { result } = renderHook(() => useAppInfo(), { wrapper });
    // A second refresh (after an install) answers first; the first comes late.
    await act(async () => result.current.refresh());
    await waitFor(() => expect(result.current.info?.models.every((m) => m.installed)).toBe(true));
    await act(async () => answerFirst(stale));
    expect(appInfo).toHaveBeenCalledTimes(2);
    expect(result.current.info?.models.every((m) => m.installed)).toBe(true);
  });

  it("keeps a refresh's news when a model removal overtakes it", async () => {
    const backend = createMockBackend({ ytdlpFound: false });
    const wrapper = ({ children }: { children: ReactNode }) => (
      <BackendProvider backend={backend}>{children}</BackendProvider>
    );
    const { result } = renderHook(() => useAppInfo(), { wrapper });
    await waitFor(() => expect(result.current.info?.ytdlp.found).toBe(false));
    // yt-dlp installed; the refresh after it (app_info runs `yt-dlp
    // --version`, seconds) is overtaken by a model's removal.
    await backend.installLinks(() => {});
    const real = backend.appInfo.bind(backend);
    let release: () => void = () => {};
    vi.spyOn(backend, "appInfo").mockImplementationOnce(async () => {
      const info = await real();
      await new Promise<void>((resolve) => (release = resolve));
      return info;
    });
    act(() => void result.current.refresh());
    await act(async () => result.current.downloads.remove("htdemucs"));
    await act(async () => release());
    await waitFor(() => expect(result.current.info?.ytdlp.found).toBe(true));
    expect(result.current.info?.models.find((m) => m.id === "htdemucs")?.installed).toBe(false);
  });
});

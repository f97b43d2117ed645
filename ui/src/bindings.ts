// Stand-in: replaced by the file tauri-specta generates.

export type ErrorCode = "bad_input" | "missing_model" | "missing_runtime" | "output" | "invalid_options" | "cancelled" | "internal"
export type Device = "auto" | "cpu" | "cuda"
export type WavDepth = "int16" | "int24" | "float32"
export type OutputFormat = { kind: "wav"; depth: WavDepth } | { kind: "flac"; bits: number } | { kind: "mp3"; kbps: number }
export type JobSource = { kind: "file"; path: string } | { kind: "url"; url: string }
export type JobState = { state: "queued" } | { state: "decoding" } | { state: "separating"; segment: number; total: number } | { state: "encoding" } | { state: "done" } | { state: "failed"; code: ErrorCode; message: string } | { state: "cancelled" }
export type JobOptions = { model: string; device: Device; shifts: number; overlap: number; twoStems: string | null; format: OutputFormat }
export type StemFile = { stem: string; path: string }
export type Job = { id: number; source: JobSource; title: string; durationSeconds: number | null; options: JobOptions; state: JobState; position: number; createdAt: number; startedAt: number | null; finishedAt: number | null; outputDir: string | null; stems: StemFile[]; provider: string | null }
export type Settings = { model: string; device: Device; shifts: number; overlap: number; libraryDir: string | null; format: OutputFormat; concurrentJobs: number }
export type JobProgress = { id: number; state: JobState; percent: number; etaSeconds: number | null }
export type QueueEvent = { kind: "jobChanged"; job: Job } | { kind: "progress"; progress: JobProgress } | { kind: "queueChanged" }
export type ModelStatus = { id: string; description: string; bytes: number; installed: boolean; verified: boolean; path: string | null; problem: string | null; fetchCommand: string }
export type RuntimeStatus = { found: boolean; path: string | null; problem: string | null }
export type AppInfo = { version: string; dataDir: string; libraryDir: string; models: ModelStatus[]; runtime: RuntimeStatus; providerInUse: string | null }
export type Rejected = { path: string; reason: string }
export type AddResult = { added: Job[]; rejected: Rejected[] }
export type AppError = { code: ErrorCode; message: string }

//! What a job is: where its song comes from, how it separates, where it is
//! in its life.

use serde::{Deserialize, Serialize};
use stemroom_engine::audio::encode::OutputFormat;
use stemroom_engine::units::{Device, Preset};
use stemroom_engine::ErrorCode;

use super::StemFile;

/// Identifier of a job: its SQLite rowid (1, 2, …; never reused).
pub type JobId = u32;

/// Milliseconds since the Unix epoch (UTC), as JavaScript's `Date` counts.
pub type UnixMillis = f64;

/// Where a job's audio comes from.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "specta", derive(specta::Type))]
#[serde(tag = "kind", rename_all = "camelCase")]
pub enum JobSource {
    /// A local audio file (absolute path).
    File { path: String },
    /// A link resolved by yt-dlp.
    Url { url: String },
}

/// How a job separates its song. Defaults come from [`Settings`].
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "specta", derive(specta::Type))]
#[serde(rename_all = "camelCase")]
pub struct JobOptions {
    /// Model id from `models/manifest.json` (e.g. `htdemucs`).
    pub model: String,
    /// Device asked for.
    pub device: Device,
    /// Random shifts (demucs `--shifts`).
    pub shifts: u32,
    /// Overlap between segments, fraction in [0, 1) (demucs `--overlap`).
    pub overlap: f32,
    /// Two-stem mode: the chosen source; its complement is the sum of the others.
    pub two_stems: Option<String>,
    /// Encoding of the stems.
    pub format: OutputFormat,
    /// The preset that chose `model`, `shifts` and `overlap`; `None` when
    /// they were set one by one (or the job is older than presets).
    #[serde(default)]
    pub preset: Option<Preset>,
}

impl JobOptions {
    /// Take `preset`'s model, shifts and overlap, for the device these
    /// options will most likely run on (`auto` resolved by
    /// [`stemroom_engine::runtime::gpu::likely_device`]), and record it.
    pub fn apply_preset(&mut self, preset: Preset) {
        let s = preset.settings(stemroom_engine::runtime::gpu::likely_device(self.device));
        (self.model, self.shifts, self.overlap) = (s.model.to_string(), s.shifts as u32, s.overlap);
        self.preset = Some(preset);
    }
}

/// Where a job is in its life.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "specta", derive(specta::Type))]
#[serde(tag = "state", rename_all = "camelCase")]
pub enum JobState {
    /// Waiting for its turn.
    Queued,
    /// Fetching a link's audio with yt-dlp; `percent` when the size is known.
    Downloading { percent: Option<f64> },
    /// Decoding (and resampling) the input.
    Decoding,
    /// Segment `segment` (1-based) of `total` went through the network.
    Separating { segment: u32, total: u32 },
    /// Finishing the stem files.
    Encoding,
    /// Stems are in the library.
    Done,
    /// Stopped by an error; `code` is stable, `message` is for people.
    Failed { code: ErrorCode, message: String },
    /// Stopped by the user; nothing was kept.
    Cancelled,
}

impl JobState {
    /// True while a worker owns the job.
    pub fn is_running(&self) -> bool {
        matches!(
            self,
            JobState::Downloading { .. } | JobState::Decoding | JobState::Separating { .. } | JobState::Encoding
        )
    }
    /// True once the job can no longer change by itself.
    pub fn is_finished(&self) -> bool {
        matches!(self, JobState::Done | JobState::Failed { .. } | JobState::Cancelled)
    }
    /// The coarse status stored in its own column for queries.
    pub(super) fn status(&self) -> &'static str {
        match self {
            JobState::Queued => "queued",
            JobState::Downloading { .. } | JobState::Decoding | JobState::Separating { .. } | JobState::Encoding => {
                "running"
            }
            JobState::Done => "done",
            JobState::Failed { .. } => "failed",
            JobState::Cancelled => "cancelled",
        }
    }
}

/// A song in the queue or the library.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "specta", derive(specta::Type))]
#[serde(rename_all = "camelCase")]
pub struct Job {
    pub id: JobId,
    pub source: JobSource,
    /// Display title (file name without extension, or the link's title).
    pub title: String,
    /// Duration of the song in seconds, once known.
    pub duration_seconds: Option<f64>,
    pub options: JobOptions,
    pub state: JobState,
    /// Order among queued jobs (smaller runs first).
    pub position: i32,
    pub created_at: UnixMillis,
    /// When a worker last picked it up.
    pub started_at: Option<UnixMillis>,
    /// When it reached done, failed or cancelled.
    pub finished_at: Option<UnixMillis>,
    /// The song's folder in the library (finished jobs).
    pub output_dir: Option<String>,
    /// Stem files, in model source order (finished jobs).
    pub stems: Vec<StemFile>,
    /// Execution provider that ran the network (`cpu`, `cuda`).
    pub provider: Option<String>,
    /// A link's uploader or channel, from its metadata.
    pub uploader: Option<String>,
    /// A link's thumbnail image URL, from its metadata (the image itself is
    /// kept locally, see `link::thumbnail`).
    pub thumbnail: Option<String>,
    /// The album a file's tags name, if any.
    pub album: Option<String>,
    /// Tempo and key of a finished song (computed once after separation).
    pub analysis: Option<stemroom_engine::analysis::SongAnalysis>,
}

//! The JSON clients read. Field names follow the FastAPI Demucs servers
//! existing clients call (`job_id`, `status`, `progress`, `details`, ...).

use std::collections::BTreeMap;

use serde::Serialize;
use stemroom_engine::audio::encode::OutputFormat;
use stemroom_library::queue::{Job, JobState};
use stemroom_library::worker::JobProgress;
use utoipa::ToSchema;

/// A job's status as clients know it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum Status {
    /// Waiting for its turn.
    Pending,
    /// Downloading, decoding, separating or encoding.
    Processing,
    /// Stems ready.
    Completed,
    Failed,
    Cancelled,
}

impl Status {
    pub fn of(state: &JobState) -> Self {
        match state {
            JobState::Queued => Status::Pending,
            JobState::Done => Status::Completed,
            JobState::Failed { .. } => Status::Failed,
            JobState::Cancelled => Status::Cancelled,
            _ => Status::Processing,
        }
    }
}

/// Where a job is in more detail than [`Status`].
pub fn stage_of(state: &JobState) -> &'static str {
    match state {
        JobState::Queued => "queued",
        JobState::Downloading { .. } => "downloading",
        JobState::Decoding => "decoding",
        JobState::Separating { .. } => "separating",
        JobState::Encoding => "encoding",
        JobState::Done => "completed",
        JobState::Failed { .. } => "failed",
        JobState::Cancelled => "cancelled",
    }
}

/// Segment counts of the separation.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct Details {
    /// Segments through the network so far.
    pub completed_segments: u32,
    /// Segments in the whole song (0 until decoding ends).
    pub total_segments: u32,
    /// Same as the job's `progress`, 0 to 100.
    pub percent: f64,
}

/// Options a job separates with.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct OptionsView {
    /// The preset that chose the model, shifts and overlap (`fast`,
    /// `balanced`, `best`), or null when they were given one by one.
    pub preset: Option<String>,
    pub model: String,
    pub two_stems: Option<String>,
    pub shifts: u32,
    pub overlap: f32,
    /// `wav`, `flac` or `mp3`.
    pub format: String,
    /// kbit/s for MP3.
    pub mp3_bitrate: Option<u16>,
    /// Bits per sample for WAV (16, 24, 32 = float) and FLAC (16, 24).
    pub bit_depth: Option<u8>,
    pub device: String,
}

/// A job as `GET /status/{id}`, `GET /job/{id}` and the job list show it.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct JobView {
    /// The job's id (a decimal number, as a string).
    pub job_id: String,
    /// Same as `job_id` (clients that read `id`).
    pub id: String,
    pub status: Status,
    /// `queued`, `downloading`, `decoding`, `separating`, `encoding`,
    /// `completed`, `failed`, `cancelled`.
    pub stage: String,
    /// 0 to 100.
    pub progress: f64,
    pub details: Details,
    /// Estimated seconds left (from this machine's measured segment times).
    pub eta_seconds: Option<f64>,
    /// Why a processing job is held up, for people (`null` while it goes
    /// on): it ended (its stems made, or failed, or cancelled) but the
    /// queue's database cannot record the end (disk full, locked), and the
    /// server keeps trying.
    pub notice: Option<String>,
    pub title: String,
    /// The song's length in seconds, once known.
    pub duration_seconds: Option<f64>,
    /// A link job's link.
    pub url: Option<String>,
    pub options: OptionsView,
    /// Execution provider that ran the network (`cpu`, `cuda`).
    pub provider: Option<String>,
    /// The remote worker running or that ran it (`--broker`).
    pub worker: Option<String>,
    /// Why it failed, for people.
    pub error: Option<String>,
    /// Stable code of the failure (`bad_input`, `download`, ...).
    pub error_code: Option<String>,
    /// Seconds since the Unix epoch.
    pub created_at: f64,
    pub started_at: Option<f64>,
    pub finished_at: Option<f64>,
    /// Stem name to its URL (completed jobs).
    pub stems: BTreeMap<String, String>,
    /// The zip of all stems (completed jobs).
    pub download_url: Option<String>,
    /// Tempo in beats per minute (completed jobs with a steady beat).
    pub bpm: Option<f32>,
    /// Key, e.g. `A minor` (completed jobs with a clear key).
    pub key: Option<String>,
    /// The key's Camelot code, e.g. `8A`.
    pub camelot: Option<String>,
}

fn format_view(f: &OutputFormat) -> (String, Option<u16>, Option<u8>) {
    use stemroom_engine::audio::encode::WavDepth;
    match *f {
        OutputFormat::Wav { depth } => (
            "wav".into(),
            None,
            Some(match depth {
                WavDepth::Int16 => 16,
                WavDepth::Int24 => 24,
                WavDepth::Float32 => 32,
            }),
        ),
        OutputFormat::Flac { bits } => ("flac".into(), None, Some(bits)),
        OutputFormat::Mp3 { kbps } => ("mp3".into(), Some(kbps), None),
    }
}

impl JobView {
    /// `job` with its latest progress (running jobs) and the last segment
    /// counts seen (kept after the separation, for encoding and completed).
    pub fn new(job: &Job, progress: Option<&JobProgress>, segments: Option<(u32, u32)>) -> Self {
        let live = progress.filter(|_| job.state.is_running());
        let state = live.map(|p| &p.state).unwrap_or(&job.state);
        // Without a progress report nothing is decoded yet.
        let progress = live.cloned().unwrap_or_else(|| JobProgress::compute(job.id, state, 0.0, None));
        let percent = match state {
            JobState::Queued => 0.0,
            JobState::Done => 100.0,
            _ => (progress.percent * 10.0).round() / 10.0,
        };
        let (completed_segments, total_segments) = match *state {
            JobState::Separating { segment, total } => (segment, total),
            JobState::Encoding | JobState::Done => segments.unwrap_or((0, 0)),
            _ => (0, 0),
        };
        let (error, error_code) = match state {
            JobState::Failed { code, message } => (Some(message.clone()), Some(code.as_str().to_string())),
            _ => (None, None),
        };
        let (format, mp3_bitrate, bit_depth) = format_view(&job.options.format);
        let done = matches!(job.state, JobState::Done);
        let stems = if done {
            job.stems.iter().map(|s| (s.stem.clone(), format!("/stems/{}/{}", job.id, s.stem))).collect()
        } else {
            BTreeMap::new()
        };
        let url = match &job.source {
            stemroom_library::queue::JobSource::Url { url } => Some(url.clone()),
            stemroom_library::queue::JobSource::File { .. } => None,
        };
        JobView {
            job_id: job.id.to_string(),
            id: job.id.to_string(),
            status: Status::of(&job.state),
            stage: stage_of(state).into(),
            progress: percent,
            details: Details { completed_segments, total_segments, percent },
            eta_seconds: progress.eta_seconds.filter(|_| job.state.is_running()),
            notice: progress.notice.clone().filter(|_| job.state.is_running()),
            title: job.title.clone(),
            duration_seconds: job.duration_seconds,
            url,
            options: OptionsView {
                preset: job.options.preset.map(|p| p.as_str().to_string()),
                model: job.options.model.clone(),
                two_stems: job.options.two_stems.clone(),
                shifts: job.options.shifts,
                overlap: job.options.overlap,
                format,
                mp3_bitrate,
                bit_depth,
                device: job.options.device.as_str().into(),
            },
            provider: job.provider.clone(),
            worker: None,
            error,
            error_code,
            created_at: job.created_at / 1000.0,
            started_at: job.started_at.map(|t| t / 1000.0),
            finished_at: job.finished_at.map(|t| t / 1000.0),
            stems,
            download_url: done.then(|| format!("/download/{}", job.id)),
            bpm: job.analysis.as_ref().and_then(|a| a.bpm),
            key: job.analysis.as_ref().and_then(|a| a.key.as_ref().map(|k| k.name.clone())),
            camelot: job.analysis.as_ref().and_then(|a| a.key.as_ref().map(|k| k.camelot.clone())),
        }
    }
}

/// Answer to a new job.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct Created {
    pub job_id: String,
    pub id: String,
    /// Always `pending`.
    pub status: Status,
    pub title: String,
    /// Where to poll.
    pub status_url: String,
    /// Where live progress streams (server-sent events).
    pub events_url: String,
    /// Jobs ahead of this one.
    pub queue_position: u32,
    /// Fields and query parameters of the request this server does not
    /// take, ignored (as FastAPI ignores undeclared ones); left out when
    /// none. At most 16 named.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub ignored_fields: Vec<String>,
}

/// A page of jobs, newest first.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct JobList {
    pub jobs: Vec<JobView>,
    pub total: u32,
    pub page: u32,
    pub per_page: u32,
}

/// `GET /` and `GET /health`.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct Health {
    /// `ok`.
    pub status: String,
    pub service: String,
    pub version: String,
}

/// `GET /status`.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct ServerStatus {
    /// `ok`.
    pub status: String,
    pub version: String,
    /// The default model is installed and its checksum matched.
    pub models_ready: bool,
    /// Why not, when not.
    pub models_problem: Option<String>,
    /// Jobs separating now.
    pub active_jobs: u32,
    /// Jobs waiting.
    pub queue_length: u32,
    /// Jobs run at the same time.
    pub concurrency: u32,
    /// Execution provider of the last job run (`cpu`, `cuda`), else the
    /// device asked for (`auto`, `cpu`, `cuda`).
    pub provider: String,
    /// The device jobs ask for.
    pub device: String,
    /// The broker jobs go to (password hidden), with `--broker`.
    pub broker: Option<String>,
    /// The workers heard from, with `--broker`.
    pub workers: Option<Vec<crate::broker::WorkerView>>,
}

/// `DELETE /job/{id}`.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct Deleted {
    pub job_id: String,
    /// `deleted`.
    pub status: String,
    /// The job was running and was stopped first.
    pub was_running: bool,
}

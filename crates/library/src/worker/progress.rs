//! Progress of running jobs: percent and ETA, throttled, from engine events.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use serde::Serialize;
use stemroom_engine::progress::{Event, Listener, Throttle};

use super::Inner;
use crate::queue::{Job, JobId, JobState};

/// Minimum time between two progress updates of one job with the same state
/// kind (10 per second at most; the UI animates in between).
pub const PROGRESS_INTERVAL: Duration = Duration::from_millis(100);

/// Share of the progress bar given to decoding and to finishing; the network
/// segments take the rest. Decoding a song takes well under 5 % of the
/// separation time on CPU (measured: 0.3 s of 50 s for 60 s of music).
const DECODE_SHARE: f64 = 0.05;
const FINISH_SHARE: f64 = 0.05;

/// A progress snapshot of a running job.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[cfg_attr(feature = "specta", derive(specta::Type))]
#[serde(rename_all = "camelCase")]
pub struct JobProgress {
    pub id: JobId,
    pub state: JobState,
    /// 0 to 100.
    pub percent: f64,
    /// Estimated seconds to completion, from measured segment times; `None`
    /// until there is a measurement for this model on this machine. While
    /// downloading: yt-dlp's estimate for the download.
    pub eta_seconds: Option<f64>,
    /// Download speed in bytes per second (while downloading).
    pub bytes_per_second: Option<f64>,
    /// Why the job is held up, for people (`None` while it goes on): it
    /// ended (separated, failed or cancelled, which the notice says), but
    /// its end cannot be written to the queue's database (disk full,
    /// another program holding it), and the worker keeps trying; the state
    /// meanwhile is `Encoding`.
    pub notice: Option<String>,
}

impl JobProgress {
    /// Percent and ETA for `state`.
    ///
    /// `decode_fraction` is how much of the input is decoded (0 to 1) while
    /// decoding; `seconds_per_segment` is the best known time of one network
    /// segment (this job's mean so far, else this machine's history).
    pub fn compute(id: JobId, state: &JobState, decode_fraction: f64, seconds_per_segment: Option<f64>) -> Self {
        let (percent, eta) = match *state {
            JobState::Queued => (0.0, None),
            // A download is its own stage: its bar runs from 0 to 100 %.
            JobState::Downloading { percent } => (percent.unwrap_or(0.0).clamp(0.0, 100.0), None),
            JobState::Decoding => (100.0 * DECODE_SHARE * decode_fraction.clamp(0.0, 1.0), None),
            JobState::Separating { segment, total } => {
                let done = if total == 0 { 1.0 } else { f64::from(segment.min(total)) / f64::from(total) };
                let left = f64::from(total.saturating_sub(segment));
                (
                    100.0 * (DECODE_SHARE + (1.0 - DECODE_SHARE - FINISH_SHARE) * done),
                    seconds_per_segment.map(|s| s * left),
                )
            }
            JobState::Encoding => (100.0 * (1.0 - FINISH_SHARE), Some(0.0)),
            JobState::Done => (100.0, Some(0.0)),
            JobState::Failed { .. } | JobState::Cancelled => (0.0, None),
        };
        JobProgress { id, state: state.clone(), percent, eta_seconds: eta, bytes_per_second: None, notice: None }
    }
}

pub(super) struct Track {
    pub(super) throttle: Throttle,
    pub(super) state: JobState,
    pub(super) machine_sps: Option<f64>,
    pub(super) separating_since: Option<Instant>,
    pub(super) duration: Option<f64>,
    /// The network moved to the CPU during this job.
    pub(super) fell_back: bool,
    /// Segments a resumed job took from its checkpoint.
    pub(super) resumed: u32,
}

pub(super) struct JobListener<'a> {
    pub(super) inner: &'a Inner,
    pub(super) job: &'a Job,
    pub(super) provider: &'a str,
    pub(super) cancel: &'a AtomicBool,
    pub(super) track: Mutex<Track>,
}

impl JobListener<'_> {
    fn report(&self, t: &mut Track, state: JobState, decode_fraction: f64, sps: Option<f64>) {
        let changed = std::mem::discriminant(&state) != std::mem::discriminant(&t.state);
        let segment_changed = state != t.state;
        if segment_changed && state.is_running() {
            // Persist state changes and each new segment (every few seconds).
            let _ = self.inner.queue.set_running_state(self.job.id, &state);
        }
        t.state = state;
        if t.throttle.ready(Instant::now(), changed) {
            self.inner.listener.progress(&JobProgress::compute(self.job.id, &t.state, decode_fraction, sps));
        }
    }
}

impl Listener for JobListener<'_> {
    fn event(&self, event: &Event) {
        let mut t = self.track.lock().unwrap_or_else(|p| p.into_inner());
        match event {
            Event::Started { .. } => {
                let sps = t.machine_sps;
                self.report(&mut t, JobState::Decoding, 0.0, sps);
            }
            Event::Decoding { fraction, .. } => {
                let sps = t.machine_sps;
                self.report(&mut t, JobState::Decoding, fraction.unwrap_or(0.0), sps);
            }
            Event::Decoded { duration_seconds, .. } => {
                t.duration = Some(*duration_seconds);
                let _ = self.inner.queue.set_details(self.job.id, Some(*duration_seconds), None);
            }
            Event::Segment { index, total, elapsed_seconds, .. } => {
                let index = u32::try_from(*index).unwrap_or(u32::MAX);
                let total = u32::try_from(*total).unwrap_or(u32::MAX);
                // Wall seconds per segment for this job (includes STFT and
                // encoding work that overlaps the network), which is what the
                // ETA must predict.
                let own_runs = index.saturating_sub(t.resumed);
                let own = (own_runs > 0).then(|| elapsed_seconds / f64::from(own_runs));
                if let Some(own) = own {
                    t.separating_since.get_or_insert_with(Instant::now);
                    if index == total && !t.fell_back {
                        let _ = self.inner.queue.record_segment_seconds(&self.job.options.model, self.provider, own);
                    }
                }
                let sps = own.or(t.machine_sps);
                self.report(&mut t, JobState::Separating { segment: index, total }, 1.0, sps);
            }
            Event::Encoding { .. } => {
                self.report(&mut t, JobState::Encoding, 1.0, None);
            }
            Event::Resumed { segment, total, seconds } => {
                tracing::info!(
                    "job {}: resuming at segment {segment} of {total} ({seconds:.0} s of audio already separated)",
                    self.job.id
                );
                let (segment, total) =
                    (u32::try_from(*segment).unwrap_or(u32::MAX), u32::try_from(*total).unwrap_or(u32::MAX));
                t.resumed = segment;
                let sps = t.machine_sps;
                self.report(&mut t, JobState::Separating { segment, total }, 1.0, sps);
            }
            Event::Warning { message } => tracing::warn!("job {}: {message}", self.job.id),
            Event::ProviderChanged { provider, segment, reason } => {
                tracing::warn!(
                    "job {}: the GPU failed at segment {segment} ({reason}); going on on the {provider}",
                    self.job.id
                );
                // The row says what really runs it; this job's segment times
                // are no longer the old provider's.
                t.fell_back = true;
                let _ = self.inner.queue.set_details(self.job.id, None, Some(&provider.to_string()));
            }
            Event::Done { .. } | Event::Exporting { .. } | Event::Downloading { .. } => {}
        }
    }

    fn is_cancelled(&self) -> bool {
        self.cancel.load(Ordering::SeqCst)
    }
}

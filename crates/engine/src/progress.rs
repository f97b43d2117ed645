//! Progress events and cancellation: how a running separation talks to its
//! front end. Every event is serialisable (the CLI's `--json` lines, the app's
//! IPC channel) with an `"event"` tag.

use std::path::PathBuf;
use std::time::{Duration, Instant};

use serde::Serialize;

use crate::units::Provider;

/// One thing that happened during a run.
#[derive(Debug, Clone, Serialize)]
#[serde(tag = "event", rename_all = "snake_case")]
pub enum Event {
    /// The model is loaded and the input is about to be decoded.
    Started {
        #[serde(serialize_with = "crate::paths::lossy::one")]
        input: PathBuf,
        model: String,
        provider: Provider,
    },
    /// Decoding progress; `fraction` is `None` when the length is unknown.
    Decoding { seconds_decoded: f64, fraction: Option<f64> },
    /// The input is decoded (and resampled to the model rate).
    Decoded {
        /// Duration in seconds.
        duration_seconds: f64,
        /// The input's own sample rate in Hz.
        sample_rate: u32,
        /// The input's own channel count.
        channels: usize,
    },
    /// Segment `index` (1-based) of `total` went through the network.
    Segment {
        index: usize,
        total: usize,
        /// Seconds this segment spent in the network.
        network_seconds: f64,
        /// Seconds since separation started.
        elapsed_seconds: f64,
        /// Estimated seconds left, from the mean time per segment so far.
        eta_seconds: f64,
    },
    /// Writing the final file of a stem.
    Encoding {
        stem: String,
        #[serde(serialize_with = "crate::paths::lossy::one")]
        path: PathBuf,
    },
    /// Downloading a link's audio (before decoding): `percent` when the size
    /// is known, speed in bytes per second, ETA in seconds.
    Downloading { title: String, percent: Option<f64>, bytes_per_second: Option<f64>, eta_seconds: Option<f64> },
    /// Export progress: `fraction` of the frames to export are written
    /// (0 to 1; `None` when the stems do not declare their length).
    Exporting { fraction: Option<f64> },
    /// The network moved to another provider mid-run (the GPU failed: out
    /// of memory, device lost, a provider error) and the run goes on there
    /// from the segment it reached.
    ProviderChanged {
        /// The provider running the network from now on.
        provider: Provider,
        /// The segment (1-based) that failed and was run again.
        segment: usize,
        /// What the failed provider said.
        reason: String,
    },
    /// A job interrupted earlier (killed, crashed, power lost) goes on from
    /// its last checkpoint instead of the beginning.
    Resumed {
        /// Segments already done (the next to run is `segment + 1`).
        segment: usize,
        /// Segments in the whole run.
        total: usize,
        /// Seconds of audio already separated.
        seconds: f64,
    },
    /// Something the user should know that did not stop the run.
    Warning { message: String },
    /// Finished; every output file is complete.
    Done {
        #[serde(serialize_with = "crate::paths::lossy::all")]
        outputs: Vec<PathBuf>,
        /// Wall seconds for the whole file.
        seconds: f64,
        /// Duration of the input in seconds.
        audio_seconds: f64,
        /// Network segments run (all shifts).
        segments: usize,
        /// Mean network seconds per segment.
        network_seconds_per_segment: f64,
        provider: Provider,
    },
}

/// Receives events and answers whether to stop. Both have no-op defaults.
///
/// Cancellation is checked between segments and while decoding and encoding;
/// a cancelled run returns [`crate::Error::Cancelled`] and leaves no output.
pub trait Listener: Sync {
    /// Called for every event, on the thread doing the work.
    fn event(&self, _event: &Event) {}
    /// Return true to stop the run at the next check.
    fn is_cancelled(&self) -> bool {
        false
    }
}

/// A listener that ignores everything.
#[derive(Debug, Default, Clone, Copy)]
pub struct Silent;
impl Listener for Silent {}

/// Lets an update through at most once per `interval`, or whenever `force`
/// is set (state changes). Time is passed in so it can be tested.
#[derive(Debug, Clone)]
pub struct Throttle {
    interval: Duration,
    last: Option<Instant>,
}

impl Throttle {
    /// A throttle that lets the first update through.
    pub fn new(interval: Duration) -> Self {
        Throttle { interval, last: None }
    }
    /// Should an update made at `now` be sent?
    pub fn ready(&mut self, now: Instant, force: bool) -> bool {
        let due = self.last.is_none_or(|l| now.saturating_duration_since(l) >= self.interval);
        if force || due {
            self.last = Some(now);
            true
        } else {
            false
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn throttle_lets_state_changes_through() {
        let t0 = Instant::now();
        let mut th = Throttle::new(Duration::from_millis(100));
        assert!(th.ready(t0, false));
        assert!(!th.ready(t0 + Duration::from_millis(50), false));
        assert!(th.ready(t0 + Duration::from_millis(60), true));
        assert!(!th.ready(t0 + Duration::from_millis(150), false));
        assert!(th.ready(t0 + Duration::from_millis(160), false));
    }
}

//! Planning a separation: shift passes and segments (`apply.py`).

use rand::{RngExt, SeedableRng};
use rand_chacha::ChaCha8Rng;

use crate::model::ModelInfo;
use crate::Error;

/// Maximum random shift in seconds (`apply.py`: `max_shift = int(0.5 * model.samplerate)`).
pub const MAX_SHIFT_SECONDS: f64 = 0.5;

/// Most shift passes a separation takes. demucs has no bound; its paper
/// averages 10 (Défossez et al., "Music Source Separation in the Waveform
/// Domain", 2019, §5 "shift trick"), and each pass costs a whole extra
/// separation, so 20 is already 20x the work. A bound keeps a typo
/// (`--shifts 1000000000`) from planning billions of segments.
pub const MAX_SHIFTS: usize = 20;

/// Highest overlap between segments. demucs takes any value below 1 (at 1
/// its stride is 0 and `apply.py` loops forever); Ultimate Vocal Remover's
/// highest choice is 0.99, which already runs 75x the segments of the
/// default 0.25. Above it the segment count grows without bound (0.999997
/// would be ~270,000 segments for a 4-minute song).
pub const MAX_OVERLAP: f32 = 0.99;

/// Shortest split segment, in seconds. Each segment is padded to the
/// model's training segment (7.8 s for htdemucs) before the network runs,
/// so a shorter one costs as much and does less: 0.001 s planned 2,673
/// network runs for a 2 s clip. demucs 4.0's `--segment` takes whole
/// seconds (`type=int`), so 1 s is its smallest useful value as well.
pub const MIN_SEGMENT_SECONDS: f64 = 1.0;

/// Check a split segment length (`--segment`, in frames at the model's
/// sample rate) against the model: at least [`MIN_SEGMENT_SECONDS`], at
/// most its training segment. `None` (the training segment) passes.
///
/// # Errors
/// [`Error::InvalidOptions`] naming the allowed range in seconds.
pub fn check_segment(info: &ModelInfo, segment_frames: Option<usize>) -> Result<(), Error> {
    let Some(frames) = segment_frames else { return Ok(()) };
    let shortest = (MIN_SEGMENT_SECONDS * info.sample_rate as f64).ceil() as usize;
    if frames > info.segment_frames || frames < shortest {
        return Err(Error::InvalidOptions(format!(
            "segment must be at least {MIN_SEGMENT_SECONDS:.0} s and at most {:.2} s for model {}, got {:.3} s",
            info.segment_seconds(),
            info.id,
            frames as f64 / info.sample_rate as f64
        )));
    }
    Ok(())
}

/// Options of the algorithm (the `demucs` CLI's names).
#[derive(Debug, Clone, Copy)]
pub struct SeparateOptions {
    /// Random shifts to average (`--shifts`); 0 means none.
    pub shifts: usize,
    /// Overlap between split segments in `[0, 1)` (`--overlap`, default 0.25).
    pub overlap: f32,
    /// Split segment length in frames; `None` = the model's training segment.
    pub segment_frames: Option<usize>,
    /// Seed of the shift offsets.
    pub seed: u64,
}

impl SeparateOptions {
    /// Check the options a person can give.
    ///
    /// # Errors
    /// [`Error::InvalidOptions`] for more than [`MAX_SHIFTS`] shifts or an
    /// overlap outside `[0, MAX_OVERLAP]` (NaN included).
    pub fn validate(&self) -> Result<(), Error> {
        if self.shifts > MAX_SHIFTS {
            return Err(Error::InvalidOptions(format!("shifts must be 0 to {MAX_SHIFTS}, got {}", self.shifts)));
        }
        if !(0.0..=MAX_OVERLAP).contains(&self.overlap) {
            return Err(Error::InvalidOptions(format!(
                "overlap must be from 0 to {MAX_OVERLAP}, got {}",
                self.overlap
            )));
        }
        Ok(())
    }
}

impl Default for SeparateOptions {
    fn default() -> Self {
        SeparateOptions { shifts: 1, overlap: 0.25, segment_frames: None, seed: 0 }
    }
}

/// The work a separation will do.
#[derive(Debug, Clone)]
pub struct Plan {
    /// Frames in the mixture.
    pub frames: usize,
    /// Split segment length in frames.
    pub segment: usize,
    /// Distance between segment starts in frames.
    pub stride: usize,
    /// Per shift pass: (offset of pass frame 0 in mixture frames, pass length).
    pub passes: Vec<(i64, usize)>,
}

impl Plan {
    /// Plan the passes and segments of a mixture of `frames` frames.
    ///
    /// # Errors
    /// [`Error::InvalidOptions`] for options [`SeparateOptions::validate`]
    /// refuses, a segment [`check_segment`] refuses or one too short to stride.
    pub fn new(info: &ModelInfo, frames: usize, opts: &SeparateOptions) -> Result<Self, Error> {
        opts.validate()?;
        check_segment(info, opts.segment_frames)?;
        let segment = opts.segment_frames.unwrap_or(info.segment_frames);
        // Demucs' `int((1 - overlap) * segment)` (apply.py) in Python's
        // doubles, on the overlap as written: the `f32` 0.1 widened is
        // 0.10000000149…, a stride one frame short of Demucs' (at 0.05,
        // 0.1, 0.15, 0.2, 0.4, 0.6, 0.85; one long at 0.65, 0.9). `f32`'s
        // shortest decimal ("0.1") read as an `f64` is Python's 0.1.
        let overlap: f64 = opts.overlap.to_string().parse().unwrap_or(f64::from(opts.overlap));
        let stride = ((1.0 - overlap) * segment as f64) as usize;
        if segment == 0 || stride == 0 {
            return Err(Error::InvalidOptions("segment too short for this overlap".into()));
        }
        let passes = if opts.shifts == 0 {
            vec![(0i64, frames)]
        } else {
            let max_shift = (MAX_SHIFT_SECONDS * info.sample_rate as f64) as usize;
            let mut rng = ChaCha8Rng::seed_from_u64(opts.seed);
            (0..opts.shifts)
                .map(|_| {
                    let offset = rng.random_range(0..=max_shift);
                    (offset as i64 - max_shift as i64, frames + max_shift - offset)
                })
                .collect()
        };
        Ok(Plan { frames, segment, stride, passes })
    }

    /// Segments in one pass of `len` frames.
    pub(super) fn chunks(&self, len: usize) -> usize {
        len.div_ceil(self.stride)
    }

    /// Network runs over all passes.
    pub fn total_segments(&self) -> usize {
        self.passes.iter().map(|&(_, len)| self.chunks(len)).sum()
    }

    /// Every segment in the order they run: always the next one of the pass
    /// whose finished output reaches the least far into the mixture (the
    /// first such pass on a tie), so that the passes advance together and
    /// finished frames can leave after each segment.
    pub fn schedule(&self) -> Vec<Step> {
        let mut next = vec![0usize; self.passes.len()];
        let mut steps = Vec::with_capacity(self.total_segments());
        // Mixture frame up to which pass `i` is final after `next[i]` segments.
        let frontier = |i: usize, n: usize| {
            let (base, len) = self.passes[i];
            base + if n < self.chunks(len) { (n * self.stride) as i64 } else { len as i64 }
        };
        while let Some(pass) = (0..self.passes.len())
            .filter(|&i| next[i] < self.chunks(self.passes[i].1))
            .min_by_key(|&i| frontier(i, next[i]))
        {
            let (base, len) = self.passes[pass];
            let start = next[pass] * self.stride;
            steps.push(Step { pass, start, len: self.segment.min(len - start), mixture_start: base + start as i64 });
            next[pass] += 1;
        }
        steps
    }
}

/// One network run of a [`Plan`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Step {
    /// Index of the shift pass in [`Plan::passes`].
    pub pass: usize,
    /// First frame of the segment, in pass frames.
    pub start: usize,
    /// Frames of the segment (the split segment length, shorter at the pass end).
    pub len: usize,
    /// Mixture frame of `start` (negative inside a shift's lead-in).
    pub mixture_start: i64,
}

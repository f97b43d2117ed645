//! Mixture statistics for normalisation (`api.py`).

/// Added to the standard deviation before dividing (`api.py`: `(wav - ref.mean()) / (ref.std() + 1e-8)`).
pub const NORM_EPS: f64 = 1e-8;

/// Mix statistics for normalisation (`api.py`): mean and unbiased standard
/// deviation of the mono reference (mean of the channels).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct MixStats {
    /// Mean of the mono reference.
    pub mean: f64,
    /// Unbiased standard deviation of the mono reference (0 for fewer than 2 frames).
    pub std: f64,
}

/// Streaming accumulator for [`MixStats`] (Welford's algorithm, in f64).
#[derive(Debug, Default, Clone, Copy)]
pub struct MixStatsAccumulator {
    n: u64,
    mean: f64,
    m2: f64,
}

impl MixStatsAccumulator {
    /// Add one mono reference sample.
    #[inline]
    pub fn push(&mut self, v: f64) {
        self.n += 1;
        let d = v - self.mean;
        self.mean += d / self.n as f64;
        self.m2 += d * (v - self.mean);
    }
    /// The statistics so far.
    pub fn stats(&self) -> MixStats {
        let std = if self.n > 1 { (self.m2 / (self.n - 1) as f64).sqrt() } else { 0.0 };
        MixStats { mean: self.mean, std }
    }
}

//! The click track and count-in, synthesised in the audio callback on the
//! song's beat grid (its tempo and first beat, found after separation):
//! short decaying sine blips, allocation-free, state in plain numbers.
//!
//! Beats are in song time, so at another speed the clicks follow the
//! music. The count-in is one bar of four clicks at the song's tempo (at
//! the current speed) before playback starts, the first one higher, in
//! time with the song: its next beat falls where a fifth click would.

/// Click pitch, Hz, and the count-in's first click.
const CLICK_HZ: f32 = 1_000.0;
const ACCENT_HZ: f32 = 1_500.0;
/// Peak level (−6 dBFS) and decay time constant of a click, seconds; a
/// click lasts five time constants (40 ms).
const CLICK_LEVEL: f32 = 0.5;
const CLICK_TAU: f32 = 0.008;
/// Tempi a beat grid may have, BPM (twice the analysis' range either way),
/// so a damaged value cannot make a count-in last minutes.
pub const MIN_GRID_BPM: f64 = 30.0;
pub const MAX_GRID_BPM: f64 = 400.0;
/// Beats of the count-in (one 4/4 bar).
pub const COUNT_IN_BEATS: u32 = 4;

/// One click voice.
pub(super) struct Click {
    rate: f32,
    decay: f32,
    /// Frames since the click started (`u32::MAX`: silent).
    age: u32,
    envelope: f32,
    hz: f32,
    length: u32,
}

impl Click {
    pub(super) fn new(device_rate: u32) -> Self {
        let rate = device_rate.max(1) as f32;
        Click {
            rate,
            decay: (-1.0 / (CLICK_TAU * rate)).exp(),
            age: u32::MAX,
            envelope: 0.0,
            hz: CLICK_HZ,
            length: (5.0 * CLICK_TAU * rate) as u32,
        }
    }

    /// Start a click (accented: higher).
    pub(super) fn trigger(&mut self, accent: bool) {
        self.age = 0;
        self.envelope = CLICK_LEVEL;
        self.hz = if accent { ACCENT_HZ } else { CLICK_HZ };
    }

    /// The next sample (0 when silent).
    #[inline]
    pub(super) fn next(&mut self) -> f32 {
        if self.age >= self.length {
            return 0.0;
        }
        let v = self.envelope * (std::f32::consts::TAU * self.hz * self.age as f32 / self.rate).sin();
        self.envelope *= self.decay;
        self.age += 1;
        v
    }
}

/// The song's beat grid in song frames: beats at `offset + k · period`.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct BeatGrid {
    /// Beats per minute (> 0).
    pub bpm: f32,
    /// Time of the first beat, seconds.
    pub offset_seconds: f32,
}

impl BeatGrid {
    /// Period and first beat in frames at `rate` Hz, or `None` for a
    /// tempo outside [`MIN_GRID_BPM`]…[`MAX_GRID_BPM`] (or not finite).
    pub(super) fn frames(self, rate: u32) -> Option<(f64, f64)> {
        let bpm = f64::from(self.bpm);
        (MIN_GRID_BPM..=MAX_GRID_BPM).contains(&bpm).then(|| {
            let period = 60.0 / bpm * f64::from(rate);
            // (An offset that is not a number is none: an infinite one
            // made every beat NaN, and the click track silent.)
            let seconds = if self.offset_seconds.is_finite() { self.offset_seconds.max(0.0) } else { 0.0 };
            let offset = f64::from(seconds) * f64::from(rate);
            (period, offset.rem_euclid(period))
        })
    }
}

/// Which beat a song frame is in (beat 0 starts at the grid's offset;
/// frames before it are beat -1).
#[inline]
pub(super) fn beat_of(frame: f64, period: f64, offset: f64) -> i64 {
    ((frame - offset) / period).floor() as i64
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_grid_outside_the_tempo_range_is_no_grid() {
        // (frames rounded: the offset is an f32 number of seconds)
        let grid = |bpm: f32, offset_seconds: f32| {
            BeatGrid { bpm, offset_seconds }.frames(44_100).map(|(p, o)| (p.round(), o.round()))
        };
        assert_eq!(grid(120.0, 0.1), Some((22_050.0, 4_410.0)));
        assert_eq!(grid(120.0, 0.75), Some((22_050.0, 11_025.0)), "offset within one period");
        assert_eq!(grid(120.0, -3.0), Some((22_050.0, 0.0)));
        assert_eq!(grid(120.0, f32::INFINITY), Some((22_050.0, 0.0)), "an offset that is no number is none");
        assert_eq!(grid(120.0, f32::NAN), Some((22_050.0, 0.0)));
        for bad in [0.0, 0.001, 29.0, 401.0, 1e9, f32::NAN, f32::INFINITY, -120.0] {
            assert_eq!(grid(bad, 0.0), None, "{bad} BPM");
        }
        assert_eq!(beat_of(4_409.0, 22_050.0, 4_410.0), -1);
        assert_eq!(beat_of(4_410.0, 22_050.0, 4_410.0), 0);
    }
}

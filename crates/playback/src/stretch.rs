//! Tempo and pitch: a song played slower or faster at the same pitch, or
//! transposed at the same tempo, by Signalsmith Stretch (the
//! `signalsmith-stretch` crate over the MIT-licensed C++ library; the
//! spectral method of Geraint Luff's ADC22 talk "Four Ways To Write A
//! Pitch-Shifter"). The player and "what I hear" exports stretch every stem
//! the same way before mixing, so both hear the same thing.
//!
//! Layout: interleaved stereo `f32` (`[L0, R0, L1, R1, …]`), the stems'
//! sample rate in and out; lengths in frames.
//!
//! Timing (the library's README, "Seeking and starting"): the first
//! `input_latency()` frames of a run are given to `seek`, which puts the
//! processing time at the run's first frame, and the first
//! `output_latency()` frames that come out (pre-roll) are dropped. So output
//! frame `k` of a run that starts at song frame `p` is song frame
//! `p + k·tempo`, and a run of `n` input frames gives `round(n / tempo)`
//! output frames once [`Stretcher::finish`] has fed the end through
//! (`input_latency()` frames of silence, then `flush`).

use signalsmith_stretch::Stretch;

/// Slowest tempo: half speed, as practice tools offer (0.5x-1.5x: Transcribe!,
/// Moises). Signalsmith Stretch's README says time-stretching sounds best
/// between 0.75x and 1.5x: below 0.75x transients smear, which a player
/// practising a fast passage still takes over not slowing it at all.
pub const MIN_TEMPO: f32 = 0.5;
/// Fastest tempo: 1.5x.
pub const MAX_TEMPO: f32 = 1.5;
/// Largest transposition either way, in semitones (one octave).
pub const MAX_TRANSPOSE: f32 = 12.0;

/// Tempo and pitch of what is heard.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct TimePitch {
    /// Playback speed at the same pitch (1.0 = as recorded), clamped to
    /// [`MIN_TEMPO`]…[`MAX_TEMPO`].
    pub tempo: f32,
    /// Transposition at the same tempo in semitones (0 = as recorded),
    /// clamped to ±[`MAX_TRANSPOSE`].
    pub transpose: f32,
}

impl Default for TimePitch {
    fn default() -> Self {
        TimePitch { tempo: 1.0, transpose: 0.0 }
    }
}

impl TimePitch {
    /// The settings as they are applied: clamped, non-finite values read as
    /// unchanged (1.0 and 0), the transposition rounded to a cent.
    pub fn clean(self) -> Self {
        let tempo = if self.tempo.is_finite() { self.tempo.clamp(MIN_TEMPO, MAX_TEMPO) } else { 1.0 };
        let transpose =
            if self.transpose.is_finite() { self.transpose.clamp(-MAX_TRANSPOSE, MAX_TRANSPOSE) } else { 0.0 };
        TimePitch { tempo, transpose: (transpose * 100.0).round() / 100.0 }
    }

    /// True when nothing is changed (the audio passes untouched).
    pub fn is_identity(self) -> bool {
        let c = self.clean();
        c.tempo == 1.0 && c.transpose == 0.0
    }
}

/// Serde default of a tempo field (controls saved before tempo existed):
/// as recorded.
pub(crate) fn unit_tempo() -> f32 {
    1.0
}

/// One stereo stream's time-stretcher and pitch-shifter (module docs for
/// its timing).
pub struct Stretcher {
    stretch: Stretch,
    tempo: f64,
    input_latency: usize,
    /// Input frames kept until there are `input_latency` of them for `seek`.
    lead: Vec<f32>,
    primed: bool,
    /// Pre-roll frames still to drop.
    pre_roll: usize,
    /// Input frames taken, and output frames made by `process` (pre-roll
    /// included) and given out, since the run started.
    frames_in: u64,
    fed: u64,
    made: u64,
    given: u64,
    scratch: Vec<f32>,
}

impl std::fmt::Debug for Stretcher {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Stretcher").field("tempo", &self.tempo).field("frames_in", &self.frames_in).finish()
    }
}

impl Stretcher {
    /// A stretcher for stereo audio at `sample_rate` Hz with the library's
    /// default preset (its block and interval chosen for the rate), or
    /// `None` when `settings` change nothing.
    pub fn new(sample_rate: u32, settings: TimePitch) -> Option<Self> {
        if settings.is_identity() {
            return None;
        }
        let s = settings.clean();
        let mut stretch = Stretch::preset_default(2, sample_rate.max(1));
        stretch.set_transpose_factor_semitones(s.transpose, None);
        let input_latency = stretch.input_latency();
        let pre_roll = stretch.output_latency();
        Some(Stretcher {
            stretch,
            tempo: f64::from(s.tempo),
            input_latency,
            lead: Vec::with_capacity(2 * input_latency),
            primed: false,
            pre_roll,
            frames_in: 0,
            fed: 0,
            made: 0,
            given: 0,
            scratch: Vec::new(),
        })
    }

    /// Take `input` (interleaved stereo, the next frames of the run) and
    /// append the output it completes to `out`.
    pub fn process(&mut self, input: &[f32], out: &mut Vec<f32>) {
        let input = &input[..input.len() / 2 * 2];
        self.frames_in += (input.len() / 2) as u64;
        if self.primed {
            self.feed(input, out);
            return;
        }
        self.lead.extend_from_slice(input);
        if self.lead.len() / 2 >= self.input_latency {
            let lead = std::mem::take(&mut self.lead);
            let (seek, rest) = lead.split_at(2 * self.input_latency);
            self.stretch.seek(seek, self.tempo);
            self.primed = true;
            self.feed(rest, out);
        }
    }

    /// Feed the end of the run through and append the rest of the output,
    /// so the run gives `round(frames in / tempo)` frames in all.
    pub fn finish(&mut self, out: &mut Vec<f32>) {
        if !self.primed {
            // A run shorter than the input latency: the lead, padded.
            let mut lead = std::mem::take(&mut self.lead);
            lead.resize(2 * self.input_latency, 0.0);
            self.stretch.seek(&lead, self.tempo);
            self.primed = true;
        }
        let given = self.given;
        let silence = vec![0.0f32; 2 * self.input_latency];
        let mut tail = Vec::new();
        self.feed(&silence, &mut tail);
        let mut flushed = vec![0.0f32; 2 * self.stretch.output_latency()];
        self.stretch.flush(&mut flushed);
        let skip = self.pre_roll.min(flushed.len() / 2);
        self.pre_roll -= skip;
        tail.extend_from_slice(&flushed[2 * skip..]);
        let want = (self.frames_in as f64 / self.tempo).round() as u64;
        let left = want.saturating_sub(given) as usize;
        tail.resize(2 * left, 0.0);
        self.given = given + left as u64;
        out.extend_from_slice(&tail);
    }

    /// `process` `input` into as many output frames as keep the run at its
    /// tempo, dropping the pre-roll.
    fn feed(&mut self, input: &[f32], out: &mut Vec<f32>) {
        self.fed += (input.len() / 2) as u64;
        let due = (self.fed as f64 / self.tempo).round() as u64;
        let m = due.saturating_sub(self.made) as usize;
        self.made += m as u64;
        self.scratch.clear();
        self.scratch.resize(2 * m, 0.0);
        self.stretch.process(input, &mut self.scratch);
        let skip = self.pre_roll.min(m);
        self.pre_roll -= skip;
        out.extend_from_slice(&self.scratch[2 * skip..]);
        self.given += (m - skip) as u64;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const RATE: u32 = 44_100;

    /// `frames` of a stereo sine at `hz`, amplitude 0.5.
    fn sine(hz: f64, frames: usize) -> Vec<f32> {
        (0..frames)
            .flat_map(|i| {
                let x = (0.5 * (2.0 * std::f64::consts::PI * hz * i as f64 / f64::from(RATE)).sin()) as f32;
                [x, x]
            })
            .collect()
    }

    /// Frequency of the left channel of interleaved stereo `x` between
    /// two frames.
    fn frequency(x: &[f32], from: usize, to: usize) -> f64 {
        stemroom_testkit::tone_hz(&x[2 * from..(2 * to).min(x.len())], 2, f64::from(RATE))
    }

    /// Run `input` through a stretcher in blocks of `block` frames.
    fn run(settings: TimePitch, input: &[f32], block: usize) -> Vec<f32> {
        let mut st = Stretcher::new(RATE, settings).expect("not identity");
        let mut out = Vec::new();
        for b in input.chunks(2 * block) {
            st.process(b, &mut out);
        }
        st.finish(&mut out);
        out
    }

    #[test]
    fn identity_passes_untouched_and_settings_are_clamped() {
        assert!(Stretcher::new(RATE, TimePitch::default()).is_none());
        assert!(TimePitch { tempo: 1.0, transpose: 0.001 }.is_identity(), "under a cent");
        let c = TimePitch { tempo: 9.0, transpose: -40.0 }.clean();
        assert_eq!((c.tempo, c.transpose), (MAX_TEMPO, -MAX_TRANSPOSE));
        let c = TimePitch { tempo: f32::NAN, transpose: f32::INFINITY }.clean();
        assert_eq!((c.tempo, c.transpose), (1.0, 0.0));
        assert_eq!(TimePitch { tempo: 0.1, transpose: 0.0 }.clean().tempo, MIN_TEMPO);
    }

    #[test]
    fn an_octave_up_doubles_the_frequency_at_the_same_length() {
        let input = sine(440.0, 3 * RATE as usize);
        let out = run(TimePitch { tempo: 1.0, transpose: 12.0 }, &input, 1000);
        assert_eq!(out.len(), input.len(), "same duration");
        let f = frequency(&out, RATE as usize / 2, 5 * RATE as usize / 2);
        assert!((f / 880.0 - 1.0).abs() < 0.01, "440 Hz + 12 semitones measured {f:.2} Hz");
        let down = run(TimePitch { tempo: 1.0, transpose: -7.0 }, &input, 4096);
        let f = frequency(&down, RATE as usize / 2, 5 * RATE as usize / 2);
        let want = 440.0 * 2f64.powf(-7.0 / 12.0);
        assert!((f / want - 1.0).abs() < 0.01, "a fifth down: {f:.2} Hz, want {want:.2}");
    }

    #[test]
    fn half_tempo_doubles_the_duration_at_the_same_pitch() {
        // Silence, a 2 s tone from 0.5 s, silence: at 0.5x the tone lasts 4 s.
        let r = RATE as usize;
        let mut input = vec![0.0f32; r];
        input.extend(sine(440.0, 2 * r));
        input.extend(vec![0.0f32; 2 * r]);
        let out = run(TimePitch { tempo: 0.5, transpose: 0.0 }, &input, 777);
        assert_eq!(out.len(), 2 * input.len(), "twice as many frames");
        let f = frequency(&out, 3 * r / 2, 9 * r / 2);
        assert!((f / 440.0 - 1.0).abs() < 0.01, "pitch kept: {f:.2} Hz");
        // The tone's edges at half its level, in 10 ms steps.
        let level = |at: usize| out[2 * at..2 * (at + 441)].iter().step_by(2).map(|x| x.abs()).fold(0.0, f32::max);
        let steps: Vec<usize> = (0..out.len() / 2 - 441).step_by(441).collect();
        let on = steps.iter().find(|&&i| level(i) >= 0.25).expect("the tone starts");
        let off = steps.iter().find(|&&i| i > *on && level(i) < 0.25).expect("the tone ends");
        let seconds = (off - on) as f64 / f64::from(RATE);
        assert!((seconds / 4.0 - 1.0).abs() < 0.01, "the tone lasts {seconds:.3} s, want 4.0 s");
    }

    #[test]
    fn output_stays_in_song_time_at_any_tempo() {
        // A tone that starts at 1.0 s is heard at 1.0 s / tempo (the
        // latency is compensated), within 10 ms.
        for tempo in [0.75f32, 1.25, 1.5] {
            let mut input = vec![0.0f32; 2 * RATE as usize];
            input.extend(sine(330.0, RATE as usize));
            let out = run(TimePitch { tempo, transpose: 0.0 }, &input, 512);
            let want = (input.len() / 2) as f64 / f64::from(tempo);
            assert!((out.len() as f64 / 2.0 - want).abs() <= 1.0, "length at {tempo}x");
            let onset = out.chunks_exact(2).position(|f| f[0].abs() > 0.25).expect("the tone is heard");
            let at = onset as f64 / f64::from(RATE);
            let expected = 1.0 / f64::from(tempo);
            assert!((at - expected).abs() < 0.010, "{tempo}x: tone heard at {at:.4} s, want {expected:.4} s");
        }
    }

    #[test]
    fn a_run_shorter_than_the_latency_still_gives_its_length() {
        let input = sine(440.0, 100);
        let out = run(TimePitch { tempo: 0.5, transpose: 3.0 }, &input, 64);
        assert_eq!(out.len(), 400);
        assert!(out.iter().all(|x| x.is_finite()));
        let empty = run(TimePitch { tempo: 1.5, transpose: 0.0 }, &[], 64);
        assert!(empty.is_empty());
    }
}

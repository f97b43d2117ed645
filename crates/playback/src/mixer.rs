//! The stem mixer: per-stem gain, mute and solo, master gain, and a loop
//! region, applied sample-synchronously to all stems. Used by the player's
//! audio callback and by "what I hear" exports, so both hear the same thing.
//!
//! Layout: every buffer is interleaved stereo `f32` (`[L0, R0, L1, R1, …]`);
//! positions and lengths are in frames at the stems' sample rate.
//!
//! Gain changes are ramped linearly over [`RAMP_SECONDS`] so moving a fader,
//! muting or soloing never clicks (a step in gain is a step in the waveform).
//!
//! Pan is a stereo balance (the usual control on a DAW's stereo track): at
//! the centre both channels pass at unity; towards one side the other
//! channel is turned down linearly, to silence at the end. So panning never
//! raises a channel and a centred stem sounds exactly as before.
//!
//! Tempo and transposition are part of the controls (what is heard), but
//! are applied before the mixer, per stem, by [`crate::stretch`].

use serde::{Deserialize, Serialize};

use crate::stretch::TimePitch;

/// Length of a gain ramp: 10 ms, short enough to feel immediate (well under
/// the ~50 ms at which a delay is noticed) and long enough not to click.
pub const RAMP_SECONDS: f64 = 0.010;

/// One stem's controls.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "specta", derive(specta::Type))]
#[serde(rename_all = "camelCase")]
pub struct StemControl {
    /// Linear gain (1.0 = unchanged), 0 to 4.
    pub gain: f32,
    pub mute: bool,
    pub solo: bool,
    /// Stereo balance, -1 (left only) to 1 (right only), 0 = centre.
    #[serde(default)]
    pub pan: f32,
}

impl Default for StemControl {
    fn default() -> Self {
        StemControl { gain: 1.0, mute: false, solo: false, pan: 0.0 }
    }
}

/// The controls of a whole mix.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "specta", derive(specta::Type))]
#[serde(rename_all = "camelCase")]
pub struct MixControls {
    /// In stem order.
    pub stems: Vec<StemControl>,
    /// Linear master gain, 0 to 4.
    pub master: f32,
    /// Playback speed at the same pitch, [`crate::stretch::MIN_TEMPO`] to
    /// [`crate::stretch::MAX_TEMPO`] (1.0 = as recorded; controls saved
    /// without it read as 1.0).
    #[serde(default = "crate::stretch::unit_tempo")]
    pub tempo: f32,
    /// Transposition at the same tempo in semitones, ±12 (0 = as recorded).
    #[serde(default)]
    pub transpose: f32,
    /// A click on every beat of the song's tempo in the player (not in
    /// exports); needs the song's beat grid.
    #[serde(default)]
    pub metronome: bool,
    /// One bar of clicks before playback starts (the player only).
    #[serde(default)]
    pub count_in: bool,
    /// A/B: hear the original mixture instead of the mix (the player only,
    /// when the song's original file is there; see
    /// [`MixControls::with_original`]).
    #[serde(default)]
    pub original: bool,
}

impl MixControls {
    /// Unity gain on `n` stems.
    pub fn unity(n: usize) -> Self {
        MixControls {
            stems: vec![StemControl::default(); n],
            master: 1.0,
            tempo: 1.0,
            transpose: 0.0,
            metronome: false,
            count_in: false,
            original: false,
        }
    }

    /// The controls of a player that has the original mixture as one more
    /// source after the stems: with [`MixControls::original`] only the
    /// mixture is heard (at the master gain, speed and pitch, centred), else
    /// only the stems as these controls say.
    pub fn with_original(&self) -> MixControls {
        let mut c = self.clone();
        if self.original {
            for s in &mut c.stems {
                *s = StemControl { mute: true, solo: false, ..*s };
            }
        }
        // A soloed stem would silence an unsoloed mixture: the mixture is
        // soloed with it whenever it is to be heard.
        c.stems.push(StemControl { gain: 1.0, mute: !self.original, solo: self.original, pan: 0.0 });
        c
    }

    /// The tempo and pitch these controls ask for.
    pub fn time_pitch(&self) -> TimePitch {
        TimePitch { tempo: self.tempo, transpose: self.transpose }.clean()
    }

    /// Only the stems at `indices` heard, at unity (e.g. an instrumental is
    /// every stem but the vocals).
    pub fn only(n: usize, indices: &[usize]) -> Self {
        let mut c = Self::unity(n);
        for (i, s) in c.stems.iter_mut().enumerate() {
            s.mute = !indices.contains(&i);
        }
        c
    }

    /// The gain each stem's left and right channels are heard at, master
    /// and pan included: `[L0, R0, L1, R1, …]` (2 per stem). Rules (as in
    /// a mixing desk): when any stem is soloed only soloed stems are heard;
    /// a muted stem is silent even when soloed. Non-finite or negative gains
    /// count as 0; gains are capped at 4 (+12 dB); pan is clamped to -1…1
    /// (non-finite = centre) and applied as a balance (module docs).
    pub fn effective_gains(&self) -> Vec<f32> {
        let any_solo = self.stems.iter().any(|s| s.solo);
        let clean = |g: f32| if g.is_finite() { g.clamp(0.0, 4.0) } else { 0.0 };
        let master = clean(self.master);
        let mut gains = Vec::with_capacity(2 * self.stems.len());
        for s in &self.stems {
            let g = if s.mute || (any_solo && !s.solo) { 0.0 } else { clean(s.gain) * master };
            let pan = if s.pan.is_finite() { s.pan.clamp(-1.0, 1.0) } else { 0.0 };
            gains.push(g * (1.0 - pan.max(0.0)));
            gains.push(g * (1.0 + pan.min(0.0)));
        }
        gains
    }
}

/// A loop between two frame positions (`start < end`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "specta", derive(specta::Type))]
#[serde(rename_all = "camelCase")]
pub struct LoopRegion {
    pub start: u32,
    pub end: u32,
}

/// [`RAMP_SECONDS`] in frames at `sample_rate` Hz (at least one).
fn ramp_frames(sample_rate: u32) -> usize {
    ((f64::from(sample_rate) * RAMP_SECONDS).round() as usize).max(1)
}

/// Sums stems into one stereo stream with ramped gains.
#[derive(Debug, Clone)]
pub struct Mixer {
    current: Vec<f32>,
    target: Vec<f32>,
    /// Gains when the running ramp started.
    from: Vec<f32>,
    /// Frames of the running ramp already played (`ramp_frames` = none running).
    ramp_pos: usize,
    ramp_frames: usize,
}

impl Mixer {
    /// A mixer for `stems` stems at `sample_rate` Hz, starting at `controls`
    /// without a ramp.
    pub fn new(sample_rate: u32, controls: &MixControls) -> Self {
        let gains = controls.effective_gains();
        let ramp_frames = ramp_frames(sample_rate);
        Mixer { from: gains.clone(), current: gains.clone(), target: gains, ramp_pos: ramp_frames, ramp_frames }
    }

    /// Ramps of [`RAMP_SECONDS`] at `sample_rate` Hz from now on; a ramp
    /// under way ends at once.
    pub fn set_sample_rate(&mut self, sample_rate: u32) {
        self.ramp_frames = ramp_frames(sample_rate);
        self.current.clone_from(&self.target);
        self.from.clone_from(&self.target);
        self.ramp_pos = self.ramp_frames;
    }

    /// Move towards new controls; the change is heard as a ramp over the
    /// next [`RAMP_SECONDS`] of output.
    pub fn set_controls(&mut self, controls: &MixControls) {
        self.set_gains(&controls.effective_gains());
    }

    /// Move towards these gains (left and right per stem, as
    /// [`MixControls::effective_gains`] gives; missing ones are silent).
    /// Allocates nothing: the audio callback calls it.
    pub fn set_gains(&mut self, gains: &[f32]) {
        let n = self.target.len();
        let same = (0..n).all(|i| gains.get(i).copied().unwrap_or(0.0) == self.target[i]);
        if same {
            return;
        }
        for (i, t) in self.target.iter_mut().enumerate() {
            *t = gains.get(i).copied().unwrap_or(0.0);
        }
        // A new ramp starts from wherever the gains are now (mid-ramp too).
        self.from.copy_from_slice(&self.current);
        self.ramp_pos = 0;
    }

    /// The gains being applied now, `[L0, R0, L1, R1, …]` (mid-ramp values
    /// during a ramp).
    pub fn current_gains(&self) -> &[f32] {
        &self.current
    }

    /// Mix `sources` (one interleaved stereo buffer per stem, each at least
    /// `out.len()` samples) into `out`, overwriting it.
    pub fn mix(&mut self, sources: &[&[f32]], out: &mut [f32]) {
        out.fill(0.0);
        let frames = out.len() / 2;
        let mut done = 0;
        // Ramp part: gains interpolated per frame (computed from the ramp's
        // ends, not accumulated, so the ramp lands exactly on its target).
        while self.ramp_pos < self.ramp_frames && done < frames {
            self.ramp_pos += 1;
            let t = self.ramp_pos as f32 / self.ramp_frames as f32;
            for (s, src) in sources.iter().enumerate().take(self.current.len() / 2) {
                for c in 0..2 {
                    let k = 2 * s + c;
                    let g = self.from[k] + (self.target[k] - self.from[k]) * t;
                    self.current[k] = g;
                    out[2 * done + c] += src[2 * done + c] * g;
                }
            }
            done += 1;
        }
        // Steady part: constant gains; silent stems are skipped.
        for (s, src) in sources.iter().enumerate().take(self.current.len() / 2) {
            let (gl, gr) = (self.current[2 * s], self.current[2 * s + 1]);
            if gl == 0.0 && gr == 0.0 {
                continue;
            }
            for (o, x) in out[2 * done..2 * frames].chunks_exact_mut(2).zip(src[2 * done..2 * frames].chunks_exact(2)) {
                o[0] += x[0] * gl;
                o[1] += x[1] * gr;
            }
        }
    }
}

/// Where the next `frames` frames come from when playing from `position`
/// in a song of `length` frames, with an optional loop: a list of
/// `(start, frames)` runs, wrapping from the loop's end to its start.
/// Playing past the end of the song (no loop) returns only what is left.
/// A loop that ends past the song's end (the song turned out shorter than
/// its file declared) ends at the song's end; one that starts there, or
/// is empty, is ignored. Returns the runs and the position after them.
pub fn plan_reads(position: u64, frames: usize, length: u64, looping: Option<LoopRegion>) -> (Vec<(u64, usize)>, u64) {
    let mut runs = Vec::new();
    let mut pos = position.min(length);
    let mut left = frames as u64;
    let looping =
        looping.map(|l| (u64::from(l.start), u64::from(l.end).min(length))).filter(|(start, end)| start < end);
    match looping {
        Some((start, end)) => {
            // Past the loop (a seek beyond it): jump into it. Before it: play
            // on into it. Inside: play to its end, then wrap to its start.
            if pos >= end {
                pos = start;
            }
            while left > 0 {
                let n = (end - pos).min(left);
                runs.push((pos, n as usize));
                left -= n;
                pos += n;
                if pos >= end {
                    pos = start;
                }
            }
        }
        None => {
            let n = (length - pos).min(left);
            if n > 0 {
                runs.push((pos, n as usize));
            }
            pos += n;
        }
    }
    (runs, pos)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn solo_and_mute_rules() {
        // Left and right gain of each stem.
        let mono = |c: &MixControls| c.effective_gains().chunks(2).map(|lr| lr[0]).collect::<Vec<f32>>();
        let mut c = MixControls::unity(4);
        c.stems[1].gain = 0.5;
        assert_eq!(c.effective_gains(), [1.0, 1.0, 0.5, 0.5, 1.0, 1.0, 1.0, 1.0]);
        c.stems[3].mute = true;
        assert_eq!(mono(&c), [1.0, 0.5, 1.0, 0.0]);
        c.stems[1].solo = true;
        c.stems[3].solo = true;
        assert_eq!(mono(&c), [0.0, 0.5, 0.0, 0.0], "solo hears only soloed; mute wins");
        c.master = 2.0;
        assert_eq!(mono(&c), [0.0, 1.0, 0.0, 0.0]);
        c.master = f32::NAN;
        assert_eq!(c.effective_gains(), [0.0; 8]);
        assert_eq!(mono(&MixControls::only(4, &[0, 1, 2])), [1.0, 1.0, 1.0, 0.0]);
    }

    #[test]
    fn a_b_hears_the_original_alone_or_the_mix_without_it() {
        let mut c = MixControls::unity(3);
        c.stems[0].solo = true;
        c.stems[1].gain = 0.5;
        c.master = 0.8;
        let mono = |c: &MixControls| c.effective_gains().chunks(2).map(|lr| lr[0]).collect::<Vec<f32>>();
        assert_eq!(mono(&c.with_original()), [0.8, 0.0, 0.0, 0.0], "B: the mix as set, no original");
        c.original = true;
        assert_eq!(mono(&c.with_original()), [0.0, 0.0, 0.0, 0.8], "A: the original alone, at the master gain");
        c.stems[0].solo = false;
        c.stems[2].pan = -1.0;
        assert_eq!(c.with_original().effective_gains()[6..], [0.8, 0.8], "centred");
    }

    #[test]
    fn pan_is_a_balance_that_keeps_unity_at_the_centre() {
        let mut c = MixControls::unity(3);
        c.stems[0].pan = -1.0;
        c.stems[1].pan = 0.5;
        c.stems[2].pan = f32::NAN;
        c.stems[2].gain = 0.5;
        assert_eq!(c.effective_gains(), [1.0, 0.0, 0.5, 1.0, 0.5, 0.5]);
        c.stems[1].pan = 7.0;
        assert_eq!(c.effective_gains()[2..4], [0.0, 1.0], "clamped to the right");
        // The mixer applies it per channel.
        let src = vec![1.0f32; 20];
        let mut m = Mixer::new(44_100, &c);
        let mut out = vec![0.0; 20];
        m.mix(&[&src, &src, &src], &mut out);
        assert_eq!(&out[..2], [1.5, 1.5], "L: 1 + 0 + 0.5, R: 0 + 1 + 0.5");
        // Old saved controls without a pan read as centred.
        let old: StemControl = serde_json::from_str(r#"{"gain":1.0,"mute":false,"solo":false}"#).unwrap();
        assert_eq!(old.pan, 0.0);
    }

    #[test]
    fn mix_sums_with_gains_and_ramps_without_steps() {
        let n = 1000;
        let a: Vec<f32> = (0..2 * n).map(|i| (i as f32 * 0.01).sin()).collect();
        let b: Vec<f32> = vec![0.25; 2 * n];
        let mut c = MixControls::unity(2);
        c.stems[0].gain = 0.5;
        let mut m = Mixer::new(44_100, &c);
        let mut out = vec![0.0; 2 * n];
        m.mix(&[&a, &b], &mut out);
        for i in 0..2 * n {
            assert!((out[i] - (0.5 * a[i] + 0.25)).abs() < 1e-6);
        }
        // Mute stem 1: a 441-frame ramp from 1 to 0, monotone, no jump.
        c.stems[1].mute = true;
        m.set_controls(&c);
        let ones = vec![1.0f32; 2 * n];
        let zeros = vec![0.0f32; 2 * n];
        m.mix(&[&zeros, &ones], &mut out);
        assert!(out[0] < 1.0 && out[0] > 0.99);
        for f in 1..n {
            assert!(out[2 * f] <= out[2 * f - 2] + 1e-7, "frame {f}: {} after {}", out[2 * f], out[2 * f - 2]);
            assert!(out[2 * f - 2] - out[2 * f] < 1.0 / 400.0, "step at frame {f}");
        }
        assert!(out[2 * 439] > 0.0 && out[2 * 440] == 0.0, "441 frames of ramp, the last one at the target");
        assert_eq!(m.current_gains(), [0.5, 0.5, 0.0, 0.0]);
    }

    #[test]
    fn reads_wrap_at_the_loop_and_stop_at_the_end() {
        let l = Some(LoopRegion { start: 100, end: 200 });
        assert_eq!(plan_reads(150, 120, 1000, l), (vec![(150, 50), (100, 70)], 170));
        assert_eq!(plan_reads(50, 100, 1000, l), (vec![(50, 100)], 150), "plays on into the loop");
        assert_eq!(plan_reads(500, 30, 1000, l), (vec![(100, 30)], 130), "seeking past the loop jumps into it");
        assert_eq!(plan_reads(150, 250, 1000, l), (vec![(150, 50), (100, 100), (100, 100)], 100));
        assert_eq!(plan_reads(990, 100, 1000, None), (vec![(990, 10)], 1000));
        assert_eq!(plan_reads(1000, 100, 1000, None), (vec![], 1000));
        // An invalid loop is ignored.
        assert_eq!(plan_reads(0, 10, 1000, Some(LoopRegion { start: 5, end: 5 })), (vec![(0, 10)], 10));
        // A loop past the end ends at the end; one beyond it is ignored.
        let past = Some(LoopRegion { start: 900, end: 1200 });
        assert_eq!(plan_reads(950, 100, 1000, past), (vec![(950, 50), (900, 50)], 950));
        let beyond = Some(LoopRegion { start: 1000, end: 1200 });
        assert_eq!(plan_reads(990, 100, 1000, beyond), (vec![(990, 10)], 1000));
    }
}

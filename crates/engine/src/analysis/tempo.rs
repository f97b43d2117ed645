//! Tempo from an onset envelope and a Fourier tempogram.
//!
//! 1. Onset strength (spectral flux on a log-compressed magnitude STFT,
//!    half-wave rectified: Bello et al., "A Tutorial on Onset Detection in
//!    Music Signals", IEEE TSALP 2005) below [`BEAT_BAND_HZ`] (kick and
//!    snare carry the beat; hi-hats and rides above mostly subdivide it),
//!    frames of [`FRAME`] samples every [`HOP`], with its local mean over
//!    [`DETREND_SECONDS`] removed.
//! 2. For every candidate tempo from [`MIN_BPM`] to [`MAX_BPM`] in
//!    [`BPM_STEP`] steps, the envelope's Fourier magnitude at the beat
//!    frequency and its first [`HARMONICS`] multiples (Grosche & Müller,
//!    "Cyclic tempogram", ICASSP 2010, use the same Fourier view of the
//!    envelope). A pulse train at B BPM has energy at B/60 Hz and its
//!    multiples only, so half the true tempo scores on every other
//!    harmonic and loses; double the true tempo scores alike (its
//!    harmonics are a subset), so a mild log-normal prior around
//!    [`PRIOR_BPM`] (as librosa's `beat.tempo`, one octave wide) breaks the
//!    tie.
//! 3. The best candidate, refined by a parabola through its neighbours,
//!    then halved while half of it has energy at its odd harmonics (an
//!    accent pattern at the slower period: that is the beat).
//!
//! A 60 s excerpt resolves the beat frequency to 1/60 Hz, i.e. 1 BPM, and
//! the refinement goes finer; longer songs are analysed whole.

/// STFT frame, samples (93 ms at 11 025 Hz).
pub const FRAME: usize = 1024;
/// STFT hop, samples (11.6 ms at 11 025 Hz: 86 envelope frames a second).
pub const HOP: usize = 128;
/// Highest frequency in the onset envelope, Hz.
pub const BEAT_BAND_HZ: f64 = 300.0;
/// Log compression of magnitudes: `ln(1 + γ|X|)` with this γ.
const GAMMA: f32 = 100.0;
/// Window of the local mean removed from the envelope, seconds.
pub const DETREND_SECONDS: f64 = 1.0;
/// Range of tempi considered, beats per minute.
pub const MIN_BPM: f64 = 60.0;
pub const MAX_BPM: f64 = 200.0;
/// Grid of candidate tempi, BPM.
pub const BPM_STEP: f64 = 0.05;
/// Multiples of the beat frequency summed per candidate.
pub const HARMONICS: usize = 4;
/// Odd-harmonic energy (relative to the tempo's own harmonics) from which
/// half the tempo is taken as the beat.
/// Measured on the test loops: 0.7-1.0 at the true beat, under 0.06 at half
/// of it; 0.3 leaves a wide margin either way.
const HALF_TEMPO_RATIO: f64 = 0.3;
/// Centre of the tempo prior, BPM, and its width in octaves.
pub const PRIOR_BPM: f64 = 120.0;
const PRIOR_OCTAVES: f64 = 1.0;
/// How far after an onset the phase of its envelope bump puts it: half a
/// frame (46 ms at 11 025 Hz, where a Hann-windowed onset's energy grows
/// fastest) plus 32 ms for the bump's decay, measured on the test loops
/// (-28.6 to -33.4 ms of error without it at 97-174 BPM).
pub const ONSET_LAG_SECONDS: f64 = FRAME as f64 / 2.0 / 11_025.0 + 0.032;
/// Shortest audio analysed, seconds (a few beats at the slowest tempo).
pub const MIN_SECONDS: f64 = 4.0;
/// A tempo is reported only when its score stands this far above the
/// median candidate's (no steady beat otherwise).
const MIN_PROMINENCE: f64 = 3.0;

/// A tempo estimate.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Tempo {
    /// Beats per minute.
    pub bpm: f32,
    /// Best score over the median score of all candidates (≥ 3 when found).
    pub prominence: f32,
    /// Time of the first beat, seconds from the start (0 to one beat
    /// period): the phase of the envelope's component at the beat
    /// frequency, so the beats fall at `beat_offset + k · 60 / bpm` (within
    /// about 15 ms on drum loops).
    pub beat_offset: f32,
}

/// The onset-strength envelope of `samples` (mono, `rate` Hz): one value per
/// [`HOP`] samples, non-negative, local mean removed.
pub fn onset_envelope(samples: &[f32], rate: u32) -> Vec<f32> {
    if samples.len() < FRAME {
        return Vec::new();
    }
    let mut fft = super::FrameFft::new(FRAME);
    // Only the band that carries the beat (kick and snare); cymbals above
    // it mostly subdivide the beat and would pull the estimate to double.
    let beat_bins = ((BEAT_BAND_HZ * FRAME as f64 / f64::from(rate.max(1))).ceil() as usize).clamp(2, fft.bins());
    let mut previous = vec![0.0f32; beat_bins];
    let frames = (samples.len() - FRAME) / HOP + 1;
    let mut flux = Vec::with_capacity(frames);
    for t in 0..frames {
        let at = t * HOP;
        let Some(spectrum) = fft.spectrum(&samples[at..at + FRAME]) else { return Vec::new() };
        let mut sum = 0.0f32;
        for (p, c) in previous.iter_mut().zip(&spectrum[..beat_bins]) {
            let level = (1.0 + GAMMA * c.norm()).ln();
            if t > 0 {
                sum += (level - *p).max(0.0);
            }
            *p = level;
        }
        flux.push(if sum.is_finite() { sum } else { 0.0 });
    }
    // Remove the local mean (a running sum over the window) and rectify.
    let fps = f64::from(rate) / HOP as f64;
    let half = ((DETREND_SECONDS * fps) / 2.0).round() as usize;
    let mut prefix = vec![0.0f64; flux.len() + 1];
    for (i, v) in flux.iter().enumerate() {
        prefix[i + 1] = prefix[i] + f64::from(*v);
    }
    (0..flux.len())
        .map(|i| {
            let (a, b) = (i.saturating_sub(half), (i + half + 1).min(flux.len()));
            let mean = (prefix[b] - prefix[a]) / (b - a) as f64;
            (f64::from(flux[i]) - mean).max(0.0) as f32
        })
        .collect()
}

/// The tempo of `samples` (mono, at [`super::ANALYSIS_RATE`] Hz; `rate`
/// must be that rate), or `None` for audio shorter than [`MIN_SECONDS`],
/// silence, or no steady beat.
pub fn estimate(samples: &[f32], rate: u32) -> Option<Tempo> {
    if rate != super::ANALYSIS_RATE || (samples.len() as f64) < MIN_SECONDS * f64::from(rate) {
        return None;
    }
    let envelope = onset_envelope(samples, rate);
    if envelope.iter().all(|&v| v == 0.0) {
        return None;
    }
    let fps = f64::from(rate) / HOP as f64;
    let steps = ((MAX_BPM - MIN_BPM) / BPM_STEP).round() as usize + 1;
    let scores: Vec<f64> = (0..steps)
        .map(|i| {
            let bpm = MIN_BPM + i as f64 * BPM_STEP;
            let octaves = (bpm / PRIOR_BPM).log2() / PRIOR_OCTAVES;
            let prior = (-0.5 * octaves * octaves).exp();
            harmonics(&envelope, bpm / 60.0 / fps, 1) * prior
        })
        .collect();
    let (best, &top) = scores.iter().enumerate().max_by(|a, b| a.1.total_cmp(b.1))?;
    let mut sorted = scores.clone();
    sorted.sort_by(f64::total_cmp);
    let median = sorted[sorted.len() / 2];
    let prominence = if median > 0.0 { top / median } else { f64::INFINITY };
    if prominence.is_nan() || prominence < MIN_PROMINENCE {
        return None;
    }
    // Parabolic refinement between the neighbours.
    let offset = if best > 0 && best + 1 < scores.len() {
        let (l, c, r) = (scores[best - 1], scores[best], scores[best + 1]);
        let d = l - 2.0 * c + r;
        if d < 0.0 {
            (0.5 * (l - r) / d).clamp(-0.5, 0.5)
        } else {
            0.0
        }
    } else {
        0.0
    };
    let mut bpm = MIN_BPM + (best as f64 + offset) * BPM_STEP;
    // The beat or its subdivision: a pulse train at B BPM has every
    // harmonic of B, so 2B (a subset) scores alike and the prior may pick
    // it. Half the tempo is the beat when the envelope also has energy
    // between 2B's harmonics, i.e. at the odd harmonics of B (an accent on
    // every other onset: kick and snare on the beat, hats between).
    while bpm / 2.0 >= MIN_BPM {
        let half = bpm / 2.0 / 60.0 / fps;
        let odd = harmonics(&envelope, half, 2);
        let all = harmonics(&envelope, 2.0 * half, 1);
        if odd >= HALF_TEMPO_RATIO * all {
            bpm /= 2.0;
        } else {
            break;
        }
    }
    let beat_offset = beat_phase(&envelope, bpm, fps);
    Some(Tempo { bpm: bpm as f32, prominence: prominence.min(1e6) as f32, beat_offset: beat_offset as f32 })
}

/// Where the beats of `bpm` fall, seconds into the audio (0 ≤ t < one
/// period): a pulse train at times t0 + k·P has the Fourier phase
/// −2π·t0/P at 1/P, so t0 = −phase·P/2π. Envelope frame `t` starts at
/// sample `t·HOP`; its onset bump is centred [`ONSET_LAG_SECONDS`] later.
fn beat_phase(envelope: &[f32], bpm: f64, fps: f64) -> f64 {
    let w = 2.0 * std::f64::consts::PI * bpm / 60.0 / fps;
    let (mut re, mut im) = (0.0f64, 0.0f64);
    for (t, &v) in envelope.iter().enumerate() {
        let a = w * t as f64;
        re += f64::from(v) * a.cos();
        im -= f64::from(v) * a.sin();
    }
    let period = 60.0 / bpm;
    let frames = -im.atan2(re) / w; // envelope frames
    let seconds = frames / fps + ONSET_LAG_SECONDS;
    seconds.rem_euclid(period)
}

/// Mean magnitude of the envelope at `HARMONICS` multiples of `f` (cycles
/// per frame): `f`, `f + step·f`, `f + 2·step·f`, … (`step` 1: every
/// harmonic; 2: the odd ones).
fn harmonics(envelope: &[f32], f: f64, step: usize) -> f64 {
    (0..HARMONICS).map(|k| magnitude(envelope, (1 + k * step) as f64 * f)).sum::<f64>() / HARMONICS as f64
}

/// |Σ x[t]·e^(−2πi·f·t)| / len, for `f` in cycles per frame (Goertzel).
fn magnitude(x: &[f32], f: f64) -> f64 {
    let w = 2.0 * std::f64::consts::PI * f;
    let coeff = 2.0 * w.cos();
    let (mut s1, mut s2) = (0.0f64, 0.0f64);
    for &v in x {
        let s = f64::from(v) + coeff * s1 - s2;
        s2 = s1;
        s1 = s;
    }
    let power = s1 * s1 + s2 * s2 - coeff * s1 * s2;
    power.max(0.0).sqrt() / x.len().max(1) as f64
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::analysis::ANALYSIS_RATE;
    use rand::{RngExt, SeedableRng};

    /// A drum loop at `bpm`: a kick (decaying 60 Hz) on every beat, a snare
    /// (noise) on beats 2 and 4, closed hi-hats (short noise) on eighths.
    pub(crate) fn drums(bpm: f64, seconds: f64, seed: u64) -> Vec<f32> {
        let rate = f64::from(ANALYSIS_RATE);
        let n = (seconds * rate) as usize;
        let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(seed);
        let mut x = vec![0.0f32; n];
        let beat = 60.0 / bpm;
        let mut hat = (0.0f64, 0.0f64);
        let mut hit = |x: &mut Vec<f32>, at: f64, kind: u8, rng: &mut rand_chacha::ChaCha8Rng| {
            let hat = &mut hat;
            let start = (at * rate) as usize;
            let (len, decay) = match kind {
                0 => (0.25, 0.06),
                1 => (0.2, 0.05),
                _ => (0.05, 0.01),
            };
            for i in 0..(len * rate) as usize {
                let Some(s) = x.get_mut(start + i) else { break };
                let t = i as f64 / rate;
                let env = (-t / decay).exp();
                let v = match kind {
                    // A kick: a falling 100-50 Hz tone with a short click.
                    0 => {
                        0.8 * (2.0 * std::f64::consts::PI * (50.0 + 50.0 * (-t / 0.03).exp()) * t).sin()
                            + if t < 0.003 { 0.3 * rng.random_range(-1.0..1.0) } else { 0.0 }
                    }
                    1 => 0.5 * rng.random_range(-1.0..1.0),
                    // A hi-hat: white noise, high-passed (second difference).
                    _ => {
                        let n: f64 = rng.random_range(-1.0..1.0);
                        let v = 0.1 * (n - 2.0 * hat.0 + hat.1);
                        *hat = (n, hat.0);
                        v
                    }
                };
                *s += (v * env) as f32;
            }
        };
        let mut k = 0;
        while (k as f64) * beat / 2.0 < seconds {
            let at = k as f64 * beat / 2.0;
            if k % 2 == 0 {
                hit(&mut x, at, 0, &mut rng);
                if (k / 2) % 2 == 1 {
                    hit(&mut x, at, 1, &mut rng);
                }
            }
            hit(&mut x, at, 2, &mut rng);
            k += 1;
        }
        x
    }

    #[test]
    fn finds_the_tempo_of_drum_loops_within_one_bpm() {
        for (i, bpm) in [72.0, 97.0, 120.0, 128.0, 140.0, 174.0].into_iter().enumerate() {
            let t = estimate(&drums(bpm, 30.0, i as u64), ANALYSIS_RATE).expect("a tempo");
            assert!((f64::from(t.bpm) - bpm).abs() <= 1.0, "{bpm} BPM measured {:.2}", t.bpm);
        }
    }

    #[test]
    fn finds_where_the_beats_fall() {
        // The loops' kicks start at 0: shifted by `delay`, the first beat is
        // at `delay` (within 15 ms, about one envelope hop and a bit).
        for (i, (bpm, delay)) in [(97.0, 0.0), (120.0, 0.2), (128.0, 0.31), (174.0, 0.05)].into_iter().enumerate() {
            let mut x = vec![0.0f32; (delay * f64::from(ANALYSIS_RATE)) as usize];
            x.extend(drums(bpm, 30.0, 10 + i as u64));
            let t = estimate(&x, ANALYSIS_RATE).expect("a tempo");
            let period = 60.0 / bpm;
            let d = (f64::from(t.beat_offset) - delay).rem_euclid(period);
            let err = d.min(period - d);
            assert!(err < 0.015, "{bpm} BPM delayed {delay} s: first beat at {:.3} s", t.beat_offset);
        }
    }

    #[test]
    fn no_tempo_for_silence_noise_or_too_little_audio() {
        let rate = ANALYSIS_RATE as usize;
        assert_eq!(estimate(&vec![0.0; 20 * rate], ANALYSIS_RATE), None);
        assert_eq!(estimate(&drums(120.0, 2.0, 1), ANALYSIS_RATE), None, "too short");
        let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(9);
        let noise: Vec<f32> = (0..20 * rate).map(|_| rng.random_range(-0.5f32..0.5)).collect();
        assert_eq!(estimate(&noise, ANALYSIS_RATE), None, "steady noise has no beat");
        assert_eq!(estimate(&drums(120.0, 10.0, 1), 44_100), None, "only at the analysis rate");
    }
}

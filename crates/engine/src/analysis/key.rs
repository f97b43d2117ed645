//! Key from a chromagram and the Krumhansl-Kessler key profiles.
//!
//! The magnitude spectrum (STFT, [`FRAME`] samples every [`HOP`]) between
//! [`LOW_HZ`] and [`HIGH_HZ`] is folded onto the twelve pitch classes
//! (equal temperament, A = 440 Hz), summed over the song, and correlated
//! (Pearson) with the 24 major and minor profiles of Krumhansl & Kessler,
//! "Tracing the dynamic changes in perceived tonal organization in a
//! spatial representation of musical keys", Psychological Review 89 (1982),
//! rotated to every tonic: the best correlation names the key (the
//! Krumhansl-Schmuckler algorithm, Krumhansl, "Cognitive Foundations of
//! Musical Pitch", 1990).

use serde::{Deserialize, Serialize};

/// STFT frame, samples (0.74 s at 11 025 Hz: 1.35 Hz bins, fine enough to
/// tell semitones apart from [`LOW_HZ`] up).
pub const FRAME: usize = 8192;
/// STFT hop, samples.
pub const HOP: usize = 4096;
/// Lowest and highest frequency folded onto pitch classes, Hz (A1 to A6).
pub const LOW_HZ: f64 = 55.0;
pub const HIGH_HZ: f64 = 1760.0;
/// Below this correlation no key is reported (atonal or unpitched audio).
const MIN_CORRELATION: f64 = 0.5;

/// Krumhansl-Kessler probe-tone ratings, from the tonic up in semitones.
pub const MAJOR_PROFILE: [f64; 12] = [6.35, 2.23, 3.48, 2.33, 4.38, 4.09, 2.52, 5.19, 2.39, 3.66, 2.29, 2.88];
pub const MINOR_PROFILE: [f64; 12] = [6.33, 2.68, 3.52, 5.38, 2.60, 3.53, 2.54, 4.75, 3.98, 2.69, 3.34, 3.17];

/// Tonic names from C, as musicians usually spell the keys: the spelling
/// with fewer accidentals in the key signature (D♭ major, 5 flats, not C♯
/// major, 7 sharps; G♯ minor, 5 sharps, not A♭ minor, 7 flats).
const MAJOR_NAMES: [&str; 12] = ["C", "D♭", "D", "E♭", "E", "F", "F♯", "G", "A♭", "A", "B♭", "B"];
const MINOR_NAMES: [&str; 12] = ["C", "C♯", "D", "E♭", "E", "F", "F♯", "G", "G♯", "A", "B♭", "B"];

/// Major or minor.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "specta", derive(specta::Type))]
#[serde(rename_all = "camelCase")]
pub enum Mode {
    Major,
    Minor,
}

/// A key.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "specta", derive(specta::Type))]
#[serde(rename_all = "camelCase")]
pub struct Key {
    /// Pitch class of the tonic, 0 = C … 11 = B.
    pub tonic: u8,
    pub mode: Mode,
    /// "A minor", "E♭ major".
    pub name: String,
    /// The Camelot wheel code DJs mix by ("8A" = A minor, "8B" = C major).
    pub camelot: String,
    /// Pearson correlation of the song's chroma with the key's profile
    /// (−1 to 1; reported keys have at least 0.5).
    pub correlation: f32,
}

impl Key {
    fn new(tonic: u8, mode: Mode, correlation: f64) -> Self {
        let t = usize::from(tonic % 12);
        let name = match mode {
            Mode::Major => format!("{} major", MAJOR_NAMES[t]),
            Mode::Minor => format!("{} minor", MINOR_NAMES[t]),
        };
        // Camelot: C major = 8B, each fifth up adds one; minors share the
        // number of their relative major (A minor = 8A).
        let major_tonic = if mode == Mode::Major { t } else { (t + 3) % 12 };
        let number = (7 * major_tonic + 7) % 12 + 1;
        let camelot = format!("{number}{}", if mode == Mode::Major { 'B' } else { 'A' });
        Key { tonic: tonic % 12, mode, name, camelot, correlation: correlation as f32 }
    }
}

/// The song's pitch-class profile: summed magnitudes per pitch class from C,
/// for `samples` (mono, `rate` Hz).
pub fn chroma(samples: &[f32], rate: u32) -> [f64; 12] {
    let mut out = [0.0f64; 12];
    if samples.len() < FRAME || rate == 0 {
        return out;
    }
    let mut fft = super::FrameFft::new(FRAME);
    let bin_hz = f64::from(rate) / FRAME as f64;
    // Each bin's pitch class (None outside the range).
    let classes: Vec<Option<usize>> = (0..fft.bins())
        .map(|k| {
            let f = k as f64 * bin_hz;
            (LOW_HZ..=HIGH_HZ).contains(&f).then(|| {
                let midi = 69.0 + 12.0 * (f / 440.0).log2();
                (midi.round() as i64).rem_euclid(12) as usize
            })
        })
        .collect();
    for at in (0..=samples.len() - FRAME).step_by(HOP) {
        let Some(spectrum) = fft.spectrum(&samples[at..at + FRAME]) else { return [0.0; 12] };
        for (c, class) in spectrum.iter().zip(&classes) {
            if let Some(pc) = class {
                let m = f64::from(c.norm());
                if m.is_finite() {
                    out[*pc] += m;
                }
            }
        }
    }
    out
}

/// Pearson correlation of two profiles.
fn correlation(a: &[f64; 12], b: &[f64; 12]) -> f64 {
    let (ma, mb) = (a.iter().sum::<f64>() / 12.0, b.iter().sum::<f64>() / 12.0);
    let (mut num, mut da, mut db) = (0.0, 0.0, 0.0);
    for i in 0..12 {
        num += (a[i] - ma) * (b[i] - mb);
        da += (a[i] - ma).powi(2);
        db += (b[i] - mb).powi(2);
    }
    if da <= 0.0 || db <= 0.0 {
        return 0.0;
    }
    num / (da * db).sqrt()
}

/// The key of `samples` (mono, `rate` Hz), or `None` for silence or audio
/// whose pitch classes fit no key.
pub fn estimate(samples: &[f32], rate: u32) -> Option<Key> {
    let c = chroma(samples, rate);
    if c.iter().sum::<f64>() <= 0.0 {
        return None;
    }
    let mut best: Option<(f64, u8, Mode)> = None;
    for tonic in 0..12u8 {
        for (mode, profile) in [(Mode::Major, &MAJOR_PROFILE), (Mode::Minor, &MINOR_PROFILE)] {
            let mut rotated = [0.0; 12];
            for (i, r) in rotated.iter_mut().enumerate() {
                *r = profile[(i + 12 - usize::from(tonic)) % 12];
            }
            let r = correlation(&c, &rotated);
            if best.is_none_or(|(b, ..)| r > b) {
                best = Some((r, tonic, mode));
            }
        }
    }
    let (r, tonic, mode) = best?;
    (r >= MIN_CORRELATION).then(|| Key::new(tonic, mode, r))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::analysis::ANALYSIS_RATE;

    /// Chords (MIDI notes) half a second each, as tones with 4 harmonics,
    /// the root an octave down as a bass, repeated to `seconds`.
    pub(crate) fn progression(chords: &[&[i32]], seconds: f64) -> Vec<f32> {
        let rate = f64::from(ANALYSIS_RATE);
        let per = (0.5 * rate) as usize;
        let n = (seconds * rate) as usize;
        (0..n)
            .map(|i| {
                let chord = chords[(i / per) % chords.len()];
                let t = i as f64 / rate;
                let mut v = 0.0;
                let bass = chord[0] - 12;
                for &note in chord.iter().chain(std::iter::once(&bass)) {
                    let f = 440.0 * 2f64.powf(f64::from(note - 69) / 12.0);
                    for h in 1..=4 {
                        v += (2.0 * std::f64::consts::PI * f * f64::from(h) * t).sin() / f64::from(h);
                    }
                }
                (0.05 * v) as f32
            })
            .collect()
    }

    #[test]
    fn names_keys_and_their_camelot_codes() {
        assert_eq!(Key::new(9, Mode::Minor, 0.9).camelot, "8A");
        assert_eq!(Key::new(0, Mode::Major, 0.9).camelot, "8B");
        assert_eq!(Key::new(7, Mode::Major, 0.9).camelot, "9B");
        assert_eq!(Key::new(3, Mode::Major, 0.9).name, "E♭ major");
        assert_eq!(Key::new(3, Mode::Major, 0.9).camelot, "5B");
        assert_eq!(Key::new(6, Mode::Minor, 0.9).camelot, "11A");
        // Spelled as key signatures are: G♯ minor (5 sharps), D♭ major (5 flats).
        let g_sharp = Key::new(8, Mode::Minor, 0.9);
        assert_eq!((g_sharp.name.as_str(), g_sharp.camelot.as_str()), ("G♯ minor", "1A"));
        assert_eq!(Key::new(8, Mode::Major, 0.9).name, "A♭ major");
        assert_eq!(Key::new(1, Mode::Major, 0.9).name, "D♭ major");
        assert_eq!(Key::new(1, Mode::Minor, 0.9).name, "C♯ minor");
    }

    #[test]
    fn finds_the_key_of_chord_progressions() {
        // A minor: Am Dm E Am (harmonic minor's dominant).
        let a_minor: [&[i32]; 4] = [&[57, 60, 64], &[62, 65, 69], &[64, 68, 71], &[57, 60, 64]];
        // E♭ major: E♭ A♭ B♭ E♭.
        let e_flat: [&[i32]; 4] = [&[63, 67, 70], &[68, 72, 75], &[70, 74, 77], &[63, 67, 70]];
        // F♯ minor: F♯m Bm C♯ F♯m.
        let f_sharp_minor: [&[i32]; 4] = [&[66, 69, 73], &[71, 74, 78], &[73, 77, 80], &[66, 69, 73]];
        // G major: G C D G.
        let g: [&[i32]; 4] = [&[67, 71, 74], &[72, 76, 79], &[74, 78, 81], &[67, 71, 74]];
        for (chords, want) in
            [(&a_minor, "A minor"), (&e_flat, "E♭ major"), (&f_sharp_minor, "F♯ minor"), (&g, "G major")]
        {
            let k = estimate(&progression(chords, 16.0), ANALYSIS_RATE).expect("a key");
            assert_eq!(k.name, want, "{k:?}");
        }
    }

    #[test]
    fn no_key_for_silence() {
        assert_eq!(estimate(&vec![0.0; 20 * ANALYSIS_RATE as usize], ANALYSIS_RATE), None);
        assert_eq!(estimate(&[0.1; 100], ANALYSIS_RATE), None, "too short");
    }
}

//! What a musician asks of a finished song besides its stems: its tempo in
//! beats per minute (from the drums stem, where the beat is clearest) and
//! its key (from the other stems summed, without the drums, whose noise
//! smears the pitch classes).
//!
//! Input everywhere: mono `f32` samples at a sample rate in Hz. Both are
//! resampled first to [`ANALYSIS_RATE`] (rubato, [`StreamResampler`]): the
//! beat and the notes that name a key lie far below its 5.5 kHz Nyquist.
//!
//! No well-kept Rust library estimates tempo or key (crates.io has tap-tempo
//! helpers and unmaintained experiments; aubio and libKeyFinder are C/C++
//! with no maintained bindings), so the two classic methods are written
//! here: a spectral-flux onset envelope with a Fourier tempogram
//! ([`tempo`]), and a chromagram correlated with the Krumhansl-Kessler key
//! profiles ([`key`]).

pub mod key;
pub mod tempo;

use serde::{Deserialize, Serialize};

use std::path::Path;

use crate::audio::decode::StreamDecoder;
use crate::audio::resample::StreamResampler;

/// Rate both analyses work at, in Hz (44.1 kHz / 4).
pub const ANALYSIS_RATE: u32 = 11_025;

/// A song's tempo and key, as stored with it (`stemroom.json`, the library).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "specta", derive(specta::Type))]
#[serde(rename_all = "camelCase")]
pub struct SongAnalysis {
    /// Beats per minute, to 0.001 (the beat grid is built from it: rounded
    /// to one decimal it slipped up to 125 ms over 5 minutes at 120 BPM;
    /// shown with one decimal); `None` when no steady beat was found
    /// (silence, no drums, free time).
    pub bpm: Option<f32>,
    /// Time of the first beat in seconds (the beats fall at
    /// `beat_offset + k · 60 / bpm`); with `bpm`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub beat_offset: Option<f32>,
    /// The key, e.g. "A minor"; `None` for silence or unpitched audio.
    pub key: Option<key::Key>,
}

/// A Hann-windowed real FFT of one frame length, its buffers reused from
/// frame to frame (both analyses' STFT).
pub(crate) struct FrameFft {
    fft: std::sync::Arc<dyn realfft::RealToComplex<f32>>,
    window: Vec<f32>,
    input: Vec<f32>,
    spectrum: Vec<realfft::num_complex::Complex<f32>>,
    scratch: Vec<realfft::num_complex::Complex<f32>>,
}

impl FrameFft {
    /// An FFT of `len` samples (`len / 2 + 1` bins).
    pub(crate) fn new(len: usize) -> Self {
        let fft = realfft::RealFftPlanner::<f32>::new().plan_fft_forward(len);
        let window =
            (0..len).map(|i| (0.5 - 0.5 * (2.0 * std::f64::consts::PI * i as f64 / len as f64).cos()) as f32).collect();
        FrameFft {
            input: fft.make_input_vec(),
            spectrum: fft.make_output_vec(),
            scratch: fft.make_scratch_vec(),
            window,
            fft,
        }
    }

    /// Bins of the FFT.
    pub(crate) fn bins(&self) -> usize {
        self.spectrum.len()
    }

    /// The spectrum of `frame` (exactly the FFT's length), windowed; `None`
    /// if the FFT refuses it.
    pub(crate) fn spectrum(&mut self, frame: &[f32]) -> Option<&[realfft::num_complex::Complex<f32>]> {
        for ((x, s), w) in self.input.iter_mut().zip(frame).zip(&self.window) {
            *x = s * w;
        }
        self.fft.process_with_scratch(&mut self.input, &mut self.spectrum, &mut self.scratch).ok()?;
        Some(&self.spectrum)
    }
}

/// A stem file (any format the decoders read) as mono at [`ANALYSIS_RATE`],
/// decoded and resampled block by block (a 4-minute song is 10 MB here).
///
/// # Errors
/// A message when the file cannot be decoded or its rate converted.
pub fn read_mono(path: &Path) -> Result<Vec<f32>, String> {
    let mut d = StreamDecoder::open(path).map_err(|e| e.to_string())?;
    let mut resampler: Option<StreamResampler> = None;
    let mut mono = Vec::new();
    let mut out = Vec::new();
    while let Some((block, rate)) = d.next_block().map_err(|e| e.to_string())? {
        let r = match resampler.as_mut() {
            Some(r) => r,
            None => resampler.insert(StreamResampler::new(rate, ANALYSIS_RATE, 1)?),
        };
        mono.clear();
        // Decoders give interleaved stereo.
        mono.extend(block.chunks_exact(2).map(|f| 0.5 * (f[0] + f[1])));
        r.push(&mono, &mut out)?;
    }
    if let Some(r) = resampler.as_mut() {
        r.finish(&mut out)?;
    }
    Ok(out)
}

/// Tempo and key of a separated song from its stem files: the tempo from
/// `drums` (when the model has a drums stem), the key from the sum of the
/// `others`.
///
/// # Errors
/// A message for the first stem that cannot be read.
pub fn analyse_stems(drums: Option<&Path>, others: &[&Path]) -> Result<SongAnalysis, String> {
    let tempo = match drums {
        Some(p) => tempo::estimate(&read_mono(p)?, ANALYSIS_RATE),
        None => None,
    };
    let mut harmonic: Vec<f32> = Vec::new();
    for p in others {
        let x = read_mono(p)?;
        if harmonic.len() < x.len() {
            harmonic.resize(x.len(), 0.0);
        }
        for (h, v) in harmonic.iter_mut().zip(&x) {
            *h += v;
        }
    }
    Ok(SongAnalysis {
        bpm: tempo.map(|t| (t.bpm * 1000.0).round() / 1000.0),
        beat_offset: tempo.map(|t| (t.beat_offset * 1000.0).round() / 1000.0),
        key: key::estimate(&harmonic, ANALYSIS_RATE),
    })
}

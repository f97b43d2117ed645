//! Short-time Fourier transform exactly as Demucs computes it.
//!
//! [`Stft`] reproduces `torch.stft`/`torch.istft` with a periodic Hann window,
//! `normalized=True` (forward scaled by `1/sqrt(n_fft)`), `center=True` with
//! reflect padding of `n_fft / 2`, one-sided spectra. [`SegmentSpec`] adds
//! Demucs' own padding and cropping (`demucs/htdemucs.py`, `_spec` and
//! `_ispec`) and the complex-as-channels layout the network takes.
//!
//! FFTs come from `realfft` (on `rustfft`).

use std::sync::Arc;

use realfft::num_complex::Complex32;
use realfft::{ComplexToReal, RealFftPlanner, RealToComplex};

use super::reflect_index;

/// A planned STFT of fixed size and hop.
pub struct Stft {
    n_fft: usize,
    hop: usize,
    window: Vec<f32>,
    fwd: Arc<dyn RealToComplex<f32>>,
    inv: Arc<dyn ComplexToReal<f32>>,
    time_buf: Vec<f32>,
    freq_buf: Vec<Complex32>,
    scratch_fwd: Vec<Complex32>,
    scratch_inv: Vec<Complex32>,
}

impl Stft {
    /// Plan an STFT of `n_fft` frames (even) with hop `hop`.
    pub fn new(n_fft: usize, hop: usize) -> Self {
        let mut planner = RealFftPlanner::<f32>::new();
        let fwd = planner.plan_fft_forward(n_fft);
        let inv = planner.plan_fft_inverse(n_fft);
        // Periodic Hann (torch.hann_window(n, periodic=True)).
        let window = (0..n_fft)
            .map(|k| (0.5 - 0.5 * (2.0 * std::f64::consts::PI * k as f64 / n_fft as f64).cos()) as f32)
            .collect();
        Stft {
            n_fft,
            hop,
            window,
            scratch_fwd: fwd.make_scratch_vec(),
            scratch_inv: inv.make_scratch_vec(),
            time_buf: fwd.make_input_vec(),
            freq_buf: fwd.make_output_vec(),
            fwd,
            inv,
        }
    }

    /// FFT size in frames.
    pub fn n_fft(&self) -> usize {
        self.n_fft
    }

    /// Number of frequency bins of a one-sided spectrum (`n_fft / 2 + 1`).
    pub fn bins(&self) -> usize {
        self.n_fft / 2 + 1
    }

    /// Number of STFT frames for a signal of `len` samples (`1 + len / hop`).
    pub fn frames_for(&self, len: usize) -> usize {
        1 + len / self.hop
    }

    /// `torch.stft(x, n_fft, hop, hann, normalized=True, center=True, pad_mode="reflect")`.
    ///
    /// `x` needs at least `n_fft / 2 + 1` samples (reflect padding). Output is
    /// frame-major: `out[t * bins + f]`, `frames_for(x.len())` frames.
    pub fn forward(&mut self, x: &[f32], out: &mut Vec<Complex32>) {
        let (n, half, bins) = (self.n_fft, self.n_fft as isize / 2, self.bins());
        let frames = self.frames_for(x.len());
        let norm = 1.0 / (n as f32).sqrt();
        out.clear();
        out.resize(frames * bins, Complex32::new(0.0, 0.0));
        for t in 0..frames {
            let start = (t * self.hop) as isize - half;
            for k in 0..n {
                let i = start + k as isize;
                let v = if i >= 0 && (i as usize) < x.len() { x[i as usize] } else { x[reflect_index(i, x.len())] };
                self.time_buf[k] = v * self.window[k] * norm;
            }
            // realfft only errors on wrong buffer lengths, which are fixed here.
            let _ = self.fwd.process_with_scratch(&mut self.time_buf, &mut self.freq_buf, &mut self.scratch_fwd);
            out[t * bins..(t + 1) * bins].copy_from_slice(&self.freq_buf);
        }
    }

    /// `torch.istft(z, n_fft, hop, hann, normalized=True, center=True, length=length)`.
    ///
    /// `z` is frame-major (`z[t * bins + f]`) with `frames` frames; writes
    /// `length` samples into `out`. The imaginary parts of the DC and Nyquist
    /// bins are ignored, as a C2R transform does.
    pub fn inverse(&mut self, z: &[Complex32], frames: usize, length: usize, out: &mut [f32]) {
        let (n, bins, hop) = (self.n_fft, self.bins(), self.hop);
        let half = n / 2;
        let total = n + hop * frames.saturating_sub(1);
        let mut y = vec![0.0f32; total];
        let mut env = vec![0.0f32; total];
        // realfft's inverse is unnormalised (gives n * idft); normalized=True
        // multiplies the idft by sqrt(n): net factor 1/sqrt(n).
        let scale = 1.0 / (n as f32).sqrt();
        for t in 0..frames {
            let frame = &z[t * bins..(t + 1) * bins];
            let off = t * hop;
            for k in 0..n {
                env[off + k] += self.window[k] * self.window[k];
            }
            if frame.iter().all(|c| c.re == 0.0 && c.im == 0.0) {
                continue;
            }
            self.freq_buf.copy_from_slice(frame);
            self.freq_buf[0].im = 0.0;
            self.freq_buf[bins - 1].im = 0.0;
            let _ = self.inv.process_with_scratch(&mut self.freq_buf, &mut self.time_buf, &mut self.scratch_inv);
            for k in 0..n {
                y[off + k] += self.time_buf[k] * scale * self.window[k];
            }
        }
        for (i, o) in out.iter_mut().enumerate().take(length) {
            let j = half + i;
            *o = if j < total && env[j] > 1e-11 { y[j] / env[j] } else { 0.0 };
        }
    }
}

/// Demucs' spectrogram of one segment, in and out of the network's layout.
pub struct SegmentSpec {
    stft: Stft,
    segment: usize,
    /// STFT frames the network sees: `ceil(segment / hop)`.
    frames: usize,
    /// Demucs' extra reflect pad on each side: `hop // 2 * 3`.
    pad: usize,
    padded: Vec<f32>,
    z: Vec<Complex32>,
    wave: Vec<f32>,
}

impl SegmentSpec {
    /// For segments of `segment` frames and an STFT of `n_fft` / `hop`.
    pub fn new(segment: usize, n_fft: usize, hop: usize) -> Self {
        let frames = segment.div_ceil(hop);
        let pad = hop / 2 * 3;
        SegmentSpec {
            stft: Stft::new(n_fft, hop),
            segment,
            frames,
            pad,
            padded: Vec::new(),
            z: Vec::new(),
            wave: vec![0.0; frames * hop + 2 * pad],
        }
    }

    /// Frequency bins the network sees (`n_fft / 2`).
    pub fn bins(&self) -> usize {
        self.stft.n_fft() / 2
    }

    /// STFT frames the network sees.
    pub fn frames(&self) -> usize {
        self.frames
    }

    /// `_spec` + complex-as-channels: `x` is planar `[channels][segment]`; `out`
    /// becomes `[channels * 2][bins][frames]` with channel order
    /// `[Re ch0, Im ch0, Re ch1, Im ch1, ...]`.
    ///
    /// Steps (separation.md 5-6): reflect-pad by `pad` left and
    /// `pad + frames * hop - segment` right, STFT, drop the Nyquist bin, keep
    /// frames `2 .. 2 + frames`.
    pub fn spec(&mut self, x: &[f32], channels: usize, out: &mut [f32]) {
        let (l, f_n, t_n, pad) = (self.segment, self.bins(), self.frames, self.pad);
        let padded_len = t_n * self.stft.hop + 2 * pad;
        let full_bins = self.stft.bins();
        for c in 0..channels {
            let xc = &x[c * l..(c + 1) * l];
            self.padded.clear();
            self.padded.extend((0..padded_len).map(|i| xc[reflect_index(i as isize - pad as isize, l)]));
            self.stft.forward(&self.padded, &mut self.z);
            for f in 0..f_n {
                let re = &mut out[((2 * c) * f_n + f) * t_n..][..t_n];
                for (t, v) in re.iter_mut().enumerate() {
                    *v = self.z[(t + 2) * full_bins + f].re;
                }
                let im = &mut out[((2 * c + 1) * f_n + f) * t_n..][..t_n];
                for (t, v) in im.iter_mut().enumerate() {
                    *v = self.z[(t + 2) * full_bins + f].im;
                }
            }
        }
    }

    /// `_mask` (cac) + `_ispec`, added into `out`: `z` is the network's
    /// frequency output `[sources][channels * 2][bins][frames]`; `out` is
    /// `[sources][channels][segment]` (the time branch, which this adds to).
    ///
    /// Steps (separation.md 8-10): back to complex, zero Nyquist bin and two
    /// zero frames each side, iSTFT of length `frames * hop + 2 * pad`, keep
    /// `pad .. pad + segment`.
    pub fn ispec_add(&mut self, z: &[f32], sources: usize, channels: usize, out: &mut [f32]) {
        let (l, f_n, t_n, pad) = (self.segment, self.bins(), self.frames, self.pad);
        let full_bins = self.stft.bins();
        let full_frames = t_n + 4;
        let wave_len = t_n * self.stft.hop + 2 * pad;
        for s in 0..sources {
            for c in 0..channels {
                self.z.clear();
                self.z.resize(full_frames * full_bins, Complex32::new(0.0, 0.0));
                let base = (s * 2 * channels + 2 * c) * f_n * t_n;
                for f in 0..f_n {
                    let re = &z[base + f * t_n..][..t_n];
                    let im = &z[base + f_n * t_n + f * t_n..][..t_n];
                    for t in 0..t_n {
                        self.z[(t + 2) * full_bins + f] = Complex32::new(re[t], im[t]);
                    }
                }
                self.stft.inverse(&self.z, full_frames, wave_len, &mut self.wave);
                let dst = &mut out[(s * channels + c) * l..][..l];
                for (d, w) in dst.iter_mut().zip(&self.wave[pad..pad + l]) {
                    *d += *w;
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::{RngExt, SeedableRng};
    use rand_chacha::ChaCha8Rng;

    fn noise(n: usize, seed: u64) -> Vec<f32> {
        let mut rng = ChaCha8Rng::seed_from_u64(seed);
        (0..n).map(|_| rng.random_range(-1.0f32..1.0)).collect()
    }

    /// Direct DFT of one reflect-padded, windowed frame, in f64.
    fn direct_frame(x: &[f32], t: usize, n_fft: usize, hop: usize, f: usize) -> (f64, f64) {
        let half = n_fft as isize / 2;
        let (mut re, mut im) = (0.0f64, 0.0f64);
        for k in 0..n_fft {
            let i = (t * hop) as isize - half + k as isize;
            let v = x[reflect_index(i, x.len())] as f64;
            let w = 0.5 - 0.5 * (2.0 * std::f64::consts::PI * k as f64 / n_fft as f64).cos();
            let ang = -2.0 * std::f64::consts::PI * (f * k) as f64 / n_fft as f64;
            re += v * w * ang.cos();
            im += v * w * ang.sin();
        }
        let norm = 1.0 / (n_fft as f64).sqrt();
        (re * norm, im * norm)
    }

    #[test]
    fn stft_matches_direct_dft_on_random_input() {
        let (n_fft, hop) = (64, 16);
        let x = noise(300, 1);
        let mut stft = Stft::new(n_fft, hop);
        let mut z = Vec::new();
        stft.forward(&x, &mut z);
        let frames = stft.frames_for(x.len());
        assert_eq!(frames, 1 + 300 / 16);
        let mut worst = 0.0f64;
        for t in 0..frames {
            for f in 0..stft.bins() {
                let (re, im) = direct_frame(&x, t, n_fft, hop, f);
                let got = z[t * stft.bins() + f];
                worst = worst.max((got.re as f64 - re).abs()).max((got.im as f64 - im).abs());
            }
        }
        assert!(worst < 1e-5, "max abs error {worst}");
    }

    #[test]
    fn istft_inverts_stft() {
        let (n_fft, hop) = (4096, 1024);
        let x = noise(44_100, 2);
        let mut stft = Stft::new(n_fft, hop);
        let mut z = Vec::new();
        stft.forward(&x, &mut z);
        let mut y = vec![0.0; x.len()];
        stft.inverse(&z, stft.frames_for(x.len()), x.len(), &mut y);
        let worst = x.iter().zip(&y).map(|(a, b)| (a - b).abs()).fold(0.0f32, f32::max);
        assert!(worst < 1e-5, "max abs error {worst}");
    }

    #[test]
    fn segment_spec_round_trip_and_layout() {
        // A short segment with the htdemucs STFT: ispec(spec(x)) = x. Demucs
        // drops the Nyquist bin, so the signal is a sum of random sinusoids
        // below 0.4 of the sample rate.
        let (l, channels) = (20_000, 2);
        let mut rng = ChaCha8Rng::seed_from_u64(3);
        let partials: Vec<(f64, f64)> =
            (0..24).map(|_| (rng.random_range(0.0..0.4), rng.random_range(0.0..6.3))).collect();
        let x: Vec<f32> = (0..l * channels)
            .map(|i| {
                partials.iter().map(|(f, ph)| ((2.0 * std::f64::consts::PI * f * i as f64) + ph).sin()).sum::<f64>()
                    as f32
                    / 8.0
            })
            .collect();
        let mut ss = SegmentSpec::new(l, 4096, 1024);
        assert_eq!(ss.frames(), 20);
        let mut spec = vec![0.0; channels * 2 * ss.bins() * ss.frames()];
        ss.spec(&x, channels, &mut spec);
        // Spec of channel 1 equals spec of channel 1 alone (layout check).
        let mut spec1 = vec![0.0; 2 * ss.bins() * ss.frames()];
        let mut ss1 = SegmentSpec::new(l, 4096, 1024);
        ss1.spec(&x[l..], 1, &mut spec1);
        assert_eq!(&spec[spec.len() / 2..], &spec1[..]);
        // One "source": feed the spectrogram back as the network output.
        let mut out = vec![0.0; channels * l];
        ss.ispec_add(&spec, 1, channels, &mut out);
        // Demucs keeps only STFT frames 2..2+frames, and frames that reach the
        // reflect padding see its kink, so ispec(spec(x)) is exact only where
        // every overlapping frame was kept and lies inside the segment: from
        // 4096 to 4096 before the end (htdemucs.py behaves the same).
        let interior = 4096..l - 4096;
        for c in 0..channels {
            let (xs, ys) = (&x[c * l..(c + 1) * l], &out[c * l..(c + 1) * l]);
            let worst = interior.clone().map(|i| (xs[i] - ys[i]).abs()).fold(0.0f32, f32::max);
            assert!(worst < 1e-5, "channel {c}: max abs error {worst}");
            // Outside it the missing frames attenuate the signal, as in Demucs.
            assert!((xs[0] - ys[0]).abs() > 1e-3);
        }
    }

    #[test]
    fn htdemucs_padding_constants() {
        // separation.md step 5: 336 frames, 1536 + 1620 padding -> 347136.
        let ss = SegmentSpec::new(343_980, 4096, 1024);
        assert_eq!(ss.frames(), 336);
        assert_eq!(ss.pad, 1536);
        assert_eq!(ss.frames * 1024 + 2 * ss.pad - 343_980 - ss.pad, 1620);
        assert_eq!(ss.wave.len(), 347_136);
    }
}

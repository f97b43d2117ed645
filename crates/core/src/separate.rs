//! The Demucs algorithm around the network (facebookresearch/demucs,
//! `demucs/apply.py` and `demucs/api.py`; restated in separation.md):
//! mix normalisation, random shifts, the overlap split with triangular
//! weights and real context, and the time + frequency branch sum.
//!
//! It streams: every shift pass keeps only an overlap-add window of about
//! one segment plus one stride, and finished frames leave through a
//! [`BlockSink`] as soon as every pass has finalised them. Memory does not
//! grow with the song.

use std::time::Instant;

use rand::{RngExt, SeedableRng};
use rand_chacha::ChaCha8Rng;

use crate::dsp::stft::SegmentSpec;
use crate::dsp::weights;
use crate::model::ModelInfo;
use crate::progress::{Event, Listener};
use crate::runtime::RuntimeError;
use crate::Error;

/// Maximum random shift in seconds (`apply.py`: `max_shift = int(0.5 * model.samplerate)`).
pub const MAX_SHIFT_SECONDS: f64 = 0.5;
/// Added to the standard deviation before dividing (`api.py`: `(wav - ref.mean()) / (ref.std() + 1e-8)`).
pub const NORM_EPS: f64 = 1e-8;

/// The network: one segment in, per-source estimates out.
pub trait Network {
    /// Run one segment and hand the outputs to `take` while they are alive
    /// (no copy of the 55 MB of outputs is kept between segments).
    ///
    /// - `mix`: planar `[channels][segment]` normalised waveform.
    /// - `spec`: `[channels * 2][bins][frames]` complex-as-channels spectrogram.
    /// - `take(out_spec, out_wave)`: `out_spec` is
    ///   `[sources][channels * 2][bins][frames]`, `out_wave` is
    ///   `[sources][channels][segment]`.
    ///
    /// # Errors
    /// [`RuntimeError`] if inference fails or the outputs have the wrong size.
    fn forward(&mut self, mix: &[f32], spec: &[f32], take: &mut dyn FnMut(&[f32], &[f32])) -> Result<(), RuntimeError>;
}

/// The mixture at the model's sample rate, readable by window.
pub trait MixSource {
    /// Length in frames. Channels are the model's (2).
    fn frames(&self) -> usize;
    /// Write frames `start .. start + len` (clipped to `0 .. frames()`) into
    /// `out` as planar `[channels][len]`, at offset `start - window_start`
    /// where `window_start` is the first frame of the window; frames outside
    /// the signal are left untouched (the caller zeroes them).
    ///
    /// # Errors
    /// I/O errors of the backing store.
    fn read(
        &mut self,
        start: usize,
        len: usize,
        out: &mut [f32],
        out_offset: usize,
        out_len: usize,
    ) -> std::io::Result<()>;
}

/// An in-memory mixture, planar `[channels][frames]`.
#[derive(Debug, Clone)]
pub struct MemoryMix {
    /// Planar samples, `channels * frames` long.
    pub data: Vec<f32>,
    /// Channel count.
    pub channels: usize,
}

impl MixSource for MemoryMix {
    fn frames(&self) -> usize {
        self.data.len() / self.channels.max(1)
    }
    fn read(&mut self, start: usize, len: usize, out: &mut [f32], off: usize, out_len: usize) -> std::io::Result<()> {
        let n = self.frames();
        for c in 0..self.channels {
            out[c * out_len + off..][..len].copy_from_slice(&self.data[c * n + start..][..len]);
        }
        Ok(())
    }
}

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

impl Default for SeparateOptions {
    fn default() -> Self {
        SeparateOptions { shifts: 1, overlap: 0.25, segment_frames: None, seed: 0 }
    }
}

/// Receives finished frames of every source, in order, exactly once.
pub trait BlockSink {
    /// `start` is the first frame's index; `stems` is planar
    /// `[sources][channels][frames]`, de-normalised, at the model rate.
    ///
    /// # Errors
    /// Whatever writing fails with.
    fn write(&mut self, start: usize, frames: usize, stems: &[f32]) -> Result<(), Error>;
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
    /// [`Error::InvalidOptions`] for an overlap outside `[0, 1)` or a segment
    /// longer than the model's or too short to stride.
    pub fn new(info: &ModelInfo, frames: usize, opts: &SeparateOptions) -> Result<Self, Error> {
        if !(0.0..1.0).contains(&opts.overlap) {
            return Err(Error::InvalidOptions(format!("overlap must be in [0, 1), got {}", opts.overlap)));
        }
        let segment = opts.segment_frames.unwrap_or(info.segment_frames);
        if segment > info.segment_frames {
            return Err(Error::InvalidOptions(format!(
                "segment must be at most {:.2} s for model {}",
                info.segment_seconds(),
                info.id
            )));
        }
        let stride = ((1.0 - opts.overlap as f64) * segment as f64) as usize;
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
    fn chunks(&self, len: usize) -> usize {
        len.div_ceil(self.stride)
    }

    /// Network runs over all passes.
    pub fn total_segments(&self) -> usize {
        self.passes.iter().map(|&(_, len)| self.chunks(len)).sum()
    }
}

/// Figures of a finished separation.
#[derive(Debug, Clone, Copy)]
pub struct SeparationStats {
    /// Network runs.
    pub segments: usize,
    /// Total seconds inside the network.
    pub network_seconds: f64,
}

/// One shift pass: its overlap-add window and its finished frames.
struct Pass {
    base: i64,
    len: usize,
    chunks: usize,
    next: usize,
    /// Pass frame of `acc[0]`; everything before is finalised.
    acc_start: usize,
    /// Frame-interleaved `[frame][source * channels]` weighted sums.
    acc: Vec<f32>,
    wsum: Vec<f32>,
    /// Finalised mixture frames not yet combined, frame-interleaved.
    queue: std::collections::VecDeque<f32>,
}

impl Pass {
    /// Mixture frame up to which this pass has finalised output.
    fn frontier(&self) -> i64 {
        self.acc_start as i64 + self.base
    }
}

/// Separate `mix` into the model's sources, streaming results into `sink`.
///
/// `stats` normalises the mixture (separation.md step 1); outputs are
/// de-normalised. Network input windows are always `info.segment_frames`
/// long and centred on their chunk, with real neighbouring audio as context
/// (step 4).
///
/// # Errors
/// [`Error::Cancelled`] if the listener cancels (checked before every
/// segment); network, I/O and sink errors.
pub fn separate(
    net: &mut dyn Network,
    info: &ModelInfo,
    mix: &mut dyn MixSource,
    stats: MixStats,
    opts: &SeparateOptions,
    sink: &mut dyn BlockSink,
    listener: &dyn Listener,
) -> Result<SeparationStats, Error> {
    let n = mix.frames();
    let plan = Plan::new(info, n, opts)?;
    let (s_n, c_n, l) = (info.sources.len(), info.channels, info.segment_frames);
    let k_n = s_n * c_n;
    let (bins, frames) = (info.freq_bins(), info.spec_frames());
    let weight = weights::triangle(plan.segment);
    let mut ss = SegmentSpec::new(l, info.stft.n_fft, info.stft.hop);

    let mut window = vec![0.0f32; c_n * l];
    let mut spec = vec![0.0f32; 2 * c_n * bins * frames];
    let mut out_wave = vec![0.0f32; s_n * c_n * l];

    let scale = (stats.std + NORM_EPS) as f32;
    let mean = stats.mean as f32;
    let inv_scale = 1.0 / (stats.std + NORM_EPS);

    let mut passes: Vec<Pass> = plan
        .passes
        .iter()
        .map(|&(base, len)| Pass {
            base,
            len,
            chunks: plan.chunks(len),
            next: 0,
            acc_start: 0,
            acc: Vec::new(),
            wsum: Vec::new(),
            queue: Default::default(),
        })
        .collect();
    let total = plan.total_segments();
    let started = Instant::now();
    let mut network_seconds = 0.0;
    let mut done = 0usize;
    let mut emitted = 0usize;
    let mut block = Vec::new();

    // Advance the unfinished pass that lags furthest behind.
    while let Some(pi) =
        (0..passes.len()).filter(|&i| passes[i].next < passes[i].chunks).min_by_key(|&i| passes[i].frontier())
    {
        if listener.is_cancelled() {
            return Err(Error::Cancelled);
        }
        let p = &mut passes[pi];
        let a = p.next * plan.stride;
        let chunk_len = plan.segment.min(p.len - a);
        // Model window centred on the chunk, in mixture frames (TensorChunk.padded).
        let lead = (l - chunk_len) / 2;
        let win_start = p.base + a as i64 - lead as i64;
        window.fill(0.0);
        let lo = win_start.max(0);
        let hi = (win_start + l as i64).min(n as i64);
        if hi > lo {
            let off = (lo - win_start) as usize;
            let len = (hi - lo) as usize;
            mix.read(lo as usize, len, &mut window, off, l).map_err(Error::Scratch)?;
            for c in 0..c_n {
                for v in &mut window[c * l + off..][..len] {
                    *v = ((*v as f64 - stats.mean) * inv_scale) as f32;
                }
            }
        }
        ss.spec(&window, c_n, &mut spec);
        let t0 = Instant::now();
        let mut host_seconds = 0.0;
        net.forward(&window, &spec, &mut |zs, xt| {
            let t1 = Instant::now();
            out_wave.copy_from_slice(xt);
            ss.ispec_add(zs, s_n, c_n, &mut out_wave);
            host_seconds = t1.elapsed().as_secs_f64();
        })?;
        let dt = t0.elapsed().as_secs_f64() - host_seconds;
        network_seconds += dt;

        // Overlap-add the chunk's centre into the pass accumulator.
        let need = (a + chunk_len - p.acc_start) * k_n;
        if p.acc.len() < need {
            p.acc.resize(need, 0.0);
            p.wsum.resize(need / k_n, 0.0);
        }
        let rel = a - p.acc_start;
        for j in 0..chunk_len {
            let w = weight[j];
            let dst = &mut p.acc[(rel + j) * k_n..][..k_n];
            for (k, d) in dst.iter_mut().enumerate() {
                *d += w * out_wave[k * l + lead + j];
            }
            p.wsum[rel + j] += w;
        }
        p.next += 1;
        let final_upto = if p.next < p.chunks { p.next * plan.stride } else { p.len };
        let count = final_upto - p.acc_start;
        for j in 0..count {
            let x = p.acc_start as i64 + j as i64 + p.base;
            if x >= 0 && (x as usize) < n {
                let w = p.wsum[j];
                p.queue.extend(p.acc[j * k_n..(j + 1) * k_n].iter().map(|v| v / w));
            }
        }
        p.acc.drain(..count * k_n);
        p.wsum.drain(..count);
        p.acc_start = final_upto;

        done += 1;
        let elapsed = started.elapsed().as_secs_f64();
        listener.event(&Event::Segment {
            index: done,
            total,
            network_seconds: dt,
            elapsed_seconds: elapsed,
            eta_seconds: elapsed / done as f64 * (total - done) as f64,
        });

        // Average the frames every pass has finished, and hand them on.
        let ready = passes.iter().map(|p| p.queue.len() / k_n).min().unwrap_or(0);
        if ready > 0 {
            block.clear();
            block.resize(k_n * ready, 0.0);
            let inv_passes = 1.0 / passes.len() as f32;
            for p in &mut passes {
                for (j, v) in p.queue.drain(..ready * k_n).enumerate() {
                    let (frame, k) = (j / k_n, j % k_n);
                    block[k * ready + frame] += v;
                }
            }
            for v in &mut block {
                *v = *v * inv_passes * scale + mean;
            }
            sink.write(emitted, ready, &block)?;
            emitted += ready;
        }
    }
    debug_assert_eq!(emitted, n);
    Ok(SeparationStats { segments: done, network_seconds })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::Manifest;

    /// A network whose every source is the input segment scaled by
    /// `gain[source]`, through the time branch alone, or (`through_spec`)
    /// through the frequency branch with the time branch carrying only what
    /// Demucs' cropped iSTFT loses at the segment edges. Any misplaced window,
    /// weight, shift or tensor layout shows up as an error against the input.
    struct EchoNet {
        sources: usize,
        channels: usize,
        gain: Vec<f32>,
        through_spec: bool,
        ss: Option<SegmentSpec>,
    }

    impl Network for EchoNet {
        fn forward(
            &mut self,
            mix: &[f32],
            spec: &[f32],
            take: &mut dyn FnMut(&[f32], &[f32]),
        ) -> Result<(), RuntimeError> {
            let (sl, wl) = (spec.len(), mix.len());
            let mut out_spec = vec![0.0f32; self.sources * sl];
            let mut out_wave = vec![0.0f32; self.sources * wl];
            for s in 0..self.sources {
                let g = self.gain[s];
                if self.through_spec {
                    for (o, v) in out_spec[s * sl..][..sl].iter_mut().zip(spec) {
                        *o = v * g;
                    }
                    let ss = self.ss.as_mut().expect("segment spec");
                    let mut lost = vec![0.0f32; wl];
                    ss.ispec_add(spec, 1, self.channels, &mut lost);
                    for ((o, m), y) in out_wave[s * wl..][..wl].iter_mut().zip(mix).zip(&lost) {
                        *o = (m - y) * g;
                    }
                } else {
                    out_spec[s * sl..][..sl].fill(0.0);
                    for (o, v) in out_wave[s * wl..][..wl].iter_mut().zip(mix) {
                        *o = v * g;
                    }
                }
            }
            take(&out_spec, &out_wave);
            Ok(())
        }
    }

    struct Collect {
        data: Vec<f32>,
        frames: usize,
        k: usize,
        next: usize,
    }
    impl BlockSink for Collect {
        fn write(&mut self, start: usize, frames: usize, stems: &[f32]) -> Result<(), Error> {
            assert_eq!(start, self.next, "blocks arrive in order");
            for k in 0..self.k {
                self.data[k * self.frames + start..][..frames].copy_from_slice(&stems[k * frames..][..frames]);
            }
            self.next += frames;
            Ok(())
        }
    }

    fn small_model() -> ModelInfo {
        let mut info = Manifest::builtin().expect("manifest").get("htdemucs").expect("model").clone();
        // Small segment so tests are fast; same STFT.
        info.segment_frames = 16_384;
        info.sample_rate = 8_000; // max shift 4000 frames
        info
    }

    fn run(info: &ModelInfo, frames: usize, opts: SeparateOptions, through_spec: bool) -> (Vec<f32>, Vec<f32>) {
        let mix: Vec<f32> =
            (0..frames * 2).map(|i| ((i as f32 * 0.013).sin() + 0.3 * (i as f32 * 0.0007).cos()) * 0.5 + 0.1).collect();
        let stats = {
            let mut acc = MixStatsAccumulator::default();
            for t in 0..frames {
                acc.push((mix[t] as f64 + mix[frames + t] as f64) / 2.0);
            }
            acc.stats()
        };
        let sources = info.sources.len();
        let ss = through_spec.then(|| SegmentSpec::new(info.segment_frames, info.stft.n_fft, info.stft.hop));
        let mut net = EchoNet { sources, channels: 2, gain: vec![1.0, 0.5, 0.25, 0.125], through_spec, ss };
        let mut sink = Collect { data: vec![0.0; sources * 2 * frames], frames, k: sources * 2, next: 0 };
        let mut src = MemoryMix { data: mix.clone(), channels: 2 };
        separate(&mut net, info, &mut src, stats, &opts, &mut sink, &crate::progress::Silent).expect("separate");
        assert_eq!(sink.next, frames);
        // Expected: source s = gain * normalised mix, de-normalised.
        let scale = (stats.std + NORM_EPS) as f32;
        let mut want = vec![0.0; sources * 2 * frames];
        for s in 0..sources {
            for i in 0..2 * frames {
                let norm = (mix[i] - stats.mean as f32) / scale;
                want[s * 2 * frames + i] = norm * net.gain[s] * scale + stats.mean as f32;
            }
        }
        (sink.data, want)
    }

    fn max_err(a: &[f32], b: &[f32]) -> f32 {
        a.iter().zip(b).map(|(x, y)| (x - y).abs()).fold(0.0, f32::max)
    }

    #[test]
    fn overlap_add_reassembles_the_signal_without_shifts() {
        let info = small_model();
        for frames in [1, 100, 16_384, 16_385, 50_000] {
            let opts = SeparateOptions { shifts: 0, ..Default::default() };
            let (got, want) = run(&info, frames, opts, false);
            assert!(max_err(&got, &want) < 1e-4, "frames {frames}: {}", max_err(&got, &want));
        }
    }

    #[test]
    fn shifts_and_short_segments_stay_aligned() {
        let info = small_model();
        for (shifts, seg) in [(1, None), (3, None), (2, Some(10_000))] {
            let opts = SeparateOptions { shifts, segment_frames: seg, seed: 7, overlap: 0.25 };
            let (got, want) = run(&info, 40_000, opts, false);
            assert!(max_err(&got, &want) < 1e-4, "shifts {shifts}: {}", max_err(&got, &want));
        }
    }

    #[test]
    fn frequency_branch_round_trips_through_istft() {
        let info = small_model();
        let opts = SeparateOptions { shifts: 1, seed: 3, ..Default::default() };
        let (got, want) = run(&info, 30_000, opts, true);
        assert!(max_err(&got, &want) < 1e-4, "{}", max_err(&got, &want));
    }

    #[test]
    fn plan_matches_apply_py() {
        let info = Manifest::builtin().expect("manifest").get("htdemucs").expect("model").clone();
        let plan = Plan::new(&info, 44_100 * 60, &SeparateOptions { shifts: 0, ..Default::default() }).expect("plan");
        assert_eq!(plan.stride, 257_985);
        assert_eq!(plan.total_segments(), 11);
        let a = Plan::new(&info, 1000, &SeparateOptions { shifts: 2, seed: 42, ..Default::default() }).expect("plan");
        let b = Plan::new(&info, 1000, &SeparateOptions { shifts: 2, seed: 42, ..Default::default() }).expect("plan");
        assert_eq!(a.passes, b.passes, "seeded shifts are reproducible");
        for &(base, len) in &a.passes {
            assert!((-22_050..=0).contains(&base));
            assert_eq!(len as i64, 1000 - base);
        }
        assert!(Plan::new(&info, 10, &SeparateOptions { overlap: 1.0, ..Default::default() }).is_err());
        assert!(Plan::new(&info, 10, &SeparateOptions { segment_frames: Some(400_000), ..Default::default() }).is_err());
    }

    #[test]
    fn silence_gives_zeros_not_nan() {
        let mut acc = MixStatsAccumulator::default();
        for _ in 0..10 {
            acc.push(0.0);
        }
        let s = acc.stats();
        assert_eq!(s.std, 0.0);
        let x = ((0.0 - s.mean) / (s.std + NORM_EPS)) as f32;
        assert_eq!(x, 0.0);
    }
}

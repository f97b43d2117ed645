//! The Demucs algorithm around the network (facebookresearch/demucs,
//! `demucs/apply.py` and `demucs/api.py`; restated in separation.md):
//! mix normalisation ([`stats`]), random shifts and the overlap split with
//! triangular weights and real context ([`plan`], `overlap_add`), and the
//! time + frequency branch sum around the [`Network`] ([`network`]).
//!
//! It streams: every shift pass keeps only an overlap-add window of about
//! one segment plus one stride, and finished frames leave through a
//! [`BlockSink`] as soon as every pass has finalised them. Memory does not
//! grow with the song.

pub mod network;
mod overlap_add;
pub mod plan;
pub mod stats;

use std::time::Instant;

pub use network::{MemoryMix, MixSource, Network, NetworkError};
pub use plan::{Plan, SeparateOptions, MAX_SHIFT_SECONDS};
pub use stats::{MixStats, MixStatsAccumulator, NORM_EPS};

use crate::dsp::stft::SegmentSpec;
use crate::dsp::weights;
use crate::model::ModelInfo;
use crate::progress::{Event, Listener};
use crate::Error;
use overlap_add::{combine, Chunk, Pass};

/// Receives finished frames of every source, in order, exactly once.
pub trait BlockSink {
    /// `start` is the first frame's index; `stems` is planar
    /// `[sources][channels][frames]`, de-normalised, at the model rate.
    ///
    /// # Errors
    /// Whatever writing fails with.
    fn write(&mut self, start: usize, frames: usize, stems: &[f32]) -> Result<(), Error>;
}

/// Figures of a finished separation.
#[derive(Debug, Clone, Copy)]
pub struct SeparationStats {
    /// Network runs.
    pub segments: usize,
    /// Total seconds inside the network.
    pub network_seconds: f64,
}

/// The buffers of one network run, reused for every segment.
struct SegmentRun {
    /// Model segment length in frames (`info.segment_frames`).
    l: usize,
    channels: usize,
    sources: usize,
    ss: SegmentSpec,
    /// Planar `[channels][l]` normalised input window.
    window: Vec<f32>,
    /// `[channels * 2][bins][frames]` spectrogram of `window`.
    spec: Vec<f32>,
    /// Planar `[sources][channels][l]`: time branch plus iSTFT of the
    /// frequency branch.
    out_wave: Vec<f32>,
}

impl SegmentRun {
    fn new(info: &ModelInfo) -> Self {
        let (s_n, c_n, l) = (info.sources.len(), info.channels, info.segment_frames);
        let (bins, frames) = (info.freq_bins(), info.spec_frames());
        SegmentRun {
            l,
            channels: c_n,
            sources: s_n,
            ss: SegmentSpec::new(l, info.stft.n_fft, info.stft.hop),
            window: vec![0.0; c_n * l],
            spec: vec![0.0; 2 * c_n * bins * frames],
            out_wave: vec![0.0; s_n * c_n * l],
        }
    }

    /// Fill the window starting at mixture frame `win_start` (zeros outside
    /// the mixture's `n` frames), normalised with `stats`.
    fn load(&mut self, mix: &mut dyn MixSource, win_start: i64, n: usize, stats: MixStats) -> Result<(), Error> {
        let (l, c_n) = (self.l, self.channels);
        let inv_scale = 1.0 / (stats.std + NORM_EPS);
        self.window.fill(0.0);
        let lo = win_start.max(0);
        let hi = (win_start + l as i64).min(n as i64);
        if hi > lo {
            let off = (lo - win_start) as usize;
            let len = (hi - lo) as usize;
            mix.read(lo as usize, len, &mut self.window, off, l).map_err(Error::Scratch)?;
            for c in 0..c_n {
                for v in &mut self.window[c * l + off..][..len] {
                    *v = ((*v as f64 - stats.mean) * inv_scale) as f32;
                }
            }
        }
        Ok(())
    }

    /// STFT, network, iSTFT of the frequency branch added to the time
    /// branch; returns the seconds spent in the network alone.
    fn run(&mut self, net: &mut dyn Network) -> Result<f64, Error> {
        self.ss.spec(&self.window, self.channels, &mut self.spec);
        let t0 = Instant::now();
        let mut host_seconds = 0.0;
        let (ss, out_wave, s_n, c_n) = (&mut self.ss, &mut self.out_wave, self.sources, self.channels);
        net.forward(&self.window, &self.spec, &mut |zs, xt| {
            let t1 = Instant::now();
            out_wave.copy_from_slice(xt);
            ss.ispec_add(zs, s_n, c_n, out_wave);
            host_seconds = t1.elapsed().as_secs_f64();
        })?;
        Ok(t0.elapsed().as_secs_f64() - host_seconds)
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
    let (k_n, l) = (info.sources.len() * info.channels, info.segment_frames);
    let weight = weights::triangle(plan.segment);
    let mut run = SegmentRun::new(info);
    let denorm = ((stats.std + NORM_EPS) as f32, stats.mean as f32);
    let mut passes: Vec<Pass> = plan.passes.iter().map(|&(base, len)| Pass::new(base, len, plan.chunks(len))).collect();
    let total = plan.total_segments();
    let started = Instant::now();
    let mut network_seconds = 0.0;
    let mut done = 0usize;
    let mut emitted = 0usize;
    let mut block = Vec::new();

    // Advance the unfinished pass that lags furthest behind.
    while let Some(pi) = (0..passes.len()).filter(|&i| !passes[i].is_done()).min_by_key(|&i| passes[i].frontier()) {
        if listener.is_cancelled() {
            return Err(Error::Cancelled);
        }
        let p = &mut passes[pi];
        let chunk: Chunk = p.next_chunk(plan.segment, plan.stride);
        // Model window centred on the chunk, in mixture frames (TensorChunk.padded).
        let lead = (l - chunk.len) / 2;
        run.load(mix, p.mixture_frame(chunk.start) - lead as i64, n, stats)?;
        let dt = run.run(net)?;
        network_seconds += dt;
        p.add(chunk, plan.stride, &run.out_wave, (k_n, l, lead), &weight, n);

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
        let ready = combine(&mut passes, k_n, denorm, &mut block);
        if ready > 0 {
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
    use crate::dsp::stft::SegmentSpec;
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
        ) -> Result<(), NetworkError> {
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
        // All-zero mixture: std 0, so normalisation divides by NORM_EPS alone.
        let info = small_model();
        let frames = 30_000;
        let mix = vec![0.0f32; frames * 2];
        let mut acc = MixStatsAccumulator::default();
        for _ in 0..frames {
            acc.push(0.0);
        }
        let stats = acc.stats();
        assert_eq!(stats.std, 0.0);
        let ss = SegmentSpec::new(info.segment_frames, info.stft.n_fft, info.stft.hop);
        let mut net =
            EchoNet { sources: 4, channels: 2, gain: vec![1.0, 0.5, 0.25, 0.125], through_spec: true, ss: Some(ss) };
        let mut sink = Collect { data: vec![1.0; 4 * 2 * frames], frames, k: 8, next: 0 };
        let opts = SeparateOptions { shifts: 2, seed: 1, ..Default::default() };
        separate(
            &mut net,
            &info,
            &mut MemoryMix { data: mix, channels: 2 },
            stats,
            &opts,
            &mut sink,
            &crate::progress::Silent,
        )
        .expect("separate");
        assert_eq!(sink.next, frames);
        assert!(sink.data.iter().all(|v| *v == 0.0), "silence in, exact zeros out (no NaN)");
    }
}

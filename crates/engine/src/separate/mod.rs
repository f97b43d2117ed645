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
//!
//! It is a pipeline of three threads joined by bounded channels, so that the
//! host's work overlaps the network's: one reads the next windows of the
//! mixture and computes their spectrograms ahead (`Prep`), the calling
//! thread runs the network, and one adds each finished segment's iSTFT to
//! its time branch, overlap-adds it and hands finished frames on behind
//! (`Post`). Buffers circulate between the stages instead of being
//! allocated per segment: as many inputs and outputs as the network asks
//! for ([`Network::segments_in_flight`]); with two or more, the spectrograms
//! (per channel) and iSTFTs (per source) are also spread over the cores.
//! The arithmetic is the serial algorithm's, in the same order, so the
//! result is the same to the bit.

pub mod network;
mod overlap_add;
pub mod plan;
pub mod stats;

use std::sync::mpsc::{channel, sync_channel, Receiver, Sender, SyncSender};
use std::sync::{Mutex, PoisonError};
use std::time::Instant;

pub use network::{MemoryMix, MixSource, NetOutput, Network, NetworkError, OutputStore, VecOutput};
pub use plan::{
    check_segment, Plan, SeparateOptions, Step, MAX_OVERLAP, MAX_SHIFTS, MAX_SHIFT_SECONDS, MIN_SEGMENT_SECONDS,
};
pub use stats::{MixStats, MixStatsAccumulator, NORM_EPS};

use crate::dsp::stft::SegmentSpec;
use crate::dsp::weights;
use crate::model::ModelInfo;
use crate::progress::{Event, Listener};
use crate::Error;
use overlap_add::{combine, Pass};

/// Receives finished frames of every source, in order, exactly once.
pub trait BlockSink {
    /// `start` is the first frame's index; `stems` is planar
    /// `[sources][channels][frames]`, de-normalised, at the model rate.
    ///
    /// # Errors
    /// Whatever writing fails with.
    fn write(&mut self, start: usize, frames: usize, stems: &[f32]) -> Result<(), Error>;

    /// Called after every segment, once the frames it finished were written:
    /// `state` is what [`separate_from`] needs to go on from here. A sink
    /// that keeps the frames it was given durable can save it (see
    /// [`Checkpoint::save`]); the default ignores it.
    ///
    /// # Errors
    /// Whatever saving fails with (the separation stops).
    fn checkpoint(&mut self, state: &Checkpoint<'_>) -> Result<(), Error> {
        let _ = state;
        Ok(())
    }
}

/// The state of a separation between two segments: how far the schedule
/// ([`Plan::schedule`]) went, how many frames the sink has received, and
/// every shift pass's overlap-add window and finished-but-unsent frames.
pub struct Checkpoint<'a> {
    /// Segments of the schedule done (the next to run has this index).
    pub steps_done: usize,
    /// Segments in the whole schedule.
    pub total_steps: usize,
    /// Frames handed to the sink so far (at the model rate).
    pub emitted: usize,
    passes: &'a [Pass],
}

/// One empty overlap-add pass per shift pass of `plan`.
fn new_passes(plan: &Plan) -> Vec<Pass> {
    plan.passes.iter().map(|&(base, len)| Pass::new(base, len, plan.chunks(len))).collect()
}

/// Magic at the start of a saved [`Checkpoint`].
const STATE_MAGIC: &[u8; 8] = b"SRSTATE1";

impl Checkpoint<'_> {
    /// The state as bytes (little-endian; `f32` values bit for bit, so a
    /// resumed run computes exactly what an uninterrupted one does). About
    /// one segment plus one stride of frames × sources × channels × 4 bytes
    /// per shift pass: 19 MB per pass for htdemucs.
    pub fn save(&self) -> Vec<u8> {
        let mut out = Vec::new();
        out.extend_from_slice(STATE_MAGIC);
        for v in [self.steps_done, self.total_steps, self.emitted, self.passes.len()] {
            out.extend_from_slice(&(v as u64).to_le_bytes());
        }
        for p in self.passes {
            p.save(&mut out);
        }
        out
    }
}

/// A saved [`Checkpoint`], read back; checked against the plan when a
/// separation resumes from it ([`separate_from`]).
#[derive(Debug, Clone)]
pub struct ResumeState {
    bytes: Vec<u8>,
    /// Segments of the schedule already done.
    pub steps_done: usize,
    /// Segments in the schedule it was saved from.
    pub total_steps: usize,
    /// Frames the sink had received: a resumed run writes from this frame.
    pub emitted: usize,
}

impl ResumeState {
    /// Read the header of saved state.
    ///
    /// # Errors
    /// A message when the bytes are not a saved state.
    pub fn parse(bytes: Vec<u8>) -> Result<Self, String> {
        let mut r: &[u8] = bytes.strip_prefix(STATE_MAGIC.as_slice()).ok_or("not a separation state")?;
        let mut next = || overlap_add::get_u64(&mut r).map(|v| v as usize);
        let (steps_done, total_steps, emitted) = (next()?, next()?, next()?);
        Ok(ResumeState { steps_done, total_steps, emitted, bytes })
    }

    /// Whether the state fits a separation of `frames` mixture frames with
    /// `info` and `opts` ([`separate_from`] would accept it).
    ///
    /// # Errors
    /// Why it does not (another schedule, a damaged state).
    pub fn check(&self, info: &ModelInfo, frames: usize, opts: &SeparateOptions) -> Result<(), String> {
        let plan = Plan::new(info, frames, opts).map_err(|e| e.to_string())?;
        let steps = plan.schedule();
        let mut passes = new_passes(&plan);
        self.restore(&mut passes, &steps, plan.stride, info.sources.len() * info.channels, frames)
    }

    /// Restore `passes` (made from the plan) and check the state fits it.
    fn restore(&self, passes: &mut [Pass], steps: &[Step], stride: usize, k_n: usize, n: usize) -> Result<(), String> {
        let mut r: &[u8] = &self.bytes[STATE_MAGIC.len() + 24..];
        let count = overlap_add::get_u64(&mut r)? as usize;
        if count != passes.len() || self.total_steps != steps.len() || self.steps_done > steps.len() || self.emitted > n
        {
            return Err("the saved state is from another schedule".into());
        }
        for (i, p) in passes.iter_mut().enumerate() {
            let next = steps[..self.steps_done].iter().filter(|s| s.pass == i).count();
            p.restore(&mut r, (stride, k_n, n), next, self.emitted)?;
        }
        if !r.is_empty() {
            return Err("trailing bytes after the saved state".into());
        }
        Ok(())
    }
}

/// Figures of a finished separation.
#[derive(Debug, Clone, Copy)]
pub struct SeparationStats {
    /// Network runs (in this call: a resumed run counts only its own).
    pub segments: usize,
    /// Total seconds inside the network.
    pub network_seconds: f64,
}

/// One segment's network input.
struct SegmentInput {
    /// Planar `[channels][segment]` normalised window.
    window: Vec<f32>,
    /// `[channels * 2][bins][frames]` spectrogram of `window`.
    spec: Vec<f32>,
}

/// Run `job` on each of `parts` (at most one per scratch in `scratch`), on
/// threads of their own; a part whose thread cannot start runs on this one.
fn par_each<S: Send, P: Send>(scratch: &mut [S], parts: Vec<P>, job: impl Fn(&mut S, P) + Sync) {
    let Some((first, rest)) = scratch.split_first_mut() else { return };
    if rest.is_empty() || parts.len() < 2 {
        for p in parts {
            job(first, p);
        }
        return;
    }
    let cells: Vec<Mutex<Option<P>>> = parts.into_iter().map(|p| Mutex::new(Some(p))).collect();
    let run = |s: &mut S, cell: &Mutex<Option<P>>| {
        let part = cell.lock().unwrap_or_else(PoisonError::into_inner).take();
        if let Some(p) = part {
            job(s, p);
        }
    };
    let run = &run;
    std::thread::scope(|scope| {
        for (s, cell) in rest.iter_mut().zip(&cells[1..]) {
            let _ = std::thread::Builder::new().spawn_scoped(scope, move || run(s, cell));
        }
        for cell in &cells {
            // Ours first, then any part no thread has taken (one that
            // could not start).
            run(first, cell);
        }
    });
}

/// Split `data` into `groups` contiguous runs of whole `unit`-long items
/// (`items` of them), as even as can be.
fn split_units<T>(data: &mut [T], items: usize, unit: usize, groups: usize) -> Vec<(usize, &mut [T])> {
    let per = items.div_ceil(groups.max(1)).max(1);
    data.chunks_mut(per * unit).map(|c| (c.len() / unit, c)).collect()
}

/// The stage ahead of the network: windows of the mixture, normalised, and
/// their spectrograms.
struct Prep<'a> {
    mix: &'a mut (dyn MixSource + Send),
    /// Mixture frames.
    n: usize,
    /// Model segment length in frames.
    l: usize,
    channels: usize,
    stats: MixStats,
    /// STFT scratch, one per thread the channels are spread over.
    specs: Vec<SegmentSpec>,
}

impl Prep<'_> {
    /// Fill `buf` with the model window centred on `step` (zeros outside
    /// the mixture; real neighbouring audio as context, `TensorChunk.padded`)
    /// and its spectrogram.
    fn fill(&mut self, step: &Step, buf: &mut SegmentInput) -> Result<(), Error> {
        let (l, c_n, n) = (self.l, self.channels, self.n);
        let win_start = step.mixture_start - ((l - step.len) / 2) as i64;
        let inv_scale = 1.0 / (self.stats.std + NORM_EPS);
        buf.window.fill(0.0);
        let lo = win_start.max(0);
        let hi = (win_start + l as i64).min(n as i64);
        if hi > lo {
            let off = (lo - win_start) as usize;
            let len = (hi - lo) as usize;
            self.mix.read(lo as usize, len, &mut buf.window, off, l).map_err(Error::Scratch)?;
            for c in 0..c_n {
                for v in &mut buf.window[c * l + off..][..len] {
                    *v = ((*v as f64 - self.stats.mean) * inv_scale) as f32;
                }
            }
        }
        // `[channels * 2][bins][frames]`: each channel's two planes are contiguous.
        let spec_unit = buf.spec.len() / c_n;
        let groups = split_units(&mut buf.spec, c_n, spec_unit, self.specs.len());
        let window = &buf.window;
        let mut first = 0;
        let parts: Vec<_> = groups
            .into_iter()
            .map(|(count, out)| {
                let part = (&window[first * l..(first + count) * l], count, out);
                first += count;
                part
            })
            .collect();
        par_each(&mut self.specs, parts, |ss, (x, count, out)| ss.spec(x, count, out));
        Ok(())
    }

    /// Fill free buffers in schedule order until the schedule ends, the
    /// network stops taking them, or the run is cancelled.
    fn run(
        mut self,
        steps: &[Step],
        free: Receiver<SegmentInput>,
        ready: SyncSender<Result<(Step, SegmentInput), Error>>,
        listener: &dyn Listener,
    ) {
        for step in steps {
            let Ok(mut buf) = free.recv() else { return };
            if listener.is_cancelled() {
                return;
            }
            let filled = self.fill(step, &mut buf).map(|()| (*step, buf));
            let failed = filled.is_err();
            if ready.send(filled).is_err() || failed {
                return;
            }
        }
    }
}

/// The stage behind the network: iSTFT of the frequency branch added to the
/// time branch, overlap-add into the shift passes, finished frames out.
struct Post<'a> {
    /// iSTFT scratch, one per thread the sources are spread over.
    specs: Vec<SegmentSpec>,
    passes: Vec<Pass>,
    weight: Vec<f32>,
    stride: usize,
    /// Mixture frames.
    n: usize,
    /// Model segment length in frames.
    l: usize,
    sources: usize,
    channels: usize,
    /// (scale, mean) undoing the normalisation.
    denorm: (f32, f32),
    block: Vec<f32>,
    sink: &'a mut (dyn BlockSink + Send),
    listener: &'a dyn Listener,
    total: usize,
    started: Instant,
    /// Segments done (from the start of the schedule, resumed ones included).
    done: usize,
    /// Segments a resumed run skipped.
    skipped: usize,
    emitted: usize,
}

impl Post<'_> {
    /// Take one segment's network output (`network_seconds` inside the
    /// network).
    fn take(&mut self, step: Step, out: &mut NetOutput, network_seconds: f64) -> Result<(), Error> {
        let (s_n, c_n, l) = (self.sources, self.channels, self.l);
        let k_n = s_n * c_n;
        let (zs, wave) = out.parts();
        // Sources are independent: `zs` `[sources][..]`, `wave` `[sources][channels][l]`.
        let z_unit = zs.len() / s_n;
        let mut zs_rest: &[f32] = zs;
        let parts: Vec<_> = split_units(wave, s_n, c_n * l, self.specs.len())
            .into_iter()
            .map(|(count, w)| {
                let (z, rest) = zs_rest.split_at(count * z_unit);
                zs_rest = rest;
                (z, count, w)
            })
            .collect();
        par_each(&mut self.specs, parts, |ss, (z, count, w)| ss.ispec_add(z, count, c_n, w));
        let lead = (l - step.len) / 2;
        self.passes[step.pass].add(step, self.stride, wave, (k_n, l, lead), &self.weight, self.n);

        self.done += 1;
        let elapsed = self.started.elapsed().as_secs_f64();
        self.listener.event(&Event::Segment {
            index: self.done,
            total: self.total,
            network_seconds,
            elapsed_seconds: elapsed,
            eta_seconds: elapsed / (self.done - self.skipped) as f64 * (self.total - self.done) as f64,
        });

        // Average the frames every pass has finished, and hand them on.
        let ready = combine(&mut self.passes, k_n, self.denorm, &mut self.block);
        if ready > 0 {
            self.sink.write(self.emitted, ready, &self.block)?;
            self.emitted += ready;
        }
        self.sink.checkpoint(&Checkpoint {
            steps_done: self.done,
            total_steps: self.total,
            emitted: self.emitted,
            passes: &self.passes,
        })
    }

    /// Take outputs in schedule order until the network stops sending them;
    /// each goes back to the network once read.
    fn run(mut self, done: Receiver<(Step, NetOutput, f64)>, free: Sender<NetOutput>) -> Result<(usize, usize), Error> {
        for (step, mut out, secs) in done {
            self.take(step, &mut out, secs)?;
            // The network may have stopped; the buffer is then dropped here.
            let _ = free.send(out);
        }
        Ok((self.done - self.skipped, self.emitted))
    }
}

/// How the network stage ended.
enum NetEnd {
    /// Every segment ran.
    Complete,
    /// The post stage stopped taking outputs (its own error says why).
    PostStopped,
}

/// The network stage, on the calling thread: inputs in schedule order,
/// outputs on to the post stage. Returns the seconds inside the network.
fn run_network(
    net: &mut dyn Network,
    ready: Receiver<Result<(Step, SegmentInput), Error>>,
    free_inputs: Sender<SegmentInput>,
    done: SyncSender<(Step, NetOutput, f64)>,
    free_outputs: Receiver<NetOutput>,
    listener: &dyn Listener,
    total: usize,
) -> Result<(NetEnd, f64), Error> {
    let mut network_seconds = 0.0;
    for _ in 0..total {
        if listener.is_cancelled() {
            return Err(Error::Cancelled);
        }
        // The prep stage only stops early when cancelled or failed.
        let (step, input) = match ready.recv() {
            Ok(r) => r?,
            Err(_) if listener.is_cancelled() => return Err(Error::Cancelled),
            Err(_) => return Err(Error::Internal("the spectrogram stage stopped".into())),
        };
        let Ok(mut out) = free_outputs.recv() else { return Ok((NetEnd::PostStopped, network_seconds)) };
        let t0 = Instant::now();
        net.forward(&input.window, &input.spec, &mut out)?;
        let dt = t0.elapsed().as_secs_f64();
        network_seconds += dt;
        let _ = free_inputs.send(input);
        if done.send((step, out, dt)).is_err() {
            return Ok((NetEnd::PostStopped, network_seconds));
        }
    }
    Ok((NetEnd::Complete, network_seconds))
}

/// Separate `mix` into the model's sources, streaming results into `sink`.
///
/// `stats` normalises the mixture (separation.md step 1); outputs are
/// de-normalised. Network input windows are always `info.segment_frames`
/// long and centred on their chunk, with real neighbouring audio as context
/// (step 4), also for a split segment shorter than the model's: demucs
/// gives such a chunk only the split segment's window and zeros after it,
/// which measured lower (Falcon 69, 0 shifts, `--segment 3`: vocals 3.69
/// dB against 5.19 dB with the full window of real audio; see README). `mix` is read and `sink` written on threads of their own (see
/// the module notes); `listener` hears [`Event::Segment`] from the thread
/// that writes `sink`.
///
/// # Errors
/// [`Error::Cancelled`] if the listener cancels (checked before every
/// segment); network, I/O and sink errors; [`Error::Internal`] if a stage's
/// thread cannot start or panics.
pub fn separate(
    net: &mut dyn Network,
    info: &ModelInfo,
    mix: &mut (dyn MixSource + Send),
    stats: MixStats,
    opts: &SeparateOptions,
    sink: &mut (dyn BlockSink + Send),
    listener: &dyn Listener,
) -> Result<SeparationStats, Error> {
    separate_from(net, info, mix, stats, opts, sink, listener, None)
}

/// [`separate`], going on from a saved [`Checkpoint`] when `resume` is
/// given: the schedule's first `resume.steps_done` segments are skipped, the
/// shift passes' state is restored, and `sink` receives frames from
/// `resume.emitted` on. With the same mixture, options and network the
/// frames are bit for bit those an uninterrupted run gives.
/// [`SeparationStats::segments`] counts only the segments run here.
///
/// # Errors
/// As [`separate`]; [`Error::InvalidOptions`] when `resume` does not fit
/// this mixture and these options (another schedule, a damaged state).
#[allow(clippy::too_many_arguments)] // separate()'s arguments plus the state
pub fn separate_from(
    net: &mut dyn Network,
    info: &ModelInfo,
    mix: &mut (dyn MixSource + Send),
    stats: MixStats,
    opts: &SeparateOptions,
    sink: &mut (dyn BlockSink + Send),
    listener: &dyn Listener,
    resume: Option<&ResumeState>,
) -> Result<SeparationStats, Error> {
    let n = mix.frames();
    let plan = Plan::new(info, n, opts)?;
    let steps = plan.schedule();
    let (s_n, c_n, l) = (info.sources.len(), info.channels, info.segment_frames);
    let spec_len = 2 * c_n * info.freq_bins() * info.spec_frames();
    let in_flight = net.segments_in_flight().max(1);
    // Spread the host's work over the cores only where the network leaves
    // them free (see Network::segments_in_flight).
    let cores = if in_flight > 1 { std::thread::available_parallelism().map_or(1, |c| c.get()) } else { 1 };
    let new_specs = |count: usize| (0..count).map(|_| SegmentSpec::new(l, info.stft.n_fft, info.stft.hop)).collect();
    let prep = Prep { mix, n, l, channels: c_n, stats, specs: new_specs(cores.min(c_n)) };
    let mut passes = new_passes(&plan);
    let (skip, emitted) = match resume {
        Some(state) => {
            state
                .restore(&mut passes, &steps, plan.stride, s_n * c_n, n)
                .map_err(|e| Error::InvalidOptions(format!("cannot resume: {e}")))?;
            (state.steps_done, state.emitted)
        }
        None => (0, 0),
    };
    let post = Post {
        specs: new_specs(cores.min(s_n)),
        passes,
        weight: weights::triangle(plan.segment),
        stride: plan.stride,
        n,
        l,
        sources: s_n,
        channels: c_n,
        denorm: ((stats.std + NORM_EPS) as f32, stats.mean as f32),
        block: Vec::new(),
        sink,
        listener,
        total: steps.len(),
        started: Instant::now(),
        done: skip,
        skipped: skip,
        emitted,
    };

    let (free_in_tx, free_in_rx) = channel();
    let (free_out_tx, free_out_rx) = channel();
    for _ in 0..in_flight {
        let _ = free_in_tx.send(SegmentInput { window: vec![0.0; c_n * l], spec: vec![0.0; spec_len] });
        let _ = free_out_tx.send(net.new_output(s_n * spec_len, s_n * c_n * l)?);
    }
    let (ready_tx, ready_rx) = sync_channel(in_flight);
    let (done_tx, done_rx) = sync_channel(1);
    let total = steps.len() - skip;
    let spawn_err = |e: std::io::Error| Error::Internal(format!("cannot start a separation thread: {e}"));
    let panicked = |stage: &str| Error::Internal(format!("the {stage} stage panicked"));

    std::thread::scope(|scope| {
        let steps = &steps[skip..];
        let prep = std::thread::Builder::new()
            .name("stemroom-stft".into())
            .spawn_scoped(scope, move || prep.run(steps, free_in_rx, ready_tx, listener))
            .map_err(spawn_err)?;
        let post = std::thread::Builder::new()
            .name("stemroom-istft".into())
            .spawn_scoped(scope, move || post.run(done_rx, free_out_tx))
            .map_err(spawn_err)?;
        // The channel ends move into run_network and close when it returns,
        // which stops the other two stages wherever they are.
        let net_end = run_network(net, ready_rx, free_in_tx, done_tx, free_out_rx, listener, total);
        let post_end = post.join().map_err(|_| panicked("overlap-add"));
        prep.join().map_err(|_| panicked("spectrogram"))?;
        let (end, network_seconds) = net_end?;
        let (segments, emitted) = post_end??;
        match end {
            NetEnd::Complete => {
                debug_assert_eq!((segments, emitted), (total, n));
                if emitted != n {
                    return Err(Error::Internal(format!("{emitted} of {n} frames came out")));
                }
                Ok(SeparationStats { segments, network_seconds })
            }
            // The post stage stops early only on an error, returned above.
            NetEnd::PostStopped => Err(Error::Internal("the overlap-add stage stopped".into())),
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::dsp::stft::SegmentSpec;
    use crate::model::Manifest;
    use rand::{RngExt, SeedableRng};

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
        /// Segments in flight it asks for.
        in_flight: usize,
    }

    impl EchoNet {
        /// Four sources, each the input itself through the time branch.
        fn unity(in_flight: usize) -> Self {
            EchoNet { sources: 4, channels: 2, gain: vec![1.0; 4], through_spec: false, ss: None, in_flight }
        }
    }

    impl Network for EchoNet {
        fn segments_in_flight(&self) -> usize {
            self.in_flight
        }

        fn forward(&mut self, mix: &[f32], spec: &[f32], out: &mut NetOutput) -> Result<(), NetworkError> {
            let (sl, wl) = (spec.len(), mix.len());
            let (out_spec, out_wave) = out.parts();
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
        let mut net =
            EchoNet { sources, channels: 2, gain: vec![1.0, 0.5, 0.25, 0.125], through_spec, ss, in_flight: 2 };
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

    /// A network whose every sample for the k-th segment (in order) is k:
    /// the result is the overlap-add's own weighting, checked against
    /// demucs' `apply_model` written out here (`weight = cat(arange(1,
    /// L//2+1), arange(L-L//2, 0, -1))`, `weight[:chunk_length]` at each
    /// offset, divided by the sum of weights). An echo of the input cannot
    /// show wrong weights: any weights give back what every segment agrees on.
    struct StepNet {
        calls: usize,
    }

    impl Network for StepNet {
        fn segments_in_flight(&self) -> usize {
            1
        }

        fn forward(&mut self, _mix: &[f32], _spec: &[f32], out: &mut NetOutput) -> Result<(), NetworkError> {
            self.calls += 1;
            let (out_spec, out_wave) = out.parts();
            out_spec.fill(0.0);
            out_wave.fill(self.calls as f32);
            Ok(())
        }
    }

    #[test]
    fn overlap_add_weighs_segments_as_demucs_does() {
        let info = small_model();
        let len = info.segment_frames;
        let frames = 50_000;
        let mix: Vec<f32> = (0..frames * 2).map(|i| (i as f32 * 0.01).sin() * 0.5).collect();
        let mut acc = MixStatsAccumulator::default();
        for t in 0..frames {
            acc.push((mix[t] as f64 + mix[frames + t] as f64) / 2.0);
        }
        let stats = acc.stats();
        let sources = info.sources.len();
        let mut net = StepNet { calls: 0 };
        let mut sink = Collect { data: vec![0.0; sources * 2 * frames], frames, k: sources * 2, next: 0 };
        let mut src = MemoryMix { data: mix, channels: 2 };
        let opts = SeparateOptions { shifts: 0, overlap: 0.25, ..Default::default() };
        separate(&mut net, &info, &mut src, stats, &opts, &mut sink, &crate::progress::Silent).expect("separate");
        // demucs: stride = int((1 - overlap) * segment), offsets 0, stride, … < length.
        let stride = (0.75 * len as f64) as usize;
        let offsets: Vec<usize> = (0..frames).step_by(stride).collect();
        assert_eq!(net.calls, offsets.len(), "one network run per segment");
        let weight: Vec<f64> = (1..=len / 2).chain((1..=len - len / 2).rev()).map(|w| w as f64).collect();
        let scale = stats.std + NORM_EPS;
        let mut worst = 0.0f64;
        for t in (0..frames).step_by(7).chain([frames - 1]) {
            let (mut num, mut den) = (0.0, 0.0);
            for (k, &off) in offsets.iter().enumerate() {
                if t >= off && t - off < len.min(frames - off) {
                    num += weight[t - off] * (k + 1) as f64;
                    den += weight[t - off];
                }
            }
            let want = num / den * scale + stats.mean;
            for (s, ch) in (0..sources).flat_map(|s| (0..2).map(move |c| (s, c))) {
                let got = f64::from(sink.data[(s * 2 + ch) * frames + t]);
                worst = worst.max((got - want).abs() / want.abs().max(1e-3));
            }
        }
        assert!(worst < 1e-5, "worst relative error {worst}");
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

    /// Runs `separate` with the network asking for `in_flight` segments,
    /// returning the sink's data.
    fn pipelined(info: &ModelInfo, mix: &[f32], opts: SeparateOptions, in_flight: usize) -> Vec<f32> {
        let frames = mix.len() / 2;
        let mut acc = MixStatsAccumulator::default();
        for t in 0..frames {
            acc.push((mix[t] as f64 + mix[frames + t] as f64) / 2.0);
        }
        let ss = SegmentSpec::new(info.segment_frames, info.stft.n_fft, info.stft.hop);
        let mut net = EchoNet {
            sources: 4,
            channels: 2,
            gain: vec![0.9, -0.5, 0.3, 0.1],
            through_spec: true,
            ss: Some(ss),
            in_flight,
        };
        let mut sink = Collect { data: vec![0.0; 8 * frames], frames, k: 8, next: 0 };
        let mut src = MemoryMix { data: mix.to_vec(), channels: 2 };
        separate(&mut net, info, &mut src, acc.stats(), &opts, &mut sink, &crate::progress::Silent).expect("separate");
        assert_eq!(sink.next, frames);
        sink.data
    }

    #[test]
    fn every_pipeline_depth_gives_the_serial_result_to_the_bit() {
        // One segment in flight is the serial engine: each stage waits for
        // the one before. Two and three overlap the stages and spread the
        // spectrograms and iSTFTs over threads; the arithmetic must not change.
        let info = small_model();
        let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(5);
        for (frames, shifts) in [(7_000, 0), (40_000, 1), (61_234, 3)] {
            let mix: Vec<f32> = (0..frames * 2).map(|_| rng.random_range(-0.8f32..0.8)).collect();
            let opts = SeparateOptions { shifts, seed: 11, ..Default::default() };
            let serial = pipelined(&info, &mix, opts, 1);
            assert!(serial.iter().any(|v| *v != 0.0));
            for depth in [2, 3] {
                let got = pipelined(&info, &mix, opts, depth);
                assert!(
                    got.iter().zip(&serial).all(|(a, b)| a.to_bits() == b.to_bits()),
                    "{frames} frames, {shifts} shifts, depth {depth}: max difference {}",
                    max_err(&got, &serial)
                );
            }
        }
    }

    /// Writing a block waits until the network has started the next
    /// segment: only a pipelined separation gets past the first block.
    struct WaitForNext {
        inner: Collect,
        next_started: std::sync::Arc<(Mutex<usize>, std::sync::Condvar)>,
        patience: std::time::Duration,
    }
    impl BlockSink for WaitForNext {
        fn write(&mut self, start: usize, frames: usize, stems: &[f32]) -> Result<(), Error> {
            let (lock, cvar) = &*self.next_started;
            let runs = lock.lock().unwrap();
            let (runs, timeout) = cvar.wait_timeout_while(runs, self.patience, |r| *r < 2).unwrap();
            if timeout.timed_out() {
                return Err(Error::Internal(format!("the network did not start segment 2 ({} runs)", *runs)));
            }
            drop(runs);
            self.inner.write(start, frames, stems)
        }
    }

    struct Counting {
        inner: EchoNet,
        runs: std::sync::Arc<(Mutex<usize>, std::sync::Condvar)>,
    }
    impl Network for Counting {
        fn segments_in_flight(&self) -> usize {
            self.inner.in_flight
        }
        fn forward(&mut self, mix: &[f32], spec: &[f32], out: &mut NetOutput) -> Result<(), NetworkError> {
            let (lock, cvar) = &*self.runs;
            *lock.lock().unwrap() += 1;
            cvar.notify_all();
            self.inner.forward(mix, spec, out)
        }
    }

    #[test]
    fn the_network_runs_the_next_segment_while_the_last_one_is_written() {
        let info = small_model();
        let frames = 40_000;
        let mix: Vec<f32> = (0..frames * 2).map(|i| (i as f32 * 0.01).sin() * 0.5).collect();
        let stats = MixStats { mean: 0.0, std: 0.35 };
        let runs = std::sync::Arc::new((Mutex::new(0usize), std::sync::Condvar::new()));
        for (in_flight, overlaps) in [(2, true), (1, false)] {
            *runs.0.lock().unwrap() = 0;
            let mut net = Counting { inner: EchoNet::unity(in_flight), runs: runs.clone() };
            let collect = Collect { data: vec![0.0; 8 * frames], frames, k: 8, next: 0 };
            // Generous where it must happen, short where it cannot.
            let patience = std::time::Duration::from_secs(if overlaps { 60 } else { 2 });
            let mut sink = WaitForNext { inner: collect, next_started: runs.clone(), patience };
            let opts = SeparateOptions { shifts: 0, ..Default::default() };
            let mut src = MemoryMix { data: mix.clone(), channels: 2 };
            let got = separate(&mut net, &info, &mut src, stats, &opts, &mut sink, &crate::progress::Silent);
            assert_eq!(got.is_ok(), overlaps, "{in_flight} in flight: {got:?}");
        }
    }

    struct FailingSink(usize);
    impl BlockSink for FailingSink {
        fn write(&mut self, _: usize, _: usize, _: &[f32]) -> Result<(), Error> {
            self.0 += 1;
            if self.0 == 2 {
                return Err(Error::Output { path: "disk.wav".into(), source: std::io::Error::other("disk full") });
            }
            Ok(())
        }
    }

    struct CancelAt(std::sync::atomic::AtomicUsize, usize);
    impl crate::progress::Listener for CancelAt {
        fn event(&self, e: &Event) {
            if matches!(e, Event::Segment { .. }) {
                self.0.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
            }
        }
        fn is_cancelled(&self) -> bool {
            self.0.load(std::sync::atomic::Ordering::SeqCst) >= self.1
        }
    }

    #[test]
    fn a_failing_sink_or_a_cancel_stops_every_stage_with_its_own_error() {
        let info = small_model();
        let frames = 80_000;
        let mix: Vec<f32> = (0..frames * 2).map(|i| (i as f32 * 0.01).sin() * 0.5).collect();
        let stats = MixStats { mean: 0.0, std: 0.35 };
        let opts = SeparateOptions { shifts: 1, ..Default::default() };
        for in_flight in [1, 2] {
            let echo = || EchoNet::unity(in_flight);
            let mut src = MemoryMix { data: mix.clone(), channels: 2 };
            let err =
                separate(&mut echo(), &info, &mut src, stats, &opts, &mut FailingSink(0), &crate::progress::Silent)
                    .expect_err("the sink fails");
            assert!(matches!(&err, Error::Output { source, .. } if source.to_string() == "disk full"), "{err:?}");

            let mut sink = Collect { data: vec![0.0; 8 * frames], frames, k: 8, next: 0 };
            let cancel = CancelAt(Default::default(), 2);
            let err = separate(&mut echo(), &info, &mut src, stats, &opts, &mut sink, &cancel).expect_err("cancelled");
            assert!(matches!(err, Error::Cancelled), "{err:?}");
        }
    }

    #[test]
    fn plan_matches_apply_py() {
        let info = Manifest::builtin().expect("manifest").get("htdemucs").expect("model").clone();
        let plan = Plan::new(&info, 44_100 * 60, &SeparateOptions { shifts: 0, ..Default::default() }).expect("plan");
        assert_eq!(plan.stride, 257_985);
        assert_eq!(plan.total_segments(), 11);
        // Strides as Python computes `int((1 - overlap) * 343980)`.
        for (overlap, stride) in [
            (0.05, 326_781),
            (0.1, 309_582),
            (0.2, 275_184),
            (0.5, 171_990),
            (0.65, 120_392),
            (0.9, 34_397),
            (0.99, 3439),
        ] {
            let plan = Plan::new(&info, 44_100 * 60, &SeparateOptions { shifts: 0, overlap, ..Default::default() })
                .expect("plan");
            assert_eq!(plan.stride, stride, "overlap {overlap}");
        }
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
        let mut net = EchoNet {
            sources: 4,
            channels: 2,
            gain: vec![1.0, 0.5, 0.25, 0.125],
            through_spec: true,
            ss: Some(ss),
            in_flight: 2,
        };
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

    /// Collects like [`Collect`] and keeps the state saved after segment
    /// `save_at` (with the frames emitted by then).
    struct Saving {
        inner: Collect,
        save_at: usize,
        saved: Option<Vec<u8>>,
    }
    impl BlockSink for Saving {
        fn write(&mut self, start: usize, frames: usize, stems: &[f32]) -> Result<(), Error> {
            self.inner.write(start, frames, stems)
        }
        fn checkpoint(&mut self, state: &Checkpoint<'_>) -> Result<(), Error> {
            assert_eq!(state.emitted, self.inner.next, "the state matches what the sink has");
            if state.steps_done == self.save_at {
                self.saved = Some(state.save());
            }
            Ok(())
        }
    }

    #[test]
    fn a_resumed_separation_gives_the_uninterrupted_result_to_the_bit() {
        let info = small_model();
        let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(9);
        for (frames, shifts, in_flight) in [(40_000, 0, 1), (61_234, 2, 2), (30_000, 1, 3)] {
            let mix: Vec<f32> = (0..frames * 2).map(|_| rng.random_range(-0.8f32..0.8)).collect();
            let opts = SeparateOptions { shifts, seed: 3, ..Default::default() };
            let whole = pipelined(&info, &mix, opts, in_flight);
            let mut acc = MixStatsAccumulator::default();
            for t in 0..frames {
                acc.push((mix[t] as f64 + mix[frames + t] as f64) / 2.0);
            }
            let total = Plan::new(&info, frames, &opts).unwrap().schedule().len();
            let new_net = || EchoNet {
                sources: 4,
                channels: 2,
                gain: vec![0.9, -0.5, 0.3, 0.1],
                through_spec: true,
                ss: Some(SegmentSpec::new(info.segment_frames, info.stft.n_fft, info.stft.hop)),
                in_flight,
            };
            for save_at in [1, total / 2, total - 1] {
                let mut sink = Saving {
                    inner: Collect { data: vec![0.0; 8 * frames], frames, k: 8, next: 0 },
                    save_at,
                    saved: None,
                };
                let mut src = MemoryMix { data: mix.clone(), channels: 2 };
                separate(&mut new_net(), &info, &mut src, acc.stats(), &opts, &mut sink, &crate::progress::Silent)
                    .unwrap();
                let state = ResumeState::parse(sink.saved.expect("saved")).unwrap();
                assert_eq!((state.steps_done, state.total_steps), (save_at, total));
                assert_eq!(state.check(&info, frames, &opts), Ok(()));
                assert!(state.check(&info, frames + 1, &opts).is_err(), "another mixture length");
                // A fresh run from `state` with `opts`, into a sink that
                // expects frames from the state's `emitted` on.
                let resume = |opts: &SeparateOptions, state: &ResumeState| {
                    let mut sink = Collect { data: vec![0.0; 8 * frames], frames, k: 8, next: state.emitted };
                    let mut src = MemoryMix { data: mix.clone(), channels: 2 };
                    let run = separate_from(
                        &mut new_net(),
                        &info,
                        &mut src,
                        acc.stats(),
                        opts,
                        &mut sink,
                        &crate::progress::Silent,
                        Some(state),
                    );
                    (run, sink)
                };
                // Only the rest of the segments run, frames from `emitted` on
                // equal to the bit.
                let (st, rest) = resume(&opts, &state);
                let st = st.unwrap();
                assert_eq!(st.segments, total - save_at, "only the remaining segments ran");
                assert_eq!(rest.next, frames);
                for k in 0..8 {
                    let (a, b) = (&rest.data[k * frames..][..frames], &whole[k * frames..][..frames]);
                    assert!(
                        a[state.emitted..].iter().zip(&b[state.emitted..]).all(|(x, y)| x.to_bits() == y.to_bits()),
                        "{frames} frames, {shifts} shifts, saved at {save_at}/{total}: plane {k} differs"
                    );
                }
                // The state does not fit other options or a damaged copy.
                let other = SeparateOptions { shifts: shifts + 1, ..opts };
                let (e, _) = resume(&other, &state);
                assert!(matches!(e, Err(Error::InvalidOptions(_))), "{e:?}");
                let mut cut = state.clone();
                cut.bytes.truncate(cut.bytes.len() - 3);
                let (e, _) = resume(&opts, &cut);
                assert!(matches!(e, Err(Error::InvalidOptions(_))), "{e:?}");
            }
        }
    }
}

//! The reader thread: keeps the ring of chunks topped up from the lock-step
//! stem reader, stretching every stem when the tempo or pitch is changed
//! ([`crate::stretch`]) and resampling to the device's rate when needed.
//!
//! A running job's stems ([`StemSet::open_growing`]) end, for now, at the
//! separated edge. While reading below it, the reader keeps the last
//! [`FADE_SECONDS`](super::FADE_SECONDS) of audio back; when the callback is about to run dry at
//! the edge it flushes the stretchers and resamplers, fades that held audio
//! out, sends it and a wait chunk (the callback then holds the playhead at
//! the edge and counts no underrun), and when more is separated it starts
//! again from the edge with a fade in. Where a loop wraps, the first
//! [`FADE_SECONDS`](super::FADE_SECONDS) of its start are crossfaded with what follows its end
//! (no click at the loop point), and the stretchers and resamplers run on
//! through the wrap. Everywhere else the audio is the stems' samples
//! untouched. When the job's finished files come
//! ([`super::Player::complete_stream`]) they take over at the reader's
//! position, without a gap.

use std::sync::atomic::Ordering;

use stemroom_engine::audio::resample::StreamResampler;

use super::transport::{Chunk, Shared};
use super::{fade_frames_at, CHUNK_FRAMES, READER_POLL};
use crate::mixer::{plan_reads, LoopRegion};
use crate::reader::StemSet;
use crate::stretch::{Stretcher, TimePitch};

/// Chunks still queued for the callback below which the reader, at the
/// separated edge, gives up waiting for more and fades out (3 chunks:
/// ~140 ms at 44.1 kHz, many device periods), for a ring of
/// [`CHUNKS`](super::CHUNKS) chunks; see [`low_water`].
const LOW_CHUNKS: usize = 3;

/// [`LOW_CHUNKS`] for a device at `device_rate` Hz and a ring of
/// `capacity` chunks: the 2048-frame chunks are shorter in time on a
/// faster device, so the threshold grows with the rate
/// ([`chunks_for`](super::chunks_for)'s steps) and stays ~140 ms (a fixed
/// 3 were 64 ms at 96 kHz, 32 ms at 192 kHz: the callback ran dry before
/// the faded tail came, a click); at most all but one of the ring's chunks
/// (a device reopened at a higher rate keeps the ring it opened with).
fn low_water(device_rate: u32, capacity: usize) -> usize {
    (LOW_CHUNKS * super::chunks_for(device_rate) / super::CHUNKS).max(LOW_CHUNKS).min(capacity.saturating_sub(1).max(1))
}

/// What one step of the reader did.
enum Step {
    /// Work was done; look again at once.
    Busy,
    /// Nothing to do until the callback frees a chunk or the transport moves.
    Idle,
}

/// The reader's position and buffers.
struct Reader {
    stems: StemSet,
    device_rate: u32,
    generation: u32,
    /// Song frame of the next frame to decode (input side).
    read_pos: u64,
    /// Song frame of the next frame to put in a chunk (output side).
    out_pos: f64,
    looping: Option<LoopRegion>,
    time_pitch: TimePitch,
    /// Song frames per device frame of this generation's chunks (the
    /// stems' rate over the device's, times the tempo).
    ratio: f64,
    /// One per stem while the tempo or pitch is changed, else none.
    stretchers: Vec<Stretcher>,
    /// The stretchers' tails of this run are in `ready` (or there are no
    /// stretchers).
    tails: bool,
    resamplers: Vec<StreamResampler>,
    /// Device-rate frames per stem waiting for a chunk (interleaved stereo).
    ready: Vec<Vec<f32>>,
    /// One decoded block per stem at the stems' rate.
    input: Vec<Vec<f32>>,
    stretched: Vec<f32>,
    resampled: Vec<f32>,
    /// The end-of-song chunk was sent.
    ended: bool,
    /// The resamplers' tails of this run were flushed (the song ended, a
    /// jump comes, or the separated edge was reached).
    flushed: bool,
    /// Reading a running job's stream that is not all separated.
    growing: bool,
    /// At the separated edge: the held audio was faded out (it is being
    /// sent), and then the wait chunk was sent.
    edge_faded: bool,
    waiting: bool,
    /// Device frames of fade in still to apply after a wait, and the
    /// length of a fade in device frames.
    fade_in: usize,
    fade_frames: usize,
    /// Song frames of this generation decoded so far are being heard
    /// continuously (a wrap then crossfades; a jump into the loop from a
    /// seek does not: the callback fades that one).
    decoded: bool,
    /// Per stem, the song frames that follow the loop's end (interleaved
    /// stereo, [`FADE_SECONDS`](super::FADE_SECONDS) of them), faded out under the loop's start
    /// after a wrap.
    overhang: Vec<Vec<f32>>,
    /// Song frames of the wrap's crossfade already applied, and its length
    /// (equal: none running).
    xfade_at: usize,
    xfade_len: usize,
    /// Loop wraps fed to the stretchers and resamplers but not yet sent
    /// in a chunk: the song frame where each pass ends (in the timeline of
    /// the frames before it) and the loop's length. The stretchers and
    /// resamplers run on through a wrap (the crossfade makes their input
    /// continuous; started afresh, each pass would begin and end against
    /// silence), and a chunk ends at each wrap, so every chunk still holds
    /// contiguous song frames.
    wraps: std::collections::VecDeque<(f64, f64)>,
}

impl Reader {
    fn new(stems: StemSet, device_rate: u32) -> Self {
        let n = stems.len();
        Reader {
            stems,
            device_rate,
            generation: u32::MAX,
            read_pos: 0,
            out_pos: 0.0,
            looping: None,
            time_pitch: TimePitch::default(),
            ratio: 1.0,
            stretchers: Vec::new(),
            tails: true,
            resamplers: Vec::new(),
            ready: vec![Vec::new(); n],
            input: vec![vec![0.0; CHUNK_FRAMES * 2]; n],
            stretched: Vec::new(),
            resampled: Vec::new(),
            ended: false,
            flushed: false,
            growing: false,
            edge_faded: false,
            waiting: false,
            fade_in: 0,
            fade_frames: fade_frames_at(device_rate),
            decoded: false,
            overhang: vec![Vec::new(); n],
            xfade_at: 0,
            xfade_len: 0,
            wraps: std::collections::VecDeque::new(),
        }
    }

    /// Restart reading at `frame` (stems' rate): every stem seeks there, the
    /// stretchers and resamplers start afresh and nothing decoded before is
    /// kept. A stem that cannot seek (decoded from its start up to `frame`)
    /// gives up when a newer generation comes or the player stops: the
    /// next step restarts (or the thread ends) anyway.
    fn reposition(&mut self, frame: u64, shared: &Shared) -> Result<(), String> {
        let song_rate = shared.song_rate;
        let generation = self.generation;
        self.stems.seek_or_give_up(frame, &|| shared.superseded(generation)).map_err(|e| e.to_string())?;
        self.resamplers = (0..self.stems.len())
            .map(|_| StreamResampler::new(song_rate, self.device_rate, 2))
            .collect::<Result<_, _>>()?;
        self.stretchers = (0..self.stems.len()).filter_map(|_| Stretcher::new(song_rate, self.time_pitch)).collect();
        self.tails = self.stretchers.is_empty();
        self.flushed = false;
        self.wraps.clear();
        for r in &mut self.ready {
            r.clear();
        }
        self.read_pos = frame;
        self.out_pos = frame as f64;
        Ok(())
    }

    /// Take up a new generation (a seek or a loop change).
    fn restart(&mut self, shared: &Shared) -> Result<(), String> {
        // The generation is read under the lock, as every change makes it:
        // read after, a seek landing between would be taken as done while
        // this reads from the target before it (and never restart).
        let (t, generation, device_rate) = shared
            .transport
            .lock()
            .map(|t| (*t, shared.generation.load(Ordering::Acquire), shared.device_rate.load(Ordering::Acquire)))
            .map_err(|_| "the transport lock is poisoned".to_string())?;
        self.generation = generation;
        if device_rate != self.device_rate {
            // The output was reopened at another rate.
            self.device_rate = device_rate;
            self.fade_frames = fade_frames_at(device_rate);
        }
        self.looping = t.looping;
        self.time_pitch = t.time_pitch.clean();
        self.ratio = shared.ratio() * f64::from(self.time_pitch.tempo);
        self.ended = false;
        self.flushed = false;
        self.edge_faded = false;
        self.waiting = false;
        self.fade_in = 0;
        self.decoded = false;
        self.xfade_at = 0;
        self.xfade_len = 0;
        self.reposition(t.target, shared)?;
        if t.switch {
            // Taking over from the old tempo's read-ahead, which the
            // callback fades out where this starts.
            self.fade_in = self.fade_frames;
        }
        Ok(())
    }

    /// A running job's finished files take over from its stream at the
    /// reader's position (the same samples: nothing is heard to change).
    fn take_replacement(&mut self, shared: &Shared) -> Result<(), String> {
        if !self.stems.is_growing() {
            return Ok(());
        }
        let Ok(mut slot) = shared.replacement.try_lock() else { return Ok(()) };
        if let Some(mut files) = slot.take() {
            let generation = self.generation;
            match files.seek_or_give_up(self.read_pos, &|| shared.superseded(generation)) {
                Ok(true) => self.stems = files,
                // A newer seek came (or the player closes) while a stem
                // decoded up to here: tried again from the new place.
                Ok(false) => *slot = Some(files),
                Err(e) => tracing::warn!("the finished stems cannot take over from the stream ({e}): playing on"),
            }
        }
        Ok(())
    }

    /// At the separated edge with nothing more to read: wait while the
    /// callback has audio queued; when it is about to run dry, flush, fade
    /// out and send what is held, then the wait chunk.
    fn at_edge(&mut self, full: &mut rtrb::Producer<Chunk>, free: &mut rtrb::Consumer<Chunk>) -> Result<Step, String> {
        if self.waiting {
            return Ok(Step::Idle);
        }
        if !self.edge_faded {
            let capacity = free.buffer().capacity();
            if capacity - free.slots() > low_water(self.device_rate, capacity) {
                return Ok(Step::Idle);
            }
            if !self.tails {
                self.finish_stretch()?;
            }
            if !self.flushed {
                self.flush_tails()?;
            }
            let have = self.ready.iter().map(|r| r.len() / 2).min().unwrap_or(0);
            let n = have.min(self.fade_frames);
            for r in &mut self.ready {
                for (i, lr) in r[2 * (have - n)..2 * have].chunks_exact_mut(2).enumerate() {
                    let g = (n - i) as f32 / (n + 1) as f32;
                    lr[0] *= g;
                    lr[1] *= g;
                }
            }
            self.edge_faded = true;
        }
        if self.send_ready(true, full, free) {
            return Ok(Step::Busy);
        }
        let Ok(mut chunk) = free.pop() else { return Ok(Step::Idle) };
        chunk.generation = self.generation;
        chunk.start = self.read_pos;
        chunk.frames = 0;
        chunk.end = false;
        chunk.wait = true;
        let _ = full.push(chunk);
        self.waiting = true;
        Ok(Step::Busy)
    }

    /// Before the run ends (the song ends), let the stretchers give up
    /// their tails, through the resamplers.
    fn finish_stretch(&mut self) -> Result<(), String> {
        for (s, st) in self.stretchers.iter_mut().enumerate() {
            self.stretched.clear();
            st.finish(&mut self.stretched);
            self.resampled.clear();
            self.resamplers[s].push(&self.stretched, &mut self.resampled)?;
            self.ready[s].extend_from_slice(&self.resampled);
        }
        self.tails = true;
        Ok(())
    }

    /// Before the run ends (the song ends), let the resamplers give up
    /// their tails.
    fn flush_tails(&mut self) -> Result<(), String> {
        for (s, r) in self.resamplers.iter_mut().enumerate() {
            self.resampled.clear();
            r.finish(&mut self.resampled)?;
            self.ready[s].extend_from_slice(&self.resampled);
        }
        self.flushed = true;
        Ok(())
    }

    /// Send up to one chunk of ready frames when a chunk is full, when the
    /// next loop wrap's frames are all ready (the chunk ends there), or
    /// when `must_flush` (the song ends) and anything is ready.
    fn send_ready(
        &mut self,
        must_flush: bool,
        full: &mut rtrb::Producer<Chunk>,
        free: &mut rtrb::Consumer<Chunk>,
    ) -> bool {
        let have = self.ready.iter().map(|r| r.len() / 2).min().unwrap_or(0);
        // A loop's wrap reached: the frames from here are the next pass's.
        while let Some(&(end, len)) = self.wraps.front() {
            if (end - self.out_pos) / self.ratio >= 0.5 {
                break;
            }
            self.out_pos -= len;
            self.wraps.pop_front();
        }
        // Device frames up to the next wrap: a chunk ends there.
        let to_wrap = self.wraps.front().map(|&(end, _)| ((end - self.out_pos) / self.ratio).round() as usize);
        // Below a running job's separated edge the last fade's worth stays
        // back, to be faded out should playback catch up with the edge.
        let hold = if self.growing && !must_flush { self.fade_frames } else { 0 };
        let at_wrap = to_wrap.is_some_and(|n| n < CHUNK_FRAMES && have >= n);
        if !(have >= CHUNK_FRAMES + hold || (have > 0 && must_flush) || at_wrap) {
            return false;
        }
        let Ok(mut chunk) = free.pop() else { return true };
        let take = have.min(CHUNK_FRAMES).min(to_wrap.unwrap_or(usize::MAX));
        for (s, r) in self.ready.iter_mut().enumerate() {
            let base = s * CHUNK_FRAMES * 2;
            chunk.data[base..base + take * 2].copy_from_slice(&r[..take * 2]);
            r.drain(..take * 2);
        }
        if self.fade_in > 0 {
            // Back from a wait at the edge.
            let n = self.fade_in.min(take);
            for s in 0..self.ready.len() {
                let base = s * CHUNK_FRAMES * 2;
                for (i, lr) in chunk.data[base..base + 2 * n].chunks_exact_mut(2).enumerate() {
                    let g = (self.fade_frames - self.fade_in + i + 1) as f32 / (self.fade_frames + 1) as f32;
                    lr[0] *= g;
                    lr[1] *= g;
                }
            }
            self.fade_in -= n;
        }
        chunk.wait = false;
        chunk.generation = self.generation;
        chunk.start = self.out_pos.round() as u64;
        chunk.frames = take;
        chunk.ratio = self.ratio;
        chunk.end = false;
        self.out_pos += take as f64 * self.ratio;
        let _ = full.push(chunk);
        true
    }

    /// Everything decoded has been sent: mark the end.
    fn send_end(&mut self, full: &mut rtrb::Producer<Chunk>, free: &mut rtrb::Consumer<Chunk>) {
        let Ok(mut chunk) = free.pop() else { return };
        chunk.generation = self.generation;
        chunk.start = self.read_pos;
        chunk.frames = 0;
        chunk.end = true;
        chunk.wait = false;
        let _ = full.push(chunk);
        self.ended = true;
    }

    /// Stretch the first `stretched` frames of every stem's `input` (when
    /// the tempo or pitch is changed; else take its first `plain` frames)
    /// and resample them into `ready`.
    fn convert(&mut self, stretched: usize, plain: usize) -> Result<(), String> {
        for (s, input) in self.input.iter().enumerate() {
            self.resampled.clear();
            match self.stretchers.get_mut(s) {
                Some(st) => {
                    self.stretched.clear();
                    st.process(&input[..stretched * 2], &mut self.stretched);
                    self.resamplers[s].push(&self.stretched, &mut self.resampled)?;
                }
                None => self.resamplers[s].push(&input[..plain * 2], &mut self.resampled)?,
            }
            self.ready[s].extend_from_slice(&self.resampled);
        }
        Ok(())
    }

    /// Whether reading on from `start` (not where the last read ended) is
    /// a loop's wrap in audio being heard continuously: the last read
    /// ended at the loop's end and this one starts at its start (a jump
    /// into the loop from a seek is not one: the callback fades that).
    fn is_wrap(&self, start: u64, length: u64) -> bool {
        // The loop's end as reads wrap at it (`plan_reads`): within the song.
        self.decoded
            && start < self.read_pos
            && self
                .looping
                .is_some_and(|l| u64::from(l.end).min(length) == self.read_pos && u64::from(l.start) == start)
    }

    /// At a loop's end: read the [`FADE_SECONDS`](super::FADE_SECONDS) of song frames that
    /// follow it into `overhang` (silence where the stems end or a running
    /// job's separated edge is) and start the crossfade.
    fn read_overhang(&mut self, shared: &Shared) -> Result<(), String> {
        let len = fade_frames_at(shared.song_rate);
        let got = self.stems.read(len, &mut self.overhang).map_err(|e| e.to_string())?;
        for o in &mut self.overhang {
            o.resize(2 * len, 0.0);
            o[2 * got.min(len)..].fill(0.0);
        }
        self.xfade_at = 0;
        self.xfade_len = len;
        Ok(())
    }

    /// Fade the loop's start in over the frames that follow its end, on
    /// the first `frames` frames of `input` (equal-gain linear ramps, as the
    /// seek's fades: the two are the same recording a moment apart, so
    /// mostly correlated).
    fn crossfade_wrap(&mut self, frames: usize) {
        let n = frames.min(self.xfade_len - self.xfade_at);
        if n == 0 {
            return;
        }
        let len = self.xfade_len;
        for (input, over) in self.input.iter_mut().zip(&self.overhang) {
            let over = &over[2 * self.xfade_at..2 * (self.xfade_at + n)];
            for (i, (lr, o)) in input[..2 * n].chunks_exact_mut(2).zip(over.chunks_exact(2)).enumerate() {
                let g = (self.xfade_at + i + 1) as f32 / (len + 1) as f32;
                lr[0] = lr[0] * g + o[0] * (1.0 - g);
                lr[1] = lr[1] * g + o[1] * (1.0 - g);
            }
        }
        self.xfade_at += n;
    }

    /// Decode `frames` frames of every stem from `start` and resample them
    /// into `ready`.
    fn decode(&mut self, shared: &Shared, start: u64, frames: usize) -> Result<(), String> {
        if start != self.read_pos {
            // The loop wraps. What follows its end is read first, to fade out
            // under its start (a cut from the end's waveform to the start's
            // is a click, as a sampler's loop without a crossfade).
            if self.is_wrap(start, shared.length.load(Ordering::Acquire)) {
                self.read_overhang(shared)?;
                // Only the stems move: the stretchers and resamplers go on
                // (see `wraps`).
                let generation = self.generation;
                self.stems.seek_or_give_up(start, &|| shared.superseded(generation)).map_err(|e| e.to_string())?;
                self.wraps.push_back((self.read_pos as f64, (self.read_pos - start) as f64));
                self.read_pos = start;
            } else {
                self.reposition(start, shared)?;
            }
        }
        let longest = self.stems.read(frames, &mut self.input).map_err(|e| e.to_string())?;
        self.decoded = true;
        self.crossfade_wrap(longest);
        let all_ended = self.stems.all_ended();
        if longest < frames && !all_ended {
            // A running job's separated edge: only what is there.
            self.convert(longest, longest)?;
            self.read_pos += longest as u64;
            return Ok(());
        }
        // Where the stems end, only their frames go on (the stretchers pad
        // the end themselves; a resampler given the read's padding played
        // up to 46 ms of silence past the end, and counted it as song).
        let real = if longest < frames && all_ended { longest } else { frames };
        self.convert(real, real)?;
        if longest < frames && all_ended {
            // The stems end before their declared (or unknown) length.
            shared.length.store(self.read_pos + longest as u64, Ordering::Release);
        }
        self.read_pos += longest.max(if all_ended { 0 } else { frames }) as u64;
        Ok(())
    }

    /// One step: follow the transport, then send or decode what is due.
    fn step(
        &mut self,
        shared: &Shared,
        full: &mut rtrb::Producer<Chunk>,
        free: &mut rtrb::Consumer<Chunk>,
    ) -> Result<Step, String> {
        if shared.generation.load(Ordering::Acquire) != self.generation {
            self.restart(shared)?;
            return Ok(Step::Busy);
        }
        self.take_replacement(shared)?;
        let edge = self.stems.edge();
        self.growing = edge.is_some();
        shared.edge.store(edge.unwrap_or(u64::MAX), Ordering::Release);
        if self.ended || free.is_empty() {
            return Ok(Step::Idle);
        }
        let length = shared.length.load(Ordering::Acquire);
        let (runs, _) = plan_reads(self.read_pos, CHUNK_FRAMES, length, self.looping);
        let next = runs.first().copied();
        let at_edge = matches!((edge, next), (Some(e), Some((start, _))) if start == self.read_pos && start >= e);
        // A fade out begun at the edge is completed (with its wait chunk)
        // even when more has been separated meanwhile.
        if at_edge || (self.edge_faded && !self.waiting) {
            return self.at_edge(full, free);
        }
        if self.waiting || self.edge_faded {
            // More was separated (or the files came): on from the edge,
            // fading in.
            self.waiting = false;
            self.edge_faded = false;
            self.flushed = false;
            self.reposition(self.read_pos, shared)?;
            self.fade_in = self.fade_frames;
        }
        // A chunk holds contiguous song frames: before the song ends (or a
        // jump), what is ready goes out even if the chunk is not full. A
        // loop's wrap is no such end: the stretchers and resamplers run on
        // through it, and `send_ready` ends a chunk there.
        let must_flush = next.is_none_or(|(start, _)| start != self.read_pos && !self.is_wrap(start, length));
        if must_flush && !self.tails {
            self.finish_stretch()?;
        }
        // The resamplers hold up to a block of song frames (and their own
        // delay): at the song's end (or before a jump) they give them up
        // before the run ends, or it would lose its last frames.
        if must_flush && !self.flushed {
            self.flush_tails()?;
        }
        if self.send_ready(must_flush, full, free) {
            return Ok(Step::Busy);
        }
        match next {
            None => self.send_end(full, free),
            Some((start, frames)) => self.decode(shared, start, frames)?,
        }
        Ok(Step::Busy)
    }
}

/// The reader thread: keeps the full ring topped up for the current
/// generation until the player stops.
///
/// A read error stops playback with its message ([`Shared::fail`]), and the
/// thread waits: a seek, a loop change or Play (each a new generation)
/// reads again from there, and the message goes once that works. A stem on
/// a drive that was gone for a moment plays again, where before the player
/// stayed silent until the song was opened again.
pub(super) fn read_loop(
    shared: &Shared,
    stems: StemSet,
    device_rate: u32,
    mut full: rtrb::Producer<Chunk>,
    mut free: rtrb::Consumer<Chunk>,
) {
    let mut reader = Reader::new(stems, device_rate);
    let mut failed: Option<String> = None;
    while !shared.stop.load(Ordering::Acquire) {
        match reader.step(shared, &mut full, &mut free) {
            Ok(step) => {
                // The message goes once a read worked again (the restart
                // alone reads nothing: a drive still gone fails after it).
                if reader.decoded {
                    if let Some(message) = failed.take() {
                        shared.reader_failed.store(false, Ordering::Release);
                        shared.clear_error(&message);
                    }
                }
                if matches!(step, Step::Idle) {
                    std::thread::sleep(READER_POLL);
                }
            }
            Err(e) => {
                let e = format!("{}. Press Play to try again.", e.trim_end_matches('.'));
                // Marked before playing stops: a Play right after must see
                // it and read again.
                shared.reader_failed.store(true, Ordering::Release);
                shared.fail(e.clone());
                failed = Some(e);
                // Waits for a generation after the failure (a seek that came
                // during the step, whose restart failed, is not one to go
                // on with), then restarts whatever the generation: the
                // failed step may have left the stems half repositioned,
                // out of lock step.
                let failed_at = shared.generation.load(Ordering::Acquire);
                reader.generation = u32::MAX;
                while !shared.stop.load(Ordering::Acquire) && shared.generation.load(Ordering::Acquire) == failed_at {
                    std::thread::sleep(READER_POLL.max(std::time::Duration::from_millis(20)));
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    /// The separated edge's threshold is the same time at any device rate.
    #[test]
    fn the_edge_threshold_is_a_time_not_a_count() {
        for rate in [44_100u32, 48_000, 96_000, 192_000] {
            let chunks = super::low_water(rate, super::super::chunks_for(rate));
            let ms = (chunks * super::super::CHUNK_FRAMES) as f64 * 1000.0 / f64::from(rate);
            assert!((120.0..=150.0).contains(&ms), "{rate} Hz: {chunks} chunks, {ms:.0} ms");
        }
    }
}

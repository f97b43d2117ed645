//! The reader thread: keeps the ring of chunks topped up from the lock-step
//! stem reader, stretching every stem when the tempo or pitch is changed
//! ([`crate::stretch`]) and resampling to the device's rate when needed.

use std::sync::atomic::Ordering;

use stemroom_engine::audio::resample::StreamResampler;

use super::transport::{Chunk, Shared};
use super::{CHUNK_FRAMES, READER_POLL};
use crate::mixer::{plan_reads, LoopRegion};
use crate::reader::StemSet;
use crate::stretch::{Stretcher, TimePitch};

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
    /// The resamplers' tails were flushed at the end of the song.
    flushed: bool,
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
        }
    }

    /// Restart reading at `frame` (stems' rate): every stem seeks there, the
    /// stretchers and resamplers start afresh and nothing decoded before is
    /// kept.
    fn reposition(&mut self, frame: u64, song_rate: u32) -> Result<(), String> {
        self.stems.seek(frame).map_err(|e| e.to_string())?;
        self.resamplers = (0..self.stems.len())
            .map(|_| StreamResampler::new(song_rate, self.device_rate, 2))
            .collect::<Result<_, _>>()?;
        self.stretchers = (0..self.stems.len()).filter_map(|_| Stretcher::new(song_rate, self.time_pitch)).collect();
        self.tails = self.stretchers.is_empty();
        for r in &mut self.ready {
            r.clear();
        }
        self.read_pos = frame;
        self.out_pos = frame as f64;
        Ok(())
    }

    /// Take up a new generation (a seek or a loop change).
    fn restart(&mut self, shared: &Shared) -> Result<(), String> {
        let t = shared.transport.lock().map(|t| *t).map_err(|_| "the transport lock is poisoned".to_string())?;
        self.generation = shared.generation.load(Ordering::Acquire);
        self.looping = t.looping;
        self.time_pitch = t.time_pitch.clean();
        self.ratio = shared.ratio * f64::from(self.time_pitch.tempo);
        self.ended = false;
        self.flushed = false;
        self.reposition(t.target, shared.song_rate)
    }

    /// Before the run ends (the song ends or the loop wraps), let the
    /// stretchers give up their tails, through the resamplers.
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

    /// At the end of the song, let the resamplers give up their tails.
    fn flush_tails(&mut self) -> Result<(), String> {
        for (s, r) in self.resamplers.iter_mut().enumerate() {
            self.resampled.clear();
            r.finish(&mut self.resampled)?;
            self.ready[s].extend_from_slice(&self.resampled);
        }
        self.flushed = true;
        Ok(())
    }

    /// Send up to one chunk of ready frames when a chunk is full, or when
    /// `must_flush` (a loop wraps or the song ends) and anything is ready.
    fn send_ready(
        &mut self,
        must_flush: bool,
        full: &mut rtrb::Producer<Chunk>,
        free: &mut rtrb::Consumer<Chunk>,
    ) -> bool {
        let have = self.ready.iter().map(|r| r.len() / 2).min().unwrap_or(0);
        if !(have >= CHUNK_FRAMES || (have > 0 && must_flush)) {
            return false;
        }
        let Ok(mut chunk) = free.pop() else { return true };
        let take = have.min(CHUNK_FRAMES);
        for (s, r) in self.ready.iter_mut().enumerate() {
            let base = s * CHUNK_FRAMES * 2;
            chunk.data[base..base + take * 2].copy_from_slice(&r[..take * 2]);
            r.drain(..take * 2);
        }
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
        let _ = full.push(chunk);
        self.ended = true;
    }

    /// Decode `frames` frames of every stem from `start` and resample them
    /// into `ready`.
    fn decode(&mut self, shared: &Shared, start: u64, frames: usize) -> Result<(), String> {
        if start != self.read_pos {
            // The loop wraps (a loop point is a cut anyway).
            self.reposition(start, shared.song_rate)?;
        }
        let longest = self.stems.read(frames, &mut self.input).map_err(|e| e.to_string())?;
        let all_ended = self.stems.all_ended();
        // Stretchers take only the song's frames (they pad the end
        // themselves); the padding of a short read is trimmed below.
        let real = if longest < frames && all_ended { longest } else { frames };
        for (s, input) in self.input.iter().enumerate() {
            self.resampled.clear();
            match self.stretchers.get_mut(s) {
                Some(st) => {
                    self.stretched.clear();
                    st.process(&input[..real * 2], &mut self.stretched);
                    self.resamplers[s].push(&self.stretched, &mut self.resampled)?;
                }
                None => self.resamplers[s].push(&input[..frames * 2], &mut self.resampled)?,
            }
            self.ready[s].extend_from_slice(&self.resampled);
        }
        if longest < frames && all_ended {
            // The stems end before their declared (or unknown) length.
            shared.length.store(self.read_pos + longest as u64, Ordering::Release);
            if self.stretchers.is_empty() && self.resamplers.iter().all(StreamResampler::is_passthrough) {
                let padding = (frames - longest) * 2;
                for r in &mut self.ready {
                    r.truncate(r.len().saturating_sub(padding));
                }
            }
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
        if self.ended || free.is_empty() {
            return Ok(Step::Idle);
        }
        let length = shared.length.load(Ordering::Acquire);
        let (runs, _) = plan_reads(self.read_pos, CHUNK_FRAMES, length, self.looping);
        let next = runs.first().copied();
        // A chunk holds contiguous song frames: before a loop wraps or the
        // song ends, what is ready goes out even if the chunk is not full.
        let must_flush = next.is_none_or(|(start, _)| start != self.read_pos);
        if must_flush && !self.tails {
            self.finish_stretch()?;
        }
        if next.is_none() && !self.flushed {
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
pub(super) fn read_loop(
    shared: &Shared,
    stems: StemSet,
    device_rate: u32,
    mut full: rtrb::Producer<Chunk>,
    mut free: rtrb::Consumer<Chunk>,
) {
    let mut reader = Reader::new(stems, device_rate);
    while !shared.stop.load(Ordering::Acquire) {
        match reader.step(shared, &mut full, &mut free) {
            Ok(Step::Busy) => {}
            Ok(Step::Idle) => std::thread::sleep(READER_POLL),
            Err(e) => return shared.fail(e),
        }
    }
}

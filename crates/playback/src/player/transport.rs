//! State shared by the front end, the reader thread and the audio callback,
//! and the chunks that carry audio between them.

use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, Ordering};
use std::sync::Mutex;

use super::MAX_STEMS;

/// Chunks of read-ahead at the old tempo and pitch still played after a
/// change (3 × 2048 frames, about 140 ms at 44.1 kHz): the reader has two to
/// three chunks' time to make the first chunk at the new settings, which
/// takes a few milliseconds (stretching 4 stems) even on a busy 2-core
/// machine.
pub(super) const SWITCH_CHUNKS: usize = 3;
use crate::mixer::{LoopRegion, MixControls};
use crate::stretch::TimePitch;

/// Shortest loop, in seconds (50 ms; 2205 frames at 44.1 kHz). A chunk
/// ends at every wrap, so the read-ahead of [`super::CHUNKS`] chunks holds
/// at most that many passes of a short loop: at 50 ms (two chunks a pass)
/// 0.8 s (a 10 ms loop left 0.32 s, where a loaded machine drops out),
/// and a wrap's seek comes at most 20 times a second.
pub(super) const MIN_LOOP_SECONDS: f64 = 0.05;

/// One block of decoded audio for every stem.
pub(super) struct Chunk {
    pub(super) generation: u32,
    /// Song frame (stems' rate) of the chunk's first frame.
    pub(super) start: u64,
    /// Valid frames (device rate); 0 with `end` set marks the end of the song.
    pub(super) frames: usize,
    /// Song frames per device frame in this chunk (the stems' rate over
    /// the device's, times the tempo).
    pub(super) ratio: f64,
    pub(super) end: bool,
    /// With `frames` 0: playback reached the separated edge of a running
    /// job and waits there (at `start`) for more.
    pub(super) wait: bool,
    /// `stems` blocks of `CHUNK_FRAMES` interleaved stereo frames.
    pub(super) data: Box<[f32]>,
}

/// State shared by the front end, the reader and the callback.
pub(super) struct Shared {
    pub(super) stems: usize,
    pub(super) song_rate: u32,
    /// The output device's rate in Hz (another after the output was
    /// reopened on a device at another rate: [`Shared::change_device_rate`]).
    pub(super) device_rate: AtomicU32,
    /// Song frames per device frame of the audio being played now (`f64`
    /// bits; `ratio` times the tempo), to convert the device's latency.
    pub(super) heard_ratio: AtomicU64,
    pub(super) length: AtomicU64,
    /// The stems' effective gains (`f32` bits, left and right per stem), computed off the audio
    /// thread by `set_controls` and read by the callback without a lock: a
    /// sequence lock whose version is odd while a writer is storing them.
    pub(super) gains: [AtomicU32; 2 * MAX_STEMS],
    pub(super) controls_version: AtomicU64,
    /// Level meters, `f32` bits, per stem and the master at index
    /// `MAX_STEMS`, as heard (after gains, master and the play/pause fade):
    /// the peak since the front end last read it (raised with `fetch_max`
    /// on the bits, which order like the values for non-negative floats;
    /// taken and reset by [`Shared::take_levels`]), and the mean square of
    /// the last device buffer.
    pub(super) peaks: [AtomicU32; MAX_STEMS + 1],
    pub(super) mean_squares: [AtomicU32; MAX_STEMS + 1],
    /// Serialises writers of `gains` (never taken by the callback).
    pub(super) controls_writer: Mutex<()>,
    pub(super) playing: AtomicBool,
    pub(super) ended: AtomicBool,
    pub(super) generation: AtomicU32,
    /// Seek target and loop of the current generation, written together.
    pub(super) transport: Mutex<Transport>,
    /// A tempo or pitch change switches without a gap: chunks of the
    /// generation `switch_from` (`u32::MAX`: none) still play up to song
    /// frame `switch_at`, fading out over the last [`super::FADE_SECONDS`],
    /// where the new generation's chunks start (fading in). Written before
    /// the generation is bumped.
    pub(super) switch_from: AtomicU32,
    pub(super) switch_at: AtomicU64,
    /// Song frame after the last frame handed to the device.
    pub(super) position: AtomicU64,
    /// Song frame where playback last started (Play, a seek, the end of a
    /// hold): no more than the frames handed over since are heard yet
    /// ([`Shared::heard_position`]). A change that goes on from the
    /// playhead (a loop set, a new device rate) leaves it.
    pub(super) resumed_at: AtomicU64,
    /// Output latency in device frames, as last reported by the device.
    pub(super) latency_frames: AtomicU64,
    pub(super) callbacks: AtomicU64,
    pub(super) frames_played: AtomicU64,
    pub(super) underrun_frames: AtomicU64,
    /// Silent device frames while playing after a seek, a loop change or
    /// the start, before the new place's first audio (not underruns).
    pub(super) reading_frames: AtomicU64,
    /// Chunks read ahead, as the callback left them at its end.
    pub(super) read_ahead: AtomicU64,
    /// The generation of the audio last heard, as the callback left it at
    /// its end (`u32::MAX`: none yet). Right after a seek the read-ahead is
    /// still the old place's: a tempo change then cannot switch at a point
    /// ahead, the old audio goes (fading out) before it.
    pub(super) heard_generation: AtomicU32,
    /// Non-fatal errors the device reported (underruns, transient failures).
    pub(super) device_glitches: AtomicU64,
    /// Those of them that were not underruns (xruns): a flood of these is
    /// a stream that fails on every write.
    pub(super) device_errors: AtomicU64,
    /// Times the output stream was reopened after it stalled or was lost.
    pub(super) reopens: AtomicU64,
    /// Set by the stream's error callback when the stream is gone (device
    /// unplugged, sound server restarted); the output thread reopens it.
    pub(super) output_lost: AtomicBool,
    /// Set while the reader thread stopped on an error (a stem that could
    /// not be read: a drive gone for a moment, a file cut short): it waits
    /// for a seek, a loop change or Play to read again.
    pub(super) reader_failed: AtomicBool,
    /// Since when the output thread has been inside a call into the audio
    /// backend to close or reopen the stream (`None`: it is not): such a
    /// call can block for good on a sound server that hung, and then the
    /// thread cannot say so itself ([`Shared::notice_hung_output`]).
    pub(super) in_backend_since: Mutex<Option<std::time::Instant>>,
    pub(super) error: Mutex<Option<String>>,
    pub(super) stop: AtomicBool,
    /// The song's beat grid in song frames (`f64` bits; a period of 0: no
    /// grid), the click track and count-in switches, the tempo (`f32`
    /// bits) for the count-in's length, and whether a count-in is playing.
    pub(super) beat_period: AtomicU64,
    pub(super) beat_offset: AtomicU64,
    pub(super) metronome: AtomicBool,
    pub(super) count_in: AtomicBool,
    /// The next play goes on without a count-in: a player that takes over
    /// from another mid-song (`Player::hand_over`) is not Play pressed.
    pub(super) skip_count_in: AtomicBool,
    pub(super) tempo: AtomicU32,
    pub(super) counting_in: AtomicBool,
    /// Frames separated so far of a running job's stems (`u64::MAX`: all,
    /// or finished files), as the reader last saw.
    pub(super) edge: AtomicU64,
    /// Playback waits at the separated edge.
    pub(super) waiting: AtomicBool,
    /// A running job's finished files, to take over from its stream where
    /// the reader is.
    pub(super) replacement: Mutex<Option<crate::reader::StemSet>>,
}

#[derive(Debug, Clone, Copy)]
pub(super) struct Transport {
    pub(super) target: u64,
    pub(super) looping: Option<LoopRegion>,
    pub(super) time_pitch: TimePitch,
    /// This generation takes over from the previous one at `target`
    /// without a gap (see [`Shared::switch_at`]): it starts with a fade in.
    pub(super) switch: bool,
}

impl Shared {
    /// The meters of the stems and of the master: peak since the last call
    /// (reset here) and RMS of the last device buffer, both linear
    /// (1.0 = full scale).
    pub(super) fn take_levels(&self) -> (Vec<crate::player::MeterLevel>, crate::player::MeterLevel) {
        let level = |i: usize| crate::player::MeterLevel {
            peak: f32::from_bits(self.peaks[i].swap(0, Ordering::AcqRel)),
            rms: f32::from_bits(self.mean_squares[i].load(Ordering::Acquire)).max(0.0).sqrt(),
        };
        ((0..self.stems).map(level).collect(), level(MAX_STEMS))
    }

    /// Song frames per device frame at the recorded tempo (the stems' rate
    /// over the device's).
    pub(super) fn ratio(&self) -> f64 {
        f64::from(self.song_rate) / f64::from(self.device_rate.load(Ordering::Acquire).max(1))
    }

    /// The output now runs at `rate` Hz (reopened on a device that does not
    /// take the old rate): the reader reads again from the playhead for it,
    /// as after a seek (what was read ahead at the old rate fades out).
    pub(super) fn change_device_rate(&self, rate: u32) {
        self.retarget(|t| {
            self.device_rate.store(rate, Ordering::Release);
            // Under the transport's lock: a seek that came meanwhile (it
            // stores its target as the position under the same lock) is
            // where this goes on from, not lost.
            t.target = self.position.load(Ordering::Acquire);
        });
    }

    pub(super) fn play(&self) {
        if self.ended.swap(false, Ordering::AcqRel) {
            self.seek(0);
        } else if self.reader_failed.load(Ordering::Acquire) {
            // The reader stopped on an error: Play tries again from here.
            self.seek(self.position.load(Ordering::Acquire));
        }
        // Only from paused: a Play while playing (a second click, a
        // command sent twice) leaves the heard position as it is.
        if !self.playing.load(Ordering::Acquire) {
            if let Ok(_t) = self.transport.lock() {
                self.resumed_at.store(self.position.load(Ordering::Acquire), Ordering::Release);
            }
        }
        self.playing.store(true, Ordering::Release);
    }

    /// The song frame being heard: the position less the output's latency,
    /// but never less than where playback last started (just after Play
    /// the device buffer is empty: its drained time is silence, not the
    /// song before the playhead, which a full latency's subtraction showed
    /// as a jump back). Held at a separated edge, or paused, the position.
    /// A loop's wrap (position before where it started) subtracts the
    /// whole latency, as before.
    pub(super) fn heard_position(&self) -> u64 {
        let playing = self.playing.load(Ordering::Acquire);
        let position = self.position.load(Ordering::Acquire);
        if !playing || self.waiting.load(Ordering::Acquire) {
            return position;
        }
        let ratio = f64::from_bits(self.heard_ratio.load(Ordering::Acquire));
        let latency = (self.latency_frames.load(Ordering::Acquire) as f64 * ratio) as u64;
        let since = position.checked_sub(self.resumed_at.load(Ordering::Acquire)).unwrap_or(u64::MAX);
        position.saturating_sub(latency.min(since))
    }

    /// Whether reading for `generation` is no longer wanted: a newer seek,
    /// loop or tempo change came, or the player stops.
    pub(super) fn superseded(&self, generation: u32) -> bool {
        self.stop.load(Ordering::Acquire) || self.generation.load(Ordering::Acquire) != generation
    }

    pub(super) fn seek(&self, frame: u64) {
        // Not past the separated edge of a running job.
        let frame = frame.min(self.length.load(Ordering::Acquire)).min(self.edge.load(Ordering::Acquire));
        self.retarget(|t| t.target = frame);
        self.ended.store(false, Ordering::Release);
    }

    /// Set or clear the loop. A loop is at least [`MIN_LOOP_SECONDS`] long
    /// (a shorter one is lengthened): a loop of a few frames would make the
    /// reader seek and rebuild its resamplers for every few frames.
    /// A loop lengthened past the song's end ends there and starts earlier.
    pub(super) fn set_loop(&self, looping: Option<LoopRegion>) {
        let shortest = ((f64::from(self.song_rate) * MIN_LOOP_SECONDS) as u32).max(1);
        let length = u32::try_from(self.length.load(Ordering::Acquire)).unwrap_or(u32::MAX);
        let region = looping.filter(|l| l.start < l.end).map(|l| {
            let end = l.end.max(l.start.saturating_add(shortest));
            if end > length && l.end <= length {
                LoopRegion { start: l.start.min(length.saturating_sub(shortest)), end: length }
            } else {
                LoopRegion { start: l.start, end }
            }
        });
        // A loop set after the song ended is where Play goes on (not the
        // song's start, which Play after the end means otherwise).
        let ended = region.is_some() && self.ended.swap(false, Ordering::AcqRel);
        self.retarget(|t| {
            t.looping = region;
            // Under the transport's lock: a seek that came meanwhile is
            // where playback goes on from, not undone.
            t.target = match region {
                Some(r) if ended => u64::from(r.start),
                _ => self.position.load(Ordering::Acquire),
            };
        });
    }

    /// A new generation: what is read ahead is dropped, playback goes on
    /// from the transport's target at once.
    pub(super) fn retarget(&self, change: impl FnOnce(&mut Transport)) {
        let Ok(mut t) = self.transport.lock() else { return };
        change(&mut t);
        t.switch = false;
        self.switch_from.store(u32::MAX, Ordering::Release);
        // Going on from the playhead (a loop set there, a device rate
        // change), the device still plays what came before it: heard
        // a latency behind, as before.
        if self.position.swap(t.target, Ordering::AcqRel) != t.target {
            self.resumed_at.store(t.target, Ordering::Release);
        }
        self.generation.fetch_add(1, Ordering::AcqRel);
    }

    /// A new tempo or pitch. While playing, the read-ahead at the old
    /// settings goes on playing for [`SWITCH_CHUNKS`] chunks (the time the
    /// reader needs to make the first chunks at the new ones) and the new
    /// audio takes over there, with a fade out and in of
    /// [`super::FADE_SECONDS`] each, so nothing goes silent. Paused, at a
    /// separated edge, near the song's end or a loop's end (where the
    /// read-ahead is not one run of song frames), or with fewer than
    /// [`SWITCH_CHUNKS`] chunks read ahead, it re-reads from the playhead
    /// as a seek does. A change while the previous one's switch is still
    /// ahead takes over at that switch (the previous settings' few chunks
    /// are never heard), or, with less than a chunk's time left before it,
    /// re-reads.
    fn switch_time_pitch(&self, time_pitch: TimePitch) {
        let Ok(mut t) = self.transport.lock() else { return };
        t.time_pitch = time_pitch;
        let at = self.position.load(Ordering::Acquire);
        let heard = f64::from_bits(self.heard_ratio.load(Ordering::Acquire));
        // Saturating: a file without a declared length lets a seek go far.
        let switch_at = at.saturating_add((SWITCH_CHUNKS as f64 * super::CHUNK_FRAMES as f64 * heard).ceil() as u64);
        let before_end =
            switch_at < self.length.load(Ordering::Acquire) && switch_at < self.edge.load(Ordering::Acquire);
        let in_one_run = t.looping.is_none_or(|l| at < u64::from(l.end) && switch_at < u64::from(l.end));
        // The old read-ahead must reach the switch: with fewer chunks queued
        // (just after a seek or play, or a reader behind) it would run out
        // before, skipping song and cutting without the fade.
        let queued = usize::try_from(self.read_ahead.load(Ordering::Acquire)).unwrap_or(usize::MAX);
        // … and be audio of the place now playing: not what a seek (or a
        // change that re-read) since the last callback left behind.
        let playing_gen = self.heard_generation.load(Ordering::Acquire);
        let switch_from = self.switch_from.load(Ordering::Acquire);
        let here = playing_gen == self.generation.load(Ordering::Acquire)
            || (switch_from != u32::MAX && playing_gen == switch_from);
        let soft = self.playing.load(Ordering::Acquire)
            && here
            && queued >= SWITCH_CHUNKS
            && !self.waiting.load(Ordering::Acquire)
            && !self.ended.load(Ordering::Acquire)
            && before_end
            && in_one_run;
        // A switch still ahead (a second change within its time): the old
        // read-ahead plays on to it and the newest settings take over there,
        // when the reader has a chunk's time to make their first chunk;
        // the previous change's chunks are dropped unheard.
        let pending_at = self.switch_at.load(Ordering::Acquire);
        let pending = switch_from != u32::MAX && at < pending_at;
        if pending && soft && (pending_at - at) as f64 >= super::CHUNK_FRAMES as f64 * heard {
            t.target = pending_at;
            t.switch = true;
            self.generation.fetch_add(1, Ordering::AcqRel);
            return;
        }
        if soft && !pending {
            let generation = self.generation.load(Ordering::Acquire);
            t.target = switch_at;
            t.switch = true;
            self.switch_at.store(switch_at, Ordering::Release);
            self.switch_from.store(generation, Ordering::Release);
            self.generation.store(generation.wrapping_add(1), Ordering::Release);
        } else {
            t.target = at;
            t.switch = false;
            self.switch_from.store(u32::MAX, Ordering::Release);
            self.position.store(at, Ordering::Release);
            self.generation.fetch_add(1, Ordering::AcqRel);
        }
    }

    pub(super) fn set_controls(&self, controls: &MixControls) {
        // Stems the controls do not name play at unity, as when the player
        // started (`start_engine`), not silenced (and within solo and the
        // master like the others); stems past the song's are not read.
        let gains = if controls.stems.len() == self.stems {
            controls.effective_gains()
        } else {
            let mut padded = controls.clone();
            padded.stems.resize(self.stems, Default::default());
            padded.effective_gains()
        };
        let _writer = self.controls_writer.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        self.controls_version.fetch_add(1, Ordering::AcqRel); // odd: writing
        for (i, slot) in self.gains.iter().enumerate() {
            slot.store(gains.get(i).copied().unwrap_or(0.0).to_bits(), Ordering::Release);
        }
        self.controls_version.fetch_add(1, Ordering::AcqRel); // even: done
        drop(_writer);
        self.metronome.store(controls.metronome, Ordering::Release);
        self.count_in.store(controls.count_in, Ordering::Release);
        let time_pitch = controls.time_pitch();
        self.tempo.store(time_pitch.tempo.to_bits(), Ordering::Release);
        // The read-ahead was stretched at the old tempo and pitch: the new
        // ones take over a little ahead of the playhead.
        let changed = self.transport.lock().map(|t| t.time_pitch != time_pitch).unwrap_or(false);
        if changed {
            self.switch_time_pitch(time_pitch);
        }
    }

    /// The gains of a completed `set_controls` with its version, or `None`
    /// while one is being written (the callback tries again next time).
    pub(super) fn read_gains(&self, out: &mut [f32; 2 * MAX_STEMS]) -> Option<u64> {
        let before = self.controls_version.load(Ordering::Acquire);
        if before % 2 == 1 {
            return None;
        }
        for (o, slot) in out.iter_mut().zip(&self.gains) {
            *o = f32::from_bits(slot.load(Ordering::Acquire));
        }
        (self.controls_version.load(Ordering::Acquire) == before).then_some(before)
    }

    /// Store the song's beat grid in song frames (`None`: no grid).
    pub(super) fn set_beat_grid(&self, grid: Option<super::BeatGrid>) {
        let (period, offset) = grid.and_then(|g| g.frames(self.song_rate)).unwrap_or((0.0, 0.0));
        self.beat_offset.store(offset.to_bits(), Ordering::Release);
        self.beat_period.store(period.to_bits(), Ordering::Release);
    }

    /// The beat grid's period and first beat in song frames, if any.
    pub(super) fn beat_grid(&self) -> Option<(f64, f64)> {
        let period = f64::from_bits(self.beat_period.load(Ordering::Acquire));
        (period > 0.0).then(|| (period, f64::from_bits(self.beat_offset.load(Ordering::Acquire))))
    }

    /// The tempo of the current controls (1.0 = as recorded).
    pub(super) fn tempo(&self) -> f32 {
        f32::from_bits(self.tempo.load(Ordering::Acquire))
    }

    /// Clear the error if it is still `message` (a later failure stays).
    pub(super) fn clear_error(&self, message: &str) {
        if let Ok(mut e) = self.error.lock() {
            if e.as_deref() == Some(message) {
                *e = None;
            }
        }
    }

    /// The output thread is in a backend call until the guard drops.
    pub(super) fn in_backend_call(&self) -> BackendCall<'_> {
        *self.in_backend_since.lock().unwrap_or_else(std::sync::PoisonError::into_inner) =
            Some(std::time::Instant::now());
        BackendCall(self)
    }

    /// Stop playback with `message` when the output thread has been stuck
    /// in a backend call for longer than `limit` (it cannot say so itself).
    pub(super) fn notice_hung_output(&self, limit: std::time::Duration, message: impl FnOnce() -> String) {
        let hung = self
            .in_backend_since
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .is_some_and(|since| since.elapsed() > limit);
        // Once: the status is asked 30 times a second, and each `fail` logs.
        let said = self.error.lock().map_or(true, |e| e.is_some());
        if hung && !said {
            self.fail(message());
        }
    }

    pub(super) fn fail(&self, message: String) {
        tracing::warn!("playback stopped: {message}");
        if let Ok(mut e) = self.error.lock() {
            e.get_or_insert(message);
        }
        self.playing.store(false, Ordering::Release);
    }
}

/// A call into the audio backend under way (see [`Shared::in_backend_call`]).
pub(super) struct BackendCall<'a>(&'a Shared);

impl Drop for BackendCall<'_> {
    fn drop(&mut self) {
        *self.0.in_backend_since.lock().unwrap_or_else(std::sync::PoisonError::into_inner) = None;
    }
}

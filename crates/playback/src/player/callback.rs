//! The audio callback: pops chunks, mixes the stems, fades on play/pause,
//! maps stereo onto the device's channels and publishes the playhead. It
//! never allocates, frees, locks or blocks.
//!
//! A seek or a loop change while playing is not a cut: what was playing
//! goes on for [`FADE_SECONDS`](super::FADE_SECONDS) fading out, and the new place fades in, as
//! on play and pause (a cut mid-waveform is a click).

use std::sync::atomic::Ordering;
use std::sync::Arc;

use cpal::{FromSample, SizedSample};

use super::click::{beat_of, Click, COUNT_IN_BEATS};
use super::transport::{Chunk, Shared};
use super::{fade_frames_at, CHUNK_FRAMES, MAX_STEMS, SCRATCH_FRAMES};
use crate::mixer::{MixControls, Mixer};

/// The audio callback's state. Everything is allocated before the stream
/// starts; `fill` only moves samples and atomics.
pub(super) struct Callback {
    pub(super) shared: Arc<Shared>,
    pub(super) full: rtrb::Consumer<Chunk>,
    pub(super) free: rtrb::Producer<Chunk>,
    pub(super) current: Option<Chunk>,
    pub(super) offset: usize,
    pub(super) channels: usize,
    pub(super) mixer: Mixer,
    pub(super) controls_seen: u64,
    pub(super) scratch: Vec<f32>,
    pub(super) fade: f32,
    pub(super) fade_step: f32,
    /// [`FADE_SECONDS`](super::FADE_SECONDS) in device frames.
    fade_frames: usize,
    /// The generation that plays on fading out after a seek (`u32::MAX`:
    /// none yet), and its device frames of fade still to play (0: done,
    /// or no fade needed).
    fading_gen: u32,
    fading_left: usize,
    pub(super) device_rate: u32,
    click: Click,
    /// The beat the last played frame was in (`i64::MIN`: none yet, after
    /// a seek), to click when the next one starts.
    last_beat: i64,
    /// Device frames of the running count-in played, and its length
    /// (equal: none running).
    count_in_at: f64,
    count_in_len: f64,
    /// Device frames between the count-in's clicks (a beat at the speed
    /// played).
    count_in_beat: f64,
    was_playing: bool,
    /// At the separated edge of a running job (a wait chunk came, no audio
    /// since): an empty ring is no underrun.
    waiting: bool,
    /// The generation of the last chunk whose audio played (`u32::MAX`:
    /// none yet). After a seek or a loop change, until the new
    /// generation's first chunk comes, an empty ring is the wait for the
    /// reader to read from the new place, not an underrun; a tempo or pitch
    /// switch's gap is one (the old read-ahead ran out first).
    heard: u32,
    /// The generation whose read-ahead reached its switch to a new tempo
    /// or pitch (`u32::MAX`: none): what it holds after that point is
    /// stale, also its chunks from a loop's start that come after it (their
    /// song frames are before the switch point, but later in time).
    switched: u32,
    /// The playhead as this callback last stored or read it, and the
    /// generation it was read at ([`publish`]).
    published: u64,
    published_gen: u32,
}

impl Callback {
    pub(super) fn new(
        shared: Arc<Shared>,
        full: rtrb::Consumer<Chunk>,
        free: rtrb::Producer<Chunk>,
        channels: usize,
        device_rate: u32,
        controls: &MixControls,
    ) -> Self {
        let fade_frames = fade_frames_at(device_rate);
        Callback {
            shared,
            full,
            free,
            current: None,
            offset: 0,
            channels: channels.max(1),
            mixer: Mixer::new(device_rate, controls),
            controls_seen: 0,
            scratch: vec![0.0; SCRATCH_FRAMES * 2],
            fade: 0.0,
            fade_step: (1.0 / fade_frames as f64) as f32,
            fade_frames,
            fading_gen: u32::MAX,
            fading_left: 0,
            device_rate,
            click: Click::new(device_rate),
            last_beat: i64::MIN,
            count_in_at: 0.0,
            count_in_len: 0.0,
            count_in_beat: 0.0,
            was_playing: false,
            waiting: false,
            heard: u32::MAX,
            switched: u32::MAX,
            published: 0,
            published_gen: u32::MAX,
        }
    }

    /// Output at `rate` Hz from now on (the stream was reopened on a device
    /// at another rate; called while no stream holds the callback): fades,
    /// control ramps, the click, a count-in under way and the latency are
    /// counted in its frames.
    pub(super) fn set_device_rate(&mut self, rate: u32) {
        // A count-in under way goes on at its tempo, on the beat.
        let scale = f64::from(rate) / f64::from(self.device_rate.max(1));
        self.count_in_at *= scale;
        self.count_in_len *= scale;
        self.count_in_beat *= scale;
        self.fade_frames = fade_frames_at(rate);
        self.fade_step = (1.0 / self.fade_frames as f64) as f32;
        self.fading_left = self.fading_left.min(self.fade_frames);
        self.mixer.set_sample_rate(rate);
        self.click = Click::new(rate);
        self.device_rate = rate;
    }

    /// Paused: hand chunks of an older generation (read before a seek or a
    /// loop change) back to the reader unplayed, so it refills from the new
    /// position and play starts on a full read-ahead. Chunks of
    /// `switch_from` stay: they still play up to a tempo change's switch.
    pub(super) fn recycle_stale(&mut self, generation: u32, switch_from: u32) {
        // (A chunk of a generation newer than this buffer's, a seek's
        // first one read while it rendered, is not stale: the reader does
        // not read it again.)
        let shared = Arc::clone(&self.shared);
        let stale = |c: &Chunk| {
            c.generation != generation
                && c.generation != switch_from
                && c.generation != shared.generation.load(Ordering::Acquire)
        };
        loop {
            if self.current.is_none() {
                match self.full.peek() {
                    Ok(c) if stale(c) => self.current = self.full.pop().ok(),
                    _ => return,
                }
            }
            if !self.current.as_ref().is_some_and(stale) {
                return; // a current chunk is next: what follows it is current too
            }
            self.recycle();
            self.last_beat = i64::MIN;
        }
    }

    fn recycle(&mut self) {
        if let Some(c) = self.current.take() {
            // The free ring holds every chunk, so this cannot be full.
            let _ = self.free.push(c);
        }
        self.offset = 0;
    }

    pub(super) fn fill<T: SizedSample + FromSample<f32>>(&mut self, out: &mut [T], info: &cpal::OutputCallbackInfo) {
        let ts = info.timestamp();
        let latency = ts.playback.duration_since(ts.callback);
        self.shared
            .latency_frames
            .store((latency.as_secs_f64() * f64::from(self.device_rate)) as u64, Ordering::Relaxed);
        self.render(out);
    }

    /// Fill one device buffer (interleaved, `channels` per frame).
    pub(super) fn render<T: SizedSample + FromSample<f32>>(&mut self, out: &mut [T]) {
        let sh = Arc::clone(&self.shared);
        sh.callbacks.fetch_add(1, Ordering::Relaxed);
        if sh.controls_version.load(Ordering::Acquire) != self.controls_seen {
            // Never wait in the callback: gains being written are picked up
            // next time.
            let mut gains = [0.0f32; 2 * MAX_STEMS];
            if let Some(version) = sh.read_gains(&mut gains) {
                self.mixer.set_gains(&gains[..2 * sh.stems]);
                self.controls_seen = version;
            }
        }
        // The generation with its switch (after a tempo or pitch change,
        // the old read-ahead plays up to `switch_at`), read as one: the
        // writers store the switch before the generation, so the switch is
        // the generation's when the generation did not change meanwhile (a
        // second change in between is seen whole at the next try, or at
        // the next buffer). A switch from the generation itself is one
        // whose writer has stored the switch and not yet the generation it
        // switches to: read again, and if it stays so, no switch yet (taken
        // as done, it would be cleared and the new generation's audio
        // skipped to its switch point).
        let (mut generation, mut switch_from, mut switch_at) = (0, u32::MAX, 0);
        for _ in 0..3 {
            generation = sh.generation.load(Ordering::Acquire);
            switch_from = sh.switch_from.load(Ordering::Acquire);
            switch_at = sh.switch_at.load(Ordering::Acquire);
            if sh.generation.load(Ordering::Acquire) == generation && switch_from != generation {
                break;
            }
        }
        if switch_from == generation {
            switch_from = u32::MAX;
        }
        // A new generation: the playhead its writer stored (before the
        // generation) is where publishing goes on from.
        if generation != self.published_gen {
            self.published = sh.position.load(Ordering::Acquire);
            self.published_gen = generation;
        }
        // Whether no seek, loop or tempo change came since this buffer began:
        // only then may it publish where playback is (a command's own
        // position, or its cleared end, would be overwritten with this
        // buffer's older one, and "seek, then set a loop" would lose the seek).
        let still = || sh.generation.load(Ordering::Acquire) == generation;
        let playing = sh.playing.load(Ordering::Acquire);
        let ch = self.channels;
        let frames = out.len() / ch;
        let mut done = 0usize;
        // Meters of this buffer: peak and sum of squares per stem and the
        // master (index MAX_STEMS); frames not played count as silence.
        let mut peaks = [0.0f32; MAX_STEMS + 1];
        let mut squares = [0.0f32; MAX_STEMS + 1];
        let grid = sh.beat_grid();
        // The grid the click track follows, when it is on.
        let metronome = grid.filter(|_| sh.metronome.load(Ordering::Acquire));
        // Play pressed with the count-in on: one bar of clicks first, at
        // the song's tempo and the current speed, the song held meanwhile.
        if playing && !self.was_playing {
            self.count_in_at = 0.0;
            self.count_in_len = 0.0;
            let counted = !sh.skip_count_in.swap(false, Ordering::AcqRel);
            if let Some((period, offset)) = grid.filter(|_| counted && sh.count_in.load(Ordering::Acquire)) {
                let ratio = sh.ratio() * f64::from(sh.tempo());
                // In time with the song: its next beat (at or after the
                // playhead, `ahead` song frames on) falls where a fifth
                // click would, so the song starts that much before it.
                let at = sh.position.load(Ordering::Acquire) as f64;
                let next = offset + ((at - offset) / period).ceil() * period;
                // (Within a frame after a beat is on it: a whole bar, not
                // three beats and the song starting on the fourth.)
                let ahead = (next - at).clamp(0.0, period);
                let ahead = if ahead > period - 1.0 { 0.0 } else { ahead };
                self.count_in_beat = period / ratio;
                self.count_in_len = (f64::from(COUNT_IN_BEATS) * period - ahead) / ratio;
                // The song comes back after the clicks fading in from
                // silence, not at the gain a pause's fade-out (pressed
                // within its 10 ms) had reached.
                if self.count_in_len > 0.0 {
                    self.fade = 0.0;
                }
            }
        }
        self.was_playing = playing;
        if !playing {
            self.count_in_len = self.count_in_at;
        }
        sh.counting_in.store(self.count_in_at < self.count_in_len, Ordering::Release);
        while self.count_in_at < self.count_in_len && done < frames {
            let beat_len = self.count_in_beat;
            let beat = (self.count_in_at / beat_len).floor();
            if self.count_in_at == 0.0 || beat > ((self.count_in_at - 1.0) / beat_len).floor() {
                self.click.trigger(beat == 0.0);
            }
            let v = self.click.next();
            meter(&mut peaks[MAX_STEMS], &mut squares[MAX_STEMS], v, v);
            write_frame(&mut out[done * ch..(done + 1) * ch], v, v);
            self.count_in_at += 1.0;
            done += 1;
        }
        while done < frames {
            if !playing && self.fade <= 0.0 {
                self.recycle_stale(generation, switch_from);
                break;
            }
            if self.current.is_none() {
                match self.full.pop() {
                    Ok(c) => {
                        self.current = Some(c);
                        self.offset = 0;
                    }
                    Err(_) => {
                        let reading_anew = self.heard != generation && switch_from == u32::MAX;
                        if playing && !self.waiting {
                            let counter = if reading_anew { &sh.reading_frames } else { &sh.underrun_frames };
                            counter.fetch_add((frames - done) as u64, Ordering::Relaxed);
                        }
                        // Silence from here: what comes next fades in (no
                        // click where a starved reader catches up), and a
                        // pause meanwhile stays silent.
                        self.fade = 0.0;
                        break;
                    }
                }
            }
            let Some(chunk) = self.current.as_ref() else { break };
            // The current generation plays: a switch to it is done, and a
            // later change (after a loop wrapped back before its point, say)
            // must not take it for one still ahead. Only this switch is
            // cleared, never a newer one a writer just stored.
            if chunk.generation == generation && switch_from != u32::MAX {
                // Heard from here on (before the switch is cleared: a tempo
                // change between the two would see neither, and re-read).
                sh.heard_generation.store(generation, Ordering::Release);
                let _ = sh.switch_from.compare_exchange(switch_from, u32::MAX, Ordering::AcqRel, Ordering::Relaxed);
                switch_from = u32::MAX;
            }
            // Device frames of this chunk that may play (all but the old
            // read-ahead's frames at and after the switch).
            let mut playable = chunk.frames;
            let mut fade_to = None;
            // Device frames of the fade out after a seek still to play from
            // this chunk's offset (0: none).
            let mut fading = 0;
            // The old generation this chunk ends at its switch point.
            let mut cut_at_switch = None;
            if chunk.generation != generation {
                let before_switch = if chunk.generation == switch_from
                    && chunk.generation != self.switched
                    && !chunk.wait
                    && !chunk.end
                {
                    ((switch_at as f64 - chunk.start as f64) / chunk.ratio).ceil().max(0.0) as usize
                } else {
                    0
                };
                if chunk.generation == switch_from && before_switch <= chunk.frames && before_switch > self.offset {
                    // The switch point is in this chunk: once it is played
                    // to there, the rest of the old read-ahead is stale.
                    cut_at_switch = Some(chunk.generation);
                }
                if before_switch > self.offset {
                    playable = before_switch.min(chunk.frames);
                    fade_to = Some(switch_at as f64);
                } else {
                    if chunk.generation != self.fading_gen && chunk.generation == self.heard && switch_from == u32::MAX
                    {
                        // The first look at a seek's old audio (the
                        // generation that was playing; a newer one that a
                        // seek during this buffer brought is only dropped):
                        // a fade out if it is being heard. Also when the
                        // new generation starts right here (a loop set at
                        // the playhead): the reader has no chunk of it yet
                        // while the read-ahead is full, so a cut would be a
                        // cut to silence.
                        if self.fading_left > 0 {
                            // An earlier fade out was cut short (a second
                            // seek): what comes next starts from silence.
                            self.fade = 0.0;
                        }
                        self.fading_gen = chunk.generation;
                        self.fading_left = if playing && self.fade > 0.0 { self.fade_frames } else { 0 };
                    }
                    if chunk.generation == sh.generation.load(Ordering::Acquire) {
                        // A seek's first chunk, read while this buffer
                        // rendered: kept for the next buffer, which reads
                        // the new generation (recycled, it would be lost:
                        // the reader does not read it again). It fades in
                        // after the silence this buffer ends with.
                        self.fade = 0.0;
                        break;
                    }
                    if chunk.generation != self.fading_gen
                        || self.fading_left == 0
                        || chunk.wait
                        || chunk.end
                        || self.offset >= chunk.frames
                    {
                        self.recycle();
                        self.last_beat = i64::MIN;
                        continue;
                    }
                    fading = self.fading_left;
                    playable = (self.offset + fading).min(chunk.frames);
                }
            }
            if chunk.generation == generation && self.fading_left > 0 {
                // The old audio ran out before its fade out ended: the new
                // starts from silence.
                self.fading_left = 0;
                self.fade = 0.0;
            }
            if chunk.wait {
                publish(&sh.generation, &sh.position, generation, &mut self.published, chunk.start);
                sh.waiting.store(true, Ordering::Release);
                self.waiting = true;
                self.recycle();
                continue;
            }
            if self.waiting {
                self.waiting = false;
                // Held, the device buffer drained: heard from here on, as
                // after Play.
                sh.resumed_at.store(chunk.start, Ordering::Release);
                sh.waiting.store(false, Ordering::Release);
            }
            if chunk.end {
                let end = sh.length.load(Ordering::Acquire).min(chunk.start);
                if publish(&sh.generation, &sh.position, generation, &mut self.published, end) {
                    sh.ended.store(true, Ordering::Release);
                    let was = sh.playing.swap(false, Ordering::AcqRel);
                    // A seek that came meanwhile (its target stored, its
                    // `ended` cleared before these stores) is where Play
                    // goes on, not the song's start; a Pause since stays.
                    if !still() {
                        sh.ended.store(false, Ordering::Release);
                        let _ = sh.playing.compare_exchange(false, was, Ordering::AcqRel, Ordering::Relaxed);
                    }
                }
                self.fade = 0.0;
                self.recycle();
                break;
            }
            let mut n = (playable - self.offset).min(frames - done).min(SCRATCH_FRAMES);
            if !playing {
                // A pause takes only its fade from the chunk: what follows
                // stays for play (else up to a device buffer would be
                // consumed silent, and skipped).
                let fade_left = (self.fade / self.fade_step).ceil() as usize;
                n = n.min(fade_left.max(1));
            }
            self.heard = chunk.generation;
            let mut sources: [&[f32]; MAX_STEMS] = [&[]; MAX_STEMS];
            for (s, src) in sources.iter_mut().enumerate().take(sh.stems) {
                let base = s * CHUNK_FRAMES * 2 + self.offset * 2;
                *src = &chunk.data[base..base + n * 2];
            }
            let (start, ratio) = (chunk.start, chunk.ratio);
            let mixed = &mut self.scratch[..n * 2];
            self.mixer.mix(&sources[..sh.stems], mixed);
            let target = if playing { 1.0 } else { 0.0 };
            let fade_before = self.fade;
            for (i, frame) in out[done * ch..(done + n) * ch].chunks_exact_mut(ch).enumerate() {
                if self.fade != target {
                    self.fade = if target > self.fade {
                        (self.fade + self.fade_step).min(1.0)
                    } else {
                        (self.fade - self.fade_step).max(0.0)
                    };
                }
                if let Some((period, offset)) = metronome {
                    // A click where a beat starts, in song time.
                    let song_frame = start as f64 + (self.offset + i) as f64 * ratio;
                    let beat = beat_of(song_frame, period, offset);
                    if beat != self.last_beat {
                        // Only where the beat starts within this frame's
                        // step: a loop's wrap to a start inside a beat
                        // changes the beat without one starting
                        let into = song_frame - (offset + beat as f64 * period);
                        // (+1: a chunk starts at a rounded song frame, so
                        // the step into it can be a frame longer.)
                        // (The first frame after a seek or a start too:
                        // a song played from a beat clicks on it.)
                        if beat >= 0 && into < ratio + 1.0 {
                            self.click.trigger(false);
                        }
                        self.last_beat = beat;
                    }
                }
                let c = self.click.next();
                let mut g = self.fade;
                if fading > 0 {
                    // The seek's fade out: to silence over `fade_frames`.
                    g *= (fading - i) as f32 / (self.fade_frames + 1) as f32;
                }
                if let Some(end) = fade_to {
                    // The old read-ahead fades out before the switch.
                    let song_frame = start as f64 + (self.offset + i) as f64 * ratio;
                    g *= ((end - song_frame) * f64::from(self.fade_step) / ratio).clamp(0.0, 1.0) as f32;
                }
                let (l, r) = ((mixed[2 * i] + c) * g, (mixed[2 * i + 1] + c) * g);
                meter(&mut peaks[MAX_STEMS], &mut squares[MAX_STEMS], l, r);
                write_frame(frame, l, r);
            }
            // Each stem as heard: its samples at its gain (the end of any
            // ramp) and the fade, which is within a few percent of the
            // sample-exact value over one buffer.
            let fade = 0.5 * (fade_before + self.fade);
            for (s, src) in sources.iter().enumerate().take(sh.stems) {
                let gains = self.mixer.current_gains();
                let gl = gains.get(2 * s).copied().unwrap_or(0.0) * fade;
                let gr = gains.get(2 * s + 1).copied().unwrap_or(0.0) * fade;
                if gl == 0.0 && gr == 0.0 {
                    continue;
                }
                for lr in src.chunks_exact(2) {
                    meter(&mut peaks[s], &mut squares[s], lr[0] * gl, lr[1] * gr);
                }
            }
            self.offset += n;
            done += n;
            if fading > 0 {
                // The playhead stays the seek's target meanwhile. Faded
                // out (this chunk ends here): what the seek brings fades in.
                self.fading_left -= n;
                if self.fading_left == 0 {
                    self.fade = 0.0;
                    self.last_beat = i64::MIN;
                }
            } else {
                let position = start + ((self.offset as f64) * ratio).round() as u64;
                publish(&sh.generation, &sh.position, generation, &mut self.published, position);
            }
            sh.heard_ratio.store(ratio.to_bits(), Ordering::Relaxed);
            sh.frames_played.fetch_add(n as u64, Ordering::Relaxed);
            if self.offset >= playable {
                if let Some(g) = cut_at_switch {
                    self.switched = g;
                }
                self.recycle();
            }
        }
        for frame in out[done * ch..].chunks_exact_mut(ch) {
            write_frame(frame, 0.0, 0.0);
        }
        sh.read_ahead.store(self.full.slots() as u64, Ordering::Relaxed);
        sh.heard_generation.store(self.heard, Ordering::Release);
        let total = frames.max(1) as f32;
        for i in 0..=MAX_STEMS {
            if i < sh.stems || i == MAX_STEMS {
                sh.peaks[i].fetch_max(peaks[i].to_bits(), Ordering::AcqRel);
                sh.mean_squares[i].store((squares[i] / (2.0 * total)).to_bits(), Ordering::Release);
            }
        }
    }
}

/// Add a stereo frame to a meter: peak of |l|, |r|, and their squares
/// (non-finite samples count as silence).
#[inline]
fn meter(peak: &mut f32, squares: &mut f32, l: f32, r: f32) {
    if l.is_finite() && r.is_finite() {
        *peak = peak.max(l.abs()).max(r.abs());
        *squares += l * l + r * r;
    }
}

/// Largest sample written: the largest 24-bit value, 1 − 2⁻²³. dasp's
/// f32 → 24-bit conversion (`(s * 8_388_608.0) as i32`, unchecked) does not
/// saturate, and ALSA's packed 24-bit formats keep only the low 24 bits, so
/// 1.0 and above would wrap to full-scale negative noise; 16- and 32-bit
/// conversions saturate by themselves.
const FULL_SCALE: f32 = 1.0 - 1.0 / 8_388_608.0;

/// A sample as a device may take it: clipped to ±full scale (the mix can go
/// over: stem and master gains up to +12 dB each, +24 dB together, the
/// click on top), and
/// silence for a non-finite one (NaN from anywhere upstream).
#[inline]
fn device_sample(x: f32) -> f32 {
    if x.is_finite() {
        x.clamp(-FULL_SCALE, FULL_SCALE)
    } else {
        0.0
    }
}

/// Put a stereo frame on a device frame (each sample clipped by
/// [`device_sample`]): mono devices get the average, extra channels silence.
fn write_frame<T: SizedSample + FromSample<f32>>(frame: &mut [T], l: f32, r: f32) {
    let (l, r) = (device_sample(l), device_sample(r));
    match frame.len() {
        1 => frame[0] = T::from_sample(0.5 * (l + r)),
        _ => {
            frame[0] = T::from_sample(l);
            frame[1] = T::from_sample(r);
            for x in &mut frame[2..] {
                *x = T::from_sample(0.0f32);
            }
        }
    }
}

/// Store `frame` as the playhead (`position`) when no seek, loop or tempo
/// change came since this buffer's `generation` was read, and none comes
/// while it is stored: a writer stores its target, then moves the
/// generation on, and a check of the generation then a plain store could
/// fall between the two and overwrite the target with this buffer's older
/// place (a seek lost, a Play from the song's start). So the store is a
/// compare-exchange from what this callback last stored or read
/// (`published`), and one the generation moved past is undone; once
/// another writer's target is seen, nothing more of this generation is
/// stored (`published` reads again at the next generation). Returns
/// whether `frame` was stored and stays. Atomics only: the callback's.
fn publish(
    generation_now: &std::sync::atomic::AtomicU32,
    position: &std::sync::atomic::AtomicU64,
    generation: u32,
    published: &mut u64,
    frame: u64,
) -> bool {
    if generation_now.load(Ordering::Acquire) != generation {
        return false;
    }
    match position.compare_exchange(*published, frame, Ordering::AcqRel, Ordering::Acquire) {
        Ok(was) => {
            if generation_now.load(Ordering::Acquire) != generation {
                // Moved on meanwhile: its writer's target (stored before
                // the move) stands, or what was there before this store.
                let _ = position.compare_exchange(frame, was, Ordering::AcqRel, Ordering::Relaxed);
                return false;
            }
            *published = frame;
            true
        }
        // Another writer's target, stored before it moves the generation
        // on: left alone, and so is every later store of this generation
        // (`published` unchanged; the new generation reads the target).
        Err(_) => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The callback's playhead never overwrites a seek's target, also one
    /// whose writer stored the target and has not moved the generation yet.
    #[test]
    fn a_seek_target_is_never_overwritten_by_an_older_place() {
        use std::sync::atomic::{AtomicU32, AtomicU64};
        let (generation, position) = (AtomicU32::new(5), AtomicU64::new(1_000));
        let mut published = 1_000;
        assert!(publish(&generation, &position, 5, &mut published, 1_512));
        assert_eq!((position.load(Ordering::SeqCst), published), (1_512, 1_512));
        // A seek: its target stored, its generation not moved yet, for
        // as many of this generation's stores as come meanwhile.
        position.store(90_000, Ordering::SeqCst);
        assert!(!publish(&generation, &position, 5, &mut published, 2_024));
        assert!(!publish(&generation, &position, 5, &mut published, 2_536));
        assert_eq!(position.load(Ordering::SeqCst), 90_000, "the seek's target stays");
        // Moved: this buffer's generation publishes nothing more.
        generation.store(6, Ordering::SeqCst);
        assert!(!publish(&generation, &position, 5, &mut published, 2_536));
        assert_eq!(position.load(Ordering::SeqCst), 90_000);
        // The new generation's buffers go on from the target.
        let mut published = position.load(Ordering::SeqCst);
        assert!(publish(&generation, &position, 6, &mut published, 90_512));
        assert_eq!(position.load(Ordering::SeqCst), 90_512);
    }

    /// Over full scale clips on every device format, 24-bit included (whose
    /// conversion wraps), and NaN is silence.
    #[test]
    fn samples_over_full_scale_clip_and_nan_is_silence() {
        let mut f = [cpal::I24::new_unchecked(1); 3];
        write_frame(&mut f, 1.5, f32::NAN);
        assert_eq!([f[0].inner(), f[1].inner(), f[2].inner()], [8_388_607, 0, 0]);
        write_frame(&mut f, -4.0, 1.0);
        assert_eq!([f[0].inner(), f[1].inner()], [-8_388_607, 8_388_607]);
        let mut mono = [0i16];
        write_frame(&mut mono, 3.0, 3.0);
        assert_eq!(mono[0], i16::MAX);
        let mut f32s = [0.0f32; 2];
        write_frame(&mut f32s, f32::INFINITY, -0.25);
        assert_eq!(f32s, [0.0, -0.25]);
        let mut u24 = [cpal::U24::new_unchecked(0); 2];
        write_frame(&mut u24, 2.0, -2.0);
        assert!(u24[0].inner() > u24[1].inner(), "{} {}", u24[0].inner(), u24[1].inner());
    }
}

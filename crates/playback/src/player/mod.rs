//! The stem player: a song's stems (a finished song's files, or a running
//! job's stream, see [`Player::open_growing`]) played sample-synchronously
//! through the system's audio output (cpal), mixed in the audio callback by
//! [`Mixer`], so a gain, mute or solo change is heard after one ramp
//! ([`crate::mixer::RAMP_SECONDS`]) plus the device buffer.
//!
//! Threads and buffers:
//! - A **reader** thread decodes every stem in step with [`StreamDecoder`]
//!   (resampling with [`StreamResampler`] when the device cannot run at the
//!   stems' rate) into fixed-size `Chunk`s and sends them to the callback
//!   through a lock-free single-producer/single-consumer ring (`rtrb`); used
//!   chunks come back through a second ring, so the callback never allocates,
//!   frees or blocks. Read-ahead is bounded by [`chunks_for`] the device's
//!   rate × [`CHUNK_FRAMES`] frames (at least 1.36 s at any rate: 1.37 s at
//!   48 and 96 kHz, 1.49 s at 44.1 kHz, 3 s at 22.05 kHz), whatever the
//!   song's length; in a loop shorter than about 0.1 s less, as a chunk
//!   ends at each wrap (at least 0.8 s at the shortest loop, 50 ms).
//! - The **audio callback** pops chunks, mixes the stems, applies a short
//!   transport fade on play/pause, maps stereo onto the device's channels and
//!   publishes the song position of the frames it hands to the device (each
//!   chunk carries the position of its first frame, so the playhead is derived
//!   from the audio itself and cannot drift from it).
//! - An **output** thread holds the cpal stream (not `Send` on every
//!   platform) until the player is dropped, and reopens it on the default
//!   device at the same position when it stalls or is lost
//!   (module `output`).
//!
//! Seeking (and changing the loop) bumps a generation counter: the reader
//! repositions its decoders and tags new chunks with the new generation; the
//! callback recycles chunks of older generations unplayed. A new tempo or
//! pitch while playing also starts a generation, but a little ahead of the
//! playhead: the callback plays the old read-ahead up to there, so the
//! change has no gap.
//!
//! Positions are in frames at the stems' sample rate; audio inside chunks is
//! interleaved stereo `f32` at the device's rate, planar per stem.

mod callback;
mod click;
mod device;
mod output;
mod read_loop;
#[cfg(test)]
mod stream_tests;
mod transport;

use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, Ordering};
use std::sync::{mpsc, Arc, Mutex};
use std::thread::JoinHandle;
use std::time::Duration;

use cpal::traits::{DeviceTrait, HostTrait};
use serde::Serialize;
use stemroom_engine::audio::decode::DecodeError;
use stemroom_engine::ErrorCode;

use crate::mixer::{LoopRegion, MixControls};
use crate::reader::StemSet;
use callback::Callback;
pub use click::{BeatGrid, COUNT_IN_BEATS, MAX_GRID_BPM, MIN_GRID_BPM};
use device::choose_config;
use transport::{Chunk, Shared, Transport};

/// Frames (at the device's rate) per chunk: 2048 frames is 46 ms at 44.1 kHz,
/// a few device periods, small enough that a seek refills quickly.
pub const CHUNK_FRAMES: usize = 2048;
/// Chunks in flight between the reader and the callback (the read-ahead)
/// on a device at up to 48 kHz: 1.37 s at 48 kHz, 1.49 s at 44.1 kHz, more
/// at lower rates. Faster devices get more (see [`chunks_for`]).
pub const CHUNKS: usize = 32;

/// Chunks of read-ahead for a device at `device_rate` Hz: [`CHUNKS`] per
/// started 48 kHz, so the read-ahead stays at least 1.36 s of audio (a 192
/// kHz device with 32 chunks would have 0.34 s, too little to ride out a
/// busy moment on a loaded machine).
pub fn chunks_for(device_rate: u32) -> usize {
    CHUNKS * (device_rate as usize).div_ceil(48_000).max(1)
}
/// Most stems a song may have (htdemucs has 4, htdemucs_6s 6).
pub const MAX_STEMS: usize = 8;
/// Length of the fade on play and pause, as the mixer's gain ramps.
const FADE_SECONDS: f64 = crate::mixer::RAMP_SECONDS;

/// [`FADE_SECONDS`] in frames at `rate` Hz (at least one).
fn fade_frames_at(rate: u32) -> usize {
    ((f64::from(rate) * FADE_SECONDS).round() as usize).max(1)
}
/// Longest callback buffer mixed in one piece (larger device buffers are
/// mixed in several pieces).
const SCRATCH_FRAMES: usize = 4096;
/// How often the reader looks for free chunks or a new generation.
const READER_POLL: Duration = Duration::from_millis(2);
/// [`Player::reopen`] switches once the new output stream still calls back
/// this long after its first callback: past the burst that fills a new
/// stream's buffer, so the sound server is taking its audio.
const TAKE_OVER_SETTLE: Duration = Duration::from_millis(200);
/// Longest [`Player::reopen`] waits for that; the output thread's limit for
/// a fresh stream that stalls (PulseAudio holds a new stream up to 1.5-2 s
/// on a loaded machine, measured here).
const TAKE_OVER_LIMIT: Duration = output::FRESH_STALL_LIMIT;
/// Longest wait for the output thread (and then the reader thread) when a
/// player is dropped: the output closes
/// its stream within milliseconds, unless the audio backend hangs on a
/// sound server that died (then the thread is left to it).
const OUTPUT_JOIN_LIMIT: Duration = Duration::from_secs(3);
/// Longest wait for the output thread to open the device: a backend that
/// hangs there (a sound server that stopped answering) fails the open
/// instead of blocking the caller for ever (a working one opens well
/// within it).
const OPEN_LIMIT: Duration = Duration::from_secs(10);

/// Why the player cannot start or stopped.
#[derive(Debug, thiserror::Error)]
pub enum PlayerError {
    #[error("no stems to play")]
    NoStems,
    #[error("too many stems ({0}); at most {MAX_STEMS} can play together")]
    TooManyStems(usize),
    #[error("the stems have different sample rates ({0} Hz and {1} Hz)")]
    MixedRates(u32, u32),
    #[error("no audio output device was found; connect one or check the system's sound settings")]
    NoDevice,
    #[error("the audio output device cannot be used: {0}")]
    Device(String),
    /// [`Player::complete_stream`] on files that are not the stream's
    /// stems (another number of them).
    #[error("the finished song has {finished} stems, the stream it replaces {stream}")]
    StemCount { finished: usize, stream: usize },
    #[error(transparent)]
    Decode(#[from] DecodeError),
}

impl PlayerError {
    /// The error's stable code for front ends.
    pub fn code(&self) -> ErrorCode {
        match self {
            PlayerError::NoDevice | PlayerError::Device(_) => ErrorCode::AudioDevice,
            PlayerError::Decode(_) => ErrorCode::BadInput,
            PlayerError::NoStems
            | PlayerError::TooManyStems(_)
            | PlayerError::MixedRates(..)
            | PlayerError::StemCount { .. } => ErrorCode::InvalidOptions,
        }
    }
}

/// What the player is doing, for front ends (polled ~30 times a second).
#[derive(Debug, Clone, PartialEq, Serialize)]
#[cfg_attr(feature = "specta", derive(specta::Type))]
#[serde(rename_all = "camelCase")]
pub struct PlayerStatus {
    pub playing: bool,
    /// The frame being heard now (device latency subtracted), at the stems'
    /// sample rate. (A JavaScript number holds frame counts exactly up to 2^53.)
    #[cfg_attr(feature = "specta", specta(type = f64))]
    pub position: u64,
    /// Song length in frames at the stems' sample rate (0 while unknown).
    #[cfg_attr(feature = "specta", specta(type = f64))]
    pub length: u64,
    /// The stems' sample rate in Hz.
    pub sample_rate: u32,
    /// Set once the end of the song was played (no loop).
    pub ended: bool,
    /// The device or a stem failed; playback stopped.
    pub error: Option<String>,
    /// Each stem's level as heard (after its gain, the master and
    /// mute/solo), in stem order.
    pub levels: Vec<MeterLevel>,
    /// The master's level (what goes to the device).
    pub master: MeterLevel,
    /// A count-in is playing (the song starts after it).
    pub counting_in: bool,
    /// For a song still separating: the frames separated so far (the
    /// playhead cannot pass them); `None` once every frame is there.
    #[cfg_attr(feature = "specta", specta(type = Option<f64>))]
    pub separated: Option<u64>,
    /// Playback is held at the separated edge until more is separated.
    pub waiting: bool,
}

/// A level meter reading, linear (1.0 = full scale, 0 dBFS).
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize)]
#[cfg_attr(feature = "specta", derive(specta::Type))]
pub struct MeterLevel {
    /// Highest absolute sample since the previous status (a peak meter's
    /// input; above 1.0 the output clips).
    pub peak: f32,
    /// Root mean square of the last device buffer (a few ms to tens of ms).
    pub rms: f32,
}

/// Facts about the opened output, for front ends and tests.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[cfg_attr(feature = "specta", derive(specta::Type))]
#[serde(rename_all = "camelCase")]
pub struct OutputInfo {
    pub device: String,
    /// Device rate in Hz.
    pub sample_rate: u32,
    pub channels: u16,
    /// True when the stems are resampled to the device's rate.
    pub resampling: bool,
}

/// Counters the callback keeps, for tests and diagnostics.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct CallbackStats {
    /// Callbacks run.
    pub callbacks: u64,
    /// Device frames of the buffers rendered while playing (the fades of
    /// a pause or seek included).
    pub frames_played: u64,
    /// Device frames filled with silence for lack of decoded audio while
    /// playing (read-ahead ran dry). The wait for the first audio after a
    /// seek, a loop change or the player's start is not counted: no audio
    /// was cut there (see `reading_frames`).
    pub underrun_frames: u64,
    /// Device frames of silence while playing after a seek, a loop change
    /// or the start, before the audio of the new place came: how long play
    /// waited for the reader (a player taking over from another should
    /// keep this near zero).
    pub reading_frames: u64,
    /// Chunks of [`CHUNK_FRAMES`] device frames decoded ahead of the
    /// playhead after the last callback, of at most [`chunks_for`] the
    /// device's rate ([`CHUNKS`] up to 48 kHz): whether
    /// the reader keeps up (a paused player's fills up).
    pub read_ahead_chunks: u64,
    /// Non-fatal errors the device reported (it kept playing).
    pub device_glitches: u64,
    /// Times the output stream was reopened after it stalled or was lost.
    pub reopens: u64,
}

/// Plays one song's stems. Dropping it stops playback and its threads.
pub struct Player {
    shared: Arc<Shared>,
    output: OutputInfo,
    reader: Option<JoinHandle<()>>,
    owner: Option<JoinHandle<()>>,
    stop_owner: Option<mpsc::Sender<()>>,
    /// The original mixture a running job's player reads as its last
    /// stem; the finished files take it along.
    original: Option<PathBuf>,
}

impl std::fmt::Debug for Player {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Player").field("output", &self.output).finish()
    }
}

impl Player {
    /// Open `stems` (files of equal sample rate, in the order of the
    /// controls) on the default output device, paused at frame 0 with
    /// `controls`.
    ///
    /// # Errors
    /// [`PlayerError`]: no stems, stems that cannot be decoded or have
    /// different rates, no output device, or a device that cannot be opened.
    pub fn open(stems: &[PathBuf], controls: &MixControls) -> Result<Self, PlayerError> {
        Self::open_set(open_readers(stems, None)?, controls)
    }

    /// As [`Player::open`], with the original mixture at `original` as one
    /// more, last stem for A/B ([`MixControls::with_original`]). The
    /// original is the user's own file, perhaps on a drive that goes away:
    /// when it fails to read mid-song it plays as silence and the stems go
    /// on ([`StemSet::with_original`]).
    ///
    /// # Errors
    /// As [`Player::open`]; [`PlayerError::Decode`] when the original cannot
    /// be opened, [`PlayerError::MixedRates`] when it is at another rate.
    pub fn open_with_original(
        stems: &[PathBuf],
        original: Option<&std::path::Path>,
        controls: &MixControls,
    ) -> Result<Self, PlayerError> {
        Self::open_set(open_readers(stems, original)?, controls)
    }

    /// Open the stems of a job that is still separating, from its
    /// checkpoint folder (see [`StemSet::open_growing`]): the separated
    /// part plays like a finished song; the playhead cannot pass the
    /// separated edge ([`PlayerStatus::separated`]) and waits there
    /// ([`PlayerStatus::waiting`]) with a fade out, going on with a fade in
    /// as more is separated. Hand it the finished files with
    /// [`Player::complete_stream`] when the job ends.
    ///
    /// With `original` (the job's input file, at the stream's sample rate)
    /// the mixture is one more, last stem, read up to the same edge: A/B
    /// works as on a finished song ([`MixControls::with_original`]).
    ///
    /// # Errors
    /// As [`Player::open`]; [`PlayerError::Decode`] when the folder holds no
    /// readable stream yet (or any more), or the original cannot be opened;
    /// [`PlayerError::MixedRates`] when the original is at another rate.
    pub fn open_growing(
        checkpoint: &std::path::Path,
        original: Option<&std::path::Path>,
        controls: &MixControls,
    ) -> Result<Self, PlayerError> {
        let mut set = StemSet::open_growing(checkpoint)?;
        if let Some(path) = original {
            set = set.with_original(path)?;
            if let Some((a, b)) = set.mixed_rates() {
                return Err(PlayerError::MixedRates(a, b));
            }
        }
        if set.len() > MAX_STEMS {
            return Err(PlayerError::TooManyStems(set.len()));
        }
        let mut player = Self::open_set(set, controls)?;
        player.original = original.map(std::path::Path::to_path_buf);
        Ok(player)
    }

    /// The finished files of the job this player was opened on with
    /// [`Player::open_growing`] (in the same stem order): they take over
    /// from the stream where the reader is, without a gap (their samples
    /// are the stream's). A player on finished files ignores this. A
    /// player opened with the original mixture reads it on from the same
    /// frame.
    ///
    /// # Errors
    /// The files cannot be opened, or they do not match the stream (another
    /// number of stems, or another sample rate: the job wrote them at the
    /// input's rate); the player then goes on playing the stream, which
    /// stays readable while it is open.
    pub fn complete_stream(&self, stems: &[PathBuf]) -> Result<(), PlayerError> {
        let files = open_readers(stems, self.original.as_deref())?;
        if files.len() != self.shared.stems {
            return Err(PlayerError::StemCount { finished: files.len(), stream: self.shared.stems });
        }
        if files.sample_rate() != self.shared.song_rate {
            return Err(PlayerError::MixedRates(self.shared.song_rate, files.sample_rate()));
        }
        *self.shared.replacement.lock().unwrap_or_else(std::sync::PoisonError::into_inner) = Some(files);
        Ok(())
    }

    /// A new player on `files` that goes on where this one is, for
    /// finished files this player cannot take over in place (another
    /// sample rate: a 48 kHz song's stream is written at the model's
    /// 44.1 kHz, its finished stems at 48 kHz; [`Player::complete_stream`]
    /// then fails with [`PlayerError::MixedRates`]).
    ///
    /// The new player opens paused at the same time in the song (frames
    /// scaled by the rates' ratio), with `controls` (fitted to `files` as
    /// for [`Player::open`]), this player's loop and beat grid at the new
    /// rate; when this one was playing it is paused (10 ms fade) and the
    /// new one started. It is a second output stream, so the change is not
    /// gapless: up to the device's latency (tens of ms) is missed. Drop
    /// this player afterwards.
    ///
    /// The switch waits until the new stream runs
    /// (it still calls back [`TAKE_OVER_SETTLE`] after its first callback;
    /// at most [`TAKE_OVER_LIMIT`], then it switches anyway and the output
    /// thread watches the new stream as any other): a sound server may
    /// take a new stream's first buffer and then hold it (PulseAudio on
    /// a loaded 2-core VM: 3 callbacks, then none for 1.5 s), which
    /// would otherwise be heard as that much silence. So this call may
    /// block up to [`TAKE_OVER_LIMIT`], typically [`TAKE_OVER_SETTLE`].
    /// The new one goes on from the heard position ([`Player::status`]).
    ///
    /// # Errors
    /// As [`Player::open`]; this player then plays on.
    pub fn reopen(
        &self,
        files: &[PathBuf],
        original: Option<&std::path::Path>,
        controls: &MixControls,
    ) -> Result<Player, PlayerError> {
        let next = self.prepare_reopen(files, original, controls)?;
        self.hand_over(&next);
        Ok(next)
    }

    /// The first half of [`Player::reopen`]: the new player on `files` (and
    /// `original`, as for [`Player::open_with_original`]), opened paused and waited for until its stream runs (up to
    /// [`TAKE_OVER_LIMIT`]). Nothing of this player's state is
    /// taken yet: commands given to this one meanwhile (pause, seek, loop)
    /// are carried over by [`Player::hand_over`], which a front end calls
    /// with its commands held (under the lock they take), so none is lost.
    ///
    /// # Errors
    /// As [`Player::open`]; this player then plays on.
    pub fn prepare_reopen(
        &self,
        files: &[PathBuf],
        original: Option<&std::path::Path>,
        controls: &MixControls,
    ) -> Result<Player, PlayerError> {
        let next = Player::open_with_original(files, original, controls)?;
        // Even when paused now: play may be pressed before the hand-over,
        // which then waits for nothing but the read-ahead.
        next.wait_until_running();
        Ok(next)
    }

    /// The second half of [`Player::reopen`]: `next` (from
    /// [`Player::prepare_reopen`]) takes this player's loop, beat grid and
    /// heard position (frames scaled by the rates' ratio) as they are now;
    /// this one is paused (10 ms fade) and, when it was playing, `next`
    /// starts once it has read ahead (at most [`TAKE_OVER_SETTLE`]).
    pub fn hand_over(&self, next: &Player) {
        let (from, to) = (f64::from(self.shared.song_rate.max(1)), f64::from(next.shared.song_rate));
        let scale = |frame: u64| (frame as f64 * to / from).round() as u64;
        let looping = self.shared.transport.lock().ok().and_then(|t| t.looping);
        if let Some(l) = looping {
            let at = |f: u32| u32::try_from(scale(u64::from(f))).unwrap_or(u32::MAX);
            next.set_loop(Some(LoopRegion { start: at(l.start), end: at(l.end) }));
        }
        if let Some((period, offset)) = self.shared.beat_grid() {
            next.set_beat_grid(Some(BeatGrid {
                bpm: (60.0 * from / period) as f32,
                offset_seconds: (offset / from) as f32,
            }));
        }
        let sh = &self.shared;
        let playing = sh.playing.load(Ordering::Acquire) && !sh.ended.load(Ordering::Acquire);
        // The new one starts where the listener is: the heard position
        // (`status()`, one reported device latency before the frames
        // handed over). What the device still holds of this one is lost
        // when it is dropped, and a held stream may report seconds of
        // latency (the app's e2e once saw its playhead jump 2 s ahead
        // across the change when the new one started at the handed frame).
        let end = self.status().position;
        let ended = sh.ended.load(Ordering::Acquire);
        self.pause();
        next.seek(scale(end));
        if ended {
            // At the end as this one was: Play starts the song again, as
            // it would have here (not a Play that plays nothing and ends).
            next.shared.ended.store(true, Ordering::Release);
        }
        if playing {
            next.wait_for_read_ahead();
            // Going on, not starting: no count-in mid-song.
            next.shared.skip_count_in.store(true, Ordering::Release);
            next.play();
        }
    }

    /// Block until the output stream keeps calling back
    /// [`TAKE_OVER_SETTLE`] after its first callback, or it failed, or
    /// [`TAKE_OVER_LIMIT`] passed.
    fn wait_until_running(&self) {
        let t0 = std::time::Instant::now();
        let mut first: Option<std::time::Instant> = None;
        let mut seen = self.shared.callbacks.load(Ordering::Acquire);
        while t0.elapsed() < TAKE_OVER_LIMIT && self.status().error.is_none() {
            let calls = self.shared.callbacks.load(Ordering::Acquire);
            if calls != seen || (calls > 0 && first.is_none()) {
                seen = calls;
                let at = *first.get_or_insert_with(std::time::Instant::now);
                if at.elapsed() >= TAKE_OVER_SETTLE {
                    return;
                }
            }
            std::thread::sleep(Duration::from_millis(5));
        }
    }

    /// Paused, after a seek: block until the callback has run twice since
    /// (the first may have begun before the seek; a paused callback hands
    /// chunks read before it back to the reader) and at least two chunks
    /// are read ahead, or [`TAKE_OVER_SETTLE`] passed, so play starts on
    /// audio rather than an underrun.
    fn wait_for_read_ahead(&self) {
        let t0 = std::time::Instant::now();
        let since = self.shared.callbacks.load(Ordering::Acquire);
        while t0.elapsed() < TAKE_OVER_SETTLE {
            let s = self.stats();
            if s.callbacks >= since + 2 && s.read_ahead_chunks >= 2 {
                return;
            }
            std::thread::sleep(Duration::from_millis(2));
        }
    }

    fn open_set(readers: StemSet, controls: &MixControls) -> Result<Self, PlayerError> {
        let song_rate = readers.sample_rate();
        let host = cpal::default_host();
        let device = host.default_output_device().ok_or(PlayerError::NoDevice)?;
        let (config, format) = choose_config(&device, song_rate)?;
        let device_name = device.description().map(|d| d.to_string()).unwrap_or_else(|_| "default output".to_string());
        let output = OutputInfo {
            device: device_name,
            sample_rate: config.sample_rate,
            channels: config.channels,
            resampling: config.sample_rate != song_rate,
        };
        let (shared, callback, reader) =
            start_engine(readers, controls, config.sample_rate, usize::from(config.channels))?;
        let (ready_tx, ready_rx) = mpsc::channel::<Result<(), String>>();
        let (stop_tx, stop_rx) = mpsc::channel::<()>();
        let spawned = {
            let shared = Arc::clone(&shared);
            std::thread::Builder::new()
                .name("stemroom-player-output".into())
                .spawn(move || output::run(device, config, format, callback, shared, ready_tx, stop_rx))
        };
        let owner = match spawned {
            Ok(owner) => owner,
            Err(e) => {
                // The reader runs already: stop it, and close its files.
                shared.stop.store(true, Ordering::Release);
                let _ = reader.join();
                return Err(PlayerError::Device(format!("cannot start the output thread: {e}")));
            }
        };
        let mut player = Player {
            shared,
            output,
            reader: Some(reader),
            owner: Some(owner),
            stop_owner: Some(stop_tx),
            original: None,
        };
        match ready_rx.recv_timeout(OPEN_LIMIT) {
            Ok(Ok(())) => Ok(player),
            Ok(Err(e)) => {
                player.shutdown();
                Err(PlayerError::Device(e))
            }
            Err(mpsc::RecvTimeoutError::Timeout) => {
                player.shutdown();
                Err(PlayerError::Device(format!(
                    "the audio device did not open within {} s (is the sound server answering?)",
                    OPEN_LIMIT.as_secs()
                )))
            }
            Err(mpsc::RecvTimeoutError::Disconnected) => {
                player.shutdown();
                Err(PlayerError::Device("the output thread stopped while opening the device".into()))
            }
        }
    }

    /// The output as it was opened (a later reopen on another device, after
    /// one was lost, is not reflected here).
    pub fn output(&self) -> &OutputInfo {
        &self.output
    }

    /// Start or resume playback (from the start when the song had ended).
    pub fn play(&self) {
        self.shared.play();
    }

    /// Pause (after a 10 ms fade), keeping the position.
    pub fn pause(&self) {
        self.shared.playing.store(false, Ordering::Release);
    }

    /// Jump to `frame` (stems' rate), clamped to the song.
    pub fn seek(&self, frame: u64) {
        self.shared.seek(frame);
    }

    /// Set or clear the loop region (frames at the stems' rate). Audio
    /// already read ahead is re-read so the new loop applies at once.
    pub fn set_loop(&self, looping: Option<LoopRegion>) {
        self.shared.set_loop(looping);
    }

    /// Apply new mixer controls: gains, mutes and solos are heard after one
    /// 10 ms ramp; a new tempo or transposition takes over about 140 ms
    /// ahead of the playhead without a gap (a 10 ms fade out and in); while
    /// paused it re-reads from the playhead like a seek.
    pub fn set_controls(&self, controls: &MixControls) {
        self.shared.set_controls(controls);
    }

    /// The song's beat grid (its tempo and first beat), for the click
    /// track and the count-in ([`MixControls::metronome`],
    /// [`MixControls::count_in`]); `None` (or a tempo outside
    /// [`MIN_GRID_BPM`]…[`MAX_GRID_BPM`]) turns both off.
    pub fn set_beat_grid(&self, grid: Option<BeatGrid>) {
        self.shared.set_beat_grid(grid);
    }

    /// Where playback is and what it is doing.
    pub fn status(&self) -> PlayerStatus {
        let s = &self.shared;
        // The output thread stuck closing or reopening the stream (a sound
        // server that hung): it cannot say so, so this does.
        s.notice_hung_output(output::REOPEN_GIVE_UP, output::gave_up_message);
        let playing = s.playing.load(Ordering::Acquire);
        let position = s.heard_position();
        let waiting = s.waiting.load(Ordering::Acquire);
        let length = s.length.load(Ordering::Acquire);
        let (levels, master) = s.take_levels();
        PlayerStatus {
            playing,
            position,
            length: if length == u64::MAX { 0 } else { length },
            sample_rate: s.song_rate,
            ended: s.ended.load(Ordering::Acquire),
            error: s.error.lock().ok().and_then(|e| e.clone()),
            levels,
            master,
            counting_in: s.counting_in.load(Ordering::Acquire),
            separated: Some(s.edge.load(Ordering::Acquire)).filter(|&e| e != u64::MAX),
            waiting,
        }
    }

    /// The callback's counters.
    pub fn stats(&self) -> CallbackStats {
        let s = &self.shared;
        CallbackStats {
            callbacks: s.callbacks.load(Ordering::Acquire),
            frames_played: s.frames_played.load(Ordering::Acquire),
            underrun_frames: s.underrun_frames.load(Ordering::Acquire),
            reading_frames: s.reading_frames.load(Ordering::Acquire),
            read_ahead_chunks: s.read_ahead.load(Ordering::Acquire),
            device_glitches: s.device_glitches.load(Ordering::Acquire),
            reopens: s.reopens.load(Ordering::Acquire),
        }
    }

    fn shutdown(&mut self) {
        self.shared.stop.store(true, Ordering::Release);
        self.shared.playing.store(false, Ordering::Release);
        if let Some(tx) = self.stop_owner.take() {
            let _ = tx.send(());
        }
        // Closing a stream on a sound server that died can block for ever
        // inside the audio backend, and the reader may be blocked in a read
        // (a network drive that stalled; ffmpeg waits up to a minute for its
        // pipe): each thread is left to it after a while rather than
        // hanging whoever drops the player (the app's next song would wait
        // behind it).
        if let Some(h) = self.owner.take() {
            join_within(h, "the audio output did not close; leaving it to the audio system");
        }
        if let Some(h) = self.reader.take() {
            join_within(h, "the stems' reader did not stop; left to end");
        }
    }
}

/// Join `h` when it ends within [`OUTPUT_JOIN_LIMIT`]; else leave it
/// running, saying `why_not`.
pub(crate) fn join_within(h: JoinHandle<()>, why_not: &str) {
    let t0 = std::time::Instant::now();
    while !h.is_finished() && t0.elapsed() < OUTPUT_JOIN_LIMIT {
        std::thread::sleep(Duration::from_millis(5));
    }
    if h.is_finished() {
        let _ = h.join();
    } else {
        tracing::warn!("{why_not} (after {} s)", OUTPUT_JOIN_LIMIT.as_secs());
    }
}

impl Drop for Player {
    fn drop(&mut self) {
        self.shutdown();
    }
}

/// Open every stem, and the original mixture as a last, soft stem (see
/// [`StemSet::with_original`]), and check they can play together.
fn open_readers(stems: &[PathBuf], original: Option<&std::path::Path>) -> Result<StemSet, PlayerError> {
    if stems.is_empty() {
        return Err(PlayerError::NoStems);
    }
    let count = stems.len() + usize::from(original.is_some());
    if count > MAX_STEMS {
        return Err(PlayerError::TooManyStems(count));
    }
    let mut readers = StemSet::open(stems)?;
    if let Some(o) = original {
        readers = readers.with_original(o)?;
    }
    if let Some((a, b)) = readers.mixed_rates() {
        return Err(PlayerError::MixedRates(a, b));
    }
    Ok(readers)
}

/// Everything but the device: shared state, the callback's state and the
/// running reader thread, for output at `device_rate` Hz on `channels`.
fn start_engine(
    readers: StemSet,
    controls: &MixControls,
    device_rate: u32,
    channels: usize,
) -> Result<(Arc<Shared>, Callback, JoinHandle<()>), PlayerError> {
    let n = readers.len();
    let song_rate = readers.sample_rate();
    // Unknown lengths (no declared frame count) are learnt at the end.
    let length = readers.declared_frames().unwrap_or(u64::MAX);
    let mut ctl = controls.clone();
    ctl.stems.resize(n, Default::default());
    let shared = Arc::new(Shared {
        stems: n,
        song_rate,
        device_rate: AtomicU32::new(device_rate),
        heard_ratio: AtomicU64::new((f64::from(song_rate) / f64::from(device_rate.max(1))).to_bits()),
        length: AtomicU64::new(length),
        gains: std::array::from_fn(|_| AtomicU32::new(0)),
        peaks: std::array::from_fn(|_| AtomicU32::new(0)),
        mean_squares: std::array::from_fn(|_| AtomicU32::new(0)),
        controls_version: AtomicU64::new(0),
        controls_writer: Mutex::new(()),
        playing: AtomicBool::new(false),
        ended: AtomicBool::new(false),
        generation: AtomicU32::new(0),
        transport: Mutex::new(Transport { target: 0, looping: None, time_pitch: ctl.time_pitch(), switch: false }),
        switch_from: AtomicU32::new(u32::MAX),
        switch_at: AtomicU64::new(0),
        position: AtomicU64::new(0),
        resumed_at: AtomicU64::new(0),
        latency_frames: AtomicU64::new(0),
        callbacks: AtomicU64::new(0),
        frames_played: AtomicU64::new(0),
        underrun_frames: AtomicU64::new(0),
        reading_frames: AtomicU64::new(0),
        read_ahead: AtomicU64::new(0),
        device_glitches: AtomicU64::new(0),
        device_errors: AtomicU64::new(0),
        reopens: AtomicU64::new(0),
        output_lost: AtomicBool::new(false),
        reader_failed: AtomicBool::new(false),
        in_backend_since: Mutex::new(None),
        error: Mutex::new(None),
        stop: AtomicBool::new(false),
        beat_period: AtomicU64::new(0),
        beat_offset: AtomicU64::new(0),
        metronome: AtomicBool::new(false),
        count_in: AtomicBool::new(false),
        heard_generation: AtomicU32::new(u32::MAX),
        skip_count_in: AtomicBool::new(false),
        tempo: AtomicU32::new(ctl.time_pitch().tempo.to_bits()),
        counting_in: AtomicBool::new(false),
        edge: AtomicU64::new(readers.edge().unwrap_or(u64::MAX)),
        waiting: AtomicBool::new(false),
        replacement: Mutex::new(None),
    });
    let chunks = chunks_for(device_rate);
    let (full_tx, full_rx) = rtrb::RingBuffer::<Chunk>::new(chunks);
    let (mut free_tx, free_rx) = rtrb::RingBuffer::<Chunk>::new(chunks);
    for _ in 0..chunks {
        let data = vec![0.0f32; n * CHUNK_FRAMES * 2].into_boxed_slice();
        let chunk = Chunk { generation: u32::MAX, start: 0, frames: 0, ratio: 1.0, end: false, wait: false, data };
        if free_tx.push(chunk).is_err() {
            return Err(PlayerError::Device("internal: chunk ring too small".into()));
        }
    }
    let reader = {
        let shared = Arc::clone(&shared);
        std::thread::Builder::new()
            .name("stemroom-player-reader".into())
            .spawn(move || read_loop::read_loop(&shared, readers, device_rate, full_tx, free_rx))
            .map_err(|e| PlayerError::Device(format!("cannot start the reader thread: {e}")))?
    };
    shared.set_controls(&ctl);
    let callback = Callback::new(Arc::clone(&shared), full_rx, free_tx, channels, device_rate, &ctl);
    Ok((shared, callback, reader))
}

/// Counts allocations (and frees) made on the current thread while
/// counting is on: this crate's unit-test binary's global allocator.
#[cfg(test)]
mod alloc_count {
    use std::alloc::{GlobalAlloc, Layout, System};
    use std::cell::Cell;

    thread_local! {
        static ON: Cell<bool> = const { Cell::new(false) };
        static COUNT: Cell<usize> = const { Cell::new(0) };
    }

    fn note() {
        let _ = ON.try_with(|on| {
            if on.get() {
                let _ = COUNT.try_with(|c| c.set(c.get() + 1));
            }
        });
    }

    struct Counting;

    // SAFETY: every call is forwarded to the system allocator unchanged.
    unsafe impl GlobalAlloc for Counting {
        unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
            note();
            // SAFETY: as the caller's contract.
            unsafe { System.alloc(layout) }
        }
        unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
            note();
            // SAFETY: as the caller's contract.
            unsafe { System.alloc_zeroed(layout) }
        }
        unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
            note();
            // SAFETY: as the caller's contract.
            unsafe { System.dealloc(ptr, layout) }
        }
        unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
            note();
            // SAFETY: as the caller's contract.
            unsafe { System.realloc(ptr, layout, new_size) }
        }
    }

    #[global_allocator]
    static COUNTING: Counting = Counting;

    /// Run `f` and return its result with the allocations it made here.
    pub fn counting<R>(f: impl FnOnce() -> R) -> (R, usize) {
        COUNT.with(|c| c.set(0));
        ON.with(|on| on.set(true));
        let r = f();
        ON.with(|on| on.set(false));
        (r, COUNT.with(Cell::get))
    }
}

#[cfg(test)]
mod tests {
    //! The real-time path without a device: the reader thread and the
    //! callback's `render`, on synthetic stems whose samples name their frame.
    use super::*;
    use crate::mixer::StemControl;

    const RATE: u32 = 44_100;
    const FADE: usize = 441; // FADE_SECONDS at 44.1 kHz

    /// Tests whose reader thread must keep up with a paced render take
    /// turns (on a 2-core machine, several at once can starve a reader).
    pub(super) fn paced() -> std::sync::MutexGuard<'static, ()> {
        static PACED: Mutex<()> = Mutex::new(());
        PACED.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Stem 0 holds `frame / 1e6`, stem 1 a constant 0.25 (float WAV, exact).
    fn engine(frames: usize) -> (tempfile::TempDir, Arc<Shared>, Callback, JoinHandle<()>) {
        let dir = tempfile::tempdir().unwrap();
        let spec = hound::WavSpec {
            channels: 2,
            sample_rate: RATE,
            bits_per_sample: 32,
            sample_format: hound::SampleFormat::Float,
        };
        let mut paths = Vec::new();
        for (k, f) in [|i: usize| i as f32 / 1e6, |_| 0.25f32].iter().enumerate() {
            let p = dir.path().join(format!("s{k}.wav"));
            let mut w = hound::WavWriter::create(&p, spec).unwrap();
            for i in 0..frames {
                w.write_sample(f(i)).unwrap();
                w.write_sample(f(i)).unwrap();
            }
            w.finalize().unwrap();
            paths.push(p);
        }
        let (shared, cb, reader) =
            start_engine(open_readers(&paths, None).unwrap(), &MixControls::unity(2), RATE, 2).unwrap();
        (dir, shared, cb, reader)
    }

    /// Let the reader refill after a change, then render `frames` frames.
    fn render(cb: &mut Callback, frames: usize) -> Vec<f32> {
        wait_for_audio(cb, frames);
        let mut out = vec![0.0f32; frames * 2];
        for block in out.chunks_mut(512 * 2) {
            cb.render(block);
        }
        out
    }

    fn left(out: &[f32]) -> Vec<f32> {
        out.iter().step_by(2).copied().collect()
    }

    fn close(a: f32, b: f32) -> bool {
        (a - b).abs() < 1e-6
    }

    /// The audio callback allocates and frees nothing: through playing,
    /// control changes (mute, solo, gains), seeks, a loop and pausing. A
    /// counting allocator (this test binary's global one) counts every
    /// allocation made on this thread while `render` runs.
    #[test]
    fn the_callback_never_allocates() {
        let (_dir, sh, mut cb, reader) = engine(200_000);
        let mut out = vec![0.0f32; 512 * 2];
        sh.play();
        let mut c = MixControls::unity(2);
        let (mut total, mut heard) = (0, 0);
        for i in 0..400 {
            if i % 20 == 0 {
                std::thread::sleep(Duration::from_millis(20)); // let the reader refill
            }
            match i {
                50 => c.stems[1].mute = true,
                100 => c.stems[0].solo = true,
                150 => c.stems[0].gain = 0.3,
                _ => {}
            }
            if i % 50 == 0 {
                sh.set_controls(&c);
            }
            if i == 200 {
                sh.seek(100_000);
            }
            if i == 250 {
                sh.set_loop(Some(LoopRegion { start: 100_000, end: 110_000 }));
            }
            if i == 350 {
                sh.playing.store(false, Ordering::Release);
            }
            let ((), n) = alloc_count::counting(|| cb.render(&mut out));
            total += n;
            heard += usize::from(out.iter().any(|&v| v != 0.0));
        }
        assert!(cb.mixer.current_gains()[2] == 0.0, "the controls were applied");
        assert_eq!(total, 0, "allocations in the audio callback");
        // It went through the paths named above, not through silence: most
        // buffers before the pause held audio, and the seek and loop moved
        // the playhead past 100 000.
        assert!(heard > 250, "{heard} of 350 buffers held audio");
        assert!(sh.position.load(Ordering::Acquire) >= 100_000);
        sh.stop.store(true, Ordering::Release);
        reader.join().unwrap();
    }

    /// The original mixture (the user's file, maybe on a drive that goes
    /// away) that fails to read mid-song goes silent; the stems read on to
    /// their end. A player on a finished song opens it so
    /// ([`Player::open_with_original`], [`Player::complete_stream`]).
    #[test]
    fn an_original_that_fails_to_read_does_not_stop_the_stems() {
        let dir = tempfile::tempdir().unwrap();
        let spec = hound::WavSpec {
            channels: 2,
            sample_rate: RATE,
            bits_per_sample: 32,
            sample_format: hound::SampleFormat::Float,
        };
        let frames: usize = 100_000;
        let [stem, original] = ["stem.wav", "original.wav"].map(|n| dir.path().join(n));
        for p in [&stem, &original] {
            let mut w = hound::WavWriter::create(p, spec).unwrap();
            for i in 0..2 * frames {
                w.write_sample(i as f32 / 1e7).unwrap();
            }
            w.finalize().unwrap();
        }
        let mut set = open_readers(std::slice::from_ref(&stem), Some(&original)).unwrap();
        // Cut to a tenth after it was opened: its header still says all.
        std::fs::OpenOptions::new()
            .write(true)
            .open(&original)
            .unwrap()
            .set_len(4096 + (frames / 10 * 8) as u64)
            .unwrap();
        let mut out = vec![Vec::new(), Vec::new()];
        let mut read = 0;
        loop {
            let got = set.read(4096, &mut out).expect("the stems are read to their end");
            assert!(out[0][..2 * got].iter().zip(2 * read..).all(|(&v, i)| v == i as f32 / 1e7), "at {read}");
            read += got;
            if got < 4096 {
                break;
            }
        }
        assert_eq!(read, frames);
    }

    /// A pause heard in a large device buffer (2048 frames, as some
    /// systems ask for) consumes only its 10 ms fade: play goes on from
    /// the frame the fade ended on, nothing skipped.
    #[test]
    fn a_pause_in_a_large_device_buffer_skips_nothing() {
        let _paced = paced();
        let (_dir, sh, mut cb, _reader) = engine(400_000);
        sh.play();
        render(&mut cb, 22_050);
        let before = sh.position.load(Ordering::Acquire);
        sh.playing.store(false, Ordering::Release); // Player::pause
        let mut buf = vec![0.0f32; 2 * 2048];
        cb.render(&mut buf);
        let paused_at = sh.position.load(Ordering::Acquire);
        assert_eq!(paused_at, before + FADE as u64, "the playhead stops where the fade ends");
        let l = left(&buf);
        assert!(
            l[..FADE - 1].iter().all(|&v| v != 0.0) && l[FADE..].iter().all(|&v| v == 0.0),
            "faded out, then silent"
        );
        sh.play();
        let out = left(&render(&mut cb, 4096));
        for (i, v) in out.iter().enumerate().skip(FADE + 1) {
            assert!(close(*v, (paused_at + i as u64) as f32 / 1e6 + 0.25), "frame {i} after play: {v}");
        }
    }

    /// The shortest loop still leaves 0.8 s read ahead (a chunk ends at
    /// every wrap: 32 passes of a 10 ms loop were 0.32 s; a 50 ms pass
    /// takes two chunks of 2048 frames).
    #[test]
    fn the_shortest_loop_keeps_the_read_ahead() {
        let _paced = paced();
        let (_dir, sh, mut cb, _reader) = engine(400_000);
        sh.set_loop(Some(LoopRegion { start: 100_000, end: 100_001 }));
        sh.seek(100_000);
        // Paused buffers hand the chunks read before back to the reader.
        render(&mut cb, 1024);
        wait_for_audio(&mut cb, usize::MAX);
        let generation = sh.generation.load(Ordering::Acquire);
        let n = cb.full.slots();
        let chunk = cb.full.read_chunk(n).expect("chunks");
        let (a, b) = chunk.as_slices();
        let frames: usize = a.iter().chain(b).filter(|c| c.generation == generation && !c.wait).map(|c| c.frames).sum();
        assert!(frames as f64 >= 0.79 * f64::from(RATE), "{frames} frames read ahead in {n} chunks");
        sh.stop.store(true, Ordering::Release);
    }

    /// A seek while paused is read ahead before play: the paused callback
    /// hands the chunks read before the seek back to the reader, so play
    /// starts on the new position's audio with no underrun (without that,
    /// the reader has no free chunk until play, and the first device
    /// buffer after play is silence).
    #[test]
    fn a_seek_while_paused_is_read_ahead_before_play() {
        let _paced = paced();
        let (_dir, sh, mut cb, _reader) = engine(400_000);
        let t0 = std::time::Instant::now();
        while cb.full.slots() < CHUNKS && t0.elapsed() < Duration::from_secs(10) {
            std::thread::sleep(Duration::from_millis(5));
        }
        assert_eq!(cb.full.slots(), CHUNKS, "the read-ahead at frame 0 is full");
        let before = sh.generation.load(Ordering::Acquire);
        sh.seek(300_000);
        // Paused device buffers (silent), as a running stream asks for.
        assert!(render(&mut cb, 1024).iter().all(|&v| v == 0.0), "silent while paused");
        let t0 = std::time::Instant::now();
        while sh.read_ahead.load(Ordering::Acquire) < 4 && t0.elapsed() < Duration::from_secs(10) {
            render(&mut cb, 512);
        }
        assert_eq!(sh.position.load(Ordering::Acquire), 300_000, "paused at the seek target");
        // A buffer that began before the seek (it read the old generation)
        // and finds the seek's first chunks keeps them: the reader does not
        // read them again (play would start a chunk or more past the
        // target).
        cb.recycle_stale(before, u32::MAX);
        sh.play();
        let out = left(&render(&mut cb, 4096));
        assert_eq!(sh.underrun_frames.load(Ordering::Acquire), 0, "play started on audio");
        assert_eq!(sh.reading_frames.load(Ordering::Acquire), 0, "play started on audio, not on the reader");
        for (i, v) in out.iter().enumerate().skip(FADE) {
            assert!(close(*v, (300_000 + i) as f32 / 1e6 + 0.25), "frame {i} after play: {v}");
        }
    }

    /// Just after Play the device buffer is empty: the playhead shown (the
    /// position less the output's latency) never goes back before where
    /// playback started, and lags by the whole latency once that much is
    /// handed over.
    #[test]
    fn the_heard_position_does_not_jump_back_on_play() {
        let _paced = paced();
        let (_dir, sh, mut cb, _reader) = engine(400_000);
        sh.seek(100_000);
        render(&mut cb, 1024);
        assert_eq!(sh.heard_position(), 100_000, "paused: the playhead");
        sh.latency_frames.store(4096, Ordering::Release);
        sh.play();
        render(&mut cb, 1024);
        let position = sh.position.load(Ordering::Acquire);
        assert!(position > 100_000, "played: {position}");
        assert_eq!(sh.heard_position(), 100_000, "the first frames are not heard yet");
        render(&mut cb, 8192);
        let position = sh.position.load(Ordering::Acquire);
        assert_eq!(sh.heard_position(), position - 4096, "a whole latency behind");
        // Play again while playing (a second click): nothing moves.
        sh.play();
        assert_eq!(sh.heard_position(), position - 4096, "a Play while playing leaves it");
        // A seek while playing: the same from its target.
        sh.seek(200_000);
        render(&mut cb, 1024);
        assert_eq!(sh.heard_position(), 200_000);
    }

    #[test]
    fn plays_seeks_loops_and_mixes_sample_exactly() {
        let _paced = paced();
        let (_dir, sh, mut cb, reader) = engine(50_000);
        // Paused: silence, nothing consumed.
        assert!(render(&mut cb, 256).iter().all(|&v| v == 0.0));
        assert_eq!(sh.position.load(Ordering::Acquire), 0);

        // Play from 0: a 10 ms fade-in, then the exact mix of both stems.
        sh.play();
        let out = left(&render(&mut cb, 2000));
        assert!(out[0].abs() < 0.01, "fades in from silence");
        for (i, v) in out.iter().enumerate().skip(FADE) {
            assert!(close(*v, i as f32 / 1e6 + 0.25), "frame {i}: {v}");
        }
        assert_eq!(sh.position.load(Ordering::Acquire), 2000, "playhead = frames delivered");

        // Seek while playing: what played goes on for 10 ms fading out (no
        // cut mid-waveform), then the target fades in and plays exactly.
        sh.seek(10_000);
        assert_eq!(sh.position.load(Ordering::Acquire), 10_000, "the playhead moves at once");
        let out = left(&render(&mut cb, 3000));
        for (i, v) in out[..FADE].iter().enumerate() {
            let gain = (FADE - i) as f32 / (FADE + 1) as f32;
            assert!(close(*v, ((2000 + i) as f32 / 1e6 + 0.25) * gain), "fading out, frame {i}: {v}");
        }
        for (k, v) in out[FADE..2 * FADE].iter().enumerate() {
            let gain = (k + 1) as f32 / FADE as f32;
            assert!((v - ((10_000 + k) as f32 / 1e6 + 0.25) * gain).abs() < 1e-4, "fading in, frame {k}: {v}");
        }
        for (k, v) in out[2 * FADE..].iter().enumerate() {
            assert!(close(*v, (10_000 + FADE + k) as f32 / 1e6 + 0.25), "after seek, frame {k}: {v}");
        }
        let at = sh.position.load(Ordering::Acquire);
        assert_eq!(at, 13_000 - FADE as u64);

        // Loop 20000..23000 set where the playhead is: a fade out and in
        // there too (with the read-ahead full, the reader has nothing of the
        // new generation yet: a cut would be a cut to silence), then it
        // plays on to 23000 and wraps to 20000.
        sh.set_loop(Some(LoopRegion { start: 20_000, end: 23_000 }));
        let to_end = (23_000 - at) as usize;
        let out = left(&render(&mut cb, FADE + to_end + 1500));
        for (i, v) in out[..FADE].iter().enumerate() {
            let gain = (FADE - i) as f32 / (FADE + 1) as f32;
            assert!(close(*v, ((at as usize + i) as f32 / 1e6 + 0.25) * gain), "fading out, frame {i}: {v}");
        }
        for (i, v) in out[2 * FADE..FADE + to_end].iter().enumerate() {
            let frame = at as usize + FADE + i;
            assert!(close(*v, frame as f32 / 1e6 + 0.25), "on to the loop, frame {i}: {v}");
        }
        for (k, v) in out[FADE + to_end..].iter().enumerate() {
            // Each pass begins with a 10 ms crossfade from what follows the
            // loop's end (frame 23000 on) to its start: no cut.
            let (frame, i) = (20_000 + k % 3000, k % 3000);
            let want = if i < FADE {
                let g = (i + 1) as f32 / (FADE + 1) as f32;
                (frame as f32 * g + (23_000 + i) as f32 * (1.0 - g)) / 1e6 + 0.25
            } else {
                frame as f32 / 1e6 + 0.25
            };
            assert!((v - want).abs() < 1e-5, "after the wrap, {k}: {v}, not {want}");
        }
        // A loop set behind the playhead: playback jumps to its start,
        // fading out and in as a seek does.
        let at = sh.position.load(Ordering::Acquire) as usize;
        sh.set_loop(Some(LoopRegion { start: 5_000, end: 8_000 }));
        let out = left(&render(&mut cb, 2 * FADE + 100));
        for (i, v) in out[..FADE].iter().enumerate() {
            let gain = (FADE - i) as f32 / (FADE + 1) as f32;
            let frame = 20_000 + (at - 20_000 + i) % 3000;
            assert!(close(*v, (frame as f32 / 1e6 + 0.25) * gain), "into the loop behind, fading out, {i}: {v}");
        }
        for (k, v) in out[2 * FADE..].iter().enumerate() {
            assert!(close(*v, (5_000 + FADE + k) as f32 / 1e6 + 0.25), "in the loop behind, {k}: {v}");
        }
        sh.set_loop(None);
        // A loop of one frame is lengthened to 50 ms, not read a frame at a time.
        sh.set_loop(Some(LoopRegion { start: 30_000, end: 30_001 }));
        let shortest = (f64::from(sh.song_rate) * transport::MIN_LOOP_SECONDS) as u32;
        let looping = sh.transport.lock().map(|t| t.looping).expect("transport");
        assert_eq!(looping, Some(LoopRegion { start: 30_000, end: 30_000 + shortest }));
        // Lengthened past the song's end (50 000 frames): it ends there.
        sh.set_loop(Some(LoopRegion { start: 49_990, end: 49_995 }));
        let looping = sh.transport.lock().map(|t| t.looping).expect("transport");
        assert_eq!(looping, Some(LoopRegion { start: 50_000 - shortest, end: 50_000 }));
        sh.set_loop(None);

        // Mute stem 1 (ramped over 10 ms), then solo it.
        let mut c = MixControls::unity(2);
        c.stems[1] = StemControl { mute: true, ..StemControl::default() };
        sh.set_controls(&c);
        sh.seek(30_000);
        let out = left(&render(&mut cb, 1000 + FADE));
        for (i, v) in out.iter().enumerate().skip(2 * FADE + 1) {
            assert!(close(*v, (30_000 + i - FADE) as f32 / 1e6), "stem 1 muted, frame {i}: {v}");
        }
        c.stems[1] = StemControl { solo: true, ..StemControl::default() };
        c.stems[0].gain = 0.5;
        sh.set_controls(&c);
        let out = left(&render(&mut cb, 1000));
        assert!(out[FADE + 1..].iter().all(|v| close(*v, 0.25)), "only the soloed stem");

        // Pause fades out over 10 ms and holds the position.
        sh.playing.store(false, Ordering::Release);
        let out = left(&render(&mut cb, 1000));
        assert!(out[FADE + 1..].iter().all(|&v| v == 0.0), "silent after the fade");
        let held = sh.position.load(Ordering::Acquire);
        render(&mut cb, 1000);
        assert_eq!(sh.position.load(Ordering::Acquire), held);

        // The end: silence after the last frame, ended, position = length.
        sh.set_controls(&MixControls::unity(2));
        sh.seek(49_900);
        sh.play();
        let out = left(&render(&mut cb, 1000));
        assert!(out[100..].iter().all(|&v| v == 0.0), "silence after the end");
        assert!(sh.ended.load(Ordering::Acquire) && !sh.playing.load(Ordering::Acquire));
        assert_eq!(sh.position.load(Ordering::Acquire), 50_000);
        // Play again after the end starts from the top.
        sh.play();
        assert_eq!(sh.position.load(Ordering::Acquire), 0);
        assert_eq!(sh.underrun_frames.load(Ordering::Acquire), 0, "the reader kept up");
        // A loop set after the end is where Play goes on, not the top.
        sh.seek(49_900);
        let _ = render(&mut cb, 1000);
        assert!(sh.ended.load(Ordering::Acquire));
        sh.set_loop(Some(LoopRegion { start: 20_000, end: 30_000 }));
        sh.play();
        assert_eq!(sh.position.load(Ordering::Acquire), 20_000);
        // Controls naming fewer stems than play leave the others at unity
        // (as when the player started), not silenced.
        let mut one = MixControls::unity(1);
        one.master = 0.5;
        sh.set_controls(&one);
        let gains: Vec<f32> = sh.gains[..4].iter().map(|g| f32::from_bits(g.load(Ordering::Acquire))).collect();
        assert_eq!(gains, [0.5, 0.5, 0.5, 0.5]);
        sh.set_loop(None);

        sh.stop.store(true, Ordering::Release);
        reader.join().unwrap();
    }

    /// The output thread stuck in the audio backend (closing or reopening
    /// a stream on a sound server that hung) cannot report it: the next
    /// status stops playback and says so, which a return then clears.
    #[test]
    fn an_output_stuck_in_the_backend_is_reported() {
        let (_dir, sh, _cb, reader) = engine(10_000);
        sh.play();
        sh.notice_hung_output(Duration::ZERO, || "stuck".into());
        assert!(sh.playing.load(Ordering::Acquire), "no call under way");
        let call = sh.in_backend_call();
        std::thread::sleep(Duration::from_millis(30));
        sh.notice_hung_output(Duration::from_secs(10), || "stuck".into());
        assert!(sh.playing.load(Ordering::Acquire), "not stuck long enough yet");
        sh.notice_hung_output(Duration::from_millis(10), || "stuck".into());
        assert!(!sh.playing.load(Ordering::Acquire));
        assert_eq!(sh.error.lock().unwrap().as_deref(), Some("stuck"));
        drop(call);
        sh.clear_error("stuck");
        sh.notice_hung_output(Duration::ZERO, || "stuck again".into());
        assert_eq!(sh.error.lock().unwrap().as_deref(), None);
        sh.stop.store(true, Ordering::Release);
        reader.join().unwrap();
    }

    /// The meters read what is heard: each stem after its gain, the master
    /// after everything; peaks are held until read; pause brings them down.
    #[test]
    fn meters_follow_gains_mute_and_pause() {
        let (_dir, sh, mut cb, reader) = engine(100_000);
        sh.play();
        render(&mut cb, 4096);
        let _ = sh.take_levels(); // the fade-in
        render(&mut cb, 4096);
        let (stems, master) = sh.take_levels();
        assert!((stems[1].peak - 0.25).abs() < 1e-6 && (stems[1].rms - 0.25).abs() < 1e-4, "{:?}", stems[1]);
        assert!(stems[0].peak > 0.004 && stems[0].peak < 0.01, "stem 0 is frame/1e6: {:?}", stems[0]);
        assert!((master.peak - (0.25 + stems[0].peak)).abs() < 1e-4, "{master:?}");
        // Read again at once: the peak was taken, nothing played since.
        assert_eq!(sh.take_levels().1.peak, 0.0);

        let mut c = MixControls::unity(2);
        c.stems[1].gain = 0.5;
        c.stems[0].mute = true;
        sh.set_controls(&c);
        render(&mut cb, 2048);
        let _ = sh.take_levels(); // the 10 ms ramp
        render(&mut cb, 2048);
        let (stems, master) = sh.take_levels();
        assert!((stems[1].peak - 0.125).abs() < 1e-6, "{:?}", stems[1]);
        assert_eq!(stems[0], MeterLevel::default(), "muted: silent");
        assert!((master.peak - 0.125).abs() < 1e-6);

        // +12 dB on a 0.25 stem: the master goes over full scale.
        c.stems[1].gain = 4.0;
        c.master = 1.0;
        sh.set_controls(&c);
        render(&mut cb, 2048);
        assert!(sh.take_levels().1.peak >= 0.99, "clipping shows");

        sh.playing.store(false, Ordering::Release);
        render(&mut cb, 2048);
        let _ = sh.take_levels(); // the fade-out
        render(&mut cb, 2048);
        let (stems, master) = sh.take_levels();
        assert_eq!((stems[1], master), (MeterLevel::default(), MeterLevel::default()), "paused: silent");
        sh.stop.store(true, Ordering::Release);
        reader.join().unwrap();
    }

    #[test]
    fn resamples_when_the_device_runs_at_another_rate() {
        let _paced = paced();
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("tone.wav");
        let spec = hound::WavSpec {
            channels: 1,
            sample_rate: 44_100,
            bits_per_sample: 16,
            sample_format: hound::SampleFormat::Int,
        };
        let mut w = hound::WavWriter::create(&p, spec).unwrap();
        for i in 0..44_100 {
            w.write_sample(((i as f32 * 440.0 * std::f32::consts::TAU / 44_100.0).sin() * 16_000.0) as i16).unwrap();
        }
        w.finalize().unwrap();
        let (sh, mut cb, reader) =
            start_engine(open_readers(&[p], None).unwrap(), &MixControls::unity(1), 48_000, 2).unwrap();
        sh.play();
        let out = render(&mut cb, 24_000);
        // Half a second at 48 kHz is half a second of the song at 44.1 kHz.
        let pos = sh.position.load(Ordering::Acquire);
        assert!((pos as i64 - 22_050).abs() <= 2, "position {pos}");
        // Still a 440 Hz tone: count zero crossings over the steady part.
        let l = left(&out);
        let crossings = l[4800..].windows(2).filter(|w| (w[0] < 0.0) != (w[1] < 0.0)).count();
        let expected = 2.0 * 440.0 * (l.len() - 4800) as f64 / 48_000.0;
        assert!((crossings as f64 - expected).abs() < 4.0, "{crossings} crossings, expected {expected:.0}");
        sh.stop.store(true, Ordering::Release);
        reader.join().unwrap();
    }

    /// A loop played at another device rate keeps every frame of each pass
    /// (a pass used to lose up to a block, and a loop shorter than one
    /// block played nothing at all): the resamplers run on through the
    /// wraps, and a chunk ends at each. The crossfade makes no pass longer.
    #[test]
    fn loops_play_whole_when_the_device_runs_at_another_rate() {
        let _paced = paced();
        let dir = tempfile::tempdir().unwrap();
        // Frame i holds i / 1e6: a ramp, so each pass is one rise.
        let p = float_wav(dir.path().join("ramp.wav"), 60_000, |i, _| i as f32 / 1e6);
        let (sh, mut cb, reader) =
            start_engine(open_readers(&[p], None).unwrap(), &MixControls::unity(1), 48_000, 2).unwrap();
        for (start, end) in [(20_000u32, 23_000u32), (40_000, 42_400)] {
            sh.seek(u64::from(start));
            sh.set_loop(Some(LoopRegion { start, end }));
            sh.play();
            let per_pass = f64::from(end - start) * 48_000.0 / 44_100.0;
            let l = left(&render_paced(&mut cb, (per_pass * 12.0) as usize));
            // Where each pass rises through three quarters of its range
            // (from below for 100 frames to above for 100). Each pass
            // begins with the 10 ms crossfade from what follows the loop's
            // end down to its start, so a short loop's ramp never gets back
            // to its middle: above three quarters, the crossfade falls
            // through the level once and the ramp rises through it once.
            let middle = ((f64::from(start) + 0.75 * f64::from(end - start)) / 1e6) as f32;
            // The first pass is left out: it fades in from silence.
            let rises: Vec<usize> = (per_pass as usize..l.len() - 101)
                .filter(|&i| {
                    l[i - 100..=i].iter().all(|&v| v < middle) && l[i + 1..i + 101].iter().all(|&v| v >= middle)
                })
                .collect();
            assert!(rises.len() >= 10, "loop {start}..{end}: {} passes heard in 12 passes' time", rises.len());
            for w in rises.windows(2) {
                let pass = (w[1] - w[0]) as f64;
                assert!(
                    (pass - per_pass).abs() <= 2.0,
                    "loop {start}..{end}: a pass of {pass} device frames, not {per_pass:.1}"
                );
            }
            sh.set_loop(None);
            sh.playing.store(false, Ordering::Release);
            render_paced(&mut cb, 2048);
        }
        assert_eq!(sh.underrun_frames.load(Ordering::Acquire), 0, "the reader kept up");
        sh.stop.store(true, Ordering::Release);
        reader.join().unwrap();
    }

    /// A loop of whole periods of a tone plays as one unbroken tone at
    /// another device rate and at another speed: the wrap's crossfade joins
    /// the same phase, and the resamplers and stretchers run on through it
    /// (started afresh each pass, they faded each pass out and in against
    /// silence: a dip at every wrap).
    #[test]
    fn a_loop_wraps_without_a_dip_when_resampled_or_stretched() {
        let _paced = paced();
        let dir = tempfile::tempdir().unwrap();
        // 441 Hz at 44.1 kHz: a period of exactly 100 frames.
        let tone = |i: u64, _| (2.0 * std::f64::consts::PI * i as f64 / 100.0).sin() as f32 * 0.5;
        let p = float_wav(dir.path().join("tone.wav"), 200_000, tone);
        for (device_rate, tempo) in [(48_000u32, 1.0f32), (44_100, 0.8), (48_000, 1.25)] {
            let (sh, mut cb, reader) = start_engine(
                open_readers(std::slice::from_ref(&p), None).unwrap(),
                &MixControls::unity(1),
                device_rate,
                2,
            )
            .unwrap();
            let mut c = MixControls::unity(1);
            c.tempo = tempo;
            sh.set_controls(&c);
            // 50 periods (5,000 frames).
            sh.seek(50_000);
            sh.set_loop(Some(LoopRegion { start: 50_000, end: 55_000 }));
            fill_read_ahead(&mut cb);
            sh.play();
            let per_pass = 5_000.0 * f64::from(device_rate) / 44_100.0 / f64::from(tempo);
            let l = left(&render_paced(&mut cb, (per_pass * 8.0) as usize));
            // The quietest 64-frame window after the first pass (which fades
            // in from silence): a steady tone of 0.5 has an RMS of 0.354.
            let quietest = l[per_pass as usize..]
                .windows(64)
                .step_by(16)
                .map(|w| (w.iter().map(|v| v * v).sum::<f32>() / 64.0).sqrt())
                .fold(f32::MAX, f32::min);
            assert!(quietest > 0.3, "{device_rate} Hz at {tempo}x: a dip to RMS {quietest:.3} at a wrap");
            assert_eq!(sh.underrun_frames.load(Ordering::Acquire), 0, "the reader kept up");
            sh.stop.store(true, Ordering::Release);
            reader.join().unwrap();
        }
    }

    /// Wait until the reader has filled the read-ahead (a fixed wait was
    /// not always enough under the other tests' load).
    pub(super) fn fill_read_ahead(cb: &mut Callback) {
        wait_for_audio(cb, (CHUNKS - 1) * CHUNK_FRAMES);
    }

    /// Wait (10 s at most) until the ring holds `frames` device frames of
    /// the current generation's audio, or the reader has stopped (the
    /// song's end, or the separated edge last in the ring), or the ring is
    /// full: what rendering that much plays without the reader keeping up
    /// meanwhile (the paced callback runs at several times real time).
    /// Chunks of an older generation (a seek's old place, still in the
    /// ring until the callback recycles them) do not count.
    pub(super) fn wait_for_audio(cb: &mut Callback, frames: usize) {
        let t0 = std::time::Instant::now();
        loop {
            let generation = cb.shared.generation.load(Ordering::Acquire);
            let n = cb.full.slots();
            // (The chunk the callback holds is one the ring cannot.)
            let full = n + usize::from(cb.current.is_some()) >= cb.full.buffer().capacity();
            let (mut got, mut stopped) = (0, false);
            if let Ok(chunk) = cb.full.read_chunk(n) {
                let (a, b) = chunk.as_slices();
                let edge = cb.shared.edge.load(Ordering::Acquire);
                for c in a.iter().chain(b).filter(|c| c.generation == generation) {
                    got += if c.wait { 0 } else { c.frames };
                    // (A wait at an edge the separation has passed since is
                    // no stop: the reader goes on after it.)
                    stopped = c.end || (c.wait && c.start >= edge);
                }
                // Dropped uncommitted: nothing is consumed.
            }
            if got >= frames || stopped || full || t0.elapsed() > Duration::from_secs(10) {
                return;
            }
            std::thread::sleep(Duration::from_millis(2));
        }
    }

    /// A 5 s stem of a 440 Hz tone at 0.5, played through an engine with `c`.
    fn tone_engine(c: &MixControls) -> (tempfile::TempDir, Arc<Shared>, Callback, JoinHandle<()>) {
        let dir = tempfile::tempdir().unwrap();
        let p = float_stem(dir.path(), "tone", 5 * RATE as usize, |i| {
            0.5 * (i as f32 * 440.0 * std::f32::consts::TAU / RATE as f32).sin()
        });
        let (sh, cb, reader) = start_engine(open_readers(std::slice::from_ref(&p), None).unwrap(), c, RATE, 2).unwrap();
        (dir, sh, cb, reader)
    }

    /// A tempo change while a loop plays switches at its point and goes on
    /// in song order: the old read-ahead's chunks from the loop's start,
    /// read after its end (the read-ahead is longer than the loop), are not
    /// played after the switch (they were: the loop's start was heard again
    /// at the old tempo, a jump back, before the new tempo came in).
    #[test]
    fn a_tempo_change_in_a_loop_goes_on_from_its_switch_point() {
        let _paced = paced();
        let mut c = MixControls::unity(1);
        let (_dir, sh, mut cb, reader) = tone_engine(&c);
        sh.seek(20_000);
        sh.set_loop(Some(LoopRegion { start: 20_000, end: 40_000 }));
        fill_read_ahead(&mut cb);
        sh.play();
        let block = 256;
        while sh.position.load(Ordering::Acquire) < 30_000 {
            render_paced(&mut cb, block);
        }
        c.tempo = 0.8;
        sh.set_controls(&c);
        assert_ne!(sh.switch_from.load(Ordering::Acquire), u32::MAX, "a switch without a gap, at its point");
        let mut last = sh.position.load(Ordering::Acquire);
        for _ in 0..(RATE as usize / block) {
            render_paced(&mut cb, block);
            let now = sh.position.load(Ordering::Acquire);
            assert!(now >= last || last >= 39_000, "the playhead went back from {last} to {now} inside the loop");
            last = now;
        }
        sh.stop.store(true, Ordering::Release);
        reader.join().unwrap();
    }

    /// A tempo change right after a seek (before a callback played the new
    /// place): the read-ahead is the old place's, so the change cannot
    /// switch at a point ahead (the old chunks would be dropped unplayed,
    /// a cut to silence, and the new place's first chunks never heard). It
    /// re-reads from the seek's target; once the new place plays, a change
    /// switches without a gap again.
    #[test]
    fn a_tempo_change_right_after_a_seek_re_reads_from_the_seek() {
        let _paced = paced();
        let mut c = MixControls::unity(1);
        let (_dir, sh, mut cb, reader) = tone_engine(&c);
        fill_read_ahead(&mut cb);
        sh.play();
        render_paced(&mut cb, 8_192);
        sh.seek(100_000);
        c.tempo = 0.8;
        sh.set_controls(&c);
        assert_eq!(sh.switch_from.load(Ordering::Acquire), u32::MAX, "no switch ahead on the old place's audio");
        assert_eq!(sh.position.load(Ordering::Acquire), 100_000, "read again from the seek's target");
        fill_read_ahead(&mut cb);
        render_paced(&mut cb, 8_192);
        let at = sh.position.load(Ordering::Acquire);
        assert!((100_000..120_000).contains(&at), "playing on from the seek: {at}");
        fill_read_ahead(&mut cb);
        // The callback tells what it hears and holds (the change decides
        // on them).
        render_paced(&mut cb, 512);
        c.tempo = 1.2;
        sh.set_controls(&c);
        assert_ne!(sh.switch_from.load(Ordering::Acquire), u32::MAX, "then a switch without a gap");
        sh.stop.store(true, Ordering::Release);
        reader.join().unwrap();
    }

    /// The output reopened on a device at another rate (as `output::reopen`
    /// does when the new default device does not take the old rate): the
    /// song goes on from where it was, resampled for the new rate, at its
    /// own pitch. Before, playback stopped with "reopen the song".
    #[test]
    fn a_device_at_another_rate_goes_on_after_a_reopen() {
        let _paced = paced();
        let dir = tempfile::tempdir().unwrap();
        let tone = |i: u64, _| (2.0 * std::f64::consts::PI * 440.0 * i as f64 / f64::from(RATE)).sin() as f32 * 0.5;
        let p = float_wav(dir.path().join("tone.wav"), 400_000, tone);
        let (sh, mut cb, reader) =
            start_engine(open_readers(&[p], None).unwrap(), &MixControls::unity(1), RATE, 2).unwrap();
        fill_read_ahead(&mut cb);
        sh.play();
        let before = left(&render_paced(&mut cb, 22_050));
        let f = stemroom_testkit::tone_hz(&before[FADE..], 1, f64::from(RATE));
        assert!((f / 440.0 - 1.0).abs() < 0.002, "{f:.1} Hz at 44.1 kHz");
        let at = sh.position.load(Ordering::Acquire);
        // What `output::reopen` does with the parked callback.
        cb.set_device_rate(48_000);
        sh.change_device_rate(48_000);
        assert_eq!(sh.position.load(Ordering::Acquire), at, "on from the same place");
        // The old place fades out (its chunks go back to the reader), then
        // the reader fills the read-ahead at the new rate before the rest
        // is rendered (the paced callback runs at several times real time:
        // from an empty ring, a loaded machine's reader falls behind it).
        let head = left(&render_paced(&mut cb, 512));
        fill_read_ahead(&mut cb);
        let after = [head, left(&render_paced(&mut cb, 48_000 - 512))].concat();
        let f = stemroom_testkit::tone_hz(&after[4_800..], 1, 48_000.0);
        assert!((f / 440.0 - 1.0).abs() < 0.002, "{f:.1} Hz at 48 kHz: not resampled for the new rate");
        let moved = sh.position.load(Ordering::Acquire) - at;
        assert!((43_000..=44_100).contains(&moved), "1 s at 48 kHz moved {moved} song frames");
        assert_eq!(sh.underrun_frames.load(Ordering::Acquire), 0, "the reader kept up");
        assert!(sh.error.lock().unwrap().is_none());
        sh.stop.store(true, Ordering::Release);
        reader.join().unwrap();
    }

    /// The read-ahead is counted in time, not chunks: a 192 kHz device gets
    /// four times the chunks of a 48 kHz one.
    #[test]
    fn the_read_ahead_lasts_as_long_at_any_device_rate() {
        assert_eq!(chunks_for(44_100), CHUNKS);
        assert_eq!(chunks_for(48_000), CHUNKS);
        assert_eq!(chunks_for(96_000), 2 * CHUNKS);
        assert_eq!(chunks_for(192_000), 4 * CHUNKS);
        for rate in [8_000, 44_100, 48_000, 88_200, 96_000, 176_400, 192_000, 384_000] {
            let seconds = (chunks_for(rate) * CHUNK_FRAMES) as f64 / f64::from(rate);
            assert!(seconds >= 1.36, "{rate} Hz: {seconds:.2} s");
        }
        let _paced = paced();
        let dir = tempfile::tempdir().unwrap();
        let p = float_wav(dir.path().join("a.wav"), 200_000, |i, _| i as f32 / 1e6);
        let (sh, cb, reader) =
            start_engine(open_readers(&[p], None).unwrap(), &MixControls::unity(1), 192_000, 2).unwrap();
        let t0 = std::time::Instant::now();
        while cb.full.slots() < chunks_for(192_000) && t0.elapsed() < Duration::from_secs(10) {
            std::thread::sleep(Duration::from_millis(10));
        }
        assert_eq!(cb.full.slots(), 4 * CHUNKS, "paused, the whole read-ahead fills");
        sh.stop.store(true, Ordering::Release);
        reader.join().unwrap();
    }

    /// A stereo 32-bit float WAV at `path` (44.1 kHz) whose frame `i`,
    /// channel `c` is `f(i, c)`.
    pub(super) fn float_wav(path: PathBuf, frames: u64, f: impl Fn(u64, usize) -> f32) -> PathBuf {
        let spec = hound::WavSpec {
            channels: 2,
            sample_rate: RATE,
            bits_per_sample: 32,
            sample_format: hound::SampleFormat::Float,
        };
        let mut w = hound::WavWriter::create(&path, spec).unwrap();
        for i in 0..frames {
            w.write_sample(f(i, 0)).unwrap();
            w.write_sample(f(i, 1)).unwrap();
        }
        w.finalize().unwrap();
        path
    }

    /// A stereo 32-bit float WAV `name.wav` in `dir` whose frame `i` is `f(i)`
    /// on both channels.
    fn float_stem(dir: &std::path::Path, name: &str, frames: usize, f: impl Fn(usize) -> f32) -> PathBuf {
        float_wav(dir.join(format!("{name}.wav")), frames as u64, |i, _| f(i as usize))
    }

    /// Tempo and transposition through the real-time path: the playhead
    /// moves at the tempo in song time, the pitch moves by the semitones,
    /// with and without resampling to the device; back at 1x the stems play
    /// untouched again; the callback still allocates nothing.
    #[test]
    fn tempo_and_pitch_play_in_song_time() {
        let _paced = paced();
        let dir = tempfile::tempdir().unwrap();
        let p = float_stem(dir.path(), "tone", 10 * RATE as usize, |i| {
            0.5 * (i as f32 * 440.0 * std::f32::consts::TAU / RATE as f32).sin()
        });
        for device_rate in [RATE, 48_000] {
            // Opened at 0.5x, +12 semitones (a change after the start
            // re-reads, and a loaded machine may not have refilled the
            // read-ahead at the new tempo yet: a CI run found it empty).
            let mut c = MixControls::unity(1);
            c.tempo = 0.5;
            c.transpose = 12.0;
            let (sh, mut cb, reader) =
                start_engine(open_readers(std::slice::from_ref(&p), None).unwrap(), &c, device_rate, 2).unwrap();
            // The read-ahead (about 1.5 s) fills: 1 s can then be rendered
            // faster than real time.
            // (until the read-ahead is full, at most 10 s on a loaded machine)
            let t0 = std::time::Instant::now();
            while cb.full.slots() < CHUNKS - 1 && t0.elapsed() < Duration::from_secs(10) {
                std::thread::sleep(Duration::from_millis(20));
            }
            sh.play();
            let second = device_rate as usize;
            let mut out = vec![0.0f32; 2 * second];
            let mut allocations = 0;
            for block in out.chunks_mut(512 * 2) {
                allocations += alloc_count::counting(|| cb.render(block)).1;
            }
            assert_eq!(allocations, 0, "allocations in the audio callback");
            assert_eq!(sh.underrun_frames.load(Ordering::Acquire), 0, "the reader kept up");
            let pos = sh.position.load(Ordering::Acquire) as f64;
            assert!(
                (pos / (0.5 * f64::from(RATE)) - 1.0).abs() < 0.01,
                "{device_rate} Hz: 1 s at 0.5x reached song frame {pos}"
            );
            let f = stemroom_testkit::tone_hz(&left(&out)[second / 4..], 1, f64::from(device_rate));
            assert!((f / 880.0 - 1.0).abs() < 0.01, "{device_rate} Hz: +12 semitones measured {f:.1} Hz");

            // 1.5x at the same pitch (taking over after the old read-ahead's
            // next few chunks: see `a_tempo_change_has_no_gap`).
            c.tempo = 1.5;
            c.transpose = 0.0;
            sh.set_controls(&c);
            render_paced(&mut cb, second / 4);
            let at = sh.position.load(Ordering::Acquire) as f64;
            let before = sh.underrun_frames.load(Ordering::Acquire);
            let out = render_paced(&mut cb, second);
            let gap = sh.underrun_frames.load(Ordering::Acquire) - before;
            assert!(gap < 4096, "{device_rate} Hz: a {gap}-frame gap");
            let played = (second as u64 - gap) as f64 * f64::from(RATE) / f64::from(device_rate);
            let moved = sh.position.load(Ordering::Acquire) as f64 - at;
            assert!(
                (moved / (1.5 * played) - 1.0).abs() < 0.01,
                "{device_rate} Hz: {played} frames at 1.5x moved {moved}"
            );
            let f = stemroom_testkit::tone_hz(&left(&out)[second / 4..], 1, f64::from(device_rate));
            assert!((f / 440.0 - 1.0).abs() < 0.01, "{device_rate} Hz: pitch kept at 1.5x: {f:.1} Hz");
            sh.stop.store(true, Ordering::Release);
            reader.join().unwrap();
        }

        // Back at 1x: sample-exact again.
        let (_dir, sh, mut cb, reader) = engine(100_000);
        let mut c = MixControls::unity(2);
        c.tempo = 0.8;
        sh.set_controls(&c);
        sh.play();
        render(&mut cb, 4000);
        sh.set_controls(&MixControls::unity(2));
        sh.seek(50_000);
        let out = left(&render(&mut cb, 2000 + FADE));
        // After the 0.8x audio's fade out (shorter, or none, where it ran
        // out or never got to play on a loaded machine) and the fade in.
        // The playhead stays at the seek's target while the old place
        // fades out, so what it moved is what was heard of the new one.
        let heard = sh.position.load(Ordering::Acquire) as usize - 50_000;
        let shift = out.len() - heard;
        assert!(shift <= FADE + 2048, "the new place starts {shift} frames late");
        let after = |shift: usize, i: usize| close(out[i], (50_000 + i - shift) as f32 / 1e6 + 0.25);
        let wrong = (shift + FADE + 1..out.len()).find(|&i| !after(shift, i));
        assert_eq!(wrong, None, "untouched at 1x (after a fade out of {shift} frames)");
        sh.stop.store(true, Ordering::Release);
        reader.join().unwrap();
    }

    /// A tempo or pitch change while playing takes over from the old
    /// read-ahead a few chunks ahead without a gap: played in real time,
    /// no underrun, no silence longer than the 10 ms fade out and in, the
    /// playhead never jumps, and the new settings are heard after it.
    #[test]
    fn a_tempo_change_has_no_gap() {
        // 0.75x, a fifth up: stretched and transposed.
        tempo_changes_have_no_gap(&[(30, 0.75, 7.0)]);
    }

    /// A second change while the first one's switch is still ahead (two
    /// clicks on the transpose button, 35 ms apart): the old read-ahead
    /// plays on to the first switch, the newest settings take over there.
    #[test]
    fn a_second_change_before_the_first_switch_has_no_gap() {
        tempo_changes_have_no_gap(&[(30, 1.0, 1.0), (33, 1.0, 2.0)]);
    }

    /// Play a 440 Hz tone at device pace, change tempo and transposition at
    /// the given blocks (`(block, tempo, semitones)`), and check: no
    /// underrun, no 5 ms of near-silence, a playhead that moves forward by
    /// at most one block's song frames per block, and after the last switch
    /// the last settings' pitch and speed.
    fn tempo_changes_have_no_gap(changes: &[(usize, f32, f32)]) {
        let _paced = paced();
        let dir = tempfile::tempdir().unwrap();
        let p = float_stem(dir.path(), "tone", 10 * RATE as usize, |i| {
            0.5 * (i as f32 * 440.0 * std::f32::consts::TAU / RATE as f32).sin()
        });
        let &(_, last_tempo, last_transpose) = changes.last().unwrap();
        let attempt = || -> Result<(), String> {
            let mut c = MixControls::unity(1);
            let (sh, mut cb, reader) =
                start_engine(open_readers(std::slice::from_ref(&p), None).unwrap(), &c, RATE, 2).unwrap();
            let t0 = std::time::Instant::now();
            while cb.full.slots() < CHUNKS - 1 && t0.elapsed() < Duration::from_secs(10) {
                std::thread::sleep(Duration::from_millis(20));
            }
            sh.play();
            // 512 frames every 11.6 ms, as a device takes them.
            let block = 512;
            let period = Duration::from_secs_f64(block as f64 / f64::from(RATE));
            let mut out = Vec::new();
            let mut positions = Vec::new();
            let mut changed_at = None;
            let start = std::time::Instant::now();
            for k in 0..(2 * RATE as usize / block) {
                for &(at, tempo, transpose) in changes {
                    if k == at {
                        c.tempo = tempo;
                        c.transpose = transpose;
                        sh.set_controls(&c);
                        changed_at = Some(out.len() / 2);
                    }
                }
                let mut buf = vec![0.0f32; 2 * block];
                cb.render(&mut buf);
                out.extend_from_slice(&buf);
                positions.push(sh.position.load(Ordering::Acquire));
                let due = start + period * (k as u32 + 1);
                std::thread::sleep(due.saturating_duration_since(std::time::Instant::now()));
            }
            let underruns = sh.underrun_frames.load(Ordering::Acquire);
            sh.stop.store(true, Ordering::Release);
            reader.join().unwrap();
            if underruns > 0 {
                return Err(format!("{underruns} frames of underrun around the change"));
            }
            let l = left(&out);
            let fade = FADE as f64 / f64::from(RATE);
            // The quietest 5 ms anywhere after the start's fade in: the
            // switch's dip (fade out, fade in) is well under 5 ms near zero.
            let window = RATE as usize / 200;
            let quietest = l[FADE..]
                .windows(window)
                .step_by(16)
                .map(|w| w.iter().fold(0.0f32, |m, x| m.max(x.abs())))
                .fold(f32::MAX, f32::min);
            if quietest < 0.02 {
                return Err(format!("a {window}-frame stretch of silence (peak {quietest}): a gap at the change"));
            }
            // The playhead moves on every block (no jump back, no jump
            // ahead of more than a block at 1x).
            for w in positions.windows(2) {
                if w[1] <= w[0] || w[1] - w[0] > block as u64 + 1 {
                    return Err(format!("the playhead went from {} to {}", w[0], w[1]));
                }
            }
            // After the switch (within SWITCH_CHUNKS chunks and a fade):
            // the last pitch and speed.
            let after = changed_at.unwrap()
                + transport::SWITCH_CHUNKS * CHUNK_FRAMES
                + (fade * 2.0 * f64::from(RATE)) as usize
                + 512;
            let f = stemroom_testkit::tone_hz(&l[after..], 1, f64::from(RATE));
            let want = 440.0 * 2f64.powf(f64::from(last_transpose) / 12.0);
            if (f / want - 1.0).abs() > 0.01 {
                return Err(format!("after the change {f:.1} Hz, want {want:.1}"));
            }
            let blocks_after = positions.len() - (after / block + 1);
            let moved = (positions[positions.len() - 1] - positions[after / block]) as f64;
            let rate = moved / (blocks_after * block) as f64;
            if (rate - f64::from(last_tempo)).abs() > 0.01 {
                return Err(format!("the playhead moved at {rate:.3}x after the change"));
            }
            Ok(())
        };
        // The pace depends on this host's scheduling: once more before failing.
        if let Err(first) = attempt() {
            eprintln!("first attempt: {first}");
            attempt().unwrap();
        }
    }

    /// Onsets (in frames) of the clicks in a left channel that is silent
    /// otherwise: the first sample above 0.05 after at least 10 ms of quiet.
    fn onsets(x: &[f32]) -> Vec<usize> {
        let mut out = Vec::new();
        let mut quiet = usize::MAX / 2;
        for (i, v) in x.iter().enumerate() {
            if v.abs() > 0.05 {
                if quiet >= 441 {
                    out.push(i);
                }
                quiet = 0;
            } else {
                quiet += 1;
            }
        }
        out
    }

    /// A starved reader (an underrun while playing): the chunk that comes
    /// after the silence fades in instead of starting at full level (a
    /// click), and a pause during the silence stays silent when chunks come
    /// (nothing leaks out under the pause's fade). The chunks come by hand
    /// here, through rings of the test's own in place of the reader's.
    #[test]
    fn after_an_underrun_audio_fades_in_and_a_pause_stays_silent() {
        let (_dir, sh, mut cb, reader) = silent_engine(RATE as usize, &MixControls::unity(1));
        sh.stop.store(true, Ordering::Release);
        reader.join().unwrap();
        let (mut full, consumer) = rtrb::RingBuffer::new(4);
        let (producer, _free) = rtrb::RingBuffer::new(8);
        cb.full = consumer;
        cb.free = producer;
        let generation = sh.generation.load(Ordering::Acquire);
        let chunk = |start: u64| Chunk {
            generation,
            start,
            frames: CHUNK_FRAMES,
            ratio: 1.0,
            end: false,
            wait: false,
            data: vec![0.5f32; CHUNK_FRAMES * 2].into_boxed_slice(),
        };
        sh.play();
        // Before the first chunk (the reader still reading from where play
        // starts): silence, and no audio was cut, so no underrun.
        let mut buf = vec![0.0f32; 2 * 512];
        cb.render(&mut buf);
        assert!(buf.iter().all(|&v| v == 0.0));
        assert_eq!(sh.underrun_frames.load(Ordering::Acquire), 0, "waiting for the first chunk");
        assert_eq!(sh.reading_frames.load(Ordering::Acquire), 512);
        let mut buf = vec![0.0f32; 2 * (CHUNK_FRAMES + 512)];
        assert!(full.push(chunk(0)).is_ok());
        cb.render(&mut buf);
        let l = left(&buf);
        assert!((l[CHUNK_FRAMES - 1] - 0.5).abs() < 1e-6, "played at full level: {}", l[CHUNK_FRAMES - 1]);
        assert!(l[CHUNK_FRAMES..].iter().all(|&v| v == 0.0), "then the underrun's silence");
        assert!(sh.underrun_frames.load(Ordering::Acquire) > 0);

        assert!(full.push(chunk(CHUNK_FRAMES as u64)).is_ok());
        let mut buf = vec![0.0f32; 2 * 1024];
        cb.render(&mut buf);
        let l = left(&buf);
        assert!(l[0] < 0.5 * 2.0 / FADE as f32, "fades in after the underrun: starts at {}", l[0]);
        assert!(l.windows(2).take(FADE).all(|w| w[1] >= w[0]), "a ramp");
        assert!((l[FADE + 10] - 0.5).abs() < 1e-6, "full level after the fade: {}", l[FADE + 10]);

        // Starved again, then paused: the chunks that come play nothing.
        let mut buf = vec![0.0f32; 2 * CHUNK_FRAMES];
        cb.render(&mut buf);
        sh.playing.store(false, Ordering::Release);
        let at = sh.position.load(Ordering::Acquire);
        assert!(full.push(chunk(2 * CHUNK_FRAMES as u64)).is_ok());
        let mut buf = vec![0.0f32; 2 * 1024];
        cb.render(&mut buf);
        assert!(buf.iter().all(|&v| v == 0.0), "silent while paused");
        assert_eq!(sh.position.load(Ordering::Acquire), at, "the paused playhead stays");

        sh.play();
        // A seek: until the new place's first chunk, the ring is empty
        // without an underrun; once it has played, running dry is one.
        let counted = sh.underrun_frames.load(Ordering::Acquire);
        let reading = sh.reading_frames.load(Ordering::Acquire);
        sh.seek(0);
        let generation = sh.generation.load(Ordering::Acquire);
        let mut buf = vec![0.0f32; 2 * CHUNK_FRAMES];
        cb.render(&mut buf);
        assert_eq!(sh.underrun_frames.load(Ordering::Acquire), counted, "the seek's wait is no underrun");
        assert_eq!(sh.reading_frames.load(Ordering::Acquire), reading + CHUNK_FRAMES as u64, "but counted as a wait");
        let mut c = chunk(0);
        c.generation = generation;
        assert!(full.push(c).is_ok());
        cb.render(&mut buf);
        cb.render(&mut buf);
        assert!(sh.underrun_frames.load(Ordering::Acquire) > counted, "dry after the seek's audio");
    }

    /// A silent stem: the clicks are all that is heard.
    fn silent_engine(
        frames: usize,
        controls: &MixControls,
    ) -> (tempfile::TempDir, Arc<Shared>, Callback, JoinHandle<()>) {
        let dir = tempfile::tempdir().unwrap();
        let p = float_stem(dir.path(), "silence", frames, |_| 0.0);
        let (sh, cb, reader) = start_engine(open_readers(&[p], None).unwrap(), controls, RATE, 2).unwrap();
        (dir, sh, cb, reader)
    }

    /// Render `frames` frames in 512-frame buffers, letting the reader keep up.
    pub(super) fn render_paced(cb: &mut Callback, frames: usize) -> Vec<f32> {
        let mut out = vec![0.0f32; 2 * frames];
        let mut allocations = 0;
        for block in out.chunks_mut(2 * 512) {
            std::thread::sleep(Duration::from_millis(2));
            allocations += alloc_count::counting(|| cb.render(block)).1;
        }
        assert_eq!(allocations, 0, "allocations in the audio callback");
        out
    }

    /// The click track falls on the song's beats (in song time, so at half
    /// speed on the output's doubled times), and the count-in plays one bar
    /// of clicks before the song starts, the playhead held meanwhile.
    #[test]
    fn clicks_follow_the_beat_grid_and_the_count_in_comes_first() {
        let _paced = paced();
        let grid = Some(BeatGrid { bpm: 120.0, offset_seconds: 0.1 });
        for tempo in [1.0f32, 0.5] {
            let mut c = MixControls::unity(1);
            c.metronome = true;
            c.tempo = tempo;
            let (_dir, sh, mut cb, reader) = silent_engine(5 * RATE as usize, &c);
            sh.set_beat_grid(grid);
            fill_read_ahead(&mut cb);
            sh.play();
            let out = left(&render_paced(&mut cb, 3 * RATE as usize));
            let got: Vec<f64> = onsets(&out).iter().map(|&i| i as f64 / f64::from(RATE)).collect();
            // Song beats at 0.1, 0.6, 1.1 … s, heard at song time / tempo.
            let want: Vec<f64> =
                (0..).map(|k| (0.1 + 0.5 * f64::from(k)) / f64::from(tempo)).take_while(|&t| t < 2.99).collect();
            assert_eq!(got.len(), want.len(), "{tempo}x: clicks at {got:?}, want {want:?}");
            for (g, w) in got.iter().zip(&want) {
                assert!((g - w).abs() < 0.003, "{tempo}x: click at {g:.4} s, want {w:.4} s");
            }
            sh.stop.store(true, Ordering::Release);
            reader.join().unwrap();
        }

        // A grid whose first beat is the song's first frame, played from
        // there: that beat clicks too (the first frame played has no beat
        // before it to compare with).
        let mut c = MixControls::unity(1);
        c.metronome = true;
        let (_dir, sh, mut cb, reader) = silent_engine(5 * RATE as usize, &c);
        sh.set_beat_grid(Some(BeatGrid { bpm: 120.0, offset_seconds: 0.0 }));
        fill_read_ahead(&mut cb);
        sh.play();
        let clicks = onsets(&left(&render_paced(&mut cb, RATE as usize)));
        assert!(clicks.len() == 2 && clicks[0] < 300 && clicks[1].abs_diff(22_050) <= 2, "{clicks:?}");
        sh.stop.store(true, Ordering::Release);
        reader.join().unwrap();

        // Count-in on a constant 0.25 stem: clicks at 0, 0.5, 1, 1.5 s,
        // then the song from its first frame at 1.9 s, so that its first
        // beat (0.1 s in) falls at 2 s, where a fifth click would.
        let (_dir, sh, mut cb, reader) = engine(5 * RATE as usize);
        let mut c = MixControls::unity(2);
        c.stems[0].mute = true;
        c.count_in = true;
        sh.set_controls(&c);
        sh.set_beat_grid(grid);
        fill_read_ahead(&mut cb);
        sh.play();
        let out = left(&render_paced(&mut cb, RATE as usize));
        assert!(sh.counting_in.load(Ordering::Acquire), "counting in");
        assert_eq!(sh.position.load(Ordering::Acquire), 0, "the song waits for the count-in");
        let out = [out, left(&render_paced(&mut cb, 3 * RATE as usize / 2))].concat();
        let clicks = onsets(&out[..19 * RATE as usize / 10]);
        // (a click's sine starts at 0: its first audible sample is the next)
        let want = [0, 22_050, 44_100, 66_150];
        assert!(
            clicks.len() == 4 && clicks.iter().zip(want).all(|(c, w)| c.abs_diff(w) <= 2),
            "one bar at 120 BPM: {clicks:?}"
        );
        let song = 19 * RATE as usize / 10;
        assert!(out[song - 10..song].iter().all(|v| v.abs() < 1e-6), "silent before 1.9 s");
        assert!(out[song..song + 400].iter().all(|v| v.abs() < 0.25), "the song fades in at 1.9 s");
        assert!(out[song + FADE + 10..].iter().all(|v| close(*v, 0.25)), "then plays");
        assert!(!sh.counting_in.load(Ordering::Acquire));
        let pos = sh.position.load(Ordering::Acquire);
        assert!(pos.abs_diff(6 * RATE as u64 / 10) < 600, "0.6 s of the song played: {pos}");
        sh.stop.store(true, Ordering::Release);
        reader.join().unwrap();
    }

    /// A loop whose start falls inside a beat: the click track clicks on
    /// the beats only, not at every wrap; and a player that takes over
    /// mid-song (`hand_over`) starts without the count-in.
    #[test]
    fn a_loop_wrap_is_no_beat_and_a_take_over_has_no_count_in() {
        let _paced = paced();
        let grid = Some(BeatGrid { bpm: 120.0, offset_seconds: 0.1 });
        let mut c = MixControls::unity(1);
        c.metronome = true;
        let (_dir, sh, mut cb, reader) = silent_engine(5 * RATE as usize, &c);
        sh.set_beat_grid(grid);
        // 0.35 s to 1.35 s: the beats at 0.6 and 1.1 s inside.
        let at = |t: f64| (t * f64::from(RATE)).round() as u32;
        sh.set_loop(Some(LoopRegion { start: at(0.35), end: at(1.35) }));
        fill_read_ahead(&mut cb);
        sh.play();
        let out = left(&render_paced(&mut cb, 3 * RATE as usize));
        let got: Vec<f64> = onsets(&out).iter().map(|&i| i as f64 / f64::from(RATE)).collect();
        // Song time 0.1, 0.6, 1.1; wrap at 1.35 s to 0.35: 0.6 at 1.6 s …
        // On a loaded machine the song may start a few buffers late (the
        // playhead held while the reader catches up: a CI run heard every
        // click 512 frames late); the clicks keep their spacing from there.
        let want = [0.1, 0.6, 1.1, 1.6, 2.1, 2.6];
        let lead = got.first().map_or(0.0, |g| g - want[0]);
        assert!(
            got.len() == want.len()
                && (-0.003..4.0 * 512.0 / f64::from(RATE) + 0.003).contains(&lead)
                && got.iter().zip(want).all(|(g, w)| (g - w - lead).abs() < 0.003),
            "clicks at {got:?}, want {want:?}"
        );
        sh.stop.store(true, Ordering::Release);
        reader.join().unwrap();

        let mut c = MixControls::unity(2);
        c.count_in = true;
        let (_dir, sh, mut cb, reader) = engine(5 * RATE as usize);
        sh.set_controls(&c);
        sh.set_beat_grid(grid);
        fill_read_ahead(&mut cb);
        sh.skip_count_in.store(true, Ordering::Release);
        sh.play();
        render_paced(&mut cb, RATE as usize / 2);
        assert!(!sh.counting_in.load(Ordering::Acquire));
        assert!(sh.position.load(Ordering::Acquire) > 0, "the song goes on at once");
        // The next Play pressed counts in again.
        sh.playing.store(false, Ordering::Release);
        render_paced(&mut cb, 1024);
        sh.play();
        render_paced(&mut cb, 1024);
        assert!(sh.counting_in.load(Ordering::Acquire), "Play pressed: one bar first");
        sh.stop.store(true, Ordering::Release);
        reader.join().unwrap();
    }
}

//! Crash-resumable jobs. With [`Checkpointing`] a job keeps, in its own
//! folder:
//! - `stems.f32`: every frame the separator finished, as the stem sink got
//!   it (model rate, frame-interleaved `[frame][source][channel]` `f32`,
//!   little-endian), appended as frames come out;
//!   (flushed after every block, so it can be played while the job runs:
//!   [`super::stream`]);
//! - `stream.json`: how to read `stems.f32` ([`super::stream::StreamLayout`]);
//! - `state.bin`: at most every [`Checkpointing::every`], the separation's
//!   [`Checkpoint`] (how far the schedule went, the shift passes'
//!   overlap-add windows), after `stems.f32` was synced to disk, written
//!   under a temporary name, synced and renamed in, with a header naming
//!   the input's size, the decoded mixture the network reads (SHA-256 of
//!   its samples, taken as it is spooled: another file, decoder or
//!   resampler, such as ffmpeg installed since, gives other samples), the
//!   model and the options, and a SHA-256 of the whole. (The input file is
//!   not hashed again: the mixture's hash already says whether the network
//!   would read the same samples, and hashing a long file took seconds
//!   that no cancel could stop.)
//!
//! A job started again after a `kill -9`, a crash or a power loss finds
//! them, replays `stems.f32` up to the saved frame into fresh encoders
//! (encoding is cheap next to the network) and resumes the separation at
//! the saved segment, so at most one checkpoint interval of network work is
//! done twice, and the stems are the ones an uninterrupted run writes, to
//! the bit, on the same execution provider. The provider is not part of the
//! match: a job resumed on another (the CUDA build installed since, or the
//! GPU gone) keeps its saved work, its stems joining segments of both
//! (58-70 dB apart, measured on an H200 against the CPU).
//! A state that does not match (another input, model or options,
//! a damaged file) is discarded and the job starts from the beginning.
//!
//! Disk: `stems.f32` takes sources × channels × 4 bytes per frame, 1.4 MB
//! per second of audio for htdemucs (340 MB for 4 minutes); both files are
//! removed when the job ends. If the folder cannot be written (disk full),
//! the job goes on without checkpoints.

use std::fs::{File, OpenOptions};
use std::io::{BufWriter, Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use sha2::{Digest, Sha256};

use super::sink::StemSink;
use crate::separate::{BlockSink, Checkpoint, ResumeState, SeparateOptions};
use crate::Error;

/// Where and how often a job saves its state.
#[derive(Debug, Clone)]
pub struct Checkpointing {
    /// The job's own folder for `stems.f32` and `state.bin` (created if
    /// missing; nothing else may live there).
    pub dir: PathBuf,
    /// Least time between two saves ([`DEFAULT_EVERY`] in the app).
    pub every: Duration,
    /// Leave the saved state after the job succeeds, for the caller to
    /// remove once it has recorded the stems ([`discard`]): a failure or a
    /// stop in between resumes from its last save (the stems written again
    /// from the saved sources; what came after the last save, at most
    /// [`Checkpointing::every`], separated again) instead of separating the
    /// whole song again.
    pub keep_when_done: bool,
}

/// Remove a job's saved state and stems (what [`Checkpointing::keep_when_done`]
/// left); the folder stays.
pub fn discard(dir: &Path) {
    clear(dir);
}

/// Default interval between saves: a crash costs at most this much
/// separation work again, and each save writes ~19 MB of state per shift
/// pass (htdemucs) plus a sync.
pub const DEFAULT_EVERY: Duration = Duration::from_secs(20);

const STEMS_FILE: &str = super::stream::STEMS_FILE;
const STATE_FILE: &str = "state.bin";
const STATE_TMP: &str = "state.bin.tmp";
/// Frames replayed per block.
const REPLAY_FRAMES: usize = 65_536;

/// What a saved state must match to be resumed: the input's size, the
/// decoded mixture's samples, the model and every option that changes the
/// network's input or schedule.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub(super) struct Fingerprint {
    format: u32,
    input_bytes: u64,
    /// SHA-256 of the mixture as spooled (model rate, interleaved `f32`).
    mixture_sha256: String,
    model: String,
    model_sha256: String,
    mixture_frames: usize,
    shifts: usize,
    overlap: f32,
    segment_frames: Option<usize>,
    seed: u64,
}

impl Fingerprint {
    /// # Errors
    /// The input's size cannot be read (a drive unplugged since it was
    /// decoded), as [`crate::audio::decode::DecodeError::Unreadable`].
    pub(super) fn new(
        input: &Path,
        model: &crate::model::ModelInfo,
        (mixture_frames, mixture_sha256): (usize, &str),
        opts: &SeparateOptions,
    ) -> Result<Self, Error> {
        let io =
            |source| Error::Decode(crate::audio::decode::DecodeError::Unreadable { path: input.to_path_buf(), source });
        let input_bytes = std::fs::metadata(input).map_err(io)?.len();
        Ok(Fingerprint {
            // 3: strides as Demucs computes them (one frame apart from
            // format 2's at some overlaps: its saved states do not fit).
            format: 3,
            input_bytes,
            mixture_sha256: mixture_sha256.to_string(),
            model: model.id.clone(),
            model_sha256: model.sha256.clone(),
            mixture_frames,
            shifts: opts.shifts,
            overlap: opts.overlap,
            segment_frames: opts.segment_frames,
            seed: opts.seed,
        })
    }
}

/// The saved state in `dir` if it matches `fp`, fits a separation of
/// `frames` mixture frames with `info` and `opts`, and `stems.f32` holds
/// every frame it counts; else `None` (and the reason is logged), so the
/// job starts over instead of failing.
pub(super) fn load(
    dir: &Path,
    fp: &Fingerprint,
    (info, frames, opts): (&crate::model::ModelInfo, usize, &SeparateOptions),
) -> Option<ResumeState> {
    let bytes = std::fs::read(dir.join(STATE_FILE)).ok()?;
    let k_n = info.sources.len() * info.channels;
    let why = match parse(bytes, fp).and_then(|state| state.check(info, frames, opts).map(|()| state)) {
        Ok(state) => {
            let have = std::fs::metadata(dir.join(STEMS_FILE)).map(|m| m.len()).unwrap_or(0);
            if have >= (state.emitted * k_n * 4) as u64 {
                return Some(state);
            }
            format!("{} holds {have} bytes, fewer than the state counts", STEMS_FILE)
        }
        Err(e) => e,
    };
    tracing::warn!("not resuming from {}: {why}", dir.display());
    None
}

fn parse(bytes: Vec<u8>, fp: &Fingerprint) -> Result<ResumeState, String> {
    let (body, sum) = bytes.split_last_chunk::<32>().ok_or("state file cut short")?;
    if Sha256::digest(body).as_slice() != sum {
        return Err("state file damaged (checksum)".into());
    }
    let (len, rest) = body.split_first_chunk::<4>().ok_or("state file cut short")?;
    let len = u32::from_le_bytes(*len) as usize;
    let (header, state) = rest.split_at_checked(len).ok_or("state file cut short")?;
    let saved: Fingerprint = serde_json::from_slice(header).map_err(|e| format!("state header: {e}"))?;
    if &saved != fp {
        return Err("saved for another input, model or options".into());
    }
    ResumeState::parse(state.to_vec())
}

/// Whether `dir` holds a saved state (`state.bin`), so a job run again
/// with the same input, model and options resumes from it. (Whether it
/// fits is decided only then: [`load`].)
pub fn saved(dir: &Path) -> bool {
    dir.join(STATE_FILE).is_file()
}

/// Remove the saved state and stems of `dir` (kept: the folder).
pub(super) fn clear(dir: &Path) {
    for f in [STATE_FILE, STATE_TMP, STEMS_FILE, super::stream::LAYOUT_FILE, super::stream::LAYOUT_TMP] {
        let _ = std::fs::remove_file(dir.join(f));
    }
}

/// Feed `stems.f32`'s first `frames` frames to `sink` as the separator
/// would (planar blocks), so its encoders are where they were at the save.
///
/// Stops with [`Error::Cancelled`] between blocks once `cancelled` says so
/// (a long song's replay encodes minutes of stems).
///
/// # Errors
/// [`Error::Scratch`] when `stems.f32` cannot be read; when it is shorter
/// than the state says (cut behind the job's back) the saved state is
/// removed with it, so the next try starts over instead of failing the same
/// way; the sink's errors; [`Error::Cancelled`].
pub(super) fn replay(
    dir: &Path,
    frames: usize,
    k_n: usize,
    sink: &mut StemSink<'_>,
    cancelled: &dyn Fn() -> bool,
) -> Result<(), Error> {
    let path = dir.join(STEMS_FILE);
    let io = |source: std::io::Error| {
        // Shorter than its state says (cut behind the job's back): it can
        // never be replayed. Any other error (a network share's passing
        // failure) keeps it for the next try.
        let message = if source.kind() == std::io::ErrorKind::UnexpectedEof {
            tracing::warn!("the saved stems {} are cut short: the saved state is removed", path.display());
            clear(dir);
            format!(
                "the saved progress {} is cut short ({source}); it is discarded, so the next try starts over",
                path.display()
            )
        } else {
            format!("cannot read the saved progress {} ({source}); the next try resumes from it", path.display())
        };
        Error::Scratch(std::io::Error::new(source.kind(), message))
    };
    let mut f = File::open(&path).map_err(io)?;
    let mut bytes = vec![0u8; REPLAY_FRAMES * k_n * 4];
    let mut planar = vec![0.0f32; REPLAY_FRAMES * k_n];
    let mut start = 0;
    while start < frames {
        if cancelled() {
            return Err(Error::Cancelled);
        }
        let n = (frames - start).min(REPLAY_FRAMES);
        f.read_exact(&mut bytes[..n * k_n * 4]).map_err(io)?;
        for (j, frame) in bytes[..n * k_n * 4].chunks_exact(k_n * 4).enumerate() {
            for (k, v) in frame.chunks_exact(4).enumerate() {
                planar[k * n + j] = f32::from_le_bytes([v[0], v[1], v[2], v[3]]);
            }
        }
        sink.write(start, n, &planar[..n * k_n])?;
        start += n;
    }
    Ok(())
}

/// Appends finished frames to `stems.f32` and saves the state when due.
pub(super) struct Saver {
    dir: PathBuf,
    every: Duration,
    last: Instant,
    header: Vec<u8>,
    stems: Option<BufWriter<File>>,
    k_n: usize,
    bytes: Vec<u8>,
    /// States saved so far.
    pub(super) saves: usize,
}

impl Saver {
    /// Start saving into `c.dir`, keeping the first `emitted` frames of a
    /// resumed run's `stems.f32` (and dropping anything after them). `None`
    /// (logged) when the folder cannot be written: the job goes on without.
    pub(super) fn open(c: &Checkpointing, fp: &Fingerprint, emitted: usize, k_n: usize) -> Option<Saver> {
        let opened = (|| -> std::io::Result<BufWriter<File>> {
            std::fs::create_dir_all(&c.dir)?;
            let mut f = OpenOptions::new().create(true).write(true).truncate(false).open(c.dir.join(STEMS_FILE))?;
            let keep = (emitted * k_n * 4) as u64;
            f.set_len(keep)?;
            f.seek(SeekFrom::Start(keep))?;
            Ok(BufWriter::with_capacity(1 << 20, f))
        })();
        match opened {
            Ok(stems) => Some(Saver {
                dir: c.dir.clone(),
                every: c.every,
                last: Instant::now(),
                header: serde_json::to_vec(fp).unwrap_or_default(),
                stems: Some(stems),
                k_n,
                bytes: Vec::new(),
                saves: 0,
            }),
            Err(e) => {
                tracing::warn!("job checkpoints off: cannot write {}: {e}", c.dir.display());
                None
            }
        }
    }

    /// Stop saving after an I/O error: remove what is there, so that no
    /// stale state is ever resumed, and go on without.
    fn give_up(&mut self, e: &std::io::Error) {
        tracing::warn!("job checkpoints off: {}: {e}", self.dir.display());
        self.stems = None;
        clear(&self.dir);
    }

    fn append(&mut self, frames: usize, stems: &[f32]) {
        let Some(w) = self.stems.as_mut() else { return };
        self.bytes.clear();
        for j in 0..frames {
            for k in 0..self.k_n {
                self.bytes.extend_from_slice(&stems[k * frames + j].to_le_bytes());
            }
        }
        // Flushed block by block (one per segment), so the separated part
        // can be listened to while the job runs (module `stream`).
        if let Err(e) = w.write_all(&self.bytes).and_then(|()| w.flush()) {
            self.give_up(&e);
        }
    }

    fn save(&mut self, state: &Checkpoint<'_>) {
        if self.stems.is_none() || self.last.elapsed() < self.every || state.steps_done == state.total_steps {
            return;
        }
        if let Err(e) = self.try_save(state) {
            self.give_up(&e);
        }
        self.last = Instant::now();
    }

    fn try_save(&mut self, state: &Checkpoint<'_>) -> std::io::Result<()> {
        if let Some(w) = self.stems.as_mut() {
            w.flush()?;
            w.get_ref().sync_data()?;
        }
        // Written and hashed piece by piece: the state (~19 MB per shift
        // pass) is held once, not copied into a second buffer.
        let len = (self.header.len() as u32).to_le_bytes();
        let saved = state.save();
        let mut sum = Sha256::new();
        let tmp = self.dir.join(STATE_TMP);
        let mut f = File::create(&tmp)?;
        for piece in [&len[..], &self.header, &saved] {
            sum.update(piece);
            f.write_all(piece)?;
        }
        drop(saved);
        f.write_all(&sum.finalize())?;
        f.sync_all()?;
        drop(f);
        std::fs::rename(&tmp, self.dir.join(STATE_FILE))?;
        File::open(&self.dir)?.sync_all()?;
        self.saves += 1;
        Ok(())
    }
}

/// The stem sink with a [`Saver`] beside it.
pub(super) struct SavingSink<'a, 'b> {
    pub(super) inner: &'a mut StemSink<'b>,
    pub(super) saver: Option<Saver>,
}

impl BlockSink for SavingSink<'_, '_> {
    fn write(&mut self, start: usize, frames: usize, stems: &[f32]) -> Result<(), Error> {
        self.inner.write(start, frames, stems)?;
        if let Some(s) = self.saver.as_mut() {
            s.append(frames, stems);
        }
        Ok(())
    }

    fn checkpoint(&mut self, state: &Checkpoint<'_>) -> Result<(), Error> {
        if let Some(s) = self.saver.as_mut() {
            s.save(state);
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn saved_stems_that_cannot_be_read_remove_the_state_so_the_next_try_starts_over() {
        let dir = tempfile::tempdir().unwrap();
        // A state that counts 100 frames, and a stems file shortened to 10
        // behind the job's back (after `load` checked its length).
        std::fs::write(dir.path().join(STATE_FILE), b"state").unwrap();
        std::fs::write(dir.path().join(STEMS_FILE), vec![0u8; 10 * 8 * 4]).unwrap();
        let mut outputs = Vec::new();
        let mut sink = StemSink {
            outputs: &mut outputs,
            sources: 0,
            chosen: None,
            other: super::super::OtherMethod::None,
            mix: None,
            mix_buf: Vec::new(),
            block: Vec::new(),
            resampled: Vec::new(),
        };
        let e = replay(dir.path(), 100, 8, &mut sink, &|| false).expect_err("cut short");
        assert!(matches!(e, Error::Scratch(_)), "{e}");
        assert!(e.to_string().contains("next try starts over"), "{e}");
        assert!(!saved(dir.path()) && !dir.path().join(STEMS_FILE).exists(), "the state is gone");
        // Another error (a missing file here, a share's passing failure
        // there) keeps what is there.
        std::fs::write(dir.path().join(STATE_FILE), b"state").unwrap();
        let e = replay(dir.path(), 100, 8, &mut sink, &|| false).expect_err("no stems file");
        assert!(e.to_string().contains("resumes from it") && saved(dir.path()), "{e}");
    }
}

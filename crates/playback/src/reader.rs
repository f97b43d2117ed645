//! The lock-step stem reader: a song's stems decoded side by side so that
//! every read gives each stem the same frames. The player's reader thread
//! and exports both read through it.
//!
//! Frames are at the stems' own sample rate, interleaved stereo `f32`
//! (every decoder folds its input to stereo). A stem that ends before the
//! others is padded with silence.
//!
//! A set can also read the stems of a job that is still separating
//! ([`StemSet::open_growing`]): the separated part so far, growing as
//! segments finish, with the song's full length declared; the original
//! mixture can be read beside it as one more stem ([`StemSet::with_original`]),
//! up to the same edge.

use std::fs::File;
use std::io::{Read, Seek, SeekFrom};
use std::path::Path;

use stemroom_engine::audio::decode::{DecodeError, StreamDecoder};
use stemroom_engine::job::stream::{self, StreamLayout};

/// One stem's decoder with the frames decoded but not yet used.
struct StemReader {
    path: std::path::PathBuf,
    decoder: StreamDecoder,
    pending: Vec<f32>,
    used: usize,
    eof: bool,
    /// A read or seek that fails ends this stem (silence from there, with
    /// a warning in the log) instead of failing the whole set: the original
    /// mixture for A/B, the user's own file (a damaged region, a drive
    /// unplugged), must not stop the stems, which play even while it is
    /// muted.
    soft: bool,
}

impl StemReader {
    fn open(path: &Path) -> Result<Self, DecodeError> {
        Ok(StemReader {
            path: path.to_path_buf(),
            decoder: StreamDecoder::open(path)?,
            pending: Vec::new(),
            used: 0,
            eof: false,
            soft: false,
        })
    }

    /// The stem ended by `e` when it is [`StemReader::soft`], else `e`.
    fn soften(&mut self, e: DecodeError) -> Result<(), DecodeError> {
        if !self.soft {
            return Err(e);
        }
        if !self.eof {
            tracing::warn!("{}: {e}; silent from here", self.path.display());
        }
        self.pending.clear();
        self.used = 0;
        self.eof = true;
        Ok(())
    }

    /// [`StemReader::seek_strict`], ending a soft stem on failure.
    fn seek(&mut self, frame: u64, give_up: &dyn Fn() -> bool) -> Result<bool, DecodeError> {
        match self.seek_strict(frame, give_up) {
            Err(e) => self.soften(e).map(|()| true),
            done => done,
        }
    }

    /// Continue from `frame`. Where the stream cannot seek there (WebM and
    /// Matroska declare no length, and symphonia's demuxer refuses a seek
    /// into their last second; a container without an index), it is
    /// decoded from the start and everything before `frame` dropped: slower
    /// (the reader thread's time, not the device's), never a dead end; it
    /// stops as soon as `give_up` says so (a newer seek, the player
    /// closing), returning `false` with the stem at no particular place. A
    /// target past the end leaves the stem ended.
    fn seek_strict(&mut self, frame: u64, give_up: &dyn Fn() -> bool) -> Result<bool, DecodeError> {
        self.pending.clear();
        self.used = 0;
        self.eof = false;
        if let Err(e) = self.decoder.seek(frame) {
            tracing::debug!("{}: {e}; decoding from the start up to frame {frame}", self.path.display());
            self.decoder = StreamDecoder::open(&self.path)?;
            let mut left = frame.saturating_mul(2);
            while left > 0 {
                if give_up() {
                    return Ok(false);
                }
                let Some((block, _)) = self.decoder.next_block()? else {
                    self.eof = true;
                    break;
                };
                let n = block.len() as u64;
                if n <= left {
                    left -= n;
                } else {
                    // `left` < `n`, a block's length: fits in usize.
                    self.pending.extend_from_slice(&block[left as usize..]);
                    left = 0;
                }
            }
        }
        Ok(true)
    }

    /// Fill `dst` (interleaved stereo) from the stream; returns the frames
    /// written (fewer only at the end of the stream).
    fn read(&mut self, dst: &mut [f32]) -> Result<usize, DecodeError> {
        let mut at = 0;
        while at < dst.len() {
            if self.used == self.pending.len() {
                if self.eof {
                    break;
                }
                match self.decoder.next_block() {
                    Ok(Some((block, _))) => {
                        self.pending.clear();
                        self.pending.extend_from_slice(block);
                        self.used = 0;
                    }
                    Ok(None) => {
                        self.eof = true;
                        break;
                    }
                    Err(e) => {
                        self.soften(e)?;
                        break;
                    }
                }
            }
            let n = (self.pending.len() - self.used).min(dst.len() - at);
            dst[at..at + n].copy_from_slice(&self.pending[self.used..self.used + n]);
            self.used += n;
            at += n;
        }
        Ok(at / 2)
    }
}

/// Injected read failures, for the player's tests: a drive gone for a
/// moment, without one.
#[cfg(test)]
pub(crate) mod failing {
    use std::path::{Path, PathBuf};
    use std::sync::Mutex;

    static FAILING: Mutex<Option<PathBuf>> = Mutex::new(None);

    /// Make every read of a running job's stream at `path` fail (`None`: none).
    pub(crate) fn set(path: Option<PathBuf>) {
        *FAILING.lock().unwrap_or_else(std::sync::PoisonError::into_inner) = path;
    }

    pub(super) fn reads_of(path: &Path) -> bool {
        FAILING.lock().unwrap_or_else(std::sync::PoisonError::into_inner).as_deref() == Some(path)
    }
}

/// The stems of a running job: its `stems.f32` (see
/// [`stemroom_engine::job::stream`]), read up to what is separated so far.
struct Growing {
    path: std::path::PathBuf,
    file: File,
    layout: StreamLayout,
    /// Next frame to read (model rate).
    pos: u64,
    bytes: Vec<u8>,
    /// The original mixture, read in step after the lanes (A/B).
    original: Option<StemReader>,
}

impl Growing {
    /// Frames separated so far (whole frames in the file, at most the song's).
    fn edge(&self) -> u64 {
        let len = self.file.metadata().map(|m| m.len()).unwrap_or(0);
        (len / self.layout.frame_bytes() as u64).min(self.layout.frames)
    }

    /// Read up to `frames` frames from `pos` into every lane's `out`
    /// (interleaved stereo): the sum of the lane's sources in order, rounded
    /// as the finished files will be. Returns the frames read (fewer at the
    /// separated edge and at the end).
    fn read(&mut self, frames: usize, out: &mut [Vec<f32>]) -> Result<usize, DecodeError> {
        let fb = self.layout.frame_bytes();
        let n = (self.edge().saturating_sub(self.pos)).min(frames as u64) as usize;
        if n == 0 {
            return Ok(0);
        }
        let io = |source| DecodeError::Unreadable { path: self.path.clone(), source };
        #[cfg(test)]
        if failing::reads_of(&self.path) {
            return Err(io(std::io::Error::other("input/output error (injected)")));
        }
        self.bytes.resize(n * fb, 0);
        self.file.seek(SeekFrom::Start(self.pos * fb as u64)).map_err(io)?;
        self.file.read_exact(&mut self.bytes).map_err(io)?;
        let ch = self.layout.channels;
        let at = |frame: &[u8], s: usize, c: usize| {
            let i = (s * ch + c) * 4;
            f32::from_le_bytes([frame[i], frame[i + 1], frame[i + 2], frame[i + 3]])
        };
        for (lane, buf) in self.layout.lanes.iter().zip(out.iter_mut()) {
            for (j, frame) in self.bytes.chunks_exact(fb).enumerate() {
                for c in 0..2 {
                    // As the stem writer sums a two-stem complement: from 0, in order.
                    let mut v = 0.0f32;
                    for &s in &lane.sources {
                        v += at(frame, s, c);
                    }
                    // As the decoder does for files: nothing that is not
                    // a number reaches the device (a burst, or a float
                    // mixer silenced until restarted).
                    if !v.is_finite() {
                        v = 0.0;
                    }
                    if let Some(bits) = self.layout.quantize_bits {
                        v = stream::quantize(v, bits);
                    }
                    buf[2 * j + c] = v;
                }
            }
        }
        if let Some(original) = &mut self.original {
            // The mixture up to the same edge (silence where it is shorter).
            let dst = &mut out[self.layout.lanes.len()][..2 * n];
            let got = original.read(dst)?;
            dst[2 * got..].fill(0.0);
        }
        self.pos += n as u64;
        Ok(n)
    }
}

enum Inner {
    Files(Vec<StemReader>),
    /// Boxed: a growing set is one per player, and much larger than a file list.
    Growing(Box<Growing>),
}

/// A song's stems, read in lock step.
pub struct StemSet {
    inner: Inner,
}

impl std::fmt::Debug for StemSet {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("StemSet").field("stems", &self.len()).field("growing", &self.edge().is_some()).finish()
    }
}

impl StemSet {
    /// Open every stem file, in order.
    ///
    /// # Errors
    /// [`DecodeError`] of the first stem that cannot be opened.
    pub fn open<P: AsRef<Path>>(paths: &[P]) -> Result<Self, DecodeError> {
        let stems = paths.iter().map(|p| StemReader::open(p.as_ref())).collect::<Result<_, _>>()?;
        Ok(StemSet { inner: Inner::Files(stems) })
    }

    /// Open the stems of a job that is still separating, from its
    /// checkpoint folder `dir` (`stems.f32` and `stream.json`): one stem
    /// per lane of the layout, at the model's rate, with the song's whole
    /// length declared; reads stop at the separated edge
    /// ([`StemSet::edge`]) until more is separated.
    ///
    /// # Errors
    /// [`DecodeError::Unreadable`] when the folder holds no readable stream (the job
    /// has not finished its first segment, or has ended).
    pub fn open_growing(dir: &Path) -> Result<Self, DecodeError> {
        let path = stream::stems_path(dir);
        let layout =
            StreamLayout::read(dir).map_err(|source| DecodeError::Unreadable { path: dir.to_path_buf(), source })?;
        let file = File::open(&path).map_err(|source| DecodeError::Unreadable { path: path.clone(), source })?;
        Ok(StemSet {
            inner: Inner::Growing(Box::new(Growing { path, file, layout, pos: 0, bytes: Vec::new(), original: None })),
        })
    }

    /// The same stems with the original mixture at `path` as one more, last
    /// stem (for A/B): for finished files one more file; for a running job
    /// read in step with the stream and up to its separated edge.
    ///
    /// At another sample rate it would not line up frame by frame:
    /// [`StemSet::mixed_rates`] then names both rates.
    ///
    /// # Errors
    /// [`DecodeError`] when the file cannot be opened.
    pub fn with_original(mut self, path: &Path) -> Result<Self, DecodeError> {
        let mut original = StemReader::open(path)?;
        original.soft = true;
        match &mut self.inner {
            Inner::Files(s) => s.push(original),
            Inner::Growing(g) => {
                let mut original = original;
                original.seek(g.pos, &|| false)?;
                g.original = Some(original);
            }
        }
        Ok(self)
    }

    /// Number of stems.
    pub fn len(&self) -> usize {
        match &self.inner {
            Inner::Files(s) => s.len(),
            Inner::Growing(g) => g.layout.lanes.len() + usize::from(g.original.is_some()),
        }
    }

    /// Whether there are no stems.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The first stem's sample rate in Hz (0 without stems).
    pub fn sample_rate(&self) -> u32 {
        match &self.inner {
            Inner::Files(s) => s.first().map_or(0, |s| s.decoder.sample_rate()),
            Inner::Growing(g) => g.layout.sample_rate,
        }
    }

    /// The first two different sample rates (Hz) when the stems do not share one.
    pub fn mixed_rates(&self) -> Option<(u32, u32)> {
        let rate = self.sample_rate();
        match &self.inner {
            Inner::Files(s) => {
                s.iter().map(|s| s.decoder.sample_rate()).find(|&r| r != rate).map(|other| (rate, other))
            }
            Inner::Growing(g) => {
                g.original.as_ref().map(|o| o.decoder.sample_rate()).filter(|&r| r != rate).map(|other| (rate, other))
            }
        }
    }

    /// The longest length any stem declares exactly, in frames: `None` when
    /// none does, or when one only guesses it from its bit rate (an MP3
    /// without a Xing frame, raw ADTS AAC: a few percent off).
    pub fn exact_frames(&self) -> Option<u64> {
        match &self.inner {
            Inner::Files(s) if s.iter().any(|s| s.decoder.length_estimated()) => None,
            _ => self.declared_frames(),
        }
    }

    /// The longest length any stem declares, in frames (`None` when none does).
    pub fn declared_frames(&self) -> Option<u64> {
        match &self.inner {
            Inner::Files(s) => s.iter().filter_map(|s| s.decoder.declared_frames()).max(),
            Inner::Growing(g) => Some(g.layout.frames),
        }
    }

    /// Frames separated so far while the stems are a running job's and not
    /// all separated; `None` for finished stems.
    pub fn edge(&self) -> Option<u64> {
        match &self.inner {
            Inner::Files(_) => None,
            Inner::Growing(g) => Some(g.edge()).filter(|&e| e < g.layout.frames),
        }
    }

    /// Whether these are a running job's stems (even once all separated).
    pub fn is_growing(&self) -> bool {
        matches!(self.inner, Inner::Growing(_))
    }

    /// The stems' names of a running job (its layout's lanes); `None` for files.
    pub fn growing_stems(&self) -> Option<Vec<String>> {
        match &self.inner {
            Inner::Files(_) => None,
            Inner::Growing(g) => Some(g.layout.lanes.iter().map(|l| l.stem.clone()).collect()),
        }
    }

    /// Continue every stem from `frame` (stems' rate), dropping what was
    /// decoded before.
    ///
    /// # Errors
    /// [`DecodeError`] when a stem cannot be read.
    pub fn seek(&mut self, frame: u64) -> Result<(), DecodeError> {
        self.seek_or_give_up(frame, &|| false).map(|_| ())
    }

    /// [`StemSet::seek`], where a stem that cannot seek (decoded from its
    /// start up to `frame`) stops as soon as `give_up` says so: `Ok(false)`,
    /// the stems at no particular place.
    ///
    /// # Errors
    /// [`DecodeError`] when a stem cannot be read.
    pub fn seek_or_give_up(&mut self, frame: u64, give_up: &dyn Fn() -> bool) -> Result<bool, DecodeError> {
        match &mut self.inner {
            Inner::Files(s) => {
                for stem in s {
                    if !stem.seek(frame, give_up)? {
                        return Ok(false);
                    }
                }
                Ok(true)
            }
            Inner::Growing(g) => {
                g.pos = frame.min(g.layout.frames);
                match &mut g.original {
                    Some(o) => o.seek(g.pos, give_up),
                    None => Ok(true),
                }
            }
        }
    }

    /// Read the next `frames` frames of every stem: stem `k` goes to
    /// `out[k][..2 * frames]` (interleaved stereo; `out[k]` is grown if
    /// shorter), padded with silence where the stem has ended. Returns the
    /// most frames any stem really had (0 once every stem has ended). A
    /// running job's stems give fewer at the separated edge without having
    /// ended ([`StemSet::all_ended`] stays false).
    ///
    /// # Errors
    /// [`DecodeError`] when a stem cannot be decoded.
    ///
    /// # Panics
    /// If `out` has fewer entries than there are stems.
    pub fn read(&mut self, frames: usize, out: &mut [Vec<f32>]) -> Result<usize, DecodeError> {
        for buf in out.iter_mut().take(self.len()) {
            if buf.len() < 2 * frames {
                buf.resize(2 * frames, 0.0);
            }
        }
        match &mut self.inner {
            Inner::Files(stems) => {
                let mut longest = 0;
                for (stem, buf) in stems.iter_mut().zip(out.iter_mut()) {
                    let dst = &mut buf[..2 * frames];
                    let got = stem.read(dst)?;
                    dst[2 * got..].fill(0.0);
                    longest = longest.max(got);
                }
                Ok(longest)
            }
            Inner::Growing(g) => {
                let got = g.read(frames, out)?;
                let stems = g.layout.lanes.len() + usize::from(g.original.is_some());
                for buf in out.iter_mut().take(stems) {
                    buf[2 * got..2 * frames].fill(0.0);
                }
                Ok(got)
            }
        }
    }

    /// Whether every stem has reached its end.
    pub fn all_ended(&self) -> bool {
        match &self.inner {
            Inner::Files(s) => s.iter().all(|s| s.eof),
            Inner::Growing(g) => g.pos >= g.layout.frames,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every frame of `path`, decoded from the start (interleaved stereo).
    fn all_of(path: &Path) -> Vec<f32> {
        let mut set = StemSet::open(&[path]).unwrap();
        let mut out = vec![Vec::new()];
        let mut all = Vec::new();
        loop {
            let got = set.read(4096, &mut out).unwrap();
            all.extend_from_slice(&out[0][..2 * got]);
            if got < 4096 {
                return all;
            }
        }
    }

    #[test]
    fn a_stem_that_cannot_seek_is_read_from_the_start_up_to_the_target() {
        let dir = tempfile::tempdir().unwrap();
        let mix = stemroom_testkit::falcon_mixture();
        // WebM/Opus (as YouTube serves it) and Matroska/FLAC declare no
        // length, and their demuxer refuses a seek into their last second
        // ("out-of-range"): measured with symphonia here.
        for name in ["a.webm", "a.mka"] {
            let path = dir.path().join(name);
            let codec = if name.ends_with("webm") { "libopus" } else { "flac" };
            stemroom_testkit::ffmpeg(&["-i", mix.to_str().unwrap(), "-c:a", codec, path.to_str().unwrap()]);
            let whole = all_of(&path);
            let frames = whole.len() as u64 / 2;
            let mut set = StemSet::open(&[&path]).unwrap();
            let mut out = vec![Vec::new()];
            // (A seek the demuxer does lands on the frame, but a lossy
            // decoder started there converges to the samples of a decode
            // from the start only after its pre-roll: compared by count.)
            for (target, exact) in [(frames - 10_000, true), (1000, false), (frames - 100, true), (frames + 10, true)] {
                set.seek(target).unwrap_or_else(|e| panic!("{name}: seek to {target}: {e}"));
                let got = set.read(2048, &mut out).unwrap();
                let want = &whole[(2 * target as usize).min(whole.len())..];
                assert_eq!(got, (want.len() / 2).min(2048), "{name}: frames after {target}");
                assert!(!exact || out[0][..2 * got] == want[..2 * got], "{name}: the frames after {target}");
            }
            // A newer seek (or the player closing) stops the decoding.
            assert!(!set.seek_or_give_up(frames - 100, &|| true).unwrap(), "{name}: gave up");
            assert!(set.seek_or_give_up(frames - 100, &|| false).unwrap());
        }
    }

    /// The original mixture that fails to read (cut short under the
    /// player: a drive unplugged, a file rewritten) goes silent from there;
    /// the stems play on to their end.
    #[test]
    fn an_original_that_fails_to_read_goes_silent_and_the_stems_play_on() {
        let dir = tempfile::tempdir().unwrap();
        let mix = stemroom_testkit::falcon_mixture();
        let original = dir.path().join("original.wav");
        std::fs::copy(&mix, &original).unwrap();
        let whole = all_of(&mix);
        let frames = whole.len() / 2;
        let mut set = StemSet::open(&[&mix]).unwrap().with_original(&original).unwrap();
        let mut out = vec![Vec::new(), Vec::new()];
        // Cut to a tenth after it was opened: its header still says all.
        std::fs::OpenOptions::new()
            .write(true)
            .open(&original)
            .unwrap()
            .set_len(4096 + frames as u64 / 10 * 4)
            .unwrap();
        let mut read = 0;
        loop {
            let got = set.read(4096, &mut out).expect("the stems are read to their end");
            assert_eq!(out[0][..2 * got], whole[2 * read..2 * (read + got)], "the stem at frame {read}");
            read += got;
            if got < 4096 {
                break;
            }
        }
        assert_eq!(read, frames);
        // A seek back is no error either.
        set.seek(0).expect("seek");
    }
}

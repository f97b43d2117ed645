//! Waveform peaks: the minimum and maximum sample of each bucket of frames,
//! at several bucket sizes so a waveform stays sharp when zoomed, computed
//! once per stem and cached in a small binary file beside the stems.
//!
//! Values are the extremes over both channels, quantised to `i8`
//! (`round(x * 127)`, clamped): 8 bits is finer than a waveform lane's
//! pixel height. The finest level has [`FINEST_BUCKET`] frames per bucket;
//! each further level is [`LEVEL_FACTOR`] times coarser.
//!
//! File layout (little endian): magic `SRPK`, version `u32` (1), sample rate
//! `u32` (Hz), frames `u64`, level count `u32`; then per level: frames per
//! bucket `u32`, bucket count `u64`, and `2 * buckets` bytes of `i8` pairs
//! `(min, max)`.

use std::io::{Read, Write};
use std::path::{Path, PathBuf};

use serde::Serialize;

use stemroom_engine::audio::decode;
use stemroom_engine::progress::Silent;
use stemroom_engine::Error;

pub mod loader;

/// Frames per bucket of the finest level: 64 frames is 1.5 ms at 44.1 kHz,
/// finer than any useful zoom of a song-length view.
pub const FINEST_BUCKET: u32 = 64;
/// Each level is this many times coarser than the previous one.
pub const LEVEL_FACTOR: u32 = 4;
/// Number of levels: 64, 256, 1024, 4096, 16384 frames per bucket.
pub const LEVELS: usize = 5;

const MAGIC: &[u8; 4] = b"SRPK";
const VERSION: u32 = 1;

/// One zoom level.
#[derive(Debug, Clone, PartialEq)]
pub struct PeakLevel {
    pub frames_per_bucket: u32,
    /// `(min, max)` per bucket, quantised to `i8` (see module docs).
    pub pairs: Vec<[i8; 2]>,
}

/// All levels of one track.
#[derive(Debug, Clone, PartialEq)]
pub struct Peaks {
    /// Sample rate of the track in Hz.
    pub sample_rate: u32,
    /// Length of the track in frames.
    pub frames: u64,
    /// Finest first.
    pub levels: Vec<PeakLevel>,
}

/// Peaks for drawing: `min` and `max` in [-1, 1], one pair per column.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[cfg_attr(feature = "specta", derive(specta::Type))]
#[serde(rename_all = "camelCase")]
pub struct PeakColumns {
    pub min: Vec<f32>,
    pub max: Vec<f32>,
}

fn quantise(x: f32) -> i8 {
    (x.clamp(-1.0, 1.0) * 127.0).round() as i8
}

/// Builds the finest level from streamed interleaved stereo frames.
#[derive(Debug, Default)]
struct Builder {
    pairs: Vec<[i8; 2]>,
    lo: f32,
    hi: f32,
    in_bucket: u32,
    frames: u64,
}

impl Builder {
    fn push(&mut self, stereo: &[f32]) {
        for fr in stereo.chunks_exact(2) {
            if self.in_bucket == 0 {
                self.lo = f32::INFINITY;
                self.hi = f32::NEG_INFINITY;
            }
            for &x in fr {
                let x = if x.is_finite() { x } else { 0.0 };
                self.lo = self.lo.min(x);
                self.hi = self.hi.max(x);
            }
            self.in_bucket += 1;
            self.frames += 1;
            if self.in_bucket == FINEST_BUCKET {
                self.pairs.push([quantise(self.lo), quantise(self.hi)]);
                self.in_bucket = 0;
            }
        }
    }

    fn finish(mut self, sample_rate: u32) -> Peaks {
        if self.in_bucket > 0 {
            self.pairs.push([quantise(self.lo), quantise(self.hi)]);
        }
        let mut levels = vec![PeakLevel { frames_per_bucket: FINEST_BUCKET, pairs: self.pairs }];
        for _ in 1..LEVELS {
            let prev = levels.last().map(|l| (l.frames_per_bucket, &l.pairs));
            let Some((fpb, pairs)) = prev else { break };
            let coarser: Vec<[i8; 2]> = pairs
                .chunks(LEVEL_FACTOR as usize)
                .map(|c| [c.iter().map(|p| p[0]).min().unwrap_or(0), c.iter().map(|p| p[1]).max().unwrap_or(0)])
                .collect();
            levels.push(PeakLevel { frames_per_bucket: fpb * LEVEL_FACTOR, pairs: coarser });
        }
        Peaks { sample_rate, frames: self.frames, levels }
    }
}

/// Peaks of a track that grows (a running job's stems): frames pushed as
/// they come, the peaks so far on demand.
#[derive(Debug, Default)]
pub struct PeaksBuilder {
    inner: Builder,
}

impl PeaksBuilder {
    /// Append interleaved stereo frames.
    pub fn push(&mut self, stereo: &[f32]) {
        self.inner.push(stereo);
    }

    /// The peaks of every frame pushed so far, at `sample_rate` Hz.
    pub fn snapshot(&self, sample_rate: u32) -> Peaks {
        let copy = Builder {
            pairs: self.inner.pairs.clone(),
            lo: self.inner.lo,
            hi: self.inner.hi,
            in_bucket: self.inner.in_bucket,
            frames: self.inner.frames,
        };
        copy.finish(sample_rate)
    }
}

impl Peaks {
    /// Peaks of interleaved stereo samples at `sample_rate` Hz.
    pub fn from_samples(stereo: &[f32], sample_rate: u32) -> Self {
        let mut b = Builder::default();
        b.push(stereo);
        b.finish(sample_rate)
    }

    /// Decode `path` (any supported format, streamed) and compute its peaks.
    ///
    /// # Errors
    /// [`Error::Decode`] for unreadable audio.
    pub fn compute(path: &Path) -> Result<Self, Error> {
        let mut b = Builder::default();
        let mut rate = 0;
        decode::decode(path, &Silent, |block, r| {
            rate = r;
            b.push(block);
            Ok(())
        })?;
        Ok(b.finish(rate))
    }

    /// `columns` min/max pairs covering frames `start..end`, from the
    /// coarsest level that still has at least one bucket per column.
    /// Columns past the end of the track are silent (0, 0).
    pub fn columns(&self, start: u64, end: u64, columns: usize) -> PeakColumns {
        let mut out = PeakColumns { min: vec![0.0; columns], max: vec![0.0; columns] };
        if columns == 0 || end <= start {
            return out;
        }
        let per_column = (end - start) as f64 / columns as f64;
        let level =
            self.levels.iter().rev().find(|l| f64::from(l.frames_per_bucket) <= per_column).or(self.levels.first());
        let Some(level) = level else { return out };
        let fpb = u64::from(level.frames_per_bucket);
        for c in 0..columns {
            // Saturating: `end` may be any frame a caller names (u64::MAX).
            let a = start.saturating_add((c as f64 * per_column) as u64);
            let b = start.saturating_add(((c + 1) as f64 * per_column) as u64).max(a.saturating_add(1));
            // Buckets starting inside the column; a column narrower than a
            // bucket shows the bucket it starts in.
            let (mut first, last) = (a.div_ceil(fpb) as usize, b.div_ceil(fpb) as usize);
            if first >= last {
                first = (a / fpb) as usize;
            }
            let last = last.max(first + 1);
            let Some(slice) = level.pairs.get(first..last.min(level.pairs.len())) else { continue };
            if let (Some(lo), Some(hi)) = (slice.iter().map(|p| p[0]).min(), slice.iter().map(|p| p[1]).max()) {
                out.min[c] = f32::from(lo) / 127.0;
                out.max[c] = f32::from(hi) / 127.0;
            }
        }
        out
    }

    /// Write to `path` atomically (a temporary name of this process's own,
    /// [`stemroom_engine::files::part_path`], so two writers of one cache
    /// never mix their bytes; then a rename). Nothing is left on failure.
    ///
    /// # Errors
    /// I/O errors.
    pub fn write(&self, path: &Path) -> std::io::Result<()> {
        let tmp = stemroom_engine::files::part_path(path);
        let written = self.write_to(&tmp).and_then(|()| std::fs::rename(&tmp, path));
        if written.is_err() {
            let _ = std::fs::remove_file(&tmp);
        }
        written
    }

    fn write_to(&self, tmp: &Path) -> std::io::Result<()> {
        {
            let mut w = std::io::BufWriter::new(std::fs::File::create(tmp)?);
            w.write_all(MAGIC)?;
            w.write_all(&VERSION.to_le_bytes())?;
            w.write_all(&self.sample_rate.to_le_bytes())?;
            w.write_all(&self.frames.to_le_bytes())?;
            w.write_all(&(self.levels.len() as u32).to_le_bytes())?;
            for l in &self.levels {
                w.write_all(&l.frames_per_bucket.to_le_bytes())?;
                w.write_all(&(l.pairs.len() as u64).to_le_bytes())?;
                let bytes: Vec<u8> = l.pairs.iter().flat_map(|p| [p[0] as u8, p[1] as u8]).collect();
                w.write_all(&bytes)?;
            }
            w.into_inner().map_err(|e| e.into_error())?.sync_all()?;
        }
        Ok(())
    }

    /// Read a file written by [`Peaks::write`].
    ///
    /// # Errors
    /// I/O errors; `InvalidData` for a file that is not a version-1 peaks
    /// file or is truncated.
    pub fn read(path: &Path) -> std::io::Result<Self> {
        Self::parse(path).map_err(|e| match e.kind() {
            std::io::ErrorKind::UnexpectedEof => {
                std::io::Error::new(std::io::ErrorKind::InvalidData, format!("{}: truncated", path.display()))
            }
            _ => e,
        })
    }

    fn parse(path: &Path) -> std::io::Result<Self> {
        let bad =
            |what: &str| std::io::Error::new(std::io::ErrorKind::InvalidData, format!("{}: {what}", path.display()));
        let data = std::fs::read(path)?;
        let mut r = data.as_slice();
        let mut magic = [0u8; 4];
        r.read_exact(&mut magic)?;
        if &magic != MAGIC {
            return Err(bad("not a peaks file"));
        }
        let mut u32b = [0u8; 4];
        let mut u64b = [0u8; 8];
        let mut next_u32 = |r: &mut &[u8]| r.read_exact(&mut u32b).map(|_| u32::from_le_bytes(u32b));
        let version = next_u32(&mut r)?;
        if version != VERSION {
            return Err(bad("unknown version"));
        }
        let sample_rate = next_u32(&mut r)?;
        r.read_exact(&mut u64b)?;
        let frames = u64::from_le_bytes(u64b);
        let n_levels = next_u32(&mut r)?;
        if n_levels as usize > 32 {
            return Err(bad("too many levels"));
        }
        let mut levels = Vec::new();
        for _ in 0..n_levels {
            let frames_per_bucket = next_u32(&mut r)?;
            if frames_per_bucket == 0
                || levels.last().is_some_and(|l: &PeakLevel| l.frames_per_bucket >= frames_per_bucket)
            {
                return Err(bad("bucket sizes must be positive and increasing"));
            }
            r.read_exact(&mut u64b)?;
            let n = u64::from_le_bytes(u64b);
            let bytes = usize::try_from(n)
                .ok()
                .and_then(|n| n.checked_mul(2))
                .filter(|&b| b <= r.len())
                .ok_or_else(|| bad("truncated"))?;
            let pairs = r[..bytes].chunks_exact(2).map(|c| [c[0] as i8, c[1] as i8]).collect();
            r = &r[bytes..];
            levels.push(PeakLevel { frames_per_bucket, pairs });
        }
        Ok(Peaks { sample_rate, frames, levels })
    }

    /// The cached peaks of `audio` (in `<dir>/.peaks/<file name>.peaks`),
    /// computed and cached when missing, unreadable or older than the audio.
    ///
    /// # Errors
    /// [`Error::Decode`] for unreadable audio; a cache that cannot be written
    /// is not an error (the peaks are returned anyway).
    pub fn cached(audio: &Path) -> Result<Self, Error> {
        Self::cached_at(audio, cache_path(audio))
    }

    /// As [`Peaks::cached`], with the cache file at `cache` (e.g. the peaks of
    /// a song's original file kept in the song's folder, not beside the
    /// user's file); `None` computes without caching.
    ///
    /// # Errors
    /// [`Error::Decode`] for unreadable audio.
    pub fn cached_at(audio: &Path, cache: Option<PathBuf>) -> Result<Self, Error> {
        if let Some(p) = cache.as_deref().and_then(|c| Self::read_fresh(audio, c)) {
            return Ok(p);
        }
        let stamp = AudioStamp::of(audio);
        let peaks = Self::compute(audio)?;
        if let Some(c) = cache {
            peaks.store(&c, audio, stamp);
        }
        Ok(peaks)
    }

    /// Cache these peaks of `audio` in `cache`, unless the audio changed
    /// since `before` (taken before it was decoded): a song made again
    /// into the same folder while its old file was read would otherwise
    /// get a cache newer than its new file, which [`Peaks::read_fresh`]
    /// would take as fresh. Part files of writers that were killed are
    /// removed first. A failure is logged, not an error.
    pub(crate) fn store(&self, cache: &Path, audio: &Path, before: Option<AudioStamp>) {
        if before.is_none() || AudioStamp::of(audio) != before {
            tracing::debug!("{} changed while its peaks were read: not cached", audio.display());
            return;
        }
        let written = cache.parent().map(std::fs::create_dir_all).transpose().and_then(|_| {
            if let Some(dir) = cache.parent() {
                stemroom_engine::files::remove_stale_parts(dir);
            }
            self.write(cache)
        });
        if let Err(e) = written {
            tracing::warn!("cannot cache peaks in {}: {e}", cache.display());
        }
    }
}

/// What tells a file's content changed without reading it: its size,
/// modification time and inode (a file renamed over it is another).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct AudioStamp {
    len: u64,
    modified: std::time::SystemTime,
    inode: u64,
}

impl AudioStamp {
    pub(crate) fn of(path: &Path) -> Option<Self> {
        let m = std::fs::metadata(path).ok()?;
        #[cfg(unix)]
        let inode = std::os::unix::fs::MetadataExt::ino(&m);
        #[cfg(not(unix))]
        let inode = 0;
        Some(AudioStamp { len: m.len(), modified: m.modified().ok()?, inode })
    }
}

impl Peaks {
    /// The peaks cached in `cache` for `audio`, when that file is readable,
    /// not older than the audio, and of the audio: the same sample rate and
    /// (when the audio's header states it, not guessed) the same length
    /// within 0.5 %, so
    /// a song replaced by one with an older date (a synced folder, `cp -p`,
    /// a restored backup) does not show the old waveform; `None` otherwise
    /// (compute them). A cache far larger than its audio's peaks can be
    /// (4 bytes per 64 frames and coarser levels, about a byte per 24
    /// frames; bounded by a byte per 8 frames or the audio's own size,
    /// whichever is more) is not read at all.
    pub fn read_fresh(audio: &Path, cache: &Path) -> Option<Self> {
        let (a, p) = (std::fs::metadata(audio).ok()?, std::fs::metadata(cache).ok()?);
        if p.modified().ok()? < a.modified().ok()? {
            return None;
        }
        let header = decode::StreamDecoder::open(audio).ok()?;
        // (A low-bit-rate file, speech Opus at 16 kb/s, has peaks larger
        // than itself: bounded by its length too, or its cache was never read.)
        let by_length = header.declared_frames().unwrap_or(0) / 8;
        if p.len() > a.len().max(by_length).max(64 * 1024) {
            return None;
        }
        let peaks = Self::read(cache).ok()?;
        // (A length guessed from a bit rate, a VBR MP3's without a Xing
        // header, can be 5 % off: not held against the cache.)
        let declared = header.declared_frames().filter(|_| !header.length_estimated());
        let same_length = declared.is_none_or(|f| f.abs_diff(peaks.frames) <= 2048 + f / 200);
        (header.sample_rate() == peaks.sample_rate && same_length).then_some(peaks)
    }

    /// No peaks yet (a lane still being read): every column is silent.
    pub fn empty(sample_rate: u32) -> Self {
        Peaks { sample_rate, frames: 0, levels: Vec::new() }
    }
}

/// The folder beside the audio that holds its cached peaks.
pub const CACHE_DIR: &str = ".peaks";

/// Where [`Peaks::cached`] keeps the peaks of `audio`:
/// `<folder>/.peaks/<file name>.peaks`.
pub fn cache_path(audio: &Path) -> Option<PathBuf> {
    let name = audio.file_name()?;
    let mut file = name.to_os_string();
    file.push(".peaks");
    Some(audio.parent()?.join(CACHE_DIR).join(file))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tone(frames: usize) -> Vec<f32> {
        (0..frames)
            .flat_map(|i| {
                let x = (i as f32 * 0.05).sin() * (i as f32 / frames as f32);
                [x, -0.5 * x]
            })
            .collect()
    }

    /// A 16-bit stereo WAV of a tone at `path`, `frames` long at `rate` Hz.
    fn tone_wav(path: &Path, frames: usize, rate: u32) {
        let spec = hound::WavSpec {
            channels: 2,
            sample_rate: rate,
            bits_per_sample: 16,
            sample_format: hound::SampleFormat::Int,
        };
        let mut w = hound::WavWriter::create(path, spec).unwrap();
        for i in 0..frames * 2 {
            w.write_sample(((i as f32 * 0.01).sin() * 10_000.0) as i16).unwrap();
        }
        w.finalize().unwrap();
    }

    #[test]
    fn levels_hold_true_extremes() {
        let x = tone(100_000);
        let p = Peaks::from_samples(&x, 44_100);
        assert_eq!(p.frames, 100_000);
        assert_eq!(p.levels.len(), LEVELS);
        for l in &p.levels {
            let fpb = l.frames_per_bucket as usize;
            assert_eq!(l.pairs.len(), 100_000usize.div_ceil(fpb));
            for (b, pair) in l.pairs.iter().enumerate() {
                let s = &x[2 * b * fpb..(2 * (b + 1) * fpb).min(x.len())];
                let lo = s.iter().copied().fold(f32::INFINITY, f32::min);
                let hi = s.iter().copied().fold(f32::NEG_INFINITY, f32::max);
                assert_eq!(*pair, [quantise(lo), quantise(hi)], "level {fpb} bucket {b}");
            }
        }
    }

    #[test]
    fn columns_pick_a_level_and_cover_the_range() {
        let mut x = vec![0.0f32; 2 * 44_100];
        x[2 * 30_000] = 1.0; // one spike at frame 30 000
        let p = Peaks::from_samples(&x, 44_100);
        let c = p.columns(0, 44_100, 100);
        assert_eq!(c.max.len(), 100);
        let spike: Vec<usize> = (0..100).filter(|&i| c.max[i] > 0.5).collect();
        // Frame 30000 of 44100 is column 68; bucket granularity may move it by one.
        assert!(spike.len() == 1 && spike[0].abs_diff(68) <= 1, "{spike:?}");
        // Zoomed in around the spike, past the end is silent.
        let z = p.columns(29_990, 30_010, 20);
        assert!(z.max.contains(&1.0));
        let past = p.columns(44_000, 48_000, 40);
        assert!(past.max[39] == 0.0 && past.min[39] == 0.0);
        // Any range a caller names, up to u64::MAX, is columns, not an overflow.
        for (a, b) in [(1, u64::MAX), (u64::MAX - 1, u64::MAX), (0, u64::MAX)] {
            assert_eq!(p.columns(a, b, 3).max.len(), 3);
        }
    }

    #[test]
    fn file_round_trip_and_damage() {
        let dir = tempfile::tempdir().unwrap();
        let p = Peaks::from_samples(&tone(50_000), 48_000);
        let f = dir.path().join("x.peaks");
        p.write(&f).unwrap();
        assert_eq!(Peaks::read(&f).unwrap(), p);
        let bytes = std::fs::read(&f).unwrap();
        std::fs::write(&f, &bytes[..bytes.len() - 10]).unwrap();
        assert_eq!(Peaks::read(&f).unwrap_err().kind(), std::io::ErrorKind::InvalidData);
        std::fs::write(&f, b"RIFF0000").unwrap();
        assert_eq!(Peaks::read(&f).unwrap_err().kind(), std::io::ErrorKind::InvalidData);
    }

    /// A cache is used only for its own audio: a song replaced by another
    /// whose file is dated earlier (a synced folder, `cp -p`) is read again,
    /// and a cache bigger than its audio is not read.
    #[test]
    fn a_cache_of_other_audio_is_not_used() {
        let dir = tempfile::tempdir().unwrap();
        let wav = |name: &str, frames: usize, rate: u32| {
            let p = dir.path().join(name);
            tone_wav(&p, frames, rate);
            p
        };
        let song = wav("song.wav", 100_000, 44_100);
        let cache = dir.path().join("song.peaks");
        let peaks = Peaks::compute(&song).unwrap();
        peaks.write(&cache).unwrap();
        assert_eq!(Peaks::read_fresh(&song, &cache), Some(peaks));
        let dated = |p: &Path, secs: u64| {
            let t = std::time::SystemTime::UNIX_EPOCH + std::time::Duration::from_secs(secs);
            std::fs::File::options().write(true).open(p).unwrap().set_modified(t).unwrap();
        };
        // Replaced by a longer song, then by one at another rate, both dated before the cache.
        for (frames, rate) in [(300_000, 44_100), (100_000, 48_000)] {
            let other = wav("other.wav", frames, rate);
            std::fs::rename(&other, &song).unwrap();
            dated(&song, 1_000_000);
            assert_eq!(Peaks::read_fresh(&song, &cache), None, "{frames} frames at {rate} Hz");
        }
        // A cache file larger than its audio.
        let song = wav("song.wav", 100_000, 44_100);
        Peaks::compute(&song).unwrap().write(&cache).unwrap();
        let mut big = std::fs::read(&cache).unwrap();
        big.resize(std::fs::metadata(&song).unwrap().len() as usize + 1, 0);
        std::fs::write(&cache, big).unwrap();
        assert_eq!(Peaks::read_fresh(&song, &cache), None);
    }

    /// Speech at a low bit rate (Opus at 12 kb/s, 1.5 KB a second) has
    /// peaks larger than itself (about 2 KB a second at 48 kHz): its cache
    /// is read (it was taken for another file's and computed again at every
    /// open).
    #[test]
    fn the_cache_of_a_low_bit_rate_file_is_used() {
        let dir = tempfile::tempdir().unwrap();
        let opus = dir.path().join("talk.opus");
        let src = "sine=f=300:d=120";
        let out = opus.to_str().unwrap();
        stemroom_testkit::ffmpeg(&["-f", "lavfi", "-i", src, "-c:a", "libopus", "-b:a", "12k", out]);
        let cache = dir.path().join("talk.peaks");
        let peaks = Peaks::compute(&opus).unwrap();
        peaks.write(&cache).unwrap();
        let (audio, cached) = (std::fs::metadata(&opus).unwrap().len(), std::fs::metadata(&cache).unwrap().len());
        assert!(cached > audio, "the peaks ({cached} bytes) are larger than the audio ({audio} bytes)");
        assert_eq!(Peaks::read_fresh(&opus, &cache), Some(peaks));
    }

    /// Peaks of audio that changed while it was read are not cached (the
    /// cache would be newer than the new file, and taken for it), and part
    /// files a killed writer left beside the cache are removed.
    #[test]
    fn peaks_of_audio_that_changed_meanwhile_are_not_cached() {
        let dir = tempfile::tempdir().unwrap();
        let song = dir.path().join("song.wav");
        let write = |frames: usize| {
            let tmp = dir.path().join("new.wav");
            tone_wav(&tmp, frames, 44_100);
            std::fs::rename(&tmp, &song).unwrap();
        };
        write(50_000);
        let cache = dir.path().join(CACHE_DIR).join("song.wav.peaks");
        std::fs::create_dir_all(cache.parent().unwrap()).unwrap();
        let stale = cache.parent().unwrap().join(".song.wav.peaks.4194002-3.part");
        std::fs::write(&stale, b"half").unwrap();
        let before = AudioStamp::of(&song);
        let peaks = Peaks::compute(&song).unwrap();
        // The song is made again (published by a rename) while it is read.
        write(60_000);
        peaks.store(&cache, &song, before);
        assert!(!cache.exists(), "no cache of the old audio");
        peaks.store(&cache, &song, AudioStamp::of(&song));
        assert!(cache.exists(), "cached when the audio did not change");
        assert!(!stale.exists(), "a killed writer's part file is gone");
    }
}

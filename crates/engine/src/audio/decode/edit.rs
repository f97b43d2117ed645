//! MP4 edit lists for the built-in decoder.
//!
//! An AAC encoder starts every stream with frames of priming (1,024 from
//! ffmpeg's and most others, 2,112 from Apple's and Fraunhofer's) and ends
//! it with padding; an MP4 file says which frames are the song in its audio
//! track's edit list (`moov/trak/edts/elst`: where in the track the song
//! starts, in the track's timescale, and how long it lasts, in the movie's;
//! ISO/IEC 14496-12 §8.6.6). symphonia 0.6 reads the list but does not
//! apply it (symphonia-format-isomp4 `demuxer.rs`: "edits are not currently
//! supported"), so its decode of an AAC `.m4a` starts 23-48 ms late against
//! the song as ffmpeg, browsers and DAWs play it, and every stem with it.
//! [`Edited`] hands out only the edited frames.

use std::fs::File;
use std::io::{Read, Seek, SeekFrom};
use std::path::Path;

use super::{Backend, DecodeError};
use crate::audio::encode::Tags;

/// Largest `moov` box read (its sample tables grow with the length: about
/// 1 MB per hour of AAC); a larger one is left unread (no edit applied).
const MAX_MOOV_BYTES: u64 = 64 << 20;

/// The song's frames in an audio track: the first `start` frames are
/// priming, and `length` frames follow (`None`: to the end).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct Edit {
    pub(super) start: u64,
    pub(super) length: Option<u64>,
}

/// The edit of the MP4 file at `path`'s track `track_id` (its `tkhd` id, as
/// symphonia numbers its tracks; the first audio track when `None`), in
/// frames at `sample_rate` Hz: `None` when it has none, or one this does
/// not apply (an empty edit, which inserts silence; several edits; a
/// broken box).
pub(super) fn mp4_audio_edit(path: &Path, sample_rate: u32, track_id: Option<u32>) -> Option<Edit> {
    if sample_rate == 0 {
        return None;
    }
    let mut f = File::open(path).ok()?;
    let size = f.metadata().ok()?.len();
    let (moov_at, moov_len) = find_box(&mut f, 0, size, b"moov")?;
    if moov_len > MAX_MOOV_BYTES {
        return None;
    }
    let mut moov = vec![0u8; usize::try_from(moov_len).ok()?];
    f.seek(SeekFrom::Start(moov_at)).ok()?;
    f.read_exact(&mut moov).ok()?;
    let movie_timescale = children(&moov).find(|(t, _)| t == b"mvhd").and_then(|(_, b)| timescale(b))?;
    // The track symphonia decodes: its edit, or none (another track's edit
    // is not its own).
    let is_audio = |trak: &[u8]| {
        child(trak, b"mdia").and_then(|m| child(m, b"hdlr")).and_then(|h| h.get(8..12)) == Some(b"soun".as_slice())
    };
    let id_of = |trak: &[u8]| {
        let tkhd = child(trak, b"tkhd")?;
        let at = if *tkhd.first()? == 1 { 20 } else { 12 };
        Some(u32::from_be_bytes(tkhd.get(at..at + 4)?.try_into().ok()?))
    };
    let (_, trak) = children(&moov)
        .find(|(t, trak)| t == b"trak" && is_audio(trak) && track_id.is_none_or(|id| id_of(trak) == Some(id)))?;
    track_edit(trak, movie_timescale, sample_rate)
}

/// The one edit of a `trak` payload, in frames at `sample_rate` Hz (its
/// start in the track's timescale, its length in the movie's,
/// `movie_timescale`).
fn track_edit(trak: &[u8], movie_timescale: u32, sample_rate: u32) -> Option<Edit> {
    let media_timescale = timescale(child(child(trak, b"mdia")?, b"mdhd")?)?;
    let (duration, media_time) = single_edit(child(child(trak, b"edts")?, b"elst")?)?;
    let frames = |v: u64, scale: u32| u64::try_from(u128::from(v) * u128::from(sample_rate) / u128::from(scale)).ok();
    let start = frames(media_time, media_timescale)?;
    let length = if duration == 0 { None } else { Some(frames(duration, movie_timescale)?) };
    Some(Edit { start, length })
}

/// The payload (after the header) of the first box of type `kind` among
/// the boxes in `f` from `from` to `end`: its offset and length.
fn find_box(f: &mut File, mut from: u64, end: u64, kind: &[u8; 4]) -> Option<(u64, u64)> {
    while from + 8 <= end {
        let mut head = [0u8; 16];
        f.seek(SeekFrom::Start(from)).ok()?;
        f.read_exact(&mut head[..8]).ok()?;
        let mut size = u64::from(u32::from_be_bytes(head[..4].try_into().ok()?));
        let mut header = 8;
        if size == 1 {
            f.read_exact(&mut head[8..16]).ok()?;
            size = u64::from_be_bytes(head[8..16].try_into().ok()?);
            header = 16;
        } else if size == 0 {
            size = end - from;
        }
        // A 64-bit size near its maximum must not wrap past `end`.
        let next = from.checked_add(size)?;
        if size < header || next > end {
            return None;
        }
        if &head[4..8] == kind {
            return Some((from + header, size - header));
        }
        from = next;
    }
    None
}

/// The boxes inside a box's payload, as (type, payload) pairs; stops at
/// the first malformed one.
fn children(mut payload: &[u8]) -> impl Iterator<Item = ([u8; 4], &[u8])> {
    std::iter::from_fn(move || {
        let size = u32::from_be_bytes(payload.get(..4)?.try_into().ok()?) as usize;
        let kind: [u8; 4] = payload.get(4..8)?.try_into().ok()?;
        let (header, size) = match size {
            1 => (16, usize::try_from(u64::from_be_bytes(payload.get(8..16)?.try_into().ok()?)).ok()?),
            0 => (8, payload.len()),
            n => (8, n),
        };
        let body = payload.get(header..size)?;
        payload = &payload[size..];
        Some((kind, body))
    })
}

fn child<'a>(payload: &'a [u8], kind: &[u8; 4]) -> Option<&'a [u8]> {
    children(payload).find(|(t, _)| t == kind).map(|(_, b)| b)
}

/// The timescale of an `mvhd` or `mdhd` payload (version 0: 32-bit times,
/// version 1: 64-bit).
fn timescale(b: &[u8]) -> Option<u32> {
    let at = if *b.first()? == 1 { 20 } else { 12 };
    let ts = u32::from_be_bytes(b.get(at..at + 4)?.try_into().ok()?);
    (ts > 0).then_some(ts)
}

/// The one edit of an `elst` payload: segment duration (movie timescale)
/// and media time (track timescale). `None` for several edits or an empty
/// edit (media time -1) or a rate other than 1.
fn single_edit(b: &[u8]) -> Option<(u64, u64)> {
    let version = *b.first()?;
    let count = u32::from_be_bytes(b.get(4..8)?.try_into().ok()?);
    if count != 1 {
        return None;
    }
    let e = b.get(8..)?;
    let (duration, media_time, rate) = if version == 1 {
        (
            u64::from_be_bytes(e.get(..8)?.try_into().ok()?),
            i64::from_be_bytes(e.get(8..16)?.try_into().ok()?),
            e.get(16..18)?,
        )
    } else {
        (
            u64::from(u32::from_be_bytes(e.get(..4)?.try_into().ok()?)),
            i64::from(i32::from_be_bytes(e.get(4..8)?.try_into().ok()?)),
            e.get(8..10)?,
        )
    };
    if rate != [0, 1] {
        return None;
    }
    Some((duration, u64::try_from(media_time).ok()?))
}

/// A backend whose stream is cut to an [`Edit`]: frame 0 is the edit's
/// first, and it ends after the edit's length.
pub(super) struct Edited {
    inner: Box<dyn Backend>,
    edit: Edit,
    block: Vec<f32>,
}

impl Edited {
    pub(super) fn new(inner: Box<dyn Backend>, edit: Edit) -> Self {
        Edited { inner, edit, block: Vec::new() }
    }

    fn end(&self) -> Option<u64> {
        self.edit.length.map(|n| self.edit.start.saturating_add(n))
    }
}

impl Backend for Edited {
    fn kind(&self) -> &'static str {
        self.inner.kind()
    }
    fn sample_rate(&self) -> u32 {
        self.inner.sample_rate()
    }
    fn channels(&self) -> usize {
        self.inner.channels()
    }
    fn declared_frames(&self) -> Option<u64> {
        match self.edit.length {
            Some(n) if !self.inner.length_estimated() => {
                Some(self.inner.declared_frames().map_or(n, |d| n.min(d.saturating_sub(self.edit.start))))
            }
            _ => self.inner.declared_frames().map(|d| d.saturating_sub(self.edit.start)),
        }
    }
    fn length_estimated(&self) -> bool {
        self.inner.length_estimated()
    }
    fn concealed_frames(&self) -> u64 {
        self.inner.concealed_frames()
    }
    fn frames(&self) -> u64 {
        let inner = self.inner.frames();
        self.end().map_or(inner, |e| inner.min(e)).saturating_sub(self.edit.start)
    }
    fn tags(&mut self) -> Tags {
        self.inner.tags()
    }
    fn seek(&mut self, frame: u64) -> Result<(), DecodeError> {
        self.inner.seek(frame.saturating_add(self.edit.start))
    }
    fn next_block(&mut self, cancelled: &dyn Fn() -> bool) -> Result<Option<u32>, DecodeError> {
        loop {
            if self.end().is_some_and(|e| self.inner.frames() >= e) {
                // The rest is padding (a packet or two), not read.
                self.inner.stop_early();
                return Ok(None);
            }
            let Some(rate) = self.inner.next_block(cancelled)? else { return Ok(None) };
            let block = self.inner.block();
            let n = (block.len() / 2) as u64;
            let to = self.inner.frames();
            let from = to.saturating_sub(n);
            let keep_from = from.max(self.edit.start);
            let keep_to = self.end().map_or(to, |e| to.min(e));
            if keep_to <= keep_from {
                continue;
            }
            let (a, b) = ((keep_from - from) as usize, (keep_to - from) as usize);
            self.block.clear();
            self.block.extend_from_slice(&block[2 * a..2 * b]);
            return Ok(Some(rate));
        }
    }
    fn block(&self) -> &[f32] {
        &self.block
    }
    fn stop_early(&mut self) {
        self.inner.stop_early();
    }
    fn warnings(&mut self) -> Vec<String> {
        self.inner.warnings()
    }
    fn cut_to_edit_list(&self) -> bool {
        true
    }
    fn track_id(&self) -> Option<u32> {
        self.inner.track_id()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_edit_is_read_and_others_are_not() {
        let elst = |version: u8, entries: &[(u64, i64)]| {
            let mut b = vec![version, 0, 0, 0];
            b.extend((entries.len() as u32).to_be_bytes());
            for &(d, t) in entries {
                if version == 1 {
                    b.extend(d.to_be_bytes());
                    b.extend(t.to_be_bytes());
                } else {
                    b.extend((d as u32).to_be_bytes());
                    b.extend((t as i32).to_be_bytes());
                }
                b.extend([0, 1, 0, 0]);
            }
            b
        };
        assert_eq!(single_edit(&elst(0, &[(3000, 1024)])), Some((3000, 1024)));
        assert_eq!(single_edit(&elst(1, &[(3000, 2112)])), Some((3000, 2112)));
        assert_eq!(single_edit(&elst(0, &[(500, -1)])), None, "an empty edit inserts silence");
        assert_eq!(single_edit(&elst(0, &[(500, 0), (100, 0)])), None);
        assert_eq!(single_edit(&[0, 0, 0, 0, 0, 0, 0, 1, 0]), None, "cut short");
    }

    #[test]
    fn a_box_size_near_the_largest_number_does_not_wrap() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("wrap.m4a");
        // A `free` box with a 64-bit size of 2^64 - 16 (it would wrap back
        // to its own start), then the `moov` looked for.
        let mut b = vec![0, 0, 0, 1];
        b.extend(b"free");
        b.extend((u64::MAX - 15).to_be_bytes());
        b.extend([0, 0, 0, 8]);
        b.extend(b"moov");
        std::fs::write(&p, &b).unwrap();
        let mut f = File::open(&p).unwrap();
        assert_eq!(find_box(&mut f, 0, b.len() as u64, b"moov"), None);
    }

    /// An edit list whose start lies past the track's end (damaged, or
    /// hostile) is ignored: the song decodes whole, not to nothing.
    #[test]
    fn an_edit_past_the_end_is_ignored() {
        let dir = tempfile::tempdir().unwrap();
        let m4a = dir.path().join("song.m4a");
        // One second of a tone, AAC in M4A with the edit list ffmpeg writes.
        let out = std::process::Command::new("ffmpeg")
            .args(["-v", "error", "-y", "-f", "lavfi", "-i", "sine=frequency=440:sample_rate=44100:duration=1"])
            .args(["-ac", "2", "-c:a", "aac", "-b:a", "128k"])
            .arg(&m4a)
            .status();
        assert!(out.is_ok_and(|s| s.success()), "ffmpeg makes the AAC file (scripts/setup.sh installs it)");
        let mut b = std::fs::read(&m4a).unwrap();
        let at = b.windows(4).position(|w| w == b"elst").expect("ffmpeg writes an edit list");
        // version, flags, entry count, then (v0) duration and media time.
        assert_eq!(b[at + 4], 0, "a version 0 elst");
        b[at + 16..at + 20].copy_from_slice(&0x7fff_0000u32.to_be_bytes());
        std::fs::write(&m4a, &b).unwrap();
        let mut d = super::super::StreamDecoder::open(&m4a).unwrap();
        let mut frames = 0;
        while let Some((block, _)) = d.next_block().unwrap() {
            frames += block.len() / 2;
        }
        assert!(frames.abs_diff(44_100) < 2048, "{frames} frames");
    }
}

//! MP3 CBR through LAME 3.100 (mp3lame-encoder).

use std::fs::File;
use std::io::{BufWriter, Write};
use std::path::{Path, PathBuf};

use super::{io_err, EncodeError, Post, StemWriter, Tags};

/// The CBR bit rates written, in kbps: MPEG-1's (ISO/IEC 11172-3), which
/// the stems' usual rates (32, 44.1, 48 kHz) take, except 56, which
/// mp3lame-encoder's `Bitrate` lacks. (At 16-24 kHz LAME writes at most
/// 160 kbps, at 8-12 kHz at most 64.)
pub const MP3_BITRATES: [u16; 13] = [32, 40, 48, 64, 80, 96, 112, 128, 160, 192, 224, 256, 320];

/// The bit rate of [`MP3_BITRATES`] nearest to `kbps`, the lower of two as
/// near: LAME's own choice for a rate it lacks (`FindNearestBitrate` in
/// util.c scans upwards and keeps the first nearest), which `demucs
/// --mp3-bitrate N` gets through lameenc for any `N` (56 is written as 48).
pub fn nearest_mp3_bitrate(kbps: u16) -> u16 {
    MP3_BITRATES.into_iter().min_by_key(|&b| b.abs_diff(kbps)).unwrap_or(320)
}

/// LAME's bit rate for `kbps`, one of [`MP3_BITRATES`].
pub(super) fn mp3_bitrate(kbps: u16) -> Option<mp3lame_encoder::Bitrate> {
    use mp3lame_encoder::Bitrate::*;
    Some(match kbps {
        32 => Kbps32,
        40 => Kbps40,
        48 => Kbps48,
        64 => Kbps64,
        80 => Kbps80,
        96 => Kbps96,
        112 => Kbps112,
        128 => Kbps128,
        160 => Kbps160,
        192 => Kbps192,
        224 => Kbps224,
        256 => Kbps256,
        320 => Kbps320,
        _ => return None,
    })
}

/// An MP3 file encoded as samples arrive.
pub(super) struct Mp3Stem {
    path: PathBuf,
    file: BufWriter<File>,
    encoder: mp3lame_encoder::Encoder,
    buf: Vec<u8>,
    scratch: Vec<f32>,
    post: Post,
}

// SAFETY: LAME's handle keeps no thread-local state and has no thread
// affinity (lame.c), so moving it to another thread is sound; the writer
// owns it alone, so it is never used from two threads at once.
unsafe impl Send for Mp3Stem {}

fn mp3_err(reason: impl std::fmt::Debug) -> EncodeError {
    EncodeError::Encoder { format: "mp3", reason: format!("{reason:?}") }
}

/// Samples handed to LAME at a time (64 Ki stereo frames, 512 KiB of `f32`).
const ENCODE_PIECE_SAMPLES: usize = 1 << 17;

impl Mp3Stem {
    pub(super) fn new(
        path: &Path,
        kbps: u16,
        rate: u32,
        channels: usize,
        post: Post,
        tags: &Tags,
    ) -> Result<Self, EncodeError> {
        let bitrate = mp3_bitrate(kbps).ok_or_else(|| mp3_err(format!("unsupported bit rate {kbps}")))?;
        let mut b = mp3lame_encoder::Builder::new().ok_or_else(|| mp3_err("LAME init failed"))?;
        b.set_num_channels(channels as u8).map_err(mp3_err)?;
        b.set_sample_rate(rate).map_err(mp3_err)?;
        // Written at the rate given (an MP3 rate, see `file_rate`): left to
        // itself LAME picks a lower one for a low bit rate (96 kbps from
        // 44.1 kHz came out at 32 kHz, `optimum_samplefreq` in lame.c).
        b.set_output_sample_rate(std::num::NonZeroU32::new(rate)).map_err(mp3_err)?;
        b.set_brate(bitrate).map_err(mp3_err)?;
        // LAME's own default algorithm quality (`-q 3`, LAME_DEFAULT_QUALITY
        // in LAME 3.100's lame.c; the `demucs` CLI uses `-q 2`). `-q 0` took
        // 4.4x as long (LAME through ffmpeg on this project's 2-core VM, four
        // 30 s stems at 320 kbps: 13.4 s against 3.1 s).
        b.set_quality(mp3lame_encoder::Quality::VeryNice).map_err(mp3_err)?;
        set_tags(&mut b, tags)?;
        let encoder = b.build().map_err(mp3_err)?;
        let file = File::create(path).map_err(io_err(path))?;
        Ok(Mp3Stem {
            path: path.to_path_buf(),
            file: BufWriter::new(file),
            encoder,
            buf: Vec::new(),
            scratch: Vec::new(),
            post,
        })
    }
}

/// Longest tag text written, in characters (the 250 bytes LAME's own
/// Latin-1 setters take, `mp3lame-encoder`'s `MAX_BUFFER`).
const MAX_TAG_CHARS: usize = 250;

/// Title, artist and album as ID3v2 text frames (TIT2, TPE1, TALB) in
/// UTF-16 with a byte order mark, so any script survives: LAME's plain
/// setters store Latin-1 ("Björk" read back as "BjÃ¶rk"). ID3v2 only (an
/// ID3v1 tag holds Latin-1 alone).
fn set_tags(b: &mut mp3lame_encoder::Builder, tags: &Tags) -> Result<(), EncodeError> {
    use mp3lame_encoder::ffi;
    let fields = [(c"TIT2", &tags.title), (c"TPE1", &tags.artist), (c"TALB", &tags.album)];
    if fields.iter().all(|(_, t)| t.as_deref().is_none_or(str::is_empty)) {
        return Ok(());
    }
    // SAFETY: `as_ptr` is the builder's live LAME handle; `id3tag_init`,
    // `id3tag_v2_only` and `id3tag_set_textinfo_utf16` (LAME 3.100,
    // id3tag.c) take it with a NUL-terminated frame id and a NUL-terminated
    // UTF-16 text starting with a byte order mark, which LAME copies.
    unsafe {
        let gfp = b.as_ptr();
        ffi::id3tag_init(gfp);
        ffi::id3tag_v2_only(gfp);
        for (id, text) in fields {
            let Some(text) = text.as_deref().filter(|t| !t.is_empty()) else { continue };
            let mut utf16: Vec<u16> = std::iter::once(0xFEFF)
                .chain(text.chars().take(MAX_TAG_CHARS).collect::<String>().encode_utf16())
                .collect();
            utf16.push(0);
            let r = ffi::id3tag_set_textinfo_utf16(gfp, id.as_ptr(), utf16.as_ptr());
            if r != 0 {
                return Err(mp3_err(format!("LAME refused the {} tag ({r})", id.to_string_lossy())));
            }
        }
    }
    Ok(())
}

impl StemWriter for Mp3Stem {
    fn write(&mut self, interleaved: &[f32]) -> Result<(), EncodeError> {
        // In pieces, so the scratch and output buffers stay small whatever
        // the block size (LAME's output does not depend on how its input is
        // split).
        for piece in interleaved.chunks(ENCODE_PIECE_SAMPLES) {
            self.scratch.clear();
            self.scratch.extend(piece.iter().map(|&v| self.post.apply(v)));
            self.buf.clear();
            self.buf.reserve(mp3lame_encoder::max_required_buffer_size(self.scratch.len()));
            self.encoder
                .encode_to_vec(mp3lame_encoder::InterleavedPcm(&self.scratch[..]), &mut self.buf)
                .map_err(mp3_err)?;
            self.file.write_all(&self.buf).map_err(io_err(&self.path))?;
        }
        Ok(())
    }
    fn finish(mut self: Box<Self>) -> Result<(), EncodeError> {
        self.buf.clear();
        self.buf.reserve(7200);
        // FlushGap (lame_encode_flush) encodes the last, zero-padded frame;
        // FlushNoGap (for gapless chains) would drop the last ~1100 frames.
        self.encoder.flush_to_vec::<mp3lame_encoder::FlushGap>(&mut self.buf).map_err(mp3_err)?;
        self.file.write_all(&self.buf).map_err(io_err(&self.path))?;
        self.file.flush().map_err(io_err(&self.path))?;
        // LAME left a frame for its tag after the ID3v2 tag, zeros until
        // now: the "Info" tag (LAME 3.100, VbrTag.c) with the frame count
        // and the encoder delay and padding, which decoders (ffmpeg,
        // symphonia, players) use to drop LAME's 1105 frames of delay and
        // the last frame's padding. Left as zeros, it plays as one frame of
        // silence and the delay stays: every stem ~51 ms late at 44.1 kHz.
        if self.encoder.is_lame_tag_written() {
            self.buf.clear();
            self.buf.reserve(self.encoder.lame_tag_size());
            if self.encoder.lame_tag_encode_to_vec(&mut self.buf).is_some() {
                use std::io::{Seek, SeekFrom};
                let at = self.encoder.id3v2_tag_size() as u64;
                let file = self.file.get_mut();
                file.seek(SeekFrom::Start(at)).map_err(io_err(&self.path))?;
                file.write_all(&self.buf).map_err(io_err(&self.path))?;
            }
        }
        self.file.get_ref().sync_data().map_err(io_err(&self.path))
    }
}

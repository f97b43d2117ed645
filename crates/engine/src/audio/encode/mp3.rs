//! MP3 CBR through LAME 3.100 (mp3lame-encoder).

use std::fs::File;
use std::io::{BufWriter, Write};
use std::path::{Path, PathBuf};

use super::{io_err, EncodeError, Post, StemWriter, Tags};

/// LAME's bit rate for `kbps` (the CBR rates the app offers).
pub(super) fn mp3_bitrate(kbps: u16) -> Option<mp3lame_encoder::Bitrate> {
    use mp3lame_encoder::Bitrate::*;
    Some(match kbps {
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

// SAFETY-free: the LAME handle is only used from the thread that owns the writer.
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
        b.set_brate(bitrate).map_err(mp3_err)?;
        // LAME's own default algorithm quality (`-q 3`, LAME_DEFAULT_QUALITY
        // in LAME 3.100's lame.c; the `demucs` CLI uses `-q 2`). `-q 0` took
        // 4.4x as long (LAME through ffmpeg on this project's 2-core VM, four
        // 30 s stems at 320 kbps: 13.4 s against 3.1 s).
        b.set_quality(mp3lame_encoder::Quality::VeryNice).map_err(mp3_err)?;
        let text = |t: &Option<String>| t.as_deref().unwrap_or("").as_bytes().to_vec();
        let (title, artist, album) = (text(&tags.title), text(&tags.artist), text(&tags.album));
        b.set_id3_tag(mp3lame_encoder::Id3Tag {
            title: &title,
            artist: &artist,
            album: &album,
            album_art: b"",
            year: b"",
            comment: b"",
        })
        .map_err(mp3_err)?;
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
        self.file.get_ref().sync_data().map_err(io_err(&self.path))
    }
}

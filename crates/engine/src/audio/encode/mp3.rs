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
        b.set_quality(mp3lame_encoder::Quality::Best).map_err(mp3_err)?;
        let (title, artist) = (tags.title.as_deref().unwrap_or(""), tags.artist.as_deref().unwrap_or(""));
        b.set_id3_tag(mp3lame_encoder::Id3Tag {
            title: title.as_bytes(),
            artist: artist.as_bytes(),
            album: b"",
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
        self.scratch.clear();
        self.scratch.extend(interleaved.iter().map(|&v| self.post.apply(v)));
        self.buf.clear();
        self.buf.reserve(mp3lame_encoder::max_required_buffer_size(self.scratch.len()));
        self.encoder
            .encode_to_vec(mp3lame_encoder::InterleavedPcm(&self.scratch[..]), &mut self.buf)
            .map_err(mp3_err)?;
        self.file.write_all(&self.buf).map_err(io_err(&self.path))
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

//! FLAC 16/24-bit through flacenc.

use std::fs::File;
use std::io::{BufWriter, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};

use super::{io_err, to_int, EncodeError, Post, StemWriter, Tags};

/// A VORBIS_COMMENT metadata block's body (RFC 9639 §8.6, the Vorbis I
/// comment header without its framing bit): vendor string, then
/// `TITLE=`, `ARTIST=`, `ALBUM=` as given, every length a 32-bit
/// little-endian count of UTF-8 bytes. `None` without tags (the stems
/// `stemroom separate` writes stay as they were). Each value is cut to
/// [`MAX_TAG_BYTES`] at a character boundary.
pub(super) fn vorbis_comment(tags: &Tags) -> Option<Vec<u8>> {
    let fields: Vec<String> = [("TITLE", &tags.title), ("ARTIST", &tags.artist), ("ALBUM", &tags.album)]
        .into_iter()
        .filter_map(|(name, value)| {
            let v = value.as_deref().filter(|v| !v.is_empty())?;
            let mut end = v.len().min(MAX_TAG_BYTES);
            while !v.is_char_boundary(end) {
                end -= 1;
            }
            Some(format!("{name}={}", &v[..end]))
        })
        .collect();
    if fields.is_empty() {
        return None;
    }
    let mut out = Vec::new();
    let put = |s: &str, out: &mut Vec<u8>| {
        out.extend_from_slice(&(s.len() as u32).to_le_bytes());
        out.extend_from_slice(s.as_bytes());
    };
    put(VENDOR, &mut out);
    out.extend_from_slice(&(fields.len() as u32).to_le_bytes());
    for f in &fields {
        put(f, &mut out);
    }
    Some(out)
}

/// The vendor string of the comment block.
const VENDOR: &str = "Stemroom";

/// Longest tag value written, in bytes (a title or artist; the block's
/// limit is 16 MiB).
const MAX_TAG_BYTES: usize = 1024;

/// The VORBIS_COMMENT block type (RFC 9639 §8.1, Table 1).
const VORBIS_COMMENT_TYPE: u8 = 4;

/// FLAC written frame by frame: header first (rewritten at the end with the
/// total length and MD5), then each 4096-frame block as soon as it is full.
pub(super) struct FlacStem {
    path: PathBuf,
    file: BufWriter<File>,
    config: flacenc::error::Verified<flacenc::config::Encoder>,
    stream: flacenc::component::Stream,
    fb: flacenc::source::FrameBuf,
    ctx: flacenc::source::Context,
    pending: Vec<i32>,
    bits: u32,
    channels: usize,
    post: Post,
    frame_number: usize,
    min_frame: usize,
    max_frame: usize,
}

const FLAC_BLOCK: usize = 4096;

fn flac_err(reason: impl std::fmt::Display) -> EncodeError {
    EncodeError::Encoder { format: "flac", reason: reason.to_string() }
}

impl FlacStem {
    pub(super) fn new(
        path: &Path,
        bits: u8,
        rate: u32,
        channels: usize,
        post: Post,
        tags: &Tags,
    ) -> Result<Self, EncodeError> {
        use flacenc::error::Verify;
        let config = flacenc::config::Encoder::default().into_verified().map_err(|(_, e)| flac_err(e))?;
        let mut stream = flacenc::component::Stream::new(rate as usize, channels, bits as usize).map_err(flac_err)?;
        stream.stream_info_mut().set_block_sizes(FLAC_BLOCK, FLAC_BLOCK).map_err(flac_err)?;
        if let Some(comment) = vorbis_comment(tags) {
            let block =
                flacenc::component::MetadataBlockData::new_unknown(VORBIS_COMMENT_TYPE, &comment).map_err(flac_err)?;
            stream.add_metadata_block(block);
        }
        let file = File::create(path).map_err(io_err(path))?;
        let mut me = FlacStem {
            path: path.to_path_buf(),
            file: BufWriter::new(file),
            config,
            stream,
            fb: flacenc::source::FrameBuf::with_size(channels, FLAC_BLOCK).map_err(flac_err)?,
            ctx: flacenc::source::Context::new(bits as usize, channels),
            pending: Vec::with_capacity(FLAC_BLOCK * channels),
            bits: bits as u32,
            channels,
            post,
            frame_number: 0,
            min_frame: usize::MAX,
            max_frame: 0,
        };
        me.write_header()?;
        Ok(me)
    }

    fn write_header(&mut self) -> Result<(), EncodeError> {
        use flacenc::component::BitRepr;
        let mut sink = flacenc::bitsink::ByteSink::new();
        self.stream.write(&mut sink).map_err(flac_err)?;
        self.file.write_all(sink.as_slice()).map_err(io_err(&self.path))
    }

    fn flush_block(&mut self) -> Result<(), EncodeError> {
        use flacenc::component::BitRepr;
        use flacenc::source::Fill;
        if self.pending.is_empty() {
            return Ok(());
        }
        self.fb.fill_interleaved(&self.pending).map_err(flac_err)?;
        self.ctx.fill_interleaved(&self.pending).map_err(flac_err)?;
        let frame =
            flacenc::encode_fixed_size_frame(&self.config, &self.fb, self.frame_number, self.stream.stream_info())
                .map_err(flac_err)?;
        let mut sink = flacenc::bitsink::ByteSink::new();
        frame.write(&mut sink).map_err(flac_err)?;
        let bytes = sink.as_slice();
        self.min_frame = self.min_frame.min(bytes.len());
        self.max_frame = self.max_frame.max(bytes.len());
        self.file.write_all(bytes).map_err(io_err(&self.path))?;
        self.frame_number += 1;
        self.pending.clear();
        Ok(())
    }
}

impl StemWriter for FlacStem {
    fn write(&mut self, interleaved: &[f32]) -> Result<(), EncodeError> {
        for &v in interleaved {
            self.pending.push(to_int(self.post.apply(v), self.bits));
            if self.pending.len() == FLAC_BLOCK * self.channels {
                self.flush_block()?;
            }
        }
        Ok(())
    }

    fn finish(mut self: Box<Self>) -> Result<(), EncodeError> {
        self.flush_block()?;
        let info = self.stream.stream_info_mut();
        info.set_total_samples(self.ctx.total_samples());
        info.set_md5_digest(&self.ctx.md5_digest());
        if self.frame_number > 0 {
            info.set_frame_sizes(self.min_frame, self.max_frame).map_err(flac_err)?;
        }
        self.file.seek(SeekFrom::Start(0)).map_err(io_err(&self.path))?;
        self.write_header()?;
        self.file.flush().map_err(io_err(&self.path))?;
        self.file.get_ref().sync_data().map_err(io_err(&self.path))
    }
}

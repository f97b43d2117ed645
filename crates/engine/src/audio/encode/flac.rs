//! FLAC 16/24-bit through flacenc.

use std::fs::File;
use std::io::{BufWriter, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};

use super::{io_err, to_int, EncodeError, Post, StemWriter};

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
    pub(super) fn new(path: &Path, bits: u8, rate: u32, channels: usize, post: Post) -> Result<Self, EncodeError> {
        use flacenc::error::Verify;
        let config = flacenc::config::Encoder::default().into_verified().map_err(|(_, e)| flac_err(e))?;
        let mut stream = flacenc::component::Stream::new(rate as usize, channels, bits as usize).map_err(flac_err)?;
        stream.stream_info_mut().set_block_sizes(FLAC_BLOCK, FLAC_BLOCK).map_err(flac_err)?;
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

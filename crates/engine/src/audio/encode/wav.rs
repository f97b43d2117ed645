//! WAV 16/24-bit integer or 32-bit float through hound.

use std::fs::File;
use std::io::BufWriter;
use std::path::{Path, PathBuf};

use super::{io_err, to_int, EncodeError, Post, StemWriter, WavDepth};

/// A WAV file written sample by sample.
pub(super) struct WavStem {
    path: PathBuf,
    writer: hound::WavWriter<BufWriter<File>>,
    depth: WavDepth,
    post: Post,
    /// Sample bytes written so far (checked against
    /// [`super::MAX_WAV_DATA_BYTES`]: hound's count would wrap).
    pub(super) bytes: u64,
}

impl WavStem {
    pub(super) fn new(
        path: &Path,
        depth: WavDepth,
        rate: u32,
        channels: usize,
        post: Post,
    ) -> Result<Self, EncodeError> {
        let (bits, fmt) = match depth {
            WavDepth::Int16 => (16, hound::SampleFormat::Int),
            WavDepth::Int24 => (24, hound::SampleFormat::Int),
            WavDepth::Float32 => (32, hound::SampleFormat::Float),
        };
        let spec =
            hound::WavSpec { channels: channels as u16, sample_rate: rate, bits_per_sample: bits, sample_format: fmt };
        let writer = hound::WavWriter::create(path, spec).map_err(|e| hound_err(path, e))?;
        Ok(WavStem { path: path.to_path_buf(), writer, depth, post, bytes: 0 })
    }
}

fn hound_err(path: &Path, e: hound::Error) -> EncodeError {
    match e {
        hound::Error::IoError(source) => EncodeError::Io { path: path.to_path_buf(), source },
        other => EncodeError::Encoder { format: "wav", reason: other.to_string() },
    }
}

impl StemWriter for WavStem {
    fn write(&mut self, interleaved: &[f32]) -> Result<(), EncodeError> {
        self.bytes += interleaved.len() as u64 * self.depth.bytes();
        if self.bytes > super::MAX_WAV_DATA_BYTES {
            return Err(EncodeError::Encoder {
                format: "wav",
                reason: "a WAV file holds at most 4 GiB of samples: choose FLAC for a stem this long".into(),
            });
        }
        for &v in interleaved {
            let v = self.post.apply(v);
            let r = match self.depth {
                WavDepth::Int16 => self.writer.write_sample(to_int(v, 16) as i16),
                WavDepth::Int24 => self.writer.write_sample(to_int(v, 24)),
                WavDepth::Float32 => self.writer.write_sample(v),
            };
            r.map_err(|e| hound_err(&self.path, e))?;
        }
        Ok(())
    }
    fn finish(self: Box<Self>) -> Result<(), EncodeError> {
        let path = self.path.clone();
        self.writer.finalize().map_err(|e| hound_err(&path, e))?;
        // On disk before the job is recorded as done (as FLAC and MP3 do):
        // a power cut after the queue's commit must not leave empty stems.
        // hound's writer is gone with its file; fsync(2) takes any
        // descriptor of the file.
        File::open(&path).and_then(|f| f.sync_data()).map_err(io_err(&path))
    }
}

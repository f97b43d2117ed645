//! The `rescale` clip mode: the gain is known only once the whole stem is,
//! so samples are spooled raw; but most stems never come near full scale
//! (their gain is exactly 1), so they are also encoded as they arrive, at
//! gain 1. At the end that file is kept when the peak allows gain 1, and
//! re-encoded from the spool only when the stem must be scaled down; either
//! way the result is what encoding at the right gain gives.

use std::fs::File;
use std::io::{BufReader, BufWriter, Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};

use super::{io_err, open_direct, EncodeError, OutputFormat, Post, StemWriter, Tags};

/// Raw `f32` spool for `rescale` plus the speculative encode at gain 1.
pub(super) struct Spool {
    target: PathBuf,
    /// The target encoded at gain 1 as samples arrive (`None` once it
    /// failed: the spool is then the only copy).
    at_unity: Option<Box<dyn StemWriter>>,
    /// Anonymous (unnamed) scratch file beside the target: it vanishes with
    /// the writer, even when the process is killed.
    file: BufWriter<File>,
    format: OutputFormat,
    rate: u32,
    channels: usize,
    peak: f32,
    tags: Tags,
}

impl Spool {
    pub(super) fn new(
        target: &Path,
        format: OutputFormat,
        rate: u32,
        channels: usize,
        tags: Tags,
    ) -> Result<Self, EncodeError> {
        format.validate().map_err(|reason| EncodeError::Encoder { format: format.extension(), reason })?;
        let dir = target.parent().filter(|d| !d.as_os_str().is_empty()).unwrap_or(Path::new("."));
        let file = tempfile::tempfile_in(dir).map_err(io_err(target))?;
        let at_unity = open_direct(target, format, rate, channels, Post::Gain(1.0), &tags)?;
        Ok(Spool {
            target: target.to_path_buf(),
            at_unity: Some(at_unity),
            file: BufWriter::with_capacity(1 << 20, file),
            format,
            rate,
            channels,
            peak: 0.0,
            tags,
        })
    }
}

impl StemWriter for Spool {
    fn write(&mut self, interleaved: &[f32]) -> Result<(), EncodeError> {
        let mut bytes = Vec::with_capacity(interleaved.len() * 4);
        for &v in interleaved {
            // (What is not a number is written as silence: no peak.)
            if v.is_finite() {
                self.peak = self.peak.max(v.abs());
            }
            bytes.extend_from_slice(&v.to_le_bytes());
        }
        self.file.write_all(&bytes).map_err(io_err(&self.target))?;
        // Once the stem must be scaled, the encode at gain 1 is of no use.
        if 1.01 * self.peak > 1.0 {
            self.at_unity = None;
        }
        match self.at_unity.as_mut() {
            Some(w) => w.write(interleaved),
            None => Ok(()),
        }
    }

    fn finish(self: Box<Self>) -> Result<(), EncodeError> {
        self.finish_or_stop(&std::sync::atomic::AtomicBool::new(false))
    }

    fn finish_or_stop(mut self: Box<Self>, stop: &std::sync::atomic::AtomicBool) -> Result<(), EncodeError> {
        self.file.flush().map_err(io_err(&self.target))?;
        let gain = 1.0 / (1.01 * self.peak).max(1.0);
        if let Some(w) = self.at_unity.take() {
            if gain == 1.0 {
                return w.finish();
            }
        }
        // Scaled down: encode the spool again (`open_direct` recreates the
        // target).
        let mut out = open_direct(&self.target, self.format, self.rate, self.channels, Post::Gain(gain), &self.tags)?;
        let spool = self.file.get_mut();
        spool.seek(SeekFrom::Start(0)).map_err(io_err(&self.target))?;
        let mut reader = BufReader::with_capacity(1 << 20, &*spool);
        let mut bytes = vec![0u8; 65536 * 4];
        let mut samples = Vec::with_capacity(65536);
        loop {
            if stop.load(std::sync::atomic::Ordering::Acquire) {
                return Err(EncodeError::Stopped);
            }
            let mut filled = 0;
            while filled < bytes.len() {
                let n = reader.read(&mut bytes[filled..]).map_err(io_err(&self.target))?;
                if n == 0 {
                    break;
                }
                filled += n;
            }
            if filled == 0 {
                break;
            }
            samples.clear();
            samples.extend(
                bytes[..filled - filled % 4].chunks_exact(4).map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]])),
            );
            out.write(&samples)?;
        }
        out.finish()
    }
}

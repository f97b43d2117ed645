//! The decoded mixture on disk, read back by window.

use std::fs::File;
use std::io::{BufWriter, Write};
use std::os::unix::fs::FileExt;
use std::path::Path;

use sha2::{Digest, Sha256};

use crate::audio::decode::{self, DecodeError, DecodedInfo};
use crate::audio::resample::StreamResampler;
use crate::progress::Listener;
use crate::separate::{MixSource, MixStatsAccumulator};
use crate::Error;

/// The mixture spooled to disk: interleaved `f32` frames at the model rate.
pub(super) struct SpoolMix {
    pub(super) file: File,
    pub(super) frames: usize,
    pub(super) bytes: Vec<u8>,
    pub(super) window: Vec<f32>,
}

impl SpoolMix {
    pub(super) fn read_interleaved(&mut self, start: usize, len: usize, out: &mut Vec<f32>) -> std::io::Result<()> {
        self.bytes.resize(len * 8, 0);
        self.file.read_exact_at(&mut self.bytes, start as u64 * 8)?;
        out.clear();
        out.extend(self.bytes.chunks_exact(4).map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]])));
        Ok(())
    }
}

impl MixSource for SpoolMix {
    fn frames(&self) -> usize {
        self.frames
    }
    fn read(&mut self, start: usize, len: usize, out: &mut [f32], off: usize, out_len: usize) -> std::io::Result<()> {
        let mut window = std::mem::take(&mut self.window);
        self.read_interleaved(start, len, &mut window)?;
        for (j, fr) in window.chunks_exact(2).enumerate() {
            out[off + j] = fr[0];
            out[out_len + off + j] = fr[1];
        }
        self.window = window;
        Ok(())
    }
}

/// The mixture decoded and resampled to the model rate, in an anonymous
/// scratch file (no name: it vanishes with its last handle, even when the
/// process is killed).
pub(super) struct Spooled {
    file: File,
    /// Frames at the model rate.
    pub(super) frames: usize,
    /// Statistics of the mono reference, for normalisation.
    pub(super) stats: MixStatsAccumulator,
    /// The input as decoded (its own rate, channels and length).
    pub(super) decoded: DecodedInfo,
    /// SHA-256 (lower-case hex) of the spool's bytes: the network's input
    /// exactly, whatever decoder (native or ffmpeg, and their versions) and
    /// resampler made it. A saved checkpoint must match it
    /// ([`super::checkpoint`]).
    pub(super) sha256: String,
}

impl Spooled {
    /// A reader of the spool with its own file handle.
    pub(super) fn reader(&self) -> Result<SpoolMix, Error> {
        Ok(SpoolMix {
            // Readers use positioned reads, so sharing the offset is harmless.
            file: self.file.try_clone().map_err(Error::Scratch)?,
            frames: self.frames,
            bytes: Vec::new(),
            window: Vec::new(),
        })
    }
}

/// Append interleaved stereo frames to the spool and to the statistics;
/// returns the frames written.
fn write_frames(
    buf: &[f32],
    stats: &mut MixStatsAccumulator,
    hash: &mut Sha256,
    w: &mut BufWriter<File>,
) -> Result<usize, Error> {
    let mut bytes = Vec::with_capacity(buf.len() * 4);
    for fr in buf.chunks_exact(2) {
        stats.push((fr[0] as f64 + fr[1] as f64) / 2.0);
        bytes.extend_from_slice(&fr[0].to_le_bytes());
        bytes.extend_from_slice(&fr[1].to_le_bytes());
    }
    hash.update(&bytes);
    w.write_all(&bytes).map_err(Error::Scratch)?;
    Ok(buf.len() / 2)
}

/// Decode `input` to stereo, resample it to `model_rate` Hz and spool it as
/// interleaved little-endian `f32` frames into a temporary file in
/// `scratch_dir`.
///
/// # Errors
/// [`Error::Decode`] (including [`DecodeError::NoSamples`] for a file with
/// no audio), [`Error::Scratch`], [`Error::Resample`], [`Error::Cancelled`].
pub(super) fn decode_to_spool(
    input: &Path,
    model_rate: u32,
    scratch_dir: &Path,
    listener: &dyn Listener,
) -> Result<Spooled, Error> {
    let file = tempfile::tempfile_in(scratch_dir).map_err(Error::Scratch)?;
    let mut stats = MixStatsAccumulator::default();
    let mut resampler: Option<StreamResampler> = None;
    let mut writer = BufWriter::with_capacity(1 << 20, file.try_clone().map_err(Error::Scratch)?);
    let mut frames = 0usize;
    let mut buf = Vec::new();
    let mut hash = Sha256::new();
    let decoded = decode::decode(input, listener, |block, rate| {
        if resampler.is_none() {
            resampler = Some(StreamResampler::new(rate, model_rate, 2).map_err(Error::Resample)?);
        }
        let Some(r) = resampler.as_mut() else { return Ok(()) };
        buf.clear();
        r.push(block, &mut buf).map_err(Error::Resample)?;
        frames += write_frames(&buf, &mut stats, &mut hash, &mut writer)?;
        Ok(())
    })?;
    if let Some(r) = resampler.as_mut() {
        buf.clear();
        r.finish(&mut buf).map_err(Error::Resample)?;
        frames += write_frames(&buf, &mut stats, &mut hash, &mut writer)?;
    }
    writer.flush().map_err(Error::Scratch)?;
    drop(writer);
    if frames == 0 {
        return Err(DecodeError::NoSamples(input.to_path_buf()).into());
    }
    let sha256 = hash.finalize().iter().map(|b| format!("{b:02x}")).collect();
    Ok(Spooled { file, frames, stats, decoded, sha256 })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::audio::encode::{self, ClipMode, OutputFormat, WavDepth};

    fn wav(path: &Path, nudge: Option<usize>) {
        let mut x: Vec<f32> = (0..44_100 * 2).map(|i| (i as f32 * 0.01).sin() * 0.3).collect();
        if let Some(i) = nudge {
            x[i] += 1e-3;
        }
        let mut w = encode::open(path, OutputFormat::Wav { depth: WavDepth::Float32 }, 44_100, 2, ClipMode::None)
            .expect("open");
        w.write(&x).expect("write");
        w.finish().expect("finish");
    }

    /// The spool's digest names the samples the network reads: the same
    /// file gives the same digest, one sample changed gives another (what a
    /// checkpoint is matched against, beside the file's own bytes).
    #[test]
    fn the_spools_digest_follows_its_samples() {
        let dir = tempfile::tempdir().expect("tempdir");
        let (a, b) = (dir.path().join("a.wav"), dir.path().join("b.wav"));
        wav(&a, None);
        wav(&b, Some(40_000));
        let digest = |p: &Path| decode_to_spool(p, 44_100, dir.path(), &crate::progress::Silent).expect("spool").sha256;
        let first = digest(&a);
        assert_eq!(first.len(), 64);
        assert_eq!(digest(&a), first, "stable from run to run");
        assert_ne!(digest(&b), first, "another sample, another digest");
    }
}

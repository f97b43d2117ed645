//! The lock-step stem reader: a song's stems decoded side by side so that
//! every read gives each stem the same frames. The player's reader thread
//! and exports both read through it.
//!
//! Frames are at the stems' own sample rate, interleaved stereo `f32`
//! (every decoder folds its input to stereo). A stem that ends before the
//! others is padded with silence.

use std::path::Path;

use stemroom_engine::audio::decode::{DecodeError, StreamDecoder};

/// One stem's decoder with the frames decoded but not yet used.
struct StemReader {
    decoder: StreamDecoder,
    pending: Vec<f32>,
    used: usize,
    eof: bool,
}

impl StemReader {
    fn open(path: &Path) -> Result<Self, DecodeError> {
        Ok(StemReader { decoder: StreamDecoder::open(path)?, pending: Vec::new(), used: 0, eof: false })
    }

    fn seek(&mut self, frame: u64) -> Result<(), DecodeError> {
        self.decoder.seek(frame)?;
        self.pending.clear();
        self.used = 0;
        self.eof = false;
        Ok(())
    }

    /// Fill `dst` (interleaved stereo) from the stream; returns the frames
    /// written (fewer only at the end of the stream).
    fn read(&mut self, dst: &mut [f32]) -> Result<usize, DecodeError> {
        let mut at = 0;
        while at < dst.len() {
            if self.used == self.pending.len() {
                if self.eof {
                    break;
                }
                match self.decoder.next_block()? {
                    Some((block, _)) => {
                        self.pending.clear();
                        self.pending.extend_from_slice(block);
                        self.used = 0;
                    }
                    None => {
                        self.eof = true;
                        break;
                    }
                }
            }
            let n = (self.pending.len() - self.used).min(dst.len() - at);
            dst[at..at + n].copy_from_slice(&self.pending[self.used..self.used + n]);
            self.used += n;
            at += n;
        }
        Ok(at / 2)
    }
}

/// A song's stems, read in lock step.
pub struct StemSet {
    stems: Vec<StemReader>,
}

impl std::fmt::Debug for StemSet {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("StemSet").field("stems", &self.stems.len()).finish()
    }
}

impl StemSet {
    /// Open every stem file, in order.
    ///
    /// # Errors
    /// [`DecodeError`] of the first stem that cannot be opened.
    pub fn open<P: AsRef<Path>>(paths: &[P]) -> Result<Self, DecodeError> {
        let stems = paths.iter().map(|p| StemReader::open(p.as_ref())).collect::<Result<_, _>>()?;
        Ok(StemSet { stems })
    }

    /// Number of stems.
    pub fn len(&self) -> usize {
        self.stems.len()
    }

    /// Whether there are no stems.
    pub fn is_empty(&self) -> bool {
        self.stems.is_empty()
    }

    /// The first stem's sample rate in Hz (0 without stems).
    pub fn sample_rate(&self) -> u32 {
        self.stems.first().map_or(0, |s| s.decoder.sample_rate())
    }

    /// The first two different sample rates (Hz) when the stems do not share one.
    pub fn mixed_rates(&self) -> Option<(u32, u32)> {
        let rate = self.sample_rate();
        self.stems.iter().map(|s| s.decoder.sample_rate()).find(|&r| r != rate).map(|other| (rate, other))
    }

    /// The longest length any stem declares, in frames (`None` when none does).
    pub fn declared_frames(&self) -> Option<u64> {
        self.stems.iter().filter_map(|s| s.decoder.declared_frames()).max()
    }

    /// Continue every stem from `frame` (stems' rate), dropping what was
    /// decoded before.
    ///
    /// # Errors
    /// [`DecodeError`] when a stem cannot seek.
    pub fn seek(&mut self, frame: u64) -> Result<(), DecodeError> {
        self.stems.iter_mut().try_for_each(|s| s.seek(frame))
    }

    /// Read the next `frames` frames of every stem: stem `k` goes to
    /// `out[k][..2 * frames]` (interleaved stereo; `out[k]` is grown if
    /// shorter), padded with silence where the stem has ended. Returns the
    /// most frames any stem really had (0 once every stem has ended).
    ///
    /// # Errors
    /// [`DecodeError`] when a stem cannot be decoded.
    ///
    /// # Panics
    /// If `out` has fewer entries than there are stems.
    pub fn read(&mut self, frames: usize, out: &mut [Vec<f32>]) -> Result<usize, DecodeError> {
        let mut longest = 0;
        for (stem, buf) in self.stems.iter_mut().zip(out.iter_mut()) {
            if buf.len() < 2 * frames {
                buf.resize(2 * frames, 0.0);
            }
            let dst = &mut buf[..2 * frames];
            let got = stem.read(dst)?;
            dst[2 * got..].fill(0.0);
            longest = longest.max(got);
        }
        Ok(longest)
    }

    /// Whether every stem has reached its end.
    pub fn all_ended(&self) -> bool {
        self.stems.iter().all(|s| s.eof)
    }
}

//! Finished frames of every source into the stem writers.

use std::path::PathBuf;

use super::spool::SpoolMix;
use super::OtherMethod;
use crate::audio::encode::{StemWriter, ThreadedWriter};
use crate::audio::resample::StreamResampler;
use crate::separate::BlockSink;
use crate::Error;

/// An output file under construction: its temporary and final names.
pub(super) struct Pending {
    pub(super) stem: String,
    pub(super) tmp: PathBuf,
    pub(super) dest: PathBuf,
    pub(super) writer: Option<ThreadedWriter>,
    pub(super) resampler: StreamResampler,
    /// Frames the stem may still take: its length is the input's at the
    /// output rate, `ceil(frames × out / in)`; the two resamplings (to the
    /// model's rate and back) round up twice and could give one more.
    pub(super) frames_left: u64,
}

impl Pending {
    /// Write `resampled` (interleaved stereo) up to the stem's length.
    pub(super) fn write(&mut self, resampled: &[f32]) -> Result<(), Error> {
        let n = (resampled.len() as u64 / 2).min(self.frames_left);
        self.frames_left -= n;
        if let Some(w) = self.writer.as_mut() {
            w.write(&resampled[..n as usize * 2])?;
        }
        Ok(())
    }
}

/// Splits blocks of `[sources][channels][frames]` into the outputs (two-stem
/// mode: the chosen source and its complement).
pub(super) struct StemSink<'a> {
    pub(super) outputs: &'a mut [Pending],
    pub(super) sources: usize,
    pub(super) chosen: Option<usize>,
    pub(super) other: OtherMethod,
    pub(super) mix: Option<SpoolMix>,
    pub(super) mix_buf: Vec<f32>,
    pub(super) block: Vec<f32>,
    pub(super) resampled: Vec<f32>,
}

impl StemSink<'_> {
    fn push(p: &mut Pending, block: &[f32], resampled: &mut Vec<f32>) -> Result<(), Error> {
        resampled.clear();
        p.resampler.push(block, resampled).map_err(Error::Resample)?;
        p.write(resampled)
    }
}

impl BlockSink for StemSink<'_> {
    fn write(&mut self, start: usize, frames: usize, stems: &[f32]) -> Result<(), Error> {
        let ch = 2;
        let plane = |s: usize, c: usize| &stems[(s * ch + c) * frames..][..frames];
        let mut o = 0;
        match self.chosen {
            None => {
                for s in 0..self.sources {
                    self.block.clear();
                    for j in 0..frames {
                        self.block.extend([plane(s, 0)[j], plane(s, 1)[j]]);
                    }
                    Self::push(&mut self.outputs[s], &self.block, &mut self.resampled)?;
                }
            }
            Some(k) => {
                self.block.clear();
                for j in 0..frames {
                    self.block.extend([plane(k, 0)[j], plane(k, 1)[j]]);
                }
                Self::push(&mut self.outputs[o], &self.block, &mut self.resampled)?;
                o += 1;
                if self.other != OtherMethod::None {
                    let mut rest = vec![0.0f32; frames * 2];
                    match self.other {
                        OtherMethod::Add => {
                            for s in (0..self.sources).filter(|&s| s != k) {
                                for j in 0..frames {
                                    rest[2 * j] += plane(s, 0)[j];
                                    rest[2 * j + 1] += plane(s, 1)[j];
                                }
                            }
                        }
                        _ => {
                            let mix = self.mix.as_mut().ok_or_else(|| Error::InvalidOptions("no mixture".into()))?;
                            mix.read_interleaved(start, frames, &mut self.mix_buf).map_err(Error::Scratch)?;
                            for (r, (m, b)) in rest.iter_mut().zip(self.mix_buf.iter().zip(&self.block)) {
                                *r = m - b;
                            }
                        }
                    }
                    Self::push(&mut self.outputs[o], &rest, &mut self.resampled)?;
                }
            }
        }
        Ok(())
    }
}

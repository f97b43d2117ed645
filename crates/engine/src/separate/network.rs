//! What the algorithm needs from the network and from the mixture.

/// Why one network run failed.
#[derive(Debug, thiserror::Error)]
pub enum NetworkError {
    /// The runtime could not run the segment (out of memory, device lost,
    /// a provider error).
    #[error("inference failed: {0}")]
    Inference(String),
    /// The outputs do not have the shapes the model's manifest describes.
    #[error("model interface mismatch: {0}")]
    Interface(String),
}

/// The network: one segment in, per-source estimates out.
pub trait Network {
    /// Run one segment and hand the outputs to `take` while they are alive
    /// (no copy of the 55 MB of outputs is kept between segments).
    ///
    /// - `mix`: planar `[channels][segment]` normalised waveform.
    /// - `spec`: `[channels * 2][bins][frames]` complex-as-channels spectrogram.
    /// - `take(out_spec, out_wave)`: `out_spec` is
    ///   `[sources][channels * 2][bins][frames]`, `out_wave` is
    ///   `[sources][channels][segment]`.
    ///
    /// # Errors
    /// [`NetworkError`] if inference fails or the outputs have the wrong size.
    fn forward(&mut self, mix: &[f32], spec: &[f32], take: &mut dyn FnMut(&[f32], &[f32])) -> Result<(), NetworkError>;
}

/// The mixture at the model's sample rate, readable by window.
pub trait MixSource {
    /// Length in frames. Channels are the model's (2).
    fn frames(&self) -> usize;
    /// Write frames `start .. start + len` (clipped to `0 .. frames()`) into
    /// `out` as planar `[channels][len]`, at offset `start - window_start`
    /// where `window_start` is the first frame of the window; frames outside
    /// the signal are left untouched (the caller zeroes them).
    ///
    /// # Errors
    /// I/O errors of the backing store.
    fn read(
        &mut self,
        start: usize,
        len: usize,
        out: &mut [f32],
        out_offset: usize,
        out_len: usize,
    ) -> std::io::Result<()>;
}

/// An in-memory mixture, planar `[channels][frames]`.
#[derive(Debug, Clone)]
pub struct MemoryMix {
    /// Planar samples, `channels * frames` long.
    pub data: Vec<f32>,
    /// Channel count.
    pub channels: usize,
}

impl MixSource for MemoryMix {
    fn frames(&self) -> usize {
        self.data.len() / self.channels.max(1)
    }
    fn read(&mut self, start: usize, len: usize, out: &mut [f32], off: usize, out_len: usize) -> std::io::Result<()> {
        let n = self.frames();
        for c in 0..self.channels {
            out[c * out_len + off..][..len].copy_from_slice(&self.data[c * n + start..][..len]);
        }
        Ok(())
    }
}

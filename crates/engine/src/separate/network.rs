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

/// Storage one network run writes its outputs into (a runtime may bring its
/// own, e.g. tensors it can write without a copy).
pub trait OutputStore: Send + std::any::Any {
    /// (`out_spec`, `out_wave`): `[sources][channels * 2][bins][frames]` and
    /// `[sources][channels][segment]`.
    fn parts(&mut self) -> (&mut [f32], &mut [f32]);
}

/// Plain vectors as an [`OutputStore`].
#[derive(Debug, Clone)]
pub struct VecOutput {
    /// `[sources][channels * 2][bins][frames]`.
    pub spec: Vec<f32>,
    /// `[sources][channels][segment]`.
    pub wave: Vec<f32>,
}

impl OutputStore for VecOutput {
    fn parts(&mut self) -> (&mut [f32], &mut [f32]) {
        (&mut self.spec, &mut self.wave)
    }
}

/// The outputs of one network run, in storage the separator recycles: a
/// pipelined separation keeps a few of these in flight (one being written by
/// the network, one being read by the iSTFT and overlap-add).
pub struct NetOutput(Box<dyn OutputStore>);

impl std::fmt::Debug for NetOutput {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("NetOutput")
    }
}

impl NetOutput {
    /// Zeroed vectors of `spec_len` and `wave_len` samples.
    pub fn vec(spec_len: usize, wave_len: usize) -> Self {
        NetOutput(Box::new(VecOutput { spec: vec![0.0; spec_len], wave: vec![0.0; wave_len] }))
    }
    /// Wrap a runtime's own storage.
    pub fn from_store(store: Box<dyn OutputStore>) -> Self {
        NetOutput(store)
    }
    /// (`out_spec`, `out_wave`), see [`OutputStore::parts`].
    pub fn parts(&mut self) -> (&mut [f32], &mut [f32]) {
        self.0.parts()
    }
    /// The storage as the runtime's own type, if it is that type.
    pub fn store_mut<T: OutputStore>(&mut self) -> Option<&mut T> {
        let any: &mut dyn std::any::Any = &mut *self.0;
        any.downcast_mut::<T>()
    }
}

/// The network: one segment in, per-source estimates out.
pub trait Network {
    /// Storage for one run's outputs, `spec_len` and `wave_len` samples
    /// (see [`OutputStore::parts`]); plain vectors unless the runtime has
    /// better.
    ///
    /// # Errors
    /// [`NetworkError::Inference`] if the runtime cannot allocate it.
    fn new_output(&mut self, spec_len: usize, wave_len: usize) -> Result<NetOutput, NetworkError> {
        Ok(NetOutput::vec(spec_len, wave_len))
    }

    /// How many segments a separation keeps in flight between its stages
    /// (inputs prepared, outputs being read): 2 lets the host compute one
    /// segment's spectrogram and another's iSTFT and overlap-add while the
    /// network runs (what a GPU needs to stay busy); 1 keeps memory to one
    /// input and one output (55 MB for htdemucs) where the network already
    /// uses every core.
    fn segments_in_flight(&self) -> usize {
        2
    }

    /// Run one segment, writing every sample of `out` (which may come from
    /// another network's [`Network::new_output`], e.g. after a fallback).
    ///
    /// - `mix`: planar `[channels][segment]` normalised waveform.
    /// - `spec`: `[channels * 2][bins][frames]` complex-as-channels spectrogram.
    /// - `out`: `out_spec` `[sources][channels * 2][bins][frames]` and
    ///   `out_wave` `[sources][channels][segment]`.
    ///
    /// # Errors
    /// [`NetworkError`] if inference fails or the outputs have the wrong size;
    /// `out` then holds no result.
    fn forward(&mut self, mix: &[f32], spec: &[f32], out: &mut NetOutput) -> Result<(), NetworkError>;
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

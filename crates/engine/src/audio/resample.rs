//! Streaming sample-rate conversion with rubato's synchronous FFT resampler.
//!
//! [`StreamResampler`] takes interleaved frames in blocks of any size and
//! gives back interleaved frames, with rubato's start-up delay trimmed, so
//! output frame `i` lines up with input time `i / to_rate` (to the sample:
//! rubato's delay is a whole number of output frames, and its filter
//! symmetric, only when both its FFT sizes are even, which [`fft_layout`]
//! sees to). After
//! [`StreamResampler::finish`] exactly `ceil(in_frames * to / from)` frames
//! have come out.

use audioadapter_buffers::direct::InterleavedSlice;
use rubato::{Fft, FixedSync, Indexing, Resampler, WindowFunction};

/// Frames per rubato call on the input side (unless one FFT block of the
/// rate pair is longer: [`fft_layout`]).
const CHUNK: usize = 1024;

/// Greatest common divisor (Euclid).
fn gcd(a: usize, b: usize) -> usize {
    if b == 0 {
        a
    } else {
        gcd(b, a % b)
    }
}

/// rubato's FFT blocks per sub-chunk for `chunk` input frames in `sub`
/// sub-chunks with fixed input, as `Fft::new_custom` (rubato 5.0) counts
/// them: `ceil((chunk / sub) / min_in)`, at least 1, where `min_in` is the
/// input's smallest block (`from / gcd(from, to)`).
fn fft_blocks(chunk: usize, sub: usize, min_in: usize) -> usize {
    (chunk / sub).div_ceil(min_in).max(1)
}

/// Input chunk and sub-chunks for converting `from` Hz to `to` Hz: as
/// rubato's `Fft::new` chooses them (sub-chunks of about 256 frames),
/// unless that makes an odd number of FFT blocks. rubato's filter is a
/// sinc centred at `fft_in / 2` (integer division) under a periodic window
/// centred at `fft_in / 2` exactly, and it trims `fft_out / 2` (rounded
/// down) output frames: all three agree only when both FFT sizes (blocks ×
/// `from / gcd`, blocks × `to / gcd`, one of which is odd) are even. Else
/// the stems came out up to half a frame off (96 kHz in: 1.1 frames late
/// after the way back; 192, 12 and 32 kHz alike). So the nearest sub-chunk
/// count giving an even number of blocks, or, when one block is longer
/// than a chunk (rates with a small common divisor), chunks of two blocks
/// (of at most 48,000 frames each).
fn fft_layout(from: usize, to: usize) -> (usize, usize) {
    let g = gcd(from, to);
    let min_in = from / g;
    let even = |sub: usize| fft_blocks(CHUNK, sub, min_in).is_multiple_of(2);
    let default = (CHUNK / 256).max(1);
    if even(default) {
        return (CHUNK, default);
    }
    match [2, 5, 3, 6, 8, 1, 7, 16].into_iter().find(|&sub| even(sub)) {
        Some(sub) => (CHUNK, sub),
        // Chunks of two blocks cost FFTs of twice the block and as much
        // delay before the first output: up to about 2 s of input. Rarer
        // pairs (rates with almost no common divisor, such as 96,001 Hz)
        // keep rubato's own layout and its offset of under a frame.
        None if min_in <= 48_000 => (2 * min_in, 1),
        None => (CHUNK, default),
    }
}

/// A resampler that can also be a pass-through when the rates are equal.
pub struct StreamResampler {
    inner: Option<Fft<f32>>,
    /// Input frames per rubato call.
    chunk: usize,
    channels: usize,
    from: u32,
    to: u32,
    pending: Vec<f32>,
    out_buf: Vec<f32>,
    to_trim: usize,
    in_frames: u64,
    out_frames: u64,
}

impl std::fmt::Debug for StreamResampler {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "StreamResampler({} Hz -> {} Hz, {} ch)", self.from, self.to, self.channels)
    }
}

impl StreamResampler {
    /// Convert `channels`-channel audio from `from` Hz to `to` Hz.
    ///
    /// # Errors
    /// A message if a rate is outside
    /// [`crate::audio::decode::MIN_SAMPLE_RATE`]..=[`crate::audio::decode::MAX_SAMPLE_RATE`]
    /// (rubato's buffers grow with the rates: 4294967295 Hz asked for
    /// gigabytes) or rubato rejects them.
    pub fn new(from: u32, to: u32, channels: usize) -> Result<Self, String> {
        use crate::audio::decode::{MAX_SAMPLE_RATE, MIN_SAMPLE_RATE};
        for rate in [from, to] {
            if !(MIN_SAMPLE_RATE..=MAX_SAMPLE_RATE).contains(&rate) {
                return Err(format!(
                    "cannot resample {from} Hz to {to} Hz: rates are {MIN_SAMPLE_RATE} to {MAX_SAMPLE_RATE} Hz"
                ));
            }
        }
        let (chunk, sub_chunks) = if from == to { (CHUNK, 1) } else { fft_layout(from as usize, to as usize) };
        let inner = if from == to {
            None
        } else {
            // (The window rubato's `Fft::new` takes.)
            Some(
                Fft::<f32>::new_custom(
                    from as usize,
                    to as usize,
                    chunk,
                    sub_chunks,
                    channels,
                    WindowFunction::BlackmanHarris2,
                    FixedSync::Input,
                )
                .map_err(|e| format!("cannot resample {from} Hz to {to} Hz: {e}"))?,
            )
        };
        let (out_max, to_trim) = inner.as_ref().map(|r| (r.output_frames_max(), r.output_delay())).unwrap_or((0, 0));
        Ok(StreamResampler {
            inner,
            chunk,
            channels,
            from,
            to,
            pending: Vec::new(),
            out_buf: vec![0.0; out_max * channels],
            to_trim,
            in_frames: 0,
            out_frames: 0,
        })
    }

    /// Frames that will have come out once `in_frames` went in and `finish` ran.
    pub fn output_len(from: u32, to: u32, in_frames: u64) -> u64 {
        if from == to {
            in_frames
        } else {
            (in_frames as u128 * to as u128).div_ceil(from as u128) as u64
        }
    }

    fn emit(&mut self, produced: usize, out: &mut Vec<f32>) {
        let skip = self.to_trim.min(produced);
        self.to_trim -= skip;
        let ch = self.channels;
        let want = Self::output_len(self.from, self.to, self.in_frames);
        let room = want.saturating_sub(self.out_frames) as usize;
        let take = (produced - skip).min(room);
        out.extend_from_slice(&self.out_buf[skip * ch..(skip + take) * ch]);
        self.out_frames += take as u64;
    }

    /// Run one rubato chunk of `frames` frames starting at sample `start` of `pending`.
    fn run(&mut self, start: usize, frames: usize, partial: Option<usize>) -> Result<usize, String> {
        let ch = self.channels;
        let Some(r) = self.inner.as_mut() else { return Ok(0) };
        let input =
            InterleavedSlice::new(&self.pending[start..start + frames * ch], ch, frames).map_err(|e| e.to_string())?;
        let out_frames = self.out_buf.len() / ch;
        let mut output = InterleavedSlice::new_mut(&mut self.out_buf, ch, out_frames).map_err(|e| e.to_string())?;
        let idx = partial.map(|p| Indexing::new().partial_len(p));
        let (_, produced) = r.process_into_buffer(&input, &mut output, idx.as_ref()).map_err(|e| e.to_string())?;
        Ok(produced)
    }

    /// True when the rates are equal and frames pass through unchanged.
    pub fn is_passthrough(&self) -> bool {
        self.inner.is_none()
    }

    /// Feed interleaved frames; appends converted frames to `out`.
    ///
    /// # Errors
    /// A message if rubato fails (a bug, not a data condition).
    pub fn push(&mut self, input: &[f32], out: &mut Vec<f32>) -> Result<(), String> {
        let ch = self.channels;
        self.in_frames += (input.len() / ch) as u64;
        if self.inner.is_none() {
            out.extend_from_slice(input);
            self.out_frames += (input.len() / ch) as u64;
            return Ok(());
        }
        self.pending.extend_from_slice(input);
        let mut pos = 0;
        while self.pending.len() - pos >= self.chunk * ch {
            let produced = self.run(pos, self.chunk, None)?;
            pos += self.chunk * ch;
            self.emit(produced, out);
        }
        self.pending.drain(..pos);
        Ok(())
    }

    /// Flush the tail; afterwards exactly [`Self::output_len`] frames came out.
    ///
    /// # Errors
    /// A message if rubato fails.
    pub fn finish(&mut self, out: &mut Vec<f32>) -> Result<(), String> {
        if self.inner.is_none() {
            return Ok(());
        }
        let ch = self.channels;
        let rem = self.pending.len() / ch;
        self.pending.resize(self.chunk * ch, 0.0);
        let produced = self.run(0, self.chunk, Some(rem))?;
        self.emit(produced, out);
        self.pending.iter_mut().for_each(|v| *v = 0.0);
        let want = Self::output_len(self.from, self.to, self.in_frames);
        let mut guard = 0;
        while self.out_frames < want && guard < 10_000 {
            let produced = self.run(0, self.chunk, Some(0))?;
            self.emit(produced, out);
            guard += 1;
        }
        self.pending.clear();
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sine(freq: f64, rate: u32, frames: usize) -> Vec<f32> {
        (0..frames)
            .flat_map(|i| {
                let v = (2.0 * std::f64::consts::PI * freq * i as f64 / rate as f64).sin() as f32 * 0.5;
                [v, -v]
            })
            .collect()
    }

    fn run(r: &mut StreamResampler, x: &[f32], block: usize) -> Vec<f32> {
        let mut out = Vec::new();
        for b in x.chunks(block * 2) {
            r.push(b, &mut out).expect("push");
        }
        r.finish(&mut out).expect("finish");
        out
    }

    #[test]
    fn round_trip_44100_48000_44100_preserves_a_sine() {
        let x = sine(1000.0, 44_100, 44_100);
        let mut up = StreamResampler::new(44_100, 48_000, 2).expect("up");
        let y = run(&mut up, &x, 777);
        assert_eq!(y.len() / 2, 48_000);
        let mut down = StreamResampler::new(48_000, 44_100, 2).expect("down");
        let z = run(&mut down, &y, 1000);
        assert_eq!(z.len(), x.len());
        // Ignore the edges (filter transients); the middle must match closely.
        let mid = 2000 * 2..x.len() - 2000 * 2;
        let err: f64 = x[mid.clone()].iter().zip(&z[mid.clone()]).map(|(a, b)| ((a - b) as f64).powi(2)).sum();
        let sig: f64 = x[mid].iter().map(|a| (*a as f64).powi(2)).sum();
        let snr = 10.0 * (sig / err).log10();
        assert!(snr > 60.0, "round-trip SNR {snr:.1} dB");
    }

    #[test]
    fn delay_is_trimmed_so_signals_line_up() {
        // A 500 Hz sine at 8 kHz resampled to 44.1 kHz matches the same sine generated at 44.1 kHz.
        let x = sine(500.0, 8_000, 8_000);
        let mut r = StreamResampler::new(8_000, 44_100, 2).expect("new");
        let y = run(&mut r, &x, 300);
        assert_eq!(y.len() / 2, 44_100);
        let want = sine(500.0, 44_100, 44_100);
        let mid = 4000 * 2..y.len() - 4000 * 2;
        let worst = y[mid.clone()].iter().zip(&want[mid]).map(|(a, b)| (a - b).abs()).fold(0.0f32, f32::max);
        assert!(worst < 0.01, "max error {worst}");
    }

    /// Output frame `i` is input time `i / to`, to the sample, for rate
    /// pairs whose FFT sizes rubato would make odd (96, 192, 12 kHz in;
    /// 44.1 kHz to 32 or 44.101 kHz) and even ones: a 3 kHz sine resampled
    /// matches the same sine made at the output rate (half a frame late at
    /// 44.1 kHz is an error of 0.1 here).
    #[test]
    fn output_frames_line_up_with_the_input_to_the_sample() {
        for (from, to) in [
            (96_000, 44_100),
            (192_000, 44_100),
            (12_000, 44_100),
            (32_000, 44_100),
            (44_100, 96_000),
            (44_100, 192_000),
            (44_100, 12_000),
            (44_100, 32_000),
            (44_100, 88_200),
            (44_100, 8_000),
            (8_000, 44_100),
            (44_100, 48_000),
            (48_000, 44_100),
            (88_200, 44_100),
            (44_100, 44_101),
        ] {
            let g = gcd(from as usize, to as usize);
            let (chunk, sub) = fft_layout(from as usize, to as usize);
            assert_eq!(fft_blocks(chunk, sub, from as usize / g) % 2, 0, "{from} -> {to}: an even number of blocks");
            let x = sine(3000.0, from, from as usize);
            let mut r = StreamResampler::new(from, to, 2).expect("new");
            let y = run(&mut r, &x, 1000);
            assert_eq!(y.len() / 2, to as usize, "{from} -> {to}: length");
            let want = sine(3000.0, to, to as usize);
            let edge = 2 * (to as usize / 10);
            let mid = edge..y.len() - edge;
            let worst = y[mid.clone()].iter().zip(&want[mid]).map(|(a, b)| (a - b).abs()).fold(0.0f32, f32::max);
            assert!(worst < 0.01, "{from} -> {to}: max error {worst}");
        }
    }

    #[test]
    fn equal_rates_pass_through() {
        let x = sine(440.0, 44_100, 1000);
        let mut r = StreamResampler::new(44_100, 44_100, 2).expect("new");
        assert_eq!(run(&mut r, &x, 100), x);
    }
}

//! TPDF dither for a mix written as 16-bit integer PCM.
//!
//! A mix (stems at other volumes, resampled, time-stretched) is a new signal
//! whose quantisation to 16 bits would otherwise be an error correlated
//! with it: distortion on quiet passages and fade tails. Triangular
//! (TPDF) noise of ±1 LSB peak, the sum of two independent uniform draws
//! of ±½ LSB, makes that error a constant, signal-independent noise floor
//! (Lipshitz, Wannamaker and Vanderkooy, "Quantization and Dither: A
//! Theoretical Survey", J. Audio Eng. Soc. 40(5), 1992). Stems are not
//! dithered: they are copied untouched (bit-exact at the same depth), and
//! `demucs` does not dither its stems.

use super::{EncodeError, StemWriter};

/// Adds TPDF dither of `lsb` to every sample before `inner` quantises it.
/// Exact zeros (digital silence: muted parts, the song's start) stay
/// zero, so silence exports as silence.
pub struct Dithered {
    inner: Box<dyn StemWriter>,
    /// One step of the output's integer PCM in float full scale (2^-15 for
    /// 16 bits).
    lsb: f32,
    /// xorshift64* state (Vigna, "An experimental exploration of
    /// Marsaglia's xorshift generators, scrambled", 2016): seeded from a
    /// fixed constant and the output's index, so the same export twice
    /// writes the same files, and files exported together (stems summed
    /// again later) carry independent noise, not one sequence that adds
    /// up coherently (+6 dB over four stems instead of +3 dB).
    state: u64,
    buf: Vec<f32>,
}

impl Dithered {
    /// `inner` writing integer PCM of `bits` bits (16: 1 LSB = 2^-15);
    /// `output` numbers the files written together (0, 1, …), each with
    /// its own noise.
    pub fn new(inner: Box<dyn StemWriter>, bits: u32, output: u64) -> Self {
        // SplitMix64's finaliser (Steele, Lea and Flood, "Fast splittable
        // pseudorandom number generators", OOPSLA 2014) spreads the index
        // over the state; xorshift needs a state other than 0.
        let mut z = 0x9E37_79B9_7F4A_7C15u64.wrapping_add(output.wrapping_mul(0xD1B5_4A32_D192_ED03));
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^= z >> 31;
        Dithered { inner, lsb: (2.0f64).powi(1 - bits as i32) as f32, state: z.max(1), buf: Vec::new() }
    }

    /// Uniform in [-0.5, 0.5).
    #[inline]
    fn uniform(&mut self) -> f32 {
        self.state ^= self.state >> 12;
        self.state ^= self.state << 25;
        self.state ^= self.state >> 27;
        let r = self.state.wrapping_mul(0x2545_F491_4F6C_DD1D);
        // The top 24 bits: an exact f32 in [0, 1).
        (r >> 40) as f32 / (1u32 << 24) as f32 - 0.5
    }
}

impl StemWriter for Dithered {
    fn write(&mut self, interleaved: &[f32]) -> Result<(), EncodeError> {
        let mut buf = std::mem::take(&mut self.buf);
        buf.clear();
        buf.reserve(interleaved.len());
        for &v in interleaved {
            let d = if v == 0.0 || !v.is_finite() { 0.0 } else { (self.uniform() + self.uniform()) * self.lsb };
            buf.push(v + d);
        }
        let r = self.inner.write(&buf);
        self.buf = buf;
        r
    }
    fn finish(self: Box<Self>) -> Result<(), EncodeError> {
        self.inner.finish()
    }
    fn finish_or_stop(self: Box<Self>, stop: &std::sync::atomic::AtomicBool) -> Result<(), EncodeError> {
        self.inner.finish_or_stop(stop)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Collects what it is given.
    struct Keep(std::sync::Arc<std::sync::Mutex<Vec<f32>>>);
    impl StemWriter for Keep {
        fn write(&mut self, interleaved: &[f32]) -> Result<(), EncodeError> {
            self.0.lock().unwrap().extend_from_slice(interleaved);
            Ok(())
        }
        fn finish(self: Box<Self>) -> Result<(), EncodeError> {
            Ok(())
        }
    }

    #[test]
    fn the_noise_is_triangular_within_one_lsb_and_silence_stays_silent() {
        let kept = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
        let mut d = Dithered::new(Box::new(Keep(kept.clone())), 16, 0);
        let lsb = 1.0 / 32768.0;
        let n = 200_000;
        let x = 0.25;
        d.write(&vec![x; n]).unwrap();
        d.write(&[0.0, 0.0]).unwrap();
        let got = kept.lock().unwrap().clone();
        let noise: Vec<f64> = got[..n].iter().map(|&v| f64::from(v - x) / lsb).collect();
        assert!(noise.iter().all(|e| e.abs() <= 1.0), "within ±1 LSB");
        let mean = noise.iter().sum::<f64>() / n as f64;
        let var = noise.iter().map(|e| (e - mean).powi(2)).sum::<f64>() / n as f64;
        // TPDF of ±1 LSB: mean 0, variance 1/6 LSB², and a quarter of the
        // draws beyond ±½ LSB (the triangle's two tails).
        assert!(mean.abs() < 0.01, "{mean}");
        assert!((var - 1.0 / 6.0).abs() < 0.01, "{var}");
        let tails = noise.iter().filter(|e| e.abs() > 0.5).count() as f64 / n as f64;
        assert!((tails - 0.25).abs() < 0.01, "{tails}");
        assert_eq!(&got[n..], &[0.0, 0.0], "silence stays silent");

        // Another output's noise is its own (uncorrelated), and the same
        // output's is the same every time.
        let noise_of = |output: u64| {
            let kept = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
            let mut d = Dithered::new(Box::new(Keep(kept.clone())), 16, output);
            d.write(&vec![x; n]).unwrap();
            let got = kept.lock().unwrap().clone();
            got.iter().map(|&v| f64::from(v - x) / lsb).collect::<Vec<f64>>()
        };
        let (a, b) = (noise_of(1), noise_of(2));
        assert_eq!(a, noise_of(1), "reproducible");
        let corr = a.iter().zip(&b).map(|(p, q)| p * q).sum::<f64>() / (n as f64 / 6.0);
        assert!(corr.abs() < 0.02, "outputs 1 and 2 correlate: {corr}");
    }
}

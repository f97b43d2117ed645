//! Writing stems: WAV 16/24-bit integer or 32-bit float (hound), FLAC
//! 16/24-bit (flacenc), MP3 CBR (mp3lame-encoder, LAME 3.100).
//!
//! Every writer streams: samples go to disk as they arrive. Clip handling
//! follows the `demucs` CLI (`demucs/audio.py`, `prevent_clip`): `rescale`
//! divides a stem by `max(1.01 * peak, 1)` (so it needs the whole stem first:
//! [`open`] then spools raw `f32` to a scratch file next to the output and
//! encodes on `finish`), `clamp` clips to ±0.99, `none` leaves samples alone
//! (integer formats still saturate at full scale).
//!
//! [`ThreadedWriter`] runs any writer on its own thread, so encoding
//! overlaps the separation and the stems of a run encode in parallel.

mod dither;
mod flac;
mod mp3;
mod spool;
mod threaded;
mod wav;

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

pub use dither::Dithered;
use flac::FlacStem;
use mp3::{mp3_bitrate, Mp3Stem};
pub use mp3::{nearest_mp3_bitrate, MP3_BITRATES};
use spool::Spool;
pub use threaded::ThreadedWriter;
use wav::WavStem;

/// Errors writing a stem.
#[derive(Debug, thiserror::Error)]
pub enum EncodeError {
    #[error("cannot write {path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{format} encoder failed: {reason}")]
    Encoder { format: &'static str, reason: String },
    /// Stopped on request before the file was complete (a cancel while a
    /// rescaled stem was encoded again): the file is not whole.
    #[error("stopped before the file was complete")]
    Stopped,
}

/// Bit depth and sample type of WAV output.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "specta", derive(specta::Type))]
#[serde(rename_all = "lowercase")]
pub enum WavDepth {
    /// 16-bit signed integer (demucs default).
    Int16,
    /// 24-bit signed integer (`--int24`).
    Int24,
    /// 32-bit IEEE float (`--float32`).
    Float32,
}

/// Output container and encoding.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "specta", derive(specta::Type))]
#[serde(tag = "kind", rename_all = "lowercase")]
pub enum OutputFormat {
    /// RIFF WAVE.
    Wav { depth: WavDepth },
    /// FLAC, 16 or 24 bits per sample.
    Flac { bits: u8 },
    /// MP3, constant bit rate in kbit/s (LAME's CBR set, 128-320 accepted).
    Mp3 { kbps: u16 },
}

/// Highest sample rate in Hz the FLAC encoder writes (flacenc 0.5's
/// `StreamInfo` check; the format itself allows more, but its streamable
/// subset stops at 48 kHz and common players at 96 or 192 kHz).
pub const FLAC_MAX_RATE: u32 = 96_000;

impl OutputFormat {
    /// File extension without the dot.
    pub fn extension(&self) -> &'static str {
        match self {
            OutputFormat::Wav { .. } => "wav",
            OutputFormat::Flac { .. } => "flac",
            OutputFormat::Mp3 { .. } => "mp3",
        }
    }

    /// The sample rate in Hz a file of this format is written at when
    /// `wanted` Hz is asked for: `wanted` itself for WAV and FLAC; for MP3
    /// the nearest of the MPEG-1/2/2.5 rates (ISO/IEC 11172-3, 13818-3:
    /// 8000 to 48000 Hz) at or above it; above 48000, 44100 for a multiple
    /// of 11025 Hz (88.2 and 176.4 kHz: the model's own rate, not
    /// resampled again), else 48000. The stems are
    /// resampled to it before LAME, which would otherwise resample itself
    /// (and, from below 8000 Hz, outgrow its output buffer). FLAC above
    /// [`FLAC_MAX_RATE`] is written at half the rate (again until it fits:
    /// 192 kHz at 96 kHz, 176.4 kHz at 88.2 kHz), the encoder's limit.
    pub fn file_rate(&self, wanted: u32) -> u32 {
        const MP3_RATES: [u32; 9] = [8_000, 11_025, 12_000, 16_000, 22_050, 24_000, 32_000, 44_100, 48_000];
        match self {
            OutputFormat::Mp3 { .. } => MP3_RATES
                .into_iter()
                .find(|&r| r >= wanted)
                .unwrap_or(if wanted.is_multiple_of(11_025) { 44_100 } else { 48_000 }),
            OutputFormat::Flac { .. } => {
                let mut rate = wanted;
                while rate > FLAC_MAX_RATE {
                    rate /= 2;
                }
                // A FLAC frame header states the rate in Hz up to 65,535,
                // else in tens of Hz (or kHz) (FLAC format, RFC 9639
                // §9.1.2): 88,201 Hz is written at 88,200.
                if rate > 65_535 && !rate.is_multiple_of(10) {
                    rate = (rate + 5) / 10 * 10;
                }
                rate.min(FLAC_MAX_RATE)
            }
            OutputFormat::Wav { .. } => wanted,
        }
    }

    /// Check parameters.
    ///
    /// # Errors
    /// A message for an unsupported FLAC depth or MP3 bit rate.
    pub fn validate(&self) -> Result<(), String> {
        match *self {
            OutputFormat::Flac { bits } if bits != 16 && bits != 24 => {
                Err(format!("FLAC depth must be 16 or 24, got {bits}"))
            }
            OutputFormat::Mp3 { kbps } if mp3_bitrate(kbps).is_none() => Err(format!(
                "MP3 bit rate must be one of {} kbps, got {kbps}",
                mp3::MP3_BITRATES.map(|b| b.to_string()).join(", ")
            )),
            _ => Ok(()),
        }
    }

    /// Whether `frames` frames of `channels` channels fit in one file of
    /// this format: a WAV file counts its bytes in 32 bits (RIFF), so it
    /// holds at most [`MAX_WAV_DATA_BYTES`] of samples (3 h 22 min of
    /// 32-bit float stereo at 44.1 kHz, 47 min at 192 kHz); FLAC and MP3
    /// have no such limit.
    ///
    /// # Errors
    /// A message saying what to choose instead.
    pub fn fits(&self, frames: u64, channels: usize) -> Result<(), String> {
        let OutputFormat::Wav { depth } = *self else { return Ok(()) };
        let bytes = frames.saturating_mul(channels as u64).saturating_mul(depth.bytes());
        if bytes <= MAX_WAV_DATA_BYTES {
            return Ok(());
        }
        Err(format!(
            "a WAV file holds at most 4 GiB and these {channels}-channel {}-bit stems would take {:.1} GiB each: \
             choose FLAC (no such limit), or a smaller WAV depth",
            depth.bytes() * 8,
            bytes as f64 / f64::from(1u32 << 30)
        ))
    }
}

/// Most sample bytes a WAV file holds: its RIFF size is 32 bits and counts
/// the header after its first 8 bytes, 60 bytes for the extensible header
/// hound writes for 24- and 32-bit files (36 for 16-bit; the larger is
/// taken for all).
pub const MAX_WAV_DATA_BYTES: u64 = u32::MAX as u64 - 60;

impl WavDepth {
    /// Bytes per sample.
    pub fn bytes(self) -> u64 {
        match self {
            WavDepth::Int16 => 2,
            WavDepth::Int24 => 3,
            WavDepth::Float32 => 4,
        }
    }
}

/// What to do with samples beyond full scale (`demucs --clip-mode`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum ClipMode {
    /// Scale the whole stem down so its peak fits (default).
    #[default]
    Rescale,
    /// Clip each sample to ±0.99.
    Clamp,
    /// Leave samples alone.
    None,
}

/// Descriptive tags written into formats that carry them (ID3v2 in MP3).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "specta", derive(specta::Type))]
#[serde(rename_all = "camelCase")]
pub struct Tags {
    pub title: Option<String>,
    pub artist: Option<String>,
    pub album: Option<String>,
}

/// A stem being written: interleaved stereo `f32` in, a file out.
pub trait StemWriter: Send {
    /// Append interleaved frames.
    ///
    /// # Errors
    /// [`EncodeError`] on I/O or encoder failure.
    fn write(&mut self, interleaved: &[f32]) -> Result<(), EncodeError>;
    /// Complete the file (headers, flush). The file is whole only after this.
    ///
    /// # Errors
    /// [`EncodeError`] on I/O or encoder failure.
    fn finish(self: Box<Self>) -> Result<(), EncodeError>;
    /// [`StemWriter::finish`] that gives up when `stop` becomes true, for a
    /// finish that does long work (the `rescale` clip mode encodes a scaled
    /// stem again: minutes for an hours-long MP3).
    ///
    /// # Errors
    /// As [`StemWriter::finish`]; [`EncodeError::Stopped`] when stopped.
    fn finish_or_stop(self: Box<Self>, stop: &std::sync::atomic::AtomicBool) -> Result<(), EncodeError> {
        let _ = stop;
        self.finish()
    }
}

pub(crate) fn io_err(path: &Path) -> impl Fn(std::io::Error) -> EncodeError + '_ {
    move |source| EncodeError::Io { path: path.to_path_buf(), source }
}

/// Open a writer for `path` (created or truncated).
///
/// # Errors
/// [`EncodeError::Io`] if the file cannot be created.
pub fn open(
    path: &Path,
    format: OutputFormat,
    sample_rate: u32,
    channels: usize,
    clip: ClipMode,
) -> Result<Box<dyn StemWriter>, EncodeError> {
    open_tagged(path, format, sample_rate, channels, clip, &Tags::default())
}

/// As [`open`], writing `tags` where the format carries them (MP3: ID3v2;
/// FLAC: a Vorbis comment block).
///
/// # Errors
/// [`EncodeError::Io`] if the file cannot be created.
pub fn open_tagged(
    path: &Path,
    format: OutputFormat,
    sample_rate: u32,
    channels: usize,
    clip: ClipMode,
    tags: &Tags,
) -> Result<Box<dyn StemWriter>, EncodeError> {
    if clip == ClipMode::Rescale {
        return Ok(Box::new(Spool::new(path, format, sample_rate, channels, tags.clone())?));
    }
    let post = if clip == ClipMode::Clamp { Post::Clamp } else { Post::Gain(1.0) };
    open_direct(path, format, sample_rate, channels, post, tags)
}

#[derive(Debug, Clone, Copy)]
pub(crate) enum Post {
    Gain(f32),
    Clamp,
}

impl Post {
    /// The sample as written; one that is not a number (NaN, infinite: a
    /// network output gone wrong) is written as silence, whatever the mode.
    #[inline]
    pub(crate) fn apply(self, v: f32) -> f32 {
        if !v.is_finite() {
            return 0.0;
        }
        match self {
            Post::Gain(g) => v * g,
            Post::Clamp => v.clamp(-0.99, 0.99),
        }
    }
}

pub(crate) fn open_direct(
    path: &Path,
    format: OutputFormat,
    rate: u32,
    channels: usize,
    post: Post,
    tags: &Tags,
) -> Result<Box<dyn StemWriter>, EncodeError> {
    format.validate().map_err(|reason| EncodeError::Encoder { format: format.extension(), reason })?;
    Ok(match format {
        OutputFormat::Wav { depth } => Box::new(WavStem::new(path, depth, rate, channels, post)?),
        OutputFormat::Flac { bits } => Box::new(FlacStem::new(path, bits, rate, channels, post, tags)?),
        OutputFormat::Mp3 { kbps } => Box::new(Mp3Stem::new(path, kbps, rate, channels, post, tags)?),
    })
}

/// Float to signed integer PCM: scale by `2^(bits-1)` and saturate, the
/// inverse of how symphonia (and hound) read integer PCM, so decoding a file
/// and writing it back at the same depth is bit-exact.
#[inline]
pub(crate) fn to_int(v: f32, bits: u32) -> i32 {
    let scale = (1i64 << (bits - 1)) as f64;
    (v as f64 * scale).round().clamp(-scale, scale - 1.0) as i32
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tone(frames: usize, amp: f32) -> Vec<f32> {
        (0..frames)
            .flat_map(|i| {
                let v = (i as f32 * 0.05).sin() * amp;
                [v, -v]
            })
            .collect()
    }

    #[test]
    fn mp3_and_flac_files_are_written_at_rates_they_take() {
        let mp3 = OutputFormat::Mp3 { kbps: 320 };
        let wav = OutputFormat::Wav { depth: WavDepth::Int16 };
        for (wanted, want) in [
            (1, 8_000),
            (4_000, 8_000),
            (8_000, 8_000),
            (44_100, 44_100),
            (44_101, 48_000),
            (96_000, 48_000),
            (88_200, 44_100),
            (176_400, 44_100),
            (88_201, 48_000),
        ] {
            assert_eq!(mp3.file_rate(wanted), want, "{wanted} Hz");
        }
        assert_eq!(wav.file_rate(4_000), 4_000);
        let flac = OutputFormat::Flac { bits: 24 };
        for (wanted, want) in [
            (96_000, 96_000),
            (192_000, 96_000),
            (176_400, 88_200),
            (352_800, 88_200),
            (8_000, 8_000),
            (88_201, 88_200),
            (176_402, 88_200),
            (95_999, 96_000),
            (65_535, 65_535),
            (11_111, 11_111),
        ] {
            assert_eq!(flac.file_rate(wanted), want, "{wanted} Hz");
        }
        // The rates it gives are ones the encoder takes, past its first
        // frame (4096 frames).
        let dir = tempfile::tempdir().expect("tempdir");
        for wanted in [192_000, 88_201, 65_535, 11_111] {
            let p = dir.path().join(format!("{wanted}.flac"));
            let rate = flac.file_rate(wanted);
            let mut w = open(&p, flac, rate, 2, ClipMode::Clamp).expect("FLAC opens");
            w.write(&tone(9000, 0.5)).expect("write");
            w.finish().unwrap_or_else(|e| panic!("{wanted} Hz: {e}"));
        }
    }

    /// Any bit rate asked for is the nearest LAME writes at the usual
    /// rates (the lower of two as near), and every one of those opens.
    #[test]
    fn mp3_bitrates_snap_to_lames() {
        // As LAME snaps them: the lower of two as near (104 and 120 too).
        assert_eq!(
            [100, 104, 120, 300, 0, 1000, 56, 128].map(nearest_mp3_bitrate),
            [96, 96, 112, 320, 32, 320, 48, 128]
        );
        let dir = tempfile::tempdir().expect("tempdir");
        for kbps in MP3_BITRATES {
            let p = dir.path().join(format!("{kbps}.mp3"));
            let mut w = open(&p, OutputFormat::Mp3 { kbps }, 44_100, 2, ClipMode::Clamp).expect("opens");
            w.write(&tone(4096, 0.3)).expect("write");
            w.finish().unwrap_or_else(|e| panic!("{kbps} kbps: {e}"));
            // At the rate given, whatever the bit rate (LAME chose 32 kHz
            // for 96 kbps when left to itself).
            let mut d = crate::audio::decode::StreamDecoder::open(&p).expect("decode");
            let rate = d.next_block().expect("block").map(|(_, r)| r);
            assert_eq!(rate, Some(44_100), "{kbps} kbps");
        }
        assert!(OutputFormat::Mp3 { kbps: 100 }.validate().is_err());
    }

    /// A FLAC export carries its tags in a Vorbis comment block, read back
    /// by the decoder; its samples are as without them, and an untagged
    /// file has no such block.
    #[test]
    fn flac_files_carry_their_tags() {
        let dir = tempfile::tempdir().expect("tempdir");
        let flac = OutputFormat::Flac { bits: 16 };
        let title = "Ünïcode = fine - vocals";
        let tags = Tags { title: Some(title.into()), artist: Some("The Easton Ellises".into()), album: None };
        let tagged = dir.path().join("tagged.flac");
        let plain = dir.path().join("plain.flac");
        for (p, t) in [(&tagged, &tags), (&plain, &Tags::default())] {
            let mut w = open_tagged(p, flac, 44_100, 2, ClipMode::Clamp, t).expect("open");
            w.write(&tone(10_000, 0.5)).expect("write");
            w.finish().expect("finish");
        }
        let read = |p: &Path| {
            let mut d = crate::audio::decode::StreamDecoder::open(p).expect("decode");
            let tags = d.tags();
            let mut samples = Vec::new();
            while let Some((b, _)) = d.next_block().expect("block") {
                samples.extend_from_slice(b);
            }
            (tags, samples)
        };
        let (got, with) = read(&tagged);
        assert_eq!(got.title.as_deref(), Some(title));
        assert_eq!(got.artist.as_deref(), Some("The Easton Ellises"));
        assert_eq!(got.album, None);
        let (none, without) = read(&plain);
        assert_eq!(none.title, None);
        assert_eq!(with, without, "the same samples");
        assert_eq!(with.len(), 20_000);
        let cut = flac::vorbis_comment(&Tags { title: Some("é".repeat(600)), ..Tags::default() }).expect("a block");
        assert!(cut.len() < 1_100, "a long title is cut at a character: {}", cut.len());
    }

    #[test]
    fn wav_depths_and_clip_modes() {
        let dir = tempfile::tempdir().expect("tempdir");
        let loud = tone(1000, 1.5);
        for (depth, clip) in [
            (WavDepth::Int16, ClipMode::Rescale),
            (WavDepth::Int24, ClipMode::Clamp),
            (WavDepth::Float32, ClipMode::None),
        ] {
            let p = dir.path().join(format!("{depth:?}.wav"));
            let mut w = open(&p, OutputFormat::Wav { depth }, 44_100, 2, clip).expect("open");
            w.write(&loud[..600]).expect("write");
            w.write(&loud[600..]).expect("write");
            w.finish().expect("finish");
            let mut r = hound::WavReader::open(&p).expect("read back");
            assert_eq!(r.duration(), 1000);
            let peak = match depth {
                WavDepth::Float32 => r.samples::<f32>().map(|s| s.expect("s").abs()).fold(0.0, f32::max),
                WavDepth::Int16 => r.samples::<i32>().map(|s| s.expect("s").abs()).max().unwrap_or(0) as f32 / 32768.0,
                WavDepth::Int24 => {
                    r.samples::<i32>().map(|s| s.expect("s").abs()).max().unwrap_or(0) as f32 / 8_388_608.0
                }
            };
            match clip {
                ClipMode::Rescale => assert!((peak - 1.0 / 1.01).abs() < 1e-3, "rescale peak {peak}"),
                ClipMode::Clamp => assert!((peak - 0.99).abs() < 1e-4, "clamp peak {peak}"),
                ClipMode::None => assert!(peak > 1.4, "none keeps {peak}"),
            }
        }
        assert!(std::fs::read_dir(dir.path()).expect("ls").all(|e| !e
            .expect("e")
            .path()
            .to_string_lossy()
            .ends_with(".spool")));
    }

    /// Samples that are not numbers are written as silence in every clip
    /// mode, and an infinite one does not scale the rest of a rescaled stem
    /// to nothing.
    #[test]
    fn samples_that_are_not_numbers_are_silence() {
        let dir = tempfile::tempdir().expect("tempdir");
        let mut x = tone(1000, 0.5);
        x[10] = f32::INFINITY;
        x[11] = f32::NAN;
        x[12] = f32::NEG_INFINITY;
        for clip in [ClipMode::Rescale, ClipMode::Clamp, ClipMode::None] {
            let p = dir.path().join(format!("{clip:?}.wav"));
            let mut w = open(&p, OutputFormat::Wav { depth: WavDepth::Float32 }, 44_100, 2, clip).expect("open");
            w.write(&x).expect("write");
            w.finish().expect("finish");
            let got: Vec<f32> =
                hound::WavReader::open(&p).expect("read").samples::<f32>().map(|s| s.expect("sample")).collect();
            assert_eq!(&got[10..13], &[0.0, 0.0, 0.0], "{clip:?}");
            assert_eq!(got[100], x[100], "{clip:?}: the rest as it was");
        }
    }

    #[test]
    fn wav_files_hold_at_most_4_gib() {
        let float = OutputFormat::Wav { depth: WavDepth::Float32 };
        // 3 h 22 min of float stereo at 44.1 kHz fits; 3 h 23 min does not.
        assert!(float.fits(44_100 * (3 * 3600 + 22 * 60), 2).is_ok());
        let e = float.fits(44_100 * (3 * 3600 + 23 * 60), 2).expect_err("too big");
        assert!(e.contains("FLAC"), "{e}");
        assert!(OutputFormat::Wav { depth: WavDepth::Int16 }.fits(44_100 * (3 * 3600 + 23 * 60), 2).is_ok());
        assert!(OutputFormat::Flac { bits: 24 }.fits(u64::MAX, 2).is_ok());
        // The writer refuses to go past it, whatever it was told.
        let dir = tempfile::tempdir().expect("tempdir");
        let mut w =
            wav::WavStem::new(&dir.path().join("x.wav"), WavDepth::Float32, 44_100, 2, Post::Gain(1.0)).expect("open");
        w.bytes = MAX_WAV_DATA_BYTES - 8;
        assert!(w.write(&[0.0, 0.0]).is_ok());
        let e = w.write(&[0.0, 0.0]).expect_err("past 4 GiB");
        assert!(e.to_string().contains("4 GiB"), "{e}");
    }

    #[test]
    fn bad_bitrates_are_rejected() {
        assert!(OutputFormat::Mp3 { kbps: 100 }.validate().is_err());
        assert!(OutputFormat::Flac { bits: 8 }.validate().is_err());
        assert!(OutputFormat::Mp3 { kbps: 320 }.validate().is_ok());
    }
}

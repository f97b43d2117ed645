//! Writing stems: WAV 16/24-bit integer or 32-bit float (hound), FLAC
//! 16/24-bit (flacenc), MP3 CBR (mp3lame-encoder, LAME 3.100).
//!
//! Every writer streams: samples go to disk as they arrive. Clip handling
//! follows the `demucs` CLI (`demucs/audio.py`, `prevent_clip`): `rescale`
//! divides a stem by `max(1.01 * peak, 1)` (so it needs the whole stem first:
//! [`open`] then spools raw `f32` to a scratch file next to the output and
//! encodes on `finish`), `clamp` clips to ±0.99, `none` leaves samples alone
//! (integer formats still saturate at full scale).

use std::fs::File;
use std::io::{BufReader, BufWriter, Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

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

impl OutputFormat {
    /// File extension without the dot.
    pub fn extension(&self) -> &'static str {
        match self {
            OutputFormat::Wav { .. } => "wav",
            OutputFormat::Flac { .. } => "flac",
            OutputFormat::Mp3 { .. } => "mp3",
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
            OutputFormat::Mp3 { kbps } if mp3_bitrate(kbps).is_none() => {
                Err(format!("MP3 bit rate must be one of 128, 160, 192, 224, 256, 320 kbps, got {kbps}"))
            }
            _ => Ok(()),
        }
    }
}

fn mp3_bitrate(kbps: u16) -> Option<mp3lame_encoder::Bitrate> {
    use mp3lame_encoder::Bitrate::*;
    Some(match kbps {
        128 => Kbps128,
        160 => Kbps160,
        192 => Kbps192,
        224 => Kbps224,
        256 => Kbps256,
        320 => Kbps320,
        _ => return None,
    })
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
}

fn io_err(path: &Path) -> impl Fn(std::io::Error) -> EncodeError + '_ {
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

/// As [`open`], writing `tags` where the format carries them (MP3: ID3v2).
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
enum Post {
    Gain(f32),
    Clamp,
}

impl Post {
    #[inline]
    fn apply(self, v: f32) -> f32 {
        match self {
            Post::Gain(g) => v * g,
            Post::Clamp => v.clamp(-0.99, 0.99),
        }
    }
}

fn open_direct(
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
        OutputFormat::Flac { bits } => Box::new(FlacStem::new(path, bits, rate, channels, post)?),
        OutputFormat::Mp3 { kbps } => Box::new(Mp3Stem::new(path, kbps, rate, channels, post, tags)?),
    })
}

/// Float to signed integer PCM: scale by `2^(bits-1)` and saturate, the
/// inverse of how symphonia (and hound) read integer PCM, so decoding a file
/// and writing it back at the same depth is bit-exact.
#[inline]
fn to_int(v: f32, bits: u32) -> i32 {
    let scale = (1i64 << (bits - 1)) as f64;
    (v as f64 * scale).round().clamp(-scale, scale - 1.0) as i32
}

struct WavStem {
    path: PathBuf,
    writer: hound::WavWriter<BufWriter<File>>,
    depth: WavDepth,
    post: Post,
}

impl WavStem {
    fn new(path: &Path, depth: WavDepth, rate: u32, channels: usize, post: Post) -> Result<Self, EncodeError> {
        let (bits, fmt) = match depth {
            WavDepth::Int16 => (16, hound::SampleFormat::Int),
            WavDepth::Int24 => (24, hound::SampleFormat::Int),
            WavDepth::Float32 => (32, hound::SampleFormat::Float),
        };
        let spec =
            hound::WavSpec { channels: channels as u16, sample_rate: rate, bits_per_sample: bits, sample_format: fmt };
        let writer = hound::WavWriter::create(path, spec).map_err(|e| hound_err(path, e))?;
        Ok(WavStem { path: path.to_path_buf(), writer, depth, post })
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
        self.writer.finalize().map_err(|e| hound_err(&path, e))
    }
}

/// FLAC written frame by frame: header first (rewritten at the end with the
/// total length and MD5), then each 4096-frame block as soon as it is full.
struct FlacStem {
    path: PathBuf,
    file: BufWriter<File>,
    config: flacenc::error::Verified<flacenc::config::Encoder>,
    stream: flacenc::component::Stream,
    fb: flacenc::source::FrameBuf,
    ctx: flacenc::source::Context,
    pending: Vec<i32>,
    bits: u32,
    channels: usize,
    post: Post,
    frame_number: usize,
    min_frame: usize,
    max_frame: usize,
}

const FLAC_BLOCK: usize = 4096;

fn flac_err(reason: impl std::fmt::Display) -> EncodeError {
    EncodeError::Encoder { format: "flac", reason: reason.to_string() }
}

impl FlacStem {
    fn new(path: &Path, bits: u8, rate: u32, channels: usize, post: Post) -> Result<Self, EncodeError> {
        use flacenc::error::Verify;
        let config = flacenc::config::Encoder::default().into_verified().map_err(|(_, e)| flac_err(e))?;
        let mut stream = flacenc::component::Stream::new(rate as usize, channels, bits as usize).map_err(flac_err)?;
        stream.stream_info_mut().set_block_sizes(FLAC_BLOCK, FLAC_BLOCK).map_err(flac_err)?;
        let file = File::create(path).map_err(io_err(path))?;
        let mut me = FlacStem {
            path: path.to_path_buf(),
            file: BufWriter::new(file),
            config,
            stream,
            fb: flacenc::source::FrameBuf::with_size(channels, FLAC_BLOCK).map_err(flac_err)?,
            ctx: flacenc::source::Context::new(bits as usize, channels),
            pending: Vec::with_capacity(FLAC_BLOCK * channels),
            bits: bits as u32,
            channels,
            post,
            frame_number: 0,
            min_frame: usize::MAX,
            max_frame: 0,
        };
        me.write_header()?;
        Ok(me)
    }

    fn write_header(&mut self) -> Result<(), EncodeError> {
        use flacenc::component::BitRepr;
        let mut sink = flacenc::bitsink::ByteSink::new();
        self.stream.write(&mut sink).map_err(flac_err)?;
        self.file.write_all(sink.as_slice()).map_err(io_err(&self.path))
    }

    fn flush_block(&mut self) -> Result<(), EncodeError> {
        use flacenc::component::BitRepr;
        use flacenc::source::Fill;
        if self.pending.is_empty() {
            return Ok(());
        }
        self.fb.fill_interleaved(&self.pending).map_err(flac_err)?;
        self.ctx.fill_interleaved(&self.pending).map_err(flac_err)?;
        let frame =
            flacenc::encode_fixed_size_frame(&self.config, &self.fb, self.frame_number, self.stream.stream_info())
                .map_err(flac_err)?;
        let mut sink = flacenc::bitsink::ByteSink::new();
        frame.write(&mut sink).map_err(flac_err)?;
        let bytes = sink.as_slice();
        self.min_frame = self.min_frame.min(bytes.len());
        self.max_frame = self.max_frame.max(bytes.len());
        self.file.write_all(bytes).map_err(io_err(&self.path))?;
        self.frame_number += 1;
        self.pending.clear();
        Ok(())
    }
}

impl StemWriter for FlacStem {
    fn write(&mut self, interleaved: &[f32]) -> Result<(), EncodeError> {
        for &v in interleaved {
            self.pending.push(to_int(self.post.apply(v), self.bits));
            if self.pending.len() == FLAC_BLOCK * self.channels {
                self.flush_block()?;
            }
        }
        Ok(())
    }

    fn finish(mut self: Box<Self>) -> Result<(), EncodeError> {
        self.flush_block()?;
        let info = self.stream.stream_info_mut();
        info.set_total_samples(self.ctx.total_samples());
        info.set_md5_digest(&self.ctx.md5_digest());
        if self.frame_number > 0 {
            info.set_frame_sizes(self.min_frame, self.max_frame).map_err(flac_err)?;
        }
        self.file.seek(SeekFrom::Start(0)).map_err(io_err(&self.path))?;
        self.write_header()?;
        self.file.flush().map_err(io_err(&self.path))?;
        self.file.get_ref().sync_data().map_err(io_err(&self.path))
    }
}

struct Mp3Stem {
    path: PathBuf,
    file: BufWriter<File>,
    encoder: mp3lame_encoder::Encoder,
    buf: Vec<u8>,
    scratch: Vec<f32>,
    post: Post,
}

// SAFETY-free: the LAME handle is only used from the thread that owns the writer.
unsafe impl Send for Mp3Stem {}

fn mp3_err(reason: impl std::fmt::Debug) -> EncodeError {
    EncodeError::Encoder { format: "mp3", reason: format!("{reason:?}") }
}

impl Mp3Stem {
    fn new(path: &Path, kbps: u16, rate: u32, channels: usize, post: Post, tags: &Tags) -> Result<Self, EncodeError> {
        let bitrate = mp3_bitrate(kbps).ok_or_else(|| mp3_err(format!("unsupported bit rate {kbps}")))?;
        let mut b = mp3lame_encoder::Builder::new().ok_or_else(|| mp3_err("LAME init failed"))?;
        b.set_num_channels(channels as u8).map_err(mp3_err)?;
        b.set_sample_rate(rate).map_err(mp3_err)?;
        b.set_brate(bitrate).map_err(mp3_err)?;
        b.set_quality(mp3lame_encoder::Quality::Best).map_err(mp3_err)?;
        let (title, artist) = (tags.title.as_deref().unwrap_or(""), tags.artist.as_deref().unwrap_or(""));
        b.set_id3_tag(mp3lame_encoder::Id3Tag {
            title: title.as_bytes(),
            artist: artist.as_bytes(),
            album: b"",
            album_art: b"",
            year: b"",
            comment: b"",
        })
        .map_err(mp3_err)?;
        let encoder = b.build().map_err(mp3_err)?;
        let file = File::create(path).map_err(io_err(path))?;
        Ok(Mp3Stem {
            path: path.to_path_buf(),
            file: BufWriter::new(file),
            encoder,
            buf: Vec::new(),
            scratch: Vec::new(),
            post,
        })
    }
}

impl StemWriter for Mp3Stem {
    fn write(&mut self, interleaved: &[f32]) -> Result<(), EncodeError> {
        self.scratch.clear();
        self.scratch.extend(interleaved.iter().map(|&v| self.post.apply(v)));
        self.buf.clear();
        self.buf.reserve(mp3lame_encoder::max_required_buffer_size(self.scratch.len()));
        self.encoder
            .encode_to_vec(mp3lame_encoder::InterleavedPcm(&self.scratch[..]), &mut self.buf)
            .map_err(mp3_err)?;
        self.file.write_all(&self.buf).map_err(io_err(&self.path))
    }
    fn finish(mut self: Box<Self>) -> Result<(), EncodeError> {
        self.buf.clear();
        self.buf.reserve(7200);
        // FlushGap (lame_encode_flush) encodes the last, zero-padded frame;
        // FlushNoGap (for gapless chains) would drop the last ~1100 frames.
        self.encoder.flush_to_vec::<mp3lame_encoder::FlushGap>(&mut self.buf).map_err(mp3_err)?;
        self.file.write_all(&self.buf).map_err(io_err(&self.path))?;
        self.file.flush().map_err(io_err(&self.path))?;
        self.file.get_ref().sync_data().map_err(io_err(&self.path))
    }
}

/// Raw `f32` spool for `rescale`: the peak is known only at the end.
struct Spool {
    target: PathBuf,
    path: PathBuf,
    file: BufWriter<File>,
    format: OutputFormat,
    rate: u32,
    channels: usize,
    peak: f32,
    tags: Tags,
}

impl Spool {
    fn new(target: &Path, format: OutputFormat, rate: u32, channels: usize, tags: Tags) -> Result<Self, EncodeError> {
        format.validate().map_err(|reason| EncodeError::Encoder { format: format.extension(), reason })?;
        let mut name = target.as_os_str().to_owned();
        name.push(".spool");
        let path = PathBuf::from(name);
        let file = File::create(&path).map_err(io_err(&path))?;
        Ok(Spool {
            target: target.to_path_buf(),
            path,
            file: BufWriter::with_capacity(1 << 20, file),
            format,
            rate,
            channels,
            peak: 0.0,
            tags,
        })
    }
}

impl Drop for Spool {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.path);
    }
}

impl StemWriter for Spool {
    fn write(&mut self, interleaved: &[f32]) -> Result<(), EncodeError> {
        let mut bytes = Vec::with_capacity(interleaved.len() * 4);
        for &v in interleaved {
            self.peak = self.peak.max(v.abs());
            bytes.extend_from_slice(&v.to_le_bytes());
        }
        self.file.write_all(&bytes).map_err(io_err(&self.path))
    }

    fn finish(mut self: Box<Self>) -> Result<(), EncodeError> {
        self.file.flush().map_err(io_err(&self.path))?;
        let gain = 1.0 / (1.01 * self.peak).max(1.0);
        let mut out = open_direct(&self.target, self.format, self.rate, self.channels, Post::Gain(gain), &self.tags)?;
        let mut reader = BufReader::with_capacity(1 << 20, File::open(&self.path).map_err(io_err(&self.path))?);
        let mut bytes = vec![0u8; 65536 * 4];
        let mut samples = Vec::with_capacity(65536);
        loop {
            let mut filled = 0;
            while filled < bytes.len() {
                let n = reader.read(&mut bytes[filled..]).map_err(io_err(&self.path))?;
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

    #[test]
    fn bad_bitrates_are_rejected() {
        assert!(OutputFormat::Mp3 { kbps: 100 }.validate().is_err());
        assert!(OutputFormat::Flac { bits: 8 }.validate().is_err());
        assert!(OutputFormat::Mp3 { kbps: 320 }.validate().is_ok());
    }
}

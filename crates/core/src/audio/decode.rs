//! Decoding with symphonia: WAV, FLAC, MP3, OGG Vorbis, AAC and ALAC in
//! MP4/M4A (and what else symphonia's `all` feature brings), to interleaved
//! stereo `f32` frames at the file's own sample rate.
//!
//! Mono is duplicated to both channels; more than two channels are mixed down
//! (see [`downmix_weights`]).

use std::fs::File;
use std::path::{Path, PathBuf};

use symphonia::core::audio::Channels;
use symphonia::core::codecs::audio::AudioDecoderOptions;
use symphonia::core::codecs::CodecParameters;
use symphonia::core::errors::Error as SymError;
use symphonia::core::formats::probe::Hint;
use symphonia::core::formats::{FormatOptions, TrackType};
use symphonia::core::io::MediaSourceStream;
use symphonia::core::meta::MetadataOptions;

use crate::progress::{Event, Listener};
use crate::Error;

/// Consecutive undecodable packets after which a file is called corrupt.
const MAX_CONSECUTIVE_DECODE_ERRORS: usize = 16;
/// A stream counts as truncated when it ends this much before its declared length.
const TRUNCATION_TOLERANCE_SECONDS: f64 = 0.1;

/// Why an input could not be decoded. Each has its own message naming the file.
#[derive(Debug, thiserror::Error)]
pub enum DecodeError {
    #[error("input file not found: {0}")]
    NotFound(PathBuf),
    #[error("input is a directory, not an audio file: {0}")]
    IsDirectory(PathBuf),
    #[error("cannot read {path}: {source}")]
    Unreadable {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("input file is empty (0 bytes): {0}")]
    EmptyFile(PathBuf),
    #[error("not a recognised audio file: {path} ({reason})")]
    NotAudio { path: PathBuf, reason: String },
    #[error("no audio track in {0}")]
    NoAudioTrack(PathBuf),
    #[error("unsupported audio codec in {path}: {reason}")]
    UnsupportedCodec { path: PathBuf, reason: String },
    #[error("{0} contains no audio samples (zero length)")]
    NoSamples(PathBuf),
    #[error("{path} is truncated: decoded {decoded:.2} s of the {expected:.2} s its header declares")]
    Truncated { path: PathBuf, decoded: f64, expected: f64 },
    #[error("{path} is corrupt: {reason}")]
    Corrupt { path: PathBuf, reason: String },
}

/// What the decoder learned about the input.
#[derive(Debug, Clone)]
pub struct DecodedInfo {
    /// The file's sample rate in Hz.
    pub sample_rate: u32,
    /// The file's channel count.
    pub channels: usize,
    /// Frames decoded (at `sample_rate`).
    pub frames: u64,
}

/// Per-channel (left, right) gains to fold `channels` into stereo.
///
/// Left-side positions go left, right-side right, centre positions to both at
/// -3 dB (0.7071, ITU-R BS.775), LFE is dropped, unknown (discrete) channels
/// alternate left/right. Each output is divided by the sum of its gains so a
/// signal present on every channel keeps its level.
pub fn downmix_weights(channels: &Channels, count: usize) -> Vec<(f32, f32)> {
    const C: f32 = std::f32::consts::FRAC_1_SQRT_2;
    let mut w: Vec<(f32, f32)> = match channels {
        Channels::Positioned(pos) => pos
            .iter_names()
            .map(|(name, _)| {
                if name.starts_with("LFE") {
                    (0.0, 0.0)
                } else if name.contains("LEFT") {
                    (1.0, 0.0)
                } else if name.contains("RIGHT") {
                    (0.0, 1.0)
                } else {
                    (C, C)
                }
            })
            .collect(),
        _ => Vec::new(),
    };
    if w.len() != count {
        w = (0..count).map(|i| if i % 2 == 0 { (1.0, 0.0) } else { (0.0, 1.0) }).collect();
    }
    let (sl, sr) = w.iter().fold((0.0, 0.0), |(a, b), (l, r)| (a + l, b + r));
    let (sl, sr) = (if sl > 0.0 { sl } else { 1.0 }, if sr > 0.0 { sr } else { 1.0 });
    w.iter().map(|(l, r)| (l / sl, r / sr)).collect()
}

/// Check that `path` is a readable, non-empty regular file.
///
/// # Errors
/// The matching [`DecodeError`].
pub fn check_input(path: &Path) -> Result<u64, DecodeError> {
    let meta = match std::fs::metadata(path) {
        Ok(m) => m,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Err(DecodeError::NotFound(path.to_path_buf())),
        Err(source) => return Err(DecodeError::Unreadable { path: path.to_path_buf(), source }),
    };
    if meta.is_dir() {
        return Err(DecodeError::IsDirectory(path.to_path_buf()));
    }
    if meta.len() == 0 {
        return Err(DecodeError::EmptyFile(path.to_path_buf()));
    }
    Ok(meta.len())
}

/// What a quick look at a file (container and codec headers, no decoding)
/// tells.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct ProbeInfo {
    /// Duration in seconds when the container declares it.
    pub duration_seconds: Option<f64>,
    /// Sample rate in Hz (0 if not declared).
    pub sample_rate: u32,
    /// Channel count (0 if not declared).
    pub channels: usize,
}

/// Check that `path` is audio Stemroom can decode, reading only headers.
///
/// # Errors
/// The [`DecodeError`] a full decode would start with: missing, directory,
/// empty, not audio, no audio track, unsupported codec.
pub fn probe(path: &Path) -> Result<ProbeInfo, DecodeError> {
    check_input(path)?;
    let file = File::open(path).map_err(|source| DecodeError::Unreadable { path: path.to_path_buf(), source })?;
    let mss = MediaSourceStream::new(Box::new(file), Default::default());
    let mut hint = Hint::new();
    if let Some(ext) = path.extension().and_then(|e| e.to_str()) {
        hint.with_extension(ext);
    }
    let format = symphonia::default::get_probe()
        .probe(&hint, mss, FormatOptions::default(), MetadataOptions::default())
        .map_err(|e| DecodeError::NotAudio { path: path.to_path_buf(), reason: e.to_string() })?;
    let track = format.default_track(TrackType::Audio).ok_or_else(|| DecodeError::NoAudioTrack(path.to_path_buf()))?;
    let Some(CodecParameters::Audio(params)) = track.codec_params.as_ref() else {
        return Err(DecodeError::NoAudioTrack(path.to_path_buf()));
    };
    symphonia::default::get_codecs()
        .make_audio_decoder(params, &AudioDecoderOptions::default())
        .map_err(|e| DecodeError::UnsupportedCodec { path: path.to_path_buf(), reason: e.to_string() })?;
    let sample_rate = params.sample_rate.unwrap_or(0);
    let duration_seconds = match (track.num_frames, sample_rate) {
        (Some(n), r) if r > 0 => Some(n as f64 / f64::from(r)),
        _ => None,
    };
    Ok(ProbeInfo { duration_seconds, sample_rate, channels: params.channels.as_ref().map(|c| c.count()).unwrap_or(0) })
}

/// Decode `path`, calling `on_block` with interleaved stereo frames and the
/// file's sample rate in Hz, in order.
///
/// # Errors
/// [`DecodeError`] (wrapped in [`Error::Decode`]) for bad input,
/// [`Error::Cancelled`] when the listener cancels, and whatever `on_block`
/// returns.
pub fn decode(
    path: &Path,
    listener: &dyn Listener,
    mut on_block: impl FnMut(&[f32], u32) -> Result<(), Error>,
) -> Result<DecodedInfo, Error> {
    check_input(path)?;
    let file = File::open(path).map_err(|source| DecodeError::Unreadable { path: path.to_path_buf(), source })?;
    let mss = MediaSourceStream::new(Box::new(file), Default::default());
    let mut hint = Hint::new();
    if let Some(ext) = path.extension().and_then(|e| e.to_str()) {
        hint.with_extension(ext);
    }
    let not_audio = |e: SymError| DecodeError::NotAudio { path: path.to_path_buf(), reason: e.to_string() };
    let mut format = symphonia::default::get_probe()
        .probe(&hint, mss, FormatOptions::default(), MetadataOptions::default())
        .map_err(not_audio)?;
    let track = format
        .default_track(TrackType::Audio)
        .ok_or_else(|| DecodeError::NoAudioTrack(path.to_path_buf()))?
        .clone();
    let Some(CodecParameters::Audio(params)) = track.codec_params.clone() else {
        return Err(DecodeError::NoAudioTrack(path.to_path_buf()).into());
    };
    let mut decoder = symphonia::default::get_codecs()
        .make_audio_decoder(&params, &AudioDecoderOptions::default())
        .map_err(|e| DecodeError::UnsupportedCodec { path: path.to_path_buf(), reason: e.to_string() })?;

    let declared_frames = track.num_frames;
    let mut sample_rate = params.sample_rate.unwrap_or(0);
    let mut channels = params.channels.as_ref().map(|c| c.count()).unwrap_or(0);
    let mut weights: Option<Vec<(f32, f32)>> = None;
    let mut frames: u64 = 0;
    let mut consecutive_errors = 0usize;
    let mut interleaved: Vec<f32> = Vec::new();
    let mut stereo: Vec<f32> = Vec::new();
    let mut last_report = 0u64;
    let mut truncated_io = false;

    loop {
        if listener.is_cancelled() {
            return Err(Error::Cancelled);
        }
        let packet = match format.next_packet() {
            Ok(Some(p)) => p,
            Ok(None) => break,
            Err(SymError::IoError(e)) if e.kind() == std::io::ErrorKind::UnexpectedEof => {
                truncated_io = frames > 0;
                break;
            }
            Err(SymError::ResetRequired) => break,
            Err(SymError::DecodeError(msg)) => {
                consecutive_errors += 1;
                if consecutive_errors > MAX_CONSECUTIVE_DECODE_ERRORS {
                    return Err(DecodeError::Corrupt { path: path.to_path_buf(), reason: msg.to_string() }.into());
                }
                continue;
            }
            Err(e) => {
                return Err(DecodeError::Corrupt { path: path.to_path_buf(), reason: e.to_string() }.into());
            }
        };
        if packet.track_id != track.id {
            continue;
        }
        let buf = match decoder.decode(&packet) {
            Ok(buf) => buf,
            Err(SymError::DecodeError(msg)) => {
                consecutive_errors += 1;
                if consecutive_errors > MAX_CONSECUTIVE_DECODE_ERRORS {
                    return Err(DecodeError::Corrupt { path: path.to_path_buf(), reason: msg.to_string() }.into());
                }
                continue;
            }
            Err(SymError::IoError(_)) => {
                truncated_io = frames > 0;
                break;
            }
            Err(e) => return Err(DecodeError::Corrupt { path: path.to_path_buf(), reason: e.to_string() }.into()),
        };
        consecutive_errors = 0;
        let n = buf.frames();
        if n == 0 {
            continue;
        }
        let spec = buf.spec();
        let ch = spec.channels().count();
        if ch == 0 {
            return Err(DecodeError::Corrupt { path: path.to_path_buf(), reason: "stream has 0 channels".into() }.into());
        }
        if weights.is_none() || ch != channels {
            channels = ch;
            sample_rate = spec.rate();
            weights = Some(downmix_weights(spec.channels(), ch));
        }
        buf.copy_to_vec_interleaved::<f32>(&mut interleaved);
        stereo.clear();
        stereo.reserve(n * 2);
        match ch {
            1 => {
                for &v in &interleaved[..n] {
                    stereo.extend([v, v]);
                }
            }
            2 => stereo.extend_from_slice(&interleaved[..n * 2]),
            _ => {
                let w = weights.as_deref().unwrap_or_default();
                for frame in interleaved[..n * ch].chunks_exact(ch) {
                    let (mut l, mut r) = (0.0f32, 0.0f32);
                    for (v, (wl, wr)) in frame.iter().zip(w) {
                        l += v * wl;
                        r += v * wr;
                    }
                    stereo.extend([l, r]);
                }
            }
        }
        // Non-finite samples would poison the normalisation; treat as silence.
        for v in &mut stereo {
            if !v.is_finite() {
                *v = 0.0;
            }
        }
        on_block(&stereo, sample_rate)?;
        frames += n as u64;
        if sample_rate > 0 && frames - last_report >= sample_rate as u64 * 10 {
            last_report = frames;
            listener.event(&Event::Decoding {
                seconds_decoded: frames as f64 / sample_rate as f64,
                fraction: declared_frames.map(|d| (frames as f64 / d.max(1) as f64).min(1.0)),
            });
        }
    }
    if frames == 0 || sample_rate == 0 {
        return Err(DecodeError::NoSamples(path.to_path_buf()).into());
    }
    let decoded = frames as f64 / sample_rate as f64;
    if let Some(declared) = declared_frames {
        let expected = declared as f64 / sample_rate as f64;
        if expected - decoded > TRUNCATION_TOLERANCE_SECONDS {
            return Err(DecodeError::Truncated { path: path.to_path_buf(), decoded, expected }.into());
        }
    } else if truncated_io {
        tracing::warn!("{} ended mid-packet; it may be truncated", path.display());
    }
    Ok(DecodedInfo { sample_rate, channels, frames })
}

#[cfg(test)]
mod tests {
    use super::*;
    use symphonia::core::audio::Position;

    #[test]
    fn downmix_weights_follow_positions() {
        let quad = Channels::Positioned(Position::FRONT_LEFT | Position::FRONT_RIGHT | Position::REAR_LEFT | Position::REAR_RIGHT);
        assert_eq!(downmix_weights(&quad, 4), vec![(0.5, 0.0), (0.0, 0.5), (0.5, 0.0), (0.0, 0.5)]);
        let surround = Channels::Positioned(
            Position::FRONT_LEFT | Position::FRONT_RIGHT | Position::FRONT_CENTER | Position::LFE1 | Position::REAR_LEFT | Position::REAR_RIGHT,
        );
        let w = downmix_weights(&surround, 6);
        assert_eq!(w[3], (0.0, 0.0), "LFE dropped");
        assert!((w[2].0 - w[2].1).abs() < 1e-7 && w[2].0 > 0.0, "centre to both sides");
        let sum_l: f32 = w.iter().map(|p| p.0).sum();
        assert!((sum_l - 1.0).abs() < 1e-6, "level kept");
    }
}

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
use symphonia::core::formats::{FormatOptions, SeekMode, SeekTo, TrackType};
use symphonia::core::io::MediaSourceStream;
use symphonia::core::meta::MetadataOptions;
use symphonia::core::units::{TimeBase, Timestamp};

use crate::progress::{Event, Listener};
use crate::Error;

/// Consecutive undecodable packets after which a file is called corrupt.
const MAX_CONSECUTIVE_DECODE_ERRORS: usize = 16;
/// Frames decoded before a seek target so the codec's state is rebuilt:
/// 4096 covers an MP3 bit reservoir (at most 511 bytes back, under two
/// 1152-frame frames) and one AAC or Vorbis block (at most 2048 frames).
const SEEK_PREROLL_FRAMES: u64 = 4096;
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

/// A pull decoder: opens a file once and hands out interleaved stereo
/// blocks at the file's sample rate, one packet at a time. [`decode`] and
/// [`probe`] are built on it; readers that must advance several files in
/// step (exports, the player) call [`StreamDecoder::next_block`] directly.
pub struct StreamDecoder {
    path: PathBuf,
    format: Box<dyn symphonia::core::formats::FormatReader>,
    decoder: Box<dyn symphonia::core::codecs::audio::AudioDecoder>,
    track_id: u32,
    declared_frames: Option<u64>,
    sample_rate: u32,
    channels: usize,
    weights: Option<Vec<(f32, f32)>>,
    frames: u64,
    interleaved: Vec<f32>,
    stereo: Vec<f32>,
    truncated_io: bool,
    finished: bool,
    /// The track's timebase (ticks of packet timestamps), when declared.
    time_base: Option<TimeBase>,
    /// After a seek: the frame the next block must start at; earlier
    /// decoded frames are dropped.
    seek_target: Option<u64>,
}

impl std::fmt::Debug for StreamDecoder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("StreamDecoder").field("path", &self.path).field("frames", &self.frames).finish()
    }
}

impl StreamDecoder {
    /// Open `path` and set up its decoder; reads only headers.
    ///
    /// # Errors
    /// Missing, directory, empty, not audio, no audio track, unsupported codec.
    pub fn open(path: &Path) -> Result<Self, DecodeError> {
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
        let track =
            format.default_track(TrackType::Audio).ok_or_else(|| DecodeError::NoAudioTrack(path.to_path_buf()))?;
        let Some(CodecParameters::Audio(params)) = track.codec_params.as_ref() else {
            return Err(DecodeError::NoAudioTrack(path.to_path_buf()));
        };
        let time_base = track.time_base;
        let decoder = symphonia::default::get_codecs()
            .make_audio_decoder(params, &AudioDecoderOptions::default())
            .map_err(|e| DecodeError::UnsupportedCodec { path: path.to_path_buf(), reason: e.to_string() })?;
        Ok(StreamDecoder {
            path: path.to_path_buf(),
            track_id: track.id,
            declared_frames: track.num_frames,
            sample_rate: params.sample_rate.unwrap_or(0),
            channels: params.channels.as_ref().map(|c| c.count()).unwrap_or(0),
            format,
            decoder,
            weights: None,
            frames: 0,
            interleaved: Vec::new(),
            stereo: Vec::new(),
            truncated_io: false,
            finished: false,
            time_base,
            seek_target: None,
        })
    }

    /// Sample rate in Hz (as declared until the first block, then as decoded).
    pub fn sample_rate(&self) -> u32 {
        self.sample_rate
    }

    /// The length in frames the container declares, if any.
    pub fn declared_frames(&self) -> Option<u64> {
        self.declared_frames
    }

    /// Title and artist from the file's metadata (ID3, Vorbis comments,
    /// MP4 atoms), when present.
    pub fn tags(&mut self) -> crate::audio::encode::Tags {
        use symphonia::core::meta::StandardTag;
        let mut t = crate::audio::encode::Tags::default();
        if let Some(rev) = self.format.metadata().current() {
            for tag in &rev.media.tags {
                match &tag.std {
                    Some(StandardTag::TrackTitle(v)) if t.title.is_none() => t.title = Some(v.to_string()),
                    Some(StandardTag::Artist(v)) if t.artist.is_none() => t.artist = Some(v.to_string()),
                    _ => {}
                }
            }
        }
        t
    }

    /// What was decoded so far.
    pub fn info(&self) -> DecodedInfo {
        DecodedInfo { sample_rate: self.sample_rate, channels: self.channels, frames: self.frames }
    }

    /// Position the stream so that the next block starts exactly at `frame`
    /// (frames at the file's sample rate, from the start of the stream).
    /// Uses the container's accurate seek to a little before `frame`, then
    /// drops the decoded frames before `frame`. Seeking past the end leaves the stream at its end.
    ///
    /// # Errors
    /// [`DecodeError::Corrupt`] when the container cannot seek (e.g. a
    /// stream without an index or timestamps).
    pub fn seek(&mut self, frame: u64) -> Result<(), DecodeError> {
        // Lossy codecs need the packets before the target to rebuild their
        // state (MP3's bit reservoir, the MDCT overlap of AAC and Vorbis):
        // decode from a little earlier and drop what comes before `frame`.
        let ts = self.frames_to_ticks(frame.saturating_sub(SEEK_PREROLL_FRAMES));
        let to = SeekTo::Timestamp { ts: Timestamp::new(ts), track_id: self.track_id };
        match self.format.seek(SeekMode::Accurate, to) {
            Ok(_) => {}
            Err(SymError::SeekError(_)) if self.declared_frames.is_some_and(|n| frame >= n) => {
                self.finished = true;
                self.frames = frame;
                return Ok(());
            }
            Err(e) => return Err(self.corrupt(format!("cannot seek to frame {frame}: {e}"))),
        }
        self.decoder.reset();
        self.frames = frame;
        self.finished = false;
        self.truncated_io = false;
        self.seek_target = Some(frame);
        Ok(())
    }

    /// Packet timestamp ticks for a frame position (identity when the
    /// timebase is 1/sample rate, as in WAV, FLAC and MP3).
    fn frames_to_ticks(&self, frame: u64) -> i64 {
        match self.time_base {
            Some(tb) if self.sample_rate > 0 => {
                let (n, d) = (u128::from(tb.numer.get()), u128::from(tb.denom.get()));
                let ticks = u128::from(frame) * d / (n * u128::from(self.sample_rate));
                i64::try_from(ticks).unwrap_or(i64::MAX)
            }
            _ => i64::try_from(frame).unwrap_or(i64::MAX),
        }
    }

    /// The frame position of a packet timestamp (inverse of `frames_to_ticks`).
    fn ticks_to_frames(&self, ticks: i64) -> u64 {
        let ticks = u128::try_from(ticks.max(0)).unwrap_or(0);
        match self.time_base {
            Some(tb) if self.sample_rate > 0 => {
                let (n, d) = (u128::from(tb.numer.get()), u128::from(tb.denom.get()));
                u64::try_from(ticks * n * u128::from(self.sample_rate) / d).unwrap_or(u64::MAX)
            }
            _ => u64::try_from(ticks).unwrap_or(u64::MAX),
        }
    }

    fn corrupt(&self, reason: String) -> DecodeError {
        DecodeError::Corrupt { path: self.path.clone(), reason }
    }

    /// The next block of interleaved stereo frames (non-finite samples
    /// replaced by 0) with its sample rate in Hz, or `None` at the end of
    /// the stream.
    ///
    /// # Errors
    /// [`DecodeError::Corrupt`] after too many undecodable packets in a row;
    /// at the end, [`DecodeError::NoSamples`] for an empty stream and
    /// [`DecodeError::Truncated`] when it stopped well before its declared length.
    pub fn next_block(&mut self) -> Result<Option<(&[f32], u32)>, DecodeError> {
        let mut consecutive_errors = 0usize;
        loop {
            if self.finished {
                return Ok(None);
            }
            let packet = match self.format.next_packet() {
                Ok(Some(p)) => p,
                Ok(None) | Err(SymError::ResetRequired) => return self.end(),
                Err(SymError::IoError(e)) if e.kind() == std::io::ErrorKind::UnexpectedEof => {
                    self.truncated_io = self.frames > 0;
                    return self.end();
                }
                Err(SymError::DecodeError(msg)) => {
                    consecutive_errors += 1;
                    if consecutive_errors > MAX_CONSECUTIVE_DECODE_ERRORS {
                        return Err(self.corrupt(msg.to_string()));
                    }
                    continue;
                }
                Err(e) => return Err(self.corrupt(e.to_string())),
            };
            if packet.track_id != self.track_id {
                continue;
            }
            let packet_start = self.ticks_to_frames(packet.pts.get());
            let buf = match self.decoder.decode(&packet) {
                Ok(buf) => buf,
                Err(SymError::DecodeError(msg)) => {
                    consecutive_errors += 1;
                    if consecutive_errors > MAX_CONSECUTIVE_DECODE_ERRORS {
                        return Err(self.corrupt(msg.to_string()));
                    }
                    continue;
                }
                Err(SymError::IoError(_)) => {
                    self.truncated_io = self.frames > 0;
                    return self.end();
                }
                Err(e) => return Err(self.corrupt(e.to_string())),
            };
            let n = buf.frames();
            if n == 0 {
                continue;
            }
            // After a seek, frames before the target are decoded (the codec
            // needs them) but not handed out.
            let mut skip = 0usize;
            if let Some(target) = self.seek_target {
                if packet_start + n as u64 <= target {
                    continue;
                }
                skip = usize::try_from(target.saturating_sub(packet_start)).unwrap_or(0).min(n);
                self.seek_target = None;
            }
            let spec = buf.spec();
            let ch = spec.channels().count();
            if ch == 0 {
                return Err(self.corrupt("stream has 0 channels".into()));
            }
            if self.weights.is_none() || ch != self.channels {
                self.channels = ch;
                self.sample_rate = spec.rate();
                self.weights = Some(downmix_weights(spec.channels(), ch));
            }
            buf.copy_to_vec_interleaved::<f32>(&mut self.interleaved);
            let stereo = &mut self.stereo;
            stereo.clear();
            stereo.reserve(n * 2);
            match ch {
                1 => {
                    for &v in &self.interleaved[..n] {
                        stereo.extend([v, v]);
                    }
                }
                2 => stereo.extend_from_slice(&self.interleaved[..n * 2]),
                _ => {
                    let w = self.weights.as_deref().unwrap_or_default();
                    for frame in self.interleaved[..n * ch].chunks_exact(ch) {
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
            for v in stereo.iter_mut() {
                if !v.is_finite() {
                    *v = 0.0;
                }
            }
            if skip > 0 {
                self.stereo.drain(..skip * 2);
            }
            self.frames += (n - skip) as u64;
            return Ok(Some((&self.stereo, self.sample_rate)));
        }
    }

    fn end(&mut self) -> Result<Option<(&[f32], u32)>, DecodeError> {
        self.finished = true;
        if self.frames == 0 || self.sample_rate == 0 {
            return Err(DecodeError::NoSamples(self.path.clone()));
        }
        let decoded = self.frames as f64 / f64::from(self.sample_rate);
        if let Some(declared) = self.declared_frames {
            let expected = declared as f64 / f64::from(self.sample_rate);
            if expected - decoded > TRUNCATION_TOLERANCE_SECONDS {
                return Err(DecodeError::Truncated { path: self.path.clone(), decoded, expected });
            }
        } else if self.truncated_io {
            tracing::warn!("{} ended mid-packet; it may be truncated", self.path.display());
        }
        Ok(None)
    }
}

/// Check that `path` is audio Stemroom can decode, reading only headers.
///
/// # Errors
/// The [`DecodeError`] a full decode would start with: missing, directory,
/// empty, not audio, no audio track, unsupported codec.
pub fn probe(path: &Path) -> Result<ProbeInfo, DecodeError> {
    let d = StreamDecoder::open(path)?;
    let duration_seconds = match (d.declared_frames, d.sample_rate) {
        (Some(n), r) if r > 0 => Some(n as f64 / f64::from(r)),
        _ => None,
    };
    Ok(ProbeInfo { duration_seconds, sample_rate: d.sample_rate, channels: d.channels })
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
    let mut d = StreamDecoder::open(path)?;
    let declared = d.declared_frames;
    let mut last_report = 0u64;
    loop {
        if listener.is_cancelled() {
            return Err(Error::Cancelled);
        }
        let Some((block, rate)) = d.next_block()? else { break };
        on_block(block, rate)?;
        let (frames, sr) = (d.frames, d.sample_rate);
        if sr > 0 && frames - last_report >= u64::from(sr) * 10 {
            last_report = frames;
            listener.event(&Event::Decoding {
                seconds_decoded: frames as f64 / f64::from(sr),
                fraction: declared.map(|t| (frames as f64 / t.max(1) as f64).min(1.0)),
            });
        }
    }
    Ok(d.info())
}

#[cfg(test)]
mod tests {
    use super::*;
    use symphonia::core::audio::Position;

    #[test]
    fn downmix_weights_follow_positions() {
        let quad = Channels::Positioned(
            Position::FRONT_LEFT | Position::FRONT_RIGHT | Position::REAR_LEFT | Position::REAR_RIGHT,
        );
        assert_eq!(downmix_weights(&quad, 4), vec![(0.5, 0.0), (0.0, 0.5), (0.5, 0.0), (0.0, 0.5)]);
        let surround = Channels::Positioned(
            Position::FRONT_LEFT
                | Position::FRONT_RIGHT
                | Position::FRONT_CENTER
                | Position::LFE1
                | Position::REAR_LEFT
                | Position::REAR_RIGHT,
        );
        let w = downmix_weights(&surround, 6);
        assert_eq!(w[3], (0.0, 0.0), "LFE dropped");
        assert!((w[2].0 - w[2].1).abs() < 1e-7 && w[2].0 > 0.0, "centre to both sides");
        let sum_l: f32 = w.iter().map(|p| p.0).sum();
        assert!((sum_l - 1.0).abs() < 1e-6, "level kept");
    }
}

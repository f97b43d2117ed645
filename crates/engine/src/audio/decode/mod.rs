//! Decoding any supported file to interleaved stereo `f32` frames at the
//! file's own sample rate.
//!
//! Two backends sit behind one [`StreamDecoder`]:
//! - `native`: symphonia (WAV, AIFF, CAF, FLAC, MP3, Ogg Vorbis, AAC-LC and
//!   ALAC in MP4/M4A, Matroska/WebM) with libopus through
//!   `symphonia-adapter-libopus` (Opus in Ogg and WebM/Matroska), all built
//!   into the binary;
//! - `ffmpeg`: a system `ffmpeg` run as a child process, for what symphonia
//!   cannot read (HE-AAC, AC-3/E-AC-3, WMA, DTS, …), when one is installed
//!   (see [`ffmpeg_status`]). Without it such files fail with
//!   [`DecodeError::NeedsFfmpeg`], naming the codec.
//!
//! Mono is duplicated to both channels; more than two channels are mixed down
//! (see [`downmix_weights`]; ffmpeg's own downmix for its inputs).

mod edit;
mod ffmpeg;
mod native;
mod sniff;

use std::path::{Path, PathBuf};

use symphonia::core::audio::Channels;

pub use ffmpeg::{ffmpeg_status, set_ffmpeg_path, FfmpegStatus};

use crate::audio::encode::Tags;
use crate::progress::{Event, Listener};
use crate::Error;

/// What HE-AAC is called in messages.
const HE_AAC: &str = "HE-AAC (AAC with SBR/PS, e.g. YouTube's format 139)";

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
    /// The stream broke off (mid-packet) well before the length its bit
    /// rate suggests.
    #[error("{path} is truncated or damaged: it breaks off at {decoded:.2} s of about {expected:.2} s")]
    BrokenOff { path: PathBuf, decoded: f64, expected: f64 },
    #[error("{path} is corrupt: {reason}")]
    Corrupt { path: PathBuf, reason: String },
    /// The file is audio Stemroom's built-in decoders do not read (AC-3,
    /// WMA, HE-AAC, …) and no ffmpeg was found to decode it.
    #[error(
        "{path}: {codec} is not among Stemroom's built-in decoders. Installing ffmpeg adds it \
         (Debian/Ubuntu: sudo apt install ffmpeg; or choose its program in Settings, or set $STEMROOM_FFMPEG)"
    )]
    NeedsFfmpeg { path: PathBuf, codec: String },
    /// The caller's cancel came while the decoder waited
    /// ([`StreamDecoder::next_block_unless`]).
    #[error("decoding was cancelled")]
    Cancelled,
}

impl DecodeError {
    /// Whether another decoder may read what this one could not: the
    /// container or the codec is unknown to the built-in decoders (not a
    /// missing, empty or damaged file).
    fn is_unsupported(&self) -> bool {
        matches!(
            self,
            DecodeError::NotAudio { .. } | DecodeError::NoAudioTrack(_) | DecodeError::UnsupportedCodec { .. }
        )
    }
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
/// The ITU-R BS.775 stereo fold-down (Lo/Ro: L + 0.7071 C + 0.7071 Ls, as
/// ATSC A/52 and ffmpeg's `-ac 2` fold 5.1): front left and right positions
/// (the wide and centre-left/right ones too) go to their side at full
/// gain, every other left or right position (side, rear, top, bottom) to
/// its side at -3 dB (0.7071), centre positions to both at -3 dB.
/// Channels without positions (symphonia's `Discrete`: AIFF with 3 or
/// more channels, PCM in Matroska) take the layout ffmpeg guesses for
/// their count ([`default_layout`]: 2.1, 4.0, 5.0, 5.1, 6.1, 7.1);
/// labelled ones (CAF) their own positions, and
/// any channel left without one goes to both sides at -3 dB (never
/// alternating, which put a 5.1 file's centre on the left only). LFE is dropped in 5.1 and 7.1
/// (6 and 8 channels, as BS.775 folds them); with other counts it goes to
/// both at -3 dB like a centre: a WAV without a channel mask gets a guessed
/// layout (symphonia calls the 4th of 4 channels LFE, where a quad file has
/// its rear right), and a guess must not silence a channel. Each output is
/// then divided by the sum of its gains, so a signal on every channel keeps
/// its level and nothing exceeds full scale (ffmpeg, for the formats it
/// decodes, does not divide: those come out louder by that sum).
pub fn downmix_weights(channels: &Channels, count: usize) -> Vec<(f32, f32)> {
    const C: f32 = std::f32::consts::FRAC_1_SQRT_2;
    use symphonia::core::audio::{ChannelLabel, Position};
    let drop_lfe = count == 6 || count == 8;
    let of_name = |name: &str| {
        let front = name.starts_with("FRONT_");
        if name.starts_with("LFE") && drop_lfe {
            (0.0, 0.0)
        } else if name.contains("LEFT") {
            (if front { 1.0 } else { C }, 0.0)
        } else if name.contains("RIGHT") {
            (0.0, if front { 1.0 } else { C })
        } else {
            (C, C)
        }
    };
    let of_positions = |pos: &Position| pos.iter_names().map(|(name, _)| of_name(name)).collect::<Vec<_>>();
    let mut w: Vec<(f32, f32)> = match channels {
        Channels::Positioned(pos) => of_positions(pos),
        Channels::Discrete(n) => default_layout(usize::from(*n)).map(|p| of_positions(&p)).unwrap_or_default(),
        Channels::Custom(labels) => labels
            .iter()
            .map(|label| match label {
                ChannelLabel::Positioned(p) => of_positions(p).first().copied().unwrap_or((C, C)),
                _ => (C, C),
            })
            .collect(),
        _ => Vec::new(),
    };
    if w.len() != count {
        w = vec![(C, C); count];
    }
    let (sl, sr) = w.iter().fold((0.0, 0.0), |(a, b), (l, r)| (a + l, b + r));
    let (sl, sr) = (if sl > 0.0 { sl } else { 1.0 }, if sr > 0.0 { sr } else { 1.0 });
    w.iter().map(|(l, r)| (l / sl, r / sr)).collect()
}

/// The layout ffmpeg guesses for `count` channels that carry no positions
/// (`av_channel_layout_default`, as `ffmpeg -f s16le -ac N` reports it:
/// 2.1, 4.0, 5.0, 5.1, 6.1, 7.1), channels in WAVE (bit) order; `None`
/// for other counts.
fn default_layout(count: usize) -> Option<symphonia::core::audio::Position> {
    use symphonia::core::audio::Position as P;
    let front = P::FRONT_LEFT | P::FRONT_RIGHT;
    Some(match count {
        3 => front | P::LFE1,
        4 => front | P::FRONT_CENTER | P::REAR_CENTER,
        5 => front | P::FRONT_CENTER | P::REAR_LEFT | P::REAR_RIGHT,
        6 => front | P::FRONT_CENTER | P::LFE1 | P::REAR_LEFT | P::REAR_RIGHT,
        7 => front | P::FRONT_CENTER | P::LFE1 | P::REAR_CENTER | P::SIDE_LEFT | P::SIDE_RIGHT,
        8 => front | P::FRONT_CENTER | P::LFE1 | P::REAR_LEFT | P::REAR_RIGHT | P::SIDE_LEFT | P::SIDE_RIGHT,
        _ => return None,
    })
}

/// Check that `path` is a readable, non-empty regular file.
///
/// # Errors
/// The matching [`DecodeError`]; [`DecodeError::Unreadable`] for a pipe,
/// socket or device.
pub fn check_input(path: &Path) -> Result<u64, DecodeError> {
    let meta = match std::fs::metadata(path) {
        Ok(m) => m,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Err(DecodeError::NotFound(path.to_path_buf())),
        Err(source) => return Err(DecodeError::Unreadable { path: path.to_path_buf(), source }),
    };
    if meta.is_dir() {
        return Err(DecodeError::IsDirectory(path.to_path_buf()));
    }
    // A pipe, socket or device has no length and is read more than once
    // here (probe, then decode): only a file will do.
    if !meta.is_file() {
        return Err(DecodeError::Unreadable {
            path: path.to_path_buf(),
            source: std::io::Error::new(
                std::io::ErrorKind::InvalidInput,
                "not a regular file (a pipe, socket or device): save the audio to a file first",
            ),
        });
    }
    if meta.len() == 0 {
        return Err(DecodeError::EmptyFile(path.to_path_buf()));
    }
    Ok(meta.len())
}

/// What a quick look at a file (container and codec headers, no decoding)
/// tells.
#[derive(Debug, Clone, PartialEq)]
pub struct ProbeInfo {
    /// Duration in seconds when the container declares it.
    pub duration_seconds: Option<f64>,
    /// `duration_seconds` is a guess from the bit rate (see
    /// [`StreamDecoder::length_estimated`]).
    pub duration_estimated: bool,
    /// Sample rate in Hz (0 if not declared).
    pub sample_rate: u32,
    /// Channel count (0 if not declared).
    pub channels: usize,
    /// Title, artist and album from the file's tags, where it has them.
    pub tags: Tags,
}

/// What a decoding backend provides (see the module docs).
trait Backend: Send {
    /// `native` or `ffmpeg`, for diagnostics.
    fn kind(&self) -> &'static str;
    /// Sample rate in Hz (as declared until the first block, then as decoded).
    fn sample_rate(&self) -> u32;
    /// The file's channel count (0 if not declared).
    fn channels(&self) -> usize;
    /// The length in frames the container declares, if any.
    fn declared_frames(&self) -> Option<u64>;
    /// Whether [`Backend::declared_frames`] is only a guess from the bit
    /// rate (an MP3 without a Xing/Info/VBRI frame, a raw ADTS AAC stream,
    /// a container length that includes video): a hint for progress, not
    /// a length a shorter stream is truncated against.
    fn length_estimated(&self) -> bool {
        false
    }
    /// Frames of silence handed out in place of packets that could not be
    /// decoded (ffmpeg drops such packets instead).
    fn concealed_frames(&self) -> u64 {
        0
    }
    /// Frames handed out so far (from the start of the stream, after seeks).
    fn frames(&self) -> u64;
    /// Title and artist, when the file has them.
    fn tags(&mut self) -> Tags;
    /// Position the stream so that the next block starts at `frame`.
    fn seek(&mut self, frame: u64) -> Result<(), DecodeError>;
    /// Decode the next block ([`Backend::block`]); returns its rate in Hz,
    /// or `None` at the end. A backend that waits on another process asks
    /// `cancelled` while it waits and gives [`DecodeError::Cancelled`] when
    /// it says so.
    fn next_block(&mut self, cancelled: &dyn Fn() -> bool) -> Result<Option<u32>, DecodeError>;
    /// The block [`Backend::next_block`] decoded: interleaved stereo frames.
    fn block(&self) -> &[f32];
    /// What the user should hear about the decode (a file that may be
    /// truncated), each once: taken, not copied.
    fn warnings(&mut self) -> Vec<String> {
        Vec::new()
    }
    /// The stream is not read past here (an edit list ends the song before
    /// the stream's end): put what its end would say into
    /// [`Backend::warnings`].
    fn stop_early(&mut self) {}
    /// The stream is cut to an MP4 edit list ([`edit`]).
    fn cut_to_edit_list(&self) -> bool {
        false
    }
    /// The track the built-in decoder reads (symphonia's id: an MP4
    /// track's `tkhd` id).
    fn track_id(&self) -> Option<u32> {
        None
    }
}

/// A pull decoder: opens a file once and hands out interleaved stereo
/// blocks at the file's sample rate, one packet at a time. [`decode`] and
/// [`probe`] are built on it; readers that must advance several files in
/// step (exports, the player) call [`StreamDecoder::next_block`] directly.
pub struct StreamDecoder {
    path: PathBuf,
    backend: Box<dyn Backend>,
    /// ffmpeg took over from the built-in decoder, which found no samples
    /// or a change of format midway.
    retried: bool,
    /// Warnings of the opening, until taken ([`StreamDecoder::take_warnings`]).
    notes: Vec<String>,
    /// Frames still to drop before handing any out: a seek near the start,
    /// served by decoding from the start ([`StreamDecoder::seek`]).
    skip: u64,
    /// Opening the file again is cheap (headers only): not for an AAC
    /// stream that may be HE-AAC, whose opening asks ffprobe.
    cheap_to_reopen: bool,
}

impl std::fmt::Debug for StreamDecoder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("StreamDecoder")
            .field("path", &self.path)
            .field("backend", &self.backend.kind())
            .field("frames", &self.backend.frames())
            .finish()
    }
}

impl StreamDecoder {
    fn over(path: &Path, backend: impl Backend + 'static) -> Self {
        StreamDecoder {
            path: path.to_path_buf(),
            backend: Box::new(backend),
            retried: false,
            notes: Vec::new(),
            skip: 0,
            cheap_to_reopen: true,
        }
    }

    /// What the user should hear about this decode so far (the core of an
    /// AAC stream that may be HE-AAC decoded without ffmpeg, a file that
    /// may be truncated), each once. [`decode`] sends them as
    /// [`Event::Warning`]; readers that pull blocks themselves may too.
    pub fn take_warnings(&mut self) -> Vec<String> {
        let mut all = std::mem::take(&mut self.notes);
        all.extend(self.backend.warnings());
        all
    }

    /// Open `path` and set up its decoder; reads only headers (and, for the
    /// ffmpeg backend, runs `ffprobe` on them).
    ///
    /// # Errors
    /// Missing, directory, empty, not audio, no audio track, unsupported
    /// codec; [`DecodeError::NeedsFfmpeg`] for a known codec that only
    /// ffmpeg decodes when none is installed.
    pub fn open(path: &Path) -> Result<Self, DecodeError> {
        check_input(path)?;
        let native_err = match native::NativeStream::open(path) {
            Ok(s) if s.maybe_sbr => match ffmpeg::FfmpegStream::open(path) {
                Ok(f) => return Ok(StreamDecoder::over(path, f)),
                Err(ffmpeg::OpenError::NotInstalled) if s.he_aac => {
                    return Err(DecodeError::NeedsFfmpeg { path: path.to_path_buf(), codec: HE_AAC.into() })
                }
                Err(_) => {
                    tracing::warn!(
                        "{}: AAC at {} Hz may be HE-AAC, whose high band only ffmpeg decodes; using the core",
                        path.display(),
                        s.sample_rate()
                    );
                    let note = format!(
                        "AAC at {} Hz may be HE-AAC, whose upper band only ffmpeg decodes: the stems have half the bandwidth (install ffmpeg for the whole)",
                        s.sample_rate()
                    );
                    // (Its edit list applies to the core as well.)
                    let mut d = if s.mp4_aac { with_mp4_edit(path, s) } else { StreamDecoder::over(path, s) };
                    d.notes.push(note);
                    d.cheap_to_reopen = false;
                    return Ok(d);
                }
            },
            // AAC in MP4: the song is what its edit list says (the
            // encoder's priming and padding cut), as ffmpeg plays it.
            Ok(s) if s.mp4_aac => return Ok(with_mp4_edit(path, s)),
            Ok(s) => return Ok(StreamDecoder::over(path, s)),
            // (Corrupt at open: a known container whose header was cut
            // short, `sniff::cut_short`; ffmpeg may still read what
            // symphonia took for that.)
            Err(e) if e.is_unsupported() || matches!(e, DecodeError::Corrupt { .. }) => e,
            Err(e) => return Err(e),
        };
        match ffmpeg::FfmpegStream::open(path) {
            Ok(s) => {
                tracing::info!("{}: decoding with ffmpeg ({native_err})", path.display());
                Ok(StreamDecoder::over(path, s))
            }
            // A file cut short is not one ffmpeg would read.
            Err(ffmpeg::OpenError::NotInstalled) if matches!(native_err, DecodeError::Corrupt { .. }) => {
                Err(native_err)
            }
            Err(ffmpeg::OpenError::NotInstalled) => match sniff::codec_name(path, &native_err) {
                Some(codec) => Err(DecodeError::NeedsFfmpeg { path: path.to_path_buf(), codec }),
                None => Err(native_err),
            },
            // ffmpeg cannot read it either: the built-in decoder's reason is
            // the one to show.
            Err(ffmpeg::OpenError::Failed(reason)) => {
                tracing::info!("{}: ffmpeg cannot read it either: {reason}", path.display());
                Err(native_err)
            }
        }
    }

    /// Sample rate in Hz (as declared until the first block, then as decoded).
    pub fn sample_rate(&self) -> u32 {
        self.backend.sample_rate()
    }

    /// Whether the stream is cut to its MP4 edit list (AAC in M4A: the
    /// encoder's priming and padding left out, as ffmpeg decodes it).
    pub fn cut_to_edit_list(&self) -> bool {
        self.backend.cut_to_edit_list()
    }

    /// The length in frames the container declares, if any (see
    /// [`StreamDecoder::length_estimated`]).
    pub fn declared_frames(&self) -> Option<u64> {
        self.backend.declared_frames()
    }

    /// Whether [`StreamDecoder::declared_frames`] is a guess from the bit
    /// rate (MP3 without a Xing/Info/VBRI frame, raw ADTS AAC, a length
    /// ffprobe takes from the whole container): the decoded length may
    /// differ from it by a few percent, and is not checked against it.
    pub fn length_estimated(&self) -> bool {
        self.backend.length_estimated()
    }

    /// Title and artist from the file's metadata (ID3, Vorbis comments,
    /// MP4 atoms, …), when present.
    pub fn tags(&mut self) -> Tags {
        self.backend.tags()
    }

    /// What was decoded so far.
    pub fn info(&self) -> DecodedInfo {
        DecodedInfo {
            sample_rate: self.backend.sample_rate(),
            channels: self.backend.channels(),
            frames: self.backend.frames(),
        }
    }

    /// Position the stream so that the next block starts exactly at `frame`
    /// (frames at the file's sample rate, from the start of the stream).
    /// Seeking past the end leaves the stream at its end. Within the first
    /// second the file is read again from its start and the frames before
    /// `frame` dropped (a millisecond's decoding): a container seek there
    /// finds no packets before the target to rebuild the codec's state
    /// from, and its first packets' delay trims made it land a packet
    /// (WebM, 20 ms) or the pre-skip (Ogg Opus, 6.5 ms) off.
    ///
    /// # Errors
    /// [`DecodeError::Corrupt`] when the container cannot seek (e.g. a
    /// stream without an index or timestamps, or a WAV whose header says
    /// it holds no data: the caller may read from the start up to `frame`,
    /// as the player does, able to give up); near the start, the errors of
    /// [`StreamDecoder::open`].
    pub fn seek(&mut self, frame: u64) -> Result<(), DecodeError> {
        let near_start = frame < u64::from(self.sample_rate());
        if near_start && self.cheap_to_reopen && !self.retried && self.backend.kind() == "native" {
            let mut fresh = StreamDecoder::open(&self.path)?;
            if fresh.backend.kind() == "native" {
                // The warnings not taken yet go on; the opening's own were
                // this decoder's already.
                fresh.notes = self.take_warnings();
                fresh.skip = frame;
                *self = fresh;
                return Ok(());
            }
        }
        self.skip = 0;
        self.backend.seek(frame)
    }

    /// The next block of interleaved stereo frames (non-finite samples
    /// replaced by 0) with its sample rate in Hz, or `None` at the end of
    /// the stream.
    ///
    /// # Errors
    /// [`DecodeError::Corrupt`] after too many undecodable packets in a row;
    /// at the end, [`DecodeError::NoSamples`] for an empty stream and
    /// [`DecodeError::Truncated`] when it stopped well before its declared
    /// length ([`DecodeError::BrokenOff`]: broke off well before a guessed
    /// one); [`DecodeError::Corrupt`] for a stream at a rate outside
    /// [`MIN_SAMPLE_RATE`]..=[`MAX_SAMPLE_RATE`] (0 Hz included);
    /// [`DecodeError::NeedsFfmpeg`] for a stream that changes sample rate
    /// or channel count midway (joined MP3 files, a chained Ogg file) when
    /// no ffmpeg is installed to read on.
    pub fn next_block(&mut self) -> Result<Option<(&[f32], u32)>, DecodeError> {
        self.next_block_unless(&|| false)
    }

    /// [`StreamDecoder::next_block`], giving up with
    /// [`DecodeError::Cancelled`] when `cancelled` says so while the
    /// decoder waits (an ffmpeg that is slow to write, asked about every
    /// [`ffmpeg::CANCEL_POLL`]). The built-in decoders never wait: their
    /// caller asks between blocks.
    ///
    /// # Errors
    /// As [`StreamDecoder::next_block`], and [`DecodeError::Cancelled`].
    pub fn next_block_unless(&mut self, cancelled: &dyn Fn() -> bool) -> Result<Option<(&[f32], u32)>, DecodeError> {
        loop {
            let Some(rate) = self.next_rate(cancelled)? else { return Ok(None) };
            let frames = self.backend.block().len() / 2;
            let dropped = usize::try_from(self.skip).unwrap_or(usize::MAX).min(frames);
            self.skip -= dropped as u64;
            if dropped > 0 && dropped == frames {
                continue;
            }
            return Ok(Some((&self.backend.block()[dropped * 2..], rate)));
        }
    }

    /// Decode the next block into the backend ([`Backend::block`]); its
    /// rate in Hz, `None` at the end. Errors as
    /// [`StreamDecoder::next_block_unless`].
    fn next_rate(&mut self, cancelled: &dyn Fn() -> bool) -> Result<Option<u32>, DecodeError> {
        let rate = match self.backend.next_block(cancelled) {
            // A header that says there is no audio where the file holds
            // some (a recorder that stopped before writing its WAV's data
            // size): ffmpeg reads past it, when installed. Nothing was
            // handed out yet, so the change is seamless.
            Err(DecodeError::NoSamples(_))
                if !self.retried && self.backend.kind() == "native" && self.backend.frames() == 0 =>
            {
                self.retried = true;
                match ffmpeg::FfmpegStream::open(&self.path) {
                    Ok(f) => {
                        tracing::info!(
                            "{}: no samples where its header says; decoding with ffmpeg",
                            self.path.display()
                        );
                        self.backend = Box::new(f);
                        return self.next_rate(cancelled);
                    }
                    Err(_) => return Err(DecodeError::NoSamples(self.path.clone())),
                }
            }
            // A stream that changes format midway (MP3 files joined end to
            // end, a chained Ogg file whose next part is at another rate):
            // ffmpeg, when installed, decodes it at the first part's rate,
            // from the start, and hands out only what comes after the
            // frames already handed out.
            Err(DecodeError::NeedsFfmpeg { path, codec }) if !self.retried && self.backend.kind() == "native" => {
                self.retried = true;
                let (at, rate) = (self.backend.frames(), self.backend.sample_rate());
                match ffmpeg::FfmpegStream::open(&self.path) {
                    Ok(mut f) if f.sample_rate() == rate => {
                        tracing::info!("{}: {codec}; decoding on with ffmpeg from frame {at}", path.display());
                        // ffmpeg drops the packets this decoder replaced by
                        // silence: its decode is that much behind the
                        // frames handed out, which stay counted.
                        f.continue_from(at.saturating_sub(self.backend.concealed_frames()), at);
                        // What the built-in decoder has to say about the
                        // part it decoded (silence it put in for damaged
                        // packets) goes with what is handed out, not with it.
                        self.backend.stop_early();
                        let said = self.backend.warnings();
                        self.notes.extend(said);
                        self.backend = Box::new(f);
                        return self.next_rate(cancelled);
                    }
                    Ok(f) => {
                        return Err(DecodeError::Corrupt {
                            path,
                            reason: format!(
                                "{codec}, and ffmpeg reads it at {} Hz; convert it to one file first \
                                 (for example `ffmpeg -i IN -c:a flac OUT.flac`)",
                                f.sample_rate()
                            ),
                        })
                    }
                    Err(ffmpeg::OpenError::NotInstalled) => return Err(DecodeError::NeedsFfmpeg { path, codec }),
                    Err(ffmpeg::OpenError::Failed(reason)) => {
                        return Err(DecodeError::Corrupt { path, reason: format!("{codec}, and ffmpeg: {reason}") })
                    }
                }
            }
            r => r?,
        };
        let path = &self.path;
        match rate {
            // A header that declares 0 Hz (a hand-made or damaged WAV) has
            // samples but no time base: nothing downstream can use them.
            Some(0) => Err(DecodeError::Corrupt { path: path.clone(), reason: "its sample rate is 0 Hz".into() }),
            // Nor a rate no audio uses: 4294967295 Hz made the resampler
            // ask for gigabytes (the process aborted), 1 Hz made each byte
            // a second of audio to separate.
            Some(rate) if !(MIN_SAMPLE_RATE..=MAX_SAMPLE_RATE).contains(&rate) => Err(DecodeError::Corrupt {
                path: path.clone(),
                reason: format!(
                    "its sample rate of {rate} Hz is outside what audio uses ({MIN_SAMPLE_RATE} to {MAX_SAMPLE_RATE} Hz)"
                ),
            }),
            Some(rate) => Ok(Some(rate)),
            None => Ok(None),
        }
    }
}

/// Lowest sample rate decoded, in Hz: below every rate audio is stored at
/// (telephone speech is 8 kHz; 4 kHz files exist), so a header that says
/// less is damaged.
pub const MIN_SAMPLE_RATE: u32 = 1_000;
/// Highest sample rate decoded, in Hz: 768 kHz, the highest rate of
/// recording and playback equipment (DXD is 352.8 kHz), so a header that
/// says more is damaged. It also bounds the resampler's FFT sizes (they
/// grow with rate / gcd(rate, 44100)).
pub const MAX_SAMPLE_RATE: u32 = 768_000;

/// The checks at the end of every stream: samples at all, and not well
/// short of the declared length (`tolerance` seconds) when that length is
/// exact (`estimated` false; see [`Backend::length_estimated`]).
fn check_end(
    path: &Path,
    frames: u64,
    sample_rate: u32,
    (declared, estimated): (Option<u64>, bool),
    tolerance: f64,
) -> Result<(), DecodeError> {
    if frames == 0 || sample_rate == 0 {
        return Err(DecodeError::NoSamples(path.to_path_buf()));
    }
    let decoded = frames as f64 / f64::from(sample_rate);
    if let Some(declared) = declared.filter(|_| !estimated) {
        let expected = declared as f64 / f64::from(sample_rate);
        if expected - decoded > tolerance {
            return Err(DecodeError::Truncated { path: path.to_path_buf(), decoded, expected });
        }
    }
    Ok(())
}

/// Largest sample magnitude taken as audio (24 dB above full scale; a
/// float file's loudest masters stay within a few dB of it). Beyond it a
/// sample is damage (random bytes read as floats, 1e38): kept, one such
/// value would set the mixture's standard deviation that the network's
/// input is normalised by (one sample of 5000 in a 3-minute song makes it
/// about 12 times larger) and the clip rescale of the stem it lands in
/// (about -74 dB), so it is silenced as a NaN is.
const MAX_SAMPLE: f32 = 16.0;

/// Fold one block of `channels`-channel interleaved samples into stereo
/// (appended to `stereo`), with `weights` for more than two channels;
/// non-finite samples and those beyond ±[`MAX_SAMPLE`] become 0 (they
/// would poison the normalisation).
fn to_stereo(interleaved: &[f32], channels: usize, weights: &[(f32, f32)], stereo: &mut Vec<f32>) {
    let n = interleaved.len() / channels.max(1);
    let from = stereo.len();
    stereo.reserve(n * 2);
    // A sample that is no number is silence, one beyond full scale held
    // there: before a downmix too (a NaN in the dropped LFE channel made
    // the whole frame silent, 0 × NaN being NaN).
    let clean = |v: f32| if v.abs() <= MAX_SAMPLE { v } else { 0.0 };
    match channels {
        1 => {
            for &v in &interleaved[..n] {
                stereo.extend([v, v]);
            }
        }
        2 => stereo.extend_from_slice(&interleaved[..n * 2]),
        _ => {
            for frame in interleaved[..n * channels].chunks_exact(channels) {
                let (mut l, mut r) = (0.0f32, 0.0f32);
                for (&v, (wl, wr)) in frame.iter().zip(weights) {
                    let v = clean(v);
                    l += v * wl;
                    r += v * wr;
                }
                stereo.extend([l, r]);
            }
        }
    }
    for v in &mut stereo[from..] {
        *v = clean(*v);
    }
}

/// AAC in MP4 as its edit list says (the encoder's priming and padding cut),
/// as ffmpeg plays it; an edit that starts at or past the track's declared
/// end is ignored (a bogus one would skip the whole song).
fn with_mp4_edit(path: &Path, s: native::NativeStream) -> StreamDecoder {
    let declared = s.declared_frames();
    match edit::mp4_audio_edit(path, s.sample_rate(), s.track_id()) {
        Some(cut) if declared.is_none_or(|d| cut.start < d) => {
            StreamDecoder::over(path, edit::Edited::new(Box::new(s), cut))
        }
        Some(cut) => {
            tracing::warn!("{}: its edit list starts past its end ({} frames); ignored", path.display(), cut.start);
            StreamDecoder::over(path, s)
        }
        None => StreamDecoder::over(path, s),
    }
}

/// Check that `path` is audio Stemroom can decode, reading only headers.
///
/// # Errors
/// The [`DecodeError`] a full decode would start with: missing, directory,
/// empty, not audio, no audio track, unsupported codec.
pub fn probe(path: &Path) -> Result<ProbeInfo, DecodeError> {
    let mut d = StreamDecoder::open(path)?;
    let (declared, rate) = (d.declared_frames(), d.sample_rate());
    let duration_seconds = match (declared, rate) {
        (Some(n), r) if r > 0 => Some(n as f64 / f64::from(r)),
        _ => None,
    };
    let tags = d.tags();
    Ok(ProbeInfo {
        duration_seconds,
        duration_estimated: d.length_estimated(),
        sample_rate: rate,
        channels: d.backend.channels(),
        tags,
    })
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
    // Said at the opening (a core-only AAC) and at the end (a file that
    // may be truncated): not looked for at every block.
    for message in d.take_warnings() {
        listener.event(&Event::Warning { message });
    }
    let declared = d.declared_frames();
    let mut last_report = 0u64;
    loop {
        if listener.is_cancelled() {
            return Err(Error::Cancelled);
        }
        // (ffmpeg may take long to write a block: the cancel is asked
        // while it is waited for too.)
        let next = d.next_block_unless(&|| listener.is_cancelled()).map_err(|e| match e {
            DecodeError::Cancelled => Error::Cancelled,
            e => Error::from(e),
        })?;
        let Some((block, rate)) = next else { break };
        on_block(block, rate)?;
        let (frames, sr) = (d.backend.frames(), d.sample_rate());
        if sr > 0 && frames - last_report >= u64::from(sr) * 10 {
            last_report = frames;
            listener.event(&Event::Decoding {
                seconds_decoded: frames as f64 / f64::from(sr),
                fraction: declared.map(|t| (frames as f64 / t.max(1) as f64).min(1.0)),
            });
        }
    }
    for message in d.take_warnings() {
        listener.event(&Event::Warning { message });
    }
    Ok(d.info())
}

#[cfg(test)]
mod tests {
    use super::*;
    use symphonia::core::audio::{ChannelLabel, Position};

    #[test]
    fn absurd_and_non_finite_samples_are_silenced() {
        let mut out = Vec::new();
        to_stereo(&[f32::NAN, 1e38, -1e38, 0.5, f32::INFINITY, -2.0, 5000.0, 16.0], 2, &[], &mut out);
        assert_eq!(out, [0.0, 0.0, 0.0, 0.5, 0.0, -2.0, 0.0, 16.0]);
        let mut out = Vec::new();
        to_stereo(&[-17.0, 0.5], 1, &[], &mut out);
        assert_eq!(out, [0.0, 0.0, 0.5, 0.5]);
        // Downmixed: each channel cleaned before the mix (a NaN in one
        // channel, here the third, silences only that channel).
        let weights = [(1.0, 0.0), (0.0, 1.0), (0.5, 0.5)];
        let mut out = vec![7.0, 7.0];
        to_stereo(&[0.25, -0.25, f32::NAN, 0.1, 0.2, 1e38], 3, &weights, &mut out);
        assert_eq!(out, [7.0, 7.0, 0.25, -0.25, 0.1, 0.2]);
    }

    #[test]
    fn downmix_weights_follow_positions() {
        let quad = Channels::Positioned(
            Position::FRONT_LEFT | Position::FRONT_RIGHT | Position::REAR_LEFT | Position::REAR_RIGHT,
        );
        let (f, r) = (
            1.0 / (1.0 + std::f32::consts::FRAC_1_SQRT_2),
            std::f32::consts::FRAC_1_SQRT_2 / (1.0 + std::f32::consts::FRAC_1_SQRT_2),
        );
        assert_eq!(downmix_weights(&quad, 4), vec![(f, 0.0), (0.0, f), (r, 0.0), (0.0, r)]);
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
        // BS.775: the surrounds and the centre at -3 dB against the fronts.
        let c = std::f32::consts::FRAC_1_SQRT_2;
        assert!((w[4].0 / w[0].0 - c).abs() < 1e-6 && w[4].1 == 0.0, "{w:?}");
        assert!((w[2].0 / w[0].0 - c).abs() < 1e-6, "{w:?}");
        assert!((w[2].0 - w[2].1).abs() < 1e-7 && w[2].0 > 0.0, "centre to both sides");
        let sum_l: f32 = w.iter().map(|p| p.0).sum();
        assert!((sum_l - 1.0).abs() < 1e-6, "level kept");
        // What symphonia guesses for a 4-channel WAV without a channel mask:
        // its 4th channel (a quad file's rear right) is heard, not dropped.
        let guessed = Channels::Positioned(
            Position::FRONT_LEFT | Position::FRONT_RIGHT | Position::FRONT_CENTER | Position::LFE1,
        );
        let w = downmix_weights(&guessed, 4);
        assert!(w[3].0 > 0.0 && w[3].1 > 0.0, "{w:?}");
        // Channels without positions (a 6-channel AIFF, PCM in Matroska):
        // the layouts ffmpeg guesses, the centre on both sides, never
        // alternating. 5.0: the rears to their own sides.
        assert_eq!(downmix_weights(&Channels::Discrete(6), 6), downmix_weights(&surround, 6));
        let five = downmix_weights(&Channels::Discrete(5), 5);
        assert!(five[2].0 == five[2].1 && five[2].0 > 0.0, "centre: {five:?}");
        assert!(five[3].1 == 0.0 && five[3].0 > 0.0 && five[4].0 == 0.0 && five[4].1 > 0.0, "rears: {five:?}");
        // 6.1: the side left on the left, the side right on the right.
        let seven = downmix_weights(&Channels::Discrete(7), 7);
        assert!(seven[5].1 == 0.0 && seven[5].0 > 0.0 && seven[6].0 == 0.0 && seven[6].1 > 0.0, "{seven:?}");
        // Labels (CAF): their positions; an unpositioned one to both sides.
        let labels = Channels::Custom(
            vec![
                ChannelLabel::Positioned(Position::FRONT_CENTER),
                ChannelLabel::Positioned(Position::FRONT_LEFT),
                ChannelLabel::Positioned(Position::FRONT_RIGHT),
                ChannelLabel::Discrete(0),
            ]
            .into_boxed_slice(),
        );
        let w = downmix_weights(&labels, 4);
        assert!(w[0].0 == w[0].1 && w[0].0 > 0.0, "centre on both sides: {w:?}");
        assert!(w[1].1 == 0.0 && w[2].0 == 0.0 && w[1].0 > w[0].0, "{w:?}");
        assert!(w[3].0 == w[3].1 && w[3].0 > 0.0, "{w:?}");
        // Nothing known: every channel on both sides, never one side only.
        assert!(downmix_weights(&Channels::None, 5).iter().all(|(l, r)| l == r && *l > 0.0));
    }
}

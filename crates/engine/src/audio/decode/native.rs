//! The built-in decoders: symphonia's (with its `all` feature) plus libopus
//! through `symphonia-adapter-libopus` (libopus built from source and linked
//! statically, so nothing needs installing).

use std::fs::File;
use std::path::{Path, PathBuf};
use std::sync::OnceLock;

use symphonia::core::codecs::audio::{AudioCodecParameters, AudioDecoderOptions};
use symphonia::core::codecs::registry::CodecRegistry;
use symphonia::core::codecs::CodecParameters;
use symphonia::core::errors::Error as SymError;
use symphonia::core::formats::probe::Hint;
use symphonia::core::formats::{FormatOptions, SeekMode, SeekTo, TrackType};
use symphonia::core::io::MediaSourceStream;
use symphonia::core::meta::MetadataOptions;
use symphonia::core::units::{Duration, TimeBase, Timestamp};

use super::{check_end, downmix_weights, to_stereo, Backend, DecodeError, TRUNCATION_TOLERANCE_SECONDS};
use crate::audio::encode::Tags;

/// Most samples (frames × channels) one packet may declare: 2²⁴, 64 MiB of
/// `f32`. Real formats stay far below (FLAC's largest block is 65,535
/// frames, Vorbis' 8,192, PCM in CAF or MOV one frame per packet).
const MAX_PACKET_SAMPLES: u64 = 1 << 24;

/// Consecutive undecodable packets after which a file is called corrupt.
const MAX_CONSECUTIVE_DECODE_ERRORS: usize = 16;

/// How symphonia-bundle-mp3 0.6 (`decoder.rs`: "mpa: invalid audio buffer
/// signal spec for packet") refuses a frame whose sample rate or channel
/// count differs from the stream's first; the engine test
/// `corrupt::joined_files_at_two_rates_decode_whole` fails if an upgrade
/// changes the words.
const SPEC_CHANGE: &str = "signal spec";

/// A stream that ended mid-packet with less than this fraction of its
/// guessed length (see [`Backend::length_estimated`]) is truncated; above
/// it, the guess may just be long (a VBR MP3 without a Xing frame guessed
/// 5 % long here), and the user is warned instead.
const ESTIMATE_SHORT_FRACTION: f64 = 0.9;

/// Frames decoded before a seek target so the codec's state is rebuilt:
/// 4096 covers an MP3 bit reservoir (at most 511 bytes back, under two
/// 1152-frame frames), one AAC or Vorbis block (at most 2048 frames) and
/// Opus' 80 ms pre-roll at 48 kHz (3840 frames, RFC 7845 §4.6).
const SEEK_PREROLL_FRAMES: u64 = 4096;

/// symphonia's decoders plus Opus (symphonia 0.6 has no Opus decoder of its
/// own; `symphonia::default::get_codecs()` cannot take new ones).
fn codecs() -> &'static CodecRegistry {
    static CODECS: OnceLock<CodecRegistry> = OnceLock::new();
    CODECS.get_or_init(|| {
        let mut registry = CodecRegistry::new();
        symphonia::default::register_enabled_codecs(&mut registry);
        registry.register_audio_decoder::<symphonia_adapter_libopus::OpusDecoder>();
        registry
    })
}

/// An Opus stream's pre-skip (its OpusHead's bytes 10-11, RFC 7845 §5.1)
/// set to 0 in `params` once a decoder made from them has decoded a packet:
/// symphonia-adapter-libopus trims the pre-skip from the first packet each
/// new decoder decodes, so a decoder made afresh mid-stream (after damaged
/// packets) cut 312 more frames there and put the rest of the song early.
/// Other codecs' parameters are left as they are.
fn pre_skip_done(params: &mut AudioCodecParameters) {
    if params.codec != symphonia::core::codecs::audio::well_known::CODEC_ID_OPUS {
        return;
    }
    if let Some(head) = params.extra_data.as_mut().filter(|h| h.len() >= 12 && h.starts_with(b"OpusHead")) {
        head[10] = 0;
        head[11] = 0;
    }
}

/// Where an Ogg link's first frame handed out is in its packets' time, from
/// its first page's time `start_ts` and `delay` (see `NativeStream::open`):
/// the start and the frames decoded but not given (`opus` false; a seek's
/// offset). With `opus`, what its declared length (its last page's granule
/// position, symphonia-format-ogg `logical.rs`) counts before that frame:
/// the start only, as the length counts the pre-skip as a stream timed
/// from 0 does.
fn ogg_declared_start(start_ts: i64, delay: Option<u32>, opus: bool) -> u64 {
    let start = if opus { start_ts } else { start_ts.saturating_add(i64::from(delay.unwrap_or(0))) };
    u64::try_from(start).unwrap_or(0)
}

/// Opus in MP4 ("Encapsulation of Opus in ISO Base Media File Format"
/// §4.3.2): the `dOps` box holds the fields of the `OpusHead` the decoder
/// reads (RFC 7845 §5.1), but big-endian where `OpusHead`'s are
/// little-endian. symphonia-format-isomp4 (0.6.1) puts "OpusHead" before the box
/// as it is, so ffmpeg's pre-skip of 312 read as 14337: the first packet
/// was dropped whole (648 frames early) and seeks landed 312 late. The
/// pre-skip, input sample rate and output gain are turned to
/// little-endian here; returns the pre-skip in frames at 48 kHz, or `None`
/// (nothing changed) for extra data that is not such a header.
fn opus_head_from_dops(params: &mut AudioCodecParameters) -> Option<u16> {
    // (dOps' version is 0, an OpusHead's 1: one converted already is left.)
    let head = params.extra_data.as_mut().filter(|h| h.len() >= 19 && h.starts_with(b"OpusHead") && h[8] == 0)?;
    head[8] = 1;
    head[10..12].reverse();
    head[12..16].reverse();
    head[16..18].reverse();
    Some(u16::from_le_bytes([head[10], head[11]]))
}

/// Whether an MPEG-4 AudioSpecificConfig (ISO/IEC 14496-3 §1.6.2.1) signals
/// HE-AAC: audio object type 5 (SBR) or 29 (PS), or an AAC-LC config
/// followed by the backward-compatible sync extension `0x2b7` with object
/// type 5 and `sbrPresentFlag` set (how muxers such as ffmpeg and fdk-aac
/// write HE-AAC).
pub(super) fn he_aac_signalled(asc: &[u8]) -> bool {
    let bit = |i: usize| -> Option<u32> { asc.get(i / 8).map(|b| u32::from((b >> (7 - i % 8)) & 1)) };
    let bits = |at: usize, n: usize| -> Option<u32> { (at..at + n).try_fold(0u32, |acc, i| Some(acc << 1 | bit(i)?)) };
    let Some(aot) = bits(0, 5) else { return false };
    if aot == 5 || aot == 29 {
        return true;
    }
    if aot != 2 {
        return false;
    }
    // AAC-LC: frequency index (4 bits, or 4 + 24 for an explicit rate),
    // channel configuration (4), GASpecificConfig (3 bits when none of its
    // options is set), then the optional sync extension.
    let mut at = 5;
    match bits(at, 4) {
        Some(15) => at += 4 + 24,
        Some(_) => at += 4,
        None => return false,
    }
    at += 4 + 3;
    bits(at, 11) == Some(0x2b7) && bits(at + 11, 5) == Some(5) && bits(at + 16, 1) == Some(1)
}

/// Whether the MPEG audio file at `path` starts with a frame that counts
/// its frames (a Xing or Info tag, LAME's and ffmpeg's, or Fraunhofer's
/// VBRI): they sit in the first frame after its 4-byte header and side
/// information (9 to 32 bytes) or at byte 36 (VBRI). Looked for after any
/// ID3v2 tag, in the first frame found. `false` when it cannot be read.
fn has_mpeg_length_frame(path: &Path) -> bool {
    use std::io::{Read, Seek, SeekFrom};
    let Ok(mut f) = File::open(path) else { return false };
    let mut head = [0u8; 10];
    if f.read_exact(&mut head).is_err() {
        return false;
    }
    // ID3v2: "ID3", version, flags, size as four 7-bit bytes, then a
    // 10-byte footer when flag 0x10 is set (id3.org, ID3v2.4 §3.1).
    let start = if &head[..3] == b"ID3" {
        let size = head[6..10].iter().fold(0u64, |acc, b| acc << 7 | u64::from(b & 0x7f));
        10 + size + if head[5] & 0x10 != 0 { 10 } else { 0 }
    } else {
        0
    };
    let mut buf = Vec::with_capacity(8192);
    if f.seek(SeekFrom::Start(start)).is_err() || f.take(8192).read_to_end(&mut buf).is_err() {
        return false;
    }
    let Some(sync) = buf.windows(2).position(|w| w[0] == 0xFF && w[1] & 0xE0 == 0xE0) else { return false };
    let frame = &buf[sync..buf.len().min(sync + 4 + 36 + 4)];
    frame.windows(4).skip(4).any(|w| w == b"Xing" || w == b"Info" || w == b"VBRI")
}

/// A file read by symphonia.
pub(super) struct NativeStream {
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
    /// `declared_frames` is symphonia's guess from the bit rate (see
    /// [`Backend::length_estimated`]).
    length_estimated: bool,
    /// Undecodable packets in a row (reset by a good one).
    consecutive_errors: usize,
    /// Damaged packets replaced by silence, and their frames.
    concealed: (u64, u64),
    /// The last packet could not be decoded.
    last_packet_failed: bool,
    /// Said once at the end (see [`super::Backend::warnings`]).
    warnings: Vec<String>,
    finished: bool,
    /// The track's timebase (ticks of packet timestamps), when declared.
    time_base: Option<TimeBase>,
    /// After a seek: the frame the next block must start at; earlier
    /// decoded frames are dropped.
    seek_target: Option<u64>,
    /// HE-AAC: the AudioSpecificConfig signals SBR or PS (see
    /// [`he_aac_signalled`]); symphonia's AAC-LC decoder would give only the
    /// core at half the rate, without the high band.
    pub(super) he_aac: bool,
    /// AAC at 24 kHz or less: possibly HE-AAC with implicit signalling
    /// (only the bitstream shows the SBR data).
    pub(super) maybe_sbr: bool,
    /// AAC in an MP4 file, whose edit list says where the song starts
    /// and ends ([`super::edit`]).
    pub(super) mp4_aac: bool,
    /// The codec parameters the decoder was made from (to make it afresh).
    params: AudioCodecParameters,
    /// A packet decoded since the decoder was made, reset or sought.
    decoded_one: bool,
    /// A chained stream's links passed so far (see `next_link`).
    links_passed: u32,
    /// Packets wholly past the declared length seen in a row, and their
    /// decoded frames (interleaved stereo), held back: an encoder's end
    /// padding (dropped at the end), or, past [`OVERRUN_PACKETS`], audio
    /// the header does not count (see `next_packet_block`).
    overrun: (u32, Vec<f32>),
    /// The stream was found to go on past its declared length: every
    /// packet is decoded whole from then on.
    past_declared_end: bool,
    /// MPEG audio: the frames trimmed from the packet holding the declared
    /// end (the first file's padding in files joined end to end).
    end_trim: u64,
    /// Ogg: packets carry the time the container gives them, so a page
    /// that is lost (a damaged one fails its checksum and symphonia's reader
    /// skips it) shows as a jump; where the next packet is expected (frames,
    /// in the packets' time), and the gaps filled so far (count, frames).
    timed: bool,
    /// Frames by which packet timestamps run ahead of the frames handed
    /// out: Opus in Ogg, whose timestamps count the pre-skip (312 frames
    /// at 48 kHz) that the decoder drops from the start, so a seek to
    /// frame `f` goes to timestamp `f` plus this (else it landed 6.5 ms
    /// early: the A/B original then played ahead of its stems).
    seek_offset: u64,
    next_start: Option<u64>,
    gaps: (u64, u64),
    /// MPEG audio (MP1/MP2/MP3): symphonia's reader trims its packets from
    /// the declared length (`PacketBuilder::trimmed_dur`) and leaves their
    /// `dur` whole (trims included); every other reader's `dur` is what
    /// remains after its trims.
    mpeg: bool,
}

/// Packets wholly past a declared length (a Xing/Info frame count) taken
/// for the encoder's end padding before the audio is taken for more than
/// the header counts (files joined end to end): 4 MP3 frames, 4,608
/// frames, 104 ms at 44.1 kHz. LAME pads at most 1,152 + 576 + 529 frames
/// at the end (its `encoder_padding`), under two MP3 frames.
const OVERRUN_PACKETS: u32 = 4;

impl NativeStream {
    /// Open `path` and set up its decoder; reads only headers.
    ///
    /// # Errors
    /// Missing, directory, empty, not audio, no audio track, unsupported codec.
    pub(super) fn open(path: &Path) -> Result<Self, DecodeError> {
        let file = File::open(path).map_err(|source| DecodeError::Unreadable { path: path.to_path_buf(), source })?;
        let mss = MediaSourceStream::new(Box::new(file), Default::default());
        let mut hint = Hint::new();
        if let Some(ext) = path.extension().and_then(|e| e.to_str()) {
            hint.with_extension(ext);
        }
        let format = symphonia::default::get_probe()
            .probe(&hint, mss, FormatOptions::default(), MetadataOptions::default())
            .map_err(|e| {
                // A known container cut short is damaged, not another format
                // (nor one that needs ffmpeg, which cannot read it either).
                let eof = matches!(&e, SymError::IoError(io) if io.kind() == std::io::ErrorKind::UnexpectedEof);
                match super::sniff::cut_short(path, eof, &e.to_string()) {
                    Some(reason) => DecodeError::Corrupt { path: path.to_path_buf(), reason },
                    None => DecodeError::NotAudio { path: path.to_path_buf(), reason: e.to_string() },
                }
            })?;
        let track =
            format.default_track(TrackType::Audio).ok_or_else(|| DecodeError::NoAudioTrack(path.to_path_buf()))?;
        let Some(CodecParameters::Audio(params)) = track.codec_params.as_ref() else {
            return Err(DecodeError::NoAudioTrack(path.to_path_buf()));
        };
        let time_base = track.time_base;
        let aac = params.codec == symphonia::core::codecs::audio::well_known::CODEC_ID_AAC;
        let he_aac = aac && params.extra_data.as_deref().is_some_and(he_aac_signalled);
        let maybe_sbr = he_aac || (aac && params.sample_rate.is_some_and(|r| r <= 24_000));
        // What the decoder allocates up front comes from the header: its
        // frames per packet (every channel's buffer sized for that many)
        // and its rate. A hostile CAF or MOV declaring 2³² frames per
        // packet made symphonia's PCM and ADPCM decoders ask for gigabytes
        // per channel, an allocation failure that aborts the process.
        let channels = params.channels.as_ref().map_or(2, |c| c.count().max(1)) as u64;
        if params.max_frames_per_packet.is_some_and(|n| n.saturating_mul(channels) > MAX_PACKET_SAMPLES) {
            return Err(DecodeError::Corrupt {
                path: path.to_path_buf(),
                reason: format!(
                    "its header declares packets of {} frames, far more than audio uses",
                    params.max_frames_per_packet.unwrap_or_default()
                ),
            });
        }
        if let Some(rate) =
            params.sample_rate.filter(|r| !(super::MIN_SAMPLE_RATE..=super::MAX_SAMPLE_RATE).contains(r))
        {
            return Err(DecodeError::Corrupt {
                path: path.to_path_buf(),
                reason: format!(
                    "its sample rate of {rate} Hz is outside what audio uses ({} to {} Hz)",
                    super::MIN_SAMPLE_RATE,
                    super::MAX_SAMPLE_RATE
                ),
            });
        }
        let reader = format.format_info().short_name;
        let opus = params.codec == symphonia::core::codecs::audio::well_known::CODEC_ID_OPUS;
        let mut params = params.clone();
        let mp4_pre_skip = if reader == "isomp4" && opus { opus_head_from_dops(&mut params) } else { None };
        let decoder = codecs()
            .make_audio_decoder(&params, &AudioDecoderOptions::default())
            .map_err(|e| DecodeError::UnsupportedCodec { path: path.to_path_buf(), reason: e.to_string() })?;
        // symphonia counts frames exactly from a Xing/Info/VBRI frame, and
        // otherwise estimates them from the bit rate of the first frames
        // (symphonia-bundle-mp3 `estimate_num_mpeg_frames`; an ADTS stream
        // always, symphonia-codec-aac `approximate_frame_count`, 0.13 % long
        // at 128 kb/s; a VBR MP3 measured 5 % long).
        let mpeg = matches!(reader, "mp1" | "mp2" | "mp3");
        let length_estimated =
            track.num_frames.is_some() && (reader == "aac" || (mpeg && !has_mpeg_length_frame(path)));
        let mp4_aac = aac && reader == "isomp4";
        let timed = reader == "ogg";
        // An Ogg stream's packets are timed from its first page's
        // granule position, and its declared length is its last page's:
        // a stream cut out of a longer one with its timing kept (`ffmpeg
        // -ss 60 -i long.ogg -c copy`, a radio stream's recording) starts
        // at that time, not at 0. Positions here count from the first
        // frame handed out: the start is taken off both. symphonia-format-ogg
        // (`logical.rs`) times the first page from its granule position
        // less its packets' durations, and counts the frames its first
        // packets are decoded for but do not give (Opus' pre-skip, the
        // first Vorbis block's half) as `delay`: the first frame handed
        // out is at `start_ts + delay`, 0 for a stream timed from the
        // start. (`-delay` for a stream whose only page is its last.)
        // (MP4 times Opus packets from the first, pre-skip included.)
        let seek_offset = match mp4_pre_skip {
            Some(pre_skip) => u64::from(pre_skip),
            None if timed => ogg_declared_start(track.start_ts.get(), track.delay, false),
            None => 0,
        };
        let declared_start = if timed { ogg_declared_start(track.start_ts.get(), track.delay, opus) } else { 0 };
        let codec_params = params.clone();
        Ok(NativeStream {
            path: path.to_path_buf(),
            track_id: track.id,
            // (A length of 0 is none: a WAV whose recorder died before it
            // wrote the data size, a fragmented MP4 with an empty `moov`.
            // Taken as the end, it ended a seek's stream at once.)
            declared_frames: track.num_frames.map(|n| n.saturating_sub(declared_start)).filter(|&n| n > 0),
            sample_rate: params.sample_rate.unwrap_or(0),
            channels: params.channels.as_ref().map(|c| c.count()).unwrap_or(0),
            format,
            decoder,
            weights: None,
            frames: 0,
            interleaved: Vec::new(),
            stereo: Vec::new(),
            truncated_io: false,
            length_estimated,
            consecutive_errors: 0,
            concealed: (0, 0),
            last_packet_failed: false,
            warnings: Vec::new(),
            finished: false,
            time_base,
            seek_target: None,
            he_aac,
            maybe_sbr,
            mp4_aac,
            params: codec_params,
            decoded_one: false,
            links_passed: 0,
            overrun: (0, Vec::new()),
            past_declared_end: false,
            end_trim: 0,
            mpeg,
            timed,
            seek_offset,
            next_start: None,
            gaps: (0, 0),
        })
    }

    /// Position the stream so that the next block starts exactly at `frame`
    /// (frames at the file's sample rate, from the start of the stream).
    /// Uses the container's accurate seek to a little before `frame`, then
    /// drops the decoded frames before `frame`. Seeking past the end leaves the stream at its end.
    ///
    /// # Errors
    /// [`DecodeError::Corrupt`] when the container cannot seek (e.g. a
    /// stream without an index or timestamps).
    fn seek_to(&mut self, frame: u64) -> Result<(), DecodeError> {
        // Past the first link of a chained stream, timestamps start again
        // at 0 in each link: a seek by timestamp would land in the wrong one.
        if self.links_passed > 0 {
            return Err(self.corrupt("a chained stream cannot seek once past its first part".into()));
        }
        // Lossy codecs need the packets before the target to rebuild their
        // state (MP3's bit reservoir, the MDCT overlap of AAC and Vorbis):
        // decode from a little earlier and drop what comes before `frame`.
        // (In the packets' time, `seek_offset` ahead of ours.)
        let target = frame.saturating_add(self.seek_offset);
        let from = target.saturating_sub(SEEK_PREROLL_FRAMES);
        let seek = |s: &mut Self, from: u64| {
            let to = SeekTo::Timestamp { ts: Timestamp::new(s.frames_to_ticks(from)), track_id: s.track_id };
            s.format.seek(SeekMode::Accurate, to)
        };
        let mut sought = seek(self, from);
        // symphonia's MPEG reader refuses a timestamp past the length it
        // declares (symphonia-bundle-mp3 `MpaReader::seek`), exact (a
        // Xing/Info count) or guessed from the first frames' bit rate, but
        // the audio may go on past it (files joined end to end, a guess 5 %
        // short): it seeks to that length and decodes on to `frame`. Seeking
        // there used to end the stream.
        if let (Err(SymError::SeekError(_)), true, Some(n)) = (&sought, self.mpeg, self.declared_frames) {
            if from > n {
                sought = seek(self, n.saturating_sub(SEEK_PREROLL_FRAMES));
            }
        }
        match sought {
            Ok(_) => {}
            // Past the end: the declared one, or the real one of a stream
            // whose length is a guess (the reader ran out of frames).
            Err(SymError::SeekError(_))
                if self.length_estimated || self.declared_frames.is_some_and(|n| frame >= n) =>
            {
                self.finished = true;
                self.frames = frame;
                return Ok(());
            }
            Err(e) => return Err(self.corrupt(format!("cannot seek to frame {frame}: {e}"))),
        }
        self.decoder.reset();
        self.decoded_one = false;
        self.frames = frame;
        self.finished = false;
        self.truncated_io = false;
        self.last_packet_failed = false;
        self.consecutive_errors = 0;
        self.seek_target = Some(target);
        self.overrun = (0, Vec::new());
        self.next_start = None;
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

    /// The stream changes format midway, which only ffmpeg decodes;
    /// `StreamDecoder::next_block` hands the rest to ffmpeg when installed.
    fn needs_ffmpeg(&self, codec: String) -> DecodeError {
        DecodeError::NeedsFfmpeg { path: self.path.clone(), codec }
    }

    /// The next block of interleaved stereo frames (non-finite samples
    /// replaced by 0) with its sample rate in Hz, or `None` at the end of
    /// the stream.
    ///
    /// # Errors
    /// [`DecodeError::Corrupt`] after too many undecodable packets in a row;
    /// at the end, [`DecodeError::NoSamples`] for an empty stream and
    /// [`DecodeError::Truncated`] when it stopped well before its declared length,
    /// [`DecodeError::BrokenOff`] when it broke off well before a guessed one.
    fn next_packet_block(&mut self) -> Result<Option<u32>, DecodeError> {
        loop {
            if self.finished {
                return Ok(None);
            }
            let mut packet = match self.format.next_packet() {
                Ok(Some(p)) => p,
                Ok(None) => return self.end(),
                // A chained Ogg file (Opus or Vorbis files one after the
                // other): the next link starts. It used to end the stream
                // there, keeping only the first link, without a word.
                Err(SymError::ResetRequired) => {
                    if self.next_link()? {
                        continue;
                    }
                    return self.end();
                }
                Err(SymError::IoError(e)) if e.kind() == std::io::ErrorKind::UnexpectedEof => {
                    self.truncated_io = self.frames > 0;
                    return self.end();
                }
                Err(SymError::DecodeError(msg)) => {
                    self.consecutive_errors += 1;
                    if self.consecutive_errors > MAX_CONSECUTIVE_DECODE_ERRORS {
                        return Err(self.corrupt(msg.to_string()));
                    }
                    continue;
                }
                Err(e) => return Err(self.corrupt(e.to_string())),
            };
            if packet.track_id != self.track_id {
                continue;
            }
            // symphonia's MPEG audio reader trims every packet that ends
            // past the declared length (symphonia-core
            // `PacketBuilder::trimmed_dur`), so audio past a Xing/Info frame
            // count (MP3 files joined end to end, one with a LAME header) or
            // past a length guessed from the first frames' bit rate was
            // dropped without a word. A guess trims nothing here. A packet wholly
            // past an exact length is decoded whole and held back: after
            // [`OVERRUN_PACKETS`] of them the stream goes on past its header,
            // else they were the encoder's padding (dropped at the end).
            // The packet holding the declared end keeps its trim however
            // the stream was reached (past the end before, or not), so a
            // frame is at one place in every decode of the file; packets
            // wholly past it start earlier by that trim than their
            // timestamps say (what a seek goes by).
            let mut hold = false;
            let mut past_end = false;
            if self.mpeg && self.length_estimated {
                packet.trim_end = Duration::ZERO;
            } else if self.mpeg && packet.dur.get() > 0 && packet.trim_end.get() >= packet.dur.get() {
                packet.trim_end = Duration::ZERO;
                hold = !self.past_declared_end;
                past_end = true;
            } else if self.mpeg && packet.trim_end.get() > 0 {
                self.end_trim = self.ticks_to_frames(i64::try_from(packet.trim_end.get()).unwrap_or(0));
            }
            let mut packet_start = self.ticks_to_frames(packet.pts.get());
            if past_end {
                packet_start = packet_start.saturating_sub(self.end_trim);
            }
            // Ogg: audio missing before this packet (a lost page), and where
            // the next one is expected (this one's whole length, trims
            // included, in the packets' time).
            let mut missing = 0u64;
            if self.timed {
                let whole = packet.dur.get() + packet.trim_start.get() + packet.trim_end.get();
                let whole = self.ticks_to_frames(i64::try_from(whole).unwrap_or(i64::MAX));
                if let (Some(expected), None) = (self.next_start, self.seek_target) {
                    let rate = u64::from(self.sample_rate.max(1));
                    let gap = packet_start.saturating_sub(expected);
                    // 10 ms at least (a lost page holds tens of ms to
                    // seconds), a minute at most (beyond: a damaged
                    // timestamp, not lost audio). In all, no more silence
                    // than a minute or the audio decoded, whichever is
                    // more: a few MB of pages whose times jump by 59 s
                    // each must not decode to days of silence (what is not
                    // filled then ends as a truncated file).
                    let real = self.frames.saturating_sub(self.gaps.1);
                    let budget = (60 * rate).max(real).saturating_sub(self.gaps.1);
                    if gap >= rate / 100 && gap <= 60 * rate && gap <= budget {
                        missing = gap;
                    }
                }
                self.next_start = Some(packet_start.saturating_add(whole));
            }
            let buf = match self.decoder.decode(&packet) {
                Ok(buf) => buf,
                // symphonia-bundle-mp3 0.6 decodes one sample rate and
                // channel count per stream, set by the first frame, and
                // says so in these words for a frame that differs (MP3
                // files joined end to end). Skipping such frames lost the
                // rest of the file (a short rest without a word); ffmpeg
                // reads it on (`StreamDecoder::next_block`).
                Err(SymError::DecodeError(msg)) if msg.contains(SPEC_CHANGE) && self.frames > 0 => {
                    return Err(self.needs_ffmpeg(format!(
                        "an MP3 stream whose sample rate or channel count changes at {:.2} s (files joined end \
                         to end; {} Hz before)",
                        self.frames as f64 / f64::from(self.sample_rate.max(1)),
                        self.sample_rate
                    )));
                }
                // A packet the decoder cannot read: damaged data (the AAC
                // decoder reads past a damaged packet's end and says so as
                // an I/O error: it used to end the whole stream there), or
                // the last packet of a file cut short (the demuxer ends
                // the stream next; see `end`). A packet that asks for a
                // feature the decoder lacks, in a stream it took at open,
                // is damaged too (random bytes in an AAC packet read as
                // "unsupported feature: aac: predictor data"); a stream
                // that needs the feature throughout fails every packet
                // and is called corrupt after a few.
                Err(e @ (SymError::DecodeError(_) | SymError::IoError(_) | SymError::Unsupported(_))) => {
                    self.consecutive_errors += 1;
                    self.last_packet_failed = true;
                    if self.consecutive_errors > MAX_CONSECUTIVE_DECODE_ERRORS {
                        return Err(self.corrupt(e.to_string()));
                    }
                    // A decoder stopped part way through a packet may keep
                    // what it had read as its layout (symphonia's AAC
                    // decoder takes the channel elements of the first packet
                    // it reads, damaged or not, for the stream's, which
                    // `reset` keeps: every later packet then fails as
                    // "invalid data"): it is made afresh for the next one.
                    // Not after one damaged packet in a stream decoding
                    // well: MP3's next frames need the bit reservoir.
                    if !self.decoded_one || matches!(e, SymError::Unsupported(_)) || self.consecutive_errors >= 2 {
                        match codecs().make_audio_decoder(&self.params, &AudioDecoderOptions::default()) {
                            Ok(d) => self.decoder = d,
                            Err(_) => self.decoder.reset(),
                        }
                        self.decoded_one = false;
                    }
                    if hold {
                        // Past the declared end: padding, most likely.
                        continue;
                    }
                    // A damaged packet in the middle becomes silence of its
                    // length, so what follows stays in time with the
                    // original (skipped, every stem after it would come
                    // early by a packet, 26 ms for MP3). After a seek only
                    // the part from the target on is handed out (a packet
                    // wholly before it is pre-roll). Before the first good
                    // packet (the rate not known for sure) it is skipped.
                    // The packet's frames less what is trimmed from it (the
                    // encoder's delay and padding): MPEG audio's `dur`
                    // counts them all (symphonia-core 0.6 `trimmed_dur`
                    // leaves it whole), other readers' `dur` is what remains.
                    let kept = if self.mpeg {
                        packet.dur.get().saturating_sub(packet.trim_start.get() + packet.trim_end.get())
                    } else {
                        packet.dur.get()
                    };
                    let lost = self.ticks_to_frames(i64::try_from(kept).unwrap_or(0));
                    let end = packet_start.saturating_add(lost);
                    let n = match self.seek_target {
                        Some(target) if end <= target => continue,
                        // Positions after a seek come from timestamps, as
                        // for a good packet (`skip` below).
                        Some(target) => end - target,
                        None => lost,
                    };
                    // The rate is known from a good packet, or, after a seek
                    // (a stream opened to seek may have decoded none yet),
                    // from the header.
                    let positioned = self.weights.is_some() || self.frames > 0 || self.seek_target.is_some();
                    let known = self.sample_rate > 0 && positioned;
                    if known && lost > 0 && n > 0 && n <= u64::from(self.sample_rate) {
                        // A lost stretch just before it too (Ogg).
                        let missing = if self.frames > 0 { missing } else { 0 };
                        if missing > 0 {
                            self.gaps.0 += 1;
                            self.gaps.1 += missing;
                        }
                        self.seek_target = None;
                        self.stereo.clear();
                        self.stereo.resize((n + missing) as usize * 2, 0.0);
                        self.frames += n + missing;
                        self.concealed.0 += 1;
                        self.concealed.1 += n;
                        return Ok(Some(self.sample_rate));
                    }
                    continue;
                }
                Err(e) => return Err(self.corrupt(e.to_string())),
            };
            self.consecutive_errors = 0;
            self.last_packet_failed = false;
            if !self.decoded_one {
                self.decoded_one = true;
                pre_skip_done(&mut self.params);
            }
            let n = buf.frames();
            if n == 0 {
                continue;
            }
            // After a seek, frames before the target are decoded (the codec
            // needs them) but not handed out.
            let mut skip = 0usize;
            if let Some(target) = self.seek_target {
                if packet_start.saturating_add(n as u64) <= target {
                    // Past the declared end on the way to the target: more
                    // than the encoder's padding once past OVERRUN_PACKETS.
                    self.overrun.0 += u32::from(hold);
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
            // A stream whose rate changes midway (ADTS files joined end to
            // end): what follows would be taken at the first part's rate,
            // at the wrong speed and pitch; ffmpeg reads it on, resampled.
            if self.weights.is_some() && spec.rate() != self.sample_rate && self.frames > 0 {
                let codec = format!(
                    "a stream whose sample rate changes at {:.2} s ({} Hz, then {} Hz)",
                    self.frames as f64 / f64::from(self.sample_rate.max(1)),
                    self.sample_rate,
                    spec.rate()
                );
                return Err(DecodeError::NeedsFfmpeg { path: self.path.clone(), codec });
            }
            if self.weights.is_none() || ch != self.channels {
                self.channels = ch;
                self.sample_rate = spec.rate();
                self.weights = Some(downmix_weights(spec.channels(), ch));
            }
            buf.copy_to_vec_interleaved::<f32>(&mut self.interleaved);
            self.stereo.clear();
            to_stereo(&self.interleaved[..n * ch], ch, self.weights.as_deref().unwrap_or_default(), &mut self.stereo);
            if skip > 0 {
                self.stereo.drain(..skip * 2);
            }
            if missing > 0 && self.frames > 0 {
                // Silence where the lost audio was: what follows stays in
                // time with the original (it used to come early by the
                // lost length, or the file was refused as truncated).
                let mut block = vec![0.0f32; 2 * usize::try_from(missing).unwrap_or(0)];
                block.extend_from_slice(&self.stereo);
                self.stereo = block;
                self.gaps.0 += 1;
                self.gaps.1 += missing;
            }
            if hold {
                self.overrun.0 += 1;
                self.overrun.1.extend_from_slice(&self.stereo);
                if self.overrun.0 <= OVERRUN_PACKETS {
                    continue;
                }
                // More than padding: the stream goes on past its header.
                self.past_declared_end = true;
                self.stereo = std::mem::take(&mut self.overrun.1);
                self.overrun.0 = 0;
                let at = self.frames as f64 / f64::from(self.sample_rate.max(1));
                tracing::warn!(
                    "{}: audio goes on past the length its header declares ({at:.2} s)",
                    self.path.display()
                );
                self.warnings.push(format!(
                    "the file goes on past the length its header declares ({at:.2} s; files joined end to end?): \
                     decoded to its end"
                ));
            } else if self.overrun.0 > 0 {
                // Held packets followed by one inside the length (after a
                // seek back): not padding after all, but not in order either.
                self.overrun = (0, Vec::new());
            }
            self.frames += (self.stereo.len() / 2) as u64;
            return Ok(Some(self.sample_rate));
        }
    }

    /// Go on with the audio track of the next link of a chained stream
    /// (symphonia's Ogg reader has read its headers and asks for a reset):
    /// a new decoder, its frames added to the declared length. Returns
    /// false when the new link has no audio track (the stream ends there).
    ///
    /// # Errors
    /// [`DecodeError::Corrupt`] for a link at another sample rate than the
    /// first (a file is one rate for everything after the decoder), and an
    /// undecodable codec.
    fn next_link(&mut self) -> Result<bool, DecodeError> {
        let Some(track) = self.format.default_track(TrackType::Audio) else { return Ok(false) };
        let Some(CodecParameters::Audio(params)) = track.codec_params.as_ref() else { return Ok(false) };
        let rate = params.sample_rate.unwrap_or(self.sample_rate);
        if self.sample_rate != 0 && rate != self.sample_rate {
            return Err(self.needs_ffmpeg(format!(
                "a chained Ogg stream whose part at {:.2} s is at {rate} Hz after {} Hz",
                self.frames as f64 / f64::from(self.sample_rate),
                self.sample_rate
            )));
        }
        let decoder = codecs()
            .make_audio_decoder(params, &AudioDecoderOptions::default())
            .map_err(|e| DecodeError::UnsupportedCodec { path: self.path.clone(), reason: e.to_string() })?;
        // (Timed from the link's first page, as in `open`.)
        let opus = params.codec == symphonia::core::codecs::audio::well_known::CODEC_ID_OPUS;
        let start = ogg_declared_start(track.start_ts.get(), track.delay, opus);
        let frames = track.num_frames.map(|n| n.saturating_sub(start)).filter(|&n| n > 0);
        let (id, time_base) = (track.id, track.time_base);
        self.params = params.clone();
        self.decoded_one = false;
        self.next_start = None;
        self.decoder = decoder;
        self.track_id = id;
        self.time_base = time_base;
        // The frames decoded so far plus this link's, when it says.
        self.declared_frames = frames.map(|n| self.frames.saturating_add(n));
        self.length_estimated = false;
        self.weights = None;
        self.links_passed += 1;
        tracing::info!("{}: a chained stream, its next part starts at frame {}", self.path.display(), self.frames);
        Ok(true)
    }

    fn end(&mut self) -> Result<Option<u32>, DecodeError> {
        self.finished = true;
        if self.last_packet_failed && self.frames > 0 {
            // The stream ended on a packet the decoder could not read: a
            // file cut mid-packet.
            self.truncated_io = true;
        }
        let declared = (self.declared_frames, self.length_estimated);
        check_end(&self.path, self.frames, self.sample_rate, declared, TRUNCATION_TOLERANCE_SECONDS)?;
        // A guessed length still tells a file that broke off (it ended
        // mid-packet) well before it: a damaged ADTS header that claims a
        // long frame reads to the end of the file, and all after it is lost.
        if let (Some(guess), true, true) = (self.declared_frames, self.length_estimated, self.truncated_io) {
            if (self.frames as f64) < guess as f64 * ESTIMATE_SHORT_FRACTION {
                let rate = f64::from(self.sample_rate.max(1));
                return Err(DecodeError::BrokenOff {
                    path: self.path.clone(),
                    decoded: self.frames as f64 / rate,
                    expected: guess as f64 / rate,
                });
            }
        }
        if (self.declared_frames.is_none() || self.length_estimated) && self.truncated_io {
            tracing::warn!("{} ended mid-packet; it may be truncated", self.path.display());
            self.warnings.push("the file ended mid-packet: it may be truncated".into());
        }
        self.say_concealed();
        Ok(None)
    }

    /// Tell the user (once) about the damaged packets and lost pages
    /// replaced by silence.
    fn say_concealed(&mut self) {
        let (gaps, frames) = std::mem::take(&mut self.gaps);
        if gaps > 0 {
            let ms = frames as f64 * 1000.0 / f64::from(self.sample_rate.max(1));
            tracing::warn!("{}: {gaps} lost stretch(es) replaced by {ms:.0} ms of silence", self.path.display());
            self.warnings.push(format!(
                "{gaps} gap(s) in the file's timeline (lost or damaged pages) were filled with {ms:.0} ms of \
                 silence (the stems are in time with the original again from about one page after each)"
            ));
        }
        let (packets, frames) = std::mem::take(&mut self.concealed);
        if packets > 0 {
            let ms = frames as f64 * 1000.0 / f64::from(self.sample_rate.max(1));
            tracing::warn!("{}: {packets} damaged packet(s) replaced by {ms:.0} ms of silence", self.path.display());
            self.warnings.push(format!(
                "{packets} damaged packet(s) could not be decoded and were replaced by {ms:.0} ms of silence \
                 (the stems stay in time with the original)"
            ));
        }
    }
}

impl Backend for NativeStream {
    fn kind(&self) -> &'static str {
        "native"
    }
    fn warnings(&mut self) -> Vec<String> {
        std::mem::take(&mut self.warnings)
    }
    fn sample_rate(&self) -> u32 {
        self.sample_rate
    }
    fn channels(&self) -> usize {
        self.channels
    }
    fn declared_frames(&self) -> Option<u64> {
        self.declared_frames
    }
    fn length_estimated(&self) -> bool {
        self.length_estimated
    }
    fn concealed_frames(&self) -> u64 {
        // ffmpeg fills neither damaged packets nor lost pages.
        self.concealed.1 + self.gaps.1
    }
    fn stop_early(&mut self) {
        self.say_concealed();
    }
    fn track_id(&self) -> Option<u32> {
        Some(self.track_id)
    }
    fn frames(&self) -> u64 {
        self.frames
    }
    fn tags(&mut self) -> Tags {
        use symphonia::core::meta::StandardTag;
        let mut t = Tags::default();
        if let Some(rev) = self.format.metadata().current() {
            for tag in &rev.media.tags {
                match &tag.std {
                    Some(StandardTag::TrackTitle(v)) if t.title.is_none() => t.title = Some(v.to_string()),
                    Some(StandardTag::Artist(v)) if t.artist.is_none() => t.artist = Some(v.to_string()),
                    Some(StandardTag::Album(v)) if t.album.is_none() => t.album = Some(v.to_string()),
                    _ => {}
                }
            }
        }
        t
    }
    fn seek(&mut self, frame: u64) -> Result<(), DecodeError> {
        self.seek_to(frame)
    }
    fn next_block(&mut self, _cancelled: &dyn Fn() -> bool) -> Result<Option<u32>, DecodeError> {
        self.next_packet_block()
    }
    fn block(&self) -> &[f32] {
        &self.stereo
    }
}

#[cfg(test)]
mod tests {
    use super::he_aac_signalled;

    /// A CAF file of 16-bit PCM with the given frames per packet and rate
    /// in its `desc` chunk, and one second of silence.
    fn caf(frames_per_packet: u32, rate: f64) -> Vec<u8> {
        let mut b = b"caff".to_vec();
        b.extend(1u16.to_be_bytes());
        b.extend(0u16.to_be_bytes());
        b.extend(b"desc");
        b.extend(32i64.to_be_bytes());
        b.extend(rate.to_be_bytes());
        b.extend(b"lpcm");
        b.extend(0u32.to_be_bytes()); // big-endian signed integers
        b.extend((4 * frames_per_packet.min(1)).to_be_bytes()); // bytes per packet
        b.extend(frames_per_packet.to_be_bytes());
        b.extend(2u32.to_be_bytes()); // channels
        b.extend(16u32.to_be_bytes()); // bits
        let data = vec![0u8; 4 * 44_100];
        b.extend(b"data");
        b.extend((data.len() as i64 + 4).to_be_bytes());
        b.extend(0u32.to_be_bytes()); // edit count
        b.extend(data);
        b
    }

    /// Header numbers that would size the decoder's buffers are checked
    /// first: 2³² frames per packet (gigabytes per channel, an abort) or a
    /// rate of 4 GHz is a damaged file, not an allocation.
    #[test]
    fn a_header_that_would_allocate_gigabytes_is_damage() {
        let dir = tempfile::tempdir().unwrap();
        let open = |bytes: Vec<u8>| {
            let p = dir.path().join("x.caf");
            std::fs::write(&p, bytes).unwrap();
            super::super::StreamDecoder::open(&p).map(|_| ())
        };
        open(caf(1, 44_100.0)).expect("a plain CAF opens");
        for (bytes, what) in
            [(caf(u32::MAX, 44_100.0), "packets of 4294967295 frames"), (caf(1, 4.0e9), "4000000000 Hz")]
        {
            match open(bytes) {
                Err(super::DecodeError::Corrupt { reason, .. }) => assert!(reason.contains(what), "{reason}"),
                other => panic!("{what}: {:?}", other.map_err(|e| e.to_string())),
            }
        }
    }

    #[test]
    fn he_aac_is_recognised_from_its_config() {
        // AAC-LC 22.05 kHz stereo with the sync extension, SBR absent (what
        // ffmpeg writes for LC) and present; explicit AOT 5; plain LC 44.1 kHz.
        assert!(!he_aac_signalled(&[0x13, 0x90, 0x56, 0xE5, 0x00]));
        assert!(he_aac_signalled(&[0x13, 0x90, 0x56, 0xE5, 0xA0]));
        assert!(he_aac_signalled(&[0x2B, 0x92, 0x08, 0x00]));
        assert!(!he_aac_signalled(&[0x12, 0x10]));
        assert!(!he_aac_signalled(&[]));
    }
}

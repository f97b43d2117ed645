//! Decoding through a system `ffmpeg`, for what the built-in decoders cannot
//! read (HE-AAC, AC-3/E-AC-3, WMA, DTS, …).
//!
//! `ffprobe` (beside `ffmpeg`) reads the first audio stream's rate, channels,
//! length and tags; `ffmpeg` then decodes it as a child process, run with an
//! argument list (never a shell) and the input as `file:<absolute path>` (a
//! name can never become an option or another protocol), writing raw
//! little-endian `f32` frames to a pipe. A reader thread hands the pipe's
//! bytes over in 64 KiB pieces through a channel of 4, so memory stays bounded
//! whatever the length; a decoder that produces nothing for
//! [`STALL_TIMEOUT`] is killed. Dropping the stream (a cancel) kills the
//! child.
//!
//! Where ffmpeg is looked for: the path given to [`set_ffmpeg_path`] (the
//! app's setting), else `$STEMROOM_FFMPEG`, else `ffmpeg` on `PATH`.

use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc::{sync_channel, Receiver, RecvTimeoutError};
use std::sync::{Arc, Mutex, PoisonError, RwLock};
use std::time::{Duration, Instant};

use serde::Serialize;

use super::{check_end, to_stereo, Backend, DecodeError};
use crate::audio::encode::Tags;

/// Longest wait for `ffprobe` to describe a file.
const PROBE_TIMEOUT: Duration = Duration::from_secs(30);
/// Longest silence from a decoding `ffmpeg` before it is called stuck.
pub const STALL_TIMEOUT: Duration = Duration::from_secs(60);
/// How often a wait for ffmpeg's output asks whether it was cancelled
/// ([`super::StreamDecoder::next_block_unless`]): a cancel is heard within
/// this, not after the [`STALL_TIMEOUT`].
pub const CANCEL_POLL: Duration = Duration::from_millis(100);
/// Bytes per piece read from ffmpeg's output (16 384 stereo `f32` frames).
const PIECE_BYTES: usize = 64 * 1024;
/// Pieces in flight between the reader thread and the decoder.
const PIECES_IN_FLIGHT: usize = 4;
/// ffmpeg's error output kept for messages (the end of it).
const STDERR_TAIL_BYTES: usize = 4096;
/// The ffmpeg backend calls a stream truncated when it ends this much before
/// the length ffprobe reported (container durations of the codecs that come
/// here are estimates to within a few codec frames).
const TRUNCATION_TOLERANCE_SECONDS: f64 = 0.5;

/// The ffmpeg chosen by the front end (the app's setting), if any.
static OVERRIDE: RwLock<Option<PathBuf>> = RwLock::new(None);

/// Use `path` as ffmpeg from now on (`None`: back to `$STEMROOM_FFMPEG`,
/// then `PATH`). `ffprobe` is taken from the same folder.
pub fn set_ffmpeg_path(path: Option<PathBuf>) {
    *OVERRIDE.write().unwrap_or_else(PoisonError::into_inner) = path.filter(|p| !p.as_os_str().is_empty());
}

/// The ffmpeg to run and the ffprobe beside it.
fn programs() -> (PathBuf, PathBuf) {
    let chosen = OVERRIDE.read().unwrap_or_else(PoisonError::into_inner).clone();
    let ffmpeg = chosen
        .or_else(|| std::env::var_os("STEMROOM_FFMPEG").filter(|s| !s.is_empty()).map(PathBuf::from))
        .unwrap_or_else(|| PathBuf::from("ffmpeg"));
    let ffprobe = match ffmpeg.parent().filter(|p| !p.as_os_str().is_empty()) {
        Some(dir) => dir.join("ffprobe"),
        None => PathBuf::from("ffprobe"),
    };
    (ffmpeg, ffprobe)
}

/// Whether ffmpeg can be used, for front ends (Settings, `stemroom`).
#[derive(Debug, Clone, PartialEq, Serialize)]
#[cfg_attr(feature = "specta", derive(specta::Type))]
#[serde(rename_all = "camelCase")]
pub struct FfmpegStatus {
    pub found: bool,
    pub path: Option<String>,
    /// What `ffmpeg -version` says of itself (`5.1.6-0+deb12u1`).
    pub version: Option<String>,
    /// Why it cannot be used, in plain words.
    pub problem: Option<String>,
}

/// Look for ffmpeg as a decode would and ask its version.
pub fn ffmpeg_status() -> FfmpegStatus {
    let (ffmpeg, ffprobe) = programs();
    // Bounded in time and output: a wrongly chosen program (one that waits
    // or floods) must not hang the Settings window asking.
    let ask = |program: &Path| {
        crate::files::output_within(
            Command::new(program).arg("-version"),
            std::time::Duration::from_secs(10),
            64 * 1024,
        )
    };
    let version = ask(&ffmpeg);
    let probe_ok = ask(&ffprobe).is_ok_and(|o| o.status.success());
    match version {
        Ok(out) if out.status.success() && probe_ok => {
            let text = String::from_utf8_lossy(&out.stdout);
            let version = text.split_whitespace().nth(2).map(str::to_string);
            let path = crate::paths::find_on_path(&ffmpeg).unwrap_or(ffmpeg);
            FfmpegStatus { found: true, path: Some(path.to_string_lossy().into_owned()), version, problem: None }
        }
        Ok(_) | Err(_) => FfmpegStatus {
            found: false,
            path: None,
            version: None,
            problem: Some(format!(
                "ffmpeg ({}) and ffprobe ({}) were not found; install ffmpeg to open AC-3, WMA, HE-AAC and other \
                 formats the built-in decoders do not read",
                ffmpeg.display(),
                ffprobe.display()
            )),
        },
    }
}

/// Why the ffmpeg backend could not open a file.
#[derive(Debug)]
pub(super) enum OpenError {
    /// No ffmpeg/ffprobe to run.
    NotInstalled,
    /// ffprobe ran and found no audio it can decode (its words).
    Failed(String),
}

/// What ffprobe says about the first audio stream.
#[derive(Debug, Clone, Default)]
struct Described {
    sample_rate: u32,
    channels: usize,
    declared_frames: Option<u64>,
    /// `declared_frames` is a hint (see `Backend::length_estimated`).
    length_estimated: bool,
    tags: Tags,
}

/// `file:` URL of an absolute path, so ffmpeg reads exactly that file.
fn file_url(path: &Path) -> std::ffi::OsString {
    let abs = std::path::absolute(path).unwrap_or_else(|_| path.to_path_buf());
    let mut url = std::ffi::OsString::from("file:");
    url.push(abs.as_os_str());
    url
}

/// Start `cmd` in a process group of its own: a Ctrl-C in the terminal
/// (sent to the whole foreground group) reaches Stemroom, which cancels
/// and stops ffmpeg itself, instead of killing ffmpeg under it so the
/// input looks corrupt. A Stemroom that dies closes ffmpeg's pipe, and
/// ffmpeg then ends on its next write.
fn own_group(cmd: &mut Command) {
    #[cfg(unix)]
    {
        use std::os::unix::process::CommandExt;
        cmd.process_group(0);
    }
}

/// Run `cmd` to completion within `timeout`, returning its stdout.
fn run_with_timeout(mut cmd: Command, timeout: Duration) -> Result<Vec<u8>, OpenError> {
    own_group(&mut cmd);
    let mut child = match cmd.stdin(Stdio::null()).stdout(Stdio::piped()).stderr(Stdio::piped()).spawn() {
        Ok(c) => c,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Err(OpenError::NotInstalled),
        Err(e) => return Err(OpenError::Failed(format!("cannot run ffprobe: {e}"))),
    };
    let mut stdout = child.stdout.take();
    let out_thread = std::thread::spawn(move || {
        let mut buf = Vec::new();
        if let Some(s) = stdout.as_mut() {
            let _ = s.take(1 << 20).read_to_end(&mut buf);
        }
        buf
    });
    let stderr_tail = Arc::new(Mutex::new(Vec::new()));
    let err_thread = spawn_stderr_reader(child.stderr.take(), stderr_tail.clone());
    let deadline = Instant::now() + timeout;
    let status = loop {
        match child.try_wait() {
            Ok(Some(status)) => break status,
            Ok(None) if Instant::now() < deadline => std::thread::sleep(Duration::from_millis(10)),
            Ok(None) | Err(_) => {
                let _ = child.kill();
                let _ = child.wait();
                return Err(OpenError::Failed(format!("ffprobe gave no answer within {} s", timeout.as_secs())));
            }
        }
    };
    let out = out_thread.join().unwrap_or_default();
    let _ = err_thread.join();
    if !status.success() {
        return Err(OpenError::Failed(tail_text(&stderr_tail)));
    }
    Ok(out)
}

/// Read a child's stderr to its end, keeping the last [`STDERR_TAIL_BYTES`].
fn spawn_stderr_reader(
    stderr: Option<std::process::ChildStderr>,
    tail: Arc<Mutex<Vec<u8>>>,
) -> std::thread::JoinHandle<()> {
    std::thread::spawn(move || {
        let Some(mut stderr) = stderr else { return };
        let mut buf = [0u8; 4096];
        while let Ok(n) = stderr.read(&mut buf) {
            if n == 0 {
                break;
            }
            let mut t = tail.lock().unwrap_or_else(PoisonError::into_inner);
            t.extend_from_slice(&buf[..n]);
            let excess = t.len().saturating_sub(STDERR_TAIL_BYTES);
            t.drain(..excess);
        }
    })
}

fn tail_text(tail: &Mutex<Vec<u8>>) -> String {
    let t = tail.lock().unwrap_or_else(PoisonError::into_inner);
    let text = String::from_utf8_lossy(&t);
    let line = text.lines().rev().find(|l| !l.trim().is_empty()).unwrap_or("").trim().to_string();
    if line.is_empty() {
        "ffmpeg failed without a message".into()
    } else {
        line
    }
}

/// ffmpeg's demuxers for files that list other media (HLS and DASH
/// playlists, concat scripts, IMF compositions, SDP session descriptions):
/// decoding one decodes the files or addresses it names, which a song sent
/// to the HTTP service could point at another song on the server's disk.
/// Refused by the name ffprobe gives the format, whatever the file's first
/// bytes (an ID3 tag in front of `#EXTM3U` passed a look at them).
const LIST_FORMATS: &[&str] = &["hls", "applehttp", "concat", "dash", "imf", "sdp", "rtsp"];

/// Ask ffprobe about the first audio stream of `path`.
fn describe(ffprobe: &Path, path: &Path) -> Result<Described, OpenError> {
    let mut cmd = Command::new(ffprobe);
    cmd.args(["-v", "error", "-protocol_whitelist", "file", "-select_streams", "a:0", "-of", "json", "-show_entries"])
        .arg("stream=codec_name,sample_rate,channels,duration:stream_tags=title,artist,album:format=format_name,duration:format_tags=title,artist,album")
        .arg(file_url(path));
    let out = run_with_timeout(cmd, PROBE_TIMEOUT)?;
    let v: serde_json::Value =
        serde_json::from_slice(&out).map_err(|e| OpenError::Failed(format!("unreadable ffprobe output: {e}")))?;
    let format = v.get("format").and_then(|f| f.get("format_name")).and_then(serde_json::Value::as_str).unwrap_or("");
    if format.split(',').any(|f| LIST_FORMATS.contains(&f)) {
        return Err(OpenError::Failed(format!("a list of other media ({format}), not audio")));
    }
    let stream = v
        .get("streams")
        .and_then(|s| s.get(0))
        .ok_or_else(|| OpenError::Failed("ffprobe found no audio stream".into()))?;
    let number = |x: Option<&serde_json::Value>| -> Option<f64> {
        x.and_then(|v| v.as_str().and_then(|s| s.parse().ok()).or_else(|| v.as_f64())).filter(|x: &f64| x.is_finite())
    };
    let sample_rate = number(stream.get("sample_rate")).map_or(0, |r| r as u32);
    let channels = stream.get("channels").and_then(serde_json::Value::as_u64).unwrap_or(0) as usize;
    if !(super::MIN_SAMPLE_RATE..=super::MAX_SAMPLE_RATE).contains(&sample_rate) || !(1..=64).contains(&channels) {
        return Err(OpenError::Failed(format!("ffprobe reports {sample_rate} Hz and {channels} channels")));
    }
    let stream_seconds = number(stream.get("duration"));
    let seconds = stream_seconds.or_else(|| number(v.get("format").and_then(|f| f.get("duration"))));
    let declared_frames = seconds.filter(|s| *s > 0.0).map(|s| (s * f64::from(sample_rate)).round() as u64);
    // A length from the whole container (Matroska has none per stream: it
    // includes the video), or ffmpeg's guess from the bit rate for MP3 and
    // raw AAC, is a hint, not something to call the audio truncated by.
    let length_estimated = stream_seconds.is_none()
        || format.split(',').any(|f| {
            // Raw elementary streams: ffprobe's length is the file's
            // size over a bit rate (a DTS-HD file's core rate, two to
            // three times too long).
            matches!(
                f,
                "mp3"
                    | "aac"
                    | "mp2"
                    | "mpeg"
                    | "ac3"
                    | "eac3"
                    | "dts"
                    | "dtshd"
                    | "truehd"
                    | "mlp"
                    | "amr"
                    | "amrnb"
                    | "amrwb"
            )
        });
    let tag = |key: &str| -> Option<String> {
        [stream.get("tags"), v.get("format").and_then(|f| f.get("tags"))].into_iter().flatten().find_map(|tags| {
            tags.as_object()?
                .iter()
                .find(|(k, _)| k.eq_ignore_ascii_case(key))
                .and_then(|(_, v)| v.as_str())
                .map(str::to_string)
                .filter(|s| !s.is_empty())
        })
    };
    Ok(Described {
        sample_rate,
        channels,
        declared_frames,
        length_estimated,
        tags: Tags { title: tag("title"), artist: tag("artist"), album: tag("album") },
    })
}

/// A running `ffmpeg` writing raw frames, read by a thread.
struct Decoding {
    child: Child,
    pieces: Receiver<std::io::Result<Vec<u8>>>,
    stderr_tail: Arc<Mutex<Vec<u8>>>,
    /// The thread filling `stderr_tail`: joined before a failure is read
    /// from it (it may not have taken ffmpeg's last line when `wait`
    /// returns, and the error said "failed without a message").
    stderr_reader: Option<std::thread::JoinHandle<()>>,
}

impl Drop for Decoding {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A file decoded by a system ffmpeg.
pub(super) struct FfmpegStream {
    path: PathBuf,
    ffmpeg: PathBuf,
    info: Described,
    /// Channels ffmpeg writes: the file's for mono and stereo, else 2
    /// (ffmpeg's own downmix, which knows the channel layout).
    out_channels: usize,
    running: Option<Decoding>,
    /// Frame the next decode starts at (after a seek).
    start_frame: u64,
    /// Frames of ffmpeg's output still to drop before handing any out
    /// ([`FfmpegStream::continue_from`]).
    discard: u64,
    /// The stream has no time index to seek in (it changes format midway):
    /// a seek decodes from the start and drops up to its frame.
    unseekable: bool,
    /// Frames the built-in decoder handed out that ffmpeg's decode does
    /// not have (silence for damaged packets, which ffmpeg drops): every
    /// position in ffmpeg's output is that much behind ours.
    behind: u64,
    frames: u64,
    /// Bytes of an incomplete frame carried to the next piece.
    carry: Vec<u8>,
    samples: Vec<f32>,
    stereo: Vec<f32>,
    finished: bool,
}

impl FfmpegStream {
    /// Describe `path` with ffprobe; nothing is decoded yet.
    pub(super) fn open(path: &Path) -> Result<Self, OpenError> {
        if super::sniff::is_media_list(path) {
            return Err(OpenError::Failed("a playlist or list of other files, not audio".into()));
        }
        let (ffmpeg, ffprobe) = programs();
        let info = describe(&ffprobe, path)?;
        Ok(Self::with(path, ffmpeg, info))
    }

    /// `path` as `info` describes it, to be decoded by the program `ffmpeg`;
    /// nothing runs yet.
    fn with(path: &Path, ffmpeg: PathBuf, info: Described) -> Self {
        let out_channels = info.channels.min(2);
        FfmpegStream {
            path: path.to_path_buf(),
            ffmpeg,
            info,
            out_channels,
            running: None,
            start_frame: 0,
            discard: 0,
            unseekable: false,
            behind: 0,
            frames: 0,
            carry: Vec::new(),
            samples: Vec::new(),
            stereo: Vec::new(),
            finished: false,
        }
    }

    /// Go on where the built-in decoder had to stop, after it handed out
    /// `handed_out` frames (at the file's sample rate): ffmpeg decodes from
    /// the start and its first `skip` frames are dropped (`handed_out` less
    /// the silence the built-in decoder put in for damaged packets, which
    /// ffmpeg drops). Frames are counted on from `handed_out`, so the
    /// stream's length is every frame handed out. Exact where ffmpeg's `-ss` is not:
    /// a chained Ogg file or MP3 files joined end to end have no time
    /// index to seek in (ffmpeg 5.1 seeking 1 s into a two-link Ogg file
    /// wrote nothing).
    pub(super) fn continue_from(&mut self, skip: u64, handed_out: u64) {
        self.unseekable = true;
        self.behind = handed_out.saturating_sub(skip);
        self.running = None;
        self.carry.clear();
        self.start_frame = 0;
        self.discard = skip;
        self.frames = handed_out;
        self.finished = false;
    }

    fn spawn(&mut self) -> Result<(), DecodeError> {
        let mut cmd = Command::new(&self.ffmpeg);
        cmd.args(["-nostdin", "-hide_banner", "-loglevel", "error"]);
        if self.start_frame > 0 {
            // Input seeking; with transcoding ffmpeg decodes from before the
            // point and drops up to it (`-accurate_seek`, on by default).
            let seconds = self.start_frame as f64 / f64::from(self.info.sample_rate);
            cmd.arg("-ss").arg(format!("{seconds:.6}"));
        }
        // Local files only, also for anything the input names (a format
        // that lists others is refused by `describe` already).
        cmd.args(["-protocol_whitelist", "file"])
            .arg("-i")
            .arg(file_url(&self.path))
            .args(["-map", "0:a:0", "-vn", "-sn", "-dn"])
            .args(["-ac", &self.out_channels.to_string(), "-ar", &self.info.sample_rate.to_string()])
            .args(["-f", "f32le", "-acodec", "pcm_f32le", "pipe:1"])
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        own_group(&mut cmd);
        let mut child = cmd.spawn().map_err(|e| DecodeError::Corrupt {
            path: self.path.clone(),
            reason: format!("cannot run {}: {e}", self.ffmpeg.display()),
        })?;
        let stderr_tail = Arc::new(Mutex::new(Vec::new()));
        let stderr_reader = Some(spawn_stderr_reader(child.stderr.take(), stderr_tail.clone()));
        let (tx, pieces) = sync_channel(PIECES_IN_FLIGHT);
        if let Some(mut stdout) = child.stdout.take() {
            std::thread::spawn(move || loop {
                let mut piece = vec![0u8; PIECE_BYTES];
                match stdout.read(&mut piece) {
                    Ok(0) => return,
                    Ok(n) => {
                        piece.truncate(n);
                        if tx.send(Ok(piece)).is_err() {
                            return;
                        }
                    }
                    Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
                    Err(e) => {
                        let _ = tx.send(Err(e));
                        return;
                    }
                }
            });
        }
        self.running = Some(Decoding { child, pieces, stderr_tail, stderr_reader });
        Ok(())
    }

    fn corrupt(&self, reason: String) -> DecodeError {
        DecodeError::Corrupt { path: self.path.clone(), reason }
    }

    /// ffmpeg finished writing: check how it ended.
    fn end(&mut self) -> Result<Option<u32>, DecodeError> {
        self.finished = true;
        if let Some(mut run) = self.running.take() {
            let status = run.child.wait().map_err(|e| self.corrupt(format!("ffmpeg: {e}")))?;
            if !status.success() {
                // (ffmpeg has exited: its stderr ends once the reader has
                // read all of it.)
                if let Some(reader) = run.stderr_reader.take() {
                    let _ = reader.join();
                }
                let reason = tail_text(&run.stderr_tail);
                return Err(self.corrupt(format!("ffmpeg: {reason}")));
            }
        }
        if self.discard > 0 {
            // ffmpeg ended before the frames it was to go on after: what
            // follows them would be lost without a word.
            return Err(self.corrupt(format!(
                "ffmpeg decoded {} frames fewer than the built-in decoder had read before handing over",
                self.discard
            )));
        }
        let (rate, declared) = (self.info.sample_rate, (self.info.declared_frames, self.info.length_estimated));
        check_end(&self.path, self.frames, rate, declared, TRUNCATION_TOLERANCE_SECONDS)?;
        Ok(None)
    }
}

impl Backend for FfmpegStream {
    fn kind(&self) -> &'static str {
        "ffmpeg"
    }
    fn sample_rate(&self) -> u32 {
        self.info.sample_rate
    }
    fn channels(&self) -> usize {
        self.info.channels
    }
    fn declared_frames(&self) -> Option<u64> {
        self.info.declared_frames
    }
    fn length_estimated(&self) -> bool {
        self.info.length_estimated
    }
    fn frames(&self) -> u64 {
        self.frames
    }
    fn tags(&mut self) -> Tags {
        self.info.tags.clone()
    }

    fn block(&self) -> &[f32] {
        &self.stereo
    }

    fn seek(&mut self, frame: u64) -> Result<(), DecodeError> {
        if self.unseekable {
            // Frames before the concealed ones are at the same place in
            // both decodes; past them, ffmpeg's are `behind` earlier.
            self.continue_from(frame.saturating_sub(self.behind), frame);
            return Ok(());
        }
        self.running = None;
        self.carry.clear();
        self.discard = 0;
        self.start_frame = frame;
        self.frames = frame;
        self.finished = !self.info.length_estimated && self.info.declared_frames.is_some_and(|n| frame >= n);
        Ok(())
    }

    fn next_block(&mut self, cancelled: &dyn Fn() -> bool) -> Result<Option<u32>, DecodeError> {
        loop {
            if self.finished {
                return Ok(None);
            }
            if self.running.is_none() {
                self.spawn()?;
            }
            let Some(run) = self.running.as_ref() else { return Ok(None) };
            let waited = Instant::now();
            let got = loop {
                match run.pieces.recv_timeout(CANCEL_POLL) {
                    Err(RecvTimeoutError::Timeout) if waited.elapsed() < STALL_TIMEOUT => {
                        if cancelled() {
                            // (Dropping the run kills ffmpeg.)
                            self.running = None;
                            return Err(DecodeError::Cancelled);
                        }
                    }
                    got => break got,
                }
            };
            let piece = match got {
                Ok(Ok(piece)) => piece,
                Ok(Err(e)) => return Err(self.corrupt(format!("reading ffmpeg's output: {e}"))),
                Err(RecvTimeoutError::Timeout) => {
                    self.running = None;
                    return Err(self.corrupt(format!("ffmpeg produced no audio for {} s", STALL_TIMEOUT.as_secs())));
                }
                Err(RecvTimeoutError::Disconnected) => return self.end(),
            };
            self.carry.extend_from_slice(&piece);
            let frame_bytes = 4 * self.out_channels;
            let usable = self.carry.len() - self.carry.len() % frame_bytes;
            if usable == 0 {
                continue;
            }
            self.samples.clear();
            self.samples
                .extend(self.carry[..usable].chunks_exact(4).map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]])));
            self.carry.drain(..usable);
            self.stereo.clear();
            to_stereo(&self.samples, self.out_channels, &[], &mut self.stereo);
            if self.discard > 0 {
                let drop = usize::try_from(self.discard).unwrap_or(usize::MAX).min(self.stereo.len() / 2);
                self.stereo.drain(..drop * 2);
                self.discard -= drop as u64;
                if self.stereo.is_empty() {
                    // ffmpeg streams on without a pause while frames are
                    // dropped (a catch-up after a seek or a format
                    // change): the cancel is asked here too.
                    if cancelled() {
                        self.running = None;
                        return Err(DecodeError::Cancelled);
                    }
                    continue;
                }
            }
            self.frames += (self.stereo.len() / 2) as u64;
            return Ok(Some(self.info.sample_rate));
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicBool, Ordering};

    use super::*;

    /// An ffmpeg that writes nothing (a slow network share, a stuck
    /// decoder) no longer holds a cancel for the whole stall limit: the
    /// wait hears it within a poll, and ffmpeg is killed.
    #[test]
    fn a_cancel_stops_a_wait_for_a_silent_ffmpeg() {
        let dir = tempfile::tempdir().unwrap();
        let pid_file = dir.path().join("pid");
        let silent = dir.path().join("ffmpeg");
        std::fs::write(&silent, format!("#!/bin/sh\necho $$ > '{}'\nexec sleep 600\n", pid_file.display())).unwrap();
        std::fs::set_permissions(&silent, std::os::unix::fs::PermissionsExt::from_mode(0o755)).unwrap();
        let info = Described {
            sample_rate: 44_100,
            channels: 2,
            declared_frames: Some(44_100 * 240),
            length_estimated: false,
            tags: Tags::default(),
        };
        let mut stream = FfmpegStream::with(&dir.path().join("song.wma"), silent, info);
        let cancel = Arc::new(AtomicBool::new(false));
        let later = cancel.clone();
        let asked = std::thread::spawn(move || {
            std::thread::sleep(Duration::from_millis(500));
            later.store(true, Ordering::SeqCst);
            Instant::now()
        });
        let result = stream.next_block(&|| cancel.load(Ordering::SeqCst));
        let heard = asked.join().unwrap().elapsed();
        assert!(matches!(result, Err(DecodeError::Cancelled)), "{result:?}");
        assert!(heard < Duration::from_secs(2), "the cancel took {heard:?}");
        let pid: i32 = std::fs::read_to_string(&pid_file).unwrap().trim().parse().unwrap();
        assert!(!crate::files::process_alive(pid), "ffmpeg ({pid}) was killed");
    }
}

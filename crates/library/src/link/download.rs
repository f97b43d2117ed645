//! Best-audio downloads with progress, stall time-out and cancel.

use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Serialize;
use tokio::io::{AsyncRead, AsyncReadExt};

use super::classify::classify_run;
use super::{check_url, command, kill_tree, runtime, LinkError, YtDlp, PROGRESS_MARK};

/// What starts the line yt-dlp prints with the downloaded file's path
/// (`--print after_move:…`).
const FILE_MARK: &str = "stemroom-file:";

/// Download progress parsed from yt-dlp's output.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
#[cfg_attr(feature = "specta", derive(specta::Type))]
#[serde(rename_all = "camelCase")]
pub struct DownloadProgress {
    /// 0 to 100 when the size is known.
    pub percent: Option<f64>,
    pub bytes_per_second: Option<f64>,
    pub eta_seconds: Option<f64>,
}

fn parse_number(s: &str) -> Option<f64> {
    s.parse::<f64>().ok().filter(|x| x.is_finite())
}

/// Parse one of our progress lines:
/// `[stemroom-progress] <downloaded> <total> <total estimate> <speed> <eta>`
/// (`NA` for unknown fields). Returns the bytes downloaded so far, whether
/// they are all of an exactly known size (post-processing may follow), and
/// the progress a person sees.
pub(crate) fn parse_progress(line: &str) -> Option<(f64, bool, DownloadProgress)> {
    // Only at the start of a line (`--newline`): a page title holding the
    // mark, in another line of yt-dlp's, must not count as progress.
    let rest = line.trim_start_matches(['\r', ' ']).strip_prefix(PROGRESS_MARK)?;
    let f: Vec<&str> = rest.split_whitespace().collect();
    let downloaded = parse_number(f.first()?)?;
    let total = f.get(1).and_then(|s| parse_number(s)).or_else(|| f.get(2).and_then(|s| parse_number(s)));
    // Complete only against the exact size (an estimate can be passed
    // while bytes still flow).
    let exact = f.get(1).and_then(|s| parse_number(s)).filter(|t| *t > 0.0);
    let complete = exact.is_some_and(|t| downloaded >= t);
    let progress = DownloadProgress {
        percent: total.filter(|t| *t > 0.0).map(|t| (100.0 * downloaded / t).clamp(0.0, 100.0)),
        bytes_per_second: f.get(3).and_then(|s| parse_number(s)),
        eta_seconds: f.get(4).and_then(|s| parse_number(s)),
    };
    Some((downloaded, complete, progress))
}

/// Least growth, in bytes, that counts as a sign of life within one stall
/// window once bytes flow: 16 KiB, one second of a 128 kbit/s stream. A
/// server that trickles a few bytes a second keeps yt-dlp printing progress
/// but would take days for a song: it counts as stalled.
const MIN_GROWTH: f64 = 16.0 * 1024.0;

/// When a download last showed life: any line from yt-dlp before bytes
/// flow (extracting, ffmpeg's statistics where it downloads) and after
/// they reached 100 % (post-processing), in between only [`MIN_GROWTH`]
/// more bytes (or a restart from fewer bytes): yt-dlp's "Retrying
/// fragment" warnings, or ffmpeg's redrawn statistics, kept a download
/// that sent nothing more alive until the length limit (hours).
struct Life {
    at: tokio::time::Instant,
    bytes: f64,
    /// Bytes flow and the download is not complete.
    flowing: bool,
}

impl Life {
    fn new(at: tokio::time::Instant) -> Self {
        Life { at, bytes: 0.0, flowing: false }
    }

    fn line(&mut self) {
        if !self.flowing {
            self.at = tokio::time::Instant::now();
        }
    }

    fn bytes(&mut self, downloaded: f64, complete: bool) {
        self.flowing = downloaded > 0.0 && !complete;
        if downloaded >= self.bytes + MIN_GROWTH || downloaded < self.bytes {
            self.bytes = downloaded;
            self.at = tokio::time::Instant::now();
        }
    }
}

/// Bytes of the files in `dir` and its folders (a download's parts and
/// fragments); what cannot be read counts as nothing.
fn dir_bytes(dir: &Path) -> u64 {
    let Ok(entries) = std::fs::read_dir(dir) else { return 0 };
    entries
        .flatten()
        .filter_map(|e| {
            let meta = e.metadata().ok()?;
            Some(if meta.is_dir() { dir_bytes(&e.path()) } else { meta.len() })
        })
        .sum()
}

/// Remove everything in `dir` (a folder this download owns).
fn clear_dir(dir: &Path) {
    if let Ok(entries) = std::fs::read_dir(dir) {
        for e in entries.flatten() {
            let p = e.path();
            let _ = if p.is_dir() { std::fs::remove_dir_all(&p) } else { std::fs::remove_file(&p) };
        }
    }
}

/// yt-dlp's format selection: the best audio-only format, preferring Opus
/// (YouTube's format 251, Opus in WebM at about 130-160 kbit/s, its best
/// audio) and then AAC-LC in M4A (format 140), both decoded without
/// ffmpeg; anything else after them. Opus counts only from 96 kbit/s (or
/// where the site gives no bit rate): SoundCloud offers Opus at 64 kbit/s
/// beside AAC at 160 (its `hls_opus_64` and `hls_aac_160k` formats), and
/// YouTube's formats 249 and 250 are Opus at 50 and 70 kbit/s. Both
/// take stereo or mono only (or an unknown channel count): a 360° video's
/// ambisonic or 5.1 audio (YouTube's formats 338 and 327, first in
/// yt-dlp's default order, which ranks channels above bit rate) would need
/// ffmpeg, whose stereo downmix of ambisonics is wrong.
pub const FORMAT: &str = "bestaudio[acodec^=opus][abr>=?96][audio_channels<=?2]/\
                          bestaudio[acodec^=mp4a.40.2][audio_channels<=?2]/bestaudio[ext=m4a]/bestaudio/best";

/// What a download may be: yt-dlp refuses anything else before (or while)
/// fetching it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct DownloadLimits {
    /// Largest file in bytes (`--max-filesize`).
    pub max_bytes: u64,
    /// Longest song in seconds, when the site says (`--match-filters`).
    pub max_seconds: u64,
}

impl Default for DownloadLimits {
    /// 1 GiB and 3 hours: far above any song or album-length mix, far below
    /// what would fill a disk or run for days.
    fn default() -> Self {
        DownloadLimits { max_bytes: 1 << 30, max_seconds: 3 * 3600 }
    }
}

/// How many times the longest song allowed a download may run (wall time):
/// one song at the limit at a third of real time (a 10-minute song in 30
/// minutes).
pub const WALL_TIME_FACTOR: u64 = 3;

/// Download the best audio-only format of `url` (one item, never a whole
/// playlist) into `dest_dir` (created; owned by this download: on failure
/// or cancel everything in it is removed). Returns the file written.
///
/// `on_progress` hears every progress line; `is_cancelled` is polled every
/// 100 ms; `stall` is the longest time without a sign of life before giving
/// up: output from yt-dlp before the transfer, then at least 16 KiB more
/// (a trickle is a stall). Live streams and what exceeds `limits` are
/// refused: a size known in advance by yt-dlp, else the bytes received (a
/// radio station's endless stream has no size); the length when the site
/// gives it; and the whole download may take no longer than three times
/// the longest song allowed ([`WALL_TIME_FACTOR`] × `limits.max_seconds`
/// of wall time: a song just under the limit on a connection slower than
/// real time still comes; an endless stream that gives neither size nor
/// length ends).
///
/// # Errors
/// [`LinkError`]; `Cancelled` and `Stalled` after killing the process tree.
pub fn download(
    yt: &YtDlp,
    url: &str,
    dest_dir: &Path,
    stall: Duration,
    limits: &DownloadLimits,
    on_progress: &mut dyn FnMut(&DownloadProgress),
    is_cancelled: &dyn Fn() -> bool,
) -> Result<PathBuf, LinkError> {
    let url = check_url(url)?;
    std::fs::create_dir_all(dest_dir).map_err(|source| LinkError::Io { path: dest_dir.to_path_buf(), source })?;
    // yt-dlp runs from another folder (`/`): a relative folder (a worker's
    // `--work-dir scratch`) would be another one for it.
    let dest_dir = &std::path::absolute(dest_dir).unwrap_or_else(|_| dest_dir.to_path_buf());
    let result = runtime()?.block_on(run_download(yt, &url, dest_dir, stall, limits, on_progress, is_cancelled));
    if result.is_err() {
        clear_dir(dest_dir);
    }
    result
}

async fn run_download(
    yt: &YtDlp,
    url: &str,
    dest_dir: &Path,
    stall: Duration,
    limits: &DownloadLimits,
    on_progress: &mut dyn FnMut(&DownloadProgress),
    is_cancelled: &dyn Fn() -> bool,
) -> Result<PathBuf, LinkError> {
    let filter = match_filter(limits);
    let mut cmd = command(yt);
    // One item: `--no-playlist` for a song's link that names a playlist too,
    // `--playlist-items 1` for an entry that is itself a list (an album on
    // an artist's page).
    cmd.args(["--no-playlist", "--playlist-items", "1", "--newline", "--progress", "-f", FORMAT])
        .args(["--progress-template", &format!("download:{PROGRESS_MARK} %(progress.downloaded_bytes)s %(progress.total_bytes)s %(progress.total_bytes_estimate)s %(progress.speed)s %(progress.eta)s")])
        // A fragment of an HLS or DASH stream that stays missing after
        // its retries fails the download: by default yt-dlp skips it and
        // exits 0, leaving a hole in the song.
        .arg("--abort-on-unavailable-fragments")
        .args(["--max-filesize", &limits.max_bytes.to_string()])
        .args(["--match-filters", &filter])
        // `--print` silences yt-dlp's messages; `--no-quiet` keeps the ones
        // that say why it skipped a download (a filter, the size limit).
        // The path comes after a mark of ours, so no other line of yt-dlp's
        // is taken for it.
        .args(["--print", &format!("after_move:{FILE_MARK}%(filepath)s"), "--no-quiet"])
        // The folder apart from the name template: a `%` in a folder name
        // (a library in "100% Hits") is not a template field.
        .arg("-P")
        .arg(dest_dir)
        .args(["-o", "audio.%(ext)s"])
        .arg("--")
        .arg(url);
    let mut child = cmd.spawn().map_err(|e| super::spawn_error(yt, &e))?;
    let _running = super::Running::of(&child);
    let (Some(stdout), Some(stderr)) = (child.stdout.take(), child.stderr.take()) else {
        kill_tree(&mut child).await;
        return Err(LinkError::Failed("no output pipes".into()));
    };
    // Lines as bytes: a title in another encoding must not end the reading
    // (yt-dlp would then block on a full pipe).
    let mut out_lines = Segments::new(stdout);
    let mut err_lines = Segments::new(stderr);
    // The last 64 KiB yt-dlp wrote to stderr: its `ERROR:` line comes last.
    let mut err_text = String::new();
    let mut printed: Option<String> = None;
    // yt-dlp's own words when it skips the download (a filter, the size).
    let mut refusal: Option<String> = None;
    let (mut out_open, mut err_open) = (true, true);
    let started = tokio::time::Instant::now();
    let mut life = Life::new(started);
    let mut received = 0.0f64;
    let mut tick = tokio::time::interval(Duration::from_millis(100));
    let mut ticks: u64 = 0;
    while out_open || err_open {
        tokio::select! {
            line = out_lines.next(), if out_open => match line {
                Ok(Some(l)) => {
                    let l = String::from_utf8_lossy(&l);
                    if let Some((bytes, complete, p)) = parse_progress(&l) {
                        life.bytes(bytes, complete);
                        received = bytes;
                        on_progress(&p);
                    } else {
                        life.line();
                        // (`Segments` ends lines at `\r` and `\n` alike.)
                        if let Some(path) = l.strip_prefix(FILE_MARK) {
                            printed = Some(path.to_string());
                        } else if is_refusal(&l, &filter) {
                            refusal = Some(l.trim().to_string());
                        }
                    }
                }
                _ => out_open = false,
            },
            line = err_lines.next(), if err_open => match line {
                Ok(Some(l)) => {
                    let l = String::from_utf8_lossy(&l);
                    if let Some((bytes, complete, p)) = parse_progress(&l) {
                        life.bytes(bytes, complete);
                        received = bytes;
                        on_progress(&p);
                    } else {
                        life.line();
                        err_text.push_str(&l);
                        err_text.push('\n');
                        keep_tail(&mut err_text, 64 * 1024);
                    }
                }
                _ => err_open = false,
            },
            _ = tick.tick() => {
                if is_cancelled() {
                    kill_tree(&mut child).await;
                    return Err(LinkError::Cancelled);
                }
                if life.at.elapsed() >= stall {
                    kill_tree(&mut child).await;
                    return Err(LinkError::Stalled(stall.as_secs()));
                }
                // What is on disk too, once a second: a download yt-dlp
                // hands to ffmpeg (a live HLS or DASH stream) prints no
                // progress, and `--max-filesize` does not reach it.
                ticks += 1;
                if ticks.is_multiple_of(10) {
                    received = received.max(dir_bytes(dest_dir) as f64);
                }
                if received > limits.max_bytes as f64 {
                    kill_tree(&mut child).await;
                    return Err(LinkError::Refused(format!(
                        "it sent more than {:.0} MB without saying its size first (an endless stream, such as a \
                         radio station's?)",
                        limits.max_bytes as f64 / 1e6
                    )));
                }
                let wall = limits.max_seconds.saturating_mul(WALL_TIME_FACTOR);
                if started.elapsed() >= Duration::from_secs(wall) {
                    kill_tree(&mut child).await;
                    return Err(LinkError::Refused(format!(
                        "it was still downloading after {}, three times the longest a song may last (an endless \
                         stream, such as a radio station's, or a very slow connection)",
                        limit_text(wall)
                    )));
                }
            }
        }
    }
    let status = child.wait().await.map_err(|e| LinkError::Failed(e.to_string()))?;
    if let Some(said) = refusal {
        return Err(refused(&said, limits));
    }
    if !status.success() {
        return Err(classify_run(&err_text, url, yt));
    }
    // Only a file in the folder we gave it counts, and only its name is
    // taken from what yt-dlp printed (`audio.<ext>`, ours): the folder's
    // name comes back through Python's encoding of the locale, which drops
    // what it cannot encode (a folder named in another encoding).
    let file = printed
        .as_deref()
        .and_then(|p| Path::new(p).file_name())
        .map(|name| dest_dir.join(name))
        .filter(|p| p.is_file())
        .ok_or_else(|| {
            LinkError::NoMedia(format!("yt-dlp finished without an audio file in {}", dest_dir.display()))
        })?;
    Ok(file)
}

/// Longest line kept whole from a child's output; a longer one is handed
/// out in pieces of this size (a program that never ends a line must not
/// fill the memory).
const MAX_LINE: usize = 64 * 1024;

/// The lines of a child's output, each ended by `\n` or `\r`: ffmpeg, when
/// yt-dlp hands it a download (some HLS streams), redraws its statistics
/// with `\r` alone, and those are its only sign of life. Lines are bytes (a
/// title in another encoding must not end the reading: yt-dlp would then
/// block on a full pipe).
struct Segments<R> {
    reader: R,
    buf: Vec<u8>,
    chunk: Vec<u8>,
    done: bool,
}

impl<R: AsyncRead + Unpin> Segments<R> {
    fn new(reader: R) -> Self {
        Segments { reader, buf: Vec::new(), chunk: vec![0; 8192], done: false }
    }

    /// The next line without its end, `None` at the end of the output.
    /// Cancel-safe (for `select!`): what was read stays in `self`.
    async fn next(&mut self) -> std::io::Result<Option<Vec<u8>>> {
        loop {
            if let Some(i) = self.buf.iter().position(|&b| b == b'\n' || b == b'\r') {
                let mut line: Vec<u8> = self.buf.drain(..=i).collect();
                line.pop();
                return Ok(Some(line));
            }
            if self.buf.len() >= MAX_LINE || (self.done && !self.buf.is_empty()) {
                let rest = self.buf.split_off(self.buf.len().min(MAX_LINE));
                return Ok(Some(std::mem::replace(&mut self.buf, rest)));
            }
            if self.done {
                return Ok(None);
            }
            let n = self.reader.read(&mut self.chunk).await?;
            if n == 0 {
                self.done = true;
            } else {
                self.buf.extend_from_slice(&self.chunk[..n]);
            }
        }
    }
}

/// The `--match-filters` of a download within `limits`: no live stream,
/// nothing longer than the length limit (a length not known passes).
fn match_filter(limits: &DownloadLimits) -> String {
    format!("!is_live & duration <? {}", limits.max_seconds)
}

/// Whether `line` is yt-dlp's own word that it skips the download:
/// `[download] <title> does not pass filter (<filter>), skipping ..`, the
/// `filter` being exactly the one passed (the title may hold a line break,
/// so only the line's end is matched), or `[download] File is larger than
/// max-filesize (…). Aborting.`. A page title holding the words with
/// another filter (a playlist's `Downloading playlist: <title>`) is not
/// taken for it.
fn is_refusal(line: &str, filter: &str) -> bool {
    let l = line.trim();
    l.ends_with(&format!(" does not pass filter ({filter}), skipping .."))
        || l.starts_with("[download] File is larger than max-filesize")
}

/// A length limit in words: whole hours as hours, else minutes.
fn limit_text(seconds: u64) -> String {
    match seconds {
        s if s.is_multiple_of(3600) && s >= 3600 => format!("{} hour{}", s / 3600, if s == 3600 { "" } else { "s" }),
        s => format!("{} minute{}", s.div_ceil(60), if s <= 60 { "" } else { "s" }),
    }
}

/// Cut `text` to its last `max` bytes or so (at a character boundary).
fn keep_tail(text: &mut String, max: usize) {
    if text.len() > max {
        let mut cut = text.len() - max;
        while !text.is_char_boundary(cut) {
            cut += 1;
        }
        text.drain(..cut);
    }
}

/// The refusal yt-dlp printed, in a person's words.
fn refused(said: &str, limits: &DownloadLimits) -> LinkError {
    // One filter holds both conditions (several `--match-filters` would be
    // alternatives), and yt-dlp names the whole filter when it skips.
    let reason = if said.contains("does not pass filter") {
        format!(
            "it is a live stream (which never ends: separate its recording once it is over) or longer than {}",
            limit_text(limits.max_seconds)
        )
    } else {
        format!("its file is larger than {:.0} MB", limits.max_bytes as f64 / 1e6)
    };
    LinkError::Refused(format!("{reason} ({said})"))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A download yt-dlp hands to ffmpeg prints no progress and escapes
    /// `--max-filesize`: what grows on disk is held to the limit too. (A
    /// stand-in for yt-dlp that writes as ffmpeg does, saying nothing.)
    #[test]
    fn a_download_that_says_no_size_is_held_to_the_limit_on_disk() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let script = dir.path().join("yt-dlp");
        let pid_file = dir.path().join("pid");
        let body = format!(
            "#!/bin/sh\necho $$ > '{}'\nwhile [ $# -gt 0 ]; do [ \"$1\" = -P ] && out=\"$2\"; shift; done\n\
             head -c 3000000 /dev/zero > \"$out/audio.mp4.part\"\nexec sleep 30\n",
            pid_file.display()
        );
        std::fs::write(&script, body).unwrap();
        std::fs::set_permissions(&script, std::fs::Permissions::from_mode(0o755)).unwrap();
        let yt = super::super::YtDlp { path: script, version: super::super::PINNED_VERSION.into(), js_runtime: None };
        let dest = dir.path().join("download");
        let limits = super::DownloadLimits { max_bytes: 1_000_000, ..Default::default() };
        let t0 = std::time::Instant::now();
        let e = super::download(
            &yt,
            "https://example.com/live",
            &dest,
            std::time::Duration::from_secs(60),
            &limits,
            &mut |_| {},
            &|| false,
        )
        .unwrap_err();
        assert!(matches!(&e, super::LinkError::Refused(m) if m.contains("more than 1 MB")), "{e:?}");
        assert!(t0.elapsed() < std::time::Duration::from_secs(10), "{:?}", t0.elapsed());
        let pid: i32 = std::fs::read_to_string(&pid_file).unwrap().trim().parse().unwrap();
        std::thread::sleep(std::time::Duration::from_millis(200));
        assert!(stemroom_testkit::process_gone(pid), "the download still runs");
        assert_eq!(super::dir_bytes(&dest), 0, "its part is removed");
    }

    /// Once bytes flow, only their growth is life: yt-dlp's retry warnings
    /// are not; before they flow and after 100 % (post-processing) any
    /// line is.
    #[test]
    fn once_bytes_flow_only_their_growth_is_life() {
        let t0 = tokio::time::Instant::now();
        let later = || {
            std::thread::sleep(Duration::from_millis(3));
            tokio::time::Instant::now()
        };
        let mut life = Life::new(t0);
        life.line();
        assert!(life.at > t0, "a line before bytes flow");
        life.bytes(1000.0, false);
        let at = life.at;
        later();
        life.line();
        assert_eq!(life.at, at, "a retry warning while bytes flow");
        life.bytes(1000.0 + MIN_GROWTH / 2.0, false);
        assert_eq!(life.at, at, "a trickle");
        let before = later();
        life.bytes(1000.0 + MIN_GROWTH, false);
        assert!(life.at >= before, "growth");
        // A stream of unknown size, or past its estimate: the same.
        let at = life.at;
        later();
        life.bytes(2000.0 + MIN_GROWTH, false);
        life.line();
        assert_eq!(life.at, at);
        // Done: post-processing lines are life again.
        life.bytes(5_000_000.0, true);
        let before = later();
        life.line();
        assert!(life.at >= before, "a line after 100 %");
    }

    #[test]
    fn the_tail_of_stderr_is_kept() {
        let mut text = "é".repeat(100);
        text.push_str("ERROR: [youtube] x: Video unavailable\n");
        keep_tail(&mut text, 50);
        assert!(text.len() <= 51 && text.ends_with("Video unavailable\n"), "{text}");
        let mut short = String::from("ERROR: x\n");
        keep_tail(&mut short, 50);
        assert_eq!(short, "ERROR: x\n");
    }

    #[test]
    fn refusals_are_explained() {
        let limits = DownloadLimits::default();
        let live = "[download] Lofi radio does not pass filter (!is_live & duration <? 10800), skipping ..";
        let e = refused(live, &limits);
        assert!(matches!(&e, LinkError::Refused(m) if m.contains("live stream") && m.contains("3 hours")), "{e}");
        let big = "[download] File is larger than max-filesize (2147483648 bytes > 1073741824 bytes). Aborting.";
        assert!(matches!(refused(big, &limits), LinkError::Refused(m) if m.contains("larger than 1074 MB")));
        let filter = match_filter(&limits);
        assert!(is_refusal(live, &filter) && is_refusal(big, &filter));
        // A title with a line break: the line's end is yt-dlp's word.
        assert!(is_refusal("Radio does not pass filter (!is_live & duration <? 10800), skipping ..", &filter));
        // A title holding those words, in another line of yt-dlp's.
        assert!(!is_refusal("[download] Downloading playlist: x does not pass filter (y)", &filter));
        let short = DownloadLimits { max_seconds: 300, ..limits };
        assert!(matches!(refused(live, &short), LinkError::Refused(m) if m.contains("longer than 5 minutes")));
        assert_eq!(
            (limit_text(3600), limit_text(5400), limit_text(60)),
            ("1 hour".into(), "90 minutes".into(), "1 minute".into())
        );
    }

    #[test]
    fn lines_end_at_either_line_end_and_are_bounded() {
        let rt = tokio::runtime::Builder::new_current_thread().build().unwrap();
        let mut text = b"a\nframe=1 size=10kB\rframe=2 size=20kB\r\nlast".to_vec();
        text.extend(vec![b'x'; MAX_LINE + 10]);
        let mut lines = Segments::new(&text[..]);
        let mut got = Vec::new();
        rt.block_on(async {
            while let Some(l) = lines.next().await.unwrap() {
                got.push(l);
            }
        });
        assert_eq!(got[..4], [b"a".to_vec(), b"frame=1 size=10kB".to_vec(), b"frame=2 size=20kB".to_vec(), Vec::new()]);
        assert_eq!(got[4].len(), MAX_LINE);
        assert_eq!(got[5].len(), 4 + 10);
        assert_eq!(got.len(), 6);
    }

    #[test]
    fn progress_is_read_only_from_our_own_lines() {
        let (bytes, _, p) = parse_progress("[stemroom-progress] 1000 4000 NA 500 6").expect("ours");
        assert_eq!((bytes, p.percent), (1000.0, Some(25.0)));
        assert!(parse_progress("\r[stemroom-progress] 1 2 NA NA NA").is_some());
        // A page title holding the mark, in yt-dlp's own line.
        assert!(parse_progress("[download] Downloading playlist: [stemroom-progress] 99999999999").is_none());
    }
}

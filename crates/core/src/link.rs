//! Songs from links: metadata and best-audio downloads with yt-dlp, run as a
//! child process through `tokio::process` with an argument list (never a
//! shell) and the URL after `--`, so a link can never become an option.
//!
//! - [`YtDlp::locate`] finds the program: an explicit setting, then
//!   `$STEMROOM_YTDLP`, then the project's environment
//!   (`<cache>/tools/yt-dlp/bin/yt-dlp`, installed by `scripts/setup.sh` from
//!   PyPI at [`PINNED_VERSION`]), then `PATH`; versions older than
//!   [`MIN_VERSION`] are refused.
//! - [`probe`] reads metadata (title, uploader, duration, thumbnail, playlist
//!   entries up to a limit) without downloading.
//! - [`download`] fetches the best audio-only format into a folder, reporting
//!   percent, speed and ETA parsed from yt-dlp's progress lines. Cancelling or
//!   a stall (no output for the stall time-out) kills the whole process group
//!   and removes what was written.
//!
//! Errors are classified from yt-dlp's messages into [`LinkError`] variants a
//! person can act on (not a URL, unsupported site, unavailable or private,
//! network unreachable, yt-dlp missing or too old).

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

use serde::Serialize;
use tokio::io::{AsyncBufReadExt, BufReader};

/// The yt-dlp release the project installs and tests against.
pub const PINNED_VERSION: &str = "2026.10.26";
/// Oldest yt-dlp accepted (release dates compare as text, `YYYY.MM.DD`).
pub const MIN_VERSION: &str = "2025.01.01";
/// Longest link accepted, in bytes.
pub const MAX_URL_BYTES: usize = 4096;
/// Playlist entries listed at most (a guard against runaway lists).
pub const DEFAULT_PLAYLIST_LIMIT: usize = 200;
/// A download with no output from yt-dlp for this long is stopped.
pub const DEFAULT_STALL_TIMEOUT: Duration = Duration::from_secs(60);
/// Metadata requests give up after this long.
pub const PROBE_TIMEOUT: Duration = Duration::from_secs(60);
/// Marker of our progress lines (`--progress-template`).
const PROGRESS_MARK: &str = "[stemroom-progress]";

/// Why a link could not be used. Messages are for people.
#[derive(Debug, thiserror::Error)]
pub enum LinkError {
    #[error("“{0}” is not a web link (it must start with http:// or https://)")]
    NotAUrl(String),
    #[error("this site is not supported: {0}")]
    UnsupportedSite(String),
    #[error("the video or song is unavailable (removed, private or not found): {0}")]
    Unavailable(String),
    #[error("the link has no audio or video to download: {0}")]
    NoMedia(String),
    #[error("the network is unreachable or the server did not answer: {0}")]
    Network(String),
    #[error("the download stalled: nothing arrived for {0} s")]
    Stalled(u64),
    #[error("yt-dlp was not found; install it with `bash scripts/setup.sh` or set its path in Settings ({0})")]
    Missing(String),
    #[error("yt-dlp {found} is too old; version {need} or newer is needed (`bash scripts/setup.sh` installs {PINNED_VERSION})")]
    TooOld { found: String, need: String },
    #[error("the download was cancelled")]
    Cancelled,
    #[error("yt-dlp failed: {0}")]
    Failed(String),
    #[error("{path}: {source}")]
    Io { path: PathBuf, source: std::io::Error },
}

impl LinkError {
    /// The stable code front ends branch on.
    pub fn code(&self) -> crate::ErrorCode {
        use crate::ErrorCode as C;
        match self {
            LinkError::NotAUrl(_) => C::BadInput,
            LinkError::Missing(_) | LinkError::TooOld { .. } => C::MissingTool,
            LinkError::Cancelled => C::Cancelled,
            LinkError::Io { .. } => C::Output,
            _ => C::Download,
        }
    }
}

/// Whether yt-dlp can be used, for front ends (Settings).
#[derive(Debug, Clone, PartialEq, Serialize)]
#[cfg_attr(feature = "specta", derive(specta::Type))]
#[serde(rename_all = "camelCase")]
pub struct YtDlpStatus {
    pub found: bool,
    pub path: Option<String>,
    pub version: Option<String>,
    /// Why it cannot be used, in plain words.
    pub problem: Option<String>,
}

/// Look for yt-dlp as a download would (see [`YtDlp::locate`]).
pub fn status(explicit: Option<&Path>) -> YtDlpStatus {
    match YtDlp::locate(explicit) {
        Ok(y) => YtDlpStatus {
            found: true,
            path: Some(y.path.to_string_lossy().into_owned()),
            version: Some(y.version),
            problem: None,
        },
        Err(e) => YtDlpStatus { found: false, path: None, version: None, problem: Some(e.to_string()) },
    }
}

/// A located yt-dlp and its version.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[cfg_attr(feature = "specta", derive(specta::Type))]
pub struct YtDlp {
    pub path: PathBuf,
    pub version: String,
}

/// Check a link before it goes anywhere near a command line: http(s) only,
/// a host, no whitespace or control characters, not starting with `-`,
/// at most [`MAX_URL_BYTES`]. Returns the trimmed link.
///
/// # Errors
/// [`LinkError::NotAUrl`].
pub fn check_url(raw: &str) -> Result<String, LinkError> {
    let url = raw.trim();
    let bad = || LinkError::NotAUrl(url.chars().take(200).collect());
    if url.is_empty() || url.starts_with('-') || url.len() > MAX_URL_BYTES {
        return Err(bad());
    }
    if url.chars().any(|c| c.is_whitespace() || c.is_control()) {
        return Err(bad());
    }
    let lower = url.to_ascii_lowercase();
    let rest = lower.strip_prefix("https://").or_else(|| lower.strip_prefix("http://")).ok_or_else(bad)?;
    let host = rest.split(['/', '?', '#']).next().unwrap_or("");
    let host = host.rsplit('@').next().unwrap_or("");
    if host.is_empty() || host.starts_with(':') || host.starts_with('-') {
        return Err(bad());
    }
    Ok(url.to_string())
}

/// Whether `s` looks like a link (for front ends that take paths or links).
pub fn looks_like_url(s: &str) -> bool {
    let l = s.trim_start().to_ascii_lowercase();
    l.starts_with("http://") || l.starts_with("https://")
}

impl YtDlp {
    /// Find yt-dlp (see the module docs for the order) and check its version.
    ///
    /// # Errors
    /// [`LinkError::Missing`] when no candidate runs, [`LinkError::TooOld`].
    pub fn locate(explicit: Option<&Path>) -> Result<Self, LinkError> {
        let mut candidates: Vec<PathBuf> = Vec::new();
        if let Some(p) = explicit {
            candidates.push(p.to_path_buf());
        } else {
            if let Some(p) = std::env::var_os("STEMROOM_YTDLP").filter(|p| !p.is_empty()) {
                candidates.push(PathBuf::from(p));
            }
            if let Some(cache) = crate::paths::cache_dir() {
                candidates.push(cache.join("tools/yt-dlp/bin/yt-dlp"));
            }
            candidates.push(PathBuf::from("yt-dlp"));
        }
        let mut tried = Vec::new();
        for c in candidates {
            match version_of(&c) {
                Ok(version) => {
                    if version.as_str() < MIN_VERSION {
                        return Err(LinkError::TooOld { found: version, need: MIN_VERSION.into() });
                    }
                    return Ok(YtDlp { path: c, version });
                }
                Err(e) => tried.push(format!("{}: {e}", c.display())),
            }
        }
        Err(LinkError::Missing(tried.join("; ")))
    }
}

fn version_of(program: &Path) -> Result<String, String> {
    let out = std::process::Command::new(program)
        .arg("--version")
        .stdin(Stdio::null())
        .output()
        .map_err(|e| e.to_string())?;
    if !out.status.success() {
        return Err(format!("exited with {}", out.status));
    }
    let v = String::from_utf8_lossy(&out.stdout).trim().to_string();
    if v.is_empty() {
        return Err("printed no version".into());
    }
    Ok(v)
}

/// One entry of a playlist.
#[derive(Debug, Clone, PartialEq, Serialize, serde::Deserialize)]
#[cfg_attr(feature = "specta", derive(specta::Type))]
#[serde(rename_all = "camelCase")]
pub struct LinkEntry {
    pub url: String,
    pub title: String,
    pub duration_seconds: Option<f64>,
}

/// What a link is, before downloading.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[cfg_attr(feature = "specta", derive(specta::Type))]
#[serde(rename_all = "camelCase")]
pub struct LinkInfo {
    pub url: String,
    pub title: String,
    pub uploader: Option<String>,
    pub duration_seconds: Option<f64>,
    pub thumbnail: Option<String>,
    /// yt-dlp's extractor (`generic`, `youtube`, …).
    pub extractor: Option<String>,
    /// For a playlist: its entries (at most the limit given to [`probe`]).
    pub entries: Vec<LinkEntry>,
    pub is_playlist: bool,
    /// The playlist has more entries than were listed.
    pub truncated: bool,
}

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

fn runtime() -> Result<tokio::runtime::Runtime, LinkError> {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| LinkError::Failed(format!("cannot start the process runtime: {e}")))
}

fn command(yt: &YtDlp) -> tokio::process::Command {
    let mut cmd = tokio::process::Command::new(&yt.path);
    // No user or system config can change what we run; no colours or
    // terminal titles in the output we parse.
    cmd.args(["--ignore-config", "--no-colors", "--socket-timeout", "20"])
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true);
    // Its own process group, so a kill reaches yt-dlp's children (ffmpeg).
    #[cfg(unix)]
    cmd.process_group(0);
    cmd
}

/// Classify yt-dlp's error output.
fn classify(stderr: &str) -> LinkError {
    let last = stderr
        .lines()
        .rev()
        .find(|l| l.contains("ERROR"))
        .or_else(|| stderr.lines().rev().find(|l| !l.trim().is_empty()))
        .unwrap_or("no message")
        .trim()
        .trim_start_matches("ERROR:")
        .trim()
        .to_string();
    let l = stderr.to_ascii_lowercase();
    // yt-dlp's messages (yt_dlp/utils/_utils.py and the extractors), first match wins.
    type Make = fn(String) -> LinkError;
    const RULES: &[(&[&str], Make)] = &[
        (&["unsupported url"], LinkError::UnsupportedSite),
        (
            &[
                "http error 404",
                "http error 410",
                "http error 403",
                "video unavailable",
                "private video",
                "not available",
                "has been removed",
            ],
            LinkError::Unavailable,
        ),
        (&["no video formats found", "requested format is not available"], LinkError::NoMedia),
        (
            &[
                "unable to download webpage",
                "connection refused",
                "name or service not known",
                "temporary failure in name resolution",
                "network is unreachable",
                "timed out",
                "failed to resolve",
            ],
            LinkError::Network,
        ),
    ];
    let make = RULES
        .iter()
        .find(|(needles, _)| needles.iter().any(|n| l.contains(n)))
        .map_or(LinkError::Failed as Make, |(_, make)| *make);
    make(last)
}

/// Kill the process group of `child` (yt-dlp and anything it started) and
/// reap it.
async fn kill_tree(child: &mut tokio::process::Child) {
    #[cfg(unix)]
    if let Some(pid) = child.id().and_then(|p| i32::try_from(p).ok()) {
        // SAFETY: kill(2) on the process group this module created.
        unsafe { libc::kill(-pid, libc::SIGKILL) };
    }
    let _ = child.kill().await;
}

fn text(v: &serde_json::Value, key: &str) -> Option<String> {
    v.get(key).and_then(|x| x.as_str()).map(str::to_string).filter(|s| !s.is_empty())
}

/// Metadata of `url` without downloading: a single item's title, uploader,
/// duration and thumbnail, or a playlist's first `limit` entries.
///
/// # Errors
/// [`LinkError`]: bad link, site errors, network, time-out (as `Network`).
pub fn probe(yt: &YtDlp, url: &str, limit: usize) -> Result<LinkInfo, LinkError> {
    let url = check_url(url)?;
    let limit = limit.max(1);
    runtime()?.block_on(async {
        let mut cmd = command(yt);
        cmd.args(["--dump-single-json", "--flat-playlist", "--no-warnings"])
            .args(["--playlist-end", &(limit + 1).to_string()])
            .arg("--")
            .arg(&url);
        let child = cmd.spawn().map_err(|e| LinkError::Missing(format!("{}: {e}", yt.path.display())))?;
        let out = match tokio::time::timeout(PROBE_TIMEOUT, child.wait_with_output()).await {
            Ok(out) => out.map_err(|e| LinkError::Failed(e.to_string()))?,
            Err(_) => {
                return Err(LinkError::Network(format!("no answer within {} s", PROBE_TIMEOUT.as_secs())));
            }
        };
        if !out.status.success() {
            return Err(classify(&String::from_utf8_lossy(&out.stderr)));
        }
        let v: serde_json::Value =
            serde_json::from_slice(&out.stdout).map_err(|e| LinkError::Failed(format!("unreadable metadata: {e}")))?;
        let is_playlist = v.get("_type").and_then(|t| t.as_str()) == Some("playlist");
        let mut entries: Vec<LinkEntry> = v
            .get("entries")
            .and_then(|e| e.as_array())
            .map(|a| {
                a.iter()
                    .filter_map(|e| {
                        let u = text(e, "url").or_else(|| text(e, "webpage_url"))?;
                        Some(LinkEntry {
                            title: text(e, "title").unwrap_or_else(|| u.clone()),
                            url: u,
                            duration_seconds: e.get("duration").and_then(|d| d.as_f64()),
                        })
                    })
                    .collect()
            })
            .unwrap_or_default();
        let truncated = entries.len() > limit;
        entries.truncate(limit);
        Ok(LinkInfo {
            title: text(&v, "title").unwrap_or_else(|| url.clone()),
            uploader: text(&v, "uploader").or_else(|| text(&v, "channel")),
            duration_seconds: v.get("duration").and_then(|d| d.as_f64()),
            thumbnail: text(&v, "thumbnail"),
            extractor: text(&v, "extractor_key").or_else(|| text(&v, "extractor")),
            url,
            entries,
            is_playlist,
            truncated,
        })
    })
}

fn parse_number(s: &str) -> Option<f64> {
    s.parse::<f64>().ok().filter(|x| x.is_finite())
}

/// Parse one of our progress lines:
/// `[stemroom-progress] <downloaded> <total> <total estimate> <speed> <eta>`
/// (`NA` for unknown fields).
fn parse_progress(line: &str) -> Option<DownloadProgress> {
    let rest = line.split(PROGRESS_MARK).nth(1)?;
    let f: Vec<&str> = rest.split_whitespace().collect();
    let downloaded = parse_number(f.first()?)?;
    let total = f.get(1).and_then(|s| parse_number(s)).or_else(|| f.get(2).and_then(|s| parse_number(s)));
    Some(DownloadProgress {
        percent: total.filter(|t| *t > 0.0).map(|t| (100.0 * downloaded / t).clamp(0.0, 100.0)),
        bytes_per_second: f.get(3).and_then(|s| parse_number(s)),
        eta_seconds: f.get(4).and_then(|s| parse_number(s)),
    })
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

/// Download the best audio-only format of `url` (one item, never a whole
/// playlist) into `dest_dir` (created; owned by this download: on failure
/// or cancel everything in it is removed). Returns the file written.
///
/// `on_progress` hears every progress line; `is_cancelled` is polled every
/// 100 ms; `stall` is the longest silence from yt-dlp before giving up.
///
/// # Errors
/// [`LinkError`]; `Cancelled` and `Stalled` after killing the process tree.
pub fn download(
    yt: &YtDlp,
    url: &str,
    dest_dir: &Path,
    stall: Duration,
    on_progress: &mut dyn FnMut(&DownloadProgress),
    is_cancelled: &dyn Fn() -> bool,
) -> Result<PathBuf, LinkError> {
    let url = check_url(url)?;
    std::fs::create_dir_all(dest_dir).map_err(|source| LinkError::Io { path: dest_dir.to_path_buf(), source })?;
    let result = runtime()?.block_on(run_download(yt, &url, dest_dir, stall, on_progress, is_cancelled));
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
    on_progress: &mut dyn FnMut(&DownloadProgress),
    is_cancelled: &dyn Fn() -> bool,
) -> Result<PathBuf, LinkError> {
    let template = dest_dir.join("audio.%(ext)s");
    let mut cmd = command(yt);
    cmd.args(["--no-playlist", "--newline", "--progress", "--no-warnings", "-f", "bestaudio/best"])
        .args(["--progress-template", &format!("download:{PROGRESS_MARK} %(progress.downloaded_bytes)s %(progress.total_bytes)s %(progress.total_bytes_estimate)s %(progress.speed)s %(progress.eta)s")])
        .args(["--print", "after_move:filepath", "-o"])
        .arg(&template)
        .arg("--")
        .arg(url);
    let mut child = cmd.spawn().map_err(|e| LinkError::Missing(format!("{}: {e}", yt.path.display())))?;
    let (Some(stdout), Some(stderr)) = (child.stdout.take(), child.stderr.take()) else {
        kill_tree(&mut child).await;
        return Err(LinkError::Failed("no output pipes".into()));
    };
    let mut out_lines = BufReader::new(stdout).lines();
    let mut err_lines = BufReader::new(stderr).lines();
    let mut err_text = String::new();
    let mut printed: Option<String> = None;
    let (mut out_open, mut err_open) = (true, true);
    let mut last_output = tokio::time::Instant::now();
    let mut tick = tokio::time::interval(Duration::from_millis(100));
    while out_open || err_open {
        tokio::select! {
            line = out_lines.next_line(), if out_open => match line {
                Ok(Some(l)) => {
                    last_output = tokio::time::Instant::now();
                    if let Some(p) = parse_progress(&l) {
                        on_progress(&p);
                    } else if !l.trim().is_empty() {
                        printed = Some(l.trim().to_string());
                    }
                }
                _ => out_open = false,
            },
            line = err_lines.next_line(), if err_open => match line {
                Ok(Some(l)) => {
                    last_output = tokio::time::Instant::now();
                    if let Some(p) = parse_progress(&l) {
                        on_progress(&p);
                    } else if err_text.len() < 64 * 1024 {
                        err_text.push_str(&l);
                        err_text.push('\n');
                    }
                }
                _ => err_open = false,
            },
            _ = tick.tick() => {
                if is_cancelled() {
                    kill_tree(&mut child).await;
                    return Err(LinkError::Cancelled);
                }
                if last_output.elapsed() >= stall {
                    kill_tree(&mut child).await;
                    return Err(LinkError::Stalled(stall.as_secs()));
                }
            }
        }
    }
    let status = child.wait().await.map_err(|e| LinkError::Failed(e.to_string()))?;
    if !status.success() {
        return Err(classify(&err_text));
    }
    let file = printed.map(PathBuf::from).filter(|p| p.is_file()).ok_or_else(|| {
        LinkError::NoMedia(format!("yt-dlp finished without an audio file in {}", dest_dir.display()))
    })?;
    // Only a file in the folder we gave it counts.
    if file.parent().map(std::fs::canonicalize).and_then(Result::ok) != std::fs::canonicalize(dest_dir).ok() {
        return Err(LinkError::Failed(format!("unexpected output path {}", file.display())));
    }
    Ok(file)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn links_are_checked_before_any_command_line() {
        assert_eq!(check_url("  https://example.com/watch?v=1 ").unwrap(), "https://example.com/watch?v=1");
        assert!(check_url("http://127.0.0.1:8080/a.wav").is_ok());
        for bad in [
            "",
            "-x",
            "--exec=rm -rf /",
            "ftp://example.com/a",
            "file:///etc/passwd",
            "https://",
            "https:///path",
            "https://exa mple.com",
            "https://example.com/\nfoo",
            "example.com",
            "https://-oops.com",
        ] {
            assert!(matches!(check_url(bad), Err(LinkError::NotAUrl(_))), "{bad:?} accepted");
        }
        assert!(check_url(&format!("https://e.com/{}", "a".repeat(MAX_URL_BYTES))).is_err());
    }

    #[test]
    fn progress_lines_parse() {
        let p = parse_progress("[stemroom-progress] 5000 10000 NA 2500.5 2").unwrap();
        assert_eq!(p, DownloadProgress { percent: Some(50.0), bytes_per_second: Some(2500.5), eta_seconds: Some(2.0) });
        let p = parse_progress("[stemroom-progress] 300 NA 1200 NA NA").unwrap();
        assert_eq!(p.percent, Some(25.0));
        assert_eq!(parse_progress("[stemroom-progress] NA NA NA NA NA"), None);
        assert_eq!(parse_progress("[download] 50%"), None);
    }

    #[test]
    fn errors_are_classified() {
        assert!(matches!(classify("ERROR: Unsupported URL: https://x"), LinkError::UnsupportedSite(_)));
        assert!(matches!(classify("ERROR: [generic] x: HTTP Error 404: Not Found"), LinkError::Unavailable(_)));
        assert!(matches!(classify("ERROR: [youtube] abc: Private video. Sign in"), LinkError::Unavailable(_)));
        assert!(matches!(
            classify("ERROR: Unable to download webpage: <urlopen error [Errno 111] Connection refused>"),
            LinkError::Network(_)
        ));
        let e = classify("WARNING: x\nERROR: something odd\n");
        assert!(matches!(&e, LinkError::Failed(m) if m == "something odd"), "{e:?}");
    }
}

//! Songs from links: metadata and best-audio downloads with yt-dlp, run as a
//! child process through `tokio::process` with an argument list (never a
//! shell) and the URL after `--`, so a link can never become an option.
//!
//! - [`YtDlp::locate`] finds the program: an explicit setting, then
//!   `$STEMROOM_YTDLP`, then the project's environment
//!   what the app and `stemroom links install` install without pip
//!   (`<data>/tools/yt-dlp/bin/yt-dlp`, `~/.local/share/stemroom`, see
//!   [`install`]), then the project's environment
//!   (`<cache>/tools/yt-dlp/bin/yt-dlp`, installed by `scripts/setup.sh` from
//!   PyPI at [`PINNED_VERSION`]), then `PATH`: the first that runs and is
//!   not older than [`MIN_VERSION`].
//! - [`probe`] reads metadata (title, uploader, duration, thumbnail, playlist
//!   entries up to a limit) without downloading.
//! - [`thumbnail`] keeps a queued link's thumbnail image beside the queue.
//! - [`Reach`] says which hosts a fetch for someone else may connect to
//!   (the HTTP service's clients: public addresses only).
//! - [`download`] fetches the best audio-only format into a folder, reporting
//!   percent, speed and ETA parsed from yt-dlp's progress lines. Cancelling, a
//!   stall (no output, or a trickle, for the stall time-out) or an endless
//!   stream (past the size or time limit) kills the whole process group and
//!   removes what was written.
//!
//! Errors are classified from yt-dlp's messages into [`LinkError`] variants a
//! person can act on (not a URL, unsupported site, unavailable or private,
//! network unreachable, yt-dlp missing or too old).

mod address;
mod classify;
mod download;
pub mod install;
mod locate;
mod probe;
pub mod thumbnail;

use std::path::PathBuf;
use std::process::Stdio;
use std::time::Duration;

pub use address::{addresses_of, is_public, Reach};
pub use download::{download, DownloadLimits, DownloadProgress, FORMAT, WALL_TIME_FACTOR};
pub use locate::{status, JsRuntime, VerboseReport, YtDlp, YtDlpStatus, MIN_DENO};
pub use probe::{probe, probe_with, LinkEntry, LinkInfo};

/// The yt-dlp release the project installs and tests against.
pub const PINNED_VERSION: &str = "2026.10.26";
/// Oldest yt-dlp accepted (release dates compare as text, `YYYY.MM.DD`):
/// 2025.11.12, the first with `--js-runtimes` (which every run passes when
/// deno is found, and which YouTube's challenges need); `--no-plugin-dirs`
/// came in 2025.03.21.
pub const MIN_VERSION: &str = "2025.11.12";
/// Longest link accepted, in bytes.
pub const MAX_URL_BYTES: usize = 4096;
/// Playlist entries listed at most (a guard against runaway lists).
pub const DEFAULT_PLAYLIST_LIMIT: usize = 200;
/// A download with no sign of life for this long is stopped: no output
/// from yt-dlp before the transfer, then less than 16 KiB more.
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
    #[error("the network is unreachable, or the site did not answer or failed (try again later): {0}")]
    Network(String),
    #[error("this link is not downloaded: {0}")]
    Refused(String),
    #[error("the download stalled: nothing arrived for {0} s")]
    Stalled(u64),
    #[error("yt-dlp was not found; install it in Settings (Links) or with `stemroom links install`, or choose its program in Settings ({0})")]
    Missing(String),
    #[error("yt-dlp {found} is too old; version {need} or newer is needed (Settings (Links) or `stemroom links install` installs {PINNED_VERSION})")]
    TooOld { found: String, need: String },
    #[error("the download was cancelled")]
    Cancelled,
    #[error(
        "YouTube needs a JavaScript runtime for yt-dlp and none works here: install yt-dlp with deno in \
         Settings (Links) or with `stemroom links install`, or install deno 2.3 or newer ({0})"
    )]
    NeedsJsRuntime(String),
    #[error(
        "yt-dlp could not get YouTube's audio although its JavaScript runtime works ({0}): YouTube changed, and \
         this yt-dlp or its challenge solver scripts are out of date: install a newer one (`pipx install \
         \"yt-dlp[default]\"` or `pipx upgrade yt-dlp`, then choose it in Settings (Links); the deno Stemroom \
         installed serves it), or try again later"
    )]
    OutdatedSolver(String),
    #[error(
        "the site refused the download ({0}); it may be blocking automated downloads from this network: try again \
         later or on another network, try a newer yt-dlp (install it, e.g. `pipx install \"yt-dlp[default]\"`, and \
         choose it in Settings (Links)), or download the audio yourself and add the file"
    )]
    Blocked(String),
    #[error(
        "the site shows this only to signed-in accounts ({0}); Stemroom downloads without one: download the audio \
         yourself and add the file"
    )]
    SignInRequired(String),
    #[error("yt-dlp failed: {0}")]
    Failed(String),
    #[error("{path}: {source}")]
    Io { path: PathBuf, source: std::io::Error },
}

impl LinkError {
    /// The stable code front ends branch on.
    pub fn code(&self) -> stemroom_engine::ErrorCode {
        use stemroom_engine::ErrorCode as C;
        match self {
            LinkError::NotAUrl(_) => C::BadInput,
            LinkError::Missing(_) | LinkError::TooOld { .. } | LinkError::NeedsJsRuntime(_) => C::MissingTool,
            LinkError::Cancelled => C::Cancelled,
            LinkError::Io { .. } => C::Output,
            _ => C::Download,
        }
    }
}

/// Check a link before it goes anywhere near a command line: http(s) only,
/// a host, no whitespace or control characters, not starting with `-`,
/// at most [`MAX_URL_BYTES`]. Returns the trimmed link.
///
/// # Errors
/// [`LinkError::NotAUrl`].
pub fn check_url(raw: &str) -> Result<String, LinkError> {
    let url = trim_link(raw);
    let bad = || LinkError::NotAUrl(url.chars().take(200).collect());
    if url.is_empty() || url.starts_with('-') || url.len() > MAX_URL_BYTES {
        return Err(bad());
    }
    if url.chars().any(|c| c.is_whitespace() || c.is_control() || is_invisible(c)) {
        return Err(bad());
    }
    // yt-dlp's own channel for data between its extractors (extra HTTP
    // headers for some): never from a person's or a client's link.
    if url.contains("__youtubedl_smuggle") {
        return Err(bad());
    }
    // A backslash ends the host for urllib3 (yt-dlp's HTTP client) and for
    // browsers, not for the split below: `http://127.0.0.1\@public.example/`
    // would be checked as public.example and fetch 127.0.0.1. No web link
    // needs one.
    if url.contains('\\') {
        return Err(bad());
    }
    let lower = url.to_ascii_lowercase();
    let rest = lower.strip_prefix("https://").or_else(|| lower.strip_prefix("http://")).ok_or_else(bad)?;
    let host = rest.split(['/', '?', '#']).next().unwrap_or("");
    let host = host.rsplit('@').next().unwrap_or("");
    if host.is_empty() || host.starts_with(':') || host.starts_with('-') {
        return Err(bad());
    }
    // The scheme and host as yt-dlp's extractors match them (their
    // patterns are lower case: `Https://WWW.YouTube.com/…` would fall to
    // the generic extractor); the path and query keep their case (video ids).
    let (scheme, rest) = url.split_once("://").ok_or_else(bad)?;
    let end = rest.find(['/', '?', '#']).unwrap_or(rest.len());
    let (authority, tail) = rest.split_at(end);
    let (user, host) = authority.split_at(authority.rfind('@').map_or(0, |i| i + 1));
    let url = format!("{}://{user}{}{tail}", scheme.to_ascii_lowercase(), host.to_ascii_lowercase());
    Ok(youtube_canonical(&url).unwrap_or(url))
}

/// Query parameters of YouTube links that only say how a link was shared
/// (`si`: the share sheet's per-share tag; `feature`, `pp`, `ab_channel`:
/// where it was clicked): the same video shared twice differs only in them.
const YOUTUBE_SHARE_PARAMS: &[&str] = &["si", "feature", "pp", "ab_channel", "embeds_referring_euri", "source_ve_path"];

/// One spelling of a YouTube video's link, so that the same video added
/// again (shared twice, from `youtu.be`, a Short, YouTube Music, the
/// mobile site, or with the playlist or Mix it was played from: `&list=`,
/// `&index=`, `&start_radio=`, which yt-dlp's `--no-playlist` leaves
/// unused) is found in the queue or library: `https://www.youtube.com/watch?v=<id>`;
/// other YouTube links lose only their share parameters. `None` for other sites (or a port, user info, no host).
fn youtube_canonical(url: &str) -> Option<String> {
    let parsed = url::Url::parse(url).ok()?;
    let host = parsed.host_str()?;
    let short = host == "youtu.be";
    if !short && !matches!(host, "youtube.com" | "www.youtube.com" | "m.youtube.com" | "music.youtube.com") {
        return None;
    }
    if parsed.port().is_some() || !parsed.username().is_empty() {
        return None;
    }
    let query = |key: &str| parsed.query_pairs().find(|(k, _)| k == key).map(|(_, v)| v.into_owned());
    let mut segments = parsed.path_segments()?.filter(|s| !s.is_empty());
    let id = match (short, segments.next()) {
        (true, Some(id)) => Some(id.to_string()),
        (false, Some("watch")) => query("v"),
        (false, Some("shorts" | "live" | "embed" | "v")) => segments.next().map(str::to_string),
        _ => None,
    };
    // YouTube's video ids: 11 characters of base64url.
    let is_id = |id: &str| id.len() == 11 && id.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_');
    match id {
        // (`/embed/videoseries?list=…` is a playlist's player, not a video.)
        Some(id) if is_id(&id) && id != "videoseries" => {
            let mut canonical = url::Url::parse("https://www.youtube.com/watch").ok()?;
            canonical.query_pairs_mut().append_pair("v", &id);
            Some(canonical.to_string())
        }
        _ => {
            let kept: Vec<(String, String)> = parsed
                .query_pairs()
                .filter(|(k, _)| !YOUTUBE_SHARE_PARAMS.contains(&k.as_ref()))
                .map(|(k, v)| (k.into_owned(), v.into_owned()))
                .collect();
            let mut clean = parsed.clone();
            if kept.is_empty() {
                clean.set_query(None);
            } else {
                clean.query_pairs_mut().clear().extend_pairs(kept);
            }
            Some(clean.to_string())
        }
    }
}

/// yt-dlp could not be started: missing (or not a program) is
/// [`LinkError::Missing`], with its fix; anything else (too many open files,
/// no memory) is this machine's trouble, said as it is.
pub(crate) fn spawn_error(yt: &YtDlp, e: &std::io::Error) -> LinkError {
    match e.kind() {
        std::io::ErrorKind::NotFound | std::io::ErrorKind::PermissionDenied => {
            LinkError::Missing(format!("{}: {e}", yt.path.display()))
        }
        _ => LinkError::Failed(format!("yt-dlp could not be started ({}): {e}", yt.path.display())),
    }
}

/// Whether `s` looks like a link (for front ends that take paths or links).
pub fn looks_like_url(s: &str) -> bool {
    let l = trim_link(s).to_ascii_lowercase();
    l.starts_with("http://") || l.starts_with("https://")
}

/// Invisible characters a paste can carry (a byte order mark, zero-width
/// spaces and joiners, a word joiner, bidirectional embeddings, overrides
/// and isolates, which can also make a link or a title read other than it
/// is): Unicode format characters.
fn is_invisible(c: char) -> bool {
    matches!(
        c,
        '\u{feff}'
            | '\u{200b}'..='\u{200f}'
            | '\u{202a}'..='\u{202e}'
            | '\u{2060}'..='\u{2069}'
            | '\u{00ad}'
            | '\u{061c}'
    )
}

/// `raw` without white space or invisible characters at either end.
fn trim_link(raw: &str) -> &str {
    raw.trim_matches(|c: char| c.is_whitespace() || is_invisible(c))
}

pub(crate) fn runtime() -> Result<tokio::runtime::Runtime, LinkError> {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| LinkError::Failed(format!("cannot start the process runtime: {e}")))
}

/// The folder yt-dlp and its helpers run in: one nobody but root writes
/// to, so no module or config file of someone else's sits where Python or
/// a tool might look first (outputs go where `-P` says).
pub(crate) const NEUTRAL_DIR: &str = "/";

pub(crate) fn command(yt: &YtDlp) -> tokio::process::Command {
    let mut cmd = tokio::process::Command::new(&yt.path);
    cmd.current_dir(NEUTRAL_DIR);
    // No user or system config can change what we run; no colours or
    // terminal titles in the output we parse.
    // No user plugins either: only yt-dlp's own extractors run.
    cmd.args(["--ignore-config", "--no-plugin-dirs", "--no-colors", "--socket-timeout", "20"])
        .args(yt.js_runtime_args())
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        // Python's UTF-8 mode: what it prints (titles, JSON, paths) is
        // UTF-8 whatever the locale (a C or Latin-1 locale made `?` of
        // every character it cannot encode).
        .env("PYTHONUTF8", "1")
        .kill_on_drop(true);
    // Its own process group, so a kill reaches yt-dlp's children (ffmpeg).
    #[cfg(unix)]
    cmd.process_group(0);
    // And it dies with the thread that started it, so a Stemroom that is
    // killed or exits at once leaves no download behind (its own group is
    // out of reach of the terminal's Ctrl-C).
    #[cfg(target_os = "linux")]
    // SAFETY: prctl(2) is async-signal-safe; nothing else runs between
    // fork and exec.
    unsafe {
        cmd.pre_exec(|| {
            if libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL) != 0 {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        });
    }
    cmd
}

/// The process groups of the yt-dlp runs in progress (see [`kill_running`]).
static RUNNING: std::sync::Mutex<Vec<i32>> = std::sync::Mutex::new(Vec::new());

/// A yt-dlp process group in [`RUNNING`] while this lives. Dropped, it
/// kills what is left of the group: the child's own `kill_on_drop` reaches
/// yt-dlp only, and a run cut short by a panic or an early return would
/// leave its helpers (deno, ffmpeg) running. (After a normal end the group
/// is empty and the kill finds nothing: Linux reuses no pid while it names
/// a process group.)
pub(crate) struct Running(Option<i32>);

impl Running {
    pub(crate) fn of(child: &tokio::process::Child) -> Running {
        let pid = child.id().and_then(|p| i32::try_from(p).ok());
        if let Some(p) = pid {
            RUNNING.lock().unwrap_or_else(std::sync::PoisonError::into_inner).push(p);
        }
        Running(pid)
    }
}

impl Drop for Running {
    fn drop(&mut self) {
        if let Some(p) = self.0 {
            kill_group(p);
            RUNNING.lock().unwrap_or_else(std::sync::PoisonError::into_inner).retain(|&x| x != p);
        }
    }
}

/// Kill every yt-dlp process group running now, with what yt-dlp started
/// (ffmpeg, deno): for a program about to exit at once (a second Ctrl-C),
/// which would otherwise leave them running.
pub fn kill_running() {
    for &pgid in RUNNING.lock().unwrap_or_else(std::sync::PoisonError::into_inner).iter() {
        kill_group(pgid);
    }
}

/// SIGKILL the process group `pgid`, one [`command`] made (yt-dlp is its
/// leader: its pid is the group's id).
pub(crate) fn kill_group(pgid: i32) {
    #[cfg(unix)]
    // SAFETY: kill(2) on a process group this module created.
    unsafe {
        libc::kill(-pgid, libc::SIGKILL);
    }
}

/// Kill the process group of `child` (yt-dlp and anything it started) and
/// reap it.
pub(crate) async fn kill_tree(child: &mut tokio::process::Child) {
    if let Some(pid) = child.id().and_then(|p| i32::try_from(p).ok()) {
        kill_group(pid);
    }
    let _ = child.kill().await;
}

#[cfg(test)]
mod tests {
    use super::classify::classify;
    use super::download::parse_progress;
    use super::*;

    /// The same YouTube video however it was shared is one link, so adding
    /// it again finds it in the queue or library.
    #[test]
    fn a_youtube_video_has_one_link_however_it_was_shared() {
        let watch = "https://www.youtube.com/watch?v=dQw4w9WgXcQ";
        for shared in [
            "https://youtu.be/dQw4w9WgXcQ?si=Xb4c_9kLmN0pQrSt",
            "https://youtu.be/dQw4w9WgXcQ",
            "https://www.youtube.com/watch?v=dQw4w9WgXcQ&si=abc&feature=shared",
            "https://youtube.com/watch?feature=youtu.be&v=dQw4w9WgXcQ",
            "https://m.youtube.com/watch?v=dQw4w9WgXcQ&pp=ygUE",
            "https://music.youtube.com/watch?v=dQw4w9WgXcQ&si=zz",
            "https://www.youtube.com/shorts/dQw4w9WgXcQ?feature=share",
            "https://www.youtube.com/live/dQw4w9WgXcQ",
            "HTTPS://YOUTU.BE/dQw4w9WgXcQ?t=42",
        ] {
            assert_eq!(check_url(shared).unwrap(), watch, "{shared}");
        }
        // The playlist or Mix it was played from is no part of the song
        // (yt-dlp runs with `--no-playlist`): the same video from a Mix is
        // found as already queued.
        for played_from in [
            "https://www.youtube.com/watch?v=dQw4w9WgXcQ&list=PLx-1_2&index=3&si=q",
            "https://www.youtube.com/watch?v=dQw4w9WgXcQ&list=RDdQw4w9WgXcQ&start_radio=1",
            "https://music.youtube.com/watch?v=dQw4w9WgXcQ&list=RDAMVMdQw4w9WgXcQ",
        ] {
            assert_eq!(check_url(played_from).unwrap(), watch, "{played_from}");
        }
        assert_eq!(
            check_url("https://www.youtube.com/embed/videoseries?list=PLx-1_2&si=q").unwrap(),
            "https://www.youtube.com/embed/videoseries?list=PLx-1_2"
        );
        // Other YouTube links lose only their share parameters.
        assert_eq!(
            check_url("https://www.youtube.com/playlist?list=PLx-1_2&si=q").unwrap(),
            "https://www.youtube.com/playlist?list=PLx-1_2"
        );
        assert_eq!(check_url("https://www.youtube.com/@artist?si=q").unwrap(), "https://www.youtube.com/@artist");
        // Not an id: left as it is. Other sites: left as they are.
        assert_eq!(check_url("https://youtu.be/short").unwrap(), "https://youtu.be/short");
        assert_eq!(
            check_url("https://example.com/watch?v=dQw4w9WgXcQ&si=1").unwrap(),
            "https://example.com/watch?v=dQw4w9WgXcQ&si=1"
        );
        assert_eq!(
            check_url("https://www.youtube.com:8443/watch?v=dQw4w9WgXcQ").unwrap(),
            "https://www.youtube.com:8443/watch?v=dQw4w9WgXcQ"
        );
    }

    #[test]
    fn links_are_checked_before_any_command_line() {
        assert_eq!(check_url("  https://example.com/watch?v=1 ").unwrap(), "https://example.com/watch?v=1");
        assert!(check_url("http://127.0.0.1:8080/a.wav").is_ok());
        // Scheme and host as yt-dlp's extractors match them; the rest kept.
        assert_eq!(
            check_url("Https://WWW.YouTube.com/watch?v=AbC_d").unwrap(),
            "https://www.youtube.com/watch?v=AbC_d"
        );
        assert_eq!(check_url("HTTP://User@Host.EXAMPLE:8080").unwrap(), "http://User@host.example:8080");
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

    /// What yt-dlp 2026.10.26 prints on YouTube without a JavaScript
    /// runtime (`yt_dlp/extractor/youtube`, and user reports on its tracker).
    #[test]
    fn a_missing_javascript_runtime_is_named() {
        let no_runtime = "WARNING: [youtube] No supported JavaScript runtime could be found. Only deno is enabled by default; to use another runtime add  --js-runtimes RUNTIME[:PATH]  to your command/config. YouTube extraction without a JS runtime has been deprecated, and some formats may be missing. See  https://github.com/yt-dlp/yt-dlp/wiki/EJS  for details on installing one\nERROR: [youtube] dQw4w9WgXcQ: Requested format is not available. Use --list-formats for a list of available formats\n";
        assert!(matches!(classify(no_runtime), LinkError::NeedsJsRuntime(_)), "{:?}", classify(no_runtime));
        let solver = "WARNING: [youtube] dQw4w9WgXcQ: n challenge solving failed: Some formats may be missing. Ensure you have a supported JavaScript runtime and challenge solver script distribution installed.\nERROR: [youtube] dQw4w9WgXcQ: Requested format is not available.\n";
        assert!(matches!(classify(solver), LinkError::NeedsJsRuntime(_)));
        assert_eq!(classify(solver).code(), stemroom_engine::ErrorCode::MissingTool);
        // When yt-dlp prints only the error (no warning about the runtime): on YouTube without a
        // runtime it is still the runtime; elsewhere it is a missing format.
        let bare = "ERROR: [youtube] dQw4w9WgXcQ: Requested format is not available. Use --list-formats for a list of available formats\n";
        let without = YtDlp { path: "yt-dlp".into(), version: PINNED_VERSION.into(), js_runtime: None };
        let e = super::classify::classify_run(bare, "https://www.youtube.com/watch?v=dQw4w9WgXcQ", &without);
        assert!(matches!(e, LinkError::NeedsJsRuntime(_)), "{e:?}");
        let e = super::classify::classify_run(bare, "https://example.com/song", &without);
        assert!(!matches!(e, LinkError::NeedsJsRuntime(_)), "{e:?}");
    }

    #[test]
    fn only_a_real_ytdlp_is_accepted() {
        // python3 answers --version, but not with a release date.
        let python = YtDlp::locate(Some(std::path::Path::new("/usr/bin/python3")));
        assert!(matches!(&python, Err(LinkError::Missing(m)) if m.contains("not yt-dlp")), "{python:?}");
        let relative = YtDlp::locate(Some(std::path::Path::new("bin/yt-dlp")));
        assert!(matches!(&relative, Err(LinkError::Missing(m)) if m.contains("absolute")), "{relative:?}");
        assert!(locate::is_release_version("2026.10.26") && locate::is_release_version("2025.11.13.232858"));
        // A release without `--js-runtimes` (which every run passes) is too old.
        let dir = tempfile::tempdir().unwrap();
        for (version, ok) in [("2025.06.30", false), ("2025.11.12", true)] {
            let fake = dir.path().join(format!("yt-dlp-{version}"));
            std::fs::write(&fake, format!("#!/bin/sh\necho {version}\n")).unwrap();
            std::fs::set_permissions(&fake, std::os::unix::fs::PermissionsExt::from_mode(0o755)).unwrap();
            let found = YtDlp::locate(Some(&fake));
            if ok {
                assert_eq!(found.unwrap().version, version);
            } else {
                assert!(matches!(&found, Err(LinkError::TooOld { found, .. }) if found == version), "{found:?}");
            }
        }
        assert!(!locate::is_release_version("Python 3.11.2") && !locate::is_release_version("2026.1.2"));
    }

    #[test]
    fn every_run_carries_the_javascript_runtime() {
        let yt = YtDlp {
            path: "/opt/yt-dlp".into(),
            version: PINNED_VERSION.into(),
            js_runtime: Some(JsRuntime { path: "/opt/bin/deno".into(), version: "2.9.8".into() }),
        };
        let args: Vec<String> = command(&yt).as_std().get_args().map(|a| a.to_string_lossy().into_owned()).collect();
        let at = args.iter().position(|a| a == "--js-runtimes").expect("--js-runtimes");
        assert_eq!(args[at + 1], "deno:/opt/bin/deno");
        assert!(args.contains(&"--ignore-config".to_string()));
    }

    /// A probe that a slow site holds (here a yt-dlp that never answers)
    /// stops within a moment of a cancel (Ctrl-C in the CLI), yt-dlp with it.
    #[test]
    fn a_probe_stops_when_cancelled() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let script = dir.path().join("yt-dlp");
        let pid_file = dir.path().join("pid");
        std::fs::write(&script, format!("#!/bin/sh\necho $$ > '{}'\nexec sleep 30\n", pid_file.display())).unwrap();
        std::fs::set_permissions(&script, std::fs::Permissions::from_mode(0o755)).unwrap();
        let yt = YtDlp { path: script, version: PINNED_VERSION.into(), js_runtime: None };
        let t0 = std::time::Instant::now();
        let cancelled = || t0.elapsed() > std::time::Duration::from_millis(500);
        let e = probe_with(&yt, "https://example.com/song", 10, &cancelled).unwrap_err();
        assert!(matches!(e, LinkError::Cancelled), "{e}");
        assert!(t0.elapsed() < std::time::Duration::from_secs(5), "{:?}", t0.elapsed());
        let pid: i32 = std::fs::read_to_string(&pid_file).unwrap().trim().parse().unwrap();
        std::thread::sleep(std::time::Duration::from_millis(200));
        assert!(stemroom_testkit::process_gone(pid), "yt-dlp still runs");
    }

    #[test]
    fn progress_lines_parse() {
        let (bytes, complete, p) = parse_progress("[stemroom-progress] 5000 10000 NA 2500.5 2").unwrap();
        assert_eq!((bytes, complete), (5000.0, false));
        assert_eq!(p, DownloadProgress { percent: Some(50.0), bytes_per_second: Some(2500.5), eta_seconds: Some(2.0) });
        let (bytes, complete, p) = parse_progress("[stemroom-progress] 300 NA 1200 NA NA").unwrap();
        assert_eq!((bytes, complete, p.percent), (300.0, false, Some(25.0)));
        // Past its estimate: 100 %, not complete (bytes still flow).
        let (_, complete, p) = parse_progress("[stemroom-progress] 1300 NA 1200 NA NA").unwrap();
        assert_eq!((complete, p.percent), (false, Some(100.0)));
        let (_, complete, _) = parse_progress("[stemroom-progress] 10000 10000 NA NA NA").unwrap();
        assert!(complete, "all of an exact size");
        let (bytes, complete, p) = parse_progress("[stemroom-progress] 7000000 NA NA 16000 NA").unwrap();
        assert_eq!((bytes, complete, p.percent), (7e6, false, None), "an endless stream: bytes, no percent");
        assert_eq!(parse_progress("[stemroom-progress] NA NA NA NA NA"), None);
        assert_eq!(parse_progress("[download] 50%"), None);
    }

    /// YouTube's messages of 2025-2026 (yt-dlp's tracker) that are not a
    /// missing video, and yt-dlp's advice for its own command line left out.
    #[test]
    fn refusals_that_pass_are_not_called_missing() {
        let limited = "ERROR: [youtube] abc: Video unavailable. This content isn't available, try again later. The current session has been rate-limited by YouTube for up to an hour. It is recommended to use `-t sleep` to add a delay between video requests to avoid exceeding the rate limit.";
        assert!(matches!(classify(limited), LinkError::Blocked(_)), "{:?}", classify(limited));
        let app = "ERROR: [youtube] abc: The following content is not available on this app.. Watch on the latest version of YouTube.";
        assert!(matches!(classify(app), LinkError::Blocked(_)), "{:?}", classify(app));
        let geo = "ERROR: [youtube] abc: The uploader has not made this video available in your country";
        assert!(matches!(classify(geo), LinkError::Blocked(_)), "{:?}", classify(geo));
        let label = "ERROR: [youtube] abc: Video unavailable. This video contains content from SME, who has blocked it in your country on copyright grounds";
        assert!(matches!(classify(label), LinkError::Blocked(_)), "{:?}", classify(label));
        let captcha = "ERROR: [youtube] abc: YouTube is requiring a captcha challenge before playback";
        assert!(matches!(classify(captcha), LinkError::Blocked(_)), "{:?}", classify(captcha));
        let premiere = "ERROR: [youtube] abc: Premieres in 6 hours";
        assert!(matches!(classify(premiere), LinkError::Refused(_)), "{:?}", classify(premiere));
        let live = "ERROR: [youtube] abc: This live event will begin in 5 hours.";
        assert!(matches!(classify(live), LinkError::Refused(_)), "{:?}", classify(live));
        let members = "ERROR: [youtube] abc: Join this channel to get access to members-only content like this video, and other exclusive perks.";
        assert!(matches!(classify(members), LinkError::SignInRequired(_)), "{:?}", classify(members));
        let full = "ERROR: unable to write data: [Errno 28] No space left on device";
        let e = classify(full);
        assert!(matches!(e, LinkError::Io { .. }) && e.code() == stemroom_engine::ErrorCode::Output, "{e:?}");
        // With deno there and working, YouTube's "no format" is a yt-dlp
        // behind YouTube, not a missing runtime or a video without audio.
        let with = YtDlp {
            path: "yt-dlp".into(),
            version: PINNED_VERSION.into(),
            js_runtime: Some(JsRuntime { path: "/opt/bin/deno".into(), version: "2.9.8".into() }),
        };
        let url = "https://www.youtube.com/watch?v=dQw4w9WgXcQ";
        let solver = "WARNING: [youtube] dQw4w9WgXcQ: n challenge solving failed: Some formats may be missing. Ensure you have a supported JavaScript runtime and challenge solver script distribution installed.\nERROR: [youtube] dQw4w9WgXcQ: Requested format is not available. Use --list-formats for a list of available formats\n";
        let e = super::classify::classify_run(solver, url, &with);
        assert!(matches!(e, LinkError::OutdatedSolver(_)), "{e:?}");
        assert!(!e.to_string().contains("install deno") && !e.to_string().contains("--list-formats"), "{e}");
        let bare = "ERROR: [youtube] dQw4w9WgXcQ: Requested format is not available. Use --list-formats for a list of available formats\n";
        assert!(matches!(super::classify::classify_run(bare, url, &with), LinkError::OutdatedSolver(_)));
        let other = super::classify::classify_run(bare, "https://example.com/song", &with);
        assert!(matches!(other, LinkError::NoMedia(_)), "{other:?}");
        let e = classify("ERROR: [generic] x: Unable to extract data; please report this issue on  https://github.com/yt-dlp/yt-dlp/issues?q= , filling out the appropriate issue template. Confirm you are on the latest version using  yt-dlp -U");
        assert!(!e.to_string().contains("report this issue") && !e.to_string().contains("-U"), "{e}");
    }

    #[test]
    fn pasted_links_lose_their_invisible_characters() {
        assert_eq!(check_url("\u{feff}https://youtu.be/abc\u{200b}").unwrap(), "https://youtu.be/abc");
        assert!(looks_like_url("\u{200b}https://youtu.be/abc"));
        assert!(check_url("https://e.com/a\u{200b}b").is_err(), "inside a link: refused");
        assert!(check_url("https://e.com/a\u{202e}b").is_err(), "a right-to-left override: refused");
        assert!(check_url("http://127.0.0.1\\@public.example/").is_err(), "a backslash: refused");
        assert!(check_url("https://e.com/v#__youtubedl_smuggle=%7B%22http_headers%22%3A%7B%7D%7D").is_err());
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
        // The site's own failures and dropped connections: another time
        // may work (yt-dlp's `HTTPError` and `TransportError` texts).
        for failed in [
            "ERROR: [youtube] abc: Unable to download API page: HTTP Error 503: Service Unavailable",
            "ERROR: [generic] x: HTTP Error 500: Internal Server Error",
            "ERROR: [soundcloud] x: HTTP Error 502: Bad Gateway",
            "ERROR: unable to download video data: ('Connection aborted.', ConnectionResetError(104, 'Connection reset by peer'))",
            "ERROR: [vimeo] x: Unable to download JSON metadata: Remote end closed connection without response",
        ] {
            assert!(matches!(classify(failed), LinkError::Network(_)), "{failed}: {:?}", classify(failed));
        }
        // A runtime warning does not turn an unrelated failure into a
        // missing runtime.
        let postprocess = "WARNING: [youtube] No supported JavaScript runtime could be found.\nERROR: Postprocessing: Conversion failed!\n";
        assert!(matches!(classify(postprocess), LinkError::Failed(_)), "{:?}", classify(postprocess));
        // YouTube's bot check and age gate (yt_dlp/extractor/youtube): said
        // as such, without yt-dlp's advice about --cookies.
        let bot = "ERROR: [youtube] dQw4w9WgXcQ: Sign in to confirm you\u{2019}re not a bot. Use --cookies-from-browser or --cookies for the authentication. See  https://github.com/yt-dlp/yt-dlp/wiki/FAQ#how-do-i-pass-cookies-to-yt-dlp  for how to manually pass cookies.";
        let e = classify(bot);
        assert!(matches!(&e, LinkError::Blocked(_)) && !e.to_string().contains("--cookies"), "{e}");
        let age = "ERROR: [youtube] x: Sign in to confirm your age. This video may be inappropriate for some users. Use --cookies-from-browser or --cookies for the authentication.";
        let e = classify(age);
        assert!(matches!(&e, LinkError::SignInRequired(_)) && !e.to_string().contains("--cookies"), "{e}");
        // A missing format is no missing video; a 403 is a refusal.
        let format =
            "ERROR: [generic] x: Requested format is not available. Use --list-formats for a list of available formats";
        assert!(matches!(classify(format), LinkError::NoMedia(_)), "{:?}", classify(format));
        let forbidden = "ERROR: unable to download video data: HTTP Error 403: Forbidden";
        assert!(matches!(classify(forbidden), LinkError::Blocked(_)), "{:?}", classify(forbidden));
        // The error line decides, not a warning before it; a runtime warning
        // explains only a missing format.
        let retried = "WARNING: [youtube] x: HTTP Error 403: Forbidden. Retrying fragment 1 (1/10)...\nERROR: [youtube] x: Video unavailable. This video has been removed by the uploader\n";
        assert!(matches!(classify(retried), LinkError::Unavailable(_)), "{:?}", classify(retried));
        let removed_without_runtime = "WARNING: [youtube] No supported JavaScript runtime could be found.\nERROR: [youtube] x: Private video. Sign in if you've been granted access to this video\n";
        let e = classify(removed_without_runtime);
        assert!(matches!(e, LinkError::Unavailable(_)), "{e:?}");
        let e = classify("WARNING: x\nERROR: something odd\n");
        assert!(matches!(&e, LinkError::Failed(m) if m == "something odd"), "{e:?}");
    }
}

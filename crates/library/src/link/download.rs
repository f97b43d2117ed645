//! Best-audio downloads with progress, stall time-out and cancel.

use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Serialize;
use tokio::io::{AsyncBufReadExt, BufReader};

use super::classify::classify_run;
use super::{check_url, command, kill_tree, runtime, LinkError, YtDlp, PROGRESS_MARK};

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
/// (`NA` for unknown fields).
pub(crate) fn parse_progress(line: &str) -> Option<DownloadProgress> {
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

/// yt-dlp's format selection: the best audio-only format, preferring Opus
/// (YouTube's format 251, Opus in WebM, its best audio) and then AAC-LC in
/// M4A (format 140), both decoded without ffmpeg; anything else after them.
pub const FORMAT: &str = "bestaudio[acodec^=opus]/bestaudio[acodec^=mp4a.40.2]/bestaudio[ext=m4a]/bestaudio/best";

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
    cmd.args(["--no-playlist", "--newline", "--progress", "--no-warnings", "-f", FORMAT])
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
        return Err(classify_run(&err_text, url, yt));
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

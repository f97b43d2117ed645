//! A link's metadata, without downloading.

use serde::Serialize;

use super::classify::classify_run;
use super::{check_url, command, runtime, LinkError, YtDlp, PROBE_TIMEOUT};

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

fn text(v: &serde_json::Value, key: &str) -> Option<String> {
    v.get(key).and_then(|x| x.as_str()).map(str::to_string).filter(|s| !s.is_empty())
}

/// A title or a name from the page, as people see it in the queue and the
/// library: without control characters and bounded like tags' titles
/// ([`crate::intake::clean_title`]); `None` when nothing is left.
fn label(v: &serde_json::Value, key: &str) -> Option<String> {
    v.get(key).and_then(|x| x.as_str()).and_then(crate::intake::clean_title)
}

/// Refuse a live stream, or one not started yet (a premiere, a scheduled
/// stream), from yt-dlp's metadata (`is_live`, `live_status`): its download
/// would run until the stream ends, or fail, long after it was queued.
fn not_live(v: &serde_json::Value) -> Result<(), LinkError> {
    let status = text(v, "live_status");
    if v.get("is_live").and_then(serde_json::Value::as_bool) == Some(true) || status.as_deref() == Some("is_live") {
        return Err(LinkError::Refused(
            "it is a live stream: Stemroom separates recorded songs (add it once the stream has ended and is saved)"
                .into(),
        ));
    }
    if status.as_deref() == Some("is_upcoming") {
        return Err(LinkError::Refused(
            "it has not started yet (a premiere or a scheduled stream): add it once it has aired".into(),
        ));
    }
    Ok(())
}

/// Metadata of `url` without downloading: a single item's title, uploader,
/// duration and thumbnail, or a playlist's first `limit` entries.
///
/// # Errors
/// [`LinkError`]: bad link, site errors, network, time-out (as `Network`).
pub fn probe(yt: &YtDlp, url: &str, limit: usize) -> Result<LinkInfo, LinkError> {
    probe_with(yt, url, limit, &|| false)
}

/// [`probe`], asking `cancelled` every 100 ms while yt-dlp runs (it may
/// take up to its time-out, 60 s, on a slow site): yt-dlp is then stopped.
///
/// # Errors
/// As [`probe`]; [`LinkError::Cancelled`].
pub fn probe_with(yt: &YtDlp, url: &str, limit: usize, cancelled: &dyn Fn() -> bool) -> Result<LinkInfo, LinkError> {
    let url = check_url(url)?;
    let limit = limit.max(1);
    runtime()?.block_on(async {
        let mut cmd = command(yt);
        // `--no-playlist`: a song's link that also names a playlist (a
        // shared `watch?v=…&list=…`) is that song, as its download is.
        cmd.args(["--dump-single-json", "--flat-playlist", "--no-playlist"])
            .args(["--playlist-end", &(limit + 1).to_string()])
            .arg("--")
            .arg(&url);
        let child = cmd.spawn().map_err(|e| super::spawn_error(yt, &e))?;
        // Dropped on the way out, it kills yt-dlp and what it started (on
        // a time-out too: dropping the child kills only yt-dlp itself).
        let _running = super::Running::of(&child);
        let deadline = tokio::time::Instant::now() + PROBE_TIMEOUT;
        let output = child.wait_with_output();
        tokio::pin!(output);
        let out = loop {
            tokio::select! {
                out = &mut output => break out.map_err(|e| LinkError::Failed(e.to_string()))?,
                () = tokio::time::sleep(std::time::Duration::from_millis(100)) => {
                    if cancelled() {
                        return Err(LinkError::Cancelled);
                    }
                    if tokio::time::Instant::now() >= deadline {
                        return Err(LinkError::Network(format!("no answer within {} s", PROBE_TIMEOUT.as_secs())));
                    }
                }
            }
        };
        if !out.status.success() {
            return Err(classify_run(&String::from_utf8_lossy(&out.stderr), &url, yt));
        }
        let v: serde_json::Value =
            serde_json::from_slice(&out.stdout).map_err(|e| LinkError::Failed(format!("unreadable metadata: {e}")))?;
        let is_playlist = v.get("_type").and_then(|t| t.as_str()) == Some("playlist");
        if !is_playlist {
            not_live(&v)?;
        }
        let (entries, truncated) = entries_of(&v, limit);
        Ok(LinkInfo {
            // A page with no title is named by its link, cut and cleaned
            // as titles are (a link may be 4096 bytes).
            title: label(&v, "title").or_else(|| crate::intake::clean_title(&url)).unwrap_or_else(|| "Untitled".into()),
            uploader: label(&v, "uploader").or_else(|| label(&v, "channel")),
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

/// A playlist's entries from yt-dlp's `--flat-playlist` JSON: at most
/// `limit`, each video once (a playlist may hold the same one twice; it
/// is one song, and the list names entries by URL), and whether more
/// were listed than `limit` (yt-dlp is asked for `limit + 1`).
fn entries_of(v: &serde_json::Value, limit: usize) -> (Vec<LinkEntry>, bool) {
    let mut seen = std::collections::HashSet::new();
    let mut entries: Vec<LinkEntry> = v
        .get("entries")
        .and_then(|e| e.as_array())
        .map(|a| {
            a.iter()
                .filter_map(|e| {
                    let u = text(e, "url").or_else(|| text(e, "webpage_url"))?;
                    Some(LinkEntry {
                        title: label(e, "title").unwrap_or_else(|| u.clone()),
                        url: u,
                        duration_seconds: e.get("duration").and_then(|d| d.as_f64()),
                    })
                })
                .collect()
        })
        .unwrap_or_default();
    // (Every entry yt-dlp listed, with an address or not.)
    let listed = v.get("entries").and_then(|e| e.as_array()).map_or(0, Vec::len);
    entries.retain(|e| seen.insert(e.url.clone()));
    // More listed than the limit (yt-dlp is asked for one more): more may
    // follow, even when repeats brought the distinct ones under it.
    let truncated = listed > limit;
    entries.truncate(limit);
    (entries, truncated)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn live_and_upcoming_streams_are_refused_before_they_are_queued() {
        let live = serde_json::json!({"title": "Radio", "is_live": true, "live_status": "is_live"});
        assert!(matches!(not_live(&live), Err(LinkError::Refused(m)) if m.contains("live stream")));
        let status_only = serde_json::json!({"live_status": "is_live"});
        assert!(not_live(&status_only).is_err());
        let premiere = serde_json::json!({"is_live": false, "live_status": "is_upcoming"});
        assert!(matches!(not_live(&premiere), Err(LinkError::Refused(m)) if m.contains("not started yet")));
        for recorded in ["not_live", "was_live", "post_live"] {
            assert!(not_live(&serde_json::json!({"is_live": false, "live_status": recorded})).is_ok(), "{recorded}");
        }
        assert!(not_live(&serde_json::json!({"title": "no live fields"})).is_ok());
    }

    #[test]
    fn a_playlist_lists_each_video_once() {
        let v = serde_json::json!({"_type": "playlist", "entries": [
            {"url": "https://www.youtube.com/watch?v=a", "title": "A", "duration": 201.0},
            {"url": "https://www.youtube.com/watch?v=b", "title": "B"},
            {"url": "https://www.youtube.com/watch?v=a", "title": "A again"},
            {"title": "no address"},
            {"webpage_url": "https://www.youtube.com/watch?v=c"},
        ]});
        let (entries, truncated) = entries_of(&v, 10);
        let urls: Vec<&str> = entries.iter().map(|e| e.url.as_str()).collect();
        assert_eq!(
            urls,
            [
                "https://www.youtube.com/watch?v=a",
                "https://www.youtube.com/watch?v=b",
                "https://www.youtube.com/watch?v=c"
            ]
        );
        assert_eq!((entries[0].title.as_str(), entries[0].duration_seconds), ("A", Some(201.0)));
        assert_eq!(entries[2].title, "https://www.youtube.com/watch?v=c");
        assert!(!truncated);
        // yt-dlp is asked for one more than the limit: more listed is "truncated".
        let (entries, truncated) = entries_of(&v, 2);
        assert_eq!(entries.len(), 2);
        assert!(truncated);
        // Repeats go before the limit counts: a, b, c fill a limit of 3.
        let (entries, truncated) = entries_of(&v, 3);
        assert_eq!(entries.len(), 3);
        assert!(truncated, "five listed");
    }
}

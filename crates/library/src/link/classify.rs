//! yt-dlp's error messages, as errors a person can act on.

use super::LinkError;

/// Classify yt-dlp's error output.
pub(crate) fn classify(stderr: &str) -> LinkError {
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
    // The error lines decide (a warning about a retried fragment's 403 is
    // not why it failed); without any, the whole output.
    let all = stderr.to_ascii_lowercase();
    let errors: Vec<&str> = stderr.lines().filter(|l| l.contains("ERROR")).collect();
    let l = if errors.is_empty() { all.clone() } else { errors.join("\n").to_ascii_lowercase() };
    // yt-dlp's messages (yt_dlp/utils/_utils.py and the extractors), first match wins.
    type Make = fn(String) -> LinkError;
    const RULES: &[(&[&str], Make)] = &[
        (&["unsupported url"], LinkError::UnsupportedSite),
        // YouTube's bot check and age gate ("Sign in to confirm you’re not a
        // bot" / "… your age"); yt-dlp's advice about --cookies is not for
        // Stemroom's users.
        (&["confirm you\u{2019}re not a bot", "confirm you're not a bot", "not a bot"], |_| {
            LinkError::Blocked("it asks to confirm this is not a bot".into())
        }),
        (&["confirm your age", "age-restricted", "age restricted", "inappropriate for some users"], |_| {
            LinkError::SignInRequired("age-restricted".into())
        }),
        // yt-dlp 2025.11.12+ on YouTube without a working JavaScript runtime
        // or solver scripts (yt-dlp wiki, "EJS").
        (RUNTIME_NEEDLES, LinkError::NeedsJsRuntime),
        // Before "not available", which "Requested format is not available"
        // also contains.
        (&["no video formats found", "requested format is not available"], LinkError::NoMedia),
        // A refusal, not a missing video (YouTube answers 403 to clients it
        // throttles or whose signature it rejects).
        (&["http error 403", "http error 429", "too many requests"], |m| LinkError::Blocked(m)),
        (
            &[
                "http error 404",
                "http error 410",
                "video unavailable",
                "private video",
                "not available",
                "has been removed",
            ],
            LinkError::Unavailable,
        ),
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
    let found = make(last);
    // A JavaScript runtime or challenge solver that failed is said in a
    // warning; the error is then only that no format was left.
    let runtime_warned = RUNTIME_NEEDLES.iter().any(|n| all.contains(n));
    match found {
        LinkError::NoMedia(m) | LinkError::Failed(m) if runtime_warned => LinkError::NeedsJsRuntime(m),
        other => other,
    }
}

/// What yt-dlp says when YouTube's JavaScript challenges cannot be solved.
const RUNTIME_NEEDLES: &[&str] = &["no supported javascript runtime", "challenge solving failed", "javascript runtime"];

/// Whether `url` is YouTube's (its challenges need a JavaScript runtime).
fn is_youtube(url: &str) -> bool {
    let host = url.split("://").nth(1).unwrap_or("").split(['/', '?', '#']).next().unwrap_or("");
    let host = host.rsplit('@').next().unwrap_or(host).split(':').next().unwrap_or("").to_ascii_lowercase();
    ["youtube.com", "youtu.be", "youtube-nocookie.com"].iter().any(|d| host == *d || host.ends_with(&format!(".{d}")))
}

/// Classify a failure of yt-dlp run on `url` with `yt`: without a
/// JavaScript runtime, YouTube's "no formats" is the missing runtime.
pub(crate) fn classify_run(stderr: &str, url: &str, yt: &super::YtDlp) -> LinkError {
    match classify(stderr) {
        LinkError::NoMedia(m) | LinkError::Unavailable(m)
            if yt.js_runtime.is_none() && is_youtube(url) && m.to_ascii_lowercase().contains("format") =>
        {
            LinkError::NeedsJsRuntime(m)
        }
        other => other,
    }
}

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
    let last = without_cli_advice(&last);
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
        // Members-only and Premium-only videos.
        (&["join this channel", "members-only", "channel's members", "youtube premium", "premium members"], |_| {
            LinkError::SignInRequired("for the channel's members or Premium subscribers only".into())
        }),
        // A premiere or a live stream that has not begun.
        (&["live event will begin", "premieres in", "premiere will begin", "will begin in", "is upcoming"], |_| {
            LinkError::Refused(
                "it has not started yet (a premiere or an upcoming live stream): try again once it has aired".into(),
            )
        }),
        // YouTube's session rate limit ("…has been rate-limited by YouTube
        // for up to an hour"), its refusals of a client or a country: not a
        // missing video (before the "not available" rule below), and
        // another time or network may work.
        (
            &[
                "rate-limited",
                "rate limited",
                "try again later",
                "not available on this app",
                "available in your country",
                // A label's copyright block ("Video unavailable. This video
                // contains content from SME, who has blocked it in your
                // country on copyright grounds"): another country may work.
                "in your country",
                "copyright grounds",
                // "YouTube is requiring a captcha challenge before playback".
                "captcha",
                "from your location",
                "geo restrict",
                "geo-restrict",
            ],
            |m| LinkError::Blocked(m),
        ),
        (&["no space left on device", "errno 28"], |m| LinkError::Io {
            path: "the download folder".into(),
            source: std::io::Error::new(std::io::ErrorKind::StorageFull, m),
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
                // A fragment of a stream still missing after its retries
                // (`--abort-on-unavailable-fragments`: "fragment 2 not
                // found, unable to continue").
                "unable to continue",
                // The site's own failures (another time may work) and
                // connections it dropped (yt-dlp's `HTTPError` and
                // `TransportError` texts).
                "http error 500",
                "http error 502",
                "http error 503",
                "http error 504",
                "unable to download api page",
                "connection reset",
                "connection aborted",
                "remote end closed connection",
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
    // warning; the error is then only that no format was left, or that a
    // signature could not be read (not a post-processing failure).
    let runtime_warned = RUNTIME_NEEDLES.iter().any(|n| all.contains(n));
    let about_formats = |m: &str| {
        let m = m.to_ascii_lowercase();
        ["format", "signature", "nsig", "challenge", "player"].iter().any(|n| m.contains(n))
    };
    match found {
        LinkError::NoMedia(m) if runtime_warned => LinkError::NeedsJsRuntime(m),
        LinkError::Failed(m) if runtime_warned && about_formats(&m) => LinkError::NeedsJsRuntime(m),
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
        // A runtime is there and works (found and run at locate): the
        // solver scripts or yt-dlp itself are behind YouTube, or YouTube
        // offers only formats this yt-dlp cannot fetch (SABR).
        LinkError::NeedsJsRuntime(m) if yt.js_runtime.is_some() => LinkError::OutdatedSolver(m),
        LinkError::NoMedia(m) if yt.js_runtime.is_some() && is_youtube(url) => LinkError::OutdatedSolver(m),
        other => other,
    }
}

/// yt-dlp's advice for its own command line ("Use --list-formats…",
/// "Confirm you are on the latest version using yt-dlp -U", "please report
/// this issue…") cut from `message`: Stemroom's users run no yt-dlp command.
fn without_cli_advice(message: &str) -> String {
    const TAILS: &[&str] = &[
        "use --list-formats",
        "confirm you are on the latest version",
        "please report this issue",
        "; please report",
        "use --cookies",
        "see  https://github.com/yt-dlp",
        "see https://github.com/yt-dlp",
    ];
    let lower = message.to_ascii_lowercase();
    let cut = TAILS.iter().filter_map(|t| lower.find(t)).min().unwrap_or(message.len());
    let kept = message[..cut].trim_end().trim_end_matches(['.', ';', ',']).trim_end();
    if kept.is_empty() {
        message.trim().to_string()
    } else {
        kept.to_string()
    }
}

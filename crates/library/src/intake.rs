//! Turning what a person drops or picks (files and folders) into queued jobs.
//!
//! Each path given explicitly is probed (headers only, see
//! [`decode::probe`]); one that is not decodable audio is refused with the
//! reason. Folders are searched (depth at most [`MAX_DEPTH`], at most
//! [`MAX_FILES`] files, sorted by path) for files with an audio extension;
//! other files inside folders are skipped and listed in
//! [`AddResult::skipped`] (hidden files silently). A song's title comes from
//! its tags ("Artist - Title") when it has a title tag, else from its file
//! name. A file or link already queued or in the library is not added again
//! unless asked ([`AddOptions::allow_duplicates`]); it comes back in
//! [`AddResult::duplicates`] with the job it would duplicate (a link is
//! compared as [`link::check_url`] writes it: the same link pasted twice,
//! not two links of one video).
//!
//! Links (`http://`, `https://`) are checked ([`link::check_url`]) and their
//! metadata read with yt-dlp ([`link::probe`]) before they are queued, so the
//! queue shows the title and length at once; the audio is downloaded when
//! the job runs. A playlist is not queued: it comes back in
//! [`AddResult::playlists`] for the person to choose entries
//! ([`add_links`]).

use std::path::{Path, PathBuf};

use serde::Serialize;

use stemroom_engine::audio::decode;

use crate::link::{self, LinkEntry, LinkInfo};
use crate::queue::{Job, JobOptions, JobSource, Queue, QueueError};
use crate::worker::title_for;

/// How deep folders are searched.
pub const MAX_DEPTH: usize = 4;
/// At most this many files are added from one drop.
pub const MAX_FILES: usize = 500;
/// At most this many links are probed in one call (each runs yt-dlp, up to
/// a minute); the rest are refused in [`AddResult::rejected`].
pub const MAX_LINKS: usize = 50;
/// Skipped (non-audio) files named in [`AddResult::skipped`].
pub const MAX_SKIPPED_LISTED: usize = 20;

/// File extensions (lower case) looked for inside folders and offered by
/// the file dialog: what the built-in decoders read (WAV, AIFF, CAF, FLAC,
/// MP3, Ogg Vorbis/Opus, MP4/M4A with AAC or ALAC, Matroska/WebM with Opus
/// or Vorbis, video files' audio) and what a system ffmpeg adds (AC-3,
/// E-AC-3, WMA, DTS, AMR, APE, WavPack, Musepack, TTA; see
/// `stemroom_engine::audio::decode`).
pub const AUDIO_EXTENSIONS: &[&str] = &[
    "wav", "wave", "flac", "mp3", "ogg", "oga", "opus", "m4a", "m4b", "mp4", "m4v", "mov", "aac", "aif", "aiff",
    "aifc", "caf", "webm", "mka", "mkv", "ac3", "eac3", "ec3", "wma", "asf", "wmv", "dts", "amr", "ape", "wv", "mpc",
    "tta", "au",
];

/// A path that was not added, and why (plain words).
#[derive(Debug, Clone, PartialEq, Serialize)]
#[cfg_attr(feature = "specta", derive(specta::Type))]
#[serde(rename_all = "camelCase")]
pub struct Rejected {
    pub path: String,
    pub reason: String,
}

/// Most characters of a refused link or name shown back in [`Rejected::path`].
const SHOWN_CHARS: usize = 300;

impl Rejected {
    /// A refusal of `given` (a link or a name from the caller, shown cut to
    /// 300 characters: it may be arbitrarily long) for `reason`.
    pub fn of(given: &str, reason: String) -> Self {
        Rejected { path: given.chars().take(SHOWN_CHARS).collect(), reason }
    }
}

/// The job options `job`, or the saved settings' when `None`.
fn options_or_settings(queue: &Queue, job: Option<JobOptions>) -> Result<JobOptions, QueueError> {
    match job {
        Some(o) => Ok(o),
        None => Ok(queue.settings()?.job_options()),
    }
}

/// A file or link that is already queued or in the library, and that job.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[cfg_attr(feature = "specta", derive(specta::Type))]
#[serde(rename_all = "camelCase")]
pub struct Duplicate {
    /// The file's path, or the link as it was given.
    pub path: String,
    pub existing: Job,
}

/// How [`add_paths_with`] treats what it is given.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct AddOptions {
    /// Queue files and links that are already queued or in the library again.
    pub allow_duplicates: bool,
    /// How the new jobs separate (`None` = the saved settings' options).
    pub job: Option<JobOptions>,
}

/// The outcome of adding paths.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
#[cfg_attr(feature = "specta", derive(specta::Type))]
#[serde(rename_all = "camelCase")]
pub struct AddResult {
    pub added: Vec<Job>,
    pub rejected: Vec<Rejected>,
    /// Files and links not added because they are already queued or in the library.
    pub duplicates: Vec<Duplicate>,
    /// Files inside dropped folders that are not audio (names relative to
    /// the folder dropped; at most [`MAX_SKIPPED_LISTED`], `skipped_more`
    /// counts the rest).
    pub skipped: Vec<String>,
    pub skipped_more: u32,
    /// Playlist links, with their entries (up to
    /// [`link::DEFAULT_PLAYLIST_LIMIT`]), waiting for a choice.
    pub playlists: Vec<LinkInfo>,
}

/// A path as people paste it: surrounding quotes (a file manager's "Copy as
/// path", a shell) removed, and a `file://` URI (a browser, a desktop's
/// clipboard) turned into its path, with `%XX` escapes decoded.
pub fn pasted_path(p: &Path) -> PathBuf {
    let Some(s) = p.to_str() else { return p.to_path_buf() };
    let mut t = s.trim();
    for q in ['"', '\''] {
        if t.len() >= 2 && t.starts_with(q) && t.ends_with(q) {
            t = &t[1..t.len() - 1];
        }
    }
    if !t.starts_with("file://") {
        return PathBuf::from(t);
    }
    // `file:///home/x` or `file://localhost/home/x`, `%XX` decoded (url's
    // own file-URL rules); anything else stays as typed.
    url::Url::parse(t).ok().and_then(|u| u.to_file_path().ok()).unwrap_or_else(|| PathBuf::from(t))
}

fn has_audio_extension(p: &Path) -> bool {
    p.extension().and_then(|e| e.to_str()).is_some_and(|e| AUDIO_EXTENSIONS.contains(&e.to_ascii_lowercase().as_str()))
}

/// Other (non-hidden) files a walk passed: the first
/// [`MAX_SKIPPED_LISTED`] by path, then only counted (a dropped home folder
/// passes hundreds of thousands).
#[derive(Default)]
struct Skipped {
    listed: Vec<PathBuf>,
    more: u32,
}

/// Audio files under `dir` into `out` until it holds [`MAX_FILES`]; other
/// (non-hidden) files into `skipped`. Returns whether an audio file was
/// left out for the limit.
fn walk(dir: &Path, depth: usize, out: &mut Vec<PathBuf>, skipped: &mut Skipped) -> bool {
    let Ok(entries) = std::fs::read_dir(dir) else { return false };
    let mut paths: Vec<PathBuf> = entries.flatten().map(|e| e.path()).collect();
    paths.sort();
    for p in paths {
        let hidden = p.file_name().and_then(|n| n.to_str()).is_some_and(|n| n.starts_with('.'));
        if hidden {
            continue;
        }
        // symlink_metadata: do not follow links to folders (into loops);
        // a link to a file is the file (a music manager's folder of links).
        let meta = std::fs::symlink_metadata(&p).and_then(|m| {
            if m.file_type().is_symlink() {
                std::fs::metadata(&p).map(|t| if t.is_file() { t } else { m })
            } else {
                Ok(m)
            }
        });
        // A song Stemroom filed (its `stemroom.json`): its stems and
        // exports are no new songs (dropping the folder that holds the
        // library would queue every stem of it).
        let filed = |d: &Path| d.join(crate::song::METADATA_FILE).is_file();
        match meta {
            Ok(m) if m.is_dir() && filed(&p) => {}
            Ok(m) if m.is_dir() && depth < MAX_DEPTH && walk(&p, depth + 1, out, skipped) => return true,
            Ok(m) if m.is_dir() => {}
            Ok(m) if m.is_file() && has_audio_extension(&p) => {
                if out.len() >= MAX_FILES {
                    return true;
                }
                out.push(p);
            }
            Ok(m) if m.is_file() && skipped.listed.len() < MAX_SKIPPED_LISTED => skipped.listed.push(p),
            Ok(m) if m.is_file() => skipped.more = skipped.more.saturating_add(1),
            _ => {}
        }
    }
    false
}

/// Queue every audio file among `paths` (files, or folders to search) with
/// the saved settings' options. Files are queued in the order given.
///
/// # Errors
/// Database errors only; bad paths are reported in [`AddResult::rejected`].
pub fn add_paths(queue: &Queue, paths: &[PathBuf]) -> Result<AddResult, QueueError> {
    add_paths_with(queue, paths, AddOptions::default())
}

/// [`add_paths`] with [`AddOptions`].
///
/// # Errors
/// Database errors only.
pub fn add_paths_with(queue: &Queue, paths: &[PathBuf], add: AddOptions) -> Result<AddResult, QueueError> {
    let options = options_or_settings(queue, add.job)?;
    let mut result = AddResult::default();
    let mut files: Vec<PathBuf> = Vec::new();
    // yt-dlp is looked up (a `--version` run) once per call, when a link needs it.
    let mut ytdlp: Option<Result<link::YtDlp, String>> = None;
    let mut seen = std::collections::HashSet::new();
    let mut links = 0;
    for p in paths {
        let p = &pasted_path(p);
        // The same path or link twice in one call is one.
        if !seen.insert(p.clone()) {
            continue;
        }
        if let Some(url) = p.to_str().filter(|s| link::looks_like_url(s)) {
            links += 1;
            if links > MAX_LINKS {
                let reason = format!("At most {MAX_LINKS} links are added at once; add this one again.");
                result.rejected.push(Rejected::of(url, reason));
                continue;
            }
            // (The links queued before it stay reported as queued.)
            if let Err(e) =
                add_link(queue, url, &options, link::Reach::Any, add.allow_duplicates, &mut ytdlp, &mut result)
            {
                not_queued(&mut result, e, Rejected::of(url, String::new()))?;
            }
        } else if p.is_dir() {
            let before = files.len();
            let mut skipped = Skipped::default();
            let cut = walk(p, 0, &mut files, &mut skipped);
            if cut {
                let reason = match files[before..].last() {
                    Some(last) => format!(
                        "Stemroom adds at most {MAX_FILES} songs at once: the audio files after {} (in name order) were not added; add them, or their folder, again.",
                        last.strip_prefix(p).unwrap_or(last).display()
                    ),
                    None => format!(
                        "Stemroom adds at most {MAX_FILES} songs at once, and the files before this folder reached it: none of its audio files were added; add it again."
                    ),
                };
                result.rejected.push(result_rejected(p, reason));
            }
            if files.len() == before && !cut {
                result.rejected.push(result_rejected(p, "This folder holds no audio files.".into()));
            } else {
                for s in skipped.listed {
                    if result.skipped.len() < MAX_SKIPPED_LISTED {
                        let rel = s.strip_prefix(p).unwrap_or(&s);
                        result.skipped.push(rel.to_string_lossy().into_owned());
                    } else {
                        result.skipped_more += 1;
                    }
                }
                result.skipped_more = result.skipped_more.saturating_add(skipped.more);
            }
        } else {
            files.push(p.clone());
        }
    }
    for f in files.iter().skip(MAX_FILES) {
        let reason = format!("Stemroom adds at most {MAX_FILES} songs at once; add this one again.");
        result.rejected.push(result_rejected(f, reason));
    }
    files.truncate(MAX_FILES);
    for f in files {
        let f = std::path::absolute(&f).unwrap_or(f);
        match decode::probe(&f) {
            Ok(info) => {
                let Some(path) = f.to_str() else {
                    result.rejected.push(result_rejected(&f, "The file name is not valid Unicode.".into()));
                    continue;
                };
                let source = JobSource::File { path: path.to_string() };
                // A file's name can hold what a title must not (a line
                // break, a right-to-left override): cleaned as tags are.
                let title = title_from_tags(&info.tags)
                    .or_else(|| clean_title(&title_for(&f)))
                    .unwrap_or_else(|| "Untitled".into());
                let queued = if add.allow_duplicates {
                    queue.enqueue(&source, &title, &options)
                } else {
                    // A song in the library whose file changed since it
                    // was added (a mix exported again under its name) is
                    // another song.
                    let modified = crate::queue::modified_millis(&f);
                    match queue.enqueue_unless_live_since(&source, &title, &options, modified) {
                        Ok((job, true)) => Ok(job),
                        Ok((existing, false)) => {
                            result.duplicates.push(Duplicate { path: path.to_string(), existing });
                            continue;
                        }
                        Err(e) => Err(e),
                    }
                };
                let job = match queued {
                    Ok(job) => job,
                    Err(e) => {
                        not_queued(&mut result, e, result_rejected(&f, String::new()))?;
                        continue;
                    }
                };
                let album = album_from_tags(&info.tags);
                result.added.push(with_details(queue, job, album.as_deref(), info.duration_seconds));
            }
            Err(e) => result.rejected.push(result_rejected(&f, plain_reason(&e))),
        }
    }
    Ok(result)
}

/// Queue one link, and nothing else: for front ends whose callers must not
/// name files on this machine (the HTTP service). A path, a `file://` URI or
/// anything but an `http(s)` link is refused in [`AddResult::rejected`]
/// without touching the file system; a link is probed like in
/// [`add_paths_with`] (a playlist comes back in [`AddResult::playlists`]).
/// `reach` says where its thumbnail may be fetched from (the HTTP service:
/// [`link::Reach::PublicOnly`] unless its operator allows private links).
///
/// # Errors
/// Database errors only.
pub fn add_url_with(
    queue: &Queue,
    url: &str,
    job: Option<JobOptions>,
    reach: link::Reach,
) -> Result<AddResult, QueueError> {
    let options = options_or_settings(queue, job)?;
    let mut result = AddResult::default();
    let mut ytdlp = None;
    // A service's client asks for a new job each time (its own id to follow).
    add_link(queue, url.trim(), &options, reach, true, &mut ytdlp, &mut result)?;
    Ok(result)
}

/// Why a link of `seconds` is refused under `limits` (`None`: it fits, or
/// its length is not known).
fn too_long(seconds: Option<f64>, limits: &link::DownloadLimits) -> Option<String> {
    let seconds = seconds.filter(|s| s.is_finite())?;
    // As the download's filter (`duration <? limit`): the limit itself is too long.
    (seconds >= limits.max_seconds as f64).then(|| {
        format!(
            "it lasts {}, longer than the longest download allowed ({} minutes, in Settings)",
            duration_text(seconds),
            limits.max_seconds / 60
        )
    })
}

/// `h:mm:ss` or `m:ss`.
fn duration_text(seconds: f64) -> String {
    let s = seconds.round() as u64;
    let (h, m, s) = (s / 3600, s / 60 % 60, s % 60);
    if h > 0 {
        format!("{h}:{m:02}:{s:02}")
    } else {
        format!("{m}:{s:02}")
    }
}

/// Probe one link and queue it (or hand back its playlist). `ytdlp` caches
/// the lookup of yt-dlp (or why it failed) across the links of one call.
/// Unless `allow_duplicates`, a link (as [`link::check_url`] writes it) that
/// already has a live job comes back in [`AddResult::duplicates`] under the
/// text given, before it is probed.
///
/// # Errors
/// The database's, before the link is queued (once it is, it is reported
/// as added whatever becomes of its details).
fn add_link(
    queue: &Queue,
    given: &str,
    options: &JobOptions,
    reach: link::Reach,
    allow_duplicates: bool,
    ytdlp: &mut Option<Result<link::YtDlp, String>>,
    result: &mut AddResult,
) -> Result<(), QueueError> {
    let refuse =
        |result: &mut AddResult, reason: String| result.rejected.push(Rejected::of(given, capitalised(&reason)));
    let url = match link::check_url(given) {
        Ok(u) => u,
        Err(e) => {
            refuse(result, e.to_string());
            return Ok(());
        }
    };
    if !allow_duplicates {
        if let Some(existing) = queue.live_of(&JobSource::Url { url: url.clone() })? {
            result.duplicates.push(Duplicate { path: given.to_string(), existing });
            return Ok(());
        }
    }
    let found = match ytdlp {
        Some(found) => found,
        None => {
            let explicit = queue.settings()?.ytdlp_path;
            ytdlp.insert(link::YtDlp::locate(explicit.as_deref().map(Path::new)).map_err(|e| e.to_string()))
        }
    };
    let yt = match found {
        Ok(y) => y,
        Err(e) => {
            refuse(result, e.clone());
            return Ok(());
        }
    };
    match link::probe(yt, &url, link::DEFAULT_PLAYLIST_LIMIT) {
        Ok(info) if info.is_playlist => result.playlists.push(info),
        Ok(info) => {
            // Longer than a download may last: refused now (its metadata
            // says so), not after it waited its turn in the queue.
            if let Some(why) = too_long(info.duration_seconds, &queue.settings()?.download_limits()) {
                refuse(result, why);
                return Ok(());
            }
            let source = JobSource::Url { url: info.url.clone() };
            let job = if allow_duplicates {
                queue.enqueue(&source, &info.title, options)?
            } else {
                match queue.enqueue_unless_live(&source, &info.title, options)? {
                    (job, true) => job,
                    // Added by another call while this one probed.
                    (existing, false) => {
                        result.duplicates.push(Duplicate { path: given.to_string(), existing });
                        return Ok(());
                    }
                }
            };
            // Details from here on: the job is queued whatever becomes of
            // them, and is reported so (the database busy past its timeout
            // for one of them made the whole add an error, the links queued
            // before it unreported, and a second paste all duplicates).
            let job = with_details(queue, job, None, info.duration_seconds);
            // The thumbnail is kept locally (the window shows no web images);
            // the job records its address only once the image is kept.
            let thumbnail = info.thumbnail.as_deref().filter(|url| {
                match link::thumbnail::fetch(url, queue.path(), job.id, reach) {
                    Ok(_) => true,
                    Err(e) => {
                        tracing::info!("no thumbnail for job {}: {url}: {e}", job.id);
                        false
                    }
                }
            });
            if let Err(e) = queue.set_link_details(job.id, info.uploader.as_deref(), thumbnail) {
                tracing::warn!("job {}: its uploader and thumbnail are not recorded: {e}", job.id);
            }
            match queue.get(job.id) {
                Ok(job) => result.added.push(job),
                // Removed while its thumbnail was fetched (seconds: through
                // the HTTP service, say): the image goes too (removing the
                // job found none to remove yet), and the add goes on.
                Err(QueueError::NotFound(_)) => link::thumbnail::remove(queue.path(), job.id),
                Err(e) => {
                    tracing::warn!("job {}: queued, but cannot be read back: {e}", job.id);
                    result.added.push(job);
                }
            }
        }
        Err(e) => refuse(result, e.to_string()),
    }
    Ok(())
}

/// Queue chosen entries of a playlist (titles and lengths as listed).
///
/// # Errors
/// Database errors; a bad entry link is refused in the result.
pub fn add_links(queue: &Queue, entries: &[LinkEntry]) -> Result<AddResult, QueueError> {
    add_links_with(queue, entries, None)
}

/// [`add_links`] with the options the new jobs separate with (`None` = the
/// saved settings' options).
///
/// # Errors
/// As [`add_links`].
pub fn add_links_with(queue: &Queue, entries: &[LinkEntry], job: Option<JobOptions>) -> Result<AddResult, QueueError> {
    let options = options_or_settings(queue, job)?;
    let limits = queue.settings()?.download_limits();
    let mut result = AddResult::default();
    for e in entries.iter().take(link::DEFAULT_PLAYLIST_LIMIT) {
        // The entries come back through the window (not trusted): a length
        // that is no length (negative, not finite) is none (the download
        // checks the real one).
        let duration = e.duration_seconds.filter(|d| d.is_finite() && *d >= 0.0);
        match link::check_url(&e.url) {
            Ok(url) => {
                // An entry whose listed length is over the limit (a live
                // stream in a playlist is listed without one: its download
                // refuses it).
                if let Some(why) = too_long(duration, &limits) {
                    result.rejected.push(Rejected::of(&e.url, capitalised(&why)));
                    continue;
                }
                // Titles come from the page: bounded like titles from tags.
                let title = clean_title(&e.title).unwrap_or_else(|| "Untitled".into());
                // An entry queued or in the library already (the playlist
                // added again) is said so, as a pasted link is, not queued
                // a second time.
                let job = match queue.enqueue_unless_live(&JobSource::Url { url }, &title, &options) {
                    Ok((job, true)) => job,
                    Ok((existing, false)) => {
                        result.duplicates.push(Duplicate { path: e.url.clone(), existing });
                        continue;
                    }
                    Err(err) => {
                        not_queued(&mut result, err, Rejected::of(&e.url, String::new()))?;
                        continue;
                    }
                };
                result.added.push(with_details(queue, job, None, duration));
            }
            Err(err) => result.rejected.push(Rejected::of(&e.url, capitalised(&err.to_string()))),
        }
    }
    Ok(result)
}

/// Longest title taken from tags, in characters (a tag may hold megabytes;
/// a title is shown in lists and sent in `Content-Disposition` headers).
/// Also the bound of a title from a client's file name in the server.
pub const MAX_TAG_TITLE_CHARS: usize = 200;

/// "Artist - Title" from a file's tags, or the title alone; `None` without a
/// title tag (blank tags count as none). Control characters are dropped and
/// the result is cut to [`MAX_TAG_TITLE_CHARS`].
pub fn title_from_tags(tags: &stemroom_engine::audio::encode::Tags) -> Option<String> {
    let title = tag_text(&tags.title)?;
    let full = match tag_text(&tags.artist) {
        Some(artist) => format!("{artist} - {title}"),
        None => title.to_string(),
    };
    clean_title(&full)
}

/// The album from a file's tags, cleaned and bounded like [`title_from_tags`].
pub fn album_from_tags(tags: &stemroom_engine::audio::encode::Tags) -> Option<String> {
    clean_title(tag_text(&tags.album)?)
}

/// `text` as a title: without control characters, cut to
/// [`MAX_TAG_TITLE_CHARS`], trimmed; `None` when nothing is left.
pub fn clean_title(text: &str) -> Option<String> {
    // Control characters, and bidirectional embeddings, overrides and
    // isolates (U+202A-U+202E, U+2066-U+2069), which make a title, and the
    // file names made from it, read other than they are.
    let shown = |c: &char| !c.is_control() && !matches!(c, '\u{202a}'..='\u{202e}' | '\u{2066}'..='\u{2069}');
    let clean: String = text.chars().filter(shown).take(MAX_TAG_TITLE_CHARS).collect();
    let clean = clean.trim();
    (!clean.is_empty()).then(|| clean.to_string())
}

/// A tag's text, trimmed; `None` when absent or blank.
fn tag_text(tag: &Option<String>) -> Option<&str> {
    tag.as_deref().map(str::trim).filter(|t| !t.is_empty())
}

fn capitalised(s: &str) -> String {
    let mut c = s.chars();
    match c.next() {
        Some(f) => f.to_uppercase().chain(c).collect::<String>() + ".",
        None => String::new(),
    }
}

/// A file or link the queue could not record (`e`: the database busy past
/// its timeout, its disk full): the call's error when nothing was added
/// yet; else refused as `rejected` with the reason, so the songs already
/// queued are still reported (and the rest still tried).
///
/// # Errors
/// `e`, when `result` holds no added song.
fn not_queued(result: &mut AddResult, e: QueueError, mut rejected: Rejected) -> Result<(), QueueError> {
    if result.added.is_empty() {
        return Err(e);
    }
    rejected.reason = format!("It could not be queued ({e}): add it again.");
    result.rejected.push(rejected);
    Ok(())
}

/// `job` as queued, with its album and length recorded when given. Those
/// are details: one not recorded (the database busy) is logged, and the
/// job, queued, is still reported.
fn with_details(queue: &Queue, job: Job, album: Option<&str>, duration: Option<f64>) -> Job {
    if let Some(album) = album {
        if let Err(e) = queue.set_album(job.id, album) {
            tracing::warn!("job {}: its album is not recorded: {e}", job.id);
        }
    }
    if duration.is_some() {
        if let Err(e) = queue.set_details(job.id, duration, None) {
            tracing::warn!("job {}: its length is not recorded: {e}", job.id);
        }
    }
    queue.get(job.id).unwrap_or(job)
}

fn result_rejected(p: &Path, reason: String) -> Rejected {
    Rejected { path: p.to_string_lossy().into_owned(), reason }
}

/// Whether `p` reads as a web address without its scheme: a relative path
/// whose first part is a host name (`www.…`, or a name with a dot and a
/// known video site's domain) followed by more.
fn looks_like_bare_link(p: &Path) -> bool {
    let Some(s) = p.to_str().filter(|s| !s.starts_with(['/', '.', '~'])) else { return false };
    let host = s.split('/').next().unwrap_or("").to_ascii_lowercase();
    let sites = ["youtube.com", "youtu.be", "soundcloud.com", "bandcamp.com", "vimeo.com"];
    host.starts_with("www.")
        || host.starts_with("m.")
        || sites.iter().any(|d| host == *d || host.ends_with(&format!(".{d}")))
}

fn plain_reason(e: &decode::DecodeError) -> String {
    use decode::DecodeError as D;
    match e {
        // A link pasted without its scheme (`www.youtube.com/watch?v=…`,
        // `youtu.be/…`) is not a file.
        D::NotFound(p) if looks_like_bare_link(p) => {
            "The file does not exist. A link must start with https:// (copy it from the browser's address bar).".into()
        }
        D::NotFound(_) => "The file does not exist.".into(),
        D::IsDirectory(_) => "This is a folder.".into(),
        D::EmptyFile(_) => "The file is empty.".into(),
        D::NotAudio { .. } => "This is not an audio file Stemroom can read (WAV, FLAC, MP3, OGG, M4A).".into(),
        D::NoAudioTrack(_) => "The file has no audio track.".into(),
        D::UnsupportedCodec { reason, .. } => format!("The audio codec is not supported ({reason})."),
        other => other.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn links_longer_than_a_download_may_last_are_refused_at_once() {
        let limits = link::DownloadLimits { max_bytes: 1 << 30, max_seconds: 3 * 3600 };
        assert_eq!(too_long(Some(3.0 * 3600.0 - 1.0), &limits), None, "under the limit fits");
        assert!(too_long(Some(3.0 * 3600.0), &limits).is_some(), "the limit itself does not, as yt-dlp's filter");
        assert_eq!(too_long(None, &limits), None, "unknown length: the download decides");
        assert_eq!(too_long(Some(f64::NAN), &limits), None);
        let why = too_long(Some(10.0 * 3600.0 + 61.0), &limits).expect("too long");
        assert_eq!(why, "it lasts 10:01:01, longer than the longest download allowed (180 minutes, in Settings)");
        assert_eq!(duration_text(59.6), "1:00");
    }

    fn wav(p: &Path, frames: usize) {
        let spec = hound::WavSpec {
            channels: 2,
            sample_rate: 44_100,
            bits_per_sample: 16,
            sample_format: hound::SampleFormat::Int,
        };
        let mut w = hound::WavWriter::create(p, spec).unwrap();
        for i in 0..frames * 2 {
            w.write_sample((i % 100) as i16).unwrap();
        }
        w.finalize().unwrap();
    }

    /// The queue failing to record one file of a drop (its disk full, the
    /// database busy past its timeout) refuses that file and goes on:
    /// the songs queued before it are reported. On the first file it is
    /// the call's error (nothing was queued).
    #[test]
    fn a_file_the_queue_cannot_record_is_refused_and_the_rest_reported() {
        let dir = tempfile::tempdir().unwrap();
        let q = Queue::open(&dir.path().join("q.sqlite")).unwrap();
        let paths: Vec<PathBuf> = ["a", "bad", "c"].iter().map(|n| dir.path().join(format!("{n}.wav"))).collect();
        paths.iter().for_each(|p| wav(p, 4410));
        q.conn()
            .execute_batch(
                "CREATE TEMP TRIGGER full BEFORE INSERT ON jobs WHEN NEW.title = 'bad'
                 BEGIN SELECT RAISE(ABORT, 'database or disk is full'); END;",
            )
            .unwrap();
        let r = add_paths(&q, &paths).unwrap();
        let added: Vec<&str> = r.added.iter().map(|j| j.title.as_str()).collect();
        assert_eq!(added, ["a", "c"]);
        assert_eq!(r.added[1].duration_seconds, Some(0.1), "its length is recorded");
        assert_eq!(r.rejected.len(), 1);
        assert!(r.rejected[0].path.ends_with("bad.wav"), "{:?}", r.rejected);
        assert!(r.rejected[0].reason.contains("disk is full"), "{:?}", r.rejected);
        assert!(add_paths(&q, &paths[1..2]).is_err(), "nothing queued: the call fails");
    }

    #[test]
    fn pasted_paths_in_quotes_and_file_uris_are_understood() {
        let cases = [
            ("\"/home/you/Music/Björk - Army of Me.flac\"", "/home/you/Music/Björk - Army of Me.flac"),
            ("'/tmp/a song.wav'", "/tmp/a song.wav"),
            ("  /tmp/plain.wav ", "/tmp/plain.wav"),
            ("file:///home/you/Music/Bj%C3%B6rk%20-%20Army%20of%20Me.flac", "/home/you/Music/Björk - Army of Me.flac"),
            ("file://localhost/tmp/x%2525.wav", "/tmp/x%25.wav"),
            ("\"file:///tmp/a%20b.wav\"", "/tmp/a b.wav"),
            ("https://example.com/a%20b", "https://example.com/a%20b"),
        ];
        for (pasted, want) in cases {
            assert_eq!(pasted_path(Path::new(pasted)), PathBuf::from(want), "{pasted}");
        }
    }

    #[test]
    fn files_folders_and_refusals() {
        let dir = tempfile::tempdir().unwrap();
        let q = Queue::open(&dir.path().join("q.sqlite")).unwrap();
        let album = dir.path().join("album");
        std::fs::create_dir_all(album.join("disc 2")).unwrap();
        wav(&album.join("02 b.wav"), 44_100);
        wav(&album.join("01 a.wav"), 22_050);
        wav(&album.join("disc 2/03 c.wav"), 100);
        std::fs::write(album.join("cover.jpg"), b"\xff\xd8\xff").unwrap();
        let notes = dir.path().join("notes.txt");
        std::fs::write(&notes, "not audio at all, just some text").unwrap();
        let fake = dir.path().join("fake.mp3");
        std::fs::write(&fake, vec![0u8; 0]).unwrap();
        let empty_dir = dir.path().join("empty");
        std::fs::create_dir(&empty_dir).unwrap();
        let r = add_paths(&q, &[album.clone(), notes.clone(), fake.clone(), empty_dir, dir.path().join("missing.wav")])
            .unwrap();
        let titles: Vec<&str> = r.added.iter().map(|j| j.title.as_str()).collect();
        assert_eq!(titles, ["01 a", "02 b", "03 c"]);
        assert_eq!(r.added[0].duration_seconds, Some(0.5));
        let reasons: Vec<(&str, &str)> = r
            .rejected
            .iter()
            .map(|x| (Path::new(&x.path).file_name().unwrap().to_str().unwrap(), x.reason.as_str()))
            .collect();
        assert_eq!(reasons.len(), 4, "{reasons:?}");
        assert!(reasons[0].0 == "empty" && reasons[0].1.contains("no audio"));
        assert!(reasons[1].0 == "notes.txt" && reasons[1].1.contains("not an audio file"));
        assert!(reasons[2].0 == "fake.mp3" && reasons[2].1.contains("empty"));
        assert!(reasons[3].0 == "missing.wav" && reasons[3].1.contains("does not exist"));
        assert!(!reasons[3].1.contains("https://"), "{}", reasons[3].1);
        assert!(looks_like_bare_link(Path::new("www.youtube.com/watch?v=abc")));
        assert!(looks_like_bare_link(Path::new("youtu.be/abc")));
        assert!(!looks_like_bare_link(Path::new("songs/www.mp3")) && !looks_like_bare_link(Path::new("/www.x/a")));
        assert_eq!(q.queue().unwrap().len(), 3);
        // The album's cover is named as skipped, not dropped without a word.
        assert_eq!((r.skipped.as_slice(), r.skipped_more), (&["cover.jpg".to_string()][..], 0));
        assert!(r.duplicates.is_empty());

        // The same songs again: not queued twice, each with the job it would
        // duplicate; asked for explicitly, they are queued again.
        let again = add_paths(&q, std::slice::from_ref(&album)).unwrap();
        assert!(again.added.is_empty());
        let dup: Vec<(&str, u32)> = again
            .duplicates
            .iter()
            .map(|d| (Path::new(&d.path).file_name().unwrap().to_str().unwrap(), d.existing.id))
            .collect();
        assert_eq!(dup, [("01 a.wav", r.added[0].id), ("02 b.wav", r.added[1].id), ("03 c.wav", r.added[2].id)]);
        let forced =
            add_paths_with(&q, &[album.join("01 a.wav")], AddOptions { allow_duplicates: true, ..Default::default() })
                .unwrap();
        assert_eq!((forced.added.len(), forced.duplicates.len()), (1, 0));
        // A cancelled job does not count as a copy.
        let cancelled = q.cancel_queued(forced.added[0].id).unwrap();
        assert_eq!(cancelled.state, crate::queue::JobState::Cancelled);
        q.cancel_queued(r.added[0].id).unwrap();
        let retried = add_paths(&q, &[album.join("01 a.wav")]).unwrap();
        assert_eq!((retried.added.len(), retried.duplicates.len()), (1, 0));
    }

    /// A folder of links to the songs (as music managers make them): the
    /// linked files are added under the links' names; a link to a folder
    /// is not followed (a loop back up would never end).
    #[test]
    fn a_folder_of_links_adds_the_linked_songs() {
        let dir = tempfile::tempdir().unwrap();
        let q = Queue::open(&dir.path().join("q.sqlite")).unwrap();
        let store = dir.path().join("store");
        std::fs::create_dir_all(&store).unwrap();
        wav(&store.join("a81f.wav"), 44_100);
        let playlist = dir.path().join("playlist");
        std::fs::create_dir_all(&playlist).unwrap();
        std::os::unix::fs::symlink(store.join("a81f.wav"), playlist.join("01 Song.wav")).unwrap();
        std::os::unix::fs::symlink(dir.path(), playlist.join("loop")).unwrap();
        std::os::unix::fs::symlink(dir.path().join("gone.wav"), playlist.join("02 Gone.wav")).unwrap();
        let r = add_paths(&q, std::slice::from_ref(&playlist)).unwrap();
        let titles: Vec<&str> = r.added.iter().map(|j| j.title.as_str()).collect();
        assert_eq!(titles, ["01 Song"], "{:?}", r.rejected);
        assert!(r.rejected.is_empty(), "{:?}", r.rejected);
    }

    /// A folder that holds the library (a drop of ~/Music): the songs
    /// Stemroom filed there, their stems and exports, are not queued; a
    /// file's name becomes a clean title.
    #[test]
    fn filed_songs_are_not_queued_again_and_names_become_clean_titles() {
        let dir = tempfile::tempdir().unwrap();
        let q = Queue::open(&dir.path().join("q.sqlite")).unwrap();
        let music = dir.path().join("Music");
        let song = music.join("Stemroom").join("Falcon 69");
        std::fs::create_dir_all(song.join("exports")).unwrap();
        for stem in ["drums", "vocals"] {
            wav(&song.join(format!("{stem}.wav")), 100);
        }
        wav(&song.join("exports/Falcon 69 - Instrumental.wav"), 100);
        std::fs::write(song.join(crate::song::METADATA_FILE), b"{}").unwrap();
        wav(&music.join("new\u{202e}song\nx.wav"), 100);
        let r = add_paths(&q, std::slice::from_ref(&music)).unwrap();
        let titles: Vec<&str> = r.added.iter().map(|j| j.title.as_str()).collect();
        assert_eq!(titles.len(), 1, "only the new song: {titles:?}");
        assert!(!titles[0].contains('\u{202e}') && !titles[0].contains('\n'), "{:?}", titles[0]);
    }

    #[test]
    fn a_drop_over_the_limit_says_what_was_left_out() {
        let dir = tempfile::tempdir().unwrap();
        let q = Queue::open(&dir.path().join("q.sqlite")).unwrap();
        // 502 audio files (empty: refused one by one, quickly), and one
        // more file named on its own after the folder.
        let big = dir.path().join("big");
        std::fs::create_dir_all(big.join("sub")).unwrap();
        for i in 0..500 {
            std::fs::write(big.join(format!("{i:03}.wav")), b"").unwrap();
        }
        std::fs::write(big.join("sub/x.wav"), b"").unwrap();
        std::fs::write(big.join("sub/y.wav"), b"").unwrap();
        let single = dir.path().join("single.wav");
        wav(&single, 100);
        let second = dir.path().join("second");
        std::fs::create_dir_all(&second).unwrap();
        std::fs::write(second.join("z.wav"), b"").unwrap();
        let r = add_paths(&q, &[big.clone(), single.clone()]).unwrap();
        assert!(r.added.is_empty());
        let limit: Vec<&Rejected> = r.rejected.iter().filter(|x| x.reason.contains("at most 500")).collect();
        assert_eq!(limit.len(), 2, "{limit:?}");
        assert_eq!(Path::new(&limit[0].path), big);
        assert!(limit[0].reason.contains("after 499.wav"), "{}", limit[0].reason);
        assert_eq!(Path::new(&limit[1].path), single);
        assert_eq!(r.rejected.len(), 502, "500 empty files and the two left out");
        // A folder after the limit was reached: none of its files.
        let r = add_paths(&q, &[big.clone(), second.clone()]).unwrap();
        let cut = r.rejected.iter().find(|x| Path::new(&x.path) == second).expect("the second folder");
        assert!(cut.reason.contains("none of its audio files"), "{}", cut.reason);
    }

    #[test]
    fn titles_from_tags_are_bounded_and_printable() {
        use stemroom_engine::audio::encode::Tags;
        let tags = |artist: Option<&str>, title: &str| Tags {
            artist: artist.map(str::to_string),
            title: Some(title.to_string()),
            ..Default::default()
        };
        assert_eq!(title_from_tags(&tags(Some("Björk"), "Army of Me")).as_deref(), Some("Björk - Army of Me"));
        let huge = title_from_tags(&tags(None, &"ä".repeat(1_000_000))).unwrap();
        assert_eq!(huge.chars().count(), MAX_TAG_TITLE_CHARS);
        assert_eq!(title_from_tags(&tags(None, "a\r\nb\u{7}c")).as_deref(), Some("abc"));
        assert_eq!(title_from_tags(&tags(None, "\u{1b}\u{7}")), None);
        // A right-to-left override would show "song.exe" as "song\u{202e}exe.mp3"'s mirror.
        assert_eq!(title_from_tags(&tags(None, "song\u{202e}3pm.exe")).as_deref(), Some("song3pm.exe"));
        assert_eq!(clean_title("\u{2066}שיר\u{2069}").as_deref(), Some("שיר"));
    }

    #[test]
    fn playlist_entries_from_the_page_are_bounded() {
        let dir = tempfile::tempdir().unwrap();
        let q = Queue::open(&dir.path().join("q.sqlite")).unwrap();
        let entry = |url: String, title: String| LinkEntry { url, title, duration_seconds: None };
        let r = add_links(
            &q,
            &[
                entry("https://example.com/a".into(), "x".repeat(100_000)),
                entry("https://example.com/b".into(), "\u{7}".into()),
                entry(format!("ftp://{}", "y".repeat(100_000)), "t".into()),
            ],
        )
        .unwrap();
        assert_eq!(r.added[0].title.chars().count(), MAX_TAG_TITLE_CHARS);
        assert_eq!(r.added[1].title, "Untitled");
        assert_eq!(r.rejected[0].path.chars().count(), 300);
        // The playlist again, one entry as YouTube lists it and once as
        // shared: what is queued already is a duplicate, the rest is added.
        let first =
            add_links(&q, &[entry("https://www.youtube.com/watch?v=dQw4w9WgXcQ".into(), "Song".into())]).unwrap();
        assert_eq!(first.added.len(), 1);
        let again = add_links(
            &q,
            &[
                entry("https://example.com/a".into(), "a".into()),
                entry("https://youtu.be/dQw4w9WgXcQ?si=x".into(), "Song".into()),
                entry("https://example.com/c".into(), "c".into()),
            ],
        )
        .unwrap();
        let dup: Vec<(&str, u32)> = again.duplicates.iter().map(|d| (d.path.as_str(), d.existing.id)).collect();
        assert_eq!(
            dup,
            [("https://example.com/a", r.added[0].id), ("https://youtu.be/dQw4w9WgXcQ?si=x", first.added[0].id)]
        );
        assert_eq!(again.added.iter().map(|j| j.title.as_str()).collect::<Vec<_>>(), ["c"]);
        // A length from the page that is no length is not stored.
        let bad = LinkEntry { url: "https://example.com/d".into(), title: "d".into(), duration_seconds: Some(-5.0) };
        let r = add_links(&q, &[bad]).unwrap();
        assert_eq!(r.added[0].duration_seconds, None, "{:?}", r.added[0]);
    }

    #[test]
    fn one_call_probes_at_most_max_links_links_and_each_path_once() {
        let dir = tempfile::tempdir().unwrap();
        let q = Queue::open(&dir.path().join("q.sqlite")).unwrap();
        // Links without a host: refused by the check, before any yt-dlp run.
        let mut paths: Vec<PathBuf> = (0..MAX_LINKS + 10).map(|i| PathBuf::from(format!("https://:{i}"))).collect();
        let song = dir.path().join("song.wav");
        wav(&song, 4410);
        paths.extend([song.clone(), song.clone(), song]);
        let r = add_paths_with(&q, &paths, AddOptions { allow_duplicates: true, ..Default::default() }).unwrap();
        let capped = r.rejected.iter().filter(|x| x.reason.starts_with("At most")).count();
        assert_eq!((r.rejected.len(), capped, r.added.len()), (MAX_LINKS + 10, 10, 1), "{:?}", r.rejected.last());
    }

    /// The same link pasted again (its host in other case) is a duplicate
    /// at once, without yt-dlp; asked for, it is probed and queued again
    /// (here: refused, as yt-dlp is set to a program that is not there).
    #[test]
    fn a_link_already_queued_is_a_duplicate_until_asked_for() {
        let dir = tempfile::tempdir().unwrap();
        let q = Queue::open(&dir.path().join("q.sqlite")).unwrap();
        let mut settings = q.settings().unwrap();
        settings.ytdlp_path = Some(dir.path().join("no-yt-dlp").to_string_lossy().into_owned());
        q.save_settings(&settings).unwrap();
        let url = link::check_url("https://www.youtube.com/watch?v=aqz-KE-bpKQ").unwrap();
        let job = q.enqueue(&JobSource::Url { url }, "Big Buck Bunny", &settings.job_options()).unwrap();
        let pasted = "  https://WWW.YouTube.com/watch?v=aqz-KE-bpKQ";
        let r = add_paths(&q, &[PathBuf::from(pasted)]).unwrap();
        assert!(r.added.is_empty() && r.rejected.is_empty(), "{r:?}");
        assert_eq!(r.duplicates.len(), 1, "{r:?}");
        assert_eq!((r.duplicates[0].path.as_str(), r.duplicates[0].existing.id), (pasted.trim(), job.id));
        let again =
            add_paths_with(&q, &[PathBuf::from(pasted)], AddOptions { allow_duplicates: true, ..Default::default() })
                .unwrap();
        assert!(again.duplicates.is_empty(), "{again:?}");
        assert_eq!(again.rejected.len(), 1, "probed: {again:?}");
        // A failed or cancelled job is not one to duplicate.
        q.cancel_queued(job.id).unwrap();
        let r = add_paths(&q, &[PathBuf::from(pasted)]).unwrap();
        assert!(r.duplicates.is_empty() && r.rejected.len() == 1, "{r:?}");
        // The HTTP service's adds are each a new job.
        let url = link::check_url("https://www.youtube.com/watch?v=x").unwrap();
        q.enqueue(&JobSource::Url { url: url.clone() }, "X", &settings.job_options()).unwrap();
        let r = add_url_with(&q, &url, None, link::Reach::Any).unwrap();
        assert!(r.duplicates.is_empty() && r.rejected.len() == 1, "{r:?}");
    }

    #[test]
    fn add_url_with_refuses_anything_but_a_link() {
        let dir = tempfile::tempdir().unwrap();
        let q = Queue::open(&dir.path().join("q.sqlite")).unwrap();
        let song = dir.path().join("song.wav");
        wav(&song, 44_100);
        let file_uri = format!("file://{}", song.display());
        let folder = dir.path().to_str().unwrap().to_string();
        for given in [song.to_str().unwrap(), file_uri.as_str(), folder.as_str(), "ftp://example.com/a.mp3", "-x", ""] {
            let r = add_url_with(&q, given, None, link::Reach::Any).unwrap();
            assert!(r.added.is_empty(), "{given} was queued");
            assert_eq!(r.rejected.len(), 1, "{given}: {r:?}");
            assert!(r.rejected[0].reason.contains("link"), "{given}: {}", r.rejected[0].reason);
        }
        assert!(q.queue().unwrap().is_empty());
    }

    #[test]
    fn titles_come_from_tags_when_the_file_has_them() {
        let dir = tempfile::tempdir().unwrap();
        let q = Queue::open(&dir.path().join("q.sqlite")).unwrap();
        let album = dir.path().join("album");
        std::fs::create_dir(&album).unwrap();
        let src = dir.path().join("src.wav");
        wav(&src, 44_100);
        let tagged = album.join("Track 01.flac");
        let untagged = album.join("Track 02.flac");
        let title_only = album.join("Track 03.flac");
        let s = |p: &Path| p.to_str().unwrap().to_string();
        stemroom_testkit::ffmpeg(&[
            "-i",
            &s(&src),
            "-metadata",
            "title=Army of Me",
            "-metadata",
            "artist=Björk",
            "-metadata",
            "album=Post",
            &s(&tagged),
        ]);
        stemroom_testkit::ffmpeg(&["-i", &s(&src), &s(&untagged)]);
        stemroom_testkit::ffmpeg(&["-i", &s(&src), "-metadata", "title=  Hyperballad ", &s(&title_only)]);
        let r = add_paths(&q, &[album]).unwrap();
        let titles: Vec<&str> = r.added.iter().map(|j| j.title.as_str()).collect();
        assert_eq!(titles, ["Björk - Army of Me", "Track 02", "Hyperballad"]);
        assert_eq!(r.added[0].album.as_deref(), Some("Post"));
        assert_eq!(r.added[1].album, None);
        // The library finds a finished song by its album too.
        let claimed = q.claim_next().unwrap().expect("a queued job");
        assert_eq!(claimed.id, r.added[0].id);
        q.finish(claimed.id, &crate::queue::JobState::Done, Some("/library/Army of Me"), &[]).unwrap();
        let found: Vec<u32> = q.library("POST").unwrap().iter().map(|j| j.id).collect();
        assert_eq!(found, [claimed.id]);
        assert_eq!(decode::probe(&tagged).unwrap().tags.album.as_deref(), Some("Post"));

        // Added again unchanged: in the library already. Exported again
        // under its name (modified after it was added): another song.
        let again = add_paths(&q, std::slice::from_ref(&tagged)).unwrap();
        assert_eq!((again.added.len(), again.duplicates.len()), (0, 1));
        let later = std::time::SystemTime::now() + std::time::Duration::from_secs(10);
        std::fs::File::options().write(true).open(&tagged).unwrap().set_modified(later).unwrap();
        let again = add_paths(&q, std::slice::from_ref(&tagged)).unwrap();
        assert_eq!((again.added.len(), again.duplicates.len()), (1, 0), "{again:?}");
        assert_ne!(again.added[0].id, claimed.id);
        // While that one waits in the queue, it is the duplicate.
        let again = add_paths(&q, std::slice::from_ref(&tagged)).unwrap();
        assert_eq!((again.added.len(), again.duplicates.len()), (0, 1));
    }
}

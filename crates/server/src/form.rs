//! A request for a new job, as clients send it: `multipart/form-data` with
//! the audio in a `file` (or `audio_file`) field and options as text
//! fields, or JSON / form-urlencoded with a `url` (or `youtube_url`) for a
//! link. Options may also come in the address's query (`POST
//! /separate?two_stems=vocals`, as FastAPI clients send plain parameters).
//! The audio is streamed to disk as it arrives (memory stays bounded by one
//! chunk per upload, and by [`MULTIPART_BUFFERED`] for the parts around
//! it), checked against the size limit and the data folder's free-space
//! floor before anything is written.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use axum::extract::{FromRequest, Multipart, Request};
use axum::http::{header, StatusCode};
use stemroom_engine::audio::encode::{OutputFormat, WavDepth};
use stemroom_engine::model::Manifest;
use stemroom_engine::separate::{MAX_OVERLAP, MAX_SHIFTS};
use stemroom_engine::units::Preset;
use stemroom_library::queue::JobOptions;
use tokio::io::AsyncWriteExt;

use crate::error::ApiError;
use crate::service::Service;
use crate::upload::{self, PartFile, Upload};

/// Field names that carry the audio file.
pub const FILE_FIELDS: &[&str] = &["file", "audio_file", "audio"];
/// Field names that carry a link.
pub const URL_FIELDS: &[&str] = &["url", "youtube_url", "link"];
/// Option fields a job accepts.
pub const OPTION_FIELDS: &[&str] =
    &["preset", "model", "two_stems", "shifts", "overlap", "format", "mp3", "mp3_bitrate", "bit_depth"];

/// Largest JSON or form body (options and a link), in bytes.
const SMALL_BODY_LIMIT: usize = 64 * 1024;
/// Largest text field in a multipart body, in bytes.
const TEXT_FIELD_LIMIT: usize = 8 * 1024;
/// Most fields in one request.
const MAX_FIELDS: usize = 32;
/// Room for multipart boundaries and headers above the upload limit.
pub const MULTIPART_OVERHEAD: u64 = 64 * 1024;
/// Most bytes of a multipart body read but not yet handed out as field
/// data: boundaries, part headers and the parser's look-ahead (one network
/// chunk). The parser keeps everything in memory until it finds the first
/// boundary and each part's end of headers, so a body with a wrong
/// boundary would otherwise be held whole, up to the upload limit.
pub const MULTIPART_BUFFERED: u64 = 4 << 20;

/// What a request asks for, read and checked.
#[derive(Debug)]
pub struct NewJob {
    /// The audio received (removed on drop unless a job takes it).
    pub upload: Option<Upload>,
    /// The name the client gave the file (a title, never a path).
    pub client_name: Option<String>,
    /// A link to fetch instead.
    pub url: Option<String>,
    /// Option fields, by name (empty values dropped).
    pub fields: BTreeMap<String, String>,
    /// Fields and query parameters this server does not take, ignored as
    /// FastAPI ignores what an endpoint does not declare (a client written
    /// for another server sends its own options): named in the answer
    /// ([`crate::view::Created::ignored_fields`]) and the log. At most
    /// [`MAX_IGNORED_NAMED`], each cut to 64 characters.
    pub ignored: Vec<String>,
}

impl NewJob {
    fn empty() -> Self {
        NewJob { upload: None, client_name: None, url: None, fields: BTreeMap::new(), ignored: Vec::new() }
    }

    /// Note `name` as ignored (once), control characters as `?`: the names
    /// go to the log, where a line break in one wrote a line of the
    /// client's making.
    fn ignore(&mut self, name: &str) {
        let name: String = name.chars().take(64).map(|c| if c.is_control() { '?' } else { c }).collect();
        if self.ignored.len() < MAX_IGNORED_NAMED && !self.ignored.contains(&name) {
            self.ignored.push(name);
        }
    }
}

/// Most ignored field names an answer lists.
pub const MAX_IGNORED_NAMED: usize = 16;

fn too_large(limit: u64) -> ApiError {
    ApiError::new(
        StatusCode::PAYLOAD_TOO_LARGE,
        "too_large",
        format!("the upload is larger than this server's limit of {} MB", limit / 1_000_000),
    )
}

fn no_space(floor: u64) -> ApiError {
    ApiError::new(
        StatusCode::INSUFFICIENT_STORAGE,
        "insufficient_storage",
        format!(
            "the server's disk is nearly full (it keeps {} MB free): try again after finished jobs are deleted",
            floor / 1_000_000
        ),
    )
}

/// Read a new-job request. `file_required`: the endpoint takes only uploads.
///
/// # Errors
/// 413 over the upload limit, 507 below the free-space floor, 415 for a body
/// type it does not read, 400 for a malformed body, 408 for a stalled
/// upload, 422 for neither file nor link (fields this server does not take
/// are ignored, [`NewJob::ignored`]).
pub async fn read(service: &Service, req: Request, file_required: bool) -> Result<NewJob, ApiError> {
    /// Refuse before reading: drain the body so the client sees the answer.
    async fn refuse(req: Request, e: ApiError) -> Result<NewJob, ApiError> {
        crate::error::drain(req).await;
        Err(e)
    }
    // (Parameters this server does not take are ignored, as FastAPI
    // ignores undeclared ones: a cache-buster `?_=…`, another server's
    // options; named in the answer.)
    let query: Vec<(String, String)> =
        req.uri().query().map(|q| url::form_urlencoded::parse(q.as_bytes()).into_owned().collect()).unwrap_or_default();
    // Options in the address are known before the body: a bad one is
    // refused before an upload of gigabytes is stored.
    // Trimmed, and empty ones dropped, as body fields are (`take_text`):
    // `?format=&shifts=` from a client's URLSearchParams is no option.
    let query_options: BTreeMap<String, String> = query
        .iter()
        .filter(|(k, v)| OPTION_FIELDS.contains(&k.as_str()) && !v.trim().is_empty())
        .map(|(k, v)| (k.clone(), v.trim().to_string()))
        .collect();
    if let Err(e) = early_options_check(service, &query_options) {
        return refuse(req, e).await;
    }
    let content_type =
        req.headers().get(header::CONTENT_TYPE).and_then(|v| v.to_str().ok()).unwrap_or("").to_ascii_lowercase();
    let declared: Option<u64> =
        req.headers().get(header::CONTENT_LENGTH).and_then(|v| v.to_str().ok()).and_then(|v| v.parse().ok());
    let no_body = declared == Some(0) || (declared.is_none() && !req.headers().contains_key(header::TRANSFER_ENCODING));
    let mut job = if content_type.starts_with("multipart/form-data") {
        let limit = service.config.max_upload_bytes;
        if declared.is_some_and(|n| n > limit.saturating_add(MULTIPART_OVERHEAD)) {
            return refuse(req, too_large(limit)).await;
        }
        if !content_type.contains("boundary=") {
            // Most often a `Content-Type` set by hand next to a client
            // library's own multipart encoding (python-requests' `files=`).
            let e = ApiError::bad_request(
                "multipart/form-data without a boundary: let the client library set the Content-Type header (do not set it by hand)",
            );
            return refuse(req, e).await;
        }
        // A boundary the multipart reader will not take (empty, unquoted
        // where it must be): known from the header alone, so refused the
        // way every early refusal is, its body read first (else the client
        // sees a reset connection instead of this answer).
        let header_only = axum::extract::Request::builder()
            .header(header::CONTENT_TYPE, content_type.as_str())
            .body(axum::body::Body::empty())
            .map_err(|e| ApiError::bad_request(e.to_string()))?;
        if let Err(e) = Multipart::from_request(header_only, &()).await {
            return refuse(req, ApiError::bad_request(format!("not a multipart body: {e}"))).await;
        }
        let mut reservation = match reserve_space(service, declared, limit) {
            Ok(r) => r,
            Err(e) => return refuse(req, e).await,
        };
        let tally = Arc::new(Tally::new(service.config.idle_timeout));
        let req = req.map(|body| bounded_multipart(body, tally.clone(), limit.saturating_add(MULTIPART_OVERHEAD)));
        let mut multipart = Multipart::from_request(req, &())
            .await
            .map_err(|e| ApiError::bad_request(format!("not a multipart body: {e}")))?;
        match read_multipart(service, &mut multipart, &tally, &mut reservation, &query_options).await {
            Ok(job) => job,
            Err(e) => {
                // A stalled body is answered at once: draining it would
                // wait out the idle timeout again.
                if e.status != StatusCode::REQUEST_TIMEOUT {
                    drain_multipart(&mut multipart, &tally).await;
                }
                if tally.overflowed.load(Ordering::Relaxed) {
                    return Err(ApiError::bad_request(format!(
                        "the multipart body has no boundary line `--BOUNDARY` or end of part headers within its first {} MiB: is the boundary in the Content-Type the one the body uses?",
                        MULTIPART_BUFFERED >> 20
                    )));
                }
                return Err(e);
            }
        }
    } else if content_type.starts_with("application/json")
        || content_type.starts_with("application/x-www-form-urlencoded")
    {
        if file_required {
            return refuse(req, ApiError::unsupported("send the audio as multipart/form-data with a `file` field"))
                .await;
        }
        let json = content_type.starts_with("application/json");
        if declared.is_some_and(|n| n > SMALL_BODY_LIMIT as u64) {
            return refuse(req, small_too_large(json)).await;
        }
        // At most 64 KiB, within the idle timeout as a whole: a client that
        // trickles a small body does not hold the connection for longer.
        let idle = service.config.idle_timeout;
        let body = tokio::time::timeout(idle, axum::body::to_bytes(req.into_body(), SMALL_BODY_LIMIT))
            .await
            .map_err(|_| {
                ApiError::new(
                    StatusCode::REQUEST_TIMEOUT,
                    "timeout",
                    format!("the body did not arrive within {} s", idle.as_secs()),
                )
            })?
            .map_err(|_| small_too_large(json))?;
        let pairs = if json {
            json_pairs(&body)?
        } else {
            url::form_urlencoded::parse(&body).map(|(k, v)| (k.into_owned(), v.into_owned())).collect()
        };
        let mut job = NewJob::empty();
        for (k, v) in pairs {
            take_text(&mut job, &k, v)?;
        }
        job
    } else if content_type.is_empty() && no_body && !query.is_empty() && !file_required {
        // No body at all, everything in the address (`requests.post(url,
        // params={"url": …})` sends `Content-Length: 0`; `curl -X POST`
        // sends neither length nor chunks, which HTTP/1.1 reads as no body).
        NewJob::empty()
    } else {
        let e = ApiError::unsupported(format!(
            "cannot read a {} body: send multipart/form-data with the audio in a `file` field{}",
            if content_type.is_empty() { "typeless" } else { content_type.as_str() },
            if file_required { "" } else { ", or JSON with a `url`" }
        ));
        return refuse(req, e).await;
    };
    // What the address gives too: an option in both places with the same
    // value is one option (a client that puts its parameters in both), two
    // values are refused, as twice in the body (`take_text`).
    for (k, v) in query {
        take_text(&mut job, &k, v)?;
    }
    // A file under a name this server does not take (`-F song=@x.mp3`) is
    // among the ignored: said with the refusal.
    let ignored = if job.ignored.is_empty() {
        String::new()
    } else {
        format!(" (ignored, not taken here: {})", job.ignored.join(", "))
    };
    match (&job.upload, &job.url) {
        (None, None) if file_required => {
            Err(ApiError::invalid_options(format!("no audio: send it in a `file` field{ignored}")))
        }
        (None, None) => Err(ApiError::invalid_options(format!("no audio: send a `file` field or a `url`{ignored}"))),
        (Some(_), Some(_)) => Err(ApiError::invalid_options("send either a file or a url, not both")),
        (None, Some(_)) if file_required => Err(ApiError::invalid_options("this endpoint takes a `file`, not a url")),
        _ => Ok(job),
    }
}

/// A JSON or urlencoded body over [`SMALL_BODY_LIMIT`]: a 413 for JSON; a
/// 415 for a urlencoded one, most often audio sent as the body itself
/// (`curl --data-binary @song.wav` sends it as a form), with how to send it.
fn small_too_large(json: bool) -> ApiError {
    if json {
        return ApiError::new(StatusCode::PAYLOAD_TOO_LARGE, "too_large", "a JSON body is at most 64 KiB");
    }
    ApiError::new(
        StatusCode::UNSUPPORTED_MEDIA_TYPE,
        "unsupported_media",
        "a form body is at most 64 KiB: send audio as multipart/form-data with a `file` field \
         (curl -F file=@song.mp3)",
    )
}

/// The slowest average pace a multipart body may arrive at, in bytes a
/// second, once its first idle timeout is spent: Apache's `mod_reqtimeout`
/// default (`body=20,MinRate=500`). A client that sends a byte just inside
/// each idle timeout held its connection, its space reservation and a slot
/// of its per-client limit for as long as it liked; one on a 2G phone
/// link (~100 kbit/s, 12 500 bytes a second) is far above it.
pub const MIN_UPLOAD_RATE: u64 = 500;

/// What a multipart body's reader took from the connection and what it
/// handed out as field data (see [`MULTIPART_BUFFERED`]), and when the
/// body began (its pace, [`MIN_UPLOAD_RATE`]).
#[derive(Debug)]
struct Tally {
    taken: AtomicU64,
    delivered: AtomicU64,
    /// The reader held more than [`MULTIPART_BUFFERED`]: the body was cut.
    overflowed: AtomicBool,
    started: tokio::time::Instant,
    /// The longest pause in the body (the server's idle timeout).
    idle: Duration,
}

impl Tally {
    fn new(idle: Duration) -> Self {
        Self {
            taken: AtomicU64::default(),
            delivered: AtomicU64::default(),
            overflowed: AtomicBool::default(),
            started: tokio::time::Instant::now(),
            idle,
        }
    }

    /// `read` (the body's next piece or part), within the idle timeout
    /// (`idle`) and within the time the bytes taken so far allow at
    /// [`MIN_UPLOAD_RATE`] after the first idle timeout.
    ///
    /// # Errors
    /// 408 when nothing came within `idle` ("stalled") or the body fell
    /// behind the pace ("too slow").
    async fn paced<T>(&self, read: impl std::future::Future<Output = T>) -> Result<T, ApiError> {
        let idle = self.idle;
        let taken = self.taken.load(Ordering::Relaxed);
        let allowed = idle.saturating_add(Duration::from_secs_f64(taken as f64 / MIN_UPLOAD_RATE as f64));
        let left = allowed.saturating_sub(self.started.elapsed());
        let wait = idle.min(left);
        tokio::time::timeout(wait, read).await.map_err(|_| {
            let message = if wait < idle {
                format!(
                    "the upload is too slow: {taken} bytes in {} s, where at least {MIN_UPLOAD_RATE} bytes a second must come",
                    self.started.elapsed().as_secs()
                )
            } else {
                format!("the upload stalled: nothing arrived for {} s", idle.as_secs())
            };
            ApiError::new(StatusCode::REQUEST_TIMEOUT, "timeout", message)
        })
    }

    fn delivered(&self, n: usize) {
        self.delivered.fetch_add(n as u64, Ordering::Relaxed);
    }
}

/// `body` for the multipart parser, ended with an error once the parser
/// holds more than [`MULTIPART_BUFFERED`] bytes it has not handed out. The
/// rest of the body (up to `limit` bytes) is read and thrown away first,
/// so the client gets the 400 instead of a reset connection.
fn bounded_multipart(body: axum::body::Body, tally: Arc<Tally>, limit: u64) -> axum::body::Body {
    use futures_util::StreamExt;
    let inner = body.into_data_stream();
    let stream = futures_util::stream::unfold((inner, tally, false), move |(mut inner, tally, ended)| async move {
        if ended {
            return None;
        }
        match inner.next().await {
            None => None,
            Some(Err(e)) => Some((Err(std::io::Error::other(e)), (inner, tally, true))),
            Some(Ok(chunk)) => {
                let taken = tally.taken.fetch_add(chunk.len() as u64, Ordering::Relaxed) + chunk.len() as u64;
                if taken.saturating_sub(tally.delivered.load(Ordering::Relaxed)) <= MULTIPART_BUFFERED {
                    return Some((Ok(chunk), (inner, tally, false)));
                }
                tally.overflowed.store(true, Ordering::Relaxed);
                let mut rest = taken;
                while let Ok(Some(Ok(c))) = tokio::time::timeout(tally.idle, inner.next()).await {
                    rest += c.len() as u64;
                    if rest > limit {
                        break;
                    }
                }
                let e = std::io::Error::other("no multipart boundary or end of part headers found");
                Some((Err(e), (inner, tally, true)))
            }
        }
    });
    axum::body::Body::from_stream(stream)
}

/// Bytes of an upload stored between two checks of the free-space floor
/// (a `statvfs` call: microseconds, against the 8 MiB's milliseconds).
const SPACE_CHECK_EVERY: u64 = 8 << 20;

/// 507 when the data folder is below its floor, or would be after
/// `incoming` bytes and the bytes that uploads in flight declared and have
/// not written yet ([`Reservation`]).
pub(crate) fn check_space(service: &Service, incoming: u64) -> Result<(), ApiError> {
    let free = upload::free_bytes(&service.data_dir).map_err(|e| ApiError::internal(format!("free space: {e}")))?;
    let pending = service.upload_reserved.load(Ordering::SeqCst);
    if free < service.config.min_free_bytes.saturating_add(incoming).saturating_add(pending) {
        return Err(no_space(service.config.min_free_bytes));
    }
    Ok(())
}

/// The part of an upload's declared length (its `Content-Length`) not
/// written yet that every other upload's check counts against the
/// free-space floor: uploads side by side each passed the floor alone, and
/// together went below it by their sum.
///
/// An upload holds only what it has shown it will send: as many bytes
/// ahead as it has written so far, at least [`SPACE_CHECK_EVERY`] (what it
/// writes before its next check), never more than it declared and has not
/// written. A client that declares 500 MB and sends a trickle (or
/// nothing, within the idle timeout) holds 8 MiB, not 500 MB: a few such
/// connections cannot make every other upload a 507. Given back as bytes
/// are written (the disk's free space then counts them) and when the
/// upload ends.
pub(crate) struct Reservation<'a> {
    total: &'a AtomicU64,
    /// Declared bytes not written yet.
    left: u64,
    /// Bytes written so far.
    sent: u64,
    /// What this upload counts in `total` now.
    held: u64,
}

impl<'a> Reservation<'a> {
    fn new(total: &'a AtomicU64, declared: u64) -> Self {
        let mut r = Reservation { total, left: declared, sent: 0, held: 0 };
        r.hold(r.ahead());
        r
    }

    /// What the upload holds after `sent` bytes.
    fn ahead(&self) -> u64 {
        self.left.min(self.sent.max(SPACE_CHECK_EVERY))
    }

    fn hold(&mut self, bytes: u64) {
        // Saturating: a declared length near 2^64 must not wrap the total.
        let (more, less) = (bytes.saturating_sub(self.held), self.held.saturating_sub(bytes));
        let _ = self
            .total
            .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |t| Some(t.saturating_add(more).saturating_sub(less)));
        self.held = bytes;
    }

    /// `n` more bytes were written.
    pub(crate) fn written(&mut self, n: u64) {
        self.left -= n.min(self.left);
        self.sent = self.sent.saturating_add(n);
        self.hold(self.ahead());
    }
}

impl Drop for Reservation<'_> {
    fn drop(&mut self) {
        self.hold(0);
    }
}

/// Check the floor for an upload of `declared` bytes (the whole of them,
/// with what other uploads hold) and reserve its share ([`Reservation`]).
/// An upload that declares no length (chunked) may send up to `most`
/// bytes: it holds its first [`SPACE_CHECK_EVERY`] ahead as a declared one
/// does, and only that is checked at its start.
///
/// # Errors
/// 507 as [`check_space`].
pub(crate) fn reserve_space(service: &Service, declared: Option<u64>, most: u64) -> Result<Reservation<'_>, ApiError> {
    // Held first, then checked with everyone's reservations, this one's
    // among them: two uploads starting at once both count each other.
    let reservation = Reservation::new(&service.upload_reserved, declared.unwrap_or(most));
    check_space(service, declared.map_or(0, |d| d - reservation.held))?;
    Ok(reservation)
}

/// The file name a part's `Content-Disposition` gives: its `filename*`
/// (RFC 8187 `charset'language'percent-encoded`, which older
/// python-requests/urllib3 and some other clients send for a name outside
/// ASCII, alone or before `filename`; multer 3.1 stops at a `filename*` it
/// meets first and reports no name), else its `filename`.
fn part_file_name(field: &axum::extract::multipart::Field<'_>) -> Option<String> {
    field
        .headers()
        .get(header::CONTENT_DISPOSITION)
        .and_then(|v| v.to_str().ok())
        .and_then(extended_file_name)
        .or_else(|| field.file_name().map(str::to_string))
}

/// The `filename*` parameter of a `Content-Disposition` value, decoded
/// (UTF-8 or ISO-8859-1, the two charsets RFC 8187 names); `None` when
/// there is none or it cannot be read.
fn extended_file_name(disposition: &str) -> Option<String> {
    disposition.split(';').find_map(|param| {
        let (key, value) = param.split_once('=')?;
        if !key.trim().eq_ignore_ascii_case("filename*") {
            return None;
        }
        let (charset, rest) = value.trim().trim_matches('"').split_once('\'')?;
        let (_language, encoded) = rest.split_once('\'')?;
        let bytes: Vec<u8> = percent_encoding::percent_decode_str(encoded).collect();
        if charset.eq_ignore_ascii_case("utf-8") {
            String::from_utf8(bytes).ok()
        } else if charset.eq_ignore_ascii_case("iso-8859-1") {
            Some(bytes.iter().map(|&b| char::from(b)).collect())
        } else {
            None
        }
    })
}

fn json_pairs(body: &[u8]) -> Result<Vec<(String, String)>, ApiError> {
    // An empty body with everything in the address (`fetch('/job?url=…',
    // {method: 'POST', headers: {'Content-Type': 'application/json'}})`):
    // no fields, as without a Content-Type.
    if body.iter().all(u8::is_ascii_whitespace) {
        return Ok(Vec::new());
    }
    let value: serde_json::Value = serde_json::from_slice(body)
        .map_err(|e| ApiError::bad_request(format!("the JSON body cannot be read: {e}")))?;
    let serde_json::Value::Object(map) = value else {
        return Err(ApiError::bad_request("the JSON body must be an object such as {\"url\": \"https://...\"}"));
    };
    let mut pairs = Vec::new();
    for (k, v) in map {
        let known = OPTION_FIELDS.contains(&k.as_str()) || URL_FIELDS.contains(&k.as_str());
        let text = match v {
            serde_json::Value::Null => continue,
            serde_json::Value::String(s) => s,
            serde_json::Value::Bool(b) => b.to_string(),
            serde_json::Value::Number(n) => n.to_string(),
            // Another server's nested options are ignored with its other
            // fields (`take_text`); one of ours must be a plain value.
            _ if !known => String::new(),
            _ => return Err(ApiError::invalid_options(format!("`{k}` must be a string, number or boolean"))),
        };
        pairs.push((k, text));
    }
    Ok(pairs)
}

fn take_text(job: &mut NewJob, name: &str, value: String) -> Result<(), ApiError> {
    let value = value.trim().to_string();
    // A field given twice with two values (`-F shifts=1 -F shifts=5`, `url`
    // and `youtube_url`) is refused: taking the last would run a job the
    // client did not mean.
    if URL_FIELDS.contains(&name) {
        if !value.is_empty() {
            if job.url.as_ref().is_some_and(|u| *u != value) {
                return Err(ApiError::invalid_options(format!(
                    "two links given ({}): send one",
                    URL_FIELDS.join(", ")
                )));
            }
            job.url = Some(value);
        }
    } else if OPTION_FIELDS.contains(&name) {
        if !value.is_empty() {
            if job.fields.get(name).is_some_and(|v| *v != value) {
                return Err(ApiError::invalid_options(format!("`{name}` is given twice, with two values")));
            }
            job.fields.insert(name.to_string(), value);
        }
    } else if FILE_FIELDS.contains(&name) {
        return Err(ApiError::invalid_options(format!("`{name}` must be a file part (curl -F '{name}=@song.mp3')")));
    } else {
        job.ignore(name);
    }
    Ok(())
}

/// Read and discard the rest of a multipart body refused part way (an
/// unknown field, a second file): up to the upload limit, each chunk within
/// the idle timeout, as a valid upload of that size would be read. Clients
/// (python-requests and httpx put their `data=` fields before the file)
/// then see the answer, not a connection reset.
///
/// Every field is read through, chunk by chunk: a field the parser skipped
/// unseen would count as held (see [`MULTIPART_BUFFERED`]), and its whole
/// rest would have to come within one idle timeout.
async fn drain_multipart(multipart: &mut Multipart, tally: &Tally) {
    while let Ok(Ok(Some(mut field))) = tally.paced(multipart.next_field()).await {
        if !drain_field(&mut field, tally).await {
            return;
        }
    }
}

/// Read and discard the rest of `field`, each chunk within the idle timeout and the
/// body's pace ([`Tally::paced`]); false when the body broke off, stalled
/// or fell behind (nothing more to read).
async fn drain_field(field: &mut axum::extract::multipart::Field<'_>, tally: &Tally) -> bool {
    loop {
        match tally.paced(field.chunk()).await {
            Ok(Ok(Some(chunk))) => tally.delivered(chunk.len()),
            Ok(Ok(None)) => return true,
            _ => return false,
        }
    }
}

/// The options given so far, checked as [`job_options`] checks them, so a
/// bad one is refused before the upload is stored (they are checked again,
/// all of them, once the body is read).
///
/// # Errors
/// 422 as [`job_options`]; 500 when the settings cannot be read.
fn early_options_check(service: &Service, fields: &BTreeMap<String, String>) -> Result<(), ApiError> {
    // Only what does not depend on a field still to come: a bit depth or
    // bit rate with its format given, a two-stem choice with its model
    // given (else checked against the settings, which a later `format` or
    // `model` overrides: `bit_depth=32` before `format=wav` with FLAC saved).
    let has = |k: &str| fields.contains_key(k);
    let format_given = has("format") || fields.get("mp3").is_some_and(|v| parse_bool("mp3", v).unwrap_or(false));
    let checked: BTreeMap<String, String> = fields
        .iter()
        .filter(|(k, _)| match k.as_str() {
            "bit_depth" | "mp3_bitrate" => format_given,
            "two_stems" => has("model"),
            _ => true,
        })
        .map(|(k, v)| (k.clone(), v.clone()))
        .collect();
    if checked.is_empty() {
        return Ok(());
    }
    job_options(service.base_options()?, &checked, &service.manifest).map(|_| ())
}

async fn read_multipart(
    service: &Service,
    multipart: &mut Multipart,
    tally: &Tally,
    reservation: &mut Reservation<'_>,
    query_options: &BTreeMap<String, String>,
) -> Result<NewJob, ApiError> {
    let bad = |e: axum::extract::multipart::MultipartError| {
        if e.status() == StatusCode::PAYLOAD_TOO_LARGE {
            too_large(service.config.max_upload_bytes)
        } else {
            ApiError::bad_request(format!("the multipart body cannot be read: {}", e.body_text()))
        }
    };
    let mut job = NewJob::empty();
    let mut count = 0;
    let mut ignored_bytes: u64 = 0;
    // The next piece of a part, or its end, within the idle timeout and
    // the body's pace.
    let next_chunk =
        async |field: &mut axum::extract::multipart::Field<'_>| tally.paced(field.chunk()).await?.map_err(bad);
    while let Some(mut field) = tally.paced(multipart.next_field()).await?.map_err(bad)? {
        let taken: Result<(), ApiError> = async {
            count += 1;
            if count > MAX_FIELDS {
                return Err(ApiError::invalid_options(format!("more than {MAX_FIELDS} fields")));
            }
            let name = field.name().unwrap_or("").to_string();
            let file_name = part_file_name(&field);
            // A file part has a file name, or at least a type (multer hides a
            // file name that is not UTF-8; the part is still the file).
            if FILE_FIELDS.contains(&name.as_str()) && (file_name.is_some() || field.content_type().is_some()) {
                // A browser sends a file input left empty as a part with an
                // empty file name and no bytes (`new FormData(form)`): no
                // file, as FastAPI servers take it (`if file.filename`), so
                // a link beside it is what the form asked for.
                let mut first = None;
                if file_name.as_deref() == Some("") {
                    // (The parser may hand out empty chunks first.)
                    while first.is_none() {
                        match next_chunk(&mut field).await? {
                            None => return Ok(()),
                            Some(chunk) if chunk.is_empty() => {}
                            Some(chunk) => first = Some(chunk),
                        }
                    }
                }
                if job.upload.is_some() {
                    return Err(ApiError::invalid_options("one file per job"));
                }
                // The options sent before the file (and in the address),
                // before the file is stored.
                let mut given = job.fields.clone();
                given.extend(query_options.iter().map(|(k, v)| (k.clone(), v.clone())));
                early_options_check(service, &given)?;
                job.client_name = file_name;
                let part = PartFile::new(&service.uploads, &upload::new_name(job.client_name.as_deref()));
                let mut file = tokio::fs::File::create(part.part_path())
                    .await
                    .map_err(|e| ApiError::internal(format!("cannot store the upload: {e}")))?;
                // A full disk is the floor's 507, whichever write finds it.
                let store_err = |e: std::io::Error| {
                    if e.raw_os_error() == Some(libc::ENOSPC) {
                        no_space(service.config.min_free_bytes)
                    } else {
                        ApiError::internal(format!("cannot store the upload: {e}"))
                    }
                };
                let mut written: u64 = 0;
                let mut checked: u64 = 0;
                loop {
                    let chunk = match first.take() {
                        Some(chunk) => chunk,
                        None => match next_chunk(&mut field).await? {
                            Some(chunk) => chunk,
                            None => break,
                        },
                    };
                    tally.delivered(chunk.len());
                    written += chunk.len() as u64;
                    if written > service.config.max_upload_bytes {
                        return Err(too_large(service.config.max_upload_bytes));
                    }
                    // The floor again as the file grows: a chunked upload
                    // declares no length, and uploads running side by side each
                    // passed the check at their start.
                    if written - checked >= SPACE_CHECK_EVERY {
                        reservation.written(written - checked);
                        checked = written;
                        check_space(service, 0)?;
                    }
                    file.write_all(&chunk).await.map_err(store_err)?;
                }
                file.flush().await.map_err(store_err)?;
                // On disk before it is named and queued: a power cut must
                // not leave a queued job whose upload is cut short.
                file.sync_all().await.map_err(store_err)?;
                drop(file);
                if written == 0 {
                    return Err(ApiError::unsupported("the file is empty"));
                }
                job.upload =
                    Some(part.finish().map_err(|e| ApiError::internal(format!("cannot store the upload: {e}")))?);
            } else {
                let known = |fields: &[&str]| fields.contains(&name.as_str());
                if !known(URL_FIELDS) && !known(OPTION_FIELDS) && !known(FILE_FIELDS) {
                    // Read through and thrown away: a file under another
                    // name (`-F song=@x.mp3`, a cover image beside the
                    // song) is ignored whole, not taken for a long text.
                    // (Left to the parser to skip, its bytes counted as
                    // held, and a part over 4 MiB was called a body with
                    // no boundary.) All such parts together may be as
                    // large as an upload.
                    job.ignore(&name);
                    while let Some(chunk) = next_chunk(&mut field).await? {
                        tally.delivered(chunk.len());
                        ignored_bytes += chunk.len() as u64;
                        if ignored_bytes > service.config.max_upload_bytes {
                            return Err(too_large(service.config.max_upload_bytes));
                        }
                    }
                    return Ok(());
                }
                let mut text = Vec::new();
                while let Some(chunk) = next_chunk(&mut field).await? {
                    tally.delivered(chunk.len());
                    text.extend_from_slice(&chunk);
                    if text.len() > TEXT_FIELD_LIMIT {
                        return Err(ApiError::invalid_options(format!(
                            "the field `{}` is longer than {TEXT_FIELD_LIMIT} bytes{}",
                            name.chars().take(64).collect::<String>(),
                            if FILE_FIELDS.contains(&name.as_str()) {
                                " (send a file part with a file name)"
                            } else {
                                ""
                            }
                        )));
                    }
                }
                let text = String::from_utf8(text)
                    .map_err(|_| ApiError::invalid_options(format!("the field `{name}` is not UTF-8 text")))?;
                take_text(&mut job, &name, text)?;
            }
            Ok(())
        }
        .await;
        if let Err(e) = taken {
            // The rest of this field is read here, chunk by chunk, so the
            // parser never skips it unseen (see [`drain_multipart`]); not
            // after the body stalled (another idle wait, for nothing).
            if e.status != StatusCode::REQUEST_TIMEOUT {
                drain_field(&mut field, tally).await;
            }
            return Err(e);
        }
    }
    Ok(job)
}

fn parse_bool(name: &str, v: &str) -> Result<bool, ApiError> {
    match v.to_ascii_lowercase().as_str() {
        "1" | "true" | "yes" | "on" => Ok(true),
        "0" | "false" | "no" | "off" => Ok(false),
        _ => Err(ApiError::invalid_options(format!("`{name}` must be true or false, got {v}"))),
    }
}

fn parse_num<T: std::str::FromStr>(name: &str, v: &str, what: &str) -> Result<T, ApiError> {
    v.parse().map_err(|_| ApiError::invalid_options(format!("`{name}` must be {what}, got {v}")))
}

/// The options a job runs with: `base` (the saved settings) changed by the
/// fields. `mp3=true` (the `demucs` CLI's `--mp3`) means `format=mp3`;
/// `mp3_bitrate` applies to MP3 only and `bit_depth` to WAV and FLAC (each is
/// ignored for the other formats, as `demucs` ignores `--mp3-bitrate`
/// without `--mp3`). MP3 defaults to 320 kbit/s (`demucs`'s default), FLAC
/// to 24 bits, WAV to 16 bits.
///
/// # Errors
/// 422 naming the field for an unknown model, stem, format, or a value out
/// of range.
pub fn job_options(
    base: JobOptions,
    fields: &BTreeMap<String, String>,
    manifest: &Manifest,
) -> Result<JobOptions, ApiError> {
    let mut o = base;
    if let Some(p) = fields.get("preset") {
        let preset: Preset = p.parse().map_err(|e: String| ApiError::invalid_options(format!("`preset`: {e}")))?;
        o.apply_preset(preset);
    }
    // A model, shifts or overlap of its own makes the job "custom".
    if ["model", "shifts", "overlap"].iter().any(|k| fields.contains_key(*k)) {
        o.preset = None;
    }
    if let Some(m) = fields.get("model") {
        if manifest.models.iter().all(|e| &e.id != m) {
            let ids: Vec<&str> = manifest.models.iter().map(|e| e.id.as_str()).collect();
            return Err(ApiError::invalid_options(format!("unknown model {m}: this server has {}", ids.join(", "))));
        }
        o.model = m.clone();
    }
    let sources = manifest.models.iter().find(|e| e.id == o.model).map(|e| e.sources.clone()).unwrap_or_default();
    if let Some(s) = fields.get("two_stems") {
        let s = s.to_ascii_lowercase();
        o.two_stems = match s.as_str() {
            "none" | "false" | "0" => None,
            _ if sources.contains(&s) => Some(s),
            _ => {
                return Err(ApiError::invalid_options(format!(
                    "unknown stem {s} for two_stems: {} has {}",
                    o.model,
                    sources.join(", ")
                )))
            }
        };
    }
    if let Some(v) = fields.get("shifts") {
        o.shifts = parse_num("shifts", v, "a whole number from 0 to 20")?;
        if o.shifts as usize > MAX_SHIFTS {
            return Err(ApiError::invalid_options(format!("`shifts` must be 0 to {MAX_SHIFTS}, got {v}")));
        }
    }
    if let Some(v) = fields.get("overlap") {
        let x: f32 = parse_num("overlap", v, "a number from 0 to 0.99")?;
        if !(0.0..=MAX_OVERLAP).contains(&x) {
            return Err(ApiError::invalid_options(format!("`overlap` must be from 0 to {MAX_OVERLAP}, got {v}")));
        }
        o.overlap = x;
    }
    let mut format = match fields.get("format").map(|f| f.to_ascii_lowercase()) {
        None => None,
        Some(f) if f == "wav" || f == "flac" || f == "mp3" => Some(f),
        Some(f) => return Err(ApiError::invalid_options(format!("`format` must be wav, flac or mp3, got {f}"))),
    };
    if let Some(v) = fields.get("mp3") {
        if parse_bool("mp3", v)? {
            if format.as_deref().is_some_and(|f| f != "mp3") {
                return Err(ApiError::invalid_options("mp3=true and a format other than mp3 contradict each other"));
            }
            format = Some("mp3".into());
        }
    }
    let depth: Option<u8> = fields.get("bit_depth").map(|v| parse_num("bit_depth", v, "16, 24 or 32")).transpose()?;
    let kbps: Option<u16> =
        fields.get("mp3_bitrate").map(|v| parse_num("mp3_bitrate", v, "a bit rate in kbit/s")).transpose()?;
    let format = format.unwrap_or_else(|| o.format.extension().to_string());
    o.format = match format.as_str() {
        // Any bit rate, as the nearest LAME has (what demucs' `--mp3-bitrate`
        // gets through lameenc, and `stemroom separate` takes).
        "mp3" => OutputFormat::Mp3 {
            kbps: kbps.map(stemroom_engine::audio::encode::nearest_mp3_bitrate).unwrap_or(match o.format {
                OutputFormat::Mp3 { kbps } => kbps,
                _ => 320,
            }),
        },
        "flac" => OutputFormat::Flac {
            bits: depth.unwrap_or(match o.format {
                OutputFormat::Flac { bits } => bits,
                _ => 24,
            }),
        },
        _ => OutputFormat::Wav {
            depth: match depth {
                None => match o.format {
                    OutputFormat::Wav { depth } => depth,
                    _ => WavDepth::Int16,
                },
                Some(16) => WavDepth::Int16,
                Some(24) => WavDepth::Int24,
                Some(32) => WavDepth::Float32,
                Some(d) => {
                    return Err(ApiError::invalid_options(format!(
                        "`bit_depth` for wav must be 16, 24 or 32 (float), got {d}"
                    )))
                }
            },
        },
    };
    o.format.validate().map_err(ApiError::invalid_options)?;
    Ok(o)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fields(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
        pairs.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect()
    }

    fn base() -> JobOptions {
        stemroom_library::queue::Settings::default().job_options()
    }

    #[test]
    fn an_upload_holds_only_what_it_has_shown_it_sends() {
        const MIB: u64 = 1 << 20;
        let total = AtomicU64::new(0);
        let held = || total.load(Ordering::SeqCst);
        {
            // 500 MB declared, nothing sent: the first 8 MiB only.
            let mut big = Reservation::new(&total, 500_000_000);
            assert_eq!(held(), 8 * MIB);
            // A small one beside it holds all of its 3 bytes.
            let small = Reservation::new(&total, 3);
            assert_eq!(held(), 8 * MIB + 3);
            drop(small);
            // 8 MiB sent: 8 MiB more ahead; 100 MiB sent: 100 MiB ahead.
            big.written(8 * MIB);
            assert_eq!(held(), 8 * MIB);
            big.written(92 * MIB);
            assert_eq!(held(), 100 * MIB);
            // Near the end: no more than it declared and has not sent.
            big.written(350 * MIB);
            assert_eq!(held(), 500_000_000 - 450 * MIB);
            // More than it declared (a chunked part after a wrong length).
            big.written(100 * MIB);
            assert_eq!(held(), 0);
            let _huge = Reservation::new(&total, u64::MAX);
            assert_eq!(held(), 8 * MIB);
        }
        assert_eq!(held(), 0, "all given back");
    }

    #[test]
    fn an_extended_file_name_is_decoded() {
        let name = |d: &str| extended_file_name(d);
        assert_eq!(
            name("form-data; name=\"file\"; filename*=UTF-8''Caf%C3%A9%20No.1.wav").as_deref(),
            Some("Café No.1.wav")
        );
        assert_eq!(
            name("form-data; filename*=utf-8'en'a+b.mp3; filename=\"fallback.mp3\"").as_deref(),
            Some("a+b.mp3"),
            "a plus is a plus, not a space"
        );
        assert_eq!(name("form-data; FILENAME*=iso-8859-1''caf%E9.flac").as_deref(), Some("café.flac"));
        assert_eq!(name("form-data; name=\"file\"; filename=\"plain.wav\""), None);
        assert_eq!(name("form-data; filename*=UTF-8''%FF.wav"), None, "not UTF-8");
        assert_eq!(name("form-data; filename*=koi8-r''x.wav"), None);
        assert_eq!(name("form-data; filename*=broken"), None);
    }

    #[test]
    fn a_field_given_twice_with_two_values_is_refused() {
        let mut job = NewJob::empty();
        take_text(&mut job, "shifts", "1".into()).unwrap();
        take_text(&mut job, "shifts", "1".into()).expect("the same value again is the same job");
        let e = take_text(&mut job, "shifts", "5".into()).unwrap_err();
        assert!(e.message.contains("given twice"), "{e:?}");
        take_text(&mut job, "url", "https://a.example/x".into()).unwrap();
        let e = take_text(&mut job, "youtube_url", "https://b.example/y".into()).unwrap_err();
        assert!(e.message.contains("two links"), "{e:?}");
    }

    /// An ignored field's name is logged and answered without its control
    /// characters (a line break in it forged a log line), cut to 64.
    #[test]
    fn ignored_names_lose_their_control_characters() {
        let mut job = NewJob::empty();
        job.ignore("x\n2026-01-01T00:00:00Z  WARN stemroom: forged");
        job.ignore(&"y".repeat(100));
        assert_eq!(job.ignored[0], "x?2026-01-01T00:00:00Z  WARN stemroom: forged");
        assert_eq!(job.ignored[1].len(), 64);
    }

    #[test]
    fn options_from_fields() {
        let m = Manifest::builtin().unwrap();
        let o = job_options(base(), &fields(&[("preset", "best")]), &m).unwrap();
        assert_eq!((o.model.as_str(), o.shifts, o.overlap, o.preset), ("htdemucs", 2, 0.5, Some(Preset::Best)));
        let o = job_options(base(), &fields(&[("preset", "best"), ("overlap", "0.3")]), &m).unwrap();
        assert_eq!((o.shifts, o.overlap, o.preset), (2, 0.3, None), "an option of its own makes it custom");
        assert!(job_options(base(), &fields(&[("preset", "fastest")]), &m).is_err());
        let o = job_options(base(), &fields(&[("two_stems", "vocals"), ("mp3", "true"), ("shifts", "2")]), &m).unwrap();
        assert_eq!(o.two_stems.as_deref(), Some("vocals"));
        assert_eq!(o.format, OutputFormat::Mp3 { kbps: 320 });
        assert_eq!(o.shifts, 2);
        let o = job_options(base(), &fields(&[("format", "flac"), ("bit_depth", "16")]), &m).unwrap();
        assert_eq!(o.format, OutputFormat::Flac { bits: 16 });
        let o = job_options(base(), &fields(&[("format", "WAV"), ("bit_depth", "32"), ("mp3_bitrate", "128")]), &m)
            .unwrap();
        assert_eq!(o.format, OutputFormat::Wav { depth: WavDepth::Float32 });
        let o = job_options(base(), &fields(&[("format", "mp3"), ("mp3_bitrate", "192")]), &m).unwrap();
        assert_eq!(o.format, OutputFormat::Mp3 { kbps: 192 });
        assert_eq!(job_options(base(), &fields(&[("two_stems", "none")]), &m).unwrap().two_stems, None);
    }

    #[test]
    fn bad_values_are_422_naming_the_field() {
        let m = Manifest::builtin().unwrap();
        for (k, v) in [
            ("model", "mdx_extra"),
            ("two_stems", "guitar"),
            ("shifts", "-1"),
            ("shifts", "21"),
            ("overlap", "1"),
            ("overlap", "nan"),
            ("format", "ogg"),
            ("mp3", "maybe"),
            ("bit_depth", "20"),
        ] {
            let e = job_options(base(), &fields(&[(k, v)]), &m).unwrap_err();
            assert_eq!(e.status, StatusCode::UNPROCESSABLE_ENTITY, "{k}={v}");
            assert!(e.message.contains(k) || e.message.contains(v), "{k}={v}: {}", e.message);
        }
        // A bit rate LAME lacks is its nearest, as demucs takes it.
        let o = job_options(base(), &fields(&[("format", "mp3"), ("mp3_bitrate", "100")]), &m).unwrap();
        assert_eq!(o.format, OutputFormat::Mp3 { kbps: 96 });
        let e = job_options(base(), &fields(&[("format", "mp3"), ("mp3_bitrate", "fast")]), &m).unwrap_err();
        assert_eq!(e.status, StatusCode::UNPROCESSABLE_ENTITY);
        let e = job_options(base(), &fields(&[("format", "flac"), ("bit_depth", "32")]), &m).unwrap_err();
        assert_eq!(e.status, StatusCode::UNPROCESSABLE_ENTITY);
    }
}

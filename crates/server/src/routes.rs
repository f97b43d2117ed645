//! The handlers and the router. Every handler names jobs by id and stems by
//! name: no path from a client ever reaches the file system.

use std::convert::Infallible;
use std::net::{IpAddr, SocketAddr};
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use axum::body::Body;
use axum::extract::{ConnectInfo, DefaultBodyLimit, Path as UrlPath, Query, Request, State};
use axum::http::{header, HeaderValue, StatusCode};
use axum::response::sse::{Event, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use serde::Deserialize;
use stemroom_engine::ErrorCode;
use stemroom_library::queue::{Job, JobId, JobState};
use tokio::sync::broadcast::error::RecvError;
use tower_http::cors::{AllowOrigin, CorsLayer};
use tower_http::timeout::TimeoutLayer;
use tower_http::trace::TraceLayer;

use crate::archive::{self, Entry};
use crate::error::ApiError;
use crate::events::Update;
use crate::service::Service;
use crate::view::{Created, Deleted, Health, JobList, JobView, ServerStatus, Status};

type Shared = State<Arc<Service>>;

/// The router with every endpoint, the token check, limits and timeouts.
pub fn router(service: Arc<Service>) -> Router {
    // Reads answer within the request timeout or say 503 with a
    // `Retry-After` (the server was slow, not the client: 408 would say
    // the client was, and browsers send a 408's request again at once). A
    // deletion is not cut by it: it gives up waiting for a running job
    // itself (503, before the timeout) and, once it removes files, answers
    // when they are gone; a timeout while the removal went on would
    // misreport it.
    let timeout = TimeoutLayer::with_status_code(StatusCode::SERVICE_UNAVAILABLE, service.config.request_timeout);
    let quick = Router::new()
        .route("/", get(root).layer(timeout))
        .route("/health", get(health).layer(timeout))
        .route("/status", get(server_status).layer(timeout))
        .route("/status/{id}", get(job_status).layer(timeout))
        .route("/job/{id}", get(job_status).layer(timeout).delete(delete_job))
        .route("/api/jobs/{id}", get(job_status).layer(timeout))
        .route("/jobs", get(list_jobs).layer(timeout))
        .route("/jobs/{id}", get(job_status).layer(timeout).delete(delete_job))
        .route("/openapi.json", get(openapi_json).layer(timeout))
        .route("/docs", get(docs).layer(timeout));
    let body_limit = usize::try_from(service.config.max_upload_bytes.saturating_add(crate::form::MULTIPART_OVERHEAD))
        .unwrap_or(usize::MAX);
    let uploads = Router::new()
        .route("/upload", post(upload))
        .route("/job", post(create_job))
        .route("/api/stemify", post(stemify))
        .route("/separate", post(separate))
        .layer(DefaultBodyLimit::max(body_limit));
    let files = Router::new()
        .route("/download/{id}", get(download))
        .route("/result/{id}", get(download))
        .route("/stems/{id}/{stem}", get(stem))
        .route("/events/{id}", get(events));
    let mut app = quick
        .merge(uploads)
        .merge(files)
        .merge(crate::broker::routes())
        .fallback(not_found)
        .method_not_allowed_fallback(method_not_allowed)
        .layer(axum::middleware::from_fn_with_state(service.clone(), crate::auth::require_token))
        .layer(axum::middleware::from_fn(json_errors))
        // Spans name the method and path, never the query (where an
        // `EventSource` client puts its token).
        .layer(TraceLayer::new_for_http().make_span_with(
            |req: &Request| tracing::debug_span!("request", method = %req.method(), path = %req.uri().path()),
        ));
    if !service.config.cors.is_empty() {
        let origins = if service.config.cors.iter().any(|o| o == "*") {
            AllowOrigin::any()
        } else {
            AllowOrigin::list(service.config.cors.iter().filter_map(|o| HeaderValue::from_str(o).ok()))
        };
        app = app.layer(
            CorsLayer::new()
                .allow_origin(origins)
                .allow_methods([axum::http::Method::GET, axum::http::Method::POST, axum::http::Method::DELETE])
                // `Last-Event-ID`: a fetch-based event-stream client (the
                // only way a page sends `Authorization` with one) resumes
                // with it after a drop.
                // `Range` / `If-Range`: a page's script fetching a stem in
                // parts or resuming it.
                .allow_headers([
                    header::AUTHORIZATION,
                    header::CONTENT_TYPE,
                    header::RANGE,
                    header::IF_RANGE,
                    axum::http::HeaderName::from_static("last-event-id"),
                    // The npm `eventsource` polyfill (a page's way to send
                    // `Authorization` with an event stream) sends it.
                    header::CACHE_CONTROL,
                    axum::http::HeaderName::from_static(crate::auth::API_KEY_HEADER),
                ])
                // What a page's script may read of an answer beyond the
                // CORS-safelisted headers: a download's name, a 429's wait,
                // the job a `/separate` answer belongs to, a part's place.
                .expose_headers([
                    header::CONTENT_DISPOSITION,
                    header::RETRY_AFTER,
                    header::CONTENT_RANGE,
                    header::ACCEPT_RANGES,
                    axum::http::HeaderName::from_static("x-job-id"),
                ]),
        );
    }
    app.with_state(service)
}

/// Every error answer in the one JSON shape ([`ApiError`]): axum's own
/// refusals (a query or path it cannot parse, a method an endpoint does not
/// take, a body over the limit) come as plain text or empty; they keep
/// their status and headers (`Allow`, `Retry-After`) and their text becomes
/// the `detail`.
async fn json_errors(req: Request, next: axum::middleware::Next) -> Response {
    let r = next.run(req).await;
    let status = r.status();
    let json = r
        .headers()
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|t| t.starts_with("application/json"));
    if !(status.is_client_error() || status.is_server_error()) || json {
        return r;
    }
    let (parts, body) = r.into_parts();
    // axum's refusals are a line of text; anything longer is cut.
    let text = axum::body::to_bytes(body, 4096)
        .await
        .map(|b| String::from_utf8_lossy(&b).trim().to_string())
        .unwrap_or_default();
    let (code, fallback) = match status {
        StatusCode::BAD_REQUEST => ("bad_request", "the request cannot be read"),
        StatusCode::NOT_FOUND => ("not_found", NO_ENDPOINT),
        StatusCode::METHOD_NOT_ALLOWED => ("method_not_allowed", NO_METHOD),
        StatusCode::REQUEST_TIMEOUT => ("timeout", "the request took too long"),
        StatusCode::PAYLOAD_TOO_LARGE => ("too_large", "the request body is too large"),
        StatusCode::UNSUPPORTED_MEDIA_TYPE => ("unsupported_media", "this content type is not taken here"),
        StatusCode::UNPROCESSABLE_ENTITY => ("invalid_options", "the request's fields cannot be used"),
        StatusCode::TOO_MANY_REQUESTS => ("rate_limited", "too many requests: try again later"),
        // The request timeout's answer (`TimeoutLayer`).
        StatusCode::SERVICE_UNAVAILABLE => ("unavailable", "the server is busy: ask again in a few seconds"),
        s if s.is_server_error() => ("internal", "the server failed"),
        _ => ("error", "the request was refused"),
    };
    let mut answer =
        ApiError::new(status, code, if text.is_empty() { fallback.to_string() } else { text }).into_response();
    for (name, value) in &parts.headers {
        if name != header::CONTENT_TYPE && name != header::CONTENT_LENGTH {
            answer.headers_mut().append(name.clone(), value.clone());
        }
    }
    if status == StatusCode::SERVICE_UNAVAILABLE && !answer.headers().contains_key(header::RETRY_AFTER) {
        answer.headers_mut().insert(header::RETRY_AFTER, crate::error::UNAVAILABLE_RETRY_SECONDS.into());
    }
    answer
}

/// What a request for an endpoint that does not exist hears.
const NO_ENDPOINT: &str = "no such endpoint: see /openapi.json";
/// What a request with a method its endpoint does not take hears.
const NO_METHOD: &str = "this endpoint does not take this method: see /openapi.json";

/// 404, after reading what the client sends (a file posted to a wrong
/// address, `/separate/` for `/separate`: see [`crate::error::drain`]).
async fn not_found(req: Request) -> ApiError {
    crate::error::drain(req).await;
    ApiError::not_found(NO_ENDPOINT)
}

/// 405 with the `Allow` header axum adds, after reading what the client
/// sends (`PUT /upload` with a file).
async fn method_not_allowed(req: Request) -> ApiError {
    crate::error::drain(req).await;
    ApiError::new(StatusCode::METHOD_NOT_ALLOWED, "method_not_allowed", NO_METHOD)
}

/// A job id from the URL: decimal digits only, else 404.
fn job_id(raw: &str) -> Result<JobId, ApiError> {
    if raw.is_empty() || raw.len() > 10 || !raw.bytes().all(|b| b.is_ascii_digit()) {
        return Err(ApiError::not_found(format!("no job {}", raw.chars().take(64).collect::<String>())));
    }
    raw.parse().map_err(|_| ApiError::not_found(format!("no job {raw}")))
}

fn health_body() -> Health {
    Health { status: "ok".into(), service: "stemroom".into(), version: env!("CARGO_PKG_VERSION").into() }
}

/// Liveness (needs the token, unlike `/health`).
#[utoipa::path(get, path = "/", tag = "health", responses((status = 200, body = Health)))]
pub async fn root() -> Json<Health> {
    Json(health_body())
}

/// Liveness, without a token (for load balancers and container health checks).
#[utoipa::path(get, path = "/health", tag = "health", security(()), responses((status = 200, body = Health)))]
pub async fn health() -> Json<Health> {
    Json(health_body())
}

/// The server: model ready, jobs running and waiting, provider.
#[utoipa::path(get, path = "/status", tag = "health", responses((status = 200, body = ServerStatus)))]
pub async fn server_status(State(service): Shared) -> Result<Json<ServerStatus>, ApiError> {
    let (models_ready, models_problem) = service.models_ready().await;
    // Where the server keeps its files is its own business (a corrupt
    // model's message names its file).
    let models_problem = models_problem.map(|m| named_places(&m, &server_places(&service)));
    let jobs = service.queue.queue()?;
    let queue_length = jobs.iter().filter(|j| matches!(j.state, JobState::Queued)).count() as u32;
    let active = match &service.broker {
        Some(_) => jobs.iter().filter(|j| j.state.is_running()).count() as u32,
        None => service.worker.running().len() as u32,
    };
    let device =
        service.config.device.unwrap_or_else(|| service.queue.settings().map(|s| s.device).unwrap_or_default());
    let device = device.as_str().to_string();
    let provider = service.queue.last_provider().ok().flatten().unwrap_or_else(|| device.clone());
    Ok(Json(ServerStatus {
        status: "ok".into(),
        version: env!("CARGO_PKG_VERSION").into(),
        models_ready,
        models_problem,
        active_jobs: active,
        queue_length,
        concurrency: service.config.jobs as u32,
        provider,
        device,
        broker: service.broker.as_ref().map(|b| b.shown.clone()),
        workers: service.broker.as_ref().map(|b| b.workers()),
    }))
}

fn view(service: &Service, job: &Job) -> JobView {
    with_worker(
        service,
        job,
        JobView::new(job, service.events.progress_of(job.id).as_ref(), service.events.segments_of(job.id)),
    )
}

/// With a broker: the worker that runs or ran the job. Its error without
/// where this machine keeps things (see [`without_paths`]).
fn with_worker(service: &Service, job: &Job, mut v: JobView) -> JobView {
    if service.broker.is_some() {
        v.worker = v.job_id.parse().ok().and_then(|id| service.queue.broker_worker(id).ok().flatten());
    }
    if let Some(e) = v.error.take() {
        v.error = Some(without_paths(service, job, &e));
    }
    v
}

/// `message` (a failed job's, which names files: "… is truncated",
/// "cannot write …") with the job's input, the library folder and the
/// server's data folder (its uploads) named by what they are, not where
/// they are: a client learns nothing of this machine's folders.
pub(crate) fn without_paths(service: &Service, job: &Job, message: &str) -> String {
    let mut places: Vec<(String, &str)> = Vec::new();
    if let stemroom_library::queue::JobSource::File { path } = &job.source {
        places.push((path.clone(), "the input file"));
    }
    places.extend(server_places(service));
    named_places(message, &places)
}

/// `message` (about no job: a link refused before it was queued) with the
/// server's own folders named instead of shown (yt-dlp's places when it is
/// missing, a cache path in its own errors).
pub(crate) fn without_server_paths(service: &Service, message: &str) -> String {
    named_places(message, &server_places(service))
}

/// The server's own folders, the more particular first, each with the name
/// a client sees in its place.
fn server_places(service: &Service) -> Vec<(String, &'static str)> {
    let mut places: Vec<(String, &str)> = Vec::new();
    // Every folder a model is looked for in (`--model-dir`,
    // `STEMROOM_MODEL_DIR`, beside the program, the cache's): a damaged
    // model's message names its file.
    for dir in stemroom_engine::model::model_search_dirs(service.config.model_dir.as_deref()) {
        places.push((dir.to_string_lossy().into_owned(), "the server's model folder"));
    }
    places.push((service.library_dir().to_string_lossy().into_owned(), "the library folder"));
    places.push((service.data_dir.to_string_lossy().into_owned(), "the server's data folder"));
    // Models and runtimes (`~/.cache/stemroom`), then anything else of the
    // account running the server.
    if let Some(cache) = stemroom_engine::paths::cache_dir() {
        places.push((cache.to_string_lossy().into_owned(), "Stemroom's cache folder"));
    }
    if let Some(home) = std::env::var_os("HOME").filter(|h| h.len() > 1) {
        places.push((home.to_string_lossy().into_owned(), "the server's home folder"));
    }
    places
}

/// `message` with each of `places`' paths (in their order: the more
/// particular first) replaced by its name, where the path is whole (not
/// `/srv/data` in `/srv/database`).
fn named_places(message: &str, places: &[(String, &str)]) -> String {
    let mut out = message.to_string();
    for (path, name) in places {
        let path = path.trim_end_matches(['/', '\\']);
        // Only whole absolute paths: a relative one (`models`) is a word of
        // the message too.
        if path.is_empty() || !std::path::Path::new(path).is_absolute() {
            continue;
        }
        let mut done = String::with_capacity(out.len());
        let mut rest = out.as_str();
        let part_of_a_name = |c: char| c.is_alphanumeric() || matches!(c, '.' | '_' | '-');
        while let Some(at) = rest.find(path) {
            let after = &rest[at + path.len()..];
            // Not the start of a longer path (`/srv/data` in
            // `/srv/database`) nor the end of one (`/data` in `/srv/data`).
            let before = rest[..at].chars().last().or_else(|| done.chars().last());
            let whole =
                after.chars().next().is_none_or(|c| !part_of_a_name(c)) && before.is_none_or(|c| !part_of_a_name(c));
            done.push_str(&rest[..at]);
            done.push_str(if whole { name } else { path });
            rest = after;
        }
        done.push_str(rest);
        out = done;
    }
    out
}

/// A job's status, progress (`details.completed_segments` of
/// `details.total_segments`), error, and stem URLs once completed. Also at
/// `/job/{id}` and `/api/jobs/{id}`.
#[utoipa::path(get, path = "/status/{id}", tag = "jobs",
    params(("id" = String, Path, description = "Job id")),
    responses((status = 200, body = JobView), (status = 404, description = "No such job")))]
pub async fn job_status(State(service): Shared, UrlPath(id): UrlPath<String>) -> Result<Json<JobView>, ApiError> {
    let job = service.queue.get(job_id(&id)?)?;
    Ok(Json(view(&service, &job)))
}

/// Paging of `GET /jobs`.
#[derive(Debug, Deserialize, utoipa::IntoParams)]
pub struct Paging {
    /// 1-based page (default 1).
    pub page: Option<u32>,
    /// Jobs per page, 1 to 500 (default 50).
    pub per_page: Option<u32>,
    /// Same as `per_page`.
    pub limit: Option<u32>,
    /// Jobs to skip (instead of `page`).
    pub offset: Option<u32>,
}

/// Every job, newest first, a page at a time.
#[utoipa::path(get, path = "/jobs", tag = "jobs", params(Paging),
    responses((status = 200, body = JobList), (status = 422, description = "A paging number that is not one")))]
pub async fn list_jobs(
    State(service): Shared,
    p: Result<Query<Paging>, axum::extract::rejection::QueryRejection>,
) -> Result<Json<JobList>, ApiError> {
    // A bad number (`page=-1`, `page=4294967296`) is a 422 like every other
    // bad option (FastAPI's answer too), not axum's plain 400.
    let Query(p) = p.map_err(|e| ApiError::invalid_options(e.body_text()))?;
    let per_page = p.per_page.or(p.limit).unwrap_or(50).clamp(1, 500);
    let page = p.page.unwrap_or(1).max(1);
    let offset = p.offset.unwrap_or_else(|| (page - 1).saturating_mul(per_page));
    let (jobs, total) = service.queue.page(offset, per_page)?;
    let jobs = jobs.iter().map(|j| view(&service, j)).collect();
    Ok(Json(JobList { jobs, total, page: (offset / per_page).saturating_add(1), per_page }))
}

/// Cancel a job if it runs, then delete it and its files (stems, exports,
/// upload). Also at `DELETE /jobs/{id}`.
#[utoipa::path(delete, path = "/job/{id}", tag = "jobs",
    params(("id" = String, Path, description = "Job id")),
    responses((status = 200, body = Deleted), (status = 404, description = "No such job"),
        (status = 503, description = "A running job is still stopping: ask again in a few seconds")))]
pub async fn delete_job(State(service): Shared, UrlPath(id): UrlPath<String>) -> Result<Json<Deleted>, ApiError> {
    let (job, was_running) = service.delete(job_id(&id)?).await?;
    Ok(Json(Deleted { job_id: job.id.to_string(), status: "deleted".into(), was_running }))
}

/// A new job's options, as form fields, JSON members or query parameters
/// (each may be left out: the server's settings fill it in). Documentation
/// only: `crate::form` reads the fields.
#[derive(Debug, serde::Deserialize, utoipa::ToSchema)]
#[allow(dead_code)]
pub struct JobOptionFields {
    /// Quality/speed preset, `fast`, `balanced` or `best` (default: the
    /// server's setting, balanced); `model`, `shifts` and `overlap` override
    /// its parts.
    preset: Option<String>,
    /// Model id (default: the preset's, `htdemucs` for balanced).
    model: Option<String>,
    /// One stem and its complement (`vocals` gives `vocals` and `no_vocals`).
    two_stems: Option<String>,
    /// Random shifts, 0 to 20.
    shifts: Option<u32>,
    /// Overlap between segments, 0 to 0.99 (default 0.25).
    overlap: Option<f32>,
    /// `wav`, `flac` or `mp3`.
    format: Option<String>,
    /// `true` means `format=mp3`.
    mp3: Option<bool>,
    /// MP3 bit rate in kbit/s, taken as the nearest LAME writes (32 to 320,
    /// as demucs' `--mp3-bitrate`; default 320).
    mp3_bitrate: Option<u16>,
    /// WAV 16, 24 or 32 (float); FLAC 16 or 24.
    bit_depth: Option<u8>,
}

/// The multipart form of an upload (`/upload`, `/separate`).
#[derive(Debug, serde::Deserialize, utoipa::ToSchema)]
#[allow(dead_code)]
pub struct UploadForm {
    /// The audio (any format the engine decodes). Also accepted as
    /// `audio_file` or `audio`.
    #[schema(value_type = String, format = Binary)]
    file: Vec<u8>,
    #[serde(flatten)]
    options: JobOptionFields,
}

/// The multipart form of a new job (`/job`, `/api/stemify`): a file or a
/// link.
#[derive(Debug, serde::Deserialize, utoipa::ToSchema)]
#[allow(dead_code)]
pub struct JobForm {
    /// The audio (any format the engine decodes). Also accepted as
    /// `audio_file` or `audio`. A part with an empty file name and no bytes
    /// (a browser's empty file input) is no file.
    #[schema(value_type = String, format = Binary)]
    file: Option<Vec<u8>>,
    /// A link for yt-dlp instead of a file (also `youtube_url` or `link`).
    url: Option<String>,
    #[serde(flatten)]
    options: JobOptionFields,
}

/// A new job from a link, as JSON or a URL-encoded form (`/job`,
/// `/api/stemify`).
#[derive(Debug, serde::Deserialize, utoipa::ToSchema)]
#[allow(dead_code)]
pub struct LinkJob {
    /// The link for yt-dlp (also `youtube_url` or `link`).
    url: String,
    #[serde(flatten)]
    options: JobOptionFields,
}

async fn create(
    service: Arc<Service>,
    peer: SocketAddr,
    req: Request,
    file_required: bool,
) -> Result<Response, ApiError> {
    let (req, client) = admit(&service, peer, req).await?;
    let new = crate::form::read(&service, req, file_required).await?;
    let ignored_fields = new.ignored.clone();
    let job = service.enqueue(new, Some(client)).await?;
    let id = job.id;
    if !ignored_fields.is_empty() {
        tracing::info!("job {id}: fields ignored (not taken by this server): {}", ignored_fields.join(", "));
    }
    Ok(Json(Created {
        job_id: id.to_string(),
        id: id.to_string(),
        status: Status::Pending,
        title: job.title,
        status_url: format!("/status/{id}"),
        events_url: format!("/events/{id}"),
        queue_position: service.ahead_of(id),
        ignored_fields,
    })
    .into_response())
}

/// Upload a song (multipart `file`) and queue it.
#[utoipa::path(post, path = "/upload", tag = "jobs",
    request_body(content = UploadForm, content_type = "multipart/form-data"),
    responses((status = 200, body = Created), (status = 413, description = "Over the upload limit"),
        (status = 415, description = "Not audio"), (status = 422, description = "Bad option"),
        (status = 429, description = "Rate limited"), (status = 507, description = "Disk nearly full")))]
pub async fn upload(
    State(service): Shared,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    req: Request,
) -> Result<Response, ApiError> {
    create(service, peer, req, true).await
}

/// Queue a song: multipart `file`, or JSON / form with `url` (a link).
#[utoipa::path(post, path = "/job", tag = "jobs",
    request_body(content(
        (JobForm = "multipart/form-data"),
        (LinkJob = "application/json"),
        (LinkJob = "application/x-www-form-urlencoded"))),
    responses((status = 200, body = Created), (status = 413, description = "Over the upload limit"),
        (status = 415, description = "Not audio"), (status = 422, description = "Bad option or link"),
        (status = 429, description = "Rate limited"), (status = 507, description = "Disk nearly full")))]
pub async fn create_job(
    State(service): Shared,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    req: Request,
) -> Result<Response, ApiError> {
    create(service, peer, req, false).await
}

/// Queue a song: multipart `file` or `youtube_url`; poll `/api/jobs/{id}`.
#[utoipa::path(post, path = "/api/stemify", tag = "jobs",
    request_body(content(
        (JobForm = "multipart/form-data"),
        (LinkJob = "application/json"),
        (LinkJob = "application/x-www-form-urlencoded"))),
    responses((status = 200, body = Created), (status = 413, description = "Over the upload limit"),
        (status = 415, description = "Not audio"), (status = 422, description = "Bad option or link"),
        (status = 429, description = "Rate limited"), (status = 507, description = "Disk nearly full")))]
pub async fn stemify(
    State(service): Shared,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    req: Request,
) -> Result<Response, ApiError> {
    create(service, peer, req, false).await
}

/// The request back, with its client's address, when the client may
/// create a job now; else 429, after reading what the client is sending
/// (so it sees the 429, see [`crate::error::drain`]). The job is counted
/// against the client's quota only when it is queued.
async fn admit(service: &Service, peer: SocketAddr, req: Request) -> Result<(Request, IpAddr), ApiError> {
    let client = client_ip(&service.config.trusted_proxies, peer, req.headers());
    if let Err(e) = service.rate_check(client) {
        crate::error::drain(req).await;
        return Err(e);
    }
    Ok((req, client))
}

/// Cancels a synchronous request's job when the client goes away before
/// it is done (not when the server is stopping: then the job is queued
/// again and finishes later).
struct CancelOnDrop {
    service: Arc<Service>,
    id: Option<JobId>,
    /// The job being queued (on a task of its own, so a client that goes
    /// away meanwhile cannot stop it half way): cancelled once queued.
    queuing: Option<tokio::task::JoinHandle<Result<Job, ApiError>>>,
}
impl CancelOnDrop {
    fn cancel(service: &Service, id: JobId) {
        if !service.is_stopping() {
            tracing::info!("job {id}: the client of /separate went away: cancelled");
            // Here or on a remote worker (with a broker: the local worker
            // never ran it, and a remote one finished it for nobody).
            if let Err(e) = service.cancel(id) {
                tracing::debug!("job {id}: {}", e.message);
            }
        }
    }
}
impl Drop for CancelOnDrop {
    fn drop(&mut self) {
        if let Some(id) = self.id.take() {
            Self::cancel(&self.service, id);
        }
        if let (Some(queuing), Ok(rt)) = (self.queuing.take(), tokio::runtime::Handle::try_current()) {
            let service = self.service.clone();
            rt.spawn(async move {
                if let Ok(Ok(job)) = queuing.await {
                    Self::cancel(&service, job.id);
                }
            });
        }
    }
}

/// Separate synchronously: multipart `audio_file` (or `file`) and options;
/// the answer is the zip of the stems once they are ready.
#[utoipa::path(post, path = "/separate", tag = "jobs",
    request_body(content = UploadForm, content_type = "multipart/form-data"),
    responses((status = 200, description = "Zip of the stems", content_type = "application/zip"),
        (status = 409, description = "The job was cancelled (DELETE from another client)"),
        (status = 413, description = "Over the upload limit"),
        (status = 415, description = "Not audio, or the file could not be decoded"),
        (status = 422, description = "Bad option"), (status = 429, description = "Rate limited"),
        (status = 500, description = "The separation failed (`code` says why)"),
        (status = 503, description = "The server is stopping, or its model, ONNX Runtime or ffmpeg is missing"),
        (status = 507, description = "Disk nearly full")))]
pub async fn separate(
    State(service): Shared,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    req: Request,
) -> Result<Response, ApiError> {
    let (req, client) = admit(&service, peer, req).await?;
    let new = crate::form::read(&service, req, true).await?;
    if !new.ignored.is_empty() {
        tracing::info!("/separate: fields ignored (not taken by this server): {}", new.ignored.join(", "));
    }
    let mut rx = service.events.subscribe();
    let me = service.clone();
    let mut guard = CancelOnDrop {
        service: service.clone(),
        id: None,
        queuing: Some(tokio::spawn(async move { me.enqueue(new, Some(client)).await })),
    };
    let queued = match guard.queuing.as_mut() {
        Some(h) => h.await.map_err(|e| ApiError::internal(e.to_string()))?,
        None => Err(ApiError::internal("no job")),
    };
    guard.queuing = None;
    let job = queued?;
    guard.id = Some(job.id);
    let done = loop {
        // Deleted meanwhile (`DELETE /job/{id}` of a queued job removes it
        // at once): cancelled, as for a running job, not "no such job".
        let job = match service.queue.get(job.id) {
            Ok(j) => j,
            Err(stemroom_library::queue::QueueError::NotFound(_)) => {
                guard.id = None;
                return Err(ApiError::conflict(format!("job {} was cancelled or deleted", job.id)));
            }
            Err(e) => return Err(e.into()),
        };
        if job.state.is_finished() {
            break job;
        }
        if service.is_stopping() {
            return Err(ApiError::unavailable(format!(
                "the server is stopping: job {} stays queued; fetch it later from /download/{}",
                job.id, job.id
            )));
        }
        // The job is read again when it changed (claimed, finished, put
        // back, deleted), on a lag, or after a second: not on every other
        // job's change or progress (each a database read, per waiter).
        let deadline = tokio::time::Instant::now() + Duration::from_secs(1);
        loop {
            match tokio::time::timeout_at(deadline, rx.recv()).await {
                Ok(Ok(Update::Progress(_))) => continue,
                Ok(Ok(u)) if u.id() != job.id => continue,
                Ok(Err(RecvError::Closed)) => return Err(ApiError::unavailable("the server is stopping")),
                _ => break,
            }
        }
    };
    guard.id = None;
    match &done.state {
        JobState::Done => zip_response(&done, None),
        JobState::Failed { code, message } => {
            let e = failed_job(*code, &without_paths(&service, &done, message));
            // The answer is all the client gets (no job id): the job and its
            // upload go, or each failed call would keep up to the upload
            // limit on disk that nobody can name to delete.
            if let Err(d) = service.delete(done.id).await {
                tracing::warn!("job {}: cannot remove the failed /separate job: {}", done.id, d.message);
            }
            Err(e)
        }
        _ => Err(ApiError::conflict(format!("job {} was cancelled", done.id))),
    }
}

/// The answer for a job that failed with `code`: what the client can act
/// on (its input, its options, the server's installation), the job's error
/// code in `code`.
fn failed_job(code: ErrorCode, message: &str) -> ApiError {
    let status = match code {
        ErrorCode::BadInput => StatusCode::UNSUPPORTED_MEDIA_TYPE,
        ErrorCode::InvalidOptions => StatusCode::UNPROCESSABLE_ENTITY,
        ErrorCode::MissingModel | ErrorCode::MissingRuntime | ErrorCode::MissingTool => StatusCode::SERVICE_UNAVAILABLE,
        ErrorCode::Cancelled => StatusCode::CONFLICT,
        _ => StatusCode::INTERNAL_SERVER_ERROR,
    };
    // A file that is not audio answers as the refusals at upload do.
    let code_name = if code == ErrorCode::BadInput { "unsupported_media" } else { code.as_str() };
    ApiError::new(status, code_name, message)
}

/// The client a request's quota is counted for: the connection's peer, or,
/// when that peer is one of `trusted` (a TLS proxy in front, `serve
/// --trusted-proxy`), the last address of its `X-Forwarded-For` (the one
/// the proxy appended; the ones before it the client may have written
/// itself). Without this every client behind a proxy shares its address
/// and one client's quota.
fn client_ip(trusted: &[std::net::IpAddr], peer: SocketAddr, headers: &axum::http::HeaderMap) -> std::net::IpAddr {
    // On a dual-stack listener an IPv4 proxy is `::ffff:127.0.0.1`.
    let peer_ip = peer.ip().to_canonical();
    if !trusted.iter().any(|t| t.to_canonical() == peer_ip) {
        return peer_ip;
    }
    headers
        .get_all("x-forwarded-for")
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .last()
        .and_then(|a| a.trim().parse::<std::net::IpAddr>().ok())
        .map_or(peer_ip, |a| a.to_canonical())
}

/// `attachment; filename="..."` with an ASCII fallback and the UTF-8 name
/// (RFC 6266 / RFC 8187) `title` + `suffix` (`.zip`, ` - vocals.wav`). The
/// name is one file name: a title from a file's tags (`../../x`) keeps no
/// path separator, reserved character or leading dot, so a client that
/// writes the name it is given (`curl -OJ` refuses only some; a script's
/// `open(name, "wb")` none) stays in its folder. A long title is cut, not
/// the suffix, so the stem and extension stay (the name is at most the
/// 120 bytes of [`stemroom_engine::names::safe_component`]).
fn attachment(title: &str, suffix: &str) -> HeaderValue {
    use stemroom_engine::names::{cut_to, safe_component, without_reserved};
    let suffix = cut_to(&without_reserved(suffix), 60);
    let title = safe_component(title);
    let title = cut_to(title.trim_start_matches('.'), 120 - suffix.len());
    let name = if title.is_empty() { format!("download{suffix}") } else { format!("{title}{suffix}") };
    let ascii: String =
        name.chars().map(|c| if c.is_ascii_graphic() && c != '"' && c != '\\' || c == ' ' { c } else { '_' }).collect();
    let encoded: String = name
        .bytes()
        .map(|b| {
            if b.is_ascii_alphanumeric() || b"-._~".contains(&b) {
                (b as char).to_string()
            } else {
                format!("%{b:02X}")
            }
        })
        .collect();
    HeaderValue::from_str(&format!("attachment; filename=\"{ascii}\"; filename*=UTF-8''{encoded}"))
        .unwrap_or_else(|_| HeaderValue::from_static("attachment"))
}

fn finished_stems(job: &Job) -> Result<Vec<Entry>, ApiError> {
    if !matches!(job.state, JobState::Done) {
        return Err(ApiError::conflict(format!(
            "job {} is {}: its stems are not ready",
            job.id,
            crate::view::stage_of(&job.state)
        )));
    }
    let entries: Vec<Entry> = job
        .stems
        .iter()
        .map(|s| Entry {
            name: Path::new(&s.path).file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default(),
            path: s.path.clone().into(),
        })
        .collect();
    if entries.is_empty() || entries.iter().any(|e| !e.path.is_file()) {
        return Err(ApiError::new(StatusCode::GONE, "gone", format!("job {}'s stems were deleted", job.id)));
    }
    Ok(entries)
}

/// The zip of `job`'s stems; for a download by `client` (a rate key),
/// within its [`archive::MAX_WRITERS_PER_CLIENT`] archives at once (429
/// beyond). A `/separate` answer (`None`) is not refused after its whole
/// separation: its client's jobs per hour bound those.
fn zip_response(job: &Job, client: Option<std::net::IpAddr>) -> Result<Response, ApiError> {
    let entries = finished_stems(job)?;
    let turn = client.map(archive::ClientTurn::take);
    if let Some(None) = turn {
        let mut e = ApiError::new(
            StatusCode::TOO_MANY_REQUESTS,
            "rate_limited",
            format!(
                "{} downloads are under way for this address: wait for one to finish",
                archive::MAX_WRITERS_PER_CLIENT
            ),
        );
        e.retry_after = Some(5);
        return Err(e);
    }
    let opened = archive::open_all(&entries).map_err(|e| match e.kind() {
        std::io::ErrorKind::NotFound => {
            ApiError::new(StatusCode::GONE, "gone", format!("job {}'s stems were deleted", job.id))
        }
        _ => ApiError::internal(format!("cannot read job {}'s stems: {e}", job.id)),
    })?;
    let mut r = archive::zip_body(opened, turn.flatten()).into_response();
    zip_headers(&mut r, job);
    Ok(r)
}

/// A zip download's headers (its body is made as it is sent: no length).
fn zip_headers(r: &mut Response, job: &Job) {
    let h = r.headers_mut();
    h.insert(header::CONTENT_TYPE, HeaderValue::from_static("application/zip"));
    h.insert(header::CONTENT_DISPOSITION, attachment(&job.title, ".zip"));
    // Made as it is sent: a resumed download starts again.
    h.insert(header::ACCEPT_RANGES, HeaderValue::from_static("none"));
    if let Ok(v) = HeaderValue::from_str(&job.id.to_string()) {
        h.insert("x-job-id", v);
    }
}

/// The stems of a completed job as one zip (streamed). Also at `/result/{id}`.
#[utoipa::path(get, path = "/download/{id}", tag = "results",
    params(("id" = String, Path, description = "Job id")),
    responses((status = 200, description = "Zip of the stems", content_type = "application/zip"),
        (status = 404, description = "No such job"), (status = 409, description = "Not completed"),
        (status = 410, description = "The stems were deleted"),
        (status = 429, description = "This client has 8 downloads under way")))]
pub async fn download(
    State(service): Shared,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    method: axum::http::Method,
    headers: axum::http::HeaderMap,
    UrlPath(id): UrlPath<String>,
) -> Result<Response, ApiError> {
    let job = service.queue.get(job_id(&id)?)?;
    if method == axum::http::Method::HEAD {
        // The headers a GET would have, without opening the stems or
        // starting a zip writer (axum runs a GET handler for HEAD and
        // throws its body away: each took a writer slot).
        finished_stems(&job)?;
        // A body of unknown length, as the GET's streamed zip: an empty
        // one made axum say `content-length: 0`.
        let unknown = futures_util::stream::empty::<Result<axum::body::Bytes, std::convert::Infallible>>();
        let mut r = (StatusCode::OK, axum::body::Body::from_stream(unknown)).into_response();
        zip_headers(&mut r, &job);
        return Ok(r);
    }
    let client = crate::service::rate_key(client_ip(&service.config.trusted_proxies, peer, &headers));
    zip_response(&job, Some(client))
}

/// One stem of a completed job (`drums`, `bass`, `other`, `vocals`, or with
/// two stems `vocals` and `no_vocals`), with or without its extension.
/// Served as a file is (tower-http's `ServeFile`): `Range` requests get 206
/// (a resumed `curl -C -` or `wget -c`, a media element seeking), `If-Range`
/// takes the `Last-Modified` date, and `Last-Modified` /
/// `If-Modified-Since` work. A `Range` that does not parse, several ranges,
/// or an `If-Range` that does not match get the whole stem (200).
#[utoipa::path(get, path = "/stems/{id}/{stem}", tag = "results",
    params(("id" = String, Path, description = "Job id"), ("stem" = String, Path, description = "Stem name")),
    responses((status = 200, description = "The stem file"), (status = 206, description = "The part of it a Range asked for"),
        (status = 304, description = "Not modified since If-Modified-Since"), (status = 404, description = "No such job or stem"),
        (status = 409, description = "Not completed"), (status = 410, description = "The stem was deleted"),
        (status = 416, description = "The Range is outside the file")))]
pub async fn stem(
    State(service): Shared,
    UrlPath((id, name)): UrlPath<(String, String)>,
    mut request: Request,
) -> Result<Response, ApiError> {
    let job = service.queue.get(job_id(&id)?)?;
    let entries = finished_stems(&job)?;
    let found = job.stems.iter().zip(&entries).find(|(s, e)| s.stem == name || e.name == name).map(|(_, e)| e);
    let Some(e) = found else {
        let names: Vec<&str> = job.stems.iter().map(|s| s.stem.as_str()).collect();
        return Err(ApiError::not_found(format!("job {} has no stem {name}: it has {}", job.id, names.join(", "))));
    };
    let gone = || ApiError::new(StatusCode::GONE, "gone", "the stem was deleted");
    let (modified, len) = match tokio::fs::metadata(&e.path).await {
        Ok(m) if m.is_file() => (m.modified().ok(), m.len()),
        _ => return Err(gone()),
    };
    match range_to_serve(request.headers(), modified, len) {
        Some(range) => request.headers_mut().insert(header::RANGE, range),
        None => request.headers_mut().remove(header::RANGE),
    };
    let kind = match Path::new(&e.name).extension().and_then(|x| x.to_str()) {
        Some("wav") => "audio/wav",
        Some("flac") => "audio/flac",
        Some("mp3") => "audio/mpeg",
        _ => "application/octet-stream",
    };
    use tower::ServiceExt as _;
    let Ok(served) = tower_http::services::ServeFile::new(&e.path).oneshot(request).await;
    if served.status() == StatusCode::NOT_FOUND {
        // Deleted since the check above.
        return Err(gone());
    }
    let mut r = served.map(Body::new);
    if r.status().is_success() {
        let h = r.headers_mut();
        h.insert(header::CONTENT_TYPE, HeaderValue::from_static(kind));
        h.insert(header::CONTENT_DISPOSITION, attachment(&job.title, &format!(" - {}", e.name)));
    }
    Ok(r)
}

/// The `Range` a stem request is served with by tower-http's `ServeFile`
/// (206, or 416 for a range that starts past the end), or `None` to drop
/// it so that the whole file is served with 200, as RFC 9110 lets a
/// server that ignores `Range` do. `len` is the file's length in bytes,
/// `modified` its modification time. Dropped:
/// - a `Range` that does not parse as `bytes=` ranges (another unit,
///   `bytes=abc`, or `bytes=5-1`: RFC 9110 §14.1.1 calls a last position
///   before the first invalid): §14.2 has a server ignore it, where
///   tower-http answered 416 "nothing can be served";
/// - several ranges at once (`bytes=0-1,100-200`): not served in parts
///   (tower-http answers them 416);
/// - an `If-Range` that does not match (RFC 9110 §13.1.5): a date other
///   than the file's `Last-Modified` (whole seconds), or an entity tag
///   (none are sent, so none matches). A browser resuming a download sends
///   one: a stem written again since (a job re-run) is then fetched whole
///   instead of spliced onto the old one's first part.
///
/// A suffix longer than the file (`bytes=-N`, N > `len`) asks for all of
/// it (RFC 9110 §14.1.3): it is passed on as `bytes=0-`, where tower-http
/// answered 416.
fn range_to_serve(
    headers: &axum::http::HeaderMap,
    modified: Option<std::time::SystemTime>,
    len: u64,
) -> Option<HeaderValue> {
    let value = headers.get(header::RANGE)?;
    let range = value.to_str().ok()?;
    // Checked against no length: what fails is the syntax.
    let parsed = http_range_header::parse_range_header(range).ok()?;
    if parsed.validate(u64::MAX).is_err() || range.contains(',') {
        return None;
    }
    if let Some(v) = headers.get(header::IF_RANGE) {
        let date = v.to_str().ok().and_then(|v| v.trim().parse::<httpdate::HttpDate>().ok())?;
        if httpdate::HttpDate::from(modified?) != date {
            return None;
        }
    }
    let suffix = range.trim().strip_prefix("bytes=").and_then(|r| r.trim().strip_prefix('-'));
    match suffix.and_then(|n| n.trim().parse::<u64>().ok()) {
        Some(_) if len == 0 => None,
        Some(n) if n > len => Some(HeaderValue::from_static("bytes=0-")),
        _ => Some(value.clone()),
    }
}

/// Live progress as server-sent events: one `data:` JSON object (the same
/// as `GET /status/{id}`) at once and then at every change, in order; the
/// stream ends after the job completes, fails or is cancelled. Event ids
/// count up from 1 (from the client's `Last-Event-ID` when it reconnects);
/// the last event's id ends in `-end`. A browser's
/// `EventSource` reconnects when a stream ends: coming back with that id as
/// `Last-Event-ID` it gets 204 No Content, which ends it for good (the
/// HTML standard's way to stop it), instead of the last event again every
/// few seconds. `EventSource` cannot send headers: pass the token as
/// `?access_token=`. Polyfills that cannot send `Last-Event-ID` either
/// (Yaffle's `event-source-polyfill`) send it as `?lastEventId=`, taken the
/// same way.
#[utoipa::path(get, path = "/events/{id}", tag = "jobs",
    security(("bearer" = []), ("access_token" = [])),
    params(("id" = String, Path, description = "Job id"),
        ("lastEventId" = Option<String>, Query, description = "`Last-Event-ID` for clients that cannot send headers")),
    responses((status = 200, description = "text/event-stream of JobView objects", content_type = "text/event-stream"),
        (status = 204, description = "The job had ended when the stream was left (`Last-Event-ID` ending in `-end`)"),
        (status = 404, description = "No such job")))]
pub async fn events(
    State(service): Shared,
    UrlPath(id): UrlPath<String>,
    axum::extract::RawQuery(query): axum::extract::RawQuery,
    headers: axum::http::HeaderMap,
) -> Result<Response, ApiError> {
    let id = job_id(&id)?;
    // Subscribe before reading the job, so no change falls in between.
    let rx = service.events.subscribe();
    let job = service.queue.get(id)?;
    // (Event ids are digits and `-end`: nothing to percent-decode.)
    let from_query = query.as_deref().and_then(|q| q.split('&').find_map(|kv| kv.strip_prefix("lastEventId=")));
    let last = headers.get("last-event-id").and_then(|v| v.to_str().ok()).or(from_query);
    let saw_the_end = last.is_some_and(|v| v.ends_with("-end"));
    if saw_the_end && job.state.is_finished() {
        return Ok(StatusCode::NO_CONTENT.into_response());
    }
    struct Feed {
        service: Arc<Service>,
        rx: tokio::sync::broadcast::Receiver<Update>,
        job: Job,
        first: bool,
        ended: bool,
        seq: u64,
        stopping: tokio::sync::watch::Receiver<bool>,
    }
    let stopping = service.stopping.clone();
    // Ids go on from the client's last one after a reconnect: a client
    // that drops events at or below the last id it saw would miss the
    // next ones if they started again at 1.
    let seq = last.and_then(|v| v.trim_end_matches("-end").parse::<u64>().ok()).unwrap_or(0);
    let feed = Feed { service, rx, job, first: true, ended: false, seq, stopping };
    let stream = futures_util::stream::unfold(feed, |mut f| async move {
        if f.ended {
            return None;
        }
        let view = if f.first {
            f.first = false;
            view(&f.service, &f.job)
        } else {
            loop {
                let next = tokio::select! {
                    r = f.rx.recv() => r,
                    _ = f.stopping.wait_for(|s| *s) => return None,
                };
                match next {
                    Ok(Update::Job(j)) if j.id == f.job.id => {
                        f.job = *j;
                        break view(&f.service, &f.job);
                    }
                    Ok(Update::Progress(p))
                        if p.id == f.job.id
                            && (f.job.state.is_running() || matches!(f.job.state, JobState::Queued)) =>
                    {
                        break with_worker(
                            &f.service,
                            &f.job,
                            JobView::new(&f.job, Some(&p), f.service.events.segments_of(f.job.id)),
                        );
                    }
                    // Deleted: nothing more will happen to it.
                    Ok(Update::Deleted(id)) if id == f.job.id => return None,
                    Ok(_) => continue,
                    Err(RecvError::Lagged(_)) => match f.service.queue.get(f.job.id) {
                        Ok(j) => {
                            f.job = j;
                            break view(&f.service, &f.job);
                        }
                        Err(_) => return None,
                    },
                    Err(RecvError::Closed) => return None,
                }
            }
        };
        if f.job.state.is_finished() {
            f.ended = true;
        }
        f.seq = f.seq.saturating_add(1);
        let event_id = if f.ended { format!("{}-end", f.seq) } else { f.seq.to_string() };
        let event = Event::default().id(event_id).json_data(&view).unwrap_or_default();
        Some((Ok::<_, Infallible>(event), f))
    });
    // A reverse proxy must pass events on as they come: nginx buffers
    // responses unless told not to (its documented `X-Accel-Buffering`).
    let sse = Sse::new(stream).keep_alive(KeepAlive::new().interval(Duration::from_secs(15)));
    Ok(([("x-accel-buffering", "no")], sse).into_response())
}

/// The API's page for people, as FastAPI serves it at `/docs`: Swagger UI
/// (swagger-ui-dist 5.36.0 from jsDelivr, pinned by its files' sha384)
/// reading `/openapi.json`, where "Authorize" takes the token for the page's
/// own requests; offline, a plain list of the operations. Open without the
/// token, as `/openapi.json` is (it holds no job or file). Not in the
/// OpenAPI document (nor is FastAPI's).
pub async fn docs() -> Response {
    (
        [
            (header::CONTENT_TYPE, "text/html; charset=utf-8"),
            (header::X_CONTENT_TYPE_OPTIONS, "nosniff"),
            (header::REFERRER_POLICY, "no-referrer"),
        ],
        include_str!("../assets/docs.html"),
    )
        .into_response()
}

/// The OpenAPI 3.1 document of this server.
#[utoipa::path(get, path = "/openapi.json", tag = "health", responses((status = 200, description = "OpenAPI document")))]
pub async fn openapi_json() -> Json<utoipa::openapi::OpenApi> {
    Json(crate::openapi::document())
}

#[cfg(test)]
mod tests {
    use super::{attachment, client_ip, range_to_serve};

    #[test]
    fn a_range_is_served_as_asked_only_when_it_parses_and_its_if_range_matches() {
        use axum::http::{header, HeaderMap, HeaderValue};
        use std::time::{Duration, SystemTime};
        // Last-Modified of a file written at 1 700 000 000.25 s: whole seconds.
        let modified = SystemTime::UNIX_EPOCH + Duration::from_millis(1_700_000_000_250);
        let date = httpdate::fmt_http_date(modified);
        let older = httpdate::fmt_http_date(modified - Duration::from_secs(1));
        let len = 1000;
        let served = |range: Option<&str>, if_range: Option<&str>| {
            let mut h = HeaderMap::new();
            if let Some(r) = range {
                h.insert(header::RANGE, HeaderValue::from_str(r).expect("value"));
            }
            if let Some(v) = if_range {
                h.insert(header::IF_RANGE, HeaderValue::from_str(v).expect("value"));
            }
            range_to_serve(&h, Some(modified), len).map(|v| v.to_str().expect("ascii").to_string())
        };
        for range in ["bytes=100-199", "bytes=-500", "bytes=-1000", "bytes=1000-", "bytes=0-99999"] {
            assert_eq!(served(Some(range), None).as_deref(), Some(range));
        }
        // Starting past the end: passed on (tower-http answers 416).
        assert_eq!(served(Some("bytes=5000-"), None).as_deref(), Some("bytes=5000-"));
        // A suffix longer than the file: all of it.
        assert_eq!(served(Some("bytes=-1001"), None).as_deref(), Some("bytes=0-"));
        assert_eq!(served(Some("bytes=100-199"), Some(&date)).as_deref(), Some("bytes=100-199"));
        for (range, if_range) in [
            (Some("bytes=abc"), None),
            (Some("items=0-5"), None),
            (Some("bytes=5-1"), None),
            (Some(""), None),
            (Some("bytes=0-1,100-200"), None),
            (Some("bytes=100-199"), Some(older.as_str())),
            (Some("bytes=100-199"), Some("\"an-etag\"")),
            (Some("bytes=100-199"), Some("W/\"an-etag\"")),
            (Some("bytes=100-199"), Some("not a date")),
            (None, None),
            (None, Some(date.as_str())),
        ] {
            assert_eq!(served(range, if_range), None, "{range:?} {if_range:?}");
        }
        // No modification time known: no date matches.
        let mut h = HeaderMap::new();
        h.insert(header::RANGE, HeaderValue::from_static("bytes=0-9"));
        h.insert(header::IF_RANGE, HeaderValue::from_str(&date).expect("value"));
        assert_eq!(range_to_serve(&h, None, len), None);
        // An empty file has no part to serve.
        h.remove(header::IF_RANGE);
        h.insert(header::RANGE, HeaderValue::from_static("bytes=-5"));
        assert_eq!(range_to_serve(&h, Some(modified), 0), None);
    }

    #[test]
    fn a_failed_synchronous_job_answers_with_what_the_client_can_act_on() {
        use stemroom_engine::ErrorCode as C;
        for (code, status) in [
            (C::BadInput, 415),
            (C::InvalidOptions, 422),
            (C::MissingModel, 503),
            (C::MissingRuntime, 503),
            (C::MissingTool, 503),
            (C::Cancelled, 409),
            (C::Output, 500),
            (C::Internal, 500),
        ] {
            let e = super::failed_job(code, "why");
            let name = if code == C::BadInput { "unsupported_media" } else { code.as_str() };
            assert_eq!((e.status.as_u16(), e.code, e.message.as_str()), (status, name, "why"));
        }
    }

    #[test]
    fn a_failed_jobs_message_names_no_folder_of_this_machine() {
        let places = [
            ("/srv/data/uploads/3fe1.wav".to_string(), "the input file"),
            ("/home/me/Music/Stemroom/".to_string(), "the library folder"),
            ("/srv/data".to_string(), "the server's data folder"),
        ];
        let m = |s: &str| super::named_places(s, &places);
        assert_eq!(
            m("/srv/data/uploads/3fe1.wav is truncated: 10 s of 200"),
            "the input file is truncated: 10 s of 200"
        );
        assert_eq!(
            m("cannot write /home/me/Music/Stemroom/Song/vocals.wav: disk full"),
            "cannot write the library folder/Song/vocals.wav: disk full"
        );
        assert_eq!(m("cannot open /srv/data/models/x.onnx"), "cannot open the server's data folder/models/x.onnx");
        assert_eq!(m("no path here"), "no path here");
        assert_eq!(m("cannot open /srv/database/x"), "cannot open /srv/database/x", "another folder");
        // A library at the root names nothing (every path would go).
        assert_eq!(super::named_places("/a/b", &[("/".to_string(), "the library folder")]), "/a/b");
        // Nor does a relative folder: its name is a word of the message too.
        let relative = [("models".to_string(), "the server's model folder")];
        let how = "run `stemroom models --fetch`";
        assert_eq!(super::named_places(how, &relative), how);
        // The end of a longer path is another folder.
        assert_eq!(m("cannot open /mnt/srv/data/x"), "cannot open /mnt/srv/data/x");
    }

    #[test]
    fn a_trusted_proxy_names_the_client() {
        let mut h = axum::http::HeaderMap::new();
        h.append("x-forwarded-for", "6.6.6.6, 10.0.0.7".parse().unwrap());
        let proxy: std::net::SocketAddr = "127.0.0.1:5000".parse().unwrap();
        let other: std::net::SocketAddr = "192.0.2.1:5000".parse().unwrap();
        let trusted = ["127.0.0.1".parse().unwrap()];
        assert_eq!(client_ip(&trusted, proxy, &h).to_string(), "10.0.0.7", "the address the proxy added");
        assert_eq!(client_ip(&trusted, other, &h).to_string(), "192.0.2.1", "anyone else's header is ignored");
        assert_eq!(client_ip(&[], proxy, &h).to_string(), "127.0.0.1");
        assert_eq!(client_ip(&trusted, proxy, &axum::http::HeaderMap::new()).to_string(), "127.0.0.1");
        h.append("x-forwarded-for", "garbage".parse().unwrap());
        assert_eq!(client_ip(&trusted, proxy, &h).to_string(), "127.0.0.1", "unreadable: the peer");
        // The same proxy seen on a dual-stack listener.
        let mapped: std::net::SocketAddr = "[::ffff:127.0.0.1]:5000".parse().unwrap();
        let mut h = axum::http::HeaderMap::new();
        h.append("x-forwarded-for", "10.0.0.7".parse().unwrap());
        assert_eq!(client_ip(&trusted, mapped, &h).to_string(), "10.0.0.7");
    }

    #[test]
    fn download_names_are_one_file_name() {
        let h = |t: &str, s: &str| attachment(t, s).to_str().unwrap().to_string();
        assert_eq!(h("Falcon 69", ".zip"), "attachment; filename=\"Falcon 69.zip\"; filename*=UTF-8''Falcon%2069.zip");
        for (t, s) in
            [("../../x", ".zip"), ("/etc/passwd", " - vocals.wav"), ("..\\..\\x", ".zip"), (".bashrc", " - vocals.wav")]
        {
            let (hostile, v) = (format!("{t}{s}"), h(t, s));
            let ascii = v.split('"').nth(1).unwrap();
            assert!(!ascii.contains('/') && !ascii.contains('\\') && !ascii.starts_with('.'), "{hostile}: {v}");
            let utf8 = v.split("''").nth(1).unwrap();
            assert!(!utf8.contains("%2F") && !utf8.contains("%5C") && !utf8.starts_with('.'), "{hostile}: {v}");
        }
        assert!(h("Čajovna", " – vocals.wav").contains("filename*=UTF-8''%C4%8Cajovna%20%E2%80%93%20vocals.wav"));
        // A long title (here 45 three-byte characters) is cut, not the
        // stem name or extension: each stem keeps a name of its own.
        let long = "あ".repeat(45);
        let (vocals, drums) = (h(&long, " - vocals.wav"), h(&long, " - drums.wav"));
        assert!(vocals.ends_with("%20-%20vocals.wav") && drums.ends_with("%20-%20drums.wav"), "{vocals}");
        assert!(h(&long, ".zip").ends_with(".zip"));
        let ascii = vocals.split('"').nth(1).unwrap();
        assert!(ascii.len() <= 120 && ascii.ends_with(" - vocals.wav"), "{ascii}");
        assert!(h("...", ".zip").contains("filename=\"track.zip\""), "{}", h("...", ".zip"));
    }
}

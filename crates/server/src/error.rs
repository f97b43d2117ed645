//! Errors: [`ServerError`] stops the server from starting; [`ApiError`] is
//! one request's answer (`{"detail", "code"}` with an HTTP status, the shape
//! FastAPI's `HTTPException` gives, which existing clients print).

use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use stemroom_library::queue::QueueError;

/// Why the server cannot start or run.
#[derive(Debug, thiserror::Error)]
pub enum ServerError {
    #[error("{0}")]
    Config(String),
    #[error(
        "another Stemroom (the app or a server) is using the data folder {0}: stop it, or give this server another --data-dir"
    )]
    Locked(std::path::PathBuf),
    #[error("cannot listen on {addr}: {source}")]
    Bind { addr: std::net::SocketAddr, source: std::io::Error },
    #[error("{what}: {source}")]
    Io { what: String, source: std::io::Error },
    #[error("the job database: {0}")]
    Queue(#[from] QueueError),
    #[error("{0}")]
    Engine(#[from] stemroom_engine::Error),
}

/// One request's error answer.
#[derive(Debug, Clone)]
pub struct ApiError {
    pub status: StatusCode,
    /// Stable machine-readable code (`not_found`, `unauthorized`,
    /// `unsupported_media`, `too_large`, `invalid_options`, ...).
    pub code: &'static str,
    /// What went wrong and what to do, for people.
    pub message: String,
    /// Seconds to wait before trying again: a 429's, and a passing 503's
    /// ([`ApiError::unavailable`]: a stopping or busy server). A 503 for a
    /// missing model, runtime or tool has none: asking again does not help
    /// until the server's installation is fixed.
    pub retry_after: Option<u64>,
}

impl ApiError {
    pub fn new(status: StatusCode, code: &'static str, message: impl Into<String>) -> Self {
        ApiError { status, code, message: message.into(), retry_after: None }
    }
    pub fn not_found(what: impl Into<String>) -> Self {
        Self::new(StatusCode::NOT_FOUND, "not_found", what)
    }
    pub fn bad_request(what: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, "bad_request", what)
    }
    pub fn invalid_options(what: impl Into<String>) -> Self {
        Self::new(StatusCode::UNPROCESSABLE_ENTITY, "invalid_options", what)
    }
    pub fn unsupported(what: impl Into<String>) -> Self {
        Self::new(StatusCode::UNSUPPORTED_MEDIA_TYPE, "unsupported_media", what)
    }
    pub fn forbidden(what: impl Into<String>) -> Self {
        Self::new(StatusCode::FORBIDDEN, "forbidden", what)
    }
    pub fn conflict(what: impl Into<String>) -> Self {
        Self::new(StatusCode::CONFLICT, "conflict", what)
    }
    pub fn internal(what: impl Into<String>) -> Self {
        Self::new(StatusCode::INTERNAL_SERVER_ERROR, "internal", what)
    }
    pub fn unavailable(what: impl Into<String>) -> Self {
        // A passing 503 (a stopping or busy server): a client is told when
        // to ask again.
        Self {
            retry_after: Some(UNAVAILABLE_RETRY_SECONDS),
            ..Self::new(StatusCode::SERVICE_UNAVAILABLE, "unavailable", what)
        }
    }
}

impl From<QueueError> for ApiError {
    fn from(e: QueueError) -> Self {
        match e {
            QueueError::NotFound(id) => ApiError::not_found(format!("no job {id}")),
            QueueError::WrongState { .. } => ApiError::conflict(e.to_string()),
            e => {
                tracing::error!("database: {e}");
                ApiError::internal(format!("the job database failed: {e}"))
            }
        }
    }
}

/// `Retry-After` of a 503 that names no other wait: a few seconds (a
/// running job stops within a segment; a busy server catches up).
pub const UNAVAILABLE_RETRY_SECONDS: u64 = 2;

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let body = serde_json::json!({ "detail": self.message, "code": self.code });
        let mut r = (self.status, axum::Json(body)).into_response();
        if self.status == StatusCode::UNAUTHORIZED {
            r.headers_mut().insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
        }
        if let Some(s) = self.retry_after.and_then(|s| HeaderValue::from_str(&s.to_string()).ok()) {
            r.headers_mut().insert(header::RETRY_AFTER, s);
        }
        r
    }
}

/// Most bytes of a refused request's body read and thrown away.
pub(crate) const DRAIN_BYTES: usize = 16 * 1024 * 1024;
/// Longest time spent on it.
pub(crate) const DRAIN_TIME: std::time::Duration = std::time::Duration::from_secs(2);

/// Read and discard what is left of a refused request's body (at most 16 MiB
/// and 2 s) before answering. A server that answers early and closes with
/// unread bytes in the socket makes the kernel send a reset, and many
/// clients (curl among them) then report a broken connection instead of
/// the 401, 404, 405, 413 or 429 they were sent; nginx's "lingering close"
/// does the same for the same reason. A client that sent `Expect:
/// 100-continue` (curl for bodies over 1 MiB) is waiting for leave to send
/// its body: reading would give it that leave (hyper answers `100
/// Continue` on the first read), so nothing is read and it gets the answer
/// before sending anything (RFC 9110 §10.1.1).
pub async fn drain(req: axum::extract::Request) {
    use http_body_util::BodyExt;
    let expects_continue = req
        .headers()
        .get(axum::http::header::EXPECT)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.eq_ignore_ascii_case("100-continue"));
    if expects_continue {
        return;
    }
    let mut body = req.into_body();
    let mut read = 0usize;
    let _ = tokio::time::timeout(DRAIN_TIME, async {
        while let Some(Ok(frame)) = body.frame().await {
            read += frame.data_ref().map_or(0, |d| d.len());
            if read > DRAIN_BYTES {
                break;
            }
        }
    })
    .await;
}

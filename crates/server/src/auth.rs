//! The bearer tokens, made on first start and kept in the data folder
//! (mode 0600): the clients' token (`server-token`), required on every
//! request but `GET /health`, `/openapi.json`, `/docs` and the worker
//! routes, and with `--broker` the
//! workers' own (`worker-token`), the only one the `/worker/…` routes take.
//! So a client cannot claim jobs, read their inputs or post stems, and a
//! worker machine cannot list, download or delete anybody's songs.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use axum::extract::{Request, State};
use axum::http::{header, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use subtle::ConstantTimeEq;

use crate::error::{ApiError, ServerError};
use crate::service::Service;

/// File name of the clients' token inside the data folder.
pub const TOKEN_FILE: &str = "server-token";
/// File name of the workers' token inside the data folder (`--broker`).
pub const WORKER_TOKEN_FILE: &str = "worker-token";

/// Random bytes in a token (256 bits, written as 64 hex digits).
const TOKEN_BYTES: usize = 32;

/// `N` random bytes (the thread's CSPRNG, seeded from the OS) as `2N`
/// lowercase hex digits: tokens and upload names.
pub(crate) fn random_hex<const N: usize>() -> String {
    use rand::RngExt;
    let bytes: [u8; N] = rand::rng().random();
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// The token and whether it was just made (then it is printed once).
#[derive(Debug, Clone)]
pub struct Token {
    pub value: String,
    pub path: PathBuf,
    pub created: bool,
}

/// Read the token from `data_dir`, or make one (created with mode 0600 and
/// `O_EXCL`, so it is never readable by others, even for a moment). A token
/// file others can read is narrowed to 0600 with a warning.
///
/// # Errors
/// I/O errors; an empty or unreadable token file.
pub fn load_or_create(data_dir: &Path) -> Result<Token, ServerError> {
    load_or_create_named(data_dir, TOKEN_FILE)
}

/// [`load_or_create`] of the token in `data_dir/file`.
///
/// # Errors
/// As [`load_or_create`].
pub fn load_or_create_named(data_dir: &Path, file: &str) -> Result<Token, ServerError> {
    let path = data_dir.join(file);
    let io = |what: &str| {
        let what = format!("{what} {}", path.display());
        move |source| ServerError::Io { what, source }
    };
    match std::fs::read_to_string(&path) {
        Ok(text) => {
            let value = text.trim().to_string();
            if value.len() < 16 || !value.bytes().all(|b| b.is_ascii_graphic()) {
                return Err(ServerError::Config(format!(
                    "the token file {} is empty or damaged: delete it and start again to make a new token",
                    path.display()
                )));
            }
            #[cfg(unix)]
            {
                use std::os::unix::fs::PermissionsExt;
                let mode = std::fs::metadata(&path).map_err(io("cannot read"))?.permissions().mode();
                if mode & 0o077 != 0 {
                    tracing::warn!("{} was readable by others (mode {:o}): set to 0600", path.display(), mode & 0o777);
                    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600))
                        .map_err(io("cannot restrict"))?;
                }
            }
            Ok(Token { value, path, created: false })
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            let value = random_hex::<TOKEN_BYTES>();
            // Written whole under a temporary name, then placed under its
            // own without replacing one another server made meanwhile
            // (`publish_new`: a hard link, or a check and a rename where
            // the file system has none): a crash or a full disk mid-write
            // leaves no empty token file that would stop every later start.
            let tmp = data_dir.join(format!(".{file}.{}.tmp", random_hex::<8>()));
            let mut options = std::fs::OpenOptions::new();
            options.write(true).create_new(true);
            #[cfg(unix)]
            {
                use std::os::unix::fs::OpenOptionsExt;
                options.mode(0o600);
            }
            let written = options.open(&tmp).map_err(io("cannot create")).and_then(|mut f| {
                f.write_all(format!("{value}\n").as_bytes()).map_err(io("cannot write"))?;
                f.sync_all().map_err(io("cannot write"))
            });
            let placed =
                written.and_then(|()| match stemroom_engine::files::publish_new(&[(tmp.clone(), path.clone())]) {
                    Ok(()) => Ok(true),
                    Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => Ok(false),
                    Err(e) => Err(io("cannot create")(e)),
                });
            let _ = std::fs::remove_file(&tmp);
            if !placed? {
                // Made by another start at the same moment: that one.
                return load_or_create_named(data_dir, file);
            }
            Ok(Token { value, path, created: true })
        }
        Err(e) => Err(io("cannot read")(e)),
    }
}

/// The token a request carries: `Authorization: Bearer T`, or `X-API-Key:
/// T` (FastAPI's `APIKeyHeader` examples, which other servers' clients
/// send), or, for `GET /events/{id}` only (a browser's `EventSource` cannot
/// set headers), `?access_token=T` as RFC 6750 §2.3 allows (decoded as a
/// form value: a client's URL encoding of `+`, `/`, `=`). Elsewhere a token
/// in the address is not taken: addresses end up in proxies' and browsers'
/// histories and logs (RFC 6750 §5.3), and no other client needs it.
/// An `Authorization` of another scheme (`Basic`, for a proxy's own login
/// in front of the server) is not this server's: the token is then looked
/// for in the other two places.
fn presented(req: &Request) -> Option<String> {
    if let Some(v) = req.headers().get(header::AUTHORIZATION).and_then(|v| v.to_str().ok()) {
        if let Some((scheme, rest)) = v.trim().split_once(' ') {
            if scheme.eq_ignore_ascii_case("bearer") {
                return Some(rest.trim().to_string());
            }
        }
    }
    if let Some(v) = req.headers().get(API_KEY_HEADER).and_then(|v| v.to_str().ok()) {
        return Some(v.trim().to_string());
    }
    if req.method() != axum::http::Method::GET || !req.uri().path().starts_with("/events/") {
        return None;
    }
    let query = req.uri().query()?;
    url::form_urlencoded::parse(query.as_bytes()).find(|(k, _)| k == "access_token").map(|(_, v)| v.into_owned())
}

/// The other header a token may come in ([`presented`]).
pub const API_KEY_HEADER: &str = "x-api-key";

/// Routes open without the token: the health check, and the API's own
/// description and its page (as FastAPI serves them: what a client
/// generator or a person reading the API fetches first; they hold no job
/// or file).
fn open_route(path: &str) -> bool {
    matches!(path, "/health" | "/openapi.json" | "/docs")
}

/// Middleware: every request but `GET /health` needs the token (when the
/// server has one): the workers' token for `/worker/…` (the clients' one
/// when there is no broker), the clients' token for everything else.
/// Compared in constant time.
pub async fn require_token(State(service): State<Arc<Service>>, req: Request, next: Next) -> Response {
    let Some(client) = service.token.as_deref() else {
        return match local_only(&req, &service.config.cors) {
            Ok(()) => next.run(req).await,
            Err(refusal) => {
                crate::error::drain(req).await;
                refusal.into_response()
            }
        };
    };
    if open_route(req.uri().path()) {
        return next.run(req).await;
    }
    let (expected, file) = if req.uri().path().starts_with("/worker/") {
        match service.worker_token.as_deref() {
            Some(w) => (w, WORKER_TOKEN_FILE),
            None => (client, TOKEN_FILE),
        }
    } else {
        (client, TOKEN_FILE)
    };
    let refusal = match presented(&req) {
        Some(t) if bool::from(t.as_bytes().ct_eq(expected.as_bytes())) => return next.run(req).await,
        Some(_) => ApiError::new(
            StatusCode::UNAUTHORIZED,
            "unauthorized",
            format!("wrong token (this route takes the one in the {file} file of the server's data folder)"),
        ),
        None => ApiError::new(
            StatusCode::UNAUTHORIZED,
            "unauthorized",
            format!("this server needs a token: send `Authorization: Bearer <token>` (the token is in the {file} file of its data folder)"),
        ),
    };
    crate::error::drain(req).await;
    refusal.into_response()
}

/// Whether `host` (a `Host` header or an origin's host, with or without
/// its port) names this machine's loopback: `localhost` (and its
/// subdomains, RFC 6761 §6.3), `127.0.0.0/8`, `[::1]`.
fn is_loopback_host(host: &str) -> bool {
    let name = if let Some(rest) = host.strip_prefix('[') {
        rest.split(']').next().unwrap_or("")
    } else {
        host.rsplit_once(':').filter(|(_, port)| port.bytes().all(|b| b.is_ascii_digit())).map_or(host, |(h, _)| h)
    };
    let name = name.trim_end_matches('.').to_ascii_lowercase();
    name == "localhost"
        || name.ends_with(".localhost")
        || name.parse::<std::net::IpAddr>().is_ok_and(|ip| ip.to_canonical().is_loopback())
}

/// Without a token (`--no-auth`, loopback only) the address is not the
/// only guard: any web page the user opens can send requests to
/// `127.0.0.1` (a form's POST needs no CORS preflight), and one on a
/// domain that re-resolves to 127.0.0.1 (DNS rebinding) can also read the
/// answers. So such a server takes only requests addressed to this machine
/// (`Host`: localhost, 127.0.0.1, [::1]; as Jupyter and Vite's dev server
/// do) and, from browsers, only pages of this machine or of a `--cors`
/// origin.
///
/// # Errors
/// 403 naming the refused `Host` or `Origin`.
fn local_only(req: &Request, cors: &[String]) -> Result<(), ApiError> {
    let host = req.headers().get(header::HOST).and_then(|h| h.to_str().ok()).map(str::to_string);
    let host = host.or_else(|| req.uri().authority().map(|a| a.as_str().to_string()));
    if let Some(host) = host.filter(|h| !is_loopback_host(h)) {
        return Err(ApiError::forbidden(format!(
            "a server without a token (--no-auth) answers only requests addressed to this machine (localhost, 127.0.0.1, [::1]), not to {:?}: start it with a token to reach it by another name",
            host.chars().take(100).collect::<String>()
        )));
    }
    if let Some(origin) = req.headers().get(header::ORIGIN) {
        let text = origin.to_str().unwrap_or("");
        let local = url::Url::parse(text).ok().and_then(|u| u.host_str().map(is_loopback_host)).unwrap_or(false);
        if !local && !cors.iter().any(|c| c == "*" || c == text) {
            return Err(ApiError::forbidden(format!(
                "a server without a token (--no-auth) takes requests from pages of this machine or of a --cors origin, not from {:?}",
                text.chars().take(100).collect::<String>()
            )));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn without_a_token_only_requests_to_this_machine_and_its_pages_pass() {
        for ok in [
            "127.0.0.1:8000",
            "localhost",
            "LOCALHOST:1",
            "app.localhost:8000",
            "[::1]:8000",
            "127.1.2.3",
            "localhost.",
        ] {
            assert!(is_loopback_host(ok), "{ok}");
        }
        for bad in ["evil.example:8000", "127.0.0.1.evil.example", "localhost.evil.example", "[::2]:80", "0.0.0.0", ""]
        {
            assert!(!is_loopback_host(bad), "{bad}");
        }
        let req = |host: Option<&str>, origin: Option<&str>| {
            let mut b = axum::http::Request::builder().uri("/jobs");
            if let Some(h) = host {
                b = b.header(header::HOST, h);
            }
            if let Some(o) = origin {
                b = b.header(header::ORIGIN, o);
            }
            b.body(axum::body::Body::empty()).unwrap()
        };
        let cors = vec!["https://mine.example".to_string()];
        assert!(local_only(&req(Some("127.0.0.1:8000"), None), &cors).is_ok());
        assert!(local_only(&req(None, None), &cors).is_ok(), "HTTP/1.0 sends no Host");
        assert!(local_only(&req(Some("localhost:8000"), Some("http://localhost:5173")), &cors).is_ok());
        assert!(local_only(&req(Some("localhost:8000"), Some("https://mine.example")), &cors).is_ok());
        assert!(local_only(&req(Some("evil.example:8000"), None), &cors).is_err(), "DNS rebinding");
        assert!(
            local_only(&req(Some("127.0.0.1:8000"), Some("https://evil.example")), &cors).is_err(),
            "cross-site form"
        );
        assert!(local_only(&req(Some("127.0.0.1:8000"), Some("null")), &cors).is_err(), "sandboxed page");
        assert!(local_only(&req(Some("127.0.0.1:8000"), Some("null")), &["*".to_string()]).is_ok());
    }

    #[test]
    fn token_is_made_once_private_and_kept() {
        let dir = tempfile::tempdir().unwrap();
        let first = load_or_create(dir.path()).unwrap();
        assert!(first.created && first.value.len() == 64);
        let files: Vec<_> = std::fs::read_dir(dir.path()).unwrap().flatten().map(|e| e.file_name()).collect();
        assert_eq!(files, [TOKEN_FILE], "no temporary file left");
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let mode = std::fs::metadata(&first.path).unwrap().permissions().mode();
            assert_eq!(mode & 0o777, 0o600);
            std::fs::set_permissions(&first.path, std::fs::Permissions::from_mode(0o644)).unwrap();
        }
        let again = load_or_create(dir.path()).unwrap();
        assert!(!again.created);
        assert_eq!(again.value, first.value);
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let mode = std::fs::metadata(&first.path).unwrap().permissions().mode();
            assert_eq!(mode & 0o777, 0o600, "narrowed again");
        }
        std::fs::write(&first.path, "\n").unwrap();
        assert!(load_or_create(dir.path()).is_err(), "an empty token file is refused");
    }
}

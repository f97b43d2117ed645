//! The bearer tokens, made on first start and kept in the data folder
//! (mode 0600): the clients' token (`server-token`), required on every
//! request but `GET /health` and the worker routes, and with `--broker` the
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
            let mut options = std::fs::OpenOptions::new();
            options.write(true).create_new(true);
            #[cfg(unix)]
            {
                use std::os::unix::fs::OpenOptionsExt;
                options.mode(0o600);
            }
            let mut f = options.open(&path).map_err(io("cannot create"))?;
            f.write_all(format!("{value}\n").as_bytes()).map_err(io("cannot write"))?;
            f.sync_all().map_err(io("cannot write"))?;
            Ok(Token { value, path, created: true })
        }
        Err(e) => Err(io("cannot read")(e)),
    }
}

/// The token a request carries: `Authorization: Bearer T`, or, for `GET
/// /events/{id}` only (a browser's `EventSource` cannot set headers),
/// `?access_token=T` as RFC 6750 §2.3 allows. Elsewhere a token in the
/// address is not taken: addresses end up in proxies' and browsers'
/// histories and logs (RFC 6750 §5.3), and no other client needs it.
fn presented(req: &Request) -> Option<String> {
    if let Some(v) = req.headers().get(header::AUTHORIZATION).and_then(|v| v.to_str().ok()) {
        let (scheme, rest) = v.trim().split_once(' ')?;
        return scheme.eq_ignore_ascii_case("bearer").then(|| rest.trim().to_string());
    }
    if req.method() != axum::http::Method::GET || !req.uri().path().starts_with("/events/") {
        return None;
    }
    req.uri().query()?.split('&').find_map(|kv| kv.strip_prefix("access_token=")).map(str::to_string)
}

/// Middleware: every request but `GET /health` needs the token (when the
/// server has one): the workers' token for `/worker/…` (the clients' one
/// when there is no broker), the clients' token for everything else.
/// Compared in constant time.
pub async fn require_token(State(service): State<Arc<Service>>, req: Request, next: Next) -> Response {
    let Some(client) = service.token.as_deref() else { return next.run(req).await };
    if req.uri().path() == "/health" {
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn token_is_made_once_private_and_kept() {
        let dir = tempfile::tempdir().unwrap();
        let first = load_or_create(dir.path()).unwrap();
        assert!(first.created && first.value.len() == 64);
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

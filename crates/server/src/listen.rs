//! The accept loop: HTTP/1.1 through hyper with a header-read timeout (a
//! client that opens connections and sends nothing, or headers a byte at a
//! time, is dropped), the client's address for each request, and a graceful
//! stop: no new connections, requests in flight get [`DRAIN_WITHIN`].

use std::net::SocketAddr;
use std::time::Duration;

use axum::extract::ConnectInfo;
use axum::Router;
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::server::graceful::GracefulShutdown;
use hyper_util::service::TowerToHyperService;
use tower::ServiceExt;
use tower_http::normalize_path::NormalizePath;

/// Time requests in flight get to finish once the server stops.
pub const DRAIN_WITHIN: Duration = Duration::from_secs(10);

/// Serve `app` on `listener` until `stop` completes, with at most
/// `max_connections` client connections open (the next is accepted when
/// one closes; the kernel's backlog holds it meanwhile).
pub async fn serve(
    listener: tokio::net::TcpListener,
    app: Router,
    header_timeout: Duration,
    max_connections: usize,
    stop: impl std::future::Future<Output = ()>,
) {
    let graceful = GracefulShutdown::new();
    let mut http = hyper::server::conn::http1::Builder::new();
    http.timer(TokioTimer::new()).header_read_timeout(header_timeout).keep_alive(true);
    let slots = std::sync::Arc::new(tokio::sync::Semaphore::new(max_connections.max(1)));
    tokio::pin!(stop);
    loop {
        let slot = tokio::select! {
            slot = slots.clone().acquire_owned() => match slot {
                Ok(s) => s,
                Err(_) => break,
            },
            () = &mut stop => break,
        };
        let (stream, peer) = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok(a) => a,
                Err(e) => {
                    // Out of file descriptors and the like: wait, go on.
                    tracing::warn!("accept failed: {e}");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    continue;
                }
            },
            () = &mut stop => break,
        };
        let _ = stream.set_nodelay(true);
        // `/separate/` is `/separate`, as FastAPI's clients expect (it
        // redirects them; a redirected upload is sent twice).
        let svc = NormalizePath::trim_trailing_slash(app.clone()).map_request(
            move |mut req: axum::extract::Request<hyper::body::Incoming>| {
                req.extensions_mut().insert(ConnectInfo::<SocketAddr>(peer));
                req
            },
        );
        let conn = http.serve_connection(TokioIo::new(stream), TowerToHyperService::new(svc));
        let watched = graceful.watch(conn);
        tokio::spawn(async move {
            let _slot = slot;
            if let Err(e) = watched.await {
                tracing::debug!("connection from {peer}: {e}");
            }
        });
    }
    drop(listener);
    tokio::select! {
        () = graceful.shutdown() => {}
        () = tokio::time::sleep(DRAIN_WITHIN) => tracing::warn!("requests still open after {} s were dropped", DRAIN_WITHIN.as_secs()),
    }
}

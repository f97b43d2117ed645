//! The accept loop: HTTP/1.1 through hyper with a header-read timeout (a
//! client that opens connections and sends nothing, or headers a byte at a
//! time, is dropped), a write-stall timeout (a client that stops reading a
//! download or an event stream is dropped: it held a connection slot, and
//! a zip's writer thread, for as long as it stayed connected), the
//! client's address for each request, at most [`Limits::max_connections`]
//! connections and [`Limits::per_client`] of them from one client (a
//! client that keeps its connections busy, `/health` every few seconds on
//! each, would otherwise take every slot), and a graceful stop: no new
//! connections, requests in flight get [`DRAIN_WITHIN`].
//!
//! Every connection ends with a lingering close (as nginx's
//! `lingering_close`, Apache's `lingering_close()`): once hyper is done
//! with it, its sending side is shut and whatever the client still sends
//! is read and thrown away, for at most [`LINGER_IDLE`] between reads and
//! [`LINGER_TOTAL`] in all, before the socket closes. A socket closed with
//! unread bytes in it makes the kernel send a reset, and a client that
//! sends its whole body before reading (python-requests, urllib) then
//! loses the answer it was sent (a 413 part way through a chunked upload)
//! to "connection reset".

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
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

/// Longest wait for the next bytes of a closing connection.
pub const LINGER_IDLE: Duration = Duration::from_secs(2);
/// Longest time a closing connection is read (nginx's `lingering_time`
/// default is 30 s; its `lingering_timeout`, the idle wait, 5 s).
pub const LINGER_TOTAL: Duration = Duration::from_secs(30);

/// A second handle on `stream`'s socket, so that it stays open, and can
/// be drained, after hyper drops its own. `None` when the system refuses
/// one (out of file descriptors): the connection then closes as before.
fn second_handle(stream: &tokio::net::TcpStream) -> Option<std::net::TcpStream> {
    #[cfg(unix)]
    let owned = {
        use std::os::fd::AsFd;
        stream.as_fd().try_clone_to_owned()
    };
    #[cfg(windows)]
    let owned = {
        use std::os::windows::io::AsSocket;
        stream.as_socket().try_clone_to_owned()
    };
    match owned {
        Ok(owned) => Some(std::net::TcpStream::from(owned)),
        Err(e) => {
            tracing::debug!("no second handle on a connection, it closes without lingering: {e}");
            None
        }
    }
}

/// The lingering close: shut the sending side (hyper has, unless it gave
/// up on the connection), then read and discard until the client closes,
/// stays silent for [`LINGER_IDLE`], or [`LINGER_TOTAL`] has passed.
async fn linger(socket: std::net::TcpStream) {
    use tokio::io::AsyncReadExt;
    let _ = socket.shutdown(std::net::Shutdown::Write);
    if socket.set_nonblocking(true).is_err() {
        return;
    }
    let Ok(mut socket) = tokio::net::TcpStream::from_std(socket) else { return };
    let mut sink = [0u8; 16 * 1024];
    let _ = tokio::time::timeout(LINGER_TOTAL, async {
        while let Ok(Ok(n)) = tokio::time::timeout(LINGER_IDLE, socket.read(&mut sink)).await {
            if n == 0 {
                break;
            }
        }
    })
    .await;
}

/// A connection whose writes may wait at most `stall` for the client to
/// take bytes (hyper has a header-read timeout but none for writing).
/// Reads pass through: uploads have their own idle timeout per chunk.
struct WriteStall<S> {
    inner: S,
    stall: Duration,
    /// Set while a write or flush waits on the client.
    deadline: Option<Pin<Box<tokio::time::Sleep>>>,
}

impl<S> WriteStall<S> {
    fn new(inner: S, stall: Duration) -> Self {
        WriteStall { inner, stall, deadline: None }
    }

    /// `Ready` passes (and ends the wait); `Pending` starts or checks it.
    fn watch<T>(&mut self, cx: &mut Context<'_>, polled: Poll<std::io::Result<T>>) -> Poll<std::io::Result<T>> {
        match polled {
            Poll::Ready(r) => {
                self.deadline = None;
                Poll::Ready(r)
            }
            Poll::Pending => {
                let stall = self.stall;
                let deadline = self.deadline.get_or_insert_with(|| Box::pin(tokio::time::sleep(stall)));
                match std::future::Future::poll(deadline.as_mut(), cx) {
                    Poll::Ready(()) => Poll::Ready(Err(std::io::Error::new(
                        std::io::ErrorKind::TimedOut,
                        format!("the client took nothing for {} s", stall.as_secs()),
                    ))),
                    Poll::Pending => Poll::Pending,
                }
            }
        }
    }
}

impl<S: tokio::io::AsyncRead + Unpin> tokio::io::AsyncRead for WriteStall<S> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut tokio::io::ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.inner).poll_read(cx, buf)
    }
}

impl<S: tokio::io::AsyncWrite + Unpin> tokio::io::AsyncWrite for WriteStall<S> {
    fn poll_write(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &[u8]) -> Poll<std::io::Result<usize>> {
        let polled = Pin::new(&mut self.inner).poll_write(cx, buf);
        self.watch(cx, polled)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[std::io::IoSlice<'_>],
    ) -> Poll<std::io::Result<usize>> {
        let polled = Pin::new(&mut self.inner).poll_write_vectored(cx, bufs);
        self.watch(cx, polled)
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        let polled = Pin::new(&mut self.inner).poll_flush(cx);
        self.watch(cx, polled)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}

/// How many connections the server holds open.
#[derive(Debug, Clone)]
pub struct Limits {
    /// Bounds both the wait for a request's headers and how long a
    /// response may wait for the client to take its bytes.
    pub header_timeout: Duration,
    /// Client connections open at once (the next is accepted when one
    /// closes; the kernel's backlog holds it meanwhile).
    pub max_connections: usize,
    /// Connections one client (an IPv4 address, an IPv6 /64, see
    /// [`crate::service::rate_key`]) may hold open at once; more are closed
    /// as soon as they are accepted. Clients at addresses that are not
    /// public (loopback, private networks: see
    /// `stemroom_library::link::is_public`) and `exempt` (the trusted
    /// proxies, whose connections carry many clients) are not counted. 0:
    /// no limit.
    pub per_client: usize,
    pub exempt: Vec<IpAddr>,
}

/// Open connections per client, and the guard that gives one back.
#[derive(Default)]
struct Clients(Mutex<HashMap<IpAddr, usize>>);

struct ClientSlot(Arc<Clients>, IpAddr);

impl Drop for ClientSlot {
    fn drop(&mut self) {
        let mut open = self.0 .0.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(n) = open.get_mut(&self.1) {
            *n -= 1;
            if *n == 0 {
                open.remove(&self.1);
            }
        }
    }
}

impl Clients {
    /// A slot for `peer`, `None` when it holds `limit` already; `Some(None)`
    /// for a client that is not counted.
    fn take(self: &Arc<Self>, peer: IpAddr, limits: &Limits) -> Option<Option<ClientSlot>> {
        // Not counted: this machine, the trusted proxies, and any address
        // of a private network (a reverse proxy in another container, or
        // on the LAN, carries every client through one address).
        let peer = peer.to_canonical();
        let exempt = !stemroom_library::link::is_public(peer) || limits.exempt.contains(&peer);
        if limits.per_client == 0 || exempt {
            return Some(None);
        }
        let key = crate::service::rate_key(peer);
        let mut open = self.0.lock().unwrap_or_else(|p| p.into_inner());
        let n = open.entry(key).or_insert(0);
        if *n >= limits.per_client {
            return None;
        }
        *n += 1;
        Some(Some(ClientSlot(self.clone(), key)))
    }
}

/// Raise this process's open-file limit to its hard limit (on macOS at
/// most OPEN_MAX), as Go's runtime does at start (nginx has
/// `worker_rlimit_nofile`): each connection holds
/// two descriptors (hyper's and the lingering close's), so 512 connections
/// would reach the usual soft limit of 1024, and an upload's file or the
/// database could then not be opened. Returns the limit in force, when
/// known.
fn raise_open_file_limit(want: u64) -> Option<u64> {
    #[cfg(unix)]
    {
        let mut lim = libc::rlimit { rlim_cur: 0, rlim_max: 0 };
        // SAFETY: getrlimit/setrlimit with a valid pointer to a local rlimit.
        if unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim) } != 0 {
            return None;
        }
        // macOS refuses more than OPEN_MAX (10240) as the soft limit, and
        // gives apps an unlimited hard one.
        #[cfg(target_os = "macos")]
        let most = lim.rlim_max.min(10_240);
        #[cfg(not(target_os = "macos"))]
        let most = lim.rlim_max;
        if lim.rlim_cur < most {
            let raised = libc::rlimit { rlim_cur: most, rlim_max: lim.rlim_max };
            // SAFETY: as above.
            if unsafe { libc::setrlimit(libc::RLIMIT_NOFILE, &raised) } == 0 {
                lim.rlim_cur = most;
            }
        }
        // (`rlim_t` is 32 bits on some targets.)
        #[allow(clippy::useless_conversion)]
        let now = u64::try_from(lim.rlim_cur).unwrap_or(u64::MAX);
        if now < want {
            tracing::warn!(
                "this process may open {now} files, fewer than {want} for --max-connections (two per connection, \
                 and files for uploads and the database): raise its limit (ulimit -n, LimitNOFILE=) or lower \
                 --max-connections"
            );
        }
        Some(now)
    }
    #[cfg(not(unix))]
    {
        let _ = want;
        None
    }
}

/// Serve `app` on `listener` until `stop` completes, within `limits`.
pub async fn serve(
    listener: tokio::net::TcpListener,
    app: Router,
    limits: Limits,
    stop: impl std::future::Future<Output = ()>,
) {
    let header_timeout = limits.header_timeout;
    let files = raise_open_file_limit(2 * limits.max_connections as u64 + 256);
    tracing::debug!("open-file limit: {files:?}");
    let graceful = GracefulShutdown::new();
    let mut http = hyper::server::conn::http1::Builder::new();
    http.timer(TokioTimer::new()).header_read_timeout(header_timeout).keep_alive(true);
    let slots = Arc::new(tokio::sync::Semaphore::new(limits.max_connections.max(1)));
    let clients = Arc::new(Clients::default());
    let mut refused: u64 = 0;
    // The connections' tasks: those still open when the drain time is up
    // are ended (aborted) with it. In the app the runtime goes on after a
    // stop, and a transfer left running finished an upload into a stopped
    // service (or a restarted one, which had removed its part file).
    let mut connections = tokio::task::JoinSet::new();
    tokio::pin!(stop);
    loop {
        while connections.try_join_next().is_some() {}
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
        let Some(client_slot) = clients.take(peer.ip(), &limits) else {
            // Closed at once: it would hold a slot every other client needs.
            refused += 1;
            if refused.is_power_of_two() {
                tracing::warn!(
                    "{peer} already holds {} connections: closed ({refused} refused so far)",
                    limits.per_client
                );
            }
            drop(stream);
            continue;
        };
        let _ = stream.set_nodelay(true);
        let lingering = second_handle(&stream);
        // `/separate/` is `/separate`, as FastAPI's clients expect (it
        // redirects them; a redirected upload is sent twice).
        let svc = NormalizePath::trim_trailing_slash(app.clone()).map_request(
            move |mut req: axum::extract::Request<hyper::body::Incoming>| {
                req.extensions_mut().insert(ConnectInfo::<SocketAddr>(peer));
                req
            },
        );
        let stream = WriteStall::new(stream, header_timeout);
        let conn = http.serve_connection(TokioIo::new(stream), TowerToHyperService::new(svc));
        let watched = graceful.watch(conn);
        connections.spawn(async move {
            let slots = (slot, client_slot);
            if let Err(e) = watched.await {
                tracing::debug!("connection from {peer}: {e}");
            }
            // hyper's handle is closed; the socket closes with this one,
            // on a task of its own: a stop's drain ends connections still
            // served, not the graceful close of one already answered (a
            // reset could lose its answer).
            if let Some(socket) = lingering {
                tokio::spawn(async move {
                    let _slots = slots;
                    linger(socket).await;
                });
            }
        });
    }
    drop(listener);
    tokio::select! {
        // Every connection is closed; some may still linger (a socket's
        // graceful close): left to end on their own.
        () = graceful.shutdown() => connections.detach_all(),
        () = tokio::time::sleep(DRAIN_WITHIN) => {
            tracing::warn!("requests still open after {} s were dropped", DRAIN_WITHIN.as_secs());
            connections.shutdown().await;
        }
    }
}

#[cfg(test)]
mod tests {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    use super::*;

    #[test]
    #[cfg(target_os = "linux")]
    fn the_open_file_limit_is_raised_to_its_hard_limit() {
        let mut lim = libc::rlimit { rlim_cur: 0, rlim_max: 0 };
        // SAFETY: valid pointer to a local rlimit.
        assert_eq!(unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim) }, 0);
        let lowered = libc::rlimit { rlim_cur: lim.rlim_max.min(512), rlim_max: lim.rlim_max };
        // SAFETY: as above.
        assert_eq!(unsafe { libc::setrlimit(libc::RLIMIT_NOFILE, &lowered) }, 0);
        assert_eq!(raise_open_file_limit(100), Some(lim.rlim_max));
        let mut now = libc::rlimit { rlim_cur: 0, rlim_max: 0 };
        // SAFETY: as above.
        assert_eq!(unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut now) }, 0);
        assert_eq!(now.rlim_cur, lim.rlim_max);
    }

    #[test]
    fn one_client_holds_at_most_its_share_of_connections() {
        let clients = Arc::new(Clients::default());
        let limits = Limits {
            header_timeout: Duration::from_secs(30),
            max_connections: 512,
            per_client: 2,
            exempt: vec!["1.1.1.9".parse().unwrap()],
        };
        let ip = |a: &str| a.parse::<IpAddr>().unwrap();
        let a1 = clients.take(ip("93.184.216.34"), &limits).expect("first");
        let a2 = clients.take(ip("93.184.216.34"), &limits).expect("second");
        assert!(clients.take(ip("93.184.216.34"), &limits).is_none(), "a third is refused");
        // Another client is not held back; one IPv6 /64 is one client.
        let b = clients.take(ip("93.184.216.35"), &limits).expect("another client");
        let v6 =
            [clients.take(ip("2a00:1450:4001:800::1"), &limits), clients.take(ip("2a00:1450:4001:800::2"), &limits)];
        assert!(v6.iter().all(Option::is_some));
        assert!(clients.take(ip("2a00:1450:4001:800:ffff::3"), &limits).is_none());
        // This machine, private networks and trusted proxies are not counted.
        for _ in 0..5 {
            for free in ["127.0.0.1", "172.17.0.2", "10.1.2.3", "fd00::7", "::ffff:1.1.1.9"] {
                assert!(matches!(clients.take(ip(free), &limits), Some(None)), "{free}");
            }
        }
        // A closed connection gives its slot back; nothing is left counted.
        drop(a1);
        let a3 = clients.take(ip("93.184.216.34"), &limits).expect("after a close");
        drop((a2, a3, b, v6));
        assert!(clients.0.lock().unwrap().is_empty());
    }

    /// A request still running when the drain time is up ends with the
    /// stop (in the app the runtime goes on, and it ran on, unseen).
    #[tokio::test]
    async fn requests_left_after_the_drain_are_ended_with_the_stop() {
        use std::sync::atomic::{AtomicBool, Ordering};
        struct Guard(Arc<AtomicBool>);
        impl Drop for Guard {
            fn drop(&mut self) {
                self.0.store(true, Ordering::SeqCst);
            }
        }
        let (started, ended) = (Arc::new(AtomicBool::new(false)), Arc::new(AtomicBool::new(false)));
        let app = {
            let (started, ended) = (started.clone(), ended.clone());
            Router::new().route(
                "/slow",
                axum::routing::get(move || {
                    let (started, ended) = (started.clone(), ended.clone());
                    async move {
                        let _guard = Guard(ended);
                        started.store(true, Ordering::SeqCst);
                        tokio::time::sleep(Duration::from_secs(120)).await;
                        "late"
                    }
                }),
            )
        };
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let limits =
            Limits { header_timeout: Duration::from_secs(30), max_connections: 8, per_client: 0, exempt: vec![] };
        let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
        let server = tokio::spawn(serve(listener, app, limits, async move {
            let _ = stop_rx.await;
        }));
        let mut client = tokio::net::TcpStream::connect(addr).await.unwrap();
        client.write_all(b"GET /slow HTTP/1.1\r\nHost: x\r\n\r\n").await.unwrap();
        while !started.load(Ordering::SeqCst) {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        let t0 = std::time::Instant::now();
        stop_tx.send(()).unwrap();
        server.await.unwrap();
        assert!(t0.elapsed() >= DRAIN_WITHIN - Duration::from_millis(100), "{:?}", t0.elapsed());
        tokio::time::sleep(Duration::from_millis(100)).await;
        assert!(ended.load(Ordering::SeqCst), "the request runs on after the stop");
        drop(client);
    }

    #[tokio::test]
    async fn a_client_that_stops_reading_is_dropped_after_the_stall_and_not_before() {
        // A pipe that holds 64 KiB, as a socket's buffers would.
        let (server_end, mut client_end) = tokio::io::duplex(64 * 1024);
        let mut conn = WriteStall::new(server_end, Duration::from_millis(1500));
        // A client that reads, slowly: never dropped.
        let reader = tokio::spawn(async move {
            let mut buf = vec![0u8; 16 * 1024];
            let mut got = 0;
            for _ in 0..16 {
                tokio::time::sleep(Duration::from_millis(100)).await;
                got += client_end.read(&mut buf).await.expect("read");
            }
            (got, client_end)
        });
        let chunk = vec![7u8; 16 * 1024];
        for _ in 0..16 {
            conn.write_all(&chunk).await.expect("a slow reader is served");
        }
        let (got, client_end) = reader.await.expect("reader");
        assert!(got > 0);
        // The client stops reading: the write fails once it has waited the stall.
        let started = std::time::Instant::now();
        let err = loop {
            if let Err(e) = conn.write_all(&chunk).await {
                break e;
            }
        };
        assert_eq!(err.kind(), std::io::ErrorKind::TimedOut, "{err}");
        let waited = started.elapsed();
        assert!(waited >= Duration::from_millis(1500) && waited < Duration::from_secs(10), "{waited:?}");
        drop(client_end);
    }
}

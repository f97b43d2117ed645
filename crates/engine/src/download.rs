//! Resumable HTTPS downloads of pinned files: their size and sha256 are
//! known before the first byte arrives (from the model manifest, or the
//! pins of [`crate::runtime::install`]), so a download is checked before
//! anything uses it.
//!
//! A download goes to `<dir>/<name>.part` and is renamed to `<dir>/<name>`
//! once complete; an interrupted one resumes with an HTTP range request
//! (RFC 9110 §14.2), a server that ignores the range sends the whole file
//! again (HTTP 200) and the part is rewritten. The agent trusts the
//! system's certificate store (a proxy's CA an administrator installed
//! works) and takes its proxy from the environment as curl and pip take it
//! for an HTTPS URL ([`env_proxy`]).

use std::fs::{self, File};
use std::io::{Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};
use std::time::Duration;

/// One file to download: where from, its name on disk, its size and sha256.
#[derive(Debug, Clone, Copy)]
pub struct Pinned<'a> {
    /// HTTPS URL.
    pub url: &'a str,
    /// File name in the download folder.
    pub file_name: &'a str,
    /// Exact size in bytes.
    pub bytes: u64,
    /// sha256 of the whole file, lowercase hex.
    pub sha256: &'a str,
}

/// Why a download failed.
#[derive(Debug, thiserror::Error)]
pub enum DownloadError {
    /// The server could not be reached, answered with an error, or stopped
    /// sending; `reason` says what, and what to do ([`RESUMES`] when the
    /// connection failed: a later call resumes).
    #[error("cannot download {url}: {reason}")]
    Http { url: String, reason: String },
    /// The file is complete but not the pinned one: a download (removed:
    /// try again) or a file the user gave (`theirs`: left where it is, to
    /// be replaced).
    #[error("{file} is not the file Stemroom expects (sha256 {actual}, expected {expected}); {}", checksum_advice(*.theirs))]
    Checksum { file: String, expected: String, actual: String, theirs: bool },
    /// Reading or writing the download folder failed.
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    /// Another process downloads the same file (its lock file).
    #[error("another download of this file is running (lock {0})")]
    Busy(PathBuf),
    /// The caller's `cancelled` returned true.
    #[error("cancelled")]
    Cancelled,
}

/// What to do after a connection that failed or stopped part way.
pub const RESUMES: &str = "check the internet connection and try again (the download resumes)";

/// What an HTTP error status means for a pinned file, and what to do.
fn status_advice(status: u16) -> String {
    match status {
        404 | 410 => format!(
            "the server has no such file (HTTP {status}): it was moved or removed there; a newer Stemroom may \
             fetch it from elsewhere"
        ),
        407 => "the network's proxy asks for a user name and password (HTTP 407): put them in https_proxy \
                (http://user:password@proxy:port)"
            .into(),
        401 | 403 => {
            format!("the server refused the download (HTTP {status}): a proxy or firewall on this network may block it")
        }
        429 => "the server asks to wait (HTTP 429): try again in a few minutes".into(),
        s if s >= 500 => format!("the server failed (HTTP {s}): try again later"),
        s => format!("the server answered HTTP {s}"),
    }
}

/// What to do about a file whose sha256 is not the pinned one.
pub fn checksum_advice(theirs: bool) -> &'static str {
    if theirs {
        "replace it with a good copy (it was left where it is)"
    } else {
        "try again (the damaged download was removed)"
    }
}

fn io_err(path: &Path) -> impl FnOnce(std::io::Error) -> DownloadError + '_ {
    move |source| DownloadError::Io { path: path.to_path_buf(), source }
}

/// The HTTP agent: the system's certificate store, the environment's
/// proxy ([`env_proxy`]), HTTPS only (a redirect to plain HTTP is refused:
/// the sha256 still guards the content, but not what is fetched), 30 s to
/// connect, 60 s for the response head, and [`READ_TIMEOUT`] for each
/// read of the body.
pub fn agent() -> ureq::Agent {
    agent_with(READ_TIMEOUT)
}

/// Longest wait for the next bytes of a body: 30 s. A connection that
/// died without closing (a Wi-Fi change, a NAT entry dropped) then fails
/// as a network error the next call resumes, instead of hanging for ever
/// with Cancel unheard (cancel is checked between reads).
pub const READ_TIMEOUT: Duration = Duration::from_secs(30);

fn agent_with(per_read: Duration) -> ureq::Agent {
    let tls = ureq::tls::TlsConfig::builder().root_certs(ureq::tls::RootCerts::PlatformVerifier).build();
    ureq::Agent::config_builder()
        .tls_config(tls)
        .proxy(env_proxy(&|name| std::env::var(name).ok()))
        // (This crate's unit tests serve their files over loopback HTTP.)
        .https_only(!cfg!(test))
        .timeout_connect(Some(Duration::from_secs(30)))
        .timeout_recv_response(Some(Duration::from_secs(60)))
        .timeout_per_read(Some(per_read))
        .timeout_per_write(Some(per_read))
        .http_status_as_error(false)
        .build()
        .into()
}

/// The proxy for an HTTPS download, from `var` (the environment): the first
/// of `https_proxy`, `HTTPS_PROXY`, `all_proxy`, `ALL_PROXY` that is set
/// and names an HTTP(S) proxy, with `no_proxy`/`NO_PROXY`'s hosts left out;
/// as curl and Python's requests (pip) choose. ureq's own choice puts
/// `ALL_PROXY` first and takes `HTTP_PROXY` for HTTPS too, and this build
/// has no SOCKS: a desktop proxy's usual `https_proxy=http://127.0.0.1:7890`
/// beside `all_proxy=socks5://127.0.0.1:7890` failed every download. A
/// SOCKS proxy is passed over (logged); `None` without one.
pub fn env_proxy(var: &dyn Fn(&str) -> Option<String>) -> Option<ureq::Proxy> {
    for name in ["https_proxy", "HTTPS_PROXY", "all_proxy", "ALL_PROXY"] {
        let Some(value) = var(name).map(|v| v.trim().to_string()).filter(|v| !v.is_empty()) else { continue };
        let proxy = match ureq::Proxy::new(&value) {
            Ok(p) => p,
            Err(e) => {
                tracing::warn!("{name} is not a proxy address ({e}): not used");
                continue;
            }
        };
        if !matches!(proxy.protocol(), ureq::ProxyProtocol::Http | ureq::ProxyProtocol::Https) {
            tracing::warn!("{name} names a SOCKS proxy, which Stemroom's downloads cannot use: not used");
            continue;
        }
        let no_proxy = var("no_proxy").or_else(|| var("NO_PROXY")).unwrap_or_default();
        // Rebuilt to add no_proxy (a proxy made from a string has none);
        // the credentials come back decoded, and the builder encodes them.
        let mut b = ureq::Proxy::builder(proxy.protocol()).host(proxy.host()).port(proxy.port());
        if let Some(user) = proxy.username() {
            b = b.username(user);
        }
        if let Some(password) = proxy.password() {
            b = b.password(password);
        }
        // As curl reads it: a bare `corp.com` is that host and every
        // name under it (ureq's own entry is the host alone).
        for host in no_proxy.split(',').map(str::trim).filter(|h| !h.is_empty()) {
            b = b.no_proxy(host);
            if !host.starts_with('.') && !host.starts_with('*') {
                b = b.no_proxy(&format!(".{host}"));
            }
        }
        match b.build() {
            Ok(p) => return Some(p),
            Err(e) => tracing::warn!("{name}: {e}: not used"),
        }
    }
    None
}

/// Download `file` into `dir` (resuming `<dir>/<name>.part`), calling
/// `on_progress(bytes on disk)` every 4 MiB and at the end, checking
/// `cancelled` between reads. Returns `<dir>/<name>`, complete in size; its
/// sha256 is for [`verify`] to check.
///
/// # Errors
/// [`DownloadError::Http`] (HTTP errors, a short body: the part stays for
/// the next call), [`DownloadError::Io`], [`DownloadError::Cancelled`] (the
/// part stays).
pub fn download(
    agent: &ureq::Agent,
    file: &Pinned<'_>,
    dir: &Path,
    on_progress: &mut dyn FnMut(u64),
    cancelled: &dyn Fn() -> bool,
) -> Result<PathBuf, DownloadError> {
    fs::create_dir_all(dir).map_err(io_err(dir))?;
    let dest = dir.join(file.file_name);
    let part = dir.join(format!("{}.part", file.file_name));
    let fail = |reason: String| DownloadError::Http { url: file.url.to_string(), reason };
    // Already here whole (a run cancelled or failed after its download, the
    // file kept for the next): not fetched again; [`verify`] still checks it.
    if fs::metadata(&dest).is_ok_and(|m| m.is_file() && m.len() == file.bytes) {
        on_progress(file.bytes);
        return Ok(dest);
    }
    let mut have = fs::metadata(&part).map(|m| m.len()).unwrap_or(0);
    if have > file.bytes {
        have = 0;
    }
    let mut req = agent.get(file.url);
    if have > 0 {
        req = req.header("Range", format!("bytes={have}-"));
    }
    let mut resp = req.call().map_err(|e| fail(format!("{e}; {RESUMES}")))?;
    let status = resp.status().as_u16();
    let header = |name: &str| resp.headers().get(name).and_then(|v| v.to_str().ok()).map(str::to_string);
    let web_page = header("content-type").is_some_and(|t| t.to_ascii_lowercase().starts_with("text/html"));
    let append = match status {
        // The rest from where the part ends, of this file's size, or nothing
        // is kept of it.
        206 if have > 0 => {
            let range = header("content-range").unwrap_or_default();
            if !range.starts_with(&format!("bytes {have}-")) || !range.ends_with(&format!("/{}", file.bytes)) {
                // The part cannot be continued from this server: the next
                // call starts over (no range asked).
                let _ = fs::remove_file(&part);
                return Err(fail(format!(
                    "the server sent another part of the file ({range:?}); try again: it starts over"
                )));
            }
            true
        }
        // The whole file (again): when it says another size, or is a web
        // page, it is a proxy's or a captive portal's page, which is never
        // taken for the file's start nor replaces a partial download
        // (without a size it is taken, as a server that ignores ranges
        // sends it, and checked at the end).
        200 if header("content-length").and_then(|l| l.parse::<u64>().ok()).is_some_and(|len| len != file.bytes)
            || web_page =>
        {
            let what = if web_page {
                "a web page".to_string()
            } else {
                format!("{} bytes, not {}", header("content-length").unwrap_or_else(|| "unknown".into()), file.bytes)
            };
            return Err(fail(format!(
                "the server sent something else than the file ({what}): a proxy or a sign-in page on this \
                 network? Sign in, or try on another network"
            )));
        }
        200 => false,
        416 if have == file.bytes => true,
        // A range past what the server has: the part file is not a start
        // of this file (another version, damaged); asking with it again
        // would fail for ever, so the next try starts afresh.
        416 => {
            let _ = fs::remove_file(&part);
            return Err(fail("the server refused to resume the download; the next try starts it again".into()));
        }
        _ => return Err(fail(status_advice(status))),
    };
    let mut out = fs::OpenOptions::new()
        .create(true)
        .append(append)
        .write(true)
        .truncate(!append)
        .open(&part)
        .map_err(io_err(&part))?;
    if !append {
        have = 0;
    }
    out.seek(SeekFrom::Start(have)).map_err(io_err(&part))?;
    if status != 416 {
        let mut body = resp.body_mut().with_config().limit(file.bytes.saturating_sub(have) + 1).reader();
        let mut buf = vec![0u8; 1 << 20];
        let mut last = 0u64;
        loop {
            if cancelled() {
                return Err(DownloadError::Cancelled);
            }
            let n = body.read(&mut buf).map_err(|e| fail(format!("{e}; {RESUMES}")))?;
            if n == 0 {
                break;
            }
            out.write_all(&buf[..n]).map_err(io_err(&part))?;
            have += n as u64;
            if have > file.bytes {
                break;
            }
            if have - last >= 4 << 20 || have == file.bytes {
                last = have;
                on_progress(have);
            }
        }
    }
    out.sync_all().map_err(io_err(&part))?;
    drop(out);
    if have > file.bytes {
        let _ = fs::remove_file(&part);
        return Err(fail(format!(
            "the server sent more than the expected {} bytes; try again: it starts over",
            file.bytes
        )));
    }
    if have < file.bytes {
        return Err(fail(format!("the download stopped after {have} of {} bytes; {RESUMES}", file.bytes)));
    }
    fs::rename(&part, &dest).map_err(io_err(&dest))?;
    Ok(dest)
}

/// Check `path` against `file`'s sha256; a mismatching file under `ours`
/// (the download folder) is removed, one elsewhere (the user's) is left.
///
/// # Errors
/// [`DownloadError::Checksum`], [`DownloadError::Io`].
pub fn verify(path: &Path, file: &Pinned<'_>, ours: &Path) -> Result<(), DownloadError> {
    let actual = crate::model::sha256_file(path).map_err(io_err(path))?;
    if actual != file.sha256 {
        let theirs = !path.starts_with(ours);
        if !theirs {
            let _ = fs::remove_file(path);
        }
        return Err(DownloadError::Checksum {
            file: if theirs { path.display().to_string() } else { file.file_name.to_string() },
            expected: file.sha256.to_string(),
            actual,
            theirs,
        });
    }
    Ok(())
}

/// An exclusive advisory lock on a file, held while the value lives (the
/// kernel drops it with the process, so a crash leaves no stale lock).
#[derive(Debug)]
pub struct FileLock {
    _file: File,
}

impl FileLock {
    /// Take the lock on `path` (created if missing) without waiting.
    ///
    /// # Errors
    /// [`DownloadError::Busy`] when another process holds it,
    /// [`DownloadError::Io`].
    pub fn take(path: &Path) -> Result<Self, DownloadError> {
        if let Some(parent) = path.parent() {
            fs::create_dir_all(parent).map_err(io_err(parent))?;
        }
        let file = File::create(path).map_err(io_err(path))?;
        match file.try_lock() {
            Ok(()) => Ok(FileLock { _file: file }),
            Err(fs::TryLockError::WouldBlock) => Err(DownloadError::Busy(path.to_path_buf())),
            Err(fs::TryLockError::Error(e)) => Err(io_err(path)(e)),
        }
    }

    /// Take the lock on `path`, waiting while another process (or thread)
    /// holds it; `cancelled` is checked every [`LOCK_POLL`]. Returns the lock
    /// and whether it had to wait (the other holder may have done the work
    /// meanwhile).
    ///
    /// # Errors
    /// [`DownloadError::Cancelled`], [`DownloadError::Io`].
    pub fn wait(path: &Path, cancelled: &dyn Fn() -> bool) -> Result<(Self, bool), DownloadError> {
        let mut waited = false;
        loop {
            match Self::take(path) {
                Ok(lock) => return Ok((lock, waited)),
                Err(DownloadError::Busy(_)) => {
                    if !waited {
                        tracing::info!("waiting for another process holding {}", path.display());
                    }
                    waited = true;
                    if cancelled() {
                        return Err(DownloadError::Cancelled);
                    }
                    std::thread::sleep(LOCK_POLL);
                }
                Err(e) => return Err(e),
            }
        }
    }
}

/// How often [`FileLock::wait`] tries again (a wait is for another
/// download, seconds to minutes: a quarter second is not noticed).
pub const LOCK_POLL: std::time::Duration = std::time::Duration::from_millis(250);

/// A loopback file server for download tests.
#[cfg(test)]
pub(crate) mod test_server {
    use std::collections::HashMap;
    use std::io::{BufRead, BufReader, Write};
    use std::net::TcpListener;
    use std::sync::{Arc, Mutex};

    /// A loopback HTTP/1.1 file server with `Range: bytes=N-` support; the
    /// first `cut` requests send only half the body, then close (files named
    /// `hang-…`: then hold the connection open for a minute, sending
    /// nothing). Returns its base URL and the request heads it saw.
    pub(crate) fn serve(files: HashMap<String, Vec<u8>>, cut: usize) -> (String, Arc<Mutex<Vec<String>>>) {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let base = format!("http://{}", listener.local_addr().unwrap());
        let seen = Arc::new(Mutex::new(Vec::new()));
        let log = seen.clone();
        std::thread::spawn(move || {
            for (n, stream) in listener.incoming().enumerate() {
                let Ok(mut stream) = stream else { continue };
                let mut reader = BufReader::new(stream.try_clone().unwrap());
                let mut head = String::new();
                loop {
                    let mut line = String::new();
                    if reader.read_line(&mut line).unwrap_or(0) == 0 || line == "\r\n" {
                        break;
                    }
                    head.push_str(&line);
                }
                log.lock().unwrap().push(head.clone());
                let path = head.split_whitespace().nth(1).unwrap_or("/").to_string();
                let name = path.rsplit('/').next().unwrap_or("").to_string();
                let Some(body) = files.get(&name) else {
                    let _ =
                        stream.write_all(b"HTTP/1.1 404 Not Found\r\nContent-Length: 0\r\nConnection: close\r\n\r\n");
                    continue;
                };
                let from = head
                    .lines()
                    .find_map(|l| l.to_ascii_lowercase().strip_prefix("range: bytes=").map(str::to_string))
                    .and_then(|r| r.trim().trim_end_matches('-').parse::<usize>().ok())
                    .unwrap_or(0);
                // A captive portal: a page of its own for a resumed download
                // (`portal-`), or for every request (`signin-`).
                if (name.starts_with("portal-") && from > 0) || name.starts_with("signin-") {
                    let page = b"<html>Sign in to the hotel's Wi-Fi</html>";
                    let _ = write!(
                        stream,
                        "HTTP/1.1 200 OK\r\nContent-Type: text/html\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
                        page.len()
                    );
                    let _ = stream.write_all(page);
                    continue;
                }
                if from > 0 && from >= body.len() {
                    let _ = write!(
                        stream,
                        "HTTP/1.1 416 Range Not Satisfiable\r\nContent-Range: bytes */{}\r\nContent-Length: 0\r\nConnection: close\r\n\r\n",
                        body.len()
                    );
                    continue;
                }
                let part = &body[from.min(body.len())..];
                let status = if from > 0 { "206 Partial Content" } else { "200 OK" };
                let _ = write!(
                    stream,
                    "HTTP/1.1 {status}\r\nContent-Length: {}\r\nContent-Range: bytes {from}-{}/{}\r\nConnection: close\r\n\r\n",
                    part.len(),
                    body.len().saturating_sub(1),
                    body.len()
                );
                let send = if n < cut { &part[..part.len() / 2] } else { part };
                let _ = stream.write_all(send);
                if n < cut && name.starts_with("hang-") {
                    std::thread::spawn(move || {
                        std::thread::sleep(std::time::Duration::from_secs(60));
                        drop(stream);
                    });
                }
            }
        });
        (base, seen)
    }
}

#[cfg(test)]
mod tests {
    use std::collections::HashMap;
    use std::time::Instant;

    use super::*;

    /// A page of a captive portal or a proxy, answered to a resumed download:
    /// refused, the part kept as it was.
    #[test]
    fn a_portal_page_never_replaces_a_partial_download() {
        let body: Vec<u8> = (0..300_000u32).map(|i| (i % 251) as u8).collect();
        let (base, _) = test_server::serve(
            HashMap::from([("portal-x.bin".to_string(), body.clone()), ("signin-x.bin".to_string(), body.clone())]),
            1,
        );
        let url = format!("{base}/portal-x.bin");
        let file = Pinned { url: &url, file_name: "portal-x.bin", bytes: body.len() as u64, sha256: "" };
        let dir = tempfile::tempdir().unwrap();
        let agent = agent_with(Duration::from_secs(5));
        download(&agent, &file, dir.path(), &mut |_| {}, &|| false).expect_err("cut off half way");
        let part = dir.path().join("portal-x.bin.part");
        let kept = std::fs::read(&part).unwrap();
        assert_eq!(kept.len(), body.len() / 2);
        let err = download(&agent, &file, dir.path(), &mut |_| {}, &|| false).expect_err("a portal page");
        assert!(err.to_string().contains("something else than the file"), "{err}");
        assert_eq!(std::fs::read(&part).unwrap(), kept, "the part is untouched");
        // A fresh download answered by a sign-in page: refused, nothing kept
        // to be resumed from.
        let url = format!("{base}/signin-x.bin");
        let file = Pinned { url: &url, file_name: "signin-x.bin", bytes: body.len() as u64, sha256: "" };
        let err = download(&agent, &file, dir.path(), &mut |_| {}, &|| false).expect_err("a sign-in page");
        assert!(err.to_string().contains("something else than the file"), "{err}");
        assert!(std::fs::metadata(dir.path().join("signin-x.bin.part")).map_or(true, |m| m.len() == 0));
    }

    /// A part file longer than what the server has (another version of
    /// the file, a damaged part): its 416 removes the part, so the next
    /// try starts afresh instead of failing for ever.
    #[test]
    fn a_part_the_server_cannot_resume_is_started_again() {
        let body: Vec<u8> = (0..50_000u32).map(|i| (i % 251) as u8).collect();
        let (base, _) = test_server::serve(HashMap::from([("y.bin".to_string(), body.clone())]), 0);
        let url = format!("{base}/y.bin");
        let file = Pinned { url: &url, file_name: "y.bin", bytes: body.len() as u64 + 100, sha256: "" };
        let dir = tempfile::tempdir().unwrap();
        let part = dir.path().join("y.bin.part");
        std::fs::write(&part, vec![0u8; body.len() + 10]).unwrap();
        let err = download(&agent(), &file, dir.path(), &mut |_| {}, &|| false).expect_err("416");
        assert!(err.to_string().contains("starts it again"), "{err}");
        assert!(!part.exists(), "the part goes");
    }

    /// A file already downloaded whole (kept after a cancel or a failed
    /// extraction) is not fetched again.
    #[test]
    fn a_whole_file_already_here_is_not_fetched_again() {
        let body: Vec<u8> = (0..50_000u32).map(|i| (i % 251) as u8).collect();
        let (base, seen) = test_server::serve(HashMap::from([("x.bin".to_string(), body.clone())]), 1);
        let url = format!("{base}/x.bin");
        let file = Pinned { url: &url, file_name: "x.bin", bytes: body.len() as u64, sha256: "" };
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("x.bin"), &body).unwrap();
        let got = download(&agent(), &file, dir.path(), &mut |_| {}, &|| false).expect("kept file");
        assert_eq!(got, dir.path().join("x.bin"));
        assert!(seen.lock().unwrap().is_empty(), "no request made");
    }

    /// A server that stops sending mid-body without closing: the read times
    /// out as a network error (the part stays), and the next call resumes.
    #[test]
    fn a_connection_that_goes_quiet_fails_and_resumes() {
        let body: Vec<u8> = (0..400_000u32).map(|i| (i % 251) as u8).collect();
        let (base, seen) = test_server::serve(HashMap::from([("hang-x.bin".to_string(), body.clone())]), 1);
        let url = format!("{base}/hang-x.bin");
        let file = Pinned { url: &url, file_name: "hang-x.bin", bytes: body.len() as u64, sha256: "" };
        let dir = tempfile::tempdir().unwrap();
        let agent = agent_with(Duration::from_secs(1));
        let t0 = Instant::now();
        let err = download(&agent, &file, dir.path(), &mut |_| {}, &|| false).expect_err("quiet connection");
        assert!(matches!(err, DownloadError::Http { .. }), "{err}");
        assert!(t0.elapsed() < Duration::from_secs(10), "gave up after {:?}", t0.elapsed());
        let part = std::fs::metadata(dir.path().join("hang-x.bin.part")).unwrap().len();
        assert!(part > 0 && part < body.len() as u64, "{part} bytes kept for the resume");
        let done = download(&agent, &file, dir.path(), &mut |_| {}, &|| false).expect("resumed");
        assert_eq!(std::fs::read(done).unwrap(), body);
        assert!(seen.lock().unwrap()[1].to_ascii_lowercase().contains(&format!("range: bytes={part}-")));
    }

    /// An HTTP error says what it means, not to check the connection.
    #[test]
    fn an_http_error_says_what_it_means() {
        let (base, _) = test_server::serve(HashMap::new(), 0);
        let url = format!("{base}/gone.bin");
        let file = Pinned { url: &url, file_name: "gone.bin", bytes: 10, sha256: "" };
        let dir = tempfile::tempdir().unwrap();
        let err = download(&agent(), &file, dir.path(), &mut |_| {}, &|| false).expect_err("404");
        let said = err.to_string();
        assert!(said.contains("no such file (HTTP 404)") && !said.contains("internet connection"), "{said}");
        assert!(super::status_advice(407).contains("https_proxy"));
        assert!(super::status_advice(503).contains("try again later"));
    }

    /// curl's and pip's choice of proxy for an HTTPS URL: `https_proxy`
    /// before `all_proxy`, a SOCKS one passed over (this build has none),
    /// `http_proxy` not used, `no_proxy` kept, credentials as given.
    #[test]
    fn the_proxy_is_chosen_as_curl_chooses_it() {
        let env = |pairs: &'static [(&'static str, &'static str)]| {
            move |name: &str| pairs.iter().find(|(k, _)| *k == name).map(|(_, v)| v.to_string())
        };
        let chosen = |pairs: &'static [(&'static str, &'static str)]| {
            super::env_proxy(&env(pairs)).map(|p| (p.host().to_string(), p.port(), p.username().map(str::to_string)))
        };
        // A desktop proxy's usual pair (Clash, v2rayN): HTTP for HTTPS,
        // SOCKS for the rest.
        let clash = &[("all_proxy", "socks5://127.0.0.1:7891"), ("https_proxy", "http://127.0.0.1:7890")];
        assert_eq!(chosen(clash), Some(("127.0.0.1".into(), 7890, None)));
        assert_eq!(chosen(&[("ALL_PROXY", "socks5h://127.0.0.1:1080")]), None, "SOCKS is passed over");
        assert_eq!(chosen(&[("ALL_PROXY", "http://proxy.corp:3128")]).map(|p| p.1), Some(3128));
        assert_eq!(chosen(&[("http_proxy", "http://proxy.corp:3128")]), None, "not for HTTPS (curl, requests)");
        // Credentials written encoded (RFC 3986) are sent as meant, not
        // encoded twice.
        let user =
            super::env_proxy(&env(&[("HTTPS_PROXY", "http://me%40corp:p%3Ass@proxy.corp:8080")])).expect("a proxy");
        assert_eq!((user.username(), user.password()), (Some("me@corp"), Some("p:ss")));
        assert!(user.uri().to_string().contains("me%40corp:p%3Ass@"), "{}", user.uri());
        let p =
            super::env_proxy(&env(&[("https_proxy", "http://proxy.corp:3128"), ("no_proxy", "localhost, .internal")]))
                .expect("a proxy");
        assert!(p.is_no_proxy(&"https://localhost/x".parse().unwrap()));
        assert!(p.is_no_proxy(&"https://pkg.internal/x".parse().unwrap()));
        let p = super::env_proxy(&env(&[("https_proxy", "http://proxy.corp:3128"), ("NO_PROXY", "corp.com")]))
            .expect("a proxy");
        assert!(p.is_no_proxy(&"https://corp.com/x".parse().unwrap()));
        assert!(p.is_no_proxy(&"https://files.corp.com/x".parse().unwrap()), "curl: and the names under it");
        assert!(!p.is_no_proxy(&"https://notcorp.com/x".parse().unwrap()));
        assert!(!p.is_no_proxy(&"https://registry.npmjs.org/x".parse().unwrap()));
        assert_eq!(chosen(&[]), None);
    }
}

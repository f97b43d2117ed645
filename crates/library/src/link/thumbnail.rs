//! Link thumbnails, fetched once when a link is queued and kept beside the
//! queue database (`<data>/thumbnails/<job id>`), so the window shows them
//! from the app itself by job id and its content security policy allows no
//! web images. Only JPEG, PNG and WebP files of at most [`MAX_BYTES`] are
//! kept (checked by their leading bytes, not by what the server says).

use std::io::Read;
use std::path::{Path, PathBuf};
use std::time::Duration;

use ureq::unversioned::resolver::{DefaultResolver, ResolvedSocketAddrs, Resolver};
use ureq::unversioned::transport::NextTimeout;

use super::Reach;
use crate::queue::JobId;

/// Largest thumbnail kept: YouTube's `maxresdefault.jpg` is 50-200 KB, its
/// WebP thumbnails less.
pub const MAX_BYTES: u64 = 2 << 20;
/// The whole fetch (connect, answer, body) takes at most this long; adding a
/// link waits for it.
pub const TIMEOUT: Duration = Duration::from_secs(8);
/// The folder beside the queue database.
pub const DIR: &str = "thumbnails";

/// Where job `id`'s thumbnail is kept, for a queue database at `queue_db`.
pub fn path_for(queue_db: &Path, id: JobId) -> PathBuf {
    queue_db.parent().unwrap_or(Path::new(".")).join(DIR).join(id.to_string())
}

/// The image type of `bytes` from their first bytes: `image/jpeg`,
/// `image/png` or `image/webp`; `None` for anything else.
pub fn image_type(bytes: &[u8]) -> Option<&'static str> {
    match bytes {
        [0xFF, 0xD8, 0xFF, ..] => Some("image/jpeg"),
        [0x89, b'P', b'N', b'G', 0x0D, 0x0A, 0x1A, 0x0A, ..] => Some("image/png"),
        [b'R', b'I', b'F', b'F', _, _, _, _, b'W', b'E', b'B', b'P', ..] => Some("image/webp"),
        _ => None,
    }
}

/// Job `id`'s kept thumbnail and its type, if there is one.
pub fn read(queue_db: &Path, id: JobId) -> Option<(Vec<u8>, &'static str)> {
    let bytes = std::fs::read(path_for(queue_db, id)).ok()?;
    let kind = image_type(&bytes)?;
    Some((bytes, kind))
}

/// Fetch the image at `url` (http or https) and keep it as job `id`'s
/// thumbnail (written under a temporary name and renamed, so it is whole or
/// absent). With [`Reach::PublicOnly`] every connection (the first and each
/// redirect's) goes only to public addresses: the host's name is resolved
/// once per connection and non-public answers are dropped before
/// connecting, so a name that resolves elsewhere the second time (DNS
/// rebinding) or a redirect to a private host reaches nothing. Through a
/// proxy that resolves names itself (`HTTPS_PROXY`, ...), the target's
/// addresses are checked here before the request instead (the proxy's own
/// answer is not seen), and no redirect is followed.
///
/// # Errors
/// A message: not http(s), a host this reach does not allow, the request
/// failed or timed out, an HTTP error, more than [`MAX_BYTES`], not a
/// JPEG/PNG/WebP image, or the file could not be written.
pub fn fetch(url: &str, queue_db: &Path, id: JobId, reach: Reach) -> Result<PathBuf, String> {
    if !(url.starts_with("https://") || url.starts_with("http://")) {
        return Err("not a web address".into());
    }
    let tls = ureq::tls::TlsConfig::builder().root_certs(ureq::tls::RootCerts::PlatformVerifier).build();
    let builder = || {
        ureq::Agent::config_builder().tls_config(tls.clone()).timeout_global(Some(TIMEOUT)).http_status_as_error(false)
    };
    let agent = match reach {
        Reach::Any => ureq::Agent::new_with_config(builder().build()),
        Reach::PublicOnly => {
            let uri: ureq::http::Uri = url.parse().map_err(|e| format!("not a web address: {e}"))?;
            let config = builder().build();
            let config = if config.proxy().is_some_and(|p| !p.is_no_proxy(&uri) && !p.resolve_target()) {
                // The proxy resolves the names, so a redirect's target
                // could not be checked: none is followed.
                check_through_proxy(&uri)?;
                builder().max_redirects(0).build()
            } else {
                config
            };
            ureq::Agent::with_parts(config, ureq::unversioned::transport::DefaultConnector::new(), PublicResolver)
        }
    };
    let mut resp = agent.get(url).call().map_err(|e| match e {
        ureq::Error::Io(io) if io.kind() == std::io::ErrorKind::PermissionDenied => io.to_string(),
        e => e.to_string(),
    })?;
    let status = resp.status().as_u16();
    if status != 200 {
        return Err(format!("the server answered HTTP {status}"));
    }
    let mut bytes = Vec::new();
    resp.body_mut()
        .with_config()
        .limit(MAX_BYTES + 1)
        .reader()
        .take(MAX_BYTES + 1)
        .read_to_end(&mut bytes)
        .map_err(|e| e.to_string())?;
    if bytes.len() as u64 > MAX_BYTES {
        return Err(format!("larger than {} KB", MAX_BYTES / 1024));
    }
    if image_type(&bytes).is_none() {
        return Err("not a JPEG, PNG or WebP image".into());
    }
    let dest = path_for(queue_db, id);
    let write = || -> std::io::Result<()> {
        let dir = dest.parent().unwrap_or(Path::new("."));
        std::fs::create_dir_all(dir)?;
        let tmp = stemroom_engine::files::part_path(&dest);
        let written = std::fs::write(&tmp, &bytes).and_then(|()| std::fs::rename(&tmp, &dest));
        if written.is_err() {
            let _ = std::fs::remove_file(&tmp);
        }
        written
    };
    write().map_err(|e| format!("{}: {e}", dest.display()))?;
    Ok(dest)
}

/// Resolves as ureq does and keeps only public addresses, except for the
/// configured proxy's own host (which may well be on the local network).
#[derive(Debug)]
struct PublicResolver;

impl Resolver for PublicResolver {
    fn resolve(
        &self,
        uri: &ureq::http::Uri,
        config: &ureq::config::Config,
        timeout: NextTimeout,
    ) -> Result<ResolvedSocketAddrs, ureq::Error> {
        let all = DefaultResolver::default().resolve(uri, config, timeout)?;
        // The proxy's own address (its URI may leave out the port).
        let is_proxy = config.proxy().is_some_and(|p| {
            uri.host().is_some_and(|h| h.eq_ignore_ascii_case(p.host()))
                && uri.port_u16().or(default_port(uri)).unwrap_or(p.port()) == p.port()
        });
        if is_proxy {
            return Ok(all);
        }
        let mut kept = self.empty();
        for a in all.iter().filter(|a| Reach::PublicOnly.allows(a.ip())) {
            kept.push(*a);
        }
        if kept.is_empty() {
            return Err(ureq::Error::Io(not_public(uri.host().unwrap_or(""), all.first().map(|a| a.ip()))));
        }
        Ok(kept)
    }
}

fn default_port(uri: &ureq::http::Uri) -> Option<u16> {
    match uri.scheme_str() {
        Some("https") => Some(443),
        Some("http") => Some(80),
        _ => None,
    }
}

fn not_public(host: &str, ip: Option<std::net::IpAddr>) -> std::io::Error {
    let at = ip.map(|ip| format!(" ({ip})")).unwrap_or_default();
    std::io::Error::new(
        std::io::ErrorKind::PermissionDenied,
        format!("{host} is this machine or a private network{at}: not fetched for a client"),
    )
}

/// Through a proxy the target is resolved by the proxy: check its addresses
/// here first (all must be public).
fn check_through_proxy(uri: &ureq::http::Uri) -> Result<(), String> {
    let host = uri.host().unwrap_or("").trim_start_matches('[').trim_end_matches(']');
    let port = uri.port_u16().or(default_port(uri)).unwrap_or(80);
    let addrs = super::addresses_of(host, port).map_err(|e| format!("{host}: {e}"))?;
    match addrs.iter().find(|ip| !Reach::PublicOnly.allows(**ip)) {
        Some(ip) => Err(not_public(host, Some(*ip)).to_string()),
        None if addrs.is_empty() => Err(format!("{host}: no address")),
        None => Ok(()),
    }
}

/// Remove job `id`'s thumbnail (when the job is removed).
pub fn remove(queue_db: &Path, id: JobId) {
    let _ = std::fs::remove_file(path_for(queue_db, id));
}

#[cfg(test)]
mod tests {
    use std::io::{BufRead, BufReader, Write};
    use std::net::TcpListener;

    use super::*;

    /// Serve `body` with `status` to one request on a loopback port.
    fn serve_once(status: &'static str, body: Vec<u8>) -> String {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        std::thread::spawn(move || {
            if let Ok((mut s, _)) = listener.accept() {
                let mut r = BufReader::new(s.try_clone().unwrap());
                let mut line = String::new();
                while r.read_line(&mut line).is_ok_and(|n| n > 2) {
                    line.clear();
                }
                let head = format!("HTTP/1.1 {status}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n", body.len());
                let _ = s.write_all(head.as_bytes());
                let _ = s.write_all(&body);
            }
        });
        format!("http://127.0.0.1:{port}/vi/x/maxresdefault.jpg")
    }

    #[test]
    fn images_are_kept_by_job_id_and_anything_else_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let db = dir.path().join("stemroom.sqlite");
        let jpeg = [&[0xFF, 0xD8, 0xFF, 0xE0][..], &[7u8; 5000]].concat();
        let kept = fetch(&serve_once("200 OK", jpeg.clone()), &db, 7, Reach::Any).unwrap();
        assert_eq!(kept, dir.path().join("thumbnails/7"));
        assert_eq!(read(&db, 7), Some((jpeg, "image/jpeg")));
        let webp = [&b"RIFF\x10\x00\x00\x00WEBPVP8 "[..], &[1u8; 100]].concat();
        fetch(&serve_once("200 OK", webp), &db, 8, Reach::Any).unwrap();
        assert_eq!(read(&db, 8).map(|r| r.1), Some("image/webp"));

        let html = b"<html><script>alert(1)</script></html>".to_vec();
        assert!(fetch(&serve_once("200 OK", html), &db, 9, Reach::Any).unwrap_err().contains("not a JPEG"));
        let huge = [&[0xFF, 0xD8, 0xFF][..], &vec![0u8; MAX_BYTES as usize]].concat();
        assert!(fetch(&serve_once("200 OK", huge), &db, 9, Reach::Any).unwrap_err().contains("larger than"));
        assert!(fetch(&serve_once("404 Not Found", vec![]), &db, 9, Reach::Any).unwrap_err().contains("404"));
        assert!(fetch("file:///etc/passwd", &db, 9, Reach::Any).is_err());
        assert!(fetch("javascript:alert(1)", &db, 9, Reach::Any).is_err());
        assert_eq!(read(&db, 9), None, "nothing kept for refused images");
        let left: Vec<_> = std::fs::read_dir(dir.path().join("thumbnails")).unwrap().flatten().collect();
        assert_eq!(left.len(), 2, "no temporary files left");
        remove(&db, 7);
        assert_eq!(read(&db, 7), None);
    }

    #[test]
    fn a_fetch_for_a_client_reaches_no_private_address() {
        let dir = tempfile::tempdir().unwrap();
        let db = dir.path().join("stemroom.sqlite");
        let jpeg = [&[0xFF, 0xD8, 0xFF, 0xE0][..], &[7u8; 100]].concat();
        let url = serve_once("200 OK", jpeg.clone());
        // By address, and by a name that resolves to loopback (checked at
        // the connection, where a redirect's hop is checked too).
        let e = fetch(&url, &db, 1, Reach::PublicOnly).unwrap_err();
        assert!(e.contains("127.0.0.1 is this machine or a private network"), "{e}");
        let by_name = url.replace("127.0.0.1", "localhost");
        let e = fetch(&by_name, &db, 1, Reach::PublicOnly).unwrap_err();
        assert!(e.contains("localhost is this machine or a private network"), "{e}");
        assert_eq!(read(&db, 1), None);
        // The same image for the person at the keyboard.
        fetch(&url, &db, 1, Reach::Any).unwrap();
        assert_eq!(read(&db, 1), Some((jpeg, "image/jpeg")));
    }
}

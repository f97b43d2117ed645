//! A loopback web site for link tests: the real yt-dlp fetches from it
//! (direct audio, a page with an <audio> element, a YouTube-like watch page
//! whose audio is Opus in WebM, HLS with and without a lost segment, 404,
//! no media, a stalling server, a slow one, a hostile title).

use std::io::{BufRead, BufReader, Write};
use std::net::{TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// A loopback server with fixed routes; every connection is bounded in
/// time, and the server stops when dropped.
pub struct Server {
    port: u16,
    stop: Arc<AtomicBool>,
}

/// A page title made to break file names and terminals: path parts,
/// characters Windows refuses, an escape sequence, and 430 characters.
pub fn evil_title() -> String {
    format!("{}{}\u{1b}[31m{}", "../".repeat(20), ":*?<>|\\".repeat(10), "x".repeat(300))
}

/// An HLS rendition of the song (AAC in MPEG-TS segments of 2 s, as
/// SoundCloud, Vimeo and live sites serve audio): its playlist and
/// segments by name.
type Hls = std::collections::HashMap<String, Vec<u8>>;

fn respond(mut s: TcpStream, song: &[u8], webm: &[u8], hls: &Hls, stop: &AtomicBool) {
    let _ = s.set_read_timeout(Some(Duration::from_secs(5)));
    let mut line = String::new();
    let mut r = BufReader::new(s.try_clone().expect("clone"));
    if r.read_line(&mut line).is_err() {
        return;
    }
    // Skip the headers.
    loop {
        let mut h = String::new();
        if r.read_line(&mut h).map_or(true, |n| n == 0) || h == "\r\n" {
            break;
        }
    }
    let path = line.split_whitespace().nth(1).unwrap_or("/").to_string();
    let head_only = line.starts_with("HEAD");
    let send = |s: &mut TcpStream, status: &str, ctype: &str, body: &[u8]| {
        let _ = write!(
            s,
            "HTTP/1.1 {status}\r\nContent-Type: {ctype}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
            body.len()
        );
        if !head_only {
            let _ = s.write_all(body);
        }
    };
    let page = |title: &str, media: bool| {
        let audio = if media { r#"<audio controls src="/song.wav"></audio>"# } else { "<p>No media here.</p>" };
        let title = title.replace('&', "&amp;").replace('<', "&lt;").replace('>', "&gt;");
        format!("<!doctype html><html><head><title>{title}</title></head><body>{audio}</body></html>").into_bytes()
    };
    // A YouTube-like watch page: its best audio is Opus in WebM (format
    // 251), offered as an <audio> source with its MIME type and codec.
    let watch = br#"<!doctype html><html><head><title>Falcon 69 (official audio)</title></head><body><audio controls><source src="/falcon.webm" type="audio/webm; codecs=opus"></audio></body></html>"#;
    // `/hls/index.m3u8` whole; `/hls-gap/index.m3u8` lists the same
    // segments, and its second one answers 404 every time (a CDN that lost
    // it): yt-dlp skips such a fragment by default and exits 0.
    if let Some((dir, name)) = path.strip_prefix("/").and_then(|p| p.split_once('/')) {
        if dir == "hls" || dir == "hls-gap" {
            match hls.get(name) {
                Some(_) if dir == "hls-gap" && name == "seg1.ts" => {
                    send(&mut s, "404 Not Found", "text/plain", b"not found")
                }
                Some(body) if name.ends_with(".m3u8") => send(&mut s, "200 OK", "application/vnd.apple.mpegurl", body),
                Some(body) => send(&mut s, "200 OK", "video/mp2t", body),
                None => send(&mut s, "404 Not Found", "text/plain", b"not found"),
            }
            return;
        }
    }
    match path.as_str() {
        "/song.wav" => send(&mut s, "200 OK", "audio/wav", song),
        "/falcon.webm" => send(&mut s, "200 OK", "audio/webm", webm),
        "/watch.html" => send(&mut s, "200 OK", "text/html", watch),
        "/page.html" => send(&mut s, "200 OK", "text/html", &page("Falcon 69 (live page)", true)),
        "/nomedia.html" => send(&mut s, "200 OK", "text/html", &page("Nothing to see", false)),
        "/evil.html" => send(&mut s, "200 OK", "text/html", &page(&evil_title(), true)),
        "/stall.wav" | "/slow.wav" => {
            let _ = write!(
                s,
                "HTTP/1.1 200 OK\r\nContent-Type: audio/wav\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
                song.len()
            );
            if head_only {
                return;
            }
            let stall = path == "/stall.wav";
            let t0 = Instant::now();
            for chunk in song.chunks(8192) {
                if stop.load(Ordering::Relaxed) || t0.elapsed() > Duration::from_secs(60) || s.write_all(chunk).is_err()
                {
                    return;
                }
                std::thread::sleep(Duration::from_millis(if stall { 100_000 } else { 250 }));
            }
        }
        // An internet radio station: audio with no size, never ending.
        "/radio.mp3" => {
            let _ = write!(s, "HTTP/1.1 200 OK\r\nContent-Type: audio/mpeg\r\nConnection: close\r\n\r\n");
            let t0 = Instant::now();
            for chunk in song.chunks(8192).cycle() {
                if head_only || stop.load(Ordering::Relaxed) || t0.elapsed() > Duration::from_secs(60) {
                    return;
                }
                if s.write_all(chunk).is_err() {
                    return;
                }
                std::thread::sleep(Duration::from_millis(20));
            }
        }
        // A server that sends a song a few bytes at a time.
        "/trickle.wav" => {
            let _ = write!(
                s,
                "HTTP/1.1 200 OK\r\nContent-Type: audio/wav\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
                song.len()
            );
            let t0 = Instant::now();
            for chunk in song.chunks(16) {
                if head_only || stop.load(Ordering::Relaxed) || t0.elapsed() > Duration::from_secs(60) {
                    return;
                }
                if s.write_all(chunk).is_err() {
                    return;
                }
                std::thread::sleep(Duration::from_millis(20));
            }
        }
        _ => send(&mut s, "404 Not Found", "text/plain", b"not found"),
    }
}

impl Server {
    pub fn start() -> Server {
        let song = std::fs::read(crate::falcon_mixture()).expect("read mixture.wav");
        // Opus in WebM at YouTube's format-251 bit rate, from the same music.
        let tmp = tempfile::tempdir().expect("tempdir");
        let webm_path = tmp.path().join("falcon.webm");
        let mix = crate::falcon_mixture();
        crate::ffmpeg(&[
            "-i",
            mix.to_str().expect("utf-8"),
            "-c:a",
            "libopus",
            "-b:a",
            "160k",
            webm_path.to_str().expect("utf-8"),
        ]);
        let webm = std::fs::read(&webm_path).expect("read webm");
        let hls_dir = tmp.path().join("hls");
        std::fs::create_dir(&hls_dir).expect("mkdir");
        crate::ffmpeg(&[
            "-i",
            mix.to_str().expect("utf-8"),
            "-c:a",
            "aac",
            "-b:a",
            "160k",
            "-f",
            "hls",
            "-hls_time",
            "2",
            "-hls_playlist_type",
            "vod",
            "-hls_segment_filename",
            hls_dir.join("seg%d.ts").to_str().expect("utf-8"),
            hls_dir.join("index.m3u8").to_str().expect("utf-8"),
        ]);
        let hls: Hls = std::fs::read_dir(&hls_dir)
            .expect("ls")
            .flatten()
            .map(|e| (e.file_name().to_string_lossy().into_owned(), std::fs::read(e.path()).expect("read")))
            .collect();
        assert!(hls.contains_key("seg1.ts") && hls.contains_key("seg2.ts"), "{:?}", hls.keys());
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
        let port = listener.local_addr().expect("addr").port();
        listener.set_nonblocking(true).expect("nonblocking");
        let stop = Arc::new(AtomicBool::new(false));
        let st = stop.clone();
        std::thread::spawn(move || {
            let (song, webm, hls) = (Arc::new(song), Arc::new(webm), Arc::new(hls));
            let t0 = Instant::now();
            let mut served = 0;
            while !st.load(Ordering::Relaxed) && t0.elapsed() < Duration::from_secs(600) && served < 1000 {
                match listener.accept() {
                    Ok((s, _)) => {
                        served += 1;
                        let _ = s.set_nonblocking(false);
                        let (song, webm, hls, st) = (song.clone(), webm.clone(), hls.clone(), st.clone());
                        std::thread::spawn(move || respond(s, &song, &webm, &hls, &st));
                    }
                    Err(_) => std::thread::sleep(Duration::from_millis(10)),
                }
            }
        });
        Server { port, stop }
    }

    pub fn url(&self, path: &str) -> String {
        format!("http://127.0.0.1:{}{path}", self.port)
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
    }
}

//! `stemroom serve`: the real server binary on loopback, driven by the real
//! `curl` (what the README tells people to run), with the real model on the
//! Falcon 69 music.
//!
//! - api: every endpoint end to end (upload → pending/processing with growing
//!   segments → completed → zip → SDR equal to the CLI's; synchronous
//!   `/separate` with two stems and MP3; a link job through yt-dlp and a
//!   loopback site; server-sent events in order; list, delete, OpenAPI).
//! - refusals: tokens, not audio, empty, truncated, too large, hostile file
//!   names, unknown jobs and options, rate limit, a second server on the
//!   same folder; nothing partial left behind.
//! - load and crashes: 50 uploads at once, 200 status polls at once during
//!   a separation, kill -9 mid-job and restart, SIGTERM puts the running
//!   job back in the queue.
//! - readme: the README's curl lines, run as written.
//! - broker (broker.rs): `--broker` with `stemroom worker`s and a real redis-server.

use std::io::{BufRead, BufReader, Read};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;
use stemroom_testkit::{read_wav, sdr};

use super::{testdata, utf8, STEMS};

mod broker;

/// A `stemroom serve` process on a free loopback port.
struct Server {
    child: Child,
    base: String,
    token: String,
    data: PathBuf,
}

impl Server {
    fn start(data: &Path, extra: &[&str]) -> Server {
        Server::start_with(Command::new(env!("CARGO_BIN_EXE_stemroom")), data, extra)
    }

    /// [`Server::start`] through `command` (the binary, or a wrapper such
    /// as `nohup` given the binary as its first argument).
    fn start_with(mut command: Command, data: &Path, extra: &[&str]) -> Server {
        let mut child = super::hangup_default(&mut command)
            .args(["serve", "--listen", "127.0.0.1:0", "--data-dir", utf8(data)])
            .args(extra)
            .env("STEMROOM_LOG", "info,ort=warn")
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("start stemroom serve");
        let mut lines = BufReader::new(child.stdout.take().expect("stdout"));
        let mut base = None;
        let deadline = Instant::now() + Duration::from_secs(30);
        while base.is_none() && Instant::now() < deadline {
            let mut line = String::new();
            if lines.read_line(&mut line).expect("read stdout") == 0 {
                break;
            }
            eprint!("server: {line}");
            base = line.trim().strip_prefix("Stemroom server listening on ").map(str::to_string);
        }
        // Keep reading so the server never blocks on a full pipe.
        std::thread::spawn(move || {
            let mut rest = String::new();
            let _ = lines.read_to_string(&mut rest);
        });
        let base = base.expect("the server says where it listens");
        let token = std::fs::read_to_string(data.join("server-token")).unwrap_or_default().trim().to_string();
        Server { child, base, token, data: data.to_path_buf() }
    }

    /// `curl` with the token; the last argument is the endpoint's path
    /// (`/status/1`). Returns the status and the body.
    fn curl(&self, args: &[&str]) -> (u16, String) {
        self.curl_as(&self.token, args)
    }

    /// [`Server::curl`] with another token.
    fn curl_as(&self, token: &str, args: &[&str]) -> (u16, String) {
        let auth = format!("Authorization: Bearer {token}");
        let mut all: Vec<String> = vec!["-H".into(), auth];
        all.extend(args.iter().map(|a| a.to_string()));
        self.curl_raw(&all)
    }

    fn curl_raw(&self, args: &[String]) -> (u16, String) {
        let body = tempfile::NamedTempFile::new().expect("temp");
        // The caller's own `-o` wins (curl uses the first one given).
        let own_output = args.iter().any(|a| a == "-o");
        let out = Command::new("curl")
            .args(["-sS", "--max-time", "600", "-w", "%{http_code}"])
            .args(if own_output { vec![] } else { vec!["-o", utf8(body.path())] })
            .args(args.iter().enumerate().map(|(i, a)| {
                // The last argument is the endpoint.
                if i + 1 == args.len() && a.starts_with('/') {
                    format!("{}{a}", self.base)
                } else {
                    a.clone()
                }
            }))
            .output()
            .expect("curl");
        let code = String::from_utf8_lossy(&out.stdout).trim().parse().unwrap_or(0);
        (code, std::fs::read_to_string(body.path()).unwrap_or_default())
    }

    fn json(&self, args: &[&str]) -> Value {
        let (code, body) = self.curl(args);
        assert_eq!(code, 200, "{args:?}: {body}");
        serde_json::from_str(&body).expect("JSON")
    }

    fn upload(&self, file: &Path, fields: &[&str]) -> String {
        let f = format!("file=@{}", utf8(file));
        let mut args = vec!["-F", f.as_str()];
        for x in fields {
            args.extend(["-F", x]);
        }
        args.push("/upload");
        let v = self.json(&args);
        assert_eq!(v["status"], "pending", "{v}");
        v["job_id"].as_str().expect("job_id").to_string()
    }

    /// Poll `/status/{id}` until `done` says so; returns every status seen.
    fn wait(&self, id: &str, within: Duration, done: impl Fn(&Value) -> bool) -> Vec<Value> {
        let deadline = Instant::now() + within;
        let mut seen = Vec::new();
        loop {
            let v = self.json(&[&format!("/status/{id}")]);
            let stop = done(&v);
            seen.push(v);
            if stop {
                return seen;
            }
            assert!(Instant::now() < deadline, "job {id} still {}", seen.last().expect("seen"));
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    fn wait_completed(&self, id: &str) -> Vec<Value> {
        let seen = self.wait(id, Duration::from_secs(300), |v| v["status"] != "pending" && v["status"] != "processing");
        let last = seen.last().expect("seen");
        assert_eq!(last["status"], "completed", "{last}");
        seen
    }

    /// `n` requests at once (one curl, `n` parallel transfers) with `extra`
    /// options each; returns how many got 200 and the seconds taken.
    fn parallel(&self, n: usize, extra: &[&str], endpoint: &str) -> (usize, f64) {
        let auth = format!("Authorization: Bearer {}", self.token);
        let mut args: Vec<String> = vec!["-Z".into(), "--parallel-max".into(), n.to_string()];
        for i in 0..n {
            if i > 0 {
                args.push("--next".into());
            }
            args.extend(["-sS", "-H", &auth, "-w", "%{http_code}\\n", "-o", "/dev/null"].map(String::from));
            args.extend(extra.iter().map(|a| a.to_string()));
            args.push(format!("{}{endpoint}", self.base));
        }
        let t0 = Instant::now();
        let out = Command::new("curl").args(&args).output().expect("curl");
        let codes = String::from_utf8_lossy(&out.stdout);
        eprintln!("status codes: {}", codes.lines().collect::<Vec<_>>().join(" "));
        (codes.lines().filter(|c| *c == "200").count(), t0.elapsed().as_secs_f64())
    }

    fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Send `signal` and wait for the exit status.
    fn stop(mut self, signal: &str) -> std::process::ExitStatus {
        let _ = Command::new("kill").args([&format!("-{signal}"), &self.child.id().to_string()]).status();
        let deadline = Instant::now() + Duration::from_secs(90);
        loop {
            if let Some(st) = self.child.try_wait().expect("wait") {
                return st;
            }
            assert!(Instant::now() < deadline, "the server did not stop on SIG{signal}");
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn files_in(dir: &Path) -> Vec<String> {
    let mut v: Vec<String> = std::fs::read_dir(dir)
        .map(|d| d.flatten().map(|e| e.file_name().to_string_lossy().into_owned()).collect())
        .unwrap_or_default();
    v.sort();
    v
}

fn unzip(zip: &Path, into: &Path) -> Vec<String> {
    let t = Command::new("unzip").args(["-t", utf8(zip)]).output().expect("unzip");
    assert!(t.status.success(), "unzip -t: {}", String::from_utf8_lossy(&t.stdout));
    let x = Command::new("unzip").args(["-q", "-o", utf8(zip), "-d", utf8(into)]).status().expect("unzip");
    assert!(x.success());
    files_in(into)
}

/// Peak resident memory of a process in GB (VmHWM).
fn peak_rss_gb(pid: u32) -> f64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<f64>().ok())
        .map(|kb| kb / 1e6)
        .unwrap_or(0.0)
}

// ---- api ----

#[test]
fn every_endpoint_end_to_end_with_the_real_model() {
    let dir = tempfile::tempdir().expect("tempdir");
    // (The links below are on a loopback site.)
    let server = Server::start(&dir.path().join("data"), &["--allow-private-links"]);
    let mix = testdata("mixture.wav");

    // Liveness and auth.
    let (code, body) = server.curl_raw(&["/health".into()]);
    assert_eq!(code, 200, "{body}");
    assert_eq!(server.curl_raw(&["/status".into()]).0, 401);
    assert_eq!(server.curl_raw(&["-H".into(), "Authorization: Bearer nope".into(), "/status".into()]).0, 401);
    // FastAPI's API-key header takes the token too; the API's description
    // is open, as FastAPI serves it.
    let key = |t: &str| server.curl_raw(&["-H".into(), format!("X-API-Key: {t}"), "/status".into()]).0;
    assert_eq!((key(&server.token), key("nope")), (200, 401));
    // A proxy's own login in front (`Authorization: Basic`) leaves the key
    // header to name the token: it was refused, the Basic taken for it.
    let basic = |t: &str| {
        let mut args = vec!["-u".to_string(), "user:pw".into()];
        if !t.is_empty() {
            args.extend(["-H".into(), format!("X-API-Key: {t}")]);
        }
        args.push("/status".into());
        server.curl_raw(&args).0
    };
    assert_eq!((basic(&server.token), basic("nope"), basic("")), (200, 401, 401));
    assert_eq!(server.curl_raw(&["/openapi.json".into()]).0, 200, "no token needed");
    // The page for people (FastAPI's `/docs`): Swagger UI, pinned by hash,
    // reading the document beside it.
    let (code, page) = server.curl_raw(&["/docs".into()]);
    assert_eq!(code, 200, "no token needed: {page}");
    for part in ["swagger-ui-dist@5.36.0/swagger-ui-bundle.js", "integrity=\"sha384-", "url: spec"] {
        assert!(page.contains(part), "/docs lacks {part}");
    }
    assert_eq!(server.json(&["/"])["status"], "ok");
    let st = server.json(&["/status"]);
    assert_eq!(st["models_ready"], true, "{st}");
    assert_eq!(st["active_jobs"], 0);

    // Upload; follow it by polling and by server-sent events at once.
    let id = server.upload(&mix, &["shifts=0"]);
    let sse = {
        let (base, token, id) = (server.base.clone(), server.token.clone(), id.clone());
        std::thread::spawn(move || {
            let out = Command::new("curl")
                .args(["-sSN", "--max-time", "300", "-H", &format!("Authorization: Bearer {token}")])
                .arg(format!("{base}/events/{id}"))
                .output()
                .expect("curl events");
            String::from_utf8_lossy(&out.stdout).into_owned()
        })
    };
    let seen = server.wait_completed(&id);
    let statuses: Vec<&str> = seen.iter().filter_map(|v| v["status"].as_str()).collect();
    assert!(statuses.contains(&"processing"), "{statuses:?}");
    let segments: Vec<u64> = seen
        .iter()
        .filter(|v| v["stage"] == "separating")
        .filter_map(|v| v["details"]["completed_segments"].as_u64())
        .collect();
    assert!(segments.windows(2).all(|w| w[0] <= w[1]), "segments never go back: {segments:?}");
    let last = seen.last().expect("last");
    assert_eq!(last["progress"], 100.0);
    let total = last["details"]["total_segments"].as_u64().expect("total");
    assert!(total >= 2 && last["details"]["completed_segments"] == total, "{last}");
    for stem in STEMS {
        assert_eq!(last["stems"][stem], format!("/stems/{id}/{stem}"), "{last}");
    }

    // The events: in order, growing segments, ending with completed.
    let events = sse.join().expect("sse thread");
    let data: Vec<Value> = events
        .lines()
        .filter_map(|l| l.strip_prefix("data: "))
        .map(|d| serde_json::from_str(d).expect("event JSON"))
        .collect();
    let ids: Vec<&str> = events.lines().filter_map(|l| l.strip_prefix("id: ")).collect();
    assert!(ids.last().is_some_and(|i| i.ends_with("-end")), "the last event says it is: {ids:?}");
    let ids: Vec<u64> = ids.iter().map(|i| i.trim_end_matches("-end").parse().expect("id")).collect();
    assert!(ids.windows(2).all(|w| w[1] == w[0] + 1), "event ids in order: {ids:?}");
    // A browser's EventSource reconnecting after the end is told to stop.
    let (code, body) =
        server.curl(&["-H", &format!("Last-Event-ID: {}-end", ids.last().expect("id")), &format!("/events/{id}")]);
    assert_eq!(code, 204, "{body}");
    // As a polyfill sends it (`event-source-polyfill`: `?lastEventId=`), with
    // the token in the address as an `EventSource` must.
    let (code, body) = server.curl_raw(&[format!(
        "/events/{id}?access_token={}&lastEventId={}-end",
        server.token,
        ids.last().expect("id")
    )]);
    assert_eq!(code, 204, "{body}");
    // A reconnect from an id before the end gets the job as it is now,
    // its id going on from the client's (a client that drops ids it has
    // seen would drop events numbered from 1 again).
    let (code, body) = server.curl(&["-H", "Last-Event-ID: 41", &format!("/events/{id}")]);
    assert_eq!(code, 200, "{body}");
    assert!(body.lines().any(|l| l == "id: 42-end"), "{body}");
    assert!(data.len() >= 3, "{events}");
    assert_eq!(data.last().expect("last")["status"], "completed");
    let segs: Vec<u64> = data
        .iter()
        .filter(|v| v["stage"] == "separating")
        .filter_map(|v| v["details"]["completed_segments"].as_u64())
        .collect();
    assert!(!segs.is_empty() && segs.windows(2).all(|w| w[0] <= w[1]), "{segs:?}");

    // The zip: four stems whose SDR is the CLI's on the same file.
    let zip = dir.path().join("a.zip");
    let (code, _) = server.curl(&["-o", utf8(&zip), &format!("/download/{id}")]);
    assert_eq!(code, 200);
    let out = dir.path().join("a");
    assert_eq!(unzip(&zip, &out), ["bass.wav", "drums.wav", "other.wav", "vocals.wav"]);
    let cli_out = dir.path().join("cli");
    let o = Command::new(env!("CARGO_BIN_EXE_stemroom"))
        .args(["separate", "--shifts", "0", "-o", utf8(&cli_out), utf8(&mix)])
        .output()
        .expect("cli");
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    for stem in STEMS {
        let (truth, _) = read_wav(&testdata(&format!("{stem}.wav")));
        let (served, _) = read_wav(&out.join(format!("{stem}.wav")));
        let (cli, _) = read_wav(&cli_out.join(format!("htdemucs/mixture/{stem}.wav")));
        let (a, b) = (sdr(&truth, &served, 1), sdr(&truth, &cli, 1));
        eprintln!("{stem}: server {a:.3} dB, CLI {b:.3} dB");
        assert!((a - b).abs() < 0.01, "{stem}: server {a} dB vs CLI {b} dB");
    }
    // /result is /download; one stem alone is the same bytes.
    let (code, _) = server.curl(&["-o", utf8(&dir.path().join("r.zip")), &format!("/result/{id}")]);
    assert_eq!(code, 200);
    let one = dir.path().join("vocals.wav");
    assert_eq!(server.curl(&["-o", utf8(&one), &format!("/stems/{id}/vocals")]).0, 200);
    assert_eq!(std::fs::read(&one).expect("stem"), std::fs::read(out.join("vocals.wav")).expect("zip stem"));
    assert_eq!(server.curl(&[&format!("/stems/{id}/guitar")]).0, 404);
    assert_eq!(server.curl(&[&format!("/stems/{id}/..%2F..%2Fstemroom.sqlite")]).0, 404);
    // A download broken off is resumed (`curl -C -`, `wget -c`), and a part
    // is served as asked (a media element seeking).
    let whole = std::fs::read(&one).expect("stem");
    let resumed = dir.path().join("resumed.wav");
    std::fs::write(&resumed, &whole[..1000]).expect("write");
    assert_eq!(server.curl(&["-C", "-", "-o", utf8(&resumed), &format!("/stems/{id}/vocals")]).0, 206);
    assert!(std::fs::read(&resumed).expect("resumed") == whole, "the resumed file is the stem");
    let part = dir.path().join("part.bin");
    assert_eq!(server.curl(&["-r", "100-199", "-o", utf8(&part), &format!("/stems/{id}/vocals")]).0, 206);
    assert_eq!(std::fs::read(&part).expect("part"), whole[100..200]);
    // Several ranges at once: the whole stem (HTTP lets a server ignore
    // `Range`), not a 416.
    let all = dir.path().join("all.bin");
    assert_eq!(server.curl(&["-r", "0-1,100-200", "-o", utf8(&all), &format!("/stems/{id}/vocals")]).0, 200);
    assert!(std::fs::read(&all).expect("all") == whole);
    let (code, body) = server.curl(&["-r", &format!("{}-", whole.len() + 10), &format!("/stems/{id}/vocals")]);
    assert_eq!(code, 416, "{body}");
    let (code, head) = server.curl(&["-I", &format!("/stems/{id}/vocals")]);
    assert_eq!(code, 200, "{head}");
    let last_modified = head
        .lines()
        .find_map(|l| l.split_once(':').filter(|(k, _)| k.eq_ignore_ascii_case("last-modified")))
        .map(|(_, v)| v.trim().to_string())
        .expect("last-modified");
    let head = head.to_ascii_lowercase();
    for want in ["accept-ranges: bytes", "content-type: audio/wav", "content-disposition: attachment", "last-modified:"]
    {
        assert!(head.contains(want), "{want}: {head}");
    }
    assert!(head.contains(&format!("content-length: {}", whole.len())), "{head}");
    // A Range that does not parse is ignored (RFC 9110 §14.2): the whole
    // stem, not a 416. A suffix longer than the stem is all of it.
    let got = dir.path().join("got.bin");
    let stem_url = format!("/stems/{id}/vocals");
    for range in ["Range: bytes=abc", "Range: items=0-5", "Range: bytes=5-1"] {
        assert_eq!(server.curl(&["-H", range, "-o", utf8(&got), &stem_url]).0, 200, "{range}");
        assert!(std::fs::read(&got).expect("got") == whole, "{range}");
    }
    let suffix = format!("-{}", whole.len() + 10);
    assert_eq!(server.curl(&["-r", &suffix, "-o", utf8(&got), &stem_url]).0, 206);
    assert!(std::fs::read(&got).expect("got") == whole);
    // If-Range (a browser resuming a download): the part while the stem is
    // the one of that Last-Modified, the whole stem otherwise.
    let if_range = format!("If-Range: {last_modified}");
    assert_eq!(server.curl(&["-r", "100-199", "-H", &if_range, "-o", utf8(&got), &stem_url]).0, 206);
    assert_eq!(std::fs::read(&got).expect("got"), whole[100..200]);
    for other in ["If-Range: \"an-etag\"", "If-Range: Thu, 01 Jan 2026 00:00:00 GMT"] {
        assert_eq!(server.curl(&["-r", "100-199", "-H", other, "-o", utf8(&got), &stem_url]).0, 200, "{other}");
        assert!(std::fs::read(&got).expect("got") == whole, "{other}");
    }
    // HEAD of the zip: its headers, no writer started (none is left
    // waiting: a GET right after is answered).
    for _ in 0..10 {
        let (code, head) = server.curl(&["-I", &format!("/download/{id}")]);
        assert_eq!(code, 200, "{head}");
        let head = head.to_ascii_lowercase();
        assert!(head.contains("content-type: application/zip") && head.contains("x-job-id:"), "{head}");
        // The zip is streamed, its length unknown: not said to be 0 (a
        // download manager's size check saw an empty file).
        assert!(!head.contains("content-length"), "{head}");
    }
    assert_eq!(server.curl(&["-o", "/dev/null", &format!("/download/{id}")]).0, 200);

    // Synchronous: two stems as MP3, answered with the zip.
    let sync_zip = dir.path().join("sync.zip");
    let audio = format!("audio_file=@{}", utf8(&mix));
    let (code, body) = server.curl(&[
        "-o",
        utf8(&sync_zip),
        "-F",
        &audio,
        "-F",
        "two_stems=vocals",
        "-F",
        "mp3=true",
        "-F",
        "mp3_bitrate=192",
        "-F",
        "shifts=0",
        "/separate",
    ]);
    assert_eq!(code, 200, "{body}");
    assert_eq!(unzip(&sync_zip, &dir.path().join("sync")), ["no_vocals.mp3", "vocals.mp3"]);

    // A link through yt-dlp (a YouTube-like page whose audio is Opus in
    // WebM), with /api/stemify and /api/jobs.
    let site = stemroom_testkit::site::Server::start();
    let yt = format!("youtube_url={}", site.url("/watch.html"));
    let v = server.json(&["-F", &yt, "-F", "shifts=0", "-F", "format=flac", "/api/stemify"]);
    let link_id = v["job_id"].as_str().expect("id").to_string();
    // yt-dlp's generic extractor names a page's media after the page.
    assert!(v["title"].as_str().is_some_and(|t| t.starts_with("Falcon 69 (official audio)")), "{v}");
    server.wait_completed(&link_id);
    let v = server.json(&[&format!("/api/jobs/{link_id}")]);
    assert_eq!(v["options"]["format"], "flac");
    assert_eq!(v["stems"]["vocals"], format!("/stems/{link_id}/vocals"));
    // A playlist or a bad link is refused at once.
    let (code, body) = server.curl(&["-H", "Content-Type: application/json", "-d", r#"{"url": "-rf"}"#, "/job"]);
    assert_eq!(code, 422, "{body}");
    // A client never names a file on this machine: a path or a file:// URI
    // in a link field is refused without being read.
    let here = utf8(&testdata("mixture.wav")).to_string();
    for (field, given) in [("url", here.clone()), ("youtube_url", format!("file://{here}")), ("link", "/etc".into())] {
        let (code, body) = server.curl(&["-F", &format!("{field}={given}"), "/job"]);
        assert_eq!(code, 422, "{field}={given}: {body}");
        assert!(body.contains("not a web link"), "{body}");
    }
    let missing = format!(r#"{{"url": "{}"}}"#, site.url("/missing.wav"));
    let (code, body) = server.curl(&["-H", "Content-Type: application/json", "-d", &missing, "/job"]);
    assert_eq!(code, 422, "{body}");

    // The list, newest first, paged.
    let page = server.json(&["/jobs?per_page=2"]);
    assert_eq!(page["total"], 3, "{page}");
    assert_eq!(page["jobs"].as_array().expect("jobs").len(), 2);
    assert_eq!(page["jobs"][0]["job_id"], link_id.as_str());
    let page2 = server.json(&["/jobs?per_page=2&page=2"]);
    assert_eq!(page2["jobs"][0]["job_id"], id.as_str());

    // The OpenAPI document names every endpoint.
    let api = server.json(&["/openapi.json"]);
    for p in [
        "/",
        "/health",
        "/status",
        "/status/{id}",
        "/jobs",
        "/job/{id}",
        "/upload",
        "/job",
        "/api/stemify",
        "/separate",
        "/download/{id}",
        "/stems/{id}/{stem}",
        "/events/{id}",
        "/jobs/{id}",
        "/api/jobs/{id}",
        "/result/{id}",
    ] {
        assert!(api["paths"][p].is_object(), "openapi lacks {p}");
    }
    // A link job's JSON and form bodies are documented; an upload's form has no link.
    for p in ["/job", "/api/stemify"] {
        let content = &api["paths"][p]["post"]["requestBody"]["content"];
        for kind in ["multipart/form-data", "application/json", "application/x-www-form-urlencoded"] {
            assert!(content[kind].is_object(), "{p} lacks {kind}: {content}");
        }
    }
    let (upload_form, job_form) =
        (api["components"]["schemas"]["UploadForm"].to_string(), api["components"]["schemas"]["JobForm"].to_string());
    assert!(upload_form.contains("\"file\"") && !upload_form.contains("\"url\""), "{upload_form}");
    assert!(job_form.contains("\"url\"") && job_form.contains("JobOptionFields"), "{job_form}");
    // Each method a route takes is documented, under an operation id of its own.
    for (p, method) in
        [("/job/{id}", "get"), ("/job/{id}", "delete"), ("/jobs/{id}", "delete"), ("/result/{id}", "get")]
    {
        assert!(api["paths"][p][method].is_object(), "openapi lacks {method} {p}");
    }
    let mut ids: Vec<&str> = api["paths"]
        .as_object()
        .expect("paths")
        .values()
        .flat_map(|item| item.as_object().into_iter().flat_map(|m| m.values()))
        .filter_map(|op| op["operationId"].as_str())
        .collect();
    let n = ids.len();
    ids.sort_unstable();
    ids.dedup();
    assert_eq!(ids.len(), n, "operation ids are unique");

    // Delete a finished job: its song folder and its upload go.
    let library = server.data.join("library");
    let before = files_in(&library);
    let v = server.json(&["-X", "DELETE", &format!("/job/{id}")]);
    assert_eq!(v["status"], "deleted");
    assert_eq!(server.curl(&[&format!("/status/{id}")]).0, 404);
    assert_eq!(files_in(&library).len(), before.len() - 1, "{before:?}");

    // Delete a running job: it stops, nothing of it stays.
    // (Ten shifts: it runs long enough for the waiting jobs below.)
    let running = server.upload(&mix, &["shifts=10"]);
    server.wait(&running, Duration::from_secs(60), |v| v["stage"] == "separating");
    // A job waiting behind it, watched over /events, then deleted: its
    // stream ends at once (it used to stay open forever) and its upload goes.
    let queued = server.upload(&mix, &["shifts=0"]);
    let asked = Instant::now();
    // The delete goes once the stream has said "pending" (a fixed wait
    // let a loaded machine's curl connect after the delete: a 404).
    let mut events = Command::new("curl")
        .args(["-sS", "-N", "--max-time", "600", "-H", &format!("Authorization: Bearer {}", server.token)])
        .arg(format!("{}/events/{queued}", server.base))
        .stdout(Stdio::piped())
        .spawn()
        .expect("curl");
    let mut lines = BufReader::new(events.stdout.take().expect("stdout"));
    let mut stream = String::new();
    while !stream.contains("\"pending\"") {
        assert!(lines.read_line(&mut stream).expect("read the stream") > 0, "the stream ended early: {stream}");
        assert!(asked.elapsed() < Duration::from_secs(30), "no pending event: {stream}");
    }
    let v = server.json(&["-X", "DELETE", &format!("/job/{queued}")]);
    assert_eq!(v["was_running"], false, "{v}");
    lines.read_to_string(&mut stream).expect("read the stream");
    assert!(events.wait().expect("curl").success(), "{stream}");
    assert!(asked.elapsed() < Duration::from_secs(30), "the deleted job's stream ended");
    assert_eq!(files_in(&server.data.join("uploads")).len(), 1, "only the running job's upload");
    // A synchronous /separate whose client gives up while its job waits:
    // the job is cancelled and its upload removed at once.
    let audio = format!("audio_file=@{}", utf8(&mix));
    let (code, _) = server.curl(&["--max-time", "3", "-F", &audio, "/separate"]);
    // No final answer (0, or the 100 Continue of the upload).
    assert!(code < 200, "curl gave up waiting, got {code}");
    let deadline = Instant::now() + Duration::from_secs(10);
    while files_in(&server.data.join("uploads")).len() > 1 && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(200));
    }
    assert_eq!(files_in(&server.data.join("uploads")).len(), 1, "{:?}", files_in(&server.data.join("uploads")));
    let v = server.json(&["-X", "DELETE", &format!("/job/{running}")]);
    assert_eq!(v["was_running"], true, "{v}");
    assert_eq!(files_in(&library).len(), before.len() - 1);
    assert!(files_in(&library).iter().all(|f| !f.starts_with(".stemroom-partial")), "{:?}", files_in(&library));
    assert!(files_in(&server.data.join("uploads")).is_empty(), "{:?}", files_in(&server.data.join("uploads")));

    let st = server.stop("TERM");
    assert!(st.success(), "SIGTERM: clean exit, got {st:?}");
}

// ---- refusals ----

#[test]
fn bad_requests_get_clear_refusals_and_leave_nothing() {
    let dir = tempfile::tempdir().expect("tempdir");
    let data = dir.path().join("data");
    // A runtime that cannot load: jobs that get through fail fast.
    let server = Server::start(
        &data,
        &["--max-upload-mb", "1", "--jobs-per-hour", "4", "--ort-lib", "/nonexistent/libonnxruntime.so"],
    );
    let f = |name: &str, bytes: &[u8]| {
        let p = dir.path().join(name);
        std::fs::write(&p, bytes).expect("write");
        p
    };
    let mix = std::fs::read(testdata("mixture.wav")).expect("mixture");
    let text = f("notes.mp3", b"these are not the droids you are looking for\n");
    let empty = f("empty.wav", b"");
    let big = f("big.wav", &mix[..]); // 1.07 MB > 1 MB
                                      // The first 0.5 s of the mixture.
    let small = dir.path().join("small.wav");
    stemroom_testkit::ffmpeg(&["-i", utf8(&testdata("mixture.wav")), "-t", "0.5", utf8(&small)]);
    let truncated = f("truncated.wav", &mix[..30_000]); // the header claims 1 MB

    let code_of = |args: &[&str]| server.curl(args);
    let file = |p: &Path| format!("file=@{}", utf8(p));

    // Tokens.
    assert_eq!(server.curl_raw(&["-F".into(), file(&small), "/upload".into()]).0, 401);
    // Not audio, empty: 415 with the reason.
    let (code, body) = code_of(&["-F", &file(&text), "/upload"]);
    assert_eq!(code, 415, "{body}");
    assert!(body.contains("could not be read as audio"), "{body}");
    assert!(!body.contains(utf8(&data)), "where uploads are kept is the server's business: {body}");
    let (code, body) = code_of(&["-F", &file(&empty), "/upload"]);
    assert_eq!(code, 415, "{body}");
    assert!(body.contains("empty"), "{body}");
    // Over the limit: 413, nothing left.
    let (code, body) = code_of(&["-F", &file(&big), "/upload"]);
    assert_eq!(code, 413, "{body}");
    // The same without a Content-Length (chunked): still 413.
    let (code, body) = code_of(&["-H", "Transfer-Encoding: chunked", "-F", &file(&big), "/upload"]);
    assert_eq!(code, 413, "{body}");
    // A hostile file name is only a title.
    let hostile = format!("file=@{};filename=../../x.wav", utf8(&small));
    let v = server.json(&["-F", &hostile, "/upload"]);
    assert_eq!(v["title"], "x", "{v}");
    assert!(!dir.path().join("x.wav").exists() && !data.join("x.wav").exists());
    // A file name that is not UTF-8 still names a file part (multer hides it).
    {
        use std::os::unix::ffi::OsStringExt;
        let mut arg = format!("file=@{};filename=", utf8(&small)).into_bytes();
        arg.extend_from_slice(b"\xff\xfe song.wav");
        let out = Command::new("curl")
            .args([
                "-sS",
                "-w",
                "%{http_code}",
                "-o",
                "/dev/null",
                "-H",
                &format!("Authorization: Bearer {}", server.token),
            ])
            .arg("-F")
            .arg(std::ffi::OsString::from_vec(arg))
            .arg(format!("{}/upload", server.base))
            .output()
            .expect("curl");
        assert_eq!(String::from_utf8_lossy(&out.stdout), "200", "{}", String::from_utf8_lossy(&out.stderr));
    }
    // A truncated file decodes as far as it goes or is refused; never a crash.
    let (code, body) = code_of(&["-F", &file(&truncated), "/upload"]);
    assert!(code == 200 || code == 415, "{code} {body}");
    // A token in the address opens only the events (EventSource's way).
    let in_query = |path: &str| server.curl_raw(&[format!("{path}?access_token={}", server.token)]).0;
    assert_eq!(in_query("/jobs"), 401);
    assert_eq!(in_query("/events/999"), 404, "past the token check: no such job");
    // Percent-encoded as a URL library may write it: the same token.
    let encoded: String = server.token.bytes().map(|b| format!("%{b:02X}")).collect();
    let path = format!("/events/999?access_token={encoded}");
    assert_eq!(server.curl_raw(&[path]).0, 404, "the encoded token is taken");
    // Unknown jobs and options.
    assert_eq!(code_of(&["/status/999"]).0, 404);
    assert_eq!(code_of(&["/status/abc"]).0, 404);
    assert_eq!(code_of(&["/download/999"]).0, 404);
    assert_eq!(code_of(&["-X", "DELETE", "/job/999"]).0, 404);
    assert_eq!(code_of(&["/no/such/endpoint"]).0, 404);
    // Every refusal is JSON ({"detail", "code"}), axum's own ones included.
    for (args, want) in [
        (&["/jobs?page=abc"][..], 422),
        (&["/status/%FF"], 400),
        (&["-X", "PUT", "/upload"], 405),
        (&["/no/such/endpoint"], 404),
    ] {
        let (code, body) = code_of(args);
        assert_eq!(code, want, "{args:?}: {body}");
        let v: Value = serde_json::from_str(&body).unwrap_or_else(|e| panic!("{args:?}: {e}: {body}"));
        assert!(v["detail"].as_str().is_some_and(|d| !d.is_empty()) && v["code"].is_string(), "{args:?}: {v}");
    }
    // A paging offset at the top of its range is a page, not an overflow.
    let v = server.json(&["/jobs?offset=4294967295&per_page=1"]);
    assert_eq!((v["page"].as_u64(), v["jobs"].as_array().map(Vec::len)), (Some(4_294_967_295), Some(0)), "{v}");
    // Paging numbers that are not ones: 422 as every bad option.
    for bad in ["/jobs?page=-1", "/jobs?page=4294967296", "/jobs?per_page=x"] {
        let (code, body) = code_of(&[bad]);
        assert_eq!(code, 422, "{bad}: {body}");
    }
    for bad in
        ["shifts=many", "shifts=21", "format=ogg", "two_stems=guitar", "model=mdx", "overlap=1.5", "overlap=0.999997"]
    {
        let (code, body) = code_of(&["-F", &file(&small), "-F", bad, "/upload"]);
        assert_eq!(code, 422, "{bad}: {body}");
    }
    let (code, body) = code_of(&["-F", "shifts=1", "/upload"]);
    assert_eq!(code, 422, "no file: {body}");
    let (code, _) = code_of(&["-H", "Content-Type: text/plain", "-d", "hello", "/job"]);
    assert_eq!(code, 415);
    // Rate limit: 4 new jobs an hour from one address. Only queued jobs
    // count: the refusals above (far more than 4: not audio, too large,
    // bad options) spent none of it, so songs are queued up to 4 jobs in
    // all (2 or 3 so far), then 429.
    let mut codes = Vec::new();
    while codes.last() != Some(&429) && codes.len() < 6 {
        codes.push(code_of(&["-F", &file(&small), "/upload"]).0);
    }
    assert_eq!(codes.last(), Some(&429), "{codes:?}");
    assert_eq!(server.json(&["/jobs?per_page=100"])["total"], 4, "{codes:?}");
    // Past the quota, requests are refused before their body is read.
    assert_eq!(code_of(&["-F", &file(&text), "/upload"]).0, 429);
    let headers = dir.path().join("headers.txt");
    let (code, _) = code_of(&["-D", utf8(&headers), "-F", &file(&small), "/upload"]);
    assert_eq!(code, 429);
    let headers = std::fs::read_to_string(&headers).expect("headers");
    assert!(headers.to_ascii_lowercase().contains("retry-after:"), "{headers}");
    // `/upload/` is `/upload`, as FastAPI's clients expect: it reaches the
    // upload (whose quota is spent: 429), not a 404.
    let (code, body) = code_of(&["-F", &file(&small), "/upload/"]);
    assert_eq!(code, 429, "{body}");
    // A file sent as `requests` sends it (no `Expect: 100-continue`) to a
    // wrong address or with a wrong method: a JSON 404 or 405 (with
    // `Allow`), its body read first so the client is not reset mid-send.
    let headers = dir.path().join("headers-2.txt");
    for (method, path, want) in [("POST", "/separate/nope", 404), ("PUT", "/upload", 405)] {
        let (code, body) = code_of(&["-D", utf8(&headers), "-X", method, "-H", "Expect:", "-F", &file(&big), path]);
        assert_eq!(code, want, "{method} {path}: {body}");
        let v: Value = serde_json::from_str(&body).unwrap_or_else(|e| panic!("{method} {path}: {e}: {body}"));
        assert!(v["code"].is_string(), "{v}");
        let h = std::fs::read_to_string(&headers).expect("headers").to_ascii_lowercase();
        assert!(want != 405 || h.contains("allow: post"), "{h}");
    }

    // A second server on the same folder is refused, plainly.
    let o = Command::new(env!("CARGO_BIN_EXE_stemroom"))
        .args(["serve", "--listen", "127.0.0.1:0", "--data-dir", utf8(&data)])
        .output()
        .expect("second server");
    assert!(!o.status.success());
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(err.contains("another Stemroom"), "{err}");
    // --no-auth only on loopback.
    let o = Command::new(env!("CARGO_BIN_EXE_stemroom"))
        .args(["serve", "--no-auth", "--listen", "0.0.0.0:0", "--data-dir", utf8(&dir.path().join("other"))])
        .output()
        .expect("no-auth server");
    assert_eq!(o.status.code(), Some(2), "{}", String::from_utf8_lossy(&o.stderr));
    // On loopback without a token: only requests addressed to this machine
    // (DNS rebinding) and from its own pages (a cross-site form's POST).
    let open = Server::start(&dir.path().join("open"), &["--no-auth"]);
    let raw = |args: &[&str]| open.curl_raw(&args.iter().map(|a| a.to_string()).collect::<Vec<_>>());
    assert_eq!(raw(&["/jobs"]).0, 200);
    let port = open.base.rsplit(':').next().expect("port").to_string();
    assert_eq!(raw(&["-H", &format!("Host: localhost:{port}"), "/jobs"]).0, 200);
    let (code, body) = raw(&["-H", &format!("Host: rebound.example:{port}"), "/jobs"]);
    assert_eq!(code, 403, "{body}");
    assert!(body.contains("addressed to this machine"), "{body}");
    let (code, body) = raw(&["-H", "Origin: https://evil.example", "-H", "Expect:", "-F", &file(&big), "/upload"]);
    assert_eq!(code, 403, "{body}");
    assert!(raw(&["/jobs"]).1.contains("\"total\":0"), "nothing was queued");
    assert_eq!(raw(&["-H", "Origin: http://localhost:5173", "/jobs"]).0, 200);
    // Bodies refused part way get their JSON answer, not a reset: a field
    // refused before a 40 MB file (python-requests puts `data=` fields
    // first), multipart without a boundary (a Content-Type set by hand).
    // Without `Expect: 100-continue`, as those clients send.
    let zeros = |name: &str, mb: u64| {
        let p = dir.path().join(name);
        std::fs::File::create(&p).expect("create").set_len(mb << 20).expect("size");
        p
    };
    let forty = zeros("forty.wav", 40);
    let (code, body) = raw(&["-H", "Expect:", "-F", "shifts=99", "-F", &file(&forty), "/upload"]);
    assert_eq!(code, 422, "{body}");
    assert!(body.contains("shifts"), "{body}");
    // A field this server does not take (another server's option) is
    // ignored, as FastAPI ignores undeclared fields: here the zeros are
    // then refused as what they are.
    let (code, body) = raw(&["-H", "Expect:", "-F", "model_name=htdemucs", "-F", &file(&forty), "/upload"]);
    assert_eq!(code, 415, "{body}");
    // `body` as it is, under `content_type`.
    let post_body = |content_type: &str, body: &Path| {
        let (header, data) = (format!("Content-Type: {content_type}"), format!("@{}", utf8(body)));
        raw(&["-H", "Expect:", "-H", &header, "--data-binary", &data, "/upload"])
    };
    // Audio as the body itself (curl's --data-binary sends it as a
    // urlencoded form): 415 with how to send it, not "too large".
    let (code, body) = post_body("application/x-www-form-urlencoded", &forty);
    assert_eq!(code, 415, "{body}");
    assert!(body.contains("multipart/form-data"), "{body}");
    let (code, body) = post_body("multipart/form-data", &forty);
    assert_eq!(code, 400, "{body}");
    assert!(body.contains("without a boundary"), "{body}");
    // A body whose boundary never comes is not held in memory.
    let before = peak_rss_gb(open.pid());
    let (code, body) = post_body("multipart/form-data; boundary=nomatch", &zeros("two-hundred.bin", 200));
    assert_eq!(code, 400, "{body}");
    assert!(body.contains("no boundary line"), "{body}");
    let grew = peak_rss_gb(open.pid()) - before;
    eprintln!("peak RSS grew {:.1} MB for a 200 MB body without its boundary", grew * 1000.0);
    assert!(grew < 0.064, "a 200 MB body without its boundary took {:.0} MB", grew * 1000.0);
    // Nor one refused at its first field whose next part's headers never end.
    let unended = dir.path().join("unended.bin");
    {
        let mut f = std::fs::File::create(&unended).expect("create");
        use std::io::Write as _;
        f.write_all(
            b"--B\r\nContent-Disposition: form-data; name=\"model_name\"\r\n\r\nx\r\n--B\r\nContent-Type: text/plain",
        )
        .expect("write");
        f.set_len(200 << 20).expect("size");
    }
    let before = peak_rss_gb(open.pid());
    let (code, body) = post_body("multipart/form-data; boundary=B", &unended);
    assert!(code == 400 || code == 422, "{code} {body}");
    let grew = peak_rss_gb(open.pid()) - before;
    assert!(grew < 0.064, "a refused body whose next part never ends took {:.0} MB", grew * 1000.0);
    // Options in the address, as FastAPI clients send plain parameters;
    // one this server does not take (a cache-buster, another server's
    // option, a nested JSON one) is ignored and named in the answer.
    let (code, body) = raw(&["-F", &file(&small), "-F", "output_format=WAV", "/upload?model_name=htdemucs&_=17"]);
    assert_eq!(code, 200, "{body}");
    let created: Value = serde_json::from_str(&body).expect("JSON");
    assert_eq!(created["ignored_fields"], serde_json::json!(["output_format", "model_name", "_"]), "{body}");
    let (code, body) = raw(&["-F", &file(&small), "/upload"]);
    assert_eq!(code, 200, "{body}");
    assert!(!body.contains("ignored_fields"), "none ignored, none named: {body}");
    let (code, body) = raw(&[
        "-H",
        "Content-Type: application/json",
        "-d",
        r#"{"url": "http://127.0.0.1/x.mp3", "options": {"stems": 4}}"#,
        "/job",
    ]);
    assert_eq!(code, 422, "{body}");
    assert!(body.contains("private network"), "the nested option ignored, the link read: {body}");
    let (code, body) = raw(&["-F", &file(&small), "-F", "two_stems=drums", "/upload?two_stems=vocals"]);
    assert_eq!(code, 422, "{body}");
    let (code, body) = raw(&["-F", &file(&small), "/upload?two_stems=vocals&shifts=0"]);
    assert_eq!(code, 200, "{body}");
    let id = serde_json::from_str::<Value>(&body).expect("JSON")["job_id"].as_str().expect("id").to_string();
    let status: Value = serde_json::from_str(&raw(&[&format!("/status/{id}")]).1).expect("JSON");
    assert_eq!(status["options"]["two_stems"], "vocals", "{status}");
    // Empty parameters (a client's URLSearchParams of unset fields) are no
    // options, and one given in both places with one value is one option.
    let (code, body) = raw(&["-F", &file(&small), "-F", "shifts=0", "/upload?format=&shifts=0&two_stems=%20"]);
    assert_eq!(code, 200, "{body}");
    // No body at all, the link in the address (`requests.post(url, params=…)`):
    // read (here refused as a link to this machine), not a 415.
    let (code, body) = raw(&["-X", "POST", "-H", "Content-Length: 0", "/job?url=http://127.0.0.1/song.mp3"]);
    assert_eq!(code, 422, "{body}");
    // `curl -X POST` sends neither a length nor chunks: no body either.
    let (code, body) = raw(&["-X", "POST", "/job?url=http://127.0.0.1/song.mp3"]);
    assert_eq!(code, 422, "{body}");
    assert!(body.contains("private network"), "{body}");
    // Nor with a JSON Content-Type and no body (fetch with only headers).
    let json = "Content-Type: application/json";
    let (code, body) = raw(&["-X", "POST", "-H", json, "/job?url=http://127.0.0.1/song.mp3"]);
    assert_eq!(code, 422, "{body}");
    assert!(body.contains("private network"), "{body}");
    // A file under a name this server does not take is ignored whole (it
    // used to be read as a text field and called too long), and named.
    let (code, body) = raw(&["-F", &format!("song=@{}", utf8(&small)), "/upload"]);
    assert_eq!(code, 422, "{body}");
    assert!(body.contains("no audio") && body.contains("ignored, not taken here: song"), "{body}");
    // However large (a whole song: it was read as held by the parser, and
    // over 4 MiB called a body without a boundary, 400).
    let big = dir.path().join("big.mp3");
    std::fs::write(&big, vec![0x55u8; 6 << 20]).expect("write");
    let (code, body) = raw(&["-F", &format!("song=@{}", utf8(&big)), "/upload"]);
    assert_eq!(code, 422, "{body}");
    assert!(body.contains("ignored, not taken here: song"), "{body}");
    drop(open);

    // Nothing partial anywhere: uploads hold only files of jobs that exist
    // and failed (kept for a retry); no part files.
    std::thread::sleep(Duration::from_secs(2));
    let uploads = files_in(&data.join("uploads"));
    assert!(uploads.iter().all(|f| !f.ends_with(".part")), "{uploads:?}");
    let jobs = server.json(&["/jobs?per_page=100"]);
    let live = jobs["jobs"].as_array().expect("jobs").len();
    assert!(uploads.len() <= live, "{uploads:?} for {live} jobs");
    let token_mode = std::fs::metadata(data.join("server-token")).expect("token").permissions();
    use std::os::unix::fs::PermissionsExt;
    assert_eq!(token_mode.mode() & 0o777, 0o600);
}

// ---- load and crashes ----

#[test]
fn fifty_uploads_two_hundred_polls_kill_and_restart() {
    let dir = tempfile::tempdir().expect("tempdir");
    let data = dir.path().join("data");
    let mix = testdata("mixture.wav");
    let server = Server::start(&data, &["--jobs-per-hour", "1000"]);
    // 50 clients upload at once (one curl, 50 parallel transfers).
    let file = format!("file=@{}", utf8(&mix));
    let (ok, seconds) = server.parallel(50, &["-F", &file, "-F", "shifts=0"], "/upload");
    eprintln!("50 parallel uploads in {seconds:.1} s: {ok} accepted");
    assert_eq!(ok, 50);
    let jobs = server.json(&["/jobs?per_page=100"]);
    let all = jobs["jobs"].as_array().expect("jobs");
    assert_eq!(all.len(), 50);
    assert!(all.iter().all(|j| j["status"] == "pending" || j["status"] == "processing"), "queued, not failed");
    let first = all.last().expect("oldest")["job_id"].as_str().expect("id").to_string();

    // 200 status polls at once while the first job separates.
    server.wait(&first, Duration::from_secs(120), |v| v["stage"] == "separating");
    let (ok, seconds) = server.parallel(200, &[], &format!("/status/{first}"));
    assert_eq!(ok, 200);
    eprintln!("200 parallel status polls in {seconds:.2} s");
    let rss = peak_rss_gb(server.pid());
    eprintln!("server peak RSS with 50 uploads queued and one separating: {rss:.2} GB");
    assert!(rss > 0.0 && rss < 4.0, "peak RSS {rss} GB");

    // Keep two jobs: the running one and the next.
    for j in &all[..48] {
        let id = j["job_id"].as_str().expect("id");
        assert_eq!(server.curl(&["-X", "DELETE", &format!("/job/{id}")]).0, 200);
    }
    let second = all[48]["job_id"].as_str().expect("id").to_string();
    // Kill while one of the two separates.
    let deadline = Instant::now() + Duration::from_secs(120);
    while ![&first, &second].iter().any(|id| server.json(&[&format!("/status/{id}")])["stage"] == "separating") {
        assert!(Instant::now() < deadline, "neither job separates");
        std::thread::sleep(Duration::from_millis(50));
    }

    // kill -9 mid-job; the restarted server finishes both, once each.
    let st = server.stop("KILL");
    assert!(!st.success());
    let server = Server::start(&data, &["--jobs-per-hour", "1000"]);
    server.wait_completed(&first);
    server.wait_completed(&second);
    let library = files_in(&data.join("library"));
    assert_eq!(library.len(), 2, "each job once in the library: {library:?}");
    assert_eq!(server.json(&["/jobs"])["total"], 2);
    assert!(files_in(&data.join("uploads")).is_empty(), "{:?}", files_in(&data.join("uploads")));

    // SIGTERM mid-job: the job goes back to the queue and finishes after a restart.
    let third = server.upload(&mix, &["shifts=0"]);
    server.wait(&third, Duration::from_secs(60), |v| v["stage"] == "separating");
    let st = server.stop("TERM");
    assert!(st.success(), "{st:?}");
    let server = Server::start(&data, &[]);
    server.wait_completed(&third);
    assert_eq!(files_in(&data.join("library")).len(), 3);
    assert!(files_in(&data.join("library")).iter().all(|f| !f.starts_with(".stemroom-partial")));

    // Retention: with --keep-days 0 the finished jobs and their files go at
    // start, also those of a database from before jobs recorded who added
    // them (every row then reads as the app's: the server knows its jobs
    // by their uploads).
    assert!(server.stop("TERM").success());
    let db = rusqlite::Connection::open(data.join("stemroom.sqlite")).expect("sqlite");
    assert!(db.execute("UPDATE jobs SET origin = 'app'", []).expect("update") >= 3);
    drop(db);
    let server = Server::start(&data, &["--keep-days", "0"]);
    // A job's row goes before its song folder: wait for both.
    let deadline = Instant::now() + Duration::from_secs(30);
    while server.json(&["/jobs"])["total"] != 0 || !files_in(&data.join("library")).is_empty() {
        assert!(Instant::now() < deadline, "retention removed nothing");
        std::thread::sleep(Duration::from_millis(100));
    }
    assert!(files_in(&data.join("library")).is_empty(), "{:?}", files_in(&data.join("library")));
}

#[test]
fn disk_floor_cors_and_stalled_clients() {
    use std::io::Write;
    use std::net::TcpStream;
    let dir = tempfile::tempdir().expect("tempdir");
    let data = dir.path().join("data");
    // A floor no disk meets: every upload is refused before anything is written.
    let server = Server::start(
        &data,
        &["--min-free-mb", "1000000000", "--cors", "https://studio.example", "--idle-timeout", "2"],
    );
    let small = dir.path().join("small.wav");
    stemroom_testkit::ffmpeg(&["-i", utf8(&testdata("mixture.wav")), "-t", "0.5", utf8(&small)]);
    let (code, body) = server.curl(&["-F", &format!("file=@{}", utf8(&small)), "/upload"]);
    assert_eq!(code, 507, "{body}");
    assert!(files_in(&data.join("uploads")).is_empty());
    // Options in the address are checked before the upload is: a bad one
    // is its 422, not the floor's 507.
    let (code, body) = server.curl(&["-F", &format!("file=@{}", utf8(&small)), "/upload?shifts=99"]);
    assert_eq!(code, 422, "{body}");
    assert!(body.contains("shifts"), "{body}");

    // CORS for the named origin only.
    let headers = dir.path().join("h.txt");
    let (code, _) = server.curl_raw(&[
        "-D".into(),
        utf8(&headers).into(),
        "-X".into(),
        "OPTIONS".into(),
        "-H".into(),
        "Origin: https://studio.example".into(),
        "-H".into(),
        "Access-Control-Request-Method: POST".into(),
        "-H".into(),
        // (The npm `eventsource` polyfill sends Cache-Control.)
        "Access-Control-Request-Headers: authorization, cache-control, x-api-key".into(),
        "/upload".into(),
    ]);
    let h = std::fs::read_to_string(&headers).expect("headers").to_ascii_lowercase();
    assert!(code == 200 && h.contains("access-control-allow-origin: https://studio.example"), "{code} {h}");
    assert!(h.contains("cache-control") && h.contains("x-api-key"), "{h}");
    let (_, _) = server.curl(&["-D", utf8(&headers), "-H", "Origin: https://evil.example", "/status"]);
    let h = std::fs::read_to_string(&headers).expect("headers").to_ascii_lowercase();
    assert!(!h.contains("access-control-allow-origin"), "{h}");
    // A page's script may read a download's name and a 429's wait.
    let (_, _) = server.curl(&["-D", utf8(&headers), "-H", "Origin: https://studio.example", "/status"]);
    let h = std::fs::read_to_string(&headers).expect("headers").to_ascii_lowercase();
    assert!(h.contains("access-control-expose-headers") && h.contains("content-disposition"), "{h}");
    // An origin with a path never matches a browser's: refused at start.
    let o = Command::new(env!("CARGO_BIN_EXE_stemroom"))
        .args(["serve", "--listen", "127.0.0.1:0", "--cors", "https://studio.example/", "--data-dir"])
        .arg(dir.path().join("other"))
        .output()
        .expect("serve");
    assert_eq!(o.status.code(), Some(2), "{}", String::from_utf8_lossy(&o.stderr));
    assert!(String::from_utf8_lossy(&o.stderr).contains("no path"), "{}", String::from_utf8_lossy(&o.stderr));

    // A client that sends half its headers and waits is dropped.
    let addr = server.base.trim_start_matches("http://").to_string();
    let mut slow = TcpStream::connect(&addr).expect("connect");
    slow.write_all(b"GET /health HTTP/1.1\r\nHost: x\r\n").expect("write");
    slow.set_read_timeout(Some(Duration::from_secs(10))).expect("timeout");
    let t0 = Instant::now();
    let mut buf = Vec::new();
    let _ = slow.read_to_end(&mut buf);
    assert!(t0.elapsed() < Duration::from_secs(8), "closed after the header timeout ({:?})", t0.elapsed());
    // An upload that stalls halfway is answered 408 (or dropped) and leaves nothing.
    let free = Server::start(&dir.path().join("data2"), &["--idle-timeout", "2"]);
    let addr = free.base.trim_start_matches("http://").to_string();
    let mut up = TcpStream::connect(&addr).expect("connect");
    let head = format!(
        "POST /upload HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {}\r\nContent-Type: multipart/form-data; boundary=XyZ\r\nContent-Length: 100000\r\n\r\n--XyZ\r\nContent-Disposition: form-data; name=\"file\"; filename=\"a.wav\"\r\n\r\nRIFF",
        free.token
    );
    up.write_all(head.as_bytes()).expect("write");
    up.set_read_timeout(Some(Duration::from_secs(15))).expect("timeout");
    let mut answer = Vec::new();
    let _ = up.read_to_end(&mut answer);
    let answer = String::from_utf8_lossy(&answer);
    assert!(answer.is_empty() || answer.starts_with("HTTP/1.1 408"), "{answer}");
    std::thread::sleep(Duration::from_millis(500));
    assert!(
        files_in(&dir.path().join("data2/uploads")).is_empty(),
        "{:?}",
        files_in(&dir.path().join("data2/uploads"))
    );
    assert_eq!(free.json(&["/health"])["status"], "ok", "the server goes on");
    // An upload trickled a byte a second, never pausing as long as the
    // idle timeout (2 s), falls behind the slowest pace taken (500 bytes a
    // second after the first idle timeout): answered 408 then, not held
    // for as long as the client likes.
    let mut up = TcpStream::connect(&addr).expect("connect");
    up.write_all(head.as_bytes()).expect("write");
    let mut trickle = up.try_clone().expect("clone");
    let t0 = Instant::now();
    let writer = std::thread::spawn(move || {
        for _ in 0..20 {
            std::thread::sleep(Duration::from_secs(1));
            if trickle.write_all(b"x").is_err() {
                return;
            }
        }
    });
    up.set_read_timeout(Some(Duration::from_secs(30))).expect("timeout");
    let mut answer = Vec::new();
    let _ = up.read_to_end(&mut answer);
    let answered = t0.elapsed();
    let answer = String::from_utf8_lossy(&answer);
    assert!(answer.starts_with("HTTP/1.1 408") && answer.contains("too slow"), "{answer}");
    assert!(answered < Duration::from_secs(8), "answered after {answered:?}");
    drop(up);
    writer.join().expect("writer");
    std::thread::sleep(Duration::from_millis(500));
    assert!(files_in(&dir.path().join("data2/uploads")).is_empty());

    // Connections beyond --max-connections wait to be accepted: two idle
    // ones hold both slots, a third client waits until the header timeout
    // drops them, then is served.
    let capped = Server::start(&dir.path().join("data4"), &["--max-connections", "2", "--idle-timeout", "4"]);
    let addr = capped.base.trim_start_matches("http://").to_string();
    let idle: Vec<TcpStream> = (0..2).map(|_| TcpStream::connect(&addr).expect("connect")).collect();
    std::thread::sleep(Duration::from_millis(300));
    let (code, _) = capped.curl(&["--max-time", "1.5", "/health"]);
    assert_eq!(code, 0, "no slot while two idle connections hold them");
    let t0 = Instant::now();
    let (code, body) = capped.curl(&["--max-time", "20", "/health"]);
    assert_eq!(code, 200, "{body}");
    assert!(t0.elapsed() < Duration::from_secs(10), "served once the idle ones were dropped: {:?}", t0.elapsed());
    drop(idle);

    // The floor holds while an upload streams: a chunked upload (no length
    // to check at its start) that would take the disk below it is refused
    // with 507 on the way, and its part file goes. (The floor sits 40 MB
    // under what is free now; the upload is 100 MB that no file system
    // compresses: noise.)
    let large = dir.path().join("large.wav");
    let noise: Vec<u8> = (0..1u32 << 20).map(|i| (i.wrapping_mul(2_654_435_761) >> 13) as u8).collect();
    std::fs::write(&large, noise.repeat(100)).expect("100 MB");
    let avail = Command::new("df").args(["-B1", "--output=avail"]).arg(dir.path()).output().expect("df");
    let avail: u64 =
        String::from_utf8_lossy(&avail.stdout).lines().nth(1).and_then(|l| l.trim().parse().ok()).expect("df says");
    let floor_mb = (avail / 1_000_000).saturating_sub(40).to_string();
    let tight = Server::start(&dir.path().join("data3"), &["--min-free-mb", &floor_mb]);
    let out = Command::new("curl")
        .args(["-sS", "-o", "/dev/null", "-w", "%{http_code} %{size_upload}"])
        .args(["-H", &format!("Authorization: Bearer {}", tight.token), "-H", "Transfer-Encoding: chunked"])
        .args(["-F", &format!("file=@{}", utf8(&large)), &format!("{}/upload", tight.base)])
        .output()
        .expect("curl");
    let said = String::from_utf8_lossy(&out.stdout).to_string();
    let (code, sent) = said.split_once(' ').expect("code and size");
    assert_eq!(code, "507", "{said} {}", String::from_utf8_lossy(&out.stderr));
    // Refused on the way (after 8 MiB or more), not at the start.
    assert!(sent.parse::<f64>().is_ok_and(|n| n > 8.0 * 1024.0 * 1024.0), "sent {sent} bytes");
    std::thread::sleep(Duration::from_millis(500));
    assert!(
        files_in(&dir.path().join("data3/uploads")).is_empty(),
        "{:?}",
        files_in(&dir.path().join("data3/uploads"))
    );

    // A client that sends its whole body before reading (python-requests,
    // urllib: no `Expect: 100-continue`) gets the 413 sent part way through
    // a chunked upload far over the limit, not a reset: the server reads
    // and throws away the rest before closing.
    let limited = Server::start(&dir.path().join("data5"), &["--max-upload-mb", "1"]);
    let addr = limited.base.trim_start_matches("http://").to_string();
    let mut up = TcpStream::connect(&addr).expect("connect");
    up.set_read_timeout(Some(Duration::from_secs(60))).expect("timeout");
    up.set_write_timeout(Some(Duration::from_secs(60))).expect("timeout");
    let sent = (|| -> std::io::Result<()> {
        let head = format!(
            "POST /upload HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {}\r\nContent-Type: multipart/form-data; boundary=XyZ\r\nTransfer-Encoding: chunked\r\n\r\n",
            limited.token
        );
        up.write_all(head.as_bytes())?;
        let part = b"--XyZ\r\nContent-Disposition: form-data; name=\"file\"; filename=\"a.wav\"\r\n\r\nRIFF";
        up.write_all(format!("{:x}\r\n", part.len()).as_bytes())?;
        up.write_all(part)?;
        up.write_all(b"\r\n")?;
        let chunk = vec![0u8; 1 << 20];
        for _ in 0..64 {
            up.write_all(format!("{:x}\r\n", chunk.len()).as_bytes())?;
            up.write_all(&chunk)?;
            up.write_all(b"\r\n")?;
        }
        let end = b"\r\n--XyZ--\r\n";
        up.write_all(format!("{:x}\r\n", end.len()).as_bytes())?;
        up.write_all(end)?;
        up.write_all(b"\r\n0\r\n\r\n")
    })();
    let mut answer = Vec::new();
    let read = up.read_to_end(&mut answer);
    let answer = String::from_utf8_lossy(&answer);
    assert!(sent.is_ok() && answer.starts_with("HTTP/1.1 413"), "sent: {sent:?}, read: {read:?}, answer: {answer}");
    assert!(answer.contains("too_large"), "{answer}");
    std::thread::sleep(Duration::from_millis(500));
    assert!(files_in(&dir.path().join("data5/uploads")).is_empty());
}

/// A client cannot make the server fetch from this machine or its private
/// network (its own ports, a cloud's metadata service) unless its operator
/// allows it.
#[test]
fn links_to_this_machine_are_refused_unless_allowed() {
    let dir = tempfile::tempdir().expect("tempdir");
    let server = Server::start(&dir.path().join("data"), &[]);
    let site = stemroom_testkit::site::Server::start();
    for link in [
        site.url("/song.wav"),
        "http://169.254.169.254/latest/meta-data/".into(),
        "http://[::1]:9/".into(),
        // A zero-width space and a byte-order mark before the link, as JSON
        // escapes: the intake drops them, so the check must too.
        format!("\\u200b{}", site.url("/song.wav")),
        "\\ufeffhttp://169.254.169.254/latest/meta-data/".into(),
    ] {
        let body = format!(r#"{{"url": "{link}"}}"#);
        let (code, text) = server.curl(&["-H", "Content-Type: application/json", "-d", &body, "/job"]);
        assert_eq!(code, 422, "{link}: {text}");
        assert!(text.contains("private network") && text.contains("--allow-private-links"), "{text}");
    }
    // A browser's form (`new FormData(form)`) with its file input left
    // empty: an empty file part beside the link, which is what is checked.
    let form = format!(
        "--B\r\nContent-Disposition: form-data; name=\"file\"; filename=\"\"\r\n\
         Content-Type: application/octet-stream\r\n\r\n\r\n\
         --B\r\nContent-Disposition: form-data; name=\"url\"\r\n\r\n{}\r\n--B--\r\n",
        site.url("/song.wav")
    );
    let (code, text) =
        server.curl(&["-H", "Content-Type: multipart/form-data; boundary=B", "--data-binary", &form, "/job"]);
    assert_eq!(code, 422, "{text}");
    assert!(text.contains("private network"), "{text}");
    // The empty file input alone is no file and no link.
    let form = "--B\r\nContent-Disposition: form-data; name=\"file\"; filename=\"\"\r\n\r\n\r\n--B--\r\n";
    let (code, text) =
        server.curl(&["-H", "Content-Type: multipart/form-data; boundary=B", "--data-binary", form, "/job"]);
    assert_eq!(code, 422, "{text}");
    let jobs = server.json(&["/jobs"]);
    assert_eq!(jobs["total"], 0, "nothing queued: {jobs}");
    assert!(files_in(&server.data.join("uploads")).is_empty());
}

/// Uploads side by side count what each other still has to send against the
/// free-space floor, but only what each has shown it sends: clients that
/// declare a large `Content-Length` and send nothing cannot make every
/// other upload a 507.
#[test]
fn uploads_side_by_side_hold_space_by_what_they_send_not_what_they_declare() {
    use std::io::Write;
    use std::net::TcpStream;
    let dir = tempfile::tempdir().expect("tempdir");
    let data = dir.path().join("data");
    std::fs::create_dir_all(&data).expect("mkdir");
    // A floor 3 GB below the free space now.
    let df = Command::new("df").args(["-B1", "--output=avail"]).arg(&data).output().expect("df");
    let free: u64 = String::from_utf8_lossy(&df.stdout).lines().nth(1).and_then(|l| l.trim().parse().ok()).expect("df");
    let floor_mb = (free / 1_000_000).saturating_sub(3_000);
    assert!(floor_mb > 0, "this test needs more than 3 GB free");
    let floor = floor_mb.to_string();
    let server = Server::start(&data, &["--min-free-mb", &floor, "--max-upload-mb", "4000", "--idle-timeout", "20"]);
    let addr = server.base.trim_start_matches("http://").to_string();
    // Headers and the start of a file part of `declared` bytes, then
    // nothing (in flight).
    let start = |declared: u64| {
        let mut c = TcpStream::connect(&addr).expect("connect");
        let head = format!(
            "POST /upload HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {}\r\n\
             Content-Type: multipart/form-data; boundary=B\r\nContent-Length: {declared}\r\n\r\n\
             --B\r\nContent-Disposition: form-data; name=\"file\"; filename=\"a.wav\"\r\n\r\nRIFF",
            server.token
        );
        c.write_all(head.as_bytes()).expect("write");
        c.set_read_timeout(Some(Duration::from_secs(3))).expect("timeout");
        c
    };
    let answer = |c: &mut TcpStream| {
        let mut buf = [0u8; 4096];
        match c.read(&mut buf) {
            Ok(n) => Some(String::from_utf8_lossy(&buf[..n]).into_owned()),
            Err(_) => None, // still reading the body
        }
    };
    // One upload alone larger than what is left above the floor: at once.
    let mut whole = start(3_500_000_000);
    let refused = answer(&mut whole).expect("answered at once");
    assert!(refused.starts_with("HTTP/1.1 507"), "{refused}");
    // 24 clients that declare 2 GB each (48 GB) and send nothing.
    let mut stalled = Vec::new();
    for _ in 0..24 {
        let mut c = start(2_000_000_000);
        assert_eq!(answer(&mut c), None, "a declared 2 GB upload is taken");
        stalled.push(c);
    }
    // A real upload beside them passes the floor (refused for what it is:
    // not audio, 415), not for space the others only declared.
    let junk = dir.path().join("junk.wav");
    std::fs::write(&junk, b"this is not audio").expect("write");
    let (code, body) = server.curl(&["-F", &format!("file=@{}", utf8(&junk)), "/upload"]);
    assert_eq!(code, 415, "{body}");
    // Nothing was queued, and the stalled uploads leave no files once gone.
    drop(stalled);
    assert_eq!(server.json(&["/jobs"])["total"], 0);
    let deadline = Instant::now() + Duration::from_secs(10);
    while !files_in(&data.join("uploads")).is_empty() {
        assert!(Instant::now() < deadline, "{:?}", files_in(&data.join("uploads")));
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// A file part named only by RFC 8187's `filename*` (older
/// python-requests/urllib3 for a name outside ASCII, with no part
/// Content-Type) is the file, and its name is the song's title.
#[test]
fn a_file_named_by_filename_star_is_taken_with_its_name() {
    let dir = tempfile::tempdir().expect("tempdir");
    let server = Server::start(&dir.path().join("data"), &[]);
    let wav = dir.path().join("tone.wav");
    stemroom_testkit::ffmpeg(&["-f", "lavfi", "-i", "sine=f=440:d=2", "-ac", "2", utf8(&wav)]);
    let mut body =
        b"--XyZ\r\nContent-Disposition: form-data; name=\"file\"; filename*=UTF-8''Caf%C3%A9%20No.1.wav\r\n\r\n"
            .to_vec();
    body.extend(std::fs::read(&wav).expect("wav"));
    body.extend(b"\r\n--XyZ--\r\n");
    let form = dir.path().join("form");
    std::fs::write(&form, body).expect("write");
    let v = server.json(&[
        "-H",
        "Content-Type: multipart/form-data; boundary=XyZ",
        "--data-binary",
        &format!("@{}", utf8(&form)),
        "/upload",
    ]);
    assert_eq!(v["title"], "Café No.1", "{v}");
}

/// A chunked upload (no `Content-Length`: an unbuffered proxy, a client
/// streaming from a pipe) holds its first 8 MiB against the floor as a
/// declared one does: many of them at once cannot take the disk below it.
#[test]
fn chunked_uploads_side_by_side_hold_space_too() {
    use std::io::Write;
    use std::net::TcpStream;
    let dir = tempfile::tempdir().expect("tempdir");
    let data = dir.path().join("data");
    std::fs::create_dir_all(&data).expect("mkdir");
    // A floor 60 MB below the free space now.
    let df = Command::new("df").args(["-B1", "--output=avail"]).arg(&data).output().expect("df");
    let free: u64 = String::from_utf8_lossy(&df.stdout).lines().nth(1).and_then(|l| l.trim().parse().ok()).expect("df");
    let floor = ((free / 1_000_000).saturating_sub(60)).to_string();
    let server = Server::start(&data, &["--min-free-mb", &floor, "--idle-timeout", "20"]);
    let addr = server.base.trim_start_matches("http://").to_string();
    // 10 MB that is not audio: refused for what it is (415) when it
    // passes the floor.
    let junk = dir.path().join("junk.wav");
    std::fs::write(&junk, vec![7u8; 10_000_000]).expect("write");
    let (code, body) = server.curl(&["-F", &format!("file=@{}", utf8(&junk)), "/upload"]);
    assert_eq!(code, 415, "alone, an upload passes the floor: {body}");
    // Ten chunked uploads that have sent their first chunk, then nothing:
    // each holds 8 MiB, as many as fit above the floor (those that do not
    // fit are refused themselves), so the 10 MB upload no longer fits.
    let mut stalled = Vec::new();
    for _ in 0..10 {
        let mut c = TcpStream::connect(&addr).expect("connect");
        let part = "--B\r\nContent-Disposition: form-data; name=\"file\"; filename=\"a.wav\"\r\n\r\nRIFF";
        let head = format!(
            "POST /upload HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {}\r\n\
             Content-Type: multipart/form-data; boundary=B\r\nTransfer-Encoding: chunked\r\n\r\n{:x}\r\n{part}\r\n",
            server.token,
            part.len()
        );
        c.write_all(head.as_bytes()).expect("write");
        stalled.push(c);
    }
    // (Each is read up to its stall before the next check.)
    std::thread::sleep(Duration::from_millis(500));
    let (code, body) = server.curl(&["-F", &format!("file=@{}", utf8(&junk)), "/upload"]);
    assert_eq!(code, 507, "the chunked uploads hold their share: {body}");
    drop(stalled);
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let (code, body) = server.curl(&["-F", &format!("file=@{}", utf8(&junk)), "/upload"]);
        if code == 415 {
            break;
        }
        assert!(Instant::now() < deadline, "their share is given back when they go: {code} {body}");
        std::thread::sleep(Duration::from_millis(200));
    }
}

#[test]
fn audio_longer_than_the_servers_limit_is_refused_however_small_the_file() {
    let dir = tempfile::tempdir().expect("tempdir");
    let server = Server::start(&dir.path().join("data"), &["--max-upload-minutes", "1"]);
    // 61 s of silence in FLAC: a few KB.
    let long = dir.path().join("long.flac");
    stemroom_testkit::ffmpeg(&["-f", "lavfi", "-i", "anullsrc=r=44100:cl=stereo", "-t", "61", utf8(&long)]);
    assert!(std::fs::metadata(&long).expect("flac").len() < 200_000);
    let (code, body) = server.curl(&["-F", &format!("file=@{}", utf8(&long)), "/upload"]);
    assert_eq!(code, 422, "{body}");
    assert!(body.contains("longer than this server takes (1 minutes)"), "{body}");
    assert!(files_in(&dir.path().join("data").join("uploads")).is_empty(), "nothing kept");
    // The same with no length in its header (STREAMINFO's 36-bit total
    // samples 0, "unknown", as a FLAC written to a pipe has): decoded up to
    // the limit to tell.
    let unstated = |flac: &Path| {
        let mut b = std::fs::read(flac).expect("read flac");
        assert_eq!(&b[..4], b"fLaC");
        b[21] &= 0xF0;
        b[22..26].fill(0);
        std::fs::write(flac, b).expect("write flac");
    };
    unstated(&long);
    let (code, body) = server.curl(&["-F", &format!("file=@{}", utf8(&long)), "/upload"]);
    assert_eq!(code, 422, "{body}");
    assert!(body.contains("longer than this server takes (1 minutes)"), "{body}");
    assert!(files_in(&dir.path().join("data").join("uploads")).is_empty(), "nothing kept");
    // A length stated short of what decodes (30 s in STREAMINFO, 61 s of
    // frames after it): no bound either.
    let mut b = std::fs::read(&long).expect("read flac");
    let samples: u64 = 30 * 44_100;
    b[21] = (b[21] & 0xF0) | ((samples >> 32) as u8 & 0x0F);
    b[22..26].copy_from_slice(&(samples as u32).to_be_bytes());
    let understated = dir.path().join("understated.flac");
    std::fs::write(&understated, b).expect("write flac");
    let (code, body) = server.curl(&["-F", &format!("file=@{}", utf8(&understated)), "/upload"]);
    assert_eq!(code, 422, "{body}");
    assert!(body.contains("longer than this server takes (1 minutes)"), "{body}");
    let short = dir.path().join("short.flac");
    stemroom_testkit::ffmpeg(&["-f", "lavfi", "-i", "anullsrc=r=44100:cl=stereo", "-t", "59", utf8(&short)]);
    let (code, body) = server.curl(&["-F", &format!("file=@{}", utf8(&short)), "/upload"]);
    assert_eq!(code, 200, "{body}");
    unstated(&short);
    let (code, body) = server.curl(&["-F", &format!("file=@{}", utf8(&short)), "/upload"]);
    assert_eq!(code, 200, "{body}");
}

#[test]
fn a_closed_terminal_stops_the_server_unless_it_runs_under_nohup() {
    let dir = tempfile::tempdir().expect("tempdir");
    let hup = |server: &Server| {
        let st = Command::new("kill").args(["-HUP", &server.child.id().to_string()]).status().expect("kill");
        assert!(st.success());
    };
    let mut nohup = Command::new("nohup");
    nohup.arg(env!("CARGO_BIN_EXE_stemroom"));
    let server = Server::start_with(nohup, &dir.path().join("a"), &[]);
    hup(&server);
    std::thread::sleep(Duration::from_secs(1));
    assert_eq!(server.curl_raw(&["/health".into()]).0, 200, "under nohup SIGHUP is ignored");
    drop(server);
    // Without nohup, SIGHUP is a graceful stop.
    let mut server = Server::start(&dir.path().join("b"), &[]);
    hup(&server);
    let deadline = Instant::now() + Duration::from_secs(20);
    let status = loop {
        if let Some(status) = server.child.try_wait().expect("wait") {
            break status;
        }
        assert!(Instant::now() < deadline, "SIGHUP stops the server");
        std::thread::sleep(Duration::from_millis(100));
    };
    assert!(status.success(), "{status:?}");
}

#[test]
fn the_device_is_the_saved_settings_unless_given() {
    // The app's Settings chose the CPU for this data folder.
    let dir = tempfile::tempdir().expect("tempdir");
    let data = dir.path().join("data");
    std::fs::create_dir_all(&data).expect("mkdir");
    {
        let queue = stemroom_library::queue::Queue::open(&data.join("stemroom.sqlite")).expect("queue");
        let mut settings = queue.settings().expect("settings");
        settings.device = stemroom_engine::units::Device::Cpu;
        queue.save_settings(&settings).expect("save");
    }
    let server = Server::start(&data, &[]);
    assert_eq!(server.json(&["/status"])["device"], "cpu", "the saved device");
    drop(server);
    let server = Server::start(&data, &["--device", "auto"]);
    assert_eq!(server.json(&["/status"])["device"], "auto", "the flag wins");
}

#[test]
fn a_second_interrupt_while_the_stop_drains_exits_at_once() {
    use std::io::Write;
    let dir = tempfile::tempdir().expect("tempdir");
    let mut server = Server::start(&dir.path().join("data"), &["--idle-timeout", "60"]);
    // An upload in flight, sending slowly: the graceful stop waits for it
    // (10 s at most).
    let addr = server.base.trim_start_matches("http://").to_string();
    let mut up = std::net::TcpStream::connect(&addr).expect("connect");
    let head = format!(
        "POST /upload HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {}\r\nContent-Type: multipart/form-data; boundary=XyZ\r\nContent-Length: 100000\r\n\r\n--XyZ\r\nContent-Disposition: form-data; name=\"file\"; filename=\"a.wav\"\r\n\r\nRIFF",
        server.token
    );
    up.write_all(head.as_bytes()).expect("write");
    std::thread::sleep(Duration::from_millis(500));
    let int = |server: &Server| {
        let st = Command::new("kill").args(["-INT", &server.pid().to_string()]).status().expect("kill");
        assert!(st.success());
    };
    int(&server);
    std::thread::sleep(Duration::from_millis(1500));
    assert!(server.child.try_wait().expect("wait").is_none(), "the first Ctrl-C waits for the upload");
    // Asked again after a while: now.
    int(&server);
    let t0 = Instant::now();
    let status = loop {
        if let Some(status) = server.child.try_wait().expect("wait") {
            break status;
        }
        assert!(t0.elapsed() < Duration::from_secs(5), "a second Ctrl-C ends the server at once");
        std::thread::sleep(Duration::from_millis(50));
    };
    assert_eq!(status.code(), Some(130), "{status:?}");
    drop(up);
    // The next start finds the folder free and whole.
    let again = Server::start(&dir.path().join("data"), &[]);
    assert_eq!(again.curl_raw(&["/health".into()]).0, 200);
}

// ---- readme ----

#[test]
fn the_readme_curl_lines_work_as_written() {
    let readme = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/../../README.md")).expect("README");
    let start = readme.find("<!-- serve-curl -->").expect("README marks its curl lines with <!-- serve-curl -->");
    let block = &readme[start..];
    let block = &block[block.find("```sh\n").expect("a sh block") + 6..];
    let script = &block[..block.find("```").expect("end of block")];
    let dir = tempfile::tempdir().expect("tempdir");
    let server = Server::start(&dir.path().join("data"), &["--allow-private-links"]);
    let site = stemroom_testkit::site::Server::start();
    std::fs::copy(testdata("mixture.wav"), dir.path().join("song.wav")).expect("copy");
    let host = server.base.trim_start_matches("http://").to_string();
    let o = Command::new("bash")
        .args(["-euo", "pipefail", "-c", script])
        .current_dir(dir.path())
        .env("HOST", &host)
        .env("LINK", site.url("/watch.html"))
        .env("TOKEN", &server.token)
        .output()
        .expect("bash");
    eprintln!("{}\n{}", String::from_utf8_lossy(&o.stdout), String::from_utf8_lossy(&o.stderr));
    assert!(o.status.success(), "the README's curl lines failed");
    assert!(dir.path().join("stems.zip").is_file() && dir.path().join("vocals.wav").is_file());
}

/// A synchronous `/separate` whose job fails answers why and keeps nothing
/// (no job the client cannot name, no upload on disk); `/status` says what
/// is wrong with the model without the server's paths.
#[test]
fn a_failed_separate_keeps_nothing_and_status_names_no_paths() {
    let dir = tempfile::tempdir().expect("tempdir");
    let data = dir.path().join("data");
    let models = dir.path().join("models");
    std::fs::create_dir_all(&models).expect("mkdir");
    std::fs::write(models.join("htdemucs.onnx"), b"not a model").expect("write");
    let server = Server::start(&data, &["--model-dir", utf8(&models)]);
    let status = server.json(&["/status"]);
    let problem = status["models_problem"].as_str().unwrap_or_default();
    assert!(!problem.contains(utf8(dir.path())), "{status}");
    // The job fails at its start (the model given is damaged).
    let small = dir.path().join("small.flac");
    stemroom_testkit::ffmpeg(&["-i", utf8(&testdata("mixture.wav")), "-t", "0.5", utf8(&small)]);
    let (code, body) = server.curl(&["-F", &format!("audio_file=@{}", utf8(&small)), "/separate"]);
    assert_eq!(code, 503, "{body}");
    assert!(body.contains("missing_model") && body.contains("the server's model folder"), "{body}");
    assert!(!body.contains(utf8(dir.path())), "{body}");
    assert_eq!(server.json(&["/jobs"])["total"], 0);
    assert!(files_in(&data.join("uploads")).is_empty(), "{:?}", files_in(&data.join("uploads")));
    assert!(server.stop("TERM").success());

    // A FLAC whose header is whole (0.5 s) and whose frames are noise: it
    // passes the upload's probe, and its job fails decoding it.
    let data = dir.path().join("data2");
    let server = Server::start(&data, &[]);
    let flac = std::fs::read(&small).expect("read");
    let mut end = 4;
    loop {
        let last = flac[end] & 0x80 != 0;
        let length = usize::from(flac[end + 1]) << 16 | usize::from(flac[end + 2]) << 8 | usize::from(flac[end + 3]);
        end += 4 + length;
        if last {
            break;
        }
    }
    let mut junk = flac[..end].to_vec();
    let mut x: u32 = 0x9e37_79b9;
    junk.extend((0..60_000).map(|_| {
        x ^= x << 13;
        x ^= x >> 17;
        x ^= x << 5;
        x as u8
    }));
    let junk_path = dir.path().join("junk.flac");
    std::fs::write(&junk_path, &junk).expect("write");
    let (code, body) = server.curl(&["-F", &format!("audio_file=@{}", utf8(&junk_path)), "/separate"]);
    assert_eq!(code, 415, "{body}");
    assert!(body.contains("no audio"), "{body}");
    assert!(!body.contains(utf8(dir.path())), "{body}");
    assert_eq!(server.json(&["/jobs"])["total"], 0);
    assert!(files_in(&data.join("uploads")).is_empty(), "{:?}", files_in(&data.join("uploads")));
}

/// A server whose database is damaged between two runs (here: no longer a
/// database at all) starts anyway: the old file is set aside whole, and the
/// song separated before is filed again from its folder under its job id,
/// so a client holding the id still gets its stems.
#[test]
fn a_damaged_database_is_set_aside_and_finished_jobs_stay_downloadable() {
    let dir = tempfile::tempdir().expect("tempdir");
    let data = dir.path().join("data");
    let server = Server::start(&data, &[]);
    let small = dir.path().join("small.flac");
    stemroom_testkit::ffmpeg(&["-i", utf8(&testdata("mixture.wav")), "-t", "0.5", utf8(&small)]);
    let id = server.upload(&small, &[]);
    server.wait_completed(&id);
    let zip = dir.path().join("before.zip");
    assert_eq!(server.curl(&["-o", utf8(&zip), &format!("/download/{id}")]).0, 200);
    let before = unzip(&zip, &dir.path().join("before"));
    assert!(server.stop("TERM").success());

    let db = data.join("stemroom.sqlite");
    let garbage: Vec<u8> = (0..20_000u32).map(|i| (i.wrapping_mul(2_654_435_761) >> 24) as u8).collect();
    std::fs::write(&db, &garbage).expect("damage the database");
    // (Its log too: pages in it would be read over the damage.)
    for log in ["stemroom.sqlite-wal", "stemroom.sqlite-shm"] {
        let _ = std::fs::remove_file(data.join(log));
    }
    let server = Server::start(&data, &[]);
    let aside: Vec<String> =
        files_in(&data).into_iter().filter(|n| n.starts_with("stemroom.sqlite.damaged-")).collect();
    assert_eq!(aside.len(), 1, "{:?}", files_in(&data));
    assert_eq!(std::fs::read(data.join(&aside[0])).expect("read"), garbage, "kept whole");
    let status = server.json(&[&format!("/status/{id}")]);
    assert_eq!(status["status"], "completed", "{status}");
    assert_eq!(server.json(&["/jobs"])["total"], 1);
    let zip = dir.path().join("after.zip");
    assert_eq!(server.curl(&["-o", utf8(&zip), &format!("/download/{id}")]).0, 200);
    assert_eq!(unzip(&zip, &dir.path().join("after")), before);
    for stem in &before {
        let read = |d: &str| std::fs::read(dir.path().join(d).join(stem)).expect("stem");
        assert_eq!(read("after"), read("before"), "{stem}");
    }
    // New jobs take new ids.
    let next = server.upload(&small, &[]);
    assert_ne!(next, id);
    server.wait_completed(&next);
}

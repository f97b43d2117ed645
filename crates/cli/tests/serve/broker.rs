//! `stemroom serve --broker` with `stemroom worker`s: a real `redis-server`
//! started here on a loopback port (AOF on), the real server and worker
//! binaries, the real model.

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use serde_json::Value;
use stemroom_testkit::{read_wav, sdr};

use super::{files_in, Server};
use crate::{testdata, utf8, STEMS};

/// A redis-server of our own.
struct Redis {
    child: Child,
    port: u16,
    dir: PathBuf,
    password: Option<String>,
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0").expect("bind").local_addr().expect("addr").port()
}

impl Redis {
    /// `password`: Redis AUTH (`requirepass`).
    fn start(dir: &Path, port: u16, password: Option<&str>) -> Redis {
        Redis::start_with(dir, port, password, &[])
    }

    /// [`Redis::start`] with more of its configuration (`--rename-command
    /// INFO ""`, as some managed services do).
    fn start_with(dir: &Path, port: u16, password: Option<&str>, extra: &[&str]) -> Redis {
        std::fs::create_dir_all(dir).expect("mkdir");
        let mut cmd = Command::new("redis-server");
        cmd.args(["--port", &port.to_string(), "--bind", "127.0.0.1", "--dir", utf8(dir)]).args([
            "--appendonly",
            "yes",
            "--appendfsync",
            "always",
            "--save",
            "",
        ]);
        if let Some(pw) = password {
            cmd.args(["--requirepass", pw]);
        }
        cmd.args(extra);
        let child =
            cmd.stdout(Stdio::null()).spawn().expect("redis-server (scripts/install-system-deps.sh installs it)");
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            let mut ping = Command::new("redis-cli");
            ping.args(["-p", &port.to_string()]);
            if let Some(pw) = password {
                ping.env("REDISCLI_AUTH", pw);
            }
            let pong = ping.arg("ping").output();
            if pong.is_ok_and(|o| String::from_utf8_lossy(&o.stdout).trim() == "PONG") {
                break;
            }
            assert!(Instant::now() < deadline, "redis-server did not start");
            std::thread::sleep(Duration::from_millis(50));
        }
        Redis { child, port, dir: dir.to_path_buf(), password: password.map(str::to_string) }
    }

    fn url(&self) -> String {
        match &self.password {
            Some(pw) => format!("redis://:{pw}@127.0.0.1:{}/0", self.port),
            None => format!("redis://127.0.0.1:{}/0", self.port),
        }
    }

    /// Stop it (SIGTERM: it writes its AOF) and wait.
    fn stop(mut self) -> (u16, PathBuf, Option<String>) {
        let _ = Command::new("kill").args(["-TERM", &self.child.id().to_string()]).status();
        let _ = self.child.wait();
        (self.port, self.dir.clone(), self.password.clone())
    }
}

impl Drop for Redis {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A `stemroom worker` whose log goes to `log`.
fn worker(server: &Server, broker: &str, name: &str, token: &str, log: &Path) -> Child {
    worker_at(&server.base, broker, name, token, log, &["--visibility-timeout", "3"])
}

/// A `stemroom worker` of the server at `base`, with `extra` options.
fn worker_at(base: &str, broker: &str, name: &str, token: &str, log: &Path, extra: &[&str]) -> Child {
    Command::new(env!("CARGO_BIN_EXE_stemroom"))
        .args(["worker", "--server", base, "--token", token, "--broker", broker, "--name", name])
        .args(["-d", "cpu", "--threads", "1"])
        .args(extra)
        .env("STEMROOM_LOG", "info,ort=warn")
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(log).expect("log"))
        .spawn()
        .expect("start stemroom worker")
}

fn stop_child(mut c: Child) {
    let _ = c.kill();
    let _ = c.wait();
}

fn jobs_done_by(log: &Path) -> Vec<String> {
    std::fs::read_to_string(log)
        .unwrap_or_default()
        .lines()
        .filter_map(|l| l.split("job ").nth(1).filter(|r| r.contains(" done in ")))
        .map(|r| r.split(' ').next().unwrap_or("").to_string())
        .collect()
}

fn wait_all(server: &Server, ids: &[String], within: Duration) -> Vec<Value> {
    let deadline = Instant::now() + within;
    loop {
        let all: Vec<Value> = ids.iter().map(|id| server.json(&[&format!("/status/{id}")])).collect();
        if all.iter().all(|v| v["status"] != "pending" && v["status"] != "processing") {
            return all;
        }
        assert!(
            Instant::now() < deadline,
            "jobs not finished: {:?}",
            all.iter().map(|v| &v["status"]).collect::<Vec<_>>()
        );
        std::thread::sleep(Duration::from_millis(250));
    }
}

#[test]
fn two_workers_share_the_queue_once_each_and_a_corrupt_input_fails_once() {
    let dir = tempfile::tempdir().expect("tempdir");
    let redis = Redis::start(&dir.path().join("redis"), free_port(), None);
    let data = dir.path().join("data");
    let server = Server::start(&data, &["--broker", &redis.url()]);
    let mix = testdata("mixture.wav");

    // A worker with a wrong token is refused and says so; the --work-dir it
    // was given (a folder of the user's) is left as it was.
    let mine = dir.path().join("my-scratch");
    std::fs::create_dir(&mine).expect("mkdir");
    std::fs::write(mine.join("notes.txt"), "mine").expect("write");
    let o = Command::new(env!("CARGO_BIN_EXE_stemroom"))
        .args(["worker", "--server", &server.base, "--token", "wrong", "--broker", &redis.url()])
        .args(["--work-dir", utf8(&mine)])
        .output()
        .expect("worker");
    assert!(!o.status.success());
    assert!(String::from_utf8_lossy(&o.stderr).contains("refused the token"), "{}", String::from_utf8_lossy(&o.stderr));
    assert_eq!(std::fs::read_to_string(mine.join("notes.txt")).expect("kept"), "mine");
    // A name the server would not take is refused before anything starts.
    let o = Command::new(env!("CARGO_BIN_EXE_stemroom"))
        .args(["worker", "--server", &server.base, "--token", &worker_token(&server), "--broker", &redis.url()])
        .args(["--name", &"w".repeat(65)])
        .output()
        .expect("worker");
    assert_eq!(o.status.code(), Some(2), "{}", String::from_utf8_lossy(&o.stderr));
    // Each token opens its own routes only: a client cannot act as a
    // worker, a worker machine cannot list or delete songs.
    let beat = r#"{"worker": "worker-a", "device": "cpu", "provider": null, "job": null}"#;
    let as_worker = ["-X", "POST", "-H", "Content-Type: application/json", "-d", beat, "/worker/heartbeat"];
    let (code, body) = server.curl(&as_worker);
    assert_eq!(code, 401, "the clients' token is refused on worker routes: {body}");
    assert!(body.contains("worker-token"), "{body}");
    assert_eq!(server.curl_as(&worker_token(&server), &as_worker).0, 200);
    assert_eq!(
        server.curl_as(&worker_token(&server), &["/jobs"]).0,
        401,
        "the workers' token is refused on client routes"
    );

    // Six songs, and one whose file is damaged on the server before any
    // worker reads it.
    let mut ids: Vec<String> = (0..6).map(|_| server.upload(&mix, &["shifts=0"])).collect();
    let corrupt = server.upload(&mix, &["shifts=0"]);
    let victim = data.join("uploads").join(newest_upload(&data));
    std::fs::write(&victim, b"RIFF\x00\x00\x00\x00WAVEjunkjunkjunk").expect("damage");
    // And one whose file is gone before any worker reads it: it fails
    // (it used to stay "running" for ever, its entry acked).
    let gone = server.upload(&mix, &["shifts=0"]);
    std::fs::remove_file(data.join("uploads").join(newest_upload(&data))).expect("remove");
    let st = server.json(&["/status"]);
    assert_eq!(st["queue_length"], 8, "{st}");
    assert!(st["broker"].as_str().is_some_and(|b| b.starts_with("redis://")), "{st}");

    let (log_a, log_b) = (dir.path().join("a.log"), dir.path().join("b.log"));
    let a = worker(&server, &redis.url(), "worker-a", &worker_token(&server), &log_a);
    let b = worker(&server, &redis.url(), "worker-b", &worker_token(&server), &log_b);
    ids.push(corrupt.clone());
    ids.push(gone.clone());
    let done = wait_all(&server, &ids, Duration::from_secs(600));
    let st = server.json(&["/status"]);
    stop_child(a);
    stop_child(b);

    let failed = done.iter().find(|v| v["job_id"] == corrupt.as_str()).expect("corrupt job");
    assert_eq!(failed["status"], "failed", "{failed}");
    assert!(failed["error"].as_str().is_some_and(|e| e.contains("could not be read as audio")), "{failed}");
    let lost = done.iter().find(|v| v["job_id"] == gone.as_str()).expect("gone job");
    assert_eq!(lost["status"], "failed", "{lost}");
    assert!(lost["error"].as_str().is_some_and(|e| e.contains("is gone")), "{lost}");
    for v in done.iter().filter(|v| v["job_id"] != corrupt.as_str() && v["job_id"] != gone.as_str()) {
        assert_eq!(v["status"], "completed", "{v}");
        // Tempo and key found by the server when a worker's stems came in
        // (Falcon 69: 117.7 BPM, G♯ minor from the model's stems).
        assert!(v["bpm"].as_f64().is_some_and(|b| (b - 117.6).abs() <= 2.0), "{v}");
        assert!(v["key"].as_str().is_some_and(|k| k.ends_with("minor") || k.ends_with("major")), "{v}");
    }
    // Each job ran once, on one of the two; both took some.
    let (by_a, by_b) = (jobs_done_by(&log_a), jobs_done_by(&log_b));
    // The job's status names the worker that ran it.
    for v in done.iter().filter(|v| v["status"] == "completed") {
        let id = v["job_id"].as_str().expect("id").to_string();
        let expected = if by_a.contains(&id) { "worker-a" } else { "worker-b" };
        assert_eq!(v["worker"], expected, "{v}");
    }
    eprintln!("worker-a did {by_a:?}, worker-b did {by_b:?}");
    assert_eq!(by_a.len() + by_b.len(), 6, "each job once: {by_a:?} {by_b:?}");
    assert!(!by_a.is_empty() && !by_b.is_empty(), "both workers took jobs");
    let claims =
        |log: &Path| std::fs::read_to_string(log).unwrap_or_default().matches(&format!("job {corrupt} \"")).count();
    assert_eq!(claims(&log_a) + claims(&log_b), 1, "the corrupt job was tried once");
    // Done entries are deleted: the stream does not grow by one per job.
    let deadline = Instant::now() + Duration::from_secs(10);
    while redis_cli(&redis, &["XLEN", "stemroom:jobs"]) != ["0"] {
        assert!(Instant::now() < deadline, "entries left: {:?}", redis_cli(&redis, &["XLEN", "stemroom:jobs"]));
        std::thread::sleep(Duration::from_millis(100));
    }
    let library: Vec<String> = files_in(&data.join("library"));
    assert_eq!(library.len(), 6, "{library:?}");
    // The workers as the server lists them.
    let names: Vec<&str> =
        st["workers"].as_array().expect("workers").iter().filter_map(|w| w["name"].as_str()).collect();
    assert_eq!(names, ["worker-a", "worker-b"], "{st}");
    assert!(st["workers"].as_array().expect("workers").iter().all(|w| w["device"] == "cpu" && w["gone"] == false));

    // The stems are the CLI's.
    let cli = dir.path().join("cli");
    let o = Command::new(env!("CARGO_BIN_EXE_stemroom"))
        .args(["separate", "--shifts", "0", "-d", "cpu", "-o", utf8(&cli), utf8(&mix)])
        .output()
        .expect("cli");
    assert!(o.status.success());
    let zip = dir.path().join("one.zip");
    assert_eq!(server.curl(&["-o", utf8(&zip), &format!("/download/{}", ids[0])]).0, 200);
    let got = super::unzip(&zip, &dir.path().join("one"));
    assert_eq!(got, ["bass.wav", "drums.wav", "other.wav", "vocals.wav"]);
    for stem in STEMS {
        let (ours, _) = read_wav(&dir.path().join("one").join(format!("{stem}.wav")));
        let (theirs, _) = read_wav(&cli.join(format!("htdemucs/mixture/{stem}.wav")));
        let match_db = sdr(&theirs, &ours, 1);
        assert!(match_db > 60.0, "{stem}: worker vs CLI {match_db:.1} dB");
    }
}

/// The upload file of the newest job.
fn newest_upload(data: &Path) -> String {
    let dir = data.join("uploads");
    let mut files: Vec<(std::time::SystemTime, String)> = std::fs::read_dir(&dir)
        .expect("uploads")
        .flatten()
        .filter(|e| e.file_type().is_ok_and(|t| t.is_file()))
        .filter_map(|e| Some((e.metadata().ok()?.modified().ok()?, e.file_name().to_string_lossy().into_owned())))
        .collect();
    files.sort();
    files.last().map(|f| f.1.clone()).unwrap_or_default()
}

#[test]
fn a_killed_worker_and_a_restarted_broker_lose_nothing() {
    let dir = tempfile::tempdir().expect("tempdir");
    // Redis with AUTH: the password travels in the URL, and is not printed.
    let redis = Redis::start(&dir.path().join("redis"), free_port(), Some("s3cret-pw"));
    let url = redis.url();
    let data = dir.path().join("data");
    let server = Server::start(&data, &["--broker", &url, "--allow-private-links"]);
    let mix = testdata("mixture.wav");
    let first: Vec<String> = (0..2).map(|_| server.upload(&mix, &["shifts=0"])).collect();

    // Worker A dies mid-job (kill -9); worker B takes its job over after
    // the visibility timeout.
    let a = worker(&server, &url, "worker-a", &worker_token(&server), &dir.path().join("a.log"));
    server.wait(&first[0], Duration::from_secs(120), |v| v["stage"] == "separating");
    stop_child(a);
    let log_b = dir.path().join("b.log");
    let b = worker(&server, &url, "worker-b", &worker_token(&server), &log_b);
    let done = wait_all(&server, &first, Duration::from_secs(300));
    assert!(done.iter().all(|v| v["status"] == "completed"), "{done:?}");
    let by_b = jobs_done_by(&log_b);
    assert!(by_b.contains(&first[0]), "worker-b finished the killed worker's job: {by_b:?}");

    // Redis restarts while a job runs: the worker and the server reconnect.
    let more: Vec<String> = (0..2).map(|_| server.upload(&mix, &["shifts=0"])).collect();
    server.wait(&more[0], Duration::from_secs(120), |v| v["stage"] == "separating");
    let (port, redis_dir, password) = redis.stop();
    std::thread::sleep(Duration::from_secs(2));
    let _redis = Redis::start(&redis_dir, port, password.as_deref());
    let done = wait_all(&server, &more, Duration::from_secs(300));
    assert!(done.iter().all(|v| v["status"] == "completed"), "{done:?}");
    // Deleting a running job stops its worker within a segment or so.
    let doomed = server.upload(&mix, &["shifts=0"]);
    server.wait(&doomed, Duration::from_secs(120), |v| v["stage"] == "separating");
    let v = server.json(&["-X", "DELETE", &format!("/job/{doomed}")]);
    assert_eq!(v["was_running"], true, "{v}");
    let deadline = Instant::now() + Duration::from_secs(30);
    let stopped = format!("job {doomed} stopped: cancelled or deleted on the server");
    while !std::fs::read_to_string(&log_b).unwrap_or_default().contains(&stopped) {
        assert!(Instant::now() < deadline, "the worker did not hear of the delete");
        std::thread::sleep(Duration::from_millis(100));
    }
    // A /separate client that goes away while a worker runs its job: the
    // job is cancelled on the server and the worker hears so (it went on
    // separating for nobody).
    let mut client = Command::new("curl")
        .args(["-sS", "-o", "/dev/null", "-H", &format!("Authorization: Bearer {}", server.token)])
        .args(["-F", &format!("file=@{}", utf8(&mix)), "-F", "shifts=0", &format!("{}/separate", server.base)])
        .spawn()
        .expect("curl /separate");
    let deadline = Instant::now() + Duration::from_secs(120);
    let gone = loop {
        let newest = server.json(&["/jobs?per_page=1"]);
        let job = &newest["jobs"][0];
        if job["stage"] == "separating" && job["job_id"] != doomed.as_str() {
            break job["job_id"].as_str().expect("job_id").to_string();
        }
        assert!(Instant::now() < deadline, "the /separate job never ran: {newest}");
        std::thread::sleep(Duration::from_millis(200));
    };
    let _ = client.kill();
    let _ = client.wait();
    server.wait(&gone, Duration::from_secs(30), |v| v["status"] == "cancelled");
    let stopped = format!("job {gone} stopped: cancelled or deleted on the server");
    let deadline = Instant::now() + Duration::from_secs(30);
    while !std::fs::read_to_string(&log_b).unwrap_or_default().contains(&stopped) {
        assert!(Instant::now() < deadline, "the worker did not hear of the cancel");
        std::thread::sleep(Duration::from_millis(100));
    }
    // A link: the worker fetches it with its own yt-dlp, within the
    // server's download limits, its progress reaching the server.
    let site = stemroom_testkit::site::Server::start();
    let v = server.json(&["-F", &format!("url={}", site.url("/song.wav")), "-F", "shifts=0", "/job"]);
    let link = v["job_id"].as_str().expect("job_id").to_string();
    let done = wait_all(&server, std::slice::from_ref(&link), Duration::from_secs(300));
    assert_eq!(done[0]["status"], "completed", "{done:?}");
    assert!(jobs_done_by(&log_b).contains(&link), "the worker ran the link job");
    stop_child(b);
    let library = files_in(&data.join("library"));
    assert_eq!(library.len(), 5, "each job once in the library: {library:?}");
    assert_eq!(server.json(&["/jobs"])["total"], 6, "five songs and the cancelled /separate job");
    let st = server.json(&["/status"]);
    let workers = st["workers"].as_array().expect("workers");
    assert!(workers.iter().any(|w| w["name"] == "worker-a"), "{st}");
    assert!(!st.to_string().contains("s3cret-pw"), "the broker password is not shown: {st}");
    assert!(!std::fs::read_to_string(&log_b).unwrap_or_default().contains("s3cret-pw"), "nor logged");
}

/// The server's workers' token.
fn worker_token(server: &Server) -> String {
    std::fs::read_to_string(server.data.join("worker-token")).expect("worker-token").trim().to_string()
}

/// `redis-cli` against `redis`, returning its output lines.
fn redis_cli(redis: &Redis, args: &[&str]) -> Vec<String> {
    let out = Command::new("redis-cli").args(["-p", &redis.port.to_string()]).args(args).output().expect("redis-cli");
    String::from_utf8_lossy(&out.stdout).lines().map(str::to_string).collect()
}

/// Wait until `log` holds `text`.
/// A redis-server of our own and `stemroom serve --broker` on it (with
/// `extra` options): the broker, its URL, the server's data folder, the server.
fn broker_setup(dir: &Path, extra: &[&str]) -> (Redis, String, PathBuf, Server) {
    let redis = Redis::start(&dir.join("redis"), free_port(), None);
    let url = redis.url();
    let data = dir.join("data");
    let mut args = vec!["--broker", url.as_str()];
    args.extend_from_slice(extra);
    let server = Server::start(&data, &args);
    (redis, url, data, server)
}

/// Wait `within` for the job stream to hold `n` entries.
fn stream_holds(redis: &Redis, n: &str, within: Duration) {
    let deadline = Instant::now() + within;
    while redis_cli(redis, &["XLEN", "stemroom:jobs"]) != [n] {
        assert!(Instant::now() < deadline, "the stream never held {n} entries");
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// The next stream entry read by consumer `name` of the workers' group (as
/// a worker reads it), waiting up to 30 s for one.
fn read_entry(redis: &Redis, name: &str) -> String {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let read = redis_cli(
            redis,
            &["XREADGROUP", "GROUP", "stemroom-workers", name, "COUNT", "1", "STREAMS", "stemroom:jobs", ">"],
        );
        if let Some(m) = read.iter().find(|l| l.contains('-') && l.chars().next().is_some_and(|c| c.is_ascii_digit())) {
            return m.clone();
        }
        assert!(Instant::now() < deadline, "the job never reached the stream: {read:?}");
        std::thread::sleep(Duration::from_millis(200));
    }
}

fn wait_log(log: &Path, text: &str, within: Duration) {
    let deadline = Instant::now() + within;
    while !std::fs::read_to_string(log).unwrap_or_default().contains(text) {
        assert!(Instant::now() < deadline, "{} never said {text:?}", log.display());
        std::thread::sleep(Duration::from_millis(100));
    }
}

#[test]
fn a_worker_that_hangs_while_its_heartbeat_keeps_the_entry_loses_the_job_to_the_server_watchdog() {
    let dir = tempfile::tempdir().expect("tempdir");
    let redis = Redis::start(&dir.path().join("redis"), free_port(), None);
    let url = redis.url();
    let data = dir.path().join("data");
    // Above the healthy worker's longest silence here (its model load,
    // then one segment on one thread), which a shorter timeout would cut.
    let server = Server::start(&data, &["--broker", &url, "--stall-timeout", "30"]);
    let results = data.join("uploads").join("results");
    std::fs::create_dir_all(results.join("77-1700000000000_0")).expect("mkdir");
    std::fs::write(results.join("77-1700000000000_0/vocals.wav"), b"left by a dead run").expect("write");
    // Two passes (shifts=1): long enough to call while it runs.
    let id = server.upload(&testdata("mixture.wav"), &["shifts=1"]);

    // A worker that claims the job, stages a stem, and then hangs: its
    // heartbeat thread still keeps the entry fresh, so no other worker can
    // take it over through the broker.
    let message = read_entry(&redis, "hung");
    let holder = format!(r#"{{"message": "{message}", "worker": "hung"}}"#);
    let wt = worker_token(&server);
    let (code, body) = server.curl_as(
        &wt,
        &["-X", "POST", "-H", "Content-Type: application/json", "-d", &holder, &format!("/worker/jobs/{id}/claim")],
    );
    assert_eq!(code, 200, "{body}");
    let query = format!("message={message}&worker=hung");
    let (code, body) = server.curl_as(
        &wt,
        &["-X", "PUT", "--data-binary", "partial", &format!("/worker/jobs/{id}/stems/vocals.wav?{query}")],
    );
    assert_eq!(code, 200, "{body}");
    // Named by the entry id in hex.
    let hex: String = message.bytes().map(|b| format!("{b:02x}")).collect();
    let staged = results.join(format!("{id}-{hex}"));
    assert!(staged.join("vocals.wav").is_file(), "the stem is staged in {}", staged.display());
    let keep = Arc::new(AtomicBool::new(true));
    let fresh = {
        let (keep, port, message) = (keep.clone(), redis.port, message.clone());
        std::thread::spawn(move || {
            while keep.load(Ordering::SeqCst) {
                let _ = Command::new("redis-cli")
                    .args([
                        "-p",
                        &port.to_string(),
                        "XCLAIM",
                        "stemroom:jobs",
                        "stemroom-workers",
                        "hung",
                        "0",
                        &message,
                        "JUSTID",
                    ])
                    .output();
                std::thread::sleep(Duration::from_millis(500));
            }
        })
    };

    // The staged stems of no running job go at the watchdog's first round;
    // the hung worker's stay while it holds the job.
    // (The first round comes a quarter of the stall timeout after the
    // start, 7.5 s; two rounds' time on a loaded machine, still well
    // before the hung worker's 30 s stall.)
    let deadline = Instant::now() + Duration::from_secs(20);
    while results.join("77-1700000000000_0").exists() {
        assert!(Instant::now() < deadline, "stale staged stems were not removed");
        std::thread::sleep(Duration::from_millis(100));
    }
    assert!(staged.is_dir(), "the holder's staged stems stay while it holds the job");

    // A healthy worker gets the job once the server gave up on the hung one.
    let log = dir.path().join("healthy.log");
    let healthy = worker(&server, &url, "healthy", &worker_token(&server), &log);
    // While the healthy worker runs it under its own entry, the hung worker
    // comes back: it hears to stop, and that its entry is still its own
    // (not taken over: it acknowledges it).
    let running_on_healthy = |v: &Value| v["worker"] == "healthy" && v["status"] == "processing";
    server.wait(&id, Duration::from_secs(240), running_on_healthy);
    let progress = format!(
        r#"{{"message": "{message}", "worker": "hung", "state": {{"state": "decoding"}}, "percent": 1.0, "eta_seconds": null, "provider": "cpu"}}"#
    );
    let (code, body) = server.curl_as(
        &wt,
        &[
            "-X",
            "POST",
            "-H",
            "Content-Type: application/json",
            "-d",
            &progress,
            &format!("/worker/jobs/{id}/progress"),
        ],
    );
    assert_eq!(code, 200, "{body}");
    let carry: Value = serde_json::from_str(&body).expect("JSON");
    assert_eq!(carry["cancel"], true, "{carry}");
    assert_eq!(carry["taken_over"], false, "{carry}");
    let (code, body) = server
        .curl_as(&wt, &["-X", "PUT", "--data-binary", "late", &format!("/worker/jobs/{id}/stems/vocals.wav?{query}")]);
    assert_eq!(code, 409, "{body}");
    assert!(!body.contains("taken_over"), "{body}");
    let now = server.json(&[&format!("/status/{id}")]);
    assert!(running_on_healthy(&now), "the calls came while the healthy worker ran it: {now}");
    let done = wait_all(&server, std::slice::from_ref(&id), Duration::from_secs(240));
    assert_eq!(done[0]["status"], "completed", "{done:?}");
    assert!(jobs_done_by(&log).contains(&id), "the healthy worker finished it");
    assert!(!staged.exists(), "the hung worker's staged stem went with its hold");
    keep.store(false, Ordering::SeqCst);
    let _ = fresh.join();
    stop_child(healthy);
    let all = server.json(&["/jobs"]);
    assert_eq!(all["total"], 1, "{all}");
}

/// A worker that starts while its server is down (a reboot, started first)
/// keeps asking instead of exiting as if its options were wrong, and a
/// stop meanwhile is a clean exit; an address that is not http(s) is a bad
/// option (exit 2).
#[test]
fn a_worker_waits_for_a_server_that_is_not_up_yet() {
    let dir = tempfile::tempdir().expect("tempdir");
    let log = dir.path().join("w.log");
    let down = format!("http://127.0.0.1:{}", free_port());
    let mut w = worker_at(&down, "redis://127.0.0.1:1/0", "early", "token", &log, &[]);
    std::thread::sleep(Duration::from_secs(4));
    assert!(
        w.try_wait().expect("wait").is_none(),
        "still waiting: {}",
        std::fs::read_to_string(&log).unwrap_or_default()
    );
    assert!(std::fs::read_to_string(&log).unwrap_or_default().contains("does not answer"));
    let t0 = Instant::now();
    assert!(Command::new("kill").args(["-TERM", &w.id().to_string()]).status().expect("kill").success());
    assert_eq!(w.wait().expect("wait").code(), Some(0));
    assert!(t0.elapsed() < Duration::from_secs(3), "stopped in {:?}", t0.elapsed());
    let o = Command::new(env!("CARGO_BIN_EXE_stemroom"))
        .args(["worker", "--server", "ftp://127.0.0.1/", "--token", "t", "--broker", "redis://127.0.0.1:1/0"])
        .output()
        .expect("worker");
    assert_eq!(o.status.code(), Some(2), "{}", String::from_utf8_lossy(&o.stderr));
    assert!(String::from_utf8_lossy(&o.stderr).contains("not an http"), "{}", String::from_utf8_lossy(&o.stderr));
}

/// A worker whose broker is away waits between tries with a growing pause
/// (up to 10 s), and a stop (SIGTERM) ends that wait at once.
#[test]
fn a_worker_waiting_for_its_broker_stops_at_once() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (_redis, _url, _data, server) = broker_setup(dir.path(), &[]);
    let log = dir.path().join("w.log");
    let away = format!("redis://127.0.0.1:{}/0", free_port());
    let mut w = worker(&server, &away, "patient", &worker_token(&server), &log);
    wait_log(&log, "retrying in 10.0 s", Duration::from_secs(60));
    let t0 = Instant::now();
    assert!(Command::new("kill").args(["-TERM", &w.id().to_string()]).status().expect("kill").success());
    assert_eq!(w.wait().expect("wait").code(), Some(0));
    assert!(t0.elapsed() < Duration::from_secs(3), "stopped in {:?}", t0.elapsed());
}

/// A worker stopped on purpose (SIGTERM: a deploy, a reclaimed spot
/// machine) hands its job back without using up an attempt: with
/// `--max-attempts 1` the next worker still runs it.
#[test]
fn a_worker_stopped_mid_job_does_not_use_up_an_attempt() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (redis, url, _data, server) = broker_setup(dir.path(), &["--max-attempts", "1"]);
    let id = server.upload(&testdata("mixture.wav"), &["shifts=2"]);
    let log_a = dir.path().join("a.log");
    let mut a = worker(&server, &url, "first", &worker_token(&server), &log_a);
    server.wait(&id, Duration::from_secs(120), |v| v["status"] == "processing" && v["progress"].as_f64() > Some(0.0));
    let consumers = || redis_cli(&redis, &["XINFO", "CONSUMERS", "stemroom:jobs", "stemroom-workers"]);
    assert!(consumers().iter().any(|l| l == "first"), "in the group while it works: {:?}", consumers());
    let term = Command::new("kill").args(["-TERM", &a.id().to_string()]).status().expect("kill");
    assert!(term.success());
    let exit = a.wait().expect("wait");
    assert_eq!(exit.code(), Some(0), "a graceful stop");
    // Its job handed back, it leaves the consumer group (Redis keeps a
    // consumer for good otherwise: one per worker start).
    assert!(!consumers().iter().any(|l| l == "first"), "left the group: {:?}", consumers());
    let queued = server.json(&[&format!("/status/{id}")]);
    assert_eq!(queued["status"], "pending", "back in the queue: {queued}");
    let log_b = dir.path().join("b.log");
    let b = worker(&server, &url, "second", &worker_token(&server), &log_b);
    let done = wait_all(&server, std::slice::from_ref(&id), Duration::from_secs(240));
    assert_eq!(done[0]["status"], "completed", "{done:?}");
    assert!(jobs_done_by(&log_b).contains(&id), "the second worker ran it");
    stop_child(b);
}

/// A worker whose ONNX Runtime is found but fails to load (here not a
/// shared object at all) gives its job back without using up an attempt
/// and stops, saying why (exit 5): a process loads ONNX Runtime once, and
/// it failed every job it took, each an attempt used.
#[test]
fn a_worker_whose_runtime_fails_to_load_gives_its_job_back_and_stops() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (_redis, url, _data, server) = broker_setup(dir.path(), &["--max-attempts", "1"]);
    let id = server.upload(&testdata("mixture.wav"), &["shifts=0"]);
    let damaged = dir.path().join("libonnxruntime.so");
    std::fs::write(&damaged, b"not a shared object").expect("write");
    let log = dir.path().join("w.log");
    let extra = ["--visibility-timeout", "3", "--ort-lib", utf8(&damaged)];
    let mut w = worker_at(&server.base, &url, "broken", &worker_token(&server), &log, &extra);
    let deadline = Instant::now() + Duration::from_secs(120);
    let status = loop {
        if let Some(status) = w.try_wait().expect("wait") {
            break status;
        }
        if Instant::now() > deadline {
            stop_child(w);
            panic!("the worker goes on: {}", std::fs::read_to_string(&log).unwrap_or_default());
        }
        std::thread::sleep(Duration::from_millis(200));
    };
    let said = std::fs::read_to_string(&log).unwrap_or_default();
    assert_eq!(status.code(), Some(5), "{said}");
    assert!(said.contains("could not be loaded") && said.contains("this worker stopped"), "{said}");
    let job = server.json(&[&format!("/status/{id}")]);
    assert_eq!(job["status"], "pending", "back in the queue, its only attempt not used: {job}");
}

/// The stream disappears while the connections stay up (`FLUSHALL`, an
/// eviction, a failover to an empty replica; here `DEL`): the server
/// notices, makes it again and publishes its queued job again, and a worker
/// started meanwhile waits for it instead of making an empty one.
#[test]
fn a_stream_that_disappears_is_made_again_with_the_queued_jobs() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (redis, url, _data, server) = broker_setup(dir.path(), &[]);
    let id = server.upload(&testdata("mixture.wav"), &["shifts=0"]);
    let deadline = Instant::now() + Duration::from_secs(30);
    while redis_cli(&redis, &["XLEN", "stemroom:jobs"]) != ["1"] {
        assert!(Instant::now() < deadline, "the job never reached the stream");
        std::thread::sleep(Duration::from_millis(100));
    }
    assert_eq!(redis_cli(&redis, &["DEL", "stemroom:jobs"]), ["1"]);
    // A job added at once must not make the stream again (hiding the loss).
    let next = server.upload(&testdata("mixture.wav"), &["shifts=0"]);
    let log = dir.path().join("worker.log");
    let w = worker(&server, &url, "w", &worker_token(&server), &log);
    let done = wait_all(&server, &[id.clone(), next.clone()], Duration::from_secs(300));
    assert!(done.iter().all(|j| j["status"] == "completed"), "{done:?}");
    assert!(jobs_done_by(&log).contains(&id) && jobs_done_by(&log).contains(&next), "the worker ran both");
    stop_child(w);
}

/// A queued job's entry taken off the stream while Redis kept the stream
/// (an operator's XDEL or XTRIM, a failover to a replica that had not seen
/// it): the server finds it missing at its next check and publishes the
/// job again, where it stayed queued with nothing to run it.
#[test]
fn a_queued_job_whose_entry_is_deleted_is_published_again() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (redis, _url, _data, server) = broker_setup(dir.path(), &[]);
    let id = server.upload(&testdata("mixture.wav"), &["shifts=0"]);
    let deadline = Instant::now() + Duration::from_secs(30);
    while redis_cli(&redis, &["XLEN", "stemroom:jobs"]) != ["1"] {
        assert!(Instant::now() < deadline, "the job never reached the stream");
        std::thread::sleep(Duration::from_millis(100));
    }
    let entry = redis_cli(&redis, &["XRANGE", "stemroom:jobs", "-", "+"]);
    // A foreign entry whose value is not UTF-8 (another writer on a shared
    // Redis) is passed over: it made every check fail, for good.
    let foreign = Command::new("sh")
        .arg("-c")
        .arg(format!("printf '\\377\\376' | redis-cli -p {} -x XADD stemroom:jobs '*' job", redis.port))
        .output()
        .expect("redis-cli");
    assert!(foreign.status.success(), "{foreign:?}");
    assert_eq!(redis_cli(&redis, &["XDEL", "stemroom:jobs", &entry[0]]), ["1"], "{entry:?}");
    let deadline = Instant::now() + Duration::from_secs(40);
    loop {
        let now = redis_cli(&redis, &["XRANGE", "stemroom:jobs", "-", "+"]);
        if now.windows(2).any(|w| w == ["job".to_string(), id.clone()]) {
            assert!(!now.contains(&entry[0]), "a new entry: {now:?}");
            break;
        }
        assert!(Instant::now() < deadline, "the job was not published again: {now:?}");
        std::thread::sleep(Duration::from_millis(200));
    }
}

/// A connection to the broker lost to the network (here: killed by the
/// broker), with the same broker and its stream there after it, costs a
/// reconnection and nothing more: the queued jobs are not published again
/// (each reconnection added an entry per queued job to the stream).
#[test]
fn a_lost_connection_to_the_same_broker_does_not_publish_the_queue_again() {
    lost_connection_publishes_only_new_jobs(&[]);
    // A broker that refuses `INFO` (renamed, as some managed services do):
    // no `run_id` to compare, and the stream still there says enough.
    lost_connection_publishes_only_new_jobs(&["--rename-command", "INFO", ""]);
}

fn lost_connection_publishes_only_new_jobs(redis_config: &[&str]) {
    let dir = tempfile::tempdir().expect("tempdir");
    let redis = Redis::start_with(&dir.path().join("redis"), free_port(), None, redis_config);
    let url = redis.url();
    let server = Server::start(&dir.path().join("data"), &["--broker", url.as_str()]);
    for _ in 0..3 {
        server.upload(&testdata("mixture.wav"), &["shifts=0"]);
    }
    let xlen_is = |n: &str, within: Duration| stream_holds(&redis, n, within);
    xlen_is("3", Duration::from_secs(30));
    let killed = redis_cli(&redis, &["CLIENT", "KILL", "TYPE", "normal"]);
    assert_ne!(killed, ["0"], "the server's connection was killed");
    // The publisher finds its connection gone at its next look (within
    // 2 s), connects again, and publishes the job added meanwhile only.
    std::thread::sleep(Duration::from_secs(3));
    server.upload(&testdata("mixture.wav"), &["shifts=0"]);
    xlen_is("4", Duration::from_secs(30));
    std::thread::sleep(Duration::from_secs(3));
    assert_eq!(redis_cli(&redis, &["XLEN", "stemroom:jobs"]), ["4"], "the queued jobs were published again");
}

/// This server's own restart, with the stream there, publishes nothing
/// again (a deploy that restarted it three times gave every queued job four
/// entries); an entry the stream lost while it was down is published again
/// at its start, not a reconciliation period later.
#[test]
fn a_server_restart_publishes_only_what_the_stream_lost() {
    let dir = tempfile::tempdir().expect("tempdir");
    let redis = Redis::start(&dir.path().join("redis"), free_port(), None);
    let url = redis.url();
    let data = dir.path().join("data");
    let server = Server::start(&data, &["--broker", url.as_str()]);
    for _ in 0..3 {
        server.upload(&testdata("mixture.wav"), &["shifts=0"]);
    }
    let xlen_is = |n: &str, within: Duration| stream_holds(&redis, n, within);
    xlen_is("3", Duration::from_secs(30));
    drop(server);
    let server = Server::start(&data, &["--broker", url.as_str()]);
    std::thread::sleep(Duration::from_secs(3));
    assert_eq!(redis_cli(&redis, &["XLEN", "stemroom:jobs"]), ["3"], "a restart published the queue again");
    drop(server);
    let first = redis_cli(&redis, &["XRANGE", "stemroom:jobs", "-", "+", "COUNT", "1"]);
    assert_eq!(redis_cli(&redis, &["XDEL", "stemroom:jobs", &first[0]]), ["1"], "{first:?}");
    let _server = Server::start(&data, &["--broker", url.as_str()]);
    // (Within the reconciliation period of 15 s: found at the start.)
    xlen_is("3", Duration::from_secs(10));
    std::thread::sleep(Duration::from_secs(3));
    assert_eq!(redis_cli(&redis, &["XLEN", "stemroom:jobs"]), ["3"], "only the lost entry was published again");
}

/// A job the server filed but had not recorded as done when it stopped
/// (put back in the queue, handed out again): the claim that follows
/// records it from its song folder and the worker is told it is done,
/// instead of the song being separated into a second copy.
#[test]
fn a_job_filed_before_the_server_stopped_is_recorded_at_its_next_claim() {
    use stemroom_library::queue::{Queue, StemFile};
    use stemroom_library::song::{self, SongMetadata};
    let dir = tempfile::tempdir().expect("tempdir");
    let (redis, _url, data, server) = broker_setup(dir.path(), &[]);
    let id = server.upload(&testdata("mixture.wav"), &[]);
    let message = read_entry(&redis, "w");
    // What the server's earlier run had filed for this job.
    let queue = Queue::open(&data.join("stemroom.sqlite")).expect("queue");
    let job = queue.get(id.parse().expect("numeric id")).expect("job");
    let library = queue
        .settings()
        .expect("settings")
        .library_dir
        .map(PathBuf::from)
        .unwrap_or_else(|| song::default_library_dir(&data));
    let work = song::partial_dir(&library, queue.work_tag(), job.id);
    std::fs::create_dir_all(&work).expect("mkdir");
    let stems: Vec<StemFile> = STEMS
        .iter()
        .map(|stem| {
            std::fs::copy(testdata("mixture.wav"), work.join(format!("{stem}.wav"))).expect("copy");
            StemFile { stem: (*stem).into(), path: format!("{stem}.wav") }
        })
        .collect();
    SongMetadata::new(&job, stems, 1.0, Some("cpu".into()), Some(2.0)).write(&work).expect("metadata");
    let filed = song::publish_song(&library, &work, &job.title).expect("publish");

    let holder = format!(r#"{{"message": "{message}", "worker": "w"}}"#);
    let (code, body) = server.curl_as(
        &worker_token(&server),
        &["-X", "POST", "-H", "Content-Type: application/json", "-d", &holder, &format!("/worker/jobs/{id}/claim")],
    );
    assert_eq!(code, 409, "{body}");
    assert!(body.contains("is done"), "{body}");
    let status = server.json(&[&format!("/status/{id}")]);
    assert_eq!(status["status"], "completed", "{status}");
    let songs: Vec<_> = std::fs::read_dir(&library).expect("ls").flatten().map(|e| e.path()).collect();
    assert_eq!(songs, [filed], "one copy of the song");
}

/// A completion whose song was filed but whose job could not be recorded
/// done (the database refused it: busy, disk full) is sent again by the
/// worker: the second send records the song already filed, without a 422
/// for stems that moved and without a second copy.
#[test]
fn a_completion_sent_again_after_its_record_failed_records_the_song_once() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (redis, _url, data, server) = broker_setup(dir.path(), &[]);
    let id = server.upload(&testdata("mixture.wav"), &[]);
    let message = read_entry(&redis, "w");
    let token = worker_token(&server);
    let holder = format!(r#"{{"message": "{message}", "worker": "w"}}"#);
    let post = |path: &str, body: &str| {
        server.curl_as(&token, &["-X", "POST", "-H", "Content-Type: application/json", "-d", body, path])
    };
    let (code, body) = post(&format!("/worker/jobs/{id}/claim"), &holder);
    assert_eq!(code, 200, "{body}");
    for stem in STEMS {
        let (code, body) = server.curl_as(
            &token,
            &[
                "-X",
                "PUT",
                "--data-binary",
                &format!("@{}", utf8(&testdata("mixture.wav"))),
                &format!("/worker/jobs/{id}/stems/{stem}.wav?message={message}&worker=w"),
            ],
        );
        assert_eq!(code, 200, "{stem}: {body}");
    }
    // The database refuses to record the job as done, once.
    let db = rusqlite::Connection::open(data.join("stemroom.sqlite")).expect("db");
    db.busy_timeout(Duration::from_secs(10)).expect("busy timeout");
    db.execute_batch(
        "CREATE TRIGGER refuse_done BEFORE UPDATE OF status ON jobs WHEN NEW.status = 'done'
         BEGIN SELECT RAISE(ABORT, 'disk full'); END;",
    )
    .expect("trigger");
    let stems: Vec<String> = STEMS.iter().map(|s| format!(r#"{{"stem": "{s}", "path": "{s}.wav"}}"#)).collect();
    let completion = format!(
        r#"{{"message": "{message}", "worker": "w", "stems": [{}], "seconds": 1.0, "provider": "cpu", "duration_seconds": 7.0}}"#,
        stems.join(", ")
    );
    let (code, body) = post(&format!("/worker/jobs/{id}/complete"), &completion);
    assert_eq!(code, 500, "{body}");
    assert!(body.contains("cannot record"), "{body}");
    db.execute_batch("DROP TRIGGER refuse_done;").expect("drop trigger");
    let (code, body) = post(&format!("/worker/jobs/{id}/complete"), &completion);
    assert_eq!(code, 200, "the send again is recorded: {body}");
    let status = server.json(&[&format!("/status/{id}")]);
    assert_eq!(status["status"], "completed", "{status}");
    let queue = stemroom_library::queue::Queue::open(&data.join("stemroom.sqlite")).expect("queue");
    let library = queue
        .settings()
        .expect("settings")
        .library_dir
        .map(PathBuf::from)
        .unwrap_or_else(|| stemroom_library::song::default_library_dir(&data));
    let songs: Vec<_> = std::fs::read_dir(&library)
        .expect("ls")
        .flatten()
        .filter(|e| !e.file_name().to_string_lossy().starts_with('.'))
        .map(|e| e.file_name())
        .collect();
    assert_eq!(songs.len(), 1, "one copy of the song: {songs:?}");
    let (code, _) = server.curl(&["-o", "/dev/null", &format!("/stems/{id}/vocals")]);
    assert_eq!(code, 200, "its stems are served");
    // Nothing stays staged once the job is recorded.
    let staged = files_in(&data.join("uploads/results"));
    assert!(staged.is_empty(), "staged stems left: {staged:?}");
}

/// A TCP proxy to `to` that stops passing the answer to a worker's input
/// request after 64 KiB, holding the connection open: a read that never
/// returns, as from a hung server or a dead link without a reset.
fn freezing_proxy(to: String, done: Arc<AtomicBool>) -> u16 {
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
    let port = listener.local_addr().expect("addr").port();
    std::thread::spawn(move || {
        for client in listener.incoming().flatten() {
            let Ok(upstream) = TcpStream::connect(&to) else { continue };
            let input_asked = Arc::new(AtomicBool::new(false));
            let (mut c_read, mut u_write) = (client.try_clone().expect("clone"), upstream.try_clone().expect("clone"));
            let asked = input_asked.clone();
            std::thread::spawn(move || {
                let mut buf = [0u8; 16384];
                while let Ok(n @ 1..) = c_read.read(&mut buf) {
                    if buf[..n].windows(7).any(|w| w == b"/input?") {
                        asked.store(true, Ordering::SeqCst);
                    }
                    if u_write.write_all(&buf[..n]).is_err() {
                        break;
                    }
                }
            });
            let (mut u_read, mut c_write, done) = (upstream, client, done.clone());
            std::thread::spawn(move || {
                let mut buf = [0u8; 16384];
                let mut after = 0usize;
                while let Ok(n @ 1..) = u_read.read(&mut buf) {
                    if input_asked.load(Ordering::SeqCst) {
                        after += n;
                        if after > 64 * 1024 {
                            while !done.load(Ordering::SeqCst) {
                                std::thread::sleep(Duration::from_millis(100));
                            }
                            break;
                        }
                    }
                    if c_write.write_all(&buf[..n]).is_err() {
                        break;
                    }
                }
            });
        }
    });
    port
}

#[test]
fn a_worker_whose_job_hangs_stops_keeping_its_entry_and_another_worker_takes_it_over() {
    let dir = tempfile::tempdir().expect("tempdir");
    let redis = Redis::start(&dir.path().join("redis"), free_port(), None);
    let url = redis.url();
    let data = dir.path().join("data");
    // The server's own watchdog waits its default ten minutes: only the
    // worker lets the job go here.
    let server = Server::start(&data, &["--broker", &url]);
    let done_flag = Arc::new(AtomicBool::new(false));
    let to = server.base.trim_start_matches("http://").to_string();
    let proxy = format!("http://127.0.0.1:{}", freezing_proxy(to, done_flag.clone()));
    let id = server.upload(&testdata("mixture.wav"), &["shifts=0"]);
    let log_a = dir.path().join("a.log");
    let a = worker_at(
        &proxy,
        &url,
        "stuck",
        &worker_token(&server),
        &log_a,
        &["--visibility-timeout", "2", "--stall-timeout", "3"],
    );
    wait_log(&log_a, &format!("job {id} \""), Duration::from_secs(60));
    let log_b = dir.path().join("b.log");
    let b = worker_at(&server.base, &url, "rescuer", &worker_token(&server), &log_b, &["--visibility-timeout", "2"]);
    let done = wait_all(&server, std::slice::from_ref(&id), Duration::from_secs(240));
    assert_eq!(done[0]["status"], "completed", "{done:?}");
    assert!(jobs_done_by(&log_b).contains(&id), "the second worker took the hung job over");
    wait_log(&log_a, &format!("job {id} showed no life"), Duration::from_secs(5));
    assert!(std::fs::read_to_string(&log_b).unwrap_or_default().contains("attempt 2"), "a takeover: the second claim");
    // The stuck worker itself is not lost: its read of the frozen input
    // times out (30 s) and it ends the job.
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let text = std::fs::read_to_string(&log_a).unwrap_or_default();
        if text.contains(&format!("job {id} failed")) || text.contains("another worker took it over") {
            break;
        }
        assert!(Instant::now() < deadline, "the stuck worker is still stuck:\n{text}");
        std::thread::sleep(Duration::from_millis(500));
    }
    done_flag.store(true, Ordering::SeqCst);
    stop_child(a);
    stop_child(b);
}

/// A TCP proxy to `to` that can be cut: while cut, its connections are
/// closed and new ones closed as soon as made (a broker out of reach of
/// one worker only: a restart, a network partition).
struct CuttableProxy {
    port: u16,
    cut: Arc<AtomicBool>,
    open: Arc<std::sync::Mutex<Vec<TcpStream>>>,
}

impl CuttableProxy {
    fn start(to: String) -> CuttableProxy {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
        let port = listener.local_addr().expect("addr").port();
        let cut = Arc::new(AtomicBool::new(false));
        let open = Arc::new(std::sync::Mutex::new(Vec::<TcpStream>::new()));
        let (is_cut, conns) = (cut.clone(), open.clone());
        std::thread::spawn(move || {
            for client in listener.incoming().flatten() {
                if is_cut.load(Ordering::SeqCst) {
                    let _ = client.shutdown(std::net::Shutdown::Both);
                    continue;
                }
                let Ok(upstream) = TcpStream::connect(&to) else { continue };
                {
                    let mut c = conns.lock().expect("lock");
                    c.push(client.try_clone().expect("clone"));
                    c.push(upstream.try_clone().expect("clone"));
                }
                for (mut from, mut to) in
                    [(client.try_clone().expect("clone"), upstream.try_clone().expect("clone")), (upstream, client)]
                {
                    std::thread::spawn(move || {
                        let _ = std::io::copy(&mut from, &mut to);
                        let _ = to.shutdown(std::net::Shutdown::Both);
                    });
                }
            }
        });
        CuttableProxy { port, cut, open }
    }

    fn url(&self) -> String {
        format!("redis://127.0.0.1:{}/0", self.port)
    }

    fn set_cut(&self, cut: bool) {
        self.cut.store(cut, Ordering::SeqCst);
        if cut {
            for s in self.open.lock().expect("lock").drain(..) {
                let _ = s.shutdown(std::net::Shutdown::Both);
            }
        }
    }
}

/// A worker lets go of the model an earlier job loaded before it opens
/// another: jobs asking for two models (the fast preset's int8 one, then
/// the default) do not hold both.
#[test]
fn a_worker_holds_one_model_at_a_time() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (_redis, url, _data, server) = broker_setup(dir.path(), &[]);
    let fast = server.upload(&testdata("mixture.wav"), &["preset=fast", "shifts=0"]);
    let log = dir.path().join("w.log");
    let w = worker_at(&server.base, &url, "one", &worker_token(&server), &log, &[]);
    let done = wait_all(&server, std::slice::from_ref(&fast), Duration::from_secs(240));
    assert_eq!(done[0]["status"], "completed", "{done:?}");
    let balanced = server.upload(&testdata("mixture.wav"), &["shifts=0"]);
    let done = wait_all(&server, std::slice::from_ref(&balanced), Duration::from_secs(240));
    assert_eq!(done[0]["status"], "completed", "{done:?}");
    let text = std::fs::read_to_string(&log).unwrap_or_default();
    assert!(text.contains("released the htdemucs_int8 model before opening htdemucs"), "{text}");
    stop_child(w);
}

/// A worker started with a short visibility timeout does not take a job a
/// healthy worker was just granted: the grant counts as the holder's first
/// keep (its own keeps are heard only after its keeper's first pass, 5 s
/// in with the default window, while the entry looks idle at once).
#[test]
fn a_job_just_granted_is_not_taken_over_by_a_short_window() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (_redis, url, _data, server) = broker_setup(dir.path(), &[]);
    let id = server.upload(&testdata("mixture.wav"), &["shifts=1"]);
    let log_a = dir.path().join("a.log");
    let a = worker_at(&server.base, &url, "holder", &worker_token(&server), &log_a, &[]);
    wait_log(&log_a, &format!("job {id} \""), Duration::from_secs(60));
    let log_b = dir.path().join("b.log");
    let b = worker_at(&server.base, &url, "claimer", &worker_token(&server), &log_b, &["--visibility-timeout", "0.5"]);
    let done = wait_all(&server, std::slice::from_ref(&id), Duration::from_secs(240));
    assert_eq!(done[0]["status"], "completed", "{done:?}");
    let (text_a, text_b) =
        (std::fs::read_to_string(&log_a).unwrap_or_default(), std::fs::read_to_string(&log_b).unwrap_or_default());
    assert!(jobs_done_by(&log_a).contains(&id), "the holder finished it:\n{text_a}\n---\n{text_b}");
    assert!(!text_a.contains("took it over") && !text_b.contains("attempt 2"), "run once:\n{text_a}\n---\n{text_b}");
    assert!(text_b.contains("still kept by its worker"), "b found the entry idle and was refused:\n{text_b}");
    stop_child(a);
    stop_child(b);
}

#[test]
fn a_worker_cut_off_from_redis_but_heard_over_http_keeps_its_job() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (redis, url, _data, server) = broker_setup(dir.path(), &[]);
    let proxy = CuttableProxy::start(format!("127.0.0.1:{}", redis.port));
    // Two shift passes on one thread: long enough to cut the worker off
    // and let another worker find the entry idle.
    let id = server.upload(&testdata("mixture.wav"), &["shifts=2"]);
    let log_a = dir.path().join("a.log");
    let a =
        worker_at(&server.base, &proxy.url(), "holder", &worker_token(&server), &log_a, &["--visibility-timeout", "6"]);
    wait_log(&log_a, &format!("job {id} \""), Duration::from_secs(60));
    // Its keeps (every 2 s) reach the server before it is cut off.
    std::thread::sleep(Duration::from_secs(5));
    proxy.set_cut(true);
    let log_b = dir.path().join("b.log");
    // (A claimer's visibility timeout shorter than the holder's keeps
    // come, every 2 s here: the server counts the holder's last keep
    // for 30 s at least, whatever the claimer's window, so a worker started
    // with a short one does not take healthy workers' jobs.)
    let b = worker_at(&server.base, &url, "claimer", &worker_token(&server), &log_b, &["--visibility-timeout", "0.5"]);
    // b finds the entry idle (its holder cannot XCLAIM it) and claims it;
    // the server, which hears the holder keep it, refuses the takeover.
    wait_log(&log_b, &format!("job {id} "), Duration::from_secs(60));
    let status = server.json(&[&format!("/status/{id}")]);
    assert_eq!(status["status"], "processing", "the job is still a's: {status}");
    proxy.set_cut(false);
    let done = wait_all(&server, std::slice::from_ref(&id), Duration::from_secs(240));
    assert_eq!(done[0]["status"], "completed", "{done:?}");
    let (text_a, text_b) =
        (std::fs::read_to_string(&log_a).unwrap_or_default(), std::fs::read_to_string(&log_b).unwrap_or_default());
    assert!(text_b.contains("still kept by its worker"), "the takeover was refused:\n{text_b}");
    assert!(jobs_done_by(&log_a).contains(&id), "the holder finished it:\n{text_a}\n---\n{text_b}");
    assert!(!text_a.contains("took it over") && !text_b.contains("attempt 2"), "run once:\n{text_a}\n---\n{text_b}");
    // The entry ends acknowledged (by the holder, or by b once the job is done).
    let deadline = Instant::now() + Duration::from_secs(30);
    while redis_cli(&redis, &["XPENDING", "stemroom:jobs", "stemroom-workers"]).first().map(String::as_str) != Some("0")
    {
        assert!(Instant::now() < deadline, "the entry is still pending");
        std::thread::sleep(Duration::from_millis(250));
    }
    stop_child(a);
    stop_child(b);
}

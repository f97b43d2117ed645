//! `stemroom worker`: runs jobs of a `stemroom serve --broker` on this
//! machine. It reads job ids from the Redis stream in the consumer group
//! (`XREADGROUP`), first taking over entries another worker left pending
//! longer than the visibility timeout (`XAUTOCLAIM`: that worker died, or
//! lost Redis; the server refuses the takeover while its heartbeat still
//! says it keeps the entry, and the entry is left to it), and
//! for each: claims the job from the server over HTTP, fetches its input
//! (or the link, with yt-dlp), separates it on its own device, posts
//! progress at every segment (the answer says when to stop: a cancel or
//! delete reaches it within one segment), uploads the stems, completes, and
//! acknowledges the entry (`XACK`) only once the server has them. While a
//! job runs and shows life (an engine event, input, download or stem bytes
//! moving) the heartbeat thread keeps the entry fresh (`XCLAIM … JUSTID`),
//! so only a worker that died, or whose job has hung for the stall timeout,
//! loses it. Blocking code: one job at a time per worker.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use redis::Commands;
use stemroom_engine::audio::encode::ClipMode;
use stemroom_engine::job::{self, JobRequest, OtherMethod, OutputRate, Separator};
use stemroom_engine::progress::{Event, Listener, Throttle};
use stemroom_engine::runtime::RuntimeOptions;
use stemroom_engine::separate::SeparateOptions;
use stemroom_engine::units::Device;
use stemroom_engine::ErrorCode;
use stemroom_library::queue::{JobId, JobState, StemFile};
use stemroom_library::worker::JobProgress;

use crate::broker::{Carry, JobSpec, GROUP, STREAM};

/// Default visibility timeout: an entry pending this long without a sign of
/// life from its worker is taken over by another worker.
pub const DEFAULT_VISIBILITY: Duration = Duration::from_secs(60);
/// Default stall timeout: the worker stops keeping a job's entry when the
/// job showed no life for this long (the same ten minutes as the server's
/// [`crate::broker::DEFAULT_STALL_TIMEOUT`], for the same reasons).
pub const DEFAULT_STALL: Duration = crate::broker::DEFAULT_STALL_TIMEOUT;
/// Longest wait for the answer to a heartbeat (it is sent again soon).
const HEARTBEAT_WAIT: Duration = Duration::from_secs(10);
/// Longest wait for the answer to a completion: the server moves the stems
/// into its library (a copy when that is another disk) and analyses them,
/// which for a long song on a slow disk takes minutes. A worker that gave
/// up sooner would report a failure and the job would run again.
const COMPLETE_WAIT: Duration = Duration::from_secs(30 * 60);

/// How long a stopping worker waits for the answer to its completion: a
/// stop (a deploy, a reclaimed spot machine) gives a process seconds
/// (Kubernetes' default grace period is 30 s), not [`COMPLETE_WAIT`]. An
/// answer not heard leaves the entry pending; the server files the stems
/// all the same, and the worker that takes the entry over finds the job done.
const COMPLETE_WAIT_STOPPING: Duration = Duration::from_secs(15);

/// Longest time to send or read the body of a JSON exchange (a claim, a
/// progress report, a heartbeat: a few kB). Without it, a proxy that sends
/// the headers and then stalls would hold the worker (or its heartbeat,
/// whose entry would then go stale) for ever; ureq sets no body timeout.
const JSON_BODY_WAIT: Duration = Duration::from_secs(60);

/// Longest wait for the server's answer to a progress report, and for its
/// body ([`Reporter::post`]): well inside the download stall timeout
/// (`stemroom_library::link::DEFAULT_STALL_TIMEOUT`, 60 s) with the 10 s connect.
const PROGRESS_WAIT: Duration = Duration::from_secs(10);

/// How long the server's answer to a request may take to begin, unless the
/// request says otherwise ([`Server::post_within`]).
const RESPONSE_WAIT: Duration = Duration::from_secs(120);
/// How long one `XREADGROUP` waits for a new entry.
const BLOCK: Duration = Duration::from_secs(2);
/// Longest wait between reconnection tries.
const MAX_BACKOFF: Duration = Duration::from_secs(10);

/// How a worker is set up.
#[derive(Debug, Clone)]
pub struct RemoteConfig {
    /// The server's base URL (`http://host:8000`).
    pub server: String,
    pub token: String,
    /// `redis://…` or `rediss://…` (AUTH and TLS as the URL says).
    pub broker: String,
    pub device: Device,
    pub threads: Option<usize>,
    /// Name shown in the server's status (default: host name, process id
    /// and 4 random hex digits).
    pub name: String,
    pub model_dir: Option<PathBuf>,
    pub runtime_library: Option<PathBuf>,
    pub visibility: Duration,
    /// A job that shows no life for this long is left to other workers:
    /// its entry is no longer kept fresh (see [`Life`]).
    pub stall: Duration,
    /// Scratch folder for inputs and stems (emptied after each job).
    pub work_dir: PathBuf,
}

/// Why a worker stops.
#[derive(Debug, thiserror::Error)]
pub enum RemoteError {
    #[error(
        "the server at {0} refused the token (401): --token takes the worker-token file of the server's data folder"
    )]
    Unauthorized(String),
    #[error("{0}")]
    Config(String),
    /// ONNX Runtime failed to load: this process never loads it again, so
    /// the worker stops (its job given back) instead of failing every job.
    #[error("{0}: this worker stopped, its job back in the queue; start it again once ONNX Runtime loads (--ort-lib, `stemroom runtime fetch`)")]
    Runtime(String),
    #[error("{0}")]
    Io(#[from] std::io::Error),
}

/// The HTTP side: the server's worker routes.
#[derive(Clone)]
struct Server {
    agent: ureq::Agent,
    base: String,
    auth: String,
}

/// What an HTTP exchange ended with.
enum Answer<T> {
    Ok(T),
    /// 404/409/410: not for us (finished, deleted, held elsewhere).
    Refused(String),
    /// Network trouble or a server error: try again later.
    Trouble(String),
}

impl Server {
    fn new(config: &RemoteConfig) -> Self {
        Server::at(&config.server, &config.token)
    }

    /// The server at base URL `server`, asked with `token`.
    fn at(server: &str, token: &str) -> Self {
        let agent = ureq::Agent::config_builder()
            .timeout_connect(Some(Duration::from_secs(10)))
            .timeout_recv_response(Some(RESPONSE_WAIT))
            .http_status_as_error(false)
            .build()
            .into();
        Server { agent, base: server.trim_end_matches('/').to_string(), auth: format!("Bearer {token}") }
    }

    fn answer<T: serde::de::DeserializeOwned>(
        &self,
        r: Result<ureq::http::Response<ureq::Body>, ureq::Error>,
    ) -> Result<Answer<T>, RemoteError> {
        let mut r = match r {
            Ok(r) => r,
            Err(e) => return Ok(Answer::Trouble(e.to_string())),
        };
        let status = r.status().as_u16();
        match status {
            200..=299 => match r.body_mut().read_json::<T>() {
                Ok(v) => Ok(Answer::Ok(v)),
                Err(e) => Ok(Answer::Trouble(format!("unreadable answer: {e}"))),
            },
            401 => Err(RemoteError::Unauthorized(self.base.clone())),
            // The server refuses with its JSON error (a code in it); a bare
            // 404 or 409 comes from something between (a proxy with no
            // route yet, an ingress that reloads): trouble, not a refusal,
            // since a refused entry is acknowledged and dropped, and a
            // refused progress report stops the job.
            404 | 409 | 410 => {
                let body = r.body_mut().read_to_string().unwrap_or_default();
                Ok(if is_api_error(&body) {
                    Answer::Refused(body)
                } else {
                    Answer::Trouble(format!("HTTP {status}: {body}"))
                })
            }
            _ => Ok(Answer::Trouble(format!("HTTP {status}: {}", r.body_mut().read_to_string().unwrap_or_default()))),
        }
    }

    fn post<T: serde::de::DeserializeOwned>(
        &self,
        path: &str,
        body: &serde_json::Value,
    ) -> Result<Answer<T>, RemoteError> {
        self.post_within(path, body, RESPONSE_WAIT)
    }

    /// [`Server::post`] that waits at most `wait` for the answer.
    fn post_within<T: serde::de::DeserializeOwned>(
        &self,
        path: &str,
        body: &serde_json::Value,
        wait: Duration,
    ) -> Result<Answer<T>, RemoteError> {
        let r = self
            .agent
            .post(format!("{}{path}", self.base))
            .header("Authorization", &self.auth)
            .config()
            .timeout_recv_response(Some(wait))
            .timeout_send_body(Some(JSON_BODY_WAIT.min(wait)))
            .timeout_recv_body(Some(JSON_BODY_WAIT.min(wait)))
            .build()
            .send_json(body);
        self.answer(r)
    }

    /// A first heartbeat: the token works and the server has a broker. A
    /// server that does not answer yet (restarting, starting after the
    /// worker) is asked again, with a growing pause, until `stop`; then
    /// `Ok(false)`.
    fn check(&self, config: &RemoteConfig, stop: &AtomicBool) -> Result<bool, RemoteError> {
        let uri = self.base.parse::<ureq::http::Uri>().ok();
        let usable = uri.as_ref().is_some_and(|u| {
            matches!(u.scheme_str(), Some("http" | "https")) && u.host().is_some_and(|h| !h.is_empty())
        });
        if !usable {
            return Err(RemoteError::Config(format!("--server {}: not an http:// or https:// address", self.base)));
        }
        let body = serde_json::json!({ "worker": config.name, "device": config.device.as_str(), "provider": null, "job": null });
        let mut backoff = Duration::from_secs(1);
        loop {
            match self.post::<serde_json::Value>("/worker/heartbeat", &body)? {
                Answer::Ok(_) => return Ok(true),
                Answer::Refused(e) => return Err(RemoteError::Config(format!("the server {}: {e}", self.base))),
                Answer::Trouble(e) => {
                    tracing::warn!(
                        "the server {} does not answer ({e}); asking again in {} s",
                        self.base,
                        backoff.as_secs()
                    );
                    if !nap(backoff, stop) {
                        return Ok(false);
                    }
                    backoff = (backoff * 2).min(MAX_BACKOFF);
                }
            }
        }
    }
}

/// When the job in hand last showed life: an engine event (decoding, a
/// segment, encoding), bytes of its input, download or stems moving. The
/// heartbeat thread keeps the job's entry only while this is recent, so a
/// job that hangs (a stuck device, a read that never returns) goes to
/// another worker instead of staying with this one for ever.
///
/// Phases that move on without a sign of their own hold it instead
/// ([`Life::hold`]): building or loading a model, a link's download (which
/// has its own stall limit, [`stemroom_library::link::DEFAULT_STALL_TIMEOUT`]:
/// yt-dlp silent that long is killed), the server's completion. The
/// heartbeat then also tells the server the job is busy, for its own
/// watchdog.
#[derive(Debug)]
pub struct Life {
    start: Instant,
    /// Milliseconds from `start` to the last sign of life.
    last_ms: std::sync::atomic::AtomicU64,
    /// A phase that holds the job alive is under way.
    held: AtomicBool,
}

/// While this lives, the job counts as alive (see [`Life::hold`]).
pub struct Held<'a>(&'a Life);

impl Drop for Held<'_> {
    fn drop(&mut self) {
        self.0.touch();
        self.0.held.store(false, Ordering::Release);
    }
}

impl Life {
    fn new() -> Self {
        Life { start: Instant::now(), last_ms: std::sync::atomic::AtomicU64::new(0), held: AtomicBool::new(false) }
    }

    /// Count the job as alive until the guard is dropped: for a phase with
    /// a bound of its own and no signs of life to give.
    pub fn hold(&self) -> Held<'_> {
        self.held.store(true, Ordering::Release);
        Held(self)
    }

    /// Whether a [`Life::hold`] is under way.
    pub fn is_held(&self) -> bool {
        self.held.load(Ordering::Acquire)
    }

    /// The job moved on (lock-free: called from read loops).
    pub fn touch(&self) {
        let ms = u64::try_from(self.start.elapsed().as_millis()).unwrap_or(u64::MAX);
        self.last_ms.store(ms, Ordering::Relaxed);
    }

    /// Time since the last [`Life::touch`] (zero while held).
    pub fn silent_for(&self) -> Duration {
        if self.is_held() {
            return Duration::ZERO;
        }
        self.start.elapsed().saturating_sub(Duration::from_millis(self.last_ms.load(Ordering::Relaxed)))
    }
}

/// A reader that counts every read as a sign of life.
struct Touching<'a, R> {
    inner: R,
    life: &'a Life,
    /// Says so: the reads fail (a stopping worker, or a job cancelled on
    /// the server, does not wait for the rest of an input).
    stop: Option<&'a dyn Fn() -> bool>,
}

impl<R: std::io::Read> std::io::Read for Touching<'_, R> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        if self.stop.is_some_and(|stopped| stopped()) {
            return Err(std::io::Error::other("the job is stopping"));
        }
        let n = self.inner.read(buf)?;
        self.life.touch();
        Ok(n)
    }
}

/// Start of a worker's scratch folder's name: `stemroom-worker-<pid>-<random>`
/// (the CLI's `--work-dir` holds one per worker process).
pub const WORK_DIR_PREFIX: &str = "stemroom-worker-";

/// This process's scratch folder inside `parent`:
/// `stemroom-worker-<pid>-<16 random hex digits>`. The random part keeps
/// apart workers of one pid sharing `parent` (containers that all run as
/// PID 1, with the same volume mounted): by pid alone the second one's
/// folder was the first one's, locked, and it could not start.
pub fn work_dir_in(parent: &Path) -> PathBuf {
    let nonce = stemroom_engine::files::random_u64();
    parent.join(format!("{WORK_DIR_PREFIX}{}-{nonce:016x}", std::process::id()))
}

/// Make scratch folder `dir` this process's: created, and locked (an OS
/// lock on its `stemroom.lock`, released however the process ends); then
/// remove the scratch folders beside it that workers killed without
/// cleaning up left (SIGKILL, out of memory, a second Ctrl-C), which a
/// worker's next start would never reuse (each start names its own). A folder is
/// removed only when nobody holds its lock, or, without a lock file (a
/// folder being made, or an older worker's), when its process is gone.
///
/// # Errors
/// I/O errors making or locking `dir`; `dir` locked by another process.
pub fn claim_work_dir(dir: &Path) -> std::io::Result<WorkDir> {
    let Some(own) = stemroom_library::lock::InstanceLock::acquire(dir)? else {
        return Err(std::io::Error::other(format!("{} is used by another worker", dir.display())));
    };
    if let Some(parent) = dir.parent() {
        let removed = sweep_work_dirs(parent, dir);
        if removed > 0 {
            tracing::info!("removed {removed} scratch folder(s) of stopped workers in {}", parent.display());
        }
    }
    Ok(WorkDir { dir: dir.to_path_buf(), _lock: own })
}

/// A worker's own scratch folder, locked while this lives and removed
/// (with its lock file) when it goes: only by the worker that holds it.
pub struct WorkDir {
    dir: PathBuf,
    _lock: stemroom_library::lock::InstanceLock,
}

impl Drop for WorkDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// Remove the dead workers' scratch folders in `parent` except `own` (see
/// [`claim_work_dir`]); returns how many went.
fn sweep_work_dirs(parent: &Path, own: &Path) -> usize {
    let Ok(entries) = std::fs::read_dir(parent) else { return 0 };
    let mut removed = 0;
    for entry in entries.flatten() {
        let path = entry.path();
        let name = entry.file_name();
        // (`<pid>-<random>`, or `<pid>` as older workers named it.)
        let pid = name.to_str().and_then(|n| n.strip_prefix(WORK_DIR_PREFIX)).and_then(|rest| {
            let (pid, nonce) = rest.split_once('-').unwrap_or((rest, "0"));
            pid.parse::<i32>()
                .ok()
                .filter(|_| (1..=16).contains(&nonce.len()) && nonce.bytes().all(|b| b.is_ascii_hexdigit()))
        });
        let Some(pid) = pid else {
            continue;
        };
        if path == own || !entry.file_type().is_ok_and(|t| t.is_dir()) {
            continue;
        }
        // Held while the folder is removed: nobody else takes it meanwhile.
        let mut held = None;
        let dead = if path.join("stemroom.lock").exists() {
            held = stemroom_library::lock::InstanceLock::acquire(&path).ok().flatten();
            held.is_some()
        } else {
            pid > 0 && !stemroom_engine::files::process_alive(pid)
        };
        if dead && std::fs::remove_dir_all(&path).is_ok() {
            drop(held);
            removed += 1;
        }
    }
    removed
}

/// The current job, for the heartbeat thread.
#[derive(Debug, Default, Clone)]
struct Current {
    job: Option<JobId>,
    message: Option<String>,
    provider: Option<String>,
    /// Counts the runs this worker started: the same entry claimed again
    /// later is another run (see the heartbeat's `let_go`).
    run: u64,
    /// What the server's answers to the heartbeat said of this run.
    told: Arc<Told>,
}

/// A stop of the run in hand that the server's heartbeat answer asked for
/// (its job cancelled or deleted, or taken over by another worker): heard
/// in the phases that send no progress (the model's making, a link's
/// download, the input's transfer). Only an answer sets it: a heartbeat
/// that fails (a network blip) stops nothing.
#[derive(Debug, Default)]
struct Told {
    cancel: AtomicBool,
    taken_over: AtomicBool,
}

fn redis_connect(client: &redis::Client) -> redis::RedisResult<redis::Connection> {
    let mut c = client.get_connection_with_timeout(Duration::from_secs(5))?;
    c.set_read_timeout(Some(BLOCK + Duration::from_secs(5)))?;
    // The server makes the stream (see `create_group`); until it has, wait.
    let there: bool = redis::cmd("EXISTS").arg(STREAM).query(&mut c)?;
    if !there {
        return Err(redis::RedisError::from((
            redis::ErrorKind::Client,
            "no job stream on the broker yet: `stemroom serve --broker` makes it when it connects",
        )));
    }
    crate::broker::group_exists(crate::broker::create_group(false).query(&mut c))?;
    Ok(c)
}

/// The cursor an `XAUTOCLAIM` reply gives for the next call (`0-0` once
/// the whole pending list was looked at).
fn autoclaim_cursor(reply: &redis::Value) -> Option<String> {
    match reply {
        redis::Value::Array(top) if (2..=3).contains(&top.len()) => match &top[0] {
            redis::Value::BulkString(b) => Some(String::from_utf8_lossy(b).into_owned()),
            redis::Value::SimpleString(s) => Some(s.clone()),
            _ => None,
        },
        _ => None,
    }
}

/// One entry: its id and the job it names.
fn entries(reply: &redis::Value) -> Vec<(String, Option<JobId>)> {
    // XREADGROUP: [[stream, [[id, [field, value, ...]], ...]]];
    // XAUTOCLAIM: [next, [[id, [field, value, ...]], ...], deleted].
    fn list(v: &redis::Value) -> Option<&Vec<redis::Value>> {
        match v {
            redis::Value::Array(a) => Some(a),
            _ => None,
        }
    }
    fn text(v: &redis::Value) -> Option<String> {
        match v {
            redis::Value::BulkString(b) => Some(String::from_utf8_lossy(b).into_owned()),
            redis::Value::SimpleString(s) => Some(s.clone()),
            _ => None,
        }
    }
    let mut out = Vec::new();
    let mut take = |items: &Vec<redis::Value>| {
        for item in items {
            let Some(pair) = list(item) else { continue };
            let Some(id) = pair.first().and_then(text) else { continue };
            let fields = pair.get(1).and_then(list);
            let job = fields.and_then(|f| {
                f.chunks(2)
                    .find(|kv| kv.first().and_then(text).as_deref() == Some("job"))
                    .and_then(|kv| kv.get(1))
                    .and_then(text)
            });
            out.push((id, job.and_then(|j| j.parse().ok())));
        }
    };
    match reply {
        // XAUTOCLAIM: [cursor, entries] (Redis 6.2), [cursor, entries,
        // deleted ids] (7.0+); XREADGROUP's streams start with an array.
        redis::Value::Array(top)
            if (2..=3).contains(&top.len())
                && matches!(top[0], redis::Value::BulkString(_) | redis::Value::SimpleString(_)) =>
        {
            if let Some(items) = list(&top[1]) {
                take(items);
            }
        }
        redis::Value::Array(streams) => {
            for s in streams {
                if let Some(items) = list(s).and_then(|s| s.get(1)).and_then(list) {
                    take(items);
                }
            }
        }
        redis::Value::Map(streams) => {
            for (_, v) in streams {
                if let Some(items) = list(v) {
                    take(items);
                }
            }
        }
        _ => {}
    }
    out
}

/// Reports a job's progress to the server (a link's download at most once
/// a second, then every segment, and at most every 250 ms otherwise) and
/// stops the job when the server says so or the worker is stopping.
struct Reporter<'a> {
    server: &'a Server,
    worker: &'a str,
    job: JobId,
    message: &'a str,
    /// The network's provider, once the model is loaded.
    provider: Mutex<Option<String>>,
    stop: &'a AtomicBool,
    life: &'a Life,
    cancelled: AtomicBool,
    taken_over: AtomicBool,
    /// The heartbeat's word on this run ([`Told`]).
    told: Arc<Told>,
    throttle: Mutex<Throttle>,
}

impl Reporter<'_> {
    fn post(&self, state: JobState, eta: Option<f64>) {
        let percent = JobProgress::compute(self.job, &state, 1.0, None).percent;
        let provider = self.provider.lock().unwrap_or_else(|p| p.into_inner()).clone();
        let body = serde_json::json!({
            "message": self.message, "worker": self.worker, "state": state, "percent": percent, "eta_seconds": eta, "provider": provider,
        });
        // Within PROGRESS_WAIT: it is posted from the job's own thread (a
        // link download's read loop, a segment's end), and a slow server
        // held it for minutes, long enough for the download's stall timer
        // to kill yt-dlp. An answer not heard in time is trouble, as a lost
        // one: the next report says as much.
        let path = format!("/worker/jobs/{}/progress", self.job);
        match self.server.post_within::<Carry>(&path, &body, PROGRESS_WAIT) {
            Ok(Answer::Ok(c)) if c.cancel => {
                self.taken_over.store(c.taken_over, Ordering::SeqCst);
                self.cancelled.store(true, Ordering::SeqCst);
            }
            // The token is refused now (changed on the server): this worker
            // stops without letting the entry go, so another worker with the
            // right token takes the job over.
            Err(RemoteError::Unauthorized(_)) => {
                self.stop.store(true, Ordering::SeqCst);
                self.cancelled.store(true, Ordering::SeqCst);
            }
            Ok(Answer::Refused(_)) | Err(_) => self.cancelled.store(true, Ordering::SeqCst),
            _ => {}
        }
    }
}

impl Listener for Reporter<'_> {
    fn event(&self, event: &Event) {
        self.life.touch();
        let now = Instant::now();
        match event {
            Event::Segment { index, total, eta_seconds, .. } => {
                self.throttle.lock().unwrap_or_else(|p| p.into_inner()).ready(now, true);
                self.post(JobState::Separating { segment: *index as u32, total: *total as u32 }, Some(*eta_seconds));
            }
            Event::Decoded { .. } | Event::Encoding { .. } => {
                let state =
                    if matches!(event, Event::Decoded { .. }) { JobState::Decoding } else { JobState::Encoding };
                if self.throttle.lock().unwrap_or_else(|p| p.into_inner()).ready(now, false) {
                    self.post(state, None);
                }
            }
            _ => {}
        }
    }
    fn is_cancelled(&self) -> bool {
        self.cancelled.load(Ordering::SeqCst)
            || self.stop.load(Ordering::SeqCst)
            || self.told.cancel.load(Ordering::SeqCst)
    }
}

impl Reporter<'_> {
    /// `Err` when the run must end here: [`TAKEN_OVER`] when another
    /// worker holds the job now, else cancelled (on the server, or this
    /// worker stops).
    fn halt(&self) -> Result<(), stemroom_library::Error> {
        if self.was_taken_over() {
            return Err(stemroom_library::Error::Internal(TAKEN_OVER.into()));
        }
        if self.is_cancelled() {
            return Err(stemroom_library::Error::Cancelled);
        }
        Ok(())
    }

    /// Another worker holds the job now (a report's or a heartbeat's
    /// answer said so): its entry is not this worker's to acknowledge.
    fn was_taken_over(&self) -> bool {
        self.taken_over.load(Ordering::SeqCst) || self.told.taken_over.load(Ordering::SeqCst)
    }
}

/// Run jobs until `stop` is set (Ctrl-C, SIGTERM): then the job in hand, if
/// any, stops at its next segment and goes back to the queue.
///
/// # Errors
/// [`RemoteError::Unauthorized`] for a wrong token; a broker URL the client
/// does not take; the scratch folder.
pub fn run_worker(config: &RemoteConfig, stop: &AtomicBool) -> Result<(), RemoteError> {
    let server = Server::new(config);
    if !server.check(config, stop)? {
        return Ok(());
    }
    let client = redis::Client::open(config.broker.as_str())
        .map_err(|e| RemoteError::Config(format!("--broker {}: {e}", crate::broker::redact(&config.broker))))?;
    let _own = claim_work_dir(&config.work_dir)?;
    let current = Arc::new(Mutex::new(Current::default()));
    let life = Arc::new(Life::new());
    let beat_stop = Arc::new(AtomicBool::new(false));
    let heartbeat = {
        let (config, current, life, beat_stop, client) =
            (config.clone(), current.clone(), life.clone(), beat_stop.clone(), client.clone());
        std::thread::Builder::new()
            .name("stemroom-heartbeat".into())
            .spawn(move || heartbeat(&config, &current, &life, &beat_stop, &client))?
    };
    // The model the last job loaded (its id), kept while jobs that use it follow.
    let mut loaded: Option<(String, Arc<Separator>)> = None;
    let mut conn: Option<redis::Connection> = None;
    let mut backoff = Duration::from_millis(200);
    // Where the next XAUTOCLAIM goes on in the pending list: it looks at
    // ten entries per call (COUNT 1), so starting at 0-0 every time would
    // never reach a dead worker's entry behind ten live ones.
    let mut cursor = "0-0".to_string();
    let mut result = Ok(());
    // Jobs in a row that failed for this worker's own reasons.
    let mut strikes = Strikes::default();
    // A command that fails drops the connection; the next try waits.
    let broken = |e: &redis::RedisError, backoff: &mut Duration| {
        tracing::warn!("broker: {e}; retrying in {:.1} s", backoff.as_secs_f64());
        nap(*backoff, stop);
        *backoff = (*backoff * 2).min(MAX_BACKOFF);
    };
    while !stop.load(Ordering::SeqCst) {
        let c = match conn.as_mut() {
            Some(c) => c,
            None => match redis_connect(&client) {
                Ok(c) => {
                    tracing::info!("broker {}: connected", crate::broker::redact(&config.broker));
                    conn.insert(c)
                }
                Err(e) => {
                    tracing::warn!("broker unreachable: {e}; retrying in {:.1} s", backoff.as_secs_f64());
                    nap(backoff, stop);
                    backoff = (backoff * 2).min(MAX_BACKOFF);
                    continue;
                }
            },
        };
        // Entries a dead worker left first, then new ones.
        let stale: redis::RedisResult<redis::Value> = redis::cmd("XAUTOCLAIM")
            .arg(STREAM)
            .arg(GROUP)
            .arg(&config.name)
            .arg(config.visibility.as_millis() as u64)
            .arg(&cursor)
            .arg("COUNT")
            .arg(1)
            .query(c);
        let mut found = match stale {
            Ok(v) => {
                cursor = autoclaim_cursor(&v).unwrap_or_else(|| "0-0".into());
                entries(&v)
            }
            Err(e) => {
                broken(&e, &mut backoff);
                conn = None;
                continue;
            }
        };
        if found.is_empty() {
            let fresh: redis::RedisResult<redis::Value> = redis::cmd("XREADGROUP")
                .arg("GROUP")
                .arg(GROUP)
                .arg(&config.name)
                .arg("COUNT")
                .arg(1)
                .arg("BLOCK")
                .arg(BLOCK.as_millis() as u64)
                .arg("STREAMS")
                .arg(STREAM)
                .arg(">")
                .query(c);
            match fresh {
                Ok(v) => found = entries(&v),
                Err(e) => {
                    broken(&e, &mut backoff);
                    conn = None;
                    continue;
                }
            }
        }
        backoff = Duration::from_millis(200);
        for (message, job) in found {
            let acked = match job {
                None => true,
                Some(id) => {
                    match run_one(config, &server, &mut loaded, &current, &life, stop, (id, &message), &mut strikes) {
                        Ok(ack) => ack,
                        Err(e) => {
                            result = Err(e);
                            stop.store(true, Ordering::SeqCst);
                            false
                        }
                    }
                }
            };
            {
                let mut now = current.lock().unwrap_or_else(|p| p.into_inner());
                *now = Current { run: now.run, ..Current::default() };
            }
            if acked {
                // The server has what it needs: the entry is done. If Redis
                // is down now the entry stays pending and a later claim is
                // refused (finished) and acknowledged then.
                // Then deleted: the stream keeps only entries not yet done,
                // instead of growing by one entry per job for ever.
                let ack_on = |c: &mut redis::Connection| -> redis::RedisResult<i64> {
                    c.xack(STREAM, GROUP, &[&message]).and_then(|n| c.xdel(STREAM, &[&message]).map(|_: i64| n))
                };
                // The connection may have broken during the job (a broker
                // restart): one try on a new one before leaving it pending.
                let mut ack = conn
                    .as_mut()
                    .map_or_else(|| Err(redis::RedisError::from((redis::ErrorKind::Io, "not connected"))), &ack_on);
                if ack.is_err() {
                    conn = redis_connect(&client).ok();
                    if let Some(c) = conn.as_mut() {
                        ack = ack_on(c);
                    }
                }
                if let Err(e) = ack {
                    tracing::warn!("broker: cannot acknowledge {message}: {e}");
                    conn = None;
                }
            }
        }
        let (jobs, claims) = (trouble_pause(strikes.jobs), claim_pause(strikes.claims));
        if !stop.load(Ordering::SeqCst) {
            if !jobs.is_zero() && jobs >= claims {
                tracing::warn!(
                    "{} job(s) in a row failed on this worker for its own reasons: pausing {} s so that other workers take them",
                    strikes.jobs,
                    jobs.as_secs()
                );
                nap(jobs, stop);
            } else if !claims.is_zero() {
                tracing::warn!(
                    "{} claim(s) in a row had no answer from the server: pausing {} s so that workers that reach it take the jobs",
                    strikes.claims,
                    claims.as_secs()
                );
                nap(claims, stop);
            }
        }
    }
    beat_stop.store(true, Ordering::SeqCst);
    let _ = heartbeat.join();
    leave_group(&client, &config.name);
    match stemroom_engine::runtime::load_failure() {
        Some(why) if result.is_ok() => Err(RemoteError::Runtime(why)),
        _ => result,
    }
}

/// Remove this worker from the consumer group when it holds no entry:
/// Redis never forgets a consumer by itself, and each start under a new
/// name (the default `HOST-PID-XXXX`) would add one to the group for good. One
/// that still holds entries stays (deleting it would drop them; another
/// worker takes them over after the visibility timeout).
fn leave_group(client: &redis::Client, name: &str) {
    let Ok(mut c) = redis_connect(client) else { return };
    let pending: redis::RedisResult<redis::Value> =
        redis::cmd("XPENDING").arg(STREAM).arg(GROUP).arg("-").arg("+").arg(1).arg(name).query(&mut c);
    match pending {
        Ok(redis::Value::Array(held)) if held.is_empty() => {
            let gone: redis::RedisResult<i64> =
                redis::cmd("XGROUP").arg("DELCONSUMER").arg(STREAM).arg(GROUP).arg(name).query(&mut c);
            if let Err(e) = gone {
                tracing::debug!("broker: cannot leave the group: {e}");
            }
        }
        Ok(_) => tracing::info!("broker: {name} still holds entries: it stays in the group until they are taken over"),
        Err(e) => tracing::debug!("broker: cannot read this worker's entries: {e}"),
    }
}

/// Every few seconds: tell the server this worker lives, and keep the
/// entry in hand fresh so no other worker takes it over, while the job
/// shows [`Life`]. The two on their own threads: the entry's refresh comes
/// every third of the visibility timeout (at most every 5 s) however slow
/// the server answers (an HTTP heartbeat may wait up to
/// [`HEARTBEAT_WAIT`] plus its connection's 10 s).
fn heartbeat(config: &RemoteConfig, current: &Mutex<Current>, life: &Life, stop: &AtomicBool, client: &redis::Client) {
    let every = (config.visibility / 3).clamp(Duration::from_millis(200), Duration::from_secs(5));
    // Whether the entry in hand is kept (said in the HTTP heartbeat).
    let keeps = Keeps::default();
    std::thread::scope(|scope| {
        let keeps = &keeps;
        let told = std::thread::Builder::new()
            .name("server-heartbeat".into())
            .spawn_scoped(scope, move || server_heartbeat(config, current, life, stop, keeps, every));
        if let Err(e) = told {
            tracing::error!("cannot start the server's heartbeat thread: {e}");
        }
        keep_entry(config, current, life, stop, client, keeps, every);
    });
}

/// What [`keep_entry`]'s last pass decided, and of which entry (its stream
/// id and the run that claimed it).
#[derive(Debug, Default)]
struct Keeps(Mutex<Option<((String, u64), bool)>>);

impl Keeps {
    fn decided(&self, message: &str, run: u64, kept: bool) {
        *self.0.lock().unwrap_or_else(|p| p.into_inner()) = Some(((message.to_string(), run), kept));
    }

    fn clear(&self) {
        *self.0.lock().unwrap_or_else(|p| p.into_inner()) = None;
    }

    /// Whether entry `message` of run `run` is kept: as the last pass
    /// decided, and kept when no pass has seen it yet (claimed since the
    /// last one, up to 5 s ago: its claim refreshed it, and saying
    /// otherwise let a worker with a short visibility timeout take over
    /// a job just begun).
    fn of(&self, message: &str, run: u64) -> bool {
        match &*self.0.lock().unwrap_or_else(|p| p.into_inner()) {
            Some(((m, r), kept)) if m == message && *r == run => *kept,
            _ => true,
        }
    }
}

/// The HTTP heartbeat, every `every`: this worker, its job, and whether it
/// keeps the job's entry (`keeps`, from [`keep_entry`]).
fn server_heartbeat(
    config: &RemoteConfig,
    current: &Mutex<Current>,
    life: &Life,
    stop: &AtomicBool,
    keeps: &Keeps,
    every: Duration,
) {
    let server = Server::new(config);
    let device = config.device.as_str();
    while !stop.load(Ordering::SeqCst) {
        let now = current.lock().unwrap_or_else(|p| p.into_inner()).clone();
        let busy = now.job.is_some() && life.is_held();
        let body = serde_json::json!({
            "worker": config.name, "device": device, "provider": now.provider, "job": now.job, "busy": busy,
            "message": now.message,
            // Said whether or not Redis answered: the server then refuses
            // another worker's takeover of the entry (it looks idle there).
            "keeps": now.message.as_deref().is_some_and(|m| keeps.of(m, now.run)),
        });
        match server.post_within::<serde_json::Value>("/worker/heartbeat", &body, HEARTBEAT_WAIT) {
            Err(RemoteError::Unauthorized(_)) => tracing::error!("the server refused the token"),
            Ok(Answer::Trouble(why)) => tracing::debug!("heartbeat: {why}"),
            // (Older servers answer `ok` only.)
            Ok(Answer::Ok(said)) if now.job.is_some() && said["cancel"].as_bool() == Some(true) => {
                if said["taken_over"].as_bool() == Some(true) {
                    now.told.taken_over.store(true, Ordering::SeqCst);
                }
                if !now.told.cancel.swap(true, Ordering::SeqCst) {
                    tracing::info!("job {:?}: the server says to stop it", now.job);
                }
            }
            _ => {}
        }
        nap(every, stop);
    }
}

/// Keep the entry in hand fresh (`XCLAIM … JUSTID`) every `every` while
/// its job shows life; `keeps` says whether it is kept.
fn keep_entry(
    config: &RemoteConfig,
    current: &Mutex<Current>,
    life: &Life,
    stop: &AtomicBool,
    client: &redis::Client,
    keeps: &Keeps,
    every: Duration,
) {
    let mut conn: Option<redis::Connection> = None;
    // The run whose entry was given up on (said once, never claimed
    // again in that run; a later claim of the same entry is a new run).
    let mut let_go: Option<(String, u64)> = None;
    while !stop.load(Ordering::SeqCst) {
        let now = current.lock().unwrap_or_else(|p| p.into_inner()).clone();
        let silent = life.silent_for();
        let kept = now.message.clone().filter(|m| {
            // An entry let go stays let go: claimed again here it would be
            // taken back from the worker that took the job over.
            if let_go.as_ref().is_some_and(|(gone, run)| gone == m && *run == now.run) {
                return false;
            }
            // Another worker holds it now (the server said so): taken back
            // here, it would flip between the two, and if that worker died
            // this one's claims would keep it from every other.
            if now.told.taken_over.load(Ordering::SeqCst) {
                let_go = Some((m.clone(), now.run));
                return false;
            }
            if silent <= config.stall {
                return true;
            }
            tracing::warn!(
                "job {} showed no life for {:.0} s: its entry is left to other workers",
                now.job.map(|j| j.to_string()).unwrap_or_default(),
                silent.as_secs_f64()
            );
            let_go = Some((m.clone(), now.run));
            false
        });
        if let Some(message) = &kept {
            // At most one heartbeat period on Redis: a broker that drops
            // packets must not delay the HTTP heartbeat (which says the
            // entry is kept, see below) past the other workers' visibility
            // timeout.
            let wait = every.max(Duration::from_millis(500));
            if conn.is_none() {
                conn = client
                    .get_connection_with_timeout(wait)
                    .ok()
                    .filter(|c| c.set_read_timeout(Some(wait)).is_ok() && c.set_write_timeout(Some(wait)).is_ok());
            }
            if let Some(c) = conn.as_mut() {
                let refreshed: redis::RedisResult<redis::Value> = redis::cmd("XCLAIM")
                    .arg(STREAM)
                    .arg(GROUP)
                    .arg(&config.name)
                    .arg(0)
                    .arg(message)
                    .arg("JUSTID")
                    .query(c);
                if refreshed.is_err() {
                    conn = None;
                }
            }
        }
        match &now.message {
            Some(m) => keeps.decided(m, now.run, kept.is_some()),
            None => keeps.clear(),
        }
        nap(every, stop);
    }
}

/// Sleep `pause`, waking every 50 ms to see whether `stop` was set;
/// returns false when it was (the sleep then ends early).
fn nap(pause: Duration, stop: &AtomicBool) -> bool {
    let until = Instant::now() + pause;
    while Instant::now() < until {
        if stop.load(Ordering::SeqCst) {
            return false;
        }
        std::thread::sleep(Duration::from_millis(50).min(until.saturating_duration_since(Instant::now())));
    }
    !stop.load(Ordering::SeqCst)
}

/// How long a worker goes on trying to hand in a finished job's stems,
/// its completion or its failure while the server does not answer (a
/// restart, a deploy) or answers with a server error: the separation is
/// not thrown away for a few seconds of the server's absence.
const SEND_RETRY_FOR: Duration = Duration::from_secs(120);

/// One try at something sent to the server.
enum Try<T> {
    /// Answered (well or not): no second try.
    Done(T),
    /// Not reached, or a server error: worth another try.
    Again(String),
}

/// Call `attempt` until it is [`Try::Done`], pausing 1 s doubling to
/// [`MAX_BACKOFF`] between tries, for at most [`SEND_RETRY_FOR`] or until
/// `stop`; then the last trouble.
fn retrying<T>(stop: &AtomicBool, what: &str, mut attempt: impl FnMut() -> Try<T>) -> Result<T, String> {
    let deadline = Instant::now() + SEND_RETRY_FOR;
    let mut pause = Duration::from_secs(1);
    loop {
        match attempt() {
            Try::Done(v) => return Ok(v),
            Try::Again(why) => {
                if Instant::now() + pause > deadline || stop.load(Ordering::SeqCst) {
                    return Err(why);
                }
                tracing::warn!("{what}: {why}; trying again in {} s", pause.as_secs());
                nap(pause, stop);
                pause = (pause * 2).min(MAX_BACKOFF);
            }
        }
    }
}

/// `message=…&worker=…`, escaped.
fn holder_query(message: &str, worker: &str) -> String {
    url::form_urlencoded::Serializer::new(String::new())
        .append_pair("message", message)
        .append_pair("worker", worker)
        .finish()
}

/// Most bytes of a job's input a worker takes from its server: 32 GiB,
/// about 16 hours of 96 kHz 24-bit stereo WAV (no upload a person makes
/// comes near; the bound is against a server that sends without end).
const MAX_INPUT_BYTES: u64 = 32 << 30;

/// What `separate` says when the job was taken over by another worker.
const TAKEN_OVER: &str = "taken over by another worker";

/// Whether a refusal's body says another worker holds the job now (this one
/// stalled past the visibility timeout): then its entry is that worker's,
/// not to be acknowledged here.
fn is_taken_over(body: &str) -> bool {
    has_code(body, crate::broker::TAKEN_OVER_CODE)
}

/// `POST path` with `body`, waiting `wait` for the answer, on a thread of
/// its own, so that a stop while it waits (a completion sent before the
/// stop may wait [`COMPLETE_WAIT`], 30 min) ends the wait
/// [`COMPLETE_WAIT_STOPPING`] after the stop: `None`, the answer unheard
/// (the request goes on until the process ends).
fn complete_unless_stopped(
    server: &Server,
    path: &str,
    body: &serde_json::Value,
    wait: Duration,
    stop: &AtomicBool,
) -> Option<Result<Answer<serde_json::Value>, RemoteError>> {
    use std::sync::mpsc::RecvTimeoutError;
    let (tx, rx) = std::sync::mpsc::channel();
    let (s, p, b) = (server.clone(), path.to_string(), body.clone());
    let spawned = std::thread::Builder::new().name("stemroom-complete".into()).spawn(move || {
        let _ = tx.send(s.post_within::<serde_json::Value>(&p, &b, wait));
    });
    if spawned.is_err() {
        // No thread to spare: waited for here, as before.
        return Some(server.post_within(path, body, wait));
    }
    let mut stopped_at: Option<Instant> = None;
    loop {
        match rx.recv_timeout(Duration::from_millis(100)) {
            Ok(answer) => return Some(answer),
            Err(RecvTimeoutError::Disconnected) => {
                return Some(Ok(Answer::Trouble("the completion's request ended without an answer".into())))
            }
            Err(RecvTimeoutError::Timeout) if stop.load(Ordering::SeqCst) => {
                if stopped_at.get_or_insert_with(Instant::now).elapsed() >= COMPLETE_WAIT_STOPPING {
                    return None;
                }
            }
            Err(RecvTimeoutError::Timeout) => {}
        }
    }
}

/// Whether a refusal's body (the server's JSON error) carries `code`.
fn has_code(body: &str, code: &str) -> bool {
    serde_json::from_str::<serde_json::Value>(body).is_ok_and(|v| v["code"].as_str() == Some(code))
}

/// Whether `body` is the server's JSON error (`{"detail": ..., "code": ...}`),
/// not a page from a proxy in between.
fn is_api_error(body: &str) -> bool {
    serde_json::from_str::<serde_json::Value>(body).is_ok_and(|v| v["code"].is_string())
}

/// Errors another worker would meet too: the job fails at once. A link's
/// network trouble, a stall, a site blocking this worker's address or
/// asking it to sign in, and yt-dlp failing for a reason it does not name
/// are this worker's: another, on another network, may get the audio
/// (the server's attempt limit bounds the tries).
fn fatal_for_everyone(e: &stemroom_library::Error) -> bool {
    use stemroom_library::link::LinkError;
    match e {
        stemroom_library::Error::Internal(m) if m.starts_with(SERVER_FULL) => true,
        stemroom_library::Error::Link(
            LinkError::Network(_)
            | LinkError::Stalled(_)
            | LinkError::Blocked(_)
            | LinkError::SignInRequired(_)
            | LinkError::OutdatedSolver(_)
            | LinkError::Failed(_),
        ) => false,
        // This worker's model or ONNX Runtime: missing, damaged, not
        // fetchable from its network, a model id its older version does
        // not know, a GPU that fails. Another worker may well have them.
        stemroom_library::Error::Engine(stemroom_engine::Error::Model(_) | stemroom_engine::Error::Runtime(_)) => false,
        e => matches!(e.code(), ErrorCode::BadInput | ErrorCode::InvalidOptions | ErrorCode::Download),
    }
}

/// How the failure of a job whose stems the server's disk could not take
/// begins ([`server_full`]).
const SERVER_FULL: &str = "the server's disk is full";

/// The failure of a job whose stem `file` the server kept refusing with
/// 507 (its data folder below its free-space floor): fatal for everyone
/// ([`fatal_for_everyone`]).
fn server_full(file: &str) -> stemroom_library::Error {
    stemroom_library::Error::Internal(format!(
        "{SERVER_FULL}: it refused stem {file} for {} s; free space on the server and send the song again",
        SEND_RETRY_FOR.as_secs()
    ))
}

/// Longest pause of a worker whose jobs keep failing for its own reasons.
const MAX_TROUBLE_PAUSE: Duration = Duration::from_secs(300);

/// What went wrong in a row on this worker: jobs that failed for its own
/// reasons, and claims the server did not answer.
#[derive(Debug, Default)]
struct Strikes {
    jobs: u32,
    claims: u32,
}

/// Longest pause of a worker whose claims the server does not answer: a
/// server being deployed comes back in seconds, and the workers must not
/// idle long after it.
const MAX_CLAIM_PAUSE: Duration = Duration::from_secs(30);

/// How long a worker waits before it reads the stream again after
/// `strikes` claims in a row had no answer (it reaches Redis, not the
/// server): 2 s doubling to [`MAX_CLAIM_PAUSE`], so that workers that reach
/// the server get the entries instead of this one taking each back every
/// second; counted again from nothing at the next answered claim.
fn claim_pause(strikes: u32) -> Duration {
    match strikes {
        0 => Duration::ZERO,
        n => (Duration::from_secs(2) * 2u32.saturating_pow(n.min(10) - 1)).min(MAX_CLAIM_PAUSE),
    }
}

/// How long a worker waits before it reads the stream again after
/// `strikes` jobs in a row failed for its own reasons (its model, runtime,
/// GPU or network; they went back to the queue): 5 s doubling to
/// [`MAX_TROUBLE_PAUSE`], so that the jobs it gave back go to other
/// workers instead of all coming back to it and using up their attempts.
fn trouble_pause(strikes: u32) -> Duration {
    match strikes {
        0 => Duration::ZERO,
        n => (Duration::from_secs(5) * 2u32.saturating_pow(n.min(10) - 1)).min(MAX_TROUBLE_PAUSE),
    }
}

/// One job. Returns whether the entry may be acknowledged.
#[allow(clippy::too_many_arguments)]
fn run_one(
    config: &RemoteConfig,
    server: &Server,
    loaded: &mut Option<(String, Arc<Separator>)>,
    current: &Mutex<Current>,
    life: &Life,
    stop: &AtomicBool,
    (id, message): (JobId, &str),
    strikes: &mut Strikes,
) -> Result<bool, RemoteError> {
    life.touch();
    // The entry is kept fresh from now (the heartbeat's XCLAIM), not from
    // the claim's answer: a claim slower than the visibility timeout (a
    // busy server) would otherwise let another worker take the entry and
    // start the job a second time. The server hears of the job once it is
    // this worker's.
    {
        let mut now = current.lock().unwrap_or_else(|p| p.into_inner());
        *now = Current {
            job: None,
            message: Some(message.to_string()),
            provider: None,
            run: now.run + 1,
            told: Arc::default(),
        };
    }
    let visibility_ms = u64::try_from(config.visibility.as_millis()).unwrap_or(u64::MAX);
    let claim = serde_json::json!({ "message": message, "worker": config.name, "visibility_ms": visibility_ms });
    let spec: JobSpec = match server.post(&format!("/worker/jobs/{id}/claim"), &claim)? {
        Answer::Ok(s) => s,
        Answer::Refused(why) if has_code(&why, crate::broker::HOLDER_ALIVE_CODE) => {
            // Its worker is at work but could not keep the entry fresh
            // (Redis was out of its reach): left pending, to that worker,
            // which claims it back at its next heartbeat.
            tracing::info!("job {id} ({message}) is still kept by its worker: left to it");
            return Ok(false);
        }
        Answer::Refused(why) => {
            tracing::info!("job {id} ({message}) is not for this worker: {why}");
            return Ok(true);
        }
        Answer::Trouble(why) => {
            tracing::warn!("job {id}: cannot claim: {why}");
            // The claim may have been granted and its answer lost, or be
            // one this worker cannot read (a newer server's options): the
            // job would stay held by this worker, showing as running,
            // until a takeover. Given back now, counted as an attempt (a
            // job no worker can read fails after --max-attempts, saying
            // why). Refused when it was not granted; left pending then,
            // retried after the visibility timeout.
            let body = serde_json::json!({
                "message": message, "worker": config.name, "code": ErrorCode::Internal,
                "error": format!("the worker {} could not read the answer to its claim: {why}", config.name),
                "retry": true, "stopping": false,
            });
            let released = matches!(
                server.post::<serde_json::Value>(&format!("/worker/jobs/{id}/fail"), &body),
                Ok(Answer::Ok(_))
            );
            // A strike: a worker that reaches Redis but not the server
            // pauses (growing) before it reads the stream again, instead
            // of taking every entry back each second and starving the
            // workers that could run them.
            strikes.claims = strikes.claims.saturating_add(1);
            std::thread::sleep(Duration::from_secs(1));
            return Ok(released);
        }
    };
    strikes.claims = 0;
    tracing::info!("job {id} \"{}\" (attempt {})", spec.title, spec.attempt);
    life.touch();
    {
        let mut now = current.lock().unwrap_or_else(|p| p.into_inner());
        now.job = Some(id);
    }
    let work = config.work_dir.join(format!("job-{id}"));
    let _ = std::fs::remove_dir_all(&work);
    // Once the claim is granted every failure is reported (the job goes
    // back to the queue, or fails for everyone), never left held until a
    // takeover: a scratch folder that cannot be made, a panic (a bug, in
    // Stemroom or a decoder it links) taken as this job's internal error,
    // as the local worker takes it.
    let outcome = match std::fs::create_dir_all(&work) {
        Err(source) => Err(stemroom_library::Error::Output { path: work.clone(), source }),
        Ok(()) => std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            separate(config, server, loaded, current, life, stop, &spec, message, &work)
        }))
        .unwrap_or_else(|panic| {
            let what = stemroom_engine::error::panic_message(&*panic).unwrap_or_else(|| "a panic".into());
            Err(stemroom_library::Error::Internal(format!("the worker failed on this job ({what}): please report it")))
        }),
    };
    let _ = std::fs::remove_dir_all(&work);
    let fail = |code: ErrorCode, error: String, retry: bool, stopping: bool| -> Result<bool, RemoteError> {
        let body = serde_json::json!({
            "message": message, "worker": config.name, "code": code, "error": error, "retry": retry, "stopping": stopping,
        });
        // A stopping worker tries once (its stop waits for no server).
        let never = AtomicBool::new(stopping);
        let sent = retrying(if stopping { &never } else { stop }, &format!("job {id}: reporting its failure"), || {
            // (Stopping: a short wait, within a deploy's grace period.)
            let wait = if stopping { COMPLETE_WAIT_STOPPING } else { RESPONSE_WAIT };
            match server.post_within::<serde_json::Value>(&format!("/worker/jobs/{id}/fail"), &body, wait) {
                Ok(Answer::Trouble(why)) => Try::Again(why),
                other => Try::Done(other),
            }
        });
        match sent {
            Err(why) => {
                tracing::warn!("job {id}: cannot report the failure: {why}");
                Ok(false)
            }
            Ok(answer) => match answer? {
                // Taken over, or an earlier completion of it still being
                // filed (whose end decides): the entry stays pending.
                Answer::Refused(why) if is_taken_over(&why) || has_code(&why, crate::broker::BEING_ENDED_CODE) => {
                    Ok(false)
                }
                _ => Ok(true),
            },
        }
    };
    match outcome {
        Ok(done) => {
            strikes.jobs = 0;
            Ok(done)
        }
        Err(stemroom_library::Error::Cancelled) if stop.load(Ordering::SeqCst) => {
            fail(ErrorCode::Internal, format!("the worker {} stopped", config.name), true, true)
        }
        // Cancelled or deleted on the server: nothing to report.
        Err(stemroom_library::Error::Cancelled) => {
            tracing::info!("job {id} stopped: cancelled or deleted on the server");
            Ok(true)
        }
        Err(stemroom_library::Error::Internal(m)) if m == TAKEN_OVER => {
            tracing::warn!("job {id}: another worker took it over while this one stalled");
            Ok(false)
        }
        // ONNX Runtime failed to load, and never loads in this process:
        // every job would fail the same way, each using up an attempt. The
        // job goes back as at a stop, and the worker stops, saying why.
        Err(e) if stemroom_library::worker::runtime_failed_to_load(&e) => {
            tracing::error!("job {id}: {e}: this worker stops");
            stop.store(true, Ordering::SeqCst);
            fail(e.code(), stemroom_library::worker::plain_message(&e), true, true)
        }
        Err(e) => {
            let code = e.code();
            tracing::warn!("job {id} failed: {e}");
            let retry = !fatal_for_everyone(&e);
            // Failed while this worker stops (an upload or completion cut
            // short by the stop, a server away that it no longer waits
            // for): back in the queue without counting an attempt.
            let stopping = retry && stop.load(Ordering::SeqCst);
            if retry && !stopping {
                strikes.jobs = strikes.jobs.saturating_add(1);
            }
            fail(code, stemroom_library::worker::plain_message(&e), retry, stopping)
        }
    }
}

/// The server's check of a link job's host ([`JobSpec::public_only`]),
/// made again where the fetch happens: what the name resolves to from the
/// worker's network.
///
/// # Errors
/// [`LinkError::Blocked`](stemroom_library::link::LinkError::Blocked) with
/// the server's message: this worker's network, so the job is left to
/// another worker ([`fatal_for_everyone`] is false), as the server itself
/// took the link.
fn link_allowed(spec: &JobSpec, url: &str) -> Result<(), stemroom_library::link::LinkError> {
    if spec.public_only {
        crate::service::check_public_link(url).map_err(stemroom_library::link::LinkError::Blocked)?;
    }
    Ok(())
}

#[allow(clippy::too_many_arguments)]
fn separate(
    config: &RemoteConfig,
    server: &Server,
    loaded: &mut Option<(String, Arc<Separator>)>,
    current: &Mutex<Current>,
    life: &Life,
    stop: &AtomicBool,
    spec: &JobSpec,
    message: &str,
    work: &Path,
) -> Result<bool, stemroom_library::Error> {
    use stemroom_library::Error;
    let id = spec.job_id;
    let io = |path: &Path| {
        let path = path.to_path_buf();
        move |source| Error::Output { path, source }
    };
    let reporter = Reporter {
        server,
        worker: &config.name,
        job: id,
        message,
        provider: Mutex::new(None),
        stop,
        life,
        cancelled: AtomicBool::new(false),
        taken_over: AtomicBool::new(false),
        told: current.lock().unwrap_or_else(|p| p.into_inner()).told.clone(),
        throttle: Mutex::new(Throttle::new(Duration::from_millis(250))),
    };
    // A stop that came with the claim (or during the input or the model,
    // below) gives the job back at once, for another worker.
    if stop.load(Ordering::SeqCst) {
        return Err(Error::Cancelled);
    }
    // The input.
    let input = match &spec.url {
        Some(url) => {
            link_allowed(spec, url)?;
            let yt = stemroom_library::link::YtDlp::locate(None)?;
            // Its progress goes to the server once a second: people see
            // it, the server's stall watchdog hears the job is alive (a
            // long download makes no other call), and a cancel stops it.
            let mut last_post: Option<Instant> = None;
            let _held = life.hold();
            let downloaded = stemroom_library::link::download(
                &yt,
                url,
                &work.join("download"),
                stemroom_library::link::DEFAULT_STALL_TIMEOUT,
                &spec.download_limits.unwrap_or_default(),
                &mut |p| {
                    life.touch();
                    if last_post.is_none_or(|t| t.elapsed() >= Duration::from_secs(1)) {
                        last_post = Some(Instant::now());
                        reporter.post(JobState::Downloading { percent: p.percent }, p.eta_seconds);
                    }
                },
                &|| reporter.is_cancelled(),
            );
            if reporter.was_taken_over() {
                return Err(Error::Internal(TAKEN_OVER.into()));
            }
            downloaded.map_err(|e| match e {
                stemroom_library::link::LinkError::Cancelled => Error::Cancelled,
                e => e.into(),
            })?
        }
        None => {
            let url = format!("{}/worker/jobs/{id}/input?{}", server.base, holder_query(message, &config.name));
            // Asked again while the server is away, busy (503: its input
            // cannot be read for the moment) or a proxy between answers
            // without the server's own error; the server's refusals end it.
            let fetch = || -> Try<Result<ureq::http::Response<ureq::Body>, Error>> {
                let r = server
                    .agent
                    .get(&url)
                    .header("Authorization", &server.auth)
                    // A connection that dies without closing (a frozen
                    // server, a NAT entry dropped mid-input) fails instead
                    // of holding the worker for ever.
                    .config()
                    .timeout_per_read(Some(stemroom_engine::download::READ_TIMEOUT))
                    .build()
                    .call();
                let mut r = match r {
                    Ok(r) => r,
                    Err(e) => return Try::Again(e.to_string()),
                };
                let status = r.status().as_u16();
                if status == 200 {
                    return Try::Done(Ok(r));
                }
                let body = r.body_mut().read_to_string().unwrap_or_default();
                match status {
                    404 | 409 | 410 if !is_api_error(&body) => {
                        Try::Again(format!("HTTP {status} without the server's error"))
                    }
                    409 if is_taken_over(&body) => Try::Done(Err(Error::Internal(TAKEN_OVER.into()))),
                    404 | 409 | 410 => Try::Done(Err(Error::Cancelled)),
                    408 | 429 | 500..=599 => Try::Again(format!("HTTP {status}: {body}")),
                    _ => Try::Done(Err(Error::Internal(format!("cannot fetch the input: HTTP {status}: {body}")))),
                }
            };
            let held = life.hold();
            let fetched = retrying(stop, &format!("job {id}: fetching its input"), fetch);
            drop(held);
            let mut r = match fetched {
                Ok(r) => r?,
                Err(why) => return Err(Error::Internal(format!("cannot fetch the input: {why}"))),
            };
            let name = r
                .headers()
                .get("x-file-name")
                .and_then(|v| v.to_str().ok())
                .and_then(|n| n.rsplit_once('.').map(|(_, e)| e.to_string()))
                .filter(|e| e.chars().all(|c| c.is_ascii_alphanumeric()) && e.len() <= 5)
                .map(|e| format!("input.{e}"))
                .unwrap_or_else(|| "input".into());
            let path = work.join(name);
            let mut file = std::fs::File::create(&path).map_err(io(&path))?;
            // As long as the server says (it sends a stored file), and
            // never without end: a body that runs past it is refused
            // instead of filling this machine's disk.
            let declared = r
                .headers()
                .get("content-length")
                .and_then(|v| v.to_str().ok())
                .and_then(|v| v.trim().parse::<u64>().ok());
            let limit = declared.unwrap_or(MAX_INPUT_BYTES).min(MAX_INPUT_BYTES);
            let stopped = || reporter.is_cancelled();
            let mut body =
                Touching { inner: r.body_mut().with_config().limit(limit).reader(), life, stop: Some(&stopped) };
            let copied = std::io::copy(&mut body, &mut file);
            reporter.halt()?;
            copied.map_err(io(&path))?;
            path
        }
    };
    reporter.halt()?;
    // The model, loaded once and kept while jobs that use it follow.
    let sep = match loaded.as_ref() {
        Some((model, s)) if *model == spec.options.model => s.clone(),
        _ => {
            let runtime = RuntimeOptions {
                library: config.runtime_library.clone(),
                device: config.device,
                threads: config.threads,
            };
            // The fast preset's int8 model is made here the first time
            // (minutes on a new machine: a tool environment, then the
            // model), which gives no sign of life of its own.
            let _held = life.hold();
            // A stop of this worker stops it, and so does a cancel on the
            // server, told in the heartbeat's answer (this phase sends no
            // report: a report that fails would cancel the job, and a
            // network blip must not throw away minutes of tool installs).
            stemroom_engine::model::make_if_missing(&spec.options.model, config.model_dir.as_deref(), &|| {
                reporter.is_cancelled()
            })
            .map_err(|e| match e {
                stemroom_engine::model::ModelError::Cancelled => reporter.halt().err().unwrap_or(Error::Cancelled),
                e => stemroom_engine::Error::from(e).into(),
            })?;
            // One job at a time here: a model an earlier job loaded is let
            // go before another opens (each holds about 0.5 GB of weights
            // and 2 GB of arena; kept, jobs asking for three models, say
            // after a preset change, ran a GPU out of memory for good).
            if let Some((gone, _)) = loaded.take() {
                tracing::info!("released the {gone} model before opening {}", spec.options.model);
            }
            let s = Arc::new(Separator::open(&spec.options.model, config.model_dir.as_deref(), &runtime)?);
            *loaded = Some((spec.options.model.clone(), s.clone()));
            s
        }
    };
    reporter.halt()?;
    let provider = sep.provider().to_string();
    current.lock().unwrap_or_else(|p| p.into_inner()).provider = Some(provider.clone());
    *reporter.provider.lock().unwrap_or_else(|p| p.into_inner()) = Some(provider.clone());
    let out = work.join("out");
    let request = JobRequest {
        input,
        out_dir: out.clone(),
        filename: "{stem}.{ext}".into(),
        format: spec.options.format,
        clip: ClipMode::Rescale,
        two_stems: spec.options.two_stems.clone(),
        other_method: OtherMethod::Add,
        output_rate: OutputRate::Input,
        separate: SeparateOptions {
            shifts: spec.options.shifts as usize,
            overlap: spec.options.overlap,
            segment_frames: None,
            seed: u64::from(id),
        },
        scratch_dir: Some(work.to_path_buf()),
        checkpoint: None,
    };
    reporter.post(JobState::Decoding, None);
    let result = job::separate_file(&sep, &request, &reporter);
    if sep.fell_back() {
        *loaded = None;
    }
    if reporter.was_taken_over() {
        return Err(Error::Internal(TAKEN_OVER.into()));
    }
    let output = result?;
    // Cancelled on the server: nothing to send. A stop of this worker that
    // came after the last segment lets the finished stems go up first.
    if reporter.cancelled.load(Ordering::SeqCst) {
        return Err(Error::Cancelled);
    }
    reporter.post(JobState::Encoding, Some(0.0));
    // The stems, one by one, then the completion.
    let mut stems = Vec::new();
    for (stem, path) in &output.stems {
        let file = path.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
        let url = format!("{}/worker/jobs/{id}/stems/{file}?{}", server.base, holder_query(message, &config.name));
        let len = std::fs::metadata(path).map_err(io(path))?.len();
        // Sent again from the start while the server is away or answers
        // with a server error (a restart): the same stem replaces itself.
        let upload = || -> Try<Result<(), Error>> {
            // Streamed from the file, with its length.
            let f = match std::fs::File::open(path) {
                Ok(f) => f,
                Err(e) => return Try::Done(Err(io(path)(e))),
            };
            // Read through a counter of life; the length makes it a plain
            // (not chunked) upload.
            let mut body = Touching { inner: f, life, stop: None };
            let r = server
                .agent
                .put(&url)
                .header("Authorization", &server.auth)
                .header("Content-Length", len)
                // As the input's reads: a send that cannot go on fails.
                .config()
                .timeout_per_write(Some(stemroom_engine::download::READ_TIMEOUT))
                .build()
                .send(ureq::SendBody::from_reader(&mut body));
            // What the server's own refusal says (a proxy's bare 404 says
            // nothing: sent again, as for a server error).
            let r = r.map(|mut r| {
                let status = r.status().as_u16();
                let body =
                    if status == 200 { String::new() } else { r.body_mut().read_to_string().unwrap_or_default() };
                (status, is_api_error(&body).then(|| is_taken_over(&body)))
            });
            Try::Done(match r {
                Ok((200, _)) => Ok(()),
                Ok((409, Some(true))) => Err(Error::Internal(TAKEN_OVER.into())),
                Ok((s @ (404 | 409 | 410), None)) => return Try::Again(format!("HTTP {s} without the server's error")),
                Ok((404 | 409 | 410, _)) => Err(Error::Cancelled),
                // Too large for this server: any worker's stem would be (the
                // job fails for everyone instead of running again elsewhere).
                Ok((413, _)) => Err(Error::Engine(stemroom_engine::Error::InvalidOptions(format!(
                    "the server refuses stem {file} ({len} bytes) as larger than its limit"
                )))),
                Ok((s @ (408 | 429 | 500..=599), _)) => return Try::Again(format!("HTTP {s}")),
                Ok((s, _)) => Err(Error::Internal(format!("the server did not take stem {file}: HTTP {s}"))),
                Err(e) => return Try::Again(e.to_string()),
            })
        };
        let held = life.hold();
        let sent = retrying(stop, &format!("job {id}: uploading stem {file}"), upload);
        drop(held);
        match sent {
            Ok(r) => r?,
            // Still below the server's free-space floor after the retries:
            // any worker's stems would be refused too, so the job fails for
            // everyone instead of being separated again on each attempt
            // (and pausing healthy workers as if they were at fault).
            // (Not when the worker stops: the job goes back to the queue.)
            Err(why) if why.starts_with("HTTP 507") && !stop.load(Ordering::SeqCst) => return Err(server_full(&file)),
            Err(why) => return Err(Error::Internal(format!("cannot upload stem {file}: {why}"))),
        }
        stems.push(StemFile { stem: stem.clone(), path: file });
    }
    let body = serde_json::json!({
        "message": message, "worker": config.name, "stems": stems, "seconds": output.seconds, "provider": output.provider.to_string(),
        "duration_seconds": output.audio_seconds,
    });
    let held = life.hold();
    // An earlier send of this completion that the server is still filing
    // (its answer was cut: a proxy's read timeout) is waited for, as long
    // as a completion may take: it may yet fail, and the entry must stay
    // pending until the job's end is known.
    let asked = Instant::now();
    let completed = loop {
        let completed = retrying(stop, &format!("job {id}: handing in its stems"), || {
            let wait = if stop.load(Ordering::SeqCst) { COMPLETE_WAIT_STOPPING } else { COMPLETE_WAIT };
            match complete_unless_stopped(server, &format!("/worker/jobs/{id}/complete"), &body, wait, stop) {
                Some(Ok(Answer::Trouble(why))) => Try::Again(why),
                other => Try::Done(other),
            }
        });
        match &completed {
            Ok(Some(Ok(Answer::Refused(why))))
                if has_code(why, crate::broker::BEING_ENDED_CODE)
                    && asked.elapsed() < COMPLETE_WAIT
                    && !stop.load(Ordering::SeqCst) =>
            {
                tracing::info!("job {id}: the server is still filing an earlier send of its stems; asking again");
                nap(Duration::from_secs(5), stop);
            }
            _ => break completed,
        }
    };
    drop(held);
    let Some(completed) = completed.unwrap_or_else(|why| Some(Ok(Answer::Trouble(why)))) else {
        tracing::info!(
            "job {id}: stopping before the server answered its completion; the entry is left pending (the server files the stems all the same)"
        );
        return Ok(false);
    };
    match completed {
        Ok(Answer::Ok(_)) => {
            tracing::info!("job {id} done in {:.1} s on {}", output.seconds, output.provider);
            Ok(true)
        }
        Ok(Answer::Refused(why)) if is_taken_over(&why) => Err(Error::Internal(TAKEN_OVER.into())),
        // Still being filed when this worker stops (or after the longest
        // completion): its outcome is not known, so the entry stays pending.
        Ok(Answer::Refused(why)) if has_code(&why, crate::broker::BEING_ENDED_CODE) => {
            tracing::info!("job {id}: the server is still filing its stems; the entry is left pending");
            Ok(false)
        }
        Ok(Answer::Refused(why)) => {
            tracing::info!("job {id}: the server kept another result: {why}");
            Ok(true)
        }
        Ok(Answer::Trouble(why)) => Err(Error::Internal(format!("cannot complete: {why}"))),
        Err(e) => Err(Error::Internal(e.to_string())),
    }
}

#[cfg(test)]
mod complete_tests {
    use super::*;

    /// A completion whose answer does not come (the server files a long
    /// song on a slow disk, or hangs) is given up 15 s after a stop, not
    /// after the completion's 30 minutes.
    #[test]
    fn a_stop_ends_the_wait_for_a_completions_answer() {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
        let addr = listener.local_addr().expect("addr");
        // Takes the request and never answers.
        let held = std::thread::spawn(move || {
            let (mut c, _) = listener.accept().expect("accept");
            let mut buf = [0u8; 4096];
            while std::io::Read::read(&mut c, &mut buf).is_ok_and(|n| n > 0) {}
        });
        let server =
            Server { agent: ureq::Agent::new_with_defaults(), base: format!("http://{addr}"), auth: "Bearer x".into() };
        let stop = Arc::new(AtomicBool::new(false));
        let stopper = {
            let stop = stop.clone();
            std::thread::spawn(move || {
                std::thread::sleep(Duration::from_millis(500));
                stop.store(true, Ordering::SeqCst);
            })
        };
        let asked = Instant::now();
        let answer =
            complete_unless_stopped(&server, "/worker/jobs/1/complete", &serde_json::json!({}), COMPLETE_WAIT, &stop);
        let took = asked.elapsed();
        assert!(answer.is_none(), "unheard");
        assert!(took >= COMPLETE_WAIT_STOPPING && took < COMPLETE_WAIT_STOPPING + Duration::from_secs(5), "{took:?}");
        stopper.join().expect("stopper");
        drop(held);
    }
}

#[cfg(test)]
mod work_dir_tests {
    use super::*;

    #[test]
    fn dead_workers_scratch_folders_go_live_ones_stay() {
        let parent = tempfile::tempdir().unwrap();
        let at = |name: &str| parent.path().join(name);
        // Killed with its lock released (the OS drops it with the process).
        std::fs::create_dir_all(at("stemroom-worker-100/job-7")).unwrap();
        std::fs::write(at("stemroom-worker-100/stemroom.lock"), b"").unwrap();
        std::fs::write(at("stemroom-worker-100/job-7/input.wav"), b"RIFF").unwrap();
        // Killed, in today's naming.
        std::fs::create_dir_all(at("stemroom-worker-1-00ff00ff00ff00ff")).unwrap();
        std::fs::write(at("stemroom-worker-1-00ff00ff00ff00ff/stemroom.lock"), b"").unwrap();
        // A live worker: its lock held here.
        let live = at("stemroom-worker-200");
        let held = stemroom_library::lock::InstanceLock::acquire(&live).unwrap().unwrap();
        // Without a lock file: this test's own (live) pid stays, a dead pid goes.
        let mine = at(&format!("stemroom-worker-{}", std::process::id()));
        std::fs::create_dir_all(&mine).unwrap();
        std::fs::create_dir_all(at("stemroom-worker-2147483646")).unwrap();
        // Not a worker's folder.
        std::fs::create_dir_all(at("stemroom-worker-old")).unwrap();
        std::fs::create_dir_all(at("photos")).unwrap();

        let own = at("stemroom-worker-300");
        let lock = claim_work_dir(&own).unwrap();
        let mut left: Vec<String> = std::fs::read_dir(parent.path())
            .unwrap()
            .flatten()
            .map(|e| e.file_name().to_string_lossy().into_owned())
            .collect();
        left.sort();
        let mut want = vec![
            "photos".to_string(),
            "stemroom-worker-200".into(),
            "stemroom-worker-300".into(),
            format!("stemroom-worker-{}", std::process::id()),
            "stemroom-worker-old".into(),
        ];
        want.sort();
        assert_eq!(left, want);
        assert!(claim_work_dir(&own).is_err(), "one worker per scratch folder");
        assert!(own.join("stemroom.lock").is_file(), "a refused claim leaves the holder's folder alone");
        drop((lock, held));
        assert!(!own.exists(), "the holder removes its folder when it stops");
        // Two workers of one pid (containers sharing the folder) each get
        // their own.
        let (a, b) = (work_dir_in(parent.path()), work_dir_in(parent.path()));
        assert_ne!(a, b);
        let name = a.file_name().unwrap().to_string_lossy().into_owned();
        assert!(name.starts_with(&format!("stemroom-worker-{}-", std::process::id())), "{name}");
        let (la, lb) = (claim_work_dir(&a).unwrap(), claim_work_dir(&b).unwrap());
        assert!(a.is_dir() && b.is_dir(), "neither sweeps the other's");
        drop((la, lb));
    }
}

#[cfg(test)]
mod tests {
    use redis::Value as V;

    use super::entries;

    fn s(x: &str) -> V {
        V::BulkString(x.as_bytes().to_vec())
    }

    fn entry(id: &str, job: &str) -> V {
        V::Array(vec![s(id), V::Array(vec![s("job"), s(job)])])
    }

    #[test]
    fn a_link_job_of_a_server_that_fetches_only_public_links_is_checked_by_the_worker_too() {
        use stemroom_library::link::LinkError;
        // A spec as the server sends it (JSON); an older server's has no
        // `public_only`: no check, as before.
        let spec = |public_only: Option<bool>| -> super::JobSpec {
            let mut v = serde_json::json!({
                "job_id": 7, "title": "t", "url": "http://127.0.0.1:9/a.wav", "attempt": 1,
                "options": stemroom_library::queue::Settings::default().job_options(),
            });
            if let Some(p) = public_only {
                v["public_only"] = p.into();
            }
            serde_json::from_value(v).unwrap()
        };
        for private in
            ["http://127.0.0.1:9/a.wav", "http://[::1]/a", "http://169.254.169.254/latest", "http://10.1.2.3/"]
        {
            let e = super::link_allowed(&spec(Some(true)), private).unwrap_err();
            assert!(matches!(&e, LinkError::Blocked(m) if m.contains("not a public address")), "{private}: {e:?}");
            assert!(!super::fatal_for_everyone(&stemroom_library::Error::Link(e)), "left to another worker");
        }
        super::link_allowed(&spec(Some(true)), "http://93.184.216.34/a.wav").expect("a public address");
        super::link_allowed(&spec(Some(false)), "http://127.0.0.1:9/a.wav").expect("private links allowed");
        assert!(!spec(None).public_only);
        super::link_allowed(&spec(None), "http://127.0.0.1:9/a.wav").expect("an older server's spec");
    }

    /// A progress report to a server that takes the request and never
    /// answers gives up within PROGRESS_WAIT, and stops nothing: it is
    /// posted from the download's read loop, whose stall timer (60 s) a
    /// 120 s wait outlasted, killing a healthy download.
    #[test]
    fn a_progress_report_does_not_wait_for_a_slow_server() {
        use std::sync::atomic::{AtomicBool, Ordering};
        use std::sync::{Arc, Mutex};
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        // Accepts, reads, and holds the connection without an answer.
        std::thread::spawn(move || {
            let mut held = Vec::new();
            for conn in listener.incoming().flatten() {
                held.push(conn);
            }
        });
        let server = super::Server::at(&format!("http://{addr}"), "t");
        let (stop, life) = (AtomicBool::new(false), super::Life::new());
        let reporter = super::Reporter {
            server: &server,
            worker: "w",
            job: 1,
            message: "1-0",
            provider: Mutex::new(None),
            stop: &stop,
            life: &life,
            cancelled: AtomicBool::new(false),
            taken_over: AtomicBool::new(false),
            told: Arc::new(super::Told::default()),
            throttle: Mutex::new(stemroom_engine::progress::Throttle::new(std::time::Duration::from_millis(250))),
        };
        let t0 = std::time::Instant::now();
        reporter.post(stemroom_library::queue::JobState::Downloading { percent: Some(5.0) }, None);
        let took = t0.elapsed();
        assert!(took < super::PROGRESS_WAIT + std::time::Duration::from_secs(3), "{took:?}");
        assert!(
            !reporter.cancelled.load(Ordering::SeqCst) && !stop.load(Ordering::SeqCst),
            "an unanswered report stops nothing"
        );
    }

    #[test]
    fn a_takeover_refusal_is_told_apart_from_a_cancel() {
        assert!(super::is_taken_over(r#"{"detail": "job 3 is held by gpu2", "code": "taken_over"}"#));
        assert!(!super::is_taken_over(r#"{"detail": "job 3 is not running: stop", "code": "conflict"}"#));
        assert!(!super::is_taken_over("not json"));
    }

    #[test]
    fn a_links_trouble_on_this_workers_network_is_left_to_another_worker() {
        use stemroom_library::link::LinkError;
        use stemroom_library::Error;
        for mine in [
            LinkError::Network("timed out".into()),
            LinkError::Stalled(30),
            LinkError::Blocked("HTTP Error 403".into()),
            LinkError::SignInRequired("confirm you're not a bot".into()),
            LinkError::OutdatedSolver("n challenge solving failed".into()),
            LinkError::Failed("exit 1".into()),
        ] {
            assert!(!super::fatal_for_everyone(&Error::Link(mine)));
        }
        for everyones in [
            LinkError::Unavailable("Video unavailable".into()),
            LinkError::NoMedia("no formats".into()),
            LinkError::UnsupportedSite("example.com".into()),
            LinkError::Refused("a live stream".into()),
            LinkError::NotAUrl("x".into()),
        ] {
            assert!(super::fatal_for_everyone(&Error::Link(everyones)));
        }
    }

    /// This worker's model or runtime trouble is left to another worker:
    /// a model it cannot fetch from its network, one its older version
    /// does not know. A damaged input is everyone's.
    #[test]
    fn a_workers_own_model_or_runtime_trouble_is_left_to_another_worker() {
        use stemroom_engine::model::ModelError;
        use stemroom_library::Error;
        let mine = [
            ModelError::Network("connection refused".into()),
            ModelError::UnknownModel { id: "htdemucs_2027".into(), known: "htdemucs".into() },
        ];
        for e in mine {
            let e = Error::Engine(stemroom_engine::Error::Model(e));
            assert!(!super::fatal_for_everyone(&e), "{e}");
        }
        let input = Error::Engine(stemroom_engine::Error::InvalidOptions("--shifts 99".into()));
        assert!(super::fatal_for_everyone(&input));
        // The server's disk full: every worker's stems would be refused,
        // so the job is not separated again on each attempt; said plainly.
        let full = super::server_full("vocals.wav");
        assert!(super::fatal_for_everyone(&full));
        let said = stemroom_library::worker::plain_message(&full);
        assert!(said.contains("the server's disk is full") && said.contains("vocals.wav"), "{said}");
        assert!(!super::fatal_for_everyone(&Error::Internal("cannot upload stem vocals.wav: HTTP 503".into())));
    }

    /// A send the server did not take (away for a restart) is tried again
    /// until it is answered; a stopping worker tries once.
    #[test]
    fn a_send_is_tried_again_until_answered_and_once_when_stopping() {
        use super::{retrying, Try};
        use std::sync::atomic::AtomicBool;
        let mut tries = 0;
        let got = retrying(&AtomicBool::new(false), "test", || {
            tries += 1;
            if tries < 2 {
                Try::Again("connection refused".into())
            } else {
                Try::Done(tries)
            }
        });
        assert_eq!(got, Ok(2));
        let mut tries = 0;
        let got: Result<(), String> = retrying(&AtomicBool::new(true), "test", || {
            tries += 1;
            Try::Again("HTTP 502".into())
        });
        assert_eq!((got, tries), (Err("HTTP 502".to_string()), 1));
    }

    #[test]
    fn a_worker_in_trouble_pauses_longer_each_time_up_to_five_minutes() {
        use std::time::Duration;
        let p: Vec<Duration> = (0..12).map(super::trouble_pause).collect();
        assert_eq!(p[0], Duration::ZERO, "no pause while jobs go well");
        assert_eq!((p[1], p[2], p[3]), (Duration::from_secs(5), Duration::from_secs(10), Duration::from_secs(20)));
        assert!(p.windows(2).all(|w| w[0] <= w[1]));
        assert_eq!(p[11], super::MAX_TROUBLE_PAUSE);
        // Claims the server did not answer (a deploy): shorter, 30 s at most.
        let c: Vec<Duration> = (0..8).map(super::claim_pause).collect();
        assert_eq!((c[0], c[1], c[2]), (Duration::ZERO, Duration::from_secs(2), Duration::from_secs(4)));
        assert_eq!(c[7], super::MAX_CLAIM_PAUSE);
    }

    #[test]
    fn xautoclaim_replies_of_redis_6_2_and_7_and_xreadgroup_replies_are_read() {
        let want = vec![("1-0".to_string(), Some(7))];
        // Redis 6.2: [cursor, entries]; 7.0+: [cursor, entries, deleted ids].
        let v62 = V::Array(vec![s("0-0"), V::Array(vec![entry("1-0", "7")])]);
        let v70 = V::Array(vec![s("0-0"), V::Array(vec![entry("1-0", "7")]), V::Array(vec![])]);
        assert_eq!(entries(&v62), want);
        assert_eq!(entries(&v70), want);
        let next = V::Array(vec![s("1712-3"), V::Array(vec![]), V::Array(vec![])]);
        assert_eq!(super::autoclaim_cursor(&next).as_deref(), Some("1712-3"));
        assert_eq!(super::autoclaim_cursor(&v62).as_deref(), Some("0-0"));
        // XREADGROUP (RESP2): [[stream, entries]].
        let read = V::Array(vec![V::Array(vec![s("stemroom:jobs"), V::Array(vec![entry("1-0", "7")])])]);
        assert_eq!(entries(&read), want);
        assert!(entries(&V::Nil).is_empty());
    }
}

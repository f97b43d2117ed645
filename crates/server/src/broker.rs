//! `stemroom serve --broker redis://…`: accepted jobs go on a Redis stream
//! for `stemroom worker`s on other machines instead of the local worker.
//! The SQLite database stays the record of jobs, status and results.
//!
//! - Stream [`STREAM`], consumer group [`GROUP`]; each entry is one field
//!   `job` = the job id. A publisher task puts every queued job on the stream
//!   once (the database remembers which are), reconnecting with backoff; when
//!   the broker restarted (another `run_id`) or its stream is gone it
//!   publishes every queued job again (it may have lost entries; duplicates
//!   are refused at claim, see [`stemroom_library::queue::broker`]); at this
//!   server's start, and every 15 s, queued jobs whose entries are missing
//!   are published again.
//! - Workers talk to this server over HTTP with the token: claim a job
//!   (`POST /worker/jobs/{id}/claim`), fetch its input, post progress (the
//!   answer says whether to stop: cancel and delete reach the worker at its
//!   next segment), upload the stems one by one, then complete; or fail
//!   (`retry` puts it back in the queue, up to the attempt limit). The
//!   first complete result of a job wins; later ones are refused.
//! - Workers post a heartbeat; `GET /status` lists them, and one silent for
//!   [`GONE_AFTER`] is shown as gone.
//! - A watchdog ([`watch`]) puts a running job back in the queue when its
//!   worker sent nothing of the job (progress, input or stem bytes, a
//!   completion) for the stall timeout: the worker hangs while its
//!   heartbeat thread still keeps the stream entry, or the entry went with
//!   the broker's data. The job is published under a new entry; the old
//!   holder hears "stop" at its next call. The same task removes staged
//!   stems that no running job's holder owns.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::body::Body;
use axum::extract::{Path as UrlPath, Query, Request, State};
use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post, put};
use axum::{Json, Router};
use serde::{Deserialize, Serialize};
use stemroom_engine::ErrorCode;
use stemroom_library::queue::broker::{Claim, RunningJob};
use stemroom_library::queue::{JobId, JobOptions, JobSource, JobState, QueueError, StemFile};
use stemroom_library::song::{self, SongMetadata};
use stemroom_library::worker::{JobProgress, WorkerListener};
use tokio::io::AsyncWriteExt;

use crate::error::{ApiError, ServerError};
use crate::service::Service;

/// The stream jobs go on.
pub const STREAM: &str = "stemroom:jobs";
/// The consumer group workers read it in.
pub const GROUP: &str = "stemroom-workers";
/// A worker silent this long is shown as gone.
pub const GONE_AFTER: Duration = Duration::from_secs(60);
/// Claims a job may take before it is marked failed (the default).
pub const DEFAULT_MAX_ATTEMPTS: u32 = 3;
/// Default stall timeout: a running job whose worker sent nothing of it for
/// this long goes back to the queue. Ten minutes: far above one segment
/// with 20 shifts on a slow CPU (the longest silence between two progress
/// reports), or the first build of the fast preset's model.
pub const DEFAULT_STALL_TIMEOUT: Duration = Duration::from_secs(600);
/// How often the publisher checks the broker when nothing happens.
const PING_EVERY: Duration = Duration::from_secs(2);

/// How often the publisher checks that every queued job it published still
/// has its entry on the stream ([`missing_entries`]): one taken away while
/// Redis kept the stream (an operator's `XTRIM` or `XDEL`, a failover to a
/// replica that had not seen it, an `XADD` whose error was not heard) would
/// otherwise leave its job queued for ever, with nothing to run it.
const RECONCILE_EVERY: Duration = Duration::from_secs(15);

/// Most stream entries read per `XRANGE` call of [`missing_entries`].
const RECONCILE_PAGE: usize = 1000;

/// One field of a stream entry, name and value as bytes.
type StreamField = (Vec<u8>, Vec<u8>);

/// Of `published` (queued jobs recorded as on the stream), the ones with
/// no entry on it. The stream holds only entries not yet done (each is
/// deleted once its job ends), so reading it whole is reading the queue.
/// `published` must be listed before the stream is read: a job published
/// after the listing is not looked at.
async fn missing_entries(
    conn: &mut redis::aio::MultiplexedConnection,
    published: &[JobId],
) -> redis::RedisResult<Vec<JobId>> {
    let mut on_stream = std::collections::HashSet::new();
    let mut from = "-".to_string();
    loop {
        // Fields as bytes: one entry another writer made with a value that
        // is not UTF-8 failed the whole page, and so every check, for good.
        let page: Vec<(String, Vec<StreamField>)> = redis::cmd("XRANGE")
            .arg(STREAM)
            .arg(&from)
            .arg("+")
            .arg("COUNT")
            .arg(RECONCILE_PAGE)
            .query_async(conn)
            .await?;
        for (_, fields) in &page {
            on_stream.extend(
                fields
                    .iter()
                    .filter(|(k, _)| k == b"job")
                    .filter_map(|(_, v)| std::str::from_utf8(v).ok()?.parse::<JobId>().ok()),
            );
        }
        match page.last() {
            // The next page starts after the last entry read (exclusive
            // ranges: Redis 6.2).
            Some((last, _)) if page.len() == RECONCILE_PAGE => from = format!("({last}"),
            _ => break,
        }
    }
    Ok(published.iter().copied().filter(|id| !on_stream.contains(id)).collect())
}
/// Longest wait between two reconnection tries.
const MAX_BACKOFF: Duration = Duration::from_secs(10);

/// What a worker last said of itself.
#[derive(Debug, Clone)]
struct Seen {
    device: String,
    provider: Option<String>,
    job: Option<JobId>,
    at: Instant,
}

/// A worker silent this long is no longer listed (a day).
const FORGET_AFTER: Duration = Duration::from_secs(24 * 3600);
/// Most workers listed at once.
const MAX_WORKERS: usize = 1000;
/// Longest device or provider text kept from a heartbeat.
const MAX_WORKER_FIELD_CHARS: usize = 64;

/// The broker side of a server.
#[derive(Debug)]
pub struct Broker {
    client: redis::Client,
    /// Wakes the publisher (a job was queued).
    pub notify: tokio::sync::Notify,
    workers: Mutex<HashMap<String, Seen>>,
    /// Claims allowed per job.
    pub max_attempts: u32,
    /// The broker URL without its password, for messages.
    pub shown: String,
    /// See [`crate::config::ServerConfig::stall_timeout`].
    pub stall: Duration,
    /// When each running job's holder last sent something of it.
    touched: Mutex<HashMap<JobId, Instant>>,
    /// When each running job's holder last said, in a heartbeat, that it
    /// keeps the job's stream entry (see [`Heartbeat::keeps`]), or was
    /// granted it; `None` once it said it lets it go.
    kept: Mutex<HashMap<JobId, (String, Option<Instant>)>>,
    /// When this server started: the holders of jobs claimed before (whose
    /// keeps it has not heard yet) count as keeping them for one window.
    started: Instant,
    /// Jobs whose completion is under way (their stems being moved into
    /// the library and analysed): never stalled.
    completing: Mutex<std::collections::HashSet<JobId>>,
}

/// A URL with its password replaced by `***`.
pub fn redact(url: &str) -> String {
    match url::Url::parse(url) {
        Ok(mut u) if u.password().is_some() => {
            let _ = u.set_password(Some("***"));
            u.to_string()
        }
        _ => url.to_string(),
    }
}

impl Broker {
    /// A broker at `url` (`redis://[user:password@]host:port/db`, or
    /// `rediss://` for TLS). Nothing connects yet.
    ///
    /// # Errors
    /// [`ServerError::Config`] for a URL the client does not take.
    pub fn new(url: &str, max_attempts: u32, stall: Duration) -> Result<Self, ServerError> {
        let client =
            redis::Client::open(url).map_err(|e| ServerError::Config(format!("--broker {}: {e}", redact(url))))?;
        Ok(Broker {
            client,
            notify: tokio::sync::Notify::new(),
            workers: Mutex::new(HashMap::new()),
            max_attempts: max_attempts.max(1),
            shown: redact(url),
            stall,
            touched: Mutex::new(HashMap::new()),
            kept: Mutex::new(HashMap::new()),
            started: Instant::now(),
            completing: Mutex::new(std::collections::HashSet::new()),
        })
    }

    /// The holder of job `id` showed life (called on its claim, progress,
    /// input and stem bytes, completion).
    pub fn touch(&self, id: JobId) {
        self.touched.lock().unwrap_or_else(|p| p.into_inner()).insert(id, Instant::now());
    }

    /// Job `id` left its holder (released): its next holder's silence is
    /// counted from its claim, not from the last one's last word.
    fn forget(&self, id: JobId) {
        self.touched.lock().unwrap_or_else(|p| p.into_inner()).remove(&id);
    }

    /// Worker `worker`, holding job `id`, said it keeps the job's stream
    /// entry (not over another worker's record: a late heartbeat of the
    /// last holder does not replace its successor's grant).
    fn kept(&self, id: JobId, worker: &str) {
        let mut kept = self.kept.lock().unwrap_or_else(|p| p.into_inner());
        if kept.get(&id).is_none_or(|(w, _)| w == worker) {
            kept.insert(id, (worker.to_string(), Some(Instant::now())));
        }
    }

    /// Worker `worker` was just granted job `id`: it keeps the entry from
    /// now (its first keep comes only after a pass of its keeper and a
    /// heartbeat, seconds later, while a claimer with a short visibility
    /// timeout may find the entry idle at once).
    fn granted(&self, id: JobId, worker: &str) {
        self.kept.lock().unwrap_or_else(|p| p.into_inner()).insert(id, (worker.to_string(), Some(Instant::now())));
    }

    /// Worker `worker`, holding job `id`, said it no longer keeps the
    /// job's entry (the job showed no life): another worker may take it
    /// over at once, not only once [`HOLDER_LIVENESS_FLOOR`] has passed.
    fn let_go(&self, id: JobId, worker: &str) {
        let mut kept = self.kept.lock().unwrap_or_else(|p| p.into_inner());
        // (Not another holder's record: its word stands.)
        if kept.get(&id).is_none_or(|(w, _)| w == worker) {
            kept.insert(id, (worker.to_string(), None));
        }
    }

    /// Whether worker `worker` said it keeps job `id`'s entry (or was
    /// granted it) within the last `within`. Of a job nothing was heard
    /// of since this server started (claimed before a restart), within
    /// `within` of the start: its holder's keeps reach this server only
    /// from then on.
    fn kept_within(&self, id: JobId, worker: &str, within: Duration) -> bool {
        match self.kept.lock().unwrap_or_else(|p| p.into_inner()).get(&id) {
            Some((w, Some(at))) => w == worker && at.elapsed() <= within,
            Some((_, None)) => false,
            None => self.started.elapsed() <= within,
        }
    }

    /// Whether job `id`'s end (a completion or a failure) is under way.
    fn is_ending(&self, id: JobId) -> bool {
        self.completing.lock().unwrap_or_else(|p| p.into_inner()).contains(&id)
    }

    /// Mark job `id`'s end (a completion or a failure) as under way until
    /// the guard is dropped; `None` while another is under way for it.
    fn ending(self: &Arc<Self>, id: JobId) -> Option<Completing> {
        let fresh = self.completing.lock().unwrap_or_else(|p| p.into_inner()).insert(id);
        // Made only when taken: dropping one removes the mark.
        fresh.then(|| Completing(Arc::clone(self), id))
    }

    /// Of `running` (job, holder), the held jobs whose holder has been
    /// silent longer than the stall timeout. A job seen for the first time
    /// starts its clock now (after a server restart, every worker gets the
    /// full timeout); jobs no longer running are forgotten.
    fn stalled(&self, running: &[RunningJob], now: Instant) -> Vec<(JobId, String, String)> {
        let completing = self.completing.lock().unwrap_or_else(|p| p.into_inner()).clone();
        let mut touched = self.touched.lock().unwrap_or_else(|p| p.into_inner());
        touched.retain(|id, _| running.iter().any(|(r, _)| r == id));
        // (A record younger than the floor stays: `running` may have been
        // read before a claim granted since, whose record this is.)
        self.kept.lock().unwrap_or_else(|p| p.into_inner()).retain(|id, (_, at)| {
            running.iter().any(|(r, _)| r == id) || at.is_some_and(|t| t.elapsed() < HOLDER_LIVENESS_FLOOR)
        });
        let mut out = Vec::new();
        for (id, holder) in running {
            let Some((message, worker)) = holder else { continue };
            if completing.contains(id) {
                touched.insert(*id, now);
                continue;
            }
            let at = *touched.entry(*id).or_insert(now);
            if now.saturating_duration_since(at) > self.stall {
                out.push((*id, message.clone(), worker.clone()));
            }
        }
        out
    }

    fn seen(&self, name: &str, device: &str, provider: Option<String>, job: Option<JobId>) {
        let mut w = self.workers.lock().unwrap_or_else(|p| p.into_inner());
        // Workers' names carry their pid: every restart is a new one. Those
        // gone for a day are forgotten, and the list is bounded (the
        // longest gone first), so heartbeats cannot grow it without end.
        w.retain(|_, s| s.at.elapsed() < FORGET_AFTER);
        if w.len() >= MAX_WORKERS && !w.contains_key(name) {
            if let Some(oldest) = w.iter().min_by_key(|(_, s)| s.at).map(|(n, _)| n.clone()) {
                w.remove(&oldest);
            }
        }
        let short = |t: &str| t.chars().take(MAX_WORKER_FIELD_CHARS).collect::<String>();
        w.insert(
            name.to_string(),
            Seen { device: short(device), provider: provider.as_deref().map(short), job, at: Instant::now() },
        );
    }

    /// The workers heard from, for `GET /status`.
    pub fn workers(&self) -> Vec<WorkerView> {
        let w = self.workers.lock().unwrap_or_else(|p| p.into_inner());
        let mut list: Vec<WorkerView> = w
            .iter()
            .filter(|(_, s)| s.at.elapsed() < FORGET_AFTER)
            .map(|(name, s)| WorkerView {
                name: name.clone(),
                device: s.device.clone(),
                provider: s.provider.clone(),
                current_job: s.job.map(|j| j.to_string()),
                last_seen_seconds: s.at.elapsed().as_secs_f64(),
                gone: s.at.elapsed() > GONE_AFTER,
            })
            .collect();
        list.sort_by(|a, b| a.name.cmp(&b.name));
        list
    }
}

/// A completion or failure under way (see [`Broker::ending`]).
struct Completing(Arc<Broker>, JobId);

impl Drop for Completing {
    fn drop(&mut self) {
        self.0.completing.lock().unwrap_or_else(|p| p.into_inner()).remove(&self.1);
        self.0.touch(self.1);
    }
}

/// A worker as `GET /status` lists it.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct WorkerView {
    pub name: String,
    /// The device it was started with (`auto`, `cpu`, `cuda`).
    pub device: String,
    /// The execution provider its network runs on (`cpu`, `cuda`).
    pub provider: Option<String>,
    pub current_job: Option<String>,
    /// Seconds since it was last heard from.
    pub last_seen_seconds: f64,
    /// Silent for more than 60 s.
    pub gone: bool,
}

/// Create the consumer group (and the stream) unless it exists.
async fn ensure_group(conn: &mut redis::aio::MultiplexedConnection) -> redis::RedisResult<()> {
    group_exists(create_group(true).query_async(conn).await)
}

/// `XGROUP CREATE` of the workers' group, from the stream's start. Only the
/// server makes the stream (`make_stream`): a stream that is gone (a broker
/// restarted without saving, flushed, or one that evicted it) tells the
/// server to publish its queued jobs again, which a worker's empty new
/// stream would hide. Workers create the group on the stream the server made.
pub(crate) fn create_group(make_stream: bool) -> redis::Cmd {
    let mut cmd = redis::cmd("XGROUP");
    cmd.arg("CREATE").arg(STREAM).arg(GROUP).arg("0");
    if make_stream {
        cmd.arg("MKSTREAM");
    }
    cmd
}

/// The answer to [`create_group`]: made, or there already (`BUSYGROUP`).
pub(crate) fn group_exists(made: redis::RedisResult<()>) -> redis::RedisResult<()> {
    match made {
        Err(e) if e.code() == Some("BUSYGROUP") => Ok(()),
        other => other,
    }
}

/// How long the publisher waits for one reply of Redis. redis-rs's default
/// (500 ms) is outlasted by a `BGSAVE` fork or an fsync stall on a busy
/// broker, and every lost connection costs a reconnection.
const REPLY_TIMEOUT: Duration = Duration::from_secs(10);

/// The `run_id` of the Redis server behind `conn` (`INFO server`): a new
/// one means it restarted, and may have come back from a snapshot older
/// than the entries this server added. `None` when `INFO` is refused (some
/// managed services rename it).
async fn run_id(conn: &mut redis::aio::MultiplexedConnection) -> Option<String> {
    let info: String = redis::cmd("INFO").arg("server").query_async(conn).await.ok()?;
    info.lines().find_map(|l| l.strip_prefix("run_id:")).map(|id| id.trim().to_string())
}

/// Put queued jobs on the stream, forever (aborted when the server stops).
pub async fn publish(service: Arc<Service>, broker: Arc<Broker>) {
    let mut conn: Option<redis::aio::MultiplexedConnection> = None;
    // Whether Redis may have lost entries: the queued jobs are published
    // again at the next connection (a job still on the stream gets a second
    // entry, refused at claim). A stream found gone counts, and so does a
    // broker that restarted since the last connection (another `run_id`).
    // A connection lost to the network, with the same broker and its
    // stream there after it, does not: publishing every queued job again
    // at each flap only grew the stream. Nor does this server's own start
    // with the stream there (a deploy that restarted it three times gave
    // every queued job four entries): the entries it lost while this
    // server was down are looked for at once instead (`missing_entries`).
    let mut lost = false;
    let mut first = true;
    let mut broker_run: Option<String> = None;
    let config = redis::AsyncConnectionConfig::new()
        .set_connection_timeout(Some(Duration::from_secs(5)))
        .set_response_timeout(Some(REPLY_TIMEOUT));
    let mut backoff = Duration::from_millis(200);
    let mut reconciled = Instant::now();
    loop {
        if conn.is_none() {
            let connected = tokio::time::timeout(
                Duration::from_secs(5) + REPLY_TIMEOUT,
                broker.client.get_multiplexed_async_connection_with_config(&config),
            )
            .await;
            match connected {
                Ok(Ok(mut c)) => {
                    let had_stream: redis::RedisResult<bool> =
                        redis::cmd("EXISTS").arg(STREAM).query_async(&mut c).await;
                    let run = run_id(&mut c).await;
                    // Known lost from here until the queued jobs are on the
                    // stream again, whatever fails in between (a group made
                    // whose reply was lost, a busy database).
                    // (A broker that refuses `INFO` gives no `run_id`: its
                    // stream found there is taken as whole, and entries it
                    // lost are found by the reconciliation below.)
                    if !matches!(had_stream, Ok(true)) || (!first && run != broker_run) {
                        lost = true;
                    }
                    if first {
                        // (The stream there: its entries are checked at
                        // this wake, not RECONCILE_EVERY from now.)
                        reconciled = Instant::now().checked_sub(RECONCILE_EVERY).unwrap_or(reconciled);
                    }
                    first = false;
                    broker_run = run;
                    match ensure_group(&mut c).await {
                        Ok(()) => {
                            tracing::info!("broker {}: connected", broker.shown);
                            let republished = !lost
                                || match service.queue.republish_queued() {
                                    Ok(n) => {
                                        if n > 0 {
                                            tracing::info!("publishing {n} queued job(s) again");
                                        }
                                        true
                                    }
                                    Err(e) => {
                                        tracing::error!("the queue cannot be read: {e}");
                                        false
                                    }
                                };
                            // (Not republished: connected again after the
                            // backoff, and tried again.)
                            if republished {
                                conn = Some(c);
                                lost = false;
                                backoff = Duration::from_millis(200);
                            }
                        }
                        Err(e) => tracing::warn!("broker {}: {e}", broker.shown),
                    }
                }
                Ok(Err(e)) => tracing::warn!(
                    "broker {} unreachable: {e}; retrying in {:.1} s",
                    broker.shown,
                    backoff.as_secs_f64()
                ),
                Err(_) => tracing::warn!("broker {} does not answer; retrying", broker.shown),
            }
            if conn.is_none() {
                tokio::time::sleep(backoff).await;
                backoff = (backoff * 2).min(MAX_BACKOFF);
                continue;
            }
        }
        let Some(c) = conn.as_mut() else { continue };
        // Alive, and still holding the stream, at every wake (a job added,
        // or every PING_EVERY): one that is gone (a broker restarted without
        // saving, flushed, or one that evicted it) lost its entries, and the
        // next connection makes it again and publishes the queued jobs again.
        let there: redis::RedisResult<bool> = redis::cmd("EXISTS").arg(STREAM).query_async(c).await;
        let mut failed = !matches!(there, Ok(true));
        if matches!(there, Ok(false)) {
            lost = true;
            tracing::warn!(
                "broker {}: the job stream is gone (the broker restarted without saving, or it was flushed or \
                 evicted); making it again",
                broker.shown
            );
        }
        if !failed && reconciled.elapsed() >= RECONCILE_EVERY {
            reconciled = Instant::now();
            let published = service.queue.published_queued().unwrap_or_else(|e| {
                tracing::error!("the queue cannot be read to check the job stream: {e}");
                Vec::new()
            });
            if !published.is_empty() {
                match missing_entries(c, &published).await {
                    Ok(missing) => {
                        for id in missing {
                            tracing::warn!("job {id} is queued with no entry on the stream: publishing it again");
                            if let Err(e) = service.queue.mark_unpublished(id) {
                                tracing::error!("job {id}: {e}");
                            }
                        }
                    }
                    Err(e) => {
                        tracing::warn!("broker {}: {e}", broker.shown);
                        failed = true;
                    }
                }
            }
        }
        let ids = if failed {
            Vec::new()
        } else {
            service.queue.unpublished().unwrap_or_else(|e| {
                tracing::error!("the queue cannot be read: no job is published to the workers until it can: {e}");
                Vec::new()
            })
        };
        for id in ids {
            // Marked first: a worker may read the entry, claim the job, fail
            // and give it back (unmarking it) before a mark made after the
            // XADD, which would then leave a queued job marked with no entry.
            if let Err(e) = service.queue.mark_published(id) {
                tracing::error!("job {id}: {e}");
                continue;
            }
            // NOMKSTREAM: an entry never makes a stream that is gone (without
            // the workers' group, and hiding the loss from the check above).
            let added: redis::RedisResult<Option<String>> =
                redis::cmd("XADD").arg(STREAM).arg("NOMKSTREAM").arg("*").arg("job").arg(id).query_async(c).await;
            if !matches!(added, Ok(Some(_))) {
                if let Err(e) = service.queue.mark_unpublished(id) {
                    tracing::error!("job {id}: {e}");
                }
            }
            match added {
                Ok(Some(entry)) => tracing::debug!("job {id} on the stream as {entry}"),
                Ok(None) => {
                    tracing::warn!("broker {}: the job stream is gone; making it again", broker.shown);
                    lost = true;
                    failed = true;
                    break;
                }
                Err(e) => {
                    tracing::warn!("broker {}: {e}", broker.shown);
                    failed = true;
                    break;
                }
            }
        }
        if !failed {
            tokio::select! {
                () = broker.notify.notified() => {}
                () = tokio::time::sleep(PING_EVERY) => {}
            }
        }
        if failed {
            conn = None;
        }
    }
}

/// The stall watchdog and the staging sweep, forever (aborted when the
/// server stops); see the module docs.
pub async fn watch(service: Arc<Service>, broker: Arc<Broker>) {
    let every = (broker.stall / 4).clamp(Duration::from_millis(250), Duration::from_secs(30));
    loop {
        tokio::time::sleep(every).await;
        let (me, b) = (service.clone(), broker.clone());
        if let Err(e) = tokio::task::spawn_blocking(move || watch_once(&me, &b)).await {
            tracing::error!("the stall watchdog failed: {e}");
        }
    }
}

/// One round of [`watch`].
fn watch_once(service: &Service, broker: &Arc<Broker>) {
    // Staged folders are listed before the holders are read: a folder made
    // after the listing is not looked at, and a listed one whose entry
    // still holds its job is kept.
    let results = service.uploads.join("results");
    let staged: Vec<PathBuf> =
        std::fs::read_dir(&results).map(|d| d.flatten().map(|e| e.path()).collect()).unwrap_or_default();
    let running = match service.queue.broker_running() {
        Ok(r) => r,
        Err(e) => {
            tracing::error!("the queue cannot be read: {e}");
            return;
        }
    };
    for (id, message, worker) in broker.stalled(&running, Instant::now()) {
        // Not while a completion or failure of it is under way (it may have
        // begun since `stalled` looked): that one decides.
        let Some(_releasing) = broker.ending(id) else { continue };
        let why = format!("the worker {worker} sent nothing of the job for {} s", broker.stall.as_secs());
        // Refused when it finished meanwhile: nothing to do.
        if let Ok(job) = service.queue.broker_release(id, &message, &worker, Some(&why)) {
            tracing::warn!("job {id}: {why}: back in the queue for another worker");
            broker.forget(id);
            let _ = std::fs::remove_dir_all(staging(service, id, &message));
            service.events.job_changed(&job);
            broker.notify.notify_one();
        }
    }
    let keep: Vec<PathBuf> =
        running.iter().filter_map(|(id, holder)| holder.as_ref().map(|(m, _)| staging(service, *id, m))).collect();
    for dir in staged.iter().filter(|d| !keep.contains(d)) {
        match std::fs::remove_dir_all(dir) {
            Ok(()) => tracing::info!("removed staged stems no running job owns: {}", dir.display()),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => tracing::warn!("cannot remove {}: {e}", dir.display()),
        }
    }
}

// ---- the worker protocol ----

/// The worker routes (the token middleware covers them).
pub fn routes() -> Router<Arc<Service>> {
    Router::new()
        .route("/worker/heartbeat", post(heartbeat))
        .route("/worker/jobs/{id}/claim", post(claim))
        .route("/worker/jobs/{id}/input", get(input))
        .route("/worker/jobs/{id}/progress", post(progress))
        .route("/worker/jobs/{id}/stems/{file}", put(put_stem))
        .route("/worker/jobs/{id}/complete", post(complete))
        .route("/worker/jobs/{id}/fail", post(fail))
}

fn broker_of(service: &Service) -> Result<&Arc<Broker>, ApiError> {
    service.broker.as_ref().ok_or_else(|| ApiError::not_found("this server has no broker (start it with --broker)"))
}

fn id_of(raw: &str) -> Result<JobId, ApiError> {
    raw.parse().map_err(|_| ApiError::not_found(format!("no job {}", raw.chars().take(32).collect::<String>())))
}

/// `POST /worker/heartbeat`.
#[derive(Debug, Deserialize)]
pub struct Heartbeat {
    pub worker: String,
    pub device: String,
    pub provider: Option<String>,
    pub job: Option<JobId>,
    /// The job is in a phase that gives no progress of its own (a model
    /// build, a link's download between progress lines, the completion):
    /// it counts as alive for the stall watchdog when `message` holds it.
    #[serde(default)]
    pub busy: bool,
    /// The stream entry of `job`.
    #[serde(default)]
    pub message: Option<String>,
    /// The worker keeps `message`'s entry (it claims it again at every
    /// heartbeat, `XCLAIM`, until the job ends or stalls), whether or not
    /// Redis answers it now. While these come, another worker's takeover
    /// of the entry is refused ([`ClaimRequest::visibility_ms`]): after a
    /// broker outage the entry looks idle, but its worker is at work.
    #[serde(default)]
    pub keeps: bool,
}

/// The answer to a heartbeat: `ok`, and for the job it names, whether its
/// worker should stop it ([`Carry`], as a progress report's answer says:
/// cancelled or deleted here, or taken over by another worker). Heard in
/// the phases that report no progress (a model build, a link's download,
/// the input's transfer), where a cancel used to wait for the first
/// segment.
async fn heartbeat(
    State(service): State<Arc<Service>>,
    Json(h): Json<Heartbeat>,
) -> Result<Json<serde_json::Value>, ApiError> {
    let broker = broker_of(&service)?;
    let name: String = h.worker.chars().filter(|c| !c.is_control()).take(64).collect();
    let mut carry = Carry { cancel: false, taken_over: false };
    if let (Some(id), Some(message)) = (h.job, h.message.as_deref()) {
        match service.queue.broker_holder(id)? {
            // Only the holder's word counts.
            Some((m, w)) if m == message && w == h.worker => {
                if h.busy {
                    broker.touch(id);
                }
                if h.keeps {
                    broker.kept(id, &h.worker);
                } else {
                    broker.let_go(id, &h.worker);
                }
            }
            Some((m, _)) if m == message => carry = Carry { cancel: true, taken_over: true },
            // Not held any more (cancelled, deleted, finished, released):
            // unless its completion is being filed, which decides.
            _ if broker.is_ending(id) => {}
            _ => carry.cancel = true,
        }
    }
    broker.seen(&name, &h.device, h.provider, h.job);
    Ok(Json(serde_json::json!({ "ok": true, "cancel": carry.cancel, "taken_over": carry.taken_over })))
}

/// `POST /worker/jobs/{id}/claim`.
#[derive(Debug, Deserialize)]
pub struct ClaimRequest {
    /// The stream entry the job was read from.
    pub message: String,
    pub worker: String,
    /// The claimer's visibility timeout in milliseconds: a takeover of an
    /// entry whose holder said it keeps it ([`Heartbeat::keeps`]) within
    /// this long is refused with code [`HOLDER_ALIVE_CODE`]. Absent (older
    /// workers, which would acknowledge such a refusal): never refused.
    #[serde(default)]
    pub visibility_ms: Option<u64>,
}

/// The shortest time since a holder's last keep ([`Heartbeat::keeps`]) in
/// which a takeover of its entry is refused, whatever the claimer's own
/// visibility timeout: a holder says it keeps its entry every third of its
/// visibility timeout, at most every 5 s (`remote::heartbeat`), and an
/// HTTP heartbeat may take up to 20 s to arrive (its 10 s wait and its
/// connection's), so three missed 5 s keeps and a slow answer: 30 s.
pub const HOLDER_LIVENESS_FLOOR: Duration = Duration::from_secs(30);

/// The error code of a takeover refused because the entry's holder keeps
/// it: the claimer leaves the entry pending, to its holder.
pub const HOLDER_ALIVE_CODE: &str = "holder_alive";

/// What a worker needs to run a job.
#[derive(Debug, Serialize, Deserialize)]
pub struct JobSpec {
    pub job_id: JobId,
    pub title: String,
    pub options: JobOptions,
    /// A link to fetch with yt-dlp, for link jobs.
    pub url: Option<String>,
    /// Which claim of this job this is (1 = first).
    pub attempt: u32,
    /// What a link's download may be: the server's settings, so a worker
    /// fetches no more than the server would (absent from older servers:
    /// the defaults).
    #[serde(default)]
    pub download_limits: Option<stemroom_library::link::DownloadLimits>,
    /// The link may lead only to public addresses (the server's own check,
    /// [`crate::service::check_public_link`], made again by the worker,
    /// which fetches from its own network: a name can resolve otherwise
    /// there). `false` where the server allows private links, and from
    /// older servers.
    #[serde(default)]
    pub public_only: bool,
}

/// Put the files `names` of folder `from` into a new folder `to`, keeping
/// `from` whole: hard links where both are on one file system (nothing is
/// copied), copies (synced) where they are not or links are refused.
fn link_or_copy(from: &std::path::Path, to: &std::path::Path, names: &[&str]) -> std::io::Result<()> {
    std::fs::create_dir(to)?;
    for name in names {
        let (src, dest) = (from.join(name), to.join(name));
        if std::fs::hard_link(&src, &dest).is_err() {
            std::fs::copy(&src, &dest)?;
            std::fs::File::open(&dest)?.sync_all()?;
        }
    }
    stemroom_engine::files::sync_dir(to);
    if let Some(parent) = to.parent() {
        stemroom_engine::files::sync_dir(parent);
    }
    Ok(())
}

/// Longest worker name, in characters (names are shown in `/status`).
pub const MAX_WORKER_NAME_CHARS: usize = 64;

/// A worker name: 1 to [`MAX_WORKER_NAME_CHARS`] characters, no control
/// characters.
///
/// # Errors
/// Why the name cannot be used.
pub fn check_worker_name(name: &str) -> Result<(), String> {
    if name.trim().is_empty() || name.chars().count() > MAX_WORKER_NAME_CHARS || name.chars().any(char::is_control) {
        return Err(format!(
            "a worker name is 1 to {MAX_WORKER_NAME_CHARS} characters without control characters, got {:?}",
            name.chars().take(80).collect::<String>()
        ));
    }
    Ok(())
}

async fn claim(
    State(service): State<Arc<Service>>,
    UrlPath(id): UrlPath<String>,
    Json(c): Json<ClaimRequest>,
) -> Result<Json<JobSpec>, ApiError> {
    let broker = broker_of(&service)?;
    let id = id_of(&id)?;
    // The name is the holder's identity in every later call: refused, never
    // changed (a changed name would not match the worker's next calls).
    let worker = c.worker.clone();
    if let Err(why) = check_worker_name(&worker) {
        return Err(ApiError::invalid_options(why));
    }
    // Read before anything is granted: a job handed out without them would
    // run under the default download limits, not the operator's.
    let download_limits = service
        .queue
        .settings()
        .map_err(|e| ApiError::unavailable(format!("the server's settings cannot be read: {e}")))?
        .download_limits();
    let queue = service.queue.clone();
    let max = broker.max_attempts;
    let message = c.message.clone();
    let w = worker.clone();
    // Judged with the server's floor too, not the claimer's window alone:
    // a worker started with `--visibility-timeout 2` would otherwise take
    // the jobs of healthy workers, whose keeps come every 5 s.
    let visibility = c.visibility_ms.map(|ms| Duration::from_millis(ms).max(HOLDER_LIVENESS_FLOOR));
    let me = service.clone();
    // A holder whose result is being filed (or its failure recorded) is
    // alive whatever its heartbeat says, the claimer's own name included
    // (it gave up waiting for that filing's answer): a takeover granted now
    // would make that filing's record fail and delete the song it just
    // filed. Its heartbeat counts only for a takeover by another worker: a
    // worker of its name claims its own entry back.
    let claimer = worker.clone();
    let holder_alive = move |holder: &str| {
        me.broker.as_ref().is_some_and(|b| {
            b.is_ending(id) || (holder != claimer && visibility.is_some_and(|v| b.kept_within(id, holder, v)))
        })
    };
    let outcome = tokio::task::spawn_blocking(move || queue.broker_claim(id, &message, &w, max, holder_alive))
        .await
        .map_err(|e| ApiError::internal(e.to_string()))??;
    match outcome {
        Claim::Granted { job, attempt, takeover } => {
            // The stall clock starts now, the new holder's: the look into
            // the library below may take a while, and a watchdog pass then
            // judged this claim by the last holder's silence.
            broker.touch(id);
            // And it keeps the entry from now: a claimer with a short
            // visibility timeout would otherwise take it over in the
            // seconds before the holder's first keep is heard.
            broker.granted(id, &worker);
            if let Some(done) = filed_before(&service, &job).await {
                // Filed before this server stopped, not recorded: nothing to run.
                service.events.job_changed(&done);
                return Err(ApiError::conflict(format!("job {id} is done")));
            }
            if takeover {
                tracing::info!("job {id}: taken over by {worker} (attempt {attempt})");
            }
            service.events.job_changed(&job);
            let url = match &job.source {
                JobSource::Url { url } => Some(url.clone()),
                JobSource::File { .. } => None,
            };
            let download_limits = Some(download_limits);
            let public_only = url.is_some() && !service.config.allow_private_links;
            Ok(Json(JobSpec {
                job_id: id,
                title: job.title,
                options: job.options,
                url,
                attempt,
                download_limits,
                public_only,
            }))
        }
        Claim::Refused(why) => Err(ApiError::conflict(why)),
        Claim::HolderAlive(why) => {
            tracing::info!("job {id}: takeover by {worker} refused: {why}");
            Err(ApiError::new(StatusCode::CONFLICT, HOLDER_ALIVE_CODE, why))
        }
        Claim::GaveUp(job) => {
            service.events.job_changed(&job);
            Err(ApiError::conflict(format!("job {id} failed: claimed {max} times")))
        }
    }
}

/// Job `job` as done, when its song is already in the library: the server
/// stopped after filing its stems and before recording it
/// ([`song::find_published`]), so the job was queued and handed out again.
async fn filed_before(
    service: &Arc<Service>,
    job: &stemroom_library::queue::Job,
) -> Option<stemroom_library::queue::Job> {
    let (me, job) = (service.clone(), job.clone());
    let found = tokio::task::spawn_blocking(move || {
        let (dest, meta) = song::find_published(&me.library_dir(), &job)?;
        tracing::info!("job {} was filed before the last stop: {}", job.id, dest.display());
        me.queue.finish(job.id, &JobState::Done, Some(&dest.to_string_lossy()), &meta.stems_in(&dest)).ok()
    });
    found.await.ok().flatten()
}

/// `?message=` on worker requests that carry no JSON.
#[derive(Debug, Deserialize)]
pub struct Holder {
    pub message: String,
    pub worker: String,
}

/// The error code of a call from a worker whose job another worker holds.
pub const TAKEN_OVER_CODE: &str = "taken_over";

/// 409 unless `worker`, through stream entry `message`, holds running job
/// `id` (a worker whose entry another worker took over while it stalled
/// hears so, with code [`TAKEN_OVER_CODE`]). A holder's call counts as a
/// sign of life for the stall watchdog.
fn check_holder(service: &Service, id: JobId, message: &str, worker: &str) -> Result<(), ApiError> {
    match service.queue.broker_holder(id)? {
        Some((m, w)) if m == message && w == worker => {
            if let Some(b) = &service.broker {
                b.touch(id);
            }
            Ok(())
        }
        // Its own code: the caller stalled and another worker took its
        // entry over; that entry and the staged stems are not its own any
        // more.
        Some((m, w)) if m == message => {
            Err(ApiError::new(StatusCode::CONFLICT, TAKEN_OVER_CODE, format!("job {id} is held by {w}")))
        }
        // Running under another entry (the watchdog published it again):
        // the caller's entry is still its own to acknowledge.
        Some(_) => Err(ApiError::conflict(format!("job {id} runs elsewhere now: stop"))),
        None => Err(ApiError::conflict(format!("job {id} is not running: stop"))),
    }
}

async fn input(
    State(service): State<Arc<Service>>,
    UrlPath(id): UrlPath<String>,
    Query(h): Query<Holder>,
) -> Result<Response, ApiError> {
    let id = id_of(&id)?;
    check_holder(&service, id, &h.message, &h.worker)?;
    let job = service.queue.get(id)?;
    let JobSource::File { path } = &job.source else {
        return Err(ApiError::conflict(format!("job {id} is a link: fetch it with yt-dlp")));
    };
    let file = match tokio::fs::File::open(path).await {
        Ok(f) => f,
        // Trouble of the moment (too many open files under load, a network
        // disk's hiccup): the worker asks again; the job stays. A file gone,
        // or one this server may not read, fails the job below.
        Err(e)
            if !matches!(
                e.kind(),
                std::io::ErrorKind::NotFound | std::io::ErrorKind::PermissionDenied | std::io::ErrorKind::IsADirectory
            ) =>
        {
            return Err(ApiError::unavailable(format!("the input file of job {id} cannot be read now: {e}")));
        }
        Err(e) => {
            // No worker can ever run it: the job fails here, plainly (the
            // worker hears 410 and lets the entry go), instead of staying
            // "running" with nobody on it.
            let message = if e.kind() == std::io::ErrorKind::NotFound {
                format!("the input file of job {id} is gone: {e}")
            } else {
                format!("the input file of job {id} cannot be read: {e}")
            };
            let failed = JobState::Failed { code: ErrorCode::BadInput, message: message.clone() };
            if let Ok(job) = service.queue.finish(id, &failed, None, &[]) {
                service.events.job_changed(&job);
            }
            return Err(ApiError::new(StatusCode::GONE, "gone", message));
        }
    };
    let len = file.metadata().await.map(|m| m.len()).unwrap_or(0);
    use futures_util::StreamExt;
    let stream = tokio_util::io::ReaderStream::with_capacity(file, 64 * 1024);
    let watcher = service.broker.clone();
    // Every chunk the worker takes is a sign of life (a large input on a
    // slow link may take longer than the stall timeout).
    let stream = stream.inspect(move |_| {
        if let Some(b) = &watcher {
            b.touch(id);
        }
    });
    let mut r = Body::from_stream(stream).into_response();
    r.headers_mut().insert(header::CONTENT_TYPE, HeaderValue::from_static("application/octet-stream"));
    r.headers_mut().insert(header::CONTENT_LENGTH, HeaderValue::from(len));
    if let Some(name) = Path::new(path).file_name().and_then(|n| n.to_str()).and_then(|n| HeaderValue::from_str(n).ok())
    {
        r.headers_mut().insert("x-file-name", name);
    }
    Ok(r)
}

/// `POST /worker/jobs/{id}/progress`.
#[derive(Debug, Deserialize)]
pub struct ProgressReport {
    pub message: String,
    pub worker: String,
    pub state: JobState,
    pub percent: f64,
    pub eta_seconds: Option<f64>,
    pub provider: Option<String>,
}

/// The answer to progress: whether to stop.
#[derive(Debug, Serialize, Deserialize)]
pub struct Carry {
    pub cancel: bool,
    /// Stop because another worker took the job over (this one stalled past
    /// the visibility timeout): the entry is theirs now, not to acknowledge.
    #[serde(default)]
    pub taken_over: bool,
}

async fn progress(
    State(service): State<Arc<Service>>,
    UrlPath(id): UrlPath<String>,
    Json(p): Json<ProgressReport>,
) -> Result<Json<Carry>, ApiError> {
    let id = id_of(&id)?;
    match service.queue.broker_holder(id)? {
        Some((m, w)) if m == p.message && w == p.worker && p.state.is_running() => {
            if let Some(b) = &service.broker {
                b.touch(id);
            }
        }
        Some((m, _)) if m == p.message => return Ok(Json(Carry { cancel: true, taken_over: true })),
        _ => return Ok(Json(Carry { cancel: true, taken_over: false })),
    }
    let _ = service.queue.set_running_state(id, &p.state);
    if let Some(provider) = p.provider.as_deref() {
        let _ = service.queue.set_details(id, None, Some(provider));
    }
    service.events.progress(&JobProgress {
        id,
        state: p.state,
        percent: p.percent.clamp(0.0, 100.0),
        eta_seconds: p.eta_seconds,
        bytes_per_second: None,
        notice: None,
    });
    Ok(Json(Carry { cancel: false, taken_over: false }))
}

/// Where a worker's stems wait until it completes: one folder per job and
/// stream entry, so two workers never mix their files. The entry's id is
/// written in hex, so two ids never share a folder (a look-alike such as
/// `…_0` for `…-0` once did, and its refused completion removed the real
/// holder's stems). A Redis stream id is at most 41 bytes; anything longer
/// (no entry's) gets a folder no entry has.
fn staging(service: &Service, id: JobId, message: &str) -> PathBuf {
    service.uploads.join("results").join(staging_name(id, message))
}

fn staging_name(id: JobId, message: &str) -> String {
    let name = if message.len() <= MAX_MESSAGE_ID_BYTES {
        message.bytes().map(|b| format!("{b:02x}")).collect::<String>()
    } else {
        "not-an-entry".to_string()
    };
    format!("{id}-{name}")
}

/// Longest stream entry id (`<ms>-<seq>`, two 64-bit numbers: 41 bytes),
/// with room to spare.
const MAX_MESSAGE_ID_BYTES: usize = 64;

/// Stem file names a job may upload: `<stem>.<ext>` for its model's
/// sources (and `no_<stem>` with two stems), in its format.
fn stem_allowed(service: &Service, options: &JobOptions, file: &str) -> bool {
    let Some((stem, ext)) = file.rsplit_once('.') else { return false };
    if ext != options.format.extension() {
        return false;
    }
    let sources = service.manifest.models.iter().find(|m| m.id == options.model).map(|m| m.sources.clone());
    let Some(sources) = sources else { return false };
    match &options.two_stems {
        Some(s) => stem == s || stem.strip_prefix("no_") == Some(s.as_str()),
        None => sources.iter().any(|s| s == stem),
    }
}

async fn put_stem(
    State(service): State<Arc<Service>>,
    UrlPath((id, file)): UrlPath<(String, String)>,
    Query(h): Query<Holder>,
    req: Request,
) -> Result<Json<serde_json::Value>, ApiError> {
    let id = id_of(&id)?;
    check_holder(&service, id, &h.message, &h.worker)?;
    let job = service.queue.get(id)?;
    if !stem_allowed(&service, &job.options, &file) {
        return Err(ApiError::invalid_options(format!("job {id} has no stem file {file}")));
    }
    // The data folder keeps its floor of free space (507 otherwise, as for
    // uploads): a stem's length is known before its bytes come.
    let declared =
        req.headers().get(header::CONTENT_LENGTH).and_then(|v| v.to_str().ok()).and_then(|v| v.parse::<u64>().ok());
    let limit = service.config.max_upload_bytes.saturating_mul(8).max(4_000_000_000);
    if declared.is_some_and(|d| d > limit) {
        return Err(ApiError::new(StatusCode::PAYLOAD_TOO_LARGE, "too_large", "stem file too large"));
    }
    let mut reservation = crate::form::reserve_space(&service, declared, limit)?;
    let dir = staging(&service, id, &h.message);
    tokio::fs::create_dir_all(&dir).await.map_err(|e| ApiError::internal(format!("cannot store stems: {e}")))?;
    let part = crate::upload::PartFile::new(&dir, &file);
    let mut out = tokio::fs::File::create(part.part_path())
        .await
        .map_err(|e| ApiError::internal(format!("cannot store stems: {e}")))?;
    let mut body = req.into_body().into_data_stream();
    use futures_util::StreamExt;
    let mut written = 0u64;
    // A full disk is the 507 of the free-space floor too (a chunked body
    // declares no length to check first), not a 500.
    let store_err = |e: std::io::Error| {
        if e.kind() == std::io::ErrorKind::StorageFull {
            ApiError::new(StatusCode::INSUFFICIENT_STORAGE, "insufficient_storage", "the server's disk is full")
        } else {
            ApiError::internal(format!("cannot store stems: {e}"))
        }
    };
    let mut checked = 0u64;
    while let Some(chunk) = tokio::time::timeout(service.config.idle_timeout, body.next())
        .await
        .map_err(|_| ApiError::new(StatusCode::REQUEST_TIMEOUT, "timeout", "the stem upload stalled"))?
    {
        let chunk = chunk.map_err(|e| ApiError::bad_request(format!("the stem upload broke: {e}")))?;
        if let Some(b) = &service.broker {
            b.touch(id);
        }
        written += chunk.len() as u64;
        if written > limit {
            return Err(ApiError::new(StatusCode::PAYLOAD_TOO_LARGE, "too_large", "stem file too large"));
        }
        // The floor of free space, again every 8 MiB of an undeclared length.
        if written - checked >= 8 << 20 {
            reservation.written(written - checked);
            crate::form::check_space(&service, 0)?;
            checked = written;
        }
        out.write_all(&chunk).await.map_err(store_err)?;
    }
    out.flush().await.map_err(store_err)?;
    // On disk before it is named (off the runtime's threads).
    out.sync_all().await.map_err(store_err)?;
    drop(out);
    // The holder again, now that the stem is whole: a worker whose entry
    // was taken over while this upload ran (a slow link) must not put its
    // stem over the new holder's (the folder is the entry's, shared by
    // both). The part file goes. (A completion being filed links or
    // copies the files it lists: a rename here does not change them.)
    check_holder(&service, id, &h.message, &h.worker)?;
    part.finish().map_err(|e| ApiError::internal(format!("cannot store stems: {e}")))?.keep();
    Ok(Json(serde_json::json!({ "stored": file, "bytes": written })))
}

/// `POST /worker/jobs/{id}/complete`.
#[derive(Debug, Deserialize)]
pub struct Completion {
    pub message: String,
    pub worker: String,
    /// Stems in model order: name and the file uploaded for it.
    pub stems: Vec<StemFile>,
    /// Seconds the separation took on the worker.
    pub seconds: f64,
    pub provider: String,
    pub duration_seconds: Option<f64>,
}

async fn complete(
    State(service): State<Arc<Service>>,
    UrlPath(id): UrlPath<String>,
    Json(c): Json<Completion>,
) -> Result<Json<crate::view::JobView>, ApiError> {
    let id = id_of(&id)?;
    let staged = staging(&service, id, &c.message);
    // Marked once the holder is checked (a worker that lost the job cannot
    // hold back the one that holds it now): the stall watchdog does not
    // release the job while its stems move into the library (a copy to
    // another disk and the analysis may outlast the stall timeout), and a
    // second completion or a failure meanwhile (a worker that gave up
    // waiting for this answer) is refused instead of removing the stems
    // this one is filing.
    let broker = broker_of(&service)?.clone();
    // The mark first, then the holder: checked the other way round, a
    // takeover or the watchdog's release could come in between, and this
    // late completion would file the new holder's stems.
    let Some(completing) = broker.ending(id) else { return Err(being_ended(id)) };
    if let Err(e) = check_holder(&service, id, &c.message, &c.worker) {
        // Only a job this entry does not hold any more (or one deleted) loses the staged
        // stems: after a takeover the folder (keyed by the entry) is the
        // new holder's, and a database error (busy past its timeout) says
        // nothing about the holder, whose next send finds them.
        if matches!(e.status, StatusCode::CONFLICT | StatusCode::NOT_FOUND) && e.code != TAKEN_OVER_CODE {
            let _ = tokio::fs::remove_dir_all(&staged).await;
        }
        return Err(e);
    }
    let me = service.clone();
    // The mark moves to the filing thread, which runs to its end even when
    // this request's future is dropped (the worker's connection closed: a
    // proxy's read timeout on a long copy): it lasts as long as the filing,
    // not the request.
    let job = tokio::task::spawn_blocking(move || -> Result<stemroom_library::queue::Job, ApiError> {
        let _completing = completing;
        let job = me.queue.get(id)?;
        // Settings that cannot be read now (a busy database): 503, and the
        // worker sends the completion again; never the default folder.
        let library = me
            .worker
            .library_dir_to_file()
            .map_err(|e| ApiError::unavailable(format!("the library's settings cannot be read now: {e}")))?;
        // Job `id` recorded done with the song filed in `dest`.
        let record = |dest: &std::path::Path, meta: &SongMetadata| -> Result<stemroom_library::queue::Job, ApiError> {
            let stems = meta.stems_in(dest);
            match me.queue.broker_finish(
                id,
                &c.message,
                &c.worker,
                &JobState::Done,
                Some(&dest.to_string_lossy()),
                &stems,
            ) {
                Ok(job) => Ok(job),
                // Recorded meanwhile from this very folder (a claim that found
                // it filed, `filed_before`): done, the folder stays.
                Err(_)
                    if me.queue.get(id).is_ok_and(|j| {
                        j.state == JobState::Done && j.output_dir.as_deref() == Some(&*dest.to_string_lossy())
                    }) =>
                {
                    me.queue.get(id).map_err(ApiError::from)
                }
                Err(e @ QueueError::NotFound(_)) => {
                    // Finished meanwhile (deleted, another result), or held by
                    // another run now (retried and claimed again): this copy goes.
                    let _ = std::fs::remove_dir_all(dest);
                    Err(ApiError::conflict(format!("job {id} was not running any more: {e}")))
                }
                Err(e) => {
                    // The database failed (busy past its timeout, disk full):
                    // the song stays filed, and the worker's next send of this
                    // completion, or the next claim of this job
                    // (`filed_before`), finds it instead of separating again.
                    tracing::warn!("job {id}: its song is filed in {} but not recorded: {e}", dest.display());
                    Err(ApiError::internal(format!("cannot record job {id} as done: {e}")))
                }
            }
        };
        // Sent again after its song was filed but the job not recorded (the
        // database busy past its timeout, a restart at that instant): the
        // song is recorded, not filed twice, and the staged copies go.
        if let Some((dest, meta)) = song::find_published(&library, &job) {
            let done = record(&dest, &meta)?;
            tracing::info!("job {id}: its song was filed before this completion: {}", dest.display());
            let _ = std::fs::remove_dir_all(&staged);
            return Ok(done);
        }
        for s in &c.stems {
            if !stem_allowed(&me, &job.options, &s.path) || !staged.join(&s.path).is_file() {
                return Err(ApiError::invalid_options(format!("stem {} ({}) was not uploaded", s.stem, s.path)));
            }
            // The stem's name is its file's (it becomes `/stems/{id}/{stem}`
            // and the library's label).
            if s.path.rsplit_once('.').map(|(stem, _)| stem) != Some(s.stem.as_str()) {
                return Err(ApiError::invalid_options(format!("stem {} is not the stem of file {}", s.stem, s.path)));
            }
        }
        if c.stems.is_empty() {
            return Err(ApiError::invalid_options("no stems"));
        }
        // Every stem the job makes, each once (a zip of the job with one
        // name twice fails part way through every download).
        let info = me.manifest.get(&job.options.model).map_err(|e| ApiError::internal(e.to_string()))?;
        let expected = stemroom_engine::job::output_stems(
            info,
            job.options.two_stems.as_deref(),
            stemroom_engine::job::OtherMethod::Add,
        )
        .map_err(|e| ApiError::internal(e.to_string()))?;
        let mut got: Vec<&str> = c.stems.iter().map(|s| s.stem.as_str()).collect();
        got.sort_unstable();
        let mut want: Vec<&str> = expected.iter().map(String::as_str).collect();
        want.sort_unstable();
        if got != want {
            return Err(ApiError::invalid_options(format!(
                "the stems listed ({}) are not the job's ({})",
                c.stems.iter().map(|s| s.stem.as_str()).collect::<Vec<_>>().join(", "),
                expected.join(", ")
            )));
        }
        std::fs::create_dir_all(&library).map_err(|e| ApiError::internal(format!("library: {e}")))?;
        let work = song::partial_dir(&library, me.queue.work_tag(), id);
        let _ = std::fs::remove_dir_all(&work);
        // The staged stems stay until the job is recorded done: a filing
        // that fails or is cut short (a restart, whose cleanup removes the
        // working folder) loses only this copy, and the worker's next send
        // files them again. Only the listed stems are filed (not an
        // earlier send's part file, nor anything else in the folder).
        let names: Vec<&str> = c.stems.iter().map(|s| s.path.as_str()).collect();
        link_or_copy(&staged, &work, &names).map_err(|e| {
            let _ = std::fs::remove_dir_all(&work);
            ApiError::internal(format!("cannot file the stems: {e}"))
        })?;
        let _ = me.queue.set_details(id, c.duration_seconds, Some(&c.provider));
        let mut meta =
            SongMetadata::new(&job, c.stems.clone(), c.seconds, Some(c.provider.clone()), c.duration_seconds)
                .of_database(me.queue.work_tag());
        // Tempo and key, as the local worker finds them.
        meta.analyse_in(&work);
        if let Some(a) = &meta.analysis {
            let _ = me.queue.set_analysis(id, a);
        }
        meta.write(&work).map_err(|e| {
            let _ = std::fs::remove_dir_all(&work);
            ApiError::internal(format!("cannot write the song's metadata: {e}"))
        })?;
        let dest = match song::publish_song(&library, &work, &job.title) {
            Ok(d) => d,
            Err(e) => {
                let _ = std::fs::remove_dir_all(&work);
                return Err(ApiError::internal(format!("cannot file the song: {e}")));
            }
        };
        let recorded = record(&dest, &meta);
        if recorded.is_ok() {
            let _ = std::fs::remove_dir_all(&staged);
        }
        recorded
    })
    .await
    .map_err(|e| ApiError::internal(e.to_string()))??;
    service.events.job_changed(&job);
    tracing::info!("job {id} done by a worker in {:.1} s", c.seconds);
    Ok(Json(crate::view::JobView::new(&job, None, service.events.segments_of(id))))
}

/// `POST /worker/jobs/{id}/fail`.
#[derive(Debug, Deserialize)]
pub struct Failure {
    pub message: String,
    pub worker: String,
    pub code: ErrorCode,
    /// For people.
    pub error: String,
    /// Another worker may succeed (device or network trouble); false for
    /// errors of the input itself (not audio), which fail at once.
    pub retry: bool,
    /// The worker is stopping (a deploy, a reclaimed spot machine): the
    /// claim is not counted toward `--max-attempts` (absent from older
    /// workers: counted).
    #[serde(default)]
    pub stopping: bool,
}

/// The error code of a completion or failure sent while another of the
/// same job is under way: the worker asks again later instead of taking
/// it as the job's end (the earlier one may still fail).
pub const BEING_ENDED_CODE: &str = "being_ended";

/// 409 for a completion or failure of job `id` while another is under way.
fn being_ended(id: JobId) -> ApiError {
    ApiError::new(
        StatusCode::CONFLICT,
        BEING_ENDED_CODE,
        format!("job {id}'s result is being filed by an earlier request: ask again later, or ask its status"),
    )
}

async fn fail(
    State(service): State<Arc<Service>>,
    UrlPath(id): UrlPath<String>,
    Json(f): Json<Failure>,
) -> Result<Json<crate::view::JobView>, ApiError> {
    let id = id_of(&id)?;
    let broker = broker_of(&service)?.clone();
    // The mark first, then the holder (as for a completion).
    let Some(_failing) = broker.ending(id) else { return Err(being_ended(id)) };
    check_holder(&service, id, &f.message, &f.worker)?;
    let _ = tokio::fs::remove_dir_all(staging(&service, id, &f.message)).await;
    let job = if f.retry && f.code != ErrorCode::Cancelled {
        let error = (!f.stopping).then_some(f.error.as_str());
        let job = service.queue.broker_release(id, &f.message, &f.worker, error)?;
        if let Some(b) = service.broker.as_ref() {
            b.notify.notify_one();
        }
        job
    } else {
        let state = if f.code == ErrorCode::Cancelled {
            JobState::Cancelled
        } else {
            JobState::Failed { code: f.code, message: f.error.clone() }
        };
        service.queue.broker_finish(id, &f.message, &f.worker, &state, None, &[]).map_err(|e| match e {
            QueueError::NotFound(_) => ApiError::conflict(format!("job {id} is not held by {} any more", f.worker)),
            e => e.into(),
        })?
    };
    service.events.job_changed(&job);
    Ok(Json(crate::view::JobView::new(&job, None, None)))
}

#[cfg(test)]
mod tests {
    use std::os::unix::fs::MetadataExt;

    use super::*;

    #[test]
    fn stems_are_linked_or_copied_across_file_systems_and_stay_staged() {
        // /dev/shm (tmpfs) and the temporary folder are two file systems on
        // Linux machines like this project's; the link path is checked too.
        let shm = std::path::PathBuf::from("/dev/shm");
        let a = tempfile::tempdir_in(if shm.is_dir() { shm } else { std::env::temp_dir() }).unwrap();
        let b = tempfile::tempdir().unwrap();
        let crosses = a.path().metadata().unwrap().dev() != b.path().metadata().unwrap().dev();
        for (from_root, to_root) in [(a.path(), b.path()), (b.path(), b.path())] {
            let from = from_root.join("staged");
            std::fs::create_dir_all(&from).unwrap();
            std::fs::write(from.join("vocals.wav"), b"v").unwrap();
            std::fs::write(from.join("drums.wav"), b"d").unwrap();
            std::fs::write(from.join(".bass.wav.1.part"), b"half").unwrap();
            let to = to_root.join(format!("song-{}", from_root == to_root));
            link_or_copy(&from, &to, &["vocals.wav", "drums.wav"]).unwrap();
            assert_eq!(std::fs::read(to.join("vocals.wav")).unwrap(), b"v");
            assert_eq!(std::fs::read(to.join("drums.wav")).unwrap(), b"d");
            let mut filed: Vec<_> = std::fs::read_dir(&to).unwrap().flatten().map(|e| e.file_name()).collect();
            filed.sort();
            assert_eq!(filed, ["drums.wav", "vocals.wav"], "only the listed stems");
            assert!(from.join("vocals.wav").is_file(), "the staged copy stays until the job is recorded");
            assert!(link_or_copy(&from, &to, &["vocals.wav"]).is_err(), "never into an existing folder");
        }
        eprintln!("crossed file systems: {crosses}");
    }

    #[test]
    fn a_silent_holder_stalls_after_the_timeout_counted_from_when_the_server_first_saw_it() {
        let b = Broker::new("redis://127.0.0.1:1/0", 3, Duration::from_secs(10)).unwrap();
        let t0 = Instant::now();
        let s = Duration::from_secs;
        let running = vec![(1, Some(("1-0".to_string(), "w1".to_string()))), (2, None)];
        assert!(b.stalled(&running, t0).is_empty(), "first seen: its clock starts");
        assert!(b.stalled(&running, t0 + s(9)).is_empty());
        let stalled = b.stalled(&running, t0 + s(11));
        assert_eq!(stalled, vec![(1, "1-0".to_string(), "w1".to_string())], "job 2 has no holder to wait for");
        b.touch(1);
        assert!(b.stalled(&running, t0 + s(9)).is_empty(), "progress restarts the clock");
        assert_eq!(b.stalled(&running, t0 + s(12)).len(), 1);
        // No longer running: forgotten, so a later run starts a new clock.
        assert!(b.stalled(&[], t0 + s(12)).is_empty());
        assert!(b.stalled(&running, t0 + s(30)).is_empty());
    }

    #[test]
    fn an_entry_counts_as_kept_by_its_holder_within_the_window_only() {
        let mut b = Broker::new("redis://127.0.0.1:1/0", 3, Duration::from_secs(60)).unwrap();
        // Just started: a job claimed before the restart, whose holder has
        // not been heard from yet, is kept for one window from the start.
        assert!(b.kept_within(9, "gpu1", Duration::from_secs(2)), "claimed before this server started");
        b.let_go(9, "gpu1");
        assert!(!b.kept_within(9, "gpu1", Duration::from_secs(2)), "its holder let it go");
        b.started = Instant::now().checked_sub(Duration::from_secs(5)).expect("uptime");
        assert!(!b.kept_within(8, "gpu1", Duration::from_secs(2)), "the window since the start is over");
        b.kept(4, "gpu1");
        assert!(b.kept_within(4, "gpu1", Duration::from_secs(2)));
        assert!(!b.kept_within(4, "gpu2", Duration::from_secs(2)), "said by gpu1, not by the holder asked about");
        assert!(!b.kept_within(5, "gpu1", Duration::from_secs(2)), "another job");
        std::thread::sleep(Duration::from_millis(30));
        assert!(!b.kept_within(4, "gpu1", Duration::from_millis(10)), "too long ago for this claimer");
        // A late heartbeat of another worker does not replace the holder's
        // record; its own grant does.
        b.kept(4, "gpu2");
        assert!(b.kept_within(4, "gpu1", Duration::from_secs(2)) && !b.kept_within(4, "gpu2", Duration::from_secs(2)));
        b.granted(4, "gpu2");
        assert!(b.kept_within(4, "gpu2", Duration::from_secs(2)));
        // Jobs no longer running are forgotten, unless their record is
        // younger than the floor (the list read before a grant since).
        let _ = b.stalled(&[(5, None)], Instant::now());
        assert!(b.kept_within(4, "gpu2", Duration::from_secs(2)), "granted just now");
        let long_ago = Instant::now().checked_sub(HOLDER_LIVENESS_FLOOR * 2).expect("uptime");
        b.kept.lock().unwrap().insert(4, ("gpu2".into(), Some(long_ago)));
        let _ = b.stalled(&[(5, None)], Instant::now());
        assert!(!b.kept.lock().unwrap().contains_key(&4), "no longer running");
    }

    #[test]
    fn the_worker_list_is_bounded() {
        let b = Broker::new("redis://127.0.0.1:1/0", 3, Duration::from_secs(60)).unwrap();
        for n in 0..(MAX_WORKERS + 50) {
            b.seen(&format!("w-{n}"), &"x".repeat(10_000), Some("cuda".into()), None);
        }
        let list = b.workers();
        assert_eq!(list.len(), MAX_WORKERS);
        assert!(list.iter().any(|w| w.name == format!("w-{}", MAX_WORKERS + 49)), "the newest stays");
        assert!(list.iter().all(|w| w.device.chars().count() == MAX_WORKER_FIELD_CHARS));
    }

    #[test]
    fn each_entry_stages_in_a_folder_of_its_own() {
        let a = staging_name(7, "1733390000000-0");
        assert_eq!(a, "7-313733333339303030303030302d30");
        assert_ne!(a, staging_name(7, "1733390000000_0"), "a look-alike entry id");
        assert_ne!(a, staging_name(17, "33390000000-0"));
        assert_eq!(staging_name(7, &"9".repeat(65)), "7-not-an-entry");
        assert!(staging_name(7, "../../x").chars().all(|c| c.is_ascii_alphanumeric() || c == '-'));
    }

    #[test]
    fn one_end_of_a_job_at_a_time() {
        let b = Arc::new(Broker::new("redis://127.0.0.1:1/0", 3, Duration::from_secs(60)).unwrap());
        let first = b.ending(7).expect("the first completion");
        // A failure or a second completion meanwhile is refused (it would
        // remove the stems being filed); another job is not held back.
        assert!(b.ending(7).is_none());
        drop(b.ending(8).expect("another job"));
        // The stall watchdog leaves a job being ended alone.
        let held = |w: &str| Some((format!("1-{w}"), w.to_string()));
        let running = vec![(7, held("w1")), (8, held("w2"))];
        let now = Instant::now();
        assert!(b.stalled(&running, now).is_empty());
        let stalled = b.stalled(&running, now + Duration::from_secs(3600));
        assert_eq!(stalled.iter().map(|s| s.0).collect::<Vec<_>>(), vec![8]);
        drop(first);
        assert!(b.ending(7).is_some(), "free again once it ended");
    }

    #[test]
    fn worker_names_are_checked_not_changed() {
        assert!(check_worker_name("gpu-box-1234").is_ok());
        assert!(check_worker_name(&"é".repeat(MAX_WORKER_NAME_CHARS)).is_ok());
        for bad in ["", "  ", "tab\there", &"x".repeat(MAX_WORKER_NAME_CHARS + 1)] {
            assert!(check_worker_name(bad).is_err(), "{bad:?}");
        }
    }
}

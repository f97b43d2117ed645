//! The running server: what handlers share, start-up, and graceful stop.

use std::net::{IpAddr, SocketAddr};
use std::num::NonZeroU32;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use governor::{DefaultKeyedRateLimiter, Quota};
use stemroom_engine::model::{self, Manifest};
use stemroom_library::intake;
use stemroom_library::lock::InstanceLock;
use stemroom_library::queue::{Job, JobId, JobSource, JobState, Queue};
use stemroom_library::worker::{Worker, WorkerConfig, WorkerListener};
use tokio::sync::watch;

use crate::error::{ApiError, ServerError};
use crate::events::Events;
use crate::form::{self, NewJob};
use crate::{auth, upload, ServerConfig};

/// How long model readiness (a sha256 of the model, cached by the engine)
/// is trusted before `GET /status` looks again.
const MODELS_CHECK_EVERY: Duration = Duration::from_secs(30);
/// Longest wait for running jobs to stop (each stops within one segment:
/// ~2 s on a 2-core CPU) when the server stops.
const STOP_JOBS_WITHIN: Duration = Duration::from_secs(60);

/// What every handler shares.
pub struct Service {
    pub config: ServerConfig,
    pub data_dir: PathBuf,
    pub uploads: PathBuf,
    pub queue: Arc<Queue>,
    pub worker: Worker,
    pub events: Arc<Events>,
    /// The bearer token (`None`: `--no-auth`).
    pub token: Option<String>,
    /// The workers' token, for `/worker/…` (with `--broker` and auth).
    pub worker_token: Option<String>,
    pub manifest: Manifest,
    /// Keyed by [`rate_key`].
    limiter: DefaultKeyedRateLimiter<IpAddr>,
    limiter_pruned: Mutex<Instant>,
    /// New-job requests, refused ones included ([`ATTEMPTS_PER_JOB`] times
    /// the job quota), keyed by [`rate_key`].
    attempt_limiter: DefaultKeyedRateLimiter<IpAddr>,
    /// Clients past their quota, until when (keyed by [`rate_key`]).
    rate_blocked: Mutex<std::collections::HashMap<IpAddr, Instant>>,
    models: Mutex<Option<(Instant, bool, Option<String>)>>,
    /// The broker jobs go to (`--broker`), instead of the local worker.
    pub broker: Option<Arc<crate::broker::Broker>>,
    /// Becomes true when the server stops (streams end, synchronous
    /// requests leave their jobs to the queue).
    pub stopping: watch::Receiver<bool>,
    /// Called with a job's id before its song folder is deleted.
    before_delete: Option<BeforeDelete>,
    /// Bytes uploads in flight declared and have not written yet
    /// (`form::Reservation`).
    pub(crate) upload_reserved: std::sync::atomic::AtomicU64,
}

/// What an embedding app does before a job's song folder is deleted
/// through the API (or by the retention): the app closes the song if its
/// player has it open, whose waveform reader would otherwise write its
/// cache into the folder being deleted. What it returns is dropped once
/// the job's entry is gone, or the deletion failed (the app does not open
/// the song again until then).
pub type BeforeDelete = Arc<dyn Fn(JobId) -> Box<dyn Send> + Send + Sync>;

impl std::fmt::Debug for Service {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Service").field("data_dir", &self.data_dir).finish()
    }
}

/// What the server says once it listens.
#[derive(Debug, Clone)]
pub struct Ready {
    /// The address bound (the real port when 0 was asked for).
    pub addr: SocketAddr,
    /// The token when auth is on.
    pub token: Option<auth::Token>,
    /// The workers' token, with `--broker` when auth is on.
    pub worker_token: Option<auth::Token>,
    /// Jobs put back in the queue from a previous run that died.
    pub recovered: usize,
}

impl Service {
    /// Whether the server is stopping.
    pub fn is_stopping(&self) -> bool {
        *self.stopping.borrow()
    }

    /// Whether `ip` may send a new job now: 429 with `Retry-After` while
    /// its last job past the quota waits, or past [`ATTEMPTS_PER_JOB`]
    /// times the quota of requests an hour (each counted here); a job is
    /// counted against the quota itself only once queued
    /// ([`Service::rate_spend`]).
    ///
    /// # Errors
    /// 429 with `Retry-After` until the quota has room again.
    pub fn rate_check(&self, ip: IpAddr) -> Result<(), ApiError> {
        // (Here, where every new-job request passes, not only queued ones.)
        {
            // Addresses not seen for an hour are forgotten (their quota is
            // whole again anyway), so the table does not grow for ever.
            let mut pruned = self.limiter_pruned.lock().unwrap_or_else(|p| p.into_inner());
            if pruned.elapsed() >= LIMITER_PRUNE_EVERY {
                self.limiter.retain_recent();
                self.limiter.shrink_to_fit();
                self.attempt_limiter.retain_recent();
                self.attempt_limiter.shrink_to_fit();
                let now = Instant::now();
                self.rate_blocked.lock().unwrap_or_else(|p| p.into_inner()).retain(|_, until| *until > now);
                *pruned = now;
            }
        }
        let key = rate_key(ip);
        {
            let mut blocked = self.rate_blocked.lock().unwrap_or_else(|p| p.into_inner());
            match blocked.get(&key).map(|until| until.saturating_duration_since(Instant::now())) {
                Some(wait) if !wait.is_zero() => return Err(self.rate_limited(wait)),
                Some(_) => {
                    blocked.remove(&key);
                }
                None => {}
            }
        }
        // Requests refused for their own reasons cost no job, but each
        // may have stored and decoded an upload: at most
        // ATTEMPTS_PER_JOB times the job quota of them an hour.
        match self.attempt_limiter.check_key(&key) {
            Ok(()) => Ok(()),
            Err(not_until) => {
                use governor::clock::{Clock, DefaultClock};
                Err(self.rate_limited(not_until.wait_time_from(DefaultClock::default().now())))
            }
        }
    }

    /// Count one new job for `ip`: called once the job is about to be
    /// queued (its form read and its audio checked), so a request refused
    /// for a bad option, a file that is not audio, a full disk or a link
    /// that is not allowed does not use up the client's hourly quota.
    ///
    /// # Errors
    /// 429 with `Retry-After` over the limit (then [`Service::rate_check`]
    /// refuses the client's next requests before reading them).
    fn rate_spend(&self, ip: IpAddr) -> Result<(), ApiError> {
        let key = rate_key(ip);
        match self.limiter.check_key(&key) {
            Ok(()) => Ok(()),
            Err(not_until) => {
                use governor::clock::{Clock, DefaultClock};
                let wait = not_until.wait_time_from(DefaultClock::default().now());
                self.rate_blocked.lock().unwrap_or_else(|p| p.into_inner()).insert(key, Instant::now() + wait);
                Err(self.rate_limited(wait))
            }
        }
    }

    fn rate_limited(&self, wait: Duration) -> ApiError {
        let mut e = ApiError::new(
            axum::http::StatusCode::TOO_MANY_REQUESTS,
            "rate_limited",
            format!(
                "more than {} new jobs in an hour from this address: try again in {} s",
                self.config.jobs_per_hour,
                wait.as_secs() + 1
            ),
        );
        e.retry_after = Some(wait.as_secs() + 1);
        e
    }

    /// The library folder in use.
    pub fn library_dir(&self) -> PathBuf {
        self.worker.library_dir()
    }

    /// Whether the default model is installed and verified (cached).
    pub async fn models_ready(self: &Arc<Self>) -> (bool, Option<String>) {
        if let Some(why) = stemroom_engine::runtime::load_failure() {
            // Jobs wait in the queue for the next start (the worker says so).
            return (false, Some(format!("{why}: jobs wait until the server is started again")));
        }
        if let Some((at, ok, why)) = self.models.lock().unwrap_or_else(|p| p.into_inner()).clone() {
            if at.elapsed() < MODELS_CHECK_EVERY {
                return (ok, why);
            }
        }
        let me = self.clone();
        let (ok, why) = tokio::task::spawn_blocking(move || {
            // The model new jobs use (a preset's, or the one chosen).
            let wanted = me.queue.settings().map(|s| s.job_options().model).unwrap_or_default();
            let statuses = model::statuses(&me.manifest, &model::model_search_dirs(me.config.model_dir.as_deref()));
            match statuses.into_iter().find(|s| s.id == wanted) {
                Some(s) if s.installed && s.verified => (true, None),
                Some(s) => {
                    (false, Some(s.problem.unwrap_or_else(|| format!("not installed: run {}", s.fetch_command))))
                }
                None => (false, Some(format!("the model {wanted} is not in this build's manifest"))),
            }
        })
        .await
        .unwrap_or((false, Some("the model check failed".into())));
        *self.models.lock().unwrap_or_else(|p| p.into_inner()) = Some((Instant::now(), ok, why.clone()));
        (ok, why)
    }

    /// The options a job starts from: the saved settings', on this
    /// server's `--device` when it has one. A request's fields change them
    /// ([`form::job_options`]).
    ///
    /// # Errors
    /// 500 when the settings cannot be read.
    pub fn base_options(&self) -> Result<stemroom_library::queue::JobOptions, ApiError> {
        let mut base = self.queue.settings()?.job_options();
        if let Some(device) = self.config.device {
            base.device = device;
        }
        Ok(base)
    }

    /// Queue what a request asked for: an upload (probed first: what does
    /// not decode is refused with 415 and its file removed) or a link
    /// (checked and probed with yt-dlp; a playlist is refused).
    ///
    /// Counts one job against `client`'s hourly quota once the job is
    /// about to be queued ([`Service::rate_spend`]).
    ///
    /// # Errors
    /// 415 not audio; 422 bad options, bad or unavailable link, playlist;
    /// 429 over the client's quota; 500 database.
    pub async fn enqueue(self: &Arc<Self>, new: NewJob, client: Option<IpAddr>) -> Result<Job, ApiError> {
        let options = form::job_options(self.base_options()?, &new.fields, &self.manifest)?;
        let me = self.clone();
        let job = tokio::task::spawn_blocking(move || -> Result<Job, ApiError> {
            if let Some(up) = new.upload {
                // The reason, without where this server keeps uploads.
                let info = stemroom_engine::audio::decode::probe(up.path()).map_err(|e| {
                    let reason = e.to_string().replace(&*up.path().to_string_lossy(), "the file");
                    ApiError::unsupported(format!("this file could not be read as audio: {reason}"))
                })?;
                let limit = me.config.max_upload_seconds;
                // An exact length from the header past the limit is refused
                // at once. Any other file is decoded up to the limit to
                // tell: a raw stream's bit-rate guess can be three times
                // too long, a FLAC may state no length (a few KB can hold
                // hours of silence), and a stated length is no bound on
                // what decodes (FLAC frames after STREAMINFO's count, MP3s
                // joined after a Xing count, chained Ogg links, a WAV
                // stating no data), which the worker would decode whole.
                let exact = info.duration_seconds.filter(|_| !info.duration_estimated);
                match exact {
                    Some(seconds) if limit > 0 && seconds > limit as f64 => {
                        return Err(ApiError::invalid_options(format!(
                            "the audio lasts {:.0} minutes, longer than this server takes ({} minutes)",
                            seconds / 60.0,
                            limit / 60
                        )))
                    }
                    _ if limit > 0 => match longer_than(up.path(), limit) {
                        Ok(false) => {}
                        Ok(true) => {
                            return Err(ApiError::invalid_options(format!(
                                "the audio lasts longer than this server takes ({} minutes)",
                                limit / 60
                            )))
                        }
                        Err(why) => return Err(ApiError::invalid_options(why)),
                    },
                    _ => {}
                }
                let path = up.path().to_str().ok_or_else(|| ApiError::internal("upload path is not UTF-8"))?;
                if let Some(ip) = client {
                    me.rate_spend(ip)?;
                }
                let title = intake::title_from_tags(&info.tags)
                    .or_else(|| new.client_name.as_deref().and_then(upload::title_from_client_name))
                    .unwrap_or_else(|| "Untitled".into());
                let job = me.queue.enqueue(&JobSource::File { path: path.to_string() }, &title, &options)?;
                up.keep();
                // The job is queued: a failure here costs only its expiry
                // (the next start marks it by its upload).
                if let Err(e) = me.queue.mark_from_api(job.id) {
                    tracing::warn!("job {}: not marked as the API's: {e}", job.id);
                }
                // Details only from here: an error is logged, and the job
                // (queued, and run) is the answer, or the client would retry
                // a 500 into a second job.
                if let Some(album) = intake::album_from_tags(&info.tags) {
                    if let Err(e) = me.queue.set_album(job.id, &album) {
                        tracing::warn!("job {}: album not recorded: {e}", job.id);
                    }
                }
                if let Some(d) = info.duration_seconds {
                    if let Err(e) = me.queue.set_details(job.id, Some(d), None) {
                        tracing::warn!("job {}: length not recorded: {e}", job.id);
                    }
                }
                Ok(me.queue.get(job.id).unwrap_or(job))
            } else {
                let url = new.url.unwrap_or_default();
                // Links only: a client never names a file on this machine,
                // nor (unless allowed) a host only this machine reaches.
                if !me.config.allow_private_links {
                    check_public_link(&url).map_err(ApiError::invalid_options)?;
                }
                let reach = if me.config.allow_private_links {
                    stemroom_library::link::Reach::Any
                } else {
                    stemroom_library::link::Reach::PublicOnly
                };
                if let Some(ip) = client {
                    me.rate_spend(ip)?;
                }
                let result = intake::add_url_with(&me.queue, &url, Some(options), reach)?;
                if let Some(job) = result.added.into_iter().next() {
                    if let Err(e) = me.queue.mark_from_api(job.id) {
                        tracing::warn!("job {}: not marked as the API's, so it never expires: {e}", job.id);
                    }
                    return Ok(job);
                }
                if let Some(p) = result.playlists.first() {
                    return Err(ApiError::invalid_options(format!(
                        "{} is a playlist ({} entries): send the link of one song",
                        url,
                        p.entries.len()
                    )));
                }
                let reason = result.rejected.first().map(|r| r.reason.clone()).unwrap_or_default();
                let reason = crate::routes::without_server_paths(&me, &reason);
                Err(ApiError::invalid_options(format!("this link cannot be used: {reason}")))
            }
        })
        .await
        .map_err(|e| ApiError::internal(e.to_string()))??;
        // Heard by the app that embeds the service (its window's queue),
        // unless a worker took the job meanwhile (it said so itself: a late
        // "queued" would follow its "decoding").
        if let Ok(now) = self.queue.get(job.id) {
            if matches!(now.state, JobState::Queued) {
                self.events.job_changed(&now);
            }
        }
        match &self.broker {
            Some(b) => b.notify.notify_one(),
            None => self.worker.notify(),
        }
        Ok(job)
    }

    /// Jobs ahead of `id` in the queue (running ones included).
    pub fn ahead_of(&self, id: JobId) -> u32 {
        let jobs = self.queue.queue().unwrap_or_default();
        jobs.iter()
            .take_while(|j| j.id != id)
            .filter(|j| matches!(j.state, JobState::Queued) || j.state.is_running())
            .count() as u32
    }

    /// Cancel a job: a queued one at once; one running here at its next
    /// segment (it reports its own end); one a remote worker runs (with a
    /// broker) at once here, the worker hearing so at its next segment (its
    /// progress is refused). Returns the job as it is now.
    ///
    /// # Errors
    /// As [`Worker::cancel`](stemroom_library::worker::Worker::cancel).
    pub fn cancel(&self, id: JobId) -> Result<Job, ApiError> {
        let job = self.queue.get(id)?;
        if job.state.is_running() && self.broker.is_some() {
            let cancelled = self.queue.finish(id, &JobState::Cancelled, None, &[])?;
            self.events.job_changed(&cancelled);
            return Ok(cancelled);
        }
        // A queued job's end reaches the events through the worker's
        // listener; a running one tells its own.
        Ok(self.worker.cancel(id)?)
    }

    /// Delete a job and its files: a running one is cancelled first (it
    /// stops within one segment). Returns the job and whether it was running.
    ///
    /// # Errors
    /// 404 unknown; 503 when a running job does not stop in time.
    pub async fn delete(self: &Arc<Self>, id: JobId) -> Result<(Job, bool), ApiError> {
        let deadline = Instant::now() + self.config.request_timeout.saturating_sub(Duration::from_secs(2));
        let mut was_running = false;
        loop {
            let job = self.queue.get(id)?;
            if job.state.is_running() {
                was_running = true;
                // A job that ended meanwhile is deleted as it is.
                let _ = self.cancel(id);
                // A remote worker's job is cancelled at once (see
                // `cancel`); one running here stops within a segment.
                if self.broker.is_none() {
                    while self.worker.running().contains(&id) || self.queue.get(id)?.state.is_running() {
                        if Instant::now() > deadline {
                            return Err(ApiError::unavailable(format!(
                                "job {id} is stopping: it is deleted when you ask again in a few seconds"
                            )));
                        }
                        tokio::time::sleep(Duration::from_millis(50)).await;
                    }
                }
            }
            let me = self.clone();
            // The exports a user made in the app of a song made there are
            // theirs: only a song a client of this service added goes whole.
            match tokio::task::spawn_blocking(move || {
                let with_exports = me.queue.is_from_api(id)?;
                me.remove_files(id, with_exports)
            })
            .await
            .map_err(|e| ApiError::internal(e.to_string()))?
            {
                Ok(removed) => return Ok((removed, was_running)),
                // A worker claimed the queued job between the look and the
                // removal: stop it as any running job, then remove it.
                Err(e) if e.status == axum::http::StatusCode::CONFLICT && Instant::now() < deadline => {
                    tokio::time::sleep(Duration::from_millis(20)).await;
                }
                Err(e) => return Err(e),
            }
        }
    }

    /// Remove a job that is not running, its song folder (its `exports`
    /// only `with_exports`) and its upload. The files go first, as in the
    /// app: when they cannot be deleted (a library on a drive or share not
    /// mounted) the job stays, so a later delete or retention sweep frees
    /// them, where removing the entry first left them for good.
    ///
    /// # Errors
    /// 404 for an unknown job, 409 for a running one, 503 when its song
    /// folder cannot be deleted now.
    fn remove_files(&self, id: JobId, with_exports: bool) -> Result<Job, ApiError> {
        let job = self.queue.get(id)?;
        // As its row says, not its state (one that cannot be read shows as
        // failed while its worker runs it): a running job's files stay.
        if self.queue.stored_status(id)? == "running" {
            return Err(ApiError::conflict(format!("job {id} is running")));
        }
        let folder = job.output_dir.as_deref().filter(|_| !job.state.is_running());
        // Held until the job's entry is gone. Also for a job that failed or
        // was cancelled, which the app plays (what it separated) from its
        // working folder, which the removal deletes.
        let deleting = folder.is_some() || !matches!(job.state, JobState::Done);
        let _deleting = self.before_delete.as_ref().filter(|_| deleting).map(|before| before(id));
        if let Some(dir) = folder {
            match stemroom_library::song::remove_song(&self.library_dir(), Path::new(dir), Some(&job), with_exports) {
                Ok(_) => {}
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                Err(e) => {
                    tracing::warn!("job {id}: its song folder {dir} cannot be deleted: {e}");
                    return Err(ApiError::unavailable(format!(
                        "job {id}'s stems cannot be deleted now ({}); the job is kept: try again",
                        crate::routes::without_paths(self, &job, &e.to_string())
                    )));
                }
            }
        }
        // The worker's listener (the events) discards the upload and ends
        // the streams following the job.
        Ok(self.worker.remove(id)?)
    }

    /// Remove finished jobs older than the retention (see [`crate::retention`]).
    pub fn sweep(&self, now_ms: f64) -> usize {
        let Some(days) = self.config.keep_days else { return 0 };
        crate::retention::expired(&self.queue, now_ms, days)
            .into_iter()
            .filter(|id| match self.remove_files(*id, false) {
                Ok(_) => true,
                Err(e) => {
                    tracing::warn!("retention: job {id} kept: {}", e.message);
                    false
                }
            })
            .count()
    }
}

/// What a server runs on: the queue, its worker and the worker's listener
/// for the server (see [`Events`]). The app passes its own (its worker's
/// listener forwards to the same `Events`); `stemroom serve` opens them.
#[derive(Clone)]
pub struct Parts {
    pub queue: Arc<Queue>,
    pub worker: Worker,
    pub events: Arc<Events>,
    /// See [`BeforeDelete`] (`None` for `stemroom serve`).
    pub before_delete: Option<BeforeDelete>,
}

/// The shared state over `parts` (with a `config` already checked):
/// uploads folder (leftovers of a crash removed), tokens (the clients'
/// and, with a broker, the workers'), rate limiter.
fn build(
    parts: Parts,
    config: ServerConfig,
    stopping: watch::Receiver<bool>,
) -> Result<(Arc<Service>, [Option<auth::Token>; 2]), ServerError> {
    let data_dir = config.data_dir.clone();
    let uploads = upload::uploads_dir(&data_dir);
    std::fs::create_dir_all(&uploads)
        .map_err(|source| ServerError::Io { what: format!("cannot create {}", uploads.display()), source })?;
    let (all, _) = parts.queue.page(0, u32::MAX)?;
    let cleaned = upload::clean(&uploads, &all);
    if cleaned > 0 {
        tracing::info!("removed {cleaned} unfinished or unclaimed upload(s)");
    }
    // Jobs of the server's own uploads are the API's, also those made before
    // jobs recorded who added them (or whose marking a crash cut short), so
    // `--keep-days` expires them.
    let uploaded: Vec<JobId> = all
        .iter()
        .filter(|j| matches!(&j.source, JobSource::File { path } if upload::in_uploads(&uploads, Path::new(path))))
        .map(|j| j.id)
        .collect();
    parts.queue.mark_all_from_api(&uploaded)?;
    let token = if config.auth { Some(auth::load_or_create(&data_dir)?) } else { None };
    let worker_token = if config.auth && config.broker.is_some() {
        Some(auth::load_or_create_named(&data_dir, auth::WORKER_TOKEN_FILE)?)
    } else {
        None
    };
    let broker = match config.broker.as_deref() {
        Some(url) => Some(Arc::new(crate::broker::Broker::new(url, config.max_attempts, config.stall_timeout)?)),
        None => None,
    };
    let per_hour = NonZeroU32::new(config.jobs_per_hour).unwrap_or(NonZeroU32::MIN);
    let service = Arc::new(Service {
        data_dir,
        uploads,
        queue: parts.queue,
        worker: parts.worker,
        events: parts.events,
        token: token.as_ref().map(|t| t.value.clone()),
        worker_token: worker_token.as_ref().map(|t| t.value.clone()),
        manifest: Manifest::builtin().map_err(|e| ServerError::Config(e.to_string()))?,
        limiter: DefaultKeyedRateLimiter::keyed(Quota::per_hour(per_hour)),
        limiter_pruned: Mutex::new(Instant::now()),
        rate_blocked: Mutex::new(std::collections::HashMap::new()),
        attempt_limiter: DefaultKeyedRateLimiter::keyed(Quota::per_hour(
            per_hour.saturating_mul(NonZeroU32::new(ATTEMPTS_PER_JOB).unwrap_or(NonZeroU32::MIN)),
        )),
        models: Mutex::new(None),
        broker,
        stopping,
        before_delete: parts.before_delete,
        upload_reserved: std::sync::atomic::AtomicU64::new(0),
        config,
    });
    Ok((service, [token, worker_token]))
}

/// Open the data folder (one process per folder) and make the worker: the
/// parts of a `stemroom serve` before it listens.
fn open(
    mut config: ServerConfig,
    stopping: watch::Receiver<bool>,
) -> Result<(Arc<Service>, InstanceLock, Ready), ServerError> {
    config.validate().map_err(ServerError::Config)?;
    let data_dir = config.data_dir.clone();
    let io = |what: &str| {
        let what = format!("{what} {}", data_dir.display());
        move |source| ServerError::Io { what, source }
    };
    std::fs::create_dir_all(&data_dir).map_err(io("cannot create the data folder"))?;
    // One spelling of the folder for every path stored from now on (a
    // relative `--data-dir` depends on the working folder of each run).
    let data_dir = std::fs::canonicalize(&data_dir).map_err(io("cannot resolve the data folder"))?;
    config.data_dir = data_dir.clone();
    let lock = InstanceLock::acquire(&data_dir)
        .map_err(io("cannot lock the data folder"))?
        .ok_or_else(|| ServerError::Locked(data_dir.clone()))?;
    // A damaged database is set aside and rebuilt (logged; see
    // `Queue::open_owned`), the songs filed again from their folders.
    // Song folders that name no database are left to the app, whose
    // library the server's may be (`~/Music/Stemroom` for both).
    let (queue, _) = Queue::open_owned(
        &data_dir.join("stemroom.sqlite"),
        &lock,
        &stemroom_library::song::default_library_dir(&data_dir),
        false,
    )?;
    let queue = Arc::new(queue);
    // With a broker, running jobs held by remote workers stay as they are
    // (a worker may still be at it; a dead one's job is taken over through
    // the broker, a silent one's by the stall watchdog); those no worker
    // holds were left running by a local run and go back in the queue.
    // Without a broker, every running job was this process's.
    let recovered = if config.broker.is_some() { queue.broker_recover_unheld(&lock)? } else { queue.recover(&lock)? };
    let settings = queue.settings()?;
    stemroom_engine::audio::decode::set_ffmpeg_path(settings.ffmpeg_path.as_deref().map(PathBuf::from));
    let events = Arc::new(Events::new(upload::uploads_dir(&data_dir)));
    let worker_config = WorkerConfig {
        model_dir: config.model_dir.clone(),
        runtime_library: config.runtime_library.clone(),
        default_library: stemroom_library::song::default_library_dir(&data_dir),
        threads: config.threads,
        checkpoint_every: config.checkpoint_every,
    };
    let worker = Worker::new(queue.clone(), worker_config, events.clone());
    let (service, [token, worker_token]) =
        build(Parts { queue, worker, events, before_delete: None }, config, stopping)?;
    let ready = Ready { addr: service.config.listen, token, worker_token, recovered };
    Ok((service, lock, ready))
}

/// A server running inside another program (the app) on that program's
/// queue and worker. Stopping it stops the HTTP side only: the worker and
/// its jobs are the app's.
pub struct Embedded {
    /// The address it listens on.
    pub addr: SocketAddr,
    /// The bearer token.
    pub token: String,
    stop: watch::Sender<bool>,
    task: tokio::task::JoinHandle<()>,
}

impl std::fmt::Debug for Embedded {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Embedded").field("addr", &self.addr).finish()
    }
}

impl Embedded {
    /// Listen on `config.listen` (token always on) and serve `parts`.
    ///
    /// # Errors
    /// [`ServerError`]: the address in use, the token file, the database.
    pub async fn start(parts: Parts, mut config: ServerConfig) -> Result<Embedded, ServerError> {
        config.auth = true;
        config.validate().map_err(ServerError::Config)?;
        let (stop, stopping) = watch::channel(false);
        // Reading every job, clearing the uploads folder and the token file
        // are blocking work: not on the runtime's threads, which the app's
        // other commands and this service's tasks share.
        let for_build = stopping.clone();
        let (service, [token, _]) = tokio::task::spawn_blocking(move || build(parts, config, for_build))
            .await
            .map_err(|e| ServerError::Io { what: "starting the service".into(), source: std::io::Error::other(e) })??;
        let listener = tokio::net::TcpListener::bind(service.config.listen)
            .await
            .map_err(|source| ServerError::Bind { addr: service.config.listen, source })?;
        let addr = listener.local_addr().map_err(|source| ServerError::Bind { addr: service.config.listen, source })?;
        let app = crate::routes::router(service.clone());
        let limits = service.config.limits();
        let mut stopped = stopping;
        let task = tokio::spawn(async move {
            let stop = async move {
                let _ = stopped.wait_for(|s| *s).await;
            };
            crate::listen::serve(listener, app, limits, stop).await;
        });
        Ok(Embedded { addr, token: token.map(|t| t.value).unwrap_or_default(), stop, task })
    }

    /// Stop listening; requests in flight get [`crate::listen::DRAIN_WITHIN`].
    pub async fn stop(self) {
        let _ = self.stop.send(true);
        let _ = self.task.await;
    }
}

/// A future that ends at SIGINT (Ctrl-C), SIGTERM or SIGHUP (not watched
/// under `nohup`, which asks that the terminal closing does not stop the
/// server). The handlers are installed when this is called, not when the
/// future is first polled: a signal right after "listening" is printed
/// (before the server's loop polls it) is a graceful stop, not the default
/// action that kills the process. `again`, when given, is called on a
/// signal that comes [`FORCE_AFTER`] or more after the first, while the
/// stop drains (up to [`STOP_JOBS_WITHIN`] and [`STOP_REQUESTS_WITHIN`]):
/// a person who waited and asks again means "now" (tokio keeps its
/// handlers installed once the streams are dropped, so without this a
/// second Ctrl-C did nothing). It is heard through a handler of its own
/// and called on a thread of its own, so it works through the runtime's
/// shutdown too (which drops every task).
fn signalled(
    again: Option<Arc<dyn Fn() + Send + Sync>>,
) -> std::pin::Pin<Box<dyn std::future::Future<Output = ()> + Send>> {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{signal, SignalKind};
        let mut streams = Vec::new();
        // One ignored when the server started (SIGHUP under `nohup`, SIGINT
        // under a script's `&`) stays ignored.
        let watched = [
            (SignalKind::hangup(), libc::SIGHUP),
            (SignalKind::interrupt(), libc::SIGINT),
            (SignalKind::terminate(), libc::SIGTERM),
        ];
        let kinds = watched.into_iter().filter(|&(_, s)| !stemroom_engine::signals::ignored(s)).map(|(kind, _)| kind);
        for kind in kinds {
            match signal(kind) {
                Ok(s) => streams.push(s),
                Err(e) => tracing::error!("cannot watch a signal: {e}"),
            }
        }
        Box::pin(async move {
            if streams.is_empty() {
                // None could be watched (said above): select_all of nothing
                // would panic.
                return std::future::pending().await;
            }
            let waits = streams.iter_mut().map(|s| Box::pin(s.recv()));
            futures_util::future::select_all(waits).await;
            if let Some(again) = again {
                watch_again(again);
            }
        })
    }
    #[cfg(not(unix))]
    {
        Box::pin(async move {
            let _ = tokio::signal::ctrl_c().await;
            let Some(again) = again else { return };
            let first = Instant::now();
            tokio::spawn(async move {
                loop {
                    let _ = tokio::signal::ctrl_c().await;
                    if first.elapsed() >= FORCE_AFTER {
                        again();
                    }
                }
            });
        })
    }
}

/// A second signal closer than this to the first is the same request
/// ([`signalled`]), as the CLI's other commands take it.
const FORCE_AFTER: Duration = Duration::from_secs(1);

/// From now on, a SIGINT, SIGTERM or SIGHUP (not one ignored, as SIGHUP
/// under `nohup`) that comes
/// [`FORCE_AFTER`] or more after now calls `again`: the signal handler only
/// sets a flag (all it may do), and a thread of its own looks every 50 ms.
#[cfg(unix)]
fn watch_again(again: Arc<dyn Fn() + Send + Sync>) {
    use std::sync::atomic::{AtomicBool, Ordering};
    static ASKED: AtomicBool = AtomicBool::new(false);
    let first = Instant::now();
    let kinds = stemroom_engine::signals::WATCHED.into_iter().filter(|&s| !stemroom_engine::signals::ignored(s));
    for signal in kinds {
        // SAFETY: the action is async-signal-safe: a monotonic clock read
        // (clock_gettime) and an atomic store.
        let added = unsafe {
            signal_hook_registry::register(signal, move || {
                // (A closing terminal sends SIGHUP twice at once.)
                if first.elapsed() >= FORCE_AFTER {
                    ASKED.store(true, Ordering::SeqCst);
                }
            })
        };
        if let Err(e) = added {
            tracing::warn!("a second signal cannot be watched: {e}");
        }
    }
    let _ = std::thread::Builder::new().name("stemroom-again".into()).spawn(move || loop {
        std::thread::sleep(Duration::from_millis(50));
        if ASKED.swap(false, Ordering::SeqCst) {
            again();
        }
    });
}

/// Run the server until SIGINT/SIGTERM/SIGHUP: open the data folder (one
/// process per folder), start `config.jobs` workers, listen, and on a
/// signal stop accepting, let requests in flight end (10 s at most), put
/// running jobs back in the queue with their checkpoints and return.
/// `ready` is called once it listens.
///
/// # Errors
/// [`ServerError`] when it cannot start.
pub async fn run(config: ServerConfig, ready: impl FnOnce(&Ready)) -> Result<(), ServerError> {
    run_until(config, ready, signalled(None)).await
}

/// [`run`] that stops when `stop` completes instead of on a signal.
///
/// # Errors
/// [`ServerError`] when it cannot start.
pub async fn run_until(
    config: ServerConfig,
    ready: impl FnOnce(&Ready),
    stop: impl std::future::Future<Output = ()>,
) -> Result<(), ServerError> {
    serve_locked(config, ready, stop).await.map(drop)
}

/// [`run_until`], giving back the data folder's lock for the caller to
/// let go of once the work requests started on the runtime's blocking
/// threads (an upload being probed and queued) is over.
async fn serve_locked(
    config: ServerConfig,
    ready: impl FnOnce(&Ready),
    stop: impl std::future::Future<Output = ()>,
) -> Result<InstanceLock, ServerError> {
    let (stop_tx, stop_rx) = watch::channel(false);
    let (service, lock, mut info) = open(config, stop_rx)?;
    let listener = tokio::net::TcpListener::bind(service.config.listen)
        .await
        .map_err(|source| ServerError::Bind { addr: service.config.listen, source })?;
    info.addr = listener.local_addr().map_err(|source| ServerError::Bind { addr: service.config.listen, source })?;
    let publisher = match service.broker.clone() {
        Some(b) => Some((
            tokio::spawn(crate::broker::publish(service.clone(), b.clone())),
            tokio::spawn(crate::broker::watch(service.clone(), b)),
        )),
        None => {
            service.worker.start(service.config.jobs);
            None
        }
    };
    let retention = tokio::spawn(crate::retention::every_hour(service.clone()));
    ready(&info);
    let app = crate::routes::router(service.clone());
    // Requests that wait (`/events` streams, a synchronous `/separate`)
    // hear of the stop as it comes, so the graceful drain is not kept
    // waiting by them for its whole limit.
    let stop = async move {
        stop.await;
        let _ = stop_tx.send(true);
    };
    crate::listen::serve(listener, app, service.config.limits(), stop).await;
    retention.abort();
    if let Some((publisher, watchdog)) = publisher {
        publisher.abort();
        watchdog.abort();
    }
    // Running jobs go back in the queue, keeping their checkpoints.
    service.worker.suspend();
    let deadline = Instant::now() + STOP_JOBS_WITHIN;
    while !service.worker.running().is_empty() && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    if !service.worker.running().is_empty() {
        tracing::warn!("jobs still running after {} s: the next start resumes them", STOP_JOBS_WITHIN.as_secs());
    }
    Ok(lock)
}

/// [`run`] on its own multi-threaded tokio runtime (for the CLI). `again`
/// is called on a second signal (a second or more after the first) while
/// the stop drains: the CLI ends the process there.
///
/// # Errors
/// [`ServerError`] when it cannot start.
pub fn run_blocking(
    config: ServerConfig,
    ready: impl FnOnce(&Ready),
    again: impl Fn() + Send + Sync + 'static,
) -> Result<(), ServerError> {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .thread_name("stemroom-http")
        .build()
        .map_err(|source| ServerError::Io { what: "cannot start the async runtime".into(), source })?;
    let again: Arc<dyn Fn() + Send + Sync> = Arc::new(again);
    let lock = rt.block_on(async { serve_locked(config, ready, signalled(Some(again))).await })?;
    // Requests dropped by the drain may have left work on the blocking
    // threads (an upload being decoded to check its length, then queued).
    // The folder stays locked until it is over (or for STOP_REQUESTS_WITHIN
    // at most): a server started on it meanwhile would remove that upload
    // as a leftover, and two processes would write one database.
    rt.shutdown_timeout(STOP_REQUESTS_WITHIN);
    drop(lock);
    Ok(())
}

/// Longest wait, once the server has stopped, for work its requests left
/// on the runtime's blocking threads (see [`run_blocking`]): an upload's
/// length check decodes at most `--max-upload-minutes` of audio, seconds
/// on one core.
const STOP_REQUESTS_WITHIN: Duration = Duration::from_secs(30);

/// New-job requests a client may send an hour per job of its quota,
/// refused ones included (each may store and decode an upload before it
/// is refused): a client that retries a bad request is slowed, not locked
/// out for an hour after a few tries.
const ATTEMPTS_PER_JOB: u32 = 10;

/// How often the rate limiter forgets addresses it has not seen lately.
const LIMITER_PRUNE_EVERY: Duration = Duration::from_secs(600);

/// Whether `path`'s audio runs past `limit` seconds, found by decoding it
/// up to there (whatever its header says); false when it ends within the
/// limit or cannot be read (the worker reports that).
///
/// # Errors
/// A message when a part of the file only ffmpeg decodes and this server
/// has none: its length cannot be checked here, and a remote worker with
/// ffmpeg would decode the rest however long it is.
fn longer_than(path: &std::path::Path, limit: u64) -> Result<bool, String> {
    let unmeasured = |e| unmeasured(e, limit);
    let mut decoder = match stemroom_engine::audio::decode::StreamDecoder::open(path) {
        Ok(d) => d,
        Err(e) => return unmeasured(e),
    };
    let mut seconds = 0.0;
    loop {
        match decoder.next_block() {
            Ok(Some((block, rate))) => {
                // Interleaved stereo frames at `rate` Hz.
                seconds += (block.len() / 2) as f64 / f64::from(rate.max(1));
                if seconds > limit as f64 {
                    return Ok(true);
                }
            }
            Ok(None) => return Ok(false),
            Err(e) => return unmeasured(e),
        }
    }
}

/// What [`longer_than`] answers for a decoding error: a part only ffmpeg
/// decodes, where this server has none, is refused (its length unknown);
/// any other error is the worker's to report.
fn unmeasured(e: stemroom_engine::audio::decode::DecodeError, limit: u64) -> Result<bool, String> {
    match e {
        e @ stemroom_engine::audio::decode::DecodeError::NeedsFfmpeg { .. } => Err(format!(
            "this server cannot read the whole file to check it is within its {} minutes ({e})",
            limit / 60
        )),
        _ => Ok(false),
    }
}

/// Whom `--jobs-per-hour` counts for a client address: an IPv4 address
/// (also written as IPv6, `::ffff:a.b.c.d`) itself, an IPv6 address by its
/// /64 prefix, the smallest network a site gets (RFC 6177), whose
/// addresses one host can take as many of as it likes.
pub fn rate_key(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
            Some(v4) => IpAddr::V4(v4),
            None => {
                let s = v6.segments();
                IpAddr::V6(std::net::Ipv6Addr::new(s[0], s[1], s[2], s[3], 0, 0, 0, 0))
            }
        },
        v4 => v4,
    }
}

/// Refuse a link whose host is this machine or a private network: the
/// server fetches it (yt-dlp), so a client could otherwise reach what only
/// the server reaches (its own ports, the local network, a cloud's metadata
/// service at 169.254.169.254) and get it back as stems, or map it from the
/// errors. Every address the host resolves to must be public. (A redirect
/// or a DNS answer that changes after this check is not covered: run the
/// server where it reaches nothing private, or behind an egress filter,
/// when that matters.)
///
/// The link is read as the intake reads it ([`stemroom_library::link::check_url`]:
/// spaces and invisible characters at its ends dropped), so what is checked
/// here is what yt-dlp is given.
///
/// # Errors
/// A message for the client; links the intake refuses (not http(s), or not
/// a link at all) are left to its own message.
pub fn check_public_link(url: &str) -> Result<(), String> {
    let Ok(url) = stemroom_library::link::check_url(url) else {
        // The intake refuses it with the same check, saying why.
        return Ok(());
    };
    let lower = url.to_ascii_lowercase();
    let (rest, default_port) = match (lower.strip_prefix("https://"), lower.strip_prefix("http://")) {
        (Some(rest), _) => (rest, 443),
        (None, Some(rest)) => (rest, 80),
        // Not a web link: the intake refuses it.
        (None, None) => return Ok(()),
    };
    // The host as yt-dlp will see it (the same split as the intake's
    // check): after any user info, before the path, query or fragment.
    let authority = rest.split(['/', '?', '#']).next().unwrap_or("");
    let host_port = authority.rsplit('@').next().unwrap_or("");
    let (host, port) = match host_port.strip_prefix('[') {
        Some(v6) => {
            let (host, after) = v6.split_once(']').unwrap_or((v6, ""));
            (host, after.strip_prefix(':'))
        }
        None => match host_port.rsplit_once(':') {
            Some((host, port)) => (host, Some(port)),
            None => (host_port, None),
        },
    };
    let unclear = |why: &str| Err(format!("{url}: {why}, so this server does not fetch it"));
    let port = match port.filter(|p| !p.is_empty()) {
        None => default_port,
        Some(p) => match p.parse::<u16>() {
            Ok(p) => p,
            Err(_) => return unclear("its port is not a number"),
        },
    };
    if host.is_empty() || host.contains('%') {
        return unclear("its host cannot be told");
    }
    // One answer for a name that does not resolve and one that resolves
    // to a private address, naming no address: a client learns nothing of
    // the server's network (which internal names exist, where they lead).
    let refused = || {
        Err(format!(
            "{host} is not a public address this server fetches from (this machine, a private network or a \
             name that does not resolve here; its operator can allow this machine and private networks with \
             --allow-private-links)"
        ))
    };
    let Ok(addrs) = stemroom_library::link::addresses_of(host, port) else {
        return refused();
    };
    match addrs.iter().find(|ip| !is_public(**ip)) {
        Some(_) => refused(),
        None => Ok(()),
    }
}

pub use stemroom_library::link::is_public;

#[cfg(test)]
mod link_tests {
    use super::*;

    #[test]
    fn an_ipv6_client_is_counted_by_its_64_prefix() {
        let k = |a: &str| rate_key(a.parse().unwrap());
        assert_eq!(k("2001:db8:1:2:aaaa::1"), k("2001:db8:1:2:bbbb:cccc:dddd:eeee"));
        assert_ne!(k("2001:db8:1:2::1"), k("2001:db8:1:3::1"));
        assert_eq!(k("::ffff:192.0.2.7"), k("192.0.2.7"));
        assert_ne!(k("192.0.2.7"), k("192.0.2.8"));
    }

    #[test]
    fn links_to_this_machine_or_private_networks_are_refused() {
        for bad in [
            "http://127.0.0.1:8080/a.wav",
            "http://localhost/a.wav",
            "https://10.1.2.3/x",
            "http://192.168.1.10/song.mp3",
            "http://169.254.169.254/latest/meta-data/",
            "http://100.64.0.1/",
            "http://[::1]/",
            "http://[fd00::1]/",
            "http://[::ffff:127.0.0.1]/",
            "http://0.0.0.0/",
        ] {
            let e = check_public_link(bad).expect_err(bad);
            assert!(e.contains("--allow-private-links"), "{e}");
        }
        // Nothing of where a name leads.
        let e = check_public_link("http://localhost/a.wav").expect_err("localhost");
        assert!(!e.contains("127.0.0.1") && !e.contains("::1"), "{e}");
        // A private address and a name that does not resolve read alike.
        let private = check_public_link("http://10.20.0.15/").expect_err("private");
        let unknown = check_public_link("http://no-such-host.invalid/").expect_err("unknown");
        assert_eq!(private.replace("10.20.0.15", "H"), unknown.replace("no-such-host.invalid", "H"));
        // Forms a URL parser would refuse but yt-dlp fetches, and other
        // spellings of the loopback address.
        for bad in [
            "http://127.0.0.1:8080/é",
            "http://169.254.169.254/latest/meta-data/?^",
            "http://user:pw@127.0.0.1/x",
            "http://2130706433/",
            "http://0177.0.0.1/",
            "http://%31%32%37.0.0.1/",
            "https://no-such-host.invalid/x",
            // Invisible characters the intake drops before yt-dlp sees the
            // link (zero-width space, byte-order mark, soft hyphen).
            "\u{200b}http://169.254.169.254/latest/meta-data/",
            "\u{feff}http://127.0.0.1:8080/a.wav",
            "\u{ad}http://localhost/ \u{200b}",
        ] {
            assert!(check_public_link(bad).is_err(), "{bad}");
        }
        for good in ["https://8.8.8.8/x", "http://[2606:4700::1111]:8443/", "https://1.1.1.1:443/a?b=c#d", "-rf"] {
            assert!(check_public_link(good).is_ok(), "{good}");
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Mutex as StdMutex;

    use stemroom_library::queue::{JobSource, JobState, Settings, StemFile};
    use stemroom_library::song::{self, SongMetadata};
    use stemroom_library::worker::{WorkerConfig, WorkerListener};

    use super::*;

    /// A part only ffmpeg decodes, on a server without it: the length is
    /// not known, so the upload is refused (a remote worker with ffmpeg
    /// would decode the rest however long); other errors are the worker's.
    #[test]
    fn a_length_that_cannot_be_measured_is_refused() {
        use stemroom_engine::audio::decode::DecodeError;
        let needs = DecodeError::NeedsFfmpeg { path: "/up/x.wma".into(), codec: "WMA".into() };
        let refused = unmeasured(needs, 3 * 3600).expect_err("refused");
        assert!(refused.contains("within its 180 minutes") && refused.contains("ffmpeg"), "{refused}");
        let corrupt = DecodeError::Corrupt { path: "/up/x.wav".into(), reason: "truncated".into() };
        assert_eq!(unmeasured(corrupt, 60), Ok(false));
    }

    struct Nobody;
    impl WorkerListener for Nobody {
        fn job_changed(&self, _: &Job) {}
        fn progress(&self, _: &stemroom_library::worker::JobProgress) {}
    }

    /// A link refused before it is queued (yt-dlp missing: its message
    /// lists where it was looked for) names the server's folders, not
    /// their paths.
    #[tokio::test]
    async fn a_refused_link_does_not_show_the_servers_paths() {
        let dir = tempfile::tempdir().unwrap();
        let queue = Arc::new(Queue::open(&dir.path().join("queue.sqlite")).unwrap());
        let mut settings = queue.settings().unwrap();
        let missing = dir.path().join("tools").join("no-yt-dlp");
        settings.ytdlp_path = Some(missing.to_string_lossy().into_owned());
        queue.save_settings(&settings).unwrap();
        let worker = Worker::new(
            queue.clone(),
            WorkerConfig { default_library: dir.path().join("library"), ..Default::default() },
            Arc::new(Nobody),
        );
        let events = Arc::new(Events::new(upload::uploads_dir(dir.path())));
        let parts = Parts { queue, worker, events, before_delete: None };
        let (_stop, stopping) = watch::channel(false);
        let mut config = ServerConfig::new(dir.path().to_path_buf());
        config.allow_private_links = true;
        let (service, _) = build(parts, config, stopping).unwrap();
        let new = NewJob {
            upload: None,
            client_name: None,
            url: Some("http://127.0.0.1:9/song.mp3".into()),
            fields: Default::default(),
            ignored: Vec::new(),
        };
        let e = service.enqueue(new, None).await.expect_err("no yt-dlp");
        let shown = dir.path().to_string_lossy().into_owned();
        assert!(e.message.contains("this link cannot be used"), "{}", e.message);
        assert!(!e.message.contains(&shown) && e.message.contains("the server's data folder"), "{}", e.message);
    }

    /// The app's hook runs before a song deleted through the API loses its
    /// folder (the app closes it in its player first), and what it hands
    /// back is let go once the job's entry is gone.
    #[tokio::test]
    async fn an_embedding_app_hears_of_a_delete_before_the_folder_goes() {
        let dir = tempfile::tempdir().unwrap();
        let queue = Arc::new(Queue::open(&dir.path().join("queue.sqlite")).unwrap());
        let library = dir.path().join("library");
        let options = Settings::default().job_options();
        let job = queue.enqueue(&JobSource::File { path: "/m/a.wav".into() }, "Song", &options).unwrap();
        let job = queue.claim_next().unwrap().filter(|j| j.id == job.id).unwrap();
        let work = song::partial_dir(&library, queue.work_tag(), job.id);
        std::fs::create_dir_all(&work).unwrap();
        std::fs::write(work.join("vocals.wav"), b"stem").unwrap();
        let stems = vec![StemFile { stem: "vocals".into(), path: "vocals.wav".into() }];
        SongMetadata::new(&job, stems.clone(), 1.0, None, None).write(&work).unwrap();
        let folder = song::publish_song(&library, &work, &job.title).unwrap();
        queue.finish(job.id, &JobState::Done, folder.to_str(), &stems).unwrap();

        let worker = Worker::new(
            queue.clone(),
            WorkerConfig { default_library: library.clone(), ..Default::default() },
            Arc::new(Nobody),
        );
        let heard = Arc::new(StdMutex::new(Vec::new()));
        let seen = heard.clone();
        let at = folder.clone();
        // The mark it hands back is let go once the entry is gone.
        struct Mark(Arc<Queue>, JobId, Arc<StdMutex<Vec<(JobId, bool)>>>);
        impl Drop for Mark {
            fn drop(&mut self) {
                self.2.lock().unwrap().push((self.1, self.0.get(self.1).is_err()));
            }
        }
        let q = queue.clone();
        let before_delete: BeforeDelete = Arc::new(move |id| {
            seen.lock().unwrap().push((id, at.join("stemroom.json").exists()));
            Box::new(Mark(q.clone(), id, seen.clone()))
        });
        let events = Arc::new(Events::new(upload::uploads_dir(dir.path())));
        let parts = Parts { queue, worker, events, before_delete: Some(before_delete) };
        let (_stop, stopping) = watch::channel(false);
        let (service, _) = build(parts, ServerConfig::new(dir.path().to_path_buf()), stopping).unwrap();
        service.delete(job.id).await.unwrap();
        assert_eq!(
            *heard.lock().unwrap(),
            [(job.id, true), (job.id, true)],
            "told once, while the song was there; its mark let go once the entry was gone"
        );
        assert!(!folder.exists(), "then deleted");
    }
}

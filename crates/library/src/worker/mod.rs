//! Runs queued jobs: claims them from the [`Queue`], separates them with a
//! shared [`Separator`] per (model, device), reports progress, and files the
//! stems into the library.
//!
//! Threads: [`Worker::start`] spawns `Settings::concurrent_jobs` worker
//! threads (1 by default, since the network already uses every core). Each
//! running job owns a cancellation flag; [`Worker::cancel`] sets it and the
//! engine stops at its next check (between segments), removing everything the
//! job wrote. Progress goes to a [`WorkerListener`], throttled to at most one
//! update per [`PROGRESS_INTERVAL`] except when the state changes.
//!
//! Memory: a loaded model holds its weights (~0.5 GB) and ONNX Runtime's
//! activation arena (~2 GB with htdemucs). Both are kept while jobs follow one
//! another and dropped as soon as no job is running and none is waiting, so an
//! idle app is small again; the next job loads the model anew (~1 s).

mod progress;
mod run;

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Condvar, Mutex};
use std::time::Duration;

use stemroom_engine::job::Separator;
use stemroom_engine::units::Device;
use stemroom_engine::ErrorCode;

pub use progress::{JobProgress, PROGRESS_INTERVAL};

use crate::queue::{Job, JobId, JobState, Queue, QueueError};
use crate::song;
use crate::Error;

/// Receives what workers do. Called on worker threads.
pub trait WorkerListener: Send + Sync {
    /// A job changed in the database (claimed, finished, failed, cancelled,
    /// queued again by [`Worker::retry`]).
    fn job_changed(&self, job: &Job);
    /// Throttled progress of a running job.
    fn progress(&self, progress: &JobProgress);
    /// A job left the queue and the library ([`Worker::remove`]); `job` is
    /// its last state. Nothing by default.
    fn job_removed(&self, job: &Job) {
        let _ = job;
    }
}

/// Where the worker finds things.
#[derive(Debug, Clone, Default)]
pub struct WorkerConfig {
    /// Extra model directory searched first (`None` = the usual search).
    pub model_dir: Option<PathBuf>,
    /// Explicit ONNX Runtime library.
    pub runtime_library: Option<PathBuf>,
    /// Library used when the settings name none.
    pub default_library: PathBuf,
    /// Network threads (`None` = ONNX Runtime's default: all cores).
    pub threads: Option<usize>,
    /// Least time between two checkpoints of a running job (`None` =
    /// `stemroom_engine::job::checkpoint::DEFAULT_EVERY`, 20 s).
    pub checkpoint_every: Option<Duration>,
}

/// A loaded model's key: its name and the device asked for.
type ModelKey = (String, Device);

struct Inner {
    queue: Arc<Queue>,
    config: WorkerConfig,
    listener: Arc<dyn WorkerListener>,
    running: Mutex<HashMap<JobId, Arc<AtomicBool>>>,
    separators: Mutex<HashMap<ModelKey, Arc<Separator>>>,
    /// One lock per model and device, held while it is opened: jobs that
    /// start together wait for one load instead of each opening a copy of
    /// its own (about 0.5 GB of weights and 2 GB of arena each, of which
    /// only the last was kept).
    opening: Mutex<HashMap<ModelKey, Arc<Mutex<()>>>>,
    /// Models opened so far in this process.
    opened: std::sync::atomic::AtomicUsize,
    wake: Condvar,
    wake_flag: Mutex<bool>,
    stop: AtomicBool,
    /// Set by [`Worker::suspend`]: jobs stopped now go back to the queue
    /// with their checkpoints instead of being cancelled.
    suspending: AtomicBool,
    /// Jobs whose cancel was asked before or during [`Worker::suspend`]:
    /// they end cancelled, not back in the queue.
    cancelled_before_suspend: Mutex<std::collections::HashSet<JobId>>,
    /// Worker slots: how many threads are wanted and which slot indices have
    /// a live thread. One mutex so "should I exit" and "free my slot" are one
    /// step, and `start` never miscounts a thread that is about to exit.
    slots: Mutex<Slots>,
    /// Whether jobs may start (see [`Worker::hold_until`]); `None`: always
    /// (and once it said yes).
    ready: Mutex<Option<ReadyProbe>>,
    /// The probe said no at the last claim (logged once).
    held: AtomicBool,
    /// Whether `claim` said that ONNX Runtime failed to load (said once).
    runtime_failed: AtomicBool,
}

/// Says whether what every job needs is installed.
type ReadyProbe = Arc<dyn Fn() -> bool + Send + Sync>;

/// Runs the queue in background threads. Dropping it does not stop running
/// jobs; call [`Worker::shutdown`] for that.
#[derive(Clone)]
pub struct Worker {
    inner: Arc<Inner>,
}

impl std::fmt::Debug for Worker {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Worker").field("queue", &self.inner.queue).finish()
    }
}

#[derive(Debug, Default)]
struct Slots {
    wanted: usize,
    alive: Vec<bool>,
}

/// Nice value worker threads run at. On Linux a nice value belongs to a
/// thread and is inherited by the threads it starts, so ONNX Runtime's pool
/// and the engine's spectrogram and iSTFT threads, all started from a worker
/// thread, run at it too. 10 is `nice(1)`'s default increment: the player's
/// reader and output threads (nice 0) and the sound server get the CPU first
/// when a song plays while another is separated (the hardening issue's
/// playback-under-load case), while an otherwise idle machine still gives the
/// separation every core.
pub const WORKER_NICE: i32 = 10;

/// Lower the calling thread to [`WORKER_NICE`] (never raise it). Linux only;
/// elsewhere the separation keeps the default priority.
fn lower_thread_priority() {
    #[cfg(target_os = "linux")]
    {
        // SAFETY: gettid has no preconditions; getpriority/setpriority name
        // only the calling thread.
        unsafe {
            let tid = libc::gettid() as libc::id_t;
            *libc::__errno_location() = 0;
            let now = libc::getpriority(libc::PRIO_PROCESS, tid);
            let now = if *libc::__errno_location() == 0 { now } else { 0 };
            if now < WORKER_NICE && libc::setpriority(libc::PRIO_PROCESS, tid, WORKER_NICE) != 0 {
                tracing::warn!("cannot lower the worker thread's priority: {}", std::io::Error::last_os_error());
            }
        }
    }
}

/// Most worker threads a setting may ask for.
pub const MAX_THREADS: usize = 8;

/// Frees a worker thread's slot when the thread ends by a panic. (A thread
/// that returns has freed it itself, deciding to end under the same lock:
/// freeing it again here could free the slot of a thread
/// [`Worker::start`] started for it meanwhile, and a later start would run
/// two threads in it.)
struct SlotGuard(Arc<Inner>, usize);
impl Drop for SlotGuard {
    fn drop(&mut self) {
        if !std::thread::panicking() {
            return;
        }
        let mut slots = self.0.slots.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(s) = slots.alive.get_mut(self.1) {
            *s = false;
        }
    }
}

/// Removes a job's cancellation flag when its run ends, however it ends;
/// only its own flag: once the end is recorded, a retry may have been
/// claimed by another thread with a flag of its own.
struct RunningGuard<'a>(&'a Inner, JobId, Arc<AtomicBool>);
impl Drop for RunningGuard<'_> {
    fn drop(&mut self) {
        let mut running = self.0.running.lock().unwrap_or_else(|p| p.into_inner());
        if running.get(&self.1).is_some_and(|f| Arc::ptr_eq(f, &self.2)) {
            running.remove(&self.1);
        }
    }
}

/// Cleans a job's working folder when its run ends without a song, unless
/// disarmed: a cancel (`cancelled`: `Inner::cancel_asked`, which counts a
/// cancel asked before or during a graceful stop) removes it; a failure or
/// a suspension keeps only its saved checkpoint,
/// so a retry (or the run after the suspension) resumes from it instead
/// of separating from the start (an error writing the stems, an input on
/// a drive gone a moment: a long CPU job's hours). A failure for want of
/// room drops it after (`Inner::run_job`).
struct PartialGuard<'a> {
    dir: Option<PathBuf>,
    cancelled: &'a dyn Fn() -> bool,
}
impl Drop for PartialGuard<'_> {
    fn drop(&mut self) {
        let Some(p) = self.dir.take() else { return };
        if !(self.cancelled)() && has_checkpoint(&p) {
            run::clear_except(&p, run::CHECKPOINT_DIR);
        } else {
            let _ = std::fs::remove_dir_all(p);
        }
    }
}

/// Whether `e`, or an error under it, is a file system out of room (or the
/// user's quota: the kinds std gives ENOSPC and EDQUOT).
fn out_of_room(e: &(dyn std::error::Error + 'static)) -> bool {
    let mut at = Some(e);
    while let Some(err) = at {
        let kind = err.downcast_ref::<std::io::Error>().map(std::io::Error::kind);
        if matches!(kind, Some(std::io::ErrorKind::StorageFull | std::io::ErrorKind::QuotaExceeded)) {
            return true;
        }
        at = err.source();
    }
    false
}

/// Whether working folder `work` holds a saved checkpoint.
fn has_checkpoint(work: &Path) -> bool {
    stemroom_engine::job::checkpoint::saved(&work.join(run::CHECKPOINT_DIR))
}

impl Worker {
    /// A worker over `queue`; no thread runs until [`Worker::start`]. Leftover
    /// working folders of crashed runs are removed from the library here,
    /// except those of queued jobs (their checkpoints let them resume) and
    /// of failed ones that hold their separated song (it could not be
    /// filed) or a saved checkpoint (a retry resumes from it).
    pub fn new(queue: Arc<Queue>, config: WorkerConfig, listener: Arc<dyn WorkerListener>) -> Self {
        let inner = Inner {
            queue,
            config,
            listener,
            running: Mutex::new(HashMap::new()),
            separators: Mutex::new(HashMap::new()),
            opening: Mutex::new(HashMap::new()),
            opened: std::sync::atomic::AtomicUsize::new(0),
            wake: Condvar::new(),
            wake_flag: Mutex::new(false),
            stop: AtomicBool::new(false),
            suspending: AtomicBool::new(false),
            cancelled_before_suspend: Mutex::new(std::collections::HashSet::new()),
            slots: Mutex::new(Slots::default()),
            ready: Mutex::new(None),
            held: AtomicBool::new(false),
            runtime_failed: AtomicBool::new(false),
        };
        let w = Worker { inner: Arc::new(inner) };
        // Working folders of queued jobs hold their checkpoints (a job that
        // was running when the app was killed is queued again by recovery).
        // If the queue cannot be read, nothing is removed (better a leftover
        // folder than a queued job's checkpoint lost).
        match w.inner.queue.queue() {
            Ok(jobs) => {
                // A failed job's folder is kept when it holds the job's
                // separated song (only filing failed, see `Inner::separate`:
                // a retry files it) or its saved checkpoint (a retry
                // resumes; removing the job removes it).
                let (library, tag) = (w.library_dir(), w.inner.queue.work_tag().to_string());
                let keep: Vec<JobId> = jobs
                    .iter()
                    .filter(|j| match j.state {
                        JobState::Queued => true,
                        JobState::Failed { .. } => {
                            let work = song::partial_dir(&library, &tag, j.id);
                            song::song_of_job(&work, j).is_some() || has_checkpoint(&work)
                        }
                        _ => false,
                    })
                    .map(|j| j.id)
                    .collect();
                song::clean_partials(&library, &tag, &keep);
            }
            Err(e) => tracing::warn!("working folders left as they are: the queue cannot be read: {e}"),
        }
        w
    }

    /// The library folder in use (settings, else the configured default).
    pub fn library_dir(&self) -> PathBuf {
        self.inner.library_dir()
    }

    /// [`Worker::library_dir`] for filing a song: settings that cannot be
    /// read are an error, not the default folder (the song would be filed
    /// away from the folder chosen in Settings).
    ///
    /// # Errors
    /// The database's, reading the settings.
    pub fn library_dir_to_file(&self) -> Result<PathBuf, QueueError> {
        Ok(self.inner.chosen_library()?.unwrap_or_else(|| self.inner.config.default_library.clone()))
    }

    /// Start no job until `ready` says yes once: queued jobs wait (asked
    /// again at every claim, at least every 2 s while idle) instead of
    /// each failing at once. Once it said yes it is not asked again (a
    /// model removed later fails its jobs saying so, rather than holding
    /// them unseen). For the app, whose songs opened from a file manager
    /// before its first-run setup (the model, ONNX Runtime) must wait for
    /// it; `ready` must be cheap (file checks, no hashing).
    pub fn hold_until(&self, ready: impl Fn() -> bool + Send + Sync + 'static) {
        *self.inner.ready.lock().unwrap_or_else(|p| p.into_inner()) = Some(Arc::new(ready));
        self.notify();
    }

    /// Run up to `threads` jobs at the same time (1 to [`MAX_THREADS`]).
    /// Can be called again to change the number; threads above it exit when
    /// idle, missing ones are started.
    pub fn start(&self, threads: usize) {
        let threads = threads.clamp(1, MAX_THREADS);
        {
            let mut slots = self.inner.slots.lock().unwrap_or_else(|p| p.into_inner());
            slots.wanted = threads;
            if slots.alive.len() < threads {
                slots.alive.resize(threads, false);
            }
            for index in 0..threads {
                if slots.alive[index] {
                    continue;
                }
                let inner = self.inner.clone();
                let spawned = std::thread::Builder::new()
                    .name(format!("stemroom-worker-{index}"))
                    .spawn(move || Inner::run_loop(inner, index));
                match spawned {
                    Ok(_) => slots.alive[index] = true,
                    Err(e) => tracing::error!("cannot start a worker thread: {e}"),
                }
            }
        }
        self.notify();
    }

    /// How many worker threads are alive.
    pub fn threads(&self) -> usize {
        self.inner.slots.lock().unwrap_or_else(|p| p.into_inner()).alive.iter().filter(|a| **a).count()
    }

    /// Tell idle threads to look at the queue again (after enqueue or retry).
    pub fn notify(&self) {
        *self.inner.wake_flag.lock().unwrap_or_else(|p| p.into_inner()) = true;
        self.inner.wake.notify_all();
    }

    /// Cancel a job: a queued one at once, a running one at its next check
    /// (within one segment). Returns the job as it is now.
    ///
    /// # Errors
    /// [`QueueError::NotFound`]; [`QueueError::WrongState`] for finished jobs.
    pub fn cancel(&self, id: JobId) -> Result<Job, QueueError> {
        // Workers claim jobs while holding `running` and register the flag
        // before letting go, so a job is either still queued here or has a flag.
        let running = self.inner.running.lock().unwrap_or_else(|p| p.into_inner());
        // (A flag whose run has recorded its end, and whose job was queued
        // again before the run let go of the flag, is not this job's: it is
        // cancelled as a queued one.)
        let flag = running.get(&id).filter(|_| self.inner.queue.stored_status(id).map_or(true, |s| s == "running"));
        if let Some(flag) = flag {
            flag.store(true, Ordering::SeqCst);
            // Kept in the database too: a crash before the run stops
            // leaves the job cancelled, not queued again.
            if let Err(e) = self.inner.queue.note_cancel(id) {
                tracing::warn!("job {id}: the cancel is not recorded (a crash now would queue it again): {e}");
            }
            // Asked during a graceful stop (which sets every flag to put
            // its job back): this one still ends cancelled, not queued.
            if self.inner.suspending.load(Ordering::SeqCst) {
                self.inner.cancelled_before_suspend.lock().unwrap_or_else(|p| p.into_inner()).insert(id);
            }
            drop(running);
            return self.inner.queue.get(id);
        }
        let job = self.inner.queue.cancel_queued(id)?;
        self.inner.drop_work(id);
        drop(running);
        // A running job tells of its own end when it stops; a queued one
        // ends here.
        self.inner.listener.job_changed(&job);
        Ok(job)
    }

    /// Queue failed or cancelled job `id` again (see [`Queue::retry`]),
    /// tell the listener and wake an idle thread.
    ///
    /// # Errors
    /// As [`Queue::retry`].
    pub fn retry(&self, id: JobId) -> Result<Job, QueueError> {
        let job = self.inner.queue.retry(id)?;
        self.inner.listener.job_changed(&job);
        self.notify();
        Ok(job)
    }

    /// Remove a job that is not running from the queue or the library (see
    /// [`Queue::remove`]), with the working folder an interrupted run of it
    /// left (its checkpoint), and tell the listener
    /// ([`WorkerListener::job_removed`]); a song's own files are the
    /// caller's business.
    ///
    /// # Errors
    /// As [`Queue::remove`].
    pub fn remove(&self, id: JobId) -> Result<Job, QueueError> {
        let job = self.inner.queue.remove(id)?;
        self.inner.drop_work(id);
        self.inner.listener.job_removed(&job);
        Ok(job)
    }

    /// Stop taking jobs and put the running ones back in the queue, each
    /// stopping within one segment and keeping its checkpoint (a server's
    /// graceful shutdown: nothing is lost, the next start resumes them).
    /// Returns at once; [`Worker::running`] is empty once they have stopped.
    /// A job whose cancel was asked before and not reached yet still ends
    /// cancelled.
    pub fn suspend(&self) {
        self.inner.begin_suspending();
        self.shutdown();
    }

    /// Run `f` with the ids of the jobs running now while no job can start
    /// (claims wait for it): for a change that running jobs must not see
    /// half done, such as moving the library folder (a job started during
    /// it would write into the old folder, or have its working folder moved
    /// under it). Keep `f` short: the workers wait.
    pub fn while_no_job_starts<R>(&self, f: impl FnOnce(&[JobId]) -> R) -> R {
        let running = self.inner.running.lock().unwrap_or_else(|p| p.into_inner());
        let ids: Vec<JobId> = running.keys().copied().collect();
        f(&ids)
    }

    /// Ids of the jobs running now.
    pub fn running(&self) -> Vec<JobId> {
        self.inner.running.lock().unwrap_or_else(|p| p.into_inner()).keys().copied().collect()
    }

    /// The checkpoint folder of running job `id`, whose separated stems can
    /// be played before it ends (`stemroom_engine::job::stream`:
    /// `stream.json` appears there once the job starts separating); `None`
    /// when the job is not running here.
    pub fn stream_dir(&self, id: JobId) -> Option<PathBuf> {
        self.running()
            .contains(&id)
            .then(|| song::partial_dir(&self.library_dir(), self.inner.queue.work_tag(), id).join(run::CHECKPOINT_DIR))
    }

    /// The process is about to end (the app quits): stop taking jobs, and
    /// in the queue put each running job back with its checkpoint (the next
    /// start resumes it, and [`Queue::recover`] does not count a crash), or
    /// mark it cancelled, its working folder removed, when a cancel was
    /// asked that it had not reached yet (it came back after a quit).
    /// Returns without waiting for the threads, which the exit ends.
    pub fn leave(&self) {
        self.inner.stop.store(true, Ordering::SeqCst);
        for (id, cancelled) in self.inner.begin_suspending() {
            let left = if cancelled {
                let done = self.inner.queue.finish(id, &JobState::Cancelled, None, &[]);
                self.inner.drop_work(id);
                done
            } else {
                self.inner.queue.requeue(id)
            };
            match left {
                Ok(_) | Err(QueueError::NotFound(_)) => {}
                Err(e) => tracing::error!("job {id} stays running at exit: {e}"),
            }
        }
        self.notify();
    }

    /// Stop taking jobs and cancel the running ones (they clean up and are
    /// marked cancelled). Returns without waiting for threads to exit.
    pub fn shutdown(&self) {
        self.inner.stop.store(true, Ordering::SeqCst);
        for flag in self.inner.running.lock().unwrap_or_else(|p| p.into_inner()).values() {
            flag.store(true, Ordering::SeqCst);
        }
        self.notify();
    }
}

impl Inner {
    /// Remove the working folder an interrupted run of job `id` left (its
    /// checkpoint), once the job will not run again.
    fn drop_work(&self, id: JobId) {
        let _ = std::fs::remove_dir_all(song::partial_dir(&self.library_dir(), self.queue.work_tag(), id));
    }

    fn library_dir(&self) -> PathBuf {
        self.library_setting().unwrap_or_else(|| self.config.default_library.clone())
    }

    /// Mark the worker suspending ([`Worker::suspend`], [`Worker::leave`]),
    /// having recorded first, under the lock claims and cancels take, the
    /// running jobs whose cancel was asked: a thread that looks in between
    /// still ends its job cancelled (see [`Inner::cancel_asked`]), not put
    /// back or filed. Returns the running jobs, each with whether its
    /// cancel was asked.
    fn begin_suspending(&self) -> Vec<(JobId, bool)> {
        let running = self.running.lock().unwrap_or_else(|p| p.into_inner());
        let mut asked = self.cancelled_before_suspend.lock().unwrap_or_else(|p| p.into_inner());
        let flags: Vec<(JobId, bool)> = running.iter().map(|(id, c)| (*id, c.load(Ordering::SeqCst))).collect();
        asked.extend(flags.iter().filter(|(_, c)| *c).map(|(id, _)| *id));
        self.suspending.store(true, Ordering::SeqCst);
        flags
    }

    /// The library folder chosen in Settings, if one was.
    fn library_setting(&self) -> Option<PathBuf> {
        self.chosen_library().ok().flatten()
    }

    /// The library folder chosen in Settings (`None`: none was chosen).
    ///
    /// # Errors
    /// The database's, reading the settings.
    fn chosen_library(&self) -> Result<Option<PathBuf>, QueueError> {
        // (Read on its own: unreadable settings read as defaults would
        // send the song to the default library.)
        Ok(self.queue.chosen_library_dir()?.map(PathBuf::from))
    }

    /// Whether job `id`, whose flag is `flag`, is to end cancelled: its
    /// cancel was asked ([`Worker::cancel`]). A graceful stop
    /// ([`Worker::suspend`]) sets every running job's flag too, so that it
    /// stops within a segment and goes back to the queue; but a job whose
    /// separation is complete by then is filed, not thrown away. A cancel
    /// asked before the stop still counts.
    fn cancel_asked(&self, id: JobId, flag: &AtomicBool) -> bool {
        flag.load(Ordering::SeqCst)
            && (!self.suspending.load(Ordering::SeqCst)
                || self.cancelled_before_suspend.lock().unwrap_or_else(|p| p.into_inner()).contains(&id))
    }

    fn run_loop(self: Arc<Self>, index: usize) {
        let _slot = SlotGuard(self.clone(), index);
        lower_thread_priority();
        loop {
            {
                let mut slots = self.slots.lock().unwrap_or_else(|p| p.into_inner());
                if self.stop.load(Ordering::SeqCst) || index >= slots.wanted {
                    // Decide and free the slot in one step (see `Slots`).
                    if let Some(s) = slots.alive.get_mut(index) {
                        *s = false;
                    }
                    return;
                }
            }
            match self.claim() {
                Ok(Some((job, flag))) => {
                    self.listener.job_changed(&job);
                    self.run_job(job, flag);
                    continue;
                }
                Ok(None) => self.release_idle_models(),
                Err(e) => tracing::error!("cannot read the queue: {e}"),
            }
            let mut flag = self.wake_flag.lock().unwrap_or_else(|p| p.into_inner());
            if !*flag {
                flag = self
                    .wake
                    .wait_timeout(flag, Duration::from_secs(2))
                    .map(|(g, _)| g)
                    .unwrap_or_else(|p| p.into_inner().0);
            }
            *flag = false;
        }
    }

    /// Drop the loaded models when no job runs (see the module docs).
    fn release_idle_models(&self) {
        let running = self.running.lock().unwrap_or_else(|p| p.into_inner());
        if !running.is_empty() {
            return;
        }
        let released = std::mem::take(&mut *self.separators.lock().unwrap_or_else(|p| p.into_inner()));
        drop(running);
        if !released.is_empty() {
            tracing::info!("queue idle: released {} loaded model(s)", released.len());
        }
    }

    /// Claim the next job and register its cancellation flag atomically with
    /// respect to [`Worker::cancel`].
    fn claim(&self) -> Result<Option<(Job, Arc<AtomicBool>)>, QueueError> {
        // ONNX Runtime failed to load in this process, which never loads it
        // again: every job would fail the same way. They wait, queued, for
        // the next start (the failure is said once, and by the runtime's
        // status in the window and the server's /status).
        if let Some(why) = stemroom_engine::runtime::load_failure() {
            if !self.runtime_failed.swap(true, Ordering::SeqCst) {
                tracing::error!("queued jobs wait for the next start: {why}");
            }
            return Ok(None);
        }
        // (Asked before the lock cancels take: it looks at files.)
        let probe = self.ready.lock().unwrap_or_else(|p| p.into_inner()).clone();
        if let Some(ready) = probe {
            if !ready() {
                if !self.held.swap(true, Ordering::SeqCst) {
                    tracing::info!("queued jobs wait: the model or ONNX Runtime is not installed yet");
                }
                return Ok(None);
            }
            *self.ready.lock().unwrap_or_else(|p| p.into_inner()) = None;
            if self.held.swap(false, Ordering::SeqCst) {
                tracing::info!("what the jobs need is installed: queued jobs start");
            }
        }
        let mut running = self.running.lock().unwrap_or_else(|p| p.into_inner());
        let Some(job) = self.queue.claim_next()? else { return Ok(None) };
        if self.stop.load(Ordering::SeqCst) {
            // Stopping meanwhile (the app quits): the job goes back as it
            // was. A flag already set here would read as the user's cancel
            // to [`Worker::leave`], which marks such a job cancelled and
            // deletes its checkpoint. (Under the lock `leave` waits for.)
            self.queue.requeue(job.id)?;
            return Ok(None);
        }
        let flag = Arc::new(AtomicBool::new(false));
        running.insert(job.id, flag.clone());
        Ok(Some((job, flag)))
    }

    fn run_job(&self, job: Job, flag: Arc<AtomicBool>) {
        let _guard = RunningGuard(self, job.id, flag.clone());
        // A panic in the engine must not leave the job "running" forever nor
        // kill the worker thread: it becomes an internal failure.
        let result = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| self.separate(&job, &flag)))
            .unwrap_or_else(|panic| {
                let what = stemroom_engine::error::panic_message(&*panic).unwrap_or_default();
                tracing::error!("job {} panicked: {what}", job.id);
                Err(Error::Internal(format!("the separation stopped unexpectedly ({what}); please report this")))
            });
        // Under the lock `Worker::cancel` takes: a cancel comes before the
        // job is put back (and counts), or finds it queued (and cancels it
        // there), never in between.
        let requeued = {
            let mut running = self.running.lock().unwrap_or_else(|p| p.into_inner());
            let asked = self.cancelled_before_suspend.lock().unwrap_or_else(|p| p.into_inner()).remove(&job.id);
            let suspended = matches!(result, Err(Error::Cancelled)) && self.suspending.load(Ordering::SeqCst) && !asked;
            // Not the job's fault, and the same for every job until the
            // next start: back in the queue, not failed (see `claim`).
            let no_runtime = matches!(&result, Err(e) if runtime_failed_to_load(e))
                && (!flag.load(Ordering::SeqCst) || (self.suspending.load(Ordering::SeqCst) && !asked));
            if suspended || no_runtime {
                let requeued = self.queue.requeue(job.id);
                if running.get(&job.id).is_some_and(|f| Arc::ptr_eq(f, &flag)) {
                    running.remove(&job.id);
                }
                Some(requeued)
            } else {
                None
            }
        };
        if let Some(requeued) = requeued {
            match requeued {
                Ok(job) => self.listener.job_changed(&job),
                Err(QueueError::NotFound(_)) => {}
                Err(e) => tracing::error!("cannot put job {} back in the queue: {e}", job.id),
            }
            return;
        }
        if let Err(e) = &result {
            // A failure for want of room keeps no checkpoint: it would hold
            // the room the next jobs need (hundreds of MB for a song). Not
            // a song that could not be filed: its stems are the work.
            if !matches!(e, Error::NotFiled { .. }) && out_of_room(e) {
                self.drop_work(job.id);
            }
        }
        let state = match &result {
            Ok(_) => JobState::Done,
            Err(Error::Cancelled) => JobState::Cancelled,
            Err(e) => JobState::Failed { code: e.code(), message: plain_message(e) },
        };
        let (dir, stems) = match &result {
            Ok((dir, stems)) => (Some(dir.as_str()), stems.as_slice()),
            Err(_) => (None, &[][..]),
        };
        // The database may be busy (another process writing) or its disk
        // full: try again until it takes the end, so the job does not stay
        // "running" with its stems already in the library; at most every
        // 5 s, and only until the worker stops (the next start then finds
        // the filed song, see `song::find_published`).
        let mut finished = self.queue.finish(job.id, &state, dir, stems);
        let mut attempt: u32 = 0;
        while let Err(QueueError::Sql(e)) = &finished {
            attempt += 1;
            if attempt == 4 {
                tracing::error!("cannot record the end of job {}: {e}; trying again every 5 s", job.id);
                // The job would otherwise sit at its last progress with no
                // word of why (the window and the HTTP service show this).
                let outcome = match &state {
                    JobState::Done => "The song is separated",
                    JobState::Cancelled => "The job is cancelled",
                    _ => "The job failed",
                };
                self.listener.progress(&JobProgress {
                    notice: Some(format!("{outcome}, but the queue cannot record it ({e}). Trying again every 5 s.")),
                    ..JobProgress::compute(job.id, &JobState::Encoding, 1.0, None)
                });
            }
            if attempt >= 4 && self.stop.load(Ordering::SeqCst) {
                break;
            }
            std::thread::sleep(Duration::from_millis(200 * u64::from(attempt)).min(Duration::from_secs(5)));
            finished = self.queue.finish(job.id, &state, dir, stems);
        }
        match finished {
            Ok(job) => self.listener.job_changed(&job),
            // Removed while running: nothing to report.
            Err(QueueError::NotFound(_)) => {}
            Err(e) => tracing::error!("cannot record the end of job {}: {e}", job.id),
        }
    }
}

/// Whether `e` is ONNX Runtime failing to load in this process, which
/// never tries again ([`stemroom_engine::runtime::load_failure`]): not the
/// job's fault, and every job would fail the same way until the process
/// starts again.
pub fn runtime_failed_to_load(e: &Error) -> bool {
    matches!(e, Error::Engine(stemroom_engine::Error::Runtime(stemroom_engine::runtime::RuntimeError::Load { .. })))
        && stemroom_engine::runtime::load_failure().is_some()
}

/// The message a person sees for `e`: what went wrong and what to do,
/// without Rust type names or stack traces.
pub fn plain_message(e: &Error) -> String {
    use stemroom_engine::runtime::RuntimeError;
    if let Error::Engine(stemroom_engine::Error::Runtime(RuntimeError::DeviceUnavailable { reason, .. })) = e {
        // ONNX Runtime itself is fine: the GPU is not (the reason says why
        // and what to do).
        return format!("The GPU cannot be used: {reason} Choose Automatic or CPU in Settings to separate on the CPU.");
    }
    match e.code() {
        ErrorCode::MissingModel => format!(
            "The separation model is not installed or is damaged. Fetch it from Settings, or run `stemroom models --fetch`. ({e})"
        ),
        ErrorCode::MissingRuntime => {
            format!("ONNX Runtime could not be loaded. Install it from the banner at the top, or run `stemroom runtime fetch`. ({e})")
        }
        ErrorCode::BadInput => format!("This file could not be read as audio: {e}"),
        ErrorCode::Output if matches!(e, Error::NotFiled { .. }) => {
            let mut m = e.to_string();
            m[..1].make_ascii_uppercase();
            format!("{m}.")
        }
        ErrorCode::Output => format!("The stems could not be written: {e}"),
        _ => e.to_string(),
    }
}

/// Title for a file: its name without the extension.
pub fn title_for(path: &Path) -> String {
    path.file_stem()
        .map(|s| s.to_string_lossy().into_owned())
        .filter(|s| !s.is_empty())
        .unwrap_or_else(|| "Untitled".into())
}

#[cfg(test)]
mod tests {
    use std::time::Instant;

    use super::*;

    #[test]
    fn progress_percent_and_eta() {
        let p = JobProgress::compute(1, &JobState::Decoding, 0.5, Some(4.0));
        assert!((p.percent - 2.5).abs() < 1e-9 && p.eta_seconds.is_none());
        let p = JobProgress::compute(1, &JobState::Separating { segment: 3, total: 10 }, 1.0, Some(4.0));
        assert!((p.percent - (5.0 + 90.0 * 0.3)).abs() < 1e-9);
        assert_eq!(p.eta_seconds, Some(28.0));
        let p = JobProgress::compute(1, &JobState::Separating { segment: 10, total: 10 }, 1.0, None);
        assert!((p.percent - 95.0).abs() < 1e-9 && p.eta_seconds.is_none());
        assert_eq!(JobProgress::compute(1, &JobState::Done, 0.0, None).percent, 100.0);
    }

    struct Nobody;
    impl WorkerListener for Nobody {
        fn job_changed(&self, _: &Job) {}
        fn progress(&self, _: &JobProgress) {}
    }

    fn wait_threads(w: &Worker, n: usize) {
        let deadline = Instant::now() + Duration::from_secs(10);
        while w.threads() != n {
            assert!(Instant::now() < deadline, "{} threads alive, want {n}", w.threads());
            w.notify();
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    #[test]
    fn thread_count_follows_the_setting() {
        let dir = tempfile::tempdir().unwrap();
        let w = fresh_worker(dir.path());
        w.start(3);
        wait_threads(&w, 3);
        w.start(1);
        wait_threads(&w, 1);
        w.start(2);
        wait_threads(&w, 2);
        w.start(100);
        wait_threads(&w, MAX_THREADS);
        w.start(0);
        wait_threads(&w, 1);
        w.shutdown();
        wait_threads(&w, 0);
    }

    /// Nice value of thread `tid` of this process (field 19 of its stat).
    #[cfg(target_os = "linux")]
    fn nice_of(tid: &str) -> i32 {
        let stat = std::fs::read_to_string(format!("/proc/self/task/{tid}/stat")).unwrap();
        let after_name = &stat[stat.rfind(')').unwrap() + 2..];
        after_name.split(' ').nth(16).unwrap().parse().unwrap()
    }

    #[cfg(target_os = "linux")]
    #[test]
    fn worker_threads_and_the_threads_they_start_yield_to_playback() {
        let dir = tempfile::tempdir().unwrap();
        let w = fresh_worker(dir.path());
        w.start(2);
        wait_threads(&w, 2);
        let deadline = Instant::now() + Duration::from_secs(10);
        let workers = loop {
            let mut nice = Vec::new();
            for task in std::fs::read_dir("/proc/self/task").unwrap().flatten() {
                let tid = task.file_name().to_string_lossy().into_owned();
                let comm = std::fs::read_to_string(task.path().join("comm")).unwrap_or_default();
                if comm.starts_with("stemroom-worke") {
                    nice.push(nice_of(&tid));
                }
            }
            if nice.len() == 2 && nice.iter().all(|n| *n >= WORKER_NICE) || Instant::now() > deadline {
                break nice;
            }
            std::thread::sleep(Duration::from_millis(10));
        };
        assert!(
            workers.len() == 2 && workers.iter().all(|n| *n >= WORKER_NICE),
            "both worker threads run at nice {WORKER_NICE} or lower priority: {workers:?}"
        );
        // What a lowered thread starts (ONNX Runtime's pool, the engine's
        // threads) inherits the value; the thread that started the worker
        // keeps its own.
        // SAFETY: gettid has no preconditions.
        let tid = || unsafe { libc::gettid() }.to_string();
        let before = nice_of(&tid());
        let child = std::thread::spawn(move || {
            lower_thread_priority();
            std::thread::spawn(move || nice_of(&tid())).join().unwrap()
        });
        assert!(child.join().unwrap() >= WORKER_NICE);
        assert_eq!(nice_of(&tid()), before);
        w.shutdown();
        wait_threads(&w, 0);
    }

    /// What a listener heard: `(job, state)` changes and removals.
    #[derive(Default)]
    struct Heard(Mutex<Vec<(JobId, String)>>);
    impl WorkerListener for Heard {
        fn job_changed(&self, job: &Job) {
            self.0.lock().unwrap().push((job.id, format!("{:?}", job.state)));
        }
        fn progress(&self, _: &JobProgress) {}
        fn job_removed(&self, job: &Job) {
            self.0.lock().unwrap().push((job.id, "removed".into()));
        }
    }

    /// A running job whose cancel was asked, and whose process then died
    /// before the run stopped (a crash, `kill -9`, out of memory), is
    /// cancelled at the next start, its working folder gone: it was queued
    /// again and resumed. A job that was only running is queued again,
    /// and a retry's claim forgets the old cancel.
    #[test]
    fn a_cancel_asked_before_a_crash_holds_at_the_next_start() {
        let dir = tempfile::tempdir().unwrap();
        let data = dir.path().join("data");
        let owner = crate::lock::InstanceLock::acquire(&data).unwrap().expect("the lock");
        let q = Arc::new(Queue::open(&data.join("stemroom.sqlite")).unwrap());
        let options = crate::queue::Settings::default().job_options();
        let source = |n: &str| crate::queue::JobSource::File { path: format!("/m/{n}.wav") };
        let a = q.enqueue(&source("a"), "a", &options).unwrap();
        let b = q.enqueue(&source("b"), "b", &options).unwrap();
        let config = WorkerConfig { default_library: dir.path().join("lib"), ..Default::default() };
        let w = Worker::new(q.clone(), config.clone(), Arc::new(Nobody));
        // Both claimed (running), a's cancel asked; the process dies.
        let (claimed_a, _) = w.inner.claim().unwrap().expect("a");
        let (claimed_b, _) = w.inner.claim().unwrap().expect("b");
        assert_eq!((claimed_a.id, claimed_b.id), (a.id, b.id));
        let work = song::partial_dir(&config.default_library, q.work_tag(), a.id);
        std::fs::create_dir_all(work.join("checkpoint")).unwrap();
        w.cancel(a.id).unwrap();
        drop(w);
        assert_eq!(q.recover(&owner).unwrap(), 1, "only b is queued again");
        assert_eq!(q.get(a.id).unwrap().state, JobState::Cancelled);
        assert_eq!(q.get(b.id).unwrap().state, JobState::Queued);
        let w = Worker::new(q.clone(), config, Arc::new(Nobody));
        assert!(!work.exists(), "the cancelled job's working folder went");
        // A cancel asked too late to stop a run that then ended (failed,
        // here): its retry's claim forgets it, so a crash of the new run
        // queues the job again.
        let (claimed, _) = w.inner.claim().unwrap().expect("b");
        assert_eq!(claimed.id, b.id);
        w.cancel(b.id).unwrap();
        let failed = JobState::Failed { code: ErrorCode::Internal, message: "failed".into() };
        q.finish(b.id, &failed, None, &[]).unwrap();
        w.inner.running.lock().unwrap().remove(&b.id);
        w.retry(b.id).unwrap();
        let (again, _) = w.inner.claim().unwrap().expect("b again");
        assert_eq!(again.id, b.id);
        drop(w);
        assert_eq!(q.recover(&owner).unwrap(), 1);
        assert_eq!(q.get(b.id).unwrap().state, JobState::Queued);
    }

    #[test]
    fn cancelling_retrying_or_removing_a_queued_job_is_told_to_the_listener() {
        let dir = tempfile::tempdir().unwrap();
        let q = Arc::new(Queue::open(&dir.path().join("q.sqlite")).unwrap());
        let options = crate::queue::Settings::default().job_options();
        let a = q.enqueue(&crate::queue::JobSource::File { path: "/m/a.wav".into() }, "a", &options).unwrap();
        let heard = Arc::new(Heard::default());
        let config = WorkerConfig { default_library: dir.path().join("lib"), ..Default::default() };
        let w = Worker::new(q.clone(), config, heard.clone());
        w.cancel(a.id).unwrap();
        w.retry(a.id).unwrap();
        w.remove(a.id).unwrap();
        // Refused ones tell nothing.
        assert!(w.cancel(a.id).is_err() && w.retry(a.id).is_err() && w.remove(a.id).is_err());
        let heard = heard.0.lock().unwrap().clone();
        let want = [(a.id, "Cancelled"), (a.id, "Queued"), (a.id, "removed")];
        assert_eq!(heard, want.map(|(id, s)| (id, s.to_string())));
    }

    /// A cancel asked while a graceful stop waits for its running job
    /// ends that job cancelled: the stop puts the others back, not it.
    #[test]
    fn a_cancel_asked_during_a_graceful_stop_still_cancels() {
        let dir = tempfile::tempdir().unwrap();
        let w = fresh_worker(dir.path());
        let (a, b): (JobId, JobId) = (7, 8);
        let flags = [Arc::new(AtomicBool::new(false)), Arc::new(AtomicBool::new(false))];
        {
            let mut running = w.inner.running.lock().unwrap();
            running.insert(a, flags[0].clone());
            running.insert(b, flags[1].clone());
        }
        w.inner.begin_suspending();
        // (What the stop does to every running job's flag.)
        flags.iter().for_each(|f| f.store(true, Ordering::SeqCst));
        let _ = w.cancel(a);
        assert!(w.inner.cancel_asked(a, &flags[0]), "cancelled");
        assert!(!w.inner.cancel_asked(b, &flags[1]), "put back");
    }

    /// A job retried at once after its run recorded its end, before the
    /// run let go of its cancel flag, is cancelled as a queued job (the
    /// old flag would have swallowed the cancel, and the job run).
    #[test]
    fn a_cancel_right_after_a_retry_is_not_taken_by_the_last_runs_flag() {
        let dir = tempfile::tempdir().unwrap();
        let w = fresh_worker(dir.path());
        let q = w.inner.queue.clone();
        let options = crate::queue::Settings::default().job_options();
        let a = q.enqueue(&crate::queue::JobSource::File { path: "/m/a.wav".into() }, "a", &options).unwrap();
        let claimed = q.claim_next().unwrap().unwrap();
        assert_eq!(claimed.id, a.id);
        w.inner.running.lock().unwrap().insert(a.id, Arc::new(AtomicBool::new(false)));
        let failed = JobState::Failed { code: stemroom_engine::ErrorCode::BadInput, message: "x".into() };
        q.finish(a.id, &failed, None, &[]).unwrap();
        w.retry(a.id).unwrap();
        assert_eq!(w.cancel(a.id).unwrap().state, JobState::Cancelled);
        assert_eq!(q.get(a.id).unwrap().state, JobState::Cancelled);
    }

    #[test]
    fn cancelling_or_removing_a_queued_job_removes_its_interrupted_runs_folder() {
        let dir = tempfile::tempdir().unwrap();
        let q = Arc::new(Queue::open(&dir.path().join("q.sqlite")).unwrap());
        let library = dir.path().join("lib");
        let options = crate::queue::Settings::default().job_options();
        let a = q.enqueue(&crate::queue::JobSource::File { path: "/m/a.wav".into() }, "a", &options).unwrap();
        let b = q.enqueue(&crate::queue::JobSource::File { path: "/m/b.wav".into() }, "b", &options).unwrap();
        let tag = q.work_tag().to_string();
        for id in [a.id, b.id] {
            let ckpt = song::partial_dir(&library, &tag, id).join(".checkpoint");
            std::fs::create_dir_all(&ckpt).unwrap();
            std::fs::write(ckpt.join("stems.f32"), [0u8; 64]).unwrap();
        }
        // A new worker keeps queued jobs' folders (their checkpoints).
        let w =
            Worker::new(q, WorkerConfig { default_library: library.clone(), ..Default::default() }, Arc::new(Nobody));
        assert!(song::partial_dir(&library, &tag, a.id).exists() && song::partial_dir(&library, &tag, b.id).exists());
        assert_eq!(w.cancel(a.id).unwrap().state, JobState::Cancelled);
        assert!(!song::partial_dir(&library, &tag, a.id).exists(), "cancelled: its checkpoint goes");
        w.remove(b.id).unwrap();
        assert!(!song::partial_dir(&library, &tag, b.id).exists(), "removed: its checkpoint goes");
    }

    #[test]
    fn a_job_claimed_while_the_app_quits_goes_back_with_its_checkpoint() {
        let dir = tempfile::tempdir().unwrap();
        let q = Arc::new(Queue::open(&dir.path().join("q.sqlite")).unwrap());
        let library = dir.path().join("lib");
        let options = crate::queue::Settings::default().job_options();
        let a = q.enqueue(&crate::queue::JobSource::File { path: "/m/a.wav".into() }, "a", &options).unwrap();
        let ckpt = song::partial_dir(&library, q.work_tag(), a.id).join(".checkpoint");
        std::fs::create_dir_all(&ckpt).unwrap();
        let w = Worker::new(
            q.clone(),
            WorkerConfig { default_library: library.clone(), ..Default::default() },
            Arc::new(Nobody),
        );
        // The quit came while a worker thread was claiming: its claim (no
        // thread runs here; called as the thread would) hands the job back.
        w.inner.stop.store(true, Ordering::SeqCst);
        assert!(w.inner.claim().unwrap().is_none());
        w.leave();
        assert_eq!(q.get(a.id).unwrap().state, JobState::Queued);
        assert!(ckpt.exists(), "its checkpoint stays for the next start");
    }

    #[test]
    fn a_song_separated_before_a_stop_and_not_filed_is_filed_without_separating_again() {
        let dir = tempfile::tempdir().unwrap();
        let q = Arc::new(Queue::open(&dir.path().join("q.sqlite")).unwrap());
        let library = dir.path().join("lib");
        let options = crate::queue::Settings::default().job_options();
        q.enqueue(&crate::queue::JobSource::File { path: "/m/gone.wav".into() }, "Song", &options).unwrap();
        let w = Worker::new(
            q.clone(),
            WorkerConfig { default_library: library.clone(), ..Default::default() },
            Arc::new(Nobody),
        );
        let job = q.claim_next().unwrap().unwrap();
        // What the stopped run left: its stems and stemroom.json (no tempo
        // or key yet), the checkpoint already dropped.
        let work = song::partial_dir(&library, q.work_tag(), job.id);
        std::fs::create_dir_all(&work).unwrap();
        let stems: Vec<crate::queue::StemFile> = ["drums", "bass"]
            .iter()
            .map(|s| {
                std::fs::write(work.join(format!("{s}.wav")), b"stem").unwrap();
                crate::queue::StemFile { stem: s.to_string(), path: format!("{s}.wav") }
            })
            .collect();
        song::SongMetadata::new(&job, stems, 12.5, Some("cpu".into()), Some(60.0)).write(&work).unwrap();
        // Its input is gone, and no model is there: only filing can succeed.
        let (dest, filed) = w.inner.separate(&job, &Arc::new(AtomicBool::new(false))).unwrap();
        assert_eq!(Path::new(&dest), library.join("Song"));
        assert_eq!(filed.len(), 2);
        assert!(filed.iter().all(|s| Path::new(&s.path).is_file()), "{filed:?}");
        assert!(!work.exists());
        // Another job's leftovers are not taken for its own.
        let mut other = job.clone();
        other.created_at += 1.0;
        assert!(song::song_of_job(&library.join("Song"), &other).is_none());
        // Stems made with other options than the job has now (retried after
        // its filing failed and Settings changed) are filed as made (not
        // separated again: here its input is gone), and the job takes
        // their options.
        q.enqueue(&crate::queue::JobSource::File { path: "/m/gone2.wav".into() }, "Other", &options).unwrap();
        let job = q.claim_next().unwrap().unwrap();
        left_separated(&library, &q, &job);
        let mut retried = job.clone();
        retried.options.shifts += 1;
        q.set_options(job.id, &retried.options).unwrap();
        let (dest, _) = w.inner.separate(&retried, &Arc::new(AtomicBool::new(false))).unwrap();
        assert_eq!(Path::new(&dest), library.join("Other"));
        assert_eq!(q.get(job.id).unwrap().options, options);
    }

    /// What a run of `job` that separated and did not file leaves: its
    /// working folder with a vocals stem and `stemroom.json`.
    fn left_separated(library: &Path, q: &Queue, job: &Job) -> PathBuf {
        let work = song::partial_dir(library, q.work_tag(), job.id);
        std::fs::create_dir_all(&work).unwrap();
        std::fs::write(work.join("vocals.wav"), b"stem").unwrap();
        let stems = vec![crate::queue::StemFile { stem: "vocals".into(), path: "vocals.wav".into() }];
        song::SongMetadata::new(job, stems, 12.5, Some("cpu".into()), Some(60.0)).write(&work).unwrap();
        work
    }

    #[test]
    fn a_song_that_cannot_be_filed_keeps_its_stems_for_a_retry() {
        let dir = tempfile::tempdir().unwrap();
        let q = Arc::new(Queue::open(&dir.path().join("q.sqlite")).unwrap());
        let library = dir.path().join("lib");
        let config = WorkerConfig { default_library: library.clone(), ..Default::default() };
        let options = crate::queue::Settings::default().job_options();
        q.enqueue(&crate::queue::JobSource::File { path: "/m/gone.wav".into() }, "Song", &options).unwrap();
        let w = Worker::new(q.clone(), config.clone(), Arc::new(Nobody));
        let job = q.claim_next().unwrap().unwrap();
        let work = left_separated(&library, &q, &job);
        // Every folder name the title may take is taken: filing fails for
        // real (as a full disk would make it fail).
        std::fs::write(library.join("Song"), b"").unwrap();
        for n in 2..10_000 {
            std::fs::write(library.join(format!("Song ({n})")), b"").unwrap();
        }
        let e = w.inner.separate(&job, &Arc::new(AtomicBool::new(false))).unwrap_err();
        assert!(matches!(e, Error::NotFiled { .. }), "{e}");
        let message = plain_message(&e);
        assert!(
            message.starts_with("The song could not be filed in ") && message.ends_with("then retry."),
            "{message}"
        );
        assert!(work.join("vocals.wav").is_file(), "the stems stay");
        let failed = JobState::Failed { code: e.code(), message: e.to_string() };
        q.finish(job.id, &failed, None, &[]).unwrap();
        // A restart keeps a failed job's folder.
        drop(w);
        let w = Worker::new(q.clone(), config, Arc::new(Nobody));
        assert!(work.join("vocals.wav").is_file(), "kept across a restart");
        // Once a name is free, the retry files the stems without separating
        // (the input is gone and no model is there), though Settings
        // changed meanwhile: the job takes the options they were made with.
        std::fs::remove_file(library.join("Song")).unwrap();
        let settings = q.settings().unwrap();
        let best = stemroom_engine::units::Preset::Best;
        assert_ne!(settings.preset, Some(best));
        q.save_settings(&settings.with_preset(Some(best))).unwrap();
        let retried = q.retry(job.id).unwrap();
        assert_ne!(retried.options, options);
        let job = q.claim_next().unwrap().unwrap();
        let (dest, filed) = w.inner.separate(&job, &Arc::new(AtomicBool::new(false))).unwrap();
        assert_eq!(Path::new(&dest), library.join("Song"));
        assert_eq!(q.get(job.id).unwrap().options, options);
        assert!(filed.len() == 1 && Path::new(&filed[0].path).is_file(), "{filed:?}");
        assert!(!work.exists());
        // A job titled `title` whose separation is done (its stems and
        // stemroom.json in its working folder), run with its cancel asked.
        let separated_then_cancelled = |path: &str, title: &str| {
            let job = q.enqueue(&crate::queue::JobSource::File { path: path.into() }, title, &options).unwrap();
            let job = q.claim_next().unwrap().filter(|j| j.id == job.id).unwrap();
            let work = song::partial_dir(&library, q.work_tag(), job.id);
            std::fs::create_dir_all(&work).unwrap();
            std::fs::write(work.join("vocals.wav"), b"stem").unwrap();
            let stems = vec![crate::queue::StemFile { stem: "vocals".into(), path: "vocals.wav".into() }];
            song::SongMetadata::new(&job, stems, 1.0, None, None).write(&work).unwrap();
            assert!(matches!(w.inner.separate(&job, &Arc::new(AtomicBool::new(true))), Err(Error::Cancelled)));
            work
        };
        // A cancel asked while filing fails keeps nothing. ("Song" is the
        // song filed above; the other names are still taken.)
        assert!(!separated_then_cancelled("/m/x.wav", "Song").exists());
        // Filed, then found cancelled: the song goes back to its working
        // folder (one rename, so a crash leaves no half song in the
        // library) and is deleted there.
        assert!(!separated_then_cancelled("/m/y.wav", "Fresh").exists() && !library.join("Fresh").exists());
    }

    #[test]
    fn no_job_starts_while_a_change_runs() {
        let dir = tempfile::tempdir().unwrap();
        let w = Arc::new(fresh_worker(dir.path()));
        let options = crate::queue::Settings::default().job_options();
        let job =
            w.inner.queue.enqueue(&crate::queue::JobSource::File { path: "/m/a.wav".into() }, "A", &options).unwrap();
        let (tx, rx) = std::sync::mpsc::channel();
        w.while_no_job_starts(|running| {
            assert!(running.is_empty());
            let other = w.clone();
            std::thread::spawn(move || tx.send(other.inner.claim().unwrap().map(|(j, _)| j.id)).unwrap());
            assert!(rx.recv_timeout(Duration::from_millis(300)).is_err(), "the claim waits");
            assert_eq!(w.inner.queue.get(job.id).unwrap().state, JobState::Queued);
        });
        assert_eq!(rx.recv_timeout(Duration::from_secs(10)).unwrap(), Some(job.id), "then it goes on");
        assert_eq!(w.while_no_job_starts(<[JobId]>::to_vec), vec![job.id]);
    }

    /// A working folder with a saved checkpoint, a stem being written and
    /// the checkpoint's stems (what a run stopped mid-job leaves).
    fn stopped_work(work: &Path, saved: bool) {
        std::fs::create_dir_all(work.join(run::CHECKPOINT_DIR)).unwrap();
        std::fs::write(work.join(run::CHECKPOINT_DIR).join("stems.f32"), [0u8; 64]).unwrap();
        if saved {
            std::fs::write(work.join(run::CHECKPOINT_DIR).join("state.bin"), b"state").unwrap();
        }
        std::fs::write(work.join(".vocals.wav.part"), b"RIFF").unwrap();
    }

    /// A run that fails keeps its saved checkpoint (a retry resumes from
    /// it), as a suspended one does; a cancel keeps nothing, nor does a
    /// failure before any save.
    #[test]
    fn a_failed_run_keeps_only_its_checkpoint_and_a_cancelled_one_nothing() {
        let dir = tempfile::tempdir().unwrap();
        let work = dir.path().join("work");
        let w = fresh_worker(dir.path());
        let id: JobId = 3;
        // As a run ends: its flag, whether a stop began, whether the cancel
        // was asked before it (`Worker::cancel` during a stop).
        let ended_with = |cancel: bool, suspending: bool, cancel_first: bool| {
            let flag = AtomicBool::new(cancel);
            w.inner.suspending.store(suspending, Ordering::SeqCst);
            w.inner.cancelled_before_suspend.lock().unwrap().clear();
            if cancel_first {
                w.inner.cancelled_before_suspend.lock().unwrap().insert(id);
            }
            let asked = || w.inner.cancel_asked(id, &flag);
            drop(PartialGuard { dir: Some(work.clone()), cancelled: &asked });
        };
        let ended = |cancel: bool, suspending: bool| ended_with(cancel, suspending, false);
        let left = || {
            let mut names: Vec<String> = walk(&work).into_iter().collect();
            names.sort();
            names
        };
        let kept = [".checkpoint", ".checkpoint/state.bin", ".checkpoint/stems.f32"].map(String::from);

        stopped_work(&work, true);
        ended(false, false);
        assert_eq!(left(), kept, "a failure keeps the checkpoint only");
        stopped_work(&work, true);
        ended(true, true);
        assert_eq!(left(), kept, "a suspension keeps the checkpoint only");
        stopped_work(&work, true);
        ended(true, false);
        assert!(!work.exists(), "a cancel keeps nothing");
        stopped_work(&work, true);
        ended_with(true, true, true);
        assert!(!work.exists(), "nor does a cancel asked before a graceful stop");
        stopped_work(&work, false);
        ended(false, false);
        assert!(!work.exists(), "no saved state: nothing to resume from");
    }

    #[test]
    fn a_full_disk_is_seen_under_the_errors_that_carry_it() {
        let full = || std::io::Error::from_raw_os_error(libc::ENOSPC);
        let engine = stemroom_engine::Error::Output { path: "/x".into(), source: full() };
        assert!(out_of_room(&Error::from(engine)));
        assert!(out_of_room(&Error::Output { path: "/x".into(), source: full() }));
        let denied = std::io::Error::from_raw_os_error(libc::EACCES);
        assert!(!out_of_room(&Error::Output { path: "/x".into(), source: denied }));
        assert!(!out_of_room(&Error::Internal("x".into())));
    }

    /// Paths under `dir`, relative, `/`-separated.
    fn walk(dir: &Path) -> Vec<String> {
        let mut out = Vec::new();
        for e in std::fs::read_dir(dir).into_iter().flatten().flatten() {
            let name = e.file_name().to_string_lossy().into_owned();
            if e.path().is_dir() {
                out.extend(walk(&e.path()).into_iter().map(|n| format!("{name}/{n}")));
            }
            out.push(name);
        }
        out
    }

    /// A failed job's checkpoint stays through a restart (its Retry
    /// resumes); a cancelled job's, or a failed one's without a saved
    /// state, goes.
    #[test]
    fn a_failed_jobs_checkpoint_stays_through_a_restart() {
        let dir = tempfile::tempdir().unwrap();
        let q = Arc::new(Queue::open(&dir.path().join("q.sqlite")).unwrap());
        let options = crate::queue::Settings::default().job_options();
        let library = dir.path().join("lib");
        let mut works = Vec::new();
        for (name, end, saved) in [
            ("failed", JobState::Failed { code: ErrorCode::Output, message: "disk full".into() }, true),
            ("unsaved", JobState::Failed { code: ErrorCode::Output, message: "disk full".into() }, false),
            ("cancelled", JobState::Cancelled, true),
        ] {
            let job =
                q.enqueue(&crate::queue::JobSource::File { path: format!("/m/{name}.wav") }, name, &options).unwrap();
            assert_eq!(q.claim_next().unwrap().unwrap().id, job.id);
            q.finish(job.id, &end, None, &[]).unwrap();
            let work = song::partial_dir(&library, q.work_tag(), job.id);
            stopped_work(&work, saved);
            works.push(work);
        }
        let _w = Worker::new(q, WorkerConfig { default_library: library, ..Default::default() }, Arc::new(Nobody));
        assert!(works[0].join(".checkpoint/state.bin").is_file(), "the failed job's checkpoint stays");
        assert!(!works[1].exists() && !works[2].exists(), "nothing to resume from, or cancelled");
    }

    /// Jobs wait while the probe says what they need is missing, and
    /// start once it is there.
    #[test]
    fn queued_jobs_wait_until_what_they_need_is_installed() {
        let dir = tempfile::tempdir().unwrap();
        let w = fresh_worker(dir.path());
        let installed = Arc::new(AtomicBool::new(false));
        let probe = installed.clone();
        w.hold_until(move || probe.load(Ordering::SeqCst));
        let q = w.inner.queue.clone();
        let options = crate::queue::Settings::default().job_options();
        let job = q.enqueue(&crate::queue::JobSource::File { path: "/m/missing.wav".into() }, "a", &options).unwrap();
        // (What a worker thread does at each turn; no thread here: other
        // tests count the worker threads of this process.)
        assert!(w.inner.claim().unwrap().is_none(), "held");
        assert_eq!(q.get(job.id).unwrap().state, JobState::Queued);
        installed.store(true, Ordering::SeqCst);
        let (claimed, _) = w.inner.claim().unwrap().expect("claimed once installed");
        assert_eq!(claimed.id, job.id);
        // Once installed, never held again (a model removed later fails
        // its jobs saying so).
        installed.store(false, Ordering::SeqCst);
        let next = q.enqueue(&crate::queue::JobSource::File { path: "/m/b.wav".into() }, "b", &options).unwrap();
        assert_eq!(w.inner.claim().unwrap().expect("not held").0.id, next.id);
    }

    /// A worker on an empty queue in `dir`, its library `dir/lib`.
    fn fresh_worker(dir: &Path) -> Worker {
        let q = Arc::new(Queue::open(&dir.join("q.sqlite")).unwrap());
        Worker::new(q, WorkerConfig { default_library: dir.join("lib"), ..Default::default() }, Arc::new(Nobody))
    }

    /// Two jobs that start together on one model open it once; a model a
    /// running job holds stays loaded when another is opened, one no job
    /// uses is let go first.
    #[test]
    fn jobs_starting_together_share_one_load_and_unused_models_go_first() {
        let dir = tempfile::tempdir().unwrap();
        let w = fresh_worker(dir.path());
        let cancel = AtomicBool::new(false);
        let inner = &w.inner;
        let (a, b) = std::thread::scope(|s| {
            let one = s.spawn(|| inner.separator("htdemucs", Device::Cpu, &cancel).expect("model"));
            let two = s.spawn(|| inner.separator("htdemucs", Device::Cpu, &cancel).expect("model"));
            (one.join().unwrap(), two.join().unwrap())
        });
        assert!(Arc::ptr_eq(&a, &b), "one model for both");
        assert_eq!(inner.opened.load(Ordering::SeqCst), 1, "opened once");
        // Held by a job (`c`): stays while another opens.
        let c = inner.separator("htdemucs", Device::Auto, &cancel).expect("model");
        assert_eq!(inner.opened.load(Ordering::SeqCst), 2);
        assert_eq!(inner.separators.lock().unwrap().len(), 2, "both held, both kept");
        if c.provider() == stemroom_engine::units::Provider::Cuda {
            // A GPU here: a CUDA job takes `c`, and nothing opens anew.
            let cuda = inner.separator("htdemucs", Device::Cuda, &cancel).expect("model");
            assert!(Arc::ptr_eq(&c, &cuda), "the GPU's model shared");
            return;
        }
        // The first is no job's now: let go before the next opens (which
        // fails on a machine without a GPU; the letting go came first).
        drop((a, b));
        let _ = inner.separator("htdemucs", Device::Cuda, &cancel);
        let loaded = inner.separators.lock().unwrap();
        assert!(!loaded.contains_key(&("htdemucs".to_string(), Device::Cpu)), "the unused model went");
        assert!(loaded.contains_key(&("htdemucs".to_string(), Device::Auto)), "the held one stayed");
        drop(loaded);
        drop(c);
    }

    /// A job on the CPU takes the model Automatic opened on the CPU (a
    /// machine without a GPU) instead of loading a second copy.
    #[test]
    fn a_cpu_job_takes_the_model_automatic_opened_on_the_cpu() {
        let dir = tempfile::tempdir().unwrap();
        let w = fresh_worker(dir.path());
        let cancel = AtomicBool::new(false);
        let auto = w.inner.separator("htdemucs", Device::Auto, &cancel).expect("model");
        let cpu = w.inner.separator("htdemucs", Device::Cpu, &cancel).expect("model");
        if auto.provider() == stemroom_engine::units::Provider::Cpu {
            assert!(Arc::ptr_eq(&auto, &cpu), "one model");
            assert_eq!(w.inner.opened.load(Ordering::SeqCst), 1, "opened once");
        } else {
            assert!(!Arc::ptr_eq(&auto, &cpu), "the GPU's model does not run a CPU job");
        }
    }

    #[test]
    fn a_graceful_stop_is_not_taken_for_a_cancel() {
        let dir = tempfile::tempdir().unwrap();
        let w = fresh_worker(dir.path());
        // Two running jobs (as a claim registers them); the second one's
        // cancel is asked.
        let (a, b) = (Arc::new(AtomicBool::new(false)), Arc::new(AtomicBool::new(false)));
        w.inner.running.lock().unwrap().insert(1, a.clone());
        w.inner.running.lock().unwrap().insert(2, b.clone());
        let _ = w.cancel(2);
        assert!(b.load(Ordering::SeqCst) && !a.load(Ordering::SeqCst));
        assert!(w.inner.cancel_asked(2, &b) && !w.inner.cancel_asked(1, &a));
        w.suspend();
        assert!(a.load(Ordering::SeqCst), "the stop reaches the running job (it stops within a segment)");
        assert!(!w.inner.cancel_asked(1, &a), "a job complete by then is filed, not thrown away");
        assert!(w.inner.cancel_asked(2, &b), "a cancel asked before the stop holds");
    }

    #[test]
    fn a_run_that_ends_removes_only_its_own_cancel_flag() {
        let dir = tempfile::tempdir().unwrap();
        let w = fresh_worker(dir.path());
        let (old, retry) = (Arc::new(AtomicBool::new(false)), Arc::new(AtomicBool::new(false)));
        let guard = RunningGuard(&w.inner, 7, old.clone());
        // The end was recorded; a retry of the job was claimed by another
        // thread before this run's guard went.
        w.inner.running.lock().unwrap().insert(7, retry.clone());
        drop(guard);
        assert!(w.running().contains(&7), "the retry's flag stays: it can be cancelled");
        drop(RunningGuard(&w.inner, 7, retry));
        assert!(w.running().is_empty());
    }

    #[test]
    fn a_library_folder_chosen_in_settings_and_gone_is_not_made_again() {
        let dir = tempfile::tempdir().unwrap();
        let q = Arc::new(Queue::open(&dir.path().join("q.sqlite")).unwrap());
        // A network folder that is not mounted now.
        let away = dir.path().join("nas").join("Stemroom");
        let settings =
            crate::queue::Settings { library_dir: Some(away.to_string_lossy().into()), ..q.settings().unwrap() };
        q.save_settings(&settings).unwrap();
        let options = q.settings().unwrap().job_options();
        q.enqueue(&crate::queue::JobSource::File { path: "/m/a.wav".into() }, "a", &options).unwrap();
        let w = Worker::new(
            q.clone(),
            WorkerConfig { default_library: dir.path().join("lib"), ..Default::default() },
            Arc::new(Nobody),
        );
        let job = q.claim_next().unwrap().unwrap();
        let e = w.inner.separate(&job, &Arc::new(AtomicBool::new(false))).unwrap_err();
        assert_eq!(e.code(), ErrorCode::Output, "{e}");
        assert!(plain_message(&e).contains("cannot be reached"), "{}", plain_message(&e));
        assert!(!away.exists() && !dir.path().join("nas").exists(), "nothing made on the local disk");
    }

    /// A default library whose path is not Unicode (a HOME in another
    /// encoding) fails the job saying so, before anything is separated:
    /// the queue would record stem paths that do not exist.
    #[test]
    fn a_library_path_that_is_not_unicode_is_refused() {
        use std::os::unix::ffi::OsStrExt;
        let dir = tempfile::tempdir().unwrap();
        let q = Arc::new(Queue::open(&dir.path().join("q.sqlite")).unwrap());
        let options = q.settings().unwrap().job_options();
        q.enqueue(&crate::queue::JobSource::File { path: "/m/a.wav".into() }, "a", &options).unwrap();
        let library = dir.path().join(std::ffi::OsStr::from_bytes(b"M\xfcsik"));
        let w = Worker::new(
            q.clone(),
            WorkerConfig { default_library: library.clone(), ..Default::default() },
            Arc::new(Nobody),
        );
        let job = q.claim_next().unwrap().unwrap();
        let e = w.inner.separate(&job, &Arc::new(AtomicBool::new(false))).unwrap_err();
        assert_eq!(e.code(), ErrorCode::Output, "{e}");
        assert!(plain_message(&e).contains("not valid Unicode"), "{}", plain_message(&e));
        assert!(!library.exists());
    }

    #[test]
    fn a_missing_gpu_is_not_called_a_missing_runtime() {
        use stemroom_engine::runtime::RuntimeError;
        let e: Error = stemroom_engine::Error::Runtime(RuntimeError::DeviceUnavailable {
            device: "cuda".into(),
            reason: "No NVIDIA GPU driver is loaded (...): separating on the CPU.".into(),
        })
        .into();
        let m = plain_message(&e);
        assert!(m.contains("No NVIDIA GPU driver") && m.contains("Automatic or CPU"), "{m}");
        assert!(!m.contains("setup.sh") && !m.contains("ONNX Runtime could not be loaded"), "{m}");
    }

    #[test]
    fn titles() {
        assert_eq!(title_for(Path::new("/m/Falcon 69.wav")), "Falcon 69");
        assert_eq!(title_for(Path::new("/")), "Untitled");
    }
}

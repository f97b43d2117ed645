//! What the worker reports, kept for the API: the latest progress of each
//! running job (for `GET /status/{id}`) and a broadcast of every change (for
//! `GET /events/{id}` and synchronous `POST /separate`).

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::Mutex;

use stemroom_library::queue::{Job, JobId, JobState};
use stemroom_library::worker::{JobProgress, WorkerListener};
use tokio::sync::broadcast;

use crate::upload;

/// Changes kept for a slow subscriber before it is told it lagged (it then
/// reads the job's current state again).
const BROADCAST_CAPACITY: usize = 1024;

/// One change.
#[derive(Debug, Clone)]
pub enum Update {
    /// A job was claimed, finished, failed, cancelled or put back in the queue.
    Job(Box<Job>),
    /// Throttled progress of a running job.
    Progress(JobProgress),
    /// The job and its files were deleted (its event streams end).
    Deleted(JobId),
}

impl Update {
    /// The job this change is about.
    pub fn id(&self) -> JobId {
        match self {
            Update::Job(j) => j.id,
            Update::Progress(p) => p.id,
            Update::Deleted(id) => *id,
        }
    }
}

/// The worker's listener for the server.
#[derive(Debug)]
pub struct Events {
    tx: broadcast::Sender<Update>,
    latest: Mutex<HashMap<JobId, JobProgress>>,
    /// Last segment counts of each job separated since the server started.
    segments: Mutex<HashMap<JobId, (u32, u32)>>,
    uploads: PathBuf,
}

impl Events {
    /// Events for a server whose uploads live in `uploads`: a job that is
    /// done or cancelled no longer needs its upload, which is removed here
    /// (a failed job keeps it, so it can be retried).
    pub fn new(uploads: PathBuf) -> Self {
        Events {
            tx: broadcast::channel(BROADCAST_CAPACITY).0,
            latest: Mutex::new(HashMap::new()),
            segments: Mutex::new(HashMap::new()),
            uploads,
        }
    }

    /// Receive every change from now on.
    pub fn subscribe(&self) -> broadcast::Receiver<Update> {
        self.tx.subscribe()
    }

    /// The latest progress of a running job.
    pub fn progress_of(&self, id: JobId) -> Option<JobProgress> {
        self.latest.lock().unwrap_or_else(|p| p.into_inner()).get(&id).cloned()
    }

    /// The last segment counts seen for a job (`(completed, total)`).
    pub fn segments_of(&self, id: JobId) -> Option<(u32, u32)> {
        self.segments.lock().unwrap_or_else(|p| p.into_inner()).get(&id).copied()
    }

    /// Forget a job's progress (it stopped running).
    fn settle(&self, id: JobId) {
        self.latest.lock().unwrap_or_else(|p| p.into_inner()).remove(&id);
    }

    /// Forget everything about a job (deleted) and tell its subscribers.
    fn forget(&self, id: JobId) {
        self.settle(id);
        self.segments.lock().unwrap_or_else(|p| p.into_inner()).remove(&id);
        let _ = self.tx.send(Update::Deleted(id));
    }
}

impl WorkerListener for Events {
    fn job_changed(&self, job: &Job) {
        if !job.state.is_running() {
            self.settle(job.id);
        }
        if matches!(job.state, JobState::Queued) {
            self.segments.lock().unwrap_or_else(|p| p.into_inner()).remove(&job.id);
        }
        if matches!(job.state, JobState::Done | JobState::Cancelled) {
            upload::discard(&self.uploads, job);
        }
        // No subscriber is not an error.
        let _ = self.tx.send(Update::Job(Box::new(job.clone())));
    }

    fn progress(&self, progress: &JobProgress) {
        if let JobState::Separating { segment, total } = progress.state {
            self.segments.lock().unwrap_or_else(|p| p.into_inner()).insert(progress.id, (segment, total));
        }
        self.latest.lock().unwrap_or_else(|p| p.into_inner()).insert(progress.id, progress.clone());
        let _ = self.tx.send(Update::Progress(progress.clone()));
    }

    /// A removed job leaves no upload behind, and streams following it end.
    fn job_removed(&self, job: &Job) {
        upload::discard(&self.uploads, job);
        self.forget(job.id);
    }
}

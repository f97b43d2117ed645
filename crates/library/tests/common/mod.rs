//! Fixtures shared by the library's integration test binaries (`library.rs`,
//! `memory.rs`); each binary uses a part of them.
#![allow(dead_code)]

use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use stemroom_library::queue::{Job, Queue, Settings};
use stemroom_library::worker::{Worker, WorkerConfig, WorkerListener};

/// A queue in a temporary folder whose settings file songs into `library`
/// with `--shifts 0`.
pub struct LibraryQueue {
    pub dir: tempfile::TempDir,
    pub queue: Arc<Queue>,
    pub library: PathBuf,
}

impl LibraryQueue {
    pub fn new() -> Self {
        let dir = tempfile::tempdir().expect("tempdir");
        let queue = Arc::new(Queue::open(&dir.path().join("queue.sqlite")).expect("open"));
        let library = dir.path().join("library");
        // A folder chosen in Settings exists (the app's dialog picks one).
        std::fs::create_dir_all(&library).expect("library");
        queue
            .save_settings(&Settings {
                // Custom (no preset): no shift, for speed.
                preset: None,
                shifts: 0,
                library_dir: Some(library.to_string_lossy().into()),
                ..Settings::default()
            })
            .expect("settings");
        LibraryQueue { dir, queue, library }
    }

    /// A worker on this queue (not started).
    pub fn worker(&self, listener: Arc<dyn WorkerListener>) -> Worker {
        Worker::new(
            self.queue.clone(),
            WorkerConfig { default_library: self.dir.path().join("unused"), ..Default::default() },
            listener,
        )
    }
}

/// A listener that hears nothing.
pub struct Quiet;
impl WorkerListener for Quiet {
    fn job_changed(&self, _: &Job) {}
    fn progress(&self, _: &stemroom_library::worker::JobProgress) {}
}

/// Poll job `id` every 50 ms until `what` holds; panics after `secs`.
pub fn wait_for(q: &Queue, id: u32, secs: u64, what: impl Fn(&Job) -> bool) -> Job {
    let deadline = Instant::now() + Duration::from_secs(secs);
    loop {
        let j = q.get(id).expect("job");
        if what(&j) {
            return j;
        }
        assert!(Instant::now() < deadline, "timed out; job is {:?}", j.state);
        std::thread::sleep(Duration::from_millis(50));
    }
}

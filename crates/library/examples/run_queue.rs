//! Test helper for `tests/library.rs` (resume module): runs a data folder's
//! queue as the app does (instance lock, recovery of jobs a killed run left
//! running, one worker thread) until no job is queued or running, printing
//! one JSON line per progress update (`{"t": seconds, "progress": …}`) and
//! per job change (`{"t": seconds, "job": …}`), flushed at once, so a test
//! can kill it with SIGKILL at a known point.
//!
//! Usage: `run_queue <data-dir> [<checkpoint-seconds>]` (the queue is
//! `<data-dir>/queue.sqlite`).

use std::io::Write;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use stemroom_library::lock::InstanceLock;
use stemroom_library::queue::{Job, JobState, Queue};
use stemroom_library::worker::{JobProgress, Worker, WorkerConfig, WorkerListener};

struct Print(Mutex<Instant>);

impl Print {
    fn line(&self, key: &str, value: serde_json::Value) {
        let t = self.0.lock().map(|t| t.elapsed().as_secs_f64()).unwrap_or(0.0);
        let mut out = std::io::stdout().lock();
        let _ = writeln!(out, "{}", serde_json::json!({ "t": t, key: value }));
        let _ = out.flush();
    }
}

impl WorkerListener for Print {
    fn job_changed(&self, job: &Job) {
        self.line("job", serde_json::to_value(job).unwrap_or_default());
    }
    fn progress(&self, progress: &JobProgress) {
        self.line("progress", serde_json::to_value(progress).unwrap_or_default());
    }
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let mut args = std::env::args_os().skip(1);
    let data: PathBuf = args.next().ok_or("usage: run_queue <data-dir> [<checkpoint-seconds>]")?.into();
    let every = args.next().map(|s| s.to_string_lossy().parse::<f64>()).transpose()?.map(Duration::from_secs_f64);
    let lock = InstanceLock::acquire(&data)?.ok_or("another process holds the data folder")?;
    let queue = Arc::new(Queue::open(&data.join("queue.sqlite"))?);
    queue.recover(&lock)?;
    let config = WorkerConfig { default_library: data.join("library"), checkpoint_every: every, ..Default::default() };
    let worker = Worker::new(queue.clone(), config, Arc::new(Print(Mutex::new(Instant::now()))));
    worker.start(1);
    loop {
        std::thread::sleep(Duration::from_millis(100));
        let busy = queue.queue()?.iter().any(|j| matches!(j.state, JobState::Queued) || j.state.is_running());
        if !busy && worker.running().is_empty() {
            break;
        }
    }
    worker.shutdown();
    Ok(())
}

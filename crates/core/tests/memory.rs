//! Memory of the network runs, in a test binary of its own so that no other
//! test's allocations move this process's resident set.
//!
//! ONNX Runtime's CPU arena (see `runtime.rs`, `CpuArena`) keeps every
//! activation buffer between segments. It must be shared by sessions open at
//! the same time and released when the last one closes: a desktop app that
//! finished its jobs must not keep the ~2 GB a separation needs.

mod common;

use common::{falcon_mixture, open_separator, separate_into};

/// The tests measure the whole process, so they take turns.
static SERIAL: std::sync::Mutex<()> = std::sync::Mutex::new(());

fn serial() -> std::sync::MutexGuard<'static, ()> {
    SERIAL.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

/// `VmRSS` and `VmHWM` of this process in GB (1e9 bytes), from /proc/self/status.
fn rss() -> (f64, f64) {
    let status = std::fs::read_to_string("/proc/self/status").expect("/proc/self/status");
    let field = |name: &str| -> f64 {
        let line = status.lines().find(|l| l.starts_with(name)).unwrap_or_else(|| panic!("{name} in status"));
        let kb: u64 = line.split_whitespace().nth(1).and_then(|v| v.parse().ok()).expect("kB value");
        (kb * 1024) as f64 / 1e9
    };
    (field("VmRSS:"), field("VmHWM:"))
}

#[test]
fn the_arena_is_shared_while_sessions_are_open_and_released_after_the_last() {
    let _turn = serial();
    let mix = falcon_mixture();
    let dir = tempfile::tempdir().expect("tempdir");
    let separate = |sep: &stemroom_core::job::Separator, out: &str| {
        let done = separate_into(sep, &mix, &dir.path().join(out));
        assert_eq!(done.stems.len(), 4, "four stems");
    };

    // Two sessions at once share the arena; closing the first leaves the
    // second working.
    let first = open_separator();
    let second = open_separator();
    separate(&first, "a");
    let (during, peak) = rss();
    eprintln!("two sessions, after a run: RSS {during:.2} GB, peak {peak:.2} GB");
    assert!(peak > 1.5, "the network ran (peak {peak:.2} GB)");
    assert!(during > 1.5, "the arena keeps its buffers while sessions are open");
    drop(first);
    separate(&second, "b");
    drop(second);

    let (after, _) = rss();
    eprintln!("all sessions closed: RSS {after:.2} GB");
    assert!(after < 0.8, "closing the last session gives the arena back: RSS {after:.2} GB");

    // Opening again registers a new arena.
    let third = open_separator();
    separate(&third, "c");
    drop(third);
    let (after, _) = rss();
    assert!(after < 0.8, "released again: RSS {after:.2} GB");
}

mod worker {
    use std::sync::Arc;
    use std::time::{Duration, Instant};

    use stemroom_core::queue::{JobSource, JobState};
    use stemroom_core::worker::{JobProgress, WorkerListener};

    use crate::common::{falcon_mixture, wait_for, LibraryQueue};

    struct Quiet;
    impl WorkerListener for Quiet {
        fn job_changed(&self, _: &stemroom_core::queue::Job) {}
        fn progress(&self, _: &JobProgress) {}
    }

    /// The app's path: a job through the queue and worker, then the queue is
    /// idle and the worker must have dropped the model and its arena.
    #[test]
    fn an_idle_worker_gives_the_model_memory_back() {
        let _turn = super::serial();
        let mix = falcon_mixture();
        let lq = LibraryQueue::new();
        let worker = lq.worker(Arc::new(Quiet));
        let opts = lq.queue.settings().expect("settings").job_options();
        let source = JobSource::File { path: mix.to_string_lossy().into() };
        let job = lq.queue.enqueue(&source, "Falcon 69", &opts).expect("enqueue");
        worker.start(1);

        let done = wait_for(&lq.queue, job.id, 300, |j| j.state.is_finished());
        assert_eq!(done.state, JobState::Done);
        let (_, peak) = super::rss();
        assert!(peak > 1.5, "the network ran (peak {peak:.2} GB)");
        // The worker looks for work at least every 2 s; idle, it releases.
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            let (now, _) = super::rss();
            if now < 0.8 {
                eprintln!("idle worker: RSS {now:.2} GB after a {peak:.2} GB peak");
                break;
            }
            assert!(Instant::now() < deadline, "idle worker still holds {now:.2} GB");
            std::thread::sleep(Duration::from_millis(200));
        }
        worker.shutdown();
    }
}

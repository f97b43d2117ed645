//! Memory of the app's path, in a test binary of its own so that no other
//! test's allocations move this process's resident set: a job through the
//! queue and worker, after which an idle worker must have dropped the model
//! and ONNX Runtime's arena (~2 GB).

mod common;

use std::sync::Arc;
use std::time::{Duration, Instant};

use stemroom_library::queue::{JobSource, JobState};

use stemroom_testkit::{cpu_turn as serial, falcon_mixture, rss_gb as rss};

use common::{wait_for, LibraryQueue, Quiet};

/// The app's path: a job through the queue and worker, then the queue is
/// idle and the worker must have dropped the model and its arena.
#[test]
fn an_idle_worker_gives_the_model_memory_back() {
    let _turn = serial();
    let mix = falcon_mixture();
    let lq = LibraryQueue::new();
    let worker = lq.worker(Arc::new(Quiet));
    let opts = lq.queue.settings().expect("settings").job_options();
    let source = JobSource::File { path: mix.to_string_lossy().into() };
    let job = lq.queue.enqueue(&source, "Falcon 69", &opts).expect("enqueue");
    worker.start(1);

    let done = wait_for(&lq.queue, job.id, 300, |j| j.state.is_finished());
    assert_eq!(done.state, JobState::Done);
    let (_, peak) = rss();
    assert!(peak > 1.5, "the network ran (peak {peak:.2} GB)");
    // The worker looks for work at least every 2 s; idle, it releases.
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let (now, _) = rss();
        if now < 0.8 {
            eprintln!("idle worker: RSS {now:.2} GB after a {peak:.2} GB peak");
            break;
        }
        assert!(Instant::now() < deadline, "idle worker still holds {now:.2} GB");
        std::thread::sleep(Duration::from_millis(200));
    }
    worker.shutdown();
}

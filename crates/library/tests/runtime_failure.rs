//! An ONNX Runtime library that is found but fails to load, in a test
//! binary of its own: a process loads ONNX Runtime once and never again,
//! so this would break every other test of its process.

mod common;

use std::sync::Arc;
use std::time::{Duration, Instant};

use stemroom_library::queue::{JobSource, JobState};
use stemroom_library::worker::{Worker, WorkerConfig};

use common::{LibraryQueue, Quiet};

/// A damaged library (not a shared object at all) fails to load: the job
/// that found it, and those after it, wait in the queue for the next start
/// instead of failing one after another with the same error; the
/// runtime's status says what happened and what to do.
#[test]
fn a_runtime_that_fails_to_load_holds_the_queue_and_fails_no_job() {
    let lq = LibraryQueue::new();
    let damaged = lq.dir.path().join("libonnxruntime.so");
    std::fs::write(&damaged, b"not a shared object").expect("write");
    let worker = Worker::new(
        lq.queue.clone(),
        WorkerConfig {
            default_library: lq.dir.path().join("unused"),
            runtime_library: Some(damaged.clone()),
            ..Default::default()
        },
        Arc::new(Quiet),
    );
    let mix = stemroom_testkit::falcon_mixture();
    let opts = lq.queue.settings().expect("settings").job_options();
    let source = JobSource::File { path: mix.to_string_lossy().into() };
    let jobs: Vec<_> =
        (0..3).map(|i| lq.queue.enqueue(&source, &format!("song {i}"), &opts).expect("enqueue")).collect();
    worker.start(1);
    let deadline = Instant::now() + Duration::from_secs(60);
    while stemroom_engine::runtime::load_failure().is_none() {
        assert!(Instant::now() < deadline, "the damaged library was never tried");
        std::thread::sleep(Duration::from_millis(50));
    }
    // Several of the worker's looks at the queue (every 2 s at most).
    std::thread::sleep(Duration::from_secs(5));
    for job in &jobs {
        let now = lq.queue.get(job.id).expect("job");
        assert_eq!(now.state, JobState::Queued, "job {}: {:?}", job.id, now.state);
    }
    let status = stemroom_engine::runtime::status(Some(&damaged), stemroom_engine::units::Device::Cpu);
    let problem = status.problem.expect("a problem is said");
    assert!(status.found, "found, not missing: installing one is not the whole fix");
    assert!(problem.contains(&damaged.display().to_string()) && problem.contains("start Stemroom again"), "{problem}");
    worker.shutdown();
}

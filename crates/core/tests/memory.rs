//! Memory of the network runs, in a test binary of its own so that no other
//! test's allocations move this process's resident set.
//!
//! ONNX Runtime's CPU arena (see `runtime.rs`, `CpuArena`) keeps every
//! activation buffer between segments. It must be shared by sessions open at
//! the same time and released when the last one closes: a desktop app that
//! finished its jobs must not keep the ~2 GB a separation needs.

use std::path::Path;

use stemroom_core::audio::encode::{ClipMode, OutputFormat};
use stemroom_core::job::{separate_file, JobRequest, Separator, DEFAULT_FILENAME};
use stemroom_core::progress::Silent;

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

fn separate(sep: &Separator, mix: &Path, out: &Path) {
    let req = JobRequest {
        input: mix.to_path_buf(),
        out_dir: out.to_path_buf(),
        filename: DEFAULT_FILENAME.into(),
        format: OutputFormat::Flac { bits: 16 },
        clip: ClipMode::Rescale,
        two_stems: None,
        other_method: Default::default(),
        output_rate: Default::default(),
        separate: stemroom_core::separate::SeparateOptions { shifts: 0, ..Default::default() },
        scratch_dir: Some(out.to_path_buf()),
    };
    let done = separate_file(sep, &req, &Silent).expect("separation");
    assert_eq!(done.stems.len(), 4, "four stems");
}

#[test]
fn the_arena_is_shared_while_sessions_are_open_and_released_after_the_last() {
    let _turn = serial();
    let mix = stemroom_core::paths::cache_dir().expect("cache").join("testdata/mixture.wav");
    assert!(mix.is_file(), "{} missing: run scripts/setup.sh", mix.display());
    let dir = tempfile::tempdir().expect("tempdir");
    let open = || Separator::open("htdemucs", None, &Default::default()).expect("model and runtime (setup.sh)");

    // Two sessions at once share the arena; closing the first leaves the
    // second working.
    let first = open();
    let second = open();
    separate(&first, &mix, &dir.path().join("a"));
    let (during, peak) = rss();
    eprintln!("two sessions, after a run: RSS {:.2} GB, peak {:.2} GB", during, peak);
    assert!(peak > 1.5, "the network ran (peak {:.2} GB)", peak);
    assert!(during > 1.5, "the arena keeps its buffers while sessions are open");
    drop(first);
    separate(&second, &mix, &dir.path().join("b"));
    drop(second);

    let (after, _) = rss();
    eprintln!("all sessions closed: RSS {:.2} GB", after);
    assert!(after < 0.8, "closing the last session gives the arena back: RSS {:.2} GB", after);

    // Opening again registers a new arena.
    let third = open();
    separate(&third, &mix, &dir.path().join("c"));
    drop(third);
    let (after, _) = rss();
    assert!(after < 0.8, "released again: RSS {:.2} GB", after);
}

mod worker {
    use std::sync::Arc;
    use std::time::{Duration, Instant};

    use stemroom_core::queue::{JobSource, JobState, Queue, Settings};
    use stemroom_core::worker::{JobProgress, Worker, WorkerConfig, WorkerListener};

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
        let mix = stemroom_core::paths::cache_dir().expect("cache").join("testdata/mixture.wav");
        assert!(mix.is_file(), "{} missing: run scripts/setup.sh", mix.display());
        let dir = tempfile::tempdir().expect("tempdir");
        let q = Arc::new(Queue::open(&dir.path().join("queue.sqlite")).expect("open"));
        let library = dir.path().join("library");
        q.save_settings(&Settings {
            shifts: 0,
            library_dir: Some(library.to_string_lossy().into()),
            ..Settings::default()
        })
        .expect("settings");
        let worker = Worker::new(
            q.clone(),
            WorkerConfig { default_library: dir.path().join("unused"), ..Default::default() },
            Arc::new(Quiet),
        );
        let opts = q.settings().expect("settings").job_options();
        let source = JobSource::File { path: mix.to_string_lossy().into() };
        let job = q.enqueue(&source, "Falcon 69", &opts).expect("enqueue");
        worker.start(1);

        let deadline = Instant::now() + Duration::from_secs(300);
        while !q.get(job.id).expect("job").state.is_finished() {
            assert!(Instant::now() < deadline, "job did not finish");
            std::thread::sleep(Duration::from_millis(100));
        }
        assert_eq!(q.get(job.id).expect("job").state, JobState::Done);
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

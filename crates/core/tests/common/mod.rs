//! Fixtures shared by the engine's integration test binaries (`core.rs`,
//! `memory.rs`); each binary uses a part of them.
#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use stemroom_core::audio::encode::{ClipMode, OutputFormat, WavDepth};
use stemroom_core::job::{JobOutput, JobRequest, Separator, DEFAULT_FILENAME};
use stemroom_core::progress::Silent;
use stemroom_core::queue::{Job, Queue, Settings};
use stemroom_core::worker::{Worker, WorkerConfig, WorkerListener};

/// The Falcon 69 preview's mixture (real music, 44.1 kHz stereo WAV, ~6 s),
/// put in the cache by scripts/setup.sh.
pub fn falcon_mixture() -> PathBuf {
    let mix = stemroom_core::paths::cache_dir().expect("cache").join("testdata/mixture.wav");
    assert!(mix.is_file(), "{} missing: run scripts/setup.sh", mix.display());
    mix
}

/// The real htdemucs model on the default runtime.
pub fn open_separator() -> Separator {
    Separator::open("htdemucs", None, &Default::default()).expect("model and runtime (setup.sh)")
}

/// Separate `input` with `--shifts 0` into `<out>/<track>/<stem>.wav` (16-bit).
pub fn separate_into(sep: &Separator, input: &Path, out: &Path) -> JobOutput {
    let req = JobRequest {
        input: input.to_path_buf(),
        out_dir: out.to_path_buf(),
        filename: DEFAULT_FILENAME.into(),
        format: OutputFormat::Wav { depth: WavDepth::Int16 },
        clip: ClipMode::Rescale,
        two_stems: None,
        other_method: Default::default(),
        output_rate: Default::default(),
        separate: stemroom_core::separate::SeparateOptions { shifts: 0, ..Default::default() },
        scratch_dir: None,
    };
    stemroom_core::job::separate_file(sep, &req, &Silent).expect("separation")
}

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
        queue
            .save_settings(&Settings {
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

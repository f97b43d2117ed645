//! Test helper for `tests/library.rs` (queue module): hammers a queue database
//! with enqueues and state updates forever, printing the id of each job as
//! soon as its enqueue has committed, until the test kills it with SIGKILL.
//!
//! Usage: `queue_crash_writer <db-path>`

use std::io::Write;
use std::path::PathBuf;

use stemroom_library::queue::{JobSource, JobState, Queue, Settings};

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let path: PathBuf = std::env::args_os().nth(1).ok_or("usage: queue_crash_writer <db-path>")?.into();
    let queue = Queue::open(&path)?;
    let options = Settings::default().job_options();
    let mut out = std::io::stdout().lock();
    for i in 0u64.. {
        let job =
            queue.enqueue(&JobSource::File { path: format!("/music/song-{i}.wav") }, &format!("song {i}"), &options)?;
        writeln!(out, "{}", job.id)?;
        out.flush()?;
        if let Some(running) = queue.claim_next()? {
            for segment in 1..=3 {
                queue.set_running_state(running.id, &JobState::Separating { segment, total: 3 })?;
            }
            if i % 3 == 0 {
                queue.finish(running.id, &JobState::Done, Some("/library/song"), &[])?;
            }
        }
    }
    Ok(())
}

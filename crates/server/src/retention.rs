//! `--keep-days N`: finished jobs (done, failed, cancelled) that clients of
//! the HTTP service added, and their files (stems, upload), are removed N
//! days after they finished. The app's songs in the same data folder never
//! expire, and a song folder's `exports` stay (a person made them in the
//! app). Checked at start and then every hour.

use std::sync::Arc;
use std::time::Duration;

use stemroom_library::queue::{JobId, Queue};

use crate::service::Service;

/// How often the retention runs.
pub const SWEEP_EVERY: Duration = Duration::from_secs(3600);

/// Milliseconds in a day.
const DAY_MS: f64 = 86_400_000.0;

/// Jobs the API added that finished more than `days` days before `now_ms`
/// (milliseconds since the Unix epoch).
pub fn expired(queue: &Queue, now_ms: f64, days: f64) -> Vec<JobId> {
    match queue.api_finished_before(now_ms - days * DAY_MS) {
        Ok(jobs) => jobs.into_iter().map(|j| j.id).collect(),
        Err(e) => {
            tracing::warn!("retention: the queue cannot be read: {e}");
            Vec::new()
        }
    }
}

/// Sweep now and every [`SWEEP_EVERY`] (runs until aborted).
pub async fn every_hour(service: Arc<Service>) {
    if service.config.keep_days.is_none() {
        return;
    }
    let now = stemroom_library::queue::system_clock();
    loop {
        let (s, now) = (service.clone(), now.clone());
        let n = tokio::task::spawn_blocking(move || s.sweep(now())).await.unwrap_or(0);
        if n > 0 {
            tracing::info!("retention: removed {n} finished job(s) and their files");
        }
        tokio::time::sleep(SWEEP_EVERY).await;
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicU64, Ordering};

    use stemroom_library::queue::{JobSource, JobState, Settings};

    use super::*;

    #[test]
    fn only_jobs_finished_long_enough_ago_expire() {
        let dir = tempfile::tempdir().unwrap();
        let t = Arc::new(AtomicU64::new(1_000_000_000_000));
        let t2 = t.clone();
        let q =
            Queue::open_with_clock(&dir.path().join("q.sqlite"), Arc::new(move || t2.load(Ordering::SeqCst) as f64))
                .unwrap();
        let opts = Settings::default().job_options();
        // A song the app separated, in the same folder: never expires.
        let app = q.enqueue(&JobSource::File { path: "/d.wav".into() }, "d", &opts).unwrap();
        let old = q.enqueue(&JobSource::File { path: "/a.wav".into() }, "a", &opts).unwrap();
        let running = q.enqueue(&JobSource::File { path: "/b.wav".into() }, "b", &opts).unwrap();
        let queued = q.enqueue(&JobSource::File { path: "/c.wav".into() }, "c", &opts).unwrap();
        for id in [old.id, running.id, queued.id] {
            q.mark_from_api(id).unwrap();
        }
        assert_eq!(q.claim_next().unwrap().unwrap().id, app.id);
        q.finish(app.id, &JobState::Done, Some("/lib/d"), &[]).unwrap();
        assert_eq!(q.claim_next().unwrap().unwrap().id, old.id);
        q.finish(old.id, &JobState::Done, Some("/lib/a"), &[]).unwrap();
        t.fetch_add(3 * 86_400_000, Ordering::SeqCst);
        assert_eq!(q.claim_next().unwrap().unwrap().id, running.id);
        q.finish(
            running.id,
            &JobState::Failed { code: stemroom_engine::ErrorCode::BadInput, message: "x".into() },
            None,
            &[],
        )
        .unwrap();
        let now = t.load(Ordering::SeqCst) as f64 + 1000.0;
        assert_eq!(expired(&q, now, 2.0), vec![old.id]);
        assert_eq!(expired(&q, now, 0.0), vec![old.id, running.id]);
        assert!(expired(&q, now, 30.0).is_empty());
        assert!(!expired(&q, now, 0.0).contains(&queued.id), "queued jobs never expire");
        assert!(!expired(&q, now + 1e12, 0.0).contains(&app.id), "the app's songs never expire");
    }
}

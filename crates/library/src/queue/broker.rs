//! The server's record of jobs handed to remote workers through a broker
//! (Redis Streams, `stemroom serve --broker`): which queued jobs are on the
//! stream, which stream entry and worker hold a running job, how many times
//! it was claimed. The jobs table stays the record of status and results.
//!
//! A job is claimed by a stream entry id ("message"). The entry a worker
//! read first holds it; when that worker dies, another worker claims the
//! same entry after the visibility timeout (`XAUTOCLAIM`) and takes the job
//! over, unless the server still hears the first worker keep it
//! ([`Claim::HolderAlive`]). A second entry for the same job (published
//! twice after a broker or server restart) is refused while the job runs,
//! so a job never runs twice at once, and a job that is finished refuses
//! every claim.

use rusqlite::{params, OptionalExtension, TransactionBehavior};
use stemroom_engine::ErrorCode;

use super::schema::{fail_damaged, job_in, job_in_checked, json, unreadable_row};
use super::{Job, JobId, JobState, Queue, QueueError};

/// The answer to a claim.
#[derive(Debug, Clone, PartialEq)]
pub enum Claim {
    /// The worker runs the job now (`takeover`: it had been claimed through
    /// the same entry by a worker that went silent).
    Granted { job: Job, attempt: u32, takeover: bool },
    /// Not for this worker: finished, removed, or running through another entry.
    Refused(String),
    /// A takeover of the entry whose holder still keeps it (it was heard
    /// from within the claimer's visibility timeout, over another path than
    /// the broker: Redis was out of its reach): the entry stays the
    /// holder's, neither run nor acknowledged by the claimer.
    HolderAlive(String),
    /// Claimed more than the allowed times, or its record cannot be read
    /// (a newer Stemroom wrote it, or it is damaged): marked failed now.
    GaveUp(Job),
}

/// A running job and its holder (stream entry, worker), if any.
pub type RunningJob = (JobId, Option<(String, String)>);

/// A job's broker row: holding entry, worker, claims so far, last error.
type Held = (Option<String>, Option<String>, i64, Option<String>);

impl Queue {
    /// Queued jobs not yet on the stream, in queue order.
    ///
    /// # Errors
    /// Database errors.
    pub fn unpublished(&self) -> Result<Vec<JobId>, QueueError> {
        let conn = self.conn();
        let mut stmt = conn.prepare(
            "SELECT j.id FROM jobs j LEFT JOIN broker b ON b.job_id = j.id
             WHERE j.status = 'queued' AND COALESCE(b.published, 0) = 0 ORDER BY j.position, j.id",
        )?;
        let ids = stmt.query_map([], |r| r.get::<_, i64>(0))?.collect::<Result<Vec<_>, _>>()?;
        Ok(ids.into_iter().filter_map(|i| JobId::try_from(i).ok()).collect())
    }

    /// Queued jobs recorded as on the stream ([`Queue::mark_published`]),
    /// for the check that their entries are still there.
    ///
    /// # Errors
    /// Database errors.
    pub fn published_queued(&self) -> Result<Vec<JobId>, QueueError> {
        let conn = self.conn();
        let mut stmt = conn.prepare(
            "SELECT j.id FROM jobs j JOIN broker b ON b.job_id = j.id
             WHERE j.status = 'queued' AND b.published = 1 ORDER BY j.id",
        )?;
        let ids = stmt.query_map([], |r| r.get::<_, i64>(0))?.collect::<Result<Vec<_>, _>>()?;
        Ok(ids.into_iter().filter_map(|i| JobId::try_from(i).ok()).collect())
    }

    /// Record that job `id` is on the stream.
    ///
    /// # Errors
    /// Database errors.
    pub fn mark_published(&self, id: JobId) -> Result<(), QueueError> {
        self.conn().execute(
            "INSERT INTO broker (job_id, published) VALUES (?1, 1)
             ON CONFLICT(job_id) DO UPDATE SET published = 1",
            [id],
        )?;
        Ok(())
    }

    /// Undo [`Queue::mark_published`] for job `id` (its entry could not be
    /// added after all).
    ///
    /// # Errors
    /// Database errors.
    pub fn mark_unpublished(&self, id: JobId) -> Result<(), QueueError> {
        self.conn().execute("UPDATE broker SET published = 0 WHERE job_id = ?1", [id])?;
        Ok(())
    }

    /// Forget which queued jobs are on the stream (the broker restarted and
    /// may have lost them): they are published again; a copy that survived
    /// is refused when claimed while the job runs, and acknowledged.
    ///
    /// # Errors
    /// Database errors.
    pub fn republish_queued(&self) -> Result<usize, QueueError> {
        Ok(self.conn().execute(
            "UPDATE broker SET published = 0 WHERE job_id IN (SELECT id FROM jobs WHERE status = 'queued')",
            [],
        )?)
    }

    /// A worker asks to run job `id`, having read it from stream entry
    /// `message`. See the module docs and [`Claim`]; `max_attempts` claims
    /// are allowed in all. `holder_alive(name)` says whether the worker
    /// `name` that holds the entry still keeps it (asked for every takeover,
    /// one by a worker of the holder's own name too: a restarted worker, or
    /// one whose earlier completion is still being filed); it is asked
    /// inside the claim's transaction, so no other claim comes between its
    /// answer and the grant.
    ///
    /// # Errors
    /// [`QueueError::NotFound`]; database errors.
    pub fn broker_claim(
        &self,
        id: JobId,
        message: &str,
        worker: &str,
        max_attempts: u32,
        holder_alive: impl FnOnce(&str) -> bool,
    ) -> Result<Claim, QueueError> {
        let mut conn = self.conn();
        let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
        // A row that cannot be read at all (a column of the wrong type) is
        // as damaged as one with unreadable JSON, as in `claim_next`: an
        // error here was answered 500 at every delivery of its entry.
        let damage = match job_in_checked(&tx, id) {
            Ok((_, damage)) => damage,
            Err(QueueError::Sql(e)) if unreadable_row(&e) => Some(e.to_string()),
            Err(e) => return Err(e),
        };
        let held: Option<Held> = tx
            .query_row("SELECT message, worker, attempts, last_error FROM broker WHERE job_id = ?1", [id], |r| {
                Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?))
            })
            .optional()?;
        let (held_by, held_worker, attempts, last_error) = held.unwrap_or((None, None, 0, None));
        let attempts = u32::try_from(attempts).unwrap_or(0);
        // The status column, as `transition` reads it: a record whose
        // state cannot be read has a failed stand-in, and was refused here
        // as failed while its row stayed queued (published again at every
        // pass) or running (never taken over, nor retried or removed).
        let status: String = tx.query_row("SELECT status FROM jobs WHERE id = ?1", [id], |r| r.get(0))?;
        let takeover = match status.as_str() {
            "queued" => false,
            "running" if held_by.as_deref() == Some(message) => {
                if let Some(holder) = held_worker.as_deref() {
                    if holder_alive(holder) {
                        return Ok(Claim::HolderAlive(format!("job {id} is held by {holder}, which keeps it")));
                    }
                }
                true
            }
            "running" => {
                return Ok(Claim::Refused(format!(
                    "job {id} is running on {}",
                    held_worker.as_deref().unwrap_or("another worker")
                )))
            }
            status => return Ok(Claim::Refused(format!("job {id} is {status}"))),
        };
        if let Some(damage) = damage {
            // Run with stand-ins (default options, no source), it would be
            // separated wrong: it fails, saying why, as a local claim does.
            fail_damaged(&tx, i64::from(id), &damage, self.now())?;
            let job = job_in(&tx, id);
            tx.commit()?;
            return Ok(match job {
                Ok(job) => Claim::GaveUp(job),
                // Not readable even with stand-ins: marked failed all the same.
                Err(_) => Claim::Refused(format!("job {id} cannot be read ({damage}): marked failed")),
            });
        }
        if attempts >= max_attempts {
            let why = last_error.unwrap_or_else(|| {
                format!("the worker running it ({}) stopped answering", held_worker.as_deref().unwrap_or("unknown"))
            });
            let state = JobState::Failed {
                code: ErrorCode::Internal,
                message: format!("Gave up after {attempts} attempts: {why}"),
            };
            tx.execute(
                "UPDATE jobs SET status = 'failed', state = ?1, finished_ms = ?2 WHERE id = ?3",
                params![json(&state)?, self.now(), id],
            )?;
            let job = job_in(&tx, id)?;
            tx.commit()?;
            return Ok(Claim::GaveUp(job));
        }
        tx.execute(
            "UPDATE jobs SET status = 'running', state = ?1, started_ms = ?2, finished_ms = NULL,
                 cancel_requested = 0 WHERE id = ?3",
            params![json(&JobState::Decoding)?, self.now(), id],
        )?;
        tx.execute(
            "INSERT INTO broker (job_id, published, message, worker, attempts) VALUES (?1, 1, ?2, ?3, 1)
             ON CONFLICT(job_id) DO UPDATE SET message = ?2, worker = ?3, attempts = attempts + 1",
            params![id, message, worker],
        )?;
        let job = job_in(&tx, id)?;
        tx.commit()?;
        Ok(Claim::Granted { job, attempt: attempts + 1, takeover })
    }

    /// The stream entry and worker holding running job `id`, if any.
    ///
    /// # Errors
    /// Database errors.
    pub fn broker_holder(&self, id: JobId) -> Result<Option<(String, String)>, QueueError> {
        Ok(self
            .conn()
            .query_row(
                "SELECT b.message, b.worker FROM broker b JOIN jobs j ON j.id = b.job_id
                 WHERE b.job_id = ?1 AND j.status = 'running' AND b.message IS NOT NULL",
                [id],
                |r| Ok((r.get::<_, String>(0)?, r.get::<_, Option<String>>(1)?.unwrap_or_default())),
            )
            .optional()?)
    }

    /// Running jobs and the stream entry and worker holding each (`None`
    /// when no broker worker holds it: it was left running by a process
    /// that separated locally, or its claim was lost), in id order.
    ///
    /// # Errors
    /// Database errors.
    pub fn broker_running(&self) -> Result<Vec<RunningJob>, QueueError> {
        let conn = self.conn();
        let mut stmt = conn.prepare(
            "SELECT j.id, b.message, b.worker FROM jobs j LEFT JOIN broker b ON b.job_id = j.id
             WHERE j.status = 'running' ORDER BY j.id",
        )?;
        let rows = stmt
            .query_map([], |r| {
                Ok((r.get::<_, i64>(0)?, r.get::<_, Option<String>>(1)?, r.get::<_, Option<String>>(2)?))
            })?
            .collect::<Result<Vec<_>, _>>()?;
        Ok(rows
            .into_iter()
            .filter_map(|(id, m, w)| Some((JobId::try_from(id).ok()?, m.map(|m| (m, w.unwrap_or_default())))))
            .collect())
    }

    /// Put running jobs that no broker worker holds back in the queue (and
    /// up for publishing): a server that separated locally died with them
    /// running, and restarted with `--broker`, where no worker would ever
    /// take them. Returns how many. Only the owner of the data folder may do
    /// this, before it serves (see [`Queue::recover`]).
    ///
    /// # Errors
    /// [`QueueError::NotOwner`]; database errors.
    pub fn broker_recover_unheld(&self, owner: &crate::lock::InstanceLock) -> Result<usize, QueueError> {
        self.check_owner(owner)?;
        let mut conn = self.conn();
        let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
        let unheld = "SELECT id FROM jobs WHERE status = 'running'
             AND id NOT IN (SELECT job_id FROM broker WHERE message IS NOT NULL)";
        tx.execute(
            &format!(
                "INSERT INTO broker (job_id, published) SELECT id, 0 FROM ({unheld})
                 WHERE true ON CONFLICT(job_id) DO UPDATE SET published = 0"
            ),
            [],
        )?;
        let n = tx.execute(
            &format!("UPDATE jobs SET status = 'queued', state = ?1, started_ms = NULL WHERE id IN ({unheld})"),
            [json(&JobState::Queued)?],
        )?;
        tx.commit()?;
        Ok(n)
    }

    /// The worker that last claimed job `id` (running or finished), if any.
    ///
    /// # Errors
    /// Database errors.
    pub fn broker_worker(&self, id: JobId) -> Result<Option<String>, QueueError> {
        Ok(self
            .conn()
            .query_row("SELECT worker FROM broker WHERE job_id = ?1", [id], |r| r.get::<_, Option<String>>(0))
            .optional()?
            .flatten())
    }

    /// [`Queue::finish`] for a broker worker: only while stream entry
    /// `message` and `worker` still hold running job `id`. A result that
    /// comes late (its filing took minutes, and meanwhile the job was
    /// cancelled, retried and claimed again, or taken over) does not end the
    /// run that holds the job now.
    ///
    /// # Errors
    /// [`QueueError::NotFound`] when they do not hold it; database errors.
    pub fn broker_finish(
        &self,
        id: JobId,
        message: &str,
        worker: &str,
        state: &JobState,
        output_dir: Option<&str>,
        stems: &[super::StemFile],
    ) -> Result<Job, QueueError> {
        debug_assert!(state.is_finished());
        self.update_running(
            id,
            "UPDATE jobs SET status = ?1, state = ?2, finished_ms = ?3, output_dir = ?4, stems = ?5
             WHERE id = ?6 AND status = 'running'
               AND EXISTS (SELECT 1 FROM broker WHERE job_id = ?6 AND message = ?7 AND worker = ?8)",
            params![state.status(), json(state)?, self.now(), output_dir, json(&stems)?, id, message, worker],
        )
    }

    /// A worker could not finish job `id` for a reason another worker may
    /// not meet (its device, its network): the job goes back in the queue,
    /// to be published again, with `error` kept for the day it gives up.
    /// `error` is `None` when the worker stopped on purpose (a deploy, a
    /// reclaimed spot machine): that claim is not counted toward the
    /// attempts. Only the holder (`message` and `worker`) may do this.
    ///
    /// # Errors
    /// [`QueueError::NotFound`] when `message` does not hold the running job.
    pub fn broker_release(
        &self,
        id: JobId,
        message: &str,
        worker: &str,
        error: Option<&str>,
    ) -> Result<Job, QueueError> {
        let mut conn = self.conn();
        let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
        // The entry and its worker: after a takeover the entry is the same
        // and the worker another, whose claim a release decided on an
        // older look (the stall watchdog's, a failure's) must not undo.
        let n = tx.execute(
            "UPDATE jobs SET status = 'queued', state = ?1, started_ms = NULL
             WHERE id = ?2 AND status = 'running'
               AND EXISTS (SELECT 1 FROM broker WHERE job_id = ?2 AND message = ?3 AND worker = ?4)",
            params![json(&JobState::Queued)?, id, message, worker],
        )?;
        if n == 0 {
            return Err(QueueError::NotFound(id));
        }
        match error {
            Some(error) => tx.execute(
                "UPDATE broker SET published = 0, message = NULL, worker = NULL, last_error = ?2 WHERE job_id = ?1",
                params![id, error],
            )?,
            None => tx.execute(
                "UPDATE broker SET published = 0, message = NULL, worker = NULL, attempts = MAX(attempts - 1, 0)
                 WHERE job_id = ?1",
                params![id],
            )?,
        };
        let job = job_in(&tx, id)?;
        tx.commit()?;
        Ok(job)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::queue::{JobSource, Settings};

    #[test]
    fn a_job_that_cannot_be_read_is_failed_not_run_with_stand_ins() {
        let dir = tempfile::tempdir().unwrap();
        let q = Queue::open(&dir.path().join("db.sqlite")).unwrap();
        let opts = Settings::default().job_options();
        let a = q.enqueue(&JobSource::File { path: "/a.wav".into() }, "A", &opts).unwrap();
        q.conn().execute("UPDATE jobs SET options = '{\"device\":\"quantum\"}' WHERE id = ?1", [a.id]).unwrap();
        match q.broker_claim(a.id, "1-0", "w1", 3, |_| false).unwrap() {
            Claim::GaveUp(job) => {
                assert!(matches!(job.state, JobState::Failed { message, .. } if message.contains("cannot be read")));
            }
            other => panic!("{other:?}"),
        }
        // Its state unreadable (a newer server wrote it, or damage), queued
        // or held by a worker that died: failed too, not refused as its
        // failed stand-in while the row stays queued or running for good.
        for status in ["queued", "running"] {
            let b = q.enqueue(&JobSource::File { path: "/b.wav".into() }, "B", &opts).unwrap();
            if status == "running" {
                assert!(matches!(q.broker_claim(b.id, "2-0", "w1", 3, |_| false).unwrap(), Claim::Granted { .. }));
            }
            q.conn().execute("UPDATE jobs SET state = '{bad' WHERE id = ?1", [b.id]).unwrap();
            match q.broker_claim(b.id, "2-0", "w2", 3, |_| false).unwrap() {
                Claim::GaveUp(job) => assert!(matches!(job.state, JobState::Failed { .. }), "{status}"),
                other => panic!("{status}: {other:?}"),
            }
            let column: String =
                q.conn().query_row("SELECT status FROM jobs WHERE id = ?1", [b.id], |r| r.get(0)).unwrap();
            assert_eq!(column, "failed", "{status}");
        }
        // A column of the wrong type (a title that is a blob): no stand-in
        // reads it, and it fails too instead of an error at every delivery.
        let c = q.enqueue(&JobSource::File { path: "/c.wav".into() }, "C", &opts).unwrap();
        q.conn().execute("UPDATE jobs SET title = X'FF00' WHERE id = ?1", [c.id]).unwrap();
        match q.broker_claim(c.id, "3-0", "w1", 3, |_| false) {
            Ok(Claim::Refused(why)) => assert!(why.contains("cannot be read"), "{why}"),
            other => panic!("{other:?}"),
        }
        let column: String = q.conn().query_row("SELECT status FROM jobs WHERE id = ?1", [c.id], |r| r.get(0)).unwrap();
        assert_eq!(column, "failed");
        assert!(matches!(q.broker_claim(c.id, "3-0", "w1", 3, |_| false), Ok(Claim::Refused(_))), "and stays so");
    }

    #[test]
    fn claims_publish_takeover_release_and_give_up() {
        let dir = tempfile::tempdir().unwrap();
        let q = Queue::open(&dir.path().join("db.sqlite")).unwrap();
        let opts = Settings::default().job_options();
        let a = q.enqueue(&JobSource::File { path: "/a.wav".into() }, "A", &opts).unwrap();
        let b = q.enqueue(&JobSource::File { path: "/b.wav".into() }, "B", &opts).unwrap();
        assert_eq!(q.unpublished().unwrap(), vec![a.id, b.id]);
        q.mark_published(a.id).unwrap();
        assert_eq!(q.unpublished().unwrap(), vec![b.id]);

        // First claim wins; a second entry for the same job is refused.
        let Claim::Granted { attempt: 1, takeover: false, .. } =
            q.broker_claim(a.id, "1-0", "w1", 3, |_| false).unwrap()
        else {
            panic!("granted")
        };
        assert!(matches!(q.broker_claim(a.id, "2-0", "w2", 3, |_| false).unwrap(), Claim::Refused(_)));
        assert_eq!(q.broker_holder(a.id).unwrap(), Some(("1-0".into(), "w1".into())));
        assert_eq!(q.broker_worker(a.id).unwrap().as_deref(), Some("w1"));
        assert_eq!(q.broker_worker(b.id).unwrap(), None);
        // w1 is still heard from (Redis was out of its reach, so its entry
        // went idle): w2's takeover is refused and changes nothing.
        let mut asked = Vec::new();
        let held = q.broker_claim(a.id, "1-0", "w2", 3, |h| {
            asked.push(h.to_string());
            true
        });
        assert!(matches!(held.unwrap(), Claim::HolderAlive(m) if m.contains("w1")));
        assert_eq!(asked, ["w1"], "the holder is the one asked about");
        // Its own name too (its earlier completion still being filed).
        let mut asked = Vec::new();
        let own = q.broker_claim(a.id, "1-0", "w1", 3, |h| {
            asked.push(h.to_string());
            true
        });
        assert!(matches!(own.unwrap(), Claim::HolderAlive(_)));
        assert_eq!(asked, ["w1"]);
        assert_eq!(q.broker_holder(a.id).unwrap(), Some(("1-0".into(), "w1".into())));
        // w1 went silent: w2 claims the same entry and takes over.
        let Claim::Granted { attempt: 2, takeover: true, .. } =
            q.broker_claim(a.id, "1-0", "w2", 3, |_| false).unwrap()
        else {
            panic!("takeover")
        };
        // A release by someone who does not hold it is refused; by the holder it requeues.
        assert!(q.broker_release(a.id, "9-9", "w1", Some("x")).is_err());
        // Nor by the worker it was taken over from (through the same entry).
        assert!(q.broker_release(a.id, "1-0", "w1", Some("stalled")).is_err());
        assert_eq!(q.broker_holder(a.id).unwrap(), Some(("1-0".into(), "w2".into())));
        assert_eq!(q.broker_release(a.id, "1-0", "w2", Some("CUDA out of memory")).unwrap().state, JobState::Queued);
        assert_eq!(q.unpublished().unwrap(), vec![a.id, b.id]);
        // Workers that stop on purpose (deploys) do not use up the attempts.
        for n in 0..5 {
            let Claim::Granted { attempt: 3, .. } =
                q.broker_claim(a.id, &format!("s{n}-0"), "w3", 3, |_| false).unwrap()
            else {
                panic!("a stopped worker's claim is not counted")
            };
            assert_eq!(q.broker_release(a.id, &format!("s{n}-0"), "w3", None).unwrap().state, JobState::Queued);
        }
        let Claim::Granted { attempt: 3, .. } = q.broker_claim(a.id, "3-0", "w1", 3, |_| false).unwrap() else {
            panic!()
        };
        // The next claim would be the fourth: the job fails with the last error.
        let Claim::GaveUp(job) = q.broker_claim(a.id, "3-0", "w2", 3, |_| false).unwrap() else { panic!("gave up") };
        match job.state {
            JobState::Failed { message, .. } => assert!(message.contains("CUDA out of memory"), "{message}"),
            s => panic!("{s:?}"),
        }
        assert!(matches!(q.broker_claim(a.id, "3-0", "w2", 3, |_| false).unwrap(), Claim::Refused(_)), "finished");
        // Retried by the person: published again and claimed from zero.
        let job = q.retry(a.id).unwrap();
        assert_eq!(job.state, JobState::Queued);
        assert!(q.unpublished().unwrap().contains(&a.id), "a retried job goes on the stream again");
        let Claim::Granted { attempt: 1, .. } = q.broker_claim(a.id, "4-0", "w1", 3, |_| false).unwrap() else {
            panic!("a retried job starts its claims again")
        };
        // Republish after a broker restart: only queued jobs.
        q.mark_published(b.id).unwrap();
        assert_eq!(q.republish_queued().unwrap(), 1);
        assert_eq!(q.unpublished().unwrap(), vec![b.id]);
    }

    /// A result that comes after its job was cancelled, retried and claimed
    /// again (or taken over) does not end the run that holds it now.
    #[test]
    fn only_the_holder_finishes_a_job() {
        let dir = tempfile::tempdir().unwrap();
        let q = Queue::open(&dir.path().join("db.sqlite")).unwrap();
        let opts = Settings::default().job_options();
        let a = q.enqueue(&JobSource::File { path: "/a.wav".into() }, "A", &opts).unwrap();
        assert!(matches!(q.broker_claim(a.id, "1-0", "w1", 3, |_| false).unwrap(), Claim::Granted { .. }));
        // Cancelled while w1 files its stems, retried, claimed by w2.
        q.finish(a.id, &JobState::Cancelled, None, &[]).unwrap();
        q.retry(a.id).unwrap();
        assert!(matches!(q.broker_claim(a.id, "2-0", "w2", 3, |_| false).unwrap(), Claim::Granted { .. }));
        let late = q.broker_finish(a.id, "1-0", "w1", &JobState::Done, Some("/lib/A"), &[]);
        assert!(matches!(late, Err(QueueError::NotFound(_))), "{late:?}");
        assert!(q.get(a.id).unwrap().state.is_running(), "w2's run goes on");
        // Taken over through the same entry: the silent worker's result is not taken either.
        assert!(matches!(
            q.broker_claim(a.id, "2-0", "w3", 3, |_| false).unwrap(),
            Claim::Granted { takeover: true, .. }
        ));
        assert!(q.broker_finish(a.id, "2-0", "w2", &JobState::Done, Some("/lib/A"), &[]).is_err());
        let done = q.broker_finish(a.id, "2-0", "w3", &JobState::Done, Some("/lib/A"), &[]).unwrap();
        assert_eq!((done.state, done.output_dir.as_deref()), (JobState::Done, Some("/lib/A")));
    }

    #[test]
    fn jobs_running_without_a_broker_holder_go_back_to_the_queue() {
        let dir = tempfile::tempdir().unwrap();
        let q = Queue::open(&dir.path().join("db.sqlite")).unwrap();
        let lock = crate::lock::InstanceLock::acquire(dir.path()).unwrap().unwrap();
        let opts = Settings::default().job_options();
        let local = q.enqueue(&JobSource::File { path: "/a.wav".into() }, "A", &opts).unwrap();
        let held = q.enqueue(&JobSource::File { path: "/b.wav".into() }, "B", &opts).unwrap();
        let waiting = q.enqueue(&JobSource::File { path: "/c.wav".into() }, "C", &opts).unwrap();
        // A local run claimed A and died; a broker worker holds B.
        assert_eq!(q.claim_next().unwrap().unwrap().id, local.id);
        q.mark_published(held.id).unwrap();
        assert!(matches!(q.broker_claim(held.id, "5-0", "w1", 3, |_| false).unwrap(), Claim::Granted { .. }));
        assert_eq!(
            q.broker_running().unwrap(),
            vec![(local.id, None), (held.id, Some(("5-0".to_string(), "w1".to_string())))]
        );
        let other = tempfile::tempdir().unwrap();
        let not_owner = crate::lock::InstanceLock::acquire(other.path()).unwrap().unwrap();
        assert!(matches!(q.broker_recover_unheld(&not_owner), Err(QueueError::NotOwner { .. })));
        assert_eq!(q.broker_recover_unheld(&lock).unwrap(), 1);
        assert_eq!(q.get(local.id).unwrap().state, JobState::Queued);
        assert!(q.get(held.id).unwrap().state.is_running(), "a held job stays with its worker");
        assert_eq!(q.unpublished().unwrap(), vec![local.id, waiting.id], "A is published again");
        assert_eq!(q.broker_recover_unheld(&lock).unwrap(), 0);
    }
}

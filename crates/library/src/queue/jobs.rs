//! A job's life in the queue: enqueue, claim, progress, finish, cancel,
//! retry, remove, reorder.

use rusqlite::{params, OptionalExtension, TransactionBehavior};

use super::schema::{fail_damaged, job_in, job_in_checked, jobs_where, json, next_position, unreadable_row};
use super::{Job, JobId, JobOptions, JobSource, JobState, Queue, QueueError, StemFile, UnixMillis};

/// The newest job of a source (`?1`, as JSON) that is queued, running or
/// in the library.
const LIVE_OF_SOURCE: &str = "WHERE source = ?1 AND status IN ('queued', 'running', 'done') ORDER BY id DESC LIMIT 1";

impl Queue {
    /// Add a job at the end of the queue.
    ///
    /// # Errors
    /// Database errors.
    pub fn enqueue(&self, source: &JobSource, title: &str, options: &JobOptions) -> Result<Job, QueueError> {
        self.enqueue_with(source, title, options, None).map(|(job, _)| job)
    }

    /// [`Queue::enqueue`], unless `source` has a live job (the newest one
    /// queued, running or in the library: what adding the same file or link
    /// again would duplicate; a failed or cancelled one does not count):
    /// then that job, with `false`. Checked and
    /// added in one transaction, so two adds of one file at once (two
    /// drops, a drop and a second start's "Open with") add it once.
    ///
    /// # Errors
    /// Database errors.
    pub fn enqueue_unless_live(
        &self,
        source: &JobSource,
        title: &str,
        options: &JobOptions,
    ) -> Result<(Job, bool), QueueError> {
        self.enqueue_with(source, title, options, Some(None))
    }

    /// [`Queue::enqueue_unless_live`] for a file last modified at
    /// `modified_ms` (ms since the Unix epoch): a song in the library made
    /// before the file changed (modified after its job started, or was
    /// created where it never started, by more than the 2 s of a FAT file
    /// system's clock: a mix exported again under its name) is another
    /// song, and does not count.
    /// In the same one transaction, so two adds of a changed file at once
    /// add it once.
    ///
    /// # Errors
    /// Database errors.
    pub fn enqueue_unless_live_since(
        &self,
        source: &JobSource,
        title: &str,
        options: &JobOptions,
        modified_ms: Option<f64>,
    ) -> Result<(Job, bool), QueueError> {
        self.enqueue_with(source, title, options, Some(modified_ms))
    }

    /// The live job of `source` (the newest one queued, running or in the
    /// library, as in [`Queue::enqueue_unless_live`]), if any: asked before
    /// a link is probed, which takes seconds.
    ///
    /// # Errors
    /// Database errors.
    pub fn live_of(&self, source: &JobSource) -> Result<Option<Job>, QueueError> {
        Ok(jobs_where(&self.conn(), LIVE_OF_SOURCE, &[&json(source)?])?.into_iter().next())
    }

    /// `unless_live`: `None` adds in any case; `Some(modified_ms)` adds
    /// unless `source` has a live job (one done before `modified_ms`, as
    /// [`Queue::enqueue_unless_live_since`] says, does not count).
    fn enqueue_with(
        &self,
        source: &JobSource,
        title: &str,
        options: &JobOptions,
        unless_live: Option<Option<f64>>,
    ) -> Result<(Job, bool), QueueError> {
        let mut conn = self.conn();
        let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
        if let Some(modified_ms) = unless_live {
            let live = jobs_where(&tx, LIVE_OF_SOURCE, &[&json(source)?])?;
            if let Some(existing) = live.into_iter().next() {
                let made_before_the_change = existing.state == JobState::Done
                    && modified_ms.is_some_and(|m| m > existing.started_at.unwrap_or(existing.created_at) + 2000.0);
                if !made_before_the_change {
                    return Ok((existing, false));
                }
            }
        }
        let position = next_position(&tx)?;
        tx.execute(
            "INSERT INTO jobs (source, title, options, state, status, position, created_ms)
             VALUES (?1, ?2, ?3, ?4, 'queued', ?5, ?6)",
            params![json(source)?, title, json(options)?, json(&JobState::Queued)?, position, self.now()],
        )?;
        let id =
            u32::try_from(tx.last_insert_rowid()).map_err(|_| QueueError::Corrupt("job id out of range".into()))?;
        let job = job_in(&tx, id)?;
        tx.commit()?;
        Ok((job, true))
    }

    /// Job `id`'s status as its row records it (`queued`, `running`,
    /// `done`, `failed`, `cancelled`): what claims and removals go by, even
    /// when its state cannot be read (shown as failed).
    ///
    /// # Errors
    /// [`QueueError::NotFound`]; database errors.
    pub fn stored_status(&self, id: JobId) -> Result<String, QueueError> {
        self.conn()
            .query_row("SELECT status FROM jobs WHERE id = ?1", [id], |r| r.get(0))
            .optional()?
            .ok_or(QueueError::NotFound(id))
    }

    /// One job.
    ///
    /// # Errors
    /// [`QueueError::NotFound`], database errors.
    pub fn get(&self, id: JobId) -> Result<Job, QueueError> {
        job_in(&self.conn(), id)
    }

    /// Jobs not in the library: running and queued first (queue order), then
    /// failed and cancelled ones, newest first.
    ///
    /// # Errors
    /// Database errors.
    pub fn queue(&self) -> Result<Vec<Job>, QueueError> {
        jobs_where(
            &self.conn(),
            "WHERE status != 'done' ORDER BY CASE status WHEN 'running' THEN 0 WHEN 'queued' THEN 1 ELSE 2 END,
             CASE WHEN status IN ('running', 'queued') THEN position ELSE -finished_ms END, id",
            &[],
        )
    }

    /// Finished songs, newest first, whose title or album contains `search`
    /// (case-insensitive; empty matches all).
    ///
    /// # Errors
    /// Database errors.
    pub fn library(&self, search: &str) -> Result<Vec<Job>, QueueError> {
        let all = jobs_where(&self.conn(), "WHERE status = 'done' ORDER BY finished_ms DESC, id DESC", &[])?;
        let key = search_key(search.trim());
        if key.is_empty() {
            return Ok(all);
        }
        let matches = |j: &Job| {
            search_key(&j.title).contains(&key) || j.album.as_deref().is_some_and(|a| search_key(a).contains(&key))
        };
        Ok(all.into_iter().filter(matches).collect())
    }

    /// Take the first queued job and mark it [`JobState::Decoding`]. Atomic:
    /// two workers never get the same job.
    ///
    /// # Errors
    /// Database errors.
    ///
    /// A queued job whose record cannot be read in full (a newer Stemroom
    /// wrote it, or it is damaged) is marked failed, saying so, and the
    /// next one is taken: it can be removed, and the queue goes on.
    ///
    /// A job the process died running (its `interruptions` above 0, see
    /// [`Queue::recover`]) runs alone: nothing is claimed while it runs,
    /// and it waits for the running jobs to end. Another crash is then
    /// counted against it only, not against the jobs beside it (which
    /// [`MAX_INTERRUPTIONS`](super::MAX_INTERRUPTIONS) crashes would fail
    /// with it).
    pub fn claim_next(&self) -> Result<Option<Job>, QueueError> {
        let mut conn = self.conn();
        let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
        let (running, suspect_running): (i64, bool) = tx.query_row(
            "SELECT COUNT(*), COALESCE(MAX(interruptions > 0), 0) FROM jobs WHERE status = 'running'",
            [],
            |r| Ok((r.get(0)?, r.get(1)?)),
        )?;
        if suspect_running {
            tx.commit()?;
            return Ok(None);
        }
        loop {
            let next: Option<(i64, i64)> = tx
                .query_row(
                    "SELECT id, interruptions FROM jobs WHERE status = 'queued' ORDER BY position, id LIMIT 1",
                    [],
                    |r| Ok((r.get(0)?, r.get(1)?)),
                )
                .optional()?;
            let Some((id, interruptions)) = next else {
                tx.commit()?;
                return Ok(None);
            };
            if interruptions > 0 && running > 0 {
                tx.commit()?;
                return Ok(None);
            }
            let Ok(job_id) = JobId::try_from(id) else {
                fail_damaged(&tx, id, "its id is out of range", self.now())?;
                continue;
            };
            // A row that cannot be read at all (a column of the wrong
            // type) is as damaged as one with unreadable JSON.
            let damage = match job_in_checked(&tx, job_id) {
                Ok((_, damage)) => damage,
                Err(QueueError::Sql(e)) if unreadable_row(&e) => Some(e.to_string()),
                Err(e) => return Err(e),
            };
            if let Some(damage) = damage {
                fail_damaged(&tx, id, &damage, self.now())?;
                continue;
            }
            tx.execute(
                "UPDATE jobs SET status = 'running', state = ?1, started_ms = ?2, finished_ms = NULL,
                 cancel_requested = 0 WHERE id = ?3",
                params![json(&JobState::Decoding)?, self.now(), id],
            )?;
            let job = job_in(&tx, job_id)?;
            tx.commit()?;
            return Ok(Some(job));
        }
    }

    /// Record progress of a running job. Ignored (returns false) when the job
    /// is no longer running, e.g. it was removed meanwhile.
    ///
    /// # Errors
    /// Database errors.
    pub fn set_running_state(&self, id: JobId, state: &JobState) -> Result<bool, QueueError> {
        debug_assert!(state.is_running());
        let conn = self.conn();
        // A segment further than any run of the job reached before: it gets
        // somewhere, so the crashes before were not in a row (see
        // `Queue::recover`). A run that resumes from a checkpoint and dies
        // at the same place again (a crash at one segment, or after the
        // last, while encoding or publishing) redoes segments without
        // passing that mark, and its crash counts.
        if let JobState::Separating { segment, .. } = state {
            conn.execute(
                "UPDATE jobs SET interruptions = CASE WHEN ?2 > reached THEN 0 ELSE interruptions END,
                 reached = MAX(reached, ?2) WHERE id = ?1 AND status = 'running'",
                params![id, segment],
            )?;
        }
        let n =
            conn.execute("UPDATE jobs SET state = ?1 WHERE id = ?2 AND status = 'running'", params![json(state)?, id])?;
        Ok(n == 1)
    }

    /// Record the album a file's tags name.
    ///
    /// # Errors
    /// Database errors.
    pub fn set_album(&self, id: JobId, album: &str) -> Result<(), QueueError> {
        self.conn().execute("UPDATE jobs SET album = ?1 WHERE id = ?2", params![album, id])?;
        Ok(())
    }

    /// Set the options of running job `id`: the worker found its song
    /// already separated with these (see `Queue::retry`), and files it.
    ///
    /// # Errors
    /// [`QueueError::NotFound`]; database errors.
    pub fn set_options(&self, id: JobId, options: &JobOptions) -> Result<(), QueueError> {
        let changed = self.conn().execute("UPDATE jobs SET options = ?1 WHERE id = ?2", params![json(options)?, id])?;
        if changed == 0 {
            return Err(QueueError::NotFound(id));
        }
        Ok(())
    }

    /// Mark a job as added by a client of the HTTP service (jobs are the
    /// app's until marked; see [`Queue::api_finished_before`]).
    ///
    /// # Errors
    /// Database errors.
    pub fn mark_from_api(&self, id: JobId) -> Result<(), QueueError> {
        self.mark_all_from_api(&[id])
    }

    /// [`Queue::mark_from_api`] for many jobs, in one transaction.
    ///
    /// # Errors
    /// Database errors (then none is marked).
    pub fn mark_all_from_api(&self, ids: &[JobId]) -> Result<(), QueueError> {
        let mut conn = self.conn();
        let tx = conn.transaction()?;
        for id in ids {
            tx.execute("UPDATE jobs SET origin = 'api' WHERE id = ?1", params![id])?;
        }
        tx.commit()?;
        Ok(())
    }

    /// Whether job `id` was added by a client of the HTTP service
    /// ([`Queue::mark_from_api`]); false for a job that is gone.
    ///
    /// # Errors
    /// Database errors.
    pub fn is_from_api(&self, id: JobId) -> Result<bool, QueueError> {
        let origin: Option<String> =
            self.conn().query_row("SELECT origin FROM jobs WHERE id = ?1", params![id], |r| r.get(0)).optional()?;
        Ok(origin.as_deref() == Some("api"))
    }

    /// Record a finished song's tempo and key.
    ///
    /// # Errors
    /// Database errors.
    pub fn set_analysis(
        &self,
        id: JobId,
        analysis: &stemroom_engine::analysis::SongAnalysis,
    ) -> Result<(), QueueError> {
        self.conn()
            .execute("UPDATE jobs SET analysis = ?1 WHERE id = ?2", params![super::schema::json(analysis)?, id])?;
        Ok(())
    }

    /// Record what a link's metadata says (uploader, thumbnail URL).
    ///
    /// # Errors
    /// Database errors.
    pub fn set_link_details(
        &self,
        id: JobId,
        uploader: Option<&str>,
        thumbnail: Option<&str>,
    ) -> Result<(), QueueError> {
        self.conn()
            .execute("UPDATE jobs SET uploader = ?1, thumbnail = ?2 WHERE id = ?3", params![uploader, thumbnail, id])?;
        Ok(())
    }

    /// Replace a job's display title (a link's title once its metadata is read).
    ///
    /// # Errors
    /// Database errors.
    pub fn set_title(&self, id: JobId, title: &str) -> Result<(), QueueError> {
        self.conn().execute("UPDATE jobs SET title = ?1 WHERE id = ?2", params![title, id])?;
        Ok(())
    }

    pub fn set_details(
        &self,
        id: JobId,
        duration_seconds: Option<f64>,
        provider: Option<&str>,
    ) -> Result<(), QueueError> {
        self.conn().execute(
            "UPDATE jobs SET duration_seconds = COALESCE(?1, duration_seconds), provider = COALESCE(?2, provider) WHERE id = ?3",
            params![duration_seconds, provider, id],
        )?;
        Ok(())
    }

    /// Move a running job to a finished state (only a running job: a job
    /// removed meanwhile, or already finished, is not touched).
    ///
    /// # Errors
    /// [`QueueError::NotFound`] when no running job has this id; database errors.
    pub fn finish(
        &self,
        id: JobId,
        state: &JobState,
        output_dir: Option<&str>,
        stems: &[StemFile],
    ) -> Result<Job, QueueError> {
        debug_assert!(state.is_finished());
        self.update_running(
            id,
            "UPDATE jobs SET status = ?1, state = ?2, finished_ms = ?3, output_dir = ?4, stems = ?5
             WHERE id = ?6 AND status = 'running'",
            params![state.status(), json(state)?, self.now(), output_dir, json(&stems)?, id],
        )
    }

    /// Run `sql` (an UPDATE of job `id` limited to `status = 'running'`)
    /// and return the job as it is after.
    ///
    /// # Errors
    /// [`QueueError::NotFound`] when no running job has this id; database errors.
    pub(super) fn update_running(&self, id: JobId, sql: &str, args: impl rusqlite::Params) -> Result<Job, QueueError> {
        let mut conn = self.conn();
        let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
        if tx.execute(sql, args)? == 0 {
            return Err(QueueError::NotFound(id));
        }
        let job = job_in(&tx, id)?;
        tx.commit()?;
        Ok(job)
    }

    /// Put a running job back in the queue at its old position, as if it had
    /// not started (a server stopping gracefully; its checkpoint, if any,
    /// lets it resume). Only a running job is touched.
    ///
    /// # Errors
    /// [`QueueError::NotFound`] when no running job has this id; database errors.
    pub fn requeue(&self, id: JobId) -> Result<Job, QueueError> {
        self.update_running(
            id,
            // A quit between crashes: they were not in a row.
            "UPDATE jobs SET status = 'queued', state = ?1, started_ms = NULL, interruptions = 0
             WHERE id = ?2 AND status = 'running'",
            params![json(&JobState::Queued)?, id],
        )
    }

    /// Every job, newest first: `limit` of them after skipping `offset`,
    /// with the total count.
    ///
    /// # Errors
    /// Database errors.
    pub fn page(&self, offset: u32, limit: u32) -> Result<(Vec<Job>, u32), QueueError> {
        let conn = self.conn();
        let total: i64 = conn.query_row("SELECT COUNT(*) FROM jobs", [], |r| r.get(0))?;
        let jobs = jobs_where(&conn, "ORDER BY id DESC LIMIT ?1 OFFSET ?2", &[&i64::from(limit), &i64::from(offset)])?;
        Ok((jobs, u32::try_from(total).unwrap_or(u32::MAX)))
    }

    /// Finished jobs (done, failed, cancelled) that clients of the HTTP
    /// service added ([`Queue::mark_from_api`]) and that finished before
    /// `before` (milliseconds since the Unix epoch), oldest first: what the
    /// server's retention removes. The app's own songs never expire.
    ///
    /// # Errors
    /// Database errors.
    pub fn api_finished_before(&self, before: UnixMillis) -> Result<Vec<Job>, QueueError> {
        jobs_where(
            &self.conn(),
            "WHERE status IN ('done', 'failed', 'cancelled') AND finished_ms < ?1 AND origin = 'api'
             ORDER BY finished_ms, id",
            &[&before],
        )
    }

    /// Cancel a queued job (running jobs are cancelled through their worker).
    ///
    /// # Errors
    /// [`QueueError::WrongState`] unless queued; [`QueueError::NotFound`].
    pub fn cancel_queued(&self, id: JobId) -> Result<Job, QueueError> {
        self.transition(id, &["queued"], "cancelling", |tx, now| {
            tx.execute(
                "UPDATE jobs SET status = 'cancelled', state = ?1, finished_ms = ?2 WHERE id = ?3",
                params![json(&JobState::Cancelled)?, now, id],
            )?;
            Ok(())
        })
    }

    /// Put a failed or cancelled job back at the end of the queue, to run
    /// with the current settings (model, device, shifts, overlap, format: a
    /// person who changed a setting after a failure retries with it); the
    /// job's two-stem choice is kept. A job whose separation was whole and
    /// only its filing failed is filed as it was made, whatever the
    /// settings now (the worker finds its stems and takes their options).
    ///
    /// # Errors
    /// [`QueueError::WrongState`] unless failed or cancelled; [`QueueError::NotFound`].
    pub fn retry(&self, id: JobId) -> Result<Job, QueueError> {
        let current = self.settings()?.job_options();
        self.transition(id, &["failed", "cancelled"], "retrying", |tx, _| {
            let position = next_position(tx)?;
            let two_stems = job_in(tx, id)?.options.two_stems;
            let options = JobOptions { two_stems, ..current.clone() };
            tx.execute(
                "UPDATE jobs SET status = 'queued', state = ?1, position = ?2, options = ?3, started_ms = NULL, finished_ms = NULL,
                 interruptions = 0, reached = -1 WHERE id = ?4",
                params![json(&JobState::Queued)?, position, json(&options)?, id],
            )?;
            // A new start on a broker too: published again, its claims
            // counted from zero (a job that gave up would give up at once).
            tx.execute("DELETE FROM broker WHERE job_id = ?1", [id])?;
            Ok(())
        })
    }

    /// Delete a job that is not running. Its files are not touched here
    /// (see [`crate::song::remove_song`]).
    ///
    /// # Errors
    /// [`QueueError::WrongState`] while running; [`QueueError::NotFound`].
    pub fn remove(&self, id: JobId) -> Result<Job, QueueError> {
        let mut removed = None;
        self.transition(id, &["queued", "done", "failed", "cancelled"], "removing", |tx, _| {
            removed = Some(job_in(tx, id)?);
            tx.execute("DELETE FROM jobs WHERE id = ?1", [id])?;
            tx.execute("DELETE FROM broker WHERE job_id = ?1", [id])?;
            Ok(())
        })
        .or_else(|e| match (e, removed.take()) {
            (QueueError::NotFound(_), Some(job)) => Ok(job),
            (e, _) => Err(e),
        })
        .inspect(|_| crate::link::thumbnail::remove(self.path(), id))
    }

    /// Reorder the queued jobs: `ids` lists queued jobs in their new order;
    /// queued jobs not listed keep their relative order after them. A job
    /// listed that has left the queue since the caller saw it (a worker
    /// took the first one meanwhile, it was cancelled, or it was deleted:
    /// through the HTTP service, by retention) is passed over: the others
    /// still take the order asked for.
    ///
    /// # Errors
    /// Database errors.
    pub fn reorder(&self, ids: &[JobId]) -> Result<Vec<Job>, QueueError> {
        let mut conn = self.conn();
        let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
        let queued: Vec<i64> = {
            let mut stmt = tx.prepare("SELECT id FROM jobs WHERE status = 'queued' ORDER BY position, id")?;
            let rows = stmt.query_map([], |r| r.get(0))?.collect::<Result<Vec<i64>, _>>()?;
            rows
        };
        // In sets: a caller's list of a million ids (the window is not
        // trusted) must not hold the database's write lock for seconds.
        let mut waiting: std::collections::HashSet<i64> = queued.iter().copied().collect();
        let mut order: Vec<i64> = Vec::with_capacity(queued.len());
        for &id in ids {
            if waiting.remove(&(id as i64)) {
                order.push(id as i64);
            }
            if waiting.is_empty() {
                break;
            }
        }
        order.extend(queued.iter().filter(|q| waiting.contains(q)));
        // New positions start after every existing one so they stay unique.
        let base = next_position(&tx)?;
        for (i, id) in order.iter().enumerate() {
            tx.execute("UPDATE jobs SET position = ?1 WHERE id = ?2", params![base + i as i64, id])?;
        }
        tx.commit()?;
        drop(conn);
        self.queue()
    }

    fn transition(
        &self,
        id: JobId,
        allowed: &[&str],
        action: &'static str,
        f: impl FnOnce(&rusqlite::Transaction<'_>, UnixMillis) -> Result<(), QueueError>,
    ) -> Result<Job, QueueError> {
        let mut conn = self.conn();
        let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
        let job = job_in(&tx, id)?;
        // The `status` column decides, as the worker's claims do: a row
        // whose `state` cannot be read shows as failed, and a running one
        // must not be retried or removed under its worker for that.
        let column: String = tx.query_row("SELECT status FROM jobs WHERE id = ?1", [id], |r| r.get(0))?;
        if column == "running" && !allowed.contains(&"running") {
            return Err(QueueError::WrongState { id, status: "running", action });
        }
        // (Otherwise as shown: a done or queued row whose state cannot be
        // read shows as failed, and Retry is how it is mended.)
        let status = job.state.status();
        if !allowed.contains(&status) {
            return Err(QueueError::WrongState { id, status, action });
        }
        f(&tx, self.now())?;
        let after = job_in(&tx, id);
        tx.commit()?;
        after
    }
}

/// `text` as library search compares it: lower case, accents and other
/// combining marks removed after canonical decomposition (Unicode NFD), so
/// "beyonce" finds "Beyoncé" and "SIGUR ROS" finds "Sigur Rós".
pub fn search_key(text: &str) -> String {
    use unicode_normalization::char::is_combining_mark;
    use unicode_normalization::UnicodeNormalization;
    text.nfd().filter(|c| !is_combining_mark(*c)).collect::<String>().to_lowercase()
}

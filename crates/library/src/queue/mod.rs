//! The persistent job queue and library: one SQLite database (rusqlite) in
//! the app's data directory.
//!
//! A [`Job`] records where a song comes from, how to separate it, where it
//! is in its life ([`JobState`]), its timings and where its stems went.
//! Queued jobs run in `position` order; finished jobs form the library.
//!
//! Durability: every change is one SQLite transaction in WAL mode with
//! `synchronous=FULL`, so a crash (even `SIGKILL` in the middle of an update)
//! leaves either the old or the new row, never a torn one. Several processes
//! or threads may open the same file; writers serialise on SQLite's lock
//! (`BEGIN IMMEDIATE`, 5 s busy timeout). Opening the queue leaves running
//! jobs alone (another process may be running them): only the process that
//! owns the data folder, proven by its [`InstanceLock`], puts the jobs a dead
//! process left running back in the queue ([`Queue::recover`]).
//!
//! Schema changes are numbered migrations tracked in `PRAGMA user_version`
//! ([`schema`]). Jobs and their life ([`job`], `jobs`), settings
//! ([`settings`]) and measured segment times (`timings`) each have a file.

pub mod broker;
pub mod job;
mod jobs;
mod recovery;
pub mod schema;
pub mod settings;
mod timings;

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use rusqlite::{params, Connection, TransactionBehavior};

use crate::lock::InstanceLock;
use stemroom_engine::ErrorCode;

pub use job::{Job, JobId, JobOptions, JobSource, JobState, UnixMillis};
pub use recovery::Recovery;
pub use schema::MIGRATIONS;
pub use settings::{default_format, Settings};
pub use stemroom_engine::job::StemFile;

use schema::json;

/// A source of the current time in [`UnixMillis`]; tests pass a fake one.
pub type Clock = Arc<dyn Fn() -> UnixMillis + Send + Sync>;

/// The system clock.
pub fn system_clock() -> Clock {
    Arc::new(|| unix_millis(std::time::SystemTime::now()).unwrap_or(0.0))
}

/// `t` in [`UnixMillis`]; `None` before 1970.
pub fn unix_millis(t: std::time::SystemTime) -> Option<UnixMillis> {
    t.duration_since(std::time::UNIX_EPOCH).ok().map(|d| d.as_millis() as f64)
}

/// When the file at `path` was last modified, in [`UnixMillis`]; `None`
/// when that cannot be read.
pub fn modified_millis(path: &Path) -> Option<UnixMillis> {
    std::fs::metadata(path).and_then(|m| m.modified()).ok().and_then(unix_millis)
}

/// Errors of the queue database.
#[derive(Debug, thiserror::Error)]
pub enum QueueError {
    #[error("cannot open the job database {path}: {source}")]
    Open {
        path: PathBuf,
        #[source]
        source: rusqlite::Error,
    },
    #[error("job database error: {0}")]
    Sql(#[from] rusqlite::Error),
    #[error("job database holds unreadable data: {0}")]
    Corrupt(String),
    #[error("the job database was written by a newer Stemroom (schema {found}, this build knows {known})")]
    TooNew { found: i64, known: i64 },
    #[error("no job with id {0}")]
    NotFound(JobId),
    #[error("job {id} is {status}; {action} is not possible now")]
    WrongState { id: JobId, status: &'static str, action: &'static str },
    #[error("invalid settings: {0}")]
    InvalidSettings(String),
    #[error("the instance lock of {lock} does not own the job database {database}")]
    NotOwner { lock: PathBuf, database: PathBuf },
}

impl QueueError {
    /// The stable code front ends branch on.
    pub fn code(&self) -> ErrorCode {
        match self {
            QueueError::NotFound(_) | QueueError::WrongState { .. } | QueueError::InvalidSettings(_) => {
                ErrorCode::InvalidOptions
            }
            _ => ErrorCode::Internal,
        }
    }
}

/// The job queue and library database. Cheap to share behind an `Arc`;
/// every method takes `&self` and is one transaction.
pub struct Queue {
    conn: Mutex<Connection>,
    clock: Clock,
    path: PathBuf,
    /// This database's own tag in its jobs' working folders (see
    /// [`Queue::work_tag`]).
    work_tag: String,
}

impl std::fmt::Debug for Queue {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Queue").field("path", &self.path).finish()
    }
}

impl Queue {
    /// Open (creating if needed) the database at `path` with the system clock
    /// and migrate it. Jobs marked running stay so (see [`Queue::recover`]).
    ///
    /// # Errors
    /// [`QueueError::Open`] when the file cannot be opened or is not SQLite,
    /// [`QueueError::TooNew`] for a database from a newer build.
    pub fn open(path: &Path) -> Result<Self, QueueError> {
        Self::open_with_clock(path, system_clock())
    }

    /// As [`Queue::open`] with an explicit clock.
    ///
    /// # Errors
    /// As [`Queue::open`].
    pub fn open_with_clock(path: &Path, clock: Clock) -> Result<Self, QueueError> {
        if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
            std::fs::create_dir_all(dir).map_err(|e| QueueError::Open {
                path: path.to_path_buf(),
                source: rusqlite::Error::ToSqlConversionFailure(Box::new(e)),
            })?;
        }
        let open_err = |source| QueueError::Open { path: path.to_path_buf(), source };
        let mut conn = Connection::open(path).map_err(open_err)?;
        conn.busy_timeout(Duration::from_secs(5)).map_err(open_err)?;
        conn.pragma_update(None, "journal_mode", "WAL").map_err(open_err)?;
        conn.pragma_update(None, "synchronous", "FULL").map_err(open_err)?;
        conn.pragma_update(None, "foreign_keys", "ON").map_err(open_err)?;
        Self::migrate(&mut conn).map_err(|e| match e {
            QueueError::Sql(source) => QueueError::Open { path: path.to_path_buf(), source },
            other => other,
        })?;
        let work_tag = Self::work_tag_of(&conn).map_err(|e| match e {
            QueueError::Sql(source) => QueueError::Open { path: path.to_path_buf(), source },
            other => other,
        })?;
        Ok(Queue { conn: Mutex::new(conn), clock, path: path.to_path_buf(), work_tag })
    }

    /// The database's tag, made once at random (8 hex digits) and kept in
    /// its settings table.
    fn work_tag_of(conn: &Connection) -> Result<String, QueueError> {
        let random = stemroom_engine::files::random_u64();
        conn.execute(
            "INSERT OR IGNORE INTO settings (key, value) VALUES ('work_tag', ?1)",
            [format!("{:08x}", random as u32)],
        )?;
        let tag: String = conn.query_row("SELECT value FROM settings WHERE key = 'work_tag'", [], |r| r.get(0))?;
        // Only what a folder name can hold, whatever the row says.
        if tag.is_empty() || tag.len() > 16 || !tag.bytes().all(|b| b.is_ascii_alphanumeric()) {
            return Err(QueueError::Corrupt(format!("the work tag {tag:?} is not a short name")));
        }
        Ok(tag)
    }

    /// This database's tag in the names of its jobs' working folders
    /// ([`crate::song::partial_dir`]): two databases sharing a library
    /// folder (the app and a `stemroom serve --data-dir …` beside it) have
    /// jobs of the same ids, and neither may write into, or clean away,
    /// the other's.
    pub fn work_tag(&self) -> &str {
        &self.work_tag
    }

    fn migrate(conn: &mut Connection) -> Result<(), QueueError> {
        let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
        let version: i64 = tx.query_row("PRAGMA user_version", [], |r| r.get(0))?;
        let known = MIGRATIONS.len() as i64;
        if version > known {
            return Err(QueueError::TooNew { found: version, known });
        }
        // A negative version (a damaged header) would skip every migration
        // and fail later as "no such table": it is damage, rebuilt.
        let done = usize::try_from(version).map_err(|_| QueueError::Corrupt(format!("schema version {version}")))?;
        for (i, sql) in MIGRATIONS.iter().enumerate().skip(done) {
            tx.execute_batch(sql)?;
            tx.pragma_update(None, "user_version", i as i64 + 1)?;
        }
        tx.commit()?;
        Ok(())
    }

    /// Path of the database file.
    pub fn path(&self) -> &Path {
        &self.path
    }

    pub(super) fn conn(&self) -> MutexGuard<'_, Connection> {
        // A panic while holding the lock cannot leave a half-done SQLite
        // transaction (it rolls back on drop), so a poisoned lock is usable.
        self.conn.lock().unwrap_or_else(|p| p.into_inner())
    }

    pub(super) fn now(&self) -> UnixMillis {
        (self.clock)()
    }

    /// [`QueueError::NotOwner`] unless `owner` locks the folder holding
    /// this database.
    fn check_owner(&self, owner: &InstanceLock) -> Result<(), QueueError> {
        recovery::check_owner_of(&self.path, owner)
    }

    /// Put jobs that were running (their process died) back in the queue at
    /// their old position. Returns how many. A running job whose cancel
    /// was asked ([`Queue::note_cancel`]) ends cancelled instead (it was
    /// brought back after a crash, and could crash the next start the
    /// same way: the reason it was cancelled, often). A job whose process died
    /// [`MAX_INTERRUPTIONS`] times in a row while running it fails instead
    /// (a song that crashes the app, or runs the computer out of memory,
    /// would otherwise crash every start before anyone can remove it); a
    /// quit that puts its jobs back ([`Queue::requeue`]) does not count.
    /// Only the owner of the data
    /// folder may do this, before it starts its worker: `owner` is its
    /// [`InstanceLock`], which must be the one of the folder holding this
    /// database (a process without it could requeue, and so run twice, the
    /// jobs the owner is running).
    ///
    /// # Errors
    /// [`QueueError::NotOwner`] when `owner` locks another folder; database
    /// errors.
    pub fn recover(&self, owner: &InstanceLock) -> Result<usize, QueueError> {
        self.check_owner(owner)?;
        let mut conn = self.conn();
        let conn = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
        // Not held by a broker worker any more (a later start with
        // `--broker` would otherwise wait for that holder's stall).
        conn.execute(
            "UPDATE broker SET message = NULL, worker = NULL, published = 0
             WHERE job_id IN (SELECT id FROM jobs WHERE status = 'running')",
            [],
        )?;
        let cancelled = conn.execute(
            "UPDATE jobs SET status = 'cancelled', state = ?1, finished_ms = ?2, cancel_requested = 0
             WHERE status = 'running' AND cancel_requested = 1",
            params![json(&JobState::Cancelled)?, self.now()],
        )?;
        if cancelled > 0 {
            tracing::info!("{cancelled} job(s) whose cancel was asked before the last run ended are cancelled");
        }
        conn.execute("UPDATE jobs SET interruptions = interruptions + 1 WHERE status = 'running'", [])?;
        let failed = JobState::Failed {
            code: ErrorCode::Internal,
            message: format!(
                "Stemroom stopped {MAX_INTERRUPTIONS} times while separating this song (a crash, or the computer ran \
                 out of memory). Retry to try again; if it stops again, please report it"
            ),
        };
        let gave_up = conn.execute(
            "UPDATE jobs SET status = 'failed', state = ?1, finished_ms = ?2
             WHERE status = 'running' AND interruptions >= ?3",
            params![json(&failed)?, self.now(), MAX_INTERRUPTIONS],
        )?;
        if gave_up > 0 {
            tracing::warn!("{gave_up} job(s) failed: the process died {MAX_INTERRUPTIONS} times while running each");
        }
        let n = conn.execute(
            "UPDATE jobs SET status = 'queued', state = ?1, started_ms = NULL WHERE status = 'running'",
            [json(&JobState::Queued)?],
        )?;
        conn.commit()?;
        Ok(n)
    }

    /// Record that a cancel of running job `id` was asked, so that a
    /// process that dies before the run stops (a crash, `kill -9`, the
    /// system running out of memory: often why it was cancelled) leaves
    /// it cancelled at the next start ([`Queue::recover`]) instead of
    /// running it again. A job not running is left alone.
    ///
    /// # Errors
    /// Database errors.
    pub fn note_cancel(&self, id: JobId) -> Result<(), QueueError> {
        self.conn().execute("UPDATE jobs SET cancel_requested = 1 WHERE id = ?1 AND status = 'running'", [id])?;
        Ok(())
    }
}

/// Times in a row a job's process may die while running it before
/// [`Queue::recover`] fails the job: 3, so a crash of the machine or a
/// `kill -9` now and then resumes, while a job that kills every start
/// stops after three.
pub const MAX_INTERRUPTIONS: u32 = 3;

#[cfg(test)]
mod tests {
    use rusqlite::params;
    use stemroom_engine::audio::encode::OutputFormat;
    use stemroom_engine::units::Device;

    use super::*;
    use crate::link::DownloadLimits;

    fn opts() -> JobOptions {
        Settings::default().job_options()
    }

    fn file(p: &str) -> JobSource {
        JobSource::File { path: p.into() }
    }

    fn fake_clock() -> (Clock, Arc<std::sync::atomic::AtomicU64>) {
        let t = Arc::new(std::sync::atomic::AtomicU64::new(1_000));
        let t2 = t.clone();
        (Arc::new(move || t2.fetch_add(1, std::sync::atomic::Ordering::SeqCst) as f64), t)
    }

    #[test]
    fn one_file_added_from_two_processes_at_once_is_queued_once() {
        let dir = tempfile::tempdir().unwrap();
        let db = dir.path().join("q.sqlite");
        // Two connections, as the app and a second start's "Open with".
        let queues = [Arc::new(Queue::open(&db).unwrap()), Arc::new(Queue::open(&db).unwrap())];
        let threads: Vec<_> = (0..8)
            .map(|i| {
                let q = queues[i % 2].clone();
                std::thread::spawn(move || q.enqueue_unless_live(&file("/m/a.wav"), "A", &opts()).unwrap())
            })
            .collect();
        let results: Vec<(Job, bool)> = threads.into_iter().map(|t| t.join().unwrap()).collect();
        assert_eq!(results.iter().filter(|(_, added)| *added).count(), 1, "added once");
        let first = results.iter().find(|(_, added)| *added).unwrap().0.id;
        assert!(results.iter().all(|(job, _)| job.id == first), "the others name it");
        assert_eq!(queues[0].queue().unwrap().len(), 1);
        // A failed or cancelled one does not count.
        queues[0].cancel_queued(first).unwrap();
        assert!(queues[1].enqueue_unless_live(&file("/m/a.wav"), "A", &opts()).unwrap().1);
    }

    /// A file changed since its song was made is added again, once
    /// however many adds of it race (two drops, a drop and "Open with").
    #[test]
    fn a_file_changed_since_its_song_is_added_again_once() {
        let dir = tempfile::tempdir().unwrap();
        let q = Arc::new(Queue::open(&dir.path().join("q.sqlite")).unwrap());
        let song = q.enqueue(&file("/m/a.wav"), "A", &opts()).unwrap();
        assert_eq!(q.claim_next().unwrap().unwrap().id, song.id);
        q.finish(song.id, &JobState::Done, Some("/lib/A"), &[]).unwrap();
        let started = q.get(song.id).unwrap().started_at.unwrap();
        // Modified within the 2 s a FAT clock is off by: the same file.
        let (job, added) =
            q.enqueue_unless_live_since(&file("/m/a.wav"), "A", &opts(), Some(started + 1500.0)).unwrap();
        assert!(!added && job.id == song.id);
        let threads: Vec<_> = (0..8)
            .map(|_| {
                let q = q.clone();
                std::thread::spawn(move || {
                    q.enqueue_unless_live_since(&file("/m/a.wav"), "A", &opts(), Some(started + 60_000.0)).unwrap()
                })
            })
            .collect();
        let results: Vec<(Job, bool)> = threads.into_iter().map(|t| t.join().unwrap()).collect();
        assert_eq!(results.iter().filter(|(_, added)| *added).count(), 1, "added once");
        assert_eq!(q.queue().unwrap().len(), 1, "one new job (the song is in the library)");
    }

    #[test]
    fn each_database_has_its_own_lasting_work_tag() {
        let dir = tempfile::tempdir().unwrap();
        let a = Queue::open(&dir.path().join("a.sqlite")).unwrap().work_tag().to_string();
        let b = Queue::open(&dir.path().join("b.sqlite")).unwrap().work_tag().to_string();
        assert_ne!(a, b, "two databases, two tags");
        assert!(a.len() == 8 && a.bytes().all(|c| c.is_ascii_hexdigit()), "{a}");
        assert_eq!(Queue::open(&dir.path().join("a.sqlite")).unwrap().work_tag(), a, "kept across opens");
    }

    #[test]
    fn enqueue_claim_finish_and_library_order() {
        let dir = tempfile::tempdir().unwrap();
        let (clock, _) = fake_clock();
        let q = Queue::open_with_clock(&dir.path().join("db.sqlite"), clock).unwrap();
        let a = q.enqueue(&file("/a.wav"), "Alpha", &opts()).unwrap();
        let b = q.enqueue(&file("/b.wav"), "Beta", &opts()).unwrap();
        assert!(a.position < b.position);
        let claimed = q.claim_next().unwrap().unwrap();
        assert_eq!(claimed.id, a.id);
        assert_eq!(claimed.state, JobState::Decoding);
        assert!(q.set_running_state(a.id, &JobState::Separating { segment: 1, total: 3 }).unwrap());
        let stems = vec![StemFile { stem: "drums".into(), path: "/lib/Alpha/drums.wav".into() }];
        q.finish(a.id, &JobState::Done, Some("/lib/Alpha"), &stems).unwrap();
        let b2 = q.claim_next().unwrap().unwrap();
        q.finish(b2.id, &JobState::Done, Some("/lib/Beta"), &[]).unwrap();
        let lib = q.library("").unwrap();
        assert_eq!(lib.iter().map(|j| j.title.as_str()).collect::<Vec<_>>(), ["Beta", "Alpha"]);
        assert_eq!(lib[1].stems, stems);
        assert_eq!(q.library("alp").unwrap().len(), 1);
        assert_eq!(q.library("100%").unwrap().len(), 0);
        assert_eq!(q.library("  ").unwrap().len(), 2, "blank search lists everything");
        // Accents and case do not matter, either way round.
        let c = q.enqueue(&file("/c.wav"), "Beyoncé – Déjà Vu (Sigur Rós remix)", &opts()).unwrap();
        let c2 = q.claim_next().unwrap().unwrap();
        assert_eq!(c2.id, c.id);
        q.finish(c.id, &JobState::Done, Some("/lib/C"), &[]).unwrap();
        for search in ["beyonce", "DEJA VU", "sigur rós", "Déjà", "BEYONCÉ"] {
            let hits: Vec<String> = q.library(search).unwrap().into_iter().map(|j| j.title).collect();
            assert_eq!(hits, std::slice::from_ref(&c.title), "{search}");
        }
        assert!(q.claim_next().unwrap().is_none());
        // A finished job no longer takes progress updates.
        assert!(!q.set_running_state(a.id, &JobState::Encoding).unwrap());
    }

    #[test]
    fn cancel_retry_remove_reorder_rules() {
        let dir = tempfile::tempdir().unwrap();
        let q = Queue::open(&dir.path().join("db.sqlite")).unwrap();
        let a = q.enqueue(&file("/a.wav"), "a", &opts()).unwrap();
        let b = q.enqueue(&file("/b.wav"), "b", &opts()).unwrap();
        let c = q.enqueue(&file("/c.wav"), "c", &opts()).unwrap();
        let order = q.reorder(&[c.id, a.id]).unwrap();
        assert_eq!(order.iter().map(|j| j.id).collect::<Vec<_>>(), [c.id, a.id, b.id]);
        assert_eq!(q.claim_next().unwrap().unwrap().id, c.id);
        // Running: cannot be removed, retried or cancelled as queued. In an
        // order asked for by someone who saw it queued, it is passed over.
        assert!(matches!(q.remove(c.id), Err(QueueError::WrongState { .. })));
        assert!(matches!(q.retry(c.id), Err(QueueError::WrongState { .. })));
        let order = q.reorder(&[c.id, b.id, a.id]).unwrap();
        assert_eq!(
            order.iter().filter(|j| j.state == JobState::Queued).map(|j| j.id).collect::<Vec<_>>(),
            [b.id, a.id]
        );
        // An id gone meanwhile (deleted) is passed over too, as are repeats,
        // however many.
        let mut many = vec![9999; 1_000_000];
        many.extend([a.id, a.id]);
        let order = q.reorder(&many).unwrap();
        assert_eq!(
            order.iter().filter(|j| j.state == JobState::Queued).map(|j| j.id).collect::<Vec<_>>(),
            [a.id, b.id]
        );
        assert!(matches!(q.cancel_queued(c.id), Err(QueueError::WrongState { .. })));
        q.finish(c.id, &JobState::Failed { code: ErrorCode::BadInput, message: "not audio".into() }, None, &[])
            .unwrap();
        assert_eq!(q.cancel_queued(a.id).unwrap().state, JobState::Cancelled);
        // Retry runs with the settings as they are now (the device was
        // changed after the failure).
        q.save_settings(&Settings { device: Device::Cpu, shifts: 0, preset: None, ..Settings::default() }).unwrap();
        let retried = q.retry(c.id).unwrap();
        assert_eq!(retried.state, JobState::Queued);
        assert!(retried.position > b.position);
        assert_eq!((retried.options.device, retried.options.shifts), (Device::Cpu, 0));
        assert_eq!(q.remove(b.id).unwrap().id, b.id);
        assert!(matches!(q.get(b.id), Err(QueueError::NotFound(_))));
        assert!(matches!(q.remove(999), Err(QueueError::NotFound(999))));
        let ids: Vec<_> = q.queue().unwrap().iter().map(|j| (j.id, j.state.status())).collect();
        assert_eq!(ids, [(c.id, "queued"), (a.id, "cancelled")]);
        // A running job whose state cannot be read (shown as failed) is
        // neither retried nor removed under its worker: the status column
        // says it runs.
        assert_eq!(q.claim_next().unwrap().unwrap().id, c.id);
        q.conn().execute("UPDATE jobs SET state = '{not json' WHERE id = ?1", [c.id]).unwrap();
        assert_eq!(q.get(c.id).unwrap().state.status(), "failed", "shown as damaged");
        assert!(matches!(q.retry(c.id), Err(QueueError::WrongState { status: "running", .. })));
        assert!(matches!(q.remove(c.id), Err(QueueError::WrongState { status: "running", .. })));
        assert_eq!(q.stored_status(c.id).unwrap(), "running");
        // One not running whose state cannot be read: Retry mends it.
        q.conn().execute("UPDATE jobs SET state = '{not json' WHERE id = ?1", [a.id]).unwrap();
        assert_eq!(q.retry(a.id).unwrap().state, JobState::Queued);
    }

    #[test]
    fn settings_round_trip_and_validation() {
        let dir = tempfile::tempdir().unwrap();
        let q = Queue::open(&dir.path().join("db.sqlite")).unwrap();
        assert_eq!(q.settings().unwrap(), Settings::default());
        let s = Settings {
            shifts: 2,
            device: Device::Cpu,
            format: OutputFormat::Flac { bits: 24 },
            library_dir: Some("/music/stems".into()),
            ..Settings::default()
        };
        q.save_settings(&s).unwrap();
        drop(q);
        let q = Queue::open(&dir.path().join("db.sqlite")).unwrap();
        assert_eq!(q.settings().unwrap(), s);
        assert!(matches!(
            q.save_settings(&Settings { overlap: 1.0, ..s.clone() }),
            Err(QueueError::InvalidSettings(_))
        ));
        assert!(matches!(
            q.save_settings(&Settings { format: OutputFormat::Mp3 { kbps: 100 }, ..s.clone() }),
            Err(QueueError::InvalidSettings(_))
        ));
        for dir in ["", "stems", "./stems"] {
            assert!(matches!(
                q.save_settings(&Settings { library_dir: Some(dir.into()), ..s.clone() }),
                Err(QueueError::InvalidSettings(m)) if m.contains("library folder")
            ));
        }
        // Download limits: 1 GiB and 3 h by default, saved and turned into
        // yt-dlp's limits, out-of-range values refused.
        let d = Settings::default();
        assert_eq!((d.max_download_mb, d.max_download_minutes), (1074, 180));
        let small = Settings { max_download_mb: 50, max_download_minutes: 12, ..s.clone() };
        q.save_settings(&small).unwrap();
        assert_eq!(q.settings().unwrap().download_limits(), DownloadLimits { max_bytes: 50_000_000, max_seconds: 720 });
        for bad in [Settings { max_download_mb: 0, ..s.clone() }, Settings { max_download_minutes: 2000, ..s }] {
            assert!(matches!(q.save_settings(&bad), Err(QueueError::InvalidSettings(m)) if m.contains("download")));
        }
    }

    #[test]
    fn settings_from_an_older_version_keep_their_fields() {
        let dir = tempfile::tempdir().unwrap();
        let q = Queue::open(&dir.path().join("db.sqlite")).unwrap();
        q.conn().execute("INSERT INTO settings (key, value) VALUES ('settings', '{\"shifts\": 3}')", []).unwrap();
        // Saved before presets with a custom shift count: it stays in force.
        assert_eq!(q.settings().unwrap(), Settings { shifts: 3, preset: None, ..Settings::default() });
        assert_eq!(q.settings().unwrap().job_options().shifts, 3);
    }

    #[test]
    fn presets_choose_the_model_shifts_and_overlap_and_stay_with_the_job() {
        use stemroom_engine::units::Preset;
        let dir = tempfile::tempdir().unwrap();
        let q = Queue::open(&dir.path().join("db.sqlite")).unwrap();
        // New users get balanced: demucs' defaults.
        let s = q.settings().unwrap();
        assert_eq!(s.preset, Some(Preset::Balanced));
        let o = s.job_options();
        assert_eq!((o.model.as_str(), o.shifts, o.overlap, o.preset), ("htdemucs", 1, 0.25, Some(Preset::Balanced)));
        // Fast on the CPU: the int8 model, no shift, 10 % overlap; the
        // custom fields underneath are kept for "Custom".
        let fast = Settings { device: Device::Cpu, shifts: 4, ..s.with_preset(Some(Preset::Fast)) };
        q.save_settings(&fast).unwrap();
        let o = q.settings().unwrap().job_options();
        assert_eq!((o.model.as_str(), o.shifts, o.overlap, o.preset), ("htdemucs_int8", 0, 0.1, Some(Preset::Fast)));
        let custom = q.settings().unwrap().with_preset(None).job_options();
        assert_eq!((custom.model.as_str(), custom.shifts, custom.preset), ("htdemucs", 4, None));
        // The job keeps the preset that made it.
        let job = q.enqueue(&file("/a.wav"), "A", &o).unwrap();
        assert_eq!(q.get(job.id).unwrap().options.preset, Some(Preset::Fast));
        // A settings document from before presets with a preset's values
        // reads as that preset; a job row from before presets has none.
        q.conn().execute("UPDATE settings SET value = '{\"shifts\": 1, \"overlap\": 0.25}'", []).unwrap();
        assert_eq!(q.settings().unwrap().preset, Some(Preset::Balanced));
        let mut old = serde_json::to_value(Settings::default().job_options()).unwrap();
        old.as_object_mut().unwrap().remove("preset");
        assert_eq!(serde_json::from_value::<JobOptions>(old).unwrap().preset, None);
    }

    #[test]
    fn one_bad_settings_field_does_not_reset_the_others() {
        let dir = tempfile::tempdir().unwrap();
        let q = Queue::open(&dir.path().join("db.sqlite")).unwrap();
        let doc =
            r#"{"shifts": "many", "overlap": 7.5, "libraryDir": "/home/you/Stems", "concurrentJobs": 2, "novel": 1}"#;
        q.conn().execute("INSERT INTO settings (key, value) VALUES ('settings', ?1)", [doc]).unwrap();
        let s = q.settings().unwrap();
        assert_eq!(s.library_dir.as_deref(), Some("/home/you/Stems"), "the library folder survives");
        assert_eq!(s.concurrent_jobs, 2);
        assert_eq!((s.shifts, s.overlap), (Settings::default().shifts, Settings::default().overlap));
    }

    /// A job the process died running runs alone, so a crash again is
    /// counted against it only (three fail a job), not against the jobs
    /// that ran beside it.
    #[test]
    fn a_job_that_crashed_the_process_runs_alone() {
        let dir = tempfile::tempdir().unwrap();
        let q = Queue::open(&dir.path().join("db.sqlite")).unwrap();
        let opts = Settings::default().job_options();
        let a = q.enqueue(&JobSource::File { path: "/a.wav".into() }, "A", &opts).unwrap();
        let b = q.enqueue(&JobSource::File { path: "/b.wav".into() }, "B", &opts).unwrap();
        let crashed = |id: JobId| {
            q.conn().execute("UPDATE jobs SET interruptions = 1 WHERE id = ?1", [id]).unwrap();
        };
        crashed(a.id);
        assert_eq!(q.claim_next().unwrap().unwrap().id, a.id, "alone, it starts");
        assert!(q.claim_next().unwrap().is_none(), "nothing beside it");
        q.finish(a.id, &JobState::Done, None, &[]).unwrap();
        assert_eq!(q.claim_next().unwrap().unwrap().id, b.id);
        // One that crashed waits for the running ones to end.
        let c = q.enqueue(&JobSource::File { path: "/c.wav".into() }, "C", &opts).unwrap();
        crashed(c.id);
        assert!(q.claim_next().unwrap().is_none(), "B runs");
        q.finish(b.id, &JobState::Done, None, &[]).unwrap();
        assert_eq!(q.claim_next().unwrap().unwrap().id, c.id);
    }

    /// Where songs go is read on its own: settings that cannot be read do
    /// not send them to the default library as if no folder were chosen.
    #[test]
    fn the_chosen_library_is_known_or_an_error() {
        let dir = tempfile::tempdir().unwrap();
        let q = Queue::open(&dir.path().join("db.sqlite")).unwrap();
        assert_eq!(q.chosen_library_dir().unwrap(), None, "nothing saved");
        let set = |doc: &str| {
            q.conn().execute("INSERT OR REPLACE INTO settings (key, value) VALUES ('settings', ?1)", [doc]).unwrap();
        };
        set(r#"{"libraryDir": "/home/you/Stems", "shifts": "many"}"#);
        assert_eq!(q.chosen_library_dir().unwrap().as_deref(), Some("/home/you/Stems"));
        set(r#"{"libraryDir": null}"#);
        assert_eq!(q.chosen_library_dir().unwrap(), None);
        for junk in [r#""junk""#, "{not json", r#"{"libraryDir": 7}"#, r#"{"libraryDir": "Stems"}"#] {
            set(junk);
            assert!(matches!(q.chosen_library_dir(), Err(QueueError::Corrupt(_))), "{junk}");
            assert_eq!(q.settings().unwrap().library_dir, None, "settings() still gives defaults: {junk}");
        }
    }

    #[test]
    fn a_version_1_database_is_migrated_keeping_its_jobs() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("db.sqlite");
        {
            let c = Connection::open(&path).unwrap();
            c.execute_batch(MIGRATIONS[0]).unwrap();
            c.pragma_update(None, "user_version", 1).unwrap();
            c.execute(
                "INSERT INTO jobs (source, title, options, state, status, position, created_ms)
                 VALUES (?1, 'Old song', ?2, ?3, 'queued', 1, 0)",
                params![
                    json(&JobSource::File { path: "/a.wav".into() }).unwrap(),
                    json(&Settings::default().job_options()).unwrap(),
                    json(&JobState::Queued).unwrap()
                ],
            )
            .unwrap();
        }
        let q = Queue::open(&path).unwrap();
        let jobs = q.queue().unwrap();
        assert_eq!(jobs.len(), 1);
        assert_eq!((jobs[0].title.as_str(), jobs[0].uploader.as_deref()), ("Old song", None));
        q.set_link_details(jobs[0].id, Some("Someone"), Some("https://e.com/t.jpg")).unwrap();
        let j = q.get(jobs[0].id).unwrap();
        assert_eq!((j.uploader.as_deref(), j.thumbnail.as_deref()), (Some("Someone"), Some("https://e.com/t.jpg")));
    }

    #[test]
    fn segment_time_mean() {
        let dir = tempfile::tempdir().unwrap();
        let q = Queue::open(&dir.path().join("db.sqlite")).unwrap();
        assert_eq!(q.segment_seconds("htdemucs", "cpu").unwrap(), None);
        q.record_segment_seconds("htdemucs", "cpu", 4.0).unwrap();
        q.record_segment_seconds("htdemucs", "cpu", 6.0).unwrap();
        q.record_segment_seconds("htdemucs", "cpu", f64::NAN).unwrap();
        assert_eq!(q.segment_seconds("htdemucs", "cpu").unwrap(), Some(5.0));
        for _ in 0..3 {
            q.record_segment_seconds("htdemucs", "cpu", 5.0).unwrap();
        }
        q.record_segment_seconds("htdemucs", "cpu", 10.0).unwrap();
        assert!((q.segment_seconds("htdemucs", "cpu").unwrap().unwrap() - 6.0).abs() < 1e-9);
        assert_eq!(q.segment_seconds("htdemucs", "cuda").unwrap(), None);
    }

    #[test]
    fn refuses_newer_schema_and_non_database() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("db.sqlite");
        drop(Queue::open(&p).unwrap());
        Connection::open(&p).unwrap().pragma_update(None, "user_version", 99).unwrap();
        assert!(matches!(Queue::open(&p), Err(QueueError::TooNew { found: 99, .. })));
        Connection::open(&p).unwrap().pragma_update(None, "user_version", -3).unwrap();
        assert!(matches!(Queue::open(&p), Err(QueueError::Corrupt(m)) if m.contains("-3")));
        let junk = dir.path().join("junk.sqlite");
        std::fs::write(&junk, vec![7u8; 4096]).unwrap();
        assert!(matches!(Queue::open(&junk), Err(QueueError::Open { .. })));
    }

    #[test]
    fn requeue_puts_a_running_job_back_at_its_place_and_pages_list_everything() {
        let dir = tempfile::tempdir().unwrap();
        let q = Queue::open(&dir.path().join("db.sqlite")).unwrap();
        let a = q.enqueue(&file("/a.wav"), "A", &opts()).unwrap();
        let b = q.enqueue(&file("/b.wav"), "B", &opts()).unwrap();
        assert_eq!(q.claim_next().unwrap().unwrap().id, a.id);
        let back = q.requeue(a.id).unwrap();
        assert_eq!(back.state, JobState::Queued);
        assert_eq!(back.started_at, None);
        assert_eq!(q.claim_next().unwrap().unwrap().id, a.id, "first again, ahead of B");
        assert!(matches!(q.requeue(b.id), Err(QueueError::NotFound(_))), "only running jobs");
        let (page, total) = q.page(0, 1).unwrap();
        assert_eq!((page.len(), total, page[0].id), (1, 2, b.id), "newest first");
        let (page, _) = q.page(1, 10).unwrap();
        assert_eq!(page.iter().map(|j| j.id).collect::<Vec<_>>(), vec![a.id]);
    }
}

//! The persistent job queue and library: one SQLite database (rusqlite) in
//! the app's data directory.
//!
//! A [`Job`] records where a song comes from, how to separate it, where it
//! is in its life ([`JobState`]), its timings and where its stems went.
//! Queued jobs run in `position` order; finished jobs form the library.
//!
//! Durability: every change is one SQLite transaction in WAL mode with
//! `synchronous=FULL`, so a crash (even `SIGKILL` in the middle of an update)
//! leaves either the old or the new row, never a torn one. Opening the queue
//! runs [`Queue::recover`]: jobs that were running when the process died go
//! back to the queue, at their old place. Several processes or threads may
//! open the same file; writers serialise on SQLite's lock (`BEGIN IMMEDIATE`,
//! 5 s busy timeout).
//!
//! Schema changes are numbered migrations tracked in `PRAGMA user_version`.

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use rusqlite::{params, Connection, OptionalExtension, TransactionBehavior};
use serde::{Deserialize, Serialize};

use crate::audio::encode::{OutputFormat, WavDepth};
use crate::runtime::Device;
use crate::ErrorCode;

/// Identifier of a job: its SQLite rowid (1, 2, …; never reused).
pub type JobId = u32;

/// Milliseconds since the Unix epoch (UTC), as JavaScript's `Date` counts.
pub type UnixMillis = f64;

/// A source of the current time in [`UnixMillis`]; tests pass a fake one.
pub type Clock = Arc<dyn Fn() -> UnixMillis + Send + Sync>;

/// The system clock.
pub fn system_clock() -> Clock {
    Arc::new(|| {
        std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_millis() as f64).unwrap_or(0.0)
    })
}

/// Where a job's audio comes from.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "specta", derive(specta::Type))]
#[serde(tag = "kind", rename_all = "camelCase")]
pub enum JobSource {
    /// A local audio file (absolute path).
    File { path: String },
    /// A link resolved by yt-dlp.
    Url { url: String },
}

/// How a job separates its song. Defaults come from [`Settings`].
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "specta", derive(specta::Type))]
#[serde(rename_all = "camelCase")]
pub struct JobOptions {
    /// Model id from `models/manifest.json` (e.g. `htdemucs`).
    pub model: String,
    /// Device asked for.
    pub device: Device,
    /// Random shifts (demucs `--shifts`).
    pub shifts: u32,
    /// Overlap between segments, fraction in [0, 1) (demucs `--overlap`).
    pub overlap: f32,
    /// Two-stem mode: the chosen source; its complement is the sum of the others.
    pub two_stems: Option<String>,
    /// Encoding of the stems.
    pub format: OutputFormat,
}

/// Where a job is in its life.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "specta", derive(specta::Type))]
#[serde(tag = "state", rename_all = "camelCase")]
pub enum JobState {
    /// Waiting for its turn.
    Queued,
    /// Fetching a link's audio with yt-dlp; `percent` when the size is known.
    Downloading { percent: Option<f64> },
    /// Decoding (and resampling) the input.
    Decoding,
    /// Segment `segment` (1-based) of `total` went through the network.
    Separating { segment: u32, total: u32 },
    /// Finishing the stem files.
    Encoding,
    /// Stems are in the library.
    Done,
    /// Stopped by an error; `code` is stable, `message` is for people.
    Failed { code: ErrorCode, message: String },
    /// Stopped by the user; nothing was kept.
    Cancelled,
}

impl JobState {
    /// True while a worker owns the job.
    pub fn is_running(&self) -> bool {
        matches!(
            self,
            JobState::Downloading { .. } | JobState::Decoding | JobState::Separating { .. } | JobState::Encoding
        )
    }
    /// True once the job can no longer change by itself.
    pub fn is_finished(&self) -> bool {
        matches!(self, JobState::Done | JobState::Failed { .. } | JobState::Cancelled)
    }
    /// The coarse status stored in its own column for queries.
    fn status(&self) -> &'static str {
        match self {
            JobState::Queued => "queued",
            JobState::Downloading { .. } | JobState::Decoding | JobState::Separating { .. } | JobState::Encoding => {
                "running"
            }
            JobState::Done => "done",
            JobState::Failed { .. } => "failed",
            JobState::Cancelled => "cancelled",
        }
    }
}

/// One stem file of a finished job.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "specta", derive(specta::Type))]
#[serde(rename_all = "camelCase")]
pub struct StemFile {
    /// Stem name (`drums`, `bass`, `other`, `vocals`, or `no_vocals` in two-stem mode).
    pub stem: String,
    /// Absolute path of the file.
    pub path: String,
}

/// A song in the queue or the library.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "specta", derive(specta::Type))]
#[serde(rename_all = "camelCase")]
pub struct Job {
    pub id: JobId,
    pub source: JobSource,
    /// Display title (file name without extension, or the link's title).
    pub title: String,
    /// Duration of the song in seconds, once known.
    pub duration_seconds: Option<f64>,
    pub options: JobOptions,
    pub state: JobState,
    /// Order among queued jobs (smaller runs first).
    pub position: i32,
    pub created_at: UnixMillis,
    /// When a worker last picked it up.
    pub started_at: Option<UnixMillis>,
    /// When it reached done, failed or cancelled.
    pub finished_at: Option<UnixMillis>,
    /// The song's folder in the library (finished jobs).
    pub output_dir: Option<String>,
    /// Stem files, in model source order (finished jobs).
    pub stems: Vec<StemFile>,
    /// Execution provider that ran the network (`cpu`, `cuda`).
    pub provider: Option<String>,
    /// A link's uploader or channel, from its metadata.
    pub uploader: Option<String>,
    /// A link's thumbnail image URL, from its metadata.
    pub thumbnail: Option<String>,
}

/// The stem file format the app writes by default.
pub fn default_format() -> OutputFormat {
    OutputFormat::Wav { depth: WavDepth::Int16 }
}

/// User settings, persisted in the database as one JSON document. Fields
/// missing from an older document take their defaults (see
/// [`Queue::settings`]).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "specta", derive(specta::Type))]
#[serde(rename_all = "camelCase")]
pub struct Settings {
    /// Model id for new jobs.
    pub model: String,
    /// Device for new jobs.
    pub device: Device,
    /// Random shifts for new jobs (demucs default 1).
    pub shifts: u32,
    /// Overlap for new jobs (demucs default 0.25).
    pub overlap: f32,
    /// Folder holding one sub-folder per finished song; `None` = the default
    /// (see [`crate::library::default_library_dir`]).
    pub library_dir: Option<String>,
    /// Stem format for new jobs.
    pub format: OutputFormat,
    /// How many jobs separate at the same time (1 by default: the network
    /// already uses every core).
    pub concurrent_jobs: u32,
    /// yt-dlp to use for links; `None` = look in `$STEMROOM_YTDLP`, the
    /// project's environment, then `PATH` (see [`crate::link::YtDlp::locate`]).
    pub ytdlp_path: Option<String>,
}

impl Default for Settings {
    fn default() -> Self {
        Settings {
            model: "htdemucs".into(),
            device: Device::Auto,
            shifts: 1,
            overlap: 0.25,
            library_dir: None,
            format: default_format(),
            concurrent_jobs: 1,
            ytdlp_path: None,
        }
    }
}

impl Settings {
    /// The options a new job gets.
    pub fn job_options(&self) -> JobOptions {
        JobOptions {
            model: self.model.clone(),
            device: self.device,
            shifts: self.shifts,
            overlap: self.overlap,
            two_stems: None,
            format: self.format,
        }
    }

    /// Check ranges.
    ///
    /// # Errors
    /// A message naming the bad field.
    pub fn validate(&self) -> Result<(), String> {
        if !(0.0..1.0).contains(&self.overlap) {
            return Err(format!("overlap must be at least 0 and below 1, got {}", self.overlap));
        }
        if self.shifts > 20 {
            return Err(format!("shifts must be at most 20, got {}", self.shifts));
        }
        if !(1..=8).contains(&self.concurrent_jobs) {
            return Err(format!("concurrent jobs must be 1 to 8, got {}", self.concurrent_jobs));
        }
        self.format.validate()
    }
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

/// Numbered schema migrations; entry `i` takes `user_version` from `i` to `i + 1`.
const MIGRATIONS: &[&str] = &[
    // 1: jobs, settings, measured segment times.
    "CREATE TABLE jobs (
        id INTEGER PRIMARY KEY AUTOINCREMENT,
        source TEXT NOT NULL,
        title TEXT NOT NULL,
        duration_seconds REAL,
        options TEXT NOT NULL,
        state TEXT NOT NULL,
        status TEXT NOT NULL,
        position INTEGER NOT NULL,
        created_ms REAL NOT NULL,
        started_ms REAL,
        finished_ms REAL,
        output_dir TEXT,
        stems TEXT NOT NULL DEFAULT '[]',
        provider TEXT
    );
    CREATE INDEX jobs_status_position ON jobs(status, position);
    CREATE TABLE settings (key TEXT PRIMARY KEY, value TEXT NOT NULL);
    CREATE TABLE segment_times (
        model TEXT NOT NULL,
        provider TEXT NOT NULL,
        seconds REAL NOT NULL,
        samples INTEGER NOT NULL,
        PRIMARY KEY (model, provider)
    );",
    // 2: what a link's metadata says about its song.
    "ALTER TABLE jobs ADD COLUMN uploader TEXT;
    ALTER TABLE jobs ADD COLUMN thumbnail TEXT;",
];

/// The job queue and library database. Cheap to share behind an `Arc`;
/// every method takes `&self` and is one transaction.
pub struct Queue {
    conn: Mutex<Connection>,
    clock: Clock,
    path: PathBuf,
}

impl std::fmt::Debug for Queue {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Queue").field("path", &self.path).finish()
    }
}

const JOB_COLUMNS: &str =
    "id, source, title, duration_seconds, options, state, position, created_ms, started_ms, finished_ms, output_dir, stems, provider, uploader, thumbnail";

fn json<T: Serialize>(v: &T) -> Result<String, QueueError> {
    serde_json::to_string(v).map_err(|e| QueueError::Corrupt(e.to_string()))
}

fn parse<T: for<'de> Deserialize<'de>>(text: &str, what: &str) -> Result<T, QueueError> {
    serde_json::from_str(text).map_err(|e| QueueError::Corrupt(format!("{what}: {e}")))
}

type RawJob = (
    i64,
    String,
    String,
    Option<f64>,
    String,
    String,
    i64,
    f64,
    Option<f64>,
    Option<f64>,
    Option<String>,
    String,
    Option<String>,
    Option<String>,
    Option<String>,
);

fn raw_job(row: &rusqlite::Row<'_>) -> rusqlite::Result<RawJob> {
    Ok((
        row.get(0)?,
        row.get(1)?,
        row.get(2)?,
        row.get(3)?,
        row.get(4)?,
        row.get(5)?,
        row.get(6)?,
        row.get(7)?,
        row.get(8)?,
        row.get(9)?,
        row.get(10)?,
        row.get(11)?,
        row.get(12)?,
        row.get(13)?,
        row.get(14)?,
    ))
}

fn to_job(r: RawJob) -> Result<Job, QueueError> {
    Ok(Job {
        id: u32::try_from(r.0).map_err(|_| QueueError::Corrupt(format!("job id {} out of range", r.0)))?,
        source: parse(&r.1, "job source")?,
        title: r.2,
        duration_seconds: r.3,
        options: parse(&r.4, "job options")?,
        state: parse(&r.5, "job state")?,
        position: i32::try_from(r.6).unwrap_or(i32::MAX),
        created_at: r.7,
        started_at: r.8,
        finished_at: r.9,
        output_dir: r.10,
        stems: parse(&r.11, "job stems")?,
        provider: r.12,
        uploader: r.13,
        thumbnail: r.14,
    })
}

fn job_in(conn: &Connection, id: JobId) -> Result<Job, QueueError> {
    let raw = conn
        .query_row(&format!("SELECT {JOB_COLUMNS} FROM jobs WHERE id = ?1"), [id], raw_job)
        .optional()?
        .ok_or(QueueError::NotFound(id))?;
    to_job(raw)
}

fn jobs_where(conn: &Connection, clause: &str, args: &[&dyn rusqlite::ToSql]) -> Result<Vec<Job>, QueueError> {
    let mut stmt = conn.prepare(&format!("SELECT {JOB_COLUMNS} FROM jobs {clause}"))?;
    let raws = stmt.query_map(args, raw_job)?.collect::<Result<Vec<_>, _>>()?;
    raws.into_iter().map(to_job).collect()
}

fn next_position(conn: &Connection) -> Result<i64, QueueError> {
    Ok(conn.query_row("SELECT COALESCE(MAX(position), 0) + 1 FROM jobs", [], |r| r.get(0))?)
}

impl Queue {
    /// Open (creating if needed) the database at `path` with the system clock,
    /// migrate it, and recover jobs a previous process left running.
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
        let queue = Queue { conn: Mutex::new(conn), clock, path: path.to_path_buf() };
        queue.recover()?;
        Ok(queue)
    }

    fn migrate(conn: &mut Connection) -> Result<(), QueueError> {
        let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
        let version: i64 = tx.query_row("PRAGMA user_version", [], |r| r.get(0))?;
        let known = MIGRATIONS.len() as i64;
        if version > known {
            return Err(QueueError::TooNew { found: version, known });
        }
        for (i, sql) in MIGRATIONS.iter().enumerate().skip(version as usize) {
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

    fn conn(&self) -> MutexGuard<'_, Connection> {
        // A panic while holding the lock cannot leave a half-done SQLite
        // transaction (it rolls back on drop), so a poisoned lock is usable.
        self.conn.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn now(&self) -> UnixMillis {
        (self.clock)()
    }

    /// Put jobs that were running (their process died) back in the queue at
    /// their old position. Returns how many. Called by [`Queue::open`]; call
    /// it again only when no worker is running.
    ///
    /// # Errors
    /// Database errors.
    pub fn recover(&self) -> Result<usize, QueueError> {
        let conn = self.conn();
        let n = conn.execute(
            "UPDATE jobs SET status = 'queued', state = ?1, started_ms = NULL WHERE status = 'running'",
            [json(&JobState::Queued)?],
        )?;
        Ok(n)
    }

    /// Add a job at the end of the queue.
    ///
    /// # Errors
    /// Database errors.
    pub fn enqueue(&self, source: &JobSource, title: &str, options: &JobOptions) -> Result<Job, QueueError> {
        let mut conn = self.conn();
        let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
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
        Ok(job)
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

    /// Finished songs, newest first, whose title contains `search`
    /// (case-insensitive; empty matches all).
    ///
    /// # Errors
    /// Database errors.
    pub fn library(&self, search: &str) -> Result<Vec<Job>, QueueError> {
        let pattern = format!("%{}%", search.replace('\\', "\\\\").replace('%', "\\%").replace('_', "\\_"));
        jobs_where(
            &self.conn(),
            "WHERE status = 'done' AND title LIKE ?1 ESCAPE '\\' ORDER BY finished_ms DESC, id DESC",
            &[&pattern],
        )
    }

    /// Take the first queued job and mark it [`JobState::Decoding`]. Atomic:
    /// two workers never get the same job.
    ///
    /// # Errors
    /// Database errors.
    pub fn claim_next(&self) -> Result<Option<Job>, QueueError> {
        let mut conn = self.conn();
        let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
        let id: Option<i64> = tx
            .query_row("SELECT id FROM jobs WHERE status = 'queued' ORDER BY position, id LIMIT 1", [], |r| r.get(0))
            .optional()?;
        let Some(id) = id else { return Ok(None) };
        tx.execute(
            "UPDATE jobs SET status = 'running', state = ?1, started_ms = ?2, finished_ms = NULL WHERE id = ?3",
            params![json(&JobState::Decoding)?, self.now(), id],
        )?;
        let job = job_in(&tx, id as JobId)?;
        tx.commit()?;
        Ok(Some(job))
    }

    /// Record progress of a running job. Ignored (returns false) when the job
    /// is no longer running, e.g. it was removed meanwhile.
    ///
    /// # Errors
    /// Database errors.
    pub fn set_running_state(&self, id: JobId, state: &JobState) -> Result<bool, QueueError> {
        debug_assert!(state.is_running());
        let n = self
            .conn()
            .execute("UPDATE jobs SET state = ?1 WHERE id = ?2 AND status = 'running'", params![json(state)?, id])?;
        Ok(n == 1)
    }

    /// Record a job's duration and provider once known.
    ///
    /// # Errors
    /// Database errors.
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
        let mut conn = self.conn();
        let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
        let n = tx.execute(
            "UPDATE jobs SET status = ?1, state = ?2, finished_ms = ?3, output_dir = ?4, stems = ?5
             WHERE id = ?6 AND status = 'running'",
            params![state.status(), json(state)?, self.now(), output_dir, json(&stems)?, id],
        )?;
        if n == 0 {
            return Err(QueueError::NotFound(id));
        }
        let job = job_in(&tx, id)?;
        tx.commit()?;
        Ok(job)
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

    /// Put a failed or cancelled job back at the end of the queue.
    ///
    /// # Errors
    /// [`QueueError::WrongState`] unless failed or cancelled; [`QueueError::NotFound`].
    pub fn retry(&self, id: JobId) -> Result<Job, QueueError> {
        self.transition(id, &["failed", "cancelled"], "retrying", |tx, _| {
            let position = next_position(tx)?;
            tx.execute(
                "UPDATE jobs SET status = 'queued', state = ?1, position = ?2, started_ms = NULL, finished_ms = NULL WHERE id = ?3",
                params![json(&JobState::Queued)?, position, id],
            )?;
            Ok(())
        })
    }

    /// Delete a job that is not running. Its files are not touched here
    /// (see [`crate::library::remove_song`]).
    ///
    /// # Errors
    /// [`QueueError::WrongState`] while running; [`QueueError::NotFound`].
    pub fn remove(&self, id: JobId) -> Result<Job, QueueError> {
        let mut removed = None;
        self.transition(id, &["queued", "done", "failed", "cancelled"], "removing", |tx, _| {
            removed = Some(job_in(tx, id)?);
            tx.execute("DELETE FROM jobs WHERE id = ?1", [id])?;
            Ok(())
        })
        .or_else(|e| match (e, removed.take()) {
            (QueueError::NotFound(_), Some(job)) => Ok(job),
            (e, _) => Err(e),
        })
    }

    /// Reorder the queued jobs: `ids` lists queued jobs in their new order;
    /// queued jobs not listed keep their relative order after them.
    ///
    /// # Errors
    /// [`QueueError::WrongState`] if an id is not queued; [`QueueError::NotFound`].
    pub fn reorder(&self, ids: &[JobId]) -> Result<Vec<Job>, QueueError> {
        let mut conn = self.conn();
        let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
        let queued: Vec<i64> = {
            let mut stmt = tx.prepare("SELECT id FROM jobs WHERE status = 'queued' ORDER BY position, id")?;
            let rows = stmt.query_map([], |r| r.get(0))?.collect::<Result<Vec<i64>, _>>()?;
            rows
        };
        for &id in ids {
            if !queued.contains(&(id as i64)) {
                let job = job_in(&tx, id)?;
                return Err(QueueError::WrongState { id, status: job.state.status(), action: "reordering" });
            }
        }
        let mut order: Vec<i64> = Vec::new();
        for &id in ids {
            if !order.contains(&(id as i64)) {
                order.push(id as i64);
            }
        }
        order.extend(queued.iter().filter(|q| !order.contains(q)).copied().collect::<Vec<_>>());
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
        let status = job.state.status();
        if !allowed.contains(&status) {
            return Err(QueueError::WrongState { id, status, action });
        }
        f(&tx, self.now())?;
        let after = job_in(&tx, id);
        tx.commit()?;
        after
    }

    /// The saved settings (defaults when none were saved).
    ///
    /// # Errors
    /// Database errors; unreadable stored settings give the defaults.
    pub fn settings(&self) -> Result<Settings, QueueError> {
        let text: Option<String> =
            self.conn().query_row("SELECT value FROM settings WHERE key = 'settings'", [], |r| r.get(0)).optional()?;
        // Overlay the stored fields on the defaults, so a document from an
        // older version (fewer fields) still loads; unreadable → defaults.
        let stored = text.and_then(|t| serde_json::from_str::<serde_json::Value>(&t).ok());
        let mut merged = serde_json::to_value(Settings::default()).map_err(|e| QueueError::Corrupt(e.to_string()))?;
        if let (Some(serde_json::Value::Object(stored)), serde_json::Value::Object(m)) = (stored, &mut merged) {
            m.extend(stored);
        }
        Ok(serde_json::from_value(merged).unwrap_or_default())
    }

    /// Validate and save settings.
    ///
    /// # Errors
    /// [`QueueError::InvalidSettings`], database errors.
    pub fn save_settings(&self, settings: &Settings) -> Result<(), QueueError> {
        settings.validate().map_err(QueueError::InvalidSettings)?;
        self.conn().execute(
            "INSERT INTO settings (key, value) VALUES ('settings', ?1)
             ON CONFLICT(key) DO UPDATE SET value = excluded.value",
            [json(settings)?],
        )?;
        Ok(())
    }

    /// The execution provider of the most recently started job (`cpu`,
    /// `cuda`), i.e. what separation really runs on.
    ///
    /// # Errors
    /// Database errors.
    pub fn last_provider(&self) -> Result<Option<String>, QueueError> {
        Ok(self
            .conn()
            .query_row(
                "SELECT provider FROM jobs WHERE provider IS NOT NULL ORDER BY COALESCE(started_ms, 0) DESC, id DESC LIMIT 1",
                [],
                |r| r.get(0),
            )
            .optional()?)
    }

    /// Fold one measured segment time (seconds of network plus bookkeeping
    /// per segment) into this machine's running mean for `model` on
    /// `provider`. The mean weights recent runs more (exponential, factor
    /// 0.2) once 5 samples exist, so it follows driver or hardware changes.
    ///
    /// # Errors
    /// Database errors.
    pub fn record_segment_seconds(&self, model: &str, provider: &str, seconds: f64) -> Result<(), QueueError> {
        if !seconds.is_finite() || seconds <= 0.0 {
            return Ok(());
        }
        self.conn().execute(
            "INSERT INTO segment_times (model, provider, seconds, samples) VALUES (?1, ?2, ?3, 1)
             ON CONFLICT(model, provider) DO UPDATE SET
               seconds = CASE WHEN samples < 5 THEN (seconds * samples + excluded.seconds) / (samples + 1)
                              ELSE seconds * 0.8 + excluded.seconds * 0.2 END,
               samples = samples + 1",
            params![model, provider, seconds],
        )?;
        Ok(())
    }

    /// This machine's mean seconds per segment for `model` on `provider`.
    ///
    /// # Errors
    /// Database errors.
    pub fn segment_seconds(&self, model: &str, provider: &str) -> Result<Option<f64>, QueueError> {
        Ok(self
            .conn()
            .query_row(
                "SELECT seconds FROM segment_times WHERE model = ?1 AND provider = ?2",
                params![model, provider],
                |r| r.get(0),
            )
            .optional()?)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

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
        // Running: cannot be removed, retried, reordered or cancelled as queued.
        assert!(matches!(q.remove(c.id), Err(QueueError::WrongState { .. })));
        assert!(matches!(q.retry(c.id), Err(QueueError::WrongState { .. })));
        assert!(matches!(q.reorder(&[c.id]), Err(QueueError::WrongState { .. })));
        assert!(matches!(q.cancel_queued(c.id), Err(QueueError::WrongState { .. })));
        q.finish(c.id, &JobState::Failed { code: ErrorCode::BadInput, message: "not audio".into() }, None, &[])
            .unwrap();
        assert_eq!(q.cancel_queued(a.id).unwrap().state, JobState::Cancelled);
        let retried = q.retry(c.id).unwrap();
        assert_eq!(retried.state, JobState::Queued);
        assert!(retried.position > b.position);
        assert_eq!(q.remove(b.id).unwrap().id, b.id);
        assert!(matches!(q.get(b.id), Err(QueueError::NotFound(_))));
        assert!(matches!(q.remove(999), Err(QueueError::NotFound(999))));
        let ids: Vec<_> = q.queue().unwrap().iter().map(|j| (j.id, j.state.status())).collect();
        assert_eq!(ids, [(c.id, "queued"), (a.id, "cancelled")]);
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
            q.save_settings(&Settings { format: OutputFormat::Mp3 { kbps: 100 }, ..s }),
            Err(QueueError::InvalidSettings(_))
        ));
    }

    #[test]
    fn settings_from_an_older_version_keep_their_fields() {
        let dir = tempfile::tempdir().unwrap();
        let q = Queue::open(&dir.path().join("db.sqlite")).unwrap();
        q.conn().execute("INSERT INTO settings (key, value) VALUES ('settings', '{\"shifts\": 3}')", []).unwrap();
        assert_eq!(q.settings().unwrap(), Settings { shifts: 3, ..Settings::default() });
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
        let junk = dir.path().join("junk.sqlite");
        std::fs::write(&junk, vec![7u8; 4096]).unwrap();
        assert!(matches!(Queue::open(&junk), Err(QueueError::Open { .. })));
    }
}

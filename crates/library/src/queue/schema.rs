//! The database schema: numbered migrations, and rows to [`Job`]s.

use rusqlite::{Connection, OptionalExtension};
use serde::{Deserialize, Serialize};

use stemroom_engine::ErrorCode;

use super::{Job, JobId, JobSource, JobState, QueueError, Settings};

/// Numbered schema migrations; entry `i` takes `user_version` from `i` to `i + 1`.
pub const MIGRATIONS: &[&str] = &[
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
    // 3: the album a file's tags name.
    "ALTER TABLE jobs ADD COLUMN album TEXT;",
    // 4: jobs handed to remote workers through a broker (`stemroom serve
    // --broker`): whether the job is on the stream, which stream entry and
    // worker hold it, how many times it was claimed, the last error.
    "CREATE TABLE broker (
        job_id INTEGER PRIMARY KEY,
        published INTEGER NOT NULL DEFAULT 0,
        message TEXT,
        worker TEXT,
        attempts INTEGER NOT NULL DEFAULT 0,
        last_error TEXT
    );",
    // 5: a finished song's tempo and key (JSON `SongAnalysis`).
    "ALTER TABLE jobs ADD COLUMN analysis TEXT;",
    // 6: who added the job: 'app' (the app, the default, also for every job
    // of an older database) or 'api' (`stemroom serve`'s clients). Only the
    // API's jobs expire with `--keep-days`.
    "ALTER TABLE jobs ADD COLUMN origin TEXT NOT NULL DEFAULT 'app';",
    // 7: how many times in a row the process died while running the job
    // (see `Queue::recover`); a retry starts it from zero.
    "ALTER TABLE jobs ADD COLUMN interruptions INTEGER NOT NULL DEFAULT 0;",
    // 8: the furthest segment any run of the job reported separating (-1:
    // none): only a run that gets past it resets `interruptions`.
    "ALTER TABLE jobs ADD COLUMN reached INTEGER NOT NULL DEFAULT -1;",
    // 9: 1 when a cancel of the running job was asked (`Queue::note_cancel`):
    // a process that dies before the run stops leaves it cancelled, not
    // queued again (`Queue::recover`). 0 again whenever it is claimed.
    "ALTER TABLE jobs ADD COLUMN cancel_requested INTEGER NOT NULL DEFAULT 0;",
];

pub(super) const JOB_COLUMNS: &str =
    "id, source, title, duration_seconds, options, state, position, created_ms, started_ms, finished_ms, output_dir, stems, provider, uploader, thumbnail, album, analysis";

pub(super) fn json<T: Serialize>(v: &T) -> Result<String, QueueError> {
    serde_json::to_string(v).map_err(|e| QueueError::Corrupt(e.to_string()))
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
        row.get(15)?,
        row.get(16)?,
    ))
}

/// Parse one JSON column of a job row, noting in `damage` what could not
/// be read.
fn lenient<T: for<'de> Deserialize<'de>>(text: &str, what: &str, damage: &mut Vec<String>) -> Option<T> {
    match serde_json::from_str(text) {
        Ok(v) => Some(v),
        Err(e) => {
            damage.push(format!("{what}: {e}"));
            None
        }
    }
}

/// A job row as a [`Job`], and what of it could not be read. A column that
/// does not parse (written by a newer Stemroom, or damaged) gets a stand-in,
/// so that one such row does not make the whole queue or library
/// unreadable: an unreadable state reads as failed, source as an empty
/// file path, options as the defaults, stems as none.
fn to_job(r: RawJob) -> Result<(Job, Option<String>), QueueError> {
    let id = u32::try_from(r.0).map_err(|_| QueueError::Corrupt(format!("job id {} out of range", r.0)))?;
    let mut damage = Vec::new();
    let source = lenient(&r.1, "source", &mut damage).unwrap_or(JobSource::File { path: String::new() });
    let options = lenient(&r.4, "options", &mut damage).unwrap_or_else(|| Settings::default().job_options());
    let stems = lenient(&r.11, "stems", &mut damage).unwrap_or_default();
    let state = lenient(&r.5, "state", &mut damage);
    let damage = (!damage.is_empty()).then(|| damage.join("; "));
    let state = state.unwrap_or_else(|| damaged_state(damage.as_deref().unwrap_or_default()));
    let job = Job {
        id,
        source,
        title: r.2,
        duration_seconds: r.3,
        options,
        state,
        position: i32::try_from(r.6).unwrap_or(i32::MAX),
        created_at: r.7,
        started_at: r.8,
        finished_at: r.9,
        output_dir: r.10,
        stems,
        provider: r.12,
        uploader: r.13,
        thumbnail: r.14,
        album: r.15,
        // A damaged analysis is dropped, not the job.
        analysis: r.16.and_then(|t| serde_json::from_str(&t).ok()),
    };
    Ok((job, damage))
}

/// The state of a job whose record cannot be read (`damage`: what).
pub(super) fn damaged_state(damage: &str) -> JobState {
    JobState::Failed {
        code: ErrorCode::Internal,
        message: format!(
            "This job's record cannot be read (a newer Stemroom may have written it, or it is damaged: {damage}). \
             Remove it and add the song again"
        ),
    }
}

/// Mark job `id`, whose record cannot be read (`damage`: what), failed at
/// `now_ms`, saying so, instead of running it with stand-ins.
pub(super) fn fail_damaged(conn: &Connection, id: i64, damage: &str, now_ms: f64) -> Result<(), QueueError> {
    tracing::warn!("job {id} cannot be read ({damage}): marked failed");
    conn.execute(
        "UPDATE jobs SET status = 'failed', state = ?1, finished_ms = ?2 WHERE id = ?3",
        rusqlite::params![json(&damaged_state(damage))?, now_ms, id],
    )?;
    Ok(())
}

/// Whether `e` says a row's column cannot be read as its type (a value of
/// another type, or text that is not UTF-8): that row is damaged. Other
/// errors (I/O, a locked or full database) are the database's, not the row's.
pub(super) fn unreadable_row(e: &rusqlite::Error) -> bool {
    matches!(
        e,
        rusqlite::Error::InvalidColumnType(..)
            | rusqlite::Error::FromSqlConversionFailure(..)
            | rusqlite::Error::IntegralValueOutOfRange(..)
            | rusqlite::Error::Utf8Error(..)
    )
}

/// The job `id` (columns that cannot be read get stand-ins, see [`to_job`]).
pub(super) fn job_in(conn: &Connection, id: JobId) -> Result<Job, QueueError> {
    job_in_checked(conn, id).map(|(job, _)| job)
}

/// The job `id` and what of its record could not be read.
pub(super) fn job_in_checked(conn: &Connection, id: JobId) -> Result<(Job, Option<String>), QueueError> {
    let raw = conn
        .query_row(&format!("SELECT {JOB_COLUMNS} FROM jobs WHERE id = ?1"), [id], raw_job)
        .optional()?
        .ok_or(QueueError::NotFound(id))?;
    to_job(raw)
}

/// Jobs matching `clause`; a row that cannot be read at all is left out
/// (and logged), one with unreadable columns gets stand-ins.
pub(super) fn jobs_where(
    conn: &Connection,
    clause: &str,
    args: &[&dyn rusqlite::ToSql],
) -> Result<Vec<Job>, QueueError> {
    let mut stmt = conn.prepare(&format!("SELECT {JOB_COLUMNS} FROM jobs {clause}"))?;
    let mut jobs = Vec::new();
    for raw in stmt.query_map(args, raw_job)? {
        // A column of the wrong type (a NULL title, say) leaves out its row.
        match raw.map_err(QueueError::from).and_then(to_job) {
            Ok((job, damage)) => {
                if let Some(d) = damage {
                    tracing::warn!("job {}: its record cannot be read in full: {d}", job.id);
                }
                jobs.push(job);
            }
            Err(e) => tracing::warn!("a job row is left out: {e}"),
        }
    }
    Ok(jobs)
}

pub(super) fn next_position(conn: &Connection) -> Result<i64, QueueError> {
    Ok(conn.query_row("SELECT COALESCE(MAX(position), 0) + 1 FROM jobs", [], |r| r.get(0))?)
}

//! A damaged job database: set aside, never deleted, and the queue and
//! library rebuilt from what can still be read.
//!
//! SQLite reports damage as `SQLITE_CORRUPT` ("database disk image is
//! malformed": a torn page after a failing disk, a copy taken mid-write, a
//! sync folder merging two versions) or `SQLITE_NOTADB` (the file is not a
//! database at all). Opening such a file used to stop the app with a
//! dialog, the user's whole library unreachable from it though every song
//! folder was whole. Now the owner of the data folder ([`Queue::open_owned`])
//! checks the file read-only first, builds a new database beside it with
//! every row the damaged one still gives (jobs, settings with the library
//! folder and the work tag, measured segment times, broker bookkeeping)
//! and every song folder of this database's (see
//! [`crate::song::SongMetadata::work_tag`]) that no copied job names, then
//! keeps the damaged file (with its `-wal` and `-shm`) as
//! `stemroom.sqlite.damaged-<unix ms>` and renames the new one into place.
//!
//! What is not damage leaves the file alone and is an error as before: a
//! database from a newer Stemroom (the user may go back to it), one that
//! cannot be opened for permissions, a full disk, or a lock.

use std::path::{Path, PathBuf};

use rusqlite::types::Value;
use rusqlite::{params, Connection, OpenFlags, OptionalExtension};
use serde::Serialize;

use super::schema::json;
use super::{Queue, QueueError, MIGRATIONS};
use crate::lock::InstanceLock;
use crate::song::{complete_song, SongMetadata, METADATA_FILE};

/// What opening a damaged job database did: where it was set aside, and
/// what the new one was built from.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[cfg_attr(feature = "specta", derive(specta::Type))]
#[serde(rename_all = "camelCase")]
pub struct Recovery {
    /// Where the damaged database now is (a copy of its `-wal`, when there
    /// was one, beside it with that suffix).
    pub set_aside: String,
    /// What SQLite said of it.
    pub problem: String,
    /// Jobs (queued, finished, failed, …) read back from it.
    pub jobs_read: u32,
    /// Songs filed again from their folders' `stemroom.json` (those no job
    /// read back names).
    pub songs_found: u32,
}

/// Tables copied from a damaged database, in this order (settings first:
/// the work tag and the library folder come from it).
const TABLES: [&str; 4] = ["settings", "segment_times", "jobs", "broker"];

impl Queue {
    /// [`Queue::open`] for the process that owns the data folder holding
    /// `path` (`owner` is its [`InstanceLock`]), which first checks the
    /// database (`PRAGMA quick_check`, on a read-only connection: nothing
    /// is written to a damaged file) and, when it is damaged, rebuilds it
    /// (module docs). `default_library` is the library folder used when the
    /// settings name none; it, the one the settings read back name and the
    /// folders the read-back jobs' songs are in are searched for song
    /// folders. Those whose `stemroom.json` names this database's work tag
    /// are filed again (none that name a tag when the tag was lost); those
    /// naming none (written before the tag was recorded) only when
    /// `adopt_untagged` (the app, whose library this is; not a server
    /// sharing it, which would take the app's songs for its clients') or
    /// the library is inside the data folder (a server's own).
    ///
    /// The new database is built beside the damaged one (`.rebuilding`),
    /// renamed `.rebuilt` once whole, and then takes the damaged one's
    /// place (`swap_in`); the damaged file is kept under another name
    /// first. A stop during the build leaves the damaged file in place for
    /// the next start to rebuild; one after it, a `.rebuilt` file that the
    /// next start puts in place first.
    ///
    /// # Errors
    /// [`QueueError::NotOwner`] when `owner` locks another folder; those of
    /// [`Queue::open`] that are not damage (a newer database, permissions,
    /// a full disk), and errors building the new database or setting the
    /// damaged one aside (the damaged file is then left as it was).
    pub fn open_owned(
        path: &Path,
        owner: &InstanceLock,
        default_library: &Path,
        adopt_untagged: bool,
    ) -> Result<(Queue, Option<Recovery>), QueueError> {
        check_owner_of(path, owner)?;
        let io = |e: std::io::Error| QueueError::Open {
            path: path.to_path_buf(),
            source: rusqlite::Error::ToSqlConversionFailure(Box::new(e)),
        };
        // A rebuild whose new database was whole, stopped while it took
        // the damaged one's place: finished now.
        let rebuilt = with_suffix(path, ".rebuilt");
        if rebuilt.is_file() {
            let kept = swap_in(path, &rebuilt).map_err(io)?;
            tracing::warn!(
                "finished an interrupted rebuild of {} (the damaged file kept as {})",
                path.display(),
                kept.display()
            );
        }
        let problem = match damage_before_open(path) {
            Some(problem) => problem,
            None => match Queue::open(path) {
                Ok(queue) => {
                    write_tag_file(path, queue.work_tag());
                    return Ok((queue, None));
                }
                Err(e) => match damage_of(&e) {
                    Some(problem) => problem,
                    None => return Err(e),
                },
            },
        };
        // A newer Stemroom's database is left to it, damaged or not (its
        // columns would not come across).
        if let Some(found) = schema_version_in_header(path).filter(|&v| v > MIGRATIONS.len() as i64) {
            return Err(QueueError::TooNew { found, known: MIGRATIONS.len() as i64 });
        }
        tracing::error!("the job database {} is damaged ({problem}); rebuilding it", path.display());
        let building = with_suffix(path, ".rebuilding");
        for suffix in ["", "-wal", "-shm", "-journal"] {
            match std::fs::remove_file(with_suffix(&building, suffix)) {
                Err(e) if e.kind() != std::io::ErrorKind::NotFound => return Err(io(e)),
                _ => {}
            }
        }
        let (jobs_read, songs_found) = match build_from(&building, path, default_library, adopt_untagged) {
            Ok(counts) => counts,
            Err(e) => {
                let _ = std::fs::remove_file(&building);
                return Err(e);
            }
        };
        // Whole: from here a stop finishes the swap at the next start.
        std::fs::rename(&building, &rebuilt).map_err(io)?;
        if let Some(dir) = path.parent() {
            stemroom_engine::files::sync_dir(dir);
        }
        let set_aside = swap_in(path, &rebuilt).map_err(io)?;
        let queue = Queue::open(path)?;
        write_tag_file(path, queue.work_tag());
        let recovery =
            Recovery { set_aside: set_aside.to_string_lossy().into_owned(), problem, jobs_read, songs_found };
        tracing::warn!(
            "job database rebuilt: {jobs_read} job(s) read back from {}, {songs_found} song(s) filed again from \
             their folders",
            set_aside.display()
        );
        Ok((queue, Some(recovery)))
    }

    /// Copy every row the database at `damaged` still gives into this one
    /// (a fresh one), table by table and row by row: a row that cannot be
    /// read is left out, a table that cannot be walked is read up to
    /// where it breaks. Only columns both schemas have are copied (an
    /// older database's rows get the newer columns' defaults). Returns the
    /// jobs copied.
    fn copy_from(&self, damaged: &Path) -> Result<u32, QueueError> {
        let old =
            Connection::open_with_flags(damaged, OpenFlags::SQLITE_OPEN_READ_ONLY | OpenFlags::SQLITE_OPEN_NO_MUTEX)?;
        let mut conn = self.conn();
        let tx = conn.transaction()?;
        let mut jobs = 0;
        for table in TABLES {
            let Ok(theirs) = columns(&old, table) else { continue };
            let Ok(ours) = columns(&tx, table) else { continue };
            let shared: Vec<&String> = ours.iter().filter(|c| theirs.contains(c)).collect();
            if shared.is_empty() {
                continue;
            }
            let list = shared.iter().map(|c| format!("\"{c}\"")).collect::<Vec<_>>().join(", ");
            let marks = vec!["?"; shared.len()].join(", ");
            let rowids = rowids(&old, table);
            let Ok(mut read) = old.prepare(&format!("SELECT {list} FROM \"{table}\" WHERE rowid = ?1")) else {
                continue;
            };
            let mut write = tx.prepare(&format!("INSERT OR REPLACE INTO \"{table}\" ({list}) VALUES ({marks})"))?;
            for rowid in rowids {
                let row: rusqlite::Result<Vec<Value>> =
                    read.query_row([rowid], |r| (0..shared.len()).map(|i| r.get::<_, Value>(i)).collect());
                let row = match row {
                    Ok(row) => row,
                    Err(e) => {
                        tracing::warn!("{table} row {rowid} cannot be read back: {e}");
                        continue;
                    }
                };
                match write.execute(rusqlite::params_from_iter(row)) {
                    Ok(_) if table == "jobs" => jobs += 1,
                    Ok(_) => {}
                    // A row that breaks a constraint (a NULL read back
                    // where none may be) is left out.
                    Err(e) => tracing::warn!("{table} row {rowid} cannot be copied: {e}"),
                }
            }
        }
        tx.commit()?;
        Ok(jobs)
    }

    /// File again every song folder directly inside `library` whose
    /// `stemroom.json` reads, lists stems that are all there, is this
    /// database's (`mine`), and is not a job's folder already (a job with
    /// its id and creation time, or recorded in that folder). Each becomes
    /// a finished job under the id its file names, or a new one when that
    /// id is taken (its `stemroom.json` then names the new one). A working
    /// folder of this database (`tag`) holding a whole song whose job was
    /// not read back (separated, not filed yet) is filed into the library
    /// first. Each is recorded as added through the HTTP service when
    /// `from_api` says so (its songs expire with `--keep-days` as they did
    /// before the rebuild). Returns how many.
    fn file_song_folders(
        &self,
        library: &Path,
        tag: &str,
        mine: &dyn Fn(&SongMetadata) -> bool,
        from_api: &dyn Fn(&SongMetadata) -> bool,
    ) -> u32 {
        let Ok(entries) = std::fs::read_dir(library) else { return 0 };
        let mut filed = 0;
        for entry in entries.flatten() {
            let name = entry.file_name().to_string_lossy().into_owned();
            let mut dir = entry.path();
            // A link to a folder elsewhere is not followed.
            if !entry.file_type().is_ok_and(|t| t.is_dir()) {
                continue;
            }
            // This database's working folders (and the untagged form of
            // earlier versions, which the worker takes as this database's).
            let partial = crate::song::partial_job(&name, tag).map(|(id, _)| id);
            if name.starts_with('.') && partial.is_none() {
                continue;
            }
            let Some(mut meta) = complete_song(&dir) else { continue };
            if partial.is_none() && !mine(&meta) {
                continue;
            }
            if let Some(id) = partial {
                // Its job was read back (readable or not): the worker files
                // it, or keeps it for Retry.
                let known = self.conn().query_row("SELECT 1 FROM jobs WHERE id = ?1", [id], |_| Ok(())).optional();
                if !matches!(known, Ok(None)) {
                    continue;
                }
                match crate::song::publish_song(library, &dir, &meta.title) {
                    Ok(published) => dir = published,
                    Err(e) => {
                        // Kept for Retry: a failed job of that id holds the
                        // folder (the worker removes working folders no
                        // job holds).
                        tracing::warn!("{} cannot be filed: {e}", dir.display());
                        match self.hold_unfiled(id, &meta, &e.to_string()) {
                            Ok(()) if from_api(&meta) => self.mark_api(id),
                            Ok(()) => {}
                            Err(e) => tracing::warn!("{}: no job holds it ({e})", dir.display()),
                        }
                        continue;
                    }
                }
            }
            match self.file_song(&dir, &meta) {
                Ok(Some(id)) => {
                    filed += 1;
                    if from_api(&meta) {
                        self.mark_api(id);
                    }
                    if meta.job != Some(id) || meta.work_tag.as_deref() != Some(tag) {
                        // What it is now: a song found again names its job.
                        meta.job = Some(id);
                        meta.work_tag = Some(tag.to_string());
                        if let Err(e) = meta.write(&dir) {
                            tracing::warn!("{}: its stemroom.json cannot name job {id}: {e}", dir.display());
                        }
                    }
                }
                Ok(None) => {}
                Err(e) => tracing::warn!("{} cannot be filed again: {e}", dir.display()),
            }
        }
        filed
    }

    /// Record job `id` as added through the HTTP service (logged if not).
    fn mark_api(&self, id: u32) {
        if let Err(e) = self.mark_from_api(id) {
            tracing::warn!("job {id}: not recorded as the HTTP service's, so it does not expire: {e}");
        }
    }

    /// Record a failed job `id` for a separated song that could not be
    /// filed from its working folder (as the worker records one): Retry
    /// files it, removing the job removes it.
    fn hold_unfiled(&self, id: u32, meta: &SongMetadata, why: &str) -> Result<(), QueueError> {
        let failed = super::JobState::Failed {
            code: stemroom_engine::ErrorCode::Output,
            message: format!("The song is separated but could not be filed into the library ({why}); Retry files it"),
        };
        self.conn().execute(
            "INSERT INTO jobs (id, source, title, duration_seconds, options, state, status, position, created_ms,
                               finished_ms, provider)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, 'failed', 0, ?7, ?8, ?9)",
            params![
                id,
                json(&meta.source)?,
                meta.title,
                meta.duration_seconds,
                json(&meta.options)?,
                json(&failed)?,
                meta.created_at,
                meta.created_at + meta.seconds * 1000.0,
                meta.provider,
            ],
        )?;
        Ok(())
    }

    /// File the song in `dir` as a finished job, unless one already names
    /// it. Returns the job's id when it was filed.
    fn file_song(&self, dir: &Path, meta: &SongMetadata) -> Result<Option<u32>, QueueError> {
        let mut conn = self.conn();
        let tx = conn.transaction()?;
        let output_dir = dir.to_string_lossy().into_owned();
        let known: Option<i64> = tx
            .query_row(
                "SELECT id FROM jobs WHERE (id = ?1 AND created_ms = ?2) OR output_dir = ?3 LIMIT 1",
                params![meta.job, meta.created_at, output_dir],
                |r| r.get(0),
            )
            .optional()?;
        if known.is_some() {
            return Ok(None);
        }
        let free = match meta.job {
            Some(id) => tx.query_row("SELECT id FROM jobs WHERE id = ?1", [id], |_| Ok(())).optional()?.is_none(),
            None => false,
        };
        // When it was filed: its `stemroom.json` was written last.
        let finished_ms =
            super::modified_millis(&dir.join(METADATA_FILE)).unwrap_or(meta.created_at + meta.seconds * 1000.0);
        let analysis = meta.analysis.as_ref().map(json).transpose()?;
        tx.execute(
            "INSERT INTO jobs (id, source, title, duration_seconds, options, state, status, position, created_ms,
                               started_ms, finished_ms, output_dir, stems, provider, analysis)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, 'done', 0, ?7, ?8, ?9, ?10, ?11, ?12, ?13)",
            params![
                meta.job.filter(|_| free),
                json(&meta.source)?,
                meta.title,
                meta.duration_seconds,
                json(&meta.options)?,
                json(&super::JobState::Done)?,
                meta.created_at,
                finished_ms - meta.seconds * 1000.0,
                finished_ms,
                output_dir,
                json(&meta.stems_in(dir))?,
                meta.provider,
                analysis,
            ],
        )?;
        let id =
            u32::try_from(tx.last_insert_rowid()).map_err(|_| QueueError::Corrupt("job id out of range".into()))?;
        tx.commit()?;
        Ok(Some(id))
    }
}

/// Whether an error opening the database says it is damaged, and how.
fn damage_of(e: &QueueError) -> Option<String> {
    match e {
        QueueError::Open { source, .. } | QueueError::Sql(source) => match source.sqlite_error_code() {
            Some(rusqlite::ErrorCode::DatabaseCorrupt | rusqlite::ErrorCode::NotADatabase) => Some(source.to_string()),
            _ => None,
        },
        QueueError::Corrupt(problem) => Some(problem.clone()),
        _ => None,
    }
}

/// SQLite's own check of an open database's pages and b-trees
/// (`PRAGMA quick_check`, the first problem only): `Err` with what it found.
fn quick_check(conn: &Connection) -> Result<(), String> {
    match conn.query_row("PRAGMA quick_check(1)", [], |r| r.get::<_, String>(0)) {
        Ok(ok) if ok == "ok" => Ok(()),
        Ok(problem) => Err(problem),
        Err(e) => match e.sqlite_error_code() {
            Some(rusqlite::ErrorCode::DatabaseCorrupt | rusqlite::ErrorCode::NotADatabase) => Err(e.to_string()),
            // Not damage (a lock held a moment too long): the database is
            // used as it is, and any damage shows at the next start.
            _ => {
                tracing::warn!("the job database could not be checked: {e}");
                Ok(())
            }
        },
    }
}

/// `path` with `suffix` after its name (`-wal`, `.rebuilding`).
fn with_suffix(path: &Path, suffix: &str) -> PathBuf {
    let mut s = path.as_os_str().to_owned();
    s.push(suffix);
    PathBuf::from(s)
}

/// Whether `owner` locks the folder holding the database at `path`.
///
/// # Errors
/// [`QueueError::NotOwner`].
pub(super) fn check_owner_of(path: &Path, owner: &InstanceLock) -> Result<(), QueueError> {
    let here = path.parent().map(|d| d.canonicalize().unwrap_or_else(|_| d.to_path_buf()));
    let locked = owner.dir().canonicalize().unwrap_or_else(|_| owner.dir().to_path_buf());
    if here.as_deref() != Some(locked.as_path()) {
        return Err(QueueError::NotOwner { lock: locked, database: path.to_path_buf() });
    }
    Ok(())
}

/// What SQLite's own check finds wrong with the database at `path`, read
/// through a read-only connection (no migration, no checkpoint on close:
/// a damaged file is not written to before it is set aside). `None` for a
/// whole database, a missing file, an empty one without a work tag kept
/// beside it (a new database), or one that cannot be checked read-only
/// (left to [`Queue::open`]).
fn damage_before_open(path: &Path) -> Option<String> {
    match std::fs::metadata(path) {
        // A database that was there (its work tag is kept beside it) and
        // is empty now: a sync tool's placeholder, a file system repair.
        // Opened as new, its songs would not come back and its tag would
        // be replaced by a new one; rebuilt, they are filed again.
        Ok(m) if m.len() == 0 && read_tag_file(path).is_some() => {
            return Some("the database file is empty".into());
        }
        Ok(m) if m.len() > 0 => {}
        _ => return None,
    }
    let conn =
        Connection::open_with_flags(path, OpenFlags::SQLITE_OPEN_READ_ONLY | OpenFlags::SQLITE_OPEN_NO_MUTEX).ok()?;
    quick_check(&conn).err()
}

/// Make the database at `building` from the damaged one at `damaged`:
/// every row it still gives, then the song folders of the libraries (see
/// [`Queue::open_owned`]). Left whole on disk with no log beside it.
/// Returns the jobs read back and the songs filed again.
///
/// # Errors
/// Errors making or writing `building` (a full disk): the rebuild stops.
fn build_from(
    building: &Path,
    damaged: &Path,
    default_library: &Path,
    adopt_untagged: bool,
) -> Result<(u32, u32), QueueError> {
    let queue = Queue::open(building)?;
    let fresh_tag = queue.work_tag.clone();
    let jobs_read = queue.copy_from(damaged)?;
    // The damaged database's work tag (its jobs' working folders and its
    // songs carry it): its row when it came back whole, else the copy kept
    // beside the database, else a read-back song's; else this new one's.
    let read_back = Queue::work_tag_of(&queue.conn()).ok().filter(|t| *t != fresh_tag);
    let tag = read_back.or_else(|| read_tag_file(damaged)).or_else(|| {
        queue.library("").unwrap_or_default().iter().find_map(|job| {
            let meta = complete_song(Path::new(job.output_dir.as_deref()?))?;
            (meta.job == Some(job.id) && meta.created_at == job.created_at).then_some(meta.work_tag).flatten()
        })
    });
    let tag_known = tag.is_some();
    let tag = tag.unwrap_or(fresh_tag);
    queue.conn().execute(
        "INSERT INTO settings (key, value) VALUES ('work_tag', ?1) ON CONFLICT(key) DO UPDATE SET value = excluded.value",
        [&tag],
    )?;
    {
        let conn = queue.conn();
        // Broker bookkeeping of jobs not read back would hold new jobs
        // under their ids.
        conn.execute("DELETE FROM broker WHERE job_id NOT IN (SELECT id FROM jobs)", [])?;
        // New jobs take ids past every one the damaged database gave out
        // (a client may still ask about a lost one).
        let old_seq: i64 = Connection::open_with_flags(damaged, OpenFlags::SQLITE_OPEN_READ_ONLY)
            .and_then(|c| c.query_row("SELECT seq FROM sqlite_sequence WHERE name = 'jobs'", [], |r| r.get(0)))
            .unwrap_or(0);
        let seq: i64 = conn.query_row("SELECT COALESCE(MAX(id), 0) FROM jobs", [], |r| r.get(0))?;
        if old_seq > seq && conn.execute("UPDATE sqlite_sequence SET seq = ?1 WHERE name = 'jobs'", [old_seq])? == 0 {
            conn.execute("INSERT INTO sqlite_sequence (name, seq) VALUES ('jobs', ?1)", [old_seq])?;
        }
    }
    // Where songs are: the default library, the one the settings name,
    // and the folders holding the songs read back (a library moved).
    let mut libraries = vec![default_library.to_path_buf()];
    libraries.extend(queue.settings().ok().and_then(|s| s.library_dir).map(PathBuf::from));
    libraries.extend(
        queue
            .library("")
            .unwrap_or_default()
            .iter()
            .filter_map(|j| j.output_dir.as_deref().and_then(|d| Path::new(d).parent()).map(Path::to_path_buf)),
    );
    let mut seen = Vec::new();
    let mut songs_found = 0;
    // A song a server's client sent (its input was an upload in this data
    // folder's `uploads`) is the client's again; any other keeps the
    // default origin, whose songs never expire (the app's own, in the
    // data folder a server may share with it).
    let uploads = damaged.parent().and_then(|d| d.join("uploads").canonicalize().ok());
    let from_api = |meta: &SongMetadata| {
        !adopt_untagged
            && matches!(&meta.source, super::JobSource::File { path }
                if Path::new(path).parent().and_then(|p| p.canonicalize().ok()) == uploads && uploads.is_some())
    };
    // A library inside the data folder is this database's alone.
    let data_dir = damaged.parent().and_then(|d| d.canonicalize().ok());
    for library in libraries {
        let key = library.canonicalize().unwrap_or_else(|_| library.clone());
        if seen.contains(&key) {
            continue;
        }
        let adopt = adopt_untagged || data_dir.as_ref().is_some_and(|d| key.starts_with(d));
        // (Without this database's tag, no tagged song is taken: it may
        // be another database's.)
        let mine = |meta: &SongMetadata| match meta.work_tag.as_deref() {
            Some(t) => tag_known && t == tag,
            None => adopt,
        };
        seen.push(key);
        songs_found += queue.file_song_folders(&library, &tag, &mine, &from_api);
    }
    // Whole in the file, no log to carry along.
    let conn = queue.conn();
    conn.execute_batch("PRAGMA wal_checkpoint(TRUNCATE); PRAGMA journal_mode = DELETE;")?;
    drop(conn);
    drop(queue);
    Ok((jobs_read, songs_found))
}

/// Put the database built at `rebuilt` in the place of the damaged one at
/// `path`, which is kept as `<name>.damaged-<unix ms>` (never over an
/// existing file): the file linked there (or copied, where the file system
/// has no hard links) and its log (`-wal`) copied beside it, then its log
/// and index (`-shm`) removed (SQLite would replay that log into the new
/// database), then the new one renamed over it. Every step can run again:
/// a stop anywhere leaves `rebuilt` for the next start to finish with (a
/// second kept copy at worst). Returns the kept file's path.
fn swap_in(path: &Path, rebuilt: &Path) -> std::io::Result<PathBuf> {
    let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_millis());
    let name = path.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_else(|| "stemroom.sqlite".into());
    let mut n = 0;
    let aside = loop {
        let candidate = path.with_file_name(match n {
            0 => format!("{name}.damaged-{now}"),
            _ => format!("{name}.damaged-{now}-{n}"),
        });
        let taken = |p: &Path| std::fs::symlink_metadata(p).is_ok();
        if !taken(&candidate) && !taken(&with_suffix(&candidate, "-wal")) {
            break candidate;
        }
        n += 1;
    };
    if std::fs::symlink_metadata(path).is_ok() && std::fs::hard_link(path, &aside).is_err() {
        std::fs::copy(path, &aside)?;
        std::fs::File::open(&aside)?.sync_all()?;
    }
    let wal = with_suffix(path, "-wal");
    if std::fs::symlink_metadata(&wal).is_ok() {
        let kept = with_suffix(&aside, "-wal");
        std::fs::copy(&wal, &kept)?;
        std::fs::File::open(&kept)?.sync_all()?;
    }
    if let Some(dir) = path.parent() {
        stemroom_engine::files::sync_dir(dir);
    }
    for log in [wal, with_suffix(path, "-shm")] {
        match std::fs::remove_file(&log) {
            Err(e) if e.kind() != std::io::ErrorKind::NotFound => return Err(e),
            _ => {}
        }
    }
    std::fs::rename(rebuilt, path)?;
    if let Some(dir) = path.parent() {
        stemroom_engine::files::sync_dir(dir);
    }
    Ok(aside)
}

/// The schema version (`PRAGMA user_version`) in the database file's
/// header (bytes 60-63, big-endian: SQLite's file format), read without
/// SQLite; `None` when the file has no such header.
fn schema_version_in_header(path: &Path) -> Option<i64> {
    use std::io::Read;
    let mut head = [0u8; 64];
    std::fs::File::open(path).ok()?.read_exact(&mut head).ok()?;
    (&head[..16] == b"SQLite format 3\0")
        .then(|| i64::from(i32::from_be_bytes([head[60], head[61], head[62], head[63]])))
}

/// The work tag kept beside the database (`<name>.tag`), so that a rebuild
/// that reads nothing back still knows which song folders are this
/// database's. Best effort: a failure is logged.
fn write_tag_file(path: &Path, tag: &str) {
    let file = with_suffix(path, ".tag");
    if std::fs::read_to_string(&file).is_ok_and(|t| t.trim() == tag) {
        return;
    }
    let part = with_suffix(&file, ".part");
    let written = std::fs::write(&part, tag).and_then(|()| std::fs::rename(&part, &file));
    if let Err(e) = written {
        let _ = std::fs::remove_file(&part);
        tracing::warn!("cannot keep the work tag in {}: {e}", file.display());
    }
}

/// The work tag kept beside the database, when it is one.
fn read_tag_file(path: &Path) -> Option<String> {
    let tag = std::fs::read_to_string(with_suffix(path, ".tag")).ok()?.trim().to_string();
    (!tag.is_empty() && tag.len() <= 16 && tag.bytes().all(|b| b.is_ascii_alphanumeric())).then_some(tag)
}

/// The column names of `table` (an error when there is no such table or
/// its schema cannot be read).
fn columns(conn: &Connection, table: &str) -> rusqlite::Result<Vec<String>> {
    let mut stmt = conn.prepare(&format!("PRAGMA table_info(\"{table}\")"))?;
    let names = stmt.query_map([], |r| r.get::<_, String>(1))?.collect::<rusqlite::Result<Vec<_>>>()?;
    if names.is_empty() {
        return Err(rusqlite::Error::QueryReturnedNoRows);
    }
    Ok(names)
}

/// The rowids of `table`: walked on the table itself (`NOT INDEXED`: a
/// damaged index must not hide rows), and where the walk breaks, each id
/// after the last one read asked for on its own, up to the largest id the
/// table or `sqlite_sequence` gives (at most [`MAX_PROBES`]).
fn rowids(conn: &Connection, table: &str) -> Vec<i64> {
    let mut ids = Vec::new();
    let Ok(mut stmt) = conn.prepare(&format!("SELECT rowid FROM \"{table}\" NOT INDEXED")) else { return ids };
    let Ok(rows) = stmt.query_map([], |r| r.get::<_, i64>(0)) else { return ids };
    let mut broke = false;
    for row in rows {
        match row {
            Ok(id) => ids.push(id),
            Err(e) => {
                tracing::warn!("{table} can be walked only up to row {}: {e}", ids.last().copied().unwrap_or(0));
                broke = true;
                break;
            }
        }
    }
    if broke {
        let last = ids.last().copied().unwrap_or(0);
        let max = |sql: &str| conn.query_row(sql, [table], |r| r.get::<_, Option<i64>>(0)).ok().flatten();
        let top = max(&format!("SELECT max(rowid) FROM \"{table}\" WHERE ?1 IS NOT NULL"))
            .into_iter()
            .chain(max("SELECT seq FROM sqlite_sequence WHERE name = ?1"))
            .max()
            .unwrap_or(last);
        let mut probe = conn.prepare(&format!("SELECT rowid FROM \"{table}\" WHERE rowid = ?1")).ok();
        for id in (last + 1)..=top.min(last.saturating_add(MAX_PROBES)) {
            if let Some(found) = probe.as_mut().and_then(|p| p.query_row([id], |r| r.get::<_, i64>(0)).ok()) {
                ids.push(found);
            }
        }
    }
    ids
}

/// Most ids asked for one by one past a break in a table (jobs are
/// numbered from 1; a library of a million songs is beyond any person's).
const MAX_PROBES: i64 = 1_000_000;

#[cfg(test)]
mod tests {
    use super::*;
    use crate::queue::{JobSource, JobState, Settings, StemFile};

    /// A finished song filed in `library` the way the worker files one:
    /// its folder (named for its title), two stems and its `stemroom.json`;
    /// recorded in `queue` as done.
    fn filed_song(queue: &Queue, library: &Path, title: &str) -> crate::queue::Job {
        let job = queue.enqueue(&JobSource::File { path: format!("/music/{title}.flac") }, title, &opts()).unwrap();
        // Ahead of any queued job: claimed next.
        queue.reorder(&[job.id]).unwrap();
        let claimed = queue.claim_next().unwrap().unwrap();
        assert_eq!(claimed.id, job.id);
        let dir = library.join(title);
        std::fs::create_dir_all(&dir).unwrap();
        let stems: Vec<StemFile> = ["drums", "vocals"]
            .iter()
            .map(|s| {
                std::fs::write(dir.join(format!("{s}.wav")), b"RIFF").unwrap();
                StemFile { stem: (*s).into(), path: format!("{s}.wav") }
            })
            .collect();
        SongMetadata::new(&job, stems.clone(), 4.0, Some("cpu".into()), Some(180.0)).write(&dir).unwrap();
        let in_dir: Vec<StemFile> = stems
            .iter()
            .map(|s| StemFile { stem: s.stem.clone(), path: dir.join(&s.path).to_string_lossy().into_owned() })
            .collect();
        queue.finish(job.id, &JobState::Done, Some(&dir.to_string_lossy()), &in_dir).unwrap()
    }

    fn opts() -> crate::queue::JobOptions {
        Settings::default().job_options()
    }

    fn titles(jobs: &[crate::queue::Job]) -> Vec<String> {
        let mut t: Vec<String> = jobs.iter().map(|j| j.title.clone()).collect();
        t.sort();
        t
    }

    /// A file that is not a database at all: set aside byte for byte, and
    /// the library rebuilt from the song folders (not from hidden, working
    /// or incomplete ones).
    #[test]
    fn a_file_that_is_no_database_is_set_aside_and_the_songs_are_filed_again() {
        let data = tempfile::tempdir().unwrap();
        let library = data.path().join("Stemroom");
        let db = data.path().join("stemroom.sqlite");
        let lock = InstanceLock::acquire(data.path()).unwrap().unwrap();
        {
            let (q, recovery) = Queue::open_owned(&db, &lock, &library, true).unwrap();
            assert!(recovery.is_none(), "a new database is no damage");
            filed_song(&q, &library, "Alpha");
            filed_song(&q, &library, "Beta");
            // Not songs: a working folder, a hidden one, one missing a stem.
            for (name, title) in [(".stemroom-partial-ab12-9", "Work"), (".hidden", "Hidden"), ("Gamma", "Gamma")] {
                let mut job = q.get(1).unwrap();
                job.title = title.into();
                job.id = 40;
                let dir = library.join(name);
                std::fs::create_dir_all(&dir).unwrap();
                let stems = vec![StemFile { stem: "drums".into(), path: "drums.wav".into() }];
                SongMetadata::new(&job, stems, 1.0, None, None).write(&dir).unwrap();
                if name != "Gamma" {
                    std::fs::write(dir.join("drums.wav"), b"RIFF").unwrap();
                }
            }
        }
        // A copy of Alpha made by another job with the same id (another
        // database): filed under a new id, which its stemroom.json then names.
        let copy = library.join("Alpha copy");
        std::fs::create_dir_all(&copy).unwrap();
        for f in ["drums.wav", "vocals.wav"] {
            std::fs::copy(library.join("Alpha").join(f), copy.join(f)).unwrap();
        }
        let mut meta = complete_song(&library.join("Alpha")).unwrap();
        meta.created_at += 1.0;
        meta.title = "Alpha copy".into();
        meta.write(&copy).unwrap();
        let garbage: Vec<u8> = (0..10_000u32).map(|i| (i * 7919 % 251) as u8).collect();
        std::fs::write(&db, &garbage).unwrap();
        // What a rebuild that crashed left: replaced.
        std::fs::write(with_suffix(&db, ".rebuilding"), b"half").unwrap();

        let (q, recovery) = Queue::open_owned(&db, &lock, &library, true).unwrap();
        let recovery = recovery.expect("damage found");
        assert_eq!(recovery.jobs_read, 0);
        assert_eq!(recovery.songs_found, 3, "{recovery:?}");
        assert!(!with_suffix(&db, ".rebuilding").exists());
        assert!(recovery.problem.contains("not a database"), "{}", recovery.problem);
        let aside = PathBuf::from(&recovery.set_aside);
        assert_eq!(aside.parent(), Some(data.path()));
        assert!(aside.file_name().unwrap().to_string_lossy().starts_with("stemroom.sqlite.damaged-"));
        assert_eq!(std::fs::read(&aside).unwrap(), garbage, "the damaged file is kept whole");

        let songs = q.library("").unwrap();
        assert_eq!(titles(&songs), ["Alpha", "Alpha copy", "Beta"]);
        // (Which of the two takes id 1 depends on the folders' order.)
        let ids: std::collections::BTreeSet<u32> = songs.iter().map(|s| s.id).collect();
        assert_eq!(ids, [1, 2, 3].into());
        for song in &songs {
            let dir = song.output_dir.as_deref().unwrap();
            assert_eq!(complete_song(Path::new(dir)).unwrap().job, Some(song.id), "its stemroom.json names its job");
        }
        let songs: Vec<_> = songs.into_iter().filter(|s| s.title != "Alpha copy").collect();
        for song in &songs {
            assert_eq!(song.state, JobState::Done);
            assert_eq!(song.output_dir.as_deref(), Some(library.join(&song.title).to_string_lossy().as_ref()));
            assert_eq!(song.stems.len(), 2);
            assert!(song.stems.iter().all(|s| Path::new(&s.path).is_file()), "{:?}", song.stems);
            assert_eq!(song.duration_seconds, Some(180.0));
            assert_eq!(song.provider.as_deref(), Some("cpu"));
            assert!(matches!(&song.source, JobSource::File { path } if path.ends_with(".flac")));
        }
        // A new job takes a new id (not one a filed song holds).
        assert_eq!(q.enqueue(&JobSource::File { path: "/x.wav".into() }, "x", &opts()).unwrap().id, 4);
        drop(q);
        // Opened again: healthy, nothing filed twice.
        let (q, recovery) = Queue::open_owned(&db, &lock, &library, true).unwrap();
        assert!(recovery.is_none());
        assert_eq!(q.library("").unwrap().len(), 3);
    }

    /// A database file emptied (a sync tool's placeholder, a file system
    /// repair) while its work tag is kept beside it: rebuilt with that tag
    /// and its songs filed again, not opened as a new database.
    #[test]
    fn an_emptied_database_keeps_its_tag_and_songs() {
        let data = tempfile::tempdir().unwrap();
        let library = data.path().join("Stemroom");
        let db = data.path().join("stemroom.sqlite");
        let lock = InstanceLock::acquire(data.path()).unwrap().unwrap();
        let tag = {
            let (q, _) = Queue::open_owned(&db, &lock, &library, true).unwrap();
            filed_song(&q, &library, "Alpha");
            q.work_tag().to_string()
        };
        for log in ["-wal", "-shm"] {
            let _ = std::fs::remove_file(with_suffix(&db, log));
        }
        std::fs::write(&db, b"").unwrap();
        let (q, recovery) = Queue::open_owned(&db, &lock, &library, true).unwrap();
        let recovery = recovery.expect("an emptied database is damage");
        assert_eq!(recovery.songs_found, 1, "{recovery:?}");
        assert_eq!(q.work_tag(), tag);
        assert_eq!(read_tag_file(&db).as_deref(), Some(tag.as_str()));
        assert_eq!(titles(&q.library("").unwrap()), ["Alpha"]);
        drop(q);
        // Without a tag kept beside it, an empty file is a new database.
        let fresh = data.path().join("other.sqlite");
        std::fs::write(&fresh, b"").unwrap();
        let (_, recovery) = Queue::open_owned(&fresh, &lock, &library, true).unwrap();
        assert!(recovery.is_none());
    }

    /// A database with a damaged page: every row still readable is read
    /// back (the settings with the library folder and work tag too), and
    /// each song whose row was lost is filed again from its folder, so
    /// every song is in the library exactly once.
    #[test]
    fn a_damaged_page_loses_no_song_and_keeps_the_settings() {
        let data = tempfile::tempdir().unwrap();
        let library = data.path().join("Music library");
        let db = data.path().join("stemroom.sqlite");
        let lock = InstanceLock::acquire(data.path()).unwrap().unwrap();
        let tag = {
            let (q, _) = Queue::open_owned(&db, &lock, &data.path().join("unused"), true).unwrap();
            let settings =
                Settings { library_dir: Some(library.to_string_lossy().into_owned()), ..q.settings().unwrap() };
            q.save_settings(&settings).unwrap();
            // Rows of ~400 bytes: the jobs table spans several pages.
            let pad = "p".repeat(300);
            for i in 0..30 {
                q.enqueue(&JobSource::File { path: format!("/m/{pad}/{i}.wav") }, &format!("queued {i}"), &opts())
                    .unwrap();
            }
            for title in ["Alpha", "Beta-7f3a", "Gamma"] {
                filed_song(&q, &library, title);
            }
            // Beta's stemroom.json names this database, as the worker
            // writes it now.
            let beta = library.join("Beta-7f3a");
            complete_song(&beta).unwrap().of_database(q.work_tag()).write(&beta).unwrap();
            q.conn().execute_batch("PRAGMA wal_checkpoint(TRUNCATE)").unwrap();
            q.work_tag().to_string()
        };
        // Another database's song in the same library (a server beside
        // the app): not this one's, whatever adopts untagged songs.
        let theirs = library.join("Theirs");
        std::fs::create_dir_all(&theirs).unwrap();
        std::fs::write(theirs.join("drums.wav"), b"RIFF").unwrap();
        let mut meta = complete_song(&library.join("Alpha")).unwrap().of_database("0ther7a9");
        meta.job = Some(900);
        meta.title = "Theirs".into();
        meta.stems.truncate(1);
        meta.write(&theirs).unwrap();
        // A song separated, not filed yet, whose job's row is lost: filed.
        let work = crate::song::partial_dir(&library, &tag, 77);
        std::fs::create_dir_all(&work).unwrap();
        std::fs::write(work.join("drums.wav"), b"RIFF").unwrap();
        let mut meta = meta.of_database(&tag);
        meta.job = Some(77);
        meta.title = "Unfiled".into();
        meta.write(&work).unwrap();
        // Damage every page holding the row of "Beta-7f3a" (its title is
        // in no other row): an invalid b-tree page type.
        let mut bytes = std::fs::read(&db).unwrap();
        let page = match u16::from_be_bytes([bytes[16], bytes[17]]) {
            1 => 65_536,
            n => n as usize,
        };
        let marker = b"Beta-7f3a";
        let pages: Vec<usize> =
            bytes.windows(marker.len()).enumerate().filter(|(_, w)| w == marker).map(|(at, _)| at / page).collect();
        assert!(!pages.is_empty() && !pages.contains(&0));
        for p in pages {
            bytes[p * page] = 0x6b;
        }
        std::fs::write(&db, &bytes).unwrap();

        let (q, recovery) = Queue::open_owned(&db, &lock, &data.path().join("unused"), true).unwrap();
        let recovery = recovery.expect("the damaged page is found");
        assert!(recovery.problem.contains("page") || recovery.problem.contains("malformed"), "{}", recovery.problem);
        assert_eq!(std::fs::read(&recovery.set_aside).unwrap(), bytes, "kept as it was");
        assert_eq!(q.work_tag(), tag, "the jobs' working folders stay theirs");
        assert_eq!(q.settings().unwrap().library_dir.as_deref(), Some(library.to_string_lossy().as_ref()));
        assert!(recovery.songs_found >= 1, "Beta's row was lost and is filed from its folder: {recovery:?}");
        assert!(recovery.jobs_read >= 1 && recovery.jobs_read < 33, "{recovery:?}");
        let songs = q.library("").unwrap();
        assert_eq!(titles(&songs), ["Alpha", "Beta-7f3a", "Gamma", "Unfiled"], "each song once");
        assert!(!work.exists() && library.join("Unfiled").join("drums.wav").is_file(), "filed into the library");
        let queued = q.queue().unwrap();
        assert_eq!(queued.len() + songs.len() - recovery.songs_found as usize, recovery.jobs_read as usize);
        // Ids go on past the damaged database's.
        assert!(q.enqueue(&JobSource::File { path: "/x.wav".into() }, "x", &opts()).unwrap().id > 33);
        assert!(!queued.is_empty(), "queued jobs on other pages are read back");
        for job in &queued {
            assert_eq!(job.state, JobState::Queued);
            assert!(job.title.starts_with("queued "), "{}", job.title);
        }
    }

    /// A server whose library is shared with the app (outside its data
    /// folder) files again only the songs that name its database (its tag
    /// kept beside the database, as nothing is read back from a file that
    /// is no database): not the app's untagged ones, nor another
    /// database's. In a library inside its data folder, untagged songs are
    /// its own too.
    #[test]
    fn a_server_takes_only_its_own_songs_from_a_shared_library() {
        let data = tempfile::tempdir().unwrap();
        let shared = tempfile::tempdir().unwrap();
        let db = data.path().join("stemroom.sqlite");
        let lock = InstanceLock::acquire(data.path()).unwrap().unwrap();
        let garbage = b"not a database at all, but long enough to be read as one";
        {
            let (q, _) = Queue::open_owned(&db, &lock, shared.path(), false).unwrap();
            filed_song(&q, shared.path(), "The app's");
            // Its song, made from a client's upload.
            let uploads = data.path().join("uploads");
            std::fs::create_dir_all(&uploads).unwrap();
            for (title, tag) in [("Mine", q.work_tag().to_string()), ("Foreign", "5e12ab00".to_string())] {
                filed_song(&q, shared.path(), title);
                let dir = shared.path().join(title);
                let mut meta = complete_song(&dir).unwrap().of_database(&tag);
                meta.source = JobSource::File { path: uploads.join("f00d.wav").to_string_lossy().into_owned() };
                meta.write(&dir).unwrap();
            }
        }
        std::fs::write(&db, garbage).unwrap();
        let (q, recovery) = Queue::open_owned(&db, &lock, shared.path(), false).unwrap();
        assert_eq!(recovery.unwrap().songs_found, 1);
        let library = q.library("").unwrap();
        assert_eq!(titles(&library), ["Mine"]);
        // Its clients' song, as before: it expires with --keep-days.
        assert!(q.is_from_api(library[0].id).unwrap(), "a server's song found again is its clients'");
        drop(q);
        // The untagged song in the server's own library.
        let own = data.path().join("library");
        std::fs::create_dir_all(&own).unwrap();
        std::fs::rename(shared.path().join("The app's"), own.join("The app's")).unwrap();
        std::fs::write(&db, garbage).unwrap();
        let (q, recovery) = Queue::open_owned(&db, &lock, &own, false).unwrap();
        assert_eq!(recovery.unwrap().songs_found, 1);
        let library = q.library("").unwrap();
        assert_eq!(titles(&library), ["The app's"]);
        // Not made from an upload: not a client's (it never expires).
        assert!(!q.is_from_api(library[0].id).unwrap(), "the app's song stays the app's");
    }

    /// A rebuild stopped after its new database was whole, while it took
    /// the damaged one's place, is finished at the next start; a damaged
    /// database from a newer Stemroom is left to it.
    #[test]
    fn an_interrupted_swap_is_finished_and_a_newer_damaged_database_left_alone() {
        let data = tempfile::tempdir().unwrap();
        let db = data.path().join("stemroom.sqlite");
        let lock = InstanceLock::acquire(data.path()).unwrap().unwrap();
        {
            let (q, _) = Queue::open_owned(&db, &lock, data.path(), true).unwrap();
            q.enqueue(&JobSource::File { path: "/a.wav".into() }, "rebuilt", &opts()).unwrap();
            q.conn().execute_batch("PRAGMA wal_checkpoint(TRUNCATE); PRAGMA journal_mode = DELETE;").unwrap();
        }
        std::fs::rename(&db, with_suffix(&db, ".rebuilt")).unwrap();
        std::fs::write(&db, b"the damaged one").unwrap();
        std::fs::write(with_suffix(&db, "-wal"), b"its log").unwrap();
        let (q, recovery) = Queue::open_owned(&db, &lock, data.path(), true).unwrap();
        assert!(recovery.is_none());
        assert_eq!(q.queue().unwrap()[0].title, "rebuilt");
        assert!(!with_suffix(&db, ".rebuilt").exists());
        let kept: Vec<PathBuf> = std::fs::read_dir(data.path())
            .unwrap()
            .map(|e| e.unwrap().path())
            .filter(|p| p.to_string_lossy().contains(".damaged-") && !p.to_string_lossy().ends_with("-wal"))
            .collect();
        assert_eq!(kept.len(), 1);
        assert_eq!(std::fs::read(&kept[0]).unwrap(), b"the damaged one");
        assert_eq!(std::fs::read(with_suffix(&kept[0], "-wal")).unwrap(), b"its log");
        drop(q);

        // Schema 999 in the header, a damaged page after it.
        let mut bytes = std::fs::read(&db).unwrap();
        bytes[60..64].copy_from_slice(&999i32.to_be_bytes());
        let page = usize::from(u16::from_be_bytes([bytes[16], bytes[17]]));
        bytes[page] = 0x6b;
        std::fs::write(&db, &bytes).unwrap();
        assert!(damage_before_open(&db).is_some());
        let e = Queue::open_owned(&db, &lock, data.path(), true).unwrap_err();
        assert!(matches!(e, QueueError::TooNew { found: 999, .. }), "{e}");
        assert_eq!(std::fs::read(&db).unwrap(), bytes, "left as it was");
    }

    /// What is not damage is an error as before, and the file stays: a
    /// database from a newer Stemroom.
    #[test]
    fn a_newer_database_is_not_set_aside() {
        let data = tempfile::tempdir().unwrap();
        let db = data.path().join("stemroom.sqlite");
        let lock = InstanceLock::acquire(data.path()).unwrap().unwrap();
        drop(Queue::open_owned(&db, &lock, data.path(), true).unwrap());
        Connection::open(&db).unwrap().pragma_update(None, "user_version", 999).unwrap();
        let e = Queue::open_owned(&db, &lock, data.path(), true).unwrap_err();
        assert!(matches!(e, QueueError::TooNew { found: 999, .. }), "{e}");
        let names: Vec<String> = std::fs::read_dir(data.path())
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        assert!(names.iter().all(|n| !n.contains("damaged")), "{names:?}");
        // Another folder's lock proves nothing.
        let other = tempfile::tempdir().unwrap();
        let theirs = InstanceLock::acquire(other.path()).unwrap().unwrap();
        Connection::open(&db).unwrap().pragma_update(None, "user_version", 8).unwrap();
        assert!(matches!(Queue::open_owned(&db, &theirs, data.path(), true), Err(QueueError::NotOwner { .. })));
    }
}

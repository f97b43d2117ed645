//! A damaged job database: set aside, never deleted, and the queue and
//! library rebuilt from what can still be read.
//!
//! SQLite reports damage as `SQLITE_CORRUPT` ("database disk image is
//! malformed": a torn page after a failing disk, a copy taken mid-write, a
//! sync folder merging two versions) or `SQLITE_NOTADB` (the file is not a
//! database at all). Opening such a file used to stop the app with a
//! dialog, the user's whole library unreachable from it though every song
//! folder was whole. Now the owner of the data folder ([`Queue::open_owned`])
//! moves the damaged file (with its `-wal` and `-shm`) aside as
//! `stemroom.sqlite.damaged-<unix ms>`, starts a new database, copies into
//! it every row the damaged one still gives (jobs, settings with the
//! library folder and the work tag, measured segment times, broker
//! bookkeeping), and files again every song folder of the library whose
//! `stemroom.json` (see [`crate::song::SongMetadata`]) no copied job
//! already names.
//!
//! What is not damage leaves the file alone and is an error as before: a
//! database from a newer Stemroom (the user may go back to it), one that
//! cannot be opened for permissions, a full disk, or a lock.

use std::path::{Path, PathBuf};

use rusqlite::types::Value;
use rusqlite::{params, Connection, OpenFlags, OptionalExtension};
use serde::Serialize;

use super::schema::json;
use super::{Queue, QueueError};
use crate::lock::InstanceLock;
use crate::song::{complete_song, SongMetadata, METADATA_FILE, PARTIAL_PREFIX};

/// What opening a damaged job database did: where it was set aside, and
/// what the new one was built from.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[cfg_attr(feature = "specta", derive(specta::Type))]
#[serde(rename_all = "camelCase")]
pub struct Recovery {
    /// Where the damaged database now is (its `-wal` and `-shm`, when there
    /// were any, beside it with those suffixes).
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
    /// `path` (`owner` is its [`InstanceLock`]), which also checks the
    /// database (`PRAGMA quick_check`) and, when it is damaged, sets it
    /// aside and rebuilds it (module docs). `default_library` is the
    /// library folder used when the settings name none; both it and the
    /// one the settings read back name are searched for song folders.
    ///
    /// # Errors
    /// [`QueueError::NotOwner`] when `owner` locks another folder; those of
    /// [`Queue::open`] that are not damage (a newer database, permissions,
    /// a full disk), and errors setting the damaged file aside or making
    /// the new one.
    pub fn open_owned(
        path: &Path,
        owner: &InstanceLock,
        default_library: &Path,
    ) -> Result<(Queue, Option<Recovery>), QueueError> {
        let problem = match Queue::open(path) {
            Ok(queue) => {
                queue.check_owner(owner)?;
                let checked = quick_check(&queue.conn());
                match checked {
                    Ok(()) => return Ok((queue, None)),
                    Err(problem) => problem,
                }
            }
            Err(e) => match damage_of(&e) {
                Some(problem) => problem,
                None => return Err(e),
            },
        };
        tracing::error!("the job database {} is damaged ({problem}); setting it aside", path.display());
        let set_aside = set_aside(path).map_err(|e| QueueError::Open {
            path: path.to_path_buf(),
            source: rusqlite::Error::ToSqlConversionFailure(Box::new(e)),
        })?;
        let mut queue = Queue::open(path)?;
        queue.check_owner(owner)?;
        let jobs_read = match queue.copy_from(&set_aside) {
            Ok(n) => n,
            Err(e) => {
                tracing::warn!("nothing could be read back from {}: {e}", set_aside.display());
                0
            }
        };
        let tag = Queue::work_tag_of(&queue.conn());
        if let Ok(tag) = tag {
            queue.work_tag = tag;
        }
        let mut libraries = vec![default_library.to_path_buf()];
        if let Some(dir) = queue.settings().ok().and_then(|s| s.library_dir) {
            libraries.push(PathBuf::from(dir));
        }
        let mut songs_found = 0;
        for library in &libraries {
            songs_found += queue.file_song_folders(library);
        }
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
    /// `stemroom.json` reads, lists stems that are all there, and is not a
    /// job's folder already (a job with its id and creation time, or
    /// recorded in that folder). Each becomes a finished job under the id
    /// its file names, or a new one when that id is taken. Returns how many.
    fn file_song_folders(&self, library: &Path) -> u32 {
        let Ok(entries) = std::fs::read_dir(library) else { return 0 };
        let mut filed = 0;
        for entry in entries.flatten() {
            let name = entry.file_name();
            let dir = entry.path();
            // Working folders and hidden ones are not songs; a link to a
            // folder elsewhere is not followed.
            if name.to_string_lossy().starts_with('.')
                || name.to_string_lossy().starts_with(PARTIAL_PREFIX)
                || !entry.file_type().is_ok_and(|t| t.is_dir())
            {
                continue;
            }
            let Some(meta) = complete_song(&dir) else { continue };
            match self.file_song(&dir, &meta) {
                Ok(true) => filed += 1,
                Ok(false) => {}
                Err(e) => tracing::warn!("{} cannot be filed again: {e}", dir.display()),
            }
        }
        filed
    }

    /// File the song in `dir` as a finished job, unless one already names
    /// it. Returns whether it was filed.
    fn file_song(&self, dir: &Path, meta: &SongMetadata) -> Result<bool, QueueError> {
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
            return Ok(false);
        }
        let free = match meta.job {
            Some(id) => tx.query_row("SELECT id FROM jobs WHERE id = ?1", [id], |_| Ok(())).optional()?.is_none(),
            None => false,
        };
        // When it was filed: its `stemroom.json` was written last.
        let finished_ms = std::fs::metadata(dir.join(METADATA_FILE))
            .and_then(|m| m.modified())
            .ok()
            .and_then(|t| t.duration_since(std::time::UNIX_EPOCH).ok())
            .map_or(meta.created_at + meta.seconds * 1000.0, |d| d.as_millis() as f64);
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
        tx.commit()?;
        Ok(true)
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

/// Move the database at `path` and its `-wal` and `-shm` aside under one
/// new name (`<name>.damaged-<unix ms>`, never over an existing file).
/// Returns the database's new path.
fn set_aside(path: &Path) -> std::io::Result<PathBuf> {
    let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_millis());
    let name = path.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_else(|| "stemroom.sqlite".into());
    let with = |p: &Path, suffix: &str| {
        let mut s = p.as_os_str().to_owned();
        s.push(suffix);
        PathBuf::from(s)
    };
    let mut n = 0;
    let target = loop {
        let candidate = path.with_file_name(match n {
            0 => format!("{name}.damaged-{now}"),
            _ => format!("{name}.damaged-{now}-{n}"),
        });
        if std::fs::symlink_metadata(&candidate).is_err() {
            break candidate;
        }
        n += 1;
    };
    // The log first, so a crash in between leaves no log beside a fresh
    // database (SQLite would replay it into the new one).
    for suffix in ["-wal", "-shm"] {
        let from = with(path, suffix);
        if std::fs::symlink_metadata(&from).is_ok() {
            std::fs::rename(&from, with(&target, suffix))?;
        }
    }
    std::fs::rename(path, &target)?;
    if let Some(dir) = path.parent() {
        stemroom_engine::files::sync_dir(dir);
    }
    Ok(target)
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

/// The rowids of `table`, up to where walking it breaks.
fn rowids(conn: &Connection, table: &str) -> Vec<i64> {
    let mut ids = Vec::new();
    let Ok(mut stmt) = conn.prepare(&format!("SELECT rowid FROM \"{table}\"")) else { return ids };
    let Ok(rows) = stmt.query_map([], |r| r.get::<_, i64>(0)) else { return ids };
    for row in rows {
        match row {
            Ok(id) => ids.push(id),
            Err(e) => {
                tracing::warn!("{table} can be read only up to row {}: {e}", ids.last().copied().unwrap_or(0));
                break;
            }
        }
    }
    ids
}

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
        {
            let lock = InstanceLock::acquire(data.path()).unwrap().unwrap();
            let (q, recovery) = Queue::open_owned(&db, &lock, &library).unwrap();
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
        let garbage: Vec<u8> = (0..10_000u32).map(|i| (i * 7919 % 251) as u8).collect();
        std::fs::write(&db, &garbage).unwrap();

        let lock = InstanceLock::acquire(data.path()).unwrap().unwrap();
        let (q, recovery) = Queue::open_owned(&db, &lock, &library).unwrap();
        let recovery = recovery.expect("damage found");
        assert_eq!(recovery.jobs_read, 0);
        assert_eq!(recovery.songs_found, 2, "{recovery:?}");
        assert!(recovery.problem.contains("not a database"), "{}", recovery.problem);
        let aside = PathBuf::from(&recovery.set_aside);
        assert_eq!(aside.parent(), Some(data.path()));
        assert!(aside.file_name().unwrap().to_string_lossy().starts_with("stemroom.sqlite.damaged-"));
        assert_eq!(std::fs::read(&aside).unwrap(), garbage, "the damaged file is kept whole");

        let songs = q.library("").unwrap();
        assert_eq!(titles(&songs), ["Alpha", "Beta"]);
        for song in &songs {
            assert_eq!(song.state, JobState::Done);
            assert_eq!(song.output_dir.as_deref(), Some(library.join(&song.title).to_string_lossy().as_ref()));
            assert_eq!(song.stems.len(), 2);
            assert!(song.stems.iter().all(|s| Path::new(&s.path).is_file()), "{:?}", song.stems);
            assert_eq!(song.duration_seconds, Some(180.0));
            assert_eq!(song.provider.as_deref(), Some("cpu"));
            assert!(matches!(&song.source, JobSource::File { path } if path.ends_with(".flac")));
        }
        assert_eq!(songs.iter().map(|s| s.id).collect::<std::collections::BTreeSet<_>>(), [1, 2].into());
        // A new job takes a new id (not one a filed song holds).
        assert_eq!(q.enqueue(&JobSource::File { path: "/x.wav".into() }, "x", &opts()).unwrap().id, 3);
        drop(q);
        // Opened again: healthy, nothing filed twice.
        let (q, recovery) = Queue::open_owned(&db, &lock, &library).unwrap();
        assert!(recovery.is_none());
        assert_eq!(q.library("").unwrap().len(), 2);
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
            let (q, _) = Queue::open_owned(&db, &lock, &data.path().join("unused")).unwrap();
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
            q.conn().execute_batch("PRAGMA wal_checkpoint(TRUNCATE)").unwrap();
            q.work_tag().to_string()
        };
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

        let (q, recovery) = Queue::open_owned(&db, &lock, &data.path().join("unused")).unwrap();
        let recovery = recovery.expect("the damaged page is found");
        assert!(recovery.problem.contains("page") || recovery.problem.contains("malformed"), "{}", recovery.problem);
        assert_eq!(std::fs::read(&recovery.set_aside).unwrap(), bytes, "kept as it was");
        assert_eq!(q.work_tag(), tag, "the jobs' working folders stay theirs");
        assert_eq!(q.settings().unwrap().library_dir.as_deref(), Some(library.to_string_lossy().as_ref()));
        assert!(recovery.songs_found >= 1, "Beta's row was lost and is filed from its folder: {recovery:?}");
        assert!(recovery.jobs_read >= 1 && recovery.jobs_read < 33, "{recovery:?}");
        let songs = q.library("").unwrap();
        assert_eq!(titles(&songs), ["Alpha", "Beta-7f3a", "Gamma"], "each song once");
        let queued = q.queue().unwrap();
        assert_eq!(queued.len() + songs.len() - recovery.songs_found as usize, recovery.jobs_read as usize);
        assert!(!queued.is_empty(), "queued jobs on other pages are read back");
        for job in &queued {
            assert_eq!(job.state, JobState::Queued);
            assert!(job.title.starts_with("queued "), "{}", job.title);
        }
    }

    /// What is not damage is an error as before, and the file stays: a
    /// database from a newer Stemroom.
    #[test]
    fn a_newer_database_is_not_set_aside() {
        let data = tempfile::tempdir().unwrap();
        let db = data.path().join("stemroom.sqlite");
        let lock = InstanceLock::acquire(data.path()).unwrap().unwrap();
        drop(Queue::open_owned(&db, &lock, data.path()).unwrap());
        Connection::open(&db).unwrap().pragma_update(None, "user_version", 999).unwrap();
        let e = Queue::open_owned(&db, &lock, data.path()).unwrap_err();
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
        assert!(matches!(Queue::open_owned(&db, &theirs, data.path()), Err(QueueError::NotOwner { .. })));
    }
}

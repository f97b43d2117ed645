//! Song folders in the library: one sub-folder per finished song holding its stems
//! and a small metadata file (`stemroom.json`).
//!
//! A job writes into a hidden `.stemroom-partial-<id>` folder inside the
//! library and renames it to the song's folder only when every stem is
//! complete, so the library never shows a half-written song; leftovers of a
//! crash are removed by [`clean_partials`].

use std::path::{Component, Path, PathBuf};

use serde::{Deserialize, Serialize};

use stemroom_engine::names::visible_name;

use crate::queue::{Job, JobId, StemFile};

/// Name of the metadata file in each song folder.
pub const METADATA_FILE: &str = "stemroom.json";

/// Start of a job's working folder's name in the library
/// (`.stemroom-partial-<tag>-<job id>`, see [`partial_dir`]): hidden, and
/// deleted when its job ends.
pub const PARTIAL_PREFIX: &str = ".stemroom-partial-";

/// The default library: the one of the two places below that already
/// exists (`$HOME/Music/Stemroom` first), else `$HOME/Music/Stemroom` when
/// `$HOME/Music` exists, else `<data_dir>/library`. An existing one wins so
/// that the library does not move when `~/Music` appears after the first
/// run (its songs, and the jobs' working folders in it, stay found).
pub fn default_library_dir(data_dir: &Path) -> PathBuf {
    default_library_in(std::env::var_os("HOME").map(PathBuf::from).as_deref(), data_dir)
}

/// [`default_library_dir`] for the home folder `home`.
fn default_library_in(home: Option<&Path>, data_dir: &Path) -> PathBuf {
    let music = home.map(|h| h.join("Music"));
    let in_music = music.as_ref().map(|m| m.join("Stemroom"));
    let own = data_dir.join("library");
    if let Some(m) = in_music.as_ref().filter(|m| m.is_dir()) {
        return m.clone();
    }
    if own.is_dir() {
        return own;
    }
    match (music, in_music) {
        (Some(m), Some(s)) if m.is_dir() => s,
        _ => own,
    }
}

/// The working folder of job `id` of the database tagged `tag`
/// ([`crate::queue::Queue::work_tag`]) inside `library`:
/// `.stemroom-partial-<tag>-<id>`.
pub fn partial_dir(library: &Path, tag: &str, id: JobId) -> PathBuf {
    library.join(format!("{PARTIAL_PREFIX}{tag}-{id}"))
}

/// Remove the working folders the database tagged `tag` left in `library`
/// for jobs other than `keep` (after a crash: `keep` lists the queued jobs,
/// whose folders hold their checkpoints). Other databases' folders stay. A
/// folder of the untagged form earlier versions made
/// (`.stemroom-partial-<id>`) is taken as this database's: renamed to the
/// tagged form when its job is in `keep`, else removed. Returns how many
/// were removed.
pub fn clean_partials(library: &Path, tag: &str, keep: &[JobId]) -> usize {
    let Ok(entries) = std::fs::read_dir(library) else { return 0 };
    let mut n = 0;
    for e in entries.flatten() {
        let Some((id, tagged)) = partial_job(&e.file_name().to_string_lossy(), tag) else { continue };
        if keep.contains(&id) {
            if !tagged {
                let _ = std::fs::rename(e.path(), partial_dir(library, tag, id));
            }
        } else if std::fs::remove_dir_all(e.path()).is_ok() {
            n += 1;
        }
    }
    n
}

/// The job of the working folder named `name` when it is the database
/// tagged `tag`'s ([`partial_dir`]), and whether it carries the tag: the
/// untagged form earlier versions made (`.stemroom-partial-<id>`) is taken
/// as this database's too. `None` for any other name, another database's
/// folder included.
pub fn partial_job(name: &str, tag: &str) -> Option<(JobId, bool)> {
    let rest = name.strip_prefix(PARTIAL_PREFIX)?;
    match rest.split_once('-') {
        Some((t, id)) if t == tag => Some((id.parse().ok()?, true)),
        Some(_) => None,
        None => Some((rest.parse().ok()?, false)),
    }
}

/// Rename `from` to `to` unless `to` exists, in one step (Linux
/// `renameat2` with `RENAME_NOREPLACE`, since 3.15): a crash leaves the
/// folder under one name or the other. `Ok(false)`: `to` exists.
/// `ErrorKind::Unsupported`: this file system cannot (some network ones).
#[cfg(target_os = "linux")]
fn rename_no_replace(from: &Path, to: &Path) -> std::io::Result<bool> {
    use std::os::unix::ffi::OsStrExt;
    let c = |p: &Path| {
        std::ffi::CString::new(p.as_os_str().as_bytes())
            .map_err(|_| std::io::Error::new(std::io::ErrorKind::InvalidInput, "a path with a NUL byte"))
    };
    let (f, t) = (c(from)?, c(to)?);
    // SAFETY: two NUL-terminated paths that outlive the call; AT_FDCWD
    // makes relative ones relative to the working folder, as rename(2).
    let r = unsafe { libc::renameat2(libc::AT_FDCWD, f.as_ptr(), libc::AT_FDCWD, t.as_ptr(), libc::RENAME_NOREPLACE) };
    if r == 0 {
        return Ok(true);
    }
    let e = std::io::Error::last_os_error();
    match e.raw_os_error() {
        Some(libc::EEXIST) => Ok(false),
        Some(libc::EINVAL | libc::ENOSYS | libc::EOPNOTSUPP) => {
            Err(std::io::Error::new(std::io::ErrorKind::Unsupported, e))
        }
        _ => Err(e),
    }
}

#[cfg(not(target_os = "linux"))]
fn rename_no_replace(_: &Path, _: &Path) -> std::io::Result<bool> {
    Err(std::io::Error::from(std::io::ErrorKind::Unsupported))
}

/// Move a finished working folder `work` into `library` under a unique name
/// for `title`, and return where it went. The name is taken in one step
/// where the file system can ([`rename_no_replace`]): a name already taken
/// is passed over, and a crash leaves the song in its working folder or in
/// the library, never an empty folder by its name. Elsewhere it is claimed
/// by `create_dir` (which fails if another job took it first) and the rename
/// replaces that empty folder; two songs with one title never collide.
///
/// # Errors
/// I/O errors.
pub fn publish_song(library: &Path, work: &Path, title: &str) -> std::io::Result<PathBuf> {
    let base = visible_name(title, "Untitled");
    let mut in_one_step = true;
    for n in 1..10_000 {
        let dir = if n == 1 { library.join(&base) } else { library.join(format!("{base} ({n})")) };
        if in_one_step {
            match rename_no_replace(work, &dir) {
                Ok(true) => {
                    stemroom_engine::files::sync_dir(library);
                    return Ok(dir);
                }
                Ok(false) => continue,
                Err(e) if e.kind() == std::io::ErrorKind::Unsupported => in_one_step = false,
                Err(e) => return Err(e),
            }
        }
        match std::fs::create_dir(&dir) {
            Ok(()) => {
                if let Err(e) = std::fs::rename(work, &dir) {
                    let _ = std::fs::remove_dir(&dir);
                    return Err(e);
                }
                stemroom_engine::files::sync_dir(library);
                return Ok(dir);
            }
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => continue,
            Err(e) => return Err(e),
        }
    }
    Err(std::io::Error::new(std::io::ErrorKind::AlreadyExists, format!("no free folder name for {title}")))
}

/// The song folder in `library` that job `job` already filed, with its
/// metadata: the process stopped (a quit at that instant, a crash, a
/// database that stayed busy) after [`publish_song`] and before the queue
/// recorded the job as done, so the job was run again. Only folders
/// [`publish_song`] may have named for the job's title are read, and one
/// matches when its `stemroom.json` names this job (id and creation time)
/// and all its stems are there. `None` when there is none.
pub fn find_published(library: &Path, job: &Job) -> Option<(PathBuf, SongMetadata)> {
    let base = visible_name(&job.title, "Untitled");
    let named_for_title = |name: &str| {
        name == base
            || name
                .strip_prefix(base.as_str())
                .and_then(|rest| rest.strip_prefix(" ("))
                .and_then(|rest| rest.strip_suffix(')'))
                .is_some_and(|n| n.parse::<u32>().is_ok())
    };
    std::fs::read_dir(library).ok()?.flatten().find_map(|entry| {
        let name = entry.file_name();
        if !named_for_title(name.to_str()?) {
            return None;
        }
        let dir = entry.path();
        song_of_job(&dir, job).map(|meta| (dir, meta))
    })
}

/// The song in `dir` when its `stemroom.json` names `job` (its id and
/// creation time) and every stem it lists is a file there: a song filed,
/// or separated into the job's working folder and not filed yet, by a run
/// that stopped before the queue recorded it.
pub fn song_of_job(dir: &Path, job: &Job) -> Option<SongMetadata> {
    let meta = complete_song(dir)?;
    // Creation times are written as the queue gave them: equal exactly.
    let same_job = meta.job == Some(job.id) && meta.created_at == job.created_at;
    same_job.then_some(meta)
}

/// The song in `dir` when its `stemroom.json` reads and lists stems, every
/// one a file inside `dir` (a path that leaves it is no stem).
pub fn complete_song(dir: &Path) -> Option<SongMetadata> {
    let meta: SongMetadata = serde_json::from_slice(&std::fs::read(dir.join(METADATA_FILE)).ok()?).ok()?;
    let complete = !meta.stems.is_empty()
        && meta.stems.iter().all(|s| {
            let p = Path::new(&s.path);
            p.components().all(|c| matches!(c, Component::Normal(_))) && dir.join(p).is_file()
        });
    complete.then_some(meta)
}

/// What `stemroom.json` holds: enough to rebuild the library entry.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct SongMetadata {
    /// Format version of this file.
    pub version: u32,
    /// The queue's id of the job that made the song (absent in files
    /// written before it was recorded): with `created_at`, how a job that
    /// stopped between filing its song and recording it finds the song
    /// again ([`find_published`]).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub job: Option<JobId>,
    pub title: String,
    pub source: crate::queue::JobSource,
    pub duration_seconds: Option<f64>,
    pub options: crate::queue::JobOptions,
    pub provider: Option<String>,
    /// Stem file names relative to the song folder, with their stem names.
    pub stems: Vec<StemFile>,
    /// Wall seconds the separation took.
    pub seconds: f64,
    pub created_at: f64,
    /// Tempo and key (absent in files written before they were computed).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub analysis: Option<stemroom_engine::analysis::SongAnalysis>,
    /// The work tag ([`crate::queue::Queue::work_tag`]) of the database
    /// whose job made the song (absent in files written before it was
    /// recorded): a library shared by two databases (the app and a
    /// `stemroom serve` beside it) tells whose song it is when a damaged
    /// database is rebuilt from the song folders.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub work_tag: Option<String>,
}

impl SongMetadata {
    /// Metadata for `job`, with stems given relative to the folder.
    pub fn new(job: &Job, stems: Vec<StemFile>, seconds: f64, provider: Option<String>, duration: Option<f64>) -> Self {
        SongMetadata {
            version: 1,
            job: Some(job.id),
            title: job.title.clone(),
            source: job.source.clone(),
            duration_seconds: duration,
            options: job.options.clone(),
            provider,
            stems,
            seconds,
            created_at: job.created_at,
            analysis: None,
            work_tag: None,
        }
    }

    /// The same, naming the database whose job made it.
    pub fn of_database(mut self, work_tag: &str) -> Self {
        self.work_tag = Some(work_tag.to_string());
        self
    }

    /// Its stems with their paths inside song folder `dir`.
    pub fn stems_in(&self, dir: &Path) -> Vec<StemFile> {
        self.stems
            .iter()
            .map(|s| StemFile { stem: s.stem.clone(), path: dir.join(&s.path).to_string_lossy().into_owned() })
            .collect()
    }

    /// Find the tempo and key ([`analyse`]) of the stems it lists, read
    /// from `dir` (where they are now).
    pub fn analyse_in(&mut self, dir: &Path) {
        let stems: Vec<(String, PathBuf)> = self.stems.iter().map(|s| (s.stem.clone(), dir.join(&s.path))).collect();
        self.analysis = analyse(&stems);
    }

    /// Write it into `dir` atomically (temporary name, then rename).
    ///
    /// # Errors
    /// I/O errors.
    pub fn write(&self, dir: &Path) -> std::io::Result<()> {
        let tmp = dir.join(format!(".{METADATA_FILE}.part"));
        let text = serde_json::to_vec_pretty(self).map_err(std::io::Error::other)?;
        let written = (|| {
            use std::io::Write;
            let mut f = std::fs::File::create(&tmp)?;
            f.write_all(&text)?;
            // On disk before the rename makes it the song's (a power cut
            // must not leave an empty `stemroom.json`).
            f.sync_data()?;
            drop(f);
            std::fs::rename(&tmp, dir.join(METADATA_FILE))
        })();
        if let Err(e) = written {
            // (A full disk: no half-written file left to be filed with the song.)
            let _ = std::fs::remove_file(&tmp);
            return Err(e);
        }
        stemroom_engine::files::sync_dir(dir);
        Ok(())
    }
}

/// Tempo (from the drums stem) and key (from the other stems) of a
/// separated song; a failure is logged and leaves the song without them.
/// A two-stem song without a `drums` stem takes its tempo from the
/// complement that holds the drums (`no_vocals`, `minus_bass`: the other
/// sources summed, or the mixture less one). Best effort: a panic in a
/// decoder or resampler is caught here (the separation it follows
/// succeeded, and must not be failed for it).
pub fn analyse(stems: &[(String, std::path::PathBuf)]) -> Option<stemroom_engine::analysis::SongAnalysis> {
    let started = std::time::Instant::now();
    let with_drums = |s: &str| {
        s == "drums" || (s.strip_prefix("no_").or_else(|| s.strip_prefix("minus_")).is_some_and(|of| of != "drums"))
    };
    let drums = stems
        .iter()
        .find(|(s, _)| s == "drums")
        .or_else(|| stems.iter().find(|(s, _)| with_drums(s)))
        .map(|(_, p)| p.as_path());
    let others: Vec<&std::path::Path> = stems.iter().filter(|(s, _)| s != "drums").map(|(_, p)| p.as_path()).collect();
    let found =
        std::panic::catch_unwind(|| stemroom_engine::analysis::analyse_stems(drums, &others)).unwrap_or_else(|panic| {
            let what = stemroom_engine::error::panic_message(&*panic).unwrap_or_default();
            Err(format!("the analysis stopped unexpectedly ({what})"))
        });
    match found {
        Ok(a) => {
            tracing::info!(
                "tempo {:?} BPM, key {:?} ({:.1} s)",
                a.bpm,
                a.key.as_ref().map(|k| k.name.as_str()),
                started.elapsed().as_secs_f64()
            );
            Some(a)
        }
        Err(e) => {
            tracing::warn!("tempo and key not found: {e}");
            None
        }
    }
}

/// What [`remove_song`] left in the song's folder.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RemovedSong {
    /// Files and folders deleted.
    pub deleted: usize,
    /// Entries of the folder that stay (not Stemroom's, or exports not asked
    /// for); the folder itself stays when any do.
    pub kept: Vec<PathBuf>,
    /// Set when the folder now holds another job's song (this one's folder
    /// was deleted by hand and its name given to a newer song): nothing
    /// was deleted.
    pub other_job: Option<crate::queue::JobId>,
}

/// Folder of the peaks cache in a song folder: the name
/// `stemroom_playback::peaks::CACHE_DIR` writes (this crate does not depend
/// on playback).
pub const PEAKS_DIR: &str = ".peaks";
/// Folder exports go to by default in a song folder.
pub const EXPORTS_DIR: &str = "exports";

/// Delete a finished song's files: the stems its `stemroom.json` lists, the
/// metadata itself and the peaks cache, plus the `exports` folder only when
/// `with_exports`; the folder goes too once nothing else is in it.
///
/// Safety rules: `dir` must be a real folder (not a symbolic link) that
/// holds a readable `stemroom.json`, directly inside `library`, or anywhere
/// when that `stemroom.json` names `job` (its id and creation time: a song
/// filed in the library folder chosen before the current one); stem paths
/// from it are used only when they stay inside the folder; links are
/// removed as links, never followed. When `job` is given and the
/// `stemroom.json` names another job, nothing is deleted and
/// [`RemovedSong::other_job`] says whose song it is.
///
/// # Errors
/// `NotFound` when `dir` is gone from a folder that is there; `Other` when
/// its parent folder is missing too (a drive not mounted); `InvalidInput`
/// when `dir` breaks a rule above (nothing is deleted); I/O errors while
/// deleting.
pub fn remove_song(library: &Path, dir: &Path, job: Option<&Job>, with_exports: bool) -> std::io::Result<RemovedSong> {
    use std::io::{Error, ErrorKind};
    let refuse = |why: String| Error::new(ErrorKind::InvalidInput, why);
    let meta = match std::fs::symlink_metadata(dir) {
        Ok(m) => m,
        // Gone, where its parent folder is (deleted by hand): NotFound.
        // With the parent missing too (a drive not mounted, a network
        // folder away) the song may well be there later: not NotFound.
        Err(e) if e.kind() == ErrorKind::NotFound && !dir.parent().is_some_and(Path::exists) => {
            return Err(Error::other(format!(
                "{} cannot be reached (is its drive or network folder there?): nothing was deleted",
                dir.display()
            )))
        }
        Err(e) => return Err(e),
    };
    if meta.file_type().is_symlink() || !meta.is_dir() {
        return Err(refuse(format!("{} is a link or not a folder: nothing was deleted", dir.display())));
    }
    let text = std::fs::read_to_string(dir.join(METADATA_FILE))
        .map_err(|_| refuse(format!("{} is not a Stemroom song folder: nothing was deleted", dir.display())))?;
    let song: SongMetadata = serde_json::from_str(&text).map_err(|e| {
        refuse(format!("{}'s {METADATA_FILE} cannot be read ({e}): nothing was deleted", dir.display()))
    })?;
    // Creation times are written as the queue gave them: equal exactly.
    let made_by_job = job.is_some_and(|j| song.job == Some(j.id) && song.created_at == j.created_at);
    if let (Some(_), Some(owner)) = (job, song.job) {
        if !made_by_job {
            return Ok(RemovedSong { other_job: Some(owner), ..RemovedSong::default() });
        }
    }
    // (A library folder not made yet holds nothing.)
    let in_library = || {
        let parent = dir.parent().and_then(|p| p.canonicalize().ok());
        parent.is_some() && parent == library.canonicalize().ok()
    };
    if !made_by_job && !in_library() {
        return Err(refuse(format!(
            "{} is not in the library folder {}: nothing was deleted (delete its files yourself)",
            dir.display(),
            library.display()
        )));
    }

    let mut doomed: Vec<PathBuf> = song
        .stems
        .iter()
        .map(|s| Path::new(&s.path))
        // A bare file name, as Stemroom writes them: `sub/x.wav` could
        // pass through a link named `sub` to a file outside the song.
        .filter(|p| p.components().count() == 1 && matches!(p.components().next(), Some(Component::Normal(_))))
        .map(|p| dir.join(p))
        .collect();
    doomed.push(dir.join(PEAKS_DIR));
    if with_exports {
        doomed.push(dir.join(EXPORTS_DIR));
    }
    doomed.push(dir.join(METADATA_FILE));
    let mut removed = RemovedSong::default();
    for path in doomed {
        let Ok(m) = std::fs::symlink_metadata(&path) else { continue };
        if m.is_dir() {
            std::fs::remove_dir_all(&path)?;
        } else {
            // A file, or a link (removed itself, its target untouched).
            std::fs::remove_file(&path)?;
        }
        removed.deleted += 1;
    }
    removed.kept = std::fs::read_dir(dir)?.flatten().map(|e| e.path()).collect();
    removed.kept.sort();
    if removed.kept.is_empty() {
        std::fs::remove_dir(dir)?;
    }
    Ok(removed)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A two-stem song of vocals (silence here) and `no_vocals` (a kick on
    /// every beat at 120 BPM) has a tempo, from the stem that holds the
    /// drums; before, only a stem named `drums` was looked at.
    #[test]
    fn a_two_stem_song_takes_its_tempo_from_the_stem_with_the_drums() {
        let dir = tempfile::tempdir().unwrap();
        let rate = 44_100u32;
        let write = |name: &str, kick: bool| {
            let spec = hound::WavSpec {
                channels: 2,
                sample_rate: rate,
                bits_per_sample: 16,
                sample_format: hound::SampleFormat::Int,
            };
            let path = dir.path().join(format!("{name}.wav"));
            let mut w = hound::WavWriter::create(&path, spec).unwrap();
            for i in 0..(20 * rate) as usize {
                let t = (i % (rate as usize / 2)) as f64 / f64::from(rate);
                let v = if kick {
                    // A falling 100-50 Hz tone, decaying over 60 ms, every 0.5 s.
                    0.8 * (2.0 * std::f64::consts::PI * (50.0 + 50.0 * (-t / 0.03).exp()) * t).sin() * (-t / 0.06).exp()
                } else {
                    0.0
                };
                let s = (v * 32_000.0) as i16;
                w.write_sample(s).unwrap();
                w.write_sample(s).unwrap();
            }
            w.finalize().unwrap();
            (name.to_string(), path)
        };
        let stems = [write("vocals", false), write("no_vocals", true)];
        let bpm = analyse(&stems).and_then(|a| a.bpm).expect("a tempo");
        assert!((bpm - 120.0).abs() < 1.0, "{bpm}");
    }

    #[test]
    fn the_default_library_stays_where_it_is_when_music_appears() {
        let home = tempfile::tempdir().unwrap();
        let data = tempfile::tempdir().unwrap();
        let own = data.path().join("library");
        let music = home.path().join("Music");
        // No ~/Music: the data folder's.
        assert_eq!(default_library_in(Some(home.path()), data.path()), own);
        assert_eq!(default_library_in(None, data.path()), own);
        // Used since, then ~/Music made (another program, a new desktop):
        // it stays.
        std::fs::create_dir_all(&own).unwrap();
        std::fs::create_dir_all(&music).unwrap();
        assert_eq!(default_library_in(Some(home.path()), data.path()), own);
        // A first run with ~/Music there: ~/Music/Stemroom; once made, it
        // wins over the data folder's.
        std::fs::remove_dir(&own).unwrap();
        assert_eq!(default_library_in(Some(home.path()), data.path()), music.join("Stemroom"));
        std::fs::create_dir_all(music.join("Stemroom")).unwrap();
        std::fs::create_dir_all(&own).unwrap();
        assert_eq!(default_library_in(Some(home.path()), data.path()), music.join("Stemroom"));
    }

    #[test]
    fn unique_dirs_partials_and_safe_removal() {
        let lib = tempfile::tempdir().unwrap();
        let publish = |title: &str, i: usize| {
            let work = lib.path().join(format!("work{i}"));
            std::fs::create_dir(&work).unwrap();
            std::fs::write(work.join("x"), "1").unwrap();
            let dest = publish_song(lib.path(), &work, title).unwrap();
            assert!(dest.join("x").is_file() && !work.exists());
            dest
        };
        let a = publish("../Song: One", 0);
        assert_eq!(a.parent(), Some(lib.path()));
        let b = publish("../Song: One", 1);
        assert_ne!(a, b);
        assert!(b.file_name().unwrap().to_string_lossy().ends_with("(2)"));
        // A name a user's file or an empty folder holds is passed over,
        // and left as it was.
        std::fs::write(lib.path().join("Taken"), "mine").unwrap();
        std::fs::create_dir(lib.path().join("Taken (2)")).unwrap();
        let c = publish("Taken", 2);
        assert_eq!(c, lib.path().join("Taken (3)"));
        assert_eq!(std::fs::read_to_string(lib.path().join("Taken")).unwrap(), "mine");
        assert_eq!(std::fs::read_dir(lib.path().join("Taken (2)")).unwrap().count(), 0);
        std::fs::create_dir(partial_dir(lib.path(), "ab12", 3)).unwrap();
        std::fs::create_dir(partial_dir(lib.path(), "ab12", 4)).unwrap();
        // Another database's folders, of the same ids, sharing the library.
        std::fs::create_dir(partial_dir(lib.path(), "cd34", 3)).unwrap();
        std::fs::create_dir(partial_dir(lib.path(), "cd34", 5)).unwrap();
        // An earlier version's untagged folders: a queued job's is taken over.
        std::fs::create_dir(lib.path().join(".stemroom-partial-6")).unwrap();
        std::fs::create_dir(lib.path().join(".stemroom-partial-7")).unwrap();
        assert_eq!(clean_partials(lib.path(), "ab12", &[4, 6]), 2);
        assert!(!partial_dir(lib.path(), "ab12", 3).exists() && partial_dir(lib.path(), "ab12", 4).exists());
        assert!(partial_dir(lib.path(), "cd34", 3).exists() && partial_dir(lib.path(), "cd34", 5).exists());
        assert!(partial_dir(lib.path(), "ab12", 6).exists() && !lib.path().join(".stemroom-partial-6").exists());
        assert!(!lib.path().join(".stemroom-partial-7").exists());
        let hidden = publish(".stemroom-partial-7", 2);
        assert_eq!(hidden.file_name().unwrap(), "stemroom-partial-7");
        assert!(remove_song(lib.path(), &a, None, false).is_err(), "no stemroom.json");
        // Publishing claims names atomically next to existing ones.
        for i in 3..6 {
            let dest = publish("../Song: One", i);
            assert_eq!(dest.parent(), Some(lib.path()));
        }
        std::fs::write(a.join(METADATA_FILE), "{}").unwrap();
        assert!(remove_song(lib.path(), &a, None, false).is_err(), "unreadable stemroom.json");
    }

    /// The job `song_folder`'s songs name (id 1, made at time 0).
    fn test_job(title: &str) -> crate::queue::Job {
        crate::queue::Job {
            id: 1,
            source: crate::queue::JobSource::File { path: "/music/x.wav".into() },
            title: title.into(),
            duration_seconds: None,
            options: crate::queue::Settings::default().job_options(),
            state: crate::queue::JobState::Done,
            position: 0,
            created_at: 0.0,
            started_at: None,
            finished_at: None,
            output_dir: None,
            stems: Vec::new(),
            provider: None,
            uploader: None,
            thumbnail: None,
            album: None,
            analysis: None,
        }
    }

    fn song_folder(lib: &Path, name: &str, stems: &[&str]) -> PathBuf {
        let dir = lib.join(name);
        std::fs::create_dir_all(dir.join(PEAKS_DIR)).unwrap();
        std::fs::write(dir.join(PEAKS_DIR).join("drums.wav.peaks"), "p").unwrap();
        for s in stems {
            std::fs::write(dir.join(s), "audio").unwrap();
        }
        let job = test_job(name);
        let files = stems.iter().map(|s| StemFile { stem: s.to_string(), path: s.to_string() }).collect();
        SongMetadata::new(&job, files, 1.0, None, None).write(&dir).unwrap();
        dir
    }

    #[test]
    fn deleting_a_song_removes_only_what_stemroom_made_in_the_library() {
        let lib = tempfile::tempdir().unwrap();
        let outside = tempfile::tempdir().unwrap();

        // Stems, metadata and peaks go; exports and the user's own files stay.
        let a = song_folder(lib.path(), "A", &["drums.wav", "bass.wav"]);
        std::fs::create_dir(a.join(EXPORTS_DIR)).unwrap();
        std::fs::write(a.join(EXPORTS_DIR).join("A - Instrumental.mp3"), "mp3").unwrap();
        std::fs::write(a.join("notes.txt"), "mine").unwrap();
        let r = remove_song(lib.path(), &a, None, false).unwrap();
        assert_eq!(r.deleted, 4, "two stems, the peaks, stemroom.json");
        assert_eq!(r.kept, vec![a.join(EXPORTS_DIR), a.join("notes.txt")]);
        assert!(a.join(EXPORTS_DIR).join("A - Instrumental.mp3").is_file() && a.join("notes.txt").is_file());

        // With exports ticked and nothing else there, the folder goes.
        let b = song_folder(lib.path(), "B", &["vocals.wav"]);
        std::fs::create_dir(b.join(EXPORTS_DIR)).unwrap();
        std::fs::write(b.join(EXPORTS_DIR).join("B - mix.wav"), "w").unwrap();
        assert!(remove_song(lib.path(), &b, None, true).unwrap().kept.is_empty());
        assert!(!b.exists());

        // A stem path climbing out of the folder, and a stem that is a link
        // to a file outside: neither outside file is touched.
        let victim = outside.path().join("precious.wav");
        std::fs::write(&victim, "keep me").unwrap();
        let c = song_folder(lib.path(), "C", &[]);
        let escape = format!("../../{}", victim.display());
        let mut meta: SongMetadata =
            serde_json::from_str(&std::fs::read_to_string(c.join(METADATA_FILE)).unwrap()).unwrap();
        meta.stems = vec![
            StemFile { stem: "drums".into(), path: escape },
            StemFile { stem: "bass".into(), path: victim.display().to_string() },
            StemFile { stem: "other".into(), path: "other.wav".into() },
        ];
        meta.write(&c).unwrap();
        std::os::unix::fs::symlink(&victim, c.join("other.wav")).unwrap();
        remove_song(lib.path(), &c, None, false).unwrap();
        assert_eq!(std::fs::read_to_string(&victim).unwrap(), "keep me");
        assert!(!c.exists(), "the link itself went");

        // Refused outright: a folder outside the library, a link to a song
        // folder, the library itself.
        let d = song_folder(outside.path(), "D", &["drums.wav"]);
        assert_eq!(remove_song(lib.path(), &d, None, false).unwrap_err().kind(), std::io::ErrorKind::InvalidInput);
        let mut other = test_job("D");
        other.id = 2;
        let r = remove_song(lib.path(), &d, Some(&other), false).unwrap();
        assert_eq!((r.other_job, r.deleted), (Some(1), 0), "another job's song");
        assert!(d.join("drums.wav").is_file());
        // Unless it is the job's own song, filed in an earlier library folder.
        remove_song(lib.path(), &d, Some(&test_job("D")), false).unwrap();
        assert!(!d.exists());
        let e = song_folder(lib.path(), "E", &["drums.wav"]);
        let link = lib.path().join("E link");
        std::os::unix::fs::symlink(&e, &link).unwrap();
        assert_eq!(remove_song(lib.path(), &link, None, false).unwrap_err().kind(), std::io::ErrorKind::InvalidInput);
        assert!(e.join("drums.wav").is_file());
        assert!(remove_song(lib.path(), lib.path(), None, true).is_err());
        assert!(e.join("drums.wav").is_file());

        // A folder deleted by hand whose name went to a newer song (job 2):
        // removing the old entry (job 1) with its files leaves the newer
        // song whole, in the library too.
        let f = song_folder(lib.path(), "F", &["drums.wav"]);
        let mut newer: SongMetadata =
            serde_json::from_str(&std::fs::read_to_string(f.join(METADATA_FILE)).unwrap()).unwrap();
        newer.job = Some(2);
        newer.write(&f).unwrap();
        let r = remove_song(lib.path(), &f, Some(&test_job("F")), true).unwrap();
        assert_eq!((r.other_job, r.deleted), (Some(2), 0));
        assert!(f.join("drums.wav").is_file() && f.join(METADATA_FILE).is_file());
        // A folder that is gone: NotFound, for the caller to take as done;
        // unless its parent is missing too (an unmounted drive).
        let gone = remove_song(lib.path(), &lib.path().join("never"), Some(&test_job("G")), true).unwrap_err();
        assert_eq!(gone.kind(), std::io::ErrorKind::NotFound);
        let away = remove_song(lib.path(), Path::new("/media/not-mounted/lib/Song"), Some(&test_job("G")), true);
        assert_eq!(away.unwrap_err().kind(), std::io::ErrorKind::Other);
        // The song's own folder in an earlier library, the current library
        // folder not made yet: deleted.
        let g = song_folder(outside.path(), "G", &["drums.wav"]);
        remove_song(&lib.path().join("not made yet"), &g, Some(&test_job("G")), false).unwrap();
        assert!(!g.exists());
    }
}

//! Song folders in the library: one sub-folder per finished song holding its stems
//! and a small metadata file (`stemroom.json`).
//!
//! A job writes into a hidden `.stemroom-partial-<id>` folder inside the
//! library and renames it to the song's folder only when every stem is
//! complete, so the library never shows a half-written song; leftovers of a
//! crash are removed by [`clean_partials`].

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use stemroom_engine::names::visible_name;

use crate::queue::{Job, JobId, StemFile};

/// Name of the metadata file in each song folder.
pub const METADATA_FILE: &str = "stemroom.json";

const PARTIAL_PREFIX: &str = ".stemroom-partial-";

/// The default library: `$HOME/Music/Stemroom` when `$HOME/Music` exists,
/// else `<data_dir>/library`.
pub fn default_library_dir(data_dir: &Path) -> PathBuf {
    if let Some(music) = std::env::var_os("HOME").map(|h| PathBuf::from(h).join("Music")).filter(|m| m.is_dir()) {
        return music.join("Stemroom");
    }
    data_dir.join("library")
}

/// The working folder of job `id` inside `library`.
pub fn partial_dir(library: &Path, id: JobId) -> PathBuf {
    library.join(format!("{PARTIAL_PREFIX}{id}"))
}

/// Remove working folders left by jobs that are not running (after a crash).
/// `running` lists jobs whose folders must stay. Returns how many were removed.
pub fn clean_partials(library: &Path, running: &[JobId]) -> usize {
    let Ok(entries) = std::fs::read_dir(library) else { return 0 };
    let mut n = 0;
    for e in entries.flatten() {
        let name = e.file_name().to_string_lossy().into_owned();
        let Some(id) = name.strip_prefix(PARTIAL_PREFIX).and_then(|s| s.parse::<JobId>().ok()) else { continue };
        if !running.contains(&id) && std::fs::remove_dir_all(e.path()).is_ok() {
            n += 1;
        }
    }
    n
}

/// Move a finished working folder `work` into `library` under a unique name
/// for `title`, and return where it went. The name is claimed atomically
/// (`create_dir` fails if another job took it first) and the rename then
/// replaces that empty folder, so two songs with one title never collide.
///
/// # Errors
/// I/O errors.
pub fn publish_song(library: &Path, work: &Path, title: &str) -> std::io::Result<PathBuf> {
    let base = visible_name(title, "Untitled");
    for n in 1..10_000 {
        let dir = if n == 1 { library.join(&base) } else { library.join(format!("{base} ({n})")) };
        match std::fs::create_dir(&dir) {
            Ok(()) => {
                if let Err(e) = std::fs::rename(work, &dir) {
                    let _ = std::fs::remove_dir(&dir);
                    return Err(e);
                }
                return Ok(dir);
            }
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => continue,
            Err(e) => return Err(e),
        }
    }
    Err(std::io::Error::new(std::io::ErrorKind::AlreadyExists, format!("no free folder name for {title}")))
}

/// What `stemroom.json` holds: enough to rebuild the library entry.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct SongMetadata {
    /// Format version of this file.
    pub version: u32,
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
}

impl SongMetadata {
    /// Metadata for `job`, with stems given relative to the folder.
    pub fn new(job: &Job, stems: Vec<StemFile>, seconds: f64, provider: Option<String>, duration: Option<f64>) -> Self {
        SongMetadata {
            version: 1,
            title: job.title.clone(),
            source: job.source.clone(),
            duration_seconds: duration,
            options: job.options.clone(),
            provider,
            stems,
            seconds,
            created_at: job.created_at,
        }
    }

    /// Write it into `dir` atomically (temporary name, then rename).
    ///
    /// # Errors
    /// I/O errors.
    pub fn write(&self, dir: &Path) -> std::io::Result<()> {
        let tmp = dir.join(format!(".{METADATA_FILE}.part"));
        let text = serde_json::to_vec_pretty(self).map_err(std::io::Error::other)?;
        std::fs::write(&tmp, text)?;
        std::fs::rename(&tmp, dir.join(METADATA_FILE))
    }
}

/// Delete a finished song's folder. Only folders holding a `stemroom.json`
/// are deleted, so a wrong path can never remove someone else's files.
///
/// # Errors
/// I/O errors; `InvalidInput` when the folder is not a Stemroom song folder.
pub fn remove_song(dir: &Path) -> std::io::Result<()> {
    if !dir.join(METADATA_FILE).is_file() {
        return Err(std::io::Error::new(
            std::io::ErrorKind::InvalidInput,
            format!("{} is not a Stemroom song folder", dir.display()),
        ));
    }
    std::fs::remove_dir_all(dir)
}

#[cfg(test)]
mod tests {
    use super::*;

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
        std::fs::create_dir(partial_dir(lib.path(), 3)).unwrap();
        std::fs::create_dir(partial_dir(lib.path(), 4)).unwrap();
        assert_eq!(clean_partials(lib.path(), &[4]), 1);
        assert!(!partial_dir(lib.path(), 3).exists() && partial_dir(lib.path(), 4).exists());
        let hidden = publish(".stemroom-partial-7", 2);
        assert_eq!(hidden.file_name().unwrap(), "stemroom-partial-7");
        assert!(remove_song(&a).is_err());
        // Publishing claims names atomically next to existing ones.
        for i in 3..6 {
            let dest = publish("../Song: One", i);
            assert_eq!(dest.parent(), Some(lib.path()));
        }
        std::fs::write(a.join(METADATA_FILE), "{}").unwrap();
        remove_song(&a).unwrap();
        assert!(!a.exists());
    }
}

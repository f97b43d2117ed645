//! Finding model files on disk and checking them against the manifest.

use std::fs::File;
use std::io::{BufReader, Read};
use std::path::{Path, PathBuf};

use serde::Serialize;
use sha2::{Digest, Sha256};

use super::{Manifest, ModelError, ModelInfo};

/// The directories searched for model files, in order: an explicit directory,
/// `$STEMROOM_MODEL_DIR`, `models/` next to the executable, the repository's
/// `models/` (only for an executable inside a Cargo target folder, as
/// absolute path without `..`), and `<cache>/models`.
pub fn model_search_dirs(explicit: Option<&Path>) -> Vec<PathBuf> {
    let mut dirs = Vec::new();
    if let Some(d) = explicit {
        dirs.push(d.to_path_buf());
        return dirs;
    }
    if let Some(d) = std::env::var_os("STEMROOM_MODEL_DIR").filter(|s| !s.is_empty()) {
        dirs.push(PathBuf::from(d));
    }
    if let Some(exe) = crate::paths::exe_dir() {
        dirs.push(exe.join("models"));
        // The repository's models/ only for a binary that runs from a Cargo
        // target folder (tests, `cargo run`, the build tree): an installed
        // binary never looks into the machine it was built on.
        if in_cargo_target_dir(&exe) {
            if let Ok(repo) = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../models").canonicalize() {
                dirs.push(repo);
            }
        }
    }
    if let Some(cache) = crate::paths::cache_dir() {
        dirs.push(cache.join("models"));
    }
    dirs
}

/// Whether `exe_dir` (the running executable's folder) is inside a Cargo
/// target folder: `target/release`, `target/release/deps`,
/// `target/debug/examples`… Cargo marks a target folder's root with
/// `CACHEDIR.TAG`.
fn in_cargo_target_dir(exe_dir: &Path) -> bool {
    exe_dir.ancestors().take(3).any(|a| a.join("CACHEDIR.TAG").is_file())
}

/// A model file found on disk, with whether its checksum was verified.
#[derive(Debug, Clone, Serialize)]
pub struct InstalledModel {
    /// Model id.
    pub id: String,
    /// Where the file is.
    pub path: PathBuf,
    /// True when the sha256 was computed and matched (now or per a fresh stamp).
    pub verified: bool,
}

/// Find the model file for `info` in `dirs` (the first good copy wins) and
/// check it. A damaged copy (wrong size or sha256) is passed over, with a
/// warning, for a good one in a later folder: a copy made or fetched again
/// elsewhere after the damage is then used.
///
/// A full sha256 check of the 174 MB file takes about half a second; its result
/// is remembered in a `<file>.verified` stamp holding size, mtime and hash, and
/// reused while those still match. `full_check` forces recomputation.
///
/// # Errors
/// [`ModelError::NotFound`] naming every directory searched and how to fetch the
/// file; [`ModelError::Corrupt`] (the first damaged copy's) on a size or
/// checksum mismatch when no good copy was found.
pub fn locate(info: &ModelInfo, dirs: &[PathBuf], full_check: bool) -> Result<InstalledModel, ModelError> {
    let mut damaged = None;
    for dir in dirs {
        let path = dir.join(&info.file);
        if path.is_file() {
            match verify(info, &path, full_check) {
                Ok(()) => {}
                Err(e @ ModelError::Corrupt { .. }) => {
                    tracing::warn!("{e}; looking in the next model folder");
                    damaged.get_or_insert(e);
                    continue;
                }
                Err(e) => return Err(e),
            }
            // A clean absolute path for messages (`…/crates/engine/../../models`
            // becomes the repository's `models/`).
            let path = std::fs::canonicalize(&path).unwrap_or(path);
            return Ok(InstalledModel { id: info.id.clone(), path, verified: true });
        }
    }
    if let Some(e) = damaged {
        return Err(e);
    }
    Err(ModelError::NotFound {
        file: info.file.clone(),
        searched: dirs.iter().map(|d| d.display().to_string()).collect::<Vec<_>>().join(", "),
        how: info.how_to_get(),
    })
}

/// What the stamp holds: size, mtime and, on Unix, the inode and ctime
/// (no tool sets a ctime: a file rewritten in place with its size and
/// mtime kept, as `rsync --inplace -t` or a tarball's fixed dates do, still
/// changes it), then the sha256.
fn stamp_text(meta: &std::fs::Metadata, sha: &str) -> String {
    let mtime = meta
        .modified()
        .ok()
        .and_then(|t| t.duration_since(std::time::UNIX_EPOCH).ok())
        .map(|d| d.as_nanos())
        .unwrap_or(0);
    #[cfg(unix)]
    let changed = {
        use std::os::unix::fs::MetadataExt;
        format!(" {} {}.{:09}", meta.ino(), meta.ctime(), meta.ctime_nsec())
    };
    #[cfg(not(unix))]
    let changed = String::new();
    format!("{} {}{} {}\n", meta.len(), mtime, changed, sha)
}

/// Where the verification stamp of model file `path` lives (`<file>.verified`).
fn stamp_path(path: &Path) -> PathBuf {
    let mut p = path.as_os_str().to_owned();
    p.push(".verified");
    PathBuf::from(p)
}

/// Stamp `path` as verified without hashing it again: for a file
/// [`verify`] checked under another name and then renamed into place (a
/// rename keeps its bytes, size and mtime). Best effort, as in [`verify`].
pub(super) fn stamp_verified(info: &ModelInfo, path: &Path) {
    if let Ok(meta) = std::fs::metadata(path) {
        let _ = std::fs::write(stamp_path(path), stamp_text(&meta, &info.sha256));
    }
}

/// Check size and sha256 of `path` against `info`.
///
/// # Errors
/// [`ModelError::Corrupt`] on mismatch, [`ModelError::Io`] if unreadable.
pub fn verify(info: &ModelInfo, path: &Path, full_check: bool) -> Result<(), ModelError> {
    let io = |source| ModelError::Io { path: path.to_path_buf(), source };
    let meta = std::fs::metadata(path).map_err(io)?;
    if meta.len() != info.bytes {
        return Err(ModelError::Corrupt {
            path: path.to_path_buf(),
            reason: format!("size is {} bytes, expected {}", meta.len(), info.bytes),
            how: info.fetch_command(),
        });
    }
    let stamp_path = stamp_path(path);
    let expected_stamp = stamp_text(&meta, &info.sha256);
    if !full_check {
        if let Ok(stamp) = std::fs::read_to_string(&stamp_path) {
            if stamp == expected_stamp {
                return Ok(());
            }
        }
    }
    let actual = sha256_file(path).map_err(io)?;
    if actual != info.sha256 {
        return Err(ModelError::Corrupt {
            path: path.to_path_buf(),
            reason: format!("sha256 is {actual}, expected {}", info.sha256),
            how: info.fetch_command(),
        });
    }
    // Best effort: a read-only model directory just means re-hashing next time.
    let _ = std::fs::write(&stamp_path, expected_stamp);
    Ok(())
}

/// Lower-case hex sha256 of a file.
///
/// # Errors
/// Any I/O error reading the file.
pub fn sha256_file(path: &Path) -> std::io::Result<String> {
    let mut reader = BufReader::with_capacity(1 << 20, File::open(path)?);
    let mut hasher = Sha256::new();
    let mut buf = vec![0u8; 1 << 20];
    loop {
        let n = reader.read(&mut buf)?;
        if n == 0 {
            break;
        }
        hasher.update(&buf[..n]);
    }
    Ok(hasher.finalize().iter().map(|b| format!("{b:02x}")).collect())
}

/// What a front end shows about one model.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[cfg_attr(feature = "specta", derive(specta::Type))]
#[serde(rename_all = "camelCase")]
pub struct ModelStatus {
    pub id: String,
    /// The manifest's technical description (paper, format, origin).
    pub description: String,
    /// The stems it makes, in output order (`drums`, `bass`, `other`, `vocals`).
    pub sources: Vec<String>,
    /// Size of the model file in bytes (as `f64`: exact below 2^53).
    pub bytes: f64,
    /// A good copy was found ([`locate`]: the right size and sha256, checked
    /// now or per a fresh stamp).
    pub installed: bool,
    /// Its sha256 matched the manifest.
    pub verified: bool,
    /// Where it was found.
    pub path: Option<String>,
    /// Why it cannot be used, in plain words.
    pub problem: Option<String>,
    /// The command that installs it.
    pub fetch_command: String,
    /// Bytes a download takes (the package tarball); 0 for a model made on
    /// this computer.
    pub download_bytes: f64,
    /// Made on this computer from another model (not downloaded).
    pub derived: bool,
    /// The file is in Stemroom's own model folder (`<cache>/models`), so
    /// the app may remove it; files elsewhere are the user's.
    pub removable: bool,
}

/// Whether `path` is inside Stemroom's own model folder
/// ([`super::default_fetch_dir`]).
fn in_own_folder(path: &Path) -> bool {
    let own = super::default_fetch_dir().and_then(|d| d.canonicalize().ok());
    own.is_some_and(|own| path.parent().and_then(|p| p.canonicalize().ok()).is_some_and(|p| p == own))
}

/// Remove model `info`'s file (and its verification stamp) from
/// Stemroom's own model folder. Returns whether a file was removed.
///
/// # Errors
/// [`ModelError::Io`] when removing fails.
pub fn remove_own(info: &ModelInfo) -> Result<bool, ModelError> {
    let Some(dir) = super::default_fetch_dir() else { return Ok(false) };
    let path = dir.join(&info.file);
    match std::fs::remove_file(&path) {
        Ok(()) => {
            let _ = std::fs::remove_file(stamp_path(&path));
            Ok(true)
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(false),
        Err(source) => Err(ModelError::Io { path, source }),
    }
}

/// Look for every model of `manifest` in `dirs` (see [`locate`]).
pub fn statuses(manifest: &Manifest, dirs: &[PathBuf]) -> Vec<ModelStatus> {
    manifest
        .models
        .iter()
        .map(|info| {
            let found = locate(info, dirs, false);
            let (installed, problem) = match &found {
                Ok(_) => (true, None),
                Err(ModelError::NotFound { .. }) => (false, Some(format!("The model {} is not installed.", info.file))),
                Err(e) => (false, Some(e.to_string())),
            };
            ModelStatus {
                id: info.id.clone(),
                description: info.description.clone(),
                sources: info.sources.clone(),
                bytes: info.bytes as f64,
                installed,
                verified: found.as_ref().is_ok_and(|m| m.verified),
                removable: found.as_ref().is_ok_and(|m| in_own_folder(&m.path)),
                path: found.ok().map(|m| m.path.to_string_lossy().into_owned()),
                problem,
                fetch_command: info.fetch_command(),
                download_bytes: info.fetch.as_ref().map_or(0.0, |f| f.bytes as f64),
                derived: info.derive.is_some(),
            }
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_damaged_copy_is_passed_over_for_a_good_one_further_on() {
        let t = tempfile::tempdir().unwrap();
        let (first, second) = (t.path().join("first"), t.path().join("second"));
        std::fs::create_dir_all(&first).unwrap();
        std::fs::create_dir_all(&second).unwrap();
        let good = b"a model's bytes";
        let mut info = super::super::Manifest::builtin().unwrap().get("htdemucs").unwrap().clone();
        info.file = "m.onnx".into();
        info.bytes = good.len() as u64;
        std::fs::write(second.join("m.onnx"), good).unwrap();
        info.sha256 = sha256_file(&second.join("m.onnx")).unwrap();
        std::fs::write(first.join("m.onnx"), b"a model's bytez").unwrap();
        let dirs = [first.clone(), second.clone()];
        let found = locate(&info, &dirs, true).unwrap();
        assert_eq!(found.path, std::fs::canonicalize(second.join("m.onnx")).unwrap());
        // Damaged everywhere: the first damaged copy is named.
        std::fs::write(second.join("m.onnx"), b"short").unwrap();
        match locate(&info, &dirs, true) {
            Err(ModelError::Corrupt { path, .. }) => assert_eq!(path, first.join("m.onnx")),
            other => panic!("{other:?}"),
        }
        std::fs::remove_file(first.join("m.onnx")).unwrap();
        std::fs::remove_file(second.join("m.onnx")).unwrap();
        assert!(matches!(locate(&info, &dirs, true), Err(ModelError::NotFound { .. })));
    }

    #[test]
    fn only_a_build_tree_binary_searches_the_repository() {
        let t = tempfile::tempdir().unwrap();
        let target = t.path().join("target");
        std::fs::create_dir_all(target.join("release/deps")).unwrap();
        std::fs::create_dir_all(t.path().join("usr/bin")).unwrap();
        assert!(!in_cargo_target_dir(&target.join("release")), "no tag yet");
        std::fs::write(target.join("CACHEDIR.TAG"), "Signature: 8a477f597d28d172789f06886806bc55").unwrap();
        assert!(in_cargo_target_dir(&target.join("release")));
        assert!(in_cargo_target_dir(&target.join("release/deps")));
        assert!(!in_cargo_target_dir(&t.path().join("usr/bin")));
        // Whatever is searched is named cleanly (this test runs from the
        // build tree, so the repository's folder is among them).
        let dirs = model_search_dirs(None);
        assert!(dirs.iter().all(|d| d.components().all(|c| c != std::path::Component::ParentDir)), "{dirs:?}");
        assert!(
            dirs.iter().any(|d| d.ends_with("models") && d.parent().is_some_and(|p| p.join("Cargo.toml").is_file())),
            "{dirs:?}"
        );
    }
}

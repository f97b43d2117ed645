//! Outputs are written under temporary names next to their final place and
//! published by rename only when complete; [`Leftovers`] removes what a
//! failed or cancelled run leaves.

use std::path::{Path, PathBuf};

/// The temporary name of an output while it is written:
/// `.<file name>.<process id>.part` in the same folder (hidden, and never a
/// name a finished output can have).
pub fn part_path(dest: &Path) -> PathBuf {
    let name = dest.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
    dest.with_file_name(format!(".{name}.{}.part", std::process::id()))
}

/// Files and folders a run creates, removed when the guard is dropped
/// (files first, then the folders, deepest first, if empty) unless
/// [`Leftovers::disarm`]ed.
#[derive(Debug, Default)]
pub struct Leftovers {
    files: Vec<PathBuf>,
    dirs: Vec<PathBuf>,
}

impl Leftovers {
    /// An empty guard.
    pub fn new() -> Self {
        Leftovers::default()
    }

    /// Remove `path` too if the run fails.
    pub fn file(&mut self, path: PathBuf) {
        self.files.push(path);
    }

    /// The guarded files, in the order they were added.
    pub fn files(&self) -> &[PathBuf] {
        &self.files
    }

    /// `create_dir_all(dir)`, remembering the folders that did not exist.
    ///
    /// # Errors
    /// I/O errors creating them.
    pub fn create_dirs(&mut self, dir: &Path) -> std::io::Result<()> {
        let mut missing: Vec<PathBuf> = dir.ancestors().take_while(|a| !a.exists()).map(Path::to_path_buf).collect();
        std::fs::create_dir_all(dir)?;
        self.dirs.append(&mut missing);
        Ok(())
    }

    /// Keep everything: the run succeeded.
    pub fn disarm(&mut self) {
        self.files.clear();
        self.dirs.clear();
    }
}

impl Drop for Leftovers {
    fn drop(&mut self) {
        for p in &self.files {
            let _ = std::fs::remove_file(p);
        }
        for d in &self.dirs {
            let _ = std::fs::remove_dir(d);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn leftovers_are_removed_unless_disarmed() {
        let root = tempfile::tempdir().unwrap();
        let deep = root.path().join("a/b");
        let file = deep.join("x.part");
        {
            let mut left = Leftovers::new();
            left.create_dirs(&deep).unwrap();
            std::fs::write(&file, "1").unwrap();
            left.file(file.clone());
        }
        assert!(!root.path().join("a").exists(), "files, then folders, removed");
        let mut left = Leftovers::new();
        left.create_dirs(&deep).unwrap();
        left.disarm();
        drop(left);
        assert!(deep.is_dir());
        let p = part_path(&deep.join("song.wav"));
        let name = p.file_name().unwrap().to_string_lossy().into_owned();
        assert!(name.starts_with(".song.wav.") && name.ends_with(".part"), "{name}");
    }
}

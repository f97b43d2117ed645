//! One app instance per data folder.

use std::path::Path;

/// Held while one app instance owns a data directory: a second instance
/// must not run the same queue (it would put the first one's running jobs
/// back in the queue and separate them twice). An OS file lock
/// (`flock`), released automatically when the process ends, even by a crash.
#[derive(Debug)]
pub struct InstanceLock {
    _file: std::fs::File,
    dir: std::path::PathBuf,
}

impl InstanceLock {
    /// Take the lock on `<data_dir>/stemroom.lock`; `None` when another
    /// process holds it.
    ///
    /// # Errors
    /// I/O errors creating or locking the file.
    pub fn acquire(data_dir: &Path) -> std::io::Result<Option<Self>> {
        std::fs::create_dir_all(data_dir)?;
        let file = std::fs::OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(data_dir.join("stemroom.lock"))?;
        match file.try_lock() {
            Ok(()) => Ok(Some(InstanceLock { _file: file, dir: data_dir.to_path_buf() })),
            Err(std::fs::TryLockError::WouldBlock) => Ok(None),
            Err(std::fs::TryLockError::Error(e)) => Err(e),
        }
    }
}

impl InstanceLock {
    /// The data folder this lock owns.
    pub fn dir(&self) -> &Path {
        &self.dir
    }
}

#[cfg(test)]
mod lock_tests {
    use super::*;

    #[test]
    fn one_instance_per_data_dir() {
        let dir = tempfile::tempdir().unwrap();
        let first = InstanceLock::acquire(dir.path()).unwrap();
        assert!(first.is_some());
        assert!(InstanceLock::acquire(dir.path()).unwrap().is_none(), "held by the first");
        drop(first);
        assert!(InstanceLock::acquire(dir.path()).unwrap().is_some(), "free again");
    }
}

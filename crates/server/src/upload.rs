//! Uploaded audio on disk: `<data>/uploads/<random>.<ext>`. A client's file
//! name never becomes a path: the name on disk is 128 random bits, and the
//! extension is kept only when it is one of the audio extensions the intake
//! knows (a hint for the decoder). Files are written as `<name>.part` and
//! renamed when complete; a [`PartFile`] removes an unfinished one however
//! the request ends (error, client gone, shutdown).

use std::path::{Path, PathBuf};

use stemroom_library::intake::AUDIO_EXTENSIONS;
use stemroom_library::queue::{Job, JobSource};

/// The uploads folder of a data folder.
pub fn uploads_dir(data_dir: &Path) -> PathBuf {
    data_dir.join("uploads")
}

/// Suffix of files still being received.
pub(crate) const PART_SUFFIX: &str = ".part";

/// A new file name for an upload whose client called it `client_name`.
pub fn new_name(client_name: Option<&str>) -> String {
    let mut name = crate::auth::random_hex::<16>();
    let ext = client_name
        .and_then(|n| n.rsplit_once('.'))
        .map(|(_, e)| e.to_ascii_lowercase())
        .filter(|e| AUDIO_EXTENSIONS.contains(&e.as_str()));
    if let Some(e) = ext {
        name.push('.');
        name.push_str(&e);
    }
    name
}

/// A song title from a client's file name: the last path component without
/// its extension, cleaned like a title from tags
/// ([`stemroom_library::intake::clean_title`]: no control characters, at
/// most 200 characters; `None` when nothing is left). Only ever used as a title; the library
/// makes its folder name from it with its own rules.
pub fn title_from_client_name(name: &str) -> Option<String> {
    let last = name.rsplit(['/', '\\']).next().unwrap_or("");
    let stem = match last.rsplit_once('.') {
        Some((s, _)) if !s.is_empty() => s,
        _ => last,
    };
    let clean = stemroom_library::intake::clean_title(stem)?;
    let clean = clean.trim_matches('.').trim();
    (!clean.is_empty()).then(|| clean.to_string())
}

/// Free bytes for an unprivileged user on the file system holding `dir`.
///
/// # Errors
/// I/O errors from `statvfs`.
pub fn free_bytes(dir: &Path) -> std::io::Result<u64> {
    #[cfg(unix)]
    {
        use std::os::unix::ffi::OsStrExt;
        let c = std::ffi::CString::new(dir.as_os_str().as_bytes())
            .map_err(|_| std::io::Error::new(std::io::ErrorKind::InvalidInput, "path holds a NUL byte"))?;
        // SAFETY: `c` is a valid C string and `st` a properly sized, zeroed
        // struct that statvfs fills.
        let mut st: libc::statvfs = unsafe { std::mem::zeroed() };
        if unsafe { libc::statvfs(c.as_ptr(), &mut st) } != 0 {
            return Err(std::io::Error::last_os_error());
        }
        #[allow(clippy::unnecessary_cast)]
        Ok((st.f_bavail as u64).saturating_mul(st.f_frsize as u64))
    }
    #[cfg(not(unix))]
    {
        let _ = dir;
        Ok(u64::MAX)
    }
}

/// An upload being written: removed on drop unless [`PartFile::finish`]ed.
#[derive(Debug)]
pub struct PartFile {
    part: Option<PathBuf>,
    done: PathBuf,
}

impl PartFile {
    /// A part file for `name` in `dir` (not created yet), its own: two
    /// uploads of one name at once (a worker that sends a stalled stem
    /// again while the server still reads the first send) each write their
    /// own part, and neither removes the other's.
    pub fn new(dir: &Path, name: &str) -> Self {
        static NEXT: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
        let n = NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        PartFile { part: Some(dir.join(format!("{name}.{n}{PART_SUFFIX}"))), done: dir.join(name) }
    }

    /// Where the bytes go while receiving.
    pub fn part_path(&self) -> &Path {
        self.part.as_deref().unwrap_or(&self.done)
    }

    /// Rename the complete file to its final name; returns it as an
    /// [`Upload`] that is removed on drop until it is handed to a job.
    ///
    /// # Errors
    /// I/O errors.
    pub fn finish(mut self) -> std::io::Result<Upload> {
        if let Some(part) = self.part.take() {
            // (The caller synced the file: see `form::read_multipart`.)
            if let Err(e) = std::fs::rename(&part, &self.done) {
                let _ = std::fs::remove_file(&part);
                return Err(e);
            }
            if let Some(dir) = self.done.parent() {
                stemroom_engine::files::sync_dir(dir);
            }
        }
        Ok(Upload { path: Some(self.done.clone()) })
    }
}

impl Drop for PartFile {
    fn drop(&mut self) {
        if let Some(p) = self.part.take() {
            let _ = std::fs::remove_file(p);
        }
    }
}

/// A complete upload not yet owned by a job: removed on drop unless kept.
#[derive(Debug)]
pub struct Upload {
    path: Option<PathBuf>,
}

impl Upload {
    pub fn path(&self) -> &Path {
        self.path.as_deref().unwrap_or(Path::new(""))
    }
    /// A job owns the file now: keep it.
    pub fn keep(mut self) -> PathBuf {
        self.path.take().unwrap_or_default()
    }
}

impl Drop for Upload {
    fn drop(&mut self) {
        if let Some(p) = self.path.take() {
            let _ = std::fs::remove_file(p);
        }
    }
}

/// `p` with symbolic links and `.`/`..` resolved where it exists, else
/// made absolute against the working folder.
fn resolved(p: &Path) -> PathBuf {
    std::fs::canonicalize(p).or_else(|_| std::path::absolute(p)).unwrap_or_else(|_| p.to_path_buf())
}

/// Whether `path` (as a job stores it) is a file directly inside
/// `uploads`, however either is spelled (`data/uploads`, `./data/uploads`,
/// the absolute path, through a symbolic link).
pub fn in_uploads(uploads: &Path, path: &Path) -> bool {
    path.parent().is_some_and(|parent| parent == uploads || resolved(parent) == resolved(uploads))
}

/// Remove `job`'s upload when its input is one (a file directly inside
/// `uploads`); anything else (the app's own files) is never touched.
pub fn discard(uploads: &Path, job: &Job) {
    if let JobSource::File { path } = &job.source {
        let p = Path::new(path);
        if in_uploads(uploads, p) {
            let _ = std::fs::remove_file(p);
        }
    }
}

/// At start: remove part files (a crash mid-upload) and uploads no job
/// names (a crash between receiving a file and queueing it). Returns how
/// many files went.
pub fn clean(uploads: &Path, jobs: &[Job]) -> usize {
    // By file name (uploads get random ones), of the jobs' files inside
    // `uploads` however the data folder was spelled when they were queued.
    let owned: std::collections::HashSet<std::ffi::OsString> = jobs
        .iter()
        .filter_map(|j| match &j.source {
            JobSource::File { path } => Some(Path::new(path)),
            JobSource::Url { .. } => None,
        })
        .filter(|p| in_uploads(uploads, p))
        .filter_map(|p| p.file_name().map(std::ffi::OsStr::to_os_string))
        .collect();
    let Ok(entries) = std::fs::read_dir(uploads) else { return 0 };
    let mut removed = 0;
    for e in entries.flatten() {
        let p = e.path();
        let keep = owned.contains(&e.file_name());
        if !keep && e.file_type().is_ok_and(|t| t.is_file() || t.is_symlink()) && std::fs::remove_file(&p).is_ok() {
            removed += 1;
        }
    }
    removed
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn client_names_never_become_paths() {
        let n = new_name(Some("../../etc/passwd"));
        assert!(n.len() == 32 && n.bytes().all(|b| b.is_ascii_hexdigit()), "{n}");
        let n = new_name(Some("../../x.WAV"));
        assert!(n.ends_with(".wav") && !n.contains('/'), "{n}");
        assert!(!new_name(Some("a.sh")).contains('.'));
        assert_eq!(title_from_client_name("../../x.wav").as_deref(), Some("x"));
        assert_eq!(title_from_client_name("C:\\music\\Song One.flac").as_deref(), Some("Song One"));
        assert_eq!(title_from_client_name("..").as_deref(), None);
        assert_eq!(title_from_client_name("a\u{0}b\nc.mp3").as_deref(), Some("abc"));
        assert_eq!(title_from_client_name(".hidden").as_deref(), Some("hidden"));
    }

    #[test]
    fn part_files_go_unless_finished_and_uploads_unless_kept() {
        let dir = tempfile::tempdir().unwrap();
        let part = PartFile::new(dir.path(), "a.wav");
        std::fs::write(part.part_path(), b"x").unwrap();
        drop(part);
        assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 0);
        let part = PartFile::new(dir.path(), "b.wav");
        std::fs::write(part.part_path(), b"x").unwrap();
        let up = part.finish().unwrap();
        assert!(dir.path().join("b.wav").exists());
        drop(up);
        assert!(!dir.path().join("b.wav").exists());
        let part = PartFile::new(dir.path(), "c.wav");
        std::fs::write(part.part_path(), b"x").unwrap();
        let kept = part.finish().unwrap().keep();
        assert!(kept.exists());
    }

    /// A data folder given as `data` one run and `./data` or its absolute
    /// path the next: the queued jobs' uploads are theirs either way (they
    /// were all removed at start, and their jobs failed).
    #[test]
    fn uploads_are_known_however_the_data_folder_is_spelled() {
        let dir = tempfile::tempdir().unwrap();
        let uploads = dir.path().join("data/uploads");
        std::fs::create_dir_all(&uploads).unwrap();
        std::fs::write(uploads.join("kept.wav"), b"x").unwrap();
        std::fs::write(uploads.join("orphan.wav"), b"x").unwrap();
        let spelled = dir.path().join("data/../data/./uploads/kept.wav");
        let job = |path: &Path| Job {
            id: 1,
            source: JobSource::File { path: path.to_string_lossy().into_owned() },
            title: "kept".into(),
            duration_seconds: None,
            options: stemroom_library::queue::Settings::default().job_options(),
            state: stemroom_library::queue::JobState::Queued,
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
        };
        assert!(in_uploads(&uploads, &spelled));
        assert!(!in_uploads(&uploads, &dir.path().join("music/kept.wav")));
        assert_eq!(clean(&uploads, &[job(&spelled)]), 1, "only the orphan goes");
        assert!(uploads.join("kept.wav").exists() && !uploads.join("orphan.wav").exists());
        discard(&uploads, &job(&spelled));
        assert!(!uploads.join("kept.wav").exists(), "discarded through its other spelling");
    }

    #[test]
    fn free_space_is_read() {
        assert!(free_bytes(Path::new("/")).unwrap() > 0);
    }
}

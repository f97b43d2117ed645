//! Outputs are written under temporary names next to their final place and
//! published by rename only when complete; [`Leftovers`] removes what a
//! failed or cancelled run leaves.

use std::path::{Path, PathBuf};

/// One publish at a time in this process: two jobs that finish together
/// with the same destinations leave one job's set, never a mix of both.
static PUBLISHING: std::sync::Mutex<()> = std::sync::Mutex::new(());

/// Temporary names handed out by this process so far (see [`part_path`]).
static PARTS: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);

/// 64 bits that no other process, and no other call, can foresee: std's
/// `RandomState` keys come from the operating system's random source (once
/// per thread, then stepped for each one made), and a SipHash under them
/// spreads them over the whole range. Not for keys or tokens (those come
/// from a cryptographic generator); for names and ids that must not
/// collide by chance.
pub fn random_u64() -> u64 {
    use std::hash::{BuildHasher, Hasher};
    std::collections::hash_map::RandomState::new().build_hasher().finish()
}

/// Where this process's temporary-name numbers start: random
/// ([`random_u64`]), below 10^9 so a
/// name stays short. Two processes in different PID namespaces (containers
/// sharing an output folder) can have the same process id; with their own
/// start they do not hand out the same name (a 1 in 10^9 chance per pair of
/// first names), where both counting from 0 they always did.
fn parts_start() -> u64 {
    static START: std::sync::OnceLock<u64> = std::sync::OnceLock::new();
    *START.get_or_init(|| random_u64() % 1_000_000_000)
}

/// Longest file name most file systems take (ext4, XFS, btrfs: 255 bytes).
const NAME_MAX: usize = 255;

/// A new temporary name for an output while it is written:
/// `.<file name>.<process id>-<n>.part` in the same folder (hidden, and
/// never a name a finished output can have). `n` counts the calls in this
/// process from a random start ([`parts_start`]), so two jobs writing the
/// same destination at once (two inputs of the same name, or two processes
/// with one id in different PID namespaces) do not share a temporary file.
/// A long name is shortened
/// (at a character boundary) so the result stays within 255 bytes.
pub fn part_path(dest: &Path) -> PathBuf {
    let n = parts_start() + PARTS.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let suffix = format!(".{}-{n}.part", std::process::id());
    let mut name = dest.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
    // Room for the dot, the suffix and ".old" (a set-aside final, [`publish`]).
    let room = NAME_MAX - 1 - suffix.len() - ".old".len();
    if name.len() > room {
        // The extension stays (it says what the part file is: a stem's or
        // an export's, which [`remove_stale_parts`] clears once its
        // process is gone); the name before it is cut.
        let ext = name.rfind('.').filter(|&i| i > 0 && name.len() - i <= 16).map(|i| name[i..].to_string());
        let ext = ext.unwrap_or_default();
        let mut cut = room - ext.len();
        while !name.is_char_boundary(cut) {
            cut -= 1;
        }
        name.truncate(cut);
        name.push_str(&ext);
    }
    dest.with_file_name(format!(".{name}{suffix}"))
}

/// Rename every `(temporary, final)` pair into place, all or nothing: a
/// final file that already exists is first moved aside, and when any rename
/// fails the ones done are undone and the old files put back, so a folder
/// never holds a mix of old and new outputs (nor of two jobs' outputs: a
/// process publishes one set at a time). A folder where a file goes is
/// refused, not moved. Returns the first error.
///
/// # Errors
/// The final name whose move failed (its old file set aside, or the new
/// one renamed in), with the I/O error, after the rollback.
pub fn publish(pairs: &[(PathBuf, PathBuf)]) -> Result<(), (PathBuf, std::io::Error)> {
    let _one = PUBLISHING.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
    let mut set_aside: Vec<(PathBuf, PathBuf)> = Vec::new();
    let mut placed: Vec<&Path> = Vec::new();
    let rollback = |placed: &[&Path], set_aside: &[(PathBuf, PathBuf)]| {
        for p in placed {
            let _ = std::fs::remove_file(p);
        }
        for (old, backup) in set_aside {
            let _ = std::fs::rename(backup, old);
        }
    };
    for (_, dest) in pairs {
        // A folder (or anything but a file) where a stem goes is not ours
        // to move away.
        if let Ok(meta) = std::fs::symlink_metadata(dest) {
            if meta.is_dir() {
                rollback(&placed, &set_aside);
                let e = std::io::Error::new(
                    std::io::ErrorKind::AlreadyExists,
                    format!("a folder is in the way of {}", dest.display()),
                );
                return Err((dest.clone(), e));
            }
        }
        if dest.exists() {
            let backup = part_path(dest).with_extension("old");
            if let Err(e) = std::fs::rename(dest, &backup) {
                rollback(&placed, &set_aside);
                return Err((dest.clone(), e));
            }
            set_aside.push((dest.clone(), backup));
        }
    }
    for (tmp, dest) in pairs {
        if let Err(e) = std::fs::rename(tmp, dest) {
            rollback(&placed, &set_aside);
            return Err((dest.clone(), e));
        }
        placed.push(dest);
    }
    for (_, backup) in &set_aside {
        let _ = std::fs::remove_file(backup);
    }
    sync_destinations(pairs);
    Ok(())
}

/// Put every `(temporary, final)` pair in place without replacing anything,
/// all or nothing: each final name is taken by a hard link to its temporary
/// file, which fails when the name exists at that instant (a check, then a
/// rename, would replace a file another program created in between). When a
/// final name is taken, the links made are removed and the temporary files
/// stay for the caller. The temporary files are removed once all are
/// placed.
///
/// A file system without hard links (FAT, exFAT, some network and FUSE
/// file systems) falls back to a check, then a rename, for that file.
///
/// # Errors
/// [`std::io::ErrorKind::AlreadyExists`] when a final name is taken (its
/// path in the message), else the I/O error of the link or rename that
/// failed, after the rollback.
pub fn publish_new(pairs: &[(PathBuf, PathBuf)]) -> std::io::Result<()> {
    let _one = PUBLISHING.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
    // Final names taken: by a link (the temporary file is still there) or,
    // without links, by a rename.
    let mut placed: Vec<(&Path, bool)> = Vec::new();
    let mut failure = None;
    for (tmp, dest) in pairs {
        let linked = match std::fs::hard_link(tmp, dest) {
            Ok(()) => Ok(true),
            Err(e) if matches!(e.kind(), std::io::ErrorKind::Unsupported | std::io::ErrorKind::PermissionDenied) => {
                if std::fs::symlink_metadata(dest).is_ok() {
                    Err(std::io::Error::from(std::io::ErrorKind::AlreadyExists))
                } else {
                    std::fs::rename(tmp, dest).map(|()| false)
                }
            }
            Err(e) => Err(e),
        };
        match linked {
            Ok(linked) => placed.push((dest, linked)),
            Err(e) => {
                failure = Some(if e.kind() == std::io::ErrorKind::AlreadyExists {
                    std::io::Error::new(std::io::ErrorKind::AlreadyExists, format!("{} exists", dest.display()))
                } else {
                    e
                });
                break;
            }
        }
    }
    if let Some(e) = failure {
        // Links go; a file renamed in (no links here) goes back to its
        // temporary name, which the caller still holds.
        for ((tmp, _), (dest, linked)) in pairs.iter().zip(&placed) {
            if *linked {
                let _ = std::fs::remove_file(dest);
            } else {
                let _ = std::fs::rename(dest, tmp);
            }
        }
        return Err(e);
    }
    for ((tmp, _), (_, linked)) in pairs.iter().zip(&placed) {
        if *linked {
            let _ = std::fs::remove_file(tmp);
        }
    }
    sync_destinations(pairs);
    Ok(())
}

/// [`sync_dir`] for each folder the pairs' final paths are in.
fn sync_destinations(pairs: &[(PathBuf, PathBuf)]) {
    let mut folders: Vec<&Path> = pairs.iter().filter_map(|(_, dest)| dest.parent()).collect();
    folders.dedup();
    for folder in folders {
        sync_dir(folder);
    }
}

/// Whether `a` and `b` name one file or folder: the same device and inode
/// where both can be read on Unix (links, bind mounts and `..` detours
/// count), else the same canonical path, else the same name.
pub fn same_file(a: &Path, b: &Path) -> bool {
    #[cfg(unix)]
    {
        use std::os::unix::fs::MetadataExt;
        if let (Ok(x), Ok(y)) = (std::fs::metadata(a), std::fs::metadata(b)) {
            return (x.dev(), x.ino()) == (y.dev(), y.ino());
        }
    }
    match (std::fs::canonicalize(a), std::fs::canonicalize(b)) {
        (Ok(x), Ok(y)) => x == y,
        _ => a == b,
    }
}

/// When folder `dir` is on a file system held in memory (tmpfs, ramfs:
/// `/tmp` on Fedora, Arch and Debian 13), where a large scratch file takes
/// RAM: the bytes it has free (`statfs`'s `f_bavail` × `f_bsize`). `None`
/// for a disk, and where it cannot be told (other systems, an unreadable
/// path).
pub fn in_memory(dir: &Path) -> Option<u64> {
    #[cfg(target_os = "linux")]
    {
        use std::os::unix::ffi::OsStrExt;
        // From linux/magic.h.
        const TMPFS_MAGIC: i64 = 0x0102_1994;
        const RAMFS_MAGIC: i64 = 0x8584_58f6;
        let path = std::ffi::CString::new(dir.as_os_str().as_bytes()).ok()?;
        let mut st: libc::statfs = unsafe { std::mem::zeroed() };
        // SAFETY: `path` is a NUL-terminated string and `st` a statfs the
        // call fills in; both outlive it.
        if unsafe { libc::statfs(path.as_ptr(), &mut st) } != 0 {
            return None;
        }
        #[allow(clippy::unnecessary_cast)]
        let kind = st.f_type as i64;
        #[allow(clippy::unnecessary_cast)]
        let free = (st.f_bavail as u64).saturating_mul(st.f_bsize as u64);
        (kind == TMPFS_MAGIC || kind == RAMFS_MAGIC).then_some(free)
    }
    #[cfg(not(target_os = "linux"))]
    {
        let _ = dir;
        None
    }
}

/// Make the renames and creations in folder `dir` durable (fsync of the
/// folder itself: without it a power cut can undo a rename on ext4 with
/// some mount options, XFS and btrfs, leaving the old name or none). Best
/// effort: a file system that cannot sync a folder is not an error.
pub fn sync_dir(dir: &Path) {
    let dir = if dir.as_os_str().is_empty() { Path::new(".") } else { dir };
    if let Err(e) = std::fs::File::open(dir).and_then(|f| f.sync_all()) {
        tracing::debug!("cannot sync folder {}: {e}", dir.display());
    }
}

/// Run `cmd` (stdin from nothing) and collect its output as
/// [`std::process::Command::output`] does, but give up after `timeout`
/// (the child is killed) and keep at most `max_bytes` of each of stdout and
/// stderr (the rest is read and dropped): for the quick questions asked of
/// helper programs (`--version`), which a hung or flooding program must
/// not turn into a frozen window.
///
/// # Errors
/// The spawn's error, or [`std::io::ErrorKind::TimedOut`].
pub fn output_within(
    cmd: &mut std::process::Command,
    timeout: std::time::Duration,
    max_bytes: usize,
) -> std::io::Result<std::process::Output> {
    use std::io::Read;
    use std::process::Stdio;
    let mut child = cmd.stdin(Stdio::null()).stdout(Stdio::piped()).stderr(Stdio::piped()).spawn()?;
    let reader = |pipe: Option<Box<dyn Read + Send>>| {
        std::thread::spawn(move || {
            let mut kept = Vec::new();
            if let Some(mut pipe) = pipe {
                let mut buf = [0u8; 8192];
                while let Ok(n) = pipe.read(&mut buf) {
                    if n == 0 {
                        break;
                    }
                    let room = max_bytes.saturating_sub(kept.len());
                    kept.extend_from_slice(&buf[..n.min(room)]);
                }
            }
            kept
        })
    };
    let out = reader(child.stdout.take().map(|p| Box::new(p) as Box<dyn Read + Send>));
    let err = reader(child.stderr.take().map(|p| Box::new(p) as Box<dyn Read + Send>));
    let deadline = std::time::Instant::now() + timeout;
    let status = loop {
        match child.try_wait()? {
            Some(status) => break status,
            None if std::time::Instant::now() < deadline => std::thread::sleep(std::time::Duration::from_millis(10)),
            None => {
                let _ = child.kill();
                // Reaped on a thread of its own: a program stuck in the
                // kernel (nvidia-smi on a GPU in a bad state) outlives even
                // SIGKILL until the kernel lets go, and must not hold the
                // caller (a window, a job being queued) that long.
                std::thread::spawn(move || {
                    let _ = child.wait();
                });
                return Err(std::io::Error::new(
                    std::io::ErrorKind::TimedOut,
                    format!("no answer within {} s", timeout.as_secs()),
                ));
            }
        }
    };
    // A grandchild that keeps the pipes open would hold the readers: they
    // are left to finish on their own once the answer is in.
    let join = |h: std::thread::JoinHandle<Vec<u8>>| {
        let until = std::time::Instant::now() + std::time::Duration::from_millis(500);
        while !h.is_finished() && std::time::Instant::now() < until {
            std::thread::sleep(std::time::Duration::from_millis(5));
        }
        if h.is_finished() {
            h.join().unwrap_or_default()
        } else {
            Vec::new()
        }
    };
    Ok(std::process::Output { status, stdout: join(out), stderr: join(err) })
}

/// Whether process `pid` is alive (signal 0: exists, perhaps another user's).
pub fn process_alive(pid: i32) -> bool {
    // SAFETY: kill(2) with signal 0 only checks for existence and permission.
    let r = unsafe { libc::kill(pid, 0) };
    r == 0 || std::io::Error::last_os_error().raw_os_error() == Some(libc::EPERM)
}

/// Remove `path` unless a run holds it locked ([`Leftovers`], in whatever
/// PID namespace). The check is a shared lock (it works on a file opened
/// read-only, also where `flock` is emulated with `fcntl`, as on NFS), held
/// while the file is removed, so an owner that locks it meanwhile finds it
/// gone and makes it again. A file that cannot be locked (a file system
/// without locks) is removed: its process id said it is stale.
fn remove_unless_locked(path: &Path) -> bool {
    let guard = match std::fs::File::open(path) {
        Ok(f) => match f.try_lock_shared() {
            Ok(()) => Some(f),
            Err(std::fs::TryLockError::WouldBlock) => return false,
            Err(std::fs::TryLockError::Error(_)) => None,
        },
        Err(_) => None,
    };
    let removed = std::fs::remove_file(path).is_ok();
    drop(guard);
    removed
}

/// Open (creating it if missing) and lock `path` exclusively for
/// [`Leftovers`]: the lock is taken on the file that has the name once
/// locked (a cleanup that removed it in between, holding its own lock,
/// leaves another inode behind the name, or none: then again, for up to
/// two seconds). `None` when it cannot be locked (no locks on this file
/// system; best effort).
fn open_locked(path: &Path) -> Option<std::fs::File> {
    // A cleanup holds its lock only while it removes one file; two seconds
    // cover a slow network file system.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(2);
    while std::time::Instant::now() < deadline {
        let f = std::fs::OpenOptions::new().write(true).create(true).truncate(false).open(path).ok()?;
        match f.try_lock() {
            Ok(()) => {}
            // A cleanup checking it this instant.
            Err(std::fs::TryLockError::WouldBlock) => {
                std::thread::sleep(std::time::Duration::from_millis(5));
                continue;
            }
            Err(std::fs::TryLockError::Error(_)) => return None,
        }
        if holds_name(&f, path) {
            return Some(f);
        }
    }
    None
}

/// Whether the open file (or folder) `f` is the one named `path` now (same
/// device and inode): a lock taken on it then guards that name.
fn holds_name(f: &std::fs::File, path: &Path) -> bool {
    use std::os::unix::fs::MetadataExt;
    match (f.metadata(), std::fs::metadata(path)) {
        (Ok(a), Ok(b)) => a.dev() == b.dev() && a.ino() == b.ino(),
        _ => false,
    }
}

/// A new folder in `dir` named `<prefix>XXXXXX` (removed when the returned
/// guard drops), with an exclusive `flock` on the folder itself while the
/// returned file lives, so a sweep of stale folders of that prefix can tell
/// it is in use (`None` where the file system cannot lock a folder). The
/// lock is taken on the folder that has the name once locked (a sweep that
/// removed it in between: then another).
///
/// # Errors
/// The I/O error when no folder can be made.
pub fn locked_tempdir(dir: &Path, prefix: &str) -> std::io::Result<(tempfile::TempDir, Option<std::fs::File>)> {
    // A few races with sweeps at most; a folder that cannot be opened (out
    // of file descriptors) fails every time, and is said rather than tried
    // for ever (each try made another folder).
    let mut last = None;
    for _ in 0..LOCKED_TEMPDIR_TRIES {
        let made = tempfile::Builder::new().prefix(prefix).tempdir_in(dir)?;
        let folder = match std::fs::File::open(made.path()) {
            Ok(f) => f,
            Err(e) => {
                last = Some(e);
                continue;
            }
        };
        match folder.try_lock() {
            Ok(()) => {}
            Err(std::fs::TryLockError::WouldBlock) => continue,
            Err(std::fs::TryLockError::Error(_)) => return Ok((made, None)),
        }
        if holds_name(&folder, made.path()) {
            return Ok((made, Some(folder)));
        }
    }
    Err(last.unwrap_or_else(|| {
        std::io::Error::other(format!(
            "no working folder in {} could be locked after {LOCKED_TEMPDIR_TRIES} tries",
            dir.display()
        ))
    }))
}

/// Tries of [`locked_tempdir`] before it gives up.
const LOCKED_TEMPDIR_TRIES: usize = 16;

/// Remove the folders in `dir` whose names start with `prefix` and that
/// nobody holds locked ([`locked_tempdir`]): work folders of runs that were
/// killed. Each is removed while locked here; a folder that cannot be
/// locked (no locks on this file system) or opened (another user's) is
/// left. Returns how many went.
pub fn remove_stale_tempdirs(dir: &Path, prefix: &str) -> usize {
    let Ok(entries) = std::fs::read_dir(dir) else { return 0 };
    let mut removed = 0;
    for e in entries.flatten() {
        let is_dir = e.file_type().is_ok_and(|t| t.is_dir());
        if !is_dir || !e.file_name().to_string_lossy().starts_with(prefix) {
            continue;
        }
        let Ok(folder) = std::fs::File::open(e.path()) else { continue };
        if folder.try_lock().is_ok() && std::fs::remove_dir_all(e.path()).is_ok() {
            tracing::info!("removed {}, left by a run that stopped", e.path().display());
            removed += 1;
        }
    }
    removed
}

/// The process id in a temporary output's name (`.<name>.<pid>-<n>.part`,
/// and `.<name>.<pid>.part` or `.<name>.<pid>.part.spool` from earlier
/// versions), if it is one. Only for the names of what is written into
/// the folders this cleans (stems and exports: `.wav`, `.flac`, `.mp3`,
/// `.zip`): a person's own `.backup.2023.part` or `.notes.2024-05.part`
/// in an output folder is not ours.
fn part_owner(file_name: &str) -> Option<i32> {
    let stem = file_name.strip_prefix('.')?;
    let stem = stem.strip_suffix(".part").or_else(|| stem.strip_suffix(".part.spool"))?;
    let (name, _) = stem.rsplit_once('.')?;
    if !is_output_name(name) {
        return None;
    }
    tagged_owner(stem)
}

/// Whether `name` ends in the extension of a stem, an export or a
/// waveform cache (`.wav`, `.flac`, `.mp3`, `.zip`, `.peaks`, any case):
/// the only files whose temporary and set-aside copies the sweeps here
/// take for ours.
fn is_output_name(name: &str) -> bool {
    let ext = name.rsplit_once('.').map(|(_, e)| e.to_ascii_lowercase()).unwrap_or_default();
    matches!(ext.as_str(), "wav" | "flac" | "mp3" | "zip" | "peaks")
}

/// An existing file [`publish`] set aside (`.<name>.<pid>-<n>.old`): its
/// process and its own name. Only that exact form, with a pid Linux can
/// give (at most 2^22, `PID_MAX_LIMIT` in the kernel's `threads.h`), for a
/// stem's or an export's name: a person's own `.config.2024.old` or
/// `.notes.2024-05.old` is not ours to move or remove.
fn set_aside_owner(file_name: &str) -> Option<(i32, &str)> {
    let stem = file_name.strip_prefix('.')?.strip_suffix(".old")?;
    let (name, tag) = stem.rsplit_once('.')?;
    let (pid, n) = tag.split_once('-')?;
    let digits = |t: &str| !t.is_empty() && t.bytes().all(|b| b.is_ascii_digit());
    if name.is_empty() || !digits(pid) || !digits(n) || !is_output_name(name) {
        return None;
    }
    let pid: i32 = pid.parse().ok().filter(|p| (1..=1 << 22).contains(p))?;
    Some((pid, name))
}

/// The pid in the `.<pid>-<n>` or `.<pid>` tag that ends `stem`.
fn tagged_owner(stem: &str) -> Option<i32> {
    let tag = stem.rsplit_once('.')?.1;
    let pid = match tag.split_once('-') {
        Some((pid, n)) if !n.is_empty() && n.bytes().all(|b| b.is_ascii_digit()) => pid,
        Some(_) => return None,
        None => tag,
    };
    pid.parse().ok().filter(|pid| *pid > 0)
}

/// Remove the temporary outputs in `dir` whose process is gone (a run that
/// was killed or crashed could not remove them). Returns how many. A file
/// [`publish`] had set aside to replace it (killed between its renames) is
/// put back under its name when nothing took that name, else removed.
pub fn remove_stale_parts(dir: &Path) -> usize {
    let Ok(entries) = std::fs::read_dir(dir) else { return 0 };
    let me = i32::try_from(std::process::id()).unwrap_or(0);
    let mut removed = 0;
    for e in entries.flatten() {
        let name = e.file_name();
        let is_file = e.file_type().is_ok_and(|t| t.is_file());
        if let Some((pid, own)) = name.to_str().and_then(set_aside_owner) {
            if !is_file || pid == me || process_alive(pid) {
                continue;
            }
            let original = dir.join(own);
            let back = !original.exists() && std::fs::rename(e.path(), &original).is_ok();
            if back {
                tracing::info!("put {} back: process {pid} had set it aside", original.display());
            } else if std::fs::remove_file(e.path()).is_ok() {
                tracing::info!("removed {} left by process {pid}", e.path().display());
            }
            removed += 1;
            continue;
        }
        let Some(pid) = name.to_str().and_then(part_owner) else { continue };
        if is_file && pid != me && !process_alive(pid) && remove_unless_locked(&e.path()) {
            tracing::info!("removed {} left by process {pid}", e.path().display());
            removed += 1;
        }
    }
    removed
}

/// Files and folders a run creates, removed when the guard is dropped
/// (files first, then the folders, deepest first, if empty) unless
/// [`Leftovers::disarm`]ed.
///
/// Each guarded file is created (if missing) and locked (`flock`, exclusive)
/// while the guard holds it: [`remove_stale_parts`] leaves a locked file
/// alone whatever its name's process id says, so a run in another PID
/// namespace (a container or sandbox sharing the folder, where that id
/// means nothing) keeps its temporary outputs.
#[derive(Debug, Default)]
pub struct Leftovers {
    files: Vec<PathBuf>,
    dirs: Vec<PathBuf>,
    locks: Vec<std::fs::File>,
}

impl Leftovers {
    /// An empty guard.
    pub fn new() -> Self {
        Leftovers::default()
    }

    /// Remove `path` too if the run fails; it is created (empty) if
    /// missing and locked while guarded (best effort: a file system without
    /// locks is not an error).
    pub fn file(&mut self, path: PathBuf) {
        if let Some(f) = open_locked(&path) {
            self.locks.push(f);
        }
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
        self.locks.clear();
    }
}

impl Drop for Leftovers {
    fn drop(&mut self) {
        for p in &self.files {
            let _ = std::fs::remove_file(p);
        }
        // Deepest first: a folder made for one stem may be the parent of
        // folders made for later ones (`out/` of `out/drums`, `out/bass`).
        let mut dirs = std::mem::take(&mut self.dirs);
        dirs.sort_by(|a, b| b.components().count().cmp(&a.components().count()).then_with(|| a.cmp(b)));
        dirs.dedup();
        for d in &dirs {
            let _ = std::fs::remove_dir(d);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn memory_file_systems_are_told_from_disks() {
        if std::path::Path::new("/dev/shm").is_dir() {
            assert!(in_memory(std::path::Path::new("/dev/shm")).is_some(), "/dev/shm is a tmpfs");
        }
        assert_eq!(in_memory(std::path::Path::new(env!("CARGO_MANIFEST_DIR"))), None, "the source tree is on a disk");
        assert_eq!(in_memory(std::path::Path::new("/nonexistent/folder")), None);
    }

    #[test]
    fn publishing_new_files_never_replaces_one() {
        let dir = tempfile::tempdir().unwrap();
        let p = |n: &str| dir.path().join(n);
        std::fs::write(p("a.tmp"), "new a").unwrap();
        std::fs::write(p("b.tmp"), "new b").unwrap();
        // b's name was taken after the caller chose it (another program).
        std::fs::write(p("b.wav"), "theirs").unwrap();
        let pairs = vec![(p("a.tmp"), p("a.wav")), (p("b.tmp"), p("b.wav"))];
        let e = publish_new(&pairs).unwrap_err();
        assert_eq!(e.kind(), std::io::ErrorKind::AlreadyExists);
        assert!(e.to_string().contains("b.wav"), "{e}");
        assert_eq!(std::fs::read_to_string(p("b.wav")).unwrap(), "theirs", "untouched");
        assert!(!p("a.wav").exists(), "all or nothing: a's link undone");
        assert!(p("a.tmp").exists() && p("b.tmp").exists(), "the temporary files stay for the caller");

        std::fs::remove_file(p("b.wav")).unwrap();
        publish_new(&pairs).unwrap();
        assert_eq!(std::fs::read_to_string(p("a.wav")).unwrap(), "new a");
        assert_eq!(std::fs::read_to_string(p("b.wav")).unwrap(), "new b");
        assert!(!p("a.tmp").exists() && !p("b.tmp").exists(), "the temporary names are gone");
    }

    #[test]
    fn publishing_is_all_or_nothing() {
        let dir = tempfile::tempdir().unwrap();
        let p = |n: &str| dir.path().join(n);
        std::fs::write(p("a.wav"), "old a").unwrap();
        std::fs::write(p("b.wav"), "old b").unwrap();
        std::fs::write(p("a.tmp"), "new a").unwrap();
        // b's temporary file is missing: its rename fails after a's.
        let pairs = vec![(p("a.tmp"), p("a.wav")), (p("b.tmp"), p("b.wav"))];
        let (at, _) = publish(&pairs).unwrap_err();
        assert_eq!(at, p("b.wav"), "the file that failed is named");
        assert_eq!(std::fs::read_to_string(p("a.wav")).unwrap(), "old a", "a's old file is back");
        assert_eq!(std::fs::read_to_string(p("b.wav")).unwrap(), "old b");
        std::fs::write(p("a.tmp"), "new a").unwrap();
        std::fs::write(p("b.tmp"), "new b").unwrap();
        publish(&pairs).unwrap();
        assert_eq!(std::fs::read_to_string(p("a.wav")).unwrap(), "new a");
        // A folder where b goes: refused, a's file put back, the folder untouched.
        std::fs::write(p("a.tmp"), "newer a").unwrap();
        std::fs::write(p("b.tmp"), "newer b").unwrap();
        std::fs::remove_file(p("b.wav")).unwrap();
        std::fs::create_dir(p("b.wav")).unwrap();
        std::fs::write(p("b.wav/keep.txt"), "mine").unwrap();
        let (at, e) = publish(&pairs).unwrap_err();
        assert!(e.to_string().contains("folder") && at == p("b.wav"), "{e}");
        assert_eq!(std::fs::read_to_string(p("a.wav")).unwrap(), "new a");
        assert_eq!(std::fs::read_to_string(p("b.wav/keep.txt")).unwrap(), "mine");
        std::fs::remove_dir_all(p("b.wav")).unwrap();
        std::fs::write(p("b.wav"), "new b").unwrap();
        // (The caller's guard removes the temporaries of a failed publish.)
        std::fs::remove_file(p("a.tmp")).unwrap();
        std::fs::remove_file(p("b.tmp")).unwrap();
        assert_eq!(std::fs::read_to_string(p("b.wav")).unwrap(), "new b");
        let mut names: Vec<_> = std::fs::read_dir(dir.path()).unwrap().flatten().map(|e| e.file_name()).collect();
        names.sort();
        assert_eq!(names, ["a.wav", "b.wav"], "no backups or temporaries left");
    }

    #[test]
    fn stale_parts_of_dead_processes_are_removed() {
        let dir = tempfile::tempdir().unwrap();
        // A pid that cannot be alive (above the kernel's maximum), ours,
        // and a finished output.
        let dead = dir.path().join(".drums.wav.2147483600.part");
        let old_spool = dir.path().join(".bass.wav.2147483600.part.spool");
        let ours = part_path(&dir.path().join("vocals.wav"));
        let done = dir.path().join("other.wav");
        for p in [&dead, &old_spool, &ours, &done] {
            std::fs::write(p, "x").unwrap();
        }
        // A dead id's file that a run holds locked (in another PID
        // namespace, where its id is another process's) stays.
        let elsewhere = dir.path().join(".other.wav.2147483601-0.part");
        let mut theirs = Leftovers::new();
        theirs.file(elsewhere.clone());
        assert_eq!(remove_stale_parts(dir.path()), 2);
        assert!(!dead.exists() && !old_spool.exists());
        assert!(ours.exists() && done.exists());
        assert!(elsewhere.exists(), "a locked file is a live run's");
        theirs.disarm();
        assert_eq!(remove_stale_parts(dir.path()), 1, "unlocked: stale");
        assert!(!elsewhere.exists());
        assert_eq!(part_owner(".a.b.c.12.part"), None, "only a stem's or an export's");
        assert_eq!(part_owner(".backup.2023.part"), None);
        assert_eq!(part_owner(".notes.2024-05.part"), None);
        assert_eq!(part_owner(".Song - drums.WAV.12.part"), Some(12));
        assert_eq!(part_owner(".a.b.flac.12-3.part"), Some(12));
        assert_eq!(part_owner(".Song - stems.zip.12-0.part"), Some(12));
        assert_eq!(part_owner(".a.b.mp3.12-.part"), None);
        assert_eq!(part_owner(".a.b.mp3.12-x.part"), None);
        assert_eq!(part_owner("a.12.part"), None);
        assert_eq!(part_owner(".notes.txt"), None);
    }

    /// A publish killed between setting a file aside and renaming the new
    /// one in: the old file comes back under its name (it stayed hidden as
    /// `.vocals.wav.<pid>-<n>.old`); where a new file took the name, the
    /// old one goes.
    #[test]
    fn files_a_dead_publish_set_aside_come_back() {
        let dir = tempfile::tempdir().unwrap();
        let hidden = dir.path().join(".vocals.wav.4194000-0.old");
        std::fs::write(&hidden, "old vocals").unwrap();
        let replaced = dir.path().join(".drums.wav.4194001-1.old");
        std::fs::write(&replaced, "old drums").unwrap();
        std::fs::write(dir.path().join("drums.wav"), "new drums").unwrap();
        let ours = part_path(&dir.path().join("bass.wav")).with_extension("old");
        std::fs::write(&ours, "ours").unwrap();
        assert_eq!(remove_stale_parts(dir.path()), 2);
        assert_eq!(std::fs::read_to_string(dir.path().join("vocals.wav")).unwrap(), "old vocals");
        assert_eq!(std::fs::read_to_string(dir.path().join("drums.wav")).unwrap(), "new drums");
        assert!(!hidden.exists() && !replaced.exists() && ours.exists());
        assert_eq!(set_aside_owner(".a.b.wav.12-3.old"), Some((12, "a.b.wav")));
        assert_eq!(set_aside_owner("a.wav.12-3.old"), None);
        // A person's own backups are left alone.
        assert_eq!(set_aside_owner(".config.2024.old"), None);
        assert_eq!(set_aside_owner(".notes.txt.99999999-1.old"), None, "no such pid");
        assert_eq!(set_aside_owner(".notes.2024-05.old"), None, "not a stem's name");
        assert_eq!(set_aside_owner(".db.sqlite.4242-1.old"), None, "not a stem's name");
        assert_eq!(set_aside_owner(".Song.FLAC.4242-1.old"), Some((4242, "Song.FLAC")));
    }

    #[test]
    fn helper_programs_answer_within_their_time_and_size() {
        use std::process::Command;
        use std::time::{Duration, Instant};
        let out = output_within(Command::new("sh").args(["-c", "echo hi; echo err >&2"]), Duration::from_secs(5), 100)
            .unwrap();
        assert!(out.status.success());
        assert_eq!((out.stdout.as_slice(), out.stderr.as_slice()), (&b"hi\n"[..], &b"err\n"[..]));
        let t0 = Instant::now();
        let e =
            output_within(Command::new("sh").args(["-c", "sleep 30"]), Duration::from_millis(300), 100).unwrap_err();
        assert_eq!(e.kind(), std::io::ErrorKind::TimedOut);
        assert!(t0.elapsed() < Duration::from_secs(5), "{:?}", t0.elapsed());
        let out =
            output_within(Command::new("sh").args(["-c", "head -c 5000000 /dev/zero"]), Duration::from_secs(10), 1000)
                .unwrap();
        assert_eq!(out.stdout.len(), 1000, "a flood is cut");
        assert!(output_within(&mut Command::new("/nonexistent/program"), Duration::from_secs(1), 10).is_err());
    }

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
        // Folders made for several stems under one new parent: all go.
        {
            let mut left = Leftovers::new();
            for stem in ["drums", "bass", "other"] {
                left.create_dirs(&root.path().join("out").join(stem)).unwrap();
            }
        }
        assert!(!root.path().join("out").exists(), "the shared parent goes last");
        let mut left = Leftovers::new();
        left.create_dirs(&deep).unwrap();
        left.disarm();
        drop(left);
        assert!(deep.is_dir());
        let p = part_path(&deep.join("song.wav"));
        let name = p.file_name().unwrap().to_string_lossy().into_owned();
        assert!(name.starts_with(".song.wav.") && name.ends_with(".part"), "{name}");
        assert_eq!(part_owner(&name), Some(std::process::id() as i32));
        // Each call its own name: two jobs with one destination never share one.
        assert_ne!(part_path(&deep.join("song.wav")), p);
        // A long name is cut so the temporary name (and its ".old") fits 255 bytes.
        let long = "ü".repeat(127) + ".wav";
        assert_eq!(long.len(), 258);
        let p = part_path(&deep.join(&long));
        let name = p.file_name().unwrap().to_str().unwrap();
        assert!(name.len() + 4 <= 255 && name.ends_with(".part"), "{} bytes", name.len());
        // Its extension kept: a killed run's part file is still known as one.
        assert!(name.contains(".wav."), "{name}");
        assert_eq!(part_owner(name), Some(std::process::id() as i32));
    }
}

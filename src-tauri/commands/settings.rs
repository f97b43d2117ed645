//! Settings, what the app knows about its model, runtime and tools, and the
//! model download.

use std::path::Path;

use serde::Serialize;
use specta::Type;
use std::sync::atomic::Ordering;
use stemroom_engine::audio::decode::{ffmpeg_status, FfmpegStatus};
use stemroom_engine::model::ModelStatus;
use stemroom_engine::ErrorCode;

use stemroom_engine::runtime::gpu::{self, GpuInfo};
use stemroom_engine::runtime::install::{self, InstallEvent};
use stemroom_engine::runtime::RuntimeStatus;
use stemroom_library::queue::{JobId, Settings};
use tauri::ipc::Channel;
use tauri::AppHandle;

use super::S;
use crate::dialog::{on_main, pick_folder};
use crate::error::AppError;
use crate::state::AppState;

/// Facts the Settings page and the first-run banner show.
#[derive(Debug, Clone, Serialize, Type)]
#[serde(rename_all = "camelCase")]
pub struct AppInfo {
    pub version: String,
    pub data_dir: String,
    pub library_dir: String,
    pub models: Vec<ModelStatus>,
    pub runtime: RuntimeStatus,
    /// yt-dlp (for links): where, which version, its JavaScript runtime and
    /// solver scripts, or why not.
    pub ytdlp: stemroom_library::link::YtDlpStatus,
    /// ffmpeg (for AC-3, WMA, HE-AAC and other formats only it decodes).
    pub ffmpeg: FfmpegStatus,
    /// Provider of the latest job (`cpu`, `cuda`), `None` before any.
    pub provider_in_use: Option<String>,
    /// The job database was damaged at this start: where it was set aside,
    /// and what was read back and filed again.
    pub database_recovery: Option<stemroom_library::queue::Recovery>,
}

#[tauri::command]
#[specta::specta]
pub async fn app_info(state: S<'_>) -> Result<AppInfo, AppError> {
    // Off the main thread: it checks the model files and runs `yt-dlp --version`.
    super::blocking(&state, |state| {
        Ok(AppInfo {
            version: env!("CARGO_PKG_VERSION").into(),
            data_dir: state.data_dir.to_string_lossy().into_owned(),
            library_dir: state.worker.library_dir().to_string_lossy().into_owned(),
            models: state.models(),
            runtime: state.runtime(),
            ytdlp: stemroom_library::link::status(state.queue.settings()?.ytdlp_path.as_deref().map(Path::new)),
            ffmpeg: ffmpeg_status(),
            provider_in_use: state.queue.last_provider()?,
            database_recovery: state.recovery.clone(),
        })
    })
    .await
}

/// Choose the library folder with the native dialog and save it (the page
/// never names a folder: it only asks for the dialog). Returns the saved
/// settings, or `None` when the dialog was cancelled.
#[tauri::command]
#[specta::specta]
pub async fn pick_library_dir(app: AppHandle, state: S<'_>) -> Result<Option<Settings>, AppError> {
    // A running job writes into the library it started with; the player,
    // a cancel and a crash recovery look for its work in the one set now.
    if !state.worker.running().is_empty() {
        return Err(AppError::invalid(
            "A song is being separated into the library: wait for it to finish (or cancel it) before choosing another folder.",
        ));
    }
    let Some(picked) = pick_folder(&app, "Choose the library folder").await? else { return Ok(None) };
    let dir = picked.to_str().ok_or_else(|| AppError::invalid("The folder's name is not valid Unicode."))?;
    let dir = dir.to_string();
    // Off the async threads: the checks touch the disk, and the copies
    // below may take minutes.
    super::blocking(&state, move |st| {
        // One move at a time: a second one would replace the first one's
        // copies while the first deletes the originals.
        let _moving = match st.library_move.try_lock() {
            Ok(g) => g,
            Err(std::sync::TryLockError::Poisoned(p)) => p.into_inner(),
            Err(std::sync::TryLockError::WouldBlock) => {
                return Err(AppError::invalid(
                    "The library is already moving to another folder: wait for it to finish.",
                ))
            }
        };
        check_library_place(&picked, &st.data_dir)?;
        // Songs are written there: a folder that takes no files is refused
        // now, not at the end of every queued job.
        check_writable(&picked)?;
        // Failed jobs' unfiled songs on another disk are copied first,
        // with no lock held (gigabytes take minutes; a quit, a cancel and
        // the queue would wait for the lock).
        let copied = copy_unfiled_songs(st, &picked);
        // No job starts while the setting changes and the working folders
        // move (a job claimed in between would write into the old folder,
        // or have its folder replaced under it). What is left to delete
        // goes after: a quit and a cancel wait for that lock.
        let moved = st.worker.while_no_job_starts(|running| move_library(st, &picked, &dir, running, &copied));
        // (Saved, or its copies removed below: nothing is left to clean.)
        let _cleared = ClearOnDrop(&st.data_dir);
        match moved {
            Ok(stale) => {
                for dir in stale {
                    let _ = std::fs::remove_dir_all(&dir);
                }
            }
            Err(e) => {
                // Not moved: the copies made for it go again.
                for job in &copied {
                    let _ = std::fs::remove_dir_all(stemroom_library::song::partial_dir(
                        &picked,
                        st.queue.work_tag(),
                        *job,
                    ));
                }
                return Err(e);
            }
        }
        Ok(Some(st.queue.settings()?))
    })
    .await
}

/// Clears the [`MOVE_MARKER`] when dropped (on every way out).
struct ClearOnDrop<'a>(&'a Path);

impl Drop for ClearOnDrop<'_> {
    fn drop(&mut self) {
        clear_move_mark(self.0);
    }
}

/// Refuse a library folder where songs would be lost or mixed with what
/// Stemroom keeps elsewhere: the root of the file system, the app's data
/// folder itself (its database and uploads; the `library` folder inside it,
/// the default, is fine), Stemroom's cache (models and runtimes, which an
/// uninstall or a cleaner removes), and any folder inside a working folder
/// (`.stemroom-partial-…`, deleted when its job ends).
fn check_library_place(picked: &Path, data_dir: &Path) -> Result<(), AppError> {
    let real = std::fs::canonicalize(picked).unwrap_or_else(|_| picked.to_path_buf());
    let refuse = |why: &str| Err(AppError::invalid(format!("{} cannot hold the library: {why}", real.display())));
    if real.parent().is_none() {
        return refuse("it is the root of the file system. Choose or make a folder for your songs.");
    }
    if std::fs::canonicalize(data_dir).is_ok_and(|d| d == real) {
        return refuse("it is Stemroom's own data folder. Choose or make a folder for your songs.");
    }
    if let Some(cache) = stemroom_engine::paths::cache_dir().and_then(|c| std::fs::canonicalize(c).ok()) {
        if real.starts_with(&cache) {
            return refuse("it is in Stemroom's cache (models and runtimes), which can be cleared.");
        }
    }
    if real.components().any(|c| c.as_os_str().to_string_lossy().starts_with(stemroom_library::song::PARTIAL_PREFIX)) {
        return refuse("it is inside a song's working folder, which is deleted when its job ends.");
    }
    Ok(())
}

/// Copy the working folders of failed jobs that hold their separated song
/// (only filing failed: the only copy of its stems) from the library in use
/// to `picked` on another file system, under the names they take there.
/// Returns the jobs copied. A copy that fails is removed (the song stays
/// where it is, and is not moved).
fn copy_unfiled_songs(state: &AppState, picked: &Path) -> Vec<JobId> {
    let old = state.worker.library_dir();
    if same_file_system(&old, picked) {
        return Vec::new();
    }
    let Ok(jobs) = state.queue.queue() else { return Vec::new() };
    let tag = state.queue.work_tag().to_string();
    let mut copied = Vec::new();
    for job in jobs.iter().filter(|j| matches!(j.state, stemroom_library::queue::JobState::Failed { .. })) {
        let from = stemroom_library::song::partial_dir(&old, &tag, job.id);
        if stemroom_library::song::song_of_job(&from, job).is_none() {
            continue;
        }
        let to = stemroom_library::song::partial_dir(picked, &tag, job.id);
        if copied.is_empty() {
            mark_move(&state.data_dir, picked);
        }
        let _ = std::fs::remove_dir_all(&to);
        match copy_dir(&from, &to) {
            Ok(()) => copied.push(job.id),
            Err(e) => {
                let _ = std::fs::remove_dir_all(&to);
                tracing::warn!("job {}: its stems stay in {}: {e}", job.id, from.display());
            }
        }
    }
    copied
}

/// The data folder's record of a library move copying songs (the folder
/// they are copied to): a quit or a crash during the copy (minutes for
/// gigabytes) left partial copies there that nothing referred to; the
/// next start removes them ([`clean_interrupted_move`]).
const MOVE_MARKER: &str = "library-move.pending";

/// Record that songs are being copied to `to` (see [`MOVE_MARKER`]).
fn mark_move(data_dir: &Path, to: &Path) {
    let marker = data_dir.join(MOVE_MARKER);
    use std::os::unix::ffi::OsStrExt;
    let written =
        std::fs::write(&marker, to.as_os_str().as_bytes()).and_then(|()| std::fs::File::open(&marker)?.sync_all());
    if let Err(e) = written {
        tracing::warn!("cannot record the library move in {}: {e}", marker.display());
    }
}

/// The move is over (done, or undone): its record goes.
fn clear_move_mark(data_dir: &Path) {
    let _ = std::fs::remove_file(data_dir.join(MOVE_MARKER));
}

/// At start, before any job runs: a library move that was stopped while it
/// copied songs (see [`MOVE_MARKER`]) left copies of this database's
/// working folders (tagged `tag`) in the folder it copied to. When that
/// folder is not `library`, the library now (the move was not saved), each
/// copy whose original is still in `library` is removed; a folder there
/// with no original beside it is no copy (a song left there by an earlier
/// move whose copy failed: its only stems) and stays. When it is the
/// library (the process stopped after saving), they are its own and stay.
/// `library` is `None` when the settings cannot be read: nothing is done,
/// and the record stays for the next start, as it does when the folder
/// cannot be read (a drive not mounted). Returns how many were removed.
pub fn clean_interrupted_move(data_dir: &Path, library: Option<&Path>, tag: &str) -> usize {
    let marker = data_dir.join(MOVE_MARKER);
    use std::os::unix::ffi::OsStringExt;
    let Ok(bytes) = std::fs::read(&marker) else { return 0 };
    let Some(library) = library else { return 0 };
    let target = std::path::PathBuf::from(std::ffi::OsString::from_vec(bytes));
    let mut removed = 0;
    if !stemroom_engine::files::same_file(&target, library) {
        let Ok(entries) = std::fs::read_dir(&target) else { return 0 };
        for entry in entries.flatten() {
            let name = entry.file_name();
            let Some((id, true)) = stemroom_library::song::partial_job(&name.to_string_lossy(), tag) else { continue };
            let original = stemroom_library::song::partial_dir(library, tag, id);
            if entry.file_type().is_ok_and(|t| t.is_dir())
                && original.is_dir()
                && std::fs::remove_dir_all(entry.path()).is_ok()
            {
                removed += 1;
            }
        }
        if removed > 0 {
            tracing::info!("removed {removed} song copies an interrupted library move left in {}", target.display());
        }
    }
    clear_move_mark(data_dir);
    removed
}

/// Whether `a` and `b` are on one file system (a rename between them
/// works); false where that cannot be told.
fn same_file_system(a: &Path, b: &Path) -> bool {
    #[cfg(unix)]
    {
        use std::os::unix::fs::MetadataExt;
        matches!((std::fs::metadata(a), std::fs::metadata(b)), (Ok(x), Ok(y)) if x.dev() == y.dev())
    }
    #[cfg(not(unix))]
    {
        let _ = (a, b);
        false
    }
}

/// Save `picked` (named `dir`) as the library folder and move the queue's
/// working folders there (those of `copied` jobs are there already: their
/// old ones are returned, to be deleted once no lock is held, when their
/// copy is whole); refused while a job runs (`running`).
fn move_library(
    state: &AppState,
    picked: &Path,
    dir: &str,
    running: &[JobId],
    copied: &[JobId],
) -> Result<Vec<std::path::PathBuf>, AppError> {
    if !running.is_empty() {
        return Err(AppError::invalid("A separation started meanwhile: choose the folder again once it is done."));
    }
    let old = state.worker.library_dir();
    {
        let _editing = state.editing_settings();
        let settings = Settings { library_dir: Some(dir.to_string()), ..state.queue.settings()? };
        state.queue.save_settings(&settings)?;
    }
    let mut stale = Vec::new();
    // Queued jobs that were interrupted keep their checkpoints, and failed
    // ones whose song could not be filed their stems: moved along (a
    // rename; across file systems the job starts over and the old one
    // goes), not left behind in the old folder for good. The same folder
    // by another name (a link, a bind mount) moves nothing.
    let same = stemroom_engine::files::same_file(&old, picked);
    // The setting is saved: from here on nothing is an error of the move
    // (the caller would remove the copies the new library now holds).
    let jobs = match state.queue.queue() {
        Ok(jobs) => jobs,
        Err(e) => {
            tracing::warn!("the queue could not be read: its working folders stay in {}: {e}", old.display());
            Vec::new()
        }
    };
    if !same {
        for job in jobs {
            let from = stemroom_library::song::partial_dir(&old, state.queue.work_tag(), job.id);
            if !from.is_dir() {
                continue;
            }
            if copied.contains(&job.id) {
                // The copy is the song now, if it is still whole.
                let to = stemroom_library::song::partial_dir(picked, state.queue.work_tag(), job.id);
                if stemroom_library::song::song_of_job(&to, &job).is_some() {
                    stale.push(from);
                } else {
                    tracing::warn!("job {}: its copy is not whole: its stems stay in {}", job.id, from.display());
                }
                continue;
            }
            // A stale folder of the same job in the new library is older
            // than this checkpoint.
            let to = stemroom_library::song::partial_dir(picked, state.queue.work_tag(), job.id);
            let _ = std::fs::remove_dir_all(&to);
            match std::fs::rename(&from, &to) {
                Ok(()) => {}
                // Another file system, and the folder holds a separated song
                // not filed yet (its copy failed above): left where it is.
                Err(e)
                    if e.kind() == std::io::ErrorKind::CrossesDevices
                        && stemroom_library::song::song_of_job(&from, &job).is_some() =>
                {
                    tracing::warn!("job {}: its stems stay in {}: {e}", job.id, from.display());
                }
                // Another file system, a checkpoint: the job starts over.
                Err(e) if e.kind() == std::io::ErrorKind::CrossesDevices => stale.push(from),
                Err(e) => tracing::warn!("job {}: its checkpoint stays in {}: {e}", job.id, from.display()),
            }
        }
    }
    Ok(stale)
}

/// Copy folder `from` (files and folders; links are left out) to `to`, which
/// must not exist, each file synced, the song's `stemroom.json` last (a copy
/// cut short by a crash lacks it, and is not taken for the song).
fn copy_dir(from: &Path, to: &Path) -> std::io::Result<()> {
    std::fs::create_dir(to)?;
    let copy = |src: &Path, dst: &Path| -> std::io::Result<()> {
        std::fs::copy(src, dst)?;
        // Opened for writing: Windows syncs only such handles.
        std::fs::File::options().write(true).open(dst)?.sync_all()
    };
    let meta = std::ffi::OsStr::new(stemroom_library::song::METADATA_FILE);
    for entry in std::fs::read_dir(from)? {
        let entry = entry?;
        let (kind, target) = (entry.file_type()?, to.join(entry.file_name()));
        if kind.is_dir() {
            copy_dir(&entry.path(), &target)?;
        } else if kind.is_file() && entry.file_name() != meta {
            copy(&entry.path(), &target)?;
        }
    }
    if from.join(meta).is_file() {
        copy(&from.join(meta), &to.join(meta))?;
    }
    stemroom_engine::files::sync_dir(to);
    Ok(())
}

/// Whether files can be made in `dir`: a probe file is created and removed.
fn check_writable(dir: &std::path::Path) -> Result<(), AppError> {
    let probe = dir.join(format!(".stemroom-write-check-{}", std::process::id()));
    match std::fs::OpenOptions::new().write(true).create_new(true).open(&probe) {
        Ok(_) => {
            let _ = std::fs::remove_file(&probe);
            Ok(())
        }
        Err(e) => Err(AppError::invalid(format!(
            "Stemroom cannot write into {}: {e}. Choose a folder you can write to.",
            dir.display()
        ))),
    }
}

/// A program the app runs for the person: yt-dlp (links) or ffmpeg (more formats).
#[derive(Debug, Clone, Copy, serde::Deserialize, Type)]
#[serde(rename_all = "camelCase")]
pub enum Program {
    Ytdlp,
    Ffmpeg,
}

/// Choose the program's file with the native dialog (`pick: true`) or go
/// back to finding it automatically (`pick: false`), and save that. The
/// page never names a program to run. Returns the saved settings (unchanged
/// when the dialog was cancelled).
///
/// # Errors
/// `invalid_options` for a file that is not an executable program.
#[tauri::command]
#[specta::specta]
pub async fn choose_program(app: AppHandle, state: S<'_>, program: Program, pick: bool) -> Result<Settings, AppError> {
    let chosen = if pick {
        let title = match program {
            Program::Ytdlp => "Choose the yt-dlp program",
            Program::Ffmpeg => "Choose the ffmpeg program",
        };
        let Some(file) = on_main(&app, move || rfd::FileDialog::new().set_title(title).pick_file()).await? else {
            return Ok(state.queue.settings()?);
        };
        use std::os::unix::fs::PermissionsExt;
        let runnable = std::fs::metadata(&file).is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0);
        if !runnable {
            return Err(AppError::invalid(format!("{} is not a program that can be run.", file.display())));
        }
        Some(file.to_str().ok_or_else(|| AppError::invalid("The file's name is not valid Unicode."))?.to_string())
    } else {
        None
    };
    super::blocking(&state, move |st| {
        // A program that is not yt-dlp (its `--version` is no release
        // date) is refused now, not at the first link.
        if let (Program::Ytdlp, Some(file)) = (program, chosen.as_deref()) {
            if let Err(e) = stemroom_library::link::YtDlp::locate(Some(Path::new(file))) {
                return Err(AppError::invalid(format!("{file} cannot be used for links: {e}")));
            }
        }
        let _editing = st.editing_settings();
        let mut settings = st.queue.settings()?;
        match program {
            Program::Ytdlp => settings.ytdlp_path = chosen,
            Program::Ffmpeg => settings.ffmpeg_path = chosen,
        }
        st.queue.save_settings(&settings)?;
        crate::state::apply_ffmpeg_path(&settings);
        Ok(st.queue.settings()?)
    })
    .await
}

#[tauri::command]
#[specta::specta]
pub async fn get_settings(state: S<'_>) -> Result<Settings, AppError> {
    super::blocking(&state, |st| Ok(st.queue.settings()?)).await
}

/// Save the settings the page edits. The library folder and the programs'
/// paths are kept as they are: only [`pick_library_dir`] and
/// [`choose_program`] (native dialogs) change them, so a page can never make
/// the app write into a folder or run a program of its choosing.
#[tauri::command]
#[specta::specta]
pub async fn save_settings(state: S<'_>, settings: Settings) -> Result<Settings, AppError> {
    // A model id not in the manifest would fail every new job at its run.
    if state.manifest.get(&settings.model).is_err() {
        return Err(AppError::invalid(format!("There is no model named “{}”.", settings.model)));
    }
    super::blocking(&state, move |st| {
        let _editing = st.editing_settings();
        let kept = st.queue.settings()?;
        let settings = Settings {
            library_dir: kept.library_dir,
            ytdlp_path: kept.ytdlp_path,
            ffmpeg_path: kept.ffmpeg_path,
            ..settings
        };
        st.queue.save_settings(&settings)?;
        crate::state::apply_ffmpeg_path(&settings);
        st.worker.start(settings.concurrent_jobs as usize);
        Ok(st.queue.settings()?)
    })
    .await
}

/// Install model `id` into Stemroom's model folder: download it (the
/// package tarball over HTTPS, resumable, checked by sha256) or make it from
/// its base model, reporting progress on `channel`; one model install at a
/// time, cancelled by [`cancel_model_fetch`] (the partial download is kept
/// and resumes).
#[tauri::command]
#[specta::specta]
pub async fn fetch_model(state: S<'_>, id: String, channel: Channel<InstallEvent>) -> Result<ModelStatus, AppError> {
    let st = state.inner().clone();
    state
        .model_fetch
        .run("A model is already being installed.", move |cancel| {
            install_model(&st, &id, None, &channel, &|| cancel.load(Ordering::Relaxed))
        })
        .await
}

/// Install model `id` from a file already downloaded, chosen in a native
/// dialog: the model file itself or its package tarball (for a computer
/// without internet). `None` when the dialog is cancelled.
#[tauri::command]
#[specta::specta]
pub async fn fetch_model_from_file(
    app: AppHandle,
    state: S<'_>,
    id: String,
    channel: Channel<InstallEvent>,
) -> Result<Option<ModelStatus>, AppError> {
    let info = state.manifest.get(&id).map_err(stemroom_engine::Error::from)?.clone();
    let tarball = info.fetch.as_ref().map(|f| f.tarball_name().to_string()).unwrap_or_default();
    let title = format!("Choose {} or {}", info.file, tarball);
    let picked = on_main(&app, move || {
        rfd::FileDialog::new()
            .set_title(title)
            .add_filter("Model or package", &crate::dialog::filter_extensions(&["onnx", "tgz"]))
            .pick_file()
    })
    .await?;
    let Some(file) = picked else { return Ok(None) };
    let st = state.inner().clone();
    state
        .model_fetch
        .run("A model is already being installed.", move |cancel| {
            install_model(&st, &id, Some(file), &channel, &|| cancel.load(Ordering::Relaxed))
        })
        .await
        .map(Some)
}

fn install_model(
    st: &crate::state::AppState,
    id: &str,
    from: Option<std::path::PathBuf>,
    channel: &Channel<InstallEvent>,
    cancelled: &dyn Fn() -> bool,
) -> Result<ModelStatus, AppError> {
    use stemroom_engine::model;
    let info = st.manifest.get(id).map_err(stemroom_engine::Error::from)?.clone();
    let dest = model::default_fetch_dir().ok_or_else(|| AppError::internal("no cache directory (HOME is not set)"))?;
    let dirs = model::model_search_dirs(None);
    if info.fetch.is_some() {
        let mut opts = model::FetchOptions::for_dest(&dest);
        opts.from = from;
        model::fetch_with(&info, &dest, &opts, &mut |e| drop(channel.send(e.clone())), cancelled)
            .map_err(model_error)?;
    } else {
        let _ = channel.send(InstallEvent::Unpacking { file: info.file.clone() });
        model::obtain(&st.manifest, &info, &dirs, &dest, cancelled).map_err(model_error)?;
        let _ = channel.send(InstallEvent::Installed { dir: dest.display().to_string() });
    }
    st.models().into_iter().find(|m| m.id == id).ok_or_else(|| AppError::internal("model vanished after installing"))
}

/// Stop the running model download (the part downloaded so far is kept).
#[tauri::command]
#[specta::specta]
pub fn cancel_model_fetch(state: S<'_>) {
    state.model_fetch.cancel();
}

/// Remove model `id`'s file from Stemroom's own model folder (the model
/// manager's Remove). Files elsewhere (a folder the user keeps) are left
/// alone. Returns every model's status after it.
///
/// # Errors
/// `invalid_options` while a model install runs or for a file outside
/// Stemroom's folder; I/O errors.
#[tauri::command]
#[specta::specta]
pub async fn remove_model(state: S<'_>, id: String) -> Result<Vec<ModelStatus>, AppError> {
    let st = state.inner().clone();
    state
        .model_fetch
        .run("A model is being installed; remove it when that is done.", move |_| {
            let info = st.manifest.get(&id).map_err(stemroom_engine::Error::from)?.clone();
            let here = st.models().into_iter().find(|m| m.id == id);
            if here.as_ref().is_some_and(|m| m.installed && !m.removable) {
                return Err(AppError {
                    code: ErrorCode::InvalidOptions,
                    message: format!(
                        "{} is not in Stemroom's model folder ({}); delete it yourself if you want it gone.",
                        info.file,
                        here.and_then(|m| m.path).unwrap_or_default()
                    ),
                });
            }
            stemroom_engine::model::remove_own(&info).map_err(model_error)?;
            Ok(st.models())
        })
        .await
}

/// yt-dlp for links: install it with deno from pinned PyPI wheels into the
/// per-user cache (no pip, no venv; needs python3 3.10+), reporting
/// progress on `channel`; cancelled by [`cancel_links_install`].
#[tauri::command]
#[specta::specta]
pub async fn install_links(
    state: S<'_>,
    channel: Channel<InstallEvent>,
) -> Result<stemroom_library::link::YtDlpStatus, AppError> {
    run_links_install(&state, None, channel).await
}

/// The same from a folder of wheels already downloaded (for a computer
/// without internet), chosen in a native dialog; `None` when cancelled.
/// Every wheel is checked against its sha256 as a download would be.
#[tauri::command]
#[specta::specta]
pub async fn install_links_from_folder(
    app: AppHandle,
    state: S<'_>,
    channel: Channel<InstallEvent>,
) -> Result<Option<stemroom_library::link::YtDlpStatus>, AppError> {
    let Some(folder) = pick_folder(&app, "Choose the folder holding the yt-dlp wheels").await? else {
        return Ok(None);
    };
    run_links_install(&state, Some(folder), channel).await.map(Some)
}

async fn run_links_install(
    state: &S<'_>,
    from: Option<std::path::PathBuf>,
    channel: Channel<InstallEvent>,
) -> Result<stemroom_library::link::YtDlpStatus, AppError> {
    state
        .tools_install
        .run("yt-dlp is already being installed.", move |cancel| {
            let mut opts = stemroom_library::link::install::ToolsInstall::default_place()
                .ok_or_else(|| AppError::internal("no cache directory (HOME is not set)"))?;
            opts.from = from;
            stemroom_library::link::install::install(&opts, &mut |e| drop(channel.send(e.clone())), &|| {
                cancel.load(Ordering::Relaxed)
            })
            .map_err(install_error)?;
            Ok(stemroom_library::link::status(None))
        })
        .await
}

/// Stop the running yt-dlp install (downloaded wheels are kept).
#[tauri::command]
#[specta::specta]
pub fn cancel_links_install(state: S<'_>) {
    state.tools_install.cancel();
}

/// GPU support: what this machine has, whether CUDA runs, and what
/// installing it would download.
#[derive(Debug, Clone, Serialize, Type)]
#[serde(rename_all = "camelCase")]
pub struct GpuSupport {
    /// The NVIDIA driver's version, if one is loaded.
    pub driver_version: Option<String>,
    /// GPUs `nvidia-smi` lists (name, memory in MiB).
    pub gpus: Vec<GpuInfo>,
    /// Whether GPU support (ONNX Runtime GPU, CUDA, cuDNN) is installed.
    pub installed: bool,
    /// Whether separations can run on CUDA.
    pub usable: bool,
    /// Why CUDA is not used, with the fix.
    pub problem: Option<String>,
    /// Bytes installing would download.
    pub download_bytes: f64,
    /// Where it goes.
    pub install_dir: String,
    /// The CPU build of ONNX Runtime is already loaded in this process: the
    /// app must restart to use the GPU build.
    pub restart_needed: bool,
}

/// Where GPU support is installed, in the per-user cache.
fn gpu_install_options() -> Result<install::InstallOptions, AppError> {
    let cache = stemroom_engine::paths::cache_dir()
        .ok_or_else(|| AppError::internal("no cache directory (HOME is not set)"))?;
    Ok(install::gpu_options(&cache, None))
}

fn gpu_support_now() -> Result<GpuSupport, AppError> {
    let opts = gpu_install_options()?;
    let plan = install::plan(&opts);
    let facts = gpu::facts();
    let diagnosis = gpu::diagnose(&facts);
    let loaded_elsewhere = stemroom_engine::runtime::loaded_library().is_some_and(|p| !p.starts_with(&opts.dest));
    Ok(GpuSupport {
        driver_version: facts.driver_version,
        gpus: facts.gpus,
        installed: plan.installed,
        usable: diagnosis.is_ok(),
        problem: diagnosis.err().map(|why| why.message()),
        download_bytes: plan.download_bytes,
        install_dir: plan.dir,
        restart_needed: plan.installed && loaded_elsewhere,
    })
}

#[tauri::command]
#[specta::specta]
pub async fn gpu_support() -> Result<GpuSupport, AppError> {
    // Off the main thread: it runs nvidia-smi.
    tauri::async_runtime::spawn_blocking(gpu_support_now).await.map_err(AppError::task_lost)?
}

/// Download, verify and install GPU support (one install at a time),
/// reporting progress on `channel`; cancelled by [`cancel_gpu_install`].
#[tauri::command]
#[specta::specta]
pub async fn install_gpu_support(state: S<'_>, channel: Channel<InstallEvent>) -> Result<GpuSupport, AppError> {
    state
        .gpu_install
        // One slot with the runtime's install (both install ONNX Runtime
        // builds): the message names both.
        .run("ONNX Runtime or GPU support is already being installed: wait for it to finish.", move |cancel| {
            install_unless_there(&gpu_install_options()?, &channel, &cancel)?;
            gpu_support_now()
        })
        .await
}

/// Download, verify and install the CPU build of ONNX Runtime (the pinned
/// PyPI wheel, 24 MB, checked by sha256) into the per-user cache where the
/// app looks for it: the fix the setup banner offers when the runtime is
/// missing. Shares the one-install-at-a-time slot (and cancel) with GPU
/// support.
#[tauri::command]
#[specta::specta]
pub async fn install_runtime(state: S<'_>, channel: Channel<InstallEvent>) -> Result<RuntimeStatus, AppError> {
    let app = state.inner().clone();
    state
        .gpu_install
        .run("ONNX Runtime or GPU support is already being installed: wait for it to finish.", move |cancel| {
            let cache = stemroom_engine::paths::cache_dir()
                .ok_or_else(|| AppError::internal("no cache directory (HOME is not set)"))?;
            install_unless_there(&install::cpu_options(&cache, None), &channel, &cancel)?;
            Ok(app.runtime())
        })
        .await
}

/// Stop the running GPU support install (what it downloaded is kept, so a
/// later install resumes).
#[tauri::command]
#[specta::specta]
pub fn cancel_gpu_install(state: S<'_>) {
    state.gpu_install.cancel();
}

/// Install what `opts` names, reporting on `channel`, unless it is there
/// already (installed meanwhile by `stemroom runtime fetch`, with this
/// window's view older: up to 1.5 GB are not fetched again).
fn install_unless_there(
    opts: &install::InstallOptions,
    channel: &Channel<InstallEvent>,
    cancel: &std::sync::atomic::AtomicBool,
) -> Result<(), AppError> {
    if install::plan(opts).installed {
        return Ok(());
    }
    install::install(opts, &mut |e| drop(channel.send(e.clone())), &|| cancel.load(Ordering::Relaxed))
        .map(|_| ())
        .map_err(install_error)
}

/// An error of the model manager's own install or remove, in its own words.
/// (A job's "the model is not installed: fetch it from Settings" would send
/// the person back to the button that just failed.)
fn model_error(e: stemroom_engine::model::ModelError) -> AppError {
    use stemroom_engine::model::ModelError;
    let message = match &e {
        ModelError::Corrupt { path, reason, .. } => {
            format!("{} is not a usable copy of the model: {reason}.", path.display())
        }
        ModelError::Io { path, source } => format!("{} could not be read or written: {source}.", path.display()),
        ModelError::Network(reason) => format!("The model could not be downloaded: {reason}"),
        other => other.to_string(),
    };
    AppError { code: stemroom_engine::Error::from(e).code(), message }
}

fn install_error(e: install::InstallError) -> AppError {
    AppError { code: e.code(), message: e.to_string() }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The model manager's failures say what failed, not "the model is
    /// not installed: fetch it from Settings" (the button just pressed).
    #[test]
    fn model_install_errors_say_what_failed() {
        use stemroom_engine::model::ModelError;
        let full = model_error(ModelError::Io {
            path: "/cache/models/htdemucs.onnx.part".into(),
            source: std::io::Error::from(std::io::ErrorKind::StorageFull),
        });
        assert!(full.message.starts_with("/cache/models/htdemucs.onnx.part could not be"), "{}", full.message);
        let wrong = model_error(ModelError::Corrupt {
            path: "/home/me/notes.txt".into(),
            reason: "it is neither htdemucs.onnx nor its package".into(),
            how: "stemroom models --fetch htdemucs".into(),
        });
        assert_eq!(wrong.code, ErrorCode::MissingModel);
        for e in [&full, &wrong] {
            assert!(!e.message.contains("Fetch it from Settings") && !e.message.contains("Delete it"), "{}", e.message);
        }
    }

    /// A library move stopped while it copied songs: its copies in the
    /// folder it was going to are removed at the next start, unless that
    /// folder became the library (the move was saved).
    #[test]
    fn copies_of_a_stopped_library_move_are_removed() {
        let dir = tempfile::tempdir().expect("tempdir");
        let (data, picked, library) = (dir.path().join("data"), dir.path().join("usb"), dir.path().join("lib"));
        for d in [&data, &picked, &library] {
            std::fs::create_dir_all(d).expect("mkdir");
        }
        let ours = stemroom_library::song::partial_dir(&picked, "ab12", 7);
        let theirs = stemroom_library::song::partial_dir(&picked, "cd34", 7);
        // Job 9's folder there is no copy: an earlier move left it (its
        // copy failed), the only stems of that song.
        let only = stemroom_library::song::partial_dir(&picked, "ab12", 9);
        let original = stemroom_library::song::partial_dir(&library, "ab12", 7);
        for d in [&ours, &theirs, &picked.join("A song"), &only, &original] {
            std::fs::create_dir_all(d).expect("mkdir");
            std::fs::write(d.join("vocals.wav"), b"RIFF").expect("write");
        }
        assert_eq!(clean_interrupted_move(&data, Some(&library), "ab12"), 0, "no move recorded");
        assert!(ours.exists());
        mark_move(&data, &picked);
        // The move was saved: they are the library's working folders.
        assert_eq!(clean_interrupted_move(&data, Some(&picked), "ab12"), 0);
        assert!(ours.exists() && !data.join(MOVE_MARKER).exists());
        // Settings that cannot be read, or a folder that cannot: nothing
        // done, the record kept for the next start.
        mark_move(&data, &picked);
        assert_eq!(clean_interrupted_move(&data, None, "ab12"), 0);
        assert!(ours.exists() && data.join(MOVE_MARKER).exists());
        assert_eq!(clean_interrupted_move(&data, Some(&library), "ab12"), 1);
        assert!(!ours.exists() && theirs.exists() && picked.join("A song").exists() && only.exists());
        assert!(original.exists() && !data.join(MOVE_MARKER).exists());
        mark_move(&data, &dir.path().join("unmounted"));
        assert_eq!(clean_interrupted_move(&data, Some(&library), "ab12"), 0);
        assert!(data.join(MOVE_MARKER).exists());
    }

    #[test]
    fn a_library_is_not_put_where_songs_would_be_lost() {
        let dir = tempfile::tempdir().expect("tempdir");
        let data = dir.path().join("data");
        let inside = data.join(".stemroom-partial-ab12-7").join("lib");
        std::fs::create_dir_all(&inside).expect("mkdir");
        std::fs::create_dir_all(data.join("library")).expect("mkdir");
        let refused = |p: &Path| check_library_place(p, &data).expect_err("refused").message;
        assert!(refused(Path::new("/")).contains("root of the file system"));
        assert!(refused(&data).contains("own data folder"));
        assert!(refused(&inside).contains("working folder"));
        assert!(check_library_place(&data.join("library"), &data).is_ok(), "the default library");
        assert!(check_library_place(dir.path(), &data).is_ok());
    }

    #[test]
    fn a_folder_by_another_name_is_the_same_folder() {
        let dir = tempfile::tempdir().expect("tempdir");
        let lib = dir.path().join("Music");
        std::fs::create_dir(&lib).expect("mkdir");
        let link = dir.path().join("link");
        std::os::unix::fs::symlink(&lib, &link).expect("symlink");
        assert!(
            stemroom_engine::files::same_file(&lib, &link)
                && stemroom_engine::files::same_file(&lib, &dir.path().join("./Music"))
        );
        let other = dir.path().join("Other");
        std::fs::create_dir(&other).expect("mkdir");
        assert!(!stemroom_engine::files::same_file(&lib, &other));
        assert!(check_writable(&lib).is_ok());
        assert!(std::fs::read_dir(&lib).expect("ls").next().is_none(), "the probe file is gone");
        assert!(check_writable(&dir.path().join("missing")).is_err());
    }
}

//! The queue: adding songs (files, folders, links), cancel, retry, remove,
//! reorder, and the progress channel.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use stemroom_engine::units::Preset;
use stemroom_engine::ErrorCode;
use stemroom_library::intake::{self, AddResult};
use stemroom_library::link::LinkEntry;
use stemroom_library::queue::{Job, JobId, JobOptions, JobState, Queue, QueueError};
use tauri::ipc::Channel;
use tauri::AppHandle;

use super::S;
use crate::dialog::on_main;
use crate::error::AppError;
use crate::state::{AppState, QueueEvent};

/// Jobs not in the library: running and queued first (queue order), then
/// failed and cancelled ones, newest first. (On the blocking pool, not
/// the window's thread.)
#[tauri::command]
#[specta::specta]
pub async fn list_queue(state: S<'_>) -> Result<Vec<Job>, AppError> {
    super::blocking(&state, |st| Ok(st.queue.queue()?)).await
}

/// Run an intake call off the IPC thread (it reads file headers and asks
/// yt-dlp about links), then wake the worker and tell the windows.
async fn add_with(
    state: Arc<AppState>,
    intake: impl FnOnce(&Queue) -> Result<AddResult, QueueError> + Send + 'static,
) -> Result<AddResult, AppError> {
    let st = state.clone();
    let result =
        tauri::async_runtime::spawn_blocking(move || intake(&st.queue)).await.map_err(AppError::task_lost)??;
    if !result.added.is_empty() {
        state.worker.notify();
        state.hub.send(QueueEvent::QueueChanged);
    }
    Ok(result)
}

async fn add(state: Arc<AppState>, paths: Vec<PathBuf>, options: intake::AddOptions) -> Result<AddResult, AppError> {
    add_with(state, move |q| intake::add_paths_with(q, &paths, options)).await
}

/// Absolute `path` with its folder resolved (`..` and symbolic links: a
/// granted path holds no `..`, see `Grants::wait_for`, so "Separate again"
/// on a song opened as `../Music/song.mp3` is not refused), its own name
/// kept (a link keeps its name, the song its title); `None` when its
/// folder does not exist.
fn without_dot_dot(path: &Path) -> Option<PathBuf> {
    match (path.parent(), path.file_name()) {
        (Some(dir), Some(name)) if !dir.as_os_str().is_empty() => dir.canonicalize().ok().map(|d| d.join(name)),
        _ => path.canonicalize().ok(),
    }
}

/// Files given on the command line ("Open with Stemroom" from a file
/// manager: the desktop entry passes them as `%F`, and a second launch
/// forwards its own): queue the existing files and folders among `args`
/// (options and anything else are ignored) with the settings' preset. What
/// is not added is shown in the window as for its own adds: a name that
/// does not exist, and every file when the queue refuses them all.
pub fn open_with(state: Arc<AppState>, args: Vec<PathBuf>, cwd: Option<&Path>) {
    let mut missing = Vec::new();
    let paths: Vec<PathBuf> = args
        .into_iter()
        .filter(|a| a.as_os_str().as_encoded_bytes().first() != Some(&b'-'))
        .map(|a| match cwd {
            // A second launch's relative names are relative to where it
            // ran, not to where this instance started.
            Some(dir) if a.is_relative() => dir.join(a),
            _ => std::path::absolute(&a).unwrap_or(a),
        })
        .filter_map(|p| {
            let resolved = without_dot_dot(&p).filter(|r| r.exists());
            if resolved.is_none() {
                tracing::warn!("opened with Stemroom: {} does not exist", p.display());
                missing.push(intake::Rejected::of(&p.to_string_lossy(), "The file does not exist.".into()));
            }
            resolved
        })
        .collect();
    let hub = state.hub.clone();
    if paths.is_empty() {
        if !missing.is_empty() {
            let result = intake::AddResult { rejected: missing, ..Default::default() };
            hub.send(QueueEvent::Opened { result: Box::new(result) });
        }
        return;
    }
    state.grants.grant(paths.iter().cloned());
    tauri::async_runtime::spawn(async move {
        let given: Vec<String> = paths.iter().map(|p| p.to_string_lossy().into_owned()).collect();
        let mut result = match add(state, paths, intake::AddOptions::default()).await {
            Ok(r) => r,
            Err(e) => {
                tracing::warn!("opened with Stemroom: {}", e.message);
                let rejected = given.iter().map(|p| intake::Rejected::of(p, e.message.clone())).collect();
                intake::AddResult { rejected, ..Default::default() }
            }
        };
        result.rejected.extend(missing);
        tracing::info!(
            "opened with Stemroom: {} added, {} refused, {} already there",
            result.added.len(),
            result.rejected.len(),
            result.duplicates.len()
        );
        hub.send(QueueEvent::Opened { result: Box::new(result) });
    });
}

/// The options of songs added with `preset` (`None`: the settings' own).
fn job_options(queue: &Queue, preset: Option<Preset>) -> Result<Option<JobOptions>, AppError> {
    Ok(match preset {
        Some(p) => Some(queue.settings()?.with_preset(Some(p)).job_options()),
        None => None,
    })
}

/// Queue files, folders and links, separated with `preset` (`None`: as the
/// settings say). A file already queued or in the library comes back in
/// `duplicates` (with that job) unless `allow_duplicates`.
#[tauri::command]
#[specta::specta]
pub async fn add_paths(
    state: S<'_>,
    paths: Vec<String>,
    allow_duplicates: bool,
    preset: Option<Preset>,
) -> Result<AddResult, AppError> {
    let options = intake::AddOptions { allow_duplicates, job: job_options(&state.queue, preset)? };
    // Links, and the files and folders the person gave the app outside the
    // page (see `Grants`); any other path the page names is refused unread.
    // (On the blocking pool: right after a drag out, the page's names are
    // resolved, and a grant may be waited for.)
    let st = state.inner().clone();
    let (own, (allowed, refused)) = tauri::async_runtime::spawn_blocking(move || {
        let (own, paths): (Vec<String>, Vec<String>) = paths
            .into_iter()
            .partition(|p| !stemroom_library::link::looks_like_url(p) && st.dragged_out.is_own(Path::new(p)));
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(1);
        let checked = paths.into_iter().partition::<Vec<String>, _>(|p| {
            stemroom_library::link::looks_like_url(p) || st.grants.wait_for(Path::new(p), deadline)
        });
        (own, checked)
    })
    .await
    .map_err(AppError::task_lost)?;
    let mut result = if allowed.is_empty() {
        AddResult::default()
    } else {
        add(state.inner().clone(), allowed.into_iter().map(PathBuf::from).collect(), options).await?
    };
    result.rejected.extend(own.into_iter().map(|p| {
        intake::Rejected::of(
            &p,
            "This is the file being dragged out of the player: let go of it over a DAW, a file manager or a \
             sampler to use it there (to separate it again, add it with Add files…)."
                .into(),
        )
    }));
    result.rejected.extend(refused.into_iter().map(|p| {
        intake::Rejected::of(
            &p,
            "Add files by dropping them on the window, with Add files…, or by opening them with Stemroom; \
             this field takes links (http:// or https://)."
                .into(),
        )
    }));
    Ok(result)
}

/// Queue chosen entries of a playlist link, separated with `preset`.
#[tauri::command]
#[specta::specta]
pub async fn add_links(state: S<'_>, entries: Vec<LinkEntry>, preset: Option<Preset>) -> Result<AddResult, AppError> {
    let job = job_options(&state.queue, preset)?;
    add_with(state.inner().clone(), move |q| intake::add_links_with(q, &entries, job)).await
}

#[tauri::command]
#[specta::specta]
pub async fn pick_files(app: AppHandle, state: S<'_>, preset: Option<Preset>) -> Result<AddResult, AppError> {
    let job = job_options(&state.queue, preset)?;
    let picked = on_main(&app, || {
        rfd::FileDialog::new()
            .set_title("Add songs to separate")
            .add_filter("Audio", &crate::dialog::filter_extensions(intake::AUDIO_EXTENSIONS))
            .pick_files()
    })
    .await?;
    let picked = picked.unwrap_or_default();
    state.grants.grant(picked.iter().cloned());
    add(state.inner().clone(), picked, intake::AddOptions { job, ..Default::default() }).await
}

/// Cancel job `id` (on the blocking pool, not the window's thread: it
/// writes the database and may remove a checkpoint of hundreds of MB).
#[tauri::command]
#[specta::specta]
pub async fn cancel_job(state: S<'_>, id: JobId) -> Result<Job, AppError> {
    super::blocking(&state, move |st| {
        // The worker tells its listeners (the window, and the HTTP
        // service's clients following the job, whose upload goes).
        let job = st.worker.cancel(id)?;
        st.hub.send(QueueEvent::QueueChanged);
        Ok(job)
    })
    .await
}

/// Queue failed or cancelled job `id` again (on the blocking pool: it
/// writes the database).
#[tauri::command]
#[specta::specta]
pub async fn retry_job(state: S<'_>, id: JobId) -> Result<Job, AppError> {
    super::blocking(&state, move |st| {
        let job = st.worker.retry(id)?;
        st.hub.send(QueueEvent::QueueChanged);
        Ok(job)
    })
    .await
}

/// Remove job or song `id`. With `delete_files`, a song's files go too: its
/// stems, `stemroom.json` and waveform cache, and its `exports` folder only
/// with `delete_exports` (see [`stemroom_library::song::remove_song`] for
/// the rules); the folder stays when anything else is in it.
#[tauri::command]
#[specta::specta]
pub async fn remove_job(state: S<'_>, id: JobId, delete_files: bool, delete_exports: bool) -> Result<(), AppError> {
    // Off the main thread: deleting a song's stems can take a while.
    super::blocking(&state, move |st| {
        let job = st.queue.get(id)?;
        // A running job cannot be removed (its worker writes its files):
        // refused before the player lets go of it.
        if job.state.is_running() {
            return Err(QueueError::WrongState { id, status: "running", action: "removing" }.into());
        }
        // The player and an export let go of the song first, and it is not
        // opened again until the removal is over, when its files are
        // deleted (its waveform reader or the export would otherwise write
        // into the folder being deleted), and for a job that failed or was
        // cancelled, which plays (what it separated) from its working
        // folder, which its removal deletes.
        let _deleting = (delete_files || !matches!(job.state, JobState::Done)).then(|| st.let_go_of_song(id));
        // Files first: if they cannot be deleted the entry stays, so the
        // person can try again instead of being left with an orphaned folder.
        if delete_files {
            if let Some(dir) = &job.output_dir {
                let library = st.worker.library_dir();
                // A folder deleted by hand: nothing to delete. One that now
                // holds another song (its name was given again): that
                // song's files stay (`other_job`), the entry goes.
                match stemroom_library::song::remove_song(&library, Path::new(dir), Some(&job), delete_exports) {
                    Ok(_) => {}
                    Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                    // (Its own refusals name the folder; an I/O error
                    // from deep inside it does not.)
                    Err(e) if e.kind() == std::io::ErrorKind::InvalidInput => {
                        return Err(AppError {
                            code: ErrorCode::InvalidOptions,
                            message: format!("The song's files were not deleted: {e}"),
                        })
                    }
                    Err(e) => {
                        return Err(AppError {
                            code: ErrorCode::Output,
                            message: format!("The song's files in {dir} could not be deleted: {e}"),
                        })
                    }
                }
            }
        }
        // The worker tells its listeners: a job a client of the HTTP
        // service added leaves no upload behind, and streams following it end.
        st.worker.remove(id)?;
        st.hub.send(QueueEvent::QueueChanged);
        Ok(())
    })
    .await
}

#[tauri::command]
#[specta::specta]
pub async fn reorder_queue(state: S<'_>, ids: Vec<JobId>) -> Result<Vec<Job>, AppError> {
    super::blocking(&state, move |st| Ok(st.queue.reorder(&ids)?)).await
}

/// Register the window's progress channel; events flow until it closes.
#[tauri::command]
#[specta::specta]
pub fn subscribe(state: S<'_>, webview: tauri::Webview, channel: Channel<QueueEvent>) {
    state.hub.add(webview.label(), channel);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_opened_path_loses_its_dot_dots_and_keeps_its_name() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path().canonicalize().unwrap();
        std::fs::create_dir_all(root.join("Music")).unwrap();
        std::fs::create_dir_all(root.join("Downloads")).unwrap();
        std::fs::write(root.join("Music/song.mp3"), b"x").unwrap();
        std::os::unix::fs::symlink(root.join("Music/song.mp3"), root.join("Music/01 Song.mp3")).unwrap();
        let got = without_dot_dot(&root.join("Downloads/../Music/song.mp3")).unwrap();
        assert_eq!(got, root.join("Music/song.mp3"));
        assert!(!got.components().any(|c| matches!(c, std::path::Component::ParentDir)));
        // A link keeps its own name (the song's title comes from it).
        assert_eq!(
            without_dot_dot(&root.join("Downloads/../Music/01 Song.mp3")).unwrap(),
            root.join("Music/01 Song.mp3")
        );
        // A folder named by `..` itself.
        assert_eq!(without_dot_dot(&root.join("Music/..")).unwrap(), root);
        assert!(without_dot_dot(&root.join("gone/../x.mp3")).is_none());
    }
}

//! The commands the window calls. Each is a few lines: take the state, call
//! one core function, map the error.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use serde::Serialize;
use specta::Type;
use stemroom_core::intake::AddResult;
use stemroom_core::model::ModelStatus;
use stemroom_core::queue::{Job, JobId, Settings};
use stemroom_core::runtime::RuntimeStatus;
use tauri::ipc::Channel;
use tauri::{AppHandle, State};
use tauri_plugin_opener::OpenerExt;

use crate::state::{AppError, AppState, QueueEvent};

type S<'a> = State<'a, Arc<AppState>>;

/// Facts the Settings page and the first-run banner show.
#[derive(Debug, Clone, Serialize, Type)]
#[serde(rename_all = "camelCase")]
pub struct AppInfo {
    pub version: String,
    pub data_dir: String,
    pub library_dir: String,
    pub models: Vec<ModelStatus>,
    pub runtime: RuntimeStatus,
    /// yt-dlp (for links): where, which version, or why not.
    pub ytdlp: stemroom_core::link::YtDlpStatus,
    /// Provider of the latest job (`cpu`, `cuda`), `None` before any.
    pub provider_in_use: Option<String>,
}

#[tauri::command]
#[specta::specta]
async fn app_info(state: S<'_>) -> Result<AppInfo, AppError> {
    // Off the main thread: it checks the model files and runs `yt-dlp --version`.
    let state = state.inner().clone();
    tauri::async_runtime::spawn_blocking(move || {
        Ok(AppInfo {
            version: env!("CARGO_PKG_VERSION").into(),
            data_dir: state.data_dir.to_string_lossy().into_owned(),
            library_dir: state.worker.library_dir().to_string_lossy().into_owned(),
            models: state.models(),
            runtime: state.runtime(),
            ytdlp: stemroom_core::link::status(state.queue.settings()?.ytdlp_path.as_deref().map(Path::new)),
            provider_in_use: state.queue.last_provider()?,
        })
    })
    .await
    .map_err(|e| AppError::internal(e.to_string()))?
}

#[tauri::command]
#[specta::specta]
fn list_queue(state: S<'_>) -> Result<Vec<Job>, AppError> {
    Ok(state.queue.queue()?)
}

#[tauri::command]
#[specta::specta]
fn list_library(state: S<'_>, search: String) -> Result<Vec<Job>, AppError> {
    Ok(state.queue.library(&search)?)
}

/// Run an intake call off the IPC thread (it reads file headers and asks
/// yt-dlp about links), then wake the worker and tell the windows.
async fn add_with(
    state: Arc<AppState>,
    intake: impl FnOnce(&stemroom_core::queue::Queue) -> Result<AddResult, stemroom_core::queue::QueueError>
        + Send
        + 'static,
) -> Result<AddResult, AppError> {
    let st = state.clone();
    let result = tauri::async_runtime::spawn_blocking(move || intake(&st.queue))
        .await
        .map_err(|e| AppError::internal(e.to_string()))??;
    if !result.added.is_empty() {
        state.worker.notify();
        state.hub.send(QueueEvent::QueueChanged);
    }
    Ok(result)
}

async fn add(state: Arc<AppState>, paths: Vec<PathBuf>) -> Result<AddResult, AppError> {
    add_with(state, move |q| stemroom_core::intake::add_paths(q, &paths)).await
}

#[tauri::command]
#[specta::specta]
async fn add_paths(state: S<'_>, paths: Vec<String>) -> Result<AddResult, AppError> {
    add(state.inner().clone(), paths.into_iter().map(PathBuf::from).collect()).await
}

/// Queue chosen entries of a playlist link.
#[tauri::command]
#[specta::specta]
async fn add_links(state: S<'_>, entries: Vec<stemroom_core::link::LinkEntry>) -> Result<AddResult, AppError> {
    add_with(state.inner().clone(), move |q| stemroom_core::intake::add_links(q, &entries)).await
}

/// Run a native dialog on the main (GTK) thread and wait for its answer.
pub async fn on_main<T: Send + 'static>(
    app: &AppHandle,
    f: impl FnOnce() -> T + Send + 'static,
) -> Result<T, AppError> {
    let (tx, rx) = tokio::sync::oneshot::channel();
    app.run_on_main_thread(move || {
        let _ = tx.send(f());
    })
    .map_err(|e| AppError::internal(e.to_string()))?;
    rx.await.map_err(|e| AppError::internal(e.to_string()))
}

#[tauri::command]
#[specta::specta]
async fn pick_files(app: AppHandle, state: S<'_>) -> Result<AddResult, AppError> {
    let picked = on_main(&app, || {
        rfd::FileDialog::new()
            .set_title("Add songs to separate")
            .add_filter("Audio", stemroom_core::intake::AUDIO_EXTENSIONS)
            .pick_files()
    })
    .await?;
    add(state.inner().clone(), picked.unwrap_or_default()).await
}

#[tauri::command]
#[specta::specta]
async fn pick_library_dir(app: AppHandle) -> Result<Option<String>, AppError> {
    let picked = on_main(&app, || rfd::FileDialog::new().set_title("Choose the library folder").pick_folder()).await?;
    Ok(picked.map(|p| p.to_string_lossy().into_owned()))
}

#[tauri::command]
#[specta::specta]
fn cancel_job(state: S<'_>, id: JobId) -> Result<Job, AppError> {
    let job = state.worker.cancel(id)?;
    state.hub.send(QueueEvent::QueueChanged);
    Ok(job)
}

#[tauri::command]
#[specta::specta]
fn retry_job(state: S<'_>, id: JobId) -> Result<Job, AppError> {
    let job = state.queue.retry(id)?;
    state.worker.notify();
    state.hub.send(QueueEvent::QueueChanged);
    Ok(job)
}

#[tauri::command]
#[specta::specta]
fn remove_job(state: S<'_>, id: JobId, delete_files: bool) -> Result<(), AppError> {
    // Files first: if they cannot be deleted the entry stays, so the person
    // can try again instead of being left with an orphaned folder.
    if delete_files {
        if let Some(dir) = state.queue.get(id)?.output_dir {
            stemroom_core::library::remove_song(Path::new(&dir)).map_err(|e| AppError {
                code: stemroom_core::ErrorCode::Output,
                message: format!("The song's folder could not be deleted: {e}"),
            })?;
        }
    }
    state.queue.remove(id)?;
    state.hub.send(QueueEvent::QueueChanged);
    Ok(())
}

#[tauri::command]
#[specta::specta]
fn reorder_queue(state: S<'_>, ids: Vec<JobId>) -> Result<Vec<Job>, AppError> {
    Ok(state.queue.reorder(&ids)?)
}

#[tauri::command]
#[specta::specta]
fn get_settings(state: S<'_>) -> Result<Settings, AppError> {
    Ok(state.queue.settings()?)
}

#[tauri::command]
#[specta::specta]
fn save_settings(state: S<'_>, settings: Settings) -> Result<Settings, AppError> {
    state.queue.save_settings(&settings)?;
    state.worker.start(settings.concurrent_jobs as usize);
    Ok(state.queue.settings()?)
}

#[tauri::command]
#[specta::specta]
fn open_folder(app: AppHandle, path: String) -> Result<(), AppError> {
    app.opener().open_path(path, None::<&str>).map_err(|e| AppError {
        code: stemroom_core::ErrorCode::Output,
        message: format!("The folder could not be opened: {e}"),
    })
}

#[tauri::command]
#[specta::specta]
async fn fetch_model(state: S<'_>, id: String) -> Result<ModelStatus, AppError> {
    let st = state.inner().clone();
    tauri::async_runtime::spawn_blocking(move || {
        let info = st.manifest.get(&id).map_err(stemroom_core::Error::from)?.clone();
        let dest = stemroom_core::model::default_fetch_dir()
            .ok_or_else(|| AppError::internal("no cache directory (HOME is not set)"))?;
        stemroom_core::model::fetch(&info, &dest).map_err(stemroom_core::Error::from)?;
        st.models().into_iter().find(|m| m.id == id).ok_or_else(|| AppError::internal("model vanished after fetching"))
    })
    .await
    .map_err(|e| AppError::internal(e.to_string()))?
}

/// Register the window's progress channel; events flow until it closes.
#[tauri::command]
#[specta::specta]
fn subscribe(state: S<'_>, webview: tauri::Webview, channel: Channel<QueueEvent>) {
    state.hub.add(webview.label(), channel);
}

/// The command and type registry shared by the app and the bindings export.
pub fn specta_builder() -> tauri_specta::Builder<tauri::Wry> {
    tauri_specta::Builder::<tauri::Wry>::new()
        .commands(tauri_specta::collect_commands![
            app_info,
            list_queue,
            list_library,
            add_paths,
            add_links,
            pick_files,
            pick_library_dir,
            cancel_job,
            retry_job,
            remove_job,
            reorder_queue,
            get_settings,
            save_settings,
            open_folder,
            fetch_model,
            subscribe,
            crate::song::open_song,
            crate::song::close_song,
            crate::song::song_peaks,
            crate::song::player_play,
            crate::song::player_pause,
            crate::song::player_seek,
            crate::song::player_set_loop,
            crate::song::player_set_controls,
            crate::song::pick_export_dir,
            crate::song::export_song,
            crate::song::cancel_export,
        ])
        .typ::<QueueEvent>()
        // One shape per type: none of ours serialises differently from how it
        // deserialises.
        .disable_serde_phases()
        // Every float we send is finite (durations, percentages, times), so
        // type them as plain `number` rather than `number | null` (NaN).
        .semantic_types(specta_typescript::semantic::Configuration::empty().enable_lossless_floats())
}

/// Write the TypeScript bindings to `path`.
///
/// # Errors
/// Export or I/O errors.
pub fn export_bindings(
    builder: &tauri_specta::Builder<tauri::Wry>,
    path: &Path,
) -> Result<(), Box<dyn std::error::Error>> {
    builder.export(
        specta_typescript::Typescript::default().header("// Generated by tauri-specta from src-tauri/commands.rs; do not edit.\n// Regenerate: stemroom-app --export-bindings ui/src/bindings.ts\n"),
        path,
    )?;
    Ok(())
}

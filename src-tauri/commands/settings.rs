//! Settings, what the app knows about its model, runtime and tools, and the
//! model download.

use std::path::Path;

use serde::Serialize;
use specta::Type;
use stemroom_engine::audio::decode::{ffmpeg_status, FfmpegStatus};
use stemroom_engine::model::ModelStatus;
use stemroom_engine::runtime::RuntimeStatus;
use stemroom_library::queue::Settings;
use tauri::AppHandle;

use super::S;
use crate::dialog::pick_folder;
use crate::error::AppError;

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
}

#[tauri::command]
#[specta::specta]
pub async fn app_info(state: S<'_>) -> Result<AppInfo, AppError> {
    // Off the main thread: it checks the model files and runs `yt-dlp --version`.
    let state = state.inner().clone();
    tauri::async_runtime::spawn_blocking(move || {
        Ok(AppInfo {
            version: env!("CARGO_PKG_VERSION").into(),
            data_dir: state.data_dir.to_string_lossy().into_owned(),
            library_dir: state.worker.library_dir().to_string_lossy().into_owned(),
            models: state.models(),
            runtime: state.runtime(),
            ytdlp: stemroom_library::link::status(state.queue.settings()?.ytdlp_path.as_deref().map(Path::new)),
            ffmpeg: ffmpeg_status(),
            provider_in_use: state.queue.last_provider()?,
        })
    })
    .await
    .map_err(|e| AppError::internal(e.to_string()))?
}

#[tauri::command]
#[specta::specta]
pub async fn pick_library_dir(app: AppHandle) -> Result<Option<String>, AppError> {
    let picked = pick_folder(&app, "Choose the library folder").await?;
    Ok(picked.map(|p| p.to_string_lossy().into_owned()))
}

#[tauri::command]
#[specta::specta]
pub fn get_settings(state: S<'_>) -> Result<Settings, AppError> {
    Ok(state.queue.settings()?)
}

#[tauri::command]
#[specta::specta]
pub fn save_settings(state: S<'_>, settings: Settings) -> Result<Settings, AppError> {
    state.queue.save_settings(&settings)?;
    crate::state::apply_ffmpeg_path(&settings);
    state.worker.start(settings.concurrent_jobs as usize);
    Ok(state.queue.settings()?)
}

#[tauri::command]
#[specta::specta]
pub async fn fetch_model(state: S<'_>, id: String) -> Result<ModelStatus, AppError> {
    let st = state.inner().clone();
    tauri::async_runtime::spawn_blocking(move || {
        let info = st.manifest.get(&id).map_err(stemroom_engine::Error::from)?.clone();
        let dest = stemroom_engine::model::default_fetch_dir()
            .ok_or_else(|| AppError::internal("no cache directory (HOME is not set)"))?;
        stemroom_engine::model::fetch(&info, &dest).map_err(stemroom_engine::Error::from)?;
        st.models().into_iter().find(|m| m.id == id).ok_or_else(|| AppError::internal("model vanished after fetching"))
    })
    .await
    .map_err(|e| AppError::internal(e.to_string()))?
}

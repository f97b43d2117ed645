//! The library of finished songs.

use stemroom_engine::ErrorCode;
use stemroom_library::queue::Job;
use tauri::AppHandle;
use tauri_plugin_opener::OpenerExt;

use super::S;
use crate::error::AppError;

#[tauri::command]
#[specta::specta]
pub fn list_library(state: S<'_>, search: String) -> Result<Vec<Job>, AppError> {
    Ok(state.queue.library(&search)?)
}

#[tauri::command]
#[specta::specta]
pub fn open_folder(app: AppHandle, path: String) -> Result<(), AppError> {
    app.opener()
        .open_path(path, None::<&str>)
        .map_err(|e| AppError { code: ErrorCode::Output, message: format!("The folder could not be opened: {e}") })
}

//! The library of finished songs.

use stemroom_engine::ErrorCode;
use stemroom_library::queue::{Job, JobId};
use tauri::AppHandle;
use tauri_plugin_opener::OpenerExt;

use super::S;
use crate::commands::export::{dest_dir, song_dir, ExportDest};
use crate::error::AppError;

/// Finished songs, newest first, whose title or album contains `search`.
/// (On the blocking pool, not the window's thread: a large library
/// takes a while, and the search box asks at every keystroke.)
#[tauri::command]
#[specta::specta]
pub async fn list_library(state: S<'_>, search: String) -> Result<Vec<Job>, AppError> {
    super::blocking(&state, move |st| Ok(st.queue.library(&search)?)).await
}

/// A folder the page may ask to open: only ones the backend knows.
#[derive(Debug, Clone, Copy, serde::Deserialize, specta::Type)]
#[serde(tag = "kind", rename_all = "camelCase")]
pub enum FolderRef {
    /// A finished song's folder.
    Song { id: JobId },
    /// Where an export goes or went.
    Export { id: JobId, dest: ExportDest },
}

/// Open a song's folder or an export folder in the file manager.
#[tauri::command]
#[specta::specta]
pub async fn open_folder(app: AppHandle, state: S<'_>, folder: FolderRef) -> Result<(), AppError> {
    // On the blocking pool: a picked export folder on a network share that
    // stopped answering would hold one of the few async threads for good.
    let path = super::blocking(&state, move |st| {
        let path = match folder {
            FolderRef::Song { id } => song_dir(&st.queue.get(id)?)?,
            FolderRef::Export { id, dest } => dest_dir(st, &st.queue.get(id)?, dest)?,
        };
        // Only real folders: never a file, a URL or a link elsewhere.
        let meta = std::fs::symlink_metadata(&path)
            .map_err(|e| AppError { code: ErrorCode::Output, message: format!("{}: {e}", path.display()) })?;
        if !meta.is_dir() {
            return Err(AppError {
                code: ErrorCode::InvalidOptions,
                message: format!("{} is not a folder.", path.display()),
            });
        }
        Ok(path)
    })
    .await?;
    app.opener()
        .open_path(path.to_string_lossy(), None::<&str>)
        .map_err(|e| AppError { code: ErrorCode::Output, message: format!("The folder could not be opened: {e}") })
}

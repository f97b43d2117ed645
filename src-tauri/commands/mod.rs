//! The commands the window calls, by area. Each is a few lines: take the
//! state, call one library function, map the error.

pub mod drag;
pub mod export;
pub mod library;
pub mod queue;
pub mod server;
pub mod settings;
pub mod song;

use std::sync::Arc;

use tauri::State;

use crate::state::AppState;

/// The managed state every command takes.
pub type S<'a> = State<'a, Arc<AppState>>;

/// Run `f` with the state on Tauri's blocking pool and wait for it: for
/// commands that wait for a lock or the disk. (A sync command marked
/// `#[tauri::command(async)]` runs on one of the async runtime's few
/// threads, one per core, which the HTTP service and every async command
/// share; a plain sync command runs on the window's thread.)
pub async fn blocking<T: Send + 'static>(
    state: &S<'_>,
    f: impl FnOnce(&AppState) -> Result<T, crate::error::AppError> + Send + 'static,
) -> Result<T, crate::error::AppError> {
    let st = state.inner().clone();
    tauri::async_runtime::spawn_blocking(move || f(&st)).await.map_err(crate::error::AppError::task_lost)?
}

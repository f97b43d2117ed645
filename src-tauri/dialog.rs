//! Native dialogs (rfd) run on the main (GTK) thread.

use std::path::PathBuf;

use tauri::AppHandle;

use crate::error::AppError;

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

/// Ask for a folder (native dialog); `None` when cancelled.
pub async fn pick_folder(app: &AppHandle, title: &'static str) -> Result<Option<PathBuf>, AppError> {
    on_main(app, move || rfd::FileDialog::new().set_title(title).pick_folder()).await
}

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

/// `extensions` for a file dialog's filter, each in lower and upper case:
/// GTK's file chooser matches rfd's `*.ext` patterns case-sensitively
/// (GNOME gtk issue 3705), so `TRACK.MP3` from a camera or an old CD rip
/// was hidden though a drop of it works.
pub fn filter_extensions(extensions: &[&str]) -> Vec<String> {
    let mut out: Vec<String> = Vec::with_capacity(extensions.len() * 2);
    for e in extensions {
        for spelled in [e.to_ascii_lowercase(), e.to_ascii_uppercase()] {
            if !out.contains(&spelled) {
                out.push(spelled);
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    #[test]
    fn filters_list_both_cases() {
        let exts = super::filter_extensions(&["mp3", "FLAC", "m4a"]);
        assert_eq!(exts, ["mp3", "MP3", "flac", "FLAC", "m4a", "M4A"]);
    }
}

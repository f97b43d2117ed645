//! Exports of the open song's stems or mixes.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde::Serialize;
use specta::Type;
use stemroom_engine::audio::encode::OutputFormat;
use stemroom_engine::progress::{Event, Listener, Throttle};
use stemroom_engine::ErrorCode;
use stemroom_library::queue::{JobId, JobSource};
use stemroom_playback::export::{self, ExportRate, ExportRequest, ExportWhat};
use stemroom_playback::mixer::LoopRegion;
use tauri::ipc::Channel;
use tauri::AppHandle;

use super::S;
use crate::dialog::pick_folder;
use crate::error::AppError;

/// Most export progress updates per second the window gets (10).
const EXPORT_PROGRESS_INTERVAL: Duration = Duration::from_millis(100);

/// Export progress for the window.
#[derive(Debug, Clone, Serialize, Type)]
#[serde(rename_all = "camelCase")]
pub struct ExportProgress {
    /// 0 to 1, `None` when the length is unknown.
    pub fraction: Option<f64>,
}

/// Export settings chosen in the window.
#[derive(Debug, Clone, serde::Deserialize, Type)]
#[serde(rename_all = "camelCase")]
pub struct ExportOptions {
    pub what: ExportWhat,
    /// Only this region (frames at the stems' rate), or the whole song.
    pub region: Option<LoopRegion>,
    pub format: OutputFormat,
    pub rate: ExportRate,
    pub dest_dir: String,
}

/// Ask where to export (native folder dialog); `None` when cancelled.
#[tauri::command]
#[specta::specta]
pub async fn pick_export_dir(app: AppHandle) -> Result<Option<String>, AppError> {
    let picked = pick_folder(&app, "Export to folder").await?;
    Ok(picked.map(|p| p.to_string_lossy().into_owned()))
}

struct ExportListener {
    cancel: Arc<AtomicBool>,
    channel: Channel<ExportProgress>,
    throttle: Mutex<Throttle>,
}

impl Listener for ExportListener {
    fn event(&self, event: &Event) {
        if let Event::Exporting { fraction } = event {
            let done = fraction.is_some_and(|f| f >= 1.0);
            if self.throttle.lock().unwrap_or_else(|p| p.into_inner()).ready(Instant::now(), done) {
                let _ = self.channel.send(ExportProgress { fraction: *fraction });
            }
        }
    }
    fn is_cancelled(&self) -> bool {
        self.cancel.load(Ordering::Relaxed)
    }
}

/// Export from song `id`; returns the files written. One export at a time.
#[tauri::command]
#[specta::specta]
pub async fn export_song(
    state: S<'_>,
    id: JobId,
    options: ExportOptions,
    channel: Channel<ExportProgress>,
) -> Result<Vec<String>, AppError> {
    let st = state.inner().clone();
    let Some(cancel) = st.export.begin() else {
        return Err(AppError { code: ErrorCode::InvalidOptions, message: "An export is already running.".into() });
    };
    let result = tauri::async_runtime::spawn_blocking(move || {
        let job = st.queue.get(id)?;
        let tags = match &job.source {
            JobSource::File { path } => export::source_tags(Path::new(path)),
            JobSource::Url { .. } => Default::default(),
        };
        let mut tags = tags;
        tags.title.get_or_insert_with(|| job.title.clone());
        let req = ExportRequest {
            sources: job.stems.clone(),
            what: options.what,
            region: options.region,
            format: options.format,
            rate: options.rate,
            dest_dir: PathBuf::from(&options.dest_dir),
            tags,
        };
        let listener =
            ExportListener { cancel, channel, throttle: Mutex::new(Throttle::new(EXPORT_PROGRESS_INTERVAL)) };
        let out = export::export(&req, &listener)?;
        Ok::<_, AppError>(out.into_iter().map(|p| p.to_string_lossy().into_owned()).collect())
    })
    .await
    .map_err(|e| AppError::internal(e.to_string()));
    state.export.end();
    result?
}

/// Stop the running export (it removes what it had written).
#[tauri::command]
#[specta::specta]
pub fn cancel_export(state: S<'_>) {
    state.export.cancel();
}

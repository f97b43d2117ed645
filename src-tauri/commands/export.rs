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
use stemroom_library::queue::{JobId, JobSource, JobState};
use stemroom_playback::export::{self, ExportRate, ExportRequest, ExportWhat, OnClash};
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
    /// What the person should know about the files written (a mix that
    /// went over full scale and was limited), sent once they are complete.
    pub warning: Option<String>,
}

/// Where an export goes: the page names a folder only by what the backend
/// knows (the song, or a folder the user picked in the native dialog).
#[derive(Debug, Clone, Copy, serde::Deserialize, Type)]
#[serde(tag = "kind", rename_all = "camelCase")]
pub enum ExportDest {
    /// `exports` in the song's folder.
    SongFolder,
    /// A folder from [`pick_export_dir`], by its handle.
    Picked { handle: u32 },
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
    pub dest: ExportDest,
    /// Files of the same names: refused (code `exists`) unless the user
    /// chose to replace them or keep both.
    pub on_clash: OnClash,
}

/// A folder picked in the native dialog: its handle for later requests and
/// its path to show.
#[derive(Debug, Clone, Serialize, Type)]
#[serde(rename_all = "camelCase")]
pub struct PickedFolder {
    pub handle: u32,
    pub path: String,
}

/// Folders the user picked in native dialogs this session; the page holds
/// only their index.
#[derive(Default)]
pub struct PickedFolders(Mutex<Vec<PathBuf>>);

impl PickedFolders {
    fn add(&self, path: PathBuf) -> u32 {
        let mut v = self.0.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(i) = v.iter().position(|p| *p == path) {
            return i as u32;
        }
        v.push(path);
        (v.len() - 1) as u32
    }

    /// The folder of `handle`.
    ///
    /// # Errors
    /// `invalid_options` for a handle this session never gave out.
    pub fn get(&self, handle: u32) -> Result<PathBuf, AppError> {
        self.0.lock().unwrap_or_else(|p| p.into_inner()).get(handle as usize).cloned().ok_or_else(|| AppError {
            code: ErrorCode::InvalidOptions,
            message: "Choose the export folder again.".into(),
        })
    }
}

/// The folder of song `job`.
///
/// # Errors
/// `invalid_options` when the job has no folder (not finished).
pub fn song_dir(job: &stemroom_library::queue::Job) -> Result<PathBuf, AppError> {
    job.output_dir
        .as_ref()
        .map(PathBuf::from)
        .ok_or_else(|| AppError { code: ErrorCode::InvalidOptions, message: "This song has no folder yet.".into() })
}

/// The folder `dest` names for song `job`.
pub fn dest_dir(
    state: &crate::state::AppState,
    job: &stemroom_library::queue::Job,
    dest: ExportDest,
) -> Result<PathBuf, AppError> {
    // The folder must be there (only the song's `exports` is made): one
    // made again where a drive or a share is not mounted would take the
    // files to the wrong disk, reported as done.
    let gone = |dir: &Path, what: &str| AppError {
        code: ErrorCode::Output,
        message: format!("{what} {} is not there any more (a drive or share not mounted?).", dir.display()),
    };
    match dest {
        ExportDest::SongFolder => {
            let song = song_dir(job)?;
            if !song.is_dir() {
                return Err(gone(&song, "The song's folder"));
            }
            Ok(song.join(stemroom_library::song::EXPORTS_DIR))
        }
        ExportDest::Picked { handle } => {
            let dir = state.folders.get(handle)?;
            if !dir.is_dir() {
                return Err(gone(&dir, "The folder"));
            }
            Ok(dir)
        }
    }
}

/// Ask where to export (native folder dialog); `None` when cancelled.
#[tauri::command]
#[specta::specta]
pub async fn pick_export_dir(app: AppHandle, state: S<'_>) -> Result<Option<PickedFolder>, AppError> {
    let picked = pick_folder(&app, "Export to folder").await?;
    Ok(picked.map(|p| PickedFolder { path: p.to_string_lossy().into_owned(), handle: state.folders.add(p) }))
}

struct ExportListener {
    cancel: Arc<AtomicBool>,
    channel: Channel<ExportProgress>,
    throttle: Mutex<Throttle>,
}

impl Listener for ExportListener {
    fn event(&self, event: &Event) {
        match event {
            Event::Exporting { fraction } => {
                let done = fraction.is_some_and(|f| f >= 1.0);
                if self.throttle.lock().unwrap_or_else(|p| p.into_inner()).ready(Instant::now(), done) {
                    let _ = self.channel.send(ExportProgress { fraction: *fraction, warning: None });
                }
            }
            Event::Warning { message } => {
                let _ = self.channel.send(ExportProgress { fraction: Some(1.0), warning: Some(message.clone()) });
            }
            _ => {}
        }
    }
    fn is_cancelled(&self) -> bool {
        self.cancel.load(Ordering::Relaxed)
    }
}

/// Export from song `id`; returns the files written. One export at a time;
/// `invalid_options` for a song that is not done (no finished stems).
#[tauri::command]
#[specta::specta]
pub async fn export_song(
    state: S<'_>,
    id: JobId,
    options: ExportOptions,
    channel: Channel<ExportProgress>,
) -> Result<Vec<String>, AppError> {
    let st = state.inner().clone();
    state
        .export
        // Named by its song: deleting the song stops it (`AppState::let_go_of_song`).
        .run_on(u64::from(id), "An export is already running.", move |cancel| {
            // (Its slot is taken before this look, and a deletion marks the
            // song before it cancels the slot's export: one or the other.)
            if st.deleting.contains(id) {
                return Err(AppError { code: ErrorCode::Cancelled, message: "The song is being deleted.".into() });
            }
            let job = st.queue.get(id)?;
            // Only a finished song's stems: a job separating, failed or
            // being retried has none, or stems that are about to change.
            if job.state != JobState::Done || job.stems.is_empty() {
                return Err(AppError {
                    code: ErrorCode::InvalidOptions,
                    message: format!("“{}” has no finished stems to export yet.", job.title),
                });
            }
            // (Stems exported one by one need only those chosen; a mix
            // and a zip take them all.)
            let only = match &options.what {
                ExportWhat::Stems { stems } => Some(stems.as_slice()),
                _ => None,
            };
            super::song::check_stems_there(&job, only)?;
            let mut tags = match &job.source {
                JobSource::File { path } => export::source_tags(Path::new(path)),
                JobSource::Url { .. } => Default::default(),
            };
            tags.title.get_or_insert_with(|| job.title.clone());
            let req = ExportRequest {
                sources: job.stems.clone(),
                what: options.what,
                region: options.region,
                format: options.format,
                rate: options.rate,
                dest_dir: dest_dir(&st, &job, options.dest)?,
                title: job.title.clone(),
                on_clash: options.on_clash,
                tags,
                stems_format: Some(job.options.format),
            };
            let listener =
                ExportListener { cancel, channel, throttle: Mutex::new(Throttle::new(EXPORT_PROGRESS_INTERVAL)) };
            let out = export::export(&req, &listener)?;
            st.last_exports.set(id, out.clone());
            Ok(out.into_iter().map(|p| p.to_string_lossy().into_owned()).collect())
        })
        .await
}

/// Stop the running export (it removes what it had written).
#[tauri::command]
#[specta::specta]
pub fn cancel_export(state: S<'_>) {
    state.export.cancel();
}

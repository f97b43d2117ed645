//! Commands of the song view: open a finished song (waveform peaks and the
//! stem player), transport and mixer controls, and exports. Each takes the
//! state, calls the core and maps the error.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, Weak};
use std::time::{Duration, Instant};

use serde::Serialize;
use specta::Type;
use stemroom_core::audio::encode::OutputFormat;
use stemroom_core::export::{self, ExportRate, ExportRequest, ExportWhat};
use stemroom_core::mixer::{LoopRegion, MixControls};
use stemroom_core::peaks::Peaks;
use stemroom_core::player::{OutputInfo, Player, PlayerStatus};
use stemroom_core::progress::{Event, Listener};
use stemroom_core::queue::{JobId, JobSource, JobState};
use stemroom_core::ErrorCode;
use tauri::ipc::Channel;
use tauri::{AppHandle, State};

use crate::commands::on_main;
use crate::state::{AppError, AppState};

type S<'a> = State<'a, Arc<AppState>>;

/// How often the playhead reaches the window: ~30 times a second.
const STATUS_INTERVAL: Duration = Duration::from_millis(33);

/// The open song: its player (when a device could be opened) and peaks.
pub struct OpenSong {
    id: JobId,
    player: Option<Arc<Player>>,
    /// Peaks per lane, mixture first when the original file is still there.
    lanes: Vec<(String, Peaks)>,
}

/// What the song view needs to draw itself.
#[derive(Debug, Clone, Serialize, Type)]
#[serde(rename_all = "camelCase")]
pub struct SongView {
    pub id: JobId,
    pub title: String,
    /// Stem names in player order (the order of mixer controls).
    pub stems: Vec<String>,
    /// Waveform lanes: `mixture` (when the original file is still there),
    /// then the stems.
    pub lanes: Vec<String>,
    /// The stems' sample rate in Hz.
    pub sample_rate: u32,
    /// Length in frames at `sample_rate`.
    #[specta(type = f64)]
    pub frames: u64,
    /// The audio output, or why there is none (waveforms and export still work).
    pub output: Option<OutputInfo>,
    pub player_error: Option<String>,
}

/// Min/max columns of one lane, in [-1, 1].
#[derive(Debug, Clone, Serialize, Type)]
#[serde(rename_all = "camelCase")]
pub struct LanePeaks {
    pub lane: String,
    pub min: Vec<f32>,
    pub max: Vec<f32>,
}

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

/// Cancellation of the running export (one at a time).
#[derive(Default)]
pub struct ExportSlot {
    cancel: Mutex<Option<Arc<AtomicBool>>>,
}

/// A frame position from the window (a JavaScript number): negative and
/// non-finite values become 0.
fn to_frame(x: f64) -> u64 {
    if x.is_finite() && x > 0.0 {
        x as u64
    } else {
        0
    }
}

fn with_player(state: &AppState, f: impl FnOnce(&Player)) -> Result<(), AppError> {
    let song = state.song.lock().unwrap_or_else(|p| p.into_inner());
    match song.as_ref().and_then(|s| s.player.as_deref()) {
        Some(p) => {
            f(p);
            Ok(())
        }
        None => Err(AppError { code: ErrorCode::AudioDevice, message: "No song is playing.".into() }),
    }
}

/// Open a finished song: compute (or read cached) peaks and open the player
/// on the default output. Status updates flow to `channel` ~30 times a
/// second while the song is open. Closes the previously open song.
#[tauri::command]
#[specta::specta]
pub async fn open_song(state: S<'_>, id: JobId, channel: Channel<PlayerStatus>) -> Result<SongView, AppError> {
    let st = state.inner().clone();
    tauri::async_runtime::spawn_blocking(move || {
        // One open at a time, so the last call's player is the one kept;
        // the old player stops before the device is opened again.
        let _opening = st.song_opening.lock().unwrap_or_else(|p| p.into_inner());
        *st.song.lock().unwrap_or_else(|p| p.into_inner()) = None;
        let job = st.queue.get(id)?;
        if job.state != JobState::Done || job.stems.is_empty() {
            return Err(AppError {
                code: ErrorCode::InvalidOptions,
                message: format!("“{}” has no stems yet.", job.title),
            });
        }
        let paths: Vec<PathBuf> = job.stems.iter().map(|s| PathBuf::from(&s.path)).collect();
        let mut lanes = Vec::new();
        if let JobSource::File { path } = &job.source {
            // The original may be gone or unreadable; the stems are what matter.
            let cache = job.output_dir.as_deref().map(|d| Path::new(d).join(".peaks").join("mixture.peaks"));
            if let Ok(p) = Peaks::cached_at(Path::new(path), cache) {
                lanes.push(("mixture".to_string(), p));
            }
        }
        for s in &job.stems {
            lanes.push((s.stem.clone(), Peaks::cached(Path::new(&s.path))?));
        }
        let stem_lane = &lanes[lanes.len() - job.stems.len()].1;
        let (sample_rate, frames) = (stem_lane.sample_rate, stem_lane.frames);
        let (player, player_error) = match Player::open(&paths, &MixControls::unity(paths.len())) {
            Ok(p) => (Some(Arc::new(p)), None),
            Err(e) => (None, Some(e.to_string())),
        };
        let output = player.as_ref().map(|p| p.output().clone());
        if let Some(p) = &player {
            spawn_status_ticker(Arc::downgrade(p), channel);
        }
        let view = SongView {
            id,
            title: job.title.clone(),
            stems: job.stems.iter().map(|s| s.stem.clone()).collect(),
            lanes: lanes.iter().map(|(n, _)| n.clone()).collect(),
            sample_rate,
            frames,
            output,
            player_error,
        };
        *st.song.lock().unwrap_or_else(|p| p.into_inner()) = Some(OpenSong { id, player, lanes });
        Ok(view)
    })
    .await
    .map_err(|e| AppError::internal(e.to_string()))?
}

/// Sends the player's status while it exists: every tick while playing,
/// and once after each change while paused.
fn spawn_status_ticker(player: Weak<Player>, channel: Channel<PlayerStatus>) {
    std::thread::spawn(move || {
        let mut last: Option<PlayerStatus> = None;
        let mut next = Instant::now();
        while let Some(p) = player.upgrade() {
            let status = p.status();
            drop(p);
            if last.as_ref() != Some(&status) {
                if channel.send(status.clone()).is_err() {
                    return;
                }
                last = Some(status);
            }
            next += STATUS_INTERVAL;
            std::thread::sleep(next.saturating_duration_since(Instant::now()));
        }
    });
}

/// Close the open song (stops playback).
#[tauri::command]
#[specta::specta]
pub fn close_song(state: S<'_>) {
    *state.song.lock().unwrap_or_else(|p| p.into_inner()) = None;
}

/// Peaks of every lane between frames `start` and `end`, in `columns` columns.
#[tauri::command]
#[specta::specta]
pub fn song_peaks(state: S<'_>, id: JobId, start: f64, end: f64, columns: u32) -> Result<Vec<LanePeaks>, AppError> {
    let (start, end) = (to_frame(start), to_frame(end));
    let song = state.song.lock().unwrap_or_else(|p| p.into_inner());
    let Some(song) = song.as_ref().filter(|s| s.id == id) else {
        return Err(AppError { code: ErrorCode::InvalidOptions, message: "This song is not open.".into() });
    };
    let columns = (columns as usize).clamp(1, 8192);
    Ok(song
        .lanes
        .iter()
        .map(|(lane, p)| {
            let c = p.columns(start, end, columns);
            LanePeaks { lane: lane.clone(), min: c.min, max: c.max }
        })
        .collect())
}

#[tauri::command]
#[specta::specta]
pub fn player_play(state: S<'_>) -> Result<(), AppError> {
    with_player(&state, Player::play)
}

#[tauri::command]
#[specta::specta]
pub fn player_pause(state: S<'_>) -> Result<(), AppError> {
    with_player(&state, Player::pause)
}

/// Jump to `frame` (at the stems' rate).
#[tauri::command]
#[specta::specta]
pub fn player_seek(state: S<'_>, frame: f64) -> Result<(), AppError> {
    with_player(&state, |p| p.seek(to_frame(frame)))
}

/// Set or clear the loop region (frames at the stems' rate).
#[tauri::command]
#[specta::specta]
pub fn player_set_loop(state: S<'_>, region: Option<LoopRegion>) -> Result<(), AppError> {
    with_player(&state, |p| p.set_loop(region))
}

/// Gains, mutes, solos and master of the open song.
#[tauri::command]
#[specta::specta]
pub fn player_set_controls(state: S<'_>, controls: MixControls) -> Result<(), AppError> {
    with_player(&state, |p| p.set_controls(&controls))
}

/// Ask where to export (native folder dialog); `None` when cancelled.
#[tauri::command]
#[specta::specta]
pub async fn pick_export_dir(app: AppHandle) -> Result<Option<String>, AppError> {
    let picked = on_main(&app, || rfd::FileDialog::new().set_title("Export to folder").pick_folder()).await?;
    Ok(picked.map(|p| p.to_string_lossy().into_owned()))
}

struct ExportListener {
    cancel: Arc<AtomicBool>,
    channel: Channel<ExportProgress>,
    last: Mutex<Instant>,
}

impl Listener for ExportListener {
    fn event(&self, event: &Event) {
        if let Event::Exporting { fraction } = event {
            let mut last = self.last.lock().unwrap_or_else(|p| p.into_inner());
            let done = fraction.is_some_and(|f| f >= 1.0);
            if done || last.elapsed() >= Duration::from_millis(100) {
                *last = Instant::now();
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
    let cancel = Arc::new(AtomicBool::new(false));
    {
        let mut slot = st.export.cancel.lock().unwrap_or_else(|p| p.into_inner());
        if slot.is_some() {
            return Err(AppError { code: ErrorCode::InvalidOptions, message: "An export is already running.".into() });
        }
        *slot = Some(cancel.clone());
    }
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
        let listener = ExportListener { cancel, channel, last: Mutex::new(Instant::now()) };
        let out = export::export(&req, &listener)?;
        Ok::<_, AppError>(out.into_iter().map(|p| p.to_string_lossy().into_owned()).collect())
    })
    .await
    .map_err(|e| AppError::internal(e.to_string()));
    *state.export.cancel.lock().unwrap_or_else(|p| p.into_inner()) = None;
    result?
}

/// Stop the running export (it removes what it had written).
#[tauri::command]
#[specta::specta]
pub fn cancel_export(state: S<'_>) {
    if let Some(c) = state.export.cancel.lock().unwrap_or_else(|p| p.into_inner()).as_ref() {
        c.store(true, Ordering::Relaxed);
    }
}

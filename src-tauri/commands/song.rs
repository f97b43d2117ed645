//! The song view: open a finished song (waveform peaks and the stem player),
//! transport and mixer controls.

use std::path::{Path, PathBuf};
use std::sync::{Arc, Weak};
use std::time::{Duration, Instant};

use serde::Serialize;
use specta::Type;
use stemroom_engine::model::manifest::{mixture_style, StemStyle};
use stemroom_engine::ErrorCode;
use stemroom_library::queue::{JobId, JobSource, JobState};
use stemroom_playback::mixer::{LoopRegion, MixControls};
use stemroom_playback::peaks::Peaks;
use stemroom_playback::player::{BeatGrid, OutputInfo, Player, PlayerStatus};
use tauri::ipc::Channel;

use super::S;
use crate::error::AppError;
use crate::state::AppState;

/// How often the playhead reaches the window: ~30 times a second.
const STATUS_INTERVAL: Duration = Duration::from_millis(33);

/// The open song: its player (when a device could be opened) and peaks.
pub struct OpenSong {
    pub(crate) id: JobId,
    player: Option<Arc<Player>>,
    /// The player has the original mixture as a last source (A/B).
    with_original: bool,
    /// The song's stems (the controls the page sends are fitted to them).
    stems: usize,
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
    /// How each lane is shown (name for people, colour), in lane order,
    /// from the model's manifest.
    pub lane_styles: Vec<StemStyle>,
    /// The original mixture can be heard against the mix (A/B).
    pub can_compare: bool,
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

/// A frame position from the window (a JavaScript number): negative and
/// non-finite values become 0.
pub(crate) fn to_frame(x: f64) -> u64 {
    if x.is_finite() && x > 0.0 {
        x as u64
    } else {
        0
    }
}

fn with_player(state: &AppState, f: impl FnOnce(&Player)) -> Result<(), AppError> {
    let song = state.song.lock();
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
        // One open at a time; the old player stops before the device is
        // opened again; a close or a later open that comes meanwhile wins.
        let (opening, old) = st.song.begin_open();
        drop(old);
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
            let cache = job
                .output_dir
                .as_deref()
                .map(|d| Path::new(d).join(stemroom_playback::peaks::CACHE_DIR).join("mixture.peaks"));
            if let Ok(p) = Peaks::cached_at(Path::new(path), cache) {
                lanes.push(("mixture".to_string(), p));
            }
        }
        for s in &job.stems {
            lanes.push((s.stem.clone(), Peaks::cached(Path::new(&s.path))?));
        }
        let stem_lane = &lanes[lanes.len() - job.stems.len()].1;
        let (sample_rate, frames) = (stem_lane.sample_rate, stem_lane.frames);
        // The original as one more source for A/B, when it is there and
        // plays with the stems (same rate); else the stems alone.
        let original = match &job.source {
            JobSource::File { path } if lanes.first().is_some_and(|(n, _)| n == "mixture") => Some(PathBuf::from(path)),
            _ => None,
        };
        let unity = MixControls::unity(paths.len());
        let with_original = original.and_then(|o| {
            let all: Vec<PathBuf> = paths.iter().cloned().chain(std::iter::once(o)).collect();
            Player::open(&all, &unity.with_original()).ok()
        });
        let (with_original, opened) = match with_original {
            Some(p) => (true, Ok(p)),
            None => (false, Player::open(&paths, &unity)),
        };
        let (player, player_error) = match opened {
            Ok(p) => (Some(Arc::new(p)), None),
            Err(e) => (None, Some(e.to_string())),
        };
        let output = player.as_ref().map(|p| p.output().clone());
        if let Some(p) = &player {
            // The click track and count-in play on the song's beat grid.
            let grid = job
                .analysis
                .as_ref()
                .and_then(|a| a.bpm.map(|bpm| BeatGrid { bpm, offset_seconds: a.beat_offset.unwrap_or(0.0) }));
            p.set_beat_grid(grid);
            spawn_status_ticker(Arc::downgrade(p), channel);
        }
        let view = SongView {
            id,
            title: job.title.clone(),
            stems: job.stems.iter().map(|s| s.stem.clone()).collect(),
            lanes: lanes.iter().map(|(n, _)| n.clone()).collect(),
            lane_styles: lanes
                .iter()
                .map(|(n, _)| match (n.as_str(), st.manifest.get(&job.options.model)) {
                    ("mixture", _) => mixture_style(),
                    (stem, Ok(info)) => info.stem_style(stem),
                    (stem, Err(_)) => StemStyle { label: stem.to_string(), color: "#7d8597".into() },
                })
                .collect(),
            sample_rate,
            frames,
            can_compare: with_original,
            output,
            player_error,
        };
        if let Err(overtaken) =
            st.song.finish_open(opening, OpenSong { id, player, with_original, stems: job.stems.len(), lanes })
        {
            // Stops its player and frees the device.
            drop(overtaken);
            return Err(AppError {
                code: ErrorCode::Cancelled,
                message: "The song was closed while it opened.".into(),
            });
        }
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
pub async fn close_song(app: tauri::AppHandle) {
    // Off the main thread: stopping the player joins its threads. (The
    // state comes from the handle: an async command borrowing `State`
    // would have to return a `Result`.)
    use tauri::Manager;
    let st = app.state::<Arc<AppState>>().inner().clone();
    let _ = tauri::async_runtime::spawn_blocking(move || drop(st.song.close())).await;
}

/// Peaks of every lane between frames `start` and `end`, in `columns` columns.
#[tauri::command]
#[specta::specta]
pub fn song_peaks(state: S<'_>, id: JobId, start: f64, end: f64, columns: u32) -> Result<Vec<LanePeaks>, AppError> {
    let (start, end) = (to_frame(start), to_frame(end));
    let song = state.song.lock();
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
    let (with_original, stems) = state.song.lock().as_ref().map_or((false, 0), |s| (s.with_original, s.stems));
    // One control per stem whatever the page sent, so the original's
    // control (A/B) is always the last source's.
    let mut controls = controls;
    controls.stems.resize(stems, Default::default());
    let controls = if with_original { controls.with_original() } else { controls };
    with_player(&state, |p| p.set_controls(&controls))
}

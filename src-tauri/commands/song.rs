//! The song view: open a finished song (waveform peaks and the stem player),
//! or one still separating (its separated part, growing), transport and
//! mixer controls.

use std::path::{Path, PathBuf};
use std::sync::{Arc, Weak};
use std::time::{Duration, Instant};

use serde::Serialize;
use specta::Type;
use stemroom_engine::job::stream::StreamLayout;
use stemroom_engine::model::manifest::{mixture_style, StemStyle};
use stemroom_engine::ErrorCode;
use stemroom_library::queue::{JobId, JobSource, JobState};
use stemroom_playback::mixer::{LoopRegion, MixControls};
use stemroom_playback::peaks::{Peaks, PeaksBuilder};
use stemroom_playback::player::{BeatGrid, OutputInfo, Player, PlayerStatus};
use stemroom_playback::reader::StemSet;
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
    /// While the song is still separating: the stems' peaks so far.
    stream: Option<StreamPeaks>,
}

/// The peaks of a running job's stems, followed as it separates.
struct StreamPeaks {
    set: StemSet,
    builders: Vec<PeaksBuilder>,
    buf: Vec<Vec<f32>>,
    sample_rate: u32,
}

impl StreamPeaks {
    /// Frames read per step (1.5 s at 44.1 kHz).
    const BLOCK: usize = 65_536;

    fn open(dir: &Path) -> Option<Self> {
        let set = StemSet::open_growing(dir).ok()?;
        let n = set.len();
        let sample_rate = set.sample_rate();
        Some(StreamPeaks {
            set,
            builders: (0..n).map(|_| PeaksBuilder::default()).collect(),
            buf: vec![Vec::new(); n],
            sample_rate,
        })
    }

    /// Take in what was separated since the last call; the stems' peaks so far.
    fn refresh(&mut self) -> Vec<Peaks> {
        loop {
            match self.set.read(Self::BLOCK, &mut self.buf) {
                Ok(0) | Err(_) => break,
                Ok(n) => {
                    for (b, buf) in self.builders.iter_mut().zip(&self.buf) {
                        b.push(&buf[..2 * n]);
                    }
                }
            }
        }
        self.builders.iter().map(|b| b.snapshot(self.sample_rate)).collect()
    }
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
    /// The song is still separating: the stems' lanes fill in as segments
    /// finish (ask for peaks again), the playhead stops at the separated
    /// edge (`PlayerStatus.separated`); call `song_stream_done` once the
    /// job is done. Exports wait for the finished song.
    pub streaming: bool,
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
        if let Some(dir) = st.worker.stream_dir(id).filter(|_| job.state != JobState::Done) {
            let (song, view) = open_streaming(&st, &job, &dir, channel)?;
            return finish(&st, opening, song, view);
        }
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
            p.set_beat_grid(beat_grid(&job));
            spawn_status_ticker(Arc::downgrade(p), channel);
        }
        let view = SongView {
            id,
            title: job.title.clone(),
            stems: job.stems.iter().map(|s| s.stem.clone()).collect(),
            lanes: lanes.iter().map(|(n, _)| n.clone()).collect(),
            lane_styles: lane_styles(&st, &job.options.model, &lanes),
            sample_rate,
            frames,
            can_compare: with_original,
            output,
            player_error,
            streaming: false,
        };
        let song = OpenSong { id, player, with_original, stems: job.stems.len(), lanes, stream: None };
        finish(&st, opening, song, view)
    })
    .await
    .map_err(|e| AppError::internal(e.to_string()))?
}

/// The song's beat grid for the click track and count-in, from its analysis.
fn beat_grid(job: &stemroom_library::queue::Job) -> Option<BeatGrid> {
    job.analysis.as_ref().and_then(|a| a.bpm.map(|bpm| BeatGrid { bpm, offset_seconds: a.beat_offset.unwrap_or(0.0) }))
}

/// Install the opened song, unless a close or a later open came meanwhile.
fn finish(
    st: &AppState,
    opening: stemroom_playback::slot::Opening<'_>,
    song: OpenSong,
    view: SongView,
) -> Result<SongView, AppError> {
    if let Err(overtaken) = st.song.finish_open(opening, song) {
        // Stops its player and frees the device.
        drop(overtaken);
        return Err(AppError { code: ErrorCode::Cancelled, message: "The song was closed while it opened.".into() });
    }
    Ok(view)
}

fn lane_styles(st: &AppState, model: &str, lanes: &[(String, Peaks)]) -> Vec<StemStyle> {
    lanes
        .iter()
        .map(|(n, _)| match (n.as_str(), st.manifest.get(model)) {
            ("mixture", _) => mixture_style(),
            (stem, Ok(info)) => info.stem_style(stem),
            (stem, Err(_)) => StemStyle { label: stem.to_string(), color: "#7d8597".into() },
        })
        .collect()
}

/// Open a song that is still separating, from its job's stream in `dir`.
fn open_streaming(
    st: &AppState,
    job: &stemroom_library::queue::Job,
    dir: &Path,
    channel: Channel<PlayerStatus>,
) -> Result<(OpenSong, SongView), AppError> {
    let not_yet = || AppError {
        code: ErrorCode::InvalidOptions,
        message: format!("“{}” has nothing separated yet; it can be played once its first segment is done.", job.title),
    };
    let layout = StreamLayout::read(dir).map_err(|_| not_yet())?;
    let mut stream = StreamPeaks::open(dir).ok_or_else(not_yet)?;
    let stems: Vec<String> = layout.lanes.iter().map(|l| l.stem.clone()).collect();
    let mut lanes = Vec::new();
    if let JobSource::File { path } = &job.source {
        // The mixture's lane when it lines up with the stream's frames.
        if let Ok(p) = Peaks::cached_at(Path::new(path), None) {
            if p.sample_rate == layout.sample_rate {
                lanes.push(("mixture".to_string(), p));
            }
        }
    }
    lanes.extend(stems.iter().cloned().zip(stream.refresh()));
    let (player, player_error) = match Player::open_growing(dir, &MixControls::unity(stems.len())) {
        Ok(p) => (Some(Arc::new(p)), None),
        Err(e) => (None, Some(e.to_string())),
    };
    if let Some(p) = &player {
        spawn_status_ticker(Arc::downgrade(p), channel);
    }
    let view = SongView {
        id: job.id,
        title: job.title.clone(),
        stems: stems.clone(),
        lanes: lanes.iter().map(|(n, _)| n.clone()).collect(),
        lane_styles: lane_styles(st, &job.options.model, &lanes),
        sample_rate: layout.sample_rate,
        frames: layout.frames,
        can_compare: false,
        output: player.as_ref().map(|p| p.output().clone()),
        player_error,
        streaming: true,
    };
    let song = OpenSong { id: job.id, player, with_original: false, stems: stems.len(), lanes, stream: Some(stream) };
    Ok((song, view))
}

/// The open song was still separating and its job is done: the player
/// goes on from the finished files where it is, without a gap, and the
/// lanes are the finished stems'. Returns the song view as for a finished
/// song (`streaming` false), or the current one when the song is not
/// streaming any more.
///
/// # Errors
/// The song is not open, or its job is not done.
#[tauri::command]
#[specta::specta]
pub async fn song_stream_done(state: S<'_>, id: JobId) -> Result<SongView, AppError> {
    let st = state.inner().clone();
    tauri::async_runtime::spawn_blocking(move || {
        let job = st.queue.get(id)?;
        if job.state != JobState::Done || job.stems.is_empty() {
            return Err(AppError {
                code: ErrorCode::InvalidOptions,
                message: format!("“{}” is not done yet.", job.title),
            });
        }
        let paths: Vec<PathBuf> = job.stems.iter().map(|s| PathBuf::from(&s.path)).collect();
        // Peaks of the finished files, outside the song's lock.
        let mut stem_lanes = Vec::new();
        for s in &job.stems {
            stem_lanes.push((s.stem.clone(), Peaks::cached(Path::new(&s.path))?));
        }
        let mut guard = st.song.lock();
        let Some(song) = guard.as_mut().filter(|s| s.id == id) else {
            return Err(AppError { code: ErrorCode::InvalidOptions, message: "This song is not open.".into() });
        };
        if song.stream.take().is_some() {
            if let Some(p) = &song.player {
                p.set_beat_grid(beat_grid(&job));
                // Another rate (the job wrote the input's): the stream,
                // still open, plays on until the song is closed.
                if let Err(e) = p.complete_stream(&paths) {
                    tracing::info!("the player stays on the stream of job {id}: {e}");
                }
            }
            let mixture: Vec<(String, Peaks)> = song.lanes.drain(..).filter(|(n, _)| n == "mixture").collect();
            song.lanes = mixture.into_iter().chain(stem_lanes).collect();
        }
        let (sample_rate, frames) = song
            .player
            .as_ref()
            .map(|p| {
                let s = p.status();
                (s.sample_rate, s.length)
            })
            .unwrap_or((
                song.lanes.last().map_or(44_100, |l| l.1.sample_rate),
                song.lanes.last().map_or(0, |l| l.1.frames),
            ));
        let lanes: Vec<String> = song.lanes.iter().map(|(n, _)| n.clone()).collect();
        Ok(SongView {
            id,
            title: job.title.clone(),
            stems: job.stems.iter().map(|s| s.stem.clone()).collect(),
            lane_styles: lane_styles(&st, &job.options.model, &song.lanes),
            lanes,
            sample_rate,
            frames,
            can_compare: false,
            output: song.player.as_ref().map(|p| p.output().clone()),
            player_error: None,
            streaming: false,
        })
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
    let mut song = state.song.lock();
    let Some(song) = song.as_mut().filter(|s| s.id == id) else {
        return Err(AppError { code: ErrorCode::InvalidOptions, message: "This song is not open.".into() });
    };
    if let Some(stream) = song.stream.as_mut() {
        // Still separating: the stems' lanes as far as they are separated.
        let fresh = stream.refresh();
        let first = song.lanes.len() - fresh.len();
        for (lane, p) in song.lanes[first..].iter_mut().zip(fresh) {
            lane.1 = p;
        }
    }
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

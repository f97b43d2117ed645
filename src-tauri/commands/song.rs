//! The song view: open a finished song (waveform peaks and the stem player),
//! or one still separating (its separated part, growing), transport and
//! mixer controls.

use std::path::{Path, PathBuf};
use std::sync::{Arc, Weak};
use std::time::{Duration, Instant};

use serde::Serialize;
use specta::Type;
use stemroom_engine::model::manifest::{mixture_style, StemStyle};
use stemroom_engine::ErrorCode;
use stemroom_library::queue::{JobId, JobSource, JobState};
use stemroom_playback::mixer::{LoopRegion, MixControls};
use stemroom_playback::peaks::loader::{PeaksLoader, PeaksTrack};
use stemroom_playback::peaks::{cache_path, Peaks, PeaksBuilder, CACHE_DIR};
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
    /// Why there is no player (no sound output): said again in the view
    /// `song_stream_done` returns, which replaces the page's.
    player_error: Option<String>,
    /// The player has the original mixture as a last source (A/B).
    with_original: bool,
    /// The song's stems (the controls the page sends are fitted to them).
    stems: usize,
    /// Peaks per lane, mixture first when the original file is still there.
    lanes: Vec<(String, Peaks)>,
    /// While the song is still separating: the stems' peaks so far (its
    /// own lock: a poll reads the stream with the song unlocked, so the
    /// window's play, pause and mix commands never wait for the disk).
    stream: Option<Arc<SharedStream>>,
    /// Lanes whose peaks are still being read (a long song opens before
    /// its waveforms are known), by one reader or more (the stems' files,
    /// once separated, beside the original's still being read).
    loading: Vec<LoadingPeaks>,
    /// The mix as the page last set it (one control per stem, A/B in
    /// `original`), for a player that takes over from another.
    controls: MixControls,
    /// Where the player's status goes (`open_song`'s channel), for a
    /// player that takes over from another.
    status: Channel<PlayerStatus>,
}

impl OpenSong {
    /// Pause its playback, if it has a player (one atomic store: fine on
    /// the main thread).
    pub(crate) fn pause(&self) {
        if let Some(player) = &self.player {
            player.pause();
        }
    }
}

/// Peaks read in the background, and the lane each track is.
struct LoadingPeaks {
    loader: PeaksLoader,
    lanes: Vec<usize>,
}

/// The lanes' peaks: each read from its cache when it is fresh, else left
/// empty and read by a background loader (returned) that caches it.
fn lane_peaks(tracks: Vec<(String, PeaksTrack)>, sample_rate: u32) -> (Vec<(String, Peaks)>, Option<LoadingPeaks>) {
    let mut lanes = Vec::new();
    let (mut to_read, mut lane_of) = (Vec::new(), Vec::new());
    for (lane, track) in tracks {
        let cached = track.cache.as_deref().and_then(|c| Peaks::read_fresh(&track.audio, c));
        if cached.is_none() {
            lane_of.push(lanes.len());
            to_read.push(track);
        }
        lanes.push((lane, cached.unwrap_or_else(|| Peaks::empty(sample_rate))));
    }
    let loading = (!to_read.is_empty()).then(|| LoadingPeaks { loader: PeaksLoader::spawn(to_read), lanes: lane_of });
    (lanes, loading)
}

/// Where a song's original file has its peaks cached: in the song's folder
/// (not beside the user's file).
fn mixture_cache(job: &stemroom_library::queue::Job) -> Option<PathBuf> {
    job.output_dir.as_deref().map(|d| Path::new(d).join(CACHE_DIR).join("mixture.peaks"))
}

/// The peaks of a running job's stems, followed as it separates.
struct StreamPeaks {
    set: StemSet,
    builders: Vec<PeaksBuilder>,
    buf: Vec<Vec<f32>>,
    sample_rate: u32,
    /// Frames taken into the peaks so far.
    read: u64,
    /// When the stream was last read for a poll ([`StreamPeaks::POLL_EVERY`]).
    last_poll: Option<std::time::Instant>,
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
            read: 0,
            last_poll: None,
        })
    }

    /// Reading time per poll while the job runs (a block at least: about
    /// 140 s of separated audio from a warm disk), so a peaks request
    /// answers soon; a long song opened late catches up over the next
    /// polls, and wholly when the job ends.
    const POLL_BUDGET: std::time::Duration = std::time::Duration::from_millis(100);
    /// Reading time when the song opens (then the polls go on).
    const OPEN_BUDGET: std::time::Duration = std::time::Duration::from_millis(250);
    /// A poll reads the stream at most this often: the page asks for peaks
    /// at every zoom and scroll, and each read ends in a copy of all the
    /// peaks so far (megabytes for a long song).
    const POLL_EVERY: std::time::Duration = std::time::Duration::from_millis(1000);

    /// Take in what was separated since the last call, for at most
    /// `budget` of reading (`None`: all of it); the stems' peaks so far,
    /// or `None` when nothing new was read.
    fn refresh(&mut self, budget: Option<std::time::Duration>) -> Option<Vec<Peaks>> {
        let started = std::time::Instant::now();
        let mut any = false;
        loop {
            match self.set.read(Self::BLOCK, &mut self.buf) {
                Ok(0) | Err(_) => break,
                Ok(n) => {
                    for (b, buf) in self.builders.iter_mut().zip(&self.buf) {
                        b.push(&buf[..2 * n]);
                    }
                    self.read += n as u64;
                    any = true;
                }
            }
            if budget.is_some_and(|b| started.elapsed() >= b) {
                break;
            }
        }
        any.then(|| self.snapshot())
    }

    /// A poll's [`StreamPeaks::refresh`]: none within
    /// [`StreamPeaks::POLL_EVERY`] of the last one.
    fn poll(&mut self) -> Option<Vec<Peaks>> {
        if self.last_poll.is_some_and(|t| t.elapsed() < Self::POLL_EVERY) {
            return None;
        }
        self.last_poll = Some(std::time::Instant::now());
        self.refresh(Some(Self::POLL_BUDGET))
    }

    /// The stems' peaks so far.
    fn snapshot(&self) -> Vec<Peaks> {
        self.builders.iter().map(|b| b.snapshot(self.sample_rate)).collect()
    }

    /// Part of the song whose peaks are known, 0 to 1: separated and
    /// taken in (which may lag the separation by a few polls).
    fn separated(&self) -> f64 {
        match self.set.declared_frames() {
            // (No edge: all of it is separated.)
            Some(frames) if frames > 0 => {
                (self.set.edge().unwrap_or(frames).min(self.read) as f64 / frames as f64).min(1.0)
            }
            _ => 1.0,
        }
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

/// The lanes' peaks for a window of the song.
#[derive(Debug, Clone, Serialize, Type)]
#[serde(rename_all = "camelCase")]
pub struct SongPeaks {
    /// One entry per lane of the song view, in its order.
    pub lanes: Vec<LanePeaks>,
    /// Part of the lanes known so far, 0 to 1: below 1 while a long song's
    /// peaks are still being read (lanes blank past what is read) or the
    /// song is still separating (its separated part). Ask again until 1.
    pub ready: f64,
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

/// Run `f` on the player of song `id`, when that song is the open one: a
/// command the page sent for a song it has left (its view still
/// unmounting, a late answer) must not act on the song opened since.
fn with_player(state: &AppState, id: JobId, f: impl FnOnce(&Player)) -> Result<(), AppError> {
    let song = state.song.lock();
    let Some(song) = song.as_ref().filter(|s| s.id == id) else { return Err(not_open()) };
    match song.player.as_deref() {
        Some(p) => {
            f(p);
            Ok(())
        }
        None => Err(no_player()),
    }
}

/// The first of finished song `job`'s stems named in `only` (all of them
/// when `None`) that is not a file any more (deleted or moved by hand, its
/// drive not mounted), said as such: the decoder's "could not be read as
/// audio" reads as a damaged stem.
///
/// # Errors
/// `invalid_options` naming the stem and its path.
pub(crate) fn check_stems_there(job: &stemroom_library::queue::Job, only: Option<&[String]>) -> Result<(), AppError> {
    let wanted: Vec<_> =
        job.stems.iter().filter(|s| only.is_none_or(|names| names.contains(&s.stem))).cloned().collect();
    stems_there(&job.title, &wanted)
}

fn stems_there(title: &str, stems: &[stemroom_engine::job::StemFile]) -> Result<(), AppError> {
    match stems.iter().find(|s| !Path::new(&s.path).is_file()) {
        None => Ok(()),
        Some(s) => Err(AppError {
            code: ErrorCode::InvalidOptions,
            message: format!(
                "“{title}”: its {} stem is not there any more ({}): moved or deleted, or on a drive that is not mounted?",
                s.stem, s.path
            ),
        }),
    }
}

/// The song is not open (still opening, closed by a deletion, or another
/// song opened since): not the sound system's fault.
fn not_open() -> AppError {
    AppError { code: ErrorCode::InvalidOptions, message: "This song is not open.".into() }
}

/// The song is open without sound (no output device when it was opened).
fn no_player() -> AppError {
    AppError {
        code: ErrorCode::AudioDevice,
        message: "No song is playing: there was no sound output when it was opened.".into(),
    }
}

/// Open a finished song: compute (or read cached) peaks and open the player
/// on the default output. Status updates flow to `channel` ~30 times a
/// second while the song is open. Closes the previously open song.
/// `token` names this open (a number the page chooses, new for each open):
/// [`close_song`] with it closes this open and no later one.
#[tauri::command]
#[specta::specta]
pub async fn open_song(
    state: S<'_>,
    id: JobId,
    token: u32,
    channel: Channel<PlayerStatus>,
) -> Result<SongView, AppError> {
    let st = state.inner().clone();
    tauri::async_runtime::spawn_blocking(move || {
        // One open at a time; the old player stops before the device is
        // opened again; a close or a later open that comes meanwhile wins.
        let (opening, old) = st.song.begin_open(u64::from(token), u64::from(id));
        drop(old);
        if st.song.overtaken(&opening) {
            // Closed, or its song deleted, while it waited behind another
            // open: nothing of the song is read.
            return Err(closed_while_opening());
        }
        // (A deletion that marks it after this look closes it once this
        // open ends: `let_go_of_song`.)
        if st.deleting.contains(id) {
            return Err(AppError { code: ErrorCode::Cancelled, message: "The song is being deleted.".into() });
        }
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
        check_stems_there(&job, None)?;
        let paths: Vec<PathBuf> = job.stems.iter().map(|s| PathBuf::from(&s.path)).collect();
        // The stems' rate and length from their headers: the lanes show at
        // once and their peaks are read in the background when not cached.
        let stems_set = StemSet::open(&paths).map_err(|e| AppError::from(stemroom_engine::Error::from(e)))?;
        let sample_rate = stems_set.sample_rate();
        let frames = match stems_set.declared_frames() {
            Some(f) => f,
            // No length in the header (some MP3s): read the first stem's peaks now.
            None => Peaks::cached(&paths[0])?.frames,
        };
        drop(stems_set);
        let mut tracks = Vec::new();
        if let JobSource::File { path } = &job.source {
            // The original may be gone or unreadable (the stems are what
            // matter), or not line up with them.
            if original_lines_up(Path::new(path), sample_rate, frames).unwrap_or(false) {
                tracks.push((
                    "mixture".to_string(),
                    PeaksTrack { audio: PathBuf::from(path), cache: mixture_cache(&job) },
                ));
            }
        }
        for (s, p) in job.stems.iter().zip(&paths) {
            tracks.push((s.stem.clone(), PeaksTrack { audio: p.clone(), cache: cache_path(p) }));
        }
        let (lanes, loading) = lane_peaks(tracks, sample_rate);
        // The original as one more source for A/B, when it is there and
        // plays with the stems (same rate); else the stems alone.
        let original = match &job.source {
            JobSource::File { path } if lanes.first().is_some_and(|(n, _)| n == "mixture") => Some(PathBuf::from(path)),
            _ => None,
        };
        let unity = MixControls::unity(paths.len());
        let with_original = original.map(|o| Player::open_with_original(&paths, Some(&o), &unity.with_original()));
        // Without the original only when it was the trouble: a device that
        // failed (a hung sound server: seconds each time) fails again.
        let (with_original, opened) = match with_original {
            Some(Ok(p)) => (true, Ok(p)),
            Some(Err(e)) if e.code() == ErrorCode::AudioDevice => (false, Err(e)),
            _ => (false, Player::open(&paths, &unity)),
        };
        let (player, player_error) = match opened {
            Ok(p) => (Some(Arc::new(p)), None),
            Err(e) => (None, Some(e.to_string())),
        };
        let output = player.as_ref().map(|p| p.output().clone());
        if let Some(p) = &player {
            // The click track and count-in play on the song's beat grid.
            p.set_beat_grid(beat_grid(&job));
            spawn_status_ticker(Arc::downgrade(p), channel.clone());
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
            player_error: player_error.clone(),
            streaming: false,
        };
        let song = OpenSong {
            id,
            player,
            player_error,
            with_original,
            stems: job.stems.len(),
            lanes,
            stream: None,
            loading: loading.into_iter().collect(),
            controls: unity,
            status: channel,
        };
        finish(&st, opening, song, view)
    })
    .await
    .map_err(AppError::task_lost)?
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
    // Overtaken: the song is dropped in there (its player stops, freeing
    // the device).
    if st.song.finish_open(opening, song).is_err() {
        return Err(closed_while_opening());
    }
    Ok(view)
}

/// An open overtaken by a close, a later open or its song's deletion.
fn closed_while_opening() -> AppError {
    AppError { code: ErrorCode::Cancelled, message: "The song was closed while it opened.".into() }
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
    // The stream's layout is read once, by the peaks' reader.
    let mut stream = StreamPeaks::open(dir).ok_or_else(not_yet)?;
    let stems = stream.set.growing_stems().ok_or_else(not_yet)?;
    let (sample_rate, frames) = (stream.sample_rate, stream.set.declared_frames().unwrap_or(0));
    let mut tracks = Vec::new();
    let mut original = None;
    if let JobSource::File { path } = &job.source {
        // The mixture's lane (and A/B) when it lines up with the stream's frames.
        let rate = answered_within(ORIGINAL_PROBE, path.into(), |p| StemSet::open(&[p]).map(|s| s.sample_rate()).ok());
        if rate.flatten() == Some(sample_rate) {
            tracks.push(("mixture".to_string(), PeaksTrack { audio: PathBuf::from(path), cache: mixture_cache(job) }));
            original = Some(PathBuf::from(path));
        }
    }
    let (mut lanes, loading) = lane_peaks(tracks, sample_rate);
    // As much as a moment's reading gives (a long song opened late is
    // read on over the next polls, not before it opens).
    let first = stream.refresh(Some(StreamPeaks::OPEN_BUDGET)).unwrap_or_else(|| stream.snapshot());
    stream.last_poll = Some(std::time::Instant::now());
    lanes.extend(stems.iter().cloned().zip(first));
    let unity = MixControls::unity(stems.len());
    let with_original = original.map(|o| Player::open_growing(dir, Some(&o), &unity.with_original()));
    // As for a finished song: a failed device is not tried twice.
    let (can_compare, opened) = match with_original {
        Some(Ok(p)) => (true, Ok(p)),
        Some(Err(e)) if e.code() == ErrorCode::AudioDevice => (false, Err(e)),
        _ => (false, Player::open_growing(dir, None, &unity)),
    };
    let (player, player_error) = match opened {
        Ok(p) => (Some(Arc::new(p)), None),
        Err(e) => (None, Some(e.to_string())),
    };
    if let Some(p) = &player {
        spawn_status_ticker(Arc::downgrade(p), channel.clone());
    }
    let view = SongView {
        id: job.id,
        title: job.title.clone(),
        stems: stems.clone(),
        lanes: lanes.iter().map(|(n, _)| n.clone()).collect(),
        lane_styles: lane_styles(st, &job.options.model, &lanes),
        sample_rate,
        frames,
        can_compare,
        output: player.as_ref().map(|p| p.output().clone()),
        player_error: player_error.clone(),
        streaming: true,
    };
    let song = OpenSong {
        id: job.id,
        player,
        player_error,
        with_original: can_compare,
        stems: stems.len(),
        lanes,
        stream: Some(Arc::new(SharedStream { sample_rate: stream.sample_rate, peaks: std::sync::Mutex::new(stream) })),
        loading: loading.into_iter().collect(),
        controls: unity,
        status: channel,
    };
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
    let done = tauri::async_runtime::spawn_blocking(move || {
        let job = st.queue.get(id)?;
        if job.state != JobState::Done || job.stems.is_empty() {
            return Err(AppError {
                code: ErrorCode::InvalidOptions,
                message: format!("“{}” is not done yet.", job.title),
            });
        }
        let paths: Vec<PathBuf> = job.stems.iter().map(|s| PathBuf::from(&s.path)).collect();
        // The files' rate, read before the song is locked.
        let files = StemSet::open(&paths).ok().map(|s| (s.sample_rate(), s.declared_frames()));
        let files_rate = files.map(|f| f.0);
        let not_open = || AppError { code: ErrorCode::InvalidOptions, message: "This song is not open.".into() };
        // Another rate (the job wrote the input's, e.g. 48 kHz from a
        // link's Opus, while the stream is at the model's): a new player on
        // the files goes on from the same time in the song. It is made with
        // the song unlocked (opening a device and waiting for it to run
        // takes up to seconds, and the window's play, pause and mix
        // commands wait for the lock), then put in place if the song still
        // has the player it was made from.
        let take_over = {
            let guard = st.song.lock();
            let song = guard.as_ref().filter(|s| s.id == id).ok_or_else(not_open)?;
            let stream_rate = song.stream.as_ref().map(|s| s.sample_rate);
            files_rate
                .filter(|&r| stream_rate.is_some_and(|s| s != r))
                .map(|rate| (rate, song.player.clone(), song.controls.clone()))
        };
        let made = take_over.map(|(rate, old, controls)| {
            let original = original_at_rate(&job, rate);
            let next = old.as_ref().map(|old| reopen_on_files(old, &paths, original.as_deref(), &controls));
            (rate, old, original, next)
        });
        // The rest of the stream's peaks (minutes of audio when the page
        // had not read them all), read with the song unlocked: the
        // window's play, pause and mix commands wait for the lock. The
        // stream is taken out (its file stays readable once unlinked).
        // Not when a player on the files at another rate is ready: its
        // lanes are the files' (a long song's unread stream would be read
        // for nothing).
        let taking_over = made.as_ref().is_some_and(|(_, _, _, next)| matches!(next, Some(Ok(_))));
        // (The slot's request count while the song is stored: it changes
        // with every open and close.)
        let (stream, requests) = {
            let mut guard = st.song.lock();
            match guard.as_mut().filter(|s| s.id == id) {
                Some(s) => (s.stream.take(), Some(st.song.requests())),
                None => (None, None),
            }
        };
        let mut rest = stream.as_ref().map(|s| if taking_over { None } else { lock_stream(s).refresh(None) });
        let mut guard = st.song.lock();
        // The song as it was: one opened again while the stream was read
        // (A, B, then A) has lanes and a player of its own, which the old
        // stream's peaks must not replace.
        let Some(song) = guard.as_mut().filter(|s| s.id == id && Some(st.song.requests()) == requests) else {
            return Err(not_open());
        };
        // The player replaced by one on the files, stopped once the song
        // is unlocked (stopping joins its threads).
        let mut replaced = None;
        // A player made for a song that changed meanwhile, stopped unlocked.
        let mut unused = None;
        let mut took_over = false;
        if let Some((rate, old, original, next)) = made {
            let same = match (&old, &song.player) {
                (Some(a), Some(b)) => Arc::ptr_eq(a, b),
                (None, None) => true,
                _ => false,
            };
            match (same, next) {
                (false, next) => {
                    tracing::info!("job {id}: the player changed while the files' one was made");
                    unused = next.and_then(Result::ok);
                }
                (true, Some(Err(e))) => tracing::warn!("the player stays on the stream of job {id}: {e}"),
                (true, next) => {
                    replaced = take_over_at_rate(song, &job, &paths, rate, original, next.and_then(Result::ok));
                    // The lanes are the files' now (at their rate): the
                    // stream's rest is not theirs.
                    took_over = true;
                }
            }
        }
        // The take-over did not happen after all (the player changed
        // meanwhile): the stream's rest is read now, the song locked (rare).
        if taking_over && !took_over {
            rest = stream.as_ref().map(|s| lock_stream(s).refresh(None));
        }
        // (`rest`: the song was streaming; within, what was left to read.)
        if let Some(fresh) = rest.filter(|_| !took_over) {
            set_stem_lanes(&mut song.lanes, fresh.unwrap_or_default());
            let mut on_files = true;
            if let Some(p) = &song.player {
                p.set_beat_grid(beat_grid(&job));
                // Another rate (the job wrote the input's): the stream,
                // still open, plays on until the song is closed, and its
                // lanes stay (in its frames).
                if let Err(e) = p.complete_stream(&paths) {
                    tracing::info!("the player stays on the stream of job {id}: {e}");
                    on_files = false;
                }
            }
            // The stream's peaks show until the finished files' are read
            // (and cached) in the background; the mixture's lane stays.
            let first = song.lanes.len() - job.stems.len().min(song.lanes.len());
            let mut to_read = Vec::new();
            let mut lane_of = Vec::new();
            for (i, (s, p)) in job.stems.iter().zip(&paths).enumerate().filter(|_| on_files) {
                let cache = cache_path(p);
                let lane = first + i;
                let fresh = cache.as_deref().and_then(|c| Peaks::read_fresh(p, c));
                match (fresh, song.lanes.get_mut(lane)) {
                    (Some(peaks), Some(l)) => *l = (s.stem.clone(), peaks),
                    (None, Some(l)) => {
                        l.0 = s.stem.clone();
                        lane_of.push(lane);
                        to_read.push(PeaksTrack { audio: p.clone(), cache });
                    }
                    (_, None) => {}
                }
            }
            // (Beside the original's reader when it is still going: the
            // files' peaks are not the stream's when a stem over full
            // scale was scaled down in its file.)
            if !to_read.is_empty() {
                song.loading.push(LoadingPeaks { loader: PeaksLoader::spawn(to_read), lanes: lane_of });
            }
        }
        let (sample_rate, frames) = song
            .player
            .as_ref()
            .map(|p| {
                let s = p.status();
                (s.sample_rate, s.length)
            })
            .or_else(|| files.and_then(|(rate, frames)| Some((rate, frames?))))
            .unwrap_or((
                song.lanes.last().map_or(44_100, |l| l.1.sample_rate),
                song.lanes.last().map_or(0, |l| l.1.frames),
            ));
        let lanes: Vec<String> = song.lanes.iter().map(|(n, _)| n.clone()).collect();
        let lane_styles = lane_styles(&st, &job.options.model, &song.lanes);
        let (can_compare, output) = (song.with_original, song.player.as_ref().map(|p| p.output().clone()));
        // Still no player: why is said again (the page replaces its view).
        let player_error = song.player.is_none().then(|| song.player_error.clone()).flatten();
        drop(guard);
        drop((replaced, unused));
        Ok(SongView {
            id,
            title: job.title.clone(),
            stems: job.stems.iter().map(|s| s.stem.clone()).collect(),
            lane_styles,
            lanes,
            sample_rate,
            frames,
            can_compare,
            output,
            player_error,
            streaming: false,
        })
    })
    .await
    .map_err(AppError::task_lost)?;
    match &done {
        Ok(v) => tracing::info!("job {id}: the player goes on from the finished files ({} Hz)", v.sample_rate),
        Err(e) => tracing::info!("job {id}: the player stays on the stream: {}", e.message),
    }
    done
}

/// Whether the original at `path` lines up with stems of `frames` frames at
/// `rate` Hz: it opens, and when it is decoded cut to an MP4 edit list, the
/// cut length is within 15 ms of theirs. Stems made before Stemroom cut an
/// AAC M4A's encoder priming and padding are 23-48 ms longer, and later,
/// than the original as it is decoded now: such a song shows and plays its
/// stems without the original.
fn original_lines_up(path: &Path, rate: u32, frames: u64) -> Option<bool> {
    answered_within(ORIGINAL_PROBE, path.to_path_buf(), move |path| {
        let Ok(d) = stemroom_engine::audio::decode::StreamDecoder::open(path) else { return false };
        let (own_rate, declared) = (d.sample_rate(), d.declared_frames());
        if !d.cut_to_edit_list() || own_rate == 0 || rate == 0 {
            return true;
        }
        declared.is_none_or(|n| (n as f64 / f64::from(own_rate) - frames as f64 / f64::from(rate)).abs() <= 0.015)
    })
}

/// How long opening a song waits for its original to answer. The original
/// only adds the mixture's lane and A/B: one on a network share that
/// stopped answering (or a disk spinning up) must not hold the open, which
/// every other open and the song's removal wait behind.
const ORIGINAL_PROBE: std::time::Duration = std::time::Duration::from_secs(2);

/// `probe(path)` on a thread of its own, when it answers within `limit`;
/// `None` (and the thread left to finish whenever the file answers) when it
/// does not.
fn answered_within<T: Send + 'static>(
    limit: std::time::Duration,
    path: PathBuf,
    probe: impl FnOnce(&Path) -> T + Send + 'static,
) -> Option<T> {
    let (tx, rx) = std::sync::mpsc::sync_channel(1);
    let shown = path.display().to_string();
    let spawned = std::thread::Builder::new().name("original-probe".into()).spawn(move || {
        let _ = tx.send(probe(&path));
    });
    if spawned.is_err() {
        return None;
    }
    let answer = rx.recv_timeout(limit).ok();
    if answer.is_none() {
        tracing::warn!("the original {shown} did not answer within {limit:?}: the song opens without it");
    }
    answer
}

/// The job's input file when it is at `rate` (then it joins the player on
/// the files, for A/B, and gives the mixture's lane).
fn original_at_rate(job: &stemroom_library::queue::Job, rate: u32) -> Option<PathBuf> {
    match &job.source {
        JobSource::File { path } if StemSet::open(&[Path::new(path)]).is_ok_and(|s| s.sample_rate() == rate) => {
            Some(PathBuf::from(path))
        }
        _ => None,
    }
}

/// A player on the finished files (and the original, when given and it
/// opens), with the page's mix, ready to go on from where `old` is
/// ([`Player::prepare_reopen`]; may block up to seconds; the hand-over
/// comes in [`take_over_at_rate`]). Returns whether it plays the original
/// too.
///
/// # Errors
/// It cannot be opened: `old` plays on from the stream (which stays
/// readable while it is open).
fn reopen_on_files(
    old: &Player,
    paths: &[PathBuf],
    original: Option<&Path>,
    controls: &MixControls,
) -> Result<(bool, Player), stemroom_playback::player::PlayerError> {
    if original.is_some() {
        if let Ok(p) = old.prepare_reopen(paths, original, &controls.with_original()) {
            return Ok((true, p));
        }
    }
    Ok((false, old.prepare_reopen(paths, None, controls)?))
}

/// The finished files of a song that was still separating are at another
/// sample rate than its stream (`rate`, the input's): `next`, the player
/// [`reopen_on_files`] made (`None` when the song had no player), takes
/// over with the page's mix as it is now, and the lanes become the files'
/// (the mixture's too when the original is at that rate, which also makes
/// A/B possible), read in the background. Returns the player it replaced,
/// to be stopped once the song is unlocked.
fn take_over_at_rate(
    song: &mut OpenSong,
    job: &stemroom_library::queue::Job,
    paths: &[PathBuf],
    rate: u32,
    original: Option<PathBuf>,
    next: Option<(bool, Player)>,
) -> Option<Arc<Player>> {
    let mut replaced = None;
    if let Some((with_original, next)) = next {
        // With the song locked, so no pause, seek or loop change of the
        // window's is lost between the old player and this one: it takes
        // them as they are now (blocking the window's commands for at most
        // the new player's read-ahead, 200 ms).
        if let Some(old) = &song.player {
            old.hand_over(&next);
        }
        let next = Arc::new(next);
        next.set_beat_grid(beat_grid(job));
        // The mix may have changed while it was made.
        next.set_controls(&if with_original { song.controls.with_original() } else { song.controls.clone() });
        spawn_status_ticker(Arc::downgrade(&next), song.status.clone());
        song.with_original = with_original;
        replaced = song.player.replace(next);
    }
    let mut tracks = Vec::new();
    if let Some(o) = original.filter(|_| song.with_original || song.player.is_none()) {
        tracks.push(("mixture".to_string(), PeaksTrack { audio: o, cache: mixture_cache(job) }));
    }
    for (s, p) in job.stems.iter().zip(paths) {
        tracks.push((s.stem.clone(), PeaksTrack { audio: p.clone(), cache: cache_path(p) }));
    }
    let (lanes, loading) = lane_peaks(tracks, rate);
    song.lanes = lanes;
    song.loading = loading.into_iter().collect();
    song.stream = None;
    replaced
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

/// Close the song opened with `token` (stops playback) when that open is
/// the last one: a page that leaves song A for song B (or for A again)
/// sends "close" and "open", which may run in either order, and the new
/// open stays.
#[tauri::command]
#[specta::specta]
pub async fn close_song(app: tauri::AppHandle, token: u32) {
    // Off the main thread: stopping the player joins its threads. (The
    // state comes from the handle: an async command borrowing `State`
    // would have to return a `Result`.)
    use tauri::Manager;
    let st = app.state::<Arc<AppState>>().inner().clone();
    let _ = tauri::async_runtime::spawn_blocking(move || drop(st.song.close(u64::from(token)))).await;
}

/// Peaks of every lane between frames `start` and `end`, in `columns`
/// columns (at most 8192), and how much of them is known yet. (On the
/// blocking pool, not the window's thread: it reads a running job's
/// stream and waits for the song, which finishing a job holds a moment.)
#[tauri::command]
#[specta::specta]
pub async fn song_peaks(state: S<'_>, id: JobId, start: f64, end: f64, columns: u32) -> Result<SongPeaks, AppError> {
    super::blocking(&state, move |st| peaks_of(st, id, start, end, columns)).await
}

fn peaks_of(state: &AppState, id: JobId, start: f64, end: f64, columns: u32) -> Result<SongPeaks, AppError> {
    let (start, end) = (to_frame(start), to_frame(end));
    let not_open = || AppError { code: ErrorCode::InvalidOptions, message: "This song is not open.".into() };
    // Still separating: the stems' peaks as far as they are separated, read
    // with the song unlocked (up to POLL_BUDGET of disk reads), then put in
    // its lanes if the song still has this stream (not taken over by its
    // files meanwhile, nor closed and opened again).
    let stream = {
        let song = state.song.lock();
        let song = song.as_ref().filter(|s| s.id == id).ok_or_else(not_open)?;
        song.stream.clone()
    };
    let polled = stream.map(|stream| {
        let mut peaks = lock_stream(&stream);
        let fresh = peaks.poll();
        let separated = peaks.separated();
        drop(peaks);
        (stream, fresh, separated)
    });
    let mut song = state.song.lock();
    let Some(song) = song.as_mut().filter(|s| s.id == id) else { return Err(not_open()) };
    let mut ready = 1.0;
    if let Some((stream, fresh, separated)) = polled {
        // (The same stream: this poll's clone keeps it from being freed
        // and its address reused.)
        if song.stream.as_ref().is_some_and(|s| Arc::ptr_eq(s, &stream)) {
            if let Some(fresh) = fresh {
                set_stem_lanes(&mut song.lanes, fresh);
            }
            ready = separated;
        }
    }
    // Peaks read in the background since the last ask.
    // (A reader whose tracks are all read goes.)
    song.loading.retain(|loading| {
        let update = loading.loader.take();
        let seconds = |p: &Peaks| p.frames as f64 / f64::from(p.sample_rate.max(1));
        for (track, p) in update.peaks {
            if let Some(lane) = loading.lanes.get(track).and_then(|&l| song.lanes.get_mut(l)) {
                // A finished file's peaks read part way do not replace
                // peaks that cover more (the stream's, whole when its job
                // ended): the waveform stays whole until the file's are.
                let last = update.finished.get(track).copied().unwrap_or(true);
                if last || seconds(&p) >= seconds(&lane.1) {
                    lane.1 = p;
                }
            }
        }
        ready = f64::min(ready, update.ready);
        !update.done
    });
    let columns = (columns as usize).clamp(1, 8192);
    // `start` and `end` are frames at the stems' rate (the last lanes); an
    // original at another rate has its peaks in its own frames.
    let view_rate = song.lanes.last().map_or(0, |l| l.1.sample_rate);
    let lanes = song
        .lanes
        .iter()
        .map(|(lane, p)| {
            let (start, end) = at_rate(start, end, view_rate, p.sample_rate);
            let c = p.columns(start, end, columns);
            LanePeaks { lane: lane.clone(), min: c.min, max: c.max }
        })
        .collect();
    Ok(SongPeaks { lanes, ready })
}

/// A running job's stream as the open song holds it: its rate, read with
/// the song locked, and its peaks behind their own lock (held through a
/// poll's disk reads).
struct SharedStream {
    sample_rate: u32,
    peaks: std::sync::Mutex<StreamPeaks>,
}

/// The stream's peaks, locked (a poll that panicked left them usable).
fn lock_stream(s: &SharedStream) -> std::sync::MutexGuard<'_, StreamPeaks> {
    s.peaks.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

/// Put the stream's stem peaks `fresh` in the last lanes of `lanes` (the
/// stems come after the mixture's lane, when there is one).
fn set_stem_lanes(lanes: &mut [(String, Peaks)], fresh: Vec<Peaks>) {
    let first = lanes.len() - fresh.len().min(lanes.len());
    for (lane, p) in lanes[first..].iter_mut().zip(fresh) {
        lane.1 = p;
    }
}

/// Frames `start` and `end` at `from` Hz as frames at `to` Hz (as they
/// are when either rate is unknown, 0).
fn at_rate(start: u64, end: u64, from: u32, to: u32) -> (u64, u64) {
    if from == to || from == 0 || to == 0 {
        return (start, end);
    }
    let scale = |f: u64| (u128::from(f) * u128::from(to) / u128::from(from)).min(u128::from(u64::MAX)) as u64;
    (scale(start), scale(end))
}

#[tauri::command]
#[specta::specta]
/// Play song `id` (the open one).
pub fn player_play(state: S<'_>, id: JobId) -> Result<(), AppError> {
    with_player(&state, id, Player::play)
}

#[tauri::command]
#[specta::specta]
/// Pause song `id` (the open one).
pub fn player_pause(state: S<'_>, id: JobId) -> Result<(), AppError> {
    with_player(&state, id, Player::pause)
}

/// Jump to `frame` (at the stems' rate) in song `id` (the open one).
#[tauri::command]
#[specta::specta]
pub fn player_seek(state: S<'_>, id: JobId, frame: f64) -> Result<(), AppError> {
    with_player(&state, id, |p| p.seek(to_frame(frame)))
}

/// Set or clear the loop region (frames at the stems' rate) of song `id`
/// (the open one).
#[tauri::command]
#[specta::specta]
pub fn player_set_loop(state: S<'_>, id: JobId, region: Option<LoopRegion>) -> Result<(), AppError> {
    with_player(&state, id, |p| p.set_loop(region))
}

/// Gains, mutes, solos and master of song `id` (the open one).
#[tauri::command]
#[specta::specta]
pub fn player_set_controls(state: S<'_>, id: JobId, controls: MixControls) -> Result<(), AppError> {
    let mut guard = state.song.lock();
    let Some(song) = guard.as_mut().filter(|s| s.id == id) else { return Err(not_open()) };
    let Some(player) = song.player.clone() else { return Err(no_player()) };
    // One control per stem whatever the page sent, so the original's
    // control (A/B) is always the last source's.
    let mut controls = controls;
    controls.stems.resize(song.stems, Default::default());
    let heard = if song.with_original { controls.with_original() } else { controls.clone() };
    song.controls = controls;
    player.set_controls(&heard);
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use stemroom_engine::audio::encode::{self, ClipMode, OutputFormat, WavDepth};

    /// A stem deleted by hand (or on a drive not mounted) is said to be
    /// gone, not "could not be read as audio".
    #[test]
    fn a_missing_stem_is_said_to_be_gone() {
        use stemroom_engine::job::StemFile;
        let dir = tempfile::tempdir().expect("tempdir");
        let there = dir.path().join("drums.wav");
        std::fs::write(&there, b"RIFF").expect("write");
        let stem = |name: &str, p: &Path| StemFile { stem: name.into(), path: p.to_string_lossy().into_owned() };
        assert!(stems_there("Song", &[stem("drums", &there)]).is_ok());
        let gone = dir.path().join("vocals.wav");
        let e = stems_there("Song", &[stem("drums", &there), stem("vocals", &gone)]).expect_err("gone");
        assert!(
            e.message.contains("vocals stem is not there any more") && e.message.contains("vocals.wav"),
            "{}",
            e.message
        );
        assert_eq!(e.code, ErrorCode::InvalidOptions);
        // A folder where the file was is not a stem either.
        std::fs::create_dir(&gone).expect("mkdir");
        assert!(stems_there("Song", &[stem("vocals", &gone)]).is_err());
    }

    /// The view's frames (the stems' rate) as an original's at its own rate.
    #[test]
    fn frames_at_another_rate() {
        assert_eq!(at_rate(44_100, 88_200, 44_100, 48_000), (48_000, 96_000));
        assert_eq!(at_rate(48_000, 96_000, 48_000, 22_050), (22_050, 44_100));
        assert_eq!(at_rate(7, 9, 44_100, 44_100), (7, 9));
        assert_eq!(at_rate(7, 9, 0, 48_000), (7, 9), "unknown: as they are");
        assert_eq!(at_rate(u64::MAX, u64::MAX, 1, 192_000).1, u64::MAX, "no overflow");
    }

    /// An AAC M4A lines up with stems of its cut length, not with those of
    /// a decode that kept its priming and padding (1,844 frames longer
    /// here); other files are taken as they are; a missing one never.
    #[test]
    fn the_original_plays_beside_stems_of_its_length_only() {
        let dir = tempfile::tempdir().expect("tempdir");
        let wav = dir.path().join("song.wav");
        let mut w =
            encode::open(&wav, OutputFormat::Wav { depth: WavDepth::Int16 }, 44_100, 2, ClipMode::None).expect("open");
        w.write(&vec![0.1f32; 2 * 132_300]).expect("write");
        w.finish().expect("finish");
        let m4a = dir.path().join("song.m4a");
        let made = std::process::Command::new("ffmpeg")
            .args(["-v", "error", "-y", "-i"])
            .arg(&wav)
            .args(["-c:a", "aac"])
            .arg(&m4a)
            .status()
            .expect("ffmpeg (setup.sh installs it)");
        assert!(made.success());
        let lines_up = |p: &Path, rate, frames| original_lines_up(p, rate, frames) == Some(true);
        assert!(lines_up(&m4a, 44_100, 132_300));
        assert!(lines_up(&m4a, 48_000, 144_000), "the same 3 s at another rate");
        assert!(!lines_up(&m4a, 44_100, 134_144), "stems 42 ms longer");
        assert!(lines_up(&wav, 44_100, 134_144), "no edit list: as before");
        assert!(!lines_up(&dir.path().join("gone.wav"), 44_100, 132_300));
    }

    /// An original that does not answer (a share that stopped answering)
    /// is given up after the limit; the song opens without it.
    #[test]
    fn an_original_that_does_not_answer_is_given_up() {
        let limit = std::time::Duration::from_millis(200);
        let started = std::time::Instant::now();
        let hung = answered_within(limit, PathBuf::from("/mnt/share/song.wav"), |_| {
            std::thread::sleep(std::time::Duration::from_secs(5));
            true
        });
        assert_eq!(hung, None);
        assert!(started.elapsed() < std::time::Duration::from_secs(2), "{:?}", started.elapsed());
        assert_eq!(answered_within(limit, PathBuf::from("x"), |p| p.to_path_buf()), Some(PathBuf::from("x")));
    }
}

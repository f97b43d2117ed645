//! What the app keeps while running: the queue database, the worker, and the
//! progress channels of open windows.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};

use serde::Serialize;
use specta::Type;
use stemroom_engine::model::{self, Manifest, ModelStatus};
use stemroom_engine::runtime::{self, RuntimeStatus};
use stemroom_engine::units::Device;
use stemroom_engine::ErrorCode;
use stemroom_library::lock::InstanceLock;
use stemroom_library::queue::{Job, Queue, Settings};
use stemroom_library::worker::{JobProgress, Worker, WorkerConfig, WorkerListener};
use tauri::ipc::Channel;

use crate::commands::song::OpenSong;
use crate::error::AppError;

/// What the window hears about the queue.
#[derive(Debug, Clone, Serialize, Type)]
#[serde(tag = "kind", rename_all = "camelCase")]
pub enum QueueEvent {
    /// A job was claimed, finished, failed or cancelled. (Boxed: a `Job` is
    /// several times larger than the other variants.)
    JobChanged { job: Box<Job> },
    /// Throttled progress of a running job.
    Progress { progress: JobProgress },
    /// Jobs were added, removed or reordered.
    QueueChanged,
    /// What adding files opened with Stemroom (a file manager's "Open with",
    /// a second launch) did: the window shows what it refused and what was
    /// already there, as for its own adds. (Boxed as `JobChanged` is.)
    Opened { result: Box<stemroom_library::intake::AddResult> },
}

/// Fans worker events out to the progress channel of each webview (keyed by
/// its label, so a reloaded page replaces its old channel).
#[derive(Default)]
pub struct Hub {
    channels: Mutex<HashMap<String, Channel<QueueEvent>>>,
    /// What files opened with Stemroom did, while no window listened yet
    /// (the files a first launch was given, and those of launches after it
    /// before the window listened): told to the first window, in order.
    /// At most [`UNHEARD_MAX`], the latest kept.
    unheard: Mutex<std::collections::VecDeque<QueueEvent>>,
}

/// The songs being deleted (see [`AppState::let_go_of_song`]).
#[derive(Default, Clone)]
pub struct Deleting(Arc<Mutex<HashMap<stemroom_library::queue::JobId, usize>>>);

impl Deleting {
    /// Song `id` is being deleted until the mark is dropped (two deletions
    /// of one song at once each hold one).
    pub fn mark(&self, id: stemroom_library::queue::JobId) -> DeletingMark {
        *self.0.lock().unwrap_or_else(|p| p.into_inner()).entry(id).or_default() += 1;
        DeletingMark(self.clone(), id)
    }
    /// Whether song `id` is being deleted now.
    pub fn contains(&self, id: stemroom_library::queue::JobId) -> bool {
        self.0.lock().unwrap_or_else(|p| p.into_inner()).contains_key(&id)
    }
}

/// See [`Deleting::mark`].
pub struct DeletingMark(Deleting, stemroom_library::queue::JobId);

impl Drop for DeletingMark {
    fn drop(&mut self) {
        let mut marks = self.0 .0.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(n) = marks.get_mut(&self.1) {
            *n -= 1;
            if *n == 0 {
                marks.remove(&self.1);
            }
        }
    }
}

/// Launches' results kept for the first window (a script opening files one
/// by one at login: each launch's refusals are told, not only the last's).
const UNHEARD_MAX: usize = 32;

impl Hub {
    pub fn add(&self, webview: &str, ch: Channel<QueueEvent>) {
        let mut channels = self.channels.lock().unwrap_or_else(|p| p.into_inner());
        for ev in self.unheard.lock().unwrap_or_else(|p| p.into_inner()).drain(..) {
            let _ = ch.send(ev);
        }
        channels.insert(webview.to_string(), ch);
    }
    pub fn send(&self, ev: QueueEvent) {
        let mut channels = self.channels.lock().unwrap_or_else(|p| p.into_inner());
        // A channel whose webview is gone fails to send; drop it.
        channels.retain(|_, ch| ch.send(ev.clone()).is_ok());
        if channels.is_empty() && matches!(ev, QueueEvent::Opened { .. }) {
            let mut unheard = self.unheard.lock().unwrap_or_else(|p| p.into_inner());
            if unheard.len() == UNHEARD_MAX {
                unheard.pop_front();
            }
            unheard.push_back(ev);
        }
    }
}

impl WorkerListener for Hub {
    fn job_changed(&self, job: &Job) {
        self.send(QueueEvent::JobChanged { job: Box::new(job.clone()) });
    }
    fn progress(&self, progress: &JobProgress) {
        self.send(QueueEvent::Progress { progress: progress.clone() });
    }
}

/// The worker's listener: the window's channels and the HTTP service's
/// job events (kept whether or not the service runs, so a service started
/// later knows the progress of running jobs).
struct Listeners(Arc<Hub>, Arc<stemroom_server::events::Events>);

impl WorkerListener for Listeners {
    fn job_changed(&self, job: &Job) {
        self.0.job_changed(job);
        self.1.job_changed(job);
    }
    fn progress(&self, progress: &JobProgress) {
        self.0.progress(progress);
        self.1.progress(progress);
    }
    fn job_removed(&self, job: &Job) {
        self.1.job_removed(job);
    }
}

/// The HTTP service's own changes (a job queued, cancelled while queued or
/// deleted through the API) reach the window as a queue change, so its
/// lists follow; the worker's changes reach it through [`Listeners`].
fn forward_service_changes(events: &stemroom_server::events::Events, hub: Arc<Hub>) {
    use stemroom_library::queue::JobState;
    use stemroom_server::events::Update;
    use tokio::sync::broadcast::error::RecvError;
    let mut changes = events.subscribe();
    tauri::async_runtime::spawn(async move {
        loop {
            match changes.recv().await {
                Ok(Update::Job(job)) if matches!(job.state, JobState::Queued | JobState::Cancelled) => {
                    hub.send(QueueEvent::QueueChanged);
                }
                Ok(Update::Deleted(_)) | Err(RecvError::Lagged(_)) => hub.send(QueueEvent::QueueChanged),
                Ok(_) => {}
                Err(RecvError::Closed) => break,
            }
        }
    });
}

/// Decode with the ffmpeg the settings name (or the default search).
pub fn apply_ffmpeg_path(settings: &Settings) {
    stemroom_engine::audio::decode::set_ffmpeg_path(settings.ffmpeg_path.as_deref().map(PathBuf::from));
}

/// One cancellable task of a kind at a time (an export, a GPU support
/// install): its cancel flag while it runs.
#[derive(Default)]
pub struct CancelSlot {
    /// The running task's cancel flag, and what it works on (a song's id
    /// for an export; `u64::MAX`: nothing named).
    cancel: Mutex<Option<(Arc<AtomicBool>, u64)>>,
}

impl CancelSlot {
    /// Run `work` off the main thread (it may take minutes) with this slot's
    /// cancel flag; while one runs, another is refused with `busy`.
    ///
    /// # Errors
    /// `invalid_options` with `busy`; whatever `work` returns.
    pub async fn run<T: Send + 'static>(
        &self,
        busy: &str,
        work: impl FnOnce(Arc<AtomicBool>) -> Result<T, AppError> + Send + 'static,
    ) -> Result<T, AppError> {
        self.run_on(u64::MAX, busy, work).await
    }

    /// [`CancelSlot::run`] for a task that works on `what` (a song's id),
    /// which [`CancelSlot::cancel_if_on`] can name.
    ///
    /// # Errors
    /// As [`CancelSlot::run`].
    pub async fn run_on<T: Send + 'static>(
        &self,
        what: u64,
        busy: &str,
        work: impl FnOnce(Arc<AtomicBool>) -> Result<T, AppError> + Send + 'static,
    ) -> Result<T, AppError> {
        let cancel = {
            let mut slot = self.cancel.lock().unwrap_or_else(|p| p.into_inner());
            if slot.is_some() {
                return Err(AppError { code: ErrorCode::InvalidOptions, message: busy.into() });
            }
            let flag = Arc::new(AtomicBool::new(false));
            *slot = Some((flag.clone(), what));
            flag
        };
        // (A panic in the task is said in plain words, its text logged.)
        let result = tauri::async_runtime::spawn_blocking(move || work(cancel)).await.map_err(AppError::task_lost);
        *self.cancel.lock().unwrap_or_else(|p| p.into_inner()) = None;
        result?
    }

    /// Ask the running task, if any, to stop.
    pub fn cancel(&self) {
        if let Some((c, _)) = self.cancel.lock().unwrap_or_else(|p| p.into_inner()).as_ref() {
            c.store(true, Ordering::Relaxed);
        }
    }

    /// Ask the running task to stop when it works on `what`. Returns
    /// whether it does.
    pub fn cancel_if_on(&self, what: u64) -> bool {
        match self.cancel.lock().unwrap_or_else(|p| p.into_inner()).as_ref() {
            Some((c, on)) if *on == what => {
                c.store(true, Ordering::Relaxed);
                true
            }
            _ => false,
        }
    }

    /// Wait until no task runs, for at most `within`. Returns whether none
    /// does.
    pub fn wait_idle(&self, within: std::time::Duration) -> bool {
        let until = std::time::Instant::now() + within;
        loop {
            if self.cancel.lock().unwrap_or_else(|p| p.into_inner()).is_none() {
                return true;
            }
            if std::time::Instant::now() >= until {
                return false;
            }
            std::thread::sleep(std::time::Duration::from_millis(20));
        }
    }
}

/// Everything the commands share.
pub struct AppState {
    pub queue: Arc<Queue>,
    pub worker: Worker,
    pub hub: Arc<Hub>,
    pub data_dir: PathBuf,
    pub manifest: Manifest,
    /// The song open in the song view (its player and peaks).
    pub song: stemroom_playback::slot::OpenSlot<OpenSong>,
    /// The running export, named by the song it reads (deleting that song
    /// stops it first).
    pub export: CancelSlot,
    /// The GPU support install.
    pub gpu_install: CancelSlot,
    /// The model download or removal running now (one at a time).
    pub model_fetch: CancelSlot,
    /// The yt-dlp install running now.
    pub tools_install: CancelSlot,
    /// Folders picked in native dialogs, named by handle.
    pub folders: crate::commands::export::PickedFolders,
    /// What each song's last export wrote, for dragging out.
    pub last_exports: crate::commands::drag::LastExports,
    /// Songs being deleted now ([`AppState::let_go_of_song`]): not opened.
    pub deleting: Deleting,
    /// The drag out in progress, whose files dropped back on the window are
    /// not queued.
    pub dragged_out: crate::commands::drag::DraggedOut,
    /// Files and folders given outside the page (dropped, picked, opened
    /// with): the only local paths `add_paths` takes.
    pub grants: Grants,
    /// Job events for the HTTP service.
    pub server_events: Arc<stemroom_server::events::Events>,
    /// The HTTP service, while it runs (Settings starts and stops it).
    pub server: tokio::sync::Mutex<Option<stemroom_server::Embedded>>,
    /// Held from reading the settings to saving them changed, so two
    /// changes at once (a Save during a library move) do not undo one
    /// another.
    pub settings_edit: std::sync::Mutex<()>,
    /// Held while the library moves to another folder (one move at a time).
    pub library_move: std::sync::Mutex<()>,
    _instance: InstanceLock,
    /// What opening a damaged job database did at this start (it was set
    /// aside and rebuilt), told to the window until the app quits.
    pub recovery: Option<stemroom_library::queue::Recovery>,
}

impl AppState {
    /// Hold [`AppState::settings_edit`] (a panic while it was held left the
    /// settings as saved: nothing to repair).
    pub fn editing_settings(&self) -> std::sync::MutexGuard<'_, ()> {
        self.settings_edit.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// The window's page (re)loads: what the page before it opened and can
    /// no longer see or stop goes: its song's player (which played on
    /// after a reload with no Pause button), its export and its installs
    /// (each refused the next one as running, with no Cancel button; a
    /// cancelled model download resumes when asked again). Blocks while the
    /// player closes (up to seconds: see `Player`'s drop): call it off the
    /// main thread.
    pub fn page_loaded(&self) {
        drop(self.song.close_all());
        for task in [&self.export, &self.gpu_install, &self.model_fetch, &self.tools_install] {
            task.cancel();
        }
    }

    /// Song `id` is about to be deleted: the player closes it (an open
    /// still in progress is overtaken: its waveform reader would write into
    /// the deleted folder), and an export reading it is cancelled and
    /// waited for (it removes what it wrote; it would otherwise write into
    /// the folder being deleted, or fail half way). Until the returned
    /// mark is dropped (when the deletion is over, done or not), the song
    /// is not opened again: an open asked in between (the HTTP service
    /// deleting it as the person opens it) read a song whose files were
    /// going, and its waveform cache made the deleted folder again.
    #[must_use = "the song may be opened again as soon as the mark is dropped"]
    pub fn let_go_of_song(&self, id: stemroom_library::queue::JobId) -> DeletingMark {
        let mark = self.deleting.mark(id);
        drop(self.song.close_if(u64::from(id), |s| s.id == id));
        if self.export.cancel_if_on(u64::from(id)) && !self.export.wait_idle(std::time::Duration::from_secs(10)) {
            tracing::warn!("the export of song {id} did not stop within 10 s of its deletion");
        }
        mark
    }

    /// Open the database in `data_dir` (created if needed), recover
    /// interrupted jobs and start the worker.
    ///
    /// # Errors
    /// When the database cannot be opened.
    pub fn open(data_dir: &Path) -> Result<Self, Box<dyn std::error::Error>> {
        let instance = InstanceLock::acquire(data_dir)?
            .ok_or_else(|| format!("Stemroom is already running with the data folder {}", data_dir.display()))?;
        let default_library = stemroom_library::song::default_library_dir(data_dir);
        // A damaged database is set aside and rebuilt, the songs filed again
        // from their folders: the window says so (`AppInfo::database_recovery`).
        // (Song folders written before they named their database are the
        // app's: the library is the app's.)
        let (queue, recovery) =
            Queue::open_owned(&data_dir.join("stemroom.sqlite"), &instance, &default_library, true)?;
        let queue = Arc::new(queue);
        // This process owns the folder: jobs a dead one left running go back
        // in the queue.
        queue.recover(&instance)?;
        let hub = Arc::new(Hub::default());
        let config = WorkerConfig { default_library, ..WorkerConfig::default() };
        let settings = queue.settings()?;
        apply_ffmpeg_path(&settings);
        let server_events =
            Arc::new(stemroom_server::events::Events::new(stemroom_server::upload::uploads_dir(data_dir)));
        forward_service_changes(&server_events, hub.clone());
        let listeners = Arc::new(Listeners(hub.clone(), server_events.clone()));
        let worker = Worker::new(queue.clone(), config, listeners);
        // (Before any job runs.)
        // (The library as a job files into it: settings that cannot be
        // read give no folder, not the default one.)
        let library = worker.library_dir_to_file().ok();
        crate::commands::settings::clean_interrupted_move(data_dir, library.as_deref(), queue.work_tag());
        let manifest = Manifest::builtin()?;
        // Songs opened with Stemroom from a file manager before the
        // first-run setup is done wait for it in the queue (each would fail
        // at once, out of sight behind the welcome screen).
        let main_model = manifest.get(&Settings::default().model)?.file.clone();
        worker.hold_until(move || setup_done(&main_model));
        worker.start(settings.concurrent_jobs as usize);
        Ok(AppState {
            queue,
            worker,
            hub,
            data_dir: data_dir.to_path_buf(),
            manifest,
            song: Default::default(),
            export: Default::default(),
            gpu_install: Default::default(),
            model_fetch: Default::default(),
            tools_install: Default::default(),
            folders: Default::default(),
            last_exports: Default::default(),
            deleting: Default::default(),
            dragged_out: Default::default(),
            grants: Grants::default(),
            server_events,
            server: Default::default(),
            settings_edit: Default::default(),
            library_move: Default::default(),
            _instance: instance,
            recovery,
        })
    }

    pub fn models(&self) -> Vec<ModelStatus> {
        model::statuses(&self.manifest, &model::model_search_dirs(None))
    }

    pub fn runtime(&self) -> RuntimeStatus {
        runtime::status(None, Device::Auto)
    }
}

/// Whether what every job needs is installed: ONNX Runtime and the main
/// model's file (every preset's model is it or made from it). Looked at
/// every claim until it first says yes, so only whether the files are
/// there: a damaged model fails its job saying so.
fn setup_done(main_model_file: &str) -> bool {
    (runtime::loaded_library().is_some() || runtime::find_library(None, Device::Auto).is_ok())
        && model::model_search_dirs(None).iter().any(|d| d.join(main_model_file).is_file())
}

/// The files and folders the person gave the app outside the page: dropped
/// on the window (the runtime's own drop event, not the page's), picked in
/// its native dialog, or opened with it. The page may ask to add these (and
/// anything inside a granted folder), and links; it names no other path, so
/// a hostile page cannot make the app read, list or separate files.
#[derive(Debug, Default)]
pub struct Grants {
    paths: Mutex<std::collections::HashSet<PathBuf>>,
    changed: std::sync::Condvar,
}

/// Most grants kept (a session drops a few thousand files at most).
const MAX_GRANTS: usize = 100_000;

impl Grants {
    /// Grant `paths` for the rest of the session.
    pub fn grant(&self, paths: impl IntoIterator<Item = PathBuf>) {
        let mut g = self.paths.lock().unwrap_or_else(|p| p.into_inner());
        if g.len() > MAX_GRANTS {
            g.clear();
        }
        g.extend(paths.into_iter().filter(|p| p.is_absolute()));
        self.changed.notify_all();
    }

    /// Whether `path` was granted, or lies inside a granted folder, waiting
    /// until `deadline` for a grant to arrive (the page hears of a drop at
    /// about the time the app does). An absolute path without `..` only;
    /// inside a granted folder, one that stays inside it once symbolic
    /// links are resolved (`/dropped/link/ssl` with `link` -> `/etc` named
    /// a folder nobody granted).
    pub fn wait_for(&self, path: &Path, deadline: std::time::Instant) -> bool {
        use std::path::Component;
        if !path.is_absolute() || path.components().any(|c| matches!(c, Component::ParentDir)) {
            return false;
        }
        // Its folder resolved, inside the granted one; a link as its own
        // name only to a file (a dropped folder of links to songs, which
        // the intake adds under the links' names).
        let inside = |folder: &Path| {
            let linked_folder = std::fs::symlink_metadata(path)
                .is_ok_and(|m| m.file_type().is_symlink() && !std::fs::metadata(path).is_ok_and(|t| t.is_file()));
            match (path.parent().map(Path::canonicalize), folder.canonicalize()) {
                (Some(Ok(p)), Ok(f)) => !linked_folder && p.starts_with(f),
                _ => false,
            }
        };
        // The granted folders above it are copied out and checked with the
        // grants unlocked: resolving a path on a hung network mount must
        // not hold up a drop's grant on the window's thread.
        let mut g = self.paths.lock().unwrap_or_else(|p| p.into_inner());
        loop {
            if g.contains(path) {
                return true;
            }
            let folders: Vec<PathBuf> =
                path.ancestors().skip(1).filter(|a| g.contains(*a)).map(Path::to_path_buf).collect();
            if !folders.is_empty() {
                drop(g);
                if folders.iter().any(|a| inside(a)) {
                    return true;
                }
                g = self.paths.lock().unwrap_or_else(|p| p.into_inner());
                // Granted while unlocked (its notice was missed).
                if g.contains(path) {
                    return true;
                }
            }
            let now = std::time::Instant::now();
            if now >= deadline {
                return false;
            }
            g = self.changed.wait_timeout(g, deadline - now).unwrap_or_else(|p| p.into_inner()).0;
        }
    }
}

#[cfg(test)]
mod grant_tests {
    use std::time::{Duration, Instant};

    use super::*;

    #[test]
    fn only_granted_paths_and_what_is_inside_granted_folders() {
        let tmp = tempfile::tempdir().unwrap();
        let root = tmp.path().canonicalize().unwrap();
        let p = |rel: &str| root.join(rel);
        std::fs::create_dir_all(p("music/album/disc 2")).unwrap();
        for f in ["music/album/disc 2/03.flac", "music/one.flac", "music/two.flac"] {
            std::fs::write(p(f), b"x").unwrap();
        }
        // A link inside a granted folder to a folder nobody granted.
        std::os::unix::fs::symlink("/etc", p("music/album/link")).unwrap();
        // Links to songs elsewhere (a music manager's folder of links), to
        // a file and to a folder.
        std::fs::create_dir_all(p("store")).unwrap();
        std::fs::write(p("store/a81f.flac"), b"x").unwrap();
        std::os::unix::fs::symlink(p("store/a81f.flac"), p("music/album/04 Song.flac")).unwrap();
        std::os::unix::fs::symlink(p("store"), p("music/album/store")).unwrap();
        let g = Grants::default();
        g.grant([p("music/album"), p("music/one.flac"), PathBuf::from("relative.wav")]);
        let now = Instant::now();
        for ok in ["music/album", "music/album/disc 2/03.flac", "music/one.flac", "music/album/04 Song.flac"] {
            assert!(g.wait_for(&p(ok), now), "{ok}");
        }
        for refused in [
            "music",
            "music/two.flac",
            "music/album/../../etc/passwd",
            "music/album/link/ssl",
            "music/album/link",
            "music/album/store",
            "music/album/store/a81f.flac",
        ] {
            assert!(!g.wait_for(&p(refused), now), "{refused}");
        }
        for refused in ["relative.wav", "/etc/passwd"] {
            assert!(!g.wait_for(Path::new(refused), now), "{refused}");
        }
        // A grant that arrives while the page's ask waits is seen.
        let g = Arc::new(g);
        let late = g.clone();
        let t = std::thread::spawn(move || {
            std::thread::sleep(Duration::from_millis(50));
            late.grant([PathBuf::from("/late.wav")]);
        });
        assert!(g.wait_for(Path::new("/late.wav"), Instant::now() + Duration::from_secs(5)));
        t.join().unwrap();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// What a first launch's files did is told to the window that comes
    /// next (it subscribes after the files were added).
    #[test]
    fn an_opened_result_waits_for_the_first_window() {
        let hub = Hub::default();
        hub.send(QueueEvent::QueueChanged);
        hub.send(QueueEvent::Opened { result: Box::default() });
        // A second launch's files before the window listens: both told.
        hub.send(QueueEvent::Opened { result: Box::default() });
        let heard = Arc::new(Mutex::new(Vec::new()));
        let into = heard.clone();
        hub.add(
            "main",
            Channel::new(move |body| {
                if let tauri::ipc::InvokeResponseBody::Json(json) = body {
                    into.lock().expect("lock").push(json);
                }
                Ok(())
            }),
        );
        let heard = heard.lock().expect("lock").clone();
        assert_eq!(heard.len(), 2, "{heard:?}");
        assert!(heard.iter().all(|h| h.contains("\"kind\":\"opened\"")), "{heard:?}");
        // Told once.
        hub.add("second", Channel::new(|_| Ok(())));
        assert!(hub.unheard.lock().expect("lock").is_empty());
    }
}

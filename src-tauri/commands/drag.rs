//! Drag out: a stem's file, every stem, or what the song's last export wrote,
//! dragged from the window into a DAW or a file manager as files.
//!
//! The page names what to drag by song id and stem index (never by path);
//! the backend finds the files, checks they are there and starts a native
//! drag from the window on the main thread, through the `drag` crate
//! (crabnebula-dev/drag-rs: GTK on Linux, AppKit, OLE). Its GTK side offers
//! the files as `text/uri-list`, which every Linux DAW and file manager
//! takes.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::Mutex;

use serde::{Deserialize, Serialize};
use specta::Type;
use stemroom_engine::ErrorCode;
use stemroom_library::queue::{JobId, JobState};

use super::S;
use crate::error::AppError;

/// The icon under the pointer while dragging (the app's 32 px icon).
const DRAG_ICON: &[u8] = include_bytes!("../../icons/32x32.png");

/// What to drag out of song `id`.
#[derive(Debug, Clone, Copy, Deserialize, Type)]
#[serde(tag = "kind", rename_all = "camelCase")]
pub enum DragOut {
    /// The finished file of stem `index` (model source order, as the lanes).
    Stem { index: u32 },
    /// Every finished stem file.
    AllStems,
    /// The files the song's last export wrote in this session.
    LastExport,
}

/// How a drag ended.
#[derive(Debug, Clone, Copy, Serialize, Type, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub enum DragEnd {
    /// A drop target took the files.
    Dropped,
    /// Released where nothing takes files, or Escape.
    Cancelled,
}

/// How long after a drag out ends a drop of its files on the window still
/// counts as that drag coming back: the window's drop event and the drag's
/// end arrive in either order, within milliseconds of each other.
const COMES_BACK_WITHIN: std::time::Duration = std::time::Duration::from_secs(5);

/// The files of the drag out in progress (or just ended), so that one let
/// go over the window itself is not queued as new songs.
#[derive(Default)]
pub struct DraggedOut(Mutex<Option<(Vec<PathBuf>, Option<std::time::Instant>)>>);

/// Marks the drag ended when dropped.
pub struct DragInFlight<'a>(&'a DraggedOut);

impl Drop for DragInFlight<'_> {
    fn drop(&mut self) {
        if let Some((_, ended)) = self.0 .0.lock().unwrap_or_else(|p| p.into_inner()).as_mut() {
            *ended = Some(std::time::Instant::now());
        }
    }
}

impl DraggedOut {
    /// A drag of `files` (as [`canonical`] gives them) begins; it ends when
    /// the guard is dropped.
    pub fn start(&self, files: Vec<PathBuf>) -> DragInFlight<'_> {
        *self.0.lock().unwrap_or_else(|p| p.into_inner()) = Some((files, None));
        DragInFlight(self)
    }

    /// Whether `path` is a file of the drag out in progress or of one that
    /// ended within [`COMES_BACK_WITHIN`].
    pub fn is_own(&self, path: &Path) -> bool {
        let recent = |slot: &Option<(Vec<PathBuf>, Option<std::time::Instant>)>| {
            slot.as_ref().is_some_and(|(_, ended)| !ended.is_some_and(|t| t.elapsed() > COMES_BACK_WITHIN))
        };
        // No drag out lately: nothing is looked up (a path the page names
        // is not even resolved: it could be an automount or a stalled
        // network folder).
        if !recent(&self.0.lock().unwrap_or_else(|p| p.into_inner())) {
            return false;
        }
        let path = canonical(path);
        let slot = self.0.lock().unwrap_or_else(|p| p.into_inner());
        recent(&slot) && slot.as_ref().is_some_and(|(files, _)| files.contains(&path))
    }
}

/// `path` with links and `.` resolved (as it is where it cannot be).
fn canonical(path: &Path) -> PathBuf {
    std::fs::canonicalize(path).unwrap_or_else(|_| path.to_path_buf())
}

/// The files each song's last export wrote this session (for
/// [`DragOut::LastExport`]).
#[derive(Default)]
pub struct LastExports(Mutex<HashMap<JobId, Vec<PathBuf>>>);

impl LastExports {
    pub fn set(&self, id: JobId, files: Vec<PathBuf>) {
        self.0.lock().unwrap_or_else(|p| p.into_inner()).insert(id, files);
    }
    fn get(&self, id: JobId) -> Option<Vec<PathBuf>> {
        self.0.lock().unwrap_or_else(|p| p.into_inner()).get(&id).cloned()
    }
}

/// The files `item` names in song `id`, each an existing file.
///
/// # Errors
/// `not_found` for an unknown song; `invalid_options` for a song without
/// finished stems, a stem index out of range, no export yet, or a file
/// that is gone (naming it).
pub fn drag_files(state: &crate::state::AppState, id: JobId, item: DragOut) -> Result<Vec<PathBuf>, AppError> {
    let invalid = |message: String| AppError { code: ErrorCode::InvalidOptions, message };
    let finished = || {
        let job = state.queue.get(id)?;
        if job.state != JobState::Done || job.stems.is_empty() {
            return Err(invalid(format!("“{}” has no finished stems to drag yet.", job.title)));
        }
        Ok(job)
    };
    let files: Vec<PathBuf> = match item {
        DragOut::Stem { index } => {
            let job = finished()?;
            let s = job.stems.get(index as usize).ok_or_else(|| {
                invalid(format!("“{}” has {} stems, not {}.", job.title, job.stems.len(), u64::from(index) + 1))
            })?;
            vec![PathBuf::from(&s.path)]
        }
        DragOut::AllStems => finished()?.stems.iter().map(|s| PathBuf::from(&s.path)).collect(),
        DragOut::LastExport => {
            state.last_exports.get(id).ok_or_else(|| invalid("Nothing exported from this song yet.".into()))?
        }
    };
    for f in &files {
        if !f.is_file() {
            return Err(invalid(format!("{} is gone (moved or deleted).", f.display())));
        }
    }
    Ok(files)
}

/// `path` (absolute) as the path part of its `file://` URI, percent-encoded
/// by the `url` crate (RFC 8089), so names with spaces, `#`, `%`, `?` or
/// bytes that are not UTF-8 survive the drop; `None` for a relative path.
pub fn uri_path(path: &Path) -> Option<String> {
    tauri::Url::from_file_path(path).ok().map(|u| u.path().to_owned())
}

/// Start dragging `item` of song `id` out of the window; answers when the
/// drag ends. Call it on a pointer press (the drag follows that button).
///
/// # Errors
/// As [`drag_files`]; `internal` when the window system refuses the drag.
#[tauri::command]
#[specta::specta]
pub async fn drag_out(
    window: tauri::WebviewWindow,
    state: S<'_>,
    id: JobId,
    item: DragOut,
) -> Result<DragEnd, AppError> {
    // The database and the files are looked at off the async runtime's
    // few threads (a library on a share that stopped answering held one,
    // and with it the HTTP service and other commands).
    let (files, canonical) = super::blocking(&state, move |st| {
        let files = drag_files(st, id, item)?;
        let canonical = files.iter().map(|f| canonical(f)).collect::<Vec<_>>();
        Ok((files, canonical))
    })
    .await?;
    tracing::info!(id, files = files.len(), "drag out");
    // Until a moment after it ends, a drop of these very files on this
    // window is the drag coming back (a click on the handle, or a drag let
    // go over the window), not songs to separate.
    let _out = state.dragged_out.start(canonical);
    // drag-rs's GTK side writes `file://{path}` unencoded; hand it the
    // encoded path so the URI is valid for any name.
    #[cfg(target_os = "linux")]
    let files: Vec<PathBuf> = files.iter().map(|f| uri_path(f).map_or_else(|| f.clone(), PathBuf::from)).collect();
    let (started_tx, started_rx) = tokio::sync::oneshot::channel::<Result<(), String>>();
    let (ended_tx, ended_rx) = tokio::sync::oneshot::channel::<DragEnd>();
    let w = window.clone();
    window
        .run_on_main_thread(move || {
            let ended = Mutex::new(Some(ended_tx));
            let on_end = move |result: drag::DragResult, _: drag::CursorPosition| {
                let end = match result {
                    drag::DragResult::Dropped => DragEnd::Dropped,
                    drag::DragResult::Cancel => DragEnd::Cancelled,
                };
                if let Some(tx) = ended.lock().unwrap_or_else(|p| p.into_inner()).take() {
                    let _ = tx.send(end);
                }
            };
            let item = drag::DragItem::Files(files);
            let icon = drag::Image::Raw(DRAG_ICON.to_vec());
            #[cfg(target_os = "linux")]
            let started = match w.gtk_window() {
                Ok(gtk) => drag::start_drag(&gtk, item, icon, on_end, drag::Options::default()),
                Err(e) => {
                    let _ = started_tx.send(Err(e.to_string()));
                    return;
                }
            };
            #[cfg(not(target_os = "linux"))]
            let started = drag::start_drag(&w, item, icon, on_end, drag::Options::default());
            let _ = started_tx.send(started.map_err(|e| e.to_string()));
        })
        .map_err(|e| AppError::internal(e.to_string()))?;
    let refused = |e: String| AppError::internal(format!("The drag could not start: {e}"));
    started_rx.await.map_err(|e| refused(e.to_string()))?.map_err(refused)?;
    // A drag that never ends (the window closed meanwhile) answers cancelled.
    Ok(ended_rx.await.unwrap_or(DragEnd::Cancelled))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_drag_out_let_go_over_the_window_is_known_for_a_moment() {
        let dir = tempfile::tempdir().expect("tempdir");
        let vocals = dir.path().join("vocals.wav");
        std::fs::write(&vocals, b"RIFF").expect("write");
        let other = dir.path().join("song.wav");
        std::fs::write(&other, b"RIFF").expect("write");
        let out = DraggedOut::default();
        assert!(!out.is_own(&vocals), "no drag yet");
        let flight = out.start(vec![canonical(&vocals)]);
        assert!(out.is_own(&vocals) && !out.is_own(&other));
        // The same file by another spelling.
        assert!(out.is_own(&dir.path().join(".").join("vocals.wav")));
        drop(flight);
        assert!(out.is_own(&vocals), "just ended: the drop may come after the end");
        if let Some((_, ended)) = out.0.lock().expect("lock").as_mut() {
            *ended = Some(std::time::Instant::now() - COMES_BACK_WITHIN - std::time::Duration::from_secs(1));
        }
        assert!(!out.is_own(&vocals), "long ended: a later drop of the file is a new song");
    }

    /// What a drop target does with the URI (`file://` + the path part)
    /// gives back the very path, for hostile names too.
    #[test]
    fn uri_paths_survive_the_drop() {
        assert_eq!(uri_path(Path::new("/home/me/Stems/vocals.wav")).as_deref(), Some("/home/me/Stems/vocals.wav"));
        let hostile = Path::new("/m/Falcon 69 #2 (100%)?/a&b=ü.wav");
        let encoded = uri_path(hostile).expect("absolute");
        // Every reserved character encoded, the literal % too.
        assert!(!encoded.contains([' ', '#', '?']), "{encoded}");
        assert!(encoded.contains("%23") && encoded.contains("%25") && encoded.contains("%3F"), "{encoded}");
        let back = tauri::Url::parse(&format!("file://{encoded}")).expect("a valid URI").to_file_path();
        assert_eq!(back.as_deref(), Ok(hostile));
        #[cfg(unix)]
        {
            use std::os::unix::ffi::OsStrExt;
            let raw = Path::new(std::ffi::OsStr::from_bytes(b"/m/\xff.wav"));
            let encoded = uri_path(raw).expect("absolute");
            assert_eq!(encoded, "/m/%FF.wav");
            let back = tauri::Url::parse(&format!("file://{encoded}")).expect("a valid URI").to_file_path();
            assert_eq!(back.as_deref(), Ok(raw));
        }
        assert_eq!(uri_path(Path::new("relative/x.wav")), None);
    }
}

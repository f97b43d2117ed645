//! Stemroom desktop app: a thin Tauri 2 shell over the engine, library and
//! playback crates.
//!
//! Each command ([`commands`], one file per area) takes managed
//! [`state::AppState`], calls one library function and maps errors to
//! `{code, message}` ([`error::AppError`]). Progress reaches the
//! window through a `tauri::ipc::Channel` registered by `subscribe`.
//! TypeScript bindings for commands and types are generated from these Rust
//! signatures by tauri-specta into `ui/src/bindings.ts`
//! (`stemroom-app --export-bindings ui/src/bindings.ts`).

#![cfg_attr(not(debug_assertions), windows_subsystem = "windows")]

mod bindings;
mod commands;
mod dialog;
mod error;
mod state;

use std::sync::Arc;

use tauri::Manager;

/// Files a second launch handed over before this one's state was made
/// (its paths and working folder), opened once it is.
#[derive(Default)]
struct PendingOpens(std::sync::Mutex<Vec<(Vec<std::path::PathBuf>, Option<std::path::PathBuf>)>>);

fn main() {
    tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "info".into()))
        .with_writer(std::io::stderr)
        .init();
    let builder = bindings::specta_builder();
    // `args_os`: a file name that is not UTF-8 ("Open with" on any file)
    // made `args()` panic before the window opened.
    let mut args = std::env::args_os().skip(1);
    if let (Some(flag), Some(path)) = (args.next(), args.next()) {
        if flag == "--export-bindings" {
            if let Err(e) = bindings::export_bindings(&builder, std::path::Path::new(&path)) {
                eprintln!("error: cannot export bindings: {e}");
                std::process::exit(1);
            }
            return;
        }
    }
    let result = tauri::Builder::default()
        // First, so a second launch hands over its files and quits before
        // anything else starts.
        .plugin(tauri_plugin_single_instance::init(|app, argv, cwd| {
            if let Some(window) = app.get_webview_window("main") {
                let _ = window.unminimize();
                let _ = window.set_focus();
            }
            // (The plugin hands the arguments over as lossy UTF-8: a name
            // that is not UTF-8 does not exist here and is said so.)
            let paths: Vec<std::path::PathBuf> = argv.into_iter().skip(1).map(std::path::PathBuf::from).collect();
            let cwd = Some(std::path::PathBuf::from(cwd)).filter(|d| d.is_absolute());
            // Under the pending list's lock, which `setup` holds while it
            // makes the state: files opened while the app still starts
            // wait there for it, none lost between the two.
            let Some(pending) = app.try_state::<PendingOpens>() else { return };
            let mut waiting = pending.0.lock().unwrap_or_else(|p| p.into_inner());
            match app.try_state::<Arc<state::AppState>>() {
                Some(state) => commands::queue::open_with(state.inner().clone(), paths, cwd.as_deref()),
                None => waiting.push((paths, cwd)),
            }
        }))
        .manage(PendingOpens::default())
        .plugin(tauri_plugin_opener::init())
        // Files dropped on the window, as the runtime saw them: the paths the
        // page may then ask to add (it names no others; see state::Grants).
        .on_webview_event(|webview, event| {
            if let tauri::WebviewEvent::DragDrop(dropped) = event {
                grant_dropped(webview, dropped);
            }
        })
        .on_window_event(|window, event| {
            if let tauri::WindowEvent::DragDrop(dropped) = event {
                grant_dropped(window, dropped);
            }
        })
        // A reload of the window (its menu, F5) starts a page that knows
        // nothing of what the last one opened: that goes (see
        // AppState::page_loaded).
        .on_page_load(|webview, payload| {
            if payload.event() != tauri::webview::PageLoadEvent::Started || webview.label() != "main" {
                return;
            }
            if let Some(state) = webview.try_state::<Arc<state::AppState>>() {
                let state = state.inner().clone();
                tauri::async_runtime::spawn_blocking(move || state.page_loaded());
            }
        })
        .invoke_handler(builder.invoke_handler())
        // Link thumbnails kept beside the queue, by job id (`thumb://localhost/<id>`;
        // the CSP allows no web images).
        // Answered from a blocking-pool thread: WebKitGTK calls a scheme's
        // handler on the window's main loop, and the file read there (up to
        // 2 MiB per queue row, a data folder on a slow or network disk)
        // held the whole window.
        .register_asynchronous_uri_scheme_protocol("thumb", |ctx, request, responder| {
            let app = ctx.app_handle().clone();
            let path = request.uri().path().to_string();
            tauri::async_runtime::spawn_blocking(move || responder.respond(thumbnail_response(&app, &path)));
        })
        .setup(move |app| {
            builder.mount_events(app);
            let data_dir = match std::env::var_os("STEMROOM_DATA_DIR") {
                Some(d) => std::path::PathBuf::from(d),
                None => app.path().app_data_dir()?,
            };
            match state::AppState::open(&data_dir) {
                Ok(state) => {
                    let state = Arc::new(state);
                    let pending = app.state::<PendingOpens>();
                    let mut waiting = pending.0.lock().unwrap_or_else(|p| p.into_inner());
                    app.manage(state.clone());
                    let paths = std::env::args_os().skip(1).map(std::path::PathBuf::from).collect();
                    commands::queue::open_with(state.clone(), paths, None);
                    // Second launches while this one started, in order.
                    for (paths, cwd) in waiting.drain(..) {
                        commands::queue::open_with(state.clone(), paths, cwd.as_deref());
                    }
                    Ok(())
                }
                Err(e) => {
                    // Tauri panics on a setup error; say it plainly and leave.
                    eprintln!("error: {e}");
                    rfd::MessageDialog::new()
                        .set_title("Stemroom")
                        .set_description(e.to_string())
                        .set_level(rfd::MessageLevel::Error)
                        .show();
                    std::process::exit(1);
                }
            }
        })
        .build(tauri::generate_context!());
    match result {
        // At the exit (the window closed, Quit, or SIGTERM, SIGHUP, SIGINT:
        // `exit_on_signals`), running jobs go back to the queue with their
        // checkpoints, a cancel not yet reached holds, and link downloads'
        // process groups end. After a crash the next start does the same
        // for the jobs (AppState::open recovers them under the instance
        // lock, counting the crash; Worker::new removes half-written
        // folders).
        Ok(app) => app.run(|handle, event| match event {
            tauri::RunEvent::Ready => exit_on_signals(handle.clone()),
            tauri::RunEvent::Exit => {
                if let Some(state) = handle.try_state::<Arc<state::AppState>>() {
                    // The open song stops sounding first: the window is
                    // gone, and what follows may take seconds.
                    if let Some(song) = state.song.lock().as_ref() {
                        song.pause();
                    }
                    state.worker.leave();
                    // An export stops at its next block and removes what it
                    // wrote (hidden part files, a zip's scratch folder, an
                    // older export set aside for a Replace goes back); the
                    // process ends right after this, so it is waited for
                    // (a few seconds at most). Downloads of models and
                    // tools stop too (their next start resumes them).
                    for slot in [&state.export, &state.model_fetch, &state.gpu_install, &state.tools_install] {
                        slot.cancel();
                    }
                    if !state.export.wait_idle(std::time::Duration::from_secs(3)) {
                        tracing::warn!(
                            "the export did not stop within 3 s: its part files stay until the next export there"
                        );
                    }
                }
                stemroom_library::link::kill_running();
            }
            _ => {}
        }),
        Err(e) => fail_to_start(e),
    }
}

/// End the app as Quit does (so [`tauri::RunEvent::Exit`] runs) on SIGTERM
/// (a logout, `kill`, systemd), SIGHUP (its terminal closed) and SIGINT
/// (Ctrl-C in a terminal). Without this they ended the process with jobs
/// marked running (counted as crashes at the next start) and yt-dlp's
/// helpers (ffmpeg, deno) left running.
fn exit_on_signals(handle: tauri::AppHandle) {
    tauri::async_runtime::spawn(async move {
        use tokio::signal::unix::{signal, SignalKind};
        // Started under `nohup`: its terminal closing does not quit it.
        let (Ok(mut term), Ok(mut hup), Ok(mut int)) = stemroom_engine::signals::installing_handlers(|| {
            (signal(SignalKind::terminate()), signal(SignalKind::hangup()), signal(SignalKind::interrupt()))
        }) else {
            tracing::warn!("cannot listen for signals: a kill ends the app without putting its jobs back");
            return;
        };
        let mut asked = false;
        loop {
            tokio::select! {
                _ = term.recv() => tracing::info!("SIGTERM: quitting"),
                _ = hup.recv() => tracing::info!("SIGHUP: quitting"),
                _ = int.recv() => tracing::info!("SIGINT: quitting"),
            }
            if asked {
                // A second signal while the exit hangs: now, as a
                // signal's default would (tokio keeps its handlers).
                stemroom_library::link::kill_running();
                std::process::exit(130);
            }
            asked = true;
            handle.exit(0);
        }
    });
}

/// The app could not start: say why and leave (or start over once, see below).
fn fail_to_start(e: tauri::Error) {
    // A launch just as the previous instance quits finds its D-Bus name
    // still taken and nobody to answer: start over once, a moment later
    // (the name is free by then, or a live instance answers).
    if e.to_string().contains("single-instance") && std::env::var_os(RELAUNCHED).is_none() {
        tracing::warn!("{e}; starting again");
        std::thread::sleep(std::time::Duration::from_millis(1500));
        relaunch();
    }
    eprintln!("error: Stemroom could not start: {e}");
    std::process::exit(1);
}

/// Grant the paths of a drop (the webview's or the window's report of it)
/// to the page's `add_paths` (see `state::Grants`).
fn grant_dropped<M: Manager<tauri::Wry>>(on: &M, dropped: &tauri::DragDropEvent) {
    if let tauri::DragDropEvent::Drop { paths, .. } = dropped {
        if let Some(state) = on.try_state::<Arc<state::AppState>>() {
            state.grants.grant(paths.iter().cloned());
        }
    }
}

/// Set on the one relaunch [`main`] does after a failed hand-over.
const RELAUNCHED: &str = "STEMROOM_RELAUNCHED";

/// Replace this process with a fresh start of the same executable and
/// arguments (returns only when that cannot be done).
fn relaunch() {
    use std::os::unix::process::CommandExt;
    let Ok(exe) = std::env::current_exe() else { return };
    let err = std::process::Command::new(exe).args(std::env::args_os().skip(1)).env(RELAUNCHED, "1").exec();
    eprintln!("error: cannot start Stemroom again: {err}");
}

/// The `thumb` scheme's answer for `path` (`/<job id>`): the kept image with
/// its type, or 404 for anything else (no other path is ever read).
fn thumbnail_response(app: &tauri::AppHandle, path: &str) -> tauri::http::Response<Vec<u8>> {
    let found = path
        .strip_prefix('/')
        .filter(|id| !id.is_empty() && id.len() <= 10 && id.bytes().all(|b| b.is_ascii_digit()))
        .and_then(|id| id.parse::<stemroom_library::queue::JobId>().ok())
        .zip(app.try_state::<Arc<state::AppState>>())
        .and_then(|(id, state)| stemroom_library::link::thumbnail::read(state.queue.path(), id));
    let response = tauri::http::Response::builder().header("Cache-Control", "no-cache");
    let built = match found {
        Some((bytes, kind)) => response.status(200).header("Content-Type", kind).body(bytes),
        None => response.status(404).body(Vec::new()),
    };
    built.unwrap_or_else(|_| tauri::http::Response::new(Vec::new()))
}

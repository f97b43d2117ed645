//! Tauri's build step. The manifest is at the repository root, so point it
//! at the capabilities and permissions kept in src-tauri/.
//!
//! Every app command is listed in [`COMMANDS`]: Tauri then generates an
//! `allow-<command>`/`deny-<command>` permission for each and, because the
//! app has a manifest, refuses any command a capability does not grant
//! (without one, every app command would be open to every window). The main
//! window gets them through the `main-window` set in
//! `src-tauri/permissions/main-window.toml`; `scripts/check-permissions.sh`
//! checks that this list, that set and the generated bindings name the same
//! commands.

/// The commands `bindings::specta_builder` registers, in its order.
const COMMANDS: &[&str] = &[
    "app_info",
    "list_queue",
    "list_library",
    "add_paths",
    "add_links",
    "pick_files",
    "pick_library_dir",
    "choose_program",
    "cancel_job",
    "retry_job",
    "remove_job",
    "reorder_queue",
    "get_settings",
    "save_settings",
    "open_folder",
    "fetch_model",
    "fetch_model_from_file",
    "cancel_model_fetch",
    "remove_model",
    "install_links",
    "install_links_from_folder",
    "cancel_links_install",
    "gpu_support",
    "install_gpu_support",
    "cancel_gpu_install",
    "install_runtime",
    "subscribe",
    "open_song",
    "close_song",
    "song_peaks",
    "song_stream_done",
    "player_play",
    "player_pause",
    "player_seek",
    "player_set_loop",
    "player_set_controls",
    "pick_export_dir",
    "export_song",
    "cancel_export",
    "drag_out",
    "server_status",
    "start_server",
    "stop_server",
];

fn main() {
    println!("cargo:rerun-if-changed=src-tauri/permissions");
    let manifest =
        tauri_build::AppManifest::new().commands(COMMANDS).permissions_path_pattern("./src-tauri/permissions/**/*");
    let attrs = tauri_build::Attributes::new()
        .capabilities_path_pattern("./src-tauri/capabilities/**/*")
        .app_manifest(manifest);
    if let Err(e) = tauri_build::try_build(attrs) {
        panic!("tauri build step failed: {e:#}");
    }
}

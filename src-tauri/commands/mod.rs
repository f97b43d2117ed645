//! The commands the window calls, by area. Each is a few lines: take the
//! state, call one library function, map the error.

pub mod drag;
pub mod export;
pub mod library;
pub mod queue;
pub mod server;
pub mod settings;
pub mod song;

use std::sync::Arc;

use tauri::State;

use crate::state::AppState;

/// The managed state every command takes.
pub type S<'a> = State<'a, Arc<AppState>>;

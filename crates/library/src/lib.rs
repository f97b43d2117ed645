//! The user's songs: the persistent job queue, the library of finished songs,
//! the workers that separate queued songs with the engine, and how songs
//! arrive (files, folders, links).
//!
//! Layout:
//! - [`queue`]: the SQLite database: schema and migrations, jobs, settings,
//!   measured segment times.
//! - [`song`]: song folders (`stemroom.json`, partial folders, publishing).
//! - [`lock`]: one app instance per data folder.
//! - [`worker`]: threads running queued jobs through
//!   [`stemroom_engine::job::separate_file`] with progress and cancellation.
//! - [`intake`]: files, folders and links dropped on the app become jobs.
//! - [`link`]: songs from links through yt-dlp (locate, probe, download,
//!   classify errors).
//! - [`error`]: this layer's error type.
//!
//! Nothing here knows of audio devices or windows.

pub mod error;
pub mod intake;
pub mod link;
pub mod lock;
pub mod queue;
pub mod song;
pub mod worker;

pub use error::Error;

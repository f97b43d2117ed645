//! Stemroom's separation engine: decode a song, split it into stems with
//! Demucs v4 (htdemucs) running in ONNX Runtime, and write the stems.
//!
//! The crate knows nothing of terminals or windows: front ends (the `stemroom`
//! CLI, the desktop app) drive it through [`job::separate_file`] and observe it
//! through a [`progress::Listener`].
//!
//! Layout of the work:
//! - [`model`]: the model manifest (`models/manifest.json`) and model files.
//! - [`runtime`]: loading ONNX Runtime and opening a session on a device.
//! - [`dsp`]: STFT/iSTFT as Demucs computes them, the overlap-add weights.
//! - [`audio`]: decoding (symphonia), resampling (rubato), encoding.
//! - [`separate`]: the Demucs algorithm around the network (`apply.py`).
//! - [`job`]: one file in, stems out, atomically.
//! - [`queue`]: the persistent job queue, library index and settings (SQLite).
//! - [`library`]: song folders with stems and metadata.
//! - [`worker`]: threads that run queued jobs with progress and cancellation.
//! - [`link`]: songs from links (yt-dlp).
//! - [`mixer`], [`peaks`], [`export`], `player`: the stem player's mix, waveforms,
//!   exports and audio output.

pub mod audio;
pub mod dsp;
pub mod error;
pub mod export;
pub mod intake;
pub mod job;
pub mod library;
pub mod link;
pub mod mixer;
pub mod model;
pub mod paths;
pub mod peaks;
#[cfg(feature = "playback")]
pub mod player;
pub mod progress;
pub mod queue;
pub mod runtime;
pub mod separate;
pub mod worker;

pub use error::{Error, ErrorCode};

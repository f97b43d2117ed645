//! Stemroom's separation engine: decode a song, split it into stems with
//! Demucs v4 (htdemucs) running in ONNX Runtime, and write the stems.
//!
//! The crate knows nothing of terminals, windows, databases or audio devices:
//! front ends (the `stemroom` CLI, the desktop app, the library's workers)
//! drive it through [`job::separate_file`] and observe it through a
//! [`progress::Listener`].
//!
//! Layout, bottom up:
//! - [`units`]: device and provider identifiers shared by every layer.
//! - [`error`], [`progress`]: the error type with stable codes; progress
//!   events and cancellation.
//! - [`paths`], [`names`], [`files`]: where things live, safe file names,
//!   temporary outputs removed unless published.
//! - [`dsp`]: STFT/iSTFT as Demucs computes them, the overlap-add weights.
//! - [`audio`]: decoding (symphonia), resampling (rubato), encoding (one file
//!   per format).
//! - [`model`]: the model manifest (`models/manifest.json`), finding,
//!   verifying and fetching model files.
//! - [`runtime`]: loading ONNX Runtime, the CPU arena, the session.
//! - [`separate`]: the Demucs algorithm around the network (`apply.py`).
//! - [`job`]: one file in, stems out, atomically.

pub mod analysis;
pub mod audio;
pub mod download;
pub mod dsp;
pub mod error;
pub mod files;
pub mod job;
pub mod model;
pub mod names;
pub mod paths;
pub mod progress;
pub mod runtime;
pub mod separate;
pub mod signals;
pub mod units;

pub use error::{Error, ErrorCode};

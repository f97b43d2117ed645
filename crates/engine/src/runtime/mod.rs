//! Loading ONNX Runtime and running the network on a device.
//!
//! ONNX Runtime is loaded at run time (the `ort` crate's `load-dynamic`), from
//! the first of: an explicit path, `$ORT_DYLIB_PATH`, next to the executable
//! (also `lib/` beside it), for `--device cuda|auto` a GPU build in the
//! per-user cache (`<cache>/onnxruntime-gpu-1.31.1/`, from the PyPI wheel
//! `onnxruntime-gpu==1.31.1`), the installed package's CPU build
//! (`/usr/lib/stemroom/`, [`crate::paths::package_lib_dir`]), the CPU build
//! in the cache (`<cache>/onnxruntime-1.31.1/`).

mod arena;
pub mod gpu;
pub mod install;
mod library;
mod session;

use std::path::{Path, PathBuf};

use serde::Serialize;

pub use library::{cuda_compiled_in, find_library, library_candidates, load_failure, loaded_library};
pub use session::OrtNetwork;

use crate::units::Device;

/// File name of the ONNX Runtime library this build is made for (API 31).
pub const ORT_LIBRARY_FILE: &str = "libonnxruntime.so.1.31.1";
/// Cache sub-directory holding the CPU build of ONNX Runtime.
pub const ORT_CPU_DIR: &str = "onnxruntime-1.31.1";
/// Cache sub-directory holding the GPU (CUDA) build of ONNX Runtime.
pub const ORT_GPU_DIR: &str = "onnxruntime-gpu-1.31.1";

/// Errors loading ONNX Runtime or running the network.
#[derive(Debug, thiserror::Error)]
pub enum RuntimeError {
    #[error(
        "ONNX Runtime library {file} not found (looked in: {searched}).\n  Install it with \
         `stemroom runtime fetch` (or in the app's Settings), or set ORT_DYLIB_PATH to its path"
    )]
    LibraryNotFound { file: String, searched: String },
    #[error("cannot load ONNX Runtime from {path}: {reason}")]
    Load { path: PathBuf, reason: String },
    #[error("device {device} is not available: {reason}")]
    DeviceUnavailable { device: String, reason: String },
    #[error("cannot open model {path}: {reason}")]
    Session { path: PathBuf, reason: String },
    #[error("model interface mismatch: {0}")]
    Interface(String),
}

/// How to load and run ONNX Runtime.
#[derive(Debug, Clone, Default)]
pub struct RuntimeOptions {
    /// Explicit path of the ONNX Runtime library (overrides the search).
    pub library: Option<PathBuf>,
    /// Requested device.
    pub device: Device,
    /// Intra-op threads; `None` means all available cores.
    pub threads: Option<usize>,
}

/// Whether ONNX Runtime can be found, for front ends.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[cfg_attr(feature = "specta", derive(specta::Type))]
#[serde(rename_all = "camelCase")]
pub struct RuntimeStatus {
    pub found: bool,
    /// The library that is (or would be) loaded.
    pub path: Option<String>,
    /// Why it cannot be used, in plain words.
    pub problem: Option<String>,
}

/// Find the ONNX Runtime library as a run on `device` would (see
/// [`find_library`]); reports the one already loaded when there is one.
/// A library found but that failed to load in this process is reported
/// found, with the failure as its problem and what to do (the process
/// loads ONNX Runtime once: it must be started again).
pub fn status(explicit: Option<&Path>, device: Device) -> RuntimeStatus {
    if let Some(why) = load_failure() {
        return RuntimeStatus {
            found: true,
            path: None,
            problem: Some(format!(
                "{why}. Separations wait: install ONNX Runtime again if it is damaged, then start Stemroom again."
            )),
        };
    }
    if let Some(p) = loaded_library() {
        return RuntimeStatus { found: true, path: Some(p.to_string_lossy().into_owned()), problem: None };
    }
    match find_library(explicit, device) {
        Ok(p) => RuntimeStatus { found: true, path: Some(p.to_string_lossy().into_owned()), problem: None },
        Err(e) => RuntimeStatus { found: false, path: None, problem: Some(e.to_string()) },
    }
}

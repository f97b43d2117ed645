//! Finding and loading the ONNX Runtime library, once per process.

use std::path::{Path, PathBuf};
use std::sync::OnceLock;

use ort::ep::{ExecutionProvider, CUDA};

use super::{RuntimeError, RuntimeOptions, ORT_CPU_DIR, ORT_GPU_DIR, ORT_LIBRARY_FILE};
use crate::units::Device;

/// Candidate library paths in search order (see the module docs).
pub fn library_candidates(explicit: Option<&Path>, device: Device) -> Vec<PathBuf> {
    // Absolute: `ort` resolves a relative path against the program's folder
    // first, so the file checked here and the one loaded could differ.
    let absolute = |p: PathBuf| std::path::absolute(&p).unwrap_or(p);
    if let Some(p) = explicit {
        return vec![absolute(p.to_path_buf())];
    }
    let mut out = Vec::new();
    if let Some(p) = std::env::var_os("ORT_DYLIB_PATH").filter(|s| !s.is_empty()) {
        let p = absolute(PathBuf::from(p));
        static SAID: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(false);
        if !p.is_file() && !SAID.swap(true, std::sync::atomic::Ordering::Relaxed) {
            tracing::warn!("ORT_DYLIB_PATH names {}, which is not a file: looking elsewhere", p.display());
        }
        out.push(p);
    }
    let mut dirs = Vec::new();
    if let Some(exe) = crate::paths::exe_dir() {
        dirs.push(exe.clone());
        dirs.push(exe.join("lib"));
    }
    if let Some(cache) = crate::paths::cache_dir() {
        if device != Device::Cpu {
            dirs.push(cache.join(ORT_GPU_DIR));
        }
    }
    // The CPU build the installed package ships (/usr/lib/stemroom).
    dirs.extend(crate::paths::package_lib_dir());
    if let Some(cache) = crate::paths::cache_dir() {
        dirs.push(cache.join(ORT_CPU_DIR));
    }
    out.extend(dirs.into_iter().map(|d| d.join(ORT_LIBRARY_FILE)));
    out
}

/// Find the ONNX Runtime library.
///
/// # Errors
/// [`RuntimeError::LibraryNotFound`] listing every place searched.
pub fn find_library(explicit: Option<&Path>, device: Device) -> Result<PathBuf, RuntimeError> {
    let candidates = library_candidates(explicit, device);
    // A library that an install's stamp says was cut short is passed over
    // (loading it would crash the process, SIGBUS).
    let intact = |p: &PathBuf| {
        let ok = p
            .parent()
            .zip(p.file_name())
            .is_none_or(|(dir, name)| super::install::intact(dir, &name.to_string_lossy()));
        if !ok {
            tracing::warn!("{} is damaged (not the size it was installed at): install it again", p.display());
        }
        ok
    };
    candidates.iter().find(|p| p.is_file() && intact(p)).cloned().ok_or_else(|| RuntimeError::LibraryNotFound {
        file: ORT_LIBRARY_FILE.to_string(),
        searched: candidates.iter().map(|p| p.display().to_string()).collect::<Vec<_>>().join(", "),
    })
}

/// Make glibc return large freed blocks to the system.
///
/// glibc raises its mmap threshold dynamically after large frees, after which
/// ONNX Runtime's many multi-megabyte activation buffers come from the heap
/// and stay resident between segments. A fixed 1 MiB threshold keeps them in
/// their own mappings (measured: peak RSS 2.79 -> 2.54 GB per htdemucs run, same
/// speed). Process-wide; called once when ONNX Runtime is loaded.
fn tune_allocator() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: mallopt only changes allocator parameters; it is safe to call at any time.
    unsafe {
        libc::mallopt(libc::M_MMAP_THRESHOLD, 1 << 20);
    }
}

pub(super) struct LoadedRuntime {
    pub(super) env: ort::environment::Environment,
    pub(super) path: PathBuf,
}

/// The library loaded, or the one that failed to load and why: a process
/// loads one ONNX Runtime at most, and a failed load is not tried again.
static RUNTIME: OnceLock<Result<LoadedRuntime, (PathBuf, String)>> = OnceLock::new();

/// Load ONNX Runtime once per process and return its environment and path.
///
/// A process can hold only one ONNX Runtime library; later calls return the
/// first one whatever they ask for.
///
/// # Errors
/// [`RuntimeError::LibraryNotFound`] or [`RuntimeError::Load`] (the same
/// failure, naming its library, for every call after a failed load).
pub(super) fn runtime(opts: &RuntimeOptions) -> Result<&'static LoadedRuntime, RuntimeError> {
    let path = match RUNTIME.get() {
        Some(_) => None,
        None => Some(find_library(opts.library.as_deref(), opts.device)?),
    };
    let loaded = RUNTIME.get_or_init(|| {
        tune_allocator();
        let path = path.clone().unwrap_or_default();
        let builder = ort::init_from(&path).map_err(|e| (path.clone(), e.to_string()))?;
        let env = builder.with_name("stemroom").build().map_err(|e| (path.clone(), e.to_string()))?;
        Ok(LoadedRuntime { env, path })
    });
    loaded.as_ref().map_err(|(path, reason)| RuntimeError::Load {
        path: path.clone(),
        reason: format!("{reason} (a process loads ONNX Runtime once: start it again to load another)"),
    })
}

/// Why ONNX Runtime failed to load in this process ("ONNX Runtime at PATH
/// could not be loaded: REASON"), or `None` when it loaded or was not
/// tried yet. A failed load is never tried again (see [`RUNTIME`]): work
/// that needs the network must wait for the next start of the process.
pub fn load_failure() -> Option<String> {
    RUNTIME
        .get()
        .and_then(|r| r.as_ref().err())
        .map(|(path, reason)| format!("ONNX Runtime at {} could not be loaded: {reason}", path.display()))
}

/// Path of the ONNX Runtime library loaded in this process, if any.
pub fn loaded_library() -> Option<PathBuf> {
    RUNTIME.get().and_then(|r| r.as_ref().ok()).map(|r| r.path.clone())
}

/// Is the CUDA execution provider compiled into the loaded ONNX Runtime?
///
/// # Errors
/// [`RuntimeError`] if ONNX Runtime cannot be loaded.
pub fn cuda_compiled_in(opts: &RuntimeOptions) -> Result<bool, RuntimeError> {
    runtime(opts)?;
    <CUDA as ExecutionProvider>::is_available()
        .map_err(|e| RuntimeError::Load { path: loaded_library().unwrap_or_default(), reason: e.to_string() })
}

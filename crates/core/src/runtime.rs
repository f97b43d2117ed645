//! Loading ONNX Runtime and running the network on a device.
//!
//! ONNX Runtime is loaded at run time (the `ort` crate's `load-dynamic`), from
//! the first of: an explicit path, `$ORT_DYLIB_PATH`, next to the executable
//! (also `lib/` beside it), the per-user cache (`<cache>/onnxruntime-1.31.1/`).
//! For `--device cuda|auto`, a GPU build (`onnxruntime-gpu-1.31.1/`, from the
//! PyPI wheel `onnxruntime-gpu==1.31.1`) is preferred where present.

use std::ffi::{c_char, CStr};
use std::path::{Path, PathBuf};
use std::sync::{Mutex, OnceLock, PoisonError};

use ort::ep::{ExecutionProvider, CPU, CUDA};
use ort::session::{builder::GraphOptimizationLevel, Session};
use ort::value::TensorRef;
use serde::Serialize;

use crate::model::ModelInfo;
use crate::separate::Network;

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
        "ONNX Runtime library {file} not found (looked in: {searched}).\n  Install it with: \
         scripts/fetch-runtime.sh, or set ORT_DYLIB_PATH to its path"
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
    #[error("inference failed: {0}")]
    Inference(String),
}

/// Which device the caller asks for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, serde::Deserialize, Default)]
#[cfg_attr(feature = "specta", derive(specta::Type))]
#[serde(rename_all = "lowercase")]
pub enum Device {
    /// CUDA when it works, else CPU.
    #[default]
    Auto,
    /// CPU only.
    Cpu,
    /// CUDA only; an error if unavailable.
    Cuda,
}

impl std::str::FromStr for Device {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s.to_ascii_lowercase().as_str() {
            "auto" => Ok(Device::Auto),
            "cpu" => Ok(Device::Cpu),
            "cuda" | "gpu" => Ok(Device::Cuda),
            other => Err(format!("unknown device '{other}' (expected auto, cpu or cuda)")),
        }
    }
}

/// The execution provider that actually runs the network.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, serde::Deserialize)]
#[cfg_attr(feature = "specta", derive(specta::Type))]
#[serde(rename_all = "lowercase")]
pub enum Provider {
    /// ONNX Runtime's default CPU provider.
    Cpu,
    /// NVIDIA CUDA.
    Cuda,
}

impl std::fmt::Display for Provider {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Provider::Cpu => "cpu",
            Provider::Cuda => "cuda",
        })
    }
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

/// Candidate library paths in search order (see the module docs).
pub fn library_candidates(explicit: Option<&Path>, device: Device) -> Vec<PathBuf> {
    if let Some(p) = explicit {
        return vec![p.to_path_buf()];
    }
    let mut out = Vec::new();
    if let Some(p) = std::env::var_os("ORT_DYLIB_PATH").filter(|s| !s.is_empty()) {
        out.push(PathBuf::from(p));
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
    candidates.iter().find(|p| p.is_file()).cloned().ok_or_else(|| RuntimeError::LibraryNotFound {
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

struct LoadedRuntime {
    env: ort::environment::Environment,
    path: PathBuf,
}

static RUNTIME: OnceLock<Result<LoadedRuntime, String>> = OnceLock::new();

/// Load ONNX Runtime once per process and return its environment and path.
///
/// A process can hold only one ONNX Runtime library; later calls return the
/// first one whatever they ask for.
///
/// # Errors
/// [`RuntimeError::LibraryNotFound`] or [`RuntimeError::Load`].
fn runtime(opts: &RuntimeOptions) -> Result<&'static LoadedRuntime, RuntimeError> {
    let path = match RUNTIME.get() {
        Some(_) => None,
        None => Some(find_library(opts.library.as_deref(), opts.device)?),
    };
    let loaded = RUNTIME.get_or_init(|| {
        tune_allocator();
        let path = path.clone().unwrap_or_default();
        let builder = ort::init_from(&path).map_err(|e| format!("{}: {e}", path.display()))?;
        let env = builder.with_name("stemroom").build().map_err(|e| format!("{}: {e}", path.display()))?;
        Ok(LoadedRuntime { env, path })
    });
    loaded.as_ref().map_err(|reason| RuntimeError::Load { path: path.unwrap_or_default(), reason: reason.clone() })
}

/// The CPU memory arena shared by the ONNX Runtime sessions open in this
/// process, registered while at least one is open.
///
/// Without an arena every activation buffer of every network run is a fresh
/// mapping the kernel must fault in and zero: on htdemucs (2 cores, 60 s of
/// music) that was ~17 s of system time out of ~97 s of CPU. ONNX Runtime's own
/// arena keeps them, but its default power-of-two growth raised peak RSS to
/// 3.4 GB. Registered in the environment with `arena_extend_strategy =
/// kSameAsRequested` (onnxruntime `OrtArenaCfg`, `onnxruntime_c_api.h`) each
/// region is exactly what a run asked for: peak RSS 2.44 vs 2.40 GB, system time
/// 4.5 -> 1.6 s per 3 runs, measured with the same library from Python.
///
/// The arena gives nothing back while it lives, so it is unregistered when the
/// last session closes: a desktop app that finished a job does not keep 2 GB.
struct CpuArena {
    env: &'static ort::environment::Environment,
}

/// Sessions holding [`CpuArena`].
static CPU_ARENA_USERS: Mutex<usize> = Mutex::new(0);

/// `OrtStatus` to `Result`, releasing the status.
fn ort_status(status: ort::sys::OrtStatusPtr) -> Result<(), String> {
    if status.0.is_null() {
        return Ok(());
    }
    let api = ort::api();
    // SAFETY: a non-null status from the ONNX Runtime API; its message is a
    // NUL-terminated string owned by the status, copied before the release.
    unsafe {
        let msg = CStr::from_ptr((api.GetErrorMessage)(status.0) as *const c_char).to_string_lossy().into_owned();
        (api.ReleaseStatus)(status.0);
        Err(msg)
    }
}

fn cpu_arena_info() -> Result<ort::memory::MemoryInfo<'static>, String> {
    use ort::memory::{AllocationDevice, AllocatorType, MemoryInfo, MemoryType};
    MemoryInfo::new(AllocationDevice::CPU, 0, AllocatorType::Arena, MemoryType::Default).map_err(|e| e.to_string())
}

impl CpuArena {
    /// Register the arena if no open session holds it yet.
    fn acquire(env: &'static ort::environment::Environment) -> Result<CpuArena, String> {
        use ort::AsPointer;
        let mut users = CPU_ARENA_USERS.lock().unwrap_or_else(PoisonError::into_inner);
        if *users == 0 {
            let api = ort::api();
            let info = cpu_arena_info()?;
            let keys = [c"arena_extend_strategy".as_ptr()];
            let values = [1usize]; // kSameAsRequested
            let mut cfg: *mut ort::sys::OrtArenaCfg = std::ptr::null_mut();
            // SAFETY: keys/values are arrays of the given length; `cfg` is
            // released below; env and info outlive the calls.
            unsafe {
                ort_status((api.CreateArenaCfgV2)(keys.as_ptr(), values.as_ptr(), keys.len(), &mut cfg))?;
                let registered = ort_status((api.CreateAndRegisterAllocator)(env.ptr().cast_mut(), info.ptr(), cfg));
                (api.ReleaseArenaCfg)(cfg);
                registered?;
            }
        }
        *users += 1;
        Ok(CpuArena { env })
    }
}

impl Drop for CpuArena {
    fn drop(&mut self) {
        use ort::AsPointer;
        let mut users = CPU_ARENA_USERS.lock().unwrap_or_else(PoisonError::into_inner);
        *users -= 1;
        if *users == 0 {
            // Sessions hold their own reference to the arena; it is freed
            // when the last of them is dropped.
            let result = cpu_arena_info().and_then(|info| {
                // SAFETY: env is the live process environment, info a valid memory info.
                ort_status(unsafe { (ort::api().UnregisterAllocator)(self.env.ptr().cast_mut(), info.ptr()) })
            });
            if let Err(e) = result {
                tracing::warn!("cannot release the CPU arena: {e}");
            }
        }
    }
}

/// Path of the ONNX Runtime library loaded in this process, if any.
pub fn loaded_library() -> Option<PathBuf> {
    RUNTIME.get().and_then(|r| r.as_ref().ok()).map(|r| r.path.clone())
}

/// The htdemucs network in an ONNX Runtime session.
pub struct OrtNetwork {
    session: Session,
    provider: Provider,
    info: ModelInfo,
    /// Dropped after `session` (declaration order).
    _arena: Option<CpuArena>,
}

impl std::fmt::Debug for OrtNetwork {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("OrtNetwork").field("provider", &self.provider).field("model", &self.info.id).finish()
    }
}

impl OrtNetwork {
    /// Open `model_path` (described by `info`) on the requested device.
    ///
    /// `Device::Auto` tries CUDA and falls back to CPU; [`OrtNetwork::provider`]
    /// tells which one runs. CPU tensors come from a shared arena (`CpuArena` in this file)
    /// (exact-size growth) instead of the CPU provider's own arena, whose
    /// power-of-two growth measured 3.6 GB peak RSS on htdemucs (2 cores);
    /// memory-pattern planning is off (4.1 GB); graph optimisation stops at
    /// level 2 (see below).
    ///
    /// # Errors
    /// [`RuntimeError`] when the library is missing, the device is unavailable
    /// (`Device::Cuda`), or the model does not have the manifest's interface.
    pub fn open(info: &ModelInfo, model_path: &Path, opts: &RuntimeOptions) -> Result<Self, RuntimeError> {
        let rt = runtime(opts)?;
        let session_err =
            |e: &dyn std::fmt::Display| RuntimeError::Session { path: model_path.to_path_buf(), reason: e.to_string() };
        let threads =
            opts.threads.unwrap_or_else(|| std::thread::available_parallelism().map(|n| n.get()).unwrap_or(1));
        let builder = Session::builder(&rt.env)
            .map_err(|e| session_err(&e))?
            .with_intra_threads(threads)
            .map_err(|e| session_err(&e))?
            // Memory pattern planning pre-allocates for the whole graph: +1.3 GB peak RSS here.
            .with_memory_pattern(false)
            .map_err(|e| session_err(&e))?
            // Level 3 adds the NCHWc layout transform (reorder copies around
            // every convolution): +120 MB peak RSS on htdemucs here, measured
            // with the same time per segment either way (2 cores, AVX-512).
            .with_optimization_level(GraphOptimizationLevel::Level2)
            .map_err(|e| session_err(&e))?
            // Denormals appear inside the network; flushing them made a segment
            // about 20% faster on a 2-core AVX machine, with no audible effect.
            .with_flush_to_zero()
            .map_err(|e| session_err(&e))?;
        let mut builder = builder.with_no_environment_execution_providers().map_err(|e| session_err(&e))?;
        let mut provider = Provider::Cpu;
        if opts.device != Device::Cpu {
            let cuda = CUDA::default().build().error_on_failure();
            match builder.with_execution_providers([cuda]) {
                Ok(b) => {
                    builder = b;
                    provider = Provider::Cuda;
                }
                Err(e) => {
                    let reason = e.to_string();
                    if opts.device == Device::Cuda {
                        return Err(RuntimeError::DeviceUnavailable { device: "cuda".into(), reason });
                    }
                    tracing::info!("CUDA unavailable, using CPU: {reason}");
                    builder = e.recover();
                }
            }
        }
        let cpu = CPU::default().with_arena_allocator(false).build();
        builder = builder.with_execution_providers([cpu]).map_err(|e| session_err(&e))?;
        let arena = match CpuArena::acquire(&rt.env) {
            Ok(arena) => {
                builder = builder.with_env_allocators().map_err(|e| session_err(&e))?;
                Some(arena)
            }
            Err(e) => {
                tracing::warn!("no shared CPU arena, every run allocates afresh: {e}");
                None
            }
        };
        let session = builder.commit_from_file(model_path).map_err(|e| session_err(&e))?;
        let net = OrtNetwork { session, provider, info: info.clone(), _arena: arena };
        net.check_interface()?;
        Ok(net)
    }

    /// The provider running this session.
    pub fn provider(&self) -> Provider {
        self.provider
    }

    fn check_interface(&self) -> Result<(), RuntimeError> {
        let ins: Vec<&str> = self.session.inputs().iter().map(|o| o.name()).collect();
        let outs: Vec<&str> = self.session.outputs().iter().map(|o| o.name()).collect();
        for want in [&self.info.inputs.mix, &self.info.inputs.spec] {
            if !ins.contains(&want.as_str()) {
                return Err(RuntimeError::Interface(format!("no input '{want}' (model has {ins:?})")));
            }
        }
        for want in [&self.info.outputs.spec, &self.info.outputs.wave] {
            if !outs.contains(&want.as_str()) {
                return Err(RuntimeError::Interface(format!("no output '{want}' (model has {outs:?})")));
            }
        }
        Ok(())
    }
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

impl Network for OrtNetwork {
    fn forward(&mut self, mix: &[f32], spec: &[f32], take: &mut dyn FnMut(&[f32], &[f32])) -> Result<(), RuntimeError> {
        let info = &self.info;
        let (s_n, c, l) = (info.sources.len(), info.channels, info.segment_frames);
        let (f, t) = (info.freq_bins(), info.spec_frames());
        let inf = |e: ort::Error| RuntimeError::Inference(e.to_string());
        let mix_t = TensorRef::from_array_view(([1usize, c, l], mix)).map_err(inf)?;
        let spec_t = TensorRef::from_array_view(([1usize, 2 * c, f, t], spec)).map_err(inf)?;
        let outputs = self
            .session
            .run(ort::inputs![info.inputs.mix.as_str() => mix_t, info.inputs.spec.as_str() => spec_t])
            .map_err(inf)?;
        let (_, zs) = outputs[info.outputs.spec.as_str()].try_extract_tensor::<f32>().map_err(inf)?;
        let (_, xt) = outputs[info.outputs.wave.as_str()].try_extract_tensor::<f32>().map_err(inf)?;
        let (want_zs, want_xt) = (s_n * 2 * c * f * t, s_n * c * l);
        if zs.len() != want_zs || xt.len() != want_xt {
            return Err(RuntimeError::Interface(format!(
                "output sizes {} and {}, expected {want_zs} and {want_xt}",
                zs.len(),
                xt.len()
            )));
        }
        take(zs, xt);
        Ok(())
    }
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
pub fn status(explicit: Option<&Path>, device: Device) -> RuntimeStatus {
    if let Some(p) = loaded_library() {
        return RuntimeStatus { found: true, path: Some(p.to_string_lossy().into_owned()), problem: None };
    }
    match find_library(explicit, device) {
        Ok(p) => RuntimeStatus { found: true, path: Some(p.to_string_lossy().into_owned()), problem: None },
        Err(e) => RuntimeStatus { found: false, path: None, problem: Some(e.to_string()) },
    }
}

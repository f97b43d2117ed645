//! What this machine offers for CUDA, and why CUDA is not used when it is
//! not: no NVIDIA driver, a driver too old for the CUDA 13 build of ONNX
//! Runtime, the GPU build or its CUDA/cuDNN libraries missing. Each reason
//! comes with the fix, in plain words.
//!
//! The facts are read without loading CUDA: the driver's version from
//! `/proc/driver/nvidia/version` (the kernel module's), GPU names and memory
//! from `nvidia-smi` when it is installed, libraries by file name in the GPU
//! runtime folder and the system's library folders. [`diagnose`] is a pure
//! function of those facts, so every answer is tested on any machine.

use std::path::{Path, PathBuf};

use serde::Serialize;

use super::ORT_GPU_DIR;
use crate::units::Device;

/// Oldest NVIDIA driver branch that runs CUDA 13 (NVIDIA's CUDA 13.0 release
/// notes, "CUDA Toolkit and corresponding driver versions": 580).
pub const MIN_DRIVER_MAJOR: u32 = 580;

/// The CUDA execution provider's library inside the GPU build.
pub const CUDA_PROVIDER_FILE: &str = "libonnxruntime_providers_cuda.so";

/// Libraries the CUDA execution provider of ONNX Runtime 1.31.1 (CUDA 13,
/// cuDNN 9) loads, by soname (the pinned `nvidia-cuda-runtime`,
/// `nvidia-cublas`, `nvidia-cufft`, `nvidia-curand` and `nvidia-cudnn-cu13`
/// wheels ship them, [`super::install::gpu_wheels`]).
pub const CUDA_LIBRARIES: &[&str] =
    &["libcudart.so.13", "libcublas.so.13", "libcublasLt.so.13", "libcufft.so.12", "libcurand.so.10", "libcudnn.so.9"];

/// The download GPU support costs, for messages (the sum of
/// [`super::install::gpu_wheels`]' sizes, checked by a test; unpacked
/// 2.5 GB, and while it installs the downloaded wheels and the unpacked
/// folder are on disk together, about 4 GB).
pub const INSTALL_SIZE: &str = "1.6 GB to download, 2.5 GB on disk (about 4 GB free while it installs)";

/// Libraries loaded by absolute path from the GPU runtime's folder before
/// the CUDA provider, so that its `DT_NEEDED` entries and ONNX Runtime's
/// run-time `dlopen`s resolve to them by soname (the dynamic linker reuses
/// a loaded object whose soname matches) without `LD_LIBRARY_PATH`. cuDNN's
/// sub-libraries too: cuDNN opens them by name when first needed, and an
/// `LD_LIBRARY_PATH` holding another cuDNN 9 would come before their
/// `$ORIGIN` run path, mixing versions (`CUDNN_STATUS_SUBLIBRARY_VERSION_MISMATCH`;
/// PyTorch preloads the whole set for the same reason, pytorch#188892).
/// The order is one that loads; [`preload`] retries what needs a later one.
pub const PRELOAD_LIBRARIES: &[&str] = &[
    "libcudart.so.13",
    "libnvJitLink.so.13",
    "libnvrtc.so.13",
    "libnvrtc-builtins.so.13.4",
    "libcublasLt.so.13",
    "libcublas.so.13",
    "libcurand.so.10",
    "libcufft.so.12",
    "libcudnn_graph.so.9",
    "libcudnn_engines_precompiled.so.9",
    "libcudnn_engines_runtime_compiled.so.9",
    "libcudnn_engines_tensor_ir.so.9",
    "libcudnn_heuristic.so.9",
    "libcudnn_ops.so.9",
    "libcudnn_cnn.so.9",
    "libcudnn_adv.so.9",
    "libcudnn_ext.so.9",
    "libcudnn.so.9",
];

/// What [`preload`] did.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct Preloaded {
    /// Libraries now loaded, by absolute path.
    pub loaded: Vec<PathBuf>,
    /// Libraries present that could not be loaded, with the loader's reason.
    pub failed: Vec<(PathBuf, String)>,
}

static PRELOADED: std::sync::OnceLock<Preloaded> = std::sync::OnceLock::new();

/// Load the [`PRELOAD_LIBRARIES`] present in `dir` (the GPU runtime's
/// folder), once per process; those absent are left to the system's
/// library path (a CUDA toolkit installed there). Libraries whose own
/// dependencies are not loaded yet are retried after the others.
pub fn preload(dir: &Path) -> &'static Preloaded {
    PRELOADED.get_or_init(|| load_libraries(dir))
}

/// [`preload`] without the once-per-process guard.
fn load_libraries(dir: &Path) -> Preloaded {
    // (A library its install's stamp says was cut short is not loaded: it
    // would crash the process; the system's copy, if any, is used.)
    let mut pending: Vec<PathBuf> = PRELOAD_LIBRARIES
        .iter()
        .filter(|l| super::install::intact(dir, l))
        .map(|l| dir.join(l))
        .filter(|p| p.is_file())
        .collect();
    let mut done = Preloaded::default();
    loop {
        let before = done.loaded.len();
        let mut failed = Vec::new();
        for path in pending.drain(..) {
            match dlopen_global(&path) {
                Ok(()) => done.loaded.push(path),
                Err(reason) => failed.push((path, reason)),
            }
        }
        if failed.is_empty() || done.loaded.len() == before {
            if !failed.is_empty() {
                tracing::warn!("GPU libraries that could not be loaded: {failed:?}");
            }
            done.failed = failed;
            return done;
        }
        pending = failed.into_iter().map(|(p, _)| p).collect();
    }
}

/// `dlopen(path, RTLD_NOW | RTLD_GLOBAL)`, never closed.
fn dlopen_global(path: &Path) -> Result<(), String> {
    use std::os::unix::ffi::OsStrExt;
    let c = std::ffi::CString::new(path.as_os_str().as_bytes()).map_err(|e| e.to_string())?;
    // SAFETY: a NUL-terminated path; the handle is deliberately leaked (the
    // library stays loaded for the process, as the CUDA provider expects).
    let handle = unsafe { libc::dlopen(c.as_ptr(), libc::RTLD_NOW | libc::RTLD_GLOBAL) };
    if handle.is_null() {
        // SAFETY: dlerror returns a thread-local message or null.
        let msg = unsafe { libc::dlerror() };
        let reason = if msg.is_null() {
            "unknown error".to_string()
        } else {
            // SAFETY: non-null dlerror strings are NUL-terminated.
            unsafe { std::ffi::CStr::from_ptr(msg) }.to_string_lossy().into_owned()
        };
        return Err(reason);
    }
    Ok(())
}

/// One GPU as `nvidia-smi` describes it.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[cfg_attr(feature = "specta", derive(specta::Type))]
pub struct GpuInfo {
    pub name: String,
    /// Memory in MiB.
    pub memory_mib: u32,
}

/// What was found on this machine.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct GpuFacts {
    /// The NVIDIA kernel driver's version (`580.95.05`), if loaded.
    pub driver_version: Option<String>,
    pub gpus: Vec<GpuInfo>,
    /// The GPU build of ONNX Runtime, when installed.
    #[serde(serialize_with = "crate::paths::lossy::option")]
    pub gpu_runtime: Option<PathBuf>,
    /// Whether the CUDA provider library sits beside it.
    pub cuda_provider: bool,
    /// CUDA/cuDNN libraries found nowhere ([`CUDA_LIBRARIES`]).
    pub missing_libraries: Vec<String>,
    /// A library a CUDA run would load before the GPU install's (the one
    /// `ORT_DYLIB_PATH` names, or one beside the program), without the CUDA
    /// provider beside it: a CPU build, which runs everything on the CPU.
    #[serde(serialize_with = "crate::paths::lossy::option")]
    pub other_runtime: Option<PathBuf>,
}

/// Why CUDA is not used, each with its fix.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[cfg_attr(feature = "specta", derive(specta::Type))]
#[serde(tag = "reason", rename_all = "snake_case")]
pub enum NoCuda {
    /// No NVIDIA driver is loaded (no NVIDIA GPU, or its driver is not installed).
    NoDriver,
    /// The driver predates CUDA 13.
    DriverTooOld { version: String },
    /// The GPU build of ONNX Runtime is not installed.
    RuntimeMissing,
    /// CUDA or cuDNN libraries are missing.
    LibrariesMissing { missing: Vec<String> },
    /// Another ONNX Runtime, without CUDA, comes first in the search
    /// ([`GpuFacts::other_runtime`]).
    OtherRuntime { path: String },
}

impl NoCuda {
    /// The reason and the fix, for a person.
    pub fn message(&self) -> String {
        match self {
            NoCuda::NoDriver => "No NVIDIA GPU driver is loaded (no NVIDIA GPU, or its driver is not installed). \
                 With an NVIDIA GPU, install its driver (580 or newer)."
                .into(),
            NoCuda::DriverTooOld { version } => format!(
                "The NVIDIA driver {version} is too old for CUDA 13. Update the driver to \
                 {MIN_DRIVER_MAJOR} or newer."
            ),
            NoCuda::RuntimeMissing => format!(
                "GPU support is not installed. Install it with Settings > Install GPU \
                 support, or `stemroom runtime fetch --gpu` ({INSTALL_SIZE})."
            ),
            NoCuda::LibrariesMissing { missing } => format!(
                "GPU support is incomplete ({} not found). Install it again with Settings > \
                 Install GPU support, or `stemroom runtime fetch --gpu`.",
                missing.join(", ")
            ),
            NoCuda::OtherRuntime { path } => format!(
                "ONNX Runtime {path} is loaded first (ORT_DYLIB_PATH, or beside the program), and it has no CUDA \
                 support. Unset ORT_DYLIB_PATH (or remove that file) to use GPU support."
            ),
        }
    }
}

/// Whether CUDA can run, from the facts: `Ok(())`, or the first reason it
/// cannot (driver, then runtime, then libraries).
///
/// # Errors
/// The [`NoCuda`] reason.
pub fn diagnose(facts: &GpuFacts) -> Result<(), NoCuda> {
    let Some(version) = &facts.driver_version else { return Err(NoCuda::NoDriver) };
    let major = version.split('.').next().and_then(|m| m.parse::<u32>().ok()).unwrap_or(0);
    if major < MIN_DRIVER_MAJOR {
        return Err(NoCuda::DriverTooOld { version: version.clone() });
    }
    if let Some(path) = &facts.other_runtime {
        return Err(NoCuda::OtherRuntime { path: path.display().to_string() });
    }
    if facts.gpu_runtime.is_none() || !facts.cuda_provider {
        return Err(NoCuda::RuntimeMissing);
    }
    if !facts.missing_libraries.is_empty() {
        return Err(NoCuda::LibrariesMissing { missing: facts.missing_libraries.clone() });
    }
    Ok(())
}

/// The device a run asked for `device` will most likely use: `auto` is
/// CUDA where [`diagnose`] finds nothing missing on this machine, else the
/// CPU (what a [`crate::units::Preset`] chooses its model for; the run
/// itself still falls back to the CPU should CUDA fail to start).
/// A library named for this process ([`assume_runtime_library`]) is the
/// one judged: a CPU build named with `--ort-lib` means the CPU, whatever
/// GPU runtime is installed.
pub fn likely_device(device: Device) -> Device {
    match device {
        Device::Auto if diagnose(&local_facts_for(ASSUMED_RUNTIME.get().map(PathBuf::as_path))).is_ok() => Device::Cuda,
        Device::Auto => Device::Cpu,
        d => d,
    }
}

/// The kernel driver's version from `/proc/driver/nvidia/version`'s first
/// line (`NVRM version: NVIDIA UNIX x86_64 Kernel Module  580.95.05  …`).
pub fn parse_driver_version(text: &str) -> Option<String> {
    let line = text.lines().next()?;
    let after = line.split("Kernel Module").nth(1).or_else(|| line.split("Open Kernel Module").nth(1))?;
    after.split_whitespace().find(|w| w.chars().next().is_some_and(|c| c.is_ascii_digit())).map(str::to_string)
}

/// GPUs from `nvidia-smi --query-gpu=name,memory.total --format=csv,noheader,nounits`.
pub fn parse_nvidia_smi(text: &str) -> Vec<GpuInfo> {
    text.lines()
        .filter_map(|l| {
            let (name, mem) = l.rsplit_once(',')?;
            Some(GpuInfo { name: name.trim().to_string(), memory_mib: mem.trim().parse().ok()? })
        })
        .collect()
}

/// Library folders searched for the CUDA libraries: the GPU runtime's own
/// folder, then the system's (`ld.so`'s defaults and the usual CUDA places).
fn library_dirs(gpu_runtime: Option<&Path>) -> Vec<PathBuf> {
    let mut dirs: Vec<PathBuf> = gpu_runtime.and_then(Path::parent).map(Path::to_path_buf).into_iter().collect();
    dirs.extend(
        ["/lib/x86_64-linux-gnu", "/usr/lib/x86_64-linux-gnu", "/lib64", "/usr/lib64", "/usr/local/cuda/lib64"]
            .iter()
            .map(PathBuf::from),
    );
    dirs
}

/// Read the facts of this machine (see the module docs), the GPUs'
/// names and memory from `nvidia-smi` included (for reports: it can take
/// seconds).
pub fn facts() -> GpuFacts {
    // nvidia-smi can hang on a GPU in a bad state: a few seconds at most.
    let gpus = crate::files::output_within(
        std::process::Command::new("nvidia-smi")
            .args(["--query-gpu=name,memory.total", "--format=csv,noheader,nounits"]),
        std::time::Duration::from_secs(10),
        1 << 16,
    )
    .ok()
    .filter(|o| o.status.success())
    .map(|o| parse_nvidia_smi(&String::from_utf8_lossy(&o.stdout)))
    .unwrap_or_default();
    GpuFacts { gpus, ..local_facts() }
}

/// [`facts`] without the GPU list: what [`diagnose`] reads (files only,
/// no `nvidia-smi`, which takes 1 to 3 s without persistence mode and up
/// to its 10 s limit on a GPU in a bad state), for the choice every `auto`
/// run and every queued job makes.
pub fn local_facts() -> GpuFacts {
    local_facts_for(None)
}

/// The ONNX Runtime library this process was told to load (`--ort-lib`).
static ASSUMED_RUNTIME: std::sync::OnceLock<PathBuf> = std::sync::OnceLock::new();

/// Say that this process loads ONNX Runtime from `path` (a front end's
/// `--ort-lib`, given to every run it makes): [`likely_device`] then
/// judges that library, not the search's. The first call wins.
pub fn assume_runtime_library(path: &Path) {
    let _ = ASSUMED_RUNTIME.set(std::path::absolute(path).unwrap_or_else(|_| path.to_path_buf()));
}

/// [`local_facts`] for a run that loads `explicit` when given (the search's
/// first library otherwise, as [`super::library_candidates`]).
pub fn local_facts_for(explicit: Option<&Path>) -> GpuFacts {
    let driver_version =
        std::fs::read_to_string("/proc/driver/nvidia/version").ok().as_deref().and_then(parse_driver_version);
    // Each library there and as unpacked (a file cut short by a full disk
    // or a kill is not taken for an install: the runtime search skips it,
    // and so must this check, else CUDA reads as ready when it is not).
    let usable = intact_file;
    let gpu_dir = crate::paths::cache_dir().map(|c| c.join(ORT_GPU_DIR));
    let candidates = super::library_candidates(explicit, crate::units::Device::Cuda);
    let (gpu_runtime, other_runtime) = runtime_for_cuda(&candidates, gpu_dir.as_deref());
    let cuda_provider = gpu_runtime.as_deref().and_then(Path::parent).is_some_and(|d| usable(d, CUDA_PROVIDER_FILE));
    let dirs = library_dirs(gpu_runtime.as_deref());
    let own = gpu_runtime.as_deref().and_then(Path::parent);
    // In the GPU install's own folder a library cut short does not count
    // (the preload skips it); the system's are taken as they are.
    let found = |d: &Path, lib: &str| if Some(d) == own { usable(d, lib) } else { d.join(lib).is_file() };
    let missing_libraries =
        CUDA_LIBRARIES.iter().filter(|lib| !dirs.iter().any(|d| found(d, lib))).map(|s| (*s).to_string()).collect();
    GpuFacts { driver_version, gpus: Vec::new(), gpu_runtime, cuda_provider, missing_libraries, other_runtime }
}

/// Whether `dir/lib` is there and as it was unpacked (an install's stamp
/// saying it was cut short by a full disk or a kill: not taken).
fn intact_file(dir: &Path, lib: &str) -> bool {
    dir.join(lib).is_file() && super::install::intact(dir, lib)
}

/// What a CUDA run loads, from the search's `candidates` (in order,
/// [`super::library_candidates`]) and the GPU install's folder `gpu_dir`:
/// `(GPU runtime, other runtime)`. A library before the GPU install's
/// folder (ORT_DYLIB_PATH, beside the program) wins: it is the GPU runtime
/// when the CUDA provider is beside it, else the other runtime, which keeps
/// CUDA from running whatever is installed. Without one, the GPU install's
/// library when it is there. Libraries an install's stamp says were cut
/// short do not count (the search passes over them).
fn runtime_for_cuda(candidates: &[PathBuf], gpu_dir: Option<&Path>) -> (Option<PathBuf>, Option<PathBuf>) {
    let usable =
        |lib: &Path| lib.parent().zip(lib.file_name()).is_some_and(|(d, n)| intact_file(d, &n.to_string_lossy()));
    let has_provider = |lib: &Path| lib.parent().is_some_and(|d| intact_file(d, CUDA_PROVIDER_FILE));
    let gpu_at = candidates.iter().position(|p| gpu_dir.is_some() && p.parent() == gpu_dir).unwrap_or(candidates.len());
    let installed = candidates.get(gpu_at).filter(|p| usable(p)).cloned();
    match candidates[..gpu_at].iter().find(|p| usable(p)) {
        Some(lib) if has_provider(lib) => (Some(lib.clone()), None),
        Some(lib) => (installed, Some(lib.clone())),
        None => (installed, None),
    }
}

#[cfg(test)]
mod tests {
    use super::super::ORT_LIBRARY_FILE;
    use super::*;

    /// A CPU build named for the run (`--ort-lib`) is what a CUDA run would
    /// load, whatever is installed: not a GPU runtime, and `auto` is the CPU.
    #[test]
    fn a_library_named_for_the_run_is_the_one_judged() {
        let dir = tempfile::tempdir().unwrap();
        let cpu = dir.path().join(ORT_LIBRARY_FILE);
        std::fs::write(&cpu, b"lib").unwrap();
        let facts = local_facts_for(Some(&cpu));
        assert_eq!((facts.gpu_runtime.clone(), facts.other_runtime.clone()), (None, Some(cpu.clone())));
        assert!(diagnose(&facts).is_err(), "not ready for CUDA");
    }

    /// A CPU build named by ORT_DYLIB_PATH comes before the GPU install in
    /// the search: CUDA is not ready, and the check says why (it said
    /// ready, and `auto` chose the GPU's presets for a CPU run).
    #[test]
    fn a_library_found_before_the_gpu_install_decides() {
        let dir = tempfile::tempdir().unwrap();
        let touch = |p: &Path| {
            std::fs::create_dir_all(p.parent().unwrap()).unwrap();
            std::fs::write(p, b"lib").unwrap();
        };
        let gpu = dir.path().join("cache").join(ORT_GPU_DIR);
        let cpu = dir.path().join("elsewhere");
        let candidates = vec![cpu.join(ORT_LIBRARY_FILE), gpu.join(ORT_LIBRARY_FILE)];
        assert_eq!(runtime_for_cuda(&candidates, Some(&gpu)), (None, None), "nothing installed");
        touch(&gpu.join(ORT_LIBRARY_FILE));
        touch(&gpu.join(CUDA_PROVIDER_FILE));
        assert_eq!(runtime_for_cuda(&candidates, Some(&gpu)), (Some(gpu.join(ORT_LIBRARY_FILE)), None));
        touch(&cpu.join(ORT_LIBRARY_FILE));
        let (runtime, other) = runtime_for_cuda(&candidates, Some(&gpu));
        assert_eq!((runtime, other.clone()), (Some(gpu.join(ORT_LIBRARY_FILE)), Some(cpu.join(ORT_LIBRARY_FILE))));
        let facts = GpuFacts { other_runtime: other, ..ready() };
        let e = diagnose(&facts).unwrap_err();
        assert!(matches!(e, NoCuda::OtherRuntime { .. }) && e.message().contains("ORT_DYLIB_PATH"), "{e:?}");
        // A GPU build of one's own there: that one is the GPU runtime.
        touch(&cpu.join(CUDA_PROVIDER_FILE));
        assert_eq!(runtime_for_cuda(&candidates, Some(&gpu)), (Some(cpu.join(ORT_LIBRARY_FILE)), None));
    }

    /// Every library the GPU install unpacks is loaded by absolute path
    /// first (none found through `LD_LIBRARY_PATH` instead), except ONNX
    /// Runtime's own, which `ort` loads.
    #[test]
    fn every_installed_cuda_library_is_preloaded() {
        for wheel in super::super::install::gpu_wheels() {
            for lib in wheel.libs.iter().filter(|l| !l.starts_with("libonnxruntime")) {
                assert!(PRELOAD_LIBRARIES.contains(&lib.as_str()), "{lib} is not preloaded");
            }
        }
    }

    fn ready() -> GpuFacts {
        GpuFacts {
            driver_version: Some("580.95.05".into()),
            gpus: vec![GpuInfo { name: "NVIDIA H200".into(), memory_mib: 143_771 }],
            gpu_runtime: Some("/cache/onnxruntime-gpu-1.31.1/libonnxruntime.so.1.31.1".into()),
            cuda_provider: true,
            missing_libraries: Vec::new(),
            other_runtime: None,
        }
    }

    #[test]
    fn every_reason_cuda_is_not_used_has_its_message() {
        assert_eq!(diagnose(&ready()), Ok(()));
        let no_driver = GpuFacts { driver_version: None, ..ready() };
        assert_eq!(diagnose(&no_driver), Err(NoCuda::NoDriver));
        let old = GpuFacts { driver_version: Some("550.127.05".into()), ..ready() };
        let e = diagnose(&old).unwrap_err();
        assert!(e.message().contains("550.127.05") && e.message().contains("580"), "{}", e.message());
        let no_runtime = GpuFacts { gpu_runtime: None, cuda_provider: false, ..ready() };
        assert!(diagnose(&no_runtime).unwrap_err().message().contains("runtime fetch --gpu"));
        let no_provider = GpuFacts { cuda_provider: false, ..ready() };
        assert_eq!(diagnose(&no_provider), Err(NoCuda::RuntimeMissing));
        let libs = GpuFacts { missing_libraries: vec!["libcudnn.so.9".into()], ..ready() };
        let e = diagnose(&libs).unwrap_err();
        assert!(e.message().contains("libcudnn.so.9"), "{}", e.message());
    }

    #[test]
    fn driver_and_gpu_lines_parse() {
        let proc = "NVRM version: NVIDIA UNIX x86_64 Kernel Module  580.95.05  Tue Sep 23 09:55:41 UTC 2025\nGCC version:  gcc version 12.2.0\n";
        assert_eq!(parse_driver_version(proc).as_deref(), Some("580.95.05"));
        let open = "NVRM version: NVIDIA UNIX Open Kernel Module for x86_64  580.65.06  Release Build\n";
        assert_eq!(parse_driver_version(open).as_deref(), Some("580.65.06"));
        assert_eq!(parse_driver_version(""), None);
        let smi = "NVIDIA H200, 143771\nNVIDIA GeForce RTX 4090, 24564\n";
        assert_eq!(
            parse_nvidia_smi(smi),
            vec![
                GpuInfo { name: "NVIDIA H200".into(), memory_mib: 143_771 },
                GpuInfo { name: "NVIDIA GeForce RTX 4090".into(), memory_mib: 24_564 }
            ]
        );
    }

    #[test]
    fn gpu_libraries_load_by_absolute_path_and_failures_are_named() {
        // A real shared object under a CUDA library's name (ONNX Runtime's
        // small provider bridge, installed on every test machine) and a
        // damaged one.
        let ort = crate::runtime::find_library(None, crate::units::Device::Cpu).expect("ONNX Runtime installed");
        let real = ort.with_file_name("libonnxruntime_providers_shared.so");
        let dir = tempfile::tempdir().unwrap();
        std::fs::copy(&real, dir.path().join("libcudart.so.13")).unwrap();
        std::fs::write(dir.path().join("libcublas.so.13"), b"not a library").unwrap();
        let got = load_libraries(dir.path());
        assert_eq!(got.loaded, vec![dir.path().join("libcudart.so.13")]);
        assert_eq!(got.failed.len(), 1, "{got:?}");
        assert_eq!(got.failed[0].0, dir.path().join("libcublas.so.13"));
        assert!(!got.failed[0].1.is_empty());
        // Nothing there: nothing loaded, nothing failed (the system's path decides).
        assert_eq!(load_libraries(&dir.path().join("none")), Preloaded::default());
    }

    #[test]
    fn this_machine_is_described() {
        // Whatever the machine: a consistent answer (on the CPU-only test
        // machines: no driver).
        let f = facts();
        match diagnose(&f) {
            Ok(()) => assert!(f.driver_version.is_some() && f.gpu_runtime.is_some()),
            Err(NoCuda::NoDriver) => assert!(f.driver_version.is_none()),
            Err(e) => assert!(!e.message().is_empty()),
        }
    }
}

//! Installing GPU support in one step: the GPU build of ONNX Runtime 1.31.1
//! and the CUDA 13 / cuDNN 9 libraries its CUDA provider loads, from pinned
//! PyPI wheels, each checked against its sha256 before anything is unpacked.
//!
//! Layout: every library lands flat in `<cache>/onnxruntime-gpu-1.31.1/`
//! (`libonnxruntime.so.1.31.1`, `libonnxruntime_providers_*.so`,
//! `libcudart.so.13`, `libcublas*.so.13`, `libcudnn*.so.9`, ...), with
//! `stemroom-wheels.json` naming the wheels it came from. The folder is built
//! beside its final place and renamed into it, so it is either complete or
//! absent. Wheels are downloaded into `<cache>/dl/` (a partial download
//! resumes with an HTTP range request) and removed once installed.
//!
//! The engine loads these libraries by absolute path before the CUDA
//! provider ([`super::gpu::preload`]): no `LD_LIBRARY_PATH`, no CUDA toolkit.
//!
//! Which wheels: `onnxruntime-gpu==1.31.1` declares its CUDA needs as extras
//! (`cuda`: `nvidia-cuda-runtime~=13.0`, `nvidia-cuda-nvrtc~=13.0`,
//! `nvidia-cufft~=12.0`, `nvidia-curand~=10.0`; `cudnn`:
//! `nvidia-cudnn-cu13~=9.0`, which requires `nvidia-cublas`; `nvidia-cufft`
//! requires `nvidia-nvjitlink`). The pins are one CUDA release (13.4 update 1,
//! the wheels PyPI published together on 2026-09-16) and cuDNN 9.27.0; sizes
//! and sha256 are PyPI's (its JSON simple index, read 2026-11-27). The CUDA
//! provider's own `DT_NEEDED` (read from the wheel): `libcublasLt.so.13`,
//! `libcublas.so.13`, `libcurand.so.10`, `libcudart.so.13`, `libcuda.so.1`
//! (the driver's); cuDNN and cuFFT it opens at run time.

use std::fs::{self, File};
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use super::{ORT_CPU_DIR, ORT_GPU_DIR};

/// One pinned wheel and the libraries taken from it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Wheel {
    /// PyPI project name.
    pub package: String,
    /// Pinned version.
    pub version: String,
    /// Download URL (PyPI's file host).
    pub url: String,
    /// Size in bytes, as PyPI lists it.
    pub bytes: u64,
    /// sha256 of the wheel, lowercase hex, as PyPI lists it.
    pub sha256: String,
    /// File names of the libraries to unpack (wherever they sit in the wheel).
    pub libs: Vec<String>,
}

impl Wheel {
    /// The wheel's file name (the URL's last segment).
    pub fn file_name(&self) -> &str {
        self.url.rsplit('/').next().unwrap_or(&self.url)
    }
}

const PYPI_FILES: &str = "https://files.pythonhosted.org/packages";

/// The pinned wheels of GPU support (see the module notes), about 1.55 GB
/// to download and 2.5 GB unpacked.
pub fn gpu_wheels() -> Vec<Wheel> {
    let w = |package: &str, version: &str, path: &str, bytes: u64, sha256: &str, libs: &[&str]| Wheel {
        package: package.into(),
        version: version.into(),
        url: format!("{PYPI_FILES}/{path}"),
        bytes,
        sha256: sha256.into(),
        libs: libs.iter().map(|s| (*s).to_string()).collect(),
    };
    vec![
        w(
            "onnxruntime-gpu",
            "1.31.1",
            "92/1b/23ae6bfa165cf01f2566aeab3076135d0db8edf5b543c1556fd6b1d93c7f/onnxruntime_gpu-1.31.1-cp311-cp311-manylinux_2_28_x86_64.whl",
            255_560_985,
            "e26c475fe361b2015f45b4b824bd13f0bb20204e59b62814e6f0acd5f3d491a6",
            &["libonnxruntime.so.1.31.1", "libonnxruntime_providers_shared.so", "libonnxruntime_providers_cuda.so"],
        ),
        w(
            "nvidia-cuda-runtime",
            "13.4.92",
            "98/8a/3431271f6344874b8f1ac03f16b3d679c91493f8da63f716160403e6d0a0/nvidia_cuda_runtime-13.4.92-py3-none-manylinux2014_x86_64.manylinux_2_17_x86_64.whl",
            2_494_438,
            "9641f797da20ce1dd8e779b6e96d08cf9ba564cec8e8225458811ee26423f3a5",
            &["libcudart.so.13"],
        ),
        w(
            "nvidia-cublas",
            "13.8.0.4",
            "7a/38/bdd540bf511d2c9b6f9efc71a81c60cb88e295be0b9312b61d19bbed2212/nvidia_cublas-13.8.0.4-py3-none-manylinux_2_27_x86_64.whl",
            439_317_144,
            "9f17797dfcc048694461f4e47de17d2e3c25adf172ef723d2db0a07cd8744b89",
            &["libcublas.so.13", "libcublasLt.so.13"],
        ),
        w(
            "nvidia-cufft",
            "12.4.0.43",
            "76/bf/3fea3d1c6262bded26ae00e3106432d63235954965d7785f5051ac146651/nvidia_cufft-12.4.0.43-py3-none-manylinux2014_x86_64.manylinux_2_17_x86_64.whl",
            161_750_089,
            "0e8385013596b112d29c9ce8c63dc575b308d77636c7169104e18714f03961a8",
            &["libcufft.so.12"],
        ),
        w(
            "nvidia-curand",
            "10.4.4.72",
            "07/73/3ee8e5b4cb891401e603ffd3a59b35c6afe785fd2de123afe7c7029603dc/nvidia_curand-10.4.4.72-py3-none-manylinux_2_27_x86_64.whl",
            61_498_332,
            "25c3457ae7a224fdd484dab90b0fc5dc0e842fab5db3012afa4a5bd2af4eb7e5",
            &["libcurand.so.10"],
        ),
        w(
            "nvidia-cuda-nvrtc",
            "13.4.92",
            "56/9c/1342ebb460ce2afd014ec5a002adc99108e3c53a6b70f399cf64dd1f267d/nvidia_cuda_nvrtc-13.4.92-py3-none-manylinux2010_x86_64.manylinux_2_12_x86_64.whl",
            53_301_733,
            "5ce8c97b00b232c4f50c8c4b5a3b68cafee08bdb82ea86f2052ff01d03194f4a",
            &["libnvrtc.so.13", "libnvrtc-builtins.so.13.4"],
        ),
        w(
            "nvidia-nvjitlink",
            "13.4.92",
            "1d/6b/eef7a9e32872b8f41e145bf10cddc9af26e153c338852811fe9a9baddf9e/nvidia_nvjitlink-13.4.92-py3-none-manylinux2010_x86_64.manylinux_2_12_x86_64.whl",
            42_452_378,
            "e0391f24ed94ec879b84e3da4d4ec320c879aff681f2c7a638462f7199284323",
            &["libnvJitLink.so.13"],
        ),
        w(
            "nvidia-cudnn-cu13",
            "9.27.0.42",
            "af/75/96ea5c5368eb595c39d629cde08a66227a864e71ccb0e593add2612bb952/nvidia_cudnn_cu13-9.27.0.42-py3-none-manylinux_2_27_x86_64.whl",
            536_771_498,
            "9677e76f21862eb5da7ee5ed69d544738b2d8b5c3ce7e5ec125c5592e6cdbdc8",
            &[
                "libcudnn.so.9",
                "libcudnn_adv.so.9",
                "libcudnn_cnn.so.9",
                "libcudnn_engines_precompiled.so.9",
                "libcudnn_engines_runtime_compiled.so.9",
                "libcudnn_engines_tensor_ir.so.9",
                "libcudnn_ext.so.9",
                "libcudnn_graph.so.9",
                "libcudnn_heuristic.so.9",
                "libcudnn_ops.so.9",
            ],
        ),
    ]
}

/// The CPU build of ONNX Runtime 1.31.1 (`onnxruntime==1.31.1`, 23.8 MB;
/// size and sha256 from PyPI's index, 2026-11-27).
pub fn cpu_wheels() -> Vec<Wheel> {
    vec![Wheel {
        package: "onnxruntime".into(),
        version: "1.31.1".into(),
        url: format!(
            "{PYPI_FILES}/b4/1d/0f85ee31a3d93f2243a5cc29252becf858f53ac5cfa6c9c15d9ffe107eea/onnxruntime-1.31.1-cp311-cp311-manylinux_2_28_x86_64.whl"
        ),
        bytes: 23_753_652,
        sha256: "5752bd508126ae7c49894d3b9d2e83f0c3d487319246d04c444b393308d7ad7f".into(),
        libs: vec!["libonnxruntime.so.1.31.1".into(), "libonnxruntime_providers_shared.so".into()],
    }]
}

/// Name of the file in an install folder naming the wheels it came from.
pub const STAMP_FILE: &str = "stemroom-wheels.json";

/// Options for installing GPU support under `cache` (the per-user cache,
/// [`crate::paths::cache_dir`]): into `<cache>/onnxruntime-gpu-1.31.1`,
/// downloading into `<cache>/dl`.
pub fn gpu_options(cache: &Path, from: Option<PathBuf>) -> InstallOptions {
    InstallOptions {
        dest: cache.join(ORT_GPU_DIR),
        download_dir: cache.join("dl"),
        from,
        wheels: gpu_wheels(),
        force: false,
    }
}

/// Options for installing the CPU build under `cache`: into
/// `<cache>/onnxruntime-1.31.1`.
pub fn cpu_options(cache: &Path, from: Option<PathBuf>) -> InstallOptions {
    InstallOptions {
        dest: cache.join(ORT_CPU_DIR),
        download_dir: cache.join("dl"),
        from,
        wheels: cpu_wheels(),
        force: false,
    }
}

/// Why installing failed.
#[derive(Debug, thiserror::Error)]
pub enum InstallError {
    #[error("cannot download {url}: {reason}")]
    Download { url: String, reason: String },
    #[error(
        "{file} is not the file Stemroom expects (sha256 {actual}, expected {expected}); {}",
        crate::download::checksum_advice(*.theirs)
    )]
    Checksum { file: String, expected: String, actual: String, theirs: bool },
    #[error("{file} is damaged or not the expected wheel: {reason}")]
    Archive { file: String, reason: String },
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("another install of ONNX Runtime is running (lock {0})")]
    Busy(PathBuf),
    #[error("cancelled")]
    Cancelled,
    /// A program the install runs is missing or too old (python3 for
    /// yt-dlp's install).
    #[error("{tool} is needed: {reason}")]
    MissingTool { tool: String, reason: String },
    /// The pinned wheels are for 64-bit x86 Linux with glibc 2.28 or newer
    /// (`manylinux_2_28_x86_64`): this machine is not.
    #[error("the pinned ONNX Runtime wheels are for x86_64 Linux with glibc 2.28 or newer, and this machine is {0}: install an ONNX Runtime 1.31.1 built for it and name it with ORT_DYLIB_PATH")]
    Unsupported(String),
}

impl InstallError {
    /// The stable code front ends branch on (CLI exit codes, the app).
    pub fn code(&self) -> crate::ErrorCode {
        use crate::ErrorCode;
        match self {
            InstallError::Download { .. } | InstallError::Checksum { .. } | InstallError::Archive { .. } => {
                ErrorCode::Download
            }
            InstallError::Io { .. } => ErrorCode::Output,
            InstallError::Busy(_) | InstallError::Unsupported(_) => ErrorCode::InvalidOptions,
            InstallError::MissingTool { .. } => ErrorCode::MissingTool,
            InstallError::Cancelled => ErrorCode::Cancelled,
        }
    }
}

/// Progress of an install.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[cfg_attr(feature = "specta", derive(specta::Type))]
#[serde(tag = "stage", rename_all = "camelCase")]
pub enum InstallEvent {
    /// Bytes of `file` on disk so far; `done`/`total` over every download.
    #[serde(rename_all = "camelCase")]
    Downloading { file: String, done: f64, total: f64 },
    /// A wheel passed its checksum.
    Verified { file: String },
    /// Libraries are being unpacked from a wheel.
    Unpacking { file: String },
    /// Installed into `dir`.
    Installed { dir: String },
}

/// Where an install reads and writes.
#[derive(Debug, Clone)]
pub struct InstallOptions {
    /// The folder the libraries go into (replaced as a whole).
    pub dest: PathBuf,
    /// Where wheels are downloaded (and removed from once installed).
    pub download_dir: PathBuf,
    /// A folder holding wheels already downloaded (by file name); they are
    /// checked like downloads. `None`: download.
    pub from: Option<PathBuf>,
    /// The wheels (normally [`gpu_wheels`]).
    pub wheels: Vec<Wheel>,
    /// Install again even when the folder holds these wheels' files (a
    /// repair: `--force`); otherwise an install that waited for another
    /// one which installed them takes that.
    pub force: bool,
}

/// What an install would do, for "size first" prompts.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[cfg_attr(feature = "specta", derive(specta::Type))]
#[serde(rename_all = "camelCase")]
pub struct InstallPlan {
    /// Bytes still to download (complete wheels already in the download
    /// folder or `from` count as downloaded).
    pub download_bytes: f64,
    /// Bytes of every wheel.
    pub total_bytes: f64,
    /// The install folder.
    pub dir: String,
    /// Whether these wheels are already installed there.
    pub installed: bool,
}

fn io_err(path: &Path) -> impl FnOnce(std::io::Error) -> InstallError + '_ {
    move |source| InstallError::Io { path: path.to_path_buf(), source }
}

/// Whether `dir` holds a complete install of `wheels`: its stamp names
/// exactly them, and every library is there, at the size it was unpacked
/// at (a library cut short by a power cut or a damaged disk would crash
/// the process that loads it: the loader maps what the file lacks).
pub fn is_installed(dir: &Path, wheels: &[Wheel]) -> bool {
    let Some(stamp) = read_stamp(dir) else { return false };
    stamp.wheels.as_slice() == wheels
        && wheels.iter().flat_map(|w| &w.libs).all(|lib| dir.join(lib).is_file() && stamp.fits(dir, lib))
}

/// Whether library `lib` in install folder `dir` is as it was unpacked:
/// `true` unless the folder's stamp records another size for it (a folder
/// without a stamp, or a stamp from before sizes were recorded, is taken
/// as it is).
pub fn intact(dir: &Path, lib: &str) -> bool {
    read_stamp(dir).is_none_or(|s| s.fits(dir, lib))
}

fn read_stamp(dir: &Path) -> Option<Stamp> {
    serde_json::from_str::<Stamp>(&fs::read_to_string(dir.join(STAMP_FILE)).ok()?).ok()
}

#[derive(Serialize, Deserialize)]
struct Stamp {
    wheels: Vec<Wheel>,
    /// Bytes of each library as unpacked (absent in earlier stamps).
    #[serde(default)]
    sizes: std::collections::BTreeMap<String, u64>,
}

impl Stamp {
    fn fits(&self, dir: &Path, lib: &str) -> bool {
        self.sizes.get(lib).is_none_or(|&want| fs::metadata(dir.join(lib)).is_ok_and(|m| m.len() == want))
    }
}

/// A copy of `wheel` of the right size already on disk (in `download_dir`,
/// then in `from`), if any; [`fetch_wheels`] checks its sha256.
pub fn local_copy(download_dir: &Path, from: Option<&Path>, wheel: &Wheel) -> Option<PathBuf> {
    let mut places = vec![download_dir.join(wheel.file_name())];
    places.extend(from.map(|d| d.join(wheel.file_name())));
    places.into_iter().find(|p| fs::metadata(p).is_ok_and(|m| m.len() == wheel.bytes))
}

/// Every wheel of `wheels` on disk and checked against its sha256, in
/// order: a local copy ([`local_copy`]) or a download into `download_dir`
/// (resuming a partial one). `Downloading` events count over what is
/// downloaded; `Verified` follows each check.
///
/// # Errors
/// A download that fails, a checksum mismatch (a downloaded file is
/// removed, the user's is left), disk errors, `cancelled`.
pub fn fetch_wheels(
    wheels: &[Wheel],
    download_dir: &Path,
    from: Option<&Path>,
    on_event: &mut dyn FnMut(&InstallEvent),
    cancelled: &dyn Fn() -> bool,
) -> Result<Vec<PathBuf>, InstallError> {
    fs::create_dir_all(download_dir).map_err(io_err(download_dir))?;
    let agent = crate::download::agent();
    let local: Vec<Option<PathBuf>> = wheels.iter().map(|w| local_copy(download_dir, from, w)).collect();
    // Installing from a folder is installing without the network: a wheel
    // missing there, or cut short (a copy to a USB stick that stopped), is
    // said by name, not downloaded instead.
    if let Some(dir) = from {
        if let Some((wheel, _)) = wheels.iter().zip(&local).find(|(_, l)| l.is_none()) {
            let file = dir.join(wheel.file_name());
            let found = match fs::metadata(&file) {
                Ok(m) => format!("it has {} bytes", m.len()),
                Err(_) => "it is not there".to_string(),
            };
            return Err(InstallError::Archive {
                file: file.display().to_string(),
                reason: format!("{found}, {} expected: copy it again from {}", wheel.bytes, wheel.url),
            });
        }
    }
    let total: u64 = wheels.iter().zip(&local).filter(|(_, l)| l.is_none()).map(|(w, _)| w.bytes).sum();
    let mut done = 0u64;
    let mut files = Vec::new();
    for (wheel, local) in wheels.iter().zip(local) {
        let path = match local {
            Some(p) => p,
            None => {
                let name = wheel.file_name().to_string();
                let mut progress = |have: u64| {
                    on_event(&InstallEvent::Downloading {
                        file: name.clone(),
                        done: (done + have) as f64,
                        total: total as f64,
                    });
                };
                let p = crate::download::download(&agent, &wheel.pinned(), download_dir, &mut progress, cancelled)?;
                done += wheel.bytes;
                p
            }
        };
        if cancelled() {
            return Err(InstallError::Cancelled);
        }
        crate::download::verify(&path, &wheel.pinned(), download_dir)?;
        on_event(&InstallEvent::Verified { file: wheel.file_name().to_string() });
        files.push(path);
    }
    Ok(files)
}

/// The folders beside an install folder `dest`: its parent, its name,
/// `.<name>.installing` (the new one while [`replace_dir`] builds it) and
/// `.<name>.old` (the one it replaces, set aside).
struct Beside {
    parent: PathBuf,
    name: String,
    building: PathBuf,
    old: PathBuf,
}

impl Beside {
    fn of(dest: &Path) -> Self {
        let parent = dest.parent().map_or_else(|| PathBuf::from("."), Path::to_path_buf);
        let name = dest.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
        let building = parent.join(format!(".{name}.installing"));
        let old = parent.join(format!(".{name}.old"));
        Beside { parent, name, building, old }
    }
}

/// Remove the folders a killed [`install`] into `opts.dest` left, unless
/// an install holds the lock (then they are its own).
fn sweep_stale(opts: &InstallOptions) {
    let Beside { parent, name, building, old } = Beside::of(&opts.dest);
    let mut trash = Vec::new();
    {
        let Ok(_lock) = crate::download::FileLock::take(&opts.download_dir.join(".install.lock")) else { return };
        if !opts.dest.exists() {
            // Killed between its two renames: the new install (complete
            // once built) or else the one it set aside goes under the name,
            // each only if whole (a half-removed `.old` of a run killed at
            // its very end is not, nor is anything once the person removed
            // the install on purpose and its leftovers are partial).
            let whole = [&building, &old].into_iter().find(|p| is_installed(p, &opts.wheels));
            if let Some(whole) = whole {
                if fs::rename(whole, &opts.dest).is_ok() {
                    tracing::info!("put {} back from {}", opts.dest.display(), whole.display());
                }
            }
        }
        // Out of the way under the lock (renames are instant), removed
        // after it (up to 2.5 GB), so an install starting meanwhile is
        // not kept waiting.
        let stale = format!(".{name}.stale-");
        for (k, path) in [building, old].into_iter().enumerate() {
            let gone = parent.join(format!("{stale}{}-{k}", std::process::id()));
            if path.is_dir() && fs::rename(&path, &gone).is_ok() {
                trash.push(gone);
            }
        }
        // And what a sweep that was killed while removing left.
        if let Ok(entries) = fs::read_dir(&parent) {
            let left = entries.flatten().filter(|e| e.file_name().to_string_lossy().starts_with(&stale));
            for e in left {
                if !trash.contains(&e.path()) {
                    trash.push(e.path());
                }
            }
        }
    }
    for path in trash {
        if fs::remove_dir_all(&path).is_ok() {
            tracing::info!("removed what an install that stopped left beside {}", opts.dest.display());
        }
    }
}

/// Replace the folder `dest` as a whole: `fill` builds the new one beside
/// it (`.<name>.installing`), which is then renamed into place (the old one
/// moved aside and removed), so `dest` is complete or as it was. On an
/// error the half-built folder is removed.
///
/// # Errors
/// `fill`'s errors, disk errors.
pub fn replace_dir(dest: &Path, fill: impl FnOnce(&Path) -> Result<(), InstallError>) -> Result<(), InstallError> {
    let Beside { parent, building, old, .. } = Beside::of(dest);
    fs::create_dir_all(&parent).map_err(io_err(&parent))?;
    let _ = fs::remove_dir_all(&building);
    let result = (|| {
        fs::create_dir_all(&building).map_err(io_err(&building))?;
        fill(&building)?;
        let _ = fs::remove_dir_all(&old);
        if dest.exists() {
            fs::rename(dest, &old).map_err(io_err(dest))?;
        }
        fs::rename(&building, dest).map_err(io_err(dest))?;
        let _ = fs::remove_dir_all(&old);
        Ok(())
    })();
    if result.is_err() {
        let _ = fs::remove_dir_all(&building);
    }
    result
}

/// What [`install`] would download (see [`InstallPlan`]). Removes what an
/// install that was killed left beside `opts.dest` (its half-built
/// `.<name>.installing` folder, up to the runtime's 2.5 GB, and a set-aside
/// `.<name>.old`) when no install is running.
pub fn plan(opts: &InstallOptions) -> InstallPlan {
    sweep_stale(opts);
    let total: u64 = opts.wheels.iter().map(|w| w.bytes).sum();
    let from = opts.from.as_deref();
    let download: u64 =
        opts.wheels.iter().filter(|w| local_copy(&opts.download_dir, from, w).is_none()).map(|w| w.bytes).sum();
    InstallPlan {
        download_bytes: download as f64,
        total_bytes: total as f64,
        dir: opts.dest.display().to_string(),
        installed: is_installed(&opts.dest, &opts.wheels),
    }
}

impl From<crate::download::DownloadError> for InstallError {
    fn from(e: crate::download::DownloadError) -> Self {
        use crate::download::DownloadError as D;
        match e {
            D::Http { url, reason } => InstallError::Download { url, reason },
            D::Checksum { file, expected, actual, theirs } => InstallError::Checksum { file, expected, actual, theirs },
            D::Io { path, source } => InstallError::Io { path, source },
            D::Busy(path) => InstallError::Busy(path),
            D::Cancelled => InstallError::Cancelled,
        }
    }
}

impl Wheel {
    /// The wheel as a pinned download.
    fn pinned(&self) -> crate::download::Pinned<'_> {
        crate::download::Pinned { url: &self.url, file_name: self.file_name(), bytes: self.bytes, sha256: &self.sha256 }
    }
}

/// Unpack the wheel's libraries, flat, into `into`, each whole and on
/// disk (synced) before the install counts as done; adds their sizes to
/// `sizes`.
fn unpack(
    path: &Path,
    wheel: &Wheel,
    into: &Path,
    sizes: &mut std::collections::BTreeMap<String, u64>,
) -> Result<(), InstallError> {
    let bad = |reason: String| InstallError::Archive { file: wheel.file_name().to_string(), reason };
    let mut zip = zip::ZipArchive::new(File::open(path).map_err(io_err(path))?).map_err(|e| bad(e.to_string()))?;
    for lib in &wheel.libs {
        let index = (0..zip.len())
            .find(|&i| {
                zip.name_for_index(i).is_some_and(|n| n.is_ok_and(|n| n.rsplit('/').next() == Some(lib.as_str())))
            })
            .ok_or_else(|| bad(format!("{lib} is not in it")))?;
        let mut entry = zip.by_index(index).map_err(|e| bad(e.to_string()))?;
        let out_path = into.join(lib);
        let mut out = File::create(&out_path).map_err(io_err(&out_path))?;
        let copied = std::io::copy(&mut entry, &mut out).map_err(|e| match e.kind() {
            // The disk, not the wheel: said as the folder it could not fill.
            std::io::ErrorKind::StorageFull | std::io::ErrorKind::QuotaExceeded => io_err(&out_path)(e),
            _ => bad(format!("{lib}: {e}")),
        })?;
        if copied != entry.size() {
            return Err(bad(format!("{lib}: {copied} bytes unpacked of {}", entry.size())));
        }
        use std::os::unix::fs::PermissionsExt;
        out.set_permissions(fs::Permissions::from_mode(0o755)).map_err(io_err(&out_path))?;
        out.sync_all().map_err(io_err(&out_path))?;
        sizes.insert(lib.clone(), copied);
    }
    Ok(())
}

/// What this machine is when the pinned wheels (`manylinux_2_28_x86_64`)
/// cannot run on it (another architecture, or a glibc older than 2.28, from
/// `gnu_get_libc_version`); `None` when they can. Refused before 24 MB or
/// 1.55 GB is downloaded for a library that would not load.
fn unsupported_machine() -> Option<String> {
    if !cfg!(all(target_os = "linux", target_arch = "x86_64", target_env = "gnu")) {
        // (musl: manylinux wheels need glibc.)
        let libc = if cfg!(target_env = "musl") { " (musl)" } else { "" };
        return Some(format!("{} {}{libc}", std::env::consts::OS, std::env::consts::ARCH));
    }
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    {
        // SAFETY: returns a static NUL-terminated string.
        let version = unsafe { std::ffi::CStr::from_ptr(libc::gnu_get_libc_version()) }.to_string_lossy().into_owned();
        let mut parts = version.split('.').map(|p| p.parse::<u32>().unwrap_or(0));
        let (major, minor) = (parts.next().unwrap_or(0), parts.next().unwrap_or(0));
        if (major, minor) < (2, 28) {
            return Some(format!("x86_64 Linux with glibc {version}"));
        }
    }
    None
}

/// Download (or take from `opts.from`), verify and unpack every wheel into
/// the install folder, replacing what was there only once the new folder is
/// complete. Returns the folder.
///
/// # Errors
/// [`InstallError`]: a download that fails (a later call resumes it), a
/// checksum mismatch (the file is removed), a damaged wheel, disk errors,
/// another install running, or `cancelled` returning true (checked between
/// reads).
pub fn install(
    opts: &InstallOptions,
    on_event: &mut dyn FnMut(&InstallEvent),
    cancelled: &dyn Fn() -> bool,
) -> Result<PathBuf, InstallError> {
    if let Some(machine) = unsupported_machine() {
        return Err(InstallError::Unsupported(machine));
    }
    let dl = opts.download_dir.clone();
    fs::create_dir_all(&dl).map_err(io_err(&dl))?;
    // Another install (another window, a second command) is waited for;
    // when it installed these very wheels meanwhile, that is the answer.
    let (_lock, waited) = crate::download::FileLock::wait(&dl.join(".install.lock"), cancelled)?;
    let dest = opts.dest.clone();
    // (Callers check [`plan`] for an install already there first; `--force`
    // installs again, even after waiting: the lock may have been a sweep's,
    // [`plan`]'s.)
    if waited && !opts.force && is_installed(&dest, &opts.wheels) {
        on_event(&InstallEvent::Installed { dir: dest.display().to_string() });
        return Ok(dest);
    }
    let files = fetch_wheels(&opts.wheels, &dl, opts.from.as_deref(), on_event, cancelled)?;
    replace_dir(&dest, |building| {
        let mut sizes = std::collections::BTreeMap::new();
        for (wheel, path) in opts.wheels.iter().zip(&files) {
            if cancelled() {
                return Err(InstallError::Cancelled);
            }
            on_event(&InstallEvent::Unpacking { file: wheel.file_name().to_string() });
            unpack(path, wheel, building, &mut sizes)?;
        }
        let stamp = serde_json::to_string_pretty(&Stamp { wheels: opts.wheels.clone(), sizes }).unwrap_or_default();
        let stamp_path = building.join(STAMP_FILE);
        File::create(&stamp_path)
            .and_then(|mut f| {
                std::io::Write::write_all(&mut f, stamp.as_bytes())?;
                f.sync_all()
            })
            .map_err(io_err(&stamp_path))?;
        crate::files::sync_dir(building);
        Ok(())
    })?;
    // The new folder's name on disk before the wheels, the only other copy, go.
    if let Some(parent) = dest.parent() {
        crate::files::sync_dir(parent);
    }
    // The wheels are no longer needed (those in `from` are the user's).
    for path in files.iter().filter(|p| p.starts_with(&dl)) {
        let _ = fs::remove_file(path);
    }
    on_event(&InstallEvent::Installed { dir: dest.display().to_string() });
    Ok(dest)
}

#[cfg(test)]
mod tests {
    use std::collections::HashMap;
    use std::io::Write;
    use std::sync::{Arc, Mutex};

    use sha2::{Digest, Sha256};

    use super::*;
    use crate::download::test_server::serve;

    /// A wheel-like zip holding `libs` (each `pkg/lib/<name>` with
    /// `name`-derived bytes) and a METADATA file.
    fn fake_wheel(libs: &[&str]) -> Vec<u8> {
        let mut buf = std::io::Cursor::new(Vec::new());
        let mut z = zip::ZipWriter::new(&mut buf);
        let opts = zip::write::SimpleFileOptions::default().compression_method(zip::CompressionMethod::Deflated);
        z.start_file("pkg-1.0.dist-info/METADATA", opts).unwrap();
        z.write_all(b"Name: pkg\n").unwrap();
        for lib in libs {
            z.start_file(format!("pkg/lib/{lib}"), opts).unwrap();
            z.write_all(&lib.as_bytes().repeat(5000)).unwrap();
        }
        z.finish().unwrap();
        buf.into_inner()
    }

    fn wheel(base: &str, name: &str, bytes: &[u8], libs: &[&str]) -> Wheel {
        Wheel {
            package: name.into(),
            version: "1.0".into(),
            url: format!("{base}/packages/ab/{name}-1.0-py3-none-any.whl"),
            bytes: bytes.len() as u64,
            sha256: Sha256::digest(bytes).iter().map(|b| format!("{b:02x}")).collect(),
            libs: libs.iter().map(|s| (*s).to_string()).collect(),
        }
    }

    struct Setup {
        _dir: tempfile::TempDir,
        opts: InstallOptions,
        seen: Arc<Mutex<Vec<String>>>,
        blobs: Vec<Vec<u8>>,
    }

    fn setup(cut: usize) -> Setup {
        let dir = tempfile::tempdir().unwrap();
        let a = fake_wheel(&["libonnxruntime.so.1.31.1", "libonnxruntime_providers_cuda.so"]);
        let b = fake_wheel(&["libcudart.so.13", "libcudart.so.13.extra"]);
        let mut files = HashMap::new();
        files.insert("ort-1.0-py3-none-any.whl".to_string(), a.clone());
        files.insert("cudart-1.0-py3-none-any.whl".to_string(), b.clone());
        let (base, seen) = serve(files, cut);
        let wheels = vec![
            wheel(&base, "ort", &a, &["libonnxruntime.so.1.31.1", "libonnxruntime_providers_cuda.so"]),
            wheel(&base, "cudart", &b, &["libcudart.so.13"]),
        ];
        let opts = InstallOptions {
            dest: dir.path().join("cache/onnxruntime-gpu-1.31.1"),
            download_dir: dir.path().join("cache/dl"),
            from: None,
            wheels,
            force: false,
        };
        Setup { _dir: dir, opts, seen, blobs: vec![a, b] }
    }

    fn run(opts: &InstallOptions) -> (Result<PathBuf, InstallError>, Vec<InstallEvent>) {
        let mut events = Vec::new();
        let r = install(opts, &mut |e| events.push(e.clone()), &|| false);
        (r, events)
    }

    #[test]
    fn wheels_are_verified_and_their_libraries_installed_flat_in_one_step() {
        let s = setup(0);
        let before = plan(&s.opts);
        assert!(!before.installed);
        assert_eq!(before.download_bytes, (s.blobs[0].len() + s.blobs[1].len()) as f64);
        let (r, events) = run(&s.opts);
        let dir = r.expect("installs");
        assert_eq!(dir, s.opts.dest);
        for lib in ["libonnxruntime.so.1.31.1", "libonnxruntime_providers_cuda.so", "libcudart.so.13"] {
            let meta = fs::metadata(dir.join(lib)).expect(lib);
            use std::os::unix::fs::PermissionsExt;
            assert_eq!(meta.permissions().mode() & 0o777, 0o755, "{lib}");
            assert_eq!(fs::read(dir.join(lib)).unwrap(), lib.as_bytes().repeat(5000), "{lib} unpacked whole");
        }
        assert!(!dir.join("libcudart.so.13.extra").exists(), "only the listed libraries");
        assert!(is_installed(&dir, &s.opts.wheels) && plan(&s.opts).installed);
        assert!(matches!(events.first(), Some(InstallEvent::Downloading { .. })), "{events:?}");
        assert!(events.iter().any(|e| matches!(e, InstallEvent::Verified { file } if file.starts_with("cudart"))));
        assert!(matches!(events.last(), Some(InstallEvent::Installed { .. })));
        // Downloads are gone once installed; nothing half-built is left.
        let left: Vec<_> = fs::read_dir(&s.opts.download_dir).unwrap().flatten().map(|e| e.file_name()).collect();
        assert!(left.iter().all(|n| n.to_string_lossy().starts_with('.')), "{left:?}");
        let parent: Vec<_> = fs::read_dir(dir.parent().unwrap()).unwrap().flatten().map(|e| e.file_name()).collect();
        assert!(!parent.iter().any(|n| n.to_string_lossy().contains("installing")), "{parent:?}");

        // A library cut short afterwards (a power cut, a damaged disk): the
        // install no longer counts, the library is not loaded, the runtime
        // search passes over it.
        assert!(intact(&dir, "libcudart.so.13"));
        let lib = dir.join("libonnxruntime.so.1.31.1");
        let whole = fs::read(&lib).unwrap();
        fs::write(&lib, &whole[..whole.len() / 2]).unwrap();
        assert!(!intact(&dir, "libonnxruntime.so.1.31.1"));
        assert!(intact(&dir, "libcudart.so.13"), "the others are whole");
        assert!(!is_installed(&dir, &s.opts.wheels) && !plan(&s.opts).installed);
        let found = super::super::library::find_library(Some(&lib), crate::units::Device::Cpu);
        assert!(found.is_err(), "a damaged library is not loaded: {found:?}");
        // Installed again: whole.
        let (r, _) = run(&s.opts);
        r.expect("installs again");
        assert_eq!(fs::read(&lib).unwrap(), whole);
        assert!(is_installed(&dir, &s.opts.wheels));
    }

    #[test]
    fn a_wrong_checksum_is_refused_and_the_installed_version_stays() {
        let s = setup(0);
        run(&s.opts).0.expect("first install");
        let mut bad = s.opts.clone();
        bad.wheels[1].sha256 = "0".repeat(64);
        let (r, events) = run(&bad);
        let err = r.expect_err("refused");
        assert!(
            matches!(&err, InstallError::Checksum { file, expected, actual, theirs: false }
                if file.starts_with("cudart") && *expected == "0".repeat(64) && *actual == s.opts.wheels[1].sha256),
            "{err:?}"
        );
        assert!(err.to_string().contains("not the file Stemroom expects"), "{err}");
        assert!(!events.iter().any(|e| matches!(e, InstallEvent::Unpacking { .. })), "nothing unpacked");
        assert!(!s.opts.download_dir.join(bad.wheels[1].file_name()).exists(), "the bad download is removed");
        assert!(is_installed(&s.opts.dest, &s.opts.wheels), "the earlier install is untouched");
        assert!(!is_installed(&s.opts.dest, &bad.wheels));
    }

    #[test]
    fn an_interrupted_download_resumes_where_it_stopped() {
        let s = setup(1);
        let err = run(&s.opts).0.expect_err("the first connection is cut");
        assert!(matches!(err, InstallError::Download { .. }), "{err:?}");
        assert!(err.to_string().contains("resumes"), "{err}");
        assert!(!s.opts.dest.exists());
        run(&s.opts).0.expect("the second run completes");
        let seen = s.seen.lock().unwrap();
        let half = s.blobs[0].len() / 2;
        assert!(
            seen.iter().any(|h| h.to_ascii_lowercase().contains(&format!("range: bytes={half}-"))),
            "resumed from byte {half}: {seen:?}"
        );
        assert!(is_installed(&s.opts.dest, &s.opts.wheels));
    }

    #[test]
    fn wheels_already_downloaded_install_without_the_network() {
        let s = setup(0);
        let from = s.opts.dest.parent().unwrap().join("offline");
        fs::create_dir_all(&from).unwrap();
        let mut opts = s.opts.clone();
        for (w, blob) in opts.wheels.iter_mut().zip(&s.blobs) {
            fs::write(from.join(w.file_name()), blob).unwrap();
            w.url = format!("http://127.0.0.1:9/nowhere/{}", w.file_name());
        }
        opts.from = Some(from.clone());
        assert_eq!(plan(&opts).download_bytes, 0.0);
        // One cut short in the folder: said by name, nothing downloaded.
        let first = from.join(opts.wheels[0].file_name());
        fs::write(&first, &s.blobs[0][..10]).unwrap();
        let mut short = opts.clone();
        short.wheels[0].url = s.opts.wheels[0].url.clone();
        let e = run(&short).0.expect_err("a short wheel");
        assert!(e.to_string().contains(&first.display().to_string()) && e.to_string().contains("10 bytes"), "{e}");
        assert!(s.seen.lock().unwrap().is_empty(), "no request made");
        fs::write(&first, &s.blobs[0]).unwrap();
        run(&opts).0.expect("installs from the folder");
        assert!(is_installed(&opts.dest, &opts.wheels));
        assert!(s.seen.lock().unwrap().is_empty(), "no request made");
        assert!(from.join(opts.wheels[0].file_name()).exists(), "the user's files stay");
    }

    #[test]
    fn cancel_a_damaged_wheel_and_a_server_error_leave_nothing_installed() {
        let s = setup(0);
        let err = install(&s.opts, &mut |_| {}, &|| true).expect_err("cancelled");
        assert!(matches!(err, InstallError::Cancelled), "{err:?}");
        assert!(!s.opts.dest.exists());

        let mut missing = s.opts.clone();
        missing.wheels[1].libs.push("libcudnn.so.9".into());
        let err = run(&missing).0.expect_err("the wheel lacks a library");
        assert!(matches!(&err, InstallError::Archive { reason, .. } if reason.contains("libcudnn.so.9")), "{err:?}");
        assert!(!s.opts.dest.exists());

        let mut gone = s.opts.clone();
        gone.wheels[0].url = gone.wheels[0].url.replace("ort-1.0", "missing-1.0");
        let err = run(&gone).0.expect_err("404");
        assert!(err.to_string().contains("HTTP 404"), "{err}");
    }

    /// What a killed install left (its half-built folder, a set-aside old
    /// one) goes when the plan is asked for, but not while an install runs.
    #[test]
    fn a_killed_installs_folders_go_unless_an_install_runs() {
        let s = setup(0);
        let parent = s.opts.dest.parent().unwrap().to_path_buf();
        let building = parent.join(".onnxruntime-gpu-1.31.1.installing");
        let old = parent.join(".onnxruntime-gpu-1.31.1.old");
        for d in [&building, &old] {
            std::fs::create_dir_all(d).unwrap();
            std::fs::write(d.join("libcudnn.so.9"), b"half").unwrap();
        }
        std::fs::create_dir_all(&s.opts.dest).unwrap();
        let running = crate::download::FileLock::take(&s.opts.download_dir.join(".install.lock")).unwrap();
        let _ = plan(&s.opts);
        assert!(building.exists() && old.exists(), "a running install's folders stay");
        drop(running);
        let _ = plan(&s.opts);
        assert!(!building.exists() && !old.exists(), "a killed install's folders go");
        let left: Vec<_> = std::fs::read_dir(&parent).unwrap().flatten().map(|e| e.file_name()).collect();
        assert_eq!(left.len(), 2, "the install and the downloads' folder only: {left:?}");

        // Killed between setting the old install aside and renaming the new
        // one in: the complete install set aside comes back; a partial one
        // (half removed) does not, it goes.
        std::fs::remove_dir_all(&s.opts.dest).unwrap();
        run(&s.opts).0.expect("a real install");
        std::fs::rename(&s.opts.dest, &old).unwrap();
        let _ = plan(&s.opts);
        assert!(is_installed(&s.opts.dest, &s.opts.wheels), "back in place, whole");
        assert!(!old.exists());
        std::fs::rename(&s.opts.dest, &old).unwrap();
        std::fs::remove_file(old.join("libcudart.so.13")).unwrap();
        let _ = plan(&s.opts);
        assert!(!s.opts.dest.exists() && !old.exists(), "a partial install is not put back");
    }

    /// A second install while one runs waits for it (not "busy"), and when
    /// that one installed the same wheels, downloads nothing again; its
    /// wait can be cancelled.
    #[test]
    fn a_second_install_waits_for_the_first_and_uses_it() {
        let s = setup(0);
        run(&s.opts).0.expect("the first install");
        let downloads = s.seen.lock().unwrap().len();
        // The first one, as the second sees it: the lock held.
        let first = crate::download::FileLock::take(&s.opts.download_dir.join(".install.lock")).unwrap();
        let err = install(&s.opts, &mut |_| {}, &|| true).expect_err("cancelled while waiting");
        assert!(matches!(err, InstallError::Cancelled), "{err:?}");
        let opts = s.opts.clone();
        let second = std::thread::spawn(move || run(&opts));
        std::thread::sleep(std::time::Duration::from_millis(600));
        assert!(!second.is_finished(), "the second install waits");
        drop(first);
        let (got, events) = second.join().unwrap();
        assert_eq!(got.expect("installed"), s.opts.dest);
        assert!(matches!(events.as_slice(), [InstallEvent::Installed { .. }]), "{events:?}");
        assert_eq!(s.seen.lock().unwrap().len(), downloads, "nothing downloaded again");
        // `--force` (a repair) that waited (for a sweep, say) installs
        // again: the wheels are fetched again (they went after the first).
        let mut force = s.opts.clone();
        force.force = true;
        let held = crate::download::FileLock::take(&s.opts.download_dir.join(".install.lock")).unwrap();
        let repair = std::thread::spawn(move || run(&force));
        std::thread::sleep(std::time::Duration::from_millis(600));
        drop(held);
        let (got, events) = repair.join().unwrap();
        got.expect("installed again");
        assert!(events.len() > 1, "a real install: {events:?}");
        assert!(s.seen.lock().unwrap().len() > downloads, "downloaded again");
    }

    /// These machines (x86_64, Debian's glibc) take the pinned wheels:
    /// the check must not refuse them.
    #[test]
    fn this_machine_takes_the_pinned_wheels() {
        assert_eq!(super::unsupported_machine(), None);
    }

    #[test]
    fn the_pins_are_complete() {
        let wheels = gpu_wheels();
        let libs: Vec<&str> = wheels.iter().flat_map(|w| w.libs.iter().map(String::as_str)).collect();
        for need in super::super::gpu::CUDA_LIBRARIES.iter().chain(super::super::gpu::PRELOAD_LIBRARIES) {
            assert!(libs.contains(need), "{need} is installed by some wheel");
        }
        for lib in [super::super::ORT_LIBRARY_FILE, super::super::gpu::CUDA_PROVIDER_FILE] {
            assert!(libs.contains(&lib), "{lib}");
        }
        for w in wheels.iter().chain(&cpu_wheels()) {
            assert!(w.url.starts_with("https://files.pythonhosted.org/packages/"), "{}", w.url);
            let file = w.file_name().replace('_', "-");
            assert!(file.starts_with(&format!("{}-{}-", w.package, w.version)), "{file}");
            assert!(w.sha256.len() == 64 && w.sha256.bytes().all(|b| b.is_ascii_hexdigit()), "{}", w.package);
        }
        // The size the messages quote.
        let total: u64 = wheels.iter().map(|w| w.bytes).sum();
        assert!((1.5e9..1.6e9).contains(&(total as f64)), "{total}");
        assert!(super::super::gpu::INSTALL_SIZE.starts_with("1.6 GB"));
    }
}

//! Settings, what the app knows about its model, runtime and tools, and the
//! model download.

use std::path::Path;

use serde::Serialize;
use specta::Type;
use std::sync::atomic::Ordering;
use stemroom_engine::audio::decode::{ffmpeg_status, FfmpegStatus};
use stemroom_engine::model::ModelStatus;

use stemroom_engine::runtime::gpu::{self, GpuInfo};
use stemroom_engine::runtime::install::{self, InstallEvent};
use stemroom_engine::runtime::RuntimeStatus;
use stemroom_library::queue::Settings;
use tauri::ipc::Channel;
use tauri::AppHandle;

use super::S;
use crate::dialog::pick_folder;
use crate::error::AppError;

/// Facts the Settings page and the first-run banner show.
#[derive(Debug, Clone, Serialize, Type)]
#[serde(rename_all = "camelCase")]
pub struct AppInfo {
    pub version: String,
    pub data_dir: String,
    pub library_dir: String,
    pub models: Vec<ModelStatus>,
    pub runtime: RuntimeStatus,
    /// yt-dlp (for links): where, which version, its JavaScript runtime and
    /// solver scripts, or why not.
    pub ytdlp: stemroom_library::link::YtDlpStatus,
    /// ffmpeg (for AC-3, WMA, HE-AAC and other formats only it decodes).
    pub ffmpeg: FfmpegStatus,
    /// Provider of the latest job (`cpu`, `cuda`), `None` before any.
    pub provider_in_use: Option<String>,
}

#[tauri::command]
#[specta::specta]
pub async fn app_info(state: S<'_>) -> Result<AppInfo, AppError> {
    // Off the main thread: it checks the model files and runs `yt-dlp --version`.
    let state = state.inner().clone();
    tauri::async_runtime::spawn_blocking(move || {
        Ok(AppInfo {
            version: env!("CARGO_PKG_VERSION").into(),
            data_dir: state.data_dir.to_string_lossy().into_owned(),
            library_dir: state.worker.library_dir().to_string_lossy().into_owned(),
            models: state.models(),
            runtime: state.runtime(),
            ytdlp: stemroom_library::link::status(state.queue.settings()?.ytdlp_path.as_deref().map(Path::new)),
            ffmpeg: ffmpeg_status(),
            provider_in_use: state.queue.last_provider()?,
        })
    })
    .await
    .map_err(|e| AppError::internal(e.to_string()))?
}

#[tauri::command]
#[specta::specta]
pub async fn pick_library_dir(app: AppHandle) -> Result<Option<String>, AppError> {
    let picked = pick_folder(&app, "Choose the library folder").await?;
    Ok(picked.map(|p| p.to_string_lossy().into_owned()))
}

#[tauri::command]
#[specta::specta]
pub fn get_settings(state: S<'_>) -> Result<Settings, AppError> {
    Ok(state.queue.settings()?)
}

#[tauri::command]
#[specta::specta]
pub fn save_settings(state: S<'_>, settings: Settings) -> Result<Settings, AppError> {
    state.queue.save_settings(&settings)?;
    crate::state::apply_ffmpeg_path(&settings);
    state.worker.start(settings.concurrent_jobs as usize);
    Ok(state.queue.settings()?)
}

#[tauri::command]
#[specta::specta]
pub async fn fetch_model(state: S<'_>, id: String) -> Result<ModelStatus, AppError> {
    let st = state.inner().clone();
    tauri::async_runtime::spawn_blocking(move || {
        let info = st.manifest.get(&id).map_err(stemroom_engine::Error::from)?.clone();
        let dest = stemroom_engine::model::default_fetch_dir()
            .ok_or_else(|| AppError::internal("no cache directory (HOME is not set)"))?;
        let dirs = stemroom_engine::model::model_search_dirs(None);
        stemroom_engine::model::obtain(&st.manifest, &info, &dirs, &dest).map_err(stemroom_engine::Error::from)?;
        st.models().into_iter().find(|m| m.id == id).ok_or_else(|| AppError::internal("model vanished after fetching"))
    })
    .await
    .map_err(|e| AppError::internal(e.to_string()))?
}

/// GPU support: what this machine has, whether CUDA runs, and what
/// installing it would download.
#[derive(Debug, Clone, Serialize, Type)]
#[serde(rename_all = "camelCase")]
pub struct GpuSupport {
    /// The NVIDIA driver's version, if one is loaded.
    pub driver_version: Option<String>,
    /// GPUs `nvidia-smi` lists (name, memory in MiB).
    pub gpus: Vec<GpuInfo>,
    /// Whether GPU support (ONNX Runtime GPU, CUDA, cuDNN) is installed.
    pub installed: bool,
    /// Whether separations can run on CUDA.
    pub usable: bool,
    /// Why CUDA is not used, with the fix.
    pub problem: Option<String>,
    /// Bytes installing would download.
    pub download_bytes: f64,
    /// Where it goes.
    pub install_dir: String,
    /// The CPU build of ONNX Runtime is already loaded in this process: the
    /// app must restart to use the GPU build.
    pub restart_needed: bool,
}

/// Where GPU support is installed, in the per-user cache.
fn gpu_install_options() -> Result<install::InstallOptions, AppError> {
    let cache = stemroom_engine::paths::cache_dir()
        .ok_or_else(|| AppError::internal("no cache directory (HOME is not set)"))?;
    Ok(install::gpu_options(&cache, None))
}

fn gpu_support_now() -> Result<GpuSupport, AppError> {
    let opts = gpu_install_options()?;
    let plan = install::plan(&opts);
    let facts = gpu::facts();
    let diagnosis = gpu::diagnose(&facts);
    let loaded_elsewhere = stemroom_engine::runtime::loaded_library().is_some_and(|p| !p.starts_with(&opts.dest));
    Ok(GpuSupport {
        driver_version: facts.driver_version,
        gpus: facts.gpus,
        installed: plan.installed,
        usable: diagnosis.is_ok(),
        problem: diagnosis.err().map(|why| why.message()),
        download_bytes: plan.download_bytes,
        install_dir: plan.dir,
        restart_needed: plan.installed && loaded_elsewhere,
    })
}

#[tauri::command]
#[specta::specta]
pub async fn gpu_support() -> Result<GpuSupport, AppError> {
    // Off the main thread: it runs nvidia-smi.
    tauri::async_runtime::spawn_blocking(gpu_support_now).await.map_err(|e| AppError::internal(e.to_string()))?
}

/// Download, verify and install GPU support (one install at a time),
/// reporting progress on `channel`; cancelled by [`cancel_gpu_install`].
#[tauri::command]
#[specta::specta]
pub async fn install_gpu_support(state: S<'_>, channel: Channel<InstallEvent>) -> Result<GpuSupport, AppError> {
    state
        .gpu_install
        .run("GPU support is already being installed.", move |cancel| {
            let opts = gpu_install_options()?;
            install::install(&opts, &mut |e| drop(channel.send(e.clone())), &|| cancel.load(Ordering::Relaxed))
                .map_err(install_error)?;
            gpu_support_now()
        })
        .await
}

/// Download, verify and install the CPU build of ONNX Runtime (the pinned
/// PyPI wheel, 24 MB, checked by sha256) into the per-user cache where the
/// app looks for it: the fix the setup banner offers when the runtime is
/// missing. Shares the one-install-at-a-time slot (and cancel) with GPU
/// support.
#[tauri::command]
#[specta::specta]
pub async fn install_runtime(state: S<'_>, channel: Channel<InstallEvent>) -> Result<RuntimeStatus, AppError> {
    let app = state.inner().clone();
    state
        .gpu_install
        .run("ONNX Runtime or GPU support is already being installed.", move |cancel| {
            let cache = stemroom_engine::paths::cache_dir()
                .ok_or_else(|| AppError::internal("no cache directory (HOME is not set)"))?;
            let opts = install::cpu_options(&cache, None);
            install::install(&opts, &mut |e| drop(channel.send(e.clone())), &|| cancel.load(Ordering::Relaxed))
                .map_err(install_error)?;
            Ok(app.runtime())
        })
        .await
}

/// Stop the running GPU support install (what it downloaded is kept, so a
/// later install resumes).
#[tauri::command]
#[specta::specta]
pub fn cancel_gpu_install(state: S<'_>) {
    state.gpu_install.cancel();
}

fn install_error(e: install::InstallError) -> AppError {
    AppError { code: e.code(), message: e.to_string() }
}

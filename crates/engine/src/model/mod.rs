//! The model manifest ([`manifest`]) and model files: finding and verifying
//! them ([`locate`]), downloading them ([`fetch`]).
//!
//! `models/manifest.json` at the repository root is the one description of each
//! model (file, size, sha256, sources, sample rate, segment length, STFT
//! parameters, tensor names). It is compiled into the binary, so nothing else
//! restates these facts; a `manifest.json` inside a model directory given at
//! run time takes precedence, so new models can be described without a rebuild.

pub mod derive;
pub mod fetch;
pub mod locate;
pub mod manifest;

use std::path::PathBuf;

pub use derive::{derive, make_if_missing, obtain};
pub use fetch::{default_download_dir, default_fetch_dir, fetch, fetch_with, FetchOptions};
pub use locate::{locate, model_search_dirs, remove_own, sha256_file, statuses, verify, InstalledModel, ModelStatus};
pub use manifest::{
    Derivation, FetchSource, InputNames, Manifest, ModelInfo, OutputNames, StftParams, BUILTIN_MANIFEST,
};

/// Errors about models: the manifest, and the files it describes.
#[derive(Debug, thiserror::Error)]
pub enum ModelError {
    #[error("model manifest {path} is invalid: {reason}")]
    Manifest { path: String, reason: String },
    #[error("unknown model '{id}'; known models: {known}")]
    UnknownModel { id: String, known: String },
    #[error("model file {file} not found (looked in: {searched}).\n  {how}")]
    NotFound { file: String, searched: String, how: String },
    #[error("model file {path} is corrupt: {reason}.\n  Delete it and fetch it again with: {how}")]
    Corrupt { path: PathBuf, reason: String, how: String },
    /// Reading a model, or writing one being installed (its download, its
    /// folder, its lock): says which file and what the system said (a full
    /// disk, a read-only folder).
    #[error("model file {path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("model fetch failed: {0}")]
    Network(String),
    /// Making a derived model failed (its tools could not be installed or
    /// its recipe failed).
    #[error("cannot make the model {id}: {reason}")]
    Derive { id: String, reason: String },
    /// The caller cancelled a fetch (a partial download stays and resumes).
    #[error("cancelled")]
    Cancelled,
}

/// `map_err` for an I/O error at `path`: [`ModelError::Io`] naming it.
pub(crate) fn io_at(path: &std::path::Path) -> impl FnOnce(std::io::Error) -> ModelError {
    let path = path.to_path_buf();
    move |source| ModelError::Io { path, source }
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
        // Every source has its name and lane colour; complements and
        // unknown names get a fallback.
        for s in &h.sources {
            let st = h.stem_style(s);
            assert!(st.color.starts_with('#') && st.color.len() == 7, "{s}: {st:?}");
            assert!(h.stem_styles.contains_key(s), "{s} has a style");
        }
        assert_eq!(h.stem_style("vocals").label, "Vocals");
        assert_eq!(h.stem_style("no_vocals").label, "No vocals");
        assert_eq!(h.stem_style("minus_vocals").label, "Mix minus vocals");
        assert_eq!(h.stem_style("guitar_2").label, "Guitar 2");
    }

    #[test]
    fn missing_and_corrupt_models_are_reported() {
        let m = Manifest::builtin().expect("manifest parses");
        let h = m.get("htdemucs").expect("htdemucs present");
        let dir = tempfile::tempdir().expect("tempdir");
        let err = locate(h, &[dir.path().to_path_buf()], false).expect_err("missing");
        assert!(matches!(err, ModelError::NotFound { .. }));
        assert!(err.to_string().contains("stemroom models --fetch htdemucs"), "{err}");
        std::fs::write(dir.path().join(&h.file), b"not a model").expect("write");
        let err = locate(h, &[dir.path().to_path_buf()], false).expect_err("corrupt");
        assert!(matches!(err, ModelError::Corrupt { .. }), "{err}");
    }
}

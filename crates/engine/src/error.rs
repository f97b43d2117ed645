//! The error type every public engine call returns, and the stable codes front
//! ends branch on (CLI exit codes, UI `{code, message}`), never on message text.
//!
//! [`ErrorCode`] is the one vocabulary of codes for every layer: the library
//! and playback crates have error types of their own whose `code()` maps onto
//! it, so a front end branches the same way whichever layer failed.

use std::path::PathBuf;

use crate::audio::decode::DecodeError;
use crate::audio::encode::EncodeError;
use crate::model::ModelError;
use crate::runtime::RuntimeError;
use crate::separate::NetworkError;

/// Stable classification of an [`Error`], for exit codes and UI branching.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[cfg_attr(feature = "specta", derive(specta::Type))]
#[serde(rename_all = "snake_case")]
pub enum ErrorCode {
    /// The input file is missing, unreadable, not audio, empty or damaged.
    BadInput,
    /// The model file is missing, has the wrong size or checksum.
    MissingModel,
    /// The ONNX Runtime library could not be found or loaded.
    MissingRuntime,
    /// The output location cannot be written.
    Output,
    /// Invalid options (e.g. an unknown stem name for two-stem mode).
    InvalidOptions,
    /// The caller cancelled the run.
    Cancelled,
    /// No audio output device, or the device failed (the player).
    AudioDevice,
    /// A link could not be fetched (site, network, unavailable media).
    Download,
    /// A helper program is missing or too old (yt-dlp for links, ffmpeg for
    /// the formats only it decodes).
    MissingTool,
    /// Files of the names asked for exist already (and replacing them was
    /// not asked for).
    Exists,
    /// Anything else: a bug or an unexpected runtime failure.
    Internal,
}

impl ErrorCode {
    /// The snake_case name used in JSON events and the UI.
    pub fn as_str(self) -> &'static str {
        match self {
            ErrorCode::BadInput => "bad_input",
            ErrorCode::MissingModel => "missing_model",
            ErrorCode::MissingRuntime => "missing_runtime",
            ErrorCode::AudioDevice => "audio_device",
            ErrorCode::Download => "download",
            ErrorCode::MissingTool => "missing_tool",
            ErrorCode::Exists => "exists",
            ErrorCode::Output => "output",
            ErrorCode::InvalidOptions => "invalid_options",
            ErrorCode::Cancelled => "cancelled",
            ErrorCode::Internal => "internal",
        }
    }
}

/// Everything that can stop a separation.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error(transparent)]
    Decode(#[from] DecodeError),
    #[error(transparent)]
    Encode(#[from] EncodeError),
    #[error(transparent)]
    Model(#[from] ModelError),
    #[error(transparent)]
    Runtime(#[from] RuntimeError),
    #[error(transparent)]
    Network(#[from] NetworkError),
    #[error("invalid option: {0}")]
    InvalidOptions(String),
    #[error("cannot write output {path}: {source}")]
    Output {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{} already exist{}: {}", if paths.len() == 1 { "a file of this name" } else { "files of these names" }, if paths.len() == 1 { "s" } else { "" }, paths.iter().map(|p| p.display().to_string()).collect::<Vec<_>>().join(", "))]
    Exists { paths: Vec<PathBuf> },
    #[error("temporary storage failed: {0}")]
    Scratch(#[source] std::io::Error),
    #[error("resampling failed: {0}")]
    Resample(String),
    #[error("cancelled")]
    Cancelled,
    /// A bug: something that should not happen (e.g. a panic caught by a worker).
    #[error("internal error: {0}")]
    Internal(String),
}

impl Error {
    /// The stable code of this error.
    pub fn code(&self) -> ErrorCode {
        match self {
            Error::Decode(DecodeError::NeedsFfmpeg { .. }) => ErrorCode::MissingTool,
            Error::Decode(_) => ErrorCode::BadInput,
            Error::Encode(EncodeError::Io { .. }) => ErrorCode::Output,
            Error::Encode(_) => ErrorCode::Internal,
            Error::Model(ModelError::Network(_)) => ErrorCode::Download,
            Error::Model(ModelError::Cancelled) => ErrorCode::Cancelled,
            Error::Model(ModelError::Derive { .. }) => ErrorCode::MissingTool,
            // A name no manifest knows (`-n htdemucs_ft`) is a wrong option,
            // not a file to fetch.
            Error::Model(ModelError::UnknownModel { .. }) => ErrorCode::InvalidOptions,
            Error::Model(_) => ErrorCode::MissingModel,
            Error::Runtime(RuntimeError::LibraryNotFound { .. } | RuntimeError::Load { .. }) => {
                ErrorCode::MissingRuntime
            }
            Error::Runtime(RuntimeError::DeviceUnavailable { .. }) => ErrorCode::MissingRuntime,
            Error::Runtime(_) => ErrorCode::Internal,
            Error::Network(_) => ErrorCode::Internal,
            Error::InvalidOptions(_) => ErrorCode::InvalidOptions,
            Error::Output { .. } => ErrorCode::Output,
            Error::Exists { .. } => ErrorCode::Exists,
            Error::Scratch(_) => ErrorCode::Output,
            Error::Resample(_) => ErrorCode::Internal,
            Error::Cancelled => ErrorCode::Cancelled,
            Error::Internal(_) => ErrorCode::Internal,
        }
    }
}

/// What a caught panic said (`panic!("…")` with a literal or a formatted
/// message), `None` for any other payload.
pub fn panic_message(payload: &(dyn std::any::Any + Send)) -> Option<String> {
    payload.downcast_ref::<&str>().map(|s| s.to_string()).or_else(|| payload.downcast_ref::<String>().cloned())
}

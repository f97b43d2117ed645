//! The library layer's error: the engine's, a link's or the database's,
//! with one stable [`ErrorCode`] for front ends.

use std::path::PathBuf;

use stemroom_engine::ErrorCode;

use crate::link::LinkError;
use crate::queue::QueueError;

/// Everything that can stop a queued job.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The separation itself failed.
    #[error(transparent)]
    Engine(stemroom_engine::Error),
    /// A link could not be resolved or downloaded.
    #[error(transparent)]
    Link(LinkError),
    /// The queue database failed.
    #[error(transparent)]
    Queue(#[from] QueueError),
    /// The library folder cannot be written.
    #[error("cannot write {path}: {source}")]
    Output {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    /// The song was separated but could not be moved into the library
    /// folder `path` (a full disk, a folder gone read-only, every name for
    /// its title taken). Its stems stay in the job's working folder and a
    /// retry files them without separating again.
    #[error(
        "the song could not be filed in {path}: {source}. Its stems are kept: free space or fix the folder, then retry"
    )]
    NotFiled {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    /// The job was cancelled (by the user, or by shutdown).
    #[error("cancelled")]
    Cancelled,
    /// A bug: something that should not happen (e.g. a panic caught by a worker).
    #[error("internal error: {0}")]
    Internal(String),
}

impl From<stemroom_engine::Error> for Error {
    fn from(e: stemroom_engine::Error) -> Self {
        match e {
            stemroom_engine::Error::Cancelled => Error::Cancelled,
            other => Error::Engine(other),
        }
    }
}

impl From<LinkError> for Error {
    fn from(e: LinkError) -> Self {
        match e {
            LinkError::Cancelled => Error::Cancelled,
            other => Error::Link(other),
        }
    }
}

impl Error {
    /// The stable code of this error.
    pub fn code(&self) -> ErrorCode {
        match self {
            Error::Engine(e) => e.code(),
            Error::Link(e) => e.code(),
            Error::Queue(e) => e.code(),
            Error::Output { .. } | Error::NotFiled { .. } => ErrorCode::Output,
            Error::Cancelled => ErrorCode::Cancelled,
            Error::Internal(_) => ErrorCode::Internal,
        }
    }
}

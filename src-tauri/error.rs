//! Errors as the window sees them: `{code, message}`; the UI branches on
//! `code`, never on the message.

use serde::Serialize;
use specta::Type;
use stemroom_engine::ErrorCode;
use stemroom_library::queue::QueueError;
use stemroom_library::worker::plain_message;

/// An error as the UI sees it: it branches on `code`, shows `message`.
#[derive(Debug, Clone, Serialize, Type)]
pub struct AppError {
    pub code: ErrorCode,
    pub message: String,
}

impl From<QueueError> for AppError {
    fn from(e: QueueError) -> Self {
        AppError { code: e.code(), message: e.to_string() }
    }
}

impl From<stemroom_library::Error> for AppError {
    fn from(e: stemroom_library::Error) -> Self {
        AppError { code: e.code(), message: plain_message(&e) }
    }
}

impl From<stemroom_engine::Error> for AppError {
    fn from(e: stemroom_engine::Error) -> Self {
        stemroom_library::Error::from(e).into()
    }
}

impl AppError {
    pub fn internal(message: impl Into<String>) -> Self {
        AppError { code: ErrorCode::Internal, message: message.into() }
    }
    /// Something the person chose cannot be used (`invalid_options`).
    pub fn invalid(message: impl Into<String>) -> Self {
        AppError { code: ErrorCode::InvalidOptions, message: message.into() }
    }
}

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
    /// The queue's refusals in the person's words (the window names songs
    /// by title, never by the ids these carry).
    fn from(e: QueueError) -> Self {
        let message = match &e {
            QueueError::NotFound(_) => {
                "That song is no longer in the queue or the library (it was removed meanwhile).".into()
            }
            QueueError::WrongState { status, action, .. } => {
                let now = match *status {
                    "queued" => "waiting in the queue",
                    "running" => "being separated",
                    "done" => "finished",
                    other => other,
                };
                let mut doing = action.to_string();
                if let Some(first) = doing.get_mut(..1) {
                    first.make_ascii_uppercase();
                }
                format!("{doing} it is not possible now: the song is {now}.")
            }
            _ => e.to_string(),
        };
        AppError { code: e.code(), message }
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
    /// A background task of a command that ended without an answer (it
    /// panicked, or the app is closing): logged with its details, shown
    /// in plain words (a task's panic message means nothing to a person).
    pub fn task_lost(e: impl std::fmt::Display) -> Self {
        tracing::error!("a command's background task ended without an answer: {e}");
        AppError::internal("Stemroom hit an internal error doing this (details are in its log). Please try again.")
    }
    /// Something the person chose cannot be used (`invalid_options`).
    pub fn invalid(message: impl Into<String>) -> Self {
        AppError { code: ErrorCode::InvalidOptions, message: message.into() }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn queue_refusals_name_no_ids() {
        let gone = AppError::from(QueueError::NotFound(42));
        assert!(!gone.message.contains("42") && gone.message.contains("removed meanwhile"), "{}", gone.message);
        let busy = AppError::from(QueueError::WrongState { id: 42, status: "running", action: "removing" });
        assert_eq!(busy.message, "Removing it is not possible now: the song is being separated.");
        assert_eq!(busy.code, ErrorCode::InvalidOptions);
    }
}

//! Measured seconds per segment on this machine (for ETAs), and which
//! provider ran last.

use rusqlite::{params, OptionalExtension};

use super::{Queue, QueueError};

impl Queue {
    /// The execution provider of the most recently started job (`cpu`,
    /// `cuda`), i.e. what separation really runs on.
    ///
    /// # Errors
    /// Database errors.
    pub fn last_provider(&self) -> Result<Option<String>, QueueError> {
        Ok(self
            .conn()
            .query_row(
                "SELECT provider FROM jobs WHERE provider IS NOT NULL ORDER BY COALESCE(started_ms, 0) DESC, id DESC LIMIT 1",
                [],
                |r| r.get(0),
            )
            .optional()?)
    }

    /// Fold one measured segment time (seconds of network plus bookkeeping
    /// per segment) into this machine's running mean for `model` on
    /// `provider`. The mean weights recent runs more (exponential, factor
    /// 0.2) once 5 samples exist, so it follows driver or hardware changes.
    ///
    /// # Errors
    /// Database errors.
    pub fn record_segment_seconds(&self, model: &str, provider: &str, seconds: f64) -> Result<(), QueueError> {
        if !seconds.is_finite() || seconds <= 0.0 {
            return Ok(());
        }
        self.conn().execute(
            "INSERT INTO segment_times (model, provider, seconds, samples) VALUES (?1, ?2, ?3, 1)
             ON CONFLICT(model, provider) DO UPDATE SET
               seconds = CASE WHEN samples < 5 THEN (seconds * samples + excluded.seconds) / (samples + 1)
                              ELSE seconds * 0.8 + excluded.seconds * 0.2 END,
               samples = samples + 1",
            params![model, provider, seconds],
        )?;
        Ok(())
    }

    /// This machine's mean seconds per segment for `model` on `provider`.
    ///
    /// # Errors
    /// Database errors.
    pub fn segment_seconds(&self, model: &str, provider: &str) -> Result<Option<f64>, QueueError> {
        Ok(self
            .conn()
            .query_row(
                "SELECT seconds FROM segment_times WHERE model = ?1 AND provider = ?2",
                params![model, provider],
                |r| r.get(0),
            )
            .optional()?)
    }
}

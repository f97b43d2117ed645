//! Encoding off the caller's thread: a [`StemWriter`] whose samples go
//! through a bounded channel to a thread that owns the real writer, so a
//! separation (or an export) hands a block over and goes on while LAME or
//! FLAC encode it, and several stems encode at the same time.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::{sync_channel, Receiver, SyncSender};
use std::sync::Arc;
use std::thread::JoinHandle;

use super::{EncodeError, StemWriter};

/// Blocks in flight per stem. A separation block is at most one stride of
/// the model (258 k frames, ~2 MB of stereo `f32`), so two keep the writer
/// busy while bounding the queue to ~4 MB per stem.
const BLOCKS_IN_FLIGHT: usize = 2;

/// A writer running on its own thread (see the module docs).
pub struct ThreadedWriter {
    tx: Option<SyncSender<Vec<f32>>>,
    /// Buffers the thread gives back, reused for the next blocks.
    spare: Receiver<Vec<f32>>,
    thread: Option<JoinHandle<Result<(), EncodeError>>>,
    /// Set when the writer is dropped unfinished: the thread stops without
    /// completing the file (the caller removes it).
    abandoned: Arc<AtomicBool>,
}

impl ThreadedWriter {
    /// Move `inner` onto a new thread named `name`.
    ///
    /// # Errors
    /// [`EncodeError::Encoder`] when the thread cannot start.
    pub fn spawn(inner: Box<dyn StemWriter>, name: &str) -> Result<Self, EncodeError> {
        let (tx, rx) = sync_channel::<Vec<f32>>(BLOCKS_IN_FLIGHT);
        let (give_back, spare) = sync_channel::<Vec<f32>>(BLOCKS_IN_FLIGHT + 1);
        let abandoned = Arc::new(AtomicBool::new(false));
        let stop = abandoned.clone();
        let thread = std::thread::Builder::new()
            .name(name.to_string())
            .spawn(move || {
                let mut inner = inner;
                for block in rx {
                    if stop.load(Ordering::Acquire) {
                        return Ok(());
                    }
                    inner.write(&block)?;
                    let _ = give_back.try_send(block);
                }
                if stop.load(Ordering::Acquire) {
                    return Ok(());
                }
                inner.finish_or_stop(&stop)
            })
            .map_err(|e| EncodeError::Encoder { format: "thread", reason: e.to_string() })?;
        Ok(ThreadedWriter { tx: Some(tx), spare, thread: Some(thread), abandoned })
    }

    /// No more samples: the thread completes the file (a rescaling writer
    /// starts encoding now). Call [`StemWriter::finish`] to wait for it;
    /// closing every stem first lets them encode at the same time.
    pub fn close(&mut self) {
        self.tx = None;
    }

    /// [`StemWriter::finish`] that stops the thread's work (a rescaled
    /// stem's second encode) as soon as `cancelled` says so.
    ///
    /// # Errors
    /// As [`StemWriter::finish`]; [`EncodeError::Stopped`] when cancelled
    /// before the file was complete.
    pub fn finish_unless(mut self, cancelled: &dyn Fn() -> bool) -> Result<(), EncodeError> {
        self.tx = None;
        while self.thread.as_ref().is_some_and(|t| !t.is_finished()) {
            if cancelled() {
                self.abandoned.store(true, Ordering::Release);
                let _ = self.join();
                return Err(EncodeError::Stopped);
            }
            std::thread::sleep(std::time::Duration::from_millis(20));
        }
        self.join()
    }

    /// The thread's result once it has ended (after an error or `finish`).
    fn join(&mut self) -> Result<(), EncodeError> {
        self.tx = None;
        match self.thread.take().map(JoinHandle::join) {
            Some(Ok(result)) => result,
            Some(Err(_)) => {
                Err(EncodeError::Encoder { format: "thread", reason: "the encoder thread panicked".into() })
            }
            None => Ok(()),
        }
    }
}

impl StemWriter for ThreadedWriter {
    fn write(&mut self, interleaved: &[f32]) -> Result<(), EncodeError> {
        let mut block = self.spare.try_recv().unwrap_or_default();
        block.clear();
        block.extend_from_slice(interleaved);
        let sent = self.tx.as_ref().map(|tx| tx.send(block));
        match sent {
            Some(Ok(())) => Ok(()),
            // The thread stopped: its error says why.
            _ => match self.join() {
                Err(e) => Err(e),
                Ok(()) => {
                    Err(EncodeError::Encoder { format: "thread", reason: "the encoder thread ended early".into() })
                }
            },
        }
    }

    fn finish(mut self: Box<Self>) -> Result<(), EncodeError> {
        self.join()
    }
}

impl Drop for ThreadedWriter {
    fn drop(&mut self) {
        // An abandoned writer (a failed or cancelled run): the thread stops
        // without completing the file, and is waited for so that its files
        // are closed before the caller removes them.
        if self.thread.is_some() {
            self.abandoned.store(true, Ordering::Release);
            let _ = self.join();
        }
    }
}

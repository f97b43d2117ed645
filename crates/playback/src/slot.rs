//! The song a front end has open, when opening takes a while (peaks, the
//! audio device): a close or a later open that comes while one is opening
//! must win, or a player nobody sees would keep the device.
//!
//! Every open and close takes a number from one counter; an open stores its
//! result only if no other request came after it, checked and stored under
//! the same lock as a close clears the slot.
//!
//! A close names the open it closes (its key, chosen by the front end for
//! each open): a front end that leaves song A for song B (or for A again)
//! sends "close" and "open", and the two may be handled in either order. A
//! close handled after the next open began must not stop it.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Mutex, MutexGuard};

/// The open song (`T`), the request counter, the key of the song last
/// asked to open and the opening lock.
#[derive(Debug)]
pub struct OpenSlot<T> {
    current: Mutex<Option<T>>,
    requests: AtomicU64,
    /// The key given to the latest [`OpenSlot::begin_open`] (`u64::MAX`:
    /// none yet); written and read under `current`'s lock.
    latest: AtomicU64,
    /// What the latest [`OpenSlot::begin_open`] opens (its `what`, a song's
    /// id): [`OpenSlot::close_if`] for it overtakes that open too.
    latest_what: AtomicU64,
    /// What the open holding `opening` opens (`u64::MAX`: none yet): an
    /// open overtaken by a later one still runs until it looks, and a
    /// deletion of its song waits for it ([`OpenSlot::close_if`]).
    holder_what: AtomicU64,
    /// The request number of the open that stored the current song;
    /// written and read under `current`'s lock.
    stored_by: AtomicU64,
    opening: Mutex<()>,
}

impl<T> Default for OpenSlot<T> {
    fn default() -> Self {
        OpenSlot {
            current: Mutex::new(None),
            requests: AtomicU64::new(0),
            latest: AtomicU64::new(u64::MAX),
            latest_what: AtomicU64::new(u64::MAX),
            holder_what: AtomicU64::new(u64::MAX),
            stored_by: AtomicU64::new(0),
            opening: Mutex::new(()),
        }
    }
}

/// An open was overtaken by a close or a later open ([`OpenSlot::finish_open`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Overtaken;

/// An open in progress: holds the opening lock (one open at a time) and its
/// request number.
#[derive(Debug)]
pub struct Opening<'a> {
    request: u64,
    _one_at_a_time: MutexGuard<'a, ()>,
}

impl<T> OpenSlot<T> {
    /// The open song, locked.
    pub fn lock(&self) -> MutexGuard<'_, Option<T>> {
        self.current.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Start an open named `key` (new for each open) of `what` (a song's
    /// id): overtakes any open in progress, waits for it to finish, then
    /// closes the current song (returned, to drop outside any lock) so its
    /// device is free before the new one opens it. An open overtaken while
    /// it waited closes nothing (the song open then is a later open's).
    pub fn begin_open(&self, key: u64, what: u64) -> (Opening<'_>, Option<T>) {
        let request = self.ask_open(key, what);
        self.wait_turn(request, what)
    }

    /// [`OpenSlot::begin_open`]'s first half: the open's request number.
    fn ask_open(&self, key: u64, what: u64) -> u64 {
        let _current = self.lock();
        self.latest.store(key, Ordering::SeqCst);
        self.latest_what.store(what, Ordering::SeqCst);
        self.requests.fetch_add(1, Ordering::SeqCst) + 1
    }

    /// [`OpenSlot::begin_open`]'s second half: one open at a time, then the
    /// current song taken, unless a later open stored it while this one
    /// waited (std's `Mutex` hands the lock out in no order: a later open
    /// may have opened and stored its song first). A song opened before
    /// this request is taken even when this open was overtaken meanwhile
    /// (by a later open, or a deletion of another song): it is left.
    fn wait_turn(&self, request: u64, what: u64) -> (Opening<'_>, Option<T>) {
        let guard = self.opening.lock().unwrap_or_else(|p| p.into_inner());
        self.holder_what.store(what, Ordering::SeqCst);
        let old = {
            let mut current = self.lock();
            if self.stored_by.load(Ordering::SeqCst) < request {
                current.take()
            } else {
                None
            }
        };
        (Opening { request, _one_at_a_time: guard }, old)
    }

    /// The number of the latest open or close request: while it stays the
    /// same, the open song is the one it was (a command that works with
    /// the song unlocked for a while tells it from the same song closed
    /// and opened again meanwhile).
    pub fn requests(&self) -> u64 {
        self.requests.load(Ordering::SeqCst)
    }

    /// Whether a close or a later open came since `opening` began: an open
    /// that waited its turn behind another checks this before it reads or
    /// writes anything of its song (a deletion may have overtaken it while
    /// it waited).
    pub fn overtaken(&self, opening: &Opening<'_>) -> bool {
        self.requests.load(Ordering::SeqCst) != opening.request
    }

    /// Store `song` as the open one, unless a close or a later open came
    /// since [`OpenSlot::begin_open`]: then it is dropped here, before the
    /// opening lock is given back (a close that waits for the open in
    /// progress, [`OpenSlot::close_if`], returns once it is gone: its
    /// player stopped, its waveform reader ended).
    ///
    /// # Errors
    /// [`Overtaken`] when the open was overtaken.
    pub fn finish_open(&self, opening: Opening<'_>, song: T) -> Result<(), Overtaken> {
        {
            let mut current = self.lock();
            if self.requests.load(Ordering::SeqCst) == opening.request {
                *current = Some(song);
                self.stored_by.store(opening.request, Ordering::SeqCst);
                return Ok(());
            }
        }
        drop(song);
        drop(opening);
        Err(Overtaken)
    }

    /// Close the open named `key`: when it is the last one asked for,
    /// overtakes it if in progress and takes the song (to drop outside the
    /// lock). A close of any earlier open does nothing: a later open
    /// already closed it, or will.
    pub fn close(&self, key: u64) -> Option<T> {
        let mut current = self.lock();
        if self.latest.load(Ordering::SeqCst) != key {
            return None;
        }
        self.requests.fetch_add(1, Ordering::SeqCst);
        current.take()
    }

    /// Close `what` (its files are being deleted): the open song when
    /// `is_it` says it is the one, whichever open made it, taken (to drop
    /// outside the lock); and an open of it still in progress, overtaken
    /// (it would finish after the deletion, and its waveform reader write
    /// into the deleted folder). An open of it that a later open of another
    /// song overtook, still running, is waited for too (it stops only when
    /// it looks).
    pub fn close_if(&self, what: u64, is_it: impl FnOnce(&T) -> bool) -> Option<T> {
        let wait = {
            let _current = self.lock();
            let it = self.latest_what.load(Ordering::SeqCst) == what;
            if it {
                self.requests.fetch_add(1, Ordering::SeqCst);
            }
            // (An open that takes the lock after this read was overtaken
            // before it: it looks before it reads anything.)
            it || self.holder_what.load(Ordering::SeqCst) == what
        };
        if wait {
            // An open of it in progress ends (dropping what it made) before
            // this returns and the caller deletes its files.
            drop(self.opening.lock().unwrap_or_else(|p| p.into_inner()));
        }
        let mut current = self.lock();
        if !current.as_ref().is_some_and(is_it) {
            return None;
        }
        self.requests.fetch_add(1, Ordering::SeqCst);
        current.take()
    }

    /// Close whatever is open, and overtake any open in progress (the page
    /// that opened it is gone: a reload): the song taken, to drop outside
    /// the lock.
    pub fn close_all(&self) -> Option<T> {
        let mut current = self.lock();
        self.requests.fetch_add(1, Ordering::SeqCst);
        current.take()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_open_overtaken_by_a_close_or_a_later_open_is_dropped() {
        let slot = OpenSlot::<&str>::default();
        let (opening, old) = slot.begin_open(1, 10);
        assert!(old.is_none());
        assert_eq!(slot.finish_open(opening, "a"), Ok(()));
        assert_eq!(*slot.lock(), Some("a"));

        // Closed while "b" was opening: "b" comes back to be dropped.
        let (opening, old) = slot.begin_open(2, 20);
        assert_eq!(old, Some("a"), "the old song stops before the new one opens");
        assert_eq!(slot.close(2), None);
        assert_eq!(slot.finish_open(opening, "b"), Err(Overtaken));
        assert_eq!(*slot.lock(), None, "nothing stays open after the close");

        // Leaving "a" for "b": the close of "a" comes after "b" began
        // opening (or after it opened), and leaves "b" alone.
        let (opening, _) = slot.begin_open(1, 10);
        assert_eq!(slot.finish_open(opening, "a"), Ok(()));
        let (opening, old) = slot.begin_open(2, 20);
        assert_eq!(old, Some("a"));
        assert_eq!(slot.close(1), None, "a close of the song left");
        assert_eq!(slot.finish_open(opening, "b"), Ok(()), "not overtaken by it");
        assert_eq!(slot.close(1), None);
        assert_eq!(*slot.lock(), Some("b"));
        // A song being deleted: closed only when it is the open one.
        assert_eq!(slot.close_if(10, |s| *s == "a"), None);
        assert_eq!(slot.close_if(20, |s| *s == "b"), Some("b"));
        assert_eq!(*slot.lock(), None);
        let (opening, _) = slot.begin_open(2, 20);
        assert_eq!(slot.finish_open(opening, "b"), Ok(()));
        assert_eq!(slot.close(2), Some("b"));
        // The page reloaded: whatever is open closes, and an open in
        // progress is overtaken.
        let (opening, _) = slot.begin_open(4, 20);
        assert_eq!(slot.finish_open(opening, "b"), Ok(()));
        assert_eq!(slot.close_all(), Some("b"));
        let (opening, _) = slot.begin_open(5, 20);
        assert_eq!(slot.close_all(), None);
        assert_eq!(slot.finish_open(opening, "b"), Err(Overtaken));
        assert_eq!(*slot.lock(), None);
        // Deleted while it opens: the open is overtaken, and the deletion
        // returns only once the open has ended (what it made dropped);
        // another song's deletion leaves it.
        let (opening, _) = slot.begin_open(3, 20);
        assert_eq!(slot.close_if(10, |s| *s == "a"), None);
        let before = slot.requests.load(Ordering::SeqCst);
        std::thread::scope(|scope| {
            let closing = scope.spawn(|| slot.close_if(20, |s| *s == "b"));
            while slot.requests.load(Ordering::SeqCst) == before {
                std::thread::yield_now();
            }
            std::thread::sleep(std::time::Duration::from_millis(50));
            assert!(!closing.is_finished(), "the deletion waits for the open in progress");
            assert!(slot.overtaken(&opening));
            assert_eq!(slot.finish_open(opening, "b"), Err(Overtaken));
            assert_eq!(closing.join().unwrap(), None);
        });
        let (opening, _) = slot.begin_open(4, 20);
        assert_eq!(slot.close_if(10, |s| *s == "a"), None);
        assert_eq!(slot.finish_open(opening, "b"), Ok(()));

        // Two opens: the first waits for nothing, the second waits for the
        // first to finish; only the second is kept.
        let slot = std::sync::Arc::new(OpenSlot::<u32>::default());
        let (first, _) = slot.begin_open(1, 10);
        let s = slot.clone();
        let (tx, rx) = std::sync::mpsc::channel();
        let second = std::thread::spawn(move || {
            let (opening, old) = s.begin_open(2, 20);
            tx.send(old).unwrap();
            s.finish_open(opening, 2)
        });
        // The second open has taken its number (it waits on the lock).
        while slot.requests.load(Ordering::SeqCst) < 2 {
            std::thread::yield_now();
        }
        assert_eq!(slot.finish_open(first, 1), Err(Overtaken), "overtaken");
        assert_eq!(rx.recv().unwrap(), None);
        assert_eq!(second.join().unwrap(), Ok(()));
        assert_eq!(*slot.lock(), Some(2));
        assert_eq!(slot.close(2), Some(2));
    }

    #[test]
    fn an_open_overtaken_while_it_waited_closes_nothing() {
        // B asks, C asks, C's turn comes first (std's Mutex keeps no
        // order) and stores its song: B's turn must not take it.
        let slot = OpenSlot::<&str>::default();
        let b = slot.ask_open(2, 20);
        let c = slot.ask_open(3, 30);
        let (opening, old) = slot.wait_turn(c, 30);
        assert_eq!(old, None);
        assert_eq!(slot.finish_open(opening, "c"), Ok(()));
        let (opening, old) = slot.wait_turn(b, 20);
        assert_eq!(old, None, "the later open's song stays");
        assert!(slot.overtaken(&opening));
        assert_eq!(slot.finish_open(opening, "b"), Err(Overtaken));
        assert_eq!(*slot.lock(), Some("c"));
    }

    #[test]
    fn deleting_a_song_waits_for_its_overtaken_open() {
        // X opens; Y is asked (X is overtaken, but runs until it looks);
        // X's song is deleted: the deletion waits for X's open to end.
        let slot = OpenSlot::<&str>::default();
        let (x, _) = slot.begin_open(1, 10);
        let _y = slot.ask_open(2, 20);
        std::thread::scope(|scope| {
            let closing = scope.spawn(|| slot.close_if(10, |s| *s == "x"));
            std::thread::sleep(std::time::Duration::from_millis(100));
            assert!(!closing.is_finished(), "the deletion waits for X's open");
            assert_eq!(slot.finish_open(x, "x"), Err(Overtaken));
            assert_eq!(closing.join().unwrap(), None);
        });
        // Another song's deletion does not wait.
        let (y, _) = slot.wait_turn(slot.requests(), 20);
        assert_eq!(slot.close_if(30, |s| *s == "z"), None);
        assert_eq!(slot.finish_open(y, "y"), Ok(()));
    }

    /// Z is open; A and B are asked, then B's song is deleted: both opens
    /// are overtaken, and Z, which the page left, is still closed (it kept
    /// the device with nobody seeing it).
    #[test]
    fn a_song_left_is_closed_by_an_open_overtaken_by_another_songs_deletion() {
        let slot = OpenSlot::<&str>::default();
        let (z, _) = slot.begin_open(1, 1);
        assert_eq!(slot.finish_open(z, "z"), Ok(()));
        let a = slot.ask_open(2, 10);
        let _b = slot.ask_open(3, 20);
        assert_eq!(slot.close_if(20, |s| *s == "b"), None);
        let (opening, old) = slot.wait_turn(a, 10);
        assert_eq!(old, Some("z"), "the song left is closed");
        assert!(slot.overtaken(&opening));
        assert_eq!(slot.finish_open(opening, "a"), Err(Overtaken));
        assert_eq!(*slot.lock(), None);
    }
}

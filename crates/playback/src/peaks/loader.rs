//! Peaks read in the background, so a long song opens at once and its
//! lanes fill in as they are read.
//!
//! A [`PeaksLoader`] decodes its tracks on one thread, a block of each in
//! turn (so every lane fills in from the start together), publishes the
//! peaks read so far a few times a second, and writes each track's cache
//! file ([`Peaks::write`]) when the track is read to its end. Dropping the
//! loader stops the thread.

use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use super::{AudioStamp, Peaks, PeaksBuilder};
use crate::reader::StemSet;

/// Frames decoded from one track before the next track's turn (1.5 s at 44.1 kHz).
const BLOCK: usize = 65_536;
/// How often the peaks read so far are published.
const PUBLISH: Duration = Duration::from_millis(250);

/// One track to read: its audio, and where to cache its peaks (`None`: nowhere).
#[derive(Debug, Clone)]
pub struct PeaksTrack {
    pub audio: PathBuf,
    pub cache: Option<PathBuf>,
}

/// What was published since the last [`PeaksLoader::take`].
#[derive(Debug, Default)]
pub struct PeaksUpdate {
    /// `(track index, its peaks so far)` for the tracks that changed.
    pub peaks: Vec<(usize, Peaks)>,
    /// Part of all the tracks' frames read, 0 to 1.
    pub ready: f64,
    /// Every track is read to its end (or to a decoding error).
    pub done: bool,
    /// Per track: read to its end (or to a decoding error), so its peaks
    /// (now or in an earlier update) are its last.
    pub finished: Vec<bool>,
}

#[derive(Default)]
struct State {
    fresh: Vec<Option<Peaks>>,
    finished: Vec<bool>,
    ready: f64,
    done: bool,
}

struct Shared {
    stop: AtomicBool,
    state: Mutex<State>,
}

/// Reads the peaks of some tracks on a background thread (see the module docs).
pub struct PeaksLoader {
    shared: Arc<Shared>,
    thread: Option<JoinHandle<()>>,
}

impl std::fmt::Debug for PeaksLoader {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PeaksLoader").finish_non_exhaustive()
    }
}

struct Reading {
    index: usize,
    set: StemSet,
    builder: PeaksBuilder,
    rate: u32,
    /// Frames the track declares (`None`: unknown until its end).
    declared: Option<u64>,
    read: u64,
    cache: Option<PathBuf>,
    audio: PathBuf,
    /// The audio file as it was before it was read (see [`Peaks::store`]).
    stamp: Option<AudioStamp>,
}

impl PeaksLoader {
    /// Start reading `tracks` (in their order, a block of each in turn).
    /// A track that cannot be opened or decoded is logged and left with
    /// what was read of it (possibly nothing).
    pub fn spawn(tracks: Vec<PeaksTrack>) -> Self {
        Self::spawn_publishing(tracks, PUBLISH)
    }

    fn spawn_publishing(tracks: Vec<PeaksTrack>, publish: Duration) -> Self {
        let shared = Arc::new(Shared {
            stop: AtomicBool::new(false),
            state: Mutex::new(State {
                fresh: (0..tracks.len()).map(|_| None).collect(),
                finished: vec![false; tracks.len()],
                ..State::default()
            }),
        });
        let s = Arc::clone(&shared);
        let thread = std::thread::Builder::new()
            .name("stemroom-peaks".into())
            .spawn(move || run(&s, tracks, publish))
            .map_err(|e| tracing::warn!("cannot start the peaks thread: {e}"))
            .ok();
        if thread.is_none() {
            shared.state.lock().unwrap_or_else(PoisonError::into_inner).done = true;
        }
        PeaksLoader { shared, thread }
    }

    /// The peaks published since the last call (each changed track once,
    /// moved out), with the progress.
    pub fn take(&self) -> PeaksUpdate {
        let mut st = self.shared.state.lock().unwrap_or_else(PoisonError::into_inner);
        let peaks = st.fresh.iter_mut().enumerate().filter_map(|(i, p)| p.take().map(|p| (i, p))).collect();
        PeaksUpdate { peaks, ready: st.ready, done: st.done, finished: st.finished.clone() }
    }
}

impl Drop for PeaksLoader {
    fn drop(&mut self) {
        self.shared.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            // At most one track's block away, unless a read hangs (a
            // network drive that stopped answering): then left to end, not
            // holding whoever closes the song.
            crate::player::join_within(t, "the waveform reader did not stop; left to end");
        }
    }
}

fn run(shared: &Shared, tracks: Vec<PeaksTrack>, publish: Duration) {
    let mut reading: Vec<Reading> = Vec::new();
    for (index, t) in tracks.into_iter().enumerate() {
        if shared.stop.load(Ordering::Relaxed) {
            return;
        }
        let stamp = AudioStamp::of(&t.audio);
        match StemSet::open(&[&t.audio]) {
            Ok(set) => {
                let (rate, declared) = (set.sample_rate(), set.declared_frames());
                reading.push(Reading {
                    index,
                    set,
                    builder: PeaksBuilder::default(),
                    rate,
                    declared,
                    read: 0,
                    cache: t.cache,
                    audio: t.audio,
                    stamp,
                });
            }
            Err(e) => {
                tracing::warn!("no waveform for {}: {e}", t.audio.display());
                // (Nothing more will come of it.)
                if let Some(f) = shared.state.lock().unwrap_or_else(PoisonError::into_inner).finished.get_mut(index) {
                    *f = true;
                }
            }
        }
    }
    let total_tracks = reading.len().max(1);
    let mut finished = Vec::new();
    let mut buf = vec![Vec::new()];
    let mut last = Instant::now();
    // The wait before the next publication: `publish`, or ten times what
    // the last one took, whichever is longer. Each copies every peak read
    // so far, so on a long song (megabytes of peaks per track) a fixed
    // interval would spend more and more of the reading on copies.
    let mut wait = publish;
    while !reading.is_empty() {
        let mut i = 0;
        while i < reading.len() {
            // Before each track's block (a round reads a block of each).
            if shared.stop.load(Ordering::Relaxed) {
                return;
            }
            let r = &mut reading[i];
            let got = r.set.read(BLOCK, &mut buf);
            match got {
                Ok(n) if n > 0 => {
                    r.builder.push(&buf[0][..2 * n]);
                    r.read += n as u64;
                    i += 1;
                }
                end => {
                    let r = reading.swap_remove(i);
                    let peaks = r.builder.snapshot(r.rate);
                    match end {
                        Err(e) => tracing::warn!("waveform read up to frame {} only: {e}", r.read),
                        _ => {
                            if let Some(c) = &r.cache {
                                peaks.store(c, &r.audio, r.stamp);
                            }
                        }
                    }
                    finished.push(r.index);
                    let mut st = shared.state.lock().unwrap_or_else(PoisonError::into_inner);
                    st.fresh[r.index] = Some(peaks);
                    if let Some(f) = st.finished.get_mut(r.index) {
                        *f = true;
                    }
                }
            }
        }
        if last.elapsed() >= wait || reading.is_empty() {
            let started = Instant::now();
            last = started;
            // Tracks of unknown length count once finished.
            let ready = (finished.len() as f64
                + reading
                    .iter()
                    .map(|r| r.declared.map_or(0.0, |d| (r.read as f64 / d.max(1) as f64).min(1.0)))
                    .sum::<f64>())
                / total_tracks as f64;
            let snapshots: Vec<(usize, Peaks)> =
                reading.iter().map(|r| (r.index, r.builder.snapshot(r.rate))).collect();
            let mut st = shared.state.lock().unwrap_or_else(PoisonError::into_inner);
            for (index, p) in snapshots {
                st.fresh[index] = Some(p);
            }
            st.ready = if reading.is_empty() { 1.0 } else { ready.min(0.999) };
            st.done = reading.is_empty();
            drop(st);
            wait = publish.max(started.elapsed() * 10);
        }
    }
    let mut st = shared.state.lock().unwrap_or_else(PoisonError::into_inner);
    st.ready = 1.0;
    st.done = true;
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::path::Path;

    /// A 16-bit stereo WAV of `frames` frames (a slow sweep, louder towards
    /// the end) and the samples it decodes to.
    fn wav(dir: &Path, name: &str, frames: usize, rate: u32) -> (PathBuf, Vec<f32>) {
        let path = dir.join(name);
        let spec = hound::WavSpec {
            channels: 2,
            sample_rate: rate,
            bits_per_sample: 16,
            sample_format: hound::SampleFormat::Int,
        };
        let mut w = hound::WavWriter::create(&path, spec).expect("wav");
        let mut x = Vec::with_capacity(2 * frames);
        for i in 0..frames {
            let env = i as f32 / frames as f32;
            let l = ((i as f32 * 0.01).sin() * env * 32_000.0) as i16;
            let r = ((i as f32 * 0.003).cos() * (1.0 - env) * 16_000.0) as i16;
            for v in [l, r] {
                w.write_sample(v).expect("sample");
                x.push(f32::from(v) / 32_768.0);
            }
        }
        w.finalize().expect("finalize");
        (path, x)
    }

    fn wait_done(loader: &PeaksLoader) -> (Vec<Option<Peaks>>, Vec<f64>) {
        let mut last = Vec::new();
        let mut readies = Vec::new();
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            let u = loader.take();
            for (i, p) in u.peaks {
                if last.len() <= i {
                    last.resize(i + 1, None);
                }
                last[i] = Some(p);
            }
            readies.push(u.ready);
            if u.done {
                return (last, readies);
            }
            assert!(Instant::now() < deadline, "the loader did not finish");
            std::thread::sleep(Duration::from_millis(5));
        }
    }

    #[test]
    fn tracks_read_in_the_background_give_their_peaks_and_caches() {
        let dir = tempfile::tempdir().expect("tempdir");
        // Several blocks each, of different lengths and rates.
        let (a, xa) = wav(dir.path(), "a.wav", 5 * BLOCK + 123, 44_100);
        let (b, xb) = wav(dir.path(), "b.wav", BLOCK / 2, 48_000);
        let bad = dir.path().join("bad.wav");
        std::fs::write(&bad, b"RIFF\x10\0\0\0WAVEnot audio at all").expect("write");
        let cache = |n: &str| Some(dir.path().join(".peaks").join(n));
        let loader = PeaksLoader::spawn(vec![
            PeaksTrack { audio: a.clone(), cache: cache("a.peaks") },
            PeaksTrack { audio: bad, cache: cache("bad.peaks") },
            PeaksTrack { audio: b.clone(), cache: None },
        ]);
        let (peaks, readies) = wait_done(&loader);
        assert_eq!(peaks[0].as_ref(), Some(&Peaks::from_samples(&xa, 44_100)));
        assert_eq!(peaks[2].as_ref(), Some(&Peaks::from_samples(&xb, 48_000)));
        assert!(peaks.get(1).is_none_or(Option::is_none), "the unreadable track has no peaks");
        // Progress only goes forward, and ends at 1.
        assert!(readies.windows(2).all(|w| w[0] <= w[1]), "{readies:?}");
        assert_eq!(readies.last().copied(), Some(1.0));
        // The finished track's cache is what a later open reads.
        let cached = Peaks::read_fresh(&a, &dir.path().join(".peaks/a.peaks")).expect("cache written");
        assert_eq!(Some(&cached), peaks[0].as_ref());
        assert!(!dir.path().join(".peaks/bad.peaks").exists());
        // Nothing more once done, and every track says it is finished.
        let after = loader.take();
        assert!(after.peaks.is_empty());
        assert_eq!(after.finished, [true, true, true]);
    }

    #[test]
    fn a_lane_fills_in_from_the_start_and_a_dropped_loader_leaves_no_partial_cache() {
        let dir = tempfile::tempdir().expect("tempdir");
        let (a, xa) = wav(dir.path(), "long.wav", 40 * BLOCK, 44_100);
        let full = Peaks::from_samples(&xa, 44_100);
        // Published after every round of blocks, taken as fast as we can.
        let loader = PeaksLoader::spawn_publishing(vec![PeaksTrack { audio: a, cache: None }], Duration::ZERO);
        let mut partial = Vec::new();
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            let u = loader.take();
            partial.extend(u.peaks.into_iter().map(|(_, p)| p).filter(|p| p.frames < full.frames));
            if u.done {
                break;
            }
            assert!(Instant::now() < deadline, "the loader did not finish");
            std::thread::yield_now();
        }
        assert!(!partial.is_empty(), "no update before the end");
        for p in &partial {
            // Whole blocks read: every bucket of the finest level is final.
            assert_eq!(p.frames % BLOCK as u64, 0);
            let (got, all) = (&p.levels[0].pairs, &full.levels[0].pairs);
            assert_eq!(got[..], all[..got.len()], "the peaks so far are the start of the song's");
        }
        // Dropped at once: the thread stops; its cache is either not
        // written or whole (written under a temporary name, then renamed).
        let (b, xb) = wav(dir.path(), "b.wav", 40 * BLOCK, 44_100);
        let cache = dir.path().join("b.peaks");
        drop(PeaksLoader::spawn(vec![PeaksTrack { audio: b, cache: Some(cache.clone()) }]));
        if cache.exists() {
            assert_eq!(Peaks::read(&cache).expect("whole cache"), Peaks::from_samples(&xb, 44_100));
        }
        let parts: Vec<_> = std::fs::read_dir(dir.path())
            .unwrap()
            .flatten()
            .filter(|e| e.file_name().to_string_lossy().ends_with(".part"))
            .map(|e| e.file_name())
            .collect();
        assert!(parts.is_empty(), "{parts:?}");
    }
}

//! Listening while a job separates, without a device: a stream written the
//! way the engine's checkpointing writes it, played through the reader
//! thread and the callback's `render`.

use std::io::Write;

use stemroom_engine::job::stream::{StreamLane, StreamLayout, LAYOUT_FILE, STEMS_FILE};

use super::tests::{float_wav, render_paced, wait_for_audio};
use super::*;

const RATE: u32 = 44_100;
/// FADE_SECONDS at 44.1 kHz.
const FADE: usize = 441;
const FRAMES: u64 = 3 * RATE as u64;

/// Source `s`, channel `c` of frame `i` (exact in `f32`).
fn value(i: u64, s: usize, c: usize) -> f32 {
    (i as f32 / 1e6) * (s + 1) as f32 + c as f32 * 0.125
}

/// A job's checkpoint folder with its layout and the first `frames`
/// frames of two sources.
fn stream_dir() -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    let layout = StreamLayout {
        format: 1,
        sample_rate: RATE,
        channels: 2,
        sources: 2,
        frames: FRAMES,
        lanes: vec![
            StreamLane { stem: "a".into(), sources: vec![0] },
            StreamLane { stem: "b".into(), sources: vec![1] },
        ],
        quantize_bits: None,
        output_rate: RATE,
    };
    std::fs::write(dir.path().join(LAYOUT_FILE), serde_json::to_vec(&layout).unwrap()).unwrap();
    std::fs::write(dir.path().join(STEMS_FILE), b"").unwrap();
    dir
}

/// Append frames `from..to` to the stream, as the saver does (one block).
fn separate(dir: &std::path::Path, from: u64, to: u64) {
    let mut bytes = Vec::new();
    for i in from..to {
        for s in 0..2 {
            for c in 0..2 {
                bytes.extend_from_slice(&value(i, s, c).to_le_bytes());
            }
        }
    }
    let mut f = std::fs::OpenOptions::new().append(true).open(dir.join(STEMS_FILE)).unwrap();
    f.write_all(&bytes).unwrap();
}

/// Stem `a` soloed: the left channel is source 0's left samples.
fn solo_a() -> MixControls {
    let mut c = MixControls::unity(2);
    c.stems[0].solo = true;
    c
}

#[test]
fn plays_up_to_the_separated_edge_waits_and_goes_on() {
    let _paced = super::tests::paced();
    let dir = stream_dir();
    let edge = u64::from(RATE); // the first segment: 1 s
    separate(dir.path(), 0, edge);
    let set = StemSet::open_growing(dir.path()).unwrap();
    assert_eq!((set.len(), set.declared_frames(), set.edge()), (2, Some(FRAMES), Some(edge)));
    let (sh, mut cb, reader) = start_engine(set, &solo_a(), RATE, 2).unwrap();
    wait_for_audio(&mut cb, 66_150);
    sh.play();

    // 1.5 s of playing: the separated second, faded out over its last
    // 10 ms, then silence, held at the edge, no underrun counted.
    let out = render_paced(&mut cb, 66_150);
    let l: Vec<f32> = out.iter().step_by(2).copied().collect();
    let lead = FADE; // the play fade in
    for (i, &v) in l.iter().enumerate().take(edge as usize - FADE).skip(lead) {
        assert!((v - value(i as u64, 0, 0)).abs() < 1e-7, "frame {i}: {v} vs {}", value(i as u64, 0, 0));
    }
    let tail = &l[edge as usize - FADE..edge as usize];
    assert!(tail.windows(2).all(|w| w[1] <= w[0] + 1e-6), "faded out towards the edge");
    assert!(tail[FADE - 1].abs() < 0.01 * value(edge, 0, 0) + 1e-4, "silent at the edge: {}", tail[FADE - 1]);
    assert!(l[edge as usize..].iter().all(|&v| v == 0.0), "silence while waiting");
    assert!(sh.waiting.load(Ordering::Acquire), "waiting at the edge");
    assert_eq!(sh.position.load(Ordering::Acquire), edge, "held at the edge");
    assert_eq!(sh.edge.load(Ordering::Acquire), edge);
    assert_eq!(sh.underrun_frames.load(Ordering::Acquire), 0, "a wait is no underrun");

    // A seek past the edge stops at the edge.
    sh.seek(2 * edge);
    assert_eq!(sh.position.load(Ordering::Acquire), edge);
    let out = render_paced(&mut cb, 4096);
    assert!(out.iter().all(|&v| v == 0.0) && sh.waiting.load(Ordering::Acquire), "still waiting");

    // The next segment: on from the edge with a 10 ms fade in, then exact.
    separate(dir.path(), edge, 2 * edge);
    // Once the reader has seen it (a loaded machine delays its poll), with
    // time to read ahead.
    let t0 = std::time::Instant::now();
    while sh.edge.load(Ordering::Acquire) < 2 * edge {
        assert!(t0.elapsed() < Duration::from_secs(10), "the reader never saw the new segment");
        std::thread::sleep(Duration::from_millis(5));
    }
    wait_for_audio(&mut cb, 22_050);
    let out = render_paced(&mut cb, 22_050);
    let l: Vec<f32> = out.iter().step_by(2).copied().collect();
    let first = l.iter().position(|&v| v != 0.0).expect("plays again");
    assert!(first < 2048, "resumed within a chunk: {first}");
    assert!(!sh.waiting.load(Ordering::Acquire));
    for (k, &v) in l[first + FADE..].iter().enumerate() {
        let i = edge + (FADE + k) as u64;
        assert!((v - value(i, 0, 0)).abs() < 1e-7, "after the wait, frame {i}: {v}");
    }
    assert!(l[first] < l[first + FADE] * 0.05, "fades in: {:?} at {first}", &l[first..first + 4]);
    assert_eq!(sh.underrun_frames.load(Ordering::Acquire), 0);

    sh.stop.store(true, Ordering::Release);
    reader.join().unwrap();
}

/// A stem that cannot be read (a drive gone for a moment) stops playback
/// with the reason; Play reads again from there once it can, and the
/// reason goes.
#[test]
fn a_read_error_stops_playback_and_play_reads_again() {
    let _paced = super::tests::paced();
    let dir = stream_dir();
    let edge = u64::from(RATE);
    separate(dir.path(), 0, edge);
    let (sh, mut cb, reader) = start_engine(StemSet::open_growing(dir.path()).unwrap(), &solo_a(), RATE, 2).unwrap();
    wait_for_audio(&mut cb, 16_384);
    sh.play();
    crate::reader::failing::set(Some(dir.path().join(STEMS_FILE)));
    separate(dir.path(), edge, 2 * edge);
    let t0 = std::time::Instant::now();
    while sh.error.lock().unwrap().is_none() {
        assert!(t0.elapsed() < Duration::from_secs(10), "the read error was not reported");
        render_paced(&mut cb, 512);
    }
    let message = sh.error.lock().unwrap().clone().unwrap();
    assert!(message.contains("injected") && message.ends_with("Press Play to try again."), "{message}");
    assert!(!sh.playing.load(Ordering::Acquire), "stopped");
    let out = render_paced(&mut cb, 4096);
    assert!(out.iter().all(|&v| v == 0.0), "silent while stopped");

    // The drive is back: Play reads again from the playhead.
    crate::reader::failing::set(None);
    let at = sh.position.load(Ordering::Acquire);
    sh.play();
    let t0 = std::time::Instant::now();
    while sh.error.lock().unwrap().is_some() {
        assert!(t0.elapsed() < Duration::from_secs(10), "the reader did not read again");
        std::thread::sleep(Duration::from_millis(5));
    }
    wait_for_audio(&mut cb, 8192);
    assert!(sh.playing.load(Ordering::Acquire));
    let l: Vec<f32> = render_paced(&mut cb, 8192).iter().step_by(2).copied().collect();
    // (Silence before the reader's first chunk consumes no frame: the
    // first heard is the playhead's, or the next where it is frame 0, 0.0.)
    let first = l.iter().position(|&v| v != 0.0).expect("plays again");
    assert!(first < 4096, "plays within a few chunks: {first}");
    let first_frame = if value(at, 0, 0) == 0.0 { at + 1 } else { at };
    for (k, &v) in l[first + FADE..].iter().enumerate() {
        let i = first_frame + (FADE + k) as u64;
        assert!((v - value(i, 0, 0)).abs() < 1e-7, "after the error, frame {i}: {v} vs {}", value(i, 0, 0));
    }
    assert!(!sh.reader_failed.load(Ordering::Acquire));

    sh.stop.store(true, Ordering::Release);
    reader.join().unwrap();
}

/// A stream whose samples are not numbers (NaN, infinite: a model gone
/// wrong) plays as silence there, never as NaN on the device, even
/// muted (NaN times zero is NaN) and while a gain ramps.
#[test]
fn samples_that_are_not_numbers_play_as_silence() {
    let _paced = super::tests::paced();
    let dir = stream_dir();
    let edge = u64::from(RATE) / 2;
    let mut bytes = Vec::new();
    for i in 0..edge {
        let bad = [f32::NAN, f32::INFINITY, f32::NEG_INFINITY][(i % 3) as usize];
        for v in [bad, bad, value(i, 1, 0), value(i, 1, 1)] {
            bytes.extend_from_slice(&v.to_le_bytes());
        }
    }
    std::fs::write(dir.path().join(STEMS_FILE), &bytes).unwrap();
    let set = StemSet::open_growing(dir.path()).unwrap();
    let mut c = MixControls::unity(2);
    let (sh, mut cb, reader) = start_engine(set, &c, RATE, 2).unwrap();
    wait_for_audio(&mut cb, 16_384);
    sh.play();
    let mut out = render_paced(&mut cb, 8192);
    c.stems[0].mute = true;
    sh.set_controls(&c);
    out.extend(render_paced(&mut cb, 8192));
    assert!(out.iter().all(|v| v.is_finite()), "a sample that is not a number reached the device");
    // Stem a is silence where it is not a number: the mix is stem b alone
    // (a NaN in the sum would have made the frame silent).
    for (k, frame) in out[..2 * 8192].chunks_exact(2).enumerate().skip(FADE) {
        let i = k as u64;
        assert!(
            (frame[0] - value(i, 1, 0)).abs() < 1e-6 && (frame[1] - value(i, 1, 1)).abs() < 1e-6,
            "frame {i}: {frame:?}"
        );
    }
    sh.stop.store(true, Ordering::Release);
    reader.join().unwrap();
}

/// The job's finished stem files (32-bit float WAV, the stream's exact
/// samples), one per stem.
fn finished_files(dir: &std::path::Path) -> Vec<PathBuf> {
    (0..2).map(|s| float_wav(dir.join(format!("{s}.wav")), FRAMES, |i, c| value(i, s, c))).collect()
}

#[test]
fn the_finished_files_take_over_without_a_gap() {
    let _paced = super::tests::paced();
    let dir = stream_dir();
    let half = FRAMES / 2;
    separate(dir.path(), 0, half);
    let set = StemSet::open_growing(dir.path()).unwrap();
    let (sh, mut cb, reader) = start_engine(set, &solo_a(), RATE, 2).unwrap();
    std::thread::sleep(Duration::from_millis(100));
    sh.seek(RATE as u64 / 2);
    sh.play();
    let before = render_paced(&mut cb, 22_050);

    // The job ends: every frame separated, its files written, the stream's
    // names removed (the open stream stays readable), the files handed over.
    separate(dir.path(), half, FRAMES);
    let files = finished_files(dir.path());
    std::fs::remove_file(dir.path().join(STEMS_FILE)).unwrap();
    *sh.replacement.lock().unwrap() = Some(open_readers(&files, None).unwrap());
    let after = render_paced(&mut cb, 88_200);
    std::thread::sleep(Duration::from_millis(20));
    assert!(sh.replacement.lock().unwrap().is_none(), "the reader took the files");
    assert_eq!(sh.edge.load(Ordering::Acquire), u64::MAX, "nothing left to separate");

    // One continuous run from 0.5 s: exact everywhere after the play fade.
    // The song starts once the reader has read from the seek's target
    // (silence until then, a few buffers on a loaded machine, where this
    // test once failed at its first frame): where is found from the audio
    // (stem 0 holds frame / 1e6), and it must be within a few chunks.
    let all: Vec<f32> = before.iter().chain(&after).step_by(2).copied().collect();
    let start = RATE as u64 / 2;
    let probe = all.iter().position(|&v| v != 0.0).expect("it plays") + FADE;
    let heard = (f64::from(all[probe]) * 1e6).round() as u64;
    let lead = (probe as u64).checked_sub(heard - start).expect("no frame skipped");
    assert!(lead < 4096, "it plays within a few chunks of the seek: {lead} frames of silence first");
    for (k, &v) in all.iter().enumerate().skip(probe) {
        let i = start + k as u64 - lead;
        assert!((v - value(i, 0, 0)).abs() < 1e-7, "frame {i}: {v} vs {}", value(i, 0, 0));
    }
    assert_eq!(sh.underrun_frames.load(Ordering::Acquire), 0, "no gap at the change");
    assert!(!sh.waiting.load(Ordering::Acquire));

    // The files are what it reads now: a seek back still plays (the
    // stream's file is gone). Paused first, so nothing of the old place
    // fades out after the seek (a CI run took such a fade for the song's
    // start).
    sh.playing.store(false, Ordering::Release);
    render_paced(&mut cb, 2048);
    sh.seek(0);
    render_paced(&mut cb, 2048);
    std::thread::sleep(Duration::from_millis(300));
    sh.play();
    // The song fades in, and where the reader falls behind the paced
    // callback (several times real time, on a loaded machine) the ring runs
    // dry and the song fades in again from where it stopped: silence
    // consumes no frame. So the samples heard, in order, are frames 1, 2, 3,
    // … (frame 0 is 0.0) each at a gain in (0, 1], whatever the pauses.
    // Render until the last FADE + 4096 samples are one run, then that
    // run's last 4096 are exact: a skip anywhere would shift them.
    let mut l: Vec<f32> = Vec::new();
    let t0 = std::time::Instant::now();
    loop {
        l.extend(render_paced(&mut cb, 512).iter().step_by(2));
        let run = l.iter().rev().take_while(|&&v| v != 0.0).count();
        if run >= FADE + 4096 {
            break;
        }
        assert!(t0.elapsed() < Duration::from_secs(10), "no steady play 10 s after the seek back");
    }
    let heard: Vec<f32> = l.iter().copied().filter(|&v| v != 0.0).collect();
    for (k, &v) in heard.iter().enumerate() {
        let want = value(k as u64 + 1, 0, 0);
        let gain = v / want;
        assert!(gain > 0.0 && gain < 1.0 + 1e-6, "after the seek back, sample {k} is not frame {}: {v}", k + 1);
    }
    for (k, &v) in heard.iter().enumerate().skip(heard.len() - 4096) {
        let i = k as u64 + 1;
        assert!((v - value(i, 0, 0)).abs() < 1e-7, "after the seek back, frame {i}: {v}");
    }

    sh.stop.store(true, Ordering::Release);
    reader.join().unwrap();
}

/// The original mixture of the stream's song: frame `i`, channel `c`
/// (exact in `f32`, unlike any source).
fn original(i: u64, c: usize) -> f32 {
    -(i as f32 / 1e6) - c as f32 * 0.25
}

fn original_wav(dir: &std::path::Path) -> PathBuf {
    float_wav(dir.join("original.wav"), FRAMES, original)
}

#[test]
fn the_original_reads_in_step_with_the_stream_up_to_its_edge() {
    let dir = stream_dir();
    let half = FRAMES / 2;
    separate(dir.path(), 0, half);
    let mixture = original_wav(dir.path());
    let mut set = StemSet::open_growing(dir.path()).unwrap().with_original(&mixture).unwrap();
    assert_eq!((set.len(), set.mixed_rates(), set.edge()), (3, None, Some(half)));
    let mut out = vec![Vec::new(); 3];
    assert_eq!(set.read(1000, &mut out).unwrap(), 1000);
    for i in 0..1000 {
        assert_eq!(out[0][2 * i], value(i as u64, 0, 0));
        assert_eq!((out[2][2 * i], out[2][2 * i + 1]), (original(i as u64, 0), original(i as u64, 1)), "frame {i}");
    }
    // Up to the edge only, after a seek; then on as more is separated.
    set.seek(half - 100).unwrap();
    assert_eq!(set.read(1000, &mut out).unwrap(), 100);
    assert_eq!(out[2][0], original(half - 100, 0));
    assert!(out[2][200..2000].iter().all(|&v| v == 0.0), "nothing read past the edge");
    separate(dir.path(), half, FRAMES);
    assert_eq!(set.read(1000, &mut out).unwrap(), 1000);
    assert_eq!((out[1][0], out[2][0]), (value(half, 1, 0), original(half, 0)), "in step after the wait");

    // Another rate would not line up: named, for the player to refuse.
    let other = dir.path().join("48k.wav");
    let spec = hound::WavSpec {
        channels: 2,
        sample_rate: 48_000,
        bits_per_sample: 16,
        sample_format: hound::SampleFormat::Int,
    };
    let mut w = hound::WavWriter::create(&other, spec).unwrap();
    for _ in 0..4800 {
        w.write_sample(0i16).unwrap();
        w.write_sample(0i16).unwrap();
    }
    w.finalize().unwrap();
    let set = StemSet::open_growing(dir.path()).unwrap().with_original(&other).unwrap();
    assert_eq!(set.mixed_rates(), Some((RATE, 48_000)));
}

/// A/B while separating: with the original heard, the mixture plays (and
/// waits at the edge like the stems); when the finished files take over
/// (with the original after them, as `Player::complete_stream` hands them)
/// it goes on without a gap.
#[test]
fn a_b_plays_the_original_while_separating_and_after_the_take_over() {
    let _paced = super::tests::paced();
    let dir = stream_dir();
    let half = FRAMES / 2;
    separate(dir.path(), 0, half);
    let mixture = original_wav(dir.path());
    let set = StemSet::open_growing(dir.path()).unwrap().with_original(&mixture).unwrap();
    let mut controls = MixControls::unity(2);
    controls.original = true;
    let (sh, mut cb, reader) = start_engine(set, &controls.with_original(), RATE, 2).unwrap();
    wait_for_audio(&mut cb, 22_050 + 88_200);
    sh.play();
    let before = render_paced(&mut cb, 22_050);
    separate(dir.path(), half, FRAMES);
    let files: Vec<PathBuf> = finished_files(dir.path()).into_iter().chain(std::iter::once(mixture)).collect();
    *sh.replacement.lock().unwrap() = Some(open_readers(&files, None).unwrap());
    let after = render_paced(&mut cb, 88_200);
    std::thread::sleep(Duration::from_millis(20));
    assert!(sh.replacement.lock().unwrap().is_none(), "the reader took the files");
    // Only the mixture, every frame in turn, after the play fade.
    let all: Vec<f32> = before.iter().chain(&after).copied().collect();
    for (k, frame) in all.chunks_exact(2).enumerate().skip(FADE) {
        let i = k as u64;
        assert!(
            (frame[0] - original(i, 0)).abs() < 1e-7 && (frame[1] - original(i, 1)).abs() < 1e-7,
            "frame {i}: {frame:?}"
        );
    }
    assert_eq!(sh.underrun_frames.load(Ordering::Acquire), 0, "no gap at the change");
    sh.stop.store(true, Ordering::Release);
    reader.join().unwrap();
}

#[test]
fn a_folder_without_a_stream_is_an_error() {
    let dir = tempfile::tempdir().unwrap();
    assert!(matches!(StemSet::open_growing(dir.path()), Err(DecodeError::Unreadable { .. })));
    // A whole layout of another format (a later version's) is refused,
    // not read as this one.
    let dir = stream_dir();
    separate(dir.path(), 0, 1000);
    assert!(StemSet::open_growing(dir.path()).is_ok());
    let path = dir.path().join(LAYOUT_FILE);
    let mut layout: serde_json::Value = serde_json::from_slice(&std::fs::read(&path).unwrap()).unwrap();
    layout["format"] = 9.into();
    std::fs::write(&path, serde_json::to_vec(&layout).unwrap()).unwrap();
    assert!(StemSet::open_growing(dir.path()).is_err());
}

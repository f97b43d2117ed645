//! Integration tests of the engine library.
//!
//! Modules, in one binary:
//! - decoders: every supported container/codec on small fixtures that ffmpeg
//!   makes at test time from a known signal (setup.sh installs ffmpeg).
//! - encoders: WAV/FLAC written by us decode back bit-exact.
//! - cancellation: a listener that cancels after one segment leaves no output.
//! - seeking: `StreamDecoder::seek` lands on the exact frame.
//! - queue, peaks, export: see their sections.
//! - player: real playback through cpal into a PulseAudio null sink.
//!
//! Tests that keep both cores busy and the real-time one take turns (`cpu_turn`).

mod common;

use std::path::{Path, PathBuf};
use std::process::Command;

use stemroom_core::audio::decode;
use stemroom_core::audio::encode::{self, ClipMode, OutputFormat, WavDepth};
use stemroom_core::progress::{Event, Listener, Silent};

/// Tests that run the network (both cores busy) and the real-time playback
/// test (paced by the audio server, which must get the CPU in time) take
/// turns; the rest run alongside.
static CPU_TURN: std::sync::Mutex<()> = std::sync::Mutex::new(());

fn cpu_turn() -> std::sync::MutexGuard<'static, ()> {
    CPU_TURN.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

/// 1.5 s of a 441 Hz sine on the left and 882 Hz on the right, 44.1 kHz, 16-bit.
fn reference_wav(dir: &Path) -> (PathBuf, Vec<f32>) {
    let frames = 66_150;
    let mut x = Vec::with_capacity(frames * 2);
    for i in 0..frames {
        let t = i as f64 / 44_100.0;
        x.push(((2.0 * std::f64::consts::PI * 441.0 * t).sin() * 0.5 * 32768.0).round() as f32 / 32768.0);
        x.push(((2.0 * std::f64::consts::PI * 882.0 * t).sin() * 0.25 * 32768.0).round() as f32 / 32768.0);
    }
    let p = dir.join("ref.wav");
    let mut w =
        encode::open(&p, OutputFormat::Wav { depth: WavDepth::Int16 }, 44_100, 2, ClipMode::None).expect("open");
    w.write(&x).expect("write");
    w.finish().expect("finish");
    (p, x)
}

/// A built example of this crate. Examples land next to the test binary's
/// `deps` folder once built (`cargo build --examples`; scripts/test.sh does it).
fn example_bin(name: &str) -> PathBuf {
    let exe = std::env::current_exe().expect("test exe");
    let p = exe.parent().and_then(Path::parent).expect("target dir").join("examples").join(name);
    assert!(
        p.is_file(),
        "{} not built: run `cargo build --release -p stemroom-core --examples` (scripts/test.sh does)",
        p.display()
    );
    p
}

fn ffmpeg(args: &[&str]) {
    let st = Command::new("ffmpeg")
        .args(["-loglevel", "error", "-y"])
        .args(args)
        .status()
        .expect("ffmpeg (setup.sh installs it)");
    assert!(st.success(), "ffmpeg {args:?}");
}

fn decode_all(p: &Path) -> (Vec<f32>, u32, usize) {
    let mut out = Vec::new();
    let mut rate = 0;
    let info = decode::decode(p, &Silent, |b, r| {
        out.extend_from_slice(b);
        rate = r;
        Ok(())
    })
    .unwrap_or_else(|e| panic!("{}: {e}", p.display()));
    assert_eq!(info.sample_rate, rate);
    (out, rate, info.channels)
}

fn rms(x: &[f32], ch: usize) -> f64 {
    let v: Vec<f64> = x.iter().skip(ch).step_by(2).map(|v| *v as f64).collect();
    (v.iter().map(|a| a * a).sum::<f64>() / v.len().max(1) as f64).sqrt()
}

#[test]
fn decoders_read_every_supported_format() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (src, x) = reference_wav(dir.path());
    let s = src.to_str().expect("utf8");
    let d = |n: &str| dir.path().join(n).to_str().expect("utf8").to_string();
    // (file, ffmpeg codec args, lossless?)
    let cases: [(&str, &[&str], bool); 7] = [
        ("a.wav", &["-c:a", "pcm_s24le"], true),
        ("b.wav", &["-c:a", "pcm_f32le"], true),
        ("c.flac", &["-c:a", "flac"], true),
        ("d.m4a", &["-c:a", "alac"], true),
        ("e.mp3", &["-c:a", "libmp3lame", "-b:a", "192k"], false),
        ("f.ogg", &["-c:a", "libvorbis", "-q:a", "6"], false),
        ("g.m4a", &["-c:a", "aac", "-b:a", "192k"], false),
    ];
    for (name, codec, lossless) in cases {
        let mut args = vec!["-i", s];
        args.extend_from_slice(codec);
        let out = d(name);
        args.push(&out);
        ffmpeg(&args);
        let size = std::fs::metadata(&out).expect("fixture").len();
        let (y, rate, ch) = decode_all(Path::new(&out));
        assert_eq!((rate, ch), (44_100, 2), "{name}");
        let frames = y.len() / 2;
        if lossless {
            assert_eq!(frames, x.len() / 2, "{name} length");
            let worst = x.iter().zip(&y).map(|(a, b)| (a - b).abs()).fold(0.0f32, f32::max);
            assert!(worst < 1e-4, "{name}: lossless decode differs by {worst}");
        } else {
            // Lossy codecs keep the length within their priming/padding and the level within 0.5 dB.
            assert!(frames.abs_diff(x.len() / 2) < 3000, "{name}: {frames} frames");
            for c in 0..2 {
                let db = 20.0 * (rms(&y, c) / rms(&x, c)).log10();
                assert!(db.abs() < 0.5, "{name} channel {c}: level off by {db:.2} dB");
            }
        }
        eprintln!("{name}: {size} bytes, {frames} frames");
    }
}

#[test]
fn mono_and_multichannel_become_stereo() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (src, _) = reference_wav(dir.path());
    let s = src.to_str().expect("utf8");
    let mono = dir.path().join("mono.flac");
    ffmpeg(&["-i", s, "-ac", "1", "-ar", "22050", mono.to_str().expect("utf8")]);
    let (y, rate, ch) = decode_all(&mono);
    assert_eq!((rate, ch), (22_050, 1));
    assert!(y.chunks_exact(2).all(|f| f[0] == f[1]), "mono duplicated to both channels");
    // 5.1 (hound writes the standard mask FL FR FC LFE BL BR): front and back
    // pairs carry the stereo signal, the centre is silent, LFE is loud noise.
    let (_, x) = reference_wav(dir.path());
    let surround = dir.path().join("surround.wav");
    let spec = hound::WavSpec {
        channels: 6,
        sample_rate: 44_100,
        bits_per_sample: 32,
        sample_format: hound::SampleFormat::Float,
    };
    let mut w = hound::WavWriter::create(&surround, spec).expect("create");
    for (i, f) in x.chunks_exact(2).enumerate() {
        let lfe = if i % 2 == 0 { 0.9 } else { -0.9 };
        for v in [f[0], f[1], 0.0, lfe, f[0], f[1]] {
            w.write_sample(v).expect("sample");
        }
    }
    w.finalize().expect("finalize");
    let (y, _, ch) = decode_all(&surround);
    assert_eq!(ch, 6);
    // Each side: (front + back) / (1 + 0.7071 + 1); LFE dropped.
    let g = 2.0 / (2.0 + std::f32::consts::FRAC_1_SQRT_2);
    let worst = x.iter().zip(&y).map(|(a, b)| (a * g - b).abs()).fold(0.0f32, f32::max);
    assert!(worst < 1e-5, "5.1 downmix differs by {worst}");
}

#[test]
fn our_wav_and_flac_decode_back_bit_exact() {
    let dir = tempfile::tempdir().expect("tempdir");
    // Every 16-bit value pattern on the grid, so the round trip must be exact.
    let frames = 10_000i32;
    let x16: Vec<f32> = (0..frames * 2i32).map(|i| ((i * 7919) % 65_536 - 32_768) as f32 / 32_768.0).collect();
    for (name, fmt) in [
        ("x.wav", OutputFormat::Wav { depth: WavDepth::Int16 }),
        ("w.wav", OutputFormat::Wav { depth: WavDepth::Int24 }),
        ("x.flac", OutputFormat::Flac { bits: 16 }),
        ("y.flac", OutputFormat::Flac { bits: 24 }),
        ("z.wav", OutputFormat::Wav { depth: WavDepth::Float32 }),
    ] {
        let p = dir.path().join(name);
        let mut w = encode::open(&p, fmt, 48_000, 2, ClipMode::None).expect("open");
        for chunk in x16.chunks(3000) {
            w.write(chunk).expect("write");
        }
        w.finish().expect("finish");
        let (y, rate, _) = decode_all(&p);
        assert_eq!(rate, 48_000);
        assert_eq!(y.len(), x16.len(), "{name}");
        assert!(x16.iter().zip(&y).all(|(a, b)| a == b), "{name}: not bit-exact");
        // ffmpeg agrees that the FLAC stream is valid (header rewritten with length and MD5).
        if name.ends_with(".flac") {
            let st = Command::new("ffmpeg")
                .args(["-loglevel", "error", "-i", p.to_str().expect("utf8"), "-f", "null", "-"])
                .status()
                .expect("ffmpeg");
            assert!(st.success(), "{name} rejected by ffmpeg");
        }
    }
}

struct CancelAfterFirstSegment(std::sync::atomic::AtomicBool);
impl Listener for CancelAfterFirstSegment {
    fn event(&self, e: &Event) {
        if matches!(e, Event::Segment { .. }) {
            self.0.store(true, std::sync::atomic::Ordering::SeqCst);
        }
    }
    fn is_cancelled(&self) -> bool {
        self.0.load(std::sync::atomic::Ordering::SeqCst)
    }
}

#[test]
fn cancelling_between_segments_leaves_no_output() {
    let _turn = cpu_turn();
    let mix = common::falcon_mixture();
    let dir = tempfile::tempdir().expect("tempdir");
    let long = dir.path().join("long.wav");
    ffmpeg(&["-stream_loop", "2", "-i", mix.to_str().expect("utf8"), long.to_str().expect("utf8")]);
    let sep = common::open_separator();
    let out = dir.path().join("out");
    let req = stemroom_core::job::JobRequest {
        input: long,
        out_dir: out.clone(),
        filename: stemroom_core::job::DEFAULT_FILENAME.into(),
        format: OutputFormat::Flac { bits: 16 },
        clip: ClipMode::Rescale,
        two_stems: None,
        other_method: Default::default(),
        output_rate: Default::default(),
        separate: stemroom_core::separate::SeparateOptions { shifts: 0, ..Default::default() },
        scratch_dir: Some(dir.path().to_path_buf()),
    };
    let listener = CancelAfterFirstSegment(Default::default());
    let err = stemroom_core::job::separate_file(&sep, &req, &listener).expect_err("cancelled");
    assert_eq!(err.code(), stemroom_core::ErrorCode::Cancelled);
    assert!(!out.exists(), "output folder removed again");
    let left: Vec<_> = std::fs::read_dir(dir.path()).expect("ls").flatten().map(|e| e.file_name()).collect();
    assert_eq!(left.len(), 1, "only the input remains (no scratch spool): {left:?}");
}

// ---------------------------------------------------------------------------
// queue: persistence across restarts and crashes, concurrent enqueue, and the
// worker running the real model (done, cancelled within a segment).

mod queue {
    use std::io::BufRead;
    use std::path::{Path, PathBuf};
    use std::process::{Command, Stdio};
    use std::sync::{Arc, Mutex};
    use std::time::Instant;

    use stemroom_core::queue::{Job, JobSource, JobState, Queue, Settings};
    use stemroom_core::worker::{JobProgress, WorkerListener};

    use crate::common::wait_for;

    fn file(p: &str) -> JobSource {
        JobSource::File { path: p.into() }
    }

    #[test]
    fn restart_puts_running_jobs_back_in_order() {
        let dir = tempfile::tempdir().expect("tempdir");
        let db = dir.path().join("queue.sqlite");
        let opts = Settings::default().job_options();
        {
            let q = Queue::open(&db).expect("open");
            for name in ["a", "b", "c"] {
                q.enqueue(&file(name), name, &opts).expect("enqueue");
            }
            let a = q.claim_next().expect("claim").expect("job");
            q.set_running_state(a.id, &JobState::Separating { segment: 2, total: 9 }).expect("update");
            let b = q.claim_next().expect("claim").expect("job");
            q.finish(b.id, &JobState::Done, Some("/lib/b"), &[]).expect("finish");
            // Dropped without finishing `a`: as if the app died.
        }
        let q = Queue::open(&db).expect("reopen");
        let queued: Vec<(String, JobState)> =
            q.queue().expect("queue").into_iter().map(|j| (j.title, j.state)).collect();
        assert_eq!(queued, [("a".to_string(), JobState::Queued), ("c".to_string(), JobState::Queued)]);
        assert_eq!(q.library("").expect("library").len(), 1);
        assert_eq!(q.claim_next().expect("claim").expect("job").title, "a", "the interrupted job runs first again");
    }

    fn crash_writer() -> PathBuf {
        super::example_bin("queue_crash_writer")
    }

    #[test]
    fn sigkill_during_updates_loses_and_duplicates_nothing() {
        let dir = tempfile::tempdir().expect("tempdir");
        let db = dir.path().join("queue.sqlite");
        let mut committed: Vec<u32> = Vec::new();
        for round in 0..5 {
            let mut child = Command::new(crash_writer()).arg(&db).stdout(Stdio::piped()).spawn().expect("spawn writer");
            let mut lines = std::io::BufReader::new(child.stdout.take().expect("stdout")).lines();
            // Let it commit a varying number of jobs, then kill it mid-stream.
            for _ in 0..(20 + round * 17) {
                let line = lines.next().expect("writer output").expect("line");
                committed.push(line.trim().parse().expect("id"));
            }
            child.kill().expect("SIGKILL");
            child.wait().expect("reap");
            // Ids it printed before dying but after we stopped reading count too.
            for line in lines.map_while(Result::ok) {
                committed.push(line.trim().parse().expect("id"));
            }
            let q = Queue::open(&db).expect("reopen after crash");
            let ok: String = rusqlite::Connection::open(&db)
                .expect("sqlite")
                .query_row("PRAGMA integrity_check", [], |r| r.get(0))
                .expect("integrity_check");
            assert_eq!(ok, "ok");
            let all: Vec<Job> = q.queue().expect("queue").into_iter().chain(q.library("").expect("library")).collect();
            let mut ids: Vec<u32> = all.iter().map(|j| j.id).collect();
            ids.sort_unstable();
            let n = ids.len();
            ids.dedup();
            assert_eq!(ids.len(), n, "no duplicated job");
            for id in &committed {
                assert!(ids.contains(id), "job {id} was committed before the crash and must survive");
            }
            assert!(all.iter().all(|j| !j.state.is_running()), "running jobs were recovered to queued");
        }
    }

    #[test]
    fn concurrent_enqueue_from_many_connections() {
        let dir = tempfile::tempdir().expect("tempdir");
        let db = dir.path().join("queue.sqlite");
        drop(Queue::open(&db).expect("create"));
        let threads: Vec<_> = (0..4)
            .map(|t| {
                let db = db.clone();
                std::thread::spawn(move || {
                    let q = Queue::open(&db).expect("open");
                    let opts = Settings::default().job_options();
                    (0..25)
                        .map(|i| q.enqueue(&file(&format!("{t}-{i}")), "x", &opts).expect("enqueue").id)
                        .collect::<Vec<_>>()
                })
            })
            .collect();
        let mut ids: Vec<u32> = threads.into_iter().flat_map(|t| t.join().expect("thread")).collect();
        ids.sort_unstable();
        ids.dedup();
        assert_eq!(ids.len(), 100);
        let q = Queue::open(&db).expect("open");
        let jobs = q.queue().expect("queue");
        assert_eq!(jobs.len(), 100);
        let mut positions: Vec<i32> = jobs.iter().map(|j| j.position).collect();
        positions.dedup();
        assert_eq!(positions.len(), 100, "every job has its own queue position");
        // Claims from two connections never hand out the same job.
        let q2 = Queue::open(&db).expect("open");
        let mut claimed: Vec<u32> = Vec::new();
        while let (Some(a), Some(b)) = (q.claim_next().expect("claim"), q2.claim_next().expect("claim")) {
            claimed.push(a.id);
            claimed.push(b.id);
        }
        let n = claimed.len();
        claimed.sort_unstable();
        claimed.dedup();
        assert_eq!(claimed.len(), n);
    }

    #[derive(Default)]
    pub(super) struct Recorder {
        changes: Mutex<Vec<Job>>,
        progress: Mutex<Vec<(Instant, JobProgress)>>,
    }
    impl WorkerListener for Recorder {
        fn job_changed(&self, job: &Job) {
            self.changes.lock().expect("lock").push(job.clone());
        }
        fn progress(&self, p: &JobProgress) {
            self.progress.lock().expect("lock").push((Instant::now(), p.clone()));
        }
    }

    #[test]
    fn worker_separates_into_the_library_and_cancels_within_a_segment() {
        let _turn = super::cpu_turn();
        let mix = crate::common::falcon_mixture();
        let lq = crate::common::LibraryQueue::new();
        let (q, library) = (&lq.queue, &lq.library);
        let long = lq.dir.path().join("long.wav");
        super::ffmpeg(&["-stream_loop", "3", "-i", mix.to_str().expect("utf8"), long.to_str().expect("utf8")]);
        let rec = Arc::new(Recorder::default());
        let worker = lq.worker(rec.clone());
        let opts = q.settings().expect("settings").job_options();
        let song = q.enqueue(&file(mix.to_str().expect("utf8")), "Falcon 69", &opts).expect("enqueue");
        let long_job = q.enqueue(&file(long.to_str().expect("utf8")), "Long", &opts).expect("enqueue");
        worker.start(1);

        let done = wait_for(q, song.id, 300, |j| j.state.is_finished());
        assert_eq!(done.state, JobState::Done, "{:?}", done.state);
        let out = PathBuf::from(done.output_dir.clone().expect("output dir"));
        assert_eq!(out, library.join("Falcon 69"));
        let names: Vec<&str> = done.stems.iter().map(|s| s.stem.as_str()).collect();
        assert_eq!(names, ["drums", "bass", "other", "vocals"]);
        for s in &done.stems {
            assert!(Path::new(&s.path).is_file(), "{}", s.path);
        }
        assert!(out.join("stemroom.json").is_file());
        assert!(done.duration_seconds.expect("duration") > 5.0);
        assert_eq!(done.provider.as_deref(), Some("cpu"));

        // The long job: cancel once it is separating; it must stop within one
        // segment's time and leave nothing in the library.
        let running = wait_for(q, long_job.id, 120, |j| matches!(j.state, JobState::Separating { .. }));
        let sps = q.segment_seconds("htdemucs", "cpu").expect("db").expect("measured on the first song");
        let asked = Instant::now();
        worker.cancel(running.id).expect("cancel");
        let cancelled = wait_for(q, long_job.id, 120, |j| j.state.is_finished());
        let took = asked.elapsed().as_secs_f64();
        assert_eq!(cancelled.state, JobState::Cancelled);
        assert!(took < 2.0 * sps + 2.0, "cancel took {took:.1} s with {sps:.1} s per segment");
        let entries: Vec<_> = std::fs::read_dir(library).expect("ls").flatten().map(|e| e.file_name()).collect();
        assert_eq!(entries, [std::ffi::OsString::from("Falcon 69")], "no partial folder left");

        // Progress reached the listener, throttled and with an ETA from measured times.
        let progress = rec.progress.lock().expect("lock");
        let seps: Vec<&JobProgress> = progress
            .iter()
            .map(|(_, p)| p)
            .filter(|p| p.id == long_job.id && matches!(p.state, JobState::Separating { .. }))
            .collect();
        assert!(!seps.is_empty());
        assert!(seps.iter().all(|p| p.eta_seconds.is_some_and(|e| e >= 0.0) && p.percent > 0.0 && p.percent < 100.0));
        let changes = rec.changes.lock().expect("lock");
        assert!(changes.iter().any(|j| j.id == song.id && j.state == JobState::Done));
        worker.shutdown();
    }
}

// ---------------------------------------------------------------------------
// peaks: computed from a real decoded file, cached beside it, reused.

#[test]
fn peaks_are_cached_beside_the_audio_and_reused() {
    use stemroom_core::peaks::{cache_path, Peaks};
    let dir = tempfile::tempdir().expect("tempdir");
    let (wav, samples) = reference_wav(dir.path());
    let p = Peaks::cached(&wav).expect("peaks");
    assert_eq!(p, Peaks::from_samples(&samples, 44_100), "streamed decode gives the same peaks as the samples");
    let cache = cache_path(&wav).expect("cache path");
    assert!(cache.is_file());
    // A damaged cache is recomputed, not trusted.
    std::fs::write(&cache, b"SRPK garbage").expect("write");
    assert_eq!(Peaks::cached(&wav).expect("peaks"), p);
    assert_eq!(Peaks::read(&cache).expect("rewritten cache"), p);
}

// ---------------------------------------------------------------------------
// export: round trips through our decoders against the source stems.

mod export {
    use std::path::{Path, PathBuf};

    use stemroom_core::audio::decode::StreamDecoder;
    use stemroom_core::audio::encode::{self, ClipMode, OutputFormat, Tags, WavDepth};
    use stemroom_core::export::{export, ExportRate, ExportRequest, ExportWhat};
    use stemroom_core::mixer::{LoopRegion, MixControls};
    use stemroom_core::progress::{Listener, Silent};
    use stemroom_core::queue::StemFile;

    const FRAMES: usize = 110_250; // 2.5 s at 44.1 kHz
    const NAMES: [&str; 4] = ["drums", "bass", "other", "vocals"];

    /// Four different 16-bit stems, each at most 0.2 (their sum stays below full scale).
    fn stems(dir: &Path) -> Vec<StemFile> {
        NAMES
            .iter()
            .enumerate()
            .map(|(k, name)| {
                let f = 110.0 * (k + 1) as f64;
                let x: Vec<f32> = (0..FRAMES)
                    .flat_map(|i| {
                        let t = i as f64 / 44_100.0;
                        // A tone plus a chirp: not periodic, so alignment is unambiguous.
                        let tau = 2.0 * std::f64::consts::PI;
                        let v = 0.12 * (tau * f * t).sin() + 0.08 * (tau * (f / 2.0 + 300.0 * t) * t).sin();
                        let q = |v: f64| (v * 32768.0).round() as f32 / 32768.0;
                        [q(v), q(-v * 0.5)]
                    })
                    .collect();
                let p = dir.join(format!("{name}.wav"));
                let mut w = encode::open(&p, OutputFormat::Wav { depth: WavDepth::Int16 }, 44_100, 2, ClipMode::None)
                    .expect("open");
                w.write(&x).expect("write");
                w.finish().expect("finish");
                StemFile { stem: name.to_string(), path: p.to_string_lossy().into_owned() }
            })
            .collect()
    }

    fn read(p: &Path) -> (Vec<f32>, u32) {
        let mut d = StreamDecoder::open(p).expect("open");
        let mut out = Vec::new();
        let mut rate = 0;
        while let Some((b, r)) = d.next_block().expect("decode") {
            out.extend_from_slice(b);
            rate = r;
        }
        (out, rate)
    }

    fn request(sources: &[StemFile], what: ExportWhat, format: OutputFormat, dest: PathBuf) -> ExportRequest {
        ExportRequest {
            sources: sources.to_vec(),
            what,
            region: None,
            format,
            rate: ExportRate::Original,
            dest_dir: dest,
            tags: Tags::default(),
        }
    }

    #[test]
    fn stems_are_bit_exact_in_wav_and_flac_and_regions_cut_exactly() {
        let dir = tempfile::tempdir().expect("tempdir");
        let src = stems(dir.path());
        let want = |name: &str| read(Path::new(&src[NAMES.iter().position(|n| *n == name).expect("stem")].path)).0;
        for format in [OutputFormat::Wav { depth: WavDepth::Int16 }, OutputFormat::Flac { bits: 16 }] {
            let out = dir.path().join(format!("out-{}", format.extension()));
            let what = ExportWhat::Stems { stems: vec!["drums".into(), "vocals".into()] };
            let files = export(&request(&src, what, format, out.clone()), &Silent).expect("export");
            assert_eq!(files.len(), 2);
            assert_eq!(read(&files[0]).0, want("drums"), "{format:?} drums bit-exact");
            assert_eq!(read(&files[1]).0, want("vocals"), "{format:?} vocals bit-exact");
            let left: Vec<_> = std::fs::read_dir(&out).expect("ls").flatten().map(|e| e.file_name()).collect();
            assert_eq!(left.len(), 2, "no temporary files: {left:?}");
        }
        let mut req = request(
            &src,
            ExportWhat::Stems { stems: vec!["bass".into()] },
            OutputFormat::Wav { depth: WavDepth::Int16 },
            dir.path().join("region"),
        );
        req.region = Some(LoopRegion { start: 1_000, end: 45_100 });
        let files = export(&req, &Silent).expect("export");
        assert_eq!(read(&files[0]).0, want("bass")[2 * 1_000..2 * 45_100].to_vec(), "exactly the region");
    }

    #[test]
    fn instrumental_mix_is_the_sum_of_the_other_stems() {
        let dir = tempfile::tempdir().expect("tempdir");
        let src = stems(dir.path());
        let what = ExportWhat::Mix { name: "Song (instrumental)".into(), controls: MixControls::only(4, &[0, 1, 2]) };
        let files = export(
            &request(&src, what, OutputFormat::Wav { depth: WavDepth::Float32 }, dir.path().join("mix")),
            &Silent,
        )
        .expect("export");
        assert!(files[0].ends_with("Song (instrumental).wav"));
        let (mix, _) = read(&files[0]);
        let parts: Vec<Vec<f32>> = src[..3].iter().map(|s| read(Path::new(&s.path)).0).collect();
        assert_eq!(mix.len(), parts[0].len());
        for i in 0..mix.len() {
            let sum = parts[0][i] + parts[1][i] + parts[2][i];
            assert!((mix[i] - sum).abs() < 1e-6, "sample {i}: {} vs {sum}", mix[i]);
        }
    }

    #[test]
    fn mp3_at_320_kbps_keeps_length_tags_and_20_db_snr() {
        let dir = tempfile::tempdir().expect("tempdir");
        let src = stems(dir.path());
        let mut req = request(
            &src,
            ExportWhat::Stems { stems: vec!["other".into()] },
            OutputFormat::Mp3 { kbps: 320 },
            dir.path().join("mp3"),
        );
        req.tags = Tags { title: Some("Falcon 69".into()), artist: Some("The Easton Ellises".into()) };
        let files = export(&req, &Silent).expect("export");
        let (x, rate) = read(&files[0]);
        assert_eq!(rate, 44_100);
        let (s, _) = read(Path::new(&src[2].path));
        // LAME adds its encoder delay (576 + 529 frames, plus the frame holding
        // the LAME tag) and pads the last frame: every source frame must be
        // there, with at most 3 MP3 frames (1152 each) of delay and padding.
        let frames = x.len() / 2;
        assert!((FRAMES..=FRAMES + 3 * 1152).contains(&frames), "{frames} frames for {FRAMES}");
        // Delay = the lag with the least error over the interior.
        let err_at = |lag: usize| -> f64 {
            (2048..FRAMES - 2048).map(|i| (x[2 * (i + lag)] as f64 - s[2 * i] as f64).powi(2)).sum()
        };
        let lag = (0..=frames - FRAMES).min_by(|a, b| err_at(*a).total_cmp(&err_at(*b))).expect("lag");
        let (mut sig, mut err) = (0.0f64, 0.0f64);
        // Skip the encoder's start-up and the last granule.
        for i in 2 * 2048..2 * (FRAMES - 2048) {
            sig += (s[i] as f64).powi(2);
            err += (s[i] as f64 - x[i + 2 * lag] as f64).powi(2);
        }
        let snr = 10.0 * (sig / err).log10();
        assert!(snr >= 20.0, "SNR {snr:.1} dB (delay {lag} frames)");
        let tags = StreamDecoder::open(&files[0]).expect("open").tags();
        assert_eq!(tags, req.tags);
        // Bit rate: file size of CBR 320 kbps within 3 % (plus the ID3 tag).
        let bytes = std::fs::metadata(&files[0]).expect("size").len() as f64;
        let expected = 320_000.0 / 8.0 * frames as f64 / 44_100.0;
        assert!((bytes - expected).abs() / expected < 0.03, "{bytes} bytes, expected about {expected}");
    }

    struct CancelNow;
    impl Listener for CancelNow {
        fn is_cancelled(&self) -> bool {
            true
        }
    }

    #[test]
    fn resampled_exports_and_cancellation() {
        let dir = tempfile::tempdir().expect("tempdir");
        let src = stems(dir.path());
        let mut req = request(
            &src,
            ExportWhat::Stems { stems: vec!["drums".into()] },
            OutputFormat::Flac { bits: 24 },
            dir.path().join("48k"),
        );
        req.rate = ExportRate::Hz { hz: 48_000 };
        let files = export(&req, &Silent).expect("export");
        let (x, rate) = read(&files[0]);
        assert_eq!(rate, 48_000);
        let want = (FRAMES as f64 * 48_000.0 / 44_100.0).round() as i64;
        assert!(((x.len() / 2) as i64 - want).abs() <= 1, "{} frames, want {want}", x.len() / 2);
        let out = dir.path().join("cancelled");
        req.dest_dir = out.clone();
        assert_eq!(export(&req, &CancelNow).expect_err("cancelled").code(), stemroom_core::ErrorCode::Cancelled);
        assert_eq!(std::fs::read_dir(&out).expect("ls").count(), 0, "nothing left");
        req.what = ExportWhat::Stems { stems: vec!["cowbell".into()] };
        assert_eq!(export(&req, &Silent).expect_err("bad").code(), stemroom_core::ErrorCode::InvalidOptions);
    }
}

#[test]
fn zip_export_holds_every_stem_in_a_song_folder() {
    use stemroom_core::audio::encode::{OutputFormat, Tags, WavDepth};
    use stemroom_core::export::{export, ExportRate, ExportRequest, ExportWhat};
    use stemroom_core::queue::StemFile;
    let dir = tempfile::tempdir().expect("tempdir");
    let (wav, _) = reference_wav(dir.path());
    let sources: Vec<StemFile> = ["drums", "bass", "other", "vocals"]
        .iter()
        .map(|s| {
            let p = dir.path().join(format!("{s}.wav"));
            std::fs::copy(&wav, &p).expect("copy");
            StemFile { stem: s.to_string(), path: p.to_string_lossy().into_owned() }
        })
        .collect();
    let out = dir.path().join("zip");
    let req = ExportRequest {
        sources,
        what: ExportWhat::Zip { name: "Falcon 69".into() },
        region: None,
        format: OutputFormat::Wav { depth: WavDepth::Int16 },
        rate: ExportRate::Original,
        dest_dir: out.clone(),
        tags: Tags::default(),
    };
    let files = export(&req, &Silent).expect("zip export");
    assert_eq!(files, [out.join("Falcon 69.zip")]);
    let listing = Command::new("unzip").arg("-Z1").arg(&files[0]).output().expect("unzip (setup installs it)");
    let names = String::from_utf8_lossy(&listing.stdout);
    let names: Vec<&str> = names.lines().collect();
    assert_eq!(names, ["Falcon 69/drums.wav", "Falcon 69/bass.wav", "Falcon 69/other.wav", "Falcon 69/vocals.wav"]);
    let test = Command::new("unzip").arg("-tq").arg(&files[0]).status().expect("unzip");
    assert!(test.success(), "zip integrity");
    let left: Vec<_> = std::fs::read_dir(&out).expect("ls").flatten().map(|e| e.file_name()).collect();
    assert_eq!(left.len(), 1, "only the zip remains: {left:?}");
}

// ---------------------------------------------------------------------------
// seeking: the next block after a seek starts exactly at the requested frame.

#[test]
fn seeking_lands_on_the_exact_frame() {
    use stemroom_core::audio::decode::StreamDecoder;
    let dir = tempfile::tempdir().expect("tempdir");
    let (wav, x) = reference_wav(dir.path());
    let flac = dir.path().join("ref.flac");
    let mp3 = dir.path().join("ref.mp3");
    ffmpeg(&["-i", wav.to_str().expect("utf8"), "-c:a", "flac", flac.to_str().expect("utf8")]);
    ffmpeg(&["-i", wav.to_str().expect("utf8"), "-c:a", "libmp3lame", "-b:a", "320k", mp3.to_str().expect("utf8")]);
    let read = |d: &mut StreamDecoder, frames: usize| {
        let mut out = Vec::new();
        while out.len() < frames * 2 {
            match d.next_block().expect("block") {
                Some((b, _)) => out.extend_from_slice(b),
                None => break,
            }
        }
        out.truncate(frames * 2);
        out
    };
    for path in [&wav, &flac] {
        let mut d = StreamDecoder::open(path).expect("open");
        for target in [40_000usize, 12_345, 0, 66_000] {
            d.seek(target as u64).expect("seek");
            let got = read(&mut d, 100);
            assert_eq!(got, x[target * 2..(target + 100).min(66_150) * 2], "{} at {target}", path.display());
        }
        d.seek(70_000).expect("seek past the end");
        assert!(read(&mut d, 10).is_empty(), "nothing after the end");
    }
    // MP3 is lossy: the frames after a seek match a full decode of the same
    // file (same decoder, same frames) closely, not bit for bit.
    let (full, _, _) = decode_all(&mp3);
    let mut d = StreamDecoder::open(&mp3).expect("open");
    let target = 30_000usize;
    d.seek(target as u64).expect("seek");
    let got = read(&mut d, 4096);
    let want = &full[target * 2..(target + 4096) * 2];
    let err: f64 = got.iter().zip(want).map(|(a, b)| f64::from(a - b).powi(2)).sum();
    let sig: f64 = want.iter().map(|a| f64::from(*a).powi(2)).sum();
    assert!(10.0 * (sig / err.max(1e-20)).log10() > 30.0, "mp3 seek lands on the same audio");
}

// ---------------------------------------------------------------------------
// player: real playback through cpal into a PulseAudio null sink (started
// here, stopped when the test ends), driven by the `play_stems` example in
// a child process so its audio environment stays its own.

mod player {
    use std::path::{Path, PathBuf};
    use std::process::Command;
    use std::time::{Duration, Instant};

    /// A PulseAudio daemon with a null sink, private to one test.
    struct NullSink {
        runtime_dir: tempfile::TempDir,
    }

    impl NullSink {
        fn start() -> NullSink {
            let runtime_dir = tempfile::tempdir().expect("tempdir");
            let st = Command::new("pulseaudio")
                .env("XDG_RUNTIME_DIR", runtime_dir.path())
                .env("HOME", runtime_dir.path())
                .args(["-n", "--daemonize=yes", "--exit-idle-time=-1", "--use-pid-file=yes"])
                .args(["--load=module-null-sink sink_name=nullsink", "--load=module-native-protocol-unix"])
                .status()
                .expect("pulseaudio (scripts/install-system-deps.sh installs it)");
            assert!(st.success(), "pulseaudio did not start");
            let socket = runtime_dir.path().join("pulse/native");
            let t0 = Instant::now();
            while !socket.exists() && t0.elapsed() < Duration::from_secs(10) {
                std::thread::sleep(Duration::from_millis(50));
            }
            assert!(socket.exists(), "pulseaudio socket did not appear");
            NullSink { runtime_dir }
        }

        fn command(&self, program: &Path) -> Command {
            let mut c = Command::new(program);
            c.env("XDG_RUNTIME_DIR", self.runtime_dir.path()).env("HOME", self.runtime_dir.path());
            c
        }
    }

    impl Drop for NullSink {
        fn drop(&mut self) {
            let pid_file = self.runtime_dir.path().join("pulse/pid");
            if let Some(pid) = std::fs::read_to_string(pid_file).ok().and_then(|s| s.trim().parse::<i32>().ok()) {
                // SAFETY: kill(2) on the pid of the daemon this test started.
                unsafe { libc::kill(pid, libc::SIGTERM) };
            }
        }
    }

    /// The true stems of the Falcon 69 preview (a finished song's stems).
    fn stems() -> Vec<PathBuf> {
        let dir = stemroom_core::paths::cache_dir().expect("cache").join("testdata");
        let s: Vec<PathBuf> =
            ["drums", "bass", "other", "vocals"].iter().map(|n| dir.join(format!("{n}.wav"))).collect();
        for p in &s {
            assert!(p.is_file(), "{} missing: run scripts/setup.sh", p.display());
        }
        s
    }

    fn play(sink: &NullSink, args: &[&str]) -> serde_json::Value {
        let out = sink.command(&super::example_bin("play_stems")).args(args).args(stems()).output().expect("run");
        assert!(out.status.success(), "play_stems failed: {}", String::from_utf8_lossy(&out.stderr));
        serde_json::from_slice(&out.stdout).expect("json report")
    }

    #[test]
    fn stems_play_in_real_time_and_the_playhead_follows_the_audio() {
        let _turn = super::cpu_turn();
        let sink = NullSink::start();
        let r = play(&sink, &["--seconds", "3"]);
        let rate = r["output"]["sampleRate"].as_f64().expect("rate");
        assert_eq!(r["status"]["sampleRate"].as_f64(), Some(44_100.0), "stems' rate");
        assert_eq!(rate, 44_100.0, "the device runs at the stems' rate (no resampling): {r}");
        assert_eq!(r["status"]["error"], serde_json::Value::Null);
        let secs = r["playedSeconds"].as_f64().expect("secs");
        let frames = r["framesPlayed"].as_u64().expect("frames");
        // Paced by the device: about one second of audio per second of wall
        // time (an unpaced device takes frames as fast as they come).
        let pace = frames as f64 / rate / secs;
        assert!((0.85..1.15).contains(&pace), "{frames} frames in {secs:.2} s = {pace:.3}x real time: {r}");
        assert!(r["callbacks"].as_u64().expect("callbacks") > 10, "many callbacks: {r}");
        // The read-ahead keeps up (a little slack for a loaded CI machine).
        let under = r["underrunFrames"].as_u64().expect("underruns");
        assert!(under * 100 < frames, "read-ahead ran dry for {under} frames: {r}");
        // The playhead is the position of the frames handed to the device.
        assert_eq!(r["status"]["position"].as_u64(), Some(frames), "position = frames delivered: {r}");
        // While playing, the reported position moved forward with wall time.
        let pos: Vec<(f64, f64)> = r["positions"]
            .as_array()
            .expect("positions")
            .iter()
            .map(|p| (p["t"].as_f64().expect("t"), p["position"].as_f64().expect("pos")))
            .collect();
        assert!(pos.len() > 30, "~30 samples a second");
        assert!(pos.windows(2).all(|w| w[1].1 >= w[0].1), "the playhead never goes back");
        let (first, last) = (pos[1], pos[pos.len() - 1]);
        let speed = (last.1 - first.1) / rate / (last.0 - first.0);
        assert!((0.85..1.15).contains(&speed), "playhead speed {speed:.3}x: {r}");

        // A seek plays from the requested frame (with a solo on).
        let r = play(&sink, &["--seconds", "1", "--seek-seconds", "3", "--solo", "3"]);
        let start = r["startFrame"].as_u64().expect("start");
        assert_eq!(start, 132_300);
        let frames = r["framesPlayed"].as_u64().expect("frames");
        assert!(frames > 30_000, "played about a second: {r}");
        assert_eq!(r["status"]["position"].as_u64(), Some(start + frames), "position after a seek: {r}");

        // The 6 s preview runs out: playing 5 s from 3 s stops at the end.
        let r = play(&sink, &["--seconds", "5", "--seek-seconds", "3"]);
        assert_eq!(r["status"]["ended"], serde_json::Value::Bool(true), "{r}");
        assert_eq!(r["status"]["position"], r["status"]["length"], "stops at the end: {r}");
        assert_eq!(r["status"]["playing"], serde_json::Value::Bool(false));
    }
}

// ---------------------------------------------------------------------------
// links: the real yt-dlp against a loopback HTTP server started here (direct
// audio, a page with an <audio> element, 404, no media, a stalling server,
// a slow one cancelled mid-download, a hostile title), and the real model
// separating what was downloaded.

mod links {
    use std::io::{BufRead, BufReader, Write};
    use std::net::{TcpListener, TcpStream};
    use std::path::{Path, PathBuf};
    use std::sync::atomic::{AtomicBool, Ordering};
    use std::sync::Arc;
    use std::time::{Duration, Instant};

    use stemroom_core::link::{self, LinkError, YtDlp};

    /// A loopback server with fixed routes; every connection is bounded in
    /// time, and the server stops when dropped.
    struct Server {
        port: u16,
        stop: Arc<AtomicBool>,
    }

    fn evil_title() -> String {
        format!("{}{}{}", "../".repeat(20), ":*?<>|\\".repeat(10), "x".repeat(300))
    }

    fn respond(mut s: TcpStream, song: &[u8], stop: &AtomicBool) {
        let _ = s.set_read_timeout(Some(Duration::from_secs(5)));
        let mut line = String::new();
        let mut r = BufReader::new(s.try_clone().expect("clone"));
        if r.read_line(&mut line).is_err() {
            return;
        }
        // Skip the headers.
        loop {
            let mut h = String::new();
            if r.read_line(&mut h).map_or(true, |n| n == 0) || h == "\r\n" {
                break;
            }
        }
        let path = line.split_whitespace().nth(1).unwrap_or("/").to_string();
        let head_only = line.starts_with("HEAD");
        let send = |s: &mut TcpStream, status: &str, ctype: &str, body: &[u8]| {
            let _ = write!(
                s,
                "HTTP/1.1 {status}\r\nContent-Type: {ctype}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
                body.len()
            );
            if !head_only {
                let _ = s.write_all(body);
            }
        };
        let page = |title: &str, media: bool| {
            let audio = if media { r#"<audio controls src="/song.wav"></audio>"# } else { "<p>No media here.</p>" };
            let title = title.replace('&', "&amp;").replace('<', "&lt;").replace('>', "&gt;");
            format!("<!doctype html><html><head><title>{title}</title></head><body>{audio}</body></html>").into_bytes()
        };
        match path.as_str() {
            "/song.wav" => send(&mut s, "200 OK", "audio/wav", song),
            "/page.html" => send(&mut s, "200 OK", "text/html", &page("Falcon 69 (live page)", true)),
            "/nomedia.html" => send(&mut s, "200 OK", "text/html", &page("Nothing to see", false)),
            "/evil.html" => send(&mut s, "200 OK", "text/html", &page(&evil_title(), true)),
            "/stall.wav" | "/slow.wav" => {
                let _ = write!(
                    s,
                    "HTTP/1.1 200 OK\r\nContent-Type: audio/wav\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
                    song.len()
                );
                if head_only {
                    return;
                }
                let stall = path == "/stall.wav";
                let t0 = Instant::now();
                for chunk in song.chunks(8192) {
                    if stop.load(Ordering::Relaxed)
                        || t0.elapsed() > Duration::from_secs(60)
                        || s.write_all(chunk).is_err()
                    {
                        return;
                    }
                    std::thread::sleep(Duration::from_millis(if stall { 100_000 } else { 250 }));
                }
            }
            _ => send(&mut s, "404 Not Found", "text/plain", b"not found"),
        }
    }

    impl Server {
        fn start() -> Server {
            let song = std::fs::read(crate::common::falcon_mixture()).expect("read mixture.wav");
            let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
            let port = listener.local_addr().expect("addr").port();
            listener.set_nonblocking(true).expect("nonblocking");
            let stop = Arc::new(AtomicBool::new(false));
            let st = stop.clone();
            std::thread::spawn(move || {
                let song = Arc::new(song);
                let t0 = Instant::now();
                let mut served = 0;
                while !st.load(Ordering::Relaxed) && t0.elapsed() < Duration::from_secs(600) && served < 1000 {
                    match listener.accept() {
                        Ok((s, _)) => {
                            served += 1;
                            let _ = s.set_nonblocking(false);
                            let (song, st) = (song.clone(), st.clone());
                            std::thread::spawn(move || respond(s, &song, &st));
                        }
                        Err(_) => std::thread::sleep(Duration::from_millis(10)),
                    }
                }
            });
            Server { port, stop }
        }

        fn url(&self, path: &str) -> String {
            format!("http://127.0.0.1:{}{path}", self.port)
        }
    }

    impl Drop for Server {
        fn drop(&mut self) {
            self.stop.store(true, Ordering::Relaxed);
        }
    }

    fn ytdlp() -> YtDlp {
        YtDlp::locate(None).expect("yt-dlp (scripts/setup.sh installs it)")
    }

    fn fetch(url: &str, dir: &Path, stall: Duration, cancel_after: Option<Duration>) -> Result<PathBuf, LinkError> {
        let t0 = Instant::now();
        let mut progress = Vec::new();
        let r = link::download(&ytdlp(), url, dir, stall, &mut |p| progress.push(p.clone()), &|| {
            cancel_after.is_some_and(|c| t0.elapsed() >= c)
        });
        if r.is_ok() {
            assert!(progress.iter().any(|p| p.percent == Some(100.0)), "progress reached 100 %: {progress:?}");
        }
        r
    }

    fn empty(dir: &Path) -> bool {
        std::fs::read_dir(dir).map(|mut d| d.next().is_none()).unwrap_or(true)
    }

    /// Processes whose command line mentions `needle` (Linux /proc).
    fn processes_with(needle: &str) -> usize {
        std::fs::read_dir("/proc")
            .map(|d| {
                d.flatten()
                    .filter(|e| {
                        std::fs::read(e.path().join("cmdline"))
                            .map(|c| String::from_utf8_lossy(&c).contains(needle))
                            .unwrap_or(false)
                    })
                    .count()
            })
            .unwrap_or(0)
    }

    #[test]
    fn the_pinned_ytdlp_is_found() {
        let y = ytdlp();
        assert_eq!(y.version, link::PINNED_VERSION, "{}", y.path.display());
        let missing = YtDlp::locate(Some(Path::new("/nonexistent/yt-dlp")));
        assert!(matches!(missing, Err(LinkError::Missing(_))), "{missing:?}");
    }

    #[test]
    fn direct_audio_and_audio_pages_download_and_separate() {
        let _turn = super::cpu_turn();
        let server = Server::start();
        let y = ytdlp();
        // Metadata first: the page's title before any download.
        let info = link::probe(&y, &server.url("/page.html"), 10).expect("probe page");
        // The generic extractor numbers the media it finds on a page.
        assert!(info.title.starts_with("Falcon 69 (live page)"), "{}", info.title);
        assert!(!info.is_playlist);
        let direct = link::probe(&y, &server.url("/song.wav"), 10).expect("probe direct");
        assert_eq!(direct.title, "song");

        let sep = crate::common::open_separator();
        for (path, what) in [("/song.wav", "direct audio"), ("/page.html", "a page with <audio>")] {
            let dir = tempfile::tempdir().expect("tempdir");
            let file = fetch(&server.url(path), &dir.path().join("dl"), Duration::from_secs(30), None)
                .unwrap_or_else(|e| panic!("{what}: {e}"));
            let original = std::fs::read(crate::common::falcon_mixture()).expect("read");
            assert_eq!(std::fs::read(&file).expect("read"), original, "{what}: the bytes served");
            let out = dir.path().join("out");
            crate::common::separate_into(&sep, &file, &out);
            for stem in ["drums", "bass", "other", "vocals"] {
                let p = out.join(format!("audio/{stem}.wav"));
                assert!(p.is_file(), "{what}: {} missing", p.display());
            }
        }
    }

    #[test]
    fn failures_are_specific_and_leave_nothing() {
        let server = Server::start();
        let y = ytdlp();
        let dir = tempfile::tempdir().expect("tempdir");
        let dl = dir.path().join("dl");

        let e = fetch(&server.url("/missing.wav"), &dl, Duration::from_secs(30), None).expect_err("404");
        assert!(matches!(e, LinkError::Unavailable(_)), "404: {e:?}");
        assert!(empty(&dl));
        let e = link::probe(&y, &server.url("/missing.wav"), 10).expect_err("404 probe");
        assert!(matches!(e, LinkError::Unavailable(_)), "404 probe: {e:?}");

        let e = fetch(&server.url("/nomedia.html"), &dl, Duration::from_secs(30), None).expect_err("no media");
        assert!(matches!(e, LinkError::UnsupportedSite(_) | LinkError::NoMedia(_)), "no media: {e:?}");
        assert_eq!(e.code(), stemroom_core::ErrorCode::Download);
        assert!(empty(&dl));

        // Nobody listens on port 9 (discard) on loopback here.
        let e = fetch("http://127.0.0.1:9/song.wav", &dl, Duration::from_secs(30), None).expect_err("refused");
        assert!(matches!(e, LinkError::Network(_)), "refused: {e:?}");

        let e = fetch("-o/tmp/x", &dl, Duration::from_secs(30), None).expect_err("option-like");
        assert!(matches!(e, LinkError::NotAUrl(_)), "{e:?}");
        let e = link::probe(&y, "--exec=touch /tmp/pwned", 10).expect_err("option-like");
        assert!(matches!(e, LinkError::NotAUrl(_)), "{e:?}");
    }

    #[test]
    fn a_stalled_download_times_out_and_a_cancel_stops_the_process_tree() {
        let server = Server::start();
        let dir = tempfile::tempdir().expect("tempdir");
        let dl = dir.path().join("dl");
        let t0 = Instant::now();
        let e = fetch(&server.url("/stall.wav"), &dl, Duration::from_secs(3), None).expect_err("stall");
        assert!(matches!(e, LinkError::Stalled(3)), "{e:?}");
        assert!(t0.elapsed() < Duration::from_secs(20), "gave up in {:?}", t0.elapsed());
        assert!(empty(&dl), "nothing left after a stall");
        assert_eq!(processes_with("/stall.wav"), 0, "yt-dlp is gone after a stall");

        let t0 = Instant::now();
        let e = fetch(&server.url("/slow.wav"), &dl, Duration::from_secs(30), Some(Duration::from_secs(2)))
            .expect_err("cancel");
        assert!(matches!(e, LinkError::Cancelled), "{e:?}");
        assert!(t0.elapsed() < Duration::from_secs(5), "cancel took {:?}", t0.elapsed());
        assert!(empty(&dl), "nothing left after a cancel");
        assert_eq!(processes_with("/slow.wav"), 0, "yt-dlp is gone after a cancel");
    }

    #[test]
    fn links_are_queued_with_their_title_then_downloaded_and_separated() {
        let _turn = super::cpu_turn();
        use stemroom_core::intake;
        use stemroom_core::queue::JobState;
        let server = Server::start();
        let lq = crate::common::LibraryQueue::new();
        let q = &lq.queue;
        // Metadata first: the title is there before anything is downloaded.
        let r = intake::add_paths(q, &[PathBuf::from(server.url("/page.html")), PathBuf::from("-rf")]).expect("add");
        assert_eq!(r.added.len(), 1, "{r:?}");
        let job = &r.added[0];
        assert!(job.title.starts_with("Falcon 69 (live page)"), "{}", job.title);
        assert_eq!(job.state, JobState::Queued);
        assert_eq!(r.rejected.len(), 1, "'-rf' is not a file: {r:?}");
        // A dead link is refused at once with the reason.
        let r = intake::add_paths(q, &[PathBuf::from(server.url("/missing.wav"))]).expect("add");
        assert!(r.added.is_empty() && r.rejected[0].reason.contains("unavailable"), "{r:?}");

        let worker = lq.worker(Arc::new(super::queue::Recorder::default()));
        worker.start(1);
        let t0 = Instant::now();
        let mut saw_download = false;
        let done = loop {
            let j = q.get(job.id).expect("get");
            saw_download |= matches!(j.state, JobState::Downloading { .. });
            if j.state.is_finished() || t0.elapsed() > Duration::from_secs(300) {
                break j;
            }
            std::thread::sleep(Duration::from_millis(20));
        };
        assert_eq!(done.state, JobState::Done, "{:?}", done.state);
        assert!(saw_download, "the job went through the downloading state");
        let out = PathBuf::from(done.output_dir.expect("output dir"));
        assert_eq!(out.file_name().and_then(|n| n.to_str()), Some(job.title.as_str()));
        let mut names: Vec<String> = std::fs::read_dir(&out)
            .expect("ls")
            .flatten()
            .map(|e| e.file_name().to_string_lossy().into_owned())
            .collect();
        names.sort();
        assert_eq!(
            names,
            ["bass.wav", "drums.wav", "other.wav", "stemroom.json", "vocals.wav"],
            "no download left behind"
        );
    }

    #[test]
    fn hostile_titles_become_safe_names() {
        let server = Server::start();
        let info = link::probe(&ytdlp(), &server.url("/evil.html"), 10).expect("probe");
        assert!(info.title.contains("../"), "{}", info.title);
        let name = stemroom_core::library::visible_name(&info.title, "Untitled");
        assert!(!name.contains('/') && !name.contains('\\') && !name.contains(':'), "{name}");
        assert!(!name.starts_with('.'), "{name}");
        assert!(name.len() <= 255, "{} bytes", name.len());
        let dir = tempfile::tempdir().expect("tempdir");
        std::fs::write(dir.path().join(&name), b"x").expect("a valid file name");
        assert_eq!(std::fs::read_dir(dir.path()).expect("dir").count(), 1);
    }
}

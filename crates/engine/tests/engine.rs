//! Integration tests of the engine, in one binary:
//! - decoders: every supported container/codec on small fixtures that ffmpeg
//!   makes at test time from a known signal (setup.sh installs ffmpeg).
//! - encoders: WAV/FLAC written by us decode back bit-exact.
//! - cancellation: a listener that cancels after one segment leaves no output.
//! - seeking: `StreamDecoder::seek` lands on the exact frame.
//!
//! Tests that keep both cores busy and the real-time one take turns
//! (`stemroom_testkit::cpu_turn`).

use std::path::Path;
use std::process::Command;

use stemroom_engine::audio::encode::{self, ClipMode, OutputFormat, WavDepth};
use stemroom_engine::progress::{Event, Listener};
use stemroom_testkit::{cpu_turn, decode_all, ffmpeg, reference_wav, rms};

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
    // Each side (BS.775): (front + 0.7071 back) / (1 + 0.7071 + 0.7071);
    // LFE dropped.
    let c = std::f32::consts::FRAC_1_SQRT_2;
    let g = (1.0 + c) / (1.0 + 2.0 * c);
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
    let mix = stemroom_testkit::falcon_mixture();
    let dir = tempfile::tempdir().expect("tempdir");
    let long = dir.path().join("long.wav");
    ffmpeg(&["-stream_loop", "2", "-i", mix.to_str().expect("utf8"), long.to_str().expect("utf8")]);
    let sep = stemroom_testkit::open_separator();
    let out = dir.path().join("out");
    let req = stemroom_engine::job::JobRequest {
        input: long,
        out_dir: out.clone(),
        filename: stemroom_engine::job::DEFAULT_FILENAME.into(),
        format: OutputFormat::Flac { bits: 16 },
        clip: ClipMode::Rescale,
        two_stems: None,
        other_method: Default::default(),
        output_rate: Default::default(),
        separate: stemroom_engine::separate::SeparateOptions { shifts: 0, ..Default::default() },
        scratch_dir: Some(dir.path().to_path_buf()),
        checkpoint: None,
    };
    let listener = CancelAfterFirstSegment(Default::default());
    let err = stemroom_engine::job::separate_file(&sep, &req, &listener).expect_err("cancelled");
    assert_eq!(err.code(), stemroom_engine::ErrorCode::Cancelled);
    assert!(!out.exists(), "output folder removed again");
    let left: Vec<_> = std::fs::read_dir(dir.path()).expect("ls").flatten().map(|e| e.file_name()).collect();
    assert_eq!(left.len(), 1, "only the input remains (no scratch spool): {left:?}");
}

// ---------------------------------------------------------------------------
// seeking: the next block after a seek starts exactly at the requested frame.

#[test]
fn seeking_lands_on_the_exact_frame() {
    use stemroom_engine::audio::decode::StreamDecoder;
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
// codecs: every input format people have, made from real music by ffmpeg
// (with ffmpeg on the machine, as setup.sh installs it): the right sample
// rate and length (within one codec frame), lossless ones bit-exact, and
// each one separated by the real model. Without ffmpeg: see the CLI tests.

mod codecs {
    use stemroom_engine::audio::decode::StreamDecoder;
    use stemroom_testkit::{codec_matrix, decode_all};

    #[test]
    fn every_format_decodes_at_its_rate_and_length_and_lossless_ones_bit_exact() {
        let dir = tempfile::tempdir().expect("tempdir");
        let cases = codec_matrix(dir.path());
        for c in &cases {
            let (x, rate, _) = decode_all(&c.path);
            let frames = x.len() as u64 / 2;
            eprintln!("{}: {rate} Hz, {frames} frames (mixture: {})", c.name, c.expected_frames);
            assert_eq!(rate, c.sample_rate, "{}: sample rate", c.name);
            assert!(
                frames.abs_diff(c.expected_frames) <= c.codec_frame,
                "{}: {frames} frames, expected {} ± {}",
                c.name,
                c.expected_frames,
                c.codec_frame
            );
            assert!(x.iter().all(|v| v.is_finite()) && x.iter().any(|v| v.abs() > 0.1), "{}: real audio", c.name);
            if let Some(reference) = &c.lossless_of {
                let (want, want_rate, _) = decode_all(reference);
                assert_eq!(want_rate, rate, "{}", c.name);
                assert!(x == want, "{}: lossless decode differs from its source", c.name);
            }
            let d = StreamDecoder::open(&c.path).expect("open");
            assert!(format!("{d:?}").contains(if c.needs_ffmpeg { "ffmpeg" } else { "native" }), "{}: {d:?}", c.name);
        }
    }

    /// The gapless formats decode to the source's exact length, as ffmpeg
    /// decodes them: 3 s of tone is 3 s of frames, no encoder delay or
    /// padding kept and nothing of the end lost (an Opus file lost its last
    /// 312 frames, its pre-skip, while the MP3 reader's trimming was
    /// undone for every reader).
    #[test]
    fn gapless_formats_decode_to_the_exact_length() {
        let dir = tempfile::tempdir().expect("tempdir");
        let p = |n: &str| dir.path().join(n).to_str().expect("utf-8").to_string();
        for (name, rate, codec) in [
            ("a.opus", 48_000u32, ["-c:a", "libopus"]),
            ("a.ogg", 44_100, ["-c:a", "libvorbis"]),
            ("a.mp3", 44_100, ["-c:a", "libmp3lame"]),
            ("a.m4a", 44_100, ["-c:a", "aac"]),
            ("a.flac", 44_100, ["-c:a", "flac"]),
        ] {
            let src = format!("sine=f=440:d=3:sample_rate={rate}");
            let mut args = vec!["-f", "lavfi", "-i", &src, "-ac", "2"];
            args.extend(codec);
            let out = p(name);
            args.push(&out);
            stemroom_testkit::ffmpeg(&args);
            let (x, got_rate, _) = decode_all(std::path::Path::new(&out));
            assert_eq!(got_rate, rate, "{name}");
            assert_eq!(x.len() / 2, 3 * rate as usize, "{name}: frames");
        }
    }

    /// AAC in M4A: the encoder's priming (1,024 frames from ffmpeg's) and
    /// end padding are cut as the file's edit list says, so the song (and
    /// every stem) starts where ffmpeg, browsers and DAWs start it: a click
    /// at 0.5 s is at frame 22,050, not 1,024 later, and the length is the
    /// source's. symphonia alone kept both.
    #[test]
    fn aac_in_m4a_starts_and_ends_where_its_edit_list_says() {
        let dir = tempfile::tempdir().expect("tempdir");
        let p = |n: &str| dir.path().join(n).to_str().expect("utf-8").to_string();
        // Silence with one click at 0.5 s, 3 s long.
        let click = "aevalsrc='if(eq(n\\,22050)\\,0.9\\,0)':s=44100:d=3";
        stemroom_testkit::ffmpeg(&[
            "-f",
            "lavfi",
            "-i",
            click,
            "-ac",
            "2",
            "-c:a",
            "aac",
            "-b:a",
            "256k",
            &p("click.m4a"),
        ]);
        let mut d = StreamDecoder::open(std::path::Path::new(&p("click.m4a"))).expect("open");
        assert!(format!("{d:?}").contains("native"), "{d:?}");
        assert_eq!(d.declared_frames(), Some(132_300), "the edit's length");
        let mut left = Vec::new();
        while let Some((block, _)) = d.next_block().expect("decode") {
            left.extend(block.chunks_exact(2).map(|f| f[0]));
        }
        assert_eq!(left.len(), 132_300, "3 s, no priming or padding");
        let peak = (0..left.len()).max_by(|&a, &b| left[a].abs().total_cmp(&left[b].abs())).unwrap();
        assert!(peak.abs_diff(22_050) <= 2, "the click at frame {peak}, not 22050");
        // A seek lands on the same frames as reading from the start: the
        // click 50 frames after a seek to 22,000.
        d.seek(22_000).expect("seek");
        let mut after: Vec<f32> = Vec::new();
        while after.len() < 2000 {
            let (block, _) = d.next_block().expect("decode").expect("a block");
            after.extend(block.chunks_exact(2).map(|f| f[0]));
        }
        let peak = (0..after.len()).max_by(|&a, &b| after[a].abs().total_cmp(&after[b].abs())).unwrap();
        assert_eq!(peak, 50, "the click after a seek to 22000");
        // The decoder restarts a little before the target (its state is
        // rebuilt from those frames, not bit for bit): close, not equal.
        let worst = after.iter().zip(&left[22_000..]).map(|(a, b)| (a - b).abs()).fold(0.0f32, f32::max);
        assert!(worst < 0.01, "after the seek, {worst} from reading through");
    }

    /// A click at 1.5 s is where ffmpeg decodes it, read through and after
    /// a seek, in every lossy format with an encoder delay: Opus in WebM
    /// (YouTube's audio, what yt-dlp fetches by default) and in Ogg
    /// (312 frames of pre-skip), Vorbis, MP3 (LAME's delay) and FLAC. The
    /// player seeks the original mixture for A/B against stems read from
    /// the start: the two must agree.
    #[test]
    fn a_click_is_at_one_frame_read_through_or_after_a_seek() {
        let dir = tempfile::tempdir().expect("tempdir");
        let p = |n: &str| dir.path().join(n).to_str().expect("utf-8").to_string();
        let mut wrong = Vec::new();
        for (name, rate, codec) in [
            ("click.webm", 48_000u64, "libopus"),
            ("click.opus", 48_000, "libopus"),
            // (Opus in MP4: Chrome's MediaRecorder, `ffmpeg -c:a libopus
            // x.mp4`.)
            ("click.mp4", 48_000, "libopus"),
            ("click.ogg", 44_100, "libvorbis"),
            ("click.mp3", 44_100, "libmp3lame"),
            ("click.flac", 44_100, "flac"),
        ] {
            // (At 1.5 s: seeks within the first second read from the start.)
            let at = rate * 3 / 2;
            let click = format!("aevalsrc='if(eq(n\\,{at})\\,0.9\\,0)':s={rate}:d=3");
            stemroom_testkit::ffmpeg(&["-f", "lavfi", "-i", &click, "-ac", "2", "-c:a", codec, &p(name)]);
            let path = p(name);
            let path = std::path::Path::new(&path);
            let mut d = StreamDecoder::open(path).expect("open");
            assert!(format!("{d:?}").contains("native"), "{d:?}");
            let mut left = Vec::new();
            while let Some((block, _)) = d.next_block().expect("decode") {
                left.extend(block.chunks_exact(2).map(|f| f[0]));
            }
            let peak = (0..left.len()).max_by(|&a, &b| left[a].abs().total_cmp(&left[b].abs())).unwrap() as u64;
            if peak.abs_diff(at) > 2 {
                wrong.push(format!("{name}: read through, the click at {peak}, not {at}"));
            }
            // WebM's block times are whole milliseconds (48 frames): a seek
            // by time is exact to about a millisecond there.
            let tolerance = if name.ends_with(".webm") { 96 } else { 2 };
            for before in [50, 3000, at - 10] {
                // (A fresh stream: symphonia's Matroska reader cannot seek
                // back from its end, which the player handles by reading
                // again.)
                let mut d = StreamDecoder::open(path).expect("open");
                let target = at - before;
                d.seek(target).expect("seek");
                let mut after: Vec<f32> = Vec::new();
                while after.len() < before as usize + 2000 {
                    let (block, _) = d.next_block().expect("decode").expect("a block");
                    after.extend(block.chunks_exact(2).map(|f| f[0]));
                }
                let sought = target
                    + (0..after.len()).max_by(|&a, &b| after[a].abs().total_cmp(&after[b].abs())).unwrap() as u64;
                if sought.abs_diff(peak) > tolerance {
                    wrong.push(format!("{name}: after a seek to {target}, the click at {sought}, not {peak}"));
                }
            }
        }
        assert!(wrong.is_empty(), "{wrong:#?}");
    }

    #[test]
    fn the_installed_ffmpeg_is_reported_by_its_full_path() {
        let status = stemroom_engine::audio::decode::ffmpeg_status();
        assert!(status.found, "{status:?}");
        let path = status.path.expect("path");
        assert!(std::path::Path::new(&path).is_absolute(), "{path}");
        assert!(status.version.is_some_and(|v| !v.is_empty()));
    }

    #[test]
    fn every_format_separates() {
        let _turn = stemroom_testkit::cpu_turn();
        let dir = tempfile::tempdir().expect("tempdir");
        let sep = stemroom_testkit::open_separator();
        for c in codec_matrix(dir.path()) {
            let out = dir.path().join("out").join(c.name.replace(' ', "_"));
            let done = stemroom_testkit::separate_into(&sep, &c.path, &out);
            assert_eq!(done.stems.len(), 4, "{}", c.name);
            for (stem, path) in &done.stems {
                let (x, rate, _) = decode_all(path);
                let frames = x.len() as u64 / 2;
                assert_eq!(rate, c.sample_rate, "{} {stem}: written at the input's rate", c.name);
                // Plus the rounding of the conversions to 44.1 kHz and back.
                let tolerance = c.codec_frame + 4;
                assert!(
                    frames.abs_diff(c.expected_frames) <= tolerance,
                    "{} {stem}: {frames} frames, expected {} ± {tolerance}",
                    c.name,
                    c.expected_frames,
                );
            }
        }
    }
}

// ---------------------------------------------------------------------------
// corrupt input at scale: real files of every built-in format, truncated at
// many offsets and with random bytes changed (seeded), each decoded to the
// end under a time limit: a clean error or a clean result, never a panic or
// a hang.

mod corrupt {
    use std::path::{Path, PathBuf};
    use std::sync::mpsc;
    use std::time::Duration;

    use rand::{RngExt, SeedableRng};
    use rand_chacha::ChaCha8Rng;
    use stemroom_engine::audio::decode;
    use stemroom_engine::progress::Silent;
    use stemroom_testkit::ffmpeg;

    /// Longest a damaged file may take to decode or be refused (a 2 s clip
    /// decodes in milliseconds; ffmpeg's probe of an unknown file in well
    /// under a second).
    const CASE_LIMIT: Duration = Duration::from_secs(20);

    /// Decode `path` to the end on a thread; the outcome, or a failure
    /// message for a panic or a hang.
    fn decode_with_limit(path: &Path) -> Result<Result<u64, String>, String> {
        let (tx, rx) = mpsc::channel();
        let p = path.to_path_buf();
        std::thread::spawn(move || {
            let r = std::panic::catch_unwind(|| {
                let mut frames = 0u64;
                decode::decode(&p, &Silent, |b, _| {
                    assert!(b.iter().all(|v| v.is_finite()), "non-finite samples");
                    frames += b.len() as u64 / 2;
                    Ok(())
                })
                .map(|_| frames)
                .map_err(|e| e.to_string())
            });
            let _ = tx.send(r);
        });
        match rx.recv_timeout(CASE_LIMIT) {
            Ok(Ok(outcome)) => Ok(outcome),
            Ok(Err(_)) => Err(format!("{}: the decoder panicked", path.display())),
            Err(_) => Err(format!("{}: no answer within {CASE_LIMIT:?}", path.display())),
        }
    }

    /// A WAV whose data size says 0 though the audio follows (a recorder
    /// that stopped before finishing its header): decoded whole by ffmpeg
    /// instead of refused as empty.
    #[test]
    fn a_wav_whose_header_says_no_data_is_read_whole() {
        let dir = tempfile::tempdir().expect("tempdir");
        let mix = stemroom_testkit::falcon_mixture();
        let wav = dir.path().join("clip.wav");
        ffmpeg(&["-t", "3", "-i", mix.to_str().expect("utf-8"), "-c:a", "pcm_s16le", wav.to_str().expect("utf-8")]);
        let (whole, _, _) = stemroom_testkit::decode_all(&wav);
        let mut bytes = std::fs::read(&wav).expect("read");
        let at = bytes.windows(4).position(|w| w == b"data").expect("a data chunk");
        bytes[at + 4..at + 8].copy_from_slice(&0u32.to_le_bytes());
        std::fs::write(&wav, &bytes).expect("write");
        let mut frames = 0u64;
        decode::decode(&wav, &Silent, |b, _| {
            frames += b.len() as u64 / 2;
            Ok(())
        })
        .expect("decoded");
        assert!((frames as f64 / 44_100.0 - 3.0).abs() < 0.01, "{frames} frames");
        // Its length is unknown, not 0 s, and a seek that cannot be made
        // says so (the player then reads from the start to the frame, able
        // to give up): it used to end the stream at once, without an error.
        let probed = decode::probe(&wav).expect("probe");
        assert_eq!(probed.duration_seconds, None);
        let mut d = decode::StreamDecoder::open(&wav).expect("open");
        let e = d.seek(2 * 44_100).expect_err("no index to seek by");
        assert!(matches!(e, decode::DecodeError::Corrupt { .. }), "{e}");
        let mut d = decode::StreamDecoder::open(&wav).expect("open");
        let (block, _) = d.next_block().expect("block").expect("audio");
        assert!(!block.is_empty() && block[..] == whole[..block.len()], "read from the start");
    }

    /// Chained Ogg files (Opus or Vorbis files one after the other, as `cat`
    /// or a stream recorder makes them) decode whole; only the first link
    /// used to come out, without a word. A link at another rate is refused.
    #[test]
    fn chained_ogg_files_decode_every_link() {
        let dir = tempfile::tempdir().expect("tempdir");
        let mix = stemroom_testkit::falcon_mixture();
        let m = mix.to_str().expect("utf-8");
        let p = |n: &str| dir.path().join(n);
        let s = |n: &str| p(n).to_str().expect("utf-8").to_string();
        let chain = |name: &str, links: &[(&str, &str, &str)]| {
            let mut bytes = Vec::new();
            for (i, (seconds, codec, rate)) in links.iter().enumerate() {
                let link = s(&format!("{name}-{i}.ogg"));
                ffmpeg(&["-ss", &format!("{}", 2 * i), "-t", seconds, "-i", m, "-c:a", codec, "-ar", rate, &link]);
                bytes.extend(std::fs::read(&link).expect("read"));
            }
            std::fs::write(p(name), bytes).expect("write");
            p(name)
        };
        let frames = |path: &std::path::Path| -> Result<(u64, u32), String> {
            let mut frames = 0u64;
            let mut rate = 0;
            decode::decode(path, &Silent, |b, r| {
                frames += b.len() as u64 / 2;
                rate = r;
                Ok(())
            })
            .map_err(|e| e.to_string())?;
            Ok((frames, rate))
        };
        let opus = chain("chained.opus", &[("1", "libopus", "48000"), ("2", "libopus", "48000")]);
        let (n, rate) = frames(&opus).expect("both links");
        assert_eq!(rate, 48_000);
        let seconds = n as f64 / 48_000.0;
        assert!((seconds - 3.0).abs() < 0.05, "3 s of Opus in two links, got {seconds:.3} s");
        let vorbis = chain("chained.ogg", &[("1", "libvorbis", "44100"), ("1", "libvorbis", "44100")]);
        let (n, _) = frames(&vorbis).expect("both links");
        assert!((n as f64 / 44_100.0 - 2.0).abs() < 0.05, "2 s of Vorbis in two links, got {n} frames");
        // A link at another rate: ffmpeg reads on at the first link's rate
        // (without ffmpeg: the CLI test of ffmpeg-only formats).
        let mixed = chain("mixed.ogg", &[("1", "libvorbis", "44100"), ("1", "libvorbis", "22050")]);
        let (n, rate) = frames(&mixed).expect("both links, the second by ffmpeg");
        assert_eq!(rate, 44_100);
        assert!((n as f64 / 44_100.0 - 2.0).abs() < 0.05, "2 s in two links, got {n} frames");
    }

    /// A playlist or ffmpeg concat script named like audio is refused, not
    /// followed to the files it lists (ffmpeg would decode those: on the
    /// HTTP service, another song on the server's disk).
    #[test]
    fn playlists_are_not_followed() {
        let dir = tempfile::tempdir().expect("tempdir");
        let mix = stemroom_testkit::falcon_mixture();
        // Entries ffmpeg 5.1 follows: an MP3 by absolute path in HLS, a
        // name beside the script in concat (its "safe" mode allows those).
        let other = dir.path().join("other.mp3");
        ffmpeg(&["-t", "3", "-i", mix.to_str().expect("utf-8"), other.to_str().expect("utf-8")]);
        let hls = format!("#EXTM3U\n#EXT-X-TARGETDURATION:60\n#EXTINF:60,\n{}\n#EXT-X-ENDLIST\n", other.display());
        // And behind an ID3 tag, which ffmpeg skips before guessing.
        let tagged = format!("ID3\x04\0\0\0\0\0\x02ab{hls}");
        let lists = [
            ("list.mp3", hls),
            ("list.wav", "ffconcat version 1.0\nfile 'other.mp3'\n".to_string()),
            ("tagged.mp3", tagged),
        ];
        for (name, text) in lists {
            let path = dir.path().join(name);
            std::fs::write(&path, text).expect("write");
            let e = decode::decode(&path, &Silent, |_, _| Ok(())).expect_err("refused");
            assert!(e.to_string().contains("not a recognised audio file"), "{name}: {e}");
        }
    }

    /// An Ogg stream cut out of a longer one keeps its timing: its first
    /// page's granule position is where the cut began (`ffmpeg -ss 60 -i
    /// long.ogg -c copy`, a radio stream's recording), and its last page's
    /// is that plus its length. Such a file was refused as truncated
    /// ("decoded 6.00 s of the 36.00 s its header declares"), and a seek in
    /// a Vorbis or FLAC one failed or landed early by the start. It reads
    /// and seeks as the same packets timed from 0 do.
    #[test]
    fn an_ogg_stream_that_starts_late_reads_whole_and_seeks_to_the_frame() {
        use stemroom_engine::audio::decode::StreamDecoder;
        let dir = tempfile::tempdir().expect("tempdir");
        let mix = stemroom_testkit::falcon_mixture();
        for (name, codec) in [("v.ogg", "libvorbis"), ("o.opus", "libopus"), ("f.oga", "flac")] {
            let plain = dir.path().join(name);
            let late = dir.path().join(format!("late-{name}"));
            let arg = |p: &Path| p.to_str().expect("utf-8").to_string();
            ffmpeg(&["-t", "6", "-i", &arg(&mix), "-c:a", codec, &arg(&plain)]);
            ffmpeg(&["-i", &arg(&plain), "-c", "copy", "-output_ts_offset", "30", &arg(&late)]);
            let (want, rate, _) = stemroom_testkit::decode_all(&plain);
            let (got, late_rate, _) = stemroom_testkit::decode_all(&late);
            assert_eq!((late_rate, got.len()), (rate, want.len()), "{name}");
            assert!(got == want, "{name}: the same audio");
            // A seek lands where it does in the stream timed from 0, on
            // the frame (Opus' decoder state after a seek is close to a
            // read-through's, 25 dB here, not the same).
            let at = 2 * rate as usize;
            let seek_read = |p: &Path| {
                let mut d = StreamDecoder::open(p).expect("open");
                d.seek(at as u64).unwrap_or_else(|e| panic!("{name}: {e}"));
                let mut read = Vec::new();
                while read.len() < 2000 {
                    match d.next_block().expect("block") {
                        Some((b, _)) => read.extend_from_slice(b),
                        None => break,
                    }
                }
                read.truncate(2000);
                read
            };
            let read = seek_read(&late);
            assert!(read == seek_read(&plain), "{name}: the seek lands where it does timed from 0");
            let want = &want[at * 2..at * 2 + 2000];
            let err: f64 = read.iter().zip(want).map(|(a, b)| f64::from(a - b).powi(2)).sum();
            let sig: f64 = want.iter().map(|a| f64::from(*a).powi(2)).sum();
            let snr = 10.0 * (sig / err.max(1e-20)).log10();
            assert!(snr > 20.0, "{name}: the seek lands on the frame ({snr:.1} dB)");
        }
    }

    /// An Ogg page's CRC (RFC 3533: polynomial 0x04c11db7, unreflected,
    /// computed with the page's CRC field zeroed).
    fn ogg_crc(page: &[u8]) -> u32 {
        let mut c = 0u32;
        for &b in page {
            c ^= u32::from(b) << 24;
            for _ in 0..8 {
                c = if c & 0x8000_0000 != 0 { (c << 1) ^ 0x04c1_1db7 } else { c << 1 };
            }
        }
        c
    }

    /// A damaged page in an Ogg file fails its checksum and symphonia's
    /// reader skips it: its audio was lost without a word (Vorbis: the rest
    /// of the song came a second early) or the file was refused as
    /// truncated (Opus, whose header declares the length). The packets'
    /// timestamps show the jump, one page late (symphonia times the page
    /// after a lost one from the page before it): silence of its length
    /// goes in there, with a warning, and from there on the song is in time.
    #[test]
    fn a_lost_ogg_page_becomes_silence_of_its_length() {
        let dir = tempfile::tempdir().expect("tempdir");
        let p = |n: &str| dir.path().join(n).to_str().expect("utf-8").to_string();
        for (name, rate, codec) in [("t.opus", 48_000u32, "libopus"), ("t.ogg", 44_100, "libvorbis")] {
            let src = format!("sine=f=440:d=12:sample_rate={rate}");
            stemroom_testkit::ffmpeg(&["-f", "lavfi", "-i", &src, "-ac", "2", "-c:a", codec, &p(name)]);
            let (clean, _, _) = stemroom_testkit::decode_all(Path::new(&p(name)));
            let mut bytes = std::fs::read(p(name)).expect("read");
            let mid = bytes.len() / 2;
            for b in &mut bytes[mid..mid + 50] {
                *b ^= 0x5a;
            }
            let damaged = dir.path().join(format!("damaged-{name}"));
            std::fs::write(&damaged, &bytes).expect("write");
            let mut d = decode::StreamDecoder::open(&damaged).expect("open");
            let mut x = Vec::new();
            while let Some((block, _)) = d.next_block().unwrap_or_else(|e| panic!("{name}: {e}")) {
                x.extend_from_slice(block);
            }
            assert_eq!(x.len(), clean.len(), "{name}: as long as the clean file");
            let warnings = d.take_warnings();
            assert!(warnings.iter().any(|w| w.contains("gap(s) in the file's timeline")), "{name}: {warnings:?}");
            // Silence somewhere in the middle, the tone in time after it.
            let left: Vec<f32> = x.iter().step_by(2).copied().collect();
            let quiet = left.split(|v| v.abs() > 1e-4).map(<[f32]>::len).max().unwrap_or(0);
            assert!(quiet > rate as usize / 10, "{name}: no silence where the page was ({quiet} frames)");
            let tail = clean.len() - 2 * rate as usize;
            let worst = x[tail..].iter().zip(&clean[tail..]).map(|(a, b)| (a - b).abs()).fold(0.0f32, f32::max);
            assert!(worst < 1e-3, "{name}: the last 2 s differ from the clean file's by {worst}");
        }
    }

    /// Two Opus packets in a row the decoder refuses (a TOC of code 3 with
    /// no frames, RFC 6716 §3.2.5) in the middle of a file, their page's
    /// checksum made good: the decoder is made afresh after the second,
    /// and must not trim the stream's pre-skip (312 frames) again from the
    /// packet after them: the rest of the song stays in time.
    #[test]
    fn a_fresh_opus_decoder_mid_stream_keeps_the_song_in_time() {
        let dir = tempfile::tempdir().expect("tempdir");
        let src = dir.path().join("t.opus");
        let src_s = src.to_str().expect("utf-8");
        ffmpeg(&["-f", "lavfi", "-i", "sine=f=440:d=8:sample_rate=48000", "-ac", "2", "-c:a", "libopus", src_s]);
        let (clean, _, _) = stemroom_testkit::decode_all(&src);
        let mut bytes = std::fs::read(&src).expect("read");
        // The first page past the file's middle that starts with a whole
        // packet and holds three or more.
        let (mut at, mut broken) = (0usize, false);
        while at + 27 <= bytes.len() && &bytes[at..at + 4] == b"OggS" {
            let segments = bytes[at + 26] as usize;
            let table: Vec<usize> = bytes[at + 27..at + 27 + segments].iter().map(|&b| usize::from(b)).collect();
            let len = 27 + segments + table.iter().sum::<usize>();
            let continued = bytes[at + 5] & 1 != 0;
            // Packet lengths: lacing values up to one below 255.
            let mut packets = Vec::new();
            let mut run = 0;
            for &l in &table {
                run += l;
                if l < 255 {
                    packets.push(run);
                    run = 0;
                }
            }
            if at > bytes.len() / 2 && !continued && packets.len() >= 3 && packets[..2].iter().all(|&n| n >= 2) {
                let data = at + 27 + segments;
                for start in [data, data + packets[0]] {
                    bytes[start] = 0x03; // config 0, mono flag off, code 3
                    bytes[start + 1] = 0x00; // no frames: invalid
                }
                bytes[at + 22..at + 26].fill(0);
                let c = ogg_crc(&bytes[at..at + len]);
                bytes[at + 22..at + 26].copy_from_slice(&c.to_le_bytes());
                broken = true;
                break;
            }
            at += len;
        }
        assert!(broken, "a page to break");
        let damaged = dir.path().join("damaged.opus");
        std::fs::write(&damaged, &bytes).expect("write");
        let mut d = decode::StreamDecoder::open(&damaged).expect("open");
        let mut x = Vec::new();
        while let Some((block, _)) = d.next_block().expect("decodes") {
            x.extend_from_slice(block);
        }
        let warnings = d.take_warnings();
        // (Told as silence in their place, or as a gap the next page's
        // time shows, as the packets' lengths are known or not.)
        assert!(warnings.iter().any(|w| w.contains("replaced by") || w.contains("gap(s)")), "{warnings:?}");
        assert_eq!(x.len(), clean.len(), "as long as the clean file");
        let tail = clean.len() - 2 * 48_000 * 2;
        let worst = x[tail..].iter().zip(&clean[tail..]).map(|(a, b)| (a - b).abs()).fold(0.0f32, f32::max);
        assert!(worst < 1e-3, "the last 2 s differ from the clean file's by {worst}");
    }

    /// A seek before anything was decoded (the player opens a stem and
    /// seeks at once) lands where a whole decode has that frame: the
    /// decoder's pending pre-skip must not cut the first packet after it.
    #[test]
    fn an_opus_seek_before_the_first_decode_lands_in_time() {
        let dir = tempfile::tempdir().expect("tempdir");
        // (Ogg's granule positions are in samples. WebM's block times are
        // whole milliseconds, and symphonia takes 6.5 ms of codec delay as
        // 6: a seek there lands up to 1.5 ms early, 72 frames; a whole
        // decode counts its frames and is exact.)
        for name in ["t.opus"] {
            let src = dir.path().join(name);
            ffmpeg(&[
                "-f",
                "lavfi",
                "-i",
                "sine=f=440:d=4:sample_rate=48000",
                "-ac",
                "2",
                "-c:a",
                "libopus",
                src.to_str().expect("utf-8"),
            ]);
            let (clean, _, _) = stemroom_testkit::decode_all(&src);
            for target in [0u64, 1000, 48_000, 100_003] {
                let mut d = decode::StreamDecoder::open(&src).expect("open");
                d.seek(target).expect("seek");
                let mut x = Vec::new();
                while x.len() < 4096 {
                    let Some((block, _)) = d.next_block().expect("decodes") else { break };
                    x.extend_from_slice(block);
                }
                let at = target as usize * 2;
                let n = x.len().min(4096).min(clean.len() - at);
                let worst = x[..n].iter().zip(&clean[at..at + n]).map(|(a, b)| (a - b).abs()).fold(0.0f32, f32::max);
                // (Opus converges over its pre-roll after a seek: a few
                // thousandths; the pre-skip cut again would put the 440 Hz
                // tone of amplitude 0.125 312 frames early, 0.1 apart.)
                assert!(worst < 0.01, "{name}: after a first seek to {target} the audio differs by {worst}");
            }
        }
    }

    /// An Ogg file whose page times jump by 59 s each (a crafted file of a
    /// few hundred KB) is not filled with hours of silence: gaps are filled
    /// up to a minute or the audio decoded in all, and the rest ends as a
    /// truncated file.
    #[test]
    fn jumping_ogg_page_times_do_not_decode_to_hours_of_silence() {
        let dir = tempfile::tempdir().expect("tempdir");
        let src = dir.path().join("t.opus");
        let src_s = src.to_str().expect("utf-8");
        stemroom_testkit::ffmpeg(&[
            "-f",
            "lavfi",
            "-i",
            "sine=f=440:d=30:sample_rate=48000",
            "-ac",
            "2",
            "-c:a",
            "libopus",
            "-page_duration",
            "500000",
            src_s,
        ]);
        let mut bytes = std::fs::read(&src).expect("read");
        // Ogg pages (RFC 3533): "OggS", granule position at 6..14, CRC at
        // 22..26 (`ogg_crc`), then the segment table.
        let (mut at, mut audio_page) = (0usize, 0u64);
        while at + 27 <= bytes.len() && &bytes[at..at + 4] == b"OggS" {
            let segments = bytes[at + 26] as usize;
            let body: usize = bytes[at + 27..at + 27 + segments].iter().map(|&b| b as usize).sum();
            let len = 27 + segments + body;
            let granule = u64::from_le_bytes(bytes[at + 6..at + 14].try_into().expect("8 bytes"));
            if granule != 0 && granule != u64::MAX {
                audio_page += 1;
                let moved = granule + audio_page * 59 * 48_000;
                bytes[at + 6..at + 14].copy_from_slice(&moved.to_le_bytes());
                bytes[at + 22..at + 26].fill(0);
                let c = ogg_crc(&bytes[at..at + len]);
                bytes[at + 22..at + 26].copy_from_slice(&c.to_le_bytes());
            }
            at += len;
        }
        assert!(audio_page > 20, "{audio_page} audio pages");
        let bomb = dir.path().join("jumps.opus");
        std::fs::write(&bomb, &bytes).expect("write");
        let mut d = decode::StreamDecoder::open(&bomb).expect("open");
        let mut frames = 0usize;
        let ended = loop {
            match d.next_block() {
                Ok(Some((block, _))) => frames += block.len() / 2,
                Ok(None) => break Ok(()),
                Err(e) => break Err(e),
            }
        };
        let seconds = frames as f64 / 48_000.0;
        // Before: 30 s of tone and 59 s of silence per page, about 40 minutes.
        assert!(seconds < 120.0, "{seconds:.0} s decoded ({ended:?})");
        let e = ended.expect_err("refused as truncated");
        assert!(e.to_string().contains("truncated"), "{e}");
    }

    /// MP3 files at one sample rate joined end to end: the first one's
    /// LAME Info frame counts only its own frames, and symphonia trims
    /// every packet past that count, so the second file was dropped without
    /// a word (the stems held the first song only). Likewise a file without
    /// such a frame, whose length symphonia guesses from its first frames'
    /// bit rate (320 kb/s, then 128 kb/s: the guess is far too short). Both
    /// now decode to their end, as ffmpeg decodes them; the first says so.
    #[test]
    fn joined_files_at_one_rate_decode_past_the_first_header() {
        let dir = tempfile::tempdir().expect("tempdir");
        let p = |n: &str| dir.path().join(n).to_str().expect("utf-8").to_string();
        for (xing, (ka, kb)) in [("1", ("192k", "192k")), ("0", ("320k", "128k"))] {
            let tone = |f: u32, k: &str, out: &str| {
                let src = format!("sine=f={f}:d=3");
                ffmpeg(
                    &["-f", "lavfi", "-i", &src, "-ac", "2", "-ar", "44100", "-c:a", "libmp3lame", "-b:a", k]
                        .into_iter()
                        .chain(["-write_xing", xing, out])
                        .collect::<Vec<_>>(),
                );
            };
            tone(440, ka, &p("a.mp3"));
            tone(660, kb, &p("b.mp3"));
            let mut joined = std::fs::read(p("a.mp3")).expect("read");
            joined.extend(std::fs::read(p("b.mp3")).expect("read"));
            let path = dir.path().join("joined.mp3");
            std::fs::write(&path, joined).expect("write");
            let mut d = decode::StreamDecoder::open(&path).expect("open");
            let mut left = Vec::new();
            while let Some((block, rate)) = d.next_block().expect("decode") {
                assert_eq!(rate, 44_100);
                left.extend(block.chunks_exact(2).map(|f| f[0]));
            }
            let seconds = left.len() as f64 / 44_100.0;
            assert!((seconds - 6.0).abs() < 0.1, "xing {xing}: 6 s, got {seconds:.3} s");
            let pitch = |from: f64, to: f64| {
                let w = &left[(from * 44_100.0) as usize..(to * 44_100.0) as usize];
                w.windows(2).filter(|p| (p[0] < 0.0) != (p[1] < 0.0)).count() as f64 / 2.0 / (to - from)
            };
            let (first, second) = (pitch(0.5, 2.5), pitch(3.5, 5.5));
            assert!((first - 440.0).abs() < 5.0, "xing {xing}: first part {first:.1} Hz");
            assert!((second - 660.0).abs() < 5.0, "xing {xing}: second part {second:.1} Hz");
            let warned = d.take_warnings().iter().any(|w| w.contains("past the length its header declares"));
            assert_eq!(warned, xing == "1", "xing {xing}: a header that lies is named");
            // A seek past the header's length (the first file's count, or
            // the guess of 4.2 s) lands in the second file, as the whole
            // decode has it; it used to end the stream there. Past the real
            // end, it ends.
            let mut d = decode::StreamDecoder::open(&path).expect("open");
            for target in [132_300usize, 198_450] {
                d.seek(target as u64).expect("seek");
                let mut got = Vec::new();
                while got.len() < 22_050 {
                    match d.next_block().expect("decode") {
                        Some((block, _)) => got.extend(block.chunks_exact(2).map(|f| f[0])),
                        None => break,
                    }
                }
                got.truncate(22_050);
                let want = &left[target..target + 22_050];
                let energy: f64 = want.iter().map(|x| f64::from(*x).powi(2)).sum();
                let err: f64 = got.iter().zip(want).map(|(a, b)| f64::from(a - b).powi(2)).sum();
                assert_eq!(got.len(), 22_050, "xing {xing}: 0.5 s after {target}");
                assert!(err < energy * 1e-4, "xing {xing}: at {target}, error {err:.3e} of {energy:.3e}");
            }
            d.seek(7 * 44_100).expect("seek past the end");
            assert!(d.next_block().expect("end").is_none(), "xing {xing}: nothing past the end");
        }
        // One file alone keeps its exact length: its end padding (wholly
        // past the Info frame's count, for some lengths) is still dropped.
        for secs in ["1", "2.5", "3.0261"] {
            let src = format!("sine=f=440:d={secs}");
            ffmpeg(&["-f", "lavfi", "-i", &src, "-ac", "2", "-ar", "44100", "-c:a", "libmp3lame", &p("one.mp3")]);
            let mut frames = 0usize;
            decode::decode(Path::new(&p("one.mp3")), &Silent, |b, _| {
                frames += b.len() / 2;
                Ok(())
            })
            .expect("decode");
            let want = (secs.parse::<f64>().unwrap() * 44_100.0).round() as usize;
            assert_eq!(frames, want, "{secs} s alone");
        }
    }

    /// MP3 files at two sample rates joined end to end (`cat a.mp3 b.mp3`,
    /// as people join recordings): the built-in decoder reads the first
    /// part, ffmpeg the rest, at the first part's rate, with no gap and no
    /// repeat. Its frames were refused one by one, then the file as
    /// corrupt ("mpa: invalid audio buffer signal spec for packet").
    #[test]
    fn joined_files_at_two_rates_decode_whole() {
        let dir = tempfile::tempdir().expect("tempdir");
        let p = |n: &str| dir.path().join(n).to_str().expect("utf-8").to_string();
        // A 440 Hz tone for 3 s at 44.1 kHz, then 660 Hz for 3 s at 48 kHz.
        ffmpeg(&["-f", "lavfi", "-i", "sine=f=440:d=3", "-ac", "2", "-ar", "44100", "-c:a", "libmp3lame", &p("a.mp3")]);
        ffmpeg(&["-f", "lavfi", "-i", "sine=f=660:d=3", "-ac", "2", "-ar", "48000", "-c:a", "libmp3lame", &p("b.mp3")]);
        let mut joined = std::fs::read(p("a.mp3")).expect("read");
        joined.extend(std::fs::read(p("b.mp3")).expect("read"));
        let path = dir.path().join("joined.mp3");
        std::fs::write(&path, joined).expect("write");
        let mut samples = Vec::new();
        let mut rates = std::collections::BTreeSet::new();
        decode::decode(&path, &Silent, |b, r| {
            samples.extend_from_slice(b);
            rates.insert(r);
            Ok(())
        })
        .expect("decoded whole");
        assert_eq!(rates.into_iter().collect::<Vec<_>>(), vec![44_100]);
        let left: Vec<f32> = samples.chunks_exact(2).map(|f| f[0]).collect();
        // As long as ffmpeg's own decode of the whole file, to a frame of
        // MP3 (1,152 samples): nothing lost, nothing twice.
        let whole = std::process::Command::new("ffmpeg")
            .args(["-v", "error", "-i", &p("joined.mp3"), "-ac", "2", "-ar", "44100", "-f", "f32le", "-"])
            .output()
            .expect("ffmpeg");
        let ffmpeg_frames = whole.stdout.len() / 8;
        assert!(
            left.len().abs_diff(ffmpeg_frames) < 1152,
            "{} frames; ffmpeg alone decodes {ffmpeg_frames}",
            left.len()
        );
        let seconds = left.len() as f64 / 44_100.0;
        assert!((seconds - 6.0).abs() < 0.1, "6 s, got {seconds:.3} s");
        // Each part's tone where it belongs: count zero crossings per second.
        let pitch = |from: f64, to: f64| {
            let (a, b) = ((from * 44_100.0) as usize, (to * 44_100.0) as usize);
            let w = &left[a..b.min(left.len())];
            let crossings = w.windows(2).filter(|p| (p[0] < 0.0) != (p[1] < 0.0)).count();
            crossings as f64 / 2.0 / (w.len() as f64 / 44_100.0)
        };
        let (first, second) = (pitch(0.5, 2.5), pitch(3.5, 5.5));
        assert!((first - 440.0).abs() < 5.0, "first part {first:.1} Hz");
        assert!((second - 660.0).abs() < 5.0, "second part {second:.1} Hz");
        // No gap beyond the second file's own start (its LAME header frame
        // and encoder delay, 30 ms here): no silence of 100 ms at the join.
        let join = &left[(2.5 * 44_100.0) as usize..(3.5 * 44_100.0) as usize];
        let longest_quiet = join.split(|v| v.abs() > 1e-3).map(<[f32]>::len).max().unwrap_or(0);
        assert!(longest_quiet < 4_410, "a gap of {longest_quiet} frames at the join");

        // Seeking once ffmpeg has taken over lands on the right part (this
        // stream has no index to seek in: ffmpeg decodes from the start).
        let mut d = decode::StreamDecoder::open(&path).expect("open");
        while d.next_block().expect("decode").is_some() {}
        for (at, want) in [(4.0, 660.0), (1.0, 440.0), (5.0, 660.0)] {
            d.seek((at * 44_100.0) as u64).expect("seek");
            let mut got = Vec::new();
            while got.len() < 44_100 {
                let (block, _) = d.next_block().expect("decode").expect("audio after the seek");
                got.extend(block.chunks_exact(2).map(|f| f[0]));
            }
            let crossings = got[..44_100].windows(2).filter(|p| (p[0] < 0.0) != (p[1] < 0.0)).count();
            let hz = crossings as f64 / 2.0;
            assert!((hz - want).abs() < 5.0, "after a seek to {at} s: {hz:.1} Hz, not {want}");
        }
    }

    /// A length guessed from the bit rate (raw ADTS AAC; an MP3 without a
    /// Xing/Info frame, VBR or not) is no reason to call a whole file
    /// truncated (a 3-minute ADTS file was refused at 0.13 % short of the
    /// guess, a VBR MP3 at 5 %); an MP3 that counts its frames and is cut
    /// short still is.
    #[test]
    fn lengths_guessed_from_the_bit_rate_are_not_truncation() {
        let dir = tempfile::tempdir().expect("tempdir");
        let mix = stemroom_testkit::falcon_mixture();
        let long = dir.path().join("long.wav");
        let l = long.to_str().expect("utf-8");
        ffmpeg(&["-stream_loop", "30", "-i", mix.to_str().expect("utf-8"), "-t", "180", "-c:a", "pcm_s16le", l]);
        let want = 180 * 44_100u64;
        let cases: [(&str, &[&str], bool); 4] = [
            ("adts.aac", &["-c:a", "aac", "-b:a", "128k", "-f", "adts"], true),
            ("vbr-no-xing.mp3", &["-c:a", "libmp3lame", "-q:a", "2", "-write_xing", "0"], true),
            ("cbr-no-xing.mp3", &["-c:a", "libmp3lame", "-b:a", "192k", "-write_xing", "0"], true),
            ("vbr.mp3", &["-c:a", "libmp3lame", "-q:a", "2"], false),
        ];
        for (name, args, estimated) in cases {
            let path = dir.path().join(name);
            let mut full = vec!["-i", l];
            full.extend(args);
            full.push(path.to_str().expect("utf-8"));
            ffmpeg(&full);
            let d = decode::StreamDecoder::open(&path).expect("open");
            assert_eq!(d.length_estimated(), estimated, "{name}: {d:?}");
            let frames = decode_with_limit(&path).expect("decodes").unwrap_or_else(|e| panic!("{name}: {e}"));
            // Within the codecs' priming and last frame.
            assert!(frames.abs_diff(want) <= 4096, "{name}: {frames} frames, not {want}");
        }
        // Cut in half: a file that counts its frames is truncated. A guess
        // from the bit rate is made from the cut file's own size, so it
        // cannot tell: decoded as far as it goes (with a warning where the
        // demuxer says the last packet broke off; symphonia's MP3 reader
        // drops a partial last frame without saying).
        let cut = |name: &str| {
            let whole = std::fs::read(dir.path().join(name)).expect("read");
            let half = dir.path().join(format!("half-{name}"));
            std::fs::write(&half, &whole[..whole.len() / 2 + 7]).expect("write");
            half
        };
        let e = decode_with_limit(&cut("vbr.mp3")).expect("answers").expect_err("truncated");
        assert!(e.contains("truncated") && e.contains("its header declares"), "{e}");
        for (name, warned) in [("adts.aac", true), ("vbr-no-xing.mp3", false)] {
            let mut d = decode::StreamDecoder::open(&cut(name)).expect("open");
            let mut frames = 0u64;
            while let Some((block, _)) = d.next_block().unwrap_or_else(|e| panic!("{name}: {e}")) {
                frames += block.len() as u64 / 2;
            }
            assert!(frames.abs_diff(want / 2) < 44_100, "{name}: {frames} frames");
            let warnings = d.take_warnings();
            assert_eq!(warnings.iter().any(|w| w.contains("may be truncated")), warned, "{name}: {warnings:?}");
        }
    }

    /// Packets the decoder cannot read in the middle of a file become
    /// silence of their length, so the stems after them stay in time with
    /// the original, and the user is told. (AAC's decoder reads past a
    /// damaged packet's end: that ended the whole stream, and the file was
    /// refused as truncated.) An ADTS stream may also lose a frame or two
    /// where its demuxer looks for the next header; MP3's decoder takes
    /// such bytes as sound, so its length is kept anyway.
    #[test]
    fn damaged_packets_keep_the_stems_in_time() {
        let dir = tempfile::tempdir().expect("tempdir");
        let mix = stemroom_testkit::falcon_mixture();
        for (name, args, slack) in
            [("clip.m4a", ["-c:a", "aac", "-b:a", "128k"], 0), ("clip.aac", ["-c:a", "aac", "-b:a", "128k"], 2048)]
        {
            let clean = dir.path().join(name);
            let mut full = vec!["-i", mix.to_str().expect("utf-8")];
            full.extend(args);
            full.push(clean.to_str().expect("utf-8"));
            ffmpeg(&full);
            let good = decode_with_limit(&clean).expect("decodes").expect("clean");
            let mut bytes = std::fs::read(&clean).expect("read");
            let mut rng = ChaCha8Rng::seed_from_u64(5);
            let n = bytes.len();
            for at in [n / 4, n / 2, 3 * n / 4] {
                for b in &mut bytes[at..at + 120] {
                    *b = rng.random();
                }
            }
            let damaged = dir.path().join(format!("damaged-{name}"));
            std::fs::write(&damaged, &bytes).expect("write");
            let mut d = decode::StreamDecoder::open(&damaged).expect("open");
            let mut frames = 0u64;
            while let Some((block, _)) = d.next_block().unwrap_or_else(|e| panic!("{name}: {e}")) {
                frames += block.len() as u64 / 2;
            }
            let warnings = d.take_warnings();
            eprintln!("{name}: {frames} frames, the clean file {good}; {warnings:?}");
            assert!(frames.abs_diff(good) <= slack, "{name}: {frames} frames, the clean file {good}");
            assert!(warnings.iter().any(|w| w.contains("replaced by")), "{name}: {warnings:?}");
            if slack > 0 {
                continue;
            }
            // A seek lands in time whatever packet it starts in, a damaged
            // one included: from any target, what is left is as long as
            // the whole decode's rest (a skipped packet ran a packet early).
            for target in (0..frames).step_by(2003) {
                let mut d = decode::StreamDecoder::open(&damaged).expect("open");
                d.seek(target).expect("seek");
                let mut rest = 0u64;
                while let Some((block, _)) = d.next_block().unwrap_or_else(|e| panic!("{name} at {target}: {e}")) {
                    rest += block.len() as u64 / 2;
                }
                assert_eq!(rest, frames - target, "{name}: after a seek to {target}");
            }
        }
    }

    #[test]
    fn damaged_files_give_a_clean_error_or_a_clean_result() {
        let dir = tempfile::tempdir().expect("tempdir");
        let mix = stemroom_testkit::falcon_mixture();
        let m = mix.to_str().expect("utf-8");
        let sources: Vec<(&str, Vec<&str>)> = vec![
            ("wav", vec!["-c:a", "pcm_s16le"]),
            ("flac", vec!["-c:a", "flac"]),
            ("mp3", vec!["-c:a", "libmp3lame", "-b:a", "128k"]),
            ("ogg", vec!["-c:a", "libvorbis"]),
            ("opus", vec!["-c:a", "libopus"]),
            ("m4a", vec!["-c:a", "aac"]),
            ("webm", vec!["-c:a", "libopus"]),
        ];
        let mut rng = ChaCha8Rng::seed_from_u64(20261127);
        let mut cases = 0;
        let mut errors = 0;
        for (ext, args) in &sources {
            let clean = dir.path().join(format!("clean.{ext}"));
            let mut full = vec!["-t", "2", "-i", m];
            full.extend(args);
            full.push(clean.to_str().expect("utf-8"));
            ffmpeg(&full);
            let bytes = std::fs::read(&clean).expect("read");
            let mut variants: Vec<(String, Vec<u8>)> = Vec::new();
            // Truncations: inside the header, then through the file.
            for cut in [1, 4, 12, 44, 100, 300, 1000] {
                variants.push((format!("cut{cut}"), bytes[..cut.min(bytes.len())].to_vec()));
            }
            for i in 1..12 {
                let cut = bytes.len() * i / 12 + rng.random_range(0..64);
                variants.push((format!("cut{cut}"), bytes[..cut.min(bytes.len())].to_vec()));
            }
            // Random byte changes: a few, then many, anywhere (headers too).
            for round in 0..24 {
                let mut b = bytes.clone();
                let flips = if round < 12 { 1 + round } else { 50 * (round - 11) };
                for _ in 0..flips {
                    let at = if round % 3 == 0 {
                        rng.random_range(0..b.len().min(256))
                    } else {
                        rng.random_range(0..b.len())
                    };
                    b[at] = rng.random();
                }
                variants.push((format!("flip{round}"), b));
            }
            for (name, data) in variants {
                let path: PathBuf = dir.path().join(format!("{name}.{ext}"));
                std::fs::write(&path, &data).expect("write");
                match decode_with_limit(&path) {
                    Ok(Ok(_)) => {}
                    Ok(Err(message)) => {
                        assert!(!message.is_empty(), "{}: an empty error", path.display());
                        errors += 1;
                    }
                    Err(failure) => panic!("{failure}"),
                }
                cases += 1;
                std::fs::remove_file(&path).expect("rm");
            }
        }
        eprintln!("{cases} damaged files: {errors} refused with an error, the rest decoded");
        assert!(cases >= 250 && errors > 50, "{cases} cases, {errors} errors");
    }

    /// A file cut short inside its header (a WAV, a FLAC) or before an
    /// MP4's index, written last, is said to be damaged (bad input, with
    /// why), never "not audio" or "install ffmpeg".
    #[test]
    fn files_cut_short_before_their_audio_are_said_to_be_cut_short() {
        use stemroom_engine::audio::decode::StreamDecoder;
        let dir = tempfile::tempdir().expect("tempdir");
        let m = stemroom_testkit::falcon_mixture();
        let m = m.to_str().expect("utf-8");
        for (ext, codec, cut_at, says) in [
            ("wav", "pcm_s16le", 30, "ends inside its WAV header"),
            ("flac", "flac", 20, "ends inside its FLAC header"),
            // ffmpeg writes the index last (no +faststart): half the file has none.
            ("m4a", "aac", 0, "moov"),
        ] {
            let clean = dir.path().join(format!("clean.{ext}"));
            ffmpeg(&["-t", "2", "-i", m, "-c:a", codec, clean.to_str().expect("utf-8")]);
            let bytes = std::fs::read(&clean).expect("read");
            let cut = dir.path().join(format!("cut.{ext}"));
            let at = if cut_at == 0 { bytes.len() / 2 } else { cut_at };
            std::fs::write(&cut, &bytes[..at]).expect("write");
            let e = StreamDecoder::open(&cut).and_then(|mut d| d.next_block().map(|_| ())).expect_err(ext);
            let text = e.to_string();
            assert!(text.contains(says) && text.contains("cut short"), "{ext}: {text}");
            assert_eq!(stemroom_engine::Error::from(e).code(), stemroom_engine::ErrorCode::BadInput, "{ext}");
        }
    }
}

// ---------------------------------------------------------------------------
// analysis: tempo and key of the real test music (the true Falcon 69 stems),
// the same at another sample rate.

mod analysis {
    use std::path::PathBuf;

    use stemroom_engine::analysis::analyse_stems;

    fn stem(name: &str) -> PathBuf {
        let p = stemroom_engine::paths::cache_dir().expect("cache").join("testdata").join(format!("{name}.wav"));
        assert!(p.is_file(), "{} missing: run scripts/setup.sh", p.display());
        p
    }

    #[test]
    fn falcon_69_has_a_tempo_and_a_key_at_any_sample_rate() {
        let others = [stem("bass"), stem("other"), stem("vocals")];
        let refs: Vec<&std::path::Path> = others.iter().map(PathBuf::as_path).collect();
        let a = analyse_stems(Some(&stem("drums")), &refs).expect("analysis");
        eprintln!("Falcon 69 (true stems): {a:?}");
        let bpm = a.bpm.expect("a tempo");
        assert!((60.0..=200.0).contains(&bpm), "{bpm}");
        let key = a.key.clone().expect("a key");
        // The same music at 48 kHz (ffmpeg's resampler) reads the same.
        let dir = tempfile::tempdir().expect("tempdir");
        let mut at48 = Vec::new();
        for (name, p) in [("drums", stem("drums"))].into_iter().chain(["bass", "other", "vocals"].map(|n| (n, stem(n))))
        {
            let out = dir.path().join(format!("{name}.wav"));
            let st = std::process::Command::new("ffmpeg")
                .args(["-v", "error", "-i"])
                .arg(&p)
                .args(["-ar", "48000"])
                .arg(&out)
                .status()
                .expect("ffmpeg");
            assert!(st.success());
            at48.push(out);
        }
        let refs: Vec<&std::path::Path> = at48[1..].iter().map(PathBuf::as_path).collect();
        let b = analyse_stems(Some(&at48[0]), &refs).expect("analysis at 48 kHz");
        eprintln!("Falcon 69 at 48 kHz: {b:?}");
        assert!((b.bpm.expect("a tempo") - bpm).abs() <= 1.0, "{b:?} vs {a:?}");
        assert_eq!(b.key.map(|k| k.name), Some(key.name));
    }
}

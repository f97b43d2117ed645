//! One song in, stems out: decode, resample to the model rate, separate,
//! resample back, encode, and publish every output atomically.
//!
//! The decoded mixture is spooled to a scratch file (interleaved `f32` at the
//! model rate) and read back by window, and stems stream into their encoders
//! as the separator finishes them, so memory stays flat however long the song.
//! Outputs are written under temporary names next to their final place and
//! renamed only when every stem is complete; a failed or cancelled run
//! removes them.

use std::fs::File;
use std::io::{BufWriter, Write};
use std::os::unix::fs::FileExt;
use std::path::{Component, Path, PathBuf};
use std::sync::Mutex;
use std::time::Instant;

use serde::{Deserialize, Serialize};

use crate::audio::decode::{self, DecodeError};
use crate::audio::encode::{self, ClipMode, OutputFormat, StemWriter};
use crate::audio::resample::StreamResampler;
use crate::model::{self, Manifest, ModelInfo};
use crate::progress::{Event, Listener};
use crate::runtime::{OrtNetwork, Provider, RuntimeError, RuntimeOptions};
use crate::separate::{self, BlockSink, MixSource, MixStatsAccumulator, Network, SeparateOptions};
use crate::Error;

/// How the complement of the chosen stem is made in two-stem mode
/// (`demucs --other-method`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum OtherMethod {
    /// Sum of the other sources' estimates (default).
    #[default]
    Add,
    /// The mixture minus the chosen stem.
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
    /// Directory for the scratch spool; `None` = the system temp directory.
    pub scratch_dir: Option<PathBuf>,
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
    /// Network segments run.
    pub segments: usize,
    /// Seconds inside the network.
    pub network_seconds: f64,
    /// Provider that ran the network.
    pub provider: Provider,
}

/// A loaded model ready to separate; share it between jobs (the network runs
/// one segment at a time, decoding and encoding of other jobs overlap it).
pub struct Separator {
    info: ModelInfo,
    net: Mutex<OrtNetwork>,
    provider: Provider,
    model_path: PathBuf,
}

impl std::fmt::Debug for Separator {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Separator").field("model", &self.info.id).field("provider", &self.provider).finish()
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
        Ok(Separator { info, net: Mutex::new(net), provider, model_path: installed.path })
    }

    /// The model's description.
    pub fn info(&self) -> &ModelInfo {
        &self.info
    }
    /// Which provider runs the network.
    pub fn provider(&self) -> Provider {
        self.provider
    }
    /// Where the model file is.
    pub fn model_path(&self) -> &Path {
        &self.model_path
    }
}

struct SharedNet<'a>(&'a Mutex<OrtNetwork>);

impl Network for SharedNet<'_> {
    fn forward(&mut self, mix: &[f32], spec: &[f32], take: &mut dyn FnMut(&[f32], &[f32])) -> Result<(), RuntimeError> {
        let mut net = self.0.lock().map_err(|_| RuntimeError::Inference("network lock poisoned".into()))?;
        net.forward(mix, spec, take)
    }
}

/// Make a name safe as one path component on every OS: no separators,
/// control or reserved characters, not `.`/`..`, at most 120 bytes.
pub fn safe_component(name: &str) -> String {
    let mut s: String =
        name.chars().map(|c| if c.is_control() || "/\\:*?\"<>|".contains(c) { '_' } else { c }).collect();
    s = s.trim().trim_end_matches('.').to_string();
    while s.len() > 120 {
        s.pop();
    }
    if s.is_empty() || s == "." || s == ".." {
        s = "track".into();
    }
    s
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
            let mut v = vec![stem.to_string()];
            if other != OtherMethod::None {
                v.push(format!("no_{stem}"));
            }
            Ok(v)
        }
    }
}

/// Expand the filename template for one stem.
///
/// # Errors
/// [`Error::InvalidOptions`] for an absolute template or one that climbs out
/// of the output directory.
pub fn render_filename(template: &str, input: &Path, stem: &str, ext: &str) -> Result<PathBuf, Error> {
    let track = safe_component(&input.file_stem().map(|s| s.to_string_lossy().into_owned()).unwrap_or_default());
    let trackext = safe_component(&input.extension().map(|s| s.to_string_lossy().into_owned()).unwrap_or_default());
    let rendered = template
        .replace("{track}", &track)
        .replace("{trackext}", &trackext)
        .replace("{stem}", stem)
        .replace("{ext}", ext);
    let p = PathBuf::from(&rendered);
    if rendered.is_empty() || p.components().any(|c| !matches!(c, Component::Normal(_))) {
        return Err(Error::InvalidOptions(format!(
            "--filename '{template}' must be a relative path inside the output folder"
        )));
    }
    Ok(p)
}

/// The mixture spooled to disk: interleaved `f32` frames at the model rate.
struct SpoolMix {
    file: File,
    frames: usize,
    bytes: Vec<u8>,
    window: Vec<f32>,
}

impl SpoolMix {
    fn read_interleaved(&mut self, start: usize, len: usize, out: &mut Vec<f32>) -> std::io::Result<()> {
        self.bytes.resize(len * 8, 0);
        self.file.read_exact_at(&mut self.bytes, start as u64 * 8)?;
        out.clear();
        out.extend(self.bytes.chunks_exact(4).map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]])));
        Ok(())
    }
}

impl MixSource for SpoolMix {
    fn frames(&self) -> usize {
        self.frames
    }
    fn read(&mut self, start: usize, len: usize, out: &mut [f32], off: usize, out_len: usize) -> std::io::Result<()> {
        let mut window = std::mem::take(&mut self.window);
        self.read_interleaved(start, len, &mut window)?;
        for (j, fr) in window.chunks_exact(2).enumerate() {
            out[off + j] = fr[0];
            out[out_len + off + j] = fr[1];
        }
        self.window = window;
        Ok(())
    }
}

/// An output file under construction: its temporary and final names.
struct Pending {
    stem: String,
    tmp: PathBuf,
    dest: PathBuf,
    writer: Option<Box<dyn StemWriter>>,
    resampler: StreamResampler,
}

/// Removes temporary outputs unless disarmed.
struct Cleanup(Vec<PathBuf>);
impl Drop for Cleanup {
    fn drop(&mut self) {
        for p in &self.0 {
            let _ = std::fs::remove_file(p);
            let mut spool = p.as_os_str().to_owned();
            spool.push(".spool");
            let _ = std::fs::remove_file(PathBuf::from(spool));
        }
    }
}

/// Removes (empty) directories this run created, deepest first, unless disarmed.
struct CreatedDirs(Vec<PathBuf>);
impl Drop for CreatedDirs {
    fn drop(&mut self) {
        for d in &self.0 {
            let _ = std::fs::remove_dir(d);
        }
    }
}

struct StemSink<'a> {
    outputs: &'a mut [Pending],
    sources: usize,
    chosen: Option<usize>,
    other: OtherMethod,
    mix: Option<SpoolMix>,
    mix_buf: Vec<f32>,
    block: Vec<f32>,
    resampled: Vec<f32>,
}

impl StemSink<'_> {
    fn push(p: &mut Pending, block: &[f32], resampled: &mut Vec<f32>) -> Result<(), Error> {
        resampled.clear();
        p.resampler.push(block, resampled).map_err(Error::Resample)?;
        if let Some(w) = p.writer.as_mut() {
            w.write(resampled)?;
        }
        Ok(())
    }
}

impl BlockSink for StemSink<'_> {
    fn write(&mut self, start: usize, frames: usize, stems: &[f32]) -> Result<(), Error> {
        let ch = 2;
        let plane = |s: usize, c: usize| &stems[(s * ch + c) * frames..][..frames];
        let mut o = 0;
        match self.chosen {
            None => {
                for s in 0..self.sources {
                    self.block.clear();
                    for j in 0..frames {
                        self.block.extend([plane(s, 0)[j], plane(s, 1)[j]]);
                    }
                    Self::push(&mut self.outputs[s], &self.block, &mut self.resampled)?;
                }
            }
            Some(k) => {
                self.block.clear();
                for j in 0..frames {
                    self.block.extend([plane(k, 0)[j], plane(k, 1)[j]]);
                }
                Self::push(&mut self.outputs[o], &self.block, &mut self.resampled)?;
                o += 1;
                if self.other != OtherMethod::None {
                    let mut rest = vec![0.0f32; frames * 2];
                    match self.other {
                        OtherMethod::Add => {
                            for s in (0..self.sources).filter(|&s| s != k) {
                                for j in 0..frames {
                                    rest[2 * j] += plane(s, 0)[j];
                                    rest[2 * j + 1] += plane(s, 1)[j];
                                }
                            }
                        }
                        _ => {
                            let mix = self.mix.as_mut().ok_or_else(|| Error::InvalidOptions("no mixture".into()))?;
                            mix.read_interleaved(start, frames, &mut self.mix_buf).map_err(Error::Scratch)?;
                            for (r, (m, b)) in rest.iter_mut().zip(self.mix_buf.iter().zip(&self.block)) {
                                *r = m - b;
                            }
                        }
                    }
                    Self::push(&mut self.outputs[o], &rest, &mut self.resampled)?;
                }
            }
        }
        Ok(())
    }
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
    let stem_names = output_stems(info, req.two_stems.as_deref(), req.other_method)?;
    decode::check_input(&req.input)?;

    // Where each stem goes; fail early if the folder cannot be written.
    let mut dests = Vec::new();
    for stem in &stem_names {
        let rel = render_filename(&req.filename, &req.input, stem, req.format.extension())?;
        dests.push((stem.clone(), req.out_dir.join(rel)));
    }
    // Directories this run creates are removed again if it fails.
    let mut created_dirs = CreatedDirs(Vec::new());
    for (_, d) in &dests {
        if let Some(parent) = d.parent() {
            let mut missing: Vec<PathBuf> =
                parent.ancestors().take_while(|a| !a.exists()).map(Path::to_path_buf).collect();
            std::fs::create_dir_all(parent).map_err(|source| Error::Output { path: parent.to_path_buf(), source })?;
            created_dirs.0.append(&mut missing);
        }
    }
    listener.event(&Event::Started { input: req.input.clone(), model: info.id.clone(), provider: sep.provider });

    // Decode + resample to the model rate into the scratch spool.
    let scratch_dir = req.scratch_dir.clone().unwrap_or_else(std::env::temp_dir);
    let spool = tempfile::Builder::new()
        .prefix("stemroom-mix-")
        .suffix(".f32")
        .tempfile_in(&scratch_dir)
        .map_err(Error::Scratch)?;
    let mut stats = MixStatsAccumulator::default();
    let mut resampler: Option<StreamResampler> = None;
    let mut writer = BufWriter::with_capacity(1 << 20, spool.as_file().try_clone().map_err(Error::Scratch)?);
    let mut frames_at_model = 0usize;
    let mut buf = Vec::new();
    let write_model_frames =
        |buf: &[f32], stats: &mut MixStatsAccumulator, w: &mut BufWriter<File>| -> Result<usize, Error> {
            let mut bytes = Vec::with_capacity(buf.len() * 4);
            for fr in buf.chunks_exact(2) {
                stats.push((fr[0] as f64 + fr[1] as f64) / 2.0);
                bytes.extend_from_slice(&fr[0].to_le_bytes());
                bytes.extend_from_slice(&fr[1].to_le_bytes());
            }
            w.write_all(&bytes).map_err(Error::Scratch)?;
            Ok(buf.len() / 2)
        };
    let decoded = decode::decode(&req.input, listener, |block, rate| {
        if resampler.is_none() {
            resampler = Some(StreamResampler::new(rate, info.sample_rate, 2).map_err(Error::Resample)?);
        }
        let Some(r) = resampler.as_mut() else { return Ok(()) };
        buf.clear();
        r.push(block, &mut buf).map_err(Error::Resample)?;
        frames_at_model += write_model_frames(&buf, &mut stats, &mut writer)?;
        Ok(())
    })?;
    if let Some(r) = resampler.as_mut() {
        buf.clear();
        r.finish(&mut buf).map_err(Error::Resample)?;
        frames_at_model += write_model_frames(&buf, &mut stats, &mut writer)?;
    }
    writer.flush().map_err(Error::Scratch)?;
    drop(writer);
    if frames_at_model == 0 {
        return Err(DecodeError::NoSamples(req.input.clone()).into());
    }
    let audio_seconds = decoded.frames as f64 / decoded.sample_rate as f64;
    listener.event(&Event::Decoded {
        duration_seconds: audio_seconds,
        sample_rate: decoded.sample_rate,
        channels: decoded.channels,
    });

    // Output writers, under temporary names.
    let out_rate = match req.output_rate {
        OutputRate::Input => decoded.sample_rate,
        OutputRate::Model => info.sample_rate,
    };
    let mut cleanup = Cleanup(Vec::new());
    let mut outputs = Vec::new();
    for (stem, dest) in &dests {
        let name = dest.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
        let tmp = dest.with_file_name(format!(".{name}.{}.part", std::process::id()));
        cleanup.0.push(tmp.clone());
        let writer = encode::open(&tmp, req.format, out_rate, 2, req.clip).map_err(|e| match e {
            encode::EncodeError::Io { path, source } => Error::Output { path, source },
            other => Error::Encode(other),
        })?;
        let resampler = StreamResampler::new(info.sample_rate, out_rate, 2).map_err(Error::Resample)?;
        outputs.push(Pending { stem: stem.clone(), tmp, dest: dest.clone(), writer: Some(writer), resampler });
    }

    let chosen = req.two_stems.as_ref().and_then(|s| info.sources.iter().position(|x| x == s));
    let mix_file = || -> Result<SpoolMix, Error> {
        Ok(SpoolMix {
            file: spool.reopen().map_err(Error::Scratch)?,
            frames: frames_at_model,
            bytes: Vec::new(),
            window: Vec::new(),
        })
    };
    let mut sink = StemSink {
        outputs: &mut outputs,
        sources: info.sources.len(),
        chosen,
        other: req.other_method,
        mix: if req.other_method == OtherMethod::Minus { Some(mix_file()?) } else { None },
        mix_buf: Vec::new(),
        block: Vec::new(),
        resampled: Vec::new(),
    };
    let mut mix = mix_file()?;
    let mut net = SharedNet(&sep.net);
    let sep_stats = separate::separate(&mut net, info, &mut mix, stats.stats(), &req.separate, &mut sink, listener)?;

    // Flush resamplers, complete files, then publish them all.
    for p in outputs.iter_mut() {
        if listener.is_cancelled() {
            return Err(Error::Cancelled);
        }
        listener.event(&Event::Encoding { stem: p.stem.clone(), path: p.dest.clone() });
        let mut tail = Vec::new();
        p.resampler.finish(&mut tail).map_err(Error::Resample)?;
        if let Some(mut w) = p.writer.take() {
            w.write(&tail)?;
            w.finish()?;
        }
    }
    if listener.is_cancelled() {
        return Err(Error::Cancelled);
    }
    for p in &outputs {
        std::fs::rename(&p.tmp, &p.dest).map_err(|source| Error::Output { path: p.dest.clone(), source })?;
    }
    cleanup.0.clear();
    created_dirs.0.clear();
    let out = JobOutput {
        stems: outputs.iter().map(|p| (p.stem.clone(), p.dest.clone())).collect(),
        audio_seconds,
        seconds: started.elapsed().as_secs_f64(),
        segments: sep_stats.segments,
        network_seconds: sep_stats.network_seconds,
        provider: sep.provider,
    };
    listener.event(&Event::Done {
        outputs: out.stems.iter().map(|(_, p)| p.clone()).collect(),
        seconds: out.seconds,
        audio_seconds,
        segments: out.segments,
        network_seconds_per_segment: out.network_seconds / out.segments.max(1) as f64,
        provider: sep.provider,
    });
    Ok(out)
}

//! Export a finished song: chosen stems as separate files, or one mix of
//! them ("what I hear": the player's gains, mutes and solos, or a preset
//! such as instrumental = every stem but vocals), optionally only a region,
//! in any output format, at the stems' rate or 44.1/48 kHz.
//!
//! Stems are read in lock step with [`StreamDecoder`]s (no stem is held in
//! memory), mixed with the same [`Mixer`] the player uses, resampled with
//! rubato when asked, and written under temporary names (`.<name>.part`)
//! that are renamed only when every file is complete; a failed or cancelled
//! export leaves nothing behind.

use std::collections::VecDeque;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::audio::decode::StreamDecoder;
use crate::audio::encode::{self, ClipMode, OutputFormat, StemWriter, Tags};
use crate::audio::resample::StreamResampler;
use crate::mixer::{LoopRegion, MixControls, Mixer};
use crate::progress::Listener;
use crate::queue::StemFile;
use crate::Error;

/// Frames processed per step.
const BLOCK: usize = 8192;

/// Sample rate of exported files.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "specta", derive(specta::Type))]
#[serde(tag = "kind", rename_all = "camelCase")]
pub enum ExportRate {
    /// The stems' own rate (the song's original rate).
    Original,
    /// A fixed rate in Hz (44 100 or 48 000 in the app).
    Hz { hz: u32 },
}

/// What to export.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "specta", derive(specta::Type))]
#[serde(tag = "kind", rename_all = "camelCase")]
pub enum ExportWhat {
    /// Each named stem as its own file `<stem>.<ext>`.
    Stems { stems: Vec<String> },
    /// One file `<name>.<ext>` mixing the song's stems with `controls`
    /// (one control per stem of the song, in its order).
    Mix { name: String, controls: MixControls },
    /// Every stem of the song in one `<name>.zip` (stored, not compressed:
    /// encoded audio does not shrink).
    Zip { name: String },
}

/// One export.
#[derive(Debug, Clone, PartialEq)]
pub struct ExportRequest {
    /// Every stem of the song, in the song's order (all at one sample rate).
    pub sources: Vec<StemFile>,
    pub what: ExportWhat,
    /// Only these frames (at the stems' rate); `None` = the whole song.
    pub region: Option<LoopRegion>,
    pub format: OutputFormat,
    pub rate: ExportRate,
    /// Folder receiving the files (created if missing).
    pub dest_dir: PathBuf,
    /// Tags for formats that carry them (MP3).
    pub tags: Tags,
}

/// Removes temporary files unless the export completed.
struct Temps(Vec<PathBuf>);
impl Drop for Temps {
    fn drop(&mut self) {
        for p in &self.0 {
            let _ = std::fs::remove_file(p);
        }
    }
}

/// Title and artist of the song's original file, for [`ExportRequest::tags`].
/// Empty when the file is gone or has none.
pub fn source_tags(original: &Path) -> Tags {
    StreamDecoder::open(original).map(|mut d| d.tags()).unwrap_or_default()
}

fn safe_name(name: &str) -> String {
    crate::library::visible_name(name, "export")
}

/// Run an export; returns the files written, in order. Cancellation is
/// checked every block through `listener`.
///
/// # Errors
/// [`Error::InvalidOptions`] (unknown stem, stems at different rates, bad
/// region, bad format), [`Error::Decode`] for unreadable stems,
/// [`Error::Output`]/[`Error::Encode`] when files cannot be written,
/// [`Error::Cancelled`]. On error nothing is left in `dest_dir`.
pub fn export(req: &ExportRequest, listener: &dyn Listener) -> Result<Vec<PathBuf>, Error> {
    if let ExportWhat::Zip { name } = &req.what {
        return export_zip(req, name, listener).map(|p| vec![p]);
    }
    req.format.validate().map_err(Error::InvalidOptions)?;
    // Which source stems are read, and which output each feeds.
    let (read, outputs): (Vec<usize>, Vec<String>) = match &req.what {
        ExportWhat::Stems { stems } => {
            let mut idx = Vec::new();
            for s in stems {
                let i = req
                    .sources
                    .iter()
                    .position(|x| &x.stem == s)
                    .ok_or_else(|| Error::InvalidOptions(format!("this song has no stem '{s}'")))?;
                idx.push(i);
            }
            if idx.is_empty() {
                return Err(Error::InvalidOptions("choose at least one stem to export".into()));
            }
            (idx, stems.iter().map(|s| safe_name(s)).collect())
        }
        ExportWhat::Mix { name, controls } => {
            if controls.stems.len() != req.sources.len() {
                return Err(Error::InvalidOptions(format!(
                    "the mix has {} controls for {} stems",
                    controls.stems.len(),
                    req.sources.len()
                )));
            }
            ((0..req.sources.len()).collect(), vec![safe_name(name)])
        }
        ExportWhat::Zip { .. } => return Err(Error::InvalidOptions("zip exports go through export_zip".into())),
    };
    let mut decoders = Vec::new();
    for &i in &read {
        decoders.push(StreamDecoder::open(Path::new(&req.sources[i].path))?);
    }
    let rate = decoders.first().map(StreamDecoder::sample_rate).unwrap_or(0);
    if rate == 0 || decoders.iter().any(|d| d.sample_rate() != rate) {
        return Err(Error::InvalidOptions("the stems do not share one sample rate".into()));
    }
    let (start, end) = match req.region {
        Some(r) if r.start < r.end => (u64::from(r.start), Some(u64::from(r.end))),
        Some(_) => return Err(Error::InvalidOptions("the export region is empty".into())),
        None => (0, None),
    };
    let out_rate = match req.rate {
        ExportRate::Original => rate,
        ExportRate::Hz { hz } if (8_000..=192_000).contains(&hz) => hz,
        ExportRate::Hz { hz } => return Err(Error::InvalidOptions(format!("unsupported sample rate {hz} Hz"))),
    };

    std::fs::create_dir_all(&req.dest_dir).map_err(|source| Error::Output { path: req.dest_dir.clone(), source })?;
    let ext = req.format.extension();
    let finals: Vec<PathBuf> = outputs.iter().map(|n| req.dest_dir.join(format!("{n}.{ext}"))).collect();
    let temps = Temps(outputs.iter().map(|n| req.dest_dir.join(format!(".{n}.{ext}.part"))).collect());
    // Stems are exported untouched (bit-exact at the same depth); a mix may
    // exceed full scale and is clamped as the player's output is.
    let clip = match req.what {
        ExportWhat::Mix { .. } => ClipMode::Clamp,
        ExportWhat::Stems { .. } | ExportWhat::Zip { .. } => ClipMode::None,
    };
    let mut writers: Vec<Box<dyn StemWriter>> = Vec::new();
    let mut resamplers: Vec<StreamResampler> = Vec::new();
    for t in &temps.0 {
        writers.push(encode::open_tagged(t, req.format, out_rate, 2, clip, &req.tags)?);
        resamplers.push(StreamResampler::new(rate, out_rate, 2).map_err(Error::Resample)?);
    }
    let mut mixer = match &req.what {
        ExportWhat::Mix { controls, .. } => Some(Mixer::new(rate, controls)),
        ExportWhat::Stems { .. } | ExportWhat::Zip { .. } => None,
    };

    // Lock-step reading: each stem's decoded frames queue up until every
    // stem has a block; stems that end early are padded with silence.
    let mut queues: Vec<VecDeque<f32>> = vec![VecDeque::new(); decoders.len()];
    let mut ended = vec![false; decoders.len()];
    let mut position: u64 = 0;
    let mut blocks: Vec<Vec<f32>> = vec![Vec::new(); decoders.len()];
    let mut mixed = Vec::new();
    let mut resampled = Vec::new();
    let total = end
        .or_else(|| decoders.iter().filter_map(StreamDecoder::declared_frames).max())
        .map(|e| e.saturating_sub(start));
    loop {
        if listener.is_cancelled() {
            return Err(Error::Cancelled);
        }
        for (k, d) in decoders.iter_mut().enumerate() {
            while !ended[k] && queues[k].len() < 2 * BLOCK {
                match d.next_block()? {
                    Some((b, _)) => queues[k].extend(b),
                    None => ended[k] = true,
                }
            }
        }
        let available = queues.iter().map(|q| q.len() / 2).max().unwrap_or(0);
        if available == 0 {
            break;
        }
        let mut n = available.min(BLOCK);
        if let Some(e) = end {
            n = n.min(e.saturating_sub(position) as usize);
            if n == 0 {
                break;
            }
        }
        for (k, q) in queues.iter_mut().enumerate() {
            let have = (q.len() / 2).min(n);
            blocks[k].clear();
            blocks[k].extend(q.drain(..2 * have));
            blocks[k].resize(2 * n, 0.0);
        }
        // Skip frames before the region.
        let skip = start.saturating_sub(position).min(n as u64) as usize;
        position += n as u64;
        let fraction = total.filter(|&t| t > 0).map(|t| (position.saturating_sub(start) as f64 / t as f64).min(1.0));
        listener.event(&crate::progress::Event::Exporting { fraction });
        if skip == n {
            continue;
        }
        match mixer.as_mut() {
            Some(m) => {
                mixed.resize(2 * (n - skip), 0.0);
                let views: Vec<&[f32]> = blocks.iter().map(|b| &b[2 * skip..]).collect();
                m.mix(&views, &mut mixed);
                resampled.clear();
                resamplers[0].push(&mixed, &mut resampled).map_err(Error::Resample)?;
                writers[0].write(&resampled)?;
            }
            None => {
                for (k, w) in writers.iter_mut().enumerate() {
                    resampled.clear();
                    resamplers[k].push(&blocks[k][2 * skip..], &mut resampled).map_err(Error::Resample)?;
                    w.write(&resampled)?;
                }
            }
        }
    }
    for (w, r) in writers.iter_mut().zip(resamplers.iter_mut()) {
        resampled.clear();
        r.finish(&mut resampled).map_err(Error::Resample)?;
        w.write(&resampled)?;
    }
    for w in writers {
        w.finish()?;
    }
    for (t, f) in temps.0.iter().zip(&finals) {
        std::fs::rename(t, f).map_err(|source| Error::Output { path: f.clone(), source })?;
    }
    // Renamed: nothing left for the guard to remove.
    drop(temps);
    Ok(finals)
}

/// Every stem, exported as [`ExportWhat::Stems`] into a scratch folder and
/// packed into `<dest_dir>/<name>.zip` (written as `.part`, then renamed).
fn export_zip(req: &ExportRequest, name: &str, listener: &dyn Listener) -> Result<PathBuf, Error> {
    std::fs::create_dir_all(&req.dest_dir).map_err(|source| Error::Output { path: req.dest_dir.clone(), source })?;
    let scratch = tempfile::Builder::new()
        .prefix(".stemroom-export-")
        .tempdir_in(&req.dest_dir)
        .map_err(|source| Error::Output { path: req.dest_dir.clone(), source })?;
    let stems = ExportRequest {
        what: ExportWhat::Stems { stems: req.sources.iter().map(|s| s.stem.clone()).collect() },
        dest_dir: scratch.path().to_path_buf(),
        ..req.clone()
    };
    let files = export(&stems, listener)?;
    let name = safe_name(name);
    let dest = req.dest_dir.join(format!("{name}.zip"));
    let part = Temps(vec![req.dest_dir.join(format!(".{name}.zip.part"))]);
    let zip_err = |e: zip::result::ZipError| Error::Output { path: dest.clone(), source: std::io::Error::other(e) };
    let io_err = |source| Error::Output { path: dest.clone(), source };
    let mut zip = zip::ZipWriter::new(std::fs::File::create(&part.0[0]).map_err(io_err)?);
    let options =
        zip::write::SimpleFileOptions::default().compression_method(zip::CompressionMethod::Stored).large_file(true);
    for f in &files {
        if listener.is_cancelled() {
            return Err(Error::Cancelled);
        }
        let entry = f.file_name().map(|n| format!("{name}/{}", n.to_string_lossy())).unwrap_or_default();
        zip.start_file(entry, options).map_err(zip_err)?;
        let mut src = std::fs::File::open(f).map_err(io_err)?;
        std::io::copy(&mut src, &mut zip).map_err(io_err)?;
    }
    zip.finish().map_err(zip_err)?.sync_all().map_err(io_err)?;
    std::fs::rename(&part.0[0], &dest).map_err(io_err)?;
    Ok(dest)
}

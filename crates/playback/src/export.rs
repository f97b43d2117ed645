//! Export a finished song: chosen stems as separate files, or one mix of
//! them ("what I hear": the player's gains, mutes, solos, pans, tempo and
//! pitch, or a preset
//! such as instrumental = every stem but vocals), optionally only a region,
//! in any output format, at the stems' rate or 44.1/48 kHz.
//!
//! Stems are read in lock step with a [`StemSet`] (no stem is held in
//! memory), mixed with the same [`Mixer`] the player uses, resampled with
//! rubato when asked, and written under temporary names
//! ([`stemroom_engine::files::part_path`]) that are renamed only when every
//! file is complete; a failed or cancelled export leaves nothing behind.

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};
use stemroom_engine::audio::decode::StreamDecoder;
use stemroom_engine::audio::encode::{self, ClipMode, OutputFormat, StemWriter, Tags, ThreadedWriter};
use stemroom_engine::audio::resample::StreamResampler;
use stemroom_engine::files::{part_path, Leftovers};
use stemroom_engine::job::StemFile;
use stemroom_engine::progress::{Event, Listener};
use stemroom_engine::Error;

use crate::mixer::{LoopRegion, MixControls, Mixer};
use crate::reader::StemSet;
use crate::stretch::{Stretcher, TimePitch};

/// Frames processed per step.
const BLOCK: usize = 8192;

/// Sample rate of exported files.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "specta", derive(specta::Type))]
#[serde(tag = "kind", rename_all = "camelCase")]
pub enum ExportRate {
    /// The stems' own rate (the song's original rate); an MP3 whose
    /// bitrate that rate cannot carry (above 160 kbps below 32 kHz, above
    /// 64 kbps below 16 kHz) at twice or four times it.
    Original,
    /// A fixed rate in Hz (44 100 or 48 000 in the app).
    Hz { hz: u32 },
}

/// What to export. File names keep the song and say what they hold:
/// `<title> - <what>.<ext>`, with the title cut (never the suffix) when the
/// name would be too long.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "specta", derive(specta::Type))]
#[serde(tag = "kind", rename_all = "camelCase")]
pub enum ExportWhat {
    /// Each named stem as its own file `<title> - <stem>.<ext>`.
    Stems { stems: Vec<String> },
    /// One file `<title> - <label>.<ext>` (label e.g. `Instrumental`)
    /// mixing the song's stems with `controls` (one control per stem of the
    /// song, in its order).
    Mix { label: String, controls: MixControls },
    /// Every stem of the song in one `<title> - stems.zip` (stored, not
    /// compressed: encoded audio does not shrink).
    Zip,
}

/// What to do when a file of an export's name exists already.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[cfg_attr(feature = "specta", derive(specta::Type))]
#[serde(rename_all = "camelCase")]
pub enum OnClash {
    /// Write nothing and fail with [`Error::Exists`] naming the files.
    #[default]
    Refuse,
    /// Replace the existing files (atomically, all or nothing).
    Replace,
    /// Keep them and write `<name> (2).<ext>` (the first free number).
    KeepBoth,
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
    /// The song's title, the first part of every file name.
    pub title: String,
    /// Existing files of the same names: refused unless asked otherwise.
    pub on_clash: OnClash,
    /// Tags for formats that carry them (MP3).
    pub tags: Tags,
    /// The format the stems were written in (the job's): stems of 16-bit
    /// integer PCM exported at 16 bits and their own rate are copied
    /// untouched; every other 16-bit export (a mix, another rate, deeper
    /// or MP3 stems) is dithered, as rounding alone leaves distortion that
    /// follows the signal in fades and quiet passages. `None`: not known,
    /// dithered.
    pub stems_format: Option<OutputFormat>,
}

/// Title and artist of the song's original file, for [`ExportRequest::tags`].
/// Empty when the file is gone or has none.
pub fn source_tags(original: &Path) -> Tags {
    StreamDecoder::open(original).map(|mut d| d.tags()).unwrap_or_default()
}

/// Longest file name stem written (the extension and a ` (99)` still fit
/// in the 120 bytes of [`stemroom_engine::names::safe_component`]).
const MAX_NAME: usize = 100;

/// `<title> - <what>`, safe on disk, cutting the title (never `what`) to fit.
pub fn export_name(title: &str, what: &str) -> String {
    let what = stemroom_engine::names::visible_name(what, "export");
    let suffix = format!(" - {what}");
    let room = MAX_NAME.saturating_sub(suffix.len());
    let title = stemroom_engine::names::cut_to(&stemroom_engine::names::visible_name(title, "song"), room);
    // Nor a dangling separator before the suffix ("Title -" + " - drums").
    let title = title.trim_end_matches(|c: char| c == '.' || c.is_whitespace() || c == '-');
    let title = if title.is_empty() { "song" } else { title };
    format!("{title}{suffix}")
}

/// The final paths of an export (`names` in `dir`, with `ext`), after the
/// clash rule: refused when any exists, or all numbered with the first of
/// ` (2)`, ` (3)`... that no file of the set has yet (names differing only
/// in case are refused before: [`plan_outputs`]).
fn final_paths(dir: &Path, names: &[String], ext: &str, on_clash: OnClash) -> Result<Vec<PathBuf>, Error> {
    let plain: Vec<PathBuf> = names.iter().map(|n| dir.join(format!("{n}.{ext}"))).collect();
    let taken = |p: &Path| std::fs::symlink_metadata(p).is_ok();
    match on_clash {
        OnClash::Replace => Ok(plain),
        OnClash::Refuse => {
            let existing: Vec<PathBuf> = plain.iter().filter(|p| taken(p)).cloned().collect();
            if existing.is_empty() {
                Ok(plain)
            } else {
                Err(Error::Exists { paths: existing })
            }
        }
        // One number for the whole set (`Song - drums (2)`, `Song - bass
        // (2)`, …), free for every name in it: a set exported again reads as
        // one set, not as a mix of the old one's names and new ones.
        OnClash::KeepBoth => {
            if !plain.iter().any(|p| taken(p)) {
                return Ok(plain);
            }
            let numbered = |k: u32| names.iter().map(|n| dir.join(format!("{n} ({k}).{ext}"))).collect::<Vec<_>>();
            let mut k = 2;
            loop {
                let set = numbered(k);
                if !set.iter().any(|p| taken(p)) {
                    return Ok(set);
                }
                k += 1;
            }
        }
    }
}

/// Which source stems an export reads (indices into the song's stems) and
/// the name of each output file (without extension).
fn plan_outputs(req: &ExportRequest) -> Result<(Vec<usize>, Vec<String>), Error> {
    match &req.what {
        ExportWhat::Stems { stems } => {
            let mut idx = Vec::new();
            for s in stems {
                let i = req
                    .sources
                    .iter()
                    .position(|x| &x.stem == s)
                    .ok_or_else(|| Error::InvalidOptions(format!("this song has no stem '{s}'")))?;
                // Each stem once: a repeated name would decode, encode and
                // write the same file again for every repeat.
                if idx.contains(&i) {
                    return Err(Error::InvalidOptions(format!("the stem '{s}' is asked for twice")));
                }
                idx.push(i);
            }
            if idx.is_empty() {
                return Err(Error::InvalidOptions("choose at least one stem to export".into()));
            }
            let names: Vec<String> = stems.iter().map(|s| export_name(&req.title, s)).collect();
            // Two stems whose names clean to one file name ("a/b" and
            // "a_b", or "Vocals" and "vocals" where case does not count):
            // one file would replace the other.
            for (i, a) in names.iter().enumerate() {
                if let Some(j) = names[..i].iter().position(|b| b.to_lowercase() == a.to_lowercase()) {
                    return Err(Error::InvalidOptions(format!(
                        "the stems '{}' and '{}' would be written to one file name ({a})",
                        stems[j], stems[i]
                    )));
                }
            }
            Ok((idx, names))
        }
        ExportWhat::Mix { label, controls } => {
            if controls.stems.len() != req.sources.len() {
                return Err(Error::InvalidOptions(format!(
                    "the mix has {} controls for {} stems",
                    controls.stems.len(),
                    req.sources.len()
                )));
            }
            // Every stem muted (or at 0): a file of silence is no export.
            if controls.effective_gains().iter().all(|&g| g == 0.0) {
                return Err(Error::InvalidOptions(
                    "every stem of this mix is muted or at zero volume: there is nothing to export".into(),
                ));
            }
            Ok(((0..req.sources.len()).collect(), vec![export_name(&req.title, label)]))
        }
        ExportWhat::Zip => Err(Error::InvalidOptions("zip exports go through export_zip".into())),
    }
}

/// The exported frames `(start, end)` at the stems' rate (`end` = `None`:
/// to the end of the song) and the output rate in Hz.
fn range_and_rate(req: &ExportRequest, rate: u32) -> Result<((u64, Option<u64>), u32), Error> {
    let range = match req.region {
        Some(r) if r.start < r.end => (u64::from(r.start), Some(u64::from(r.end))),
        Some(_) => return Err(Error::InvalidOptions("the export region is empty".into())),
        None => (0, None),
    };
    let out_rate = match req.rate {
        ExportRate::Original => mp3_rate_for_bitrate(req.format, req.format.file_rate(rate)),
        ExportRate::Hz { hz } if (8_000..=192_000).contains(&hz) => req.format.file_rate(hz),
        ExportRate::Hz { hz } => return Err(Error::InvalidOptions(format!("unsupported sample rate {hz} Hz"))),
    };
    Ok((range, out_rate))
}

/// The MP3 rate at which `format`'s bitrate can be written, from `rate`
/// (an MP3 rate): doubled while the MPEG version of the rate tops out
/// below it. LAME replaces a bitrate its version lacks with the nearest it
/// has (`lame.c`, `FindNearestBitrate`): MPEG-2 (16-24 kHz) reaches 160
/// kbps and MPEG-2.5 (8-12 kHz) 64 kbps (ISO/IEC 13818-3 Table 2.4.2.3),
/// so 320 kbps asked at 22,050 Hz was written at 160 without a word. Only
/// for the stems' own rate ("Original"): a rate chosen by name is kept.
fn mp3_rate_for_bitrate(format: OutputFormat, rate: u32) -> u32 {
    let OutputFormat::Mp3 { kbps } = format else { return rate };
    let top = |r: u32| match r {
        32_000.. => 320,
        16_000.. => 160,
        _ => 64,
    };
    let mut r = rate;
    // 8,000 -> 16,000 -> 32,000; 11,025 -> 22,050 -> 44,100; 12,000 -> 24,000 -> 48,000.
    while top(r) < kbps && r < 32_000 {
        r *= 2;
    }
    r
}

/// Where the export's files go while written and when done.
struct Outputs {
    finals: Vec<PathBuf>,
    /// The names of `finals` without extension, their folder and extension
    /// and the clash rule: to choose again when a name is taken meanwhile.
    names: Vec<String>,
    dir: PathBuf,
    ext: &'static str,
    on_clash: OnClash,
    /// One encoder thread per file (several stems encode at once). Before
    /// `temps`: fields drop in order, and a failed export's encoder
    /// threads are stopped (their files closed) before the files are removed.
    writers: Vec<ThreadedWriter>,
    temps: Leftovers,
    resamplers: Vec<StreamResampler>,
    /// Where the file's samples are cut (the mix's clamp at ±0.99, an
    /// integer format's full scale); `None`: nothing is (float WAV stems).
    limit: Option<f32>,
    /// Samples written past `limit`, and the largest magnitude written.
    clipped: u64,
    peak: f32,
    /// Whether the stems themselves went past `limit` (before resampling):
    /// then the original rate would cut them too.
    source_over: bool,
}

impl Outputs {
    fn open(req: &ExportRequest, names: &[String], rate: u32, out_rate: u32) -> Result<Self, Error> {
        std::fs::create_dir_all(&req.dest_dir)
            .map_err(|source| Error::Output { path: req.dest_dir.clone(), source })?;
        // What a killed export left here: its part files, a zip's scratch
        // folder of encoded stems (gigabytes), whatever it exported.
        stemroom_engine::files::remove_stale_parts(&req.dest_dir);
        remove_stale_scratch(&req.dest_dir);
        let ext = req.format.extension();
        // Stems are exported untouched (bit-exact at the same depth). A mix
        // may exceed full scale: a 32-bit float WAV keeps it (the headroom
        // it exists for), integer PCM saturates at full scale as the
        // player's output does, and an MP3 mix is clamped at 0.99 as the
        // engine clamps (`Post::Clamp`), leaving the codec room to overshoot.
        let float = matches!(req.format, OutputFormat::Wav { depth: encode::WavDepth::Float32 });
        let clip = match (&req.what, req.format) {
            (ExportWhat::Mix { .. }, OutputFormat::Mp3 { .. }) => ClipMode::Clamp,
            _ => ClipMode::None,
        };
        let mp3 = matches!(req.format, OutputFormat::Mp3 { .. });
        let limit = match clip {
            // The encoder's clamp (`Post::Clamp` in the engine).
            ClipMode::Clamp => Some(0.99),
            // An MP3 stem keeps what is over full scale (LAME scales float
            // input without clamping it), as a float WAV does.
            _ if float || mp3 => None,
            _ => Some(1.0),
        };
        let mut out = Outputs {
            finals: Vec::new(),
            names: names.to_vec(),
            dir: req.dest_dir.clone(),
            ext,
            on_clash: req.on_clash,
            temps: Leftovers::new(),
            writers: Vec::new(),
            resamplers: Vec::new(),
            limit,
            clipped: 0,
            peak: 0.0,
            source_over: false,
        };
        let finals = final_paths(&req.dest_dir, names, ext, req.on_clash)?;
        // What each file holds, for its title tag (in `names`' order).
        let whats: Vec<&str> = match &req.what {
            ExportWhat::Stems { stems } => stems.iter().map(String::as_str).collect(),
            ExportWhat::Mix { label, .. } => vec![label.as_str()],
            ExportWhat::Zip => Vec::new(),
        };
        let song = req.tags.title.as_deref().unwrap_or(&req.title);
        for (i, (n, dest)) in names.iter().zip(finals).enumerate() {
            let tmp = part_path(&dest);
            out.temps.file(tmp.clone());
            // Each file titled by the song and what it holds ("Song -
            // vocals"): with the song's own title on every one, a music
            // library showed five tracks called "Song", the instrumental
            // among them.
            let title = whats.get(i).map_or_else(|| n.clone(), |what| format!("{song} - {what}"));
            let tags = Tags { title: Some(title), ..req.tags.clone() };
            let mut writer = encode::open_tagged(&tmp, req.format, out_rate, 2, clip, &tags)?;
            // At 16 bits, only 16-bit stems at their own rate are copied
            // untouched; anything else is dithered (see `encode::Dithered`
            // and `ExportRequest::stems_format`).
            let sixteen = |f: Option<OutputFormat>| {
                matches!(
                    f,
                    Some(OutputFormat::Wav { depth: encode::WavDepth::Int16 } | OutputFormat::Flac { bits: 16 })
                )
            };
            let untouched =
                sixteen(req.stems_format) && out_rate == rate && !matches!(req.what, ExportWhat::Mix { .. });
            if sixteen(Some(req.format)) && !untouched {
                writer = Box::new(encode::Dithered::new(writer, 16, i as u64));
            }
            out.writers.push(ThreadedWriter::spawn(writer, &format!("stemroom-export-{n}"))?);
            out.resamplers.push(StreamResampler::new(rate, out_rate, 2).map_err(Error::Resample)?);
            out.finals.push(dest);
        }
        Ok(out)
    }

    /// Resample and write `block` (interleaved stereo at the stems' rate) to output `k`.
    fn write(&mut self, k: usize, block: &[f32], resampled: &mut Vec<f32>) -> Result<(), Error> {
        if let Some(limit) = self.limit.filter(|_| !self.source_over) {
            self.source_over = block.iter().any(|v| v.abs() > limit);
        }
        resampled.clear();
        self.resamplers[k].push(block, resampled).map_err(Error::Resample)?;
        self.measure(resampled);
        self.writers[k].write(resampled)?;
        Ok(())
    }

    /// Count what `samples` (about to be written) lose to the limit.
    fn measure(&mut self, samples: &[f32]) {
        let Some(limit) = self.limit else { return };
        for v in samples {
            let a = v.abs();
            if a > limit {
                self.clipped += 1;
            }
            self.peak = self.peak.max(a);
        }
    }

    /// What the person is told when samples were cut: how many, by how
    /// much, and what to do; `None` when none were.
    /// (`original_keeps`: an export at the original rate, which the person
    /// did not choose, would write the stems' own rate; not when the
    /// format cannot hold it, as FLAC above 96 kHz.)
    fn clip_warning(&self, mix: bool, (out_rate, rate): (u32, u32), original_keeps: bool) -> Option<String> {
        if self.clipped == 0 {
            return None;
        }
        let seconds = self.clipped as f64 / 2.0 / f64::from(out_rate.max(1));
        let peak_db = 20.0 * f64::from(self.peak).log10();
        Some(if mix {
            format!(
                "The mix went over full scale: {} samples ({seconds:.2} s of audio) were limited, its peak at {peak_db:+.1} dBFS. Lower the master or the stems' volumes for a clean export.",
                self.clipped
            )
        } else if out_rate != rate && !self.source_over {
            // (Only the resampling's overshoot went over: the original
            // rate keeps them, where the format takes it.)
            let keep = if original_keeps {
                "Export at the original rate, or as 32-bit float WAV,"
            } else {
                "Export as 32-bit float WAV"
            };
            format!(
                "Resampled to {out_rate} Hz, the stems went over full scale: {} samples were clipped, the peak at {peak_db:+.1} dBFS. {keep} to keep them whole.",
                self.clipped
            )
        } else {
            format!(
                "The stems went over full scale: {} samples were clipped, the peak at {peak_db:+.1} dBFS. Export as 32-bit float WAV to keep them whole.",
                self.clipped
            )
        })
    }

    /// Flush, complete and rename every file into place.
    fn finish(&mut self) -> Result<Vec<PathBuf>, Error> {
        let mut resampled = Vec::new();
        for k in 0..self.writers.len() {
            resampled.clear();
            self.resamplers[k].finish(&mut resampled).map_err(Error::Resample)?;
            self.measure(&resampled);
            self.writers[k].write(&resampled)?;
            self.writers[k].close();
        }
        for w in self.writers.drain(..) {
            Box::new(w).finish()?;
        }
        self.finals = place(self.temps.files(), &self.finals, &self.dir, &self.names, self.ext, self.on_clash)?;
        // Renamed: nothing left for the guard to remove.
        self.temps.disarm();
        Ok(std::mem::take(&mut self.finals))
    }
}

/// Put finished `temps` in place at `finals` (chosen by [`final_paths`]
/// from `names`, `ext` in `dir`), all or nothing. Replace: the old files
/// are replaced. Refuse and keep both: nothing is ever replaced, even a
/// file another program created after the names were chosen; refuse then
/// fails with [`Error::Exists`], keep both chooses the next free numbers
/// (a few times). Returns the final paths.
fn place(
    temps: &[PathBuf],
    finals: &[PathBuf],
    dir: &Path,
    names: &[String],
    ext: &str,
    on_clash: OnClash,
) -> Result<Vec<PathBuf>, Error> {
    let output_err =
        |finals: &[PathBuf], source| Error::Output { path: finals.first().cloned().unwrap_or_default(), source };
    let pairs =
        |finals: &[PathBuf]| -> Vec<(PathBuf, PathBuf)> { temps.iter().cloned().zip(finals.iter().cloned()).collect() };
    if on_clash == OnClash::Replace {
        stemroom_engine::files::publish(&pairs(finals)).map_err(|(path, source)| Error::Output { path, source })?;
        return Ok(finals.to_vec());
    }
    let mut finals = finals.to_vec();
    for _ in 0..8 {
        match stemroom_engine::files::publish_new(&pairs(&finals)) {
            Ok(()) => return Ok(finals),
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {
                // Taken since they were chosen: refused, or numbered anew.
                finals = final_paths(dir, names, ext, on_clash)?;
            }
            Err(e) => return Err(output_err(&finals, e)),
        }
    }
    Err(output_err(&finals, std::io::Error::from(std::io::ErrorKind::AlreadyExists)))
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
    // The destination folders made for this export (every missing level
    // of `dest_dir`) go again when it fails or is cancelled (they would be
    // left empty; one with files stays).
    let mut made = Leftovers::new();
    made.create_dirs(&req.dest_dir).map_err(|source| Error::Output { path: req.dest_dir.clone(), source })?;
    let result = if req.what == ExportWhat::Zip {
        export_zip(req, listener).map(|p| vec![p])
    } else {
        export_files(req, listener)
    };
    if result.is_ok() {
        made.disarm();
    }
    result
}

/// [`export`] of stems or a mix, as files.
fn export_files(req: &ExportRequest, listener: &dyn Listener) -> Result<Vec<PathBuf>, Error> {
    req.format.validate().map_err(Error::InvalidOptions)?;
    let (read, names) = plan_outputs(req)?;
    let paths: Vec<&Path> = read.iter().map(|&i| Path::new(&req.sources[i].path)).collect();
    let mut stems = StemSet::open(&paths)?;
    let rate = stems.sample_rate();
    if rate == 0 || stems.mixed_rates().is_some() {
        return Err(Error::InvalidOptions("the stems do not share one sample rate".into()));
    }
    let ((start, end), out_rate) = range_and_rate(req, rate)?;
    // A region's end past the song's is the song's end (a loop saved
    // before the stems were made again shorter, a client's "to the end"
    // as u32::MAX): a WAV is not refused as too long for it, and progress
    // reaches its end.
    let end = match (end, stems.exact_frames()) {
        (Some(e), Some(length)) => Some(e.min(length.max(start))),
        (e, _) => e,
    };
    // A file too long for its format (a WAV over 4 GiB) is refused first.
    if let Some(span) = end.or_else(|| stems.declared_frames()).map(|e| e.saturating_sub(start)) {
        let tempo = match &req.what {
            ExportWhat::Mix { controls, .. } => f64::from(controls.time_pitch().tempo),
            ExportWhat::Stems { .. } | ExportWhat::Zip => 1.0,
        };
        let frames = (span as f64 / tempo.max(0.01) * f64::from(out_rate) / f64::from(rate)).ceil() as u64;
        req.format.fits(frames, 2).map_err(Error::InvalidOptions)?;
    }
    let mut outputs = Outputs::open(req, &names, rate, out_rate)?;
    let mut mixer = match &req.what {
        ExportWhat::Mix { controls, .. } => Some(Mixer::new(rate, controls)),
        ExportWhat::Stems { .. } | ExportWhat::Zip => None,
    };

    // "What I hear" at another tempo or pitch: every stem stretched as the
    // player does, before the mix.
    let time_pitch = match &req.what {
        ExportWhat::Mix { controls, .. } => controls.time_pitch(),
        ExportWhat::Stems { .. } | ExportWhat::Zip => TimePitch::default(),
    };
    let mut stretchers: Vec<Stretcher> = (0..stems.len()).filter_map(|_| Stretcher::new(rate, time_pitch)).collect();
    let mut stretched: Vec<Vec<f32>> = vec![Vec::new(); stretchers.len()];

    // A region starts where the stems are positioned (exactly); where a
    // stem cannot seek, everything before it is decoded and skipped.
    let mut position: u64 = 0;
    if start > 0 {
        if stems.declared_frames().is_some_and(|length| start >= length) {
            return Err(Error::InvalidOptions("the export region starts after the end of the song".into()));
        }
        match stems.seek_or_give_up(start, &|| listener.is_cancelled()) {
            Ok(true) => position = start,
            // (A stem that cannot seek is decoded up to the region; a
            // cancel meanwhile ends the export.)
            Ok(false) => return Err(Error::Cancelled),
            Err(e) => {
                tracing::debug!("export: seeking to frame {start} failed ({e}); decoding from the start");
                stems = StemSet::open(&paths)?;
            }
        }
    }
    let mut blocks: Vec<Vec<f32>> = vec![vec![0.0; 2 * BLOCK]; stems.len()];
    let mut scratch = Scratch::default();
    let total = end.or_else(|| stems.declared_frames()).map(|e| e.saturating_sub(start));
    // Whether any frame of the region was read: stems that state no
    // length (or a longer one) are found to end before the region only here.
    let mut reached = false;
    loop {
        if listener.is_cancelled() {
            return Err(Error::Cancelled);
        }
        let want = match end {
            Some(e) => BLOCK.min(e.saturating_sub(position) as usize),
            None => BLOCK,
        };
        if want == 0 {
            break;
        }
        // Stems that end early are padded with silence; the export ends with
        // the longest.
        let n = stems.read(want, &mut blocks)?;
        if n == 0 {
            break;
        }
        // Skip frames before the region.
        let skip = start.saturating_sub(position).min(n as u64) as usize;
        position += n as u64;
        let fraction = total.filter(|&t| t > 0).map(|t| (position.saturating_sub(start) as f64 / t as f64).min(1.0));
        listener.event(&Event::Exporting { fraction });
        if skip == n {
            continue;
        }
        reached = true;
        if stretchers.is_empty() {
            let views: Vec<&[f32]> = blocks.iter().map(|b| &b[2 * skip..2 * n]).collect();
            emit(&mut outputs, mixer.as_mut(), &views, &mut scratch)?;
        } else {
            for ((st, out), b) in stretchers.iter_mut().zip(&mut stretched).zip(&blocks) {
                out.clear();
                st.process(&b[2 * skip..2 * n], out);
            }
            let views: Vec<&[f32]> = stretched.iter().map(Vec::as_slice).collect();
            emit(&mut outputs, mixer.as_mut(), &views, &mut scratch)?;
        }
    }
    if !reached && start > 0 {
        return Err(Error::InvalidOptions("the export region starts after the end of the song".into()));
    }
    if !stretchers.is_empty() {
        for (st, out) in stretchers.iter_mut().zip(&mut stretched) {
            out.clear();
            st.finish(out);
        }
        let views: Vec<&[f32]> = stretched.iter().map(Vec::as_slice).collect();
        emit(&mut outputs, mixer.as_mut(), &views, &mut scratch)?;
    }
    let files = outputs.finish()?;
    let mix = matches!(req.what, ExportWhat::Mix { .. });
    let original_keeps = !matches!(req.rate, ExportRate::Original)
        && mp3_rate_for_bitrate(req.format, req.format.file_rate(rate)) == rate;
    if let Some(message) = outputs.clip_warning(mix, (out_rate, rate), original_keeps) {
        tracing::warn!("export of {}: {message}", req.title);
        listener.event(&Event::Warning { message });
    }
    Ok(files)
}

/// Buffers reused from block to block.
#[derive(Default)]
struct Scratch {
    mixed: Vec<f32>,
    resampled: Vec<f32>,
}

/// Write one block of every read stem (equal lengths, interleaved stereo at
/// the stems' rate): mixed into the one output, or each to its own.
fn emit(
    outputs: &mut Outputs,
    mixer: Option<&mut Mixer>,
    views: &[&[f32]],
    scratch: &mut Scratch,
) -> Result<(), Error> {
    match mixer {
        Some(m) => {
            scratch.mixed.resize(views.first().map_or(0, |v| v.len()), 0.0);
            m.mix(views, &mut scratch.mixed);
            outputs.write(0, &scratch.mixed, &mut scratch.resampled)
        }
        None => {
            for (k, v) in views.iter().enumerate() {
                outputs.write(k, v, &mut scratch.resampled)?;
            }
            Ok(())
        }
    }
}

/// Start of the name of a zip export's scratch folder in the destination:
/// then the process id, a dash and random characters.
const SCRATCH_PREFIX: &str = ".stemroom-export-";

/// Remove the zip scratch folders in `dir` whose process is gone and that
/// no export holds locked (an export in another PID namespace sharing the
/// folder, where the id in the name means nothing); removed while locked
/// here.
fn remove_stale_scratch(dir: &Path) {
    let Ok(entries) = std::fs::read_dir(dir) else { return };
    for e in entries.flatten() {
        let name = e.file_name();
        let pid = name
            .to_str()
            .and_then(|n| n.strip_prefix(SCRATCH_PREFIX))
            .and_then(|rest| rest.split_once('-'))
            .and_then(|(pid, _)| pid.parse::<i32>().ok());
        let Some(pid) = pid.filter(|&p| p > 0) else { continue };
        if !e.file_type().is_ok_and(|t| t.is_dir()) || stemroom_engine::files::process_alive(pid) {
            continue;
        }
        let lock = std::fs::File::open(e.path()).map(|f| f.try_lock().map(|()| f));
        if matches!(lock, Ok(Err(std::fs::TryLockError::WouldBlock))) {
            continue;
        }
        if std::fs::remove_dir_all(e.path()).is_ok() {
            tracing::info!("removed {} left by process {pid}", e.path().display());
        }
        drop(lock);
    }
}

/// Share of a zip export's progress bar its stems take (the rest is their
/// copy into the zip): encoding is the long part, the copy a disk's
/// (seconds to minutes for a long song at 24 bits, where the bar stood at
/// 100 % before).
const ZIP_STEMS_SHARE: f64 = 0.8;

/// `inner`, its export fractions scaled into `from..from + span`.
struct ScaledProgress<'a> {
    inner: &'a dyn Listener,
    from: f64,
    span: f64,
}

impl Listener for ScaledProgress<'_> {
    fn event(&self, event: &Event) {
        match event {
            Event::Exporting { fraction } => {
                self.inner.event(&Event::Exporting { fraction: fraction.map(|f| self.from + self.span * f) });
            }
            other => self.inner.event(other),
        }
    }
    fn is_cancelled(&self) -> bool {
        self.inner.is_cancelled()
    }
}

/// Every stem, exported as [`ExportWhat::Stems`] into a scratch folder and
/// packed into `<dest_dir>/<title> - stems.zip` (written as `.part`, then
/// renamed). Progress: the stems to [`ZIP_STEMS_SHARE`], then the bytes
/// copied into the zip.
fn export_zip(req: &ExportRequest, listener: &dyn Listener) -> Result<PathBuf, Error> {
    std::fs::create_dir_all(&req.dest_dir).map_err(|source| Error::Output { path: req.dest_dir.clone(), source })?;
    let name = export_name(&req.title, "stems");
    let dest = final_paths(&req.dest_dir, std::slice::from_ref(&name), "zip", req.on_clash)?.remove(0);
    // The scratch folder and the zip's part file name their process, so
    // those left by a run that was killed are recognised and removed by the
    // next export here (the part file was left until a non-zip export).
    remove_stale_scratch(&req.dest_dir);
    stemroom_engine::files::remove_stale_parts(&req.dest_dir);
    // Locked while in use (best effort: a file system without locks).
    let (scratch, _in_use) =
        stemroom_engine::files::locked_tempdir(&req.dest_dir, &format!("{SCRATCH_PREFIX}{}-", std::process::id()))
            .map_err(|source| Error::Output { path: req.dest_dir.clone(), source })?;
    let stems = ExportRequest {
        what: ExportWhat::Stems { stems: req.sources.iter().map(|s| s.stem.clone()).collect() },
        dest_dir: scratch.path().to_path_buf(),
        on_clash: OnClash::Replace,
        ..req.clone()
    };
    let files = export(&stems, &ScaledProgress { inner: listener, from: 0.0, span: ZIP_STEMS_SHARE })?;
    let total: u64 = files.iter().filter_map(|f| std::fs::metadata(f).ok()).map(|m| m.len()).sum();
    let mut copied = 0u64;
    let mut part = Leftovers::new();
    part.file(part_path(&dest));
    let zip_err = |e: zip::result::ZipError| Error::Output { path: dest.clone(), source: std::io::Error::other(e) };
    let io_err = |source| Error::Output { path: dest.clone(), source };
    let mut zip = zip::ZipWriter::new(std::fs::File::create(&part.files()[0]).map_err(io_err)?);
    let options =
        zip::write::SimpleFileOptions::default().compression_method(zip::CompressionMethod::Stored).large_file(true);
    for f in &files {
        if listener.is_cancelled() {
            return Err(Error::Cancelled);
        }
        let entry = f.file_name().map(|n| format!("{name}/{}", n.to_string_lossy())).unwrap_or_default();
        zip.start_file(entry, options).map_err(zip_err)?;
        let mut src = std::fs::File::open(f).map_err(io_err)?;
        // In 4 MiB pieces, the cancel asked between them: a stem of a
        // 3-hour song (gigabytes at 24 bits) to a slow disk took half a
        // minute with the cancel unheard.
        let mut piece = vec![0u8; 4 << 20];
        loop {
            let n = match std::io::Read::read(&mut src, &mut piece) {
                Ok(0) => break,
                Ok(n) => n,
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
                Err(e) => return Err(io_err(e)),
            };
            std::io::Write::write_all(&mut zip, &piece[..n]).map_err(io_err)?;
            copied += n as u64;
            let done = (copied as f64 / total.max(1) as f64).min(1.0);
            listener.event(&Event::Exporting { fraction: Some(ZIP_STEMS_SHARE + (1.0 - ZIP_STEMS_SHARE) * done) });
            if listener.is_cancelled() {
                return Err(Error::Cancelled);
            }
        }
    }
    zip.finish().map_err(zip_err)?.sync_all().map_err(io_err)?;
    let placed = place(part.files(), &[dest], &req.dest_dir, &[name], "zip", req.on_clash)?;
    part.disarm();
    Ok(placed.into_iter().next().unwrap_or_default())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_mp3_bitrate_its_rate_lacks_is_written_at_a_rate_that_has_it() {
        let mp3 = |kbps| OutputFormat::Mp3 { kbps };
        assert_eq!(mp3_rate_for_bitrate(mp3(320), 22_050), 44_100);
        assert_eq!(mp3_rate_for_bitrate(mp3(160), 22_050), 22_050);
        assert_eq!(mp3_rate_for_bitrate(mp3(192), 24_000), 48_000);
        assert_eq!(mp3_rate_for_bitrate(mp3(128), 8_000), 16_000);
        assert_eq!(mp3_rate_for_bitrate(mp3(320), 8_000), 32_000);
        assert_eq!(mp3_rate_for_bitrate(mp3(320), 12_000), 48_000);
        assert_eq!(mp3_rate_for_bitrate(mp3(320), 44_100), 44_100);
        let wav = OutputFormat::Wav { depth: stemroom_engine::audio::encode::WavDepth::Int16 };
        assert_eq!(mp3_rate_for_bitrate(wav, 22_050), 22_050);
    }

    #[test]
    fn two_stems_never_share_a_file_name() {
        let stem = |name: &str| StemFile { stem: name.into(), path: format!("/nowhere/{}.wav", name.len()) };
        let plan = |stems: &[&str]| {
            plan_outputs(&ExportRequest {
                sources: ["a/b", "a_b", "Vocals", "vocals", "drums"].iter().map(|s| stem(s)).collect(),
                what: ExportWhat::Stems { stems: stems.iter().map(|s| s.to_string()).collect() },
                region: None,
                format: OutputFormat::Wav { depth: stemroom_engine::audio::encode::WavDepth::Int16 },
                rate: ExportRate::Original,
                dest_dir: PathBuf::from("/nowhere"),
                title: "Song".into(),
                on_clash: OnClash::Replace,
                tags: Tags::default(),
                stems_format: None,
            })
        };
        assert!(matches!(plan(&["a/b", "a_b"]), Err(Error::InvalidOptions(m)) if m.contains("one file name")));
        assert!(matches!(plan(&["Vocals", "vocals"]), Err(Error::InvalidOptions(_))));
        let (idx, names) = plan(&["drums", "a/b"]).unwrap();
        assert_eq!((idx, names), (vec![4, 0], vec!["Song - drums".to_string(), "Song - a_b".to_string()]));
    }
}

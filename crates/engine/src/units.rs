//! Units and identifiers every layer shares: which device a caller asks for
//! and which execution provider really runs the network.
//!
//! Sample rates are `u32` in Hz and lengths are frames (one sample per
//! channel) throughout the engine; they are plain integers, named at every
//! use (`sample_rate`, `frames`).

use serde::Serialize;

/// Which device the caller asks for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, serde::Deserialize, Default)]
#[cfg_attr(feature = "specta", derive(specta::Type))]
#[serde(rename_all = "lowercase")]
pub enum Device {
    /// CUDA when it works, else CPU.
    #[default]
    Auto,
    /// CPU only.
    Cpu,
    /// CUDA only; an error if unavailable.
    Cuda,
}

impl Device {
    /// The lowercase name used in JSON and on command lines (what
    /// [`std::str::FromStr`] reads back).
    pub fn as_str(self) -> &'static str {
        match self {
            Device::Auto => "auto",
            Device::Cpu => "cpu",
            Device::Cuda => "cuda",
        }
    }
}

impl std::str::FromStr for Device {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s.to_ascii_lowercase().as_str() {
            "auto" => Ok(Device::Auto),
            "cpu" => Ok(Device::Cpu),
            "cuda" | "gpu" => Ok(Device::Cuda),
            other => Err(format!("unknown device '{other}' (expected auto, cpu or cuda)")),
        }
    }
}

/// The execution provider that actually runs the network.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, serde::Deserialize)]
#[cfg_attr(feature = "specta", derive(specta::Type))]
#[serde(rename_all = "lowercase")]
pub enum Provider {
    /// ONNX Runtime's default CPU provider.
    Cpu,
    /// NVIDIA CUDA.
    Cuda,
}

impl std::fmt::Display for Provider {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Provider::Cpu => "cpu",
            Provider::Cuda => "cuda",
        })
    }
}

/// A quality/speed preset: which model, how many shifts and how much
/// overlap a separation uses, as one choice (explicit options override each
/// part). Figures measured for each are in the README ("Presets").
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, serde::Deserialize, Default)]
#[cfg_attr(feature = "specta", derive(specta::Type))]
#[serde(rename_all = "lowercase")]
pub enum Preset {
    /// The int8 htdemucs derivative (on the CPU), no shift, 10 % overlap:
    /// fewer network runs than `balanced` (9 against 11 on a minute of
    /// music), each cheaper only on CPUs with fast int8 dot products;
    /// within 0.15 dB SDR of `balanced` per stem on the test music.
    Fast,
    /// htdemucs (fp32), one shift, 25 % overlap: the `demucs` CLI's defaults.
    #[default]
    Balanced,
    /// htdemucs (fp32), two shifts, 50 % overlap: about 3x the network runs
    /// of `balanced` (`demucs` documents shifts and overlap as the
    /// quality-for-time knobs, `demucs/separate.py`).
    Best,
}

/// The `fast` preset's model on the CPU (the manifest's int8 derivative).
pub const FAST_CPU_MODEL: &str = "htdemucs_int8";

/// What a [`Preset`] sets.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct PresetSettings {
    /// Model id in the manifest.
    pub model: &'static str,
    /// Random shifts (`--shifts`).
    pub shifts: usize,
    /// Overlap between segments in `[0, 1)` (`--overlap`).
    pub overlap: f32,
}

impl Preset {
    /// Every preset, fastest first.
    pub const ALL: [Preset; 3] = [Preset::Fast, Preset::Balanced, Preset::Best];

    /// The lowercase name used in JSON and on command lines.
    pub fn as_str(self) -> &'static str {
        match self {
            Preset::Fast => "fast",
            Preset::Balanced => "balanced",
            Preset::Best => "best",
        }
    }

    /// The model, shifts and overlap of this preset on `device` (the device
    /// the run will use: resolve `auto` first with
    /// [`crate::runtime::gpu::likely_device`]). `fast` uses the int8 model
    /// on the CPU; on CUDA it keeps the fp32 model (the int8 model's
    /// integer kernels are the CPU's; an fp16 model for GPUs is not made
    /// yet) and only runs fewer segments.
    pub fn settings(self, device: Device) -> PresetSettings {
        match self {
            Preset::Fast => PresetSettings {
                model: if device == Device::Cuda { "htdemucs" } else { FAST_CPU_MODEL },
                shifts: 0,
                overlap: 0.1,
            },
            Preset::Balanced => PresetSettings { model: "htdemucs", shifts: 1, overlap: 0.25 },
            Preset::Best => PresetSettings { model: "htdemucs", shifts: 2, overlap: 0.5 },
        }
    }
}

impl std::str::FromStr for Preset {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Preset::ALL
            .into_iter()
            .find(|p| p.as_str().eq_ignore_ascii_case(s))
            .ok_or_else(|| format!("unknown preset '{s}' (expected fast, balanced or best)"))
    }
}

#[cfg(test)]
mod preset_tests {
    use super::*;

    #[test]
    fn presets_parse_and_set_model_shifts_and_overlap() {
        for p in Preset::ALL {
            assert_eq!(p.as_str().parse::<Preset>(), Ok(p));
            assert_eq!(serde_json::to_string(&p).unwrap(), format!("\"{}\"", p.as_str()));
        }
        assert_eq!("BEST".parse::<Preset>(), Ok(Preset::Best));
        assert!("fastest".parse::<Preset>().unwrap_err().contains("fast, balanced or best"));
        assert_eq!(Preset::default(), Preset::Balanced);
        let fast = Preset::Fast.settings(Device::Cpu);
        assert_eq!((fast.model, fast.shifts, fast.overlap), (FAST_CPU_MODEL, 0, 0.1));
        assert_eq!(Preset::Fast.settings(Device::Cuda).model, "htdemucs", "no int8 kernels on the GPU");
        let b = Preset::Balanced.settings(Device::Cpu);
        assert_eq!((b.model, b.shifts, b.overlap), ("htdemucs", 1, 0.25));
        let best = Preset::Best.settings(Device::Cuda);
        assert_eq!((best.model, best.shifts, best.overlap), ("htdemucs", 2, 0.5));
        // Every preset's model is in the manifest.
        let m = crate::model::Manifest::builtin().unwrap();
        for p in Preset::ALL {
            for d in [Device::Cpu, Device::Cuda] {
                assert!(m.get(p.settings(d).model).is_ok(), "{p:?} on {d:?}");
            }
        }
    }
}

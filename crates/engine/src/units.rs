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

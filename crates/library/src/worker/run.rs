//! The steps of one job: the model, a link's download, the separation into
//! a working folder, publishing the song.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Instant;

use stemroom_engine::audio::encode::ClipMode;
use stemroom_engine::job::{self, JobRequest, OtherMethod, OutputRate, Separator};
use stemroom_engine::runtime::RuntimeOptions;
use stemroom_engine::separate::SeparateOptions;
use stemroom_engine::units::{Device, Provider};

use stemroom_engine::progress::Throttle;

use super::progress::{JobListener, JobProgress, Track, PROGRESS_INTERVAL};
use super::{Inner, PartialGuard};
use crate::link;
use crate::queue::{Job, JobOptions, JobSource, JobState, StemFile};
use crate::song::{self, SongMetadata};
use crate::Error;

/// The job's checkpoint folder inside its working folder (see
/// `stemroom_engine::job::checkpoint`): kept when a killed or crashed job
/// runs again, so it resumes instead of starting over.
pub(super) const CHECKPOINT_DIR: &str = ".checkpoint";

/// Remove everything in `dir` but the entry `keep` (links removed as links).
/// A `dir` that is itself a link (or not a folder) is removed, not
/// followed: emptying where it leads would delete someone's files.
pub(super) fn clear_except(dir: &Path, keep: &str) {
    if std::fs::symlink_metadata(dir).is_ok_and(|m| !m.is_dir()) {
        let _ = std::fs::remove_file(dir);
        return;
    }
    let Ok(entries) = std::fs::read_dir(dir) else { return };
    for e in entries.flatten() {
        if e.file_name() == keep && e.file_type().is_ok_and(|t| t.is_dir()) {
            continue;
        }
        let p = e.path();
        let _ = if e.file_type().is_ok_and(|t| t.is_dir()) {
            std::fs::remove_dir_all(&p)
        } else {
            std::fs::remove_file(&p)
        };
    }
}

impl Inner {
    /// The model `model` open on `device`, kept for the jobs after; made
    /// first when it is a derived model not made yet (stopped by `cancel`:
    /// the job's cancel, or a stop of the worker). Jobs asking for it at
    /// once wait for one load. Before another model is opened, the loaded
    /// ones no running job uses are let go: a queue whose jobs ask for
    /// several (a preset or device changed while jobs waited) held each of
    /// them until it emptied. A job asking for the CPU or CUDA takes the
    /// model `Device::Auto` opened on that provider (Automatic on a machine
    /// without a GPU is the CPU: a job with CPU chosen loaded a second copy,
    /// 2.5 GB with its arena). The other way round cannot be known before
    /// opening: `Auto` after `Cpu` opens its own.
    pub(super) fn separator(&self, model: &str, device: Device, cancel: &AtomicBool) -> Result<Arc<Separator>, Error> {
        let key = (model.to_string(), device);
        let same = |s: &Arc<Separator>| match device {
            Device::Cpu => s.provider() == Provider::Cpu && !s.fell_back(),
            Device::Cuda => s.provider() == Provider::Cuda,
            Device::Auto => false,
        };
        let loaded = || {
            let loaded = self.separators.lock().unwrap_or_else(|p| p.into_inner());
            loaded
                .get(&key)
                .cloned()
                .or_else(|| loaded.get(&(model.to_string(), Device::Auto)).filter(|s| same(s)).cloned())
        };
        if let Some(s) = loaded() {
            return Ok(s);
        }
        // The fast preset's int8 model is made here the first time
        // (minutes on a new machine; jobs that need it at once wait on its
        // file lock, each able to be cancelled meanwhile).
        let cancelled = || cancel.load(Ordering::SeqCst) || self.stop.load(Ordering::SeqCst);
        stemroom_engine::model::make_if_missing(model, self.config.model_dir.as_deref(), &cancelled).map_err(|e| {
            match e {
                stemroom_engine::model::ModelError::Cancelled => Error::Cancelled,
                e => stemroom_engine::Error::from(e).into(),
            }
        })?;
        // Held only while the model file is opened (seconds).
        let gate = self.opening.lock().unwrap_or_else(|p| p.into_inner()).entry(key.clone()).or_default().clone();
        let _opening = gate.lock().unwrap_or_else(|p| p.into_inner());
        // Opened by the job that held the gate.
        if let Some(s) = loaded() {
            return Ok(s);
        }
        if cancelled() {
            return Err(Error::Cancelled);
        }
        let runtime =
            RuntimeOptions { library: self.config.runtime_library.clone(), device, threads: self.config.threads };
        // (A running job holds a clone of its model: the map's is the only
        // one of a model no job uses.)
        let idle: Vec<_> = {
            let mut loaded = self.separators.lock().unwrap_or_else(|p| p.into_inner());
            let idle = loaded.iter().filter(|(_, s)| Arc::strong_count(s) == 1).map(|(k, _)| k.clone()).collect();
            for k in &idle {
                loaded.remove(k);
            }
            idle
        };
        if !idle.is_empty() {
            tracing::info!("released {} loaded model(s) no running job uses before opening {model}", idle.len());
        }
        let sep = Arc::new(Separator::open(model, self.config.model_dir.as_deref(), &runtime)?);
        self.opened.fetch_add(1, Ordering::SeqCst);
        self.separators.lock().unwrap_or_else(|p| p.into_inner()).insert(key, sep.clone());
        Ok(sep)
    }

    /// Fetch a link's audio into `work/.download` with progress; the file
    /// is removed with the work folder.
    fn download(&self, job: &Job, url: &str, work: &Path, cancel: &Arc<AtomicBool>) -> Result<PathBuf, Error> {
        // (Not the defaults when they cannot be read: another yt-dlp and
        // other limits than the ones chosen.)
        let settings =
            self.queue.settings().map_err(|e| Error::Internal(format!("the settings cannot be read: {e}")))?;
        let explicit = settings.ytdlp_path.clone().map(PathBuf::from);
        let yt = link::YtDlp::locate(explicit.as_deref())?;
        let starting = JobState::Downloading { percent: None };
        let _ = self.queue.set_running_state(job.id, &starting);
        self.listener.progress(&JobProgress::compute(job.id, &starting, 0.0, None));
        let mut throttle = Throttle::new(PROGRESS_INTERVAL);
        let result = link::download(
            &yt,
            url,
            &work.join(".download"),
            link::DEFAULT_STALL_TIMEOUT,
            &settings.download_limits(),
            &mut |p| {
                let done = p.percent.is_some_and(|x| x >= 100.0);
                if throttle.ready(Instant::now(), done) {
                    let state = JobState::Downloading { percent: p.percent };
                    let mut progress = JobProgress::compute(job.id, &state, 0.0, None);
                    progress.eta_seconds = p.eta_seconds;
                    progress.bytes_per_second = p.bytes_per_second;
                    self.listener.progress(&progress);
                }
            },
            &|| cancel.load(Ordering::SeqCst),
        );
        match result {
            Ok(f) => Ok(f),
            Err(link::LinkError::Cancelled) => Err(Error::Cancelled),
            Err(e) => Err(e.into()),
        }
    }

    pub(super) fn separate(&self, job: &Job, cancel: &Arc<AtomicBool>) -> Result<(String, Vec<StemFile>), Error> {
        let started = Instant::now();
        // Settings that cannot be read fail the job (retry it), rather than
        // read as "no folder chosen": the song would go to the default
        // library, and the chosen folder's checks and checkpoint be missed.
        let chosen = self.chosen_library().map_err(|e| {
            Error::Internal(format!(
                "the settings cannot be read ({e}): choose the library folder again in Settings (saving them \
                 writes them anew), then retry"
            ))
        })?;
        let library = chosen.clone().unwrap_or_else(|| self.config.default_library.clone());
        if library.to_str().is_none() {
            // The queue records where songs are as text: a path that is
            // not Unicode would be recorded as one that does not exist.
            return Err(Error::Output {
                path: library.clone(),
                source: std::io::Error::new(
                    std::io::ErrorKind::InvalidInput,
                    "the library folder's path is not valid Unicode: choose another folder in Settings",
                ),
            });
        }
        if chosen.is_some() && !library.is_dir() {
            // A folder chosen in Settings (it was there then) that is gone
            // now is most likely a drive or network folder not mounted:
            // made again here, the songs would go to the local disk, hidden
            // under the mount point once the drive is back.
            return Err(Error::Output {
                path: library.clone(),
                source: std::io::Error::new(
                    std::io::ErrorKind::NotFound,
                    "the library folder cannot be reached (is its drive or network folder connected?): connect it and retry, or choose another folder in Settings",
                ),
            });
        }
        std::fs::create_dir_all(&library).map_err(|source| Error::Output { path: library.clone(), source })?;
        let work = song::partial_dir(&library, self.queue.work_tag(), job.id);
        if let Some((dest, meta)) = song::find_published(&library, job) {
            // Filed before the stop that put it back in the queue: record
            // it instead of separating it into a second copy.
            tracing::info!("job {} was filed before the last stop: {}", job.id, dest.display());
            let _ = std::fs::remove_dir_all(&work);
            return Ok(self.recorded(job, &meta, &dest));
        }
        // Separated before the stop, or before a filing that failed, not
        // filed yet: file it now (a failure to file keeps the folder, as
        // below: a retry comes back here).
        if let Some(meta) = song::song_of_job(&work, job) {
            // (Made on another device, or under another preset's name with
            // the same model, passes, overlap and format: the same song.)
            if same_separation(&meta.options, &job.options) {
                tracing::info!("job {} was separated before: filing it", job.id);
            } else {
                // A retry after its filing failed takes the settings of
                // now: the whole separation (minutes of work; for a link
                // its download is gone) is filed as the person asked for
                // it, and the job takes the options it was made with.
                tracing::info!("job {} was separated before with other options than now: filing it as made", job.id);
                if let Err(e) = self.queue.set_options(job.id, &meta.options) {
                    tracing::warn!("job {}: its options stay those of now: {e}", job.id);
                }
            }
            let filed = self.file_or_keep(job, &library, &work, meta, cancel)?;
            return self.unless_cancelled(job, cancel, filed, &work);
        }
        // What an interrupted run of this job left: only its checkpoint
        // stays (the separation resumes from it if it still fits).
        clear_except(&work, CHECKPOINT_DIR);
        std::fs::create_dir_all(&work).map_err(|source| Error::Output { path: work.clone(), source })?;
        let asked = || self.cancel_asked(job.id, cancel);
        let mut partial = PartialGuard { dir: Some(work.clone()), cancelled: &asked };
        let input = match &job.source {
            JobSource::File { path } => PathBuf::from(path),
            JobSource::Url { url } => self.download(job, url, &work, cancel)?,
        };
        let sep = self.separator(&job.options.model, job.options.device, cancel)?;
        let provider = sep.provider().to_string();
        let _ = self.queue.set_details(job.id, None, Some(&provider));

        let request = JobRequest {
            input,
            out_dir: work.clone(),
            filename: "{stem}.{ext}".into(),
            format: job.options.format,
            clip: ClipMode::Rescale,
            two_stems: job.options.two_stems.clone(),
            other_method: OtherMethod::Add,
            output_rate: OutputRate::Input,
            separate: SeparateOptions {
                shifts: job.options.shifts as usize,
                overlap: job.options.overlap,
                segment_frames: None,
                seed: u64::from(job.id),
            },
            scratch_dir: Some(work.clone()),
            checkpoint: Some(job::Checkpointing {
                dir: work.join(CHECKPOINT_DIR),
                every: self.config.checkpoint_every.unwrap_or(job::checkpoint::DEFAULT_EVERY),
                // Until `stemroom.json` is written: a stop or a failure
                // before that resumes from it (filing removes it).
                keep_when_done: true,
            }),
        };
        let listener = JobListener {
            inner: self,
            job,
            provider: &provider,
            cancel,
            track: Mutex::new(Track {
                throttle: Throttle::new(PROGRESS_INTERVAL),
                state: JobState::Decoding,
                machine_sps: self.queue.segment_seconds(&job.options.model, &provider).ok().flatten(),
                separating_since: None,
                duration: None,
                fell_back: false,
                resumed: 0,
            }),
        };
        let result = job::separate_file(&sep, &request, &listener);
        if sep.fell_back() {
            // The GPU failed during this job: the next job opens the model
            // afresh and tries the GPU again (it falls back again if it must).
            // Whatever key it was loaded under (a CUDA job runs the model
            // Automatic opened on the GPU).
            self.separators.lock().unwrap_or_else(|p| p.into_inner()).retain(|_, s| !Arc::ptr_eq(s, &sep));
        }
        let out = result?;
        if self.cancel_asked(job.id, cancel) {
            return Err(Error::Cancelled);
        }
        let duration = listener.track.lock().unwrap_or_else(|p| p.into_inner()).duration;
        let rel: Vec<StemFile> = out
            .stems
            .iter()
            .map(|(stem, p)| StemFile {
                stem: stem.clone(),
                path: p.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default(),
            })
            .collect();
        // Written at once, before the tempo and key are looked for (a few
        // seconds): from here on the stems are the song, found again by a
        // retry or the next start. Until it is written the engine's
        // checkpoint stays (`keep_when_done`): a stop, or this write
        // failing (a folder gone read-only), resumes from it instead of
        // separating the whole song again.
        let meta =
            SongMetadata::new(job, rel, out.seconds, Some(provider.clone()), duration.or(Some(out.audio_seconds)))
                .of_database(self.queue.work_tag());
        meta.write(&work).map_err(|source| Error::Output { path: work.clone(), source })?;
        // From here the separated stems stay in the working folder when
        // filing fails (a full disk, a library folder gone read-only): the
        // job fails saying so, and a retry files them without separating
        // again (the branch above), or removing the job removes them.
        partial.dir = None;
        let filed = self.file_or_keep(job, &library, &work, meta, cancel)?;
        let filed = self.unless_cancelled(job, cancel, filed, &work)?;
        tracing::info!("job {} done in {:.1} s: {}", job.id, started.elapsed().as_secs_f64(), filed.0);
        Ok(filed)
    }

    /// `filed`, unless the job was cancelled while it was filed (the tempo
    /// and key take seconds): a cancel keeps nothing, and a retry
    /// separates again instead of finding this song.
    ///
    /// The song goes back to its working folder `work` (one rename) before
    /// it is deleted: a quit or a crash while the files are deleted leaves
    /// a working folder, cleaned at the next start, not half a song in the
    /// library that nothing refers to.
    fn unless_cancelled(
        &self,
        job: &Job,
        cancel: &AtomicBool,
        filed: (String, Vec<StemFile>),
        work: &Path,
    ) -> Result<(String, Vec<StemFile>), Error> {
        if self.cancel_asked(job.id, cancel) {
            let doomed = match std::fs::rename(&filed.0, work) {
                Ok(()) => work.to_path_buf(),
                Err(e) => {
                    tracing::warn!("job {}: {} deleted where it is ({e})", job.id, filed.0);
                    // Its metadata first: the rest is no song.
                    let _ = std::fs::remove_file(Path::new(&filed.0).join(song::METADATA_FILE));
                    PathBuf::from(&filed.0)
                }
            };
            let _ = std::fs::remove_dir_all(doomed);
            return Err(Error::Cancelled);
        }
        Ok(filed)
    }

    /// [`Inner::file`], keeping `work` when filing fails, unless the job's
    /// cancel was asked meanwhile (a cancel keeps nothing).
    fn file_or_keep(
        &self,
        job: &Job,
        library: &Path,
        work: &Path,
        meta: SongMetadata,
        cancel: &AtomicBool,
    ) -> Result<(String, Vec<StemFile>), Error> {
        self.file(job, library, work, meta).map_err(|e| {
            if self.cancel_asked(job.id, cancel) {
                let _ = std::fs::remove_dir_all(work);
                Error::Cancelled
            } else {
                e
            }
        })
    }

    /// File the song separated into `work` (its `meta` written there):
    /// tempo and key when not known yet, then into the library. Returns
    /// its folder and stems.
    fn file(
        &self,
        job: &Job,
        library: &Path,
        work: &Path,
        mut meta: SongMetadata,
    ) -> Result<(String, Vec<StemFile>), Error> {
        // The downloaded original of a link and the (now empty) checkpoint
        // folder are not part of the song folder.
        let _ = std::fs::remove_dir_all(work.join(".download"));
        let _ = std::fs::remove_dir_all(work.join(CHECKPOINT_DIR));
        if meta.analysis.is_none() {
            meta.analyse_in(work);
            // Not a failure: the `stemroom.json` written before is whole
            // (its song files without the tempo and key, which the queue
            // records), and failing here would say the stems could not be
            // written, which they were.
            if let Err(e) = meta.write(work) {
                tracing::warn!("job {}: its tempo and key are not in {}: {e}", job.id, work.display());
            }
        }
        let dest = song::publish_song(library, work, &job.title)
            .map_err(|source| Error::NotFiled { path: library.to_path_buf(), source })?;
        Ok(self.recorded(job, &meta, &dest))
    }

    /// Tell the queue what the song filed in `dest` knows (tempo and key,
    /// length, provider); its folder and stems, as a finished job records
    /// them.
    fn recorded(&self, job: &Job, meta: &SongMetadata, dest: &Path) -> (String, Vec<StemFile>) {
        if let Some(a) = &meta.analysis {
            let _ = self.queue.set_analysis(job.id, a);
        }
        let _ = self.queue.set_details(job.id, meta.duration_seconds, meta.provider.as_deref());
        (dest.to_string_lossy().into_owned(), meta.stems_in(dest))
    }
}

/// Whether stems made with options `a` are what options `b` would make:
/// the same model, passes, overlap, two-stem choice and format (the device
/// changes only float rounding; a preset is only the name of a choice).
fn same_separation(a: &JobOptions, b: &JobOptions) -> bool {
    let plain = |o: &JobOptions| JobOptions { device: Device::default(), preset: None, ..o.clone() };
    plain(a) == plain(b)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A working folder that is a link is removed as a link: where it
    /// leads is left whole.
    #[test]
    fn a_linked_working_folder_is_not_emptied() {
        let dir = tempfile::tempdir().unwrap();
        let theirs = dir.path().join("home");
        std::fs::create_dir(&theirs).unwrap();
        std::fs::write(theirs.join("letter.txt"), b"keep").unwrap();
        let work = dir.path().join(".stemroom-partial-ab-7");
        std::os::unix::fs::symlink(&theirs, &work).unwrap();
        clear_except(&work, "checkpoint");
        assert!(theirs.join("letter.txt").is_file(), "their file stays");
        assert!(std::fs::symlink_metadata(&work).is_err(), "the link goes");
        // A real folder is emptied but for what it keeps.
        std::fs::create_dir_all(work.join("checkpoint")).unwrap();
        std::fs::write(work.join("drums.wav"), b"x").unwrap();
        clear_except(&work, "checkpoint");
        assert!(work.join("checkpoint").is_dir() && !work.join("drums.wav").exists());
    }

    /// Unfiled stems are filed as they are when only the device or the
    /// preset's name differs; another model, passes, overlap or format
    /// separates again.
    #[test]
    fn stems_made_on_another_device_are_the_same_separation() {
        let made = crate::queue::Settings::default().job_options();
        let other_device = JobOptions { device: Device::Cuda, preset: None, ..made.clone() };
        assert!(same_separation(&made, &other_device));
        assert!(!same_separation(&made, &JobOptions { shifts: made.shifts + 1, ..made.clone() }));
        assert!(!same_separation(&made, &JobOptions { model: "htdemucs_ft".into(), ..made.clone() }));
        assert!(!same_separation(&made, &JobOptions { two_stems: Some("vocals".into()), ..made.clone() }));
    }
}

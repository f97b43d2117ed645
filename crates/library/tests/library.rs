//! Integration tests of the library, in one binary:
//! - queue: persistence across restarts and crashes, concurrent enqueue, and
//!   the worker running the real model (done, cancelled within a segment).
//! - links: the real yt-dlp against a loopback HTTP server.
//!
//! Tests that keep both cores busy take turns (`stemroom_testkit::cpu_turn`).

mod common;

// ---------------------------------------------------------------------------
// queue: persistence across restarts and crashes, concurrent enqueue, and the
// worker running the real model (done, cancelled within a segment).

mod queue {
    use std::io::BufRead;
    use std::path::{Path, PathBuf};
    use std::process::{Command, Stdio};
    use std::sync::{Arc, Mutex};
    use std::time::Instant;

    use stemroom_library::lock::InstanceLock;
    use stemroom_library::queue::{Job, JobSource, JobState, Queue, QueueError, Settings};
    use stemroom_library::worker::{JobProgress, WorkerListener};

    use crate::common::wait_for;

    fn file(p: &str) -> JobSource {
        JobSource::File { path: p.into() }
    }

    #[test]
    fn restart_puts_running_jobs_back_in_order() {
        let dir = tempfile::tempdir().expect("tempdir");
        let db = dir.path().join("queue.sqlite");
        let opts = Settings::default().job_options();
        {
            let q = Queue::open(&db).expect("open");
            for name in ["a", "b", "c"] {
                q.enqueue(&file(name), name, &opts).expect("enqueue");
            }
            let a = q.claim_next().expect("claim").expect("job");
            q.set_running_state(a.id, &JobState::Separating { segment: 2, total: 9 }).expect("update");
            let b = q.claim_next().expect("claim").expect("job");
            q.finish(b.id, &JobState::Done, Some("/lib/b"), &[]).expect("finish");
            // Dropped without finishing `a`: as if the app died.
        }
        // Opening alone changes nothing: another process may be running `a`.
        let q = Queue::open(&db).expect("reopen");
        assert!(q.get(1).expect("a").state.is_running(), "a second opener leaves the running job alone");
        // The folder's owner (its instance lock) puts it back.
        let elsewhere = tempfile::tempdir().expect("tempdir");
        let other = InstanceLock::acquire(elsewhere.path()).expect("lock").expect("free");
        assert!(matches!(q.recover(&other), Err(QueueError::NotOwner { .. })), "another folder's lock");
        let owner = InstanceLock::acquire(dir.path()).expect("lock").expect("free");
        assert_eq!(q.recover(&owner).expect("recover"), 1);
        let queued: Vec<(String, JobState)> =
            q.queue().expect("queue").into_iter().map(|j| (j.title, j.state)).collect();
        assert_eq!(queued, [("a".to_string(), JobState::Queued), ("c".to_string(), JobState::Queued)]);
        assert_eq!(q.library("").expect("library").len(), 1);
        assert_eq!(q.claim_next().expect("claim").expect("job").title, "a", "the interrupted job runs first again");
    }

    /// A job row that a newer Stemroom wrote (a state this one does not
    /// know) or that was damaged neither hides the queue and library nor
    /// blocks the worker: it reads with stand-ins, is marked failed when
    /// its turn comes, and can be removed.
    #[test]
    fn an_unreadable_job_row_fails_alone_and_can_be_removed() {
        let dir = tempfile::tempdir().expect("tempdir");
        let db = dir.path().join("queue.sqlite");
        let opts = Settings::default().job_options();
        let q = Queue::open(&db).expect("open");
        let ids: Vec<u32> =
            ["a", "b", "c", "d"].iter().map(|t| q.enqueue(&file(t), t, &opts).expect("enqueue").id).collect();
        let d = q.claim_next().expect("claim").expect("a").id;
        assert_eq!(d, ids[0]);
        q.finish(d, &JobState::Done, Some("/lib/a"), &[]).expect("finish");
        {
            let raw = rusqlite::Connection::open(&db).expect("sqlite");
            let set = |column: &str, value: &str, id: u32| {
                raw.execute(&format!("UPDATE jobs SET {column} = ?1 WHERE id = ?2"), rusqlite::params![value, id])
                    .expect("update");
            };
            set("options", r#"{"model":"htdemucs","device":"quantum"}"#, ids[0]); // done, options unknown
            set("source", r#"{"kind":"ftp","host":"x"}"#, ids[1]); // queued, source unknown
            set("state", r#"{"state":"teleporting"}"#, ids[2]); // queued, state unknown
        }
        let queue = q.queue().expect("the queue still reads");
        assert_eq!(queue.iter().map(|j| j.id).collect::<Vec<_>>(), ids[1..]);
        assert!(matches!(&queue[1].state, JobState::Failed { message, .. } if message.contains("cannot be read")));
        let library = q.library("").expect("the library still reads");
        assert_eq!(library.iter().map(|j| (j.id, j.state.clone())).collect::<Vec<_>>(), [(ids[0], JobState::Done)]);
        // The worker skips both, marking them failed, and runs d.
        assert_eq!(q.claim_next().expect("claim").expect("d").id, ids[3]);
        for id in &ids[1..3] {
            match q.get(*id).expect("job").state {
                JobState::Failed { message, .. } => assert!(message.contains("Remove it"), "{message}"),
                s => panic!("job {id}: {s:?}"),
            }
        }
        assert!(q.claim_next().expect("claim").is_none());
        // A retry fails it again the same way; removing it works.
        q.retry(ids[1]).expect("retry");
        assert!(q.claim_next().expect("claim").is_none(), "still unreadable");
        for id in &ids[..3] {
            q.remove(*id).expect("remove");
        }
        assert_eq!(q.queue().expect("queue").iter().map(|j| j.id).collect::<Vec<_>>(), [ids[3]]);
    }

    /// A job whose process dies while running it (a song that crashes the
    /// app, or runs the computer out of memory) fails at the third start
    /// instead of crashing every start; a quit that puts it back does not
    /// count, and a retry starts the count again.
    #[test]
    fn a_job_that_kills_every_start_fails_after_three() {
        use stemroom_library::queue::MAX_INTERRUPTIONS;
        let dir = tempfile::tempdir().expect("tempdir");
        let db = dir.path().join("queue.sqlite");
        let opts = Settings::default().job_options();
        let q = Queue::open(&db).expect("open");
        let job = q.enqueue(&file("/crash.wav"), "crash", &opts).expect("enqueue");
        let owner = InstanceLock::acquire(dir.path()).expect("lock").expect("free");
        // A quit in between (the app puts its running job back): not a crash.
        assert_eq!(q.claim_next().expect("claim").expect("job").id, job.id);
        q.requeue(job.id).expect("requeue");
        for start in 1..MAX_INTERRUPTIONS {
            assert_eq!(q.claim_next().expect("claim").expect("job").id, job.id);
            assert_eq!(q.recover(&owner).expect("recover"), 1, "start {start} resumes it");
        }
        assert_eq!(q.claim_next().expect("claim").expect("job").id, job.id);
        assert_eq!(q.recover(&owner).expect("recover"), 0, "the last start gives up");
        match q.get(job.id).expect("job").state {
            JobState::Failed { message, .. } => assert!(message.contains("Retry"), "{message}"),
            s => panic!("{s:?}"),
        }
        assert!(q.claim_next().expect("claim").is_none(), "nothing left to run");
        // A retry runs it again, with three more chances.
        q.retry(job.id).expect("retry");
        assert_eq!(q.claim_next().expect("claim").expect("job").id, job.id);
        assert_eq!(q.recover(&owner).expect("recover"), 1);
        // A run that separates further than any before gets somewhere:
        // the crashes before it were not in a row.
        assert_eq!(MAX_INTERRUPTIONS, 3, "the runs below count to 3");
        let separating = |segment| JobState::Separating { segment, total: 9 };
        let run = |segments: &[u32]| {
            assert_eq!(q.claim_next().expect("claim").expect("job").id, job.id);
            for &s in segments {
                q.set_running_state(job.id, &separating(s)).expect("state");
            }
            q.recover(&owner).expect("recover")
        };
        assert_eq!(run(&[0, 1, 2, 3, 4]), 1, "1: got to segment 4");
        // Runs that resume from a checkpoint before it and die there again
        // (or later, while encoding) separate segments but get no further:
        // they count.
        assert_eq!(run(&[3, 4]), 1, "2 in a row");
        assert_eq!(run(&[5]), 1, "got further: 1 again");
        assert_eq!(run(&[4, 5]), 1, "2 in a row");
        assert_eq!(run(&[4, 5]), 0, "3 in a row: it gives up");
        assert!(matches!(q.get(job.id).expect("job").state, JobState::Failed { .. }));
        // A retry forgets how far the runs got: its first segment is progress.
        q.retry(job.id).expect("retry");
        assert_eq!(run(&[]), 1, "1");
        assert_eq!(run(&[0]), 1, "got further: 1 again");
        assert_eq!(run(&[]), 1, "2 in a row");
        assert_eq!(run(&[]), 0, "3 in a row: it gives up");
    }

    fn crash_writer() -> PathBuf {
        stemroom_testkit::example_bin("queue_crash_writer")
    }

    #[test]
    fn sigkill_during_updates_loses_and_duplicates_nothing() {
        let dir = tempfile::tempdir().expect("tempdir");
        let db = dir.path().join("queue.sqlite");
        let mut committed: Vec<u32> = Vec::new();
        for round in 0..5 {
            let mut child = Command::new(crash_writer()).arg(&db).stdout(Stdio::piped()).spawn().expect("spawn writer");
            let mut lines = std::io::BufReader::new(child.stdout.take().expect("stdout")).lines();
            // Let it commit a varying number of jobs, then kill it mid-stream.
            for _ in 0..(20 + round * 17) {
                let line = lines.next().expect("writer output").expect("line");
                committed.push(line.trim().parse().expect("id"));
            }
            child.kill().expect("SIGKILL");
            child.wait().expect("reap");
            // Ids it printed before dying but after we stopped reading count too.
            for line in lines.map_while(Result::ok) {
                committed.push(line.trim().parse().expect("id"));
            }
            let q = Queue::open(&db).expect("reopen after crash");
            let owner = InstanceLock::acquire(dir.path()).expect("lock").expect("the writer is dead");
            q.recover(&owner).expect("recover");
            let ok: String = rusqlite::Connection::open(&db)
                .expect("sqlite")
                .query_row("PRAGMA integrity_check", [], |r| r.get(0))
                .expect("integrity_check");
            assert_eq!(ok, "ok");
            let all: Vec<Job> = q.queue().expect("queue").into_iter().chain(q.library("").expect("library")).collect();
            let mut ids: Vec<u32> = all.iter().map(|j| j.id).collect();
            ids.sort_unstable();
            let n = ids.len();
            ids.dedup();
            assert_eq!(ids.len(), n, "no duplicated job");
            for id in &committed {
                assert!(ids.contains(id), "job {id} was committed before the crash and must survive");
            }
            assert!(all.iter().all(|j| !j.state.is_running()), "running jobs were recovered to queued");
        }
    }

    #[test]
    fn concurrent_enqueue_from_many_connections() {
        let dir = tempfile::tempdir().expect("tempdir");
        let db = dir.path().join("queue.sqlite");
        drop(Queue::open(&db).expect("create"));
        let threads: Vec<_> = (0..4)
            .map(|t| {
                let db = db.clone();
                std::thread::spawn(move || {
                    let q = Queue::open(&db).expect("open");
                    let opts = Settings::default().job_options();
                    (0..25)
                        .map(|i| q.enqueue(&file(&format!("{t}-{i}")), "x", &opts).expect("enqueue").id)
                        .collect::<Vec<_>>()
                })
            })
            .collect();
        let mut ids: Vec<u32> = threads.into_iter().flat_map(|t| t.join().expect("thread")).collect();
        ids.sort_unstable();
        ids.dedup();
        assert_eq!(ids.len(), 100);
        let q = Queue::open(&db).expect("open");
        let jobs = q.queue().expect("queue");
        assert_eq!(jobs.len(), 100);
        let mut positions: Vec<i32> = jobs.iter().map(|j| j.position).collect();
        positions.dedup();
        assert_eq!(positions.len(), 100, "every job has its own queue position");
        // Claims from two connections never hand out the same job.
        let q2 = Queue::open(&db).expect("open");
        let mut claimed: Vec<u32> = Vec::new();
        while let (Some(a), Some(b)) = (q.claim_next().expect("claim"), q2.claim_next().expect("claim")) {
            claimed.push(a.id);
            claimed.push(b.id);
        }
        let n = claimed.len();
        claimed.sort_unstable();
        claimed.dedup();
        assert_eq!(claimed.len(), n);
    }

    #[derive(Default)]
    pub(super) struct Recorder {
        changes: Mutex<Vec<Job>>,
        progress: Mutex<Vec<(Instant, JobProgress)>>,
    }
    impl WorkerListener for Recorder {
        fn job_changed(&self, job: &Job) {
            self.changes.lock().expect("lock").push(job.clone());
        }
        fn progress(&self, p: &JobProgress) {
            self.progress.lock().expect("lock").push((Instant::now(), p.clone()));
        }
    }

    #[test]
    fn worker_separates_into_the_library_and_cancels_within_a_segment() {
        let _turn = stemroom_testkit::cpu_turn();
        let mix = stemroom_testkit::falcon_mixture();
        let lq = crate::common::LibraryQueue::new();
        let (q, library) = (&lq.queue, &lq.library);
        let long = lq.dir.path().join("long.wav");
        stemroom_testkit::ffmpeg(&[
            "-stream_loop",
            "3",
            "-i",
            mix.to_str().expect("utf8"),
            long.to_str().expect("utf8"),
        ]);
        let rec = Arc::new(Recorder::default());
        let worker = lq.worker(rec.clone());
        let opts = q.settings().expect("settings").job_options();
        let song = q.enqueue(&file(mix.to_str().expect("utf8")), "Falcon 69", &opts).expect("enqueue");
        let long_job = q.enqueue(&file(long.to_str().expect("utf8")), "Long", &opts).expect("enqueue");
        worker.start(1);

        let done = wait_for(q, song.id, 300, |j| j.state.is_finished());
        assert_eq!(done.state, JobState::Done, "{:?}", done.state);
        let out = PathBuf::from(done.output_dir.clone().expect("output dir"));
        assert_eq!(out, library.join("Falcon 69"));
        let names: Vec<&str> = done.stems.iter().map(|s| s.stem.as_str()).collect();
        assert_eq!(names, ["drums", "bass", "other", "vocals"]);
        for s in &done.stems {
            assert!(Path::new(&s.path).is_file(), "{}", s.path);
        }
        assert!(out.join("stemroom.json").is_file());
        assert!(done.duration_seconds.expect("duration") > 5.0);
        assert_eq!(done.provider.as_deref(), Some("cpu"));
        // Tempo and key of the separated stems, in the library and in
        // stemroom.json (the true stems read 117.6 BPM, G♯ minor: the
        // model's drums stem gives the same tempo within 2 BPM).
        let analysis = done.analysis.clone().expect("tempo and key");
        eprintln!("Falcon 69 (separated): {analysis:?}");
        let bpm = analysis.bpm.expect("a tempo");
        assert!((bpm - 117.6).abs() <= 2.0, "{analysis:?}");
        assert!(analysis.key.is_some(), "{analysis:?}");
        let meta: serde_json::Value =
            serde_json::from_slice(&std::fs::read(out.join("stemroom.json")).expect("read")).expect("json");
        assert_eq!(meta["analysis"]["bpm"].as_f64().map(|b| b as f32), Some(bpm), "{meta}");

        // The long job: cancel once it is separating; it must stop within one
        // segment's time and leave nothing in the library.
        let running = wait_for(q, long_job.id, 120, |j| matches!(j.state, JobState::Separating { .. }));
        let sps = q.segment_seconds("htdemucs", "cpu").expect("db").expect("measured on the first song");
        let asked = Instant::now();
        worker.cancel(running.id).expect("cancel");
        let cancelled = wait_for(q, long_job.id, 120, |j| j.state.is_finished());
        let took = asked.elapsed().as_secs_f64();
        assert_eq!(cancelled.state, JobState::Cancelled);
        assert!(took < 2.0 * sps + 2.0, "cancel took {took:.1} s with {sps:.1} s per segment");
        let entries: Vec<_> = std::fs::read_dir(library).expect("ls").flatten().map(|e| e.file_name()).collect();
        assert_eq!(entries, [std::ffi::OsString::from("Falcon 69")], "no partial folder left");

        // Progress reached the listener, throttled and with an ETA from measured times.
        let progress = rec.progress.lock().expect("lock");
        let seps: Vec<&JobProgress> = progress
            .iter()
            .map(|(_, p)| p)
            .filter(|p| p.id == long_job.id && matches!(p.state, JobState::Separating { .. }))
            .collect();
        assert!(!seps.is_empty());
        assert!(seps.iter().all(|p| p.eta_seconds.is_some_and(|e| e >= 0.0) && p.percent > 0.0 && p.percent < 100.0));
        let changes = rec.changes.lock().expect("lock");
        assert!(changes.iter().any(|j| j.id == song.id && j.state == JobState::Done));
        worker.shutdown();
    }

    /// Wait until `worker`'s threads have ended, as the process's exit ends
    /// them after `Worker::leave` (one left running would share the next
    /// worker's working folder).
    fn gone(worker: &stemroom_library::worker::Worker) {
        let t0 = Instant::now();
        while worker.threads() > 0 {
            assert!(t0.elapsed().as_secs() < 120, "the worker's thread did not end");
            std::thread::sleep(std::time::Duration::from_millis(50));
        }
    }

    /// The app quitting mid-job (`Worker::leave`, at its exit): the job is
    /// back in the queue with its checkpoint, not a crash the next start
    /// counts; a job whose cancel it had not reached yet is cancelled, not
    /// resumed at the next start.
    #[test]
    fn leaving_puts_running_jobs_back_and_keeps_a_cancel() {
        let _turn = stemroom_testkit::cpu_turn();
        let mix = stemroom_testkit::falcon_mixture();
        let lq = crate::common::LibraryQueue::new();
        let q = &lq.queue;
        let long = lq.dir.path().join("long.wav");
        stemroom_testkit::ffmpeg(&[
            "-stream_loop",
            "3",
            "-i",
            mix.to_str().expect("utf8"),
            long.to_str().expect("utf8"),
        ]);
        let opts = q.settings().expect("settings").job_options();
        let job = q.enqueue(&file(long.to_str().expect("utf8")), "Long", &opts).expect("enqueue");
        let owner = InstanceLock::acquire(lq.dir.path()).expect("lock").expect("free");

        let first = lq.worker(Arc::new(Recorder::default()));
        first.start(1);
        wait_for(q, job.id, 120, |j| matches!(j.state, JobState::Separating { .. }));
        first.leave();
        assert_eq!(q.get(job.id).expect("job").state, JobState::Queued);
        first.shutdown(); // (the exit would end its thread)
        gone(&first);
        assert_eq!(q.recover(&owner).expect("recover"), 0, "nothing left running");

        // Next start: it runs again; a cancel asked just before the quit holds.
        let second = lq.worker(Arc::new(Recorder::default()));
        second.start(1);
        wait_for(q, job.id, 120, |j| matches!(j.state, JobState::Separating { .. }));
        second.cancel(job.id).expect("cancel");
        second.leave();
        assert_eq!(q.get(job.id).expect("job").state, JobState::Cancelled);
        second.shutdown();
        gone(&second);
        assert_eq!(q.recover(&owner).expect("recover"), 0);
        assert!(
            !stemroom_library::song::partial_dir(&lq.library, q.work_tag(), job.id).exists(),
            "its checkpoint is gone"
        );

        // A server's graceful stop (`Worker::suspend`) puts a running job
        // back too, but not one whose cancel it had not reached yet.
        q.retry(job.id).expect("retry");
        let third = lq.worker(Arc::new(Recorder::default()));
        third.start(1);
        wait_for(q, job.id, 120, |j| matches!(j.state, JobState::Separating { .. }));
        third.cancel(job.id).expect("cancel");
        third.suspend();
        wait_for(q, job.id, 60, |j| !j.state.is_running());
        assert_eq!(q.get(job.id).expect("job").state, JobState::Cancelled, "the cancel holds");
    }

    /// A database that stays locked longer than the worker's first tries
    /// (another process holding a write transaction for 35 s from the
    /// job's start): the job's end is recorded once it is free, instead of
    /// the job staying "running" until the next start.
    #[test]
    fn the_end_of_a_job_is_recorded_once_a_locked_database_is_free() {
        use stemroom_library::queue::StemFile;
        use stemroom_library::song::{self, SongMetadata};

        /// Locks the database from another connection when the job starts.
        struct Locker {
            db: PathBuf,
            held: Mutex<Option<std::thread::JoinHandle<()>>>,
            notices: Mutex<Vec<String>>,
        }
        impl WorkerListener for Locker {
            fn job_changed(&self, job: &Job) {
                let mut held = self.held.lock().expect("lock");
                if !job.state.is_running() || held.is_some() {
                    return;
                }
                let (tx, rx) = std::sync::mpsc::channel();
                let db = self.db.clone();
                *held = Some(std::thread::spawn(move || {
                    let c = rusqlite::Connection::open(db).expect("open");
                    c.execute_batch("BEGIN EXCLUSIVE").expect("lock");
                    tx.send(()).expect("send");
                    std::thread::sleep(std::time::Duration::from_secs(35));
                    c.execute_batch("COMMIT").expect("unlock");
                }));
                rx.recv().expect("locked");
            }
            fn progress(&self, p: &JobProgress) {
                self.notices.lock().expect("lock").extend(p.notice.clone());
            }
        }

        let lq = crate::common::LibraryQueue::new();
        let (q, library) = (&lq.queue, &lq.library);
        let opts = q.settings().expect("settings").job_options();
        let job = q.enqueue(&file("/gone/a.wav"), "Locked", &opts).expect("enqueue");
        // Filed already: the quick way to a finished run without the model.
        let work = song::partial_dir(library, q.work_tag(), job.id);
        std::fs::create_dir_all(&work).expect("mkdir");
        std::fs::write(work.join("vocals.wav"), b"RIFF").expect("write");
        let stems = vec![StemFile { stem: "vocals".into(), path: "vocals.wav".into() }];
        SongMetadata::new(&job, stems, 1.0, None, None).write(&work).expect("metadata");
        song::publish_song(library, &work, &job.title).expect("publish");

        let locker = Arc::new(Locker {
            db: lq.dir.path().join("queue.sqlite"),
            held: Mutex::new(None),
            notices: Mutex::new(Vec::new()),
        });
        let worker = lq.worker(locker.clone());
        worker.start(1);
        let deadline = Instant::now() + std::time::Duration::from_secs(20);
        while locker.held.lock().expect("lock").is_none() {
            assert!(Instant::now() < deadline, "the job never started");
            std::thread::sleep(std::time::Duration::from_millis(50));
        }
        let held = locker.held.lock().expect("lock").take().expect("locker");
        held.join().expect("the lock was held and let go");
        let done = wait_for(q, job.id, 30, |j| j.state.is_finished());
        assert_eq!(done.state, JobState::Done, "{:?}", done.state);
        worker.shutdown();
        // While it waited, the window was told why (once).
        let notices = locker.notices.lock().expect("lock");
        assert_eq!(notices.len(), 1, "{notices:?}");
        assert!(
            notices[0].starts_with("The song is separated, but the queue cannot record it (database is locked)"),
            "{notices:?}"
        );
    }

    /// A job whose song was filed but not recorded as done (the process
    /// stopped in between: a quit at that instant, a crash, a database that
    /// stayed busy) is recorded from the song folder at its next run, not
    /// separated into a second copy; another job of the same title is not
    /// taken for it.
    #[test]
    fn a_job_filed_before_a_stop_is_recorded_not_separated_again() {
        use stemroom_library::queue::StemFile;
        use stemroom_library::song::{self, SongMetadata};
        let lq = crate::common::LibraryQueue::new();
        let (q, library) = (&lq.queue, &lq.library);
        let opts = q.settings().expect("settings").job_options();
        // Inputs that do not exist: separating either job would fail.
        let job = q.enqueue(&file("/gone/a.wav"), "Song", &opts).expect("enqueue");
        let twin = q.enqueue(&file("/gone/b.wav"), "Song", &opts).expect("enqueue");
        // A folder of another song that happens to share the title comes first.
        std::fs::create_dir_all(library.join("Song")).expect("mkdir");
        // Job 1 ran to its publish, then the process stopped.
        let work = song::partial_dir(library, q.work_tag(), job.id);
        std::fs::create_dir_all(&work).expect("mkdir");
        let mut stems = Vec::new();
        for stem in ["drums", "bass", "other", "vocals"] {
            std::fs::write(work.join(format!("{stem}.wav")), b"RIFF").expect("write");
            stems.push(StemFile { stem: stem.into(), path: format!("{stem}.wav") });
        }
        SongMetadata::new(&job, stems, 1.0, Some("cpu".into()), Some(3.0)).write(&work).expect("metadata");
        let filed = song::publish_song(library, &work, &job.title).expect("publish");
        assert_eq!(filed, library.join("Song (2)"));

        let worker = lq.worker(Arc::new(Recorder::default()));
        worker.start(1);
        let done = wait_for(q, job.id, 60, |j| j.state.is_finished());
        assert_eq!(done.state, JobState::Done, "{:?}", done.state);
        assert_eq!(done.output_dir.as_deref(), Some(filed.to_str().expect("utf8")));
        assert_eq!(done.stems.len(), 4);
        assert!(done.stems.iter().all(|s| Path::new(&s.path).is_file()), "{:?}", done.stems);
        assert_eq!(done.duration_seconds, Some(3.0));
        let other = wait_for(q, twin.id, 60, |j| j.state.is_finished());
        assert!(matches!(other.state, JobState::Failed { .. }), "the twin ran (and failed): {:?}", other.state);
        worker.shutdown();
        let mut entries: Vec<_> = std::fs::read_dir(library).expect("ls").flatten().map(|e| e.file_name()).collect();
        entries.sort();
        assert_eq!(entries, ["Song", "Song (2)"], "no second copy, no partial folder");
    }
}

// ---------------------------------------------------------------------------
// links: the real yt-dlp against a loopback HTTP server started here (direct
// audio, a page with an <audio> element, 404, no media, a stalling server,
// a slow one cancelled mid-download, a hostile title), and the real model
// separating what was downloaded.

mod links {
    use std::path::{Path, PathBuf};
    use std::sync::Arc;
    use std::time::{Duration, Instant};

    use stemroom_library::link::{self, LinkError, YtDlp};

    use stemroom_testkit::site::Server;

    fn ytdlp() -> YtDlp {
        YtDlp::locate(None).expect("yt-dlp (scripts/setup.sh installs it)")
    }

    fn fetch(url: &str, dir: &Path, stall: Duration, cancel_after: Option<Duration>) -> Result<PathBuf, LinkError> {
        let t0 = Instant::now();
        let mut progress = Vec::new();
        let limits = link::DownloadLimits::default();
        let r = link::download(&ytdlp(), url, dir, stall, &limits, &mut |p| progress.push(p.clone()), &|| {
            cancel_after.is_some_and(|c| t0.elapsed() >= c)
        });
        if r.is_ok() {
            assert!(progress.iter().any(|p| p.percent == Some(100.0)), "progress reached 100 %: {progress:?}");
        }
        r
    }

    fn empty(dir: &Path) -> bool {
        std::fs::read_dir(dir).map(|mut d| d.next().is_none()).unwrap_or(true)
    }

    /// Processes whose command line mentions `needle` (Linux /proc).
    fn processes_with(needle: &str) -> usize {
        std::fs::read_dir("/proc")
            .map(|d| {
                d.flatten()
                    .filter(|e| {
                        std::fs::read(e.path().join("cmdline"))
                            .map(|c| String::from_utf8_lossy(&c).contains(needle))
                            .unwrap_or(false)
                    })
                    .count()
            })
            .unwrap_or(0)
    }

    /// The install a musician gets from the app (and `stemroom links
    /// install`): the pinned wheels from PyPI, no pip or venv, into a fresh
    /// folder; the launcher runs with the system's python3, yt-dlp sees deno
    /// and the EJS solvers, and it downloads a song from a loopback site.
    /// The wheels are then reused from a folder (offline install), and a
    /// damaged wheel is refused without touching the installed copy.
    #[test]
    fn ytdlp_installs_from_pinned_wheels_without_pip_and_works() {
        use stemroom_library::link::install::{self, ToolsInstall};
        let tmp = tempfile::tempdir().expect("tmp");
        let opts = ToolsInstall {
            dest: tmp.path().join("tools/yt-dlp"),
            download_dir: tmp.path().join("dl"),
            from: None,
            python: "python3".into(),
            wheels: install::ytdlp_wheels(),
        };
        assert_eq!(opts.sizes().0, opts.sizes().1, "nothing downloaded yet");
        let mut events = Vec::new();
        let launcher = install::install(&opts, &mut |e| events.push(e.clone()), &|| false).expect("install");
        assert_eq!(launcher, opts.dest.join("bin/yt-dlp"));
        assert!(matches!(events.last(), Some(stemroom_engine::runtime::install::InstallEvent::Installed { .. })));
        assert!(!opts.dest.join("bin/pip").exists() && !opts.dest.join("pyvenv.cfg").exists(), "no venv");
        let y = YtDlp::locate(Some(&launcher)).expect("the installed yt-dlp runs");
        assert_eq!(y.version, link::PINNED_VERSION);
        // Started from a folder holding a module of the same name as one of
        // Python's (a user's Downloads), the launcher runs Python's own.
        let downloads = tmp.path().join("Downloads");
        std::fs::create_dir_all(&downloads).expect("mkdir");
        let marker = tmp.path().join("hijacked");
        std::fs::write(
            downloads.join("json.py"),
            format!("open({:?}, 'w').write('x')\n", marker.to_str().expect("utf8")),
        )
        .expect("write");
        let run = std::process::Command::new(&launcher).arg("--version").current_dir(&downloads).output().expect("run");
        assert!(run.status.success(), "{}", String::from_utf8_lossy(&run.stderr));
        assert_eq!(String::from_utf8_lossy(&run.stdout).trim(), link::PINNED_VERSION);
        assert!(!marker.exists(), "a json.py in the current folder ran");
        let rt = y.js_runtime.as_ref().expect("deno beside it");
        assert_eq!(rt.path, opts.dest.join("bin/deno"));
        let report = y.report().expect("yt-dlp -v");
        assert_eq!(report.ejs.as_deref(), Some("0.8.0"), "{report:?}");
        let server = Server::start();
        let dl = tmp.path().join("song");
        let limits = link::DownloadLimits::default();
        let file =
            link::download(&y, &server.url("/song.wav"), &dl, Duration::from_secs(30), &limits, &mut |_| {}, &|| false)
                .expect("download with the installed yt-dlp");
        assert!(file.is_file());

        // Offline from the kept wheels (moved out of the download folder).
        let wheels = tmp.path().join("wheels");
        std::fs::create_dir_all(&wheels).expect("mkdir");
        for w in &opts.wheels {
            let path = opts.download_dir.join(w.file_name());
            assert!(!path.exists(), "installed wheels are removed from the download folder");
            let mut agent_copy = std::process::Command::new("curl");
            agent_copy.args(["-sfo"]).arg(wheels.join(w.file_name())).arg(&w.url);
            assert!(agent_copy.status().expect("curl").success(), "{}", w.url);
        }
        let offline =
            ToolsInstall { dest: tmp.path().join("offline/yt-dlp"), from: Some(wheels.clone()), ..opts.clone() };
        assert_eq!(offline.sizes().0, 0, "every wheel is in the folder");
        install::install(&offline, &mut |_| {}, &|| false).expect("offline install");
        let yt = wheels.join(offline.wheels[0].file_name());
        let mut bytes = std::fs::read(&yt).expect("read");
        let mid = bytes.len() / 2;
        bytes[mid] ^= 0x55;
        std::fs::write(&yt, bytes).expect("write");
        let err = install::install(&offline, &mut |_| {}, &|| false).expect_err("damaged wheel");
        assert!(err.to_string().contains("is not the file Stemroom expects"), "{err}");
        assert!(YtDlp::locate(Some(&offline.dest.join("bin/yt-dlp"))).is_ok(), "the installed copy stays");
    }

    /// YouTube needs yt-dlp's EJS challenge solvers and a JavaScript runtime
    /// (yt-dlp 2025.11.12+, wiki "EJS"). YouTube cannot be reached from
    /// here, so check what yt-dlp itself reports with the installed tools:
    /// `yt-dlp -v` lists deno among its JS runtimes and yt_dlp_ejs among its
    /// libraries, and Settings shows both versions.
    #[test]
    fn ytdlp_runs_with_deno_and_the_ejs_solvers() {
        let y = ytdlp();
        let rt = y.js_runtime.as_ref().expect("deno beside yt-dlp (scripts/setup.sh installs it)");
        assert!(rt.path.is_absolute() && rt.path.is_file(), "{}", rt.path.display());
        let report = y.report().expect("yt-dlp -v");
        assert_eq!(report.js_runtimes.as_deref(), Some(format!("deno-{}", rt.version).as_str()), "{report:?}");
        assert_eq!(report.ejs.as_deref(), Some("0.8.0"), "{report:?}");
        let status = link::status(None);
        assert_eq!(status.js_runtime, Some(format!("deno {}", rt.version)));
        assert_eq!(status.ejs.as_deref(), Some("yt-dlp-ejs 0.8.0"));
        assert_eq!(status.problem, None);
        // Every run carries the runtime explicitly.
        assert_eq!(
            y.js_runtime_args(),
            vec![std::ffi::OsString::from("--js-runtimes"), format!("deno:{}", rt.path.display()).into()]
        );
    }

    /// A YouTube-like page whose best audio is Opus in WebM: the link job
    /// downloads the WebM and separates it, and the stems are as good as
    /// the WAV input's (SDR against the true stems within 0.5 dB).
    #[test]
    fn a_webm_opus_link_separates_as_well_as_the_wav() {
        let _turn = stemroom_testkit::cpu_turn();
        use stemroom_library::intake;
        use stemroom_library::queue::JobState;
        let server = Server::start();
        let lq = crate::common::LibraryQueue::new();
        let r = intake::add_paths(&lq.queue, &[PathBuf::from(server.url("/watch.html"))]).expect("add");
        assert_eq!(r.added.len(), 1, "{r:?}");
        let worker = lq.worker(Arc::new(super::queue::Recorder::default()));
        worker.start(1);
        let done = crate::common::wait_for(&lq.queue, r.added[0].id, 300, |j| j.state.is_finished());
        worker.shutdown();
        assert_eq!(done.state, JobState::Done, "{:?}", done.state);

        // The same separation of the WAV, for comparison.
        let dir = tempfile::tempdir().expect("tempdir");
        let sep = stemroom_testkit::open_separator();
        let wav = stemroom_testkit::separate_into(&sep, &stemroom_testkit::falcon_mixture(), dir.path());
        let testdata = stemroom_testkit::falcon_mixture().parent().expect("testdata").to_path_buf();
        for stem in ["drums", "bass", "other", "vocals"] {
            let (truth, _) = stemroom_testkit::read_wav(&testdata.join(format!("{stem}.wav")));
            let from_wav = wav.stems.iter().find(|(s, _)| s == stem).expect("stem");
            let (wav_est, _) = stemroom_testkit::read_wav(&from_wav.1);
            let from_link = done.stems.iter().find(|s| s.stem == stem).expect("stem");
            let (link_est, rate) = stemroom_testkit::read_wav(Path::new(&from_link.path));
            assert_eq!(rate, 48_000, "written at the WebM's rate");
            let link_est = stemroom_testkit::resample_planar(&link_est, rate, 44_100);
            let (a, b) = (stemroom_testkit::sdr(&truth, &wav_est, 1), stemroom_testkit::sdr(&truth, &link_est, 2048));
            eprintln!("{stem}: SDR {a:.2} dB from the WAV, {b:.2} dB from the WebM/Opus link");
            assert!((a - b).abs() <= 0.5, "{stem}: {a:.2} vs {b:.2} dB");
        }
    }

    #[test]
    fn the_pinned_ytdlp_is_found() {
        let y = ytdlp();
        assert_eq!(y.version, link::PINNED_VERSION, "{}", y.path.display());
        let missing = YtDlp::locate(Some(Path::new("/nonexistent/yt-dlp")));
        assert!(matches!(missing, Err(LinkError::Missing(_))), "{missing:?}");
    }

    #[test]
    fn direct_audio_and_audio_pages_download_and_separate() {
        let _turn = stemroom_testkit::cpu_turn();
        let server = Server::start();
        let y = ytdlp();
        // Metadata first: the page's title before any download.
        let info = link::probe(&y, &server.url("/page.html"), 10).expect("probe page");
        // The generic extractor numbers the media it finds on a page.
        assert!(info.title.starts_with("Falcon 69 (live page)"), "{}", info.title);
        assert!(!info.is_playlist);
        let direct = link::probe(&y, &server.url("/song.wav"), 10).expect("probe direct");
        assert_eq!(direct.title, "song");

        let sep = stemroom_testkit::open_separator();
        for (path, what) in [("/song.wav", "direct audio"), ("/page.html", "a page with <audio>")] {
            let dir = tempfile::tempdir().expect("tempdir");
            let file = fetch(&server.url(path), &dir.path().join("dl"), Duration::from_secs(30), None)
                .unwrap_or_else(|e| panic!("{what}: {e}"));
            let original = std::fs::read(stemroom_testkit::falcon_mixture()).expect("read");
            assert_eq!(std::fs::read(&file).expect("read"), original, "{what}: the bytes served");
            let out = dir.path().join("out");
            stemroom_testkit::separate_into(&sep, &file, &out);
            for stem in ["drums", "bass", "other", "vocals"] {
                let p = out.join(format!("audio/{stem}.wav"));
                assert!(p.is_file(), "{what}: {} missing", p.display());
            }
        }
    }

    /// A library folder with a `%` in its name is no template field; a file
    /// over the size limit is refused before it lands.
    #[test]
    fn percent_folders_download_and_oversized_files_are_refused() {
        let server = Server::start();
        let dir = tempfile::tempdir().expect("tempdir");
        let dl = dir.path().join("100% Hits %(title)s").join("dl");
        let file = fetch(&server.url("/song.wav"), &dl, Duration::from_secs(30), None).expect("download");
        assert_eq!(file.parent(), Some(dl.as_path()), "{}", file.display());
        let small = link::DownloadLimits { max_bytes: 100_000, ..Default::default() };
        let dl2 = dir.path().join("small");
        let e = link::download(
            &ytdlp(),
            &server.url("/song.wav"),
            &dl2,
            Duration::from_secs(30),
            &small,
            &mut |_| {},
            &|| false,
        )
        .expect_err("too large");
        assert!(matches!(&e, LinkError::Refused(m) if m.contains("larger than")), "{e:?}");
        assert!(empty(&dl2), "nothing left of a refused download");
    }

    /// HLS, as SoundCloud, Vimeo and live sites serve audio: a whole
    /// stream downloads and decodes to the song's length. One whose
    /// segment is lost fails saying so: yt-dlp skips such a fragment by
    /// default and exits 0, which separated a song with a 2 s hole
    /// without a word.
    #[test]
    fn an_hls_stream_with_a_lost_segment_fails_instead_of_leaving_a_gap() {
        let server = Server::start();
        let dir = tempfile::tempdir().expect("tempdir");
        let whole = fetch(&server.url("/hls/index.m3u8"), &dir.path().join("whole"), Duration::from_secs(30), None)
            .expect("the whole stream");
        // (Interleaved stereo, whatever the file's channels.)
        let seconds = |p: &Path| {
            let (samples, rate, _) = stemroom_testkit::decode_all(p);
            samples.len() as f64 / 2.0 / f64::from(rate)
        };
        let (got, want) = (seconds(&whole), seconds(&stemroom_testkit::falcon_mixture()));
        assert!((got - want).abs() < 0.1, "{got:.3} s downloaded of {want:.3} s");

        let gap = dir.path().join("gap");
        let e = fetch(&server.url("/hls-gap/index.m3u8"), &gap, Duration::from_secs(30), None)
            .expect_err("a lost segment fails the download");
        assert!(matches!(&e, LinkError::Network(m) if m.contains("fragment")), "{e:?}");
        assert!(empty(&gap), "nothing left of it");
    }

    /// A download folder whose name is not UTF-8 (Latin-1 "café" from an
    /// old disk): the file is found all the same.
    #[test]
    fn a_folder_named_in_another_encoding_gets_its_file() {
        use std::os::unix::ffi::OsStrExt;
        let server = Server::start();
        let dir = tempfile::tempdir().expect("tempdir");
        let dl = dir.path().join(std::ffi::OsStr::from_bytes(b"caf\xe9"));
        let file = fetch(&server.url("/song.wav"), &dl, Duration::from_secs(30), None).expect("downloaded");
        assert_eq!(file, dl.join("audio.wav"));
        assert_eq!(
            std::fs::read(&file).expect("read"),
            std::fs::read(stemroom_testkit::falcon_mixture()).expect("read")
        );
    }

    #[test]
    fn failures_are_specific_and_leave_nothing() {
        let server = Server::start();
        let y = ytdlp();
        let dir = tempfile::tempdir().expect("tempdir");
        let dl = dir.path().join("dl");

        let e = fetch(&server.url("/missing.wav"), &dl, Duration::from_secs(30), None).expect_err("404");
        assert!(matches!(e, LinkError::Unavailable(_)), "404: {e:?}");
        assert!(empty(&dl));
        let e = link::probe(&y, &server.url("/missing.wav"), 10).expect_err("404 probe");
        assert!(matches!(e, LinkError::Unavailable(_)), "404 probe: {e:?}");

        let e = fetch(&server.url("/nomedia.html"), &dl, Duration::from_secs(30), None).expect_err("no media");
        assert!(matches!(e, LinkError::UnsupportedSite(_) | LinkError::NoMedia(_)), "no media: {e:?}");
        assert_eq!(e.code(), stemroom_engine::ErrorCode::Download);
        assert!(empty(&dl));

        // Nobody listens on port 9 (discard) on loopback here.
        let e = fetch("http://127.0.0.1:9/song.wav", &dl, Duration::from_secs(30), None).expect_err("refused");
        assert!(matches!(e, LinkError::Network(_)), "refused: {e:?}");

        let e = fetch("-o/tmp/x", &dl, Duration::from_secs(30), None).expect_err("option-like");
        assert!(matches!(e, LinkError::NotAUrl(_)), "{e:?}");
        let e = link::probe(&y, "--exec=touch /tmp/pwned", 10).expect_err("option-like");
        assert!(matches!(e, LinkError::NotAUrl(_)), "{e:?}");
    }

    #[test]
    fn a_stalled_download_times_out_and_a_cancel_stops_the_process_tree() {
        let server = Server::start();
        let dir = tempfile::tempdir().expect("tempdir");
        let dl = dir.path().join("dl");
        let t0 = Instant::now();
        let e = fetch(&server.url("/stall.wav"), &dl, Duration::from_secs(3), None).expect_err("stall");
        assert!(matches!(e, LinkError::Stalled(3)), "{e:?}");
        assert!(t0.elapsed() < Duration::from_secs(20), "gave up in {:?}", t0.elapsed());
        assert!(empty(&dl), "nothing left after a stall");
        assert_eq!(processes_with("/stall.wav"), 0, "yt-dlp is gone after a stall");

        let t0 = Instant::now();
        let e = fetch(&server.url("/slow.wav"), &dl, Duration::from_secs(30), Some(Duration::from_secs(2)))
            .expect_err("cancel");
        assert!(matches!(e, LinkError::Cancelled), "{e:?}");
        assert!(t0.elapsed() < Duration::from_secs(5), "cancel took {:?}", t0.elapsed());
        assert!(empty(&dl), "nothing left after a cancel");
        assert_eq!(processes_with("/slow.wav"), 0, "yt-dlp is gone after a cancel");
    }

    /// yt-dlp's own choice among a YouTube video's formats (its info JSON
    /// as `--dump-json` gives it, with the itags of a 360° video): stereo
    /// Opus, not the 5.1 AAC (327) or ambisonic Opus (338) that rank first
    /// by channels, nor stereo AAC.
    #[test]
    fn the_format_choice_takes_stereo_opus_over_surround() {
        let dir = tempfile::tempdir().expect("tempdir");
        let format = |id: &str, acodec: &str, ext: &str, abr: f64, channels: u32| {
            serde_json::json!({
                "format_id": id, "url": format!("http://127.0.0.1:9/{id}"), "ext": ext, "protocol": "https",
                "acodec": acodec, "vcodec": "none", "abr": abr, "tbr": abr, "audio_channels": channels,
                "asr": 48000,
            })
        };
        let info = serde_json::json!({
            "id": "abcdefghijk", "title": "360", "extractor": "youtube", "extractor_key": "Youtube",
            "webpage_url": "https://www.youtube.com/watch?v=abcdefghijk", "_type": "video",
            "formats": [
                format("140", "mp4a.40.2", "m4a", 129.5, 2),
                format("251", "opus", "webm", 135.2, 2),
                format("327", "mp4a.40.2", "m4a", 384.0, 6),
                format("338", "opus", "webm", 480.0, 4),
            ],
        });
        let path = dir.path().join("info.json");
        std::fs::write(&path, info.to_string()).expect("write");
        let chosen = |f: &str| {
            let out = std::process::Command::new(&ytdlp().path)
                .args(["--ignore-config", "--no-plugin-dirs", "--load-info-json"])
                .arg(&path)
                .args(["-f", f, "--print", "format_id"])
                .output()
                .expect("yt-dlp");
            assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
            String::from_utf8_lossy(&out.stdout).trim().to_string()
        };
        // (Channels rank above bit rate: the 5.1 AAC.)
        assert_eq!(chosen("bestaudio"), "327", "yt-dlp's own first choice is a surround format");
        assert_eq!(chosen(link::FORMAT), "251");
    }

    /// Downloads that never end are stopped: an endless stream with no
    /// size (a radio station) at the byte limit or at the time limit, and a
    /// server that trickles bytes (yt-dlp keeps printing) as a stall.
    #[test]
    fn endless_streams_and_trickles_are_stopped() {
        let server = Server::start();
        let dir = tempfile::tempdir().expect("tempdir");
        let dl = dir.path().join("dl");
        let run = |url: &str, stall: u64, limits: link::DownloadLimits| {
            let t0 = Instant::now();
            let r = link::download(&ytdlp(), url, &dl, Duration::from_secs(stall), &limits, &mut |_| {}, &|| false);
            (r, t0.elapsed())
        };
        let radio = server.url("/radio.mp3");
        let (r, took) = run(&radio, 30, link::DownloadLimits { max_bytes: 2_000_000, max_seconds: 3 * 3600 });
        let e = r.expect_err("an endless stream");
        assert!(matches!(&e, LinkError::Refused(m) if m.contains("more than 2 MB")), "{e:?}");
        assert!(took < Duration::from_secs(20), "stopped in {took:?}");
        assert!(empty(&dl), "nothing left");
        assert_eq!(processes_with("/radio.mp3"), 0, "yt-dlp is gone");

        // Three times the longest song: a song just under the limit on a
        // connection slower than real time still comes.
        let (r, took) = run(&radio, 30, link::DownloadLimits { max_bytes: 1 << 30, max_seconds: 2 });
        let e = r.expect_err("an endless stream");
        assert!(matches!(&e, LinkError::Refused(m) if m.contains("three times the longest a song may last")), "{e:?}");
        assert!(took >= Duration::from_secs(6) && took < Duration::from_secs(12), "stopped in {took:?}");
        assert!(empty(&dl), "nothing left");

        let (r, took) = run(&server.url("/trickle.wav"), 3, link::DownloadLimits::default());
        let e = r.expect_err("a trickle");
        assert!(matches!(e, LinkError::Stalled(3)), "{e:?}");
        assert!(took < Duration::from_secs(20), "stopped in {took:?}");
        assert!(empty(&dl), "nothing left");
        assert_eq!(processes_with("/trickle.wav"), 0, "yt-dlp is gone");
    }

    #[test]
    fn links_are_queued_with_their_title_then_downloaded_and_separated() {
        let _turn = stemroom_testkit::cpu_turn();
        use stemroom_library::intake;
        use stemroom_library::queue::JobState;
        let server = Server::start();
        let lq = crate::common::LibraryQueue::new();
        let q = &lq.queue;
        // Metadata first: the title is there before anything is downloaded.
        let r = intake::add_paths(q, &[PathBuf::from(server.url("/page.html")), PathBuf::from("-rf")]).expect("add");
        assert_eq!(r.added.len(), 1, "{r:?}");
        let job = &r.added[0];
        assert!(job.title.starts_with("Falcon 69 (live page)"), "{}", job.title);
        assert_eq!(job.state, JobState::Queued);
        assert_eq!(r.rejected.len(), 1, "'-rf' is not a file: {r:?}");
        // A dead link is refused at once with the reason.
        let r = intake::add_paths(q, &[PathBuf::from(server.url("/missing.wav"))]).expect("add");
        assert!(r.added.is_empty() && r.rejected[0].reason.contains("unavailable"), "{r:?}");

        let worker = lq.worker(Arc::new(super::queue::Recorder::default()));
        worker.start(1);
        let t0 = Instant::now();
        let mut saw_download = false;
        let done = loop {
            let j = q.get(job.id).expect("get");
            saw_download |= matches!(j.state, JobState::Downloading { .. });
            if j.state.is_finished() || t0.elapsed() > Duration::from_secs(300) {
                break j;
            }
            std::thread::sleep(Duration::from_millis(20));
        };
        assert_eq!(done.state, JobState::Done, "{:?}", done.state);
        assert!(saw_download, "the job went through the downloading state");
        let out = PathBuf::from(done.output_dir.expect("output dir"));
        assert_eq!(out.file_name().and_then(|n| n.to_str()), Some(job.title.as_str()));
        let mut names: Vec<String> = std::fs::read_dir(&out)
            .expect("ls")
            .flatten()
            .map(|e| e.file_name().to_string_lossy().into_owned())
            .collect();
        names.sort();
        assert_eq!(
            names,
            ["bass.wav", "drums.wav", "other.wav", "stemroom.json", "vocals.wav"],
            "no download left behind"
        );

        // The download limit is a setting: at 1 MB the 1.07 MB song is refused.
        let small = stemroom_library::queue::Settings { max_download_mb: 1, ..q.settings().expect("settings") };
        q.save_settings(&small).expect("save");
        let r = intake::add_paths(q, &[PathBuf::from(server.url("/song.wav"))]).expect("add");
        let id = r.added[0].id;
        let t0 = Instant::now();
        let refused = loop {
            let j = q.get(id).expect("get");
            if j.state.is_finished() || t0.elapsed() > Duration::from_secs(120) {
                break j;
            }
            std::thread::sleep(Duration::from_millis(20));
        };
        assert!(
            matches!(&refused.state, JobState::Failed { message, .. } if message.contains("larger than")),
            "{:?}",
            refused.state
        );
    }

    #[test]
    fn hostile_titles_become_safe_names() {
        let server = Server::start();
        let info = link::probe(&ytdlp(), &server.url("/evil.html"), 10).expect("probe");
        assert!(info.title.contains("../"), "{}", info.title);
        // As the queue shows it: no escape sequence, bounded like tags.
        assert!(!info.title.chars().any(char::is_control), "{:?}", info.title);
        assert_eq!(info.title.chars().count(), stemroom_library::intake::MAX_TAG_TITLE_CHARS, "{}", info.title);
        let name = stemroom_engine::names::visible_name(&info.title, "Untitled");
        assert!(!name.contains('/') && !name.contains('\\') && !name.contains(':'), "{name}");
        assert!(!name.starts_with('.'), "{name}");
        assert!(name.len() <= 255, "{} bytes", name.len());
        let dir = tempfile::tempdir().expect("tempdir");
        std::fs::write(dir.path().join(&name), b"x").expect("a valid file name");
        assert_eq!(std::fs::read_dir(dir.path()).expect("dir").count(), 1);
    }
}

// ---------------------------------------------------------------------------
// resume: a job killed with SIGKILL mid-separation resumes from its last
// checkpoint when the queue runs again, and ends with the stems an
// uninterrupted run writes.

mod resume {
    use std::io::{BufRead, BufReader};
    use std::path::{Path, PathBuf};
    use std::process::{Child, Command, Stdio};
    use std::time::{Duration, Instant};

    use stemroom_engine::audio::encode::{OutputFormat, WavDepth};
    use stemroom_library::queue::{JobSource, JobState, Queue, Settings};

    /// Seconds between checkpoints in this test (the app's default is 20).
    const EVERY: f64 = 5.0;

    /// A data folder with one queued job for `input` (32-bit float WAV
    /// stems, one shift; job id 1, so the same shift in every folder).
    fn data_dir(input: &Path) -> tempfile::TempDir {
        let dir = tempfile::tempdir().expect("tempdir");
        let q = Queue::open(&dir.path().join("queue.sqlite")).expect("queue");
        std::fs::create_dir_all(dir.path().join("library")).expect("library");
        let settings = Settings {
            shifts: 1,
            format: OutputFormat::Wav { depth: WavDepth::Float32 },
            library_dir: Some(dir.path().join("library").to_string_lossy().into()),
            ..Settings::default()
        };
        q.save_settings(&settings).expect("settings");
        let job = q
            .enqueue(
                &JobSource::File { path: input.to_string_lossy().into() },
                "Falcon 69 x10",
                &settings.job_options(),
            )
            .expect("enqueue");
        assert_eq!(job.id, 1);
        dir
    }

    fn run_queue(data: &Path) -> Child {
        Command::new(stemroom_testkit::example_bin("run_queue"))
            .arg(data)
            .arg(EVERY.to_string())
            .stdout(Stdio::piped())
            .spawn()
            .expect("run_queue")
    }

    /// `(t, segment, total)` of a progress line while separating.
    fn segment_of(line: &serde_json::Value) -> Option<(f64, u64, u64)> {
        let state = &line["progress"]["state"];
        if state["state"] != "separating" {
            return None;
        }
        Some((line["t"].as_f64()?, state["segment"].as_u64()?, state["total"].as_u64()?))
    }

    fn stems(data: &Path) -> Vec<(String, Vec<Vec<f64>>)> {
        let q = Queue::open(&data.join("queue.sqlite")).expect("queue");
        let job = q.get(1).expect("job");
        assert_eq!(job.state, JobState::Done, "{job:?}");
        let song = PathBuf::from(job.output_dir.as_deref().expect("song folder"));
        let mut names: Vec<String> =
            std::fs::read_dir(&song).expect("ls").flatten().map(|e| e.file_name().to_string_lossy().into()).collect();
        names.sort();
        assert_eq!(names, ["bass.wav", "drums.wav", "other.wav", "stemroom.json", "vocals.wav"], "nothing else");
        job.stems.iter().map(|s| (s.stem.clone(), stemroom_testkit::read_wav(&PathBuf::from(&s.path)).0)).collect()
    }

    #[test]
    fn a_killed_job_resumes_from_its_last_checkpoint_with_the_same_stems() {
        let _turn = stemroom_testkit::cpu_turn();
        let work = tempfile::tempdir().expect("tempdir");
        let input = work.path().join("falcon-x10.wav");
        let mix = stemroom_testkit::falcon_mixture();
        stemroom_testkit::ffmpeg(&[
            "-stream_loop",
            "9",
            "-i",
            mix.to_str().expect("utf-8"),
            "-c:a",
            "pcm_s16le",
            input.to_str().expect("utf-8"),
        ]);

        // Run 1: killed with SIGKILL once past the middle and after a
        // checkpoint was saved.
        let killed = data_dir(&input);
        let tag = Queue::open(&killed.path().join("queue.sqlite")).expect("queue").work_tag().to_string();
        let checkpoint =
            stemroom_library::song::partial_dir(&killed.path().join("library"), &tag, 1).join(".checkpoint/state.bin");
        let mut child = run_queue(killed.path());
        let mut seen = Vec::new();
        let mut lines = BufReader::new(child.stdout.take().expect("stdout")).lines();
        let deadline = Instant::now() + Duration::from_secs(600);
        while let Some(Ok(line)) = lines.next() {
            assert!(Instant::now() < deadline, "run 1 never got far enough");
            let v: serde_json::Value = serde_json::from_str(&line).expect("json line");
            if let Some(s) = segment_of(&v) {
                seen.push(s);
                if s.1 * 2 > s.2 && checkpoint.is_file() {
                    child.kill().expect("SIGKILL");
                    break;
                }
            }
        }
        let _ = child.wait();
        let &(_, killed_at, total) = seen.last().expect("segments ran");
        assert!(killed_at < total, "killed mid-job");
        // Seconds per segment on this machine, to bound what may run twice.
        let (first, last) = (seen[0], seen[seen.len() - 1]);
        let per_segment = (last.0 - first.0) / (last.1 - first.1).max(1) as f64;
        let state = std::fs::metadata(&checkpoint).expect("checkpoint survives the kill").len();
        assert!(state > 1_000_000, "a real state ({state} bytes)");

        // Run 2: the same data folder: recovery queues the job again and it
        // resumes from the checkpoint.
        let out = run_queue(killed.path()).wait_with_output().expect("run 2");
        assert!(out.status.success());
        let run2: Vec<serde_json::Value> =
            String::from_utf8_lossy(&out.stdout).lines().map(|l| serde_json::from_str(l).expect("json line")).collect();
        let resumed_at = run2.iter().find_map(segment_of).expect("run 2 separated").1;
        // At most one checkpoint interval of segments (plus the one in the
        // network at the kill) ran twice.
        let twice = killed_at + 1 - resumed_at.min(killed_at + 1);
        let allowed = (EVERY / per_segment).ceil() as u64 + 2;
        assert!(
            resumed_at > 0 && twice <= allowed,
            "resumed at segment {resumed_at} after a kill at {killed_at} of {total}: \
             {twice} segments again, at most {allowed} allowed ({per_segment:.2} s per segment)"
        );
        eprintln!(
            "killed after segment {killed_at} of {total}, resumed at {resumed_at} ({per_segment:.2} s per segment)"
        );
        assert!(!checkpoint.exists(), "the checkpoint is removed when the job is done");

        // An uninterrupted run of the same job in a fresh folder.
        let whole = data_dir(&input);
        assert!(run_queue(whole.path()).wait().expect("reference run").success());
        let (got, want) = (stems(killed.path()), stems(whole.path()));
        assert_eq!(got.len(), 4);
        for ((stem, a), (_, b)) in got.iter().zip(&want) {
            assert_eq!(a[0].len(), b[0].len(), "{stem}: length");
            let diff =
                a.iter().zip(b).flat_map(|(x, y)| x.iter().zip(y)).map(|(x, y)| (x - y).abs()).fold(0.0, f64::max);
            assert!(diff < 1e-6, "{stem}: the resumed stem differs from the uninterrupted one by {diff}");
            eprintln!("{stem}: resumed vs uninterrupted max difference {diff:e}");
        }
    }
}

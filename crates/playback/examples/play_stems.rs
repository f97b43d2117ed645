//! Play stems through the default audio output for a while and print what
//! the player did as one JSON object: the output opened, wall time, the
//! callback's counters and the final status. Used by the real-playback test
//! (against a PulseAudio null sink) and handy for trying a device by hand.
//!
//! ```text
//! play_stems [--seconds S] [--seek-seconds T] [--solo I]... [--mute I]...
//!            [--tempo X] [--transpose SEMITONES]
//!            [--mark-file PATH --mark-after M] FILE...
//! play_stems --stream DIR [--seek-before-edge S] [--complete-when PATH]
//!            [--seconds S] [...] [FILE...]
//! ```
//!
//! `--mark-file` creates PATH once M seconds have played, for a test that
//! disturbs the output at a known point of the report's timeline.
//!
//! `--stream` plays a running job's stems from its checkpoint folder DIR
//! (`Player::open_growing`), starting S seconds before the separated edge
//! with `--seek-before-edge`; once PATH exists (`--complete-when`: the job is
//! done) the FILEs, its finished stems, take over (`Player::complete_stream`);
//! it plays on past S seconds until they have (at most 300 s more). FILEs
//! at another sample rate than the stream (a 48 kHz song's stream is at the
//! model's 44.1 kHz) are played by a new player from the same time in the
//! song (`Player::reopen`), as the app does; the counters are then the new
//! player's.

use std::path::PathBuf;
use std::time::{Duration, Instant};

use stemroom_playback::mixer::MixControls;
use stemroom_playback::player::Player;

fn main() {
    if let Err(e) = run() {
        eprintln!("play_stems: {e}");
        std::process::exit(1);
    }
}

fn run() -> Result<(), String> {
    let mut seconds = 3.0f64;
    let mut seek = None;
    let mut mark: (Option<PathBuf>, f64) = (None, 0.0);
    let (mut solo, mut mute) = (Vec::new(), Vec::new());
    let mut files = Vec::new();
    let (mut tempo, mut transpose) = (1.0f32, 0.0f32);
    let mut stream: Option<PathBuf> = None;
    let mut before_edge: Option<f64> = None;
    let mut complete_when: Option<PathBuf> = None;
    let mut pause_while_reopening = false;
    let mut args = std::env::args().skip(1);
    while let Some(a) = args.next() {
        let mut value = |name: &str| args.next().ok_or(format!("{name} needs a value"));
        match a.as_str() {
            "--seconds" => seconds = value("--seconds")?.parse().map_err(|e| format!("--seconds: {e}"))?,
            "--seek-seconds" => {
                seek = Some(value("--seek-seconds")?.parse::<f64>().map_err(|e| format!("--seek-seconds: {e}"))?)
            }
            "--solo" => solo.push(value("--solo")?.parse::<usize>().map_err(|e| format!("--solo: {e}"))?),
            "--mark-file" => mark.0 = Some(PathBuf::from(value("--mark-file")?)),
            "--mark-after" => mark.1 = value("--mark-after")?.parse().map_err(|e| format!("--mark-after: {e}"))?,
            "--mute" => mute.push(value("--mute")?.parse::<usize>().map_err(|e| format!("--mute: {e}"))?),
            "--tempo" => tempo = value("--tempo")?.parse().map_err(|e| format!("--tempo: {e}"))?,
            "--transpose" => transpose = value("--transpose")?.parse().map_err(|e| format!("--transpose: {e}"))?,
            "--stream" => stream = Some(PathBuf::from(value("--stream")?)),
            "--seek-before-edge" => {
                before_edge =
                    Some(value("--seek-before-edge")?.parse().map_err(|e| format!("--seek-before-edge: {e}"))?)
            }
            "--complete-when" => complete_when = Some(PathBuf::from(value("--complete-when")?)),
            // Pause the old player between the two halves of a reopen (as a
            // window's pause that comes while the new one starts).
            "--pause-while-reopening" => pause_while_reopening = true,
            _ => files.push(PathBuf::from(a)),
        }
    }
    let stems = match &stream {
        Some(dir) => stemroom_playback::reader::StemSet::open_growing(dir).map_err(|e| e.to_string())?.len(),
        None => files.len(),
    };
    let mut controls = MixControls::unity(stems);
    controls.tempo = tempo;
    controls.transpose = transpose;
    for i in solo {
        if let Some(s) = controls.stems.get_mut(i) {
            s.solo = true;
        }
    }
    for i in mute {
        if let Some(s) = controls.stems.get_mut(i) {
            s.mute = true;
        }
    }
    let mut player = match &stream {
        Some(dir) => Player::open_growing(dir, None, &controls),
        None => Player::open(&files, &controls),
    }
    .map_err(|e| e.to_string())?;
    let rate = player.status().sample_rate;
    let mut start_frame = seek.map_or(0, |s| (s * f64::from(rate)) as u64);
    if let Some(s) = before_edge {
        // The reader reports the edge once it runs.
        std::thread::sleep(Duration::from_millis(50));
        let edge = player.status().separated.unwrap_or(0);
        start_frame = edge.saturating_sub((s * f64::from(rate)) as u64);
    }
    if start_frame > 0 {
        player.seek(start_frame);
        // Let the reader refill from the new position before starting.
        std::thread::sleep(Duration::from_millis(100));
    }
    // A sound server may stall a moment before its first callbacks (PulseAudio
    // right after start-up): wait until the stream runs (paused, silent).
    let warm = Instant::now();
    while player.stats().callbacks < 10 && warm.elapsed() < Duration::from_secs(10) {
        std::thread::sleep(Duration::from_millis(10));
    }
    // And until the read-ahead is full, as it is when a user presses play
    // on an open song (the stretcher fills it at a few times real time on
    // a 2-core VM; what is measured here is whether it keeps up): at most
    // 10 s, then it plays anyway and the report says how full it was.
    let full = stemroom_playback::player::CHUNKS as u64 - 2;
    while stream.is_none() && player.stats().read_ahead_chunks < full && warm.elapsed() < Duration::from_secs(10) {
        std::thread::sleep(Duration::from_millis(10));
    }
    let read_ahead_at_start = player.stats().read_ahead_chunks;
    let mut before = player.stats();
    let t0 = Instant::now();
    player.play();
    let mut samples = Vec::new();
    let mut marked_at = None;
    let mut completed: Option<serde_json::Value> = None;
    // With `--complete-when`, play on past S seconds until the finished stems
    // have taken over (a loaded machine separates slower than real time),
    // for at most COMPLETION_GRACE_S more.
    const COMPLETION_GRACE_S: f64 = 300.0;
    loop {
        let t = t0.elapsed().as_secs_f64();
        if t >= seconds && (complete_when.is_none() || t >= seconds + COMPLETION_GRACE_S) {
            break;
        }
        std::thread::sleep(Duration::from_millis(33));
        if let Some(path) = mark.0.as_ref().filter(|_| t0.elapsed().as_secs_f64() >= mark.1) {
            std::fs::write(path, b"").map_err(|e| format!("--mark-file: {e}"))?;
            marked_at = Some(t0.elapsed().as_secs_f64());
            mark.0 = None;
        }
        if complete_when.as_ref().is_some_and(|p| p.exists()) {
            let mut reopened = None;
            let r = match player.complete_stream(&files) {
                Err(stemroom_playback::player::PlayerError::MixedRates(..)) => {
                    player.prepare_reopen(&files, None, &controls).map(|next| {
                        if pause_while_reopening {
                            player.pause();
                        }
                        player.hand_over(&next);
                        // Where the old one stopped (it plays on while the
                        // new stream starts).
                        let from = player.status();
                        player = next;
                        before = player.stats();
                        reopened = Some(serde_json::json!({"from": from, "to": player.status()}));
                    })
                }
                r => r,
            };
            completed = Some(serde_json::json!({
                "t": t0.elapsed().as_secs_f64(),
                "error": r.err().map(|e| e.to_string()),
                "reopened": reopened,
            }));
            complete_when = None;
        }
        let st = player.status();
        samples.push(serde_json::json!({
            "t": t0.elapsed().as_secs_f64(),
            "position": st.position,
            "sampleRate": st.sample_rate,
            "separated": st.separated,
            "waiting": st.waiting,
            "callbacks": player.stats().callbacks,
            "readAhead": player.stats().read_ahead_chunks,
            "reopens": player.stats().reopens,
        }));
        if st.error.is_some() || (st.ended && complete_when.is_none()) {
            break;
        }
    }
    player.pause();
    let played_for = t0.elapsed().as_secs_f64();
    // Let the 10 ms fade finish before reading the final position.
    std::thread::sleep(Duration::from_millis(100));
    let after = player.stats();
    let status = player.status();
    let report = serde_json::json!({
        "output": player.output(),
        "startFrame": start_frame,
        "readAheadAtStart": read_ahead_at_start,
        "playedSeconds": played_for,
        "framesPlayed": after.frames_played - before.frames_played,
        "underrunFrames": after.underrun_frames - before.underrun_frames,
        "readingFrames": after.reading_frames - before.reading_frames,
        "callbacks": after.callbacks - before.callbacks,
        "deviceGlitches": after.device_glitches - before.device_glitches,
        "reopens": after.reopens - before.reopens,
        "markedAt": marked_at,
        "completed": completed,
        "status": status,
        "positions": samples,
    });
    println!("{report}");
    Ok(())
}

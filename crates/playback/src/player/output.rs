//! The output thread: owns the cpal stream (not `Send` on every platform),
//! watches it, and reopens it on the current default output device when it
//! stalls (a playing stream that stops asking for audio without an error,
//! seen with PulseAudio on an oversubscribed machine) or is lost (device
//! unplugged, sound server restarted). Playback goes on at the same song
//! position: the callback, its rings and the chunks already read ahead move
//! to the new stream unchanged, and every chunk carries its song position.
//!
//! The new device is opened at the stems' rate when it takes it, else at
//! its own default rate: the reader then reads again from the playhead,
//! resampling for that rate (what it had read ahead for the old rate fades
//! out over [`super::FADE_SECONDS`], as at a seek), and the callback maps
//! stereo onto any channel count. No device within [`REOPEN_GIVE_UP`]
//! stops playback with a message. The output keeps trying after that, and
//! a device that comes back clears the message.

use std::sync::atomic::Ordering;
use std::sync::{mpsc, Arc};
use std::time::{Duration, Instant};

use cpal::traits::{HostTrait, StreamTrait};
use cpal::SampleFormat;

use super::callback::Callback;
use super::device::{build_stream, choose_config, Home};
use super::transport::Shared;

/// How often the output thread looks at the stream.
const WATCH_PERIOD: Duration = Duration::from_millis(50);
/// A playing stream that asks for no audio this long is reopened. Device
/// periods are tens of milliseconds, so a healthy stream calls back many
/// times within it.
const STALL_LIMIT: Duration = Duration::from_secs(1);
/// The same for a stream opened less than [`FRESH`] ago: a sound server
/// that was just (re)started holds new streams a moment (PulseAudio 16
/// under load: 1.5-2 s measured here), and reopening would only start over.
pub(super) const FRESH_STALL_LIMIT: Duration = Duration::from_secs(3);
const FRESH: Duration = Duration::from_secs(3);
/// Wait between attempts to reopen while no device can be opened.
const RETRY_PERIOD: Duration = Duration::from_millis(200);
/// Playback stops with an error when the output cannot be reopened (or
/// reopened streams never call back) for this long.
pub(super) const REOPEN_GIVE_UP: Duration = Duration::from_secs(10);
/// More device errors (other than underruns) than this in one
/// [`WATCH_PERIOD`] is a stream that fails on every attempt to write
/// (PulseAudio's ALSA plugin after the server died raises one per poll,
/// thousands a second): treated as lost. Underruns never count: a sound
/// server starved by a loaded CPU raises them in floods too, and
/// reopening its stream only starts it over (measured on a 2-core VM with
/// every core busy: 11 reopens in 9 s, 0.37x real-time pace).
const GLITCH_FLOOD: u64 = 50;
/// Longest wait for a dropped stream to hand the callback back.
const HANDBACK_LIMIT: Duration = Duration::from_secs(2);

/// Open the stream on `device`, report to `ready`, then watch and reopen
/// it until `stop` says so (or its sender is dropped).
pub(super) fn run(
    device: cpal::Device,
    config: cpal::StreamConfig,
    format: SampleFormat,
    callback: Callback,
    shared: Arc<Shared>,
    ready: mpsc::Sender<Result<(), String>>,
    stop: mpsc::Receiver<()>,
) {
    let (back_tx, back_rx) = mpsc::sync_channel::<Callback>(1);
    let mut stream = match start(&device, &config, format, Home::new(callback, back_tx.clone()), &shared) {
        Ok(s) => Some(s),
        Err(e) => {
            let _ = ready.send(Err(e));
            return;
        }
    };
    let _ = ready.send(Ok(()));
    drop(ready);

    let mut seen = (shared.callbacks.load(Ordering::Acquire), Instant::now());
    // Since when the output has been unusable (lost, stalled, or reopened
    // without a callback yet); cleared by the first callback after.
    let mut trouble_since: Option<Instant> = None;
    let mut gave_up = false;
    let mut parked: Option<Callback> = None;
    let mut opened_at = Instant::now();
    let mut glitches = (shared.device_glitches.load(Ordering::Acquire), Instant::now(), 0u64);
    let mut errors = shared.device_errors.load(Ordering::Acquire);
    // Frames played as silence because the reader fell behind (the disk,
    // a machine busy separating), said at most once a second.
    let mut underruns = (shared.underrun_frames.load(Ordering::Acquire), Instant::now());
    // Until the player says stop (or is dropped).
    while let Err(mpsc::RecvTimeoutError::Timeout) = stop.recv_timeout(WATCH_PERIOD) {
        let calls = shared.callbacks.load(Ordering::Acquire);
        let playing = shared.playing.load(Ordering::Acquire);
        if calls != seen.0 {
            seen = (calls, Instant::now());
            if stream.is_some() {
                trouble_since = None;
                gave_up = false;
            }
        } else if !playing {
            seen.1 = Instant::now(); // a paused device may rest
        }
        let now_glitches = shared.device_glitches.load(Ordering::Acquire);
        let now_errors = shared.device_errors.load(Ordering::Acquire);
        if now_errors - errors > GLITCH_FLOOD {
            shared.output_lost.store(true, Ordering::Release);
        }
        errors = now_errors;
        glitches.2 += now_glitches - glitches.0;
        glitches.0 = now_glitches;
        if glitches.2 > 0 && glitches.1.elapsed() >= Duration::from_secs(1) {
            tracing::warn!("the audio device reported {} glitches (underruns or write errors)", glitches.2);
            glitches = (now_glitches, Instant::now(), 0);
        }
        let now_underruns = shared.underrun_frames.load(Ordering::Acquire);
        if now_underruns > underruns.0 && underruns.1.elapsed() >= Duration::from_secs(1) {
            tracing::warn!(
                "playback fell behind: {} frames played as silence (the stems could not be read in time)",
                now_underruns - underruns.0
            );
            underruns = (now_underruns, Instant::now());
        }
        let lost = shared.output_lost.load(Ordering::Acquire);
        let limit = if opened_at.elapsed() < FRESH { FRESH_STALL_LIMIT } else { STALL_LIMIT };
        let stalled = playing && seen.1.elapsed() > limit;
        if stream.is_some() && !lost && !stalled {
            continue;
        }
        let since = *trouble_since.get_or_insert_with(Instant::now);
        if !gave_up && since.elapsed() > REOPEN_GIVE_UP {
            gave_up = true;
            shared.fail(gave_up_message());
        }
        // Take the callback back from the old stream.
        if let Some(old) = stream.take() {
            tracing::warn!(
                "audio output {}: reopening it on the default device",
                if lost { "lost" } else { "stalled" }
            );
            {
                let _call = shared.in_backend_call();
                drop(old);
            }
            match back_rx.recv_timeout(HANDBACK_LIMIT) {
                Ok(cb) => parked = Some(cb),
                Err(_) => {
                    shared.fail("the audio output stopped and its stream did not close".into());
                    return;
                }
            }
        }
        let Some(cb) = parked.take() else {
            return; // the callback is parked whenever no stream runs
        };
        shared.output_lost.store(false, Ordering::Release);
        let reopened = {
            let _call = shared.in_backend_call();
            reopen(cb, back_tx.clone(), &shared)
        };
        match reopened {
            Ok(s) => {
                // Back after playback was stopped (here, or by a status
                // that found this thread stuck in the backend): it can be
                // played again (and should this stream fail too, that is said).
                shared.clear_error(&gave_up_message());
                gave_up = false;
                stream = Some(s);
                opened_at = Instant::now();
                shared.reopens.fetch_add(1, Ordering::AcqRel);
                seen = (shared.callbacks.load(Ordering::Acquire), Instant::now());
                tracing::info!("audio output reopened");
            }
            Err(e) => {
                if !gave_up {
                    tracing::warn!("cannot reopen the audio output yet: {e}");
                }
                // A failed build drops the callback's home, which sends it back.
                parked = back_rx.recv_timeout(HANDBACK_LIMIT).ok();
                if parked.is_none() {
                    shared.fail(format!("the audio output could not be reopened: {e}"));
                    return;
                }
                let wait = if gave_up { RETRY_PERIOD * 10 } else { RETRY_PERIOD };
                if !matches!(stop.recv_timeout(wait), Err(mpsc::RecvTimeoutError::Timeout)) {
                    break;
                }
            }
        }
    }
    drop(stream);
}

fn start(
    device: &cpal::Device,
    config: &cpal::StreamConfig,
    format: SampleFormat,
    home: Home,
    shared: &Arc<Shared>,
) -> Result<cpal::Stream, String> {
    let stream = build_stream(device, config, format, home, shared)?;
    stream.play().map_err(|e| e.to_string())?;
    Ok(stream)
}

/// The error playback stops with when no output could be reopened.
pub(super) fn gave_up_message() -> String {
    format!(
        "the audio output stopped and could not be reopened within {} s; \
         check the sound settings and open the song again",
        REOPEN_GIVE_UP.as_secs()
    )
}

/// Open the current default output device as the first stream was opened
/// ([`choose_config`]: the stems' rate when it takes it), with whatever
/// channels it has. At another rate than the stream before, the callback
/// and the reader change to it ([`Shared::change_device_rate`]).
fn reopen(
    mut callback: Callback,
    back: mpsc::SyncSender<Callback>,
    shared: &Arc<Shared>,
) -> Result<cpal::Stream, String> {
    let found = cpal::default_host()
        .default_output_device()
        .ok_or_else(|| "no audio output device".to_string())
        .and_then(|device| choose_config(&device, shared.song_rate).map_err(|e| e.to_string()).map(|c| (device, c)));
    let (device, (config, format)) = match found {
        Ok(found) => found,
        Err(e) => {
            // The callback goes back to the output thread (as from a failed build).
            drop(Home::new(callback, back));
            return Err(e);
        }
    };
    let rate = config.sample_rate;
    if rate != callback.device_rate {
        tracing::info!(
            "the audio output now runs at {rate} Hz instead of {} Hz: resampling for it",
            callback.device_rate
        );
        callback.set_device_rate(rate);
        shared.change_device_rate(rate);
    }
    // A new device starts from silence: the song fades in, not at full
    // gain mid-waveform (a click).
    callback.fade = 0.0;
    let mut home = Home::new(callback, back);
    home.set_channels(config.channels);
    start(&device, &config, format, home, shared)
}

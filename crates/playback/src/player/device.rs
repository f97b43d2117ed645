//! The output device: configuration and the cpal stream.

use std::sync::atomic::Ordering;
use std::sync::{mpsc, Arc};

use cpal::traits::DeviceTrait;
use cpal::{FromSample, SampleFormat, SizedSample};

use super::callback::Callback;
use super::transport::Shared;
use super::PlayerError;

/// Device period asked for, in frames, from `STEMROOM_DEVICE_PERIOD_FRAMES`
/// (unset or 0: the device's default; cpal keeps two periods in the device
/// buffer). The default on PulseAudio's ALSA plugin is a period of about
/// 500 frames (11 ms callbacks, a 23 ms buffer). On a loaded 2-core VM (two
/// busy loops above the sound server's priority) 5 of 8 ten-second plays
/// of the `play_stems` example then had an underrun after which the server
/// held the stream until it was reopened (1.2 s of silence each); with
/// periods of 1024 frames 4 of 8, with 2048 and 4096 none. Not the default:
/// a larger period delays every control change and seek by as much (2048
/// frames, two in the buffer: about 93 ms at 44.1 kHz). The app's
/// end-to-end run passes with 2048 (README, "Player and export").
const PERIOD_ENV: &str = "STEMROOM_DEVICE_PERIOD_FRAMES";

/// Pick the output configuration: the stems' rate when the device offers it
/// (no resampling), else the device's default; stereo and `f32` preferred;
/// the period asked for in [`PERIOD_ENV`], if any, where the device says
/// which sizes it takes, else its default.
pub(super) fn choose_config(
    device: &cpal::Device,
    rate: u32,
) -> Result<(cpal::StreamConfig, SampleFormat), PlayerError> {
    let dev_err = |e: &dyn std::fmt::Display| PlayerError::Device(e.to_string());
    let usable = usable_format;
    let ranges: Vec<_> = device.supported_output_configs().map_err(|e| dev_err(&e))?.collect();
    let best = ranges
        .iter()
        .filter(|r| usable(r.sample_format()) && r.min_sample_rate() <= rate && rate <= r.max_sample_rate())
        .max_by_key(|r| (r.channels() == 2, r.sample_format() == SampleFormat::F32, r.channels() >= 2));
    let c = match best {
        Some(r) => (*r).with_sample_rate(rate),
        None => device.default_output_config().map_err(|e| dev_err(&e))?,
    };
    if !usable(c.sample_format()) {
        return Err(PlayerError::Device(format!("unsupported sample format {}", c.sample_format())));
    }
    let mut config = c.config();
    config.buffer_size = period(c.buffer_size());
    Ok((config, c.sample_format()))
}

/// The period asked for in [`PERIOD_ENV`] within the sizes the device
/// takes (unset, 0 or a device that does not say: its default).
fn period(supported: &cpal::SupportedBufferSize) -> cpal::BufferSize {
    let wanted = std::env::var(PERIOD_ENV).ok().and_then(|v| v.trim().parse::<u32>().ok()).unwrap_or(0);
    match *supported {
        cpal::SupportedBufferSize::Range { min, max } if wanted > 0 && min <= max && max > 0 => {
            cpal::BufferSize::Fixed(wanted.clamp(min, max))
        }
        _ => cpal::BufferSize::Default,
    }
}

/// The callback as the stream holds it: when the stream is dropped (or its
/// backend thread ends) the callback, with its rings and mixer, is sent back
/// to the output thread, which can hand it to a new stream.
pub(super) struct Home {
    callback: Option<Callback>,
    back: mpsc::SyncSender<Callback>,
}

impl Home {
    pub(super) fn new(callback: Callback, back: mpsc::SyncSender<Callback>) -> Self {
        Home { callback: Some(callback), back }
    }

    /// Map the song's stereo onto `channels` device channels from now on.
    pub(super) fn set_channels(&mut self, channels: u16) {
        if let Some(cb) = self.callback.as_mut() {
            cb.channels = usize::from(channels).max(1);
        }
    }
}

impl Drop for Home {
    fn drop(&mut self) {
        if let Some(cb) = self.callback.take() {
            // A rendezvous slot of one: the output thread waits for it.
            let _ = self.back.try_send(cb);
        }
    }
}

pub(super) fn build_stream(
    device: &cpal::Device,
    config: &cpal::StreamConfig,
    format: SampleFormat,
    home: Home,
    shared: &Arc<Shared>,
) -> Result<cpal::Stream, String> {
    match format {
        SampleFormat::F32 => build_typed::<f32>(device, config, home, shared),
        SampleFormat::F64 => build_typed::<f64>(device, config, home, shared),
        SampleFormat::I8 => build_typed::<i8>(device, config, home, shared),
        SampleFormat::I16 => build_typed::<i16>(device, config, home, shared),
        SampleFormat::I24 => build_typed::<cpal::I24>(device, config, home, shared),
        SampleFormat::I32 => build_typed::<i32>(device, config, home, shared),
        SampleFormat::U8 => build_typed::<u8>(device, config, home, shared),
        SampleFormat::U16 => build_typed::<u16>(device, config, home, shared),
        SampleFormat::U24 => build_typed::<cpal::U24>(device, config, home, shared),
        SampleFormat::U32 => build_typed::<u32>(device, config, home, shared),
        other => Err(format!("unsupported sample format {other}")),
    }
}

/// The sample formats [`build_stream`] writes: every PCM format of cpal up
/// to 32 bits and both floats (an ALSA `hw:` USB interface often offers
/// only packed 24-bit, `S24_3LE`); not 64-bit integers or DSD.
fn usable_format(f: SampleFormat) -> bool {
    use SampleFormat::*;
    matches!(f, F32 | F64 | I8 | I16 | I24 | I32 | U8 | U16 | U24 | U32)
}

fn build_typed<T: SizedSample + FromSample<f32>>(
    device: &cpal::Device,
    config: &cpal::StreamConfig,
    mut home: Home,
    shared: &Arc<Shared>,
) -> Result<cpal::Stream, String> {
    let on_error = {
        let shared = Arc::clone(shared);
        move |e: cpal::Error| {
            use cpal::ErrorKind as K;
            if shared.stop.load(Ordering::Acquire) {
                return; // closing: the stream's own teardown
            }
            match e.kind() {
                // The stream is gone: the output thread reopens it (and
                // says so; nothing is logged here, on the audio thread,
                // where formatting would allocate).
                K::DeviceNotAvailable | K::HostUnavailable | K::StreamInvalidated | K::PermissionDenied => {
                    shared.output_lost.store(true, Ordering::Release);
                }
                // An underrun: cpal prepares the device again and the
                // stream goes on (a starved sound server raises thousands a
                // second under load: never a reason to reopen).
                K::Xrun => {
                    shared.device_glitches.fetch_add(1, Ordering::Relaxed);
                }
                // Other glitches (a transient backend error, a rerouted
                // default device): the stream goes on by itself, unless
                // they come in a flood. (The output thread logs them, a
                // line a second at most: a dead sound server can raise
                // thousands a second.)
                _ => {
                    shared.device_glitches.fetch_add(1, Ordering::Relaxed);
                    shared.device_errors.fetch_add(1, Ordering::Relaxed);
                }
            }
        }
    };
    device
        .build_output_stream::<T, _, _>(
            *config,
            move |out: &mut [T], info: &cpal::OutputCallbackInfo| {
                if let Some(cb) = home.callback.as_mut() {
                    cb.fill(out, info);
                }
            },
            on_error,
            None,
        )
        .map_err(|e| e.to_string())
}

//! Playback of finished songs: the mix of stems, waveforms, exports and the
//! real-time stem player.
//!
//! Layout:
//! - [`mixer`]: per-stem gain, mute and solo with click-free ramps; loop
//!   reads.
//! - [`peaks`]: waveform peaks at several zoom levels, cached on disk.
//! - [`reader`]: the lock-step stem reader shared by the player and exports.
//! - [`stretch`]: tempo and pitch (Signalsmith Stretch), per stem before
//!   the mix.
//! - [`export`]: chosen stems, a mix or a zip, in any output format.
//! - `player` (feature `player`, cpal): the stem player (transport, reader
//!   thread, audio callback, device).
//!
//! Errors: exports and peaks fail with the engine's [`stemroom_engine::Error`]
//! (decoding, encoding, output, options: all engine-level); the player has
//! its own [`player::PlayerError`] with a stable `code()`.

pub mod export;
pub mod mixer;
pub mod peaks;
#[cfg(feature = "player")]
pub mod player;
pub mod reader;
pub mod slot;
pub mod stretch;

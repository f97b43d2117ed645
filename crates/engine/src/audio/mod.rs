//! Audio in and out: decoding any supported file to stereo frames
//! ([`decode`]), sample-rate conversion ([`resample`]), and writing stems
//! ([`encode`]).

pub mod decode;
pub mod encode;
pub mod resample;

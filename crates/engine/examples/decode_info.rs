//! Decode files and print what Stemroom's decoder sees: sample rate,
//! channels, frames decoded, seconds, and the first error. A diagnostic:
//! `cargo run --release -p stemroom-engine --example decode_info -- FILE...`

use stemroom_engine::audio::decode::StreamDecoder;

fn main() {
    for arg in std::env::args().skip(1) {
        let path = std::path::Path::new(&arg);
        let mut d = match StreamDecoder::open(path) {
            Ok(d) => d,
            Err(e) => {
                println!("{arg}: error: {e}");
                continue;
            }
        };
        let mut peak = 0.0f32;
        let result = loop {
            match d.next_block() {
                Ok(Some((block, _))) => peak = block.iter().fold(peak, |p, v| p.max(v.abs())),
                Ok(None) => break Ok(()),
                Err(e) => break Err(e),
            }
        };
        let info = d.info();
        println!(
            "{arg}: {:?} {} Hz, {} channels, {} frames ({:.4} s), declared {:?}, peak {peak:.3}, {}",
            d,
            info.sample_rate,
            info.channels,
            info.frames,
            info.frames as f64 / f64::from(info.sample_rate.max(1)),
            d.declared_frames(),
            match result {
                Ok(()) => "ok".to_string(),
                Err(e) => format!("error: {e}"),
            }
        );
    }
}

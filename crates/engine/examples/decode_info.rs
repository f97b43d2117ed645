//! Decode files and print what Stemroom's decoder sees: sample rate,
//! channels, frames decoded, seconds, and the first error. A diagnostic:
//! `cargo run --release -p stemroom-engine --example decode_info -- FILE...`
//! With `STEMROOM_DUMP=DIR`, each file's decoded audio is also written to
//! `DIR/<file name>.f32` (interleaved stereo 32-bit float, native endian),
//! to compare with `ffmpeg -i FILE -f f32le -ac 2 -`.

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
        let mut dump = std::env::var_os("STEMROOM_DUMP").map(|dir| {
            let name = format!("{}.f32", path.file_name().unwrap_or_default().to_string_lossy());
            std::io::BufWriter::new(std::fs::File::create(std::path::Path::new(&dir).join(name)).expect("dump file"))
        });
        let result = loop {
            match d.next_block() {
                Ok(Some((block, _))) => {
                    peak = block.iter().fold(peak, |p, v| p.max(v.abs()));
                    if let Some(w) = dump.as_mut() {
                        use std::io::Write;
                        for v in block {
                            w.write_all(&v.to_ne_bytes()).expect("dump");
                        }
                    }
                }
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

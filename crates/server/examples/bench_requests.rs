//! Requests per second of one GET endpoint of a running `stemroom serve`:
//! C keep-alive HTTP/1.1 connections, each sending the next request as soon
//! as the last answer is read, for S seconds. Plain sockets, so the figure
//! is the server's, not a client library's.
//!
//!     bench_requests ADDR TOKEN PATH [SECONDS=5] [CONNECTIONS=32]
//!     bench_requests 127.0.0.1:8000 "$TOKEN" /status/1

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

fn one_connection(addr: &str, request: &[u8], stop: &AtomicBool, done: &AtomicU64, failed: &AtomicU64) {
    let Ok(stream) = TcpStream::connect(addr) else {
        failed.fetch_add(1, Ordering::Relaxed);
        return;
    };
    let _ = stream.set_nodelay(true);
    let mut writer = match stream.try_clone() {
        Ok(w) => w,
        Err(_) => return,
    };
    let mut reader = BufReader::new(stream);
    let mut line = String::new();
    let mut body = Vec::new();
    while !stop.load(Ordering::Relaxed) {
        if writer.write_all(request).is_err() {
            failed.fetch_add(1, Ordering::Relaxed);
            return;
        }
        let mut length = 0usize;
        let mut ok = false;
        let mut first = true;
        loop {
            line.clear();
            match reader.read_line(&mut line) {
                Ok(0) | Err(_) => {
                    failed.fetch_add(1, Ordering::Relaxed);
                    return;
                }
                Ok(_) => {}
            }
            if first {
                ok = line.starts_with("HTTP/1.1 200");
                first = false;
            }
            if line == "\r\n" {
                break;
            }
            if let Some(v) = line.to_ascii_lowercase().strip_prefix("content-length:") {
                length = v.trim().parse().unwrap_or(0);
            }
        }
        body.resize(length, 0);
        if reader.read_exact(&mut body).is_err() {
            failed.fetch_add(1, Ordering::Relaxed);
            return;
        }
        if ok {
            done.fetch_add(1, Ordering::Relaxed)
        } else {
            failed.fetch_add(1, Ordering::Relaxed)
        };
    }
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    if args.len() < 4 {
        eprintln!("usage: bench_requests ADDR TOKEN PATH [SECONDS] [CONNECTIONS]");
        std::process::exit(2);
    }
    let (addr, token, path) = (args[1].clone(), args[2].clone(), args[3].clone());
    let seconds: f64 = args.get(4).and_then(|s| s.parse().ok()).unwrap_or(5.0);
    let connections: usize = args.get(5).and_then(|s| s.parse().ok()).unwrap_or(32);
    let request =
        Arc::new(format!("GET {path} HTTP/1.1\r\nHost: {addr}\r\nAuthorization: Bearer {token}\r\n\r\n").into_bytes());
    let stop = Arc::new(AtomicBool::new(false));
    let done = Arc::new(AtomicU64::new(0));
    let failed = Arc::new(AtomicU64::new(0));
    let t0 = Instant::now();
    let threads: Vec<_> = (0..connections)
        .map(|_| {
            let (addr, request, stop, done, failed) =
                (addr.clone(), request.clone(), stop.clone(), done.clone(), failed.clone());
            std::thread::spawn(move || one_connection(&addr, &request, &stop, &done, &failed))
        })
        .collect();
    std::thread::sleep(Duration::from_secs_f64(seconds));
    stop.store(true, Ordering::Relaxed);
    for t in threads {
        let _ = t.join();
    }
    let elapsed = t0.elapsed().as_secs_f64();
    let n = done.load(Ordering::Relaxed);
    println!(
        "GET {path}: {n} answers (200) in {elapsed:.1} s over {connections} connections: {:.0} requests/s, {} failed",
        n as f64 / elapsed,
        failed.load(Ordering::Relaxed)
    );
}

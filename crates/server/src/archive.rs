//! A song's stems as a zip archive written straight into the response body:
//! a blocking thread writes the archive (stored, not deflated: WAV barely
//! compresses and FLAC/MP3 not at all, so deflate would cost CPU for
//! nothing) through a bounded channel of 64 KiB chunks, so memory stays at
//! a few chunks whatever the song's size, and a client that goes away
//! stops the writer at its next chunk. Streaming zips carry each entry's
//! sizes and CRC-32 in a data descriptor after its data (APPNOTE 6.3.x
//! §4.3.9), which `unzip`, Python's `zipfile` and every browser read.

use std::collections::HashMap;
use std::io::Write;
use std::net::IpAddr;
use std::path::PathBuf;

use axum::body::{Body, Bytes};
use tokio::sync::mpsc;

/// Bytes per chunk sent to the client.
const CHUNK: usize = 64 * 1024;
/// Chunks in flight between the writer and the response.
const CHUNKS_IN_FLIGHT: usize = 8;
/// Archives written at once. Each writer holds one of tokio's blocking
/// threads (512 at most, shared with every file operation of the server)
/// for as long as its client takes to read; slow readers beyond this many
/// wait instead of taking the threads the queue and uploads need.
pub const MAX_WRITERS: usize = 32;
static WRITERS: tokio::sync::Semaphore = tokio::sync::Semaphore::const_new(MAX_WRITERS);

/// Archives one client address (its /64 for IPv6) may be sent at once: a
/// quarter of [`MAX_WRITERS`], so one client reading slowly on many
/// connections cannot hold every writer (each is dropped only after 30 s
/// without progress) while others wait.
pub const MAX_WRITERS_PER_CLIENT: usize = MAX_WRITERS / 4;
static PER_CLIENT: std::sync::LazyLock<std::sync::Mutex<HashMap<IpAddr, usize>>> =
    std::sync::LazyLock::new(Default::default);

/// One of a client's [`MAX_WRITERS_PER_CLIENT`] archives, given back when
/// dropped (when its archive is written, or its client left).
#[derive(Debug)]
pub struct ClientTurn(IpAddr);

impl ClientTurn {
    /// A turn for `client` (a rate key: its address, its /64 for IPv6), or
    /// `None` when it has [`MAX_WRITERS_PER_CLIENT`] archives under way.
    pub fn take(client: IpAddr) -> Option<Self> {
        let mut map = PER_CLIENT.lock().unwrap_or_else(|p| p.into_inner());
        let n = map.entry(client).or_insert(0);
        if *n >= MAX_WRITERS_PER_CLIENT {
            return None;
        }
        *n += 1;
        Some(ClientTurn(client))
    }
}

impl Drop for ClientTurn {
    fn drop(&mut self) {
        let mut map = PER_CLIENT.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(n) = map.get_mut(&self.0) {
            *n -= 1;
            if *n == 0 {
                map.remove(&self.0);
            }
        }
    }
}

/// One file of the archive: its name inside the zip and where it is.
#[derive(Debug, Clone)]
pub struct Entry {
    pub name: String,
    pub path: PathBuf,
}

/// An [`Entry`] opened: its file stays readable once the archive is under
/// way, even when the job is deleted meanwhile (an open file outlives its
/// name on Unix), so a download that started ends whole.
pub struct Opened {
    name: String,
    file: std::fs::File,
}

/// Open every entry's file.
///
/// # Errors
/// The first file that cannot be opened (deleted meanwhile).
pub fn open_all(entries: &[Entry]) -> std::io::Result<Vec<Opened>> {
    entries.iter().map(|e| Ok(Opened { name: e.name.clone(), file: std::fs::File::open(&e.path)? })).collect()
}

/// Writes into the channel in [`CHUNK`]-sized pieces.
struct ChannelWriter {
    tx: mpsc::Sender<Result<Bytes, std::io::Error>>,
    buf: Vec<u8>,
}

impl ChannelWriter {
    fn send(&mut self) -> std::io::Result<()> {
        if self.buf.is_empty() {
            return Ok(());
        }
        let chunk = Bytes::from(std::mem::replace(&mut self.buf, Vec::with_capacity(CHUNK)));
        self.tx
            .blocking_send(Ok(chunk))
            .map_err(|_| std::io::Error::new(std::io::ErrorKind::BrokenPipe, "the client went away"))
    }
}

impl Write for ChannelWriter {
    fn write(&mut self, data: &[u8]) -> std::io::Result<usize> {
        let n = data.len().min(CHUNK - self.buf.len());
        self.buf.extend_from_slice(&data[..n]);
        if self.buf.len() >= CHUNK {
            self.send()?;
        }
        Ok(n)
    }
    fn flush(&mut self) -> std::io::Result<()> {
        self.send()
    }
}

fn write_zip(entries: Vec<Opened>, out: ChannelWriter) -> std::io::Result<()> {
    let mut zip = zip::ZipWriter::new_stream(out);
    for Opened { name, mut file } in entries {
        let size = file.metadata()?.len();
        let options = zip::write::SimpleFileOptions::default()
            .compression_method(zip::CompressionMethod::Stored)
            .large_file(size >= u64::from(u32::MAX))
            .unix_permissions(0o644);
        zip.start_file(name.as_str(), options).map_err(io_error)?;
        std::io::copy(&mut file, &mut zip)?;
    }
    let mut out = zip.finish().map_err(io_error)?;
    out.flush()
}

/// The I/O error inside a zip error as it is (a client gone is a
/// `BrokenPipe`, not logged as a failure), else the zip error.
fn io_error(e: zip::result::ZipError) -> std::io::Error {
    match e {
        zip::result::ZipError::Io(e) => e,
        e => std::io::Error::other(e),
    }
}

/// A response body that is the zip of `entries` (opened before the answer
/// starts: [`open_all`]). An error while writing (a disk that fails) ends
/// the body early, which the client sees as a truncated transfer rather
/// than a valid-looking archive. At most [`MAX_WRITERS`] archives are
/// written at once; more wait their turn (their clients see the response
/// start later).
pub fn zip_body(entries: Vec<Opened>, client: Option<ClientTurn>) -> Body {
    let (tx, mut rx) = mpsc::channel::<Result<Bytes, std::io::Error>>(CHUNKS_IN_FLIGHT);
    tokio::spawn(async move {
        // A client that leaves while it waits (a `HEAD`, whose body is
        // never read; a download given up) gives its turn back at once:
        // else it counted against its address's downloads until a writer
        // was free.
        let turn = tokio::select! {
            turn = WRITERS.acquire() => match turn {
                Ok(turn) => turn,
                Err(_) => return,
            },
            () = tx.closed() => return,
        };
        let turn = (turn, client);
        let err_tx = tx.clone();
        tokio::task::spawn_blocking(move || {
            let _turn = turn;
            let out = ChannelWriter { tx, buf: Vec::with_capacity(CHUNK) };
            if let Err(e) = write_zip(entries, out) {
                if e.kind() != std::io::ErrorKind::BrokenPipe {
                    tracing::warn!("zip stopped: {e}");
                    let _ = err_tx.blocking_send(Err(e));
                }
            }
        });
    });
    Body::from_stream(futures_util::stream::poll_fn(move |cx| rx.poll_recv(cx)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_client_gets_a_quarter_of_the_writers() {
        let (a, b): (IpAddr, IpAddr) = ("192.0.2.77".parse().unwrap(), "192.0.2.78".parse().unwrap());
        let mut held: Vec<ClientTurn> = (0..MAX_WRITERS_PER_CLIENT).map(|_| ClientTurn::take(a).unwrap()).collect();
        assert!(ClientTurn::take(a).is_none(), "the next of this client waits its turn");
        let other = ClientTurn::take(b).expect("another client is not held up");
        held.pop();
        assert!(ClientTurn::take(a).is_some(), "one given back: one more");
        drop((held, other));
        assert!(PER_CLIENT.lock().is_ok_and(|m| !m.contains_key(&a) && !m.contains_key(&b)));
    }

    #[tokio::test]
    async fn a_client_that_leaves_while_it_waits_for_a_writer_gives_its_turn_back() {
        let client: IpAddr = "192.0.2.90".parse().unwrap();
        // Every writer busy.
        let busy = WRITERS.acquire_many(MAX_WRITERS as u32).await.expect("writers");
        let turns: Vec<Body> = (0..MAX_WRITERS_PER_CLIENT)
            .map(|_| zip_body(Vec::new(), Some(ClientTurn::take(client).expect("a turn"))))
            .collect();
        assert!(ClientTurn::take(client).is_none(), "all of this client's turns wait");
        // The client goes away (its bodies are dropped unread).
        drop(turns);
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
        let again = loop {
            if let Some(t) = ClientTurn::take(client) {
                break t;
            }
            assert!(std::time::Instant::now() < deadline, "the turns stayed held while no writer was free");
            tokio::time::sleep(std::time::Duration::from_millis(10)).await;
        };
        drop((again, busy));
    }
}

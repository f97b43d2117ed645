//! What `stemroom serve` is told on its command line.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use stemroom_engine::units::Device;

/// Client connections served at once by default. Each holds a file
/// descriptor, and Linux's usual soft limit is 1,024 for the whole process
/// (the model, the database, stems and uploads need theirs): past this the
/// server stops accepting until one closes, rather than failing to open
/// its own files under a flood of idle connections.
pub const DEFAULT_MAX_CONNECTIONS: usize = 512;
/// Connections one public client address may hold open by default: a
/// browser opens at most 6 per host (Chromium's and Firefox's HTTP/1.1
/// limit), a script a few, a machine of `stemroom worker`s one or two per
/// worker, a small office behind one NAT address a few browsers' worth; 8
/// clients at this limit fill half of [`DEFAULT_MAX_CONNECTIONS`].
pub const DEFAULT_MAX_CONNECTIONS_PER_CLIENT: usize = 32;

/// Default listen address: loopback only, FastAPI/uvicorn's usual port.
pub const DEFAULT_LISTEN: &str = "127.0.0.1:8000";
/// Default longest upload: 3 hours of audio, the app's default longest
/// download (`stemroom_library::link::DownloadLimits`).
pub const DEFAULT_MAX_UPLOAD_SECONDS: u64 = 3 * 3600;
/// Largest upload accepted by default, in bytes (500 MB, the default:
/// a 30-minute 24-bit/96 kHz stereo WAV is ~1 GB, a 10-minute one 345 MB).
pub const DEFAULT_MAX_UPLOAD_BYTES: u64 = 500 * 1000 * 1000;
/// Free space the data folder keeps by default, in bytes (2 GB): new uploads
/// are refused with 507 below it. Separating a 4-minute song writes ~170 MB
/// of 16-bit WAV stems plus a float spool of the same order.
pub const DEFAULT_MIN_FREE_BYTES: u64 = 2 * 1000 * 1000 * 1000;
/// New jobs one client address may create per hour by default.
pub const DEFAULT_JOBS_PER_HOUR: u32 = 30;
/// How long a client may take to send a request's headers, and the longest
/// pause inside an upload body, before the connection is closed (slow or
/// stuck clients must not hold connections and disk space forever). An
/// upload must also keep an average pace after it ([`crate::form::MIN_UPLOAD_RATE`]).
pub const DEFAULT_IDLE_TIMEOUT: Duration = Duration::from_secs(30);
/// Longest time a quick request (status, lists, deletes) may take.
pub const DEFAULT_REQUEST_TIMEOUT: Duration = Duration::from_secs(30);

/// Everything the server is configured with.
#[derive(Debug, Clone)]
pub struct ServerConfig {
    /// Address to listen on.
    pub listen: SocketAddr,
    /// Data folder: queue database, library, uploads, token.
    pub data_dir: PathBuf,
    /// Require the bearer token (false only with a loopback `listen`).
    pub auth: bool,
    /// Longest upload in seconds of audio (0: no limit). A few KB of FLAC
    /// can hold hours of silence, so the bytes alone do not bound the work.
    pub max_upload_seconds: u64,
    /// Largest upload in bytes.
    pub max_upload_bytes: u64,
    /// Free bytes the data folder keeps; uploads are refused below it.
    pub min_free_bytes: u64,
    /// New jobs per client address per hour.
    pub jobs_per_hour: u32,
    /// Remove finished jobs and their files this many days after they
    /// finished (`None`: keep them).
    pub keep_days: Option<f64>,
    /// Origins allowed by CORS (empty: no CORS headers at all).
    pub cors: Vec<String>,
    /// Jobs separated at the same time (one loaded model shared).
    pub jobs: usize,
    /// Device the jobs ask for (`None`: the saved settings' device).
    pub device: Option<Device>,
    /// Network threads (`None`: all cores).
    pub threads: Option<usize>,
    /// Extra model folder searched first.
    pub model_dir: Option<PathBuf>,
    /// Explicit ONNX Runtime library.
    pub runtime_library: Option<PathBuf>,
    /// Header-read, body-stall and write-stall timeout (a client that reads
    /// no part of an answer for this long is dropped).
    pub idle_timeout: Duration,
    /// Client connections served at once (more wait to be accepted).
    pub max_connections: usize,
    /// Connections one public client address (IPv6: its /64) may hold
    /// open; more are closed at once (loopback, private networks and
    /// trusted proxies not counted; 0: no limit).
    pub max_connections_per_client: usize,
    /// Proxies whose `X-Forwarded-For` names the client for the per-address
    /// job quota (empty: the connection's address is the client).
    pub trusted_proxies: Vec<std::net::IpAddr>,
    /// Take links whose host is this machine or a private network (see
    /// [`crate::service::check_public_link`]).
    pub allow_private_links: bool,
    /// Longest quick request.
    pub request_timeout: Duration,
    /// Least time between two checkpoints of a running job (`None`: the
    /// engine's default).
    pub checkpoint_every: Option<Duration>,
    /// Redis URL: jobs go on a stream for `stemroom worker`s instead of the
    /// local worker (`None`: separate here).
    pub broker: Option<String>,
    /// Claims a job may take on the broker before it is marked failed.
    pub max_attempts: u32,
    /// With a broker: a running job whose worker sends no progress, input
    /// read or stem bytes for this long goes back to the queue (the worker
    /// hangs while its heartbeat still keeps the stream entry, or the entry
    /// was lost with the broker's data).
    pub stall_timeout: Duration,
}

impl ServerConfig {
    /// Defaults for `data_dir`, listening on [`DEFAULT_LISTEN`].
    pub fn new(data_dir: PathBuf) -> Self {
        ServerConfig {
            listen: SocketAddr::from(([127, 0, 0, 1], 8000)),
            data_dir,
            auth: true,
            max_upload_bytes: DEFAULT_MAX_UPLOAD_BYTES,
            max_upload_seconds: DEFAULT_MAX_UPLOAD_SECONDS,
            min_free_bytes: DEFAULT_MIN_FREE_BYTES,
            jobs_per_hour: DEFAULT_JOBS_PER_HOUR,
            keep_days: None,
            cors: Vec::new(),
            jobs: 1,
            device: None,
            threads: None,
            model_dir: None,
            runtime_library: None,
            idle_timeout: DEFAULT_IDLE_TIMEOUT,
            max_connections: DEFAULT_MAX_CONNECTIONS,
            max_connections_per_client: DEFAULT_MAX_CONNECTIONS_PER_CLIENT,
            trusted_proxies: Vec::new(),
            allow_private_links: false,
            request_timeout: DEFAULT_REQUEST_TIMEOUT,
            checkpoint_every: None,
            broker: None,
            max_attempts: crate::broker::DEFAULT_MAX_ATTEMPTS,
            stall_timeout: crate::broker::DEFAULT_STALL_TIMEOUT,
        }
    }

    /// What the accept loop holds to.
    pub fn limits(&self) -> crate::listen::Limits {
        crate::listen::Limits {
            header_timeout: self.idle_timeout,
            max_connections: self.max_connections,
            per_client: self.max_connections_per_client,
            exempt: self.trusted_proxies.iter().map(|ip| ip.to_canonical()).collect(),
        }
    }

    /// Check the combination of options.
    ///
    /// # Errors
    /// A message for people: `--no-auth` on a non-loopback address, zero
    /// limits, a concurrency outside 1 to 8, a negative retention.
    pub fn validate(&self) -> Result<(), String> {
        if !self.auth && !self.listen.ip().is_loopback() {
            return Err(format!(
                "--no-auth is only allowed on a loopback address (127.0.0.1 or ::1), not {}: anyone on the network could use and delete your jobs",
                self.listen
            ));
        }
        if self.max_upload_bytes == 0 {
            return Err("the upload limit must be above 0".into());
        }
        if self.jobs_per_hour == 0 {
            return Err("the rate limit must allow at least 1 job per hour".into());
        }
        if !(1..=stemroom_library::worker::MAX_THREADS).contains(&self.jobs) {
            return Err(format!("--jobs must be 1 to {}, got {}", stemroom_library::worker::MAX_THREADS, self.jobs));
        }
        if let Some(d) = self.keep_days {
            if !(d.is_finite() && d >= 0.0) {
                return Err(format!("--keep-days must be 0 or more, got {d}"));
            }
        }
        if self.max_connections == 0 {
            return Err("--max-connections must be at least 1".into());
        }
        if self.stall_timeout < Duration::from_secs(1) {
            return Err("--stall-timeout must be at least 1 s".into());
        }
        for origin in &self.cors {
            // An origin is scheme://host[:port], nothing after (RFC 6454
            // §6.1): a browser's `Origin` never matches `https://a.com/`.
            let host = origin.strip_prefix("http://").or_else(|| origin.strip_prefix("https://"));
            let bare = host.is_some_and(|h| !h.is_empty() && !h.contains(['/', '?', '#']));
            if origin != "*" && !bare {
                return Err(format!(
                    "--cors takes an origin such as https://example.com (no path, no trailing /) or *, got {origin}"
                ));
            }
        }
        Ok(())
    }
}

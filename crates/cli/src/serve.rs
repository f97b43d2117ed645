//! `stemroom serve`: argument parsing and printing for the HTTP service in
//! `stemroom_server`.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;

use clap::Args;
use stemroom_engine::units::Device;
use stemroom_server::config::{self, ServerConfig};

use crate::DeviceArg;

#[derive(Args)]
pub struct ServeArgs {
    /// Address and port to listen on. Anything but loopback needs the token
    /// (the default) and should sit behind a TLS proxy.
    #[arg(long, default_value = config::DEFAULT_LISTEN, value_name = "ADDR:PORT")]
    listen: SocketAddr,
    /// Data folder: job database, library, uploads, token (default: the
    /// app's, STEMROOM_DATA_DIR or ~/.local/share/app.stemroom.desktop; one
    /// process per folder, so the app and a server cannot share one at once).
    #[arg(long, value_name = "DIR")]
    data_dir: Option<PathBuf>,
    /// Songs separated at the same time, sharing one loaded model (1 to 8).
    #[arg(long, default_value_t = 1, value_name = "N")]
    jobs: usize,
    /// Delete finished jobs and their files N days after they finished
    /// (default: keep them).
    #[arg(long, value_name = "N")]
    keep_days: Option<f64>,
    /// Largest upload in MB.
    #[arg(long, default_value_t = config::DEFAULT_MAX_UPLOAD_BYTES / 1_000_000, value_name = "MB")]
    max_upload_mb: u64,
    /// Longest upload in minutes of audio (0: no limit).
    #[arg(long, default_value_t = config::DEFAULT_MAX_UPLOAD_SECONDS / 60, value_name = "MINUTES")]
    max_upload_minutes: u64,
    /// Refuse uploads (507) when the data folder's disk has less than this free, in MB.
    #[arg(long, default_value_t = config::DEFAULT_MIN_FREE_BYTES / 1_000_000, value_name = "MB")]
    min_free_mb: u64,
    /// New jobs one client address may create per hour.
    #[arg(long, default_value_t = config::DEFAULT_JOBS_PER_HOUR, value_name = "N")]
    jobs_per_hour: u32,
    /// Allow browser pages from this origin (repeat for more; `*` for any).
    /// Without it, no CORS headers are sent.
    #[arg(long, value_name = "ORIGIN")]
    cors: Vec<String>,
    /// Seconds a client may take to send its request headers, and the
    /// longest pause inside an upload, before the connection is dropped.
    /// After the first such span an upload must also average 500 bytes a
    /// second or more (Apache mod_reqtimeout's MinRate), or it is answered
    /// 408.
    #[arg(long, default_value_t = config::DEFAULT_IDLE_TIMEOUT.as_secs(), value_name = "SECONDS")]
    idle_timeout: u64,
    /// A TLS proxy in front (its address, repeat for more): the last
    /// address of its `X-Forwarded-For` is the client whose job quota counts.
    #[arg(long, value_name = "IP")]
    trusted_proxy: Vec<std::net::IpAddr>,
    /// Client connections served at once; more wait to be accepted.
    #[arg(long, default_value_t = config::DEFAULT_MAX_CONNECTIONS, value_name = "N")]
    max_connections: usize,
    /// Connections one public client address (an IPv6 client: its /64)
    /// may hold open; more are closed at once. Loopback, private-network
    /// and --trusted-proxy addresses are not counted; 0 = no limit.
    #[arg(long, default_value_t = config::DEFAULT_MAX_CONNECTIONS_PER_CLIENT, value_name = "N")]
    max_connections_per_client: usize,
    /// Take links to this machine and private networks (127.0.0.1, 10.x,
    /// 192.168.x, 100.64.x, 169.254.x, fc00::/7, fe80::/10 …): by default a client cannot make
    /// the server fetch from where only it can reach.
    #[arg(long)]
    allow_private_links: bool,
    /// Put jobs on this Redis broker for `stemroom worker`s instead of
    /// separating here (`redis://host:6379/0`, `rediss://` for TLS).
    #[arg(long, value_name = "URL")]
    broker: Option<String>,
    /// With --broker: claims a job may take (its workers died or failed)
    /// before it is marked failed.
    #[arg(long, default_value_t = stemroom_server::broker::DEFAULT_MAX_ATTEMPTS, value_name = "N")]
    max_attempts: u32,
    /// With --broker: seconds a running job may go without progress from
    /// its worker (a segment, input or stem bytes) before it goes back to
    /// the queue for another worker.
    #[arg(long, default_value_t = stemroom_server::broker::DEFAULT_STALL_TIMEOUT.as_secs_f64(), value_name = "SECONDS")]
    stall_timeout: f64,
    /// Serve without a token (only on a loopback address).
    #[arg(long)]
    no_auth: bool,
    /// Device for the network (default: the one saved in the data folder's
    /// settings, which the app's Settings choose when it shares the folder;
    /// auto when none was saved).
    #[arg(short = 'd', long)]
    pub(crate) device: Option<DeviceArg>,
    /// Network threads (default: all cores).
    #[arg(long, value_name = "N")]
    threads: Option<usize>,
    #[command(flatten)]
    pub(crate) runtime: crate::RuntimeArgs,
}

/// The app's data folder, which the server shares by default.
fn default_data_dir() -> PathBuf {
    if let Some(d) = std::env::var_os("STEMROOM_DATA_DIR").filter(|d| !d.is_empty()) {
        return PathBuf::from(d);
    }
    let base = std::env::var_os("XDG_DATA_HOME")
        .filter(|d| !d.is_empty())
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".local/share")))
        .unwrap_or_else(|| PathBuf::from("."));
    base.join("app.stemroom.desktop")
}

pub fn run(args: ServeArgs) -> ExitCode {
    crate::init_logging();
    let mut config = ServerConfig::new(args.data_dir.unwrap_or_else(default_data_dir));
    config.listen = args.listen;
    config.auth = !args.no_auth;
    config.jobs = args.jobs;
    config.keep_days = args.keep_days;
    config.max_upload_bytes = args.max_upload_mb.saturating_mul(1_000_000);
    config.max_upload_seconds = args.max_upload_minutes.saturating_mul(60);
    config.min_free_bytes = args.min_free_mb.saturating_mul(1_000_000);
    config.jobs_per_hour = args.jobs_per_hour;
    config.cors = args.cors;
    config.broker = args.broker;
    config.max_attempts = args.max_attempts;
    let Some(stall) = crate::seconds_option("stall-timeout", args.stall_timeout, 1.0) else {
        return ExitCode::from(crate::exit::INVALID_OPTIONS);
    };
    config.stall_timeout = stall;
    config.idle_timeout = std::time::Duration::from_secs(args.idle_timeout.max(1));
    config.max_connections = args.max_connections;
    config.max_connections_per_client = args.max_connections_per_client;
    config.trusted_proxies = args.trusted_proxy;
    config.allow_private_links = args.allow_private_links;
    config.device = args.device.map(Device::from);
    config.threads = args.threads;
    // Absolute: job messages name it, and the server names it back as "the
    // server's model folder" (a relative `models` would match the word).
    config.model_dir = args.runtime.model_dir.map(|d| std::path::absolute(&d).unwrap_or(d));
    config.runtime_library = args.runtime.ort_lib;
    if let Some(ms) = std::env::var("STEMROOM_CHECKPOINT_MS").ok().and_then(|v| v.parse::<u64>().ok()) {
        config.checkpoint_every = Some(std::time::Duration::from_millis(ms));
    }
    let data_dir = config.data_dir.clone();
    let result = stemroom_server::run_blocking(
        config,
        |ready| {
            outln!("Stemroom server listening on http://{}", ready.addr);
            outln!("data folder: {}", data_dir.display());
            match &ready.token {
                Some(t) if t.created => {
                    outln!("token (shown once; also in {}): {}", t.path.display(), t.value);
                }
                Some(t) => outln!("token: in {}", t.path.display()),
                None => outln!("no token: anyone on this machine can use the server"),
            }
            match &ready.worker_token {
                Some(t) if t.created => {
                    outln!(
                        "worker token, for `stemroom worker --token` (shown once; also in {}): {}",
                        t.path.display(),
                        t.value
                    );
                }
                Some(t) => outln!("worker token: in {}", t.path.display()),
                None => {}
            }
            if ready.recovered > 0 {
                outln!("{} interrupted job(s) back in the queue", ready.recovered);
            }
            use std::io::Write;
            let _ = std::io::stdout().flush();
        },
        || {
            // Asked again while the stop waits for requests and jobs.
            errln!("stemroom: interrupted again, exiting now (running jobs resume at the next start)");
            stemroom_library::link::kill_running();
            crate::exit_now(crate::exit::CANCELLED);
        },
    );
    match result {
        Ok(()) => {
            errln!("stemroom: server stopped; running jobs are back in the queue");
            ExitCode::SUCCESS
        }
        Err(e) => {
            errln!("stemroom: {e}");
            ExitCode::from(match e {
                stemroom_server::ServerError::Config(_) => crate::exit::INVALID_OPTIONS,
                _ => crate::exit::INTERNAL,
            })
        }
    }
}

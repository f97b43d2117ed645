//! `stemroom worker`: argument parsing for the remote worker in
//! `stemroom_server::remote`.

use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use clap::Args;
use stemroom_engine::units::Device;
use stemroom_server::remote::{self, RemoteConfig, RemoteError};

use crate::DeviceArg;

#[derive(Args)]
pub struct WorkerArgs {
    /// The server's address (`http://host:8000`), started with `stemroom serve --broker`.
    #[arg(long, value_name = "URL")]
    server: String,
    /// The server's worker token (its data folder's `worker-token`, made
    /// when it starts with --broker); default $STEMROOM_WORKER_TOKEN.
    #[arg(long, env = "STEMROOM_WORKER_TOKEN", hide_env_values = true, value_name = "TOKEN")]
    token: String,
    /// The broker: `redis://[user:password@]host:6379/0`, `rediss://` for TLS.
    #[arg(long, value_name = "URL")]
    broker: String,
    /// Device for the network.
    #[arg(short = 'd', long, default_value = "auto")]
    pub(crate) device: DeviceArg,
    /// Network threads (default: all cores).
    #[arg(long, value_name = "N")]
    threads: Option<usize>,
    /// Name in the server's status (default: host name, process id and 4
    /// random hex digits).
    #[arg(long, value_name = "NAME")]
    name: Option<String>,
    /// Seconds a job may go without a sign of life from its worker before
    /// another worker takes it over.
    #[arg(long, default_value_t = remote::DEFAULT_VISIBILITY.as_secs_f64(), value_name = "SECONDS")]
    visibility_timeout: f64,
    /// Seconds a job may show no life (no segment done, no input, download
    /// or stem bytes moving) before this worker stops keeping it, so that
    /// another worker takes it over; keep it above the longest segment.
    #[arg(long, default_value_t = remote::DEFAULT_STALL.as_secs_f64(), value_name = "SECONDS")]
    stall_timeout: f64,
    /// Folder in which the worker makes its scratch folder for inputs and
    /// stems, `stemroom-worker-PID-RANDOM`, removed at exit (default: the system's
    /// temporary folder); nothing else in it is touched.
    #[arg(long, value_name = "DIR")]
    work_dir: Option<PathBuf>,
    #[command(flatten)]
    pub(crate) runtime: crate::RuntimeArgs,
}

fn host_name() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .ok()
        .map(|h| h.trim().to_string())
        .filter(|h| !h.is_empty())
        .unwrap_or_else(|| "worker".into())
}

pub fn run(args: WorkerArgs) -> ExitCode {
    crate::init_logging();
    let Some(visibility) = crate::seconds_option("visibility-timeout", args.visibility_timeout, 0.5) else {
        return ExitCode::from(crate::exit::INVALID_OPTIONS);
    };
    let Some(stall) = crate::seconds_option("stall-timeout", args.stall_timeout, 1.0) else {
        return ExitCode::from(crate::exit::INVALID_OPTIONS);
    };
    let name = args.name.unwrap_or_else(|| {
        // With a random tail: containers sharing the host's network (and
        // so its host name) all run their worker as pid 1, and two workers
        // of one name are one holder to the server (each could take over
        // the other's job while it runs, unseen).
        let pid = format!("-{}-{:04x}", std::process::id(), random_u16());
        let host: String = host_name()
            .chars()
            .filter(|c| !c.is_control())
            .take(stemroom_server::broker::MAX_WORKER_NAME_CHARS - pid.len())
            .collect();
        host + &pid
    });
    if let Err(why) = stemroom_server::broker::check_worker_name(&name) {
        errln!("stemroom: --name: {why}");
        return ExitCode::from(crate::exit::INVALID_OPTIONS);
    }
    let config = RemoteConfig {
        server: args.server,
        token: args.token,
        broker: args.broker,
        device: Device::from(args.device),
        threads: args.threads,
        // A folder of its own inside the one given: only that is removed at exit.
        work_dir: remote::work_dir_in(&args.work_dir.unwrap_or_else(std::env::temp_dir)),
        name,
        model_dir: args.runtime.model_dir,
        runtime_library: args.runtime.ort_lib,
        visibility,
        stall,
    };
    let stop = Arc::new(AtomicBool::new(false));
    let flag = stop.clone();
    let first = std::sync::Mutex::new(None);
    // Started under `nohup`: its terminal closing does not stop it.
    let _ = stemroom_engine::signals::installing_handlers(|| {
        ctrlc::set_handler(move || {
            flag.store(true, Ordering::SeqCst);
            if crate::again_after_a_while(&first) {
                crate::exit_now(crate::exit::CANCELLED);
            }
            errln!("stemroom: stopping: the job in hand goes back to the queue");
        })
    });
    errln!("stemroom worker {} taking jobs from {}", config.name, config.server);
    // (Its scratch folder goes with it, removed by the worker that held it.)
    let result = remote::run_worker(&config, &stop);
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            errln!("stemroom: {e}");
            ExitCode::from(match e {
                RemoteError::Unauthorized(_) | RemoteError::Config(_) => crate::exit::INVALID_OPTIONS,
                RemoteError::Io(_) => crate::exit::OUTPUT,
                RemoteError::Runtime(_) => crate::exit::MISSING_RUNTIME,
            })
        }
    }
}

/// 16 bits from the OS's random source ([`stemroom_engine::files::random_u64`]).
fn random_u16() -> u16 {
    stemroom_engine::files::random_u64() as u16
}

//! The HTTP service inside the app (Settings → HTTP service): start, stop
//! and report it. It serves the app's own queue, worker and library (the
//! `stemroom serve` API), on loopback only, always with its token.

use std::net::{Ipv4Addr, SocketAddr};
use std::sync::Arc;

use serde::Serialize;
use specta::Type;
use stemroom_engine::ErrorCode;
use stemroom_server::{Embedded, Parts, ServerConfig};

use super::S;
use crate::error::AppError;

/// Port the service offers first (FastAPI/uvicorn's usual one).
pub const DEFAULT_PORT: u16 = 8000;

/// The service as Settings shows it.
#[derive(Debug, Clone, Serialize, Type)]
#[serde(rename_all = "camelCase")]
pub struct ServerInfo {
    pub running: bool,
    /// `http://127.0.0.1:PORT` while running.
    pub address: Option<String>,
    /// The bearer token clients send (`Authorization: Bearer …`), while running.
    pub token: Option<String>,
    /// The port it runs on, or is offered.
    pub port: u16,
}

fn info(server: Option<&Embedded>) -> ServerInfo {
    match server {
        Some(s) => ServerInfo {
            running: true,
            address: Some(format!("http://{}", s.addr)),
            token: Some(s.token.clone()),
            port: s.addr.port(),
        },
        None => ServerInfo { running: false, address: None, token: None, port: DEFAULT_PORT },
    }
}

#[tauri::command]
#[specta::specta]
pub async fn server_status(state: S<'_>) -> Result<ServerInfo, AppError> {
    Ok(info(state.server.lock().await.as_ref()))
}

/// Start the service on `127.0.0.1:port` (a running one is kept as is).
#[tauri::command]
#[specta::specta]
pub async fn start_server(state: S<'_>, port: u16) -> Result<ServerInfo, AppError> {
    let mut slot = state.server.lock().await;
    if slot.is_none() {
        if port == 0 {
            return Err(AppError { code: ErrorCode::InvalidOptions, message: "Choose a port from 1 to 65535.".into() });
        }
        let mut config = ServerConfig::new(state.data_dir.clone());
        config.listen = SocketAddr::from((Ipv4Addr::LOCALHOST, port));
        // A song deleted through the service is closed first if the player
        // has it open, and not opened until the deletion is over, as the
        // app's own delete does (`remove_job`). (Weak: the service lives in
        // the state.)
        let app_state = Arc::downgrade(state.inner());
        let before_delete: stemroom_server::service::BeforeDelete = Arc::new(move |id| {
            let mark = app_state.upgrade().map(|st| st.let_go_of_song(id));
            Box::new(mark) as Box<dyn Send>
        });
        let parts = Parts {
            queue: state.queue.clone(),
            worker: state.worker.clone(),
            events: state.server_events.clone(),
            before_delete: Some(before_delete),
        };
        let server = Embedded::start(parts, config).await.map_err(|e| match e {
            stemroom_server::ServerError::Bind { source, .. } if source.kind() == std::io::ErrorKind::AddrInUse => {
                AppError {
                    code: ErrorCode::InvalidOptions,
                    message: format!("Port {port} is in use by another program: choose another port."),
                }
            }
            // Ports below 1024 need administrator rights on Linux and macOS.
            stemroom_server::ServerError::Bind { source, .. }
                if source.kind() == std::io::ErrorKind::PermissionDenied =>
            {
                AppError {
                    code: ErrorCode::InvalidOptions,
                    message: format!(
                        "Port {port} needs administrator rights: choose a port from 1024 to 65535 (8000 is usual)."
                    ),
                }
            }
            e => AppError::internal(format!("The HTTP service could not start: {e}")),
        })?;
        tracing::info!("HTTP service listening on http://{}", server.addr);
        *slot = Some(server);
    }
    Ok(info(slot.as_ref()))
}

/// Stop the service (requests in flight get a few seconds; jobs go on).
#[tauri::command]
#[specta::specta]
pub async fn stop_server(state: S<'_>) -> Result<ServerInfo, AppError> {
    let server = state.server.lock().await.take();
    if let Some(s) = server {
        s.stop().await;
    }
    Ok(info(None))
}

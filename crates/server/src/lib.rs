//! `stemroom serve`: the library's queue, worker and songs as a local HTTP
//! service (axum on tokio), speaking the request and response shapes that
//! existing Demucs job servers use, so their clients work unchanged.
//!
//! Layout:
//! - [`config`]: what the command line sets (listen address, limits, retention).
//! - [`auth`]: the bearer token (`server-token` in the data folder) and the
//!   middleware that checks it.
//! - [`events`]: the worker's listener: latest progress per job and a
//!   broadcast of changes for server-sent events and synchronous requests.
//! - [`view`]: the JSON shapes clients read (job status, lists, health).
//! - [`form`]: turning a request (multipart, JSON or form) into a new job:
//!   options checked, the upload streamed to disk.
//! - [`upload`]: where uploads live, free-space checks, leftovers.
//! - [`archive`]: stems as a zip written straight to the response.
//! - [`routes`]: the handlers and the router.
//! - [`retention`]: removing finished jobs after `--keep-days`.
//! - [`openapi`]: the OpenAPI document generated from the handlers.
//! - [`listen`]: the accept loop (header-read timeout, graceful shutdown).
//! - [`broker`]: `--broker`: jobs on a Redis stream, the worker protocol.
//! - [`remote`]: `stemroom worker`, which runs those jobs on another machine.
//!
//! The server owns its data folder through the same
//! [`stemroom_library::lock::InstanceLock`] as the app: one process per
//! folder. Jobs live in the same SQLite queue and finished songs in the same
//! library, so a song separated through the API shows in the app's library
//! and the other way round.

pub mod archive;
pub mod auth;
pub mod broker;
pub mod config;
pub mod error;
pub mod events;
pub mod form;
pub mod listen;
pub mod openapi;
pub mod remote;
pub mod retention;
pub mod routes;
pub mod service;
pub mod upload;
pub mod view;

pub use config::ServerConfig;
pub use error::{ApiError, ServerError};
pub use service::{run, run_blocking, run_until, Embedded, Parts, Service};

//! The KalamDB server: configuration, logging, the layer stack and the accept loop around the
//! endpoints of `kalamdb-services` and the store of `kalamdb-rocksdb`.
//!
//! # Layout
//!
//! - [`config`]: `config.toml` → [`Config`], with defaults and validation naming the bad key
//!   (`config/`: the sections' schema, loading, and the checks that span sections).
//! - [`logging`]: console and file logs, text or JSON, rotated daily, hourly or never.
//! - [`metrics`]: the process-wide Prometheus recorder `GET /metrics` renders.
//! - [`stack`]: [`build_app`], the one composition root: each endpoint by name into the
//!   router's `Endpoints`, then the layers in order.
//! - [`serve`](mod@serve): the hyper-util accept loop: header read timeout, keep-alive, connection cap and
//!   graceful shutdown.
//! - [`protocol_errors`]: the connection IO wrapper that gives hyper's own answers to requests it
//!   cannot parse (400, 414, 431) the JSON error body.
//! - [`run`] (here): open the store, serve until told to stop, drain, flush and close the store.
//! - `main.rs`: the command line, signals and exit codes.
//!
//! # Status codes
//!
//! Everything the endpoints and layers answer: 200 (JSON, Prometheus text, or an event stream),
//! 400, 404, 405, 409, 413, 414, 415, 429, 431, 500, 503 (414 and 431, and the 400 for a request
//! that is not HTTP, come from [`protocol_errors`]).

pub mod config;
pub mod logging;
pub mod metrics;
pub mod protocol_errors;
pub mod serve;
pub mod stack;

use std::future::Future;
use std::sync::Arc;
use std::time::Instant;

use kalamdb_core::StoreHandle;
use kalamdb_rocksdb::{OpenError, RocksStore};
use tokio::net::TcpListener;

pub use config::Config;
pub use serve::{serve, Drain, ServeOptions};
pub use stack::build_app;

/// Opens the RocksDB store the configuration names and starts its writer and reader threads,
/// and its maintenance thread (the eraser, and retention when set).
pub fn open_store(config: &Config) -> Result<StoreHandle, OpenError> {
    let store = Arc::new(RocksStore::open(&config.store_options())?);
    store.start_maintenance();
    Ok(StoreHandle::with_read_limit(store, config.read_limit()))
}

/// Serves the application over `store` on `listener` until `shutdown` resolves; then ends the
/// open event streams, drains in-flight requests (up to `server.shutdown_timeout_ms`), flushes
/// and closes the store.
///
/// Returns how the drain ended, or the error from closing the store.
pub async fn run<F>(
    config: &Config,
    listener: TcpListener,
    store: StoreHandle,
    shutdown: F,
) -> Result<Drain, kalamdb_core::StoreError>
where
    F: Future<Output = ()>,
{
    let app = build_app(config, store.clone(), Instant::now());
    if let Ok(addr) = listener.local_addr() {
        tracing::info!(%addr, "listening");
    }
    let upkeep = tokio::spawn(metrics::upkeep(metrics::handle()));
    let streams = store.clone();
    let shutdown = async move {
        shutdown.await;
        // Streams never finish on their own: end them now, or the drain waits for its timeout.
        streams.end_streams();
    };
    let drain = serve(listener, app, shutdown, config.server.serve_options()).await;
    upkeep.abort();
    tracing::info!("flushing and closing the store");
    store.close().await?;
    tracing::info!("store closed");
    Ok(drain)
}

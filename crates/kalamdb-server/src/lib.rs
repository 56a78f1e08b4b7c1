//! The KalamDB server: configuration, logging, the layer stack and the accept loop around the
//! endpoints of `kalamdb-services` and the store of `kalamdb-rocksdb` (or, for several servers,
//! `kalamdb-postgres`).
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
//! - [`nats`]: the `nats` live bus, NATS core pub/sub spoken directly (the `postgres` bus is
//!   `kalamdb_postgres::bus`).
//! - [`open_store`] (here): the RocksDB store, or the PostgreSQL store and its live bus.
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
pub mod nats;
pub mod protocol_errors;
pub mod serve;
pub mod stack;

use std::future::Future;
use std::sync::Arc;
use std::time::Instant;

use kalamdb_core::StoreHandle;
use kalamdb_postgres::PgStore;
use kalamdb_rocksdb::RocksStore;

use config::{BackendSetting, BusSetting};
use tokio::net::TcpListener;

pub use config::Config;
pub use serve::{serve, Drain, ServeOptions};
pub use stack::build_app;

/// Why the store could not be opened.
#[derive(Debug, thiserror::Error)]
pub enum OpenError {
    /// The RocksDB store (`storage.backend = "rocksdb"`).
    #[error(transparent)]
    Rocksdb(#[from] kalamdb_rocksdb::OpenError),
    /// The PostgreSQL store (`storage.backend = "postgres"`).
    #[error(transparent)]
    Postgres(#[from] kalamdb_postgres::OpenError),
    /// Opening panicked: a bug.
    #[error("opening the store failed unexpectedly")]
    Panicked,
}

/// Opens the store the configuration names and starts its writer and reader threads: the
/// RocksDB store with its maintenance thread (the eraser, the log's bound while idle, and
/// retention when set), or the PostgreSQL store with the live bus `[live]` names.
pub async fn open_store(config: &Config) -> Result<StoreHandle, OpenError> {
    match config.storage.backend {
        BackendSetting::Rocksdb => {
            let store = Arc::new(RocksStore::open(&config.store_options())?);
            store.start_maintenance();
            Ok(StoreHandle::with_read_limit(store, config.read_limit()))
        }
        BackendSetting::Postgres => {
            let options = config
                .postgres_options()
                .map_err(|e| OpenError::Postgres(kalamdb_postgres::OpenError::Config(e)))?;
            // Connecting and migrating block, on the store's own runtime.
            let store = tokio::task::spawn_blocking(move || PgStore::open(&options))
                .await
                .map_err(|_| OpenError::Panicked)??;
            let handle = StoreHandle::with_read_limit(Arc::new(store), config.read_limit());
            let live = &config.live;
            match live.bus {
                BusSetting::Local => {}
                BusSetting::Nats => {
                    // Checked when the configuration was loaded.
                    let address = config::nats_address(&live.nats_url).unwrap_or_default();
                    handle.attach_bus(nats::NatsBus::start(
                        address,
                        live.channel.clone(),
                        handle.clone(),
                    ));
                }
                BusSetting::Postgres => {
                    handle.attach_bus(kalamdb_postgres::bus::PgBus::start(
                        &config.storage.postgres.url,
                        &live.channel,
                        handle.clone(),
                    ));
                }
            }
            Ok(handle)
        }
    }
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

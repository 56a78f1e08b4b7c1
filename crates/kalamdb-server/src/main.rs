//! `kalamdb-server [--config PATH] [--check-config]`: the KalamDB server binary.
//!
//! Exit codes: 0 after a clean shutdown or a valid `--check-config`; 2 for a configuration
//! error; 1 when the server cannot start (store, log file, port) or fails to close the store.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::Parser;
use kalamdb_server::config::Config;
use kalamdb_server::{logging, open_store, run, Drain};

/// KalamDB: a message store for chat and AI conversation history.
#[derive(Debug, Parser)]
#[command(version, about)]
struct Cli {
    /// The configuration file. Without it, ./config.toml is read when present, else the
    /// built-in defaults apply.
    #[arg(long, value_name = "PATH")]
    config: Option<PathBuf>,
    /// Print the effective configuration and exit.
    #[arg(long)]
    check_config: bool,
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let (config, source) = match Config::load(cli.config.as_deref()) {
        Ok(loaded) => loaded,
        Err(e) => {
            eprintln!("kalamdb-server: {e}");
            return ExitCode::from(2);
        }
    };
    if cli.check_config {
        println!("# effective configuration, from {source}");
        print!("{}", config.to_toml());
        return ExitCode::SUCCESS;
    }

    let _log_guard = match logging::init(&config.logging) {
        Ok(guard) => guard,
        Err(e) => {
            eprintln!("kalamdb-server: {e}");
            return ExitCode::FAILURE;
        }
    };
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(e) => {
            tracing::error!(error = %e, "cannot start the async runtime");
            return ExitCode::FAILURE;
        }
    };
    runtime.block_on(start(config, source))
}

async fn start(config: Config, source: kalamdb_server::config::ConfigSource) -> ExitCode {
    tracing::info!(
        version = env!("CARGO_PKG_VERSION"),
        config = %source,
        listen = %config.server.listen_addr(),
        backend = ?config.storage.backend,
        // Never the database URL, which may carry a password.
        storage = %match config.storage.backend {
            kalamdb_server::config::BackendSetting::Rocksdb => {
                config.storage.rocksdb_path.display().to_string()
            }
            kalamdb_server::config::BackendSetting::Postgres => {
                format!("schema {}", config.storage.postgres.schema)
            }
        },
        live_bus = ?config.live.bus,
        sync_writes = config.storage.sync_writes,
        read_concurrency = config.read_limit(),
        node_id = config.server.node_id,
        max_message_size = config.limits.max_message_size,
        max_metadata_size = config.limits.max_metadata_size,
        max_body_bytes = config.middleware.body_limit.max_bytes,
        request_timeout_ms = config.middleware.timeout.request_timeout_ms,
        max_query_limit = config.limits.max_query_limit,
        max_connections = config.server.max_connections,
        max_in_flight = config.middleware.concurrency.max_in_flight,
        rate_limit = config.middleware.rate_limit.enabled,
        stream_heartbeat_ms = config.stream.heartbeat_ms,
        max_subscribers = config.stream.max_subscribers,
        log_rotation = ?config.logging.rotation,
        "starting kalamdb-server"
    );
    let store = match open_store(&config).await {
        Ok(store) => store,
        Err(e) => {
            tracing::error!(error = %e, "cannot open the store");
            eprintln!("kalamdb-server: {e}");
            return ExitCode::FAILURE;
        }
    };
    let listener = match tokio::net::TcpListener::bind(config.server.listen_addr()).await {
        Ok(listener) => listener,
        Err(e) => {
            let addr = config.server.listen_addr();
            tracing::error!(%addr, error = %e, "cannot listen");
            eprintln!("kalamdb-server: cannot listen on {addr} (server.host, server.port): {e}");
            let _ = store.close().await;
            return ExitCode::FAILURE;
        }
    };
    match run(&config, listener, store, shutdown_signal()).await {
        Ok(drain) => {
            if drain == Drain::TimedOut {
                tracing::warn!("some requests were cut off by the shutdown timeout");
            }
            tracing::info!("shutdown complete");
            ExitCode::SUCCESS
        }
        Err(e) => {
            tracing::error!(error = %e, "closing the store failed");
            ExitCode::FAILURE
        }
    }
}

/// Resolves on the first SIGINT or SIGTERM. A second signal exits at once.
async fn shutdown_signal() {
    wait_for_signal().await;
    tracing::info!("shutdown signal received; stopping (send it again to exit at once)");
    tokio::spawn(async {
        wait_for_signal().await;
        tracing::warn!("second shutdown signal: exiting immediately");
        std::process::exit(130);
    });
}

async fn wait_for_signal() {
    let ctrl_c = tokio::signal::ctrl_c();
    #[cfg(unix)]
    {
        let mut terminate = match tokio::signal::unix::signal(
            tokio::signal::unix::SignalKind::terminate(),
        ) {
            Ok(terminate) => terminate,
            Err(e) => {
                tracing::warn!(error = %e, "cannot listen for SIGTERM; only SIGINT stops the server");
                let _ = ctrl_c.await;
                return;
            }
        };
        tokio::select! {
            _ = ctrl_c => {}
            _ = terminate.recv() => {}
        }
    }
    #[cfg(not(unix))]
    {
        let _ = ctrl_c.await;
    }
}

/// mimalloc rather than the system allocator: a request allocates a few dozen small, short-lived
/// blocks, and glibc's `free` alone cost about a sixth of the server's instructions per insert
/// (see docs/BENCHMARKS.md).
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

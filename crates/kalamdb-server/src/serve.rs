//! The accept loop: hyper-util's auto builder (HTTP/1.1 and h2c) over a tokio listener, the peer
//! address put into each request, connection limits, and graceful shutdown.
//!
//! Connection settings come from `[server]` ([`ServeOptions`]): an HTTP/1 client that does not
//! finish its request headers within `header_read_timeout_ms` is disconnected (hyper's timer
//! also covers the idle wait between keep-alive requests), and at most `max_connections` are
//! open at once. At the cap the loop stops accepting, so new clients wait in the kernel's listen
//! backlog rather than in a queue of ours. Each connection's IO is wrapped in
//! [`JsonProtocolErrors`], so the answers hyper makes up for requests it cannot parse carry the
//! JSON error body too.

use std::convert::Infallible;
use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use http::{Request, Response};
use hyper::body::Incoming;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use hyper_util::server::graceful::GracefulShutdown;
use hyper_util::service::TowerToHyperService;
use kalamdb_http::{ClientAddr, ResponseBody};
use tokio::net::TcpListener;
use tokio::sync::Semaphore;
use tower::{Service, ServiceExt};

use crate::protocol_errors::JsonProtocolErrors;

/// How long to back off after a failed accept (out of file descriptors, say) before retrying.
const ACCEPT_BACKOFF: Duration = Duration::from_millis(100);

/// How the drain of open connections ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Drain {
    /// Every in-flight request finished and its connection closed.
    Complete,
    /// The drain timeout passed; the remaining connections were dropped.
    TimedOut,
}

/// How the accept loop treats connections; built from `[server]` by
/// [`crate::config::ServerConfig::serve_options`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ServeOptions {
    /// On shutdown, how long in-flight requests may take before their connections are dropped.
    pub drain_timeout: Duration,
    /// How long an HTTP/1 client has to send a request's headers (and may sit idle between
    /// keep-alive requests).
    pub header_read_timeout: Duration,
    /// Keep HTTP/1.1 connections open between requests.
    pub keep_alive: bool,
    /// The most connections open at once.
    pub max_connections: usize,
}

/// Serves `app` on `listener` until `shutdown` resolves, then stops accepting, lets in-flight
/// requests finish for up to `options.drain_timeout`, and returns.
pub async fn serve<S, F>(listener: TcpListener, app: S, shutdown: F, options: ServeOptions) -> Drain
where
    S: Service<Request<Incoming>, Response = Response<ResponseBody>, Error = Infallible>
        + Clone
        + Send
        + 'static,
    S::Future: Send + 'static,
    F: Future<Output = ()>,
{
    let mut builder = auto::Builder::new(TokioExecutor::new());
    builder
        .http1()
        .timer(TokioTimer::new())
        .header_read_timeout(options.header_read_timeout)
        .keep_alive(options.keep_alive);
    let graceful = GracefulShutdown::new();
    let slots = Arc::new(Semaphore::new(options.max_connections));
    let mut at_capacity = false;
    tokio::pin!(shutdown);

    loop {
        // A slot first: at the cap, stop accepting until a connection closes.
        let slot = match Arc::clone(&slots).try_acquire_owned() {
            Ok(slot) => {
                at_capacity = false;
                slot
            }
            Err(_) => {
                if !at_capacity {
                    at_capacity = true;
                    tracing::warn!(
                        max_connections = options.max_connections,
                        "connection limit reached; new clients wait until one closes"
                    );
                }
                tokio::select! {
                    slot = Arc::clone(&slots).acquire_owned() => {
                        slot.expect("the connection semaphore is never closed")
                    }
                    () = &mut shutdown => break,
                }
            }
        };
        tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok((stream, peer)) => {
                    // Small JSON replies: send them now rather than waiting to coalesce.
                    let _ = stream.set_nodelay(true);
                    let service = TowerToHyperService::new(with_peer(app.clone(), peer));
                    let connection = builder
                        .serve_connection_with_upgrades(
                            JsonProtocolErrors::new(TokioIo::new(stream), peer),
                            service,
                        )
                        .into_owned();
                    let connection = graceful.watch(connection);
                    tokio::spawn(async move {
                        if let Err(e) = connection.await {
                            tracing::debug!(%peer, error = %e, "connection ended with an error");
                        }
                        drop(slot);
                    });
                }
                Err(e) => {
                    tracing::warn!(error = %e, "accept failed; retrying");
                    tokio::time::sleep(ACCEPT_BACKOFF).await;
                }
            },
            () = &mut shutdown => break,
        }
    }

    drop(listener);
    tracing::info!("stopped accepting connections; draining in-flight requests");
    tokio::select! {
        () = graceful.shutdown() => {
            tracing::info!("all connections closed");
            Drain::Complete
        }
        () = tokio::time::sleep(options.drain_timeout) => {
            tracing::warn!(timeout_ms = options.drain_timeout.as_millis() as u64, "drain timed out; closing the remaining connections");
            Drain::TimedOut
        }
    }
}

/// Puts the connection's peer address into each request's extensions.
fn with_peer<S>(
    app: S,
    peer: SocketAddr,
) -> impl Service<Request<Incoming>, Response = S::Response, Error = S::Error, Future = S::Future> + Clone
where
    S: Service<Request<Incoming>> + Clone,
{
    app.map_request(move |mut request: Request<Incoming>| {
        request.extensions_mut().insert(ClientAddr(peer));
        request
    })
}

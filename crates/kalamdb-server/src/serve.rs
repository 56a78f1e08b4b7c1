//! The accept loop: hyper-util's auto builder (HTTP/1.1 and h2c) over a tokio listener, the peer
//! address put into each request, and graceful shutdown.

use std::convert::Infallible;
use std::future::Future;
use std::net::SocketAddr;
use std::time::Duration;

use http::{Request, Response};
use hyper::body::Incoming;
use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::server::conn::auto;
use hyper_util::server::graceful::GracefulShutdown;
use hyper_util::service::TowerToHyperService;
use kalamdb_http::{ClientAddr, ResponseBody};
use tokio::net::TcpListener;
use tower::{Service, ServiceExt};

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

/// Serves `app` on `listener` until `shutdown` resolves, then stops accepting, lets in-flight
/// requests finish for up to `drain_timeout`, and returns.
pub async fn serve<S, F>(
    listener: TcpListener,
    app: S,
    shutdown: F,
    drain_timeout: Duration,
) -> Drain
where
    S: Service<Request<Incoming>, Response = Response<ResponseBody>, Error = Infallible>
        + Clone
        + Send
        + 'static,
    S::Future: Send + 'static,
    F: Future<Output = ()>,
{
    let builder = auto::Builder::new(TokioExecutor::new());
    let graceful = GracefulShutdown::new();
    tokio::pin!(shutdown);

    loop {
        tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok((stream, peer)) => {
                    // Small JSON replies: send them now rather than waiting to coalesce.
                    let _ = stream.set_nodelay(true);
                    let service = TowerToHyperService::new(with_peer(app.clone(), peer));
                    let connection = builder
                        .serve_connection_with_upgrades(TokioIo::new(stream), service)
                        .into_owned();
                    let connection = graceful.watch(connection);
                    tokio::spawn(async move {
                        if let Err(e) = connection.await {
                            tracing::debug!(%peer, error = %e, "connection ended with an error");
                        }
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
        () = tokio::time::sleep(drain_timeout) => {
            tracing::warn!(timeout_ms = drain_timeout.as_millis() as u64, "drain timed out; closing the remaining connections");
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

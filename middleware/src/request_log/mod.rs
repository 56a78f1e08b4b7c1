//! Request log: one `tracing` event per request when its response head is ready: method, path,
//! status, latency in milliseconds, response bytes, request id, peer address and principal (the
//! auth layer's `key:<name>` or `user:<id>`, `-` without one). It is `info`,
//! or `warn` for a request slower than `slow_request_ms`.
//!
//! It logs the path, never the query string (where a stream's `access_token` travels) or the
//! body: neither message content nor credentials reach the log.
//! Place it outside the rescue layer, so that it sees every answer as the client gets it; an
//! error that does reach it is passed on untouched and logged as `status=error`.
//! Latency is measured with `tokio::time::Instant`, so paused-time tests see exact figures.
//! `response_bytes` is the body's exact length when known up front (every JSON reply); a
//! streamed body of unknown length logs `-`.
//!
//! ```
//! use std::time::Duration;
//!
//! use http::{Request, Response};
//! use kalamdb_http::{full, BoxError};
//! use kalamdb_middleware::request_log::RequestLogLayer;
//! use tower::{ServiceBuilder, ServiceExt};
//!
//! # tokio::runtime::Runtime::new().unwrap().block_on(async {
//! let service = ServiceBuilder::new()
//!     .layer(RequestLogLayer::new(Duration::from_secs(1)))
//!     .service_fn(|_: Request<()>| async { Ok::<_, BoxError>(Response::new(full("ok"))) });
//! let response = service.oneshot(Request::new(())).await.unwrap();
//! assert_eq!(response.status(), 200);
//! # });
//! ```

mod future;
mod layer;
mod service;

/// A field that may be missing: formatted, as itself or `-`, only when the line is written, so a
/// level filter that drops request lines costs no allocation.
struct OrDash<T>(Option<T>);

impl<T: std::fmt::Display> std::fmt::Display for OrDash<T> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match &self.0 {
            Some(value) => value.fmt(f),
            None => f.write_str("-"),
        }
    }
}

pub use future::ResponseFuture;
pub use layer::RequestLogLayer;
pub use service::RequestLog;

use std::time::Duration;

use serde::{Deserialize, Serialize};

/// `[middleware.request_log]`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Config {
    /// Log one line per request. Default true.
    pub enabled: bool,
    /// A request whose response head takes at least this many milliseconds logs at `warn`.
    /// Default 1000.
    pub slow_request_ms: u64,
}

impl Default for Config {
    fn default() -> Self {
        Self {
            enabled: true,
            slow_request_ms: 1000,
        }
    }
}

impl Config {
    /// The layer these settings describe, or `None` when it is switched off.
    pub fn layer(&self) -> Option<RequestLogLayer> {
        self.enabled
            .then(|| RequestLogLayer::new(Duration::from_millis(self.slow_request_ms)))
    }
}

#[cfg(test)]
mod tests;

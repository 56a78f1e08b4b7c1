//! Request log: one `tracing` event per request, at `info`, when its response head is ready:
//! method, path, status, latency in milliseconds and the peer address.
//!
//! It logs the path, never the query string or the body: message content never reaches the log.
//! An error from the layers below is logged with the status the rescue layer will give it.
//! Latency is measured with `tokio::time::Instant`, so paused-time tests see exact figures.
//!
//! ```
//! use http::{Request, Response};
//! use kalamdb_http::{full, BoxError};
//! use kalamdb_middleware::request_log::RequestLogLayer;
//! use tower::{ServiceBuilder, ServiceExt};
//!
//! # tokio::runtime::Runtime::new().unwrap().block_on(async {
//! let service = ServiceBuilder::new()
//!     .layer(RequestLogLayer::new())
//!     .service_fn(|_: Request<()>| async { Ok::<_, BoxError>(Response::new(full("ok"))) });
//! let response = service.oneshot(Request::new(())).await.unwrap();
//! assert_eq!(response.status(), 200);
//! # });
//! ```

mod future;
mod layer;
mod service;

pub use future::ResponseFuture;
pub use layer::RequestLogLayer;
pub use service::RequestLog;

#[cfg(test)]
mod tests;

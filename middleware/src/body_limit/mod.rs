//! Body limit: refuses request bodies over `middleware.body_limit.max_bytes` with 413
//! `payload_too_large`.
//!
//! A declared `Content-Length` over the limit is refused before a byte of the body is read. A
//! body without one (chunked, HTTP/2) is counted as it streams: the read that crosses the limit
//! fails with [`BodyTooLarge`], which the endpoint reading it answers as 413.
//!
//! ```
//! use bytes::Bytes;
//! use http::{Request, Response};
//! use http_body_util::Full;
//! use kalamdb_http::{full, BoxError, ResponseBody};
//! use kalamdb_middleware::{body_limit, rescue::RescueLayer};
//! use tower::{ServiceBuilder, ServiceExt};
//!
//! # tokio::runtime::Runtime::new().unwrap().block_on(async {
//! let config = body_limit::Config { max_bytes: 4 };
//! let service = ServiceBuilder::new()
//!     .layer(RescueLayer::new())
//!     .layer(config.layer())
//!     .service_fn(|_req: Request<_>| async { Ok::<_, BoxError>(Response::new(full("ok"))) });
//! let request = Request::builder()
//!     .header("content-length", "5")
//!     .body(Full::new(Bytes::from_static(b"12345")))
//!     .unwrap();
//! assert_eq!(service.oneshot(request).await.unwrap().status(), 413);
//! # });
//! ```

mod body;
mod layer;
mod service;

pub use crate::refusal::ResponseFuture;
pub use body::LimitedBody;
pub use layer::BodyLimitLayer;
pub use service::BodyLimit;

pub use kalamdb_http::BodyTooLarge;
use serde::{Deserialize, Serialize};

/// `[middleware.body_limit]`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Config {
    /// The largest request body accepted, in bytes. Default 8 MiB: room for a 1 MiB message
    /// even with every character escaped as `\uXXXX`.
    pub max_bytes: u64,
}

impl Default for Config {
    fn default() -> Self {
        Self {
            max_bytes: 8 * 1024 * 1024,
        }
    }
}

impl Config {
    /// The layer these settings describe.
    pub fn layer(&self) -> BodyLimitLayer {
        BodyLimitLayer::new(self.max_bytes)
    }
}

#[cfg(test)]
mod tests;

//! Request id: every request gets an id, carried in its extensions as
//! [`kalamdb_http::RequestId`], recorded in its log span by the request log, and returned on the
//! response as `x-request-id`.
//!
//! A client's own `x-request-id` is kept when it is 1 to 128 visible ASCII characters and
//! `trust_incoming` is on; otherwise the server makes a UUID v4. Either way the response carries
//! the id the server logged, so a report from a client can be found in the logs.
//!
//! ```
//! use http::{Request, Response};
//! use kalamdb_http::{full, BoxError};
//! use kalamdb_middleware::request_id;
//! use tower::{ServiceBuilder, ServiceExt};
//!
//! # tokio::runtime::Runtime::new().unwrap().block_on(async {
//! let service = ServiceBuilder::new()
//!     .layer(request_id::Config::default().layer())
//!     .service_fn(|_: Request<()>| async { Ok::<_, BoxError>(Response::new(full("ok"))) });
//! let request = Request::builder().header("x-request-id", "abc-1").body(()).unwrap();
//! let response = service.oneshot(request).await.unwrap();
//! assert_eq!(response.headers()["x-request-id"], "abc-1");
//! # });
//! ```

mod future;
mod layer;
mod service;

pub use future::ResponseFuture;
pub use layer::RequestIdLayer;
pub use service::SetRequestId;

use http::HeaderName;
use serde::{Deserialize, Serialize};

/// The header the id travels in, both ways.
pub const HEADER: HeaderName = HeaderName::from_static("x-request-id");

/// The longest client id kept; a longer one is replaced.
pub const MAX_LEN: usize = 128;

/// `[middleware.request_id]`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Config {
    /// Keep a well-formed `x-request-id` sent by the client (a proxy's id, say) instead of
    /// making a new one. Default true.
    pub trust_incoming: bool,
}

impl Default for Config {
    fn default() -> Self {
        Self {
            trust_incoming: true,
        }
    }
}

impl Config {
    /// The layer these settings describe.
    pub fn layer(&self) -> RequestIdLayer {
        RequestIdLayer::new(self.trust_incoming)
    }
}

/// Whether a client's id is worth keeping: short, visible ASCII, so it logs as one token.
fn is_acceptable(value: &http::HeaderValue) -> bool {
    let bytes = value.as_bytes();
    !bytes.is_empty() && bytes.len() <= MAX_LEN && bytes.iter().all(|b| b.is_ascii_graphic())
}

#[cfg(test)]
mod tests;

//! Timing: how long each request took, as a `Server-Timing: app;dur=<ms>` header on its response
//! and as the figures the metrics endpoint publishes.
//!
//! Each request, answered or failed, records into the [`metrics`] facade:
//!
//! | metric | kind | labels |
//! | --- | --- | --- |
//! | [`REQUESTS_TOTAL`] | counter | `route`, `method`, `status` |
//! | [`REQUEST_DURATION_SECONDS`] | histogram | `route` |
//! | [`REQUESTS_IN_FLIGHT`] | gauge | |
//!
//! The route label comes from a function the server passes in (the router's route templates,
//! `unmatched` for anything else) and the method label is a standard method or `other`, so a
//! client cannot grow the number of series. Until a recorder is installed the figures go nowhere
//! and cost next to nothing. A layer looks each series' handle up once and keeps it, so it
//! records into the recorder that was in effect when that series first occurred: install the
//! recorder before serving. Place it outside the rescue layer so that every answer, refusals
//! included, carries the header and is counted with the status the client got; an error that
//! does reach it passes on untouched, counted as status `error`.
//!
//! ```
//! use http::{Request, Response};
//! use kalamdb_http::{full, BoxError};
//! use kalamdb_middleware::timing;
//! use tower::{ServiceBuilder, ServiceExt};
//!
//! # tokio::runtime::Runtime::new().unwrap().block_on(async {
//! let service = ServiceBuilder::new()
//!     .option_layer(timing::Config::default().layer(|_path| "/all"))
//!     .service_fn(|_: Request<()>| async { Ok::<_, BoxError>(Response::new(full("ok"))) });
//! let response = service.oneshot(Request::new(())).await.unwrap();
//! assert!(response.headers()["server-timing"].to_str().unwrap().starts_with("app;dur="));
//! # });
//! ```

mod future;
mod handles;
mod layer;
mod service;

pub use future::ResponseFuture;
pub use layer::TimingLayer;
pub use service::Timing;

use http::Method;
use serde::{Deserialize, Serialize};

/// Requests answered, by method and status.
pub const REQUESTS_TOTAL: &str = "kalamdb_http_requests_total";
/// Time from the request entering the layer to its response head, in seconds.
pub const REQUEST_DURATION_SECONDS: &str = "kalamdb_http_request_duration_seconds";
/// Requests entered and not yet answered.
pub const REQUESTS_IN_FLIGHT: &str = "kalamdb_http_requests_in_flight";

/// Names the route of a request path for the `route` label; it must return few distinct values.
pub type RouteOf = fn(&str) -> &'static str;

/// `[middleware.timing]`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Config {
    /// Add `Server-Timing` and record request metrics. Default true.
    pub enabled: bool,
}

impl Default for Config {
    fn default() -> Self {
        Self { enabled: true }
    }
}

impl Config {
    /// The layer these settings describe, labelling routes with `route_of`, or `None` when it
    /// is switched off.
    pub fn layer(&self, route_of: RouteOf) -> Option<TimingLayer> {
        self.enabled.then(|| TimingLayer::new(route_of))
    }
}

/// The method as a label with a fixed set of values.
fn method_label(method: &Method) -> &'static str {
    match *method {
        Method::GET => "GET",
        Method::POST => "POST",
        Method::PUT => "PUT",
        Method::DELETE => "DELETE",
        Method::HEAD => "HEAD",
        Method::OPTIONS => "OPTIONS",
        Method::PATCH => "PATCH",
        _ => "other",
    }
}

#[cfg(test)]
mod tests;

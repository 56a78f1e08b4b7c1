//! Concurrency: at most `max_in_flight` requests are handled at once; a request beyond that is
//! shed at once with 503 `overloaded` and `Retry-After: 1` (by the rescue layer). Nothing waits
//! in a queue, so a burst cannot build up a backlog of requests whose clients gave up long ago.
//!
//! This is tower's [`ConcurrencyLimit`] under tower's [`LoadShed`]; this module owns their
//! settings. A slot is taken when a request is admitted and given back when its response head is
//! ready or its future is dropped (a timeout below frees it).
//!
//! ```
//! use http::{Request, Response};
//! use kalamdb_http::{full, BoxError};
//! use kalamdb_middleware::{concurrency, rescue::RescueLayer};
//! use tower::{ServiceBuilder, ServiceExt};
//!
//! # tokio::runtime::Runtime::new().unwrap().block_on(async {
//! let service = ServiceBuilder::new()
//!     .layer(RescueLayer::new())
//!     .option_layer(concurrency::Config::default().layer())
//!     .service_fn(|_: Request<()>| async { Ok::<_, BoxError>(Response::new(full("ok"))) });
//! assert_eq!(service.oneshot(Request::new(())).await.unwrap().status(), 200);
//! # });
//! ```

use kalamdb_http::BoxError;
use serde::{Deserialize, Serialize};
pub use tower::limit::ConcurrencyLimit;
pub use tower::load_shed::error::Overloaded;
pub use tower::load_shed::LoadShed;
use tower_layer::Layer;

use crate::InvalidSetting;

/// Requests shed because `max_in_flight` were already being handled.
pub const SHED_TOTAL: &str = "kalamdb_http_requests_shed_total";

/// The service [`ConcurrencyLayer`] builds: tower's shedding limit, counting what it sheds.
pub type Concurrency<S> =
    tower::util::MapErr<LoadShed<ConcurrencyLimit<S>>, fn(BoxError) -> BoxError>;

/// `[middleware.concurrency]`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Config {
    /// Limit requests in flight. Default true.
    pub enabled: bool,
    /// The most requests handled at once; more are answered 503 `overloaded`. Default 1024.
    pub max_in_flight: usize,
}

impl Default for Config {
    fn default() -> Self {
        Self {
            enabled: true,
            max_in_flight: 1024,
        }
    }
}

impl Config {
    /// Checks the settings; the error names the key.
    pub fn validate(&self) -> Result<(), InvalidSetting> {
        if self.max_in_flight == 0 {
            return Err(InvalidSetting::new(
                "middleware.concurrency.max_in_flight",
                "must be at least 1",
            ));
        }
        Ok(())
    }

    /// The layer these settings describe, or `None` when it is switched off.
    pub fn layer(&self) -> Option<ConcurrencyLayer> {
        self.enabled.then_some(ConcurrencyLayer {
            max_in_flight: self.max_in_flight,
        })
    }
}

/// Wraps a service in a concurrency limit that sheds instead of waiting.
///
/// Each service it builds has its own slots, shared by that service's clones.
#[derive(Debug, Clone, Copy)]
pub struct ConcurrencyLayer {
    max_in_flight: usize,
}

impl<S> Layer<S> for ConcurrencyLayer {
    type Service = Concurrency<S>;

    fn layer(&self, inner: S) -> Self::Service {
        let shedding = LoadShed::new(ConcurrencyLimit::new(inner, self.max_in_flight));
        tower::util::MapErr::new(shedding, count_shed as fn(BoxError) -> BoxError)
    }
}

fn count_shed(error: BoxError) -> BoxError {
    if error.is::<Overloaded>() {
        metrics::counter!(SHED_TOTAL).increment(1);
    }
    error
}

#[cfg(test)]
mod tests;

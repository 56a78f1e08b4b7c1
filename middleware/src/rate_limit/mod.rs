//! Rate limit: refuses requests over `requests_per_second` (with bursts up to `burst`) with
//! 429 `rate_limited` and a `Retry-After` taken from the limiter. It never makes a request wait.
//!
//! The limiter is [governor]'s GCRA: `key = "ip"` keeps one allowance per peer IP address,
//! `key = "principal"` one per API key or user (the auth layer's [`kalamdb_http::Principal`],
//! so it must sit inside the auth layer) and per peer IP address for requests without one,
//! `key = "global"` one for the whole server. Per-IP state for peers that have gone quiet is
//! pruned at most once per `prune_interval_ms`, by the first request after the interval, so the
//! table grows with the number of recently active peers, not with every address ever seen.
//!
//! A refused request never reaches the layers below: it holds no concurrency slot and reads no
//! body. To make that so without asking the inner service for readiness first, the service
//! clones its inner service for each admitted request (the stack's services are cheap clones).
//!
//! Disabled by default. The peer is the TCP peer: behind a reverse proxy every client shares
//! the proxy's address, so use `key = "global"` there or limit at the proxy.
//!
//! ```
//! use http::{Request, Response};
//! use kalamdb_http::{full, BoxError};
//! use kalamdb_middleware::{rate_limit, rescue::RescueLayer};
//! use tower::{Service, ServiceBuilder, ServiceExt};
//!
//! # tokio::runtime::Runtime::new().unwrap().block_on(async {
//! let config = rate_limit::Config {
//!     enabled: true,
//!     requests_per_second: 1,
//!     burst: 1,
//!     ..rate_limit::Config::default()
//! };
//! let mut service = ServiceBuilder::new()
//!     .layer(RescueLayer::new())
//!     .option_layer(config.layer())
//!     .service_fn(|_: Request<()>| async { Ok::<_, BoxError>(Response::new(full("ok"))) });
//! let first = service.ready().await.unwrap().call(Request::new(())).await.unwrap();
//! let second = service.ready().await.unwrap().call(Request::new(())).await.unwrap();
//! assert_eq!((first.status().as_u16(), second.status().as_u16()), (200, 429));
//! assert_eq!(second.headers()["retry-after"], "1");
//! # });
//! ```
//!
//! [governor]: https://docs.rs/governor

mod layer;
mod limiter;
mod service;

pub use crate::refusal::ResponseFuture;
pub use layer::RateLimitLayer;
pub use service::RateLimit;

use serde::{Deserialize, Serialize};

use crate::InvalidSetting;

/// Requests refused by the rate limit.
pub const RATE_LIMITED_TOTAL: &str = "kalamdb_http_requests_rate_limited_total";

/// `[middleware.rate_limit]`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Config {
    /// Limit request rates. Default false.
    pub enabled: bool,
    /// Whose allowance a request spends: `ip` (its peer address), `principal` (its API key or
    /// user, else its peer address) or `global`. Default `ip`.
    pub key: KeyBy,
    /// The sustained rate each key may make requests at. Default 100; at least 1.
    pub requests_per_second: u32,
    /// How many requests a key may make at once after being quiet. Default 200; at least 1.
    pub burst: u32,
    /// How often per-IP state of quiet peers is dropped, in milliseconds. Default 60000.
    pub prune_interval_ms: u64,
}

/// `middleware.rate_limit.key`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum KeyBy {
    /// One allowance per peer IP address.
    Ip,
    /// One allowance per principal (API key or user); per peer IP address without one.
    Principal,
    /// One allowance for the whole server.
    Global,
}

impl Default for Config {
    fn default() -> Self {
        Self {
            enabled: false,
            key: KeyBy::Ip,
            requests_per_second: 100,
            burst: 200,
            prune_interval_ms: 60_000,
        }
    }
}

impl Config {
    /// Checks the settings; the error names the key.
    pub fn validate(&self) -> Result<(), InvalidSetting> {
        if self.requests_per_second == 0 {
            return Err(InvalidSetting::new(
                "middleware.rate_limit.requests_per_second",
                "must be at least 1",
            ));
        }
        if self.burst == 0 {
            return Err(InvalidSetting::new(
                "middleware.rate_limit.burst",
                "must be at least 1",
            ));
        }
        if self.prune_interval_ms == 0 {
            return Err(InvalidSetting::new(
                "middleware.rate_limit.prune_interval_ms",
                "must be at least 1",
            ));
        }
        Ok(())
    }

    /// The layer these settings describe on the real clock, or `None` when it is switched off.
    ///
    /// # Panics
    /// When the settings fail [`Config::validate`].
    pub fn layer(&self) -> Option<RateLimitLayer> {
        self.enabled
            .then(|| RateLimitLayer::with_clock(self, governor::clock::DefaultClock::default()))
    }
}

#[cfg(test)]
mod tests;

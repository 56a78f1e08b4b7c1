//! KalamDB's reusable tower layers, one module each.
//!
//! Each layer is a folder in the style of tower's own: `layer.rs` (the cheap, cloneable
//! `FooLayer`), `service.rs` (`Foo<S>`), `future.rs` (a pin-projected `ResponseFuture`, no boxing),
//! and, where it has settings, a serde `Config` that lives under `[middleware.<name>]` in the
//! server's config and builds the layer with `Config::layer()`.
//!
//! Layers reject with typed errors ([`kalamdb_http::BodyTooLarge`],
//! [`tower::timeout::error::Elapsed`], [`tower::load_shed::error::Overloaded`],
//! [`kalamdb_http::ApiError`]); the [`rescue`] layer turns every one of them, and any panic, into
//! the one JSON error body. The few layers outside it (request id, request log, timing, CORS)
//! never fail, so they see every answer exactly as the client gets it. Only the server's
//! `stack.rs` orders the layers.
//!
//! # Layout
//!
//! In stack order, outermost first (the server's `stack.rs` says why each sits where it does):
//!
//! | module | config | answers |
//! | --- | --- | --- |
//! | [`request_id`] | `[middleware.request_id]` | nothing: sets `x-request-id` |
//! | [`request_log`] | `[middleware.request_log]` | nothing: one log line per request |
//! | [`timing`] | `[middleware.timing]` | nothing: `Server-Timing` and request metrics |
//! | [`cors`] | `[middleware.cors]` | preflights |
//! | [`rescue`] | none | 500 `internal` for panics and unknown errors; renders all the others |
//! | [`auth`] | `[auth]` | 401 `unauthorized`, 403 `forbidden`; sets the [`kalamdb_http::Principal`] |
//! | [`rate_limit`] | `[middleware.rate_limit]` | 429 `rate_limited` |
//! | [`concurrency`] | `[middleware.concurrency]` | 503 `overloaded` |
//! | [`timeout`] | `[middleware.timeout]` | 503 `timeout` |
//! | [`body_limit`] | `[middleware.body_limit]` | 413 `payload_too_large` |

pub mod auth;
pub mod body_limit;
pub mod concurrency;
pub mod cors;
pub mod rate_limit;
mod refusal;
pub mod request_id;
pub mod request_log;
pub mod rescue;
pub mod timeout;
pub mod timing;

/// A setting a layer refuses: the full key (`middleware.<layer>.<key>`) and what is wrong.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InvalidSetting {
    /// The key as it is written in `config.toml`.
    pub key: &'static str,
    /// What is wrong with its value.
    pub message: String,
}

impl InvalidSetting {
    /// An error for `key`.
    pub fn new(key: &'static str, message: impl Into<String>) -> Self {
        Self {
            key,
            message: message.into(),
        }
    }
}

impl std::fmt::Display for InvalidSetting {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}: {}", self.key, self.message)
    }
}

impl std::error::Error for InvalidSetting {}

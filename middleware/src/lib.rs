//! KalamDB's reusable tower layers, one module each.
//!
//! Each layer is a folder in the style of tower's own: `layer.rs` (the cheap, cloneable
//! `FooLayer`), `service.rs` (`Foo<S>`), `future.rs` (a pin-projected `ResponseFuture`, no boxing),
//! and, where it has settings, a serde `Config` that lives under `[middleware.<name>]` in the
//! server's config and builds the layer with `Config::layer()`.
//!
//! Layers reject with typed errors ([`kalamdb_http::BodyTooLarge`],
//! [`tower::timeout::error::Elapsed`], [`kalamdb_http::ApiError`]); the outermost [`rescue`] layer
//! turns every one of them, and any panic, into the one JSON error body. Only the server's
//! `stack.rs` orders the layers.
//!
//! # Layout
//!
//! | module | config | answers |
//! | --- | --- | --- |
//! | [`rescue`] | none | 500 `internal` for panics and unknown errors; renders all the others |
//! | [`request_log`] | none | nothing: logs method, path, status, latency, peer |
//! | [`timeout`] | `[middleware.timeout] request_timeout_ms` | 503 `timeout` |
//! | [`body_limit`] | `[middleware.body_limit] max_bytes` | 413 `payload_too_large` |

pub mod body_limit;
pub mod request_log;
pub mod rescue;
pub mod timeout;

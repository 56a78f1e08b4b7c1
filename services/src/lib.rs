//! KalamDB's endpoints, each a standalone [`tower_service::Service`], and the [`Router`].
//!
//! Every endpoint holds only what it needs (a [`kalamdb_core::StoreHandle`], its limits), is built
//! with `new()`, is generic over the request body (tests pass `Full<Bytes>`), is always ready, and
//! answers every outcome as a response: its error type is [`std::convert::Infallible`].
//!
//! # Layout
//!
//! | module | route | success |
//! | --- | --- | --- |
//! | [`insert_message`] | `POST /api/v1/messages` | 200 `{msg_id, conversation_id, timestamp}` |
//! | [`insert_batch`] | `POST /api/v1/messages/batch` | 200 `{messages: [{msg_id, conversation_id, timestamp}]}` |
//! | [`get_message`] | `GET /api/v1/messages/{msg_id}` | 200 the message |
//! | [`query_messages`] | `POST /api/v1/query` | 200 `{messages, count, has_more, next_cursor}` |
//! | [`stream_messages`] | `GET /api/v1/conversations/{conversation_id}/stream` | 200 `text/event-stream`, one event per message |
//! | [`health`] | `GET /health` | 200 `{status, version, uptime_secs, storage}` |
//! | [`metrics`] | `GET /metrics` | 200 Prometheus text |
//! | [`router`] | everything | 404 / 405 JSON for unknown paths and methods |
//!
//! Adding an endpoint is one module here and one arm in [`router`].
//!
//! # Status codes
//!
//! 200, 400 (`invalid_json`, `validation_failed`), 404, 405, 409, 413, 415, 500, 503
//! (`unavailable`, `overloaded` past `stream.max_subscribers`, and 503 `degraded` health).
//! [`route_name`] gives the layers a route label for a path.

use std::convert::Infallible;
use std::future::Future;
use std::pin::Pin;

use http::Response;
use kalamdb_http::ResponseBody;

pub mod get_message;
pub mod health;
pub mod insert_batch;
pub mod insert_message;
pub mod metrics;
pub mod query_messages;
pub mod router;
pub mod stream_messages;

pub use get_message::GetMessage;
pub use health::Health;
pub use insert_batch::InsertBatch;
pub use insert_message::InsertMessage;
pub use metrics::Metrics;
pub use query_messages::{QueryLimits, QueryMessages};
pub use router::{route_name, Router};
pub use stream_messages::{StreamLimits, StreamMessages};

/// The future every endpoint returns: a response, never an error.
pub type EndpointFuture =
    Pin<Box<dyn Future<Output = Result<Response<ResponseBody>, Infallible>> + Send + 'static>>;

/// Boxes an endpoint's work into its future, answering an error with its JSON body.
fn respond<F>(work: F) -> EndpointFuture
where
    F: Future<Output = Result<Response<ResponseBody>, kalamdb_http::ApiError>> + Send + 'static,
{
    Box::pin(async move { Ok(work.await.unwrap_or_else(|e| e.to_response())) })
}

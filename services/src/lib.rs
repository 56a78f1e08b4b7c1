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
//! | [`edit_message`] | `PATCH /api/v1/messages/{msg_id}` | 200 the message, with `edited_at` |
//! | [`edit_message`] | `DELETE /api/v1/messages/{msg_id}` | 204 |
//! | [`query_messages`] | `POST /api/v1/query` | 200 `{messages, count, has_more, next_cursor}` |
//! | [`stream_messages`] | `GET /api/v1/conversations/{conversation_id}/stream` | 200 `text/event-stream`, one event per message, edit or delete |
//! | [`conversations`] | `POST /api/v1/conversations` | 201 the conversation; 409 `conflict` |
//! | [`conversations`] | `GET /api/v1/conversations` | 200 `{conversations, count, has_more, next_cursor}` |
//! | [`conversations`] | `GET`, `PATCH /api/v1/conversations/{conversation_id}` | 200 the conversation |
//! | [`conversations`] | `DELETE /api/v1/conversations/{conversation_id}` | 204: everything of it erased |
//! | [`conversations`] | `DELETE /api/v1/conversations/{conversation_id}/messages?before_msg_id=` | 200 `{deleted}` |
//! | [`conversations`] | `GET /api/v1/conversations/{conversation_id}/members` | 200 `{members}` |
//! | [`conversations`] | `PUT`, `DELETE /api/v1/conversations/{conversation_id}/members/{user_id}` | 204 |
//! | [`health`] | `GET /health` | 200 `{status, version, uptime_secs, storage}` |
//! | [`metrics`] | `GET /metrics` | 200 Prometheus text |
//! | [`router`] | everything | the route table; 404 / 405 JSON for unknown paths and methods |
//!
//! Adding an endpoint is one module here (a struct with `new()` and an
//! `async fn handle<B>(self, Request<B>) -> Result<Response<ResponseBody>, ApiError>`, then
//! `endpoint_service!(Name);`, which writes its `tower::Service` impl), one line in the route
//! table in [`router`] (`METHOD "template" => field: Name`), and one line in the server's
//! `stack.rs` that builds it into [`Endpoints`]. Path parameters come from
//! [`router::PathParams`], decoded once.
//!
//! # Access
//!
//! With auth on, the auth layer puts the caller's [`kalamdb_http::Principal`] in the request's
//! extensions, and each endpoint holds a user to `../shared/DESIGN.md` §6.3 (module `access`):
//! only the conversations they are a member of, 404 for every other, `from` their own id, no
//! managing of members. A key, or no principal at all (auth off), may do everything.
//!
//! # Status codes
//!
//! 200, 201, 204, 400 (`invalid_json`, `validation_failed`), 403 (`forbidden`: a user doing
//! what users may not), 404, 405, 409 (`conflict`,
//! `idempotency_conflict`), 413, 415, 500, 503
//! (`unavailable`, `overloaded` past `stream.max_subscribers`, and 503 `degraded` health).
//! [`route_name`] gives the layers a route label for a path.

use std::convert::Infallible;
use std::future::Future;
use std::pin::Pin;

use futures_util::FutureExt;
use http::Response;
use kalamdb_http::ResponseBody;

/// Writes the `tower::Service` impl every endpoint shares, from the endpoint's
/// `async fn handle<B>(self, Request<B>) -> Result<Response<ResponseBody>, ApiError>`: always
/// ready, generic over the request body, a clone of the endpoint per request, and every error
/// answered with its JSON body (on the model of tower-http's `macros.rs`).
macro_rules! endpoint_service {
    ($endpoint:ty) => {
        impl<B> tower_service::Service<http::Request<B>> for $endpoint
        where
            B: http_body::Body + Send + 'static,
            B::Data: Send,
            B::Error: Into<kalamdb_http::BoxError>,
        {
            type Response = http::Response<kalamdb_http::ResponseBody>;
            type Error = std::convert::Infallible;
            type Future = crate::EndpointFuture;

            fn poll_ready(
                &mut self,
                _cx: &mut std::task::Context<'_>,
            ) -> std::task::Poll<Result<(), Self::Error>> {
                std::task::Poll::Ready(Ok(()))
            }

            fn call(&mut self, request: http::Request<B>) -> Self::Future {
                crate::respond(self.clone().handle(request))
            }
        }
    };
}

mod access;
pub mod conversations;
pub mod edit_message;
pub mod get_message;
pub mod health;
pub mod insert_batch;
pub mod insert_message;
pub mod metrics;
pub mod query_messages;
pub mod router;
pub mod stream_messages;

pub use conversations::{
    CreateConversation, DeleteConversation, DeleteMember, GetConversation, ListConversations,
    ListMembers, PatchConversation, PutMember, TrimConversation,
};
pub use edit_message::{DeleteMessage, PatchMessage};
pub use get_message::GetMessage;
pub use health::Health;
pub use insert_batch::InsertBatch;
pub use insert_message::InsertMessage;
pub use metrics::Metrics;
pub use query_messages::{QueryLimits, QueryMessages};
pub use router::{route_name, Endpoints, PathParams, Router, ROUTES};
pub use stream_messages::{StreamLimits, StreamMessages};

#[cfg(test)]
mod test_support;

/// The future every endpoint returns: a response, never an error.
pub type EndpointFuture =
    Pin<Box<dyn Future<Output = Result<Response<ResponseBody>, Infallible>> + Send + 'static>>;

/// Boxes an endpoint's work into its future, answering an error with its JSON body.
fn respond<F>(work: F) -> EndpointFuture
where
    F: Future<Output = Result<Response<ResponseBody>, kalamdb_http::ApiError>> + Send + 'static,
{
    // `map`, not an `async` block: a block holding `work` copies the whole future into its
    // awaiting state on the first poll (1.9 KB for an insert), on every request.
    Box::pin(work.map(|result| Ok(result.unwrap_or_else(|e| e.to_response()))))
}

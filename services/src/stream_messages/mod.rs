//! `GET /api/v1/conversations/{conversation_id}/stream`: a conversation's new messages, pushed
//! as server-sent events.
//!
//! Each message is one event:
//!
//! ```text
//! id: 7262413471822004224
//! event: message
//! data: {"msg_id":"7262413471822004224","conversation_id":"conv_123",...}
//!
//! ```
//!
//! and a comment line (`: heartbeat`) goes out every `stream.heartbeat_ms` so proxies and
//! clients see the connection is alive.
//!
//! # Where a stream starts
//!
//! With `since_msg_id` (query parameter) or `Last-Event-ID` (header, which wins: a browser's
//! `EventSource` sends it when it reconnects), the stream starts with every stored message after
//! that id, read from the store, then goes on live. Without either, it carries the messages
//! stored after it opened. Either way no message is skipped or sent twice: the subscription is
//! made before the store is read, and every event's id must be above the last one sent.
//!
//! # Falling behind
//!
//! A client that reads slower than messages arrive never slows the writers. Events are made as
//! the response body is polled, that is, when the client's connection can take one; meanwhile
//! the conversation's live channel holds what arrives, and once it drops messages for this
//! stream, the stream reads them from the store instead, after the last id it sent (see
//! [`kalamdb_core::live`]). No task or buffer per stream sits in between.
//!
//! # Ending
//!
//! The response's head is sent as soon as the stream is subscribed, so the timeout layer, which
//! waits only for the head, never cuts a stream. A stream ends when the client goes away or the
//! server shuts down ([`kalamdb_core::StoreHandle::end_streams`]); past `stream.max_subscribers`
//! open streams a new one is refused with 503 `overloaded`.
//!
//! # Layout
//!
//! - `mod.rs` (this file): the endpoint: parse, take a slot, subscribe, read where to start.
//! - `request.rs`: what a request asks for: the conversation, `since_msg_id`, `Last-Event-ID`.
//! - `feed.rs`: the stream itself, stored messages first, then live ones, catching up from the
//!   store when its live channel overflows.
//! - `sse.rs`: the bytes on the wire: one event per message, and the heartbeat.

use std::sync::Arc;
use std::time::Duration;

use http::header::{CACHE_CONTROL, CONTENT_TYPE};
use http::{HeaderValue, Request, Response, StatusCode};
use kalamdb_core::{Order, Query, StoreHandle};
use kalamdb_http::{ApiError, ErrorCode, ResponseBody};
use tokio::sync::Semaphore;

mod feed;
mod request;
mod sse;

use feed::{backlog, Feed};
use request::StreamRequest;

/// `[stream]`: how streams behave.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct StreamLimits {
    /// How often an idle stream sends a heartbeat comment (`stream.heartbeat_ms`).
    pub heartbeat: Duration,
    /// The most streams open at once (`stream.max_subscribers`).
    pub max_subscribers: usize,
    /// With several servers (`live.resync_ms`): how long a stream hears nothing before it
    /// reads the store anyway, for a message the bus between servers lost. `None` on one
    /// server, whose streams hear of every message.
    pub resync: Option<Duration>,
}

impl Default for StreamLimits {
    fn default() -> Self {
        Self {
            heartbeat: Duration::from_millis(15_000),
            max_subscribers: 10_000,
            resync: None,
        }
    }
}

/// Streams a conversation's messages as server-sent events; see the module docs.
///
/// Rejections: 400 `validation_failed` for a bad conversation id, `since_msg_id`,
/// `Last-Event-ID` or an unknown query parameter; 404 for a user (auth on) who is not a member
/// of the conversation; 503 `overloaded` past `max_subscribers`;
/// 503 `unavailable` when the store cannot be read or the server is shutting down.
#[derive(Debug, Clone)]
pub struct StreamMessages {
    store: StoreHandle,
    heartbeat: Duration,
    /// One permit per open stream, shared by every clone of the endpoint.
    slots: Arc<Semaphore>,
    max_subscribers: usize,
    resync: Option<Duration>,
}

impl StreamMessages {
    /// An endpoint streaming from `store`, within `limits`.
    pub fn new(store: StoreHandle, limits: StreamLimits) -> Self {
        // Tokio panics on a zero interval and on more permits than a semaphore can hold.
        let max_subscribers = limits.max_subscribers.min(Semaphore::MAX_PERMITS);
        Self {
            store,
            heartbeat: limits.heartbeat.max(Duration::from_millis(1)),
            slots: Arc::new(Semaphore::new(max_subscribers)),
            max_subscribers,
            resync: limits.resync.map(|r| r.max(Duration::from_millis(1))),
        }
    }

    async fn handle<B>(self, mut request: Request<B>) -> Result<Response<ResponseBody>, ApiError> {
        let user = crate::access::user_of(&request);
        let request = StreamRequest::parse(&mut request)?;
        if let Some(user) = user {
            // Checked once, as the stream opens: a member removed later keeps the stream they
            // have open (as they keep the pages they have read) until it ends.
            crate::access::require_member(&self.store, &request.conversation_id, user).await?;
        }
        let permit = Arc::clone(&self.slots).try_acquire_owned().map_err(|_| {
            ApiError::new(
                ErrorCode::Overloaded,
                format!(
                    "the server already has {} open streams; retry later",
                    self.max_subscribers
                ),
            )
            .with_retry_after(1)
        })?;
        // Subscribed before the store is read: whatever commits from here on is delivered live,
        // and whatever committed before is in the read.
        let subscription = self.store.subscribe(&request.conversation_id)?;
        let (last, first) = match request.since {
            Some(since) => {
                let page = self
                    .store
                    .query(backlog(&request.conversation_id, Some(since)))
                    .await?;
                (Some(since), Some(page))
            }
            None => {
                // Live only: start after the newest message stored now.
                let newest = self
                    .store
                    .query(Query {
                        conversation_id: request.conversation_id.clone(),
                        since: None,
                        before: None,
                        limit: 1,
                        order: Order::Desc,
                    })
                    .await?;
                (newest.messages.first().map(|m| m.msg_id), None)
            }
        };

        let feed = Feed::start(
            self.store,
            request.conversation_id,
            subscription,
            (last, first),
            self.heartbeat,
            permit,
        )
        .with_resync(self.resync);
        let mut response = Response::new(feed.into_body());
        let headers = response.headers_mut();
        headers.insert(CONTENT_TYPE, HeaderValue::from_static("text/event-stream"));
        headers.insert(CACHE_CONTROL, HeaderValue::from_static("no-cache"));
        // Tells nginx-style proxies to pass events on as they come rather than buffer them.
        headers.insert("x-accel-buffering", HeaderValue::from_static("no"));
        *response.status_mut() = StatusCode::OK;
        Ok(response)
    }
}

endpoint_service!(StreamMessages);

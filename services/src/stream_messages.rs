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

use std::collections::VecDeque;
use std::io::Write;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http::header::{CACHE_CONTROL, CONTENT_TYPE};
use http::{HeaderMap, HeaderValue, Request, Response, StatusCode};
use http_body::Frame;
use http_body_util::{BodyExt, StreamBody};
use kalamdb_core::message::validate_name;
use kalamdb_core::{
    Clock, Delivery, MessageId, Order, Page, Query, StoreHandle, StoredMessage, Subscription,
    SystemClock,
};
use kalamdb_http::{ApiError, BoxError, ErrorCode, ResponseBody};
use percent_encoding::percent_decode_str;
use tokio::sync::{OwnedSemaphorePermit, Semaphore};

use crate::router::PathParams;

/// How many stored messages one catch-up read returns: enough to make the read worth it, few
/// enough that a client far behind is not handed a huge burst at once.
const CATCH_UP_PAGE: usize = 500;
/// How far past the server's clock a resume id may lie: ids can run a little ahead of the wall
/// clock after it steps back, and other nodes' clocks differ; a day covers both.
const FUTURE_SLACK_MS: u64 = 24 * 60 * 60 * 1000;
/// The comment line sent when nothing else has been for `heartbeat`.
const HEARTBEAT: &[u8] = b": heartbeat\n\n";

/// `[stream]`: how streams behave.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct StreamLimits {
    /// How often an idle stream sends a heartbeat comment (`stream.heartbeat_ms`).
    pub heartbeat: Duration,
    /// The most streams open at once (`stream.max_subscribers`).
    pub max_subscribers: usize,
}

impl Default for StreamLimits {
    fn default() -> Self {
        Self {
            heartbeat: Duration::from_millis(15_000),
            max_subscribers: 10_000,
        }
    }
}

/// Streams a conversation's messages as server-sent events; see the module docs.
///
/// Rejections: 400 `validation_failed` for a bad conversation id, `since_msg_id`,
/// `Last-Event-ID` or an unknown query parameter; 503 `overloaded` past `max_subscribers`;
/// 503 `unavailable` when the store cannot be read or the server is shutting down.
#[derive(Debug, Clone)]
pub struct StreamMessages {
    store: StoreHandle,
    heartbeat: Duration,
    /// One permit per open stream, shared by every clone of the endpoint.
    slots: Arc<Semaphore>,
    max_subscribers: usize,
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
        }
    }

    async fn handle<B>(self, request: Request<B>) -> Result<Response<ResponseBody>, ApiError> {
        let request = StreamRequest::parse(&request)?;
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

        let mut heartbeat =
            tokio::time::interval_at(tokio::time::Instant::now() + self.heartbeat, self.heartbeat);
        heartbeat.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut feed = Feed {
            store: self.store,
            conversation_id: request.conversation_id,
            subscription,
            last,
            queue: VecDeque::new(),
            more: false,
            heartbeat,
            _active: Active::open(permit),
        };
        if let Some(page) = first {
            feed.enqueue(page);
        }
        let frames = futures_util::stream::unfold(feed, |mut feed| async move {
            let frame = feed.next_frame().await?;
            Some((Ok::<_, BoxError>(Frame::data(frame)), feed))
        });

        let mut response = Response::new(StreamBody::new(frames).boxed_unsync());
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

/// What a stream request asks for.
#[derive(Debug, PartialEq, Eq)]
struct StreamRequest {
    conversation_id: String,
    /// Start after this id, reading the store first.
    since: Option<MessageId>,
}

impl StreamRequest {
    fn parse<B>(request: &Request<B>) -> Result<Self, ApiError> {
        let params = PathParams::of(request)?;
        let conversation_id = params.require("conversation_id")?.to_owned();
        validate_name("conversation_id", &conversation_id)?;

        let mut since = None;
        for pair in request.uri().query().unwrap_or_default().split('&') {
            if pair.is_empty() {
                continue;
            }
            let (name, value) = pair.split_once('=').unwrap_or((pair, ""));
            match name {
                "since_msg_id" if since.is_none() => {
                    since = Some(parse_id("since_msg_id", value)?);
                }
                "since_msg_id" => {
                    return Err(ApiError::validation(
                        "since_msg_id must be given at most once",
                    ))
                }
                other => {
                    let name = percent_decode_str(other).decode_utf8_lossy();
                    return Err(ApiError::validation(format!(
                        "unknown query parameter {name:?}; the only one is since_msg_id"
                    )));
                }
            }
        }
        if let Some(last) = last_event_id(request.headers())? {
            since = Some(last);
        }
        if let Some(since) = since {
            check_not_future(since)?;
        }
        Ok(Self {
            conversation_id,
            since,
        })
    }
}

/// `Last-Event-ID`, when set and not empty (an empty one means "no id", as in the SSE spec).
fn last_event_id(headers: &HeaderMap) -> Result<Option<MessageId>, ApiError> {
    let Some(value) = headers.get("last-event-id") else {
        return Ok(None);
    };
    let text = value.to_str().unwrap_or("\u{fffd}").trim();
    if text.is_empty() {
        return Ok(None);
    }
    parse_id("Last-Event-ID", text).map(Some)
}

/// Refuses a resume id from far in the future: the stream sends only ids above it, so it would
/// stay silent until the clock caught up, which for a mistyped id means forever.
fn check_not_future(since: MessageId) -> Result<(), ApiError> {
    let now_ms = SystemClock.now_ms();
    if since.timestamp_ms() > now_ms.saturating_add(FUTURE_SLACK_MS) {
        return Err(ApiError::validation(format!(
            "the resume id {since} is from the future (its time is {} ms since the Unix epoch); \
             pass the id of a message you received",
            since.timestamp_ms()
        )));
    }
    Ok(())
}

fn parse_id(field: &str, value: &str) -> Result<MessageId, ApiError> {
    value
        .parse()
        .map_err(|e| ApiError::validation(format!("{field} {e}; got {value:?}")))
}

/// A read of the messages after `since`, oldest first.
fn backlog(conversation_id: &str, since: Option<MessageId>) -> Query {
    Query {
        conversation_id: conversation_id.to_owned(),
        since,
        before: None,
        limit: CATCH_UP_PAGE,
        order: Order::Asc,
    }
}

/// Counts an open stream in the metrics and holds its `max_subscribers` slot.
struct Active {
    _permit: OwnedSemaphorePermit,
}

impl Active {
    fn open(permit: OwnedSemaphorePermit) -> Self {
        metrics::gauge!(crate::metrics::STREAMS_ACTIVE).increment(1.0);
        Self { _permit: permit }
    }
}

impl Drop for Active {
    fn drop(&mut self) {
        metrics::gauge!(crate::metrics::STREAMS_ACTIVE).decrement(1.0);
    }
}

/// What one stream sends, produced as the response body is polled: hyper asks for the next
/// frame only when the client's socket can take it, so a slow client simply stops asking, and
/// its live channel drops messages for it, which it then reads from the store.
struct Feed {
    store: StoreHandle,
    conversation_id: String,
    subscription: Subscription,
    /// The id of the last message queued (or, before any, the one to start after); `None` for
    /// the start of the conversation.
    last: Option<MessageId>,
    /// Events read from the store, waiting to be sent before anything live.
    queue: VecDeque<Bytes>,
    /// Whether the store holds more after `last` than has been read.
    more: bool,
    heartbeat: tokio::time::Interval,
    _active: Active,
}

impl Feed {
    /// The next frame to send, or `None` to end the stream.
    async fn next_frame(&mut self) -> Option<Bytes> {
        loop {
            if let Some(frame) = self.queue.pop_front() {
                return Some(self.sent_event(frame));
            }
            if self.more {
                let query = backlog(&self.conversation_id, self.last);
                let page = tokio::select! {
                    page = self.store.query(query) => page,
                    () = self.subscription.ended() => return None,
                };
                match page {
                    Ok(page) => self.enqueue(page),
                    Err(e) => {
                        // Ending lets the client reconnect and resume; it loses nothing.
                        tracing::warn!(error = %e, "a stream ended: the store could not be read to catch up");
                        return None;
                    }
                }
                continue;
            }
            tokio::select! {
                delivery = self.subscription.recv() => match delivery {
                    Delivery::Message(message) if self.is_new(message.msg_id) => {
                        self.last = Some(message.msg_id);
                        return Some(self.sent_event(event(&message)));
                    }
                    // Already sent from the store.
                    Delivery::Message(_) => {}
                    Delivery::Missed => {
                        metrics::counter!(crate::metrics::STREAM_CATCH_UPS_TOTAL).increment(1);
                        self.more = true;
                    }
                    Delivery::Ended => return None,
                },
                _ = self.heartbeat.tick() => return Some(Bytes::from_static(HEARTBEAT)),
            }
        }
    }

    fn is_new(&self, id: MessageId) -> bool {
        self.last.is_none_or(|last| id > last)
    }

    /// Queues a page read from the store, skipping what was already sent.
    fn enqueue(&mut self, page: Page) {
        for message in &page.messages {
            if self.is_new(message.msg_id) {
                self.last = Some(message.msg_id);
                self.queue.push_back(event(message));
            }
        }
        self.more = page.has_more;
    }

    fn sent_event(&mut self, frame: Bytes) -> Bytes {
        self.heartbeat.reset();
        metrics::counter!(crate::metrics::STREAM_EVENTS_SENT_TOTAL).increment(1);
        frame
    }
}

/// One message as an SSE event. The stored JSON is compact, so it holds no line break and fits
/// on one `data:` line.
fn event(message: &StoredMessage) -> Bytes {
    let mut frame = Vec::with_capacity(message.json.len() + 64);
    // Writing to a Vec cannot fail.
    let _ = write!(frame, "id: {}\nevent: message\ndata: ", message.msg_id);
    frame.extend_from_slice(&message.json);
    frame.extend_from_slice(b"\n\n");
    Bytes::from(frame)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(uri: &str, last_event_id: Option<&str>) -> Result<StreamRequest, ApiError> {
        let mut request = Request::builder().uri(uri);
        if let Some(id) = last_event_id {
            request = request.header("last-event-id", id);
        }
        StreamRequest::parse(&request.body(()).unwrap())
    }

    #[test]
    fn reads_the_conversation_and_where_to_start() {
        let request = parse("/api/v1/conversations/conv%20one%2Fa/stream", None).unwrap();
        assert_eq!(request.conversation_id, "conv one/a");
        assert_eq!(request.since, None);

        let request = parse("/api/v1/conversations/c/stream?since_msg_id=42", None).unwrap();
        assert_eq!(request.since, Some(MessageId::from_u64(42)));

        // The header is the newer position: a reconnecting EventSource keeps the URL's.
        let request = parse("/api/v1/conversations/c/stream?since_msg_id=42", Some("99")).unwrap();
        assert_eq!(request.since, Some(MessageId::from_u64(99)));
        let request = parse("/api/v1/conversations/c/stream?since_msg_id=42", Some("")).unwrap();
        assert_eq!(request.since, Some(MessageId::from_u64(42)));
    }

    #[test]
    fn bad_requests_name_what_is_wrong() {
        for (uri, header, needle) in [
            (
                "/api/v1/conversations/c/stream?since_msg_id=x",
                None,
                "since_msg_id",
            ),
            (
                "/api/v1/conversations/c/stream?since_msg_id=",
                None,
                "since_msg_id",
            ),
            (
                "/api/v1/conversations/c/stream?since_msg_id=1&since_msg_id=2",
                None,
                "once",
            ),
            ("/api/v1/conversations/c/stream?limit=5", None, "limit"),
            (
                "/api/v1/conversations/c/stream",
                Some("abc"),
                "Last-Event-ID",
            ),
            ("/api/v1/conversations/%ZZ/stream", None, "percent-encoded"),
            ("/api/v1/conversations/%+1/stream", None, "percent-encoded"),
            ("/api/v1/conversations/a%2/stream", None, "percent-encoded"),
            ("/api/v1/conversations/%FF/stream", None, "percent-encoded"),
            (
                "/api/v1/conversations/a%00b/stream",
                None,
                "conversation_id",
            ),
        ] {
            let error = parse(uri, header).unwrap_err();
            assert_eq!(error.code(), ErrorCode::ValidationFailed, "{uri}");
            assert!(
                error.message().contains(needle),
                "{uri}: {}",
                error.message()
            );
        }
    }

    #[test]
    fn an_event_is_three_lines_and_a_blank_one() {
        let message = StoredMessage {
            msg_id: MessageId::from_u64(7),
            json: br#"{"msg_id":"7"}"#.to_vec(),
        };
        assert_eq!(
            &event(&message)[..],
            b"id: 7\nevent: message\ndata: {\"msg_id\":\"7\"}\n\n"
        );
    }
}

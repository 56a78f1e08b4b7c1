//! The stream itself: what one open stream sends, in order, none missed and none twice.

use std::collections::VecDeque;
use std::time::Duration;

use bytes::Bytes;
use http_body::Frame;
use http_body_util::{BodyExt, StreamBody};
use kalamdb_core::live::Change;
use kalamdb_core::{Delivery, MessageId, Order, Page, Query, StoreHandle, Subscription};
use kalamdb_http::{BoxError, ResponseBody};
use tokio::sync::OwnedSemaphorePermit;

use super::sse::{change_event, event, HEARTBEAT};

/// How many stored messages one catch-up read returns: enough to make the read worth it, few
/// enough that a client far behind is not handed a huge burst at once.
const CATCH_UP_PAGE: usize = 500;
/// A read of the messages after `since`, oldest first.
pub(super) fn backlog(conversation_id: &str, since: Option<MessageId>) -> Query {
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
pub(super) struct Feed {
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
    /// With `live.resync_ms` set: a read of the store after each quiet spell that long.
    resync: Option<tokio::time::Interval>,
    /// Set once the conversation was deleted: its event is the last.
    ended: bool,
    _active: Active,
}

impl Feed {
    /// A stream of `conversation_id` from `subscription`: after `start.0` (the start of the
    /// conversation when `None`), sending the page `start.1` read from the store first. A
    /// heartbeat goes out after each `heartbeat` without an event; `permit` holds its slot.
    pub(super) fn start(
        store: StoreHandle,
        conversation_id: String,
        subscription: Subscription,
        start: (Option<MessageId>, Option<Page>),
        heartbeat: Duration,
        permit: OwnedSemaphorePermit,
    ) -> Self {
        let (last, first) = start;
        let mut heartbeat =
            tokio::time::interval_at(tokio::time::Instant::now() + heartbeat, heartbeat);
        heartbeat.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut feed = Feed {
            store,
            conversation_id,
            subscription,
            last,
            queue: VecDeque::new(),
            more: false,
            heartbeat,
            resync: None,
            ended: false,
            _active: Active::open(permit),
        };
        if let Some(page) = first {
            feed.enqueue(page);
        }
        feed
    }

    /// The response body: each frame made when hyper polls for it.
    pub(super) fn into_body(self) -> ResponseBody {
        let frames = futures_util::stream::unfold(self, |mut feed| async move {
            let frame = feed.next_frame().await?;
            Some((Ok::<_, BoxError>(Frame::data(frame)), feed))
        });
        StreamBody::new(frames).boxed_unsync()
    }

    /// The next frame to send, or `None` to end the stream.
    async fn next_frame(&mut self) -> Option<Bytes> {
        if self.ended {
            return None;
        }
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
                    Delivery::Follows { message, prev } => {
                        if prev > self.last.unwrap_or(MessageId::MIN) {
                            // A message between the last one sent and this one has not been
                            // heard of (lost, or still on its way): the store has it.
                            metrics::counter!(crate::metrics::STREAM_CATCH_UPS_TOTAL).increment(1);
                            self.more = true;
                        } else if self.is_new(message.msg_id) {
                            self.last = Some(message.msg_id);
                            return Some(self.sent_event(event(&message)));
                        }
                    }
                    Delivery::Changed(change) => {
                        self.ended = matches!(change, Change::ConversationDeleted);
                        let frame = change_event(&self.conversation_id, &change);
                        return Some(self.sent_event(frame));
                    }
                    Delivery::Missed => {
                        metrics::counter!(crate::metrics::STREAM_CATCH_UPS_TOTAL).increment(1);
                        self.more = true;
                    }
                    Delivery::Ended => return None,
                },
                _ = self.heartbeat.tick() => return Some(Bytes::from_static(HEARTBEAT)),
                // Heard nothing for a while, where a bus between servers may lose a message
                // that nothing after it would reveal: read the store.
                _ = resync_tick(&mut self.resync) => {
                    self.more = true;
                }
            }
        }
    }

    /// Sets how long a stream waits, hearing nothing, before it reads the store anyway.
    pub(super) fn with_resync(mut self, resync: Option<Duration>) -> Self {
        self.resync = resync.map(|every| {
            let mut interval = tokio::time::interval_at(tokio::time::Instant::now() + every, every);
            interval.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            interval
        });
        self
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
        if let Some(resync) = &mut self.resync {
            resync.reset();
        }
        metrics::counter!(crate::metrics::STREAM_EVENTS_SENT_TOTAL).increment(1);
        frame
    }
}

/// The next resync tick, or never without one.
async fn resync_tick(resync: &mut Option<tokio::time::Interval>) {
    match resync {
        Some(interval) => {
            interval.tick().await;
        }
        None => std::future::pending().await,
    }
}

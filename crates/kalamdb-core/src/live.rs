//! Live fan-out: each stored message is published, once its write has committed, to whoever
//! subscribed to its conversation; so are edits and deletes ([`Change`]).
//!
//! The `Hub` keeps one `tokio::sync::broadcast` channel per conversation with at least one
//! subscriber, and drops it when the last one leaves. Only the writer thread publishes, in commit
//! order, so a subscriber sees a conversation's messages in id order. Publishing never waits: a
//! subscriber that falls more than [`CHANNEL_CAPACITY`] messages behind is told it
//! [`Missed`](Delivery::Missed) some, and catches up by reading the store after the last id it
//! handled. Every published message is already committed, so that read finds all it missed.
//! Edits and deletes are published by the writer too, in the order they reach it
//! ([`crate::StoreHandle`] queues them behind the inserts committed before them); one that a
//! lagging subscriber missed is not replayed: a client re-reads a page to see them.
//!
//! [`StoreHandle::subscribe`](crate::StoreHandle::subscribe) is the way in;
//! [`StoreHandle::end_streams`](crate::StoreHandle::end_streams) ends every subscription, for a
//! graceful shutdown.

use std::collections::HashMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};

use tokio::sync::{broadcast, watch};

use crate::bus::Event;
use crate::id::MessageId;
use crate::message::{PreparedMessage, StoredMessage};

/// How many published messages a conversation's channel holds for its slowest subscriber before
/// that subscriber is told it missed some. Each watched conversation allocates this many slots
/// up front (a few KiB), so it stays small: a subscriber further behind catches up from the
/// store, which is cheap.
pub const CHANNEL_CAPACITY: usize = 128;

type Topics = HashMap<String, broadcast::Sender<Delivery>>;

/// A change to a conversation other than a new message, as its subscribers learn of it.
#[derive(Debug, Clone)]
pub enum Change {
    /// A message's content or metadata changed: the message as it is now.
    Updated(Arc<StoredMessage>),
    /// A message was deleted.
    Deleted(MessageId),
    /// Every message below `before` was deleted (a trim, or retention): `deleted` of them.
    Trimmed {
        /// The exclusive bound.
        before: MessageId,
        /// How many went.
        deleted: u64,
    },
    /// The conversation was deleted; nothing more comes.
    ConversationDeleted,
}

/// The per-conversation channels. Shared by the handle (subscribing) and the writer (publishing).
#[derive(Debug)]
pub(crate) struct Hub {
    topics: Mutex<Topics>,
    /// How many conversations have a subscriber, readable without the lock, so the writer does
    /// no work at all for a group while nobody listens.
    watched: AtomicUsize,
    /// Set once, when every stream must end.
    ended: watch::Sender<bool>,
}

impl Hub {
    pub(crate) fn new() -> Self {
        Self {
            topics: Mutex::default(),
            watched: AtomicUsize::new(0),
            ended: watch::Sender::new(false),
        }
    }

    fn topics(&self) -> MutexGuard<'_, Topics> {
        // The map holds no invariant a panic could break half-way: a poisoned lock is usable.
        self.topics.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Subscribes to `conversation_id`, or `None` once [`Hub::end`] was called.
    pub(crate) fn subscribe(self: &Arc<Self>, conversation_id: &str) -> Option<Subscription> {
        let mut topics = self.topics();
        // Checked under the lock, like `end` sets it, so no subscription slips in after the end
        // and waits forever.
        if *self.ended.borrow() {
            return None;
        }
        let receiver = match topics.get(conversation_id) {
            Some(sender) => sender.subscribe(),
            None => {
                let (sender, receiver) = broadcast::channel(CHANNEL_CAPACITY);
                topics.insert(conversation_id.to_owned(), sender);
                self.watched.fetch_add(1, Ordering::Relaxed);
                receiver
            }
        };
        Some(Subscription {
            receiver: Some(receiver),
            ended: self.ended.subscribe(),
            conversation_id: conversation_id.to_owned(),
            hub: Arc::clone(self),
        })
    }

    /// Resolves once [`Hub::end`] was called.
    pub(crate) async fn ended(&self) {
        let mut ended = self.ended.subscribe();
        // An error means the hub is gone, which is an end too.
        let _ = ended.wait_for(|ended| *ended).await;
    }

    /// Ends every subscription, now and to come.
    pub(crate) fn end(&self) {
        let _topics = self.topics();
        self.ended.send_replace(true);
    }

    /// The places in `group` of the messages whose conversation has a subscriber. Called
    /// before the group is written, so a message committed after a subscription began is never
    /// left out.
    pub(crate) fn watched_in(&self, group: &[PreparedMessage]) -> Vec<usize> {
        if self.watched.load(Ordering::Relaxed) == 0 {
            return Vec::new();
        }
        let topics = self.topics();
        group
            .iter()
            .enumerate()
            .filter(|(_, m)| topics.contains_key(m.conversation_id()))
            .map(|(i, _)| i)
            .collect()
    }

    /// Publishes committed messages, each with its conversation, in the order given. Never
    /// blocks.
    pub(crate) fn publish<'a>(&self, messages: impl IntoIterator<Item = (&'a str, StoredMessage)>) {
        // Wrapped outside the lock, which subscribers take too.
        let encoded: Vec<(&str, Arc<StoredMessage>)> = messages
            .into_iter()
            .map(|(conversation_id, stored)| (conversation_id, Arc::new(stored)))
            .collect();
        if encoded.is_empty() {
            return;
        }
        let topics = self.topics();
        for (conversation_id, stored) in encoded {
            if let Some(sender) = topics.get(conversation_id) {
                // An error means the last subscriber left since `watched_in`: nobody to tell.
                let _ = sender.send(Delivery::Message(stored));
            }
        }
    }

    /// Whether `conversation_id` has a subscriber here.
    pub(crate) fn is_watched(&self, conversation_id: &str) -> bool {
        self.watched.load(Ordering::Relaxed) > 0 && self.topics().contains_key(conversation_id)
    }

    /// Publishes an event of a store that orders its own writes, or one heard from another
    /// server ([`crate::bus`]): a message goes with the id before it, so a subscriber that
    /// did not see that one knows it missed some; a message that came without its JSON is a
    /// [`Delivery::Missed`], read from the store. Never blocks.
    pub(crate) fn publish_event(&self, event: &Event) {
        if self.watched.load(Ordering::Relaxed) == 0 {
            return;
        }
        let delivery = match event {
            Event::Message {
                prev,
                message: Some(message),
                ..
            } => Delivery::Follows {
                message: Arc::clone(message),
                prev: *prev,
            },
            Event::Message { message: None, .. } => Delivery::Missed,
            Event::Change { change, .. } => Delivery::Changed(change.clone()),
        };
        if let Some(sender) = self.topics().get(event.conversation_id()) {
            // An error means nobody listens any more.
            let _ = sender.send(delivery);
        }
    }

    /// Publishes a committed change to a conversation's subscribers. Never blocks.
    pub(crate) fn publish_change(&self, conversation_id: &str, change: Change) {
        if self.watched.load(Ordering::Relaxed) == 0 {
            return;
        }
        if let Some(sender) = self.topics().get(conversation_id) {
            // An error means nobody listens any more.
            let _ = sender.send(Delivery::Changed(change));
        }
    }
}

/// What a [`Subscription`] delivers next.
#[derive(Debug, Clone)]
pub enum Delivery {
    /// The next message stored in the conversation.
    Message(Arc<StoredMessage>),
    /// The next message of a conversation written by several writers at once (a store that
    /// [orders its own writes](crate::Store::orders_writes), or another server), with the
    /// highest id its conversation held before it. Such messages can arrive out of order:
    /// a subscriber whose last message is below `prev` missed some, and reads the store after
    /// its last id, as for [`Delivery::Missed`].
    Follows {
        /// The message.
        message: Arc<StoredMessage>,
        /// The id before it.
        prev: MessageId,
    },
    /// An edit or a delete, in its place among the messages.
    Changed(Change),
    /// The subscriber fell behind and some messages were dropped for it. Read the store after
    /// the last message handled to get them; later deliveries may repeat some of what that read
    /// returns, so skip ids already handled.
    Missed,
    /// The server is shutting down: no more deliveries.
    Ended,
}

/// A live feed of one conversation's newly stored messages; from
/// [`StoreHandle::subscribe`](crate::StoreHandle::subscribe).
///
/// It receives every message committed after it was created, in id order. Dropping it
/// unsubscribes.
#[derive(Debug)]
pub struct Subscription {
    /// `None` only while dropping, so the channel can be released under the lock.
    receiver: Option<broadcast::Receiver<Delivery>>,
    ended: watch::Receiver<bool>,
    conversation_id: String,
    hub: Arc<Hub>,
}

impl Subscription {
    /// Waits for the next delivery.
    pub async fn recv(&mut self) -> Delivery {
        let Some(receiver) = self.receiver.as_mut() else {
            return Delivery::Ended;
        };
        tokio::select! {
            // Ending wins over a backlog of messages: shutdown should not wait for a slow
            // stream to drain.
            biased;
            _ = self.ended.wait_for(|ended| *ended) => Delivery::Ended,
            received = receiver.recv() => match received {
                Ok(delivery) => delivery,
                Err(broadcast::error::RecvError::Lagged(_)) => Delivery::Missed,
                // The hub keeps the sender while any receiver lives; this is the same as ending.
                Err(broadcast::error::RecvError::Closed) => Delivery::Ended,
            },
        }
    }

    /// Resolves once the server ends all streams.
    pub async fn ended(&mut self) {
        // An error means the hub is gone, which is an end too.
        let _ = self.ended.wait_for(|ended| *ended).await;
    }
}

impl Drop for Subscription {
    fn drop(&mut self) {
        let mut topics = self.hub.topics();
        // Released under the lock, so the count below is exact even when the conversation's
        // other subscribers leave at the same moment.
        drop(self.receiver.take());
        if let Some(sender) = topics.get(&self.conversation_id) {
            if sender.receiver_count() == 0 {
                topics.remove(&self.conversation_id);
                self.hub.watched.fetch_sub(1, Ordering::Relaxed);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::id::MessageId;
    use crate::message::NewMessage;

    fn prepared(conversation_id: &str) -> PreparedMessage {
        PreparedMessage::new(NewMessage {
            conversation_id: conversation_id.into(),
            from: "tester".into(),
            content: "hi".into(),
            metadata: Default::default(),
        })
        .unwrap()
    }

    fn message(id: u64, conversation_id: &str) -> (&str, StoredMessage) {
        let msg_id = MessageId::from_u64(id);
        let json = prepared(conversation_id).to_json(msg_id);
        (conversation_id, StoredMessage { msg_id, json })
    }

    fn id_of(delivery: Delivery) -> u64 {
        match delivery {
            Delivery::Message(m) => m.msg_id.as_u64(),
            other => panic!("expected a message, got {other:?}"),
        }
    }

    #[tokio::test]
    async fn delivers_its_conversation_only_in_order() {
        let hub = Arc::new(Hub::new());
        let mut a = hub.subscribe("a").unwrap();
        let mut a2 = hub.subscribe("a").unwrap();
        hub.publish([message(1, "a"), message(2, "b"), message(3, "a")]);
        assert_eq!(id_of(a.recv().await), 1);
        assert_eq!(id_of(a.recv().await), 3);
        assert_eq!(id_of(a2.recv().await), 1);
        assert_eq!(id_of(a2.recv().await), 3);
    }

    #[tokio::test]
    async fn only_watched_conversations_are_copied_and_the_last_leaver_unwatches() {
        let hub = Arc::new(Hub::new());
        let group = [prepared("a"), prepared("b"), prepared("a")];
        assert!(hub.watched_in(&group).is_empty());
        let first = hub.subscribe("a").unwrap();
        let second = hub.subscribe("a").unwrap();
        assert_eq!(hub.watched_in(&group), [0, 2]);
        drop(first);
        assert_eq!(hub.watched_in(&group).len(), 2, "one subscriber remains");
        drop(second);
        assert!(hub.watched_in(&group).is_empty());
        assert!(hub.topics().is_empty());
        assert_eq!(hub.watched.load(Ordering::Relaxed), 0);
    }

    #[tokio::test]
    async fn a_subscriber_that_falls_behind_is_told_it_missed_messages() {
        let hub = Arc::new(Hub::new());
        let mut slow = hub.subscribe("a").unwrap();
        let count = CHANNEL_CAPACITY as u64 + 10;
        hub.publish((1..=count).map(|id| message(id, "a")));
        assert!(matches!(slow.recv().await, Delivery::Missed));
        // After the notice it continues with the oldest message still held.
        assert_eq!(
            id_of(slow.recv().await),
            count - CHANNEL_CAPACITY as u64 + 1
        );
    }

    #[tokio::test]
    async fn end_stops_every_subscription_and_refuses_new_ones() {
        let hub = Arc::new(Hub::new());
        let mut sub = hub.subscribe("a").unwrap();
        hub.publish([message(1, "a")]);
        hub.end();
        // Ending wins even over a delivery that is waiting.
        assert!(matches!(sub.recv().await, Delivery::Ended));
        sub.ended().await;
        assert!(hub.subscribe("a").is_none());
    }
}

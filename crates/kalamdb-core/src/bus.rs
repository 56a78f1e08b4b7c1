//! Live streams across servers (`../shared/DESIGN.md` §7): after its commit, the writing server
//! sends each message and change to a [`Bus`]; every other server hands what it hears to its
//! own subscribers ([`crate::StoreHandle::deliver`]).
//!
//! The bus is a hint, never the truth. Each message travels with the id its conversation held
//! before it ([`Event::Message::prev`]), so a stream that has not seen that id knows it missed
//! something and reads the store from its last id; a stream that hears nothing for
//! `live.resync_ms` reads the store too. A message the bus lost, delayed or delivered out of
//! order so costs latency, never a message, and one it delivered twice is skipped by id.
//!
//! The wire format is one JSON object per event, small enough for PostgreSQL's `NOTIFY`
//! (under 8,000 bytes): a message whose JSON would not fit travels without it, and a stream
//! that hears of it reads it from the store.

use std::sync::Arc;

use serde_json::{json, Value};

use crate::id::MessageId;
use crate::live::Change;
use crate::message::StoredMessage;

/// The most bytes of one encoded event; PostgreSQL's `NOTIFY` takes at most 7,999.
pub const MAX_EVENT_BYTES: usize = 7_900;

/// Something one server tells the others about a conversation.
#[derive(Debug, Clone)]
pub enum Event {
    /// A committed message.
    Message {
        /// Its conversation.
        conversation_id: String,
        /// The highest id the conversation held before it.
        prev: MessageId,
        /// Its id.
        msg_id: MessageId,
        /// Its JSON as stored; `None` when it was too large for the bus.
        message: Option<Arc<StoredMessage>>,
    },
    /// A committed edit or delete.
    Change {
        /// Its conversation.
        conversation_id: String,
        /// What changed.
        change: Change,
    },
}

/// Sends events to the other servers. Implementations queue and return at once: a bus that
/// is down slows no writer (streams then catch up by `live.resync_ms`).
pub trait Bus: Send + Sync + 'static {
    /// Queues `event` for the other servers.
    fn publish(&self, event: Event);
}

/// The sending half every bus shares: each event encoded with this server's `origin` and
/// queued for the connection that sends it. Publishing never waits: when the queue is full (the
/// bus is down or slow) the event is dropped, and the streams of other servers read it from the
/// store.
#[derive(Debug)]
pub struct Outbox {
    queue: tokio::sync::mpsc::Sender<Vec<u8>>,
    origin: String,
}

impl Outbox {
    /// An outbox of `capacity` events, and the receiver its sending connection drains.
    pub fn new(origin: String, capacity: usize) -> (Self, tokio::sync::mpsc::Receiver<Vec<u8>>) {
        let (queue, outgoing) = tokio::sync::mpsc::channel(capacity);
        (Self { queue, origin }, outgoing)
    }
}

impl Bus for Outbox {
    fn publish(&self, event: Event) {
        // Full or closed: lost to the bus, found in the store.
        let _ = self.queue.try_send(event.encode(&self.origin));
    }
}

impl Event {
    /// The event's conversation.
    pub fn conversation_id(&self) -> &str {
        match self {
            Event::Message {
                conversation_id, ..
            }
            | Event::Change {
                conversation_id, ..
            } => conversation_id,
        }
    }

    /// The event on the wire, with `origin` (the sending server's token, so it can skip its
    /// own events where the bus echoes them).
    pub fn encode(&self, origin: &str) -> Vec<u8> {
        let mut value = match self {
            Event::Message {
                conversation_id,
                prev,
                msg_id,
                message,
            } => {
                let mut value = json!({
                    "o": origin, "c": conversation_id, "t": "m",
                    "p": prev.to_string(), "i": msg_id.to_string(),
                });
                if let Some(message) = message {
                    if let Ok(text) = std::str::from_utf8(&message.json) {
                        value["m"] = Value::String(text.to_owned());
                    }
                }
                value
            }
            Event::Change {
                conversation_id,
                change,
            } => {
                let mut value = json!({"o": origin, "c": conversation_id});
                match change {
                    Change::Updated(message) => {
                        value["t"] = "u".into();
                        value["i"] = message.msg_id.to_string().into();
                        if let Ok(text) = std::str::from_utf8(&message.json) {
                            value["m"] = Value::String(text.to_owned());
                        }
                    }
                    Change::Deleted(id) => {
                        value["t"] = "d".into();
                        value["i"] = id.to_string().into();
                    }
                    Change::Trimmed { before, deleted } => {
                        value["t"] = "t".into();
                        value["i"] = before.to_string().into();
                        value["n"] = (*deleted).into();
                    }
                    Change::ConversationDeleted => value["t"] = "x".into(),
                }
                value
            }
        };
        let encoded = value.to_string().into_bytes();
        if encoded.len() <= MAX_EVENT_BYTES {
            return encoded;
        }
        // Too large for the bus: the ids alone. A stream reads such a message from the store;
        // such an edit is not replayed (as for a stream that fell behind).
        if let Some(object) = value.as_object_mut() {
            object.remove("m");
        }
        value.to_string().into_bytes()
    }

    /// An event from the wire and its origin; `None` for anything else (another program on the
    /// same channel), or for an edit too large for the bus, which streams do not replay.
    pub fn decode(bytes: &[u8]) -> Option<(String, Event)> {
        let value: Value = serde_json::from_slice(bytes).ok()?;
        let text = |name: &str| value.get(name).and_then(Value::as_str);
        let id = |name: &str| text(name)?.parse::<MessageId>().ok();
        let origin = text("o")?.to_owned();
        let conversation_id = text("c")?.to_owned();
        let stored = |msg_id: MessageId| {
            text("m").map(|json| {
                Arc::new(StoredMessage {
                    msg_id,
                    json: json.as_bytes().to_vec(),
                })
            })
        };
        let event = match text("t")? {
            "m" => {
                let msg_id = id("i")?;
                Event::Message {
                    conversation_id,
                    prev: id("p")?,
                    msg_id,
                    message: stored(msg_id),
                }
            }
            kind => Event::Change {
                conversation_id,
                change: match kind {
                    "u" => Change::Updated(stored(id("i")?)?),
                    "d" => Change::Deleted(id("i")?),
                    "t" => Change::Trimmed {
                        before: id("i")?,
                        deleted: value.get("n")?.as_u64()?,
                    },
                    "x" => Change::ConversationDeleted,
                    _ => return None,
                },
            },
        };
        Some((origin, event))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn stored(id: u64, content: &str) -> Arc<StoredMessage> {
        Arc::new(StoredMessage {
            msg_id: MessageId::from_u64(id),
            json: format!(r#"{{"msg_id":"{id}","content":"{content}"}}"#).into_bytes(),
        })
    }

    #[test]
    fn every_event_round_trips_with_its_origin() {
        let events = [
            Event::Message {
                conversation_id: "c\"1".into(),
                prev: MessageId::from_u64(4),
                msg_id: MessageId::from_u64(5),
                message: Some(stored(5, "hi")),
            },
            Event::Change {
                conversation_id: "c".into(),
                change: Change::Updated(stored(5, "edited")),
            },
            Event::Change {
                conversation_id: "c".into(),
                change: Change::Deleted(MessageId::from_u64(5)),
            },
            Event::Change {
                conversation_id: "c".into(),
                change: Change::Trimmed {
                    before: MessageId::from_u64(9),
                    deleted: 3,
                },
            },
            Event::Change {
                conversation_id: "c".into(),
                change: Change::ConversationDeleted,
            },
        ];
        for event in events {
            let wire = event.encode("server-a");
            let (origin, back) = Event::decode(&wire).unwrap();
            assert_eq!(origin, "server-a");
            assert_eq!(format!("{back:?}"), format!("{event:?}"));
        }
        assert!(Event::decode(b"not json").is_none());
        assert!(Event::decode(br#"{"o":"a","c":"c","t":"?"}"#).is_none());
    }

    #[test]
    fn a_message_too_large_for_the_bus_travels_as_its_id() {
        let big = "x".repeat(MAX_EVENT_BYTES);
        let event = Event::Message {
            conversation_id: "c".into(),
            prev: MessageId::from_u64(1),
            msg_id: MessageId::from_u64(2),
            message: Some(stored(2, &big)),
        };
        let wire = event.encode("a");
        assert!(wire.len() <= MAX_EVENT_BYTES);
        match Event::decode(&wire).unwrap().1 {
            Event::Message {
                msg_id, message, ..
            } => assert_eq!((msg_id.as_u64(), message.is_none()), (2, true)),
            other => panic!("{other:?}"),
        }
    }
}

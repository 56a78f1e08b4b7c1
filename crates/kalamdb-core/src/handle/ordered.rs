//! The write path of a store that [orders its own writes](Store::orders_writes): each request is
//! its own call on tokio's blocking pool, many at once, because one writer grouping across
//! conversations gives a database a fraction of its throughput (`docs/BENCHMARKS.md`).
//!
//! Idempotency and membership are settled as on the writer, but against a store other servers
//! write too: a key is looked up first, and the store settles a race for it in its own
//! transaction ([`Store::insert_ordered`]). After the commit, the messages go to this server's
//! subscribers and to the [`Bus`], each with the id before it (`crate::bus`).

use std::sync::Arc;

use crate::bus::{Bus, Event};
use crate::live::Hub;
use crate::message::{Inserted, PreparedMessage, StoredMessage};
use crate::store::{IdempotencyKey, Store, StoreError};

use super::writer::admit;

/// Stores one request's messages; blocking (runs on tokio's blocking pool).
pub(super) fn insert(
    store: &dyn Store,
    hub: &Hub,
    bus: Option<&Arc<dyn Bus>>,
    messages: &[PreparedMessage],
    key: Option<IdempotencyKey>,
    member: Option<&str>,
) -> Result<Vec<Inserted>, StoreError> {
    if let Some(user) = member {
        admit(store, user, messages)?;
    }
    let mut keys = Vec::new();
    if let Some(key) = key {
        if let Some(record) = store.idempotency_record(&key.key)? {
            return if record.fingerprint == key.fingerprint {
                Ok(vec![record.inserted])
            } else {
                Err(StoreError::IdempotencyConflict(key.key))
            };
        }
        keys.push((0, key));
    }
    let committed = store.insert_ordered(messages, &keys)?;
    if committed.replayed {
        return Ok(committed.inserted);
    }
    for (index, (message, answer)) in messages.iter().zip(&committed.inserted).enumerate() {
        let conversation_id = message.conversation_id();
        let watched = hub.is_watched(conversation_id);
        if !watched && bus.is_none() {
            continue;
        }
        let event = Event::Message {
            conversation_id: conversation_id.to_owned(),
            prev: committed
                .prev
                .get(index)
                .copied()
                .unwrap_or(crate::id::MessageId::MIN),
            msg_id: answer.msg_id,
            message: Some(Arc::new(StoredMessage {
                msg_id: answer.msg_id,
                json: message.to_json(answer.msg_id),
            })),
        };
        if watched {
            hub.publish_event(&event);
        }
        if let Some(bus) = bus {
            bus.publish(event);
        }
    }
    Ok(committed.inserted)
}

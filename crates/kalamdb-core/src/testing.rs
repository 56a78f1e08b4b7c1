//! Test doubles for the [`Store`] contract, behind the `test-util` feature: endpoints and the
//! handle are tested against them with no RocksDB linked.
//!
//! - [`MemStore`]: the whole contract in memory: ids from an [`IdGenerator`], idempotency
//!   records, pages with exact `has_more`, visibility in id order (one lock per write).
//! - [`Faulty`]: wraps any store and, on command, fails or slows its writes, slows its reads,
//!   panics on a conversation's reads, and counts what it saw. Every method it does not
//!   disturb is the inner store's.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::ops::Bound;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use serde_json::{Map, Value};

use crate::conversation::{
    Conversation, ConversationPage, ConversationPatch, ConversationQuery, ListCursor,
    NewConversation,
};
use crate::id::{IdGenerator, MessageId};
use crate::message::{Inserted, Message, MessagePatch, PreparedMessage, StoredMessage};
use crate::query::{Order, Page, Query};
use crate::store::{CacheStats, IdempotencyKey, IdempotencyRecord, PartStats, Store, StoreError};

/// The whole [`Store`] contract in memory.
#[derive(Debug)]
pub struct MemStore {
    ids: IdGenerator,
    state: Mutex<State>,
    closed: AtomicBool,
}

#[derive(Debug, Default)]
struct State {
    /// (conversation, id) → the message's JSON: a conversation's messages in id order.
    messages: BTreeMap<(String, MessageId), Vec<u8>>,
    /// id → conversation, for reads by id.
    index: HashMap<MessageId, String>,
    keys: HashMap<String, IdempotencyRecord>,
    conversations: BTreeMap<String, Record>,
}

/// A conversation's record as the memory store keeps it.
#[derive(Debug, Default)]
struct Record {
    created_at: u64,
    updated_at: u64,
    message_count: u64,
    last_id: Option<MessageId>,
    /// The id minted for its last change (`crate::conversation`).
    activity: u64,
    title: Option<String>,
    metadata: Map<String, Value>,
    members: BTreeSet<String>,
}

impl State {
    fn view(&self, conversation_id: &str) -> Option<Conversation> {
        let record = self.conversations.get(conversation_id)?;
        let last_message = record.last_id.and_then(|id| {
            self.messages
                .get(&(conversation_id.to_owned(), id))
                .map(|json| StoredMessage {
                    msg_id: id,
                    json: json.clone(),
                })
        });
        Some(Conversation {
            conversation_id: conversation_id.to_owned(),
            created_at: record.created_at,
            updated_at: record.updated_at,
            message_count: record.message_count,
            last_message,
            title: record.title.clone(),
            metadata: record.metadata.clone(),
        })
    }
}

impl State {
    /// Takes messages out of a conversation, keeping its record exact: the count, and the
    /// last message the newest one left.
    fn remove(&mut self, conversation_id: &str, ids: &[MessageId]) {
        for id in ids {
            self.messages.remove(&(conversation_id.to_owned(), *id));
            self.index.remove(id);
        }
        let newest = self
            .messages
            .range((conversation_id.to_owned(), MessageId::MIN)..)
            .take_while(|((c, _), _)| c == conversation_id)
            .last()
            .map(|((_, id), _)| *id);
        if let Some(record) = self.conversations.get_mut(conversation_id) {
            record.message_count -= ids.len() as u64;
            record.last_id = newest;
        }
    }
}

impl Default for MemStore {
    fn default() -> Self {
        Self::new()
    }
}

impl MemStore {
    /// An empty store issuing ids as node 1.
    pub fn new() -> Self {
        Self {
            // Node 1 is in range: this cannot fail.
            ids: IdGenerator::new(1, MessageId::MIN).expect("node 1 is a valid node id"),
            state: Mutex::default(),
            closed: AtomicBool::new(false),
        }
    }

    /// How many messages it holds.
    pub fn len(&self) -> usize {
        self.state().messages.len()
    }

    /// Whether it holds no message.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Whether it holds the message `id`, closed or not: for tests that check what survived a
    /// close.
    pub fn contains(&self, id: MessageId) -> bool {
        self.state().index.contains_key(&id)
    }

    /// Whether [`Store::close`] was called.
    pub fn is_closed(&self) -> bool {
        self.closed.load(Ordering::SeqCst)
    }

    fn state(&self) -> MutexGuard<'_, State> {
        // A test that panicked while holding the lock has failed already; its data is intact.
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn open(&self) -> Result<(), StoreError> {
        if self.is_closed() {
            Err(StoreError::Closed)
        } else {
            Ok(())
        }
    }
}

impl Store for MemStore {
    fn insert_with_keys(
        &self,
        messages: &[PreparedMessage],
        keys: &[(usize, IdempotencyKey)],
    ) -> Result<Vec<Inserted>, StoreError> {
        self.open()?;
        // One lock for the whole write: ids are minted and made visible together, in order.
        let mut state = self.state();
        let mut inserted = Vec::with_capacity(messages.len());
        for message in messages {
            let id = self.ids.next_id()?;
            let conversation = message.conversation_id().to_owned();
            state
                .messages
                .insert((conversation.clone(), id), message.to_json(id));
            state.index.insert(id, conversation.clone());
            let at = id.timestamp_ms();
            let record = state
                .conversations
                .entry(conversation.clone())
                .or_insert_with(|| Record {
                    created_at: at,
                    ..Record::default()
                });
            record.message_count += 1;
            record.last_id = Some(id);
            record.activity = id.as_u64();
            record.updated_at = record.updated_at.max(at);
            inserted.push(Inserted {
                msg_id: id,
                conversation_id: conversation,
                timestamp: id.timestamp_ms(),
            });
        }
        for (index, key) in keys {
            let answer = inserted
                .get(*index)
                .ok_or_else(|| StoreError::Internal(format!("no message at index {index}")))?;
            state.keys.insert(
                key.key.clone(),
                IdempotencyRecord {
                    fingerprint: key.fingerprint,
                    created_ms: answer.timestamp,
                    inserted: answer.clone(),
                },
            );
        }
        Ok(inserted)
    }

    fn idempotency_record(&self, key: &str) -> Result<Option<IdempotencyRecord>, StoreError> {
        self.open()?;
        Ok(self.state().keys.get(key).cloned())
    }

    fn get(&self, id: MessageId) -> Result<Option<StoredMessage>, StoreError> {
        self.open()?;
        let state = self.state();
        let json = state
            .index
            .get(&id)
            .and_then(|conversation| state.messages.get(&(conversation.clone(), id)));
        Ok(json.map(|json| StoredMessage {
            msg_id: id,
            json: json.clone(),
        }))
    }

    fn query(&self, query: &Query) -> Result<Page, StoreError> {
        self.open()?;
        let state = self.state();
        let key = |id: MessageId| (query.conversation_id.clone(), id);
        let low = match query.since {
            Some(since) => Bound::Excluded(key(since)),
            None => Bound::Included(key(MessageId::MIN)),
        };
        let high = match query.before {
            Some(before) => Bound::Excluded(key(before)),
            None => Bound::Included(key(MessageId::from_u64(u64::MAX))),
        };
        if matches!((&low, &high), (Bound::Excluded(l), Bound::Excluded(h)) if l >= h) {
            return Ok(Page::default());
        }
        let range = state.messages.range((low, high));
        let in_order: Box<dyn Iterator<Item = _>> = match query.order {
            Order::Asc => Box::new(range),
            Order::Desc => Box::new(range.rev()),
        };
        let mut messages: Vec<StoredMessage> = in_order
            .take(query.limit + 1)
            .map(|((_, id), json)| StoredMessage {
                msg_id: *id,
                json: json.clone(),
            })
            .collect();
        let has_more = messages.len() > query.limit;
        messages.truncate(query.limit);
        Ok(Page { messages, has_more })
    }

    fn create_conversation(&self, new: &NewConversation) -> Result<Conversation, StoreError> {
        self.open()?;
        let mut state = self.state();
        let minted = self.ids.next_id()?;
        let id = match &new.conversation_id {
            Some(id) => id.clone(),
            None => format!("conv_{minted}"),
        };
        if state.conversations.contains_key(&id) {
            return Err(StoreError::Conflict(format!(
                "conversation {id:?} already exists"
            )));
        }
        let now = minted.timestamp_ms();
        state.conversations.insert(
            id.clone(),
            Record {
                created_at: now,
                updated_at: now,
                activity: minted.as_u64(),
                title: new.title.clone(),
                metadata: new.metadata.clone(),
                members: new.members.iter().cloned().collect(),
                ..Record::default()
            },
        );
        Ok(state.view(&id).expect("just inserted"))
    }

    fn conversation(&self, conversation_id: &str) -> Result<Option<Conversation>, StoreError> {
        self.open()?;
        Ok(self.state().view(conversation_id))
    }

    fn list_conversations(
        &self,
        query: &ConversationQuery,
    ) -> Result<ConversationPage, StoreError> {
        self.open()?;
        let state = self.state();
        // Without a cursor every conversation stands at its `updated_at`.
        let horizon = query.cursor.as_ref().map_or(u64::MAX, |c| c.horizon);
        let mut listed: Vec<_> = state
            .conversations
            .iter()
            .filter(|(_, r)| query.member.as_ref().is_none_or(|m| r.members.contains(m)))
            .map(|(id, r)| {
                let at =
                    ListCursor::position_of(horizon, id, r.created_at, r.updated_at, r.activity);
                (at, id)
            })
            .filter(|(at, _)| query.cursor.as_ref().is_none_or(|c| *at > c.after))
            .collect();
        listed.sort();
        let has_more = listed.len() > query.limit;
        listed.truncate(query.limit);
        let horizon = match &query.cursor {
            Some(cursor) => cursor.horizon,
            None => state
                .conversations
                .values()
                .map(|r| r.activity)
                .max()
                .unwrap_or(0),
        };
        let next_cursor = listed
            .last()
            .filter(|_| has_more)
            .map(|(at, _)| ListCursor {
                horizon,
                after: at.clone(),
            });
        let conversations = listed.iter().filter_map(|(_, id)| state.view(id)).collect();
        Ok(ConversationPage {
            conversations,
            has_more,
            next_cursor,
        })
    }

    fn update_conversation(
        &self,
        conversation_id: &str,
        patch: &ConversationPatch,
    ) -> Result<Option<Conversation>, StoreError> {
        self.open()?;
        let mut state = self.state();
        let Some(record) = state.conversations.get_mut(conversation_id) else {
            return Ok(None);
        };
        if !patch.is_empty() {
            if let Some(title) = &patch.title {
                record.title.clone_from(title);
            }
            if let Some(metadata) = &patch.metadata {
                record.metadata = metadata.clone().unwrap_or_default();
            }
            let minted = self.ids.next_id()?;
            record.updated_at = record.updated_at.max(minted.timestamp_ms());
            record.activity = minted.as_u64();
        }
        Ok(state.view(conversation_id))
    }

    fn is_member(&self, conversation_id: &str, user_id: &str) -> Result<Option<bool>, StoreError> {
        self.open()?;
        Ok(self
            .state()
            .conversations
            .get(conversation_id)
            .map(|r| r.members.contains(user_id)))
    }

    fn members(&self, conversation_id: &str) -> Result<Option<Vec<String>>, StoreError> {
        self.open()?;
        Ok(self
            .state()
            .conversations
            .get(conversation_id)
            .map(|r| r.members.iter().cloned().collect()))
    }

    fn set_member(
        &self,
        conversation_id: &str,
        user_id: &str,
        member: bool,
    ) -> Result<bool, StoreError> {
        self.open()?;
        let mut state = self.state();
        let Some(record) = state.conversations.get_mut(conversation_id) else {
            return Ok(false);
        };
        if member {
            record.members.insert(user_id.to_owned());
        } else {
            record.members.remove(user_id);
        }
        Ok(true)
    }

    fn update_message(
        &self,
        id: MessageId,
        patch: &MessagePatch,
    ) -> Result<Option<StoredMessage>, StoreError> {
        self.open()?;
        let mut state = self.state();
        let Some(conversation) = state.index.get(&id).cloned() else {
            return Ok(None);
        };
        let key = (conversation.clone(), id);
        let mut message: Message = serde_json::from_slice(&state.messages[&key])
            .map_err(|e| StoreError::Corrupt(e.to_string()))?;
        let minted = self.ids.next_id()?;
        message.apply(patch, minted.timestamp_ms());
        let json = message.to_json();
        state.messages.insert(key, json.clone());
        if let Some(record) = state.conversations.get_mut(&conversation) {
            record.updated_at = record.updated_at.max(minted.timestamp_ms());
            record.activity = minted.as_u64();
        }
        Ok(Some(StoredMessage { msg_id: id, json }))
    }

    fn delete_message(&self, id: MessageId) -> Result<Option<String>, StoreError> {
        self.open()?;
        let mut state = self.state();
        let Some(conversation) = state.index.get(&id).cloned() else {
            return Ok(None);
        };
        state.remove(&conversation, &[id]);
        Ok(Some(conversation))
    }

    fn trim_conversation(
        &self,
        conversation_id: &str,
        before: MessageId,
    ) -> Result<Option<u64>, StoreError> {
        self.open()?;
        let mut state = self.state();
        if !state.conversations.contains_key(conversation_id) {
            return Ok(None);
        }
        let owned = conversation_id.to_owned();
        let ids: Vec<MessageId> = state
            .messages
            .range((owned.clone(), MessageId::MIN)..(owned, before))
            .map(|((_, id), _)| *id)
            .collect();
        state.remove(conversation_id, &ids);
        Ok(Some(ids.len() as u64))
    }

    fn delete_conversation(&self, conversation_id: &str) -> Result<bool, StoreError> {
        self.open()?;
        let mut state = self.state();
        if state.conversations.remove(conversation_id).is_none() {
            return Ok(false);
        }
        let owned = conversation_id.to_owned();
        let ids: Vec<MessageId> = state
            .messages
            .range((owned.clone(), MessageId::MIN)..=(owned, MessageId::from_u64(u64::MAX)))
            .map(|((_, id), _)| *id)
            .collect();
        for id in ids {
            state.messages.remove(&(conversation_id.to_owned(), id));
            state.index.remove(&id);
        }
        state
            .keys
            .retain(|_, record| record.inserted.conversation_id != conversation_id);
        Ok(true)
    }

    /// Nothing here reaches a disk.
    fn syncs_writes(&self) -> bool {
        false
    }

    fn health_check(&self) -> Result<(), StoreError> {
        self.open()
    }

    fn flush(&self) -> Result<(), StoreError> {
        self.open()
    }

    fn stats(&self) -> Result<Vec<PartStats>, StoreError> {
        self.open()?;
        let state = self.state();
        let part = |name, keys: usize| PartStats {
            name,
            estimated_keys: keys as u64,
            live_data_bytes: 0,
            pending_compaction_bytes: 0,
        };
        Ok(vec![
            part("messages", state.messages.len()),
            part("message_index", state.index.len()),
            part("idempotency", state.keys.len()),
            part("conversations", state.conversations.len()),
        ])
    }

    fn close(&self) -> Result<(), StoreError> {
        self.closed.store(true, Ordering::SeqCst);
        Ok(())
    }
}

/// A store that delegates to another and disturbs it on command: see the module docs.
///
/// Every setting may change while the store is in use; the counters count from its creation.
pub struct Faulty {
    inner: Arc<dyn Store>,
    fail_writes: AtomicBool,
    write_delay_us: AtomicU64,
    read_delay_us: AtomicU64,
    panic_on: Mutex<Option<String>>,
    writes: AtomicUsize,
    reading: AtomicUsize,
    most_reading: AtomicUsize,
    orders_writes: AtomicBool,
    writing: AtomicUsize,
    most_writing: AtomicUsize,
}

impl std::fmt::Debug for Faulty {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Faulty").finish_non_exhaustive()
    }
}

impl Faulty {
    /// `inner`, undisturbed until told otherwise.
    pub fn new(inner: Arc<dyn Store>) -> Self {
        Self {
            inner,
            fail_writes: AtomicBool::new(false),
            write_delay_us: AtomicU64::new(0),
            read_delay_us: AtomicU64::new(0),
            panic_on: Mutex::new(None),
            writes: AtomicUsize::new(0),
            reading: AtomicUsize::new(0),
            most_reading: AtomicUsize::new(0),
            orders_writes: AtomicBool::new(false),
            writing: AtomicUsize::new(0),
            most_writing: AtomicUsize::new(0),
        }
    }

    /// Every write fails with [`StoreError::Unavailable`] ("disk full") while `fail` holds.
    pub fn fail_writes(&self, fail: bool) {
        self.fail_writes.store(fail, Ordering::SeqCst);
    }

    /// Each write waits `delay` first, so that concurrent requests pile up behind it.
    pub fn delay_writes(&self, delay: Duration) {
        self.write_delay_us.store(micros(delay), Ordering::SeqCst);
    }

    /// Each query waits `delay` first, so that writes commit while a read is under way.
    pub fn delay_reads(&self, delay: Duration) {
        self.read_delay_us.store(micros(delay), Ordering::SeqCst);
    }

    /// Queries of `conversation_id` panic, as a bug in a store would.
    pub fn panic_on_reads_of(&self, conversation_id: &str) {
        *self.panic_on.lock().unwrap_or_else(|e| e.into_inner()) = Some(conversation_id.into());
    }

    /// Writes that reached the inner store.
    pub fn writes(&self) -> usize {
        self.writes.load(Ordering::SeqCst)
    }

    /// The most queries that ran at once.
    pub fn most_concurrent_reads(&self) -> usize {
        self.most_reading.load(Ordering::SeqCst)
    }

    /// Claims to [order its own writes](Store::orders_writes), as the PostgreSQL store does, so
    /// a handle created afterwards sends it each insert on its own, many at once. (The inner
    /// store must then be safe under concurrent inserts, as `MemStore` is.)
    pub fn order_writes(&self, orders: bool) {
        self.orders_writes.store(orders, Ordering::SeqCst);
    }

    /// The inserts under way now.
    pub fn writes_under_way(&self) -> usize {
        self.writing.load(Ordering::SeqCst)
    }

    /// The most inserts that ran at once.
    pub fn most_concurrent_writes(&self) -> usize {
        self.most_writing.load(Ordering::SeqCst)
    }
}

impl Faulty {
    /// What every write goes through first: the write delay, and failing on command.
    fn before_change(&self) -> Result<(), StoreError> {
        wait(&self.write_delay_us);
        if self.fail_writes.load(Ordering::SeqCst) {
            return Err(StoreError::Unavailable("disk full".into()));
        }
        Ok(())
    }
}

fn micros(delay: Duration) -> u64 {
    u64::try_from(delay.as_micros()).unwrap_or(u64::MAX)
}

fn wait(delay_us: &AtomicU64) {
    let us = delay_us.load(Ordering::SeqCst);
    if us > 0 {
        std::thread::sleep(Duration::from_micros(us));
    }
}

impl Store for Faulty {
    fn insert_with_keys(
        &self,
        messages: &[PreparedMessage],
        keys: &[(usize, IdempotencyKey)],
    ) -> Result<Vec<Inserted>, StoreError> {
        let now = self.writing.fetch_add(1, Ordering::SeqCst) + 1;
        self.most_writing.fetch_max(now, Ordering::SeqCst);
        let result = self.before_change().and_then(|()| {
            self.writes.fetch_add(1, Ordering::SeqCst);
            self.inner.insert_with_keys(messages, keys)
        });
        self.writing.fetch_sub(1, Ordering::SeqCst);
        result
    }

    fn orders_writes(&self) -> bool {
        self.orders_writes.load(Ordering::SeqCst)
    }

    fn syncs_writes(&self) -> bool {
        self.inner.syncs_writes()
    }

    fn idempotency_record(&self, key: &str) -> Result<Option<IdempotencyRecord>, StoreError> {
        self.inner.idempotency_record(key)
    }

    fn get(&self, id: MessageId) -> Result<Option<StoredMessage>, StoreError> {
        self.inner.get(id)
    }

    fn query(&self, query: &Query) -> Result<Page, StoreError> {
        let panic_on = self
            .panic_on
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone();
        if panic_on.as_deref() == Some(query.conversation_id.as_str()) {
            panic!("a bug in the store");
        }
        let now = self.reading.fetch_add(1, Ordering::SeqCst) + 1;
        self.most_reading.fetch_max(now, Ordering::SeqCst);
        wait(&self.read_delay_us);
        let page = self.inner.query(query);
        self.reading.fetch_sub(1, Ordering::SeqCst);
        page
    }

    fn create_conversation(&self, new: &NewConversation) -> Result<Conversation, StoreError> {
        self.inner.create_conversation(new)
    }

    fn conversation(&self, conversation_id: &str) -> Result<Option<Conversation>, StoreError> {
        self.inner.conversation(conversation_id)
    }

    fn list_conversations(
        &self,
        query: &ConversationQuery,
    ) -> Result<ConversationPage, StoreError> {
        self.inner.list_conversations(query)
    }

    fn update_conversation(
        &self,
        conversation_id: &str,
        patch: &ConversationPatch,
    ) -> Result<Option<Conversation>, StoreError> {
        self.inner.update_conversation(conversation_id, patch)
    }

    fn is_member(&self, conversation_id: &str, user_id: &str) -> Result<Option<bool>, StoreError> {
        self.inner.is_member(conversation_id, user_id)
    }

    fn members(&self, conversation_id: &str) -> Result<Option<Vec<String>>, StoreError> {
        self.inner.members(conversation_id)
    }

    fn set_member(
        &self,
        conversation_id: &str,
        user_id: &str,
        member: bool,
    ) -> Result<bool, StoreError> {
        self.inner.set_member(conversation_id, user_id, member)
    }

    fn update_message(
        &self,
        id: MessageId,
        patch: &MessagePatch,
    ) -> Result<Option<StoredMessage>, StoreError> {
        self.before_change()?;
        self.inner.update_message(id, patch)
    }

    fn delete_message(&self, id: MessageId) -> Result<Option<String>, StoreError> {
        self.before_change()?;
        self.inner.delete_message(id)
    }

    fn trim_conversation(
        &self,
        conversation_id: &str,
        before: MessageId,
    ) -> Result<Option<u64>, StoreError> {
        self.before_change()?;
        self.inner.trim_conversation(conversation_id, before)
    }

    fn delete_conversation(&self, conversation_id: &str) -> Result<bool, StoreError> {
        self.before_change()?;
        self.inner.delete_conversation(conversation_id)
    }

    fn health_check(&self) -> Result<(), StoreError> {
        self.inner.health_check()
    }

    fn flush(&self) -> Result<(), StoreError> {
        self.inner.flush()
    }

    fn stats(&self) -> Result<Vec<PartStats>, StoreError> {
        self.inner.stats()
    }

    fn log_bytes(&self) -> Result<Option<u64>, StoreError> {
        self.inner.log_bytes()
    }

    fn cache_stats(&self) -> Option<CacheStats> {
        self.inner.cache_stats()
    }

    fn close(&self) -> Result<(), StoreError> {
        self.inner.close()
    }
}

#[cfg(test)]
mod conformance {
    use super::*;

    fn fresh() -> crate::conformance::Fresh {
        (Arc::new(MemStore::new()), Box::new(()))
    }

    crate::store_conformance!(fresh);
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::message::NewMessage;

    fn message(conversation_id: &str, content: &str) -> NewMessage {
        NewMessage {
            conversation_id: conversation_id.into(),
            from: "tester".into(),
            content: content.into(),
            metadata: Default::default(),
        }
    }

    fn query(
        since: Option<MessageId>,
        before: Option<MessageId>,
        limit: usize,
        order: Order,
    ) -> Query {
        Query {
            conversation_id: "c".into(),
            since,
            before,
            limit,
            order,
        }
    }

    #[test]
    fn pages_keep_to_their_conversation_bounds_and_order() {
        let store = MemStore::new();
        let ids: Vec<MessageId> = (0..5)
            .map(|i| store.insert(vec![message("c", &i.to_string())]).unwrap()[0].msg_id)
            .collect();
        store.insert(vec![message("other", "x")]).unwrap();

        let page = store.query(&query(None, None, 2, Order::Asc)).unwrap();
        assert_eq!(
            page.messages.iter().map(|m| m.msg_id).collect::<Vec<_>>(),
            ids[..2]
        );
        assert!(page.has_more);
        let page = store
            .query(&query(Some(ids[1]), Some(ids[4]), 10, Order::Asc))
            .unwrap();
        assert_eq!(
            page.messages.iter().map(|m| m.msg_id).collect::<Vec<_>>(),
            ids[2..4]
        );
        assert!(!page.has_more);
        let page = store.query(&query(None, None, 5, Order::Desc)).unwrap();
        assert_eq!(page.messages[0].msg_id, ids[4]);
        assert!(!page.has_more, "exactly five: nothing beyond");
        let page = store
            .query(&query(Some(ids[3]), Some(ids[1]), 10, Order::Asc))
            .unwrap();
        assert!(page.messages.is_empty());
        assert_eq!(store.get(ids[0]).unwrap().unwrap().msg_id, ids[0]);
    }

    #[test]
    fn faulty_fails_and_counts_writes_on_command() {
        let mem = Arc::new(MemStore::new());
        let faulty = Faulty::new(mem.clone());
        faulty.fail_writes(true);
        assert!(matches!(
            faulty.insert(vec![message("c", "x")]),
            Err(StoreError::Unavailable(_))
        ));
        faulty.fail_writes(false);
        faulty.insert(vec![message("c", "y")]).unwrap();
        assert_eq!((faulty.writes(), mem.len()), (1, 1));
    }
}

//! The [`Store`] trait's methods on [`RocksStore`]: writes, reads, probes and figures.

use kalamdb_core::message::validate_name;
use kalamdb_core::{
    CacheStats, Conversation, ConversationPage, ConversationPatch, ConversationQuery,
    IdempotencyKey, IdempotencyRecord, Inserted, MessageId, MessagePatch, NewConversation, Order,
    Page, PartStats, PreparedMessage, Query, Store, StoreError, StoredMessage,
};
use rocksdb::{ColumnFamily, ErrorKind, FlushOptions, ReadOptions, WriteBatch};

use std::sync::atomic::Ordering;

use crate::keys::{
    self, CF_IDEMPOTENCY, CF_MESSAGES, CF_MESSAGE_INDEX, CF_META, COLUMN_FAMILIES,
    META_FORMAT_VERSION, META_HEALTH_PROBE,
};
use crate::recent::Ticket;
use crate::RocksStore;

/// A query's page from the recent cache, or, when the cache cannot answer it, what reading it
/// from RocksDB needs: its `since` with retention's floor, and the ticket to fill the cache with.
enum InMemory {
    Page(Page),
    Miss {
        since: Option<MessageId>,
        ticket: Ticket,
    },
}

/// Milliseconds since the Unix epoch; 0 if the clock is before it.
pub(crate) fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
}

/// Reads one message by id: `None` when there is none, when retention expired it, and when
/// its index entry outlived it (a deleted conversation's, until the eraser drops it).
pub(crate) fn read_message(
    store: &RocksStore,
    id: MessageId,
) -> Result<Option<StoredMessage>, StoreError> {
    if store.expired(id) {
        return Ok(None);
    }
    let Some(entry) = store
        .db
        .get_pinned_cf(store.cf(CF_MESSAGE_INDEX), keys::index_key(id))
        .map_err(store_error)?
    else {
        return Ok(None);
    };
    let conversation = keys::decode_value(&entry)
        .and_then(|bytes| std::str::from_utf8(bytes).ok())
        .ok_or_else(|| StoreError::Corrupt(format!("index entry of {id} does not decode")))?;
    let Some(value) = store
        .db
        .get_pinned_cf(store.cf(CF_MESSAGES), keys::message_key(conversation, id))
        .map_err(store_error)?
    else {
        return Ok(None);
    };
    let json = keys::decode_value(&value)
        .ok_or_else(|| StoreError::Corrupt(format!("message {id} has an unknown version")))?;
    Ok(Some(StoredMessage {
        msg_id: id,
        json: json.to_vec(),
    }))
}

impl RocksStore {
    /// [`Store::query`] read from RocksDB alone, past the recent cache: what the cache's tests
    /// hold its answers to.
    #[doc(hidden)]
    pub fn query_from_disk(&self, query: &Query) -> Result<Page, StoreError> {
        self.ensure_open()?;
        validate_name("conversation_id", &query.conversation_id)?;
        let since = self.lowest_since(query);
        Ok(self.read_page(query, since, false)?.0)
    }

    /// One page off a RocksDB iterator, `since` being the query's with retention's floor; with
    /// `peek`, also the message past the page when there is one.
    fn read_page(
        &self,
        query: &Query,
        since: Option<MessageId>,
        peek: bool,
    ) -> Result<(Page, Option<StoredMessage>), StoreError> {
        // Exclusive bounds become the iterator's [lower, upper) key range, which never leaves
        // this conversation's keys (see `keys`).
        let Some((lower, upper)) = keys::id_range(&query.conversation_id, since, query.before)
        else {
            return Ok((Page::default(), None));
        };
        if query.limit == 0 {
            return Ok((Page::default(), None));
        }
        let mut options = ReadOptions::default();
        options.set_iterate_lower_bound(lower);
        options.set_iterate_upper_bound(upper);
        // The raw iterator lends each key and value in place; the plain iterator would copy
        // both into fresh boxes before the JSON is copied out once more.
        let mut entries = self.db.raw_iterator_cf_opt(self.cf(CF_MESSAGES), options);
        // Keys run newest first (see `keys`): the common newest-first page reads forward.
        match query.order {
            Order::Desc => entries.seek_to_first(),
            Order::Asc => entries.seek_to_last(),
        }
        let mut messages = Vec::with_capacity(query.limit.min(1024) + usize::from(peek));
        let mut has_more = false;
        while let (Some(key), Some(value)) = (entries.key(), entries.value()) {
            // One message past the limit answers `has_more` without a second query.
            if messages.len() == query.limit {
                has_more = true;
                if !peek {
                    break;
                }
            }
            // The bounds hold this conversation's keys only, so the id is all there is to read.
            let msg_id = keys::decode_message_id(key)
                .ok_or_else(|| StoreError::Corrupt("a message key does not decode".into()))?;
            let json = keys::decode_value(value).ok_or_else(|| {
                StoreError::Corrupt(format!("message {msg_id} has an unknown version"))
            })?;
            messages.push(StoredMessage {
                msg_id,
                json: json.to_vec(),
            });
            if has_more {
                break;
            }
            match query.order {
                Order::Desc => entries.next(),
                Order::Asc => entries.prev(),
            }
        }
        // An iterator that stops early on a read error is invalid, not at its end.
        entries.status().map_err(store_error)?;
        let beyond = if has_more && peek {
            messages.pop()
        } else {
            None
        };
        Ok((Page { messages, has_more }, beyond))
    }

    /// The checks every query starts with, then its page from the recent cache, or what a read
    /// of RocksDB needs when the cache cannot answer.
    fn page_in_memory(&self, query: &Query) -> Result<InMemory, StoreError> {
        self.ensure_open()?;
        validate_name("conversation_id", &query.conversation_id)?;
        let since = self.lowest_since(query);
        if query.limit == 0 || keys::no_id_between(since, query.before) {
            return Ok(InMemory::Page(Page::default()));
        }
        Ok(
            match self.recent.answer(
                &query.conversation_id,
                since,
                query.before,
                query.limit,
                query.order,
            ) {
                Ok(page) => InMemory::Page(page),
                Err(ticket) => InMemory::Miss { since, ticket },
            },
        )
    }

    /// A query's `since` with retention's floor as one more lower bound: expired messages are
    /// never read.
    fn lowest_since(&self, query: &Query) -> Option<MessageId> {
        match self.floor() {
            Some(floor) => {
                let below = MessageId::from_u64(floor.as_u64().saturating_sub(1));
                Some(query.since.map_or(below, |since| since.max(below)))
            }
            None => query.since,
        }
    }
}

/// A RocksDB error as the store's typed error: corruption, a bug, or storage unavailable.
pub(crate) fn store_error(e: rocksdb::Error) -> StoreError {
    match e.kind() {
        ErrorKind::Corruption => StoreError::Corrupt(e.into_string()),
        ErrorKind::InvalidArgument | ErrorKind::NotSupported => {
            StoreError::Internal(e.into_string())
        }
        _ => StoreError::Unavailable(e.into_string()),
    }
}

impl Store for RocksStore {
    fn insert_with_keys(
        &self,
        messages: &[PreparedMessage],
        idempotency: &[(usize, IdempotencyKey)],
    ) -> Result<Vec<Inserted>, StoreError> {
        self.ensure_open()?;
        // A prepared message's names are valid, so a conversation id never holds the 0x02 byte
        // that ends it in a key.
        let messages_cf = self.cf(CF_MESSAGES);
        let index_cf = self.cf(CF_MESSAGE_INDEX);
        let mut inserted = Vec::with_capacity(messages.len());
        // Sized up front: growing it copied the whole batch each time it doubled.
        // Each message's two entries, and at most one conversation record and listing move per
        // message: its state and the delete and put of its place, for the server's listing.
        let size: usize = messages
            .iter()
            .map(|m| 5 * m.conversation_id().len() + m.approximate_json_len() + 160)
            .sum();
        let mut batch = WriteBatch::with_capacity_bytes(size + 64);

        // A panic while holding the lock cannot leave the generator inconsistent (it is atomic),
        // so a poisoned lock is still safe to use.
        let ids = self.writer.lock().unwrap_or_else(|p| p.into_inner());
        // One key and one value buffer for the whole group, sized for its largest message: the
        // batch copies what it is given, so nothing is allocated per message.
        let (longest_key, longest_value) = messages.iter().fold((0, 0), |(k, v), m| {
            let key = keys::MESSAGE_KEY_OVERHEAD + m.conversation_id().len();
            (k.max(key), v.max(m.approximate_json_len() + 1))
        });
        let (mut key, mut value) = (
            Vec::with_capacity(longest_key),
            Vec::with_capacity(longest_value),
        );
        for message in messages {
            let id = ids.next_id()?;
            let conversation_id = message.conversation_id();
            keys::write_value(&mut value, conversation_id.as_bytes());
            batch.put_cf(index_cf, keys::index_key(id), &value);
            inserted.push(Inserted {
                msg_id: id,
                conversation_id: conversation_id.to_owned(),
                timestamp: id.timestamp_ms(),
            });
        }
        // Newest first, so that a batch of one conversation reaches the memtable in key order:
        // its skip list then finds each key's place next to the last one instead of searching
        // from the top, which cost 40% more per message when they went in oldest first.
        for (message, answer) in messages.iter().zip(&inserted).rev() {
            keys::write_message_key(&mut key, message.conversation_id(), answer.msg_id);
            keys::write_message_value(&mut value, message, answer.msg_id);
            batch.put_cf(messages_cf, &key, &value);
        }
        let states = self.note_messages(&mut batch, &inserted)?;
        let keys_cf = self.cf(CF_IDEMPOTENCY);
        let created = now_ms();
        for (index, key) in idempotency {
            let answer = inserted.get(*index).ok_or_else(|| {
                StoreError::Internal(format!(
                    "idempotency key for message {index} of {}",
                    inserted.len()
                ))
            })?;
            let mut json = Vec::with_capacity(answer.approximate_json_len());
            answer.write_json(&mut json);
            batch.put_cf(
                keys_cf,
                key.key.as_bytes(),
                keys::encode_idempotency(&key.fingerprint, created, &json),
            );
        }
        let written = self.db.write_opt(batch, &self.write_options);
        if let Err(e) = written {
            // The outcome of a failed write is not known: no entry may go on without it.
            for message in messages {
                self.recent.forget(message.conversation_id());
            }
            return Err(store_error(e));
        }
        self.recent.inserted(messages, &inserted);
        self.remember(states);
        drop(ids);
        Ok(inserted)
    }

    fn idempotency_record(&self, key: &str) -> Result<Option<IdempotencyRecord>, StoreError> {
        self.ensure_open()?;
        let Some(value) = self
            .db
            .get_pinned_cf(self.cf(CF_IDEMPOTENCY), key.as_bytes())
            .map_err(store_error)?
        else {
            return Ok(None);
        };
        let (fingerprint, created_ms, json) = keys::decode_idempotency(&value)
            .ok_or_else(|| StoreError::Corrupt(format!("idempotency record of {key:?}")))?;
        // Expired but not yet compacted away: as good as gone.
        if now_ms().saturating_sub(created_ms) >= self.idempotency_ttl_ms {
            return Ok(None);
        }
        let inserted = serde_json::from_slice(json)
            .map_err(|e| StoreError::Corrupt(format!("idempotency record of {key:?}: {e}")))?;
        // A deleted conversation's records are erased with it; until then, as good as gone.
        if self.answer_outlived(&inserted)? {
            return Ok(None);
        }
        Ok(Some(IdempotencyRecord {
            fingerprint,
            created_ms,
            inserted,
        }))
    }

    fn get(&self, id: MessageId) -> Result<Option<StoredMessage>, StoreError> {
        self.ensure_open()?;
        read_message(self, id)
    }

    fn query_in_memory(&self, query: &Query) -> Option<Result<Page, StoreError>> {
        match self.page_in_memory(query) {
            Ok(InMemory::Page(page)) => Some(Ok(page)),
            Ok(InMemory::Miss { .. }) => None,
            Err(e) => Some(Err(e)),
        }
    }

    fn query(&self, query: &Query) -> Result<Page, StoreError> {
        let (since, ticket) = match self.page_in_memory(query)? {
            InMemory::Page(page) => return Ok(page),
            InMemory::Miss { since, ticket } => (since, ticket),
        };
        self.recent.missed();
        let conversation = query.conversation_id.as_str();
        // A page without `before` that runs to the newest message, or holds every message
        // after `since`, is a suffix of the conversation: what the recent cache keeps. The
        // message past a newest-first page is kept too: without it the same page could not
        // be answered from memory, since only it says whether there is more.
        let suffix = query.before.is_none();
        let (mut page, beyond) = self.read_page(query, since, suffix)?;
        if suffix {
            // With no lower bound but retention's, and nothing beyond, it is all there is.
            let complete = query.since.is_none() && self.floor().is_none() && !page.has_more;
            match query.order {
                Order::Desc => {
                    let read = page.messages.len();
                    page.messages.extend(beyond);
                    self.recent
                        .fill(ticket, conversation, &page.messages, true, complete);
                    page.messages.truncate(read);
                }
                Order::Asc if !page.has_more => {
                    self.recent
                        .fill(ticket, conversation, &page.messages, false, complete);
                }
                Order::Asc => {}
            }
        }
        Ok(page)
    }

    fn create_conversation(&self, new: &NewConversation) -> Result<Conversation, StoreError> {
        self.create_conversation_record(new)
    }

    fn conversation(&self, conversation_id: &str) -> Result<Option<Conversation>, StoreError> {
        self.conversation_record(conversation_id)
    }

    fn list_conversations(
        &self,
        query: &ConversationQuery,
    ) -> Result<ConversationPage, StoreError> {
        self.list(query)
    }

    fn update_conversation(
        &self,
        conversation_id: &str,
        patch: &ConversationPatch,
    ) -> Result<Option<Conversation>, StoreError> {
        self.update_conversation_record(conversation_id, patch)
    }

    fn is_member(&self, conversation_id: &str, user_id: &str) -> Result<Option<bool>, StoreError> {
        self.membership(conversation_id, user_id)
    }

    fn members(&self, conversation_id: &str) -> Result<Option<Vec<String>>, StoreError> {
        self.member_list(conversation_id)
    }

    fn set_member(
        &self,
        conversation_id: &str,
        user_id: &str,
        member: bool,
    ) -> Result<bool, StoreError> {
        self.set_member_record(conversation_id, user_id, member)
    }

    fn update_message(
        &self,
        id: MessageId,
        patch: &MessagePatch,
    ) -> Result<Option<StoredMessage>, StoreError> {
        self.update_message_record(id, patch)
    }

    fn delete_message(&self, id: MessageId) -> Result<Option<String>, StoreError> {
        self.delete_message_record(id)
    }

    fn trim_conversation(
        &self,
        conversation_id: &str,
        before: MessageId,
    ) -> Result<Option<u64>, StoreError> {
        self.trim_conversation_record(conversation_id, before)
    }

    fn delete_conversation(&self, conversation_id: &str) -> Result<bool, StoreError> {
        self.delete_conversation_record(conversation_id)
    }

    fn syncs_writes(&self) -> bool {
        self.sync_writes
    }

    fn health_check(&self) -> Result<(), StoreError> {
        self.ensure_open()?;
        let meta = self.cf(CF_META);
        self.db
            .get_pinned_cf(meta, META_FORMAT_VERSION)
            .map_err(store_error)?
            .ok_or_else(|| StoreError::Corrupt("the format version is missing".into()))?;
        // A read alone passes on a full or read-only disk; the probe must also write.
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_millis() as u64);
        self.db
            .put_cf(meta, META_HEALTH_PROBE, now.to_be_bytes())
            .map_err(store_error)
    }

    fn flush(&self) -> Result<(), StoreError> {
        self.db.flush_wal(true).map_err(store_error)?;
        let mut options = FlushOptions::default();
        options.set_wait(true);
        for name in COLUMN_FAMILIES {
            self.db
                .flush_cf_opt(self.cf(name), &options)
                .map_err(store_error)?;
        }
        Ok(())
    }

    fn stats(&self) -> Result<Vec<PartStats>, StoreError> {
        self.ensure_open()?;
        let property = |cf: &ColumnFamily, name: &str| -> Result<u64, StoreError> {
            Ok(self
                .db
                .property_int_value_cf(cf, name)
                .map_err(store_error)?
                .unwrap_or(0))
        };
        COLUMN_FAMILIES
            .iter()
            .map(|&name| {
                let cf = self.cf(name);
                Ok(PartStats {
                    name,
                    estimated_keys: property(cf, "rocksdb.estimate-num-keys")?,
                    live_data_bytes: property(cf, "rocksdb.live-sst-files-size")?,
                    pending_compaction_bytes: property(
                        cf,
                        "rocksdb.estimate-pending-compaction-bytes",
                    )?,
                })
            })
            .collect()
    }

    fn log_bytes(&self) -> Result<Option<u64>, StoreError> {
        self.ensure_open()?;
        self.wal_bytes().map(Some)
    }

    fn cache_stats(&self) -> Option<CacheStats> {
        Some(self.recent.stats())
    }

    fn close(&self) -> Result<(), StoreError> {
        // A round under way finishes first; whatever is queued waits for the next open.
        self.stop_maintenance();
        // Taking the writer lock waits for an insert under way to finish before closing.
        let _ids = self.writer.lock().unwrap_or_else(|p| p.into_inner());
        if self.closed.swap(true, Ordering::AcqRel) {
            return Ok(());
        }
        self.flush()
    }
}

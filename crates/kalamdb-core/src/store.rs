//! The storage abstraction every endpoint talks to, and its typed errors.

use crate::conversation::{
    Conversation, ConversationPage, ConversationPatch, ConversationQuery, NewConversation,
};
use crate::id::{IdError, MessageId};
use crate::message::{
    Inserted, MessagePatch, NewMessage, PreparedMessage, StoredMessage, ValidationError,
};
use crate::query::{Page, Query};

/// Why a store operation failed.
#[derive(Debug, Clone, thiserror::Error)]
pub enum StoreError {
    /// The storage medium failed (I/O error, full disk, read-only file system). The request may
    /// be retried once the operator has fixed the cause.
    #[error("storage is unavailable: {0}")]
    Unavailable(String),
    /// The store has been closed for shutdown.
    #[error("the store is closed")]
    Closed,
    /// A message the store would have to refuse to keep its invariants (callers validate first).
    #[error(transparent)]
    Invalid(#[from] ValidationError),
    /// Stored bytes did not decode: a bug or on-disk corruption.
    #[error("stored data is corrupt: {0}")]
    Corrupt(String),
    /// What a request would create exists already (a conversation's id).
    #[error("{0}")]
    Conflict(String),
    /// What a request names is not there, or not there for its caller: a user writing to a
    /// conversation they are not a member of (`../shared/DESIGN.md` §6.3). The message says
    /// which, in words a client may read.
    #[error("{0}")]
    NotFound(String),
    /// An idempotency key was reused with a different request.
    #[error("the idempotency key {0:?} was already used with a different request")]
    IdempotencyConflict(String),
    /// Anything else: a bug in the store.
    #[error("internal store error: {0}")]
    Internal(String),
}

/// An idempotency key sent with a request, and the fingerprint of the request it guards.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IdempotencyKey {
    /// The client's key: 1-255 visible ASCII characters.
    pub key: String,
    /// A digest of the request (SHA-256 of its canonical JSON): equal for an honest retry.
    pub fingerprint: [u8; 32],
}

/// What a store keeps for an idempotency key: enough to answer a retry as the first time.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IdempotencyRecord {
    /// The fingerprint of the request that used the key first.
    pub fingerprint: [u8; 32],
    /// When it was stored, in milliseconds since the Unix epoch.
    pub created_ms: u64,
    /// The answer it got.
    pub inserted: Inserted,
}

impl From<IdError> for StoreError {
    fn from(e: IdError) -> Self {
        StoreError::Internal(e.to_string())
    }
}

/// A durable message store: the contract every backend keeps.
///
/// Every method blocks; async callers go through [`crate::StoreHandle`], which runs them off the
/// async workers. Implementations are shared as `Arc<dyn Store>`. `crate::testing::MemStore`
/// (feature `test-util`) keeps the whole contract in a few dozen lines.
///
/// # Ids
///
/// The store mints the ids of what it stores, from an [`IdGenerator`](crate::IdGenerator) seeded
/// above the highest id it holds (so ids keep increasing across restarts). Within one call ids
/// increase in input order, and every call's ids are above those of every call that returned
/// before it began.
///
/// # Visibility
///
/// A write is atomic: `get` and `query` see all of it or none of it. A message becomes visible
/// only once every message with a smaller id of its conversation is: a reader that polls a
/// conversation with `since` = the last id it saw never skips one, however many clients write.
/// The handle helps here: it calls [`Store::insert_with_keys`] from its one writer thread, one
/// group at a time, so a store that mints ids inside that call and commits before returning
/// (the RocksDB store) gets id order = commit order for free. A store that takes writes from
/// several processes must order them itself, per conversation (lock the conversation, then
/// mint: `../shared/DESIGN.md` §7).
///
/// # Idempotency
///
/// The records [`Store::insert_with_keys`] writes are part of the same atomic write as the
/// messages they answer for, and [`Store::idempotency_record`] returns a record until it
/// expires (`limits.idempotency_ttl_secs`). The handle settles concurrent uses of one key
/// before calling the store.
///
/// # Conversations
///
/// A conversation's record (`../shared/DESIGN.md` §6.1) comes into being with its first message
/// or with [`Store::create_conversation`]. Its `message_count`, `updated_at` and last message
/// change in the same atomic write as the messages that change them, so they are exact at all
/// times, and a batch that fails changes none of them. Listings follow
/// [`crate::conversation`]'s rules for the cursor.
///
/// # Edits and deletes
///
/// Edits and deletes (`../shared/DESIGN.md` §6.2) are atomic like inserts and keep the records
/// exact: a delete lowers `message_count` in the same write and moves `last_message` to the
/// newest message left. Deletes are hard: once a call returns, no read returns what it removed,
/// and a store that keeps files erases the removed bytes from them within its own bound
/// (the RocksDB store's `storage.erase_within_secs`). A message's idempotency record outlives
/// the message (a retry is answered as the first time and stores nothing) but not its
/// conversation: [`Store::delete_conversation`] erases those records too.
pub trait Store: Send + Sync + 'static {
    /// Stores `messages` atomically, all or none, giving them strictly increasing ids in input
    /// order (see the trait's Ids and Visibility). When this returns `Ok`, the messages are as
    /// durable as the store is configured to make them, and visible to readers.
    fn insert(&self, messages: Vec<NewMessage>) -> Result<Vec<Inserted>, StoreError> {
        let prepared = messages
            .into_iter()
            .map(PreparedMessage::new)
            .collect::<Result<Vec<_>, _>>()?;
        self.insert_with_keys(&prepared, &[])
    }

    /// Like [`Store::insert`] for messages already encoded, and in the same atomic write records
    /// each `(index, key)`: the message at `index` was stored under that idempotency key, with
    /// the answer it got. Each message's stored JSON is [`PreparedMessage::write_json`] with its
    /// id.
    fn insert_with_keys(
        &self,
        messages: &[PreparedMessage],
        keys: &[(usize, IdempotencyKey)],
    ) -> Result<Vec<Inserted>, StoreError>;

    /// Whether a write returns only once it is on disk (an fsync). The writer thread schedules
    /// itself by it (`handle/writer.rs`): a write that waits for the disk is better started at
    /// once, so the disk works while the workers read the next requests; one that does not is
    /// better left to gather what the workers are queueing. `true` (the default) unless the
    /// store is configured to answer before its writes reach the disk.
    fn syncs_writes(&self) -> bool {
        true
    }

    /// Whether the store orders concurrent inserts itself, per conversation (lock, then mint:
    /// `../shared/DESIGN.md` §7). The handle then calls [`Store::insert_ordered`] for each
    /// request, many at once, instead of grouping every insert through its one writer thread.
    /// `false` (the default) for a store whose order is its single writer (RocksDB).
    fn orders_writes(&self) -> bool {
        false
    }

    /// One request's insert for a store that [orders writes](Store::orders_writes): like
    /// [`Store::insert_with_keys`], and also settles its idempotency key against every
    /// other server's (a key taken meanwhile answers as the first time, or conflicts), and
    /// says, for each message, the id its conversation held before it, which live streams use
    /// to notice a message they did not hear of.
    fn insert_ordered(
        &self,
        messages: &[PreparedMessage],
        keys: &[(usize, IdempotencyKey)],
    ) -> Result<Committed, StoreError> {
        let inserted = self.insert_with_keys(messages, keys)?;
        Ok(Committed {
            prev: Vec::new(),
            inserted,
            replayed: false,
        })
    }

    /// The unexpired record of an idempotency key, if there is one.
    fn idempotency_record(&self, key: &str) -> Result<Option<IdempotencyRecord>, StoreError>;

    /// Reads one message by id.
    fn get(&self, id: MessageId) -> Result<Option<StoredMessage>, StoreError>;

    /// Reads one page of a conversation. Its cost is O(log n + limit): it never reads another
    /// conversation's messages.
    fn query(&self, query: &Query) -> Result<Page, StoreError>;

    /// The page [`Store::query`] would return, when the store holds it in memory and can
    /// answer at once; `None` otherwise. The handle calls it on an async worker before handing
    /// the query to a reader thread, so it must never block: no disk, no waiting on a lock
    /// held across I/O. The default holds nothing.
    fn query_in_memory(&self, query: &Query) -> Option<Result<Page, StoreError>> {
        let _ = query;
        None
    }

    /// Creates a conversation; [`StoreError::Conflict`] when its id is taken. A missing id is
    /// made up (`conv_` and a fresh Snowflake id). `new` is validated, members deduplicated.
    fn create_conversation(&self, new: &NewConversation) -> Result<Conversation, StoreError>;

    /// One conversation's record, `None` when it does not exist.
    fn conversation(&self, conversation_id: &str) -> Result<Option<Conversation>, StoreError>;

    /// One page of the conversations of the server, or of one member, most recent activity
    /// first. Its cost is O(log n + limit) entries of the listing it ranges over (plus, for a
    /// member, one read per very large conversation the member is in: the store's docs).
    fn list_conversations(&self, query: &ConversationQuery)
        -> Result<ConversationPage, StoreError>;

    /// Changes a conversation's title or metadata, moving its `updated_at` to now when anything
    /// changed; `None` when it does not exist. `patch` is validated.
    fn update_conversation(
        &self,
        conversation_id: &str,
        patch: &ConversationPatch,
    ) -> Result<Option<Conversation>, StoreError>;

    /// Whether `user_id` is a member of the conversation, `None` when it does not exist. The
    /// access check of every user's request, so it should cost a point read or two.
    fn is_member(&self, conversation_id: &str, user_id: &str) -> Result<Option<bool>, StoreError>;

    /// A conversation's members in byte order, `None` when it does not exist.
    fn members(&self, conversation_id: &str) -> Result<Option<Vec<String>>, StoreError>;

    /// Adds (`member = true`) or removes a member; doing so twice is the same as once. `false`
    /// when the conversation does not exist. `user_id` is a valid name.
    fn set_member(
        &self,
        conversation_id: &str,
        user_id: &str,
        member: bool,
    ) -> Result<bool, StoreError>;

    /// Replaces a message's content and/or metadata (`patch` is validated) and stamps it
    /// `edited_at` = now; the conversation's `updated_at` moves to now as well. `None` when no
    /// message has that id.
    fn update_message(
        &self,
        id: MessageId,
        patch: &MessagePatch,
    ) -> Result<Option<StoredMessage>, StoreError>;

    /// Deletes one message; the id of its conversation, `None` when no message has that id.
    fn delete_message(&self, id: MessageId) -> Result<Option<String>, StoreError>;

    /// Deletes every message of the conversation with an id below `before`: how many, `None`
    /// when the conversation does not exist.
    fn trim_conversation(
        &self,
        conversation_id: &str,
        before: MessageId,
    ) -> Result<Option<u64>, StoreError>;

    /// Deletes a conversation and everything of it: messages, their index entries and
    /// idempotency records, members, listing entries and record. `false` when it does not
    /// exist. A message written to the same id afterwards starts a new conversation.
    fn delete_conversation(&self, conversation_id: &str) -> Result<bool, StoreError>;

    /// Probes the storage medium: fails when the store can no longer read or write.
    fn health_check(&self) -> Result<(), StoreError>;

    /// Makes everything written so far durable on disk (WAL and memtables).
    fn flush(&self) -> Result<(), StoreError>;

    /// Size figures for the metrics endpoint, one entry per column family (or other part).
    fn stats(&self) -> Result<Vec<PartStats>, StoreError>;

    /// Bytes of write-ahead log the store holds on disk, which a restart after a crash replays,
    /// for the metrics endpoint; `None` (the default) for a store without a log of its own.
    fn log_bytes(&self) -> Result<Option<u64>, StoreError> {
        Ok(None)
    }

    /// The figures of the store's cache of pages in memory (the one
    /// [`Store::query_in_memory`] answers from), for the metrics endpoint; `None` (the
    /// default) for a store without one. Cheap: it is read on the request's task.
    fn cache_stats(&self) -> Option<CacheStats> {
        None
    }

    /// Flushes, then refuses further operations with [`StoreError::Closed`].
    fn close(&self) -> Result<(), StoreError>;
}

/// Figures of a store's cache of pages in memory (the RocksDB store's recent cache), as the
/// metrics publish them: enough to tell whether its budget is too small for the conversations
/// being read.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct CacheStats {
    /// Queries answered from memory since the store opened.
    pub hits: u64,
    /// Queries the cache could not answer, read from the store's files instead.
    pub misses: u64,
    /// Conversations dropped from the cache to stay within its budget (not those dropped
    /// because they were edited or deleted).
    pub evictions: u64,
    /// Conversations held now.
    pub entries: u64,
    /// Bytes held now, as the budget counts them: the messages' JSON and a fixed overhead for
    /// each message and conversation.
    pub bytes: u64,
    /// The budget: the most bytes the cache holds; 0 when it is turned off.
    pub capacity_bytes: u64,
}

/// What [`Store::insert_ordered`] committed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Committed {
    /// The answer for each message, in input order.
    pub inserted: Vec<Inserted>,
    /// For each message, the highest id its conversation held before it
    /// ([`MessageId::MIN`] for none); empty when the store does not say.
    pub prev: Vec<MessageId>,
    /// The answer came from an idempotency record another request wrote: nothing was stored
    /// now, and nothing is to be published.
    pub replayed: bool,
}

/// Size figures of one part of a store (a RocksDB column family), as the metrics publish them.
/// Every figure is the engine's estimate.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PartStats {
    /// The part's name (`messages`, `message_index`, ...).
    pub name: &'static str,
    /// Keys stored.
    pub estimated_keys: u64,
    /// Bytes of data files currently in use.
    pub live_data_bytes: u64,
    /// Bytes that compaction still has to rewrite.
    pub pending_compaction_bytes: u64,
}

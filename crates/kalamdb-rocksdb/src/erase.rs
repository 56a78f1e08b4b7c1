//! Edits, deletes, retention, the erasure that makes deleted bytes leave the files, and the
//! maintenance thread, which also keeps the log's bound for an idle store.
//!
//! # Deletes
//!
//! A delete is one `WriteBatch` under the writer lock, so it is atomic and every read after it
//! sees it whole: a range delete of the messages (one tombstone, however many messages), their
//! `message_index` entries, and the conversation's state with its count and last message made
//! exact. Nothing else waits on a large delete: the ids of the messages it removes (needed to
//! drop their index entries) are read before the lock is taken, from a snapshot, and only the
//! messages written since are read under it. Past [`CHUNK`] ids, the index entries are left to
//! the eraser, and the ids are written to the erase queue ahead of the delete; reads meanwhile
//! skip an index entry whose message is gone.
//!
//! # Erasure
//!
//! RocksDB keeps a deleted value in its files until a compaction drops it, and the WAL that
//! carried it until every memtable holding data from that WAL is flushed. Each delete or edit
//! therefore queues, in the same batch, what must be erased: the key ranges to compact and, for
//! a conversation, its idempotency records. The queue lives in `meta` (`keys::erase_key`), so
//! a crash or `kill -9` loses none of it. The eraser ([`RocksStore::erase_now`], run by the
//! maintenance thread a quarter of `storage.erase_within_secs` after the oldest queued delete)
//! drops the index entries and records, flushes every column family (the WAL files holding the
//! deleted bytes become obsolete and are deleted: the store never recycles or archives WAL
//! files), compacts each range down to the bottom level (where a tombstone and what it covers
//! both vanish), removes the queue entries, and flushes and compacts them away too. Two more
//! files would keep key ranges (which hold conversation ids): the MANIFEST and RocksDB's info
//! log; `open.rs` has the first rewritten on every change and keeps the second to warnings.
//!
//! # Retention
//!
//! With `retention.max_age_secs` set, a message older than that is below the store's floor
//! ([`RocksStore::floor`]): reads skip it at once (ids hold their time, so the floor is an id
//! bound) and counts leave it out. The maintenance thread trims each conversation with such
//! messages ([`RocksStore::expire_now`]), which erases them like any trim.
//!
//! # The log's bound
//!
//! RocksDB keeps `storage.max_wal_mb` by flushing when a write finds the log past it, so what
//! is written while that flush runs stays in the log until a later write: a store that takes
//! a burst and then nothing would keep more log than the bound, and replay all of it after a
//! crash, for as long as it stays idle. The maintenance thread closes that gap: when a tick
//! finds no write since the last one and the log past the bound, it flushes every column
//! family ([`RocksStore::settle_log`]), which lets the old log files go.

use std::collections::{BTreeMap, HashSet};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard, Weak};
use std::thread::JoinHandle;
use std::time::Duration;

use kalamdb_core::message::validate_name;
use kalamdb_core::{Inserted, Message, MessageId, MessagePatch, Store, StoreError, StoredMessage};
use rocksdb::{BottommostLevelCompaction, CompactOptions, ReadOptions, WriteBatch};

use crate::keys::{
    self, activity_key, conversation_key, decode_erase, decode_erase_key, encode_erase, erase_key,
    members_prefix, past_prefix, ActivityKind, EraseTask, CF_ACTIVITY, CF_CONVERSATIONS,
    CF_IDEMPOTENCY, CF_MEMBERS, CF_MESSAGES, CF_MESSAGE_INDEX, CF_META, COLUMN_FAMILIES, DETAILS,
    META_ERASE_PREFIX, META_ID_FLOOR, META_LAST_ACTIVITY, STATE,
};
use crate::store::{now_ms, store_error};
use crate::{conversations, RocksStore};

/// How many ids one write of the eraser, or one part of the erase queue, holds; also the most
/// index entries a delete drops in its own batch.
pub const CHUNK: usize = 4096;

/// How many `message_index` entries one retention sweep reads to find the conversations with
/// expired messages.
const SWEEP_ENTRIES: usize = 65_536;

/// The eraser's and the maintenance thread's shared state, one per store.
#[derive(Debug)]
pub(crate) struct Eraser {
    /// The next operation number of the erase queue, and the operations under way (their
    /// parts may be written without their part 0 yet), under one lock: the eraser reads both
    /// at once to tell an abandoned operation from one in progress.
    ops: Mutex<(u64, HashSet<u64>)>,
    /// When the oldest delete the eraser has not handled was queued (ms), if any.
    pending_since: Mutex<Option<u64>>,
    /// Counts deletes, so a delete that read ids before taking the writer lock knows whether
    /// another delete came between.
    deletes: AtomicU64,
    /// One erase round at a time.
    round: Mutex<()>,
    pub(crate) erase_within_ms: u64,
    pub(crate) retention_ms: Option<u64>,
    /// Shared with the maintenance thread, which holds the store only while it works.
    control: Arc<Control>,
    thread: Mutex<Option<JoinHandle<()>>>,
}

/// How the store tells its maintenance thread to stop.
#[derive(Debug, Default)]
struct Control {
    stop: Mutex<bool>,
    wake: Condvar,
}

impl Eraser {
    /// The state of a store whose queue's highest operation is `last_op` and which has queued
    /// work (`pending`) left from before it was opened.
    pub(crate) fn new(
        last_op: Option<u64>,
        pending: bool,
        erase_within: Duration,
        retention: Option<Duration>,
    ) -> Self {
        let ms = |d: Duration| u64::try_from(d.as_millis()).unwrap_or(u64::MAX);
        Self {
            ops: Mutex::new((last_op.map_or(0, |op| op + 1), HashSet::new())),
            // Left by an earlier run: due at once.
            pending_since: Mutex::new(pending.then_some(0)),
            deletes: AtomicU64::new(0),
            round: Mutex::new(()),
            erase_within_ms: ms(erase_within).max(1),
            retention_ms: retention.map(ms).filter(|ms| *ms > 0),
            control: Arc::default(),
            thread: Mutex::new(None),
        }
    }

    fn ops(&self) -> MutexGuard<'_, (u64, HashSet<u64>)> {
        self.ops.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn note_pending(&self, at: u64) {
        self.pending_since
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .get_or_insert(at);
    }

    /// How long the maintenance thread sleeps between looks: an eighth of the bound, within
    /// 50 ms and 5 s.
    fn tick(&self) -> Duration {
        Duration::from_millis((self.erase_within_ms / 8).clamp(50, 5_000))
    }
}

/// An operation of the erase queue under way: its number, and whether ids were written ahead.
struct Op<'a> {
    eraser: &'a Eraser,
    number: u64,
}

impl<'a> Op<'a> {
    fn begin(eraser: &'a Eraser) -> Self {
        let mut ops = eraser.ops();
        let number = ops.0;
        ops.0 += 1;
        ops.1.insert(number);
        Self { eraser, number }
    }
}

impl Drop for Op<'_> {
    fn drop(&mut self) {
        // Committed or not: an operation without its part 0 is the eraser's to clean up.
        self.eraser.ops().1.remove(&self.number);
    }
}

/// The ids of the messages a delete removes, read before the writer lock where there are many.
struct Doomed<'a> {
    op: Op<'a>,
    /// Newest first.
    ids: Vec<u64>,
    /// Whether `ids` are in the queue already (parts 1 and up).
    queued: bool,
    /// The delete count when they were read.
    generation: u64,
}

/// One operation of the erase queue as a round reads it.
#[derive(Default)]
struct Queued {
    /// Whether its part 0 is there: its delete committed.
    committed: bool,
    /// Its queue entries.
    keys: Vec<Vec<u8>>,
    tasks: Vec<EraseTask>,
}

fn cf_index(name: &str) -> u8 {
    COLUMN_FAMILIES
        .iter()
        .position(|n| *n == name)
        .and_then(|i| u8::try_from(i).ok())
        .expect("a known column family")
}

fn compact_task(cf: &str, start: Vec<u8>, end: Vec<u8>) -> EraseTask {
    EraseTask::Compact {
        cf: cf_index(cf),
        start,
        end,
    }
}

/// The key range holding exactly `key`.
fn just(cf: &str, key: &[u8]) -> EraseTask {
    let mut end = key.to_vec();
    end.push(0);
    compact_task(cf, key.to_vec(), end)
}

impl RocksStore {
    /// The lowest id a read may return: what retention has not expired. `None` without
    /// retention.
    pub fn floor(&self) -> Option<MessageId> {
        let age = self.eraser.retention_ms?;
        let at = now_ms().saturating_sub(age);
        MessageId::from_parts(at, 0, 0)
    }

    /// How many `message_index` entries the store holds, dangling ones included: for tests of
    /// the eraser.
    #[doc(hidden)]
    pub fn index_entries(&self) -> Result<usize, StoreError> {
        let mut entries = self.db.raw_iterator_cf(self.cf(CF_MESSAGE_INDEX));
        entries.seek_to_first();
        let mut count = 0;
        while entries.valid() {
            count += 1;
            entries.next();
        }
        entries.status().map_err(store_error)?;
        Ok(count)
    }

    /// Whether `id` is below the retention floor.
    pub(crate) fn expired(&self, id: MessageId) -> bool {
        self.floor().is_some_and(|floor| id < floor)
    }

    /// The ids of the messages in `[lower, upper)` of the `messages` keys, newest first.
    fn ids_in(&self, lower: Vec<u8>, upper: Vec<u8>) -> Result<Vec<u64>, StoreError> {
        let mut options = ReadOptions::default();
        options.set_iterate_lower_bound(lower);
        options.set_iterate_upper_bound(upper);
        // Messages about to go: not worth evicting the hot ones from the block cache for.
        options.fill_cache(false);
        let snapshot = self.db.snapshot();
        let mut entries = snapshot.raw_iterator_cf_opt(self.cf(CF_MESSAGES), options);
        entries.seek_to_first();
        let mut ids = Vec::new();
        while let Some(key) = entries.key() {
            let id = keys::decode_message_id(key)
                .ok_or_else(|| StoreError::Corrupt("a message key does not decode".into()))?;
            ids.push(id.as_u64());
            entries.next();
        }
        entries.status().map_err(store_error)?;
        Ok(ids)
    }

    /// Reads the ids of the conversation's messages below `before` (all with `None`) without
    /// the writer lock, and queues them as parts of a new operation when there are more than
    /// [`CHUNK`].
    fn doomed(
        &self,
        conversation_id: &str,
        before: Option<MessageId>,
    ) -> Result<Doomed<'_>, StoreError> {
        let op = Op::begin(&self.eraser);
        let generation = self.eraser.deletes.load(Ordering::Acquire);
        let ids = match keys::id_range(conversation_id, None, before) {
            Some((lower, upper)) => self.ids_in(lower, upper)?,
            None => Vec::new(),
        };
        let queued = ids.len() > CHUNK;
        if queued {
            let meta = self.cf(CF_META);
            let created = now_ms();
            // Parts hold ids only; without their operation's part 0 they are dropped unused.
            for (group, parts) in ids.chunks(CHUNK * 64).enumerate() {
                let mut batch = WriteBatch::default();
                for (i, part) in parts.chunks(CHUNK).enumerate() {
                    let number = u32::try_from(group * 64 + i + 1).unwrap_or(u32::MAX);
                    batch.put_cf(
                        meta,
                        erase_key(op.number, number),
                        encode_erase(created, &[EraseTask::Index(part.to_vec())]),
                    );
                }
                self.db.write(batch).map_err(store_error)?;
            }
        }
        Ok(Doomed {
            op,
            ids,
            queued,
            generation,
        })
    }

    /// Under the writer lock: completes `doomed` with the messages written since it was read
    /// (or reads them all again if another delete came between), and adds to `batch` the index
    /// entries to drop now and to `tasks` those left to the eraser. The ids of every message
    /// the delete removes, newest first.
    fn settle(
        &self,
        conversation_id: &str,
        before: Option<MessageId>,
        doomed: &Doomed<'_>,
        batch: &mut WriteBatch,
        tasks: &mut Vec<EraseTask>,
    ) -> Result<Vec<u64>, StoreError> {
        let Some((lower, upper)) = keys::id_range(conversation_id, None, before) else {
            return Ok(Vec::new());
        };
        let (ids, left) = if self.eraser.deletes.load(Ordering::Acquire) != doomed.generation {
            // Another delete may have taken some of them: read them all again.
            (self.ids_in(lower.clone(), upper.clone())?, false)
        } else {
            let newest = doomed.ids.first().map(|id| MessageId::from_u64(*id));
            let mut ids = match keys::id_range(conversation_id, newest, before) {
                Some((lower, upper)) if newest.is_some() => self.ids_in(lower, upper)?,
                _ => Vec::new(),
            };
            ids.extend_from_slice(&doomed.ids);
            (ids, doomed.queued)
        };
        let index = self.cf(CF_MESSAGE_INDEX);
        if left {
            // The queued parts hold the older ids; only the newest are this batch's.
            let fresh = ids.len() - doomed.ids.len();
            tasks.push(EraseTask::Index(ids[..fresh].to_vec()));
        } else if ids.len() > CHUNK {
            tasks.push(EraseTask::Index(ids.clone()));
        } else {
            for id in &ids {
                batch.delete_cf(index, keys::index_key(MessageId::from_u64(*id)));
            }
        }
        if let (Some(newest), Some(oldest)) = (ids.first(), ids.last()) {
            tasks.push(compact_task(
                CF_MESSAGE_INDEX,
                oldest.to_be_bytes().to_vec(),
                (newest + 1).to_be_bytes().to_vec(),
            ));
        }
        batch.delete_range_cf(self.cf(CF_MESSAGES), &lower, &upper);
        tasks.push(compact_task(CF_MESSAGES, lower, upper));
        Ok(ids)
    }

    /// Writes `batch` with part 0 of `op` (its `tasks`), the id floor and the new delete count:
    /// the end of every delete and edit, of messages of `conversation_id`. Callers hold the
    /// writer lock, whose generator's last id is `last_id`.
    fn commit_erasable(
        &self,
        conversation_id: &str,
        mut batch: WriteBatch,
        op: &Op<'_>,
        tasks: &[EraseTask],
        last_id: MessageId,
        durable: bool,
    ) -> Result<(), StoreError> {
        let meta = self.cf(CF_META);
        let now = now_ms();
        batch.put_cf(meta, erase_key(op.number, 0), encode_erase(now, tasks));
        batch.put_cf(meta, META_ID_FLOOR, last_id.as_u64().to_be_bytes());
        let result = if durable {
            self.db.write_opt(batch, &self.write_options)
        } else {
            self.db.write(batch)
        };
        // After the write, whether or not it went through (a failed write's outcome is not
        // known): the recent cache must not answer with what it changed.
        self.recent.forget(conversation_id);
        result.map_err(store_error)?;
        self.eraser.deletes.fetch_add(1, Ordering::AcqRel);
        self.eraser.note_pending(now);
        Ok(())
    }

    /// [`Store::update_message`](kalamdb_core::Store::update_message).
    pub(crate) fn update_message_record(
        &self,
        id: MessageId,
        patch: &MessagePatch,
    ) -> Result<Option<StoredMessage>, StoreError> {
        self.ensure_open()?;
        let ids = self.writer.lock().unwrap_or_else(|p| p.into_inner());
        let Some((conversation_id, mut message)) = self.message_of(id)? else {
            return Ok(None);
        };
        self.forget(&conversation_id);
        let Some(mut state) = self.state(&conversation_id)? else {
            return Err(StoreError::Corrupt(format!(
                "message {id} has no conversation record"
            )));
        };
        let minted = ids.next_id()?;
        message.apply(patch, minted.timestamp_ms());
        let json = message.to_json();
        let mut batch = WriteBatch::default();
        let key = keys::message_key(&conversation_id, id);
        batch.put_cf(self.cf(CF_MESSAGES), &key, keys::encode_value(&json));
        self.touch(&mut batch, &conversation_id, &mut state, minted);
        let op = Op::begin(&self.eraser);
        // The old content is still in the files: it is erased like a deleted message.
        let tasks = [just(CF_MESSAGES, &key)];
        batch.put_cf(
            self.cf(CF_CONVERSATIONS),
            conversation_key(&conversation_id, STATE),
            state.encode(),
        );
        self.commit_erasable(&conversation_id, batch, &op, &tasks, ids.last(), true)?;
        drop(ids);
        Ok(Some(StoredMessage { msg_id: id, json }))
    }

    /// A stored message, decoded, with its conversation; `None` when it is gone or expired.
    fn message_of(&self, id: MessageId) -> Result<Option<(String, Message)>, StoreError> {
        let Some(stored) = crate::store::read_message(self, id)? else {
            return Ok(None);
        };
        let message: Message = serde_json::from_slice(&stored.json)
            .map_err(|e| StoreError::Corrupt(format!("message {id}: {e}")))?;
        Ok(Some((message.conversation_id.clone(), message)))
    }

    /// Moves a conversation's `updated_at` (and its listing entries) to the time of `minted`,
    /// as an edit does.
    fn touch(
        &self,
        batch: &mut WriteBatch,
        conversation_id: &str,
        state: &mut keys::ConversationState,
        minted: MessageId,
    ) {
        let activity = self.cf(CF_ACTIVITY);
        conversations::catch_up(batch, activity, conversation_id, state);
        let updated_at = state.updated_at.max(minted.timestamp_ms());
        if updated_at != state.updated_at {
            for listing in conversations::listings(state) {
                conversations::move_entry(
                    batch,
                    activity,
                    listing,
                    conversation_id,
                    state.updated_at,
                    updated_at,
                );
            }
            state.updated_at = updated_at;
        }
        state.activity = state.activity.max(minted.as_u64());
        state.unsaved = 0;
        batch.put_cf(
            self.cf(CF_META),
            META_LAST_ACTIVITY,
            minted.as_u64().to_be_bytes(),
        );
    }

    /// [`Store::delete_message`](kalamdb_core::Store::delete_message).
    pub(crate) fn delete_message_record(
        &self,
        id: MessageId,
    ) -> Result<Option<String>, StoreError> {
        self.ensure_open()?;
        let ids = self.writer.lock().unwrap_or_else(|p| p.into_inner());
        let Some((conversation_id, _)) = self.message_of(id)? else {
            return Ok(None);
        };
        self.forget(&conversation_id);
        let mut batch = WriteBatch::default();
        if let Some(mut state) = self.state(&conversation_id)? {
            conversations::catch_up(
                &mut batch,
                self.cf(CF_ACTIVITY),
                &conversation_id,
                &mut state,
            );
            state.unsaved = 0;
            state.message_count = state.message_count.saturating_sub(1);
            if state.last_id == Some(id) {
                state.last_id = self.newest_below(&conversation_id, id)?;
            }
            batch.put_cf(
                self.cf(CF_CONVERSATIONS),
                conversation_key(&conversation_id, STATE),
                state.encode(),
            );
        }
        let key = keys::message_key(&conversation_id, id);
        batch.delete_cf(self.cf(CF_MESSAGES), &key);
        batch.delete_cf(self.cf(CF_MESSAGE_INDEX), keys::index_key(id));
        let op = Op::begin(&self.eraser);
        let tasks = [
            just(CF_MESSAGES, &key),
            just(CF_MESSAGE_INDEX, &keys::index_key(id)),
        ];
        self.commit_erasable(&conversation_id, batch, &op, &tasks, ids.last(), true)?;
        drop(ids);
        Ok(Some(conversation_id))
    }

    /// The newest message of the conversation older than `id` (keys run newest first, so it
    /// is the key after `id`'s).
    fn newest_below(
        &self,
        conversation_id: &str,
        id: MessageId,
    ) -> Result<Option<MessageId>, StoreError> {
        let Some((lower, upper)) = keys::id_range(conversation_id, None, Some(id)) else {
            return Ok(None);
        };
        let mut options = ReadOptions::default();
        options.set_iterate_lower_bound(lower);
        options.set_iterate_upper_bound(upper);
        let mut entries = self.db.raw_iterator_cf_opt(self.cf(CF_MESSAGES), options);
        entries.seek_to_first();
        let newest = entries.key().and_then(keys::decode_message_id);
        entries.status().map_err(store_error)?;
        Ok(newest)
    }

    /// [`Store::trim_conversation`](kalamdb_core::Store::trim_conversation).
    pub(crate) fn trim_conversation_record(
        &self,
        conversation_id: &str,
        before: MessageId,
    ) -> Result<Option<u64>, StoreError> {
        self.trim(conversation_id, before, true)
    }

    /// A trim, fsynced before it returns when `durable` (and the store's `sync_writes`).
    /// Retention's are not: one lost in a crash is done again by the next sweep, and a sweep
    /// over many conversations would otherwise wait for a sync per conversation.
    fn trim(
        &self,
        conversation_id: &str,
        before: MessageId,
        durable: bool,
    ) -> Result<Option<u64>, StoreError> {
        self.ensure_open()?;
        validate_name("conversation_id", conversation_id)?;
        let doomed = self.doomed(conversation_id, Some(before))?;
        let ids = self.writer.lock().unwrap_or_else(|p| p.into_inner());
        self.forget(conversation_id);
        let Some(mut state) = self.state(conversation_id)? else {
            return Ok(None);
        };
        let mut batch = WriteBatch::default();
        let mut tasks = Vec::new();
        let removed = self.settle(
            conversation_id,
            Some(before),
            &doomed,
            &mut batch,
            &mut tasks,
        )?;
        if removed.is_empty() && !doomed.queued {
            return Ok(Some(0));
        }
        conversations::catch_up(
            &mut batch,
            self.cf(CF_ACTIVITY),
            conversation_id,
            &mut state,
        );
        state.unsaved = 0;
        let count = removed.len() as u64;
        state.message_count = state.message_count.saturating_sub(count);
        if state.last_id.is_some_and(|last| last < before) {
            state.last_id = None;
        }
        batch.put_cf(
            self.cf(CF_CONVERSATIONS),
            conversation_key(conversation_id, STATE),
            state.encode(),
        );
        self.commit_erasable(
            conversation_id,
            batch,
            &doomed.op,
            &tasks,
            ids.last(),
            durable,
        )?;
        drop(ids);
        Ok(Some(count))
    }

    /// [`Store::delete_conversation`](kalamdb_core::Store::delete_conversation).
    pub(crate) fn delete_conversation_record(
        &self,
        conversation_id: &str,
    ) -> Result<bool, StoreError> {
        self.ensure_open()?;
        validate_name("conversation_id", conversation_id)?;
        let doomed = self.doomed(conversation_id, None)?;
        let ids = self.writer.lock().unwrap_or_else(|p| p.into_inner());
        self.forget(conversation_id);
        let Some(state) = self.state(conversation_id)? else {
            return Ok(false);
        };
        let mut batch = WriteBatch::default();
        let mut tasks = Vec::new();
        let removed = self.settle(conversation_id, None, &doomed, &mut batch, &mut tasks)?;

        // Every listing entry it has, wherever its state says they stand.
        let activity = self.cf(CF_ACTIVITY);
        let mut entries = Vec::new();
        let updated_at = state.indexed_at.unwrap_or(state.updated_at);
        for listing in conversations::listings(&state) {
            entries.push(activity_key(
                listing,
                ActivityKind::Updated,
                updated_at,
                conversation_id,
            ));
            entries.push(activity_key(
                listing,
                ActivityKind::Created,
                state.created_at,
                conversation_id,
            ));
            entries.push(activity_key(
                listing,
                ActivityKind::Deferred,
                0,
                conversation_id,
            ));
        }
        if state.large {
            let members = self.member_list(conversation_id)?.unwrap_or_default();
            for member in &members {
                entries.push(activity_key(
                    member,
                    ActivityKind::Large,
                    0,
                    conversation_id,
                ));
            }
        }
        for key in &entries {
            batch.delete_cf(activity, key);
            tasks.push(just(CF_ACTIVITY, key));
        }
        let prefix = members_prefix(conversation_id);
        let past = past_prefix(&prefix);
        batch.delete_range_cf(self.cf(CF_MEMBERS), &prefix, &past);
        tasks.push(compact_task(CF_MEMBERS, prefix.clone(), past.clone()));
        let records = self.cf(CF_CONVERSATIONS);
        batch.delete_cf(records, conversation_key(conversation_id, STATE));
        batch.delete_cf(records, conversation_key(conversation_id, DETAILS));
        // Its records' keys start with the same `conversation_id ‖ 0x02` as its members'.
        tasks.push(compact_task(CF_CONVERSATIONS, prefix, past));
        tasks.push(EraseTask::Keys {
            conversation_id: conversation_id.to_owned(),
            up_to: removed.first().copied().unwrap_or(0),
        });
        self.commit_erasable(conversation_id, batch, &doomed.op, &tasks, ids.last(), true)?;
        drop(ids);
        Ok(true)
    }

    /// Whether an idempotency record's answer belongs to a conversation that was deleted since
    /// (its record is then erased by the eraser, and until then as good as gone).
    pub(crate) fn answer_outlived(&self, answer: &Inserted) -> Result<bool, StoreError> {
        let stored = self
            .db
            .get_pinned_cf(
                self.cf(CF_CONVERSATIONS),
                conversation_key(&answer.conversation_id, STATE),
            )
            .map_err(store_error)?;
        Ok(match stored {
            None => true,
            Some(value) => keys::ConversationState::decode(&value)
                .is_none_or(|state| state.created_at > answer.timestamp),
        })
    }

    /// Runs one erase round now (module docs): every delete queued and committed before it
    /// started is then gone from the data directory's files. Returns how many operations it
    /// erased. The maintenance thread calls it on its own; tests and operators may too.
    pub fn erase_now(&self) -> Result<usize, StoreError> {
        self.ensure_open()?;
        let _round = self.eraser.round.lock().unwrap_or_else(|p| p.into_inner());
        let (limit, in_flight) = {
            let ops = self.eraser.ops();
            (ops.0, ops.1.clone())
        };
        let meta = self.cf(CF_META);
        let mut ops: BTreeMap<u64, Queued> = BTreeMap::new();
        {
            let mut options = ReadOptions::default();
            options.set_iterate_lower_bound(META_ERASE_PREFIX.to_vec());
            options.set_iterate_upper_bound(past_prefix(META_ERASE_PREFIX));
            let mut entries = self.db.raw_iterator_cf_opt(meta, options);
            entries.seek_to_first();
            while let (Some(key), Some(value)) = (entries.key(), entries.value()) {
                let (op, part) = decode_erase_key(key)
                    .ok_or_else(|| StoreError::Corrupt("an erase queue key".into()))?;
                let (_, tasks) = decode_erase(value)
                    .ok_or_else(|| StoreError::Corrupt(format!("erase queue entry {op}")))?;
                // One under way is the next round's.
                if op < limit && !in_flight.contains(&op) {
                    let entry = ops.entry(op).or_default();
                    entry.committed |= part == 0;
                    entry.keys.push(key.to_vec());
                    entry.tasks.extend(tasks);
                }
                entries.next();
            }
            entries.status().map_err(store_error)?;
        }
        let started = std::time::Instant::now();
        let mut compact = Vec::new();
        let mut deleted_conversations = Vec::new();
        let mut done = Vec::new();
        let mut index_entries = 0;
        let erased = ops.values().filter(|op| op.committed).count();
        for Queued {
            committed,
            keys: queue_keys,
            tasks,
        } in ops.into_values()
        {
            done.extend(queue_keys);
            if !committed {
                // Its delete never committed: its parts name messages that are still there.
                continue;
            }
            for task in tasks {
                match task {
                    EraseTask::Index(ids) => {
                        index_entries += ids.len();
                        self.drop_index_entries(&ids)?;
                    }
                    EraseTask::Compact { cf, start, end } => compact.push((cf, start, end)),
                    EraseTask::Keys {
                        conversation_id,
                        up_to,
                    } => deleted_conversations.push((conversation_id, up_to)),
                }
            }
        }
        if !deleted_conversations.is_empty() {
            self.drop_idempotency_records(&deleted_conversations)?;
            compact.push((cf_index(CF_IDEMPOTENCY), Vec::new(), Vec::new()));
        }
        if done.is_empty() {
            self.reschedule()?;
            return Ok(0);
        }
        let dropped = started.elapsed();
        let sequence = self.db.latest_sequence_number();
        // Every memtable to a table file, so the WAL files holding deleted bytes are obsolete
        // (and deleted: none is recycled or archived).
        Store::flush(self)?;
        self.wait_for_snapshots(sequence);
        let flushed = started.elapsed();
        for (cf, start, end) in &compact {
            self.compact(COLUMN_FAMILIES[usize::from(*cf)], start, end);
        }
        let compacted = started.elapsed();
        let mut batch = WriteBatch::default();
        for key in &done {
            batch.delete_cf(meta, key);
        }
        self.db.write(batch).map_err(store_error)?;
        // The queue entries named conversations too: they go the same way.
        Store::flush(self)?;
        self.compact(CF_META, META_ERASE_PREFIX, &past_prefix(META_ERASE_PREFIX));
        self.reschedule()?;
        tracing::info!(
            deletes = erased,
            index_entries,
            conversations = deleted_conversations.len(),
            ranges = compact.len(),
            drop_ms = dropped.as_millis() as u64,
            flush_ms = (flushed - dropped).as_millis() as u64,
            compact_ms = (compacted - flushed).as_millis() as u64,
            total_ms = started.elapsed().as_millis() as u64,
            "erased deleted data from the files"
        );
        Ok(erased)
    }

    /// Sets when the next round is due from what the queue holds now. Under the lock a delete
    /// takes to say it queued something after it committed, so none is missed.
    fn reschedule(&self) -> Result<(), StoreError> {
        let mut pending = self
            .eraser
            .pending_since
            .lock()
            .unwrap_or_else(|p| p.into_inner());
        *pending = self.oldest_queued()?;
        Ok(())
    }

    /// When the oldest entry of the erase queue was queued (ms), if it holds any.
    pub(crate) fn oldest_queued(&self) -> Result<Option<u64>, StoreError> {
        let mut options = ReadOptions::default();
        options.set_iterate_lower_bound(META_ERASE_PREFIX.to_vec());
        options.set_iterate_upper_bound(past_prefix(META_ERASE_PREFIX));
        let mut entries = self.db.raw_iterator_cf_opt(self.cf(CF_META), options);
        entries.seek_to_first();
        let mut oldest: Option<u64> = None;
        while let Some(value) = entries.value() {
            if let Some((created, _)) = decode_erase(value) {
                oldest = Some(oldest.map_or(created, |o| o.min(created)));
            }
            entries.next();
        }
        entries.status().map_err(store_error)?;
        Ok(oldest)
    }

    /// Compacts `[start, end)` of `cf` (all of it when both are empty) down to the bottom
    /// level, where a tombstone and every older version it covers are dropped.
    fn compact(&self, cf: &str, start: &[u8], end: &[u8]) {
        let mut options = CompactOptions::default();
        options.set_bottommost_level_compaction(BottommostLevelCompaction::Force);
        // Writers' own compactions go on meanwhile.
        options.set_exclusive_manual_compaction(false);
        let (start, end) = if start.is_empty() && end.is_empty() {
            (None, None)
        } else {
            (Some(start), Some(end))
        };
        self.db
            .compact_range_cf_opt(self.cf(cf), start, end, &options);
    }

    /// Waits (at most a second) until no snapshot older than `sequence` is held: a compaction
    /// keeps every version a snapshot can see. The store's own snapshots last one read.
    fn wait_for_snapshots(&self, sequence: u64) {
        for _ in 0..100 {
            let oldest = self
                .db
                .property_int_value("rocksdb.oldest-snapshot-sequence")
                .ok()
                .flatten()
                .unwrap_or(0);
            if oldest == 0 || oldest > sequence {
                return;
            }
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    /// Drops the index entries of `ids`, without reading them: the ids of a committed delete
    /// were all in the range it deleted, and ids are never minted twice, so each entry is dead.
    /// (Reading each entry and its message first made the eraser's round for a conversation of
    /// a million messages take twice as long, on the cores inserts need.)
    fn drop_index_entries(&self, ids: &[u64]) -> Result<(), StoreError> {
        let index = self.cf(CF_MESSAGE_INDEX);
        for chunk in ids.chunks(CHUNK) {
            let mut batch = WriteBatch::default();
            for id in chunk {
                batch.delete_cf(index, id.to_be_bytes());
            }
            self.db.write(batch).map_err(store_error)?;
        }
        Ok(())
    }

    /// Drops the idempotency records of the deleted conversations' messages: one pass over the
    /// records, which expire after `limits.idempotency_ttl_secs`.
    fn drop_idempotency_records(&self, deleted: &[(String, u64)]) -> Result<(), StoreError> {
        let cf = self.cf(CF_IDEMPOTENCY);
        let mut options = ReadOptions::default();
        options.fill_cache(false);
        let mut entries = self.db.raw_iterator_cf_opt(cf, options);
        entries.seek_to_first();
        let mut batch = WriteBatch::default();
        while let (Some(key), Some(value)) = (entries.key(), entries.value()) {
            let answer = keys::decode_idempotency(value)
                .and_then(|(_, _, json)| serde_json::from_slice::<Inserted>(json).ok());
            if let Some(answer) = answer {
                let doomed = deleted.iter().any(|(conversation, up_to)| {
                    answer.conversation_id == *conversation && answer.msg_id.as_u64() <= *up_to
                });
                if doomed {
                    batch.delete_cf(cf, key);
                    if batch.len() >= CHUNK {
                        self.db
                            .write(std::mem::take(&mut batch))
                            .map_err(store_error)?;
                    }
                }
            }
            entries.next();
        }
        entries.status().map_err(store_error)?;
        self.db.write(batch).map_err(store_error)
    }

    /// Trims every conversation with messages below the retention floor to it (module docs):
    /// how many messages went. Nothing without retention.
    pub fn expire_now(&self) -> Result<u64, StoreError> {
        self.ensure_open()?;
        let Some(floor) = self.floor() else {
            return Ok(0);
        };
        let mut options = ReadOptions::default();
        options.set_iterate_upper_bound(keys::index_key(floor).to_vec());
        let mut conversations: Vec<String> = Vec::new();
        {
            let mut entries = self
                .db
                .raw_iterator_cf_opt(self.cf(CF_MESSAGE_INDEX), options);
            entries.seek_to_first();
            let mut seen = 0;
            while let Some(value) = entries.value() {
                if let Some(name) =
                    keys::decode_value(value).and_then(|c| std::str::from_utf8(c).ok())
                {
                    if !conversations.iter().any(|c| c == name) {
                        conversations.push(name.to_owned());
                    }
                }
                seen += 1;
                if seen >= SWEEP_ENTRIES {
                    break;
                }
                entries.next();
            }
            entries.status().map_err(store_error)?;
        }
        let mut expired = 0;
        for conversation in conversations {
            expired += self.trim(&conversation, floor, false)?.unwrap_or(0);
        }
        Ok(expired)
    }

    /// Flushes every column family when the store's write-ahead log files hold more than
    /// `max_wal_bytes`, so that they can go: what the maintenance thread does for an idle store
    /// (module docs). Whether it flushed.
    pub fn settle_log(&self) -> Result<bool, StoreError> {
        self.ensure_open()?;
        if self.wal_bytes()? <= self.max_wal_bytes {
            return Ok(false);
        }
        self.flush()?;
        Ok(true)
    }

    /// Starts the maintenance thread: the retention sweep, the eraser and the log's bound,
    /// each on its own schedule (module docs). It holds the store weakly and ends with
    /// [`Store::close`] or the store's drop.
    pub fn start_maintenance(self: &Arc<Self>) {
        let store = Arc::downgrade(self);
        let tick = self.eraser.tick();
        let control = Arc::clone(&self.eraser.control);
        let thread = std::thread::Builder::new()
            .name("kalamdb-eraser".into())
            .spawn(move || maintain(&store, &control, tick))
            .expect("failed to start the store's maintenance thread");
        *self.eraser.thread.lock().unwrap_or_else(|p| p.into_inner()) = Some(thread);
    }

    /// Stops the maintenance thread and waits for it.
    pub(crate) fn stop_maintenance(&self) {
        let control = &self.eraser.control;
        *control.stop.lock().unwrap_or_else(|p| p.into_inner()) = true;
        control.wake.notify_all();
        let thread = self
            .eraser
            .thread
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .take();
        if let Some(thread) = thread {
            if thread.thread().id() != std::thread::current().id() {
                let _ = thread.join();
            }
        }
    }

    /// Whether an erase round is due: the oldest pending delete is a quarter of the bound old.
    fn erase_due(&self) -> bool {
        let since = *self
            .eraser
            .pending_since
            .lock()
            .unwrap_or_else(|p| p.into_inner());
        since.is_some_and(|since| now_ms().saturating_sub(since) >= self.eraser.erase_within_ms / 4)
    }
}

/// The maintenance thread's loop. It holds the store only while it works, so the store's
/// last owner is never this thread while it waits.
fn maintain(store: &Weak<RocksStore>, control: &Control, tick: Duration) {
    // The store's sequence number at the last tick: unchanged, nothing was written since.
    let mut last_sequence = None;
    loop {
        {
            let stop = control.stop.lock().unwrap_or_else(|p| p.into_inner());
            let (stop, _) = control
                .wake
                .wait_timeout_while(stop, tick, |stop| !*stop)
                .unwrap_or_else(|p| p.into_inner());
            if *stop {
                return;
            }
        }
        let Some(store) = store.upgrade() else { return };
        if store.eraser.retention_ms.is_some() {
            match store.expire_now() {
                Ok(_) | Err(StoreError::Closed) => {}
                Err(e) => tracing::warn!(error = %e, "retention sweep failed; retrying"),
            }
        }
        if store.erase_due() {
            match store.erase_now() {
                Ok(_) | Err(StoreError::Closed) => {}
                Err(e) => tracing::warn!(error = %e, "erasing deleted data failed; retrying"),
            }
        }
        // A store that is written to has RocksDB keep the bound at each write.
        let sequence = store.db.latest_sequence_number();
        if last_sequence == Some(sequence) {
            match store.settle_log() {
                Ok(_) | Err(StoreError::Closed) => {}
                Err(e) => tracing::warn!(error = %e, "flushing to let old log files go failed"),
            }
        }
        last_sequence = Some(sequence);
    }
}

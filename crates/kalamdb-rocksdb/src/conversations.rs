//! Conversations as records on RocksDB: the record each write keeps current, the listings by
//! activity, members, and the [`Store`](kalamdb_core::Store) methods that read and change them.
//!
//! The layout is in [`crate::keys`]. Every change here is made under the writer lock, in one
//! `WriteBatch` with whatever else the write holds, so a record, its listing entries and the
//! messages that moved them are never seen apart.
//!
//! # What a message costs
//!
//! A write reads each of its conversations' state once (one point read per conversation per
//! write group, not per message; a cache spares most) and rewrites it. A conversation's listing
//! entries (its `u` entry in the server's listing, and in each member's when it has at most
//! [`INDEXED_MEMBERS`]) are keyed by `updated_at`, so they must move when it changes, which it
//! does at most once a millisecond: a delete and a put per listing.
//!
//! # Busy conversations
//!
//! Moving those entries on every message cost an insert 21% more instructions without members
//! and 54% with three. So they move on a write only when the conversation's previous message is
//! [`LISTING_LAG_MS`] old or more (or it has none). A write into a busy one instead marks it
//! deferred, once: a timeless `p` entry in each of its listings, and the state's
//! [`ConversationState::indexed_at`] saying where its `u` entries were left. Further writes touch
//! no listing entry, and rewrite the state only every [`UNSAVED_MESSAGES`] messages: until then
//! a read of it counts the messages past its `last_id` (newest first, so they are the first keys
//! of the conversation, a short forward scan) and takes the newest for `last_message` and
//! `updated_at`. A write into a busy conversation thus costs about what a message cost before
//! conversations had records. A listing skips a deferred conversation's `u` and `c`
//! entries and places it from its state instead, as a member's listing does a very large
//! conversation (below), so listings are exact at all times, under one snapshot, and after any
//! crash: nothing is kept only in memory but the queue of deferred conversations, which the
//! server's `p` entries hold too and the first write after an open reads back.
//!
//! A write catches up the conversations deferred [`LISTING_LAG_MS`] ago or more (at most
//! [`CATCH_UP_PER_WRITE`]): their `u` entries move to `updated_at` and the `p` entries go, in the
//! write's own batch. A busy conversation thus moves its entries about once a second, not on
//! every message. A page reads one more state per deferred conversation it lists: the server's
//! listing every one, at most [`MAX_DEFERRED`] (past that, writes move entries at once), a
//! member's only theirs (`docs/BENCHMARKS.md`).
//!
//! # Very large conversations
//!
//! Past [`INDEXED_MEMBERS`] members, moving every member's entry on each message would make a
//! write cost grow with the room. Such a conversation's members hold one timeless `L` entry for
//! it instead, written when they join; a member's listing reads those at read time, orders them
//! by the records' times, and merges them with the member's indexed entries. A write then costs
//! the same as in a conversation without members, and a member's page costs one record read per
//! very large conversation they are in. A conversation that shrinks to half the threshold is
//! indexed per member again.

use std::collections::{HashMap, VecDeque};

use kalamdb_core::message::validate_name;
use kalamdb_core::{
    Conversation, ConversationPage, ConversationPatch, ConversationQuery, Inserted, ListCursor,
    ListPosition, MessageId, NewConversation, StoreError, StoredMessage,
};
use rocksdb::{DBRawIteratorWithThreadMode, ReadOptions, SnapshotWithThreadMode, WriteBatch, DB};
use serde_json::{Map, Value};

use crate::keys::{
    self, activity_key, activity_prefix, conversation_key, decode_position, past_prefix,
    position_suffix, ActivityKind, ConversationState, CF_ACTIVITY, CF_CONVERSATIONS, CF_MEMBERS,
    CF_MESSAGES, CF_MESSAGE_INDEX, CF_META, DETAILS, META_LAST_ACTIVITY, STATE,
};
use crate::store::store_error;
use crate::RocksStore;

/// The most members a conversation has for its members' listings to be kept on each write;
/// beyond it they are merged at read time (module docs). Measured in `docs/BENCHMARKS.md`.
pub const INDEXED_MEMBERS: u32 = 8;

/// How long a conversation's previous message must be past for a write to move its listing
/// entries at once rather than defer them, and how long a deferred conversation waits to be
/// caught up (module docs).
pub const LISTING_LAG_MS: u64 = 1_000;

/// How many deferred conversations a write catches up: enough for the conversations deferred in
/// a second to be caught up by a few writes, few enough to add little to any one write.
pub const CATCH_UP_PER_WRITE: usize = 16;

/// How many messages a deferred conversation's stored state may trail its messages by: what a
/// read of it may have to count (module docs).
pub const UNSAVED_MESSAGES: u64 = 64;

/// How many conversations may be deferred at once; past it, writes move entries at once. It
/// bounds what a page of the server's listing reads in their place: about 4,600 instructions
/// each (`docs/BENCHMARKS.md`), some 5 million for a page with all of them.
pub const MAX_DEFERRED: usize = 1024;

/// The entries a page may pass over without returning them before it stops short, so that a
/// page's cost stays bounded; its cursor then goes on from the last entry it looked at.
fn skip_budget(limit: usize) -> usize {
    4 * limit + 64
}

/// The listings a conversation's `u` and `c` entries are kept in: the server's, then each
/// member's while it is not large.
pub(crate) fn listings(state: &ConversationState) -> impl Iterator<Item = &str> {
    std::iter::once("").chain(
        state
            .members
            .iter()
            .map(String::as_str)
            .filter(|_| !state.large),
    )
}

/// A stored state, decoded.
fn decode_state(
    conversation_id: &str,
    stored: Option<impl std::ops::Deref<Target = [u8]>>,
) -> Result<Option<ConversationState>, StoreError> {
    stored
        .map(|value| {
            ConversationState::decode(&value).ok_or_else(|| corrupt(conversation_id, "state"))
        })
        .transpose()
}

fn bad_entry() -> StoreError {
    StoreError::Corrupt("a listing entry does not decode".into())
}

fn corrupt(conversation_id: &str, what: &str) -> StoreError {
    StoreError::Corrupt(format!(
        "the {what} of conversation {conversation_id:?} does not decode"
    ))
}

type Snapshot<'a> = SnapshotWithThreadMode<'a, DB>;

/// The states of the conversations written to lately, so that a write does not read its
/// conversations' states back from RocksDB (a point read per conversation, on the one writer
/// thread). Always equal to what the store holds (a deferred conversation's stored state and
/// the messages past it): filled only after a successful write, emptied of a conversation by
/// any other change to it. Bounded: emptied whole when it reaches
/// [`StateCache::CAPACITY`] conversations.
///
/// It also holds the queue of deferred conversations (module docs), oldest first, each with
/// when it was deferred (ms); `None` until the first write after an open reads the stored one.
/// An entry may outlive its deferral (a patch or a change of members catches up too): catching
/// up a conversation that is not deferred does nothing.
#[derive(Debug, Default)]
pub(crate) struct StateCache {
    states: HashMap<String, ConversationState>,
    deferred: Option<VecDeque<(u64, String)>>,
}

/// What a write changed in its conversations, for [`RocksStore::remember`] once it is durable.
pub(crate) struct Noted {
    states: Vec<(String, ConversationState)>,
    /// How many of the queue's first entries it caught up.
    caught_up: usize,
    /// The conversations it deferred, and when (ms).
    deferred: Vec<String>,
    at: u64,
}

impl StateCache {
    /// About 10 MB of states of conversations without members.
    const CAPACITY: usize = 65_536;

    /// Takes a conversation's state out, with the key it was kept under (to put back).
    fn remove(&mut self, conversation_id: &str) -> Option<(String, ConversationState)> {
        self.states.remove_entry(conversation_id)
    }

    fn insert(&mut self, conversation_id: String, state: ConversationState) {
        if self.states.len() >= Self::CAPACITY {
            self.states.clear();
        }
        self.states.insert(conversation_id, state);
    }

    /// The deferred conversations a write at `now` (ms) catches up: the queue's first entries,
    /// as many as are [`LISTING_LAG_MS`] old, up to [`CATCH_UP_PER_WRITE`].
    fn due(&self, now: u64) -> Vec<String> {
        let Some(queue) = &self.deferred else {
            return Vec::new();
        };
        queue
            .iter()
            .take(CATCH_UP_PER_WRITE)
            .take_while(|(since, _)| since + LISTING_LAG_MS <= now)
            .map(|(_, name)| name.clone())
            .collect()
    }

    /// How many conversations are deferred.
    fn deferred_len(&self) -> usize {
        self.deferred.as_ref().map_or(0, VecDeque::len)
    }
}

impl RocksStore {
    /// Adds to `batch` what the messages `inserted` change in their conversations' records and
    /// listings, and the catching up that is due, and returns what changed, for
    /// [`RocksStore::remember`] once the batch is written. Called under the writer lock.
    pub(crate) fn note_messages(
        &self,
        batch: &mut WriteBatch,
        inserted: &[Inserted],
    ) -> Result<Noted, StoreError> {
        // (conversation, messages, first, last): a group holds few conversations, and a batch
        // for one conversation finds its own at the end.
        let mut touched: Vec<(&str, u64, MessageId, MessageId)> = Vec::new();
        for answer in inserted {
            let conversation = answer.conversation_id.as_str();
            match touched.iter_mut().rev().find(|t| t.0 == conversation) {
                Some(entry) => {
                    entry.1 += 1;
                    entry.3 = answer.msg_id;
                }
                None => touched.push((conversation, 1, answer.msg_id, answer.msg_id)),
            }
        }
        let (records, activity) = (self.cf(CF_CONVERSATIONS), self.cf(CF_ACTIVITY));
        let now = inserted.last().map_or(0, |answer| answer.timestamp);
        let mut cache = self.states.lock().unwrap_or_else(|p| p.into_inner());
        if cache.deferred.is_none() {
            cache.deferred = Some(self.stored_queue()?);
        }
        let due = cache.due(now);
        let mut written: Vec<(String, ConversationState)> =
            Vec::with_capacity(touched.len() + due.len());
        for conversation in &due {
            if let Some((name, mut state)) =
                self.take_state(&mut written, &mut cache, conversation)?
            {
                if state.indexed_at.is_some() {
                    catch_up(batch, activity, &name, &mut state);
                    state.unsaved = 0;
                    batch.put_cf(records, conversation_key(&name, STATE), state.encode());
                }
                written.push((name, state));
            }
        }
        let mut deferred = Vec::new();
        // The queue's length once this write is in.
        let mut queued = cache.deferred_len() - due.len();
        for (conversation, count, first, last) in touched {
            let (name, old) = match self.take_state(&mut written, &mut cache, conversation)? {
                Some((name, state)) => (name, Some(state)),
                None => (conversation.to_owned(), None),
            };
            let new = old.is_none();
            let mut state = old.unwrap_or_else(|| ConversationState {
                created_at: first.timestamp_ms(),
                ..ConversationState::default()
            });
            let previous = state.updated_at;
            // Busy: its previous message is less than the lag old. A conversation's first
            // message (often right after its creation) is not a sign of more to come.
            let busy = state.last_id.is_some_and(|id| {
                first.timestamp_ms().saturating_sub(id.timestamp_ms()) < LISTING_LAG_MS
            });
            state.message_count += count;
            state.last_id = Some(last);
            state.activity = last.as_u64();
            state.updated_at = previous.max(last.timestamp_ms());
            if new {
                // Born with this write: no member yet, so only the server's listing.
                put_entries(batch, activity, "", conversation, &state);
            } else if state.indexed_at.is_some() {
                // Deferred already: the stored state may trail by a few messages.
                if state.unsaved + count <= UNSAVED_MESSAGES {
                    state.unsaved += count;
                    written.push((name, state));
                    continue;
                }
            } else if previous == state.updated_at {
                // Not moved.
            } else if busy && queued < MAX_DEFERRED {
                defer(batch, activity, conversation, &mut state, previous);
                deferred.push(name.clone());
                queued += 1;
            } else {
                for listing in listings(&state) {
                    move_entry(
                        batch,
                        activity,
                        listing,
                        conversation,
                        previous,
                        state.updated_at,
                    );
                }
            }
            state.unsaved = 0;
            batch.put_cf(
                records,
                conversation_key(conversation, STATE),
                state.encode(),
            );
            written.push((name, state));
        }
        Ok(Noted {
            states: written,
            caught_up: due.len(),
            deferred,
            at: now,
        })
    }

    /// A conversation's state for a write to change: the one this write changed already, the
    /// cached one or the stored one. Taken out of the cache: it goes back, changed, only once
    /// the write succeeds.
    fn take_state(
        &self,
        written: &mut Vec<(String, ConversationState)>,
        cache: &mut StateCache,
        conversation_id: &str,
    ) -> Result<Option<(String, ConversationState)>, StoreError> {
        if let Some(at) = written.iter().position(|(name, _)| name == conversation_id) {
            return Ok(Some(written.swap_remove(at)));
        }
        if let Some(found) = cache.remove(conversation_id) {
            return Ok(Some(found));
        }
        Ok(self
            .state(conversation_id)?
            .map(|state| (conversation_id.to_owned(), state)))
    }

    /// The stored queue of deferred conversations, read by the first write after an open: all
    /// due at once, since when each was deferred is not stored.
    fn stored_queue(&self) -> Result<VecDeque<(u64, String)>, StoreError> {
        let snapshot = self.db.snapshot();
        let prefix = activity_prefix("", ActivityKind::Deferred);
        let names = self
            .names_under(&snapshot, CF_ACTIVITY, &prefix)?
            .ok_or_else(bad_entry)?;
        Ok(names.into_iter().map(|name| (0, name)).collect())
    }

    /// Keeps the states a write just made durable, for the next write to the same
    /// conversations, and brings the queue of deferred conversations up to date.
    pub(crate) fn remember(&self, noted: Noted) {
        let mut cache = self.states.lock().unwrap_or_else(|p| p.into_inner());
        for (conversation, state) in noted.states {
            cache.insert(conversation, state);
        }
        let queue = cache.deferred.get_or_insert_default();
        queue.drain(..noted.caught_up.min(queue.len()));
        queue.extend(noted.deferred.into_iter().map(|name| (noted.at, name)));
    }

    /// How many conversations are deferred, as far as the writer knows (`None` before the
    /// first write after an open): for tests.
    #[doc(hidden)]
    pub fn deferred_conversations(&self) -> Option<usize> {
        let cache = self.states.lock().unwrap_or_else(|p| p.into_inner());
        cache.deferred.as_ref().map(VecDeque::len)
    }

    /// Drops a conversation's cached state: called by every change made outside `note_messages`.
    pub(crate) fn forget(&self, conversation_id: &str) {
        self.states
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .remove(conversation_id);
    }

    /// [`Store::create_conversation`](kalamdb_core::Store::create_conversation).
    pub(crate) fn create_conversation_record(
        &self,
        new: &NewConversation,
    ) -> Result<Conversation, StoreError> {
        self.ensure_open()?;
        let ids = self.writer.lock().unwrap_or_else(|p| p.into_inner());
        self.forget(new.conversation_id.as_deref().unwrap_or_default());
        // Times come from minted ids, so activity times only grow (`kalamdb_core::conversation`).
        let minted = ids.next_id()?;
        let id = match &new.conversation_id {
            Some(id) => id.clone(),
            None => format!("conv_{minted}"),
        };
        let records = self.cf(CF_CONVERSATIONS);
        let state_key = conversation_key(&id, STATE);
        if self
            .db
            .get_pinned_cf(records, &state_key)
            .map_err(store_error)?
            .is_some()
        {
            return Err(StoreError::Conflict(format!(
                "conversation {id:?} already exists"
            )));
        }
        let now = minted.timestamp_ms();
        let member_count = u32::try_from(new.members.len()).unwrap_or(u32::MAX);
        let large = member_count > INDEXED_MEMBERS;
        let state = ConversationState {
            created_at: now,
            updated_at: now,
            message_count: 0,
            last_id: None,
            activity: minted.as_u64(),
            member_count,
            large,
            members: if large {
                Vec::new()
            } else {
                new.members.clone()
            },
            indexed_at: None,
            unsaved: 0,
        };
        let mut batch = WriteBatch::default();
        let activity = self.cf(CF_ACTIVITY);
        for listing in listings(&state) {
            put_entries(&mut batch, activity, listing, &id, &state);
        }
        let members = self.cf(CF_MEMBERS);
        for member in &new.members {
            batch.put_cf(members, keys::member_key(&id, member), []);
            if large {
                batch.put_cf(
                    activity,
                    activity_key(member, ActivityKind::Large, 0, &id),
                    [],
                );
            }
        }
        batch.put_cf(
            records,
            conversation_key(&id, DETAILS),
            details(new.title.as_deref(), &new.metadata),
        );
        self.commit(batch, &id, &state)?;
        drop(ids);
        self.conversation_record(&id)?
            .ok_or_else(|| StoreError::Internal(format!("conversation {id:?} vanished")))
    }

    /// [`Store::conversation`](kalamdb_core::Store::conversation).
    pub(crate) fn conversation_record(
        &self,
        conversation_id: &str,
    ) -> Result<Option<Conversation>, StoreError> {
        self.ensure_open()?;
        let snapshot = self.db.snapshot();
        let Some(state) = self.state_in(&snapshot, conversation_id)? else {
            return Ok(None);
        };
        self.view(&snapshot, conversation_id, &state).map(Some)
    }

    /// [`Store::update_conversation`](kalamdb_core::Store::update_conversation).
    pub(crate) fn update_conversation_record(
        &self,
        conversation_id: &str,
        patch: &ConversationPatch,
    ) -> Result<Option<Conversation>, StoreError> {
        self.ensure_open()?;
        let lock = self.writer.lock().unwrap_or_else(|p| p.into_inner());
        self.forget(conversation_id);
        let Some(mut state) = self.state(conversation_id)? else {
            return Ok(None);
        };
        if !patch.is_empty() {
            let records = self.cf(CF_CONVERSATIONS);
            let details_key = conversation_key(conversation_id, DETAILS);
            let stored = self
                .db
                .get_pinned_cf(records, &details_key)
                .map_err(store_error)?;
            let (mut title, mut metadata) = decode_details(conversation_id, stored)?;
            if let Some(new) = &patch.title {
                title.clone_from(new);
            }
            if let Some(new) = &patch.metadata {
                metadata = new.clone().unwrap_or_default();
            }
            let mut batch = WriteBatch::default();
            catch_up(
                &mut batch,
                self.cf(CF_ACTIVITY),
                conversation_id,
                &mut state,
            );
            let updated_at = state.updated_at.max(lock.next_id()?.timestamp_ms());
            if updated_at != state.updated_at {
                for listing in listings(&state) {
                    move_entry(
                        &mut batch,
                        self.cf(CF_ACTIVITY),
                        listing,
                        conversation_id,
                        state.updated_at,
                        updated_at,
                    );
                }
                state.updated_at = updated_at;
            }
            batch.put_cf(records, &details_key, details(title.as_deref(), &metadata));
            self.commit(batch, conversation_id, &state)?;
        }
        drop(lock);
        self.conversation_record(conversation_id)
    }

    /// What follows `prefix` in each key of `cf` that starts with it, in key order: the
    /// members of a conversation, or a member's large conversations. `None` when one is not
    /// UTF-8.
    fn names_under(
        &self,
        snapshot: &Snapshot<'_>,
        cf: &str,
        prefix: &[u8],
    ) -> Result<Option<Vec<String>>, StoreError> {
        let mut options = ReadOptions::default();
        options.set_iterate_lower_bound(prefix.to_vec());
        options.set_iterate_upper_bound(past_prefix(prefix));
        let mut entries = snapshot.raw_iterator_cf_opt(self.cf(cf), options);
        entries.seek_to_first();
        let mut names = Vec::new();
        while let Some(key) = entries.key() {
            match std::str::from_utf8(&key[prefix.len()..]) {
                Ok(name) => names.push(name.to_owned()),
                Err(_) => return Ok(None),
            }
            entries.next();
        }
        entries.status().map_err(store_error)?;
        Ok(Some(names))
    }

    /// Writes `batch` with the conversation's new `state`: the end of every change but a
    /// message's (callers hold the writer lock).
    fn commit(
        &self,
        mut batch: WriteBatch,
        conversation_id: &str,
        state: &ConversationState,
    ) -> Result<(), StoreError> {
        let key = conversation_key(conversation_id, STATE);
        batch.put_cf(self.cf(CF_CONVERSATIONS), key, state.encode());
        self.db
            .write_opt(batch, &self.write_options)
            .map_err(store_error)
    }

    /// [`Store::members`](kalamdb_core::Store::members).
    pub(crate) fn member_list(
        &self,
        conversation_id: &str,
    ) -> Result<Option<Vec<String>>, StoreError> {
        self.ensure_open()?;
        let snapshot = self.db.snapshot();
        if self.state_in(&snapshot, conversation_id)?.is_none() {
            return Ok(None);
        }
        self.members_in(&snapshot, conversation_id).map(Some)
    }

    /// [`Store::is_member`](kalamdb_core::Store::is_member): the member's own entry, and only
    /// when it is absent the record, to tell "not a member" from "no such conversation".
    pub(crate) fn membership(
        &self,
        conversation_id: &str,
        user_id: &str,
    ) -> Result<Option<bool>, StoreError> {
        self.ensure_open()?;
        let member_key = keys::member_key(conversation_id, user_id);
        if self
            .db
            .get_pinned_cf(self.cf(CF_MEMBERS), &member_key)
            .map_err(store_error)?
            .is_some()
        {
            return Ok(Some(true));
        }
        let exists = self
            .db
            .get_pinned_cf(
                self.cf(CF_CONVERSATIONS),
                conversation_key(conversation_id, STATE),
            )
            .map_err(store_error)?
            .is_some();
        Ok(exists.then_some(false))
    }

    fn members_in(
        &self,
        snapshot: &Snapshot<'_>,
        conversation_id: &str,
    ) -> Result<Vec<String>, StoreError> {
        let prefix = keys::members_prefix(conversation_id);
        self.names_under(snapshot, CF_MEMBERS, &prefix)?
            .ok_or_else(|| corrupt(conversation_id, "member list"))
    }

    /// [`Store::set_member`](kalamdb_core::Store::set_member).
    pub(crate) fn set_member_record(
        &self,
        conversation_id: &str,
        user_id: &str,
        member: bool,
    ) -> Result<bool, StoreError> {
        self.ensure_open()?;
        validate_name("user_id", user_id)?;
        let lock = self.writer.lock().unwrap_or_else(|p| p.into_inner());
        self.forget(conversation_id);
        let Some(mut state) = self.state(conversation_id)? else {
            return Ok(false);
        };
        let (members, activity) = (self.cf(CF_MEMBERS), self.cf(CF_ACTIVITY));
        let member_key = keys::member_key(conversation_id, user_id);
        let present = self
            .db
            .get_pinned_cf(members, &member_key)
            .map_err(store_error)?
            .is_some();
        if present == member {
            return Ok(true);
        }
        let mut batch = WriteBatch::default();
        // What follows assumes every member's entries stand at `updated_at`.
        catch_up(&mut batch, activity, conversation_id, &mut state);
        if member {
            batch.put_cf(members, &member_key, []);
            state.member_count += 1;
            if state.large {
                batch.put_cf(
                    activity,
                    activity_key(user_id, ActivityKind::Large, 0, conversation_id),
                    [],
                );
            } else if state.member_count > INDEXED_MEMBERS {
                // Too many to move on each write: every member's entry becomes timeless.
                for old in std::mem::take(&mut state.members) {
                    delete_entries(&mut batch, activity, &old, conversation_id, &state);
                    batch.put_cf(
                        activity,
                        activity_key(&old, ActivityKind::Large, 0, conversation_id),
                        [],
                    );
                }
                batch.put_cf(
                    activity,
                    activity_key(user_id, ActivityKind::Large, 0, conversation_id),
                    [],
                );
                state.large = true;
            } else {
                put_entries(&mut batch, activity, user_id, conversation_id, &state);
                let at = state.members.partition_point(|m| m.as_str() < user_id);
                state.members.insert(at, user_id.to_owned());
            }
        } else {
            batch.delete_cf(members, &member_key);
            state.member_count = state.member_count.saturating_sub(1);
            if state.large {
                batch.delete_cf(
                    activity,
                    activity_key(user_id, ActivityKind::Large, 0, conversation_id),
                );
                if state.member_count <= INDEXED_MEMBERS / 2 {
                    let snapshot = self.db.snapshot();
                    let remaining: Vec<String> = self
                        .members_in(&snapshot, conversation_id)?
                        .into_iter()
                        .filter(|m| m != user_id)
                        .collect();
                    state.large = false;
                    for other in &remaining {
                        batch.delete_cf(
                            activity,
                            activity_key(other, ActivityKind::Large, 0, conversation_id),
                        );
                        put_entries(&mut batch, activity, other, conversation_id, &state);
                    }
                    state.members = remaining;
                }
            } else {
                delete_entries(&mut batch, activity, user_id, conversation_id, &state);
                state.members.retain(|m| m != user_id);
            }
        }
        self.commit(batch, conversation_id, &state)?;
        drop(lock);
        Ok(true)
    }

    /// [`Store::list_conversations`](kalamdb_core::Store::list_conversations): the merge of the
    /// listing's `u` entries, its `c` entries (with a cursor) and, for a member, the `L` ones,
    /// in position order, under one snapshot.
    pub(crate) fn list(&self, query: &ConversationQuery) -> Result<ConversationPage, StoreError> {
        self.ensure_open()?;
        if query.limit == 0 {
            return Ok(ConversationPage::default());
        }
        let snapshot = self.db.snapshot();
        let member = query.member.as_deref().unwrap_or("");
        // Without a cursor every conversation stands at its `updated_at`.
        let horizon = query.cursor.as_ref().map_or(u64::MAX, |c| c.horizon);
        let after = query
            .cursor
            .as_ref()
            .map(|c| position_suffix(c.after.at.0, &c.after.conversation_id));
        let mut updated = Entries::new(
            self,
            &snapshot,
            member,
            ActivityKind::Updated,
            after.as_deref(),
        );
        let mut created = query.cursor.as_ref().map(|_| {
            Entries::new(
                self,
                &snapshot,
                member,
                ActivityKind::Created,
                after.as_deref(),
            )
        });
        let mut timeless = self
            .timeless_positions(&snapshot, member, horizon, query.cursor.as_ref())?
            .into_iter()
            .peekable();
        // A deferred conversation's `u` and `c` entries trail it: it is placed from its state,
        // with the timeless entries, instead.
        let trails = |state: &ConversationState| state.indexed_at.is_some();

        let mut conversations = Vec::new();
        let mut last: Option<Vec<u8>> = None;
        let (mut has_more, mut skipped) = (false, 0);
        loop {
            // The smallest head of the three sources.
            let mut next: Option<(ActivityKind, Vec<u8>)> =
                updated.head().map(|s| (ActivityKind::Updated, s.to_vec()));
            if let Some(head) = created.as_mut().and_then(Entries::head) {
                if next.as_ref().is_none_or(|(_, n)| head < n.as_slice()) {
                    next = Some((ActivityKind::Created, head.to_vec()));
                }
            }
            if let Some((suffix, _)) = timeless.peek() {
                if next.as_ref().is_none_or(|(_, n)| suffix < n) {
                    next = Some((ActivityKind::Large, suffix.clone()));
                }
            }
            let Some((source, suffix)) = next else { break };
            let (_, conversation) = decode_position(&suffix).ok_or_else(bad_entry)?;
            // Only a timeless entry's state is read already (to place it); the others' is read here.
            let (state, include) = match source {
                ActivityKind::Updated => {
                    updated.advance();
                    let state = self.listed_state(&snapshot, conversation)?;
                    let include = state.activity <= horizon && !trails(&state);
                    (state, include)
                }
                ActivityKind::Created => {
                    created.as_mut().expect("a head came from it").advance();
                    let state = self.listed_state(&snapshot, conversation)?;
                    let include = state.activity > horizon && !trails(&state);
                    (state, include)
                }
                ActivityKind::Large | ActivityKind::Deferred => {
                    (timeless.next().expect("a head came from it").1, true)
                }
            };
            if include {
                if conversations.len() == query.limit {
                    has_more = true;
                    break;
                }
                conversations.push(self.view(&snapshot, conversation, &state)?);
                last = Some(suffix);
            } else {
                skipped += 1;
                if skipped > skip_budget(query.limit) {
                    has_more = true;
                    last = Some(suffix);
                    break;
                }
            }
        }
        updated.status()?;
        if let Some(created) = &created {
            created.status()?;
        }
        let horizon = match &query.cursor {
            Some(cursor) => cursor.horizon,
            None => self.horizon(&snapshot)?,
        };
        let next_cursor = match (has_more, last) {
            (true, Some(suffix)) => {
                let (at, conversation) = decode_position(&suffix).ok_or_else(bad_entry)?;
                Some(ListCursor {
                    horizon,
                    after: ListPosition::new(at, conversation),
                })
            }
            _ => None,
        };
        Ok(ConversationPage {
            conversations,
            has_more,
            next_cursor,
        })
    }

    /// The listing's very large (a member's only) and deferred conversations after the cursor,
    /// each with its position suffix and state, in listing order.
    fn timeless_positions(
        &self,
        snapshot: &Snapshot<'_>,
        member: &str,
        horizon: u64,
        cursor: Option<&ListCursor>,
    ) -> Result<Vec<(Vec<u8>, ConversationState)>, StoreError> {
        let mut names = Vec::new();
        for kind in [ActivityKind::Large, ActivityKind::Deferred] {
            let prefix = activity_prefix(member, kind);
            names.extend(
                self.names_under(snapshot, CF_ACTIVITY, &prefix)?
                    .ok_or_else(bad_entry)?,
            );
        }
        let mut found = Vec::with_capacity(names.len());
        for conversation in &names {
            let mut state = self.listed_state(snapshot, conversation)?;
            if state.indexed_at.is_some() {
                self.count_unsaved(snapshot, conversation, &mut state)?;
            }
            let position = ListCursor::position_of(
                horizon,
                conversation,
                state.created_at,
                state.updated_at,
                state.activity,
            );
            if cursor.is_none_or(|c| position > c.after) {
                found.push((position_suffix(position.at.0, conversation), state));
            }
        }
        found.sort_by(|a, b| a.0.cmp(&b.0));
        Ok(found)
    }

    /// The highest activity id in `snapshot`: the newest message's id or the last create's or
    /// patch's, whichever is higher. Everything written after the snapshot has a higher one.
    fn horizon(&self, snapshot: &Snapshot<'_>) -> Result<u64, StoreError> {
        let mut index = snapshot.raw_iterator_cf(self.cf(CF_MESSAGE_INDEX));
        index.seek_to_last();
        let newest = index
            .key()
            .and_then(keys::decode_index_key)
            .map_or(0, MessageId::as_u64);
        index.status().map_err(store_error)?;
        let last = snapshot
            .get_pinned_cf_opt(self.cf(CF_META), META_LAST_ACTIVITY, ReadOptions::default())
            .map_err(store_error)?
            .and_then(|v| <[u8; 8]>::try_from(&v[..]).ok())
            .map_or(0, u64::from_be_bytes);
        Ok(newest.max(last))
    }

    /// A conversation's state as of now (callers hold the writer lock).
    pub(crate) fn state(
        &self,
        conversation_id: &str,
    ) -> Result<Option<ConversationState>, StoreError> {
        self.state_in(&self.db.snapshot(), conversation_id)
    }

    /// A conversation's state as of `snapshot`, with the messages a deferred one's stored
    /// state does not count yet.
    fn state_in(
        &self,
        snapshot: &Snapshot<'_>,
        conversation_id: &str,
    ) -> Result<Option<ConversationState>, StoreError> {
        let Some(mut state) = self.stored_state_in(snapshot, conversation_id)? else {
            return Ok(None);
        };
        if state.indexed_at.is_some() {
            self.count_unsaved(snapshot, conversation_id, &mut state)?;
        }
        Ok(Some(state))
    }

    /// A conversation's state as stored in `snapshot`.
    fn stored_state_in(
        &self,
        snapshot: &Snapshot<'_>,
        conversation_id: &str,
    ) -> Result<Option<ConversationState>, StoreError> {
        let key = conversation_key(conversation_id, STATE);
        let stored =
            snapshot.get_pinned_cf_opt(self.cf(CF_CONVERSATIONS), key, ReadOptions::default());
        decode_state(conversation_id, stored.map_err(store_error)?)
    }

    /// Adds to a deferred conversation's stored state the messages past its `last_id`: the
    /// first keys of the conversation, newest first, at most [`UNSAVED_MESSAGES`] of them.
    fn count_unsaved(
        &self,
        snapshot: &Snapshot<'_>,
        conversation_id: &str,
        state: &mut ConversationState,
    ) -> Result<(), StoreError> {
        let (lower, past) = keys::conversation_range(conversation_id);
        let upper = match state.last_id {
            Some(id) => keys::message_key(conversation_id, id),
            None => past,
        };
        let mut options = ReadOptions::default();
        options.set_iterate_lower_bound(lower);
        options.set_iterate_upper_bound(upper);
        let mut messages = snapshot.raw_iterator_cf_opt(self.cf(CF_MESSAGES), options);
        messages.seek_to_first();
        let mut newest = None;
        while let Some(key) = messages.key() {
            if newest.is_none() {
                newest = Some(keys::decode_message_id(key).ok_or_else(|| {
                    StoreError::Corrupt(format!("a message key of {conversation_id:?}"))
                })?);
            }
            state.unsaved += 1;
            messages.next();
        }
        messages.status().map_err(store_error)?;
        if let Some(id) = newest {
            state.message_count += state.unsaved;
            state.last_id = Some(id);
            state.updated_at = state.updated_at.max(id.timestamp_ms());
            state.activity = state.activity.max(id.as_u64());
        }
        Ok(())
    }

    /// How many messages of the conversation have ids below `floor`: the oldest keys, read
    /// forward from the newest of them.
    fn count_below(
        &self,
        snapshot: &Snapshot<'_>,
        conversation_id: &str,
        floor: MessageId,
    ) -> Result<u64, StoreError> {
        let Some((lower, upper)) = keys::id_range(conversation_id, None, Some(floor)) else {
            return Ok(0);
        };
        let mut options = ReadOptions::default();
        options.set_iterate_lower_bound(lower);
        options.set_iterate_upper_bound(upper);
        let mut messages = snapshot.raw_iterator_cf_opt(self.cf(CF_MESSAGES), options);
        messages.seek_to_first();
        let mut count = 0;
        while messages.valid() {
            count += 1;
            messages.next();
        }
        messages.status().map_err(store_error)?;
        Ok(count)
    }

    /// The state of a conversation a listing names, which must exist: the entry and the record
    /// are written together. As stored: a deferred one's may not count its newest messages,
    /// which [`Self::count_unsaved`] adds; any other's is whole.
    fn listed_state(
        &self,
        snapshot: &Snapshot<'_>,
        conversation_id: &str,
    ) -> Result<ConversationState, StoreError> {
        self.stored_state_in(snapshot, conversation_id)?
            .ok_or_else(|| {
                StoreError::Corrupt(format!(
                    "conversation {conversation_id:?} is listed but has no record"
                ))
            })
    }

    /// The conversation as the API returns it: its state, details and last message.
    fn view(
        &self,
        snapshot: &Snapshot<'_>,
        conversation_id: &str,
        state: &ConversationState,
    ) -> Result<Conversation, StoreError> {
        let details = snapshot
            .get_pinned_cf_opt(
                self.cf(CF_CONVERSATIONS),
                conversation_key(conversation_id, DETAILS),
                ReadOptions::default(),
            )
            .map_err(store_error)?;
        let (title, metadata) = decode_details(conversation_id, details)?;
        // Messages past retention are gone from reads at once, from the count too, before the
        // sweep deletes them.
        let (message_count, last_id) = match self.floor() {
            Some(floor) if state.last_id.is_none_or(|id| id < floor) => (0, None),
            Some(floor) => {
                let expired = self.count_below(snapshot, conversation_id, floor)?;
                (state.message_count.saturating_sub(expired), state.last_id)
            }
            None => (state.message_count, state.last_id),
        };
        let last_message = match last_id {
            Some(id) => {
                let value = snapshot
                    .get_pinned_cf_opt(
                        self.cf(CF_MESSAGES),
                        keys::message_key(conversation_id, id),
                        ReadOptions::default(),
                    )
                    .map_err(store_error)?
                    .ok_or_else(|| {
                        StoreError::Corrupt(format!(
                            "the last message {id} of {conversation_id:?} is missing"
                        ))
                    })?;
                let json = keys::decode_value(&value).ok_or_else(|| {
                    StoreError::Corrupt(format!("message {id} has an unknown version"))
                })?;
                Some(StoredMessage {
                    msg_id: id,
                    json: json.to_vec(),
                })
            }
            None => None,
        };
        Ok(Conversation {
            conversation_id: conversation_id.to_owned(),
            created_at: state.created_at,
            updated_at: state.updated_at,
            message_count,
            last_message,
            title,
            metadata,
        })
    }
}

/// Stored details: the title and the metadata's JSON.
fn details(title: Option<&str>, metadata: &Map<String, Value>) -> Vec<u8> {
    // A map of JSON values always serializes.
    keys::encode_details(title, &serde_json::to_vec(metadata).unwrap_or_default())
}

/// Stored details, decoded: the title and the metadata (none and `{}` when never set).
fn decode_details(
    conversation_id: &str,
    stored: Option<impl std::ops::Deref<Target = [u8]>>,
) -> Result<(Option<String>, Map<String, Value>), StoreError> {
    let Some(value) = stored else {
        return Ok((None, Map::new()));
    };
    let (title, json) =
        keys::decode_details(&value).ok_or_else(|| corrupt(conversation_id, "details"))?;
    let metadata = if json.is_empty() {
        Map::new()
    } else {
        serde_json::from_slice(json).map_err(|_| corrupt(conversation_id, "metadata"))?
    };
    Ok((title.map(str::to_owned), metadata))
}

/// Moves a conversation's `u` entry in one listing from `from` to `to`.
pub(crate) fn move_entry(
    batch: &mut WriteBatch,
    activity: &rocksdb::ColumnFamily,
    listing: &str,
    conversation_id: &str,
    from: u64,
    to: u64,
) {
    batch.delete_cf(
        activity,
        activity_key(listing, ActivityKind::Updated, from, conversation_id),
    );
    batch.put_cf(
        activity,
        activity_key(listing, ActivityKind::Updated, to, conversation_id),
        [],
    );
}

/// Marks a busy conversation deferred (module docs): its `u` entries stay at `at`.
fn defer(
    batch: &mut WriteBatch,
    activity: &rocksdb::ColumnFamily,
    conversation_id: &str,
    state: &mut ConversationState,
    at: u64,
) {
    for listing in listings(state) {
        batch.put_cf(
            activity,
            activity_key(listing, ActivityKind::Deferred, 0, conversation_id),
            [],
        );
    }
    state.indexed_at = Some(at);
}

/// Moves a deferred conversation's `u` entries to its `updated_at` and drops its `p` entries;
/// nothing for one that is not deferred. Every change to a conversation's members catches it up
/// first, so the listings it was deferred in are the ones its state names now.
pub(crate) fn catch_up(
    batch: &mut WriteBatch,
    activity: &rocksdb::ColumnFamily,
    conversation_id: &str,
    state: &mut ConversationState,
) {
    let Some(from) = state.indexed_at.take() else {
        return;
    };
    for listing in listings(state) {
        if from != state.updated_at {
            move_entry(
                batch,
                activity,
                listing,
                conversation_id,
                from,
                state.updated_at,
            );
        }
        batch.delete_cf(
            activity,
            activity_key(listing, ActivityKind::Deferred, 0, conversation_id),
        );
    }
}

/// Puts a conversation's `u` and `c` entries in one listing.
fn put_entries(
    batch: &mut WriteBatch,
    activity: &rocksdb::ColumnFamily,
    listing: &str,
    conversation_id: &str,
    state: &ConversationState,
) {
    batch.put_cf(
        activity,
        activity_key(
            listing,
            ActivityKind::Updated,
            state.updated_at,
            conversation_id,
        ),
        [],
    );
    batch.put_cf(
        activity,
        activity_key(
            listing,
            ActivityKind::Created,
            state.created_at,
            conversation_id,
        ),
        [],
    );
}

/// Deletes a conversation's `u` and `c` entries from one listing.
fn delete_entries(
    batch: &mut WriteBatch,
    activity: &rocksdb::ColumnFamily,
    listing: &str,
    conversation_id: &str,
    state: &ConversationState,
) {
    batch.delete_cf(
        activity,
        activity_key(
            listing,
            ActivityKind::Updated,
            state.updated_at,
            conversation_id,
        ),
    );
    batch.delete_cf(
        activity,
        activity_key(
            listing,
            ActivityKind::Created,
            state.created_at,
            conversation_id,
        ),
    );
}

/// One kind of a listing's entries after a cursor, read in order.
struct Entries<'a> {
    iter: DBRawIteratorWithThreadMode<'a, DB>,
    prefix_len: usize,
}

impl<'a> Entries<'a> {
    fn new(
        store: &'a RocksStore,
        snapshot: &'a Snapshot<'_>,
        member: &str,
        kind: ActivityKind,
        after: Option<&[u8]>,
    ) -> Self {
        let prefix = activity_prefix(member, kind);
        let mut lower = prefix.clone();
        if let Some(after) = after {
            // The first key past the cursor's own position.
            lower.extend_from_slice(after);
            lower.push(0);
        }
        let mut options = ReadOptions::default();
        options.set_iterate_upper_bound(past_prefix(&prefix));
        options.set_iterate_lower_bound(lower);
        let mut iter = snapshot.raw_iterator_cf_opt(store.cf(CF_ACTIVITY), options);
        iter.seek_to_first();
        Self {
            iter,
            prefix_len: prefix.len(),
        }
    }

    /// The position suffix of the next entry.
    fn head(&mut self) -> Option<&[u8]> {
        self.iter.key().map(|key| &key[self.prefix_len..])
    }

    /// Moves past the head.
    fn advance(&mut self) {
        self.iter.next();
    }

    fn status(&self) -> Result<(), StoreError> {
        self.iter.status().map_err(store_error)
    }
}

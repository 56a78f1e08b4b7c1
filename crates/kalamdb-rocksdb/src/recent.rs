//! The newest messages of recently read conversations, in memory: a conversation's latest page
//! and a poller's catch-up (`since` a recent message) are answered without a RocksDB iterator,
//! and without the hand-off to a reader thread ([`Store::query_in_memory`]). Building and
//! tearing down the iterator was most of a query's cost (`docs/BENCHMARKS.md`).
//!
//! # What an entry holds
//!
//! An entry is a *suffix* of its conversation: every message with an id at or above its oldest
//! one, in id order, and `complete` when the conversation holds nothing older. So a page whose
//! messages all lie in the suffix, and whose "more beyond" the suffix can decide, is answered
//! exactly as RocksDB would ([`Recent::answer`]); any other page is read from RocksDB.
//!
//! # Staying exact
//!
//! Only reads create entries (a conversation nobody reads costs nothing here), from a page that
//! was a suffix (no `before`, newest first or to the end). Writes keep them exact, after their
//! RocksDB write and before their call returns:
//! - an insert appends its messages to their conversations' entries, if any;
//! - an edit, a delete, a trim or a conversation delete drops the conversation's entry (a write
//!   that failed does too: its outcome is not known).
//!
//! Each also bumps its shard's version. A read takes a [`Ticket`] (the version) before it reads
//! RocksDB and fills only when the version has not moved since: a write it might have missed
//! would have moved it. Between a write's RocksDB write and its call's return, a read may see
//! it or not, as with RocksDB alone.
//!
//! # Memory
//!
//! `storage.recent_cache_mb` in all, split over [`SHARDS`] shards; at most `per_conversation`
//! messages an entry (older ones fall off as new ones arrive). A shard over its share evicts
//! entries not read since the clock hand last passed them (CLOCK, an approximation of least
//! recently used that needs no list to maintain on a read).
//!
//! # Figures
//!
//! Hits and evictions are counted in their shard, under the lock the read or write holds
//! anyway; misses in one atomic, as a miss goes on to read RocksDB, which costs a hundred times
//! more. [`Recent::stats`] sums them for `/metrics` (`CacheStats`).
//!
//! [`Store::query_in_memory`]: kalamdb_core::Store::query_in_memory

use std::collections::{HashMap, VecDeque};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Mutex, MutexGuard};

use kalamdb_core::{CacheStats, Inserted, MessageId, Order, Page, PreparedMessage, StoredMessage};

/// How many shards (each its own lock) the cache is split into.
pub(crate) const SHARDS: usize = 16;

/// What an entry and a message cost beyond their bytes, for the budget: a map slot, a slot,
/// the boxes' headers and the queue's cells.
const ENTRY_OVERHEAD: usize = 160;
const MESSAGE_OVERHEAD: usize = 48;

/// The cache; see the module docs.
pub(crate) struct Recent {
    shards: Box<[Mutex<Shard>]>,
    /// Each shard's share of the budget, in bytes.
    shard_budget: usize,
    /// The most messages an entry keeps.
    per_conversation: usize,
    /// Queries read from RocksDB because no entry could answer them ([`Recent::missed`]).
    misses: AtomicU64,
}

/// Where a read stood before it read RocksDB: what [`Recent::fill`] checks.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Ticket {
    shard: usize,
    version: u64,
}

#[derive(Default)]
struct Shard {
    /// Bumped by every write to a conversation of this shard.
    version: u64,
    slots: Vec<Option<Slot>>,
    free: Vec<usize>,
    index: HashMap<Box<str>, usize>,
    /// The clock hand: the next slot eviction looks at.
    hand: usize,
    bytes: usize,
    /// Pages answered from this shard's entries.
    hits: u64,
    /// Entries evicted for the budget.
    evictions: u64,
}

struct Slot {
    conversation: Box<str>,
    tail: Tail,
    /// Read (or filled) since the clock hand last passed.
    referenced: bool,
}

/// A suffix of a conversation, oldest first; never empty.
struct Tail {
    messages: VecDeque<(MessageId, Box<[u8]>)>,
    /// Nothing older than `messages` is stored.
    complete: bool,
    bytes: usize,
}

impl Tail {
    fn first_id(&self) -> MessageId {
        self.messages.front().map_or(MessageId::MIN, |(id, _)| *id)
    }

    fn last_id(&self) -> MessageId {
        self.messages.back().map_or(MessageId::MIN, |(id, _)| *id)
    }

    /// Appends a message newer than every other, dropping the oldest beyond `cap`.
    fn push(&mut self, id: MessageId, json: Box<[u8]>, cap: usize) {
        self.bytes += json.len() + MESSAGE_OVERHEAD;
        self.messages.push_back((id, json));
        while self.messages.len() > cap {
            if let Some((_, old)) = self.messages.pop_front() {
                self.bytes -= old.len() + MESSAGE_OVERHEAD;
                self.complete = false;
            }
        }
    }
}

impl Recent {
    /// A cache of `budget` bytes keeping up to `per_conversation` messages a conversation; a
    /// budget of 0 keeps nothing.
    pub(crate) fn new(budget: usize, per_conversation: usize) -> Self {
        Self {
            shards: (0..SHARDS).map(|_| Mutex::default()).collect(),
            shard_budget: budget / SHARDS,
            per_conversation: per_conversation.max(1),
            misses: AtomicU64::new(0),
        }
    }

    fn enabled(&self) -> bool {
        self.shard_budget > 0
    }

    fn shard_of(conversation: &str) -> usize {
        usize::from(u16::from_be_bytes(crate::keys::bucket(
            conversation.as_bytes(),
        ))) % SHARDS
    }

    fn lock(&self, shard: usize) -> MutexGuard<'_, Shard> {
        // Every change to a shard leaves it consistent before anything that could panic.
        self.shards[shard].lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The page of `conversation` with ids in `(since, before)`, when the entry can answer it
    /// as RocksDB would; otherwise a ticket for [`Recent::fill`] after reading it there.
    pub(crate) fn answer(
        &self,
        conversation: &str,
        since: Option<MessageId>,
        before: Option<MessageId>,
        limit: usize,
        order: Order,
    ) -> Result<Page, Ticket> {
        if !self.enabled() {
            // A fill with it keeps nothing either: no lock to take.
            return Err(Ticket {
                shard: 0,
                version: 0,
            });
        }
        let shard_index = Self::shard_of(conversation);
        let mut shard = self.lock(shard_index);
        let ticket = Ticket {
            shard: shard_index,
            version: shard.version,
        };
        let Some(&slot) = shard.index.get(conversation) else {
            return Err(ticket);
        };
        let Some(entry) = shard.slots[slot].as_mut() else {
            return Err(ticket);
        };
        match page_from(&entry.tail, since, before, limit, order) {
            Some(page) => {
                entry.referenced = true;
                shard.hits += 1;
                Ok(page)
            }
            None => Err(ticket),
        }
    }

    /// Keeps `messages` (newest first, or oldest first) as the entry of `conversation`: they
    /// are its newest messages, all of those above the oldest of them, and `complete` when
    /// nothing older is stored. Ignored when a write reached the shard since `ticket`, or when
    /// the entry holds as much already.
    pub(crate) fn fill(
        &self,
        ticket: Ticket,
        conversation: &str,
        messages: &[StoredMessage],
        newest_first: bool,
        complete: bool,
    ) {
        if !self.enabled() || messages.is_empty() {
            return;
        }
        let mut shard = self.lock(ticket.shard);
        if shard.version != ticket.version {
            return;
        }
        let keep = messages.len().min(self.per_conversation);
        let kept: Vec<&StoredMessage> = if newest_first {
            messages[..keep].iter().rev().collect()
        } else {
            messages[messages.len() - keep..].iter().collect()
        };
        let mut tail = Tail {
            messages: VecDeque::with_capacity(keep),
            complete: complete && keep == messages.len(),
            bytes: 0,
        };
        for message in kept {
            tail.push(message.msg_id, message.json.as_slice().into(), usize::MAX);
        }
        let cost = tail.bytes + ENTRY_OVERHEAD + 2 * conversation.len();
        if cost > self.shard_budget {
            return;
        }
        if let Some(&slot) = shard.index.get(conversation) {
            let Some(entry) = shard.slots[slot].as_mut() else {
                return;
            };
            entry.referenced = true;
            // Both are suffixes of the same state; the one reaching further back answers more.
            let better =
                tail.first_id() < entry.tail.first_id() || (tail.complete && !entry.tail.complete);
            if !better {
                return;
            }
            let added = tail.bytes;
            let old = std::mem::replace(&mut entry.tail, tail);
            shard.bytes = shard.bytes - old.bytes + added;
        } else {
            let slot = Slot {
                conversation: conversation.into(),
                tail,
                referenced: true,
            };
            let at = match shard.free.pop() {
                Some(at) => {
                    shard.slots[at] = Some(slot);
                    at
                }
                None => {
                    shard.slots.push(Some(slot));
                    shard.slots.len() - 1
                }
            };
            shard.index.insert(conversation.into(), at);
            shard.bytes += cost;
        }
        self.evict(&mut shard);
    }

    /// After an insert's RocksDB write: `messages`, with the ids of their `answers`
    /// (increasing), join their conversations' entries. Called under the store's writer lock,
    /// so appends are in id order.
    pub(crate) fn inserted(&self, messages: &[PreparedMessage], answers: &[Inserted]) {
        if !self.enabled() {
            return;
        }
        let count = messages.len().min(answers.len());
        let mut start = 0;
        while start < count {
            // A batch's messages of one conversation come together: one lock and one lookup
            // for the run of them.
            let conversation = messages[start].conversation_id();
            let end = (start + 1..count)
                .find(|&i| messages[i].conversation_id() != conversation)
                .unwrap_or(count);
            let run = messages[start..end].iter().zip(&answers[start..end]);
            start = end;
            let mut shard = self.lock(Self::shard_of(conversation));
            shard.version += 1;
            // Most writes go to conversations nobody reads: an empty shard needs no hashing.
            if shard.index.is_empty() {
                continue;
            }
            let Some(&slot) = shard.index.get(conversation) else {
                continue;
            };
            let Some(entry) = shard.slots[slot].as_mut() else {
                continue;
            };
            let before = entry.tail.bytes;
            for (message, id) in run.map(|(m, a)| (m, a.msg_id)) {
                // A read that filled the entry after this write may have seen it already.
                if id <= entry.tail.last_id() {
                    continue;
                }
                let mut json = Vec::with_capacity(message.approximate_json_len());
                message.write_json(id, &mut json);
                entry
                    .tail
                    .push(id, json.into_boxed_slice(), self.per_conversation);
            }
            let after = entry.tail.bytes;
            shard.bytes = shard.bytes + after - before;
            self.evict(&mut shard);
        }
    }

    /// After a write that changed or removed messages of `conversation` (or failed): its entry
    /// goes, and reads under way fill nothing.
    pub(crate) fn forget(&self, conversation: &str) {
        let mut shard = self.lock(Self::shard_of(conversation));
        shard.version += 1;
        if let Some(slot) = shard.index.remove(conversation) {
            remove_slot(&mut shard, slot);
        }
    }

    /// Counts a query that no entry could answer and that was read from RocksDB instead. Not
    /// [`Recent::answer`]'s to count: a query the handle first asks on the request's task
    /// (and is refused) is asked again on a reader thread, where it may be answered after all.
    pub(crate) fn missed(&self) {
        if self.enabled() {
            self.misses.fetch_add(1, Ordering::Relaxed);
        }
    }

    /// The figures since the cache was made, and what it holds now.
    pub(crate) fn stats(&self) -> CacheStats {
        let mut stats = CacheStats {
            misses: self.misses.load(Ordering::Relaxed),
            capacity_bytes: (self.shard_budget * SHARDS) as u64,
            ..CacheStats::default()
        };
        for i in 0..SHARDS {
            let shard = self.lock(i);
            stats.hits += shard.hits;
            stats.evictions += shard.evictions;
            stats.entries += shard.index.len() as u64;
            stats.bytes += shard.bytes as u64;
        }
        stats
    }

    /// Evicts entries not read lately until the shard is within its budget.
    fn evict(&self, shard: &mut Shard) {
        while shard.bytes > self.shard_budget && !shard.index.is_empty() {
            let at = shard.hand % shard.slots.len();
            shard.hand = at + 1;
            let Some(entry) = shard.slots[at].as_mut() else {
                continue;
            };
            if std::mem::take(&mut entry.referenced) {
                continue;
            }
            if let Some(slot) = shard.slots[at].as_ref() {
                let key = slot.conversation.clone();
                shard.index.remove(&key);
            }
            remove_slot(shard, at);
            shard.evictions += 1;
        }
    }

    /// Messages and bytes held, for tests.
    #[cfg(test)]
    fn held(&self) -> (usize, usize) {
        (0..SHARDS).fold((0, 0), |(count, bytes), i| {
            let shard = self.lock(i);
            let count = count
                + shard
                    .slots
                    .iter()
                    .flatten()
                    .map(|s| s.tail.messages.len())
                    .sum::<usize>();
            (count, bytes + shard.bytes)
        })
    }
}

/// Empties slot `at` (already out of the index) and returns its bytes to the shard.
fn remove_slot(shard: &mut Shard, at: usize) {
    if let Some(slot) = shard.slots[at].take() {
        shard.bytes -= slot.tail.bytes + ENTRY_OVERHEAD + 2 * slot.conversation.len();
        shard.free.push(at);
    }
}

/// The page `tail` answers, as RocksDB would, or `None` when it might miss a message older
/// than its first.
fn page_from(
    tail: &Tail,
    since: Option<MessageId>,
    before: Option<MessageId>,
    limit: usize,
    order: Order,
) -> Option<Page> {
    let messages = &tail.messages;
    // Indexes [start, end) of the messages with ids in (since, before).
    let start = since.map_or(0, |since| messages.partition_point(|(id, _)| *id <= since));
    let end = before.map_or(messages.len(), |before| {
        messages.partition_point(|(id, _)| *id < before)
    });
    let end = end.max(start);
    // Whether no stored message below the first lies in the range: none is stored, or every
    // id below the first is at most `since`.
    let nothing_below = tail.complete
        || since.is_some_and(|since| since.as_u64().saturating_add(1) >= tail.first_id().as_u64());
    let in_range = end - start;
    let stored = |range: std::ops::Range<usize>| {
        range.map(|i| {
            let (id, json) = &messages[i];
            StoredMessage {
                msg_id: *id,
                json: json.to_vec(),
            }
        })
    };
    match order {
        Order::Desc => {
            if in_range > limit {
                Some(Page {
                    messages: stored(end - limit..end).rev().collect(),
                    has_more: true,
                })
            } else if nothing_below {
                Some(Page {
                    messages: stored(start..end).rev().collect(),
                    has_more: false,
                })
            } else {
                None
            }
        }
        Order::Asc => nothing_below.then(|| Page {
            messages: stored(start..start + in_range.min(limit)).collect(),
            has_more: in_range > limit,
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn stored(id: u64) -> StoredMessage {
        StoredMessage {
            msg_id: MessageId::from_u64(id),
            json: format!("{{\"msg_id\":\"{id}\"}}").into_bytes(),
        }
    }

    fn ids(page: &Page) -> Vec<u64> {
        page.messages.iter().map(|m| m.msg_id.as_u64()).collect()
    }

    fn id(n: u64) -> Option<MessageId> {
        Some(MessageId::from_u64(n))
    }

    /// The entry [20, 30, 40, 50], not complete: pages inside it are answered, pages that may
    /// reach below 20 are not.
    #[test]
    fn answers_only_what_the_suffix_decides() {
        let recent = Recent::new(1 << 20, 100);
        let ticket = recent.answer("c", None, None, 2, Order::Desc).unwrap_err();
        let fill: Vec<_> = [20, 30, 40, 50].into_iter().map(stored).collect();
        recent.fill(ticket, "c", &fill, false, false);

        let page = recent.answer("c", None, None, 2, Order::Desc).unwrap();
        assert_eq!((ids(&page), page.has_more), (vec![50, 40], true));
        let page = recent.answer("c", None, None, 3, Order::Desc).unwrap();
        assert_eq!((ids(&page), page.has_more), (vec![50, 40, 30], true));
        // Four fit, but a fifth may be older than 20.
        assert!(recent.answer("c", None, None, 4, Order::Desc).is_err());
        // Since 19: nothing below 20 can be in the range.
        let page = recent.answer("c", id(19), None, 10, Order::Desc).unwrap();
        assert_eq!((ids(&page), page.has_more), (vec![50, 40, 30, 20], false));
        assert!(recent.answer("c", id(18), None, 10, Order::Desc).is_err());
        // Oldest first needs the start of the range.
        let page = recent.answer("c", id(30), None, 1, Order::Asc).unwrap();
        assert_eq!((ids(&page), page.has_more), (vec![40], true));
        let page = recent.answer("c", id(30), None, 5, Order::Asc).unwrap();
        assert_eq!((ids(&page), page.has_more), (vec![40, 50], false));
        assert!(recent.answer("c", None, None, 1, Order::Asc).is_err());
        // Before: the newest below it.
        let page = recent.answer("c", None, id(50), 2, Order::Desc).unwrap();
        assert_eq!((ids(&page), page.has_more), (vec![40, 30], true));
        assert!(recent.answer("c", None, id(30), 2, Order::Desc).is_err());
        let page = recent.answer("c", id(30), id(40), 5, Order::Asc).unwrap();
        assert_eq!((ids(&page), page.has_more), (vec![], false));
        // Another conversation is not there.
        assert!(recent.answer("d", id(30), None, 5, Order::Asc).is_err());
    }

    #[test]
    fn a_complete_entry_answers_everything() {
        let recent = Recent::new(1 << 20, 100);
        let ticket = recent.answer("c", None, None, 2, Order::Desc).unwrap_err();
        recent.fill(ticket, "c", &[stored(20), stored(30)], false, true);
        let page = recent.answer("c", None, None, 10, Order::Asc).unwrap();
        assert_eq!((ids(&page), page.has_more), (vec![20, 30], false));
        let page = recent.answer("c", None, id(20), 10, Order::Desc).unwrap();
        assert_eq!((ids(&page), page.has_more), (vec![], false));
    }

    #[test]
    fn a_write_since_the_ticket_stops_the_fill() {
        let recent = Recent::new(1 << 20, 100);
        let ticket = recent.answer("c", None, None, 2, Order::Desc).unwrap_err();
        recent.forget("c");
        recent.fill(ticket, "c", &[stored(20)], false, true);
        assert!(recent.answer("c", None, None, 2, Order::Desc).is_err());

        let ticket = recent.answer("c", None, None, 2, Order::Desc).unwrap_err();
        recent.fill(ticket, "c", &[stored(20)], false, true);
        assert!(recent.answer("c", None, None, 2, Order::Desc).is_ok());
        recent.forget("c");
        assert!(recent.answer("c", None, None, 2, Order::Desc).is_err());
        assert_eq!(recent.held(), (0, 0));
    }

    #[test]
    fn entries_keep_their_newest_and_the_budget_holds() {
        let recent = Recent::new(1 << 20, 3);
        let ticket = recent.answer("c", None, None, 2, Order::Desc).unwrap_err();
        let fill: Vec<_> = (1..=5).map(|n| stored(n * 10)).collect();
        recent.fill(ticket, "c", &fill, false, true);
        // Only the newest three are kept, so the entry is no longer complete.
        assert!(recent.answer("c", None, None, 10, Order::Asc).is_err());
        let page = recent.answer("c", id(29), None, 10, Order::Asc).unwrap();
        assert_eq!(ids(&page), vec![30, 40, 50]);

        // Each shard holds 1 KiB: filling 200 conversations evicts most of them.
        let small = Recent::new(16 * 1024, 10);
        for n in 0..200 {
            let name = format!("conversation-{n}");
            let ticket = small.answer(&name, None, None, 2, Order::Desc).unwrap_err();
            small.fill(ticket, &name, &[stored(1), stored(2)], false, true);
        }
        let (count, bytes) = small.held();
        assert!(
            count > 0 && bytes <= 16 * 1024,
            "{count} messages, {bytes} bytes"
        );
        let found = (0..200)
            .filter(|n| {
                let name = format!("conversation-{n}");
                small.answer(&name, None, None, 2, Order::Desc).is_ok()
            })
            .count();
        assert!(
            found < 200 && found * 2 == count,
            "{found} entries, {count} messages"
        );
    }

    #[test]
    fn the_figures_count_hits_misses_evictions_and_what_is_held() {
        let recent = Recent::new(16 * 1024, 10);
        assert_eq!(
            recent.stats(),
            CacheStats {
                capacity_bytes: 16 * 1024,
                ..CacheStats::default()
            }
        );
        // Refused answers are not misses: the store counts a miss when it reads RocksDB.
        let ticket = recent.answer("c", None, None, 2, Order::Desc).unwrap_err();
        recent.missed();
        recent.fill(ticket, "c", &[stored(1), stored(2)], false, true);
        recent.answer("c", None, None, 2, Order::Desc).unwrap();
        recent.answer("c", None, None, 1, Order::Asc).unwrap();
        let stats = recent.stats();
        assert_eq!((stats.hits, stats.misses, stats.evictions), (2, 1, 0));
        assert_eq!(stats.entries, 1);
        assert_eq!(stats.bytes as usize, recent.held().1);

        // Dropped for a write: gone, but not an eviction.
        recent.forget("c");
        let stats = recent.stats();
        assert_eq!((stats.entries, stats.bytes, stats.evictions), (0, 0, 0));

        // 200 conversations in 1 KiB a shard: most are evicted, and each eviction counts.
        for n in 0..200 {
            let name = format!("conversation-{n}");
            let ticket = recent
                .answer(&name, None, None, 2, Order::Desc)
                .unwrap_err();
            recent.fill(ticket, &name, &[stored(1), stored(2)], false, true);
        }
        let stats = recent.stats();
        assert!(stats.bytes <= 16 * 1024 && stats.entries > 0, "{stats:?}");
        assert_eq!(stats.entries + stats.evictions, 200, "{stats:?}");
        assert_eq!(stats.hits, 2);
    }

    #[test]
    fn a_zero_budget_keeps_nothing() {
        let recent = Recent::new(0, 100);
        let ticket = recent.answer("c", None, None, 2, Order::Desc).unwrap_err();
        recent.fill(ticket, "c", &[stored(20)], false, true);
        assert!(recent.answer("c", None, None, 2, Order::Desc).is_err());
        assert_eq!(recent.held(), (0, 0));
        recent.missed();
        assert_eq!(recent.stats(), CacheStats::default());
    }
}

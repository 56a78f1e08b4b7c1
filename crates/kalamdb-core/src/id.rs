//! Snowflake message ids and the generator that issues them.
//!
//! A [`MessageId`] is a 64-bit integer laid out, most significant bit first, as
//!
//! ```text
//! 0 | 41 bits: milliseconds since 2024-01-01T00:00:00Z | 10 bits: node id | 12 bits: sequence
//! ```
//!
//! so that ids sort by creation time and a node can mint 4096 per millisecond without coordination.
//! The [`IdGenerator`] hands them out strictly increasing: across threads, across restarts (it is
//! seeded with the highest id already stored) and when the wall clock steps back (it keeps issuing
//! from the last timestamp it used instead of going back in time).

use std::fmt;
use std::str::FromStr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{SystemTime, UNIX_EPOCH};

use serde::de::{self, Visitor};
use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// The Snowflake epoch, 2024-01-01T00:00:00Z, in milliseconds since the Unix epoch.
pub const EPOCH_MS: u64 = 1_704_067_200_000;

const TIMESTAMP_BITS: u32 = 41;
const NODE_BITS: u32 = 10;
const SEQUENCE_BITS: u32 = 12;

/// The largest node id (`server.node_id`) a Snowflake can carry: 1023.
pub const MAX_NODE_ID: u16 = (1 << NODE_BITS) - 1;
const MAX_SEQUENCE: u64 = (1 << SEQUENCE_BITS) - 1;
const MAX_TIMESTAMP: u64 = (1 << TIMESTAMP_BITS) - 1;

/// A message's Snowflake id: unique, and ordered by the time the server accepted the message.
///
/// It serializes as a decimal string, because JavaScript clients lose integers above 2^53, and
/// deserializes from either a decimal string or a JSON number.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct MessageId(u64);

impl MessageId {
    /// The smallest possible id; no message is ever given it.
    pub const MIN: MessageId = MessageId(0);

    /// Wraps a raw 64-bit value, for example one decoded from a storage key.
    pub const fn from_u64(raw: u64) -> Self {
        MessageId(raw)
    }

    /// Assembles an id from its parts.
    ///
    /// Returns `None` when a part does not fit its bit field.
    pub fn from_parts(timestamp_ms: u64, node_id: u16, sequence: u16) -> Option<Self> {
        let since_epoch = timestamp_ms.checked_sub(EPOCH_MS)?;
        if since_epoch > MAX_TIMESTAMP
            || node_id > MAX_NODE_ID
            || u64::from(sequence) > MAX_SEQUENCE
        {
            return None;
        }
        Some(Self::pack(since_epoch, node_id, u64::from(sequence)))
    }

    fn pack(since_epoch: u64, node_id: u16, sequence: u64) -> Self {
        MessageId(
            (since_epoch << (NODE_BITS + SEQUENCE_BITS))
                | (u64::from(node_id) << SEQUENCE_BITS)
                | sequence,
        )
    }

    /// The raw 64-bit value.
    pub const fn as_u64(self) -> u64 {
        self.0
    }

    /// Milliseconds since the Unix epoch (UTC) at which the id was issued.
    pub fn timestamp_ms(self) -> u64 {
        self.since_epoch_ms() + EPOCH_MS
    }

    fn since_epoch_ms(self) -> u64 {
        self.0 >> (NODE_BITS + SEQUENCE_BITS)
    }

    /// The id of the node that issued it.
    pub fn node_id(self) -> u16 {
        // The mask keeps 10 bits, so the value always fits.
        ((self.0 >> SEQUENCE_BITS) & u64::from(MAX_NODE_ID)) as u16
    }

    /// The position of this id among those its node issued in the same millisecond.
    pub fn sequence(self) -> u16 {
        (self.0 & MAX_SEQUENCE) as u16
    }
}

impl fmt::Display for MessageId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(&self.0, f)
    }
}

/// Why a string is not a message id.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("must be a non-negative integer below 2^64, written in decimal")]
pub struct ParseMessageIdError;

impl FromStr for MessageId {
    type Err = ParseMessageIdError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        // `u64::from_str` accepts a leading `+`; an id is digits only.
        if s.is_empty() || !s.bytes().all(|b| b.is_ascii_digit()) {
            return Err(ParseMessageIdError);
        }
        s.parse().map(MessageId).map_err(|_| ParseMessageIdError)
    }
}

impl Serialize for MessageId {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        // Through `collect_str`, each digit went through the serializer's escaping writer.
        serializer.serialize_str(itoa::Buffer::new().format(self.0))
    }
}

impl<'de> Deserialize<'de> for MessageId {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct IdVisitor;

        impl Visitor<'_> for IdVisitor {
            type Value = MessageId;

            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a message id as a decimal string or a non-negative integer")
            }

            fn visit_u64<E: de::Error>(self, v: u64) -> Result<MessageId, E> {
                Ok(MessageId(v))
            }

            fn visit_i64<E: de::Error>(self, v: i64) -> Result<MessageId, E> {
                u64::try_from(v)
                    .map(MessageId)
                    .map_err(|_| E::invalid_value(de::Unexpected::Signed(v), &self))
            }

            fn visit_f64<E: de::Error>(self, v: f64) -> Result<MessageId, E> {
                // `5.0`: JSON Schema's integer admits it. Larger ids must be strings anyway,
                // since JSON numbers past 2^53 lose digits in most clients.
                crate::strict_json::exact_whole(v)
                    .map(MessageId)
                    .ok_or_else(|| E::invalid_value(de::Unexpected::Float(v), &self))
            }

            fn visit_str<E: de::Error>(self, v: &str) -> Result<MessageId, E> {
                v.parse()
                    .map_err(|_| E::invalid_value(de::Unexpected::Str(v), &self))
            }
        }

        deserializer.deserialize_any(IdVisitor)
    }
}

/// A source of wall-clock time in milliseconds since the Unix epoch.
///
/// The generator reads time through this trait so tests can step the clock back or freeze it.
pub trait Clock: Send + Sync {
    /// The current time in milliseconds since the Unix epoch.
    fn now_ms(&self) -> u64;
}

/// The system's wall clock.
#[derive(Debug, Default, Clone, Copy)]
pub struct SystemClock;

impl Clock for SystemClock {
    fn now_ms(&self) -> u64 {
        SystemTime::now()
            .duration_since(UNIX_EPOCH)
            // A clock before 1970 is a broken machine; the generator then issues from its last id.
            .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
    }
}

/// Why an id could not be issued.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum IdError {
    /// The node id does not fit the 10-bit field.
    #[error("node id {0} is out of range 0-{MAX_NODE_ID}")]
    InvalidNodeId(u16),
    /// The 41-bit timestamp field is exhausted (around the year 2093).
    #[error("the Snowflake timestamp space is exhausted")]
    Exhausted,
}

/// Issues strictly increasing [`MessageId`]s for one node.
///
/// Lock-free: the last issued id lives in an atomic and each call advances it with a
/// compare-and-swap, so any number of threads may share one generator.
pub struct IdGenerator<C = SystemClock> {
    node_id: u16,
    clock: C,
    last: AtomicU64,
}

impl<C> fmt::Debug for IdGenerator<C> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("IdGenerator")
            .field("node_id", &self.node_id)
            .field("last", &MessageId(self.last.load(Ordering::Relaxed)))
            .finish()
    }
}

impl IdGenerator<SystemClock> {
    /// A generator for `node_id` on the system clock, issuing ids above `seed`.
    pub fn new(node_id: u16, seed: MessageId) -> Result<Self, IdError> {
        Self::with_clock(node_id, seed, SystemClock)
    }
}

impl<C: Clock> IdGenerator<C> {
    /// A generator for `node_id` reading time from `clock`, issuing ids strictly above `seed`
    /// (the highest id already stored, or [`MessageId::MIN`]).
    pub fn with_clock(node_id: u16, seed: MessageId, clock: C) -> Result<Self, IdError> {
        if node_id > MAX_NODE_ID {
            return Err(IdError::InvalidNodeId(node_id));
        }
        Ok(Self {
            node_id,
            clock,
            last: AtomicU64::new(seed.0),
        })
    }

    /// The node id this generator stamps into its ids.
    pub fn node_id(&self) -> u16 {
        self.node_id
    }

    /// The most recently issued id (or the seed, before the first).
    pub fn last(&self) -> MessageId {
        MessageId(self.last.load(Ordering::Acquire))
    }

    /// Raises the generator to `seen` when it is behind it, so every later id is above
    /// `seen`: how a store that mints under its own lock mints above the highest id a
    /// conversation holds, whichever server minted that one (`../shared/DESIGN.md` §7).
    pub fn observe(&self, seen: MessageId) {
        self.last.fetch_max(seen.0, Ordering::AcqRel);
    }

    /// Issues the next id: greater than every id issued or seeded before.
    pub fn next_id(&self) -> Result<MessageId, IdError> {
        let now = self.clock.now_ms().saturating_sub(EPOCH_MS);
        let mut last = self.last.load(Ordering::Acquire);
        loop {
            let next = next_after(MessageId(last), now, self.node_id)?;
            match self
                .last
                .compare_exchange_weak(last, next.0, Ordering::AcqRel, Ordering::Acquire)
            {
                Ok(_) => return Ok(next),
                Err(actual) => last = actual,
            }
        }
    }
}

/// The smallest id for `node_id` that is above `last` and not earlier than `now` (milliseconds
/// since the Snowflake epoch).
fn next_after(last: MessageId, now: u64, node_id: u16) -> Result<MessageId, IdError> {
    // Never go back in time: a clock that stepped back keeps issuing from the last timestamp.
    let ts = now.max(last.since_epoch_ms());
    if ts > MAX_TIMESTAMP {
        return Err(IdError::Exhausted);
    }
    let candidate = MessageId::pack(ts, node_id, 0);
    if candidate > last {
        return Ok(candidate);
    }
    // Same millisecond as `last`, and `last` carries our node id or a higher one (a store written
    // by another node): take the next sequence number, or borrow the next millisecond when the
    // sequence is spent rather than waiting for the clock.
    if last.node_id() == node_id && u64::from(last.sequence()) < MAX_SEQUENCE {
        return Ok(MessageId(last.0 + 1));
    }
    if ts + 1 > MAX_TIMESTAMP {
        return Err(IdError::Exhausted);
    }
    Ok(MessageId::pack(ts + 1, node_id, 0))
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use std::collections::HashSet;
    use std::sync::atomic::AtomicU64;
    use std::sync::Arc;

    /// A clock the test moves by hand.
    #[derive(Clone, Default)]
    struct ManualClock(Arc<AtomicU64>);

    impl ManualClock {
        fn at(ms: u64) -> Self {
            ManualClock(Arc::new(AtomicU64::new(ms)))
        }
        fn set(&self, ms: u64) {
            self.0.store(ms, Ordering::SeqCst);
        }
    }

    impl Clock for ManualClock {
        fn now_ms(&self) -> u64 {
            self.0.load(Ordering::SeqCst)
        }
    }

    const T0: u64 = EPOCH_MS + 1_000_000;

    #[test]
    fn parts_round_trip() {
        let id = MessageId::from_parts(T0, 517, 99).unwrap();
        assert_eq!(id.timestamp_ms(), T0);
        assert_eq!(id.node_id(), 517);
        assert_eq!(id.sequence(), 99);
        assert!(MessageId::from_parts(T0, 1024, 0).is_none());
        assert!(MessageId::from_parts(T0, 0, 4096).is_none());
        assert!(MessageId::from_parts(EPOCH_MS - 1, 0, 0).is_none());
    }

    #[test]
    fn the_id_encodes_the_clock_time() {
        let clock = ManualClock::at(T0);
        let gen = IdGenerator::with_clock(7, MessageId::MIN, clock).unwrap();
        let id = gen.next_id().unwrap();
        assert_eq!(id.timestamp_ms(), T0);
        assert_eq!(id.node_id(), 7);
        assert_eq!(id.sequence(), 0);
    }

    #[test]
    fn an_observed_id_from_a_server_ahead_is_minted_above_and_a_lower_one_changes_nothing() {
        let clock = ManualClock::at(T0);
        let gen = IdGenerator::with_clock(3, MessageId::MIN, clock).unwrap();
        let own = gen.next_id().unwrap();
        // Another server (node 9), its clock 5 ms ahead, wrote the conversation's last id.
        let theirs = MessageId::from_parts(T0 + 5, 9, 0).unwrap();
        gen.observe(theirs);
        let next = gen.next_id().unwrap();
        assert!(next > theirs && next.node_id() == 3, "{next:?}");
        assert_eq!(
            next.timestamp_ms(),
            T0 + 6,
            "a higher node's id borrows the next ms"
        );
        gen.observe(own);
        assert!(gen.next_id().unwrap() > next);
    }

    #[test]
    fn rejects_node_ids_over_ten_bits() {
        assert_eq!(
            IdGenerator::new(1024, MessageId::MIN).unwrap_err(),
            IdError::InvalidNodeId(1024)
        );
        assert!(IdGenerator::new(1023, MessageId::MIN).is_ok());
    }

    #[test]
    fn keeps_increasing_when_the_clock_steps_back() {
        let clock = ManualClock::at(T0);
        let gen = IdGenerator::with_clock(1, MessageId::MIN, clock.clone()).unwrap();
        let before = gen.next_id().unwrap();
        clock.set(T0 - 60_000);
        let after: Vec<_> = (0..10).map(|_| gen.next_id().unwrap()).collect();
        assert!(after[0] > before);
        assert!(after.windows(2).all(|w| w[0] < w[1]));
        // It issues from the last timestamp instead of the clock's earlier one.
        assert_eq!(after[0].timestamp_ms(), T0);
    }

    #[test]
    fn a_spent_sequence_borrows_the_next_millisecond() {
        let clock = ManualClock::at(T0);
        let gen = IdGenerator::with_clock(3, MessageId::MIN, clock).unwrap();
        let ids: Vec<_> = (0..5000).map(|_| gen.next_id().unwrap()).collect();
        assert!(ids.windows(2).all(|w| w[0] < w[1]));
        assert_eq!(ids[4095].timestamp_ms(), T0);
        assert_eq!(ids[4096].timestamp_ms(), T0 + 1);
        assert_eq!(ids[4096].sequence(), 0);
        assert!(ids.iter().all(|id| id.node_id() == 3));
    }

    #[test]
    fn a_restart_continues_above_the_seed() {
        // The highest stored id is in the future of the restarted node's clock.
        let clock = ManualClock::at(T0);
        let seed = MessageId::from_parts(T0 + 5_000, 3, 17).unwrap();
        let gen = IdGenerator::with_clock(3, seed, clock).unwrap();
        let id = gen.next_id().unwrap();
        assert_eq!(id, MessageId::from_parts(T0 + 5_000, 3, 18).unwrap());
    }

    #[test]
    fn a_seed_from_a_higher_node_is_still_exceeded() {
        let clock = ManualClock::at(T0);
        let seed = MessageId::from_parts(T0, 900, 4095).unwrap();
        let gen = IdGenerator::with_clock(2, seed, clock).unwrap();
        let id = gen.next_id().unwrap();
        assert!(id > seed);
        assert_eq!(id.node_id(), 2);
    }

    #[test]
    fn unique_and_increasing_across_threads() {
        let gen = Arc::new(IdGenerator::new(11, MessageId::MIN).unwrap());
        let per_thread: Vec<Vec<MessageId>> = std::thread::scope(|s| {
            let handles: Vec<_> = (0..8)
                .map(|_| {
                    let gen = &gen;
                    s.spawn(move || (0..20_000).map(|_| gen.next_id().unwrap()).collect())
                })
                .collect();
            handles.into_iter().map(|h| h.join().unwrap()).collect()
        });
        let mut all = HashSet::new();
        for ids in &per_thread {
            // Each thread sees its own ids strictly increase...
            assert!(ids.windows(2).all(|w| w[0] < w[1]));
            // ...and no id is issued twice across threads.
            for id in ids {
                assert!(all.insert(*id), "duplicate id {id}");
            }
        }
        assert_eq!(all.len(), 8 * 20_000);
    }

    #[test]
    fn exhausted_timestamp_space_is_an_error() {
        let clock = ManualClock::at(EPOCH_MS + MAX_TIMESTAMP);
        let seed = MessageId::pack(MAX_TIMESTAMP, 0, MAX_SEQUENCE);
        let gen = IdGenerator::with_clock(0, seed, clock).unwrap();
        assert_eq!(gen.next_id().unwrap_err(), IdError::Exhausted);
    }

    #[test]
    fn parses_digits_only() {
        assert_eq!("42".parse::<MessageId>().unwrap().as_u64(), 42);
        for bad in ["", "+1", "-1", "1.5", "0x10", " 1", "18446744073709551616"] {
            assert!(bad.parse::<MessageId>().is_err(), "{bad:?} parsed");
        }
    }

    #[test]
    fn serializes_as_a_string_and_reads_string_or_number() {
        let id = MessageId(7_262_413_471_822_004_224);
        assert_eq!(
            serde_json::to_string(&id).unwrap(),
            "\"7262413471822004224\""
        );
        let from_str: MessageId = serde_json::from_str("\"7262413471822004224\"").unwrap();
        let from_num: MessageId = serde_json::from_str("7262413471822004224").unwrap();
        assert_eq!(from_str, id);
        assert_eq!(from_num, id);
        assert!(serde_json::from_str::<MessageId>("-5").is_err());
        assert!(serde_json::from_str::<MessageId>("1.5").is_err());
        assert!(serde_json::from_str::<MessageId>("\"abc\"").is_err());
        // A whole number written with a fraction or an exponent, while it is surely exact.
        let whole: MessageId = serde_json::from_str("4096.0").unwrap();
        assert_eq!(whole.as_u64(), 4096);
        let whole: MessageId = serde_json::from_str("9007199254740992.0").unwrap();
        assert_eq!(whole.as_u64(), 1 << 53);
        assert_eq!(
            serde_json::from_str::<MessageId>("1e3").unwrap().as_u64(),
            1000
        );
        for inexact in [
            "9007199254740993.0",
            "7262413471822004224.0",
            "1e300",
            "-0.5",
        ] {
            assert!(
                serde_json::from_str::<MessageId>(inexact).is_err(),
                "{inexact}"
            );
        }
    }

    /// One step a test clock can take.
    #[derive(Debug, Clone)]
    enum Step {
        Advance(u64),
        Rewind(u64),
        Issue(u16),
    }

    fn step() -> impl Strategy<Value = Step> {
        prop_oneof![
            (0u64..5).prop_map(Step::Advance),
            (0u64..10_000).prop_map(Step::Rewind),
            (1u16..6000).prop_map(Step::Issue),
        ]
    }

    proptest! {
        /// Whatever the clock does, every issued id is above every earlier one and above the seed,
        /// and carries the generator's node id.
        #[test]
        fn ids_are_strictly_monotonic(
            node in 0u16..=MAX_NODE_ID,
            seed_offset in 0u64..100_000,
            seed_node in 0u16..=MAX_NODE_ID,
            seed_seq in 0u16..4096,
            steps in proptest::collection::vec(step(), 1..40),
        ) {
            let clock = ManualClock::at(T0);
            let seed = MessageId::from_parts(T0 - 50_000 + seed_offset, seed_node, seed_seq).unwrap();
            let gen = IdGenerator::with_clock(node, seed, clock.clone()).unwrap();
            let mut last = seed;
            let mut now = T0;
            for step in steps {
                match step {
                    Step::Advance(ms) => now += ms,
                    Step::Rewind(ms) => now -= ms.min(now - EPOCH_MS),
                    Step::Issue(n) => {
                        for _ in 0..n {
                            let id = gen.next_id().unwrap();
                            prop_assert!(id > last, "{id:?} after {last:?}");
                            prop_assert_eq!(id.node_id(), node);
                            prop_assert!(id.timestamp_ms() >= now.min(last.timestamp_ms()));
                            last = id;
                        }
                    }
                }
                clock.set(now);
            }
        }
    }
}

//! How messages are laid out in RocksDB: every key and value encoding lives here.
//!
//! | column family | key | value |
//! | --- | --- | --- |
//! | `messages` | [`bucket`] (2 bytes) ‖ `conversation_id` bytes ‖ `0x02` ‖ NOT msg_id (u64 big-endian) | [`VALUE_VERSION`] ‖ the message's canonical JSON |
//! | `message_index` | msg_id (u64 big-endian) | [`VALUE_VERSION`] ‖ `conversation_id` bytes |
//! | `idempotency` | the idempotency key | see [`encode_idempotency`] |
//! | `meta` | a name such as `format_version` | format-specific |
//!
//! A conversation id never contains a control character (they are refused at validation), so
//! the `0x02` ends it unambiguously: all of one conversation's keys are contiguous and lie in the
//! half-open range `bucket ‖ conversation_id ‖ 0x02 .. bucket ‖ conversation_id ‖ 0x03`. No other
//! conversation's key falls in that range, even one whose id extends this one (`a` and `ab`).
//!
//! Within a conversation, keys run from the newest message to the oldest: the id is stored
//! bit-inverted. "The latest page", what a chat client asks for first and most, is then a forward
//! scan. RocksDB's memtable is a skip list without back links, so each step backwards is a new
//! search from the top: a page of 50 from the memtable takes about 290k instructions backwards
//! against 85k forwards (`docs/BENCHMARKS.md`).
//!
//! The two leading bytes, the conversation's [`bucket`], exist for RocksDB's memtable insert
//! hint, which needs a fixed-length prefix ([`MEMTABLE_HINT_PREFIX_LEN`]). With it, a message is
//! inserted from where its bucket's previous message went instead of by a search from the top of
//! a skip list that conversations interleave in. Conversations are ordered by bucket first, which
//! nothing reads in order.
//!
//! Older formats are read only to rewrite them when an old store is opened: format version 1
//! stored the id as is, after a `0x00`, and format version 2 had no bucket and a `0x01`
//! ([`decode_old_message_key`]). The separators differ so a rewrite cut short by a crash is told
//! apart from a finished one key by key.
//!
//! Every value starts with a version byte so the encoding can change without breaking old data.

use kalamdb_core::{MessageId, PreparedMessage};

/// Column family holding the messages, keyed by conversation then id.
pub const CF_MESSAGES: &str = "messages";
/// Column family mapping each id to its conversation, for lookups by id.
pub const CF_MESSAGE_INDEX: &str = "message_index";
/// Column family reserved for idempotency keys.
pub const CF_IDEMPOTENCY: &str = "idempotency";
/// Column family holding the store's own facts (format version, node id).
pub const CF_META: &str = "meta";
/// Every column family, in the order they are opened.
pub const COLUMN_FAMILIES: [&str; 4] = [CF_MESSAGES, CF_MESSAGE_INDEX, CF_IDEMPOTENCY, CF_META];

/// The version byte that starts every value this build writes.
pub const VALUE_VERSION: u8 = 1;
/// The on-disk format this build reads and writes, recorded in `meta`.
pub const FORMAT_VERSION: u32 = 3;
/// The older formats this build upgrades on open: `messages` keys in ascending id order (1), and
/// newest first without a bucket (2).
pub const OLD_FORMAT_VERSIONS: [u32; 2] = [1, 2];
/// `meta` key of the format version (u32 big-endian).
pub const META_FORMAT_VERSION: &[u8] = b"format_version";
/// `meta` key of the node id that last opened the store (u16 big-endian).
pub const META_NODE_ID: &[u8] = b"node_id";
/// `meta` key the health probe writes.
pub const META_HEALTH_PROBE: &[u8] = b"health_probe";

const SEPARATOR: u8 = 0x02;
const SEPARATOR_V2: u8 = 0x01;
const SEPARATOR_V1: u8 = 0x00;

/// How many buckets conversations are spread over. RocksDB keeps one insert hint, a few hundred
/// bytes of memtable, per bucket it has seen, so this bounds them to about 1 MiB a memtable,
/// while 64 busy conversations still rarely share a bucket.
const BUCKETS: u64 = 4096;

/// The length of the key prefix RocksDB's memtable insert hint is keyed by: the bucket.
pub const MEMTABLE_HINT_PREFIX_LEN: usize = 2;

/// The bucket of a conversation: FNV-1a (64-bit) of its id bytes, modulo 4096, as 2 bytes
/// big-endian. Part of the key format, so it must never change.
pub fn bucket(conversation_id: &[u8]) -> [u8; MEMTABLE_HINT_PREFIX_LEN] {
    const OFFSET: u64 = 0xcbf2_9ce4_8422_2325;
    const PRIME: u64 = 0x0000_0100_0000_01b3;
    let hash = conversation_id
        .iter()
        .fold(OFFSET, |hash, &b| (hash ^ u64::from(b)).wrapping_mul(PRIME));
    let bucket = u16::try_from(hash % BUCKETS).expect("below 4096");
    bucket.to_be_bytes()
}

/// The `messages` key of message `id` in `conversation_id`. A larger id gives a smaller key.
pub fn message_key(conversation_id: &str, id: MessageId) -> Vec<u8> {
    let mut key = Vec::new();
    write_message_key(&mut key, conversation_id, id);
    key
}

/// [`message_key`] written into `out` in place of what it held, so that a writer storing many
/// messages reuses one buffer instead of allocating a key for each.
pub fn write_message_key(out: &mut Vec<u8>, conversation_id: &str, id: MessageId) {
    out.clear();
    push_conversation_prefix(out, conversation_id);
    push_id(out, id);
}

/// `bucket ‖ conversation_id ‖ 0x02`, what every key of the conversation starts with, with room
/// for the id.
fn conversation_prefix(conversation_id: &str) -> Vec<u8> {
    let mut prefix = Vec::new();
    push_conversation_prefix(&mut prefix, conversation_id);
    prefix
}

/// How much longer a message key is than its conversation id: the bucket, the separator and the
/// id.
pub const MESSAGE_KEY_OVERHEAD: usize = MEMTABLE_HINT_PREFIX_LEN + 1 + 8;

fn push_conversation_prefix(out: &mut Vec<u8>, conversation_id: &str) {
    out.reserve(MESSAGE_KEY_OVERHEAD + conversation_id.len());
    out.extend_from_slice(&bucket(conversation_id.as_bytes()));
    out.extend_from_slice(conversation_id.as_bytes());
    out.push(SEPARATOR);
}

/// A conversation's `prefix` completed into the key of message `id`.
fn with_id(mut prefix: Vec<u8>, id: MessageId) -> Vec<u8> {
    push_id(&mut prefix, id);
    prefix
}

fn push_id(out: &mut Vec<u8>, id: MessageId) {
    out.extend_from_slice(&(!id.as_u64()).to_be_bytes());
}

/// Splits a `messages` key into its conversation id bytes and message id.
pub fn decode_message_key(key: &[u8]) -> Option<(&[u8], MessageId)> {
    let (prefix, rest) = key.split_at_checked(MEMTABLE_HINT_PREFIX_LEN)?;
    let (conversation, id) = split_message_key(rest, SEPARATOR)?;
    (prefix == bucket(conversation)).then_some((conversation, MessageId::from_u64(!id)))
}

/// The message id of a `messages` key read inside one conversation's range
/// ([`conversation_range`], [`id_range`]), which already fixes the bucket and conversation id:
/// only the separator and the id are checked. `None` when `key` does not end like a message key.
pub fn decode_message_id(key: &[u8]) -> Option<MessageId> {
    let split = key.len().checked_sub(9)?;
    if split <= MEMTABLE_HINT_PREFIX_LEN || key[split] != SEPARATOR {
        return None;
    }
    let id = u64::from_be_bytes(key[split + 1..].try_into().ok()?);
    Some(MessageId::from_u64(!id))
}

/// Splits a `messages` key of an older format: version 2 (`conversation_id ‖ 0x01 ‖ NOT msg_id`)
/// or version 1 (`conversation_id ‖ 0x00 ‖ msg_id`). `None` when `key` is neither, as every
/// current key is.
pub fn decode_old_message_key(key: &[u8]) -> Option<(&[u8], MessageId)> {
    if let Some((conversation, id)) = split_message_key(key, SEPARATOR_V2) {
        return Some((conversation, MessageId::from_u64(!id)));
    }
    let (conversation, id) = split_message_key(key, SEPARATOR_V1)?;
    Some((conversation, MessageId::from_u64(id)))
}

/// Splits `key` before its last 9 bytes, `separator` then 8 id bytes: the conversation id bytes
/// and the id as stored.
fn split_message_key(key: &[u8], separator: u8) -> Option<(&[u8], u64)> {
    let split = key.len().checked_sub(9)?;
    let (conversation, rest) = key.split_at(split);
    // No separator of any format can appear in a conversation id.
    if rest[0] != separator || conversation.iter().any(|&b| b <= SEPARATOR) {
        return None;
    }
    Some((conversation, u64::from_be_bytes(rest[1..].try_into().ok()?)))
}

/// The half-open key range holding exactly the messages of `conversation_id`.
pub fn conversation_range(conversation_id: &str) -> (Vec<u8>, Vec<u8>) {
    let lower = conversation_prefix(conversation_id);
    let upper = past_conversation(lower.clone());
    (lower, upper)
}

/// A conversation's `prefix` turned into the first key past all of its messages.
fn past_conversation(mut prefix: Vec<u8>) -> Vec<u8> {
    *prefix
        .last_mut()
        .expect("the prefix ends with the separator") = SEPARATOR + 1;
    prefix
}

/// The key range of the messages of `conversation_id` with ids in `after..before` (both
/// exclusive, either open), as `[lower, upper)` keys; `None` when no id fits.
pub fn id_range(
    conversation_id: &str,
    after: Option<MessageId>,
    before: Option<MessageId>,
) -> Option<(Vec<u8>, Vec<u8>)> {
    let prefix = conversation_prefix(conversation_id);
    // Ids are inverted: the newest wanted message (just below `before`) has the smallest key,
    // and the key of `after` itself is the first one past the oldest wanted.
    let lower = match before {
        Some(before) => with_id(
            prefix.clone(),
            MessageId::from_u64(before.as_u64().checked_sub(1)?),
        ),
        None => prefix.clone(),
    };
    let upper = match after {
        Some(after) => with_id(prefix, after),
        None => past_conversation(prefix),
    };
    (lower < upper).then_some((lower, upper))
}

/// The `message_index` key of `id`.
pub fn index_key(id: MessageId) -> [u8; 8] {
    id.as_u64().to_be_bytes()
}

/// The id in a `message_index` key.
pub fn decode_index_key(key: &[u8]) -> Option<MessageId> {
    Some(MessageId::from_u64(u64::from_be_bytes(
        key.try_into().ok()?,
    )))
}

/// Prefixes `payload` with the version byte.
pub fn encode_value(payload: &[u8]) -> Vec<u8> {
    let mut value = Vec::new();
    write_value(&mut value, payload);
    value
}

/// [`encode_value`] written into `out` in place of what it held.
pub fn write_value(out: &mut Vec<u8>, payload: &[u8]) {
    out.clear();
    out.reserve(payload.len() + 1);
    out.push(VALUE_VERSION);
    out.extend_from_slice(payload);
}

/// A message's value: the version byte, then its JSON as the message `id`.
pub fn message_value(message: &PreparedMessage, id: MessageId) -> Vec<u8> {
    let mut value = Vec::new();
    write_message_value(&mut value, message, id);
    value
}

/// [`message_value`] written into `out` in place of what it held.
pub fn write_message_value(out: &mut Vec<u8>, message: &PreparedMessage, id: MessageId) {
    out.clear();
    out.reserve(message.approximate_json_len() + 1);
    out.push(VALUE_VERSION);
    message.write_json(id, out);
}

/// The payload of a value this build understands, or `None` for an unknown version.
pub fn decode_value(value: &[u8]) -> Option<&[u8]> {
    match value.split_first() {
        Some((&VALUE_VERSION, payload)) => Some(payload),
        _ => None,
    }
}

/// An idempotency record as stored: the fingerprint (32 bytes), the creation time (milliseconds
/// since the epoch, 8 bytes big-endian), then the answer as JSON. Wrapped by [`encode_value`].
pub fn encode_idempotency(fingerprint: &[u8; 32], created_ms: u64, answer_json: &[u8]) -> Vec<u8> {
    let mut payload = Vec::with_capacity(40 + answer_json.len());
    payload.extend_from_slice(fingerprint);
    payload.extend_from_slice(&created_ms.to_be_bytes());
    payload.extend_from_slice(answer_json);
    encode_value(&payload)
}

/// The parts of a stored idempotency record, or `None` when the bytes are not one.
pub fn decode_idempotency(value: &[u8]) -> Option<([u8; 32], u64, &[u8])> {
    let payload = decode_value(value)?;
    if payload.len() < 40 {
        return None;
    }
    let fingerprint: [u8; 32] = payload[..32].try_into().ok()?;
    let created_ms = u64::from_be_bytes(payload[32..40].try_into().ok()?);
    Some((fingerprint, created_ms, &payload[40..]))
}

/// Only the creation time of a stored idempotency record (for the TTL compaction filter).
pub fn idempotency_created_ms(value: &[u8]) -> Option<u64> {
    decode_idempotency(value).map(|(_, created_ms, _)| created_ms)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use std::cmp::Reverse;

    /// Conversation ids as validation admits them: no control characters, including short ids
    /// that are prefixes of each other.
    fn conversation_id() -> impl Strategy<Value = String> {
        prop_oneof![
            Just("a".to_string()),
            Just("ab".to_string()),
            Just("a b".to_string()),
            Just("a\u{7e}".to_string()),
            "[a-c ]{1,4}",
            "\\PC{1,12}",
        ]
    }

    fn id() -> impl Strategy<Value = MessageId> {
        prop_oneof![
            Just(MessageId::MIN),
            Just(MessageId::from_u64(u64::MAX)),
            any::<u64>().prop_map(MessageId::from_u64),
        ]
    }

    proptest! {
        /// Key order is bucket, conversation bytes, then newest first, for every pair of keys.
        #[test]
        fn key_order_is_bucket_conversation_then_newest_first(
            a in (conversation_id(), id()),
            b in (conversation_id(), id()),
        ) {
            let ka = message_key(&a.0, a.1);
            let kb = message_key(&b.0, b.1);
            let order = |(c, i): &(String, MessageId)| {
                (bucket(c.as_bytes()), c.as_bytes().to_vec(), Reverse(*i))
            };
            prop_assert_eq!(ka.cmp(&kb), order(&a).cmp(&order(&b)));
            prop_assert_eq!(&ka[..MEMTABLE_HINT_PREFIX_LEN], &bucket(a.0.as_bytes())[..]);
        }

        /// The range of `after` and `before` holds exactly the keys of ids strictly between them.
        #[test]
        fn id_range_is_exact(
            c in conversation_id(),
            other in conversation_id(),
            after in proptest::option::of(id()),
            before in proptest::option::of(id()),
            i in id(),
        ) {
            let wanted = after.is_none_or(|a| i > a) && before.is_none_or(|b| i < b);
            match id_range(&c, after, before) {
                Some((lower, upper)) => {
                    let own = message_key(&c, i);
                    prop_assert_eq!(lower <= own && own < upper, wanted);
                    if other != c {
                        let theirs = message_key(&other, i);
                        prop_assert!(!(lower <= theirs && theirs < upper));
                    }
                }
                None => prop_assert!(!wanted),
            }
        }

        /// Keys of formats 1 and 2 decode as old keys and never as current ones, and a current
        /// key never decodes as an old one: an upgrade tells them apart key by key.
        #[test]
        fn old_keys_decode_and_are_never_current_ones(c in conversation_id(), i in id()) {
            let mut v1 = c.as_bytes().to_vec();
            v1.push(0x00);
            v1.extend_from_slice(&i.as_u64().to_be_bytes());
            let mut v2 = c.as_bytes().to_vec();
            v2.push(0x01);
            v2.extend_from_slice(&(!i.as_u64()).to_be_bytes());
            for old in [v1, v2] {
                prop_assert_eq!(decode_old_message_key(&old), Some((c.as_bytes(), i)));
                prop_assert_eq!(decode_message_key(&old), None);
            }
            let current = message_key(&c, i);
            prop_assert_eq!(decode_old_message_key(&current), None);
        }

        /// A conversation's range holds its own keys and no other conversation's.
        #[test]
        fn conversation_range_is_exact(c in conversation_id(), other in conversation_id(), i in id()) {
            let (lower, upper) = conversation_range(&c);
            let own = message_key(&c, i);
            prop_assert!(lower <= own && own < upper);
            if other != c {
                let theirs = message_key(&other, i);
                prop_assert!(!(lower <= theirs && theirs < upper));
            }
        }

        /// The group writer reuses one buffer for every key: each holds its own key alone.
        #[test]
        fn a_reused_key_buffer_holds_only_the_last_key(
            a in (conversation_id(), id()),
            b in (conversation_id(), id()),
        ) {
            let mut key = Vec::new();
            write_message_key(&mut key, &a.0, a.1);
            write_message_key(&mut key, &b.0, b.1);
            prop_assert_eq!(decode_message_key(&key), Some((b.0.as_bytes(), b.1)));
            prop_assert_eq!(key.len(), MESSAGE_KEY_OVERHEAD + b.0.len());
            prop_assert_eq!(key, message_key(&b.0, b.1));
        }

        #[test]
        fn message_keys_round_trip(c in conversation_id(), i in id()) {
            let key = message_key(&c, i);
            prop_assert_eq!(decode_message_key(&key), Some((c.as_bytes(), i)));
            prop_assert_eq!(decode_message_id(&key), Some(i));
        }

        #[test]
        fn index_keys_sort_by_id(a in id(), b in id()) {
            prop_assert_eq!(index_key(a).cmp(&index_key(b)), a.cmp(&b));
            prop_assert_eq!(decode_index_key(&index_key(a)), Some(a));
        }

        /// Arbitrary bytes never panic the decoders.
        #[test]
        fn decoders_accept_any_bytes(bytes in proptest::collection::vec(any::<u8>(), 0..40)) {
            let _ = decode_message_key(&bytes);
            let _ = decode_message_id(&bytes);
            let _ = decode_old_message_key(&bytes);
            let _ = decode_index_key(&bytes);
            let _ = decode_value(&bytes);
        }
    }

    #[test]
    fn malformed_keys_do_not_decode() {
        assert_eq!(decode_message_key(b"short"), None);
        assert_eq!(
            decode_message_key(b"\x0c\x8cabc\x03\0\0\0\0\0\0\0\x01"),
            None
        );
        assert_eq!(decode_old_message_key(b"abc\x02\0\0\0\0\0\0\0\x01"), None);
        // A separator byte inside the conversation part.
        assert_eq!(
            decode_message_key(b"\x0c\x8ca\x01c\x02\0\0\0\0\0\0\0\x01"),
            None
        );
        assert_eq!(
            decode_old_message_key(b"a\x01c\x01\0\0\0\0\0\0\0\x01"),
            None
        );
        assert_eq!(decode_message_id(b"\x0c\x8ca\x01\0\0\0\0\0\0\0\x01"), None);
        // No room for a bucket and a conversation id before the separator.
        assert_eq!(decode_message_id(b"\x0c\x8c\x02\0\0\0\0\0\0\0\x01"), None);
        assert_eq!(decode_index_key(b"1234567"), None);
    }

    /// The bucket is part of the key format: these values must never change, or a store's
    /// messages would no longer be found under their conversation.
    #[test]
    fn buckets_are_fnv_1a_modulo_4096() {
        assert_eq!(bucket(b""), 805u16.to_be_bytes());
        // FNV-1a of "a" is 0xaf63dc4c8601ec8c (the published test vector).
        assert_eq!(bucket(b"a"), 3212u16.to_be_bytes());
        assert_eq!(bucket(b"bench-c0"), 839u16.to_be_bytes());
        assert_eq!(
            bucket("conversation-\u{e9}".as_bytes()),
            589u16.to_be_bytes()
        );
    }

    #[test]
    fn a_key_under_another_bucket_does_not_decode() {
        let mut key = message_key("a", MessageId::from_u64(7));
        assert_eq!(
            decode_message_key(&key),
            Some((&b"a"[..], MessageId::from_u64(7)))
        );
        key[1] ^= 1;
        assert_eq!(decode_message_key(&key), None);
    }

    #[test]
    fn values_carry_a_version_byte() {
        let value = encode_value(b"{}");
        assert_eq!(value, b"\x01{}");
        assert_eq!(decode_value(&value), Some(&b"{}"[..]));
        assert_eq!(decode_value(b"\x02{}"), None);
        assert_eq!(decode_value(b""), None);
    }

    #[test]
    fn a_reused_value_buffer_holds_only_the_last_value() {
        let message = PreparedMessage::new(kalamdb_core::NewMessage {
            conversation_id: "c1".into(),
            from: "a".into(),
            content: "hi".into(),
            metadata: Default::default(),
        })
        .unwrap();
        let id = MessageId::from_u64(9);
        let mut value = b"left over from a longer value, which must not survive".to_vec();
        write_message_value(&mut value, &message, id);
        assert_eq!(decode_value(&value), Some(message.to_json(id).as_slice()));
        assert_eq!(value, message_value(&message, id));
        write_value(&mut value, b"c1");
        assert_eq!(decode_value(&value), Some(&b"c1"[..]));
    }
}

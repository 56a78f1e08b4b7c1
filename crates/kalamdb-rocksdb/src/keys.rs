//! How messages are laid out in RocksDB: every key and value encoding lives here.
//!
//! | column family | key | value |
//! | --- | --- | --- |
//! | `messages` | `conversation_id` bytes ‖ `0x00` ‖ msg_id (u64 big-endian) | [`VALUE_VERSION`] ‖ the message's canonical JSON |
//! | `message_index` | msg_id (u64 big-endian) | [`VALUE_VERSION`] ‖ `conversation_id` bytes |
//! | `idempotency` | reserved for idempotent retries | |
//! | `meta` | a name such as `format_version` | format-specific |
//!
//! A conversation id never contains a `0x00` byte (control characters are refused at validation),
//! so the `0x00` ends it unambiguously: all of one conversation's keys are contiguous, sorted by
//! id, and lie in the half-open range `conversation_id ‖ 0x00 .. conversation_id ‖ 0x01`. No other
//! conversation's key falls in that range, even one whose id extends this one (`a` and `ab`).
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
pub const FORMAT_VERSION: u32 = 1;
/// `meta` key of the format version (u32 big-endian).
pub const META_FORMAT_VERSION: &[u8] = b"format_version";
/// `meta` key of the node id that last opened the store (u16 big-endian).
pub const META_NODE_ID: &[u8] = b"node_id";
/// `meta` key the health probe writes.
pub const META_HEALTH_PROBE: &[u8] = b"health_probe";

const SEPARATOR: u8 = 0x00;

/// The `messages` key of message `id` in `conversation_id`.
pub fn message_key(conversation_id: &str, id: MessageId) -> Vec<u8> {
    let mut key = Vec::with_capacity(conversation_id.len() + 9);
    key.extend_from_slice(conversation_id.as_bytes());
    key.push(SEPARATOR);
    key.extend_from_slice(&id.as_u64().to_be_bytes());
    key
}

/// Splits a `messages` key into its conversation id bytes and message id.
pub fn decode_message_key(key: &[u8]) -> Option<(&[u8], MessageId)> {
    let split = key.len().checked_sub(9)?;
    let (conversation, rest) = key.split_at(split);
    if rest[0] != SEPARATOR || conversation.contains(&SEPARATOR) {
        return None;
    }
    let id = u64::from_be_bytes(rest[1..].try_into().ok()?);
    Some((conversation, MessageId::from_u64(id)))
}

/// The half-open key range holding exactly the messages of `conversation_id`.
pub fn conversation_range(conversation_id: &str) -> (Vec<u8>, Vec<u8>) {
    let mut lower = Vec::with_capacity(conversation_id.len() + 1);
    lower.extend_from_slice(conversation_id.as_bytes());
    lower.push(SEPARATOR);
    let mut upper = lower.clone();
    *upper.last_mut().expect("just pushed") = SEPARATOR + 1;
    (lower, upper)
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
    let mut value = Vec::with_capacity(payload.len() + 1);
    value.push(VALUE_VERSION);
    value.extend_from_slice(payload);
    value
}

/// A message's value: the version byte, then its JSON as the message `id`.
pub fn message_value(message: &PreparedMessage, id: MessageId) -> Vec<u8> {
    let mut value = Vec::with_capacity(message.approximate_json_len() + 1);
    value.push(VALUE_VERSION);
    message.write_json(id, &mut value);
    value
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
        /// Key order is (conversation bytes, id) order, for every pair of keys.
        #[test]
        fn key_order_matches_tuple_order(
            a in (conversation_id(), id()),
            b in (conversation_id(), id()),
        ) {
            let ka = message_key(&a.0, a.1);
            let kb = message_key(&b.0, b.1);
            let expected = (a.0.as_bytes(), a.1).cmp(&(b.0.as_bytes(), b.1));
            prop_assert_eq!(ka.cmp(&kb), expected);
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

        #[test]
        fn message_keys_round_trip(c in conversation_id(), i in id()) {
            let key = message_key(&c, i);
            prop_assert_eq!(decode_message_key(&key), Some((c.as_bytes(), i)));
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
            let _ = decode_index_key(&bytes);
            let _ = decode_value(&bytes);
        }
    }

    #[test]
    fn malformed_keys_do_not_decode() {
        assert_eq!(decode_message_key(b"short"), None);
        assert_eq!(decode_message_key(b"abc\x01\0\0\0\0\0\0\0\x01"), None);
        assert_eq!(decode_index_key(b"1234567"), None);
    }

    #[test]
    fn values_carry_a_version_byte() {
        let value = encode_value(b"{}");
        assert_eq!(value, b"\x01{}");
        assert_eq!(decode_value(&value), Some(&b"{}"[..]));
        assert_eq!(decode_value(b"\x02{}"), None);
        assert_eq!(decode_value(b""), None);
    }
}

//! How messages are laid out in RocksDB: every key and value encoding lives here.
//!
//! | column family | key | value |
//! | --- | --- | --- |
//! | `messages` | [`bucket`] (2 bytes) ‖ `conversation_id` bytes ‖ `0x02` ‖ NOT msg_id (u64 big-endian) | [`VALUE_VERSION`] ‖ the message's canonical JSON |
//! | `message_index` | msg_id (u64 big-endian) | [`VALUE_VERSION`] ‖ `conversation_id` bytes |
//! | `idempotency` | the idempotency key | see [`encode_idempotency`] |
//! | `meta` | a name such as `format_version` | format-specific |
//! | `conversations` | `conversation_id` ‖ `0x02` ‖ `s` | [`ConversationState`]: times, count, last id, members (hot, rewritten by each write) |
//! | `conversations` | `conversation_id` ‖ `0x02` ‖ `d` | [`encode_details`]: title and metadata (rewritten only by a create or patch) |
//! | `conversation_activity` | [`bucket`] of the member ‖ member ‖ `0x02` ‖ kind ‖ NOT time (u64 big-endian) ‖ `conversation_id` | empty |
//! | `members` | `conversation_id` ‖ `0x02` ‖ `user_id` | empty |
//!
//! `conversation_activity` holds the listings by activity ([`ActivityKind`]): the server's own
//! under the empty member, and each member's of a conversation of at
//! most [`crate::INDEXED_MEMBERS`] members. Kind `u` is keyed by `updated_at`, kind `c` by
//! `created_at` (what a cursor falls back on for a conversation that moved while it paged), both
//! newest first; kind `L` lists, without a time, a member's conversations too large to index per
//! member, which a listing reads and sorts at read time; kind `p` lists, also without a time, a
//! member's busy conversations whose `u` entries trail (`crate::conversations`), and under the
//! empty member every such conversation, the queue of those to catch up.
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
/// Column family holding each conversation's record.
pub const CF_CONVERSATIONS: &str = "conversations";
/// Column family holding the listings of conversations by activity.
pub const CF_ACTIVITY: &str = "conversation_activity";
/// Column family holding each conversation's members.
pub const CF_MEMBERS: &str = "members";
/// Every column family, in the order they are opened.
pub const COLUMN_FAMILIES: [&str; 7] = [
    CF_MESSAGES,
    CF_MESSAGE_INDEX,
    CF_IDEMPOTENCY,
    CF_META,
    CF_CONVERSATIONS,
    CF_ACTIVITY,
    CF_MEMBERS,
];

/// The version byte that starts every value this build writes.
pub const VALUE_VERSION: u8 = 1;
/// The on-disk format this build reads and writes, recorded in `meta`.
pub const FORMAT_VERSION: u32 = 6;
/// The older formats this build upgrades on open: `messages` keys in ascending id order (1),
/// newest first without a bucket (2), without conversation records (3), without members'
/// deferred entries (4, which a format-4 build could not read: it takes a state's
/// [`ConversationState::indexed_at`] for member names), and without deletes (5, which a
/// format-5 build could not read: it takes an index entry whose message a delete removed, and
/// which the erase queue has yet to drop, for corruption, and never runs that queue).
pub const OLD_FORMAT_VERSIONS: [u32; 5] = [1, 2, 3, 4, 5];
/// The last format whose `messages` keys differ from this build's.
pub const LAST_OLD_KEY_FORMAT: u32 = 2;
/// The last format without conversation records, which an upgrade builds from the messages.
pub const LAST_FORMAT_WITHOUT_RECORDS: u32 = 3;
/// `meta` key of the format version (u32 big-endian).
pub const META_FORMAT_VERSION: &[u8] = b"format_version";
/// `meta` key of the node id that last opened the store (u16 big-endian).
pub const META_NODE_ID: &[u8] = b"node_id";
/// `meta` key of the activity id of the last create or patch of a conversation (u64
/// big-endian); a message's is its id, which `message_index` holds.
pub const META_LAST_ACTIVITY: &[u8] = b"last_activity";
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

/// Whether no id lies strictly between `after` and `before` (either open): [`id_range`]'s
/// `None`, without building keys.
pub fn no_id_between(after: Option<MessageId>, before: Option<MessageId>) -> bool {
    match (after, before) {
        (_, Some(before)) if before.as_u64() == 0 => true,
        (Some(after), Some(before)) => before.as_u64() <= after.as_u64().saturating_add(1),
        _ => false,
    }
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

/// A `conversations` key: the conversation's state (`s`) or details (`d`).
pub fn conversation_key(conversation_id: &str, part: u8) -> Vec<u8> {
    let mut key = Vec::with_capacity(conversation_id.len() + 2);
    key.extend_from_slice(conversation_id.as_bytes());
    key.push(SEPARATOR);
    key.push(part);
    key
}

/// The `conversations` key suffix of a conversation's state.
pub const STATE: u8 = b's';
/// The `conversations` key suffix of a conversation's title and metadata.
pub const DETAILS: u8 = b'd';

/// The entries of `conversation_activity`: see the module docs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ActivityKind {
    /// By `updated_at`.
    Updated = b'u' as isize,
    /// By `created_at`.
    Created = b'c' as isize,
    /// A member's conversation too large to index per member: no time.
    Large = b'L' as isize,
    /// A busy conversation whose `u` entries in this member's listing trail its `updated_at`
    /// ([`ConversationState::indexed_at`]): no time; a listing places it from its state. Under
    /// the server's listing (the empty member), the queue of such conversations to catch up.
    Deferred = b'p' as isize,
}

impl ActivityKind {
    /// Whether its entries carry no time: a listing reads their conversations' states to place
    /// them.
    pub fn timeless(self) -> bool {
        matches!(self, Self::Large | Self::Deferred)
    }
}

/// `bucket(member) ‖ member ‖ 0x02 ‖ kind`: what every entry of one listing starts with
/// (`member` is empty for the server's own). The bucket, as in `messages`, keys RocksDB's
/// memtable insert hint: each listing's new entries go in first, where its last one went, and
/// members whose names begin alike do not share a hint.
pub fn activity_prefix(member: &str, kind: ActivityKind) -> Vec<u8> {
    let mut prefix = Vec::with_capacity(MEMTABLE_HINT_PREFIX_LEN + member.len() + 2 + 8 + 32);
    prefix.extend_from_slice(&bucket(member.as_bytes()));
    prefix.extend_from_slice(member.as_bytes());
    prefix.push(SEPARATOR);
    prefix.push(kind as u8);
    prefix
}

/// The first key past every entry starting with `prefix`.
pub fn past_prefix(prefix: &[u8]) -> Vec<u8> {
    let mut upper = prefix.to_vec();
    // Prefixes end with a kind or separator byte, never 0xff.
    *upper.last_mut().expect("prefixes are not empty") += 1;
    upper
}

/// A listing entry: `prefix ‖ NOT at ‖ conversation_id` (`at` omitted for
/// [`ActivityKind::timeless`] kinds).
pub fn activity_key(member: &str, kind: ActivityKind, at: u64, conversation_id: &str) -> Vec<u8> {
    let mut key = activity_prefix(member, kind);
    if !kind.timeless() {
        key.extend_from_slice(&position_suffix(at, conversation_id));
    } else {
        key.extend_from_slice(conversation_id.as_bytes());
    }
    key
}

/// `NOT at ‖ conversation_id`: what orders listing entries, as [`kalamdb_core::ListPosition`] does.
pub fn position_suffix(at: u64, conversation_id: &str) -> Vec<u8> {
    let mut suffix = Vec::with_capacity(8 + conversation_id.len());
    suffix.extend_from_slice(&(!at).to_be_bytes());
    suffix.extend_from_slice(conversation_id.as_bytes());
    suffix
}

/// Splits a position suffix into its time and conversation id.
pub fn decode_position(suffix: &[u8]) -> Option<(u64, &str)> {
    let (at, conversation) = suffix.split_at_checked(8)?;
    let at = !u64::from_be_bytes(at.try_into().ok()?);
    Some((at, std::str::from_utf8(conversation).ok()?))
}

/// A `members` key.
pub fn member_key(conversation_id: &str, user_id: &str) -> Vec<u8> {
    let mut key = members_prefix(conversation_id);
    key.extend_from_slice(user_id.as_bytes());
    key
}

/// `conversation_id ‖ 0x02`, what every `members` key of the conversation starts with.
pub fn members_prefix(conversation_id: &str) -> Vec<u8> {
    let mut key = Vec::with_capacity(conversation_id.len() + 1 + 32);
    key.extend_from_slice(conversation_id.as_bytes());
    key.push(SEPARATOR);
    key
}

/// A conversation's state: what every message written to it changes.
///
/// Encoded after the version byte as `created_at`, `updated_at`, `message_count`, the last
/// message's id (0 for none), the activity id, all u64 big-endian, the member count (u32 big-endian), a flags byte
/// (bit 0: too large to index per member), then, when not large, each member as a length byte
/// and its bytes (names are at most 255 bytes).
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct ConversationState {
    /// When it came into being.
    pub created_at: u64,
    /// Its last activity.
    pub updated_at: u64,
    /// Its messages.
    pub message_count: u64,
    /// Its newest message.
    pub last_id: Option<MessageId>,
    /// The id minted for its last change: its newest message's, or one minted for a create or
    /// patch (`kalamdb_core::conversation`).
    pub activity: u64,
    /// How many members it has.
    pub member_count: u32,
    /// Whether its members' listings hold it as [`ActivityKind::Large`].
    pub large: bool,
    /// Its members, when not `large` (the listings to keep current on each write).
    pub members: Vec<String>,
    /// Where its members' `u` entries stand while they trail `updated_at` (a busy
    /// conversation's; `crate::conversations`): `None` when they stand at `updated_at`.
    pub indexed_at: Option<u64>,
    /// Messages this state counts that the stored one does not: a deferred conversation's
    /// stored state may trail its messages, which a read then counts (`crate::conversations`).
    /// Never stored: 0 when decoded.
    pub unsaved: u64,
}

const LARGE_FLAG: u8 = 1;
/// Set when `indexed_at` follows the header (u64 big-endian).
const DEFERRED_FLAG: u8 = 2;
/// The fixed part of a state: five u64 figures, the member count and the flags.
const STATE_HEADER: usize = 5 * 8 + 4 + 1;

impl ConversationState {
    /// The stored bytes.
    pub fn encode(&self) -> Vec<u8> {
        let members: usize = self.members.iter().map(|m| m.len() + 1).sum();
        let mut out = Vec::with_capacity(1 + STATE_HEADER + 8 + members);
        out.push(VALUE_VERSION);
        for figure in [
            self.created_at,
            self.updated_at,
            self.message_count,
            self.last_id.map_or(0, MessageId::as_u64),
            self.activity,
        ] {
            out.extend_from_slice(&figure.to_be_bytes());
        }
        out.extend_from_slice(&self.member_count.to_be_bytes());
        let mut flags = if self.large { LARGE_FLAG } else { 0 };
        if self.indexed_at.is_some() {
            flags |= DEFERRED_FLAG;
        }
        out.push(flags);
        if let Some(at) = self.indexed_at {
            out.extend_from_slice(&at.to_be_bytes());
        }
        if !self.large {
            for member in &self.members {
                // Validated names are 1-255 bytes.
                out.push(member.len() as u8);
                out.extend_from_slice(member.as_bytes());
            }
        }
        out
    }

    /// The state in `value`, `None` when it does not decode.
    pub fn decode(value: &[u8]) -> Option<Self> {
        let payload = decode_value(value)?;
        let (figures, rest) = payload.split_at_checked(STATE_HEADER)?;
        let figure = |i: usize| u64::from_be_bytes(figures[i * 8..i * 8 + 8].try_into().unwrap());
        let member_count = u32::from_be_bytes(figures[40..44].try_into().ok()?);
        let large = figures[44] & LARGE_FLAG != 0;
        let (indexed_at, mut rest) = if figures[44] & DEFERRED_FLAG != 0 {
            let (at, rest) = rest.split_first_chunk::<8>()?;
            (Some(u64::from_be_bytes(*at)), rest)
        } else {
            (None, rest)
        };
        let mut members = Vec::new();
        while let Some((&len, tail)) = rest.split_first() {
            let (name, tail) = tail.split_at_checked(usize::from(len))?;
            members.push(std::str::from_utf8(name).ok()?.to_owned());
            rest = tail;
        }
        Some(Self {
            created_at: figure(0),
            updated_at: figure(1),
            message_count: figure(2),
            last_id: Some(figure(3))
                .filter(|&id| id != 0)
                .map(MessageId::from_u64),
            activity: figure(4),
            member_count,
            large,
            members,
            indexed_at,
            unsaved: 0,
        })
    }
}

/// A conversation's details as stored: the title's length (u16 big-endian, `0xffff` for none),
/// the title, then the metadata's JSON. Wrapped by [`encode_value`].
pub fn encode_details(title: Option<&str>, metadata_json: &[u8]) -> Vec<u8> {
    let title_bytes = title.map_or(&[][..], str::as_bytes);
    let mut out = Vec::with_capacity(3 + title_bytes.len() + metadata_json.len());
    out.push(VALUE_VERSION);
    // Titles are at most 255 bytes.
    let len = title.map_or(u16::MAX, |t| t.len() as u16);
    out.extend_from_slice(&len.to_be_bytes());
    out.extend_from_slice(title_bytes);
    out.extend_from_slice(metadata_json);
    out
}

/// The title and metadata JSON of stored details, `None` when they do not decode.
pub fn decode_details(value: &[u8]) -> Option<(Option<&str>, &[u8])> {
    let payload = decode_value(value)?;
    let (len, rest) = payload.split_at_checked(2)?;
    let len = u16::from_be_bytes(len.try_into().ok()?);
    if len == u16::MAX {
        return Some((None, rest));
    }
    let (title, metadata) = rest.split_at_checked(usize::from(len))?;
    Some((Some(std::str::from_utf8(title).ok()?), metadata))
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

    #[test]
    fn conversation_records_round_trip() {
        let state = ConversationState {
            created_at: 1,
            updated_at: 2,
            message_count: 3,
            last_id: Some(MessageId::from_u64(4)),
            activity: 4,
            member_count: 2,
            large: false,
            members: vec!["alice".into(), "é".repeat(127)],
            indexed_at: None,
            unsaved: 0,
        };
        assert_eq!(
            ConversationState::decode(&state.encode()),
            Some(state.clone())
        );
        let deferred = ConversationState {
            indexed_at: Some(u64::MAX - 1),
            ..state.clone()
        };
        assert_eq!(
            ConversationState::decode(&deferred.encode()),
            Some(deferred)
        );
        let large = ConversationState {
            large: true,
            last_id: None,
            ..state
        };
        let decoded = ConversationState::decode(&large.encode()).unwrap();
        assert_eq!(
            (decoded.large, decoded.members.len(), decoded.last_id),
            (true, 0, None)
        );
        assert_eq!(ConversationState::decode(&[VALUE_VERSION, 0]), None);

        assert_eq!(
            decode_details(&encode_details(Some("Trip"), b"{}")),
            Some((Some("Trip"), &b"{}"[..]))
        );
        assert_eq!(
            decode_details(&encode_details(None, b"{\"a\":1}")),
            Some((None, &b"{\"a\":1}"[..]))
        );
    }

    proptest! {
        /// Listing entries run newest first, then by conversation id, as `ListPosition` does.
        #[test]
        fn activity_entries_sort_as_list_positions(
            a in (any::<u64>(), conversation_id()),
            b in (any::<u64>(), conversation_id()),
        ) {
            let ka = activity_key("m", ActivityKind::Updated, a.0, &a.1);
            let kb = activity_key("m", ActivityKind::Updated, b.0, &b.1);
            let pa = kalamdb_core::ListPosition::new(a.0, a.1.clone());
            let pb = kalamdb_core::ListPosition::new(b.0, b.1.clone());
            prop_assert_eq!(ka.cmp(&kb), pa.cmp(&pb));
            let prefix = activity_prefix("m", ActivityKind::Updated).len();
            prop_assert_eq!(decode_position(&ka[prefix..]), Some((a.0, a.1.as_str())));
        }

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
            prop_assert_eq!(no_id_between(after, before), id_range(&c, after, before).is_none());
        }

        /// Near the edges, where the random ids seldom fall: no id between n and n + 1.
        #[test]
        fn no_id_between_agrees_with_id_range_at_the_edges(
            c in conversation_id(),
            after in proptest::option::of(0u64..4),
            before in proptest::option::of(0u64..4),
        ) {
            let (after, before) = (after.map(MessageId::from_u64), before.map(MessageId::from_u64));
            prop_assert_eq!(no_id_between(after, before), id_range(&c, after, before).is_none());
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

/// `meta` key of the highest id a delete removed (u64 big-endian): the id generator is seeded
/// above it too, so deleting the newest messages never lets a restart mint their ids again.
pub const META_ID_FLOOR: &[u8] = b"id_floor";

/// What every `meta` key of the erase queue starts with; see [`erase_key`].
pub const META_ERASE_PREFIX: &[u8] = b"erase\x00";

/// A `meta` key of the erase queue (`crate::erase`): [`META_ERASE_PREFIX`] ‖ the operation's
/// number (u64 big-endian) ‖ the part (u32 big-endian). Part 0 is written by the delete itself
/// and says it committed; parts from 1 hold ids written ahead of it.
pub fn erase_key(op: u64, part: u32) -> Vec<u8> {
    let mut key = Vec::with_capacity(META_ERASE_PREFIX.len() + 12);
    key.extend_from_slice(META_ERASE_PREFIX);
    key.extend_from_slice(&op.to_be_bytes());
    key.extend_from_slice(&part.to_be_bytes());
    key
}

/// The operation and part of an erase queue key.
pub fn decode_erase_key(key: &[u8]) -> Option<(u64, u32)> {
    let rest = key.strip_prefix(META_ERASE_PREFIX)?;
    let (op, part) = rest.split_at_checked(8)?;
    Some((
        u64::from_be_bytes(op.try_into().ok()?),
        u32::from_be_bytes(part.try_into().ok()?),
    ))
}

/// One piece of work the eraser owes a delete (`crate::erase`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum EraseTask {
    /// Compact `[start, end)` of the column family at this place in [`COLUMN_FAMILIES`], to the
    /// bottom level, so no file keeps what was deleted there.
    Compact {
        /// The column family's place in [`COLUMN_FAMILIES`].
        cf: u8,
        /// The first key.
        start: Vec<u8>,
        /// The first key past the range.
        end: Vec<u8>,
    },
    /// Drop the `message_index` entries of these ids: messages a committed delete removed.
    Index(Vec<u64>),
    /// Drop the idempotency records of the conversation's messages up to this id.
    Keys {
        /// The deleted conversation.
        conversation_id: String,
        /// Its highest id when it was deleted: a conversation of the same id made later has
        /// higher ones.
        up_to: u64,
    },
}

fn push_bytes(out: &mut Vec<u8>, bytes: &[u8]) {
    out.extend_from_slice(&u32::try_from(bytes.len()).unwrap_or(u32::MAX).to_be_bytes());
    out.extend_from_slice(bytes);
}

/// An erase queue value: [`VALUE_VERSION`] ‖ when it was queued (ms, u64 big-endian) ‖ each
/// task: a tag byte (`r`, `i`, `k`) and its fields, byte strings prefixed by their u32 length.
pub fn encode_erase(created_ms: u64, tasks: &[EraseTask]) -> Vec<u8> {
    let mut out = vec![VALUE_VERSION];
    out.extend_from_slice(&created_ms.to_be_bytes());
    for task in tasks {
        match task {
            EraseTask::Compact { cf, start, end } => {
                out.push(b'r');
                out.push(*cf);
                push_bytes(&mut out, start);
                push_bytes(&mut out, end);
            }
            EraseTask::Index(ids) => {
                out.push(b'i');
                out.extend_from_slice(&u32::try_from(ids.len()).unwrap_or(0).to_be_bytes());
                for id in ids {
                    out.extend_from_slice(&id.to_be_bytes());
                }
            }
            EraseTask::Keys {
                conversation_id,
                up_to,
            } => {
                out.push(b'k');
                push_bytes(&mut out, conversation_id.as_bytes());
                out.extend_from_slice(&up_to.to_be_bytes());
            }
        }
    }
    out
}

/// Reads an [`encode_erase`] value: when it was queued and its tasks.
pub fn decode_erase(value: &[u8]) -> Option<(u64, Vec<EraseTask>)> {
    fn take<'a>(rest: &mut &'a [u8], n: usize) -> Option<&'a [u8]> {
        let (head, tail) = rest.split_at_checked(n)?;
        *rest = tail;
        Some(head)
    }
    fn u32_of(rest: &mut &[u8]) -> Option<u32> {
        Some(u32::from_be_bytes(take(rest, 4)?.try_into().ok()?))
    }
    fn u64_of(rest: &mut &[u8]) -> Option<u64> {
        Some(u64::from_be_bytes(take(rest, 8)?.try_into().ok()?))
    }
    fn bytes_of(rest: &mut &[u8]) -> Option<Vec<u8>> {
        let n = u32_of(rest)? as usize;
        take(rest, n).map(<[u8]>::to_vec)
    }
    let mut rest = decode_value(value)?;
    let created = u64_of(&mut rest)?;
    let mut tasks = Vec::new();
    while let Some((&tag, tail)) = rest.split_first() {
        rest = tail;
        tasks.push(match tag {
            b'r' => EraseTask::Compact {
                cf: take(&mut rest, 1)?[0],
                start: bytes_of(&mut rest)?,
                end: bytes_of(&mut rest)?,
            },
            b'i' => {
                let n = u32_of(&mut rest)? as usize;
                let mut ids = Vec::with_capacity(n);
                for _ in 0..n {
                    ids.push(u64_of(&mut rest)?);
                }
                EraseTask::Index(ids)
            }
            b'k' => EraseTask::Keys {
                conversation_id: String::from_utf8(bytes_of(&mut rest)?).ok()?,
                up_to: u64_of(&mut rest)?,
            },
            _ => return None,
        });
    }
    Some((created, tasks))
}

//! Messages as clients send them ([`NewMessage`]), as they are stored and returned ([`Message`],
//! [`StoredMessage`]), and the rules a new message must satisfy ([`Limits`]).
//!
//! The hand-tuned JSON encoding that inserts use, [`PreparedMessage`] and
//! [`Inserted::write_json`], is in `message/encode.rs`: held byte for byte to serde's output by
//! its tests, it is measured code (`docs/BENCHMARKS.md`), kept apart from the types.

mod encode;

pub use encode::PreparedMessage;

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

use crate::id::MessageId;

/// The longest `conversation_id` or `from`, in bytes.
pub const MAX_NAME_BYTES: usize = 255;

/// The size limits a new message is held to (`[limits]` in the server's config).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// The largest `content`, in bytes of UTF-8.
    pub max_message_size: usize,
    /// The largest `metadata`, in bytes of its compact JSON encoding.
    pub max_metadata_size: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Self {
            max_message_size: 1024 * 1024,
            max_metadata_size: 64 * 1024,
        }
    }
}

/// A message as a client submits it, before the server gives it an id and a timestamp.
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct NewMessage {
    /// The conversation it belongs to: 1-255 bytes, no control characters.
    pub conversation_id: String,
    /// Its author: 1-255 bytes, no control characters.
    pub from: String,
    /// The text, at least one byte and at most [`Limits::max_message_size`].
    pub content: String,
    /// Free-form attributes (a role, a model name...); a JSON object without duplicate keys,
    /// nested at most [`crate::strict_json::MAX_DEPTH`] levels.
    #[serde(default, deserialize_with = "crate::strict_json::object")]
    pub metadata: Map<String, Value>,
}

/// Why a new message was refused: the field, and the rule it broke.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{field} {rule}")]
pub struct ValidationError {
    /// The offending field's name, as the client spelled it.
    pub field: &'static str,
    /// The rule, phrased to follow the field name ("must not be empty").
    pub rule: String,
    /// Whether the field broke a size limit (a 413 rather than a 400).
    pub too_large: bool,
}

impl ValidationError {
    pub(crate) fn invalid(field: &'static str, rule: impl Into<String>) -> Self {
        Self {
            field,
            rule: rule.into(),
            too_large: false,
        }
    }

    fn too_large(field: &'static str, rule: impl Into<String>) -> Self {
        Self {
            field,
            rule: rule.into(),
            too_large: true,
        }
    }
}

impl NewMessage {
    /// Checks every field against the limits of the HTTP contract.
    pub fn validate(&self, limits: &Limits) -> Result<(), ValidationError> {
        validate_name("conversation_id", &self.conversation_id)?;
        validate_name("from", &self.from)?;
        validate_content(&self.content, limits)?;
        validate_metadata(&self.metadata, limits)
    }
}

/// A change to a stored message (`PATCH /api/v1/messages/{msg_id}`): each field present replaces
/// the stored one. The author, conversation and id never change.
#[derive(Debug, Clone, PartialEq, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MessagePatch {
    /// The new text, held to the same rules as a new message's. `null` is refused, like any
    /// other value that is not a string: a message always has content.
    #[serde(default, deserialize_with = "some_string")]
    pub content: Option<String>,
    /// The new metadata, replacing the old whole.
    #[serde(default, deserialize_with = "some_object")]
    pub metadata: Option<Map<String, Value>>,
}

fn some_string<'de, D: serde::Deserializer<'de>>(
    deserializer: D,
) -> Result<Option<String>, D::Error> {
    String::deserialize(deserializer).map(Some)
}

fn some_object<'de, D: serde::Deserializer<'de>>(
    deserializer: D,
) -> Result<Option<Map<String, Value>>, D::Error> {
    crate::strict_json::object(deserializer).map(Some)
}

impl MessagePatch {
    /// Checks the fields it sets; a patch that sets none is refused too, since it would only
    /// stamp `edited_at`.
    pub fn validate(&self, limits: &Limits) -> Result<(), ValidationError> {
        if self.content.is_none() && self.metadata.is_none() {
            return Err(ValidationError::invalid(
                "content",
                "or metadata must be given: the patch changes nothing",
            ));
        }
        if let Some(content) = &self.content {
            validate_content(content, limits)?;
        }
        if let Some(metadata) = &self.metadata {
            validate_metadata(metadata, limits)?;
        }
        Ok(())
    }
}

/// Checks a message's content: not empty, at most `limits.max_message_size` bytes.
fn validate_content(content: &str, limits: &Limits) -> Result<(), ValidationError> {
    if content.is_empty() {
        return Err(ValidationError::invalid("content", "must not be empty"));
    }
    if content.len() > limits.max_message_size {
        return Err(ValidationError::too_large(
            "content",
            format!(
                "is {} bytes, over the limit of {} bytes",
                content.len(),
                limits.max_message_size
            ),
        ));
    }
    Ok(())
}

/// Checks metadata (a message's or a conversation's) against `limits.max_metadata_size`.
pub(crate) fn validate_metadata(
    metadata: &Map<String, Value>,
    limits: &Limits,
) -> Result<(), ValidationError> {
    let size = json_size(metadata);
    if size > limits.max_metadata_size {
        return Err(ValidationError::too_large(
            "metadata",
            format!(
                "is {size} bytes as compact JSON, over the limit of {} bytes",
                limits.max_metadata_size
            ),
        ));
    }
    Ok(())
}

/// Checks a `conversation_id` or `from`: 1-255 bytes, no control characters.
///
/// Storage relies on this: a conversation id never holds a control byte, such as the 0x02 that
/// ends it in a key.
pub fn validate_name(field: &'static str, value: &str) -> Result<(), ValidationError> {
    if value.is_empty() {
        return Err(ValidationError::invalid(field, "must not be empty"));
    }
    if value.len() > MAX_NAME_BYTES {
        return Err(ValidationError::invalid(
            field,
            format!(
                "is {} bytes, over the limit of {MAX_NAME_BYTES} bytes",
                value.len()
            ),
        ));
    }
    if value.chars().any(char::is_control) {
        return Err(ValidationError::invalid(
            field,
            "must not contain control characters",
        ));
    }
    Ok(())
}

/// The length of a value's compact JSON encoding, without building the string.
fn json_size(map: &Map<String, Value>) -> usize {
    struct Counter(usize);
    impl std::io::Write for Counter {
        fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
            self.0 += buf.len();
            Ok(buf.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }
    let mut counter = Counter(0);
    // Writing to a counter cannot fail, and a map of JSON values always serializes.
    serde_json::to_writer(&mut counter, map).map_or(usize::MAX, |()| counter.0)
}

/// A stored message, as the API returns it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Message {
    /// Its Snowflake id.
    pub msg_id: MessageId,
    /// The conversation it belongs to.
    pub conversation_id: String,
    /// Its author.
    pub from: String,
    /// When the server accepted it: milliseconds since the Unix epoch, UTC; the time in `msg_id`.
    pub timestamp: u64,
    /// The text.
    pub content: String,
    /// Free-form attributes.
    pub metadata: Map<String, Value>,
    /// When its content or metadata was last changed (`PATCH`), in milliseconds since the Unix
    /// epoch; absent from the JSON of a message never edited.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub edited_at: Option<u64>,
}

impl Message {
    /// The message `new` becomes once the server gives it `msg_id`.
    pub fn from_new(msg_id: MessageId, new: NewMessage) -> Self {
        Self {
            msg_id,
            conversation_id: new.conversation_id,
            from: new.from,
            timestamp: msg_id.timestamp_ms(),
            content: new.content,
            metadata: new.metadata,
            edited_at: None,
        }
    }

    /// Applies `patch`, stamping the edit with `edited_at` (ms).
    pub fn apply(&mut self, patch: &MessagePatch, edited_at: u64) {
        if let Some(content) = &patch.content {
            self.content.clone_from(content);
        }
        if let Some(metadata) = &patch.metadata {
            self.metadata.clone_from(metadata);
        }
        self.edited_at = Some(edited_at);
    }

    /// The message's canonical JSON: the exact bytes the API returns for it.
    pub fn to_json(&self) -> Vec<u8> {
        // Strings, integers and JSON values always serialize.
        serde_json::to_vec(self).unwrap_or_default()
    }
}

/// What a client learns when its message is stored.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Inserted {
    /// The id the server gave the message.
    pub msg_id: MessageId,
    /// The conversation it was stored in.
    pub conversation_id: String,
    /// The server's timestamp for it, equal to the time encoded in `msg_id`.
    pub timestamp: u64,
}

/// A message read back from a store, kept as its canonical JSON so it can be sent on without
/// being decoded and encoded again.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoredMessage {
    /// Its id.
    pub msg_id: MessageId,
    /// Its canonical JSON (see [`Message::to_json`]).
    pub json: Vec<u8>,
}

impl StoredMessage {
    /// Decodes the JSON into a [`Message`].
    pub fn decode(&self) -> Result<Message, serde_json::Error> {
        serde_json::from_slice(&self.json)
    }

    /// The conversation it belongs to, without keeping the rest of the JSON.
    pub fn conversation_id(&self) -> Result<String, serde_json::Error> {
        #[derive(Deserialize)]
        struct Only {
            conversation_id: String,
        }
        serde_json::from_slice::<Only>(&self.json).map(|only| only.conversation_id)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    /// A message with no metadata; `encode.rs`'s tests use it too.
    pub(super) fn msg(conversation_id: &str, from: &str, content: &str) -> NewMessage {
        NewMessage {
            conversation_id: conversation_id.into(),
            from: from.into(),
            content: content.into(),
            metadata: Map::new(),
        }
    }

    fn rejects(m: &NewMessage, limits: &Limits) -> ValidationError {
        m.validate(limits).expect_err("should be rejected")
    }

    #[test]
    fn accepts_a_plain_message() {
        assert!(msg("conv_1", "alice", "hi")
            .validate(&Limits::default())
            .is_ok());
        // Newlines in content are ordinary text, not forbidden control characters.
        assert!(msg("c", "a", "line\nline\t")
            .validate(&Limits::default())
            .is_ok());
    }

    #[test]
    fn names_must_be_short_visible_text() {
        let limits = Limits::default();
        let e = rejects(&msg("", "a", "x"), &limits);
        assert_eq!((e.field, e.too_large), ("conversation_id", false));
        assert_eq!(e.to_string(), "conversation_id must not be empty");

        let e = rejects(&msg("c", &"f".repeat(256), "x"), &limits);
        assert_eq!(e.field, "from");
        assert!(e.rule.contains("255"));
        assert!(msg(&"c".repeat(255), "a", "x").validate(&limits).is_ok());

        for bad in ["a\u{0}b", "tab\there", "nl\n", "del\u{7f}"] {
            let e = rejects(&msg(bad, "a", "x"), &limits);
            assert_eq!(e.field, "conversation_id");
            assert!(e.rule.contains("control"));
        }
        // Multi-byte characters count in bytes.
        let e = rejects(&msg(&"é".repeat(128), "a", "x"), &limits);
        assert!(e.rule.contains("256 bytes"));
    }

    #[test]
    fn content_is_bounded() {
        let limits = Limits {
            max_message_size: 10,
            max_metadata_size: 100,
        };
        assert_eq!(rejects(&msg("c", "a", ""), &limits).field, "content");
        assert!(msg("c", "a", &"x".repeat(10)).validate(&limits).is_ok());
        let e = rejects(&msg("c", "a", &"x".repeat(11)), &limits);
        assert!(e.too_large);
        assert!(e.rule.contains("limit of 10 bytes"), "{}", e.rule);
    }

    #[test]
    fn metadata_is_bounded_by_its_json_size() {
        let limits = Limits {
            max_message_size: 10,
            max_metadata_size: 20,
        };
        let mut m = msg("c", "a", "x");
        // {"role":"assistant"} is exactly 20 bytes.
        m.metadata = json!({"role": "assistant"}).as_object().unwrap().clone();
        assert!(m.validate(&limits).is_ok());
        m.metadata = json!({"role": "assistant!"}).as_object().unwrap().clone();
        let e = rejects(&m, &limits);
        assert_eq!((e.field, e.too_large), ("metadata", true));
    }

    #[test]
    fn unknown_fields_are_refused() {
        let err = serde_json::from_str::<NewMessage>(
            r#"{"conversationId":"c","from":"a","content":"x"}"#,
        )
        .unwrap_err();
        assert!(err.to_string().contains("conversationId"));
    }

    #[test]
    fn json_round_trips_with_the_id_as_a_string() {
        let id = MessageId::from_parts(crate::id::EPOCH_MS + 5, 1, 2).unwrap();
        let mut new = msg("c", "a", "hello");
        new.metadata = json!({"role": "user"}).as_object().unwrap().clone();
        let message = Message::from_new(id, new);
        assert_eq!(message.timestamp, crate::id::EPOCH_MS + 5);
        let stored = StoredMessage {
            msg_id: id,
            json: message.to_json(),
        };
        let value: Value = serde_json::from_slice(&stored.json).unwrap();
        assert_eq!(value["msg_id"], json!(id.to_string()));
        assert_eq!(value["metadata"], json!({"role": "user"}));
        assert_eq!(stored.decode().unwrap(), message);
    }
}

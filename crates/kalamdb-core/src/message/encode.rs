//! The JSON encoding on the insert path, by hand: [`PreparedMessage`] (a message's JSON but its
//! id, encoded on the request's task) and [`Inserted::write_json`] (the answer). Both write
//! exactly what serde would (the tests hold them to it byte for byte), at a fraction of its cost
//! (`docs/BENCHMARKS.md`).

use serde::Serialize;

use super::{validate_name, Inserted, NewMessage, ValidationError};
use crate::id::MessageId;

impl Inserted {
    /// Appends this answer as JSON, byte for byte what its `Serialize` writes (a test holds the
    /// two together). Every insert answers with it, and serde's route cost five times as much.
    pub fn write_json(&self, out: &mut Vec<u8>) {
        let mut digits = itoa::Buffer::new();
        out.extend_from_slice(br#"{"msg_id":""#);
        out.extend_from_slice(digits.format(self.msg_id.as_u64()).as_bytes());
        out.extend_from_slice(br#"","conversation_id":"#);
        write_json_str(out, &self.conversation_id);
        out.extend_from_slice(br#","timestamp":"#);
        out.extend_from_slice(digits.format(self.timestamp).as_bytes());
        out.push(b'}');
    }

    /// How many bytes [`Inserted::write_json`] appends at most when the conversation id needs no
    /// escapes, to size a buffer: 47 of punctuation and names, up to 20 digits for each number.
    pub fn approximate_json_len(&self) -> usize {
        87 + self.conversation_id.len()
    }
}

/// A new message whose JSON is already encoded, all but the id and timestamp a store gives it.
///
/// Encoding is the largest part of storing a message. Every insert goes through one writer
/// thread ([`crate::StoreHandle`]), so the request's own task prepares its messages and the
/// writer only splices each id in. A prepared message always has valid names
/// ([`validate_name`]): the store relies on that for its keys.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PreparedMessage {
    conversation_id: String,
    /// `","conversation_id":…,"timestamp":` then `,"content":…}`; `split` divides the two. The
    /// id's digits go before the first part, the timestamp's between the two.
    encoded: Vec<u8>,
    split: usize,
}

impl PreparedMessage {
    /// Encodes `new`, after checking its names. It does not check the size limits: that is
    /// [`NewMessage::validate`], which the endpoints run first.
    pub fn new(new: NewMessage) -> Result<Self, ValidationError> {
        validate_name("conversation_id", &new.conversation_id)?;
        validate_name("from", &new.from)?;
        let capacity = new.conversation_id.len() + new.from.len() + new.content.len() + 80;
        let mut encoded = Vec::with_capacity(capacity);
        // The same serializer as `Message::to_json`, field by field in its order, so the bytes
        // are identical (a test holds them to it).
        encoded.extend_from_slice(b"\",\"conversation_id\":");
        write_json_str(&mut encoded, &new.conversation_id);
        encoded.extend_from_slice(b",\"from\":");
        write_json_str(&mut encoded, &new.from);
        encoded.extend_from_slice(b",\"timestamp\":");
        let split = encoded.len();
        encoded.extend_from_slice(b",\"content\":");
        write_json_str(&mut encoded, &new.content);
        encoded.extend_from_slice(b",\"metadata\":");
        write_json(&mut encoded, &new.metadata);
        encoded.push(b'}');
        Ok(Self {
            conversation_id: new.conversation_id,
            encoded,
            split,
        })
    }

    /// The conversation it belongs to.
    pub fn conversation_id(&self) -> &str {
        &self.conversation_id
    }

    /// The length of its JSON once given an id, give or take a few bytes.
    pub fn approximate_json_len(&self) -> usize {
        self.encoded.len() + 48
    }

    /// Appends its canonical JSON as the message `msg_id` (what [`Message::to_json`](super::Message::to_json) gives).
    pub fn write_json(&self, msg_id: MessageId, out: &mut Vec<u8>) {
        let mut digits = itoa::Buffer::new();
        out.extend_from_slice(b"{\"msg_id\":\"");
        out.extend_from_slice(digits.format(msg_id.as_u64()).as_bytes());
        out.extend_from_slice(&self.encoded[..self.split]);
        out.extend_from_slice(digits.format(msg_id.timestamp_ms()).as_bytes());
        out.extend_from_slice(&self.encoded[self.split..]);
    }

    /// Its canonical JSON as the message `msg_id`.
    pub fn to_json(&self, msg_id: MessageId) -> Vec<u8> {
        let mut out = Vec::with_capacity(self.approximate_json_len());
        self.write_json(msg_id, &mut out);
        out
    }
}

/// Appends `value` as a JSON string, escaped exactly as serde_json escapes it (a test holds the
/// two together).
///
/// serde_json looks each byte up in a table; this finds the next byte to escape eight bytes at a
/// time ([`next_escape`]) and copies everything before it at once. Message content rarely holds
/// one, and it is most of what an insert encodes.
fn write_json_str(out: &mut Vec<u8>, value: &str) {
    let bytes = value.as_bytes();
    out.reserve(bytes.len() + 2);
    out.push(b'"');
    let mut start = 0;
    loop {
        let i = next_escape(bytes, start);
        out.extend_from_slice(&bytes[start..i]);
        let Some(&byte) = bytes.get(i) else {
            break;
        };
        match byte {
            b'"' => out.extend_from_slice(b"\\\""),
            b'\\' => out.extend_from_slice(b"\\\\"),
            b'\n' => out.extend_from_slice(b"\\n"),
            b'\r' => out.extend_from_slice(b"\\r"),
            b'\t' => out.extend_from_slice(b"\\t"),
            0x08 => out.extend_from_slice(b"\\b"),
            0x0c => out.extend_from_slice(b"\\f"),
            control => {
                const HEX: &[u8; 16] = b"0123456789abcdef";
                out.extend_from_slice(&[
                    b'\\',
                    b'u',
                    b'0',
                    b'0',
                    HEX[usize::from(control >> 4)],
                    HEX[usize::from(control & 0xf)],
                ]);
            }
        }
        start = i + 1;
    }
    out.push(b'"');
}

/// Whether JSON must escape `byte` inside a string: a control character, `"` or `\`.
fn must_escape(byte: u8) -> bool {
    byte < 0x20 || byte == b'"' || byte == b'\\'
}

/// The index of the first byte at or after `from` that [`must_escape`], or `bytes.len()`.
///
/// Eight bytes at a time: each test below sets the high bit of every byte it matches, and may
/// set it for bytes after a match too (the borrow runs on), never before one. So the lowest bit
/// set, over the three, marks the first byte to escape.
fn next_escape(bytes: &[u8], from: usize) -> usize {
    const ONES: u64 = u64::from_le_bytes([0x01; 8]);
    const HIGHS: u64 = u64::from_le_bytes([0x80; 8]);
    let zero_bytes = |v: u64| v.wrapping_sub(ONES) & !v & HIGHS;
    let mut i = from;
    while let Some(chunk) = bytes.get(i..i + 8) {
        let word = u64::from_le_bytes(chunk.try_into().expect("eight bytes"));
        let found = (word.wrapping_sub(ONES * 0x20) & !word & HIGHS)
            | zero_bytes(word ^ (ONES * u64::from(b'"')))
            | zero_bytes(word ^ (ONES * u64::from(b'\\')));
        if found != 0 {
            return i + (found.trailing_zeros() / 8) as usize;
        }
        i += 8;
    }
    bytes[i..]
        .iter()
        .position(|&b| must_escape(b))
        .map_or(bytes.len(), |at| i + at)
}

/// Appends `value`'s compact JSON to `out`.
fn write_json<T: Serialize + ?Sized>(out: &mut Vec<u8>, value: &T) {
    // Strings and maps of JSON values always serialize, and a Vec never fails a write.
    let _ = serde_json::to_writer(out, value);
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::message::tests::msg;
    use crate::message::Message;
    use proptest::prelude::*;
    use serde_json::Value;

    /// Any JSON value nested a few levels, strings with escapes and non-ASCII included.
    fn json_value() -> impl Strategy<Value = Value> {
        let leaf = prop_oneof![
            Just(Value::Null),
            any::<bool>().prop_map(Value::from),
            any::<i64>().prop_map(Value::from),
            any::<f64>()
                .prop_filter("JSON has no NaN or infinity", |f| f.is_finite())
                .prop_map(Value::from),
            any::<String>().prop_map(Value::from),
        ];
        leaf.prop_recursive(3, 16, 4, |inner| {
            prop_oneof![
                proptest::collection::vec(inner.clone(), 0..4).prop_map(Value::from),
                proptest::collection::btree_map(any::<String>(), inner, 0..4)
                    .prop_map(|m| Value::Object(m.into_iter().collect())),
            ]
        })
    }

    proptest! {
        /// A prepared message's JSON is byte for byte the JSON of the message it becomes: the
        /// store writes the one, the API contract is the other.
        #[test]
        fn prepared_json_is_the_messages_own(
            conversation_id in "[^\\p{Cc}]{1,40}",
            from in "[^\\p{Cc}]{1,40}",
            content in any::<String>(),
            metadata in proptest::collection::btree_map(any::<String>(), json_value(), 0..4),
            raw_id in any::<u64>(),
        ) {
            let new = NewMessage {
                conversation_id,
                from,
                content,
                metadata: metadata.into_iter().collect(),
            };
            let id = MessageId::from_u64(raw_id);
            let prepared = PreparedMessage::new(new.clone()).unwrap();
            prop_assert_eq!(prepared.conversation_id(), new.conversation_id.as_str());
            let json = prepared.to_json(id);
            let expected = Message::from_new(id, new).to_json();
            prop_assert_eq!(String::from_utf8(json).unwrap(), String::from_utf8(expected).unwrap());
        }
    }

    proptest! {
        /// Strings are escaped exactly as serde_json escapes them, whatever they hold.
        #[test]
        fn strings_are_escaped_as_serde_json_escapes_them(
            value in "[\\x00-\\x1f\"\\\\a-z \u{7f}-\u{10ffff}]{0,40}",
        ) {
            let mut out = Vec::new();
            write_json_str(&mut out, &value);
            prop_assert_eq!(String::from_utf8(out).unwrap(), serde_json::to_string(&value).unwrap());
        }

        /// An insert's answer is written exactly as serde_json writes it, and reads back.
        #[test]
        fn answers_are_written_as_serde_json_writes_them(
            id in any::<u64>(),
            conversation_id in "[\\x00-\\x1f\"\\\\a-z \u{7f}-\u{10ffff}]{0,40}",
            timestamp in any::<u64>(),
        ) {
            let inserted = Inserted { msg_id: MessageId::from_u64(id), conversation_id, timestamp };
            let mut out = Vec::new();
            inserted.write_json(&mut out);
            prop_assert_eq!(&out, &serde_json::to_vec(&inserted).unwrap());
            prop_assert_eq!(serde_json::from_slice::<Inserted>(&out).unwrap(), inserted);
        }
    }

    #[test]
    fn an_answer_fits_the_buffer_sized_for_it_without_growing() {
        let inserted = Inserted {
            msg_id: MessageId::from_u64(u64::MAX),
            conversation_id: "room-42".into(),
            timestamp: u64::MAX,
        };
        let mut out = Vec::with_capacity(inserted.approximate_json_len());
        let capacity = out.capacity();
        inserted.write_json(&mut out);
        assert_eq!(
            out.len(),
            inserted.approximate_json_len(),
            "the largest numbers"
        );
        assert_eq!(out.capacity(), capacity, "the buffer grew");
    }

    #[test]
    fn every_escape_matches_serde_json_in_every_position() {
        for byte in 0u8..0x80 {
            for position in 0..40 {
                let mut value = "x".repeat(position);
                value.push(char::from(byte));
                value.push_str("tail");
                let mut out = Vec::new();
                write_json_str(&mut out, &value);
                assert_eq!(
                    String::from_utf8(out).unwrap(),
                    serde_json::to_string(&value).unwrap(),
                    "byte {byte:#04x} at {position}"
                );
            }
        }
    }

    #[test]
    fn preparing_refuses_names_a_store_cannot_key() {
        let e = PreparedMessage::new(msg("a\u{0}b", "alice", "x")).unwrap_err();
        assert_eq!(e.field, "conversation_id");
        let e = PreparedMessage::new(msg("c", "", "x")).unwrap_err();
        assert_eq!(e.field, "from");
    }
}

//! Conversations as records (`../shared/DESIGN.md` §6.1): what a client creates
//! ([`NewConversation`]), changes ([`ConversationPatch`]) and reads back ([`Conversation`]), and
//! the listing by activity ([`ConversationQuery`], [`ConversationPage`], [`ListCursor`]).
//!
//! # The listing and its cursor
//!
//! A listing runs from the most recent activity (`updated_at`) to the least, ties broken by
//! `conversation_id`. Every change to a conversation (a message, a create, a patch) also carries
//! an activity id: the id the store minted for it, so whatever a store writes after a read has a
//! higher one than everything that read saw. A [`ListCursor`] carries the highest activity id
//! the store held when the first page was read (its `horizon`) and the [`ListPosition`] of the
//! last conversation returned. Every later page holds the conversations strictly after that
//! position, where a conversation stands:
//!
//! - at `updated_at`, when its activity id is within the horizon: it has not changed since;
//! - at `created_at` otherwise: it moved to the top after the listing began, so its place where
//!   it was may already have been passed.
//!
//! Positions only ever decrease along a listing, so the cursor never loops. And every
//! conversation that existed when the first page was read is returned at least once: the page
//! that reaches where it stood then either finds it still there, or (it moved) a later page
//! finds it at its `created_at`, which is no higher. A conversation that moved while a client
//! paged can appear a second time, with its new figures; clients key conversations by id.
//! Conversations created after the first page was read may or may not be returned by that
//! listing (the next first page shows them at the top).

use std::cmp::Reverse;
use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Deserializer};
use serde_json::{Map, Value};

use crate::message::{validate_metadata, validate_name, Limits, StoredMessage, ValidationError};

/// The most members one request may name, and the most a conversation's create may hold.
pub const MAX_MEMBERS_PER_REQUEST: usize = 1000;

/// A conversation as a client creates it with `POST /api/v1/conversations`.
#[derive(Debug, Clone, PartialEq, Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub struct NewConversation {
    /// Its id, 1-255 bytes without control characters; the store makes one up when absent.
    #[serde(default)]
    pub conversation_id: Option<String>,
    /// A title, 1-255 bytes without control characters.
    #[serde(default)]
    pub title: Option<String>,
    /// Free-form attributes, a JSON object read as strictly as a message's.
    #[serde(default, deserialize_with = "crate::strict_json::object")]
    pub metadata: Map<String, Value>,
    /// Its first members.
    #[serde(default)]
    pub members: Vec<String>,
}

impl NewConversation {
    /// Checks every field, then sorts the members and drops repeats.
    pub fn validate(&mut self, limits: &Limits) -> Result<(), ValidationError> {
        if let Some(id) = &self.conversation_id {
            validate_name("conversation_id", id)?;
        }
        if let Some(title) = &self.title {
            validate_name("title", title)?;
        }
        validate_metadata(&self.metadata, limits)?;
        if self.members.len() > MAX_MEMBERS_PER_REQUEST {
            return Err(ValidationError::invalid(
                "members",
                format!(
                    "holds {} members, over the limit of {MAX_MEMBERS_PER_REQUEST}; add more with PUT .../members/{{user_id}}",
                    self.members.len()
                ),
            ));
        }
        for member in &self.members {
            validate_name("members", member)?;
        }
        self.members.sort_unstable();
        self.members.dedup();
        Ok(())
    }
}

/// A change to a conversation's title or metadata (`PATCH`): an absent field stays as it is, a
/// field set to `null` is cleared.
#[derive(Debug, Clone, PartialEq, Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub struct ConversationPatch {
    /// `Some(None)` clears the title.
    #[serde(default, deserialize_with = "nullable")]
    pub title: Option<Option<String>>,
    /// `Some(None)` clears the metadata to `{}`.
    #[serde(default, deserialize_with = "nullable_object")]
    pub metadata: Option<Option<Map<String, Value>>>,
}

impl ConversationPatch {
    /// Checks the fields it sets.
    pub fn validate(&self, limits: &Limits) -> Result<(), ValidationError> {
        if let Some(Some(title)) = &self.title {
            validate_name("title", title)?;
        }
        if let Some(Some(metadata)) = &self.metadata {
            validate_metadata(metadata, limits)?;
        }
        Ok(())
    }

    /// Whether it changes nothing (`{}`).
    pub fn is_empty(&self) -> bool {
        self.title.is_none() && self.metadata.is_none()
    }
}

/// A present field, `null` included: `Some(None)` for null, `Some(Some(v))` for a value.
fn nullable<'de, D: Deserializer<'de>, T: Deserialize<'de>>(
    deserializer: D,
) -> Result<Option<Option<T>>, D::Error> {
    Option::<T>::deserialize(deserializer).map(Some)
}

#[derive(Deserialize)]
struct StrictObject(#[serde(deserialize_with = "crate::strict_json::object")] Map<String, Value>);

fn nullable_object<'de, D: Deserializer<'de>>(
    deserializer: D,
) -> Result<Option<Option<Map<String, Value>>>, D::Error> {
    Option::<StrictObject>::deserialize(deserializer).map(|object| Some(object.map(|o| o.0)))
}

/// A conversation as the API returns it.
#[derive(Debug, Clone, PartialEq)]
pub struct Conversation {
    /// Its id.
    pub conversation_id: String,
    /// When it came into being (its first message, or its create), in ms since the Unix epoch.
    pub created_at: u64,
    /// The time of its last message or change of title or metadata.
    pub updated_at: u64,
    /// How many messages it holds, exactly.
    pub message_count: u64,
    /// Its newest message.
    pub last_message: Option<StoredMessage>,
    /// Its title.
    pub title: Option<String>,
    /// Its metadata (`{}` when never set).
    pub metadata: Map<String, Value>,
}

impl Conversation {
    /// Appends the conversation's JSON to `out`, the last message copied in as stored.
    pub fn write_json(&self, out: &mut Vec<u8>) {
        // Strings and maps of JSON values always serialize into a Vec.
        let string = |out: &mut Vec<u8>, s: &str| {
            let _ = serde_json::to_writer(&mut *out, s);
        };
        out.extend_from_slice(b"{\"conversation_id\":");
        string(out, &self.conversation_id);
        for (name, value) in [
            ("created_at", self.created_at),
            ("updated_at", self.updated_at),
            ("message_count", self.message_count),
        ] {
            out.extend_from_slice(b",\"");
            out.extend_from_slice(name.as_bytes());
            out.extend_from_slice(b"\":");
            out.extend_from_slice(itoa::Buffer::new().format(value).as_bytes());
        }
        out.extend_from_slice(b",\"last_message\":");
        match &self.last_message {
            Some(message) => out.extend_from_slice(&message.json),
            None => out.extend_from_slice(b"null"),
        }
        out.extend_from_slice(b",\"title\":");
        match &self.title {
            Some(title) => string(out, title),
            None => out.extend_from_slice(b"null"),
        }
        out.extend_from_slice(b",\"metadata\":");
        let _ = serde_json::to_writer(&mut *out, &self.metadata);
        out.push(b'}');
    }

    /// The conversation's JSON.
    pub fn to_json(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(256);
        self.write_json(&mut out);
        out
    }
}

/// Where a conversation stands in a listing: ordered newest activity first, then by id.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct ListPosition {
    /// The time it stands at (`updated_at`, or `created_at` for one that moved; module docs).
    pub at: Reverse<u64>,
    /// Its id, the tie-break.
    pub conversation_id: String,
}

impl ListPosition {
    /// The position of `conversation_id` at time `at`.
    pub fn new(at: u64, conversation_id: impl Into<String>) -> Self {
        Self {
            at: Reverse(at),
            conversation_id: conversation_id.into(),
        }
    }
}

/// Where a listing goes on from: opaque to clients, `horizon.at.hex(conversation_id)`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ListCursor {
    /// The highest activity id the store held when the first page was read (module docs).
    pub horizon: u64,
    /// The last position returned.
    pub after: ListPosition,
}

impl ListCursor {
    /// Where a conversation whose last change had activity id `activity` stands for a listing
    /// with this `horizon`: at `updated_at`, or at `created_at` when it changed since the first
    /// page (module docs). Without a cursor, pass `u64::MAX`: everything stands at its
    /// `updated_at`.
    pub fn position_of(
        horizon: u64,
        conversation_id: &str,
        created_at: u64,
        updated_at: u64,
        activity: u64,
    ) -> ListPosition {
        let at = if activity > horizon {
            created_at
        } else {
            updated_at
        };
        ListPosition::new(at, conversation_id)
    }
}

impl fmt::Display for ListCursor {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}.{}.", self.horizon, self.after.at.0)?;
        for byte in self.after.conversation_id.as_bytes() {
            write!(f, "{byte:02x}")?;
        }
        Ok(())
    }
}

/// A cursor that is not one this server handed out.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error(
    "cursor is not a cursor this server returned; pass next_cursor from the previous page as is"
)]
pub struct BadCursor;

impl FromStr for ListCursor {
    type Err = BadCursor;

    fn from_str(s: &str) -> Result<Self, BadCursor> {
        let mut parts = s.splitn(3, '.');
        let mut number = || -> Result<u64, BadCursor> {
            let part = parts.next().ok_or(BadCursor)?;
            // At most 19 digits: always below 2^64, and what docs/openapi.yaml states.
            if part.is_empty() || part.len() > 19 || !part.bytes().all(|b| b.is_ascii_digit()) {
                return Err(BadCursor);
            }
            part.parse().map_err(|_| BadCursor)
        };
        let horizon = number()?;
        let at = number()?;
        let hex = parts.next().ok_or(BadCursor)?;
        if hex.len() % 2 != 0 || !hex.bytes().all(|b| b.is_ascii_hexdigit()) {
            return Err(BadCursor);
        }
        let bytes = (0..hex.len())
            .step_by(2)
            .map(|i| u8::from_str_radix(&hex[i..i + 2], 16).map_err(|_| BadCursor))
            .collect::<Result<Vec<u8>, _>>()?;
        // Any bytes make a position: a cursor that was tampered with gives some page, never an
        // error the schema does not foresee.
        let conversation_id = String::from_utf8_lossy(&bytes).into_owned();
        Ok(Self {
            horizon,
            after: ListPosition::new(at, conversation_id),
        })
    }
}

/// One page request over the conversations of the server or of one member.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConversationQuery {
    /// Only conversations this user is a member of.
    pub member: Option<String>,
    /// The most conversations to return.
    pub limit: usize,
    /// Where the previous page ended.
    pub cursor: Option<ListCursor>,
}

/// One page of a listing.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct ConversationPage {
    /// The conversations, most recent activity first.
    pub conversations: Vec<Conversation>,
    /// Whether the listing may go on. A page can hold fewer than the limit, even none, while
    /// this is true: a store stops a page after a bounded amount of work.
    pub has_more: bool,
    /// Where the next page starts, when `has_more`.
    pub next_cursor: Option<ListCursor>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_cursor_round_trips_and_anything_else_is_refused() {
        let cursor = ListCursor {
            horizon: 7_262_413_471_822_004_224,
            after: ListPosition::new(1_764_086_400_000, "conv.é/1"),
        };
        let text = cursor.to_string();
        assert!(text.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'.'));
        assert_eq!(text.parse::<ListCursor>(), Ok(cursor));
        for bad in [
            "",
            "1",
            "1.2",
            "x.2.61",
            "1.2.6",
            "1.2.zz",
            "1.-2.61",
            ".2.61",
            "1.+2.61",
            "12345678901234567890.2.61",
            "1.2.61.62",
        ] {
            assert_eq!(bad.parse::<ListCursor>(), Err(BadCursor), "{bad:?}");
        }
        // What the pattern in docs/openapi.yaml admits parses, whatever the bytes.
        for odd in [
            "1.2.",
            "1.2.00",
            "1.2.ff",
            "0000000000000000001.9999999999999999999.61",
        ] {
            assert!(odd.parse::<ListCursor>().is_ok(), "{odd:?}");
        }
    }

    #[test]
    fn a_conversation_that_moved_after_the_listing_began_stands_where_it_was_created() {
        assert_eq!(
            ListCursor::position_of(1000, "c", 10, 90, 1000),
            ListPosition::new(90, "c")
        );
        assert_eq!(
            ListCursor::position_of(1000, "c", 10, 90, 1001),
            ListPosition::new(10, "c")
        );
        // Newer activity sorts first; equal times by id.
        assert!(ListPosition::new(90, "b") < ListPosition::new(10, "a"));
        assert!(ListPosition::new(10, "a") < ListPosition::new(10, "b"));
    }

    #[test]
    fn a_patch_tells_null_from_absent() {
        let patch: ConversationPatch = serde_json::from_str(r#"{"title":null}"#).unwrap();
        assert_eq!((patch.title, patch.metadata), (Some(None), None));
        let patch: ConversationPatch =
            serde_json::from_str(r#"{"metadata":{"a":1},"title":"T"}"#).unwrap();
        assert_eq!(patch.title, Some(Some("T".into())));
        assert_eq!(patch.metadata.unwrap().unwrap()["a"], 1);
        assert!(serde_json::from_str::<ConversationPatch>(r#"{"metadata":[]}"#).is_err());
        assert!(serde_json::from_str::<ConversationPatch>(r#"{"titel":"x"}"#).is_err());
        assert!(
            serde_json::from_str::<ConversationPatch>(r#"{"metadata":{"a":1,"a":2}}"#).is_err()
        );
    }

    #[test]
    fn a_new_conversation_is_checked_and_its_members_deduplicated() {
        let limits = Limits::default();
        let mut new: NewConversation =
            serde_json::from_str(r#"{"members":["bob","alice","bob"]}"#).unwrap();
        new.validate(&limits).unwrap();
        assert_eq!(new.members, ["alice", "bob"]);
        let mut bad = NewConversation {
            title: Some(String::new()),
            ..Default::default()
        };
        assert_eq!(bad.validate(&limits).unwrap_err().field, "title");
        let mut bad = NewConversation {
            members: vec!["a\nb".into()],
            ..Default::default()
        };
        assert_eq!(bad.validate(&limits).unwrap_err().field, "members");
    }

    #[test]
    fn the_json_embeds_the_last_message_as_stored() {
        let conversation = Conversation {
            conversation_id: "c\"1".into(),
            created_at: 1,
            updated_at: 2,
            message_count: 3,
            last_message: Some(StoredMessage {
                msg_id: crate::MessageId::from_u64(5),
                json: br#"{"msg_id":"5"}"#.to_vec(),
            }),
            title: None,
            metadata: Map::new(),
        };
        let value: Value = serde_json::from_slice(&conversation.to_json()).unwrap();
        assert_eq!(
            value,
            serde_json::json!({"conversation_id": "c\"1", "created_at": 1, "updated_at": 2,
                "message_count": 3, "last_message": {"msg_id": "5"}, "title": null,
                "metadata": {}})
        );
    }
}

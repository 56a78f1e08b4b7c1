//! The [`Store`] contract as one suite of checks, run against every backend (feature
//! `test-util`): `MemStore` in this crate's tests, `RocksStore` in `kalamdb-rocksdb`'s, and the
//! distributed store of `../shared/DESIGN.md` §7 when it comes. A backend's test file calls
//! [`store_conformance!`](crate::store_conformance) with a function that makes a fresh, empty
//! store, and gets one `#[test]` per check.
//!
//! Each check takes such a store and asserts what a client of the contract would notice: ids,
//! pages and their bounds, idempotency records, conversation records and listings, members,
//! edits and deletes, and closing. What only one backend promises (files on disk, upgrades,
//! retention) stays in that backend's own tests.

use std::sync::Arc;

use serde_json::{json, Map, Value};

use crate::conversation::{ConversationPatch, ConversationQuery, NewConversation};
use crate::id::MessageId;
use crate::message::{MessagePatch, NewMessage, PreparedMessage};
use crate::query::{Order, Query};
use crate::store::{IdempotencyKey, Store, StoreError};

/// A fresh, empty store, with whatever must outlive it (a temp dir) beside it.
pub type Fresh = (Arc<dyn Store>, Box<dyn std::any::Any>);

/// Writes one `#[test]` per check of this module, each on a store from `$fresh` (an expression
/// of type `fn() -> Fresh`).
#[macro_export]
macro_rules! store_conformance {
    ($fresh:expr) => {
        $crate::store_conformance!(@cases $fresh;
            ids_increase_in_input_order_and_across_calls,
            a_message_reads_back_by_id_exactly,
            pages_keep_their_bounds_order_and_has_more,
            a_page_never_reads_another_conversation,
            idempotency_records_are_written_with_their_message,
            a_conversation_is_born_with_its_first_message_and_counts_exactly,
            creating_a_taken_id_conflicts_and_patches_change_details,
            members_come_and_go_idempotently,
            listings_put_the_latest_activity_first,
            an_edit_replaces_content_or_metadata_and_stamps_edited_at,
            a_delete_keeps_count_and_last_message_exact,
            a_trim_deletes_the_older_messages_and_says_how_many,
            deleting_a_conversation_takes_everything_of_it,
            a_closed_store_refuses_everything,
        );
    };
    (@cases $fresh:expr; $($case:ident),+ $(,)?) => {
        $(
            #[test]
            fn $case() {
                let (store, _keep) = ($fresh)();
                $crate::conformance::$case(store.as_ref());
            }
        )+
    };
}

fn message(conversation_id: &str, content: &str) -> NewMessage {
    NewMessage {
        conversation_id: conversation_id.into(),
        from: "alice".into(),
        content: content.into(),
        metadata: Map::new(),
    }
}

fn insert(store: &dyn Store, conversation_id: &str, content: &str) -> MessageId {
    store
        .insert(vec![message(conversation_id, content)])
        .unwrap()[0]
        .msg_id
}

fn page(store: &dyn Store, conversation_id: &str, order: Order, limit: usize) -> Vec<String> {
    store
        .query(&Query {
            conversation_id: conversation_id.into(),
            since: None,
            before: None,
            limit,
            order,
        })
        .unwrap()
        .messages
        .iter()
        .map(|m| m.decode().unwrap().content)
        .collect()
}

fn all(store: &dyn Store, conversation_id: &str) -> Vec<String> {
    page(store, conversation_id, Order::Asc, 1000)
}

fn object(value: Value) -> Map<String, Value> {
    value.as_object().cloned().unwrap_or_default()
}

/// Ids increase in input order within one insert, and every insert's ids are above those of
/// every insert that returned before it.
pub fn ids_increase_in_input_order_and_across_calls(store: &dyn Store) {
    let first = store
        .insert((0..5).map(|i| message("c", &i.to_string())).collect())
        .unwrap();
    assert!(first.windows(2).all(|w| w[0].msg_id < w[1].msg_id));
    let second = store.insert(vec![message("d", "x")]).unwrap();
    assert!(second[0].msg_id > first[4].msg_id);
    for answer in first.iter().chain(&second) {
        assert_eq!(answer.timestamp, answer.msg_id.timestamp_ms());
    }
}

/// `get` returns a message's JSON exactly as stored; an unknown id is `None`.
pub fn a_message_reads_back_by_id_exactly(store: &dyn Store) {
    let mut new = message("c", "hello \"world\"");
    new.metadata = object(json!({"role": "user", "n": [1, 2]}));
    let id = store.insert(vec![new.clone()]).unwrap()[0].msg_id;
    let stored = store.get(id).unwrap().unwrap();
    assert_eq!(stored.msg_id, id);
    let message = stored.decode().unwrap();
    assert_eq!(message.content, new.content);
    assert_eq!(message.metadata, new.metadata);
    assert_eq!(message.edited_at, None);
    assert!(store.get(MessageId::from_u64(1)).unwrap().is_none());
}

/// Exclusive bounds, both orders, and `has_more` true exactly when more lies beyond the page.
pub fn pages_keep_their_bounds_order_and_has_more(store: &dyn Store) {
    let ids: Vec<MessageId> = store
        .insert((0..6).map(|i| message("c", &format!("m{i}"))).collect())
        .unwrap()
        .into_iter()
        .map(|i| i.msg_id)
        .collect();
    assert_eq!(page(store, "c", Order::Asc, 2), ["m0", "m1"]);
    assert_eq!(page(store, "c", Order::Desc, 2), ["m5", "m4"]);
    let bounded = store
        .query(&Query {
            conversation_id: "c".into(),
            since: Some(ids[1]),
            before: Some(ids[4]),
            limit: 10,
            order: Order::Asc,
        })
        .unwrap();
    let contents: Vec<_> = bounded
        .messages
        .iter()
        .map(|m| m.decode().unwrap().content)
        .collect();
    assert_eq!(contents, ["m2", "m3"]);
    assert!(!bounded.has_more);
    let exact = store
        .query(&Query {
            conversation_id: "c".into(),
            since: Some(ids[3]),
            before: None,
            limit: 2,
            order: Order::Asc,
        })
        .unwrap();
    assert_eq!(exact.messages.len(), 2);
    assert!(!exact.has_more, "nothing lies beyond m5");
    let more = store
        .query(&Query {
            conversation_id: "c".into(),
            since: Some(ids[2]),
            before: None,
            limit: 2,
            order: Order::Asc,
        })
        .unwrap();
    assert!(more.has_more);
    assert_eq!(more.next_cursor(), Some(ids[4]));
}

/// A conversation whose id extends another's (`a`, `ab`) shares none of its messages.
pub fn a_page_never_reads_another_conversation(store: &dyn Store) {
    insert(store, "a", "in a");
    insert(store, "ab", "in ab");
    insert(store, "b", "in b");
    assert_eq!(all(store, "a"), ["in a"]);
    assert_eq!(all(store, "ab"), ["in ab"]);
    assert!(all(store, "none").is_empty());
}

/// An idempotency record is written with its message and answers with its first answer.
pub fn idempotency_records_are_written_with_their_message(store: &dyn Store) {
    let key = IdempotencyKey {
        key: "turn-1".into(),
        fingerprint: [9; 32],
    };
    let prepared = PreparedMessage::new(message("c", "once")).unwrap();
    let answer = store
        .insert_with_keys(&[prepared], &[(0, key.clone())])
        .unwrap();
    let record = store.idempotency_record("turn-1").unwrap().unwrap();
    assert_eq!(record.fingerprint, key.fingerprint);
    assert_eq!(record.inserted, answer[0]);
    assert!(store.idempotency_record("other").unwrap().is_none());
}

/// A conversation exists from its first message, with an exact count and its newest message.
pub fn a_conversation_is_born_with_its_first_message_and_counts_exactly(store: &dyn Store) {
    assert!(store.conversation("c").unwrap().is_none());
    let first = insert(store, "c", "one");
    store
        .insert(vec![message("c", "two"), message("c", "three")])
        .unwrap();
    let conversation = store.conversation("c").unwrap().unwrap();
    assert_eq!(conversation.message_count, 3);
    assert_eq!(conversation.created_at, first.timestamp_ms());
    let last = conversation.last_message.unwrap().decode().unwrap();
    assert_eq!(last.content, "three");
    assert!(conversation.updated_at >= conversation.created_at);
    assert_eq!(
        (conversation.title, conversation.metadata),
        (None, Map::new())
    );
}

/// Creating an id that exists is a conflict; a patch sets or clears the title and metadata.
pub fn creating_a_taken_id_conflicts_and_patches_change_details(store: &dyn Store) {
    let new = NewConversation {
        conversation_id: Some("trip".into()),
        title: Some("Trip".into()),
        metadata: object(json!({"k": 1})),
        members: vec!["alice".into(), "bob".into()],
    };
    let created = store.create_conversation(&new).unwrap();
    assert_eq!(created.title.as_deref(), Some("Trip"));
    assert_eq!(created.message_count, 0);
    assert!(matches!(
        store.create_conversation(&new),
        Err(StoreError::Conflict(_))
    ));
    let made_up = store
        .create_conversation(&NewConversation::default())
        .unwrap();
    assert!(made_up.conversation_id.starts_with("conv_"));

    let patch = ConversationPatch {
        title: Some(None),
        metadata: Some(Some(object(json!({"k": 2})))),
    };
    let patched = store.update_conversation("trip", &patch).unwrap().unwrap();
    assert_eq!(patched.title, None);
    assert_eq!(patched.metadata, object(json!({"k": 2})));
    assert!(patched.updated_at >= created.updated_at);
    assert!(store.update_conversation("none", &patch).unwrap().is_none());
}

/// Adding or removing a member twice is the same as once; membership says which conversations
/// exist.
pub fn members_come_and_go_idempotently(store: &dyn Store) {
    let new = NewConversation {
        conversation_id: Some("room".into()),
        members: vec!["bob".into()],
        ..NewConversation::default()
    };
    store.create_conversation(&new).unwrap();
    for _ in 0..2 {
        assert!(store.set_member("room", "alice", true).unwrap());
    }
    assert_eq!(store.members("room").unwrap().unwrap(), ["alice", "bob"]);
    assert_eq!(store.is_member("room", "alice").unwrap(), Some(true));
    for _ in 0..2 {
        assert!(store.set_member("room", "bob", false).unwrap());
    }
    assert_eq!(store.members("room").unwrap().unwrap(), ["alice"]);
    assert_eq!(store.is_member("room", "bob").unwrap(), Some(false));
    assert_eq!(store.is_member("none", "bob").unwrap(), None);
    assert!(!store.set_member("none", "bob", true).unwrap());
    assert!(store.members("none").unwrap().is_none());
}

/// The listing puts the conversation with the latest activity first, and a member's holds only
/// theirs.
pub fn listings_put_the_latest_activity_first(store: &dyn Store) {
    let new = NewConversation {
        conversation_id: Some("mine".into()),
        members: vec!["alice".into()],
        ..NewConversation::default()
    };
    store.create_conversation(&new).unwrap();
    insert(store, "other", "x");
    insert(store, "third", "y");
    // Activity a few milliseconds later, so that the order is not a tie.
    std::thread::sleep(std::time::Duration::from_millis(3));
    insert(store, "mine", "z");
    let ids = |member: Option<&str>| -> Vec<String> {
        store
            .list_conversations(&ConversationQuery {
                member: member.map(str::to_owned),
                limit: 10,
                cursor: None,
            })
            .unwrap()
            .conversations
            .into_iter()
            .map(|c| c.conversation_id)
            .collect()
    };
    let everyone = ids(None);
    assert_eq!(everyone.first().map(String::as_str), Some("mine"));
    assert_eq!(everyone.len(), 3);
    assert_eq!(ids(Some("alice")), ["mine"]);
    assert!(ids(Some("nobody")).is_empty());
}

/// An edit replaces the fields given, stamps `edited_at`, and every read sees it.
pub fn an_edit_replaces_content_or_metadata_and_stamps_edited_at(store: &dyn Store) {
    let id = insert(store, "c", "draft");
    let patch = MessagePatch {
        content: Some("final".into()),
        metadata: None,
    };
    let edited = store.update_message(id, &patch).unwrap().unwrap();
    let message = edited.decode().unwrap();
    assert_eq!((message.content.as_str(), message.msg_id), ("final", id));
    assert!(message.edited_at.unwrap() >= message.timestamp);
    assert_eq!(store.get(id).unwrap().unwrap(), edited);
    assert_eq!(all(store, "c"), ["final"]);
    let conversation = store.conversation("c").unwrap().unwrap();
    let last = conversation.last_message.unwrap().decode().unwrap();
    assert_eq!(last.content, "final");
    assert!(conversation.updated_at >= message.edited_at.unwrap());
    let patch = MessagePatch {
        content: None,
        metadata: Some(object(json!({"v": 2}))),
    };
    let edited = store.update_message(id, &patch).unwrap().unwrap();
    assert_eq!(edited.decode().unwrap().content, "final");
    assert!(store
        .update_message(MessageId::from_u64(1), &patch)
        .unwrap()
        .is_none());
}

/// A delete lowers the count and moves the last message to the newest left.
pub fn a_delete_keeps_count_and_last_message_exact(store: &dyn Store) {
    let ids: Vec<_> = (0..3)
        .map(|i| insert(store, "c", &format!("m{i}")))
        .collect();
    assert_eq!(store.delete_message(ids[2]).unwrap().as_deref(), Some("c"));
    assert!(store.delete_message(ids[2]).unwrap().is_none());
    assert!(store.get(ids[2]).unwrap().is_none());
    let conversation = store.conversation("c").unwrap().unwrap();
    assert_eq!(conversation.message_count, 2);
    let last = conversation.last_message.unwrap().decode().unwrap();
    assert_eq!(last.content, "m1");
    store.delete_message(ids[0]).unwrap().unwrap();
    store.delete_message(ids[1]).unwrap().unwrap();
    let conversation = store.conversation("c").unwrap().unwrap();
    assert_eq!(
        (conversation.message_count, conversation.last_message),
        (0, None)
    );

    // A key's record outlives its message: a late retry is answered, nothing comes back.
    let key = IdempotencyKey {
        key: "late".into(),
        fingerprint: [3; 32],
    };
    let prepared = PreparedMessage::new(message("c", "keyed")).unwrap();
    let answer = store.insert_with_keys(&[prepared], &[(0, key)]).unwrap();
    store.delete_message(answer[0].msg_id).unwrap().unwrap();
    let record = store.idempotency_record("late").unwrap().unwrap();
    assert_eq!(record.inserted, answer[0]);
}

/// A trim deletes every older message, says how many, and keeps the rest exact.
pub fn a_trim_deletes_the_older_messages_and_says_how_many(store: &dyn Store) {
    let ids: Vec<_> = (0..5)
        .map(|i| insert(store, "c", &format!("m{i}")))
        .collect();
    insert(store, "other", "kept");
    assert_eq!(store.trim_conversation("c", ids[3]).unwrap(), Some(3));
    assert_eq!(all(store, "c"), ["m3", "m4"]);
    assert_eq!(store.conversation("c").unwrap().unwrap().message_count, 2);
    assert_eq!(store.trim_conversation("c", ids[3]).unwrap(), Some(0));
    assert_eq!(store.trim_conversation("none", ids[3]).unwrap(), None);
    let everything = store
        .trim_conversation("c", MessageId::from_u64(u64::MAX))
        .unwrap();
    assert_eq!(everything, Some(2));
    let conversation = store.conversation("c").unwrap().unwrap();
    assert_eq!(
        (conversation.message_count, conversation.last_message),
        (0, None)
    );
    assert_eq!(all(store, "other"), ["kept"]);
}

/// Deleting a conversation takes its messages, record, members and keys; the id starts afresh.
pub fn deleting_a_conversation_takes_everything_of_it(store: &dyn Store) {
    let new = NewConversation {
        conversation_id: Some("gone".into()),
        members: vec!["alice".into()],
        ..NewConversation::default()
    };
    store.create_conversation(&new).unwrap();
    let key = IdempotencyKey {
        key: "k".into(),
        fingerprint: [1; 32],
    };
    let prepared = PreparedMessage::new(message("gone", "keyed")).unwrap();
    let keyed = store.insert_with_keys(&[prepared], &[(0, key)]).unwrap();
    let kept = insert(store, "kept", "x");
    assert!(store.delete_conversation("gone").unwrap());
    assert!(!store.delete_conversation("gone").unwrap());
    assert!(store.conversation("gone").unwrap().is_none());
    assert!(store.get(keyed[0].msg_id).unwrap().is_none());
    assert!(store.idempotency_record("k").unwrap().is_none());
    assert_eq!(store.is_member("gone", "alice").unwrap(), None);
    assert!(all(store, "gone").is_empty());
    assert!(store.get(kept).unwrap().is_some());
    insert(store, "gone", "new");
    let reborn = store.conversation("gone").unwrap().unwrap();
    assert_eq!(reborn.message_count, 1);
    assert!(store.members("gone").unwrap().unwrap().is_empty());
}

/// After `close`, every operation fails with [`StoreError::Closed`].
pub fn a_closed_store_refuses_everything(store: &dyn Store) {
    let id = insert(store, "c", "x");
    store.close().unwrap();
    assert!(matches!(
        store.insert(vec![message("c", "late")]),
        Err(StoreError::Closed)
    ));
    assert!(matches!(store.get(id), Err(StoreError::Closed)));
    assert!(matches!(store.delete_message(id), Err(StoreError::Closed)));
}

//! `Store::query` against a `BTreeMap` model, over conversations whose ids share prefixes.

use std::collections::BTreeMap;

use kalamdb_core::{MessageId, NewMessage, Order, Query, Store};
use kalamdb_rocksdb::{RocksStore, StoreOptions};
use proptest::prelude::*;

/// Conversation ids chosen so that naive prefix scans would mix them up. (`a\u{1}`, the
/// tightest neighbour of `a`, cannot be stored: control characters are refused.)
const CONVERSATIONS: [&str; 6] = ["a", "a!", "a~x", "ab", "a b", "b"];

fn new_message(conversation_id: &str, content: String) -> NewMessage {
    NewMessage {
        conversation_id: conversation_id.into(),
        from: "p".into(),
        content,
        metadata: Default::default(),
    }
}

/// A query's bound: none, or an id drawn from the stored ones (±1) or an extreme.
#[derive(Debug, Clone)]
enum Bound {
    None,
    Stored(usize, i8),
    Min,
    Max,
}

fn bound() -> impl Strategy<Value = Bound> {
    prop_oneof![
        3 => Just(Bound::None),
        4 => (any::<usize>(), -1i8..=1).prop_map(|(i, d)| Bound::Stored(i, d)),
        1 => Just(Bound::Min),
        1 => Just(Bound::Max),
    ]
}

fn resolve(bound: &Bound, ids: &[MessageId]) -> Option<MessageId> {
    match bound {
        Bound::None => None,
        Bound::Min => Some(MessageId::MIN),
        Bound::Max => Some(MessageId::from_u64(u64::MAX)),
        Bound::Stored(i, delta) => {
            let id = ids.get(i % ids.len().max(1))?.as_u64();
            Some(MessageId::from_u64(
                id.saturating_add_signed(i64::from(*delta)),
            ))
        }
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(24))]

    #[test]
    fn pages_match_the_model(
        batches in proptest::collection::vec((0..CONVERSATIONS.len(), 1usize..6), 1..25),
        queries in proptest::collection::vec(
            (0..CONVERSATIONS.len(), bound(), bound(), 1usize..8, any::<bool>()),
            1..30,
        ),
    ) {
        let dir = tempfile::tempdir().unwrap();
        let mut options = StoreOptions::new(dir.path().join("db"));
        options.sync_writes = false;
        let store = RocksStore::open(&options).unwrap();

        let mut model: BTreeMap<(&str, MessageId), String> = BTreeMap::new();
        let mut ids = Vec::new();
        for (n, (conversation, count)) in batches.into_iter().enumerate() {
            let conversation = CONVERSATIONS[conversation];
            let contents: Vec<String> = (0..count).map(|i| format!("{n}-{i}")).collect();
            let batch = contents.iter().map(|c| new_message(conversation, c.clone())).collect();
            for (inserted, content) in store.insert(batch).unwrap().into_iter().zip(contents) {
                model.insert((conversation, inserted.msg_id), content);
                ids.push(inserted.msg_id);
            }
        }

        for (conversation, since, before, limit, desc) in queries {
            let conversation = CONVERSATIONS[conversation];
            let since = resolve(&since, &ids);
            let before = resolve(&before, &ids);
            let order = if desc { Order::Desc } else { Order::Asc };
            let page = store.query(&Query {
                conversation_id: conversation.into(),
                since,
                before,
                limit,
                order,
            }).unwrap();

            let mut expected: Vec<(MessageId, &String)> = model
                .iter()
                .filter(|((c, id), _)| {
                    *c == conversation
                        && since.is_none_or(|s| *id > s)
                        && before.is_none_or(|b| *id < b)
                })
                .map(|((_, id), content)| (*id, content))
                .collect();
            if desc {
                expected.reverse();
            }
            let has_more = expected.len() > limit;
            expected.truncate(limit);

            let got: Vec<(MessageId, String)> = page
                .messages
                .iter()
                .map(|m| (m.msg_id, m.decode().unwrap().content))
                .collect();
            let expected: Vec<(MessageId, String)> =
                expected.into_iter().map(|(id, c)| (id, c.clone())).collect();
            prop_assert_eq!(&got, &expected);
            prop_assert_eq!(page.has_more, has_more);
            prop_assert_eq!(page.next_cursor(), if has_more { got.last().map(|m| m.0) } else { None });
            for message in &page.messages {
                prop_assert_eq!(message.decode().unwrap().conversation_id, conversation);
            }
        }
    }
}

#[test]
fn a_limit_of_zero_or_an_empty_window_is_an_empty_page() {
    let dir = tempfile::tempdir().unwrap();
    let store = RocksStore::open(&StoreOptions::new(dir.path().join("db"))).unwrap();
    let ids: Vec<_> = store
        .insert((0..3).map(|i| new_message("c", i.to_string())).collect())
        .unwrap()
        .into_iter()
        .map(|i| i.msg_id)
        .collect();
    let query = |since, before, limit| Query {
        conversation_id: "c".into(),
        since,
        before,
        limit,
        order: Order::Asc,
    };
    assert!(store
        .query(&query(None, None, 0))
        .unwrap()
        .messages
        .is_empty());
    // since > before, and since == before, select nothing.
    let page = store.query(&query(Some(ids[2]), Some(ids[0]), 10)).unwrap();
    assert!(page.messages.is_empty() && !page.has_more);
    let page = store.query(&query(Some(ids[1]), Some(ids[1]), 10)).unwrap();
    assert!(page.messages.is_empty());
    let page = store
        .query(&query(Some(MessageId::from_u64(u64::MAX)), None, 10))
        .unwrap();
    assert!(page.messages.is_empty());
    // An exclusive window around the middle message holds exactly it.
    let page = store.query(&query(Some(ids[0]), Some(ids[2]), 10)).unwrap();
    assert_eq!(page.messages.len(), 1);
    assert_eq!(page.messages[0].msg_id, ids[1]);
}

/// Oldest-first pages `since` a message, what a client catching up reads: every `since`,
/// `before` and limit on both sides of how many are left gives the oldest messages after
/// `since`, and `has_more` exactly when some are left.
#[test]
fn oldest_first_pages_since_a_message_are_exact_on_both_sides_of_the_limit() {
    let dir = tempfile::tempdir().unwrap();
    let store = RocksStore::open(&StoreOptions::new(dir.path().join("db"))).unwrap();
    // Neighbours on both sides in key order, so a read that left the range would show.
    for conversation in ["a", "ab"] {
        store
            .insert(vec![new_message(conversation, "neighbour".into())])
            .unwrap();
    }
    let ids: Vec<MessageId> = (0..12)
        .flat_map(|i| {
            store
                .insert(vec![new_message("a!", i.to_string())])
                .unwrap()
        })
        .map(|inserted| inserted.msg_id)
        .collect();
    for since in 0..ids.len() {
        for before in [None, Some(ids.len() - 2)] {
            for limit in 1..=ids.len() + 1 {
                let page = store
                    .query(&Query {
                        conversation_id: "a!".into(),
                        since: Some(ids[since]),
                        before: before.map(|b| ids[b]),
                        limit,
                        order: Order::Asc,
                    })
                    .unwrap();
                let wanted: Vec<MessageId> =
                    ids[since + 1..before.unwrap_or(ids.len()).max(since + 1)].to_vec();
                let got: Vec<MessageId> = page.messages.iter().map(|m| m.msg_id).collect();
                let context = format!("since #{since}, before {before:?}, limit {limit}");
                assert_eq!(got, wanted[..wanted.len().min(limit)], "{context}");
                assert_eq!(page.has_more, wanted.len() > limit, "{context}");
            }
        }
    }
}

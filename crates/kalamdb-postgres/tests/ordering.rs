//! Lock, then mint, on a real PostgreSQL with two stores standing for two servers: writers on
//! both, a cursor poller per conversation, and idempotent retries sent to both.

use std::collections::{BTreeSet, HashMap};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread;

use kalamdb_core::{IdempotencyKey, MessageId, NewMessage, Order, PreparedMessage, Query, Store};
use kalamdb_postgres::testing::TestPostgres;
use kalamdb_postgres::PgStore;

fn message(conversation_id: &str, content: String) -> NewMessage {
    NewMessage {
        conversation_id: conversation_id.into(),
        from: "writer".into(),
        content,
        metadata: Default::default(),
    }
}

/// Everything after `since`, oldest first, a page at a time.
fn poll(store: &dyn Store, conversation_id: &str, since: Option<MessageId>) -> Vec<MessageId> {
    let mut since = since;
    let mut seen = Vec::new();
    loop {
        let page = store
            .query(&Query {
                conversation_id: conversation_id.into(),
                since,
                before: None,
                limit: 100,
                order: Order::Asc,
            })
            .unwrap();
        seen.extend(page.messages.iter().map(|m| m.msg_id));
        since = page.messages.last().map(|m| m.msg_id).or(since);
        if !page.has_more {
            return seen;
        }
    }
}

#[test]
fn pollers_miss_nothing_while_two_servers_write_the_same_conversations() {
    let pg = TestPostgres::shared();
    let options = pg.options();
    let servers: Vec<Arc<PgStore>> = (0..2)
        .map(|_| Arc::new(PgStore::open(&options).unwrap()))
        .collect();
    let conversations = ["a", "b", "c"];
    let acknowledged = Arc::new(Mutex::new(HashMap::<String, Vec<MessageId>>::new()));
    let writing = Arc::new(AtomicBool::new(true));
    let pollers: Vec<_> = conversations
        .iter()
        .enumerate()
        .map(|(i, conversation)| {
            let store = Arc::clone(&servers[i % 2]);
            let writing = Arc::clone(&writing);
            let conversation = conversation.to_string();
            thread::spawn(move || {
                let mut seen: Vec<MessageId> = Vec::new();
                loop {
                    let done = !writing.load(Ordering::SeqCst);
                    let fresh = poll(store.as_ref(), &conversation, seen.last().copied());
                    seen.extend(fresh);
                    if done {
                        return (conversation, seen);
                    }
                }
            })
        })
        .collect();
    let writers: Vec<_> = (0..8)
        .map(|w| {
            let store = Arc::clone(&servers[w % 2]);
            let acknowledged = Arc::clone(&acknowledged);
            thread::spawn(move || {
                for n in 0..60 {
                    let conversation = conversations[(w + n) % conversations.len()];
                    // Every fifth write a batch over two conversations, in either order.
                    let batch = if n % 5 == 0 {
                        let other = conversations[(w + n + 1) % conversations.len()];
                        let (first, second) = if w % 2 == 0 {
                            (conversation, other)
                        } else {
                            (other, conversation)
                        };
                        vec![
                            message(first, format!("{w}-{n}-x")),
                            message(second, format!("{w}-{n}-y")),
                        ]
                    } else {
                        vec![message(conversation, format!("{w}-{n}"))]
                    };
                    let inserted = store.insert(batch).unwrap();
                    let mut acknowledged = acknowledged.lock().unwrap();
                    for answer in inserted {
                        acknowledged
                            .entry(answer.conversation_id)
                            .or_default()
                            .push(answer.msg_id);
                    }
                }
            })
        })
        .collect();
    for writer in writers {
        writer.join().unwrap();
    }
    writing.store(false, Ordering::SeqCst);
    let acknowledged = acknowledged.lock().unwrap();
    for poller in pollers {
        let (conversation, seen) = poller.join().unwrap();
        let unique: BTreeSet<_> = seen.iter().copied().collect();
        assert_eq!(
            unique.len(),
            seen.len(),
            "{conversation}: a message seen twice"
        );
        let expected: BTreeSet<_> = acknowledged[&conversation].iter().copied().collect();
        let missed = expected.difference(&unique).count();
        assert_eq!(
            missed,
            0,
            "{conversation}: the poller missed {missed} of {}",
            expected.len()
        );
        assert_eq!(unique, expected);
        // Both servers' node ids are among them: the conversation really was shared.
        let nodes: BTreeSet<_> = seen.iter().map(|id| id.node_id()).collect();
        assert_eq!(nodes.len(), 2, "{conversation}: {nodes:?}");
        let record = servers[0].conversation(&conversation).unwrap().unwrap();
        assert_eq!(record.message_count, expected.len() as u64);
        assert_eq!(
            record.last_message.unwrap().msg_id,
            *expected.iter().next_back().unwrap()
        );
    }
}

#[test]
fn a_key_retried_on_two_servers_at_once_stores_once() {
    let pg = TestPostgres::shared();
    let options = pg.options();
    let servers: Vec<Arc<PgStore>> = (0..2)
        .map(|_| Arc::new(PgStore::open(&options).unwrap()))
        .collect();
    for round in 0..20 {
        let key = IdempotencyKey {
            key: format!("retry-{round}"),
            fingerprint: [7; 32],
        };
        let barrier = Arc::new(std::sync::Barrier::new(4));
        let answers: Vec<_> = (0..4)
            .map(|i| {
                let store = Arc::clone(&servers[i % 2]);
                let key = key.clone();
                let barrier = Arc::clone(&barrier);
                thread::spawn(move || {
                    let prepared = PreparedMessage::new(message("k", "once".to_string())).unwrap();
                    barrier.wait();
                    store.insert_ordered(&[prepared], &[(0, key)]).unwrap()
                })
            })
            .collect();
        let answers: Vec<_> = answers.into_iter().map(|t| t.join().unwrap()).collect();
        let ids: BTreeSet<_> = answers.iter().map(|a| a.inserted[0].msg_id).collect();
        assert_eq!(
            ids.len(),
            1,
            "round {round}: every retry got the one answer"
        );
        assert_eq!(answers.iter().filter(|a| !a.replayed).count(), 1);
        // A different request under the same key conflicts.
        let other = PreparedMessage::new(message("k", "other".to_string())).unwrap();
        let conflict = servers[1].insert_ordered(
            &[other],
            &[(
                0,
                IdempotencyKey {
                    key: key.key.clone(),
                    fingerprint: [8; 32],
                },
            )],
        );
        assert!(conflict.is_err());
    }
    let stored = poll(servers[0].as_ref(), "k", None);
    assert_eq!(stored.len(), 20);
}

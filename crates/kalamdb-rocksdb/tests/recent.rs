//! The recent cache (`storage.recent_cache_mb`): every page it answers is the page RocksDB
//! holds, through inserts, edits, deletes, trims and conversation deletes, and under a writer
//! racing the readers.

use std::sync::atomic::{AtomicBool, Ordering as AtomicOrdering};
use std::sync::Arc;

use kalamdb_core::{MessageId, MessagePatch, NewMessage, Order, Page, Query, Store};
use kalamdb_rocksdb::{RocksStore, StoreOptions};
use proptest::prelude::*;
use proptest::test_runner::{Config, TestRunner};

const CONVERSATIONS: [&str; 3] = ["a", "ab", "b"];

fn new_message(conversation_id: &str, content: String) -> NewMessage {
    NewMessage {
        conversation_id: conversation_id.into(),
        from: "p".into(),
        content,
        metadata: Default::default(),
    }
}

fn open(dir: &std::path::Path, per_conversation: usize, budget: usize) -> RocksStore {
    let mut options = StoreOptions::new(dir.join("db"));
    options.sync_writes = false;
    options.recent_per_conversation = per_conversation;
    options.recent_cache_bytes = budget;
    RocksStore::open(&options).unwrap()
}

fn query(conversation: &str, since: Option<MessageId>, before: Option<MessageId>) -> Query {
    Query {
        conversation_id: conversation.into(),
        since,
        before,
        limit: 50,
        order: Order::Desc,
    }
}

#[derive(Debug, Clone)]
enum Op {
    Insert(usize, usize),
    Edit(usize),
    Delete(usize),
    Trim(usize, usize),
    DeleteConversation(usize),
    /// Conversation, since and before (an index into the ids seen, and a step of -1..=1),
    /// limit, newest first.
    Query(usize, Option<(usize, i8)>, Option<(usize, i8)>, usize, bool),
}

fn op() -> impl Strategy<Value = Op> {
    let n = CONVERSATIONS.len();
    let bound = proptest::option::of((any::<usize>(), -1i8..=1));
    prop_oneof![
        6 => (0..n, 1usize..4).prop_map(|(c, k)| Op::Insert(c, k)),
        1 => any::<usize>().prop_map(Op::Edit),
        1 => any::<usize>().prop_map(Op::Delete),
        1 => (0..n, any::<usize>()).prop_map(|(c, i)| Op::Trim(c, i)),
        1 => (0..n).prop_map(Op::DeleteConversation),
        12 => (0..n, bound.clone(), bound, 1usize..9, any::<bool>())
            .prop_map(|(c, s, b, l, d)| Op::Query(c, s, b, l, d)),
    ]
}

fn resolve(bound: Option<(usize, i8)>, ids: &[MessageId]) -> Option<MessageId> {
    let (i, step) = bound?;
    let id = ids.get(i % ids.len().max(1))?.as_u64();
    Some(MessageId::from_u64(
        id.saturating_add_signed(i64::from(step)),
    ))
}

/// Runs `ops` against a store whose cache keeps `per_conversation` messages a conversation;
/// every query's answer (through the cache, and from memory alone when it answers) must be
/// RocksDB's. Returns how many queries were answered from memory.
fn run(ops: &[Op], per_conversation: usize) -> Result<usize, TestCaseError> {
    let dir = tempfile::tempdir().unwrap();
    let store = open(dir.path(), per_conversation, 1 << 20);
    let mut ids: Vec<MessageId> = Vec::new();
    let mut hits = 0;
    for (step, op) in ops.iter().enumerate() {
        match *op {
            Op::Insert(c, count) => {
                let batch = (0..count)
                    .map(|i| new_message(CONVERSATIONS[c], format!("{step}-{i}")))
                    .collect();
                ids.extend(store.insert(batch).unwrap().iter().map(|m| m.msg_id));
            }
            Op::Edit(i) if !ids.is_empty() => {
                let patch = MessagePatch {
                    content: Some(format!("edited at {step}")),
                    metadata: None,
                };
                store.update_message(ids[i % ids.len()], &patch).unwrap();
            }
            Op::Delete(i) if !ids.is_empty() => {
                store.delete_message(ids[i % ids.len()]).unwrap();
            }
            Op::Trim(c, i) if !ids.is_empty() => {
                store
                    .trim_conversation(CONVERSATIONS[c], ids[i % ids.len()])
                    .unwrap();
            }
            Op::DeleteConversation(c) => {
                store.delete_conversation(CONVERSATIONS[c]).unwrap();
            }
            Op::Query(c, since, before, limit, desc) => {
                let query = Query {
                    conversation_id: CONVERSATIONS[c].into(),
                    since: resolve(since, &ids),
                    before: resolve(before, &ids),
                    limit,
                    order: if desc { Order::Desc } else { Order::Asc },
                };
                let disk = store.query_from_disk(&query).unwrap();
                if let Some(memory) = store.query_in_memory(&query) {
                    prop_assert_eq!(&memory.unwrap(), &disk, "from memory, step {}", step);
                    hits += 1;
                }
                let answered = store.query(&query).unwrap();
                prop_assert_eq!(&answered, &disk, "query, step {}", step);
            }
            _ => {}
        }
    }
    Ok(hits)
}

/// The cache's answers against RocksDB's over random histories, with entries of 4 messages
/// (so pages run past them, and appends push the oldest out) and of 101 (the default).
#[test]
fn every_page_from_memory_is_the_page_on_disk() {
    for per_conversation in [4, 101] {
        let mut runner = TestRunner::new(Config {
            cases: 48,
            ..Config::default()
        });
        let hits = std::cell::Cell::new(0);
        runner
            .run(&proptest::collection::vec(op(), 1..60), |ops| {
                hits.set(hits.get() + run(&ops, per_conversation)?);
                Ok(())
            })
            .unwrap();
        // Not a vacuous pass: the histories do reach pages the cache answers.
        assert!(hits.get() > 100, "{} pages from memory", hits.get());
    }
}

/// The latest page, the page before it, and a poller's catch-up: what a chat client reads.
#[test]
fn the_reads_of_a_chat_client_are_answered_from_memory_and_kept_current() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(dir.path(), 101, 32 << 20);
    let mut ids = Vec::new();
    for i in 0..120 {
        ids.push(
            store
                .insert(vec![new_message("c", format!("m{i}"))])
                .unwrap()[0]
                .msg_id,
        );
    }
    let latest = query("c", None, None);
    // The first read goes to RocksDB and fills the entry; the next is answered from memory.
    assert!(store.query_in_memory(&latest).is_none());
    let page = store.query(&latest).unwrap();
    assert_eq!(page.messages[0].msg_id, ids[119]);
    assert_eq!(store.query_in_memory(&latest).unwrap().unwrap(), page);

    // A new message joins it at once.
    let new = store.insert(vec![new_message("c", "new".into())]).unwrap()[0].msg_id;
    let page = store.query_in_memory(&latest).unwrap().unwrap();
    assert_eq!(page.messages[0].msg_id, new);
    assert_eq!(page, store.query_from_disk(&latest).unwrap());
    // A poller since the message before it.
    let poll = Query {
        order: Order::Asc,
        ..query("c", Some(ids[119]), None)
    };
    let page = store.query_in_memory(&poll).unwrap().unwrap();
    assert_eq!(page.messages.len(), 1);
    assert_eq!(page.messages[0].msg_id, new);
    // Within what the first read brought in (the newest 50, then the new one), a page before
    // a message is answered too; one reaching past it is read from RocksDB.
    let before = Query {
        limit: 20,
        ..query("c", None, Some(ids[100]))
    };
    let page = store.query_in_memory(&before).unwrap().unwrap();
    assert_eq!(page, store.query_from_disk(&before).unwrap());
    assert_eq!(page.messages.len(), 20);
    let past = query("c", None, Some(ids[80]));
    assert!(store.query_in_memory(&past).is_none());
    assert_eq!(store.query(&past).unwrap().messages.len(), 50);

    // An edit, and a delete, are never answered with the old message.
    let patch = MessagePatch {
        content: Some("changed".into()),
        metadata: None,
    };
    store.update_message(new, &patch).unwrap();
    let page = store.query(&latest).unwrap();
    assert_eq!(page.messages[0].decode().unwrap().content, "changed");
    store.delete_message(new).unwrap();
    assert_eq!(store.query(&latest).unwrap().messages[0].msg_id, ids[119]);
    store.delete_conversation("c").unwrap();
    assert_eq!(store.query(&latest).unwrap(), Page::default());
    assert_eq!(store.query_in_memory(&latest).map(Result::unwrap), None);
}

#[test]
fn a_budget_of_zero_answers_nothing_from_memory() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(dir.path(), 101, 0);
    store.insert(vec![new_message("c", "m".into())]).unwrap();
    let latest = query("c", None, None);
    assert_eq!(store.query(&latest).unwrap().messages.len(), 1);
    assert!(store.query_in_memory(&latest).is_none());
}

#[test]
fn a_closed_store_answers_nothing_from_memory() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(dir.path(), 101, 1 << 20);
    store.insert(vec![new_message("c", "m".into())]).unwrap();
    let latest = query("c", None, None);
    store.query(&latest).unwrap();
    assert!(store.query_in_memory(&latest).is_some());
    store.close().unwrap();
    assert!(matches!(
        store.query_in_memory(&latest),
        Some(Err(kalamdb_core::StoreError::Closed))
    ));
}

/// One writer inserting while readers poll with `since` and read the latest page, all through
/// the cache: no poller skips or repeats a message, and every latest page is a run of
/// consecutive messages ending at one the writer had stored.
#[test]
fn readers_racing_a_writer_never_skip_a_message() {
    let dir = tempfile::tempdir().unwrap();
    let store = Arc::new(open(dir.path(), 101, 1 << 20));
    let done = Arc::new(AtomicBool::new(false));
    let readers: Vec<_> = (0..3)
        .map(|_| {
            let (store, done) = (Arc::clone(&store), Arc::clone(&done));
            std::thread::spawn(move || {
                let (mut seen, mut pages) = (Vec::new(), Vec::new());
                loop {
                    let finished = done.load(AtomicOrdering::Acquire);
                    let poll = Query {
                        order: Order::Asc,
                        ..query("c", seen.last().copied(), None)
                    };
                    let page = store.query(&poll).unwrap();
                    seen.extend(page.messages.iter().map(|m| m.msg_id));
                    let latest = store.query(&query("c", None, None)).unwrap();
                    pages.push(latest.messages.iter().map(|m| m.msg_id).collect::<Vec<_>>());
                    if finished && !page.has_more && page.messages.is_empty() {
                        return (seen, pages);
                    }
                }
            })
        })
        .collect();
    let mut written = Vec::new();
    for i in 0..600 {
        let batch = (0..1 + i % 3)
            .map(|j| new_message("c", format!("{i}-{j}")))
            .collect();
        written.extend(store.insert(batch).unwrap().iter().map(|m| m.msg_id));
    }
    done.store(true, AtomicOrdering::Release);
    for reader in readers {
        let (seen, pages) = reader.join().unwrap();
        assert_eq!(seen, written);
        for page in pages {
            let Some(&newest) = page.first() else {
                continue;
            };
            let at = written.iter().position(|id| *id == newest).unwrap();
            let expected: Vec<_> = written[..=at].iter().rev().take(50).copied().collect();
            assert_eq!(page, expected);
        }
    }
}

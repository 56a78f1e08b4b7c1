//! Edits, deletes, trims, retention and erasure on a real RocksDB: the records stay exact, and
//! deleted bytes leave every file of the data directory.

use std::path::Path;
use std::time::Duration;

use kalamdb_core::{
    ConversationQuery, IdempotencyKey, MessageId, MessagePatch, NewConversation, NewMessage, Order,
    PreparedMessage, Query, Store,
};
mod common;

use kalamdb_rocksdb::keys;
use kalamdb_rocksdb::{Compression, RocksStore, StoreOptions, CHUNK};
use serde_json::json;

fn message(conversation_id: &str, content: &str) -> NewMessage {
    NewMessage {
        conversation_id: conversation_id.into(),
        from: "alice".into(),
        content: content.into(),
        metadata: Default::default(),
    }
}

/// Uncompressed, so a test can find a value's bytes in the files.
fn options(dir: &Path) -> StoreOptions {
    let mut options = StoreOptions::new(dir.join("db"));
    options.compression = Compression::None;
    options
}

fn open(dir: &Path) -> RocksStore {
    RocksStore::open(&options(dir)).expect("open")
}

fn insert(store: &RocksStore, conversation_id: &str, content: &str) -> MessageId {
    store
        .insert(vec![message(conversation_id, content)])
        .unwrap()[0]
        .msg_id
}

fn contents(store: &RocksStore, conversation_id: &str) -> Vec<String> {
    let page = store
        .query(&Query {
            conversation_id: conversation_id.into(),
            since: None,
            before: None,
            limit: 1000,
            order: Order::Asc,
        })
        .unwrap();
    page.messages
        .iter()
        .map(|m| m.decode().unwrap().content)
        .collect()
}

fn count(store: &RocksStore, conversation_id: &str) -> u64 {
    store
        .conversation(conversation_id)
        .unwrap()
        .unwrap()
        .message_count
}

fn last_content(store: &RocksStore, conversation_id: &str) -> Option<String> {
    store
        .conversation(conversation_id)
        .unwrap()
        .unwrap()
        .last_message
        .map(|m| m.decode().unwrap().content)
}

/// The files of `dir`, recursively, that hold `token`.
fn files_holding(dir: &Path, token: &str) -> Vec<String> {
    let mut found = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(path) = stack.pop() {
        for entry in std::fs::read_dir(&path).unwrap() {
            let path = entry.unwrap().path();
            if path.is_dir() {
                stack.push(path);
            } else if let Ok(bytes) = std::fs::read(&path) {
                // As is, and as the hex RocksDB's logs write keys in.
                let hex: String = token.bytes().map(|b| format!("{b:02X}")).collect();
                let holds = |needle: &[u8]| bytes.windows(needle.len()).any(|w| w == needle);
                if holds(token.as_bytes()) || holds(hex.as_bytes()) {
                    found.push(path.display().to_string());
                }
            }
        }
    }
    found
}

#[test]
fn an_edit_replaces_content_and_metadata_stamps_edited_at_and_moves_updated_at() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(dir.path());
    let first = insert(&store, "c", "first");
    let second = insert(&store, "c", "second");
    let before = store.conversation("c").unwrap().unwrap().updated_at;

    let patch = MessagePatch {
        content: Some("second, fixed".into()),
        metadata: Some(json!({"edited": true}).as_object().unwrap().clone()),
    };
    let edited = store.update_message(second, &patch).unwrap().unwrap();
    let decoded = edited.decode().unwrap();
    assert_eq!(decoded.content, "second, fixed");
    assert_eq!(decoded.metadata["edited"], true);
    assert_eq!(decoded.from, "alice");
    assert_eq!(decoded.msg_id, second);
    let edited_at = decoded.edited_at.expect("edited_at is set");
    assert!(edited_at >= decoded.timestamp);

    // Every read sees the edit: by id, in pages, as the last message.
    assert_eq!(store.get(second).unwrap().unwrap().json, edited.json);
    assert_eq!(contents(&store, "c"), ["first", "second, fixed"]);
    assert_eq!(last_content(&store, "c").as_deref(), Some("second, fixed"));
    let conversation = store.conversation("c").unwrap().unwrap();
    assert_eq!(conversation.message_count, 2);
    assert!(conversation.updated_at >= before.max(edited_at));

    // Only the fields given change.
    let patch = MessagePatch {
        content: Some("first, fixed".into()),
        metadata: None,
    };
    let edited = store.update_message(first, &patch).unwrap().unwrap();
    assert!(edited.decode().unwrap().metadata.is_empty());
    assert!(store
        .update_message(MessageId::from_u64(12345), &patch)
        .unwrap()
        .is_none());
}

#[test]
fn deleting_a_message_keeps_the_count_and_last_message_exact() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(dir.path());
    let ids: Vec<_> = (0..4)
        .map(|i| insert(&store, "c", &format!("m{i}")))
        .collect();
    insert(&store, "other", "untouched");

    assert_eq!(store.delete_message(ids[1]).unwrap().as_deref(), Some("c"));
    assert_eq!(contents(&store, "c"), ["m0", "m2", "m3"]);
    assert_eq!(count(&store, "c"), 3);
    assert!(store.get(ids[1]).unwrap().is_none());
    // Twice is a miss.
    assert!(store.delete_message(ids[1]).unwrap().is_none());

    // The newest goes: the one before it becomes the last message.
    store.delete_message(ids[3]).unwrap().unwrap();
    assert_eq!(last_content(&store, "c").as_deref(), Some("m2"));
    assert_eq!(count(&store, "c"), 2);
    store.delete_message(ids[2]).unwrap().unwrap();
    store.delete_message(ids[0]).unwrap().unwrap();
    let empty = store.conversation("c").unwrap().unwrap();
    assert_eq!((empty.message_count, empty.last_message), (0, None));
    // The conversation stays, listed; its neighbour is whole.
    let listed = store
        .list_conversations(&ConversationQuery {
            member: None,
            limit: 10,
            cursor: None,
        })
        .unwrap();
    assert_eq!(listed.conversations.len(), 2);
    assert_eq!(contents(&store, "other"), ["untouched"]);

    // A restart reads back the same, and mints ids above the deleted newest one.
    drop(store);
    let store = open(dir.path());
    assert_eq!(count(&store, "c"), 0);
    assert!(insert(&store, "c", "after") > ids[3]);
}

#[test]
fn a_trim_deletes_everything_older_and_counts_it_also_in_a_busy_conversation() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(dir.path());
    // Written back to back: the conversation is busy, its stored state trails (deferred).
    let ids: Vec<_> = (0..100)
        .map(|i| insert(&store, "c", &format!("m{i}")))
        .collect();
    assert_eq!(count(&store, "c"), 100);
    assert_eq!(store.trim_conversation("c", ids[40]).unwrap(), Some(40));
    assert_eq!(count(&store, "c"), 60);
    assert_eq!(
        contents(&store, "c").first().map(String::as_str),
        Some("m40")
    );
    // Nothing older is left: the same trim deletes nothing.
    assert_eq!(store.trim_conversation("c", ids[40]).unwrap(), Some(0));
    assert_eq!(store.trim_conversation("missing", ids[40]).unwrap(), None);

    // More writes after the trim are counted on top of the exact figure.
    insert(&store, "c", "more");
    assert_eq!(count(&store, "c"), 61);
    assert_eq!(last_content(&store, "c").as_deref(), Some("more"));

    // Everything.
    let all = store
        .trim_conversation("c", MessageId::from_u64(u64::MAX))
        .unwrap();
    assert_eq!(all, Some(61));
    let empty = store.conversation("c").unwrap().unwrap();
    assert_eq!((empty.message_count, empty.last_message), (0, None));
}

#[test]
fn a_trim_past_one_chunk_leaves_its_index_entries_to_the_eraser_and_reads_stay_exact() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(dir.path());
    let total = CHUNK * 2 + 100;
    let mut ids = Vec::new();
    for start in (0..total).step_by(1000) {
        let batch = (start..(start + 1000).min(total))
            .map(|i| message("big", &format!("m{i}")))
            .collect();
        ids.extend(store.insert(batch).unwrap().into_iter().map(|i| i.msg_id));
    }
    insert(&store, "small", "kept");
    let cut = CHUNK * 2;
    assert_eq!(
        store.trim_conversation("big", ids[cut]).unwrap(),
        Some(cut as u64)
    );
    assert_eq!(count(&store, "big"), 100);
    // Reads skip an index entry whose message is gone, before the eraser drops it.
    assert!(store.get(ids[0]).unwrap().is_none());
    assert!(store.get(ids[cut]).unwrap().is_some());
    assert!(store.index_entries().unwrap() > 101);

    assert_eq!(store.erase_now().unwrap(), 1);
    assert_eq!(store.index_entries().unwrap(), 101);
    assert_eq!(store.erase_now().unwrap(), 0, "the queue is empty");
}

#[test]
fn deleting_a_conversation_takes_everything_of_it_and_nothing_else() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(dir.path());
    store
        .create_conversation(&NewConversation {
            conversation_id: Some("gone".into()),
            title: Some("Trip".into()),
            members: vec!["alice".into(), "bob".into()],
            ..NewConversation::default()
        })
        .unwrap();
    let key = IdempotencyKey {
        key: "retry-1".into(),
        fingerprint: [7; 32],
    };
    let prepared = PreparedMessage::new(message("gone", "keyed")).unwrap();
    let keyed = store
        .insert_with_keys(&[prepared], &[(0, key.clone())])
        .unwrap();
    let old = insert(&store, "gone", "hello");
    let neighbour = insert(&store, "kept", "neighbour");

    assert!(store.delete_conversation("gone").unwrap());
    assert!(!store.delete_conversation("gone").unwrap());
    assert!(store.conversation("gone").unwrap().is_none());
    assert!(store.members("gone").unwrap().is_none());
    assert!(store.get(old).unwrap().is_none());
    assert!(store.get(keyed[0].msg_id).unwrap().is_none());
    assert!(contents(&store, "gone").is_empty());
    assert!(store.idempotency_record("retry-1").unwrap().is_none());
    for member in [None, Some("alice"), Some("bob")] {
        let page = store
            .list_conversations(&ConversationQuery {
                member: member.map(str::to_owned),
                limit: 10,
                cursor: None,
            })
            .unwrap();
        let ids: Vec<_> = page
            .conversations
            .iter()
            .map(|c| c.conversation_id.as_str())
            .collect();
        assert!(!ids.contains(&"gone"), "{member:?}: {ids:?}");
    }
    assert!(store.get(neighbour).unwrap().is_some());

    // The same id starts a new conversation: nothing old comes back.
    insert(&store, "gone", "new life");
    assert_eq!(contents(&store, "gone"), ["new life"]);
    assert_eq!(count(&store, "gone"), 1);
    assert!(store.members("gone").unwrap().unwrap().is_empty());
    assert_eq!(store.erase_now().unwrap(), 1);
    assert_eq!(contents(&store, "gone"), ["new life"]);
    assert_eq!(contents(&store, "kept"), ["neighbour"]);
    assert!(store.idempotency_record("retry-1").unwrap().is_none());
}

#[test]
fn a_deleted_messages_idempotency_key_still_answers_with_its_first_answer() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(dir.path());
    let key = IdempotencyKey {
        key: "k".into(),
        fingerprint: [1; 32],
    };
    let prepared = PreparedMessage::new(message("c", "once")).unwrap();
    let first = store.insert_with_keys(&[prepared], &[(0, key)]).unwrap();
    store.delete_message(first[0].msg_id).unwrap().unwrap();
    store
        .trim_conversation("c", MessageId::from_u64(u64::MAX))
        .unwrap();
    let record = store.idempotency_record("k").unwrap().unwrap();
    assert_eq!(record.inserted, first[0]);
}

/// Unique tokens written where a delete, a trim, an edit and a conversation delete must erase
/// them, and one where nothing may; after the eraser's round no file holds the first ones.
#[test]
fn erased_bytes_leave_every_file_and_neighbours_stay() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(dir.path());
    let tokens = [
        "tok-deleted-7f3a",
        "tok-trimmed-91c2",
        "tok-edited-44b0",
        "tok-convdel-e815",
    ];
    let deleted = insert(&store, "c1", tokens[0]);
    insert(&store, "c2", tokens[1]);
    let cut = insert(&store, "c2", "stays-in-c2");
    let edited = insert(&store, "c3", tokens[2]);
    let mut in_conv = message("tok-conv-id-5d21", tokens[3]);
    in_conv.metadata = json!({"note": "tok-meta-0a9e"})
        .as_object()
        .unwrap()
        .clone();
    store.insert(vec![in_conv]).unwrap();
    insert(&store, "neighbour", "tok-neighbour-b6d4");
    // Some of it in table files, some only in the WAL.
    store.flush().unwrap();
    insert(&store, "neighbour", "tok-neighbour-late-c3e7");

    store.delete_message(deleted).unwrap().unwrap();
    store.trim_conversation("c2", cut).unwrap().unwrap();
    let patch = MessagePatch {
        content: Some("clean".into()),
        metadata: None,
    };
    store.update_message(edited, &patch).unwrap().unwrap();
    assert!(store.delete_conversation("tok-conv-id-5d21").unwrap());
    let db = dir.path().join("db");
    assert!(
        !files_holding(&db, tokens[0]).is_empty(),
        "the test can see bytes"
    );

    assert_eq!(store.erase_now().unwrap(), 4);
    for token in tokens.iter().chain(&["tok-conv-id-5d21", "tok-meta-0a9e"]) {
        assert_eq!(files_holding(&db, token), Vec::<String>::new(), "{token}");
    }
    assert_eq!(contents(&store, "neighbour").len(), 2);
    assert_eq!(contents(&store, "c2"), ["stays-in-c2"]);
    store.flush().unwrap();
    assert!(!files_holding(&db, "tok-neighbour-b6d4").is_empty());
    assert!(!files_holding(&db, "stays-in-c2").is_empty());

    // Nothing comes back after a restart.
    drop(store);
    let store = open(dir.path());
    assert!(store.get(deleted).unwrap().is_none());
    assert_eq!(contents(&store, "c2"), ["stays-in-c2"]);
    assert!(store.conversation("tok-conv-id-5d21").unwrap().is_none());
    for token in tokens {
        assert_eq!(files_holding(&db, token), Vec::<String>::new(), "{token}");
    }
}

/// A delete whose store closes before the eraser ran is erased after the next open: the queue
/// is on disk.
#[test]
fn the_erase_queue_survives_a_restart() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("db");
    {
        let store = open(dir.path());
        let id = insert(&store, "c", "tok-restart-2b9d");
        store.flush().unwrap();
        store.delete_message(id).unwrap().unwrap();
    }
    assert!(!files_holding(&db, "tok-restart-2b9d").is_empty());
    let store = open(dir.path());
    assert_eq!(store.erase_now().unwrap(), 1);
    assert_eq!(files_holding(&db, "tok-restart-2b9d"), Vec::<String>::new());
}

#[test]
fn retention_hides_old_messages_at_once_and_the_sweep_erases_them() {
    let dir = tempfile::tempdir().unwrap();
    let mut options = options(dir.path());
    options.retention = Some(Duration::from_secs(1));
    let store = RocksStore::open(&options).unwrap();
    let old = insert(&store, "c", "tok-old-1e44");
    insert(&store, "gone-whole", "tok-old-2f55");
    // Retention counts in whole milliseconds of the ids' time: wait until these are past it.
    std::thread::sleep(Duration::from_millis(1_100));
    insert(&store, "c", "fresh");

    assert!(store.get(old).unwrap().is_none());
    assert_eq!(contents(&store, "c"), ["fresh"]);
    assert_eq!(count(&store, "c"), 1);
    let whole = store.conversation("gone-whole").unwrap().unwrap();
    assert_eq!((whole.message_count, whole.last_message), (0, None));

    assert_eq!(store.expire_now().unwrap(), 2);
    assert_eq!(count(&store, "c"), 1);
    assert_eq!(last_content(&store, "c").as_deref(), Some("fresh"));
    store.erase_now().unwrap();
    let db = dir.path().join("db");
    for token in ["tok-old-1e44", "tok-old-2f55"] {
        assert_eq!(files_holding(&db, token), Vec::<String>::new(), "{token}");
    }
}

/// A store of format 5 (before deletes) opens as it is and is marked 6, which a format-5 build
/// refuses: it would read a deleted message's dangling index entry as corruption.
#[test]
fn a_format_5_store_opens_as_it_is_and_is_marked_6() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("db");
    let id = {
        let store = open(dir.path());
        insert(&store, "c", "kept")
    };
    {
        let db = rocksdb::DB::open_cf(&rocksdb::Options::default(), &path, keys::COLUMN_FAMILIES)
            .unwrap();
        let meta = db.cf_handle(keys::CF_META).unwrap();
        db.put_cf(meta, keys::META_FORMAT_VERSION, 5u32.to_be_bytes())
            .unwrap();
    }
    let store = open(dir.path());
    assert_eq!(
        store.get(id).unwrap().unwrap().decode().unwrap().content,
        "kept"
    );
    assert_eq!(count(&store, "c"), 1);
    drop(store);
    assert_eq!(common::format_version(&path), 6);
}

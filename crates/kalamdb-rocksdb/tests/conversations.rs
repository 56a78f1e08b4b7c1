//! Conversation records, listings and members on a real RocksDB.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use kalamdb_core::{
    Conversation, ConversationPatch, ConversationQuery, ListPosition, MessageId, NewConversation,
    NewMessage, Store, StoreError,
};
mod common;

use common::format_version;
use kalamdb_rocksdb::keys::{self, CF_META, META_FORMAT_VERSION};
use kalamdb_rocksdb::{
    RocksStore, StoreOptions, INDEXED_MEMBERS, LISTING_LAG_MS, MAX_DEFERRED, UNSAVED_MESSAGES,
};
use serde_json::json;

fn message(conversation_id: &str, content: &str) -> NewMessage {
    NewMessage {
        conversation_id: conversation_id.into(),
        from: "alice".into(),
        content: content.into(),
        metadata: Default::default(),
    }
}

fn open(dir: &std::path::Path) -> RocksStore {
    RocksStore::open(&StoreOptions::new(dir.join("db"))).expect("open")
}

fn query(member: Option<&str>, limit: usize) -> ConversationQuery {
    ConversationQuery {
        member: member.map(str::to_owned),
        limit,
        cursor: None,
    }
}

/// Every page of a listing, followed to its end: the ids in order. Fails if the cursor does not
/// move strictly forward.
fn list_all(store: &RocksStore, member: Option<&str>, limit: usize) -> Vec<String> {
    let mut query = query(member, limit);
    let mut ids = Vec::new();
    let mut last: Option<ListPosition> = None;
    for _ in 0..10_000 {
        let page = store.list_conversations(&query).unwrap();
        ids.extend(page.conversations.iter().map(|c| c.conversation_id.clone()));
        let Some(cursor) = page.next_cursor else {
            assert!(!page.has_more);
            return ids;
        };
        assert!(
            last.as_ref().is_none_or(|l| cursor.after > *l),
            "the cursor went back"
        );
        last = Some(cursor.after.clone());
        query.cursor = Some(cursor);
    }
    panic!("the listing never ended");
}

/// The order a listing must have: most recent activity first, then by id.
fn by_activity(conversations: &[Conversation]) -> Vec<String> {
    let mut sorted: Vec<_> = conversations
        .iter()
        .map(|c| {
            (
                ListPosition::new(c.updated_at, c.conversation_id.clone()),
                c,
            )
        })
        .collect();
    sorted.sort_by(|a, b| a.0.cmp(&b.0));
    sorted
        .into_iter()
        .map(|(_, c)| c.conversation_id.clone())
        .collect()
}

#[test]
fn a_record_follows_every_write_and_survives_a_reopen() {
    let dir = tempfile::tempdir().unwrap();
    let (first, last) = {
        let store = open(dir.path());
        let first = store.insert(vec![message("c", "one")]).unwrap()[0].clone();
        let batch: Vec<_> = (0..10).map(|i| message("c", &format!("b{i}"))).collect();
        let last = store.insert(batch).unwrap().pop().unwrap();
        store.insert(vec![message("other", "x")]).unwrap();
        // A batch that fails changes no figure: the invalid message is refused before writing.
        let bad = vec![message("c", "fine"), message("", "no conversation")];
        assert!(matches!(store.insert(bad), Err(StoreError::Invalid(_))));
        store.close().unwrap();
        (first, last)
    };
    let store = open(dir.path());
    let record = store.conversation("c").unwrap().expect("exists");
    assert_eq!(record.message_count, 11);
    assert_eq!(record.created_at, first.timestamp);
    assert_eq!(record.updated_at, last.timestamp);
    let newest = record.last_message.expect("has messages").decode().unwrap();
    assert_eq!(
        (newest.msg_id, newest.content.as_str()),
        (last.msg_id, "b9")
    );
    assert_eq!((record.title, record.metadata.len()), (None, 0));
    assert_eq!(
        store.conversation("other").unwrap().unwrap().message_count,
        1
    );
    assert!(store.conversation("nope").unwrap().is_none());
}

#[test]
fn create_patch_and_conflict() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(dir.path());
    let new = NewConversation {
        conversation_id: Some("trip".into()),
        title: Some("Trip".into()),
        metadata: json!({"k": "v"}).as_object().unwrap().clone(),
        members: vec!["alice".into(), "bob".into()],
    };
    let created = store.create_conversation(&new).unwrap();
    assert_eq!(
        (created.title.as_deref(), created.message_count),
        (Some("Trip"), 0)
    );
    assert!(created.last_message.is_none());
    assert!(matches!(
        store.create_conversation(&new),
        Err(StoreError::Conflict(_))
    ));
    // A message into a created conversation counts, and the record keeps its title.
    store.insert(vec![message("trip", "hi")]).unwrap();
    std::thread::sleep(std::time::Duration::from_millis(2));
    store.insert(vec![message("later", "x")]).unwrap();
    assert_eq!(list_all(&store, None, 10), ["later", "trip"]);

    std::thread::sleep(std::time::Duration::from_millis(2));
    let patch = ConversationPatch {
        title: Some(None),
        metadata: Some(Some(json!({"n": 1}).as_object().unwrap().clone())),
    };
    let patched = store.update_conversation("trip", &patch).unwrap().unwrap();
    assert_eq!(
        (patched.title, patched.metadata["n"].clone()),
        (None, json!(1))
    );
    assert_eq!(patched.message_count, 1);
    assert!(patched.updated_at > created.updated_at);
    // A change of metadata is activity: the conversation is on top again, for its members too.
    assert_eq!(list_all(&store, None, 10), ["trip", "later"]);
    assert_eq!(list_all(&store, Some("bob"), 10), ["trip"]);
    assert!(store.update_conversation("nope", &patch).unwrap().is_none());
}

#[test]
fn listings_run_by_activity_for_the_server_and_each_member() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(dir.path());
    for i in 0..40u32 {
        store
            .insert(vec![message(&format!("c{i:02}"), "x")])
            .unwrap();
        if i.is_multiple_of(3) {
            store
                .set_member(&format!("c{i:02}"), "carol", true)
                .unwrap();
        }
    }
    // Activity in an old conversation lifts it.
    store.insert(vec![message("c05", "again")]).unwrap();
    let all: Vec<Conversation> = (0..40)
        .map(|i| store.conversation(&format!("c{i:02}")).unwrap().unwrap())
        .collect();
    for limit in [1, 7, 40, 100] {
        assert_eq!(
            list_all(&store, None, limit),
            by_activity(&all),
            "limit {limit}"
        );
    }
    let carols: Vec<Conversation> = all
        .iter()
        .filter(|c| c.conversation_id[1..].parse::<usize>().unwrap() % 3 == 0)
        .cloned()
        .collect();
    assert_eq!(list_all(&store, Some("carol"), 4), by_activity(&carols));
    assert!(list_all(&store, Some("nobody"), 4).is_empty());
}

#[test]
fn a_very_large_conversation_is_listed_for_its_members_without_indexing_each() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(dir.path());
    store.insert(vec![message("small", "x")]).unwrap();
    store.insert(vec![message("big", "x")]).unwrap();
    store.set_member("small", "u0", true).unwrap();
    let members = INDEXED_MEMBERS as usize + 5;
    for i in 0..members {
        store.set_member("big", &format!("u{i}"), true).unwrap();
    }
    assert_eq!(store.members("big").unwrap().unwrap().len(), members);
    // u0 is in both: the large one merged in at read time, in activity order either way.
    std::thread::sleep(std::time::Duration::from_millis(2));
    store.insert(vec![message("small", "newer")]).unwrap();
    assert_eq!(list_all(&store, Some("u0"), 1), ["small", "big"]);
    std::thread::sleep(std::time::Duration::from_millis(2));
    store.insert(vec![message("big", "newest")]).unwrap();
    assert_eq!(list_all(&store, Some("u0"), 1), ["big", "small"]);
    assert_eq!(list_all(&store, Some("u7"), 5), ["big"]);
    // Shrunk to half the threshold, it is indexed per member again, and listed the same.
    for i in (INDEXED_MEMBERS as usize / 2)..members {
        store.set_member("big", &format!("u{i}"), false).unwrap();
    }
    assert_eq!(list_all(&store, Some("u0"), 1), ["big", "small"]);
    assert_eq!(list_all(&store, Some("u1"), 5), ["big"]);
    assert!(list_all(&store, Some("u20"), 5).is_empty());
    // Removing and adding twice is the same as once.
    store.set_member("big", "u1", false).unwrap();
    store.set_member("big", "u1", false).unwrap();
    assert!(list_all(&store, Some("u1"), 5).is_empty());
    assert!(!store.set_member("nope", "u1", true).unwrap());
}

/// Each listing the conversations below are in, the server's too, must run by activity, page
/// after page.
fn assert_listings_exact(store: &RocksStore, when: &str) {
    let rooms: Vec<Conversation> = ["r1", "r2", "r3", "t1", "t2", "t3"]
        .iter()
        .filter_map(|id| store.conversation(id).unwrap())
        .collect();
    for limit in [1, 3] {
        assert_eq!(
            list_all(store, None, limit),
            by_activity(&rooms),
            "the server's, pages of {limit}, {when}"
        );
    }
    let with = |member: &str| -> Vec<Conversation> {
        rooms
            .iter()
            .filter(|c| {
                store
                    .members(&c.conversation_id)
                    .unwrap()
                    .unwrap()
                    .iter()
                    .any(|m| m == member)
            })
            .cloned()
            .collect()
    };
    for (member, limit) in [("alice", 1), ("alice", 3), ("bob", 1), ("carol", 2)] {
        assert_eq!(
            list_all(store, Some(member), limit),
            by_activity(&with(member)),
            "{member}, pages of {limit}, {when}"
        );
    }
}

/// Each conversation's count and newest message, as written.
type Written = HashMap<String, (u64, MessageId)>;

fn write(store: &RocksStore, expected: &mut Written, conversation_id: &str) {
    let id = store.insert(vec![message(conversation_id, "x")]).unwrap()[0].msg_id;
    let entry = expected
        .entry(conversation_id.to_owned())
        .or_insert((0, id));
    *entry = (entry.0 + 1, id);
}

/// The records count every message and name the newest, and the listings are exact.
fn check(store: &RocksStore, expected: &Written, when: &str) {
    for (id, (count, newest)) in expected {
        let record = store.conversation(id).unwrap().unwrap();
        assert_eq!(record.message_count, *count, "{id}'s count, {when}");
        assert_eq!(
            record.last_message.map(|m| m.msg_id),
            Some(*newest),
            "{id}'s last message, {when}"
        );
        assert_eq!(
            record.updated_at.max(newest.timestamp_ms()),
            record.updated_at
        );
    }
    assert_listings_exact(store, when);
}

/// A busy conversation's listing entries are moved about once a [`LISTING_LAG_MS`], not on
/// every message; no listing may show it.
#[test]
fn busy_conversations_are_listed_in_order_while_their_entries_trail() {
    let dir = tempfile::tempdir().unwrap();
    let mut store = open(dir.path());
    let mut expected = HashMap::new();
    for (id, members) in [
        ("r1", vec!["alice", "bob"]),
        ("r2", vec!["alice"]),
        ("r3", vec!["alice", "bob"]),
    ] {
        let new = NewConversation {
            conversation_id: Some(id.into()),
            members: members.into_iter().map(String::from).collect(),
            ..NewConversation::default()
        };
        store.create_conversation(&new).unwrap();
    }
    let pause = || std::thread::sleep(std::time::Duration::from_millis(2));
    for round in 0..24 {
        pause();
        let room = ["r1", "r2", "r3"][round * 7 % 3];
        write(&store, &mut expected, room);
        check(&store, &expected, &format!("after write {round}"));
    }
    assert_eq!(
        store.deferred_conversations(),
        Some(3),
        "busy rooms defer their listing entries"
    );

    // Its record is rewritten every UNSAVED_MESSAGES messages; a read counts the rest.
    for n in 0..2 * UNSAVED_MESSAGES + 5 {
        write(&store, &mut expected, "r1");
        if n % 7 == 0 {
            check(&store, &expected, &format!("after {n} more into r1"));
        }
    }
    check(&store, &expected, "after many into r1");

    // Quiet for the lag, the next write catches them up; nothing a listing shows changes.
    std::thread::sleep(std::time::Duration::from_millis(LISTING_LAG_MS + 20));
    // Each to a conversation of its own, which is then not busy.
    write(&store, &mut expected, "t1");
    assert_eq!(store.deferred_conversations(), Some(0));
    check(&store, &expected, "caught up");
    // A quiet room's first write moves its members' entries at once.
    write(&store, &mut expected, "r2");
    assert_eq!(store.deferred_conversations(), Some(0));
    check(&store, &expected, "a quiet room written");

    // Deferred at a close, it is listed right after the open, and caught up by the first write.
    // (The third message is counted by no stored record, only by reads.)
    for _ in 0..3 {
        pause();
        write(&store, &mut expected, "r1");
    }
    assert_eq!(store.deferred_conversations(), Some(1));
    drop(store);
    store = open(dir.path());
    check(&store, &expected, "reopened");
    write(&store, &mut expected, "t2");
    assert_eq!(store.deferred_conversations(), Some(0));
    check(&store, &expected, "caught up after the open");

    // Changing a deferred room's members or details catches it up first.
    for room in ["r3", "r2", "r3", "r2"] {
        pause();
        write(&store, &mut expected, room);
    }
    assert_eq!(store.deferred_conversations(), Some(2));
    store.set_member("r3", "carol", true).unwrap();
    store.set_member("r3", "bob", false).unwrap();
    check(&store, &expected, "members changed");
    pause();
    let patch: ConversationPatch = serde_json::from_value(json!({"title": "Trip"})).unwrap();
    store.update_conversation("r2", &patch).unwrap().unwrap();
    check(&store, &expected, "patched");
    // Their stale queue entries are caught up as no-ops.
    std::thread::sleep(std::time::Duration::from_millis(LISTING_LAG_MS + 20));
    write(&store, &mut expected, "t3");
    assert_eq!(store.deferred_conversations(), Some(0));
    check(&store, &expected, "at the end");
}

/// Past [`MAX_DEFERRED`] busy conversations, writes move their entries at once, which bounds
/// what a page of the server's listing reads in their place.
#[test]
fn deferred_conversations_are_bounded() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(dir.path());
    let ids: Vec<String> = (0..MAX_DEFERRED + 50).map(|i| format!("c{i:05}")).collect();
    let batch = || ids.iter().map(|id| message(id, "x")).collect::<Vec<_>>();
    store.insert(batch()).unwrap();
    std::thread::sleep(std::time::Duration::from_millis(2));
    store.insert(batch()).unwrap();
    assert_eq!(store.deferred_conversations(), Some(MAX_DEFERRED));
    let all: Vec<Conversation> = ids
        .iter()
        .map(|id| store.conversation(id).unwrap().unwrap())
        .collect();
    assert_eq!(list_all(&store, None, 100), by_activity(&all));
}

/// The cursor's promise with writers running: every conversation that existed before the first
/// page is listed at least once, and the listing ends.
#[test]
fn paging_while_messages_arrive_visits_every_conversation_and_ends() {
    let dir = tempfile::tempdir().unwrap();
    let store = Arc::new(open(dir.path()));
    let existing: BTreeSet<String> = (0..300).map(|i| format!("c{i:03}")).collect();
    for id in &existing {
        store.insert(vec![message(id, "x")]).unwrap();
        store.set_member(id, "m", true).unwrap();
    }
    let stop = Arc::new(AtomicBool::new(false));
    let writers: Vec<_> = (0..2)
        .map(|w| {
            let (store, stop) = (Arc::clone(&store), Arc::clone(&stop));
            std::thread::spawn(move || {
                let mut n = 0u64;
                while !stop.load(Ordering::Relaxed) {
                    // Old conversations jump to the top; new ones appear.
                    let id = if n.is_multiple_of(5) {
                        format!("new-{w}-{n}")
                    } else {
                        format!("c{:03}", (n * 37 + w * 101) % 300)
                    };
                    store.insert(vec![message(&id, "y")]).unwrap();
                    n += 1;
                }
                n
            })
        })
        .collect();
    for member in [None, Some("m")] {
        let mut seen: BTreeMap<String, usize> = BTreeMap::new();
        for id in list_all(&store, member, 7) {
            *seen.entry(id).or_default() += 1;
        }
        let missed: Vec<_> = existing
            .iter()
            .filter(|id| !seen.contains_key(*id))
            .collect();
        assert!(missed.is_empty(), "{member:?}: missed {missed:?}");
        assert!(
            seen.values().all(|&n| n <= 2),
            "{member:?}: listed more than twice"
        );
    }
    stop.store(true, Ordering::Relaxed);
    let written: u64 = writers.into_iter().map(|w| w.join().unwrap()).sum();
    assert!(written > 0);
}

/// Rewrites the store at `path` as format 3 wrote it: no conversation records, listings or
/// members, only the four column families of that format.
fn downgrade_to_format_3(path: &std::path::Path) {
    let mut db =
        rocksdb::DB::open_cf(&rocksdb::Options::default(), path, keys::COLUMN_FAMILIES).unwrap();
    for name in [keys::CF_CONVERSATIONS, keys::CF_ACTIVITY, keys::CF_MEMBERS] {
        db.drop_cf(name).unwrap();
    }
    let meta = db.cf_handle(CF_META).unwrap();
    db.put_cf(meta, META_FORMAT_VERSION, 3u32.to_be_bytes())
        .unwrap();
}

/// Format 4 differs only in what its builds cannot read (a deferred state): it opens as it is,
/// records, members and titles kept, and is then marked with the current format, which a
/// format-4 build refuses.
#[test]
fn a_format_4_store_opens_as_it_is() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("db");
    let before = {
        let store = open(dir.path());
        let new = NewConversation {
            conversation_id: Some("trip".into()),
            title: Some("Trip".into()),
            members: vec!["alice".into()],
            ..NewConversation::default()
        };
        store.create_conversation(&new).unwrap();
        store
            .insert(vec![message("trip", "x"), message("solo", "y")])
            .unwrap();
        (
            store.conversation("trip").unwrap().unwrap(),
            list_all(&store, None, 5),
        )
    };
    {
        let db = rocksdb::DB::open_cf(&rocksdb::Options::default(), &path, keys::COLUMN_FAMILIES)
            .unwrap();
        let meta = db.cf_handle(CF_META).unwrap();
        db.put_cf(meta, META_FORMAT_VERSION, 4u32.to_be_bytes())
            .unwrap();
    }
    let store = open(dir.path());
    assert_eq!(store.conversation("trip").unwrap().unwrap(), before.0);
    assert_eq!(list_all(&store, None, 5), before.1);
    assert_eq!(list_all(&store, Some("alice"), 5), ["trip"]);
    drop(store);
    assert_eq!(format_version(&path), keys::FORMAT_VERSION);
    assert_eq!(keys::FORMAT_VERSION, 6);
}

#[test]
fn a_format_3_store_gets_its_records_built_from_its_messages() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("db");
    let before: Vec<Conversation> = {
        let store = open(dir.path());
        for round in 0..3 {
            for conversation in ["a", "ab", "b", "z z"] {
                let batch = (0..25)
                    .map(|i| message(conversation, &format!("{round}-{i}")))
                    .collect();
                store.insert(batch).unwrap();
            }
        }
        let all = ["a", "ab", "b", "z z"]
            .iter()
            .map(|id| store.conversation(id).unwrap().unwrap())
            .collect();
        store.close().unwrap();
        all
    };
    downgrade_to_format_3(&path);
    assert_eq!(
        rocksdb::DB::list_cf(&rocksdb::Options::default(), &path)
            .unwrap()
            .len(),
        5,
        "format 3 had RocksDB's default and four column families"
    );

    let store = open(dir.path());
    for expected in &before {
        let rebuilt = store
            .conversation(&expected.conversation_id)
            .unwrap()
            .unwrap();
        assert_eq!(&rebuilt, expected);
        assert_eq!(rebuilt.message_count, 75);
    }
    assert_eq!(list_all(&store, None, 3), by_activity(&before));
    // The store goes on as a current one: counts keep counting.
    store.insert(vec![message("a", "after")]).unwrap();
    assert_eq!(store.conversation("a").unwrap().unwrap().message_count, 76);
    assert_eq!(list_all(&store, None, 3)[0], "a");
}

/// A data directory the format-3 server itself wrote (`tests/fixtures/README.md`), opened by
/// this build: every record is built from its messages, and the listing runs by activity.
#[test]
fn the_format_3_directory_written_by_the_old_server_is_upgraded() {
    let fixture = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/format-3");
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("db");
    std::fs::create_dir(&data).unwrap();
    for entry in std::fs::read_dir(&fixture).unwrap() {
        let entry = entry.unwrap();
        std::fs::copy(entry.path(), data.join(entry.file_name())).unwrap();
    }
    let store = open(dir.path());
    let expect = [
        // (conversation, count, created_at, updated_at, last content)
        ("alpha", 4, 1_796_116_155_943, 1_796_116_156_047, "alpha 4"),
        ("beta", 3, 1_796_116_156_021, 1_796_116_156_022, "beta 3"),
        (
            "gamma δ",
            1,
            1_796_116_156_022,
            1_796_116_156_022,
            "gamma 1",
        ),
    ];
    for (id, count, created, updated, last) in expect {
        let record = store.conversation(id).unwrap().expect(id);
        assert_eq!(
            (record.message_count, record.created_at, record.updated_at),
            (count, created, updated),
            "{id}"
        );
        assert_eq!(record.last_message.unwrap().decode().unwrap().content, last);
        assert_eq!((record.title, record.metadata.len()), (None, 0));
    }
    assert_eq!(list_all(&store, None, 2), ["alpha", "beta", "gamma δ"]);
    // Writes go on from there, under ids above the old ones.
    let next = store.insert(vec![message("beta", "beta 4")]).unwrap();
    assert!(next[0].msg_id.as_u64() > 386_081_304_543_756_288);
    assert_eq!(
        store.conversation("beta").unwrap().unwrap().message_count,
        4
    );
    assert_eq!(list_all(&store, None, 2)[0], "beta");
}

//! RocksStore against a real database in a temp dir.

use kalamdb_core::{MessageId, NewMessage, PreparedMessage, Store, StoreError};
mod common;

use common::format_version;
use kalamdb_rocksdb::keys::{self, CF_META, META_FORMAT_VERSION};
use kalamdb_rocksdb::{Compression, OpenError, RocksStore, StoreOptions};
use serde_json::json;

fn new_message(conversation_id: &str, content: &str) -> NewMessage {
    NewMessage {
        conversation_id: conversation_id.into(),
        from: "alice".into(),
        content: content.into(),
        metadata: json!({"role": "user"}).as_object().unwrap().clone(),
    }
}

fn prepared(conversation_id: &str, content: &str) -> PreparedMessage {
    PreparedMessage::new(new_message(conversation_id, content)).unwrap()
}

fn open(dir: &std::path::Path) -> RocksStore {
    RocksStore::open(&StoreOptions::new(dir.join("db"))).expect("open")
}

#[test]
fn the_store_says_whether_its_writes_wait_for_the_disk() {
    // The handle's writer thread schedules itself by this (`Store::syncs_writes`).
    let dir = tempfile::tempdir().unwrap();
    assert!(
        open(dir.path()).syncs_writes(),
        "sync_writes is on by default"
    );
    let dir = tempfile::tempdir().unwrap();
    let mut options = StoreOptions::new(dir.path().join("db"));
    options.sync_writes = false;
    let store = RocksStore::open(&options).expect("open");
    assert!(!store.syncs_writes());
}

#[test]
fn a_message_reads_back_as_inserted() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(dir.path());
    let inserted = store.insert(vec![new_message("conv", "hello")]).unwrap();
    assert_eq!(inserted.len(), 1);
    let id = inserted[0].msg_id;
    assert_eq!(inserted[0].timestamp, id.timestamp_ms());

    let message = store.get(id).unwrap().expect("stored").decode().unwrap();
    assert_eq!(message.msg_id, id);
    assert_eq!(message.conversation_id, "conv");
    assert_eq!(message.from, "alice");
    assert_eq!(message.content, "hello");
    assert_eq!(message.timestamp, inserted[0].timestamp);
    assert_eq!(message.metadata["role"], "user");

    assert!(store
        .get(MessageId::from_u64(id.as_u64() + 1))
        .unwrap()
        .is_none());
    store.health_check().unwrap();
}

#[test]
fn a_batch_gets_increasing_ids_and_is_all_or_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(dir.path());
    let batch: Vec<_> = (0..100).map(|i| new_message("c", &i.to_string())).collect();
    let inserted = store.insert(batch).unwrap();
    assert!(inserted.windows(2).all(|w| w[0].msg_id < w[1].msg_id));
    for (i, entry) in inserted.iter().enumerate() {
        let message = store.get(entry.msg_id).unwrap().unwrap().decode().unwrap();
        assert_eq!(message.content, i.to_string());
    }

    let last = store.last_id().unwrap();
    let mut bad = vec![new_message("c", "ok"), new_message("c\0x", "bad key")];
    bad.push(new_message("c", "ok too"));
    assert!(matches!(store.insert(bad), Err(StoreError::Invalid(_))));
    assert_eq!(
        store.last_id().unwrap(),
        last,
        "nothing of the refused batch is stored"
    );
}

#[test]
fn ids_keep_increasing_across_a_reopen() {
    let dir = tempfile::tempdir().unwrap();
    let (first, last) = {
        let store = open(dir.path());
        let ids = store
            .insert((0..10).map(|i| new_message("c", &i.to_string())).collect())
            .unwrap();
        store.close().unwrap();
        (ids[0].msg_id, ids[9].msg_id)
    };
    let store = open(dir.path());
    assert_eq!(store.last_id().unwrap(), Some(last));
    assert_eq!(
        store.get(first).unwrap().unwrap().decode().unwrap().content,
        "0"
    );
    let next = store.insert(vec![new_message("c", "after")]).unwrap()[0].msg_id;
    assert!(next > last);
}

#[test]
fn every_compression_and_sync_mode_stores_and_reads() {
    for compression in [Compression::None, Compression::Lz4, Compression::Zstd] {
        for sync_writes in [true, false] {
            let dir = tempfile::tempdir().unwrap();
            let options = StoreOptions {
                node_id: 42,
                sync_writes,
                compression,
                ..StoreOptions::new(dir.path().join("db"))
            };
            let id = {
                let store = RocksStore::open(&options).unwrap();
                let content = "compressible ".repeat(1000);
                let id = store.insert(vec![new_message("c", &content)]).unwrap()[0].msg_id;
                // Flushing writes an SST file, which is where compression applies.
                store.flush().unwrap();
                id
            };
            assert_eq!(id.node_id(), 42);
            let store = RocksStore::open(&options).unwrap();
            let message = store.get(id).unwrap().unwrap().decode().unwrap();
            assert_eq!(message.content.len(), 13_000, "{compression:?}");
        }
    }
}

#[test]
fn a_closed_store_refuses_work() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(dir.path());
    store.insert(vec![new_message("c", "x")]).unwrap();
    store.close().unwrap();
    assert!(matches!(
        store.insert(vec![new_message("c", "y")]),
        Err(StoreError::Closed)
    ));
    assert!(matches!(store.health_check(), Err(StoreError::Closed)));
    // Closing twice is harmless.
    store.close().unwrap();
}

#[test]
fn a_store_from_a_newer_format_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("db");
    drop(open(dir.path()));
    {
        let mut options = rocksdb::Options::default();
        options.create_if_missing(true);
        let db = rocksdb::DB::open_cf(&options, &path, keys::COLUMN_FAMILIES).unwrap();
        let meta = db.cf_handle(CF_META).unwrap();
        db.put_cf(meta, META_FORMAT_VERSION, 99u32.to_be_bytes())
            .unwrap();
    }
    let err = RocksStore::open(&StoreOptions::new(&path)).unwrap_err();
    assert!(matches!(err, OpenError::Format { .. }), "{err}");
    assert!(err.to_string().contains("99"), "{err}");
}

#[test]
fn an_unusable_path_is_a_clear_error() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("file");
    std::fs::write(&file, "x").unwrap();
    let err = RocksStore::open(&StoreOptions::new(file.join("db"))).unwrap_err();
    assert!(
        err.to_string().contains("cannot open the RocksDB store"),
        "{err}"
    );
}

#[test]
fn messages_lie_under_their_conversation_key() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("db");
    let ids: Vec<_> = {
        let store = open(dir.path());
        ["a", "ab", "a b", "a"]
            .iter()
            .map(|c| store.insert(vec![new_message(c, c)]).unwrap()[0].msg_id)
            .collect()
    };
    let db = rocksdb::DB::open_cf_for_read_only(
        &rocksdb::Options::default(),
        &path,
        keys::COLUMN_FAMILIES,
        false,
    )
    .unwrap();
    let messages = db.cf_handle(keys::CF_MESSAGES).unwrap();
    let (lower, upper) = keys::conversation_range("a");
    let mut read = rocksdb::ReadOptions::default();
    read.set_iterate_lower_bound(lower);
    read.set_iterate_upper_bound(upper);
    let found: Vec<_> = db
        .iterator_cf_opt(messages, read, rocksdb::IteratorMode::Start)
        .map(|entry| {
            let (key, value) = entry.unwrap();
            let (conversation, id) = keys::decode_message_key(&key).unwrap();
            assert_eq!(conversation, b"a");
            assert_eq!(value[0], keys::VALUE_VERSION);
            id
        })
        .collect();
    // Newest first.
    assert_eq!(found, vec![ids[3], ids[0]]);
}

/// Rewrites the store at `path` the way an older format laid it out: every `messages` key (or
/// every other one, for a rewrite a crash cut short) as `conversation ‖ 0x00 ‖ id` (format
/// version 1) or `conversation ‖ 0x01 ‖ NOT id` (format version 2).
fn downgrade(path: &std::path::Path, version: u32, every: usize) {
    let db =
        rocksdb::DB::open_cf(&rocksdb::Options::default(), path, keys::COLUMN_FAMILIES).unwrap();
    let messages = db.cf_handle(keys::CF_MESSAGES).unwrap();
    let mut batch = rocksdb::WriteBatch::default();
    for (n, entry) in db
        .iterator_cf(messages, rocksdb::IteratorMode::Start)
        .enumerate()
    {
        let (key, value) = entry.unwrap();
        if n % every != 0 {
            continue;
        }
        let (conversation, id) = keys::decode_message_key(&key).unwrap();
        let mut old = conversation.to_vec();
        match version {
            1 => {
                old.push(0x00);
                old.extend_from_slice(&id.as_u64().to_be_bytes());
            }
            2 => {
                old.push(0x01);
                old.extend_from_slice(&(!id.as_u64()).to_be_bytes());
            }
            _ => unreachable!("no format version {version}"),
        }
        batch.delete_cf(messages, &key);
        batch.put_cf(messages, old, value);
    }
    let meta = db.cf_handle(CF_META).unwrap();
    batch.put_cf(meta, META_FORMAT_VERSION, version.to_be_bytes());
    db.write(batch).unwrap();
}

/// Every message of a format-1 or format-2 store is found after the upgrade on open, in both
/// orders and by id, also when an earlier upgrade stopped halfway.
#[test]
fn an_old_store_is_upgraded_on_open_without_losing_a_message() {
    for (version, every) in [(1, 1), (1, 2), (2, 1), (2, 2)] {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("db");
        let inserted: Vec<_> = {
            let store = open(dir.path());
            let mut all = Vec::new();
            for round in 0..3 {
                for conversation in ["a", "ab", "b"] {
                    let batch = (0..40)
                        .map(|i| new_message(conversation, &format!("{round}-{i}")))
                        .collect();
                    all.extend(store.insert(batch).unwrap());
                }
            }
            store.close().unwrap();
            all
        };
        downgrade(&path, version, every);
        assert_eq!(format_version(&path), version);

        let store = open(dir.path());
        for conversation in ["a", "ab", "b"] {
            let mut expected: Vec<_> = inserted
                .iter()
                .filter(|m| m.conversation_id == conversation)
                .map(|m| m.msg_id)
                .collect();
            let page = |order| {
                let query = kalamdb_core::Query {
                    conversation_id: conversation.into(),
                    since: None,
                    before: None,
                    limit: 1000,
                    order,
                };
                let page = store.query(&query).unwrap();
                assert!(!page.has_more);
                page.messages.iter().map(|m| m.msg_id).collect::<Vec<_>>()
            };
            assert_eq!(page(kalamdb_core::Order::Asc), expected);
            expected.reverse();
            assert_eq!(page(kalamdb_core::Order::Desc), expected);
        }
        for entry in &inserted {
            let message = store
                .get(entry.msg_id)
                .unwrap()
                .expect("kept")
                .decode()
                .unwrap();
            assert_eq!(message.conversation_id, entry.conversation_id);
        }
        // New ids still follow the old ones.
        let next = store.insert(vec![new_message("a", "after")]).unwrap();
        assert!(next[0].msg_id > inserted.last().unwrap().msg_id);
        store.close().unwrap();
        drop(store);
        assert_eq!(format_version(&path), keys::FORMAT_VERSION);
    }
}

#[test]
fn stats_report_each_column_family_from_rocksdb() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(dir.path());
    let batch: Vec<_> = (0..250).map(|i| new_message("c", &i.to_string())).collect();
    store.insert(batch).unwrap();
    store.flush().unwrap();
    let stats = store.stats().unwrap();
    let names: Vec<_> = stats.iter().map(|s| s.name).collect();
    assert_eq!(names, keys::COLUMN_FAMILIES);
    let messages = stats.iter().find(|s| s.name == "messages").unwrap();
    assert_eq!(messages.estimated_keys, 250);
    assert!(messages.live_data_bytes > 0);
    let index = stats.iter().find(|s| s.name == "message_index").unwrap();
    assert_eq!(index.estimated_keys, 250);
    store.close().unwrap();
    assert!(matches!(store.stats(), Err(StoreError::Closed)));
}

#[test]
fn the_log_size_is_what_the_log_files_hold() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(dir.path());
    let batch: Vec<_> = (0..250).map(|i| new_message("c", &i.to_string())).collect();
    store.insert(batch).unwrap();
    let held = store.log_bytes().unwrap().unwrap();
    // 250 messages and their index entries, records and listings.
    assert!(held > 250 * 100, "{held}");
    assert_eq!(held, wal_bytes(store.path()));
    store.close().unwrap();
    assert!(matches!(store.log_bytes(), Err(StoreError::Closed)));
}

#[test]
fn idempotency_records_are_written_with_the_message_and_expire() {
    use kalamdb_core::IdempotencyKey;
    use std::time::Duration;

    let dir = tempfile::tempdir().unwrap();
    let key = IdempotencyKey {
        key: "retry-1".into(),
        fingerprint: [9; 32],
    };
    let first = {
        let store = open(dir.path());
        let inserted = store
            .insert_with_keys(
                &[prepared("c", "a"), prepared("c", "b")],
                &[(1, key.clone())],
            )
            .unwrap();
        let record = store.idempotency_record("retry-1").unwrap().unwrap();
        assert_eq!(record.fingerprint, [9; 32]);
        assert_eq!(record.inserted, inserted[1]);
        assert!(store.idempotency_record("other").unwrap().is_none());
        store.close().unwrap();
        inserted[1].clone()
    };
    // Kept across a restart.
    {
        let store = open(dir.path());
        let record = store.idempotency_record("retry-1").unwrap().unwrap();
        assert_eq!(record.inserted, first);
        store.close().unwrap();
    }
    // Opened with a TTL it has outlived: ignored at once, and dropped by compaction.
    let mut options = StoreOptions::new(dir.path().join("db"));
    options.idempotency_ttl = Duration::ZERO;
    let store = RocksStore::open(&options).unwrap();
    assert!(store.idempotency_record("retry-1").unwrap().is_none());
    let keys_on_disk = |store: &RocksStore| {
        store
            .stats()
            .unwrap()
            .into_iter()
            .find(|part| part.name == keys::CF_IDEMPOTENCY)
            .unwrap()
            .estimated_keys
    };
    assert_eq!(keys_on_disk(&store), 1, "still on disk before a compaction");
    store.compact_idempotency_keys().unwrap();
    assert_eq!(keys_on_disk(&store), 0);
    // The messages themselves stay.
    assert!(store.get(first.msg_id).unwrap().is_some());
}

/// The `[CFOptions "NAME"]` section of the newest OPTIONS file RocksDB wrote in `db`.
fn cf_options_section(db: &std::path::Path, name: &str) -> String {
    let newest = std::fs::read_dir(db)
        .unwrap()
        .map(|entry| entry.unwrap().path())
        .filter(|path| {
            path.file_name()
                .and_then(|n| n.to_str())
                .is_some_and(|n| n.starts_with("OPTIONS-"))
        })
        .max_by_key(|path| {
            let name = path.file_name().unwrap().to_str().unwrap();
            name["OPTIONS-".len()..].parse::<u64>().unwrap()
        })
        .expect("RocksDB writes an OPTIONS file");
    let text = std::fs::read_to_string(newest).unwrap();
    let header = format!("[CFOptions \"{name}\"]");
    let start = text.find(&header).expect("a section per column family") + header.len();
    let end = text[start..].find("\n[").map_or(text.len(), |i| start + i);
    text[start..end].to_owned()
}

/// The messages column family runs with the memtable insert hint keyed by the bucket, and the
/// options string that sets it keeps the configured compression; the other column families have
/// no hint.
#[test]
fn messages_are_inserted_with_the_bucket_hint() {
    let dir = tempfile::tempdir().unwrap();
    let mut options = StoreOptions::new(dir.path().join("db"));
    options.compression = Compression::Zstd;
    let store = RocksStore::open(&options).unwrap();
    store.close().unwrap();
    drop(store);
    let messages = cf_options_section(&dir.path().join("db"), keys::CF_MESSAGES);
    assert!(
        messages.contains("memtable_insert_with_hint_prefix_extractor=rocksdb.FixedPrefix.2"),
        "{messages}"
    );
    assert!(messages.contains("compression=kZSTD"), "{messages}");
    let index = cf_options_section(&dir.path().join("db"), keys::CF_MESSAGE_INDEX);
    assert!(
        index.contains("memtable_insert_with_hint_prefix_extractor=nullptr"),
        "{index}"
    );
    assert!(index.contains("compression=kZSTD"), "{index}");
}

/// The bytes of the live write-ahead log files in `db`.
fn wal_bytes(db: &std::path::Path) -> u64 {
    std::fs::read_dir(db)
        .unwrap()
        .filter_map(Result::ok)
        .filter(|entry| entry.path().extension().is_some_and(|e| e == "log"))
        .map(|entry| entry.metadata().unwrap().len())
        .sum()
}

#[test]
fn an_idle_store_lets_go_of_the_log_past_its_bound() {
    const BOUND: u64 = 16 << 20;
    let dir = tempfile::tempdir().unwrap();
    let options = StoreOptions {
        sync_writes: false,
        max_wal_bytes: BOUND,
        // The maintenance thread looks every eighth of this: 50 ms.
        erase_within: std::time::Duration::from_millis(400),
        ..StoreOptions::new(dir.path().join("db"))
    };
    let content = "i".repeat(4000);
    let (first, last) = {
        let store = std::sync::Arc::new(RocksStore::open(&options).unwrap());
        assert!(
            !store.settle_log().unwrap(),
            "an empty log is within any bound"
        );
        // RocksDB checks the bound before each write, and the log was empty before this one:
        // it leaves 30 MB in the log, and with no write after it RocksDB never flushes them.
        let batch = (0..7500).map(|_| new_message("c", &content)).collect();
        let ids: Vec<_> = store
            .insert(batch)
            .unwrap()
            .into_iter()
            .map(|m| m.msg_id)
            .collect();
        assert!(wal_bytes(&options.path) > BOUND);
        store.start_maintenance();
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
        while wal_bytes(&options.path) > BOUND && std::time::Instant::now() < deadline {
            std::thread::sleep(std::time::Duration::from_millis(20));
        }
        let held = wal_bytes(&options.path);
        assert!(held <= BOUND, "{held} bytes of log for a bound of {BOUND}");
        assert!(store.log_bytes().unwrap().unwrap() <= BOUND);
        // As the server shuts down: the maintenance thread, which holds the store while it
        // works, is stopped and waited for, so the reopen below finds the database closed.
        store.close().unwrap();
        (ids[0], ids[ids.len() - 1])
    };
    // What the flush took out of the log is in the table files.
    let store = RocksStore::open(&options).unwrap();
    assert_eq!(
        store.conversation("c").unwrap().unwrap().message_count,
        7500
    );
    for id in [first, last] {
        let message = store.get(id).unwrap().unwrap().decode().unwrap();
        assert_eq!(message.content, content);
    }
}

#[test]
fn the_write_ahead_log_stays_within_its_bound_and_loses_nothing() {
    // 40 MB of messages fit in one write buffer of `messages` (64 MiB), so unbounded, nothing
    // would be flushed and the whole 40 MB would stay in the log until the next restart.
    const BOUND: u64 = 8 << 20;
    let dir = tempfile::tempdir().unwrap();
    let options = StoreOptions {
        sync_writes: false,
        max_wal_bytes: BOUND,
        ..StoreOptions::new(dir.path().join("db"))
    };
    let content = "w".repeat(4000);
    let (first, last, count) = {
        let store = RocksStore::open(&options).unwrap();
        let mut ids = Vec::new();
        for _ in 0..100 {
            let batch = (0..100).map(|_| new_message("c", &content)).collect();
            ids.extend(store.insert(batch).unwrap().into_iter().map(|m| m.msg_id));
        }
        // The flushes that let old log files go run in the background, and RocksDB checks the
        // bound as writes arrive: what was written while a flush ran (the whole rest, on a busy
        // machine) is let go at a later write. A trickle of small messages, as a live server
        // has, gives it those writes.
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
        let mut trickled = 0;
        while wal_bytes(&options.path) > 2 * BOUND && std::time::Instant::now() < deadline {
            std::thread::sleep(std::time::Duration::from_millis(20));
            store.insert(vec![new_message("c", "trickle")]).unwrap();
            trickled += 1;
        }
        let held = wal_bytes(&options.path);
        assert!(
            held <= 2 * BOUND,
            "{held} bytes of log for a bound of {BOUND}"
        );
        (ids[0], ids[ids.len() - 1], ids.len() + trickled)
    };
    let store = RocksStore::open(&options).unwrap();
    let conversation = store.conversation("c").unwrap().unwrap();
    assert_eq!(conversation.message_count, count as u64);
    for id in [first, last] {
        let message = store.get(id).unwrap().unwrap().decode().unwrap();
        assert_eq!(message.content, content);
    }
}

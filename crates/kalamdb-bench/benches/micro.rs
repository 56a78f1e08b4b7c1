//! Microbenchmarks of the hot paths under the HTTP stack: key encoding, id generation, and the
//! store's insert and query. `cargo bench -p kalamdb-bench --bench micro`.

use std::hint::black_box;

use criterion::{criterion_group, criterion_main, BatchSize, Criterion};
use kalamdb_core::{IdGenerator, MessageId, NewMessage, Order, Query, Store};
use kalamdb_rocksdb::keys;
use kalamdb_rocksdb::{RocksStore, StoreOptions};

fn message(conversation_id: &str) -> NewMessage {
    NewMessage {
        conversation_id: conversation_id.to_owned(),
        from: "bench".to_owned(),
        content: "x".repeat(200),
        metadata: Default::default(),
    }
}

fn key_encoding(c: &mut Criterion) {
    let id = MessageId::from_u64(384_115_895_842_111_488);
    c.bench_function("keys::message_key", |b| {
        b.iter(|| keys::message_key(black_box("conversation-1234"), black_box(id)))
    });
}

fn id_generation(c: &mut Criterion) {
    let ids = IdGenerator::new(0, MessageId::from_u64(0)).expect("node 0");
    c.bench_function("IdGenerator::next_id", |b| {
        b.iter(|| ids.next_id().unwrap())
    });
}

fn store(c: &mut Criterion) {
    let dir = tempfile::tempdir().unwrap();
    let mut options = StoreOptions::new(dir.path().join("db"));
    options.sync_writes = false;
    let store = RocksStore::open(&options).unwrap();
    c.bench_function("RocksStore::insert, 1 message, no fsync", |b| {
        b.iter_batched(
            || vec![message("insert")],
            |batch| store.insert(batch).unwrap(),
            BatchSize::SmallInput,
        )
    });
    c.bench_function("RocksStore::insert, batch of 100, no fsync", |b| {
        b.iter_batched(
            || (0..100).map(|_| message("batch")).collect(),
            |batch| store.insert(batch).unwrap(),
            BatchSize::SmallInput,
        )
    });
    let stored = store
        .insert((0..10_000).map(|_| message("query")).collect())
        .unwrap();
    let latest = Query {
        conversation_id: "query".to_owned(),
        since: None,
        before: None,
        limit: 50,
        order: Order::Desc,
    };
    let oldest = Query {
        order: Order::Asc,
        ..latest.clone()
    };
    // A client catching up: the 10 messages after the one it saw last, oldest first.
    let catch_up = Query {
        since: Some(stored[stored.len() - 11].msg_id),
        ..oldest.clone()
    };
    // Recent messages sit in the memtable, older ones in table files; reading backwards costs
    // differently in each, so both are measured.
    for (place, flush_first) in [("in the memtable", false), ("in a table file", true)] {
        if flush_first {
            store.flush().unwrap();
        }
        for (which, query) in [
            ("latest 50 of 10k", &latest),
            ("oldest 50 of 10k", &oldest),
            (
                "catch-up: the 10 after a message of 10k, oldest first",
                &catch_up,
            ),
        ] {
            c.bench_function(&format!("RocksStore::query, {which}, {place}"), |b| {
                b.iter(|| store.query(black_box(query)).unwrap())
            });
        }
    }
}

// The macros generate undocumented public functions; they are the bench harness, not an API.
#[allow(missing_docs)]
mod harness {
    use super::*;
    criterion_group!(benches, key_encoding, id_generation, store);
}
criterion_main!(harness::benches);

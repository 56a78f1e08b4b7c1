//! Fills a data directory before the server starts, through the fastest write path: the store
//! itself, in large unsynced batches.

use std::path::Path;

use kalamdb_core::{NewConversation, NewMessage, Store};
use kalamdb_rocksdb::{RocksStore, StoreOptions};

/// Stores `count` messages of 200 bytes in `conversation_id`.
pub(crate) fn preload(data: &Path, conversation_id: &str, count: u64) -> Result<(), String> {
    let mut options = StoreOptions::new(data);
    options.sync_writes = false;
    let store = RocksStore::open(&options).map_err(|e| e.to_string())?;
    let content = "x".repeat(200);
    let mut left = count;
    while left > 0 {
        let n = left.min(10_000);
        let batch = (0..n)
            .map(|_| NewMessage {
                conversation_id: conversation_id.to_owned(),
                from: "bench".to_owned(),
                content: content.clone(),
                metadata: Default::default(),
            })
            .collect();
        store.insert(batch).map_err(|e| e.to_string())?;
        left -= n;
    }
    store.close().map_err(|e| e.to_string())
}

/// Creates the conversations the load generator's `connections` write to (`bench-c<N>`), each
/// with `members` members.
pub(crate) fn with_members(data: &Path, connections: usize, members: usize) -> Result<(), String> {
    let store = RocksStore::open(&StoreOptions::new(data)).map_err(|e| e.to_string())?;
    for connection in 0..connections {
        let new = NewConversation {
            conversation_id: Some(format!("bench-c{connection}")),
            members: (0..members).map(|m| format!("bench-member-{m}")).collect(),
            ..NewConversation::default()
        };
        store.create_conversation(&new).map_err(|e| e.to_string())?;
    }
    store.close().map_err(|e| e.to_string())
}

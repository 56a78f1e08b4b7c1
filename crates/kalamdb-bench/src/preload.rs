//! Fills a data directory before the server starts, through the fastest write path: the store
//! itself, in large unsynced batches.

use std::path::Path;

use kalamdb_core::{NewConversation, NewMessage, Store};
use kalamdb_rocksdb::{RocksStore, StoreOptions};

/// Stores `count` messages of 200 bytes in `conversation_id`, created first with `member` as
/// its member when one is given (a user must be one to read it).
pub(crate) fn preload(
    data: &Path,
    conversation_id: &str,
    count: u64,
    member: Option<&str>,
) -> Result<(), String> {
    let mut options = StoreOptions::new(data);
    options.sync_writes = false;
    let store = RocksStore::open(&options).map_err(|e| e.to_string())?;
    if let Some(member) = member {
        let new = NewConversation {
            conversation_id: Some(conversation_id.to_owned()),
            members: vec![member.to_owned()],
            ..NewConversation::default()
        };
        store.create_conversation(&new).map_err(|e| e.to_string())?;
    }
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
/// with `members` members; `writer`, when given, is one of them (a user must be one to write).
pub(crate) fn with_members(
    data: &Path,
    connections: usize,
    members: usize,
    writer: Option<&str>,
) -> Result<(), String> {
    let store = RocksStore::open(&StoreOptions::new(data)).map_err(|e| e.to_string())?;
    for connection in 0..connections {
        let mut names: Vec<String> = (0..members).map(|m| format!("bench-member-{m}")).collect();
        if let Some(writer) = writer {
            names[0] = writer.to_owned();
        }
        let new = NewConversation {
            conversation_id: Some(format!("bench-c{connection}")),
            members: names,
            ..NewConversation::default()
        };
        store.create_conversation(&new).map_err(|e| e.to_string())?;
    }
    store.close().map_err(|e| e.to_string())
}

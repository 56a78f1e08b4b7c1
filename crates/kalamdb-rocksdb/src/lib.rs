//! [`RocksStore`]: KalamDB's [`Store`](kalamdb_core::Store) on an embedded RocksDB.
//!
//! This is the only crate that depends on `rocksdb`; endpoints see the [`Store`](kalamdb_core::Store) trait alone.
//!
//! # Layout
//!
//! - [`keys`]: column families, key and value encodings (the one place that knows the bytes).
//! - `lib.rs` (this file): [`RocksStore`] and its own methods.
//! - `options.rs`: [`StoreOptions`], [`Compression`], and the RocksDB options built from them.
//! - `open.rs`: [`RocksStore::open`] and [`OpenError`]: the format check, the upgrade of older
//!   layouts and the id generator's seed.
//! - `store.rs`: the [`Store`](kalamdb_core::Store) trait's methods: writes, reads, probes and figures.
//! - `conversations.rs`: conversation records, listings by activity and members: what each
//!   write adds to its batch, and the conversation methods of [`Store`](kalamdb_core::Store).
//! - `recent.rs`: the newest messages of recently read conversations, in memory, which answer
//!   the latest page and a poller's catch-up without RocksDB (`storage.recent_cache_mb`).
//! - `erase.rs`: edits, deletes and trims, retention, and the erasure of deleted bytes from
//!   the files within `storage.erase_within_secs`, with the maintenance thread that runs it
//!   and also keeps `storage.max_wal_mb` for a store that takes no writes.
//!
//! # Config keys it serves
//!
//! `storage.rocksdb_path`, `storage.sync_writes`, `storage.compression`,
//! `storage.erase_within_secs`, `storage.recent_cache_mb`, `storage.max_wal_mb`,
//! `retention.max_age_secs` and `server.node_id`, through
//! [`StoreOptions`].
//!
//! # Writes
//!
//! One [`Store::insert`](kalamdb_core::Store::insert) is one `WriteBatch` holding each message and its index entry, and for
//! each conversation it touches the new record (count, last message, `updated_at`) and the move
//! of its listing entries (`conversations.rs`), written atomically and, with `sync_writes`,
//! fsynced before it returns. Ids are assigned under the same
//! lock that orders the writes, so a message is never visible before one with a smaller id.
//! On open, the id generator is seeded with the highest stored id: ids keep increasing across
//! restarts.
//!
//! # Reads
//!
//! [`Store::query`](kalamdb_core::Store::query) sets the iterator's lower and upper bounds to the one conversation's key range
//! narrowed by the query's exclusive bounds, then reads `limit + 1` entries: a seek plus the
//! page, O(log n + limit), never touching another conversation's keys. Keys run newest first
//! ([`keys`]), so the usual newest-first page reads forward; an oldest-first page reads backward,
//! which in the memtable costs a skip-list search per step.
//!
//! Before any of that, the recent cache (`recent.rs`) answers the pages that lie in the newest
//! messages of a conversation read lately, exactly as the iterator would; the handle asks it
//! on the async worker itself ([`Store::query_in_memory`](kalamdb_core::Store::query_in_memory)),
//! so such a page needs no reader thread either.
//!
//! # Memtable
//!
//! The `messages` column family gives RocksDB a memtable insert hint keyed by each key's bucket
//! ([`keys::bucket`]): a message goes in from where its bucket's previous one went. Busy
//! conversations interleave, so without it every insert searched the skip list from the top,
//! the largest single cost of an insert (`docs/BENCHMARKS.md`).
//!
//! # Upgrades
//!
//! Opening a store of format version 1 or 2 rewrites its message keys into the current layout
//! before anything else reads it; one of version 3 or older gets its conversation records and
//! listings built from its messages (`docs/RELIABILITY.md`). Versions 4 and 5 are read as they
//! are: version 5 only marks stores that may hold deferred members' entries, which a version-4
//! build misreads, and version 6 stores that may hold deletes still to erase, which a version-5
//! build misreads.

mod conversations;
mod erase;
pub mod keys;
mod open;
mod options;
mod recent;
mod store;

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Mutex;

use kalamdb_core::{IdGenerator, MessageId, StoreError};
use rocksdb::{ColumnFamily, WriteOptions, DB};

pub use crate::conversations::{
    CATCH_UP_PER_WRITE, INDEXED_MEMBERS, LISTING_LAG_MS, MAX_DEFERRED, UNSAVED_MESSAGES,
};
pub use crate::erase::CHUNK;
use crate::keys::CF_IDEMPOTENCY;
use crate::open::highest_id;
pub use crate::open::OpenError;
pub use crate::options::{Compression, StoreOptions};
use crate::store::store_error;

/// The RocksDB-backed [`Store`](kalamdb_core::Store).
pub struct RocksStore {
    db: DB,
    path: PathBuf,
    /// Held across id assignment and the write, so ids become visible in increasing order.
    writer: Mutex<IdGenerator>,
    /// Conversation states the writer keeps between writes; locked only under `writer`.
    states: Mutex<conversations::StateCache>,
    sync_writes: bool,
    /// `StoreOptions::max_wal_bytes`, which the maintenance thread also keeps while no write
    /// comes (`erase.rs`).
    max_wal_bytes: u64,
    /// Built once: each write made its own, a C++ allocation and two calls across the FFI.
    write_options: WriteOptions,
    idempotency_ttl_ms: u64,
    closed: AtomicBool,
    /// The newest messages of recently read conversations (`recent.rs`).
    recent: recent::Recent,
    /// The erase queue's state, retention and the maintenance thread (`erase.rs`).
    eraser: erase::Eraser,
}

impl Drop for RocksStore {
    fn drop(&mut self) {
        self.stop_maintenance();
    }
}

impl std::fmt::Debug for RocksStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RocksStore")
            .field("path", &self.path)
            .field("sync_writes", &self.sync_writes)
            .finish_non_exhaustive()
    }
}

impl RocksStore {
    /// The database directory.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The highest message id stored, if any.
    pub fn last_id(&self) -> Result<Option<MessageId>, StoreError> {
        let seed = highest_id(&self.db).map_err(store_error)?;
        Ok((seed != MessageId::MIN).then_some(seed))
    }

    /// Compacts the idempotency column family now, so the TTL filter drops every expired key.
    /// The server does not need this (RocksDB's own and periodic compactions run the filter);
    /// it is for maintenance and tests.
    pub fn compact_idempotency_keys(&self) -> Result<(), StoreError> {
        self.ensure_open()?;
        let cf = self.cf(CF_IDEMPOTENCY);
        self.db.flush_cf(cf).map_err(store_error)?;
        self.db.compact_range_cf(cf, None::<&[u8]>, None::<&[u8]>);
        Ok(())
    }

    /// Bytes of the write-ahead log files in the database directory, obsolete ones RocksDB has
    /// not deleted yet included.
    fn wal_bytes(&self) -> Result<u64, StoreError> {
        let entries = std::fs::read_dir(&self.path).map_err(|e| {
            StoreError::Unavailable(format!("reading {}: {e}", self.path.display()))
        })?;
        Ok(entries
            .filter_map(Result::ok)
            .filter(|entry| entry.path().extension().is_some_and(|e| e == "log"))
            // A file RocksDB deleted since the listing holds nothing.
            .filter_map(|entry| entry.metadata().ok())
            .map(|metadata| metadata.len())
            .sum())
    }

    fn cf(&self, name: &str) -> &ColumnFamily {
        // Every column family in COLUMN_FAMILIES is created at open.
        self.db.cf_handle(name).expect("column family is opened")
    }

    fn ensure_open(&self) -> Result<(), StoreError> {
        if self.closed.load(Ordering::Acquire) {
            return Err(StoreError::Closed);
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::keys::COLUMN_FAMILIES;
    use crate::options::BLOCK_CACHE_BYTES;

    /// The messages column family's options are rebuilt from a string to set the insert hint;
    /// they must still read through the one shared block cache, like every other family.
    #[test]
    fn every_column_family_reads_through_the_shared_block_cache() {
        let dir = tempfile::tempdir().unwrap();
        let store = RocksStore::open(&StoreOptions::new(dir.path().join("db"))).unwrap();
        for name in COLUMN_FAMILIES {
            let capacity = store
                .db
                .property_int_value_cf(store.cf(name), "rocksdb.block-cache-capacity")
                .unwrap();
            assert_eq!(capacity, Some(BLOCK_CACHE_BYTES as u64), "{name}");
        }
    }
}

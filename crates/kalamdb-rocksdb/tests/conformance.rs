//! The [`Store`](kalamdb_core::Store) contract's shared suite (`kalamdb_core::conformance`) on a
//! real RocksDB, the same checks `MemStore` passes.

use std::sync::Arc;

use kalamdb_core::conformance::Fresh;
use kalamdb_rocksdb::{RocksStore, StoreOptions};

fn fresh() -> Fresh {
    let dir = tempfile::tempdir().expect("temp dir");
    let mut options = StoreOptions::new(dir.path().join("db"));
    options.sync_writes = false;
    let store = RocksStore::open(&options).expect("open");
    (Arc::new(store), Box::new(dir))
}

kalamdb_core::store_conformance!(fresh);

//! The `Store` contract (`kalamdb_core::conformance`) against the PostgreSQL store, on a server
//! the tests start themselves; each check gets a schema of its own.

use std::sync::Arc;

use kalamdb_core::conformance::Fresh;
use kalamdb_core::Store;
use kalamdb_postgres::testing::TestPostgres;

fn fresh() -> Fresh {
    let store: Arc<dyn Store> = TestPostgres::shared().fresh_store();
    (store, Box::new(()))
}

kalamdb_core::store_conformance!(fresh);

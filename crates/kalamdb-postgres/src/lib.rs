//! KalamDB's [`Store`](kalamdb_core::Store) on a PostgreSQL-protocol database: several
//! stateless KalamDB servers in front of one PostgreSQL, Citus, CockroachDB or YugabyteDB
//! (`../shared/DESIGN.md` §7, `docs/SCALING.md`).
//!
//! # Layout
//!
//! - [`sql`]: every statement and the versioned DDL, in the SQL all four engines run; a test
//!   lints them (`tests/sql_lint.rs`).
//! - `schema.rs`: creates the schema and brings an older version up at open, under a lock on
//!   its version row, so servers starting together migrate once.
//! - `lease.rs`: the server's node id, leased from the `node_leases` table with an expiry and
//!   renewed in the background; a server that loses it stops writing.
//! - `store.rs`: [`PgStore`], the `Store` itself: lock the conversation's head row, then mint
//!   its ids above the row's `last_id`, so a conversation's ids commit in order whichever
//!   server writes; retries of serialization failures and deadlocks, and the check of a
//!   `COMMIT` whose outcome is unknown.
//! - [`bus`]: the `postgres` live bus, `NOTIFY` after commit and `LISTEN`, PostgreSQL's own.
//! - `testing` (feature `test-util`): a PostgreSQL server of the tests' own on loopback.
//! - `error.rs`: database errors as [`StoreError`](kalamdb_core::StoreError)s.
//!
//! The `Store` trait is blocking; [`PgStore`] runs its connections on a small tokio runtime of
//! its own and blocks the calling thread on it, so it serves the handle's threads and plain
//! tests alike.

pub mod bus;
mod error;
mod lease;
mod schema;
pub mod sql;
mod store;
#[cfg(feature = "test-util")]
pub mod testing;

use std::time::Duration;

pub use store::PgStore;

/// What [`PgStore::open`] needs to know (`[storage.postgres]`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PgOptions {
    /// A libpq-style connection string or `postgres://` URL.
    pub url: String,
    /// The password, when it is not in `url` (read from a file by the server).
    pub password: Option<String>,
    /// The most connections this server opens: also the most transactions it runs at once.
    pub pool_size: usize,
    /// The schema the tables live in, created when missing: a lower-case identifier.
    pub schema: String,
    /// How long an idempotency key is remembered.
    pub idempotency_ttl: Duration,
    /// How long a node-id lease lasts without renewal; renewed every third of it.
    pub lease_ttl: Duration,
}

impl PgOptions {
    /// Options for the database at `url` with the defaults: 16 connections, schema `kalamdb`,
    /// keys kept a day, 10 s leases.
    pub fn new(url: impl Into<String>) -> Self {
        Self {
            url: url.into(),
            password: None,
            pool_size: 16,
            schema: "kalamdb".into(),
            idempotency_ttl: Duration::from_secs(86_400),
            lease_ttl: Duration::from_secs(10),
        }
    }
}

/// Why [`PgStore::open`] failed.
#[derive(Debug, thiserror::Error)]
pub enum OpenError {
    /// A setting is unusable; the message names it.
    #[error("{0}")]
    Config(String),
    /// The database could not be reached, migrated, or gave no node id.
    #[error("{0}")]
    Store(#[from] kalamdb_core::StoreError),
    /// The schema in the database is newer than this build understands.
    #[error("the schema {schema:?} is at version {found}, newer than this build's {supported}; run a newer kalamdb-server")]
    TooNew {
        /// The schema's name.
        schema: String,
        /// Its version.
        found: i32,
        /// This build's.
        supported: i32,
    },
}

//! How a failed statement becomes a [`StoreError`], and which failures are worth a retry.

use kalamdb_core::StoreError;
use tokio_postgres::error::SqlState;

/// Why one attempt at a transaction failed.
#[derive(Debug)]
pub(crate) enum Failure {
    /// The database refused or failed a statement.
    Db(tokio_postgres::Error),
    /// The `COMMIT` failed: when the connection broke, whether it committed is unknown.
    AtCommit(tokio_postgres::Error),
    /// No connection could be had from the pool.
    Pool(deadpool_postgres::PoolError),
    /// The answer is a store error as it is (not found, a conflict, a lost lease).
    Store(StoreError),
}

/// Wraps a statement's error.
pub(crate) fn db(e: tokio_postgres::Error) -> Failure {
    Failure::Db(e)
}

/// Wraps a `COMMIT`'s error.
pub(crate) fn at_commit(e: tokio_postgres::Error) -> Failure {
    Failure::AtCommit(e)
}

impl From<deadpool_postgres::PoolError> for Failure {
    fn from(e: deadpool_postgres::PoolError) -> Self {
        Failure::Pool(e)
    }
}

impl From<StoreError> for Failure {
    fn from(e: StoreError) -> Self {
        Failure::Store(e)
    }
}

impl From<kalamdb_core::IdError> for Failure {
    fn from(e: kalamdb_core::IdError) -> Self {
        Failure::Store(e.into())
    }
}

impl Failure {
    /// A serialization failure or a deadlock: the transaction did nothing and may simply run
    /// again. CockroachDB (serializable by default) and YugabyteDB report contention this way,
    /// and PostgreSQL a deadlock between two batches.
    ///
    /// So may one whose connection broke before its `COMMIT` was sent (the database rolls it
    /// back; a pooled connection that died idle, after a restart of the database, fails its
    /// next use this way), but not one whose `COMMIT` was lost on the way: that one may have
    /// committed, and only its caller can tell ([`Failure::connection_lost`]).
    pub(crate) fn retryable(&self) -> bool {
        let contention = |e: &tokio_postgres::Error| {
            e.code().is_some_and(|c| {
                *c == SqlState::T_R_SERIALIZATION_FAILURE || *c == SqlState::T_R_DEADLOCK_DETECTED
            })
        };
        match self {
            Failure::Db(e) => contention(e) || self.connection_lost(),
            Failure::AtCommit(e) => contention(e),
            Failure::Pool(_) | Failure::Store(_) => false,
        }
    }

    /// Whether the connection broke with no answer from the database: a `COMMIT` that failed
    /// this way may have committed or not.
    pub(crate) fn connection_lost(&self) -> bool {
        match self {
            Failure::Db(e) | Failure::AtCommit(e) => e.code().is_none() || e.is_closed(),
            Failure::Pool(_) | Failure::Store(_) => false,
        }
    }

    /// A `COMMIT`'s failure once it is known the transaction did not commit: it then retries
    /// as any failure before the `COMMIT` does.
    pub(crate) fn not_committed(self) -> Failure {
        match self {
            Failure::AtCommit(e) => Failure::Db(e),
            other => other,
        }
    }

    /// The store error a caller sees. Statement errors name their SQLSTATE and the database's
    /// message only, never the values of a statement (a message's content).
    pub(crate) fn into_store_error(self) -> StoreError {
        match self {
            Failure::Store(e) => e,
            Failure::Pool(deadpool_postgres::PoolError::Backend(e)) => {
                Failure::Db(e).into_store_error()
            }
            Failure::Pool(e) => StoreError::Unavailable(format!("no database connection: {e}")),
            Failure::Db(e) | Failure::AtCommit(e) => match e.as_db_error() {
                Some(db) => {
                    let code = db.code().code();
                    let text = format!("the database answered {code}: {}", db.message());
                    // Connection problems (08), resources (53), operator action (57) and
                    // contention that outlived the retries (40) clear up by themselves or by
                    // the operator's hand; anything else is a bug or a schema out of step.
                    if ["08", "53", "57", "40"].iter().any(|c| code.starts_with(c)) {
                        StoreError::Unavailable(text)
                    } else {
                        StoreError::Internal(text)
                    }
                }
                None => StoreError::Unavailable(format!("the database connection failed: {e}")),
            },
        }
    }
}

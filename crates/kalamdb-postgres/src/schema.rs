//! Creating the schema and upgrading it, at open.
//!
//! The version row is locked for the whole upgrade, so of several servers starting at once one
//! migrates and the others, waiting on the lock, find the work done. Each version's DDL runs in
//! one transaction with the bump of the version, so a failed upgrade leaves the previous
//! version whole (PostgreSQL, CockroachDB and YugabyteDB all run DDL in transactions; Citus
//! propagates it).

use deadpool_postgres::Pool;

use crate::error::{db, Failure};
use crate::sql::{fill, Sql, BOOTSTRAP, MIGRATIONS, SCHEMA_VERSION};
use crate::OpenError;

/// Brings the schema to [`SCHEMA_VERSION`]; the version it found.
pub(crate) async fn migrate(pool: &Pool, sql: &Sql) -> Result<i32, OpenError> {
    let fail = |f: Failure| OpenError::Store(f.into_store_error());
    let mut client = pool.get().await.map_err(|e| fail(e.into()))?;
    for statement in BOOTSTRAP {
        match client.batch_execute(&fill(statement, &sql.schema)).await {
            Ok(()) => {}
            // Two servers creating the schema at the same moment: one wins, the other's
            // IF NOT EXISTS can still trip over the catalog's unique index.
            Err(e) if e.code() == Some(&tokio_postgres::error::SqlState::UNIQUE_VIOLATION) => {}
            Err(e) => return Err(fail(db(e))),
        }
    }
    let tx = client.transaction().await.map_err(|e| fail(db(e)))?;
    let found: i32 = tx
        .query_one(&sql.lock_version, &[])
        .await
        .map_err(|e| fail(db(e)))?
        .get(0);
    if found > SCHEMA_VERSION {
        return Err(OpenError::TooNew {
            schema: sql.schema.clone(),
            found,
            supported: SCHEMA_VERSION,
        });
    }
    for version in found + 1..=SCHEMA_VERSION {
        for statement in MIGRATIONS[(version - 1) as usize] {
            tx.batch_execute(&fill(statement, &sql.schema))
                .await
                .map_err(|e| fail(db(e)))?;
        }
        tx.execute(&sql.set_version, &[&version])
            .await
            .map_err(|e| fail(db(e)))?;
        if found > 0 {
            tracing::info!(schema = %sql.schema, version, "upgraded the database schema");
        }
    }
    tx.commit().await.map_err(|e| fail(db(e)))?;
    Ok(found)
}

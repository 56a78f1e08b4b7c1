//! Node-id leases: each server takes a free 10-bit node id from the `node_leases` table and
//! holds it while it renews the row, so servers are added without editing config and two live
//! servers never stamp the same node id into their ids.
//!
//! Expiry is on the database's clock (one clock for every server). The holder keeps a local
//! deadline too: the start of its last successful renewal plus [`Lease::ttl`] less a margin.
//! A server whose deadline has passed (it could not renew: the database was unreachable) or
//! whose renewal found the row taken (it was stopped long enough for the lease to expire and be
//! taken) refuses every write from then on ([`Lease::check`]); reads go on.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use deadpool_postgres::Pool;
use kalamdb_core::id::MAX_NODE_ID;
use kalamdb_core::StoreError;

use crate::error::{db, Failure};
use crate::sql::Sql;

/// A held node id.
#[derive(Debug)]
pub(crate) struct Lease {
    pub(crate) node_id: u16,
    /// This process's token in the `holder` column.
    pub(crate) holder: String,
    pub(crate) ttl: Duration,
    /// Until when writes may go on without another renewal.
    deadline: Mutex<Instant>,
    /// Set for good once a renewal finds the row is no longer ours.
    lost: AtomicBool,
}

impl Lease {
    /// Takes the lowest free (or expired) node id.
    pub(crate) async fn acquire(pool: &Pool, sql: &Sql, ttl: Duration) -> Result<Lease, Failure> {
        let holder = uuid::Uuid::new_v4().to_string();
        let ttl_ms = i64::try_from(ttl.as_millis()).unwrap_or(i64::MAX);
        let client = pool.get().await?;
        // A handful of rounds: each loses only to another server taking the same id at the
        // same moment.
        for _ in 0..16 {
            let started = Instant::now();
            let rows = client.query(&sql.leases, &[]).await.map_err(db)?;
            let mut taken = vec![None; usize::from(MAX_NODE_ID) + 1];
            let mut now_ms = 0;
            for row in &rows {
                let node: i32 = row.get(0);
                now_ms = row.get(3);
                if let Some(slot) = usize::try_from(node).ok().and_then(|n| taken.get_mut(n)) {
                    *slot = Some((row.get::<_, String>(1), row.get::<_, i64>(2)));
                }
            }
            let Some(node) = taken
                .iter()
                .position(|slot| slot.as_ref().is_none_or(|(_, expires)| *expires < now_ms))
            else {
                return Err(Failure::Store(StoreError::Unavailable(format!(
                    "every node id (0-{MAX_NODE_ID}) is leased by a live server"
                ))));
            };
            let node_id = node as i32;
            let won = match &taken[node] {
                None => client
                    .execute(&sql.lease_insert, &[&node_id, &holder, &ttl_ms])
                    .await
                    .map_err(db)?,
                Some((old_holder, old_expiry)) => client
                    .execute(
                        &sql.lease_steal,
                        &[&node_id, &holder, &ttl_ms, old_holder, old_expiry],
                    )
                    .await
                    .map_err(db)?,
            };
            if won == 1 {
                return Ok(Lease {
                    node_id: node as u16,
                    holder,
                    ttl,
                    deadline: Mutex::new(started + margin(ttl)),
                    lost: AtomicBool::new(false),
                });
            }
        }
        Err(Failure::Store(StoreError::Unavailable(
            "could not lease a node id: other servers kept taking the free ones".into(),
        )))
    }

    /// Extends the lease; marks it lost when the row is no longer ours.
    pub(crate) async fn renew(&self, pool: &Pool, sql: &Sql) -> Result<(), Failure> {
        let started = Instant::now();
        let ttl_ms = i64::try_from(self.ttl.as_millis()).unwrap_or(i64::MAX);
        let client = pool.get().await?;
        let renewed = client
            .execute(
                &sql.lease_renew,
                &[&i32::from(self.node_id), &self.holder, &ttl_ms],
            )
            .await
            .map_err(db)?;
        if renewed == 1 {
            *self.deadline.lock().unwrap_or_else(|e| e.into_inner()) = started + margin(self.ttl);
        } else if !self.lost.swap(true, Ordering::SeqCst) {
            tracing::error!(
                node_id = self.node_id,
                "this server's node-id lease expired and was taken or removed; it refuses writes from now on: restart it"
            );
        }
        Ok(())
    }

    /// Fails when writes must stop: the lease is lost, or not renewed in time.
    pub(crate) fn check(&self) -> Result<(), StoreError> {
        if self.lost.load(Ordering::SeqCst) {
            return Err(StoreError::Unavailable(format!(
                "this server lost its lease on node id {}; restart it to take a new one",
                self.node_id
            )));
        }
        let deadline = *self.deadline.lock().unwrap_or_else(|e| e.into_inner());
        if Instant::now() >= deadline {
            return Err(StoreError::Unavailable(format!(
                "this server could not renew its lease on node id {} in time (is the database reachable?)",
                self.node_id
            )));
        }
        Ok(())
    }

    /// Gives the id back at a clean close, so the next server need not wait for the expiry.
    pub(crate) async fn release(&self, pool: &Pool, sql: &Sql) -> Result<(), Failure> {
        let client = pool.get().await?;
        client
            .execute(
                &sql.lease_release,
                &[&i32::from(self.node_id), &self.holder],
            )
            .await
            .map_err(db)?;
        Ok(())
    }
}

/// How long after a renewal began writes may go on: the ttl less a fifth, for the time the
/// renewal took to reach the database and for clocks that run at slightly different rates.
fn margin(ttl: Duration) -> Duration {
    ttl - ttl / 5
}

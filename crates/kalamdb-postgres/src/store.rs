//! [`PgStore`]: the [`Store`] contract in SQL; see the crate docs for the tour.

use std::collections::{BTreeMap, BTreeSet};
use std::future::Future;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use deadpool_postgres::{Manager, ManagerConfig, Pool, RecyclingMethod};
use kalamdb_core::conversation::{
    Conversation, ConversationPage, ConversationPatch, ConversationQuery, ListCursor, ListPosition,
    NewConversation,
};
use kalamdb_core::{
    Committed, IdGenerator, IdempotencyKey, IdempotencyRecord, Inserted, Message, MessageId,
    MessagePatch, Order, Page, PartStats, PreparedMessage, Query, Store, StoreError, StoredMessage,
};
use serde_json::{Map, Value};
use tokio_postgres::{NoTls, Row};

use crate::error::{at_commit, db, Failure};
use crate::lease::Lease;
use crate::sql::{insert_messages, valid_schema, Sql};
use crate::{schema, OpenError, PgOptions};

/// How often a transaction that lost to contention (a serialization failure or a deadlock) is
/// run again before the caller is told the store is unavailable.
const MAX_RETRIES: u32 = 8;
/// How far apart the servers' clocks may be for a listing's cursor to skip nothing
/// (`Inner::list`).
const HORIZON_SKEW: Duration = Duration::from_secs(5);
/// Snowflake ids per millisecond: the 22 bits below the timestamp.
const SNOWFLAKE_IDS_PER_MS: u64 = 1 << 22;
/// The most rows one `INSERT` carries: three parameters each, well under the protocol's
/// 65,535 parameters.
const ROWS_PER_INSERT: usize = 500;

/// The [`Store`] on a PostgreSQL-protocol database.
pub struct PgStore {
    /// `None` only while dropping (see `Drop`).
    runtime: Option<tokio::runtime::Runtime>,
    inner: Arc<Inner>,
}

/// What the background tasks share with the store.
struct Inner {
    pool: Pool,
    sql: Sql,
    ids: IdGenerator,
    lease: Lease,
    idempotency_ttl: Duration,
    closed: AtomicBool,
}

impl std::fmt::Debug for PgStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PgStore")
            .field("schema", &self.inner.sql.schema)
            .field("node_id", &self.inner.lease.node_id)
            .finish_non_exhaustive()
    }
}

/// A conversation's head row as an insert or delete finds it, locked.
#[derive(Debug, Clone)]
struct Head {
    last_id: i64,
    /// -1 for a row the running insert created.
    created_at: i64,
    updated_at: i64,
    activity: i64,
    message_count: i64,
    last_message_id: Option<i64>,
}

impl Head {
    fn from_row(row: &Row) -> Self {
        Head {
            last_id: row.get(0),
            created_at: row.get(1),
            updated_at: row.get(2),
            activity: row.get(3),
            message_count: row.get(4),
            last_message_id: row.get(5),
        }
    }
}

fn sql_id(id: MessageId) -> i64 {
    // Snowflake ids use 63 bits: always a positive BIGINT.
    id.as_u64() as i64
}

/// An id used as a bound (`since`, `before`): any `u64`, past the stored range included.
fn bound(id: MessageId) -> i64 {
    clamp(id.as_u64())
}

fn from_sql_id(id: i64) -> MessageId {
    MessageId::from_u64(id as u64)
}

fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

/// A `u64` from the API as a `BIGINT` bound: values past `i64::MAX` (which no stored figure
/// reaches) are `i64::MAX`.
fn clamp(value: u64) -> i64 {
    i64::try_from(value).unwrap_or(i64::MAX)
}

impl PgStore {
    /// Connects, creates or upgrades the schema, and leases a node id. It blocks, on the
    /// store's own runtime: from async code, call it through `spawn_blocking`.
    pub fn open(options: &PgOptions) -> Result<Self, OpenError> {
        if !valid_schema(&options.schema) {
            return Err(OpenError::Config(format!(
                "storage.postgres.schema: {:?} is not a lower-case SQL identifier (a-z, 0-9, _, at most 63 bytes)",
                options.schema
            )));
        }
        if options.pool_size == 0 {
            return Err(OpenError::Config(
                "storage.postgres.pool_size: must be at least 1".into(),
            ));
        }
        let mut pg: tokio_postgres::Config = options.url.parse().map_err(|e| {
            // The URL may carry a password: say what is wrong, never echo it.
            OpenError::Config(format!(
                "storage.postgres.url: not a PostgreSQL connection string ({e})"
            ))
        })?;
        if let Some(password) = &options.password {
            pg.password(password.as_bytes());
        }
        pg.connect_timeout(Duration::from_secs(5));
        pg.application_name("kalamdb-server");
        let manager = Manager::from_config(
            pg,
            NoTls,
            ManagerConfig {
                recycling_method: RecyclingMethod::Fast,
            },
        );
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .thread_name("kalamdb-postgres")
            .enable_all()
            .build()
            .map_err(|e| OpenError::Store(StoreError::Internal(format!("no runtime: {e}"))))?;
        let _entered = runtime.enter();
        let pool = Pool::builder(manager)
            .max_size(options.pool_size)
            .runtime(deadpool_postgres::Runtime::Tokio1)
            .wait_timeout(Some(Duration::from_secs(10)))
            .create_timeout(Some(Duration::from_secs(10)))
            .build()
            .map_err(|e| OpenError::Config(format!("storage.postgres: {e}")))?;
        let sql = Sql::new(&options.schema);
        let inner = runtime.block_on(async {
            schema::migrate(&pool, &sql).await?;
            let lease = Lease::acquire(&pool, &sql, options.lease_ttl)
                .await
                .map_err(|f| OpenError::Store(f.into_store_error()))?;
            let client = pool
                .get()
                .await
                .map_err(|e| OpenError::Store(Failure::from(e).into_store_error()))?;
            // Above every stored id, whichever server minted it: ids keep increasing across a
            // restart even when this machine's clock stepped back.
            let seed: Option<i64> = client
                .query_one(&sql.max_id, &[])
                .await
                .map_err(|e| OpenError::Store(db(e).into_store_error()))?
                .get(0);
            drop(client);
            let ids = IdGenerator::new(lease.node_id, seed.map_or(MessageId::MIN, from_sql_id))
                .map_err(|e| OpenError::Store(e.into()))?;
            tracing::info!(node_id = lease.node_id, schema = %sql.schema, "leased a node id from the database");
            Ok::<_, OpenError>(Inner {
                pool,
                sql,
                ids,
                lease,
                idempotency_ttl: options.idempotency_ttl,
                closed: AtomicBool::new(false),
            })
        })?;
        let inner = Arc::new(inner);
        runtime.spawn(upkeep(Arc::clone(&inner)));
        drop(_entered);
        Ok(PgStore {
            runtime: Some(runtime),
            inner,
        })
    }

    /// The node id this server leased.
    pub fn node_id(&self) -> u16 {
        self.inner.lease.node_id
    }

    /// Runs `work` on the store's runtime, blocking this thread until it is done.
    fn run<T>(&self, work: impl Future<Output = Result<T, Failure>>) -> Result<T, StoreError> {
        if self.inner.closed.load(Ordering::SeqCst) {
            return Err(StoreError::Closed);
        }
        let Some(runtime) = &self.runtime else {
            return Err(StoreError::Closed);
        };
        runtime.block_on(work).map_err(Failure::into_store_error)
    }
}

impl Drop for PgStore {
    fn drop(&mut self) {
        // Dropping a runtime blocks, which tokio forbids inside another runtime's task (the
        // server's handle may be dropped there); this one's tasks need no waiting for.
        if let Some(runtime) = self.runtime.take() {
            runtime.shutdown_background();
        }
    }
}

/// Renews the lease every third of its ttl, and drops expired idempotency records.
async fn upkeep(inner: Arc<Inner>) {
    let every = inner.lease.ttl / 3;
    let mut tick = tokio::time::interval(every);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    tick.tick().await;
    let mut rounds: u64 = 0;
    while !inner.closed.load(Ordering::SeqCst) {
        tick.tick().await;
        if let Err(e) = inner.lease.renew(&inner.pool, &inner.sql).await {
            tracing::warn!(error = %e.into_store_error(), "could not renew the node-id lease; will retry");
        }
        rounds += 1;
        // About once a minute with the default ttl: a bounded delete of expired keys.
        if rounds.is_multiple_of(18) {
            let oldest = clamp(now_ms().saturating_sub(inner.idempotency_ttl.as_millis() as u64));
            if let Ok(client) = inner.pool.get().await {
                if let Err(e) = client
                    .execute(&inner.sql.idempotency_expire, &[&oldest])
                    .await
                {
                    tracing::warn!(error = %db(e).into_store_error(), "could not drop expired idempotency keys");
                }
            }
        }
    }
}

/// Runs `$attempt` (an expression giving a future of `Result<_, Failure>`) again after each
/// retryable failure, with a short growing pause.
macro_rules! retrying {
    ($attempt:expr) => {{
        let mut tries = 0u32;
        loop {
            match attempt_result($attempt.await) {
                Err(failure) if failure.retryable() && tries < MAX_RETRIES => {
                    tries += 1;
                    tokio::time::sleep(Duration::from_millis(u64::from(tries * tries))).await;
                }
                other => break other,
            }
        }
    }};
}

/// Pins the type of one attempt's result, which the retry loop inspects.
fn attempt_result<T>(result: Result<T, Failure>) -> Result<T, Failure> {
    result
}

impl Inner {
    async fn client(&self) -> Result<deadpool_postgres::Object, Failure> {
        Ok(self.pool.get().await?)
    }

    /// One attempt at an insert: lock each conversation's head row (in byte order of the ids,
    /// so two batches never wait on each other in a cycle), mint ids above the highest
    /// `last_id`, write messages, heads and keys, commit.
    async fn insert_once(
        &self,
        messages: &[PreparedMessage],
        keys: &[(usize, IdempotencyKey)],
    ) -> Result<Committed, Failure> {
        let mut client = self.client().await?;
        let tx = client.transaction().await.map_err(db)?;
        // Byte order of the ids (a BTreeSet's), the same in every transaction.
        let conversations: BTreeSet<&str> = messages
            .iter()
            .map(PreparedMessage::conversation_id)
            .collect();
        let upsert = tx
            .prepare_cached(&self.sql.lock_head_upsert)
            .await
            .map_err(db)?;
        let mut heads: BTreeMap<&str, Head> = BTreeMap::new();
        for conversation_id in conversations {
            let row = tx
                .query_one(&upsert, &[&conversation_id, &-1i64])
                .await
                .map_err(db)?;
            heads.insert(conversation_id, Head::from_row(&row));
        }
        // Mint under the locks, above the highest id any of them holds.
        if let Some(highest) = heads.values().map(|h| h.last_id).max() {
            self.ids.observe(from_sql_id(highest));
        }
        let mut inserted = Vec::with_capacity(messages.len());
        let mut prev = Vec::with_capacity(messages.len());
        let mut bodies = Vec::with_capacity(messages.len());
        for message in messages {
            let id = self.ids.next_id()?;
            let head = heads
                .get_mut(message.conversation_id())
                .ok_or_else(|| StoreError::Internal("a message without its head row".into()))?;
            prev.push(from_sql_id(head.last_id));
            let at = id.timestamp_ms() as i64;
            head.last_id = sql_id(id);
            head.activity = sql_id(id);
            head.message_count += 1;
            head.last_message_id = Some(sql_id(id));
            head.updated_at = head.updated_at.max(at);
            if head.created_at < 0 {
                head.created_at = at;
            }
            bodies.push(message.to_json(id));
            inserted.push(Inserted {
                msg_id: id,
                conversation_id: message.conversation_id().to_owned(),
                timestamp: id.timestamp_ms(),
            });
        }
        for (chunk, answers) in bodies
            .chunks(ROWS_PER_INSERT)
            .zip(inserted.chunks(ROWS_PER_INSERT))
        {
            // The one-message insert, the common case, is built once at open.
            let statement = match chunk.len() {
                1 => tx.prepare_cached(&self.sql.insert_one).await,
                rows => {
                    tx.prepare_cached(&insert_messages(&self.sql.schema, rows))
                        .await
                }
            }
            .map_err(db)?;
            let ids: Vec<i64> = answers.iter().map(|a| sql_id(a.msg_id)).collect();
            let mut params: Vec<&(dyn tokio_postgres::types::ToSql + Sync)> =
                Vec::with_capacity(chunk.len() * 3);
            for ((body, answer), id) in chunk.iter().zip(answers).zip(&ids) {
                params.push(&answer.conversation_id);
                params.push(id);
                params.push(body);
            }
            tx.execute(&statement, &params).await.map_err(db)?;
        }
        let update = tx
            .prepare_cached(&self.sql.update_head_after_insert)
            .await
            .map_err(db)?;
        for (conversation_id, head) in &heads {
            tx.execute(
                &update,
                &[
                    conversation_id,
                    &head.last_id,
                    &head.created_at,
                    &head.updated_at,
                    &head.activity,
                    &head.message_count,
                    &head.last_message_id,
                ],
            )
            .await
            .map_err(db)?;
        }
        for (index, key) in keys {
            let answer = inserted.get(*index).ok_or_else(|| {
                StoreError::Internal(format!("an idempotency key for no message ({index})"))
            })?;
            let oldest = self.oldest_key_ms();
            let drop_expired = tx
                .prepare_cached(&self.sql.idempotency_drop_expired)
                .await
                .map_err(db)?;
            tx.execute(&drop_expired, &[&key.key, &oldest])
                .await
                .map_err(db)?;
            let put = tx
                .prepare_cached(&self.sql.idempotency_put)
                .await
                .map_err(db)?;
            let put = tx
                .execute(
                    &put,
                    &[
                        &key.key,
                        &key.fingerprint.as_slice(),
                        &(now_ms() as i64),
                        &answer.conversation_id,
                        &sql_id(answer.msg_id),
                        &(answer.timestamp as i64),
                    ],
                )
                .await
                .map_err(db)?;
            if put == 0 {
                // Another server stored a request with this key since the handle looked:
                // answer as it was answered, store nothing.
                drop(tx);
                return self.replay(key, messages.len()).await;
            }
        }
        self.lease.check()?;
        let first = inserted
            .first()
            .map(|a| (a.conversation_id.clone(), a.msg_id));
        match tx.commit().await.map_err(at_commit) {
            Ok(()) => {}
            Err(failure) if failure.connection_lost() => {
                // The COMMIT may have landed before the connection broke: the minted ids say.
                // Not landed, it is an insert that never happened, and runs again.
                let Some((conversation_id, id)) = first else {
                    return Err(failure);
                };
                drop(client);
                if !self.stored(&conversation_id, id).await? {
                    tracing::warn!(
                        "a commit's connection broke before it landed; retrying the insert"
                    );
                    return Err(failure.not_committed());
                }
                tracing::warn!("a commit's connection broke; its messages were found stored");
            }
            Err(failure) => return Err(failure),
        }
        Ok(Committed {
            inserted,
            prev,
            replayed: false,
        })
    }

    /// Locks a conversation's head row in `tx`: every change to a conversation takes it first,
    /// so changes to one conversation run one at a time. `None` when it does not exist.
    async fn lock_head(
        &self,
        tx: &deadpool_postgres::Transaction<'_>,
        conversation_id: &str,
    ) -> Result<Option<Head>, Failure> {
        let statement = tx.prepare_cached(&self.sql.lock_head).await.map_err(db)?;
        let row = tx
            .query_opt(&statement, &[&conversation_id])
            .await
            .map_err(db)?;
        Ok(row.map(|row| Head::from_row(&row)))
    }

    /// Whether a message is stored, on a fresh connection.
    async fn stored(&self, conversation_id: &str, id: MessageId) -> Result<bool, Failure> {
        let client = self.client().await?;
        Ok(client
            .query_opt(&self.sql.stored, &[&conversation_id, &sql_id(id)])
            .await
            .map_err(db)?
            .is_some())
    }

    /// The answer to a request whose key another request took first.
    async fn replay(&self, key: &IdempotencyKey, count: usize) -> Result<Committed, Failure> {
        let record = self.idempotency_record(&key.key).await?.ok_or_else(|| {
            // Taken, then gone: it expired or its conversation was deleted in between.
            Failure::Store(StoreError::Unavailable(
                "an idempotency key changed hands while this request was stored; retry it".into(),
            ))
        })?;
        if record.fingerprint != key.fingerprint {
            return Err(Failure::Store(StoreError::IdempotencyConflict(
                key.key.clone(),
            )));
        }
        if count != 1 {
            return Err(Failure::Store(StoreError::Conflict(format!(
                "the idempotency key {:?} was used by another request meanwhile",
                key.key
            ))));
        }
        Ok(Committed {
            inserted: vec![record.inserted],
            prev: Vec::new(),
            replayed: true,
        })
    }

    fn oldest_key_ms(&self) -> i64 {
        clamp(now_ms().saturating_sub(self.idempotency_ttl.as_millis() as u64))
    }

    async fn idempotency_record(&self, key: &str) -> Result<Option<IdempotencyRecord>, Failure> {
        let client = self.client().await?;
        let statement = client
            .prepare_cached(&self.sql.idempotency_get)
            .await
            .map_err(db)?;
        let row = client
            .query_opt(&statement, &[&key, &self.oldest_key_ms()])
            .await
            .map_err(db)?;
        let Some(row) = row else {
            return Ok(None);
        };
        let fingerprint: Vec<u8> = row.get(0);
        let fingerprint: [u8; 32] = fingerprint.try_into().map_err(|_| {
            StoreError::Corrupt(format!("idempotency key {key:?}: bad fingerprint"))
        })?;
        Ok(Some(IdempotencyRecord {
            fingerprint,
            created_ms: row.get::<_, i64>(1) as u64,
            inserted: Inserted {
                conversation_id: row.get(2),
                msg_id: from_sql_id(row.get(3)),
                timestamp: row.get::<_, i64>(4) as u64,
            },
        }))
    }

    /// The conversation of a message, by id.
    async fn conversation_of(&self, id: MessageId) -> Result<Option<String>, Failure> {
        let client = self.client().await?;
        let statement = client.prepare_cached(&self.sql.get).await.map_err(db)?;
        let Some(row) = client
            .query_opt(&statement, &[&sql_id(id)])
            .await
            .map_err(db)?
        else {
            return Ok(None);
        };
        let stored = StoredMessage {
            msg_id: id,
            json: row.get(0),
        };
        let conversation_id = stored
            .conversation_id()
            .map_err(|e| StoreError::Corrupt(format!("message {id}: {e}")))?;
        Ok(Some(conversation_id))
    }

    async fn record(
        &self,
        client: &impl tokio_postgres::GenericClient,
        conversation_id: &str,
    ) -> Result<Option<Conversation>, Failure> {
        let row = client
            .query_opt(&self.sql.record, &[&conversation_id])
            .await
            .map_err(db)?;
        row.map(|row| conversation(&row)).transpose()
    }

    async fn update_message_once(
        &self,
        id: MessageId,
        patch: &MessagePatch,
    ) -> Result<Option<StoredMessage>, Failure> {
        let Some(conversation_id) = self.conversation_of(id).await? else {
            return Ok(None);
        };
        let mut client = self.client().await?;
        let tx = client.transaction().await.map_err(db)?;
        let Some(head) = self.lock_head(&tx, &conversation_id).await? else {
            return Ok(None);
        };
        // Read again under the lock: the message may have been deleted or edited meanwhile.
        let Some(row) = tx
            .query_opt(&self.sql.get_in, &[&conversation_id, &sql_id(id)])
            .await
            .map_err(db)?
        else {
            return Ok(None);
        };
        let body: Vec<u8> = row.get(0);
        let mut message: Message = serde_json::from_slice(&body)
            .map_err(|e| StoreError::Corrupt(format!("message {id}: {e}")))?;
        let minted = self.ids.next_id()?;
        let at = minted.timestamp_ms() as i64;
        message.apply(patch, minted.timestamp_ms());
        let json = message.to_json();
        tx.execute(&self.sql.set_body, &[&conversation_id, &sql_id(id), &json])
            .await
            .map_err(db)?;
        tx.execute(
            &self.sql.touch_head,
            &[&conversation_id, &head.updated_at.max(at), &sql_id(minted)],
        )
        .await
        .map_err(db)?;
        self.lease.check()?;
        tx.commit().await.map_err(at_commit)?;
        Ok(Some(StoredMessage { msg_id: id, json }))
    }

    /// Deletes the messages `delete` removes from a locked conversation and keeps its record
    /// exact: `None` when the conversation does not exist.
    async fn delete_once(
        &self,
        conversation_id: &str,
        delete: Deletion,
    ) -> Result<Option<u64>, Failure> {
        let mut client = self.client().await?;
        let tx = client.transaction().await.map_err(db)?;
        let Some(head) = self.lock_head(&tx, conversation_id).await? else {
            return Ok(None);
        };
        let deleted = match delete {
            Deletion::One(id) => tx
                .execute(&self.sql.delete_one, &[&conversation_id, &sql_id(id)])
                .await
                .map_err(db)?,
            Deletion::Below(before) => tx
                .execute(&self.sql.delete_below, &[&conversation_id, &bound(before)])
                .await
                .map_err(db)?,
        };
        if deleted > 0 {
            let newest: Option<i64> = tx
                .query_opt(&self.sql.newest, &[&conversation_id])
                .await
                .map_err(db)?
                .map(|row| row.get(0));
            let count = (head.message_count - deleted as i64).max(0);
            tx.execute(
                &self.sql.update_head_after_delete,
                &[&conversation_id, &count, &newest],
            )
            .await
            .map_err(db)?;
        }
        self.lease.check()?;
        tx.commit().await.map_err(at_commit)?;
        Ok(Some(deleted))
    }

    async fn delete_conversation_once(&self, conversation_id: &str) -> Result<bool, Failure> {
        let mut client = self.client().await?;
        let tx = client.transaction().await.map_err(db)?;
        if self.lock_head(&tx, conversation_id).await?.is_none() {
            return Ok(false);
        }
        for statement in [
            &self.sql.delete_all,
            &self.sql.remove_members,
            &self.sql.idempotency_drop_conversation,
            &self.sql.delete_head,
        ] {
            tx.execute(statement, &[&conversation_id])
                .await
                .map_err(db)?;
        }
        self.lease.check()?;
        tx.commit().await.map_err(at_commit)?;
        Ok(true)
    }

    async fn create_once(&self, new: &NewConversation) -> Result<Conversation, Failure> {
        let minted = self.ids.next_id()?;
        let id = match &new.conversation_id {
            Some(id) => id.clone(),
            None => format!("conv_{minted}"),
        };
        let metadata = Value::Object(new.metadata.clone()).to_string();
        let mut client = self.client().await?;
        let tx = client.transaction().await.map_err(db)?;
        let created = tx
            .execute(
                &self.sql.create_head,
                &[
                    &id,
                    &(minted.timestamp_ms() as i64),
                    &sql_id(minted),
                    &new.title,
                    &metadata,
                ],
            )
            .await
            .map_err(db)?;
        if created == 0 {
            return Err(Failure::Store(StoreError::Conflict(format!(
                "conversation {id:?} already exists"
            ))));
        }
        for member in &new.members {
            tx.execute(&self.sql.add_member, &[&id, member])
                .await
                .map_err(db)?;
        }
        self.lease.check()?;
        tx.commit().await.map_err(at_commit)?;
        Ok(Conversation {
            conversation_id: id,
            created_at: minted.timestamp_ms(),
            updated_at: minted.timestamp_ms(),
            message_count: 0,
            last_message: None,
            title: new.title.clone(),
            metadata: new.metadata.clone(),
        })
    }

    async fn update_conversation_once(
        &self,
        conversation_id: &str,
        patch: &ConversationPatch,
    ) -> Result<Option<Conversation>, Failure> {
        let mut client = self.client().await?;
        if !patch.is_empty() {
            let tx = client.transaction().await.map_err(db)?;
            let Some(head) = self.lock_head(&tx, conversation_id).await? else {
                return Ok(None);
            };
            let Some(current) = self.record(&*tx, conversation_id).await? else {
                return Ok(None);
            };
            let title = match &patch.title {
                Some(title) => title.clone(),
                None => current.title,
            };
            let metadata = match &patch.metadata {
                Some(metadata) => metadata.clone().unwrap_or_default(),
                None => current.metadata,
            };
            let minted = self.ids.next_id()?;
            let updated_at = head.updated_at.max(minted.timestamp_ms() as i64);
            tx.execute(
                &self.sql.patch_head,
                &[
                    &conversation_id,
                    &title,
                    &Value::Object(metadata).to_string(),
                    &updated_at,
                    &sql_id(minted),
                ],
            )
            .await
            .map_err(db)?;
            self.lease.check()?;
            tx.commit().await.map_err(at_commit)?;
        }
        self.record(&**client, conversation_id).await
    }

    async fn list(&self, query: &ConversationQuery) -> Result<ConversationPage, Failure> {
        let client = self.client().await?;
        // On the first page everything stands at its `updated_at`; the cursor carries the
        // horizon for the pages after it. Activity ids come from several servers' clocks, so a
        // change committed after this read may carry an id below the highest one seen: the
        // horizon is set back by HORIZON_SKEW, and a conversation changed within it counts as
        // moved (it may be listed twice, never skipped).
        let (horizon, next_horizon) = match &query.cursor {
            Some(cursor) => (clamp(cursor.horizon), cursor.horizon),
            None => {
                let highest = client
                    .query_one(&self.sql.horizon, &[])
                    .await
                    .map_err(db)?
                    .get::<_, Option<i64>>(0)
                    .unwrap_or(0);
                let skew = HORIZON_SKEW.as_millis() as u64 * SNOWFLAKE_IDS_PER_MS;
                (i64::MAX, (highest as u64).saturating_sub(skew))
            }
        };
        let (after_at, after_id) = match &query.cursor {
            Some(cursor) => (
                clamp(cursor.after.at.0),
                cursor.after.conversation_id.as_str(),
            ),
            None => (i64::MAX, ""),
        };
        let limit = i64::try_from(query.limit.saturating_add(1)).unwrap_or(i64::MAX);
        let (by_updated, moved) = match &query.member {
            Some(_) => (
                &self.sql.list_member_by_updated,
                &self.sql.list_member_moved,
            ),
            None => (&self.sql.list_by_updated, &self.sql.list_moved),
        };
        let mut listed: Vec<(ListPosition, Conversation)> = Vec::new();
        for statement in [by_updated, moved] {
            let rows = match &query.member {
                Some(member) => client
                    .query(statement, &[&horizon, &after_at, &after_id, &limit, member])
                    .await
                    .map_err(db)?,
                None => client
                    .query(statement, &[&horizon, &after_at, &after_id, &limit])
                    .await
                    .map_err(db)?,
            };
            for row in rows {
                let record = conversation(&row)?;
                let at: i64 = row.get(9);
                listed.push((
                    ListPosition::new(at as u64, record.conversation_id.clone()),
                    record,
                ));
            }
        }
        listed.sort_by(|a, b| a.0.cmp(&b.0));
        let has_more = listed.len() > query.limit;
        listed.truncate(query.limit);
        let next_cursor = listed
            .last()
            .filter(|_| has_more)
            .map(|(at, _)| ListCursor {
                horizon: next_horizon,
                after: at.clone(),
            });
        Ok(ConversationPage {
            conversations: listed.into_iter().map(|(_, c)| c).collect(),
            has_more,
            next_cursor,
        })
    }
}

/// What a delete removes from one conversation.
#[derive(Debug, Clone, Copy)]
enum Deletion {
    One(MessageId),
    Below(MessageId),
}

/// A record from the columns `sql::RECORD` names.
fn conversation(row: &Row) -> Result<Conversation, Failure> {
    let conversation_id: String = row.get(0);
    let metadata: String = row.get(5);
    let metadata: Map<String, Value> = serde_json::from_str(&metadata).map_err(|e| {
        StoreError::Corrupt(format!("conversation {conversation_id:?}: metadata: {e}"))
    })?;
    let last_id: Option<i64> = row.get(7);
    let body: Option<Vec<u8>> = row.get(8);
    let last_message = last_id.zip(body).map(|(id, json)| StoredMessage {
        msg_id: from_sql_id(id),
        json,
    });
    Ok(Conversation {
        conversation_id,
        created_at: row.get::<_, i64>(1) as u64,
        updated_at: row.get::<_, i64>(2) as u64,
        message_count: row.get::<_, i64>(3) as u64,
        last_message,
        title: row.get(4),
        metadata,
    })
}

impl Store for PgStore {
    fn orders_writes(&self) -> bool {
        true
    }

    fn insert_ordered(
        &self,
        messages: &[PreparedMessage],
        keys: &[(usize, IdempotencyKey)],
    ) -> Result<Committed, StoreError> {
        if messages.is_empty() {
            return Ok(Committed {
                inserted: Vec::new(),
                prev: Vec::new(),
                replayed: false,
            });
        }
        self.inner.lease.check()?;
        let inner = &self.inner;
        self.run(async { retrying!(inner.insert_once(messages, keys)) })
    }

    fn insert_with_keys(
        &self,
        messages: &[PreparedMessage],
        keys: &[(usize, IdempotencyKey)],
    ) -> Result<Vec<Inserted>, StoreError> {
        self.insert_ordered(messages, keys).map(|c| c.inserted)
    }

    fn idempotency_record(&self, key: &str) -> Result<Option<IdempotencyRecord>, StoreError> {
        self.run(async { retrying!(self.inner.idempotency_record(key)) })
    }

    fn get(&self, id: MessageId) -> Result<Option<StoredMessage>, StoreError> {
        let inner = &self.inner;
        self.run(async {
            retrying!(async {
                let client = inner.client().await?;
                let statement = client.prepare_cached(&inner.sql.get).await.map_err(db)?;
                let row = client
                    .query_opt(&statement, &[&sql_id(id)])
                    .await
                    .map_err(db)?;
                Ok(row.map(|row| StoredMessage {
                    msg_id: id,
                    json: row.get(0),
                }))
            })
        })
    }

    fn query(&self, query: &Query) -> Result<Page, StoreError> {
        let inner = &self.inner;
        self.run(async {
            retrying!(async {
                let above = query.since.map_or(-1, bound);
                let below = query.before.map_or(i64::MAX, bound);
                let limit = i64::try_from(query.limit.saturating_add(1)).unwrap_or(i64::MAX);
                let statement = match query.order {
                    Order::Asc => &inner.sql.page_asc,
                    Order::Desc => &inner.sql.page_desc,
                };
                let client = inner.client().await?;
                let statement = client.prepare_cached(statement).await.map_err(db)?;
                let rows = client
                    .query(
                        &statement,
                        &[&query.conversation_id, &above, &below, &limit],
                    )
                    .await
                    .map_err(db)?;
                let mut messages: Vec<StoredMessage> = rows
                    .iter()
                    .map(|row| StoredMessage {
                        msg_id: from_sql_id(row.get(0)),
                        json: row.get(1),
                    })
                    .collect();
                let has_more = messages.len() > query.limit;
                messages.truncate(query.limit);
                Ok(Page { messages, has_more })
            })
        })
    }

    fn create_conversation(&self, new: &NewConversation) -> Result<Conversation, StoreError> {
        self.inner.lease.check()?;
        let inner = &self.inner;
        self.run(async { retrying!(inner.create_once(new)) })
    }

    fn conversation(&self, conversation_id: &str) -> Result<Option<Conversation>, StoreError> {
        let inner = &self.inner;
        self.run(async {
            retrying!(async {
                let client = inner.client().await?;
                inner.record(&**client, conversation_id).await
            })
        })
    }

    fn list_conversations(
        &self,
        query: &ConversationQuery,
    ) -> Result<ConversationPage, StoreError> {
        self.run(async { retrying!(self.inner.list(query)) })
    }

    fn update_conversation(
        &self,
        conversation_id: &str,
        patch: &ConversationPatch,
    ) -> Result<Option<Conversation>, StoreError> {
        let inner = &self.inner;
        self.run(async { retrying!(inner.update_conversation_once(conversation_id, patch)) })
    }

    fn is_member(&self, conversation_id: &str, user_id: &str) -> Result<Option<bool>, StoreError> {
        let inner = &self.inner;
        self.run(async {
            retrying!(async {
                let client = inner.client().await?;
                let statement = client
                    .prepare_cached(&inner.sql.is_member)
                    .await
                    .map_err(db)?;
                let row = client
                    .query_opt(&statement, &[&conversation_id, &user_id])
                    .await
                    .map_err(db)?;
                Ok(row.map(|row| row.get::<_, Option<String>>(0).is_some()))
            })
        })
    }

    fn members(&self, conversation_id: &str) -> Result<Option<Vec<String>>, StoreError> {
        let inner = &self.inner;
        self.run(async {
            retrying!(async {
                let client = inner.client().await?;
                if client
                    .query_opt(&inner.sql.exists, &[&conversation_id])
                    .await
                    .map_err(db)?
                    .is_none()
                {
                    return Ok(None);
                }
                let mut members: Vec<String> = client
                    .query(&inner.sql.members, &[&conversation_id])
                    .await
                    .map_err(db)?
                    .iter()
                    .map(|row| row.get(0))
                    .collect();
                // Byte order, whatever the database's collation.
                members.sort_unstable();
                Ok(Some(members))
            })
        })
    }

    fn set_member(
        &self,
        conversation_id: &str,
        user_id: &str,
        member: bool,
    ) -> Result<bool, StoreError> {
        let inner = &self.inner;
        self.run(async {
            retrying!(async {
                let mut client = inner.client().await?;
                let tx = client.transaction().await.map_err(db)?;
                // Locked, so a member is never added to a conversation being deleted.
                if inner.lock_head(&tx, conversation_id).await?.is_none() {
                    return Ok(false);
                }
                let statement = if member {
                    &inner.sql.add_member
                } else {
                    &inner.sql.remove_member
                };
                tx.execute(statement, &[&conversation_id, &user_id])
                    .await
                    .map_err(db)?;
                tx.commit().await.map_err(at_commit)?;
                Ok::<_, Failure>(true)
            })
        })
    }

    fn update_message(
        &self,
        id: MessageId,
        patch: &MessagePatch,
    ) -> Result<Option<StoredMessage>, StoreError> {
        self.inner.lease.check()?;
        let inner = &self.inner;
        self.run(async { retrying!(inner.update_message_once(id, patch)) })
    }

    fn delete_message(&self, id: MessageId) -> Result<Option<String>, StoreError> {
        let inner = &self.inner;
        self.run(async {
            retrying!(async {
                let Some(conversation_id) = inner.conversation_of(id).await? else {
                    return Ok(None);
                };
                let deleted = inner
                    .delete_once(&conversation_id, Deletion::One(id))
                    .await?;
                Ok::<_, Failure>(deleted.filter(|n| *n > 0).map(|_| conversation_id))
            })
        })
    }

    fn trim_conversation(
        &self,
        conversation_id: &str,
        before: MessageId,
    ) -> Result<Option<u64>, StoreError> {
        let inner = &self.inner;
        self.run(async { retrying!(inner.delete_once(conversation_id, Deletion::Below(before))) })
    }

    fn delete_conversation(&self, conversation_id: &str) -> Result<bool, StoreError> {
        let inner = &self.inner;
        self.run(async { retrying!(inner.delete_conversation_once(conversation_id)) })
    }

    fn health_check(&self) -> Result<(), StoreError> {
        let inner = &self.inner;
        self.run(async {
            retrying!(async {
                let client = inner.client().await?;
                client.execute(&inner.sql.ping, &[]).await.map_err(db)?;
                Ok(())
            })
        })
    }

    fn flush(&self) -> Result<(), StoreError> {
        // Every write is committed (and so durable, as the database is configured) before it
        // returns: nothing is buffered here.
        self.run(async { Ok(()) })
    }

    fn stats(&self) -> Result<Vec<PartStats>, StoreError> {
        // Exact counts would scan whole tables, and size estimates are each engine's own
        // catalog: the database's own monitoring reports these better.
        self.run(async { Ok(Vec::new()) })
    }

    fn close(&self) -> Result<(), StoreError> {
        if self.inner.closed.swap(true, Ordering::SeqCst) {
            return Ok(());
        }
        let Some(runtime) = &self.runtime else {
            return Ok(());
        };
        let inner = &self.inner;
        let released = runtime.block_on(inner.lease.release(&inner.pool, &inner.sql));
        inner.pool.close();
        released.map_err(Failure::into_store_error)
    }
}

//! [`StoreHandle`]: the async face of a [`Store`], over a group-commit writer and a reader pool.
//!
//! - `mod.rs` (this file): the facade endpoints hold; every method here sends work to one of
//!   the two below and awaits its answer.
//! - `writer.rs`: the group-commit writer. Inserts do not call the store from the request's
//!   task. They queue to one writer thread, which takes every insert waiting at that moment and
//!   stores them with a single `Store::insert_with_keys` call: one atomic write and one WAL sync
//!   for the whole group. Each request still waits until its own messages are durable. Because
//!   that one thread is the store's only writer, the order it commits in is the order the store
//!   mints ids in, and a message never becomes visible before one with a smaller id (the
//!   [`Store`] contract). Each request encodes its own messages first ([`PreparedMessage`]), so
//!   the writer only splices ids in. After a group commits, the writer publishes its messages to
//!   the conversations' live subscribers ([`crate::live`]); it is the only publisher, so
//!   subscribers see commit order. For a store that does not sync its writes the writer is, on
//!   Linux, a `SCHED_BATCH` thread: on a core it shares with a worker it does not take the core
//!   the moment the worker queues an insert, but finds that worker's inserts waiting together.
//! - `ordered.rs`: the insert path of a store that [orders its own writes](Store::orders_writes)
//!   (the PostgreSQL store of `../shared/DESIGN.md` §7, several servers on one database): each
//!   request is its own store call on tokio's blocking pool, many at once, and its messages go
//!   to the subscribers, and to the [`Bus`] of other servers when one is attached
//!   ([`StoreHandle::attach_bus`]), with the id before each, so a stream notices a message it
//!   did not hear of. The writer thread then only orders edits' and deletes' events.
//! - `readers.rs`: reads run on a few reader threads of their own
//!   ([`StoreHandle::with_read_limit`], one per core by default), so a slow disk never stalls
//!   the async workers. A busy reader takes the next read straight from the queue. Conversation
//!   changes, edits and single deletes run there too (the store orders them under its own
//!   lock); trims and conversation deletes, which may read a million ids first, run on tokio's
//!   blocking pool instead. An edit's or delete's live event then goes through the writer's
//!   queue, so subscribers see it after every message committed before it. A page the store
//!   holds in memory ([`Store::query_in_memory`], the RocksDB store's recent cache) is
//!   answered on the request's own task instead: handing it to a reader and back cost more
//!   than copying it. On tokio's
//!   blocking pool instead, 16 concurrent queries on two cores kept 32 threads waking each other
//!   and answered a quarter fewer queries (`docs/BENCHMARKS.md`). Tests that pause tokio's clock
//!   should know that the runtime does not count a read under way on those threads as work:
//!   with nothing else to do, the paused clock jumps ahead, and a timeout around the read fires.
//!
//! The split is by thread: each file owns one kind of thread and the queue that feeds it. It
//! stays inside `kalamdb-core`, not a crate of its own, because the distributed store of
//! `../shared/DESIGN.md` §7 reuses the facade and the readers as they are, and replaces only
//! the writer (`ordered.rs`); the ids and visibility it must keep are the [`Store`] contract,
//! not this code.

use std::num::NonZeroUsize;
use std::sync::{Arc, OnceLock};
use std::thread;

use tokio::sync::{oneshot, Semaphore};

use crate::bus::{Bus, Event};

use crate::conversation::{
    Conversation, ConversationPage, ConversationPatch, ConversationQuery, NewConversation,
};
use crate::id::MessageId;
use crate::live::{Change, Hub, Subscription};
use crate::message::{Inserted, MessagePatch, NewMessage, PreparedMessage, StoredMessage};
use crate::query::{Page, Query};
use crate::store::{CacheStats, IdempotencyKey, PartStats, Store, StoreError};

mod ordered;
mod readers;
mod writer;

use readers::Readers;
use writer::{Insert, Job, Writer};

/// A cheap, cloneable async handle on a [`Store`].
///
/// Every endpoint that touches storage holds one. Create it once with [`StoreHandle::new`] and
/// end it with [`StoreHandle::close`].
///
/// Dropping the last clone stops the writer and reader threads and waits for them, so the store
/// they hold is released before the drop returns. Without that wait a process could exit while a
/// thread still owned an open RocksDB, and RocksDB aborts when its globals are torn down under it.
#[derive(Clone)]
pub struct StoreHandle {
    // One allocation behind one pointer: every request clones its endpoint, handle included.
    shared: Arc<Shared>,
}

/// What every clone of a [`StoreHandle`] shares. Fields drop in order: the writer finishes and
/// is joined before the readers are.
struct Shared {
    writer: Writer,
    hub: Arc<Hub>,
    readers: Readers,
    /// For the long deletes, which run on tokio's blocking pool rather than hold a reader, and
    /// for pages the store answers from memory.
    store: Arc<dyn Store>,
    /// The store [orders its own writes](Store::orders_writes): inserts take `ordered.rs`'s
    /// path, not the writer's.
    ordered: bool,
    /// One permit per insert under way on that path, so `close` can wait for them all.
    inflight: Arc<Semaphore>,
    /// Where committed messages and changes go for the other servers, once attached.
    bus: OnceLock<Arc<dyn Bus>>,
}

/// The most inserts under way at once on the ordered path; more wait for a permit. The
/// store's own connection pool is the tighter bound; this one bounds the threads blocked on it.
const MAX_ORDERED_INFLIGHT: usize = 1024;

impl std::fmt::Debug for StoreHandle {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("StoreHandle").finish_non_exhaustive()
    }
}

impl StoreHandle {
    /// Wraps `store` and starts its writer thread, with [`StoreHandle::default_read_limit`].
    pub fn new(store: Arc<dyn Store>) -> Self {
        Self::with_read_limit(store, Self::default_read_limit())
    }

    /// One read at a time per CPU core: what keeps a store whose data fits in memory busiest.
    pub fn default_read_limit() -> NonZeroUsize {
        thread::available_parallelism().unwrap_or(NonZeroUsize::MIN)
    }

    /// Wraps `store` and starts its writer thread and `read_limit` reader threads: at most that
    /// many reads run at once, and more wait their turn in a queue. A store whose reads wait on
    /// a disk rather than on the CPU wants more than one per core.
    pub fn with_read_limit(store: Arc<dyn Store>, read_limit: NonZeroUsize) -> Self {
        let hub = Arc::new(Hub::new());
        let writer = Writer::start(Arc::clone(&store), Arc::clone(&hub));
        let readers = Readers::start(&store, read_limit);
        Self {
            shared: Arc::new(Shared {
                writer,
                hub,
                readers,
                ordered: store.orders_writes(),
                store,
                inflight: Arc::new(Semaphore::new(MAX_ORDERED_INFLIGHT)),
                bus: OnceLock::new(),
            }),
        }
    }

    /// Sends every message and change committed through this handle from now on to `bus` as
    /// well, for the subscribers of other servers (`../shared/DESIGN.md` §7). Once only: a
    /// second bus is refused with `false`.
    pub fn attach_bus(&self, bus: Arc<dyn Bus>) -> bool {
        self.shared.bus.set(bus).is_ok()
    }

    /// Resolves once [`StoreHandle::end_streams`] or [`StoreHandle::close`] was called: when a
    /// bus stops listening.
    pub async fn streams_ended(&self) {
        self.shared.hub.ended().await;
    }

    /// Hands an event another server published to this server's subscribers.
    pub fn deliver(&self, event: &Event) {
        self.shared.hub.publish_event(event);
    }

    /// Stores one message; see [`StoreHandle::insert_batch`].
    pub async fn insert(&self, message: NewMessage) -> Result<Inserted, StoreError> {
        let mut inserted = self.insert_batch(vec![message]).await?;
        inserted
            .pop()
            .ok_or_else(|| StoreError::Internal("the writer returned no id".into()))
    }

    /// Stores `messages` atomically, with ids increasing in input order, and resolves once they
    /// are durable. A message with an invalid name fails the call with
    /// [`StoreError::Invalid`] and nothing is stored.
    pub async fn insert_batch(
        &self,
        messages: Vec<NewMessage>,
    ) -> Result<Vec<Inserted>, StoreError> {
        self.submit(messages, None, None).await
    }

    /// Stores one message under an idempotency key, exactly once however often it is retried.
    ///
    /// The first request with `key` stores the message; every later one with the same
    /// fingerprint gets the first one's answer and stores nothing, also when they arrive at the
    /// same moment. A later one with another fingerprint fails with
    /// [`StoreError::IdempotencyConflict`].
    pub async fn insert_idempotent(
        &self,
        message: NewMessage,
        key: IdempotencyKey,
    ) -> Result<Inserted, StoreError> {
        let mut inserted = self.submit(vec![message], Some(key), None).await?;
        inserted
            .pop()
            .ok_or_else(|| StoreError::Internal("the writer returned no id".into()))
    }

    /// Stores `messages` as [`StoreHandle::insert_batch`] does (or one message under `key`, as
    /// [`StoreHandle::insert_idempotent`] does), for the user `member`: each message's
    /// conversation must have them as a member, or not exist yet, in which case it is created
    /// with them as its only member. Otherwise nothing is stored and the call fails with
    /// [`StoreError::NotFound`], naming the first refused message in a batch. The check and the
    /// write are one step of the writer: nothing comes between them.
    pub async fn insert_as_member(
        &self,
        member: String,
        messages: Vec<NewMessage>,
        key: Option<IdempotencyKey>,
    ) -> Result<Vec<Inserted>, StoreError> {
        if key.is_some() && messages.len() != 1 {
            return Err(StoreError::Internal(
                "an idempotency key guards exactly one message".into(),
            ));
        }
        self.submit(messages, key, Some(member)).await
    }

    async fn submit(
        &self,
        messages: Vec<NewMessage>,
        key: Option<IdempotencyKey>,
        member: Option<String>,
    ) -> Result<Vec<Inserted>, StoreError> {
        // Encoded here, on the request's task, so the one writer thread only splices ids in.
        let messages = messages
            .into_iter()
            .map(PreparedMessage::new)
            .collect::<Result<Vec<_>, _>>()?;
        if self.shared.ordered {
            let permit = Arc::clone(&self.shared.inflight)
                .acquire_owned()
                .await
                .map_err(|_| StoreError::Closed)?;
            let shared = Arc::clone(&self.shared);
            return tokio::task::spawn_blocking(move || {
                let _permit = permit;
                ordered::insert(
                    shared.store.as_ref(),
                    &shared.hub,
                    shared.bus.get(),
                    &messages,
                    key,
                    member.as_deref(),
                )
            })
            .await
            .map_err(|_| StoreError::Internal("a store insert failed".into()))?;
        }
        let (reply, answer) = oneshot::channel();
        self.shared
            .writer
            .send(Job::Insert(Insert {
                messages,
                key,
                member,
                reply,
            }))
            .await?;
        // A dropped reply means the writer stopped before reaching this job: nothing was stored.
        answer.await.map_err(|_| StoreError::Closed)?
    }

    /// Reads one message by id.
    pub async fn get(&self, id: MessageId) -> Result<Option<StoredMessage>, StoreError> {
        self.on_reader(move |store| store.get(id)).await
    }

    /// Reads one message by id for the user `member`: `None` also when they are not a member
    /// of its conversation.
    pub async fn get_as_member(
        &self,
        id: MessageId,
        member: String,
    ) -> Result<Option<StoredMessage>, StoreError> {
        self.on_reader(move |store| {
            let Some(message) = store.get(id)? else {
                return Ok(None);
            };
            let conversation_id = message
                .conversation_id()
                .map_err(|e| StoreError::Corrupt(format!("message {id}: {e}")))?;
            Ok((store.is_member(&conversation_id, &member)? == Some(true)).then_some(message))
        })
        .await
    }

    /// Reads one page of a conversation: on this task when the store has it in memory
    /// ([`Store::query_in_memory`]), else on a reader thread.
    pub async fn query(&self, query: Query) -> Result<Page, StoreError> {
        if let Some(page) = self.shared.store.query_in_memory(&query) {
            return page;
        }
        self.on_reader(move |store| store.query(&query)).await
    }

    /// Reads one page of a conversation for the user `member`, in the same read as the check:
    /// `None` when they are not one of its members (or it does not exist).
    pub async fn query_as_member(
        &self,
        query: Query,
        member: String,
    ) -> Result<Option<Page>, StoreError> {
        self.on_reader(move |store| {
            if store.is_member(&query.conversation_id, &member)? != Some(true) {
                return Ok(None);
            }
            store.query(&query).map(Some)
        })
        .await
    }

    /// Whether `user_id` is a member of the conversation, `None` when it does not exist.
    pub async fn is_member(
        &self,
        conversation_id: String,
        user_id: String,
    ) -> Result<Option<bool>, StoreError> {
        self.on_reader(move |store| store.is_member(&conversation_id, &user_id))
            .await
    }

    /// Creates a conversation ([`Store::create_conversation`]).
    pub async fn create_conversation(
        &self,
        new: NewConversation,
    ) -> Result<Conversation, StoreError> {
        self.on_reader(move |store| store.create_conversation(&new))
            .await
    }

    /// Reads one conversation's record.
    pub async fn conversation(
        &self,
        conversation_id: String,
    ) -> Result<Option<Conversation>, StoreError> {
        self.on_reader(move |store| store.conversation(&conversation_id))
            .await
    }

    /// Reads one page of a listing of conversations.
    pub async fn list_conversations(
        &self,
        query: ConversationQuery,
    ) -> Result<ConversationPage, StoreError> {
        self.on_reader(move |store| store.list_conversations(&query))
            .await
    }

    /// Changes a conversation's title or metadata ([`Store::update_conversation`]).
    pub async fn update_conversation(
        &self,
        conversation_id: String,
        patch: ConversationPatch,
    ) -> Result<Option<Conversation>, StoreError> {
        self.on_reader(move |store| store.update_conversation(&conversation_id, &patch))
            .await
    }

    /// A conversation's members, `None` when it does not exist.
    pub async fn members(
        &self,
        conversation_id: String,
    ) -> Result<Option<Vec<String>>, StoreError> {
        self.on_reader(move |store| store.members(&conversation_id))
            .await
    }

    /// Adds or removes a member ([`Store::set_member`]).
    pub async fn set_member(
        &self,
        conversation_id: String,
        user_id: String,
        member: bool,
    ) -> Result<bool, StoreError> {
        self.on_reader(move |store| store.set_member(&conversation_id, &user_id, member))
            .await
    }

    /// Edits a message ([`Store::update_message`]) and tells its conversation's subscribers.
    pub async fn update_message(
        &self,
        id: MessageId,
        patch: MessagePatch,
    ) -> Result<Option<StoredMessage>, StoreError> {
        let updated = self
            .on_reader(move |store| store.update_message(id, &patch))
            .await?;
        if let Some(message) = &updated {
            let conversation_id = message
                .conversation_id()
                .map_err(|e| StoreError::Corrupt(format!("message {id}: {e}")))?;
            self.announce(conversation_id, Change::Updated(Arc::new(message.clone())))
                .await;
        }
        Ok(updated)
    }

    /// Deletes a message ([`Store::delete_message`]) and tells its conversation's subscribers;
    /// the conversation's id, `None` when there was no such message.
    pub async fn delete_message(&self, id: MessageId) -> Result<Option<String>, StoreError> {
        let deleted = self
            .on_reader(move |store| store.delete_message(id))
            .await?;
        if let Some(conversation_id) = &deleted {
            self.announce(conversation_id.clone(), Change::Deleted(id))
                .await;
        }
        Ok(deleted)
    }

    /// Deletes a conversation's messages below `before` ([`Store::trim_conversation`]) and
    /// tells its subscribers: how many, `None` when the conversation does not exist.
    pub async fn trim_conversation(
        &self,
        conversation_id: String,
        before: MessageId,
    ) -> Result<Option<u64>, StoreError> {
        let id = conversation_id.clone();
        let deleted = self
            .off_readers(move |store| store.trim_conversation(&id, before))
            .await?;
        if let Some(deleted) = deleted.filter(|n| *n > 0) {
            self.announce(conversation_id, Change::Trimmed { before, deleted })
                .await;
        }
        Ok(deleted)
    }

    /// Deletes a conversation and everything of it ([`Store::delete_conversation`]); its
    /// subscribers are told, and their streams end. `false` when it did not exist.
    pub async fn delete_conversation(&self, conversation_id: String) -> Result<bool, StoreError> {
        let id = conversation_id.clone();
        let deleted = self
            .off_readers(move |store| store.delete_conversation(&id))
            .await?;
        if deleted {
            self.announce(conversation_id, Change::ConversationDeleted)
                .await;
        }
        Ok(deleted)
    }

    /// Publishes a committed change through the writer, which publishes in commit order (see
    /// [`writer`]). A writer that stopped has no subscribers left to tell.
    async fn announce(&self, conversation_id: String, change: Change) {
        if let Some(bus) = self.shared.bus.get() {
            bus.publish(Event::Change {
                conversation_id: conversation_id.clone(),
                change: change.clone(),
            });
        }
        let _ = self
            .shared
            .writer
            .send(Job::Publish(conversation_id, change))
            .await;
    }

    /// The store's size figures, for the metrics endpoint.
    pub async fn stats(&self) -> Result<Vec<PartStats>, StoreError> {
        self.on_reader(|store| store.stats()).await
    }

    /// Bytes of write-ahead log the store holds, for the metrics endpoint; `None` for a store
    /// without a log of its own. Lists a directory: read on a reader thread.
    pub async fn log_bytes(&self) -> Result<Option<u64>, StoreError> {
        self.on_reader(|store| store.log_bytes()).await
    }

    /// The figures of the store's cache of pages in memory, for the metrics endpoint; `None`
    /// for a store without one. Read on the caller's task: a few uncontended locks.
    pub fn cache_stats(&self) -> Option<CacheStats> {
        self.shared.store.cache_stats()
    }

    /// Probes the storage medium.
    pub async fn health_check(&self) -> Result<(), StoreError> {
        self.on_reader(|store| store.health_check()).await
    }

    /// Follows `conversation_id`: the subscription receives every message of it committed from
    /// now on, in id order. See [`crate::live`].
    ///
    /// Fails with [`StoreError::Closed`] once [`StoreHandle::end_streams`] or
    /// [`StoreHandle::close`] was called.
    pub fn subscribe(&self, conversation_id: &str) -> Result<Subscription, StoreError> {
        self.shared
            .hub
            .subscribe(conversation_id)
            .ok_or(StoreError::Closed)
    }

    /// Ends every subscription (each receives [`crate::live::Delivery::Ended`]) and refuses new
    /// ones. Inserts and reads go on: a server shutting down calls this first so open streams
    /// finish while in-flight requests drain.
    pub fn end_streams(&self) {
        self.shared.hub.end();
    }

    /// Stops the writer once every insert queued so far is written, then flushes and closes the
    /// store. Inserts that arrive afterwards fail with [`StoreError::Closed`]; subscriptions end.
    pub async fn close(&self) -> Result<(), StoreError> {
        self.end_streams();
        if self.shared.ordered {
            // Every insert under way finishes; later ones are refused.
            if let Ok(all) = self
                .shared
                .inflight
                .acquire_many(MAX_ORDERED_INFLIGHT as u32)
                .await
            {
                all.forget();
            }
            self.shared.inflight.close();
        }
        let (done, stopped) = oneshot::channel();
        if self.shared.writer.send(Job::Stop(done)).await.is_ok() {
            // An error here means the writer already exited; either way it has stopped.
            let _ = stopped.await;
        }
        self.on_reader(|store| store.close()).await
    }

    /// Runs `f` on tokio's blocking pool: for a trim or a conversation delete, which read every
    /// id they remove (a million-message conversation takes seconds) and would otherwise keep
    /// one of the few reader threads from the queries waiting behind it.
    async fn off_readers<T, F>(&self, f: F) -> Result<T, StoreError>
    where
        T: Send + 'static,
        F: FnOnce(&dyn Store) -> Result<T, StoreError> + Send + 'static,
    {
        let store = Arc::clone(&self.shared.store);
        tokio::task::spawn_blocking(move || f(store.as_ref()))
            .await
            .map_err(|_| StoreError::Internal("a store delete failed".into()))?
    }

    /// Runs `f` on a reader thread: every store call but inserts goes through here.
    async fn on_reader<T, F>(&self, f: F) -> Result<T, StoreError>
    where
        T: Send + 'static,
        F: FnOnce(&dyn Store) -> Result<T, StoreError> + Send + 'static,
    {
        let (reply, answer) = oneshot::channel();
        self.shared.readers.send(Box::new(move |store| {
            // A caller that gave up (its connection closed) no longer needs the read.
            if !reply.is_closed() {
                let _ = reply.send(f(store));
            }
        }))?;
        // A dropped reply means the read panicked: the reader caught it and lives on.
        answer
            .await
            .map_err(|_| StoreError::Internal("a store read failed".into()))?
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testing::{Faulty, MemStore};

    /// The handle's test store: a [`MemStore`] behind [`Faulty`], whose writes take 2 ms (so
    /// concurrent requests pile up behind one), whose queries take 30 ms, and whose queries of
    /// the conversation `panic` panic.
    fn stores() -> (Arc<MemStore>, Arc<Faulty>) {
        let mem = Arc::new(MemStore::new());
        let faulty = Arc::new(Faulty::new(mem.clone()));
        faulty.delay_writes(std::time::Duration::from_millis(2));
        faulty.delay_reads(std::time::Duration::from_millis(30));
        faulty.panic_on_reads_of("panic");
        (mem, faulty)
    }

    fn new_message(conversation_id: &str, content: &str) -> NewMessage {
        NewMessage {
            conversation_id: conversation_id.into(),
            from: "tester".into(),
            content: content.into(),
            metadata: Default::default(),
        }
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn concurrent_inserts_share_writes_and_each_gets_its_own_id() {
        let (_, faulty) = stores();
        let handle = StoreHandle::new(faulty.clone());
        let tasks: Vec<_> = (0..200)
            .map(|i| {
                let handle = handle.clone();
                tokio::spawn(async move { handle.insert(new_message("c", &format!("m{i}"))).await })
            })
            .collect();
        let mut ids = Vec::new();
        for (i, task) in tasks.into_iter().enumerate() {
            let inserted = task.await.unwrap().unwrap();
            let stored = handle.get(inserted.msg_id).await.unwrap().unwrap();
            assert_eq!(stored.decode().unwrap().content, format!("m{i}"));
            ids.push(inserted.msg_id);
        }
        ids.sort();
        ids.dedup();
        assert_eq!(ids.len(), 200);
        // Requests that arrived while a write was under way were committed together.
        assert!(faulty.writes() < 200);
    }

    /// A bus that keeps what it is given.
    #[derive(Default)]
    struct Recorder(std::sync::Mutex<Vec<Event>>);

    impl Bus for Recorder {
        fn publish(&self, event: Event) {
            self.0.lock().unwrap().push(event);
        }
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_store_that_orders_its_writes_gets_them_at_once_and_every_one_is_heard() {
        let (_, faulty) = stores();
        faulty.order_writes(true);
        faulty.delay_writes(std::time::Duration::from_millis(20));
        let handle = StoreHandle::new(faulty.clone());
        let bus = Arc::new(Recorder::default());
        assert!(handle.attach_bus(bus.clone()));
        assert!(!handle.attach_bus(bus.clone()), "one bus only");
        let mut sub = handle.subscribe("c").unwrap();
        let tasks: Vec<_> = (0..16)
            .map(|i| {
                let handle = handle.clone();
                tokio::spawn(async move { handle.insert(new_message("c", &format!("m{i}"))).await })
            })
            .collect();
        let mut ids = std::collections::BTreeSet::new();
        for task in tasks {
            ids.insert(task.await.unwrap().unwrap().msg_id);
        }
        assert_eq!(ids.len(), 16);
        // Each request its own call, several under way at once: no group commit.
        assert_eq!(faulty.writes(), 16);
        assert!(faulty.most_concurrent_writes() > 1);
        let mut heard = std::collections::BTreeSet::new();
        for _ in 0..16 {
            match sub.recv().await {
                crate::Delivery::Follows { message, .. } => heard.insert(message.msg_id),
                other => panic!("{other:?}"),
            };
        }
        assert_eq!(heard, ids);
        let sent: std::collections::BTreeSet<_> = bus
            .0
            .lock()
            .unwrap()
            .iter()
            .filter_map(|e| match e {
                Event::Message { msg_id, .. } => Some(*msg_id),
                Event::Change { .. } => None,
            })
            .collect();
        assert_eq!(sent, ids, "the bus got every message for the other servers");
        // A delete goes to the bus too.
        let first = *ids.first().unwrap();
        handle.delete_message(first).await.unwrap();
        assert!(bus.0.lock().unwrap().iter().any(|e| matches!(
            e,
            Event::Change { change: Change::Deleted(id), .. } if *id == first
        )));
        // What another server publishes reaches this one's subscribers.
        let theirs = Arc::new(StoredMessage {
            msg_id: MessageId::from_u64(u64::MAX >> 1),
            json: b"{}".to_vec(),
        });
        handle.deliver(&Event::Message {
            conversation_id: "c".into(),
            prev: MessageId::MIN,
            msg_id: theirs.msg_id,
            message: Some(theirs.clone()),
        });
        loop {
            match sub.recv().await {
                crate::Delivery::Follows { message, .. } if message.msg_id == theirs.msg_id => {
                    break
                }
                crate::Delivery::Changed(_) => continue,
                other => panic!("{other:?}"),
            }
        }
        // Close waits for an insert under way, then refuses new ones.
        let slow = {
            let handle = handle.clone();
            tokio::spawn(async move { handle.insert(new_message("c", "late")).await })
        };
        while faulty.writes_under_way() == 0 {
            tokio::time::sleep(std::time::Duration::from_millis(1)).await;
        }
        handle.close().await.unwrap();
        assert!(slow.await.unwrap().is_ok(), "the insert under way finished");
        assert!(matches!(
            handle.insert(new_message("c", "after")).await,
            Err(StoreError::Closed)
        ));
    }

    #[tokio::test]
    async fn a_batch_gets_ids_in_input_order() {
        let handle = StoreHandle::new(stores().1);
        let batch = (0..10).map(|i| new_message("c", &i.to_string())).collect();
        let inserted = handle.insert_batch(batch).await.unwrap();
        assert_eq!(inserted.len(), 10);
        assert!(inserted.windows(2).all(|w| w[0].msg_id < w[1].msg_id));
    }

    #[tokio::test]
    async fn a_members_insert_is_admitted_refused_or_creates_the_conversation() {
        let (mem, faulty) = stores();
        let handle = StoreHandle::new(faulty.clone());
        handle
            .create_conversation(NewConversation {
                conversation_id: Some("team".into()),
                members: vec!["alice".into()],
                ..NewConversation::default()
            })
            .await
            .unwrap();
        let as_member = |user: &str, ids: &[&str]| {
            let messages = ids.iter().map(|id| new_message(id, "x")).collect();
            handle.insert_as_member(user.into(), messages, None)
        };
        assert_eq!(as_member("alice", &["team"]).await.unwrap().len(), 1);
        // Bob is not in "team": refused, named by its place in the batch, and nothing of the
        // batch is stored or created.
        let writes = faulty.writes();
        match as_member("bob", &["new", "team"]).await {
            Err(StoreError::NotFound(message)) => {
                assert_eq!(message, "messages[1]: no conversation has id \"team\"")
            }
            other => panic!("{other:?}"),
        }
        assert_eq!(faulty.writes(), writes);
        assert_eq!(mem.is_member("new", "bob").unwrap(), None);
        // A conversation that does not exist is created with the writer as its only member.
        as_member("bob", &["new", "new"]).await.unwrap();
        assert_eq!(mem.members("new").unwrap().unwrap(), ["bob"]);
        assert_eq!(mem.is_member("new", "alice").unwrap(), Some(false));
        assert!(matches!(
            as_member("alice", &["new"]).await,
            Err(StoreError::NotFound(_))
        ));
        let page = handle.query_as_member(any_query_of("new"), "alice".into());
        assert!(page.await.unwrap().is_none());
        let page = handle.query_as_member(any_query_of("new"), "bob".into());
        assert_eq!(page.await.unwrap().unwrap().messages.len(), 2);
    }

    #[tokio::test]
    async fn a_failed_write_reaches_the_caller() {
        let (_, faulty) = stores();
        faulty.fail_writes(true);
        let handle = StoreHandle::new(faulty.clone());
        let err = handle.insert(new_message("c", "x")).await.unwrap_err();
        assert!(matches!(err, StoreError::Unavailable(_)), "{err:?}");
        // The writer survives the failure and serves the next insert.
        faulty.fail_writes(false);
        assert!(handle.insert(new_message("c", "y")).await.is_ok());
    }

    #[tokio::test]
    async fn an_invalid_request_fails_alone() {
        let handle = StoreHandle::new(stores().1);
        let err = handle
            .insert(new_message("bad\0id", "x"))
            .await
            .unwrap_err();
        assert!(matches!(err, StoreError::Invalid(_)), "{err:?}");
    }

    #[tokio::test]
    async fn close_drains_queued_inserts_then_refuses_new_ones() {
        let (mem, faulty) = stores();
        let handle = StoreHandle::new(faulty.clone());
        let pending: Vec<_> = (0..50)
            .map(|i| {
                let handle = handle.clone();
                tokio::spawn(async move { handle.insert(new_message("c", &i.to_string())).await })
            })
            .collect();
        // Let every insert reach the queue before the stop does.
        tokio::task::yield_now().await;
        let mut acknowledged = Vec::new();
        handle.close().await.unwrap();
        for task in pending {
            if let Ok(inserted) = task.await.unwrap() {
                acknowledged.push(inserted.msg_id);
            }
        }
        // Whatever was acknowledged is stored; nothing is acknowledged and lost.
        for id in &acknowledged {
            assert!(mem.contains(*id));
        }
        assert!(mem.is_closed());
        let err = handle.insert(new_message("c", "late")).await.unwrap_err();
        assert!(matches!(err, StoreError::Closed), "{err:?}");
    }

    #[tokio::test]
    async fn dropping_the_last_handle_releases_the_store_before_returning() {
        let (_, faulty) = stores();
        let handle = StoreHandle::new(faulty.clone());
        let other = handle.clone();
        handle.insert(new_message("c", "x")).await.unwrap();
        drop(handle);
        // A clone still lives: the writer keeps serving it.
        assert!(other.insert(new_message("c", "y")).await.is_ok());
        drop(other);
        // Only the test's own reference remains: the writer thread has ended and let go.
        assert_eq!(Arc::strong_count(&faulty), 1);
    }

    fn key(name: &str, fingerprint: u8) -> IdempotencyKey {
        IdempotencyKey {
            key: name.into(),
            fingerprint: [fingerprint; 32],
        }
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn concurrent_retries_of_one_key_store_once_and_share_the_answer() {
        let (mem, faulty) = stores();
        let handle = StoreHandle::new(faulty.clone());
        let tasks: Vec<_> = (0..100)
            .map(|_| {
                let handle = handle.clone();
                tokio::spawn(async move {
                    handle
                        .insert_idempotent(new_message("c", "once"), key("k1", 7))
                        .await
                })
            })
            .collect();
        let mut ids = Vec::new();
        for task in tasks {
            ids.push(task.await.unwrap().unwrap().msg_id);
        }
        ids.dedup();
        assert_eq!(ids.len(), 1, "every retry got the first answer");
        assert_eq!(mem.len(), 1, "stored exactly once");
    }

    #[tokio::test]
    async fn a_key_reused_with_another_request_is_a_conflict() {
        let handle = StoreHandle::new(stores().1);
        let first = handle
            .insert_idempotent(new_message("c", "a"), key("k", 1))
            .await
            .unwrap();
        let err = handle
            .insert_idempotent(new_message("c", "b"), key("k", 2))
            .await
            .unwrap_err();
        assert!(matches!(err, StoreError::IdempotencyConflict(_)), "{err:?}");
        let again = handle
            .insert_idempotent(new_message("c", "a"), key("k", 1))
            .await
            .unwrap();
        assert_eq!(again, first);
        // Other keys and unkeyed inserts are unaffected.
        let other = handle
            .insert_idempotent(new_message("c", "a"), key("k2", 1))
            .await
            .unwrap();
        assert_ne!(other.msg_id, first.msg_id);
    }

    #[tokio::test]
    async fn a_subscriber_gets_each_committed_message_as_stored() {
        let handle = StoreHandle::new(stores().1);
        let mut sub = handle.subscribe("c").unwrap();
        handle.insert(new_message("other", "x")).await.unwrap();
        let batch = vec![new_message("c", "1"), new_message("c", "2")];
        let inserted = handle.insert_batch(batch).await.unwrap();
        for expected in inserted {
            let crate::Delivery::Message(got) = sub.recv().await else {
                panic!("expected a message");
            };
            let stored = handle.get(expected.msg_id).await.unwrap().unwrap();
            assert_eq!(*got, stored, "the event carries the stored bytes");
        }
    }

    #[tokio::test]
    async fn a_failed_write_publishes_nothing() {
        let (_, faulty) = stores();
        let handle = StoreHandle::new(faulty.clone());
        let mut sub = handle.subscribe("c").unwrap();
        faulty.fail_writes(true);
        assert!(handle.insert(new_message("c", "lost")).await.is_err());
        faulty.fail_writes(false);
        let kept = handle.insert(new_message("c", "kept")).await.unwrap();
        let crate::Delivery::Message(got) = sub.recv().await else {
            panic!("expected a message");
        };
        assert_eq!(got.msg_id, kept.msg_id);
    }

    fn any_query_of(conversation_id: &str) -> Query {
        Query {
            conversation_id: conversation_id.into(),
            ..any_query()
        }
    }

    fn any_query() -> Query {
        Query {
            conversation_id: "c".into(),
            since: None,
            before: None,
            limit: 10,
            order: crate::Order::Asc,
        }
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn reads_run_at_most_read_limit_at_once() {
        let (_, faulty) = stores();
        let handle = StoreHandle::with_read_limit(faulty.clone(), NonZeroUsize::new(2).unwrap());
        let reads: Vec<_> = (0..8)
            .map(|_| {
                let handle = handle.clone();
                tokio::spawn(async move { handle.query(any_query()).await })
            })
            .collect();
        for read in reads {
            read.await.unwrap().unwrap();
        }
        assert_eq!(faulty.most_concurrent_reads(), 2);
    }

    #[tokio::test]
    async fn a_read_given_up_keeps_its_place_until_it_ends() {
        let (_, faulty) = stores();
        let handle = StoreHandle::with_read_limit(faulty.clone(), NonZeroUsize::MIN);
        // The caller leaves (its connection closed) while the store is still reading.
        let left = tokio::time::timeout(
            std::time::Duration::from_millis(5),
            handle.query(any_query()),
        )
        .await;
        assert!(left.is_err());
        handle.query(any_query()).await.unwrap();
        assert_eq!(
            faulty.most_concurrent_reads(),
            1,
            "the next read waited for the abandoned one to finish"
        );
    }

    #[tokio::test]
    async fn a_panicking_read_fails_alone_and_the_reader_lives_on() {
        let handle = StoreHandle::with_read_limit(stores().1, NonZeroUsize::MIN);
        let mut query = any_query();
        query.conversation_id = "panic".into();
        let err = handle.query(query).await.unwrap_err();
        assert!(matches!(err, StoreError::Internal(_)), "{err:?}");
        handle.query(any_query()).await.unwrap();
    }

    #[tokio::test]
    async fn close_ends_subscriptions() {
        let handle = StoreHandle::new(stores().1);
        let mut sub = handle.subscribe("c").unwrap();
        handle.close().await.unwrap();
        assert!(matches!(sub.recv().await, crate::Delivery::Ended));
        assert!(matches!(handle.subscribe("c"), Err(StoreError::Closed)));
    }
}

//! The group-commit writer: one thread, the store's only writer; see the [`super`] docs.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::thread;

use tokio::sync::{mpsc, oneshot};

use crate::conversation::NewConversation;
use crate::live::{Change, Hub};
use crate::message::{Inserted, PreparedMessage, StoredMessage};
use crate::store::{IdempotencyKey, Store, StoreError};

/// How many requests may wait for the writer before senders wait for room.
const QUEUE_DEPTH: usize = 4096;
/// The most messages one group commit gathers: large enough to amortize the sync, small enough
/// that one write stays a few megabytes.
const MAX_GROUP_MESSAGES: usize = 4096;

type Reply = oneshot::Sender<Result<Vec<Inserted>, StoreError>>;
type Group = Vec<Insert>;

/// One request's insert.
pub(super) struct Insert {
    pub(super) messages: Vec<PreparedMessage>,
    /// Only ever set for a single-message insert.
    pub(super) key: Option<IdempotencyKey>,
    /// The user the messages are written for, held to membership ([`admit`]); `None` for a
    /// caller allowed every conversation.
    pub(super) member: Option<String>,
    pub(super) reply: Reply,
}

pub(super) enum Job {
    Insert(Insert),
    /// Publish an edit or delete that committed before it was queued. Published when the writer
    /// takes it, so after every group committed before it and before every group after it.
    Publish(String, Change),
    /// Stop after everything queued before it is written.
    Stop(oneshot::Sender<()>),
}

/// The writer thread and the only sender to it.
pub(super) struct Writer {
    /// `None` only while dropping: closing the channel is what tells the thread to end.
    jobs: Option<mpsc::Sender<Job>>,
    thread: Option<thread::JoinHandle<()>>,
}

impl Writer {
    /// Starts the writer thread over `store`, publishing each committed group to `hub`.
    pub(super) fn start(store: Arc<dyn Store>, hub: Arc<Hub>) -> Self {
        let (tx, rx) = mpsc::channel(QUEUE_DEPTH);
        let thread = thread::Builder::new()
            .name("kalamdb-writer".into())
            .spawn(move || {
                if !store.syncs_writes() {
                    run_as_batch();
                }
                run_writer(store.as_ref(), &hub, rx)
            })
            // Failing to start a thread at boot leaves nothing sensible to do.
            .expect("failed to start the store writer thread");
        Self {
            jobs: Some(tx),
            thread: Some(thread),
        }
    }

    /// Queues `job`, waiting for room when the queue is full.
    pub(super) async fn send(&self, job: Job) -> Result<(), StoreError> {
        match &self.jobs {
            Some(jobs) => jobs.send(job).await.map_err(|_| StoreError::Closed),
            None => Err(StoreError::Closed),
        }
    }
}

impl Drop for Writer {
    fn drop(&mut self) {
        drop(self.jobs.take());
        if let Some(thread) = self.thread.take() {
            // The thread finishes at most the group it is writing; a panic there was already
            // reported to each waiting request as a dropped reply.
            let _ = thread.join();
        }
    }
}

/// Puts the calling thread, the writer of a store that does not sync its writes, under Linux's
/// `SCHED_BATCH` policy: a thread the kernel does not let preempt the running one when it is
/// woken. Its weight (nice value) and its share of the CPU stay as they were.
///
/// On a core the writer shares with an async worker, the writer is woken by the first insert
/// the worker queues, and as an ordinary thread it took the core at once, before the worker had
/// queued the rest of what it was reading: without an fsync to wait for, each group held one or
/// two inserts, each paying for a RocksDB write and two context switches of its own. As a batch
/// thread it runs when the worker parks or at the scheduler's next tick, and finds the worker's
/// inserts waiting: at 64 connections, about half the CPU an insert (32-56 µs became 16-26 µs)
/// and twice the inserts a second (docs/BENCHMARKS.md, 2026-12-02, fifth session). With an idle
/// core to run on, a woken batch thread runs at once, as before.
///
/// A store that syncs keeps an ordinary writer: there, starting the write at once lets the
/// disk's wait overlap the worker's reading of the next requests, and the wait gathers the
/// groups anyway (batches of 100 lost a tenth to a fifth of their throughput as a batch thread).
#[cfg(target_os = "linux")]
fn run_as_batch() {
    // Only speed depends on it: where a sandbox refuses the call, the writer works as before.
    let _ = scheduler::set_self_policy(scheduler::Policy::Batch, 0);
}

#[cfg(not(target_os = "linux"))]
fn run_as_batch() {}

/// The writer thread: gathers whatever inserts are waiting and commits them as one group.
fn run_writer(store: &dyn Store, hub: &Hub, mut rx: mpsc::Receiver<Job>) {
    let mut stop = None;
    while stop.is_none() {
        let Some(first) = rx.blocking_recv() else {
            return; // Every handle is gone.
        };
        let mut group = Vec::new();
        let mut total = 0;
        let mut next = Some(first);
        while let Some(job) = next.take() {
            match job {
                Job::Insert(insert) => {
                    total += insert.messages.len();
                    group.push(insert);
                }
                // The inserts gathered so far are not written yet: they come after the change.
                Job::Publish(conversation_id, change) => {
                    hub.publish_change(&conversation_id, change)
                }
                Job::Stop(done) => {
                    stop = Some(done);
                    break;
                }
            }
            if total < MAX_GROUP_MESSAGES {
                next = rx.try_recv().ok();
            }
        }
        commit(store, hub, group);
    }
    rx.close();
    // Answer (by dropping) any insert that raced in behind the stop: it was never stored.
    while rx.try_recv().is_ok() {}
    if let Some(done) = stop {
        let _ = done.send(());
    }
}

/// Writes one group, answers each of its requests, then publishes the group to subscribers.
///
/// Membership and idempotency keys are settled here, on the one writer thread. A user's
/// request is checked against the conversations as they are when the group is written
/// ([`admit`]). Two requests with the same key can never both store: a key already on record is
/// answered from the record; a key seen earlier in this group waits for that request's answer.
fn commit(store: &dyn Store, hub: &Hub, group: Group) {
    let mut counts = Vec::with_capacity(group.len());
    let mut replies: Vec<Vec<Reply>> = Vec::with_capacity(group.len());
    let mut all = Vec::new();
    let mut keys = Vec::new();
    // Key → (its request's place in `replies`, fingerprint), for keys first seen in this group.
    let mut in_group: HashMap<String, (usize, [u8; 32])> = HashMap::new();
    for Insert {
        messages,
        key,
        member,
        reply,
    } in group
    {
        if let Some(user) = &member {
            if let Err(refused) = admit(store, user, &messages) {
                let _ = reply.send(Err(refused));
                continue;
            }
        }
        if let Some(key) = key {
            if let Some((slot, fingerprint)) = in_group.get(&key.key) {
                if *fingerprint == key.fingerprint {
                    replies[*slot].push(reply);
                } else {
                    let _ = reply.send(Err(StoreError::IdempotencyConflict(key.key)));
                }
                continue;
            }
            match store.idempotency_record(&key.key) {
                Ok(Some(record)) => {
                    let answer = if record.fingerprint == key.fingerprint {
                        Ok(vec![record.inserted])
                    } else {
                        Err(StoreError::IdempotencyConflict(key.key))
                    };
                    let _ = reply.send(answer);
                    continue;
                }
                Ok(None) => {}
                Err(e) => {
                    let _ = reply.send(Err(e));
                    continue;
                }
            }
            in_group.insert(key.key.clone(), (replies.len(), key.fingerprint));
            keys.push((all.len(), key));
        }
        counts.push(messages.len());
        replies.push(vec![reply]);
        all.extend(messages);
    }
    if replies.is_empty() {
        return;
    }
    let watched = hub.watched_in(&all);
    match store.insert_with_keys(&all, &keys) {
        Ok(inserted) => {
            // The same function the store used to build what it wrote, so subscribers get
            // exactly the stored bytes.
            let committed: Vec<(&str, StoredMessage)> = watched
                .into_iter()
                .filter_map(|i| {
                    let (message, answer) = (all.get(i)?, inserted.get(i)?);
                    let stored = StoredMessage {
                        msg_id: answer.msg_id,
                        json: message.to_json(answer.msg_id),
                    };
                    Some((message.conversation_id(), stored))
                })
                .collect();
            let mut inserted = inserted.into_iter();
            for (count, mut waiting) in counts.into_iter().zip(replies) {
                let answer: Vec<Inserted> = inserted.by_ref().take(count).collect();
                // More than one waits only for retries that share an idempotency key: all but one
                // get copies, and the one, almost always alone, gets the answer itself.
                // A requester that gave up (its connection closed) no longer needs an answer.
                if let Some(last) = waiting.pop() {
                    for reply in waiting {
                        let _ = reply.send(Ok(answer.clone()));
                    }
                    let _ = last.send(Ok(answer));
                }
            }
            hub.publish(committed);
        }
        Err(e) => {
            // The group was one atomic write: none of it is stored, so every request fails alike.
            for reply in replies.into_iter().flatten() {
                let _ = reply.send(Err(e.clone()));
            }
        }
    }
}

/// Holds a user's messages to `../shared/DESIGN.md` §6.3: each message's conversation must have
/// `user` as a member, or not exist yet, when it is created with `user` as its only member.
///
/// It runs on the writer thread, between groups, so no other insert comes between the check
/// and the write, and a conversation that one user's first message creates is a conversation
/// that another user's message later in the same group is refused. A refusal names the first
/// refused message (by its place, in a batch) and changes nothing. A conversation created here is
/// written before the group: when the group's write then fails, it stays, empty, with `user` as
/// its member, as if they had created it with `POST /api/v1/conversations`.
pub(super) fn admit(
    store: &dyn Store,
    user: &str,
    messages: &[PreparedMessage],
) -> Result<(), StoreError> {
    let refused = |index: usize, conversation_id: &str| {
        let place = if messages.len() > 1 {
            format!("messages[{index}]: ")
        } else {
            String::new()
        };
        StoreError::NotFound(format!("{place}no conversation has id {conversation_id:?}"))
    };
    let mut seen = HashSet::new();
    let mut missing = Vec::new();
    for (index, message) in messages.iter().enumerate() {
        let conversation_id = message.conversation_id();
        if !seen.insert(conversation_id) {
            continue;
        }
        match store.is_member(conversation_id, user)? {
            Some(true) => {}
            // Existence is never revealed: the same answer as for no conversation at all.
            Some(false) => return Err(refused(index, conversation_id)),
            None => missing.push((index, conversation_id)),
        }
    }
    for (index, conversation_id) in missing {
        let new = NewConversation {
            conversation_id: Some(conversation_id.to_owned()),
            members: vec![user.to_owned()],
            ..NewConversation::default()
        };
        match store.create_conversation(&new) {
            Ok(_) => {}
            // Created meanwhile through `POST /api/v1/conversations`, which does not queue here.
            Err(StoreError::Conflict(_)) => {
                if store.is_member(conversation_id, user)? != Some(true) {
                    return Err(refused(index, conversation_id));
                }
            }
            Err(e) => return Err(e),
        }
    }
    Ok(())
}

#[cfg(all(test, target_os = "linux"))]
mod tests {
    use std::sync::Arc;

    use crate::handle::StoreHandle;
    use crate::message::NewMessage;
    use crate::testing::MemStore;

    /// `SCHED_BATCH` in `<sched.h>`.
    const SCHED_BATCH: u32 = 3;

    /// The scheduling policy of each of this process's threads named `name` (field 41 of
    /// `/proc/self/task/<tid>/stat`, counted after the parenthesized name, which may hold spaces).
    fn policies_of_threads_named(name: &str) -> Vec<u32> {
        let mut policies = Vec::new();
        for task in std::fs::read_dir("/proc/self/task").unwrap() {
            let dir = task.unwrap().path();
            let Ok(comm) = std::fs::read_to_string(dir.join("comm")) else {
                continue; // The thread ended meanwhile.
            };
            if comm.trim_end() != name {
                continue;
            }
            let Ok(stat) = std::fs::read_to_string(dir.join("stat")) else {
                continue;
            };
            let after_name = &stat[stat.rfind(')').unwrap() + 1..];
            // Fields 3 onwards follow the name; the policy is field 41.
            let policy = after_name.split_whitespace().nth(41 - 3).unwrap();
            policies.push(policy.parse().unwrap());
        }
        policies
    }

    #[tokio::test]
    async fn the_writer_of_a_store_that_does_not_sync_runs_as_a_batch_thread() {
        // A store that does not sync its writes, as `storage.sync_writes = false` makes the
        // RocksDB store.
        let handle = StoreHandle::new(Arc::new(MemStore::new()));
        // Answered by the writer, so its thread has set its policy by now.
        handle
            .insert(NewMessage {
                conversation_id: "c".into(),
                from: "tester".into(),
                content: "hello".into(),
                metadata: Default::default(),
            })
            .await
            .unwrap();
        // Other tests' writers may be starting beside ours; ours has set its policy.
        let policies = policies_of_threads_named("kalamdb-writer");
        assert!(
            policies.contains(&SCHED_BATCH),
            "no writer thread under SCHED_BATCH: {policies:?}"
        );
    }
}

//! The reader pool: a few threads that run every store call but inserts; see the [`super`]
//! docs.

use std::num::NonZeroUsize;
use std::sync::Arc;
use std::thread;

use crate::store::{Store, StoreError};

/// A read, run on a reader thread against the store.
pub(super) type ReadJob = Box<dyn FnOnce(&dyn Store) + Send>;

/// The reader threads and the queue they share.
pub(super) struct Readers {
    /// `None` only while dropping: closing the queue is what tells the threads to end.
    jobs: Option<crossbeam_channel::Sender<ReadJob>>,
    threads: Vec<thread::JoinHandle<()>>,
}

impl Readers {
    /// Starts `count` reader threads over `store`.
    pub(super) fn start(store: &Arc<dyn Store>, count: NonZeroUsize) -> Self {
        let (tx, rx) = crossbeam_channel::unbounded::<ReadJob>();
        let threads = (0..count.get())
            .map(|i| {
                let (store, rx) = (Arc::clone(store), rx.clone());
                thread::Builder::new()
                    .name(format!("kalamdb-reader-{i}"))
                    .spawn(move || {
                        for job in rx {
                            // A panicking read fails its own request, not the thread.
                            let read = std::panic::AssertUnwindSafe(|| job(store.as_ref()));
                            let _ = std::panic::catch_unwind(read);
                        }
                    })
                    // Failing to start a thread at boot leaves nothing sensible to do.
                    .expect("failed to start a store reader thread")
            })
            .collect();
        Self {
            jobs: Some(tx),
            threads,
        }
    }

    /// Queues `job` for the next free reader.
    pub(super) fn send(&self, job: ReadJob) -> Result<(), StoreError> {
        match &self.jobs {
            Some(jobs) => jobs.send(job).map_err(|_| StoreError::Closed),
            None => Err(StoreError::Closed),
        }
    }
}

impl Drop for Readers {
    fn drop(&mut self) {
        // Like the writer, joined so the store is released before the last handle's drop
        // returns. Nothing is queued by then: every read's caller held a handle.
        drop(self.jobs.take());
        for thread in self.threads.drain(..) {
            let _ = thread.join();
        }
    }
}

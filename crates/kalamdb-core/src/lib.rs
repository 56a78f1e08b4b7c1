//! KalamDB's domain: messages, their Snowflake ids, and the storage abstraction.
//!
//! This crate knows nothing of RocksDB or HTTP; the storage backends and the HTTP endpoints both
//! build on it.
//!
//! # Layout
//!
//! - [`id`]: [`MessageId`], the 64-bit Snowflake (41 bits of milliseconds since 2024-01-01, 10 bits
//!   of node id, 12 bits of sequence), and [`IdGenerator`], which issues them strictly increasing.
//! - [`message`]: [`NewMessage`] as clients send it and its validation against [`Limits`],
//!   [`MessagePatch`], an edit,
//!   [`PreparedMessage`], its JSON encoded on the request's task for the writer to finish,
//!   [`Message`] as it is returned, [`StoredMessage`] as a store hands it back.
//! - [`conversation`]: conversations as records: [`NewConversation`], [`ConversationPatch`],
//!   [`Conversation`], and the listing by activity with its [`ListCursor`].
//! - [`query`]: [`Query`] and [`Page`], a conversation's history read a page at a time.
//! - [`store`]: the blocking [`Store`] trait that backends implement, [`StoreError`], and the
//!   [`PartStats`] size figures and [`CacheStats`] cache figures the metrics publish.
//! - [`strict_json`]: metadata read strictly: no duplicate keys, bounded nesting; whole numbers
//!   as JSON Schema reads them (`50.0` too).
//! - [`handle`]: [`StoreHandle`], the cloneable async facade endpoints hold (`handle/mod.rs`);
//!   inserts go through the group-commit writer thread (`handle/writer.rs`), reads run on a few
//!   reader threads (`handle/readers.rs`).
//! - [`bus`]: live streams across servers: the [`bus::Bus`] a server sends its committed
//!   messages and changes to, and the events on its wire.
//! - [`live`]: live subscriptions to a conversation, fed by the writer after each commit, with
//!   edits and deletes ([`live::Change`]) in their place among the messages.
//! - `conformance` (feature `test-util`): the [`Store`] contract as one suite of checks, which
//!   every backend's tests run (`store_conformance!`).
//! - `testing` (feature `test-util`): `MemStore`, the whole [`Store`] contract in memory, and
//!   `Faulty`, a delegating wrapper that fails or slows a store on command, so endpoints and
//!   the handle are tested without RocksDB.
//!
//! # Config keys it serves
//!
//! `server.node_id` (through [`IdGenerator`]), `limits.max_message_size` and
//! `limits.max_metadata_size` (through [`Limits`]); the server crate reads them and passes them in.

pub mod bus;
#[cfg(any(test, feature = "test-util"))]
pub mod conformance;
pub mod conversation;
pub mod handle;
pub mod id;
pub mod live;
pub mod message;
pub mod query;
pub mod store;
pub mod strict_json;
#[cfg(any(test, feature = "test-util"))]
pub mod testing;

pub use conversation::{
    Conversation, ConversationPage, ConversationPatch, ConversationQuery, ListCursor, ListPosition,
    NewConversation,
};
pub use handle::StoreHandle;
pub use id::{Clock, IdError, IdGenerator, MessageId, SystemClock};
pub use live::{Delivery, Subscription};
pub use message::{
    Inserted, Limits, Message, MessagePatch, NewMessage, PreparedMessage, StoredMessage,
    ValidationError,
};
pub use query::{Order, Page, Query};
pub use store::{
    CacheStats, Committed, IdempotencyKey, IdempotencyRecord, PartStats, Store, StoreError,
};

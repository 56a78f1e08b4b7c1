//! [`RocksStore`]: KalamDB's [`Store`] on an embedded RocksDB.
//!
//! This is the only crate that depends on `rocksdb`; endpoints see the [`Store`] trait alone.
//!
//! # Layout
//!
//! - [`keys`]: column families, key and value encodings (the one place that knows the bytes).
//! - this module: [`RocksStore`], opening ([`StoreOptions`], [`OpenError`]) and the trait methods.
//!
//! # Config keys it serves
//!
//! `storage.rocksdb_path`, `storage.sync_writes`, `storage.compression` and `server.node_id`,
//! through [`StoreOptions`].
//!
//! # Writes
//!
//! One [`Store::insert`] is one `WriteBatch` holding each message and its index entry, written
//! atomically and, with `sync_writes`, fsynced before it returns. Ids are assigned under the same
//! lock that orders the writes, so a message is never visible before one with a smaller id.
//! On open, the id generator is seeded with the highest stored id: ids keep increasing across
//! restarts.
//!
//! # Reads
//!
//! [`Store::query`] sets the iterator's lower and upper bounds to the one conversation's key range
//! narrowed by the query's exclusive bounds, then reads `limit + 1` entries: a seek plus the
//! page, O(log n + limit), never touching another conversation's keys. Keys run newest first
//! ([`keys`]), so the usual newest-first page reads forward; an oldest-first page reads backward,
//! which in the memtable costs a skip-list search per step.
//!
//! # Memtable
//!
//! The `messages` column family gives RocksDB a memtable insert hint keyed by each key's bucket
//! ([`keys::bucket`]): a message goes in from where its bucket's previous one went. Busy
//! conversations interleave, so without it every insert searched the skip list from the top,
//! the largest single cost of an insert (`docs/BENCHMARKS.md`).
//!
//! # Upgrades
//!
//! Opening a store of format version 1 or 2 rewrites its message keys into the current layout
//! before anything else reads it (`docs/RELIABILITY.md`).

pub mod keys;

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Mutex;
use std::time::Duration;

use kalamdb_core::message::validate_name;
use kalamdb_core::{
    IdGenerator, IdempotencyKey, IdempotencyRecord, Inserted, MessageId, Order, Page, PartStats,
    PreparedMessage, Query, Store, StoreError, StoredMessage,
};
use rocksdb::{
    BlockBasedOptions, Cache, ColumnFamily, ColumnFamilyDescriptor, CompactionDecision,
    DBCompressionType, ErrorKind, FlushOptions, IteratorMode, Options, ReadOptions, WriteBatch,
    WriteOptions, DB,
};

use crate::keys::{
    CF_IDEMPOTENCY, CF_MESSAGES, CF_MESSAGE_INDEX, CF_META, COLUMN_FAMILIES, FORMAT_VERSION,
    META_FORMAT_VERSION, META_HEALTH_PROBE, META_NODE_ID,
};

/// Block cache shared by all column families. Recent messages are the hot set of a chat store.
const BLOCK_CACHE_BYTES: usize = 64 * 1024 * 1024;

/// The block compression applied to stored data (`storage.compression`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum Compression {
    /// No compression.
    None,
    /// LZ4: fast, moderate ratio.
    #[default]
    Lz4,
    /// Zstandard: a better ratio for more CPU.
    Zstd,
}

impl Compression {
    fn rocksdb_type(self) -> DBCompressionType {
        match self {
            Compression::None => DBCompressionType::None,
            Compression::Lz4 => DBCompressionType::Lz4,
            Compression::Zstd => DBCompressionType::Zstd,
        }
    }
}

/// What [`RocksStore::open`] needs to know.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoreOptions {
    /// The database directory; created, with its parents, when missing.
    pub path: PathBuf,
    /// This server's Snowflake node id (0-1023).
    pub node_id: u16,
    /// Fsync the WAL before acknowledging a write. Without it an acknowledged write survives a
    /// process crash but not a power cut.
    pub sync_writes: bool,
    /// Block compression for every column family.
    pub compression: Compression,
    /// How long an idempotency key is remembered. Expired records are ignored at once and
    /// dropped by a compaction filter; a periodic compaction of their column family makes sure
    /// that runs even when little is written.
    pub idempotency_ttl: Duration,
}

impl StoreOptions {
    /// Options for a store at `path` with the defaults: node 0, synced writes, LZ4.
    pub fn new(path: impl Into<PathBuf>) -> Self {
        Self {
            path: path.into(),
            node_id: 0,
            sync_writes: true,
            compression: Compression::default(),
            idempotency_ttl: Duration::from_secs(86_400),
        }
    }
}

/// Why a store could not be opened.
#[derive(Debug, thiserror::Error)]
pub enum OpenError {
    /// RocksDB refused to open the directory (missing permissions, full disk, a lock held by
    /// another process...).
    #[error("cannot open the RocksDB store at {path}: {reason}")]
    Rocks {
        /// The directory.
        path: PathBuf,
        /// RocksDB's own explanation.
        reason: String,
    },
    /// The directory was written by a newer, incompatible build.
    #[error("the store at {path} has format version {found}; this build reads version {FORMAT_VERSION} and upgrades versions 1 and 2")]
    Format {
        /// The directory.
        path: PathBuf,
        /// The version found on disk.
        found: String,
    },
    /// The id generator could not be set up.
    #[error(transparent)]
    Ids(#[from] kalamdb_core::IdError),
}

/// The RocksDB-backed [`Store`].
pub struct RocksStore {
    db: DB,
    path: PathBuf,
    /// Held across id assignment and the write, so ids become visible in increasing order.
    writer: Mutex<IdGenerator>,
    sync_writes: bool,
    /// Built once: each write made its own, a C++ allocation and two calls across the FFI.
    write_options: WriteOptions,
    idempotency_ttl_ms: u64,
    closed: AtomicBool,
}

impl std::fmt::Debug for RocksStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RocksStore")
            .field("path", &self.path)
            .field("sync_writes", &self.sync_writes)
            .finish_non_exhaustive()
    }
}

impl RocksStore {
    /// Opens (creating when missing) the store described by `options`.
    pub fn open(options: &StoreOptions) -> Result<Self, OpenError> {
        let path = options.path.clone();
        let rocks_err = |e: rocksdb::Error| OpenError::Rocks {
            path: path.clone(),
            reason: e.into_string(),
        };
        std::fs::create_dir_all(&path).map_err(|e| OpenError::Rocks {
            path: path.clone(),
            reason: e.to_string(),
        })?;

        let mut db_options = Options::default();
        db_options.create_if_missing(true);
        db_options.create_missing_column_families(true);
        db_options.increase_parallelism(
            std::thread::available_parallelism().map_or(2, |n| n.get()) as i32,
        );
        let cache = Cache::new_lru_cache(BLOCK_CACHE_BYTES);
        let descriptors = COLUMN_FAMILIES.iter().map(|name| {
            let mut cf = cf_options(name, options.compression, &cache).map_err(rocks_err)?;
            if *name == CF_IDEMPOTENCY {
                let ttl_ms = u64::try_from(options.idempotency_ttl.as_millis()).unwrap_or(u64::MAX);
                cf.set_compaction_filter("kalamdb-idempotency-ttl", move |_level, _key, value| {
                    match keys::idempotency_created_ms(value) {
                        Some(created) if now_ms().saturating_sub(created) >= ttl_ms => {
                            CompactionDecision::Remove
                        }
                        _ => CompactionDecision::Keep,
                    }
                });
                cf.set_periodic_compaction_seconds(options.idempotency_ttl.as_secs().max(1));
            }
            Ok(ColumnFamilyDescriptor::new(*name, cf))
        });
        let descriptors = descriptors.collect::<Result<Vec<_>, OpenError>>()?;
        let db = DB::open_cf_descriptors(&db_options, &path, descriptors).map_err(rocks_err)?;

        if let Some(old) = check_format(&db, &path)?.filter(|v| *v != FORMAT_VERSION) {
            let rewritten = upgrade_keys(&db).map_err(|reason| OpenError::Rocks {
                path: path.clone(),
                reason: format!("upgrading from format version {old}: {reason}"),
            })?;
            tracing::info!(
                path = %path.display(),
                messages = rewritten,
                from = old,
                "upgraded the store to format version {FORMAT_VERSION}"
            );
        }
        let seed = highest_id(&db).map_err(rocks_err)?;
        let ids = IdGenerator::new(options.node_id, seed)?;
        let meta = db.cf_handle(CF_META).expect("meta column family is opened");
        let mut batch = WriteBatch::default();
        batch.put_cf(meta, META_FORMAT_VERSION, FORMAT_VERSION.to_be_bytes());
        batch.put_cf(meta, META_NODE_ID, options.node_id.to_be_bytes());
        db.write(batch).map_err(rocks_err)?;

        tracing::debug!(path = %path.display(), seed = %seed, "opened RocksDB store");
        Ok(Self {
            db,
            path,
            writer: Mutex::new(ids),
            sync_writes: options.sync_writes,
            write_options: write_options(options.sync_writes),
            idempotency_ttl_ms: u64::try_from(options.idempotency_ttl.as_millis())
                .unwrap_or(u64::MAX),
            closed: AtomicBool::new(false),
        })
    }

    /// The database directory.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The highest message id stored, if any.
    pub fn last_id(&self) -> Result<Option<MessageId>, StoreError> {
        let seed = highest_id(&self.db).map_err(store_error)?;
        Ok((seed != MessageId::MIN).then_some(seed))
    }

    /// Compacts the idempotency column family now, so the TTL filter drops every expired key.
    /// The server does not need this (RocksDB's own and periodic compactions run the filter);
    /// it is for maintenance and tests.
    pub fn compact_idempotency_keys(&self) -> Result<(), StoreError> {
        self.ensure_open()?;
        let cf = self.cf(CF_IDEMPOTENCY);
        self.db.flush_cf(cf).map_err(store_error)?;
        self.db.compact_range_cf(cf, None::<&[u8]>, None::<&[u8]>);
        Ok(())
    }

    fn cf(&self, name: &str) -> &ColumnFamily {
        // Every column family in COLUMN_FAMILIES is created at open.
        self.db.cf_handle(name).expect("column family is opened")
    }

    fn ensure_open(&self) -> Result<(), StoreError> {
        if self.closed.load(Ordering::Acquire) {
            return Err(StoreError::Closed);
        }
        Ok(())
    }
}

fn write_options(sync_writes: bool) -> WriteOptions {
    let mut options = WriteOptions::default();
    options.set_sync(sync_writes);
    options
}

/// Milliseconds since the Unix epoch; 0 if the clock is before it.
fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
}

fn cf_options(
    name: &str,
    compression: Compression,
    cache: &Cache,
) -> Result<Options, rocksdb::Error> {
    let mut table = BlockBasedOptions::default();
    table.set_block_cache(cache);
    if name != CF_MESSAGES {
        // Point lookups by id and key: a bloom filter spares a disk read for every miss.
        table.set_bloom_filter(10.0, false);
    }
    let mut options = Options::default();
    options.set_compression_type(compression.rocksdb_type());
    options.set_block_based_table_factory(&table);
    if name == CF_MESSAGES {
        // The crate has no setter for the hint's extractor; RocksDB's options string does. The
        // result is a copy of `options` with it set, sharing the table factory and its cache.
        options = options.get_options_from_string(format!(
            "memtable_insert_with_hint_prefix_extractor=fixed:{}",
            keys::MEMTABLE_HINT_PREFIX_LEN
        ))?;
    }
    Ok(options)
}

/// The format version the store records, `None` for a new store. Refuses one this build cannot
/// read or upgrade.
fn check_format(db: &DB, path: &Path) -> Result<Option<u32>, OpenError> {
    let meta = db.cf_handle(CF_META).expect("meta column family is opened");
    let stored = db
        .get_cf(meta, META_FORMAT_VERSION)
        .map_err(|e| OpenError::Rocks {
            path: path.to_owned(),
            reason: e.into_string(),
        })?;
    let Some(bytes) = stored else {
        return Ok(None);
    };
    match <[u8; 4]>::try_from(bytes.as_slice()).map(u32::from_be_bytes) {
        Ok(version)
            if version == FORMAT_VERSION || keys::OLD_FORMAT_VERSIONS.contains(&version) =>
        {
            Ok(Some(version))
        }
        Ok(version) => Err(OpenError::Format {
            path: path.to_owned(),
            found: version.to_string(),
        }),
        Err(_) => Err(OpenError::Format {
            path: path.to_owned(),
            found: format!("{bytes:?}"),
        }),
    }
}

/// How many keys one upgrade batch rewrites: a few megabytes per write.
const UPGRADE_BATCH_KEYS: usize = 10_000;

/// Rewrites every `messages` key of an older format (1 or 2) into the current layout, then
/// records the current version. Returns how many messages it rewrote.
///
/// Each batch deletes old keys and puts their new ones in one atomic write, so a crash leaves
/// every message under exactly one key, old or new; the next open carries on from there, since
/// every layout uses its own separator. The version is recorded last, with a WAL sync that also
/// makes every batch before it durable. Values do not change.
fn upgrade_keys(db: &DB) -> Result<u64, String> {
    let messages = db
        .cf_handle(CF_MESSAGES)
        .expect("messages column family is opened");
    let meta = db.cf_handle(CF_META).expect("meta column family is opened");
    let rocks = |e: rocksdb::Error| e.into_string();
    let mut rewritten = 0;
    let mut batch = WriteBatch::default();
    // The iterator reads a snapshot: the new keys written meanwhile are not met again.
    let mut entries = db.raw_iterator_cf(messages);
    entries.seek_to_first();
    while let (Some(key), Some(value)) = (entries.key(), entries.value()) {
        if let Some((conversation, id)) = keys::decode_old_message_key(key) {
            let conversation = std::str::from_utf8(conversation)
                .map_err(|_| format!("message {id} has a conversation id that is not UTF-8"))?;
            batch.delete_cf(messages, key);
            batch.put_cf(messages, keys::message_key(conversation, id), value);
            rewritten += 1;
            if batch.len() >= 2 * UPGRADE_BATCH_KEYS {
                db.write(std::mem::take(&mut batch)).map_err(rocks)?;
            }
        }
        entries.next();
    }
    entries.status().map_err(rocks)?;
    batch.put_cf(meta, META_FORMAT_VERSION, FORMAT_VERSION.to_be_bytes());
    let mut synced = WriteOptions::default();
    synced.set_sync(true);
    db.write_opt(batch, &synced).map_err(rocks)?;
    Ok(rewritten)
}

/// The highest id in `message_index`, or [`MessageId::MIN`] for an empty store.
fn highest_id(db: &DB) -> Result<MessageId, rocksdb::Error> {
    let index = db
        .cf_handle(CF_MESSAGE_INDEX)
        .expect("index column family is opened");
    match db.iterator_cf(index, IteratorMode::End).next() {
        Some(entry) => {
            let (key, _) = entry?;
            Ok(keys::decode_index_key(&key).unwrap_or(MessageId::MIN))
        }
        None => Ok(MessageId::MIN),
    }
}

fn store_error(e: rocksdb::Error) -> StoreError {
    match e.kind() {
        ErrorKind::Corruption => StoreError::Corrupt(e.into_string()),
        ErrorKind::InvalidArgument | ErrorKind::NotSupported => {
            StoreError::Internal(e.into_string())
        }
        _ => StoreError::Unavailable(e.into_string()),
    }
}

impl Store for RocksStore {
    fn insert_with_keys(
        &self,
        messages: &[PreparedMessage],
        idempotency: &[(usize, IdempotencyKey)],
    ) -> Result<Vec<Inserted>, StoreError> {
        self.ensure_open()?;
        // A prepared message's names are valid, so a conversation id never holds the 0x02 byte
        // that ends it in a key.
        let messages_cf = self.cf(CF_MESSAGES);
        let index_cf = self.cf(CF_MESSAGE_INDEX);
        let mut inserted = Vec::with_capacity(messages.len());
        // Sized up front: growing it copied the whole batch each time it doubled.
        let size: usize = messages
            .iter()
            .map(|m| 2 * m.conversation_id().len() + m.approximate_json_len() + 48)
            .sum();
        let mut batch = WriteBatch::with_capacity_bytes(size + 64);

        // A panic while holding the lock cannot leave the generator inconsistent (it is atomic),
        // so a poisoned lock is still safe to use.
        let ids = self.writer.lock().unwrap_or_else(|p| p.into_inner());
        // One key and one value buffer for the whole group, sized for its largest message: the
        // batch copies what it is given, so nothing is allocated per message.
        let (longest_key, longest_value) = messages.iter().fold((0, 0), |(k, v), m| {
            let key = keys::MESSAGE_KEY_OVERHEAD + m.conversation_id().len();
            (k.max(key), v.max(m.approximate_json_len() + 1))
        });
        let (mut key, mut value) = (
            Vec::with_capacity(longest_key),
            Vec::with_capacity(longest_value),
        );
        for message in messages {
            let id = ids.next_id()?;
            let conversation_id = message.conversation_id();
            keys::write_value(&mut value, conversation_id.as_bytes());
            batch.put_cf(index_cf, keys::index_key(id), &value);
            inserted.push(Inserted {
                msg_id: id,
                conversation_id: conversation_id.to_owned(),
                timestamp: id.timestamp_ms(),
            });
        }
        // Newest first, so that a batch of one conversation reaches the memtable in key order:
        // its skip list then finds each key's place next to the last one instead of searching
        // from the top, which cost 40% more per message when they went in oldest first.
        for (message, answer) in messages.iter().zip(&inserted).rev() {
            keys::write_message_key(&mut key, message.conversation_id(), answer.msg_id);
            keys::write_message_value(&mut value, message, answer.msg_id);
            batch.put_cf(messages_cf, &key, &value);
        }
        let keys_cf = self.cf(CF_IDEMPOTENCY);
        let created = now_ms();
        for (index, key) in idempotency {
            let answer = inserted.get(*index).ok_or_else(|| {
                StoreError::Internal(format!(
                    "idempotency key for message {index} of {}",
                    inserted.len()
                ))
            })?;
            let mut json = Vec::with_capacity(answer.approximate_json_len());
            answer.write_json(&mut json);
            batch.put_cf(
                keys_cf,
                key.key.as_bytes(),
                keys::encode_idempotency(&key.fingerprint, created, &json),
            );
        }
        self.db
            .write_opt(batch, &self.write_options)
            .map_err(store_error)?;
        drop(ids);
        Ok(inserted)
    }

    fn idempotency_record(&self, key: &str) -> Result<Option<IdempotencyRecord>, StoreError> {
        self.ensure_open()?;
        let Some(value) = self
            .db
            .get_pinned_cf(self.cf(CF_IDEMPOTENCY), key.as_bytes())
            .map_err(store_error)?
        else {
            return Ok(None);
        };
        let (fingerprint, created_ms, json) = keys::decode_idempotency(&value)
            .ok_or_else(|| StoreError::Corrupt(format!("idempotency record of {key:?}")))?;
        // Expired but not yet compacted away: as good as gone.
        if now_ms().saturating_sub(created_ms) >= self.idempotency_ttl_ms {
            return Ok(None);
        }
        let inserted = serde_json::from_slice(json)
            .map_err(|e| StoreError::Corrupt(format!("idempotency record of {key:?}: {e}")))?;
        Ok(Some(IdempotencyRecord {
            fingerprint,
            created_ms,
            inserted,
        }))
    }

    fn get(&self, id: MessageId) -> Result<Option<StoredMessage>, StoreError> {
        self.ensure_open()?;
        let Some(entry) = self
            .db
            .get_pinned_cf(self.cf(CF_MESSAGE_INDEX), keys::index_key(id))
            .map_err(store_error)?
        else {
            return Ok(None);
        };
        let conversation = keys::decode_value(&entry)
            .and_then(|bytes| std::str::from_utf8(bytes).ok())
            .ok_or_else(|| StoreError::Corrupt(format!("index entry of {id} does not decode")))?;
        let value = self
            .db
            .get_pinned_cf(self.cf(CF_MESSAGES), keys::message_key(conversation, id))
            .map_err(store_error)?
            .ok_or_else(|| StoreError::Corrupt(format!("message {id} is indexed but missing")))?;
        let json = keys::decode_value(&value)
            .ok_or_else(|| StoreError::Corrupt(format!("message {id} has an unknown version")))?;
        Ok(Some(StoredMessage {
            msg_id: id,
            json: json.to_vec(),
        }))
    }

    fn query(&self, query: &Query) -> Result<Page, StoreError> {
        self.ensure_open()?;
        let conversation = query.conversation_id.as_str();
        validate_name("conversation_id", conversation)?;
        // Exclusive bounds become the iterator's [lower, upper) key range, which never leaves
        // this conversation's keys (see `keys`).
        let Some((lower, upper)) = keys::id_range(conversation, query.since, query.before) else {
            return Ok(Page::default());
        };
        if query.limit == 0 {
            return Ok(Page::default());
        }
        let mut options = ReadOptions::default();
        options.set_iterate_lower_bound(lower);
        options.set_iterate_upper_bound(upper);
        // The raw iterator lends each key and value in place; the plain iterator would copy
        // both into fresh boxes before the JSON is copied out once more.
        let mut entries = self.db.raw_iterator_cf_opt(self.cf(CF_MESSAGES), options);
        // Keys run newest first (see `keys`): the common newest-first page reads forward.
        match query.order {
            Order::Desc => entries.seek_to_first(),
            Order::Asc => entries.seek_to_last(),
        }
        let mut messages = Vec::with_capacity(query.limit.min(1024));
        let mut has_more = false;
        while let (Some(key), Some(value)) = (entries.key(), entries.value()) {
            // One message past the limit answers `has_more` without a second query.
            if messages.len() == query.limit {
                has_more = true;
                break;
            }
            // The bounds hold this conversation's keys only, so the id is all there is to read.
            let msg_id = keys::decode_message_id(key)
                .ok_or_else(|| StoreError::Corrupt("a message key does not decode".into()))?;
            let json = keys::decode_value(value).ok_or_else(|| {
                StoreError::Corrupt(format!("message {msg_id} has an unknown version"))
            })?;
            messages.push(StoredMessage {
                msg_id,
                json: json.to_vec(),
            });
            match query.order {
                Order::Desc => entries.next(),
                Order::Asc => entries.prev(),
            }
        }
        // An iterator that stops early on a read error is invalid, not at its end.
        entries.status().map_err(store_error)?;
        Ok(Page { messages, has_more })
    }

    fn health_check(&self) -> Result<(), StoreError> {
        self.ensure_open()?;
        let meta = self.cf(CF_META);
        self.db
            .get_pinned_cf(meta, META_FORMAT_VERSION)
            .map_err(store_error)?
            .ok_or_else(|| StoreError::Corrupt("the format version is missing".into()))?;
        // A read alone passes on a full or read-only disk; the probe must also write.
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_millis() as u64);
        self.db
            .put_cf(meta, META_HEALTH_PROBE, now.to_be_bytes())
            .map_err(store_error)
    }

    fn flush(&self) -> Result<(), StoreError> {
        self.db.flush_wal(true).map_err(store_error)?;
        let mut options = FlushOptions::default();
        options.set_wait(true);
        for name in COLUMN_FAMILIES {
            self.db
                .flush_cf_opt(self.cf(name), &options)
                .map_err(store_error)?;
        }
        Ok(())
    }

    fn stats(&self) -> Result<Vec<PartStats>, StoreError> {
        self.ensure_open()?;
        let property = |cf: &ColumnFamily, name: &str| -> Result<u64, StoreError> {
            Ok(self
                .db
                .property_int_value_cf(cf, name)
                .map_err(store_error)?
                .unwrap_or(0))
        };
        COLUMN_FAMILIES
            .iter()
            .map(|&name| {
                let cf = self.cf(name);
                Ok(PartStats {
                    name,
                    estimated_keys: property(cf, "rocksdb.estimate-num-keys")?,
                    live_data_bytes: property(cf, "rocksdb.live-sst-files-size")?,
                    pending_compaction_bytes: property(
                        cf,
                        "rocksdb.estimate-pending-compaction-bytes",
                    )?,
                })
            })
            .collect()
    }

    fn close(&self) -> Result<(), StoreError> {
        // Taking the writer lock waits for an insert under way to finish before closing.
        let _ids = self.writer.lock().unwrap_or_else(|p| p.into_inner());
        if self.closed.swap(true, Ordering::AcqRel) {
            return Ok(());
        }
        self.flush()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The messages column family's options are rebuilt from a string to set the insert hint;
    /// they must still read through the one shared block cache, like every other family.
    #[test]
    fn every_column_family_reads_through_the_shared_block_cache() {
        let dir = tempfile::tempdir().unwrap();
        let store = RocksStore::open(&StoreOptions::new(dir.path().join("db"))).unwrap();
        for name in COLUMN_FAMILIES {
            let capacity = store
                .db
                .property_int_value_cf(store.cf(name), "rocksdb.block-cache-capacity")
                .unwrap();
            assert_eq!(capacity, Some(BLOCK_CACHE_BYTES as u64), "{name}");
        }
    }
}

//! [`StoreOptions`], what `[storage]` configures, and the RocksDB options built from them.

use std::path::PathBuf;
use std::time::Duration;

use rocksdb::{BlockBasedOptions, Cache, DBCompressionType, Options, WriteOptions};

use crate::keys::{self, CF_ACTIVITY, CF_MESSAGES};

/// Block cache shared by all column families. Recent messages are the hot set of a chat store.
pub(crate) const BLOCK_CACHE_BYTES: usize = 64 * 1024 * 1024;

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

/// What [`RocksStore::open`](crate::RocksStore::open) needs to know.
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
    /// How soon a deleted or edited message's bytes must be gone from the data directory's
    /// files (`storage.erase_within_secs`); the eraser starts a quarter of it after a delete.
    pub erase_within: Duration,
    /// How old a message may grow before it is deleted (`retention.max_age_secs`); `None`
    /// keeps messages forever.
    pub retention: Option<Duration>,
    /// Memory, in bytes, for the newest messages of recently read conversations
    /// (`storage.recent_cache_mb`): pages among them are answered without reading RocksDB.
    /// 0 turns the cache off.
    pub recent_cache_bytes: usize,
    /// The most messages the recent cache keeps of one conversation: pages of up to one less
    /// than this are answered from it.
    pub recent_per_conversation: usize,
    /// The most bytes of write-ahead log kept (`storage.max_wal_mb`). Past it, RocksDB flushes
    /// the column families whose unflushed writes hold the oldest log, so that the log can go.
    /// Recovery after a crash replays the whole live log: this bounds that time and the disk
    /// the log takes. RocksDB checks it as writes arrive; the maintenance thread
    /// ([`RocksStore::start_maintenance`](crate::RocksStore::start_maintenance)) keeps it for
    /// a store that takes no more.
    pub max_wal_bytes: u64,
}

/// `StoreOptions::recent_cache_bytes` by default: 32 MiB.
const DEFAULT_RECENT_CACHE_BYTES: usize = 32 * 1024 * 1024;

/// `StoreOptions::max_wal_bytes` by default: 512 MiB, eight times the `messages` column
/// family's write buffer, so that a full log flushes the column families that fill slowly (the
/// index, records, listings), not `messages`, which flushes every 64 MiB on its own.
/// Unset, RocksDB allows four times all the column families' write buffers, some 6 GiB here.
const DEFAULT_MAX_WAL_BYTES: u64 = 512 * 1024 * 1024;

/// `StoreOptions::recent_per_conversation` by default: twice the default page of 50, and one
/// more to tell whether there is more.
const DEFAULT_RECENT_PER_CONVERSATION: usize = 101;

impl StoreOptions {
    /// Options for a store at `path` with the defaults: node 0, synced writes, LZ4.
    pub fn new(path: impl Into<PathBuf>) -> Self {
        Self {
            path: path.into(),
            node_id: 0,
            sync_writes: true,
            compression: Compression::default(),
            idempotency_ttl: Duration::from_secs(86_400),
            erase_within: Duration::from_secs(60),
            retention: None,
            recent_cache_bytes: DEFAULT_RECENT_CACHE_BYTES,
            recent_per_conversation: DEFAULT_RECENT_PER_CONVERSATION,
            max_wal_bytes: DEFAULT_MAX_WAL_BYTES,
        }
    }
}

/// Write options that fsync the WAL before returning when `sync_writes` is set.
pub(crate) fn write_options(sync_writes: bool) -> WriteOptions {
    let mut options = WriteOptions::default();
    options.set_sync(sync_writes);
    options
}

/// The options of the column family `name`: compression, the shared block cache, three write
/// buffers, and for `messages` the memtable insert hint.
pub(crate) fn cf_options(
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
    // A third write buffer. With RocksDB's two, writes stop whenever a column family's buffer
    // fills (or the log's bound, `max_wal_bytes`, switches it) while the one before it is still
    // being flushed: every few seconds under batches of 100, for up to 650 ms (the p999). The
    // cost is one more buffer's memory while a flush lags (docs/BENCHMARKS.md).
    options.set_max_write_buffer_number(3);
    if name == CF_MESSAGES || name == CF_ACTIVITY {
        // The crate has no setter for the hint's extractor; RocksDB's options string does. The
        // result is a copy of `options` with it set, sharing the table factory and its cache.
        // In `conversation_activity` the two bytes are the listing's bucket, and a message puts
        // each listing's new entry first (newest first): the hint finds its place without a
        // search.
        options = options.get_options_from_string(format!(
            "memtable_insert_with_hint_prefix_extractor=fixed:{}",
            keys::MEMTABLE_HINT_PREFIX_LEN
        ))?;
    }
    Ok(options)
}

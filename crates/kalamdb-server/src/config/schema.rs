//! The configuration's sections as types: each key's type, default and meaning, and each
//! section's own checks (`validate`). Zero is unrepresentable where it is invalid (`NonZero*`).

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::num::{NonZeroU16, NonZeroU64, NonZeroUsize};
use std::path::PathBuf;
use std::time::Duration;

use kalamdb_core::id::MAX_NODE_ID;
use kalamdb_core::Limits;
use kalamdb_middleware::{
    body_limit, concurrency, cors, rate_limit, request_id, request_log, timeout, timing,
    InvalidSetting,
};
use kalamdb_services::{QueryLimits, StreamLimits};
use serde::{Deserialize, Serialize};

use crate::serve::ServeOptions;

/// The most reader threads `storage.read_concurrency` may ask for.
const MAX_READ_CONCURRENCY: usize = 512;

/// A default that is not zero.
fn nonzero<T: TryInto<N>, N>(value: T) -> N {
    value
        .try_into()
        .unwrap_or_else(|_| unreachable!("every default is non-zero"))
}

/// `[server]`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ServerConfig {
    /// The address to listen on: an IP address, not a host name. Default `127.0.0.1`.
    pub host: IpAddr,
    /// The TCP port, 1-65535. Default 8080.
    pub port: NonZeroU16,
    /// This server's Snowflake node id, 0-1023. Default 0.
    pub node_id: u16,
    /// How long shutdown waits for in-flight requests before closing their connections, in
    /// milliseconds. Default 30000.
    pub shutdown_timeout_ms: u64,
    /// How long an HTTP/1 client has to send a request's headers, and how long an idle
    /// keep-alive connection stays open, in milliseconds. Stops slowloris clients from holding
    /// connections. Default 10000.
    pub header_read_timeout_ms: NonZeroU64,
    /// Keep HTTP/1.1 connections open between requests. Default true.
    pub keep_alive: bool,
    /// The most connections open at once; further clients wait in the listen backlog until one
    /// closes. Default 10000.
    pub max_connections: NonZeroUsize,
}

impl Default for ServerConfig {
    fn default() -> Self {
        Self {
            host: IpAddr::V4(Ipv4Addr::LOCALHOST),
            port: nonzero(8080),
            node_id: 0,
            shutdown_timeout_ms: 30_000,
            header_read_timeout_ms: nonzero(10_000),
            keep_alive: true,
            max_connections: nonzero(10_000),
        }
    }
}

impl ServerConfig {
    /// What the types cannot say: the node id's range.
    pub(super) fn validate(&self) -> Result<(), InvalidSetting> {
        if self.node_id > MAX_NODE_ID {
            return Err(InvalidSetting::new(
                "server.node_id",
                format!("must be between 0 and {MAX_NODE_ID}, got {}", self.node_id),
            ));
        }
        Ok(())
    }

    /// How the accept loop treats connections.
    pub fn serve_options(&self) -> ServeOptions {
        ServeOptions {
            drain_timeout: Duration::from_millis(self.shutdown_timeout_ms),
            header_read_timeout: Duration::from_millis(self.header_read_timeout_ms.get()),
            keep_alive: self.keep_alive,
            max_connections: self.max_connections.get(),
        }
    }

    /// The socket address to bind.
    pub fn listen_addr(&self) -> SocketAddr {
        SocketAddr::new(self.host, self.port.get())
    }
}

/// `[storage]`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct StorageConfig {
    /// The RocksDB directory, created when missing. Default `data/rocksdb`.
    pub rocksdb_path: PathBuf,
    /// Fsync the WAL before acknowledging a write. Default true. False still survives a process
    /// crash (`kill -9`), not a power cut.
    pub sync_writes: bool,
    /// Block compression: `none`, `lz4` or `zstd`. Default `lz4`.
    pub compression: CompressionSetting,
    /// How many reads (queries, lookups by id, stream catch-ups) run at once, each on one of the
    /// store's reader threads; more wait their turn. 0, the default, means one per CPU core
    /// (with `backend = "postgres"`, one per pooled connection).
    pub read_concurrency: usize,
    /// How soon, in seconds, a deleted or edited message's bytes are gone from the data
    /// directory's files (WAL and table files), 1 to 86400. Default 60.
    pub erase_within_secs: NonZeroU64,
    /// Memory, in MiB, for the newest messages of recently read conversations, 0 to 65536:
    /// a latest page or a catch-up since a recent message is answered from it without reading
    /// RocksDB. 0 turns it off. Default 32.
    pub recent_cache_mb: u64,
    /// The most write-ahead log, in MiB, kept before RocksDB flushes the column families that
    /// hold its oldest file, 16 to 65536. A restart after a crash replays all of it. Default 512.
    pub max_wal_mb: u64,
    /// Where messages live: `rocksdb` (embedded, one server; the default) or `postgres` (a
    /// PostgreSQL-protocol database several servers share, `[storage.postgres]`).
    pub backend: BackendSetting,
    /// `[storage.postgres]`: the database, with `backend = "postgres"`.
    pub postgres: PostgresConfig,
}

/// `storage.backend`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum BackendSetting {
    /// The embedded RocksDB store.
    #[default]
    Rocksdb,
    /// A PostgreSQL-protocol database (`kalamdb-postgres`).
    Postgres,
}

/// `[storage.postgres]`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct PostgresConfig {
    /// A `postgres://user@host:port/database` URL or a libpq key=value string. Default
    /// `postgres://kalamdb@127.0.0.1:5432/kalamdb`. A password may be in it, but
    /// `password_file` keeps it out of the config (and `--check-config` prints it masked).
    pub url: String,
    /// A file holding the database password (its first line), which then wins over one in
    /// `url`. Default none.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub password_file: Option<PathBuf>,
    /// The most connections this server opens, which is also the most transactions it runs
    /// at once, 1 to 1024. Default 16.
    pub pool_size: NonZeroUsize,
    /// The schema of KalamDB's tables, created (and upgraded) at start-up: a lower-case SQL
    /// identifier. Default `kalamdb`.
    pub schema: String,
    /// How long this server's node-id lease lasts without renewal, in seconds, 2 to 3600
    /// (renewed every third of it). A server that cannot renew in time stops writing; a dead
    /// server's node id is free again after it. Default 10.
    pub lease_secs: NonZeroU64,
}

impl Default for PostgresConfig {
    fn default() -> Self {
        Self {
            url: "postgres://kalamdb@127.0.0.1:5432/kalamdb".into(),
            password_file: None,
            pool_size: nonzero(16),
            schema: "kalamdb".into(),
            lease_secs: nonzero(10),
        }
    }
}

/// `[live]`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct LiveConfig {
    /// How a server hears of messages other servers stored, for its event streams: `local`
    /// (one server; the default), `nats` (NATS core pub/sub at `nats_url`) or `postgres`
    /// (PostgreSQL `LISTEN`/`NOTIFY` on `[storage.postgres]`'s database; PostgreSQL and Citus
    /// only). `nats` and `postgres` need `storage.backend = "postgres"`.
    pub bus: BusSetting,
    /// The NATS server, `nats://host:port`. Default `nats://127.0.0.1:4222`.
    pub nats_url: String,
    /// The NATS subject, or the PostgreSQL channel, the servers share: letters, digits, `_`
    /// and (NATS) `.`; servers on different `[storage.postgres]` schemas need different ones.
    /// Default `kalamdb_live`.
    pub channel: String,
    /// With a bus: how long, in milliseconds, an event stream hears nothing before it reads
    /// the store anyway, so a message the bus lost reaches it at most this late. 10 to
    /// 600000. Default 1000.
    pub resync_ms: NonZeroU64,
}

impl Default for LiveConfig {
    fn default() -> Self {
        Self {
            bus: BusSetting::Local,
            nats_url: "nats://127.0.0.1:4222".into(),
            channel: "kalamdb_live".into(),
            resync_ms: nonzero(1000),
        }
    }
}

/// `live.bus`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum BusSetting {
    /// No bus: streams hear of this server's messages only.
    #[default]
    Local,
    /// NATS core pub/sub.
    Nats,
    /// PostgreSQL `NOTIFY`, sent after each commit.
    Postgres,
}

impl LiveConfig {
    pub(super) fn validate(&self) -> Result<(), InvalidSetting> {
        if !(10..=600_000).contains(&self.resync_ms.get()) {
            return Err(InvalidSetting::new(
                "live.resync_ms",
                format!("must be between 10 and 600000, got {}", self.resync_ms),
            ));
        }
        let channel_ok = !self.channel.is_empty()
            && self.channel.len() <= 63
            && self
                .channel
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'.')
            && !self.channel.starts_with('.')
            && !self.channel.ends_with('.')
            && (self.bus != BusSetting::Postgres || !self.channel.contains('.'));
        if !channel_ok {
            return Err(InvalidSetting::new(
                "live.channel",
                format!(
                    "{:?} is not a channel name: 1-63 letters, digits and _ (and, for NATS, dots between them)",
                    self.channel
                ),
            ));
        }
        if self.bus == BusSetting::Nats && nats_address(&self.nats_url).is_none() {
            return Err(InvalidSetting::new(
                "live.nats_url",
                format!("{:?} is not nats://host:port", self.nats_url),
            ));
        }
        Ok(())
    }
}

/// `host:port` of a `nats://host:port` URL.
pub fn nats_address(url: &str) -> Option<String> {
    let rest = url.strip_prefix("nats://")?;
    let (host, port) = rest.trim_end_matches('/').rsplit_once(':')?;
    if host.is_empty() || host.contains(['/', '@', ' ']) {
        return None;
    }
    port.parse::<u16>().ok().filter(|p| *p > 0)?;
    Some(format!("{host}:{port}"))
}

/// The largest `storage.recent_cache_mb`: 64 GiB.
pub(super) const MAX_RECENT_CACHE_MB: u64 = 65_536;

/// The bounds of `storage.max_wal_mb`. At 16 MiB the messages' 64 MiB write buffer is already
/// flushed at a quarter full, and less would only write smaller table files more often; 64 GiB
/// is far past what RocksDB allows unbounded, some 6 GiB here.
const WAL_MB_RANGE: std::ops::RangeInclusive<u64> = 16..=65_536;

/// The longest `storage.erase_within_secs`: a day.
const MAX_ERASE_WITHIN_SECS: u64 = 86_400;

impl Default for StorageConfig {
    fn default() -> Self {
        Self {
            rocksdb_path: PathBuf::from("data/rocksdb"),
            sync_writes: true,
            compression: CompressionSetting::Lz4,
            read_concurrency: 0,
            erase_within_secs: nonzero(60),
            recent_cache_mb: 32,
            max_wal_mb: 512,
            backend: BackendSetting::Rocksdb,
            postgres: PostgresConfig::default(),
        }
    }
}

impl StorageConfig {
    /// What the types cannot say: a path, and how many readers.
    pub(super) fn validate(&self) -> Result<(), InvalidSetting> {
        if self.rocksdb_path.as_os_str().is_empty() {
            return Err(InvalidSetting::new(
                "storage.rocksdb_path",
                "must not be empty",
            ));
        }
        if self.read_concurrency > MAX_READ_CONCURRENCY {
            return Err(InvalidSetting::new(
                "storage.read_concurrency",
                format!(
                    "must be between 0 (one per CPU core) and {MAX_READ_CONCURRENCY}, got {}",
                    self.read_concurrency
                ),
            ));
        }
        if self.backend == BackendSetting::Postgres {
            let postgres = &self.postgres;
            if postgres.url.trim().is_empty() {
                return Err(InvalidSetting::new(
                    "storage.postgres.url",
                    "must not be empty",
                ));
            }
            if postgres.pool_size.get() > 1024 {
                return Err(InvalidSetting::new(
                    "storage.postgres.pool_size",
                    format!("must be between 1 and 1024, got {}", postgres.pool_size),
                ));
            }
            if !kalamdb_postgres::sql::valid_schema(&postgres.schema) {
                return Err(InvalidSetting::new(
                    "storage.postgres.schema",
                    format!(
                        "{:?} is not a lower-case SQL identifier (a-z, 0-9 and _, not starting with a digit, at most 63 bytes)",
                        postgres.schema
                    ),
                ));
            }
            if !(2..=3600).contains(&postgres.lease_secs.get()) {
                return Err(InvalidSetting::new(
                    "storage.postgres.lease_secs",
                    format!("must be between 2 and 3600, got {}", postgres.lease_secs),
                ));
            }
        }
        if self.recent_cache_mb > MAX_RECENT_CACHE_MB {
            return Err(InvalidSetting::new(
                "storage.recent_cache_mb",
                format!(
                    "must be between 0 (off) and {MAX_RECENT_CACHE_MB}, got {}",
                    self.recent_cache_mb
                ),
            ));
        }
        if !WAL_MB_RANGE.contains(&self.max_wal_mb) {
            return Err(InvalidSetting::new(
                "storage.max_wal_mb",
                format!(
                    "must be between {} and {}, got {}",
                    WAL_MB_RANGE.start(),
                    WAL_MB_RANGE.end(),
                    self.max_wal_mb
                ),
            ));
        }
        if self.erase_within_secs.get() > MAX_ERASE_WITHIN_SECS {
            return Err(InvalidSetting::new(
                "storage.erase_within_secs",
                format!(
                    "must be between 1 and {MAX_ERASE_WITHIN_SECS} seconds, got {}",
                    self.erase_within_secs
                ),
            ));
        }
        Ok(())
    }
}

/// `[retention]`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RetentionConfig {
    /// Delete messages older than this many seconds, as a trim does (counts included); 0, the
    /// default, keeps them forever.
    pub max_age_secs: u64,
}

impl RetentionConfig {
    /// The age past which messages go, `None` to keep them.
    pub fn max_age(&self) -> Option<Duration> {
        (self.max_age_secs > 0).then(|| Duration::from_secs(self.max_age_secs))
    }
}

/// `storage.compression`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum CompressionSetting {
    /// No compression.
    None,
    /// LZ4.
    Lz4,
    /// Zstandard.
    Zstd,
}

/// `[limits]`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct LimitsConfig {
    /// The largest `content`, in bytes. Default 1048576 (1 MiB).
    pub max_message_size: NonZeroUsize,
    /// The largest `metadata`, in bytes of compact JSON. Default 65536.
    pub max_metadata_size: usize,
    /// The page size of a query that names no `limit`. Default 50; at most `max_query_limit`.
    pub default_query_limit: NonZeroUsize,
    /// The largest `limit` a query may ask for. Default 1000.
    pub max_query_limit: NonZeroUsize,
    /// The most messages one `POST /api/v1/messages/batch` may hold. Default 1000.
    pub max_batch_messages: NonZeroUsize,
    /// How long an `Idempotency-Key` is remembered, in seconds. Default 86400 (a day).
    pub idempotency_ttl_secs: NonZeroU64,
}

impl Default for LimitsConfig {
    fn default() -> Self {
        let limits = Limits::default();
        Self {
            max_message_size: nonzero(limits.max_message_size),
            max_metadata_size: limits.max_metadata_size,
            default_query_limit: nonzero(QueryLimits::default().default_limit),
            max_query_limit: nonzero(QueryLimits::default().max_limit),
            max_batch_messages: nonzero(kalamdb_services::insert_batch::DEFAULT_MAX_BATCH_MESSAGES),
            idempotency_ttl_secs: nonzero(86_400),
        }
    }
}

impl LimitsConfig {
    /// What the types cannot say: metadata's floor, and the default page within the largest.
    pub(super) fn validate(&self) -> Result<(), InvalidSetting> {
        if self.max_metadata_size < 2 {
            return Err(InvalidSetting::new(
                "limits.max_metadata_size",
                "must be at least 2 (the size of an empty object, {})",
            ));
        }
        if self.default_query_limit > self.max_query_limit {
            return Err(InvalidSetting::new(
                "limits.default_query_limit",
                format!(
                    "must be between 1 and limits.max_query_limit ({}), got {}",
                    self.max_query_limit, self.default_query_limit
                ),
            ));
        }
        Ok(())
    }
}

/// `[stream]`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct StreamConfig {
    /// How often an idle event stream sends a heartbeat comment, in milliseconds, so proxies
    /// keep it open and clients notice a dead connection. Default 15000.
    pub heartbeat_ms: NonZeroU64,
    /// The most event streams open at once; past it a new one gets 503 `overloaded`.
    /// Default 10000.
    pub max_subscribers: NonZeroUsize,
}

impl Default for StreamConfig {
    fn default() -> Self {
        let limits = StreamLimits::default();
        Self {
            heartbeat_ms: nonzero(limits.heartbeat.as_millis() as u64),
            max_subscribers: nonzero(limits.max_subscribers),
        }
    }
}

/// `[logging]`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct LoggingConfig {
    /// A `tracing` filter: a level (`info`) or directives (`info,kalamdb_rocksdb=debug`).
    /// `RUST_LOG`, when set, overrides it. Default `info`.
    pub level: String,
    /// The log file; its directory is created. Default `logs/app.log`.
    pub file_path: PathBuf,
    /// `text` or `json`, for both the console and the file. Default `text`.
    pub format: LogFormat,
    /// When the file starts afresh: `never`, `daily` or `hourly`. Rotated files are named
    /// `<file_path>.<date>`. Default `never`.
    pub rotation: LogRotation,
}

impl Default for LoggingConfig {
    fn default() -> Self {
        Self {
            level: "info".into(),
            file_path: PathBuf::from("logs/app.log"),
            format: LogFormat::Text,
            rotation: LogRotation::Never,
        }
    }
}

impl LoggingConfig {
    /// What the types cannot say: a filter `tracing` reads as meant, and a file.
    pub(super) fn validate(&self) -> Result<(), InvalidSetting> {
        if !is_log_filter(&self.level) {
            return Err(InvalidSetting::new(
                "logging.level",
                format!(
                    "{:?} is not a level (error, warn, info, debug, trace) or a filter directive",
                    self.level
                ),
            ));
        }
        if self.file_path.as_os_str().is_empty() {
            return Err(InvalidSetting::new(
                "logging.file_path",
                "must not be empty",
            ));
        }
        Ok(())
    }
}

/// `logging.rotation`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum LogRotation {
    /// One file, `logging.file_path`, forever.
    Never,
    /// A new file each day (UTC).
    Daily,
    /// A new file each hour.
    Hourly,
}

/// `logging.format`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    /// Human-readable lines.
    Text,
    /// One JSON object per line.
    Json,
}

/// `[middleware]`: each layer's own settings.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct MiddlewareConfig {
    /// `[middleware.request_id]`.
    pub request_id: request_id::Config,
    /// `[middleware.request_log]`.
    pub request_log: request_log::Config,
    /// `[middleware.timing]`.
    pub timing: timing::Config,
    /// `[middleware.cors]`.
    pub cors: cors::Config,
    /// `[middleware.rate_limit]`.
    pub rate_limit: rate_limit::Config,
    /// `[middleware.concurrency]`.
    pub concurrency: concurrency::Config,
    /// `[middleware.timeout]`.
    pub timeout: timeout::Config,
    /// `[middleware.body_limit]`.
    pub body_limit: body_limit::Config,
}

impl MiddlewareConfig {
    /// Each layer's own checks, in stack order.
    pub(super) fn validate(&self) -> Result<(), InvalidSetting> {
        self.cors.validate()?;
        self.rate_limit.validate()?;
        self.concurrency.validate()?;
        self.timeout.validate()
    }
}

/// Whether `filter` is a level or a list of `target=level` directives. A bare word must be a
/// level: `EnvFilter` would read `"loud"` as a target name and silently log nothing useful.
pub(super) fn is_log_filter(filter: &str) -> bool {
    const LEVELS: [&str; 6] = ["off", "error", "warn", "info", "debug", "trace"];
    let is_level = |word: &str| {
        LEVELS
            .iter()
            .any(|level| level.eq_ignore_ascii_case(word.trim()))
    };
    !filter.trim().is_empty()
        && filter
            .split(',')
            .all(|directive| match directive.rsplit_once('=') {
                Some((target, level)) => !target.trim().is_empty() && is_level(level),
                None => is_level(directive),
            })
        && tracing_subscriber::EnvFilter::try_new(filter).is_ok()
}

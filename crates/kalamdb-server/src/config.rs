//! The server's configuration: `config.toml`, its defaults, and its validation.
//!
//! Every key has a default, so the server runs with no file at all. Unknown keys, wrong types and
//! bad values stop start-up with a message naming the key (`server.port: ...`); malformed TOML
//! reports the line. `config.example.toml` documents every key.

use std::fmt;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::num::NonZeroUsize;
use std::path::{Path, PathBuf};
use std::time::Duration;

use kalamdb_core::id::MAX_NODE_ID;
use kalamdb_core::{Limits, StoreHandle};
use kalamdb_middleware::{
    body_limit, concurrency, cors, rate_limit, request_id, request_log, timeout, timing,
    InvalidSetting,
};
use kalamdb_rocksdb::{Compression, StoreOptions};
use kalamdb_services::{QueryLimits, StreamLimits};
use serde::{Deserialize, Serialize};

use crate::serve::ServeOptions;

/// The file read when `--config` is not given, if it exists.
pub const DEFAULT_CONFIG_PATH: &str = "config.toml";

/// The most reader threads `storage.read_concurrency` may ask for.
const MAX_READ_CONCURRENCY: usize = 512;

/// The whole configuration.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Config {
    /// `[server]`: the listener and the process.
    pub server: ServerConfig,
    /// `[storage]`: the RocksDB store.
    pub storage: StorageConfig,
    /// `[limits]`: sizes a message is held to.
    pub limits: LimitsConfig,
    /// `[stream]`: live event streams.
    pub stream: StreamConfig,
    /// `[logging]`: console and file logs.
    pub logging: LoggingConfig,
    /// `[middleware.*]`: one section per layer.
    pub middleware: MiddlewareConfig,
}

/// `[server]`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ServerConfig {
    /// The address to listen on: an IP address, not a host name. Default `127.0.0.1`.
    pub host: IpAddr,
    /// The TCP port, 1-65535. Default 8080.
    pub port: u16,
    /// This server's Snowflake node id, 0-1023. Default 0.
    pub node_id: u16,
    /// How long shutdown waits for in-flight requests before closing their connections, in
    /// milliseconds. Default 30000.
    pub shutdown_timeout_ms: u64,
    /// How long an HTTP/1 client has to send a request's headers, and how long an idle
    /// keep-alive connection stays open, in milliseconds. Stops slowloris clients from holding
    /// connections. Default 10000.
    pub header_read_timeout_ms: u64,
    /// Keep HTTP/1.1 connections open between requests. Default true.
    pub keep_alive: bool,
    /// The most connections open at once; further clients wait in the listen backlog until one
    /// closes. Default 10000.
    pub max_connections: usize,
}

impl Default for ServerConfig {
    fn default() -> Self {
        Self {
            host: IpAddr::V4(Ipv4Addr::LOCALHOST),
            port: 8080,
            node_id: 0,
            shutdown_timeout_ms: 30_000,
            header_read_timeout_ms: 10_000,
            keep_alive: true,
            max_connections: 10_000,
        }
    }
}

impl ServerConfig {
    /// How the accept loop treats connections.
    pub fn serve_options(&self) -> ServeOptions {
        ServeOptions {
            drain_timeout: Duration::from_millis(self.shutdown_timeout_ms),
            header_read_timeout: Duration::from_millis(self.header_read_timeout_ms),
            keep_alive: self.keep_alive,
            max_connections: self.max_connections,
        }
    }

    /// The socket address to bind.
    pub fn listen_addr(&self) -> SocketAddr {
        SocketAddr::new(self.host, self.port)
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
    /// store's reader threads; more wait their turn. 0, the default, means one per CPU core.
    pub read_concurrency: usize,
}

impl Default for StorageConfig {
    fn default() -> Self {
        Self {
            rocksdb_path: PathBuf::from("data/rocksdb"),
            sync_writes: true,
            compression: CompressionSetting::Lz4,
            read_concurrency: 0,
        }
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
    pub max_message_size: usize,
    /// The largest `metadata`, in bytes of compact JSON. Default 65536.
    pub max_metadata_size: usize,
    /// The page size of a query that names no `limit`. Default 50; at most `max_query_limit`.
    pub default_query_limit: usize,
    /// The largest `limit` a query may ask for. Default 1000.
    pub max_query_limit: usize,
    /// The most messages one `POST /api/v1/messages/batch` may hold. Default 1000.
    pub max_batch_messages: usize,
    /// How long an `Idempotency-Key` is remembered, in seconds. Default 86400 (a day).
    pub idempotency_ttl_secs: u64,
}

impl Default for LimitsConfig {
    fn default() -> Self {
        let limits = Limits::default();
        Self {
            max_message_size: limits.max_message_size,
            max_metadata_size: limits.max_metadata_size,
            default_query_limit: QueryLimits::default().default_limit,
            max_query_limit: QueryLimits::default().max_limit,
            max_batch_messages: kalamdb_services::insert_batch::DEFAULT_MAX_BATCH_MESSAGES,
            idempotency_ttl_secs: 86_400,
        }
    }
}

/// `[stream]`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct StreamConfig {
    /// How often an idle event stream sends a heartbeat comment, in milliseconds, so proxies
    /// keep it open and clients notice a dead connection. Default 15000.
    pub heartbeat_ms: u64,
    /// The most event streams open at once; past it a new one gets 503 `overloaded`.
    /// Default 10000.
    pub max_subscribers: usize,
}

impl Default for StreamConfig {
    fn default() -> Self {
        let limits = StreamLimits::default();
        Self {
            heartbeat_ms: limits.heartbeat.as_millis() as u64,
            max_subscribers: limits.max_subscribers,
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
    fn validate(&self) -> Result<(), InvalidSetting> {
        self.cors.validate()?;
        self.rate_limit.validate()?;
        self.concurrency.validate()?;
        self.timeout.validate()
    }
}

/// Why the configuration was refused.
#[derive(Debug)]
pub struct ConfigError {
    source_name: String,
    key: Option<String>,
    message: String,
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "invalid configuration ({})", self.source_name)?;
        match &self.key {
            Some(key) => write!(f, ": {key}: {}", self.message),
            None => write!(f, ": {}", self.message),
        }
    }
}

impl std::error::Error for ConfigError {}

impl ConfigError {
    /// The dotted key at fault (`server.port`), when one is.
    pub fn key(&self) -> Option<&str> {
        self.key.as_deref()
    }
}

/// Where the effective configuration came from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ConfigSource {
    /// A file.
    File(PathBuf),
    /// No file: the built-in defaults.
    Defaults,
}

impl fmt::Display for ConfigSource {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ConfigSource::File(path) => write!(f, "{}", path.display()),
            ConfigSource::Defaults => f.write_str("built-in defaults"),
        }
    }
}

impl Config {
    /// Loads the configuration: `path` when given (a missing file is an error), else
    /// `./config.toml` when it exists, else the built-in defaults. The result is validated.
    pub fn load(path: Option<&Path>) -> Result<(Config, ConfigSource), ConfigError> {
        let path = match path {
            Some(path) => path.to_owned(),
            None if Path::new(DEFAULT_CONFIG_PATH).exists() => PathBuf::from(DEFAULT_CONFIG_PATH),
            None => {
                let config = Config::default();
                config.validate("built-in defaults")?;
                return Ok((config, ConfigSource::Defaults));
            }
        };
        let name = path.display().to_string();
        let text = std::fs::read_to_string(&path).map_err(|e| ConfigError {
            source_name: name.clone(),
            key: None,
            message: format!("cannot read the file: {e}"),
        })?;
        let config = Config::from_toml(&text, &name)?;
        Ok((config, ConfigSource::File(path)))
    }

    /// Parses and validates TOML text; `source_name` labels errors.
    pub fn from_toml(text: &str, source_name: &str) -> Result<Config, ConfigError> {
        let error = |key: Option<String>, message: String| ConfigError {
            source_name: source_name.to_owned(),
            key,
            message,
        };
        let deserializer =
            toml::Deserializer::parse(text).map_err(|e| error(None, e.to_string()))?;
        let config: Config = serde_path_to_error::deserialize(deserializer).map_err(|e| {
            let path = e.path().to_string();
            let key = (path != ".").then_some(path);
            error(key, e.into_inner().to_string().trim_end().to_owned())
        })?;
        config.validate(source_name)?;
        Ok(config)
    }

    /// Checks every value a type alone cannot; the error names the key.
    pub fn validate(&self, source_name: &str) -> Result<(), ConfigError> {
        self.check().map_err(|(key, message)| ConfigError {
            source_name: source_name.to_owned(),
            key: Some(key.to_owned()),
            message,
        })
    }

    fn check(&self) -> Result<(), (&'static str, String)> {
        if self.server.port == 0 {
            return Err(("server.port", "must be between 1 and 65535, got 0".into()));
        }
        if self.server.node_id > MAX_NODE_ID {
            return Err((
                "server.node_id",
                format!(
                    "must be between 0 and {MAX_NODE_ID}, got {}",
                    self.server.node_id
                ),
            ));
        }
        if self.storage.rocksdb_path.as_os_str().is_empty() {
            return Err(("storage.rocksdb_path", "must not be empty".into()));
        }
        if self.storage.read_concurrency > MAX_READ_CONCURRENCY {
            return Err((
                "storage.read_concurrency",
                format!(
                    "must be between 0 (one per CPU core) and {MAX_READ_CONCURRENCY}, got {}",
                    self.storage.read_concurrency
                ),
            ));
        }
        if self.limits.max_message_size == 0 {
            return Err(("limits.max_message_size", "must be at least 1".into()));
        }
        if self.limits.max_metadata_size < 2 {
            return Err((
                "limits.max_metadata_size",
                "must be at least 2 (the size of an empty object, {})".into(),
            ));
        }
        if self.limits.idempotency_ttl_secs == 0 {
            return Err(("limits.idempotency_ttl_secs", "must be at least 1".into()));
        }
        if self.limits.max_batch_messages == 0 {
            return Err(("limits.max_batch_messages", "must be at least 1".into()));
        }
        if self.limits.max_query_limit == 0 {
            return Err(("limits.max_query_limit", "must be at least 1".into()));
        }
        if self.limits.default_query_limit == 0
            || self.limits.default_query_limit > self.limits.max_query_limit
        {
            return Err((
                "limits.default_query_limit",
                format!(
                    "must be between 1 and limits.max_query_limit ({}), got {}",
                    self.limits.max_query_limit, self.limits.default_query_limit
                ),
            ));
        }
        if !is_log_filter(&self.logging.level) {
            return Err((
                "logging.level",
                format!(
                    "{:?} is not a level (error, warn, info, debug, trace) or a filter directive",
                    self.logging.level
                ),
            ));
        }
        if self.logging.file_path.as_os_str().is_empty() {
            return Err(("logging.file_path", "must not be empty".into()));
        }
        if self.server.header_read_timeout_ms == 0 {
            return Err(("server.header_read_timeout_ms", "must be at least 1".into()));
        }
        if self.stream.heartbeat_ms == 0 {
            return Err(("stream.heartbeat_ms", "must be at least 1".into()));
        }
        if self.stream.max_subscribers == 0 {
            return Err(("stream.max_subscribers", "must be at least 1".into()));
        }
        if self.server.max_connections == 0 {
            return Err(("server.max_connections", "must be at least 1".into()));
        }
        if let Err(invalid) = self.middleware.validate() {
            return Err((invalid.key, invalid.message));
        }
        let needed = self.min_body_bytes();
        if self.middleware.body_limit.max_bytes < needed {
            return Err((
                "middleware.body_limit.max_bytes",
                format!(
                    "is {} but must be at least {needed} so that a message of \
                     limits.max_message_size ({}) with metadata of limits.max_metadata_size ({}) \
                     always fits, even with every character escaped",
                    self.middleware.body_limit.max_bytes,
                    self.limits.max_message_size,
                    self.limits.max_metadata_size
                ),
            ));
        }
        Ok(())
    }

    /// The smallest body limit that admits any valid message: every byte of content and
    /// metadata may arrive as a six-byte `\uXXXX` escape, plus room for the names and the keys.
    fn min_body_bytes(&self) -> u64 {
        let escaped = self
            .limits
            .max_message_size
            .saturating_add(self.limits.max_metadata_size)
            .saturating_mul(6);
        u64::try_from(escaped)
            .unwrap_or(u64::MAX)
            .saturating_add(4096)
    }

    /// The limits new messages are held to.
    pub fn message_limits(&self) -> Limits {
        Limits {
            max_message_size: self.limits.max_message_size,
            max_metadata_size: self.limits.max_metadata_size,
        }
    }

    /// The page sizes queries are held to.
    pub fn query_limits(&self) -> QueryLimits {
        QueryLimits {
            default_limit: self.limits.default_query_limit,
            max_limit: self.limits.max_query_limit,
        }
    }

    /// How event streams behave.
    pub fn stream_limits(&self) -> StreamLimits {
        StreamLimits {
            heartbeat: Duration::from_millis(self.stream.heartbeat_ms),
            max_subscribers: self.stream.max_subscribers,
        }
    }

    /// How many store reads may run at once (`storage.read_concurrency`, 0 = one per core).
    pub fn read_limit(&self) -> NonZeroUsize {
        NonZeroUsize::new(self.storage.read_concurrency)
            .unwrap_or_else(StoreHandle::default_read_limit)
    }

    /// The options the RocksDB store is opened with.
    pub fn store_options(&self) -> StoreOptions {
        StoreOptions {
            path: self.storage.rocksdb_path.clone(),
            node_id: self.server.node_id,
            sync_writes: self.storage.sync_writes,
            compression: match self.storage.compression {
                CompressionSetting::None => Compression::None,
                CompressionSetting::Lz4 => Compression::Lz4,
                CompressionSetting::Zstd => Compression::Zstd,
            },
            idempotency_ttl: Duration::from_secs(self.limits.idempotency_ttl_secs),
        }
    }

    /// The effective configuration as TOML, as `--check-config` prints it.
    pub fn to_toml(&self) -> String {
        toml::to_string_pretty(self).unwrap_or_else(|e| format!("# cannot render: {e}\n"))
    }
}

/// Whether `filter` is a level or a list of `target=level` directives. A bare word must be a
/// level: `EnvFilter` would read `"loud"` as a target name and silently log nothing useful.
fn is_log_filter(filter: &str) -> bool {
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

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(text: &str) -> Result<Config, ConfigError> {
        Config::from_toml(text, "test.toml")
    }

    fn error_for(text: &str) -> (Option<String>, String) {
        let e = parse(text).expect_err("should be refused");
        (e.key().map(str::to_owned), e.to_string())
    }

    #[test]
    fn read_concurrency_zero_means_one_per_core() {
        assert_eq!(
            Config::default().read_limit(),
            StoreHandle::default_read_limit()
        );
        let config = parse("[storage]\nread_concurrency = 3").unwrap();
        assert_eq!(config.read_limit().get(), 3);
    }

    #[test]
    fn an_empty_file_is_the_defaults() {
        assert_eq!(parse("").unwrap(), Config::default());
        let config = Config::default();
        assert_eq!(config.server.listen_addr().to_string(), "127.0.0.1:8080");
        assert_eq!(config.storage.rocksdb_path, Path::new("data/rocksdb"));
        assert!(config.storage.sync_writes);
        assert_eq!(config.limits.max_message_size, 1_048_576);
        assert_eq!(config.limits.default_query_limit, 50);
        assert_eq!(config.limits.max_query_limit, 1000);
        assert_eq!(config.logging.file_path, Path::new("logs/app.log"));
        assert_eq!(config.middleware.body_limit.max_bytes, 8 * 1024 * 1024);
    }

    #[test]
    fn the_example_file_parses_and_shows_the_defaults() {
        let text = include_str!("../../../config.example.toml");
        let mut example = parse(text).unwrap();
        // The one departure, on purpose: the example shows the rate limit switched on.
        assert!(example.middleware.rate_limit.enabled);
        assert!(!Config::default().middleware.rate_limit.enabled);
        example.middleware.rate_limit.enabled = false;
        assert_eq!(example, Config::default());
    }

    #[test]
    fn the_example_file_shows_every_key() {
        fn keys(prefix: &str, table: &toml::Table, out: &mut Vec<String>) {
            for (key, value) in table {
                let path = format!("{prefix}{key}");
                match value {
                    toml::Value::Table(inner) => keys(&format!("{path}."), inner, out),
                    _ => out.push(path),
                }
            }
        }
        let example: toml::Table = include_str!("../../../config.example.toml")
            .parse()
            .unwrap();
        let defaults: toml::Table = Config::default().to_toml().parse().unwrap();
        let (mut shown, mut all) = (Vec::new(), Vec::new());
        keys("", &example, &mut shown);
        keys("", &defaults, &mut all);
        shown.sort();
        all.sort();
        assert_eq!(shown, all);
    }

    #[test]
    fn the_effective_config_round_trips_through_toml() {
        let mut config = Config::default();
        config.server.port = 9000;
        config.storage.compression = CompressionSetting::Zstd;
        config.logging.format = LogFormat::Json;
        assert_eq!(parse(&config.to_toml()).unwrap(), config);
    }

    #[test]
    fn unknown_keys_are_named() {
        let (key, message) = error_for("[server]\nprot = 80\n");
        assert!(message.contains("prot"), "{message}");
        assert!(key.unwrap().starts_with("server"));

        let (_, message) = error_for("[middleware.timeout]\nrequest_timeout = 5\n");
        assert!(message.contains("request_timeout"), "{message}");

        let (_, message) = error_for("[srever]\n");
        assert!(message.contains("srever"), "{message}");
    }

    #[test]
    fn wrong_types_are_named_with_the_line() {
        let (key, message) = error_for("[server]\nhost = \"127.0.0.1\"\nport = \"eighty\"\n");
        assert_eq!(key.as_deref(), Some("server.port"));
        assert!(message.contains("line 3"), "{message}");

        let (key, _) = error_for("[server]\nport = 70000\n");
        assert_eq!(key.as_deref(), Some("server.port"));

        let (key, _) = error_for("[storage]\ncompression = \"snappy\"\n");
        assert_eq!(key.as_deref(), Some("storage.compression"));

        let (key, _) = error_for("[server]\nhost = \"localhost\"\n");
        assert_eq!(key.as_deref(), Some("server.host"));
    }

    #[test]
    fn bad_values_are_named() {
        for (text, expected) in [
            ("[server]\nport = 0", "server.port"),
            ("[server]\nnode_id = 1024", "server.node_id"),
            ("[storage]\nrocksdb_path = \"\"", "storage.rocksdb_path"),
            (
                "[storage]\nread_concurrency = 513",
                "storage.read_concurrency",
            ),
            ("[limits]\nmax_message_size = 0", "limits.max_message_size"),
            ("[limits]\nmax_query_limit = 0", "limits.max_query_limit"),
            (
                "[limits]\nmax_batch_messages = 0",
                "limits.max_batch_messages",
            ),
            (
                "[limits]\ndefault_query_limit = 0",
                "limits.default_query_limit",
            ),
            (
                "[limits]\ndefault_query_limit = 100\nmax_query_limit = 99",
                "limits.default_query_limit",
            ),
            ("[logging]\nlevel = \"loud\"", "logging.level"),
            ("[logging]\nformat = \"xml\"", "logging.format"),
            (
                "[middleware.timeout]\nrequest_timeout_ms = 0",
                "middleware.timeout.request_timeout_ms",
            ),
            (
                "[middleware.body_limit]\nmax_bytes = 1024",
                "middleware.body_limit.max_bytes",
            ),
            (
                "[server]\nheader_read_timeout_ms = 0",
                "server.header_read_timeout_ms",
            ),
            ("[server]\nmax_connections = 0", "server.max_connections"),
            ("[stream]\nheartbeat_ms = 0", "stream.heartbeat_ms"),
            ("[stream]\nmax_subscribers = 0", "stream.max_subscribers"),
            ("[stream]\nheartbeat = 5", "stream.heartbeat"),
            ("[server]\nkeep_alive = \"yes\"", "server.keep_alive"),
            (
                "[middleware.rate_limit]\nburst = 0",
                "middleware.rate_limit.burst",
            ),
            (
                "[middleware.rate_limit]\nrequests_per_second = 0",
                "middleware.rate_limit.requests_per_second",
            ),
            (
                "[middleware.rate_limit]\nkey = \"user\"",
                "middleware.rate_limit.key",
            ),
            (
                "[middleware.concurrency]\nmax_in_flight = 0",
                "middleware.concurrency.max_in_flight",
            ),
            (
                "[middleware.cors]\nallowed_origins = [\"chat.example\"]",
                "middleware.cors.allowed_origins",
            ),
            (
                "[middleware.request_log]\nslow_request_ms = -1",
                "middleware.request_log.slow_request_ms",
            ),
            (
                "[middleware.timing]\nenabled = 1",
                "middleware.timing.enabled",
            ),
            (
                "[middleware.request_id]\ntrust = true",
                "middleware.request_id.trust",
            ),
        ] {
            let (key, message) = error_for(text);
            assert_eq!(key.as_deref(), Some(expected), "{text}: {message}");
            assert!(message.contains(expected), "{message}");
        }
        assert!(parse("[server]\nnode_id = 1023").is_ok());
    }

    #[test]
    fn log_filters_are_levels_or_directives() {
        for good in [
            "info",
            "WARN",
            "info,kalamdb_rocksdb=debug",
            "hyper=off,trace",
        ] {
            assert!(is_log_filter(good), "{good}");
        }
        for bad in ["", "loud", "info,", "kalamdb=verbose", "=debug"] {
            assert!(!is_log_filter(bad), "{bad}");
        }
    }

    #[test]
    fn malformed_toml_reports_the_line() {
        let (_, message) = error_for("[server]\nport = 80\nhost = \n");
        assert!(message.contains("line 3"), "{message}");
    }

    #[test]
    fn the_body_limit_must_admit_a_fully_escaped_maximum_message() {
        // A 1 KiB message needs 6 × (1024 + 64) + 4096 bytes of body.
        let ok = "[limits]\nmax_message_size = 1024\nmax_metadata_size = 64\n\
                  [middleware.body_limit]\nmax_bytes = 10624\n";
        assert!(parse(ok).is_ok());
        let too_small = ok.replace("10624", "10623");
        assert_eq!(
            error_for(&too_small).0.as_deref(),
            Some("middleware.body_limit.max_bytes")
        );
        // Raising the message size alone, past what the default body limit admits, is refused.
        let (key, _) = error_for("[limits]\nmax_message_size = 2000000\n");
        assert_eq!(key.as_deref(), Some("middleware.body_limit.max_bytes"));
    }

    #[test]
    fn a_missing_file_is_an_error() {
        let e = Config::load(Some(Path::new("/nonexistent/kalamdb.toml"))).unwrap_err();
        assert!(e.to_string().contains("/nonexistent/kalamdb.toml"));
    }
}

//! The server's configuration: `config.toml`, its defaults, and its validation.
//!
//! Every key has a default, so the server runs with no file at all. Unknown keys, wrong types and
//! bad values stop start-up with a message naming the key (`server.port: ...`); malformed TOML
//! reports the line. `config.example.toml` documents every key.
//!
//! # Layout
//!
//! - `mod.rs` (this file): [`Config`], and what the rest of the server takes from it.
//! - `schema.rs`: each section's keys, types and defaults, and its own checks; zero is
//!   unrepresentable where it is invalid (`NonZero*`).
//! - `load.rs`: the file or the defaults, TOML, and [`ConfigError`], which names the key.
//! - `check.rs`: the rules that span sections (the body limit against the message limits).

use std::num::NonZeroUsize;
use std::time::Duration;

use kalamdb_core::{Limits, StoreHandle};
use kalamdb_rocksdb::{Compression, StoreOptions};
use kalamdb_services::{QueryLimits, StreamLimits};
use serde::{Deserialize, Serialize};

mod check;
mod load;
mod schema;

pub use load::{ConfigError, ConfigSource, DEFAULT_CONFIG_PATH};
pub use schema::{
    nats_address, BackendSetting, BusSetting, CompressionSetting, LimitsConfig, LiveConfig,
    LogFormat, LogRotation, LoggingConfig, MiddlewareConfig, PostgresConfig, RetentionConfig,
    ServerConfig, StorageConfig, StreamConfig,
};

/// The whole configuration.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Config {
    /// `[server]`: the listener and the process.
    pub server: ServerConfig,
    /// `[storage]`: the RocksDB store.
    pub storage: StorageConfig,
    /// `[retention]`: how long messages are kept.
    pub retention: RetentionConfig,
    /// `[limits]`: sizes a message is held to.
    pub limits: LimitsConfig,
    /// `[stream]`: live event streams.
    pub stream: StreamConfig,
    /// `[live]`: how streams hear of other servers' messages.
    pub live: LiveConfig,
    /// `[logging]`: console and file logs.
    pub logging: LoggingConfig,
    /// `[middleware.*]`: one section per layer.
    pub middleware: MiddlewareConfig,
    /// `[auth]`: API keys, user tokens, and protected mode.
    pub auth: kalamdb_middleware::auth::Config,
}

impl Config {
    /// The limits new messages are held to.
    pub fn message_limits(&self) -> Limits {
        Limits {
            max_message_size: self.limits.max_message_size.get(),
            max_metadata_size: self.limits.max_metadata_size,
        }
    }

    /// The page sizes queries are held to.
    pub fn query_limits(&self) -> QueryLimits {
        QueryLimits {
            default_limit: self.limits.default_query_limit.get(),
            max_limit: self.limits.max_query_limit.get(),
        }
    }

    /// How event streams behave.
    pub fn stream_limits(&self) -> StreamLimits {
        StreamLimits {
            heartbeat: Duration::from_millis(self.stream.heartbeat_ms.get()),
            max_subscribers: self.stream.max_subscribers.get(),
            resync: (self.live.bus != BusSetting::Local)
                .then(|| Duration::from_millis(self.live.resync_ms.get())),
        }
    }

    /// The options the PostgreSQL store is opened with (`storage.backend = "postgres"`), the
    /// password read from `storage.postgres.password_file` when set; an unreadable file is
    /// named.
    pub fn postgres_options(&self) -> Result<kalamdb_postgres::PgOptions, String> {
        let postgres = &self.storage.postgres;
        let password = match &postgres.password_file {
            Some(path) => {
                let text = std::fs::read_to_string(path).map_err(|e| {
                    format!(
                        "storage.postgres.password_file: cannot read {}: {e}",
                        path.display()
                    )
                })?;
                Some(text.lines().next().unwrap_or_default().to_owned())
            }
            None => None,
        };
        Ok(kalamdb_postgres::PgOptions {
            url: postgres.url.clone(),
            password,
            pool_size: postgres.pool_size.get(),
            schema: postgres.schema.clone(),
            idempotency_ttl: Duration::from_secs(self.limits.idempotency_ttl_secs.get()),
            lease_ttl: Duration::from_secs(postgres.lease_secs.get()),
        })
    }

    /// How many store reads may run at once (`storage.read_concurrency`; 0 = one per core,
    /// or with the PostgreSQL store one per pooled connection, since its reads wait on the
    /// network rather than the CPU).
    pub fn read_limit(&self) -> NonZeroUsize {
        NonZeroUsize::new(self.storage.read_concurrency).unwrap_or_else(|| {
            match self.storage.backend {
                BackendSetting::Rocksdb => StoreHandle::default_read_limit(),
                BackendSetting::Postgres => self.storage.postgres.pool_size,
            }
        })
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
            idempotency_ttl: Duration::from_secs(self.limits.idempotency_ttl_secs.get()),
            erase_within: Duration::from_secs(self.storage.erase_within_secs.get()),
            retention: self.retention.max_age(),
            // Validated to at most 64 GiB.
            recent_cache_bytes: usize::try_from(self.storage.recent_cache_mb << 20)
                .unwrap_or(usize::MAX),
            // The default page, another before it, and one more that says there is more: a
            // client scrolling back one page, or a poller a page behind, still reads memory.
            recent_per_conversation: 2 * self.limits.default_query_limit.get() + 1,
            // Validated to at most 64 GiB.
            max_wal_bytes: self.storage.max_wal_mb << 20,
        }
    }

    /// The effective configuration as TOML, as `--check-config` prints it: a password in
    /// `storage.postgres.url` is printed as `***`.
    pub fn to_toml(&self) -> String {
        let mut shown = self.clone();
        shown.storage.postgres.url = redact_password(&self.storage.postgres.url);
        toml::to_string_pretty(&shown).unwrap_or_else(|e| format!("# cannot render: {e}\n"))
    }
}

/// `url` with its password replaced by `***`: `scheme://user:***@host...` or `password=***`.
fn redact_password(url: &str) -> String {
    if let Some((scheme, rest)) = url.split_once("://") {
        // The userinfo ends at the last '@' before the path.
        let authority_end = rest.find('/').unwrap_or(rest.len());
        if let Some(at) = rest[..authority_end].rfind('@') {
            if let Some(colon) = rest[..at].find(':') {
                return format!("{scheme}://{}:***{}", &rest[..colon], &rest[at..]);
            }
        }
        return url.to_owned();
    }
    url.split(' ')
        .map(|pair| match pair.split_once('=') {
            Some((key, _)) if key.trim() == "password" => format!("{key}=***"),
            _ => pair.to_owned(),
        })
        .collect::<Vec<_>>()
        .join(" ")
}

#[cfg(test)]
mod tests {
    use super::schema::is_log_filter;
    use super::*;
    use std::path::Path;

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
        assert_eq!(config.limits.max_message_size.get(), 1_048_576);
        assert_eq!(config.limits.default_query_limit.get(), 50);
        assert_eq!(config.limits.max_query_limit.get(), 1000);
        assert_eq!(config.logging.file_path, Path::new("logs/app.log"));
        assert_eq!(config.middleware.body_limit.max_bytes, 8 * 1024 * 1024);
    }

    #[test]
    fn the_example_file_parses_and_shows_the_defaults() {
        let text = include_str!("../../../../config.example.toml");
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
        let example: toml::Table = include_str!("../../../../config.example.toml")
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
        config.server.port = std::num::NonZeroU16::new(9000).unwrap();
        config.storage.compression = CompressionSetting::Zstd;
        config.logging.format = LogFormat::Json;
        assert_eq!(parse(&config.to_toml()).unwrap(), config);
    }

    #[test]
    fn the_postgres_backend_and_its_bus_are_checked_and_applied() {
        let config = parse(
            "[storage]\nbackend = \"postgres\"\n[storage.postgres]\nurl = \"postgres://u@db:5433/k\"\n\
             pool_size = 4\nschema = \"chat\"\nlease_secs = 30\n[live]\nbus = \"nats\"\n\
             nats_url = \"nats://bus:4222\"\nchannel = \"chat.live\"\nresync_ms = 250\n",
        )
        .unwrap();
        let options = config.postgres_options().unwrap();
        assert_eq!(
            (
                options.url.as_str(),
                options.pool_size,
                options.schema.as_str()
            ),
            ("postgres://u@db:5433/k", 4, "chat")
        );
        assert_eq!(options.lease_ttl, Duration::from_secs(30));
        assert_eq!(
            config.read_limit().get(),
            4,
            "one read per pooled connection"
        );
        assert_eq!(
            config.stream_limits().resync,
            Some(Duration::from_millis(250))
        );
        assert_eq!(
            nats_address(&config.live.nats_url).as_deref(),
            Some("bus:4222")
        );
        // One server: no resync.
        assert_eq!(Config::default().stream_limits().resync, None);
        for (text, key) in [
            ("[live]\nbus = \"nats\"\n", "live.bus"),
            (
                "[storage]\nbackend = \"postgres\"\n[storage.postgres]\nschema = \"Bad-Name\"\n",
                "storage.postgres.schema",
            ),
            (
                "[storage]\nbackend = \"postgres\"\n[storage.postgres]\nlease_secs = 1\n",
                "storage.postgres.lease_secs",
            ),
            (
                "[storage]\nbackend = \"postgres\"\n[storage.postgres]\nurl = \" \"\n",
                "storage.postgres.url",
            ),
            (
                "[storage]\nbackend = \"postgres\"\n[storage.postgres]\npool_size = 5000\n",
                "storage.postgres.pool_size",
            ),
            (
                "[storage]\nbackend = \"postgres\"\n[retention]\nmax_age_secs = 60\n",
                "retention.max_age_secs",
            ),
            (
                "[storage]\nbackend = \"postgres\"\n[live]\nbus = \"nats\"\nnats_url = \"http://x\"\n",
                "live.nats_url",
            ),
            (
                "[storage]\nbackend = \"postgres\"\n[live]\nbus = \"postgres\"\nchannel = \"a.b\"\n",
                "live.channel",
            ),
            ("[live]\nresync_ms = 5\n", "live.resync_ms"),
        ] {
            let (found, message) = error_for(text);
            assert_eq!(found.as_deref(), Some(key), "{text}: {message}");
        }
        let (found, _) = error_for("[storage]\nbackend = \"sqlite\"\n");
        assert_eq!(found.as_deref(), Some("storage.backend"));
    }

    #[test]
    fn the_database_password_comes_from_its_file_and_is_never_printed() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("pg-password");
        std::fs::write(&file, "from-the-file\n").unwrap();
        let text = format!(
            "[storage]\nbackend = \"postgres\"\n[storage.postgres]\n\
             url = \"postgres://kalamdb:in-the-url@db:5432/k\"\npassword_file = \"{}\"\n",
            file.display()
        );
        let config = parse(&text).unwrap();
        let options = config.postgres_options().unwrap();
        assert_eq!(options.password.as_deref(), Some("from-the-file"));
        let printed = config.to_toml();
        assert!(!printed.contains("in-the-url"), "{printed}");
        assert!(
            printed.contains("postgres://kalamdb:***@db:5432/k"),
            "{printed}"
        );
        assert_eq!(
            redact_password("host=db user=k password=s3cret dbname=k"),
            "host=db user=k password=*** dbname=k"
        );
        assert_eq!(redact_password("postgres://k@db/k"), "postgres://k@db/k");
        std::fs::remove_file(&file).unwrap();
        let err = config.postgres_options().unwrap_err();
        assert!(err.starts_with("storage.postgres.password_file"), "{err}");
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
    fn erasure_and_retention_reach_the_store() {
        let defaults = Config::default().store_options();
        assert_eq!(defaults.erase_within, Duration::from_secs(60));
        assert_eq!(defaults.retention, None);
        let config =
            parse("[storage]\nerase_within_secs = 5\n[retention]\nmax_age_secs = 3600\n").unwrap();
        let options = config.store_options();
        assert_eq!(options.erase_within, Duration::from_secs(5));
        assert_eq!(options.retention, Some(Duration::from_secs(3600)));
    }

    #[test]
    fn the_recent_cache_is_sized_from_its_key_and_the_default_page() {
        let defaults = Config::default().store_options();
        assert_eq!(defaults.recent_cache_bytes, 32 << 20);
        assert_eq!(defaults.recent_per_conversation, 101);
        let config =
            parse("[storage]\nrecent_cache_mb = 0\n[limits]\ndefault_query_limit = 20\n").unwrap();
        let options = config.store_options();
        assert_eq!(options.recent_cache_bytes, 0);
        assert_eq!(options.recent_per_conversation, 41);
    }

    #[test]
    fn the_wal_bound_is_applied_in_bytes() {
        assert_eq!(Config::default().store_options().max_wal_bytes, 512 << 20);
        let config = parse("[storage]\nmax_wal_mb = 64\n").unwrap();
        assert_eq!(config.store_options().max_wal_bytes, 64 << 20);
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
            (
                "[storage]\nerase_within_secs = 0",
                "storage.erase_within_secs",
            ),
            (
                "[storage]\nrecent_cache_mb = 65537",
                "storage.recent_cache_mb",
            ),
            ("[storage]\nrecent_cache_mb = -1", "storage.recent_cache_mb"),
            ("[storage]\nmax_wal_mb = 15", "storage.max_wal_mb"),
            ("[storage]\nmax_wal_mb = 65537", "storage.max_wal_mb"),
            ("[storage]\nmax_wal_mb = -1", "storage.max_wal_mb"),
            (
                "[storage]\nerase_within_secs = 86401",
                "storage.erase_within_secs",
            ),
            ("[retention]\nmax_age_secs = -1", "retention.max_age_secs"),
            ("[retention]\nmax_age = 60", "retention.max_age"),
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
            ("[auth]\nenabled = true", "auth.enabled"),
            ("[server]\nhost = \"0.0.0.0\"", "auth.enabled"),
            ("[auth.jwt]\nalgorithm = \"HS512\"", "auth.jwt.algorithm"),
            (
                "[auth.jwt]\nalgorithm = \"RS256\"",
                "auth.jwt.public_key_file",
            ),
            ("[auth]\npublic_metrics = \"yes\"", "auth.public_metrics"),
            (
                "[[auth.api_keys]]\nname = \"k\"\nrole = \"service\"",
                "auth.api_keys[0]",
            ),
            (
                "[[auth.api_keys]]\nname = \"k\"\nsha256 = \"x\"\nrole = \"root\"",
                "auth.api_keys[0].role",
            ),
            (
                "[[auth.api_keys]]\nname = \"k\"\nsha256 = \"x\"\nrole = \"admin\"",
                "auth.api_keys.sha256",
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

//! The rules that span sections; each section checks its own keys (`schema.rs`).

use kalamdb_middleware::InvalidSetting;

use super::{BackendSetting, BusSetting, Config};

impl Config {
    /// Every section's own checks, then the rules between sections.
    pub(super) fn check(&self) -> Result<(), InvalidSetting> {
        self.server.validate()?;
        self.storage.validate()?;
        self.limits.validate()?;
        self.logging.validate()?;
        self.middleware.validate()?;
        self.auth.validate()?;
        self.live.validate()?;
        self.check_body_limit()?;
        self.check_backend()?;
        self.check_protected_mode()
    }

    /// What only one backend does: a bus between servers needs a store they share, and the
    /// PostgreSQL store has no retention yet.
    fn check_backend(&self) -> Result<(), InvalidSetting> {
        let postgres = self.storage.backend == BackendSetting::Postgres;
        if self.live.bus != BusSetting::Local && !postgres {
            return Err(InvalidSetting::new(
                "live.bus",
                "needs storage.backend = \"postgres\": a RocksDB store belongs to one server, which has no other servers to hear from",
            ));
        }
        if postgres && self.retention.max_age_secs > 0 {
            return Err(InvalidSetting::new(
                "retention.max_age_secs",
                "is not supported with storage.backend = \"postgres\" yet; delete old messages with DELETE .../messages?before_msg_id=",
            ));
        }
        Ok(())
    }

    /// Protected mode: without auth, only loopback clients may reach the server, unless the
    /// operator says the network in front of it is trusted.
    fn check_protected_mode(&self) -> Result<(), InvalidSetting> {
        let host = self.server.host;
        if self.auth.enabled || self.auth.allow_unauthenticated || host.is_loopback() {
            return Ok(());
        }
        Err(InvalidSetting::new(
            "auth.enabled",
            format!(
                "is false, and server.host = \"{host}\" is not a loopback address: anyone who \
                 reaches the port could read and write every conversation. Turn auth on \
                 ([auth] enabled = true, with [[auth.api_keys]] or [auth.jwt]; see \
                 config.example.toml), listen on 127.0.0.1, or, only behind a network you \
                 trust, set auth.allow_unauthenticated = true"
            ),
        ))
    }

    /// The body limit admits a message of the largest size, however it is escaped.
    fn check_body_limit(&self) -> Result<(), InvalidSetting> {
        let needed = self.min_body_bytes();
        if self.middleware.body_limit.max_bytes < needed {
            return Err(InvalidSetting::new(
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
            .get()
            .saturating_add(self.limits.max_metadata_size)
            .saturating_mul(6);
        u64::try_from(escaped)
            .unwrap_or(u64::MAX)
            .saturating_add(4096)
    }
}

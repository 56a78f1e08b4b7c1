//! `--auth`: the real server with `[auth]` on, and every request of the load (to the no-op
//! server too, so both read the same bytes) carrying a service key or a user's token.

use std::io::Read;
use std::path::Path;

use sha2::{Digest, Sha256};

/// Which credentials the load sends.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub(crate) enum AuthMode {
    /// An API key with the `service` role: one SHA-256 per request.
    Service,
    /// An HS256 user token for [`BENCH_USER`]: a signature check per request, and a membership
    /// check of each conversation it reads or writes.
    User,
}

/// The user the load's messages are from (`from` in every body) and, with `--auth user`, whose
/// token it sends: a member of every conversation the load uses.
pub(crate) const BENCH_USER: &str = "bench";

/// The credentials of one benchmark run: a fresh key and HS256 secret, the secret in a temp
/// file the server reads, and the token the load sends.
pub(crate) struct Credentials {
    mode: AuthMode,
    key: String,
    token: String,
    /// Holds the secret file for as long as servers may start.
    dir: tempfile::TempDir,
}

impl Credentials {
    /// Fresh credentials for `mode`.
    pub(crate) fn new(mode: AuthMode) -> Result<Self, String> {
        let dir = tempfile::tempdir().map_err(|e| e.to_string())?;
        let key = format!("bench-{}", hex(&random::<16>()?));
        let secret = hex(&random::<32>()?);
        std::fs::write(secret_path(dir.path()), &secret).map_err(|e| e.to_string())?;
        let claims = serde_json::json!({
            "sub": BENCH_USER,
            "exp": jsonwebtoken::get_current_timestamp() + 7 * 24 * 3600,
        });
        let signing =
            jsonwebtoken::EncodingKey::from_secret(secret.as_bytes()).map_err(|e| e.to_string())?;
        let jwt = jsonwebtoken::encode(&jsonwebtoken::Header::default(), &claims, &signing)
            .map_err(|e| e.to_string())?;
        let token = match mode {
            AuthMode::Service => key.clone(),
            AuthMode::User => jwt,
        };
        Ok(Self {
            mode,
            key,
            token,
            dir,
        })
    }

    /// The mode these credentials are for.
    pub(crate) fn mode(&self) -> AuthMode {
        self.mode
    }

    /// The `Authorization` header's value.
    pub(crate) fn header(&self) -> String {
        format!("Bearer {}", self.token)
    }

    /// The user who must be a member of every conversation the load uses, in user mode.
    pub(crate) fn member(&self) -> Option<&'static str> {
        (self.mode == AuthMode::User).then_some(BENCH_USER)
    }

    /// Sets `[auth]` in a server's configuration: on, with the key and the token's secret.
    pub(crate) fn apply(&self, config: &mut toml::Table) {
        let mut key = toml::Table::new();
        key.insert("name".into(), "bench".into());
        let hash = format!("{:x}", Sha256::digest(self.key.as_bytes()));
        key.insert("sha256".into(), hash.into());
        key.insert("role".into(), "service".into());
        let mut jwt = toml::Table::new();
        let secret = secret_path(self.dir.path()).display().to_string();
        jwt.insert("secret_file".into(), secret.into());
        let mut auth = toml::Table::new();
        auth.insert("enabled".into(), true.into());
        auth.insert("api_keys".into(), toml::Value::Array(vec![key.into()]));
        auth.insert("jwt".into(), jwt.into());
        config.insert("auth".into(), auth.into());
    }
}

fn secret_path(dir: &Path) -> std::path::PathBuf {
    dir.join("jwt.secret")
}

fn random<const N: usize>() -> Result<[u8; N], String> {
    let mut bytes = [0; N];
    std::fs::File::open("/dev/urandom")
        .and_then(|mut f| f.read_exact(&mut bytes))
        .map_err(|e| format!("cannot read /dev/urandom: {e}"))?;
    Ok(bytes)
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

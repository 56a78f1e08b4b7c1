//! Auth: turns a request's credentials into a [`kalamdb_http::Principal`] in its extensions, or refuses it
//! with 401 `unauthorized` (403 `forbidden` for `/metrics` without an admin key). Configured
//! from `[auth]`; the rules are `../shared/DESIGN.md` §6.3.
//!
//! Credentials are `Authorization: Bearer <token>`. A token with two dots is a JWT, a user
//! token: its signature (HS256 with a secret file, RS256 or ES256 with a public key file), `exp`
//! (required), `nbf`, and `iss`/`aud` when configured are checked, with `leeway_secs` of clock
//! skew, and the user id is its `user_claim` claim. A token that passed is remembered (up to
//! 16,384 of them) until its `exp`, so an app's next requests with it cost a map lookup, not a
//! signature check. Anything else is an API key, found by its
//! SHA-256 among `[[auth.api_keys]]` with a constant-time comparison; its role is `service` or
//! `admin`. The stream endpoint also takes `?access_token=`, since a browser's `EventSource`
//! cannot set headers; no other path reads it.
//!
//! `/health` is always open and `/metrics` needs an admin key unless `public_metrics`. Every
//! other request without valid credentials is refused here and never reaches an endpoint; it
//! costs at most one signature check (or one SHA-256). The endpoints apply the access rules
//! from the principal (`kalamdb-services`' `access`). The principal also goes into the
//! response's extensions, so the request log names it (`key:<name>` or `user:<id>`). A token
//! or key is never written to a log line, a metric label or an error message: each refusal
//! says what is wrong in words of its own.
//!
//! Place it inside the rescue layer, which renders its refusals, and outside the rate limit,
//! which may key on the principal.
//!
//! ```
//! use http::{Request, Response};
//! use kalamdb_http::{full, BoxError, Principal};
//! use kalamdb_middleware::{auth, rescue::RescueLayer};
//! use sha2::{Digest, Sha256};
//! use tower::{ServiceBuilder, ServiceExt};
//!
//! # tokio::runtime::Runtime::new().unwrap().block_on(async {
//! let config = auth::Config {
//!     enabled: true,
//!     api_keys: vec![auth::ApiKey {
//!         name: "backend".into(),
//!         sha256: format!("{:x}", Sha256::digest(b"s3cret-key")),
//!         role: auth::Role::Service,
//!     }],
//!     ..auth::Config::default()
//! };
//! let layer = config.layer(|_| false).unwrap().unwrap();
//! let service = ServiceBuilder::new()
//!     .layer(RescueLayer::new())
//!     .layer(layer)
//!     .service_fn(|request: Request<()>| async move {
//!         let who = request.extensions().get::<Principal>().unwrap().to_string();
//!         Ok::<_, BoxError>(Response::new(full(who)))
//!     });
//! let anonymous = service.clone().oneshot(Request::get("/api/v1/query").body(()).unwrap());
//! assert_eq!(anonymous.await.unwrap().status(), 401);
//! let request = Request::get("/api/v1/query")
//!     .header("authorization", "Bearer s3cret-key")
//!     .body(())
//!     .unwrap();
//! assert_eq!(service.oneshot(request).await.unwrap().status(), 200);
//! # });
//! ```

mod future;
mod layer;
mod service;
mod verifier;

pub use future::ResponseFuture;
pub use layer::AuthLayer;
pub use service::Auth;
pub use verifier::Verifier;

use std::path::PathBuf;

use serde::{Deserialize, Serialize};

use crate::InvalidSetting;

/// Requests refused for their credentials (401) or their role (403), by reason.
pub const REFUSED_TOTAL: &str = "kalamdb_auth_refused_total";

/// `[auth]`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Config {
    /// Require credentials on every request but `/health`. Default false.
    pub enabled: bool,
    /// With auth off, start anyway on a `server.host` other than loopback. Default false: the
    /// server refuses to (protected mode).
    pub allow_unauthenticated: bool,
    /// Serve `/metrics` without credentials. Default false: an admin key.
    pub public_metrics: bool,
    /// The API keys, by name and SHA-256. Default none.
    pub api_keys: Vec<ApiKey>,
    /// User tokens; absent, none are accepted.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub jwt: Option<JwtConfig>,
}

/// One `[[auth.api_keys]]`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ApiKey {
    /// What logs call the key's principal (`key:<name>`): 1-64 visible ASCII characters.
    pub name: String,
    /// The lower-case hex SHA-256 of the key (`printf %s "$KEY" | sha256sum`).
    pub sha256: String,
    /// What the key may do.
    pub role: Role,
}

/// `auth.api_keys[].role`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Role {
    /// Every conversation, any `from`, members managed.
    Service,
    /// What a service key may, and `/metrics` and operator endpoints.
    Admin,
}

/// `[auth.jwt]`: how user tokens are checked.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct JwtConfig {
    /// The one signature algorithm accepted. Default HS256.
    pub algorithm: JwtAlgorithm,
    /// HS256: the file holding the secret, its exact bytes (at least 32).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub secret_file: Option<PathBuf>,
    /// RS256, ES256: the file holding the public key, PEM.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub public_key_file: Option<PathBuf>,
    /// The `iss` a token must carry; empty, not checked. Default empty.
    pub issuer: String,
    /// The `aud` a token must carry; empty, not checked. Default empty.
    pub audience: String,
    /// The claim that holds the user id. Default `sub`.
    pub user_claim: String,
    /// Clock skew allowed on `exp` and `nbf`, in seconds, at most 300. Default 30.
    pub leeway_secs: u64,
}

impl Default for JwtConfig {
    fn default() -> Self {
        Self {
            algorithm: JwtAlgorithm::HS256,
            secret_file: None,
            public_key_file: None,
            issuer: String::new(),
            audience: String::new(),
            user_claim: "sub".into(),
            leeway_secs: 30,
        }
    }
}

/// `auth.jwt.algorithm`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[allow(clippy::upper_case_acronyms)]
pub enum JwtAlgorithm {
    /// HMAC with SHA-256, a shared secret.
    HS256,
    /// RSA PKCS#1 v1.5 with SHA-256, a public key.
    RS256,
    /// ECDSA on P-256 with SHA-256, a public key.
    ES256,
}

/// The most `auth.jwt.leeway_secs` may be: more would keep expired tokens alive.
pub const MAX_LEEWAY_SECS: u64 = 300;

impl Config {
    /// Checks the settings; with auth on, reads the key files too. The error names the key.
    pub fn validate(&self) -> Result<(), InvalidSetting> {
        self.check_shape()?;
        if self.enabled {
            Verifier::new(self)?;
        }
        Ok(())
    }

    /// The layer these settings describe, or `None` when auth is off. `query_token` says which
    /// paths may carry the token as `?access_token=` (the stream endpoint's).
    ///
    /// Fails as [`Config::validate`] does (it reads the key files).
    pub fn layer(
        &self,
        query_token: fn(&str) -> bool,
    ) -> Result<Option<AuthLayer>, InvalidSetting> {
        if !self.enabled {
            return Ok(None);
        }
        self.check_shape()?;
        let verifier = Verifier::new(self)?;
        Ok(Some(AuthLayer::new(
            verifier,
            self.public_metrics,
            query_token,
        )))
    }

    /// What can be checked without reading a file.
    fn check_shape(&self) -> Result<(), InvalidSetting> {
        let mut names = std::collections::HashSet::new();
        for key in &self.api_keys {
            let name_ok = (1..=64).contains(&key.name.len())
                && key.name.bytes().all(|b| b.is_ascii_graphic());
            if !name_ok {
                return Err(InvalidSetting::new(
                    "auth.api_keys.name",
                    format!("{:?} must be 1 to 64 visible ASCII characters", key.name),
                ));
            }
            if !names.insert(key.name.as_str()) {
                return Err(InvalidSetting::new(
                    "auth.api_keys.name",
                    format!("{:?} names two keys; each name must be unique", key.name),
                ));
            }
            let hash_ok = key.sha256.len() == 64
                && key
                    .sha256
                    .bytes()
                    .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b));
            if !hash_ok {
                // The value is not repeated: someone may have pasted the key itself here.
                return Err(InvalidSetting::new(
                    "auth.api_keys.sha256",
                    format!(
                        "of the key named {:?} must be 64 lower-case hex digits, the SHA-256 \
                         of the key (printf %s \"$KEY\" | sha256sum), not the key itself",
                        key.name
                    ),
                ));
            }
        }
        if let Some(jwt) = &self.jwt {
            if jwt.user_claim.is_empty() {
                return Err(InvalidSetting::new(
                    "auth.jwt.user_claim",
                    "must name the claim that holds the user id (default sub)",
                ));
            }
            if jwt.leeway_secs > MAX_LEEWAY_SECS {
                return Err(InvalidSetting::new(
                    "auth.jwt.leeway_secs",
                    format!("must be at most {MAX_LEEWAY_SECS}, got {}", jwt.leeway_secs),
                ));
            }
            let (wanted, unwanted, unwanted_key) = match jwt.algorithm {
                JwtAlgorithm::HS256 => (
                    ("auth.jwt.secret_file", &jwt.secret_file),
                    &jwt.public_key_file,
                    "auth.jwt.public_key_file",
                ),
                JwtAlgorithm::RS256 | JwtAlgorithm::ES256 => (
                    ("auth.jwt.public_key_file", &jwt.public_key_file),
                    &jwt.secret_file,
                    "auth.jwt.secret_file",
                ),
            };
            if wanted.1.is_none() {
                return Err(InvalidSetting::new(
                    wanted.0,
                    format!("must be set for algorithm {:?}", jwt.algorithm),
                ));
            }
            if unwanted.is_some() {
                return Err(InvalidSetting::new(
                    unwanted_key,
                    format!("is not used by algorithm {:?}; remove it", jwt.algorithm),
                ));
            }
        }
        if self.enabled && self.api_keys.is_empty() && self.jwt.is_none() {
            return Err(InvalidSetting::new(
                "auth.enabled",
                "is true but no credentials are configured: add [[auth.api_keys]] or [auth.jwt]",
            ));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests;

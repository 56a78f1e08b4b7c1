//! [`Verifier`]: a token in, a [`Principal`] or a refusal out.

use std::collections::HashMap;
use std::sync::{Arc, PoisonError, RwLock};

use jsonwebtoken::errors::ErrorKind;
use jsonwebtoken::{Algorithm, DecodingKey, Validation};
use kalamdb_http::{ApiError, Principal};
use serde_json::{Map, Value};
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

use super::{Config, JwtAlgorithm, JwtConfig, Role};
use crate::InvalidSetting;

/// The shortest HS256 secret accepted: 256 bits, the hash's own size (RFC 7518 §3.2).
const MIN_SECRET_BYTES: usize = 32;

/// How many verified user tokens are remembered. When full, the memory is cleared at once: a
/// token forgotten is only checked again. Only tokens whose signature verified are kept, so
/// what fills it is valid tokens, not a flood; at most a few megabytes.
const MAX_REMEMBERED_TOKENS: usize = 16_384;

/// Checks tokens against the configured API keys and user-token key. Built once at start-up
/// (it reads the key files) and shared by every request.
pub struct Verifier {
    /// Each key's principal and the SHA-256 it is known by.
    keys: Vec<(Principal, [u8; 32])>,
    jwt: Option<Jwt>,
}

struct Jwt {
    key: DecodingKey,
    validation: Validation,
    user_claim: String,
    /// Tokens verified already, each with its user and `exp`. An app sends the same token with
    /// every request until it expires; checking its signature and decoding its claims again
    /// each time was about 28k instructions a request, most of a user's overhead. The map's
    /// hasher is keyed per process, so which tokens share a bucket cannot be steered.
    verified: RwLock<HashMap<Box<str>, Verified>>,
}

/// A token whose signature and claims checked out.
struct Verified {
    principal: Principal,
    /// Its `exp`, in seconds since the Unix epoch: past it (and the leeway) it is checked again,
    /// which refuses it as expired.
    exp: u64,
}

impl std::fmt::Debug for Verifier {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Names only: never a hash or a key.
        f.debug_struct("Verifier")
            .field(
                "keys",
                &self
                    .keys
                    .iter()
                    .map(|(p, _)| p.to_string())
                    .collect::<Vec<_>>(),
            )
            .field("user_tokens", &self.jwt.is_some())
            .finish()
    }
}

impl Verifier {
    /// The verifier for `config`, reading its key files; the error names the key at fault.
    pub fn new(config: &Config) -> Result<Self, InvalidSetting> {
        let keys = config
            .api_keys
            .iter()
            .map(|key| {
                let name: Arc<str> = key.name.as_str().into();
                let principal = match key.role {
                    Role::Service => Principal::Service { name },
                    Role::Admin => Principal::Admin { name },
                };
                let mut hash = [0; 32];
                for (byte, pair) in hash.iter_mut().zip(key.sha256.as_bytes().chunks(2)) {
                    let hex = std::str::from_utf8(pair).ok();
                    *byte = hex
                        .and_then(|h| u8::from_str_radix(h, 16).ok())
                        .ok_or_else(|| {
                            InvalidSetting::new(
                                "auth.api_keys.sha256",
                                format!("of the key named {:?} is not hex", key.name),
                            )
                        })?;
                }
                Ok((principal, hash))
            })
            .collect::<Result<_, InvalidSetting>>()?;
        let jwt = config.jwt.as_ref().map(Jwt::new).transpose()?;
        Ok(Self { keys, jwt })
    }

    /// The principal `token` stands for, or the 401 that says why it stands for none. The
    /// message never contains the token.
    pub fn authenticate(&self, token: &str) -> Result<Principal, ApiError> {
        if token.bytes().filter(|&b| b == b'.').count() == 2 {
            return match &self.jwt {
                Some(jwt) => jwt.verify(token),
                None => Err(ApiError::unauthorized(
                    "user tokens (JWTs) are not accepted by this server: it has no [auth.jwt]",
                )),
            };
        }
        let digest: [u8; 32] = Sha256::digest(token.as_bytes()).into();
        // Every key is compared, in constant time, so the time taken tells nothing of which
        // key came closest.
        let mut found = None;
        for (principal, hash) in &self.keys {
            if bool::from(hash.ct_eq(&digest)) {
                found = Some(principal);
            }
        }
        found
            .cloned()
            .ok_or_else(|| ApiError::unauthorized("the API key is not one this server knows"))
    }
}

impl Jwt {
    fn new(config: &JwtConfig) -> Result<Self, InvalidSetting> {
        let read = |key: &'static str, path: &Option<std::path::PathBuf>| {
            let path = path
                .as_ref()
                .ok_or_else(|| InvalidSetting::new(key, "must be set"))?;
            std::fs::read(path).map_err(|e| {
                InvalidSetting::new(key, format!("cannot read {}: {e}", path.display()))
            })
        };
        let (algorithm, key) = match config.algorithm {
            JwtAlgorithm::HS256 => {
                let secret = read("auth.jwt.secret_file", &config.secret_file)?;
                if secret.len() < MIN_SECRET_BYTES {
                    return Err(InvalidSetting::new(
                        "auth.jwt.secret_file",
                        format!(
                            "holds {} bytes; an HS256 secret needs at least {MIN_SECRET_BYTES}",
                            secret.len()
                        ),
                    ));
                }
                let key = DecodingKey::from_secret(&secret).map_err(|e| {
                    InvalidSetting::new("auth.jwt.secret_file", format!("is not usable: {e}"))
                })?;
                (Algorithm::HS256, key)
            }
            JwtAlgorithm::RS256 | JwtAlgorithm::ES256 => {
                let pem = read("auth.jwt.public_key_file", &config.public_key_file)?;
                let (algorithm, key) = if config.algorithm == JwtAlgorithm::RS256 {
                    (Algorithm::RS256, DecodingKey::from_rsa_pem(&pem))
                } else {
                    (Algorithm::ES256, DecodingKey::from_ec_pem(&pem))
                };
                let key = key.map_err(|e| {
                    InvalidSetting::new(
                        "auth.jwt.public_key_file",
                        format!("is not a PEM public key for {:?}: {e}", config.algorithm),
                    )
                })?;
                (algorithm, key)
            }
        };
        let mut validation = Validation::new(algorithm);
        validation.leeway = config.leeway_secs;
        validation.validate_exp = true;
        validation.validate_nbf = true;
        validation.set_required_spec_claims(&["exp"]);
        if config.issuer.is_empty() {
            validation.iss = None;
        } else {
            validation.set_issuer(&[&config.issuer]);
            validation.required_spec_claims.insert("iss".into());
        }
        if config.audience.is_empty() {
            validation.validate_aud = false;
        } else {
            validation.set_audience(&[&config.audience]);
            validation.required_spec_claims.insert("aud".into());
        }
        Ok(Self {
            key,
            validation,
            user_claim: config.user_claim.clone(),
            verified: RwLock::default(),
        })
    }

    fn verify(&self, token: &str) -> Result<Principal, ApiError> {
        let now = jsonwebtoken::get_current_timestamp();
        self.remembered(token, now)
            .map_or_else(|| self.check(token), Ok)
    }

    /// The user of `token` when it was verified before and has not expired since.
    fn remembered(&self, token: &str, now: u64) -> Option<Principal> {
        let verified = self.verified.read().unwrap_or_else(PoisonError::into_inner);
        let hit = verified.get(token)?;
        // The same rule as the full check: expired once `exp` plus the leeway is past.
        (now <= hit.exp.saturating_add(self.validation.leeway)).then(|| hit.principal.clone())
    }

    /// Checks `token` in full (signature, then claims) and remembers it when it passes.
    fn check(&self, token: &str) -> Result<Principal, ApiError> {
        let data = jsonwebtoken::decode::<Map<String, Value>>(token, &self.key, &self.validation)
            .map_err(|e| ApiError::unauthorized(refusal(e.kind())))?;
        let claim = &self.user_claim;
        let id = match data.claims.get(claim) {
            Some(Value::String(id)) if is_user_id(id) => id.as_str(),
            Some(_) => {
                return Err(ApiError::unauthorized(format!(
                    "the token's {claim} claim is not a user id: 1 to 255 bytes of text without \
                     control characters"
                )))
            }
            None => {
                return Err(ApiError::unauthorized(format!(
                    "the token has no {claim} claim, which names its user"
                )))
            }
        };
        let principal = Principal::User { id: id.into() };
        // `exp` is required and checked: a number. A token not yet valid (`nbf`) never gets here.
        if let Some(exp) = data.claims.get("exp").and_then(Value::as_u64) {
            let mut verified = self
                .verified
                .write()
                .unwrap_or_else(PoisonError::into_inner);
            if verified.len() >= MAX_REMEMBERED_TOKENS {
                verified.clear();
            }
            let remembered = Verified {
                principal: principal.clone(),
                exp,
            };
            verified.insert(token.into(), remembered);
        }
        Ok(principal)
    }
}

/// A user id is what a message's `from` may be.
fn is_user_id(id: &str) -> bool {
    kalamdb_core::message::validate_name("user", id).is_ok()
}

/// Why a token was refused, in words of our own: the library's messages are not ours to promise
/// free of the token's content.
fn refusal(kind: &ErrorKind) -> String {
    match kind {
        ErrorKind::ExpiredSignature => "the token has expired (exp)".into(),
        ErrorKind::ImmatureSignature => "the token is not valid yet (nbf)".into(),
        ErrorKind::InvalidIssuer => "the token's issuer (iss) is not the one configured".into(),
        ErrorKind::InvalidAudience => "the token's audience (aud) is not the one configured".into(),
        ErrorKind::InvalidSignature => "the token's signature does not verify".into(),
        ErrorKind::InvalidAlgorithm => {
            "the token is signed with an algorithm this server does not accept".into()
        }
        // The claim names come from the validation's own list (exp, iss, aud, nbf).
        ErrorKind::MissingRequiredClaim(claim) => format!("the token has no {claim} claim"),
        ErrorKind::InvalidClaimFormat(claim) => format!("the token's {claim} claim is malformed"),
        _ => "the token is not a well-formed JWT".into(),
    }
}

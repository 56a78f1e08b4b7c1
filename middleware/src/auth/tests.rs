use std::path::PathBuf;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

use http::header::WWW_AUTHENTICATE;
use http::{Request, Response, StatusCode};
use http_body_util::BodyExt;
use jsonwebtoken::{encode, Algorithm, EncodingKey, Header};
use kalamdb_http::{full, BoxError, Principal, ResponseBody};
use serde_json::{json, Value};
use sha2::{Digest, Sha256};
use tower::{ServiceBuilder, ServiceExt};

use super::{ApiKey, Config, JwtAlgorithm, JwtConfig, Role};
use crate::rescue::RescueLayer;

const SERVICE_KEY: &str = "svc-6f1c2d0e9a";
const ADMIN_KEY: &str = "adm-83b2a7c4f0";

fn fixture(name: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../tests/fixtures/auth")
        .join(name)
}

fn key(name: &str, key: &str, role: Role) -> ApiKey {
    ApiKey {
        name: name.into(),
        sha256: format!("{:x}", Sha256::digest(key.as_bytes())),
        role,
    }
}

fn jwt_config(algorithm: JwtAlgorithm) -> JwtConfig {
    let (secret_file, public_key_file) = match algorithm {
        JwtAlgorithm::HS256 => (Some(fixture("hs256.secret")), None),
        JwtAlgorithm::RS256 => (None, Some(fixture("rs256-public.pem"))),
        JwtAlgorithm::ES256 => (None, Some(fixture("es256-public.pem"))),
    };
    JwtConfig {
        algorithm,
        secret_file,
        public_key_file,
        ..JwtConfig::default()
    }
}

fn config(jwt: JwtConfig) -> Config {
    Config {
        enabled: true,
        api_keys: vec![
            key("backend", SERVICE_KEY, Role::Service),
            key("ops", ADMIN_KEY, Role::Admin),
        ],
        jwt: Some(jwt),
        ..Config::default()
    }
}

fn now() -> u64 {
    jsonwebtoken::get_current_timestamp()
}

/// A token signed with the fixture key of `algorithm`.
fn token(algorithm: JwtAlgorithm, claims: &Value) -> String {
    let (alg, key) = match algorithm {
        JwtAlgorithm::HS256 => (
            Algorithm::HS256,
            EncodingKey::from_secret(&std::fs::read(fixture("hs256.secret")).unwrap()).unwrap(),
        ),
        JwtAlgorithm::RS256 => (
            Algorithm::RS256,
            EncodingKey::from_rsa_pem(&std::fs::read(fixture("rs256-private.pem")).unwrap())
                .unwrap(),
        ),
        JwtAlgorithm::ES256 => (
            Algorithm::ES256,
            EncodingKey::from_ec_pem(&std::fs::read(fixture("es256-private.pem")).unwrap())
                .unwrap(),
        ),
    };
    encode(&Header::new(alg), claims, &key).unwrap()
}

fn user_token(algorithm: JwtAlgorithm, user: &str) -> String {
    token(algorithm, &json!({"sub": user, "exp": now() + 600}))
}

/// The auth layer over a handler that answers with the principal it was given, counting calls.
struct Harness {
    config: Config,
    reached: Arc<AtomicUsize>,
}

struct Answer {
    status: StatusCode,
    body: Value,
    response: Response<ResponseBody>,
}

impl Harness {
    fn new(config: Config) -> Self {
        Self {
            config,
            reached: Arc::default(),
        }
    }

    async fn send(&self, request: Request<()>) -> Answer {
        let reached = Arc::clone(&self.reached);
        let layer = self
            .config
            .layer(|path| path.ends_with("/stream"))
            .unwrap()
            .unwrap();
        let response = ServiceBuilder::new()
            .layer(RescueLayer::new())
            .layer(layer)
            .service_fn(move |request: Request<()>| {
                reached.fetch_add(1, Ordering::SeqCst);
                let who = request
                    .extensions()
                    .get::<Principal>()
                    .map_or("none".to_owned(), ToString::to_string);
                async move { Ok::<_, BoxError>(Response::new(full(json!(who).to_string()))) }
            })
            .oneshot(request)
            .await
            .unwrap();
        let (parts, body) = response.into_parts();
        let bytes = body.collect().await.unwrap().to_bytes();
        Answer {
            status: parts.status,
            body: serde_json::from_slice(&bytes).unwrap(),
            response: Response::from_parts(parts, full(bytes)),
        }
    }

    async fn with_token(&self, path: &str, token: &str) -> Answer {
        let request = Request::get(path)
            .header("authorization", format!("Bearer {token}"))
            .body(())
            .unwrap();
        self.send(request).await
    }

    fn reached(&self) -> usize {
        self.reached.load(Ordering::SeqCst)
    }
}

/// A 401 whose message contains `words` and never the token.
fn assert_refused(answer: &Answer, words: &str, token: &str) {
    assert_eq!(answer.status, StatusCode::UNAUTHORIZED, "{}", answer.body);
    assert_eq!(answer.body["error"], "unauthorized");
    assert_eq!(answer.response.headers()[WWW_AUTHENTICATE], "Bearer");
    let message = answer.body["message"].as_str().unwrap();
    assert!(message.contains(words), "{message:?} lacks {words:?}");
    assert!(!message.contains(token), "the message repeats the token");
}

#[tokio::test]
async fn api_keys_become_their_named_principal_and_unknown_keys_are_refused() {
    let harness = Harness::new(config(jwt_config(JwtAlgorithm::HS256)));
    let answer = harness.with_token("/api/v1/query", SERVICE_KEY).await;
    assert_eq!(
        (answer.status, answer.body),
        (StatusCode::OK, json!("key:backend"))
    );
    // The principal rides on the response too, for the request log.
    assert_eq!(
        answer
            .response
            .extensions()
            .get::<Principal>()
            .unwrap()
            .to_string(),
        "key:backend"
    );
    let answer = harness.with_token("/api/v1/query", ADMIN_KEY).await;
    assert_eq!(answer.body, json!("key:ops"));

    let wrong = "svc-6f1c2d0e9b";
    assert_refused(
        &harness.with_token("/api/v1/query", wrong).await,
        "API key",
        wrong,
    );
    assert_eq!(
        harness.reached(),
        2,
        "a refused request reached the endpoint"
    );
}

#[tokio::test]
async fn no_or_malformed_credentials_are_refused_before_the_endpoint() {
    let harness = Harness::new(config(jwt_config(JwtAlgorithm::HS256)));
    let answer = harness
        .send(Request::get("/api/v1/conversations").body(()).unwrap())
        .await;
    assert_refused(&answer, "Authorization: Bearer", "-");
    for header in [
        format!("Basic {SERVICE_KEY}"),
        "Bearer".to_owned(),
        "Bearer ".to_owned(),
        SERVICE_KEY.to_owned(),
    ] {
        let request = Request::get("/api/v1/query")
            .header("authorization", header.as_str())
            .body(())
            .unwrap();
        assert_refused(&harness.send(request).await, "Bearer <token>", SERVICE_KEY);
    }
    // Unknown paths too: nothing below the layer learns of an anonymous request.
    let answer = harness.send(Request::get("/nope").body(()).unwrap()).await;
    assert_eq!(answer.status, StatusCode::UNAUTHORIZED);
    assert_eq!(harness.reached(), 0);
}

#[tokio::test]
async fn health_is_open_and_metrics_needs_an_admin_key_unless_public() {
    let harness = Harness::new(config(jwt_config(JwtAlgorithm::HS256)));
    let health = harness
        .send(Request::get("/health").body(()).unwrap())
        .await;
    assert_eq!(
        (health.status, health.body),
        (StatusCode::OK, json!("none"))
    );
    // Even with credentials that are wrong: /health never looks at them.
    assert_eq!(
        harness.with_token("/health", "bogus").await.status,
        StatusCode::OK
    );

    let anonymous = harness
        .send(Request::get("/metrics").body(()).unwrap())
        .await;
    assert_eq!(anonymous.status, StatusCode::UNAUTHORIZED);
    for token in [
        SERVICE_KEY.to_owned(),
        user_token(JwtAlgorithm::HS256, "alice"),
    ] {
        let answer = harness.with_token("/metrics", &token).await;
        assert_eq!(answer.status, StatusCode::FORBIDDEN, "{}", answer.body);
        assert_eq!(answer.body["error"], "forbidden");
        assert!(answer.response.headers().get(WWW_AUTHENTICATE).is_none());
    }
    let admin = harness.with_token("/metrics", ADMIN_KEY).await;
    assert_eq!(
        (admin.status, admin.body),
        (StatusCode::OK, json!("key:ops"))
    );
    assert_eq!(harness.reached(), 3);

    let public = Harness::new(Config {
        public_metrics: true,
        ..config(jwt_config(JwtAlgorithm::HS256))
    });
    let answer = public
        .send(Request::get("/metrics").body(()).unwrap())
        .await;
    assert_eq!(answer.status, StatusCode::OK);
}

#[tokio::test]
async fn user_tokens_of_each_algorithm_name_their_user() {
    for algorithm in [
        JwtAlgorithm::HS256,
        JwtAlgorithm::RS256,
        JwtAlgorithm::ES256,
    ] {
        let harness = Harness::new(config(jwt_config(algorithm)));
        let answer = harness
            .with_token("/api/v1/query", &user_token(algorithm, "alice"))
            .await;
        assert_eq!(
            (answer.status, answer.body),
            (StatusCode::OK, json!("user:alice")),
            "{algorithm:?}"
        );
        // A token of another algorithm, or signed with another key, is refused.
        let other = match algorithm {
            JwtAlgorithm::HS256 => JwtAlgorithm::RS256,
            _ => JwtAlgorithm::HS256,
        };
        let foreign = user_token(other, "alice");
        let answer = harness.with_token("/api/v1/query", &foreign).await;
        assert_refused(&answer, "algorithm", &foreign);
    }
}

#[tokio::test]
async fn a_tampered_token_fails_its_signature() {
    let harness = Harness::new(config(jwt_config(JwtAlgorithm::HS256)));
    let good = user_token(JwtAlgorithm::HS256, "alice");
    let mallory = user_token(JwtAlgorithm::HS256, "mallory");
    // Alice's header and signature around Mallory's claims.
    let parts: Vec<&str> = good.split('.').collect();
    let claims = mallory.split('.').nth(1).unwrap();
    let forged = format!("{}.{}.{}", parts[0], claims, parts[2]);
    assert_refused(
        &harness.with_token("/api/v1/query", &forged).await,
        "signature",
        &forged,
    );
    let garbage = "not.a.jwt";
    assert_refused(
        &harness.with_token("/api/v1/query", garbage).await,
        "well-formed",
        garbage,
    );
    assert_eq!(harness.reached(), 0);
}

#[tokio::test]
async fn time_issuer_audience_and_user_claims_are_checked() {
    let jwt = JwtConfig {
        issuer: "https://auth.example".into(),
        audience: "kalamdb".into(),
        user_claim: "uid".into(),
        leeway_secs: 5,
        ..jwt_config(JwtAlgorithm::HS256)
    };
    let harness = Harness::new(config(jwt));
    let base = json!({
        "uid": "alice", "iss": "https://auth.example", "aud": "kalamdb", "exp": now() + 600
    });
    let with = |change: Value| {
        let mut claims = base.clone();
        for (k, v) in change.as_object().unwrap() {
            if v.is_null() {
                claims.as_object_mut().unwrap().remove(k);
            } else {
                claims[k] = v.clone();
            }
        }
        token(JwtAlgorithm::HS256, &claims)
    };
    let ok = harness.with_token("/api/v1/query", &with(json!({}))).await;
    assert_eq!((ok.status, ok.body), (StatusCode::OK, json!("user:alice")));
    // Within the leeway, an expired token still passes; past it, it does not.
    let skewed = harness
        .with_token("/api/v1/query", &with(json!({"exp": now() - 2})))
        .await;
    assert_eq!(skewed.status, StatusCode::OK);

    for (change, words) in [
        (json!({"exp": now() - 60}), "expired"),
        (json!({"exp": null}), "no exp claim"),
        (json!({"nbf": now() + 60}), "not valid yet"),
        (json!({"iss": "https://evil.example"}), "issuer"),
        (json!({"iss": null}), "no iss claim"),
        (json!({"aud": "someone-else"}), "audience"),
        (json!({"uid": null}), "no uid claim"),
        (json!({"uid": 42}), "not a user id"),
        (json!({"uid": ""}), "not a user id"),
    ] {
        let token = with(change.clone());
        let answer = harness.with_token("/api/v1/query", &token).await;
        assert_refused(&answer, words, &token);
    }
    assert_eq!(harness.reached(), 2);
}

#[tokio::test]
async fn a_remembered_token_is_refused_once_it_expires() {
    let jwt = JwtConfig {
        leeway_secs: 0,
        ..jwt_config(JwtAlgorithm::HS256)
    };
    let harness = Harness::new(config(jwt));
    let short = token(
        JwtAlgorithm::HS256,
        &json!({"sub": "alice", "exp": now() + 1}),
    );
    // The first request verifies it; the next ones find it remembered.
    for _ in 0..3 {
        let answer = harness.with_token("/api/v1/query", &short).await;
        assert_eq!(answer.body, json!("user:alice"));
    }
    tokio::time::sleep(std::time::Duration::from_millis(2100)).await;
    let answer = harness.with_token("/api/v1/query", &short).await;
    assert_refused(&answer, "expired", &short);
    // A token with another signature is never taken for the remembered one.
    let other = user_token(JwtAlgorithm::HS256, "alice");
    let at = other.len() - 10;
    let flipped = if &other[at..=at] == "A" { "B" } else { "A" };
    let forged = format!("{}{flipped}{}", &other[..at], &other[at + 1..]);
    assert_refused(
        &harness.with_token("/api/v1/query", &forged).await,
        "",
        &forged,
    );
}

#[tokio::test]
async fn jwts_are_refused_when_no_user_tokens_are_configured() {
    let harness = Harness::new(Config {
        jwt: None,
        ..config(jwt_config(JwtAlgorithm::HS256))
    });
    let token = user_token(JwtAlgorithm::HS256, "alice");
    assert_refused(
        &harness.with_token("/api/v1/query", &token).await,
        "[auth.jwt]",
        &token,
    );
}

#[tokio::test]
async fn access_token_is_read_on_the_stream_path_only() {
    let harness = Harness::new(config(jwt_config(JwtAlgorithm::HS256)));
    let token = user_token(JwtAlgorithm::HS256, "alice");
    let stream = format!("/api/v1/conversations/c/stream?since_msg_id=1&access_token={token}");
    let answer = harness.send(Request::get(stream).body(()).unwrap()).await;
    assert_eq!(
        (answer.status, answer.body),
        (StatusCode::OK, json!("user:alice"))
    );
    let elsewhere = format!("/api/v1/conversations/c?access_token={token}");
    let answer = harness
        .send(Request::get(elsewhere).body(()).unwrap())
        .await;
    assert_refused(&answer, "needs credentials", &token);
    // A bad token in the query is refused like one in the header.
    let bad = "/api/v1/conversations/c/stream?access_token=nope";
    assert_refused(
        &harness.send(Request::get(bad).body(()).unwrap()).await,
        "API key",
        "nope",
    );
}

#[test]
fn settings_are_refused_by_key_without_repeating_secrets() {
    let base = config(jwt_config(JwtAlgorithm::HS256));
    let refused = |config: Config| config.validate().unwrap_err();

    let mut pasted = base.clone();
    pasted.api_keys[0].sha256 = SERVICE_KEY.into();
    let e = refused(pasted);
    assert_eq!(e.key, "auth.api_keys.sha256");
    assert!(!e.message.contains(SERVICE_KEY), "{e}");

    let mut twice = base.clone();
    twice.api_keys[1].name = "backend".into();
    assert_eq!(refused(twice).key, "auth.api_keys.name");

    let mut unnamed = base.clone();
    unnamed.api_keys[0].name = "has space".into();
    assert_eq!(refused(unnamed).key, "auth.api_keys.name");

    let nothing = Config {
        enabled: true,
        ..Config::default()
    };
    assert_eq!(refused(nothing).key, "auth.enabled");

    let short = tempfile_with(b"too short");
    let mut weak = base.clone();
    weak.jwt.as_mut().unwrap().secret_file = Some(short.clone());
    let e = refused(weak);
    assert_eq!(e.key, "auth.jwt.secret_file");
    assert!(e.message.contains("at least 32"), "{e}");
    let _ = std::fs::remove_file(short);

    let mut missing = base.clone();
    missing.jwt.as_mut().unwrap().secret_file = Some("/nonexistent/jwt.secret".into());
    assert_eq!(refused(missing).key, "auth.jwt.secret_file");

    let mut not_a_key = base.clone();
    let jwt = not_a_key.jwt.as_mut().unwrap();
    jwt.algorithm = JwtAlgorithm::RS256;
    jwt.public_key_file = Some(fixture("hs256.secret"));
    jwt.secret_file = None;
    assert_eq!(refused(not_a_key).key, "auth.jwt.public_key_file");

    let mut both = base.clone();
    both.jwt.as_mut().unwrap().public_key_file = Some(fixture("rs256-public.pem"));
    assert_eq!(refused(both).key, "auth.jwt.public_key_file");

    let mut lenient = base.clone();
    lenient.jwt.as_mut().unwrap().leeway_secs = 301;
    assert_eq!(refused(lenient).key, "auth.jwt.leeway_secs");

    let mut claimless = base;
    claimless.jwt.as_mut().unwrap().user_claim = String::new();
    assert_eq!(refused(claimless).key, "auth.jwt.user_claim");

    // Off, nothing is read, and the layer is not built.
    let off = Config::default();
    assert!(off.validate().is_ok());
    assert!(off.layer(|_| false).unwrap().is_none());
}

fn tempfile_with(bytes: &[u8]) -> PathBuf {
    let path = std::env::temp_dir().join(format!("kalamdb-auth-test-{}", std::process::id()));
    std::fs::write(&path, bytes).unwrap();
    path
}

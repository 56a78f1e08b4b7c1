//! `docs/openapi.yaml` cannot drift from the server: requests to every operation, successes and
//! errors alike, each answer validated against the response the file documents for its status.

use std::collections::BTreeSet;
use std::num::NonZeroUsize;
use std::time::Instant;

use bytes::Bytes;
use http::{Method, Request, StatusCode};
use http_body_util::{BodyExt, Full};
use kalamdb_server::{build_app, Config};
use kalamdb_tests::{get, post_json, TestStore};
use serde_json::{json, Value};
use tower::ServiceExt;

struct Spec {
    doc: Value,
    /// (path template, method, status) answered and checked so far.
    seen: BTreeSet<(String, String, u16)>,
}

impl Spec {
    fn load() -> Self {
        let doc = serde_yaml_ng::from_str(include_str!("../../docs/openapi.yaml"))
            .expect("docs/openapi.yaml is YAML");
        Self {
            doc,
            seen: BTreeSet::new(),
        }
    }

    /// Follows a local `$ref`, if `node` is one.
    fn resolve<'a>(&'a self, node: &'a Value) -> &'a Value {
        match node.get("$ref").and_then(Value::as_str) {
            Some(pointer) => self
                .doc
                .pointer(pointer.trim_start_matches('#'))
                .unwrap_or_else(|| panic!("dangling $ref {pointer}")),
            None => node,
        }
    }

    /// Checks one answer against the documented response of `template` / `method` / status.
    fn check(&mut self, template: &str, method: &Method, answer: &Raw) {
        let method_key = method.as_str().to_ascii_lowercase();
        let status = answer.status.as_u16();
        let operation = &self.doc["paths"][template][&method_key];
        assert!(
            operation.is_object(),
            "{method} {template} is not documented"
        );
        let response = operation["responses"]
            .get(status.to_string())
            .unwrap_or_else(|| panic!("{method} {template} does not document {status}"));
        let response = self.resolve(response);
        if response.get("content").is_none() {
            // A documented answer without a body (204).
            assert!(
                answer.body.is_empty(),
                "{method} {template} {status}: a body where none is documented"
            );
            self.seen.insert((template.to_owned(), method_key, status));
            return;
        }

        let content_type = answer.content_type();
        let media = &response["content"][&content_type];
        assert!(
            media.is_object(),
            "{method} {template} {status}: {content_type} is not documented"
        );
        let instance = if content_type == "application/json" {
            serde_json::from_slice(&answer.body).expect("a JSON body")
        } else {
            Value::String(String::from_utf8(answer.body.to_vec()).expect("a text body"))
        };
        // A root holding the spec's components, so `#/components/...` references resolve.
        let schema = json!({
            "$schema": "https://json-schema.org/draft/2020-12/schema",
            "components": self.doc["components"],
            "allOf": [media["schema"]],
        });
        let validator = jsonschema::draft202012::new(&schema).expect("a valid schema");
        let errors: Vec<String> = validator
            .iter_errors(&instance)
            .map(|e| format!("{} at {}", e, e.instance_path()))
            .collect();
        assert!(
            errors.is_empty(),
            "{method} {template} {status}: {errors:?}\n{instance}"
        );
        if let Some(headers) = response.get("headers").and_then(Value::as_object) {
            for name in headers.keys() {
                assert!(
                    answer.headers.contains_key(name.as_str()),
                    "{method} {template} {status}: missing header {name}"
                );
            }
        }
        self.seen.insert((template.to_owned(), method_key, status));
    }

    /// Every documented operation was answered with a success and at least one error.
    fn assert_every_operation_covered(&self) {
        let paths = self.doc["paths"].as_object().unwrap();
        for (template, operations) in paths {
            for method in operations.as_object().unwrap().keys() {
                let statuses: Vec<u16> = self
                    .seen
                    .iter()
                    .filter(|(t, m, _)| t == template && m == method)
                    .map(|(_, _, s)| *s)
                    .collect();
                assert!(
                    statuses.iter().any(|s| (200..300).contains(s)),
                    "{method} {template}: no success checked"
                );
                assert!(
                    statuses.iter().any(|s| *s >= 400),
                    "{method} {template}: no error checked"
                );
            }
        }
    }
}

/// An answer with its raw body.
struct Raw {
    status: StatusCode,
    headers: http::HeaderMap,
    body: Bytes,
}

impl Raw {
    fn content_type(&self) -> String {
        self.headers
            .get("content-type")
            .and_then(|v| v.to_str().ok())
            .unwrap_or("")
            .split(';')
            .next()
            .unwrap_or("")
            .trim()
            .to_owned()
    }
}

async fn send<S>(app: &S, request: Request<Full<Bytes>>) -> Raw
where
    S: tower::Service<
            Request<Full<Bytes>>,
            Response = http::Response<kalamdb_http::ResponseBody>,
            Error = std::convert::Infallible,
        > + Clone,
{
    let response = app.clone().oneshot(request).await.unwrap();
    let (parts, body) = response.into_parts();
    Raw {
        status: parts.status,
        headers: parts.headers,
        body: body.collect().await.unwrap().to_bytes(),
    }
}

#[tokio::test]
async fn every_answer_matches_docs_openapi_yaml() {
    let mut spec = Spec::load();
    let mut config = Config::default();
    config.limits.max_message_size = NonZeroUsize::new(64).unwrap();
    let store = TestStore::new(config);
    let app = build_app::<Full<Bytes>>(&store.config, store.handle.clone(), Instant::now());

    // POST /api/v1/messages
    let messages = "/api/v1/messages";
    let mut ids = Vec::new();
    for content in ["first", "second", "third"] {
        let body = json!({"conversation_id": "c", "from": "a", "content": content,
                          "metadata": {"role": "user"}});
        let answer = send(&app, post_json(messages, body.to_string())).await;
        assert_eq!(answer.status, StatusCode::OK);
        spec.check(messages, &Method::POST, &answer);
        let inserted: Value = serde_json::from_slice(&answer.body).unwrap();
        ids.push(inserted["msg_id"].as_str().unwrap().to_owned());
    }
    for (request, status) in [
        (post_json(messages, "{not json"), 400),
        (
            post_json(
                messages,
                r#"{"conversation_id":"c","from":"a","content":"x","extra":1}"#,
            ),
            400,
        ),
        (
            post_json(
                messages,
                json!({"conversation_id": "c", "from": "a", "content": "x".repeat(65)}).to_string(),
            ),
            413,
        ),
        (
            Request::post(messages)
                .body(Full::new(Bytes::from_static(b"{}")))
                .unwrap(),
            415,
        ),
    ] {
        let answer = send(&app, request).await;
        assert_eq!(answer.status.as_u16(), status);
        spec.check(messages, &Method::POST, &answer);
    }

    // Idempotency-Key: a retry is a 200 with the first answer, another message a 409.
    for (content, status) in [("kept", 200), ("kept", 200), ("changed", 409)] {
        let body = json!({"conversation_id": "c", "from": "a", "content": content});
        let mut request = post_json(messages, body.to_string());
        request
            .headers_mut()
            .insert("idempotency-key", "retry-7".parse().unwrap());
        let answer = send(&app, request).await;
        assert_eq!(answer.status.as_u16(), status);
        spec.check(messages, &Method::POST, &answer);
    }

    // POST /api/v1/messages/batch
    let batch = "/api/v1/messages/batch";
    for (body, status) in [
        (
            json!({"messages": [{"conversation_id": "b", "from": "a", "content": "1"},
                                {"conversation_id": "b", "from": "a", "content": "2"}]}),
            200,
        ),
        (json!({"messages": []}), 400),
        (
            json!({"messages": [{"conversation_id": "b", "from": "a", "content": "x".repeat(65)}]}),
            413,
        ),
    ] {
        let answer = send(&app, post_json(batch, body.to_string())).await;
        assert_eq!(answer.status.as_u16(), status, "{body}");
        spec.check(batch, &Method::POST, &answer);
    }

    // GET /api/v1/messages/{msg_id}
    let one = "/api/v1/messages/{msg_id}";
    for (path, status) in [
        (format!("/api/v1/messages/{}", ids[0]), 200),
        ("/api/v1/messages/42".to_owned(), 404),
        ("/api/v1/messages/not-a-number".to_owned(), 400),
    ] {
        let answer = send(&app, get(&path)).await;
        assert_eq!(answer.status.as_u16(), status, "{path}");
        spec.check(one, &Method::GET, &answer);
    }

    // POST /api/v1/query
    let query = "/api/v1/query";
    for (body, status) in [
        (json!({"conversation_id": "c", "limit": 2}), 200),
        (json!({"conversation_id": "c", "since_msg_id": ids[1]}), 200),
        (json!({"conversation_id": "nobody"}), 200),
        (json!({"conversation_id": "c", "limit": 0}), 400),
        (json!({"conversation_id": "c", "order": "sideways"}), 400),
    ] {
        let answer = send(&app, post_json(query, body.to_string())).await;
        assert_eq!(answer.status.as_u16(), status, "{body}");
        spec.check(query, &Method::POST, &answer);
    }

    // GET /api/v1/conversations/{conversation_id}/stream: "c" holds three messages after the
    // first (second, third and the kept idempotent one). Ending the streams ends the body, so
    // it can be validated whole.
    let stream = "/api/v1/conversations/{conversation_id}/stream";
    let answer = send(&app, get("/api/v1/conversations/c/stream?since_msg_id=x")).await;
    assert_eq!(answer.status, StatusCode::BAD_REQUEST);
    spec.check(stream, &Method::GET, &answer);
    let path = format!("/api/v1/conversations/c/stream?since_msg_id={}", ids[0]);
    let response = app.clone().oneshot(get(&path)).await.unwrap();
    let (parts, mut body) = response.into_parts();
    let mut events = Vec::new();
    while events.windows(2).filter(|w| w == b"\n\n").count() < 3 {
        let frame = tokio::time::timeout(std::time::Duration::from_secs(10), body.frame())
            .await
            .expect("the backlog arrives")
            .expect("the stream is open")
            .unwrap();
        events.extend_from_slice(&frame.into_data().unwrap());
    }
    store.handle.end_streams();
    events.extend_from_slice(&body.collect().await.unwrap().to_bytes());
    let answer = Raw {
        status: parts.status,
        headers: parts.headers,
        body: Bytes::from(events),
    };
    assert_eq!(answer.status, StatusCode::OK);
    spec.check(stream, &Method::GET, &answer);
    // Once streams have ended (the server is shutting down) a new one is refused.
    let answer = send(&app, get("/api/v1/conversations/c/stream")).await;
    assert_eq!(answer.status, StatusCode::SERVICE_UNAVAILABLE);
    spec.check(stream, &Method::GET, &answer);

    // The conversation records: "c" exists since its first message.
    let body_request = |method: Method, uri: &str, body: &str| {
        Request::builder()
            .method(method)
            .uri(uri)
            .header("content-type", "application/json")
            .body(Full::new(Bytes::from(body.to_owned())))
            .unwrap()
    };
    let conversations = "/api/v1/conversations";
    for (body, status) in [
        (
            json!({"conversation_id": "trip", "title": "Trip", "metadata": {"k": 1},
                   "members": ["alice", "bob"]}),
            201,
        ),
        (json!({}), 201),
        (json!({"conversation_id": "trip"}), 409),
        (json!({"title": ""}), 400),
        (json!({"metadata": {"long": "x".repeat(70_000)}}), 413),
    ] {
        let answer = send(&app, post_json(conversations, body.to_string())).await;
        assert_eq!(answer.status.as_u16(), status, "{body}");
        spec.check(conversations, &Method::POST, &answer);
    }
    let answer = send(
        &app,
        Request::post(conversations)
            .body(Full::new(Bytes::from_static(b"{}")))
            .unwrap(),
    )
    .await;
    assert_eq!(answer.status, StatusCode::UNSUPPORTED_MEDIA_TYPE);
    spec.check(conversations, &Method::POST, &answer);

    let mut cursor = String::new();
    for (path, status) in [
        ("/api/v1/conversations?limit=1".to_owned(), 200),
        ("/api/v1/conversations?member=alice".to_owned(), 200),
        ("/api/v1/conversations?limit=0".to_owned(), 400),
        ("/api/v1/conversations?cursor=x".to_owned(), 400),
    ] {
        let answer = send(&app, get(&path)).await;
        assert_eq!(answer.status.as_u16(), status, "{path}");
        spec.check(conversations, &Method::GET, &answer);
        if cursor.is_empty() && status == 200 {
            let page: Value = serde_json::from_slice(&answer.body).unwrap();
            cursor = page["next_cursor"]
                .as_str()
                .expect("more than one")
                .to_owned();
        }
    }
    let answer = send(&app, get(&format!("{conversations}?cursor={cursor}"))).await;
    assert_eq!(answer.status, StatusCode::OK);
    spec.check(conversations, &Method::GET, &answer);

    let record = "/api/v1/conversations/{conversation_id}";
    for (path, status) in [
        ("/api/v1/conversations/c", 200),
        ("/api/v1/conversations/trip", 200),
        ("/api/v1/conversations/nobody", 404),
        ("/api/v1/conversations/a%00b", 400),
    ] {
        let answer = send(&app, get(path)).await;
        assert_eq!(answer.status.as_u16(), status, "{path}");
        spec.check(record, &Method::GET, &answer);
    }
    for (path, body, status) in [
        (
            "/api/v1/conversations/trip",
            r#"{"title":null,"metadata":{"n":2}}"#,
            200,
        ),
        ("/api/v1/conversations/nobody", r#"{"title":"x"}"#, 404),
        ("/api/v1/conversations/trip", r#"{"title":7}"#, 400),
        (
            "/api/v1/conversations/trip",
            &json!({"metadata": {"long": "x".repeat(70_000)}}).to_string(),
            413,
        ),
    ] {
        let answer = send(&app, body_request(Method::PATCH, path, body)).await;
        assert_eq!(answer.status.as_u16(), status, "{path} {body}");
        spec.check(record, &Method::PATCH, &answer);
    }
    let answer = send(
        &app,
        Request::patch("/api/v1/conversations/trip")
            .body(Full::new(Bytes::from_static(b"{}")))
            .unwrap(),
    )
    .await;
    assert_eq!(answer.status, StatusCode::UNSUPPORTED_MEDIA_TYPE);
    spec.check(record, &Method::PATCH, &answer);

    let members = "/api/v1/conversations/{conversation_id}/members";
    let member = "/api/v1/conversations/{conversation_id}/members/{user_id}";
    for (method, path, status) in [
        (Method::PUT, "/api/v1/conversations/trip/members/carol", 204),
        (
            Method::PUT,
            "/api/v1/conversations/nobody/members/carol",
            404,
        ),
        (Method::PUT, "/api/v1/conversations/trip/members/a%0Ab", 400),
        (
            Method::DELETE,
            "/api/v1/conversations/trip/members/bob",
            204,
        ),
        (
            Method::DELETE,
            "/api/v1/conversations/nobody/members/bob",
            404,
        ),
        (
            Method::DELETE,
            "/api/v1/conversations/trip/members/a%0Ab",
            400,
        ),
    ] {
        let answer = send(&app, body_request(method.clone(), path, "")).await;
        assert_eq!(answer.status.as_u16(), status, "{method} {path}");
        spec.check(member, &method, &answer);
    }
    for (path, status) in [
        ("/api/v1/conversations/trip/members", 200),
        ("/api/v1/conversations/nobody/members", 404),
        ("/api/v1/conversations/a%01/members", 400),
    ] {
        let answer = send(&app, get(path)).await;
        assert_eq!(answer.status.as_u16(), status, "{path}");
        spec.check(members, &Method::GET, &answer);
        if status == 200 {
            let listed: Value = serde_json::from_slice(&answer.body).unwrap();
            assert_eq!(listed, json!({"members": ["alice", "carol"]}));
        }
    }

    // PATCH and DELETE /api/v1/messages/{msg_id}
    let edited = format!("/api/v1/messages/{}", ids[1]);
    for (path, body, status) in [
        (
            edited.clone(),
            r#"{"content":"second, edited"}"#.to_owned(),
            200,
        ),
        (
            "/api/v1/messages/42".to_owned(),
            r#"{"content":"x"}"#.to_owned(),
            404,
        ),
        (edited.clone(), "{}".to_owned(), 400),
        (
            edited.clone(),
            json!({"content": "x".repeat(65)}).to_string(),
            413,
        ),
    ] {
        let answer = send(&app, body_request(Method::PATCH, &path, &body)).await;
        assert_eq!(answer.status.as_u16(), status, "{path} {body}");
        spec.check(one, &Method::PATCH, &answer);
    }
    let answer = send(
        &app,
        Request::patch(&edited)
            .body(Full::new(Bytes::from_static(b"{}")))
            .unwrap(),
    )
    .await;
    assert_eq!(answer.status, StatusCode::UNSUPPORTED_MEDIA_TYPE);
    spec.check(one, &Method::PATCH, &answer);
    for (path, status) in [
        (format!("/api/v1/messages/{}", ids[2]), 204),
        (format!("/api/v1/messages/{}", ids[2]), 404),
        ("/api/v1/messages/x".to_owned(), 400),
    ] {
        let answer = send(&app, body_request(Method::DELETE, &path, "")).await;
        assert_eq!(answer.status.as_u16(), status, "{path}");
        spec.check(one, &Method::DELETE, &answer);
    }

    // DELETE /api/v1/conversations/{conversation_id}/messages (a trim), then the conversation.
    let trim = "/api/v1/conversations/{conversation_id}/messages";
    for (path, status) in [
        (
            format!("/api/v1/conversations/c/messages?before_msg_id={}", ids[1]),
            200,
        ),
        ("/api/v1/conversations/nobody/messages".to_owned(), 404),
        (
            "/api/v1/conversations/c/messages?before_msg_id=x".to_owned(),
            400,
        ),
    ] {
        let answer = send(&app, body_request(Method::DELETE, &path, "")).await;
        assert_eq!(answer.status.as_u16(), status, "{path}");
        spec.check(trim, &Method::DELETE, &answer);
    }
    for (path, status) in [
        ("/api/v1/conversations/b", 204),
        ("/api/v1/conversations/b", 404),
        ("/api/v1/conversations/a%00b", 400),
    ] {
        let answer = send(&app, body_request(Method::DELETE, path, "")).await;
        assert_eq!(answer.status.as_u16(), status, "{path}");
        spec.check(record, &Method::DELETE, &answer);
    }

    // GET /metrics
    let answer = send(&app, get("/metrics")).await;
    assert_eq!(answer.status, StatusCode::OK);
    spec.check("/metrics", &Method::GET, &answer);

    // Rate limited: every operation documents 429.
    let mut limited = Config::default();
    limited.middleware.rate_limit.enabled = true;
    limited.middleware.rate_limit.requests_per_second = 1;
    limited.middleware.rate_limit.burst = 1;
    let limited_store = TestStore::new(limited);
    let limited_app = limited_store.app();
    assert_eq!(
        send(&limited_app, get("/health")).await.status,
        StatusCode::OK
    );
    for (template, request) in one_request_per_operation() {
        let method = request.method().clone();
        let answer = send(&limited_app, request).await;
        assert_eq!(answer.status, StatusCode::TOO_MANY_REQUESTS);
        spec.check(template, &method, &answer);
    }

    // Auth on: without credentials every operation but /health is 401; a user doing what users
    // may not is 403; a user writing to or reading a conversation they are not in is 404.
    let secret_file =
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("fixtures/auth/hs256.secret");
    let mut secured = Config::default();
    secured.auth.enabled = true;
    secured.auth.api_keys = vec![kalamdb_middleware::auth::ApiKey {
        name: "backend".into(),
        sha256: format!(
            "{:x}",
            <sha2::Sha256 as sha2::Digest>::digest("service-key")
        ),
        role: kalamdb_middleware::auth::Role::Service,
    }];
    secured.auth.jwt = Some(kalamdb_middleware::auth::JwtConfig {
        secret_file: Some(secret_file.clone()),
        ..Default::default()
    });
    let secured_store = TestStore::new(secured);
    let secured_app = secured_store.app();
    // Every operation but /health, which stays open.
    let anonymous = one_request_per_operation()
        .into_iter()
        .filter(|(template, _)| *template != "/health");
    for (template, request) in anonymous {
        let method = request.method().clone();
        let answer = send(&secured_app, request).await;
        assert_eq!(
            answer.status,
            StatusCode::UNAUTHORIZED,
            "{method} {template}"
        );
        spec.check(template, &method, &answer);
    }
    let secret = std::fs::read(&secret_file).unwrap();
    let user_token = jsonwebtoken::encode(
        &jsonwebtoken::Header::default(),
        &json!({"sub": "alice", "exp": jsonwebtoken::get_current_timestamp() + 600}),
        &jsonwebtoken::EncodingKey::from_secret(&secret).unwrap(),
    )
    .unwrap();
    let as_alice = |mut request: Request<Full<Bytes>>| {
        let value = format!("Bearer {user_token}").parse().unwrap();
        request.headers_mut().insert("authorization", value);
        request
    };
    let mut service = body_request(
        Method::POST,
        conversations,
        r#"{"conversation_id":"theirs"}"#,
    );
    service
        .headers_mut()
        .insert("authorization", "Bearer service-key".parse().unwrap());
    assert_eq!(
        send(&secured_app, service).await.status,
        StatusCode::CREATED
    );
    // A conversation alice shares with bob, holding a message of bob's.
    let as_service = |mut request: Request<Full<Bytes>>| {
        request
            .headers_mut()
            .insert("authorization", "Bearer service-key".parse().unwrap());
        request
    };
    let shared = r#"{"conversation_id":"shared","members":["alice","bob"]}"#;
    let answer = send(&secured_app, as_service(post_json(conversations, shared))).await;
    assert_eq!(answer.status, StatusCode::CREATED);
    let bobs = json!({"conversation_id": "shared", "from": "bob", "content": "x"});
    let answer = send(
        &secured_app,
        as_service(post_json(messages, bobs.to_string())),
    )
    .await;
    let bobs: Value = serde_json::from_slice(&answer.body).unwrap();
    let bobs = format!("/api/v1/messages/{}", bobs["msg_id"].as_str().unwrap());
    let answer = send(
        &secured_app,
        as_service(post_json(
            messages,
            r#"{"conversation_id":"theirs","from":"x","content":"x"}"#,
        )),
    )
    .await;
    let theirs: Value = serde_json::from_slice(&answer.body).unwrap();
    let theirs = format!("/api/v1/messages/{}", theirs["msg_id"].as_str().unwrap());
    let as_bob = json!({"conversation_id": "mine", "from": "bob", "content": "x"}).to_string();
    let into_theirs = json!({"conversation_id": "theirs", "from": "alice", "content": "x"});
    for (template, request, status) in [
        (messages, post_json(messages, as_bob.clone()), 403),
        (messages, post_json(messages, into_theirs.to_string()), 404),
        (
            batch,
            post_json(batch, format!(r#"{{"messages":[{as_bob}]}}"#)),
            403,
        ),
        (
            batch,
            post_json(batch, json!({"messages": [into_theirs]}).to_string()),
            404,
        ),
        (
            query,
            post_json(query, r#"{"conversation_id":"theirs"}"#),
            404,
        ),
        (stream, get("/api/v1/conversations/theirs/stream"), 404),
        (
            conversations,
            post_json(conversations, r#"{"members":["bob"]}"#),
            403,
        ),
        (conversations, get("/api/v1/conversations?member=bob"), 403),
        (
            member,
            body_request(Method::PUT, "/api/v1/conversations/theirs/members/u", ""),
            403,
        ),
        (
            member,
            body_request(Method::DELETE, "/api/v1/conversations/theirs/members/u", ""),
            403,
        ),
        ("/metrics", get("/metrics"), 403),
        (
            one,
            body_request(Method::PATCH, &bobs, r#"{"content":"y"}"#),
            403,
        ),
        (one, body_request(Method::DELETE, &bobs, ""), 403),
        (
            one,
            body_request(Method::PATCH, &theirs, r#"{"content":"y"}"#),
            404,
        ),
        (one, body_request(Method::DELETE, &theirs, ""), 404),
        (
            record,
            body_request(Method::DELETE, "/api/v1/conversations/shared", ""),
            403,
        ),
        (
            trim,
            body_request(Method::DELETE, "/api/v1/conversations/shared/messages", ""),
            403,
        ),
        (
            trim,
            body_request(Method::DELETE, "/api/v1/conversations/theirs/messages", ""),
            404,
        ),
    ] {
        let method = request.method().clone();
        let answer = send(&secured_app, as_alice(request)).await;
        assert_eq!(answer.status.as_u16(), status, "{method} {template}");
        spec.check(template, &method, &answer);
    }

    // GET /health, healthy and then degraded.
    let answer = send(&app, get("/health")).await;
    assert_eq!(answer.status, StatusCode::OK);
    spec.check("/health", &Method::GET, &answer);
    store.handle.close().await.unwrap();
    let answer = send(&app, get("/health")).await;
    assert_eq!(answer.status, StatusCode::SERVICE_UNAVAILABLE);
    spec.check("/health", &Method::GET, &answer);
    // With the store closed, an insert is 503 unavailable with Retry-After.
    let body = json!({"conversation_id": "c", "from": "a", "content": "late"});
    let answer = send(&app, post_json(messages, body.to_string())).await;
    assert_eq!(answer.status, StatusCode::SERVICE_UNAVAILABLE);
    spec.check(messages, &Method::POST, &answer);

    spec.assert_every_operation_covered();
}

/// One request to each operation, each the same for every server it is sent to: for answers
/// that do not depend on the request (429, 401).
fn one_request_per_operation() -> Vec<(&'static str, Request<Full<Bytes>>)> {
    let body_request = |method: Method, uri: &str, body: &'static str| {
        Request::builder()
            .method(method)
            .uri(uri)
            .header("content-type", "application/json")
            .body(Full::new(Bytes::from_static(body.as_bytes())))
            .unwrap()
    };
    let (record, member) = (
        "/api/v1/conversations/{conversation_id}",
        "/api/v1/conversations/{conversation_id}/members/{user_id}",
    );
    vec![
        ("/api/v1/messages", post_json("/api/v1/messages", "{}")),
        (
            "/api/v1/messages/batch",
            post_json("/api/v1/messages/batch", "{}"),
        ),
        ("/api/v1/messages/{msg_id}", get("/api/v1/messages/1")),
        (
            "/api/v1/messages/{msg_id}",
            body_request(Method::PATCH, "/api/v1/messages/1", "{}"),
        ),
        (
            "/api/v1/messages/{msg_id}",
            body_request(Method::DELETE, "/api/v1/messages/1", ""),
        ),
        (
            "/api/v1/conversations/{conversation_id}/messages",
            body_request(Method::DELETE, "/api/v1/conversations/c/messages", ""),
        ),
        ("/api/v1/query", post_json("/api/v1/query", "{}")),
        (
            "/api/v1/conversations/{conversation_id}/stream",
            get("/api/v1/conversations/c/stream"),
        ),
        (
            "/api/v1/conversations",
            post_json("/api/v1/conversations", "{}"),
        ),
        ("/api/v1/conversations", get("/api/v1/conversations")),
        (record, get("/api/v1/conversations/c")),
        (
            record,
            body_request(Method::PATCH, "/api/v1/conversations/c", "{}"),
        ),
        (
            record,
            body_request(Method::DELETE, "/api/v1/conversations/c", ""),
        ),
        (
            "/api/v1/conversations/{conversation_id}/members",
            get("/api/v1/conversations/c/members"),
        ),
        (
            member,
            body_request(Method::PUT, "/api/v1/conversations/c/members/u", ""),
        ),
        (
            member,
            body_request(Method::DELETE, "/api/v1/conversations/c/members/u", ""),
        ),
        ("/health", get("/health")),
        ("/metrics", get("/metrics")),
    ]
}

//! Requests through the whole stack, exactly as the server builds it, with `oneshot`.

use std::num::NonZeroUsize;
use std::time::Instant;

use bytes::Bytes;
use http::{Request, StatusCode};
use kalamdb_server::{build_app, Config};
use kalamdb_tests::{call, get, post_json, Answer, StalledBody, TestStore};
use serde_json::{json, Value};
use tower::ServiceExt;

fn message(conversation_id: &str, content: &str) -> String {
    json!({"conversation_id": conversation_id, "from": "user_alice", "content": content})
        .to_string()
}

#[tokio::test]
async fn insert_then_get_returns_the_message() {
    let store = TestStore::new(Config::default());
    let app = store.app();
    let body = json!({
        "conversation_id": "conv_123",
        "from": "user_alice",
        "content": "Hello",
        "metadata": {"role": "user"}
    });
    let before = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis() as u64;
    let inserted = call(&app, post_json("/api/v1/messages", body.to_string())).await;
    assert_eq!(inserted.status, StatusCode::OK, "{:?}", inserted.json);
    assert_eq!(inserted.headers["content-type"], "application/json");
    let id = inserted.json["msg_id"]
        .as_str()
        .expect("msg_id is a string");
    assert!(id.parse::<u64>().is_ok());
    assert_eq!(inserted.json["conversation_id"], "conv_123");
    let timestamp = inserted.json["timestamp"].as_u64().unwrap();
    assert!(timestamp >= before && timestamp < before + 60_000);
    assert_eq!(
        inserted.json.as_object().unwrap().len(),
        3,
        "only msg_id, conversation_id and timestamp"
    );

    let fetched = call(&app, get(&format!("/api/v1/messages/{id}"))).await;
    assert_eq!(fetched.status, StatusCode::OK);
    assert_eq!(
        fetched.json,
        json!({
            "msg_id": id,
            "conversation_id": "conv_123",
            "from": "user_alice",
            "timestamp": timestamp,
            "content": "Hello",
            "metadata": {"role": "user"}
        })
    );
}

#[tokio::test]
async fn metadata_defaults_to_an_empty_object() {
    let store = TestStore::new(Config::default());
    let app = store.app();
    let inserted = call(&app, post_json("/api/v1/messages", message("c", "hi"))).await;
    let id = inserted.json["msg_id"].as_str().unwrap();
    let fetched = call(&app, get(&format!("/api/v1/messages/{id}"))).await;
    assert_eq!(fetched.json["metadata"], json!({}));
}

#[tokio::test]
async fn ids_increase_with_each_insert() {
    let store = TestStore::new(Config::default());
    let app = store.app();
    let mut last = 0u64;
    for i in 0..20 {
        let answer = call(
            &app,
            post_json("/api/v1/messages", message("c", &i.to_string())),
        )
        .await;
        let id: u64 = answer.json["msg_id"].as_str().unwrap().parse().unwrap();
        assert!(id > last);
        last = id;
    }
}

/// Sends `body` and asserts the rejection; then checks nothing was stored.
async fn rejected(store: &TestStore, request: Request<http_body_util::Full<Bytes>>) -> Answer {
    let answer = call(&store.app(), request).await;
    assert!(
        answer.status.is_client_error(),
        "{}: {:?}",
        answer.status,
        answer.json
    );
    assert_eq!(answer.headers["content-type"], "application/json");
    assert!(!answer.error_message().is_empty());
    assert!(store.is_empty(), "a rejected request stored something");
    answer
}

#[tokio::test]
async fn bad_input_is_a_clear_json_error_and_stores_nothing() {
    let mut config = Config::default();
    config.limits.max_message_size = NonZeroUsize::new(16).unwrap();
    config.limits.max_metadata_size = 32;
    let store = TestStore::new(config);

    // (body, status, code, words the message must contain)
    let cases: Vec<(Value, StatusCode, &str, &str)> = vec![
        (
            json!({"from": "a", "content": "x"}),
            StatusCode::BAD_REQUEST,
            "validation_failed",
            "conversation_id",
        ),
        (
            json!({"conversation_id": "c", "from": "a"}),
            StatusCode::BAD_REQUEST,
            "validation_failed",
            "content",
        ),
        (
            json!({"conversationId": "c", "from": "a", "content": "x"}),
            StatusCode::BAD_REQUEST,
            "validation_failed",
            "conversationId",
        ),
        (
            json!({"conversation_id": "c", "from": "a", "content": "x", "extra": 1}),
            StatusCode::BAD_REQUEST,
            "validation_failed",
            "extra",
        ),
        (
            json!({"conversation_id": 5, "from": "a", "content": "x"}),
            StatusCode::BAD_REQUEST,
            "validation_failed",
            "conversation_id",
        ),
        (
            json!({"conversation_id": "", "from": "a", "content": "x"}),
            StatusCode::BAD_REQUEST,
            "validation_failed",
            "conversation_id must not be empty",
        ),
        (
            json!({"conversation_id": "c".repeat(256), "from": "a", "content": "x"}),
            StatusCode::BAD_REQUEST,
            "validation_failed",
            "255",
        ),
        (
            json!({"conversation_id": "c\u{1}", "from": "a", "content": "x"}),
            StatusCode::BAD_REQUEST,
            "validation_failed",
            "control",
        ),
        (
            json!({"conversation_id": "c", "from": "", "content": "x"}),
            StatusCode::BAD_REQUEST,
            "validation_failed",
            "from",
        ),
        (
            json!({"conversation_id": "c", "from": "a\nb", "content": "x"}),
            StatusCode::BAD_REQUEST,
            "validation_failed",
            "from",
        ),
        (
            json!({"conversation_id": "c", "from": "a", "content": ""}),
            StatusCode::BAD_REQUEST,
            "validation_failed",
            "content must not be empty",
        ),
        (
            json!({"conversation_id": "c", "from": "a", "content": "x".repeat(17)}),
            StatusCode::PAYLOAD_TOO_LARGE,
            "payload_too_large",
            "16 bytes",
        ),
        (
            json!({"conversation_id": "c", "from": "a", "content": "x", "metadata": "role"}),
            StatusCode::BAD_REQUEST,
            "validation_failed",
            "metadata",
        ),
        (
            json!({"conversation_id": "c", "from": "a", "content": "x", "metadata": [1]}),
            StatusCode::BAD_REQUEST,
            "validation_failed",
            "metadata",
        ),
        (
            json!({"conversation_id": "c", "from": "a", "content": "x", "metadata": null}),
            StatusCode::BAD_REQUEST,
            "validation_failed",
            "metadata",
        ),
        (
            json!({"conversation_id": "c", "from": "a", "content": "x", "metadata": {"k": "v".repeat(40)}}),
            StatusCode::PAYLOAD_TOO_LARGE,
            "payload_too_large",
            "metadata",
        ),
        (
            json!(["not", "an", "object"]),
            StatusCode::BAD_REQUEST,
            "validation_failed",
            "request body",
        ),
    ];
    for (body, status, code, words) in cases {
        let answer = rejected(&store, post_json("/api/v1/messages", body.to_string())).await;
        assert_eq!(answer.status, status, "{body}: {:?}", answer.json);
        assert_eq!(answer.error_code(), code, "{body}");
        assert!(
            answer.error_message().contains(words),
            "{body}: {:?} lacks {words:?}",
            answer.error_message()
        );
    }

    let trailing = format!("{} {{}}", message("c", "x"));
    for malformed in [
        "",
        "{",
        "{\"conversation_id\": }",
        "not json",
        trailing.as_str(),
    ]
    .map(str::to_owned)
    {
        let answer = rejected(&store, post_json("/api/v1/messages", malformed.clone())).await;
        assert_eq!(answer.status, StatusCode::BAD_REQUEST);
        assert_eq!(answer.error_code(), "invalid_json", "{malformed:?}");
    }

    // Invalid UTF-8 inside a string.
    let answer = rejected(
        &store,
        post_json(
            "/api/v1/messages",
            &b"{\"conversation_id\":\"\xff\",\"from\":\"a\",\"content\":\"x\"}"[..],
        ),
    )
    .await;
    assert_eq!(answer.error_code(), "invalid_json");
}

#[tokio::test]
async fn a_post_without_a_json_content_type_is_415() {
    let store = TestStore::new(Config::default());
    for content_type in [
        None,
        Some("text/plain"),
        Some("application/x-www-form-urlencoded"),
    ] {
        let mut request = Request::post("/api/v1/messages");
        if let Some(content_type) = content_type {
            request = request.header("content-type", content_type);
        }
        let request = request
            .body(http_body_util::Full::new(Bytes::from(message("c", "x"))))
            .unwrap();
        let answer = rejected(&store, request).await;
        assert_eq!(answer.status, StatusCode::UNSUPPORTED_MEDIA_TYPE);
        assert_eq!(answer.error_code(), "unsupported_media_type");
    }
}

#[tokio::test]
async fn a_body_declared_over_the_limit_is_413_before_it_is_read() {
    let mut config = Config::default();
    config.limits.max_message_size = NonZeroUsize::new(100).unwrap();
    config.limits.max_metadata_size = 100;
    config.middleware.body_limit.max_bytes = 6 * 200 + 4096;
    let store = TestStore::new(config);
    let mut request = post_json("/api/v1/messages", message("c", "x"));
    request
        .headers_mut()
        .insert("content-length", (1u64 << 40).into());
    let answer = rejected(&store, request).await;
    assert_eq!(answer.status, StatusCode::PAYLOAD_TOO_LARGE);
    assert_eq!(answer.error_code(), "payload_too_large");
    assert!(
        answer.error_message().contains("5296 bytes"),
        "{}",
        answer.error_message()
    );

    // The same limit applies to a body that streams past it without declaring its length.
    let big = message("c", &"x".repeat(6000));
    let answer = rejected(&store, post_json("/api/v1/messages", big)).await;
    assert_eq!(answer.status, StatusCode::PAYLOAD_TOO_LARGE);
}

#[tokio::test]
async fn a_maximum_size_message_fully_escaped_fits_the_default_body_limit() {
    let store = TestStore::new(Config::default());
    // Every byte of content written as a \u0001 escape: six bytes each.
    let content: String = "\u{1}".repeat(1024 * 1024);
    let body = message("c", &content);
    assert!(body.len() > 6 * 1024 * 1024);
    let answer = call(&store.app(), post_json("/api/v1/messages", body)).await;
    assert_eq!(answer.status, StatusCode::OK, "{:?}", answer.json);
}

#[tokio::test]
async fn unknown_paths_and_methods_are_json_errors() {
    let store = TestStore::new(Config::default());
    let app = store.app();

    let answer = call(&app, get("/api/v1/nothing")).await;
    assert_eq!(answer.status, StatusCode::NOT_FOUND);
    assert_eq!(answer.error_code(), "not_found");

    let answer = call(&app, get("/api/v1/messages")).await;
    assert_eq!(answer.status, StatusCode::METHOD_NOT_ALLOWED);
    assert_eq!(answer.error_code(), "method_not_allowed");
    assert_eq!(answer.headers["allow"], "POST");

    let answer = call(&app, post_json("/api/v1/messages/123", "{}")).await;
    assert_eq!(answer.status, StatusCode::METHOD_NOT_ALLOWED);
    assert_eq!(answer.headers["allow"], "GET, PATCH, DELETE");

    let request = Request::delete("/health")
        .body(http_body_util::Full::new(Bytes::new()))
        .unwrap();
    let answer = call(&app, request).await;
    assert_eq!(answer.status, StatusCode::METHOD_NOT_ALLOWED);
    assert_eq!(answer.headers["allow"], "GET");
}

#[tokio::test]
async fn get_of_an_unknown_or_malformed_id() {
    let store = TestStore::new(Config::default());
    let app = store.app();
    let answer = call(&app, get("/api/v1/messages/7262413471822004224")).await;
    assert_eq!(answer.status, StatusCode::NOT_FOUND);
    assert_eq!(answer.error_code(), "not_found");
    assert!(answer.error_message().contains("7262413471822004224"));

    for bad in ["abc", "-1", "1.5", "18446744073709551616"] {
        let answer = call(&app, get(&format!("/api/v1/messages/{bad}"))).await;
        assert_eq!(answer.status, StatusCode::BAD_REQUEST, "{bad}");
        assert_eq!(answer.error_code(), "validation_failed");
        assert!(answer.error_message().contains("msg_id"));
    }
}

#[tokio::test]
async fn health_reports_ok_with_version_and_uptime() {
    let store = TestStore::new(Config::default());
    let answer = call(&store.app(), get("/health")).await;
    assert_eq!(answer.status, StatusCode::OK);
    assert_eq!(answer.json["status"], "ok");
    assert_eq!(answer.json["storage"], "ok");
    assert_eq!(answer.json["version"], env!("CARGO_PKG_VERSION"));
    assert!(answer.json["uptime_secs"].is_u64());
}

#[tokio::test]
async fn health_is_degraded_once_the_store_is_closed() {
    let store = TestStore::new(Config::default());
    store.handle.close().await.unwrap();
    let answer = call(&store.app(), get("/health")).await;
    assert_eq!(answer.status, StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(answer.json["status"], "degraded");
    assert_eq!(answer.headers["retry-after"], "1");

    // Writes to a closed store are 503 `unavailable`, never a 500.
    let answer = call(
        &store.app(),
        post_json("/api/v1/messages", message("c", "x")),
    )
    .await;
    assert_eq!(answer.status, StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(answer.error_code(), "unavailable");
    assert!(answer.headers.contains_key("retry-after"));
}

#[tokio::test(start_paused = true)]
async fn the_timeout_covers_reading_the_body_and_answers_503_json() {
    let mut config = Config::default();
    config.middleware.timeout.request_timeout_ms = 250;
    let store = TestStore::new(config);
    let app = build_app::<StalledBody>(&store.config, store.handle.clone(), Instant::now());
    let request = Request::post("/api/v1/messages")
        .header("content-type", "application/json")
        .body(StalledBody)
        .unwrap();
    let answer = Answer::from_response(app.oneshot(request).await.unwrap()).await;
    assert_eq!(answer.status, StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(answer.error_code(), "timeout");
    assert_eq!(answer.headers["retry-after"], "1");
}

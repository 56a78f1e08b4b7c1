//! The middleware suite through the whole stack: built from `config.example.toml`, with every
//! layer that can be switched off switched off, and the order of the layers.

use std::time::Instant;

use bytes::Bytes;
use http::{Request, StatusCode};
use http_body_util::{Either, Full};
use kalamdb_server::{build_app, Config};
use kalamdb_tests::{
    call, from_peer, get, post_json, stalled_insert, Answer, MixedBody, TestStore,
};
use serde_json::json;
use tower::ServiceExt;

fn example_config() -> Config {
    Config::from_toml(
        include_str!("../../config.example.toml"),
        "config.example.toml",
    )
    .expect("the example parses")
}

fn from(peer: &str, request: Request<Full<Bytes>>) -> Request<Full<Bytes>> {
    from_peer(peer, request)
}

fn insert(content: &str) -> Request<Full<Bytes>> {
    post_json(
        "/api/v1/messages",
        json!({"conversation_id": "c", "from": "a", "content": content}).to_string(),
    )
}

#[tokio::test]
async fn the_example_config_serves_with_every_layer() {
    let store = TestStore::new(example_config());
    let app = store.app();
    let stored = call(&app, from("10.0.0.1", insert("hello"))).await;
    assert_eq!(stored.status, StatusCode::OK, "{:?}", stored.json);
    let id = stored.json["msg_id"].as_str().unwrap();
    let fetched = call(
        &app,
        from("10.0.0.1", get(&format!("/api/v1/messages/{id}"))),
    )
    .await;
    assert_eq!(fetched.json["content"], "hello");
    // request_id and timing put their headers on answers and refusals alike.
    for answer in [&stored, &fetched] {
        assert!(answer.headers.contains_key("x-request-id"));
        assert!(answer.headers["server-timing"]
            .to_str()
            .unwrap()
            .starts_with("app;dur="));
    }
    let missing = call(&app, from("10.0.0.1", get("/nowhere"))).await;
    assert_eq!(missing.error_code(), "not_found");
    assert!(missing.headers.contains_key("x-request-id"));
    assert!(missing.headers.contains_key("server-timing"));
    // A client's own id comes back.
    let mut request = from("10.0.0.1", get("/health"));
    request
        .headers_mut()
        .insert("x-request-id", "trace-77".parse().unwrap());
    assert_eq!(
        call(&app, request).await.headers["x-request-id"],
        "trace-77"
    );
}

#[tokio::test]
async fn every_optional_layer_can_be_switched_off() {
    let mut config = Config::default();
    let layers = &mut config.middleware;
    layers.request_log.enabled = false;
    layers.timing.enabled = false;
    layers.rate_limit.enabled = false;
    layers.concurrency.enabled = false;
    layers.cors.allowed_origins.clear();
    let store = TestStore::new(config);
    let app = store.app();
    let stored = call(&app, insert("plain")).await;
    assert_eq!(stored.status, StatusCode::OK);
    assert!(!stored.headers.contains_key("server-timing"));
    assert!(stored.headers.contains_key("x-request-id"));
    // Many quick requests and no limit in the way.
    for _ in 0..50 {
        assert_eq!(call(&app, get("/health")).await.status, StatusCode::OK);
    }
}

#[tokio::test]
async fn five_per_second_with_a_burst_of_five_refuses_the_rest_with_json() {
    let mut config = Config::default();
    config.middleware.rate_limit.enabled = true;
    config.middleware.rate_limit.requests_per_second = 5;
    config.middleware.rate_limit.burst = 5;
    let store = TestStore::new(config);
    let app = store.app();
    let mut statuses = Vec::new();
    let mut refusal = None;
    for _ in 0..8 {
        let answer = call(&app, from("10.0.0.9", get("/health"))).await;
        statuses.push(answer.status.as_u16());
        if answer.status == StatusCode::TOO_MANY_REQUESTS {
            refusal = Some(answer);
        }
    }
    assert_eq!(statuses, [200, 200, 200, 200, 200, 429, 429, 429]);
    let refusal = refusal.unwrap();
    assert_eq!(refusal.error_code(), "rate_limited");
    assert_eq!(refusal.headers["retry-after"], "1");
    assert!(refusal.headers.contains_key("x-request-id"));
    // Another client has its own allowance.
    let other = call(&app, from("10.0.0.10", get("/health"))).await;
    assert_eq!(other.status, StatusCode::OK);
}

fn health_from(peer: &str) -> Request<MixedBody> {
    from(peer, get("/health")).map(Either::Left)
}

#[tokio::test]
async fn a_rate_limited_request_is_refused_before_it_competes_for_a_slot() {
    let mut config = Config::default();
    config.middleware.concurrency.max_in_flight = 1;
    config.middleware.rate_limit.enabled = true;
    config.middleware.rate_limit.requests_per_second = 1;
    config.middleware.rate_limit.burst = 1;
    let store = TestStore::new(config);
    let app = build_app::<MixedBody>(&store.config, store.handle.clone(), Instant::now());

    // 10.0.0.1 spends its allowance on a request that holds the only slot.
    let held = tokio::spawn(app.clone().oneshot(stalled_insert("10.0.0.1")));
    // Let it get as far as reading its body.
    for _ in 0..10 {
        tokio::task::yield_now().await;
    }

    // The server is full: a client within its rate is shed...
    let shed =
        Answer::from_response(app.clone().oneshot(health_from("10.0.0.2")).await.unwrap()).await;
    assert_eq!(shed.status, StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(shed.error_code(), "overloaded");
    assert!(shed.headers.contains_key("retry-after"));
    // ...but a client over its rate is told so, never reaching the full concurrency limit.
    let limited =
        Answer::from_response(app.clone().oneshot(health_from("10.0.0.1")).await.unwrap()).await;
    assert_eq!(limited.status, StatusCode::TOO_MANY_REQUESTS);
    held.abort();
}

#[tokio::test(start_paused = true)]
async fn a_timed_out_request_gives_its_slot_back() {
    let mut config = Config::default();
    config.middleware.concurrency.max_in_flight = 1;
    config.middleware.timeout.request_timeout_ms = 250;
    let store = TestStore::new(config);
    let app = build_app::<MixedBody>(&store.config, store.handle.clone(), Instant::now());

    let timed_out = Answer::from_response(
        app.clone()
            .oneshot(stalled_insert("10.0.0.1"))
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(timed_out.status, StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(timed_out.error_code(), "timeout");
    // The health check reads the store on the store's own reader thread, which a paused clock
    // does not wait for: it would jump past the timeout while the read runs.
    tokio::time::resume();
    let next = Answer::from_response(app.oneshot(health_from("10.0.0.1")).await.unwrap()).await;
    assert_eq!(next.status, StatusCode::OK);
}

#[tokio::test]
async fn cors_headers_reach_refusals_too() {
    let mut config = Config::default();
    config.middleware.cors.allowed_origins = vec!["https://chat.example".into()];
    config.middleware.rate_limit.enabled = true;
    config.middleware.rate_limit.requests_per_second = 1;
    config.middleware.rate_limit.burst = 1;
    let store = TestStore::new(config);
    let app = store.app();
    let with_origin = || {
        let mut request = from("10.0.0.3", get("/health"));
        request
            .headers_mut()
            .insert("origin", "https://chat.example".parse().unwrap());
        request
    };
    assert_eq!(call(&app, with_origin()).await.status, StatusCode::OK);
    let refused = call(&app, with_origin()).await;
    assert_eq!(refused.status, StatusCode::TOO_MANY_REQUESTS);
    // A browser script can read the refusal and its Retry-After.
    assert_eq!(
        refused.headers["access-control-allow-origin"],
        "https://chat.example"
    );
    // A preflight is answered by CORS and spends no allowance (there is none left to spend).
    let preflight = Request::builder()
        .method("OPTIONS")
        .uri("/api/v1/messages")
        .header("origin", "https://chat.example")
        .header("access-control-request-method", "POST")
        .body(Full::new(Bytes::new()))
        .unwrap();
    let answer = call(&app, from("10.0.0.3", preflight)).await;
    assert_eq!(answer.status, StatusCode::OK);
    assert!(answer.headers.contains_key("access-control-allow-methods"));
}

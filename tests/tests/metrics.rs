//! `GET /metrics` through the whole stack: every figure an operator is promised, in the
//! Prometheus text format. One test: the recorder is process-wide.

use std::time::Instant;

use bytes::Bytes;
use http::{Request, StatusCode};
use http_body_util::{Either, Full};
use kalamdb_server::{build_app, Config};
use kalamdb_tests::{
    from_peer, get, post_json, sample, stalled_insert, Answer, MixedBody, TestStore,
};
use serde_json::json;
use tower::ServiceExt;

fn from(peer: &str, request: Request<Full<Bytes>>) -> Request<MixedBody> {
    from_peer(peer, request.map(Either::Left))
}

#[tokio::test]
async fn metrics_publish_requests_refusals_inserts_storage_the_cache_and_uptime() {
    let mut config = Config::default();
    config.middleware.rate_limit.enabled = true;
    config.middleware.rate_limit.requests_per_second = 1;
    config.middleware.rate_limit.burst = 100;
    config.middleware.concurrency.max_in_flight = 1;
    let store = TestStore::new(config);
    let app = build_app::<MixedBody>(&store.config, store.handle.clone(), Instant::now());
    let send = |request| async {
        Answer::from_response(app.clone().oneshot(request).await.unwrap()).await
    };

    for i in 0..3 {
        let body = json!({"conversation_id": "c", "from": "a", "content": format!("m{i}")});
        let answer = send(from(
            "10.0.0.1",
            post_json("/api/v1/messages", body.to_string()),
        ))
        .await;
        assert_eq!(answer.status, StatusCode::OK);
    }
    let answer = send(from("10.0.0.1", get("/api/v1/messages/12345"))).await;
    assert_eq!(answer.status, StatusCode::NOT_FOUND);

    // The latest page twice: read from RocksDB, then from the recent cache.
    for _ in 0..2 {
        let query = json!({"conversation_id": "c", "limit": 2, "order": "desc"});
        let answer = send(from(
            "10.0.0.6",
            post_json("/api/v1/query", query.to_string()),
        ))
        .await;
        assert_eq!(answer.status, StatusCode::OK);
    }

    // One request holds the only slot; another is shed.
    let held = tokio::spawn(app.clone().oneshot(stalled_insert("10.0.0.2")));
    for _ in 0..10 {
        tokio::task::yield_now().await;
    }
    let shed = send(from("10.0.0.3", get("/health"))).await;
    assert_eq!(shed.error_code(), "overloaded");
    held.abort();
    let _ = held.await;

    // A client over its rate.
    let mut statuses = Vec::new();
    for _ in 0..101 {
        statuses.push(send(from("10.0.0.4", get("/health"))).await.status);
    }
    assert!(statuses.contains(&StatusCode::TOO_MANY_REQUESTS));

    let response = app
        .clone()
        .oneshot(from("10.0.0.5", get("/metrics")))
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    assert_eq!(
        response.headers()["content-type"],
        "text/plain; version=0.0.4; charset=utf-8"
    );
    let bytes = http_body_util::BodyExt::collect(response.into_body())
        .await
        .unwrap()
        .to_bytes();
    let text = String::from_utf8(bytes.to_vec()).unwrap();
    let value = |name: &str, labels: &[&str]| {
        sample(&text, name, labels).unwrap_or_else(|| panic!("no {name} {labels:?} in:\n{text}"))
    };

    let inserts = [
        "route=\"/api/v1/messages\"",
        "method=\"POST\"",
        "status=\"200\"",
    ];
    assert!(value("kalamdb_http_requests_total", &inserts) >= 3.0);
    let misses = ["route=\"/api/v1/messages/{msg_id}\"", "status=\"404\""];
    assert!(value("kalamdb_http_requests_total", &misses) >= 1.0);
    assert!(
        value(
            "kalamdb_http_request_duration_seconds_bucket",
            &["route=\"/api/v1/messages\"", "le=\"+Inf\""]
        ) >= 3.0
    );
    assert!(
        value(
            "kalamdb_http_request_duration_seconds_count",
            &["route=\"/health\""]
        ) >= 1.0
    );
    // The /metrics request itself is in flight while it renders.
    assert!(value("kalamdb_http_requests_in_flight", &[]) >= 1.0);
    assert!(value("kalamdb_http_requests_rate_limited_total", &[]) >= 1.0);
    assert!(value("kalamdb_http_requests_shed_total", &[]) >= 1.0);
    assert!(value("kalamdb_messages_inserted_total", &[]) >= 3.0);
    for name in [
        "kalamdb_rocksdb_estimated_keys",
        "kalamdb_rocksdb_live_sst_bytes",
        "kalamdb_rocksdb_pending_compaction_bytes",
    ] {
        for cf in ["messages", "message_index", "idempotency", "meta"] {
            value(name, &[&format!("cf=\"{cf}\"")]);
        }
    }
    assert!(value("kalamdb_rocksdb_estimated_keys", &["cf=\"messages\""]) >= 3.0);
    // The inserts above are in the log until a flush, which nothing has asked for.
    assert!(value("kalamdb_rocksdb_wal_bytes", &[]) > 0.0);
    assert_eq!(value("kalamdb_recent_cache_misses_total", &[]), 1.0);
    assert_eq!(value("kalamdb_recent_cache_hits_total", &[]), 1.0);
    assert_eq!(value("kalamdb_recent_cache_evictions_total", &[]), 0.0);
    assert_eq!(value("kalamdb_recent_cache_entries", &[]), 1.0);
    assert!(value("kalamdb_recent_cache_bytes", &[]) > 0.0);
    assert_eq!(
        value("kalamdb_recent_cache_capacity_bytes", &[]),
        (32u64 << 20) as f64
    );
    assert!(value("kalamdb_process_uptime_seconds", &[]) >= 0.0);
}

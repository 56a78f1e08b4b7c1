//! `Idempotency-Key` through the whole stack: a retried insert returns the first answer and
//! stores nothing new, however many retries race; another message under the same key is 409.

use bytes::Bytes;
use http::Request;
use http_body_util::Full;
use kalamdb_server::Config;
use kalamdb_tests::{call, post_json, Answer, TestStore};
use serde_json::json;

fn keyed(key: &str, body: &str) -> Request<Full<Bytes>> {
    let mut request = post_json("/api/v1/messages", body.to_owned());
    request
        .headers_mut()
        .insert("idempotency-key", key.parse().unwrap());
    request
}

async fn count(store: &TestStore, conversation_id: &str) -> u64 {
    let body = json!({"conversation_id": conversation_id}).to_string();
    let page = call(&store.app(), post_json("/api/v1/query", body)).await;
    page.json["count"].as_u64().unwrap()
}

#[tokio::test]
async fn a_retry_gets_the_first_answer_and_stores_nothing() {
    let store = TestStore::new(Config::default());
    let app = store.app();
    let body = r#"{"conversation_id":"c","from":"a","content":"hi","metadata":{"x":1,"y":[1,2]}}"#;
    let first = call(&app, keyed("turn-1", body)).await;
    assert_eq!(first.status, 200);
    // The same message written differently (spacing, key order) is the same request.
    let reordered = r#"{ "metadata": {"y": [1, 2], "x": 1}, "content": "hi", "from": "a", "conversation_id": "c" }"#;
    for retry in [body, reordered] {
        let again = call(&app, keyed("turn-1", retry)).await;
        assert_eq!(again.status, 200);
        assert_eq!(again.json, first.json);
    }
    assert_eq!(count(&store, "c").await, 1);
    // Without a key, or with another, it is a new message.
    assert_ne!(
        call(&app, post_json("/api/v1/messages", body.to_owned()))
            .await
            .json,
        first.json
    );
    assert_ne!(call(&app, keyed("turn-2", body)).await.json, first.json);
    assert_eq!(count(&store, "c").await, 3);
}

#[tokio::test]
async fn another_message_under_a_used_key_is_409() {
    let store = TestStore::new(Config::default());
    let app = store.app();
    let first = call(
        &app,
        keyed("k", r#"{"conversation_id":"c","from":"a","content":"one"}"#),
    )
    .await;
    assert_eq!(first.status, 200);
    let conflict = call(
        &app,
        keyed("k", r#"{"conversation_id":"c","from":"a","content":"two"}"#),
    )
    .await;
    assert_eq!(conflict.status, 409);
    assert_eq!(conflict.error_code(), "idempotency_conflict");
    assert_eq!(count(&store, "c").await, 1);
}

#[tokio::test]
async fn a_malformed_key_is_400_and_stores_nothing() {
    let store = TestStore::new(Config::default());
    let body = r#"{"conversation_id":"c","from":"a","content":"x"}"#;
    let long = "k".repeat(256);
    for key in ["", long.as_str(), "tab\there"] {
        let mut request = post_json("/api/v1/messages", body.to_owned());
        request.headers_mut().insert(
            "idempotency-key",
            http::HeaderValue::from_bytes(key.as_bytes()).unwrap(),
        );
        let answer = call(&store.app(), request).await;
        assert_eq!(answer.status, 400, "{key:?}");
        assert!(answer.error_message().contains("Idempotency-Key"));
    }
    assert!(store.is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn racing_duplicates_store_one_message_and_all_get_its_id() {
    let store = TestStore::new(Config::default());
    let app = store.app();
    let body = r#"{"conversation_id":"race","from":"agent","content":"exactly once"}"#;
    let tasks: Vec<_> = (0..64)
        .map(|_| {
            let app = app.clone();
            tokio::spawn(async move { call(&app, keyed("same-key", body)).await })
        })
        .collect();
    let mut answers: Vec<Answer> = Vec::new();
    for task in tasks {
        answers.push(task.await.unwrap());
    }
    assert!(answers.iter().all(|a| a.status == 200));
    let first = &answers[0].json["msg_id"];
    assert!(answers.iter().all(|a| &a.json["msg_id"] == first));
    assert_eq!(count(&store, "race").await, 1);
}

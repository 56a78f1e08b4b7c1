//! Each endpoint alone, as a developer uses it: the service over a RocksStore in a temp dir,
//! called with `oneshot`, no layers around it.

use std::time::Instant;

use bytes::Bytes;
use http::{Request, StatusCode};
use http_body_util::Full;
use kalamdb_core::Limits;
use kalamdb_server::Config;
use kalamdb_services::{GetMessage, Health, InsertMessage, QueryLimits, QueryMessages};
use kalamdb_tests::{get, post_json, Answer, TestStore};
use serde_json::json;
use tower::ServiceExt;

#[tokio::test]
async fn endpoints_work_without_the_stack() {
    let store = TestStore::new(Config::default());
    let insert = InsertMessage::new(store.handle.clone(), Limits::default());
    let body = json!({"conversation_id": "c", "from": "a", "content": "alone"}).to_string();
    let answer = Answer::from_response(
        insert
            .oneshot(post_json("/api/v1/messages", body))
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(answer.status, StatusCode::OK);
    let id = answer.json["msg_id"].as_str().unwrap().to_owned();

    let response = GetMessage::new(store.handle.clone())
        .oneshot(get(&format!("/api/v1/messages/{id}")))
        .await
        .unwrap();
    let answer = Answer::from_response(response).await;
    assert_eq!(answer.json["content"], "alone");

    let query = QueryMessages::new(store.handle.clone(), QueryLimits::default());
    let body = json!({"conversation_id": "c"}).to_string();
    let answer = Answer::from_response(
        query
            .oneshot(post_json("/api/v1/query", body))
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(answer.json["count"], 1);

    let health = Health::new(store.handle.clone(), Instant::now());
    let answer = Answer::from_response(health.oneshot(get("/health")).await.unwrap()).await;
    assert_eq!(answer.json["status"], "ok");
}

#[tokio::test]
async fn an_endpoint_answers_errors_itself() {
    let store = TestStore::new(Config::default());
    let limits = Limits {
        max_message_size: 3,
        max_metadata_size: 64,
    };
    let insert = InsertMessage::new(store.handle.clone(), limits);
    let request = Request::post("/api/v1/messages")
        .header("content-type", "application/json")
        .body(Full::new(Bytes::from(
            json!({"conversation_id": "c", "from": "a", "content": "four"}).to_string(),
        )))
        .unwrap();
    let answer = Answer::from_response(insert.oneshot(request).await.unwrap()).await;
    assert_eq!(answer.status, StatusCode::PAYLOAD_TOO_LARGE);
    assert!(answer.error_message().contains("limit of 3 bytes"));
    assert!(store.is_empty());
}

//! Editing and deleting through the whole stack (`../shared/DESIGN.md` §6.2): live streams see
//! each change in its place, records and listings stay exact, an idempotency key outlives its
//! message but not its conversation, and a user deletes only what is theirs.

use bytes::Bytes;
use http::{Method, Request, StatusCode};
use http_body_util::Full;
use kalamdb_server::Config;
use kalamdb_tests::{call, get, post_json, EventStream, Sse, TestStore};
use serde_json::{json, Value};
use tower::ServiceExt;

fn request(method: Method, path: &str, body: &str) -> Request<Full<Bytes>> {
    Request::builder()
        .method(method)
        .uri(path)
        .header("content-type", "application/json")
        .body(Full::new(Bytes::from(body.to_owned())))
        .unwrap()
}

fn message(conversation_id: &str, content: &str) -> String {
    json!({"conversation_id": conversation_id, "from": "alice", "content": content}).to_string()
}

/// The next event that is not a heartbeat: `(id, event, data as JSON)`.
async fn next_event(stream: &mut EventStream) -> Option<(String, String, Value)> {
    loop {
        match stream.next().await? {
            Sse::Comment(_) => continue,
            Sse::Event { id, event, data } => {
                return Some((id, event, serde_json::from_str(&data).unwrap()))
            }
        }
    }
}

#[tokio::test]
async fn live_streams_get_each_edit_and_delete_in_its_place_and_end_with_the_conversation() {
    let store = TestStore::new(Config::default());
    let app = store.app();
    let mut ids = Vec::new();
    for content in ["one", "two", "three"] {
        let answer = call(
            &app,
            post_json("/api/v1/messages", message("live", content)),
        )
        .await;
        ids.push(answer.json["msg_id"].as_str().unwrap().to_owned());
    }
    let response = app
        .clone()
        .oneshot(get("/api/v1/conversations/live/stream"))
        .await
        .unwrap();
    let mut stream = EventStream::from_response(response);

    let path = format!("/api/v1/messages/{}", ids[0]);
    let answer = call(&app, request(Method::PATCH, &path, r#"{"content":"uno"}"#)).await;
    assert_eq!(answer.status, StatusCode::OK, "{:?}", answer.json);
    let (id, event, data) = next_event(&mut stream).await.unwrap();
    // No id line: a browser's Last-Event-ID stays the newest message's.
    assert_eq!((id.as_str(), event.as_str()), ("", "message_updated"));
    assert_eq!(data["content"], "uno");
    assert_eq!(data["msg_id"], ids[0].as_str());
    assert!(data["edited_at"].is_u64());

    let answer = call(&app, post_json("/api/v1/messages", message("live", "four"))).await;
    let four = answer.json["msg_id"].as_str().unwrap().to_owned();
    let (id, event, _) = next_event(&mut stream).await.unwrap();
    assert_eq!((id, event.as_str()), (four.clone(), "message"));

    let path = format!("/api/v1/messages/{}", ids[1]);
    let answer = call(&app, request(Method::DELETE, &path, "")).await;
    assert_eq!(answer.status, StatusCode::NO_CONTENT);
    let (id, event, data) = next_event(&mut stream).await.unwrap();
    assert_eq!((id.as_str(), event.as_str()), ("", "message_deleted"));
    assert_eq!(data, json!({"msg_id": ids[1], "conversation_id": "live"}));

    let path = format!("/api/v1/conversations/live/messages?before_msg_id={four}");
    let answer = call(&app, request(Method::DELETE, &path, "")).await;
    assert_eq!(answer.json, json!({"deleted": 2}));
    let (id, event, data) = next_event(&mut stream).await.unwrap();
    assert_eq!((id.as_str(), event.as_str()), ("", "messages_deleted"));
    assert_eq!(
        data,
        json!({"conversation_id": "live", "before_msg_id": four, "deleted": 2})
    );

    let answer = call(
        &app,
        request(Method::DELETE, "/api/v1/conversations/live", ""),
    )
    .await;
    assert_eq!(answer.status, StatusCode::NO_CONTENT);
    let (id, event, data) = next_event(&mut stream).await.unwrap();
    assert_eq!((id.as_str(), event.as_str()), ("", "conversation_deleted"));
    assert_eq!(data, json!({"conversation_id": "live"}));
    assert!(next_event(&mut stream).await.is_none(), "the stream ends");
}

#[tokio::test]
async fn counts_last_messages_and_the_listing_stay_exact_through_deletes() {
    let store = TestStore::new(Config::default());
    let app = store.app();
    let mut last = String::new();
    for (conversation, content) in [("a", "a1"), ("a", "a2"), ("b", "b1"), ("b", "b2")] {
        let answer = call(
            &app,
            post_json("/api/v1/messages", message(conversation, content)),
        )
        .await;
        last = answer.json["msg_id"].as_str().unwrap().to_owned();
    }
    let answer = call(
        &app,
        request(Method::DELETE, &format!("/api/v1/messages/{last}"), ""),
    )
    .await;
    assert_eq!(answer.status, StatusCode::NO_CONTENT);
    let b = call(&app, get("/api/v1/conversations/b")).await.json;
    assert_eq!(b["message_count"], 1);
    assert_eq!(b["last_message"]["content"], "b1");

    let answer = call(
        &app,
        request(Method::DELETE, "/api/v1/conversations/a/messages", ""),
    )
    .await;
    assert_eq!(answer.json, json!({"deleted": 2}));
    let a = call(&app, get("/api/v1/conversations/a")).await.json;
    assert_eq!(
        (&a["message_count"], &a["last_message"]),
        (&json!(0), &Value::Null)
    );

    let listing = call(&app, get("/api/v1/conversations")).await.json;
    let mut listed: Vec<_> = listing["conversations"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| {
            (
                c["conversation_id"].to_string(),
                c["message_count"].as_u64(),
            )
        })
        .collect();
    // Written in the same millisecond, their order is the ids'; the counts are what matters.
    listed.sort();
    assert_eq!(
        listed,
        [("\"a\"".into(), Some(0)), ("\"b\"".into(), Some(1))]
    );

    let answer = call(&app, request(Method::DELETE, "/api/v1/conversations/a", "")).await;
    assert_eq!(answer.status, StatusCode::NO_CONTENT);
    let listing = call(&app, get("/api/v1/conversations")).await.json;
    assert_eq!(listing["count"], 1);
    assert_eq!(listing["conversations"][0]["conversation_id"], "b");
    let query = call(
        &app,
        post_json("/api/v1/query", r#"{"conversation_id":"a"}"#),
    )
    .await;
    assert_eq!(query.json["count"], 0);
}

#[tokio::test]
async fn an_idempotency_key_outlives_its_message_but_not_its_conversation() {
    let store = TestStore::new(Config::default());
    let app = store.app();
    let keyed = |content: &str| {
        let mut request = post_json("/api/v1/messages", message("k", content));
        request
            .headers_mut()
            .insert("idempotency-key", "turn-1".parse().unwrap());
        request
    };
    let first = call(&app, keyed("hello")).await;
    let id = first.json["msg_id"].as_str().unwrap().to_owned();
    let path = format!("/api/v1/messages/{id}");
    assert_eq!(
        call(&app, request(Method::DELETE, &path, "")).await.status,
        StatusCode::NO_CONTENT
    );

    // A late retry is answered as the first time, and stores nothing.
    let retry = call(&app, keyed("hello")).await;
    assert_eq!((retry.status, &retry.json), (StatusCode::OK, &first.json));
    assert_eq!(call(&app, get(&path)).await.status, StatusCode::NOT_FOUND);
    let record = call(&app, get("/api/v1/conversations/k")).await.json;
    assert_eq!(record["message_count"], 0);
    assert_eq!(
        call(&app, keyed("other")).await.status,
        StatusCode::CONFLICT
    );

    // Deleting the conversation erases its keys: the retry is a new message.
    let answer = call(&app, request(Method::DELETE, "/api/v1/conversations/k", "")).await;
    assert_eq!(answer.status, StatusCode::NO_CONTENT);
    let again = call(&app, keyed("hello")).await;
    assert_eq!(again.status, StatusCode::OK);
    assert_ne!(again.json["msg_id"], first.json["msg_id"]);
    let record = call(&app, get("/api/v1/conversations/k")).await.json;
    assert_eq!(record["message_count"], 1);
}

#[tokio::test]
async fn a_user_edits_and_deletes_what_is_theirs_alone() {
    let secret_file =
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("fixtures/auth/hs256.secret");
    let mut config = Config::default();
    config.auth.enabled = true;
    config.auth.jwt = Some(kalamdb_middleware::auth::JwtConfig {
        secret_file: Some(secret_file.clone()),
        ..Default::default()
    });
    let store = TestStore::new(config);
    let app = store.app();
    let secret = std::fs::read(&secret_file).unwrap();
    let token = jsonwebtoken::encode(
        &jsonwebtoken::Header::default(),
        &json!({"sub": "alice", "exp": jsonwebtoken::get_current_timestamp() + 600}),
        &jsonwebtoken::EncodingKey::from_secret(&secret).unwrap(),
    )
    .unwrap();
    let as_alice = |mut request: Request<Full<Bytes>>| {
        let value = format!("Bearer {token}").parse().unwrap();
        request.headers_mut().insert("authorization", value);
        request
    };
    let answer = call(
        &app,
        as_alice(post_json("/api/v1/messages", message("mine", "draft"))),
    )
    .await;
    let path = format!(
        "/api/v1/messages/{}",
        answer.json["msg_id"].as_str().unwrap()
    );
    let answer = call(
        &app,
        as_alice(request(Method::PATCH, &path, r#"{"content":"final"}"#)),
    )
    .await;
    assert_eq!(answer.status, StatusCode::OK);
    assert_eq!(answer.json["content"], "final");
    let answer = call(&app, as_alice(request(Method::DELETE, &path, ""))).await;
    assert_eq!(answer.status, StatusCode::NO_CONTENT);
    let answer = call(
        &app,
        as_alice(request(Method::DELETE, "/api/v1/conversations/mine", "")),
    )
    .await;
    assert_eq!(answer.status, StatusCode::NO_CONTENT);
    let answer = call(&app, as_alice(get("/api/v1/conversations/mine"))).await;
    assert_eq!(answer.status, StatusCode::NOT_FOUND);
}

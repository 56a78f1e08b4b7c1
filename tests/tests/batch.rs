//! `POST /api/v1/messages/batch` through the whole stack: all or nothing, ids in input order,
//! and errors that name the index of the message at fault.

use kalamdb_server::Config;
use kalamdb_tests::{call, get, post_json, TestStore};
use serde_json::{json, Value};
use std::num::NonZeroUsize;

fn message(conversation_id: &str, content: &str) -> Value {
    json!({"conversation_id": conversation_id, "from": "agent", "content": content})
}

fn batch(messages: Vec<Value>) -> String {
    json!({ "messages": messages }).to_string()
}

const PATH: &str = "/api/v1/messages/batch";

#[tokio::test]
async fn a_batch_is_stored_with_ids_in_input_order() {
    let store = TestStore::new(Config::default());
    let app = store.app();
    let body = batch(vec![
        message("a", "one"),
        message("b", "two"),
        message("a", "three"),
    ]);
    let answer = call(&app, post_json(PATH, body)).await;
    assert_eq!(answer.status, 200, "{}", answer.json);
    let stored = answer.json["messages"].as_array().unwrap();
    assert_eq!(stored.len(), 3);
    let ids: Vec<u64> = stored
        .iter()
        .map(|m| m["msg_id"].as_str().unwrap().parse().unwrap())
        .collect();
    assert!(ids.windows(2).all(|w| w[0] < w[1]), "{ids:?}");
    assert_eq!(stored[1]["conversation_id"], "b");
    for (id, content) in ids.iter().zip(["one", "two", "three"]) {
        let read = call(&app, get(&format!("/api/v1/messages/{id}"))).await;
        assert_eq!(read.json["content"], content);
    }
    let page = call(
        &app,
        post_json("/api/v1/query", json!({"conversation_id": "a"}).to_string()),
    )
    .await;
    assert_eq!(page.json["count"], 2);
}

#[tokio::test]
async fn one_bad_message_refuses_the_whole_batch_naming_its_index() {
    let mut config = Config::default();
    config.limits.max_message_size = NonZeroUsize::new(8).unwrap();
    let store = TestStore::new(config);
    let app = store.app();
    let cases = [
        (
            vec![message("c", "ok"), message("c", "ok"), message("c", "")],
            400,
            "messages[2].content",
        ),
        (
            vec![message("c", "ok"), message("c", "far too long")],
            413,
            "messages[1].content",
        ),
        (
            vec![message("c", "ok"), message("bad\u{0}id", "ok")],
            400,
            "messages[1].conversation_id",
        ),
        (
            vec![json!({"conversation_id": "c", "from": "a", "content": "x", "colour": 1})],
            400,
            "messages[0]",
        ),
        (
            vec![message("c", "ok"), json!("not a message")],
            400,
            "messages[1]",
        ),
        (Vec::new(), 400, "messages"),
    ];
    for (messages, status, named) in cases {
        let answer = call(&app, post_json(PATH, batch(messages))).await;
        assert_eq!(answer.status.as_u16(), status, "{}", answer.json);
        assert!(
            answer.error_message().contains(named),
            "{named} not in {}",
            answer.json
        );
    }
    assert!(store.is_empty(), "a refused batch stored something");
}

#[tokio::test]
async fn a_batch_over_the_configured_maximum_is_refused() {
    let mut config = Config::default();
    config.limits.max_batch_messages = NonZeroUsize::new(3).unwrap();
    let store = TestStore::new(config);
    let app = store.app();
    let four = (0..4).map(|i| message("c", &i.to_string())).collect();
    let answer = call(&app, post_json(PATH, batch(four))).await;
    assert_eq!(answer.status, 400);
    assert_eq!(answer.error_code(), "validation_failed");
    assert!(answer.error_message().contains("limits.max_batch_messages"));
    assert!(store.is_empty());
    let three = (0..3).map(|i| message("c", &i.to_string())).collect();
    assert_eq!(call(&app, post_json(PATH, batch(three))).await.status, 200);
}

#[tokio::test]
async fn concurrent_batches_each_keep_their_order() {
    let store = TestStore::new(Config::default());
    let app = store.app();
    let tasks: Vec<_> = (0..8)
        .map(|t| {
            let app = app.clone();
            tokio::spawn(async move {
                let messages = (0..50)
                    .map(|i| message("shared", &format!("{t}-{i}")))
                    .collect();
                call(&app, post_json(PATH, batch(messages))).await
            })
        })
        .collect();
    let mut all = Vec::new();
    for task in tasks {
        let answer = task.await.unwrap();
        assert_eq!(answer.status, 200);
        let ids: Vec<u64> = answer.json["messages"]
            .as_array()
            .unwrap()
            .iter()
            .map(|m| m["msg_id"].as_str().unwrap().parse().unwrap())
            .collect();
        assert!(ids.windows(2).all(|w| w[0] < w[1]));
        all.extend(ids);
    }
    all.sort();
    all.dedup();
    assert_eq!(all.len(), 400);
}

#[tokio::test]
async fn only_post_is_allowed() {
    let store = TestStore::new(Config::default());
    let answer = call(&store.app(), get(PATH)).await;
    assert_eq!(answer.status, 405);
    assert_eq!(answer.headers["allow"], "POST");
}

/// Counts and last messages change with the batch that changes them, or not at all.
#[tokio::test]
async fn a_batch_moves_every_count_it_touches_or_none() {
    let mut config = Config::default();
    config.limits.max_message_size = NonZeroUsize::new(8).unwrap();
    let store = TestStore::new(config);
    let app = store.app();
    let record = |id: &'static str| {
        let app = app.clone();
        async move { call(&app, get(&format!("/api/v1/conversations/{id}"))).await }
    };
    let stored = call(
        &app,
        post_json(
            PATH,
            batch(vec![
                message("x", "1"),
                message("y", "2"),
                message("x", "3"),
            ]),
        ),
    )
    .await;
    assert_eq!(stored.status, 200);
    let refused = call(
        &app,
        post_json(
            PATH,
            batch(vec![message("x", "4"), message("y", "much too long")]),
        ),
    )
    .await;
    assert_eq!(refused.status, 413);
    let (x, y) = (record("x").await, record("y").await);
    assert_eq!(
        (
            x.json["message_count"].as_u64(),
            y.json["message_count"].as_u64()
        ),
        (Some(2), Some(1))
    );
    assert_eq!(x.json["last_message"]["content"], "3");
    assert_eq!(
        y.json["last_message"]["msg_id"],
        stored.json["messages"][1]["msg_id"]
    );
}

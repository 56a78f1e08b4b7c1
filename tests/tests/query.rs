//! `POST /api/v1/query` through the whole stack.

use std::collections::HashSet;
use std::num::NonZeroUsize;

use http::StatusCode;
use kalamdb_server::Config;
use kalamdb_tests::{call, post_json, Answer, TestStore};
use serde_json::{json, Value};

async fn insert(store: &TestStore, conversation_id: &str, content: &str) -> String {
    let body = json!({"conversation_id": conversation_id, "from": "a", "content": content});
    let answer = call(
        &store.app(),
        post_json("/api/v1/messages", body.to_string()),
    )
    .await;
    assert_eq!(answer.status, StatusCode::OK);
    answer.json["msg_id"].as_str().unwrap().to_owned()
}

async fn query(store: &TestStore, body: Value) -> Answer {
    call(&store.app(), post_json("/api/v1/query", body.to_string())).await
}

fn ids(answer: &Answer) -> Vec<String> {
    answer.json["messages"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["msg_id"].as_str().unwrap().to_owned())
        .collect()
}

#[tokio::test]
async fn pages_forward_and_backward_through_a_conversation() {
    let store = TestStore::new(Config::default());
    let mut all = Vec::new();
    for i in 0..7 {
        all.push(insert(&store, "conv", &format!("m{i}")).await);
        insert(&store, "conv2", "other conversation").await;
    }

    // Ascending, 3 at a time, with the cursor as since_msg_id.
    let mut seen = Vec::new();
    let mut cursor = Value::Null;
    loop {
        let answer = query(
            &store,
            json!({"conversation_id": "conv", "limit": 3, "since_msg_id": cursor}),
        )
        .await;
        assert_eq!(answer.status, StatusCode::OK, "{:?}", answer.json);
        let page = ids(&answer);
        assert_eq!(answer.json["count"], page.len());
        seen.extend(page.clone());
        if answer.json["has_more"] == false {
            assert_eq!(answer.json["next_cursor"], Value::Null);
            break;
        }
        assert_eq!(answer.json["next_cursor"], json!(page.last().unwrap()));
        cursor = answer.json["next_cursor"].clone();
    }
    assert_eq!(seen, all);

    // Descending, with before_msg_id, down to the first message.
    let mut seen = Vec::new();
    let mut cursor = Value::Null;
    loop {
        let answer = query(&store, json!({"conversation_id": "conv", "limit": 2, "order": "desc", "before_msg_id": cursor})).await;
        seen.extend(ids(&answer));
        if answer.json["has_more"] == false {
            break;
        }
        cursor = answer.json["next_cursor"].clone();
    }
    let mut reversed = all.clone();
    reversed.reverse();
    assert_eq!(seen, reversed);

    // The messages are the stored ones, complete.
    let answer = query(&store, json!({"conversation_id": "conv", "limit": 1})).await;
    let first = &answer.json["messages"][0];
    assert_eq!(first["content"], "m0");
    assert_eq!(first["from"], "a");
    assert_eq!(first["metadata"], json!({}));
}

#[tokio::test]
async fn a_window_takes_exclusive_bounds_as_strings_or_numbers() {
    let store = TestStore::new(Config::default());
    let mut all = Vec::new();
    for i in 0..5 {
        all.push(insert(&store, "c", &i.to_string()).await);
    }
    let since: u64 = all[0].parse().unwrap();
    let answer = query(
        &store,
        json!({"conversation_id": "c", "since_msg_id": since, "before_msg_id": all[4]}),
    )
    .await;
    assert_eq!(ids(&answer), all[1..4].to_vec());
    assert_eq!(answer.json["has_more"], false);
}

#[tokio::test]
async fn an_unknown_conversation_is_an_empty_page() {
    let store = TestStore::new(Config::default());
    insert(&store, "c", "x").await;
    let answer = query(&store, json!({"conversation_id": "nobody"})).await;
    assert_eq!(answer.status, StatusCode::OK);
    assert_eq!(
        answer.json,
        json!({"messages": [], "count": 0, "has_more": false, "next_cursor": null})
    );
}

#[tokio::test]
async fn limit_defaults_and_its_maximum_is_allowed() {
    let mut config = Config::default();
    config.limits.default_query_limit = NonZeroUsize::new(2).unwrap();
    config.limits.max_query_limit = NonZeroUsize::new(4).unwrap();
    let store = TestStore::new(config);
    for i in 0..5 {
        insert(&store, "c", &i.to_string()).await;
    }
    let answer = query(&store, json!({"conversation_id": "c"})).await;
    assert_eq!(answer.json["count"], 2);
    let answer = query(&store, json!({"conversation_id": "c", "limit": 4})).await;
    assert_eq!(answer.json["count"], 4);
    assert_eq!(answer.json["has_more"], true);
}

#[tokio::test]
async fn whole_numbers_written_with_a_fraction_are_accepted() {
    // JSON Schema's `integer`, which docs/openapi.yaml uses, admits `4.0`.
    let store = TestStore::new(Config::default());
    for i in 0..5 {
        insert(&store, "c", &i.to_string()).await;
    }
    let answer = query(
        &store,
        json!({"conversation_id": "c", "limit": 4.0, "since_msg_id": 0.0}),
    )
    .await;
    assert_eq!(answer.status, StatusCode::OK, "{}", answer.json);
    assert_eq!(answer.json["count"], 4);
    assert_eq!(answer.json["has_more"], true);
}

#[tokio::test]
async fn invalid_queries_are_400s_naming_the_field() {
    let store = TestStore::new(Config::default());
    for (body, field) in [
        (json!({"limit": 5}), "conversation_id"),
        (json!({"conversation_id": ""}), "conversation_id"),
        (json!({"conversation_id": "c\u{0}"}), "conversation_id"),
        (json!({"conversation_id": "c", "limit": 0}), "limit"),
        (json!({"conversation_id": "c", "limit": 1001}), "limit"),
        (json!({"conversation_id": "c", "limit": -1}), "limit"),
        (json!({"conversation_id": "c", "limit": "ten"}), "limit"),
        (json!({"conversation_id": "c", "limit": 2.5}), "limit"),
        (json!({"conversation_id": "c", "limit": 1001.0}), "limit"),
        (json!({"conversation_id": "c", "order": "up"}), "order"),
        (
            json!({"conversation_id": "c", "since_msg_id": -1}),
            "since_msg_id",
        ),
        (
            json!({"conversation_id": "c", "since_msg_id": "abc"}),
            "since_msg_id",
        ),
        (
            json!({"conversation_id": "c", "before_msg_id": 1.5}),
            "before_msg_id",
        ),
        (
            json!({"conversation_id": "c", "before_msg_id": "18446744073709551616"}),
            "before_msg_id",
        ),
        // Past 2^53 a number with a fraction may not hold the digits written: ids go as strings.
        (
            json!({"conversation_id": "c", "before_msg_id": 7262413471822004224.0}),
            "before_msg_id",
        ),
        (json!({"conversation_id": "c", "cursor": "1"}), "cursor"),
    ] {
        let answer = query(&store, body.clone()).await;
        assert_eq!(answer.status, StatusCode::BAD_REQUEST, "{body}");
        assert_eq!(answer.error_code(), "validation_failed", "{body}");
        assert!(
            answer.error_message().contains(field),
            "{body}: {}",
            answer.error_message()
        );
    }
    let answer = call(&store.app(), post_json("/api/v1/query", "{")).await;
    assert_eq!(answer.error_code(), "invalid_json");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn paging_visits_every_message_once_while_inserts_continue() {
    let store = TestStore::new(Config::default());
    const TOTAL: usize = 300;
    let writer = {
        let app = store.app();
        tokio::spawn(async move {
            let mut written = Vec::new();
            for i in 0..TOTAL {
                let body =
                    json!({"conversation_id": "live", "from": "w", "content": i.to_string()});
                let answer = call(&app, post_json("/api/v1/messages", body.to_string())).await;
                written.push(answer.json["msg_id"].as_str().unwrap().to_owned());
            }
            written
        })
    };

    // Poll with since_msg_id, as a reader following a live conversation does.
    let mut seen: Vec<String> = Vec::new();
    let mut cursor = Value::Null;
    while seen.len() < TOTAL {
        let answer = query(
            &store,
            json!({"conversation_id": "live", "limit": 7, "since_msg_id": cursor}),
        )
        .await;
        let page = ids(&answer);
        if let Some(last) = page.last() {
            cursor = json!(last);
        }
        seen.extend(page);
        tokio::task::yield_now().await;
    }
    let written = writer.await.unwrap();
    assert_eq!(seen, written, "every message exactly once, in id order");
    let unique: HashSet<_> = seen.iter().collect();
    assert_eq!(unique.len(), TOTAL);
}

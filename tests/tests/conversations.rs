//! Conversations through the whole stack on RocksDB: the listing while messages arrive, records
//! that follow every write path, and members' listings.

use std::collections::{BTreeSet, HashMap};

use kalamdb_server::Config;
use kalamdb_tests::{call, get, post_json, TestStore};
use serde_json::{json, Value};

fn ids(page: &Value) -> Vec<String> {
    page["conversations"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["conversation_id"].as_str().unwrap().to_owned())
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_listing_visits_every_conversation_while_messages_arrive() {
    let store = TestStore::new(Config::default());
    let app = store.app();
    let existing: BTreeSet<String> = (0..120).map(|i| format!("room-{i:03}")).collect();
    for id in &existing {
        let body = json!({"conversation_id": id, "from": "w", "content": "first"});
        assert_eq!(
            call(&app, post_json("/api/v1/messages", body.to_string()))
                .await
                .status,
            200
        );
    }
    // A writer lifts old conversations to the top and starts new ones while the reader pages.
    let writer = {
        let app = app.clone();
        tokio::spawn(async move {
            for n in 0..400u32 {
                let id = if n.is_multiple_of(4) {
                    format!("new-{n}")
                } else {
                    format!("room-{:03}", (n * 53) % 120)
                };
                let body = json!({"conversation_id": id, "from": "w", "content": n.to_string()});
                let answer = call(&app, post_json("/api/v1/messages", body.to_string())).await;
                assert_eq!(answer.status, 200);
            }
        })
    };
    let mut seen: HashMap<String, usize> = HashMap::new();
    let mut path = "/api/v1/conversations?limit=5".to_owned();
    let mut pages = 0;
    loop {
        let page = call(&app, get(&path)).await;
        assert_eq!(page.status, 200, "{}", page.json);
        for id in ids(&page.json) {
            *seen.entry(id).or_default() += 1;
        }
        pages += 1;
        assert!(pages < 1000, "the listing does not end");
        match page.json["next_cursor"].as_str() {
            Some(cursor) => path = format!("/api/v1/conversations?limit=5&cursor={cursor}"),
            None => break,
        }
        tokio::task::yield_now().await;
    }
    writer.await.unwrap();
    let missed: Vec<_> = existing
        .iter()
        .filter(|id| !seen.contains_key(*id))
        .collect();
    assert!(missed.is_empty(), "missed {missed:?}");
    assert!(seen.values().all(|&n| n <= 2), "{seen:?}");
}

#[tokio::test]
async fn records_follow_single_batch_and_idempotent_writes() {
    let store = TestStore::new(Config::default());
    let app = store.app();
    let message = |content: &str| json!({"conversation_id": "r", "from": "a", "content": content});
    call(
        &app,
        post_json("/api/v1/messages", message("one").to_string()),
    )
    .await;
    let batch = json!({"messages": [message("two"), message("three")]});
    call(&app, post_json("/api/v1/messages/batch", batch.to_string())).await;
    for _ in 0..2 {
        let mut request = post_json("/api/v1/messages", message("four").to_string());
        request
            .headers_mut()
            .insert("idempotency-key", "k-1".parse().unwrap());
        assert_eq!(call(&app, request).await.status, 200);
    }
    let record = call(&app, get("/api/v1/conversations/r")).await;
    assert_eq!(
        record.json["message_count"], 4,
        "a retry stores nothing, so counts nothing"
    );
    assert_eq!(record.json["last_message"]["content"], "four");
    assert_eq!(
        record.json["updated_at"],
        record.json["last_message"]["timestamp"]
    );
}

#[tokio::test]
async fn a_member_sees_only_their_conversations_newest_first() {
    let store = TestStore::new(Config::default());
    let app = store.app();
    for (id, members) in [
        ("a", vec!["alice"]),
        ("b", vec!["alice", "bob"]),
        ("c", vec!["bob"]),
    ] {
        let body = json!({"conversation_id": id, "members": members});
        assert_eq!(
            call(&app, post_json("/api/v1/conversations", body.to_string()))
                .await
                .status,
            201
        );
    }
    let body = json!({"conversation_id": "a", "from": "alice", "content": "hi"});
    call(&app, post_json("/api/v1/messages", body.to_string())).await;
    let alice = call(&app, get("/api/v1/conversations?member=alice")).await;
    assert_eq!(ids(&alice.json), ["a", "b"]);
    assert_eq!(alice.json["conversations"][0]["message_count"], 1);
    let bob = call(&app, get("/api/v1/conversations?member=bob")).await;
    assert_eq!(ids(&bob.json).len(), 2);
    assert!(!ids(&bob.json).contains(&"a".to_owned()));
}

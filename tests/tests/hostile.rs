//! Hostile input through the whole stack: whatever the bytes, the answer is a clean JSON 4xx
//! (or a 200 for a valid request), never a 500 and never a panic, and nothing invalid is stored.

use bytes::Bytes;
use http::Request;
use http_body_util::Full;
use kalamdb_server::Config;
use kalamdb_tests::{call, post_json, Answer, TestStore};
use proptest::prelude::*;
use serde_json::{json, Value};

const POSTS: [&str; 3] = [
    "/api/v1/messages",
    "/api/v1/messages/batch",
    "/api/v1/query",
];

fn post_bytes(path: &str, body: Vec<u8>) -> Request<Full<Bytes>> {
    Request::post(path)
        .header("content-type", "application/json")
        .body(Full::new(Bytes::from(body)))
        .unwrap()
}

fn assert_clean(answer: &Answer, what: &str) {
    let status = answer.status.as_u16();
    assert!(
        matches!(status, 200 | 400 | 413 | 415),
        "{what}: status {status}, {}",
        answer.json
    );
    if status != 200 {
        assert!(!answer.error_code().is_empty(), "{what}: {}", answer.json);
        assert!(
            !answer.error_message().is_empty(),
            "{what}: {}",
            answer.json
        );
    }
}

async fn refused(store: &TestStore, path: &str, body: &str) -> Answer {
    let answer = call(&store.app(), post_json(path, body.to_owned())).await;
    assert_eq!(answer.status, 400, "{body}: {}", answer.json);
    answer
}

#[tokio::test]
async fn deep_metadata_is_refused_naming_the_field() {
    let store = TestStore::new(Config::default());
    let deep = format!(
        r#"{{"conversation_id":"c","from":"a","content":"x","metadata":{{"k":{}1{}}}}}"#,
        "[".repeat(40),
        "]".repeat(40)
    );
    let answer = refused(&store, "/api/v1/messages", &deep).await;
    assert_eq!(answer.error_code(), "validation_failed");
    assert!(
        answer.error_message().contains("metadata"),
        "{}",
        answer.json
    );
    assert!(answer.error_message().contains("deeper"), "{}", answer.json);
    // Far past serde_json's own recursion limit too.
    let deeper = deep
        .replace(&"[".repeat(40), &"[".repeat(5000))
        .replace(&"]".repeat(40), &"]".repeat(5000));
    refused(&store, "/api/v1/messages", &deeper).await;
    assert!(store.is_empty());
}

#[tokio::test]
async fn duplicate_keys_are_refused() {
    let store = TestStore::new(Config::default());
    let answer = refused(
        &store,
        "/api/v1/messages",
        r#"{"conversation_id":"c","from":"a","content":"x","content":"y"}"#,
    )
    .await;
    assert!(
        answer.error_message().contains("content"),
        "{}",
        answer.json
    );
    let answer = refused(
        &store,
        "/api/v1/messages",
        r#"{"conversation_id":"c","from":"a","content":"x","metadata":{"role":"user","role":"admin"}}"#,
    )
    .await;
    assert!(answer.error_message().contains("role"), "{}", answer.json);
    refused(
        &store,
        "/api/v1/query",
        r#"{"conversation_id":"c","limit":1,"limit":2}"#,
    )
    .await;
    assert!(store.is_empty());
}

#[tokio::test]
async fn huge_numbers_are_refused() {
    let store = TestStore::new(Config::default());
    for (path, body) in [
        (
            "/api/v1/messages",
            r#"{"conversation_id":"c","from":"a","content":"x","metadata":{"n":1e400}}"#,
        ),
        ("/api/v1/query", r#"{"conversation_id":"c","limit":1e30}"#),
        (
            "/api/v1/query",
            r#"{"conversation_id":"c","limit":18446744073709551616}"#,
        ),
        (
            "/api/v1/query",
            r#"{"conversation_id":"c","since_msg_id":"99999999999999999999999"}"#,
        ),
        (
            "/api/v1/query",
            r#"{"conversation_id":"c","before_msg_id":-1}"#,
        ),
    ] {
        refused(&store, path, body).await;
    }
    assert!(store.is_empty());
}

#[tokio::test]
async fn invalid_utf8_is_refused() {
    let store = TestStore::new(Config::default());
    let mut body = br#"{"conversation_id":"c","from":"a","content":""#.to_vec();
    body.extend_from_slice(&[0xff, 0xfe, 0x80]);
    body.extend_from_slice(br#""}"#);
    for path in POSTS {
        let answer = call(&store.app(), post_bytes(path, body.clone())).await;
        assert_eq!(answer.status, 400, "{path}: {}", answer.json);
    }
    assert!(store.is_empty());
}

/// JSON shaped like the API's requests, with the right and wrong keys and every kind of value.
fn json_value() -> impl Strategy<Value = Value> {
    let leaf = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::Bool),
        any::<i64>().prop_map(|n| json!(n)),
        any::<u64>().prop_map(|n| json!(n)),
        any::<f64>().prop_map(|n| json!(n)),
        "\\PC{0,12}".prop_map(Value::String),
        Just(Value::String("x".repeat(300))),
    ];
    leaf.prop_recursive(4, 32, 6, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..4).prop_map(Value::Array),
            prop::collection::btree_map(key(), inner, 0..6)
                .prop_map(|m| Value::Object(m.into_iter().collect())),
        ]
    })
}

fn key() -> impl Strategy<Value = String> {
    prop_oneof![
        Just("conversation_id".to_owned()),
        Just("from".to_owned()),
        Just("content".to_owned()),
        Just("metadata".to_owned()),
        Just("messages".to_owned()),
        Just("limit".to_owned()),
        Just("order".to_owned()),
        Just("since_msg_id".to_owned()),
        Just("before_msg_id".to_owned()),
        "[a-z_]{1,8}",
    ]
}

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap()
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(200))]

    #[test]
    fn arbitrary_bytes_get_a_clean_answer(body in prop::collection::vec(any::<u8>(), 0..256)) {
        let store = TestStore::new(Config::default());
        runtime().block_on(async {
            for path in POSTS {
                let answer = call(&store.app(), post_bytes(path, body.clone())).await;
                assert_clean(&answer, path);
            }
        });
    }

    #[test]
    fn arbitrary_json_gets_a_clean_answer(value in json_value()) {
        let store = TestStore::new(Config::default());
        let body = serde_json::to_vec(&value).unwrap();
        runtime().block_on(async {
            for path in POSTS {
                let answer = call(&store.app(), post_bytes(path, body.clone())).await;
                assert_clean(&answer, &format!("{path} {value}"));
            }
        });
    }
}

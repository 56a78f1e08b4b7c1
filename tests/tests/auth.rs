//! Identity and access through the whole stack (`../shared/DESIGN.md` §6.3): every rule, with
//! an API key, an admin key and users' HS256 tokens.

use std::path::PathBuf;

use bytes::Bytes;
use http::{Method, Request, StatusCode};
use http_body_util::Full;
use jsonwebtoken::{encode, EncodingKey, Header};
use kalamdb_middleware::auth::{ApiKey, JwtConfig, Role};
use kalamdb_server::Config;
use kalamdb_tests::{call, Answer, EventStream, TestStore};
use serde_json::{json, Value};
use sha2::{Digest, Sha256};
use tower::ServiceExt;

const SERVICE: &str = "svc-0c8e5f2a71d94b3e";
const ADMIN: &str = "adm-5d2b9e0f13c84a67";

fn fixture(name: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("fixtures/auth")
        .join(name)
}

fn auth_config() -> Config {
    let mut config = Config::default();
    config.auth.enabled = true;
    config.auth.api_keys = [
        ("backend", SERVICE, Role::Service),
        ("ops", ADMIN, Role::Admin),
    ]
    .into_iter()
    .map(|(name, key, role)| ApiKey {
        name: name.into(),
        sha256: format!("{:x}", Sha256::digest(key)),
        role,
    })
    .collect();
    config.auth.jwt = Some(JwtConfig {
        secret_file: Some(fixture("hs256.secret")),
        ..JwtConfig::default()
    });
    config
}

/// An HS256 token for `user`, valid for ten minutes.
fn user(user: &str) -> String {
    let secret = std::fs::read(fixture("hs256.secret")).unwrap();
    let claims = json!({"sub": user, "exp": jsonwebtoken::get_current_timestamp() + 600});
    encode(
        &Header::default(),
        &claims,
        &EncodingKey::from_secret(&secret).unwrap(),
    )
    .unwrap()
}

fn request(
    method: Method,
    path: &str,
    token: Option<&str>,
    body: Option<Value>,
) -> Request<Full<Bytes>> {
    let mut builder = Request::builder().method(method).uri(path);
    if let Some(token) = token {
        builder = builder.header("authorization", format!("Bearer {token}"));
    }
    let body = match body {
        Some(json) => {
            builder = builder.header("content-type", "application/json");
            Bytes::from(json.to_string())
        }
        None => Bytes::new(),
    };
    builder.body(Full::new(body)).unwrap()
}

/// The stack as the server builds it, with a token to call it with.
struct Client<'a> {
    store: &'a TestStore,
    token: String,
}

impl Client<'_> {
    async fn send(&self, method: Method, path: &str, body: Option<Value>) -> Answer {
        call(
            &self.store.app(),
            request(method, path, Some(&self.token), body),
        )
        .await
    }

    async fn get(&self, path: &str) -> Answer {
        self.send(Method::GET, path, None).await
    }

    async fn post(&self, path: &str, body: Value) -> Answer {
        self.send(Method::POST, path, Some(body)).await
    }

    async fn say(&self, conversation: &str, from: &str, content: &str) -> Answer {
        let body = json!({"conversation_id": conversation, "from": from, "content": content});
        self.post("/api/v1/messages", body).await
    }

    async fn query(&self, conversation: &str) -> Answer {
        self.post("/api/v1/query", json!({"conversation_id": conversation}))
            .await
    }
}

fn client<'a>(store: &'a TestStore, token: &str) -> Client<'a> {
    Client {
        store,
        token: token.to_owned(),
    }
}

/// What a user may not see: the same 404 as a conversation that does not exist.
fn assert_hidden(answer: &Answer, conversation: &str) {
    assert_eq!(answer.status, StatusCode::NOT_FOUND, "{}", answer.json);
    assert_eq!(answer.error_code(), "not_found");
    assert_eq!(
        answer.error_message(),
        format!("no conversation has id {conversation:?}")
    );
}

fn assert_forbidden(answer: &Answer, words: &str) {
    assert_eq!(answer.status, StatusCode::FORBIDDEN, "{}", answer.json);
    assert_eq!(answer.error_code(), "forbidden");
    assert!(answer.error_message().contains(words), "{}", answer.json);
}

/// A conversation `team` of alice and bob, made with the service key, with one message.
async fn team(store: &TestStore) -> String {
    let service = client(store, SERVICE);
    let created = service
        .post(
            "/api/v1/conversations",
            json!({"conversation_id": "team", "members": ["alice", "bob"]}),
        )
        .await;
    assert_eq!(created.status, StatusCode::CREATED, "{}", created.json);
    // A service key posts with any `from`.
    let posted = service.say("team", "bot", "welcome").await;
    assert_eq!(posted.status, StatusCode::OK, "{}", posted.json);
    posted.json["msg_id"].as_str().unwrap().to_owned()
}

#[tokio::test]
async fn a_user_reaches_only_conversations_they_are_a_member_of() {
    let store = TestStore::new(auth_config());
    let msg_id = team(&store).await;
    let (alice, carol) = (
        client(&store, &user("alice")),
        client(&store, &user("carol")),
    );

    let page = alice.query("team").await;
    assert_eq!(
        (page.status, page.json["count"].clone()),
        (StatusCode::OK, json!(1))
    );
    let message = format!("/api/v1/messages/{msg_id}");
    assert_eq!(alice.get(&message).await.status, StatusCode::OK);
    assert_eq!(
        alice.get("/api/v1/conversations/team").await.status,
        StatusCode::OK
    );
    let members = alice.get("/api/v1/conversations/team/members").await;
    assert_eq!(members.json, json!({"members": ["alice", "bob"]}));
    let patched = alice
        .send(
            Method::PATCH,
            "/api/v1/conversations/team",
            Some(json!({"title": "Team"})),
        )
        .await;
    assert_eq!(patched.status, StatusCode::OK);

    // Carol gets, for every read and write of it, what she gets for a conversation that does
    // not exist.
    for conversation in ["team", "ghost"] {
        assert_hidden(&carol.query(conversation).await, conversation);
        let path = format!("/api/v1/conversations/{conversation}");
        assert_hidden(&carol.get(&path).await, conversation);
        assert_hidden(&carol.get(&format!("{path}/members")).await, conversation);
        let patch = carol
            .send(Method::PATCH, &path, Some(json!({"title": "mine"})))
            .await;
        assert_hidden(&patch, conversation);
        assert_hidden(&carol.get(&format!("{path}/stream")).await, conversation);
    }
    // The message answers as one that does not exist.
    let hidden = carol.get(&message).await;
    assert_eq!(hidden.status, StatusCode::NOT_FOUND);
    assert_eq!(
        hidden.error_message(),
        format!("no message has id {msg_id}")
    );
    assert_hidden(&carol.say("team", "carol", "let me in").await, "team");
    // Nothing Carol did changed the conversation.
    let record = alice.get("/api/v1/conversations/team").await;
    assert_eq!(record.json["title"], "Team");
    assert_eq!(record.json["message_count"], 1);
}

#[tokio::test]
async fn a_user_posts_only_as_themselves_and_their_first_message_makes_them_its_member() {
    let store = TestStore::new(auth_config());
    team(&store).await;
    let (alice, bob) = (client(&store, &user("alice")), client(&store, &user("bob")));

    assert_forbidden(
        &alice.say("team", "bob", "I am bob").await,
        "from must be your own",
    );
    assert_eq!(
        alice.say("team", "alice", "hi").await.status,
        StatusCode::OK
    );

    // A conversation that does not exist is created by the message, with its author as its
    // only member; nobody else can then write to it.
    assert_eq!(
        alice.say("diary", "alice", "dear diary").await.status,
        StatusCode::OK
    );
    let service = client(&store, SERVICE);
    let members = service.get("/api/v1/conversations/diary/members").await;
    assert_eq!(members.json, json!({"members": ["alice"]}));
    assert_hidden(&bob.say("diary", "bob", "peek").await, "diary");
    assert_eq!(service.query("diary").await.json["count"], 1);
    assert_eq!(service.query("team").await.json["count"], 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_users_racing_for_a_new_conversation_leave_it_one_member() {
    let store = TestStore::new(auth_config());
    let (alice, bob) = (client(&store, &user("alice")), client(&store, &user("bob")));
    for round in 0..40 {
        let id = format!("race-{round}");
        let (a, b) = tokio::join!(alice.say(&id, "alice", "mine"), bob.say(&id, "bob", "mine"));
        let mut statuses = [a.status.as_u16(), b.status.as_u16()];
        statuses.sort_unstable();
        assert_eq!(statuses, [200, 404], "{id}: {} {}", a.json, b.json);
        let winner = if a.status == StatusCode::OK {
            "alice"
        } else {
            "bob"
        };
        let members = client(&store, SERVICE)
            .get(&format!("/api/v1/conversations/{id}/members"))
            .await;
        assert_eq!(members.json, json!({"members": [winner]}), "{id}");
    }
}

#[tokio::test]
async fn users_cannot_add_members_and_may_only_leave() {
    let store = TestStore::new(auth_config());
    team(&store).await;
    let alice = client(&store, &user("alice"));

    let put = alice
        .send(Method::PUT, "/api/v1/conversations/team/members/dave", None)
        .await;
    assert_forbidden(&put, "cannot add members");
    let create = alice
        .post(
            "/api/v1/conversations",
            json!({"conversation_id": "club", "members": ["alice", "dave"]}),
        )
        .await;
    assert_forbidden(&create, "cannot add members");
    let remove_bob = alice
        .send(
            Method::DELETE,
            "/api/v1/conversations/team/members/bob",
            None,
        )
        .await;
    assert_forbidden(&remove_bob, "cannot add members or remove anyone");

    // Creating one makes her its only member, whether or not she names herself.
    for (id, members) in [("club", json!([])), ("book", json!(["alice"]))] {
        let created = alice
            .post(
                "/api/v1/conversations",
                json!({"conversation_id": id, "members": members}),
            )
            .await;
        assert_eq!(created.status, StatusCode::CREATED, "{}", created.json);
        let listed = alice
            .get(&format!("/api/v1/conversations/{id}/members"))
            .await;
        assert_eq!(listed.json, json!({"members": ["alice"]}));
    }

    let leave = alice
        .send(
            Method::DELETE,
            "/api/v1/conversations/team/members/alice",
            None,
        )
        .await;
    assert_eq!(leave.status, StatusCode::NO_CONTENT);
    assert_hidden(&alice.query("team").await, "team");
    // Gone is gone: leaving again is a 404 like any conversation she is not in.
    let again = alice
        .send(
            Method::DELETE,
            "/api/v1/conversations/team/members/alice",
            None,
        )
        .await;
    assert_hidden(&again, "team");
    let members = client(&store, SERVICE)
        .get("/api/v1/conversations/team/members")
        .await;
    assert_eq!(members.json, json!({"members": ["bob"]}));
}

#[tokio::test]
async fn a_user_lists_their_own_conversations() {
    let store = TestStore::new(auth_config());
    team(&store).await;
    let (alice, carol) = (
        client(&store, &user("alice")),
        client(&store, &user("carol")),
    );
    assert_eq!(
        carol.say("carols", "carol", "mine").await.status,
        StatusCode::OK
    );

    let ids = |answer: &Answer| -> Vec<String> {
        answer.json["conversations"]
            .as_array()
            .unwrap()
            .iter()
            .map(|c| c["conversation_id"].as_str().unwrap().to_owned())
            .collect()
    };
    assert_eq!(ids(&alice.get("/api/v1/conversations").await), ["team"]);
    assert_eq!(
        ids(&alice.get("/api/v1/conversations?member=alice").await),
        ["team"]
    );
    assert_eq!(ids(&carol.get("/api/v1/conversations").await), ["carols"]);
    assert_forbidden(
        &alice.get("/api/v1/conversations?member=carol").await,
        "only its own user's conversations",
    );
    // A key lists everything.
    let all = client(&store, SERVICE).get("/api/v1/conversations").await;
    assert_eq!(ids(&all).len(), 2);
}

#[tokio::test]
async fn a_batch_with_one_refused_message_is_refused_whole_naming_its_index() {
    let store = TestStore::new(auth_config());
    team(&store).await;
    let (alice, carol) = (
        client(&store, &user("alice")),
        client(&store, &user("carol")),
    );
    assert_eq!(
        carol.say("carols", "carol", "mine").await.status,
        StatusCode::OK
    );

    let batch = |messages: Value| json!({ "messages": messages });
    let as_bob = alice
        .post(
            "/api/v1/messages/batch",
            batch(json!([
                {"conversation_id": "team", "from": "alice", "content": "one"},
                {"conversation_id": "team", "from": "alice", "content": "two"},
                {"conversation_id": "team", "from": "bob", "content": "three"}
            ])),
        )
        .await;
    assert_forbidden(&as_bob, "messages[2].from");

    let into_carols = alice
        .post(
            "/api/v1/messages/batch",
            batch(json!([
                {"conversation_id": "fresh", "from": "alice", "content": "one"},
                {"conversation_id": "carols", "from": "alice", "content": "two"}
            ])),
        )
        .await;
    assert_eq!(
        into_carols.status,
        StatusCode::NOT_FOUND,
        "{}",
        into_carols.json
    );
    assert_eq!(
        into_carols.error_message(),
        "messages[1]: no conversation has id \"carols\""
    );
    // Neither refusal stored anything, nor created the new conversation.
    let service = client(&store, SERVICE);
    assert_eq!(service.query("team").await.json["count"], 1);
    assert_eq!(service.query("carols").await.json["count"], 1);
    assert_eq!(
        service.get("/api/v1/conversations/fresh").await.status,
        StatusCode::NOT_FOUND
    );

    let fine = alice
        .post(
            "/api/v1/messages/batch",
            batch(json!([
                {"conversation_id": "fresh", "from": "alice", "content": "one"},
                {"conversation_id": "team", "from": "alice", "content": "two"}
            ])),
        )
        .await;
    assert_eq!(fine.status, StatusCode::OK, "{}", fine.json);
    assert_eq!(service.query("team").await.json["count"], 2);
}

#[tokio::test]
async fn a_users_retry_with_an_idempotency_key_stores_once() {
    let store = TestStore::new(auth_config());
    let token = user("alice");
    let send = || {
        let mut request = request(
            Method::POST,
            "/api/v1/messages",
            Some(&token),
            Some(json!({"conversation_id": "notes", "from": "alice", "content": "once"})),
        );
        request
            .headers_mut()
            .insert("idempotency-key", "note-1".parse().unwrap());
        request
    };
    let first = call(&store.app(), send()).await;
    let retry = call(&store.app(), send()).await;
    assert_eq!(first.status, StatusCode::OK, "{}", first.json);
    assert_eq!(first.json, retry.json);
    assert_eq!(client(&store, &token).query("notes").await.json["count"], 1);
}

#[tokio::test]
async fn the_stream_takes_its_token_in_the_query_and_no_other_path_does() {
    let store = TestStore::new(auth_config());
    team(&store).await;
    let stream = |token: &str| {
        let path = format!("/api/v1/conversations/team/stream?access_token={token}");
        store.app().oneshot(request(Method::GET, &path, None, None))
    };
    let response = stream(&user("bob")).await.unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    let mut events = EventStream::from_response(response);
    let alice = client(&store, &user("alice"));
    assert_eq!(
        alice.say("team", "alice", "live").await.status,
        StatusCode::OK
    );
    let (_, message) = events.next_message().await.expect("an event");
    assert_eq!(message["content"], "live");

    let refused = Answer::from_response(stream(&user("carol")).await.unwrap()).await;
    assert_hidden(&refused, "team");
    let elsewhere = format!("/api/v1/conversations/team?access_token={}", user("alice"));
    let answer = call(&store.app(), request(Method::GET, &elsewhere, None, None)).await;
    assert_eq!(answer.status, StatusCode::UNAUTHORIZED);
}

#[tokio::test]
async fn health_is_open_metrics_are_for_admins_and_anonymous_writes_store_nothing() {
    let store = TestStore::new(auth_config());
    let app = store.app();
    let anonymous = |method: Method, path: &str, body: Option<Value>| {
        call(&app, request(method, path, None, body))
    };
    assert_eq!(
        anonymous(Method::GET, "/health", None).await.status,
        StatusCode::OK
    );
    let metrics = anonymous(Method::GET, "/metrics", None).await;
    assert_eq!(metrics.status, StatusCode::UNAUTHORIZED);
    assert_eq!(metrics.headers["www-authenticate"], "Bearer");
    assert_eq!(
        client(&store, SERVICE).get("/metrics").await.status,
        StatusCode::FORBIDDEN
    );
    assert_eq!(
        client(&store, ADMIN).get("/metrics").await.status,
        StatusCode::OK
    );

    let body = json!({"conversation_id": "c", "from": "x", "content": "spam"});
    for _ in 0..20 {
        let answer = anonymous(Method::POST, "/api/v1/messages", Some(body.clone())).await;
        assert_eq!(answer.status, StatusCode::UNAUTHORIZED);
        assert_eq!(answer.error_code(), "unauthorized");
    }
    assert!(store.is_empty());

    let mut public = auth_config();
    public.auth.public_metrics = true;
    let store = TestStore::new(public);
    let metrics = call(&store.app(), request(Method::GET, "/metrics", None, None)).await;
    assert_eq!(metrics.status, StatusCode::OK);
}

#[tokio::test]
async fn the_rate_limit_keyed_by_principal_keeps_an_allowance_per_user() {
    let mut config = auth_config();
    config.middleware.rate_limit.enabled = true;
    config.middleware.rate_limit.key = kalamdb_middleware::rate_limit::KeyBy::Principal;
    config.middleware.rate_limit.requests_per_second = 1;
    config.middleware.rate_limit.burst = 2;
    let store = TestStore::new(config);
    // One app: each build has its own limiter.
    let app = store.app();
    let (alice, bob) = (user("alice"), user("bob"));
    let list = |token: &str| {
        let request = request(Method::GET, "/api/v1/conversations", Some(token), None);
        call(&app, request)
    };
    let mut statuses = Vec::new();
    for _ in 0..3 {
        statuses.push(list(&alice).await.status.as_u16());
    }
    assert_eq!(statuses, [200, 200, 429]);
    // Bob, from the same address, has his own allowance.
    assert_eq!(list(&bob).await.status, StatusCode::OK);
}

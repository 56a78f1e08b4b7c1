//! Live streams across servers (`../shared/DESIGN.md` §7): two servers in this process on one
//! PostgreSQL (the tests start their own), each with its own store handle and app. A stream on
//! one hears what is written through the other, through a bus that loses and reorders events
//! on purpose, and through the real `postgres` bus (`LISTEN`/`NOTIFY`): every message arrives
//! once, in id order, none missed.

use std::num::NonZeroU64;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Instant;

use bytes::Bytes;
use http::StatusCode;
use http_body_util::Full;
use kalamdb_core::bus::{Bus, Event};
use kalamdb_core::StoreHandle;
use kalamdb_postgres::testing::TestPostgres;
use kalamdb_postgres::PgStore;
use kalamdb_server::config::{BackendSetting, BusSetting};
use kalamdb_server::{build_app, Config};
use kalamdb_tests::{call, get, post_json, EventStream};
use serde_json::json;
use tower::ServiceExt;

/// The configuration of a server of several: PostgreSQL, a bus, and streams that read the store
/// after 200 ms of silence.
fn config() -> Config {
    let mut config = Config::default();
    config.storage.backend = BackendSetting::Postgres;
    config.live.bus = BusSetting::Nats;
    config.live.resync_ms = NonZeroU64::new(200).unwrap();
    config
}

/// Two servers' handles on one fresh schema. Opening blocks on the store's own runtime, so it
/// leaves the test's worker thread first.
fn two_servers(pg: &TestPostgres) -> (StoreHandle, StoreHandle) {
    let options = pg.options();
    let open = || {
        let store = tokio::task::block_in_place(|| PgStore::open(&options).unwrap());
        StoreHandle::new(Arc::new(store))
    };
    (open(), open())
}

/// A bus straight into another server's handle that drops every third event and holds every
/// other one back until the next has gone by.
struct Lossy {
    to: StoreHandle,
    seen: AtomicUsize,
    held: Mutex<Option<Event>>,
    dropped: AtomicUsize,
}

impl Bus for Lossy {
    fn publish(&self, event: Event) {
        let n = self.seen.fetch_add(1, Ordering::SeqCst);
        let mut held = self.held.lock().unwrap();
        match n % 3 {
            0 => {
                self.dropped.fetch_add(1, Ordering::SeqCst);
            }
            1 => *held = Some(event),
            _ => {
                self.to.deliver(&event);
                if let Some(late) = held.take() {
                    self.to.deliver(&late);
                }
            }
        }
    }
}

async fn insert(
    app: &(impl tower::Service<
        http::Request<Full<Bytes>>,
        Response = http::Response<kalamdb_http::ResponseBody>,
        Error = std::convert::Infallible,
    > + Clone),
    conversation_id: &str,
    n: usize,
) -> String {
    let body = json!({"conversation_id": conversation_id, "from": "a", "content": format!("m{n}")});
    let answer = call(app, post_json("/api/v1/messages", body.to_string())).await;
    assert_eq!(answer.status, StatusCode::OK, "{:?}", answer.json);
    answer.json["msg_id"].as_str().unwrap().to_owned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stream_misses_nothing_when_the_bus_loses_and_reorders() {
    let pg = TestPostgres::shared();
    let (a, b) = two_servers(pg);
    let lossy = Arc::new(Lossy {
        to: b.clone(),
        seen: AtomicUsize::new(0),
        held: Mutex::new(None),
        dropped: AtomicUsize::new(0),
    });
    assert!(a.attach_bus(lossy.clone()));
    let config = config();
    let app_a = build_app::<Full<Bytes>>(&config, a.clone(), Instant::now());
    let app_b = build_app::<Full<Bytes>>(&config, b.clone(), Instant::now());
    let response = app_b
        .clone()
        .oneshot(get("/api/v1/conversations/shared/stream"))
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    let mut stream = EventStream::from_response(response);
    let mut written = Vec::new();
    for n in 0..30 {
        written.push(insert(&app_a, "shared", n).await);
    }
    let heard = stream.messages(written.len()).await;
    let ids: Vec<String> = heard.iter().map(|(id, _)| id.clone()).collect();
    assert_eq!(ids, written, "every message once, in order");
    assert_eq!(heard[29].1["content"], "m29");
    assert!(
        lossy.dropped.load(Ordering::SeqCst) >= 10,
        "the bus did lose"
    );
    // The last event may be the one dropped: the resync alone brings it.
    let last = insert(&app_a, "shared", 30).await;
    let _ = insert(&app_a, "other", 0).await;
    let next = stream.messages(1).await;
    assert_eq!(next[0].0, last);
    // The record is one truth for both servers.
    let record = call(&app_b, get("/api/v1/conversations/shared")).await;
    assert_eq!(record.json["message_count"], 31);
    a.close().await.unwrap();
    b.close().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_postgres_bus_carries_messages_and_changes_between_servers() {
    let pg = TestPostgres::shared();
    let (a, b) = two_servers(pg);
    let channel = format!("live_{}", std::process::id());
    a.attach_bus(kalamdb_postgres::bus::PgBus::start(
        &pg.url,
        &channel,
        a.clone(),
    ));
    b.attach_bus(kalamdb_postgres::bus::PgBus::start(
        &pg.url,
        &channel,
        b.clone(),
    ));
    let mut config = config();
    config.live.bus = BusSetting::Postgres;
    // Long enough that only the bus can bring the messages in time.
    config.live.resync_ms = NonZeroU64::new(600_000).unwrap();
    let app_a = build_app::<Full<Bytes>>(&config, a.clone(), Instant::now());
    let app_b = build_app::<Full<Bytes>>(&config, b.clone(), Instant::now());
    // Let both LISTENs take hold.
    tokio::time::sleep(std::time::Duration::from_millis(500)).await;
    let response = app_b
        .clone()
        .oneshot(get("/api/v1/conversations/room/stream"))
        .await
        .unwrap();
    let mut stream = EventStream::from_response(response);
    let mut written = Vec::new();
    for n in 0..20 {
        written.push(insert(&app_a, "room", n).await);
    }
    let heard = stream.messages(written.len()).await;
    assert_eq!(
        heard.iter().map(|(id, _)| id.clone()).collect::<Vec<_>>(),
        written
    );
    // A delete through server A reaches server B's stream as an event.
    let deleted = call(
        &app_a,
        http::Request::delete(format!("/api/v1/messages/{}", written[0]))
            .body(Full::new(Bytes::new()))
            .unwrap(),
    )
    .await;
    assert_eq!(deleted.status, StatusCode::NO_CONTENT, "{:?}", deleted.json);
    loop {
        match stream.next().await.expect("the stream goes on") {
            kalamdb_tests::Sse::Event { event, data, .. } if event == "message_deleted" => {
                assert!(data.contains(&written[0]), "{data}");
                break;
            }
            _ => continue,
        }
    }
    a.close().await.unwrap();
    b.close().await.unwrap();
}

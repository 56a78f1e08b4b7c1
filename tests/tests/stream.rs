//! `GET /api/v1/conversations/{conversation_id}/stream`: order under concurrent writers, resume
//! with `Last-Event-ID` and `since_msg_id`, a slow reader, many subscribers, the subscriber cap,
//! heartbeats past the request timeout, and the end of every stream at shutdown.

use std::collections::BTreeSet;
use std::num::{NonZeroU64, NonZeroUsize};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http::{Request, StatusCode};
use http_body_util::{BodyExt, Full};
use kalamdb_server::{build_app, Config, Drain};
use kalamdb_tests::{
    call, get, http1_client, insert_many, post_json, sample, Answer, EventStream, HttpClient, Sse,
    TestServer, TestStore,
};
use serde_json::json;
use tower::ServiceExt;

fn stream_path(conversation_id: &str) -> String {
    format!("/api/v1/conversations/{conversation_id}/stream")
}

async fn insert_one(
    client: &HttpClient,
    url: &str,
    conversation_id: &str,
    content: &str,
) -> String {
    let body = json!({"conversation_id": conversation_id, "from": "w", "content": content});
    let request = Request::post(url)
        .header("content-type", "application/json")
        .body(Full::new(Bytes::from(body.to_string())))
        .unwrap();
    let answer = Answer::from_response(client.request(request).await.unwrap()).await;
    assert_eq!(answer.status, StatusCode::OK, "{:?}", answer.json);
    answer.json["msg_id"].as_str().unwrap().to_owned()
}

async fn metrics_text(client: &HttpClient, server: &TestServer) -> String {
    let request = Request::get(server.url("/metrics"))
        .body(Full::new(Bytes::new()))
        .unwrap();
    let body = client.request(request).await.unwrap().into_body();
    String::from_utf8(body.collect().await.unwrap().to_bytes().to_vec()).unwrap()
}

fn ids(events: &[(String, serde_json::Value)]) -> Vec<String> {
    events.iter().map(|(id, _)| id.clone()).collect()
}

fn as_numbers(ids: &[String]) -> Vec<u64> {
    ids.iter().map(|id| id.parse().unwrap()).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn events_arrive_in_order_while_eight_writers_insert() {
    const WRITERS: usize = 8;
    const EACH: usize = 40;
    let server = TestServer::start(Config::default()).await;
    let client = http1_client();
    let mut live = EventStream::open(&client, &server, &stream_path("busy"), None)
        .await
        .unwrap();
    assert_eq!(live.headers["content-type"], "text/event-stream");
    assert_eq!(live.headers["cache-control"], "no-cache");

    let url = server.url("/api/v1/messages");
    let writers: Vec<_> = (0..WRITERS)
        .map(|w| {
            let (client, url) = (client.clone(), url.clone());
            tokio::spawn(async move {
                let mut acked = Vec::new();
                for i in 0..EACH {
                    acked.push(insert_one(&client, &url, "busy", &format!("{w}:{i}")).await);
                    // Noise in another conversation must not reach this stream.
                    if i % 10 == 0 {
                        insert_one(&client, &url, "elsewhere", "noise").await;
                    }
                }
                acked
            })
        })
        .collect();
    // A second subscriber joins while the writers run and asks for everything from the start:
    // its backlog and the live feed must meet with nothing missed or repeated.
    tokio::time::sleep(Duration::from_millis(20)).await;
    let from_start = format!("{}?since_msg_id=0", stream_path("busy"));
    let mut joiner = EventStream::open(&client, &server, &from_start, None)
        .await
        .unwrap();

    let mut acked = BTreeSet::new();
    for writer in writers {
        acked.extend(as_numbers(&writer.await.unwrap()));
    }
    for stream in [&mut live, &mut joiner] {
        let events = stream.messages(WRITERS * EACH).await;
        let got = as_numbers(&ids(&events));
        assert!(got.windows(2).all(|w| w[0] < w[1]), "ids strictly increase");
        assert_eq!(got.into_iter().collect::<BTreeSet<_>>(), acked);
        // Each writer's messages in the order that writer sent them.
        for w in 0..WRITERS {
            let mine: Vec<String> = events
                .iter()
                .map(|(_, m)| m["content"].as_str().unwrap().to_owned())
                .filter(|c| c.starts_with(&format!("{w}:")))
                .collect();
            let expected: Vec<String> = (0..EACH).map(|i| format!("{w}:{i}")).collect();
            assert_eq!(mine, expected);
        }
        assert!(events.iter().all(|(_, m)| m["conversation_id"] == "busy"));
    }
    // Nothing repeated after them either: the next event is the next message.
    let last = insert_one(&client, &url, "busy", "last").await;
    assert_eq!(live.next_message().await.unwrap().0, last);
    assert_eq!(joiner.next_message().await.unwrap().0, last);
    assert_eq!(server.shutdown().await, Drain::Complete);
}

#[tokio::test]
async fn an_event_carries_exactly_the_stored_message() {
    let server = TestServer::start(Config::default()).await;
    let client = http1_client();
    let mut stream = EventStream::open(&client, &server, &stream_path("conv%20one%2Fa"), None)
        .await
        .unwrap();
    let body = json!({
        "conversation_id": "conv one/a",
        "from": "alice",
        "content": "line one\nline two \u{1F600}",
        "metadata": {"role": "user", "n": [1, 2]}
    });
    let request = Request::post(server.url("/api/v1/messages"))
        .header("content-type", "application/json")
        .body(Full::new(Bytes::from(body.to_string())))
        .unwrap();
    let inserted = Answer::from_response(client.request(request).await.unwrap()).await;
    let id = inserted.json["msg_id"].as_str().unwrap();

    let (event_id, message) = stream.next_message().await.unwrap();
    assert_eq!(event_id, id);
    let request = Request::get(server.url(&format!("/api/v1/messages/{id}")))
        .body(Full::new(Bytes::new()))
        .unwrap();
    let fetched = Answer::from_response(client.request(request).await.unwrap()).await;
    assert_eq!(message, fetched.json);
    assert_eq!(message["content"], "line one\nline two \u{1F600}");
    server.shutdown().await;
}

#[tokio::test]
async fn a_reconnect_with_last_event_id_gets_exactly_what_was_missed() {
    let server = TestServer::start(Config::default()).await;
    let client = http1_client();
    let path = stream_path("resume");

    let mut first = EventStream::open(&client, &server, &path, None)
        .await
        .unwrap();
    let seen = insert_many(&client, &server, "resume", 5, 10).await;
    assert_eq!(ids(&first.messages(5).await), seen);
    drop(first);

    let missed = insert_many(&client, &server, "resume", 7, 10).await;
    let last_seen = seen.last().unwrap();
    let mut again = EventStream::open(&client, &server, &path, Some(last_seen))
        .await
        .unwrap();
    assert_eq!(
        ids(&again.messages(7).await),
        missed,
        "exactly what was missed"
    );
    let later = insert_many(&client, &server, "resume", 3, 10).await;
    assert_eq!(
        ids(&again.messages(3).await),
        later,
        "then live, with nothing repeated"
    );

    // The query parameter does the same, for a first connection; the header wins over it, as
    // a reconnecting EventSource keeps the URL it started with.
    let mut by_param = EventStream::open(
        &client,
        &server,
        &format!("{path}?since_msg_id={last_seen}"),
        None,
    )
    .await
    .unwrap();
    let expected: Vec<String> = missed.iter().chain(&later).cloned().collect();
    assert_eq!(ids(&by_param.messages(10).await), expected);
    let mut both = EventStream::open(
        &client,
        &server,
        &format!("{path}?since_msg_id={last_seen}"),
        Some(missed.last().unwrap()),
    )
    .await
    .unwrap();
    assert_eq!(ids(&both.messages(3).await), later);

    // Without an id, only what is stored after the stream opened.
    let mut fresh = EventStream::open(&client, &server, &path, None)
        .await
        .unwrap();
    let new = insert_many(&client, &server, "resume", 1, 10).await;
    assert_eq!(ids(&fresh.messages(1).await), new);
    server.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_slow_reader_still_receives_everything() {
    // Far more than the live channel, the stream's queue and the socket buffers hold, so the
    // stream must fall behind and catch up from the store.
    const COUNT: usize = 4000;
    let server = TestServer::start(Config::default()).await;
    let client = http1_client();
    let catch_ups = |text: &str| sample(text, "kalamdb_stream_catch_ups_total", &[]).unwrap_or(0.0);
    let before = catch_ups(&metrics_text(&client, &server).await);

    let mut slow = EventStream::open(&client, &server, &stream_path("slow"), None)
        .await
        .unwrap();
    // The reader reads nothing while every insert is acknowledged: it never holds up writers.
    let inserted = insert_many(&client, &server, "slow", COUNT, 4096).await;

    let mut received = Vec::with_capacity(COUNT);
    while received.len() < COUNT {
        let batch = slow.messages(100).await;
        received.extend(ids(&batch));
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
    assert_eq!(received, inserted, "every message, in order, once");
    let last = insert_many(&client, &server, "slow", 1, 10).await;
    assert_eq!(
        ids(&slow.messages(1).await),
        last,
        "and nothing after them twice"
    );
    let after = catch_ups(&metrics_text(&client, &server).await);
    assert!(after > before, "the stream caught up from the store");
    server.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn many_subscribers_on_one_conversation_each_get_every_message() {
    const SUBSCRIBERS: usize = 200;
    let server = TestServer::start(Config::default()).await;
    let client = http1_client();
    let mut streams = Vec::with_capacity(SUBSCRIBERS);
    for _ in 0..SUBSCRIBERS {
        streams.push(
            EventStream::open(&client, &server, &stream_path("crowd"), None)
                .await
                .unwrap(),
        );
    }
    let active = sample(
        &metrics_text(&client, &server).await,
        "kalamdb_streams_active",
        &[],
    )
    .unwrap();
    assert!(active >= SUBSCRIBERS as f64, "{active} active streams");

    let inserted = insert_many(&client, &server, "crowd", 50, 100).await;
    let readers: Vec<_> = streams
        .into_iter()
        .map(|mut stream| tokio::spawn(async move { ids(&stream.messages(50).await) }))
        .collect();
    for reader in readers {
        assert_eq!(reader.await.unwrap(), inserted);
    }
    server.shutdown().await;
}

#[tokio::test]
async fn past_max_subscribers_a_stream_is_refused_until_one_closes() {
    let mut config = Config::default();
    config.stream.max_subscribers = NonZeroUsize::new(2).unwrap();
    config.stream.heartbeat_ms = NonZeroU64::new(50).unwrap();
    let server = TestServer::start(config).await;
    let client = http1_client();
    let first = EventStream::open(&client, &server, &stream_path("a"), None)
        .await
        .unwrap();
    let _second = EventStream::open(&client, &server, &stream_path("b"), None)
        .await
        .unwrap();
    let Err(refused) = EventStream::open(&client, &server, &stream_path("c"), None).await else {
        panic!("a third stream was opened past the cap of two");
    };
    assert_eq!(refused.status, StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(refused.error_code(), "overloaded");
    assert!(refused.headers.contains_key("retry-after"));

    // A client that goes away gives its place back.
    drop(first);
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        match EventStream::open(&client, &server, &stream_path("c"), None).await {
            Ok(_) => break,
            Err(answer) => {
                assert_eq!(answer.error_code(), "overloaded");
                assert!(
                    Instant::now() < deadline,
                    "the closed stream's place never freed"
                );
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        }
    }
    server.shutdown().await;
}

#[tokio::test]
async fn heartbeats_keep_an_idle_stream_open_past_the_request_timeout() {
    let mut config = Config::default();
    config.stream.heartbeat_ms = NonZeroU64::new(50).unwrap();
    config.middleware.timeout.request_timeout_ms = 100;
    let server = TestServer::start(config).await;
    let client = http1_client();
    let mut stream = EventStream::open(&client, &server, &stream_path("quiet"), None)
        .await
        .unwrap();
    let started = Instant::now();
    for _ in 0..4 {
        assert_eq!(stream.next().await, Some(Sse::Comment("heartbeat".into())));
    }
    assert!(started.elapsed() >= Duration::from_millis(150));
    let id = insert_one(
        &client,
        &server.url("/api/v1/messages"),
        "quiet",
        "still here",
    )
    .await;
    assert_eq!(stream.next_message().await.unwrap().0, id);
    server.shutdown().await;
}

#[tokio::test]
async fn open_streams_end_cleanly_at_shutdown() {
    // The drain would wait this long for a stream that did not end.
    let mut config = Config::default();
    config.server.shutdown_timeout_ms = 60_000;
    let server = TestServer::start(config).await;
    let client = http1_client();
    let mut streams = Vec::new();
    for conversation in ["x", "y", "y"] {
        streams.push(
            EventStream::open(&client, &server, &stream_path(conversation), None)
                .await
                .unwrap(),
        );
    }
    let started = Instant::now();
    let shutdown = tokio::spawn(server.shutdown());
    for mut stream in streams {
        // The body ends without a transport error: a clean end of the response.
        while let Some(block) = stream.next().await {
            assert!(matches!(block, Sse::Comment(_)), "{block:?}");
        }
    }
    assert_eq!(shutdown.await.unwrap(), Drain::Complete);
    assert!(started.elapsed() < Duration::from_secs(30));
}

#[tokio::test]
async fn bad_stream_requests_are_json_errors() {
    let store = TestStore::new(Config::default());
    let app = store.app();
    for (path, header, status, code) in [
        (
            "/api/v1/conversations/c/stream?since_msg_id=abc",
            None,
            400,
            "validation_failed",
        ),
        (
            "/api/v1/conversations/c/stream?from=1",
            None,
            400,
            "validation_failed",
        ),
        (
            "/api/v1/conversations/c/stream",
            Some("-1"),
            400,
            "validation_failed",
        ),
        (
            "/api/v1/conversations/%E2%28/stream",
            None,
            400,
            "validation_failed",
        ),
        ("/api/v1/conversations/c", None, 404, "not_found"),
        ("/api/v1/conversations/c/stream/", None, 404, "not_found"),
    ] {
        let mut request = get(path);
        if let Some(id) = header {
            request
                .headers_mut()
                .insert("last-event-id", id.parse().unwrap());
        }
        let answer = call(&app, request).await;
        assert_eq!(answer.status.as_u16(), status, "{path}");
        assert_eq!(answer.error_code(), code, "{path}");
    }
    let answer = call(&app, post_json("/api/v1/conversations/c/stream", "{}")).await;
    assert_eq!(answer.status, StatusCode::METHOD_NOT_ALLOWED);
    assert_eq!(answer.headers["allow"], "GET");
}

#[tokio::test]
async fn a_stream_is_a_service_like_any_other() {
    // What a developer testing with `oneshot` sees: the head at once, then events as frames.
    let store = TestStore::new(Config::default());
    let app = build_app::<Full<Bytes>>(&store.config, store.handle.clone(), Instant::now());
    let response = app
        .oneshot(get("/api/v1/conversations/svc/stream"))
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    let mut body = response.into_body();
    let inserted = store
        .handle
        .insert(kalamdb_core::NewMessage {
            conversation_id: "svc".into(),
            from: "dev".into(),
            content: "hello".into(),
            metadata: Default::default(),
        })
        .await
        .unwrap();
    let frame = tokio::time::timeout(Duration::from_secs(10), body.frame())
        .await
        .unwrap()
        .unwrap()
        .unwrap();
    let text = String::from_utf8(frame.into_data().unwrap().to_vec()).unwrap();
    assert!(
        text.starts_with(&format!(
            "id: {}\nevent: message\ndata: {{",
            inserted.msg_id
        )),
        "{text}"
    );
    assert!(text.ends_with("}\n\n"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn messages_stored_during_the_backlog_read_are_sent_once() {
    let store = TestStore::new(Config::default());
    // Slow reads, so that writes commit between the stream's subscription and its backlog read:
    // the hand-over the stream must get right.
    let faulty = kalamdb_core::testing::Faulty::new(store.rocks.clone());
    faulty.delay_reads(Duration::from_millis(300));
    let slow = kalamdb_core::StoreHandle::new(std::sync::Arc::new(faulty));
    let app = build_app::<Full<Bytes>>(&store.config, slow.clone(), Instant::now());
    let message = |content: &str| kalamdb_core::NewMessage {
        conversation_id: "race".into(),
        from: "w".into(),
        content: content.into(),
        metadata: Default::default(),
    };
    let before = slow.insert(message("before")).await.unwrap().msg_id;

    // The stream subscribes, then spends 300 ms reading its backlog; meanwhile more commits.
    let opening =
        tokio::spawn(app.oneshot(get("/api/v1/conversations/race/stream?since_msg_id=0")));
    tokio::time::sleep(Duration::from_millis(100)).await;
    let mut during = Vec::new();
    for i in 0..5 {
        during.push(
            slow.insert(message(&format!("during {i}")))
                .await
                .unwrap()
                .msg_id,
        );
    }
    let mut stream = EventStream::from_response(opening.await.unwrap().unwrap());
    let after = slow.insert(message("after")).await.unwrap().msg_id;

    let expected: Vec<String> = std::iter::once(before)
        .chain(during)
        .chain([after])
        .map(|id| id.to_string())
        .collect();
    assert_eq!(ids(&stream.messages(7).await), expected);
    // Each message of the overlap came both from the backlog read and live; it went out once.
    let last = slow.insert(message("last")).await.unwrap().msg_id;
    assert_eq!(stream.next_message().await.unwrap().0, last.to_string());
    slow.close().await.unwrap();
}

#[tokio::test]
async fn streams_work_over_h2c_too() {
    let server = TestServer::start(Config::default()).await;
    let client = kalamdb_tests::http2_client();
    let path = stream_path("h2");
    let mut first = EventStream::open(&client, &server, &path, None)
        .await
        .unwrap();
    // A second stream multiplexed on the same connection.
    let mut second = EventStream::open(&client, &server, &path, None)
        .await
        .unwrap();
    let inserted = insert_many(&client, &server, "h2", 3, 10).await;
    assert_eq!(ids(&first.messages(3).await), inserted);
    assert_eq!(ids(&second.messages(3).await), inserted);
    assert_eq!(server.shutdown().await, Drain::Complete);
}

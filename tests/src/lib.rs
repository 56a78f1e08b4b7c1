//! Helpers for KalamDB's whole-stack tests: a store in a temp dir, the app built exactly as the
//! server builds it, an in-process server on a real socket, and a small HTTP client.
//!
//! The tests themselves live in `tests/tests/`, each file a module of one test binary
//! (`tests/all.rs`) but `metrics.rs`, which needs a process of its own:
//! - `stack.rs`: requests through the whole layer stack with `ServiceExt::oneshot`;
//! - `socket.rs`: the same app served by the real accept loop on 127.0.0.1, over HTTP/1.1 and h2c;
//! - `stream.rs`: live event streams, read with [`EventStream`] as a browser would.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Instant;

use bytes::Bytes;
use http::{HeaderMap, Method, Request, Response, StatusCode};
use http_body_util::{BodyExt, Full};
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use kalamdb_core::StoreHandle;
use kalamdb_rocksdb::RocksStore;
use kalamdb_server::{build_app, Config};
use serde_json::Value;
use tempfile::TempDir;
use tokio::sync::oneshot;
use tokio::task::JoinHandle;
use tower::{Service, ServiceExt};

/// A store in a temp dir, with the config the app is built from.
///
/// Fields drop in order: the handle (joining its writer thread), then the store, then the
/// directory, so RocksDB is closed before its files are removed.
pub struct TestStore {
    /// The handle endpoints use.
    pub handle: StoreHandle,
    /// The store, for assertions the API cannot make (what is on disk).
    pub rocks: Arc<RocksStore>,
    /// The configuration, with `storage.rocksdb_path` inside `dir`.
    pub config: Config,
    /// Owns the directory; removed on drop.
    pub dir: TempDir,
}

impl TestStore {
    /// A fresh store under `config` (its storage path is replaced by a temp dir).
    pub fn new(mut config: Config) -> Self {
        let dir = tempfile::tempdir().expect("temp dir");
        config.storage.rocksdb_path = dir.path().join("rocksdb");
        // Tests do not need the fsync; durability has its own process tests.
        config.storage.sync_writes = false;
        let rocks = Arc::new(RocksStore::open(&config.store_options()).expect("open store"));
        let handle = StoreHandle::new(rocks.clone());
        Self {
            dir,
            rocks,
            handle,
            config,
        }
    }

    /// The app exactly as the server builds it, over this store.
    pub fn app(
        &self,
    ) -> impl Service<
        Request<Full<Bytes>>,
        Response = Response<kalamdb_http::ResponseBody>,
        Error = Infallible,
        Future = impl Send + 'static,
    > + Clone
           + Send
           + 'static {
        build_app::<Full<Bytes>>(&self.config, self.handle.clone(), Instant::now())
    }

    /// Whether the store holds no message at all.
    pub fn is_empty(&self) -> bool {
        self.rocks.last_id().expect("read last id").is_none()
    }
}

/// A response reduced to what tests assert.
#[derive(Debug)]
pub struct Answer {
    /// The status.
    pub status: StatusCode,
    /// The headers.
    pub headers: HeaderMap,
    /// The body, parsed as JSON (`Value::Null` when it is not JSON).
    pub json: Value,
}

impl Answer {
    /// Collects a response.
    pub async fn from_response<B>(response: Response<B>) -> Self
    where
        B: http_body::Body,
        B::Error: std::fmt::Debug,
    {
        let (parts, body) = response.into_parts();
        let bytes = body.collect().await.expect("read body").to_bytes();
        Self {
            status: parts.status,
            headers: parts.headers,
            json: serde_json::from_slice(&bytes).unwrap_or(Value::Null),
        }
    }

    /// The `error` code of a JSON error body.
    pub fn error_code(&self) -> &str {
        self.json["error"].as_str().unwrap_or("")
    }

    /// The `message` of a JSON error body.
    pub fn error_message(&self) -> &str {
        self.json["message"].as_str().unwrap_or("")
    }
}

/// A JSON POST request.
pub fn post_json(path: &str, body: impl Into<Bytes>) -> Request<Full<Bytes>> {
    Request::builder()
        .method(Method::POST)
        .uri(path)
        .header("content-type", "application/json")
        .body(Full::new(body.into()))
        .expect("valid request")
}

/// A GET request.
pub fn get(path: &str) -> Request<Full<Bytes>> {
    Request::get(path)
        .body(Full::new(Bytes::new()))
        .expect("valid request")
}

/// Sends `request` through `app` with `oneshot`.
pub async fn call<S>(app: &S, request: Request<Full<Bytes>>) -> Answer
where
    S: Service<
            Request<Full<Bytes>>,
            Response = Response<kalamdb_http::ResponseBody>,
            Error = Infallible,
        > + Clone,
{
    let response = app.clone().oneshot(request).await.expect("infallible");
    Answer::from_response(response).await
}

/// The app served by the real accept loop on 127.0.0.1, in this process.
pub struct TestServer {
    /// Where it listens.
    pub addr: SocketAddr,
    /// The store it serves.
    pub store: TestStore,
    stop: Option<oneshot::Sender<()>>,
    task: Option<JoinHandle<Result<kalamdb_server::Drain, kalamdb_core::StoreError>>>,
}

impl TestServer {
    /// Starts a server on a free port.
    pub async fn start(config: Config) -> Self {
        let store = TestStore::new(config);
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let addr = listener.local_addr().expect("local addr");
        let (stop, stopped) = oneshot::channel::<()>();
        let config = store.config.clone();
        let handle = store.handle.clone();
        let task = tokio::spawn(async move {
            kalamdb_server::run(&config, listener, handle, async {
                let _ = stopped.await;
            })
            .await
        });
        Self {
            addr,
            store,
            stop: Some(stop),
            task: Some(task),
        }
    }

    /// The URL of `path` on this server.
    pub fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.addr)
    }

    /// Triggers shutdown and waits for the server to drain and close its store.
    pub async fn shutdown(mut self) -> kalamdb_server::Drain {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        self.task
            .take()
            .expect("running")
            .await
            .expect("server task")
            .expect("store closed cleanly")
    }
}

/// The HTTP client the socket tests use.
pub type HttpClient = Client<hyper_util::client::legacy::connect::HttpConnector, Full<Bytes>>;

/// An HTTP/1.1 client.
pub fn http1_client() -> HttpClient {
    Client::builder(TokioExecutor::new()).build_http()
}

/// An HTTP/2 client with prior knowledge (h2c).
pub fn http2_client() -> HttpClient {
    Client::builder(TokioExecutor::new())
        .http2_only(true)
        .build_http()
}

/// A request body that never yields a byte: a client that stalls mid-upload.
#[derive(Debug, Clone, Copy)]
pub struct StalledBody;

impl http_body::Body for StalledBody {
    type Data = Bytes;
    type Error = Infallible;

    fn poll_frame(
        self: std::pin::Pin<&mut Self>,
        _cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Option<Result<http_body::Frame<Bytes>, Self::Error>>> {
        std::task::Poll::Pending
    }
}

/// A request body that is either whole or stalled, for tests that mix the two on one app.
pub type MixedBody = http_body_util::Either<Full<Bytes>, StalledBody>;

/// `request` as if it arrived from `peer` (an IP address), the way the accept loop marks it.
pub fn from_peer<B>(peer: &str, mut request: Request<B>) -> Request<B> {
    let addr: SocketAddr = format!("{peer}:40000").parse().expect("an IP address");
    request
        .extensions_mut()
        .insert(kalamdb_http::ClientAddr(addr));
    request
}

/// An insert from `peer` whose body never arrives: it holds a concurrency slot until its
/// deadline.
pub fn stalled_insert(peer: &str) -> Request<MixedBody> {
    let request = Request::post("/api/v1/messages")
        .header("content-type", "application/json")
        .body(http_body_util::Either::Right(StalledBody))
        .expect("valid request");
    from_peer(peer, request)
}

/// One block of a server-sent event stream.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Sse {
    /// An event: its `id`, `event` and `data` fields.
    Event {
        /// The `id:` field.
        id: String,
        /// The `event:` field.
        event: String,
        /// The `data:` field.
        data: String,
    },
    /// A block of comment lines only (a heartbeat), without the leading `:`.
    Comment(String),
}

/// How long a test waits for the next event before failing rather than hanging.
pub const EVENT_WAIT: std::time::Duration = std::time::Duration::from_secs(30);

/// A client reading `GET /api/v1/conversations/{id}/stream` from a [`TestServer`], block by
/// block, the way a browser's `EventSource` would.
pub struct EventStream {
    body: http_body_util::combinators::UnsyncBoxBody<Bytes, kalamdb_http::BoxError>,
    buffer: Vec<u8>,
    /// The response headers.
    pub headers: HeaderMap,
}

impl EventStream {
    /// Opens `path` on `server` with `client`, sending `Last-Event-ID` when given. A response
    /// other than 200 comes back as the `Err` answer.
    pub async fn open(
        client: &HttpClient,
        server: &TestServer,
        path: &str,
        last_event_id: Option<&str>,
    ) -> Result<Self, Answer> {
        let mut request = Request::get(server.url(path)).header("accept", "text/event-stream");
        if let Some(id) = last_event_id {
            request = request.header("last-event-id", id);
        }
        let request = request
            .body(Full::new(Bytes::new()))
            .expect("valid request");
        let response = client.request(request).await.expect("the server answers");
        if response.status() != StatusCode::OK {
            return Err(Answer::from_response(response).await);
        }
        Ok(Self::from_response(response))
    }

    /// Reads the stream of a response already received (from `oneshot`, say).
    pub fn from_response<B>(response: Response<B>) -> Self
    where
        B: http_body::Body<Data = Bytes> + Send + 'static,
        B::Error: Into<kalamdb_http::BoxError>,
    {
        let (parts, body) = response.into_parts();
        Self {
            body: body.map_err(Into::into).boxed_unsync(),
            buffer: Vec::new(),
            headers: parts.headers,
        }
    }

    /// The next block, or `None` when the server ended the stream. Panics after [`EVENT_WAIT`]
    /// without one, or on a transport error.
    pub async fn next(&mut self) -> Option<Sse> {
        loop {
            if let Some(end) = self.buffer.windows(2).position(|w| w == b"\n\n") {
                let block: Vec<u8> = self.buffer.drain(..end + 2).collect();
                let text = String::from_utf8(block).expect("events are UTF-8");
                return Some(parse_block(text.trim_end_matches('\n')));
            }
            let frame = tokio::time::timeout(EVENT_WAIT, self.body.frame())
                .await
                .expect("the stream sends something within EVENT_WAIT");
            match frame {
                None => {
                    assert!(self.buffer.is_empty(), "the stream ended mid-event");
                    return None;
                }
                Some(frame) => {
                    if let Ok(data) = frame
                        .expect("the stream has no transport error")
                        .into_data()
                    {
                        self.buffer.extend_from_slice(&data);
                    }
                }
            }
        }
    }

    /// The next message event as `(id, message JSON)`, skipping heartbeats; `None` at the end.
    pub async fn next_message(&mut self) -> Option<(String, Value)> {
        loop {
            match self.next().await? {
                Sse::Comment(_) => continue,
                Sse::Event { id, event, data } => {
                    assert_eq!(event, "message");
                    let message: Value = serde_json::from_str(&data).expect("data is JSON");
                    assert_eq!(
                        message["msg_id"],
                        id.as_str(),
                        "the id line names the message"
                    );
                    return Some((id, message));
                }
            }
        }
    }

    /// The next `n` messages, panicking if the stream ends first.
    pub async fn messages(&mut self, n: usize) -> Vec<(String, Value)> {
        let mut out = Vec::with_capacity(n);
        while out.len() < n {
            let next = self.next_message().await;
            out.push(next.unwrap_or_else(|| panic!("the stream ended after {} events", out.len())));
        }
        out
    }
}

fn parse_block(block: &str) -> Sse {
    let mut fields: Vec<(&str, &str)> = Vec::new();
    let mut comments = Vec::new();
    for line in block.split('\n') {
        if let Some(comment) = line.strip_prefix(':') {
            comments.push(comment.trim_start());
            continue;
        }
        let (name, value) = line.split_once(':').unwrap_or((line, ""));
        fields.push((name, value.strip_prefix(' ').unwrap_or(value)));
    }
    if fields.is_empty() {
        return Sse::Comment(comments.join("\n"));
    }
    let field = |name: &str| {
        let values: Vec<&str> = fields
            .iter()
            .filter(|(n, _)| *n == name)
            .map(|(_, v)| *v)
            .collect();
        values.join("\n")
    };
    Sse::Event {
        id: field("id"),
        event: field("event"),
        data: field("data"),
    }
}

/// Stores `count` messages in `conversation_id` through `POST /api/v1/messages/batch` on
/// `server`, in batches of at most 100 with `content_bytes` of content each; returns their ids
/// in order.
pub async fn insert_many(
    client: &HttpClient,
    server: &TestServer,
    conversation_id: &str,
    count: usize,
    content_bytes: usize,
) -> Vec<String> {
    let mut ids = Vec::with_capacity(count);
    while ids.len() < count {
        let n = (count - ids.len()).min(100);
        let messages: Vec<Value> = (0..n)
            .map(|i| {
                let mut content = format!("m{} ", ids.len() + i);
                content.extend(std::iter::repeat_n('x', content_bytes.saturating_sub(content.len())));
                serde_json::json!({"conversation_id": conversation_id, "from": "writer", "content": content})
            })
            .collect();
        let body = serde_json::json!({ "messages": messages }).to_string();
        let request = Request::post(server.url("/api/v1/messages/batch"))
            .header("content-type", "application/json")
            .body(Full::new(Bytes::from(body)))
            .expect("valid request");
        let answer = Answer::from_response(client.request(request).await.expect("answered")).await;
        assert_eq!(answer.status, StatusCode::OK, "{:?}", answer.json);
        for inserted in answer.json["messages"].as_array().expect("messages") {
            ids.push(inserted["msg_id"].as_str().expect("msg_id").to_owned());
        }
    }
    ids
}

/// The value of the sample of `name` in Prometheus text whose labels include every one of
/// `labels`.
pub fn sample(text: &str, name: &str, labels: &[&str]) -> Option<f64> {
    text.lines()
        .filter(|line| !line.starts_with('#'))
        .filter(|line| {
            let series = line.split_whitespace().next().unwrap_or("");
            let bare = series.split('{').next().unwrap_or("");
            bare == name && labels.iter().all(|label| series.contains(label))
        })
        .find_map(|line| line.rsplit(' ').next()?.parse().ok())
}

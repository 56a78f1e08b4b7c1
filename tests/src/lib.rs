//! Helpers for KalamDB's whole-stack tests: a store in a temp dir, the app built exactly as the
//! server builds it, an in-process server on a real socket, and a small HTTP client.
//!
//! The tests themselves live in `tests/tests/`:
//! - `stack.rs`: requests through the whole layer stack with `ServiceExt::oneshot`;
//! - `socket.rs`: the same app served by the real accept loop on 127.0.0.1, over HTTP/1.1 and h2c.

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

/// An HTTP/1.1 client.
pub fn http1_client() -> Client<hyper_util::client::legacy::connect::HttpConnector, Full<Bytes>> {
    Client::builder(TokioExecutor::new()).build_http()
}

/// An HTTP/2 client with prior knowledge (h2c).
pub fn http2_client() -> Client<hyper_util::client::legacy::connect::HttpConnector, Full<Bytes>> {
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

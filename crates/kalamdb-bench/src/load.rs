//! The load generator: N connections, each sending its next request as soon as the last one is
//! answered, for a fixed time. Latency is recorded per request in an HDR histogram.

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use bytes::Bytes;
use hdrhistogram::Histogram;
use http::{Method, Request};
use http_body_util::{BodyExt, Full};
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;

/// What each request does.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub(crate) enum Workload {
    /// `POST /api/v1/messages` with 200 bytes of content.
    Insert,
    /// `POST /api/v1/query`: the latest 50 messages of the preloaded conversation.
    Query,
    /// 80% insert, 20% query.
    Mixed,
    /// `POST /api/v1/messages/batch` with [`BATCH_SIZE`] messages of 200 bytes.
    Batch,
    /// `POST /api/v1/messages` as [`Workload::Insert`], every connection into the one
    /// conversation [`SHARED_CONVERSATION`]: what one conversation takes at most.
    SharedInsert,
}

/// The conversation of [`Workload::SharedInsert`].
pub(crate) const SHARED_CONVERSATION: &str = "bench-shared";

/// Messages per batch in the batch workload.
pub(crate) const BATCH_SIZE: usize = 100;

impl Workload {
    /// Messages each request stores or reads.
    pub(crate) fn messages_per_request(self) -> usize {
        match self {
            Workload::Batch => BATCH_SIZE,
            Workload::Query => 50,
            Workload::Insert | Workload::Mixed | Workload::SharedInsert => 1,
        }
    }

    /// Whether it stores messages.
    pub(crate) fn writes(self) -> bool {
        self != Workload::Query
    }
}

/// The conversation queries read; preloaded before a run.
pub(crate) const QUERY_CONVERSATION: &str = "bench-query";

/// The query scenario's body: the latest 50 of the query conversation.
fn query_body() -> String {
    format!(r#"{{"conversation_id":"{QUERY_CONVERSATION}","limit":50,"order":"desc"}}"#)
}

/// The query scenario's request as raw HTTP/1.1 to `server`, for asking how large its answer
/// is; with `authorization` (the header's value) under `--auth`.
pub(crate) fn query_request(server: std::net::SocketAddr, authorization: Option<&str>) -> Vec<u8> {
    let body = query_body();
    let credentials = authorization
        .map(|value| format!("authorization: {value}\r\n"))
        .unwrap_or_default();
    format!(
        "POST /api/v1/query HTTP/1.1\r\nhost: {server}\r\ncontent-type: application/json\r\n\
         {credentials}content-length: {}\r\nconnection: close\r\n\r\n{body}",
        body.len()
    )
    .into_bytes()
}

/// Results of one run.
#[derive(Debug, Clone, serde::Serialize)]
pub(crate) struct Measured {
    /// Requests answered with a 2xx per second.
    pub(crate) requests_per_sec: f64,
    /// Latency percentiles in microseconds.
    pub p50_us: u64,
    /// 99th percentile.
    pub p99_us: u64,
    /// 99.9th percentile.
    pub p999_us: u64,
    /// Requests answered with another status, or failed.
    pub(crate) errors: u64,
    /// Requests answered with a 2xx.
    pub(crate) ok: u64,
    /// The server's CPU time (user + system) per request answered, in µs, when the benchmark
    /// started it and could read it.
    pub(crate) cpu_us_per_request: Option<f64>,
}

/// One connection's tally over a run: its latencies, and how many answers were good or not.
pub(crate) struct Tally {
    histogram: Histogram<u64>,
    ok: u64,
    errors: u64,
}

impl Tally {
    pub(crate) fn new() -> Self {
        Self {
            histogram: Histogram::new_with_bounds(1, 60_000_000, 3).expect("valid bounds"),
            ok: 0,
            errors: 0,
        }
    }

    /// Counts one request sent at `sent`: its latency when its answer was `good`.
    pub(crate) fn record(&mut self, sent: Instant, good: bool) {
        if good {
            self.ok += 1;
            let micros = sent.elapsed().as_micros().max(1) as u64;
            let _ = self.histogram.record(micros.min(60_000_000));
        } else {
            self.errors += 1;
        }
    }

    /// Every connection's tallies as one run's figures, the run having begun at `started`.
    pub(crate) fn summarize(tallies: Vec<Tally>, started: Instant) -> Measured {
        let mut all = Tally::new();
        for tally in tallies {
            all.histogram.add(tally.histogram).expect("same bounds");
            all.ok += tally.ok;
            all.errors += tally.errors;
        }
        Measured {
            requests_per_sec: all.ok as f64 / started.elapsed().as_secs_f64(),
            p50_us: all.histogram.value_at_quantile(0.5),
            p99_us: all.histogram.value_at_quantile(0.99),
            p999_us: all.histogram.value_at_quantile(0.999),
            errors: all.errors,
            ok: all.ok,
            cpu_us_per_request: None,
        }
    }
}

/// The requests one connection sends, built once so that the load generator spends its time on
/// sending them, not on formatting them.
struct Bodies {
    insert: Request<Full<Bytes>>,
    query: Request<Full<Bytes>>,
    batch: Request<Full<Bytes>>,
    shared: Request<Full<Bytes>>,
}

impl Bodies {
    fn new(addr: SocketAddr, connection: usize, authorization: Option<&str>) -> Self {
        let build = |workload| build(addr, workload, connection, authorization);
        Self {
            insert: build(Workload::Insert),
            query: build(Workload::Query),
            batch: build(Workload::Batch),
            shared: build(Workload::SharedInsert),
        }
    }

    fn next(&self, workload: Workload, n: u64) -> Request<Full<Bytes>> {
        let template = match workload {
            Workload::Insert => &self.insert,
            Workload::Query => &self.query,
            Workload::Batch => &self.batch,
            Workload::SharedInsert => &self.shared,
            // Deterministic 80/20 interleaving, the same for every server.
            Workload::Mixed if n % 5 == 4 => &self.query,
            Workload::Mixed => &self.insert,
        };
        let mut request = Request::new(template.body().clone());
        *request.method_mut() = template.method().clone();
        *request.uri_mut() = template.uri().clone();
        *request.headers_mut() = template.headers().clone();
        request
    }
}

/// The one request of a single-kind workload; mixed runs interleave insert and query requests.
fn build(
    addr: SocketAddr,
    workload: Workload,
    connection: usize,
    authorization: Option<&str>,
) -> Request<Full<Bytes>> {
    let conversation = match workload {
        Workload::SharedInsert => SHARED_CONVERSATION.to_owned(),
        _ => format!("bench-c{connection}"),
    };
    let insert = format!(
        r#"{{"conversation_id":"{conversation}","from":"{}","content":"{}"}}"#,
        crate::auth::BENCH_USER,
        "x".repeat(200)
    );
    let (path, body) = match workload {
        Workload::Insert | Workload::Mixed | Workload::SharedInsert => ("/api/v1/messages", insert),
        Workload::Batch => (
            "/api/v1/messages/batch",
            format!(r#"{{"messages":[{}]}}"#, vec![insert; BATCH_SIZE].join(",")),
        ),
        Workload::Query => ("/api/v1/query", query_body()),
    };
    let mut request = Request::builder()
        .method(Method::POST)
        .uri(format!("http://{addr}{path}"))
        .header("content-type", "application/json");
    if let Some(value) = authorization {
        request = request.header("authorization", value);
    }
    request
        .body(Full::new(Bytes::from(body)))
        .expect("a valid request")
}

/// Runs `workload` over `connections` connections for `duration`, each request with
/// `authorization` (the header's value) when given.
pub(crate) async fn run(
    addr: SocketAddr,
    workload: Workload,
    connections: usize,
    duration: Duration,
    authorization: Option<&str>,
) -> Measured {
    run_over(&[addr], workload, connections, duration, authorization).await
}

/// [`run`] with the connections spread over several servers, round robin.
pub(crate) async fn run_spread(
    addrs: &[SocketAddr],
    workload: Workload,
    connections: usize,
    duration: Duration,
) -> Measured {
    run_over(addrs, workload, connections, duration, None).await
}

async fn run_over(
    addrs: &[SocketAddr],
    workload: Workload,
    connections: usize,
    duration: Duration,
    authorization: Option<&str>,
) -> Measured {
    let authorization: Option<std::sync::Arc<str>> = authorization.map(Into::into);
    let mut connector = HttpConnector::new();
    connector.set_nodelay(true);
    let client: Client<_, Full<Bytes>> = Client::builder(TokioExecutor::new())
        .pool_max_idle_per_host(connections)
        .build(connector);
    let started = Instant::now();
    let deadline = started + duration;
    let tasks: Vec<_> = (0..connections)
        .map(|connection| {
            let client = client.clone();
            let authorization = authorization.clone();
            let addr = addrs[connection % addrs.len()];
            tokio::spawn(async move {
                let mut tally = Tally::new();
                let mut n = 0u64;
                let bodies = Bodies::new(addr, connection, authorization.as_deref());
                while Instant::now() < deadline {
                    let request = bodies.next(workload, n);
                    let sent = Instant::now();
                    let answer = client.request(request).await;
                    n += 1;
                    let good = match answer {
                        Ok(response) => {
                            let success = response.status().is_success();
                            // Read the whole answer: that is what a client waits for.
                            success && response.into_body().collect().await.is_ok()
                        }
                        Err(_) => false,
                    };
                    tally.record(sent, good);
                }
                tally
            })
        })
        .collect();
    let mut tallies = Vec::with_capacity(tasks.len());
    for task in tasks {
        tallies.push(task.await.expect("load task"));
    }
    Tally::summarize(tallies, started)
}

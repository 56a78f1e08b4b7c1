//! The stream mode: insert → event latency with N subscribers on one conversation.
//!
//! N clients open `GET /api/v1/conversations/{id}/stream` on raw TCP connections and wait for
//! the response head (sent once they are subscribed). One writer then inserts messages one at a
//! time, `pause` apart (a few milliseconds by default, so one event's fan-out is over before the
//! next insert, and the server idles between messages as a chat server does), noting when it
//! sent each. Inserts are sequential, so every
//! subscriber's k-th event is the k-th insert: its latency is when the subscriber read it minus
//! when the writer sent the insert, which covers the request, the commit (with its fsync when
//! durable), the fan-out and the delivery.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use hdrhistogram::Histogram;
use http::Request;
use http_body_util::{BodyExt, Full};
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// The conversation the subscribers follow.
const CONVERSATION: &str = "bench-stream";
/// What starts each event on the wire.
const MARKER: &[u8] = b"event: message\n";

/// One run's figures.
#[derive(Debug, Clone, serde::Serialize)]
pub(crate) struct StreamResult {
    pub(crate) subscribers: usize,
    pub(crate) pause_ms: u64,
    pub(crate) events_per_subscriber: usize,
    pub(crate) p50_us: u64,
    pub(crate) p99_us: u64,
    pub(crate) max_us: u64,
    /// Subscribers that did not receive every event before the deadline.
    pub(crate) incomplete: usize,
}

/// Runs `subscribers` streams against the server at `addr` while `events` messages are inserted.
pub(crate) async fn run(
    addr: SocketAddr,
    subscribers: usize,
    events: usize,
    pause: Duration,
) -> Result<StreamResult, String> {
    let path = format!("/api/v1/conversations/{CONVERSATION}/stream");
    let mut streams = Vec::with_capacity(subscribers);
    for _ in 0..subscribers {
        streams.push(open(addr, &path).await?);
    }
    let sent: Arc<std::sync::Mutex<Vec<Option<Instant>>>> =
        Arc::new(std::sync::Mutex::new(vec![None; events]));
    let deadline = Instant::now() + Duration::from_secs(60) + pause * events as u32;
    let readers: Vec<_> = streams
        .into_iter()
        .map(|(stream, already)| tokio::spawn(read_events(stream, already, events, deadline)))
        .collect();

    let mut connector = HttpConnector::new();
    connector.set_nodelay(true);
    let writer: Client<_, Full<Bytes>> = Client::builder(TokioExecutor::new()).build(connector);
    for k in 0..events {
        let body = format!(
            r#"{{"conversation_id":"{CONVERSATION}","from":"bench","content":"event {k}"}}"#
        );
        let request = Request::post(format!("http://{addr}/api/v1/messages"))
            .header("content-type", "application/json")
            .body(Full::new(Bytes::from(body)))
            .map_err(|e| e.to_string())?;
        sent.lock().expect("not poisoned")[k] = Some(Instant::now());
        let response = writer.request(request).await.map_err(|e| e.to_string())?;
        let status = response.status();
        let _ = response.into_body().collect().await;
        if !status.is_success() {
            return Err(format!("an insert was answered {status}"));
        }
        if !pause.is_zero() {
            tokio::time::sleep(pause).await;
        }
    }

    let mut latency = Histogram::<u64>::new(3).expect("a histogram");
    let mut incomplete = 0;
    let sent = sent.lock().expect("not poisoned").clone();
    for reader in readers {
        let received = reader.await.map_err(|e| e.to_string())?;
        if received.len() < events {
            incomplete += 1;
        }
        for (k, at) in received.into_iter().enumerate() {
            if let Some(sent) = sent[k] {
                let us = at.saturating_duration_since(sent).as_micros() as u64;
                latency.record(us.max(1)).map_err(|e| e.to_string())?;
            }
        }
    }
    Ok(StreamResult {
        subscribers,
        pause_ms: pause.as_millis() as u64,
        events_per_subscriber: events,
        p50_us: latency.value_at_quantile(0.5),
        p99_us: latency.value_at_quantile(0.99),
        max_us: latency.max(),
        incomplete,
    })
}

/// Opens one stream and reads until its response head is in; returns the socket and whatever
/// followed the head.
async fn open(addr: SocketAddr, path: &str) -> Result<(TcpStream, Vec<u8>), String> {
    let mut stream = TcpStream::connect(addr).await.map_err(|e| e.to_string())?;
    let _ = stream.set_nodelay(true);
    let request =
        format!("GET {path} HTTP/1.1\r\nHost: {addr}\r\nAccept: text/event-stream\r\n\r\n");
    stream
        .write_all(request.as_bytes())
        .await
        .map_err(|e| e.to_string())?;
    let mut received = Vec::new();
    let mut chunk = [0u8; 4096];
    loop {
        if let Some(end) = received.windows(4).position(|w| w == b"\r\n\r\n") {
            if !received.starts_with(b"HTTP/1.1 200") {
                let head = String::from_utf8_lossy(&received[..end]).into_owned();
                return Err(format!("the stream was refused: {head}"));
            }
            return Ok((stream, received.split_off(end + 4)));
        }
        let n = stream.read(&mut chunk).await.map_err(|e| e.to_string())?;
        if n == 0 {
            return Err("the server closed a stream before its head".into());
        }
        received.extend_from_slice(&chunk[..n]);
    }
}

/// Reads events until `events` have arrived or `deadline` passes; returns when each arrived.
async fn read_events(
    mut stream: TcpStream,
    already: Vec<u8>,
    events: usize,
    deadline: Instant,
) -> Vec<Instant> {
    let mut arrived = Vec::with_capacity(events);
    // The unscanned tail of what was read: a marker may straddle two reads.
    let mut pending = already;
    let mut chunk = vec![0u8; 64 * 1024];
    while arrived.len() < events {
        let now = Instant::now();
        let mut start = 0;
        while let Some(at) = pending[start..]
            .windows(MARKER.len())
            .position(|w| w == MARKER)
        {
            arrived.push(now);
            start += at + MARKER.len();
        }
        let keep = pending.len().saturating_sub(MARKER.len() - 1).max(start);
        pending.drain(..keep);
        if arrived.len() >= events {
            break;
        }
        let left = deadline.saturating_duration_since(Instant::now());
        match tokio::time::timeout(left, stream.read(&mut chunk)).await {
            Ok(Ok(n)) if n > 0 => pending.extend_from_slice(&chunk[..n]),
            _ => break,
        }
    }
    arrived.truncate(events);
    arrived
}

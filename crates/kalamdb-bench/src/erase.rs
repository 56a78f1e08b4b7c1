//! The erase mode (`--erase N`): what deleting a conversation of N messages costs everyone else.
//!
//! The server starts on a data directory holding one conversation of N messages, with
//! `storage.erase_within_secs` set to [`ERASE_WITHIN_SECS`], so that the eraser's round (a
//! quarter of it after the delete) falls inside the measured window. 64 connections insert
//! into other conversations for one window as a baseline, then for a second window during
//! which, a quarter of the way in, one `DELETE /api/v1/conversations/{id}` removes the large
//! one. The report gives the delete's own latency and the inserts' percentiles in both windows:
//! the delete must return within seconds and leave the other writers' p99 near the baseline.

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use bytes::Bytes;
use http::Request;
use http_body_util::{BodyExt, Full};
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;

use crate::load::{self, Measured, Workload};
use crate::pin::Plan;
use crate::servers::RealServer;

/// The conversation deleted.
const DOOMED: &str = "bench-doomed";
/// The erase bound the server runs with here: its round starts a quarter of it after the delete.
pub(crate) const ERASE_WITHIN_SECS: i64 = 4;

/// One run's figures.
#[derive(Debug, serde::Serialize)]
pub(crate) struct EraseResult {
    /// Messages in the deleted conversation.
    pub(crate) messages: u64,
    /// The delete request's latency, in ms, and its status.
    pub(crate) delete_ms: f64,
    pub(crate) delete_status: u16,
    /// Inserts into other conversations without a delete, and in the window holding it.
    pub(crate) baseline: Measured,
    pub(crate) during: Measured,
    /// The server's log lines for the eraser's rounds within the window (their timings).
    pub(crate) eraser: Vec<String>,
}

/// Runs the erase mode against `real` with a conversation of `count` messages; each window
/// lasts `window`.
pub(crate) async fn run(
    real: &RealServer,
    count: u64,
    window: Duration,
    plan: Option<&Plan>,
) -> Result<EraseResult, String> {
    let real = real
        .with_setting("storage", "erase_within_secs", ERASE_WITHIN_SECS.into())?
        // The eraser's own line says what its round took.
        .with_log_level("warn,kalamdb_rocksdb=info");
    let mut failure = None;
    let server = real.start(
        true,
        |data| {
            if let Err(e) = crate::preload::preload(data, DOOMED, count, None) {
                failure = Some(e);
            }
        },
        plan,
    )?;
    if let Some(e) = failure {
        return Err(format!("preload failed: {e}"));
    }
    let addr = server.addr;
    let baseline = load::run(addr, Workload::Insert, 64, window, None).await;
    let delete = tokio::spawn(async move {
        tokio::time::sleep(window / 4).await;
        delete_conversation(addr).await
    });
    let during = load::run(addr, Workload::Insert, 64, window, None).await;
    let (delete_status, delete_ms) = delete
        .await
        .map_err(|e| format!("the delete task failed: {e}"))??;
    let eraser = server
        .log_text()
        .lines()
        .filter(|line| line.contains("erased deleted data"))
        .map(str::to_owned)
        .collect();
    Ok(EraseResult {
        messages: count,
        delete_ms,
        delete_status,
        baseline,
        during,
        eraser,
    })
}

async fn delete_conversation(addr: SocketAddr) -> Result<(u16, f64), String> {
    let client: Client<_, Full<Bytes>> =
        Client::builder(TokioExecutor::new()).build(HttpConnector::new());
    let request = Request::delete(format!("http://{addr}/api/v1/conversations/{DOOMED}"))
        .body(Full::new(Bytes::new()))
        .map_err(|e| e.to_string())?;
    let sent = Instant::now();
    let response = client.request(request).await.map_err(|e| e.to_string())?;
    let status = response.status().as_u16();
    let _ = response.into_body().collect().await;
    Ok((status, sent.elapsed().as_secs_f64() * 1000.0))
}

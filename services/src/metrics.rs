//! `GET /metrics`: every figure the server records, in the Prometheus text format.
//!
//! The figures are recorded through the [`metrics`] facade wherever they happen (the timing,
//! auth, rate-limit and concurrency layers, [`crate::InsertMessage`],
//! [`crate::StreamMessages`]); this endpoint adds the ones read on demand (the store's sizes
//! and its cache's figures, the process uptime) and renders the recorder that the server
//! installed, with `metrics-exporter-prometheus`.
//!
//! | metric | kind | labels |
//! | --- | --- | --- |
//! | `kalamdb_http_requests_total` | counter | `route`, `method`, `status` |
//! | `kalamdb_http_request_duration_seconds` | histogram | `route` |
//! | `kalamdb_http_requests_in_flight` | gauge | |
//! | `kalamdb_http_requests_rate_limited_total` | counter | |
//! | `kalamdb_http_requests_shed_total` | counter | |
//! | `kalamdb_auth_refused_total` | counter | `status` (`401`, `403`) |
//! | [`MESSAGES_INSERTED_TOTAL`] | counter | |
//! | [`STREAMS_ACTIVE`] | gauge | |
//! | [`STREAM_EVENTS_SENT_TOTAL`] | counter | |
//! | [`STREAM_CATCH_UPS_TOTAL`] | counter | |
//! | [`ROCKSDB_ESTIMATED_KEYS`] | gauge | `cf` |
//! | [`ROCKSDB_LIVE_SST_BYTES`] | gauge | `cf` |
//! | [`ROCKSDB_PENDING_COMPACTION_BYTES`] | gauge | `cf` |
//! | [`ROCKSDB_WAL_BYTES`] | gauge | |
//! | [`RECENT_CACHE_HITS_TOTAL`] | counter | |
//! | [`RECENT_CACHE_MISSES_TOTAL`] | counter | |
//! | [`RECENT_CACHE_EVICTIONS_TOTAL`] | counter | |
//! | [`RECENT_CACHE_ENTRIES`] | gauge | |
//! | [`RECENT_CACHE_BYTES`] | gauge | |
//! | [`RECENT_CACHE_CAPACITY_BYTES`] | gauge | |
//! | [`PROCESS_UPTIME_SECONDS`] | gauge | |

use std::time::Instant;

use http::header::CONTENT_TYPE;
use http::{HeaderValue, Request, Response, StatusCode};
use kalamdb_core::StoreHandle;
use kalamdb_http::{full, ApiError, ResponseBody};
use metrics_exporter_prometheus::PrometheusHandle;

/// Messages stored, counted when their insert is acknowledged.
pub const MESSAGES_INSERTED_TOTAL: &str = "kalamdb_messages_inserted_total";
/// Event streams open now.
pub const STREAMS_ACTIVE: &str = "kalamdb_streams_active";
/// Message events queued to stream clients, backlog and live alike.
pub const STREAM_EVENTS_SENT_TOTAL: &str = "kalamdb_stream_events_sent_total";
/// Times a stream fell behind the live feed and read what it missed from the store: a measure
/// of clients reading slower than their conversations grow.
pub const STREAM_CATCH_UPS_TOTAL: &str = "kalamdb_stream_catch_ups_total";
/// Keys in each RocksDB column family, as RocksDB estimates them.
pub const ROCKSDB_ESTIMATED_KEYS: &str = "kalamdb_rocksdb_estimated_keys";
/// Bytes of live SST files in each column family.
pub const ROCKSDB_LIVE_SST_BYTES: &str = "kalamdb_rocksdb_live_sst_bytes";
/// Bytes compaction still has to rewrite in each column family.
pub const ROCKSDB_PENDING_COMPACTION_BYTES: &str = "kalamdb_rocksdb_pending_compaction_bytes";
/// Bytes of write-ahead log on disk, which a restart after a crash replays: what
/// `storage.max_wal_mb` bounds.
pub const ROCKSDB_WAL_BYTES: &str = "kalamdb_rocksdb_wal_bytes";
/// Queries the recent cache (`storage.recent_cache_mb`) answered from memory.
pub const RECENT_CACHE_HITS_TOTAL: &str = "kalamdb_recent_cache_hits_total";
/// Queries the recent cache could not answer, read from RocksDB instead.
pub const RECENT_CACHE_MISSES_TOTAL: &str = "kalamdb_recent_cache_misses_total";
/// Conversations the recent cache dropped to stay within its budget.
pub const RECENT_CACHE_EVICTIONS_TOTAL: &str = "kalamdb_recent_cache_evictions_total";
/// Conversations the recent cache holds.
pub const RECENT_CACHE_ENTRIES: &str = "kalamdb_recent_cache_entries";
/// Bytes the recent cache holds, as its budget counts them.
pub const RECENT_CACHE_BYTES: &str = "kalamdb_recent_cache_bytes";
/// The recent cache's budget in bytes: `storage.recent_cache_mb`.
pub const RECENT_CACHE_CAPACITY_BYTES: &str = "kalamdb_recent_cache_capacity_bytes";
/// Seconds since the server started.
pub const PROCESS_UPTIME_SECONDS: &str = "kalamdb_process_uptime_seconds";

/// The Prometheus text format's content type.
const TEXT_FORMAT: &str = "text/plain; version=0.0.4; charset=utf-8";

/// Renders the metrics; see the module docs.
///
/// `prometheus` must be the handle of the globally installed recorder: the figures this endpoint
/// reads on demand are recorded through the global facade like every other.
#[derive(Clone)]
pub struct Metrics {
    prometheus: PrometheusHandle,
    store: StoreHandle,
    started: Instant,
}

impl std::fmt::Debug for Metrics {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Metrics").finish_non_exhaustive()
    }
}

impl Metrics {
    /// An endpoint rendering `prometheus`, reading sizes from `store`, uptime from `started`.
    pub fn new(prometheus: PrometheusHandle, store: StoreHandle, started: Instant) -> Self {
        Self {
            prometheus,
            store,
            started,
        }
    }

    async fn handle<B>(self, _request: Request<B>) -> Result<Response<ResponseBody>, ApiError> {
        match self.store.stats().await {
            Ok(parts) => {
                for part in parts {
                    let cf = part.name;
                    metrics::gauge!(ROCKSDB_ESTIMATED_KEYS, "cf" => cf)
                        .set(part.estimated_keys as f64);
                    metrics::gauge!(ROCKSDB_LIVE_SST_BYTES, "cf" => cf)
                        .set(part.live_data_bytes as f64);
                    metrics::gauge!(ROCKSDB_PENDING_COMPACTION_BYTES, "cf" => cf)
                        .set(part.pending_compaction_bytes as f64);
                }
            }
            // The other figures are still worth a scrape; the storage ones keep their last value.
            Err(e) => tracing::warn!(error = %e, "metrics: cannot read the store's figures"),
        }
        match self.store.log_bytes().await {
            Ok(Some(bytes)) => metrics::gauge!(ROCKSDB_WAL_BYTES).set(bytes as f64),
            Ok(None) => {}
            Err(e) => tracing::warn!(error = %e, "metrics: cannot read the log's size"),
        }
        // Counted by the store as it goes; published here as they stand.
        if let Some(cache) = self.store.cache_stats() {
            metrics::counter!(RECENT_CACHE_HITS_TOTAL).absolute(cache.hits);
            metrics::counter!(RECENT_CACHE_MISSES_TOTAL).absolute(cache.misses);
            metrics::counter!(RECENT_CACHE_EVICTIONS_TOTAL).absolute(cache.evictions);
            metrics::gauge!(RECENT_CACHE_ENTRIES).set(cache.entries as f64);
            metrics::gauge!(RECENT_CACHE_BYTES).set(cache.bytes as f64);
            metrics::gauge!(RECENT_CACHE_CAPACITY_BYTES).set(cache.capacity_bytes as f64);
        }
        metrics::gauge!(PROCESS_UPTIME_SECONDS).set(self.started.elapsed().as_secs_f64());
        let mut response = Response::new(full(self.prometheus.render()));
        *response.status_mut() = StatusCode::OK;
        response
            .headers_mut()
            .insert(CONTENT_TYPE, HeaderValue::from_static(TEXT_FORMAT));
        Ok(response)
    }
}

endpoint_service!(Metrics);

#[cfg(test)]
mod tests {
    use super::*;
    use crate::test_support::{get, store};
    use http_body_util::BodyExt;
    use metrics_exporter_prometheus::PrometheusBuilder;
    use tower::ServiceExt;

    #[test]
    fn renders_what_the_recorder_holds_as_prometheus_text() {
        let recorder = PrometheusBuilder::new().build_recorder();
        let prometheus = recorder.handle();
        let (handle, _, _) = store();
        let service = Metrics::new(prometheus, handle, Instant::now());
        // The figures this endpoint sets go through the global facade: poll it on this thread,
        // under this test's recorder only.
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        let response = metrics::with_local_recorder(&recorder, || {
            runtime.block_on(service.oneshot(get("/metrics")))
        })
        .unwrap();
        assert_eq!(response.status(), StatusCode::OK);
        assert_eq!(response.headers()[CONTENT_TYPE], TEXT_FORMAT);
        let body = runtime
            .block_on(response.into_body().collect())
            .unwrap()
            .to_bytes();
        let text = String::from_utf8(body.to_vec()).unwrap();
        assert!(text.contains(PROCESS_UPTIME_SECONDS), "{text}");
        assert!(
            text.contains(&format!("{ROCKSDB_ESTIMATED_KEYS}{{cf=\"messages\"}} 0")),
            "{text}"
        );
    }
}

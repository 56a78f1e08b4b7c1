//! The process-wide Prometheus recorder behind `GET /metrics`.
//!
//! The [`metrics`] facade has one global recorder per process, so it is installed once, on first
//! use, and every app built in the process (the server's, or many in a test binary) renders the
//! same figures.

use std::sync::OnceLock;
use std::time::Duration;

use kalamdb_middleware::timing::REQUEST_DURATION_SECONDS;
use metrics_exporter_prometheus::{Matcher, PrometheusBuilder, PrometheusHandle};

/// How often histogram samples are folded into their buckets between scrapes, so memory stays
/// flat however long nobody scrapes.
pub const UPKEEP_INTERVAL: Duration = Duration::from_secs(5);

/// Request latency buckets, in seconds: from a cached read to a request at its deadline.
const LATENCY_BUCKETS: [f64; 14] = [
    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 30.0,
];

/// The global recorder's handle, installing the recorder on the first call.
///
/// # Panics
/// When another global `metrics` recorder was installed first; this process installs none.
pub fn handle() -> PrometheusHandle {
    static HANDLE: OnceLock<PrometheusHandle> = OnceLock::new();
    HANDLE
        .get_or_init(|| {
            let recorder = PrometheusBuilder::new()
                .set_buckets_for_metric(
                    Matcher::Full(REQUEST_DURATION_SECONDS.to_owned()),
                    &LATENCY_BUCKETS,
                )
                .expect("the latency buckets are not empty")
                .build_recorder();
            let handle = recorder.handle();
            metrics::set_global_recorder(recorder)
                .expect("no other metrics recorder is installed in this process");
            handle
        })
        .clone()
}

/// Folds histogram samples into buckets every [`UPKEEP_INTERVAL`] until the task is dropped.
pub async fn upkeep(handle: PrometheusHandle) {
    let mut tick = tokio::time::interval(UPKEEP_INTERVAL);
    loop {
        tick.tick().await;
        handle.run_upkeep();
    }
}

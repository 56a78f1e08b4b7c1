use std::time::Duration;

use http::{Request, Response, StatusCode};
use kalamdb_http::{full, ApiError, BoxError, ResponseBody};
use metrics_util::debugging::{DebugValue, DebuggingRecorder};
use metrics_util::MetricKind;
use tower::{ServiceBuilder, ServiceExt};

use super::{Config, REQUESTS_IN_FLIGHT, REQUESTS_TOTAL, REQUEST_DURATION_SECONDS};
use crate::rescue::RescueLayer;

/// As the server stacks it, outside rescue: `/fail` is an unavailable store, anything else a
/// 200 after 25 ms.
async fn call(path: &str) -> Response<ResponseBody> {
    stack().oneshot(request(path)).await.unwrap()
}

fn request(path: &str) -> Request<()> {
    Request::post(path).body(()).unwrap()
}

fn stack() -> impl tower::Service<
    Request<()>,
    Response = Response<ResponseBody>,
    Error = std::convert::Infallible,
    Future = impl Send,
> + Clone {
    ServiceBuilder::new()
        .option_layer(Config::default().layer(|path| if path == "/fail" { "/fail" } else { "/" }))
        .layer(RescueLayer::new())
        .service_fn(|request: Request<()>| async move {
            if request.uri().path() == "/fail" {
                return Err::<Response<ResponseBody>, BoxError>(Box::new(ApiError::unavailable()));
            }
            tokio::time::sleep(Duration::from_millis(25)).await;
            Ok(Response::new(full("ok")))
        })
}

#[tokio::test(start_paused = true)]
async fn the_response_says_how_long_it_took() {
    let response = call("/").await;
    assert_eq!(response.status(), StatusCode::OK);
    assert_eq!(response.headers()["server-timing"], "app;dur=25.000");
}

#[test]
fn answered_and_failed_requests_are_counted_with_their_status() {
    let recorded = recorded_during(|| async {
        call("/").await;
        call("/").await;
        let failed = call("/fail").await;
        assert_eq!(failed.status(), StatusCode::SERVICE_UNAVAILABLE);
        assert!(failed.headers().contains_key("server-timing"));
    });
    assert_eq!(recorded, counted(2, 1));
}

/// The handles a layer keeps after a series' first request go on counting into the same series,
/// from every clone (the server clones the stack for each connection).
#[test]
fn every_clone_of_a_layer_counts_into_the_same_series() {
    let recorded = recorded_during(|| async {
        let service = stack();
        for path in ["/", "/fail", "/", "/", "/fail"] {
            service.clone().oneshot(request(path)).await.unwrap();
        }
    });
    assert_eq!(recorded, counted(3, 2));
}

/// What `work` recorded, run on a paused clock with a recorder of its own (see [`recorded`]).
fn recorded_during<F: std::future::Future<Output = ()>>(
    work: impl FnOnce() -> F,
) -> (ByLabels<u64>, ByLabels<usize>) {
    let recorder = DebuggingRecorder::new();
    let snapshotter = recorder.snapshotter();
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_time()
        .start_paused(true)
        .build()
        .unwrap();
    metrics::with_local_recorder(&recorder, || runtime.block_on(work()));
    recorded(&snapshotter)
}

/// The counts and durations of `ok` answers on `/` and `failed` ones on `/fail`.
fn counted(ok: u64, failed: u64) -> (ByLabels<u64>, ByLabels<usize>) {
    (
        vec![
            ("route=/,method=POST,status=200".to_owned(), ok),
            ("route=/fail,method=POST,status=503".to_owned(), failed),
        ],
        vec![
            ("route=/".to_owned(), ok as usize),
            ("route=/fail".to_owned(), failed as usize),
        ],
    )
}

/// Request counts, and numbers of durations recorded, by their labels.
type ByLabels<T> = Vec<(String, T)>;

/// The request counts and the number of durations, by their labels, sorted; checks that the
/// in-flight gauge is back at zero.
fn recorded(
    snapshotter: &metrics_util::debugging::Snapshotter,
) -> (ByLabels<u64>, ByLabels<usize>) {
    let mut counts = Vec::new();
    let mut durations = Vec::new();
    for (key, _, _, value) in snapshotter.snapshot().into_vec() {
        let labels: Vec<String> = key
            .key()
            .labels()
            .map(|l| format!("{}={}", l.key(), l.value()))
            .collect();
        match (key.kind(), key.key().name(), value) {
            (MetricKind::Counter, REQUESTS_TOTAL, DebugValue::Counter(n)) => {
                counts.push((labels.join(","), n))
            }
            (MetricKind::Histogram, REQUEST_DURATION_SECONDS, DebugValue::Histogram(values)) => {
                durations.push((labels.join(","), values.len()))
            }
            (MetricKind::Gauge, REQUESTS_IN_FLIGHT, DebugValue::Gauge(value)) => {
                // Every request entered and left.
                assert_eq!(value.into_inner(), 0.0);
            }
            other => panic!("unexpected metric {other:?}"),
        }
    }
    counts.sort();
    durations.sort();
    (counts, durations)
}

#[test]
fn the_duration_is_written_in_milliseconds_to_the_microsecond() {
    use super::future::server_timing;
    for (elapsed, expected) in [
        (Duration::ZERO, "app;dur=0.000"),
        (Duration::from_nanos(999), "app;dur=0.000"),
        (Duration::from_micros(5), "app;dur=0.005"),
        (Duration::from_micros(1_070), "app;dur=1.070"),
        (Duration::from_micros(1_234_567), "app;dur=1234.567"),
        (Duration::from_secs(86_400), "app;dur=86400000.000"),
        (Duration::MAX, "app;dur=18446744073709551615999.999"),
    ] {
        assert_eq!(server_timing(elapsed), expected, "{elapsed:?}");
    }
}

#[test]
fn every_status_is_labelled_with_its_code() {
    use super::future::status_label;
    for code in 100..=999 {
        let status = StatusCode::from_u16(code).unwrap();
        assert_eq!(status_label(status), status.as_str(), "{code}");
    }
}

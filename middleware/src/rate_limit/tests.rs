use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use governor::clock::FakeRelativeClock;
use http::{Request, Response, StatusCode};
use kalamdb_http::{full, BoxError, ClientAddr, ResponseBody};
use tower::{Service, ServiceBuilder, ServiceExt};

use super::{Config, KeyBy, RateLimitLayer};
use crate::rescue::RescueLayer;

fn enabled(key: KeyBy, requests_per_second: u32, burst: u32) -> Config {
    Config {
        enabled: true,
        key,
        requests_per_second,
        burst,
        ..Config::default()
    }
}

/// A rate-limited stack over a handler that counts the requests it sees.
struct Harness {
    layer: RateLimitLayer<FakeRelativeClock>,
    clock: FakeRelativeClock,
    seen: Arc<AtomicUsize>,
}

impl Harness {
    fn new(config: Config) -> Self {
        let clock = FakeRelativeClock::default();
        Self {
            layer: RateLimitLayer::with_clock(&config, clock.clone()),
            clock,
            seen: Arc::default(),
        }
    }

    async fn send_from(&self, peer: &str) -> Response<ResponseBody> {
        let seen = Arc::clone(&self.seen);
        let mut request = Request::new(());
        let addr: SocketAddr = format!("{peer}:5000").parse().unwrap();
        request.extensions_mut().insert(ClientAddr(addr));
        ServiceBuilder::new()
            .layer(RescueLayer::new())
            .layer(self.layer.clone())
            .service_fn(move |_: Request<()>| {
                seen.fetch_add(1, Ordering::SeqCst);
                async { Ok::<_, BoxError>(Response::new(full("ok"))) }
            })
            .oneshot(request)
            .await
            .unwrap()
    }

    async fn statuses_from(&self, peer: &str, count: usize) -> Vec<u16> {
        let mut statuses = Vec::new();
        for _ in 0..count {
            statuses.push(self.send_from(peer).await.status().as_u16());
        }
        statuses
    }
}

#[tokio::test]
async fn five_per_second_with_a_burst_of_five_admits_five_quick_requests() {
    let harness = Harness::new(enabled(KeyBy::Ip, 5, 5));
    let statuses = harness.statuses_from("10.0.0.1", 8).await;
    assert_eq!(statuses, [200, 200, 200, 200, 200, 429, 429, 429]);
    // Refused requests never reached the handler.
    assert_eq!(harness.seen.load(Ordering::SeqCst), 5);
}

#[tokio::test]
async fn a_refusal_is_json_with_retry_after_and_the_allowance_refills() {
    let harness = Harness::new(enabled(KeyBy::Ip, 2, 1));
    assert_eq!(harness.send_from("10.0.0.1").await.status(), 200);
    let refused = harness.send_from("10.0.0.1").await;
    assert_eq!(refused.status(), StatusCode::TOO_MANY_REQUESTS);
    assert_eq!(refused.headers()["retry-after"], "1");
    assert_eq!(refused.headers()["content-type"], "application/json");
    let body = http_body_util::BodyExt::collect(refused.into_body())
        .await
        .unwrap()
        .to_bytes();
    let body: serde_json::Value = serde_json::from_slice(&body).unwrap();
    assert_eq!(body["error"], "rate_limited");

    // Two per second: one request's worth comes back after half a second.
    harness.clock.advance(Duration::from_millis(499));
    assert_eq!(harness.send_from("10.0.0.1").await.status(), 429);
    harness.clock.advance(Duration::from_millis(1));
    assert_eq!(harness.send_from("10.0.0.1").await.status(), 200);
}

#[tokio::test]
async fn each_ip_has_its_own_allowance() {
    let harness = Harness::new(enabled(KeyBy::Ip, 1, 2));
    assert_eq!(harness.statuses_from("10.0.0.1", 3).await, [200, 200, 429]);
    assert_eq!(harness.statuses_from("10.0.0.2", 3).await, [200, 200, 429]);
}

#[tokio::test]
async fn a_global_limit_is_shared_by_every_peer() {
    let harness = Harness::new(enabled(KeyBy::Global, 1, 2));
    assert_eq!(harness.statuses_from("10.0.0.1", 1).await, [200]);
    assert_eq!(harness.statuses_from("10.0.0.2", 2).await, [200, 429]);
}

#[tokio::test]
async fn quiet_peers_are_pruned_on_schedule() {
    let config = Config {
        prune_interval_ms: 60_000,
        ..enabled(KeyBy::Ip, 10, 10)
    };
    let harness = Harness::new(config);
    for i in 0..100 {
        harness.send_from(&format!("10.0.1.{i}")).await;
    }
    assert_eq!(harness.layer.tracked_keys(), 100);
    // Their allowances have refilled, but the next prune is not due yet.
    harness.clock.advance(Duration::from_secs(59));
    harness.send_from("10.0.2.1").await;
    assert_eq!(harness.layer.tracked_keys(), 101);
    // Now it is: the first request after the interval drops every quiet peer.
    harness.clock.advance(Duration::from_secs(1));
    harness.send_from("10.0.2.2").await;
    assert!(
        harness.layer.tracked_keys() <= 2,
        "{}",
        harness.layer.tracked_keys()
    );
}

#[tokio::test]
async fn a_refused_request_never_asks_the_inner_service_for_readiness() {
    let polled = Arc::new(AtomicUsize::new(0));
    let layer =
        RateLimitLayer::with_clock(&enabled(KeyBy::Global, 1, 1), FakeRelativeClock::default());
    let inner =
        tower::service_fn(|_: Request<()>| async { Ok::<_, BoxError>(Response::new(full("ok"))) });
    let mut service = ServiceBuilder::new().layer(layer).service(CountReady {
        inner,
        polled: Arc::clone(&polled),
    });
    for _ in 0..3 {
        let _ = service.ready().await.unwrap().call(Request::new(())).await;
    }
    assert_eq!(polled.load(Ordering::SeqCst), 1);
}

#[derive(Clone)]
struct CountReady<S> {
    inner: S,
    polled: Arc<AtomicUsize>,
}

impl<S: Service<Request<()>>> Service<Request<()>> for CountReady<S> {
    type Response = S::Response;
    type Error = S::Error;
    type Future = S::Future;

    fn poll_ready(
        &mut self,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Result<(), Self::Error>> {
        self.polled.fetch_add(1, Ordering::SeqCst);
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, request: Request<()>) -> Self::Future {
        self.inner.call(request)
    }
}

#[test]
fn off_by_default_and_bad_settings_name_their_key() {
    assert!(Config::default().layer().is_none());
    for (config, key) in [
        (
            enabled(KeyBy::Ip, 0, 1),
            "middleware.rate_limit.requests_per_second",
        ),
        (enabled(KeyBy::Ip, 1, 0), "middleware.rate_limit.burst"),
        (
            Config {
                prune_interval_ms: 0,
                ..enabled(KeyBy::Ip, 1, 1)
            },
            "middleware.rate_limit.prune_interval_ms",
        ),
    ] {
        assert_eq!(config.validate().unwrap_err().key, key);
    }
}

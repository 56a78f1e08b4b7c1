use std::io::Write;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use http::{Request, Response, StatusCode};
use http_body_util::Full;
use kalamdb_http::{full, ApiError, BoxError, ClientAddr, RequestId, ResponseBody};
use tower::{ServiceBuilder, ServiceExt};
use tracing_subscriber::fmt::MakeWriter;

use super::{Config, RequestLogLayer};
use crate::rescue::RescueLayer;

/// Collects what the subscriber writes.
#[derive(Clone, Default)]
struct Captured(Arc<Mutex<Vec<u8>>>);

impl Write for Captured {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl<'a> MakeWriter<'a> for Captured {
    type Writer = Captured;
    fn make_writer(&'a self) -> Self::Writer {
        self.clone()
    }
}

impl Captured {
    fn text(&self) -> String {
        String::from_utf8(self.0.lock().unwrap().clone()).unwrap()
    }
}

fn capture() -> (Captured, tracing::subscriber::DefaultGuard) {
    let captured = Captured::default();
    let subscriber = tracing_subscriber::fmt()
        .with_writer(captured.clone())
        .with_ansi(false)
        .finish();
    (
        captured.clone(),
        tracing::subscriber::set_default(subscriber),
    )
}

fn request(body: &'static str) -> Request<Full<Bytes>> {
    let mut request = Request::post("/api/v1/messages?token=abc")
        .body(Full::new(Bytes::from_static(body.as_bytes())))
        .unwrap();
    request
        .extensions_mut()
        .insert(ClientAddr("127.0.0.1:4321".parse().unwrap()));
    request
        .extensions_mut()
        .insert(RequestId(http::HeaderValue::from_static("req-42")));
    request
}

#[tokio::test(start_paused = true)]
async fn logs_method_path_status_latency_and_peer_but_no_content() {
    let (captured, _guard) = capture();
    let response = ServiceBuilder::new()
        .layer(RequestLogLayer::new(Duration::from_secs(1)))
        .service_fn(|_: Request<Full<Bytes>>| async {
            tokio::time::sleep(Duration::from_millis(25)).await;
            Ok::<_, BoxError>(Response::new(full("stored")))
        })
        .oneshot(request(r#"{"content":"top secret words"}"#))
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    let log = captured.text();
    assert!(log.contains("method=POST"), "{log}");
    assert!(log.contains("path=/api/v1/messages"), "{log}");
    assert!(log.contains("peer=127.0.0.1:4321"), "{log}");
    assert!(log.contains("status=200"), "{log}");
    assert!(log.contains("latency_ms=25"), "{log}");
    assert!(log.contains("request_id=req-42"), "{log}");
    assert!(log.contains("response_bytes=6"), "{log}");
    assert!(log.contains(" INFO "), "{log}");
    assert!(!log.contains("top secret"), "{log}");
    assert!(!log.contains("token=abc"), "{log}");
}

/// A body whose length is not known up front, like an event stream's.
struct Unsized;

impl http_body::Body for Unsized {
    type Data = Bytes;
    type Error = std::convert::Infallible;

    fn poll_frame(
        self: std::pin::Pin<&mut Self>,
        _: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Option<Result<http_body::Frame<Bytes>, Self::Error>>> {
        std::task::Poll::Ready(None)
    }
}

#[tokio::test]
async fn a_missing_peer_and_an_unknown_length_log_as_dashes() {
    let (captured, _guard) = capture();
    let request = Request::get("/api/v1/stream")
        .body(Full::new(Bytes::new()))
        .unwrap();
    ServiceBuilder::new()
        .layer(RequestLogLayer::new(Duration::from_secs(1)))
        .service_fn(|_: Request<Full<Bytes>>| async { Ok::<_, BoxError>(Response::new(Unsized)) })
        .oneshot(request)
        .await
        .unwrap();
    let log = captured.text();
    assert!(log.contains("peer=-"), "{log}");
    assert!(log.contains("response_bytes=-"), "{log}");
    assert!(log.contains("request_id=-"), "{log}");
}

#[tokio::test]
async fn logs_refusals_with_the_status_the_client_gets() {
    let (captured, _guard) = capture();
    let response = ServiceBuilder::new()
        .layer(RequestLogLayer::new(Duration::from_secs(1)))
        .layer(RescueLayer::new())
        .service_fn(|_: Request<Full<Bytes>>| async {
            Err::<Response<ResponseBody>, BoxError>(Box::new(ApiError::unavailable()))
        })
        .oneshot(request("{}"))
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::SERVICE_UNAVAILABLE);
    let log = captured.text();
    assert!(log.contains("status=503"), "{log}");
    assert!(log.contains("request_id=req-42"), "{log}");
}

#[tokio::test(start_paused = true)]
async fn a_slow_request_logs_at_warn() {
    let (captured, _guard) = capture();
    let slow = Config {
        enabled: true,
        slow_request_ms: 100,
    };
    let service = ServiceBuilder::new()
        .layer(slow.layer().unwrap())
        .service_fn(|request: Request<Full<Bytes>>| async move {
            let wait = if request.uri().path() == "/slow" {
                100
            } else {
                99
            };
            tokio::time::sleep(Duration::from_millis(wait)).await;
            Ok::<_, BoxError>(Response::new(full("")))
        });
    for path in ["/quick", "/slow"] {
        let request = Request::get(path).body(Full::new(Bytes::new())).unwrap();
        service.clone().oneshot(request).await.unwrap();
    }
    let log = captured.text();
    let line = |path: &str| {
        log.lines()
            .find(|l| l.contains(&format!("path={path}")))
            .unwrap_or_else(|| panic!("no line for {path}: {log}"))
            .to_owned()
    };
    assert!(line("/quick").contains(" INFO "), "{log}");
    assert!(line("/slow").contains(" WARN "), "{log}");
    assert!(line("/slow").contains("slow=true"), "{log}");
}

#[test]
fn can_be_switched_off() {
    let off = Config {
        enabled: false,
        ..Config::default()
    };
    assert!(off.layer().is_none());
    assert!(Config::default().layer().is_some());
}

use std::io::Write;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use http::{Request, Response, StatusCode};
use http_body_util::Full;
use kalamdb_http::{full, ApiError, BoxError, ClientAddr, ResponseBody};
use tower::{ServiceBuilder, ServiceExt};
use tracing_subscriber::fmt::MakeWriter;

use super::RequestLogLayer;

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
}

#[tokio::test(start_paused = true)]
async fn logs_method_path_status_latency_and_peer_but_no_content() {
    let (captured, _guard) = capture();
    let response = ServiceBuilder::new()
        .layer(RequestLogLayer::new())
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
    assert!(!log.contains("top secret"), "{log}");
    assert!(!log.contains("token=abc"), "{log}");
}

#[tokio::test]
async fn logs_errors_with_the_status_they_will_get() {
    let (captured, _guard) = capture();
    let result = ServiceBuilder::new()
        .layer(RequestLogLayer::new())
        .service_fn(|_: Request<Full<Bytes>>| async {
            Err::<Response<ResponseBody>, BoxError>(Box::new(ApiError::unavailable()))
        })
        .oneshot(request("{}"))
        .await;
    assert!(result.is_err(), "the error passes on to the rescue layer");
    let log = captured.text();
    assert!(log.contains("status=503"), "{log}");
    assert!(
        log.contains("error=\"unavailable\"") || log.contains("error=unavailable"),
        "{log}"
    );
}

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

use bytes::Bytes;
use http::{Request, Response, StatusCode};
use http_body_util::{BodyExt, Full};
use kalamdb_http::{full, read_json, BoxError, ResponseBody};
use tower::{ServiceBuilder, ServiceExt};

use super::{Config, LimitedBody};
use crate::rescue::RescueLayer;

/// An endpoint that parses the body as JSON, as the real ones do, and counts its calls.
async fn run(
    limit: u64,
    body: &'static [u8],
    declare_length: bool,
) -> (Response<ResponseBody>, usize) {
    let calls = Arc::new(AtomicUsize::new(0));
    let counter = calls.clone();
    let service = ServiceBuilder::new()
        .layer(RescueLayer::new())
        .layer(Config { max_bytes: limit }.layer())
        .service_fn(move |request: Request<LimitedBody<Full<Bytes>>>| {
            counter.fetch_add(1, Ordering::SeqCst);
            async move {
                let (parts, body) = request.into_parts();
                Ok::<_, BoxError>(
                    match read_json::<serde_json::Value, _>(&parts.headers, body).await {
                        Ok(_) => Response::new(full("ok")),
                        Err(e) => e.to_response(),
                    },
                )
            }
        });
    let mut request = Request::builder().header("content-type", "application/json");
    if declare_length {
        request = request.header("content-length", body.len());
    }
    let request = request.body(Full::new(Bytes::from_static(body))).unwrap();
    let response = service.oneshot(request).await.unwrap();
    (response, calls.load(Ordering::SeqCst))
}

async fn error_code(response: Response<ResponseBody>) -> String {
    let bytes = response.into_body().collect().await.unwrap().to_bytes();
    let value: serde_json::Value = serde_json::from_slice(&bytes).unwrap();
    value["error"].as_str().unwrap().to_owned()
}

#[tokio::test]
async fn a_declared_length_over_the_limit_is_refused_before_reading() {
    let (response, calls) = run(8, br#"{"a":[1,2,3]}"#, true).await;
    assert_eq!(response.status(), StatusCode::PAYLOAD_TOO_LARGE);
    assert_eq!(calls, 0, "the endpoint must not run");
    assert_eq!(error_code(response).await, "payload_too_large");
}

#[tokio::test]
async fn a_body_at_the_limit_passes() {
    let (response, calls) = run(13, br#"{"a":[1,2,3]}"#, true).await;
    assert_eq!(response.status(), StatusCode::OK);
    assert_eq!(calls, 1);
}

#[tokio::test]
async fn an_undeclared_body_is_counted_as_it_streams() {
    let (response, _) = run(8, br#"{"a":[1,2,3]}"#, false).await;
    assert_eq!(response.status(), StatusCode::PAYLOAD_TOO_LARGE);
    assert_eq!(error_code(response).await, "payload_too_large");

    let (response, _) = run(13, br#"{"a":[1,2,3]}"#, false).await;
    assert_eq!(response.status(), StatusCode::OK);
}

#[test]
fn config_reads_from_toml_with_its_default() {
    let config: Config = toml::from_str("max_bytes = 1024").unwrap();
    assert_eq!(config.max_bytes, 1024);
    let config: Config = toml::from_str("").unwrap();
    assert_eq!(config, Config::default());
    assert!(toml::from_str::<Config>("max_byte = 1").is_err());
}

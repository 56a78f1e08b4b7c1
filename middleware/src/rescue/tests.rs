use std::time::Duration;

use http::{Request, Response, StatusCode};
use http_body_util::BodyExt;
use kalamdb_http::{full, ApiError, BodyTooLarge, BoxError, ResponseBody};
use tower::{service_fn, ServiceBuilder, ServiceExt};

use super::RescueLayer;

async fn json(response: Response<ResponseBody>) -> serde_json::Value {
    let bytes = response.into_body().collect().await.unwrap().to_bytes();
    serde_json::from_slice(&bytes).unwrap()
}

async fn rescue_error(error: BoxError) -> Response<ResponseBody> {
    let mut error = Some(error);
    ServiceBuilder::new()
        .layer(RescueLayer::new())
        .service_fn(move |_: Request<()>| {
            let error = error.take().unwrap();
            async move { Err::<Response<ResponseBody>, _>(error) }
        })
        .oneshot(Request::new(()))
        .await
        .unwrap()
}

#[tokio::test]
async fn passes_responses_through() {
    let response = ServiceBuilder::new()
        .layer(RescueLayer::new())
        .service_fn(|_: Request<()>| async { Ok::<_, BoxError>(Response::new(full("fine"))) })
        .oneshot(Request::new(()))
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::OK);
}

#[tokio::test]
async fn renders_typed_errors() {
    let response = rescue_error(Box::new(ApiError::validation("limit must be at least 1"))).await;
    assert_eq!(response.status(), StatusCode::BAD_REQUEST);
    assert_eq!(json(response).await["message"], "limit must be at least 1");

    let response = rescue_error(Box::new(BodyTooLarge { limit: 10 })).await;
    assert_eq!(response.status(), StatusCode::PAYLOAD_TOO_LARGE);
    assert_eq!(json(response).await["error"], "payload_too_large");
}

#[tokio::test]
async fn unknown_errors_are_500_without_details() {
    let response = rescue_error("secret database path /var/db".into()).await;
    assert_eq!(response.status(), StatusCode::INTERNAL_SERVER_ERROR);
    let body = json(response).await;
    assert_eq!(body["error"], "internal");
    assert!(!body["message"].as_str().unwrap().contains("secret"));
}

#[tokio::test(start_paused = true)]
async fn a_timeout_is_503_timeout() {
    let response = ServiceBuilder::new()
        .layer(RescueLayer::new())
        .layer(tower::timeout::TimeoutLayer::new(Duration::from_millis(
            100,
        )))
        .service_fn(|_: Request<()>| async {
            tokio::time::sleep(Duration::from_secs(10)).await;
            Ok::<_, BoxError>(Response::new(full("late")))
        })
        .oneshot(Request::new(()))
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(response.headers()["retry-after"], "1");
    assert_eq!(json(response).await["error"], "timeout");
}

#[tokio::test]
async fn a_panic_in_the_handler_future_is_500() {
    let response = ServiceBuilder::new()
        .layer(RescueLayer::new())
        .service_fn(|_: Request<()>| async {
            if true {
                panic!("handler bug");
            }
            Ok::<_, BoxError>(Response::new(full("unreachable")))
        })
        .oneshot(Request::new(()))
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::INTERNAL_SERVER_ERROR);
    assert_eq!(json(response).await["error"], "internal");
}

#[tokio::test]
async fn a_panic_in_call_is_500() {
    let inner = service_fn(
        |_: Request<()>| -> std::future::Ready<Result<Response<ResponseBody>, BoxError>> {
            panic!("call bug")
        },
    );
    let response = ServiceBuilder::new()
        .layer(RescueLayer::new())
        .service(inner)
        .oneshot(Request::new(()))
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::INTERNAL_SERVER_ERROR);
}

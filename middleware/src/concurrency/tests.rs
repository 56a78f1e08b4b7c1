use std::sync::{Arc, Mutex};

use http::{Request, Response, StatusCode};
use kalamdb_http::{full, BoxError};
use tokio::sync::oneshot;
use tower::{Service, ServiceBuilder, ServiceExt};

use super::Config;
use crate::rescue::RescueLayer;
use crate::timeout;

#[tokio::test]
async fn a_request_beyond_the_limit_is_shed_at_once_and_the_slot_comes_back() {
    let config = Config {
        enabled: true,
        max_in_flight: 1,
    };
    // The /hold request says when it is being handled, then waits to be let go.
    let (started_tx, started) = oneshot::channel::<()>();
    let (release, released) = oneshot::channel::<()>();
    let gate = Arc::new(Mutex::new(Some((started_tx, released))));
    let service = ServiceBuilder::new()
        .layer(RescueLayer::new())
        .option_layer(config.layer())
        .service_fn(move |request: Request<()>| {
            let gate = if request.uri().path() == "/hold" {
                gate.lock().unwrap().take()
            } else {
                None
            };
            async move {
                if let Some((started, released)) = gate {
                    let _ = started.send(());
                    let _ = released.await;
                }
                Ok::<_, BoxError>(Response::new(full("ok")))
            }
        });

    let held = tokio::spawn(
        service
            .clone()
            .oneshot(Request::get("/hold").body(()).unwrap()),
    );
    started.await.unwrap();
    let shed = service.clone().oneshot(Request::new(())).await.unwrap();
    assert_eq!(shed.status(), StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(shed.headers()["retry-after"], "1");
    let body = http_body_util::BodyExt::collect(shed.into_body())
        .await
        .unwrap()
        .to_bytes();
    assert!(String::from_utf8_lossy(&body).contains("\"overloaded\""));

    release.send(()).unwrap();
    assert_eq!(held.await.unwrap().unwrap().status(), StatusCode::OK);
    let after = service.oneshot(Request::new(())).await.unwrap();
    assert_eq!(after.status(), StatusCode::OK);
}

#[tokio::test(start_paused = true)]
async fn a_timed_out_request_frees_its_slot() {
    let config = Config {
        enabled: true,
        max_in_flight: 1,
    };
    let mut service = ServiceBuilder::new()
        .layer(RescueLayer::new())
        .option_layer(config.layer())
        .layer(
            timeout::Config {
                request_timeout_ms: 100,
            }
            .layer(),
        )
        .service_fn(|request: Request<()>| async move {
            if request.uri().path() == "/stall" {
                std::future::pending::<()>().await;
            }
            Ok::<_, BoxError>(Response::new(full("ok")))
        });
    let stalled = service
        .ready()
        .await
        .unwrap()
        .call(Request::get("/stall").body(()).unwrap())
        .await
        .unwrap();
    assert_eq!(stalled.status(), StatusCode::SERVICE_UNAVAILABLE);
    let next = service
        .ready()
        .await
        .unwrap()
        .call(Request::new(()))
        .await
        .unwrap();
    assert_eq!(next.status(), StatusCode::OK);
}

#[test]
fn zero_is_refused_naming_the_key() {
    let config = Config {
        enabled: true,
        max_in_flight: 0,
    };
    assert_eq!(
        config.validate().unwrap_err().key,
        "middleware.concurrency.max_in_flight"
    );
    let off = Config {
        enabled: false,
        ..Config::default()
    };
    assert!(off.layer().is_none());
}

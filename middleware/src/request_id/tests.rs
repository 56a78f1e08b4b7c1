use http::{Request, Response, StatusCode};
use kalamdb_http::{full, BoxError, RequestId, ResponseBody};
use tower::{ServiceBuilder, ServiceExt};

use super::Config;

/// Runs one request through the layer; returns the id the handler saw and the response's id.
async fn ids(config: Config, incoming: Option<&str>) -> (String, String) {
    let mut request = Request::builder();
    if let Some(id) = incoming {
        request = request.header("x-request-id", id);
    }
    let response = ServiceBuilder::new()
        .layer(config.layer())
        .service_fn(|request: Request<()>| async move {
            let seen = request.extensions().get::<RequestId>().unwrap().clone();
            assert_eq!(request.headers()["x-request-id"], seen.0);
            let mut response = Response::new(full(""));
            response.headers_mut().insert("x-seen", seen.0.clone());
            Ok::<Response<ResponseBody>, BoxError>(response)
        })
        .oneshot(request.body(()).unwrap())
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    let header = |name: &str| response.headers()[name].to_str().unwrap().to_owned();
    (header("x-seen"), header("x-request-id"))
}

#[tokio::test]
async fn keeps_a_well_formed_client_id() {
    let (seen, returned) = ids(Config::default(), Some("client-7f3a")).await;
    assert_eq!(seen, "client-7f3a");
    assert_eq!(returned, "client-7f3a");
}

#[tokio::test]
async fn makes_a_fresh_uuid_for_each_request_without_one() {
    let (seen, returned) = ids(Config::default(), None).await;
    assert_eq!(seen, returned);
    assert!(uuid::Uuid::parse_str(&returned).is_ok(), "{returned}");
    let (_, other) = ids(Config::default(), None).await;
    assert_ne!(returned, other);
}

#[tokio::test]
async fn replaces_an_id_that_would_garble_a_log_line() {
    let long = "x".repeat(super::MAX_LEN + 1);
    for bad in ["", "has space", long.as_str()] {
        let (seen, returned) = ids(Config::default(), Some(bad)).await;
        assert_eq!(seen, returned);
        assert!(uuid::Uuid::parse_str(&returned).is_ok(), "{bad:?} kept");
    }
}

#[tokio::test]
async fn can_ignore_client_ids() {
    let config = Config {
        trust_incoming: false,
    };
    let (_, returned) = ids(config, Some("client-7f3a")).await;
    assert_ne!(returned, "client-7f3a");
    assert!(uuid::Uuid::parse_str(&returned).is_ok());
}

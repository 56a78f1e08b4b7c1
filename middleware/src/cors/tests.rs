use http::{Method, Request, Response, StatusCode};
use kalamdb_http::{full, BoxError, ResponseBody};
use tower::{ServiceBuilder, ServiceExt};

use super::Config;

fn allowing(origins: &[&str]) -> Config {
    Config {
        allowed_origins: origins.iter().map(|o| (*o).to_owned()).collect(),
        ..Config::default()
    }
}

async fn send(config: &Config, request: Request<()>) -> Response<ResponseBody> {
    ServiceBuilder::new()
        .option_layer(config.layer().unwrap())
        .service_fn(|_: Request<()>| async { Ok::<_, BoxError>(Response::new(full("{}"))) })
        .oneshot(request)
        .await
        .unwrap()
}

fn preflight(origin: &str) -> Request<()> {
    Request::builder()
        .method(Method::OPTIONS)
        .uri("/api/v1/messages")
        .header("origin", origin)
        .header("access-control-request-method", "POST")
        .header("access-control-request-headers", "content-type")
        .body(())
        .unwrap()
}

#[tokio::test]
async fn an_allowed_origin_gets_a_preflight_answer_and_its_header() {
    let config = allowing(&["https://chat.example"]);
    let response = send(&config, preflight("https://chat.example")).await;
    assert_eq!(response.status(), StatusCode::OK);
    let headers = response.headers();
    assert_eq!(
        headers["access-control-allow-origin"],
        "https://chat.example"
    );
    assert_eq!(headers["access-control-allow-methods"], "GET,POST");
    assert!(headers["access-control-allow-headers"]
        .to_str()
        .unwrap()
        .contains("content-type"));
    assert_eq!(headers["access-control-max-age"], "600");

    let request = Request::get("/health")
        .header("origin", "https://chat.example")
        .body(())
        .unwrap();
    let response = send(&config, request).await;
    assert_eq!(
        response.headers()["access-control-allow-origin"],
        "https://chat.example"
    );
    assert!(response.headers()["access-control-expose-headers"]
        .to_str()
        .unwrap()
        .contains("x-request-id"));
}

#[tokio::test]
async fn another_origin_gets_no_allow_header() {
    let config = allowing(&["https://chat.example"]);
    let response = send(&config, preflight("https://evil.example")).await;
    assert!(response
        .headers()
        .get("access-control-allow-origin")
        .is_none());
}

#[tokio::test]
async fn a_star_allows_any_origin() {
    let response = send(&allowing(&["*"]), preflight("https://any.example")).await;
    assert_eq!(response.headers()["access-control-allow-origin"], "*");
}

#[test]
fn off_while_no_origin_is_allowed() {
    assert!(Config::default().layer().unwrap().is_none());
}

#[test]
fn bad_settings_name_their_key() {
    for (config, key) in [
        (
            allowing(&["chat.example"]),
            "middleware.cors.allowed_origins",
        ),
        (
            allowing(&["https://chat.example/"]),
            "middleware.cors.allowed_origins",
        ),
        (
            allowing(&["*", "https://chat.example"]),
            "middleware.cors.allowed_origins",
        ),
        (
            Config {
                allowed_methods: vec!["GE T".into()],
                ..allowing(&["*"])
            },
            "middleware.cors.allowed_methods",
        ),
        (
            Config {
                allowed_headers: vec!["bad header".into()],
                ..allowing(&["*"])
            },
            "middleware.cors.allowed_headers",
        ),
    ] {
        assert_eq!(config.validate().unwrap_err().key, key, "{config:?}");
    }
}

//! The app served by the real accept loop on 127.0.0.1, in this process.

use bytes::Bytes;
use http::{Request, StatusCode};
use http_body_util::Full;
use kalamdb_server::{Config, Drain};
use kalamdb_tests::{http1_client, http2_client, Answer, TestServer};
use serde_json::json;

fn insert_request(server: &TestServer, content: &str) -> Request<Full<Bytes>> {
    let body = json!({"conversation_id": "conv", "from": "bob", "content": content});
    Request::post(server.url("/api/v1/messages"))
        .header("content-type", "application/json")
        .body(Full::new(Bytes::from(body.to_string())))
        .unwrap()
}

fn get_request(server: &TestServer, path: &str) -> Request<Full<Bytes>> {
    Request::get(server.url(path))
        .body(Full::new(Bytes::new()))
        .unwrap()
}

#[tokio::test]
async fn serves_http1_and_h2c() {
    let server = TestServer::start(Config::default()).await;
    for (name, client) in [("http/1.1", http1_client()), ("h2c", http2_client())] {
        let response = client.request(insert_request(&server, name)).await.unwrap();
        let inserted = Answer::from_response(response).await;
        assert_eq!(
            inserted.status,
            StatusCode::OK,
            "{name}: {:?}",
            inserted.json
        );
        let id = inserted.json["msg_id"].as_str().unwrap();

        let response = client
            .request(get_request(&server, &format!("/api/v1/messages/{id}")))
            .await
            .unwrap();
        let fetched = Answer::from_response(response).await;
        assert_eq!(fetched.status, StatusCode::OK);
        assert_eq!(fetched.json["content"], name);
    }
    assert_eq!(server.shutdown().await, Drain::Complete);
}

#[tokio::test]
async fn errors_over_the_wire_are_json() {
    let server = TestServer::start(Config::default()).await;
    let client = http1_client();
    let response = client.request(get_request(&server, "/nope")).await.unwrap();
    let answer = Answer::from_response(response).await;
    assert_eq!(answer.status, StatusCode::NOT_FOUND);
    assert_eq!(answer.error_code(), "not_found");
    server.shutdown().await;
}

#[tokio::test]
async fn shutdown_stops_accepting_and_closes_the_store() {
    let server = TestServer::start(Config::default()).await;
    let addr = server.addr;
    let client = http1_client();
    let response = client
        .request(get_request(&server, "/health"))
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    drop(client);

    let store = server.store.handle.clone();
    assert_eq!(server.shutdown().await, Drain::Complete);
    assert!(
        tokio::net::TcpStream::connect(addr).await.is_err(),
        "still accepting"
    );
    assert!(
        store.health_check().await.is_err(),
        "the store should be closed"
    );
}

/// Sends `raw` on a fresh connection and reads until the server closes it.
async fn raw_exchange(server: &TestServer, raw: &[u8]) -> String {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut stream = tokio::net::TcpStream::connect(server.addr).await.unwrap();
    stream.write_all(raw).await.unwrap();
    let mut answer = Vec::new();
    tokio::time::timeout(
        std::time::Duration::from_secs(10),
        stream.read_to_end(&mut answer),
    )
    .await
    .expect("the server closes the connection after a protocol error")
    .unwrap();
    String::from_utf8(answer).unwrap()
}

#[tokio::test]
async fn requests_hyper_cannot_parse_get_the_json_error_body() {
    let server = TestServer::start(Config::default()).await;
    let insert = "POST /api/v1/messages HTTP/1.1\r\nHost: kalamdb\r\n\
                  Content-Type: application/json\r\n";
    let body = r#"{"conversation_id":"c","from":"a","content":"x"}"#;
    let cases = [
        (
            format!("{insert}Content-Length: abc\r\n\r\n{body}"),
            "400",
            "malformed_request",
        ),
        (
            format!("{insert}Content-Length: 5\r\nContent-Length: 6\r\n\r\n{body}"),
            "400",
            "malformed_request",
        ),
        (
            format!("{insert}Transfer-Encoding: gzip\r\n\r\n{body}"),
            "400",
            "malformed_request",
        ),
        (
            "GET /health HTTP/1.1\r\nHost: kalamdb\r\nno colon here\r\n\r\n".to_owned(),
            "400",
            "malformed_request",
        ),
        (
            "NOT HTTP AT ALL\r\n\r\n".to_owned(),
            "400",
            "malformed_request",
        ),
        (
            format!(
                "GET /{} HTTP/1.1\r\nHost: kalamdb\r\n\r\n",
                "a".repeat(70_000)
            ),
            "414",
            "uri_too_long",
        ),
        (
            format!(
                "GET /health HTTP/1.1\r\nHost: kalamdb\r\n{}\r\n",
                "X-A: b\r\n".repeat(200)
            ),
            "431",
            "headers_too_large",
        ),
    ];
    let mut request_ids = std::collections::HashSet::new();
    for (raw, status, code) in cases {
        let answer = raw_exchange(&server, raw.as_bytes()).await;
        let what = &raw[..raw.len().min(60)];
        assert!(
            answer.starts_with(&format!("HTTP/1.1 {status} ")),
            "{what}: {answer}"
        );
        let (head, body) = answer.split_once("\r\n\r\n").unwrap();
        assert!(
            head.contains("content-type: application/json"),
            "{what}: {head}"
        );
        // Like every other answer, each carries a request id of its own.
        let request_id = head
            .lines()
            .find_map(|line| line.strip_prefix("x-request-id: "))
            .unwrap_or_else(|| panic!("{what}: no x-request-id in {head}"));
        assert!(request_ids.insert(request_id.to_owned()), "{what}: {head}");
        let json: serde_json::Value = serde_json::from_str(body).expect(what);
        assert_eq!(json["error"], code, "{what}");
        assert!(
            json["message"].as_str().is_some_and(|m| !m.is_empty()),
            "{what}"
        );
    }
    // The connection-level answers stored nothing, and the server serves on.
    let client = http1_client();
    let query = Request::post(server.url("/api/v1/query"))
        .header("content-type", "application/json")
        .body(Full::new(Bytes::from(r#"{"conversation_id":"c"}"#)))
        .unwrap();
    let page = Answer::from_response(client.request(query).await.unwrap()).await;
    assert_eq!(page.status, StatusCode::OK);
    assert_eq!(page.json["count"], 0);
    server.shutdown().await;
}

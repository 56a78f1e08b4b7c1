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

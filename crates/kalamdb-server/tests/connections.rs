//! The real binary's connection handling: slowloris clients, the header read timeout,
//! keep-alive, the connection cap, and requests that are not valid HTTP.

mod common;

use std::io::{ErrorKind, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::Duration;

use common::{request, ServerDir};

/// Opens a connection and sends the first part of a request, then nothing more.
fn stall(addr: SocketAddr) -> TcpStream {
    let mut stream = TcpStream::connect_timeout(&addr, Duration::from_secs(5)).expect("connect");
    stream
        .write_all(b"POST /api/v1/messages HTTP/1.1\r\nHost: kalamdb\r\nContent-")
        .expect("send half a request");
    stream
}

/// Whether the server still holds `stream` open: a read neither ends nor fails at once.
fn still_open(stream: &mut TcpStream) -> bool {
    stream.set_nonblocking(true).unwrap();
    let mut byte = [0u8; 1];
    let open = matches!(stream.read(&mut byte), Err(e) if e.kind() == ErrorKind::WouldBlock);
    stream.set_nonblocking(false).unwrap();
    open
}

#[test]
fn five_hundred_stalled_clients_do_not_hold_up_a_normal_request() {
    // The stalls outlive the test: the answer below cannot come from their being cut off.
    let dir = ServerDir::with_server_keys("header_read_timeout_ms = 120000", "");
    let server = dir.start();
    let mut stalled: Vec<TcpStream> = (0..500).map(|_| stall(server.addr)).collect();

    // `request` gives up after 30 s, far sooner than the stalls would time out.
    let response = request(server.addr, "GET", "/health", None).expect("health while stalled");
    assert_eq!(response.status, 200);
    let stored = request(
        server.addr,
        "POST",
        "/api/v1/messages",
        Some(&serde_json::json!({"conversation_id": "c", "from": "a", "content": "hi"})),
    )
    .expect("insert while stalled");
    assert_eq!(stored.status, 200, "{:?}", stored.json);
    // The stalled clients were held open, not dropped to make room.
    assert!(stalled.iter_mut().take(20).all(still_open));
    drop(stalled);
    assert!(server.stop().success());
}

#[test]
fn a_client_that_never_finishes_its_headers_is_disconnected() {
    let dir = ServerDir::with_server_keys("header_read_timeout_ms = 300", "");
    let server = dir.start();
    let mut stalled = stall(server.addr);
    stalled
        .set_read_timeout(Some(Duration::from_secs(30)))
        .unwrap();
    let mut rest = Vec::new();
    match stalled.read_to_end(&mut rest) {
        // Closed by the server, possibly after a 408.
        Ok(_) => assert!(rest.is_empty() || rest.starts_with(b"HTTP/1.1 408")),
        Err(e) => assert_eq!(e.kind(), ErrorKind::ConnectionReset, "{e}"),
    }
    // The server itself is fine.
    assert_eq!(
        request(server.addr, "GET", "/health", None).unwrap().status,
        200
    );
}

#[test]
fn without_keep_alive_the_server_closes_after_each_answer() {
    let dir = ServerDir::with_server_keys("keep_alive = false", "");
    let server = dir.start();
    let mut stream = TcpStream::connect(server.addr).unwrap();
    stream
        .set_read_timeout(Some(Duration::from_secs(30)))
        .unwrap();
    // HTTP/1.1 without `Connection: close`: only the server's setting ends the connection.
    stream
        .write_all(b"GET /health HTTP/1.1\r\nHost: kalamdb\r\n\r\n")
        .unwrap();
    let mut answer = Vec::new();
    stream.read_to_end(&mut answer).expect("the server closes");
    let answer = String::from_utf8_lossy(&answer);
    assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
}

#[test]
fn at_the_connection_cap_a_new_client_waits_for_a_free_slot() {
    let dir =
        ServerDir::with_server_keys("max_connections = 1\nheader_read_timeout_ms = 120000", "");
    let server = dir.start();
    let holder = stall(server.addr);

    let mut waiting = TcpStream::connect(server.addr).unwrap();
    waiting
        .write_all(b"GET /health HTTP/1.1\r\nHost: kalamdb\r\nConnection: close\r\n\r\n")
        .unwrap();
    waiting
        .set_read_timeout(Some(Duration::from_millis(500)))
        .unwrap();
    let mut byte = [0u8; 1];
    let early = waiting.read(&mut byte);
    assert!(
        matches!(&early, Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut)),
        "answered while the only slot was taken: {early:?}"
    );

    drop(holder);
    waiting
        .set_read_timeout(Some(Duration::from_secs(30)))
        .unwrap();
    let mut answer = Vec::new();
    waiting
        .read_to_end(&mut answer)
        .expect("answered once a slot frees");
    assert!(String::from_utf8_lossy(&answer).starts_with("HTTP/1.1 200"));
}

/// Sends `raw` (then closes the writing half when `shut`), returns everything the server says.
fn exchange(addr: SocketAddr, raw: &[u8], shut: bool) -> String {
    let mut stream = TcpStream::connect(addr).unwrap();
    stream
        .set_read_timeout(Some(Duration::from_secs(30)))
        .unwrap();
    stream.write_all(raw).unwrap();
    if shut {
        stream.shutdown(std::net::Shutdown::Write).unwrap();
    }
    let mut answer = Vec::new();
    let _ = stream.read_to_end(&mut answer);
    String::from_utf8_lossy(&answer).into_owned()
}

#[test]
fn a_content_length_that_disagrees_with_the_body_is_a_json_400() {
    let dir = ServerDir::new("");
    let server = dir.start();
    let body = r#"{"conversation_id":"c","from":"a","content":"x"}"#;
    let head = |length: usize| {
        format!(
            "POST /api/v1/messages HTTP/1.1\r\nHost: kalamdb\r\nContent-Type: application/json\r\n\
             Content-Length: {length}\r\nConnection: close\r\n\r\n"
        )
    };
    // Shorter than the body: the JSON is cut off. Longer: the body ends before it.
    for (length, shut) in [(10, false), (body.len() + 50, true)] {
        let answer = exchange(
            server.addr,
            format!("{}{body}", head(length)).as_bytes(),
            shut,
        );
        assert!(answer.starts_with("HTTP/1.1 400"), "{length}: {answer}");
        assert!(
            answer.contains("\"error\":\"invalid_json\""),
            "{length}: {answer}"
        );
    }
    // Nothing was stored.
    let page = common::request(
        server.addr,
        "POST",
        "/api/v1/query",
        Some(&serde_json::json!({"conversation_id": "c"})),
    )
    .unwrap();
    assert_eq!(page.json["count"], 0);
}

#[test]
fn a_request_that_is_not_http_is_logged_with_the_id_its_answer_carries() {
    let dir = ServerDir::new("");
    let server = dir.start();
    let body = r#"{"conversation_id":"c","from":"a","content":"a very private sentence"}"#;
    let answer = exchange(
        server.addr,
        format!(
            "POST /api/v1/messages HTTP/1.1\r\nHost: kalamdb\r\n\
             Content-Type: application/json\r\nContent-Length: many\r\n\r\n{body}"
        )
        .as_bytes(),
        false,
    );
    assert!(answer.starts_with("HTTP/1.1 400"), "{answer}");
    assert!(
        answer.contains("\"error\":\"malformed_request\""),
        "{answer}"
    );
    let request_id = answer
        .lines()
        .find_map(|line| line.strip_prefix("x-request-id: "))
        .unwrap_or_else(|| panic!("no x-request-id in {answer}"))
        .to_owned();
    assert!(server.stop().success());

    let log = std::fs::read_to_string(dir.log_path()).unwrap();
    let line = log
        .lines()
        .find(|line| line.contains(&format!("request_id={request_id}")))
        .unwrap_or_else(|| panic!("no line with {request_id} in {log}"));
    for field in [
        "status=400",
        "error=\"malformed_request\"",
        "peer=127.0.0.1:",
    ] {
        assert!(line.contains(field), "{field} missing from {line}");
    }
    assert!(!log.contains("a very private sentence"), "{log}");
}

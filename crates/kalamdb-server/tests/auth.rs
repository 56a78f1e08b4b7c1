//! Auth in the real binary: protected mode, and credentials kept out of the log file and the
//! metrics.

mod common;

use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::PathBuf;
use std::time::Duration;

use common::{request_with, run_to_end, ServerDir};
use jsonwebtoken::{encode, EncodingKey, Header};
use serde_json::json;
use sha2::{Digest, Sha256};

fn fixture(name: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../../tests/fixtures/auth")
        .join(name)
}

#[test]
fn without_auth_a_host_other_than_loopback_stops_start_up_with_exit_2() {
    let dir = ServerDir::with_server_keys("host = \"0.0.0.0\"", "");
    let config = dir.config_path();
    let (status, _, stderr) = run_to_end(dir.dir.path(), &["--config", config.to_str().unwrap()]);
    assert_eq!(status.code(), Some(2), "{stderr}");
    for words in [
        "auth.enabled",
        "0.0.0.0",
        "enabled = true",
        "auth.allow_unauthenticated = true",
    ] {
        assert!(stderr.contains(words), "{words:?} missing from {stderr}");
    }
    // Nothing was started: no data directory, no log file.
    assert!(!dir.dir.path().join("data").exists());

    // Saying the network is trusted, or turning auth on, lets it start.
    let key = format!("{:x}", Sha256::digest("k"));
    for extra in [
        "[auth]\nallow_unauthenticated = true\n".to_owned(),
        format!(
            "[auth]\nenabled = true\n[[auth.api_keys]]\nname = \"b\"\nsha256 = \"{key}\"\nrole = \"service\"\n"
        ),
    ] {
        let dir = ServerDir::with_server_keys("host = \"0.0.0.0\"", &extra);
        let config = dir.config_path();
        let (status, _, stderr) = run_to_end(
            dir.dir.path(),
            &["--config", config.to_str().unwrap(), "--check-config"],
        );
        assert!(status.success(), "{extra}: {stderr}");
    }
}

#[test]
fn an_unreadable_key_file_stops_start_up_naming_the_key() {
    let dir = ServerDir::new(
        "[auth]\nenabled = true\n[auth.jwt]\nsecret_file = \"/nonexistent/jwt.secret\"\n",
    );
    let config = dir.config_path();
    let (status, _, stderr) = run_to_end(dir.dir.path(), &["--config", config.to_str().unwrap()]);
    assert_eq!(status.code(), Some(2), "{stderr}");
    assert!(stderr.contains("auth.jwt.secret_file"), "{stderr}");
}

/// Opens a stream with its token in the query, reads the response head, and hangs up.
fn open_stream(addr: std::net::SocketAddr, path: &str) -> String {
    let mut stream = TcpStream::connect_timeout(&addr, Duration::from_secs(5)).unwrap();
    stream
        .set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    write!(stream, "GET {path} HTTP/1.1\r\nHost: kalamdb\r\n\r\n").unwrap();
    let mut head = Vec::new();
    let mut byte = [0];
    while !head.ends_with(b"\r\n\r\n") {
        stream.read_exact(&mut byte).unwrap();
        head.push(byte[0]);
    }
    String::from_utf8(head).unwrap()
}

#[test]
fn tokens_and_keys_never_reach_the_log_file_or_the_metrics() {
    let service_key = "svc-LOGCANARY-3f9a1c";
    let admin_key = "adm-LOGCANARY-77b0e2";
    let wrong_key = "svc-LOGCANARY-wrong";
    let hash = |key: &str| format!("{:x}", Sha256::digest(key));
    let secret_file = fixture("hs256.secret");
    let dir = ServerDir::new(&format!(
        "[auth]\nenabled = true\n\
         [[auth.api_keys]]\nname = \"backend\"\nsha256 = \"{}\"\nrole = \"service\"\n\
         [[auth.api_keys]]\nname = \"ops\"\nsha256 = \"{}\"\nrole = \"admin\"\n\
         [auth.jwt]\nsecret_file = \"{}\"\n",
        hash(service_key),
        hash(admin_key),
        secret_file.display()
    ));
    let secret = std::fs::read(&secret_file).unwrap();
    let user_token = |user: &str, exp: u64| {
        let claims = json!({"sub": user, "exp": exp});
        encode(
            &Header::default(),
            &claims,
            &EncodingKey::from_secret(&secret).unwrap(),
        )
        .unwrap()
    };
    let now = jsonwebtoken::get_current_timestamp();
    let alice = user_token("alice", now + 600);
    let expired = user_token("alice", now - 3600);
    let server = dir.start();
    let addr = server.addr;

    let body = json!({"conversation_id": "c1", "from": "alice", "content": "hello"});
    let send = |token: Option<&str>, method: &str, path: &str, body: Option<&serde_json::Value>| {
        request_with(addr, method, path, token, body).unwrap()
    };
    assert_eq!(
        send(Some(service_key), "POST", "/api/v1/messages", Some(&body)).status,
        200
    );
    let query = json!({"conversation_id": "c1"});
    let page = send(Some(&alice), "POST", "/api/v1/query", Some(&query));
    assert_eq!(
        page.status, 404,
        "alice is not a member of c1: {:?}",
        page.json
    );
    assert_eq!(
        send(
            Some(&alice),
            "POST",
            "/api/v1/messages",
            Some(&json!(
                {"conversation_id": "a1", "from": "alice", "content": "mine"}
            ))
        )
        .status,
        200
    );
    for (token, path) in [
        (wrong_key, "/api/v1/conversations"),
        (expired.as_str(), "/api/v1/conversations"),
    ] {
        let refused = send(Some(token), "GET", path, None);
        assert_eq!(refused.status, 401);
        assert!(refused
            .head
            .to_ascii_lowercase()
            .contains("www-authenticate: bearer"));
        let message = refused.json["message"].as_str().unwrap();
        assert!(!message.contains(token), "{message}");
    }
    let head = open_stream(
        addr,
        &format!("/api/v1/conversations/a1/stream?access_token={alice}"),
    );
    assert!(head.starts_with("HTTP/1.1 200"), "{head}");
    let elsewhere = send(
        None,
        "GET",
        &format!("/api/v1/conversations/a1?access_token={alice}"),
        None,
    );
    assert_eq!(elsewhere.status, 401);

    let metrics = send(Some(admin_key), "GET", "/metrics", None);
    assert_eq!(metrics.status, 200);
    let mut raw_metrics = TcpStream::connect(addr).unwrap();
    write!(
        raw_metrics,
        "GET /metrics HTTP/1.1\r\nHost: k\r\nAuthorization: Bearer {admin_key}\r\nConnection: close\r\n\r\n"
    )
    .unwrap();
    let mut metrics_text = String::new();
    raw_metrics.read_to_string(&mut metrics_text).unwrap();
    assert!(
        metrics_text.contains("kalamdb_auth_refused_total"),
        "{metrics_text}"
    );
    assert!(server.stop().success());

    let log = std::fs::read_to_string(dir.log_path()).unwrap();
    let secret_text = String::from_utf8_lossy(&secret);
    let canaries = [
        service_key,
        admin_key,
        wrong_key,
        alice.as_str(),
        expired.as_str(),
        secret_text.as_ref(),
        "LOGCANARY",
    ];
    for canary in canaries {
        assert!(
            !log.contains(canary),
            "the log holds a credential: {canary}"
        );
        assert!(
            !metrics_text.contains(canary),
            "the metrics hold a credential: {canary}"
        );
    }
    // Each JWT's signature alone, too: no part of a token is logged.
    for token in [&alice, &expired] {
        let signature = token.rsplit('.').next().unwrap();
        assert!(!log.contains(signature));
    }
    // The log names who made each request, by key name or user id.
    let line = |needle: &str| {
        log.lines()
            .find(|line| line.contains(needle))
            .unwrap_or_else(|| panic!("no line with {needle:?} in {log}"))
            .to_owned()
    };
    assert!(line("principal=key:backend").contains("status=200"));
    assert!(line("principal=user:alice").contains("path=/api/v1/"));
    assert!(line("status=401").contains("principal=-"));
    assert!(line("path=/api/v1/conversations/a1/stream").contains("principal=user:alice"));
}

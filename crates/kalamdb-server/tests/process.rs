//! The real binary: start-up, requests, SIGTERM, restart, logs and configuration errors.

mod common;

use common::{request, run_to_end, ServerDir};
use serde_json::json;

fn insert(addr: std::net::SocketAddr, content: &str) -> u64 {
    let body = json!({"conversation_id": "conv_1", "from": "alice", "content": content});
    let response = request(addr, "POST", "/api/v1/messages", Some(&body)).expect("insert");
    assert_eq!(response.status, 200, "{:?}", response.json);
    response.json["msg_id"].as_str().unwrap().parse().unwrap()
}

#[test]
fn messages_survive_a_sigterm_restart_and_ids_keep_increasing() {
    let dir = ServerDir::new("");
    let server = dir.start();
    let first = insert(server.addr, "before restart");
    let second = insert(server.addr, "also before");
    assert!(second > first);
    let status = server.stop();
    assert!(status.success(), "exit status {status}");

    let server = dir.start();
    let response = request(
        server.addr,
        "GET",
        &format!("/api/v1/messages/{first}"),
        None,
    )
    .unwrap();
    assert_eq!(response.status, 200);
    assert_eq!(response.json["content"], "before restart");
    assert_eq!(response.json["msg_id"], first.to_string());
    let third = insert(server.addr, "after restart");
    assert!(third > second, "{third} is not above {second}");
    assert!(server.stop().success());
}

#[test]
fn the_log_file_holds_request_lines_but_no_content() {
    let dir = ServerDir::new("");
    let server = dir.start();
    insert(server.addr, "a very private sentence");
    assert!(server.stop().success());

    let log =
        std::fs::read_to_string(dir.log_path()).expect("log file exists at the configured path");
    assert!(log.contains("starting kalamdb-server"), "{log}");
    let request_line = log
        .lines()
        .find(|line| line.contains("path=/api/v1/messages") && line.contains("status=200"))
        .unwrap_or_else(|| panic!("no request line in {log}"));
    assert!(request_line.contains("method=POST"));
    assert!(request_line.contains("latency_ms="));
    assert!(request_line.contains("peer=127.0.0.1:"));
    assert!(request_line.contains("request_id="));
    assert!(request_line.contains("response_bytes="));
    assert!(!log.contains("a very private sentence"));
    // Start-up says what runs where, with which limits.
    let start = log
        .lines()
        .find(|line| line.contains("starting kalamdb-server"))
        .unwrap();
    for field in [
        "version=",
        "listen=127.0.0.1:",
        "storage=",
        "max_message_size=",
    ] {
        assert!(start.contains(field), "{field} missing from {start}");
    }
    // Each shutdown phase is logged.
    for phase in [
        "shutdown signal received",
        "stopped accepting",
        "flushing and closing the store",
        "store closed",
        "shutdown complete",
    ] {
        assert!(log.contains(phase), "missing {phase:?} in {log}");
    }
}

#[test]
fn json_logs_are_one_object_per_line() {
    let dir = ServerDir::new("");
    let config = std::fs::read_to_string(dir.config_path())
        .unwrap()
        .replace("[logging]\n", "[logging]\nformat = \"json\"\n");
    std::fs::write(dir.config_path(), config).unwrap();
    let server = dir.start();
    insert(server.addr, "x");
    assert!(server.stop().success());
    let log = std::fs::read_to_string(dir.log_path()).unwrap();
    for line in log.lines() {
        serde_json::from_str::<serde_json::Value>(line).unwrap_or_else(|e| panic!("{e}: {line}"));
    }
    assert!(log.contains("\"status\":200"), "{log}");
}

#[test]
fn a_bad_config_stops_start_up_naming_the_key() {
    let dir = tempfile::tempdir().unwrap();
    for (text, key) in [
        ("[server]\nprot = 8080\n", "prot"),
        ("[server]\nport = 0\n", "server.port"),
        ("[server]\nnode_id = 5000\n", "server.node_id"),
        ("[storage]\nsync_writes = \"yes\"\n", "storage.sync_writes"),
        (
            "[middleware.body_limit]\nmax_bytes = 10\n",
            "middleware.body_limit.max_bytes",
        ),
        ("[server\nport = 1\n", "line 1"),
    ] {
        let path = dir.path().join("bad.toml");
        std::fs::write(&path, text).unwrap();
        let (status, _, stderr) = run_to_end(dir.path(), &["--config", path.to_str().unwrap()]);
        assert!(!status.success(), "{text:?} was accepted");
        assert_eq!(status.code(), Some(2));
        assert!(stderr.contains(key), "{text:?}: {stderr}");
    }
    let (status, _, stderr) = run_to_end(dir.path(), &["--config", "missing.toml"]);
    assert_eq!(status.code(), Some(2));
    assert!(stderr.contains("missing.toml"), "{stderr}");
}

#[test]
fn check_config_prints_the_effective_config() {
    // With no file at all: the built-in defaults.
    let empty = tempfile::tempdir().unwrap();
    let (status, stdout, _) = run_to_end(empty.path(), &["--check-config"]);
    assert!(status.success());
    assert!(stdout.contains("built-in defaults"), "{stdout}");
    assert!(stdout.contains("port = 8080"), "{stdout}");
    assert!(
        stdout.contains("rocksdb_path = \"data/rocksdb\""),
        "{stdout}"
    );
    assert!(
        !empty.path().join("data").exists(),
        "--check-config must not open the store"
    );

    // ./config.toml is read when present.
    std::fs::write(empty.path().join("config.toml"), "[server]\nport = 9999\n").unwrap();
    let (status, stdout, _) = run_to_end(empty.path(), &["--check-config"]);
    assert!(status.success());
    assert!(stdout.contains("port = 9999"), "{stdout}");
}

#[test]
fn an_unusable_storage_path_fails_start_up_clearly() {
    let dir = tempfile::tempdir().unwrap();
    let blocker = dir.path().join("a-file");
    std::fs::write(&blocker, "not a directory").unwrap();
    let port = common::free_port();
    let config = format!(
        "[server]\nport = {port}\n[storage]\nrocksdb_path = \"{}\"\n[logging]\nfile_path = \"{}\"\n",
        blocker.join("db").display(),
        dir.path().join("app.log").display()
    );
    std::fs::write(dir.path().join("c.toml"), config).unwrap();
    let (status, _, stderr) = run_to_end(dir.path(), &["--config", "c.toml"]);
    assert_eq!(status.code(), Some(1));
    assert!(stderr.contains("cannot open the RocksDB store"), "{stderr}");
    assert!(stderr.contains("a-file"), "{stderr}");
}

#[test]
fn the_binary_pages_through_a_conversation() {
    let dir = ServerDir::new("[limits]\ndefault_query_limit = 2\n");
    let server = dir.start();
    let written: Vec<u64> = (0..5)
        .map(|i| insert(server.addr, &format!("m{i}")))
        .collect();
    let mut seen = Vec::new();
    let mut cursor = serde_json::Value::Null;
    loop {
        let body = json!({"conversation_id": "conv_1", "since_msg_id": cursor});
        let page = request(server.addr, "POST", "/api/v1/query", Some(&body)).unwrap();
        assert_eq!(page.status, 200, "{:?}", page.json);
        for message in page.json["messages"].as_array().unwrap() {
            seen.push(message["msg_id"].as_str().unwrap().parse::<u64>().unwrap());
        }
        if page.json["has_more"] == false {
            break;
        }
        cursor = page.json["next_cursor"].clone();
    }
    assert_eq!(seen, written);
    assert!(server.stop().success());
}

#[test]
fn hourly_rotation_writes_a_dated_file() {
    let dir = ServerDir::new("");
    let config = std::fs::read_to_string(dir.config_path())
        .unwrap()
        .replace("[logging]\n", "[logging]\nrotation = \"hourly\"\n");
    std::fs::write(dir.config_path(), config).unwrap();
    let server = dir.start();
    insert(server.addr, "x");
    assert!(server.stop().success());
    let logs = dir.log_path().parent().unwrap().to_owned();
    let files: Vec<String> = std::fs::read_dir(&logs)
        .unwrap()
        .map(|entry| entry.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    // server.log.YYYY-MM-DD-HH, and no undated file.
    let dated: Vec<&String> = files
        .iter()
        .filter(|name| {
            name.strip_prefix("server.log.").is_some_and(|date| {
                date.len() == 13 && date.chars().filter(|c| *c == '-').count() == 3
            })
        })
        .collect();
    assert!(!dated.is_empty(), "{files:?}");
    assert!(!files.iter().any(|name| name == "server.log"), "{files:?}");
    let text = dated
        .iter()
        .map(|name| std::fs::read_to_string(logs.join(name)).unwrap())
        .collect::<String>();
    assert!(text.contains("shutdown complete"), "{text}");
}

#[test]
fn inserts_in_flight_at_sigterm_are_acknowledged_and_survive_a_restart() {
    use std::io::{Read, Write};

    let dir = ServerDir::new("");
    let server = dir.start();
    // Each client sends its headers and half its body, then waits.
    let mut clients: Vec<(String, std::net::TcpStream, Vec<u8>)> = (0..5)
        .map(|i| {
            let content = format!("in flight {i}");
            let body =
                json!({"conversation_id": "drain", "from": "a", "content": content}).to_string();
            let mut stream = std::net::TcpStream::connect(server.addr).unwrap();
            stream
                .set_read_timeout(Some(std::time::Duration::from_secs(30)))
                .unwrap();
            let head = format!(
                "POST /api/v1/messages HTTP/1.1\r\nHost: kalamdb\r\n\
                 Content-Type: application/json\r\nContent-Length: {}\r\n\r\n",
                body.len()
            );
            let (first, rest) = body.as_bytes().split_at(body.len() / 2);
            stream.write_all(head.as_bytes()).unwrap();
            stream.write_all(first).unwrap();
            (content, stream, rest.to_vec())
        })
        .collect();

    // Until the server has read their heads they are merely queued on the socket, not in
    // flight: wait until it reports all five (and the /metrics request itself) in flight.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    while common::metric(server.addr, "kalamdb_http_requests_in_flight") < 6.0 {
        assert!(
            std::time::Instant::now() < deadline,
            "inserts never got in flight"
        );
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    server.signal(nix::sys::signal::Signal::SIGTERM);
    common::wait_for_log(&dir.log_path(), "stopped accepting connections");

    let mut ids = Vec::new();
    for (content, stream, rest) in &mut clients {
        stream.write_all(rest).unwrap();
        let mut answer = Vec::new();
        stream.read_to_end(&mut answer).unwrap();
        let answer = String::from_utf8_lossy(&answer).into_owned();
        assert!(answer.starts_with("HTTP/1.1 200"), "{content}: {answer}");
        let body = answer.split("\r\n\r\n").nth(1).unwrap();
        let json: serde_json::Value = serde_json::from_str(body).unwrap();
        ids.push((content.clone(), json["msg_id"].as_str().unwrap().to_owned()));
    }
    assert!(server.wait().success());

    let server = dir.start();
    for (content, id) in ids {
        let response = request(server.addr, "GET", &format!("/api/v1/messages/{id}"), None)
            .expect("read after restart");
        assert_eq!(response.status, 200);
        assert_eq!(response.json["content"], content.as_str());
    }
    assert!(server.stop().success());
}

#[test]
fn sigterm_ends_open_event_streams_cleanly() {
    use std::io::{Read, Write};

    let dir = ServerDir::new("");
    let server = dir.start();
    let mut stream = std::net::TcpStream::connect(server.addr).expect("connect");
    stream
        .set_read_timeout(Some(std::time::Duration::from_secs(30)))
        .unwrap();
    write!(
        stream,
        "GET /api/v1/conversations/conv_1/stream HTTP/1.1\r\nHost: kalamdb\r\n\
         Accept: text/event-stream\r\n\r\n"
    )
    .unwrap();
    let mut received = Vec::new();
    let mut chunk = [0u8; 4096];
    while !received.windows(4).any(|w| w == b"\r\n\r\n") {
        let n = stream.read(&mut chunk).expect("the head arrives");
        assert!(n > 0, "closed before the head");
        received.extend_from_slice(&chunk[..n]);
    }
    let head = String::from_utf8_lossy(&received).to_string();
    assert!(head.starts_with("HTTP/1.1 200"), "{head}");
    assert!(head.contains("content-type: text/event-stream"), "{head}");

    let id = insert(server.addr, "streamed but never logged");
    while !String::from_utf8_lossy(&received).contains(&format!("id: {id}\n")) {
        let n = stream.read(&mut chunk).expect("the event arrives");
        assert!(n > 0, "closed before the event");
        received.extend_from_slice(&chunk[..n]);
    }

    server.signal(nix::sys::signal::Signal::SIGTERM);
    // The response finishes properly, with the last chunk, and the connection closes.
    stream
        .read_to_end(&mut received)
        .expect("the stream ends rather than hanging");
    assert!(received.ends_with(b"0\r\n\r\n"), "no final chunk");
    assert!(server.wait().success());

    let log = std::fs::read_to_string(dir.log_path()).unwrap();
    assert!(log.contains("all connections closed"), "{log}");
    assert!(!log.contains("drain timed out"), "{log}");
    assert!(!log.contains("streamed but never logged"));
}

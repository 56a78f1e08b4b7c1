//! Erasure on the real binary: with `storage.compression = "none"`, unique tokens written and
//! then deleted leave every file of the data directory within `storage.erase_within_secs`, stay
//! gone after a restart, and a `kill -9` right after the delete brings back neither the data
//! nor its bytes. Neighbouring conversations keep theirs.

mod common;

use std::path::Path;
use std::time::{Duration, Instant};

use common::{request, ServerDir};
use nix::sys::signal::Signal;
use serde_json::json;

/// The bound the tests configure.
const ERASE_WITHIN_SECS: u64 = 2;
/// What the eraser's round itself may take on a slow, shared CI machine, on top of the bound.
const SLACK: Duration = Duration::from_secs(20);

/// A server dir storing uncompressed with the tests' bound, and `extra` config appended.
fn server_dir(extra: &str) -> ServerDir {
    let dir = ServerDir::new(extra);
    let config = std::fs::read_to_string(dir.config_path()).unwrap().replace(
        "[storage]\n",
        &format!(
            "[storage]\ncompression = \"none\"\nerase_within_secs = {ERASE_WITHIN_SECS}\n\
             sync_writes = false\n"
        ),
    );
    std::fs::write(dir.config_path(), config).unwrap();
    dir
}

/// The files under `dir` holding `token`, as is or in the upper-case hex RocksDB logs use.
fn files_holding(dir: &Path, token: &str) -> Vec<String> {
    let hex: String = token.bytes().map(|b| format!("{b:02X}")).collect();
    let mut found = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(path) = stack.pop() {
        let Ok(entries) = std::fs::read_dir(&path) else {
            continue;
        };
        for entry in entries.flatten() {
            let path = entry.path();
            if path.is_dir() {
                stack.push(path);
                continue;
            }
            // A file RocksDB deletes while we look is as good as gone.
            let Ok(bytes) = std::fs::read(&path) else {
                continue;
            };
            let holds = |needle: &[u8]| bytes.windows(needle.len()).any(|w| w == needle);
            if holds(token.as_bytes()) || holds(hex.as_bytes()) {
                found.push(path.display().to_string());
            }
        }
    }
    found
}

/// Waits until no file under `dir` holds any of `tokens`, at most the bound plus [`SLACK`]
/// from `since`; fails naming the files that still do.
fn wait_erased(dir: &Path, tokens: &[&str], since: Instant) {
    let deadline = since + Duration::from_secs(ERASE_WITHIN_SECS) + SLACK;
    loop {
        let left: Vec<_> = tokens
            .iter()
            .flat_map(|t| files_holding(dir, t).into_iter().map(move |f| (*t, f)))
            .collect();
        if left.is_empty() {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "still on disk {:?} after the delete: {left:?}",
            since.elapsed()
        );
        std::thread::sleep(Duration::from_millis(200));
    }
}

fn insert(addr: std::net::SocketAddr, conversation_id: &str, content: &str) -> String {
    let body = json!({"conversation_id": conversation_id, "from": "tok-author-3f7e",
                      "content": content, "metadata": {"note": "tok-meta-8b2a"}});
    let response = request(addr, "POST", "/api/v1/messages", Some(&body)).unwrap();
    assert_eq!(response.status, 200, "{:?}", response.json);
    response.json["msg_id"].as_str().unwrap().to_owned()
}

#[test]
fn deleted_bytes_leave_the_data_directory_within_the_bound_and_stay_gone() {
    let dir = server_dir("");
    let data = dir.dir.path().join("data");
    let server = dir.start();
    let addr = server.addr;
    let deleted = insert(addr, "erase-a", "tok-deleted-51e0");
    let edited = insert(addr, "erase-a", "tok-edited-a4c9");
    insert(addr, "tok-conv-9c1d", "tok-in-conv-07bb");
    let trimmed = insert(addr, "erase-b", "tok-trimmed-6d13");
    let kept_in_b = insert(addr, "erase-b", "tok-kept-in-b-2e88");
    let neighbour =
        json!({"conversation_id": "keep", "from": "n", "content": "tok-neighbour-ff01"});
    let answer = request(addr, "POST", "/api/v1/messages", Some(&neighbour)).unwrap();
    let neighbour_id = answer.json["msg_id"].as_str().unwrap().to_owned();

    let since = Instant::now();
    let answer = request(addr, "DELETE", &format!("/api/v1/messages/{deleted}"), None).unwrap();
    assert_eq!(answer.status, 204);
    let patch = json!({"content": "clean"});
    let answer = request(
        addr,
        "PATCH",
        &format!("/api/v1/messages/{edited}"),
        Some(&patch),
    )
    .unwrap();
    assert_eq!(answer.status, 200);
    let answer = request(addr, "DELETE", "/api/v1/conversations/tok-conv-9c1d", None).unwrap();
    assert_eq!(answer.status, 204);
    let trim = format!("/api/v1/conversations/erase-b/messages?before_msg_id={kept_in_b}");
    let answer = request(addr, "DELETE", &trim, None).unwrap();
    assert_eq!(answer.json, json!({"deleted": 1}));

    // Gone from every read at once.
    for id in [&deleted, &trimmed] {
        let answer = request(addr, "GET", &format!("/api/v1/messages/{id}"), None).unwrap();
        assert_eq!(answer.status, 404);
    }
    let tokens = [
        "tok-deleted-51e0",
        "tok-edited-a4c9",
        "tok-conv-9c1d",
        "tok-in-conv-07bb",
        "tok-trimmed-6d13",
    ];
    wait_erased(&data, &tokens, since);
    // Neighbours keep theirs, on disk and in reads.
    assert!(!files_holding(&data, "tok-neighbour-ff01").is_empty());
    assert!(!files_holding(&data, "tok-kept-in-b-2e88").is_empty());
    let answer = request(
        addr,
        "GET",
        &format!("/api/v1/messages/{neighbour_id}"),
        None,
    )
    .unwrap();
    assert_eq!(answer.json["content"], "tok-neighbour-ff01");

    assert!(server.stop().success());
    let server = dir.start();
    let answer = request(
        server.addr,
        "GET",
        &format!("/api/v1/messages/{deleted}"),
        None,
    )
    .unwrap();
    assert_eq!(answer.status, 404);
    let answer = request(
        server.addr,
        "GET",
        "/api/v1/conversations/tok-conv-9c1d",
        None,
    )
    .unwrap();
    assert_eq!(answer.status, 404);
    let answer = request(server.addr, "GET", "/api/v1/conversations/erase-b", None).unwrap();
    assert_eq!(answer.json["message_count"], 1);
    for token in tokens {
        assert_eq!(files_holding(&data, token), Vec::<String>::new(), "{token}");
    }
}

#[test]
fn a_kill_9_right_after_a_delete_brings_back_neither_the_message_nor_its_bytes() {
    let dir = server_dir("");
    let data = dir.dir.path().join("data");
    let server = dir.start();
    let addr = server.addr;
    let doomed = insert(addr, "crashy", "tok-killed-4a61");
    insert(addr, "crashy", "tok-survivor-c0de");
    let answer = request(addr, "DELETE", &format!("/api/v1/messages/{doomed}"), None).unwrap();
    assert_eq!(answer.status, 204);
    server.signal(Signal::SIGKILL);
    assert!(!server.wait().success());
    assert!(
        !files_holding(&data, "tok-killed-4a61").is_empty(),
        "the kill came before the eraser: the test sees the bytes it must see go"
    );

    let since = Instant::now();
    let server = dir.start();
    let answer = request(
        server.addr,
        "GET",
        &format!("/api/v1/messages/{doomed}"),
        None,
    )
    .unwrap();
    assert_eq!(answer.status, 404);
    let record = request(server.addr, "GET", "/api/v1/conversations/crashy", None).unwrap();
    assert_eq!(record.json["message_count"], 1);
    assert_eq!(record.json["last_message"]["content"], "tok-survivor-c0de");
    wait_erased(&data, &["tok-killed-4a61"], since);
    assert!(!files_holding(&data, "tok-survivor-c0de").is_empty());
}

#[test]
fn retention_deletes_old_messages_from_reads_and_from_the_files() {
    let dir = server_dir("[retention]\nmax_age_secs = 1\n");
    let data = dir.dir.path().join("data");
    let server = dir.start();
    let old = insert(server.addr, "aging", "tok-retained-9e31");
    let written = Instant::now();
    let fresh = request(server.addr, "GET", &format!("/api/v1/messages/{old}"), None).unwrap();
    assert_eq!(fresh.status, 200, "readable while younger than a second");
    // The message ages past a second; from then on no read returns it.
    let deadline = written + Duration::from_secs(10);
    loop {
        let answer = request(server.addr, "GET", &format!("/api/v1/messages/{old}"), None).unwrap();
        if answer.status == 404 {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "still readable after {:?}",
            written.elapsed()
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    assert!(
        written.elapsed() >= Duration::from_secs(1),
        "not before its age"
    );
    let record = request(server.addr, "GET", "/api/v1/conversations/aging", None).unwrap();
    assert_eq!(record.json["message_count"], 0);
    assert_eq!(record.json["last_message"], serde_json::Value::Null);
    wait_erased(
        &data,
        &["tok-retained-9e31"],
        written + Duration::from_secs(1),
    );
}

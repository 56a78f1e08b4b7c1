//! Crash safety: writers hammer the real binary, it is killed with SIGKILL at a random moment,
//! and after a restart every acknowledged message is there, intact, and each conversation's
//! record counts exactly the messages stored. Both `storage.sync_writes`
//! modes promise this (the WAL is written before the acknowledgement either way; only a power
//! cut separates them).
//!
//! `KALAMDB_CRASH_ROUNDS` sets the rounds per mode (default 5) for a longer run.

mod common;

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use common::{request, ServerDir};
use nix::sys::signal::Signal;
use serde_json::json;

const WRITERS: usize = 16;

fn rounds() -> usize {
    std::env::var("KALAMDB_CRASH_ROUNDS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(5)
}

/// The member of every conversation written here.
const WATCHER: &str = "watcher";

/// A pause of 100-400 ms that differs from run to run.
fn random_pause() -> Duration {
    let nanos = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .subsec_nanos();
    Duration::from_millis(100 + u64::from(nanos % 300))
}

fn crash_rounds(sync_writes: bool) {
    let dir = ServerDir::new("");
    let config = std::fs::read_to_string(dir.config_path()).unwrap().replace(
        "[storage]\n",
        &format!("[storage]\nsync_writes = {sync_writes}\n"),
    );
    std::fs::write(dir.config_path(), config).unwrap();
    let acknowledged: Arc<Mutex<Vec<(String, String)>>> = Arc::default();

    for round in 0..rounds() {
        let server = dir.start();
        let addr = server.addr;
        if round == 0 {
            // With a member, so that the kill also catches members' listings mid-write.
            for writer in 0..WRITERS {
                let body = json!({"conversation_id": format!("crash-{writer}"),
                                  "members": [WATCHER]});
                let created = request(addr, "POST", "/api/v1/conversations", Some(&body)).unwrap();
                assert_eq!(created.status, 201);
            }
        }
        let running = Arc::new(AtomicBool::new(true));
        let writers: Vec<_> = (0..WRITERS)
            .map(|writer| {
                let running = Arc::clone(&running);
                let acknowledged = Arc::clone(&acknowledged);
                std::thread::spawn(move || {
                    let mut n = 0;
                    while running.load(Ordering::Relaxed) {
                        let content = format!("round {round} writer {writer} message {n}");
                        let body = json!({"conversation_id": format!("crash-{writer}"),
                                          "from": "writer", "content": content});
                        n += 1;
                        // Once the server is gone requests fail; only answers count.
                        let Ok(response) = request(addr, "POST", "/api/v1/messages", Some(&body))
                        else {
                            continue;
                        };
                        if response.status == 200 {
                            let id = response.json["msg_id"].as_str().unwrap().to_owned();
                            acknowledged.lock().unwrap().push((id, content));
                        }
                    }
                })
            })
            .collect();
        std::thread::sleep(random_pause());
        server.signal(Signal::SIGKILL);
        let status = server.wait();
        assert!(!status.success(), "SIGKILL is not a clean exit");
        running.store(false, Ordering::Relaxed);
        for writer in writers {
            writer.join().unwrap();
        }
    }

    let acknowledged = acknowledged.lock().unwrap();
    assert!(
        acknowledged.len() > WRITERS,
        "too few writes to test anything: {}",
        acknowledged.len()
    );
    let server = dir.start();
    for (id, content) in acknowledged.iter() {
        let response = request(server.addr, "GET", &format!("/api/v1/messages/{id}"), None)
            .expect("read back");
        assert_eq!(
            response.status, 200,
            "acknowledged message {id} ({content}) lost with sync_writes = {sync_writes}"
        );
        assert_eq!(response.json["content"], content.as_str());
    }
    // Each conversation's record counts exactly the messages that survived (acknowledged ones
    // and any the kill caught between the write and the answer), and names the newest.
    let mut records = Vec::new();
    for writer in 0..WRITERS {
        let conversation = format!("crash-{writer}");
        let (mut stored, mut since, mut newest) = (0u64, json!(null), json!(null));
        loop {
            let body =
                json!({"conversation_id": conversation, "limit": 1000, "since_msg_id": since});
            let page = request(server.addr, "POST", "/api/v1/query", Some(&body)).unwrap();
            let messages = page.json["messages"].as_array().unwrap();
            stored += messages.len() as u64;
            if let Some(last) = messages.last() {
                newest = last["msg_id"].clone();
            }
            if page.json["next_cursor"].is_null() {
                break;
            }
            since = page.json["next_cursor"].clone();
        }
        let record = request(
            server.addr,
            "GET",
            &format!("/api/v1/conversations/{conversation}"),
            None,
        )
        .unwrap();
        let acked = acknowledged
            .iter()
            .filter(|(_, c)| c.contains(&format!(" writer {writer} ")))
            .count() as u64;
        assert_eq!(record.status, 200, "{conversation}");
        assert_eq!(
            record.json["message_count"], stored,
            "{conversation}: the count after SIGKILL with sync_writes = {sync_writes}"
        );
        assert!(
            stored >= acked,
            "{conversation}: {stored} stored, {acked} acknowledged"
        );
        assert_eq!(
            record.json["last_message"]["msg_id"], newest,
            "{conversation}"
        );
        records.push(record.json);
    }
    // The member's listing holds each of them once, most recent first, however far behind
    // its entries were when the server died.
    records.sort_by_key(|r| {
        (
            std::cmp::Reverse(r["updated_at"].as_u64()),
            r["conversation_id"].as_str().unwrap().to_owned(),
        )
    });
    let listing = request(
        server.addr,
        "GET",
        &format!("/api/v1/conversations?member={WATCHER}&limit=100"),
        None,
    )
    .unwrap();
    assert_eq!(listing.status, 200);
    assert_eq!(
        listing.json["conversations"].as_array().unwrap(),
        &records,
        "{WATCHER}'s listing after SIGKILL with sync_writes = {sync_writes}"
    );
    assert!(server.stop().success());
}

#[test]
fn acknowledged_messages_survive_sigkill_with_synced_writes() {
    crash_rounds(true);
}

#[test]
fn acknowledged_messages_survive_sigkill_without_synced_writes() {
    crash_rounds(false);
}

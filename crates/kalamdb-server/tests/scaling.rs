//! Many servers on one database (`../shared/DESIGN.md` §7), with the real binary: three
//! `kalamdb-server` processes on one PostgreSQL and one NATS, both started here on loopback.
//! Writers on all three, cursor pollers and live streams on all three: nothing missed, nothing
//! twice, and an idempotent request retried on every server stores once. Then a server killed
//! with `kill -9` mid-write loses nothing it acknowledged, and once its lease expires a new
//! server takes its node id.

mod common;

use std::collections::{BTreeMap, BTreeSet};
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::{Duration, Instant};

use common::{free_port, request, Server, ServerDir};
use kalamdb_postgres::testing::TestPostgres;
use nix::sys::signal::Signal;
use serde_json::{json, Value};

/// A `nats-server` on a free loopback port, stopped by its PID when dropped.
struct TestNats {
    child: Child,
    url: String,
}

impl TestNats {
    fn start() -> Self {
        let port = free_port();
        let child = Command::new("nats-server")
            .args(["-a", "127.0.0.1", "-p", &port.to_string()])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("nats-server (install it with scripts/setup.sh)");
        let deadline = Instant::now() + Duration::from_secs(30);
        while TcpStream::connect(("127.0.0.1", port)).is_err() {
            assert!(Instant::now() < deadline, "nats-server did not start");
            thread::sleep(Duration::from_millis(20));
        }
        TestNats {
            child,
            url: format!("nats://127.0.0.1:{port}"),
        }
    }
}

impl Drop for TestNats {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A server's directory with the PostgreSQL store, the NATS bus and node-id leases of
/// `lease_secs`. Short leases only where a test waits for one to expire: with 3 seconds, a
/// server refuses writes when a renewal is 2.4 seconds late, which a loaded machine can make it.
fn server_dir(
    pg: &TestPostgres,
    schema: &str,
    nats: Option<&TestNats>,
    lease_secs: u64,
) -> ServerDir {
    let dir = ServerDir::new("");
    let live = match nats {
        Some(nats) => format!(
            "[live]\nbus = \"nats\"\nnats_url = \"{}\"\nchannel = \"{schema}\"\nresync_ms = 300\n",
            nats.url
        ),
        None => String::new(),
    };
    let config = std::fs::read_to_string(dir.config_path())
        .unwrap()
        .replace("[storage]\n", "[storage]\nbackend = \"postgres\"\n")
        + &format!(
            "\n[storage.postgres]\nurl = \"{}\"\nschema = \"{schema}\"\npool_size = 8\nlease_secs = {lease_secs}\n\n{live}",
            pg.url
        );
    std::fs::write(dir.config_path(), config).unwrap();
    dir
}

fn node_of(id: &str) -> u64 {
    (id.parse::<u64>().unwrap() >> 12) & 0x3ff
}

/// Stores one message on `addr`; its id, or `None` when the server did not answer 200.
fn insert(
    addr: SocketAddr,
    conversation_id: &str,
    content: &str,
    key: Option<&str>,
) -> Option<String> {
    let body =
        json!({"conversation_id": conversation_id, "from": "w", "content": content}).to_string();
    let mut stream = TcpStream::connect_timeout(&addr, Duration::from_secs(5)).ok()?;
    stream
        .set_read_timeout(Some(Duration::from_secs(30)))
        .ok()?;
    let key = key
        .map(|k| format!("Idempotency-Key: {k}\r\n"))
        .unwrap_or_default();
    let head = format!(
        "POST /api/v1/messages HTTP/1.1\r\nHost: k\r\nConnection: close\r\n{key}\
         Content-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
        body.len()
    );
    stream.write_all(head.as_bytes()).ok()?;
    let mut raw = String::new();
    stream.read_to_string(&mut raw).ok()?;
    let (head, body) = raw.split_once("\r\n\r\n")?;
    if !head.starts_with("HTTP/1.1 200") {
        return None;
    }
    let value: Value = serde_json::from_str(body).ok()?;
    Some(value["msg_id"].as_str()?.to_owned())
}

/// Every message of a conversation after `since`, through `POST /api/v1/query`.
fn poll(addr: SocketAddr, conversation_id: &str, since: Option<&str>) -> Vec<String> {
    let mut since = since.map(str::to_owned);
    let mut out = Vec::new();
    loop {
        let body = json!({"conversation_id": conversation_id, "since_msg_id": since, "limit": 200});
        let answer = request(addr, "POST", "/api/v1/query", Some(&body)).unwrap();
        assert_eq!(answer.status, 200, "{:?}", answer.json);
        let ids: Vec<String> = answer.json["messages"]
            .as_array()
            .unwrap()
            .iter()
            .map(|m| m["msg_id"].as_str().unwrap().to_owned())
            .collect();
        since = ids.last().cloned().or(since);
        out.extend(ids);
        if answer.json["has_more"] != true {
            return out;
        }
    }
}

/// The ids a live stream has delivered so far, in order, filled by its reading thread.
type Heard = Arc<Mutex<Vec<String>>>;

/// A live stream read on a thread of its own: the ids of its message events, in order.
fn follow(addr: SocketAddr, conversation_id: &str) -> Heard {
    let heard = Arc::new(Mutex::new(Vec::new()));
    let mut stream = TcpStream::connect(addr).unwrap();
    write!(
        stream,
        "GET /api/v1/conversations/{conversation_id}/stream HTTP/1.1\r\nHost: k\r\n\r\n"
    )
    .unwrap();
    let mut reader = BufReader::new(stream);
    let mut status = String::new();
    reader.read_line(&mut status).unwrap();
    assert!(status.starts_with("HTTP/1.1 200"), "{status}");
    let out = Arc::clone(&heard);
    thread::spawn(move || {
        // Chunk-size lines come between events; an event's lines are never split.
        let mut line = String::new();
        while reader.read_line(&mut line).is_ok_and(|n| n > 0) {
            if let Some(id) = line.trim_end().strip_prefix("id: ") {
                out.lock().unwrap().push(id.to_owned());
            }
            line.clear();
        }
    });
    heard
}

#[test]
fn three_servers_share_one_database_and_miss_nothing() {
    let pg = TestPostgres::start();
    let nats = TestNats::start();
    let dirs: Vec<ServerDir> = (0..3)
        .map(|_| server_dir(&pg, "three", Some(&nats), 10))
        .collect();
    let servers: Vec<Server> = dirs.iter().map(ServerDir::start).collect();
    let addrs: Vec<SocketAddr> = servers.iter().map(|s| s.addr).collect();
    let conversations: [&'static str; 3] = ["c0", "c1", "c2"];
    // A stream of every conversation on every server, opened before anything is written.
    let streams: Vec<(&str, SocketAddr, Heard)> = conversations
        .iter()
        .flat_map(|c| addrs.iter().map(move |a| (*c, *a, follow(*a, c))))
        .collect();
    thread::sleep(Duration::from_millis(500));
    let writing = Arc::new(AtomicBool::new(true));
    let pollers: Vec<_> = conversations
        .iter()
        .enumerate()
        .map(|(i, &c)| {
            let addr = addrs[i];
            let writing = Arc::clone(&writing);
            thread::spawn(move || {
                let mut seen: Vec<String> = Vec::new();
                loop {
                    let done = !writing.load(Ordering::SeqCst);
                    let fresh = poll(addr, c, seen.last().map(String::as_str));
                    seen.extend(fresh);
                    if done {
                        return (c, seen);
                    }
                }
            })
        })
        .collect();
    let acknowledged: Arc<Mutex<BTreeMap<String, Vec<String>>>> = Arc::default();
    let writers: Vec<_> = (0..9)
        .map(|w| {
            let addr = addrs[w % 3];
            let acknowledged = Arc::clone(&acknowledged);
            thread::spawn(move || {
                for n in 0..30 {
                    let conversation = conversations[(w + n) % 3];
                    let id = insert(addr, conversation, &format!("{w}-{n}"), None)
                        .expect("every write is answered 200");
                    acknowledged
                        .lock()
                        .unwrap()
                        .entry(conversation.to_owned())
                        .or_default()
                        .push(id);
                }
            })
        })
        .collect();
    // Meanwhile: one key, retried on every server at once.
    let retries: Vec<_> = addrs
        .iter()
        .map(|addr| {
            let addr = *addr;
            thread::spawn(move || insert(addr, "c0", "exactly once", Some("turn-42")))
        })
        .collect();
    for writer in writers {
        writer.join().unwrap();
    }
    let retried: BTreeSet<String> = retries
        .into_iter()
        .map(|r| r.join().unwrap().expect("a retry is answered 200"))
        .collect();
    assert_eq!(
        retried.len(),
        1,
        "every server gave the one answer: {retried:?}"
    );
    let once = retried.into_iter().next().unwrap();
    acknowledged
        .lock()
        .unwrap()
        .get_mut("c0")
        .unwrap()
        .push(once.clone());
    writing.store(false, Ordering::SeqCst);
    let acknowledged = acknowledged.lock().unwrap().clone();
    let mut nodes = BTreeSet::new();
    for poller in pollers {
        let (conversation, seen) = poller.join().unwrap();
        let expected: BTreeSet<&String> = acknowledged[conversation].iter().collect();
        let unique: BTreeSet<&String> = seen.iter().collect();
        assert_eq!(
            unique.len(),
            seen.len(),
            "{conversation}: a poller saw a message twice"
        );
        assert_eq!(unique, expected, "{conversation}: a poller missed messages");
        nodes.extend(seen.iter().map(|id| node_of(id)));
    }
    assert_eq!(
        nodes.len(),
        3,
        "three servers, three leased node ids: {nodes:?}"
    );
    let stored = poll(addrs[1], "c0", None);
    assert_eq!(
        stored.iter().filter(|id| **id == once).count(),
        1,
        "the retried message is stored once"
    );
    // Every stream, on every server, hears every message of its conversation once, in order.
    for (conversation, addr, heard) in &streams {
        let expected: Vec<String> = {
            let mut ids = acknowledged[*conversation].clone();
            ids.sort_by_key(|id| id.parse::<u64>().unwrap());
            ids
        };
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let got = heard.lock().unwrap().clone();
            if got.len() >= expected.len() || Instant::now() > deadline {
                assert_eq!(got, expected, "the stream of {conversation} on {addr}");
                break;
            }
            thread::sleep(Duration::from_millis(50));
        }
    }
    for server in servers {
        assert!(server.stop().success());
    }
}

#[test]
fn a_server_killed_mid_write_loses_nothing_and_its_node_id_is_taken_over() {
    let pg = TestPostgres::start();
    // Short leases: the test waits for the killed server's to expire.
    let first = server_dir(&pg, "killed", None, 3);
    let second = server_dir(&pg, "killed", None, 3);
    let victim = first.start();
    let survivor = second.start();
    let victim_addr = victim.addr;
    let acknowledged: Arc<Mutex<Vec<String>>> = Arc::default();
    let writers: Vec<_> = (0..8)
        .map(|w| {
            let acknowledged = Arc::clone(&acknowledged);
            thread::spawn(move || {
                for n in 0.. {
                    match insert(victim_addr, "kill", &format!("{w}-{n}"), None) {
                        Some(id) => acknowledged.lock().unwrap().push(id),
                        None => return,
                    }
                }
            })
        })
        .collect();
    thread::sleep(Duration::from_millis(800));
    victim.signal(Signal::SIGKILL);
    let _ = victim.wait();
    for writer in writers {
        writer.join().unwrap();
    }
    let acknowledged = acknowledged.lock().unwrap().clone();
    assert!(
        acknowledged.len() > 20,
        "the kill came mid-write: {}",
        acknowledged.len()
    );
    let stored: BTreeSet<String> = poll(survivor.addr, "kill", None).into_iter().collect();
    let lost: Vec<&String> = acknowledged
        .iter()
        .filter(|id| !stored.contains(*id))
        .collect();
    assert!(lost.is_empty(), "acknowledged, then lost: {lost:?}");
    let record = request(survivor.addr, "GET", "/api/v1/conversations/kill", None).unwrap();
    assert_eq!(record.json["message_count"], stored.len());
    // The dead server's node id is leased for lease_secs more; then a new server takes it.
    let dead_node = node_of(&acknowledged[0]);
    thread::sleep(Duration::from_millis(3_500));
    let successor = first.start();
    let id = insert(successor.addr, "kill", "after", None).unwrap();
    assert_eq!(
        node_of(&id),
        dead_node,
        "the expired node id was taken over"
    );
    let survivor_id = insert(survivor.addr, "kill", "still here", None).unwrap();
    assert_ne!(node_of(&survivor_id), dead_node);
    assert!(successor.stop().success());
    assert!(survivor.stop().success());
}

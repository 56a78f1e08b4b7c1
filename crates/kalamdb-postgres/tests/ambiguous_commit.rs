//! A `COMMIT` whose connection breaks before the answer: did it commit? The store reads back
//! the ids it minted: an insert that landed is acknowledged as it is (a client without an
//! idempotency key would otherwise retry it into a duplicate), and one that did not runs again.
//! Either way the message is stored exactly once. A proxy between the store and PostgreSQL
//! cuts the connection at the `COMMIT`, after passing it on (and holding back the answer) or
//! before; a pooled connection it cut while idle is replaced on its next use.

use std::io::{Read, Write};
use std::net::{Shutdown, TcpListener, TcpStream};
use std::sync::atomic::{AtomicU8, Ordering};
use std::sync::Arc;
use std::thread;
use std::time::Duration;

use kalamdb_core::{NewMessage, Order, Query, Store};
use kalamdb_postgres::testing::TestPostgres;
use kalamdb_postgres::PgStore;

/// What the proxy does at the next `COMMIT` it sees.
const PASS: u8 = 0;
const CUT_AFTER: u8 = 1;
const CUT_BEFORE: u8 = 2;

/// A TCP proxy to `port` that cuts a connection at a `COMMIT` when armed; its port.
fn proxy(port: u16, armed: Arc<AtomicU8>) -> u16 {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let own = listener.local_addr().unwrap().port();
    thread::spawn(move || {
        for client in listener.incoming() {
            let Ok(client) = client else { return };
            let Ok(server) = TcpStream::connect(("127.0.0.1", port)) else {
                return;
            };
            let (mut client_read, mut server_write) =
                (client.try_clone().unwrap(), server.try_clone().unwrap());
            let (mut server_read, mut client_write) = (server, client);
            let armed = Arc::clone(&armed);
            // Set once the COMMIT went to PostgreSQL: its answer is not passed back.
            let mute = Arc::new(std::sync::atomic::AtomicBool::new(false));
            let muted = Arc::clone(&mute);
            thread::spawn(move || {
                let mut buffer = [0u8; 65536];
                loop {
                    let n = match client_read.read(&mut buffer) {
                        Ok(0) | Err(_) => break,
                        Ok(n) => n,
                    };
                    let commit = buffer[..n].windows(7).any(|w| w == b"COMMIT\0");
                    let action = if commit {
                        armed.swap(PASS, Ordering::SeqCst)
                    } else {
                        PASS
                    };
                    if action == CUT_BEFORE {
                        break;
                    }
                    if action == CUT_AFTER {
                        mute.store(true, Ordering::SeqCst);
                    }
                    if server_write.write_all(&buffer[..n]).is_err() {
                        break;
                    }
                    if action == CUT_AFTER {
                        // PostgreSQL gets the COMMIT; its answer never reaches the store.
                        thread::sleep(Duration::from_millis(200));
                        break;
                    }
                }
                let _ = client_read.shutdown(Shutdown::Both);
                let _ = server_write.shutdown(Shutdown::Both);
            });
            thread::spawn(move || {
                let mut buffer = [0u8; 65536];
                while let Ok(n) = server_read.read(&mut buffer) {
                    if n == 0
                        || muted.load(Ordering::SeqCst)
                        || client_write.write_all(&buffer[..n]).is_err()
                    {
                        break;
                    }
                }
                let _ = client_write.shutdown(Shutdown::Both);
            });
        }
    });
    own
}

fn message(content: &str) -> NewMessage {
    NewMessage {
        conversation_id: "c".into(),
        from: "alice".into(),
        content: content.into(),
        metadata: Default::default(),
    }
}

fn contents(store: &dyn Store) -> Vec<String> {
    store
        .query(&Query {
            conversation_id: "c".into(),
            since: None,
            before: None,
            limit: 100,
            order: Order::Asc,
        })
        .unwrap()
        .messages
        .iter()
        .map(|m| m.decode().unwrap().content)
        .collect()
}

#[test]
fn a_commit_cut_off_after_it_landed_is_acknowledged_once_and_one_that_did_not_is_an_error() {
    let pg = TestPostgres::shared();
    let armed = Arc::new(AtomicU8::new(PASS));
    let port = proxy(pg.port, Arc::clone(&armed));
    let mut options = pg.options();
    options.url = format!("postgres://kalamdb@127.0.0.1:{port}/postgres");
    let store = PgStore::open(&options).unwrap();
    store.insert(vec![message("before")]).unwrap();

    armed.store(CUT_AFTER, Ordering::SeqCst);
    let landed = store.insert(vec![message("landed")]).unwrap();
    assert_eq!(
        armed.load(Ordering::SeqCst),
        PASS,
        "the proxy did cut a COMMIT"
    );
    assert!(store.get(landed[0].msg_id).unwrap().is_some());

    armed.store(CUT_BEFORE, Ordering::SeqCst);
    let retried = store.insert(vec![message("retried")]).unwrap();
    assert_eq!(
        armed.load(Ordering::SeqCst),
        PASS,
        "the proxy did cut a COMMIT"
    );
    assert!(store.get(retried[0].msg_id).unwrap().is_some());

    assert_eq!(contents(&store), ["before", "landed", "retried"]);
    let record = store.conversation("c").unwrap().unwrap();
    assert_eq!(record.message_count, 3);
}

//! Node-id leases and schema versions on a real PostgreSQL: two live servers never share a node
//! id, a server that loses its lease stops writing, an expired lease is taken over, and a schema
//! newer than the build refuses to open.

use std::time::{Duration, Instant};

use kalamdb_core::{NewMessage, Store, StoreError};
use kalamdb_postgres::testing::TestPostgres;
use kalamdb_postgres::{OpenError, PgStore};

fn message(conversation_id: &str) -> NewMessage {
    NewMessage {
        conversation_id: conversation_id.into(),
        from: "alice".into(),
        content: "hello".into(),
        metadata: Default::default(),
    }
}

/// Runs one statement on the test server, outside any store.
fn psql(pg: &TestPostgres, statement: &str) {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    runtime.block_on(async {
        let (client, connection) = tokio_postgres::connect(&pg.url, tokio_postgres::NoTls)
            .await
            .unwrap();
        tokio::spawn(connection);
        client.batch_execute(statement).await.unwrap();
    });
}

#[test]
fn live_servers_hold_different_node_ids_and_stamp_them_into_their_ids() {
    let pg = TestPostgres::shared();
    let options = pg.options();
    let a = PgStore::open(&options).unwrap();
    let b = PgStore::open(&options).unwrap();
    assert_ne!(a.node_id(), b.node_id());
    let from_a = a.insert(vec![message("c")]).unwrap()[0].msg_id;
    let from_b = b.insert(vec![message("c")]).unwrap()[0].msg_id;
    assert_eq!(from_a.node_id(), a.node_id());
    assert_eq!(from_b.node_id(), b.node_id());
    assert!(from_b > from_a, "minted above the conversation's last id");
    // A clean close gives the id back at once.
    let freed = a.node_id();
    a.close().unwrap();
    let c = PgStore::open(&options).unwrap();
    assert_eq!(c.node_id(), freed);
}

#[test]
fn a_server_whose_lease_is_taken_refuses_writes_but_still_reads() {
    let pg = TestPostgres::shared();
    let options = pg.short_lease_options();
    let store = PgStore::open(&options).unwrap();
    let id = store.insert(vec![message("c")]).unwrap()[0].msg_id;
    // What a server paused past its lease sees when it wakes: the row is someone else's.
    psql(
        pg,
        &format!(
            "UPDATE {}.node_leases SET holder = 'another server' WHERE node_id = {}",
            options.schema,
            store.node_id()
        ),
    );
    let started = Instant::now();
    let refused = loop {
        match store.insert(vec![message("c")]) {
            Err(e) => break e,
            Ok(_) => {
                assert!(
                    started.elapsed() < options.lease_ttl * 2,
                    "still writing {:?} after its lease was taken",
                    started.elapsed()
                );
                std::thread::sleep(Duration::from_millis(100));
            }
        }
    };
    assert!(
        matches!(&refused, StoreError::Unavailable(text) if text.contains("lease")),
        "{refused:?}"
    );
    assert!(matches!(
        store.create_conversation(&Default::default()),
        Err(StoreError::Unavailable(_))
    ));
    assert!(store.get(id).unwrap().is_some(), "reads go on");
}

#[test]
fn a_dead_servers_lease_expires_and_its_node_id_is_taken_over() {
    let pg = TestPostgres::shared();
    let options = pg.short_lease_options();
    let dead = PgStore::open(&options).unwrap();
    let node = dead.node_id();
    // Dropped without close: no release, no more renewals, as after `kill -9`.
    drop(dead);
    let meanwhile = PgStore::open(&options).unwrap();
    assert_ne!(meanwhile.node_id(), node, "the lease is still live");
    std::thread::sleep(options.lease_ttl + Duration::from_millis(500));
    let successor = PgStore::open(&options).unwrap();
    assert_eq!(successor.node_id(), node, "the expired id is reused");
    successor.insert(vec![message("c")]).unwrap();
}

#[test]
fn the_schema_is_created_once_and_a_newer_one_refuses_to_open() {
    let pg = TestPostgres::shared();
    let options = pg.options();
    let store = PgStore::open(&options).unwrap();
    let id = store.insert(vec![message("c")]).unwrap()[0].msg_id;
    store.close().unwrap();
    // Opening again keeps what is there.
    let again = PgStore::open(&options).unwrap();
    assert!(again.get(id).unwrap().is_some());
    again.close().unwrap();
    psql(
        pg,
        &format!("UPDATE {}.schema_version SET version = 99", options.schema),
    );
    match PgStore::open(&options) {
        Err(OpenError::TooNew { found: 99, .. }) => {}
        other => panic!("expected TooNew, got {other:?}"),
    }
}

#[test]
fn a_bad_setting_is_named() {
    let pg = TestPostgres::shared();
    let mut options = pg.options();
    options.schema = "Robert'); DROP TABLE x".into();
    let err = PgStore::open(&options).unwrap_err().to_string();
    assert!(err.contains("storage.postgres.schema"), "{err}");
    let mut options = pg.options();
    options.url = "postgres://user:s3cret@[bad".into();
    let err = PgStore::open(&options).unwrap_err().to_string();
    assert!(err.contains("storage.postgres.url"), "{err}");
    assert!(
        !err.contains("s3cret"),
        "the password is never repeated: {err}"
    );
}

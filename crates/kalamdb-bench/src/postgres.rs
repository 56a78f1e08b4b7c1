//! The PostgreSQL mode (`--postgres-servers 1,3`): the real server on the PostgreSQL store,
//! one or several processes on one database with the load spread over them, next to the
//! ceiling for this store: raw PostgreSQL running the same statements the store sends, from
//! this same client, over as many connections.
//!
//! The database is `--postgres-url`, or one this benchmark starts on loopback (the tests'
//! `TestPostgres`, syncing every commit: `start_durable`). Each run gets a schema of its own,
//! so runs never see each other's rows.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use kalamdb_core::Store;
use kalamdb_postgres::sql::{insert_messages, Sql};
use kalamdb_postgres::{PgOptions, PgStore};
use tokio_postgres::NoTls;

use crate::load::{
    self, Measured, Tally, Workload, BATCH_SIZE, QUERY_CONVERSATION, SHARED_CONVERSATION,
};
use crate::servers::{RealServer, ServerProcess};

/// One PostgreSQL scenario.
#[derive(Debug, Clone, Copy, serde::Serialize)]
pub(crate) struct PgScenario {
    name: &'static str,
    workload: Workload,
    connections: usize,
}

const SCENARIOS: [PgScenario; 5] = [
    PgScenario {
        name: "insert, 64 connections",
        workload: Workload::Insert,
        connections: 64,
    },
    PgScenario {
        name: "insert, 1 connection",
        workload: Workload::Insert,
        connections: 1,
    },
    PgScenario {
        name: "one conversation, 16 connections",
        workload: Workload::SharedInsert,
        connections: 16,
    },
    PgScenario {
        name: "batches of 100, 16 connections",
        workload: Workload::Batch,
        connections: 16,
    },
    PgScenario {
        name: "query-50, 16 connections",
        workload: Workload::Query,
        connections: 16,
    },
];

/// Messages in the query conversation before a query run.
const PRELOAD: usize = 2_000;

/// One scenario's figures with `servers` processes.
#[derive(Debug, serde::Serialize)]
pub(crate) struct PgResult {
    scenario: PgScenario,
    servers: usize,
    kalamdb: Measured,
    raw_postgres: Measured,
    /// KalamDB's req/s over raw PostgreSQL's.
    ratio: f64,
}

static SCHEMAS: AtomicUsize = AtomicUsize::new(0);

fn fresh_schema() -> String {
    format!(
        "bench{}_{}",
        SCHEMAS.fetch_add(1, Ordering::SeqCst),
        std::process::id()
    )
}

/// Runs every scenario with each count of `servers`, on `url`.
pub(crate) async fn run(
    real: &RealServer,
    url: &str,
    servers: &[usize],
    duration: Duration,
    only: &str,
) -> Result<Vec<PgResult>, String> {
    let mut results = Vec::new();
    // The scenario named exactly, or else those whose name contains `only`, as in the suite.
    let exact = SCENARIOS.iter().any(|s| s.name == only);
    let chosen = SCENARIOS.iter().filter(|s| {
        if exact {
            s.name == only
        } else {
            s.name.contains(only)
        }
    });
    for scenario in chosen {
        for &count in servers {
            let schema = fresh_schema();
            let started = start(real, url, &schema, count)?;
            let addrs: Vec<SocketAddr> = started.iter().map(|s| s.addr).collect();
            if scenario.workload == Workload::Query {
                preload(addrs[0]).await?;
            }
            let kalamdb =
                load::run_spread(&addrs, scenario.workload, scenario.connections, duration).await;
            drop(started);
            let raw = raw(url, scenario, duration).await?;
            let ratio = kalamdb.requests_per_sec / raw.requests_per_sec.max(f64::MIN_POSITIVE);
            eprintln!(
                "{:<32} {} server(s): {:>8.0} req/s p50 {:>6} µs p99 {:>7} µs | raw PostgreSQL {:>8.0} req/s p50 {:>6} µs | {:.2}x",
                scenario.name,
                count,
                kalamdb.requests_per_sec,
                kalamdb.p50_us,
                kalamdb.p99_us,
                raw.requests_per_sec,
                raw.p50_us,
                ratio
            );
            results.push(PgResult {
                scenario: *scenario,
                servers: count,
                kalamdb,
                raw_postgres: raw,
                ratio,
            });
        }
    }
    Ok(results)
}

/// `count` servers on `schema`, each with a pool of 16 connections.
fn start(
    real: &RealServer,
    url: &str,
    schema: &str,
    count: usize,
) -> Result<Vec<ServerProcess>, String> {
    let mut postgres = toml::Table::new();
    postgres.insert("url".into(), url.into());
    postgres.insert("schema".into(), schema.into());
    postgres.insert("pool_size".into(), toml::Value::Integer(16));
    let real = real
        .with_setting("storage", "backend", "postgres".into())?
        .with_setting("storage", "postgres", toml::Value::Table(postgres))?;
    (0..count).map(|_| real.start(true, |_| {}, None)).collect()
}

/// Fills the query conversation through the first server.
async fn preload(addr: SocketAddr) -> Result<(), String> {
    let message = format!(
        r#"{{"conversation_id":"{QUERY_CONVERSATION}","from":"bench","content":"{}"}}"#,
        "x".repeat(200)
    );
    let body = format!(r#"{{"messages":[{}]}}"#, vec![message; 100].join(","));
    for _ in 0..PRELOAD / 100 {
        let request = format!(
            "POST /api/v1/messages/batch HTTP/1.1\r\nhost: {addr}\r\ncontent-type: application/json\r\n\
             content-length: {}\r\nconnection: close\r\n\r\n{body}",
            body.len()
        );
        let size = crate::servers::reply_size(addr, request.as_bytes())?;
        if size == 0 {
            return Err("the preload got an empty answer".into());
        }
    }
    Ok(())
}

/// The ceiling: the store's own statements for `scenario`, straight from this client.
async fn raw(url: &str, scenario: &PgScenario, duration: Duration) -> Result<Measured, String> {
    let schema = fresh_schema();
    // The store creates the schema, exactly as a server would.
    let options = PgOptions {
        schema: schema.clone(),
        ..PgOptions::new(url)
    };
    tokio::task::spawn_blocking(move || PgStore::open(&options).map(|store| store.close()))
        .await
        .map_err(|e| e.to_string())?
        .map_err(|e| e.to_string())?
        .map_err(|e| e.to_string())?;
    let sql = Sql::new(&schema);
    let body = "x".repeat(200).into_bytes();
    if scenario.workload == Workload::Query {
        let (client, connection) = tokio_postgres::connect(url, NoTls)
            .await
            .map_err(|e| e.to_string())?;
        tokio::spawn(connection);
        let prepared = Prepared::new(&client, &sql, BATCH_SIZE)
            .await
            .map_err(|e| e.to_string())?;
        for _ in 0..PRELOAD / BATCH_SIZE {
            insert_tx(&client, &prepared, QUERY_CONVERSATION, &body, BATCH_SIZE).await?;
        }
    }
    let started = Instant::now();
    let deadline = started + duration;
    let tasks: Vec<_> = (0..scenario.connections)
        .map(|connection| {
            let (url, sql, body) = (url.to_owned(), sql.clone(), body.clone());
            let workload = scenario.workload;
            tokio::spawn(async move {
                let mut tally = Tally::new();
                let Ok((client, conn)) = tokio_postgres::connect(&url, NoTls).await else {
                    tally.record(Instant::now(), false);
                    return tally;
                };
                tokio::spawn(conn);
                let conversation = match workload {
                    Workload::SharedInsert => SHARED_CONVERSATION.to_owned(),
                    _ => format!("bench-c{connection}"),
                };
                let rows = if workload == Workload::Batch {
                    BATCH_SIZE
                } else {
                    1
                };
                let Ok(prepared) = Prepared::new(&client, &sql, rows).await else {
                    tally.record(Instant::now(), false);
                    return tally;
                };
                while Instant::now() < deadline {
                    let sent = Instant::now();
                    let done = match workload {
                        Workload::Query => page(&client, &prepared).await,
                        _ => insert_tx(&client, &prepared, &conversation, &body, rows).await,
                    };
                    tally.record(sent, done.is_ok());
                }
                tally
            })
        })
        .collect();
    let mut tallies = Vec::with_capacity(tasks.len());
    for task in tasks {
        tallies.push(task.await.map_err(|e| e.to_string())?);
    }
    Ok(Tally::summarize(tallies, started))
}

/// The statements of one connection, prepared once, as the store's pool caches them.
struct Prepared {
    lock_head: tokio_postgres::Statement,
    insert: tokio_postgres::Statement,
    update_head: tokio_postgres::Statement,
    page: tokio_postgres::Statement,
}

impl Prepared {
    async fn new(
        client: &tokio_postgres::Client,
        sql: &Sql,
        rows: usize,
    ) -> Result<Self, tokio_postgres::Error> {
        Ok(Prepared {
            lock_head: client.prepare(&sql.lock_head_upsert).await?,
            insert: client.prepare(&insert_messages(&sql.schema, rows)).await?,
            update_head: client.prepare(&sql.update_head_after_insert).await?,
            page: client.prepare(&sql.page_desc).await?,
        })
    }
}

/// An insert transaction as the store runs it: lock the head row, insert, update it, commit.
/// The ids are made up here (the store's minting is no database work).
async fn insert_tx(
    client: &tokio_postgres::Client,
    sql: &Prepared,
    conversation: &str,
    body: &[u8],
    rows: usize,
) -> Result<(), String> {
    let e = |e: tokio_postgres::Error| e.to_string();
    client.batch_execute("BEGIN").await.map_err(e)?;
    let head = client
        .query_one(&sql.lock_head, &[&conversation, &-1i64])
        .await
        .map_err(e)?;
    let last: i64 = head.get(0);
    let count: i64 = head.get(4);
    let ids: Vec<i64> = (1..=rows as i64).map(|n| last + n).collect();
    let mut params: Vec<&(dyn tokio_postgres::types::ToSql + Sync)> = Vec::new();
    let conversation = conversation.to_owned();
    for id in &ids {
        params.push(&conversation);
        params.push(id);
        params.push(&body);
    }
    client.execute(&sql.insert, &params).await.map_err(e)?;
    let newest = *ids.last().unwrap_or(&last);
    let now = 1_i64;
    client
        .execute(
            &sql.update_head,
            &[
                &conversation,
                &newest,
                &now,
                &now,
                &newest,
                &(count + rows as i64),
                &Some(newest),
            ],
        )
        .await
        .map_err(e)?;
    client.batch_execute("COMMIT").await.map_err(e)
}

/// The latest 50 of the query conversation.
async fn page(client: &tokio_postgres::Client, sql: &Prepared) -> Result<(), String> {
    let rows = client
        .query(&sql.page, &[&QUERY_CONVERSATION, &-1i64, &i64::MAX, &51i64])
        .await
        .map_err(|e| e.to_string())?;
    if rows.is_empty() {
        return Err("the query conversation is empty".into());
    }
    Ok(())
}

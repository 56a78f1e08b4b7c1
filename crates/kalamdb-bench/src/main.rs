//! `kalamdb-bench`: KalamDB's own benchmark.
//!
//! It starts the real `kalamdb-server` binary in a temp dir (on the operator's configuration
//! when `--server-config` names one) and, as the ceiling, a no-op hyper server (this binary's
//! hidden `noop-server` mode) that reads each body and answers a fixed JSON reply. Runs alternate between the two, and every figure is reported as a ratio to the
//! no-op server's, so that the noise of a shared machine cancels out. `docs/BENCHMARKS.md` has
//! the commands, the machine and the numbers.
//!
//! # Layout
//!
//! - `load`: the load generator (tokio + hyper client, N connections for T seconds, HDR
//!   histograms).
//! - `servers`: starting the real server (its configuration: the operator's base with each
//!   run's own keys set over it) and the no-op server, and reading peak RSS.
//! - `preload`: filling a data directory through the store before a query run.
//! - `stream`: the stream mode, insert → event latency with N subscribers.
//! - `auth`: `--auth`, the credentials every request carries and the server's `[auth]`.
//! - `erase`: the erase mode, deleting a large conversation while others insert.
//! - `postgres`: the PostgreSQL mode, one or several servers on one database against raw
//!   PostgreSQL running the same statements.
//! - here: the scenarios, their alternation, and the report (table and `--json`).

mod auth;
mod disk;
mod erase;
mod load;
mod pin;
mod postgres;
mod preload;
mod servers;
mod stream;

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use auth::Credentials;
use clap::{Parser, Subcommand};
use load::{Measured, Workload, QUERY_CONVERSATION};
use pin::Plan;
use servers::{RealServer, ServerProcess};

#[derive(Debug, Parser)]
#[command(
    version,
    about = "KalamDB's benchmark: the real server against a no-op ceiling"
)]
struct Cli {
    #[command(subcommand)]
    mode: Option<Mode>,
    /// The `kalamdb-server` binary to start (default: beside this binary).
    #[arg(long)]
    server_bin: Option<PathBuf>,
    /// Benchmark a server that is already running at this address (`127.0.0.1:8080`) instead
    /// of starting one. Its query conversation is whatever it holds.
    #[arg(long)]
    url: Option<SocketAddr>,
    /// Seconds each run lasts.
    #[arg(long, default_value_t = 10)]
    duration_secs: u64,
    /// Rounds per scenario; the median is reported.
    #[arg(long, default_value_t = 3)]
    rounds: usize,
    /// `standard` (every target's scenario) or `quick` (insert and query only).
    #[arg(long, default_value = "standard")]
    suite: String,
    /// Run only the scenario with this name, or else the scenarios whose name contains this text
    /// (`batches`, `query`, ...): `durable insert, 64 connections` is that one scenario, not the
    /// non-durable one too.
    #[arg(long)]
    only: Option<String>,
    /// Also run the growth mode: preload each of these sizes (comma-separated) and measure.
    #[arg(long, value_delimiter = ',')]
    growth: Vec<u64>,
    /// Also run the stream mode: insert → event latency with each of these numbers of
    /// subscribers (comma-separated) on one conversation.
    #[arg(long, value_delimiter = ',')]
    stream: Vec<usize>,
    /// Also run the erase mode: delete a conversation of this many messages while 64
    /// connections insert into others, and compare their latency with a window without it.
    #[arg(long)]
    erase: Option<u64>,
    /// Messages inserted in each stream-mode run.
    #[arg(long, default_value_t = 200)]
    stream_events: usize,
    /// Milliseconds between two inserts in the stream mode; 0 sends each as soon as the last is
    /// acknowledged.
    #[arg(long, default_value_t = 5)]
    stream_pause_ms: u64,
    /// Start the server under test from this configuration file (TOML): every layer, limit
    /// and storage setting is the file's. The benchmark still sets what each run must own:
    /// `server.host` (127.0.0.1) and `server.port`, `storage.rocksdb_path` (a temp dir),
    /// `storage.sync_writes` (the scenario's) and `logging.file_path`.
    #[arg(long)]
    server_config: Option<PathBuf>,
    /// Create each connection's conversation (`bench-c<N>`) with this many members before an
    /// insert or batch run, so the figures include keeping every member's listing current.
    #[arg(long, default_value_t = 0)]
    members: usize,
    /// Run the server under test with `[auth]` on, every request (to the no-op server too)
    /// carrying a fresh API key with the `service` role, or a user's HS256 token (the user is
    /// made a member of every conversation the load uses). Not for the stream mode.
    #[arg(long, value_enum)]
    auth: Option<auth::AuthMode>,
    /// `logging.level` of the server under test [default: the server config's, else warn].
    #[arg(long)]
    log_level: Option<String>,
    /// Run the PostgreSQL mode instead of the suite: the server on the PostgreSQL store with
    /// each of these numbers of processes (comma-separated) sharing the load, next to raw
    /// PostgreSQL running the store's statements from this client.
    #[arg(long, value_delimiter = ',')]
    postgres_servers: Vec<usize>,
    /// The database of the PostgreSQL mode; default: one this benchmark starts on loopback.
    #[arg(long)]
    postgres_url: Option<String>,
    /// Write the results as JSON to this file.
    #[arg(long)]
    json: Option<PathBuf>,
}

#[derive(Debug, Subcommand)]
enum Mode {
    /// Serve as the no-op ceiling (used by the benchmark itself).
    #[command(hide = true)]
    NoopServer {
        /// Answer a JSON body of this many bytes instead of a short one.
        #[arg(long)]
        reply_bytes: Option<usize>,
    },
}

/// One scenario of the suite.
#[derive(Debug, Clone, serde::Serialize)]
struct Scenario {
    name: &'static str,
    workload: Workload,
    connections: usize,
    sync_writes: bool,
    /// Messages preloaded into the query conversation.
    preload: u64,
}

#[derive(Debug, serde::Serialize)]
struct ScenarioResult {
    scenario: Scenario,
    server: Measured,
    noop: Measured,
    /// Server req/s over no-op req/s.
    throughput_ratio: f64,
    /// Each round's server req/s over the no-op's in the same round, in run order.
    round_ratios: Vec<f64>,
    /// Server p50 over no-op p50.
    p50_ratio: f64,
    /// For a query: the size of the server's reply, and a no-op answering a reply that large,
    /// which separates the cost of sending the page from the cost of producing it.
    reply_bytes: Option<usize>,
    sized_noop: Option<Measured>,
    /// Server req/s over the same-size no-op's.
    sized_ratio: Option<f64>,
    /// Messages stored or read per second by the server (requests × messages per request).
    server_messages_per_sec: f64,
    server_peak_rss_bytes: Option<u64>,
}

#[derive(Debug, serde::Serialize)]
struct GrowthResult {
    stored: u64,
    query_p50_us: u64,
    query_p99_us: u64,
    insert_requests_per_sec: f64,
    server_peak_rss_bytes: Option<u64>,
}

#[derive(Debug, serde::Serialize)]
struct Report {
    /// The cores the load generator and the servers ran on; `None`: unpinned (one core).
    pinning: Option<Plan>,
    /// The disk's own `fdatasync` p50 (4 KiB appends in the temp dir), in µs.
    fdatasync_p50_us: Option<u64>,
    /// `--server-config`, when the server under test started from one.
    server_config: Option<PathBuf>,
    /// `--auth`: the credentials every request carried.
    auth: Option<auth::AuthMode>,
    duration_secs: u64,
    rounds: usize,
    scenarios: Vec<ScenarioResult>,
    growth: Vec<GrowthResult>,
    stream: Vec<stream::StreamResult>,
    erase: Option<erase::EraseResult>,
}

fn suite(name: &str) -> Result<Vec<Scenario>, String> {
    let insert = |name, connections, sync_writes| Scenario {
        name,
        workload: Workload::Insert,
        connections,
        sync_writes,
        preload: 0,
    };
    let query = Scenario {
        name: "query-50, 16 connections",
        workload: Workload::Query,
        connections: 16,
        sync_writes: true,
        preload: 10_000,
    };
    match name {
        "quick" => Ok(vec![
            insert("durable insert, 64 connections", 64, true),
            query,
        ]),
        "standard" => Ok(vec![
            insert("durable insert, 64 connections", 64, true),
            insert("non-durable insert, 64 connections", 64, false),
            query,
            insert("durable insert, 1 connection", 1, true),
            Scenario {
                name: "batches of 100, 16 connections",
                workload: Workload::Batch,
                connections: 16,
                sync_writes: true,
                preload: 0,
            },
            Scenario {
                name: "mixed 80/20, 64 connections",
                workload: Workload::Mixed,
                connections: 64,
                sync_writes: true,
                preload: 10_000,
            },
        ]),
        other => Err(format!("unknown suite {other:?}: use standard or quick")),
    }
}

/// Each round's server req/s over the no-op's from the same round. The two ran back to back, so
/// the spread of these shows how far the machine moved under the scenario: a target met by the
/// median ratio but not by the lowest round is met by luck as much as by the server.
fn round_ratios(server: &[Measured], noop: &[Measured]) -> Vec<f64> {
    server
        .iter()
        .zip(noop)
        .map(|(s, n)| s.requests_per_sec / n.requests_per_sec.max(f64::MIN_POSITIVE))
        .collect()
}

/// `min-max` of the round ratios, for the printed line.
fn spread(ratios: &[f64]) -> String {
    if ratios.is_empty() {
        return "-".to_owned();
    }
    let min = ratios.iter().copied().fold(f64::INFINITY, f64::min);
    let max = ratios.iter().copied().fold(f64::NEG_INFINITY, f64::max);
    format!("{min:.2}-{max:.2}x")
}

fn median(mut runs: Vec<Measured>) -> Measured {
    runs.sort_by(|a, b| a.requests_per_sec.total_cmp(&b.requests_per_sec));
    runs.swap_remove(runs.len() / 2)
}

fn server_binary(cli: &Cli) -> Result<PathBuf, String> {
    if let Some(path) = &cli.server_bin {
        // Absolute, because each server starts in its own temp dir, where a relative path would
        // name nothing.
        return std::fs::canonicalize(path)
            .map_err(|e| format!("--server-bin {}: {e}", path.display()));
    }
    let me = std::env::current_exe().map_err(|e| e.to_string())?;
    let dir = me.parent().ok_or("no directory")?;
    // Beside this binary, or one up when this is a test's copy under deps/.
    [dir.join("kalamdb-server"), dir.join("../kalamdb-server")]
        .into_iter()
        .find(|p| p.is_file())
        .ok_or_else(|| {
            format!(
                "no kalamdb-server beside {}; build it (cargo build --release --bin \
                 kalamdb-server) or pass --server-bin",
                me.display()
            )
        })
}

/// How to start the real server, with `credentials` set in its `[auth]`; `None` with `--url`,
/// which names a server already running.
fn real_server(cli: &Cli, credentials: Option<&Credentials>) -> Result<Option<RealServer>, String> {
    if cli.url.is_some() {
        return match cli.server_config {
            Some(_) => {
                Err("--server-config starts a server; --url names one already running".into())
            }
            None => Ok(None),
        };
    }
    let mut base = match &cli.server_config {
        Some(path) => servers::read_base_config(path)?,
        None => toml::Table::new(),
    };
    if let Some(credentials) = credentials {
        credentials.apply(&mut base);
    }
    Ok(Some(RealServer::new(
        server_binary(cli)?,
        base,
        cli.log_level.clone(),
    )))
}

/// Starts a real server with `storage.sync_writes = sync_writes` and `preload` messages in the
/// query conversation; `None` with `--url`.
fn start_server(
    real: Option<&RealServer>,
    scenario: &Scenario,
    members: usize,
    plan: Option<&Plan>,
    credentials: Option<&Credentials>,
) -> Result<Option<ServerProcess>, String> {
    let member = credentials.and_then(Credentials::member);
    let Some(real) = real else {
        return Ok(None);
    };
    let mut failure = None;
    let server = real.start(
        scenario.sync_writes,
        |data| {
            if scenario.preload > 0 {
                let loaded = preload::preload(data, QUERY_CONVERSATION, scenario.preload, member);
                if let Err(e) = loaded {
                    failure = Some(e);
                }
            }
            if members > 0 && scenario.workload.writes() {
                let made = preload::with_members(data, scenario.connections, members, member);
                if let Err(e) = made {
                    failure = Some(e);
                }
            }
        },
        plan,
    )?;
    match failure {
        Some(e) => Err(format!("preload failed: {e}")),
        None => Ok(Some(server)),
    }
}

/// The server under test: the one started, or the one `--url` names.
fn target(cli: &Cli, started: Option<&ServerProcess>) -> SocketAddr {
    started.map_or_else(
        || cli.url.expect("--url is set when no server is started"),
        |s| s.addr,
    )
}

/// The scenario named `only` exactly, or else those whose name contains it.
fn selected(scenarios: Vec<Scenario>, only: &str) -> Vec<Scenario> {
    let exact = scenarios.iter().any(|s| s.name == only);
    scenarios
        .into_iter()
        .filter(|s| {
            if exact {
                s.name == only
            } else {
                s.name.contains(only)
            }
        })
        .collect()
}

/// One load run against `addr`, with the CPU `process` (the server answering, when this
/// benchmark started it) spent per request.
async fn measure(
    process: Option<&ServerProcess>,
    addr: SocketAddr,
    scenario: &Scenario,
    duration: Duration,
    authorization: Option<&str>,
) -> Measured {
    let before = process.and_then(ServerProcess::cpu_time_us);
    let (workload, connections) = (scenario.workload, scenario.connections);
    let mut measured = load::run(addr, workload, connections, duration, authorization).await;
    let after = process.and_then(ServerProcess::cpu_time_us);
    measured.cpu_us_per_request = cpu_per_request(before, after, measured.ok + measured.errors);
    measured
}

/// CPU µs per request from two readings of a process's CPU time around `requests`.
fn cpu_per_request(before: Option<u64>, after: Option<u64>, requests: u64) -> Option<f64> {
    let spent = after?.checked_sub(before?)?;
    (requests > 0).then(|| spent as f64 / requests as f64)
}

async fn run_suite(cli: &Cli, plan: Option<&Plan>) -> Result<Report, String> {
    let duration = Duration::from_secs(cli.duration_secs);
    if cli.auth.is_some() && !cli.stream.is_empty() {
        return Err("--auth applies to the load scenarios and growth, not to --stream".into());
    }
    let credentials = cli.auth.map(Credentials::new).transpose()?;
    let credentials = credentials.as_ref();
    let authorization = credentials.map(Credentials::header);
    let authorization = authorization.as_deref();
    if let Some(credentials) = credentials {
        eprintln!(
            "auth: every request carries a {:?} credential",
            credentials.mode()
        );
    }
    let real = real_server(cli, credentials)?;
    let real = real.as_ref();
    let noop = servers::start_noop(plan, None)?;
    let mut results = Vec::new();
    let only = cli.only.as_deref().unwrap_or("");
    for scenario in selected(suite(&cli.suite)?, only) {
        let server = start_server(real, &scenario, cli.members, plan, credentials)?;
        let addr = target(cli, server.as_ref());
        let reply_bytes = match scenario.workload {
            Workload::Query => {
                let request = load::query_request(addr, authorization);
                Some(servers::reply_size(addr, &request)?)
            }
            _ => None,
        };
        let sized = reply_bytes
            .map(|bytes| servers::start_noop(plan, Some(bytes)))
            .transpose()?;
        let (mut real_runs, mut noop_runs, mut sized_runs) = (Vec::new(), Vec::new(), Vec::new());
        for _ in 0..cli.rounds.max(1) {
            let run = |process, addr| measure(process, addr, &scenario, duration, authorization);
            noop_runs.push(run(Some(&noop), noop.addr).await);
            if let Some(sized) = &sized {
                sized_runs.push(run(Some(sized), sized.addr).await);
            }
            real_runs.push(run(server.as_ref(), addr).await);
        }
        drop(sized);
        let sized_noop = (!sized_runs.is_empty()).then(|| median(sized_runs));
        let round_ratios = round_ratios(&real_runs, &noop_runs);
        let (server_m, noop_m) = (median(real_runs), median(noop_runs));
        let sized_ratio = sized_noop
            .as_ref()
            .map(|sized| server_m.requests_per_sec / sized.requests_per_sec.max(f64::MIN_POSITIVE));
        let result = ScenarioResult {
            reply_bytes,
            sized_noop,
            sized_ratio,
            throughput_ratio: server_m.requests_per_sec
                / noop_m.requests_per_sec.max(f64::MIN_POSITIVE),
            round_ratios,
            p50_ratio: server_m.p50_us as f64 / noop_m.p50_us.max(1) as f64,
            server_messages_per_sec: server_m.requests_per_sec
                * scenario.workload.messages_per_request() as f64,
            server_peak_rss_bytes: server.as_ref().and_then(ServerProcess::peak_rss_bytes),
            scenario,
            server: server_m,
            noop: noop_m,
        };
        print_result(&result);
        results.push(result);
    }
    let mut growth = Vec::new();
    for &stored in &cli.growth {
        eprintln!("growth: preloading {stored} messages");
        let preloaded = Scenario {
            name: "growth",
            workload: Workload::Query,
            connections: 16,
            sync_writes: true,
            preload: stored,
        };
        let server = start_server(real, &preloaded, 0, plan, credentials)?
            .ok_or("--growth needs a started server, not --url")?;
        let addr = server.addr;
        let query = load::run(addr, Workload::Query, 16, duration, authorization).await;
        let insert = load::run(addr, Workload::Insert, 64, duration, authorization).await;
        let result = GrowthResult {
            stored,
            query_p50_us: query.p50_us,
            query_p99_us: query.p99_us,
            insert_requests_per_sec: insert.requests_per_sec,
            server_peak_rss_bytes: server.peak_rss_bytes(),
        };
        println!(
            "growth {:>10} stored: query-50 p50 {:>6} us  p99 {:>6} us | insert {:>9.0} req/s | rss {}",
            result.stored,
            result.query_p50_us,
            result.query_p99_us,
            result.insert_requests_per_sec,
            mib(result.server_peak_rss_bytes)
        );
        growth.push(result);
    }
    let mut streams = Vec::new();
    for &subscribers in &cli.stream {
        let plain = Scenario {
            name: "stream",
            workload: Workload::Insert,
            connections: 1,
            sync_writes: true,
            preload: 0,
        };
        let server = start_server(real, &plain, 0, plan, None)?;
        let pause = Duration::from_millis(cli.stream_pause_ms);
        let result = stream::run(
            target(cli, server.as_ref()),
            subscribers,
            cli.stream_events,
            pause,
        )
        .await?;
        println!(
            "stream {:>5} subscribers: insert -> event p50 {:>6} us  p99 {:>6} us  max {:>6} us | \
             {} events each, {} ms apart, {} incomplete | rss {}",
            result.subscribers,
            result.p50_us,
            result.p99_us,
            result.max_us,
            result.events_per_subscriber,
            result.pause_ms,
            result.incomplete,
            mib(server.as_ref().and_then(ServerProcess::peak_rss_bytes))
        );
        streams.push(result);
    }
    let erased = match cli.erase {
        Some(count) => {
            let real = real.ok_or("--erase needs a started server, not --url")?;
            eprintln!("erase: preloading {count} messages");
            let result = erase::run(real, count, duration, plan).await?;
            println!(
                "erase {:>9} messages: DELETE {} in {:.0} ms | other inserts p50 {} us p99 {} us \
                 p99.9 {} us {:.0} req/s, baseline p50 {} us p99 {} us p99.9 {} us {:.0} req/s",
                result.messages,
                result.delete_status,
                result.delete_ms,
                result.during.p50_us,
                result.during.p99_us,
                result.during.p999_us,
                result.during.requests_per_sec,
                result.baseline.p50_us,
                result.baseline.p99_us,
                result.baseline.p999_us,
                result.baseline.requests_per_sec,
            );
            for line in &result.eraser {
                println!("erase round: {line}");
            }
            Some(result)
        }
        None => None,
    };
    // After the servers (a server that refuses to start stops the run before anything is
    // measured), in a temp dir like theirs, so on the same disk.
    let probe = tempfile::tempdir().map_err(|e| e.to_string())?;
    let fdatasync = match disk::fdatasync_p50_us(probe.path(), 200) {
        Ok(p50) => {
            println!("disk: fdatasync p50 {p50} us (200 appends of 4 KiB)");
            Some(p50)
        }
        Err(e) => {
            eprintln!("disk: fdatasync not measured: {e}");
            None
        }
    };
    Ok(Report {
        pinning: plan.cloned(),
        fdatasync_p50_us: fdatasync,
        server_config: cli.server_config.clone(),
        auth: cli.auth,
        duration_secs: cli.duration_secs,
        rounds: cli.rounds,
        scenarios: results,
        growth,
        stream: streams,
        erase: erased,
    })
}

/// The PostgreSQL mode: see `postgres.rs`.
async fn run_postgres(cli: &Cli) -> Result<(), String> {
    let real =
        real_server(cli, None)?.ok_or("the PostgreSQL mode starts its servers; drop --url")?;
    // Started here when no database is named, and stopped when this returns.
    let own = match &cli.postgres_url {
        Some(_) => None,
        None => Some(
            tokio::task::spawn_blocking(kalamdb_postgres::testing::TestPostgres::start_durable)
                .await
                .map_err(|e| e.to_string())?,
        ),
    };
    let url = cli
        .postgres_url
        .clone()
        .or_else(|| own.as_ref().map(|pg| pg.url.clone()))
        .ok_or("no database")?;
    let duration = Duration::from_secs(cli.duration_secs);
    let only = cli.only.as_deref().unwrap_or("");
    let results = postgres::run(&real, &url, &cli.postgres_servers, duration, only).await?;
    if let Some(path) = &cli.json {
        let text = serde_json::to_string_pretty(&results).expect("serializable");
        std::fs::write(path, text).map_err(|e| format!("cannot write {}: {e}", path.display()))?;
    }
    Ok(())
}

fn micros(us: Option<f64>) -> String {
    us.map_or_else(|| "-".into(), |us| format!("{us:.1}"))
}

fn mib(bytes: Option<u64>) -> String {
    bytes.map_or_else(
        || "-".to_owned(),
        |b| format!("{:.0} MiB", b as f64 / 1048576.0),
    )
}

fn print_result(r: &ScenarioResult) {
    println!(
        "{:<38} server {:>9.0} req/s p50 {:>6} us p99 {:>6} us p999 {:>6} us err {:>4} | \
         no-op {:>9.0} req/s p50 {:>5} us | ratio {:.2}x (rounds {}), p50 {:.2}x | {:.0} msg/s | \
         cpu/req {} us, no-op {} us | rss {}",
        r.scenario.name,
        r.server.requests_per_sec,
        r.server.p50_us,
        r.server.p99_us,
        r.server.p999_us,
        r.server.errors,
        r.noop.requests_per_sec,
        r.noop.p50_us,
        r.throughput_ratio,
        spread(&r.round_ratios),
        r.p50_ratio,
        r.server_messages_per_sec,
        micros(r.server.cpu_us_per_request),
        micros(r.noop.cpu_us_per_request),
        mib(r.server_peak_rss_bytes)
    );
    if let (Some(sized), Some(ratio), Some(bytes)) = (&r.sized_noop, r.sized_ratio, r.reply_bytes) {
        println!(
            "{:<38} no-op with the page's {bytes}-byte reply {:>9.0} req/s p50 {:>5} us | \
             ratio {ratio:.2}x | cpu/req {} us",
            "",
            sized.requests_per_sec,
            sized.p50_us,
            micros(sized.cpu_us_per_request)
        );
    }
}

/// The server's allocator, so the no-op ceiling runs on the same one as the server it is compared
/// with (the load generator, in the same binary, runs on it too).
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> std::process::ExitCode {
    let cli = Cli::parse();
    if let Some(Mode::NoopServer { reply_bytes }) = cli.mode {
        return match servers::run_noop(reply_bytes) {
            Ok(()) => std::process::ExitCode::SUCCESS,
            Err(e) => {
                eprintln!("noop-server: {e}");
                std::process::ExitCode::FAILURE
            }
        };
    }
    // Before any thread starts, so that the runtime's threads inherit the load generator's
    // cores (and size themselves to them).
    let plan = pin::Plan::apply();
    match &plan {
        Some(plan) => eprintln!(
            "pinned: load generator on cores {:?}, servers on {:?}",
            plan.load, plan.servers
        ),
        None => eprintln!("not pinned: fewer than two cores, or their affinity cannot be set"),
    }
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("a tokio runtime");
    if !cli.postgres_servers.is_empty() {
        return match runtime.block_on(run_postgres(&cli)) {
            Ok(()) => std::process::ExitCode::SUCCESS,
            Err(e) => {
                eprintln!("kalamdb-bench: {e}");
                std::process::ExitCode::FAILURE
            }
        };
    }
    match runtime.block_on(run_suite(&cli, plan.as_ref())) {
        Ok(report) => {
            if let Some(path) = &cli.json {
                let text = serde_json::to_string_pretty(&report).expect("serializable");
                if let Err(e) = std::fs::write(path, text) {
                    eprintln!("kalamdb-bench: cannot write {}: {e}", path.display());
                    return std::process::ExitCode::FAILURE;
                }
            }
            std::process::ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("kalamdb-bench: {e}");
            std::process::ExitCode::FAILURE
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn names(only: &str) -> Vec<&'static str> {
        let scenarios = suite("standard").expect("the standard suite");
        selected(scenarios, only).iter().map(|s| s.name).collect()
    }

    #[test]
    fn an_exact_name_selects_that_scenario_alone() {
        let durable = suite("standard").unwrap()[0].name;
        assert!(durable.starts_with("durable insert, 64"), "{durable}");
        assert_eq!(names(durable), [durable]);
    }

    fn at(requests_per_sec: f64) -> Measured {
        Measured {
            requests_per_sec,
            p50_us: 0,
            p99_us: 0,
            p999_us: 0,
            errors: 0,
            ok: 0,
            cpu_us_per_request: None,
        }
    }

    #[test]
    fn cpu_per_request_needs_both_readings_and_a_request() {
        assert_eq!(cpu_per_request(Some(1_000), Some(5_000), 400), Some(10.0));
        assert_eq!(cpu_per_request(None, Some(5_000), 400), None);
        assert_eq!(cpu_per_request(Some(1_000), None, 400), None);
        assert_eq!(cpu_per_request(Some(1_000), Some(5_000), 0), None);
        // A process that restarted between the readings reads less the second time.
        assert_eq!(cpu_per_request(Some(5_000), Some(1_000), 400), None);
    }

    #[test]
    fn each_round_is_compared_with_the_no_op_run_beside_it() {
        // Paired by round, not by rank: the medians alone (20k over 30k, 0.67) hide both rounds
        // at 0.5.
        let server = [at(10_000.0), at(30_000.0), at(20_000.0)];
        let noop = [at(20_000.0), at(30_000.0), at(40_000.0)];
        let ratios = round_ratios(&server, &noop);
        assert_eq!(ratios, [0.5, 1.0, 0.5]);
        assert_eq!(spread(&ratios), "0.50-1.00x");
        assert_eq!(spread(&[0.4321]), "0.43-0.43x");
        assert_eq!(spread(&[]), "-");
    }

    #[test]
    fn a_relative_server_binary_is_found_from_where_the_benchmark_was_started() {
        let cli = Cli::parse_from(["kalamdb-bench", "--server-bin", "Cargo.toml"]);
        let found = server_binary(&cli).unwrap();
        assert!(found.is_absolute(), "{}", found.display());
        assert_eq!(found, std::fs::canonicalize("Cargo.toml").unwrap());

        let cli = Cli::parse_from(["kalamdb-bench", "--server-bin", "no/such/server"]);
        let error = server_binary(&cli).unwrap_err();
        assert!(
            error.starts_with("--server-bin no/such/server: "),
            "{error}"
        );
    }

    #[test]
    fn other_text_selects_every_scenario_containing_it() {
        let inserts = names("insert");
        assert!(inserts.len() >= 3, "{inserts:?}");
        assert!(inserts.iter().all(|name| name.contains("insert")));
        assert_eq!(names("").len(), suite("standard").unwrap().len());
    }
}

//! A PostgreSQL server of the tests' own (feature `test-util`): `initdb` into a temporary
//! directory and `postgres` on a free loopback port, as the `postgres` user when the tests run
//! as root (PostgreSQL refuses to run as root). Nothing relies on a system service.
//!
//! [`TestPostgres::start`] gives one that stops (by its PID) when dropped, without `fsync`: the
//! tests kill servers and connections, never the machine, and a server that waits on the disk
//! for each commit makes them fail with the disk's stalls (a lease renewal more than 8 seconds
//! late while many tests committed at once). [`TestPostgres::start_durable`] syncs every commit,
//! for the benchmark's figures;
//! [`TestPostgres::shared`] one per test process, which a watchdog stops once the process is
//! gone. [`TestPostgres::fresh_store`] opens a [`PgStore`] on a schema no other test uses.

use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

use crate::{PgOptions, PgStore};

/// A running PostgreSQL server on loopback.
#[derive(Debug)]
pub struct TestPostgres {
    /// `postgres://kalamdb@127.0.0.1:<port>/postgres`.
    pub url: String,
    /// Its TCP port.
    pub port: u16,
    pid: u32,
    /// The wrapper shell that started it and stops it when this process exits.
    watchdog: Child,
    _dir: tempfile::TempDir,
}

/// Where `initdb` and `postgres` are: `$PG_BINDIR`, Debian's `/usr/lib/postgresql/<newest>/bin`,
/// or the `PATH`.
fn bindir() -> Option<PathBuf> {
    if let Some(dir) = std::env::var_os("PG_BINDIR") {
        return Some(PathBuf::from(dir));
    }
    let mut versions: Vec<(u32, PathBuf)> = std::fs::read_dir("/usr/lib/postgresql")
        .ok()?
        .filter_map(|entry| {
            let entry = entry.ok()?;
            let version: u32 = entry.file_name().to_str()?.parse().ok()?;
            let bin = entry.path().join("bin");
            bin.join("initdb").exists().then_some((version, bin))
        })
        .collect();
    versions.sort();
    versions.pop().map(|(_, bin)| bin)
}

fn program(name: &str) -> PathBuf {
    bindir().map_or_else(|| PathBuf::from(name), |dir| dir.join(name))
}

fn is_root() -> bool {
    Command::new("id")
        .arg("-u")
        .output()
        .is_ok_and(|out| String::from_utf8_lossy(&out.stdout).trim() == "0")
}

/// `program args...`, as the `postgres` user when this process is root.
fn as_db_user(program: &Path) -> Command {
    if is_root() {
        let mut command = Command::new("runuser");
        command.args(["-u", "postgres", "--"]).arg(program);
        command
    } else {
        Command::new(program)
    }
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("no free loopback port")
}

impl TestPostgres {
    /// Starts a server without `fsync` (see the module docs); panics, naming the fix, when
    /// PostgreSQL is not installed.
    pub fn start() -> Self {
        Self::launch(false)
    }

    /// Starts a server that syncs its WAL at every commit, as a production one does.
    pub fn start_durable() -> Self {
        Self::launch(true)
    }

    fn launch(fsync: bool) -> Self {
        let dir = tempfile::Builder::new()
            .prefix("kalamdb-pg-")
            .tempdir()
            .expect("temp dir");
        let data = dir.path().join("data");
        if is_root() {
            let status = Command::new("chown")
                .args(["-R", "postgres:"])
                .arg(dir.path())
                .status()
                .expect("chown");
            assert!(status.success(), "could not give the postgres user {dir:?}");
        }
        let initdb = program("initdb");
        let out = as_db_user(&initdb)
            .arg("-D")
            .arg(&data)
            .args(["-U", "kalamdb", "-A", "trust", "-E", "UTF8", "--no-sync"])
            .output()
            .unwrap_or_else(|e| {
                panic!("could not run {initdb:?} ({e}): install PostgreSQL with scripts/setup.sh")
            });
        assert!(
            out.status.success(),
            "initdb failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        let port = free_port();
        let postgres = program("postgres");
        let log = dir.path().join("postgres.log");
        // The shell starts postgres, prints its PID, and stops it (fast shutdown) once the test
        // process that started it is gone, however that process ends.
        let script = format!(
            "{launch} -D '{data}' -p {port} -h 127.0.0.1 -k '' -c max_connections=300 \
             -c shared_buffers=64MB -c fsync={fsync} > '{log}' 2>&1 & pid=$!; echo $pid; \
             while kill -0 {parent} 2>/dev/null && kill -0 $pid 2>/dev/null; do sleep 0.5; done; \
             pm=$(head -n 1 '{data}/postmaster.pid' 2>/dev/null); \
             [ -n \"$pm\" ] && kill -INT $pm 2>/dev/null; wait $pid; rm -rf '{dir}'",
            launch = if is_root() {
                format!("runuser -u postgres -- '{}'", postgres.display())
            } else {
                format!("'{}'", postgres.display())
            },
            data = data.display(),
            fsync = if fsync { "on" } else { "off" },
            log = log.display(),
            dir = dir.path().display(),
            parent = std::process::id(),
        );
        let mut watchdog = Command::new("sh")
            .args(["-c", &script])
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .expect("sh");
        let mut line = String::new();
        {
            use std::io::BufRead;
            let stdout = watchdog.stdout.take().expect("piped");
            std::io::BufReader::new(stdout)
                .read_line(&mut line)
                .expect("the watchdog's first line");
        }
        let launcher: u32 = line.trim().parse().expect("a PID");
        let url = format!("postgres://kalamdb@127.0.0.1:{port}/postgres");
        let started = Instant::now();
        loop {
            // Accepting TCP is not yet accepting sessions ("the database system is starting
            // up"): pg_isready asks the server itself.
            let ready = Command::new(program("pg_isready"))
                .args(["-q", "-h", "127.0.0.1", "-p", &port.to_string()])
                .status()
                .is_ok_and(|s| s.success());
            if ready {
                break;
            }
            assert!(
                started.elapsed() < Duration::from_secs(60),
                "postgres did not start: {}",
                std::fs::read_to_string(&log).unwrap_or_default()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
        // `runuser` forks: the postmaster's PID is in its pid file.
        let pid = std::fs::read_to_string(data.join("postmaster.pid"))
            .ok()
            .and_then(|text| text.lines().next()?.trim().parse().ok())
            .unwrap_or(launcher);
        TestPostgres {
            url,
            port,
            pid,
            watchdog,
            _dir: dir,
        }
    }

    /// One server for the whole test process, started on first use.
    pub fn shared() -> &'static TestPostgres {
        static SHARED: OnceLock<TestPostgres> = OnceLock::new();
        SHARED.get_or_init(TestPostgres::start)
    }

    /// The postmaster's PID.
    pub fn pid(&self) -> u32 {
        self.pid
    }

    /// Options for a store on a schema of its own (`t<n>_<pid>`), so tests never see each
    /// other's rows, with the server's default lease. A shorter one makes any test that
    /// writes fail whenever the database or the machine stalls for a second: with a 3-second
    /// lease, writes stop 2.4 seconds after the last renewal, and a loaded test run did stall
    /// that long. The tests of expiry itself take [`TestPostgres::short_lease_options`].
    pub fn options(&self) -> PgOptions {
        static NEXT: AtomicUsize = AtomicUsize::new(0);
        let n = NEXT.fetch_add(1, Ordering::SeqCst);
        PgOptions {
            schema: format!("t{n}_{}", std::process::id()),
            pool_size: 8,
            ..PgOptions::new(&self.url)
        }
    }

    /// [`TestPostgres::options`] with a 3-second lease, so the tests of a lease's expiry run in
    /// seconds. For tests that write little, and nothing else at the same time.
    pub fn short_lease_options(&self) -> PgOptions {
        PgOptions {
            lease_ttl: Duration::from_secs(3),
            ..self.options()
        }
    }

    /// A store on a fresh schema of this server.
    pub fn fresh_store(&self) -> Arc<PgStore> {
        Arc::new(PgStore::open(&self.options()).expect("open a PgStore"))
    }
}

impl Drop for TestPostgres {
    fn drop(&mut self) {
        let _ = Command::new("kill")
            .args(["-INT", &self.pid.to_string()])
            .status();
        let _ = self.watchdog.wait();
    }
}

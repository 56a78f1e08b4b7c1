//! The servers under test: the real `kalamdb-server` binary in a temp dir, and the no-op
//! ceiling, a plain hyper server in a child process of this binary.

use std::io::{BufRead, BufReader};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http::{Request, Response};
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::server::conn::auto;
use tempfile::TempDir;

use crate::pin::{spawn_pinned, Plan};

/// A server process, killed on drop.
pub(crate) struct ServerProcess {
    child: Child,
    /// Where it listens.
    pub(crate) addr: SocketAddr,
    /// The data directory of a real server (kept until the process is gone).
    _dir: Option<TempDir>,
}

impl ServerProcess {
    /// The process's peak resident memory in bytes (Linux `VmHWM`), if readable.
    pub(crate) fn peak_rss_bytes(&self) -> Option<u64> {
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.child.id())).ok()?;
        let line = status.lines().find(|l| l.starts_with("VmHWM:"))?;
        let kib: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
        Some(kib * 1024)
    }

    /// What the server wrote to its log file so far (empty when it has none or it is not one
    /// the benchmark started).
    pub(crate) fn log_text(&self) -> String {
        self._dir
            .as_ref()
            .and_then(|dir| std::fs::read_to_string(dir.path().join("server.log")).ok())
            .unwrap_or_default()
    }

    /// The CPU time the process has used so far (user + system, every thread), in µs.
    pub(crate) fn cpu_time_us(&self) -> Option<u64> {
        crate::pin::cpu_time_us(self.child.id())
    }
}

impl Drop for ServerProcess {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("a free port")
}

/// Sets `section.key`, creating the section when the base has none.
fn set(
    config: &mut toml::Table,
    section: &str,
    key: &str,
    value: toml::Value,
) -> Result<(), String> {
    let table = config
        .entry(section)
        .or_insert_with(|| toml::Value::Table(toml::Table::new()))
        .as_table_mut()
        .ok_or_else(|| format!("`{section}` in the server config is not a table"))?;
    table.insert(key.to_owned(), value);
    Ok(())
}

fn wait_until_listening(addr: SocketAddr, child: &mut Child) -> Result<(), String> {
    let deadline = Instant::now() + Duration::from_secs(60);
    while Instant::now() < deadline {
        if let Ok(Some(status)) = child.try_wait() {
            return Err(format!("the server exited during start-up: {status}"));
        }
        if TcpStream::connect_timeout(&addr, Duration::from_millis(100)).is_ok() {
            return Ok(());
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    Err(format!("nothing listened on {addr} within 60 s"))
}

/// Settings of a real server run.
#[derive(Debug, Clone)]
pub(crate) struct RealServer {
    /// The `kalamdb-server` binary.
    binary: PathBuf,
    /// The operator's configuration (`--server-config`), the base every run's config starts from.
    base: toml::Table,
    /// The `logging.level` set over the base: `--log-level`, or else [`DEFAULT_LOG_LEVEL`] when
    /// the base has none; `None` keeps the base's.
    log_level: Option<String>,
}

/// The server's log level when neither `--log-level` nor the base config sets one: per-request
/// log lines would otherwise measure the log file as much as the server.
pub(crate) const DEFAULT_LOG_LEVEL: &str = "warn";

/// Reads the operator's configuration for `--server-config`. Only its TOML syntax is checked
/// here; the server itself checks every key when it starts, and a refusal is reported with the
/// server's own message.
pub(crate) fn read_base_config(path: &Path) -> Result<toml::Table, String> {
    let text = std::fs::read_to_string(path)
        .map_err(|e| format!("cannot read the server config {}: {e}", path.display()))?;
    text.parse::<toml::Table>().map_err(|e| {
        format!(
            "the server config {} is not valid TOML: {e}",
            path.display()
        )
    })
}

impl RealServer {
    /// The settings for `binary` on the operator's `base`, with `--log-level` if given.
    pub(crate) fn new(binary: PathBuf, base: toml::Table, log_level: Option<String>) -> Self {
        let base_has_level = base
            .get("logging")
            .and_then(|logging| logging.get("level"))
            .is_some();
        let log_level =
            log_level.or_else(|| (!base_has_level).then(|| DEFAULT_LOG_LEVEL.to_owned()));
        Self {
            binary,
            base,
            log_level,
        }
    }

    /// The same settings with `section.key` set over the base.
    pub(crate) fn with_setting(
        &self,
        section: &str,
        key: &str,
        value: toml::Value,
    ) -> Result<Self, String> {
        let mut changed = self.clone();
        set(&mut changed.base, section, key, value)?;
        Ok(changed)
    }

    /// The same settings with `logging.level` set to `level`.
    pub(crate) fn with_log_level(&self, level: &str) -> Self {
        let mut changed = self.clone();
        changed.log_level = Some(level.to_owned());
        changed
    }

    /// The configuration of one run: the base, with what the benchmark must own set over it.
    /// The server listens on loopback only, on `port`, stores in `data` with `sync_writes` and
    /// logs to `log_file`; every other key (layers, limits, storage tuning) is the operator's.
    fn config(
        &self,
        port: u16,
        data: &Path,
        sync_writes: bool,
        log_file: &Path,
    ) -> Result<String, String> {
        let mut config = self.base.clone();
        let path = |p: &Path| toml::Value::String(p.display().to_string());
        set(&mut config, "server", "host", "127.0.0.1".into())?;
        set(&mut config, "server", "port", i64::from(port).into())?;
        set(&mut config, "storage", "rocksdb_path", path(data))?;
        set(&mut config, "storage", "sync_writes", sync_writes.into())?;
        set(&mut config, "logging", "file_path", path(log_file))?;
        if let Some(level) = &self.log_level {
            set(&mut config, "logging", "level", level.as_str().into())?;
        }
        toml::to_string(&config).map_err(|e| format!("cannot write the server config: {e}"))
    }

    /// Starts the binary on a fresh temp dir with `storage.sync_writes = sync_writes`, after
    /// `prepare` has filled its data directory.
    pub(crate) fn start(
        &self,
        sync_writes: bool,
        prepare: impl FnOnce(&Path),
        plan: Option<&Plan>,
    ) -> Result<ServerProcess, String> {
        let dir = tempfile::tempdir().map_err(|e| e.to_string())?;
        let data = dir.path().join("data");
        prepare(&data);
        let port = free_port();
        let config = self.config(port, &data, sync_writes, &dir.path().join("server.log"))?;
        let config_path = dir.path().join("config.toml");
        std::fs::write(&config_path, config).map_err(|e| e.to_string())?;
        // Kept so that a server refusing its configuration can say why.
        let stderr_path = dir.path().join("stderr.log");
        let stderr = std::fs::File::create(&stderr_path).map_err(|e| e.to_string())?;
        let mut command = Command::new(&self.binary);
        command
            .arg("--config")
            .arg(&config_path)
            .current_dir(dir.path())
            .stdout(Stdio::null())
            .stderr(stderr);
        let mut child = spawn_pinned(plan, || command.spawn())
            .map_err(|e| format!("cannot start {}: {e}", self.binary.display()))?;
        let addr = SocketAddr::from(([127, 0, 0, 1], port));
        wait_until_listening(addr, &mut child).map_err(|e| {
            let said = std::fs::read_to_string(&stderr_path).unwrap_or_default();
            format!("{e}\n{}", said.trim_end())
        })?;
        Ok(ServerProcess {
            child,
            addr,
            _dir: Some(dir),
        })
    }
}

/// Starts the no-op server: this binary again, with the hidden `noop-server` subcommand.
/// With `reply_bytes`, its reply is a JSON body of that many bytes instead of a short one: the
/// ceiling for a server that sends a page that large.
pub(crate) fn start_noop(
    plan: Option<&Plan>,
    reply_bytes: Option<usize>,
) -> Result<ServerProcess, String> {
    let me = std::env::current_exe().map_err(|e| e.to_string())?;
    let mut command = Command::new(me);
    command
        .arg("noop-server")
        .stdout(Stdio::piped())
        .stderr(Stdio::null());
    if let Some(bytes) = reply_bytes {
        command.arg("--reply-bytes").arg(bytes.to_string());
    }
    let mut child = spawn_pinned(plan, || command.spawn()).map_err(|e| e.to_string())?;
    let stdout = child.stdout.take().ok_or("no stdout")?;
    let mut line = String::new();
    BufReader::new(stdout)
        .read_line(&mut line)
        .map_err(|e| e.to_string())?;
    let addr: SocketAddr = line
        .trim()
        .parse()
        .map_err(|_| format!("the no-op server said {line:?}"))?;
    wait_until_listening(addr, &mut child)?;
    Ok(ServerProcess {
        child,
        addr,
        _dir: None,
    })
}

/// The no-op server's main: reads each request's body and answers a fixed JSON reply (of
/// `reply_bytes` when given), on the same hyper-util builder and runtime shape as the real
/// server. Prints its address, then serves until killed.
pub(crate) fn run_noop(reply_bytes: Option<usize>) -> std::io::Result<()> {
    let reply = reply_bytes.map_or_else(
        || Bytes::from_static(br#"{"msg_id":"1","conversation_id":"bench","timestamp":0}"#),
        |bytes| Bytes::from(reply_of(bytes)),
    );
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    runtime.block_on(async {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
        println!("{}", listener.local_addr()?);
        loop {
            let (stream, _) = listener.accept().await?;
            let _ = stream.set_nodelay(true);
            let reply = reply.clone();
            tokio::spawn(async move {
                let service = hyper::service::service_fn(move |request: Request<Incoming>| {
                    let reply = reply.clone();
                    async move {
                        let _ = request.into_body().collect().await;
                        // A clone of `Bytes` shares the buffer: nothing is copied per request.
                        let mut response = Response::new(Full::new(reply));
                        response.headers_mut().insert(
                            http::header::CONTENT_TYPE,
                            http::HeaderValue::from_static("application/json"),
                        );
                        Ok::<_, std::convert::Infallible>(response)
                    }
                });
                let _ = auto::Builder::new(TokioExecutor::new())
                    .serve_connection(TokioIo::new(stream), service)
                    .await;
            });
        }
    })
}

/// A JSON object of exactly `bytes` bytes (at least the 10 of `{"pad":""}`), so
/// that a sized no-op's reply is as valid as the page it stands in for.
fn reply_of(bytes: usize) -> Vec<u8> {
    let mut reply = br#"{"pad":""#.to_vec();
    reply.resize(bytes.saturating_sub(2).max(reply.len()), b'x');
    reply.extend_from_slice(br#""}"#);
    reply
}

/// The size of the body `server` answers `request` (a whole HTTP/1.1 request) with, from its
/// `content-length`.
pub(crate) fn reply_size(server: SocketAddr, request: &[u8]) -> Result<usize, String> {
    use std::io::{Read, Write};
    let mut stream = TcpStream::connect(server).map_err(|e| e.to_string())?;
    stream
        .set_read_timeout(Some(Duration::from_secs(10)))
        .map_err(|e| e.to_string())?;
    stream.write_all(request).map_err(|e| e.to_string())?;
    let mut head = Vec::new();
    let mut byte = [0u8; 1];
    while !head.ends_with(b"\r\n\r\n") {
        stream.read_exact(&mut byte).map_err(|e| e.to_string())?;
        head.push(byte[0]);
    }
    let head = String::from_utf8_lossy(&head).to_ascii_lowercase();
    head.lines()
        .find_map(|line| line.strip_prefix("content-length:"))
        .and_then(|value| value.trim().parse().ok())
        .ok_or_else(|| format!("no content-length in the answer: {head:?}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_sized_reply_is_json_of_that_size() {
        for bytes in [16_500, 100, 13] {
            let reply = reply_of(bytes);
            assert_eq!(reply.len(), bytes);
            assert!(serde_json::from_slice::<serde_json::Value>(&reply).is_ok());
        }
    }

    fn real(base: &str, log_level: Option<&str>) -> RealServer {
        RealServer::new(
            PathBuf::from("kalamdb-server"),
            base.parse().expect("test TOML"),
            log_level.map(str::to_owned),
        )
    }

    fn config(server: &RealServer, sync_writes: bool) -> toml::Table {
        let text = server
            .config(
                4242,
                Path::new("/tmp/run/data"),
                sync_writes,
                Path::new("/tmp/run/server.log"),
            )
            .expect("a config");
        text.parse().expect("the benchmark writes valid TOML")
    }

    #[test]
    fn the_operators_settings_are_kept_and_the_runs_own_keys_are_set_over_them() {
        let base = r#"
            [server]
            host = "0.0.0.0"
            port = 8080
            max_connections = 500
            [storage]
            rocksdb_path = "/var/lib/kalamdb"
            sync_writes = false
            compression = "none"
            [middleware.rate_limit]
            enabled = true
            requests_per_second = 7
        "#;
        let config = config(&real(base, None), true);
        assert_eq!(config["server"]["host"].as_str(), Some("127.0.0.1"));
        assert_eq!(config["server"]["port"].as_integer(), Some(4242));
        assert_eq!(config["server"]["max_connections"].as_integer(), Some(500));
        assert_eq!(
            config["storage"]["rocksdb_path"].as_str(),
            Some("/tmp/run/data")
        );
        assert_eq!(config["storage"]["sync_writes"].as_bool(), Some(true));
        assert_eq!(config["storage"]["compression"].as_str(), Some("none"));
        assert_eq!(
            config["logging"]["file_path"].as_str(),
            Some("/tmp/run/server.log")
        );
        let rate_limit = &config["middleware"]["rate_limit"];
        assert_eq!(rate_limit["enabled"].as_bool(), Some(true));
        assert_eq!(rate_limit["requests_per_second"].as_integer(), Some(7));
    }

    #[test]
    fn without_a_base_the_run_gets_the_servers_defaults_and_its_own_keys() {
        let config = config(&real("", None), false);
        assert_eq!(config["storage"]["sync_writes"].as_bool(), Some(false));
        assert_eq!(config["logging"]["level"].as_str(), Some(DEFAULT_LOG_LEVEL));
        let sections: Vec<&str> = config.keys().map(String::as_str).collect();
        assert_eq!(sections, ["logging", "server", "storage"]);
    }

    #[test]
    fn the_log_level_flag_beats_the_files_level_which_beats_the_default() {
        let level = |server: &RealServer| config(server, true)["logging"]["level"].clone();
        let base = "[logging]\nlevel = \"info\"\n";
        assert_eq!(level(&real(base, Some("error"))).as_str(), Some("error"));
        assert_eq!(level(&real(base, None)).as_str(), Some("info"));
        assert_eq!(level(&real("", None)).as_str(), Some("warn"));
        assert_eq!(level(&real("", Some("debug"))).as_str(), Some("debug"));
    }

    #[test]
    fn a_section_that_is_not_a_table_is_refused_by_name() {
        let server = real("storage = 5", None);
        let error = server
            .config(1, Path::new("data"), true, Path::new("log"))
            .unwrap_err();
        assert!(error.contains("`storage`"), "{error}");
    }

    #[test]
    fn a_base_config_that_is_not_toml_is_refused_with_its_path() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("broken.toml");
        std::fs::write(&path, "[server\nport = 1\n").unwrap();
        let error = read_base_config(&path).unwrap_err();
        assert!(error.contains("broken.toml"), "{error}");
        assert!(error.contains("not valid TOML"), "{error}");
        let missing = read_base_config(&dir.path().join("absent.toml")).unwrap_err();
        assert!(missing.contains("absent.toml"), "{missing}");
    }
}

//! Running the real `kalamdb-server` binary: a temp dir, a config, a free port, a raw HTTP/1.1
//! client and signals.

#![allow(dead_code)] // Each test file uses its own part of this module.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;
use serde_json::Value;
use tempfile::TempDir;

/// How long a server gets to start or stop before the test fails.
const PATIENCE: Duration = Duration::from_secs(60);

/// The binary under test.
pub(crate) fn binary() -> &'static str {
    env!("CARGO_BIN_EXE_kalamdb-server")
}

/// A port nobody listens on right now.
pub(crate) fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("bind an ephemeral port")
        .port()
}

/// A server's working directory and config, kept across restarts.
pub(crate) struct ServerDir {
    pub(crate) dir: TempDir,
    pub(crate) port: u16,
}

impl ServerDir {
    /// A temp dir with a config (`extra` appended) on a free port.
    pub(crate) fn new(extra: &str) -> Self {
        Self::with_server_keys("", extra)
    }

    /// Like [`ServerDir::new`], with `server_keys` added to `[server]`.
    pub(crate) fn with_server_keys(server_keys: &str, extra: &str) -> Self {
        let dir = tempfile::tempdir().expect("temp dir");
        let port = free_port();
        let config = format!(
            "[server]\nport = {port}\nshutdown_timeout_ms = 10000\n{server_keys}\n\n\
             [storage]\nrocksdb_path = \"{}\"\n\n\
             [logging]\nfile_path = \"{}\"\n\n{extra}",
            dir.path().join("data").display(),
            dir.path().join("logs/nested/server.log").display(),
        );
        std::fs::write(dir.path().join("config.toml"), config).expect("write config");
        Self { dir, port }
    }

    pub(crate) fn config_path(&self) -> PathBuf {
        self.dir.path().join("config.toml")
    }

    pub(crate) fn log_path(&self) -> PathBuf {
        self.dir.path().join("logs/nested/server.log")
    }

    pub(crate) fn addr(&self) -> SocketAddr {
        SocketAddr::from(([127, 0, 0, 1], self.port))
    }

    /// Starts the binary on this config and waits until `/health` answers.
    pub(crate) fn start(&self) -> Server {
        let child = Command::new(binary())
            .arg("--config")
            .arg(self.config_path())
            .current_dir(self.dir.path())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawn kalamdb-server");
        let mut server = Server {
            child,
            addr: self.addr(),
        };
        server.wait_ready();
        server
    }
}

/// A running server process.
pub(crate) struct Server {
    pub(crate) child: Child,
    pub(crate) addr: SocketAddr,
}

impl Server {
    fn wait_ready(&mut self) {
        let deadline = Instant::now() + PATIENCE;
        loop {
            if let Ok(Some(status)) = self.child.try_wait() {
                let mut stderr = String::new();
                if let Some(mut pipe) = self.child.stderr.take() {
                    let _ = pipe.read_to_string(&mut stderr);
                }
                panic!("server exited during start-up ({status}): {stderr}");
            }
            if let Ok(response) = request(self.addr, "GET", "/health", None) {
                if response.status == 200 {
                    return;
                }
            }
            assert!(Instant::now() < deadline, "server did not become ready");
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    pub(crate) fn signal(&self, signal: Signal) {
        kill(Pid::from_raw(self.child.id() as i32), signal).expect("send signal");
    }

    /// Waits for the process to exit.
    pub(crate) fn wait(mut self) -> ExitStatus {
        let deadline = Instant::now() + PATIENCE;
        loop {
            if let Some(status) = self.child.try_wait().expect("wait") {
                return status;
            }
            if Instant::now() > deadline {
                let _ = self.child.kill();
                panic!("server did not exit");
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// SIGTERM, then wait.
    pub(crate) fn stop(self) -> ExitStatus {
        self.signal(Signal::SIGTERM);
        self.wait()
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        // A failed test must not leave a server behind.
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// An HTTP response as tests see it.
#[derive(Debug)]
pub(crate) struct Response {
    pub(crate) status: u16,
    pub(crate) head: String,
    pub(crate) json: Value,
}

/// One HTTP/1.1 request on a fresh connection.
pub(crate) fn request(
    addr: SocketAddr,
    method: &str,
    path: &str,
    json: Option<&Value>,
) -> std::io::Result<Response> {
    request_with(addr, method, path, None, json)
}

/// One HTTP/1.1 request on a fresh connection, with `Authorization: Bearer <token>` when given.
pub(crate) fn request_with(
    addr: SocketAddr,
    method: &str,
    path: &str,
    token: Option<&str>,
    json: Option<&Value>,
) -> std::io::Result<Response> {
    let mut stream = TcpStream::connect_timeout(&addr, Duration::from_secs(5))?;
    stream.set_read_timeout(Some(Duration::from_secs(30)))?;
    let body = json.map(Value::to_string).unwrap_or_default();
    let mut head = format!("{method} {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n");
    if let Some(token) = token {
        head.push_str(&format!("Authorization: Bearer {token}\r\n"));
    }
    if json.is_some() {
        head.push_str("Content-Type: application/json\r\n");
    }
    head.push_str(&format!("Content-Length: {}\r\n\r\n", body.len()));
    stream.write_all(head.as_bytes())?;
    stream.write_all(body.as_bytes())?;
    let mut raw = Vec::new();
    stream.read_to_end(&mut raw)?;
    let text = String::from_utf8_lossy(&raw);
    let (head, body) = text
        .split_once("\r\n\r\n")
        .ok_or_else(|| std::io::Error::other("no response head"))?;
    let status = head
        .split(' ')
        .nth(1)
        .and_then(|s| s.parse().ok())
        .ok_or_else(|| std::io::Error::other("no status"))?;
    Ok(Response {
        status,
        head: head.to_owned(),
        json: serde_json::from_str(body).unwrap_or(Value::Null),
    })
}

/// Runs the binary with `args` in `dir` and returns (status, stdout, stderr).
pub(crate) fn run_to_end(dir: &Path, args: &[&str]) -> (ExitStatus, String, String) {
    let output = Command::new(binary())
        .args(args)
        .current_dir(dir)
        .output()
        .expect("run kalamdb-server");
    (
        output.status,
        String::from_utf8_lossy(&output.stdout).into_owned(),
        String::from_utf8_lossy(&output.stderr).into_owned(),
    )
}

/// Waits until the log file at `path` contains `needle`.
pub(crate) fn wait_for_log(path: &Path, needle: &str) {
    let deadline = Instant::now() + PATIENCE;
    loop {
        if std::fs::read_to_string(path).is_ok_and(|log| log.contains(needle)) {
            return;
        }
        assert!(Instant::now() < deadline, "{needle:?} never logged");
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// The value of an unlabelled metric from the server's `/metrics`.
pub(crate) fn metric(addr: SocketAddr, name: &str) -> f64 {
    let mut stream = TcpStream::connect_timeout(&addr, Duration::from_secs(5)).expect("connect");
    stream
        .set_read_timeout(Some(Duration::from_secs(30)))
        .expect("set timeout");
    stream
        .write_all(b"GET /metrics HTTP/1.1\r\nHost: kalamdb\r\nConnection: close\r\n\r\n")
        .expect("send");
    let mut text = String::new();
    stream.read_to_string(&mut text).expect("read metrics");
    text.lines()
        .find_map(|line| {
            line.strip_prefix(name)?
                .strip_prefix(' ')?
                .trim()
                .parse()
                .ok()
        })
        .unwrap_or(0.0)
}

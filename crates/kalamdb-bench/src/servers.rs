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
    pub(crate) binary: PathBuf,
    /// `storage.sync_writes`.
    pub(crate) sync_writes: bool,
    /// `logging.level`.
    pub(crate) log_level: String,
}

impl RealServer {
    /// Starts the binary on a fresh temp dir, after `prepare` has filled its data directory.
    pub(crate) fn start(&self, prepare: impl FnOnce(&Path)) -> Result<ServerProcess, String> {
        let dir = tempfile::tempdir().map_err(|e| e.to_string())?;
        let data = dir.path().join("data");
        prepare(&data);
        let port = free_port();
        let config = format!(
            "[server]\nport = {port}\n\n[storage]\nrocksdb_path = \"{}\"\nsync_writes = {}\n\n\
             [logging]\nlevel = \"{}\"\nfile_path = \"{}\"\n",
            data.display(),
            self.sync_writes,
            self.log_level,
            dir.path().join("server.log").display()
        );
        let config_path = dir.path().join("config.toml");
        std::fs::write(&config_path, config).map_err(|e| e.to_string())?;
        let mut child = Command::new(&self.binary)
            .arg("--config")
            .arg(&config_path)
            .current_dir(dir.path())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .map_err(|e| format!("cannot start {}: {e}", self.binary.display()))?;
        let addr = SocketAddr::from(([127, 0, 0, 1], port));
        wait_until_listening(addr, &mut child)?;
        Ok(ServerProcess {
            child,
            addr,
            _dir: Some(dir),
        })
    }
}

/// Starts the no-op server: this binary again, with the hidden `noop-server` subcommand.
pub(crate) fn start_noop() -> Result<ServerProcess, String> {
    let me = std::env::current_exe().map_err(|e| e.to_string())?;
    let mut child = Command::new(me)
        .arg("noop-server")
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .map_err(|e| e.to_string())?;
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

/// The no-op server's main: reads each request's body and answers a fixed JSON reply, on the
/// same hyper-util builder and runtime shape as the real server. Prints its address, then serves
/// until killed.
pub(crate) fn run_noop() -> std::io::Result<()> {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    runtime.block_on(async {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
        println!("{}", listener.local_addr()?);
        loop {
            let (stream, _) = listener.accept().await?;
            let _ = stream.set_nodelay(true);
            tokio::spawn(async move {
                let service = hyper::service::service_fn(|request: Request<Incoming>| async {
                    let _ = request.into_body().collect().await;
                    let mut response = Response::new(Full::new(Bytes::from_static(
                        br#"{"msg_id":"1","conversation_id":"bench","timestamp":0}"#,
                    )));
                    response.headers_mut().insert(
                        http::header::CONTENT_TYPE,
                        http::HeaderValue::from_static("application/json"),
                    );
                    Ok::<_, std::convert::Infallible>(response)
                });
                let _ = auto::Builder::new(TokioExecutor::new())
                    .serve_connection(TokioIo::new(stream), service)
                    .await;
            });
        }
    })
}

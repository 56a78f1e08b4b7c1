//! A full disk, for real: the store on a small tmpfs, filled with a ballast file. Writes then
//! answer 503 `unavailable` and `/health` turns degraded, the server does not crash, and it
//! recovers by itself once space returns. A server started on a full disk fails with a clear
//! error.
//!
//! Mounting a tmpfs needs root (CI runs as root). Elsewhere the test says so and returns.

mod common;

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use common::{request, run_to_end, ServerDir};
use serde_json::json;

/// A tmpfs mounted for the test, unmounted on drop.
struct Tmpfs(PathBuf);

impl Tmpfs {
    fn mount(path: &Path, size_mib: u32) -> Option<Self> {
        std::fs::create_dir_all(path).unwrap();
        let status = Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={size_mib}m"), "tmpfs"])
            .arg(path)
            .status()
            .ok()?;
        status.success().then(|| Tmpfs(path.to_owned()))
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg("-l").arg(&self.0).status();
    }
}

/// Fills the file system holding `path` with a ballast file; returns the file.
fn fill(dir: &Path) -> PathBuf {
    let ballast = dir.join("ballast");
    let mut file = std::fs::File::create(&ballast).unwrap();
    let chunk = vec![0u8; 1 << 20];
    while file.write_all(&chunk).is_ok() {}
    // The last partial chunk, byte-wise precise enough: whatever is left is under 1 MiB.
    let _ = file.write_all(&chunk[..4096]);
    ballast
}

fn on_tmpfs(mnt: &Path) -> ServerDir {
    let dir = ServerDir::new("");
    let config = std::fs::read_to_string(dir.config_path()).unwrap();
    let data = dir.dir.path().join("data").display().to_string();
    let moved = config.replace(&data, &mnt.join("data").display().to_string());
    std::fs::write(dir.config_path(), moved).unwrap();
    dir
}

#[test]
fn a_full_disk_is_503_and_degraded_health_then_recovers() {
    let root = tempfile::tempdir().unwrap();
    let mnt = root.path().join("mnt");
    let Some(_tmpfs) = Tmpfs::mount(&mnt, 200) else {
        eprintln!("skipped: cannot mount a tmpfs here (needs root)");
        return;
    };
    let dir = on_tmpfs(&mnt);
    let server = dir.start();
    let small = json!({"conversation_id": "c", "from": "a", "content": "before"});
    let kept = request(server.addr, "POST", "/api/v1/messages", Some(&small)).unwrap();
    assert_eq!(kept.status, 200);
    let ballast = fill(&mnt);

    // RocksDB preallocates its WAL, so it takes some writing to reach the end of the disk.
    let big = json!({"conversation_id": "c", "from": "a", "content": "x".repeat(900_000)});
    let mut refused = None;
    for _ in 0..300 {
        let response = request(server.addr, "POST", "/api/v1/messages", Some(&big)).unwrap();
        assert!(
            response.status == 200 || response.status == 503,
            "{} {:?}",
            response.status,
            response.json
        );
        if response.status == 503 {
            refused = Some(response);
            break;
        }
    }
    let refused = refused.expect("the disk never filled up");
    assert_eq!(refused.json["error"], "unavailable");
    assert!(refused.head.to_ascii_lowercase().contains("retry-after"));
    let health = request(server.addr, "GET", "/health", None).unwrap();
    assert_eq!(health.status, 503);
    assert_eq!(health.json["status"], "degraded");
    // Still serving reads of what it acknowledged.
    let id = kept.json["msg_id"].as_str().unwrap();
    let read = request(server.addr, "GET", &format!("/api/v1/messages/{id}"), None).unwrap();
    assert_eq!(read.json["content"], "before");

    // Space returns: RocksDB resumes by itself and writes succeed again.
    std::fs::remove_file(ballast).unwrap();
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let response = request(server.addr, "POST", "/api/v1/messages", Some(&small)).unwrap();
        if response.status == 200 {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "never recovered: {:?}",
            response.json
        );
        std::thread::sleep(Duration::from_millis(200));
    }
    let health = request(server.addr, "GET", "/health", None).unwrap();
    assert_eq!(health.json["status"], "ok");
    assert!(server.stop().success());
}

#[test]
fn starting_on_a_full_disk_fails_clearly() {
    let root = tempfile::tempdir().unwrap();
    let mnt = root.path().join("mnt");
    let Some(_tmpfs) = Tmpfs::mount(&mnt, 8) else {
        eprintln!("skipped: cannot mount a tmpfs here (needs root)");
        return;
    };
    let dir = on_tmpfs(&mnt);
    fill(&mnt);
    let (status, _stdout, stderr) = run_to_end(
        dir.dir.path(),
        &["--config", dir.config_path().to_str().unwrap()],
    );
    assert_eq!(status.code(), Some(1), "{stderr}");
    assert!(stderr.contains("No space left on device"), "{stderr}");
}

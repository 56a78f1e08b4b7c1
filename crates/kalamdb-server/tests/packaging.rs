//! What ships beside the binary: the example scripts against a real server, and the container
//! image's configuration.

mod common;

use std::path::{Path, PathBuf};
use std::process::Command;

use common::{run_to_end, ServerDir};
use serde_json::Value;

fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

/// Runs an example script against `url` and parses what it prints.
fn example(url: &str, script: &str, args: &[&str]) -> Value {
    let output = Command::new(repo_root().join("examples").join(script))
        .args(args)
        .env("KALAMDB_URL", url)
        .output()
        .expect("run the example script (needs bash and curl; scripts/setup.sh installs curl)");
    assert!(
        output.status.success(),
        "{script} failed: {}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    serde_json::from_slice(&output.stdout).expect("the script prints JSON")
}

#[test]
fn the_example_scripts_work_as_written() {
    let dir = ServerDir::new("");
    let server = dir.start();
    let url = format!("http://{}", server.addr);

    let first = example(&url, "insert_message.sh", &[]);
    assert!(first["msg_id"].as_str().is_some(), "{first}");
    let second = example(
        &url,
        "insert_message.sh",
        &["conv_demo", "assistant", "He said \"hi\" \\ twice"],
    );
    assert_eq!(second["conversation_id"], "conv_demo");

    let page = example(&url, "query_messages.sh", &["conv_demo", "1"]);
    assert_eq!(page["count"], 1);
    assert_eq!(page["has_more"], true);
    assert_eq!(page["messages"][0]["msg_id"], first["msg_id"]);
    let cursor = page["next_cursor"].as_str().unwrap().to_owned();
    let next = example(&url, "query_messages.sh", &["conv_demo", "1", &cursor]);
    assert_eq!(next["messages"][0]["content"], "He said \"hi\" \\ twice");
    assert_eq!(next["has_more"], false);
    assert!(server.stop().success());
}

#[test]
fn the_container_config_is_valid_and_uses_the_volumes() {
    let docker = repo_root().join("docker");
    let config = docker.join("config.toml");
    let (status, stdout, stderr) = run_to_end(
        &docker,
        &["--config", config.to_str().unwrap(), "--check-config"],
    );
    assert!(status.success(), "{stderr}");
    assert!(stdout.contains("host = \"0.0.0.0\""), "{stdout}");
    // Listening on every interface without auth passes protected mode only because the
    // config says the network in front is trusted; without that line it would not start.
    assert!(stdout.contains("allow_unauthenticated = true"), "{stdout}");
    let text = std::fs::read_to_string(&config).unwrap();
    let unprotected = text.replace("allow_unauthenticated = true", "");
    let scratch = tempfile::tempdir().unwrap();
    let path = scratch.path().join("config.toml");
    std::fs::write(&path, unprotected).unwrap();
    let (status, _, stderr) = run_to_end(
        scratch.path(),
        &["--config", path.to_str().unwrap(), "--check-config"],
    );
    assert_eq!(status.code(), Some(2), "{stderr}");
    assert!(stderr.contains("auth.enabled"), "{stderr}");
    assert!(stdout.contains("/var/lib/kalamdb/data/rocksdb"), "{stdout}");
    assert!(stdout.contains("/var/lib/kalamdb/logs/app.log"), "{stdout}");

    // The image runs the config it copies, declares those volumes and checks /health.
    let dockerfile = std::fs::read_to_string(docker.join("Dockerfile")).unwrap();
    assert!(dockerfile.contains("COPY docker/config.toml /etc/kalamdb/config.toml"));
    assert!(dockerfile.contains("\"--config\", \"/etc/kalamdb/config.toml\""));
    assert!(dockerfile.contains("VOLUME [\"/var/lib/kalamdb/data\", \"/var/lib/kalamdb/logs\"]"));
    assert!(dockerfile.contains("USER kalamdb"));
    assert!(dockerfile.contains("http://127.0.0.1:8080/health"));
}

//! `--server-config`: the server under test runs on the operator's configuration, and a
//! configuration the server refuses stops the benchmark with the server's own message.

mod common;

use std::process::Output;

const SCENARIO: &str = "durable insert, 64 connections";

fn bench(config: &str, extra: &[&str]) -> (Output, tempfile::TempDir) {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("server.toml");
    std::fs::write(&path, config).unwrap();
    let mut args = vec!["--only", SCENARIO, "--duration-secs", "1", "--rounds", "1"];
    args.extend(["--server-config", path.to_str().unwrap()]);
    args.extend(extra);
    (common::bench(&args), dir)
}

#[test]
fn the_server_under_test_runs_on_the_given_configuration() {
    // A limit of one request a second for everyone: the server refuses nearly every insert,
    // which only this configuration can make it do.
    let config = "[middleware.rate_limit]\nenabled = true\nkey = \"global\"\n\
                  requests_per_second = 1\nburst = 1\n";
    let dir = tempfile::tempdir().unwrap();
    let json = dir.path().join("results.json");
    let (output, _config_dir) = bench(config, &["--json", json.to_str().unwrap()]);
    let report = common::report(&output, &json);
    assert!(report["server_config"]
        .as_str()
        .unwrap()
        .ends_with("server.toml"));
    let scenarios = report["scenarios"].as_array().unwrap();
    assert_eq!(scenarios.len(), 1, "{report}");
    let (server, noop) = (&scenarios[0]["server"], &scenarios[0]["noop"]);
    let (ok, refused) = (
        server["ok"].as_u64().unwrap(),
        server["errors"].as_u64().unwrap(),
    );
    assert!(
        (1..=3).contains(&ok),
        "one request a second, burst 1: {server}"
    );
    assert!(refused > 100, "{server}");
    assert_eq!(
        noop["errors"], 0,
        "the no-op server is not the one configured: {noop}"
    );
}

#[test]
fn a_configuration_the_server_refuses_stops_the_run_with_the_servers_message() {
    let (output, _dir) = bench("[storage]\nno_such_key = 1\n", &[]);
    assert!(!output.status.success());
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("storage.no_such_key"), "{stderr}");
    assert!(output.stdout.is_empty(), "nothing was measured");
}

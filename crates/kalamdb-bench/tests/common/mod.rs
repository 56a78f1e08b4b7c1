//! Running the built `kalamdb-bench` binary from the integration tests.

use std::path::Path;
use std::process::{Command, Output};

/// Runs `kalamdb-bench` with `args` and waits for it.
pub(crate) fn bench(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_kalamdb-bench"))
        .args(args)
        .output()
        .expect(
            "run kalamdb-bench (needs target/*/kalamdb-server: cargo test --workspace builds it)",
        )
}

/// Checks that the run succeeded, showing what it printed if not, and reads its `--json` report.
pub(crate) fn report(output: &Output, json: &Path) -> serde_json::Value {
    assert!(
        output.status.success(),
        "{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    serde_json::from_slice(&std::fs::read(json).unwrap()).unwrap()
}

//! The whole stack's tests, one module per file beside this one, in one test binary (see
//! `tests/Cargo.toml`); `metrics.rs` is a binary of its own. Run one file's tests with
//! `cargo test --workspace --release --test all <module>::` (`--workspace`, or the features
//! resolve differently and RocksDB is built again).

mod auth;
mod batch;
mod conversations;
mod deletes;
mod endpoints;
mod hostile;
mod idempotency;
mod layers;
mod live_bus;
mod openapi;
mod openapi_inputs;
mod query;
mod routes;
mod socket;
mod stack;
mod stream;

/// With `autotests = false`, a file added beside these without a `mod` line above would never be
/// compiled or run, and nothing would say so.
#[test]
fn every_test_file_is_a_module_here_or_a_binary_of_its_own() {
    let declared = include_str!("all.rs");
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests");
    let mut checked = 0;
    for entry in std::fs::read_dir(&dir).unwrap() {
        let name = entry.unwrap().file_name().into_string().unwrap();
        let Some(stem) = name.strip_suffix(".rs") else {
            continue;
        };
        // This file, and the one `tests/Cargo.toml` declares as a binary of its own.
        if matches!(stem, "all" | "metrics") {
            continue;
        }
        assert!(
            declared.contains(&format!("\nmod {stem};\n")),
            "tests/{name} is not a module of tests/all.rs, so it never runs"
        );
        checked += 1;
    }
    assert!(checked >= 16, "only {checked} test files found in {dir:?}");
}

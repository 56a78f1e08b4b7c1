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

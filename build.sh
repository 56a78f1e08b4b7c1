#!/usr/bin/env bash
# Release build: dist/kalamdb-server and dist/config.example.toml.
#
#   ./build.sh            # then: cd dist && ./kalamdb-server --config config.example.toml
#
# Installs what the build needs first (scripts/setup.sh), builds with the committed Cargo.lock,
# and copies the binary and the documented example configuration side by side.
set -euo pipefail
cd "$(dirname "$0")"

scripts/setup.sh
cargo build --release --locked --bin kalamdb-server

mkdir -p dist
cp target/release/kalamdb-server dist/
cp config.example.toml dist/
echo "built dist/kalamdb-server ($(dist/kalamdb-server --version))"

#!/usr/bin/env bash
# Release build: dist/kalamdb-server and dist/config.example.toml.
#
#   ./build.sh            # then: cd dist && ./kalamdb-server --config config.example.toml
#
# Installs what the build needs first (scripts/setup.sh), builds with the committed Cargo.lock,
# and copies the binary and the documented example configuration side by side. The release
# profile ships no debug info (about 21 MB instead of 480) but keeps symbols for profilers;
# scripts/check-dist.sh holds it under 40 MB.
set -euo pipefail
cd "$(dirname "$0")"

scripts/setup.sh
cargo build --release --locked --bin kalamdb-server

mkdir -p dist
cp target/release/kalamdb-server dist/
cp config.example.toml dist/
echo "built dist/kalamdb-server ($(dist/kalamdb-server --version), $(du -h dist/kalamdb-server | cut -f1))"

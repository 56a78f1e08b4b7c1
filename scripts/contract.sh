#!/usr/bin/env bash
# The HTTP contract checked from outside: schemathesis (from PyPI) generates requests from
# docs/openapi.yaml, valid and invalid, sends them to a real server and checks every answer
# against the spec: all checks, all phases, a fixed seed. Any finding fails the run.
#
#   scripts/contract.sh [SERVER_BINARY]   # default dist/kalamdb-server (./build.sh makes it)
#
# The server runs on a port it picks on 127.0.0.1, on a temp data dir, and is stopped by PID.
# schemathesis lives in target/contract-venv, installed from scripts/contract-requirements.txt.
set -euo pipefail
cd "$(dirname "$0")/.."
repo=$PWD
binary=$(realpath "${1:-dist/kalamdb-server}")

venv=target/contract-venv
if ! cmp -s scripts/contract-requirements.txt "$venv/requirements.txt" 2>/dev/null; then
    rm -rf "$venv"
    python3 -m venv "$venv"
    "$venv/bin/pip" install -q --disable-pip-version-check -r scripts/contract-requirements.txt
    cp scripts/contract-requirements.txt "$venv/requirements.txt"
fi

# $dir, and the server stopped by PID on exit.
source scripts/server-dir.sh

# A port free right now (the server refuses port 0); the tests pick theirs the same way.
port=$(python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
# The built-in defaults but for where things go; the rate limit is off so that schemathesis's
# few hundred requests a second are all answered by the endpoints.
cat >"$dir/config.toml" <<CONFIG
[server]
port = $port
[storage]
rocksdb_path = "$dir/data"
[logging]
level = "info"
file_path = "$dir/server.log"
[middleware.rate_limit]
enabled = false
CONFIG

"$binary" --config "$dir/config.toml" >"$dir/console.log" 2>&1 &
server=$!
addr=""
for _ in $(seq 1 100); do
    addr=$(grep -o 'listening addr=[0-9.:]*' "$dir/console.log" | head -n1 | cut -d= -f2 || true)
    [ -n "$addr" ] && break
    kill -0 "$server" 2>/dev/null || { cat "$dir/console.log" >&2; exit 1; }
    sleep 0.1
done
[ -n "$addr" ] || { echo "contract: the server did not start" >&2; cat "$dir/console.log" >&2; exit 1; }
echo "contract: schemathesis against $binary on $addr (scripts/schemathesis.toml)"

# From the temp dir: schemathesis writes its own folder where it runs.
cd "$dir"
PYTHONPATH="$repo/scripts" "$repo/$venv/bin/st" --config-file "$repo/scripts/schemathesis.toml" --no-color \
    run "$repo/docs/openapi.yaml" \
    --url "http://$addr" \
    --checks all \
    --phases examples,coverage,fuzzing,stateful

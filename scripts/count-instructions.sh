#!/usr/bin/env bash
# Counts the instructions the server spends on each insert or query, with valgrind's callgrind.
#
#   scripts/count-instructions.sh [single|batch|query|list] [SERVER_BINARY]
#
# Starts the server under callgrind on a temp dir (sync_writes = false, port 18080), warms it up,
# then counts every thread's user-space instructions while 3,000 single inserts (or 300 batches
# of 100) arrive over 4 keep-alive connections, one request at a time. Prints instructions per
# message. `query` first stores 10,000 messages in one conversation (still in the memtable), then
# counts 2,000 queries for its latest 50 (`desc`, the benchmark's query-50) and prints
# instructions per query. Unlike the wall-clock benchmark, the count is nearly the same on every
# run, so a change of a percent shows. Needs valgrind and python3; the binary defaults to
# target/release/kalamdb-server (build it with `cargo build --release --bins`). With MEMBERS=N
# (single or batch), the conversation written to is first created with N members, so the count
# includes keeping each member's listing current. `list` creates ROOMS conversations (default 100)
# of MEMBERS members (default 2), one message each, all with the member `member-0`, then counts
# 500 pages of that member's listing (`limit=20`): with more than 8 members a room is merged in at
# read time, so this measures what that strategy costs a reader. With AUTH=service or AUTH=user
# (single, batch or query), the server runs with [auth] on and every request carries an API key
# or an HS256 user token for the user `count`, the messages' author. RECENT_CACHE_MB sets
# storage.recent_cache_mb (0 counts queries read from RocksDB every time).
set -euo pipefail
cd "$(dirname "$0")/.."

mode=${1:-single}
binary=${2:-target/release/kalamdb-server}
port=18080
case "$mode" in
    single) warmup=300 requests=3000 per_request=1 ;;
    batch) warmup=30 requests=300 per_request=100 ;;
    query) warmup=200 requests=2000 per_request=1 ;;
    list) warmup=50 requests=500 per_request=1 ;;
    *) echo "usage: $0 [single|batch|query|list] [SERVER_BINARY]" >&2; exit 2 ;;
esac
command -v valgrind >/dev/null || { echo "valgrind is not installed" >&2; exit 1; }
auth=${AUTH:-}
case "$auth" in
    "" ) ;;
    service | user) [ "$mode" != list ] && [ "${MEMBERS:-0}" = 0 ] || {
        echo "AUTH goes with single, batch or query, without MEMBERS" >&2; exit 2; } ;;
    *) echo "AUTH must be service or user" >&2; exit 2 ;;
esac

# $dir, and the server stopped by PID on exit.
source scripts/server-dir.sh
cat >"$dir/config.toml" <<EOF
[server]
port = $port
[storage]
rocksdb_path = "$dir/data"
sync_writes = false
${RECENT_CACHE_MB:+recent_cache_mb = $RECENT_CACHE_MB}
[logging]
level = "warn"
file_path = "$dir/server.log"
EOF
export TOKEN=""
if [ -n "$auth" ]; then
    key="count-key-$RANDOM$RANDOM"
    head -c 32 /dev/urandom | od -An -tx1 | tr -d ' \n' >"$dir/jwt.secret"
    cat >>"$dir/config.toml" <<EOF
[auth]
enabled = true
[[auth.api_keys]]
name = "count"
sha256 = "$(printf %s "$key" | sha256sum | cut -d' ' -f1)"
role = "service"
[auth.jwt]
secret_file = "$dir/jwt.secret"
EOF
    if [ "$auth" = service ]; then
        TOKEN=$key
    else
        # HS256 by hand (the standard library has all it takes): {"sub": "count"}, a day long.
        TOKEN=$(python3 - "$dir/jwt.secret" <<'EOF'
import base64, hashlib, hmac, json, sys, time
secret = open(sys.argv[1], "rb").read()
b64 = lambda raw: base64.urlsafe_b64encode(raw).rstrip(b"=")
head = b64(json.dumps({"alg": "HS256", "typ": "JWT"}).encode())
claims = b64(json.dumps({"sub": "count", "exp": int(time.time()) + 86400}).encode())
signature = b64(hmac.new(secret, head + b"." + claims, hashlib.sha256).digest())
print((head + b"." + claims + b"." + signature).decode())
EOF
)
    fi
fi

valgrind --tool=callgrind --instr-atstart=no --callgrind-out-file="$dir/callgrind.out" \
    "$binary" --config "$dir/config.toml" >"$dir/valgrind.log" 2>&1 &
server=$!
for _ in $(seq 1 120); do
    curl -sf -o /dev/null "localhost:$port/health" && break
    sleep 0.5
done

send() {
    python3 - "$1" "$port" "${2:-$mode}" <<'EOF'
import http.client, json, os, sys
count, port, mode = int(sys.argv[1]), int(sys.argv[2]), sys.argv[3]
headers = {"content-type": "application/json"}
if os.environ.get("TOKEN"):
    headers["authorization"] = "Bearer " + os.environ["TOKEN"]
message = {"conversation_id": "count-c1", "from": "count", "content": "x" * 200}
if mode == "batch" or mode == "preload":
    if mode == "preload":
        message["conversation_id"] = "count-query"
    path, body = "/api/v1/messages/batch", json.dumps({"messages": [message] * 100})
elif mode == "list":
    path, body = "/api/v1/conversations?member=member-0&limit=20", None
elif mode == "query":
    query = {"conversation_id": "count-query", "limit": 50, "order": "desc"}
    path, body = "/api/v1/query", json.dumps(query)
else:
    path, body = "/api/v1/messages", json.dumps(message)
connections = [http.client.HTTPConnection("127.0.0.1", port) for _ in range(4)]
for i in range(count):
    connection = connections[i % 4]
    method = "GET" if body is None else "POST"
    connection.request(method, path, body=body, headers=headers)
    response = connection.getresponse()
    response.read()
    if response.status >= 300:
        sys.exit(f"status {response.status}")
EOF
}

if [ "$mode" = query ]; then
    send 100 preload
fi
if [ "$mode" = list ]; then
    python3 - "$port" "${ROOMS:-100}" "${MEMBERS:-2}" <<'EOF'
import http.client, json, sys
port, rooms, members = (int(a) for a in sys.argv[1:4])
connection = http.client.HTTPConnection("127.0.0.1", port)
for room in range(rooms):
    for path, body, expected in [
        ("/api/v1/conversations",
         {"conversation_id": f"room-{room}", "members": [f"member-{i}" for i in range(members)]}, 201),
        ("/api/v1/messages", {"conversation_id": f"room-{room}", "from": "count", "content": "x" * 200}, 200),
    ]:
        connection.request("POST", path, body=json.dumps(body), headers={"content-type": "application/json"})
        response = connection.getresponse()
        response.read()
        if response.status != expected:
            sys.exit(f"setting up the rooms: status {response.status}")
EOF
elif [ "${MEMBERS:-0}" -gt 0 ]; then
    python3 - "$port" "$MEMBERS" <<'EOF'
import http.client, json, sys
port, members = int(sys.argv[1]), int(sys.argv[2])
body = {"conversation_id": "count-c1", "members": [f"member-{i}" for i in range(members)]}
connection = http.client.HTTPConnection("127.0.0.1", port)
connection.request("POST", "/api/v1/conversations", body=json.dumps(body),
                   headers={"content-type": "application/json"})
response = connection.getresponse()
response.read()
if response.status != 201:
    sys.exit(f"creating the conversation: status {response.status}")
EOF
fi
send "$warmup"
callgrind_control -i on "$server" >/dev/null 2>&1
send "$requests"
callgrind_control -i off "$server" >/dev/null 2>&1
callgrind_control -d "$server" >/dev/null 2>&1
total=$(cat "$dir"/callgrind.out* | awk '/^totals:/ { sum += $2 } END { printf "%d\n", sum }')
if [ "$mode" = query ] || [ "$mode" = list ]; then
    echo "$mode: $((total / requests)) instructions per query ($total for $requests queries)"
else
    echo "$mode: $((total / (requests * per_request))) instructions per message ($total for $((requests * per_request)) messages)"
fi

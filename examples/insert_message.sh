#!/usr/bin/env bash
# Stores one message and prints the server's answer: {"msg_id": "...", "conversation_id": ..., "timestamp": ...}.
#
#   examples/insert_message.sh [CONVERSATION_ID] [FROM] [CONTENT]
#
# KALAMDB_URL points at the server (default http://127.0.0.1:8080, where the README's command
# starts it). Arguments are sent as JSON strings; quotes and backslashes in them are escaped.
set -euo pipefail

url="${KALAMDB_URL:-http://127.0.0.1:8080}"
conversation_id="${1:-conv_demo}"
from="${2:-user_alice}"
content="${3:-Hello from examples/insert_message.sh}"

json_string() {
    local s=${1//\\/\\\\}
    s=${s//\"/\\\"}
    printf '"%s"' "$s"
}

curl --silent --show-error --fail-with-body \
    --request POST "$url/api/v1/messages" \
    --header 'Content-Type: application/json' \
    --data "{\"conversation_id\": $(json_string "$conversation_id"), \"from\": $(json_string "$from"), \"content\": $(json_string "$content"), \"metadata\": {\"source\": \"examples\"}}"
echo

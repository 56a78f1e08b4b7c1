#!/usr/bin/env bash
# Prints one page of a conversation's history, oldest first:
# {"messages": [...], "count": N, "has_more": bool, "next_cursor": "..." or null}.
#
#   examples/query_messages.sh [CONVERSATION_ID] [LIMIT] [SINCE_MSG_ID]
#
# For the next page, pass the page's next_cursor as SINCE_MSG_ID. KALAMDB_URL points at the
# server (default http://127.0.0.1:8080, where the README's command starts it).
set -euo pipefail

url="${KALAMDB_URL:-http://127.0.0.1:8080}"
conversation_id="${1:-conv_demo}"
limit="${2:-50}"
since="${3:-}"

conversation_id=${conversation_id//\\/\\\\}
conversation_id=${conversation_id//\"/\\\"}
body="{\"conversation_id\": \"$conversation_id\", \"limit\": $limit, \"order\": \"asc\""
if [ -n "$since" ]; then
    body="$body, \"since_msg_id\": \"$since\""
fi
body="$body}"

curl --silent --show-error --fail-with-body \
    --request POST "$url/api/v1/query" \
    --header 'Content-Type: application/json' \
    --data "$body"
echo

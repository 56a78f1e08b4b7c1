# Sourced by the scripts that run a server of their own (contract.sh, count-instructions.sh):
# a temp dir `$dir` for its config, data and logs, and on exit the server whose PID the script
# stores in `$server` is stopped and waited for, then the dir removed.
dir=$(mktemp -d)
server=""
stop_server_and_clean_up() {
    if [ -n "$server" ]; then
        kill "$server" 2>/dev/null || true
        wait "$server" 2>/dev/null || true
    fi
    rm -rf "$dir"
}
trap stop_server_and_clean_up EXIT

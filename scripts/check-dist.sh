#!/usr/bin/env bash
# Checks what ./build.sh ships: dist/kalamdb-server runs, stays under 40 MB, and keeps the
# symbols that perf and callgrind name functions by (docs/BENCHMARKS.md's profiles).
#
#   scripts/check-dist.sh            # runs ./build.sh first (a release build), then checks
#   scripts/check-dist.sh --no-build # checks the dist/ already there
set -euo pipefail
cd "$(dirname "$0")/.."

max_bytes=$((40 * 1024 * 1024))
if [ "${1:-}" != "--no-build" ]; then ./build.sh; fi

passed=0
failed=0
check() {
    local what=$1
    shift
    if "$@"; then
        passed=$((passed + 1))
    else
        failed=$((failed + 1))
        echo "check-dist: FAILED: $what" >&2
    fi
}

binary=dist/kalamdb-server
size=$(stat -c %s "$binary")
echo "check-dist: $binary is $size bytes ($((size / 1024 / 1024)) MiB), limit $max_bytes"
check "the binary is under 40 MB" test "$size" -lt "$max_bytes"
check "the binary runs" "$binary" --version
check "the example config ships beside it" test -f dist/config.example.toml
check "the config beside it passes --check-config" \
    bash -c "cd dist && ./kalamdb-server --config config.example.toml --check-config >/dev/null"
# A stripped binary leaves profiles as bare addresses: keep the symbol table.
check "function symbols are kept for profilers" \
    bash -c "nm --defined-only '$binary' 2>/dev/null | grep -q 'kalamdb_core'"
# Debug info is what made the binary ~480 MB; none of it should ship.
check "no DWARF debug info ships" \
    bash -c "! readelf -S '$binary' | grep -q '\.debug_info'"
# Test-only code must not ride along through cargo's feature unification: tokio's `test-util`
# (paused clocks) makes every clock read of its time driver take a mutex.
check "no test-only tokio clock ships" \
    bash -c "! nm -C --defined-only '$binary' | grep -q 'tokio::time::clock::Clock::pause'"

echo "check-dist: $passed passed, $failed failed"
[ "$failed" -eq 0 ]

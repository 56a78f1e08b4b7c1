#!/usr/bin/env bash
# Installs what building and testing KalamDB need beyond a Rust toolchain and a C compiler:
# libclang and clang's own headers, which the `rocksdb` crate's build loads through bindgen to
# generate its bindings; clang++, which compiles RocksDB's C++ (.cargo/config.toml); curl,
# which the example scripts use; and PostgreSQL and nats-server, which the tests of the
# many-servers store start themselves on loopback (they never use a system service).
# Idempotent, and silent when everything is already there.
#
#   scripts/setup.sh                              install what is missing (apt-get, as root or via sudo)
#   scripts/setup.sh --detect-libclang [DIR ...]  print "present" or "missing" and install nothing;
#                                                 DIRs replace the places bindgen would look
set -euo pipefail

# A file bindgen's loader (clang-sys) takes for libclang: libclang.so, libclang-14.so.1,
# libclang.so.14.0.6 and the like. libclang-cpp.so.14, which LLVM's own packages ship, is
# clang's C++ API and useless to bindgen, so a name must not merely start with "libclang".
is_libclang_name() {
    [[ $1 =~ ^libclang(-[0-9]+(\.[0-9]+)*)?\.so(\.[0-9]+)*$ ]]
}

# Where clang-sys looks: $LIBCLANG_PATH, `llvm-config --libdir`, the loader's cache and the
# usual library folders. LLVM's per-version folders also hold clang's resource headers.
default_libclang_dirs() {
    if [ -n "${LIBCLANG_PATH:-}" ]; then echo "$LIBCLANG_PATH"; fi
    if command -v llvm-config >/dev/null 2>&1; then llvm-config --libdir 2>/dev/null || true; fi
    if command -v ldconfig >/dev/null 2>&1; then
        ldconfig -p 2>/dev/null | awk '$1 ~ /^libclang/ { print $NF }' | while read -r lib; do
            dirname "$lib"
        done
    fi
    compgen -G '/usr/lib/llvm-*/lib' || true
    printf '%s\n' /usr/lib64 /usr/lib /usr/local/lib
}

# bindgen needs two things: a loadable libclang, and clang's resource headers (stddef.h,
# stdbool.h, which RocksDB's C header includes and libc does not ship). Debian splits them
# into libclang1-N and libclang-common-N-dev; libclang-dev brings both. Succeeds when some
# DIR holds a libclang and some DIR holds clang/<version>/include/stddef.h.
libclang_present() {
    local dir file lib="" headers=""
    for dir in "$@"; do
        [ -d "$dir" ] || continue
        if [ -z "$lib" ]; then
            for file in "$dir"/libclang*.so*; do
                if [ -e "$file" ] && is_libclang_name "$(basename "$file")"; then lib=$file; break; fi
            done
        fi
        if [ -z "$headers" ] && compgen -G "$dir/clang/*/include/stddef.h" >/dev/null; then
            headers=$dir
        fi
    done
    [ -n "$lib" ] && [ -n "$headers" ]
}

if [ "${1:-}" = "--detect-libclang" ]; then
    shift
    if [ $# -eq 0 ]; then mapfile -t dirs < <(default_libclang_dirs); set -- "${dirs[@]}"; fi
    if libclang_present "$@"; then echo present; else echo missing; fi
    exit 0
fi

command -v cargo >/dev/null || {
    echo "setup: cargo is missing; install Rust from https://rustup.rs" >&2
    exit 1
}

mapfile -t dirs < <(default_libclang_dirs)
missing=()
libclang_present "${dirs[@]}" || missing+=(libclang-dev)
command -v clang++ >/dev/null || missing+=(clang)
command -v curl >/dev/null || missing+=(curl)
# The tests run PostgreSQL's initdb and postgres from Debian's versioned folder (or $PG_BINDIR).
postgres_present() {
    if [ -n "${PG_BINDIR:-}" ] && [ -x "$PG_BINDIR/initdb" ]; then return 0; fi
    compgen -G '/usr/lib/postgresql/*/bin/initdb' >/dev/null
}
postgres_present || missing+=(postgresql)
command -v nats-server >/dev/null || missing+=(nats-server)
if [ ${#missing[@]} -gt 0 ]; then
    echo "setup: installing ${missing[*]}" >&2
    command -v apt-get >/dev/null || {
        echo "setup: no apt-get here; install ${missing[*]} (or your system's libclang and clang headers) by hand" >&2
        exit 1
    }
    sudo=""
    if [ "$(id -u)" -ne 0 ]; then sudo="sudo"; fi
    $sudo apt-get update -qq
    DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
    postgres_present || {
        echo "setup: postgresql is installed, but no initdb under /usr/lib/postgresql/*/bin" >&2
        exit 1
    }
    mapfile -t dirs < <(default_libclang_dirs)
    libclang_present "${dirs[@]}" || {
        echo "setup: libclang-dev is installed, but no libclang and clang headers were found where bindgen looks" >&2
        exit 1
    }
fi

#!/usr/bin/env bash
# Installs what building KalamDB needs beyond a Rust toolchain and a C++ compiler: libclang, which
# the `rocksdb` crate's build uses (bindgen) to generate its bindings. Idempotent and quiet when
# everything is already there.
set -euo pipefail

have_libclang() {
    ldconfig -p 2>/dev/null | grep -qE 'libclang(-[0-9.]+)?\.so' && return 0
    compgen -G '/usr/lib/llvm-*/lib/libclang*.so*' >/dev/null && return 0
    return 1
}

if ! have_libclang; then
    echo "setup: installing libclang-dev (needed to build RocksDB's bindings)" >&2
    sudo=""
    if [ "$(id -u)" -ne 0 ]; then sudo="sudo"; fi
    $sudo apt-get update -qq
    DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq libclang-dev >/dev/null
fi

command -v cargo >/dev/null || {
    echo "setup: cargo is missing; install Rust from https://rustup.rs" >&2
    exit 1
}

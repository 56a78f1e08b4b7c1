#!/usr/bin/env bash
# Installs what building and testing KalamDB need beyond a Rust toolchain and a C++ compiler:
# libclang, which the `rocksdb` crate's build uses (bindgen) to generate its bindings, and curl,
# which the example scripts use. Idempotent and quiet when everything is already there.
set -euo pipefail

have_libclang() {
    ldconfig -p 2>/dev/null | grep -qE 'libclang(-[0-9.]+)?\.so' && return 0
    compgen -G '/usr/lib/llvm-*/lib/libclang*.so*' >/dev/null && return 0
    return 1
}

# libclang-dev for the build; curl for the example scripts, which the tests run.
missing=()
have_libclang || missing+=(libclang-dev)
command -v curl >/dev/null || missing+=(curl)
if [ ${#missing[@]} -gt 0 ]; then
    echo "setup: installing ${missing[*]}" >&2
    sudo=""
    if [ "$(id -u)" -ne 0 ]; then sudo="sudo"; fi
    $sudo apt-get update -qq
    DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq "${missing[@]}" >/dev/null
fi

command -v cargo >/dev/null || {
    echo "setup: cargo is missing; install Rust from https://rustup.rs" >&2
    exit 1
}

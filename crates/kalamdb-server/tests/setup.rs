//! `scripts/setup.sh`, the README's first step on a fresh machine: its libclang detection,
//! held to what bindgen needs (a libclang it can load and clang's own headers). These tests
//! point the detection at folders they make; none of them installs anything.

use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;

fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

/// What `scripts/setup.sh --detect-libclang DIR...` says of `dirs`: "present" or "missing".
fn detect(dirs: &[&Path]) -> String {
    let output = Command::new("bash")
        .arg(repo_root().join("scripts/setup.sh"))
        .arg("--detect-libclang")
        .args(dirs)
        .output()
        .expect("run bash");
    assert!(
        output.status.success(),
        "detection failed: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    String::from_utf8(output.stdout).unwrap().trim().to_owned()
}

/// A folder holding `files` (empty files: detection goes by name, as bindgen's search does).
fn lib_dir(files: &[&str]) -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    for file in files {
        let path = dir.path().join(file);
        fs::create_dir_all(path.parent().unwrap()).unwrap();
        fs::write(path, b"").unwrap();
    }
    dir
}

const HEADERS: &str = "clang/14.0.6/include/stddef.h";

#[test]
fn clangs_cpp_library_alone_is_not_libclang() {
    // What Debian 12's image ships with llvm-14: the C++ API, which bindgen cannot use.
    let dir = lib_dir(&["libclang-cpp.so.14", "libclang-cpp.so", HEADERS]);
    assert_eq!(detect(&[dir.path()]), "missing");
}

#[test]
fn a_libclang_with_clangs_headers_is_present() {
    for name in [
        "libclang-14.so.1",
        "libclang.so",
        "libclang.so.1",
        "libclang-14.0.6.so",
    ] {
        let dir = lib_dir(&[name, HEADERS]);
        assert_eq!(detect(&[dir.path()]), "present", "{name}");
    }
}

#[test]
fn the_library_and_the_headers_may_live_in_different_folders() {
    // Debian: libclang-14.so.1 in the multiarch folder, the headers under /usr/lib/llvm-14/lib.
    let lib = lib_dir(&["libclang-14.so.1"]);
    let llvm = lib_dir(&["libclang-cpp.so.14", HEADERS]);
    assert_eq!(detect(&[lib.path(), llvm.path()]), "present");
}

#[test]
fn a_libclang_without_clangs_headers_is_missing() {
    // libclang1-14 without libclang-common-14-dev: bindgen loads but cannot find stddef.h.
    let dir = lib_dir(&["libclang-14.so.1", "clang/14.0.6/include/stdint.h"]);
    assert_eq!(detect(&[dir.path()]), "missing");
    let empty = lib_dir(&[]);
    assert_eq!(
        detect(&[empty.path(), Path::new("/no/such/dir")]),
        "missing"
    );
}

#[test]
fn the_libclang_this_build_used_is_found_where_bindgen_looks() {
    // RocksDB's bindings were generated for this very test binary, so bindgen found a libclang
    // and its headers: detection over its default places must agree, or setup.sh would
    // reinstall on every run (or, worse, skip an install a fresh machine needs).
    assert_eq!(detect(&[]), "present");
}

//! Finds the workspace's binaries for tests that run them as real processes.
//!
//! A test binary lives in `<target>/<profile>/deps/`; the binaries sit one
//! level up. They are (re)built once per test process with the same profile,
//! so a test never runs a stale binary, whichever package's tests are run.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::OnceLock;

fn profile_dir() -> PathBuf {
    let exe = std::env::current_exe().expect("the test knows its own path");
    let deps = exe.parent().expect("test binaries live in a directory");
    let dir = if deps.file_name().is_some_and(|n| n == "deps") {
        deps.parent().expect("deps has a parent")
    } else {
        deps
    };
    dir.to_path_buf()
}

fn build(profile_dir: &Path) -> Result<(), String> {
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    let target = profile_dir
        .parent()
        .ok_or("the profile directory has no parent")?;
    let mut cmd = Command::new(cargo);
    cmd.args(["build", "--workspace", "--bins", "--target-dir"])
        .arg(target)
        .current_dir(env!("CARGO_MANIFEST_DIR"));
    match profile_dir.file_name().and_then(|n| n.to_str()) {
        Some("debug") | None => {}
        Some("release") => {
            cmd.arg("--release");
        }
        Some(other) => {
            cmd.args(["--profile", other]);
        }
    }
    let status = cmd.status().map_err(|e| format!("cannot run cargo: {e}"))?;
    if !status.success() {
        return Err(format!(
            "cargo build of the workspace's binaries failed ({status})"
        ));
    }
    Ok(())
}

/// The path of the workspace binary `name`, built and up to date.
pub fn path(name: &str) -> PathBuf {
    static BUILT: OnceLock<Result<(), String>> = OnceLock::new();
    let dir = profile_dir();
    if let Err(e) = BUILT.get_or_init(|| build(&dir)) {
        panic!("{e}");
    }
    let bin = dir.join(name);
    assert!(bin.exists(), "{} is missing after building", bin.display());
    bin
}

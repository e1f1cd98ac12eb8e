//! Shared helpers: fixture paths, relative errors, temporary folders, the shared data folder,
//! running the `segrs` binary.

use segrs::weights::{NamedTensors, safetensors};
use std::path::PathBuf;

pub fn fixtures() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("tests")
        .join("fixtures")
}

pub fn read_fixture(rel: &str) -> NamedTensors {
    safetensors::read(&fixtures().join(rel)).unwrap_or_else(|e| panic!("fixture {rel}: {e:#}"))
}

/// ||a - b|| / ||b||.
pub fn rel_l2(a: &[f32], b: &[f32]) -> f64 {
    assert_eq!(a.len(), b.len(), "length mismatch");
    let num: f64 = a
        .iter()
        .zip(b)
        .map(|(x, y)| ((*x - *y) as f64).powi(2))
        .sum();
    let den: f64 = b.iter().map(|y| (*y as f64).powi(2)).sum();
    (num / den.max(1e-30)).sqrt()
}

/// A fresh temporary folder for one test.
pub fn tmp(name: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!("segrs-test-{}-{name}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(&d).unwrap();
    d
}

/// Shared data folder `name` under `../shared/data` (or $SEGRS_DATA). When it is absent the test
/// is skipped (None, with a message), unless SEGRS_REQUIRE_DATA=1 (as in CI): then it fails.
pub fn shared_data(name: &str) -> Option<PathBuf> {
    let root = std::env::var("SEGRS_DATA")
        .map(PathBuf::from)
        .unwrap_or_else(|_| {
            PathBuf::from(env!("CARGO_MANIFEST_DIR"))
                .join("..")
                .join("shared")
                .join("data")
        });
    let p = root.join(name);
    if p.is_dir() {
        return Some(p);
    }
    if std::env::var("SEGRS_REQUIRE_DATA").is_ok_and(|v| v == "1") {
        panic!(
            "{} not found and SEGRS_REQUIRE_DATA=1 (set SEGRS_DATA to the shared data folder)",
            p.display()
        );
    }
    eprintln!(
        "SKIP: {} not found (set SEGRS_DATA to the shared data folder; SEGRS_REQUIRE_DATA=1 makes this a failure)",
        p.display()
    );
    None
}

/// Runs the `segrs` binary with `args`: (exit code, stdout, stderr).
pub fn segrs(args: &[&str]) -> (i32, String, String) {
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_segrs"))
        .args(args)
        .output()
        .expect("run segrs");
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into(),
        String::from_utf8_lossy(&out.stderr).into(),
    )
}

//! Shared helpers: fixture paths, relative errors, temporary folders, the shared data folder,
//! running the `segrs` binary.

use segrs::weights::{HostTensor, NamedTensors, safetensors};
use std::path::{Path, PathBuf};

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

/// `u in [-1, 1)` from a counter-based hash of (index, seed), as the fixture scripts' `uniform`
/// (tools/gen_tinyvit_fixtures.py, tools/gen_maskrcnn_fixtures.py), bit for bit.
pub fn uniform(seed: u64, n: usize) -> Vec<f32> {
    let m = 0xFFFF_FFFFu64;
    (0..n as u64)
        .map(|i| {
            let mut x = ((i * 0x9E37_79B1) & m) ^ ((seed * 0x85EB_CA77) & m);
            x ^= x >> 16;
            x = (x * 0x7FEB_352D) & m;
            x ^= x >> 15;
            x = (x * 0x846C_A68B) & m;
            x ^= x >> 16;
            ((x >> 8) as f32 / 16_777_216.0) * 2.0 - 1.0
        })
        .collect()
}

/// Weights made from a key list `[{key, shape, seed, offset, scale}]`: `uniform(seed) * scale +
/// offset` per key, under `prefix`.
pub fn hashed_weights(keys: &serde_json::Value, prefix: &str, source: &str) -> NamedTensors {
    let mut w = NamedTensors {
        source: source.into(),
        ..Default::default()
    };
    for k in keys.as_array().expect("a key list") {
        let shape: Vec<usize> = k["shape"]
            .as_array()
            .unwrap()
            .iter()
            .map(|v| v.as_u64().unwrap() as usize)
            .collect();
        let n = shape.iter().product();
        let (off, sc) = (
            k["offset"].as_f64().unwrap() as f32,
            k["scale"].as_f64().unwrap() as f32,
        );
        let data = uniform(k["seed"].as_u64().unwrap(), n)
            .into_iter()
            .map(|u| u * sc + off)
            .collect();
        w.insert(
            format!("{prefix}{}", k["key"].as_str().unwrap()),
            HostTensor::new(shape, data),
        );
    }
    w
}

/// `segrs eval semantic --pred P --gt G` with `extra` flags.
pub fn eval_semantic(pred: &Path, gt: &Path, extra: &[&str]) -> (i32, String, String) {
    let mut args = vec![
        "eval",
        "semantic",
        "--pred",
        pred.to_str().unwrap(),
        "--gt",
        gt.to_str().unwrap(),
    ];
    args.extend_from_slice(extra);
    segrs(&args)
}

/// `segrs train` on a folder for `epochs` epochs of a tiny U-Net (64-px crops), with `extra`
/// flags.
pub fn tiny_train(
    images: &Path,
    masks: &Path,
    run: &Path,
    epochs: &str,
    extra: &[&str],
) -> (i32, String, String) {
    let mut args = vec![
        "train",
        "--images",
        images.to_str().unwrap(),
        "--masks",
        masks.to_str().unwrap(),
        "--base-width",
        "4",
        "--depth",
        "2",
        "--crop",
        "64",
        "--epochs",
        epochs,
        "--batch-size",
        "2",
        "--out",
        run.to_str().unwrap(),
    ];
    args.extend_from_slice(extra);
    segrs(&args)
}

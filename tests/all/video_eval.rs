//! `segrs eval video` against the DAVIS 2017 toolkit's definitions (tools/gen_video_fixtures.py):
//! J and F mean / recall / decay to 1e-9 (1e-4 would do), on a synthetic multi-object
//! palette sequence with void pixels and on the shared DAVIS 2016 blackswan sequence.

use crate::common::{fixtures, shared_data};
use std::process::Command;

fn run_eval(gt: &std::path::Path, pred: &std::path::Path, name: &str) -> serde_json::Value {
    let json = crate::common::tmp(name).join("video.json");
    let plots = json.with_file_name("plots");
    let out = Command::new(env!("CARGO_BIN_EXE_segrs"))
        .args([
            "eval",
            "video",
            "--gt",
            gt.to_str().unwrap(),
            "--pred",
            pred.to_str().unwrap(),
            "--json",
            json.to_str().unwrap(),
            "--plot",
            plots.to_str().unwrap(),
        ])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    // one J / F per-frame plot per object
    let pngs: Vec<_> = std::fs::read_dir(&plots)
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    assert!(!pngs.is_empty());
    for p in &pngs {
        let pic = segrs::data::image_io::read_image(p).unwrap();
        assert_eq!((pic.width, pic.height), (900, 360), "{}", p.display());
    }
    serde_json::from_str(&std::fs::read_to_string(&json).unwrap()).unwrap()
}

fn check(got: &serde_json::Value, objects: &serde_json::Value) {
    let objs = objects.as_array().unwrap();
    for (key, idx) in [("J", 0), ("F", 1)] {
        for (stat, i) in [("mean", 0), ("recall", 1), ("decay", 2)] {
            let want: f64 = objs
                .iter()
                .map(|o| o[key][i].as_f64().unwrap())
                .sum::<f64>()
                / objs.len() as f64;
            let g = got[key][stat].as_f64().unwrap();
            assert!((g - want).abs() < 1e-9, "{key} {stat}: {g} vs {want}");
            let _ = idx;
        }
    }
    let jf = (got["J"]["mean"].as_f64().unwrap() + got["F"]["mean"].as_f64().unwrap()) / 2.0;
    assert!((got["J&F"].as_f64().unwrap() - jf).abs() < 1e-12);
}

#[test]
fn multi_object_palette_sequence_with_void_matches_toolkit() {
    let d = fixtures().join("davis");
    let want: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(d.join("expected.json")).unwrap()).unwrap();
    let got = run_eval(&d.join("synth_gt"), &d.join("synth_pred"), "vid-synth");
    check(&got, &want["synth"]);
    assert!(got["per_sequence"]["synth"]["J"].is_number());
}

#[test]
fn davis2016_blackswan_matches_toolkit() {
    let Some(root) = shared_data("davis2016_vos_subset") else {
        return;
    };
    let d = fixtures().join("davis");
    let want: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(d.join("expected.json")).unwrap()).unwrap();
    let got = run_eval(&root, &d.join("blackswan_pred"), "vid-swan");
    check(&got, &want["blackswan"]);
}

#[test]
fn missing_prediction_frames_are_named() {
    let d = fixtures().join("davis");
    let tmp = crate::common::tmp("vid-missing");
    let pred = tmp.join("synth");
    std::fs::create_dir_all(&pred).unwrap();
    for f in ["00000.png", "00001.png"] {
        std::fs::copy(d.join("synth_pred/synth").join(f), pred.join(f)).unwrap();
    }
    let out = Command::new(env!("CARGO_BIN_EXE_segrs"))
        .args([
            "eval",
            "video",
            "--gt",
            d.join("synth_gt").to_str().unwrap(),
            "--pred",
            tmp.to_str().unwrap(),
        ])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("00002.png") && err.contains("missing prediction"),
        "{err}"
    );
}

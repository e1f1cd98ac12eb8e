//! `segrs maskrcnn train` end to end on a small synthetic COCO dataset (bright rectangles on
//! noise, polygons): a run leaves its checkpoints, history, curve and a `best.safetensors` that
//! `segrs maskrcnn predict` runs; a run stopped after its first epoch and resumed ends with the
//! same weights as an uninterrupted one; bad datasets are named in clear errors.

use crate::common::{segrs, tmp};
use segrs::weights::NamedTensors;
use std::path::Path;

/// `n` 64x64 RGB images with 2-3 rectangles each, and their COCO instances JSON (category 1).
fn write_set(
    dir: &Path,
    name: &str,
    n: usize,
    seed: u64,
) -> (std::path::PathBuf, std::path::PathBuf) {
    let images = dir.join(format!("{name}_images"));
    std::fs::create_dir_all(&images).unwrap();
    let (w, h) = (64usize, 64usize);
    let mut anns = Vec::new();
    let mut imgs = Vec::new();
    let mut state = seed
        .wrapping_mul(6364136223846793005)
        .wrapping_add(1442695040888963407);
    let mut next = |m: usize| {
        state = state
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        ((state >> 33) as usize) % m
    };
    for i in 0..n {
        let mut px: Vec<u8> = (0..w * h * 3).map(|_| 20 + next(30) as u8).collect();
        for k in 0..2 + i % 2 {
            let (x0, y0) = (4 + next(36), 4 + next(36));
            let (bw, bh) = (8 + next(16), 8 + next(16));
            let (x1, y1) = ((x0 + bw).min(w), (y0 + bh).min(h));
            for y in y0..y1 {
                for x in x0..x1 {
                    for c in 0..3 {
                        px[(y * w + x) * 3 + c] = 200 + (c as u8) * 10;
                    }
                }
            }
            let (fx0, fy0, fx1, fy1) = (x0 as f64, y0 as f64, x1 as f64, y1 as f64);
            anns.push(serde_json::json!({
                "id": anns.len() + 1, "image_id": i + 1, "category_id": 1, "iscrowd": 0,
                "bbox": [fx0, fy0, fx1 - fx0, fy1 - fy0], "area": (fx1 - fx0) * (fy1 - fy0),
                "segmentation": [[fx0, fy0, fx1, fy0, fx1, fy1, fx0, fy1]],
                "_k": k,
            }));
        }
        let file = format!("img{i}.png");
        segrs::data::image_io::write_png(&images.join(&file), w, h, 3, &px).unwrap();
        imgs.push(serde_json::json!({"id": i + 1, "file_name": file, "width": w, "height": h}));
    }
    let json = dir.join(format!("{name}.json"));
    let gt = serde_json::json!({
        "images": imgs, "annotations": anns,
        "categories": [{"id": 1, "name": "box"}],
    });
    std::fs::write(&json, serde_json::to_string(&gt).unwrap()).unwrap();
    (json, images)
}

fn train_args<'a>(json: &'a str, images: &'a str, out: &'a str, epochs: &'a str) -> Vec<&'a str> {
    vec![
        "maskrcnn",
        "train",
        "--data",
        json,
        "--images",
        images,
        "--out",
        out,
        "--epochs",
        epochs,
        "--batch-size",
        "2",
        "--min-size",
        "64",
        "--max-size",
        "96",
        "--lr",
        "0.002",
        "--warmup-iters",
        "2",
        "--quiet",
        "--threads",
        "2",
    ]
}

fn weights(path: &Path) -> NamedTensors {
    NamedTensors::read(path).unwrap()
}

#[test]
fn train_predict_and_resume() {
    let d = tmp("maskrcnn-train");
    let (tj, ti) = write_set(&d, "train", 4, 1);
    let (vj, vi) = write_set(&d, "val", 2, 2);
    let (tj, ti, vj, vi) = (
        tj.to_str().unwrap(),
        ti.to_str().unwrap(),
        vj.to_str().unwrap(),
        vi.to_str().unwrap(),
    );

    // An uninterrupted run of two epochs, with validation.
    let full = d.join("full");
    let mut args = train_args(tj, ti, full.to_str().unwrap(), "2");
    args.extend(["--val-data", vj, "--val-images", vi]);
    let (code, out, err) = segrs(&args);
    assert_eq!(code, 0, "train failed: {out}\n{err}");
    for f in [
        "config.json",
        "state.json",
        "metrics.jsonl",
        "curve.png",
        "last.safetensors",
        "best.safetensors",
    ] {
        assert!(full.join(f).is_file(), "{f} missing");
    }
    let metrics = std::fs::read_to_string(full.join("metrics.jsonl")).unwrap();
    let lines: Vec<serde_json::Value> = metrics
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(lines.len(), 2, "one line per epoch");
    for l in &lines {
        assert!(l["loss"].as_f64().unwrap().is_finite());
        assert!(
            l["mask_ap"].as_f64().is_some(),
            "validation AP recorded: {l}"
        );
        for k in [
            "loss_objectness",
            "loss_rpn_box_reg",
            "loss_classifier",
            "loss_box_reg",
            "loss_mask",
        ] {
            assert!(l["losses"][k].as_f64().unwrap() > 0.0, "{k} in {l}");
        }
    }
    // The weights moved, keep torchvision's keys, and the best checkpoint predicts.
    let last = weights(&full.join("last.safetensors"));
    assert_eq!(
        last.get("roi_heads.box_predictor.cls_score.weight")
            .unwrap()
            .shape,
        vec![2, 1024]
    );
    assert!(last.get("backbone.body.layer1.0.bn1.running_var").is_some());
    let pred = d.join("pred");
    let (code, out, err) = segrs(&[
        "maskrcnn",
        "predict",
        "--checkpoint",
        full.join("best.safetensors").to_str().unwrap(),
        "--images",
        vi,
        "--out",
        pred.to_str().unwrap(),
        "--min-size",
        "64",
        "--max-size",
        "96",
        "--gt",
        vj,
        "--no-overlays",
    ]);
    assert_eq!(code, 0, "predict failed: {out}\n{err}");

    // The same run killed during its second epoch (as soon as the first epoch's checkpoint is
    // written), then resumed: the same weights as the uninterrupted run (which ran the same
    // validation, which changes nothing).
    let split = d.join("split");
    let mut args = train_args(tj, ti, split.to_str().unwrap(), "2");
    args.extend(["--val-data", vj, "--val-images", vi]);
    let mut child = std::process::Command::new(env!("CARGO_BIN_EXE_segrs"))
        .args(&args)
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let started = std::time::Instant::now();
    while !split.join("state.json").is_file() {
        assert!(
            started.elapsed().as_secs() < 300,
            "no checkpoint after 300 s"
        );
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    child.kill().unwrap();
    child.wait().unwrap();
    let state: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(split.join("state.json")).unwrap()).unwrap();
    assert_eq!(state["epochs_done"], 1, "killed during the second epoch");
    let first = weights(&split.join("last.safetensors"));
    let (code, _, err) = segrs(&[
        "maskrcnn",
        "train",
        "--resume",
        split.to_str().unwrap(),
        "--quiet",
    ]);
    assert_eq!(code, 0, "resume failed: {err}");
    let resumed = weights(&split.join("last.safetensors"));
    let mut moved = false;
    for (k, t) in &last.tensors {
        let r = resumed
            .get(k)
            .unwrap_or_else(|| panic!("{k} missing after resume"));
        assert_eq!(
            r.data, t.data,
            "{k} differs between the resumed and the uninterrupted run"
        );
        moved |= first.get(k).unwrap().data != t.data;
    }
    assert!(moved, "the second epoch changed nothing");
    // Resuming into a finished run or starting over an existing one is refused clearly.
    let (code, _, err) = segrs(&train_args(tj, ti, full.to_str().unwrap(), "2"));
    assert_ne!(code, 0);
    assert!(err.contains("already holds a run"), "{err}");
    // Two runs of full-size checkpoints: about 1.4 GB, not left in the temporary folder.
    std::fs::remove_dir_all(&d).ok();
}

#[test]
fn bad_datasets_are_named() {
    let d = tmp("maskrcnn-train-bad");
    let (tj, ti) = write_set(&d, "train", 2, 3);
    let gt: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&tj).unwrap()).unwrap();
    let out = d.join("run");
    let run = |name: &str, gt: &serde_json::Value| {
        let p = d.join(name);
        std::fs::write(&p, serde_json::to_string(gt).unwrap()).unwrap();
        let _ = std::fs::remove_dir_all(&out);
        segrs(&train_args(
            p.to_str().unwrap(),
            ti.to_str().unwrap(),
            out.to_str().unwrap(),
            "1",
        ))
    };
    // An annotation pointing at an image the JSON does not list.
    let mut g = gt.clone();
    g["annotations"][0]["image_id"] = serde_json::json!(99);
    let (code, _, err) = run("unknown_image.json", &g);
    assert_ne!(code, 0);
    assert!(
        err.contains("unknown image_id 99") && err.contains("unknown_image.json"),
        "{err}"
    );
    // A category id outside the categories list.
    let mut g = gt.clone();
    g["annotations"][1]["category_id"] = serde_json::json!(7);
    let (code, _, err) = run("unknown_category.json", &g);
    assert_ne!(code, 0);
    assert!(err.contains("unknown category_id 7"), "{err}");
    // An image file that is not there.
    let mut g = gt.clone();
    g["images"][1]["file_name"] = serde_json::json!("missing.png");
    let (code, _, err) = run("missing_file.json", &g);
    assert_ne!(code, 0);
    assert!(
        err.contains("missing.png") && err.contains("not found"),
        "{err}"
    );
    // Malformed JSON.
    let p = d.join("broken.json");
    std::fs::write(&p, "{\"images\": [").unwrap();
    let (code, _, err) = segrs(&train_args(
        p.to_str().unwrap(),
        ti.to_str().unwrap(),
        out.to_str().unwrap(),
        "1",
    ));
    assert_ne!(code, 0);
    assert!(
        err.contains("broken.json") && err.contains("malformed"),
        "{err}"
    );
    // Zero-area boxes are left out (as torchvision does), polygons reaching outside the image
    // are clipped: the run goes through and says what it left out.
    let mut g = gt.clone();
    g["annotations"][0]["bbox"] = serde_json::json!([10.0, 10.0, 0.0, 5.0]);
    g["annotations"][0]["segmentation"] = serde_json::json!([[10.0, 10.0, 10.0, 15.0, 10.0, 12.0]]);
    g["annotations"][1]["segmentation"] =
        serde_json::json!([[50.0, 50.0, 90.0, 50.0, 90.0, 90.0, 50.0, 90.0]]);
    g["annotations"][1]["bbox"] = serde_json::json!([50.0, 50.0, 40.0, 40.0]);
    let p = d.join("degenerate.json");
    std::fs::write(&p, serde_json::to_string(&g).unwrap()).unwrap();
    let _ = std::fs::remove_dir_all(&out);
    let mut args = train_args(
        p.to_str().unwrap(),
        ti.to_str().unwrap(),
        out.to_str().unwrap(),
        "1",
    );
    args.retain(|a| *a != "--quiet");
    // (and AdamW with the cosine schedule run end to end)
    args.extend(["--optimizer", "adamw", "--schedule", "cosine"]);
    let (code, _, err) = segrs(&args);
    assert_eq!(code, 0, "{err}");
    assert!(err.contains("1 degenerate boxes"), "{err}");
    let cfg = std::fs::read_to_string(out.join("config.json")).unwrap();
    assert!(
        cfg.contains("\"adamw\"") && cfg.contains("\"cosine\""),
        "{cfg}"
    );
    assert!(out.join("last.safetensors").is_file());
    std::fs::remove_dir_all(&d).ok();
}

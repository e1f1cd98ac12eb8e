//! `segrs maskrcnn predict` and `segrs merge-results` end to end with a full-size v1 model
//! (hashed weights written as safetensors under torchvision's keys) on the two fixture photos:
//! the COCO results agree with the library's predictions, a `--gt` file scores them, sharded runs
//! merge into the unsharded results, and bad input is named.

use crate::common::{fixtures, hashed_weights, segrs, tmp};
use std::collections::BTreeMap;
use std::path::Path;

fn json(p: &Path) -> serde_json::Value {
    serde_json::from_str(&std::fs::read_to_string(p).unwrap()).unwrap()
}

/// A COCO instances file for the fixture photos: all 90 category ids, one box each.
fn write_gt(path: &Path) {
    let categories: Vec<serde_json::Value> = (1..=90)
        .map(|i| serde_json::json!({"id": i, "name": format!("c{i}")}))
        .collect();
    let images = [("coco.jpg", 7, 320, 240), ("dog.jpg", 3, 320, 214)];
    let mut anns = Vec::new();
    for (k, (_, id, w, h)) in images.iter().enumerate() {
        let (x, y, bw, bh) = (10.0, 12.0, *w as f64 / 2.0, *h as f64 / 2.0);
        anns.push(serde_json::json!({
            "id": k + 1, "image_id": id, "category_id": 86, "iscrowd": 0,
            "bbox": [x, y, bw, bh], "area": bw * bh,
            "segmentation": [[x, y, x + bw, y, x + bw, y + bh, x, y + bh]],
        }));
    }
    let gt = serde_json::json!({
        "images": images.iter().map(|(f, id, w, h)| serde_json::json!({"id": id, "file_name": f, "width": w, "height": h})).collect::<Vec<_>>(),
        "annotations": anns,
        "categories": categories,
    });
    std::fs::write(path, serde_json::to_string(&gt).unwrap()).unwrap();
}

#[test]
fn predict_shard_merge_and_bad_input() {
    let d = tmp("maskrcnn-cli");
    let keys = json(&fixtures().join("maskrcnn/keys_v1.json"));
    let named = hashed_weights(&keys, "", "v1");
    let ck = d.join("maskrcnn_v1.safetensors");
    segrs::weights::safetensors::write(&ck, &named.tensors, &BTreeMap::new()).unwrap();
    let images = d.join("images");
    std::fs::create_dir_all(&images).unwrap();
    for f in ["coco.jpg", "dog.jpg"] {
        std::fs::copy(fixtures().join("maskrcnn").join(f), images.join(f)).unwrap();
    }
    let gt = d.join("gt.json");
    write_gt(&gt);
    let (ck_s, img_s, gt_s) = (
        ck.to_str().unwrap(),
        images.to_str().unwrap(),
        gt.to_str().unwrap(),
    );
    let small = [
        "--min-size",
        "256",
        "--max-size",
        "416",
        "--detections",
        "20",
    ];
    // `maskrcnn predict` of `checkpoint` on the images into `out`, with `extra` flags.
    let predict = |checkpoint: &str, out: &Path, extra: &[&str]| {
        let mut args = vec![
            "maskrcnn",
            "predict",
            "--checkpoint",
            checkpoint,
            "--images",
            img_s,
            "--out",
            out.to_str().unwrap(),
        ];
        args.extend_from_slice(extra);
        segrs(&args)
    };
    let out = d.join("all");
    let (code, stdout, err) = predict(ck_s, &out, &[&["--gt", gt_s][..], &small].concat());
    assert_eq!(code, 0, "{err}");
    assert!(
        stdout.contains("maskrcnn_resnet50_fpn,") && stdout.contains("AP"),
        "{stdout}"
    );
    assert!(out.join("overlays/coco.png").exists() && out.join("overlays/dog.png").exists());
    let results = json(&out.join("results.json"));
    let r = results.as_array().unwrap();
    assert_eq!(r.len(), 40);
    // image ids from --gt, in file-name order; detections sorted by score per image
    assert_eq!(r[0]["image_id"], 7);
    assert_eq!(r[0]["file_name"], "coco.jpg");
    assert_eq!(r[20]["image_id"], 3);
    for w in r[..20].windows(2) {
        assert!(w[0]["score"].as_f64() >= w[1]["score"].as_f64());
    }
    // the same as the library: the torchvision fixture's first box for this image, as [x, y, w, h]
    let want = json(&fixtures().join("maskrcnn/expected.json"));
    let b0 = &want["v1"]["coco"]["boxes"][0];
    for k in 0..2 {
        let (got, exp) = (r[0]["bbox"][k].as_f64().unwrap(), b0[k].as_f64().unwrap());
        assert!((got - exp).abs() < 1e-2, "bbox {k}: {got} vs {exp}");
    }
    assert_eq!(r[0]["segmentation"]["size"], serde_json::json!([240, 320]));

    // Two shards, merged, give the unsharded results.
    let mut merge_in = Vec::new();
    for i in 0..2 {
        let o = d.join(format!("shard{i}"));
        let shard = format!("{i}/2");
        let mut args = vec!["--gt", gt_s, "--shard", &shard, "--no-overlays"];
        args.extend(small);
        // Without AVX512_BF16, --precision bf16 says so and runs f32 (the same results).
        let bf16_note = i == 0 && !segrs::ops::bf16::has_native();
        if bf16_note {
            args.extend(["--precision", "bf16"]);
        }
        let (code, _, err) = predict(ck_s, &o, &args);
        assert_eq!(code, 0, "{err}");
        assert!(!bf16_note || err.contains("AVX512_BF16"), "{err}");
        assert!(o.join(format!("results-{i}-of-2.json")).exists());
        merge_in.push(o);
    }
    let merged = d.join("merged.json");
    let (code, _, err) = segrs(&[
        "merge-results",
        merge_in[1].to_str().unwrap(),
        merge_in[0].to_str().unwrap(),
        "--out",
        merged.to_str().unwrap(),
    ]);
    assert_eq!(code, 0, "{err}");
    let m = json(&merged);
    let key = |v: &serde_json::Value| -> Vec<(u64, String)> {
        v.as_array()
            .unwrap()
            .iter()
            .map(|x| (x["image_id"].as_u64().unwrap(), x["score"].to_string()))
            .collect()
    };
    let mut sorted = key(&results);
    sorted.sort_by_key(|k| k.0);
    assert_eq!(key(&m), sorted);

    // Bad input: a SAM checkpoint, an image the --gt file lacks, a malformed shard.
    let sam = fixtures().join("sam/tiny_sam.pth");
    let (code, _, err) = predict(sam.to_str().unwrap(), &d.join("x"), &[]);
    assert_ne!(code, 0);
    assert!(
        err.contains("tiny_sam.pth") && err.contains("not a torchvision Mask R-CNN"),
        "{err}"
    );
    // The error output of a run on the images with `extra` flags, which must fail.
    let fails = |out: &str, extra: &[&str]| {
        let (code, _, err) = predict(ck_s, &d.join(out), extra);
        assert_ne!(code, 0, "{extra:?}");
        err
    };
    let err = fails("x", &["--precision", "fp8"]);
    assert!(err.contains("fp8"), "{err}");
    std::fs::copy(images.join("dog.jpg"), images.join("extra.jpg")).unwrap();
    let err = fails("y", &["--gt", gt_s]);
    assert!(
        err.contains("extra.jpg") && err.contains("gt.json"),
        "{err}"
    );
    let err = fails("z", &["--shard", "2/2"]);
    assert!(err.contains("2/2"), "{err}");
}

//! Masks in the conventions datasets ship with: binary masks saved as JPEG (Kvasir-SEG style,
//! thresholded at 128 with one note), ADE20K's zero label ("other", ignored; mmseg's
//! reduce_zero_label) with its 150 class names, and a Cityscapes-style label-id map.

use crate::common::{eval_semantic, segrs, shared_data, tiny_train, tmp};
use segrs::data::image_io::{read_mask, write_label_png, write_png};
use segrs::data::labels::{LabelConvention, read_class_names, read_label_map};
use std::path::Path;

fn save_jpeg(path: &Path, w: usize, h: usize, gray: &[u8], quality: u8) {
    let f = std::fs::File::create(path).unwrap();
    let mut enc = image::codecs::jpeg::JpegEncoder::new_with_quality(f, quality);
    enc.encode(gray, w as u32, h as u32, image::ExtendedColorType::L8)
        .unwrap();
}

#[test]
fn lossy_jpeg_masks_train_and_evaluate_with_binary() {
    let Some(isbi) = shared_data("isbi2012_membrane") else {
        return;
    };
    let d = tmp("lossy-masks");
    let (images, masks, pred) = (d.join("images"), d.join("masks"), d.join("pred"));
    for p in [&images, &masks, &pred] {
        std::fs::create_dir_all(p).unwrap();
    }
    let conv = LabelConvention {
        binary_threshold: Some(128),
        ..Default::default()
    };
    for (i, q) in [(0, 60u8), (1, 80), (2, 95), (3, 75)] {
        let src = isbi.join(format!("train/label/{i}.png"));
        let m = read_mask(&src).unwrap();
        let gray: Vec<u8> = m.data.iter().map(|&v| v as u8).collect();
        let jpg = masks.join(format!("{i}.jpg"));
        save_jpeg(&jpg, m.width, m.height, &gray, q);
        std::fs::copy(
            isbi.join(format!("train/image/{i}.png")),
            images.join(format!("{i}.png")),
        )
        .unwrap();
        // thresholded, the JPEG mask equals the original wherever JPEG kept the value, and
        // nearly everywhere else
        let mut lossy = read_mask(&jpg).unwrap();
        let stored = lossy.data.clone();
        assert!(
            stored.iter().any(|&v| v != 0 && v != 255),
            "quality {q} is lossy"
        );
        conv.apply(&jpg, &mut lossy).unwrap();
        let orig: Vec<u32> = m.data.iter().map(|&v| (v >= 128) as u32).collect();
        for ((&s, &t), &o) in stored.iter().zip(&lossy.data).zip(&orig) {
            if s == 0 || s == 255 {
                assert_eq!(t, o);
            }
        }
        let same = lossy.data.iter().zip(&orig).filter(|(a, b)| a == b).count();
        assert!(same as f64 / orig.len() as f64 > 0.99, "quality {q}");
        // the original mask as a prediction (class indices)
        let labels = segrs::data::image_io::LabelMap {
            width: m.width,
            height: m.height,
            data: orig,
        };
        write_label_png(&pred.join(format!("{i}.png")), &labels).unwrap();
    }
    let json = d.join("eval.json");
    let (code, so, se) = eval_semantic(
        &pred,
        &masks,
        &[
            "--classes",
            "2",
            "--binary",
            "--json",
            json.to_str().unwrap(),
        ],
    );
    assert_eq!(code, 0, "{so}{se}");
    assert!(
        se.contains("4 binary mask(s) hold values other than 0 and 255") && se.contains("128"),
        "{se}"
    );
    assert_eq!(se.matches("note:").count(), 1, "one note: {se}");
    let r: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&json).unwrap()).unwrap();
    assert!(r["pixel_accuracy"].as_f64().unwrap() > 0.99);
    // training reads them too
    let run = d.join("run");
    let (code, so, se) = tiny_train(
        &images,
        &masks,
        &run,
        "1",
        &[
            "--classes",
            "2",
            "--binary",
            "--in-channels",
            "1",
            "--val-split",
            "0.25",
        ],
    );
    assert_eq!(code, 0, "{so}{se}");
    assert!(
        se.contains("binary mask(s) hold values other than 0 and 255"),
        "{se}"
    );
    // class-index masks given as binary are an error that says so
    let classes = d.join("classes");
    std::fs::create_dir_all(&classes).unwrap();
    let idx: Vec<u8> = (0..64 * 64).map(|i| ((i / 64) % 4) as u8).collect();
    write_png(&classes.join("0.png"), 64, 64, 1, &idx).unwrap();
    write_png(&pred.join("0.png"), 64, 64, 1, &idx).unwrap();
    let (code, _, se) = eval_semantic(
        &pred,
        &classes,
        &["--classes", "2", "--binary", "--stems", "0"],
    );
    assert_ne!(code, 0);
    assert!(se.contains("0.png") && se.contains("drop --binary"), "{se}");
}

#[test]
fn ade20k_reduce_zero_label_with_class_names() {
    let Some(ade) = shared_data("ade20k_sceneparsing_sample") else {
        return;
    };
    let names = read_class_names(&ade.join("objectInfo150.csv")).unwrap();
    assert_eq!(names.len(), 150);
    assert_eq!((names[0].as_str(), names[2].as_str()), ("wall", "sky"));
    let d = tmp("ade-reduce");
    let pred = d.join("pred");
    std::fs::create_dir_all(&pred).unwrap();
    let gt = ade.join("sampleData/annotations");
    let mut present = std::collections::BTreeSet::new();
    for e in std::fs::read_dir(&gt).unwrap() {
        let p = e.unwrap().path();
        let mut m = read_mask(&p).unwrap();
        // predictions: class k - 1 for stored value k, and class 5 where the label is "other"
        // (ignored, so it cannot cost anything)
        for v in m.data.iter_mut() {
            *v = if *v == 0 { 5 } else { *v - 1 };
        }
        let raw = read_mask(&p).unwrap();
        present.extend(raw.data.iter().filter(|&&v| v > 0).map(|&v| v - 1));
        write_label_png(&pred.join(p.file_name().unwrap()), &m).unwrap();
    }
    let json = d.join("eval.json");
    let (code, so, se) = eval_semantic(
        &pred,
        &gt,
        &[
            "--classes",
            "150",
            "--reduce-zero-label",
            "--class-names",
            ade.join("objectInfo150.csv").to_str().unwrap(),
            "--json",
            json.to_str().unwrap(),
        ],
    );
    assert_eq!(code, 0, "{so}{se}");
    assert!(so.contains("wall"), "{so}");
    let r: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&json).unwrap()).unwrap();
    assert_eq!(r["pixel_accuracy"].as_f64(), Some(1.0));
    let per = r["per_class"].as_array().unwrap();
    assert_eq!(per[0]["name"], "wall");
    for c in &present {
        assert_eq!(per[*c as usize]["iou"].as_f64(), Some(1.0), "class {c}");
    }
    // trained with the reduction and the names, predictions are written back as ADE20K ids
    let run = d.join("run");
    let images = ade.join("sampleData/images");
    let names = ade.join("objectInfo150.csv");
    let (code, so, se) = tiny_train(
        &images,
        &gt,
        &run,
        "1",
        &[
            "--classes",
            "150",
            "--reduce-zero-label",
            "--class-names",
            names.to_str().unwrap(),
            "--val-split",
            "0.34",
        ],
    );
    assert_eq!(code, 0, "{so}{se}");
    let ck = run.join("last.safetensors");
    let meta =
        segrs::models::unet::checkpoint::load(&ck, (None, None), &burn::prelude::Device::flex())
            .unwrap()
            .meta
            .unwrap();
    assert_eq!(meta.class_names[2], "sky");
    assert!(meta.labels.reduce_zero_label);
    let out = d.join("ids");
    let (code, so, se) = segrs(&[
        "predict",
        "--checkpoint",
        ck.to_str().unwrap(),
        "--images",
        images.to_str().unwrap(),
        "--write-label-ids",
        "--out",
        out.to_str().unwrap(),
    ]);
    assert_eq!(code, 0, "{so}{se}");
    let ids = read_mask(&out.join("ADE_val_00000001.png")).unwrap();
    assert!(
        ids.data.iter().all(|&v| (1..=150).contains(&v)),
        "ADE20K ids 1-150"
    );
    // without the reduction the same files disagree everywhere
    let (code, so, _) = eval_semantic(&pred, &gt, &["--classes", "151"]);
    assert_eq!(code, 0);
    assert!(so.contains("pixel accuracy   0.0000"), "{so}");
}

#[test]
fn a_label_id_map_gives_train_ids_and_ignores_the_rest() {
    let d = tmp("label-map");
    let (gt, pred) = (d.join("gt"), d.join("pred"));
    std::fs::create_dir_all(&gt).unwrap();
    std::fs::create_dir_all(&pred).unwrap();
    // Cityscapes ids: 7 road, 8 sidewalk, 26 car; 0 unlabeled and 4 static are not trained on
    let ids = [7u8, 8, 26, 0, 4];
    let stored: Vec<u8> = (0..40 * 30).map(|i| ids[(i / 7) % 5]).collect();
    write_png(&gt.join("a.png"), 40, 30, 1, &stored).unwrap();
    let csv = d.join("ids.csv");
    std::fs::write(&csv, "id,trainId\n7,0\n8,1\n26,13\n").unwrap();
    let map = read_label_map(&csv).unwrap();
    assert_eq!(map.get(&26), Some(&13));
    let json_map = d.join("ids.json");
    std::fs::write(&json_map, r#"{"7": 0, "8": 1, "26": 13}"#).unwrap();
    assert_eq!(read_label_map(&json_map).unwrap(), map);
    // predictions: the train ids, and class 2 where the label is ignored
    let want: Vec<u8> = stored
        .iter()
        .map(|v| match v {
            7 => 0,
            8 => 1,
            26 => 13,
            _ => 2,
        })
        .collect();
    write_png(&pred.join("a.png"), 40, 30, 1, &want).unwrap();
    let json = d.join("eval.json");
    let (code, so, se) = eval_semantic(
        &pred,
        &gt,
        &[
            "--classes",
            "19",
            "--label-map",
            csv.to_str().unwrap(),
            "--json",
            json.to_str().unwrap(),
        ],
    );
    assert_eq!(code, 0, "{so}{se}");
    let r: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&json).unwrap()).unwrap();
    assert_eq!(r["pixel_accuracy"].as_f64(), Some(1.0));
    assert_eq!(r["per_class"][13]["iou"].as_f64(), Some(1.0));
    assert!(
        r["per_class"][2]["iou"].is_null(),
        "class 2 appears only where ignored"
    );
    let bad = d.join("bad.csv");
    std::fs::write(&bad, "7,0\nroad,1\n").unwrap();
    let e = read_label_map(&bad).unwrap_err().to_string();
    assert!(e.contains("bad.csv") && e.contains("line 2"), "{e}");
}

#[test]
fn data_check_reports_pairs_values_and_conventions() {
    let Some(isbi) = shared_data("isbi2012_membrane") else {
        return;
    };
    let d = tmp("data-check");
    let (images, masks) = (d.join("images"), d.join("masks"));
    std::fs::create_dir_all(&images).unwrap();
    std::fs::create_dir_all(&masks).unwrap();
    for i in 0..3 {
        std::fs::copy(
            isbi.join(format!("train/image/{i}.png")),
            images.join(format!("{i}.png")),
        )
        .unwrap();
    }
    // 0: lossless, 1: JPEG, 2: no mask; and a mask without an image
    std::fs::copy(isbi.join("train/label/0.png"), masks.join("0.png")).unwrap();
    let m = read_mask(&isbi.join("train/label/1.png")).unwrap();
    let gray: Vec<u8> = m.data.iter().map(|&v| v as u8).collect();
    save_jpeg(&masks.join("1.jpg"), m.width, m.height, &gray, 70);
    std::fs::copy(isbi.join("train/label/3.png"), masks.join("9.png")).unwrap();
    let json = d.join("check.json");
    let (code, so, se) = segrs(&[
        "data",
        "check",
        d.to_str().unwrap(),
        "--json",
        json.to_str().unwrap(),
    ]);
    assert_eq!(code, 0, "{so}{se}");
    assert!(
        so.contains("--binary --classes 2") && so.contains("look lossy"),
        "{so}"
    );
    let r: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&json).unwrap()).unwrap();
    assert_eq!(r["pairs"], 2);
    assert_eq!(r["images_without_mask"].as_array().unwrap().len(), 1);
    assert!(
        r["masks_without_image"][0]
            .as_str()
            .unwrap()
            .ends_with("9.png")
    );
    assert_eq!(r["mask_kinds"]["binary255"], 1);
    assert_eq!(r["mask_kinds"]["lossy_binary"], 1);
    // with --binary: two classes after conversion, nothing out of range
    let (code, so, _) = segrs(&[
        "data",
        "check",
        d.to_str().unwrap(),
        "--binary",
        "--classes",
        "2",
        "--json",
        json.to_str().unwrap(),
    ]);
    assert_eq!(code, 0);
    let r: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&json).unwrap()).unwrap();
    let classes: Vec<&String> = r["classes"].as_object().unwrap().keys().collect();
    assert_eq!(classes, ["0", "1"], "{so}");
    assert!(r["out_of_range"].as_object().unwrap().is_empty());
}

#[test]
fn data_check_finds_coco_id_zero_and_broken_references() {
    let d = tmp("coco-check");
    let coco = serde_json::json!({
        "images": [
            {"id": 0, "file_name": "a.jpg", "width": 100, "height": 80},
            {"id": 1, "file_name": "b.jpg", "width": 100, "height": 80},
            {"id": 1, "file_name": "c.jpg", "width": 100, "height": 80}
        ],
        "categories": [{"id": 1, "name": "polyp"}],
        "annotations": [
            {"id": 0, "image_id": 0, "category_id": 1, "bbox": [10, 10, 20, 20], "area": 400,
             "iscrowd": 0, "segmentation": [[10, 10, 30, 10, 30, 30]]},
            {"id": 1, "image_id": 7, "category_id": 1, "bbox": [90, 70, 20, 20], "area": 400,
             "iscrowd": 0, "segmentation": [[10, 10, 30, 10, 30, 30]]},
            {"id": 2, "image_id": 1, "category_id": 3, "bbox": [95, 10, 20, 20], "area": 400,
             "iscrowd": 0}
        ]
    });
    let f = d.join("labelme.json");
    std::fs::write(&f, coco.to_string()).unwrap();
    std::fs::write(d.join("a.jpg"), b"").unwrap();
    let json = d.join("check.json");
    let (code, so, se) = segrs(&[
        "data",
        "check",
        "--coco",
        f.to_str().unwrap(),
        "--images",
        d.to_str().unwrap(),
        "--json",
        json.to_str().unwrap(),
    ]);
    assert_eq!(code, 0, "{so}{se}");
    assert!(
        so.contains("an annotation has id 0") && so.contains("false positive"),
        "{so}"
    );
    for want in [
        "duplicate image id",
        "not in \"images\"",
        "not in \"categories\"",
        "outside their image",
        "no segmentation",
        "2 image file(s) missing",
    ] {
        assert!(so.contains(want), "{want}: {so}");
    }
    let bad = d.join("bad.json");
    std::fs::write(&bad, "{\"images\": [").unwrap();
    let (code, _, se) = segrs(&["data", "check", "--coco", bad.to_str().unwrap()]);
    assert_ne!(code, 0);
    assert!(
        se.contains("bad.json") && se.contains("malformed JSON"),
        "{se}"
    );
}

/// coco128 numbered from 0 (as labelme2coco writes ids) against the coco_eval fixtures'
/// detections: segrs gives the correct numbers (pycocotools' on the file numbered from 1) with
/// a warning naming the cause and both APs; `--pycocotools-compat` gives pycocotools' numbers
/// on the file itself (tools/gen_coco_fixtures.py id-zero), to 1e-6.
#[test]
fn coco_annotation_id_zero_is_evaluated_correctly_and_explained() {
    let Some(coco) = shared_data("coco128_instances") else {
        return;
    };
    let fix = crate::common::fixtures().join("coco");
    let want: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(fix.join("id_zero_expected.json")).unwrap())
            .unwrap();
    let mut gt: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(coco.join("annotations/instances_train2017.json")).unwrap(),
    )
    .unwrap();
    for (i, a) in gt["annotations"]
        .as_array_mut()
        .unwrap()
        .iter_mut()
        .enumerate()
    {
        a["id"] = serde_json::json!(i);
    }
    let d = tmp("coco-id-zero");
    let gt_path = d.join("from0.json");
    std::fs::write(&gt_path, gt.to_string()).unwrap();
    for (iou, dt) in [
        ("segm", "coco128_results.json"),
        ("bbox", "coco128_bbox_results.json"),
        ("boundary", "coco128_results.json"),
    ] {
        let json = d.join(format!("{iou}.json"));
        let dt_path = fix.join(dt);
        let run = |compat: bool| {
            let mut args = vec![
                "eval",
                "coco",
                "--gt",
                gt_path.to_str().unwrap(),
                "--dt",
                dt_path.to_str().unwrap(),
                "--iou-type",
                iou,
                "--json",
                json.to_str().unwrap(),
            ];
            if compat {
                args.push("--pycocotools-compat");
            }
            let (code, so, se) = segrs(&args);
            assert_eq!(code, 0, "{so}{se}");
            let r: serde_json::Value =
                serde_json::from_str(&std::fs::read_to_string(&json).unwrap()).unwrap();
            (r, se)
        };
        let close = |got: &serde_json::Value, want: &serde_json::Value, what: &str| {
            let g = got["stats"].as_array().unwrap();
            let w = want["stats"].as_array().unwrap();
            for (i, (a, b)) in g.iter().zip(w).enumerate() {
                let (a, b) = (a.as_f64().unwrap(), b.as_f64().unwrap());
                assert!((a - b).abs() <= 1e-6, "{what} stat {i}: {a} vs {b}");
            }
            for (a, b) in got["per_category"]
                .as_array()
                .unwrap()
                .iter()
                .zip(want["per_category"].as_array().unwrap())
            {
                let (x, y) = (a["ap"].as_f64().unwrap(), b["ap"].as_f64().unwrap());
                assert!(
                    (x - y).abs() <= 1e-6,
                    "{what} category {}: {x} vs {y}",
                    a["category_id"]
                );
            }
        };
        let (r, se) = run(false);
        close(&r, &want[format!("from1_{iou}")], &format!("{iou} correct"));
        assert!(
            se.contains("id 0") && se.contains("--pycocotools-compat"),
            "{se}"
        );
        let ap0 = format!(
            "{:.4}",
            want[format!("from0_{iou}")]["stats"][0].as_f64().unwrap()
        );
        assert!(se.contains(&ap0), "both numbers: {se}");
        let (r, _) = run(true);
        close(&r, &want[format!("from0_{iou}")], &format!("{iou} compat"));
    }
}

#[test]
fn training_with_the_papers_border_weights_on_isbi() {
    let Some(isbi) = crate::common::shared_data("isbi2012_membrane") else {
        return;
    };
    let d = crate::common::tmp("border-weights-train");
    let (images, masks) = (d.join("image"), d.join("label"));
    std::fs::create_dir_all(&images).unwrap();
    std::fs::create_dir_all(&masks).unwrap();
    for k in 0..4 {
        std::fs::copy(
            isbi.join(format!("train/image/{k}.png")),
            images.join(format!("{k}.png")),
        )
        .unwrap();
        std::fs::copy(
            isbi.join(format!("train/label/{k}.png")),
            masks.join(format!("{k}.png")),
        )
        .unwrap();
    }
    let run = d.join("run");
    let (code, so, se) = crate::common::tiny_train(
        &images,
        &masks,
        &run,
        "1",
        &[
            "--classes",
            "2",
            "--binary",
            "--in-channels",
            "1",
            "--val-split",
            "0.25",
            "--border-weights",
            "10,5",
        ],
    );
    assert_eq!(code, 0, "{so}{se}");
    let cfg: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(run.join("config.json")).unwrap()).unwrap();
    assert_eq!(
        cfg["loss"]["border_weights"],
        serde_json::json!([10.0, 5.0]),
        "{cfg}"
    );
    let state: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(run.join("state.json")).unwrap()).unwrap();
    assert!(state.to_string().contains("train_loss"), "{state}");
    let (code, _, se) = crate::common::tiny_train(
        &images,
        &masks,
        &d.join("bad"),
        "1",
        &[
            "--classes",
            "2",
            "--binary",
            "--in-channels",
            "1",
            "--border-weights",
            "10",
        ],
    );
    assert_ne!(code, 0);
    assert!(se.contains("W0,SIGMA"), "{se}");
}

/// The elastic deformation with rotation and zoom, against the formulas written out with numpy
/// and sampled by scipy's `map_coordinates` (`tools/gen_augment_fixtures.py`) on an ISBI window.
/// Tolerances: field and bilinear image 1e-4 absolute; the nearest-sampled mask may differ only
/// where a coordinate rounds the other way (at most 0.1% of pixels).
#[test]
fn elastic_warp_matches_the_reference_on_isbi() {
    use segrs::data::augment::{Source, Warp, elastic_field, sample};
    use segrs::data::image_io::{read_image, read_mask};
    let Some(isbi) = crate::common::shared_data("isbi2012_membrane") else {
        return;
    };
    let f = crate::common::read_fixture("augment/isbi_warp.safetensors");
    let get = |k: &str| f.get(k).unwrap().data.clone();
    let p = get("params");
    let (h, w, y0, x0) = (p[0] as usize, p[1] as usize, p[2] as isize, p[3] as isize);
    let (fy, fx) = elastic_field(&get("grid_dy"), &get("grid_dx"), 3, h, w);
    let worst = |a: &[f32], b: &[f32]| {
        a.iter()
            .zip(b)
            .map(|(x, y)| (x - y).abs())
            .fold(0.0, f32::max)
    };
    assert!(worst(&fy, &get("field_dy")) < 1e-4);
    assert!(worst(&fx, &get("field_dx")) < 1e-4);
    let image = read_image(&isbi.join("train/image/25.png"))
        .unwrap()
        .with_channels(1);
    let labels: Vec<u32> = read_mask(&isbi.join("train/label/25.png"))
        .unwrap()
        .data
        .iter()
        .map(|&v| (v >= 128) as u32)
        .collect();
    let src = Source {
        chw: &image.data,
        labels: &labels,
        channels: 1,
        image_channels: 1,
        height: image.height,
        width: image.width,
        fill: &[0.0],
    };
    let warp = Warp::new(p[4], p[5], Some((fy, fx)), h, w);
    let out = sample(&src, h, w, y0, x0, Some(&warp), 255);
    let d = worst(&out.chw, &get("image"));
    assert!(d < 1e-4, "image differs by {d}");
    let want = get("label");
    let differ = out
        .labels
        .iter()
        .zip(&want)
        .filter(|(a, b)| **a as f32 != **b)
        .count();
    assert!(differ * 1000 <= h * w, "{differ} mask pixels differ");
    // The warp is not the identity: the window moved far from a plain crop.
    let plain = sample(&src, h, w, y0, x0, None, 255);
    let moved = plain
        .labels
        .iter()
        .zip(&out.labels)
        .filter(|(a, b)| a != b)
        .count();
    assert!(moved * 10 > h * w, "only {moved} pixels moved");
}

#[test]
fn augment_preview_draws_a_panel_and_rejects_bad_flags() {
    let Some(isbi) = crate::common::shared_data("isbi2012_membrane") else {
        return;
    };
    let d = crate::common::tmp("augment-preview");
    let out = d.join("panel.png");
    let data = isbi.join("train");
    let args = [
        "augment",
        "--data",
        data.to_str().unwrap(),
        "--stem",
        "3",
        "--binary",
        "--crop",
        "128",
        "--elastic",
        "10",
        "--rotate",
        "15",
        "--gamma",
        "0.2",
        "--samples",
        "3",
        "--preview",
        out.to_str().unwrap(),
    ];
    let (code, stdout, stderr) = crate::common::segrs(&args);
    assert_eq!(code, 0, "{stderr}");
    assert!(stdout.contains("3 augmented samples"), "{stdout}");
    let pic = segrs::data::image_io::read_image(&out).unwrap();
    // The original (512 wide) and three 128-px samples side by side, titles above.
    assert!(
        pic.width >= 512 + 3 * 128 && pic.height > 512,
        "{}x{}",
        pic.width,
        pic.height
    );
    let (code, _, stderr) = crate::common::segrs(&[
        "augment",
        "--data",
        data.to_str().unwrap(),
        "--elastic",
        "10,1",
        "--preview",
        out.to_str().unwrap(),
    ]);
    assert_ne!(code, 0);
    assert!(stderr.contains("--elastic"), "{stderr}");
}

//! `segrs convert` round trips on the shared data: label map -> COCO -> masks gives the same
//! objects; DSB folders -> COCO keeps every nucleus with its area; panoptic -> maps -> panoptic
//! scores PQ = 1 against the original.

use crate::common::{shared_data, tmp};
use std::process::Command;

fn segrs(args: &[&str]) {
    let out = Command::new(env!("CARGO_BIN_EXE_segrs"))
        .args(args)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn label_map_to_coco_and_back() {
    let Some(sd) = shared_data("stardist_nuclei_2d") else {
        return;
    };
    let d = tmp("conv-sd");
    let json = d.join("sd.json");
    segrs(&[
        "convert",
        "labelmap-to-coco",
        "--labels",
        sd.join("mask2d.tif").to_str().unwrap(),
        "--out",
        json.to_str().unwrap(),
    ]);
    let gt = segrs::formats::coco::load_gt(&json).unwrap();
    assert_eq!(gt.dataset.annotations.len(), 125);
    segrs(&[
        "convert",
        "coco-to-masks",
        "--gt",
        json.to_str().unwrap(),
        "--out",
        d.join("m").to_str().unwrap(),
    ]);
    // The instance-id map written back has the same partition as the original label map.
    let orig = segrs::data::image_io::read_mask(&sd.join("mask2d.tif")).unwrap();
    let back = segrs::data::image_io::read_mask(&d.join("m/mask2d/labels.png")).unwrap();
    let mut pairs = std::collections::HashMap::new();
    for (a, b) in orig.data.iter().zip(&back.data) {
        assert_eq!(*a == 0, *b == 0);
        if *a != 0 {
            assert_eq!(*pairs.entry(*a).or_insert(*b), *b, "object {a} split");
        }
    }
    assert_eq!(pairs.len(), 125);
}

#[test]
fn dsb_folders_to_coco() {
    let Some(dsb) = shared_data("dsb2018_nuclei_subset") else {
        return;
    };
    let d = tmp("conv-dsb");
    let json = d.join("dsb.json");
    segrs(&[
        "convert",
        "dsb-to-coco",
        "--data",
        dsb.join("stage1_train").to_str().unwrap(),
        "--out",
        json.to_str().unwrap(),
    ]);
    let gt = segrs::formats::coco::load_gt(&json).unwrap();
    assert_eq!(gt.dataset.images.len(), 36);
    assert_eq!(gt.dataset.annotations.len(), 2398);
    // one nucleus checked pixel by pixel
    let first = &gt.dataset.images[0];
    let stem = first.file_name.trim_end_matches(".png");
    let masks =
        segrs::data::folder::list_images(&dsb.join("stage1_train").join(stem).join("masks"))
            .unwrap();
    let m = segrs::data::image_io::read_mask(&masks[0].1).unwrap();
    let ann = gt.load_anns(&gt.get_ann_ids(&[first.id], &[], None, None))[0].clone();
    let rle = gt.ann_to_rle(&ann).unwrap();
    let decoded = segrs::formats::coco::decode_rowmajor(&rle);
    assert!(
        m.data
            .iter()
            .zip(&decoded)
            .all(|(a, b)| (*a > 0) == (*b > 0))
    );
}

#[test]
fn panoptic_round_trip_scores_pq_one() {
    let Some(src) = shared_data("coco_panoptic_sample") else {
        return;
    };
    let d = tmp("conv-pan");
    let cats = src.join("panoptic_coco_categories.json");
    let gt_json = src.join("sample_data/panoptic_examples.json");
    let gt_dir = src.join("sample_data/panoptic_examples");
    segrs(&[
        "convert",
        "panoptic-to-maps",
        "--json",
        gt_json.to_str().unwrap(),
        "--dir",
        gt_dir.to_str().unwrap(),
        "--categories",
        cats.to_str().unwrap(),
        "--out",
        d.join("maps").to_str().unwrap(),
    ]);
    segrs(&[
        "convert",
        "maps-to-panoptic",
        "--semantic",
        d.join("maps/semantic").to_str().unwrap(),
        "--instance",
        d.join("maps/instance").to_str().unwrap(),
        "--categories",
        cats.to_str().unwrap(),
        "--out-json",
        d.join("pan.json").to_str().unwrap(),
        "--out-dir",
        d.join("pan").to_str().unwrap(),
    ]);
    let r = segrs::metrics::panoptic::evaluate_files(
        &gt_json,
        &gt_dir,
        &d.join("pan.json"),
        &d.join("pan"),
        Some(&cats),
    )
    .unwrap();
    assert!((r.all.pq - 1.0).abs() < 1e-12, "{:?}", r.all);
}

#[test]
fn viz_instances_and_panoptic_draw_pictures() {
    let (Some(coco), Some(pan)) = (
        shared_data("coco128_instances"),
        shared_data("coco_panoptic_sample"),
    ) else {
        return;
    };
    let d = tmp("viz");
    segrs(&[
        "viz",
        "instances",
        "--gt",
        coco.join("annotations/instances_train2017.json")
            .to_str()
            .unwrap(),
        "--dt",
        crate::common::fixtures()
            .join("coco/coco128_results.json")
            .to_str()
            .unwrap(),
        "--images",
        coco.join("train2017").to_str().unwrap(),
        "--max-images",
        "2",
        "--out",
        d.join("i").to_str().unwrap(),
    ]);
    let pic = image::open(d.join("i/000000000009.png")).unwrap().to_rgb8();
    let orig = image::open(coco.join("train2017/000000000009.jpg")).unwrap();
    // two panels side by side plus a title row
    assert_eq!(pic.width(), 2 * orig.width() + 6);
    assert!(pic.height() > orig.height());
    segrs(&[
        "viz",
        "panoptic",
        "--json",
        pan.join("sample_data/panoptic_examples.json")
            .to_str()
            .unwrap(),
        "--dir",
        pan.join("sample_data/panoptic_examples").to_str().unwrap(),
        "--images",
        pan.join("sample_data/input_images").to_str().unwrap(),
        "--categories",
        pan.join("panoptic_coco_categories.json").to_str().unwrap(),
        "--out",
        d.join("p").to_str().unwrap(),
    ]);
    assert!(d.join("p/000000439180.png").exists());
}

//! Semantic metrics against the reference definitions (tools/gen_unet_fixtures.py: confusion
//! matrix as mmsegmentation, Boundary F1 from the DAVIS toolkit with OpenCV dilation, Boundary IoU
//! from Cheng et al.'s code with OpenCV erosion), to 1e-9, through the folder loader the CLI uses.

use crate::common::fixtures;
use segrs::metrics::semantic::evaluate_dirs;

fn close(a: Option<f64>, b: &serde_json::Value, what: &str) {
    match (a, b.as_f64()) {
        (None, None) => {}
        (Some(x), Some(y)) => assert!((x - y).abs() < 1e-9, "{what}: {x} vs {y}"),
        (x, _) => panic!("{what}: {x:?} vs {b}"),
    }
}

#[test]
fn semantic_metrics_match_reference() {
    let d = fixtures().join("metrics");
    let want: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(d.join("expected.json")).unwrap()).unwrap();
    let (r, n, _) = evaluate_dirs(
        &d.join("pred"),
        &d.join("gt"),
        4,
        Some(255),
        &Default::default(),
        None,
    )
    .unwrap();
    assert_eq!(n, 3);
    for k in [
        "pixel_accuracy",
        "mean_accuracy",
        "miou",
        "fwiou",
        "mean_dice",
        "boundary_f1",
        "boundary_iou",
    ] {
        let got = match k {
            "pixel_accuracy" => r.pixel_accuracy,
            "mean_accuracy" => r.mean_accuracy,
            "miou" => r.miou,
            "fwiou" => r.fwiou,
            "mean_dice" => r.mean_dice,
            "boundary_f1" => r.boundary_f1,
            _ => r.boundary_iou,
        };
        close(got, &want[k], k);
    }
    for (c, pc) in r.per_class.iter().enumerate() {
        let w = &want["per_class"][c];
        close(pc.iou, &w["iou"], &format!("iou[{c}]"));
        close(pc.accuracy, &w["accuracy"], &format!("accuracy[{c}]"));
        close(pc.dice, &w["dice"], &format!("dice[{c}]"));
        close(
            pc.boundary_f1,
            &w["boundary_f1"],
            &format!("boundary_f1[{c}]"),
        );
        close(
            pc.boundary_iou,
            &w["boundary_iou"],
            &format!("boundary_iou[{c}]"),
        );
    }
}

#[test]
fn label_out_of_range_is_an_error() {
    let d = fixtures().join("metrics");
    // 3 classes: the GT holds class 3 pixels nowhere, but predictions do.
    let err = format!(
        "{:#}",
        evaluate_dirs(
            &d.join("pred"),
            &d.join("gt"),
            3,
            Some(255),
            &Default::default(),
            None
        )
        .unwrap_err()
    );
    assert!(err.contains("predicted pixels have labels >= 3"), "{err}");
}

/// The ISBI 2012 labels: cell interiors (255) -> class 1.
fn isbi_classes(dir: &std::path::Path, k: usize) -> (Vec<u32>, usize, usize) {
    let m = segrs::data::image_io::read_mask(&dir.join(format!("train/label/{k}.png"))).unwrap();
    (
        m.data.iter().map(|&v| (v == 255) as u32).collect(),
        m.height,
        m.width,
    )
}

#[test]
fn rand_error_and_vi_match_scikit_image_on_isbi() {
    use segrs::metrics::segments::{Contingency, scores, segments};
    use segrs::ops::components::Connectivity;
    let Some(isbi) = crate::common::shared_data("isbi2012_membrane") else {
        return;
    };
    let want: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(fixtures().join("metrics/isbi_segments.json")).unwrap(),
    )
    .unwrap();
    for (name, conn) in [("4", Connectivity::Four), ("8", Connectivity::Eight)] {
        for (i, pair) in want["pairs"].as_array().unwrap().iter().enumerate() {
            let (g, p) = (
                pair[0].as_u64().unwrap() as usize,
                pair[1].as_u64().unwrap() as usize,
            );
            let (gt, h, w) = isbi_classes(&isbi, g);
            let (pred, _, _) = isbi_classes(&isbi, p);
            let s = scores(&Contingency::new(
                &segments(&gt, h, w, None, conn),
                &segments(&pred, h, w, None, conn),
                &[0],
            ));
            let r = &want["connectivity"][name][i];
            for (what, v) in [
                ("rand_error", s.rand_error),
                ("rand_precision", s.rand_precision),
                ("rand_recall", s.rand_recall),
                ("vi_split", s.vi_split),
                ("vi_merge", s.vi_merge),
            ] {
                close(
                    Some(v),
                    &r[what],
                    &format!("{what}, {g} vs {p}, {name}-connected"),
                );
            }
        }
    }
}

#[test]
fn eval_semantic_instances_reports_the_segment_scores() {
    let Some(isbi) = crate::common::shared_data("isbi2012_membrane") else {
        return;
    };
    let want: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(fixtures().join("metrics/isbi_segments.json")).unwrap(),
    )
    .unwrap();
    let d = crate::common::tmp("eval-instances");
    let (gt_dir, pred_dir) = (d.join("gt"), d.join("pred"));
    std::fs::create_dir_all(&gt_dir).unwrap();
    for (g, p) in [(25usize, 26usize), (26, 27)] {
        std::fs::copy(
            isbi.join(format!("train/label/{g}.png")),
            gt_dir.join(format!("{g}.png")),
        )
        .unwrap();
        let (pred, h, w) = isbi_classes(&isbi, p);
        segrs::data::image_io::write_label_png(
            &pred_dir.join(format!("{g}.png")),
            &segrs::data::image_io::LabelMap {
                width: w,
                height: h,
                data: pred,
            },
        )
        .unwrap();
    }
    let json = d.join("report.json");
    let (code, out, err) = crate::common::segrs(&[
        "eval",
        "semantic",
        "--pred",
        pred_dir.to_str().unwrap(),
        "--gt",
        gt_dir.to_str().unwrap(),
        "--classes",
        "2",
        "--binary",
        "--instances",
        "--json",
        json.to_str().unwrap(),
    ]);
    assert_eq!(code, 0, "{out}{err}");
    assert!(out.contains("adapted Rand error"), "{out}");
    let r: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&json).unwrap()).unwrap();
    let rows = &want["connectivity"]["4"];
    for k in ["rand_error", "vi_split", "vi_merge"] {
        let mean = (rows[0][k].as_f64().unwrap() + rows[1][k].as_f64().unwrap()) / 2.0;
        close(r["segments"][k].as_f64(), &serde_json::json!(mean), k);
    }
    assert_eq!(r["segments"]["per_image"].as_array().unwrap().len(), 2);
    // The challenge's pixel error: 1 - the F-score of the foreground pixels pooled over the
    // images, which for two classes is the pooled Dice of class 1 (and not 1 - accuracy).
    let dice = r["per_class"][1]["dice"].as_f64().unwrap();
    let f = r["segments"]["foreground_f_score"].as_f64().unwrap();
    let e = r["segments"]["isbi_pixel_error"].as_f64().unwrap();
    assert!((f - dice).abs() < 1e-12, "{f} vs {dice}");
    assert!((e - (1.0 - dice)).abs() < 1e-12);
    let acc = r["pixel_accuracy"].as_f64().unwrap();
    assert!(
        (e - (1.0 - acc)).abs() > 1e-6,
        "the two pixel errors coincide here"
    );
    assert!(out.contains("ISBI pixel error"), "{out}");
}

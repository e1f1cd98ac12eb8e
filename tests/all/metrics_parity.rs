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

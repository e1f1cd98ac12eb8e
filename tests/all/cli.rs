//! The `segrs` binary end to end on small data: train -> predict -> eval semantic, and bad input.

use crate::common::segrs;
use segrs::data::image_io::{write_label_png, write_png};
use segrs::data::synthetic::dataset;
use std::path::Path;

fn write_dataset(dir: &Path, first: usize, n: usize) {
    for s in dataset(11, first, n, 32) {
        write_png(
            &dir.join("images").join(format!("{}.png", s.stem)),
            32,
            32,
            3,
            &s.image.to_rgb8(),
        )
        .unwrap();
        write_label_png(&dir.join("masks").join(format!("{}.png", s.stem)), &s.mask).unwrap();
    }
}

#[test]
fn train_predict_eval_end_to_end() {
    let d = crate::common::tmp("cli-e2e");
    write_dataset(&d.join("data"), 0, 10);
    let data = d.join("data");
    let run = d.join("run");
    let (code, _, err) = segrs(&[
        "train",
        "--data",
        data.to_str().unwrap(),
        "--val-stems",
        "0008-0009",
        "--classes",
        "5",
        "--base-width",
        "4",
        "--depth",
        "2",
        "--epochs",
        "2",
        "--batch-size",
        "4",
        "--loss",
        "ce+dice",
        "--out",
        run.to_str().unwrap(),
    ]);
    assert_eq!(code, 0, "{err}");
    assert!(run.join("best.safetensors").exists() && run.join("curve.png").exists());
    let pred = d.join("pred");
    let (code, _, err) = segrs(&[
        "predict",
        "--checkpoint",
        run.join("best.safetensors").to_str().unwrap(),
        "--images",
        data.join("images").to_str().unwrap(),
        "--stems",
        "0008,0009",
        "--out",
        pred.to_str().unwrap(),
        "--overlay",
        "--color",
    ]);
    assert_eq!(code, 0, "{err}");
    assert!(
        pred.join("0008.png").exists()
            && pred.join("overlay/0009.png").exists()
            && pred.join("color/0008.png").exists()
    );
    assert!(!pred.join("0000.png").exists());
    // The burn engine gives the same labels as the host engine (the default on the CPU).
    let pred_burn = d.join("pred-burn");
    let (code, _, err) = segrs(&[
        "predict",
        "--checkpoint",
        run.join("best.safetensors").to_str().unwrap(),
        "--images",
        data.join("images").to_str().unwrap(),
        "--stems",
        "0008,0009",
        "--out",
        pred_burn.to_str().unwrap(),
        "--engine",
        "burn",
    ]);
    assert_eq!(code, 0, "{err}");
    for stem in ["0008", "0009"] {
        let a = image::open(pred.join(format!("{stem}.png")))
            .unwrap()
            .to_luma8();
        let b = image::open(pred_burn.join(format!("{stem}.png")))
            .unwrap()
            .to_luma8();
        let same = a.pixels().zip(b.pixels()).filter(|(x, y)| x == y).count();
        assert!(
            same as f64 >= 0.999 * a.len() as f64,
            "{stem}: host and burn engines agree on {same} of {} pixels",
            a.len()
        );
    }
    let json = d.join("m.json");
    let (code, out, err) = segrs(&[
        "eval",
        "semantic",
        "--pred",
        pred.to_str().unwrap(),
        "--gt",
        data.join("masks").to_str().unwrap(),
        "--classes",
        "5",
        "--json",
        json.to_str().unwrap(),
    ]);
    assert_eq!(code, 0, "{err}");
    assert!(out.contains("mIoU"), "{out}");
    let v: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&json).unwrap()).unwrap();
    for k in [
        "pixel_accuracy",
        "mean_accuracy",
        "miou",
        "fwiou",
        "mean_dice",
        "boundary_f1",
        "boundary_iou",
        "per_class",
    ] {
        assert!(v.get(k).is_some(), "missing {k}");
    }
    assert_eq!(v["per_class"].as_array().unwrap().len(), 5);
    // --resume with more epochs continues the run
    let (code, _, err) = segrs(&[
        "train",
        "--resume",
        run.to_str().unwrap(),
        "--epochs",
        "3",
        "--data",
        data.to_str().unwrap(),
        "--val-stems",
        "0008,0009",
    ]);
    assert_eq!(code, 0, "{err}");
    let state: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(run.join("state.json")).unwrap()).unwrap();
    assert_eq!(state["epochs_done"], 3);
}

#[test]
fn bad_inputs_name_the_file_and_fail_cleanly() {
    let d = crate::common::tmp("cli-bad");
    let data = d.join("data");
    write_dataset(&data, 0, 4);
    // corrupt image, a mask of the wrong size, a label out of range
    std::fs::write(data.join("images/0001.png"), b"\x89PNG\r\n\x1a\nnot really").unwrap();
    let small = segrs::data::image_io::LabelMap {
        width: 16,
        height: 16,
        data: vec![0; 256],
    };
    write_label_png(&data.join("masks/0002.png"), &small).unwrap();
    let bad = segrs::data::image_io::LabelMap {
        width: 32,
        height: 32,
        data: vec![7; 1024],
    };
    write_label_png(&data.join("masks/0003.png"), &bad).unwrap();
    let run = d.join("run");
    let (code, _, err) = segrs(&[
        "train",
        "--data",
        data.to_str().unwrap(),
        "--classes",
        "5",
        "--epochs",
        "1",
        "--out",
        run.to_str().unwrap(),
    ]);
    assert_eq!(code, 1, "{err}");
    assert!(!err.contains("panicked"), "{err}");
    assert!(
        err.contains("0001.png") && err.contains("0002.png") && err.contains("0003.png"),
        "{err}"
    );
    assert!(err.contains("3 bad sample"), "{err}");
    assert!(!run.join("state.json").exists());
    // an empty folder
    let empty = d.join("empty");
    std::fs::create_dir_all(empty.join("images")).unwrap();
    std::fs::create_dir_all(empty.join("masks")).unwrap();
    let (code, _, err) = segrs(&[
        "train",
        "--data",
        empty.to_str().unwrap(),
        "--classes",
        "2",
        "--out",
        run.to_str().unwrap(),
    ]);
    assert_eq!(code, 1);
    assert!(err.contains("no images"), "{err}");
    // predictions of the wrong size in eval
    let pred = d.join("pred");
    write_label_png(&pred.join("0000.png"), &small).unwrap();
    let (code, _, err) = segrs(&[
        "eval",
        "semantic",
        "--pred",
        pred.to_str().unwrap(),
        "--gt",
        data.join("masks").to_str().unwrap(),
        "--classes",
        "5",
    ]);
    assert_eq!(code, 1);
    assert!(err.contains("0000.png") && err.contains("16x16"), "{err}");
    // wrong checkpoint
    let (code, _, err) = segrs(&[
        "predict",
        "--checkpoint",
        data.join("masks/0000.png").to_str().unwrap(),
        "--images",
        data.join("images").to_str().unwrap(),
        "--out",
        pred.to_str().unwrap(),
    ]);
    assert_eq!(code, 1);
    assert!(
        err.contains("0000.png") && !err.contains("panicked"),
        "{err}"
    );
}

#[test]
fn every_subcommand_has_help() {
    for args in [
        vec!["--help"],
        vec!["train", "--help"],
        vec!["predict", "--help"],
        vec!["eval", "semantic", "--help"],
        vec!["demo", "--help"],
    ] {
        let (code, out, _) = segrs(&args);
        assert_eq!(code, 0, "{args:?}");
        assert!(out.contains("Usage"), "{args:?}: {out}");
    }
}

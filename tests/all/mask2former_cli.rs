//! `segrs panoptic predict` end to end with the reduced Mask2Former fixture: COCO panoptic output
//! scored by `segrs eval panoptic`, instance results, semantic maps, shards, and the errors for
//! a wrong model folder.

use crate::common::{fixtures, segrs, shared_data, tmp};
use serde_json::Value;
use std::path::Path;

fn model() -> String {
    fixtures().join("mask2former/model").display().to_string()
}

fn read_json(p: &Path) -> Value {
    serde_json::from_str(&std::fs::read_to_string(p).unwrap()).unwrap()
}

#[test]
fn panoptic_predict_then_eval_on_coco() {
    let Some(data) = shared_data("coco_panoptic_sample") else {
        return;
    };
    let out = tmp("m2f-panoptic");
    let cats = data.join("panoptic_coco_categories.json");
    let images = data.join("sample_data/input_images");
    let (code, stdout, stderr) = segrs(&[
        "panoptic",
        "predict",
        "--model",
        &model(),
        "--images",
        images.to_str().unwrap(),
        "--out",
        out.to_str().unwrap(),
        "--categories",
        cats.to_str().unwrap(),
    ]);
    assert_eq!(code, 0, "{stdout}{stderr}");
    let json = read_json(&out.join("panoptic.json"));
    let anns = json["annotations"].as_array().unwrap();
    assert_eq!(anns.len(), 2);
    let coco_ids: Vec<u64> = read_json(&cats)
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["id"].as_u64().unwrap())
        .collect();
    let mut segments = 0;
    for a in anns {
        // COCO's file names give the image ids.
        let id = a["image_id"].as_u64().unwrap();
        assert!(id == 142238 || id == 439180, "image id {id}");
        let png = segrs::formats::panoptic::read_id_png(
            &out.join("panoptic").join(a["file_name"].as_str().unwrap()),
        )
        .unwrap();
        let pic =
            segrs::data::image_io::read_image(&images.join(format!("{:012}.jpg", id))).unwrap();
        assert_eq!((png.width, png.height), (pic.width, pic.height));
        let infos = a["segments_info"].as_array().unwrap();
        segments += infos.len();
        let mut ids: Vec<u64> = infos.iter().map(|s| s["id"].as_u64().unwrap()).collect();
        ids.sort_unstable();
        ids.dedup();
        assert_eq!(ids.len(), infos.len(), "segment ids repeat");
        for s in infos {
            assert!(coco_ids.contains(&s["category_id"].as_u64().unwrap()));
            let sid = s["id"].as_u64().unwrap() as u32;
            let area = png.data.iter().filter(|&&v| v == sid).count() as u64;
            assert_eq!(area, s["area"].as_u64().unwrap(), "segment {sid} area");
        }
        for &v in &png.data {
            assert!(v == 0 || infos.iter().any(|s| s["id"].as_u64() == Some(v as u64)));
        }
    }
    assert!(segments > 0, "no segments");
    assert!(out.join("overlays/000000142238.png").is_file());

    let gt = data.join("sample_data");
    let (code, stdout, stderr) = segrs(&[
        "eval",
        "panoptic",
        "--gt-json",
        gt.join("panoptic_examples.json").to_str().unwrap(),
        "--gt-dir",
        gt.join("panoptic_examples").to_str().unwrap(),
        "--pred-json",
        out.join("panoptic.json").to_str().unwrap(),
        "--pred-dir",
        out.join("panoptic").to_str().unwrap(),
        "--categories",
        cats.to_str().unwrap(),
    ]);
    assert_eq!(code, 0, "{stdout}{stderr}");
    assert!(
        stdout.contains("PQ") && stdout.contains("Things"),
        "{stdout}"
    );
}

#[test]
fn instance_and_semantic_tasks() {
    let img = fixtures().join("maskrcnn/dog.jpg");
    let pic = segrs::data::image_io::read_image(&img).unwrap();
    let out = tmp("m2f-tasks");
    // `panoptic predict` of the dog photo into `out/dir` (its stderr), which must succeed.
    let run = |dir: &str, task: &str, extra: &[&str]| {
        let o = out.join(dir);
        let model = model();
        let mut args = vec![
            "panoptic",
            "predict",
            "--model",
            &model,
            "--images",
            img.to_str().unwrap(),
            "--out",
            o.to_str().unwrap(),
            "--task",
            task,
        ];
        args.extend_from_slice(extra);
        let (code, stdout, stderr) = segrs(&args);
        assert_eq!(code, 0, "{dir}: {stdout}{stderr}");
        stderr
    };
    for task in ["instance", "semantic"] {
        run(task, task, &["--threshold", "0.3"]);
    }
    let results = read_json(&out.join("instance/results.json"));
    let recs = results.as_array().unwrap();
    assert!(!recs.is_empty(), "no instances at threshold 0.3");
    for r in recs {
        assert!(r["score"].as_f64().unwrap() >= 0.3);
        assert!(r["category_id"].as_u64().unwrap() < 133);
        let size: Vec<u64> = r["segmentation"]["size"]
            .as_array()
            .unwrap()
            .iter()
            .map(|v| v.as_u64().unwrap())
            .collect();
        assert_eq!(size, [pic.height as u64, pic.width as u64]);
    }
    let sem = segrs::data::image_io::read_mask(&out.join("semantic/semantic/dog.png")).unwrap();
    assert_eq!((sem.width, sem.height), (pic.width, pic.height));
    assert!(sem.data.iter().all(|&v| v < 133));
    // --precision bf16: without AVX512_BF16 it says so and runs f32 (the same map)
    let stderr = run("bf16", "semantic", &["--precision", "bf16"]);
    let half = segrs::data::image_io::read_mask(&out.join("bf16/semantic/dog.png")).unwrap();
    assert_eq!((half.width, half.height), (pic.width, pic.height));
    if !segrs::ops::bf16::has_native() {
        assert!(stderr.contains("AVX512_BF16"), "{stderr}");
        assert_eq!(half.data, sem.data);
    }
}

#[test]
fn shards_split_the_images() {
    let dir = tmp("m2f-shard-in");
    for n in ["a", "b", "c"] {
        std::fs::copy(
            fixtures().join("maskrcnn/dog.jpg"),
            dir.join(format!("{n}.jpg")),
        )
        .unwrap();
    }
    let out = tmp("m2f-shard");
    let (code, stdout, stderr) = segrs(&[
        "panoptic",
        "predict",
        "--model",
        &model(),
        "--images",
        dir.to_str().unwrap(),
        "--out",
        out.to_str().unwrap(),
        "--shard",
        "1/2",
        "--no-overlays",
    ]);
    assert_eq!(code, 0, "{stdout}{stderr}");
    let json = read_json(&out.join("panoptic-1-of-2.json"));
    let names: Vec<&str> = json["annotations"]
        .as_array()
        .unwrap()
        .iter()
        .map(|a| a["file_name"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["b.png"]);
    let (code, _, stderr) = segrs(&[
        "panoptic",
        "predict",
        "--model",
        &model(),
        "--images",
        dir.to_str().unwrap(),
        "--out",
        out.to_str().unwrap(),
        "--shard",
        "2/2",
    ]);
    assert_ne!(code, 0);
    assert!(stderr.contains("shard 2/2"), "{stderr}");
}

#[test]
fn wrong_model_folders_are_named() {
    let src = fixtures().join("mask2former/model");
    let img = fixtures().join("maskrcnn/dog.jpg");
    let run = |dir: &Path| {
        segrs(&[
            "panoptic",
            "predict",
            "--model",
            dir.to_str().unwrap(),
            "--images",
            img.to_str().unwrap(),
            "--out",
            tmp("m2f-bad-out").to_str().unwrap(),
        ])
    };
    // A backbone segrs does not run.
    let dir = tmp("m2f-convnext");
    let mut cfg = read_json(&src.join("config.json"));
    cfg["backbone_config"]["model_type"] = Value::from("convnext");
    std::fs::write(dir.join("config.json"), cfg.to_string()).unwrap();
    std::fs::copy(src.join("model.safetensors"), dir.join("model.safetensors")).unwrap();
    let (code, _, stderr) = run(&dir);
    assert_ne!(code, 0);
    assert!(
        stderr.contains("backbone \"convnext\" is not supported"),
        "{stderr}"
    );
    // A ResNet with basic blocks.
    let rsrc = fixtures().join("mask2former/resnet");
    let dir = tmp("m2f-basic");
    let mut cfg = read_json(&rsrc.join("config.json"));
    cfg["backbone_config"]["layer_type"] = Value::from("basic");
    std::fs::write(dir.join("config.json"), cfg.to_string()).unwrap();
    std::fs::copy(
        rsrc.join("pytorch_model.bin"),
        dir.join("pytorch_model.bin"),
    )
    .unwrap();
    let (code, _, stderr) = run(&dir);
    assert_ne!(code, 0);
    assert!(stderr.contains("bottleneck blocks"), "{stderr}");
    // No weights.
    let dir = tmp("m2f-noweights");
    std::fs::copy(src.join("config.json"), dir.join("config.json")).unwrap();
    let (code, _, stderr) = run(&dir);
    assert_ne!(code, 0);
    assert!(stderr.contains("no weights"), "{stderr}");
    // A config that disagrees with the weights (fewer decoder layers).
    let dir = tmp("m2f-mismatch");
    let mut cfg = read_json(&src.join("config.json"));
    cfg["decoder_layers"] = Value::from(3);
    std::fs::write(dir.join("config.json"), cfg.to_string()).unwrap();
    std::fs::copy(src.join("model.safetensors"), dir.join("model.safetensors")).unwrap();
    let (code, _, stderr) = run(&dir);
    assert_ne!(code, 0);
    assert!(
        stderr.contains("the config and the weights disagree"),
        "{stderr}"
    );
    // Malformed JSON.
    let dir = tmp("m2f-badjson");
    std::fs::write(dir.join("config.json"), "{not json").unwrap();
    let (code, _, stderr) = run(&dir);
    assert_ne!(code, 0);
    assert!(stderr.contains("config.json: malformed JSON"), "{stderr}");
}

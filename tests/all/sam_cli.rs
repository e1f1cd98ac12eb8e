//! `segrs sam` and `segrs sam auto` end to end with the reduced SAM fixture (a `.pth` saved as
//! the official checkpoints are): files, sizes and JSON as documented, the embedding and
//! mask-input round trips giving the same masks as a direct run, and bad input.

use crate::common::{fixtures, segrs, tmp};
use segrs::data::image_io::read_mask;

fn json(p: &std::path::Path) -> serde_json::Value {
    serde_json::from_str(&std::fs::read_to_string(p).unwrap()).unwrap()
}

#[test]
fn sam_prompts_embeddings_and_auto() {
    let d = tmp("sam-cli");
    let ck = fixtures().join("sam/tiny_sam.pth");
    let img = fixtures().join("sam/wide.png");
    let (ck, img) = (ck.to_str().unwrap(), img.to_str().unwrap());
    let o1 = d.join("one");
    let emb = d.join("emb.safetensors");
    let (code, out, err) = segrs(&[
        "sam",
        "--checkpoint",
        ck,
        "--image",
        img,
        "--point",
        "45,29",
        "--multimask",
        "--out",
        o1.to_str().unwrap(),
        "--save-embedding",
        emb.to_str().unwrap(),
    ]);
    assert_eq!(code, 0, "{out}{err}");
    let r = json(&o1.join("result.json"));
    assert_eq!(r["image_size"], serde_json::json!([97, 150]));
    assert_eq!(r["masks"].as_array().unwrap().len(), 3);
    assert_eq!(r["scores"].as_array().unwrap().len(), 3);
    for i in 0..3 {
        let m = read_mask(&o1.join(format!("mask_{i}.png"))).unwrap();
        assert_eq!((m.width, m.height), (150, 97));
        assert!(m.data.iter().all(|&v| v == 0 || v == 255));
    }
    assert!(o1.join("overlay.png").exists() && emb.exists());
    // The saved embedding gives the same masks without the encoder; the low-res logits feed back.
    let o2 = d.join("two");
    let (code, out, err) = segrs(&[
        "sam",
        "--checkpoint",
        ck,
        "--image",
        img,
        "--point",
        "45,29",
        "--multimask",
        "--out",
        o2.to_str().unwrap(),
        "--embedding",
        emb.to_str().unwrap(),
    ]);
    assert_eq!(code, 0, "{out}{err}");
    for i in 0..3 {
        let f = format!("mask_{i}.png");
        assert_eq!(
            read_mask(&o1.join(&f)).unwrap(),
            read_mask(&o2.join(&f)).unwrap()
        );
    }
    let o3 = d.join("three");
    let low = o1.join("low_res_logits.safetensors");
    let (code, out, err) = segrs(&[
        "sam",
        "--checkpoint",
        ck,
        "--image",
        img,
        "--point",
        "45,29",
        "--point",
        "120,80",
        "--label",
        "1",
        "--label",
        "0",
        "--box",
        "20,10,140,90",
        "--mask-input",
        low.to_str().unwrap(),
        "--out",
        o3.to_str().unwrap(),
    ]);
    assert_eq!(code, 0, "{out}{err}");
    assert_eq!(
        json(&o3.join("result.json"))["masks"]
            .as_array()
            .unwrap()
            .len(),
        1
    );
    // Batched boxes: one mask per box.
    let o4 = d.join("four");
    let (code, out, err) = segrs(&[
        "sam",
        "--checkpoint",
        ck,
        "--image",
        img,
        "--box",
        "20,10,140,90",
        "--box",
        "5,5,60,50",
        "--out",
        o4.to_str().unwrap(),
    ]);
    assert_eq!(code, 0, "{out}{err}");
    assert_eq!(
        json(&o4.join("result.json"))["scores"]
            .as_array()
            .unwrap()
            .len(),
        2
    );
    // Automatic masks with the fixture's settings give the reference's records.
    let o5 = d.join("auto");
    let want = json(&fixtures().join("sam/amg_wide.json"));
    let s = &want["settings"];
    let arg = |k: &str| s[k].to_string();
    let keys = [
        "points_per_side",
        "points_per_batch",
        "pred_iou_thresh",
        "stability_score_thresh",
        "box_nms_thresh",
        "crop_n_layers",
        "crop_nms_thresh",
        "crop_overlap_ratio",
        "crop_n_points_downscale_factor",
        "min_mask_region_area",
    ];
    let mut args: Vec<String> = [
        "sam",
        "auto",
        "--checkpoint",
        ck,
        "--image",
        img,
        "--out",
        o5.to_str().unwrap(),
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    for k in keys {
        args.push(format!("--{}", k.replace('_', "-")));
        args.push(arg(k));
    }
    let argv: Vec<&str> = args.iter().map(|s| s.as_str()).collect();
    let (code, out, err) = segrs(&argv);
    assert_eq!(code, 0, "{out}{err}");
    let got = json(&o5.join("masks.json"));
    let (got, want) = (got.as_array().unwrap(), want["records"].as_array().unwrap());
    assert_eq!(got.len(), want.len());
    for (g, w) in got.iter().zip(want) {
        assert_eq!(g["segmentation"], w["segmentation"]);
        assert_eq!(g["bbox"], w["bbox"]);
    }
    assert!(o5.join("overlay.png").exists());
    std::fs::remove_dir_all(&d).ok();
}

#[test]
fn sam_bad_input_is_a_clear_error() {
    let d = tmp("sam-bad");
    let ck = fixtures().join("sam/tiny_sam.pth");
    let img = fixtures().join("sam/wide.png");
    let (ck, img, out) = (
        ck.to_str().unwrap(),
        img.to_str().unwrap(),
        d.to_str().unwrap(),
    );
    let cases: &[(&[&str], &str)] = &[
        (&["--point", "400,3"], "outside"),
        (&["--point", "4,3", "--label", "2"], "label 2"),
        (
            &["--point", "4,3", "--label", "1", "--label", "0"],
            "one label per point",
        ),
        (&["--point", "4"], "expected 2"),
        (&[], "no prompt"),
        (&["--box", "50,50,10,10"], "box"),
    ];
    for (extra, want) in cases {
        let mut a = vec!["sam", "--checkpoint", ck, "--image", img, "--out", out];
        a.extend_from_slice(extra);
        let (code, o, e) = segrs(&a);
        assert_ne!(code, 0, "{extra:?} should fail");
        assert!(e.contains(want), "{extra:?}: {o}{e}");
        assert!(!e.contains("panicked"), "{e}");
    }
    // not a checkpoint; a truncated checkpoint
    let (code, _, e) = segrs(&[
        "sam",
        "--checkpoint",
        img,
        "--image",
        img,
        "--point",
        "4,3",
        "--out",
        out,
    ]);
    assert!(code != 0 && e.contains("wide.png"), "{e}");
    let bytes = std::fs::read(fixtures().join("sam/tiny_sam.pth")).unwrap();
    let cut = d.join("cut.pth");
    std::fs::write(&cut, &bytes[..bytes.len() / 2]).unwrap();
    let (code, _, e) = segrs(&[
        "sam",
        "--checkpoint",
        cut.to_str().unwrap(),
        "--image",
        img,
        "--point",
        "4,3",
        "--out",
        out,
    ]);
    assert!(
        code != 0 && e.contains("cut.pth") && !e.contains("panicked"),
        "{e}"
    );
    std::fs::remove_dir_all(&d).ok();
}

/// `--precision bf16`: on a CPU without AVX512_BF16 a note says f32 runs, and the masks are
/// f32's; with it, the masks agree with f32's on nearly every pixel. An unknown precision is
/// an error naming it.
#[test]
fn sam_precision_bf16() {
    let d = tmp("sam-bf16");
    let ck = fixtures().join("sam/tiny_sam.pth");
    let img = fixtures().join("sam/wide.png");
    let (ck, img) = (ck.to_str().unwrap(), img.to_str().unwrap());
    let run = |dir: &str, precision: &str| {
        let out = d.join(dir);
        let (code, o, e) = segrs(&[
            "sam",
            "--checkpoint",
            ck,
            "--image",
            img,
            "--point",
            "45,29",
            "--out",
            out.to_str().unwrap(),
            "--precision",
            precision,
        ]);
        (code, format!("{o}{e}"), out.join("mask_0.png"))
    };
    let (code, log, f32_mask) = run("f32", "f32");
    assert_eq!(code, 0, "{log}");
    let (code, log, bf16_mask) = run("bf16", "bf16");
    assert_eq!(code, 0, "{log}");
    let (a, b) = (
        read_mask(&f32_mask).unwrap().data,
        read_mask(&bf16_mask).unwrap().data,
    );
    if segrs::ops::bf16::has_native() {
        let same = a.iter().zip(&b).filter(|(x, y)| x == y).count();
        assert!(
            same as f64 >= 0.99 * a.len() as f64,
            "{same} of {}",
            a.len()
        );
    } else {
        assert!(log.contains("AVX512_BF16") && log.contains("f32"), "{log}");
        assert_eq!(a, b, "f32 ran");
    }
    let (code, log, _) = run("fp8", "fp8");
    assert!(
        code != 0 && log.contains("unknown precision 'fp8'"),
        "{log}"
    );
    std::fs::remove_dir_all(&d).ok();
}

//! SAM end to end against the official `segment_anything` package (tools/
//! gen_sam_predictor_fixtures.py): a reduced SAM saved as `.pth` exactly like the official
//! checkpoints, SamPredictor on two synthetic photos (a tall one whose resize runs Pillow's
//! vertical pass first, and a wide one), and SamAutomaticMaskGenerator with crops and
//! small-region removal.
//! Tolerances: image embedding and low-res logits 1e-4 relative L2; IoU predictions 1e-4
//! absolute; final masks identical on >= 99.99% of pixels; automatic records identical in
//! count, boxes and RLE.

use crate::common::{fixtures, read_fixture, rel_l2};
use segrs::models::sam::model::Sam;
use segrs::ops::Precision;
use segrs::sam::automatic::{AmgConfig, generate};
use segrs::sam::predictor::{ImageEmbedding, Prompt};

fn model() -> Sam {
    Sam::load(&fixtures().join("sam/tiny_sam.pth")).unwrap()
}

fn photo(name: &str) -> (Vec<u8>, usize, usize) {
    let p = segrs::data::image_io::read_image(&fixtures().join(format!("sam/{name}.png"))).unwrap();
    (p.to_rgb8(), p.height, p.width)
}

fn check_masks(
    name: &str,
    got: &segrs::sam::predictor::Prediction,
    io: &segrs::weights::NamedTensors,
) {
    let want_low = &io.get(&format!("{name}.low_res")).unwrap().data;
    let low: Vec<f32> = got.low_res.concat();
    let err = rel_l2(&low, want_low);
    assert!(err < 1e-4, "{name}: low-res logits relative L2 {err:e}");
    let scores = &io.get(&format!("{name}.scores")).unwrap().data;
    assert_eq!(got.scores.len(), scores.len(), "{name}: number of masks");
    for (a, b) in got.scores.iter().zip(scores) {
        assert!((a - b).abs() < 1e-4, "{name}: IoU {a} vs {b}");
    }
    let want = &io.get(&format!("{name}.masks")).unwrap().data;
    let masks: Vec<u8> = (0..got.logits.len()).flat_map(|i| got.mask(i)).collect();
    assert_eq!(masks.len(), want.len(), "{name}: mask size");
    let same = masks
        .iter()
        .zip(want)
        .filter(|(a, b)| **a as f32 == **b)
        .count();
    let frac = same as f64 / want.len() as f64;
    assert!(frac >= 0.9999, "{name}: masks agree on {frac} of pixels");
    assert!(
        want.iter().any(|&v| v > 0.0) && want.contains(&0.0),
        "{name}: degenerate fixture"
    );
}

#[test]
fn predictor_matches_segment_anything() {
    let sam = model();
    assert_eq!(sam.variant, "vit (custom)");
    assert_eq!(
        (
            sam.image_encoder.input_size(),
            sam.image_encoder.embedding_size()
        ),
        (128, 16)
    );
    let io = read_fixture("sam/predictor_io.safetensors");
    for name in ["tall", "wide"] {
        let (rgb, h, w) = photo(name);
        let e = sam.set_image(&rgb, h, w).unwrap();
        let inp = &io.get(&format!("{name}.input_size")).unwrap().data;
        assert_eq!(
            (e.input_size.0 as f32, e.input_size.1 as f32),
            (inp[0], inp[1])
        );
        let err = rel_l2(
            &e.features,
            &io.get(&format!("{name}.embedding")).unwrap().data,
        );
        assert!(err < 1e-4, "{name}: embedding relative L2 {err:e}");
        let (hf, wf) = (h as f64, w as f64);
        let f = |v: f64| v as f32 as f64; // the reference builds prompts in float64 numpy
        let point = Prompt {
            points: vec![(0.3 * wf, 0.3 * hf, 1)],
            ..Default::default()
        };
        let p = sam.predict(&e, &point, true).unwrap();
        check_masks(&format!("{name}.point"), &p, &io);
        let pb = Prompt {
            points: vec![(0.7 * wf, 0.65 * hf, 1), (0.2 * wf, 0.85 * hf, 0)],
            bbox: Some([0.4 * wf, 0.35 * hf, wf - 1.0, 0.95 * hf]),
            ..Default::default()
        };
        check_masks(
            &format!("{name}.points_box"),
            &sam.predict(&e, &pb, false).unwrap(),
            &io,
        );
        let b = Prompt {
            bbox: Some([2.5, 3.0, 0.5 * wf, 0.6 * hf]),
            ..Default::default()
        };
        check_masks(
            &format!("{name}.box"),
            &sam.predict(&e, &b, false).unwrap(),
            &io,
        );
        let best = (0..3)
            .max_by(|&a, &b| p.scores[a].total_cmp(&p.scores[b]))
            .unwrap();
        let mi = Prompt {
            points: vec![(0.3 * wf, 0.3 * hf, 1), (f(0.5 * wf), f(0.5 * hf), 1)],
            mask_input: Some(p.low_res[best].clone()),
            ..Default::default()
        };
        check_masks(
            &format!("{name}.mask_input"),
            &sam.predict(&e, &mi, true).unwrap(),
            &io,
        );
    }
}

/// bf16 dense layers and convolutions (the portable kernel where the CPU lacks AVX512_BF16)
/// against the same model in f32: the embedding and low-res logits within bf16's rounding,
/// the masks the same on nearly every pixel.
#[test]
fn bf16_masks_agree_with_f32() {
    let path = fixtures().join("sam/tiny_sam.pth");
    let f32_model = model();
    let bf16 = Sam::load_with(&path, Precision::Bf16).unwrap();
    let (rgb, h, w) = photo("wide");
    let (e32, e16) = (
        f32_model.set_image(&rgb, h, w).unwrap(),
        bf16.set_image(&rgb, h, w).unwrap(),
    );
    let err = rel_l2(&e16.features, &e32.features);
    eprintln!("bf16 embedding relative L2 {err:e}");
    assert!((1e-5..2e-2).contains(&err), "embedding relative L2 {err:e}");
    let (hf, wf) = (h as f64, w as f64);
    for prompt in [
        Prompt {
            points: vec![(0.3 * wf, 0.3 * hf, 1)],
            ..Default::default()
        },
        Prompt {
            bbox: Some([0.4 * wf, 0.35 * hf, wf - 1.0, 0.95 * hf]),
            ..Default::default()
        },
    ] {
        let (a, b) = (
            f32_model.predict(&e32, &prompt, true).unwrap(),
            bf16.predict(&e16, &prompt, true).unwrap(),
        );
        let err = rel_l2(&b.low_res.concat(), &a.low_res.concat());
        let (ma, mb): (Vec<u8>, Vec<u8>) = (
            (0..a.logits.len()).flat_map(|i| a.mask(i)).collect(),
            (0..b.logits.len()).flat_map(|i| b.mask(i)).collect(),
        );
        let agree = ma.iter().zip(&mb).filter(|(x, y)| x == y).count() as f64 / ma.len() as f64;
        eprintln!("bf16 low-res logits relative L2 {err:e}, masks agree on {agree}");
        assert!(err < 3e-2, "low-res logits relative L2 {err:e}");
        assert!(agree >= 0.99, "masks agree on {agree} of pixels");
    }
}

#[test]
fn bad_prompts_are_clear_errors() {
    let sam = model();
    let (rgb, h, w) = photo("tall");
    let e: ImageEmbedding = sam.set_image(&rgb, h, w).unwrap();
    let err = |p: Prompt| format!("{:#}", sam.predict(&e, &p, true).unwrap_err());
    assert!(err(Prompt::default()).contains("empty prompt"));
    assert!(
        err(Prompt {
            points: vec![(500.0, 3.0, 1)],
            ..Default::default()
        })
        .contains("outside")
    );
    assert!(
        err(Prompt {
            points: vec![(5.0, 3.0, 2)],
            ..Default::default()
        })
        .contains("label 2")
    );
    assert!(
        err(Prompt {
            bbox: Some([30.0, 30.0, 10.0, 10.0]),
            ..Default::default()
        })
        .contains("box")
    );
    assert!(
        err(Prompt {
            mask_input: Some(vec![0.0; 10]),
            ..Default::default()
        })
        .contains("mask")
    );
    // a U-Net checkpoint is not a SAM checkpoint
    let unet = fixtures().join("unet");
    if let Some(f) = std::fs::read_dir(&unet)
        .unwrap()
        .flatten()
        .map(|e| e.path())
        .find(|p| p.extension().is_some_and(|x| x == "pth"))
    {
        let msg = format!("{:#}", Sam::load(&f).err().unwrap());
        assert!(
            msg.contains("neither a SAM nor a SAM 2 checkpoint"),
            "{msg}"
        );
    }
}

#[test]
fn automatic_masks_match_segment_anything() {
    let sam = model();
    let (rgb, h, w) = photo("wide");
    let text = std::fs::read_to_string(fixtures().join("sam/amg_wide.json")).unwrap();
    let v: serde_json::Value = serde_json::from_str(&text).unwrap();
    let s = &v["settings"];
    let g = |k: &str| s[k].as_f64().unwrap();
    let cfg = AmgConfig {
        points_per_side: g("points_per_side") as usize,
        points_per_batch: g("points_per_batch") as usize,
        pred_iou_thresh: g("pred_iou_thresh") as f32,
        stability_score_thresh: g("stability_score_thresh") as f32,
        stability_score_offset: g("stability_score_offset") as f32,
        box_nms_thresh: g("box_nms_thresh") as f32,
        crop_n_layers: g("crop_n_layers") as usize,
        crop_nms_thresh: g("crop_nms_thresh") as f32,
        crop_overlap_ratio: g("crop_overlap_ratio"),
        crop_n_points_downscale_factor: g("crop_n_points_downscale_factor") as usize,
        min_mask_region_area: g("min_mask_region_area") as usize,
        ..AmgConfig::default()
    };
    let sam = segrs::sam::any_model::AnySam::Sam(sam);
    let recs = generate(&sam, &rgb, h, w, &cfg, &|_, _| {}).unwrap();
    let want = v["records"].as_array().unwrap();
    assert!(want.len() >= 5, "fixture has too few records");
    assert_eq!(recs.len(), want.len(), "number of records");
    for (i, (r, wv)) in recs.iter().zip(want).enumerate() {
        let j = r.to_json();
        assert_eq!(j["bbox"], wv["bbox"], "record {i} bbox");
        assert_eq!(j["segmentation"], wv["segmentation"], "record {i} RLE");
        assert_eq!(j["area"], wv["area"], "record {i} area");
        // the reference's crop boxes come out as floats or ints depending on the crops
        let nums = |v: &serde_json::Value| -> Vec<f64> {
            v.as_array()
                .unwrap()
                .iter()
                .map(|x| x.as_f64().unwrap())
                .collect()
        };
        assert_eq!(
            nums(&j["crop_box"]),
            nums(&wv["crop_box"]),
            "record {i} crop box"
        );
        let close = |k: &str, tol: f64| {
            let (a, b) = (j[k].as_f64().unwrap(), wv[k].as_f64().unwrap());
            assert!((a - b).abs() <= tol, "record {i} {k}: {a} vs {b}");
        };
        close("predicted_iou", 1e-4);
        close("stability_score", 1e-6);
        for k in 0..2 {
            let (a, b) = (
                j["point_coords"][0][k].as_f64().unwrap(),
                wv["point_coords"][0][k].as_f64().unwrap(),
            );
            assert!((a - b).abs() < 1e-9, "record {i} point");
        }
    }
}

#[test]
fn jpeg_decoding_matches_pillow() {
    let io = read_fixture("sam/predictor_io.safetensors");
    let want = &io.get("wide_jpg.pixels").unwrap().data;
    let p = segrs::data::image_io::read_image(&fixtures().join("sam/wide.jpg")).unwrap();
    let got = p.to_rgb8();
    assert_eq!(got.len(), want.len());
    let diff = got
        .iter()
        .zip(want)
        .filter(|(a, b)| **a as f32 != **b)
        .count();
    assert_eq!(diff, 0, "JPEG pixels differing from Pillow's decoding");
    // a truncated JPEG is an error naming the file, not a grey-filled picture
    let d = crate::common::tmp("jpeg-cut");
    let bytes = std::fs::read(fixtures().join("sam/wide.jpg")).unwrap();
    let cut = d.join("cut.jpg");
    std::fs::write(&cut, &bytes[..bytes.len() * 2 / 3]).unwrap();
    let e = format!("{:#}", segrs::data::image_io::read_image(&cut).unwrap_err());
    assert!(e.contains("cut.jpg") && e.contains("truncated"), "{e}");
    std::fs::write(&cut, &bytes[..40]).unwrap();
    assert!(segrs::data::image_io::read_image(&cut).is_err());
    std::fs::remove_dir_all(&d).ok();
}

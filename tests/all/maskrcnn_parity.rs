//! Mask R-CNN against torchvision's `maskrcnn_resnet50_fpn` (v1) and `_v2`
//! (tools/gen_maskrcnn_fixtures.py): full-size networks whose weights both sides make from the
//! same hash, on two real photos. Bar: the same number of proposals (the first 60 within
//! 1e-2 px), the same detections in the same order, boxes within 1e-2 px, scores within 1e-4,
//! each pasted mask identical on >= 99.9% of pixels.

use crate::common::{fixtures, hashed_weights};
use segrs::data::image_io::read_image;
use segrs::models::mask_rcnn::{MaskRcnn, MaskRcnnConfig, Variant};
use segrs::ops::Precision;
use segrs::weights::NamedTensors;

fn json(rel: &str) -> serde_json::Value {
    serde_json::from_str(&std::fs::read_to_string(fixtures().join(rel)).unwrap()).unwrap()
}

fn boxes(v: &serde_json::Value) -> Vec<[f32; 4]> {
    v.as_array()
        .unwrap()
        .iter()
        .map(|b| std::array::from_fn(|i| b[i].as_f64().unwrap() as f32))
        .collect()
}

fn check(variant: &str, want_variant: Variant) {
    let expected = json("maskrcnn/expected.json");
    let named: NamedTensors = hashed_weights(
        &json(&format!("maskrcnn/keys_{variant}.json")),
        "",
        &format!("hashed {variant} weights"),
    );
    let model = MaskRcnn::from_tensors(named).unwrap();
    assert_eq!(model.variant, want_variant);
    assert_eq!(model.num_classes, 91);
    let mut cfg = MaskRcnnConfig::default();
    cfg.transform.min_size = expected["min_size"].as_u64().unwrap() as usize;
    cfg.transform.max_size = expected["max_size"].as_u64().unwrap() as usize;
    cfg.boxes.detections_per_img = expected["detections"].as_u64().unwrap() as usize;
    for (name, want) in expected[variant].as_object().unwrap() {
        let pic = read_image(&fixtures().join(format!("maskrcnn/{name}.jpg"))).unwrap();
        let got = model
            .predict(&pic.to_rgb8(), pic.height, pic.width, &cfg)
            .unwrap();
        let tag = format!("{variant} {name}");
        assert_eq!(
            got.proposals.len() as u64,
            want["num_proposals"].as_u64().unwrap(),
            "{tag}: proposals"
        );
        for (i, (g, w)) in got
            .proposals
            .iter()
            .zip(boxes(&want["proposals"]))
            .enumerate()
        {
            let d = (0..4).map(|k| (g[k] - w[k]).abs()).fold(0.0, f32::max);
            assert!(d < 1e-2, "{tag}: proposal {i} {g:?} vs {w:?}");
        }
        let wl: Vec<usize> = want["labels"]
            .as_array()
            .unwrap()
            .iter()
            .map(|v| v.as_u64().unwrap() as usize)
            .collect();
        assert_eq!(got.labels, wl, "{tag}: labels");
        for (i, (g, w)) in got.boxes.iter().zip(boxes(&want["boxes"])).enumerate() {
            let d = (0..4).map(|k| (g[k] - w[k]).abs()).fold(0.0, f32::max);
            assert!(d < 1e-2, "{tag}: box {i} {g:?} vs {w:?}");
        }
        for (i, (g, w)) in got
            .scores
            .iter()
            .zip(want["scores"].as_array().unwrap())
            .enumerate()
        {
            let w = w.as_f64().unwrap() as f32;
            assert!((g - w).abs() < 1e-4, "{tag}: score {i} {g} vs {w}");
        }
        for (i, m) in want["masks"].as_array().unwrap().iter().enumerate() {
            let (h, w) = (
                m["size"][0].as_u64().unwrap() as u32,
                m["size"][1].as_u64().unwrap() as u32,
            );
            assert_eq!((h as usize, w as usize), (got.height, got.width));
            let rle = hotcoco::mask::rle_from_string(m["counts"].as_str().unwrap(), h, w).unwrap();
            let want_mask = segrs::formats::coco::decode_rowmajor(&rle);
            let mine = got.mask(i);
            let same = mine.iter().zip(&want_mask).filter(|(a, b)| a == b).count();
            assert!(
                same as f64 >= 0.999 * mine.len() as f64,
                "{tag}: mask {i} agrees on {same} of {} pixels",
                mine.len()
            );
        }
    }
}

#[test]
fn v1_matches_torchvision() {
    check("v1", Variant::V1);
}

#[test]
fn v2_matches_torchvision() {
    check("v2", Variant::V2);
}

#[test]
fn legacy_keys_load_and_wrong_files_are_named() {
    // The v1 weights under the official file's pre-0.13 key names load to the same model.
    let mut named = hashed_weights(&json("maskrcnn/keys_v1.json"), "", "legacy v1");
    let legacy: Vec<(String, String)> = named
        .tensors
        .keys()
        .filter_map(|k| {
            let old = if let Some(r) = k.strip_prefix("roi_heads.mask_head.") {
                let (i, tail) = r.split_once(".0.")?;
                format!(
                    "roi_heads.mask_head.mask_fcn{}.{tail}",
                    i.parse::<usize>().ok()? + 1
                )
            } else if let Some((head, r)) = k.split_once("_blocks.") {
                let (i, tail) = r.split_once(".0.")?;
                format!("{head}_blocks.{i}.{tail}")
            } else if let Some(tail) = k.strip_prefix("rpn.head.conv.0.0.") {
                format!("rpn.head.conv.{tail}")
            } else {
                return None;
            };
            Some((k.clone(), old))
        })
        .collect();
    assert_eq!(legacy.len(), 8 + 8 + 2 + 8, "renamed keys");
    for (new, old) in &legacy {
        let t = named.tensors.remove(new).unwrap();
        named.insert(old.clone(), t);
    }
    assert!(named.get("rpn.head.conv.weight").is_some());
    assert!(named.get("backbone.fpn.inner_blocks.0.weight").is_some());
    assert_eq!(MaskRcnn::from_tensors(named).unwrap().variant, Variant::V1);

    // A SAM checkpoint is not a Mask R-CNN; a missing tensor is named.
    let sam = MaskRcnn::load(&fixtures().join("sam/tiny_sam.pth"))
        .err()
        .unwrap();
    assert!(
        format!("{sam:#}").contains("not a torchvision Mask R-CNN"),
        "{sam:#}"
    );
    let mut named = hashed_weights(&json("maskrcnn/keys_v1.json"), "", "cut.pth");
    named.tensors.remove("roi_heads.box_head.fc7.weight");
    let msg = format!("{:#}", MaskRcnn::from_tensors(named).err().unwrap());
    assert!(
        msg.contains("cut.pth") && msg.contains("roi_heads.box_head.fc7.weight"),
        "{msg}"
    );
    // A fine-tuned RPN with another anchor generator (5 anchors per position) is refused by name.
    let mut named = hashed_weights(&json("maskrcnn/keys_v1.json"), "", "anchors.pth");
    let zeros = |shape: Vec<usize>| {
        let n = shape.iter().product();
        segrs::weights::HostTensor::new(shape, vec![0.0; n])
    };
    named.insert("rpn.head.cls_logits.weight", zeros(vec![5, 256, 1, 1]));
    named.insert("rpn.head.cls_logits.bias", zeros(vec![5]));
    named.insert("rpn.head.bbox_pred.weight", zeros(vec![20, 256, 1, 1]));
    named.insert("rpn.head.bbox_pred.bias", zeros(vec![20]));
    let msg = format!("{:#}", MaskRcnn::from_tensors(named).err().unwrap());
    assert!(
        msg.contains("anchors.pth") && msg.contains("5 anchors per position"),
        "{msg}"
    );
}

/// Box IoU of two `[x1, y1, x2, y2]` boxes.
fn box_iou(a: &[f32; 4], b: &[f32; 4]) -> f32 {
    let iw = (a[2].min(b[2]) - a[0].max(b[0])).max(0.0);
    let ih = (a[3].min(b[3]) - a[1].max(b[1])).max(0.0);
    let area = |r: &[f32; 4]| (r[2] - r[0]) * (r[3] - r[1]);
    let i = iw * ih;
    i / (area(a) + area(b) - i).max(f32::MIN_POSITIVE)
}

/// Mask R-CNN in bf16 (products on bf16 operands with f32 sums; the portable kernel where the
/// CPU lacks AVX512_BF16) against the same hashed network in f32 on one photo each. Bars: every
/// FPN level within 2e-2 relative L2; >= 90% of the f32 detections have a bf16 detection of the
/// same class at box IoU >= 0.5; where the boxes agree closely (IoU >= 0.9) the pasted masks
/// agree on >= 99% of pixels on average. (Random weights give many near-tied, overlapping
/// detections, so which of two neighbours survives NMS can flip; trained weights do not.)
#[test]
fn bf16_detections_agree_with_f32() {
    let expected = json("maskrcnn/expected.json");
    let mut cfg = MaskRcnnConfig::default();
    cfg.transform.min_size = expected["min_size"].as_u64().unwrap() as usize;
    cfg.transform.max_size = expected["max_size"].as_u64().unwrap() as usize;
    cfg.boxes.detections_per_img = expected["detections"].as_u64().unwrap() as usize;
    for (variant, name) in [("v1", "coco"), ("v2", "dog")] {
        let named = || hashed_weights(&json(&format!("maskrcnn/keys_{variant}.json")), "", "w");
        let full = MaskRcnn::from_tensors(named()).unwrap();
        let half = MaskRcnn::from_tensors_with(named(), Precision::Bf16).unwrap();
        {
            let tag = format!("{variant} {name}");
            let pic = read_image(&fixtures().join(format!("maskrcnn/{name}.jpg"))).unwrap();
            let input = cfg.transform.apply(&pic.to_rgb8(), pic.height, pic.width);
            for (fa, fb) in full.features(&input).iter().zip(half.features(&input)) {
                let e = rel_l2(&fb.data, &fa.data);
                assert!(
                    e < 2e-2,
                    "{tag}: level {}x{} relative L2 {e:.2e}",
                    fa.h,
                    fa.w
                );
            }
            let rgb = pic.to_rgb8();
            let a = full.predict(&rgb, pic.height, pic.width, &cfg).unwrap();
            let b = half.predict(&rgb, pic.height, pic.width, &cfg).unwrap();
            assert!(!a.boxes.is_empty());
            let (mut matched, mut close, mut agree) = (0, 0, 0.0);
            for i in 0..a.boxes.len() {
                let Some((iou, j)) = (0..b.boxes.len())
                    .filter(|&j| b.labels[j] == a.labels[i])
                    .map(|j| (box_iou(&a.boxes[i], &b.boxes[j]), j))
                    .max_by(|x, y| x.0.total_cmp(&y.0))
                else {
                    continue;
                };
                matched += (iou >= 0.5) as usize;
                if iou >= 0.9 {
                    let (ma, mb) = (a.mask(i), b.mask(j));
                    let same = ma.iter().zip(&mb).filter(|(x, y)| x == y).count();
                    agree += same as f64 / ma.len() as f64;
                    close += 1;
                }
            }
            let n = a.boxes.len();
            assert!(
                matched * 10 >= n * 9,
                "{tag}: {matched} of {n} detections matched"
            );
            assert!(close > 0, "{tag}: no close boxes");
            let agree = agree / close as f64;
            eprintln!("{tag} bf16: {matched}/{n} matched, {close} close, masks {agree:.4}");
            assert!(agree >= 0.99, "{tag}: masks agree on {agree:.4} on average");
        }
    }
}

fn rel_l2(a: &[f32], b: &[f32]) -> f64 {
    let num: f64 = a.iter().zip(b).map(|(x, y)| ((x - y) as f64).powi(2)).sum();
    let den: f64 = b.iter().map(|x| (*x as f64).powi(2)).sum();
    (num / den).sqrt()
}

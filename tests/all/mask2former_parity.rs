//! Mask2Former against `transformers`' `Mask2FormerForUniversalSegmentation`
//! (tools/gen_mask2former_fixtures.py): a reduced Swin model saved with `save_pretrained`, run on
//! two COCO photos. Bar: every stage's maps and the class and mask logits within 1e-4 relative
//! L2; panoptic and semantic maps identical on >= 99.9% of pixels, the same segments with the
//! same labels and scores within 1e-4; the same instances, their masks identical on >= 99.9%.
//! Multi-scale deformable attention is checked alone (1e-5).

use crate::common::{fixtures, read_fixture, rel_l2, shared_data};
use segrs::data::image_io::read_image;
use segrs::models::mask2former::postprocess::{instances, panoptic, semantic};
use segrs::models::mask2former::{Mask2Former, PostprocessConfig, Predictions};
use segrs::ops::deform_attn::{DeformLayout, multi_scale_deformable_attention};
use serde_json::Value;

fn meta() -> Value {
    let text = std::fs::read_to_string(fixtures().join("mask2former/reference.json")).unwrap();
    serde_json::from_str(&text).unwrap()
}

/// A run-length list `[value, count, ...]` back to the flat map.
fn unruns(v: &Value) -> Vec<i64> {
    let a: Vec<i64> = v
        .as_array()
        .unwrap()
        .iter()
        .map(|x| x.as_i64().unwrap())
        .collect();
    let mut out = Vec::new();
    for pair in a.chunks(2) {
        out.extend(std::iter::repeat_n(pair[0], pair[1] as usize));
    }
    out
}

fn agreement(a: &[i64], b: &[i64]) -> f64 {
    assert_eq!(a.len(), b.len());
    a.iter().zip(b).filter(|(x, y)| x == y).count() as f64 / a.len() as f64
}

fn model() -> Mask2Former {
    Mask2Former::load(&fixtures().join("mask2former/model")).unwrap()
}

#[test]
fn deformable_attention_matches_reference() {
    let t = read_fixture("mask2former/msda.safetensors");
    let shapes: Vec<(usize, usize)> =
        serde_json::from_str::<Vec<[usize; 2]>>(&t.metadata["shapes"])
            .unwrap()
            .into_iter()
            .map(|[h, w]| (h, w))
            .collect();
    let value = &t.tensors["value"];
    let (heads, d) = (value.shape[1], value.shape[2]);
    let points = t.tensors["weights"].shape[3];
    let got = multi_scale_deformable_attention(
        &value.data,
        DeformLayout {
            shapes: &shapes,
            heads,
            head_dim: d,
            points,
        },
        &t.tensors["locations"].data,
        &t.tensors["weights"].data,
    );
    let err = rel_l2(&got, &t.tensors["out"].data);
    assert!(err < 1e-5, "deformable attention rel L2 {err}");
}

fn check_segments(got: &[segrs::models::mask2former::Segment], want: &Value, what: &str) {
    let want = want.as_array().unwrap();
    assert_eq!(
        got.len(),
        want.len(),
        "{what}: segment count {got:?} vs {want:?}"
    );
    for (g, w) in got.iter().zip(want) {
        assert_eq!(
            g.label_id as i64,
            w["label_id"].as_i64().unwrap(),
            "{what}: labels"
        );
        assert_eq!(
            g.was_fused,
            w["was_fused"].as_bool().unwrap(),
            "{what}: fused"
        );
        let ws = w["score"].as_f64().unwrap();
        assert!(
            (g.score as f64 - ws).abs() < 1e-4,
            "{what}: score {} vs {ws}",
            g.score
        );
    }
}

/// The three outputs from `pred` against the reference's, for photo `p`.
fn check_outputs(pred: &Predictions, p: &Value, fuse: &[usize], what: &str) {
    let size = (
        p["size"][0].as_u64().unwrap() as usize,
        p["size"][1].as_u64().unwrap() as usize,
    );
    let cfg = PostprocessConfig {
        label_ids_to_fuse: fuse.to_vec(),
        ..Default::default()
    };
    let pan = panoptic(pred, size, &cfg);
    let ids: Vec<i64> = pan.ids.iter().map(|&v| v as i64).collect();
    let a = agreement(&ids, &unruns(&p["panoptic_map"]));
    eprintln!(
        "{what}: panoptic agreement {a}, {} segments",
        pan.segments.len()
    );
    assert!(a >= 0.999, "{what}: panoptic map agreement {a}");
    check_segments(&pan.segments, &p["panoptic"], &format!("{what} panoptic"));

    let sem: Vec<i64> = semantic(pred, size).iter().map(|&v| v as i64).collect();
    let a = agreement(&sem, &unruns(&p["semantic_map"]));
    assert!(a >= 0.999, "{what}: semantic map agreement {a}");

    // Instances: the reference's order is unspecified; match by (label, score).
    let inst = instances(pred, size, &cfg);
    let want = p["instance"].as_array().unwrap();
    let masks = p["instance_masks"].as_array().unwrap();
    assert_eq!(inst.segments.len(), want.len(), "{what}: instance count");
    let mut used = vec![false; want.len()];
    for (g, gm) in inst.segments.iter().zip(&inst.masks) {
        let j = (0..want.len())
            .filter(|&j| !used[j] && want[j]["label_id"].as_u64().unwrap() as usize == g.label_id)
            .min_by(|&a, &b| {
                let d = |j: usize| (want[j]["score"].as_f64().unwrap() - g.score as f64).abs();
                d(a).total_cmp(&d(b))
            })
            .unwrap_or_else(|| panic!("{what}: no reference instance of label {}", g.label_id));
        used[j] = true;
        let ws = want[j]["score"].as_f64().unwrap();
        assert!(
            (g.score as f64 - ws).abs() < 1e-4,
            "{what}: instance score {} vs {ws}",
            g.score
        );
        let gm: Vec<i64> = gm.iter().map(|&v| v as i64).collect();
        let a = agreement(&gm, &unruns(&masks[j]));
        assert!(a >= 0.999, "{what}: instance mask agreement {a}");
    }
}

#[test]
fn mask2former_matches_transformers() {
    let m = model();
    let t = read_fixture("mask2former/reference.safetensors");
    let meta = meta();
    let fuse: Vec<usize> = meta["label_ids_to_fuse"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_u64().unwrap() as usize)
        .collect();
    for p in meta["photos"].as_array().unwrap() {
        let name = p["name"].as_str().unwrap();
        let get = |k: &str| &t.tensors[&format!("{name}.{k}")];
        let px = get("pixel_values");
        let size = (px.shape[1], px.shape[2]);
        let feats = m.backbone_features(&px.data, size);
        for (i, f) in feats.iter().enumerate() {
            let err = rel_l2(&f.data, &get(&format!("backbone.{i}")).data);
            assert!(err < 1e-4, "{name}: backbone stage {} rel L2 {err}", i + 1);
        }
        let dec = m.pixel_decoder_outputs(&px.data, size);
        for (i, f) in dec.multi_scale.iter().enumerate() {
            let err = rel_l2(&f.data, &get(&format!("pixel_decoder.{i}")).data);
            assert!(err < 1e-4, "{name}: pixel decoder level {i} rel L2 {err}");
        }
        let err = rel_l2(&dec.mask_features.data, &get("mask_features").data);
        assert!(err < 1e-4, "{name}: mask features rel L2 {err}");

        let pred = m.forward(&px.data, size);
        let err = rel_l2(&pred.class_logits, &get("class_logits").data);
        assert!(err < 1e-4, "{name}: class logits rel L2 {err}");
        let err_c = err;
        let err = rel_l2(&pred.mask_logits, &get("mask_logits").data);
        eprintln!("{name}: class logits rel L2 {err_c:.2e}, mask logits {err:.2e}");
        assert!(err < 1e-4, "{name}: mask logits rel L2 {err}");

        // Post-processing alone, on the reference's logits, then end to end on ours.
        let theirs = Predictions {
            class_logits: get("class_logits").data.clone(),
            mask_logits: get("mask_logits").data.clone(),
            ..pred.clone()
        };
        check_outputs(&theirs, p, &fuse, &format!("{name} (reference logits)"));
        check_outputs(&pred, p, &fuse, name);
    }
}

/// The image processor's resize and normalisation on the real photos: Pillow's bilinear
/// against torchvision's antialiased uint8 resize (the same filter; a level apart at most on a
/// few pixels).
#[test]
fn preprocessing_matches_image_processor() {
    let Some(dir) = shared_data("coco_panoptic_sample") else {
        return;
    };
    let m = model();
    let t = read_fixture("mask2former/reference.safetensors");
    for p in meta()["photos"].as_array().unwrap() {
        let name = p["name"].as_str().unwrap();
        let pic = read_image(&dir.join(format!("sample_data/input_images/{name}.jpg"))).unwrap();
        let (x, size) = m.input(&pic.to_rgb8(), pic.height, pic.width);
        let want = &t.tensors[&format!("{name}.pixel_values")];
        assert_eq!([3, size.0, size.1], want.shape[..], "{name}: input size");
        // one level of the channel with the smallest deviation
        let step = 1.0 / (255.0 * 0.224);
        let off = x
            .iter()
            .zip(&want.data)
            .filter(|(a, b)| (*a - *b).abs() > 1e-4)
            .count();
        let worst = x
            .iter()
            .zip(&want.data)
            .map(|(a, b)| (a - b).abs())
            .fold(0.0f32, f32::max);
        eprintln!("{name}: {off} of {} values differ, worst {worst}", x.len());
        assert!(worst <= 1.001 * step, "{name}: worst difference {worst}");
        assert!(
            (off as f64) < 0.01 * x.len() as f64,
            "{name}: {off} values differ"
        );
    }
}

/// The same weights split into shards with an index (as `save_pretrained` writes large models),
/// under the backbone names `transformers` 5 uses in memory (`q_proj`, `mlp.fc1`,
/// `swin.encoder`): the same network.
#[test]
fn sharded_and_renamed_checkpoints_load_the_same_network() {
    use segrs::weights::safetensors;
    use std::collections::BTreeMap;
    let src = fixtures().join("mask2former/model");
    let named = safetensors::read(&src.join("model.safetensors")).unwrap();
    let dir = crate::common::tmp("m2f-sharded");
    std::fs::copy(src.join("config.json"), dir.join("config.json")).unwrap();
    std::fs::copy(
        src.join("preprocessor_config.json"),
        dir.join("preprocessor_config.json"),
    )
    .unwrap();
    let rename = |k: &str| {
        k.replace("encoder.encoder.", "encoder.swin.encoder.")
            .replace("attention.self.query", "attention.q_proj")
            .replace("attention.self.key", "attention.k_proj")
            .replace("attention.self.value", "attention.v_proj")
            .replace(
                "attention.self.relative_position_bias_table",
                "attention.relative_position_bias.relative_position_bias_table",
            )
            .replace("attention.output.dense", "attention.o_proj")
            .replace("intermediate.dense", "mlp.fc1")
            .replace("blocks.0.output.dense", "blocks.0.mlp.fc2")
            .replace("blocks.1.output.dense", "blocks.1.mlp.fc2")
    };
    let mut shards: [BTreeMap<String, segrs::weights::HostTensor>; 2] = Default::default();
    let mut map = serde_json::Map::new();
    for (i, (k, t)) in named.tensors.iter().enumerate() {
        let k = rename(k);
        let file = format!("model-0000{}-of-00002.safetensors", i % 2 + 1);
        map.insert(k.clone(), Value::from(file));
        shards[i % 2].insert(k, t.clone());
    }
    for (i, s) in shards.iter().enumerate() {
        let p = dir.join(format!("model-0000{}-of-00002.safetensors", i + 1));
        safetensors::write(&p, s, &BTreeMap::new()).unwrap();
    }
    std::fs::write(
        dir.join("model.safetensors.index.json"),
        serde_json::json!({"metadata": {}, "weight_map": map}).to_string(),
    )
    .unwrap();
    let a = model();
    let b = Mask2Former::load(&dir).unwrap();
    let t = read_fixture("mask2former/reference.safetensors");
    let px = &t.tensors["000000142238.pixel_values"];
    let size = (px.shape[1], px.shape[2]);
    let (pa, pb) = (a.forward(&px.data, size), b.forward(&px.data, size));
    assert_eq!(pa.class_logits, pb.class_logits);
    assert_eq!(pa.mask_logits, pb.mask_logits);
    // A shard the index names but that is missing.
    std::fs::remove_file(dir.join("model-00002-of-00002.safetensors")).unwrap();
    let err = Mask2Former::load(&dir).err().expect("missing shard");
    assert!(format!("{err:#}").contains("which is missing"), "{err:#}");
}

/// The same heads on a bottleneck ResNet backbone (`ResNetConfig`, keys renamed to
/// torchvision's for the shared ResNet body, BatchNorm folded), read from `pytorch_model.bin`:
/// feature maps and logits within 1e-4 relative L2.
#[test]
fn resnet_backbone_matches_transformers() {
    let m = Mask2Former::load(&fixtures().join("mask2former/resnet")).unwrap();
    let t = read_fixture("mask2former/resnet_reference.safetensors");
    let px = &t.tensors["pixel_values"];
    let size = (px.shape[1], px.shape[2]);
    for (i, f) in m.backbone_features(&px.data, size).iter().enumerate() {
        let err = rel_l2(&f.data, &t.tensors[&format!("backbone.{i}")].data);
        assert!(err < 1e-4, "ResNet stage {} rel L2 {err}", i + 1);
    }
    let pred = m.forward(&px.data, size);
    let err = rel_l2(&pred.class_logits, &t.tensors["class_logits"].data);
    assert!(err < 1e-4, "class logits rel L2 {err}");
    let err = rel_l2(&pred.mask_logits, &t.tensors["mask_logits"].data);
    assert!(err < 1e-4, "mask logits rel L2 {err}");
}

/// The backbone and pixel decoder in bf16 (products on bf16 operands with f32 sums; the
/// portable kernel where the CPU lacks AVX512_BF16: Swin's windowed attention with its
/// relative-position bias and shift mask, the deformable encoder's projections, the FPN
/// convolutions) against the reference on both photos: every stage's maps within 1e-2
/// relative L2. The query decoder stays f32 (see `Mask2Former::load_with`); on these random
/// weights its thresholded attention masks amplify any input change some 30-80 fold (f32 on
/// pixels perturbed by 0.2% moves the class logits 1.2e-2), so end-to-end agreement is no test
/// of the arithmetic here.
#[test]
fn bf16_stages_agree_with_the_reference() {
    let m = Mask2Former::load_with(
        &fixtures().join("mask2former/model"),
        segrs::ops::Precision::Bf16,
    )
    .unwrap();
    let t = read_fixture("mask2former/reference.safetensors");
    for p in meta()["photos"].as_array().unwrap() {
        let name = p["name"].as_str().unwrap();
        let get = |k: &str| &t.tensors[&format!("{name}.{k}")];
        let px = get("pixel_values");
        let size = (px.shape[1], px.shape[2]);
        let mut errs = Vec::new();
        for (i, f) in m.backbone_features(&px.data, size).iter().enumerate() {
            errs.push((
                format!("backbone stage {}", i + 1),
                rel_l2(&f.data, &get(&format!("backbone.{i}")).data),
            ));
        }
        let dec = m.pixel_decoder_outputs(&px.data, size);
        for (i, f) in dec.multi_scale.iter().enumerate() {
            errs.push((
                format!("pixel decoder level {i}"),
                rel_l2(&f.data, &get(&format!("pixel_decoder.{i}")).data),
            ));
        }
        errs.push((
            "mask features".into(),
            rel_l2(&dec.mask_features.data, &get("mask_features").data),
        ));
        for (what, e) in errs {
            eprintln!("{name} bf16 {what}: rel L2 {e:.2e}");
            assert!(e < 1e-2, "{name}: {what} rel L2 {e}");
            assert!(
                e > 1e-4,
                "{name}: {what} within f32 tolerance: not computed in bf16"
            );
        }
    }
}

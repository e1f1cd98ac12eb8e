//! MobileSAM's TinyViT against the official `mobile_sam` code (tools/gen_tinyvit_fixtures.py):
//! weights and input come from a counter-based hash reproduced here bit for bit; a strided
//! sample of the `[256, 64, 64]` embedding must match within 1e-4 relative L2. And the official
//! key layouts of sam_vit_b and mobile_sam.pt load as `vit_b` / `vit_t` with no key missing.

use crate::common::{fixtures, hashed_weights, read_fixture, rel_l2, uniform};
use segrs::models::sam::model::{Encoder, Sam};
use segrs::models::sam::tiny_vit::TinyViT;
use segrs::nn::Weights;
use segrs::weights::{HostTensor, NamedTensors};

#[test]
fn tiny_vit_matches_mobile_sam() {
    let spec: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(fixtures().join("sam/tinyvit_keys.json")).unwrap(),
    )
    .unwrap();
    let mut w = hashed_weights(&spec["keys"], "image_encoder.", "tinyvit fixture");
    let enc = TinyViT::load(&Weights::new(&w).pp("image_encoder")).unwrap();
    assert_eq!(enc.embedding_size(), 64);
    let x: Vec<f32> = uniform(spec["input"]["seed"].as_u64().unwrap(), 3 * 1024 * 1024)
        .into_iter()
        .map(|u| u * 2.0)
        .collect();
    let y = enc.forward(&x).unwrap();
    let stride = spec["sample_stride"].as_u64().unwrap() as usize;
    let sample: Vec<f32> = y.iter().step_by(stride).copied().collect();
    let io = read_fixture("sam/tinyvit_io.safetensors");
    let err = rel_l2(&sample, &io.get("embedding_sample").unwrap().data);
    assert!(err < 1e-4, "TinyViT embedding relative L2 {err:e}");
    // a missing key is named
    w.tensors
        .remove("image_encoder.layers.2.blocks.0.attn.qkv.weight");
    let msg = format!(
        "{:#}",
        TinyViT::load(&Weights::new(&w).pp("image_encoder"))
            .err()
            .unwrap()
    );
    assert!(msg.contains("layers.2.blocks.0.attn.qkv.weight"), "{msg}");
}

fn zeros_with_keys(name: &str) -> NamedTensors {
    let all: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(fixtures().join("sam/official_keys.json")).unwrap(),
    )
    .unwrap();
    let mut w = NamedTensors {
        source: format!("{name} key layout"),
        ..Default::default()
    };
    for kv in all[name].as_array().unwrap() {
        let shape: Vec<usize> = kv[1]
            .as_array()
            .unwrap()
            .iter()
            .map(|v| v.as_u64().unwrap() as usize)
            .collect();
        let n = shape.iter().product();
        // positive values keep BatchNorm variances valid
        w.insert(
            kv[0].as_str().unwrap(),
            HostTensor::new(shape, vec![0.5; n]),
        );
    }
    w
}

#[test]
fn official_key_layouts_are_detected() {
    let sam = Sam::from_tensors(&zeros_with_keys("vit_b")).unwrap();
    assert_eq!(sam.variant, "vit_b");
    let Encoder::Vit(e) = &sam.image_encoder else {
        panic!("vit_b is a ViT")
    };
    assert_eq!(
        (e.dim, e.heads, e.window(), e.grid, e.patch),
        (768, 12, 14, 64, 16)
    );
    assert_eq!(e.global_blocks(), vec![2, 5, 8, 11]);
    assert_eq!(
        (
            sam.image_encoder.input_size(),
            sam.image_encoder.embedding_size()
        ),
        (1024, 64)
    );
    let sam = Sam::from_tensors(&zeros_with_keys("vit_t")).unwrap();
    assert_eq!(sam.variant, "vit_t");
    assert_eq!(
        (
            sam.image_encoder.input_size(),
            sam.image_encoder.embedding_size()
        ),
        (1024, 64)
    );
    // a truncated vit_b: every missing key is reported by name
    let mut w = zeros_with_keys("vit_b");
    w.tensors.remove("image_encoder.blocks.7.mlp.lin2.weight");
    w.tensors.remove("image_encoder.blocks.11.attn.qkv.weight");
    w.tensors
        .remove("mask_decoder.output_hypernetworks_mlps.3.layers.2.bias");
    let msg = format!("{:#}", Sam::from_tensors(&w).err().unwrap());
    assert!(
        msg.contains("blocks.7.mlp.lin2.weight") && msg.contains("blocks.11.attn.qkv.weight"),
        "{msg}"
    );
    let mut w = zeros_with_keys("vit_b");
    w.tensors
        .remove("mask_decoder.output_hypernetworks_mlps.3.layers.2.bias");
    let msg = format!("{:#}", Sam::from_tensors(&w).err().unwrap());
    assert!(
        msg.contains("output_hypernetworks_mlps.3.layers.2.bias"),
        "{msg}"
    );
}

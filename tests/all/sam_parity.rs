//! SAM prompt encoder against the official `segment_anything` package on random weights
//! (tools/gen_sam_fixtures.py): sparse and dense embeddings and the dense positional encoding
//! within 1e-5 relative L2 error.

use crate::common::{read_fixture, rel_l2};
use segrs::models::sam::prompt_encoder::{PointPrompt, PromptEncoder};
use segrs::nn::Weights;

const TOL: f64 = 1e-5;

fn setup() -> (PromptEncoder, segrs::weights::NamedTensors) {
    let w = read_fixture("sam/prompt_encoder.safetensors");
    let pe = PromptEncoder::load(&Weights::new(&w).pp("prompt_encoder"), (8, 8), (64, 64)).unwrap();
    (pe, read_fixture("sam/prompt_encoder_io.safetensors"))
}

fn points(io: &segrs::weights::NamedTensors, n: usize) -> Vec<PointPrompt> {
    let p = &io.get("points").unwrap().data;
    let l = &io.get("labels").unwrap().data;
    (0..n)
        .map(|i| PointPrompt {
            x: p[2 * i] as f64,
            y: p[2 * i + 1] as f64,
            label: l[i] as i32,
        })
        .collect()
}

fn check(name: &str, got: &[f32], io: &segrs::weights::NamedTensors) {
    let want = &io.get(name).unwrap().data;
    let err = rel_l2(got, want);
    assert!(err < TOL, "{name}: relative L2 error {err:e}");
}

#[test]
fn points_without_box_get_a_padding_point() {
    let (pe, io) = setup();
    let sparse: Vec<f32> = pe.sparse(&points(&io, 3), None).unwrap().concat();
    check("points.sparse", &sparse, &io);
    check("points.dense", &pe.dense(None).unwrap(), &io);
    check("dense_pe", &pe.dense_pe(), &io);
}

#[test]
fn box_point_and_mask_prompts() {
    let (pe, io) = setup();
    let b = &io.get("box").unwrap().data;
    let bbox = Some([b[0] as f64, b[1] as f64, b[2] as f64, b[3] as f64]);
    check("box.sparse", &pe.sparse(&[], bbox).unwrap().concat(), &io);
    check(
        "point_box_mask.sparse",
        &pe.sparse(&points(&io, 1), bbox).unwrap().concat(),
        &io,
    );
    let mask = &io.get("mask").unwrap().data;
    check("point_box_mask.dense", &pe.dense(Some(mask)).unwrap(), &io);
}

#[test]
fn bad_prompts_and_checkpoints_are_errors() {
    let (pe, _) = setup();
    assert!(
        pe.sparse(
            &[PointPrompt {
                x: 1.0,
                y: 1.0,
                label: 2
            }],
            None
        )
        .unwrap_err()
        .to_string()
        .contains("label 2")
    );
    assert!(pe.dense(Some(&[0.0; 10])).is_err());
    let mut w = read_fixture("sam/prompt_encoder.safetensors");
    w.tensors.remove("prompt_encoder.no_mask_embed.weight");
    let err = format!(
        "{:#}",
        PromptEncoder::load(&Weights::new(&w).pp("prompt_encoder"), (8, 8), (64, 64))
            .err()
            .unwrap()
    );
    assert!(err.contains("no_mask_embed"), "{err}");
}

#[test]
fn mask_decoder_matches_segment_anything() {
    let w = read_fixture("sam/mask_decoder.safetensors");
    let md =
        segrs::models::sam::mask_decoder::MaskDecoder::load(&Weights::new(&w).pp("mask_decoder"))
            .unwrap();
    let io = read_fixture("sam/mask_decoder_io.safetensors");
    let sparse: Vec<Vec<f32>> = io
        .get("sparse")
        .unwrap()
        .data
        .chunks(32)
        .map(|c| c.to_vec())
        .collect();
    let out = md
        .forward(
            &io.get("image").unwrap().data,
            &io.get("image_pe").unwrap().data,
            &sparse,
            &io.get("dense").unwrap().data,
            8,
            8,
        )
        .unwrap();
    assert_eq!((out.height, out.width), (32, 32));
    check("masks", &out.masks, &io);
    check("iou", &out.iou, &io);
    let mut w2 = read_fixture("sam/mask_decoder.safetensors");
    w2.tensors
        .remove("mask_decoder.transformer.layers.1.norm4.weight");
    let err = format!(
        "{:#}",
        segrs::models::sam::mask_decoder::MaskDecoder::load(&Weights::new(&w2).pp("mask_decoder"))
            .err()
            .unwrap()
    );
    assert!(err.contains("layers.1.norm4.weight"), "{err}");
}

#[test]
fn image_encoder_matches_segment_anything() {
    let w = read_fixture("sam/image_encoder.safetensors");
    let enc = segrs::models::sam::image_encoder::ImageEncoder::load(
        &Weights::new(&w).pp("image_encoder"),
        2,
        3,
        &[1],
    )
    .unwrap();
    assert_eq!(
        (enc.dim, enc.patch, enc.grid, enc.out_chans),
        (32, 8, 8, 16)
    );
    let io = read_fixture("sam/image_encoder_io.safetensors");
    let got = enc.forward(&io.get("input").unwrap().data).unwrap();
    check("embedding", &got, &io);
    assert!(enc.forward(&[0.0; 12]).is_err());
}

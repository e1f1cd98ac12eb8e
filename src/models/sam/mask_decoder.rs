//! SAM's mask decoder: an IoU token and 4 mask tokens join the prompt tokens in the two-way
//! transformer; the image embedding is upscaled 4x (two transposed convolutions with
//! LayerNorm2d and GELU), and each mask token's hypernetwork MLP gives the weights that turn the
//! upscaled embedding into one mask; an MLP on the IoU token predicts each mask's quality.
//! Keys `mask_decoder.*` as in the official checkpoints.

use super::two_way_transformer::{ImageSideCache, TwoWayTransformer};
use crate::nn::{ConvTranspose2d, LayerNorm2d, Mlp, Weights};
use crate::ops::Activation;
use crate::ops::layout::transpose;
use crate::ops::matmul::matmul;
use anyhow::{Result, bail};

pub struct MaskDecoder {
    pub dim: usize,
    transformer: TwoWayTransformer,
    iou_token: Vec<f32>,
    mask_tokens: Vec<f32>,
    up1: ConvTranspose2d,
    ln: LayerNorm2d,
    up2: ConvTranspose2d,
    hyper: Vec<Mlp>,
    iou_head: Mlp,
}

/// Masks `[4, 4H, 4W]` (all four; callers pick 1..4 for multimask, else 0) and IoU predictions.
pub struct DecoderOutput {
    pub masks: Vec<f32>,
    pub iou: Vec<f32>,
    pub height: usize,
    pub width: usize,
}

const NUM_MASK_TOKENS: usize = 4;

impl MaskDecoder {
    /// Loads the decoder from `w` (scoped to `mask_decoder`); the width comes from the IoU
    /// token, the transformer has the official depth 2, 8 heads; the MLP widths are read from
    /// the weights.
    pub fn load(w: &Weights) -> Result<Self> {
        let Some(&[_, dim]) = w.shape("iou_token.weight") else {
            bail!(
                "{}: no {} (not a SAM checkpoint?)",
                w.source(),
                w.key("iou_token.weight")
            );
        };
        let mlp_dim = w
            .dim("transformer.layers.0.mlp.lin1.weight", 0)
            .unwrap_or(2048);
        let iou_hidden = w
            .dim("iou_prediction_head.layers.0.weight", 0)
            .unwrap_or(256);
        let transformer = TwoWayTransformer::load(&w.pp("transformer"), dim, 8, mlp_dim, 2);
        let (c4, c8) = (dim / 4, dim / 8);
        let up = w.pp("output_upscaling");
        let hyper = (0..NUM_MASK_TOKENS)
            .map(|i| {
                Mlp::load_numbered(
                    &w.pp("output_hypernetworks_mlps").pp(i),
                    &[dim, dim, dim, c8],
                    Activation::Relu,
                )
            })
            .collect();
        let dec = Self {
            dim,
            transformer,
            iou_token: w.get("iou_token.weight", &[1, dim]),
            mask_tokens: w.get("mask_tokens.weight", &[NUM_MASK_TOKENS, dim]),
            up1: ConvTranspose2d::load(&up.pp(0), dim, c4),
            ln: LayerNorm2d::load(&up.pp(1), c4, 1e-6),
            up2: ConvTranspose2d::load(&up.pp(3), c4, c8),
            hyper,
            iou_head: Mlp::load_numbered(
                &w.pp("iou_prediction_head"),
                &[dim, iou_hidden, iou_hidden, NUM_MASK_TOKENS],
                Activation::Relu,
            ),
        };
        w.finish("SAM mask decoder")?;
        Ok(dec)
    }

    /// One prompt set: image embedding and positional encoding `[C, H, W]`, sparse prompt
    /// embeddings (rows of C), dense prompt embedding `[C, H, W]`.
    pub fn forward(
        &self,
        image: &[f32],
        image_pe: &[f32],
        sparse: &[Vec<f32>],
        dense: &[f32],
        h: usize,
        w: usize,
    ) -> Result<DecoderOutput> {
        let c = self.dim;
        if image.len() != c * h * w || image_pe.len() != c * h * w || dense.len() != c * h * w {
            bail!("mask decoder: embeddings must be {c}x{h}x{w}");
        }
        let src: Vec<f32> = image.iter().zip(dense).map(|(a, b)| a + b).collect();
        let src = transpose(&src, c, h * w);
        let pe = transpose(image_pe, c, h * w);
        self.forward_rows(&src, &pe, sparse, h, w, None)
    }

    /// The prompt-independent part of the transformer for image rows `src` (embedding plus
    /// the no-mask dense prompt) and positional rows `pe`; see [`ImageSideCache`].
    pub fn prepare(&self, src: &[f32], pe: &[f32]) -> ImageSideCache {
        self.transformer.prepare(src, pe)
    }

    /// As [`forward`](Self::forward) with the image side as rows `[H * W, C]`: `src` is the
    /// image embedding plus the dense prompt embedding, `pe` the positional encoding (both can
    /// be prepared once per image / model).
    pub fn forward_rows(
        &self,
        src: &[f32],
        pe: &[f32],
        sparse: &[Vec<f32>],
        h: usize,
        w: usize,
        cache: Option<&ImageSideCache>,
    ) -> Result<DecoderOutput> {
        let c = self.dim;
        if src.len() != c * h * w || pe.len() != c * h * w {
            bail!("mask decoder: embeddings must be {c}x{h}x{w}");
        }
        let mut tokens = self.iou_token.clone();
        tokens.extend_from_slice(&self.mask_tokens);
        for s in sparse {
            if s.len() != c {
                bail!("mask decoder: prompt embeddings must have {c} values");
            }
            tokens.extend_from_slice(s);
        }
        let n = tokens.len() / c;
        let (hs, keys) = self.transformer.forward_cached(src, pe, &tokens, n, cache);
        let mut up = self.up1.forward_rows(&keys, h, w, Activation::None);
        let (h2, w2) = (2 * h, 2 * w);
        self.ln.forward(&mut up, h2 * w2);
        Activation::Gelu.apply(&mut up);
        let up = self.up2.forward(&up, h2, w2, Activation::Gelu);
        let (h4, w4) = (4 * h, 4 * w);
        let c8 = self.up2.op.cout;
        let hyper: Vec<f32> = (0..NUM_MASK_TOKENS)
            .flat_map(|i| self.hyper[i].forward(&hs[(1 + i) * c..(2 + i) * c], 1))
            .collect();
        let masks = matmul(&hyper, &up, NUM_MASK_TOKENS, c8, h4 * w4);
        let iou = self.iou_head.forward(&hs[..c], 1);
        Ok(DecoderOutput {
            masks,
            iou,
            height: h4,
            width: w4,
        })
    }
}

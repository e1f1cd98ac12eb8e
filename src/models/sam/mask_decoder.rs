//! SAM's mask decoder: an IoU token and 4 mask tokens join the prompt tokens in the two-way
//! transformer; the image embedding is upscaled 4x (two transposed convolutions with
//! LayerNorm2d and GELU), and each mask token's hypernetwork MLP gives the weights that turn the
//! upscaled embedding into one mask; an MLP on the IoU token predicts each mask's quality.
//! SAM 2's decoder (`sam_mask_decoder.*`) is the same network with three additions, each
//! present when its keys are: an object-score token and head (is there an object at all?),
//! high-resolution skips added in the upscaling (`conv_s0` / `conv_s1` of the backbone's
//! stride-4 and stride-8 features), and IoU predictions through a sigmoid. Keys
//! `mask_decoder.*` as in the official checkpoints.

use super::two_way_transformer::{ImageSideCache, TwoWayTransformer};
use crate::nn::{ConvTranspose2d, LayerNorm2d, Linear, Mlp, Weights};
use crate::ops::Activation;
use crate::ops::layout::transpose;
use crate::ops::profile::scope;
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
    /// SAM 2: IoU predictions through a sigmoid.
    pub iou_sigmoid: bool,
    /// SAM 2: the object-score token and its head (an MLP or one linear layer).
    obj_score: Option<(Vec<f32>, ObjScoreHead)>,
    /// SAM 2: the upscaling adds the backbone's stride-4 / stride-8 features, projected by the
    /// decoder's `conv_s0` / `conv_s1` (whose weights the model folds into its neck).
    pub high_res: bool,
}

enum ObjScoreHead {
    Mlp(Mlp),
    Linear(Linear),
}

/// Masks `[4, 4H, 4W]` (all four; callers pick 1..4 for multimask, else 0), IoU predictions
/// and the object score logit (10 for SAM, which has no object-score head).
pub struct DecoderOutput {
    pub masks: Vec<f32>,
    pub iou: Vec<f32>,
    pub object_score: f32,
    /// The transformer's outputs for the four mask tokens `[4, C]` (SAM 2's object pointers
    /// come from them).
    pub mask_tokens: Vec<f32>,
    pub height: usize,
    pub width: usize,
}

/// The backbone's stride-4 (`[dim / 8, 4H, 4W]`) and stride-8 (`[dim / 4, 2H, 2W]`) features,
/// already through `conv_s0` / `conv_s1`, added in SAM 2's upscaling.
#[derive(Clone, Copy)]
pub struct HighRes<'a> {
    pub s0: &'a [f32],
    pub s1: &'a [f32],
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
            .or_else(|| w.dim("transformer.layers.0.mlp.layers.0.weight", 0))
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
        let obj_score = w.contains("obj_score_token.weight").then(|| {
            let h = w.pp("pred_obj_score_head");
            let head = if h.contains("layers.0.weight") {
                ObjScoreHead::Mlp(Mlp::load_numbered(
                    &h,
                    &[dim, dim, dim, 1],
                    Activation::Relu,
                ))
            } else {
                ObjScoreHead::Linear(Linear::load(&h, dim, 1))
            };
            (w.get("obj_score_token.weight", &[1, dim]), head)
        });
        let high_res = w.contains("conv_s0.weight");
        // SAM 2 checkpoints are recognised by their object-score token; their IoU head ends in
        // a sigmoid (`iou_prediction_use_sigmoid: true` in every official config).
        let iou_sigmoid = obj_score.is_some();
        let dec = Self {
            iou_sigmoid,
            obj_score,
            high_res,
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
        self.forward_rows(&src, &pe, sparse, h, w, None, None)
    }

    /// The prompt-independent part of the transformer for image rows `src` (embedding plus
    /// the no-mask dense prompt) and positional rows `pe`; see [`ImageSideCache`].
    pub fn prepare(&self, src: &[f32], pe: &[f32]) -> ImageSideCache {
        self.transformer.prepare(src, pe)
    }

    /// As [`forward`](Self::forward) with the image side as rows `[H * W, C]`: `src` is the
    /// image embedding plus the dense prompt embedding, `pe` the positional encoding (both can
    /// be prepared once per image / model).
    #[allow(clippy::too_many_arguments)]
    pub fn forward_rows(
        &self,
        src: &[f32],
        pe: &[f32],
        sparse: &[Vec<f32>],
        h: usize,
        w: usize,
        cache: Option<&ImageSideCache>,
        high_res: Option<HighRes>,
    ) -> Result<DecoderOutput> {
        let c = self.dim;
        if src.len() != c * h * w || pe.len() != c * h * w {
            bail!("mask decoder: embeddings must be {c}x{h}x{w}");
        }
        if self.high_res != high_res.is_some() {
            bail!(
                "mask decoder: high-resolution features are needed exactly when the decoder has conv_s0 / conv_s1"
            );
        }
        let s = self.obj_score.is_some() as usize;
        let mut tokens = match &self.obj_score {
            Some((t, _)) => t.clone(),
            None => Vec::new(),
        };
        tokens.extend_from_slice(&self.iou_token);
        tokens.extend_from_slice(&self.mask_tokens);
        for s in sparse {
            if s.len() != c {
                bail!("mask decoder: prompt embeddings must have {c} values");
            }
            tokens.extend_from_slice(s);
        }
        let n = tokens.len() / c;
        // Only the object-score, IoU and mask tokens' outputs are read.
        let used = s + 1 + NUM_MASK_TOKENS;
        let (hs, keys) = self
            .transformer
            .forward_cached(src, pe, &tokens, n, used, cache);
        let (h2, w2) = (2 * h, 2 * w);
        let (h4, w4) = (4 * h, 4 * w);
        let c8 = self.up2.op.cout;
        if let Some(hr) = high_res
            && (hr.s1.len() != c8 * 2 * h2 * w2 || hr.s0.len() != c8 * h4 * w4)
        {
            bail!("mask decoder: high-resolution features of the wrong size");
        }
        let c4 = self.up1.op.cout;
        let up = {
            let _t = scope(
                "upscaling: transposed conv 2x2 (+ LayerNorm2d, GELU)",
                (2 * h * w * c * c4 * 4) as f64,
            );
            self.up1.forward_rows_norm(
                &keys,
                h,
                w,
                high_res.map(|hr| hr.s1),
                &self.ln,
                Activation::Gelu,
            )
        };
        let hyper: Vec<f32> = {
            let _t = scope("hypernetwork MLPs", 0.0);
            (0..NUM_MASK_TOKENS)
                .flat_map(|i| self.hyper[i].forward(&hs[(s + 1 + i) * c..(s + 2 + i) * c], 1))
                .collect()
        };
        // The last upscaling and the masks in one pass (the 4x map is never held whole).
        let masks = {
            let _t = scope(
                "upscaling: transposed conv 2x2 (+ GELU) and masks",
                (2 * h2 * w2 * c4 * c8 * 4 + 2 * NUM_MASK_TOKENS * c8 * h4 * w4) as f64,
            );
            self.up2.forward_projected(
                &up,
                h2,
                w2,
                high_res.map(|hr| hr.s0),
                Activation::Gelu,
                &hyper,
                NUM_MASK_TOKENS,
            )
        };
        let mut iou = self.iou_head.forward(&hs[s * c..(s + 1) * c], 1);
        if self.iou_sigmoid {
            Activation::Sigmoid.apply(&mut iou);
        }
        let object_score = match &self.obj_score {
            None => 10.0,
            Some((_, ObjScoreHead::Mlp(m))) => m.forward(&hs[..c], 1)[0],
            Some((_, ObjScoreHead::Linear(l))) => l.forward(&hs[..c], 1)[0],
        };
        Ok(DecoderOutput {
            masks,
            iou,
            object_score,
            mask_tokens: hs[(s + 1) * c..(s + 1 + NUM_MASK_TOKENS) * c].to_vec(),
            height: h4,
            width: w4,
        })
    }
}

impl DecoderOutput {
    /// The masks the reference returns: the three multimask outputs, or mask 0, or with
    /// `dynamic` (SAM 2's `dynamic_multimask_via_stability`) mask 0 unless its stability
    /// score (area above +0.05 over area above -0.05) is below 0.98, then the multimask
    /// output with the highest predicted IoU. Returns `(indices, masks, scores)`.
    pub fn select(&self, multimask: bool, dynamic: bool) -> (Vec<usize>, Vec<Vec<f32>>, Vec<f32>) {
        let plane = self.height * self.width;
        let mask = |i: usize| self.masks[i * plane..(i + 1) * plane].to_vec();
        let picked: Vec<usize> = if multimask {
            vec![1, 2, 3]
        } else if dynamic && stability(&self.masks[..plane], 0.05) < 0.98 {
            // torch.argmax: the first of equal maxima
            let best = (1..4).fold(1, |b, i| if self.iou[i] > self.iou[b] { i } else { b });
            vec![best]
        } else {
            vec![0]
        };
        let masks = picked.iter().map(|&i| mask(i)).collect();
        let scores = picked.iter().map(|&i| self.iou[i]).collect();
        (picked, masks, scores)
    }
}

/// `|logits > delta| / |logits > -delta|` (1 when the second is empty).
fn stability(logits: &[f32], delta: f32) -> f32 {
    let inner = logits.iter().filter(|&&v| v > delta).count();
    let outer = logits.iter().filter(|&&v| v > -delta).count();
    if outer > 0 {
        inner as f32 / outer as f32
    } else {
        1.0
    }
}

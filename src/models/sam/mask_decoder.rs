//! SAM's mask decoder: an IoU token and 4 mask tokens join the prompt tokens in the two-way
//! transformer; the image embedding is upscaled 4x (two transposed convolutions with
//! LayerNorm2d and GELU), and each mask token's hypernetwork MLP gives the weights that turn the
//! upscaled embedding into one mask; an MLP on the IoU token predicts each mask's quality.
//! Keys `mask_decoder.*` as in the official checkpoints.

use super::prompt_encoder::gelu_inplace;
use super::two_way_transformer::{ImageSideCache, TwoWayTransformer, linear};
use crate::models::host::{Linear, layer_norm2d, relu, transpose};
use crate::weights::{KeyCheck, NamedTensors};
use anyhow::{Result, bail};

struct Mlp {
    layers: Vec<Linear>,
}

impl Mlp {
    fn forward(&self, x: &[f32]) -> Vec<f32> {
        let mut x = x.to_vec();
        for (i, l) in self.layers.iter().enumerate() {
            x = l.forward(&x, 1);
            if i + 1 < self.layers.len() {
                relu(&mut x);
            }
        }
        x
    }
}

struct ConvT2 {
    /// `[cin, cout, 2, 2]`
    w: Vec<f32>,
    /// The same as a `[cout * 4, cin]` matrix.
    wm: Vec<f32>,
    b: Vec<f32>,
    cin: usize,
    cout: usize,
}

impl ConvT2 {
    /// The weight as a `[cout * 4, cin]` matrix, row `co * 4 + dy * 2 + dx`.
    fn matrix(&self) -> Vec<f32> {
        let mut m = vec![0.0f32; self.cout * 4 * self.cin];
        for ci in 0..self.cin {
            for co in 0..self.cout {
                for t in 0..4 {
                    m[(co * 4 + t) * self.cin + ci] = self.w[(ci * self.cout + co) * 4 + t];
                }
            }
        }
        m
    }

    /// As [`forward`](Self::forward) from rows `[h * w, cin]`: `[h * w, cin] @ W^T`, scattered.
    fn forward_rows(&self, x: &[f32], h: usize, w: usize) -> Vec<f32> {
        let k4 = self.cout * 4;
        let y = crate::models::host::matmul_nt_par(x, &self.wm, h * w, self.cin, k4);
        let (oh, ow) = (2 * h, 2 * w);
        let mut out = vec![0.0f32; self.cout * oh * ow];
        use rayon::prelude::*;
        out.par_chunks_mut(oh * ow)
            .enumerate()
            .for_each(|(co, plane)| {
                for yy in 0..h {
                    for xx in 0..w {
                        let src = &y[(yy * w + xx) * k4 + co * 4..(yy * w + xx) * k4 + co * 4 + 4];
                        plane[2 * yy * ow + 2 * xx] = src[0] + self.b[co];
                        plane[2 * yy * ow + 2 * xx + 1] = src[1] + self.b[co];
                        plane[(2 * yy + 1) * ow + 2 * xx] = src[2] + self.b[co];
                        plane[(2 * yy + 1) * ow + 2 * xx + 1] = src[3] + self.b[co];
                    }
                }
            });
        out
    }

    /// Kernel 2, stride 2: every input pixel owns its 2x2 output block, so the layer is one
    /// matrix product `[cout * 4, cin] @ [cin, h * w]` and a scatter.
    fn forward(&self, x: &[f32], h: usize, w: usize) -> Vec<f32> {
        let y = crate::models::host::matmul_par(&self.wm, x, self.cout * 4, self.cin, h * w);
        let (oh, ow) = (2 * h, 2 * w);
        let mut out = vec![0.0f32; self.cout * oh * ow];
        use rayon::prelude::*;
        out.par_chunks_mut(oh * ow)
            .enumerate()
            .for_each(|(co, plane)| {
                for t in 0..4 {
                    let (dy, dx) = (t / 2, t % 2);
                    let src = &y[(co * 4 + t) * h * w..(co * 4 + t + 1) * h * w];
                    for yy in 0..h {
                        let row = &mut plane[(2 * yy + dy) * ow..(2 * yy + dy + 1) * ow];
                        for xx in 0..w {
                            row[2 * xx + dx] = src[yy * w + xx] + self.b[co];
                        }
                    }
                }
            });
        out
    }
}

pub struct MaskDecoder {
    pub dim: usize,
    transformer: TwoWayTransformer,
    iou_token: Vec<f32>,
    mask_tokens: Vec<f32>,
    up1: ConvT2,
    ln_w: Vec<f32>,
    ln_b: Vec<f32>,
    up2: ConvT2,
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
    /// Loads `{prefix}*` (usually `"mask_decoder."`); the width comes from the IoU token, the
    /// transformer has the official depth 2, 8 heads; the MLP width is read from the weights.
    pub fn load(src: &NamedTensors, prefix: &str) -> Result<Self> {
        let Some(iou) = src.get(&format!("{prefix}iou_token.weight")) else {
            bail!(
                "{}: no {prefix}iou_token.weight (not a SAM checkpoint?)",
                src.source
            );
        };
        let dim = iou.shape[1];
        let mlp_dim = src
            .get(&format!("{prefix}transformer.layers.0.mlp.lin1.weight"))
            .map(|t| t.shape[0])
            .unwrap_or(2048);
        let heads = 8;
        let iou_hidden = src
            .get(&format!("{prefix}iou_prediction_head.layers.0.weight"))
            .map(|t| t.shape[0])
            .unwrap_or(256);
        let mut ck = KeyCheck::default();
        let transformer = TwoWayTransformer::load(
            src,
            &mut ck,
            &format!("{prefix}transformer."),
            dim,
            heads,
            mlp_dim,
            2,
        );
        let vec = |ck: &mut KeyCheck, key: &str, shape: &[usize]| {
            ck.take(src, key, shape)
                .map(|t| t.data.clone())
                .unwrap_or_else(|| vec![0.0; shape.iter().product()])
        };
        let iou_token = vec(&mut ck, &format!("{prefix}iou_token.weight"), &[1, dim]);
        let mask_tokens = vec(
            &mut ck,
            &format!("{prefix}mask_tokens.weight"),
            &[NUM_MASK_TOKENS, dim],
        );
        let (c4, c8) = (dim / 4, dim / 8);
        let up1 = ConvT2 {
            w: vec(
                &mut ck,
                &format!("{prefix}output_upscaling.0.weight"),
                &[dim, c4, 2, 2],
            ),
            b: vec(&mut ck, &format!("{prefix}output_upscaling.0.bias"), &[c4]),
            cin: dim,
            cout: c4,
            wm: Vec::new(),
        };
        let up1 = ConvT2 {
            wm: up1.matrix(),
            ..up1
        };
        let ln_w = vec(
            &mut ck,
            &format!("{prefix}output_upscaling.1.weight"),
            &[c4],
        );
        let ln_b = vec(&mut ck, &format!("{prefix}output_upscaling.1.bias"), &[c4]);
        let up2 = ConvT2 {
            w: vec(
                &mut ck,
                &format!("{prefix}output_upscaling.3.weight"),
                &[c4, c8, 2, 2],
            ),
            b: vec(&mut ck, &format!("{prefix}output_upscaling.3.bias"), &[c8]),
            cin: c4,
            cout: c8,
            wm: Vec::new(),
        };
        let up2 = ConvT2 {
            wm: up2.matrix(),
            ..up2
        };
        let mlp = |ck: &mut KeyCheck, key: &str, dims: &[usize]| Mlp {
            layers: dims
                .windows(2)
                .enumerate()
                .map(|(i, d)| linear(src, ck, &format!("{key}.layers.{i}"), d[0], d[1]))
                .collect(),
        };
        let hyper = (0..NUM_MASK_TOKENS)
            .map(|i| {
                mlp(
                    &mut ck,
                    &format!("{prefix}output_hypernetworks_mlps.{i}"),
                    &[dim, dim, dim, c8],
                )
            })
            .collect();
        let iou_head = mlp(
            &mut ck,
            &format!("{prefix}iou_prediction_head"),
            &[dim, iou_hidden, iou_hidden, NUM_MASK_TOKENS],
        );
        ck.finish(src, "SAM mask decoder")?;
        Ok(Self {
            dim,
            transformer,
            iou_token,
            mask_tokens,
            up1,
            ln_w,
            ln_b,
            up2,
            hyper,
            iou_head,
        })
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
        let mut up = self.up1.forward_rows(&keys, h, w);
        let (h2, w2) = (2 * h, 2 * w);
        layer_norm2d(&mut up, &self.ln_w, &self.ln_b, h2 * w2, 1e-6);
        gelu_inplace(&mut up);
        let mut up = self.up2.forward(&up, h2, w2);
        gelu_inplace(&mut up);
        let (h4, w4) = (4 * h, 4 * w);
        let c8 = self.up2.cout;
        let hyper: Vec<f32> = (0..NUM_MASK_TOKENS)
            .flat_map(|i| self.hyper[i].forward(&hs[(1 + i) * c..(2 + i) * c]))
            .collect();
        let masks = crate::models::host::matmul_par(&hyper, &up, NUM_MASK_TOKENS, c8, h4 * w4);
        let iou = self.iou_head.forward(&hs[..c]);
        Ok(DecoderOutput {
            masks,
            iou,
            height: h4,
            width: w4,
        })
    }
}

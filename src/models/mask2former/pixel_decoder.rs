//! The pixel decoder (`Mask2FormerPixelDecoder`): the three coarsest backbone maps (strides
//! 32, 16, 8), each projected to `feature_size` channels (1x1 convolution + GroupNorm), pass
//! through a multi-scale deformable attention encoder (sine positions plus a learned level
//! embedding; every token samples 4 points on each level around its own position); then an
//! FPN step adds the stride-4 backbone map to the upsampled stride-8 output. Returns the
//! three encoder maps (the transformer decoder's keys) and the stride-4 mask features.

use super::config::Mask2FormerConfig;
use super::swin::FeatureMap;
use crate::nn::{Conv2d, ConvSpec, LayerNorm, Linear, Weights};
use crate::ops::Activation;
use crate::ops::deform_attn::{DeformLayout, multi_scale_deformable_attention};
use crate::ops::layout::{add_assign, transpose};
use crate::ops::norm::group_norm;
use crate::ops::profile::scope;
use crate::ops::resize::bilinear;
use crate::ops::softmax::softmax_rows;

/// Levels the encoder attends over, and points per level (fixed in the reference).
pub const LEVELS: usize = 3;
const POINTS: usize = 4;
const GROUPS: usize = 32;

/// A convolution followed by `GroupNorm(32)` (and a ReLU where asked).
struct ConvGn {
    conv: Conv2d,
    gn_w: Vec<f32>,
    gn_b: Vec<f32>,
    relu: bool,
}

impl ConvGn {
    fn load(w: &Weights, spec: ConvSpec, bias: bool, relu: bool) -> Self {
        let conv = if bias {
            Conv2d::load(&w.pp(0), spec)
        } else {
            Conv2d::load_no_bias(&w.pp(0), spec)
        };
        Self {
            conv,
            gn_w: w.pp(1).get("weight", &[spec.cout]),
            gn_b: w.pp(1).get("bias", &[spec.cout]),
            relu,
        }
    }

    fn forward(&self, x: &[f32], h: usize, w: usize) -> Vec<f32> {
        let (mut y, _, _) = self.conv.forward(x, h, w, Activation::None);
        group_norm(&mut y, GROUPS, &self.gn_w, &self.gn_b, h * w, 1e-5);
        if self.relu {
            Activation::Relu.apply(&mut y);
        }
        y
    }
}

struct EncoderLayer {
    sampling_offsets: Linear,
    attention_weights: Linear,
    value_proj: Linear,
    output_proj: Linear,
    norm1: LayerNorm,
    fc1: Linear,
    fc2: Linear,
    norm2: LayerNorm,
}

pub struct PixelDecoder {
    input_projections: Vec<ConvGn>,
    level_embed: Vec<f32>,
    layers: Vec<EncoderLayer>,
    heads: usize,
    dim: usize,
    /// FPN steps, coarse to fine: (lateral, output) per backbone map finer than stride 8.
    fpn: Vec<(ConvGn, ConvGn)>,
    mask_projection: Conv2d,
}

/// What the pixel decoder gives the transformer decoder.
pub struct PixelDecoderOutput {
    /// The encoder's maps, strides 32, 16, 8: `[dim, h, w]` each.
    pub multi_scale: Vec<FeatureMap>,
    /// `[mask_dim, h, w]` at stride 4.
    pub mask_features: FeatureMap,
}

impl PixelDecoder {
    /// `w`: `model.pixel_level_module.decoder`; `channels`: the backbone maps' channels.
    pub fn load(w: &Weights, cfg: &Mask2FormerConfig, channels: &[usize]) -> Self {
        let dim = cfg.feature_size;
        let input_projections = channels[channels.len() - LEVELS..]
            .iter()
            .rev()
            .enumerate()
            .map(|(l, &c)| {
                ConvGn::load(
                    &w.pp("input_projections").pp(l),
                    ConvSpec::same(c, dim, 1),
                    true,
                    false,
                )
            })
            .collect();
        let level_embed = w.get("level_embed", &[LEVELS, dim]);
        let heads = cfg.num_attention_heads;
        let layers = (0..cfg.encoder_layers)
            .map(|i| {
                let lw = w.pp("encoder").pp("layers").pp(i);
                let sa = lw.pp("self_attn");
                let ff = cfg.encoder_feedforward_dim;
                EncoderLayer {
                    sampling_offsets: Linear::load(
                        &sa.pp("sampling_offsets"),
                        dim,
                        heads * LEVELS * POINTS * 2,
                    ),
                    attention_weights: Linear::load(
                        &sa.pp("attention_weights"),
                        dim,
                        heads * LEVELS * POINTS,
                    ),
                    value_proj: Linear::load(&sa.pp("value_proj"), dim, dim),
                    output_proj: Linear::load(&sa.pp("output_proj"), dim, dim),
                    norm1: LayerNorm::load(&lw.pp("self_attn_layer_norm"), dim, 1e-5),
                    fc1: Linear::load(&lw.pp("fc1"), dim, ff),
                    fc2: Linear::load(&lw.pp("fc2"), ff, dim),
                    norm2: LayerNorm::load(&lw.pp("final_layer_norm"), dim, 1e-5),
                }
            })
            .collect();
        // FPN levels: from the finest transformer stride down to the common stride.
        let finest = cfg.feature_strides[cfg.feature_strides.len() - LEVELS];
        let fpn_levels = (finest / cfg.common_stride).max(1).trailing_zeros() as usize;
        let fpn = (0..fpn_levels)
            .rev()
            .map(|idx| {
                let lateral = ConvGn::load(
                    &w.pp(format!("adapter_{}", idx + 1)),
                    ConvSpec::same(channels[idx], dim, 1),
                    false,
                    false,
                );
                let output = ConvGn::load(
                    &w.pp(format!("layer_{}", idx + 1)),
                    ConvSpec::same(dim, dim, 3),
                    false,
                    true,
                );
                (lateral, output)
            })
            .collect();
        let mask_projection = Conv2d::load(
            &w.pp("mask_projection"),
            ConvSpec::same(dim, cfg.mask_feature_size, 1),
        );
        Self {
            input_projections,
            level_embed,
            layers,
            heads,
            dim,
            fpn,
            mask_projection,
        }
    }

    /// `features`: the backbone's maps, fine to coarse (strides 4, 8, 16, 32).
    pub fn forward(&self, features: &[FeatureMap]) -> PixelDecoderOutput {
        let dim = self.dim;
        // Levels coarse to fine: the last three backbone maps, reversed.
        let levels: Vec<&FeatureMap> = features.iter().rev().take(LEVELS).collect();
        let shapes: Vec<(usize, usize)> = levels.iter().map(|f| (f.height, f.width)).collect();
        let total: usize = shapes.iter().map(|(h, w)| h * w).sum();
        let mut tokens = Vec::with_capacity(total * dim);
        let mut pos = Vec::with_capacity(total * dim);
        {
            let _t = scope("pixel decoder input projections", 0.0);
            for (l, f) in levels.iter().enumerate() {
                let hw = f.height * f.width;
                let y = self.input_projections[l].forward(&f.data, f.height, f.width);
                tokens.extend(transpose(&y, dim, hw));
                let mut p = transpose(&sine_positions(dim, f.height, f.width), dim, hw);
                for row in p.chunks_mut(dim) {
                    add_assign(row, &self.level_embed[l * dim..(l + 1) * dim]);
                }
                pos.extend(p);
            }
        }
        // Each token's own normalised position, the centre of its cell on its level.
        let mut reference = Vec::with_capacity(total * 2);
        for &(h, w) in &shapes {
            for y in 0..h {
                for x in 0..w {
                    reference.push((x as f32 + 0.5) / w as f32);
                    reference.push((y as f32 + 0.5) / h as f32);
                }
            }
        }
        for layer in &self.layers {
            let _t = scope("pixel decoder deformable encoder", 0.0);
            self.encoder_layer(layer, &mut tokens, &pos, &reference, &shapes);
        }
        // Back to maps, coarse to fine.
        let mut outputs: Vec<FeatureMap> = Vec::with_capacity(LEVELS + self.fpn.len());
        let mut start = 0;
        for &(h, w) in &shapes {
            let rows = &tokens[start * dim..(start + h * w) * dim];
            outputs.push(FeatureMap {
                data: transpose(rows, h * w, dim),
                channels: dim,
                height: h,
                width: w,
            });
            start += h * w;
        }
        let _t = scope("pixel decoder FPN and mask projection", 0.0);
        let finer = features.len() - LEVELS;
        for (k, (lateral, output)) in self.fpn.iter().enumerate() {
            let f = &features[finer - 1 - k];
            let mut cur = lateral.forward(&f.data, f.height, f.width);
            let prev = outputs.last().expect("encoder levels");
            let up = bilinear(
                &prev.data,
                dim,
                (prev.height, prev.width),
                (f.height, f.width),
                false,
            );
            add_assign(&mut cur, &up);
            outputs.push(FeatureMap {
                data: output.forward(&cur, f.height, f.width),
                channels: dim,
                height: f.height,
                width: f.width,
            });
        }
        let last = outputs.last().expect("pixel decoder output");
        let (mask, _, _) =
            self.mask_projection
                .forward(&last.data, last.height, last.width, Activation::None);
        let mask_features = FeatureMap {
            data: mask,
            channels: self.mask_projection.cout(),
            height: last.height,
            width: last.width,
        };
        outputs.truncate(LEVELS);
        PixelDecoderOutput {
            multi_scale: outputs,
            mask_features,
        }
    }

    /// One deformable encoder layer on `tokens [n, dim]`, in place (post-norm).
    fn encoder_layer(
        &self,
        layer: &EncoderLayer,
        tokens: &mut [f32],
        pos: &[f32],
        reference: &[f32],
        shapes: &[(usize, usize)],
    ) {
        let n = tokens.len() / self.dim;
        let heads = self.heads;
        let query: Vec<f32> = tokens.iter().zip(pos).map(|(a, b)| a + b).collect();
        let value = layer.value_proj.forward(tokens, n);
        let offsets = layer.sampling_offsets.forward(&query, n);
        let mut weights = layer.attention_weights.forward(&query, n);
        softmax_rows(&mut weights, LEVELS * POINTS);
        let mut locations = offsets;
        for (q, loc) in locations
            .chunks_mut(heads * LEVELS * POINTS * 2)
            .enumerate()
        {
            let (rx, ry) = (reference[2 * q], reference[2 * q + 1]);
            for (i, xy) in loc.chunks_mut(2).enumerate() {
                let (lh, lw) = shapes[(i / POINTS) % LEVELS];
                xy[0] = rx + xy[0] / lw as f32;
                xy[1] = ry + xy[1] / lh as f32;
            }
        }
        let sampled = multi_scale_deformable_attention(
            &value,
            DeformLayout {
                shapes,
                heads,
                head_dim: self.dim / heads,
                points: POINTS,
            },
            &locations,
            &weights,
        );
        let o = layer.output_proj.forward(&sampled, n);
        add_assign(tokens, &o);
        layer.norm1.forward(tokens);
        let mut hdn = layer.fc1.forward(tokens, n);
        Activation::Relu.apply(&mut hdn);
        let o = layer.fc2.forward(&hdn, n);
        add_assign(tokens, &o);
        layer.norm2.forward(tokens);
    }
}

/// The normalised sine positions of a `h x w` map, `[channels, h, w]` (DETR's, as SAM 2's).
pub fn sine_positions(channels: usize, h: usize, w: usize) -> Vec<f32> {
    crate::models::sam2::position_encoding::sine(channels, h, w)
}

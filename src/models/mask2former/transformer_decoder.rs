//! The masked-attention transformer decoder (`Mask2FormerTransformerModule`): learned query
//! features and query positions; each layer does masked cross-attention to one level of the
//! pixel decoder's maps (strides 32, 16, 8 in turn, sine positions plus a level embedding on
//! the keys), where a query may only attend to the pixels its previous mask prediction holds
//! (probability >= 0.5, resized to that level; a query whose mask is empty attends
//! everywhere), then self-attention among the queries, then the FFN. After the initial
//! queries and after every layer, the shared LayerNorm and the mask head (a 3-layer MLP whose
//! output is dotted with the stride-4 mask features) predict the masks; the class head reads
//! the last.

use super::config::Mask2FormerConfig;
use super::pixel_decoder::{LEVELS, PixelDecoderOutput, sine_positions};
use super::swin::FeatureMap;
use crate::nn::{Attention, Conv2d, ConvSpec, LayerNorm, Linear, Mlp, Weights};
use crate::ops::Activation;
use crate::ops::attention::{HeadView, Hooks, attention};
use crate::ops::layout::{add, add_assign, transpose};
use crate::ops::matmul::matmul;
use crate::ops::profile::scope;
use crate::ops::resize::bilinear;

struct DecoderLayer {
    cross_q: Linear,
    cross_k: Linear,
    cross_v: Linear,
    cross_out: Linear,
    cross_norm: LayerNorm,
    self_attn: Attention,
    self_norm: LayerNorm,
    fc1: Linear,
    fc2: Linear,
    final_norm: LayerNorm,
}

/// One level's keys and values `[hw, dim]` (with the level embedding), their sine positions,
/// and the level's size.
type Level = (Vec<f32>, Vec<f32>, (usize, usize));

pub struct TransformerDecoder {
    /// 1x1 projections of the levels when the pixel decoder's width differs (else identity).
    input_projections: Vec<Option<Conv2d>>,
    level_embed: Vec<f32>,
    query_features: Vec<f32>,
    query_positions: Vec<f32>,
    layers: Vec<DecoderLayer>,
    norm: LayerNorm,
    mask_embedder: Mlp,
    class_predictor: Linear,
    heads: usize,
    dim: usize,
    queries: usize,
    pre_norm: bool,
}

/// The heads' outputs for one image.
#[derive(Clone, Debug)]
pub struct Predictions {
    /// `[queries, classes + 1]` (the last column: no object).
    pub class_logits: Vec<f32>,
    /// `[queries, h, w]` at the mask features' size (stride 4).
    pub mask_logits: Vec<f32>,
    pub queries: usize,
    pub classes: usize,
    pub mask_size: (usize, usize),
}

impl TransformerDecoder {
    /// `w`: `model.transformer_module`; `class_w`: the top-level `class_predictor`.
    pub fn load(w: &Weights, class_w: &Weights, cfg: &Mask2FormerConfig, classes: usize) -> Self {
        let dim = cfg.hidden_dim;
        let input_projections = (0..LEVELS)
            .map(|l| {
                (cfg.feature_size != dim || cfg.enforce_input_projection).then(|| {
                    Conv2d::load(
                        &w.pp("input_projections").pp(l),
                        ConvSpec::same(cfg.feature_size, dim, 1),
                    )
                })
            })
            .collect();
        let q = cfg.num_queries;
        let dw = w.pp("decoder");
        let layers = (0..cfg.decoder_layers - 1)
            .map(|i| {
                let lw = dw.pp("layers").pp(i);
                let ca = lw.pp("cross_attn");
                let in_w = ca.get("in_proj_weight", &[3 * dim, dim]);
                let in_b = ca.get("in_proj_bias", &[3 * dim]);
                let part = |k: usize| {
                    Linear::new(
                        in_w[k * dim * dim..(k + 1) * dim * dim].to_vec(),
                        in_b[k * dim..(k + 1) * dim].to_vec(),
                        dim,
                        dim,
                    )
                    .with_precision(w.precision())
                };
                DecoderLayer {
                    cross_q: part(0),
                    cross_k: part(1),
                    cross_v: part(2),
                    cross_out: Linear::load(&ca.pp("out_proj"), dim, dim),
                    cross_norm: LayerNorm::load(&lw.pp("cross_attn_layer_norm"), dim, 1e-5),
                    self_attn: Attention::load(
                        &lw.pp("self_attn"),
                        dim,
                        dim,
                        cfg.num_attention_heads,
                    ),
                    self_norm: LayerNorm::load(&lw.pp("self_attn_layer_norm"), dim, 1e-5),
                    fc1: Linear::load(&lw.pp("fc1"), dim, cfg.dim_feedforward),
                    fc2: Linear::load(&lw.pp("fc2"), cfg.dim_feedforward, dim),
                    final_norm: LayerNorm::load(&lw.pp("final_layer_norm"), dim, 1e-5),
                }
            })
            .collect();
        let mw = dw.pp("mask_predictor").pp("mask_embedder");
        let mask_embedder = Mlp {
            layers: (0..3)
                .map(|i| {
                    let out = if i == 2 { cfg.mask_feature_size } else { dim };
                    Linear::load(&mw.pp(i).pp(0), dim, out)
                })
                .collect(),
            act: Activation::Relu,
        };
        Self {
            input_projections,
            level_embed: w.pp("level_embed").get("weight", &[LEVELS, dim]),
            query_features: w.pp("queries_features").get("weight", &[q, dim]),
            query_positions: w.pp("queries_embedder").get("weight", &[q, dim]),
            layers,
            norm: LayerNorm::load(&dw.pp("layernorm"), dim, 1e-5),
            mask_embedder,
            class_predictor: Linear::load(class_w, dim, classes + 1),
            heads: cfg.num_attention_heads,
            dim,
            queries: q,
            pre_norm: cfg.pre_norm,
        }
    }

    pub fn forward(&self, px: &PixelDecoderOutput) -> Predictions {
        let (dim, nq) = (self.dim, self.queries);
        // Keys and values per level: `[hw, dim]` rows, and their positions.
        let levels: Vec<Level> = px
            .multi_scale
            .iter()
            .enumerate()
            .map(|(l, f)| {
                let hw = f.height * f.width;
                let data = match &self.input_projections[l] {
                    Some(p) => p.forward(&f.data, f.height, f.width, Activation::None).0,
                    None => f.data.clone(),
                };
                let mut rows = transpose(&data, dim, hw);
                for r in rows.chunks_mut(dim) {
                    add_assign(r, &self.level_embed[l * dim..(l + 1) * dim]);
                }
                let pos = transpose(&sine_positions(dim, f.height, f.width), dim, hw);
                (rows, pos, (f.height, f.width))
            })
            .collect();
        let mf = &px.mask_features;
        let mut hidden = self.query_features.clone();
        let mut normed = hidden.clone();
        self.norm.forward(&mut normed);
        let (mut mask, mut allowed) = self.predict_mask(&normed, mf, levels[0].2);
        for (i, layer) in self.layers.iter().enumerate() {
            let (keys, pos, size) = &levels[i % LEVELS];
            hidden = {
                let _t = scope("masked-attention decoder layers", 0.0);
                self.layer(layer, &hidden, keys, pos, size.0 * size.1, &allowed)
            };
            normed = hidden.clone();
            self.norm.forward(&mut normed);
            (mask, allowed) = self.predict_mask(&normed, mf, levels[(i + 1) % LEVELS].2);
        }
        let classes = self.class_predictor.out - 1;
        Predictions {
            class_logits: self.class_predictor.forward(&normed, nq),
            mask_logits: mask,
            queries: nq,
            classes,
            mask_size: (mf.height, mf.width),
        }
    }

    /// The mask head on LayerNorm-ed queries: `[queries, h4 * w4]` logits, and which pixels
    /// of a level of size `target` each query may attend to next (`sigmoid >= 0.5` of the
    /// logits resized there; all of them when none is).
    fn predict_mask(
        &self,
        normed: &[f32],
        mf: &FeatureMap,
        target: (usize, usize),
    ) -> (Vec<f32>, Vec<bool>) {
        let _t = scope("mask head", 0.0);
        let nq = self.queries;
        let emb = self.mask_embedder.forward(normed, nq);
        let hw = mf.height * mf.width;
        let logits = matmul(&emb, &mf.data, nq, mf.channels, hw);
        let small = bilinear(&logits, nq, (mf.height, mf.width), target, false);
        let n = target.0 * target.1;
        let mut allowed: Vec<bool> = small
            .iter()
            .map(|&x| 1.0 / (1.0 + (-x).exp()) >= 0.5)
            .collect();
        for row in allowed.chunks_mut(n) {
            if !row.iter().any(|&a| a) {
                row.iter_mut().for_each(|a| *a = true);
            }
        }
        (logits, allowed)
    }

    /// One decoder layer on the queries `hidden [nq, dim]`.
    fn layer(
        &self,
        layer: &DecoderLayer,
        hidden: &[f32],
        keys: &[f32],
        key_pos: &[f32],
        nk: usize,
        allowed: &[bool],
    ) -> Vec<f32> {
        let (dim, nq) = (self.dim, self.queries);
        let d = dim / self.heads;
        let norm_if = |pre: bool, n: &LayerNorm, x: &[f32]| {
            let mut y = x.to_vec();
            if pre {
                n.forward(&mut y);
            }
            y
        };
        // Masked cross-attention.
        let x = norm_if(self.pre_norm, &layer.cross_norm, hidden);
        let q = layer.cross_q.forward(&add(&x, &self.query_positions), nq);
        let k = layer.cross_k.forward(&add(keys, key_pos), nk);
        let v = layer.cross_v.forward(keys, nk);
        let mask_hook = |_head: usize, row0: usize, _q: &[f32], s: &mut [f32]| {
            for (r, row) in s.chunks_mut(nk).enumerate() {
                let ok = &allowed[(row0 + r) * nk..][..nk];
                for (v, &a) in row.iter_mut().zip(ok) {
                    if !a {
                        *v = f32::NEG_INFINITY;
                    }
                }
            }
        };
        let o = attention(
            HeadView::packed(&q, nq, d),
            HeadView::packed(&k, nk, d),
            HeadView::packed(&v, nk, d),
            self.heads,
            d,
            1.0 / (d as f32).sqrt(),
            Hooks {
                bias: Some(&mask_hook),
                precision: layer.cross_q.precision(),
                ..Hooks::default()
            },
        );
        let mut h = hidden.to_vec();
        add_assign(&mut h, &layer.cross_out.forward(&o, nq));
        if !self.pre_norm {
            layer.cross_norm.forward(&mut h);
        }
        // Self-attention among the queries (positions on queries and keys).
        let x = norm_if(self.pre_norm, &layer.self_norm, &h);
        let qk = add(&x, &self.query_positions);
        let o = layer
            .self_attn
            .forward(&qk, nq, &qk, &x, nq, layer.self_attn.hooks());
        add_assign(&mut h, &o);
        if !self.pre_norm {
            layer.self_norm.forward(&mut h);
        }
        // FFN.
        let x = norm_if(self.pre_norm, &layer.final_norm, &h);
        let mut f = layer.fc1.forward(&x, nq);
        Activation::Relu.apply(&mut f);
        add_assign(&mut h, &layer.fc2.forward(&f, nq));
        if !self.pre_norm {
            layer.final_norm.forward(&mut h);
        }
        h
    }
}

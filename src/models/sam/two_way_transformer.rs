//! SAM's two-way transformer: prompt tokens and image positions attend to each other in turns
//! (token self-attention, token-to-image cross-attention, MLP, image-to-token cross-attention),
//! then a final token-to-image attention. Keys `transformer.layers.{i}.*`,
//! `transformer.final_attn_token_to_image.*`, `transformer.norm_final_attn.*`.

use crate::models::host::{Linear, add, layer_norm, matmul, relu, softmax_rows};
use crate::weights::{KeyCheck, NamedTensors};

pub(crate) fn linear(
    src: &NamedTensors,
    ck: &mut KeyCheck,
    key: &str,
    inp: usize,
    out: usize,
) -> Linear {
    let w = ck
        .take(src, &format!("{key}.weight"), &[out, inp])
        .map(|t| t.data.clone())
        .unwrap_or_else(|| vec![0.0; out * inp]);
    let b = ck
        .take(src, &format!("{key}.bias"), &[out])
        .map(|t| t.data.clone())
        .unwrap_or_else(|| vec![0.0; out]);
    Linear { w, b, inp, out }
}

pub(crate) struct Norm {
    w: Vec<f32>,
    b: Vec<f32>,
}

pub(crate) fn norm(src: &NamedTensors, ck: &mut KeyCheck, key: &str, dim: usize) -> Norm {
    let g = |n: &str, ck: &mut KeyCheck| {
        ck.take(src, &format!("{key}.{n}"), &[dim])
            .map(|t| t.data.clone())
            .unwrap_or_else(|| vec![0.0; dim])
    };
    Norm {
        w: g("weight", ck),
        b: g("bias", ck),
    }
}

impl Norm {
    fn apply(&self, x: &mut [f32]) {
        layer_norm(x, self.w.len(), &self.w, &self.b, 1e-5);
    }
}

/// Multi-head attention with projections to `dim / downsample` channels.
pub(crate) struct Attention {
    q: Linear,
    k: Linear,
    v: Linear,
    out: Linear,
    heads: usize,
}

impl Attention {
    fn load(
        src: &NamedTensors,
        ck: &mut KeyCheck,
        key: &str,
        dim: usize,
        heads: usize,
        downsample: usize,
    ) -> Self {
        let inner = dim / downsample;
        Self {
            q: linear(src, ck, &format!("{key}.q_proj"), dim, inner),
            k: linear(src, ck, &format!("{key}.k_proj"), dim, inner),
            v: linear(src, ck, &format!("{key}.v_proj"), dim, inner),
            out: linear(src, ck, &format!("{key}.out_proj"), inner, dim),
            heads,
        }
    }

    /// `q` has `nq` rows, `k` and `v` have `nk` rows (one batch item).
    fn forward(&self, q: &[f32], nq: usize, k: &[f32], v: &[f32], nk: usize) -> Vec<f32> {
        let (q, k, v) = (
            self.q.forward(q, nq),
            self.k.forward(k, nk),
            self.v.forward(v, nk),
        );
        let inner = self.q.out;
        let ch = inner / self.heads;
        let scale = 1.0 / (ch as f32).sqrt();
        let mut out = vec![0.0f32; nq * inner];
        for h in 0..self.heads {
            let take = |m: &[f32], n: usize| -> Vec<f32> {
                (0..n)
                    .flat_map(|r| m[r * inner + h * ch..r * inner + (h + 1) * ch].to_vec())
                    .collect()
            };
            let (qh, kh, vh) = (take(&q, nq), take(&k, nk), take(&v, nk));
            let mut attn = crate::models::host::matmul_nt(&qh, &kh, nq, ch, nk);
            attn.iter_mut().for_each(|a| *a *= scale);
            softmax_rows(&mut attn, nk);
            let o = matmul(&attn, &vh, nq, nk, ch);
            for r in 0..nq {
                out[r * inner + h * ch..r * inner + (h + 1) * ch]
                    .copy_from_slice(&o[r * ch..(r + 1) * ch]);
            }
        }
        self.out.forward(&out, nq)
    }
}

struct Block {
    self_attn: Attention,
    norm1: Norm,
    cross_t2i: Attention,
    norm2: Norm,
    lin1: Linear,
    lin2: Linear,
    norm3: Norm,
    norm4: Norm,
    cross_i2t: Attention,
    skip_first_layer_pe: bool,
}

pub struct TwoWayTransformer {
    layers: Vec<Block>,
    final_attn: Attention,
    norm_final: Norm,
    pub dim: usize,
}

impl TwoWayTransformer {
    pub(crate) fn load(
        src: &NamedTensors,
        ck: &mut KeyCheck,
        prefix: &str,
        dim: usize,
        heads: usize,
        mlp_dim: usize,
        depth: usize,
    ) -> Self {
        let layers = (0..depth)
            .map(|i| {
                let p = format!("{prefix}layers.{i}");
                Block {
                    self_attn: Attention::load(src, ck, &format!("{p}.self_attn"), dim, heads, 1),
                    norm1: norm(src, ck, &format!("{p}.norm1"), dim),
                    cross_t2i: Attention::load(
                        src,
                        ck,
                        &format!("{p}.cross_attn_token_to_image"),
                        dim,
                        heads,
                        2,
                    ),
                    norm2: norm(src, ck, &format!("{p}.norm2"), dim),
                    lin1: linear(src, ck, &format!("{p}.mlp.lin1"), dim, mlp_dim),
                    lin2: linear(src, ck, &format!("{p}.mlp.lin2"), mlp_dim, dim),
                    norm3: norm(src, ck, &format!("{p}.norm3"), dim),
                    norm4: norm(src, ck, &format!("{p}.norm4"), dim),
                    cross_i2t: Attention::load(
                        src,
                        ck,
                        &format!("{p}.cross_attn_image_to_token"),
                        dim,
                        heads,
                        2,
                    ),
                    skip_first_layer_pe: i == 0,
                }
            })
            .collect();
        Self {
            layers,
            final_attn: Attention::load(
                src,
                ck,
                &format!("{prefix}final_attn_token_to_image"),
                dim,
                heads,
                2,
            ),
            norm_final: norm(src, ck, &format!("{prefix}norm_final_attn"), dim),
            dim,
        }
    }

    /// `image` and `image_pe` are `[HW, C]` (positions as rows), `tokens` is `[N, C]`.
    /// Returns the updated (tokens, image).
    pub fn forward(
        &self,
        image: &[f32],
        image_pe: &[f32],
        tokens: &[f32],
        n: usize,
    ) -> (Vec<f32>, Vec<f32>) {
        let hw = image.len() / self.dim;
        let mut queries = tokens.to_vec();
        let mut keys = image.to_vec();
        for l in &self.layers {
            if l.skip_first_layer_pe {
                queries = l.self_attn.forward(&queries, n, &queries, &queries, n);
            } else {
                let q = add(&queries, tokens);
                let a = l.self_attn.forward(&q, n, &q, &queries, n);
                queries = add(&queries, &a);
            }
            l.norm1.apply(&mut queries);
            let q = add(&queries, tokens);
            let k = add(&keys, image_pe);
            let a = l.cross_t2i.forward(&q, n, &k, &keys, hw);
            queries = add(&queries, &a);
            l.norm2.apply(&mut queries);
            let mut h = l.lin1.forward(&queries, n);
            relu(&mut h);
            let m = l.lin2.forward(&h, n);
            queries = add(&queries, &m);
            l.norm3.apply(&mut queries);
            let q = add(&queries, tokens);
            let k = add(&keys, image_pe);
            let a = l.cross_i2t.forward(&k, hw, &q, &queries, n);
            keys = add(&keys, &a);
            l.norm4.apply(&mut keys);
        }
        let q = add(&queries, tokens);
        let k = add(&keys, image_pe);
        let a = self.final_attn.forward(&q, n, &k, &keys, hw);
        queries = add(&queries, &a);
        self.norm_final.apply(&mut queries);
        (queries, keys)
    }
}

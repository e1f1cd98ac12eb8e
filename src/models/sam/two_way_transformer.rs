//! SAM's two-way transformer: prompt tokens and image positions attend to each other in turns
//! (token self-attention, token-to-image cross-attention, MLP, image-to-token cross-attention),
//! then a final token-to-image attention. Keys `transformer.layers.{i}.*`,
//! `transformer.final_attn_token_to_image.*`, `transformer.norm_final_attn.*`.

use crate::nn::{Attention, LayerNorm, Linear, Mlp, Weights};
use crate::ops::Activation;
use crate::ops::attention::Hooks;
use crate::ops::layout::{add, dot};
use crate::ops::matmul::{matmul, matmul_nt};
use crate::ops::profile::scope;
use crate::ops::simd::vectorized;
use crate::ops::softmax::softmax_rows_seq;
use rayon::prelude::*;

/// SAM's attention with the image side's projections folded into the token side when one
/// side is a handful of prompt tokens and the other the image.
trait TwoWayAttention {
    fn attend(&self, q: &[f32], nq: usize, k: &[f32], v: &[f32], nk: usize) -> Vec<f32>;
    fn image_queries_projected(
        &self,
        qp: &[f32],
        nq: usize,
        k: &[f32],
        v: &[f32],
        nk: usize,
    ) -> Vec<f32>;
    fn token_outputs(&self, vp: &[f32], nk: usize) -> Vec<f32>;
    #[allow(clippy::too_many_arguments)]
    fn image_queries_tail(
        &self,
        x: &[f32],
        xdim: usize,
        nq: usize,
        bmat: &[f32],
        cvec: &[f32],
        gmat: &[f32],
        nk: usize,
    ) -> Vec<f32>;
    fn image_queries(&self, x: &[f32], nq: usize, k: &[f32], v: &[f32], nk: usize) -> Vec<f32>;
    fn image_keys(&self, q: &[f32], nq: usize, xk: &[f32], xv: &[f32], nk: usize) -> Vec<f32>;
}

/// For `n` projected rows `p` (`[n, heads * ch]`) and the other side's projection `lin`
/// (`[heads * ch, dim]` weight): per head h and row j, `p_h[j] . W_h` (`[heads * n, dim]`) and
/// `p_h[j] . b_h` (`[heads * n]`), so that `(X W_h^T + b_h) p_h[j]^T = X row + c`.
fn fold_into_projection(p: &[f32], n: usize, lin: &Linear, heads: usize) -> (Vec<f32>, Vec<f32>) {
    let (inner, dim) = (lin.out, lin.inp);
    let ch = inner / heads;
    let mut mat = vec![0.0f32; heads * n * dim];
    let mut vec = vec![0.0f32; heads * n];
    for h in 0..heads {
        for j in 0..n {
            let pr = &p[j * inner + h * ch..j * inner + (h + 1) * ch];
            let row = &mut mat[(h * n + j) * dim..(h * n + j + 1) * dim];
            for (t, &pv) in pr.iter().enumerate() {
                let wrow = &lin.w[(h * ch + t) * dim..(h * ch + t + 1) * dim];
                row.iter_mut().zip(wrow).for_each(|(r, w)| *r += pv * w);
                vec[h * n + j] += pv * lin.b[h * ch + t];
            }
        }
    }
    (mat, vec)
}

fn load_attention(w: &Weights, dim: usize, heads: usize, downsample: usize) -> Attention {
    Attention::load(w, dim, dim / downsample, heads)
}

impl TwoWayAttention for Attention {
    /// `q` has `nq` rows, `k` and `v` have `nk` rows (one batch item). When one side is a
    /// handful of prompt tokens and the other the image (4096 positions), the projections of
    /// the image side are folded into the token side instead of computed (see `image_queries`
    /// and `image_keys`): the same function, half the arithmetic.
    fn attend(&self, q: &[f32], nq: usize, k: &[f32], v: &[f32], nk: usize) -> Vec<f32> {
        let inner = self.q.out;
        if nk * self.heads < inner && nq > 4 * nk {
            return self.image_queries(q, nq, k, v, nk);
        }
        if nq * self.heads < inner && nk > 4 * nq {
            return self.image_keys(q, nq, k, v, nk);
        }
        self.forward(q, nq, k, v, nk, Hooks::default())
    }

    /// Image queries already projected (`[nq, inner]`, bias included) against a few token
    /// keys: scores through a block-diagonal `[heads * nk, inner]` key matrix, output in the
    /// low-rank form of [`image_queries`](Self::image_queries).
    fn image_queries_projected(
        &self,
        qp: &[f32],
        nq: usize,
        k: &[f32],
        v: &[f32],
        nk: usize,
    ) -> Vec<f32> {
        let (inner, heads) = (self.q.out, self.heads);
        let ch = inner / heads;
        let (kp, vp) = (self.k.forward(k, nk), self.v.forward(v, nk));
        let m = heads * nk;
        let mut bmat = vec![0.0f32; m * inner];
        for h in 0..heads {
            for j in 0..nk {
                bmat[(h * nk + j) * inner + h * ch..(h * nk + j) * inner + (h + 1) * ch]
                    .copy_from_slice(&kp[j * inner + h * ch..j * inner + (h + 1) * ch]);
            }
        }
        let gmat = self.token_outputs(&vp, nk);
        self.image_queries_tail(qp, inner, nq, &bmat, &vec![0.0; m], &gmat, nk)
    }

    /// `G [heads * nk, dim]`: row (h, j) = `V_h[j] Wo_h^T`, each token value through its head's
    /// slice of the output projection.
    fn token_outputs(&self, vp: &[f32], nk: usize) -> Vec<f32> {
        let (inner, heads) = (self.q.out, self.heads);
        let ch = inner / heads;
        let dim = self.out.out;
        let mut gmat = vec![0.0f32; heads * nk * dim];
        for h in 0..heads {
            for j in 0..nk {
                let vr = &vp[j * inner + h * ch..j * inner + (h + 1) * ch];
                let grow = &mut gmat[(h * nk + j) * dim..(h * nk + j + 1) * dim];
                for (o, g) in grow.iter_mut().enumerate() {
                    let wo = &self.out.w[o * inner + h * ch..o * inner + (h + 1) * ch];
                    *g = dot(vr, wo);
                }
            }
        }
        gmat
    }

    /// Scores `x B^T + c` (`[nq, heads * nk]`), per-head softmax, then `A G + bo`.
    #[allow(clippy::too_many_arguments)]
    fn image_queries_tail(
        &self,
        x: &[f32],
        xdim: usize,
        nq: usize,
        bmat: &[f32],
        cvec: &[f32],
        gmat: &[f32],
        nk: usize,
    ) -> Vec<f32> {
        let heads = self.heads;
        let ch = self.q.out / heads;
        let scale = 1.0 / (ch as f32).sqrt();
        let (m, dim) = (heads * nk, self.out.out);
        let mut scores = matmul_nt(x, bmat, nq, xdim, m);
        // each row is `heads` segments of `nk` scores: one softmax call per block of rows
        scores.par_chunks_mut(m * 64).for_each(|rows| {
            vectorized(
                #[inline(always)]
                || {
                    for row in rows.chunks_mut(m) {
                        row.iter_mut()
                            .zip(cvec)
                            .for_each(|(s, c)| *s = (*s + c) * scale);
                    }
                },
            );
            softmax_rows_seq(rows, nk);
        });
        let mut out = matmul(&scores, gmat, nq, m, dim);
        out.par_chunks_mut(dim)
            .for_each(|r| r.iter_mut().zip(&self.out.b).for_each(|(v, b)| *v += b));
        out
    }

    /// Many queries (image positions), few keys (tokens). Per head h, with `Wq_h` the head's
    /// rows of the query weight: scores `= (X Wq_h^T + bq_h) K_h^T = X (K_h Wq_h)^T + K_h bq_h`,
    /// and the output projection `sum_h A_h V_h Wo_h^T = sum_h A_h G_h`, so both image-sized
    /// products have `heads * nk` (not `inner`) columns.
    fn image_queries(&self, x: &[f32], nq: usize, k: &[f32], v: &[f32], nk: usize) -> Vec<f32> {
        let (dim, heads) = (self.q.inp, self.heads);
        let (kp, vp) = (self.k.forward(k, nk), self.v.forward(v, nk));
        // B [heads * nk, dim]: row (h, j) = K_h[j] . Wq_h ; c[(h, j)] = K_h[j] . bq_h
        let (bmat, cvec) = fold_into_projection(&kp, nk, &self.q, heads);
        let gmat = self.token_outputs(&vp, nk);
        self.image_queries_tail(x, dim, nq, &bmat, &cvec, &gmat, nk)
    }

    /// Few queries (tokens), many keys (image positions). Per head, scores
    /// `= Q_h (X Wk_h^T + bk_h)^T = (Q_h Wk_h) X^T + Q_h bk_h`, and `A_h (Y Wv_h^T + bv_h) =
    /// (A_h Y) Wv_h^T + bv_h` (attention rows sum to one).
    fn image_keys(&self, q: &[f32], nq: usize, xk: &[f32], xv: &[f32], nk: usize) -> Vec<f32> {
        let (inner, dim, heads) = (self.q.out, self.k.inp, self.heads);
        let ch = inner / heads;
        let scale = 1.0 / (ch as f32).sqrt();
        let qp = self.q.forward(q, nq);
        let m = heads * nq;
        let (cmat, cvec) = fold_into_projection(&qp, nq, &self.k, heads);
        let mut scores = matmul_nt(&cmat, xk, m, dim, nk);
        scores.par_chunks_mut(nk).enumerate().for_each(|(r, row)| {
            let c = cvec[r];
            row.iter_mut().for_each(|s| *s = (*s + c) * scale);
            softmax_rows_seq(row, nk);
        });
        let ay = matmul(&scores, xv, m, nk, dim); // [heads * nq, dim]
        let mut o = vec![0.0f32; nq * inner];
        for h in 0..heads {
            for i in 0..nq {
                let a = &ay[(h * nq + i) * dim..(h * nq + i + 1) * dim];
                for t in 0..ch {
                    let wv = &self.v.w[(h * ch + t) * dim..(h * ch + t + 1) * dim];
                    o[i * inner + h * ch + t] = dot(a, wv) + self.v.b[h * ch + t];
                }
            }
        }
        self.out.forward(&o, nq)
    }
}

struct Block {
    self_attn: Attention,
    norm1: LayerNorm,
    cross_t2i: Attention,
    norm2: LayerNorm,
    mlp: Mlp,
    norm3: LayerNorm,
    norm4: LayerNorm,
    cross_i2t: Attention,
    skip_first_layer_pe: bool,
}

/// The first layer's projections of the image side, which do not depend on the prompt when
/// the dense prompt is the no-mask embedding: made once per image, they take the first layer's
/// image-sized products out of every prompt.
pub struct ImageSideCache {
    k_t2i: Vec<f32>,
    v_t2i: Vec<f32>,
    q_i2t: Vec<f32>,
}

impl std::fmt::Debug for ImageSideCache {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "ImageSideCache({} values)", self.k_t2i.len() * 3)
    }
}

pub struct TwoWayTransformer {
    layers: Vec<Block>,
    final_attn: Attention,
    norm_final: LayerNorm,
    pub dim: usize,
}

impl TwoWayTransformer {
    /// `w` scoped to the transformer (`mask_decoder.transformer`).
    pub(crate) fn load(
        w: &Weights,
        dim: usize,
        heads: usize,
        mlp_dim: usize,
        depth: usize,
    ) -> Self {
        let norm = |w: &Weights| LayerNorm::load(w, dim, 1e-5);
        let layers = (0..depth)
            .map(|i| {
                let l = w.pp("layers").pp(i);
                Block {
                    self_attn: load_attention(&l.pp("self_attn"), dim, heads, 1),
                    norm1: norm(&l.pp("norm1")),
                    cross_t2i: load_attention(&l.pp("cross_attn_token_to_image"), dim, heads, 2),
                    norm2: norm(&l.pp("norm2")),
                    // SAM's MLPBlock names its layers lin1 / lin2, SAM 2's MLP layers.0 / layers.1.
                    mlp: if l.contains("mlp.layers.0.weight") {
                        Mlp::load_numbered(&l.pp("mlp"), &[dim, mlp_dim, dim], Activation::Relu)
                    } else {
                        Mlp::load(
                            &l.pp("mlp"),
                            &["lin1", "lin2"],
                            &[dim, mlp_dim, dim],
                            Activation::Relu,
                        )
                    },
                    norm3: norm(&l.pp("norm3")),
                    norm4: norm(&l.pp("norm4")),
                    cross_i2t: load_attention(&l.pp("cross_attn_image_to_token"), dim, heads, 2),
                    skip_first_layer_pe: i == 0,
                }
            })
            .collect();
        Self {
            layers,
            final_attn: load_attention(&w.pp("final_attn_token_to_image"), dim, heads, 2),
            norm_final: norm(&w.pp("norm_final_attn")),
            dim,
        }
    }

    /// The first layer's image-side projections of `image` (rows, with the dense prompt added).
    pub fn prepare(&self, image: &[f32], image_pe: &[f32]) -> ImageSideCache {
        let hw = image.len() / self.dim;
        let l = &self.layers[0];
        let k = add(image, image_pe);
        ImageSideCache {
            k_t2i: l.cross_t2i.k.forward(&k, hw),
            v_t2i: l.cross_t2i.v.forward(image, hw),
            q_i2t: l.cross_i2t.q.forward(&k, hw),
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
        self.forward_cached(image, image_pe, tokens, n, None)
    }

    /// [`forward`](Self::forward) with the first layer's image side from [`prepare`](Self::prepare)
    /// (which must have been made from the same `image` and `image_pe`).
    pub fn forward_cached(
        &self,
        image: &[f32],
        image_pe: &[f32],
        tokens: &[f32],
        n: usize,
        cache: Option<&ImageSideCache>,
    ) -> (Vec<f32>, Vec<f32>) {
        const TOKENS: &str = "two-way transformer: token self-attention, MLP, norms";
        const T2I: &str = "two-way transformer: tokens to image attention";
        const I2T: &str = "two-way transformer: image to tokens attention";
        const IMAGE: &str = "two-way transformer: image-side adds and norms";
        let hw = image.len() / self.dim;
        let mut queries = tokens.to_vec();
        let mut keys = {
            let _t = scope(IMAGE, 0.0);
            image.to_vec()
        };
        for (li, l) in self.layers.iter().enumerate() {
            let cache = cache.filter(|_| li == 0);
            {
                let _t = scope(TOKENS, 0.0);
                if l.skip_first_layer_pe {
                    queries = l.self_attn.attend(&queries, n, &queries, &queries, n);
                } else {
                    let q = add(&queries, tokens);
                    let a = l.self_attn.attend(&q, n, &q, &queries, n);
                    queries = add(&queries, &a);
                }
                l.norm1.forward(&mut queries);
            }
            // keys + positions, used by both cross attentions (keys change only after them)
            let keys_pe = match cache {
                Some(_) => Vec::new(),
                None => {
                    let _t = scope(IMAGE, 0.0);
                    add(&keys, image_pe)
                }
            };
            {
                let _t = scope(T2I, 0.0);
                let q = add(&queries, tokens);
                let a = match cache {
                    Some(c) => {
                        let qp = l.cross_t2i.q.forward(&q, n);
                        l.cross_t2i.forward_projected(
                            &qp,
                            n,
                            &c.k_t2i,
                            &c.v_t2i,
                            hw,
                            Hooks::default(),
                        )
                    }
                    None => l.cross_t2i.attend(&q, n, &keys_pe, &keys, hw),
                };
                queries = add(&queries, &a);
            }
            {
                let _t = scope(TOKENS, 0.0);
                l.norm2.forward(&mut queries);
                let m = l.mlp.forward(&queries, n);
                queries = add(&queries, &m);
                l.norm3.forward(&mut queries);
            }
            let a = {
                let _t = scope(I2T, 0.0);
                let q = add(&queries, tokens);
                match cache {
                    Some(c) => l
                        .cross_i2t
                        .image_queries_projected(&c.q_i2t, hw, &q, &queries, n),
                    None => l.cross_i2t.attend(&keys_pe, hw, &q, &queries, n),
                }
            };
            let _t = scope(IMAGE, 0.0);
            keys = add(&keys, &a);
            l.norm4.forward(&mut keys);
        }
        let k = {
            let _t = scope(IMAGE, 0.0);
            add(&keys, image_pe)
        };
        let _t = scope(T2I, 0.0);
        let q = add(&queries, tokens);
        let a = self.final_attn.attend(&q, n, &k, &keys, hw);
        queries = add(&queries, &a);
        self.norm_final.forward(&mut queries);
        (queries, keys)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn lin(inp: usize, out: usize, seed: u32) -> Linear {
        let mut s = seed;
        let mut r = || {
            s ^= s << 13;
            s ^= s >> 17;
            s ^= s << 5;
            (s as f32 / u32::MAX as f32) - 0.5
        };
        Linear {
            w: (0..inp * out).map(|_| r()).collect(),
            b: (0..out).map(|_| r()).collect(),
            inp,
            out,
        }
    }

    #[test]
    fn folded_projections_equal_plain_attention() {
        let (dim, inner, heads) = (48, 32, 2);
        let a = Attention {
            q: lin(dim, inner, 1),
            k: lin(dim, inner, 2),
            v: lin(dim, inner, 3),
            out: lin(inner, dim, 4),
            heads,
        };
        let x: Vec<f32> = lin(dim, 300, 5).w; // 300 "image" rows
        let xv: Vec<f32> = lin(dim, 300, 6).w;
        let t: Vec<f32> = lin(dim, 3, 7).w; // 3 tokens
        let rel = |a: &[f32], b: &[f32]| {
            let n: f32 = a.iter().zip(b).map(|(x, y)| (x - y) * (x - y)).sum();
            let d: f32 = b.iter().map(|y| y * y).sum();
            (n / d).sqrt()
        };
        let fast = a.attend(&x, 300, &t, &t, 3);
        let plain = a.forward(&x, 300, &t, &t, 3, Hooks::default());
        assert!(
            rel(&fast, &plain) < 1e-5,
            "image queries {}",
            rel(&fast, &plain)
        );
        let proj = a.q.forward(&x, 300);
        let cached = a.image_queries_projected(&proj, 300, &t, &t, 3);
        assert!(
            rel(&cached, &plain) < 1e-5,
            "projected image queries {}",
            rel(&cached, &plain)
        );
        let fast = a.attend(&t, 3, &x, &xv, 300);
        let plain = a.forward(&t, 3, &x, &xv, 300, Hooks::default());
        assert!(
            rel(&fast, &plain) < 1e-5,
            "image keys {}",
            rel(&fast, &plain)
        );
    }
}

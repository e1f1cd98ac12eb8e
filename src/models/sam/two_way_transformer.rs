//! SAM's two-way transformer: prompt tokens and image positions attend to each other in turns
//! (token self-attention, token-to-image cross-attention, MLP, image-to-token cross-attention),
//! then a final token-to-image attention. Keys `transformer.layers.{i}.*`,
//! `transformer.final_attn_token_to_image.*`, `transformer.norm_final_attn.*`.

use crate::nn::{Attention, LayerNorm, Linear, Mlp, Weights};
use crate::ops::Activation;
use crate::ops::attention::{HeadView, Hooks, few_keys};
use crate::ops::layout::{add, add_row_bias, columns, dot};
use crate::ops::matmul::{matmul, matmul_nt};
use crate::ops::profile::scope;
use crate::ops::simd::vectorized;
use crate::ops::softmax::softmax_rows_seq;
use rayon::prelude::*;

/// The token side of an image-to-token attention in the folded form of
/// [`few_keys`](crate::ops::attention::few_keys): scores `x B^T + c`, output `A G`.
struct Folded {
    bmat: Vec<f32>,
    cvec: Vec<f32>,
    gmat: Vec<f32>,
    nk: usize,
}

/// SAM's attention with the image side's projections folded into the token side when one
/// side is a handful of prompt tokens and the other the image.
trait TwoWayAttention {
    fn attend(&self, q: &[f32], nq: usize, k: &[f32], v: &[f32], nk: usize) -> Vec<f32>;
    fn fold_tokens(&self, k: &[f32], v: &[f32], nk: usize, projected_queries: bool) -> Folded;
    fn token_outputs(&self, vp: &[f32], nk: usize) -> Vec<f32>;
    #[allow(clippy::too_many_arguments)]
    fn image_queries_into(
        &self,
        f: &Folded,
        x: &[f32],
        xdim: usize,
        nq: usize,
        out: &mut [f32],
        aux: &mut [f32],
        epilogue: impl Fn(usize, &mut [f32], &mut [f32], &mut [f32]) + Sync,
    );
    fn image_queries_with(&self, f: &Folded, x: &[f32], xdim: usize, nq: usize) -> Vec<f32>;
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
    let weight = lin.weight();
    vectorized(
        #[inline(always)]
        || {
            for h in 0..heads {
                for j in 0..n {
                    let pr = &p[j * inner + h * ch..j * inner + (h + 1) * ch];
                    let row = &mut mat[(h * n + j) * dim..(h * n + j + 1) * dim];
                    for (t, &pv) in pr.iter().enumerate() {
                        let wrow = &weight[(h * ch + t) * dim..(h * ch + t + 1) * dim];
                        row.iter_mut().zip(wrow).for_each(|(r, w)| *r += pv * w);
                        vec[h * n + j] += pv * lin.b[h * ch + t];
                    }
                }
            }
        },
    );
    (mat, vec)
}

fn load_attention(w: &Weights, dim: usize, heads: usize, downsample: usize) -> Attention {
    Attention::load(w, dim, dim / downsample, heads)
}

impl TwoWayAttention for Attention {
    /// `q` has `nq` rows, `k` and `v` have `nk` rows (one batch item). When one side is a
    /// handful of prompt tokens and the other the image (4096 positions), the projections of
    /// the image side are folded into the token side instead of computed (see `fold_tokens`
    /// and `image_keys`): the same function, half the arithmetic.
    fn attend(&self, q: &[f32], nq: usize, k: &[f32], v: &[f32], nk: usize) -> Vec<f32> {
        let inner = self.q.out;
        if nk * self.heads < inner && nq > 4 * nk {
            let folded = self.fold_tokens(k, v, nk, false);
            return self.image_queries_with(&folded, q, self.q.inp, nq);
        }
        if nq * self.heads < inner && nk > 4 * nq {
            return self.image_keys(q, nq, k, v, nk);
        }
        self.forward(q, nq, k, v, nk, Hooks::default())
    }

    /// The token side of image queries (`[nq, dim]` rows, or with `projected_queries` the
    /// image rows already through the query projection, bias included) against `nk` token keys
    /// and values: per head h, `(X Wq_h^T + bq_h) K_h^T = X (K_h Wq_h)^T + K_h bq_h`, and the
    /// output projection `sum_h A_h V_h Wo_h^T = sum_h A_h G_h`, so that both image-sized
    /// products have `heads * nk` (not `inner`) columns. Projected queries take a
    /// block-diagonal `[heads * nk, inner]` key matrix.
    fn fold_tokens(&self, k: &[f32], v: &[f32], nk: usize, projected_queries: bool) -> Folded {
        let (inner, heads) = (self.q.out, self.heads);
        let ch = inner / heads;
        let (kp, vp) = (self.k.forward(k, nk), self.v.forward(v, nk));
        let m = heads * nk;
        let (bmat, cvec) = if projected_queries {
            let mut bmat = vec![0.0f32; m * inner];
            for h in 0..heads {
                for j in 0..nk {
                    bmat[(h * nk + j) * inner + h * ch..(h * nk + j) * inner + (h + 1) * ch]
                        .copy_from_slice(&kp[j * inner + h * ch..j * inner + (h + 1) * ch]);
                }
            }
            (bmat, vec![0.0; m])
        } else {
            fold_into_projection(&kp, nk, &self.q, heads)
        };
        Folded {
            bmat,
            cvec,
            gmat: self.token_outputs(&vp, nk),
            nk,
        }
    }

    /// `G [heads * nk, dim]`: row (h, j) = `V_h[j] Wo_h^T`, each token value through its head's
    /// slice of the output projection.
    fn token_outputs(&self, vp: &[f32], nk: usize) -> Vec<f32> {
        let (inner, heads) = (self.q.out, self.heads);
        let ch = inner / heads;
        let dim = self.out.out;
        let mut gmat = vec![0.0f32; heads * nk * dim];
        let w_out = self.out.weight();
        vectorized(
            #[inline(always)]
            || {
                for h in 0..heads {
                    for j in 0..nk {
                        let vr = &vp[j * inner + h * ch..j * inner + (h + 1) * ch];
                        let grow = &mut gmat[(h * nk + j) * dim..(h * nk + j + 1) * dim];
                        for (o, g) in grow.iter_mut().enumerate() {
                            let wo = &w_out[o * inner + h * ch..o * inner + (h + 1) * ch];
                            *g = dot(vr, wo);
                        }
                    }
                }
            },
        );
        gmat
    }

    /// `A G` block by block of image rows, each block's product handed to `epilogue` (see
    /// [`few_keys`]); the output projection's bias is the epilogue's to add.
    fn image_queries_into(
        &self,
        f: &Folded,
        x: &[f32],
        xdim: usize,
        nq: usize,
        out: &mut [f32],
        aux: &mut [f32],
        epilogue: impl Fn(usize, &mut [f32], &mut [f32], &mut [f32]) + Sync,
    ) {
        let scale = 1.0 / ((self.q.out / self.heads) as f32).sqrt();
        few_keys(
            x, xdim, nq, &f.bmat, &f.cvec, &f.gmat, f.nk, scale, out, aux, epilogue,
        );
    }

    /// The attention's output `A G + bo` for image rows `x` (`[nq, xdim]`).
    fn image_queries_with(&self, f: &Folded, x: &[f32], xdim: usize, nq: usize) -> Vec<f32> {
        let mut out = vec![0.0f32; nq * self.out.out];
        let bias = &self.out.b;
        self.image_queries_into(f, x, xdim, nq, &mut out, &mut [], |_, p, rows, _| {
            add_row_bias(p, bias);
            rows.copy_from_slice(p);
        });
        out
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
        let w_v = self.v.weight();
        vectorized(
            #[inline(always)]
            || {
                for h in 0..heads {
                    for i in 0..nq {
                        let a = &ay[(h * nq + i) * dim..(h * nq + i + 1) * dim];
                        for t in 0..ch {
                            let wv = &w_v[(h * ch + t) * dim..(h * ch + t + 1) * dim];
                            o[i * inner + h * ch + t] = dot(a, wv) + self.v.b[h * ch + t];
                        }
                    }
                }
            },
        );
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
    /// The first token-to-image attention's keys and values, head-major `[heads, HW, d]`.
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
        let a = &l.cross_t2i;
        let d = a.head_dim();
        let head_major = |x: Vec<f32>| -> Vec<f32> {
            (0..a.heads)
                .flat_map(|h| columns(&x, hw, a.q.out, h * d, d))
                .collect()
        };
        ImageSideCache {
            k_t2i: head_major(a.k.forward(&k, hw)),
            v_t2i: head_major(a.v.forward(image, hw)),
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
        self.forward_cached(image, image_pe, tokens, n, n, None)
    }

    /// [`forward`](Self::forward) with the first layer's image side from [`prepare`](Self::prepare)
    /// (which must have been made from the same `image` and `image_pe`), returning only the
    /// first `used` tokens (the final attention's rows are independent: the outputs nobody
    /// reads are not computed).
    pub fn forward_cached(
        &self,
        image: &[f32],
        image_pe: &[f32],
        tokens: &[f32],
        n: usize,
        used: usize,
        cache: Option<&ImageSideCache>,
    ) -> (Vec<f32>, Vec<f32>) {
        const TOKENS: &str = "two-way transformer: token self-attention, MLP, norms";
        const T2I: &str = "two-way transformer: tokens to image attention";
        const I2T: &str = "two-way transformer: image to tokens attention (+ residual, norm)";
        const IMAGE: &str = "two-way transformer: image-side copies and adds";
        let (dim, hw) = (self.dim, image.len() / self.dim);
        let inner = self.layers.first().map_or(dim, |l| l.cross_i2t.q.out);
        let mut queries = tokens.to_vec();
        // The image rows and the same plus positions, which both cross attentions read (the
        // image side changes only in the image-to-token attention, whose epilogue makes both).
        let (mut keys, mut keys_pe) = {
            let _t = scope(IMAGE, 0.0);
            let pe = match cache {
                Some(_) => Vec::new(),
                None => add(image, image_pe),
            };
            (image.to_vec(), pe)
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
            {
                let _t = scope(T2I, 0.0);
                let q = add(&queries, tokens);
                let a = match cache {
                    Some(c) => {
                        let a = &l.cross_t2i;
                        let (d, heads) = (a.head_dim(), a.heads);
                        let qp = a.q.forward(&q, n);
                        a.forward_views(
                            HeadView::packed(&qp, n, d),
                            HeadView::head_major(&c.k_t2i, heads, hw, d),
                            HeadView::head_major(&c.v_t2i, heads, hw, d),
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
            let _t = scope(I2T, 0.0);
            let q = add(&queries, tokens);
            let folded = l.cross_i2t.fold_tokens(&q, &queries, n, cache.is_some());
            let (x, xdim) = match cache {
                Some(c) => (&c.q_i2t[..], inner),
                None => (&keys_pe[..], dim),
            };
            // keys = norm4(keys + attention), and keys + positions, a block of rows at a time.
            let mut next_pe = vec![0.0f32; hw * dim];
            let (bias, norm) = (&l.cross_i2t.out.b, &l.norm4);
            l.cross_i2t.image_queries_into(
                &folded,
                x,
                xdim,
                hw,
                &mut keys,
                &mut next_pe,
                |r0, p, rows, pe_rows| {
                    add_row_bias(p, bias);
                    rows.iter_mut().zip(p.iter()).for_each(|(k, a)| *k += a);
                    norm.forward(rows);
                    let pe = &image_pe[r0 * dim..r0 * dim + rows.len()];
                    for ((o, k), p) in pe_rows.iter_mut().zip(rows.iter()).zip(pe) {
                        *o = k + p;
                    }
                },
            );
            keys_pe = next_pe;
        }
        let _t = scope(T2I, 0.0);
        let used = used.min(n);
        let mut queries = queries[..used * dim].to_vec();
        let q = add(&queries, &tokens[..used * dim]);
        let a = self.final_attn.attend(&q, used, &keys_pe, &keys, hw);
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
        let w = (0..inp * out).map(|_| r()).collect();
        Linear::new(w, (0..out).map(|_| r()).collect(), inp, out)
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
        let x: Vec<f32> = lin(dim, 300, 5).weight().into_owned(); // 300 "image" rows
        let xv: Vec<f32> = lin(dim, 300, 6).weight().into_owned();
        let t: Vec<f32> = lin(dim, 3, 7).weight().into_owned(); // 3 tokens
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
        let folded = a.fold_tokens(&t, &t, 3, true);
        let cached = a.image_queries_with(&folded, &proj, 32, 300);
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

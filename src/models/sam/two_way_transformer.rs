//! SAM's two-way transformer: prompt tokens and image positions attend to each other in turns
//! (token self-attention, token-to-image cross-attention, MLP, image-to-token cross-attention),
//! then a final token-to-image attention. Keys `transformer.layers.{i}.*`,
//! `transformer.final_attn_token_to_image.*`, `transformer.norm_final_attn.*`.

use crate::models::host::{
    Linear, add, columns, layer_norm, matmul, relu, softmax_rows, softmax_rows_seq,
};
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

    /// `q` has `nq` rows, `k` and `v` have `nk` rows (one batch item). When one side is a
    /// handful of prompt tokens and the other the image (4096 positions), the projections of
    /// the image side are folded into the token side instead of computed (see `image_queries`
    /// and `image_keys`): the same function, half the arithmetic.
    fn forward(&self, q: &[f32], nq: usize, k: &[f32], v: &[f32], nk: usize) -> Vec<f32> {
        let inner = self.q.out;
        if nk * self.heads < inner && nq > 4 * nk {
            return self.image_queries(q, nq, k, v, nk);
        }
        if nq * self.heads < inner && nk > 4 * nq {
            return self.image_keys(q, nq, k, v, nk);
        }
        self.dense(q, nq, k, v, nk)
    }

    /// Attention as written: project, per-head softmax(q k^T / sqrt(d)) v, project.
    fn dense(&self, q: &[f32], nq: usize, k: &[f32], v: &[f32], nk: usize) -> Vec<f32> {
        let (qp, kp, vp) = (
            self.q.forward(q, nq),
            self.k.forward(k, nk),
            self.v.forward(v, nk),
        );
        self.dense_projected(&qp, nq, &kp, &vp, nk)
    }

    /// [`dense`](Self::dense) after the three input projections.
    fn dense_projected(&self, q: &[f32], nq: usize, k: &[f32], v: &[f32], nk: usize) -> Vec<f32> {
        let inner = self.q.out;
        let ch = inner / self.heads;
        let scale = 1.0 / (ch as f32).sqrt();
        let mut out = vec![0.0f32; nq * inner];
        for h in 0..self.heads {
            let (qh, kh, vh) = (
                columns(q, nq, inner, h * ch, ch),
                columns(k, nk, inner, h * ch, ch),
                columns(v, nk, inner, h * ch, ch),
            );
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
                    *g = crate::models::host::dot(vr, wo);
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
        let mut scores = crate::models::host::matmul_nt_par(x, bmat, nq, xdim, m);
        use rayon::prelude::*;
        scores.par_chunks_mut(m).for_each(|row| {
            for h in 0..heads {
                let seg = &mut row[h * nk..(h + 1) * nk];
                seg.iter_mut()
                    .zip(&cvec[h * nk..(h + 1) * nk])
                    .for_each(|(s, c)| *s = (*s + c) * scale);
                softmax_rows_seq(seg, nk);
            }
        });
        let mut out = crate::models::host::matmul_par(&scores, gmat, nq, m, dim);
        out.par_chunks_mut(dim)
            .for_each(|r| r.iter_mut().zip(&self.out.b).for_each(|(v, b)| *v += b));
        out
    }

    /// Many queries (image positions), few keys (tokens). Per head h, with `Wq_h` the head's
    /// rows of the query weight: scores `= (X Wq_h^T + bq_h) K_h^T = X (K_h Wq_h)^T + K_h bq_h`,
    /// and the output projection `sum_h A_h V_h Wo_h^T = sum_h A_h G_h`, so both image-sized
    /// products have `heads * nk` (not `inner`) columns.
    fn image_queries(&self, x: &[f32], nq: usize, k: &[f32], v: &[f32], nk: usize) -> Vec<f32> {
        let (inner, dim, heads) = (self.q.out, self.q.inp, self.heads);
        let ch = inner / heads;
        let (kp, vp) = (self.k.forward(k, nk), self.v.forward(v, nk));
        let m = heads * nk;
        // B [heads * nk, dim]: row (h, j) = K_h[j] . Wq_h ; c[(h, j)] = K_h[j] . bq_h
        let mut bmat = vec![0.0f32; m * dim];
        let mut cvec = vec![0.0f32; m];
        for h in 0..heads {
            for j in 0..nk {
                let kr = &kp[j * inner + h * ch..j * inner + (h + 1) * ch];
                let row = &mut bmat[(h * nk + j) * dim..(h * nk + j + 1) * dim];
                for (t, &kv) in kr.iter().enumerate() {
                    let wrow = &self.q.w[(h * ch + t) * dim..(h * ch + t + 1) * dim];
                    row.iter_mut().zip(wrow).for_each(|(r, w)| *r += kv * w);
                    cvec[h * nk + j] += kv * self.q.b[h * ch + t];
                }
            }
        }
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
        let mut cmat = vec![0.0f32; m * dim];
        let mut cvec = vec![0.0f32; m];
        for h in 0..heads {
            for i in 0..nq {
                let qr = &qp[i * inner + h * ch..i * inner + (h + 1) * ch];
                let row = &mut cmat[(h * nq + i) * dim..(h * nq + i + 1) * dim];
                for (t, &qv) in qr.iter().enumerate() {
                    let wrow = &self.k.w[(h * ch + t) * dim..(h * ch + t + 1) * dim];
                    row.iter_mut().zip(wrow).for_each(|(r, w)| *r += qv * w);
                    cvec[h * nq + i] += qv * self.k.b[h * ch + t];
                }
            }
        }
        let mut scores = crate::models::host::matmul_nt_par(&cmat, xk, m, dim, nk);
        use rayon::prelude::*;
        scores.par_chunks_mut(nk).enumerate().for_each(|(r, row)| {
            let c = cvec[r];
            row.iter_mut().for_each(|s| *s = (*s + c) * scale);
            softmax_rows_seq(row, nk);
        });
        let ay = crate::models::host::matmul_par(&scores, xv, m, nk, dim); // [heads * nq, dim]
        let mut o = vec![0.0f32; nq * inner];
        for h in 0..heads {
            for i in 0..nq {
                let a = &ay[(h * nq + i) * dim..(h * nq + i + 1) * dim];
                for t in 0..ch {
                    let wv = &self.v.w[(h * ch + t) * dim..(h * ch + t + 1) * dim];
                    o[i * inner + h * ch + t] =
                        crate::models::host::dot(a, wv) + self.v.b[h * ch + t];
                }
            }
        }
        self.out.forward(&o, nq)
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
        let hw = image.len() / self.dim;
        let mut queries = tokens.to_vec();
        let mut keys = image.to_vec();
        for (li, l) in self.layers.iter().enumerate() {
            let cache = cache.filter(|_| li == 0);
            if l.skip_first_layer_pe {
                queries = l.self_attn.forward(&queries, n, &queries, &queries, n);
            } else {
                let q = add(&queries, tokens);
                let a = l.self_attn.forward(&q, n, &q, &queries, n);
                queries = add(&queries, &a);
            }
            l.norm1.apply(&mut queries);
            // keys + positions, used by both cross attentions (keys change only after them)
            let keys_pe = match cache {
                Some(_) => Vec::new(),
                None => add(&keys, image_pe),
            };
            let q = add(&queries, tokens);
            let a = match cache {
                Some(c) => {
                    let qp = l.cross_t2i.q.forward(&q, n);
                    l.cross_t2i.dense_projected(&qp, n, &c.k_t2i, &c.v_t2i, hw)
                }
                None => l.cross_t2i.forward(&q, n, &keys_pe, &keys, hw),
            };
            queries = add(&queries, &a);
            l.norm2.apply(&mut queries);
            let mut h = l.lin1.forward(&queries, n);
            relu(&mut h);
            let m = l.lin2.forward(&h, n);
            queries = add(&queries, &m);
            l.norm3.apply(&mut queries);
            let q = add(&queries, tokens);
            let a = match cache {
                Some(c) => l
                    .cross_i2t
                    .image_queries_projected(&c.q_i2t, hw, &q, &queries, n),
                None => l.cross_i2t.forward(&keys_pe, hw, &q, &queries, n),
            };
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
        let fast = a.forward(&x, 300, &t, &t, 3);
        let plain = a.dense(&x, 300, &t, &t, 3);
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
        let fast = a.forward(&t, 3, &x, &xv, 300);
        let plain = a.dense(&t, 3, &x, &xv, 300);
        assert!(
            rel(&fast, &plain) < 1e-5,
            "image keys {}",
            rel(&fast, &plain)
        );
    }
}

//! Multi-head scaled dot-product attention on projected rows, with hooks where the models
//! differ: rotary embeddings on each head's queries and keys (SAM 2's memory attention), and
//! an additive term on each head's scores (SAM's decomposed relative positions, TinyViT's
//! per-offset biases).

use super::activation::exp_nonpositive;
use super::bf16::{self, Panels, Precision, Rows};
use super::layout::columns;
use super::matmul::{SendPtr, gemm_strided, matmul_acc, matmul_nt, parallel_for, product, written};
use super::simd::{max, sum, vectorized};
use super::softmax::exp_shifted;
use rayon::prelude::*;
use std::borrow::Cow;

/// Where each head's vectors sit in a projection's rows: head `h` of row `r` is
/// `data[r * stride + base + h * step..][..head_dim]`. Packed `[rows, heads * head_dim]`
/// projections have `step = head_dim`; a fused `qkv` projection is three views of one buffer.
#[derive(Clone, Copy, Debug)]
pub struct HeadView<'a> {
    pub data: &'a [f32],
    pub rows: usize,
    pub stride: usize,
    pub base: usize,
    pub step: usize,
}

impl<'a> HeadView<'a> {
    /// `[rows, heads * head_dim]`, heads side by side.
    pub fn packed(data: &'a [f32], rows: usize, head_dim: usize) -> Self {
        Self {
            data,
            rows,
            stride: data.len() / rows.max(1),
            base: 0,
            step: head_dim,
        }
    }

    /// Head `h`'s `[rows, head_dim]` values.
    pub fn head(&self, h: usize, head_dim: usize) -> Vec<f32> {
        self.head_values(h, head_dim).into_owned()
    }

    /// Head `h`'s `[rows, head_dim]` values, borrowed when they are contiguous (head-major
    /// layouts, single heads), else gathered.
    pub fn head_values(&self, h: usize, head_dim: usize) -> Cow<'a, [f32]> {
        let start = self.base + h * self.step;
        if self.stride == head_dim {
            Cow::Borrowed(&self.data[start..start + self.rows * head_dim])
        } else {
            Cow::Owned(columns(self.data, self.rows, self.stride, start, head_dim))
        }
    }

    /// `[heads, rows, head_dim]`: each head's rows contiguous, heads one after another.
    pub fn head_major(data: &'a [f32], heads: usize, rows: usize, head_dim: usize) -> Self {
        assert_eq!(data.len(), heads * rows * head_dim, "head-major size");
        Self {
            data,
            rows,
            stride: head_dim,
            base: 0,
            step: rows * head_dim,
        }
    }
}

/// Per-head queries and keys `(head, q [nq, d], k [nk, d])`, rotated in place before the scores.
pub type RotateHook<'a> = &'a (dyn Fn(usize, &mut [f32], &mut [f32]) + Sync);
/// Per-head scaled scores of a block of query rows `(head, first row, q [rows, d], scores
/// [rows, nk])`, added to before the softmax (`q` unscaled, after any rotation). Long inputs
/// come a block of rows at a time, so that no head's whole score matrix is ever held.
pub type BiasHook<'a> = &'a (dyn Fn(usize, usize, &[f32], &mut [f32]) + Sync);

/// What a model adds to plain attention, and the arithmetic of its two products.
#[derive(Clone, Copy, Default)]
pub struct Hooks<'a> {
    pub rotate: Option<RotateHook<'a>>,
    pub bias: Option<BiasHook<'a>>,
    /// bf16: the scores and the values products on bf16 operands with f32 sums (keys and
    /// values packed once per head); the softmax and the hooks stay in f32.
    pub precision: Precision,
}

/// `softmax(q k^T * scale + bias) v` for every head; returns `[nq, heads * head_dim]`, heads
/// side by side (ready for the output projection). Heads run in parallel when the score
/// matrices are large and the caller is not already on one of rayon's workers.
pub fn attention(
    q: HeadView,
    k: HeadView,
    v: HeadView,
    heads: usize,
    head_dim: usize,
    scale: f32,
    hooks: Hooks,
) -> Vec<f32> {
    let (nq, nk) = (q.rows, k.rows);
    assert_eq!(k.rows, v.rows, "as many keys as values");
    if nq * nk >= 1 << 18 {
        let plain = hooks.rotate.is_none() && hooks.bias.is_none();
        if plain && nk > LONG_KEYS && hooks.precision == Precision::F32 {
            return streamed(q, k, v, heads, head_dim, scale);
        }
        return blocked(
            q,
            k,
            v,
            heads,
            head_dim,
            scale,
            hooks,
            match hooks.precision {
                Precision::F32 => query_block(nk),
                // keys and values are packed once per head, so small blocks cost nothing
                // and keep the scores in L2 (SAM ViT-B's global attention on a Zen 5: 523
                // ms with 256-row blocks, 500 with 96, 476 with 48)
                Precision::Bf16 => 4 * bf16::TILE_ROWS,
            },
            true,
        );
    }
    // One block per head; heads in parallel when there is enough work to share.
    let parallel = nq * nk * heads * head_dim >= 1 << 21 && heads > 1;
    blocked(q, k, v, heads, head_dim, scale, hooks, nq.max(1), parallel)
}

/// Rows of queries per block in [`blocked`]: the block's scores near 1 MiB, but at least 256
/// rows, so that each block's packing of the keys for the score product is spread over enough
/// rows (with 4096 keys, SAM ViT-B's global attention: 64-row blocks took 2.03 s of the
/// encoder, 128 rows 1.91 s, 256 rows 1.86 s, 512 rows 2.03 s).
fn query_block(nk: usize) -> usize {
    ((1usize << 18) / nk.max(1)).clamp(256, 1024)
}

/// Attention one block of `rows` queries of one head at a time (the scores of a block stay in
/// cache instead of a whole `nq x nk` matrix per head; a bias hook adds to each row of scores
/// just before its softmax); blocks and heads spread over the threads when `parallel` and the
/// caller is not already on one of rayon's workers. Each block writes its rows of its head's
/// columns of the output in place.
#[allow(clippy::too_many_arguments)]
fn blocked(
    q: HeadView,
    k: HeadView,
    v: HeadView,
    heads: usize,
    head_dim: usize,
    scale: f32,
    hooks: Hooks,
    rows: usize,
    parallel: bool,
) -> Vec<f32> {
    let (nq, nk, d) = (q.rows, k.rows, head_dim);
    // The queries are scaled once; a bias hook reads them unscaled, so then they are kept too.
    let plain = hooks.bias.is_none();
    // One block per head: the scores are scaled instead (the products round as the whole
    // matrix's would).
    let whole = rows >= nq;
    let (qs, ks, vs) = split_heads(
        q,
        k,
        v,
        heads,
        d,
        if plain && !whole { scale } else { 1.0 },
        hooks.rotate,
    );
    let (qs, raw) = if plain || whole {
        (qs, Vec::new())
    } else {
        let scaled = qs
            .iter()
            .map(|x| Cow::Owned(x.iter().map(|a| a * scale).collect()))
            .collect();
        (scaled, qs)
    };
    let width = heads * d;
    if nq == 0 || nk == 0 || d == 0 {
        return vec![0.0f32; nq * width];
    }
    // bf16: each head's keys and values packed once for all its blocks
    let packed: Vec<(Panels, Panels)> = if hooks.precision == Precision::Bf16 {
        let pack = |h: usize| {
            let mut values = Panels::default();
            values.fill_from_columns(&vs[h], nk, d, d);
            (Panels::from_rows(&ks[h], nk, d), values)
        };
        if parallel && heads > 1 && rayon::current_thread_index().is_none() {
            (0..heads).into_par_iter().map(pack).collect()
        } else {
            (0..heads).map(pack).collect()
        }
    } else {
        Vec::new()
    };
    let blocks = nq.div_ceil(rows);
    let task = |dst: SendPtr, t: usize| {
        let (h, b) = (t / blocks, t % blocks);
        let r0 = b * rows;
        let r = rows.min(nq - r0);
        let qb = &qs[h][r0 * d..(r0 + r) * d];
        let bias = |i: usize, row: &mut [f32]| {
            if let Some(bias) = hooks.bias {
                let raw = if whole { &qs[h] } else { &raw[h] };
                bias(h, r0 + i, &raw[(r0 + i) * d..(r0 + i + 1) * d], row);
            }
        };
        let out = dst.get().wrapping_add(r0 * width + h * d);
        // SAFETY: task `t` writes rows `r0..r0 + r` of columns `h * d..(h + 1) * d` of `out`
        // only (within its `nq * width` values), disjoint from every other task's.
        unsafe {
            match packed.get(h) {
                Some((kp, vp)) => {
                    head_rows_bf16(qb, kp, vp, r, whole.then_some(scale), bias, out, width)
                }
                None => head_rows(
                    qb,
                    &ks[h],
                    &vs[h],
                    r,
                    nk,
                    d,
                    whole.then_some(scale),
                    bias,
                    out,
                    width,
                ),
            }
        }
    };
    // SAFETY: the tasks together write every row of every head's columns (each block's
    // values product writes all its rows' `d` values).
    unsafe {
        written(nq * width, |out| {
            let dst = SendPtr(out);
            let task = |t: usize| task(dst, t);
            if parallel && heads * blocks > 1 && rayon::current_thread_index().is_none() {
                (0..heads * blocks).into_par_iter().for_each(task);
            } else {
                (0..heads * blocks).for_each(task);
            }
        })
    }
}

/// Query rows per block of [`few_keys`]: a block's scores and output rows stay in L2.
const FEW_KEYS_ROWS: usize = 128;

/// The folded form of attention when many query rows (an image's positions) attend to a few
/// keys (prompt tokens), with the query and output projections moved to the key side: `bmat`
/// `[heads * nk, xdim]` and `cvec` `[heads * nk]` give the scores `x B^T + c` (row (h, j) is
/// key j of head h through head h's query projection), and `gmat` `[heads * nk, dim]` the
/// output (row (h, j) is value j of head h through head h's slice of the output projection).
/// Block by block of query rows, blocks over the threads when the caller is not already on one
/// of rayon's workers: the scores, scaled by `scale` and soft-maxed per head, are multiplied by
/// `G`, and `epilogue(first row, product rows, out rows, aux rows)` turns the block's product
/// into its rows of `out` (`[nq, dim]`, holding e.g. the residual) and of `aux` (`[nq, aux
/// width]`, or empty) while they are in cache: a bias, a residual, a LayerNorm. The whole
/// `[nq, heads * nk]` score matrix and `[nq, dim]` product are never held.
#[allow(clippy::too_many_arguments)]
pub fn few_keys(
    x: &[f32],
    xdim: usize,
    nq: usize,
    bmat: &[f32],
    cvec: &[f32],
    gmat: &[f32],
    nk: usize,
    scale: f32,
    out: &mut [f32],
    aux: &mut [f32],
    epilogue: impl Fn(usize, &mut [f32], &mut [f32], &mut [f32]) + Sync,
) {
    let m = cvec.len();
    let dim = out.len() / nq.max(1);
    assert!(
        xdim > 0
            && m > 0
            && x.len() >= nq * xdim
            && bmat.len() == m * xdim
            && gmat.len() == m * dim,
        "folded attention sizes"
    );
    assert!(
        nk > 0 && m.is_multiple_of(nk),
        "scores split into heads of nk keys"
    );
    let aw = aux.len() / nq.max(1);
    let rows = FEW_KEYS_ROWS;
    let block = |(bi, (o, a)): (usize, (&mut [f32], &mut [f32]))| {
        let r0 = bi * rows;
        let r = o.len() / dim.max(1);
        // The block's scores transposed, `[m, r]` (bmat @ the block's rows of x, read
        // transposed): each head's softmax over its `nk` keys is then element-wise over `nk`
        // rows, vectorised along the block's queries.
        let mut s = product(m, r, xdim, bmat, xdim, 1, &x[r0 * xdim..], 1, xdim);
        vectorized(
            #[inline(always)]
            || {
                for (row, c) in s.chunks_exact_mut(r).zip(cvec) {
                    row.iter_mut().for_each(|v| *v = (*v + c) * scale);
                }
                let mut acc = vec![0.0f32; r];
                for head in s.chunks_exact_mut(nk * r) {
                    acc.copy_from_slice(&head[..r]);
                    for row in head[r..].chunks_exact(r) {
                        acc.iter_mut().zip(row).for_each(|(m, v)| *m = m.max(*v));
                    }
                    for row in head.chunks_exact_mut(r) {
                        row.iter_mut()
                            .zip(&acc)
                            .for_each(|(v, m)| *v = exp_nonpositive(*v - m));
                    }
                    acc.fill(0.0);
                    for row in head.chunks_exact(r) {
                        acc.iter_mut().zip(row).for_each(|(t, v)| *t += v);
                    }
                    acc.iter_mut().for_each(|t| *t = 1.0 / *t);
                    for row in head.chunks_exact_mut(r) {
                        row.iter_mut().zip(&acc).for_each(|(v, i)| *v *= i);
                    }
                }
            },
        );
        // A [r, m] read from its transpose s, @ gmat [m, dim]
        let mut p = product(r, dim, m, &s, 1, r, gmat, dim, 1);
        epilogue(r0, &mut p, o, a);
    };
    let auxes: Box<dyn Iterator<Item = &mut [f32]>> = if aw == 0 {
        Box::new(std::iter::repeat_with(|| &mut [][..]))
    } else {
        Box::new(aux.chunks_mut(rows * aw))
    };
    let pairs: Vec<(&mut [f32], &mut [f32])> = out.chunks_mut(rows * dim).zip(auxes).collect();
    if pairs.len() > 1 && rayon::current_thread_index().is_none() {
        pairs.into_par_iter().enumerate().for_each(block);
    } else {
        pairs.into_iter().enumerate().for_each(block);
    }
}

thread_local! {
    /// One block's scores, kept between blocks on each thread (taken while in use, so that a
    /// nested call on the same thread makes its own).
    static SCORES: std::cell::Cell<Vec<f32>> = const { std::cell::Cell::new(Vec::new()) };
}

/// `softmax(qb kh^T + bias) vh` for `r` query rows `qb [r, d]` of one head over `nk` keys and
/// values `[nk, d]`, written to `r` rows of `d` values at `dst` (row stride `ldd`); `bias(i,
/// row)` adds to the scores of query `i`. With `scale_scores: None` the queries come scaled and
/// the exponentials stay unnormalised through the values product, each output row divided by
/// its sum afterwards (`d` divisions instead of `nk`): the blocks of long attention. With
/// `Some(scale)` the scores are scaled and each row normalised before the values product, in
/// the order of the whole-matrix formula (short attention, the decoders' parity fixtures).
///
/// # Safety
/// `dst` must point to `(r - 1) * ldd + d` writable floats that alias none of the inputs.
#[allow(clippy::too_many_arguments)]
unsafe fn head_rows(
    qb: &[f32],
    kh: &[f32],
    vh: &[f32],
    r: usize,
    nk: usize,
    d: usize,
    scale_scores: Option<f32>,
    bias: impl Fn(usize, &mut [f32]),
    dst: *mut f32,
    ldd: usize,
) {
    let mut s = SCORES.take();
    if s.len() < r * nk {
        s.resize(r * nk, 0.0);
    }
    let scores = &mut s[..r * nk];
    // SAFETY: `qb` holds `r x d` values, `kh` `nk x d`, `scores` `r x nk`.
    unsafe {
        gemm_strided(
            r,
            nk,
            d,
            qb.as_ptr(),
            d as isize,
            1,
            kh.as_ptr(),
            1,
            d as isize,
            scores.as_mut_ptr(),
            nk,
            parallel_for(r, d, nk),
        )
    };
    let sums = softmax_scores(scores, nk, scale_scores, bias);
    // SAFETY: `scores` holds `r x nk` values, `vh` `nk x d`; `dst` as the caller promises.
    unsafe {
        gemm_strided(
            r,
            d,
            nk,
            scores.as_ptr(),
            nk as isize,
            1,
            vh.as_ptr(),
            d as isize,
            1,
            dst,
            ldd,
            parallel_for(r, nk, d),
        );
        for (i, total) in sums.iter().enumerate().filter(|(_, t)| **t != 1.0) {
            let row = std::slice::from_raw_parts_mut(dst.add(i * ldd), d);
            let inv = 1.0 / total;
            row.iter_mut().for_each(|x| *x *= inv);
        }
    }
    SCORES.set(s);
}

/// The scores `[r, nk]` of [`head_rows`] through the softmax, in place: scaled (with
/// `Some(scale)`), `bias` added, exponentiated; normalised too with `Some(scale)`. Returns
/// each row's sum of exponentials (1 where normalised).
fn softmax_scores(
    scores: &mut [f32],
    nk: usize,
    scale_scores: Option<f32>,
    bias: impl Fn(usize, &mut [f32]),
) -> Vec<f32> {
    let mut sums = vec![0.0f32; scores.len() / nk.max(1)];
    for (i, (row, total)) in scores
        .chunks_exact_mut(nk.max(1))
        .zip(&mut sums)
        .enumerate()
    {
        if let Some(scale) = scale_scores {
            row.iter_mut().for_each(|x| *x *= scale);
        }
        bias(i, row);
        *total = vectorized(
            #[inline(always)]
            || exp_shifted(row),
        );
        if scale_scores.is_some() {
            let inv = 1.0 / *total;
            row.iter_mut().for_each(|x| *x *= inv);
            *total = 1.0;
        }
    }
    sums
}

/// [`head_rows`] with both products in bf16 (`ops::bf16`), on keys `kp` (`[nk, d]` packed as
/// a product's columns) and values `vp` (`[nk, d]` packed as its right operand).
///
/// # Safety
/// As [`head_rows`].
#[allow(clippy::too_many_arguments)]
unsafe fn head_rows_bf16(
    qb: &[f32],
    kp: &Panels,
    vp: &Panels,
    r: usize,
    scale_scores: Option<f32>,
    bias: impl Fn(usize, &mut [f32]),
    dst: *mut f32,
    ldd: usize,
) {
    let (nk, d) = (kp.n, kp.k);
    let mut s = SCORES.take();
    if s.len() < r * nk {
        s.resize(r * nk, 0.0);
    }
    let scores = &mut s[..r * nk];
    let at_scores = SendPtr(scores.as_mut_ptr());
    // (the products share out their tiles when this block runs alone, off rayon's workers)
    let parallel = rayon::current_thread_index().is_none();
    bf16::product(&Rows::new(qb, r, d), kp, parallel, |at, tile| {
        // SAFETY: rows `< r`, columns `< nk` of the scores, this tile's alone.
        unsafe { bf16::store(at, tile, at_scores.get(), nk) }
    });
    let sums = softmax_scores(scores, nk, scale_scores, bias);
    let at_dst = SendPtr(dst);
    bf16::product(&Rows::new(scores, r, nk), vp, parallel, |at, tile| {
        vectorized(
            #[inline(always)]
            || {
                for (i, acc) in tile.iter().enumerate().take(at.rows) {
                    let inv = 1.0 / sums[at.i0 + i];
                    // SAFETY: row `at.i0 + i < r`, columns `at.c0..at.c0 + at.cols <= d`:
                    // within the caller's rows, this tile's alone.
                    let row = unsafe {
                        std::slice::from_raw_parts_mut(
                            at_dst.get().add((at.i0 + i) * ldd + at.c0),
                            at.cols,
                        )
                    };
                    row.iter_mut().zip(acc).for_each(|(y, &a)| *y = a * inv);
                }
            },
        )
    });
    SCORES.set(s);
}

/// Each head's queries (rotated, then scaled by `scale`), keys (rotated) and values, packed
/// (borrowed where a head's values are contiguous and left as they are).
#[allow(clippy::type_complexity)]
fn split_heads<'a>(
    q: HeadView<'a>,
    k: HeadView<'a>,
    v: HeadView<'a>,
    heads: usize,
    head_dim: usize,
    scale: f32,
    rotate: Option<RotateHook>,
) -> (
    Vec<Cow<'a, [f32]>>,
    Vec<Cow<'a, [f32]>>,
    Vec<Cow<'a, [f32]>>,
) {
    let (qs, ks): (Vec<_>, Vec<_>) = (0..heads)
        .map(|h| {
            let (mut qh, mut kh) = (q.head_values(h, head_dim), k.head_values(h, head_dim));
            if let Some(rotate) = rotate {
                rotate(h, qh.to_mut(), kh.to_mut());
            }
            if scale != 1.0 {
                qh.to_mut().iter_mut().for_each(|a| *a *= scale);
            }
            (qh, kh)
        })
        .unzip();
    let vs = (0..heads).map(|h| v.head_values(h, head_dim)).collect();
    (qs, ks, vs)
}

/// Runs `task(head * blocks + block)` for every head and block of `rows` queries (over the
/// threads unless the caller is on one of rayon's workers) and places each block's output
/// rows `[rows, head_dim]` in `[nq, heads * head_dim]`.
fn run_blocks(
    task: impl Fn(usize) -> Vec<f32> + Sync + Send,
    nq: usize,
    heads: usize,
    head_dim: usize,
    rows: usize,
) -> Vec<f32> {
    let blocks = nq.div_ceil(rows);
    let outs: Vec<Vec<f32>> = if rayon::current_thread_index().is_none() {
        (0..heads * blocks).into_par_iter().map(task).collect()
    } else {
        (0..heads * blocks).map(task).collect()
    };
    let width = heads * head_dim;
    let mut out = vec![0.0f32; nq * width];
    for (t, o) in outs.iter().enumerate() {
        let (h, b) = (t / blocks, t % blocks);
        let r0 = b * rows;
        for (i, row) in o.chunks(head_dim).enumerate() {
            out[(r0 + i) * width + h * head_dim..][..head_dim].copy_from_slice(row);
        }
    }
    out
}

/// Above this many keys [`streamed`] takes over from [`blocked`], whose query blocks shrink as
/// the keys grow until every small block streams all the keys and values from memory (at 4096
/// keys and more, streamed tiles ran 1.1-1.4x faster on this project's 2-core machine).
const LONG_KEYS: usize = 2048;
/// Query rows and keys per tile of [`streamed`]: a tile's scores, keys and values stay in L2.
const TILE_QUERIES: usize = 256;
const TILE_KEYS: usize = 512;

/// Attention over many keys, tile by tile with a running softmax (FlashAttention's
/// recurrence: per query row the running maximum and sum, the partial output rescaled when the
/// maximum grows), so that only one tile of scores exists at a time; query blocks and heads
/// spread over the threads when the caller is not already on one of rayon's workers.
fn streamed(
    q: HeadView,
    k: HeadView,
    v: HeadView,
    heads: usize,
    head_dim: usize,
    scale: f32,
) -> Vec<f32> {
    let (nq, nk, d) = (q.rows, k.rows, head_dim);
    let (qs, ks, vs) = split_heads(q, k, v, heads, d, scale, None);
    let blocks = nq.div_ceil(TILE_QUERIES);
    let task = |t: usize| -> Vec<f32> {
        let (h, b) = (t / blocks, t % blocks);
        let r0 = b * TILE_QUERIES;
        let r = TILE_QUERIES.min(nq - r0);
        let qb = &qs[h][r0 * d..(r0 + r) * d];
        let mut o = vec![0.0f32; r * d];
        let mut run_max = vec![f32::NEG_INFINITY; r];
        let mut run_sum = vec![0.0f32; r];
        for k0 in (0..nk).step_by(TILE_KEYS) {
            let c = TILE_KEYS.min(nk - k0);
            let mut s = matmul_nt(qb, &ks[h][k0 * d..(k0 + c) * d], r, d, c);
            vectorized(
                #[inline(always)]
                || {
                    for i in 0..r {
                        let row = &mut s[i * c..(i + 1) * c];
                        let m = max(row).max(run_max[i]);
                        row.iter_mut().for_each(|x| *x = exp_nonpositive(*x - m));
                        let alpha = if run_max[i] == f32::NEG_INFINITY {
                            0.0
                        } else {
                            exp_nonpositive(run_max[i] - m)
                        };
                        run_sum[i] = run_sum[i] * alpha + sum(row);
                        run_max[i] = m;
                        if alpha != 1.0 {
                            o[i * d..(i + 1) * d].iter_mut().for_each(|x| *x *= alpha);
                        }
                    }
                },
            );
            matmul_acc(&s, &vs[h][k0 * d..(k0 + c) * d], r, c, d, &mut o);
        }
        for (row, &l) in o.chunks_mut(d).zip(&run_sum) {
            let inv = 1.0 / l;
            row.iter_mut().for_each(|x| *x *= inv);
        }
        o
    };
    run_blocks(task, nq, heads, d, TILE_QUERIES)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ops::matmul::matmul;
    use crate::ops::softmax::softmax_rows;

    #[test]
    fn one_key_returns_its_value() {
        // With a single key every query attends to it fully.
        let q = vec![0.3f32, -1.0, 2.0, 0.5];
        let k = vec![1.0f32, 1.0];
        let v = vec![7.0f32, -3.0];
        let o = attention(
            HeadView::packed(&q, 2, 1),
            HeadView::packed(&k, 1, 1),
            HeadView::packed(&v, 1, 1),
            2,
            1,
            1.0,
            Hooks::default(),
        );
        assert_eq!(o, vec![7.0, -3.0, 7.0, -3.0]);
    }

    #[test]
    fn few_keys_equals_the_whole_matrix() {
        // 300 query rows (three blocks), 2 heads of 3 keys: the blocked, transposed scores with
        // their epilogue (a residual and a second output) against the plain formula.
        let (nq, xdim, nk, heads, dim) = (300, 20, 3, 2, 10);
        let m = heads * nk;
        let val = |i: usize| ((i * 7919 % 1000) as f32 / 250.0) - 2.0;
        let x: Vec<f32> = (0..nq * xdim).map(val).collect();
        let bmat: Vec<f32> = (0..m * xdim).map(|i| val(i + 5)).collect();
        let cvec: Vec<f32> = (0..m).map(|i| val(i * 13 + 1)).collect();
        let gmat: Vec<f32> = (0..m * dim).map(|i| val(i + 17)).collect();
        let residual: Vec<f32> = (0..nq * dim).map(|i| val(i + 23)).collect();
        let mut out = residual.clone();
        let mut aux = vec![0.0f32; nq * dim];
        few_keys(
            &x,
            xdim,
            nq,
            &bmat,
            &cvec,
            &gmat,
            nk,
            0.7,
            &mut out,
            &mut aux,
            |_, p, o, a| {
                o.iter_mut().zip(p.iter()).for_each(|(o, p)| *o += p);
                a.iter_mut().zip(o.iter()).for_each(|(a, o)| *a = 2.0 * o);
            },
        );
        let mut s = matmul_nt(&x, &bmat, nq, xdim, m);
        for row in s.chunks_mut(m) {
            row.iter_mut()
                .zip(&cvec)
                .for_each(|(v, c)| *v = (*v + c) * 0.7);
        }
        softmax_rows(&mut s, nk);
        let want = matmul(&s, &gmat, nq, m, dim);
        let mut err = 0.0f32;
        for i in 0..nq * dim {
            err = err.max((out[i] - residual[i] - want[i]).abs());
            err = err.max((aux[i] - 2.0 * out[i]).abs());
        }
        assert!(err < 1e-5, "max abs difference {err}");
    }

    #[test]
    fn streamed_attention_equals_the_whole_matrix() {
        // 300 queries over 9000 keys (with a large score spread, so that the running maximum
        // moves between tiles) against the direct softmax of each row.
        let (nq, nk, d) = (300, 9000, 8);
        let val = |i: usize| ((i * 7919 % 1000) as f32 / 100.0) - 5.0;
        let q: Vec<f32> = (0..nq * d).map(val).collect();
        let k: Vec<f32> = (0..nk * d).map(|i| val(i * 3 + 1)).collect();
        let v: Vec<f32> = (0..nk * d).map(|i| val(i + 11)).collect();
        let got = attention(
            HeadView::packed(&q, nq, d),
            HeadView::packed(&k, nk, d),
            HeadView::packed(&v, nk, d),
            1,
            d,
            0.3,
            Hooks::default(),
        );
        let mut s = matmul_nt(&q, &k, nq, d, nk);
        s.iter_mut().for_each(|a| *a *= 0.3);
        softmax_rows(&mut s, nk);
        let want = matmul(&s, &v, nq, nk, d);
        let err = got
            .iter()
            .zip(&want)
            .map(|(x, y)| (x - y).abs())
            .fold(0.0f32, f32::max);
        assert!(err < 1e-4, "max abs difference {err}");
    }

    #[test]
    fn blocked_attention_equals_the_whole_matrix() {
        // 600 x 500 positions take the blocked path, with and without a bias hook that reads
        // the row, the head and the unscaled query; against each head's whole score matrix.
        let (nq, nk, heads, d) = (600, 500, 2, 4);
        let val = |i: usize| ((i * 7919 % 1000) as f32 / 500.0) - 1.0;
        let q: Vec<f32> = (0..nq * heads * d).map(val).collect();
        let k: Vec<f32> = (0..nk * heads * d).map(|i| val(i + 3)).collect();
        let v: Vec<f32> = (0..nk * heads * d).map(|i| val(i + 11)).collect();
        let bias = |h: usize, row0: usize, qb: &[f32], s: &mut [f32]| {
            for (i, row) in s.chunks_exact_mut(nk).enumerate() {
                for (j, x) in row.iter_mut().enumerate() {
                    *x += 0.002 * ((row0 + i) as f32 - 0.7 * j as f32) * (h + 1) as f32 + qb[i * d];
                }
            }
        };
        for hooks in [
            Hooks::default(),
            Hooks {
                bias: Some(&bias),
                ..Default::default()
            },
        ] {
            let got = attention(
                HeadView::packed(&q, nq, d),
                HeadView::packed(&k, nk, d),
                HeadView::packed(&v, nk, d),
                heads,
                d,
                0.5,
                hooks,
            );
            let (qv, kv, vv) = (
                HeadView::packed(&q, nq, d),
                HeadView::packed(&k, nk, d),
                HeadView::packed(&v, nk, d),
            );
            let mut err = 0.0f32;
            for h in 0..heads {
                let (qh, kh, vh) = (qv.head(h, d), kv.head(h, d), vv.head(h, d));
                let mut s = matmul_nt(&qh, &kh, nq, d, nk);
                s.iter_mut().for_each(|a| *a *= 0.5);
                if let Some(b) = hooks.bias {
                    b(h, 0, &qh, &mut s);
                }
                softmax_rows(&mut s, nk);
                let want = matmul(&s, &vh, nq, nk, d);
                for r in 0..nq {
                    for c in 0..d {
                        err = err.max((got[r * heads * d + h * d + c] - want[r * d + c]).abs());
                    }
                }
            }
            assert!(err < 1e-5, "max abs difference {err}");
            // bf16 products: within bf16's rounding of f32's
            let bf16 = attention(
                HeadView::packed(&q, nq, d),
                HeadView::packed(&k, nk, d),
                HeadView::packed(&v, nk, d),
                heads,
                d,
                0.5,
                Hooks {
                    precision: Precision::Bf16,
                    ..hooks
                },
            );
            let (num, den) = bf16
                .iter()
                .zip(&got)
                .fold((0.0f64, 0.0f64), |(n, d), (a, b)| {
                    (n + ((a - b) as f64).powi(2), d + (*b as f64).powi(2))
                });
            let rel = (num / den).sqrt();
            assert!((1e-6..1e-2).contains(&rel), "bf16 relative L2 {rel:e}");
        }
    }
}

//! Matrix products, the engine's workhorse: every dense layer, convolution and attention of every
//! model ends here. One entry point over the `gemm` crate (the same kernels burn's flex backend
//! uses), row-major, with any strides; serial or spread over rayon's threads by size. Dense
//! layers over many rows take [`linear`] instead: the engine's own register tile
//! ([`register_tile`]) on weights packed per call, the bias and an activation or a residual
//! ([`Epilogue`]) applied as each tile is written.

use super::activation::Activation;
use super::simd::{has_fma, vectorized};
use rayon::prelude::*;

/// Products with at least this many multiply-adds are split over threads when the caller is not
/// already running on one of rayon's workers (whose siblings are then busy with other work).
const PARALLEL_MACS: usize = 1 << 22;

/// Whether a product of `m x k x n` should be split over threads from the current thread.
pub fn parallel_for(m: usize, k: usize, n: usize) -> bool {
    m.saturating_mul(k).saturating_mul(n) >= PARALLEL_MACS
        && rayon::current_thread_index().is_none()
        && rayon::current_num_threads() > 1
}

/// A buffer of `len` values that `fill` writes completely (a product's whole output), not
/// zeroed first: zeroing an output that is about to be overwritten cost a pass over memory
/// per product.
///
/// # Safety
/// `fill` must write every one of the `len` values at the pointer it is given.
pub unsafe fn written(len: usize, fill: impl FnOnce(*mut f32)) -> Vec<f32> {
    let mut v: Vec<f32> = Vec::with_capacity(len);
    fill(v.as_mut_ptr());
    // SAFETY: the caller's `fill` initialised all `len` values.
    unsafe { v.set_len(len) };
    v
}

/// `a [m x k] @ b [k x n]`, all row-major.
pub fn matmul(a: &[f32], b: &[f32], m: usize, k: usize, n: usize) -> Vec<f32> {
    product(m, n, k, a, k, 1, b, n, 1)
}

/// `out [m x n] += a [m x k] @ b [k x n]`, all row-major.
pub fn matmul_acc(a: &[f32], b: &[f32], m: usize, k: usize, n: usize, out: &mut [f32]) {
    assert!(a.len() >= m * k && b.len() >= k * n && out.len() >= m * n);
    if m == 0 || n == 0 || k == 0 {
        return;
    }
    // SAFETY: the assert bounds every index; `out` is exclusive and aliases neither input.
    unsafe {
        gemm_strided_acc(
            m,
            n,
            k,
            a.as_ptr(),
            k as isize,
            1,
            b.as_ptr(),
            n as isize,
            1,
            out.as_mut_ptr(),
            n,
            1,
            parallel_for(m, k, n),
        )
    }
}

/// `a [m x k] @ w^T` where `w` is `[n x k]` row-major (PyTorch's Linear weight layout).
pub fn matmul_nt(a: &[f32], w: &[f32], m: usize, k: usize, n: usize) -> Vec<f32> {
    product(m, n, k, a, k, 1, w, 1, k)
}

/// `a @ b` `[m x n]` (row-major) where element (i, l) of `a` is `a[i * a_rs + l * a_cs]` and
/// element (l, j) of `b` is `b[l * b_rs + j * b_cs]`: transposed or strided operands read in
/// place.
#[allow(clippy::too_many_arguments)]
pub fn product(
    m: usize,
    n: usize,
    k: usize,
    a: &[f32],
    a_rs: usize,
    a_cs: usize,
    b: &[f32],
    b_rs: usize,
    b_cs: usize,
) -> Vec<f32> {
    // the last element each operand's strides reach
    let reach = |rows: usize, cols: usize, rs: usize, cs: usize| {
        if rows == 0 || cols == 0 {
            0
        } else {
            (rows - 1) * rs + (cols - 1) * cs + 1
        }
    };
    assert!(
        a.len() >= reach(m, k, a_rs, a_cs) && b.len() >= reach(k, n, b_rs, b_cs),
        "operands shorter than their shapes and strides"
    );
    if m == 0 || n == 0 || k == 0 {
        return vec![0.0; m * n];
    }
    let par = parallel_for(m, k, n);
    // SAFETY: the assert above bounds every index the strides reach; the product writes all
    // `m * n` values of the fresh buffer.
    unsafe {
        written(m * n, |dst| {
            gemm_strided(
                m,
                n,
                k,
                a.as_ptr(),
                a_rs as isize,
                a_cs as isize,
                b.as_ptr(),
                b_rs as isize,
                b_cs as isize,
                dst,
                n,
                par,
            )
        })
    }
}

/// `dst[m x n]` (row stride `ldd`) `= a @ b`, where element (i, l) of `a` is at
/// `a[i * a_rs + l * a_cs]` and element (l, j) of `b` at `b[l * b_rs + j * b_cs]`; spread over
/// rayon's threads when `par`. The kernels (convolutions writing tiles straight into their
/// output) call this directly.
///
/// # Safety
/// `a` and `b` must cover every element the shapes and strides reach, and `dst` must point to
/// `(m - 1) * ldd + n` writable floats that alias neither.
#[allow(clippy::too_many_arguments)]
pub unsafe fn gemm_strided(
    m: usize,
    n: usize,
    k: usize,
    a: *const f32,
    a_rs: isize,
    a_cs: isize,
    b: *const f32,
    b_rs: isize,
    b_cs: isize,
    dst: *mut f32,
    ldd: usize,
    par: bool,
) {
    // SAFETY: forwarded to the caller's contract.
    unsafe {
        gemm_into(
            m, n, k, a, a_rs, a_cs, b, b_rs, b_cs, dst, ldd, 1, par, false,
        )
    }
}

/// As [`gemm_strided`], but adds the product to `dst` (`dst += a @ b`), whose element
/// (i, j) is at `dst[i * d_rs + j * d_cs]`: the gradients that sum over positions accumulate
/// tile by tile, straight into their layout.
///
/// # Safety
/// As [`gemm_strided`], for every element the destination strides reach; `dst` must also be
/// initialised.
#[allow(clippy::too_many_arguments)]
pub unsafe fn gemm_strided_acc(
    m: usize,
    n: usize,
    k: usize,
    a: *const f32,
    a_rs: isize,
    a_cs: isize,
    b: *const f32,
    b_rs: isize,
    b_cs: isize,
    dst: *mut f32,
    d_rs: usize,
    d_cs: usize,
    par: bool,
) {
    // SAFETY: forwarded to the caller's contract.
    unsafe {
        gemm_into(
            m, n, k, a, a_rs, a_cs, b, b_rs, b_cs, dst, d_rs, d_cs, par, true,
        )
    }
}

#[allow(clippy::too_many_arguments)]
unsafe fn gemm_into(
    m: usize,
    n: usize,
    k: usize,
    a: *const f32,
    a_rs: isize,
    a_cs: isize,
    b: *const f32,
    b_rs: isize,
    b_cs: isize,
    dst: *mut f32,
    d_rs: usize,
    d_cs: usize,
    par: bool,
    accumulate: bool,
) {
    let parallelism = if par {
        gemm::Parallelism::Rayon(0)
    } else {
        gemm::Parallelism::None
    };
    // SAFETY: forwarded to the caller's contract.
    unsafe {
        gemm::gemm(
            m,
            n,
            k,
            dst,
            d_cs as isize,
            d_rs as isize,
            accumulate,
            a,
            a_cs,
            a_rs,
            b,
            b_cs,
            b_rs,
            if accumulate { 1.0f32 } else { 0.0f32 },
            1.0f32,
            false,
            false,
            false,
            parallelism,
        )
    }
}

/// `dst[m x n] (row stride ldd) = a[m x k] (row stride lda) @ b[k x n] (row stride ldb)`, for
/// kernels that write tiles of a larger output in place.
///
/// # Safety
/// As [`gemm_strided`].
#[allow(clippy::too_many_arguments)]
pub unsafe fn gemm_rows(
    m: usize,
    n: usize,
    k: usize,
    a: &[f32],
    lda: usize,
    b: &[f32],
    ldb: usize,
    dst: *mut f32,
    ldd: usize,
    par: bool,
) {
    // SAFETY: forwarded to the caller's contract.
    unsafe {
        gemm_strided(
            m,
            n,
            k,
            a.as_ptr(),
            lda as isize,
            1,
            b.as_ptr(),
            ldb as isize,
            1,
            dst,
            ldd,
            par,
        )
    }
}

/// Rows and columns of [`register_tile`]'s block: 12 of AVX2's 16 vector registers hold it,
/// two a row of `b`, one a broadcast element of `a`.
pub const TILE_M: usize = 6;
pub const TILE_N: usize = 16;

/// The `TILE_M x TILE_N` block of `a @ b` over `k` steps, kept in registers: element (i, l) of
/// `a` is `a[i * a_rs + l * a_cs]`, row `l` of `b` the `TILE_N` values from `b[l * b_rs]`. For
/// kernels that pack their own operands and finish each block in place ([`linear`]); call it
/// inside [`vectorized`](super::simd::vectorized), whose registers it is written for
/// (93-100 GFLOP/s on one core of an AVX2 + FMA machine for k = 64..256).
///
/// # Safety
/// Every element of `a` and `b` those strides reach for `i < TILE_M`, `l < k` must be readable.
#[inline(always)]
pub unsafe fn register_tile(
    k: usize,
    a: *const f32,
    a_rs: usize,
    a_cs: usize,
    b: *const f32,
    b_rs: usize,
) -> [[f32; TILE_N]; TILE_M] {
    let mut acc = [[0.0f32; TILE_N]; TILE_M];
    for l in 0..k {
        // SAFETY: row `l` of `b` is within the caller's bounds.
        let row = unsafe { b.add(l * b_rs).cast::<[f32; TILE_N]>().read_unaligned() };
        for (i, acc) in acc.iter_mut().enumerate() {
            // SAFETY: element (i, l) of `a` is within the caller's bounds.
            let x = unsafe { *a.add(i * a_rs + l * a_cs) };
            for (c, r) in acc.iter_mut().zip(&row) {
                *c = x.mul_add(*r, *c);
            }
        }
    }
    acc
}

/// Rows of `x` per task of [`linear`]: a block of row panels re-read from L2 for each panel of
/// the weights (48 ran at 184-187 GFLOP/s on 2 cores for SAM ViT-B's four layer shapes, 96 at
/// 176-184; blocking the reduction into 256-step slices was slower).
const LINEAR_ROWS: usize = 48;

/// What [`linear`]'s kernel does with each finished tile of `x W^T + b`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Epilogue {
    /// `out = act(x W^T + b)`.
    Write(Activation),
    /// `out += x W^T + b`: a residual branch added in place.
    Add,
}

impl Epilogue {
    /// One row of a finished tile: `out[j] = act(acc[j] + bias[j])` or `out[j] += acc[j] +
    /// bias[j]`, for `j < out.len()` (call it inside [`vectorized`]).
    #[inline(always)]
    pub fn finish(self, out: &mut [f32], acc: &[f32], bias: &[f32]) {
        let tile = out.iter_mut().zip(acc).zip(bias);
        match self {
            Epilogue::Write(Activation::None) => tile.for_each(|((y, &a), &b)| *y = a + b),
            // each activation its own loop (`of` inlined and resolved)
            Epilogue::Write(Activation::Relu) => {
                tile.for_each(|((y, &a), &b)| *y = Activation::Relu.of(a + b))
            }
            Epilogue::Write(Activation::Gelu) => {
                tile.for_each(|((y, &a), &b)| *y = Activation::Gelu.of(a + b))
            }
            Epilogue::Write(act) => tile.for_each(|((y, &a), &b)| *y = act.of(a + b)),
            Epilogue::Add => tile.for_each(|((y, &a), &b)| *y += a + b),
        }
    }
}

/// `x [m, k] @ w^T + bias` with `w` `[n, k]` (PyTorch's Linear layout) and `bias` `[n]` (or
/// empty).
pub fn linear(x: &[f32], m: usize, k: usize, w: &[f32], n: usize, bias: &[f32]) -> Vec<f32> {
    linear_act(x, m, k, w, n, bias, Activation::None)
}

/// `act(x [m, k] @ w^T + bias)`, the activation applied as each tile is written.
pub fn linear_act(
    x: &[f32],
    m: usize,
    k: usize,
    w: &[f32],
    n: usize,
    bias: &[f32],
    act: Activation,
) -> Vec<f32> {
    // SAFETY: `Write` sets every one of the `m * n` values.
    unsafe {
        written(m * n, |dst| {
            linear_raw(x, m, k, w, n, bias, Epilogue::Write(act), dst)
        })
    }
}

/// `out [m, n] += x [m, k] @ w^T + bias`, each tile added where it is finished.
pub fn linear_add(
    x: &[f32],
    m: usize,
    k: usize,
    w: &[f32],
    n: usize,
    bias: &[f32],
    out: &mut [f32],
) {
    assert!(out.len() >= m * n, "linear output shorter than its shape");
    // SAFETY: `out` holds the `m * n` values the kernel reads and writes.
    unsafe { linear_raw(x, m, k, w, n, bias, Epilogue::Add, out.as_mut_ptr()) }
}

/// The dense layers' kernel: the weights are packed once per call into panels of [`TILE_N`]
/// outputs (`[n / TILE_N][k][TILE_N]`), and each task takes a block of rows through every
/// panel on [`register_tile`], reading `x` in place, the bias and the epilogue applied as each
/// tile is written; blocks spread over the threads when the caller is not already on one of
/// rayon's workers. For a few rows, fewer outputs than a panel, or a CPU without FMA: the
/// plain product, then the bias and the epilogue.
///
/// # Safety
/// `dst` must point to `m * n` floats, initialised for [`Epilogue::Add`], aliasing no input.
#[allow(clippy::too_many_arguments)]
unsafe fn linear_raw(
    x: &[f32],
    m: usize,
    k: usize,
    w: &[f32],
    n: usize,
    bias: &[f32],
    epilogue: Epilogue,
    dst: *mut f32,
) {
    assert!(
        x.len() >= m * k && w.len() >= n * k && (bias.is_empty() || bias.len() == n),
        "linear operands shorter than their shapes"
    );
    if m == 0 || n == 0 {
        return;
    }
    if m < 2 * TILE_M || n < TILE_N || k == 0 || !has_fma() {
        let mut y = matmul_nt(x, w, m, k, n);
        if !bias.is_empty() {
            super::layout::add_row_bias(&mut y, bias);
        }
        // SAFETY: the caller's `m * n` floats.
        let out = unsafe { std::slice::from_raw_parts_mut(dst, m * n) };
        match epilogue {
            Epilogue::Write(act) => {
                out.copy_from_slice(&y);
                act.apply(out);
            }
            Epilogue::Add => super::layout::add_assign(out, &y),
        }
        return;
    }
    let (mr, nr) = (TILE_M, TILE_N);
    let panels = n.div_ceil(nr);
    let outer = rayon::current_thread_index().is_none() && rayon::current_num_threads() > 1;
    let mut wp = vec![0.0f32; panels * k * nr];
    let pack = |(p, dst): (usize, &mut [f32])| {
        for c in 0..nr.min(n - p * nr) {
            let row = &w[(p * nr + c) * k..][..k];
            for (l, &v) in row.iter().enumerate() {
                dst[l * nr + c] = v;
            }
        }
    };
    if outer && panels > 1 {
        wp.par_chunks_mut(k * nr).enumerate().for_each(pack);
    } else {
        wp.chunks_mut(k * nr).enumerate().for_each(pack);
    }
    let zeros = vec![0.0f32; if bias.is_empty() { n } else { 0 }];
    let bias = if bias.is_empty() { &zeros[..] } else { bias };
    let blocks = m.div_ceil(LINEAR_ROWS);
    let dst = SendPtr(dst);
    let task = |b: usize| {
        let r0 = b * LINEAR_ROWS;
        let rows = LINEAR_ROWS.min(m - r0);
        // the block's last, partial panel of rows, zero-padded to a whole one
        let tail = rows % mr;
        let pad: Vec<f32> = if tail == 0 {
            Vec::new()
        } else {
            let mut p = vec![0.0f32; mr * k];
            p[..tail * k].copy_from_slice(&x[(r0 + rows - tail) * k..][..tail * k]);
            p
        };
        vectorized(
            #[inline(always)]
            || {
                for (p, panel) in wp.chunks_exact(k * nr).enumerate() {
                    let (c0, cols) = (p * nr, nr.min(n - p * nr));
                    for i0 in (0..rows).step_by(mr) {
                        let a = if i0 + mr <= rows {
                            &x[(r0 + i0) * k..]
                        } else {
                            &pad[..]
                        };
                        // SAFETY: `a` holds `mr` rows of `k` values from its start (a whole
                        // panel of `x`, or `pad`), `panel` `k` rows of `nr`.
                        let acc = unsafe { register_tile(k, a.as_ptr(), k, 1, panel.as_ptr(), nr) };
                        for (i, acc) in acc.iter().enumerate().take(rows - i0) {
                            // SAFETY: row `r0 + i0 + i < m`, columns `c0..c0 + cols <= n`
                            // of the output: this task's rows only.
                            let out = unsafe {
                                std::slice::from_raw_parts_mut(
                                    dst.get().add((r0 + i0 + i) * n + c0),
                                    cols,
                                )
                            };
                            epilogue.finish(out, acc, &bias[c0..]);
                        }
                    }
                }
            },
        )
    };
    if outer && blocks > 1 {
        (0..blocks).into_par_iter().for_each(task);
    } else {
        (0..blocks).for_each(task);
    }
}

/// A raw pointer that parallel loops may share when each task writes a disjoint part.
#[derive(Clone, Copy)]
pub(crate) struct SendPtr(pub *mut f32);
// SAFETY: users guarantee disjoint writes (documented at each use).
unsafe impl Send for SendPtr {}
unsafe impl Sync for SendPtr {}

impl SendPtr {
    /// The pointer (a method, so that closures capture the whole `SendPtr`).
    #[inline]
    pub(crate) fn get(self) -> *mut f32 {
        self.0
    }
}

#[cfg(test)]
mod tests {
    use crate::ops::Activation;

    #[test]
    fn linear_matches_a_naive_loop() {
        // 100 rows (two blocks of rows, the second ending in a partial panel of 4), 37 outputs
        // (a partial panel of weights), with and without a bias, written, through ReLU and added
        // to a residual; and 7 rows (the plain product, then the same epilogues).
        for (m, k, n) in [(100, 19, 37), (7, 5, 3)] {
            let x: Vec<f32> = (0..m * k).map(|i| (i as f32 * 0.37).sin()).collect();
            let w: Vec<f32> = (0..n * k).map(|i| (i as f32 * 0.11).cos()).collect();
            let b: Vec<f32> = (0..n).map(|i| i as f32 * 0.5 - 3.0).collect();
            let base: Vec<f32> = (0..m * n).map(|i| (i % 11) as f32 - 5.0).collect();
            for bias in [&b[..], &[]] {
                let y = super::linear(&x, m, k, &w, n, bias);
                let relu = super::linear_act(&x, m, k, &w, n, bias, Activation::Relu);
                let mut added = base.clone();
                super::linear_add(&x, m, k, &w, n, bias, &mut added);
                assert_eq!(y.len(), m * n);
                for i in 0..m {
                    for j in 0..n {
                        let dot: f32 = (0..k).map(|l| x[i * k + l] * w[j * k + l]).sum();
                        let want = dot + bias.get(j).copied().unwrap_or(0.0);
                        let at = i * n + j;
                        let got = y[at];
                        assert!(
                            (got - want).abs() < 1e-4,
                            "({i}, {j}): {got} against {want}"
                        );
                        assert_eq!(relu[at], got.max(0.0), "({i}, {j}) after ReLU");
                        let sum = added[at] - base[at];
                        assert!((sum - want).abs() < 1e-4, "({i}, {j}) added: {sum}, {want}");
                    }
                }
            }
        }
    }

    #[test]
    fn products_match_a_naive_loop() {
        let (m, k, n) = (5, 7, 3);
        let a: Vec<f32> = (0..m * k).map(|i| (i as f32 * 0.37).sin()).collect();
        let b: Vec<f32> = (0..k * n).map(|i| (i as f32 * 0.11).cos()).collect();
        let bt = super::super::layout::transpose(&b, k, n);
        let p = super::matmul(&a, &b, m, k, n);
        let q = super::matmul_nt(&a, &bt, m, k, n);
        for i in 0..m {
            for j in 0..n {
                let want: f32 = (0..k).map(|l| a[i * k + l] * b[l * n + j]).sum();
                assert!((p[i * n + j] - want).abs() < 1e-5);
                assert!((q[i * n + j] - want).abs() < 1e-5);
            }
        }
    }
}

//! Matrix products, the engine's workhorse: every dense layer, convolution and attention of every
//! model ends here. One entry point over the `gemm` crate (the same kernels burn's flex backend
//! uses), row-major, with any strides; serial or spread over rayon's threads by size.

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

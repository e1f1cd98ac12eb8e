//! Small host-side linear algebra for models that run on plain buffers: row-major matrix
//! products through the `gemm` crate, LayerNorm, softmax.

/// `a [m x k] @ b [k x n]`, all row-major.
pub fn matmul(a: &[f32], b: &[f32], m: usize, k: usize, n: usize) -> Vec<f32> {
    let mut out = vec![0.0f32; m * n];
    gemm_raw(m, n, k, a, k as isize, 1, b, n as isize, 1, &mut out);
    out
}

/// `a [m x k] @ w^T` where `w` is `[n x k]` row-major (PyTorch's Linear weight layout).
pub fn matmul_nt(a: &[f32], w: &[f32], m: usize, k: usize, n: usize) -> Vec<f32> {
    let mut out = vec![0.0f32; m * n];
    gemm_raw(m, n, k, a, k as isize, 1, w, 1, k as isize, &mut out);
    out
}

#[allow(clippy::too_many_arguments)]
fn gemm_raw(
    m: usize,
    n: usize,
    k: usize,
    a: &[f32],
    a_rs: isize,
    a_cs: isize,
    b: &[f32],
    b_rs: isize,
    b_cs: isize,
    out: &mut [f32],
) {
    assert!(a.len() >= m * k && b.len() >= k * n && out.len() >= m * n);
    if m == 0 || n == 0 {
        return;
    }
    if k == 0 {
        out.fill(0.0);
        return;
    }
    // SAFETY: the asserts above bound every index the strides can reach; `out` is exclusive.
    unsafe {
        gemm_strided(
            m,
            n,
            k,
            a.as_ptr(),
            a_rs,
            a_cs,
            b.as_ptr(),
            b_rs,
            b_cs,
            out.as_mut_ptr(),
            n,
            false,
        )
    }
}

/// `dst[m x n]` (row stride `ldd`) `= a @ b`, where element (i, l) of `a` is at
/// `a[i * a_rs + l * a_cs]` and element (l, j) of `b` at `b[l * b_rs + j * b_cs]`; optionally
/// spread over rayon's threads.
///
/// # Safety
/// `a` and `b` must cover every element the shapes and strides reach, and `dst` must point to
/// `(m - 1) * ldd + n` writable floats that alias neither.
#[allow(clippy::too_many_arguments)]
pub(crate) unsafe fn gemm_strided(
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
            1,
            ldd as isize,
            false,
            a,
            a_cs,
            a_rs,
            b,
            b_cs,
            b_rs,
            0.0f32,
            1.0f32,
            false,
            false,
            false,
            parallelism,
        )
    }
}

/// LayerNorm over channels at each position of a `[C, HW]` buffer, as SAM's `LayerNorm2d`.
pub fn layer_norm2d(x: &mut [f32], w: &[f32], b: &[f32], hw: usize, eps: f32) {
    let c = w.len();
    for p in 0..hw {
        let mean = (0..c).map(|k| x[k * hw + p]).sum::<f32>() / c as f32;
        let var = (0..c).map(|k| (x[k * hw + p] - mean).powi(2)).sum::<f32>() / c as f32;
        let inv = 1.0 / (var + eps).sqrt();
        for k in 0..c {
            x[k * hw + p] = w[k] * (x[k * hw + p] - mean) * inv + b[k];
        }
    }
}

/// A PyTorch Linear layer: `y = x W^T + b`, W `[out, in]`.
pub struct Linear {
    pub w: Vec<f32>,
    pub b: Vec<f32>,
    pub inp: usize,
    pub out: usize,
}

impl Linear {
    /// `x` holds `rows` vectors of `inp` values.
    pub fn forward(&self, x: &[f32], rows: usize) -> Vec<f32> {
        let mut y = matmul_nt(x, &self.w, rows, self.inp, self.out);
        for r in 0..rows {
            for (v, b) in y[r * self.out..(r + 1) * self.out].iter_mut().zip(&self.b) {
                *v += b;
            }
        }
        y
    }
}

/// LayerNorm over the last dimension of `rows x dim` values.
pub fn layer_norm(x: &mut [f32], dim: usize, w: &[f32], b: &[f32], eps: f32) {
    for row in x.chunks_mut(dim) {
        let mean = row.iter().sum::<f32>() / dim as f32;
        let var = row.iter().map(|v| (v - mean) * (v - mean)).sum::<f32>() / dim as f32;
        let inv = 1.0 / (var + eps).sqrt();
        for (i, v) in row.iter_mut().enumerate() {
            *v = (*v - mean) * inv * w[i] + b[i];
        }
    }
}

/// Softmax over each row of `rows x dim` values.
pub fn softmax_rows(x: &mut [f32], dim: usize) {
    for row in x.chunks_mut(dim) {
        let m = row.iter().copied().fold(f32::NEG_INFINITY, f32::max);
        let mut s = 0.0;
        for v in row.iter_mut() {
            *v = (*v - m).exp();
            s += *v;
        }
        for v in row.iter_mut() {
            *v /= s;
        }
    }
}

pub fn relu(x: &mut [f32]) {
    x.iter_mut().for_each(|v| *v = v.max(0.0));
}

pub fn add(a: &[f32], b: &[f32]) -> Vec<f32> {
    a.iter().zip(b).map(|(x, y)| x + y).collect()
}

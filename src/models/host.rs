//! Small host-side linear algebra for models that run on plain buffers: row-major matrix
//! products through the `gemm` crate, LayerNorm, softmax.

/// `a [m x k] @ b [k x n]`, all row-major.
pub fn matmul(a: &[f32], b: &[f32], m: usize, k: usize, n: usize) -> Vec<f32> {
    let mut out = vec![0.0f32; m * n];
    gemm_raw(m, n, k, a, k as isize, 1, b, n as isize, 1, &mut out, false);
    out
}

/// `a [m x k] @ w^T` where `w` is `[n x k]` row-major (PyTorch's Linear weight layout).
pub fn matmul_nt(a: &[f32], w: &[f32], m: usize, k: usize, n: usize) -> Vec<f32> {
    let mut out = vec![0.0f32; m * n];
    gemm_raw(m, n, k, a, k as isize, 1, w, 1, k as isize, &mut out, false);
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
    par: bool,
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
            par,
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

/// LayerNorm over channels at each position of a `[C, HW]` buffer, as SAM's `LayerNorm2d`
/// (mean, then the mean squared deviation, as PyTorch's two-pass formula). Positions are
/// processed in blocks, channel rows streamed contiguously, blocks in parallel.
pub fn layer_norm2d(x: &mut [f32], w: &[f32], b: &[f32], hw: usize, eps: f32) {
    use rayon::prelude::*;
    let c = w.len();
    const BLOCK: usize = 256;
    let blocks = hw.div_ceil(BLOCK);
    let ptr = x.as_mut_ptr() as usize;
    (0..blocks).into_par_iter().for_each(|bi| {
        let p0 = bi * BLOCK;
        let n = BLOCK.min(hw - p0);
        // SAFETY: each block touches only positions p0..p0 + n of every channel row; blocks
        // are disjoint, and `x` outlives the parallel loop.
        let row = |k: usize| unsafe {
            std::slice::from_raw_parts_mut((ptr as *mut f32).add(k * hw + p0), n)
        };
        let mut mean = [0.0f32; BLOCK];
        let mut var = [0.0f32; BLOCK];
        for k in 0..c {
            row(k)
                .iter()
                .zip(mean.iter_mut())
                .for_each(|(v, m)| *m += v);
        }
        mean[..n].iter_mut().for_each(|m| *m /= c as f32);
        for k in 0..c {
            row(k)
                .iter()
                .zip(mean.iter().zip(var.iter_mut()))
                .for_each(|(v, (m, s))| *s += (v - m) * (v - m));
        }
        var[..n]
            .iter_mut()
            .for_each(|s| *s = 1.0 / (*s / c as f32 + eps).sqrt());
        for k in 0..c {
            let (wk, bk) = (w[k], b[k]);
            row(k)
                .iter_mut()
                .zip(mean.iter().zip(var.iter()))
                .for_each(|(v, (m, r))| *v = wk * ((*v - m) * r) + bk);
        }
    });
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
    /// Large products run on rayon's threads.
    pub fn forward(&self, x: &[f32], rows: usize) -> Vec<f32> {
        use rayon::prelude::*;
        let big = rows * self.out * self.inp >= 1 << 22;
        let mut y = if big {
            matmul_nt_par(x, &self.w, rows, self.inp, self.out)
        } else {
            matmul_nt(x, &self.w, rows, self.inp, self.out)
        };
        let add = |r: &mut [f32]| r.iter_mut().zip(&self.b).for_each(|(v, b)| *v += b);
        if big {
            y.par_chunks_mut(self.out).for_each(add);
        } else {
            y.chunks_mut(self.out).for_each(add);
        }
        y
    }
}

/// Columns `offset..offset + width` of each of `rows` rows of `stride` values, packed: one
/// attention head's slice of a projection.
pub fn columns(m: &[f32], rows: usize, stride: usize, offset: usize, width: usize) -> Vec<f32> {
    let mut v = Vec::with_capacity(rows * width);
    for r in 0..rows {
        v.extend_from_slice(&m[r * stride + offset..r * stride + offset + width]);
    }
    v
}

/// A dot product with eight independent accumulators (vectorises without fast-math).
#[inline]
pub fn dot(a: &[f32], b: &[f32]) -> f32 {
    let mut acc = [0.0f32; 8];
    let (ca, cb) = (a.chunks_exact(8), b.chunks_exact(8));
    let (ra, rb) = (ca.remainder(), cb.remainder());
    for (x, y) in ca.zip(cb) {
        for k in 0..8 {
            acc[k] += x[k] * y[k];
        }
    }
    let mut s: f32 = acc.iter().sum();
    for (x, y) in ra.iter().zip(rb) {
        s += x * y;
    }
    s
}

/// LayerNorm over the last dimension of `rows x dim` values (rows in parallel when many).
pub fn layer_norm(x: &mut [f32], dim: usize, w: &[f32], b: &[f32], eps: f32) {
    use rayon::prelude::*;
    if x.len() >= 1 << 18 {
        x.par_chunks_mut(dim * 64)
            .for_each(|c| layer_norm_rows(c, dim, w, b, eps));
    } else {
        layer_norm_rows(x, dim, w, b, eps);
    }
}

fn layer_norm_rows(x: &mut [f32], dim: usize, w: &[f32], b: &[f32], eps: f32) {
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
    use rayon::prelude::*;
    if x.len() >= 1 << 20 {
        x.par_chunks_mut(dim * 16)
            .for_each(|c| softmax_rows_seq(c, dim));
    } else {
        softmax_rows_seq(x, dim);
    }
}

pub fn softmax_rows_seq(x: &mut [f32], dim: usize) {
    for row in x.chunks_mut(dim) {
        let m = row.iter().copied().fold(f32::NEG_INFINITY, f32::max);
        row.iter_mut().for_each(|v| *v = exp_nonpositive(*v - m));
        let mut acc = [0.0f32; 8];
        let chunks = row.chunks_exact(8);
        let rest: f32 = chunks.remainder().iter().sum();
        for c in chunks {
            for k in 0..8 {
                acc[k] += c[k];
            }
        }
        let inv = 1.0 / (acc.iter().sum::<f32>() + rest);
        row.iter_mut().for_each(|v| *v *= inv);
    }
}

/// `exp(x)` for `x <= 0` (softmax after subtracting the row maximum), Cephes' single-precision
/// polynomial after the reduction `x = n ln 2 + r`, written without branches or libm calls so
/// that loops over it vectorise; relative error about 1e-7.
#[inline(always)]
pub fn exp_nonpositive(x: f32) -> f32 {
    let x = x.max(-87.0);
    let t = x * std::f32::consts::LOG2_E;
    // round to nearest with the 1.5 * 2^23 trick (vectorises without SSE4.1's roundps)
    let n = (t + 12_582_912.0) - 12_582_912.0;
    let r = x - n * 0.693_359_4 - n * -2.121_944_4e-4;
    let mut p = 1.987_569_1e-4 * r + 1.398_199_9e-3;
    p = p * r + 8.333_452e-3;
    p = p * r + 4.166_579_6e-2;
    p = p * r + 1.666_666_5e-1;
    p = p * r + 0.5;
    let y = p * r * r + r + 1.0;
    y * f32::from_bits(((n as i32 + 127) as u32) << 23)
}

pub fn relu(x: &mut [f32]) {
    x.iter_mut().for_each(|v| *v = v.max(0.0));
}

pub fn add(a: &[f32], b: &[f32]) -> Vec<f32> {
    a.iter().zip(b).map(|(x, y)| x + y).collect()
}

/// `a [m x k] @ b [k x n]` on rayon's threads (for the large products of image encoders).
pub fn matmul_par(a: &[f32], b: &[f32], m: usize, k: usize, n: usize) -> Vec<f32> {
    let mut out = vec![0.0f32; m * n];
    gemm_raw(m, n, k, a, k as isize, 1, b, n as isize, 1, &mut out, true);
    out
}

/// `a [m x k] @ w^T` (`w` `[n x k]`, PyTorch Linear layout) on rayon's threads.
pub fn matmul_nt_par(a: &[f32], w: &[f32], m: usize, k: usize, n: usize) -> Vec<f32> {
    let mut out = vec![0.0f32; m * n];
    gemm_raw(m, n, k, a, k as isize, 1, w, 1, k as isize, &mut out, true);
    out
}

/// A 2-D convolution on a `[Cin, H, W]` buffer: weight `[Cout, Cin / groups, k, k]`, optional
/// bias, stride, zero padding `pad`. Dense convolutions go through im2col and a parallel
/// matrix product; depthwise ones (`groups == Cin == Cout`) run directly, channel-parallel.
/// Returns `([Cout, Ho, Wo], Ho, Wo)`.
#[allow(clippy::too_many_arguments)]
pub fn conv2d(
    x: &[f32],
    cin: usize,
    h: usize,
    w: usize,
    weight: &[f32],
    bias: Option<&[f32]>,
    cout: usize,
    k: usize,
    stride: usize,
    pad: usize,
    groups: usize,
) -> (Vec<f32>, usize, usize) {
    use rayon::prelude::*;
    let ho = (h + 2 * pad - k) / stride + 1;
    let wo = (w + 2 * pad - k) / stride + 1;
    let n = ho * wo;
    let mut out = if groups == 1 {
        if k == 1 && stride == 1 && pad == 0 {
            matmul_par(weight, x, cout, cin, n)
        } else {
            let kk = cin * k * k;
            let mut cols = vec![0.0f32; kk * n];
            cols.par_chunks_mut(n).enumerate().for_each(|(r, row)| {
                let (c, ky, kx) = (r / (k * k), (r / k) % k, r % k);
                for oy in 0..ho {
                    let sy = (oy * stride + ky) as isize - pad as isize;
                    if sy < 0 || sy >= h as isize {
                        continue;
                    }
                    let src = &x[(c * h + sy as usize) * w..(c * h + sy as usize + 1) * w];
                    for ox in 0..wo {
                        let sx = (ox * stride + kx) as isize - pad as isize;
                        if sx >= 0 && sx < w as isize {
                            row[oy * wo + ox] = src[sx as usize];
                        }
                    }
                }
            });
            matmul_par(weight, &cols, cout, kk, n)
        }
    } else {
        assert!(
            groups == cin && cin == cout,
            "only dense and depthwise convolutions"
        );
        let mut out = vec![0.0f32; cout * n];
        out.par_chunks_mut(n).enumerate().for_each(|(c, o)| {
            // Touch the fresh (calloc'd) pages with a write first: reading them first maps the
            // shared zero page and the first write then pays a copy-on-write fault with a TLB
            // shootdown to the other threads.
            o.fill(0.0);
            let src = &x[c * h * w..(c + 1) * h * w];
            let kw = &weight[c * k * k..(c + 1) * k * k];
            for oy in 0..ho {
                for ky in 0..k {
                    let sy = (oy * stride + ky) as isize - pad as isize;
                    if sy < 0 || sy >= h as isize {
                        continue;
                    }
                    let line = &src[sy as usize * w..(sy as usize + 1) * w];
                    for kx in 0..k {
                        let kv = kw[ky * k + kx];
                        let orow = &mut o[oy * wo..(oy + 1) * wo];
                        // outputs whose input column `ox * stride + kx - pad` is inside
                        let lo = (pad.saturating_sub(kx)).div_ceil(stride);
                        let hi = ((w + pad).saturating_sub(kx)).div_ceil(stride).min(wo);
                        if lo >= hi {
                            continue;
                        }
                        let first = lo * stride + kx - pad;
                        if stride == 1 {
                            orow[lo..hi]
                                .iter_mut()
                                .zip(&line[first..first + (hi - lo)])
                                .for_each(|(ov, &xv)| *ov += kv * xv);
                        } else {
                            for (i, ov) in orow[lo..hi].iter_mut().enumerate() {
                                *ov += kv * line[first + i * stride];
                            }
                        }
                    }
                }
            }
        });
        out
    };
    if let Some(b) = bias {
        out.par_chunks_mut(n)
            .zip(b)
            .for_each(|(o, &bv)| o.iter_mut().for_each(|v| *v += bv));
    }
    (out, ho, wo)
}

/// `[rows, cols]` -> `[cols, rows]`.
pub fn transpose(x: &[f32], rows: usize, cols: usize) -> Vec<f32> {
    let mut t = vec![0.0f32; rows * cols];
    const B: usize = 32;
    for r0 in (0..rows).step_by(B) {
        for c0 in (0..cols).step_by(B) {
            for r in r0..(r0 + B).min(rows) {
                for c in c0..(c0 + B).min(cols) {
                    t[c * rows + r] = x[r * cols + c];
                }
            }
        }
    }
    t
}

#[cfg(test)]
mod tests {
    #[test]
    fn fast_exp_is_accurate() {
        let mut worst = 0.0f64;
        for i in 0..=870_000 {
            let x = -(i as f32) * 1e-4;
            let (a, b) = (super::exp_nonpositive(x) as f64, (x as f64).exp());
            worst = worst.max((a - b).abs() / b);
        }
        assert!(worst < 3e-7, "max relative error {worst:e}");
        assert_eq!(super::exp_nonpositive(0.0), 1.0);
        assert!(super::exp_nonpositive(-1000.0) < 1e-37);
    }
}

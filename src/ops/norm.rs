//! Normalisations: LayerNorm over the last dimension of rows, LayerNorm2d over the channels of a
//! `[C, H*W]` map (SAM's `LayerNorm2d`), and BatchNorm in inference form, folded into the
//! convolution before it.

use super::matmul::{SendPtr, written};
use super::simd::{sum, vectorized};
use rayon::prelude::*;

/// LayerNorm over the last dimension of `rows x dim` values (rows in parallel when many).
pub fn layer_norm(x: &mut [f32], dim: usize, w: &[f32], b: &[f32], eps: f32) {
    if x.len() >= 1 << 18 && rayon::current_thread_index().is_none() {
        x.par_chunks_mut(dim * 64)
            .for_each(|c| layer_norm_rows(c, dim, w, b, eps));
    } else {
        layer_norm_rows(x, dim, w, b, eps);
    }
}

/// [`layer_norm`] of a copy of `x`: each block of rows copied and normalised while in cache,
/// blocks in parallel when many (no serial copy of the whole input first).
pub fn layer_norm_of(x: &[f32], dim: usize, w: &[f32], b: &[f32], eps: f32) -> Vec<f32> {
    let n = x.len();
    let rows = (dim * 64).max(1);
    let block = |out: SendPtr, i: usize| {
        let len = rows.min(n - i * rows);
        // SAFETY: block `i` writes values `i * rows..i * rows + len` only, all of them.
        let o = unsafe { std::slice::from_raw_parts_mut(out.get().add(i * rows), len) };
        o.copy_from_slice(&x[i * rows..][..len]);
        layer_norm_rows(o, dim, w, b, eps);
    };
    let blocks = n.div_ceil(rows);
    // SAFETY: the blocks together write all `n` values (the copy, then the normalisation).
    unsafe {
        written(n, |out| {
            let out = SendPtr(out);
            if n >= 1 << 18 && rayon::current_thread_index().is_none() {
                (0..blocks).into_par_iter().for_each(|i| block(out, i));
            } else {
                (0..blocks).for_each(|i| block(out, i));
            }
        })
    }
}

fn layer_norm_rows(x: &mut [f32], dim: usize, w: &[f32], b: &[f32], eps: f32) {
    vectorized(
        #[inline(always)]
        || {
            let mut dev = vec![0.0f32; dim];
            for row in x.chunks_mut(dim) {
                let mean = sum(row) / dim as f32;
                dev.iter_mut()
                    .zip(row.iter())
                    .for_each(|(d, v)| *d = (v - mean) * (v - mean));
                let var = sum(&dev) / dim as f32;
                let inv = 1.0 / (var + eps).sqrt();
                for ((v, wi), bi) in row.iter_mut().zip(w).zip(b) {
                    *v = (*v - mean) * inv * wi + bi;
                }
            }
        },
    )
}

/// LayerNorm over channels at each position of a `[C, HW]` buffer, as SAM's `LayerNorm2d`
/// (mean, then the mean squared deviation, as PyTorch's two-pass formula). Positions are
/// processed in blocks, channel rows streamed contiguously, blocks in parallel.
pub fn layer_norm2d(x: &mut [f32], w: &[f32], b: &[f32], hw: usize, eps: f32) {
    const BLOCK: usize = 256;
    let blocks = hw.div_ceil(BLOCK);
    let ptr = x.as_mut_ptr() as usize;
    (0..blocks).into_par_iter().for_each(|bi| {
        let p0 = bi * BLOCK;
        // SAFETY: each block touches only positions p0..p0 + n of every channel row; blocks
        // are disjoint, and `x` outlives the parallel loop.
        unsafe { channel_norm((ptr as *mut f32).add(p0), hw, BLOCK.min(hw - p0), w, b, eps) }
    });
}

/// [`layer_norm2d`] of a `[C, n]` block (contiguous channel rows), on the current thread.
pub fn layer_norm2d_block(x: &mut [f32], w: &[f32], b: &[f32], eps: f32) {
    let n = x.len() / w.len().max(1);
    for start in (0..n).step_by(256) {
        // SAFETY: positions start..start + 256 (at most) of each of the C rows of `x`.
        unsafe { channel_norm(x.as_mut_ptr().add(start), n, 256.min(n - start), w, b, eps) }
    }
}

/// LayerNorm over the `w.len()` channels of `n <= 256` positions: channel `k`'s values at
/// `x + k * stride`, `n` of them.
///
/// # Safety
/// Every `x + k * stride + i` (k < channels, i < n) must be valid, exclusively, for writes.
unsafe fn channel_norm(x: *mut f32, stride: usize, n: usize, w: &[f32], b: &[f32], eps: f32) {
    const BLOCK: usize = 256;
    debug_assert!(n <= BLOCK);
    let c = w.len();
    // SAFETY: the caller's contract.
    let row = |k: usize| unsafe { std::slice::from_raw_parts_mut(x.add(k * stride), n) };
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
}

/// BatchNorm statistics and affine parameters of one layer, per output channel.
pub struct BatchNormParams<'a> {
    pub gamma: &'a [f32],
    pub beta: &'a [f32],
    pub mean: &'a [f32],
    pub var: &'a [f32],
    pub eps: f32,
}

/// Folds an inference-mode BatchNorm into the convolution before it:
/// `w' = w * g / sqrt(v + eps)`, `b' = (b - m) * g / sqrt(v + eps) + beta`. `w` is
/// `[cout, ...]`; `b` is the convolution's bias (zeros when it has none). PyTorch eager does
/// not do this; it saves a full pass over every activation.
pub fn fold_batchnorm(w: &mut [f32], b: &mut [f32], bn: &BatchNormParams) {
    let cout = b.len();
    let per = w.len() / cout.max(1);
    for c in 0..cout {
        let s = bn.gamma[c] / (bn.var[c] + bn.eps).sqrt();
        w[c * per..(c + 1) * per].iter_mut().for_each(|x| *x *= s);
        b[c] = (b[c] - bn.mean[c]) * s + bn.beta[c];
    }
}

/// `nn.GroupNorm` on a `[C, HW]` map in place: the channels split into `groups` runs of
/// `C / groups`, each run normalised by its mean and biased variance (accumulated in f64),
/// then each channel scaled and shifted.
pub fn group_norm(x: &mut [f32], groups: usize, w: &[f32], b: &[f32], hw: usize, eps: f32) {
    let c = w.len();
    assert!(
        groups > 0 && c.is_multiple_of(groups),
        "channels split into groups"
    );
    assert_eq!(x.len(), c * hw, "group norm input size");
    let per = c / groups;
    x.par_chunks_mut(per * hw).enumerate().for_each(|(g, run)| {
        let n = run.len() as f64;
        let mean = run.iter().map(|&v| v as f64).sum::<f64>() / n;
        let var = run.iter().map(|&v| (v as f64 - mean).powi(2)).sum::<f64>() / n;
        let inv = 1.0 / (var + eps as f64).sqrt();
        for (k, row) in run.chunks_mut(hw).enumerate() {
            let ch = g * per + k;
            let scale = (inv * w[ch] as f64) as f32;
            let shift = (b[ch] as f64 - mean * inv * w[ch] as f64) as f32;
            row.iter_mut().for_each(|v| *v = *v * scale + shift);
        }
    });
}

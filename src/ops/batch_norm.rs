//! BatchNorm in training mode on `[N, C, H, W]` batches, optionally followed by ReLU: the
//! batch statistics, the normalisation, and the fused backward pass. Channels run in
//! parallel; each channel's planes are read twice forward (mean, then variance) and twice
//! backward (the two sums, then the input gradient).
//!
//! Backward keeps only the layer's input and the statistics: the normalised value and the ReLU
//! mask are recomputed from them, so the pre-activation never has to be stored.

use super::layout::sum_mapped;
use super::matmul::SendPtr;
use rayon::prelude::*;

/// One batch's per-channel statistics.
#[derive(Clone, Debug)]
pub struct BatchStats {
    pub mean: Vec<f32>,
    /// The biased variance (divided by the count), as normalisation uses it.
    pub var: Vec<f32>,
    /// `1 / sqrt(var + eps)`.
    pub inv_std: Vec<f32>,
}

/// `y = relu?(gamma * (x - mean) * inv_std + beta)` with the batch's statistics.
#[allow(clippy::too_many_arguments)]
pub fn batch_norm_train(
    x: &[f32],
    n: usize,
    c: usize,
    hw: usize,
    gamma: &[f32],
    beta: &[f32],
    eps: f32,
    relu: bool,
) -> (Vec<f32>, BatchStats) {
    assert_eq!(x.len(), n * c * hw, "batch norm input size");
    assert!(
        gamma.len() == c && beta.len() == c,
        "batch norm parameter size"
    );
    let count = (n * hw) as f64;
    let planes = |ch: usize| (0..n).map(move |i| (i * c + ch) * hw);
    let stats: Vec<(f32, f32)> = (0..c)
        .into_par_iter()
        .map(|ch| {
            let plane = |o: usize| &x[o..o + hw];
            let mean = planes(ch).map(|o| sum_mapped(plane(o), |v| v)).sum::<f64>() / count;
            let m = mean as f32;
            let var = planes(ch)
                .map(|o| sum_mapped(plane(o), |v| (v - m) * (v - m)))
                .sum::<f64>()
                / count;
            (m, var as f32)
        })
        .collect();
    let mean: Vec<f32> = stats.iter().map(|s| s.0).collect();
    let var: Vec<f32> = stats.iter().map(|s| s.1).collect();
    let inv_std: Vec<f32> = var.iter().map(|v| 1.0 / (v + eps).sqrt()).collect();
    let mut y = vec![0.0f32; x.len()];
    let ptr = SendPtr(y.as_mut_ptr());
    (0..c).into_par_iter().for_each(|ch| {
        let scale = gamma[ch] * inv_std[ch];
        let shift = beta[ch] - mean[ch] * scale;
        for o in planes(ch) {
            // SAFETY: channel ch owns planes (i * c + ch) of every image; no other task
            // writes them.
            let out = unsafe { std::slice::from_raw_parts_mut(ptr.get().add(o), hw) };
            for (d, &v) in out.iter_mut().zip(&x[o..o + hw]) {
                let t = v * scale + shift;
                // NaN passes, as through burn's relu, so a diverging step stays visible
                *d = if relu && t <= 0.0 { 0.0 } else { t };
            }
        }
    });
    (y, BatchStats { mean, var, inv_std })
}

/// `(dL/dx, dL/dgamma, dL/dbeta)` of [`batch_norm_train`] from its input `x`, its statistics
/// and `dy` = dL/dy.
#[allow(clippy::too_many_arguments)]
pub fn batch_norm_train_backward(
    x: &[f32],
    dy: &[f32],
    n: usize,
    c: usize,
    hw: usize,
    gamma: &[f32],
    beta: &[f32],
    stats: &BatchStats,
    relu: bool,
) -> (Vec<f32>, Vec<f32>, Vec<f32>) {
    assert_eq!(x.len(), n * c * hw, "batch norm input size");
    assert_eq!(dy.len(), x.len(), "batch norm output gradient size");
    let count = (n * hw) as f32;
    let planes = |ch: usize| (0..n).map(move |i| (i * c + ch) * hw);
    let mut dx = vec![0.0f32; x.len()];
    let ptr = SendPtr(dx.as_mut_ptr());
    let sums: Vec<(f32, f32)> = (0..c)
        .into_par_iter()
        .map(|ch| {
            let (m, is) = (stats.mean[ch], stats.inv_std[ch]);
            let scale = gamma[ch] * is;
            let shift = beta[ch] - m * scale;
            // The gradient reaching the normalisation: dy where the ReLU passed it.
            let g = |v: f32, d: f32| {
                if relu && v * scale + shift <= 0.0 {
                    0.0
                } else {
                    d
                }
            };
            let (mut sum_g, mut sum_gx) = (0.0f64, 0.0f64);
            // eight f32 lanes per block of 4096 values, the blocks summed in f64
            let blocks =
                planes(ch).flat_map(|o| x[o..o + hw].chunks(4096).zip(dy[o..o + hw].chunks(4096)));
            for (xp, dp) in blocks {
                let (mut lg, mut lgx) = ([0.0f32; 8], [0.0f32; 8]);
                let mut xi = xp.chunks_exact(8);
                let mut di = dp.chunks_exact(8);
                for (xc, dc) in (&mut xi).zip(&mut di) {
                    for l in 0..8 {
                        let gv = g(xc[l], dc[l]);
                        lg[l] += gv;
                        lgx[l] += gv * (xc[l] - m) * is;
                    }
                }
                for (&v, &d) in xi.remainder().iter().zip(di.remainder()) {
                    let gv = g(v, d);
                    sum_g += gv as f64;
                    sum_gx += (gv * (v - m) * is) as f64;
                }
                sum_g += lg.iter().map(|&v| v as f64).sum::<f64>();
                sum_gx += lgx.iter().map(|&v| v as f64).sum::<f64>();
            }
            let (dbeta, dgamma) = (sum_g as f32, sum_gx as f32);
            // dx = gamma * inv_std * (g - dbeta / count - xhat * dgamma / count)
            let (mb, mg) = (dbeta / count, dgamma / count);
            for o in planes(ch) {
                // SAFETY: channel ch owns planes (i * c + ch); no other task writes them.
                let out = unsafe { std::slice::from_raw_parts_mut(ptr.get().add(o), hw) };
                for ((d, &v), &gd) in out.iter_mut().zip(&x[o..o + hw]).zip(&dy[o..o + hw]) {
                    let xhat = (v - m) * is;
                    *d = scale * (g(v, gd) - mb - xhat * mg);
                }
            }
            (dgamma, dbeta)
        })
        .collect();
    let dgamma = sums.iter().map(|s| s.0).collect();
    let dbeta = sums.iter().map(|s| s.1).collect();
    (dx, dgamma, dbeta)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Finite differences of L = sum(r * y) in f64 on a small batch.
    #[test]
    fn backward_matches_finite_differences() {
        let (n, c, hw) = (2, 3, 5);
        let x: Vec<f32> = (0..n * c * hw)
            .map(|i| (i as f32 * 0.731).sin() * 3.0)
            .collect();
        let r: Vec<f32> = (0..x.len()).map(|i| (i as f32 * 0.37).cos()).collect();
        let gamma = [0.7f32, -1.2, 1.5];
        let beta = [0.1f32, 0.3, -0.2];
        for relu in [false, true] {
            let loss = |x: &[f32], gamma: &[f32], beta: &[f32]| -> f64 {
                let (y, _) = batch_norm_train(x, n, c, hw, gamma, beta, 1e-5, relu);
                y.iter().zip(&r).map(|(&a, &b)| a as f64 * b as f64).sum()
            };
            let (_, stats) = batch_norm_train(&x, n, c, hw, &gamma, &beta, 1e-5, relu);
            let (dx, dg, db) =
                batch_norm_train_backward(&x, &r, n, c, hw, &gamma, &beta, &stats, relu);
            let h = 1e-2f32;
            for i in [0, 7, 13, 29] {
                let (mut xp, mut xm) = (x.clone(), x.clone());
                xp[i] += h;
                xm[i] -= h;
                let fd = (loss(&xp, &gamma, &beta) - loss(&xm, &gamma, &beta)) / (2.0 * h as f64);
                assert!(
                    (dx[i] as f64 - fd).abs() < 2e-2,
                    "dx[{i}] {} vs {fd}",
                    dx[i]
                );
            }
            for ch in 0..c {
                let (mut gp, mut gm) = (gamma, gamma);
                gp[ch] += h;
                gm[ch] -= h;
                let fd = (loss(&x, &gp, &beta) - loss(&x, &gm, &beta)) / (2.0 * h as f64);
                assert!(
                    (dg[ch] as f64 - fd).abs() < 2e-2,
                    "dgamma {} vs {fd}",
                    dg[ch]
                );
                let (mut bp, mut bm) = (beta, beta);
                bp[ch] += h;
                bm[ch] -= h;
                let fd = (loss(&x, &gamma, &bp) - loss(&x, &gamma, &bm)) / (2.0 * h as f64);
                assert!(
                    (db[ch] as f64 - fd).abs() < 2e-2,
                    "dbeta {} vs {fd}",
                    db[ch]
                );
            }
        }
    }

    /// A NaN reaching the fused ReLU passes, as through burn's relu: a diverging step shows
    /// in the loss instead of being zeroed away.
    #[test]
    fn nan_passes_the_fused_relu() {
        let mut x = vec![0.5f32, -1.0, 2.0, 0.25];
        x[1] = f32::NAN;
        let (y, _) = batch_norm_train(&x, 1, 1, 4, &[1.0], &[0.0], 1e-5, true);
        assert!(y.iter().all(|v| v.is_nan()), "{y:?}");
    }
}

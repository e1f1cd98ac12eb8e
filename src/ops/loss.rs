//! Softmax cross-entropy and soft Dice over `[N, C, H, W]` class logits in one pass, with the
//! logits' gradient of any weighted sum of the two: the softmax is computed once and neither
//! the log-probabilities nor the probabilities of each term are kept apart.
//!
//! Definitions (as `crate::losses`): cross-entropy `sum_i w_i (-log p_{t_i}(i)) / sum_i w_i`
//! with a weight per pixel (zero where ignored); Dice with `p` and the one-hot targets zero on
//! ignored pixels, per class `D_c = (2 sum p_c g_c + s) / (sum p_c + sum g_c + s)`, loss
//! `1 - mean_c D_c`.

use super::matmul::SendPtr;
use rayon::prelude::*;

/// Pixels per parallel block.
const BLOCK: usize = 4096;

/// The two losses and `d(ce_w * ce + dice_w * dice) / d logits`.
pub struct SoftmaxLosses {
    pub ce: f32,
    pub dice: f32,
    pub grad: Vec<f32>,
}

/// `logits` `[n, c, hw]`; `labels` `[n, hw]` (negative where ignored: no loss, no gradient);
/// `weights` `[n, hw]` the cross-entropy weight of each pixel; `smooth` Dice's `s`.
#[allow(clippy::too_many_arguments)]
pub fn softmax_ce_dice(
    logits: &[f32],
    n: usize,
    c: usize,
    hw: usize,
    labels: &[i32],
    weights: &[f32],
    (ce_w, dice_w): (f32, f32),
    smooth: f32,
) -> SoftmaxLosses {
    assert_eq!(logits.len(), n * c * hw, "loss logits size");
    assert!(
        labels.len() == n * hw && weights.len() == n * hw,
        "loss targets size"
    );
    assert!(labels.iter().all(|&l| l < c as i32), "label out of range");
    let blocks_per = hw.div_ceil(BLOCK);
    let mut p = vec![0.0f32; n * c * hw];
    // Softmax per block of pixels, with the block's sums: (ce numerator, ce weight,
    // per class: sum p_c g_c, sum p_c, sum g_c).
    let ptr = SendPtr(p.as_mut_ptr());
    let parts: Vec<(f64, f64, Vec<f64>)> = (0..n * blocks_per)
        .into_par_iter()
        .map(|job| {
            let (img, b) = (job / blocks_per, job % blocks_per);
            // this task's planes start at the image's
            let ptr = SendPtr(ptr.get().wrapping_add(img * c * hw));
            let p0 = b * BLOCK;
            let len = BLOCK.min(hw - p0);
            let z = &logits[img * c * hw..][..c * hw];
            let lab = &labels[img * hw + p0..][..len];
            let wt = &weights[img * hw + p0..][..len];
            let mut max = z[p0..p0 + len].to_vec();
            for k in 1..c {
                for (m, &v) in max.iter_mut().zip(&z[k * hw + p0..][..len]) {
                    *m = m.max(v);
                }
            }
            let mut sum = vec![0.0f32; len];
            for k in 0..c {
                // SAFETY: this task owns columns p0..p0 + len of the image's planes.
                let row =
                    unsafe { std::slice::from_raw_parts_mut(ptr.get().add(k * hw + p0), len) };
                for ((e, (&v, &m)), s) in row
                    .iter_mut()
                    .zip(z[k * hw + p0..][..len].iter().zip(&max))
                    .zip(sum.iter_mut())
                {
                    *e = (v - m).exp();
                    *s += *e;
                }
            }
            let mut ce = 0.0f64;
            let mut wsum = 0.0f64;
            for i in 0..len {
                if lab[i] >= 0 {
                    let t = lab[i] as usize;
                    let logp = z[t * hw + p0 + i] - max[i] - sum[i].ln();
                    ce -= (wt[i] * logp) as f64;
                    wsum += wt[i] as f64;
                }
            }
            let mut per_class = vec![0.0f64; 3 * c];
            for k in 0..c {
                // SAFETY: as above.
                let row =
                    unsafe { std::slice::from_raw_parts_mut(ptr.get().add(k * hw + p0), len) };
                let (mut inter, mut psum, mut gsum) = (0.0f64, 0.0f64, 0.0f64);
                for i in 0..len {
                    row[i] /= sum[i];
                    if lab[i] >= 0 {
                        psum += row[i] as f64;
                        if lab[i] as usize == k {
                            inter += row[i] as f64;
                            gsum += 1.0;
                        }
                    }
                }
                per_class[3 * k] = inter;
                per_class[3 * k + 1] = psum;
                per_class[3 * k + 2] = gsum;
            }
            (ce, wsum, per_class)
        })
        .collect();
    let (mut ce_num, mut wsum) = (0.0f64, 0.0f64);
    let mut sums = vec![0.0f64; 3 * c];
    for (a, b, pc) in &parts {
        ce_num += a;
        wsum += b;
        sums.iter_mut().zip(pc).for_each(|(s, v)| *s += v);
    }
    let wsum = wsum.max(1e-12);
    let s = smooth as f64;
    let (num, den): (Vec<f64>, Vec<f64>) = (0..c)
        .map(|k| (2.0 * sums[3 * k] + s, sums[3 * k + 1] + sums[3 * k + 2] + s))
        .unzip();
    let dice = 1.0 - (0..c).map(|k| num[k] / den[k]).sum::<f64>() / c as f64;
    let ce = ce_num / wsum;
    let grad = {
        // dDice/dp_c(i) on a valid pixel: -(2 g_c den_c - num_c) / (C den_c^2)
        let a_hit: Vec<f32> = (0..c)
            .map(|k| (-(2.0 * den[k] - num[k]) / (c as f64 * den[k] * den[k])) as f32)
            .collect();
        let a_miss: Vec<f32> = (0..c)
            .map(|k| (num[k] / (c as f64 * den[k] * den[k])) as f32)
            .collect();
        let (cw, dw) = ((ce_w as f64 / wsum) as f32, dice_w);
        let mut g = p;
        g.par_chunks_mut(c * hw)
            .enumerate()
            .for_each(|(img, gimg)| {
                let lab = &labels[img * hw..][..hw];
                let wt = &weights[img * hw..][..hw];
                for i in 0..hw {
                    if lab[i] < 0 {
                        for k in 0..c {
                            gimg[k * hw + i] = 0.0;
                        }
                        continue;
                    }
                    let t = lab[i] as usize;
                    let tap = |k: usize| if k == t { a_hit[k] } else { a_miss[k] };
                    // sum_c p_c a_c
                    let pa: f32 = if dw != 0.0 {
                        (0..c).map(|k| gimg[k * hw + i] * tap(k)).sum()
                    } else {
                        0.0
                    };
                    for k in 0..c {
                        let pk = gimg[k * hw + i];
                        let mut v = cw * wt[i] * (pk - (k == t) as u8 as f32);
                        if dw != 0.0 {
                            v += dw * pk * (tap(k) - pa);
                        }
                        gimg[k * hw + i] = v;
                    }
                }
            });
        g
    };
    SoftmaxLosses {
        ce: ce as f32,
        dice: dice as f32,
        grad,
    }
}

//! Max pooling on `[C, H, W]` buffers (`F.max_pool2d`, floor mode, padding counts as -inf).

use rayon::prelude::*;

/// `k x k` max pooling with `stride` and `pad`; returns `(out, ho, wo)`.
pub fn max_pool2d(
    x: &[f32],
    c: usize,
    h: usize,
    w: usize,
    k: usize,
    stride: usize,
    pad: usize,
) -> (Vec<f32>, usize, usize) {
    assert_eq!(x.len(), c * h * w, "max_pool2d input size");
    if k == 2 && stride == 2 && pad == 0 {
        return (max_pool2x2(x, c, h, w), h / 2, w / 2);
    }
    let ho = (h + 2 * pad - k) / stride + 1;
    let wo = (w + 2 * pad - k) / stride + 1;
    let mut out = vec![0.0f32; c * ho * wo];
    out.par_chunks_mut(ho * wo).enumerate().for_each(|(ch, o)| {
        let p = &x[ch * h * w..(ch + 1) * h * w];
        for oy in 0..ho {
            let y0 = (oy * stride) as isize - pad as isize;
            let (ya, yb) = (y0.max(0) as usize, ((y0 + k as isize) as usize).min(h));
            for ox in 0..wo {
                let x0 = (ox * stride) as isize - pad as isize;
                let (xa, xb) = (x0.max(0) as usize, ((x0 + k as isize) as usize).min(w));
                let mut m = f32::NEG_INFINITY;
                for yy in ya..yb {
                    for v in &p[yy * w + xa..yy * w + xb] {
                        m = m.max(*v);
                    }
                }
                o[oy * wo + ox] = m;
            }
        }
    });
    (out, ho, wo)
}

/// 2x2, stride 2 (U-Net's down-sampling).
fn max_pool2x2(x: &[f32], c: usize, h: usize, w: usize) -> Vec<f32> {
    let (oh, ow) = (h / 2, w / 2);
    let mut out = vec![0.0f32; c * oh * ow];
    out.par_chunks_mut(oh * ow).enumerate().for_each(|(ch, o)| {
        let p = &x[ch * h * w..(ch + 1) * h * w];
        for y in 0..oh {
            let r0 = &p[2 * y * w..2 * y * w + w];
            let r1 = &p[(2 * y + 1) * w..(2 * y + 1) * w + w];
            for xx in 0..ow {
                o[y * ow + xx] = r0[2 * xx]
                    .max(r0[2 * xx + 1])
                    .max(r1[2 * xx])
                    .max(r1[2 * xx + 1]);
            }
        }
    });
    out
}

/// 2x2, stride 2 max pooling of `[planes, h, w]` (floor mode) that also records, per output,
/// which of its four inputs won (`dy * 2 + dx`; the first in row-major order on ties, as
/// PyTorch), for [`max_pool2x2_backward`].
pub fn max_pool2x2_indexed(x: &[f32], planes: usize, h: usize, w: usize) -> (Vec<f32>, Vec<u8>) {
    assert_eq!(x.len(), planes * h * w, "max_pool2d input size");
    let (oh, ow) = (h / 2, w / 2);
    let mut out = vec![0.0f32; planes * oh * ow];
    let mut idx = vec![0u8; planes * oh * ow];
    out.par_chunks_mut((oh * ow).max(1))
        .zip(idx.par_chunks_mut((oh * ow).max(1)))
        .enumerate()
        .for_each(|(ch, (o, id))| {
            let p = &x[ch * h * w..(ch + 1) * h * w];
            for y in 0..oh {
                let r0 = &p[2 * y * w..2 * y * w + w];
                let r1 = &p[(2 * y + 1) * w..(2 * y + 1) * w + w];
                for xx in 0..ow {
                    let cands = [r0[2 * xx], r0[2 * xx + 1], r1[2 * xx], r1[2 * xx + 1]];
                    let (mut best, mut at) = (cands[0], 0u8);
                    for (t, &v) in cands.iter().enumerate().skip(1) {
                        if v > best || v.is_nan() {
                            (best, at) = (v, t as u8);
                        }
                    }
                    o[y * ow + xx] = best;
                    id[y * ow + xx] = at;
                }
            }
        });
    (out, idx)
}

/// The input gradient `[planes, h, w]` of [`max_pool2x2_indexed`]: each output's gradient goes
/// to the input that won; the others (and a dropped odd last row or column) get zero.
pub fn max_pool2x2_backward(dy: &[f32], idx: &[u8], planes: usize, h: usize, w: usize) -> Vec<f32> {
    let (oh, ow) = (h / 2, w / 2);
    assert!(
        dy.len() == planes * oh * ow && idx.len() == dy.len(),
        "max_pool2d gradient size"
    );
    let mut dx = vec![0.0f32; planes * h * w];
    dx.par_chunks_mut((h * w).max(1))
        .enumerate()
        .for_each(|(ch, plane)| {
            let (g, id) = (
                &dy[ch * oh * ow..][..oh * ow],
                &idx[ch * oh * ow..][..oh * ow],
            );
            for y in 0..oh {
                for xx in 0..ow {
                    let t = id[y * ow + xx] as usize;
                    plane[(2 * y + t / 2) * w + 2 * xx + t % 2] = g[y * ow + xx];
                }
            }
        });
    dx
}

//! Resizing `[C, H, W]` maps as `F.interpolate`: bilinear (both `align_corners` modes),
//! antialiased bilinear for downscaling (`antialias=True`, the filter PIL and torchvision use),
//! bicubic (`mode="bicubic"`, `align_corners=False`, as position embeddings are resized) and
//! nearest. Channels run in parallel; each output row blends two horizontally blended
//! source rows computed once.

use rayon::prelude::*;

/// One output coordinate's two source taps and their weights.
pub type Tap = (usize, usize, f32, f32);

/// PyTorch's source coordinates for linear interpolation, in f32 as its CPU kernel:
/// `max(scale * (dst + 0.5) - 0.5, 0)` with `scale = in / out` (`align_corners=False`), or
/// `dst * (in - 1) / (out - 1)` (`align_corners=True`).
pub fn linear_taps(inp: usize, out: usize, align_corners: bool) -> Vec<Tap> {
    (0..out)
        .map(|d| {
            let src = if align_corners {
                if out > 1 {
                    d as f32 * ((inp - 1) as f32 / (out - 1) as f32)
                } else {
                    0.0
                }
            } else {
                (inp as f32 / out as f32 * (d as f32 + 0.5) - 0.5).max(0.0)
            };
            let i0 = (src as usize).min(inp - 1);
            let i1 = if i0 < inp - 1 { i0 + 1 } else { i0 };
            let l1 = (src - i0 as f32).clamp(0.0, 1.0);
            (i0, i1, 1.0 - l1, l1)
        })
        .collect()
}

/// Bilinear resize of one row-major plane `src` (row stride `src_w`), reading only its top-left
/// `crop = (h, w)` part, to `out = (oh, ow)`: `F.interpolate(mode="bilinear")` on the crop.
pub fn bilinear_plane(
    src: &[f32],
    src_w: usize,
    crop: (usize, usize),
    out: (usize, usize),
    align_corners: bool,
) -> Vec<f32> {
    let (ch, cw) = crop;
    let (oh, ow) = out;
    let tx = linear_taps(cw, ow, align_corners);
    let ty = linear_taps(ch, oh, align_corners);
    // Horizontally blended rows, each computed once.
    let mut rows: Vec<Option<Vec<f32>>> = vec![None; ch];
    let mut dst = vec![0.0f32; oh * ow];
    for (y, &(y0, y1, wy0, wy1)) in ty.iter().enumerate() {
        for r in [y0, y1] {
            if rows[r].is_none() {
                let line = &src[r * src_w..r * src_w + cw];
                rows[r] = Some(
                    tx.iter()
                        .map(|&(x0, x1, w0, w1)| line[x0] * w0 + line[x1] * w1)
                        .collect(),
                );
            }
        }
        if y > 0 && y0 > 0 {
            // Rows above the current pair are never read again.
            for r in rows.iter_mut().take(y0) {
                *r = None;
            }
        }
        let (a, b) = (rows[y0].as_ref().unwrap(), rows[y1].as_ref().unwrap());
        for (x, d) in dst[y * ow..(y + 1) * ow].iter_mut().enumerate() {
            *d = a[x] * wy0 + b[x] * wy1;
        }
    }
    dst
}

/// Bilinear resize of `[c, h, w]` to `[c, oh, ow]`.
pub fn bilinear(
    x: &[f32],
    c: usize,
    (h, w): (usize, usize),
    (oh, ow): (usize, usize),
    align_corners: bool,
) -> Vec<f32> {
    assert_eq!(x.len(), c * h * w, "resize input size");
    let planes: Vec<Vec<f32>> = (0..c)
        .into_par_iter()
        .map(|ch| {
            bilinear_plane(
                &x[ch * h * w..(ch + 1) * h * w],
                w,
                (h, w),
                (oh, ow),
                align_corners,
            )
        })
        .collect();
    planes.concat()
}

/// Nearest-neighbour resize of `[c, h, w]` to `[c, oh, ow]` (`mode="nearest"`: source index
/// `floor(dst * in / out)`).
pub fn nearest(x: &[f32], c: usize, (h, w): (usize, usize), (oh, ow): (usize, usize)) -> Vec<f32> {
    assert_eq!(x.len(), c * h * w, "resize input size");
    let idx = |inp: usize, out: usize| -> Vec<usize> {
        let scale = inp as f32 / out as f32;
        (0..out)
            .map(|d| ((d as f32 * scale).floor() as usize).min(inp - 1))
            .collect()
    };
    let (ys, xs) = (idx(h, oh), idx(w, ow));
    let mut out = vec![0.0f32; c * oh * ow];
    out.par_chunks_mut(oh * ow).enumerate().for_each(|(ch, o)| {
        let p = &x[ch * h * w..(ch + 1) * h * w];
        for (oy, &sy) in ys.iter().enumerate() {
            let row = &p[sy * w..(sy + 1) * w];
            for (ox, &sx) in xs.iter().enumerate() {
                o[oy * ow + ox] = row[sx];
            }
        }
    });
    out
}

/// The antialiased bilinear (triangle) filter's taps along one axis: the support grows with
/// the downscaling factor, weights normalised to sum to one (PyTorch's `_upsample_bilinear2d_aa`,
/// PIL's `BILINEAR`).
fn antialias_taps(inp: usize, out: usize) -> Vec<(usize, Vec<f32>)> {
    let scale = inp as f32 / out as f32;
    let (support, invscale) = if scale >= 1.0 {
        (scale, 1.0 / scale)
    } else {
        (1.0, 1.0)
    };
    (0..out)
        .map(|i| {
            let center = scale * (i as f32 + 0.5);
            let xmin = ((center - support + 0.5) as isize).max(0) as usize;
            let xmax = ((center + support + 0.5) as isize).min(inp as isize) as usize;
            let mut ws: Vec<f32> = (xmin..xmax)
                .map(|j| {
                    let t = ((j as f32 - center + 0.5) * invscale).abs();
                    if t < 1.0 { 1.0 - t } else { 0.0 }
                })
                .collect();
            let total: f32 = ws.iter().sum();
            if total != 0.0 {
                ws.iter_mut().for_each(|v| *v /= total);
            }
            (xmin, ws)
        })
        .collect()
}

/// PyTorch's cubic convolution weights (A = -0.75) of the four taps around fraction `t`.
fn cubic_weights(t: f32) -> [f32; 4] {
    const A: f32 = -0.75;
    let near = |x: f32| ((A + 2.0) * x - (A + 3.0)) * x * x + 1.0;
    let far = |x: f32| ((A * x - 5.0 * A) * x + 8.0 * A) * x - 4.0 * A;
    [far(t + 1.0), near(t), near(1.0 - t), far(2.0 - t)]
}

/// One output coordinate's four source indices (clamped to the edge) and weights, from the
/// unclamped source coordinate `scale * (dst + 0.5) - 0.5`.
fn cubic_taps(inp: usize, out: usize) -> Vec<([usize; 4], [f32; 4])> {
    let scale = inp as f32 / out as f32;
    (0..out)
        .map(|d| {
            let src = scale * (d as f32 + 0.5) - 0.5;
            let f = src.floor();
            let idx = std::array::from_fn(|j| {
                (f as isize - 1 + j as isize).clamp(0, inp as isize - 1) as usize
            });
            (idx, cubic_weights(src - f))
        })
        .collect()
}

/// Bicubic resize of `[c, h, w]` to `[c, oh, ow]` (`F.interpolate(mode="bicubic",
/// align_corners=False)`): each output blends 4x4 source values, rows first, then columns.
pub fn bicubic(x: &[f32], c: usize, (h, w): (usize, usize), (oh, ow): (usize, usize)) -> Vec<f32> {
    assert_eq!(x.len(), c * h * w, "resize input size");
    let (tx, ty) = (cubic_taps(w, ow), cubic_taps(h, oh));
    let mut out = vec![0.0f32; c * oh * ow];
    out.par_chunks_mut(oh * ow).enumerate().for_each(|(ch, o)| {
        let p = &x[ch * h * w..(ch + 1) * h * w];
        for (oy, (iy, wy)) in ty.iter().enumerate() {
            for (ox, (ix, wx)) in tx.iter().enumerate() {
                let mut acc = 0.0f32;
                for (r, &yv) in iy.iter().zip(wy) {
                    let row = &p[r * w..(r + 1) * w];
                    let v: f32 = ix.iter().zip(wx).map(|(&i, &k)| row[i] * k).sum();
                    acc += v * yv;
                }
                o[oy * ow + ox] = acc;
            }
        }
    });
    out
}

/// Antialiased bilinear resize of `[c, h, w]` to `[c, oh, ow]`
/// (`F.interpolate(mode="bilinear", align_corners=False, antialias=True)`): horizontal pass,
/// then vertical.
pub fn bilinear_antialias(
    x: &[f32],
    c: usize,
    (h, w): (usize, usize),
    (oh, ow): (usize, usize),
) -> Vec<f32> {
    assert_eq!(x.len(), c * h * w, "resize input size");
    let (tx, ty) = (antialias_taps(w, ow), antialias_taps(h, oh));
    let mut out = vec![0.0f32; c * oh * ow];
    out.par_chunks_mut(oh * ow).enumerate().for_each(|(ch, o)| {
        let p = &x[ch * h * w..(ch + 1) * h * w];
        let mut tmp = vec![0.0f32; h * ow];
        for y in 0..h {
            let row = &p[y * w..(y + 1) * w];
            for (ox, (x0, ws)) in tx.iter().enumerate() {
                tmp[y * ow + ox] = ws.iter().enumerate().map(|(j, wv)| row[x0 + j] * wv).sum();
            }
        }
        for (oy, (y0, ws)) in ty.iter().enumerate() {
            let dst = &mut o[oy * ow..(oy + 1) * ow];
            for (j, wv) in ws.iter().enumerate() {
                let src = &tmp[(y0 + j) * ow..(y0 + j + 1) * ow];
                dst.iter_mut().zip(src).for_each(|(d, s)| *d += s * wv);
            }
        }
    });
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bilinear_matches_hand_values() {
        // 1x2 -> 1x4, align_corners=False: PyTorch gives [0, 0.25, 0.75, 1] * (b - a) + a.
        let v = bilinear_plane(&[0.0, 4.0], 2, (1, 2), (1, 4), false);
        assert_eq!(v, vec![0.0, 1.0, 3.0, 4.0]);
        // align_corners=True: the corners map to the corners.
        let v = bilinear_plane(&[0.0, 3.0], 2, (1, 2), (1, 4), true);
        assert_eq!(v, vec![0.0, 1.0, 2.0, 3.0]);
        // 2x2 -> 4x4: edges clamp, interior blends 1/4, 3/4.
        let src = [0.0, 1.0, 2.0, 3.0];
        let out = bilinear_plane(&src, 2, (2, 2), (4, 4), false);
        assert_eq!(&out[0..4], &[0.0, 0.25, 0.75, 1.0]);
        assert_eq!(&out[4..8], &[0.5, 0.75, 1.25, 1.5]);
        assert_eq!(bilinear_plane(&src, 2, (2, 2), (2, 2), false), src.to_vec());
        // a crop reads only the top-left part
        assert_eq!(bilinear_plane(&src, 2, (1, 1), (2, 3), false), vec![0.0; 6]);
    }

    #[test]
    fn nearest_and_antialias_on_constants() {
        let x = vec![2.0f32; 3 * 5 * 7];
        assert!(nearest(&x, 3, (5, 7), (10, 3)).iter().all(|&v| v == 2.0));
        let a = bilinear_antialias(&x, 3, (5, 7), (2, 3));
        assert!(a.iter().all(|&v| (v - 2.0).abs() < 1e-6), "{a:?}");
    }
}

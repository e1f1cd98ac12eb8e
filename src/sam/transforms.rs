//! SAM's geometry: ResizeLongestSide (the longest side to the model input, with the reference
//! rounding), coordinate transforms, and PyTorch's bilinear interpolation (align_corners =
//! False) used to bring low-resolution mask logits back to the image.

/// The size `(h, w)` an image of `(h, w)` is resized to so that its longest side is `long`:
/// `scale = long / max(h, w)`, each side `int(side * scale + 0.5)` (as `get_preprocess_shape`).
pub fn preprocess_shape(h: usize, w: usize, long: usize) -> (usize, usize) {
    let scale = long as f64 / h.max(w) as f64;
    let nh = (h as f64 * scale + 0.5) as usize;
    let nw = (w as f64 * scale + 0.5) as usize;
    (nh, nw)
}

/// Point `(x, y)` in original-image pixels to the resized frame, as `apply_coords` (in f64).
pub fn apply_coords(x: f64, y: f64, orig: (usize, usize), long: usize) -> (f64, f64) {
    let (nh, nw) = preprocess_shape(orig.0, orig.1, long);
    (
        x * (nw as f64 / orig.1 as f64),
        y * (nh as f64 / orig.0 as f64),
    )
}

/// PyTorch's source index for `align_corners = False`: `max(scale * (dst + 0.5) - 0.5, 0)`,
/// then the two neighbours and the weight of the second, all in f32 as its CPU kernel.
fn linear_taps(inp: usize, out: usize) -> Vec<(usize, usize, f32, f32)> {
    let scale = inp as f32 / out as f32;
    (0..out)
        .map(|d| {
            let src = (scale * (d as f32 + 0.5) - 0.5).max(0.0);
            let i0 = (src as usize).min(inp - 1);
            let i1 = if i0 < inp - 1 { i0 + 1 } else { i0 };
            let l1 = (src - i0 as f32).clamp(0.0, 1.0);
            (i0, i1, 1.0 - l1, l1)
        })
        .collect()
}

/// Bilinear resize of a row-major `src_h x src_w` plane (reading only its top-left
/// `crop_h x crop_w` part) to `out_h x out_w`, as `F.interpolate(mode="bilinear",
/// align_corners=False)` on the cropped tensor: each output is the vertical blend of two
/// horizontally blended source rows.
pub fn resize_bilinear(
    src: &[f32],
    src_w: usize,
    crop: (usize, usize),
    out: (usize, usize),
) -> Vec<f32> {
    let (ch, cw) = crop;
    let (oh, ow) = out;
    let tx = linear_taps(cw, ow);
    let ty = linear_taps(ch, oh);
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn preprocess_shape_rounds_like_the_reference() {
        assert_eq!(preprocess_shape(1200, 1800, 1024), (683, 1024));
        assert_eq!(preprocess_shape(375, 500, 1024), (768, 1024));
        assert_eq!(preprocess_shape(1024, 1024, 1024), (1024, 1024));
        assert_eq!(preprocess_shape(10, 3000, 1024), (3, 1024));
    }

    #[test]
    fn bilinear_matches_hand_values() {
        // 2x2 -> 4x4 with align_corners=False: edges clamp, interior blends 1/4, 3/4.
        let src = [0.0, 1.0, 2.0, 3.0];
        let out = resize_bilinear(&src, 2, (2, 2), (4, 4));
        assert_eq!(&out[0..4], &[0.0, 0.25, 0.75, 1.0]);
        assert_eq!(&out[4..8], &[0.5, 0.75, 1.25, 1.5]);
        // identity
        assert_eq!(resize_bilinear(&src, 2, (2, 2), (2, 2)), src.to_vec());
        // crop reads only the top-left part
        let out = resize_bilinear(&src, 2, (1, 1), (2, 3));
        assert_eq!(out, vec![0.0; 6]);
    }
}

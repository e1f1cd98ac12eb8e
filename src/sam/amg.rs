//! The automatic mask generator's data helpers, apart from the algorithm (as the reference's
//! `utils/amg.py`): point grids, crop boxes, stability score, mask boxes, crop-edge test,
//! uncropping, small-region removal and the RLE glue.

use crate::formats::coco::encode_rowmajor;
use anyhow::Result;

/// `n x n` points in [0, 1]^2 at cell centres, x fastest (numpy's linspace arithmetic).
pub fn point_grid(n: usize) -> Vec<[f64; 2]> {
    let start = 1.0 / (2 * n) as f64;
    let stop = 1.0 - start;
    let side: Vec<f64> = (0..n)
        .map(|i| {
            if n > 1 && i == n - 1 {
                stop
            } else if n > 1 {
                i as f64 * ((stop - start) / (n - 1) as f64) + start
            } else {
                start
            }
        })
        .collect();
    let mut pts = Vec::with_capacity(n * n);
    for &y in &side {
        for &x in &side {
            pts.push([x, y]);
        }
    }
    pts
}

/// Crop boxes `[x0, y0, x1, y1]` and their layer: the whole image, then `(2^i)^2` overlapping
/// crops in layer i (as `generate_crop_boxes`).
pub fn crop_boxes(
    h: usize,
    w: usize,
    n_layers: usize,
    overlap_ratio: f64,
) -> Vec<([usize; 4], usize)> {
    let mut out = vec![([0, 0, w, h], 0)];
    let short = h.min(w) as f64;
    let crop_len = |orig: usize, n: usize, overlap: usize| -> usize {
        ((overlap as f64 * (n - 1) as f64 + orig as f64) / n as f64).ceil() as usize
    };
    for layer in 0..n_layers {
        let n = 1usize << (layer + 1);
        let overlap = (overlap_ratio * short * (2.0 / n as f64)) as usize;
        let cw = crop_len(w, n, overlap);
        let ch = crop_len(h, n, overlap);
        let x0s: Vec<usize> = (0..n).map(|i| (cw - overlap) * i).collect();
        let y0s: Vec<usize> = (0..n).map(|i| (ch - overlap) * i).collect();
        for &x0 in &x0s {
            for &y0 in &y0s {
                out.push(([x0, y0, (x0 + cw).min(w), (y0 + ch).min(h)], layer + 1));
            }
        }
    }
    out
}

/// Stability score of one mask's logits: the IoU between the masks thresholded at `+offset`
/// and at `-offset` (counted as integers, as the reference).
pub fn stability_score(logits: &[f32], offset: f32) -> f32 {
    let inter = logits.iter().filter(|&&v| v > offset).count() as i32;
    let union = logits.iter().filter(|&&v| v > -offset).count() as i32;
    inter as f32 / union as f32
}

/// Inclusive `[left, top, right, bottom]` of a row-major mask, `[0; 4]` when empty.
pub fn mask_to_box(m: &[u8], h: usize, w: usize) -> [i64; 4] {
    let (mut l, mut t, mut r, mut b) = (w, h, 0usize, 0usize);
    let mut any = false;
    for y in 0..h {
        let row = &m[y * w..(y + 1) * w];
        if let Some(first) = row.iter().position(|&v| v != 0) {
            let last = row.iter().rposition(|&v| v != 0).unwrap();
            any = true;
            l = l.min(first);
            r = r.max(last);
            t = t.min(y);
            b = b.max(y);
        }
    }
    if any {
        [l as i64, t as i64, r as i64, b as i64]
    } else {
        [0; 4]
    }
}

/// Whether an inclusive box in crop coordinates (crop offset `x0, y0`) lies within 20 px of an
/// edge of `crop` that is not an edge of the image (`is_box_near_crop_edge`).
pub fn box_near_crop_edge(bbox: [i64; 4], crop: [f32; 4], image: [f32; 4]) -> bool {
    let (x0, y0) = (crop[0] as i64, crop[1] as i64);
    (0..4).any(|k| {
        let v = (bbox[k] + if k % 2 == 0 { x0 } else { y0 }) as f32;
        (v - crop[k]).abs() <= 20.0 && (v - image[k]).abs() > 20.0
    })
}

/// A row-major `h x w` mask as COCO RLE and its area.
pub fn encode(m: &[u8], h: usize, w: usize) -> Result<(hotcoco::Rle, u64)> {
    let rle = encode_rowmajor(m, h as u32, w as u32)?;
    let area = hotcoco::mask::area(&rle);
    Ok((rle, area))
}

pub fn xywh_to_xyxy(b: [i64; 4]) -> [f32; 4] {
    [
        b[0] as f32,
        b[1] as f32,
        (b[0] + b[2]) as f32,
        (b[1] + b[3]) as f32,
    ]
}

/// The elements of `v` at `keep`, in that order.
pub fn pick<T>(v: Vec<T>, keep: &[usize]) -> Vec<T> {
    let mut v: Vec<Option<T>> = v.into_iter().map(Some).collect();
    keep.iter().map(|&i| v[i].take().unwrap()).collect()
}

/// A crop-frame mask placed into the full image.
pub fn uncrop_mask(m: &[u8], crop: &[usize; 4], h: usize, w: usize) -> Vec<u8> {
    let [x0, y0, x1, y1] = *crop;
    if x0 == 0 && y0 == 0 && x1 == w && y1 == h {
        return m.to_vec();
    }
    let cw = x1 - x0;
    let mut full = vec![0u8; h * w];
    for y in y0..y1 {
        full[y * w + x0..y * w + x1].copy_from_slice(&m[(y - y0) * cw..(y - y0 + 1) * cw]);
    }
    full
}

/// 8-connected components of the nonzero pixels, labels 1.. in raster order; with sizes.
pub fn components(m: &[u8], h: usize, w: usize) -> (Vec<u32>, Vec<usize>) {
    crate::ops::components::connected_components(
        m,
        h,
        w,
        crate::ops::components::Connectivity::Eight,
    )
}

/// `remove_small_regions`: fills holes (`holes`) or drops islands smaller than `area`
/// (keeping the largest island when all are small). Returns the mask and whether it changed.
pub fn remove_small_regions(
    m: &[u8],
    h: usize,
    w: usize,
    area: usize,
    holes: bool,
) -> (Vec<u8>, bool) {
    let working: Vec<u8> = m.iter().map(|&v| ((v != 0) ^ holes) as u8).collect();
    let (labels, sizes) = components(&working, h, w);
    let small: Vec<bool> = sizes
        .iter()
        .enumerate()
        .map(|(i, &s)| i > 0 && s < area)
        .collect();
    if !small.iter().any(|&s| s) {
        return (m.to_vec(), false);
    }
    let fill: Vec<bool> = if holes {
        (0..sizes.len()).map(|i| i == 0 || small[i]).collect()
    } else {
        let mut f: Vec<bool> = (0..sizes.len()).map(|i| i != 0 && !small[i]).collect();
        if !f.iter().any(|&v| v) {
            let largest =
                (1..sizes.len()).fold(1, |best, i| if sizes[i] > sizes[best] { i } else { best });
            f[largest] = true;
        }
        f
    };
    (
        labels.iter().map(|&l| fill[l as usize] as u8).collect(),
        true,
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn grid_and_crops_follow_the_reference() {
        let g = point_grid(4);
        assert_eq!(g.len(), 16);
        assert_eq!(g[0], [0.125, 0.125]);
        assert_eq!(g[1], [0.375, 0.125]);
        assert_eq!(g[15], [0.875, 0.875]);
        assert_eq!(point_grid(1), vec![[0.5, 0.5]]);
        let c = crop_boxes(600, 800, 1, 512.0 / 1500.0);
        assert_eq!(c.len(), 5);
        // overlap = int(0.3413 * 600 * 1) = 204; crop_w = ceil((204 + 800) / 2) = 502
        assert_eq!(c[1], ([0, 0, 502, 402], 1));
        assert_eq!(c[2], ([0, 198, 502, 600], 1));
        assert_eq!(c[3], ([298, 0, 800, 402], 1));
    }

    #[test]
    fn boxes_rle_and_nms() {
        let (h, w) = (4, 5);
        let mut m = vec![0u8; h * w];
        m[w + 1] = 1;
        m[2 * w + 3] = 1;
        assert_eq!(mask_to_box(&m, h, w), [1, 1, 3, 2]);
        assert_eq!(mask_to_box(&vec![0; h * w], h, w), [0; 4]);
        // column-major: column 1 has row 1 set -> index 1*4+1 = 5; column 3 row 2 -> 14
        let (rle, area) = encode(&m, h, w).unwrap();
        assert_eq!((rle.counts, area), (vec![5, 1, 8, 1, 5], 2));
        let keep = crate::ops::boxes::nms(
            &[[0., 0., 10., 10.], [1., 1., 10., 10.], [20., 20., 30., 30.]],
            &[0.5, 0.9, 0.1],
            0.7,
        );
        assert_eq!(keep, vec![1, 2]);
    }

    #[test]
    fn small_regions() {
        // a 5x5 square with a one-pixel hole, plus a one-pixel island
        let (h, w) = (7, 8);
        let mut m = vec![0u8; h * w];
        for y in 1..6 {
            for x in 1..6 {
                m[y * w + x] = 1;
            }
        }
        m[3 * w + 3] = 0;
        m[7] = 1;
        let (filled, c) = remove_small_regions(&m, h, w, 2, true);
        assert!(c && filled[3 * w + 3] == 1);
        let (clean, c) = remove_small_regions(&filled, h, w, 2, false);
        assert!(c && clean[7] == 0 && clean[w + 1] == 1);
        let (_, c) = remove_small_regions(&clean, h, w, 2, false);
        assert!(!c);
    }
}

//! Boundary metrics on binary masks.
//!
//! * Boundary F1 as the DAVIS benchmark defines it (`seg2bmap` boundaries, matched within a disk of
//!   radius `ceil(0.008 * image diagonal)`).
//! * Boundary IoU (Cheng et al. 2021): the IoU of the inner boundary bands of width
//!   `round(0.02 * image diagonal)` (at least 1), obtained by eroding with a 3x3 square.

/// A binary mask, row-major.
#[derive(Clone, Debug)]
pub struct BinMask<'a> {
    pub data: &'a [bool],
    pub height: usize,
    pub width: usize,
}

/// The DAVIS `seg2bmap` boundary map: a pixel is on the boundary when it differs from its right,
/// lower or lower-right neighbour (pixels outside the image count as background only on the last
/// row/column rules of the reference).
pub fn seg2bmap(mask: &BinMask) -> Vec<bool> {
    let (h, w) = (mask.height, mask.width);
    let m = |y: usize, x: usize| mask.data[y * w + x];
    let mut b = vec![false; h * w];
    for y in 0..h {
        for x in 0..w {
            let s = m(y, x);
            let e = if x + 1 < w { m(y, x + 1) } else { false };
            let so = if y + 1 < h { m(y + 1, x) } else { false };
            let se = if x + 1 < w && y + 1 < h {
                m(y + 1, x + 1)
            } else {
                false
            };
            let mut v = (s ^ e) | (s ^ so) | (s ^ se);
            if y + 1 == h {
                v = s ^ e;
            }
            if x + 1 == w {
                v = s ^ so;
            }
            if y + 1 == h && x + 1 == w {
                v = false;
            }
            b[y * w + x] = v;
        }
    }
    b
}

/// Offsets of a disk of the given radius (`x^2 + y^2 <= r^2`), as skimage's `disk`.
fn disk_offsets(radius: usize) -> Vec<(isize, isize)> {
    let r = radius as isize;
    let mut out = Vec::new();
    for dy in -r..=r {
        for dx in -r..=r {
            if dx * dx + dy * dy <= r * r {
                out.push((dy, dx));
            }
        }
    }
    out
}

fn dilate_disk(map: &[bool], h: usize, w: usize, offsets: &[(isize, isize)]) -> Vec<bool> {
    let mut out = vec![false; h * w];
    for y in 0..h {
        for x in 0..w {
            if !map[y * w + x] {
                continue;
            }
            for &(dy, dx) in offsets {
                let (yy, xx) = (y as isize + dy, x as isize + dx);
                if yy >= 0 && xx >= 0 && (yy as usize) < h && (xx as usize) < w {
                    out[yy as usize * w + xx as usize] = true;
                }
            }
        }
    }
    out
}

/// The DAVIS boundary tolerance in pixels for an image: `ceil(0.008 * diagonal)`.
pub fn davis_bound_pixels(height: usize, width: usize) -> usize {
    let diag = ((height * height + width * width) as f64).sqrt();
    (0.008 * diag).ceil() as usize
}

/// Precision, recall and F of the boundaries of `pred` against `gt`, DAVIS definition.
pub fn boundary_f1(pred: &BinMask, gt: &BinMask) -> (f64, f64, f64) {
    assert_eq!((pred.height, pred.width), (gt.height, gt.width));
    let (h, w) = (gt.height, gt.width);
    let offsets = disk_offsets(davis_bound_pixels(h, w));
    let pb = seg2bmap(pred);
    let gb = seg2bmap(gt);
    let n_p = pb.iter().filter(|&&v| v).count();
    let n_g = gb.iter().filter(|&&v| v).count();
    let (precision, recall) = match (n_p, n_g) {
        (0, 0) => (1.0, 1.0),
        (0, _) => (1.0, 0.0),
        (_, 0) => (0.0, 1.0),
        _ => {
            let pd = dilate_disk(&pb, h, w, &offsets);
            let gd = dilate_disk(&gb, h, w, &offsets);
            let p_match = pb.iter().zip(&gd).filter(|(a, b)| **a && **b).count();
            let g_match = gb.iter().zip(&pd).filter(|(a, b)| **a && **b).count();
            (p_match as f64 / n_p as f64, g_match as f64 / n_g as f64)
        }
    };
    let f = if precision + recall == 0.0 {
        0.0
    } else {
        2.0 * precision * recall / (precision + recall)
    };
    (precision, recall, f)
}

/// Width of the Boundary IoU band: `round(ratio * diagonal)` (ties to even, as Python), at least 1.
pub fn boundary_iou_width(height: usize, width: usize, dilation_ratio: f64) -> usize {
    let diag = ((height * height + width * width) as f64).sqrt();
    // Python 3 `round` (the reference): ties go to the even integer, e.g. 12.5 -> 12.
    ((dilation_ratio * diag).round_ties_even() as usize).max(1)
}

/// One-dimensional min filter of half-width `d` where out-of-range samples are `false`.
fn erode_line(src: &[bool], dst: &mut [bool], d: usize) {
    let n = src.len();
    // Distance to the previous/next false sample (outside counts as false).
    let mut last_false: isize = -1;
    let mut left = vec![0usize; n];
    for i in 0..n {
        if !src[i] {
            last_false = i as isize;
        }
        left[i] = (i as isize - last_false) as usize;
    }
    let mut next_false = n as isize;
    for i in (0..n).rev() {
        if !src[i] {
            next_false = i as isize;
        }
        let right = (next_false - i as isize) as usize;
        dst[i] = left[i] > d && right > d;
    }
}

/// The inner boundary band of a mask: `mask - erode(mask)` with a (2d+1) square, the image
/// surrounded by background, as `mask_to_boundary` in the Boundary IoU reference.
pub fn inner_boundary(mask: &BinMask, d: usize) -> Vec<bool> {
    let (h, w) = (mask.height, mask.width);
    let mut rows = vec![false; h * w];
    for y in 0..h {
        erode_line(
            &mask.data[y * w..(y + 1) * w],
            &mut rows[y * w..(y + 1) * w],
            d,
        );
    }
    let mut col = vec![false; h];
    let mut col_out = vec![false; h];
    let mut eroded = vec![false; h * w];
    for x in 0..w {
        for y in 0..h {
            col[y] = rows[y * w + x];
        }
        erode_line(&col, &mut col_out, d);
        for y in 0..h {
            eroded[y * w + x] = col_out[y];
        }
    }
    mask.data
        .iter()
        .zip(&eroded)
        .map(|(m, e)| *m && !*e)
        .collect()
}

/// Boundary IoU of two binary masks; NaN when both boundaries are empty.
pub fn boundary_iou(pred: &BinMask, gt: &BinMask, dilation_ratio: f64) -> f64 {
    assert_eq!((pred.height, pred.width), (gt.height, gt.width));
    let d = boundary_iou_width(gt.height, gt.width, dilation_ratio);
    let pb = inner_boundary(pred, d);
    let gb = inner_boundary(gt, d);
    let inter = pb.iter().zip(&gb).filter(|(a, b)| **a && **b).count();
    let union = pb.iter().zip(&gb).filter(|(a, b)| **a || **b).count();
    if union == 0 {
        f64::NAN
    } else {
        inter as f64 / union as f64
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn square(h: usize, w: usize, y0: usize, x0: usize, s: usize) -> Vec<bool> {
        let mut v = vec![false; h * w];
        for y in y0..y0 + s {
            for x in x0..x0 + s {
                v[y * w + x] = true;
            }
        }
        v
    }

    #[test]
    fn identical_masks_are_perfect() {
        let m = square(40, 50, 5, 7, 20);
        let a = BinMask {
            data: &m,
            height: 40,
            width: 50,
        };
        assert_eq!(boundary_f1(&a, &a).2, 1.0);
        assert_eq!(boundary_iou(&a, &a, 0.02), 1.0);
    }

    #[test]
    fn far_apart_masks_score_zero() {
        let m1 = square(100, 100, 2, 2, 10);
        let m2 = square(100, 100, 80, 80, 10);
        let a = BinMask {
            data: &m1,
            height: 100,
            width: 100,
        };
        let b = BinMask {
            data: &m2,
            height: 100,
            width: 100,
        };
        assert_eq!(boundary_f1(&a, &b).2, 0.0);
        assert_eq!(boundary_iou(&a, &b, 0.02), 0.0);
    }

    #[test]
    fn band_width_rounds_ties_to_even_like_python() {
        // 500x375: diagonal 625, 0.02 * 625 = 12.5 -> 12 (Python's round), not 13.
        assert_eq!(boundary_iou_width(375, 500, 0.02), 12);
        assert_eq!(boundary_iou_width(2, 2, 0.02), 1);
    }

    #[test]
    fn erosion_matches_square_definition() {
        let m = square(20, 20, 3, 3, 9);
        let a = BinMask {
            data: &m,
            height: 20,
            width: 20,
        };
        let band = inner_boundary(&a, 2);
        // a 9x9 square eroded by a 5x5 square leaves the inner 5x5; the band has 81 - 25 pixels.
        assert_eq!(band.iter().filter(|&&v| v).count(), 81 - 25);
        // the image border counts as background
        let full = vec![true; 36];
        let f = BinMask {
            data: &full,
            height: 6,
            width: 6,
        };
        assert_eq!(
            inner_boundary(&f, 1).iter().filter(|&&v| v).count(),
            36 - 16
        );
    }
}

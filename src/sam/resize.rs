//! Pillow's bilinear and bicubic resizes of 8-bit images, bit for bit. SAM's reference
//! preprocessing resizes with `torchvision.transforms.functional.resize` on a PIL image, i.e.
//! Pillow's `Image.resize(BILINEAR)`; SAM 2's video predictor loads frames with
//! `Image.resize((1024, 1024))`, whose default filter is BICUBIC. Both are a separable
//! convolution whose filter widens with the downscale factor (antialiasing), with fixed-point
//! coefficients (22 fractional bits), one pass per direction through an 8-bit intermediate.

const PRECISION_BITS: u32 = 32 - 8 - 2;

/// Per output pixel: first input index, and the fixed-point weights of the taps.
struct Taps {
    start: Vec<usize>,
    weights: Vec<Vec<i32>>,
}

/// A resampling filter: its support at scale 1 and its kernel.
#[derive(Clone, Copy)]
struct Filter {
    support: f64,
    kernel: fn(f64) -> f64,
}

const BILINEAR: Filter = Filter {
    support: 1.0,
    kernel: |t| {
        let t = t.abs();
        if t < 1.0 { 1.0 - t } else { 0.0 }
    },
};

/// Pillow's bicubic kernel (a = -0.5).
const BICUBIC: Filter = Filter {
    support: 2.0,
    kernel: |t| {
        const A: f64 = -0.5;
        let t = t.abs();
        if t < 1.0 {
            ((A + 2.0) * t - (A + 3.0)) * t * t + 1.0
        } else if t < 2.0 {
            (((t - 5.0) * t + 8.0) * t - 4.0) * A
        } else {
            0.0
        }
    },
};

fn precompute(in_size: usize, out_size: usize, filter: Filter) -> Taps {
    let scale = in_size as f64 / out_size as f64;
    let filterscale = scale.max(1.0);
    let support = filter.support * filterscale;
    let ss = 1.0 / filterscale;
    let mut start = Vec::with_capacity(out_size);
    let mut weights = Vec::with_capacity(out_size);
    for xx in 0..out_size {
        let center = (xx as f64 + 0.5) * scale;
        let xmin = ((center - support + 0.5) as i64).max(0) as usize;
        let xmax = ((center + support + 0.5) as i64).min(in_size as i64) as usize;
        let n = xmax.saturating_sub(xmin);
        let mut k: Vec<f64> = (0..n)
            .map(|x| (filter.kernel)(((x + xmin) as f64 - center + 0.5) * ss))
            .collect();
        let ww: f64 = k.iter().sum();
        if ww != 0.0 {
            k.iter_mut().for_each(|v| *v /= ww);
        }
        let one = (1u32 << PRECISION_BITS) as f64;
        weights.push(
            k.iter()
                .map(|&v| {
                    if v < 0.0 {
                        (-0.5 + v * one) as i32
                    } else {
                        (0.5 + v * one) as i32
                    }
                })
                .collect(),
        );
        start.push(xmin);
    }
    Taps { start, weights }
}

#[inline]
fn clip8(acc: i32) -> u8 {
    (acc >> PRECISION_BITS).clamp(0, 255) as u8
}

/// Resizes an interleaved `w x h x channels` 8-bit image to `ow x oh` exactly as Pillow 13's
/// `Image.resize((ow, oh), Image.BILINEAR)` on an RGB or L image. Pillow 13 runs the vertical
/// pass first when `oh < h` and `h - oh > 2 (w - ow)` (python-pillow/Pillow#9549), else the
/// horizontal pass first; the intermediate image is 8-bit. Earlier Pillows always went
/// horizontal first, which changes some pixels by one for very tall images.
pub fn pil_resize_bilinear(
    src: &[u8],
    w: usize,
    h: usize,
    channels: usize,
    ow: usize,
    oh: usize,
) -> Vec<u8> {
    pil_resize(src, (w, h), channels, (ow, oh), BILINEAR)
}

/// The same as [`pil_resize_bilinear`] with Pillow's `Image.BICUBIC` (its default for
/// `Image.resize`).
pub fn pil_resize_bicubic(
    src: &[u8],
    w: usize,
    h: usize,
    channels: usize,
    ow: usize,
    oh: usize,
) -> Vec<u8> {
    pil_resize(src, (w, h), channels, (ow, oh), BICUBIC)
}

fn pil_resize(
    src: &[u8],
    (w, h): (usize, usize),
    channels: usize,
    (ow, oh): (usize, usize),
    filter: Filter,
) -> Vec<u8> {
    assert_eq!(src.len(), w * h * channels);
    let vertical_first = oh < h && (h as i64 - oh as i64) > 2 * (w as i64 - ow as i64);
    let mut img = src.to_vec();
    let (mut cw, mut chh) = (w, h);
    for pass in 0..2 {
        let vertical = (pass == 0) == vertical_first;
        if vertical && oh != chh {
            img = pass_vertical(&img, cw, chh, channels, oh, filter);
            chh = oh;
        } else if !vertical && ow != cw {
            img = pass_horizontal(&img, cw, chh, channels, ow, filter);
            cw = ow;
        }
    }
    img
}

fn pass_horizontal(
    src: &[u8],
    w: usize,
    h: usize,
    channels: usize,
    ow: usize,
    filter: Filter,
) -> Vec<u8> {
    let half = 1i32 << (PRECISION_BITS - 1);
    let t = precompute(w, ow, filter);
    let mut out = vec![0u8; h * ow * channels];
    for y in 0..h {
        let line = &src[y * w * channels..(y + 1) * w * channels];
        let dst = &mut out[y * ow * channels..(y + 1) * ow * channels];
        for xx in 0..ow {
            let (x0, k) = (t.start[xx], &t.weights[xx]);
            for c in 0..channels {
                let mut acc = half;
                for (i, &kv) in k.iter().enumerate() {
                    acc += line[(x0 + i) * channels + c] as i32 * kv;
                }
                dst[xx * channels + c] = clip8(acc);
            }
        }
    }
    out
}

fn pass_vertical(
    src: &[u8],
    w: usize,
    h: usize,
    channels: usize,
    oh: usize,
    filter: Filter,
) -> Vec<u8> {
    let half = 1i32 << (PRECISION_BITS - 1);
    let t = precompute(h, oh, filter);
    let stride = w * channels;
    let mut out = vec![0u8; oh * stride];
    for yy in 0..oh {
        let (y0, k) = (t.start[yy], &t.weights[yy]);
        let dst = &mut out[yy * stride..(yy + 1) * stride];
        for (xi, d) in dst.iter_mut().enumerate() {
            let mut acc = half;
            for (i, &kv) in k.iter().enumerate() {
                acc += src[(y0 + i) * stride + xi] as i32 * kv;
            }
            *d = clip8(acc);
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn same_size_is_identity_and_constant_stays_constant() {
        let img: Vec<u8> = (0..5 * 4 * 3).map(|i| (i * 7 % 256) as u8).collect();
        assert_eq!(pil_resize_bilinear(&img, 5, 4, 3, 5, 4), img);
        let flat = vec![77u8; 9 * 7 * 3];
        assert!(
            pil_resize_bilinear(&flat, 9, 7, 3, 20, 3)
                .iter()
                .all(|&v| v == 77)
        );
    }
}

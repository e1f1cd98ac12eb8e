//! Training augmentation: random crop and random flips, applied identically to image and mask.

use rand::Rng;

/// An image (normalised CHW) and its labels, at one size.
#[derive(Clone, Debug)]
pub struct Crop {
    pub chw: Vec<f32>,
    pub labels: Vec<u32>,
    pub height: usize,
    pub width: usize,
}

#[derive(Clone, Copy, Debug)]
pub struct AugmentConfig {
    /// Crop side (square); images smaller than it are padded (image 0, mask `pad_label`).
    pub crop: Option<usize>,
    pub hflip: bool,
    pub vflip: bool,
    pub pad_label: u32,
}

/// Applies crop and flips. `chw` has `c` channels of `h x w`.
pub fn augment(
    rng: &mut impl Rng,
    chw: &[f32],
    labels: &[u32],
    c: usize,
    h: usize,
    w: usize,
    cfg: &AugmentConfig,
) -> Crop {
    let (oh, ow) = match cfg.crop {
        Some(s) => (s, s),
        None => (h, w),
    };
    // Offsets of the window in the source (may be negative => padding).
    let y0 = if h >= oh {
        rng.random_range(0..=h - oh) as isize
    } else {
        -(rng.random_range(0..=oh - h) as isize)
    };
    let x0 = if w >= ow {
        rng.random_range(0..=w - ow) as isize
    } else {
        -(rng.random_range(0..=ow - w) as isize)
    };
    let hflip = cfg.hflip && rng.random_bool(0.5);
    let vflip = cfg.vflip && rng.random_bool(0.5);
    let mut out = vec![0.0f32; c * oh * ow];
    let mut lab = vec![cfg.pad_label; oh * ow];
    for y in 0..oh {
        let sy = y as isize + y0;
        if sy < 0 || sy >= h as isize {
            continue;
        }
        let ty = if vflip { oh - 1 - y } else { y };
        for x in 0..ow {
            let sx = x as isize + x0;
            if sx < 0 || sx >= w as isize {
                continue;
            }
            let tx = if hflip { ow - 1 - x } else { x };
            let si = sy as usize * w + sx as usize;
            lab[ty * ow + tx] = labels[si];
            for ch in 0..c {
                out[(ch * oh + ty) * ow + tx] = chw[ch * h * w + si];
            }
        }
    }
    Crop {
        chw: out,
        labels: lab,
        height: oh,
        width: ow,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::SeedableRng;

    #[test]
    fn crop_keeps_image_and_mask_aligned() {
        let (h, w) = (20, 30);
        // The label of each pixel encodes its position; the image holds the same value.
        let labels: Vec<u32> = (0..(h * w) as u32).collect();
        let chw: Vec<f32> = labels.iter().map(|&v| v as f32).collect();
        let mut rng = rand::rngs::SmallRng::seed_from_u64(3);
        let cfg = AugmentConfig {
            crop: Some(16),
            hflip: true,
            vflip: true,
            pad_label: 255,
        };
        for _ in 0..20 {
            let c = augment(&mut rng, &chw, &labels, 1, h, w, &cfg);
            assert_eq!(c.labels.len(), 256);
            for (l, v) in c.labels.iter().zip(&c.chw) {
                assert_eq!(*l as f32, *v);
            }
        }
    }

    #[test]
    fn small_images_are_padded_with_pad_label() {
        let labels = vec![1u32; 4 * 4];
        let chw = vec![1.0f32; 4 * 4];
        let mut rng = rand::rngs::SmallRng::seed_from_u64(0);
        let cfg = AugmentConfig {
            crop: Some(8),
            hflip: false,
            vflip: false,
            pad_label: 255,
        };
        let c = augment(&mut rng, &chw, &labels, 1, 4, 4, &cfg);
        assert_eq!(c.labels.iter().filter(|&&l| l == 1).count(), 16);
        assert_eq!(c.labels.iter().filter(|&&l| l == 255).count(), 48);
    }
}

//! torchvision's `GeneralizedRCNNTransform` for one image: pixels to [0, 1], ImageNet
//! normalisation, bilinear resize so that the short side is `min_size` and the long side at most
//! `max_size`, zero padding to a multiple of 32; and back: boxes rescaled to the original size.

use crate::ops::resize::bilinear;

/// ImageNet statistics (torchvision's defaults).
pub const IMAGE_MEAN: [f32; 3] = [0.485, 0.456, 0.406];
pub const IMAGE_STD: [f32; 3] = [0.229, 0.224, 0.225];

/// Sizes of the resize.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct TransformConfig {
    pub min_size: usize,
    pub max_size: usize,
    /// Padded sides are multiples of this.
    pub size_divisible: usize,
}

impl Default for TransformConfig {
    fn default() -> Self {
        Self {
            min_size: 800,
            max_size: 1333,
            size_divisible: 32,
        }
    }
}

/// A preprocessed image: `[3, padded.0, padded.1]`, the image occupying the top-left `resized`.
pub struct ModelInput {
    pub data: Vec<f32>,
    pub original: (usize, usize),
    pub resized: (usize, usize),
    pub padded: (usize, usize),
}

impl TransformConfig {
    /// The resized `(h, w)` of an `(h, w)` image: `scale = min(min_size / short, max_size / long)`
    /// in double precision, each side `floor(side * scale)` (`recompute_scale_factor=True`).
    pub fn resized_size(&self, (h, w): (usize, usize)) -> (usize, usize) {
        let short = h.min(w) as f64;
        let long = h.max(w) as f64;
        let scale = (self.min_size as f64 / short).min(self.max_size as f64 / long);
        (
            ((h as f64 * scale).floor() as usize).max(1),
            ((w as f64 * scale).floor() as usize).max(1),
        )
    }

    /// An 8-bit RGB image (`h x w x 3`, row-major) to the model's input.
    pub fn apply(&self, rgb: &[u8], h: usize, w: usize) -> ModelInput {
        assert_eq!(rgb.len(), h * w * 3, "RGB image size");
        let mut chw = vec![0.0f32; 3 * h * w];
        for (i, px) in rgb.chunks_exact(3).enumerate() {
            for c in 0..3 {
                chw[c * h * w + i] = (px[c] as f32 / 255.0 - IMAGE_MEAN[c]) / IMAGE_STD[c];
            }
        }
        let (rh, rw) = self.resized_size((h, w));
        let resized = bilinear(&chw, 3, (h, w), (rh, rw), false);
        let d = self.size_divisible.max(1);
        let (ph, pw) = (rh.div_ceil(d) * d, rw.div_ceil(d) * d);
        let mut data = vec![0.0f32; 3 * ph * pw];
        for c in 0..3 {
            for y in 0..rh {
                data[(c * ph + y) * pw..(c * ph + y) * pw + rw]
                    .copy_from_slice(&resized[(c * rh + y) * rw..(c * rh + y + 1) * rw]);
            }
        }
        ModelInput {
            data,
            original: (h, w),
            resized: (rh, rw),
            padded: (ph, pw),
        }
    }
}

/// Boxes from the resized frame to the original image (`resize_boxes`: per-axis ratios in f32).
pub fn resize_boxes(boxes: &mut [[f32; 4]], from: (usize, usize), to: (usize, usize)) {
    let rh = to.0 as f32 / from.0 as f32;
    let rw = to.1 as f32 / from.1 as f32;
    for b in boxes {
        b[0] *= rw;
        b[1] *= rh;
        b[2] *= rw;
        b[3] *= rh;
    }
}

impl ModelInput {
    /// The resized image without its padding: `[3, resized.0, resized.1]`.
    pub fn unpadded(&self) -> Vec<f32> {
        let ((rh, rw), (ph, pw)) = (self.resized, self.padded);
        let mut out = Vec::with_capacity(3 * rh * rw);
        for c in 0..3 {
            for y in 0..rh {
                let at = (c * ph + y) * pw;
                out.extend_from_slice(&self.data[at..at + rw]);
            }
        }
        out
    }
}

/// A training mask resized with the image (`F.interpolate(mode="nearest")` with the recomputed
/// scale): output pixel `(y, x)` takes input `(floor(y * h / oh), floor(x * w / ow))`, in f32.
pub fn resize_mask_nearest(m: &[u8], (h, w): (usize, usize), (oh, ow): (usize, usize)) -> Vec<u8> {
    let index = |out: usize, size: usize, o: usize| -> usize {
        if size == o {
            return out;
        }
        let scale = size as f32 / o as f32;
        ((out as f32 * scale).floor() as usize).min(size - 1)
    };
    let cols: Vec<usize> = (0..ow).map(|x| index(x, w, ow)).collect();
    let mut out = Vec::with_capacity(oh * ow);
    for y in 0..oh {
        let row = &m[index(y, h, oh) * w..][..w];
        out.extend(cols.iter().map(|&x| row[x]));
    }
    out
}

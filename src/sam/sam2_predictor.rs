//! SAM 2's image predictor (`SAM2ImagePredictor`): `set_image` scales the photo to 0-1,
//! resizes it to 1024 x 1024 without keeping the aspect ratio (bilinear with antialiasing, as
//! torchvision's `Resize` on tensors) and normalises it with the ImageNet statistics; `predict`
//! maps prompts by `(x / w, y / h) * 1024`, places a box's corners first as points labelled 2 / 3,
//! decodes, optionally fills small holes and removes small sprinkles in the low-resolution
//! logits (8-connected components, done here on every device, where the reference needs its
//! CUDA extension), upsamples straight to the image size and returns the low-resolution logits
//! clamped to +-32 to feed back as a mask prompt.

use super::amg::components;
use super::predictor::{Prediction, Prompt};
use crate::models::sam::model::ImageEmbedding;
use crate::models::sam::prompt_encoder::PointPrompt;
use crate::models::sam2::model::{LowRes, PIXEL_MEAN, PIXEL_STD, Sam2};
use crate::ops::resize::{bilinear_antialias, bilinear_plane};
use anyhow::{Result, bail};

/// The predictor's postprocessing settings (the reference's constructor arguments).
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct Postprocess {
    /// Logits above this are the mask.
    pub mask_threshold: f32,
    /// Background regions of at most this many low-resolution pixels become mask (0 = off).
    pub max_hole_area: usize,
    /// Mask regions of at most this many low-resolution pixels are removed (0 = off).
    pub max_sprinkle_area: usize,
}

/// Small components of `logits <= t` (holes) become `t + 10`, then small components of
/// `logits > t` (sprinkles) become `t - 10`, as `SAM2Transforms.postprocess_masks`.
pub fn fill_holes_and_sprinkles(logits: &mut [f32], h: usize, w: usize, p: &Postprocess) {
    let t = p.mask_threshold;
    let mut pass = |area: usize, hole: bool| {
        if area == 0 {
            return;
        }
        let sel: Vec<u8> = logits.iter().map(|&v| ((v > t) != hole) as u8).collect();
        let (labels, sizes) = components(&sel, h, w);
        for (v, &l) in logits.iter_mut().zip(&labels) {
            if l > 0 && sizes[l as usize] <= area {
                *v = if hole { t + 10.0 } else { t - 10.0 };
            }
        }
    };
    pass(p.max_hole_area, true);
    pass(p.max_sprinkle_area, false);
}

/// Low-resolution logits as the predictor returns them (and takes them back as a mask
/// prompt): clamped to +-32.
pub fn clamp_low_res(m: &[f32]) -> Vec<f32> {
    m.iter().map(|v| v.clamp(-32.0, 32.0)).collect()
}

impl Sam2 {
    /// Runs the image encoder on an 8-bit RGB image (`h x w x 3`).
    pub fn set_image(&self, rgb: &[u8], h: usize, w: usize) -> Result<ImageEmbedding> {
        if h == 0 || w == 0 || rgb.len() != h * w * 3 {
            bail!(
                "image must be {h}x{w}x3 bytes, got {} (and not empty)",
                rgb.len()
            );
        }
        let s = self.image_size;
        let mut planar = vec![0.0f32; 3 * h * w];
        for (i, px) in rgb.chunks_exact(3).enumerate() {
            for c in 0..3 {
                planar[c * h * w + i] = px[c] as f32 / 255.0;
            }
        }
        let mut input = bilinear_antialias(&planar, 3, (h, w), (s, s));
        for c in 0..3 {
            input[c * s * s..(c + 1) * s * s]
                .iter_mut()
                .for_each(|v| *v = (*v - PIXEL_MEAN[c]) / PIXEL_STD[c]);
        }
        self.encode(&input, (h, w))
    }

    /// Masks for one prompt set, in original-image pixels. `multimask`: three masks, else one
    /// (chosen by stability, as the reference's `dynamic_multimask_via_stability`).
    pub fn predict(
        &self,
        e: &ImageEmbedding,
        p: &Prompt,
        multimask: bool,
        post: &Postprocess,
    ) -> Result<Prediction> {
        let (low, _) = self.predict_low_res(e, p, multimask)?;
        Ok(self.finish(e, low, post))
    }

    /// The decoder's output for one prompt set, and the model-frame points it was given.
    pub fn predict_low_res(
        &self,
        e: &ImageEmbedding,
        p: &Prompt,
        multimask: bool,
    ) -> Result<(LowRes, Vec<PointPrompt>)> {
        let (h, w) = e.original_size;
        p.check((h, w))?;
        let s = self.image_size as f32;
        // As `transform_coords`: f32 coordinates over the image size, times the input size.
        let map = |x: f64, y: f64, label: i32| PointPrompt {
            x: (x as f32 / w as f32 * s) as f64,
            y: (y as f32 / h as f32 * s) as f64,
            label,
        };
        let mut pts = Vec::with_capacity(p.points.len() + 2);
        if let Some([x0, y0, x1, y1]) = p.bbox {
            pts.push(map(x0, y0, 2));
            pts.push(map(x1, y1, 3));
        }
        for &(x, y, l) in &p.points {
            pts.push(map(x, y, l));
        }
        let low = self.decode(e, &pts, p.mask_input.as_deref(), multimask)?;
        Ok((low, pts))
    }

    /// Low-resolution logits -> holes and sprinkles -> the image size; the low-resolution
    /// logits returned clamped to +-32.
    pub fn finish(&self, e: &ImageEmbedding, low: LowRes, post: &Postprocess) -> Prediction {
        let l = 4 * e.grid;
        let logits = low
            .masks
            .iter()
            .map(|m| {
                let mut m = m.clone();
                fill_holes_and_sprinkles(&mut m, l, l, post);
                let mut up = bilinear_plane(&m, l, (l, l), e.original_size, false);
                if post.mask_threshold != 0.0 {
                    // `Prediction::mask` thresholds at 0.
                    up.iter_mut().for_each(|v| *v -= post.mask_threshold);
                }
                up
            })
            .collect();
        let low_res = low.masks.iter().map(|m| clamp_low_res(m)).collect();
        Prediction {
            logits,
            scores: low.scores,
            low_res,
            height: e.original_size.0,
            width: e.original_size.1,
            low_res_size: l,
            object_score: Some(low.object_score),
        }
    }
}

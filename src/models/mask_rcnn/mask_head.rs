//! The mask branch (He et al. 2017) as torchvision's at test time: the detections' boxes pooled
//! at 14x14 (`MultiScaleRoIAlign`), four 3x3 convolutions + ReLU (with BatchNorm in v2), a 2x2
//! transposed convolution + ReLU to 28x28, a 1x1 convolution to one logit map per class; the
//! detected class's map through a sigmoid; and `paste_masks_in_image`: each 28x28 mask padded by
//! one pixel, its box expanded to match, resized bilinearly to the box and written into the
//! image. Keys `roi_heads.mask_head.*`, `roi_heads.mask_predictor.*`.

use super::backbone::FeatureMap;
use super::fpn::conv_norm;
use super::roi_heads::multiscale_roi_align;
use crate::nn::conv::{pack_maps, unpack_maps};
use crate::nn::{Conv2d, ConvSpec, ConvTranspose2d, Weights};
use crate::ops::Activation;
use crate::ops::resize::bilinear_plane;
use rayon::prelude::*;

/// The pooled size of the mask branch; masks come out at twice that.
pub const MASK_POOL: usize = 14;

pub struct MaskBranch {
    convs: Vec<Conv2d>,
    upsample: ConvTranspose2d,
    logits: Conv2d,
}

impl MaskBranch {
    /// `w` scoped to `roi_heads`; `batch_norm` for the v2 head.
    pub fn load(w: &Weights, channels: usize, num_classes: usize, batch_norm: bool) -> Self {
        let mh = w.pp("mask_head");
        let n = mh.count_blocks("").max(1);
        let mut cin = channels;
        let convs = (0..n)
            .map(|i| {
                let out = mh.dim(&format!("{i}.0.weight"), 0).unwrap_or(256);
                let c = conv_norm(&mh.pp(i), ConvSpec::same(cin, out, 3), batch_norm);
                cin = out;
                c
            })
            .collect();
        let mp = w.pp("mask_predictor");
        let up = mp.dim("conv5_mask.weight", 1).unwrap_or(256);
        Self {
            convs,
            upsample: ConvTranspose2d::load(&mp.pp("conv5_mask"), cin, up),
            logits: Conv2d::load(
                &mp.pp("mask_fcn_logits"),
                ConvSpec::same(up, num_classes, 1),
            ),
        }
    }

    /// The 28x28 mask probabilities of each box's class (resized-frame boxes).
    pub fn forward(
        &self,
        levels: &[FeatureMap],
        boxes: &[[f32; 4]],
        labels: &[usize],
        image_size: (usize, usize),
    ) -> Vec<Vec<f32>> {
        let n = boxes.len();
        if n == 0 {
            return Vec::new();
        }
        let s = MASK_POOL;
        let mut x = multiscale_roi_align(levels, boxes, image_size, s);
        for c in &self.convs {
            x = c.forward_many(&x, n, s, s, Activation::Relu);
        }
        // The transposed convolution keeps pixels apart: one product over the packed maps.
        let cin = self.upsample.op.cin;
        let packed = pack_maps(&x, n, cin, s, s, 2);
        let wide = n * s + (n - 1) * 2;
        let up = self.upsample.forward(&packed, s, wide, Activation::Relu);
        let up = unpack_maps(&up, n, self.upsample.op.cout, s, s, 2, 2);
        // Only the detected class's logit map is needed: one dot product per pixel.
        let uc = self.upsample.op.cout;
        let plane = 4 * s * s;
        let k = &self.logits.kernel;
        up.par_chunks(uc * plane)
            .zip(labels)
            .map(|(roi, &label)| {
                let wrow = &k.w[label * uc..(label + 1) * uc];
                let mut m = vec![k.b[label]; plane];
                for (ch, &wv) in wrow.iter().enumerate() {
                    let src = &roi[ch * plane..(ch + 1) * plane];
                    m.iter_mut().zip(src).for_each(|(o, &v)| *o += wv * v);
                }
                Activation::Sigmoid.apply(&mut m);
                m
            })
            .collect()
    }
}

/// Pastes `m x m` mask probabilities into an `(h, w)` image at `boxes` (original-image
/// coordinates), as `paste_masks_in_image(masks, boxes, (h, w), padding=1)`. Returns one
/// `h * w` probability map per mask.
pub fn paste_masks(
    masks: &[Vec<f32>],
    m: usize,
    boxes: &[[f32; 4]],
    (h, w): (usize, usize),
) -> Vec<Vec<f32>> {
    masks
        .par_iter()
        .zip(boxes)
        .map(|(mask, b)| paste_one(mask, m, b, (h, w)))
        .collect()
}

fn paste_one(mask: &[f32], m: usize, b: &[f32; 4], (h, w): (usize, usize)) -> Vec<f32> {
    // expand_masks: one pixel of zeros around, the box scaled by (m + 2) / m about its centre.
    let pm = m + 2;
    let mut padded = vec![0.0f32; pm * pm];
    for y in 0..m {
        padded[(y + 1) * pm + 1..(y + 1) * pm + 1 + m].copy_from_slice(&mask[y * m..(y + 1) * m]);
    }
    let scale = pm as f32 / m as f32;
    let (wh, hh) = ((b[2] - b[0]) * 0.5 * scale, (b[3] - b[1]) * 0.5 * scale);
    let (xc, yc) = ((b[2] + b[0]) * 0.5, (b[3] + b[1]) * 0.5);
    // int64 truncation, as `boxes.to(dtype=torch.int64)`
    let bx = [xc - wh, yc - hh, xc + wh, yc + hh].map(|v| v as i64);
    let bw = (bx[2] - bx[0] + 1).max(1) as usize;
    let bh = (bx[3] - bx[1] + 1).max(1) as usize;
    let resized = bilinear_plane(&padded, pm, (pm, pm), (bh, bw), false);
    let mut out = vec![0.0f32; h * w];
    let x0 = bx[0].max(0);
    let x1 = (bx[2] + 1).min(w as i64);
    let y0 = bx[1].max(0);
    let y1 = (bx[3] + 1).min(h as i64);
    if x0 >= x1 || y0 >= y1 {
        return out;
    }
    for y in y0..y1 {
        let sy = (y - bx[1]) as usize;
        if sy >= bh {
            break;
        }
        for x in x0..x1 {
            let sx = (x - bx[0]) as usize;
            if sx >= bw {
                break;
            }
            out[y as usize * w + x as usize] = resized[sy * bw + sx];
        }
    }
    out
}

//! The box branch of torchvision's `RoIHeads` at test time: `MultiScaleRoIAlign` (each box
//! pooled from the FPN level its size maps to, `k = floor(4 + log2(sqrt(area) / 224))`
//! clamped to P2-P5), the box head (v1 `TwoMLPHead`: two fully connected layers; v2: four 3x3
//! convolutions with BatchNorm, then one), the predictor (class logits, per-class box deltas),
//! and the postprocessing: softmax, per-class decoding with weights (10, 10, 5, 5), clipping,
//! score threshold, small boxes out, per-class NMS and the best `detections_per_img`.
//! Keys `roi_heads.box_head.*`, `roi_heads.box_predictor.*`.

use super::backbone::FeatureMap;
use super::fpn::conv_norm;
use crate::nn::{ConvSpec, Linear, Weights};
use crate::ops::Activation;
use crate::ops::boxes::{BoxCoder, batched_nms, box_area, clip_boxes, keep_min_size};
use crate::ops::roi_align::RoiAlign;
use crate::ops::softmax::softmax_rows;

/// Test-time settings (torchvision's defaults).
#[derive(Clone, Copy, Debug)]
pub struct BoxConfig {
    pub score_thresh: f32,
    pub nms_thresh: f32,
    pub detections_per_img: usize,
}

impl Default for BoxConfig {
    fn default() -> Self {
        Self {
            score_thresh: 0.05,
            nms_thresh: 0.5,
            detections_per_img: 100,
        }
    }
}

/// `MultiScaleRoIAlign`'s level assignment over P2-P5 (feature heights `heights`) for images at
/// most `image_h` high: each level's scale, `2^round(log2(height / image_h))`, and each box's
/// level, `k = floor(4 + log2(sqrt(area) / 224) + 1e-6)` clamped to the levels present.
pub fn roi_levels<'a>(
    heights: &[usize],
    image_h: usize,
    boxes: impl Iterator<Item = &'a [f32; 4]>,
) -> (Vec<f32>, Vec<usize>) {
    let scales: Vec<f32> = heights
        .iter()
        .map(|&h| 2f32.powf((h as f32 / image_h as f32).log2().round_ties_even()))
        .collect();
    let k_min = -scales[0].log2();
    let k_max = -scales[scales.len() - 1].log2();
    let assign = boxes
        .map(|b| {
            let k = (4.0 + (box_area(b).sqrt() / 224.0).log2() + 1e-6)
                .floor()
                .clamp(k_min, k_max);
            (k - k_min) as usize
        })
        .collect();
    (scales, assign)
}

/// `MultiScaleRoIAlign` over P2-P5: `[boxes, c, out, out]`.
pub fn multiscale_roi_align(
    levels: &[FeatureMap],
    boxes: &[[f32; 4]],
    image_size: (usize, usize),
    out: usize,
) -> Vec<f32> {
    let levels = &levels[..4];
    let heights: Vec<usize> = levels.iter().map(|f| f.h).collect();
    let (scales, assign) = roi_levels(&heights, image_size.0, boxes.iter());
    let c = levels[0].c;
    let per = c * out * out;
    let mut result = vec![0.0f32; boxes.len() * per];
    for (li, f) in levels.iter().enumerate() {
        let idx: Vec<usize> = (0..boxes.len()).filter(|&i| assign[i] == li).collect();
        if idx.is_empty() {
            continue;
        }
        let op = RoiAlign {
            out_h: out,
            out_w: out,
            spatial_scale: scales[li],
            sampling_ratio: 2,
            aligned: false,
        };
        let b: Vec<[f32; 4]> = idx.iter().map(|&i| boxes[i]).collect();
        let pooled = op.forward(&f.data, f.c, f.h, f.w, &b);
        for (j, &i) in idx.iter().enumerate() {
            result[i * per..(i + 1) * per].copy_from_slice(&pooled[j * per..(j + 1) * per]);
        }
    }
    result
}

enum BoxHead {
    /// v1: `fc6`, `fc7`.
    TwoMlp(Linear, Linear),
    /// v2: four 3x3 conv + BatchNorm + ReLU on the 7x7 features, then one Linear + ReLU.
    ConvFc(Vec<crate::nn::Conv2d>, Linear),
}

pub struct BoxBranch {
    head: BoxHead,
    cls_score: Linear,
    bbox_pred: Linear,
    pub num_classes: usize,
}

/// The pooled size of the box branch.
pub const BOX_POOL: usize = 7;

impl BoxBranch {
    /// `w` scoped to `roi_heads`; the classes come from `box_predictor.cls_score`.
    pub fn load(w: &Weights, channels: usize) -> Self {
        let flat = channels * BOX_POOL * BOX_POOL;
        let head = if w.contains("box_head.fc6.weight") {
            let rep = w.dim("box_head.fc6.weight", 0).unwrap_or(1024);
            BoxHead::TwoMlp(
                Linear::load(&w.pp("box_head.fc6"), flat, rep),
                Linear::load(&w.pp("box_head.fc7"), rep, rep),
            )
        } else {
            let bh = w.pp("box_head");
            let n_conv = (0..)
                .take_while(|i| bh.contains(&format!("{i}.0.weight")))
                .count();
            let convs = (0..n_conv)
                .map(|i| conv_norm(&bh.pp(i), ConvSpec::same(channels, channels, 3), true))
                .collect();
            let fc = format!("{}", n_conv + 1);
            let rep = bh.dim(&format!("{fc}.weight"), 0).unwrap_or(1024);
            BoxHead::ConvFc(convs, Linear::load(&bh.pp(fc), flat, rep))
        };
        let rep = match &head {
            BoxHead::TwoMlp(_, fc7) => fc7.out,
            BoxHead::ConvFc(_, fc) => fc.out,
        };
        let nc = w.dim("box_predictor.cls_score.weight", 0).unwrap_or(91);
        Self {
            head,
            cls_score: Linear::load(&w.pp("box_predictor.cls_score"), rep, nc),
            bbox_pred: Linear::load(&w.pp("box_predictor.bbox_pred"), rep, 4 * nc),
            num_classes: nc,
        }
    }

    /// Class logits `[n, classes]` and deltas `[n, classes * 4]` of pooled features.
    fn forward(&self, pooled: &[f32], n: usize) -> (Vec<f32>, Vec<f32>) {
        let x = match &self.head {
            BoxHead::TwoMlp(fc6, fc7) => {
                let mut x = fc6.forward(pooled, n);
                Activation::Relu.apply(&mut x);
                let mut x = fc7.forward(&x, n);
                Activation::Relu.apply(&mut x);
                x
            }
            BoxHead::ConvFc(convs, fc) => {
                let mut feats = pooled.to_vec();
                for c in convs {
                    feats = c.forward_many(&feats, n, BOX_POOL, BOX_POOL, Activation::Relu);
                }
                let mut x = fc.forward(&feats, n);
                Activation::Relu.apply(&mut x);
                x
            }
        };
        (self.cls_score.forward(&x, n), self.bbox_pred.forward(&x, n))
    }
}

/// Final detections in the resized frame, best first.
pub struct Detections {
    pub boxes: Vec<[f32; 4]>,
    pub scores: Vec<f32>,
    pub labels: Vec<usize>,
}

/// Box branch + `postprocess_detections` on the proposals of one image.
pub fn detect(
    branch: &BoxBranch,
    levels: &[FeatureMap],
    proposals: &[[f32; 4]],
    image_size: (usize, usize),
    cfg: &BoxConfig,
) -> Detections {
    let n = proposals.len();
    let nc = branch.num_classes;
    if n == 0 {
        return Detections {
            boxes: Vec::new(),
            scores: Vec::new(),
            labels: Vec::new(),
        };
    }
    let pooled = multiscale_roi_align(levels, proposals, image_size, BOX_POOL);
    let (mut logits, deltas) = branch.forward(&pooled, n);
    softmax_rows(&mut logits, nc);
    let coder = BoxCoder::new([10.0, 10.0, 5.0, 5.0]);
    let mut boxes = Vec::new();
    let mut scores = Vec::new();
    let mut labels = Vec::new();
    for (i, p) in proposals.iter().enumerate() {
        for c in 1..nc {
            let s = logits[i * nc + c];
            if s <= cfg.score_thresh {
                continue;
            }
            let mut b = [coder.decode(&deltas[(i * nc + c) * 4..(i * nc + c + 1) * 4], p)];
            clip_boxes(&mut b, image_size);
            boxes.push(b[0]);
            scores.push(s);
            labels.push(c as i64);
        }
    }
    let keep = keep_min_size(&boxes, 1e-2);
    let boxes: Vec<[f32; 4]> = keep.iter().map(|&i| boxes[i]).collect();
    let scores: Vec<f32> = keep.iter().map(|&i| scores[i]).collect();
    let labels: Vec<i64> = keep.iter().map(|&i| labels[i]).collect();
    let mut keep = batched_nms(&boxes, &scores, &labels, cfg.nms_thresh);
    keep.truncate(cfg.detections_per_img);
    Detections {
        boxes: keep.iter().map(|&i| boxes[i]).collect(),
        scores: keep.iter().map(|&i| scores[i]).collect(),
        labels: keep.iter().map(|&i| labels[i] as usize).collect(),
    }
}

//! The region proposal network (Ren et al. 2015) as torchvision's `RegionProposalNetwork` at test
//! time: a shared head on every FPN level (3x3 convolution(s) + ReLU, then per anchor an
//! objectness logit and four box deltas), proposals decoded from the anchors, the best
//! `pre_nms_top_n` per level by objectness, clipped to the image, tiny boxes dropped, NMS (0.7)
//! within each level, and the best `post_nms_top_n` overall. Keys `rpn.head.*`.

use super::anchors::{SIZES, grid_anchors};
use super::backbone::FeatureMap;
use crate::nn::{Conv2d, ConvSpec, Weights};
use crate::ops::Activation;
use crate::ops::boxes::{BoxCoder, batched_nms, clip_boxes, keep_min_size, top_k};

/// Test-time settings of proposal selection (torchvision's defaults).
#[derive(Clone, Copy, Debug)]
pub struct RpnConfig {
    pub pre_nms_top_n: usize,
    pub post_nms_top_n: usize,
    pub nms_thresh: f32,
    pub min_size: f32,
    pub score_thresh: f32,
}

impl Default for RpnConfig {
    fn default() -> Self {
        Self {
            pre_nms_top_n: 1000,
            post_nms_top_n: 1000,
            nms_thresh: 0.7,
            min_size: 1e-3,
            score_thresh: 0.0,
        }
    }
}

pub struct RpnHead {
    convs: Vec<Conv2d>,
    cls_logits: Conv2d,
    bbox_pred: Conv2d,
    pub anchors_per_position: usize,
}

impl RpnHead {
    /// `w` scoped to `rpn.head`: `conv.{i}.0` (one conv in v1, two in v2), `cls_logits`,
    /// `bbox_pred`; the anchors per position are read from `cls_logits`.
    pub fn load(w: &Weights, channels: usize) -> Self {
        let depth = w.count_blocks("conv").max(1);
        let a = w.dim("cls_logits.weight", 0).unwrap_or(3);
        Self {
            convs: (0..depth)
                .map(|i| {
                    Conv2d::load(
                        &w.pp("conv").pp(i).pp(0),
                        ConvSpec::same(channels, channels, 3),
                    )
                })
                .collect(),
            cls_logits: Conv2d::load(&w.pp("cls_logits"), ConvSpec::same(channels, a, 1)),
            bbox_pred: Conv2d::load(&w.pp("bbox_pred"), ConvSpec::same(channels, 4 * a, 1)),
            anchors_per_position: a,
        }
    }

    /// Objectness logits `[h * w * A]` and deltas `[h * w * A, 4]` of one level, ordered
    /// (row, column, anchor) like the anchors.
    pub fn forward(&self, f: &FeatureMap) -> (Vec<f32>, Vec<[f32; 4]>) {
        let mut t = f.data.clone();
        for c in &self.convs {
            t = c.forward(&t, f.h, f.w, Activation::Relu).0;
        }
        let hw = f.h * f.w;
        let a = self.anchors_per_position;
        let (logits, _, _) = self.cls_logits.forward(&t, f.h, f.w, Activation::None);
        let (deltas, _, _) = self.bbox_pred.forward(&t, f.h, f.w, Activation::None);
        let mut obj = Vec::with_capacity(hw * a);
        let mut del = Vec::with_capacity(hw * a);
        for p in 0..hw {
            for k in 0..a {
                obj.push(logits[k * hw + p]);
                del.push(std::array::from_fn(|j| deltas[(k * 4 + j) * hw + p]));
            }
        }
        (obj, del)
    }
}

/// Proposals (resized-image coordinates) and their objectness probabilities, best first.
pub struct Proposals {
    pub boxes: Vec<[f32; 4]>,
    pub scores: Vec<f32>,
}

/// Runs the head on P2-P6 and selects the proposals for an image of `image_size` (resized,
/// unpadded) inside a `padded` input.
pub fn propose(
    head: &RpnHead,
    levels: &[FeatureMap],
    image_size: (usize, usize),
    padded: (usize, usize),
    cfg: &RpnConfig,
) -> Proposals {
    let outputs: Vec<LevelOutput> = levels
        .iter()
        .map(|f| {
            let (objectness, deltas) = head.forward(f);
            LevelOutput {
                objectness,
                deltas,
                size: (f.h, f.w),
            }
        })
        .collect();
    select_proposals(&outputs, image_size, padded, cfg)
}

/// The head's outputs on one level of one image, ordered (row, column, anchor).
pub struct LevelOutput {
    pub objectness: Vec<f32>,
    pub deltas: Vec<[f32; 4]>,
    /// The level's feature-map size.
    pub size: (usize, usize),
}

/// `filter_proposals` of one image: per level the best `pre_nms_top_n` anchors by objectness,
/// decoded, clipped to `image_size`, tiny and low-score boxes dropped, NMS within each level,
/// the best `post_nms_top_n` overall.
pub fn select_proposals(
    levels: &[LevelOutput],
    image_size: (usize, usize),
    padded: (usize, usize),
    cfg: &RpnConfig,
) -> Proposals {
    let coder = BoxCoder::new([1.0; 4]);
    let mut boxes = Vec::new();
    let mut logits = Vec::new();
    let mut level_of = Vec::new();
    for (li, l) in levels.iter().enumerate() {
        let anchors = grid_anchors(SIZES[li], l.size, padded);
        // The best pre_nms_top_n of the level by objectness (decoded only for those).
        for i in top_k(&l.objectness, cfg.pre_nms_top_n) {
            boxes.push(coder.decode(&l.deltas[i], &anchors[i]));
            logits.push(l.objectness[i]);
            level_of.push(li as i64);
        }
    }
    clip_boxes(&mut boxes, image_size);
    let mut scores: Vec<f32> = logits.iter().map(|&l| 1.0 / (1.0 + (-l).exp())).collect();
    let keep: Vec<usize> = keep_min_size(&boxes, cfg.min_size)
        .into_iter()
        .filter(|&i| scores[i] >= cfg.score_thresh)
        .collect();
    let boxes: Vec<[f32; 4]> = keep.iter().map(|&i| boxes[i]).collect();
    scores = keep.iter().map(|&i| scores[i]).collect();
    let level_of: Vec<i64> = keep.iter().map(|&i| level_of[i]).collect();
    let mut keep = batched_nms(&boxes, &scores, &level_of, cfg.nms_thresh);
    keep.truncate(cfg.post_nms_top_n);
    Proposals {
        boxes: keep.iter().map(|&i| boxes[i]).collect(),
        scores: keep.iter().map(|&i| scores[i]).collect(),
    }
}

//! Mask R-CNN's training forward pass and its five losses, as torchvision's `MaskRCNN` computes
//! them in training mode:
//!
//! * RPN: anchors matched to the ground truth (IoU 0.7 / 0.3, low-quality matches kept),
//!   256 anchors sampled per image (half positive at most); objectness binary cross-entropy
//!   over the sampled anchors, smooth-L1 (beta 1/9) on the positives' deltas, divided by the
//!   number sampled.
//! * Proposals: the RPN's boxes selected as at test time (2000 before and after NMS per image)
//!   from detached outputs, plus the ground-truth boxes.
//! * Box branch: proposals matched at 0.5, 512 sampled per image (a quarter positive at most);
//!   cross-entropy over the classes, smooth-L1 (beta 1/9) of the positives' deltas of their
//!   class (weights 10, 10, 5, 5), divided by the number sampled.
//! * Mask branch: the positive proposals' 28x28 logits of their class against the matched
//!   ground-truth masks RoIAligned onto them, binary cross-entropy.
//!
//! Sampling draws from the caller's generator; [`Overrides`] can fix the sampled anchors,
//! proposals and sampled proposals instead (to compare against another implementation).

use super::network::{FrozenStages, Network};
use super::targets::{BELOW_LOW, mask_targets, match_boxes, sample};
use crate::autodiff::roi_align;
use crate::models::mask_rcnn::anchors::{SIZES, grid_anchors};
use crate::models::mask_rcnn::roi_heads::roi_levels;
use crate::models::mask_rcnn::rpn::{LevelOutput, RpnConfig, select_proposals};
use crate::models::tensor_io::to_vec;
use crate::ops::boxes::BoxCoder;
use crate::ops::roi_align::RoiAlign;
use burn::prelude::*;
use burn::tensor::activation::log_softmax;
use rand::Rng;

/// One training image after the transform: normalised `[3, h, w]` pixels (resized, unpadded)
/// and its objects in that frame.
#[derive(Clone, Debug)]
pub struct TrainImage {
    pub pixels: Vec<f32>,
    pub size: (usize, usize),
    pub boxes: Vec<[f32; 4]>,
    /// Class ids (1..classes).
    pub labels: Vec<usize>,
    /// One 0/1 `h * w` mask per object.
    pub masks: Vec<Vec<u8>>,
}

/// Positive and negative indices sampled for one image.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Sampled {
    pub positive: Vec<usize>,
    pub negative: Vec<usize>,
}

/// Choices that replace the random ones (per image).
#[derive(Clone, Debug, Default)]
pub struct Overrides {
    /// Anchors sampled for the RPN losses (indices into the image's anchors, all levels).
    pub anchors: Option<Vec<Sampled>>,
    /// The RPN's proposals (before the ground-truth boxes are added).
    pub proposals: Option<Vec<Vec<[f32; 4]>>>,
    /// Proposals sampled for the heads (indices into proposals + ground-truth boxes).
    pub rois: Option<Vec<Sampled>>,
}

/// The sampling settings (torchvision's defaults).
#[derive(Clone, Copy, Debug)]
pub struct SamplingConfig {
    pub rpn_fg_iou: f32,
    pub rpn_bg_iou: f32,
    pub rpn_batch: usize,
    pub rpn_positive_fraction: f32,
    pub proposals: RpnConfig,
    pub box_fg_iou: f32,
    pub box_bg_iou: f32,
    pub box_batch: usize,
    pub box_positive_fraction: f32,
}

impl Default for SamplingConfig {
    fn default() -> Self {
        Self {
            rpn_fg_iou: 0.7,
            rpn_bg_iou: 0.3,
            rpn_batch: 256,
            rpn_positive_fraction: 0.5,
            proposals: RpnConfig {
                pre_nms_top_n: 2000,
                post_nms_top_n: 2000,
                ..RpnConfig::default()
            },
            box_fg_iou: 0.5,
            box_bg_iou: 0.5,
            box_batch: 512,
            box_positive_fraction: 0.25,
        }
    }
}

/// The five losses (each a one-element tensor).
pub struct Losses {
    pub objectness: Tensor<1>,
    pub rpn_box_reg: Tensor<1>,
    pub classifier: Tensor<1>,
    pub box_reg: Tensor<1>,
    pub mask: Tensor<1>,
}

/// The names the losses carry in torchvision's loss dict, in [`Losses::values`]' order.
pub const LOSS_NAMES: [&str; 5] = [
    "loss_objectness",
    "loss_rpn_box_reg",
    "loss_classifier",
    "loss_box_reg",
    "loss_mask",
];

impl Losses {
    pub fn total(&self) -> Tensor<1> {
        self.objectness.clone()
            + self.rpn_box_reg.clone()
            + self.classifier.clone()
            + self.box_reg.clone()
            + self.mask.clone()
    }

    /// The five values, in [`LOSS_NAMES`]' order.
    pub fn values(&self) -> [f64; 5] {
        [
            &self.objectness,
            &self.rpn_box_reg,
            &self.classifier,
            &self.box_reg,
            &self.mask,
        ]
        .map(|t| t.clone().into_scalar::<f32>() as f64)
    }
}

/// What the forward pass sampled, per image (for inspection and tests).
#[derive(Clone, Debug, Default)]
pub struct Trace {
    pub anchors: Vec<Sampled>,
    pub proposals: Vec<Vec<[f32; 4]>>,
    pub rois: Vec<Sampled>,
}

const SMOOTH_L1_BETA: f32 = 1.0 / 9.0;
const MASK_SIZE: usize = 28;

fn int_tensor(v: Vec<i64>, device: &Device) -> Tensor<1, Int> {
    let n = v.len();
    Tensor::<1, Int>::from_data(TensorData::new(v, [n]), device)
}

fn float_tensor<const D: usize>(v: Vec<f32>, shape: [usize; D], device: &Device) -> Tensor<D> {
    Tensor::<D>::from_data(TensorData::new(v, shape), device)
}

/// Mean binary cross-entropy with logits, `max(x, 0) - x t + log(1 + exp(-|x|))`.
fn bce_with_logits<const D: usize>(x: Tensor<D>, t: Tensor<D>) -> Tensor<1> {
    let soft = x.clone().abs().neg().exp().log1p();
    (x.clone().clamp_min(0.0) - x * t + soft).mean()
}

/// Summed smooth-L1 with `beta`: `0.5 q^2 / beta + (|d| - q)` with `q = min(|d|, beta)`.
fn smooth_l1_sum<const D: usize>(pred: Tensor<D>, target: Tensor<D>, beta: f32) -> Tensor<1> {
    let n = (pred - target).abs();
    let q = n.clone().clamp_max(beta);
    (q.clone() * q.clone() * (0.5 / beta) + n - q).sum()
}

/// torchvision's `MultiScaleRoIAlign` (P2-P5, sampling ratio 2) of boxes of a batch:
/// `[boxes, c, out, out]`, rows in the boxes' order.
fn pool(
    levels: &[Tensor<4>],
    rois: &[(usize, [f32; 4])],
    max_size: (usize, usize),
    out: usize,
) -> Tensor<4> {
    let heights: Vec<usize> = levels[..4].iter().map(|f| f.dims()[2]).collect();
    let (scales, assign) = roi_levels(&heights, max_size.0, rois.iter().map(|(_, b)| b));
    let mut parts = Vec::new();
    let mut order = Vec::with_capacity(rois.len());
    for (li, f) in levels[..4].iter().enumerate() {
        let idx: Vec<usize> = (0..rois.len()).filter(|&i| assign[i] == li).collect();
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
        let b: Vec<(usize, [f32; 4])> = idx.iter().map(|&i| rois[i]).collect();
        parts.push(roi_align(f.clone(), &b, op));
        order.extend(idx);
    }
    let pooled = Tensor::cat(parts, 0);
    let mut position = vec![0i64; rois.len()];
    for (j, &i) in order.iter().enumerate() {
        position[i] = j as i64;
    }
    pooled.select(0, int_tensor(position, &levels[0].device()))
}

/// The training forward pass of a batch: the five losses and what was sampled.
pub fn losses<R: Rng>(
    net: &Network,
    frozen: &FrozenStages,
    batch: &[TrainImage],
    cfg: &SamplingConfig,
    rng: &mut R,
    overrides: &Overrides,
    device: &Device,
) -> (Losses, Trace) {
    let n = batch.len();
    assert!(n > 0, "an empty batch");
    // GeneralizedRCNNTransform's batching: zero padding to a multiple of 32.
    let max_h = batch.iter().map(|b| b.size.0).max().unwrap();
    let max_w = batch.iter().map(|b| b.size.1).max().unwrap();
    let (ph, pw) = (max_h.div_ceil(32) * 32, max_w.div_ceil(32) * 32);
    let mut pixels = vec![0.0f32; n * 3 * ph * pw];
    for (i, im) in batch.iter().enumerate() {
        let (h, w) = im.size;
        for c in 0..3 {
            for y in 0..h {
                let dst = ((i * 3 + c) * ph + y) * pw;
                pixels[dst..dst + w]
                    .copy_from_slice(&im.pixels[(c * h + y) * w..(c * h + y + 1) * w]);
            }
        }
    }
    let levels = net.features(frozen.forward(&pixels, n, ph, pw, device));

    // RPN head on every level; objectness and deltas per image, levels concatenated.
    let mut objs = Vec::new();
    let mut dels = Vec::new();
    let mut sizes = Vec::new();
    for f in &levels {
        let [_, _, fh, fw] = f.dims();
        sizes.push((fh, fw));
        let (o, d) = net.rpn(f.clone());
        objs.push(o);
        dels.push(d);
    }
    let obj = Tensor::cat(objs, 1);
    let del = Tensor::cat(dels, 1);
    let total = obj.dims()[1];
    let obj_host = to_vec(obj.clone().detach());
    let del_host = to_vec(del.clone().detach());
    let anchors: Vec<[f32; 4]> = sizes
        .iter()
        .enumerate()
        .flat_map(|(li, &s)| grid_anchors(SIZES[li], s, (ph, pw)))
        .collect();
    assert_eq!(anchors.len(), total, "anchors and RPN outputs");
    let counts: Vec<usize> = sizes.iter().map(|&(h, w)| h * w * 3).collect();

    let mut trace = Trace::default();
    let rpn_coder = BoxCoder::new([1.0; 4]);
    let (mut rpn_idx, mut rpn_lab) = (Vec::new(), Vec::new());
    let (mut rpn_pos, mut rpn_tgt) = (Vec::new(), Vec::new());
    for (i, im) in batch.iter().enumerate() {
        // Proposals from the detached outputs.
        let proposals = match &overrides.proposals {
            Some(p) => p[i].clone(),
            None => {
                let mut start = 0;
                let outs: Vec<LevelOutput> = sizes
                    .iter()
                    .zip(&counts)
                    .map(|(&size, &c)| {
                        let at = i * total + start;
                        start += c;
                        LevelOutput {
                            objectness: obj_host[at..at + c].to_vec(),
                            deltas: (0..c)
                                .map(|j| std::array::from_fn(|k| del_host[(at + j) * 4 + k]))
                                .collect(),
                            size,
                        }
                    })
                    .collect();
                select_proposals(&outs, im.size, (ph, pw), &cfg.proposals).boxes
            }
        };
        trace.proposals.push(proposals);
        // Anchor targets.
        let matches = if im.boxes.is_empty() {
            vec![BELOW_LOW; total]
        } else {
            match_boxes(&im.boxes, &anchors, cfg.rpn_fg_iou, cfg.rpn_bg_iou, true)
        };
        let s = match &overrides.anchors {
            Some(a) => a[i].clone(),
            None => {
                let pos: Vec<usize> = (0..total).filter(|&j| matches[j] >= 0).collect();
                let neg: Vec<usize> = (0..total).filter(|&j| matches[j] == BELOW_LOW).collect();
                let (positive, negative) =
                    sample(&pos, &neg, cfg.rpn_batch, cfg.rpn_positive_fraction, rng);
                Sampled { positive, negative }
            }
        };
        for &j in &s.positive {
            rpn_idx.push((i * total + j) as i64);
            rpn_lab.push(1.0);
            rpn_pos.push((i * total + j) as i64);
            rpn_tgt.extend(rpn_coder.encode(&im.boxes[matches[j] as usize], &anchors[j]));
        }
        for &j in &s.negative {
            rpn_idx.push((i * total + j) as i64);
            rpn_lab.push(0.0);
        }
        trace.anchors.push(s);
    }
    let sampled = rpn_idx.len();
    let objectness = bce_with_logits(
        obj.reshape([n * total])
            .select(0, int_tensor(rpn_idx, device)),
        float_tensor(rpn_lab, [sampled], device),
    );
    let npos = rpn_pos.len();
    let rpn_box_reg = if npos == 0 {
        Tensor::zeros([1], device)
    } else {
        smooth_l1_sum(
            del.reshape([n * total, 4])
                .select(0, int_tensor(rpn_pos, device)),
            float_tensor(rpn_tgt, [npos, 4], device),
            SMOOTH_L1_BETA,
        ) / sampled as f32
    };

    // Box branch targets: proposals + ground truth, matched, sampled in index order.
    let box_coder = BoxCoder::new([10.0, 10.0, 5.0, 5.0]);
    let mut rois = Vec::new();
    let mut labels = Vec::new();
    let mut box_tgt = Vec::new();
    let mut pos_rows = Vec::new();
    let mut mask_rois = Vec::new();
    let mut mask_labels = Vec::new();
    let mut mask_tgt = Vec::new();
    for (i, im) in batch.iter().enumerate() {
        let mut cand = trace.proposals[i].clone();
        cand.extend_from_slice(&im.boxes);
        let matches = if im.boxes.is_empty() {
            vec![BELOW_LOW; cand.len()]
        } else {
            match_boxes(&im.boxes, &cand, cfg.box_fg_iou, cfg.box_bg_iou, false)
        };
        let s = match &overrides.rois {
            Some(r) => r[i].clone(),
            None => {
                let pos: Vec<usize> = (0..cand.len()).filter(|&j| matches[j] >= 0).collect();
                let neg: Vec<usize> = (0..cand.len())
                    .filter(|&j| matches[j] == BELOW_LOW)
                    .collect();
                let (positive, negative) =
                    sample(&pos, &neg, cfg.box_batch, cfg.box_positive_fraction, rng);
                Sampled { positive, negative }
            }
        };
        let mut chosen: Vec<usize> = s.positive.iter().chain(&s.negative).copied().collect();
        chosen.sort_unstable();
        let mut img_pos = Vec::new();
        let mut img_matched = Vec::new();
        for &j in &chosen {
            let m = matches[j];
            let label = if m >= 0 { im.labels[m as usize] } else { 0 };
            let gt = if m >= 0 {
                im.boxes[m as usize]
            } else if im.boxes.is_empty() {
                [0.0; 4]
            } else {
                im.boxes[0]
            };
            if label > 0 {
                pos_rows.push((rois.len(), label));
                img_pos.push(cand[j]);
                img_matched.push(m as usize);
                mask_labels.push(label);
            }
            box_tgt.extend(box_coder.encode(&gt, &cand[j]));
            labels.push(label as i64);
            rois.push((i, cand[j]));
        }
        mask_tgt.extend(mask_targets(
            &im.masks,
            im.size,
            &img_pos,
            &img_matched,
            MASK_SIZE,
        ));
        mask_rois.extend(img_pos.into_iter().map(|b| (i, b)));
        trace.rois.push(s);
    }
    let k = rois.len();
    let nc = net.num_classes;
    let zero = || Tensor::<1>::zeros([1], device);
    let (classifier, box_reg) = if k == 0 {
        (zero(), zero())
    } else {
        let pooled = pool(&levels, &rois, (max_h, max_w), 7);
        let (logits, deltas) = net.boxes(pooled);
        let lab = int_tensor(labels, device).reshape([k, 1]);
        let classifier = log_softmax(logits, 1).gather(1, lab).neg().mean();
        let box_reg = if pos_rows.is_empty() {
            zero()
        } else {
            let rows: Vec<i64> = pos_rows.iter().map(|&(r, l)| (r * nc + l) as i64).collect();
            let tgt: Vec<f32> = pos_rows
                .iter()
                .flat_map(|&(r, _)| box_tgt[r * 4..r * 4 + 4].to_vec())
                .collect();
            let np = rows.len();
            smooth_l1_sum(
                deltas
                    .reshape([k * nc, 4])
                    .select(0, int_tensor(rows, device)),
                float_tensor(tgt, [np, 4], device),
                SMOOTH_L1_BETA,
            ) / k as f32
        };
        (classifier, box_reg)
    };
    let mask = if mask_rois.is_empty() {
        zero()
    } else {
        let p = mask_rois.len();
        let pooled = pool(&levels, &mask_rois, (max_h, max_w), 14);
        let logits = net.masks(pooled).reshape([p * nc, MASK_SIZE * MASK_SIZE]);
        let rows: Vec<i64> = mask_labels
            .iter()
            .enumerate()
            .map(|(r, &l)| (r * nc + l) as i64)
            .collect();
        bce_with_logits(
            logits.select(0, int_tensor(rows, device)),
            float_tensor(mask_tgt, [p, MASK_SIZE * MASK_SIZE], device),
        )
    };
    (
        Losses {
            objectness,
            rpn_box_reg,
            classifier,
            box_reg,
            mask,
        },
        trace,
    )
}

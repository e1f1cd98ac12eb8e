//! What the training losses compare against, as torchvision's detection code makes it: the
//! `Matcher` (IoU thresholds, low-quality matches), the `BalancedPositiveNegativeSampler`, box
//! regression targets (`BoxCoder.encode`) and the mask targets (ground-truth masks RoIAligned
//! onto the positive proposals at 28x28). All on the host, outside the autodiff graph.

use crate::ops::boxes::box_iou;
use crate::ops::roi_align::RoiAlign;
use rand::Rng;
use rand::seq::SliceRandom;

/// A prediction whose best IoU is below the low threshold (background).
pub const BELOW_LOW: i64 = -1;
/// A prediction between the thresholds (ignored).
pub const BETWEEN: i64 = -2;

/// torchvision's `Matcher`: for each of `preds`, the index of the ground-truth box it matches,
/// or [`BELOW_LOW`] / [`BETWEEN`]. With `allow_low_quality`, every prediction that reaches some
/// ground truth's best IoU keeps its best match whatever the thresholds say. `gt` must not be
/// empty.
pub fn match_boxes(
    gt: &[[f32; 4]],
    preds: &[[f32; 4]],
    high: f32,
    low: f32,
    allow_low_quality: bool,
) -> Vec<i64> {
    let (g, p) = (gt.len(), preds.len());
    assert!(g > 0, "matching against no ground truth");
    let q = box_iou(gt, preds);
    let mut best = vec![(f32::NEG_INFINITY, 0usize); p];
    for gi in 0..g {
        for (pi, b) in best.iter_mut().enumerate() {
            let v = q[gi * p + pi];
            // The first maximum wins, as torch.max on the CPU.
            if v > b.0 {
                *b = (v, gi);
            }
        }
    }
    let mut matches: Vec<i64> = best
        .iter()
        .map(|&(v, gi)| {
            if v < low {
                BELOW_LOW
            } else if v < high {
                BETWEEN
            } else {
                gi as i64
            }
        })
        .collect();
    if allow_low_quality {
        for gi in 0..g {
            let row = &q[gi * p..(gi + 1) * p];
            let top = row.iter().copied().fold(f32::NEG_INFINITY, f32::max);
            for (pi, &v) in row.iter().enumerate() {
                if v == top {
                    matches[pi] = best[pi].1 as i64;
                }
            }
        }
    }
    matches
}

/// `BalancedPositiveNegativeSampler`: up to `batch * fraction` of the `positive` indices and
/// the rest of `batch` from `negative`, each a uniformly random subset (in random order).
pub fn sample<R: Rng>(
    positive: &[usize],
    negative: &[usize],
    batch: usize,
    fraction: f32,
    rng: &mut R,
) -> (Vec<usize>, Vec<usize>) {
    let num_pos = ((batch as f32 * fraction) as usize).min(positive.len());
    let num_neg = (batch - num_pos).min(negative.len());
    let pick = |from: &[usize], k: usize, rng: &mut R| {
        let mut v = from.to_vec();
        let (chosen, _) = v.partial_shuffle(rng, k);
        chosen.to_vec()
    };
    let pos = pick(positive, num_pos, rng);
    let neg = pick(negative, num_neg, rng);
    (pos, neg)
}

/// `project_masks_on_boxes`: each box's ground-truth mask (0/1, `h x w`) RoIAligned onto the
/// box at `m x m` (scale 1, adaptive sampling, `aligned=False`): `[boxes, m * m]` soft targets.
pub fn mask_targets(
    masks: &[Vec<u8>],
    (h, w): (usize, usize),
    boxes: &[[f32; 4]],
    matched: &[usize],
    m: usize,
) -> Vec<f32> {
    let op = RoiAlign {
        out_h: m,
        out_w: m,
        spatial_scale: 1.0,
        sampling_ratio: -1,
        aligned: false,
    };
    // Each ground-truth mask as floats once, however many boxes it serves.
    let mut planes: Vec<Option<Vec<f32>>> = vec![None; masks.len()];
    let mut out = Vec::with_capacity(boxes.len() * m * m);
    for (b, &gi) in boxes.iter().zip(matched) {
        let plane = planes[gi].get_or_insert_with(|| masks[gi].iter().map(|&v| v as f32).collect());
        out.extend(op.forward(plane, 1, h, w, std::slice::from_ref(b)));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::SeedableRng;

    #[test]
    fn matcher_thresholds_and_low_quality_matches() {
        let gt = [[0.0, 0.0, 10.0, 10.0], [20.0, 20.0, 30.0, 30.0]];
        let preds = [
            [0.0, 0.0, 10.0, 10.0],   // IoU 1 with gt 0
            [0.0, 0.0, 10.0, 14.0],   // IoU 0.714 with gt 0
            [0.0, 0.0, 10.0, 20.0],   // IoU 0.5 with gt 0: between
            [100.0, 0.0, 110.0, 5.0], // nothing: below
            [20.0, 20.0, 30.0, 40.0], // IoU 0.5 with gt 1: gt 1's best, so kept as a match
        ];
        assert_eq!(
            match_boxes(&gt, &preds, 0.7, 0.3, false),
            vec![0, 0, BETWEEN, BELOW_LOW, BETWEEN]
        );
        assert_eq!(
            match_boxes(&gt, &preds, 0.7, 0.3, true),
            vec![0, 0, BETWEEN, BELOW_LOW, 1]
        );
    }

    #[test]
    fn sampler_keeps_the_fraction_and_fills_with_negatives() {
        let mut rng = rand::rngs::SmallRng::seed_from_u64(3);
        let pos: Vec<usize> = (0..10).collect();
        let neg: Vec<usize> = (10..1000).collect();
        let (p, n) = sample(&pos, &neg, 256, 0.5, &mut rng);
        assert_eq!((p.len(), n.len()), (10, 246));
        let pos: Vec<usize> = (0..500).collect();
        let (p, n) = sample(&pos, &neg, 256, 0.25, &mut rng);
        assert_eq!((p.len(), n.len()), (64, 192));
        let mut u = p.clone();
        u.sort();
        u.dedup();
        assert_eq!(u.len(), 64, "no index drawn twice");
    }
}

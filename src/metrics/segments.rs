//! Segment agreement for connectomics and cell segmentation, as the ISBI 2012 / SNEMI3D
//! challenges score it (with scikit-image's definitions, `skimage.metrics`): the
//! foreground-restricted adapted Rand error (`adapted_rand_error`, pixels whose ground-truth
//! segment is 0 left out) and the variation of information split into false splits and false
//! merges (`variation_of_information` with the same pixels left out: in bits, probabilities over
//! the pixels counted), over the segments of a label map: the connected components of each
//! class > 0. `tools/gen_segment_metrics_fixtures.py` makes the reference numbers.

use super::semantic::LabelPair;
use crate::ops::components::{Connectivity, connected_components};
use rayon::prelude::*;
use serde::Serialize;
use std::collections::HashMap;

/// Joint pixel counts of ground-truth and predicted segment ids.
pub struct Contingency {
    pairs: HashMap<(u32, u32), u64>,
    /// The pixels counted (not ignored).
    total: u64,
}

impl Contingency {
    /// Counts `(gt, pred)` id pairs, leaving out pixels whose ground-truth id is in `ignore_gt`.
    pub fn new(gt: &[u32], pred: &[u32], ignore_gt: &[u32]) -> Self {
        assert_eq!(gt.len(), pred.len());
        let mut pairs = HashMap::new();
        let mut total = 0;
        for (&g, &p) in gt.iter().zip(pred) {
            if !ignore_gt.contains(&g) {
                *pairs.entry((g, p)).or_insert(0u64) += 1;
                total += 1;
            }
        }
        Self { pairs, total }
    }

    fn marginals(&self) -> (HashMap<u32, u64>, HashMap<u32, u64>) {
        let (mut a, mut b) = (HashMap::new(), HashMap::new());
        for (&(g, p), &n) in &self.pairs {
            *a.entry(g).or_insert(0u64) += n;
            *b.entry(p).or_insert(0u64) += n;
        }
        (a, b)
    }
}

/// One image's (or the mean of many images') segment scores.
#[derive(Clone, Copy, Debug, Default, PartialEq, Serialize)]
pub struct SegmentScores {
    /// `1 - F` of the pair precision and recall below (0 is perfect).
    pub rand_error: f64,
    /// scikit-image's "precision": pairs together in both / pairs together in the ground truth.
    pub rand_precision: f64,
    /// scikit-image's "recall": pairs together in both / pairs together in the prediction.
    pub rand_recall: f64,
    /// H(prediction | ground truth) in bits: over-segmentation (0 is perfect).
    pub vi_split: f64,
    /// H(ground truth | prediction) in bits: under-segmentation (0 is perfect).
    pub vi_merge: f64,
}

/// Adapted Rand error and variation of information from a contingency table.
pub fn scores(c: &Contingency) -> SegmentScores {
    let (a, b) = c.marginals();
    let sq = |it: &mut dyn Iterator<Item = u64>| -> f64 {
        let (mut s2, mut s) = (0.0f64, 0.0f64);
        for n in it {
            s2 += (n as f64) * (n as f64);
            s += n as f64;
        }
        s2 - s
    };
    let sum_p2 = sq(&mut c.pairs.values().copied());
    let sum_a2 = sq(&mut a.values().copied());
    let sum_b2 = sq(&mut b.values().copied());
    let precision = sum_p2 / sum_a2;
    let recall = sum_p2 / sum_b2;
    let fscore = sum_p2 / (0.5 * sum_a2 + 0.5 * sum_b2);
    let t = c.total as f64;
    let (mut split, mut merge) = (0.0f64, 0.0f64);
    for (&(g, p), &n) in &c.pairs {
        if n == 0 {
            continue;
        }
        let pij = n as f64 / t;
        split -= pij * (n as f64 / a[&g] as f64).log2();
        merge -= pij * (n as f64 / b[&p] as f64).log2();
    }
    SegmentScores {
        rand_error: 1.0 - fscore,
        rand_precision: precision,
        rand_recall: recall,
        vi_split: split,
        vi_merge: merge,
    }
}

/// Segment ids of a label map: the connected components of each class > 0, numbered across
/// classes from 1; class 0 and `ignore` pixels are 0.
pub fn segments(
    labels: &[u32],
    h: usize,
    w: usize,
    ignore: Option<u32>,
    connectivity: Connectivity,
) -> Vec<u32> {
    let mut classes: Vec<u32> = labels
        .iter()
        .copied()
        .filter(|&c| c != 0 && Some(c) != ignore)
        .collect::<std::collections::BTreeSet<u32>>()
        .into_iter()
        .collect();
    classes.sort_unstable();
    let mut out = vec![0u32; labels.len()];
    let mut next = 0u32;
    for c in classes {
        let m: Vec<u8> = labels.iter().map(|&v| (v == c) as u8).collect();
        let (ids, sizes) = connected_components(&m, h, w, connectivity);
        for (o, &id) in out.iter_mut().zip(&ids) {
            if id != 0 {
                *o = next + id;
            }
        }
        next += (sizes.len() - 1) as u32;
    }
    out
}

/// The mean over images of their scores, and the images' count.
#[derive(Clone, Debug, Serialize, PartialEq)]
pub struct SegmentSummary {
    pub images: usize,
    /// 4 or 8.
    pub connectivity: u8,
    #[serde(flatten)]
    pub mean: SegmentScores,
    /// F-score of the foreground pixels (class > 0 in both maps, ignored pixels left out),
    /// pooled over the images.
    pub foreground_f_score: f64,
    /// The ISBI 2012 challenge's pixel error, `1 - foreground_f_score` (its Fiji script's
    /// definition, the figure the U-Net paper reports; with label maps there is no threshold to
    /// maximise over). Not `1 - pixel accuracy`.
    pub isbi_pixel_error: f64,
    pub per_image: Vec<SegmentScores>,
}

/// Scores every pair (segments of the ground truth against segments of the prediction, the
/// ground truth's class-0 and `ignore` pixels left out) and their mean.
pub fn evaluate(
    pairs: &[LabelPair],
    ignore: Option<u32>,
    connectivity: Connectivity,
) -> SegmentSummary {
    let per_image: Vec<SegmentScores> = pairs
        .par_iter()
        .map(|p| {
            let gt = segments(&p.gt, p.height, p.width, ignore, connectivity);
            let pred = segments(&p.pred, p.height, p.width, None, connectivity);
            scores(&Contingency::new(&gt, &pred, &[0]))
        })
        .collect();
    let n = per_image.len().max(1) as f64;
    let mean = |f: fn(&SegmentScores) -> f64| per_image.iter().map(f).sum::<f64>() / n;
    let (mut tp, mut fp, mut fneg) = (0u64, 0u64, 0u64);
    for p in pairs {
        for (&g, &q) in p.gt.iter().zip(&p.pred) {
            if Some(g) == ignore {
                continue;
            }
            match (g > 0, q > 0) {
                (true, true) => tp += 1,
                (false, true) => fp += 1,
                (true, false) => fneg += 1,
                (false, false) => {}
            }
        }
    }
    let f_score = if tp + fp + fneg == 0 {
        1.0
    } else {
        2.0 * tp as f64 / (2 * tp + fp + fneg) as f64
    };
    SegmentSummary {
        images: per_image.len(),
        connectivity: match connectivity {
            Connectivity::Four => 4,
            Connectivity::Eight => 8,
        },
        mean: SegmentScores {
            rand_error: mean(|s| s.rand_error),
            rand_precision: mean(|s| s.rand_precision),
            rand_recall: mean(|s| s.rand_recall),
            vi_split: mean(|s| s.vi_split),
            vi_merge: mean(|s| s.vi_merge),
        },
        foreground_f_score: f_score,
        isbi_pixel_error: 1.0 - f_score,
        per_image,
    }
}

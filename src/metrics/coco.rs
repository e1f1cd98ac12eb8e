//! COCO instance evaluation (mask or box AP/AR), computed by hotcoco's port of pycocotools'
//! COCOeval: the 12 standard numbers in `COCOeval.stats` order and per-category AP (mean of
//! precision over IoU thresholds and recall points, area "all", 100 detections).
//!
//! Annotation ids of 0: pycocotools keeps the matched ground-truth id per detection with 0 for
//! "unmatched", so a detection matched to annotation 0 counts as a false positive there (and is
//! ignored when its area is outside the range). segrs evaluates such files correctly and, where
//! pycocotools' numbers would differ, computes them too ([`pycocotools_compat`]: the same
//! matches re-accumulated with pycocotools' reading of them).

use super::boundary_ap::MatchedImage;
use crate::formats::coco::{load_gt, load_results};
use anyhow::{Result, bail};
use hotcoco::{COCOeval, IouType};
use serde::Serialize;
use std::path::Path;

pub const STAT_NAMES: [&str; 12] = [
    "AP", "AP50", "AP75", "APs", "APm", "APl", "AR1", "AR10", "AR100", "ARs", "ARm", "ARl",
];

#[derive(Clone, Debug, Serialize, PartialEq)]
pub struct CategoryAp {
    pub category_id: u64,
    pub ap: f64,
}

#[derive(Clone, Debug, Serialize, PartialEq)]
pub struct CocoReport {
    pub stats: Vec<f64>,
    pub per_category: Vec<CategoryAp>,
    /// Precision-recall curves from the accumulated precision (area "all", 100 detections),
    /// where the evaluation kept them.
    #[serde(skip)]
    pub curves: Option<PrCurves>,
}

/// Precision at each of pycocotools' 101 recall thresholds, as `COCOeval.accumulate` leaves it
/// (interpolated: the best precision at that recall or beyond), area "all", 100 detections.
/// NaN where no category has ground truth.
#[derive(Clone, Debug, PartialEq)]
pub struct PrCurves {
    pub recall: Vec<f64>,
    /// Mean over the categories with ground truth, at IoU 0.5.
    pub iou_50: Vec<f64>,
    /// The same at IoU 0.75.
    pub iou_75: Vec<f64>,
    /// The same averaged over IoU 0.5:0.95 (the curve whose area is AP).
    pub iou_50_95: Vec<f64>,
    /// Per category, averaged over IoU 0.5:0.95.
    pub per_category: Vec<(u64, Vec<f64>)>,
}

/// The correct report and, when the ground truth has an annotation with id 0, the one
/// pycocotools would give.
pub struct Evaluation {
    pub report: CocoReport,
    pub pycocotools: Option<CocoReport>,
}

pub fn evaluate_files(gt_path: &Path, dt_path: &Path, iou_type: IouType) -> Result<CocoReport> {
    Ok(evaluate_files_both(gt_path, dt_path, iou_type)?.report)
}

/// [`evaluate_files`], plus pycocotools' numbers when an annotation id of 0 can change them.
pub fn evaluate_files_both(
    gt_path: &Path,
    dt_path: &Path,
    iou_type: IouType,
) -> Result<Evaluation> {
    let gt = load_gt(gt_path)?;
    let has_zero = gt.dataset.annotations.iter().any(|a| a.id == 0);
    let dt = load_results(&gt, dt_path, iou_type == IouType::Segm)?;
    let mut ev = COCOeval::new(gt, dt, iou_type);
    ev.evaluate()
        .map_err(|e| anyhow::anyhow!("COCO evaluation of {}: {e}", dt_path.display()))?;
    let pycocotools = has_zero.then(|| pycocotools_compat(&ev));
    let report = report_of(&mut ev)?;
    Ok(Evaluation {
        report,
        pycocotools,
    })
}

fn report_of(ev: &mut COCOeval) -> Result<CocoReport> {
    ev.accumulate();
    let _ = ev.summarize_lines();
    let Some(stats) = ev.stats() else {
        bail!("COCO evaluation produced no statistics")
    };
    let stats = stats.to_vec();
    let acc = ev
        .accumulated()
        .ok_or_else(|| anyhow::anyhow!("COCO evaluation was not accumulated"))?;
    let s = acc.shape;
    let (a, m) = (ev.params.all_area_idx(), ev.params.max_det_idx());
    let per_category = acc
        .cat_ids
        .iter()
        .enumerate()
        .map(|(k, &cat)| {
            let v: Vec<f64> = (0..s.t)
                .flat_map(|t| (0..s.r).map(move |r| (t, r)))
                .map(|(t, r)| acc.precision[acc.precision_idx(t, r, k, a, m)])
                .filter(|&p| p > -1.0)
                .collect();
            CategoryAp {
                category_id: cat,
                ap: if v.is_empty() { -1.0 } else { numpy_mean(&v) },
            }
        })
        .collect();
    let mean_valid = |v: &mut dyn Iterator<Item = f64>| {
        let v: Vec<f64> = v.filter(|&p| p > -1.0).collect();
        if v.is_empty() {
            f64::NAN
        } else {
            v.iter().sum::<f64>() / v.len() as f64
        }
    };
    let p = &ev.params;
    let t_at = |iou: f64| p.iou_thrs.iter().position(|&t| (t - iou).abs() < 1e-9);
    let at = |ts: &[usize], ks: &[usize]| -> Vec<f64> {
        (0..s.r)
            .map(|r| {
                mean_valid(&mut ts.iter().flat_map(|&t| {
                    ks.iter()
                        .map(move |&k| acc.precision[acc.precision_idx(t, r, k, a, m)])
                }))
            })
            .collect()
    };
    let all_t: Vec<usize> = (0..s.t).collect();
    let all_k: Vec<usize> = (0..acc.cat_ids.len()).collect();
    let curves = PrCurves {
        recall: p.rec_thrs.clone(),
        iou_50: t_at(0.5).map(|t| at(&[t], &all_k)).unwrap_or_default(),
        iou_75: t_at(0.75).map(|t| at(&[t], &all_k)).unwrap_or_default(),
        iou_50_95: at(&all_t, &all_k),
        per_category: acc
            .cat_ids
            .iter()
            .enumerate()
            .map(|(k, &c)| (c, at(&all_t, &[k])))
            .collect(),
    };
    Ok(CocoReport {
        stats,
        per_category,
        curves: Some(curves),
    })
}

/// pycocotools' `accumulate` + `summarize` (boundary_ap's, which follow it step for step) over
/// hotcoco's matches, reading a match to ground-truth id 0 as "unmatched" as pycocotools does:
/// the detection is then a false positive, or ignored when its area is outside the range.
pub fn pycocotools_compat(ev: &COCOeval) -> CocoReport {
    let p = &ev.params;
    let a_n = p.area_ranges.len();
    let img_pos: std::collections::HashMap<u64, usize> = p
        .img_ids
        .iter()
        .enumerate()
        .map(|(i, &id)| (id, i))
        .collect();
    let cat_pos: std::collections::HashMap<u64, usize> = p
        .cat_ids
        .iter()
        .enumerate()
        .map(|(i, &id)| (id, i))
        .collect();
    let mut groups: Vec<Vec<_>> = vec![Vec::new(); p.cat_ids.len() * a_n];
    for e in ev.eval_imgs().iter().flatten() {
        let a = p.area_ranges.iter().position(|r| r.range == e.area_rng);
        if let (Some(&k), Some(a)) = (cat_pos.get(&e.category_id), a) {
            groups[k * a_n + a].push(e);
        }
    }
    let dt_area = |id: u64| ev.coco_dt().get_ann(id).and_then(|a| a.area).unwrap_or(0.0);
    let t_n = p.iou_thrs.len();
    let evals: Vec<Vec<MatchedImage>> = groups
        .into_iter()
        .enumerate()
        .map(|(i, mut g)| {
            g.sort_by_key(|e| img_pos.get(&e.image_id).copied().unwrap_or(usize::MAX));
            let rng = p.area_ranges[i % a_n].range;
            g.into_iter()
                .map(|e| {
                    let nd = e.dt_ids.len();
                    let to_zero =
                        |t: usize, d: usize| e.dt_matched[(t, d)] && e.dt_matches[(t, d)] == 0;
                    let outside = |d: usize| {
                        let area = dt_area(e.dt_ids[d]);
                        area < rng[0] || area > rng[1]
                    };
                    MatchedImage {
                        dt_scores: e.dt_scores.clone(),
                        dt_matched: (0..t_n)
                            .map(|t| {
                                (0..nd)
                                    .map(|d| e.dt_matched[(t, d)] && !to_zero(t, d))
                                    .collect()
                            })
                            .collect(),
                        dt_ignore: (0..t_n)
                            .map(|t| {
                                (0..nd)
                                    .map(|d| e.dt_ignore[(t, d)] || (to_zero(t, d) && outside(d)))
                                    .collect()
                            })
                            .collect(),
                        gt_ignore: e.gt_in_denominator.iter().map(|&x| !x).collect(),
                    }
                })
                .collect()
        })
        .collect();
    super::boundary_ap::accumulate_and_summarize(&evals, p.img_ids.clone(), p.cat_ids.clone())
}

/// numpy's mean (pairwise summation in blocks of 8), so per-category AP equals pycocotools'
/// `np.mean` to the last bit.
pub fn numpy_mean(v: &[f64]) -> f64 {
    fn pairwise(v: &[f64]) -> f64 {
        if v.len() < 8 {
            return v.iter().fold(0.0, |a, b| a + b);
        }
        if v.len() <= 128 {
            let mut r = [0.0f64; 8];
            r.copy_from_slice(&v[..8]);
            let mut i = 8;
            while i + 8 <= v.len() {
                for k in 0..8 {
                    r[k] += v[i + k];
                }
                i += 8;
            }
            let mut res = ((r[0] + r[1]) + (r[2] + r[3])) + ((r[4] + r[5]) + (r[6] + r[7]));
            while i < v.len() {
                res += v[i];
                i += 1;
            }
            return res;
        }
        let mut n2 = v.len() / 2;
        n2 -= n2 % 8;
        pairwise(&v[..n2]) + pairwise(&v[n2..])
    }
    pairwise(v) / v.len() as f64
}

impl CocoReport {
    pub fn table(&self, iou_type: &str) -> String {
        let mut s = format!("COCO {iou_type} evaluation\n");
        for (name, v) in STAT_NAMES.iter().zip(&self.stats) {
            s.push_str(&format!("  {name:<6} {v:.4}\n"));
        }
        s
    }
}

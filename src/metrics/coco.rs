//! COCO instance evaluation (mask or box AP/AR), computed by hotcoco's port of pycocotools'
//! COCOeval: the 12 standard numbers in `COCOeval.stats` order and per-category AP (mean of
//! precision over IoU thresholds and recall points, area "all", 100 detections).
//!
//! Annotation ids of 0: pycocotools keeps the matched ground-truth id per detection with 0 for
//! "unmatched", so a detection matched to annotation 0 counts as a false positive there (and is
//! ignored when its area is outside the range). segrs evaluates such files correctly and, where
//! pycocotools' numbers would differ, computes them too ([`pycocotools_compat`]: the same
//! matches re-accumulated with pycocotools' reading of them).

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
    Ok(CocoReport {
        stats,
        per_category,
    })
}

/// pycocotools' `accumulate` + `summarize` over the evaluated matches, reading a match to
/// ground-truth id 0 as "unmatched" as pycocotools does.
pub fn pycocotools_compat(ev: &COCOeval) -> CocoReport {
    let p = &ev.params;
    let (t_n, r_n, k_n, a_n, m_n) = (
        p.iou_thrs.len(),
        p.rec_thrs.len(),
        p.cat_ids.len(),
        p.area_ranges.len(),
        p.max_dets.len(),
    );
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
    let area_pos = |r: [f64; 2]| p.area_ranges.iter().position(|a| a.range == r);
    let mut groups: Vec<Vec<_>> = vec![Vec::new(); k_n * a_n];
    for e in ev.eval_imgs().iter().flatten() {
        if let (Some(&k), Some(a)) = (cat_pos.get(&e.category_id), area_pos(e.area_rng)) {
            groups[k * a_n + a].push(e);
        }
    }
    for g in &mut groups {
        g.sort_by_key(|e| img_pos.get(&e.image_id).copied().unwrap_or(usize::MAX));
    }
    let dt_area = |id: u64| ev.coco_dt().get_ann(id).and_then(|a| a.area).unwrap_or(0.0);
    let mut precision = vec![-1.0f64; t_n * r_n * k_n * a_n * m_n];
    let mut recall = vec![-1.0f64; t_n * k_n * a_n * m_n];
    for k in 0..k_n {
        for a in 0..a_n {
            let es = &groups[k * a_n + a];
            if es.is_empty() {
                continue;
            }
            let rng = p.area_ranges[a].range;
            for (m, &max_det) in p.max_dets.iter().enumerate() {
                // (score, image order, detection order) of every kept detection
                let mut dets: Vec<(f64, usize, usize)> = Vec::new();
                for (ei, e) in es.iter().enumerate() {
                    for d in 0..e.dt_ids.len().min(max_det) {
                        dets.push((e.dt_scores[d], ei, d));
                    }
                }
                // np.argsort(-scores, kind="mergesort"): stable
                dets.sort_by(|x, y| y.0.partial_cmp(&x.0).unwrap_or(std::cmp::Ordering::Equal));
                let npig: usize = es.iter().map(|e| e.num_gt_in_denominator()).sum();
                if npig == 0 {
                    continue;
                }
                for t in 0..t_n {
                    let (mut tp, mut fp) = (0.0f64, 0.0f64);
                    let mut rc = Vec::with_capacity(dets.len());
                    let mut pr = Vec::with_capacity(dets.len());
                    for &(_, ei, d) in &dets {
                        let e = es[ei];
                        let gt_id = e.dt_matches[(t, d)];
                        let matched = e.dt_matched[(t, d)] && gt_id != 0;
                        let area = dt_area(e.dt_ids[d]);
                        let outside = area < rng[0] || area > rng[1];
                        let ignored = if matched {
                            e.dt_ignore[(t, d)]
                        } else if e.dt_matched[(t, d)] {
                            // matched to annotation 0: the ground truth's ignore flag, then
                            // the area rule for unmatched detections
                            e.dt_ignore[(t, d)] || outside
                        } else {
                            e.dt_ignore[(t, d)]
                        };
                        if !ignored {
                            if matched {
                                tp += 1.0;
                            } else {
                                fp += 1.0;
                            }
                        }
                        rc.push(tp / npig as f64);
                        pr.push(tp / (fp + tp + f64::EPSILON));
                    }
                    let nd = rc.len();
                    recall[((t * k_n + k) * a_n + a) * m_n + m] =
                        if nd > 0 { rc[nd - 1] } else { 0.0 };
                    for i in (1..nd).rev() {
                        if pr[i] > pr[i - 1] {
                            pr[i - 1] = pr[i];
                        }
                    }
                    for (ri, &thr) in p.rec_thrs.iter().enumerate() {
                        // np.searchsorted(rc, thr, side="left")
                        let pi = rc.partition_point(|&v| v < thr);
                        let q = if pi < nd { pr[pi] } else { break };
                        precision[(((t * r_n + ri) * k_n + k) * a_n + a) * m_n + m] = q;
                    }
                    // slots past the last reachable recall stay 0, as pycocotools' zeros
                    for ri in 0..r_n {
                        let idx = (((t * r_n + ri) * k_n + k) * a_n + a) * m_n + m;
                        if precision[idx] < 0.0 {
                            precision[idx] = 0.0;
                        }
                    }
                }
            }
        }
    }
    let area_idx = |label: &str| p.area_ranges.iter().position(|a| a.label == label);
    let m_idx = |md: usize| p.max_dets.iter().position(|&v| v == md);
    let t_idx = |thr: f64| p.iou_thrs.iter().position(|&v| (v - thr).abs() < 1e-12);
    let mean_valid = |v: Vec<f64>| {
        let v: Vec<f64> = v.into_iter().filter(|&x| x > -1.0).collect();
        if v.is_empty() { -1.0 } else { numpy_mean(&v) }
    };
    let max_det = *p.max_dets.last().unwrap_or(&100);
    let ap = |thr: Option<f64>, area: &str, md: usize| -> f64 {
        let (Some(a), Some(m)) = (area_idx(area), m_idx(md)) else {
            return -1.0;
        };
        let ts: Vec<usize> = match thr {
            Some(x) => t_idx(x).into_iter().collect(),
            None => (0..t_n).collect(),
        };
        let mut v = Vec::new();
        for &t in &ts {
            for r in 0..r_n {
                for k in 0..k_n {
                    v.push(precision[(((t * r_n + r) * k_n + k) * a_n + a) * m_n + m]);
                }
            }
        }
        mean_valid(v)
    };
    let ar = |area: &str, md: usize| -> f64 {
        let (Some(a), Some(m)) = (area_idx(area), m_idx(md)) else {
            return -1.0;
        };
        let mut v = Vec::new();
        for t in 0..t_n {
            for k in 0..k_n {
                v.push(recall[((t * k_n + k) * a_n + a) * m_n + m]);
            }
        }
        mean_valid(v)
    };
    let stats = vec![
        ap(None, "all", max_det),
        ap(Some(0.5), "all", max_det),
        ap(Some(0.75), "all", max_det),
        ap(None, "small", max_det),
        ap(None, "medium", max_det),
        ap(None, "large", max_det),
        ar("all", p.max_dets[0]),
        ar("all", p.max_dets.get(1).copied().unwrap_or(max_det)),
        ar("all", max_det),
        ar("small", max_det),
        ar("medium", max_det),
        ar("large", max_det),
    ];
    let (a_all, m_last) = (area_idx("all").unwrap_or(0), m_n.saturating_sub(1));
    let per_category = p
        .cat_ids
        .iter()
        .enumerate()
        .map(|(k, &cat)| {
            let mut v = Vec::new();
            for t in 0..t_n {
                for r in 0..r_n {
                    v.push(precision[(((t * r_n + r) * k_n + k) * a_n + a_all) * m_n + m_last]);
                }
            }
            CategoryAp {
                category_id: cat,
                ap: mean_valid(v),
            }
        })
        .collect();
    CocoReport {
        stats,
        per_category,
    }
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

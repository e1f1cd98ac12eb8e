//! COCO instance evaluation (mask or box AP/AR), computed by hotcoco's port of pycocotools'
//! COCOeval: the 12 standard numbers in `COCOeval.stats` order and per-category AP (mean of
//! precision over IoU thresholds and recall points, area "all", 100 detections).

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

pub fn evaluate_files(gt_path: &Path, dt_path: &Path, iou_type: IouType) -> Result<CocoReport> {
    let gt = load_gt(gt_path)?;
    let dt = load_results(&gt, dt_path, iou_type == IouType::Segm)?;
    let mut ev = COCOeval::new(gt, dt, iou_type);
    ev.evaluate()
        .map_err(|e| anyhow::anyhow!("COCO evaluation of {}: {e}", dt_path.display()))?;
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

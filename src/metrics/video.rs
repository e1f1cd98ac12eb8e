//! Video object segmentation metrics as the DAVIS 2017 evaluation toolkit computes them
//! (semi-supervised protocol): region similarity J (IoU) and boundary accuracy F per object and
//! frame, the first and last frames left out, void pixels (255 in the ground truth) excluded, then
//! mean / recall (fraction of frames > 0.5) / decay (first quarter minus last quarter) per object.

use super::boundary::BinMask;
use crate::data::image_io::LabelMap;
use anyhow::{Result, bail};
use rayon::prelude::*;
use serde::Serialize;

/// DAVIS region similarity of one frame: IoU outside void pixels, 1 when both are empty.
pub fn region_j(gt: &[bool], pred: &[bool], void: &[bool]) -> f64 {
    let (mut inter, mut union) = (0usize, 0usize);
    for ((&g, &p), &v) in gt.iter().zip(pred).zip(void) {
        if v {
            continue;
        }
        inter += (g && p) as usize;
        union += (g || p) as usize;
    }
    if union == 0 {
        1.0
    } else {
        inter as f64 / union as f64
    }
}

/// DAVIS boundary F-measure of one frame, void pixels removed from both masks first.
pub fn boundary_f(gt: &[bool], pred: &[bool], void: &[bool], height: usize, width: usize) -> f64 {
    let g: Vec<bool> = gt.iter().zip(void).map(|(&a, &v)| a && !v).collect();
    let p: Vec<bool> = pred.iter().zip(void).map(|(&a, &v)| a && !v).collect();
    let gm = BinMask {
        data: &g,
        height,
        width,
    };
    let pm = BinMask {
        data: &p,
        height,
        width,
    };
    super::boundary::boundary_f1(&pm, &gm).2
}

/// Mean, recall and decay of per-frame values, as `db_statistics` of the DAVIS toolkit.
pub fn db_statistics(values: &[f64]) -> Stats {
    let finite: Vec<f64> = values.iter().copied().filter(|v| !v.is_nan()).collect();
    let nanmean = |v: &[f64]| {
        let f: Vec<f64> = v.iter().copied().filter(|x| !x.is_nan()).collect();
        if f.is_empty() {
            f64::NAN
        } else {
            f.iter().sum::<f64>() / f.len() as f64
        }
    };
    let mean = nanmean(values);
    let recall = if finite.is_empty() {
        f64::NAN
    } else {
        // NaN > 0.5 is false in numpy, and counts in the denominator.
        values.iter().filter(|&&v| v > 0.5).count() as f64 / values.len() as f64
    };
    let n = values.len();
    let ids: Vec<usize> = (0..5)
        .map(|i| {
            let x = if n == 0 {
                0.0
            } else {
                1.0 + (n as f64 - 1.0) * i as f64 / 4.0
            };
            // numpy: round(x + 1e-10) - 1, then cast to uint8 (which wraps).
            (((x + 1e-10).round() - 1.0) as i64).rem_euclid(256) as usize
        })
        .collect();
    let bin = |i: usize| {
        let (a, b) = (ids[i].min(n), (ids[i + 1] + 1).min(n));
        if a < b {
            nanmean(&values[a..b])
        } else {
            f64::NAN
        }
    };
    Stats {
        mean,
        recall,
        decay: bin(0) - bin(3),
    }
}

#[derive(Clone, Copy, Debug, Serialize, PartialEq)]
pub struct Stats {
    pub mean: f64,
    pub recall: f64,
    pub decay: f64,
}

/// Per-object results of one sequence.
#[derive(Clone, Debug)]
pub struct ObjectResult {
    pub sequence: String,
    pub object: u32,
    pub j: Stats,
    pub f: Stats,
    pub j_frames: Vec<f64>,
    pub f_frames: Vec<f64>,
}

/// How ground-truth values become objects.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum GtEncoding {
    /// Palette / index masks: value k > 0 is object k, 255 is void (DAVIS 2017).
    Indexed,
    /// {0, 255} masks of one object (DAVIS 2016): 255 is object 1, nothing is void.
    Binary,
}

/// Evaluates one sequence. `gt` and `pred` hold every annotated frame, in order; the first and
/// last frames are left out as the toolkit does. Objects are 1..=max id of the first GT frame.
pub fn evaluate_sequence(
    name: &str,
    gt: &[LabelMap],
    pred: &[LabelMap],
    enc: GtEncoding,
) -> Result<Vec<ObjectResult>> {
    if gt.len() < 3 {
        bail!(
            "sequence {name}: {} annotated frame(s); DAVIS evaluation needs at least 3 (first and last are left out)",
            gt.len()
        );
    }
    if pred.len() != gt.len() {
        bail!(
            "sequence {name}: {} predicted frames for {} annotated frames",
            pred.len(),
            gt.len()
        );
    }
    let map_gt = |v: u32| -> (u32, bool) {
        match enc {
            GtEncoding::Binary => ((v == 255 || v == 1) as u32, false),
            GtEncoding::Indexed => {
                if v == 255 {
                    (0, true)
                } else {
                    (v, false)
                }
            }
        }
    };
    let n_obj = gt[0].data.iter().map(|&v| map_gt(v).0).max().unwrap_or(0);
    let frames = &gt[1..gt.len() - 1];
    let preds = &pred[1..pred.len() - 1];
    let pred_max = preds
        .iter()
        .flat_map(|p| p.data.iter().copied())
        .max()
        .unwrap_or(0);
    let pred_max = if enc == GtEncoding::Binary && pred_max == 255 {
        1
    } else {
        pred_max
    };
    if pred_max > n_obj {
        bail!(
            "sequence {name}: predictions hold object id {pred_max} but the first ground-truth frame has {n_obj} object(s)"
        );
    }
    let per_frame: Vec<(Vec<f64>, Vec<f64>)> = frames
        .par_iter()
        .zip(preds)
        .map(|(g, p)| {
            let (h, w) = (g.height, g.width);
            let gv: Vec<(u32, bool)> = g.data.iter().map(|&v| map_gt(v)).collect();
            let void: Vec<bool> = gv.iter().map(|x| x.1).collect();
            let pv: Vec<u32> = p
                .data
                .iter()
                .map(|&v| {
                    if enc == GtEncoding::Binary && v == 255 {
                        1
                    } else {
                        v
                    }
                })
                .collect();
            let mut js = Vec::new();
            let mut fs = Vec::new();
            for k in 1..=n_obj {
                let gm: Vec<bool> = gv.iter().map(|x| x.0 == k).collect();
                let pm: Vec<bool> = pv.iter().map(|&v| v == k).collect();
                js.push(region_j(&gm, &pm, &void));
                fs.push(boundary_f(&gm, &pm, &void, h, w));
            }
            (js, fs)
        })
        .collect();
    Ok((1..=n_obj)
        .map(|k| {
            let j_frames: Vec<f64> = per_frame.iter().map(|(j, _)| j[k as usize - 1]).collect();
            let f_frames: Vec<f64> = per_frame.iter().map(|(_, f)| f[k as usize - 1]).collect();
            ObjectResult {
                sequence: name.to_string(),
                object: k,
                j: db_statistics(&j_frames),
                f: db_statistics(&f_frames),
                j_frames,
                f_frames,
            }
        })
        .collect())
}

#[derive(Clone, Debug, Serialize)]
pub struct SequenceSummary {
    #[serde(rename = "J")]
    pub j: f64,
    #[serde(rename = "F")]
    pub f: f64,
}

/// The numbers `segrs eval video --json` writes.
#[derive(Clone, Debug, Serialize)]
pub struct VideoReport {
    #[serde(rename = "J&F")]
    pub jf: f64,
    #[serde(rename = "J")]
    pub j: Stats,
    #[serde(rename = "F")]
    pub f: Stats,
    pub per_sequence: std::collections::BTreeMap<String, SequenceSummary>,
}

/// Averages over all objects of all sequences, as the toolkit's global table.
pub fn summarize(objects: &[ObjectResult]) -> VideoReport {
    let avg = |g: &dyn Fn(&ObjectResult) -> f64| {
        objects.iter().map(g).sum::<f64>() / objects.len().max(1) as f64
    };
    let j = Stats {
        mean: avg(&|o| o.j.mean),
        recall: avg(&|o| o.j.recall),
        decay: avg(&|o| o.j.decay),
    };
    let f = Stats {
        mean: avg(&|o| o.f.mean),
        recall: avg(&|o| o.f.recall),
        decay: avg(&|o| o.f.decay),
    };
    let mut per_sequence = std::collections::BTreeMap::new();
    let mut names: Vec<&String> = objects.iter().map(|o| &o.sequence).collect();
    names.dedup();
    for n in names {
        let objs: Vec<&ObjectResult> = objects.iter().filter(|o| &o.sequence == n).collect();
        let m = |g: &dyn Fn(&ObjectResult) -> f64| {
            objs.iter().map(|o| g(o)).sum::<f64>() / objs.len() as f64
        };
        per_sequence.insert(
            n.clone(),
            SequenceSummary {
                j: m(&|o| o.j.mean),
                f: m(&|o| o.f.mean),
            },
        );
    }
    VideoReport {
        jf: (j.mean + f.mean) / 2.0,
        j,
        f,
        per_sequence,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn statistics_follow_the_toolkit() {
        let v: Vec<f64> = (0..10).map(|i| 1.0 - i as f64 * 0.1).collect();
        let s = db_statistics(&v);
        assert!((s.mean - 0.55).abs() < 1e-12);
        assert!((s.recall - 0.5).abs() < 1e-12);
        // ids = round(linspace(1, 10, 5)) - 1 = [0, 2, 5, 7, 9]: bins [0..=2] and [7..=9]
        assert!((s.decay - (0.9 - 0.2)).abs() < 1e-12, "{}", s.decay);
    }
}

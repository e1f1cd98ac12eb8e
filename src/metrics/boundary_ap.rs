//! Boundary AP (Cheng et al. 2021): COCO AP where the IoU of a detection and a ground-truth
//! object is `min(mask IoU, boundary IoU)`, the boundary being the inner band of width
//! `round(0.02 * image diagonal)` (at least 1). hotcoco has no hook for a custom IoU, so this file
//! carries pycocotools' `evaluateImg` / `accumulate` / `summarize` logic, step for step, with that
//! IoU; it is checked against pycocotools with the boundary_iou_api IoU in the tests. A match to
//! a ground-truth annotation with id 0 counts as a match (pycocotools takes id 0 for
//! "unmatched"; [`Params::pycocotools_ids`] reproduces that).

use super::boundary::{BinMask, boundary_iou_width, inner_boundary};
use super::coco::{CategoryAp, CocoReport};
use crate::formats::coco::{load_gt, load_results};
use anyhow::{Result, anyhow};
use hotcoco::{Annotation, COCO, Rle, mask};
use rayon::prelude::*;
use std::collections::HashMap;
use std::path::Path;

pub const DILATION_RATIO: f64 = 0.02;
const MAX_DETS: [usize; 3] = [1, 10, 100];
const AREAS: [[f64; 2]; 4] = [[0.0, 1e10], [0.0, 1024.0], [1024.0, 9216.0], [9216.0, 1e10]];

/// numpy.linspace(start, stop, num) to the last bit.
fn linspace(start: f64, stop: f64, num: usize) -> Vec<f64> {
    let step = (stop - start) / (num - 1) as f64;
    let mut v: Vec<f64> = (0..num).map(|i| i as f64 * step + start).collect();
    v[num - 1] = stop;
    v
}

/// The inner-band boundary of an RLE mask, as an RLE (computed on the column-major layout, which
/// is the transposed image; the square erosion does not care).
fn boundary_rle(rle: &Rle) -> Result<Rle> {
    let (h, w) = (rle.h as usize, rle.w as usize);
    let cm: Vec<bool> = mask::decode(rle).into_iter().map(|v| v != 0).collect();
    let d = boundary_iou_width(h, w, DILATION_RATIO);
    let band = inner_boundary(
        &BinMask {
            data: &cm,
            height: w,
            width: h,
        },
        d,
    );
    let bytes: Vec<u8> = band.into_iter().map(|b| b as u8).collect();
    mask::encode(&bytes, rle.h, rle.w).map_err(|e| anyhow!("boundary RLE: {e}"))
}

struct Obj<'a> {
    ann: &'a Annotation,
    rle: Rle,
    boundary: Rle,
    area: f64,
}

fn objects<'a>(coco: &'a COCO, anns: &[&'a Annotation]) -> Result<Vec<Obj<'a>>> {
    anns.par_iter()
        .map(|a| {
            let rle = coco.ann_to_rle(a).ok_or_else(|| {
                anyhow!(
                    "annotation {} (image {}): cannot rasterise its segmentation",
                    a.id,
                    a.image_id
                )
            })?;
            let area = a.area.unwrap_or_else(|| mask::area(&rle) as f64);
            let boundary = boundary_rle(&rle)?;
            Ok(Obj {
                ann: a,
                rle,
                boundary,
                area,
            })
        })
        .collect()
}

/// Ground truth and detections of one (image, category), and the detections' IoU with every
/// ground-truth object.
type Group<'a> = (Objs<'a>, Objs<'a>, Vec<Vec<f64>>);
type Objs<'a> = Vec<&'a Obj<'a>>;

/// One precision-recall curve of `accumulate`: (m * T + t, the interpolated precision at the
/// recall thresholds, the final recall).
type Curve = (usize, Vec<f64>, f64);

/// Per (image, category, area range): what `evaluateImg` returns (the detections sorted by
/// score, at most 100).
pub struct MatchedImage {
    pub dt_scores: Vec<f64>,
    /// [T][D] matched (and not ignored) flags.
    pub dt_matched: Vec<Vec<bool>>,
    pub dt_ignore: Vec<Vec<bool>>,
    pub gt_ignore: Vec<bool>,
}

#[allow(clippy::needless_range_loop)]
fn evaluate_img(
    gts: &[&Obj],
    dts: &[&Obj],
    ious: &[Vec<f64>],
    a_rng: [f64; 2],
    max_det: usize,
    thrs: &[f64],
    pycocotools_ids: bool,
) -> Option<MatchedImage> {
    if gts.is_empty() && dts.is_empty() {
        return None;
    }
    let g_ignore_raw: Vec<bool> = gts
        .iter()
        .map(|g| g.ann.iscrowd || g.area < a_rng[0] || g.area > a_rng[1])
        .collect();
    // Non-ignored ground truth first (stable).
    let mut gtind: Vec<usize> = (0..gts.len()).collect();
    gtind.sort_by_key(|&i| g_ignore_raw[i]);
    let gt_ignore: Vec<bool> = gtind.iter().map(|&i| g_ignore_raw[i]).collect();
    let iscrowd: Vec<bool> = gtind.iter().map(|&i| gts[i].ann.iscrowd).collect();
    let nd = dts.len().min(max_det);
    let (t_n, g_n) = (thrs.len(), gts.len());
    let mut gtm = vec![vec![0u64; g_n]; t_n];
    let mut dtm = vec![vec![0u64; nd]; t_n];
    let mut hit = vec![vec![false; nd]; t_n];
    let mut dt_ig = vec![vec![false; nd]; t_n];
    if !ious.is_empty() && g_n > 0 {
        for (ti, &t) in thrs.iter().enumerate() {
            for di in 0..nd {
                let mut iou = t.min(1.0 - 1e-10);
                let mut m: isize = -1;
                for gi in 0..g_n {
                    if gtm[ti][gi] > 0 && !iscrowd[gi] {
                        continue;
                    }
                    if m > -1 && !gt_ignore[m as usize] && gt_ignore[gi] {
                        break;
                    }
                    let v = ious[di][gtind[gi]];
                    if v < iou {
                        continue;
                    }
                    iou = v;
                    m = gi as isize;
                }
                if m == -1 {
                    continue;
                }
                let m = m as usize;
                dt_ig[ti][di] = gt_ignore[m];
                dtm[ti][di] = gts[gtind[m]].ann.id;
                hit[ti][di] = !pycocotools_ids || dtm[ti][di] != 0;
                gtm[ti][m] = dts[di].ann.id.max(1);
            }
        }
    }
    let out_of_range: Vec<bool> = dts[..nd]
        .iter()
        .map(|d| d.area < a_rng[0] || d.area > a_rng[1])
        .collect();
    for ti in 0..t_n {
        for di in 0..nd {
            dt_ig[ti][di] = dt_ig[ti][di] || (!hit[ti][di] && out_of_range[di]);
        }
    }
    Some(MatchedImage {
        dt_scores: dts[..nd]
            .iter()
            .map(|d| d.ann.score.unwrap_or(0.0))
            .collect(),
        dt_matched: hit,
        dt_ignore: dt_ig,
        gt_ignore,
    })
}

/// Boundary AP from files: the 12 COCO numbers and per-category AP, as `eval coco` reports them.
pub fn evaluate_files(gt_path: &Path, dt_path: &Path) -> Result<CocoReport> {
    Ok(evaluate_files_both(gt_path, dt_path)?.report)
}

/// The correct report and, when an annotation has id 0, pycocotools' reading of it.
pub fn evaluate_files_both(gt_path: &Path, dt_path: &Path) -> Result<super::coco::Evaluation> {
    let gt = load_gt(gt_path)?;
    let dt = load_results(&gt, dt_path, true)?;
    let report = evaluate(&gt, &dt)?;
    let pycocotools = if gt.dataset.annotations.iter().any(|a| a.id == 0) {
        let mut p = Params::new(&gt);
        p.pycocotools_ids = true;
        let evals = evaluate_images(&gt, &dt, true, &p)?;
        Some(summarize(&accumulate(&evals, &p), &p))
    } else {
        None
    };
    Ok(super::coco::Evaluation {
        report,
        pycocotools,
    })
}

/// pycocotools' `accumulate` and `summarize` over per-image matches grouped by (category,
/// area range) as `evals[k * 4 + a]` (images in id order), with COCO's area ranges and
/// detection limits.
pub fn accumulate_and_summarize(
    evals: &[Vec<MatchedImage>],
    img_ids: Vec<u64>,
    cat_ids: Vec<u64>,
) -> CocoReport {
    let p = Params {
        img_ids,
        cat_ids,
        ..Params::default_thresholds()
    };
    summarize(&accumulate(evals, &p), &p)
}

pub fn evaluate(gt: &COCO, dt: &COCO) -> Result<CocoReport> {
    evaluate_with(gt, dt, true)
}

/// The evaluation with `min(mask IoU, boundary IoU)` (`boundary`), or plain mask IoU, which must
/// equal pycocotools' segm evaluation (a check of this file's COCOeval logic). The stages are
/// COCOeval's: `evaluate_images` (`evaluate`), `accumulate`, `summarize`.
pub fn evaluate_with(gt: &COCO, dt: &COCO, boundary: bool) -> Result<CocoReport> {
    let p = Params::new(gt);
    let evals = evaluate_images(gt, dt, boundary, &p)?;
    let acc = accumulate(&evals, &p);
    Ok(summarize(&acc, &p))
}

/// COCOeval's `Params` for segmentation: sorted image and category ids, IoU thresholds
/// .50:.05:.95 and 101 recall thresholds (area ranges and detection limits are the constants
/// [`AREAS`] and [`MAX_DETS`]).
struct Params {
    img_ids: Vec<u64>,
    cat_ids: Vec<u64>,
    iou_thrs: Vec<f64>,
    rec_thrs: Vec<f64>,
    /// Read a match to ground-truth id 0 as "unmatched", as pycocotools does.
    pycocotools_ids: bool,
}

impl Params {
    fn new(gt: &COCO) -> Self {
        let mut img_ids: Vec<u64> = gt.dataset.images.iter().map(|i| i.id).collect();
        img_ids.sort_unstable();
        img_ids.dedup();
        let mut cat_ids: Vec<u64> = gt.dataset.categories.iter().map(|c| c.id).collect();
        cat_ids.sort_unstable();
        cat_ids.dedup();
        Self {
            img_ids,
            cat_ids,
            ..Self::default_thresholds()
        }
    }

    /// No images or categories yet; COCO's thresholds.
    fn default_thresholds() -> Self {
        Self {
            img_ids: Vec::new(),
            cat_ids: Vec::new(),
            iou_thrs: linspace(0.5, 0.95, 10),
            rec_thrs: linspace(0.0, 1.0, 101),
            pycocotools_ids: false,
        }
    }
}

/// The IoU of every detection (rows) with every ground-truth object (columns):
/// `min(mask IoU, boundary IoU)`, or the mask IoU alone without `boundary`.
fn compute_iou(g: &[&Obj], d: &[&Obj], boundary: bool) -> Vec<Vec<f64>> {
    if g.is_empty() || d.is_empty() {
        return Vec::new();
    }
    let crowd: Vec<bool> = g.iter().map(|o| o.ann.iscrowd).collect();
    let dm: Vec<Rle> = d.iter().map(|o| o.rle.clone()).collect();
    let gm: Vec<Rle> = g.iter().map(|o| o.rle.clone()).collect();
    let db: Vec<Rle> = d.iter().map(|o| o.boundary.clone()).collect();
    let gb: Vec<Rle> = g.iter().map(|o| o.boundary.clone()).collect();
    let mi = mask::iou(&dm, &gm, &crowd);
    let bi = if boundary {
        mask::iou(&db, &gb, &crowd)
    } else {
        mask::iou(&dm, &gm, &crowd)
    };
    mi.iter()
        .zip(&bi)
        .map(|(a, b)| a.iter().zip(b).map(|(x, y)| x.min(*y)).collect())
        .collect()
}

/// COCOeval's `evaluate`: ground truth and detections grouped per (image, category), detections
/// sorted by score and cut to the largest limit, their IoUs, then `evaluateImg` for every
/// (category, area range, image). Entry `k * AREAS.len() + a` holds category `k` and area
/// range `a`, over the images in order (the empty ones left out).
fn evaluate_images(
    gt: &COCO,
    dt: &COCO,
    boundary: bool,
    p: &Params,
) -> Result<Vec<Vec<MatchedImage>>> {
    let gt_objs = objects(gt, &gt.dataset.annotations.iter().collect::<Vec<_>>())?;
    let dt_objs = objects(dt, &dt.dataset.annotations.iter().collect::<Vec<_>>())?;
    let mut by_key: HashMap<(u64, u64), (Objs, Objs)> = HashMap::new();
    for o in &gt_objs {
        by_key
            .entry((o.ann.image_id, o.ann.category_id))
            .or_default()
            .0
            .push(o);
    }
    for o in &dt_objs {
        by_key
            .entry((o.ann.image_id, o.ann.category_id))
            .or_default()
            .1
            .push(o);
    }
    // Detections by descending score (stable), at most 100, and their IoU with every GT.
    let keys: Vec<(u64, u64)> = by_key.keys().copied().collect();
    let prepared: HashMap<(u64, u64), Group> = keys
        .par_iter()
        .map(|k| {
            let (g, d) = &by_key[k];
            let mut d = d.clone();
            d.sort_by(|a, b| {
                b.ann
                    .score
                    .unwrap_or(0.0)
                    .partial_cmp(&a.ann.score.unwrap_or(0.0))
                    .unwrap_or(std::cmp::Ordering::Equal)
            });
            d.truncate(MAX_DETS[2]);
            let ious = compute_iou(g, &d, boundary);
            (*k, (g.clone(), d, ious))
        })
        .collect();
    let a_n = AREAS.len();
    let empty: Group = (Vec::new(), Vec::new(), Vec::new());
    Ok((0..p.cat_ids.len() * a_n)
        .into_par_iter()
        .map(|i| {
            let (cat, a) = (p.cat_ids[i / a_n], i % a_n);
            p.img_ids
                .iter()
                .filter_map(|&img| {
                    let (g, d, ious) = prepared.get(&(img, cat)).unwrap_or(&empty);
                    evaluate_img(
                        g,
                        d,
                        ious,
                        AREAS[a],
                        MAX_DETS[2],
                        &p.iou_thrs,
                        p.pycocotools_ids,
                    )
                })
                .collect()
        })
        .collect())
}

/// COCOeval's `eval` arrays: precision [T][R][K][A][M] and recall [T][K][A][M], -1 where a
/// category has no ground truth in an area range.
struct Accumulated {
    precision: Vec<f64>,
    recall: Vec<f64>,
    /// (T, R, K, A, M)
    dims: (usize, usize, usize, usize, usize),
}

impl Accumulated {
    fn pidx(&self, t: usize, r: usize, k: usize, a: usize, m: usize) -> usize {
        let (_, r_n, k_n, a_n, m_n) = self.dims;
        (((t * r_n + r) * k_n + k) * a_n + a) * m_n + m
    }

    fn ridx(&self, t: usize, k: usize, a: usize, m: usize) -> usize {
        let (_, _, k_n, a_n, m_n) = self.dims;
        ((t * k_n + k) * a_n + a) * m_n + m
    }
}

/// COCOeval's `accumulate`: per (category, area range, detection limit, IoU threshold), the
/// interpolated precision at the recall thresholds and the final recall.
fn accumulate(evals: &[Vec<MatchedImage>], p: &Params) -> Accumulated {
    let (t_n, r_n, k_n, a_n, m_n) = (
        p.iou_thrs.len(),
        p.rec_thrs.len(),
        p.cat_ids.len(),
        AREAS.len(),
        MAX_DETS.len(),
    );
    let mut acc = Accumulated {
        precision: vec![-1.0f64; t_n * r_n * k_n * a_n * m_n],
        recall: vec![-1.0f64; t_n * k_n * a_n * m_n],
        dims: (t_n, r_n, k_n, a_n, m_n),
    };
    let results: Vec<(usize, usize, Vec<Curve>)> = evals
        .par_iter()
        .enumerate()
        .map(|(i, evals)| {
            let (k, a) = (i / a_n, i % a_n);
            let mut per_m = Vec::new();
            for (m, &max_det) in MAX_DETS.iter().enumerate() {
                let mut scores = Vec::new();
                let mut src = Vec::new(); // (eval index, detection index)
                for (e_i, e) in evals.iter().enumerate() {
                    for di in 0..e.dt_scores.len().min(max_det) {
                        scores.push(e.dt_scores[di]);
                        src.push((e_i, di));
                    }
                }
                // np.argsort(-scores, kind="mergesort"): stable descending.
                let mut order: Vec<usize> = (0..scores.len()).collect();
                order.sort_by(|&i, &j| {
                    scores[j]
                        .partial_cmp(&scores[i])
                        .unwrap_or(std::cmp::Ordering::Equal)
                });
                let npig = evals
                    .iter()
                    .flat_map(|e| e.gt_ignore.iter())
                    .filter(|&&ig| !ig)
                    .count();
                if npig == 0 {
                    continue;
                }
                for t in 0..t_n {
                    let (mut tp, mut fp) = (0.0f64, 0.0f64);
                    let mut rc = Vec::with_capacity(order.len());
                    let mut pr = Vec::with_capacity(order.len());
                    for &o in &order {
                        let (e_i, di) = src[o];
                        let e = &evals[e_i];
                        if e.dt_ignore[t][di] {
                            // neither a true nor a false positive
                        } else if e.dt_matched[t][di] {
                            tp += 1.0;
                        } else {
                            fp += 1.0;
                        }
                        rc.push(tp / npig as f64);
                        pr.push(tp / (fp + tp + f64::EPSILON));
                    }
                    let nd = rc.len();
                    let rec = if nd > 0 { rc[nd - 1] } else { 0.0 };
                    for i in (1..nd).rev() {
                        if pr[i] > pr[i - 1] {
                            pr[i - 1] = pr[i];
                        }
                    }
                    let mut q = vec![0.0f64; r_n];
                    for (ri, &rt) in p.rec_thrs.iter().enumerate() {
                        // searchsorted(rc, rt, side="left")
                        let pi = rc.partition_point(|&v| v < rt);
                        if pi >= nd {
                            break;
                        }
                        q[ri] = pr[pi];
                    }
                    per_m.push((m * t_n + t, q, rec));
                }
            }
            (k, a, per_m)
        })
        .collect();
    for (k, a, per_m) in results {
        for (mt, q, rec) in per_m {
            let (m, t) = (mt / t_n, mt % t_n);
            for (r, v) in q.iter().enumerate() {
                let i = acc.pidx(t, r, k, a, m);
                acc.precision[i] = *v;
            }
            let i = acc.ridx(t, k, a, m);
            acc.recall[i] = rec;
        }
    }
    acc
}

/// COCOeval's `summarize`: the 12 standard numbers (AP at .50:.95, .50, .75, small, medium,
/// large; AR at 1, 10, 100 detections, small, medium, large) and per-category AP.
fn summarize(acc: &Accumulated, p: &Params) -> CocoReport {
    let (t_n, r_n, k_n, _, _) = acc.dims;
    let mean_of = |v: Vec<f64>| {
        let v: Vec<f64> = v.into_iter().filter(|&x| x > -1.0).collect();
        if v.is_empty() {
            -1.0
        } else {
            super::coco::numpy_mean(&v)
        }
    };
    let ap = |thr: Option<f64>, a: usize, m: usize| {
        let ts: Vec<usize> = (0..t_n)
            .filter(|&t| thr.is_none_or(|x| (p.iou_thrs[t] - x).abs() < 1e-12))
            .collect();
        let mut v = Vec::new();
        for &t in &ts {
            for r in 0..r_n {
                for k in 0..k_n {
                    v.push(acc.precision[acc.pidx(t, r, k, a, m)]);
                }
            }
        }
        mean_of(v)
    };
    let ar = |a: usize, m: usize| {
        let mut v = Vec::new();
        for t in 0..t_n {
            for k in 0..k_n {
                v.push(acc.recall[acc.ridx(t, k, a, m)]);
            }
        }
        mean_of(v)
    };
    let stats = vec![
        ap(None, 0, 2),
        ap(Some(0.5), 0, 2),
        ap(Some(0.75), 0, 2),
        ap(None, 1, 2),
        ap(None, 2, 2),
        ap(None, 3, 2),
        ar(0, 0),
        ar(0, 1),
        ar(0, 2),
        ar(1, 2),
        ar(2, 2),
        ar(3, 2),
    ];
    let per_category = (0..k_n)
        .map(|k| {
            let mut v = Vec::new();
            for t in 0..t_n {
                for r in 0..r_n {
                    v.push(acc.precision[acc.pidx(t, r, k, 0, 2)]);
                }
            }
            CategoryAp {
                category_id: p.cat_ids[k],
                ap: mean_of(v),
            }
        })
        .collect();
    CocoReport {
        curves: None,
        stats,
        per_category,
    }
}

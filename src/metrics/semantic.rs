//! Semantic-segmentation evaluation over a dataset: one confusion matrix for region metrics,
//! per-image boundary metrics averaged per class over the images where the class appears.

use super::boundary::{BinMask, boundary_f1, boundary_iou};
use super::confusion::{ConfusionMatrix, OutOfRange, nan_mean};
use crate::data::folder::{StemFilter, list_images};
use crate::data::image_io::read_mask;
use crate::data::labels::LabelConvention;
use anyhow::{Result, bail};
use rayon::prelude::*;
use serde::Serialize;
use std::path::{Path, PathBuf};

/// Boundary IoU dilation ratio of Cheng et al. 2021.
pub const BOUNDARY_IOU_RATIO: f64 = 0.02;

/// Per-image statistics, merged into a [`SemanticReport`].
#[derive(Clone, Debug)]
pub struct ImageStats {
    pub confusion: ConfusionMatrix,
    /// Per class: `Some((boundary_f1, boundary_iou))` when the class appears in GT or prediction.
    pub boundary: Vec<Option<(f64, f64)>>,
    pub out_of_range: OutOfRange,
}

/// Computes the statistics of one (prediction, ground truth) pair of label maps.
pub fn image_stats(
    pred: &[u32],
    gt: &[u32],
    height: usize,
    width: usize,
    num_classes: usize,
    ignore_index: Option<u32>,
) -> ImageStats {
    let mut confusion = ConfusionMatrix::new(num_classes);
    let out_of_range = confusion.add(pred, gt, ignore_index);
    let valid: Vec<bool> = gt.iter().map(|&g| Some(g) != ignore_index).collect();
    let boundary = (0..num_classes as u32)
        .map(|c| {
            // Ignored pixels belong to neither mask.
            let pm: Vec<bool> = pred
                .iter()
                .zip(&valid)
                .map(|(&p, &v)| v && p == c)
                .collect();
            let gm: Vec<bool> = gt.iter().map(|&g| g == c).collect();
            if !pm.iter().any(|&v| v) && !gm.iter().any(|&v| v) {
                return None;
            }
            let pmask = BinMask {
                data: &pm,
                height,
                width,
            };
            let gmask = BinMask {
                data: &gm,
                height,
                width,
            };
            let f = boundary_f1(&pmask, &gmask).2;
            let biou = boundary_iou(&pmask, &gmask, BOUNDARY_IOU_RATIO);
            Some((f, biou))
        })
        .collect();
    ImageStats {
        confusion,
        boundary,
        out_of_range,
    }
}

#[derive(Clone, Debug, Serialize, PartialEq)]
pub struct ClassMetrics {
    pub class: usize,
    /// The class's name, when names were given.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    pub iou: Option<f64>,
    pub accuracy: Option<f64>,
    pub dice: Option<f64>,
    pub boundary_f1: Option<f64>,
    pub boundary_iou: Option<f64>,
}

/// The numbers `segrs eval semantic --json` writes (NaN becomes null).
#[derive(Clone, Debug, Serialize, PartialEq)]
pub struct SemanticReport {
    pub pixel_accuracy: Option<f64>,
    pub mean_accuracy: Option<f64>,
    pub miou: Option<f64>,
    pub fwiou: Option<f64>,
    pub mean_dice: Option<f64>,
    pub boundary_f1: Option<f64>,
    pub boundary_iou: Option<f64>,
    pub per_class: Vec<ClassMetrics>,
    #[serde(skip)]
    pub confusion: Vec<u64>,
    /// Segment scores (adapted Rand error, variation of information), when asked for.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub segments: Option<super::segments::SegmentSummary>,
}

fn opt(v: f64) -> Option<f64> {
    if v.is_nan() { None } else { Some(v) }
}

/// Accumulates images (in any order) and produces the report.
#[derive(Clone, Debug)]
pub struct SemanticAccumulator {
    pub num_classes: usize,
    pub confusion: ConfusionMatrix,
    bf_sum: Vec<(f64, usize)>,
    biou_sum: Vec<(f64, usize)>,
    pub out_of_range: OutOfRange,
}

impl SemanticAccumulator {
    pub fn new(num_classes: usize) -> Self {
        Self {
            num_classes,
            confusion: ConfusionMatrix::new(num_classes),
            bf_sum: vec![(0.0, 0); num_classes],
            biou_sum: vec![(0.0, 0); num_classes],
            out_of_range: OutOfRange::default(),
        }
    }

    pub fn add(&mut self, s: &ImageStats) {
        self.confusion.merge(&s.confusion);
        self.out_of_range.gt += s.out_of_range.gt;
        self.out_of_range.pred += s.out_of_range.pred;
        for (c, b) in s.boundary.iter().enumerate() {
            if let Some((f, iou)) = b {
                self.bf_sum[c].0 += f;
                self.bf_sum[c].1 += 1;
                if !iou.is_nan() {
                    self.biou_sum[c].0 += iou;
                    self.biou_sum[c].1 += 1;
                }
            }
        }
    }

    pub fn merge(mut self, other: Self) -> Self {
        self.confusion.merge(&other.confusion);
        self.out_of_range.gt += other.out_of_range.gt;
        self.out_of_range.pred += other.out_of_range.pred;
        for c in 0..self.num_classes {
            self.bf_sum[c].0 += other.bf_sum[c].0;
            self.bf_sum[c].1 += other.bf_sum[c].1;
            self.biou_sum[c].0 += other.biou_sum[c].0;
            self.biou_sum[c].1 += other.biou_sum[c].1;
        }
        self
    }

    pub fn report(&self) -> SemanticReport {
        let cm = &self.confusion;
        let mean = |(s, n): (f64, usize)| if n == 0 { f64::NAN } else { s / n as f64 };
        let per_class: Vec<ClassMetrics> = (0..self.num_classes)
            .map(|c| {
                let present = !cm.iou(c).is_nan() || self.bf_sum[c].1 > 0;
                ClassMetrics {
                    class: c,
                    name: None,
                    iou: opt(cm.iou(c)),
                    accuracy: if present {
                        opt(cm.class_accuracy(c))
                    } else {
                        None
                    },
                    dice: opt(cm.dice(c)),
                    boundary_f1: opt(mean(self.bf_sum[c])),
                    boundary_iou: opt(mean(self.biou_sum[c])),
                }
            })
            .collect();
        SemanticReport {
            segments: None,
            pixel_accuracy: opt(cm.pixel_accuracy()),
            mean_accuracy: opt(cm.mean_accuracy()),
            miou: opt(cm.miou()),
            fwiou: opt(cm.fwiou()),
            mean_dice: opt(cm.mean_dice()),
            boundary_f1: opt(nan_mean(self.bf_sum.iter().map(|&s| mean(s)))),
            boundary_iou: opt(nan_mean(self.biou_sum.iter().map(|&s| mean(s)))),
            per_class,
            confusion: cm.counts.clone(),
        }
    }
}

/// One image of label maps for [`evaluate`].
pub struct LabelPair {
    pub pred: Vec<u32>,
    pub gt: Vec<u32>,
    pub height: usize,
    pub width: usize,
}

/// Evaluates many pairs in parallel.
pub fn evaluate(
    pairs: &[LabelPair],
    num_classes: usize,
    ignore_index: Option<u32>,
) -> SemanticAccumulator {
    pairs
        .par_iter()
        .map(|p| {
            let mut acc = SemanticAccumulator::new(num_classes);
            acc.add(&image_stats(
                &p.pred,
                &p.gt,
                p.height,
                p.width,
                num_classes,
                ignore_index,
            ));
            acc
        })
        .reduce(
            || SemanticAccumulator::new(num_classes),
            SemanticAccumulator::merge,
        )
}

impl SemanticReport {
    /// Names the classes (in the table and the JSON); fails when the counts differ.
    pub fn name_classes(&mut self, names: &[String]) -> Result<()> {
        if names.len() != self.per_class.len() {
            bail!(
                "{} class names for {} classes",
                names.len(),
                self.per_class.len()
            );
        }
        for (c, n) in self.per_class.iter_mut().zip(names) {
            c.name = Some(n.clone());
        }
        Ok(())
    }

    /// A readable table for the terminal.
    pub fn table(&self, class_names: Option<&[String]>) -> String {
        let f = |v: Option<f64>| {
            v.map(|x| format!("{:>8.4}", x))
                .unwrap_or_else(|| format!("{:>8}", "-"))
        };
        let mut s = String::new();
        s.push_str(&format!(
            "{:<14}{:>8}{:>8}{:>8}{:>8}{:>8}\n",
            "class", "IoU", "Acc", "Dice", "BF1", "BIoU"
        ));
        for c in &self.per_class {
            let name = class_names
                .and_then(|n| n.get(c.class).cloned())
                .or_else(|| c.name.clone())
                .unwrap_or_else(|| c.class.to_string());
            s.push_str(&format!(
                "{:<14}{}{}{}{}{}\n",
                name,
                f(c.iou),
                f(c.accuracy),
                f(c.dice),
                f(c.boundary_f1),
                f(c.boundary_iou)
            ));
        }
        s.push_str(&format!(
            "\npixel accuracy {}\nmean accuracy  {}\nmIoU           {}\nfwIoU          {}\nmean Dice      {}\nBoundary F1    {}\nBoundary IoU   {}\n",
            f(self.pixel_accuracy),
            f(self.mean_accuracy),
            f(self.miou),
            f(self.fwiou),
            f(self.mean_dice),
            f(self.boundary_f1),
            f(self.boundary_iou)
        ));
        s
    }
}

/// Loads the (prediction, ground truth) pairs of two label-map folders: every prediction needs a
/// ground truth of the same stem.
pub fn load_pairs(
    pred_dir: &Path,
    gt_dir: &Path,
    labels: &LabelConvention,
    stems: Option<&StemFilter>,
) -> Result<(Vec<String>, Vec<LabelPair>, usize)> {
    let preds = list_images(pred_dir)?;
    let gts = list_images(gt_dir)?;
    let gt_of: std::collections::HashMap<&str, &PathBuf> =
        gts.iter().map(|(s, p)| (s.as_str(), p)).collect();
    let mut jobs = Vec::new();
    let mut missing = Vec::new();
    for (stem, p) in &preds {
        if stems.is_some_and(|f| !f.matches(stem)) {
            continue;
        }
        match gt_of.get(stem.as_str()) {
            Some(g) => jobs.push((stem.clone(), p.clone(), (*g).clone())),
            None => missing.push(p.display().to_string()),
        }
    }
    if !missing.is_empty() {
        bail!(
            "{} prediction(s) have no ground truth in {}:\n  {}",
            missing.len(),
            gt_dir.display(),
            missing.join("\n  ")
        );
    }
    if jobs.is_empty() {
        bail!("{}: no predictions to evaluate", pred_dir.display());
    }
    let unmatched_gt = gts
        .iter()
        .filter(|(s, _)| stems.is_none_or(|f| f.matches(s)))
        .count()
        - jobs.len();
    let loaded: Vec<Result<LabelPair>> = jobs
        .par_iter()
        .map(|(_, p, g)| {
            let pred = read_mask(p)?;
            let mut gt = read_mask(g)?;
            labels.apply(g, &mut gt)?;
            if (pred.width, pred.height) != (gt.width, gt.height) {
                bail!(
                    "{}: prediction is {}x{} but ground truth {} is {}x{}",
                    p.display(),
                    pred.width,
                    pred.height,
                    g.display(),
                    gt.width,
                    gt.height
                );
            }
            Ok(LabelPair {
                pred: pred.data,
                gt: gt.data,
                height: gt.height,
                width: gt.width,
            })
        })
        .collect();
    let mut errors = Vec::new();
    let mut pairs = Vec::new();
    for r in loaded {
        match r {
            Ok(p) => pairs.push(p),
            Err(e) => errors.push(format!("{e:#}")),
        }
    }
    if !errors.is_empty() {
        bail!("{} bad file(s):\n  {}", errors.len(), errors.join("\n  "));
    }
    Ok((jobs.into_iter().map(|j| j.0).collect(), pairs, unmatched_gt))
}

/// Evaluates a folder of predicted label PNGs against a folder of ground-truth masks (matched by
/// stem) and checks label ranges; errors name the problem. Returns the report, the number of
/// images evaluated and the number of ground-truth masks without a prediction.
pub fn evaluate_dirs(
    pred_dir: &Path,
    gt_dir: &Path,
    classes: usize,
    ignore_index: Option<u32>,
    labels: &LabelConvention,
    stems: Option<&StemFilter>,
) -> Result<(SemanticReport, usize, usize)> {
    if classes == 0 {
        bail!("--classes must be at least 1");
    }
    let (_, pairs, unmatched) = load_pairs(pred_dir, gt_dir, labels, stems)?;
    let acc = evaluate(&pairs, classes, ignore_index);
    if acc.out_of_range.gt > 0 {
        bail!(
            "{}: {} ground-truth pixels have labels >= {classes} that are not the ignore index",
            gt_dir.display(),
            acc.out_of_range.gt
        );
    }
    if acc.out_of_range.pred > 0 {
        bail!(
            "{}: {} predicted pixels have labels >= {classes}",
            pred_dir.display(),
            acc.out_of_range.pred
        );
    }
    Ok((acc.report(), pairs.len(), unmatched))
}

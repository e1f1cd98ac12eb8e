//! Panoptic quality (Kirillov et al. 2019) as panopticapi's `pq_compute` computes it, through
//! hotcoco's port: segments match when IoU > 0.5 (void pixels of the prediction leave the union),
//! crowd ground truth is never a false negative, and unmatched predictions lying more than half on
//! void or on a crowd region of their class are not false positives.

use anyhow::{Context, Result, bail};
use hotcoco::{PanopticDataset, PanopticEval};
use serde::Serialize;
use std::collections::BTreeMap;
use std::path::Path;

#[derive(Clone, Debug, Serialize, PartialEq)]
pub struct Split {
    pub pq: f64,
    pub sq: f64,
    pub rq: f64,
    pub n: usize,
}

#[derive(Clone, Debug, Serialize, PartialEq)]
pub struct ClassPq {
    pub pq: f64,
    pub sq: f64,
    pub rq: f64,
}

#[derive(Clone, Debug, Serialize, PartialEq)]
pub struct PanopticReport {
    #[serde(rename = "All")]
    pub all: Split,
    #[serde(rename = "Things")]
    pub things: Split,
    #[serde(rename = "Stuff")]
    pub stuff: Split,
    /// Categories with at least one segment on either side.
    pub per_class: BTreeMap<u64, ClassPq>,
}

fn read_dataset(json: &Path, dir: &Path) -> Result<PanopticDataset> {
    if !dir.is_dir() {
        bail!("{}: panoptic PNG folder does not exist", dir.display());
    }
    let ds = PanopticDataset::from_file(json)
        .map_err(|e| anyhow::anyhow!("{}: not a COCO panoptic JSON: {e}", json.display()))?;
    Ok(ds.with_folder(dir))
}

/// `categories`: a file with a JSON list of categories (`id`, `isthing`, ...) that replaces the
/// ground truth's own.
pub fn evaluate_files(
    gt_json: &Path,
    gt_dir: &Path,
    pred_json: &Path,
    pred_dir: &Path,
    categories: Option<&Path>,
) -> Result<PanopticReport> {
    let mut gt = read_dataset(gt_json, gt_dir)?;
    let pred = read_dataset(pred_json, pred_dir)?;
    if let Some(c) = categories {
        let text =
            std::fs::read_to_string(c).with_context(|| format!("{}: cannot read", c.display()))?;
        gt.categories = serde_json::from_str(&text)
            .map_err(|e| anyhow::anyhow!("{}: not a JSON list of categories: {e}", c.display()))?;
    }
    if gt.categories.is_empty() {
        bail!(
            "{}: no categories (pass --categories FILE)",
            gt_json.display()
        );
    }
    let mut ev = PanopticEval::new(gt, pred);
    ev.run().map_err(|e| {
        anyhow::anyhow!(
            "panoptic evaluation of {} against {}: {e}",
            pred_json.display(),
            gt_json.display()
        )
    })?;
    let r = ev
        .result()
        .ok_or_else(|| anyhow::anyhow!("panoptic evaluation produced no result"))?;
    let split = |s: &hotcoco::panoptic::PqSplit| Split {
        pq: s.scores.pq,
        sq: s.scores.sq,
        rq: s.scores.rq,
        n: s.n,
    };
    let per_class = r
        .per_category
        .iter()
        .filter_map(|(id, c)| {
            c.scores().map(|s| {
                (
                    *id,
                    ClassPq {
                        pq: s.pq,
                        sq: s.sq,
                        rq: s.rq,
                    },
                )
            })
        })
        .collect();
    Ok(PanopticReport {
        all: split(&r.all),
        things: split(&r.things),
        stuff: split(&r.stuff),
        per_class,
    })
}

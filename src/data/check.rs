//! What a semantic dataset folder holds, before a long run: image / mask pairs and the files
//! without a partner, image sizes and channels, the values stored in the masks and how they
//! look (0/255 binary, 0/1, lossy binary, class indices), size mismatches, and, with a label
//! convention and a class count, the class histogram after conversion and values out of range.
//! Unreadable files are listed, not fatal.

use super::folder::list_images;
use super::image_io::{read_image, read_mask};
use super::labels::LabelConvention;
use anyhow::Result;
use rayon::prelude::*;
use serde::Serialize;
use std::collections::BTreeMap;
use std::path::Path;

/// How one mask's stored values look.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum MaskKind {
    /// Only 0 and 255.
    Binary255,
    /// Only 0 and 1.
    Binary01,
    /// Mostly 0 / 255 with intermediate values along edges (JPEG).
    LossyBinary,
    /// Small class indices (perhaps with 255).
    ClassIndices,
}

#[derive(Debug, Default, Serialize)]
pub struct FolderReport {
    pub pairs: usize,
    pub images_without_mask: Vec<String>,
    pub masks_without_image: Vec<String>,
    /// `"WxH"` -> number of images.
    pub image_sizes: BTreeMap<String, usize>,
    /// Channels -> number of images.
    pub image_channels: BTreeMap<usize, usize>,
    /// Pairs whose image and mask sizes differ.
    pub size_mismatches: Vec<String>,
    /// Stored mask value -> pixels.
    pub stored_values: BTreeMap<u32, u64>,
    /// Kind -> masks.
    pub mask_kinds: BTreeMap<String, usize>,
    /// Masks that look lossy (JPEG).
    pub lossy_masks: Vec<String>,
    /// After the label convention: class -> pixels (the ignore value included).
    pub classes: BTreeMap<u32, u64>,
    /// Converted values that are neither a class below `num_classes` nor the ignore value.
    pub out_of_range: BTreeMap<u32, u64>,
    /// Files that could not be read or converted, with the reason.
    pub unreadable: Vec<String>,
    /// What to pass to `train` / `eval`, from what was found.
    pub advice: Vec<String>,
}

/// The kind of a mask from its value histogram.
pub fn mask_kind(hist: &BTreeMap<u32, u64>) -> MaskKind {
    let max = hist.keys().next_back().copied().unwrap_or(0);
    let only = |allowed: &[u32]| hist.keys().all(|v| allowed.contains(v));
    if only(&[0, 255]) && max == 255 {
        return MaskKind::Binary255;
    }
    if max <= 1 {
        return MaskKind::Binary01;
    }
    let c = super::labels::ValueCounts::of(hist.iter().map(|(&v, &n)| (v, n)));
    if !c.class_like(128) && c.mid > 0 {
        MaskKind::LossyBinary
    } else {
        MaskKind::ClassIndices
    }
}

/// Checks `images` against `masks`; `labels` and `num_classes` (when given) for the class
/// histogram and the range check.
pub fn check_folder(
    images: &Path,
    masks: &Path,
    labels: &LabelConvention,
    num_classes: Option<usize>,
) -> Result<FolderReport> {
    let imgs = list_images(images)?;
    let msks = list_images(masks)?;
    let mask_of: BTreeMap<&str, &Path> = msks
        .iter()
        .map(|(s, p)| (s.as_str(), p.as_path()))
        .collect();
    let image_stems: std::collections::BTreeSet<&str> =
        imgs.iter().map(|(s, _)| s.as_str()).collect();
    let mut r = FolderReport {
        images_without_mask: imgs
            .iter()
            .filter(|(s, _)| !mask_of.contains_key(s.as_str()))
            .map(|(_, p)| p.display().to_string())
            .collect(),
        masks_without_image: msks
            .iter()
            .filter(|(s, _)| !image_stems.contains(s.as_str()))
            .map(|(_, p)| p.display().to_string())
            .collect(),
        ..Default::default()
    };
    let pairs: Vec<(&Path, &Path)> = imgs
        .iter()
        .filter_map(|(s, p)| mask_of.get(s.as_str()).map(|m| (p.as_path(), *m)))
        .collect();
    r.pairs = pairs.len();
    struct One {
        size: String,
        channels: usize,
        mismatch: Option<String>,
        stored: BTreeMap<u32, u64>,
        kind: MaskKind,
        classes: BTreeMap<u32, u64>,
        mask: String,
    }
    let results: Vec<Result<One, String>> = pairs
        .par_iter()
        .map(|(ip, mp)| {
            let pic = read_image(ip).map_err(|e| format!("{e:#}"))?;
            let mut m = read_mask(mp).map_err(|e| format!("{e:#}"))?;
            let mut stored = BTreeMap::new();
            for &v in &m.data {
                *stored.entry(v).or_insert(0u64) += 1;
            }
            let kind = mask_kind(&stored);
            let mismatch = ((pic.width, pic.height) != (m.width, m.height)).then(|| {
                format!(
                    "{}: the image is {}x{}, its mask {} is {}x{}",
                    ip.display(),
                    pic.width,
                    pic.height,
                    mp.display(),
                    m.width,
                    m.height
                )
            });
            labels.apply(mp, &mut m).map_err(|e| format!("{e:#}"))?;
            let mut classes = BTreeMap::new();
            for &v in &m.data {
                *classes.entry(v).or_insert(0u64) += 1;
            }
            Ok(One {
                size: format!("{}x{}", pic.width, pic.height),
                channels: pic.channels,
                mismatch,
                stored,
                kind,
                classes,
                mask: mp.display().to_string(),
            })
        })
        .collect();
    // the lossy-mask tally belongs to this check, not to a later run
    super::labels::take_lossy_report();
    for one in results {
        match one {
            Err(e) => r.unreadable.push(e),
            Ok(o) => {
                *r.image_sizes.entry(o.size).or_default() += 1;
                *r.image_channels.entry(o.channels).or_default() += 1;
                r.size_mismatches.extend(o.mismatch);
                for (v, c) in o.stored {
                    *r.stored_values.entry(v).or_default() += c;
                }
                let kind = serde_json::to_value(o.kind)
                    .ok()
                    .and_then(|v| v.as_str().map(str::to_string))
                    .unwrap_or_default();
                *r.mask_kinds.entry(kind).or_default() += 1;
                if o.kind == MaskKind::LossyBinary {
                    r.lossy_masks.push(o.mask);
                }
                for (v, c) in o.classes {
                    *r.classes.entry(v).or_default() += c;
                }
            }
        }
    }
    if let Some(k) = num_classes {
        for (&v, &c) in &r.classes {
            if v as usize >= k && v != labels.ignore {
                r.out_of_range.insert(v, c);
            }
        }
    }
    r.advice = advice(&r, labels);
    Ok(r)
}

fn advice(r: &FolderReport, labels: &LabelConvention) -> Vec<String> {
    let mut a = Vec::new();
    let kinds: Vec<&str> = r.mask_kinds.keys().map(String::as_str).collect();
    let binary_like = !kinds.is_empty()
        && kinds
            .iter()
            .all(|k| ["binary255", "binary01", "lossy_binary"].contains(k));
    if binary_like && labels.binary_threshold.is_none() {
        a.push("the masks are object / background: pass --binary --classes 2".into());
    }
    if !r.lossy_masks.is_empty() {
        a.push(format!(
            "{} mask(s) look lossy (JPEG): --binary thresholds them at --mask-threshold (128)",
            r.lossy_masks.len()
        ));
    }
    if kinds.contains(&"class_indices") && labels.is_identity() {
        let max = r
            .stored_values
            .keys()
            .filter(|&&v| v != labels.ignore)
            .max()
            .copied()
            .unwrap_or(0);
        a.push(format!(
            "class-index masks with values up to {max}: pass --classes {} (or --reduce-zero-label if 0 means \"other\", --label-map to map ids)",
            max + 1
        ));
    }
    if !r.out_of_range.is_empty() {
        a.push(format!(
            "values {:?} are neither a class nor the ignore value {}: raise --classes, or map them with --label-map",
            r.out_of_range.keys().take(8).collect::<Vec<_>>(),
            labels.ignore
        ));
    }
    if r.image_sizes.len() > 1 {
        a.push("images of several sizes: train with --crop".into());
    }
    a
}

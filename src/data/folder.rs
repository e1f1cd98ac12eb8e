//! A folder dataset: `images/` and `masks/` with matching file stems.

use super::image_io::{LabelMap, Picture, read_image, read_mask};
use super::labels::LabelConvention;
use anyhow::{Context, Result, bail};
use rayon::prelude::*;
use std::path::{Path, PathBuf};

pub const IMAGE_EXTENSIONS: &[&str] = &["png", "jpg", "jpeg", "tif", "tiff", "bmp"];
const IMAGE_DIR_NAMES: &[&str] = &["images", "image", "imgs", "img"];
const MASK_DIR_NAMES: &[&str] = &["masks", "mask", "labels", "label", "annotations", "annot"];

/// How stored mask values become class indices.
#[derive(Clone, Debug)]
pub struct MaskOptions {
    pub num_classes: usize,
    /// Binary thresholding, zero-label reduction, a label-id map.
    pub labels: LabelConvention,
    /// Pixels with this (mapped) value count in no loss and no metric.
    pub ignore_index: Option<u32>,
}

impl MaskOptions {
    /// Maps stored values to classes, checking the range; the error lists a few bad values.
    pub fn apply(&self, path: &Path, mask: &mut LabelMap) -> Result<()> {
        self.labels.apply(path, mask)?;
        let mut bad: Vec<u32> = mask
            .data
            .iter()
            .copied()
            .filter(|&v| v as usize >= self.num_classes && Some(v) != self.ignore_index)
            .collect();
        if !bad.is_empty() {
            bad.sort_unstable();
            bad.dedup();
            let shown: Vec<String> = bad.iter().take(8).map(|v| v.to_string()).collect();
            bail!(
                "{}: label values {} out of range for {} classes{}",
                path.display(),
                shown.join(", "),
                self.num_classes,
                match self.ignore_index {
                    Some(i) => format!(" (ignore index {i})"),
                    None => String::new(),
                }
            );
        }
        Ok(())
    }
}

/// One image and its mask.
#[derive(Clone, Debug, PartialEq)]
pub struct SamplePaths {
    pub stem: String,
    pub image: PathBuf,
    pub mask: Option<PathBuf>,
}

/// Sorts names so that "2" comes before "10".
pub fn natural_key(s: &str) -> (Option<u64>, String) {
    (s.parse::<u64>().ok(), s.to_string())
}

/// One image, or every image of a folder (in name order): an error naming the path when it is
/// neither or holds no image.
pub fn image_paths(path: &Path) -> Result<Vec<PathBuf>> {
    let files: Vec<PathBuf> = if path.is_file() {
        vec![path.to_path_buf()]
    } else if path.is_dir() {
        list_images(path)?.into_iter().map(|(_, p)| p).collect()
    } else {
        bail!("{}: no such image or folder", path.display());
    };
    if files.is_empty() {
        bail!("{}: no images", path.display());
    }
    Ok(files)
}

/// Image files in `dir` (by extension), sorted naturally by stem.
pub fn list_images(dir: &Path) -> Result<Vec<(String, PathBuf)>> {
    let rd =
        std::fs::read_dir(dir).with_context(|| format!("{}: cannot read folder", dir.display()))?;
    let mut out = Vec::new();
    for entry in rd {
        let path = entry?.path();
        let ext = path
            .extension()
            .and_then(|e| e.to_str())
            .map(|e| e.to_ascii_lowercase());
        if path.is_file() && ext.is_some_and(|e| IMAGE_EXTENSIONS.contains(&e.as_str())) {
            let stem = path.file_stem().unwrap().to_string_lossy().to_string();
            out.push((stem, path));
        }
    }
    out.sort_by_key(|a| natural_key(&a.0));
    for w in out.windows(2) {
        if w[0].0 == w[1].0 {
            bail!(
                "{}: two files share the stem '{}' ({} and {})",
                dir.display(),
                w[0].0,
                w[0].1.display(),
                w[1].1.display()
            );
        }
    }
    Ok(out)
}

fn find_subdir(root: &Path, names: &[&str]) -> Option<PathBuf> {
    names.iter().map(|n| root.join(n)).find(|p| p.is_dir())
}

/// Resolves a dataset root (`DIR/images` + `DIR/masks`, or `image`/`label` and similar names).
pub fn dataset_dirs(root: &Path) -> Result<(PathBuf, PathBuf)> {
    if !root.is_dir() {
        bail!("{}: dataset folder does not exist", root.display());
    }
    let images = find_subdir(root, IMAGE_DIR_NAMES).ok_or_else(|| {
        anyhow::anyhow!(
            "{}: no images/ folder (looked for {})",
            root.display(),
            IMAGE_DIR_NAMES.join(", ")
        )
    })?;
    let masks = find_subdir(root, MASK_DIR_NAMES).ok_or_else(|| {
        anyhow::anyhow!(
            "{}: no masks/ folder (looked for {})",
            root.display(),
            MASK_DIR_NAMES.join(", ")
        )
    })?;
    Ok((images, masks))
}

/// A selection of stems: "0-24", "3,7,12", "a,b", or a mix.
#[derive(Clone, Debug)]
pub struct StemFilter(Vec<StemItem>);

#[derive(Clone, Debug)]
enum StemItem {
    Name(String),
    Range(u64, u64),
}

impl std::str::FromStr for StemFilter {
    type Err = String;
    fn from_str(s: &str) -> std::result::Result<Self, String> {
        let mut items = Vec::new();
        for part in s.split(',').map(str::trim).filter(|p| !p.is_empty()) {
            if let Some((a, b)) = part.split_once('-')
                && let (Ok(a), Ok(b)) = (a.parse::<u64>(), b.parse::<u64>())
            {
                if a > b {
                    return Err(format!("range {part} is empty"));
                }
                items.push(StemItem::Range(a, b));
                continue;
            }
            items.push(StemItem::Name(part.to_string()));
        }
        if items.is_empty() {
            return Err("empty stem list".into());
        }
        Ok(StemFilter(items))
    }
}

impl StemFilter {
    pub fn matches(&self, stem: &str) -> bool {
        self.0.iter().any(|i| match i {
            StemItem::Name(n) => n == stem,
            StemItem::Range(a, b) => stem.parse::<u64>().is_ok_and(|v| v >= *a && v <= *b),
        })
    }
}

/// Pairs every image with the mask of the same stem; every missing mask is reported.
pub fn pair_folder(
    images_dir: &Path,
    masks_dir: &Path,
    filter: Option<&StemFilter>,
) -> Result<Vec<SamplePaths>> {
    let images = list_images(images_dir)?;
    let masks = list_images(masks_dir)?;
    let mask_of: std::collections::HashMap<&str, &PathBuf> =
        masks.iter().map(|(s, p)| (s.as_str(), p)).collect();
    let mut out = Vec::new();
    let mut missing = Vec::new();
    for (stem, path) in &images {
        if filter.is_some_and(|f| !f.matches(stem)) {
            continue;
        }
        match mask_of.get(stem.as_str()) {
            Some(m) => out.push(SamplePaths {
                stem: stem.clone(),
                image: path.clone(),
                mask: Some((*m).clone()),
            }),
            None => missing.push(path.display().to_string()),
        }
    }
    if !missing.is_empty() {
        bail!(
            "{} image(s) without a mask of the same stem in {}:\n  {}",
            missing.len(),
            masks_dir.display(),
            missing.join("\n  ")
        );
    }
    if out.is_empty() {
        bail!(
            "{}: no images{}",
            images_dir.display(),
            if filter.is_some() {
                " match the selected stems"
            } else {
                ""
            }
        );
    }
    Ok(out)
}

/// A decoded sample: image with the network's channel count, and class indices.
#[derive(Clone, Debug)]
pub struct Sample {
    pub stem: String,
    pub image: Picture,
    pub mask: LabelMap,
}

/// Loads one pair and checks it: same size, labels in range.
pub fn load_sample(p: &SamplePaths, in_channels: usize, opts: &MaskOptions) -> Result<Sample> {
    let image = read_image(&p.image)?.with_channels(in_channels);
    let mask_path = p.mask.as_ref().expect("sample without mask");
    let mut mask = read_mask(mask_path)?;
    if (mask.width, mask.height) != (image.width, image.height) {
        bail!(
            "{}: mask is {}x{} but its image {} is {}x{}",
            mask_path.display(),
            mask.width,
            mask.height,
            p.image.display(),
            image.width,
            image.height
        );
    }
    opts.apply(mask_path, &mut mask)?;
    Ok(Sample {
        stem: p.stem.clone(),
        image,
        mask,
    })
}

/// Loads every pair in parallel; all problems are reported together, by file.
pub fn load_all(
    paths: &[SamplePaths],
    in_channels: usize,
    opts: &MaskOptions,
) -> Result<Vec<Sample>> {
    let results: Vec<Result<Sample>> = paths
        .par_iter()
        .map(|p| load_sample(p, in_channels, opts))
        .collect();
    let mut errors = Vec::new();
    let mut samples = Vec::new();
    for r in results {
        match r {
            Ok(s) => samples.push(s),
            Err(e) => errors.push(format!("{e:#}")),
        }
    }
    if !errors.is_empty() {
        bail!("{} bad sample(s):\n  {}", errors.len(), errors.join("\n  "));
    }
    Ok(samples)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stem_filter_ranges_and_names() {
        let f: StemFilter = "0-3, 7,cat".parse().unwrap();
        assert!(f.matches("0") && f.matches("3") && f.matches("7") && f.matches("cat"));
        assert!(!f.matches("4") && !f.matches("dog"));
        assert!("5-2".parse::<StemFilter>().is_err());
    }

    #[test]
    fn binary_and_range_checks() {
        let opts = MaskOptions {
            num_classes: 2,
            labels: LabelConvention {
                binary_threshold: Some(128),
                ..Default::default()
            },
            ignore_index: Some(255),
        };
        let mut m = LabelMap {
            width: 2,
            height: 1,
            data: vec![0, 255],
        };
        opts.apply(Path::new("m.png"), &mut m).unwrap();
        assert_eq!(m.data, vec![0, 1]);
        // JPEG's ringing is thresholded at 128
        let mut m = LabelMap {
            width: 40,
            height: 1,
            data: (0..40).map(|i| [0, 3, 250, 255][i % 4]).collect(),
        };
        opts.apply(Path::new("m.png"), &mut m).unwrap();
        assert_eq!(
            m.data,
            (0..40).map(|i| (i % 4 >= 2) as u32).collect::<Vec<_>>()
        );
        // class indices given as binary
        let mut m = LabelMap {
            width: 4,
            height: 1,
            data: vec![0, 1, 2, 3],
        };
        let err = format!("{}", opts.apply(Path::new("c.png"), &mut m).unwrap_err());
        assert!(
            err.contains("c.png") && err.contains("drop --binary"),
            "{err}"
        );
        let opts = MaskOptions {
            num_classes: 3,
            labels: LabelConvention::default(),
            ignore_index: Some(255),
        };
        let mut m = LabelMap {
            width: 3,
            height: 1,
            data: vec![2, 255, 4],
        };
        let err = format!("{}", opts.apply(Path::new("x.png"), &mut m).unwrap_err());
        assert!(
            err.contains("x.png") && err.contains('4') && err.contains("3 classes"),
            "{err}"
        );
    }
}

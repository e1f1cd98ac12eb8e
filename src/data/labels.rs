//! How the values stored in users' masks become class indices, in the conventions datasets ship
//! with: binary masks (0/255 or 0/1, or grayscale with JPEG's ringing, thresholded as
//! segmentation_models_pytorch users do at 128), mmseg's `reduce_zero_label` (ADE20K: 0 is
//! "other" and ignored, k becomes class k - 1), and a label-id map (Cityscapes' ids to train
//! ids; values it does not list are ignored). Also class-name files.

use super::image_io::LabelMap;
use anyhow::{Context, Result, bail};
use std::collections::BTreeMap;
use std::path::Path;
use std::sync::atomic::{AtomicUsize, Ordering};

/// The conversion of stored mask values to classes.
#[derive(Clone, Debug, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct LabelConvention {
    /// Binary masks: values >= this are class 1 (masks holding only 0 and 1 are taken as they
    /// are). `None`: the values are class indices.
    #[serde(default)]
    pub binary_threshold: Option<u8>,
    /// 0 -> ignore, k -> k - 1 (the ignore value itself stays), as mmseg's `reduce_zero_label`.
    #[serde(default)]
    pub reduce_zero_label: bool,
    /// Stored value -> class; values not listed become the ignore value.
    #[serde(default)]
    pub label_map: Option<BTreeMap<u32, u32>>,
    /// The ignore value after conversion.
    #[serde(default = "default_ignore")]
    pub ignore: u32,
}

fn default_ignore() -> u32 {
    255
}

impl Default for LabelConvention {
    fn default() -> Self {
        Self {
            binary_threshold: None,
            reduce_zero_label: false,
            label_map: None,
            ignore: 255,
        }
    }
}

/// Masks that looked lossy and how many of their pixels were thresholded, since the last
/// [`take_lossy_report`] (masks are read in parallel; one summary is printed per run).
static LOSSY_MASKS: AtomicUsize = AtomicUsize::new(0);
static LOSSY_PIXELS: AtomicUsize = AtomicUsize::new(0);

/// `(masks, pixels)` thresholded from values other than 0 / 255 since the last call, if any.
pub fn take_lossy_report() -> Option<(usize, usize)> {
    let m = LOSSY_MASKS.swap(0, Ordering::Relaxed);
    let p = LOSSY_PIXELS.swap(0, Ordering::Relaxed);
    (m > 0).then_some((m, p))
}

/// The one-line note for [`take_lossy_report`]'s counts.
pub fn lossy_note(threshold: u8) -> Option<String> {
    take_lossy_report().map(|(m, p)| {
        format!(
            "note: {m} binary mask(s) hold values other than 0 and 255 (lossy, e.g. JPEG): {p} pixel(s) were thresholded at {threshold} (values >= {threshold} are the object)"
        )
    })
}

impl LabelConvention {
    /// Whether stored values are used as they are.
    pub fn is_identity(&self) -> bool {
        self.binary_threshold.is_none() && !self.reduce_zero_label && self.label_map.is_none()
    }

    /// Converts a mask read from `path` in place.
    pub fn apply(&self, path: &Path, mask: &mut LabelMap) -> Result<()> {
        if let Some(t) = self.binary_threshold {
            binarize(path, mask, t)?;
        }
        if self.reduce_zero_label {
            let ig = self.ignore;
            for v in mask.data.iter_mut() {
                *v = match *v {
                    0 => ig,
                    x if x == ig => ig,
                    x => x - 1,
                };
            }
        }
        if let Some(map) = &self.label_map {
            for v in mask.data.iter_mut() {
                *v = map.get(v).copied().unwrap_or(self.ignore);
            }
        }
        Ok(())
    }
}

impl LabelConvention {
    /// The stored value a class is written back as (`predict --write-label-ids`): 255 for a
    /// binary mask's object, `k + 1` after zero-label reduction, the smallest id a label map
    /// sends to the class (the ignore value when none does).
    pub fn stored_value(&self, class: u32) -> u32 {
        if self.binary_threshold.is_some() {
            return if class > 0 { 255 } else { 0 };
        }
        let c = match &self.label_map {
            Some(map) => match map.iter().find(|(_, c)| **c == class) {
                Some((v, _)) => *v,
                None => return self.ignore,
            },
            None => class,
        };
        if self.reduce_zero_label { c + 1 } else { c }
    }
}

/// Pixel counts of a mask's values that tell object / background masks from class indices.
#[derive(Clone, Copy, Debug, Default)]
pub struct ValueCounts {
    pub pixels: u64,
    /// Values 1..32.
    pub small: u64,
    /// Values 32..255.
    pub mid: u64,
    pub max: u32,
}

impl ValueCounts {
    /// From `(value, pixels)` pairs.
    pub fn of(values: impl IntoIterator<Item = (u32, u64)>) -> Self {
        let mut c = Self::default();
        for (v, n) in values {
            c.pixels += n;
            c.max = c.max.max(v);
            match v {
                1..32 => c.small += n,
                32..255 => c.mid += n,
                _ => {}
            }
        }
        c
    }

    /// Class-index masks (0..K, perhaps with 255 borders) rather than object / background:
    /// nothing reaches `threshold`, or many pixels of small values and next to none in
    /// between, where JPEG's ringing along edges always leaves some.
    pub fn class_like(&self, threshold: u32) -> bool {
        self.max < threshold || (self.small * 20 > self.pixels && self.mid * 20 < self.small)
    }
}

fn binarize(path: &Path, mask: &mut LabelMap, threshold: u8) -> Result<()> {
    let c = ValueCounts::of(mask.data.iter().map(|&v| (v, 1)));
    if c.max <= 1 {
        return Ok(()); // 0 / 1 masks
    }
    if c.class_like(threshold as u32) {
        bail!(
            "{}: --binary expects object / background masks, but {:.1}% of the pixels hold small class-like values (largest value {}); for class-index masks drop --binary and give --classes",
            path.display(),
            100.0 * c.small as f64 / c.pixels.max(1) as f64,
            c.max
        );
    }
    let other = c.small + c.mid;
    if other > 0 {
        LOSSY_MASKS.fetch_add(1, Ordering::Relaxed);
        LOSSY_PIXELS.fetch_add(other as usize, Ordering::Relaxed);
    }
    let t = threshold as u32;
    mask.data.iter_mut().for_each(|v| *v = (*v >= t) as u32);
    Ok(())
}

/// A label map file: JSON (`{"7": 0, "8": 1}` or `[[7, 0], [8, 1]]`) or CSV lines
/// `value,class` (a header line and `#` comments are skipped).
pub fn read_label_map(path: &Path) -> Result<BTreeMap<u32, u32>> {
    let text = std::fs::read_to_string(path)
        .with_context(|| format!("{}: cannot read", path.display()))?;
    let bad = |what: String| anyhow::anyhow!("{}: {what}", path.display());
    let mut map = BTreeMap::new();
    let t = text.trim_start();
    if t.starts_with('{') || t.starts_with('[') {
        let v: serde_json::Value =
            serde_json::from_str(t).map_err(|e| bad(format!("malformed JSON: {e}")))?;
        let pairs: Vec<(String, serde_json::Value)> = match v {
            serde_json::Value::Object(o) => o.into_iter().collect(),
            serde_json::Value::Array(a) => a
                .into_iter()
                .map(|p| match p.as_array().map(|p| p.as_slice()) {
                    Some([k, c]) => Ok((k.to_string(), c.clone())),
                    _ => Err(bad("a list entry must be [value, class]".into())),
                })
                .collect::<Result<_>>()?,
            _ => return Err(bad("expected an object or a list of [value, class]".into())),
        };
        for (k, c) in pairs {
            let key: u32 = k
                .trim_matches('"')
                .parse()
                .map_err(|_| bad(format!("value {k} is not a non-negative integer")))?;
            let class = c
                .as_u64()
                .filter(|&c| c <= u32::MAX as u64)
                .ok_or_else(|| {
                    bad(format!(
                        "class {c} of value {key} is not a non-negative integer"
                    ))
                })?;
            map.insert(key, class as u32);
        }
    } else {
        for (i, line) in text.lines().enumerate() {
            let line = line.trim();
            if line.is_empty() || line.starts_with('#') {
                continue;
            }
            let cells: Vec<&str> = line.split(',').map(str::trim).collect();
            let parsed = match cells.as_slice() {
                [v, c, ..] => v.parse::<u32>().ok().zip(c.parse::<u32>().ok()),
                _ => None,
            };
            match parsed {
                Some((v, c)) => {
                    map.insert(v, c);
                }
                None if i == 0 => {} // a header
                None => return Err(bad(format!("line {}: expected value,class", i + 1))),
            }
        }
    }
    if map.is_empty() {
        bail!("{}: the label map is empty", path.display());
    }
    Ok(map)
}

/// Class names: one per line, a JSON list, or a CSV with a `Name` column (ADE20K's
/// `objectInfo150.csv`; the first of `;`-separated synonyms).
pub fn read_class_names(path: &Path) -> Result<Vec<String>> {
    let text = std::fs::read_to_string(path)
        .with_context(|| format!("{}: cannot read", path.display()))?;
    let t = text.trim_start();
    let names: Vec<String> = if t.starts_with('[') {
        serde_json::from_str(t).map_err(|e| {
            anyhow::anyhow!("{}: expected a JSON list of names: {e}", path.display())
        })?
    } else {
        let mut lines = text.lines().filter(|l| !l.trim().is_empty());
        let first = lines.clone().next().unwrap_or("");
        let header: Vec<&str> = first.split(',').map(str::trim).collect();
        match header.iter().position(|h| h.eq_ignore_ascii_case("name")) {
            Some(col) => {
                lines.next();
                lines
                    .map(|l| {
                        let cell = l.split(',').nth(col).unwrap_or("").trim();
                        cell.split(';').next().unwrap_or("").trim().to_string()
                    })
                    .collect()
            }
            None => lines.map(|l| l.trim().to_string()).collect(),
        }
    };
    if names.is_empty() || names.iter().any(|n| n.is_empty()) {
        bail!("{}: no class names, or an empty one", path.display());
    }
    Ok(names)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn conv(mask: &[u32], c: &LabelConvention) -> Vec<u32> {
        let mut m = LabelMap {
            width: mask.len(),
            height: 1,
            data: mask.to_vec(),
        };
        c.apply(Path::new("m.png"), &mut m).unwrap();
        m.data
    }

    #[test]
    fn conventions_and_their_inverse() {
        let reduce = LabelConvention {
            reduce_zero_label: true,
            ..Default::default()
        };
        assert_eq!(conv(&[0, 1, 150, 255], &reduce), vec![255, 0, 149, 255]);
        assert_eq!((reduce.stored_value(0), reduce.stored_value(149)), (1, 150));
        let map = LabelConvention {
            label_map: Some([(7, 0), (8, 1), (26, 13)].into_iter().collect()),
            ..Default::default()
        };
        assert_eq!(conv(&[7, 8, 26, 0, 33], &map), vec![0, 1, 13, 255, 255]);
        assert_eq!((map.stored_value(13), map.stored_value(5)), (26, 255));
        let binary = LabelConvention {
            binary_threshold: Some(128),
            ..Default::default()
        };
        assert_eq!(conv(&[0, 1, 1, 0], &binary), vec![0, 1, 1, 0]);
        assert_eq!(binary.stored_value(1), 255);
    }
}

//! What a COCO instances file holds, and what will go wrong with it: duplicate ids, ids of 0
//! (pycocotools uses annotation ids as match markers with 0 meaning "unmatched", so a detection
//! matched to annotation 0 counts as a false positive there), annotations pointing at missing
//! images or categories, boxes outside their image, empty segmentations, and image files missing
//! from the images folder.

use anyhow::{Context, Result, bail};
use serde::Serialize;
use serde_json::Value;
use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;

#[derive(Debug, Default, Serialize)]
pub struct CocoCheck {
    pub images: usize,
    pub annotations: usize,
    pub categories: usize,
    /// Category name -> annotations.
    pub per_category: BTreeMap<String, usize>,
    pub crowd: usize,
    /// `polygon`, `rle`, `none` -> annotations.
    pub segmentation_kinds: BTreeMap<String, usize>,
    pub problems: Vec<String>,
    pub warnings: Vec<String>,
}

fn id_of(v: &Value) -> Option<i64> {
    v.get("id").and_then(Value::as_i64)
}

/// Checks a COCO instances file; `images_dir` (when given) must hold every image's file.
pub fn check_coco(path: &Path, images_dir: Option<&Path>) -> Result<CocoCheck> {
    let text = std::fs::read_to_string(path)
        .with_context(|| format!("{}: cannot read", path.display()))?;
    let root: Value = serde_json::from_str(&text)
        .map_err(|e| anyhow::anyhow!("{}: malformed JSON: {e}", path.display()))?;
    let list = |k: &str| -> Result<Vec<Value>> {
        match root.get(k) {
            Some(Value::Array(a)) => Ok(a.clone()),
            None => Ok(Vec::new()),
            Some(_) => bail!("{}: \"{k}\" is not a list", path.display()),
        }
    };
    let (images, anns, cats) = (list("images")?, list("annotations")?, list("categories")?);
    if root.get("images").is_none() || root.get("annotations").is_none() {
        bail!(
            "{}: not a COCO instances file (needs \"images\" and \"annotations\")",
            path.display()
        );
    }
    let mut c = CocoCheck {
        images: images.len(),
        annotations: anns.len(),
        categories: cats.len(),
        ..Default::default()
    };
    let ids = |what: &str, items: &[Value], c: &mut CocoCheck| -> BTreeMap<i64, usize> {
        let mut seen = BTreeMap::new();
        let mut dup = BTreeSet::new();
        for (i, it) in items.iter().enumerate() {
            match id_of(it) {
                Some(id) => {
                    if seen.insert(id, i).is_some() {
                        dup.insert(id);
                    }
                }
                None => c
                    .problems
                    .push(format!("{what} entry {i} has no integer \"id\"")),
            }
        }
        if !dup.is_empty() {
            c.problems.push(format!(
                "{} duplicate {what} id(s): {:?}",
                dup.len(),
                dup.iter().take(8).collect::<Vec<_>>()
            ));
        }
        if seen.contains_key(&0) {
            c.warnings.push(format!(
                "a{} {what} has id 0: pycocotools treats id 0 as \"unmatched\"{}; segrs evaluates it correctly, renumber from 1 to agree with pycocotools",
                if what.starts_with(['a', 'i']) { "n" } else { "" },
                if what == "annotation" {
                    " (a detection matched to it counts as a false positive there)"
                } else {
                    ""
                }
            ));
        }
        seen
    };
    let image_ids = ids("image", &images, &mut c);
    let cat_ids = ids("category", &cats, &mut c);
    ids("annotation", &anns, &mut c);
    let cat_name: BTreeMap<i64, String> = cats
        .iter()
        .filter_map(|k| {
            Some((
                id_of(k)?,
                k.get("name")
                    .and_then(Value::as_str)
                    .unwrap_or("?")
                    .to_string(),
            ))
        })
        .collect();
    let size_of: BTreeMap<i64, (f64, f64)> = images
        .iter()
        .filter_map(|im| {
            Some((
                id_of(im)?,
                (im.get("width")?.as_f64()?, im.get("height")?.as_f64()?),
            ))
        })
        .collect();
    let (mut orphan_img, mut orphan_cat, mut outside, mut empty) = (0, 0, 0, 0);
    for a in &anns {
        let img = a.get("image_id").and_then(Value::as_i64);
        let cat = a.get("category_id").and_then(Value::as_i64);
        if img.is_none_or(|i| !image_ids.contains_key(&i)) {
            orphan_img += 1;
        }
        match cat {
            Some(k) if cat_ids.contains_key(&k) => {
                *c.per_category.entry(cat_name[&k].clone()).or_default() += 1;
            }
            _ => orphan_cat += 1,
        }
        if a.get("iscrowd").and_then(Value::as_i64) == Some(1) {
            c.crowd += 1;
        }
        let kind = match a.get("segmentation") {
            Some(Value::Array(p)) if !p.is_empty() => "polygon",
            Some(Value::Object(_)) => "rle",
            _ => {
                empty += 1;
                "none"
            }
        };
        *c.segmentation_kinds.entry(kind.into()).or_default() += 1;
        if let (Some(Value::Array(b)), Some(i)) = (a.get("bbox"), img)
            && let Some(&(w, h)) = size_of.get(&i)
            && b.len() == 4
        {
            let v: Vec<f64> = b.iter().map(|x| x.as_f64().unwrap_or(f64::NAN)).collect();
            let tol = 1.0;
            if !(v[0] >= -tol && v[1] >= -tol && v[0] + v[2] <= w + tol && v[1] + v[3] <= h + tol) {
                outside += 1;
            }
        }
    }
    if orphan_img > 0 {
        c.problems.push(format!(
            "{orphan_img} annotation(s) refer to an image id that is not in \"images\""
        ));
    }
    if orphan_cat > 0 {
        c.problems.push(format!(
            "{orphan_cat} annotation(s) refer to a category id that is not in \"categories\""
        ));
    }
    if outside > 0 {
        c.warnings.push(format!(
            "{outside} annotation box(es) extend outside their image"
        ));
    }
    if empty > 0 {
        c.warnings.push(format!(
            "{empty} annotation(s) have no segmentation (box AP only for them)"
        ));
    }
    if let Some(dir) = images_dir {
        let missing: Vec<String> = images
            .iter()
            .filter_map(|im| im.get("file_name").and_then(Value::as_str))
            .filter(|f| !dir.join(f).is_file())
            .map(str::to_string)
            .collect();
        if !missing.is_empty() {
            c.problems.push(format!(
                "{} image file(s) missing from {}: {}",
                missing.len(),
                dir.display(),
                missing
                    .iter()
                    .take(5)
                    .cloned()
                    .collect::<Vec<_>>()
                    .join(", ")
            ));
        }
    }
    Ok(c)
}

//! COCO instance JSON and COCO results JSON, with the checks pycocotools leaves out: every result
//! names a known image and category, carries a finite score, and a segmentation whose RLE decodes
//! to its image's size. Masks <-> RLE use hotcoco (a port of pycocotools' maskApi.c); segrs keeps
//! row-major helpers around them.

use anyhow::{Context, Result, bail};
use hotcoco::{Annotation, COCO, Segmentation, mask};
use std::collections::HashMap;
use std::path::Path;

/// Loads a COCO instances (ground-truth) file.
pub fn load_gt(path: &Path) -> Result<COCO> {
    let text = std::fs::read_to_string(path)
        .with_context(|| format!("{}: cannot read", path.display()))?;
    let ds: hotcoco::Dataset = serde_json::from_str(&text)
        .map_err(|e| anyhow::anyhow!("{}: malformed COCO JSON: {e}", path.display()))?;
    let mut seen = std::collections::HashSet::new();
    for a in &ds.annotations {
        if !seen.insert(a.id) {
            bail!("{}: annotation id {} appears twice", path.display(), a.id);
        }
    }
    let images: HashMap<u64, (u32, u32)> = ds
        .images
        .iter()
        .map(|i| (i.id, (i.height, i.width)))
        .collect();
    let cats: std::collections::HashSet<u64> = ds.categories.iter().map(|c| c.id).collect();
    for a in &ds.annotations {
        let Some(&(h, w)) = images.get(&a.image_id) else {
            bail!(
                "{}: annotation {} refers to unknown image_id {}",
                path.display(),
                a.id,
                a.image_id
            );
        };
        if !cats.contains(&a.category_id) {
            bail!(
                "{}: annotation {} has unknown category_id {}",
                path.display(),
                a.id,
                a.category_id
            );
        }
        if let Some(seg) = &a.segmentation {
            check_segmentation(seg, h, w)
                .map_err(|e| anyhow::anyhow!("{}: annotation {}: {e}", path.display(), a.id))?;
        }
    }
    Ok(COCO::from_dataset(ds))
}

fn check_segmentation(seg: &Segmentation, h: u32, w: u32) -> Result<()> {
    match seg {
        Segmentation::CompressedRle { size, counts } => {
            if size[0] != h || size[1] != w {
                bail!("RLE size {:?} differs from the image size [{h}, {w}]", size);
            }
            let rle = mask::rle_from_string(counts, h, w)
                .map_err(|e| anyhow::anyhow!("malformed RLE counts: {e}"))?;
            let total: u64 = rle.counts.iter().map(|&c| c as u64).sum();
            if total != h as u64 * w as u64 {
                bail!(
                    "RLE counts sum to {total}, not h*w = {}",
                    h as u64 * w as u64
                );
            }
        }
        Segmentation::UncompressedRle { size, counts } => {
            if size[0] != h || size[1] != w {
                bail!("RLE size {:?} differs from the image size [{h}, {w}]", size);
            }
            let total: u64 = counts.iter().map(|&c| c as u64).sum();
            if total != h as u64 * w as u64 {
                bail!(
                    "RLE counts sum to {total}, not h*w = {}",
                    h as u64 * w as u64
                );
            }
        }
        Segmentation::Polygon(polys) => {
            if let Some(p) = polys
                .iter()
                .find(|p| p.len() % 2 != 0 || p.iter().any(|v| !v.is_finite()))
            {
                bail!(
                    "polygon with an odd number of coordinates or a non-finite value ({} values)",
                    p.len()
                );
            }
        }
        _ => {}
    }
    Ok(())
}

/// Loads a COCO results file (a JSON array of detections) against `gt`, checking every item.
pub fn load_results(gt: &COCO, path: &Path, need_segmentation: bool) -> Result<COCO> {
    let text = std::fs::read_to_string(path)
        .with_context(|| format!("{}: cannot read", path.display()))?;
    let value: serde_json::Value = serde_json::from_str(&text)
        .map_err(|e| anyhow::anyhow!("{}: malformed JSON: {e}", path.display()))?;
    let items = match &value {
        serde_json::Value::Array(a) => a.clone(),
        serde_json::Value::Object(o) if o.get("annotations").is_some_and(|a| a.is_array()) => {
            o["annotations"].as_array().unwrap().clone()
        }
        _ => bail!(
            "{}: a COCO results file is a JSON array of detections",
            path.display()
        ),
    };
    let mut anns = Vec::with_capacity(items.len());
    for (i, item) in items.into_iter().enumerate() {
        let ann: Annotation = serde_json::from_value(item)
            .map_err(|e| anyhow::anyhow!("{}: detection #{i} is malformed: {e}", path.display()))?;
        let Some(img) = gt.get_img(ann.image_id) else {
            bail!(
                "{}: detection #{i} refers to image_id {} which the ground truth does not have",
                path.display(),
                ann.image_id
            );
        };
        if gt.get_cat(ann.category_id).is_none() {
            bail!(
                "{}: detection #{i} has unknown category_id {}",
                path.display(),
                ann.category_id
            );
        }
        match ann.score {
            Some(s) if s.is_finite() => {}
            Some(s) => bail!("{}: detection #{i} has score {s}", path.display()),
            None => bail!("{}: detection #{i} has no score", path.display()),
        }
        match &ann.segmentation {
            Some(seg) => check_segmentation(seg, img.height, img.width).map_err(|e| {
                anyhow::anyhow!(
                    "{}: detection #{i} (image {}): {e}",
                    path.display(),
                    ann.image_id
                )
            })?,
            None if need_segmentation => bail!(
                "{}: detection #{i} has no segmentation (needed for --iou-type segm)",
                path.display()
            ),
            None => {
                if ann.bbox.is_none() {
                    bail!(
                        "{}: detection #{i} has neither bbox nor segmentation",
                        path.display()
                    );
                }
            }
        }
        anns.push(ann);
    }
    gt.load_res_anns(anns)
        .map_err(|e| anyhow::anyhow!("{}: {e}", path.display()))
}

/// Row-major `h x w` mask (nonzero = foreground) to a COCO RLE.
pub fn encode_rowmajor(mask_rm: &[u8], h: u32, w: u32) -> Result<hotcoco::Rle> {
    let (hu, wu) = (h as usize, w as usize);
    assert_eq!(mask_rm.len(), hu * wu);
    let mut cm = vec![0u8; hu * wu];
    for y in 0..hu {
        for x in 0..wu {
            cm[y + hu * x] = (mask_rm[y * wu + x] != 0) as u8;
        }
    }
    mask::encode(&cm, h, w).map_err(|e| anyhow::anyhow!("RLE encode: {e}"))
}

/// A COCO RLE to a row-major 0/1 mask.
pub fn decode_rowmajor(rle: &hotcoco::Rle) -> Vec<u8> {
    let (h, w) = (rle.h as usize, rle.w as usize);
    let cm = mask::decode(rle);
    let mut rm = vec![0u8; h * w];
    for x in 0..w {
        for y in 0..h {
            rm[y * w + x] = cm[y + h * x];
        }
    }
    rm
}

/// The 91 category names of torchvision's COCO detection models, indexed by label (= COCO
/// category id; "N/A" for the ids COCO leaves unused, `__background__` for 0).
pub const COCO_DETECTION_NAMES: [&str; 91] = [
    "__background__",
    "person",
    "bicycle",
    "car",
    "motorcycle",
    "airplane",
    "bus",
    "train",
    "truck",
    "boat",
    "traffic light",
    "fire hydrant",
    "N/A",
    "stop sign",
    "parking meter",
    "bench",
    "bird",
    "cat",
    "dog",
    "horse",
    "sheep",
    "cow",
    "elephant",
    "bear",
    "zebra",
    "giraffe",
    "N/A",
    "backpack",
    "umbrella",
    "N/A",
    "N/A",
    "handbag",
    "tie",
    "suitcase",
    "frisbee",
    "skis",
    "snowboard",
    "sports ball",
    "kite",
    "baseball bat",
    "baseball glove",
    "skateboard",
    "surfboard",
    "tennis racket",
    "bottle",
    "N/A",
    "wine glass",
    "cup",
    "fork",
    "knife",
    "spoon",
    "bowl",
    "banana",
    "apple",
    "sandwich",
    "orange",
    "broccoli",
    "carrot",
    "hot dog",
    "pizza",
    "donut",
    "cake",
    "chair",
    "couch",
    "potted plant",
    "bed",
    "N/A",
    "dining table",
    "N/A",
    "N/A",
    "toilet",
    "N/A",
    "tv",
    "laptop",
    "mouse",
    "remote",
    "keyboard",
    "cell phone",
    "microwave",
    "oven",
    "toaster",
    "sink",
    "refrigerator",
    "N/A",
    "book",
    "clock",
    "vase",
    "scissors",
    "teddy bear",
    "hair drier",
    "toothbrush",
];

/// One detection as a COCO results record: `bbox` `[x, y, w, h]`, `segmentation` as compressed
/// RLE of a row-major 0/1 mask.
#[allow(clippy::too_many_arguments)]
pub fn result_record(
    image_id: u64,
    file_name: &str,
    category_id: u64,
    bbox: [f32; 4],
    score: f32,
    mask: &[u8],
    h: usize,
    w: usize,
) -> Result<serde_json::Value> {
    let rle = encode_rowmajor(mask, h as u32, w as u32)?;
    let counts = mask::rle_to_string(&rle);
    Ok(serde_json::json!({
        "image_id": image_id,
        "file_name": file_name,
        "category_id": category_id,
        "bbox": [bbox[0], bbox[1], bbox[2] - bbox[0], bbox[3] - bbox[1]],
        "score": score,
        "segmentation": {"size": [h, w], "counts": counts},
    }))
}

/// Joins COCO results files (JSON arrays, e.g. the shards of one run) into one list ordered by
/// image id, each image's detections in their original order. Every file is checked to be an
/// array of objects with an `image_id`.
pub fn merge_results(paths: &[std::path::PathBuf]) -> Result<Vec<serde_json::Value>> {
    let mut all: Vec<(u64, usize, serde_json::Value)> = Vec::new();
    for p in paths {
        let text =
            std::fs::read_to_string(p).with_context(|| format!("{}: cannot read", p.display()))?;
        let v: serde_json::Value = serde_json::from_str(&text)
            .map_err(|e| anyhow::anyhow!("{}: malformed JSON: {e}", p.display()))?;
        let Some(items) = v.as_array() else {
            bail!(
                "{}: a results file is a JSON array of detections",
                p.display()
            );
        };
        for (i, item) in items.iter().enumerate() {
            let Some(id) = item.get("image_id").and_then(|x| x.as_u64()) else {
                bail!("{}: detection #{i} has no integer image_id", p.display());
            };
            all.push((id, all.len(), item.clone()));
        }
    }
    all.sort_by_key(|(id, k, _)| (*id, *k));
    Ok(all.into_iter().map(|(_, _, v)| v).collect())
}

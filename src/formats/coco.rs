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
    // Transposed in 64x64 tiles, so that reads and writes both stay in cache.
    const T: usize = 64;
    let mut cm = vec![0u8; hu * wu];
    for y0 in (0..hu).step_by(T) {
        for x0 in (0..wu).step_by(T) {
            for x in x0..(x0 + T).min(wu) {
                let col = &mut cm[hu * x..hu * (x + 1)];
                for y in y0..(y0 + T).min(hu) {
                    col[y] = (mask_rm[y * wu + x] != 0) as u8;
                }
            }
        }
    }
    mask::encode(&cm, h, w).map_err(|e| anyhow::anyhow!("RLE encode: {e}"))
}

/// A row-major `h x w` plane thresholded (`> threshold`) straight to COCO RLE, with the mask's
/// area and inclusive `[left, top, right, bottom]` box (`[0; 4]` when empty): one pass over the
/// plane in row order, blocks of columns in parallel, no mask or transpose in between.
pub fn encode_threshold_rowmajor(
    plane: &[f32],
    h: usize,
    w: usize,
    threshold: f32,
) -> (hotcoco::Rle, u64, [i64; 4]) {
    use rayon::prelude::*;
    assert_eq!(plane.len(), h * w);
    const B: usize = 64;
    // Per column: run lengths, alternating from background (the first may be empty).
    let columns: Vec<Vec<u32>> = (0..w.div_ceil(B))
        .into_par_iter()
        .flat_map_iter(|block| {
            let (x0, x1) = (block * B, ((block + 1) * B).min(w));
            let n = x1 - x0;
            let mut runs: Vec<Vec<u32>> = vec![Vec::new(); n];
            let mut start = [0u32; B];
            // A row's foreground as bits, XOR the previous row's: the columns whose run ends.
            let mut prev = 0u64;
            for y in 0..h {
                let row = &plane[y * w + x0..y * w + x1];
                let bits = above_bits(row, threshold);
                let mut changed = bits ^ prev;
                while changed != 0 {
                    let j = changed.trailing_zeros() as usize;
                    changed &= changed - 1;
                    runs[j].push(y as u32 - start[j]);
                    start[j] = y as u32;
                }
                prev = bits;
            }
            for (j, r) in runs.iter_mut().enumerate() {
                r.push(h as u32 - start[j]);
            }
            runs
        })
        .collect();
    let mut counts = Vec::new();
    let (mut value, mut len) = (false, 0u32);
    let (mut area, mut bbox, mut any) = (0u64, [w as i64, h as i64, 0, 0], false);
    for (x, runs) in columns.iter().enumerate() {
        let mut y = 0i64;
        for (k, &n) in runs.iter().enumerate() {
            let v = k % 2 == 1;
            if v && n > 0 {
                area += n as u64;
                any = true;
                bbox[0] = bbox[0].min(x as i64);
                bbox[2] = x as i64;
                bbox[1] = bbox[1].min(y);
                bbox[3] = bbox[3].max(y + n as i64 - 1);
            }
            y += n as i64;
            if n == 0 {
                continue;
            }
            if v == value {
                len += n;
            } else {
                counts.push(len);
                value = v;
                len = n;
            }
        }
    }
    counts.push(len);
    let rle = hotcoco::Rle {
        h: h as u32,
        w: w as u32,
        counts,
    };
    (rle, area, if any { bbox } else { [0; 4] })
}

/// Bit `j` set where `row[j] > threshold` (`row.len() <= 64`).
fn above_bits(row: &[f32], threshold: f32) -> u64 {
    #[cfg(target_arch = "x86_64")]
    {
        // SSE (every x86-64): four compares and a move-mask at a time.
        use std::arch::x86_64::{_mm_cmpgt_ps, _mm_loadu_ps, _mm_movemask_ps, _mm_set1_ps};
        let mut bits = 0u64;
        let quads = row.len() / 4;
        // SAFETY: SSE is part of x86-64; each load reads 4 floats inside `row`.
        unsafe {
            let t = _mm_set1_ps(threshold);
            for q in 0..quads {
                let v = _mm_loadu_ps(row.as_ptr().add(4 * q));
                bits |= (_mm_movemask_ps(_mm_cmpgt_ps(v, t)) as u64) << (4 * q);
            }
        }
        for (j, &v) in row.iter().enumerate().skip(4 * quads) {
            bits |= ((v > threshold) as u64) << j;
        }
        bits
    }
    #[cfg(not(target_arch = "x86_64"))]
    {
        let mut bits = 0u64;
        for (j, &v) in row.iter().enumerate() {
            bits |= ((v > threshold) as u64) << j;
        }
        bits
    }
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

#[cfg(test)]
mod tests {
    use super::{encode_rowmajor, encode_threshold_rowmajor};
    use rand::{Rng, SeedableRng};

    #[test]
    fn threshold_encoding_equals_mask_then_rle() {
        let mut rng = rand::rngs::SmallRng::seed_from_u64(3);
        for &(h, w) in &[(1, 1), (7, 130), (97, 150), (64, 64), (3, 200)] {
            for density in [0.0, 0.3, 0.97, 1.0] {
                // Blobs: runs of rows and columns, so that runs cross column ends.
                let plane: Vec<f32> = (0..h * w)
                    .map(|i| {
                        let (y, x) = (i / w, i % w);
                        let on = rng.random_bool(density) || (density > 0.0 && (x + y) % 11 < 3);
                        if on { 1.0 } else { -1.0 }
                    })
                    .collect();
                let mask: Vec<u8> = plane.iter().map(|&v| (v > 0.0) as u8).collect();
                let (rle, area, bbox) = encode_threshold_rowmajor(&plane, h, w, 0.0);
                let want = encode_rowmajor(&mask, h as u32, w as u32).unwrap();
                assert_eq!(rle.counts, want.counts, "{h}x{w} at {density}");
                assert_eq!(area, mask.iter().map(|&v| v as u64).sum::<u64>());
                assert_eq!(bbox, crate::sam::amg::mask_to_box(&mask, h, w));
            }
        }
    }
}

//! SAM's automatic mask generator: a grid of single-point prompts over the image (and over
//! crops of it), each giving three masks; masks are kept by predicted IoU and stability score,
//! dropped when they touch a crop edge that is not an image edge, deduplicated by box NMS within
//! and across crops, optionally cleaned of small holes and islands, and returned as COCO-RLE
//! records with the reference's fields and order.

use super::transforms::apply_coords;
use crate::formats::coco::{decode_rowmajor, encode_rowmajor};
use crate::models::sam::model::Sam;
use crate::models::sam::prompt_encoder::PointPrompt;
use anyhow::{Result, bail};
use rayon::prelude::*;

/// The generator's settings; `Default` gives the reference defaults.
#[derive(Clone, Debug, PartialEq)]
pub struct AmgConfig {
    pub points_per_side: usize,
    pub points_per_batch: usize,
    pub pred_iou_thresh: f32,
    pub stability_score_thresh: f32,
    pub stability_score_offset: f32,
    pub box_nms_thresh: f32,
    pub crop_n_layers: usize,
    pub crop_nms_thresh: f32,
    pub crop_overlap_ratio: f64,
    pub crop_n_points_downscale_factor: usize,
    pub min_mask_region_area: usize,
}

impl Default for AmgConfig {
    fn default() -> Self {
        Self {
            points_per_side: 32,
            points_per_batch: 64,
            pred_iou_thresh: 0.88,
            stability_score_thresh: 0.95,
            stability_score_offset: 1.0,
            box_nms_thresh: 0.7,
            crop_n_layers: 0,
            crop_nms_thresh: 0.7,
            crop_overlap_ratio: 512.0 / 1500.0,
            crop_n_points_downscale_factor: 1,
            min_mask_region_area: 0,
        }
    }
}

/// One generated mask, as the reference's record.
#[derive(Clone, Debug)]
pub struct MaskRecord {
    /// The mask at the image's size (COCO RLE).
    pub rle: hotcoco::Rle,
    pub area: u64,
    /// `[x, y, w, h]` with `w = right - left` over inclusive pixel edges, as the reference.
    pub bbox: [i64; 4],
    pub predicted_iou: f32,
    pub point: [f64; 2],
    pub stability_score: f32,
    /// `[x, y, w, h]`.
    pub crop_box: [i64; 4],
}

impl MaskRecord {
    pub fn mask_rowmajor(&self) -> Vec<u8> {
        decode_rowmajor(&self.rle)
    }

    /// The record as the reference writes it (`segmentation` in compressed COCO RLE).
    pub fn to_json(&self) -> serde_json::Value {
        serde_json::json!({
            "segmentation": {"size": [self.rle.h, self.rle.w], "counts": hotcoco::mask::rle_to_string(&self.rle)},
            "area": self.area,
            "bbox": self.bbox,
            "predicted_iou": self.predicted_iou,
            "point_coords": [self.point],
            "stability_score": self.stability_score,
            "crop_box": self.crop_box,
        })
    }
}

/// `n x n` points in [0, 1]^2 at cell centres, x fastest (numpy's linspace arithmetic).
pub fn point_grid(n: usize) -> Vec<[f64; 2]> {
    let start = 1.0 / (2 * n) as f64;
    let stop = 1.0 - start;
    let side: Vec<f64> = (0..n)
        .map(|i| {
            if n > 1 && i == n - 1 {
                stop
            } else if n > 1 {
                i as f64 * ((stop - start) / (n - 1) as f64) + start
            } else {
                start
            }
        })
        .collect();
    let mut pts = Vec::with_capacity(n * n);
    for &y in &side {
        for &x in &side {
            pts.push([x, y]);
        }
    }
    pts
}

/// Crop boxes `[x0, y0, x1, y1]` and their layer: the whole image, then `(2^i)^2` overlapping
/// crops in layer i (as `generate_crop_boxes`).
pub fn crop_boxes(
    h: usize,
    w: usize,
    n_layers: usize,
    overlap_ratio: f64,
) -> Vec<([usize; 4], usize)> {
    let mut out = vec![([0, 0, w, h], 0)];
    let short = h.min(w) as f64;
    let crop_len = |orig: usize, n: usize, overlap: usize| -> usize {
        ((overlap as f64 * (n - 1) as f64 + orig as f64) / n as f64).ceil() as usize
    };
    for layer in 0..n_layers {
        let n = 1usize << (layer + 1);
        let overlap = (overlap_ratio * short * (2.0 / n as f64)) as usize;
        let cw = crop_len(w, n, overlap);
        let ch = crop_len(h, n, overlap);
        let x0s: Vec<usize> = (0..n).map(|i| (cw - overlap) * i).collect();
        let y0s: Vec<usize> = (0..n).map(|i| (ch - overlap) * i).collect();
        for &x0 in &x0s {
            for &y0 in &y0s {
                out.push(([x0, y0, (x0 + cw).min(w), (y0 + ch).min(h)], layer + 1));
            }
        }
    }
    out
}

/// Inclusive `[left, top, right, bottom]` of a row-major mask, `[0; 4]` when empty.
pub fn mask_to_box(m: &[u8], h: usize, w: usize) -> [i64; 4] {
    let (mut l, mut t, mut r, mut b) = (w, h, 0usize, 0usize);
    let mut any = false;
    for y in 0..h {
        let row = &m[y * w..(y + 1) * w];
        if let Some(first) = row.iter().position(|&v| v != 0) {
            let last = row.iter().rposition(|&v| v != 0).unwrap();
            any = true;
            l = l.min(first);
            r = r.max(last);
            t = t.min(y);
            b = b.max(y);
        }
    }
    if any {
        [l as i64, t as i64, r as i64, b as i64]
    } else {
        [0; 4]
    }
}

/// Greedy NMS as torchvision's: boxes by descending score (stable), a box is dropped when its
/// IoU (areas without +1) with a kept one exceeds `thresh`. Returns kept indices in score order.
pub fn nms(boxes: &[[f32; 4]], scores: &[f32], thresh: f32) -> Vec<usize> {
    let mut order: Vec<usize> = (0..boxes.len()).collect();
    order.sort_by(|&a, &b| {
        scores[b]
            .partial_cmp(&scores[a])
            .unwrap_or(std::cmp::Ordering::Equal)
    });
    let area = |b: &[f32; 4]| (b[2] - b[0]) * (b[3] - b[1]);
    let mut suppressed = vec![false; boxes.len()];
    let mut keep = Vec::new();
    for (oi, &i) in order.iter().enumerate() {
        if suppressed[i] {
            continue;
        }
        keep.push(i);
        let bi = &boxes[i];
        for &j in &order[oi + 1..] {
            if suppressed[j] {
                continue;
            }
            let bj = &boxes[j];
            let w = (bi[2].min(bj[2]) - bi[0].max(bj[0])).max(0.0);
            let h = (bi[3].min(bj[3]) - bi[1].max(bj[1])).max(0.0);
            let inter = w * h;
            let iou = inter / (area(bi) + area(bj) - inter);
            if iou > thresh {
                suppressed[j] = true;
            }
        }
    }
    keep
}

/// A row-major `h x w` mask as COCO RLE and its area.
fn encode(m: &[u8], h: usize, w: usize) -> Result<(hotcoco::Rle, u64)> {
    let rle = encode_rowmajor(m, h as u32, w as u32)?;
    let area = hotcoco::mask::area(&rle);
    Ok((rle, area))
}

struct Candidate {
    mask: Vec<u8>, // crop frame, row-major
    iou: f32,
    stability: f32,
    point: [f64; 2], // crop frame
    bbox: [i64; 4],  // crop frame, xyxy inclusive
}

/// Generates the masks of an 8-bit RGB `h x w` image. `progress` is called with
/// (points done, points in all) as work finishes.
pub fn generate(
    sam: &Sam,
    rgb: &[u8],
    h: usize,
    w: usize,
    cfg: &AmgConfig,
    progress: &(dyn Fn(usize, usize) + Sync),
) -> Result<Vec<MaskRecord>> {
    if cfg.points_per_side == 0 || cfg.points_per_batch == 0 {
        bail!("points_per_side and points_per_batch must be at least 1");
    }
    if cfg.crop_n_layers > 4 {
        bail!(
            "crop_n_layers {} is absurd (each layer quadruples the crops; use 0-4)",
            cfg.crop_n_layers
        );
    }
    if rgb.len() != h * w * 3 {
        bail!("image must be {h}x{w}x3 bytes, got {}", rgb.len());
    }
    let crops = crop_boxes(h, w, cfg.crop_n_layers, cfg.crop_overlap_ratio);
    let grids: Vec<Vec<[f64; 2]>> = (0..=cfg.crop_n_layers)
        .map(|i| {
            let n = cfg.points_per_side / cfg.crop_n_points_downscale_factor.max(1).pow(i as u32);
            point_grid(n.max(1))
        })
        .collect();
    let total: usize = crops.iter().map(|(_, l)| grids[*l].len()).sum();
    let done = std::sync::atomic::AtomicUsize::new(0);
    let mut records: Vec<MaskRecord> = Vec::new();
    for (crop, layer) in &crops {
        let [x0, y0, x1, y1] = *crop;
        let (ch, cw) = (y1 - y0, x1 - x0);
        let mut sub = Vec::with_capacity(ch * cw * 3);
        for y in y0..y1 {
            sub.extend_from_slice(&rgb[(y * w + x0) * 3..(y * w + x1) * 3]);
        }
        let emb = sam.set_image(&sub, ch, cw)?;
        let s = sam.image_encoder.input_size();
        let points: Vec<[f64; 2]> = grids[*layer]
            .iter()
            .map(|p| [p[0] * cw as f64, p[1] * ch as f64])
            .collect();
        let crop_f = [x0 as f32, y0 as f32, x1 as f32, y1 as f32];
        let img_f = [0.0f32, 0.0, w as f32, h as f32];
        // Points in batches (for the progress bar); each point on its own within a batch.
        let mut cands: Vec<Candidate> = Vec::new();
        for batch in points.chunks(cfg.points_per_batch) {
            let got: Vec<Result<Vec<Candidate>>> = batch
                .par_iter()
                .map(|&[px, py]| {
                    let (tx, ty) = apply_coords(px, py, (ch, cw), s);
                    let pt = PointPrompt {
                        x: tx,
                        y: ty,
                        label: 1,
                    };
                    let (low, iou) = sam.decode(&emb, &[pt], None, None, true)?;
                    let mut out = Vec::new();
                    for (m, &q) in low.iter().zip(&iou) {
                        if cfg.pred_iou_thresh > 0.0 && q <= cfg.pred_iou_thresh {
                            continue;
                        }
                        let logits = sam.postprocess(&emb, m);
                        let hi = cfg.stability_score_offset;
                        let inter = logits.iter().filter(|&&v| v > hi).count() as i32;
                        let union = logits.iter().filter(|&&v| v > -hi).count() as i32;
                        let stability = inter as f32 / union as f32;
                        if cfg.stability_score_thresh > 0.0
                            && stability.partial_cmp(&cfg.stability_score_thresh)
                                != Some(std::cmp::Ordering::Greater)
                            && stability != cfg.stability_score_thresh
                        {
                            continue;
                        }
                        let mask: Vec<u8> = logits.iter().map(|&v| (v > 0.0) as u8).collect();
                        let bbox = mask_to_box(&mask, ch, cw);
                        let near = (0..4).any(|k| {
                            let v = (bbox[k] + if k % 2 == 0 { x0 } else { y0 } as i64) as f32;
                            (v - crop_f[k]).abs() <= 20.0 && (v - img_f[k]).abs() > 20.0
                        });
                        if near {
                            continue;
                        }
                        out.push(Candidate {
                            mask,
                            iou: q,
                            stability,
                            point: [px, py],
                            bbox,
                        });
                    }
                    Ok(out)
                })
                .collect();
            for g in got {
                cands.extend(g?);
            }
            let d = done.fetch_add(batch.len(), std::sync::atomic::Ordering::Relaxed) + batch.len();
            progress(d, total);
        }
        let boxes: Vec<[f32; 4]> = cands.iter().map(|c| c.bbox.map(|v| v as f32)).collect();
        let scores: Vec<f32> = cands.iter().map(|c| c.iou).collect();
        let keep = nms(&boxes, &scores, cfg.box_nms_thresh);
        let mut cands: Vec<Option<Candidate>> = cands.into_iter().map(Some).collect();
        for i in keep {
            let c = cands[i].take().unwrap();
            let full = uncrop_mask(&c.mask, crop, h, w);
            let (rle, area) = encode(&full, h, w)?;
            let (ox, oy) = (x0 as i64, y0 as i64);
            let b = [
                c.bbox[0] + ox,
                c.bbox[1] + oy,
                c.bbox[2] + ox,
                c.bbox[3] + oy,
            ];
            records.push(MaskRecord {
                rle,
                area,
                bbox: [b[0], b[1], b[2] - b[0], b[3] - b[1]],
                predicted_iou: c.iou,
                point: [c.point[0] + x0 as f64, c.point[1] + y0 as f64],
                stability_score: c.stability,
                crop_box: [x0 as i64, y0 as i64, cw as i64, ch as i64],
            });
        }
    }
    if crops.len() > 1 {
        let boxes: Vec<[f32; 4]> = records.iter().map(|r| xywh_to_xyxy(r.bbox)).collect();
        let scores: Vec<f32> = records
            .iter()
            .map(|r| 1.0 / (r.crop_box[2] * r.crop_box[3]) as f32)
            .collect();
        let keep = nms(&boxes, &scores, cfg.crop_nms_thresh);
        records = pick(records, &keep);
    }
    if cfg.min_mask_region_area > 0 {
        records = remove_small_regions_all(
            records,
            cfg.min_mask_region_area,
            cfg.box_nms_thresh.max(cfg.crop_nms_thresh),
        )?;
    }
    Ok(records)
}

fn xywh_to_xyxy(b: [i64; 4]) -> [f32; 4] {
    [
        b[0] as f32,
        b[1] as f32,
        (b[0] + b[2]) as f32,
        (b[1] + b[3]) as f32,
    ]
}

fn pick<T>(v: Vec<T>, keep: &[usize]) -> Vec<T> {
    let mut v: Vec<Option<T>> = v.into_iter().map(Some).collect();
    keep.iter().map(|&i| v[i].take().unwrap()).collect()
}

fn uncrop_mask(m: &[u8], crop: &[usize; 4], h: usize, w: usize) -> Vec<u8> {
    let [x0, y0, x1, y1] = *crop;
    if x0 == 0 && y0 == 0 && x1 == w && y1 == h {
        return m.to_vec();
    }
    let cw = x1 - x0;
    let mut full = vec![0u8; h * w];
    for y in y0..y1 {
        full[y * w + x0..y * w + x1].copy_from_slice(&m[(y - y0) * cw..(y - y0 + 1) * cw]);
    }
    full
}

/// 8-connected components of the nonzero pixels, labels 1.. in raster order; with sizes.
fn components(m: &[u8], h: usize, w: usize) -> (Vec<u32>, Vec<usize>) {
    let mut labels = vec![0u32; h * w];
    let mut sizes = vec![0usize]; // label 0: background
    let mut stack = Vec::new();
    for start in 0..h * w {
        if m[start] == 0 || labels[start] != 0 {
            continue;
        }
        let id = sizes.len() as u32;
        sizes.push(0);
        labels[start] = id;
        stack.push(start);
        while let Some(p) = stack.pop() {
            sizes[id as usize] += 1;
            let (y, x) = ((p / w) as isize, (p % w) as isize);
            for dy in -1..=1isize {
                for dx in -1..=1isize {
                    let (ny, nx) = (y + dy, x + dx);
                    if ny < 0 || nx < 0 || ny >= h as isize || nx >= w as isize {
                        continue;
                    }
                    let q = ny as usize * w + nx as usize;
                    if m[q] != 0 && labels[q] == 0 {
                        labels[q] = id;
                        stack.push(q);
                    }
                }
            }
        }
    }
    (labels, sizes)
}

/// `remove_small_regions`: fills holes (`holes`) or drops islands smaller than `area`
/// (keeping the largest island when all are small). Returns the mask and whether it changed.
pub fn remove_small_regions(
    m: &[u8],
    h: usize,
    w: usize,
    area: usize,
    holes: bool,
) -> (Vec<u8>, bool) {
    let working: Vec<u8> = m.iter().map(|&v| ((v != 0) ^ holes) as u8).collect();
    let (labels, sizes) = components(&working, h, w);
    let small: Vec<bool> = sizes
        .iter()
        .enumerate()
        .map(|(i, &s)| i > 0 && s < area)
        .collect();
    if !small.iter().any(|&s| s) {
        return (m.to_vec(), false);
    }
    let fill: Vec<bool> = if holes {
        (0..sizes.len()).map(|i| i == 0 || small[i]).collect()
    } else {
        let mut f: Vec<bool> = (0..sizes.len()).map(|i| i != 0 && !small[i]).collect();
        if !f.iter().any(|&v| v) {
            let largest =
                (1..sizes.len()).fold(1, |best, i| if sizes[i] > sizes[best] { i } else { best });
            f[largest] = true;
        }
        f
    };
    (
        labels.iter().map(|&l| fill[l as usize] as u8).collect(),
        true,
    )
}

fn remove_small_regions_all(
    records: Vec<MaskRecord>,
    area: usize,
    thresh: f32,
) -> Result<Vec<MaskRecord>> {
    if records.is_empty() {
        return Ok(records);
    }
    let cleaned: Vec<(Vec<u8>, bool)> = records
        .par_iter()
        .map(|r| {
            let (h, w) = (r.rle.h as usize, r.rle.w as usize);
            let (m, c1) = remove_small_regions(&r.mask_rowmajor(), h, w, area, true);
            let (m, c2) = remove_small_regions(&m, h, w, area, false);
            (m, c1 || c2)
        })
        .collect();
    let boxes: Vec<[f32; 4]> = cleaned
        .iter()
        .zip(&records)
        .map(|((m, _), r)| mask_to_box(m, r.rle.h as usize, r.rle.w as usize).map(|v| v as f32))
        .collect();
    let scores: Vec<f32> = cleaned
        .iter()
        .map(|(_, c)| if *c { 0.0 } else { 1.0 })
        .collect();
    let keep = nms(&boxes, &scores, thresh);
    let mut records = records;
    for &i in &keep {
        if cleaned[i].1 {
            let r = &mut records[i];
            (r.rle, r.area) = encode(&cleaned[i].0, r.rle.h as usize, r.rle.w as usize)?;
            let b = boxes[i].map(|v| v as i64);
            // The reference stores the new xyxy box; reported as xywh like the others.
            r.bbox = [b[0], b[1], b[2] - b[0], b[3] - b[1]];
        }
    }
    Ok(pick(records, &keep))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn grid_and_crops_follow_the_reference() {
        let g = point_grid(4);
        assert_eq!(g.len(), 16);
        assert_eq!(g[0], [0.125, 0.125]);
        assert_eq!(g[1], [0.375, 0.125]);
        assert_eq!(g[15], [0.875, 0.875]);
        assert_eq!(point_grid(1), vec![[0.5, 0.5]]);
        let c = crop_boxes(600, 800, 1, 512.0 / 1500.0);
        assert_eq!(c.len(), 5);
        // overlap = int(0.3413 * 600 * 1) = 204; crop_w = ceil((204 + 800) / 2) = 502
        assert_eq!(c[1], ([0, 0, 502, 402], 1));
        assert_eq!(c[2], ([0, 198, 502, 600], 1));
        assert_eq!(c[3], ([298, 0, 800, 402], 1));
    }

    #[test]
    fn boxes_rle_and_nms() {
        let (h, w) = (4, 5);
        let mut m = vec![0u8; h * w];
        m[w + 1] = 1;
        m[2 * w + 3] = 1;
        assert_eq!(mask_to_box(&m, h, w), [1, 1, 3, 2]);
        assert_eq!(mask_to_box(&vec![0; h * w], h, w), [0; 4]);
        // column-major: column 1 has row 1 set -> index 1*4+1 = 5; column 3 row 2 -> 14
        let (rle, area) = encode(&m, h, w).unwrap();
        assert_eq!((rle.counts, area), (vec![5, 1, 8, 1, 5], 2));
        let keep = nms(
            &[[0., 0., 10., 10.], [1., 1., 10., 10.], [20., 20., 30., 30.]],
            &[0.5, 0.9, 0.1],
            0.7,
        );
        assert_eq!(keep, vec![1, 2]);
    }

    #[test]
    fn small_regions() {
        // a 5x5 square with a one-pixel hole, plus a one-pixel island
        let (h, w) = (7, 8);
        let mut m = vec![0u8; h * w];
        for y in 1..6 {
            for x in 1..6 {
                m[y * w + x] = 1;
            }
        }
        m[3 * w + 3] = 0;
        m[7] = 1;
        let (filled, c) = remove_small_regions(&m, h, w, 2, true);
        assert!(c && filled[3 * w + 3] == 1);
        let (clean, c) = remove_small_regions(&filled, h, w, 2, false);
        assert!(c && clean[7] == 0 && clean[w + 1] == 1);
        let (_, c) = remove_small_regions(&clean, h, w, 2, false);
        assert!(!c);
    }
}

//! The automatic mask generator of SAM and SAM 2: a grid of single-point prompts over the
//! image (and over crops of it), each giving three masks (SAM 2: optionally one, and optionally
//! refined once more with its own logits as a mask prompt, `use_m2m`); masks are kept by
//! predicted IoU and stability score,
//! dropped when they touch a crop edge that is not an image edge, deduplicated by box NMS within
//! and across crops, optionally cleaned of small holes and islands, and returned as COCO-RLE
//! records with the reference's fields and order.

use super::amg::{
    box_near_crop_edge, crop_boxes, encode, mask_to_box, pick, point_grid, remove_small_regions,
    stability_score, uncrop_mask, xywh_to_xyxy,
};
use super::any_model::AnySam;
use super::predictor::Prompt;
use super::sam2_predictor::{Postprocess, clamp_low_res};
use super::transforms::apply_coords;
use crate::formats::coco::decode_rowmajor;
use crate::models::sam::model::ImageEmbedding;
use crate::models::sam::prompt_encoder::PointPrompt;
use crate::ops::boxes::nms;
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
    /// SAM 2: logits above this are the mask (SAM: 0).
    pub mask_threshold: f32,
    /// SAM 2: refine each mask once with its own low-resolution logits as a mask prompt.
    pub use_m2m: bool,
    /// Three masks per point (SAM always; SAM 2 by default).
    pub multimask_output: bool,
}

impl AmgConfig {
    /// `SAM2AutomaticMaskGenerator`'s defaults (`pred_iou_thresh` 0.8).
    pub fn sam2() -> Self {
        Self {
            pred_iou_thresh: 0.8,
            ..Self::default()
        }
    }
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
            mask_threshold: 0.0,
            use_m2m: false,
            multimask_output: true,
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
    sam: &AnySam,
    rgb: &[u8],
    h: usize,
    w: usize,
    cfg: &AmgConfig,
    progress: &(dyn Fn(usize, usize) + Sync),
) -> Result<Vec<MaskRecord>> {
    generate_from(sam, rgb, h, w, cfg, None, progress)
}

/// [`generate`] with the whole image's embedding already computed (by `sam` for this image),
/// so that the encoder runs only for the smaller crops, if any.
pub fn generate_from(
    sam: &AnySam,
    rgb: &[u8],
    h: usize,
    w: usize,
    cfg: &AmgConfig,
    whole_image: Option<&ImageEmbedding>,
    progress: &(dyn Fn(usize, usize) + Sync),
) -> Result<Vec<MaskRecord>> {
    if let Some(e) = whole_image
        && e.original_size != (h, w)
    {
        bail!(
            "the embedding is of a {}x{} image, not {w}x{h}",
            e.original_size.1,
            e.original_size.0
        );
    }
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
    if let AnySam::Sam(m) = sam
        && (cfg.use_m2m || !cfg.multimask_output || cfg.mask_threshold != 0.0)
    {
        bail!(
            "use_m2m, single-mask output and mask_threshold are SAM 2 generator settings; {} is a SAM model",
            m.variant
        );
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
    let report = |n: usize| {
        let d = done.fetch_add(n, std::sync::atomic::Ordering::Relaxed) + n;
        progress(d, total);
    };
    let mut records: Vec<MaskRecord> = Vec::new();
    for (crop, layer) in &crops {
        let whole = whole_image.filter(|_| *crop == [0, 0, w, h]);
        records.extend(process_crop(
            sam,
            (rgb, h, w),
            crop,
            &grids[*layer],
            cfg,
            whole,
            &report,
        )?);
    }
    if crops.len() > 1 {
        // Across crops, prefer masks from smaller crops.
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

/// One crop: its embedding, the grid's points in batches, NMS within the crop, and the
/// survivors as records in image coordinates (`_process_crop`).
fn process_crop(
    sam: &AnySam,
    (rgb, h, w): (&[u8], usize, usize),
    crop: &[usize; 4],
    grid: &[[f64; 2]],
    cfg: &AmgConfig,
    whole: Option<&ImageEmbedding>,
    report: &(dyn Fn(usize) + Sync),
) -> Result<Vec<MaskRecord>> {
    let [x0, y0, x1, y1] = *crop;
    let (ch, cw) = (y1 - y0, x1 - x0);
    let computed;
    let emb = match whole {
        Some(e) => e,
        None => {
            let mut sub = Vec::with_capacity(ch * cw * 3);
            for y in y0..y1 {
                sub.extend_from_slice(&rgb[(y * w + x0) * 3..(y * w + x1) * 3]);
            }
            computed = sam.set_image(&sub, ch, cw)?;
            &computed
        }
    };
    let points: Vec<[f64; 2]> = grid
        .iter()
        .map(|p| [p[0] * cw as f64, p[1] * ch as f64])
        .collect();
    let frame = CropFrame {
        crop: [x0 as f32, y0 as f32, x1 as f32, y1 as f32],
        image: [0.0, 0.0, w as f32, h as f32],
        size: (ch, cw),
    };
    let mut cands: Vec<Candidate> = Vec::new();
    for batch in points.chunks(cfg.points_per_batch) {
        cands.extend(process_batch(sam, emb, batch, &frame, cfg)?);
        report(batch.len());
    }
    let boxes: Vec<[f32; 4]> = cands.iter().map(|c| c.bbox.map(|v| v as f32)).collect();
    let scores: Vec<f32> = cands.iter().map(|c| c.iou).collect();
    let keep = nms(&boxes, &scores, cfg.box_nms_thresh);
    let (ox, oy) = (x0 as i64, y0 as i64);
    pick(cands, &keep)
        .into_iter()
        .map(|c| {
            let full = uncrop_mask(&c.mask, crop, h, w);
            let (rle, area) = encode(&full, h, w)?;
            let b = [
                c.bbox[0] + ox,
                c.bbox[1] + oy,
                c.bbox[2] + ox,
                c.bbox[3] + oy,
            ];
            Ok(MaskRecord {
                rle,
                area,
                bbox: [b[0], b[1], b[2] - b[0], b[3] - b[1]],
                predicted_iou: c.iou,
                point: [c.point[0] + x0 as f64, c.point[1] + y0 as f64],
                stability_score: c.stability,
                crop_box: [ox, oy, cw as i64, ch as i64],
            })
        })
        .collect()
}

/// Where a crop sits in the image.
struct CropFrame {
    crop: [f32; 4],
    image: [f32; 4],
    /// `(h, w)` of the crop.
    size: (usize, usize),
}

/// Each mask's logits and predicted IoU, and the point as the record keeps it.
type PointMasks = (Vec<(Vec<f32>, f32)>, [f64; 2]);

/// The masks of one point (crop-frame pixels) as logits at the crop's size, with their
/// predicted IoU and the point as the record keeps it.
fn point_masks(
    sam: &AnySam,
    emb: &ImageEmbedding,
    [px, py]: [f64; 2],
    (ch, cw): (usize, usize),
    cfg: &AmgConfig,
) -> Result<PointMasks> {
    match sam {
        AnySam::Sam(sam) => {
            let s = sam.image_encoder.input_size();
            let (tx, ty) = apply_coords(px, py, (ch, cw), s);
            let pt = PointPrompt {
                x: tx,
                y: ty,
                label: 1,
            };
            let (low, iou) = sam.decode(emb, &[pt], None, None, true)?;
            let masks = low
                .iter()
                .zip(iou)
                .map(|(m, q)| (sam.postprocess(emb, m), q))
                .collect();
            Ok((masks, [px, py]))
        }
        AnySam::Sam2(sam) => {
            // The reference holds the points in f32 from here on.
            let (px, py) = (px as f32 as f64, py as f32 as f64);
            let prompt = Prompt {
                points: vec![(px, py, 1)],
                ..Default::default()
            };
            // The generator's predictor removes holes and sprinkles up to the region area.
            let post = Postprocess {
                max_hole_area: cfg.min_mask_region_area,
                max_sprinkle_area: cfg.min_mask_region_area,
                ..Default::default()
            };
            let (low, _) = sam.predict_low_res(emb, &prompt, cfg.multimask_output)?;
            if !cfg.use_m2m {
                let first = sam.finish(emb, low, &post);
                let masks = first.logits.into_iter().zip(first.scores).collect();
                return Ok((masks, [px, py]));
            }
            // Each mask refined once with its own low-res logits as the mask prompt; the first
            // pass's full-size masks are not needed.
            let mut masks = Vec::with_capacity(low.masks.len());
            for m in &low.masks {
                let again = Prompt {
                    mask_input: Some(clamp_low_res(m)),
                    ..prompt.clone()
                };
                let (low, _) = sam.predict_low_res(emb, &again, false)?;
                let mut refined = sam.finish(emb, low, &post);
                masks.push((refined.logits.swap_remove(0), refined.scores[0]));
            }
            Ok((masks, [px, py]))
        }
    }
}

/// One batch of points (crop-frame pixels), each on its own, in parallel: the masks of each
/// point, kept by predicted IoU, stability and the crop-edge test (`_process_batch`).
fn process_batch(
    sam: &AnySam,
    emb: &ImageEmbedding,
    batch: &[[f64; 2]],
    frame: &CropFrame,
    cfg: &AmgConfig,
) -> Result<Vec<Candidate>> {
    let (ch, cw) = frame.size;
    let t = cfg.mask_threshold;
    let got: Vec<Result<Vec<Candidate>>> = batch
        .par_iter()
        .map(|&p| {
            let (masks, point) = point_masks(sam, emb, p, (ch, cw), cfg)?;
            let mut out = Vec::new();
            for (mut logits, q) in masks {
                if cfg.pred_iou_thresh > 0.0 && q <= cfg.pred_iou_thresh {
                    continue;
                }
                if t != 0.0 {
                    logits.iter_mut().for_each(|v| *v -= t);
                }
                let stability = stability_score(&logits, cfg.stability_score_offset);
                if cfg.stability_score_thresh > 0.0
                    && stability.partial_cmp(&cfg.stability_score_thresh)
                        != Some(std::cmp::Ordering::Greater)
                    && stability != cfg.stability_score_thresh
                {
                    continue;
                }
                let mask: Vec<u8> = logits.iter().map(|&v| (v > 0.0) as u8).collect();
                let bbox = mask_to_box(&mask, ch, cw);
                if box_near_crop_edge(bbox, frame.crop, frame.image) {
                    continue;
                }
                out.push(Candidate {
                    mask,
                    iou: q,
                    stability,
                    point,
                    bbox,
                });
            }
            Ok(out)
        })
        .collect();
    let mut cands = Vec::new();
    for g in got {
        cands.extend(g?);
    }
    Ok(cands)
}

/// Small holes filled and small islands removed from every mask; changed masks lose NMS ties
/// to unchanged ones (`postprocess_small_regions`).
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

//! From class and mask logits to the three outputs, as `Mask2FormerImageProcessor`'s
//! `post_process_panoptic_segmentation`, `post_process_instance_segmentation` and
//! `post_process_semantic_segmentation` do them: the mask logits are first resized to
//! 384 x 384 (bilinear), as the reference does for every model, then to the photo.
//!
//! Where the reference resizes a whole `[queries or classes, H, W]` stack to the photo, the
//! values of each output pixel are interpolated from the same taps on the fly (same formula,
//! same rounding) and only the per-pixel decisions are kept.

use super::transformer_decoder::Predictions;
use crate::ops::resize::{Tap, bilinear, linear_taps, nearest};
use rayon::prelude::*;

/// The reference's intermediate mask size.
pub const MASK_SIZE: usize = 384;

/// Thresholds of the panoptic and instance outputs (the reference's defaults: 0.5, 0.5, 0.8).
#[derive(Clone, Debug)]
pub struct PostprocessConfig {
    /// Class score a query needs to be kept.
    pub threshold: f32,
    /// Mask probability that counts as inside.
    pub mask_threshold: f32,
    /// Share of a query's mask it must keep after the pixel-wise competition.
    pub overlap_mask_area_threshold: f32,
    /// Classes whose segments merge into one per image (stuff).
    pub label_ids_to_fuse: Vec<usize>,
}

impl Default for PostprocessConfig {
    fn default() -> Self {
        Self {
            threshold: 0.5,
            mask_threshold: 0.5,
            overlap_mask_area_threshold: 0.8,
            label_ids_to_fuse: Vec::new(),
        }
    }
}

/// One segment of a panoptic or instance output.
#[derive(Clone, Debug, PartialEq)]
pub struct Segment {
    /// Panoptic: 1.. as in the map; instance: 0.. in output order.
    pub id: u32,
    pub label_id: usize,
    pub was_fused: bool,
    pub score: f32,
}

/// A panoptic output: segment ids per pixel (0 where no segment), and the segments.
#[derive(Clone, Debug)]
pub struct Panoptic {
    pub ids: Vec<u32>,
    pub height: usize,
    pub width: usize,
    pub segments: Vec<Segment>,
}

/// An instance output: one binary mask per segment.
#[derive(Clone, Debug)]
pub struct Instances {
    pub masks: Vec<Vec<u8>>,
    pub height: usize,
    pub width: usize,
    pub segments: Vec<Segment>,
}

fn softmax(row: &[f32]) -> Vec<f32> {
    let max = row.iter().copied().fold(f32::NEG_INFINITY, f32::max);
    let e: Vec<f32> = row.iter().map(|&v| (v - max).exp()).collect();
    let s: f32 = e.iter().sum();
    e.iter().map(|v| v / s).collect()
}

fn sigmoid(x: f32) -> f32 {
    1.0 / (1.0 + (-x).exp())
}

/// The mask logits resized to 384 x 384.
fn masks_384(p: &Predictions) -> Vec<f32> {
    bilinear(
        &p.mask_logits,
        p.queries,
        p.mask_size,
        (MASK_SIZE, MASK_SIZE),
        false,
    )
}

/// Calls `f(pixel, values)` for every pixel of the `(h, w)` output, `values[k]` being plane
/// `k` of `planes [n, 384, 384]` bilinearly resampled there (`F.interpolate`'s formula), rows
/// in parallel; `f` returns the pixel's result.
fn per_pixel<T: Send>(
    planes: &[f32],
    n: usize,
    (h, w): (usize, usize),
    f: impl Fn(&[f32]) -> T + Sync,
) -> Vec<T> {
    let ty: Vec<Tap> = linear_taps(MASK_SIZE, h, false);
    let tx: Vec<Tap> = linear_taps(MASK_SIZE, w, false);
    let plane = MASK_SIZE * MASK_SIZE;
    (0..h)
        .into_par_iter()
        .flat_map_iter(|y| {
            let (y0, y1, wy0, wy1) = ty[y];
            let mut vals = vec![0.0f32; n];
            let f = &f;
            let tx = &tx;
            (0..w)
                .map(move |x| {
                    let (x0, x1, wx0, wx1) = tx[x];
                    for (k, v) in vals.iter_mut().enumerate() {
                        let p = &planes[k * plane..];
                        let a = p[y0 * MASK_SIZE + x0] * wx0 + p[y0 * MASK_SIZE + x1] * wx1;
                        let b = p[y1 * MASK_SIZE + x0] * wx0 + p[y1 * MASK_SIZE + x1] * wx1;
                        *v = a * wy0 + b * wy1;
                    }
                    f(&vals)
                })
                .collect::<Vec<T>>()
        })
        .collect()
}

/// Index of the first maximum (`argmax`'s tie rule).
fn argmax(v: &[f32]) -> usize {
    let mut best = 0;
    for (i, &x) in v.iter().enumerate() {
        if x > v[best] {
            best = i;
        }
    }
    best
}

/// `post_process_semantic_segmentation`: a class index per pixel of the `(h, w)` photo.
pub fn semantic(p: &Predictions, size: (usize, usize)) -> Vec<u32> {
    let m = masks_384(p);
    let c = p.classes;
    let plane = MASK_SIZE * MASK_SIZE;
    // [classes, 384^2] = sum over queries of class probability x mask probability
    let mut seg = vec![0.0f32; c * plane];
    for q in 0..p.queries {
        let probs = softmax(&p.class_logits[q * (c + 1)..(q + 1) * (c + 1)]);
        let mp: Vec<f32> = m[q * plane..(q + 1) * plane]
            .iter()
            .map(|&x| sigmoid(x))
            .collect();
        seg.par_chunks_mut(plane)
            .zip(probs[..c].par_iter())
            .for_each(|(row, &pc)| row.iter_mut().zip(&mp).for_each(|(s, &v)| *s += pc * v));
    }
    per_pixel(&seg, c, size, |v| argmax(v) as u32)
}

/// `post_process_panoptic_segmentation`.
pub fn panoptic(p: &Predictions, size: (usize, usize), cfg: &PostprocessConfig) -> Panoptic {
    let c = p.classes;
    let plane = MASK_SIZE * MASK_SIZE;
    let m = masks_384(p);
    // Queries kept: not "no object", score above the threshold.
    let mut kept: Vec<(usize, usize, f32)> = Vec::new();
    for q in 0..p.queries {
        let probs = softmax(&p.class_logits[q * (c + 1)..(q + 1) * (c + 1)]);
        let label = argmax(&probs);
        if label != c && probs[label] > cfg.threshold {
            kept.push((q, label, probs[label]));
        }
    }
    let (h, w) = size;
    if kept.is_empty() {
        return Panoptic {
            ids: vec![0; h * w],
            height: h,
            width: w,
            segments: Vec::new(),
        };
    }
    let k = kept.len();
    let mut probs = vec![0.0f32; k * plane];
    for (i, &(q, _, _)) in kept.iter().enumerate() {
        probs[i * plane..(i + 1) * plane]
            .iter_mut()
            .zip(&m[q * plane..(q + 1) * plane])
            .for_each(|(d, &x)| *d = sigmoid(x));
    }
    // Per pixel: the winning query (probability x score) and which queries reach the mask
    // threshold (after the same weighting, as the reference counts them).
    let scores: Vec<f32> = kept.iter().map(|&(_, _, s)| s).collect();
    let thr = cfg.mask_threshold;
    let pixels = per_pixel(&probs, k, size, |v| {
        let weighted: Vec<f32> = v.iter().zip(&scores).map(|(a, s)| a * s).collect();
        let over: Vec<bool> = weighted.iter().map(|&x| x >= thr).collect();
        (argmax(&weighted), over)
    });
    let mut area = vec![0u64; k];
    let mut original = vec![0u64; k];
    for (winner, over) in &pixels {
        area[*winner] += 1;
        for (o, &b) in original.iter_mut().zip(over) {
            *o += b as u64;
        }
    }
    let mut ids = vec![0u32; k];
    let mut segments = Vec::new();
    let mut current = 0u32;
    let mut fused: std::collections::HashMap<usize, u32> = Default::default();
    for (i, &(_, label, score)) in kept.iter().enumerate() {
        let exists = area[i] > 0
            && original[i] > 0
            && (area[i] as f64 / original[i] as f64) > cfg.overlap_mask_area_threshold as f64;
        if !exists {
            continue;
        }
        let fuse = cfg.label_ids_to_fuse.contains(&label);
        let id = match fused.get(&label) {
            Some(&id) => id,
            None => {
                current += 1;
                current
            }
        };
        ids[i] = id;
        segments.push(Segment {
            id,
            label_id: label,
            was_fused: fuse,
            score,
        });
        if fuse {
            fused.insert(label, id);
        }
    }
    Panoptic {
        ids: pixels.iter().map(|(winner, _)| ids[*winner]).collect(),
        height: h,
        width: w,
        segments,
    }
}

/// `post_process_instance_segmentation` with binary maps: the `queries` best (query, class)
/// pairs by class probability, each scored by that probability times its mask's mean
/// probability inside the mask; kept when the mask is not empty and the score reaches
/// `threshold`. Best first (the reference leaves the order unspecified).
pub fn instances(p: &Predictions, size: (usize, usize), cfg: &PostprocessConfig) -> Instances {
    let c = p.classes;
    let plane = MASK_SIZE * MASK_SIZE;
    let m = masks_384(p);
    let mut pairs: Vec<(f32, usize, usize)> = Vec::with_capacity(p.queries * c);
    for q in 0..p.queries {
        let probs = softmax(&p.class_logits[q * (c + 1)..(q + 1) * (c + 1)]);
        pairs.extend(probs[..c].iter().enumerate().map(|(l, &s)| (s, q, l)));
    }
    // top-k by score (ties: the lower flat index, as a stable sort)
    pairs.sort_by(|a, b| b.0.total_cmp(&a.0));
    pairs.truncate(p.queries);
    let (h, w) = size;
    let mut found: Vec<(f32, usize, Vec<u8>)> = Vec::new();
    for &(s, q, label) in &pairs {
        let logits = &m[q * plane..(q + 1) * plane];
        let (mut inside, mut sum) = (0.0f64, 0.0f64);
        for &x in logits {
            if x > 0.0 {
                inside += 1.0;
                sum += sigmoid(x) as f64;
            }
        }
        let score = s * (sum / (inside + 1e-6)) as f32;
        if inside == 0.0 || score < cfg.threshold {
            continue;
        }
        let bin: Vec<f32> = logits.iter().map(|&x| (x > 0.0) as u8 as f32).collect();
        let mask: Vec<u8> = nearest(&bin, 1, (MASK_SIZE, MASK_SIZE), (h, w))
            .iter()
            .map(|&v| (v > 0.5) as u8)
            .collect();
        if mask.iter().all(|&v| v == 0) {
            continue;
        }
        found.push((score, label, mask));
    }
    found.sort_by(|a, b| b.0.total_cmp(&a.0));
    let segments = found
        .iter()
        .enumerate()
        .map(|(i, (score, label, _))| Segment {
            id: i as u32,
            label_id: *label,
            was_fused: false,
            score: *score,
        })
        .collect();
    Instances {
        masks: found.into_iter().map(|(_, _, m)| m).collect(),
        height: h,
        width: w,
        segments,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Two queries of class 1, one on each half of a 4x4 mask map.
    fn halves() -> Predictions {
        let mut mask_logits = vec![0.0f32; 2 * 16];
        for (i, v) in mask_logits.iter_mut().enumerate() {
            let (q, x) = (i / 16, i % 4);
            *v = if (x < 2) == (q == 0) { 10.0 } else { -10.0 };
        }
        Predictions {
            class_logits: vec![0.0, 5.0, -5.0, 0.0, 5.0, -5.0],
            mask_logits,
            queries: 2,
            classes: 2,
            mask_size: (4, 4),
        }
    }

    #[test]
    fn stuff_segments_fuse_into_one_id() {
        let p = halves();
        let apart = panoptic(&p, (8, 8), &PostprocessConfig::default());
        let ids: Vec<u32> = apart.segments.iter().map(|s| s.id).collect();
        assert_eq!(ids, [1, 2]);
        assert_eq!((apart.ids[0], apart.ids[7]), (1, 2));
        let cfg = PostprocessConfig {
            label_ids_to_fuse: vec![1],
            ..Default::default()
        };
        let fused = panoptic(&p, (8, 8), &cfg);
        // the reference lists the fused query again under the same id
        let ids: Vec<u32> = fused.segments.iter().map(|s| s.id).collect();
        assert_eq!(ids, [1, 1]);
        assert!(fused.segments.iter().all(|s| s.was_fused));
        assert!(fused.ids.iter().all(|&v| v == 1));
    }

    #[test]
    fn instances_and_semantic_follow_the_masks() {
        let p = halves();
        let inst = instances(&p, (8, 8), &PostprocessConfig::default());
        assert_eq!(inst.segments.len(), 2);
        let left = inst.masks.iter().find(|m| m[0] == 1).expect("left mask");
        assert_eq!(left.iter().map(|&v| v as usize).sum::<usize>(), 32);
        assert!(semantic(&p, (8, 8)).iter().all(|&c| c == 1));
    }
}

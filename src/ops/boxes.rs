//! Box operations on `[x0, y0, x1, y1]` boxes, as `torchvision.ops` and torchvision's detection
//! utilities: area, pairwise IoU, greedy NMS, per-class (batched) NMS, clipping, small-box
//! removal, and the `BoxCoder` decoding of regression deltas.

/// `(x1 - x0) * (y1 - y0)`, areas without the +1 (torchvision's convention).
pub fn box_area(b: &[f32; 4]) -> f32 {
    (b[2] - b[0]) * (b[3] - b[1])
}

/// IoU of two boxes.
pub fn iou(a: &[f32; 4], b: &[f32; 4]) -> f32 {
    let w = (a[2].min(b[2]) - a[0].max(b[0])).max(0.0);
    let h = (a[3].min(b[3]) - a[1].max(b[1])).max(0.0);
    let inter = w * h;
    inter / (box_area(a) + box_area(b) - inter)
}

/// Pairwise IoU `[a.len(), b.len()]`, row-major (`torchvision.ops.box_iou`).
pub fn box_iou(a: &[[f32; 4]], b: &[[f32; 4]]) -> Vec<f32> {
    a.iter()
        .flat_map(|x| b.iter().map(move |y| iou(x, y)))
        .collect()
}

/// Greedy NMS as torchvision's: boxes by descending score (stable sort), a box is dropped when
/// its IoU with a kept one exceeds `thresh`. Returns the kept indices in score order.
pub fn nms(boxes: &[[f32; 4]], scores: &[f32], thresh: f32) -> Vec<usize> {
    assert_eq!(boxes.len(), scores.len(), "one score per box");
    let mut order: Vec<usize> = (0..boxes.len()).collect();
    order.sort_by(|&a, &b| scores[b].total_cmp(&scores[a]));
    let areas: Vec<f32> = boxes.iter().map(box_area).collect();
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
            if inter / (areas[i] + areas[j] - inter) > thresh {
                suppressed[j] = true;
            }
        }
    }
    keep
}

/// NMS within each category (`idxs[i]` is box i's): boxes of different categories never
/// suppress each other. Returns the kept indices by descending score, as
/// `torchvision.ops.batched_nms` on the CPU: up to 1000 boxes it shifts each category's boxes
/// apart by `idx * (max coordinate + 1)` and runs one NMS (the float rounding of the shifted
/// coordinates included); above that it runs NMS per category.
pub fn batched_nms(boxes: &[[f32; 4]], scores: &[f32], idxs: &[i64], thresh: f32) -> Vec<usize> {
    assert!(boxes.len() == scores.len() && boxes.len() == idxs.len());
    if boxes.is_empty() {
        return Vec::new();
    }
    if boxes.len() * 4 <= 4000 {
        let max = boxes
            .iter()
            .flat_map(|b| b.iter().copied())
            .fold(f32::NEG_INFINITY, f32::max);
        let shifted: Vec<[f32; 4]> = boxes
            .iter()
            .zip(idxs)
            .map(|(b, &i)| {
                let o = i as f32 * (max + 1.0);
                b.map(|v| v + o)
            })
            .collect();
        return nms(&shifted, scores, thresh);
    }
    let mut classes: Vec<i64> = idxs.to_vec();
    classes.sort_unstable();
    classes.dedup();
    let mut keep = Vec::new();
    for c in classes {
        let members: Vec<usize> = (0..boxes.len()).filter(|&i| idxs[i] == c).collect();
        let b: Vec<[f32; 4]> = members.iter().map(|&i| boxes[i]).collect();
        let s: Vec<f32> = members.iter().map(|&i| scores[i]).collect();
        keep.extend(nms(&b, &s, thresh).into_iter().map(|k| members[k]));
    }
    keep.sort_by(|&a, &b| scores[b].total_cmp(&scores[a]).then(a.cmp(&b)));
    keep
}

/// Clamps every box into an `h x w` image (`clip_boxes_to_image`).
pub fn clip_boxes(boxes: &mut [[f32; 4]], (h, w): (usize, usize)) {
    let (h, w) = (h as f32, w as f32);
    for b in boxes {
        b[0] = b[0].clamp(0.0, w);
        b[1] = b[1].clamp(0.0, h);
        b[2] = b[2].clamp(0.0, w);
        b[3] = b[3].clamp(0.0, h);
    }
}

/// Indices of the boxes whose sides are both at least `min_size` (`remove_small_boxes`).
pub fn keep_min_size(boxes: &[[f32; 4]], min_size: f32) -> Vec<usize> {
    (0..boxes.len())
        .filter(|&i| {
            let b = &boxes[i];
            b[2] - b[0] >= min_size && b[3] - b[1] >= min_size
        })
        .collect()
}

/// Indices of the `k` largest values, largest first (ties in index order), as `topk`.
pub fn top_k(values: &[f32], k: usize) -> Vec<usize> {
    let mut idx: Vec<usize> = (0..values.len()).collect();
    idx.sort_by(|&a, &b| values[b].total_cmp(&values[a]));
    idx.truncate(k);
    idx
}

/// torchvision's `BoxCoder`: regression deltas `(dx, dy, dw, dh)` relative to reference boxes,
/// divided by `weights`, with `dw`/`dh` clamped at `clip` before the exponential.
#[derive(Clone, Copy, Debug)]
pub struct BoxCoder {
    pub weights: [f32; 4],
    pub clip: f32,
}

impl BoxCoder {
    /// `log(1000 / 16)`, torchvision's default clamp.
    pub const DEFAULT_CLIP: f32 = 4.135_166_6;

    pub fn new(weights: [f32; 4]) -> Self {
        Self {
            weights,
            clip: Self::DEFAULT_CLIP,
        }
    }

    /// The deltas that take `reference` to `target` (`encode_single`, in f32 as torchvision):
    /// the inverse of [`decode`](Self::decode) up to the clamp.
    pub fn encode(&self, target: &[f32; 4], reference: &[f32; 4]) -> [f32; 4] {
        let [wx, wy, ww, wh] = self.weights;
        let (ew, eh) = (reference[2] - reference[0], reference[3] - reference[1]);
        let (ecx, ecy) = (reference[0] + 0.5 * ew, reference[1] + 0.5 * eh);
        let (gw, gh) = (target[2] - target[0], target[3] - target[1]);
        let (gcx, gcy) = (target[0] + 0.5 * gw, target[1] + 0.5 * gh);
        [
            wx * (gcx - ecx) / ew,
            wy * (gcy - ecy) / eh,
            ww * (gw / ew).ln(),
            wh * (gh / eh).ln(),
        ]
    }

    /// The box that `d` encodes relative to `reference` (`decode_single`, in f32 as torchvision).
    pub fn decode(&self, d: &[f32], reference: &[f32; 4]) -> [f32; 4] {
        let [wx, wy, ww, wh] = self.weights;
        let width = reference[2] - reference[0];
        let height = reference[3] - reference[1];
        let ctr_x = reference[0] + 0.5 * width;
        let ctr_y = reference[1] + 0.5 * height;
        let (dx, dy) = (d[0] / wx, d[1] / wy);
        let dw = (d[2] / ww).min(self.clip);
        let dh = (d[3] / wh).min(self.clip);
        let pcx = dx * width + ctr_x;
        let pcy = dy * height + ctr_y;
        let pw = dw.exp() * width;
        let ph = dh.exp() * height;
        let (hw, hh) = (0.5 * pw, 0.5 * ph);
        [pcx - hw, pcy - hh, pcx + hw, pcy + hh]
    }
}

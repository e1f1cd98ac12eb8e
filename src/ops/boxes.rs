//! Box operations on `[x0, y0, x1, y1]` boxes, as `torchvision.ops`: area, pairwise IoU,
//! greedy NMS and per-class (batched) NMS.

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
    order.sort_by(|&a, &b| {
        scores[b]
            .partial_cmp(&scores[a])
            .unwrap_or(std::cmp::Ordering::Equal)
    });
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
/// suppress each other. Returns the kept indices by descending score (`torchvision.ops.batched_nms`).
pub fn batched_nms(boxes: &[[f32; 4]], scores: &[f32], idxs: &[i64], thresh: f32) -> Vec<usize> {
    assert!(boxes.len() == scores.len() && boxes.len() == idxs.len());
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
    keep.sort_by(|&a, &b| {
        scores[b]
            .partial_cmp(&scores[a])
            .unwrap_or(std::cmp::Ordering::Equal)
            .then(a.cmp(&b))
    });
    keep
}

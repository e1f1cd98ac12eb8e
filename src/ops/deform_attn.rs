//! Multi-scale deformable attention (Deformable DETR, the pixel decoder of Mask2Former): each
//! query reads, for every head, a few bilinear samples from every level of a feature pyramid
//! at learned locations and sums them with learned weights. The samples follow
//! `F.grid_sample(mode="bilinear", padding_mode="zeros", align_corners=False)`, the
//! reference's PyTorch fallback: a location `(x, y)` in `[0, 1]` reads pixel
//! `(x W - 1/2, y H - 1/2)` of its level, and taps outside the map read zero.

use rayon::prelude::*;

/// The layout of one call: the levels' `(height, width)` in the order their tokens are
/// stacked in `value`, and the heads, channels per head and points per level.
#[derive(Clone, Copy, Debug)]
pub struct DeformLayout<'a> {
    pub shapes: &'a [(usize, usize)],
    pub heads: usize,
    pub head_dim: usize,
    pub points: usize,
}

impl DeformLayout<'_> {
    /// Tokens over all levels.
    pub fn tokens(&self) -> usize {
        self.shapes.iter().map(|(h, w)| h * w).sum()
    }
}

/// `value [tokens, heads * head_dim]` (the levels' maps flattened row-major and stacked),
/// `locations [queries, heads, levels, points, 2]` (x, y), `weights [queries, heads, levels,
/// points]` -> `[queries, heads * head_dim]`.
pub fn multi_scale_deformable_attention(
    value: &[f32],
    layout: DeformLayout,
    locations: &[f32],
    weights: &[f32],
) -> Vec<f32> {
    let DeformLayout {
        shapes,
        heads,
        head_dim: d,
        points,
    } = layout;
    let levels = shapes.len();
    let width = heads * d;
    assert_eq!(
        value.len(),
        layout.tokens() * width,
        "deformable attention values"
    );
    let per_query = heads * levels * points;
    assert_eq!(
        weights.len() % per_query.max(1),
        0,
        "deformable attention weights"
    );
    let queries = weights.len() / per_query.max(1);
    assert_eq!(
        locations.len(),
        2 * weights.len(),
        "deformable attention locations"
    );
    let starts: Vec<usize> = shapes
        .iter()
        .scan(0, |s, (h, w)| {
            let start = *s;
            *s += h * w;
            Some(start)
        })
        .collect();
    let mut out = vec![0.0f32; queries * width];
    let sample_query = |(q, o): (usize, &mut [f32])| {
        let mut acc = vec![0.0f32; d];
        for h in 0..heads {
            acc.iter_mut().for_each(|v| *v = 0.0);
            for (l, &(lh, lw)) in shapes.iter().enumerate() {
                for p in 0..points {
                    let i = ((q * heads + h) * levels + l) * points + p;
                    let a = weights[i];
                    let x = locations[2 * i] * lw as f32 - 0.5;
                    let y = locations[2 * i + 1] * lh as f32 - 0.5;
                    let (x0, y0) = (x.floor(), y.floor());
                    let (fx, fy) = (x - x0, y - y0);
                    let (x0, y0) = (x0 as i64, y0 as i64);
                    let taps = [
                        (y0, x0, (1.0 - fx) * (1.0 - fy)),
                        (y0, x0 + 1, fx * (1.0 - fy)),
                        (y0 + 1, x0, (1.0 - fx) * fy),
                        (y0 + 1, x0 + 1, fx * fy),
                    ];
                    for (ty, tx, tw) in taps {
                        if ty < 0 || tx < 0 || ty >= lh as i64 || tx >= lw as i64 {
                            continue;
                        }
                        let row = starts[l] + ty as usize * lw + tx as usize;
                        let v = &value[row * width + h * d..][..d];
                        let k = a * tw;
                        acc.iter_mut().zip(v).for_each(|(s, &v)| *s += k * v);
                    }
                }
            }
            o[h * d..(h + 1) * d].copy_from_slice(&acc);
        }
    };
    if queries * per_query >= 1 << 14 && rayon::current_thread_index().is_none() {
        out.par_chunks_mut(width).enumerate().for_each(sample_query);
    } else {
        out.chunks_mut(width).enumerate().for_each(sample_query);
    }
    out
}

//! torchvision's `AnchorGenerator`: per FPN level one size (32, 64, 128, 256, 512) at aspect
//! ratios 0.5, 1 and 2, centred on every feature-map position at the level's stride
//! (`padded image size // feature size`). Anchors are ordered position-major (row, column),
//! then by aspect ratio, as the RPN head's outputs are flattened.

/// Sizes per level of the FPN models (P2-P6).
pub const SIZES: [f32; 5] = [32.0, 64.0, 128.0, 256.0, 512.0];
/// Aspect ratios (height / width) at every level.
pub const ASPECT_RATIOS: [f32; 3] = [0.5, 1.0, 2.0];

/// The zero-centred anchors of one size (`generate_anchors`: `round([-w, -h, w, h] / 2)`, f32).
pub fn cell_anchors(size: f32, ratios: &[f32]) -> Vec<[f32; 4]> {
    ratios
        .iter()
        .map(|&r| {
            let h_ratio = r.sqrt();
            let w_ratio = 1.0 / h_ratio;
            let (ws, hs) = (w_ratio * size, h_ratio * size);
            [-ws, -hs, ws, hs].map(|v| (v / 2.0).round_ties_even())
        })
        .collect()
}

/// All anchors of one level with an `fh x fw` feature map over a padded `image` `(h, w)`.
pub fn grid_anchors(size: f32, (fh, fw): (usize, usize), image: (usize, usize)) -> Vec<[f32; 4]> {
    let (sy, sx) = ((image.0 / fh) as f32, (image.1 / fw) as f32);
    let base = cell_anchors(size, &ASPECT_RATIOS);
    let mut out = Vec::with_capacity(fh * fw * base.len());
    for y in 0..fh {
        for x in 0..fw {
            let (ox, oy) = (x as f32 * sx, y as f32 * sy);
            for b in &base {
                out.push([b[0] + ox, b[1] + oy, b[2] + ox, b[3] + oy]);
            }
        }
    }
    out
}

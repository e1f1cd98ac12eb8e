//! Mask overlays: the image blended with class colours, with class contours drawn on top, and
//! side-by-side panels (image | ground truth | prediction).

use super::canvas::{Canvas, Rgb};
use crate::data::image_io::LabelMap;

/// Pixels whose 4-neighbourhood holds another label.
pub fn contour(labels: &LabelMap) -> Vec<bool> {
    let (w, h) = (labels.width, labels.height);
    let mut out = vec![false; w * h];
    for y in 0..h {
        for x in 0..w {
            let v = labels.data[y * w + x];
            let differs = (x > 0 && labels.data[y * w + x - 1] != v)
                || (x + 1 < w && labels.data[y * w + x + 1] != v)
                || (y > 0 && labels.data[(y - 1) * w + x] != v)
                || (y + 1 < h && labels.data[(y + 1) * w + x] != v);
            out[y * w + x] = differs;
        }
    }
    out
}

/// The image with every non-background class blended in its colour (`alpha`) and contours.
/// Labels equal to `skip` (e.g. the ignore index) are left untouched.
pub fn overlay(
    image_rgb: &[u8],
    labels: &LabelMap,
    palette: &[Rgb],
    alpha: f32,
    skip: Option<u32>,
) -> Canvas {
    let mut c = Canvas::from_rgb(labels.width, labels.height, image_rgb.to_vec());
    let edges = contour(labels);
    for y in 0..labels.height {
        for x in 0..labels.width {
            let l = labels.data[y * labels.width + x];
            if l == 0 || Some(l) == skip {
                continue;
            }
            let col = palette[l as usize % palette.len()];
            if edges[y * labels.width + x] {
                c.put(x as isize, y as isize, col);
            } else {
                c.blend(x, y, col, alpha);
            }
        }
    }
    c
}

/// Colours a label map with the palette (the `_color.png` picture).
pub fn colorize(labels: &LabelMap, palette: &[Rgb]) -> Canvas {
    let mut px = Vec::with_capacity(labels.data.len() * 3);
    for &l in &labels.data {
        px.extend_from_slice(&palette[l as usize % palette.len()]);
    }
    Canvas::from_rgb(labels.width, labels.height, px)
}

/// Side-by-side panels with a title above each.
pub fn panels(items: &[(&str, &Canvas)]) -> Canvas {
    let gap = 6;
    let scale_of = |c: &Canvas| if c.width >= 200 { 2 } else { 1 };
    let title_h = items
        .iter()
        .map(|(_, c)| super::font::line_height(scale_of(c)) + 4)
        .max()
        .unwrap_or(0);
    let h = items.iter().map(|(_, c)| c.height).max().unwrap_or(0) + title_h;
    let w: usize =
        items.iter().map(|(_, c)| c.width).sum::<usize>() + gap * (items.len().saturating_sub(1));
    let mut out = Canvas::new(w, h, [255, 255, 255]);
    let mut x = 0;
    for (title, c) in items {
        out.text(x as isize + 2, 2, title, [0, 0, 0], scale_of(c));
        out.paste(c, x, title_h);
        x += c.width + gap;
    }
    out
}

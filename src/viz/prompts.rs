//! Pictures for promptable segmentation, as SAM's notebooks draw them: the mask in translucent
//! blue over the photo, positive clicks as green stars and negative ones as red stars (white
//! outline), boxes in green; several masks side by side with their scores; automatic masks in
//! distinct colours, largest first.

use super::canvas::{Canvas, Rgb};
use super::overlay::panels;
use super::palette::instance_color;

/// The notebooks' mask colour, (30, 144, 255) at 0.6 opacity.
pub const MASK_BLUE: Rgb = [30, 144, 255];
const GREEN: Rgb = [0, 200, 0];
const RED: Rgb = [230, 20, 20];

/// Marker size for an image: visible on thumbnails and on 4K photos alike.
fn marker(c: &Canvas) -> f32 {
    (c.width.min(c.height) as f32 / 30.0).clamp(5.0, 40.0)
}

/// Green stars for label 1, red for label 0.
pub fn draw_points(c: &mut Canvas, points: &[(f64, f64, i32)]) {
    let r = marker(c);
    for &(x, y, l) in points {
        c.star(x as f32, y as f32, r, if l == 1 { GREEN } else { RED });
    }
}

pub fn draw_box(c: &mut Canvas, b: [f64; 4], color: Rgb) {
    let t = (c.width.min(c.height) / 300).max(2);
    c.rect_outline(b[0] as f32, b[1] as f32, b[2] as f32, b[3] as f32, color, t);
}

/// One prompt set: a single mask over the photo, or (multimask) one panel per mask titled with
/// its score, the best marked.
pub fn prompt_picture(
    photo: &Canvas,
    masks: &[Vec<u8>],
    scores: &[f32],
    points: &[(f64, f64, i32)],
    bbox: Option<[f64; 4]>,
) -> Canvas {
    let best = (0..scores.len())
        .max_by(|&a, &b| scores[a].total_cmp(&scores[b]))
        .unwrap_or(0);
    let draw = |i: usize| {
        let mut c = photo.clone();
        c.paint_mask(&masks[i], MASK_BLUE, 0.6);
        draw_points(&mut c, points);
        if let Some(b) = bbox {
            draw_box(&mut c, b, GREEN);
        }
        c
    };
    if masks.len() == 1 {
        return draw(0);
    }
    let pics: Vec<Canvas> = (0..masks.len()).map(draw).collect();
    let titles: Vec<String> = (0..masks.len())
        .map(|i| {
            format!(
                "Mask {i}, score {:.3}{}",
                scores[i],
                if i == best { " (best)" } else { "" }
            )
        })
        .collect();
    let items: Vec<(&str, &Canvas)> = titles.iter().map(|s| s.as_str()).zip(pics.iter()).collect();
    panels(&items)
}

/// Several boxes at once: every mask in its own colour, with its box.
pub fn batched_boxes_picture(photo: &Canvas, masks: &[Vec<u8>], boxes: &[[f64; 4]]) -> Canvas {
    let mut c = photo.clone();
    for (i, m) in masks.iter().enumerate() {
        c.paint_mask(m, instance_color(i), 0.55);
    }
    for (i, b) in boxes.iter().enumerate() {
        draw_box(&mut c, *b, instance_color(i));
    }
    c
}

/// Automatic masks: largest first so small ones stay visible on top, distinct colours.
pub fn automatic_picture(photo: &Canvas, masks: &[(u64, Vec<u8>)]) -> Canvas {
    let mut order: Vec<usize> = (0..masks.len()).collect();
    order.sort_by_key(|&i| std::cmp::Reverse(masks[i].0));
    let mut c = photo.clone();
    for (k, &i) in order.iter().enumerate() {
        c.paint_mask(&masks[i].1, instance_color(k), 0.45);
    }
    c
}

//! Instance and panoptic pictures: each object blended in a distinct colour with its contour and
//! a "class score" label at its top-left corner.

use super::canvas::{Canvas, Rgb};
use super::palette::instance_color;

/// One object to draw: a row-major binary mask, a colour and an optional label.
pub struct DrawnObject {
    pub mask: Vec<u8>,
    pub color: Rgb,
    pub label: Option<String>,
}

/// Draws objects over the image (later objects on top).
pub fn draw_objects(
    image_rgb: &[u8],
    width: usize,
    height: usize,
    objects: &[DrawnObject],
    alpha: f32,
) -> Canvas {
    let mut c = Canvas::from_rgb(width, height, image_rgb.to_vec());
    for o in objects {
        c.paint_mask(&o.mask, o.color, alpha);
    }
    let scale = if width >= 1200 { 2 } else { 1 };
    for o in objects {
        let Some(label) = &o.label else { continue };
        // top-left corner of the mask's bounding box
        let mut top: Option<(usize, usize)> = None;
        for (i, &v) in o.mask.iter().enumerate() {
            if v != 0 {
                let (x, y) = (i % width, i / width);
                top = Some(match top {
                    None => (x, y),
                    Some((tx, ty)) => (tx.min(x), ty.min(y)),
                });
            }
        }
        if let Some((x, y)) = top {
            let ly = y.saturating_sub(super::font::line_height(scale) + 4);
            c.label(
                x as isize,
                ly as isize,
                label,
                [255, 255, 255],
                darker(o.color),
                scale,
            );
        }
    }
    c
}

fn darker(c: Rgb) -> Rgb {
    [c[0] / 2, c[1] / 2, c[2] / 2]
}

/// Colour of the k-th object.
pub fn color_of(k: usize) -> Rgb {
    instance_color(k)
}

//! A small RGB canvas with the drawing primitives the pictures need: pixels, lines, rectangles,
//! text (8x8 bitmap font), stars, and pasting other canvases.

use anyhow::Result;
use std::path::Path;

#[derive(Clone, Debug)]
pub struct Canvas {
    pub width: usize,
    pub height: usize,
    /// RGB, row-major.
    pub pixels: Vec<u8>,
}

pub type Rgb = [u8; 3];

impl Canvas {
    pub fn new(width: usize, height: usize, fill: Rgb) -> Self {
        let mut pixels = Vec::with_capacity(width * height * 3);
        for _ in 0..width * height {
            pixels.extend_from_slice(&fill);
        }
        Self {
            width,
            height,
            pixels,
        }
    }

    pub fn from_rgb(width: usize, height: usize, pixels: Vec<u8>) -> Self {
        assert_eq!(pixels.len(), width * height * 3);
        Self {
            width,
            height,
            pixels,
        }
    }

    pub fn put(&mut self, x: isize, y: isize, c: Rgb) {
        if x >= 0 && y >= 0 && (x as usize) < self.width && (y as usize) < self.height {
            let i = (y as usize * self.width + x as usize) * 3;
            self.pixels[i..i + 3].copy_from_slice(&c);
        }
    }

    pub fn get(&self, x: usize, y: usize) -> Rgb {
        let i = (y * self.width + x) * 3;
        [self.pixels[i], self.pixels[i + 1], self.pixels[i + 2]]
    }

    /// Blends colour `c` over pixel (x, y) with opacity `alpha`.
    pub fn blend(&mut self, x: usize, y: usize, c: Rgb, alpha: f32) {
        let i = (y * self.width + x) * 3;
        for (k, &ck) in c.iter().enumerate() {
            let v = self.pixels[i + k] as f32 * (1.0 - alpha) + ck as f32 * alpha;
            self.pixels[i + k] = v.round().clamp(0.0, 255.0) as u8;
        }
    }

    /// Blends `mask` (row-major over the whole canvas, nonzero = inside) in `color` with
    /// opacity `alpha`, and draws its outline (inside pixels with an outside 4-neighbour, or on
    /// the border) in the solid colour.
    pub fn paint_mask(&mut self, mask: &[u8], color: Rgb, alpha: f32) {
        let (w, h) = (self.width, self.height);
        for y in 0..h {
            for x in 0..w {
                let i = y * w + x;
                if mask[i] == 0 {
                    continue;
                }
                let edge = x == 0
                    || y == 0
                    || x + 1 == w
                    || y + 1 == h
                    || mask[i - 1] == 0
                    || mask[i + 1] == 0
                    || mask[i - w] == 0
                    || mask[i + w] == 0;
                if edge {
                    self.put(x as isize, y as isize, color);
                } else {
                    self.blend(x, y, color, alpha);
                }
            }
        }
    }

    /// A line of the given thickness (Bresenham with a square brush).
    pub fn line(&mut self, x0: f32, y0: f32, x1: f32, y1: f32, c: Rgb, thickness: usize) {
        let steps = ((x1 - x0).abs().max((y1 - y0).abs()).ceil() as usize).max(1);
        let half = thickness as isize / 2;
        for s in 0..=steps {
            let t = s as f32 / steps as f32;
            let x = (x0 + (x1 - x0) * t).round() as isize;
            let y = (y0 + (y1 - y0) * t).round() as isize;
            for dy in -half..=(thickness as isize - 1 - half) {
                for dx in -half..=(thickness as isize - 1 - half) {
                    self.put(x + dx, y + dy, c);
                }
            }
        }
    }

    pub fn rect_outline(&mut self, x0: f32, y0: f32, x1: f32, y1: f32, c: Rgb, thickness: usize) {
        self.line(x0, y0, x1, y0, c, thickness);
        self.line(x1, y0, x1, y1, c, thickness);
        self.line(x1, y1, x0, y1, c, thickness);
        self.line(x0, y1, x0, y0, c, thickness);
    }

    pub fn fill_rect(&mut self, x0: isize, y0: isize, w: usize, h: usize, c: Rgb) {
        for y in y0..y0 + h as isize {
            for x in x0..x0 + w as isize {
                self.put(x, y, c);
            }
        }
    }

    /// Anti-aliased text (the bundled DejaVu Sans at [`super::font::px_size`]`(scale)`) with
    /// its top-left at `(x, y)`; returns the width drawn.
    pub fn text(&mut self, x: isize, y: isize, s: &str, c: Rgb, scale: usize) -> usize {
        let (w, h) = (self.width as i64, self.height as i64);
        let adv = super::font::draw_text(x as f32, y as f32, s, scale, |px, py, cov| {
            if px >= 0 && py >= 0 && px < w && py < h {
                self.blend(px as usize, py as usize, c, cov.clamp(0.0, 1.0));
            }
        });
        adv.ceil() as usize
    }

    /// Text on a filled box, readable over any image.
    pub fn label(&mut self, x: isize, y: isize, s: &str, fg: Rgb, bg: Rgb, scale: usize) {
        let w = super::font::text_width(s, scale) + 6;
        self.fill_rect(x, y, w, super::font::line_height(scale) + 4, bg);
        self.text(x + 3, y + 2, s, fg, scale);
    }

    /// A filled five-pointed star with a white outline (the marker SAM's notebooks draw).
    pub fn star(&mut self, cx: f32, cy: f32, radius: f32, c: Rgb) {
        let pts: Vec<(f32, f32)> = (0..10)
            .map(|k| {
                let r = if k % 2 == 0 { radius } else { radius * 0.45 };
                let a = -std::f32::consts::FRAC_PI_2 + k as f32 * std::f32::consts::PI / 5.0;
                (cx + r * a.cos(), cy + r * a.sin())
            })
            .collect();
        let inside = |x: f32, y: f32| {
            let mut odd = false;
            for i in 0..pts.len() {
                let (a, b) = (pts[i], pts[(i + 1) % pts.len()]);
                if (a.1 > y) != (b.1 > y) && x < (b.0 - a.0) * (y - a.1) / (b.1 - a.1) + a.0 {
                    odd = !odd;
                }
            }
            odd
        };
        let r = radius.ceil() as isize + 1;
        for dy in -r..=r {
            for dx in -r..=r {
                let (x, y) = (cx + dx as f32, cy + dy as f32);
                if inside(x, y) {
                    self.put(x.round() as isize, y.round() as isize, c);
                }
            }
        }
        for i in 0..pts.len() {
            let (a, b) = (pts[i], pts[(i + 1) % pts.len()]);
            self.line(a.0, a.1, b.0, b.1, [255, 255, 255], 1);
        }
    }

    /// Copies `other` with its top-left corner at (x, y).
    pub fn paste(&mut self, other: &Canvas, x: usize, y: usize) {
        for yy in 0..other.height {
            for xx in 0..other.width {
                self.put((x + xx) as isize, (y + yy) as isize, other.get(xx, yy));
            }
        }
    }

    pub fn save_png(&self, path: &Path) -> Result<()> {
        crate::data::image_io::write_png(path, self.width, self.height, 3, &self.pixels)
    }
}

//! The bundled font (DejaVu Sans, `assets/fonts`, its licence beside it): plots register it with
//! plotters, and pictures draw their labels with it, anti-aliased, through `ab_glyph`.

use ab_glyph::{Font, FontRef, PxScale, ScaleFont, point};

pub static DEJAVU_SANS: &[u8] = include_bytes!("../../assets/fonts/DejaVuSans.ttf");

fn font() -> &'static FontRef<'static> {
    static FONT: std::sync::OnceLock<FontRef<'static>> = std::sync::OnceLock::new();
    FONT.get_or_init(|| {
        FontRef::try_from_slice(DEJAVU_SANS).expect("the bundled DejaVu Sans is a valid font")
    })
}

/// The pixel size of text at a picture's integer `scale` (1: 12 px, 2: 19 px, ...).
pub fn px_size(scale: usize) -> f32 {
    (7 * scale.max(1) + 5) as f32
}

/// Height of a line of text at `scale`, in pixels (ascent + descent).
pub fn line_height(scale: usize) -> usize {
    let f = font().as_scaled(PxScale::from(px_size(scale)));
    (f.ascent() - f.descent()).ceil() as usize
}

/// Lays out `s` with its top-left at `(x, y)`; calls `cover(px, py, coverage)` for every pixel
/// the glyphs touch; returns the advance width in pixels.
pub fn draw_text(
    x: f32,
    y: f32,
    s: &str,
    scale: usize,
    mut cover: impl FnMut(i64, i64, f32),
) -> f32 {
    let px = PxScale::from(px_size(scale));
    let f = font().as_scaled(px);
    let mut caret = x;
    let mut prev = None;
    for ch in s.chars() {
        let id = f.glyph_id(ch);
        if let Some(p) = prev {
            caret += f.kern(p, id);
        }
        let g = id.with_scale_and_position(px, point(caret, y + f.ascent()));
        caret += f.h_advance(id);
        prev = Some(id);
        if let Some(o) = font().outline_glyph(g) {
            let b = o.px_bounds();
            o.draw(|gx, gy, c| cover(b.min.x as i64 + gx as i64, b.min.y as i64 + gy as i64, c));
        }
    }
    caret - x
}

/// The advance width of `s` at `scale`, in pixels.
pub fn text_width(s: &str, scale: usize) -> usize {
    draw_text(0.0, 0.0, s, scale, |_, _, _| {}).ceil() as usize
}

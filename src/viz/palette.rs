//! Class colours: the Pascal VOC colour map (class 0 black), the usual choice of segmentation tools.

use super::canvas::Rgb;

/// The Pascal VOC colour map for `n` classes (bit-interleaved class index).
pub fn voc_palette(n: usize) -> Vec<Rgb> {
    (0..n)
        .map(|i| {
            let (mut r, mut g, mut b) = (0u8, 0u8, 0u8);
            let mut c = i;
            for j in 0..8 {
                r |= ((c & 1) as u8) << (7 - j);
                g |= (((c >> 1) & 1) as u8) << (7 - j);
                b |= (((c >> 2) & 1) as u8) << (7 - j);
                c >>= 3;
            }
            [r, g, b]
        })
        .collect()
}

/// A colour for the binary case where class 1 must stand out: VOC's class 1 is dark red, so
/// two-class maps use a brighter set.
pub fn palette_for(num_classes: usize) -> Vec<Rgb> {
    let mut p = voc_palette(num_classes.clamp(2, 256));
    if num_classes <= 2 {
        p[1] = [255, 64, 64];
    }
    p
}

/// Distinct colours for instances (golden-angle hue steps).
pub fn instance_color(k: usize) -> Rgb {
    let h = (k as f32 * 137.507_77) % 360.0;
    hsv(h, 0.75, 0.95)
}

fn hsv(h: f32, s: f32, v: f32) -> Rgb {
    let c = v * s;
    let x = c * (1.0 - ((h / 60.0) % 2.0 - 1.0).abs());
    let m = v - c;
    let (r, g, b) = match (h / 60.0) as u32 {
        0 => (c, x, 0.0),
        1 => (x, c, 0.0),
        2 => (0.0, c, x),
        3 => (0.0, x, c),
        4 => (x, 0.0, c),
        _ => (c, 0.0, x),
    };
    [
        ((r + m) * 255.0) as u8,
        ((g + m) * 255.0) as u8,
        ((b + m) * 255.0) as u8,
    ]
}

#[cfg(test)]
mod tests {
    #[test]
    fn voc_first_colours() {
        let p = super::voc_palette(4);
        assert_eq!(p, vec![[0, 0, 0], [128, 0, 0], [0, 128, 0], [128, 128, 0]]);
    }
}

//! Training curves: line charts with axes, ticks and a legend.

use super::canvas::{Canvas, Rgb};

pub struct Series<'a> {
    pub name: &'a str,
    pub color: Rgb,
    /// (x, y) points; NaN y values are skipped.
    pub points: Vec<(f64, f64)>,
}

fn nice_ticks(lo: f64, hi: f64, n: usize) -> Vec<f64> {
    let span = (hi - lo).max(1e-12);
    let raw = span / n as f64;
    let mag = 10f64.powf(raw.log10().floor());
    let step = [1.0, 2.0, 5.0, 10.0]
        .iter()
        .map(|m| m * mag)
        .find(|s| span / s <= n as f64)
        .unwrap_or(10.0 * mag);
    let mut t = (lo / step).ceil() * step;
    let mut out = Vec::new();
    while t <= hi + 1e-9 * span {
        out.push(t);
        t += step;
    }
    out
}

fn fmt_tick(v: f64) -> String {
    if v.abs() >= 100.0 || v == v.round() {
        format!("{}", v.round() as i64)
    } else if v.abs() >= 1.0 {
        format!("{v:.1}")
    } else {
        format!("{v:.2}")
    }
}

/// Draws one chart of `width x height` pixels.
pub fn chart(title: &str, x_label: &str, series: &[Series], width: usize, height: usize) -> Canvas {
    let mut c = Canvas::new(width, height, [255, 255, 255]);
    let (left, right, top, bottom) = (60.0f32, 16.0f32, 30.0f32, 40.0f32);
    let pw = width as f32 - left - right;
    let ph = height as f32 - top - bottom;
    let pts = series
        .iter()
        .flat_map(|s| s.points.iter())
        .filter(|p| p.1.is_finite());
    let (mut x0, mut x1, mut y0, mut y1) = (f64::MAX, f64::MIN, f64::MAX, f64::MIN);
    for &(x, y) in pts {
        x0 = x0.min(x);
        x1 = x1.max(x);
        y0 = y0.min(y);
        y1 = y1.max(y);
    }
    if x0 > x1 {
        (x0, x1, y0, y1) = (0.0, 1.0, 0.0, 1.0);
    }
    if x1 - x0 < 1e-12 {
        x1 = x0 + 1.0;
    }
    if y1 - y0 < 1e-12 {
        y0 -= 0.5;
        y1 += 0.5;
    }
    let pad = (y1 - y0) * 0.05;
    y0 -= pad;
    y1 += pad;
    let sx = |x: f64| left + ((x - x0) / (x1 - x0)) as f32 * pw;
    let sy = |y: f64| top + ph - ((y - y0) / (y1 - y0)) as f32 * ph;
    let grid = [225, 225, 225];
    let ink = [40, 40, 40];
    for t in nice_ticks(y0, y1, 5) {
        c.line(left, sy(t), left + pw, sy(t), grid, 1);
        let s = fmt_tick(t);
        c.text(
            (left - 6.0) as isize - 8 * s.len() as isize,
            sy(t) as isize - 4,
            &s,
            ink,
            1,
        );
    }
    for t in nice_ticks(x0, x1, 6) {
        c.line(sx(t), top, sx(t), top + ph, grid, 1);
        let s = fmt_tick(t);
        c.text(
            sx(t) as isize - 4 * s.len() as isize,
            (top + ph + 6.0) as isize,
            &s,
            ink,
            1,
        );
    }
    c.rect_outline(left, top, left + pw, top + ph, ink, 1);
    c.text(left as isize, 8, title, ink, 2);
    c.text(
        (left + pw / 2.0) as isize - 4 * x_label.len() as isize,
        height as isize - 14,
        x_label,
        ink,
        1,
    );
    for s in series {
        let mut prev: Option<(f32, f32)> = None;
        for &(x, y) in &s.points {
            if !y.is_finite() {
                prev = None;
                continue;
            }
            let p = (sx(x), sy(y));
            if let Some(q) = prev {
                c.line(q.0, q.1, p.0, p.1, s.color, 2);
            }
            c.fill_rect(p.0 as isize - 2, p.1 as isize - 2, 5, 5, s.color);
            prev = Some(p);
        }
    }
    // Legend, top right inside the plot.
    let mut ly = top as isize + 6;
    for s in series {
        let lx = (left + pw) as isize - 8 * s.name.len() as isize - 30;
        c.fill_rect(lx, ly + 2, 14, 4, s.color);
        c.text(lx + 18, ly, s.name, ink, 1);
        ly += 12;
    }
    c
}

/// The training-curve picture: losses on the left, validation metrics on the right.
pub fn training_curves(
    epochs: &[f64],
    train_loss: &[f64],
    val_loss: &[f64],
    metrics: &[(&str, Vec<f64>)],
) -> Canvas {
    let zip = |v: &[f64]| {
        epochs
            .iter()
            .copied()
            .zip(v.iter().copied())
            .collect::<Vec<_>>()
    };
    let colors: [Rgb; 4] = [[31, 119, 180], [255, 127, 14], [44, 160, 44], [214, 39, 40]];
    let loss = chart(
        "loss",
        "epoch",
        &[
            Series {
                name: "train",
                color: colors[0],
                points: zip(train_loss),
            },
            Series {
                name: "val",
                color: colors[1],
                points: zip(val_loss),
            },
        ],
        480,
        320,
    );
    let ms: Vec<Series> = metrics
        .iter()
        .enumerate()
        .map(|(i, (n, v))| Series {
            name: n,
            color: colors[(i + 1) % 4],
            points: zip(v),
        })
        .collect();
    let met = chart("validation", "epoch", &ms, 480, 320);
    let mut out = Canvas::new(960, 320, [255, 255, 255]);
    out.paste(&loss, 0, 0);
    out.paste(&met, 480, 0);
    out
}

#[cfg(test)]
mod tests {
    #[test]
    fn ticks_cover_range() {
        let t = super::nice_ticks(0.0, 1.0, 5);
        assert_eq!(t.first().copied(), Some(0.0));
        assert!((t.last().unwrap() - 1.0).abs() < 1e-9);
    }
}

//! Plots through the `plotters` crate, with a bundled font (DejaVu Sans, assets/fonts) so that
//! nothing depends on the machine's fonts: line plots with the legend in its own panel beside
//! the axes (it never covers data) and an optional marked x (the best epoch), sorted bar plots,
//! and heatmaps with class names. PNG or SVG by the file's extension.

use anyhow::{Context, Result, bail};
use plotters::coord::Shift;
use plotters::prelude::*;
use std::path::Path;

const FAMILY: &str = "sans-serif";

fn register_font() {
    static ONCE: std::sync::Once = std::sync::Once::new();
    ONCE.call_once(|| {
        // A bundled, known-good font: registration cannot fail but for a corrupt build.
        let _ = plotters::style::register_font(FAMILY, FontStyle::Normal, super::font::DEJAVU_SANS);
    });
}

/// Line colours (matplotlib's tab10).
pub const COLORS: [(u8, u8, u8); 8] = [
    (31, 119, 180),
    (255, 127, 14),
    (44, 160, 44),
    (214, 39, 40),
    (148, 103, 189),
    (140, 86, 75),
    (227, 119, 194),
    (127, 127, 127),
];

fn color(i: usize) -> RGBColor {
    let (r, g, b) = COLORS[i % COLORS.len()];
    RGBColor(r, g, b)
}

/// One line: its name and points (NaN y values are gaps).
pub struct Line {
    pub name: String,
    pub points: Vec<(f64, f64)>,
}

/// A panel of lines sharing axes.
pub struct LinePanel {
    pub title: String,
    pub x_label: String,
    pub y_label: String,
    pub lines: Vec<Line>,
    /// A vertical marker and its legend text (e.g. the best epoch).
    pub mark_x: Option<(f64, String)>,
}

/// Where things were drawn, in pixels `(x0, y0, x1, y1)`, for checks.
#[derive(Clone, Debug, Default)]
pub struct Layout {
    pub plot_areas: Vec<(i32, i32, i32, i32)>,
    pub legends: Vec<(i32, i32, i32, i32)>,
}

fn err<E: std::fmt::Debug>(path: &Path) -> impl Fn(E) -> anyhow::Error + '_ {
    move |e| anyhow::anyhow!("{}: drawing failed: {e:?}", path.display())
}

/// Draws on a PNG (RGB) or SVG file at `path`, by its extension.
fn render(
    path: &Path,
    size: (u32, u32),
    draw: impl FnOnce(&DrawingArea<BitMapBackend, Shift>) -> Result<Layout>,
    draw_svg: impl FnOnce(&DrawingArea<SVGBackend, Shift>) -> Result<Layout>,
) -> Result<Layout> {
    register_font();
    if let Some(dir) = path.parent()
        && !dir.as_os_str().is_empty()
    {
        std::fs::create_dir_all(dir)
            .with_context(|| format!("{}: cannot create", dir.display()))?;
    }
    let ext = path
        .extension()
        .map(|e| e.to_string_lossy().to_lowercase())
        .unwrap_or_default();
    match ext.as_str() {
        "svg" => {
            let root = SVGBackend::new(path, size).into_drawing_area();
            let l = draw_svg(&root)?;
            root.present().map_err(err(path))?;
            Ok(l)
        }
        "png" => {
            let (w, h) = (size.0 as usize, size.1 as usize);
            let mut buf = vec![255u8; w * h * 3];
            let l = {
                let root = BitMapBackend::with_buffer(&mut buf, size).into_drawing_area();
                let l = draw(&root)?;
                root.present().map_err(err(path))?;
                l
            };
            crate::data::image_io::write_png(path, w, h, 3, &buf)?;
            Ok(l)
        }
        _ => bail!("{}: plots are written as .png or .svg", path.display()),
    }
}

fn rect_of<DB: DrawingBackend>(a: &DrawingArea<DB, Shift>) -> (i32, i32, i32, i32) {
    let (x, y) = a.get_base_pixel();
    let (w, h) = a.dim_in_pixel();
    (x, y, x + w as i32, y + h as i32)
}

/// Line panels stacked vertically, each with its legend in a panel on its right.
pub fn line_plot(path: &Path, panels: &[LinePanel], size: (u32, u32)) -> Result<Layout> {
    render(
        path,
        size,
        |root| draw_lines(root, panels, path),
        |root| draw_lines(root, panels, path),
    )
}

fn draw_lines<DB: DrawingBackend>(
    root: &DrawingArea<DB, Shift>,
    panels: &[LinePanel],
    path: &Path,
) -> Result<Layout> {
    root.fill(&WHITE).map_err(err(path))?;
    let mut layout = Layout::default();
    let (w, _) = root.dim_in_pixel();
    let legend_w = (w as i32 / 4).clamp(120, 220);
    for (panel, area) in panels
        .iter()
        .zip(root.split_evenly((panels.len().max(1), 1)))
    {
        let (chart_area, legend_area) = area.split_horizontally(w as i32 - legend_w);
        let pts = || {
            panel
                .lines
                .iter()
                .flat_map(|l| l.points.iter())
                .filter(|p| p.1.is_finite())
        };
        let (mut x0, mut x1, mut y0, mut y1) = (f64::MAX, f64::MIN, f64::MAX, f64::MIN);
        for &(x, y) in pts() {
            (x0, x1, y0, y1) = (x0.min(x), x1.max(x), y0.min(y), y1.max(y));
        }
        if x0 > x1 {
            (x0, x1, y0, y1) = (0.0, 1.0, 0.0, 1.0);
        }
        if x1 - x0 < 1e-12 {
            x1 = x0 + 1.0;
        }
        let pad = ((y1 - y0) * 0.06).max(1e-6);
        let (y0, y1) = (y0 - pad, y1 + pad);
        let mut chart = ChartBuilder::on(&chart_area)
            .caption(&panel.title, (FAMILY, 16))
            .margin(8)
            .x_label_area_size(34)
            .y_label_area_size(54)
            .build_cartesian_2d(x0..x1, y0..y1)
            .map_err(err(path))?;
        chart
            .configure_mesh()
            .x_desc(panel.x_label.as_str())
            .y_desc(panel.y_label.as_str())
            .label_style((FAMILY, 12))
            .axis_desc_style((FAMILY, 13))
            .light_line_style(RGBColor(244, 244, 244))
            .draw()
            .map_err(err(path))?;
        for (i, line) in panel.lines.iter().enumerate() {
            // NaN values split a line into runs
            for run in line.points.split(|p| !p.1.is_finite()) {
                if run.is_empty() {
                    continue;
                }
                chart
                    .draw_series(LineSeries::new(
                        run.iter().copied(),
                        color(i).stroke_width(2),
                    ))
                    .map_err(err(path))?;
                if run.len() == 1 {
                    chart
                        .draw_series(std::iter::once(Circle::new(run[0], 3, color(i).filled())))
                        .map_err(err(path))?;
                }
            }
        }
        if let Some((mx, _)) = &panel.mark_x {
            chart
                .draw_series(LineSeries::new(
                    [(*mx, y0), (*mx, y1)],
                    RGBColor(90, 90, 90).stroke_width(1),
                ))
                .map_err(err(path))?;
        }
        layout
            .plot_areas
            .push(rect_of(&chart.plotting_area().strip_coord_spec()));
        // the legend: a swatch and the name per line, top-down, in its own panel
        let mut y = 40;
        let text = (FAMILY, 13).into_font().color(&BLACK);
        let entries: Vec<(String, RGBColor, bool)> = panel
            .lines
            .iter()
            .enumerate()
            .map(|(i, l)| (l.name.clone(), color(i), false))
            .chain(
                panel
                    .mark_x
                    .iter()
                    .map(|(_, n)| (n.clone(), RGBColor(90, 90, 90), true)),
            )
            .collect();
        for (name, c, thin) in &entries {
            legend_area
                .draw(&PathElement::new(
                    [(8, y), (32, y)],
                    c.stroke_width(if *thin { 1 } else { 3 }),
                ))
                .map_err(err(path))?;
            legend_area
                .draw(&Text::new(name.clone(), (38, y - 7), text.clone()))
                .map_err(err(path))?;
            y += 20;
        }
        let (lx, ly, lx1, _) = rect_of(&legend_area);
        layout.legends.push((lx, ly + 30, lx1, ly + y));
    }
    Ok(layout)
}

/// Horizontal bars, one per `(label, value)` in the order given, values in 0..=1 (NaN: no bar).
/// (A segmented axis over `0..k` has `k + 1` slots, hence the ranges `0..n - 1` below.)
pub fn bar_plot(
    path: &Path,
    title: &str,
    value_label: &str,
    bars: &[(String, f64)],
    width: u32,
) -> Result<Layout> {
    let row = 16u32;
    let size = (width, 70 + row * bars.len().max(1) as u32);
    render(
        path,
        size,
        |root| draw_bars(root, title, value_label, bars, path),
        |root| draw_bars(root, title, value_label, bars, path),
    )
}

fn draw_bars<DB: DrawingBackend>(
    root: &DrawingArea<DB, Shift>,
    title: &str,
    value_label: &str,
    bars: &[(String, f64)],
    path: &Path,
) -> Result<Layout> {
    root.fill(&WHITE).map_err(err(path))?;
    let n = bars.len().max(1);
    let label_w = bars
        .iter()
        .map(|(l, _)| l.chars().count())
        .max()
        .unwrap_or(4)
        .clamp(4, 28);
    let mut chart = ChartBuilder::on(root)
        .caption(title, (FAMILY, 16))
        .margin(8)
        .x_label_area_size(30)
        .y_label_area_size(8 + 7 * label_w as i32)
        .build_cartesian_2d(0.0..1.0f64, (0..n - 1).into_segmented())
        .map_err(err(path))?;
    // the first bar at the top
    let name = |v: &SegmentValue<usize>| match v {
        SegmentValue::CenterOf(i) if *i < bars.len() => bars[bars.len() - 1 - i].0.clone(),
        _ => String::new(),
    };
    chart
        .configure_mesh()
        .disable_y_mesh()
        .x_labels(11)
        .x_desc(value_label)
        .y_labels(n)
        .y_label_formatter(&name)
        .label_style((FAMILY, 11))
        .axis_desc_style((FAMILY, 13))
        .light_line_style(WHITE)
        .draw()
        .map_err(err(path))?;
    chart
        .draw_series(
            bars.iter()
                .enumerate()
                .filter(|(_, b)| b.1.is_finite())
                .map(|(i, (_, v))| {
                    let slot = bars.len() - 1 - i;
                    let mut r = Rectangle::new(
                        [
                            (0.0, SegmentValue::Exact(slot)),
                            (v.clamp(0.0, 1.0), SegmentValue::Exact(slot + 1)),
                        ],
                        color(0).filled(),
                    );
                    // a gap between neighbouring bars
                    r.set_margin(2, 2, 0, 0);
                    r
                }),
        )
        .map_err(err(path))?;
    Ok(Layout {
        plot_areas: vec![rect_of(&chart.plotting_area().strip_coord_spec())],
        legends: Vec::new(),
    })
}

/// A square heatmap of `matrix` (`n x n`, values in 0..=1, row-major) with `names` on both
/// axes (every one: the picture grows with `n`), rows = ground truth, columns = prediction.
pub fn heatmap(path: &Path, title: &str, names: &[String], matrix: &[f64]) -> Result<Layout> {
    let n = names.len().max(1);
    if matrix.len() != n * n {
        bail!(
            "{}: a {n}x{n} heatmap needs {} values",
            path.display(),
            n * n
        );
    }
    // Cells at least 11 px, so that every class name fits its row (150 classes: ~1.9k px).
    let cell = (720 / n as u32).clamp(11, 48);
    let side = cell * n as u32;
    let longest = names.iter().map(|s| s.chars().count()).max().unwrap_or(1) as u32;
    let extra = (24 + 6 * longest).clamp(40, 170) + 60;
    let size = (side + extra, side + extra + 30);
    render(
        path,
        size,
        |root| draw_heatmap(root, title, names, matrix, path),
        |root| draw_heatmap(root, title, names, matrix, path),
    )
}

/// White to dark blue.
pub fn heat_color(v: f64) -> RGBColor {
    let t = v.clamp(0.0, 1.0);
    let lerp = |a: f64, b: f64| (a + (b - a) * t).round() as u8;
    RGBColor(lerp(255.0, 8.0), lerp(255.0, 48.0), lerp(255.0, 107.0))
}

fn draw_heatmap<DB: DrawingBackend>(
    root: &DrawingArea<DB, Shift>,
    title: &str,
    names: &[String],
    matrix: &[f64],
    path: &Path,
) -> Result<Layout> {
    root.fill(&WHITE).map_err(err(path))?;
    let n = names.len().max(1);
    let longest = names.iter().map(|s| s.chars().count()).max().unwrap_or(1);
    let label_area = (24 + 6 * longest as i32).clamp(40, 170);
    let mut chart = ChartBuilder::on(root)
        .caption(title, (FAMILY, 16))
        .margin(10)
        .x_label_area_size(label_area)
        .y_label_area_size(label_area)
        .build_cartesian_2d((0..n - 1).into_segmented(), (0..n - 1).into_segmented())
        .map_err(err(path))?;
    let label = |v: &SegmentValue<usize>, flip: bool| match v {
        SegmentValue::CenterOf(i) if *i < n => {
            let k = if flip { n - 1 - i } else { *i };
            // the rotated column names start clear of the axis
            if flip {
                names[k].clone()
            } else {
                format!("  {}", names[k])
            }
        }
        _ => String::new(),
    };
    chart
        .configure_mesh()
        .disable_mesh()
        .x_labels(n)
        .y_labels(n)
        .x_label_formatter(&|v| label(v, false))
        .y_label_formatter(&|v| label(v, true))
        .x_label_style((FAMILY, 10).into_font().transform(FontTransform::Rotate90))
        .y_label_style((FAMILY, 10))
        .x_desc("predicted")
        .y_desc("ground truth")
        .axis_desc_style((FAMILY, 13))
        .draw()
        .map_err(err(path))?;
    chart
        .draw_series((0..n * n).map(|i| {
            let (r, c) = (i / n, i % n);
            let row = n - 1 - r;
            Rectangle::new(
                [
                    (SegmentValue::Exact(c), SegmentValue::Exact(row)),
                    (SegmentValue::Exact(c + 1), SegmentValue::Exact(row + 1)),
                ],
                heat_color(matrix[i]).filled(),
            )
        }))
        .map_err(err(path))?;
    Ok(Layout {
        plot_areas: vec![rect_of(&chart.plotting_area().strip_coord_spec())],
        legends: Vec::new(),
    })
}

/// `DIR/per_class_iou.EXT` and `DIR/per_class_dice.EXT` (classes sorted, absent ones left out)
/// and `DIR/confusion.EXT` (rows normalised) for a semantic report; `names` by class index.
pub fn semantic_plots(
    dir: &Path,
    ext: &str,
    report: &crate::metrics::semantic::SemanticReport,
    names: &[String],
) -> Result<Vec<std::path::PathBuf>> {
    use crate::metrics::semantic::ClassMetrics;
    let k = report.per_class.len();
    let name = |c: usize| names.get(c).cloned().unwrap_or_else(|| c.to_string());
    // Bars of one per-class metric, best first, classes without it left out.
    let sorted_bars =
        |title: String, metric: &str, file: &str, of: fn(&ClassMetrics) -> Option<f64>| {
            let mut bars: Vec<(String, f64)> = report
                .per_class
                .iter()
                .filter_map(|c| of(c).map(|v| (name(c.class), v)))
                .collect();
            bars.sort_by(|a, b| b.1.partial_cmp(&a.1).unwrap_or(std::cmp::Ordering::Equal));
            let path = dir.join(format!("{file}.{ext}"));
            bar_plot(&path, &title, metric, &bars, 640).map(|_| path)
        };
    let iou = sorted_bars(
        format!(
            "IoU per class (mIoU {:.4})",
            report.miou.unwrap_or(f64::NAN)
        ),
        "IoU",
        "per_class_iou",
        |c| c.iou,
    )?;
    let dice_path = sorted_bars(
        format!(
            "Dice per class (mean {:.4})",
            report.mean_dice.unwrap_or(f64::NAN)
        ),
        "Dice",
        "per_class_dice",
        |c| c.dice,
    )?;
    let cm = &report.confusion;
    let mut norm = vec![0.0f64; k * k];
    if cm.len() == k * k {
        for r in 0..k {
            let total: u64 = cm[r * k..(r + 1) * k].iter().sum();
            if total > 0 {
                for c in 0..k {
                    norm[r * k + c] = cm[r * k + c] as f64 / total as f64;
                }
            }
        }
    }
    let conf = dir.join(format!("confusion.{ext}"));
    let labels: Vec<String> = (0..k).map(name).collect();
    heatmap(&conf, "confusion matrix (rows normalised)", &labels, &norm)?;
    Ok(vec![iou, dice_path, conf])
}

/// `DIR/<sequence>_<object>.EXT`: J and F per frame of each object of a video evaluation.
pub fn video_plots(
    dir: &Path,
    ext: &str,
    objects: &[crate::metrics::video::ObjectResult],
) -> Result<Vec<std::path::PathBuf>> {
    let mut out = Vec::new();
    for o in objects {
        let pts = |v: &[f64]| v.iter().enumerate().map(|(i, &y)| (i as f64, y)).collect();
        let p = dir.join(format!("{}_{}.{ext}", o.sequence, o.object));
        line_plot(
            &p,
            &[LinePanel {
                title: format!(
                    "{} object {}: J {:.3} (decay {:.3}), F {:.3} (decay {:.3})",
                    o.sequence, o.object, o.j.mean, o.j.decay, o.f.mean, o.f.decay
                ),
                x_label: "frame".into(),
                y_label: "J / F".into(),
                lines: vec![
                    Line {
                        name: "J (region)".into(),
                        points: pts(&o.j_frames),
                    },
                    Line {
                        name: "F (boundary)".into(),
                        points: pts(&o.f_frames),
                    },
                ],
                mark_x: None,
            }],
            (900, 360),
        )?;
        out.push(p);
    }
    Ok(out)
}

/// The plots of a COCO evaluation (`iou` names it: segm, bbox, boundary), `names` by category
/// id: `DIR/<iou>_pr.EXT` (precision-recall at IoU 0.5, 0.75 and 0.5:0.95 over all categories,
/// and the five categories with the lowest AP), `DIR/<iou>_ap_by_size.EXT` (AP of small,
/// medium and large objects) and `DIR/<iou>_ap_per_category.EXT` (sorted).
pub fn coco_plots(
    dir: &Path,
    ext: &str,
    iou: &str,
    report: &crate::metrics::coco::CocoReport,
    names: &std::collections::HashMap<u64, String>,
) -> Result<Vec<std::path::PathBuf>> {
    let name = |c: u64| names.get(&c).cloned().unwrap_or_else(|| c.to_string());
    let ap_of = |c: u64| {
        report
            .per_category
            .iter()
            .find(|x| x.category_id == c)
            .map(|x| x.ap)
            .unwrap_or(-1.0)
    };
    let mut out = Vec::new();
    if let Some(c) = &report.curves {
        let line = |label: String, v: &[f64]| Line {
            name: label,
            points: c.recall.iter().copied().zip(v.iter().copied()).collect(),
        };
        let mut worst: Vec<&(u64, Vec<f64>)> = c
            .per_category
            .iter()
            .filter(|(k, _)| ap_of(*k) > -1.0)
            .collect();
        worst.sort_by(|a, b| ap_of(a.0).total_cmp(&ap_of(b.0)));
        worst.truncate(5);
        let p = dir.join(format!("{iou}_pr.{ext}"));
        line_plot(
            &p,
            &[
                LinePanel {
                    title: format!(
                        "{iou}: precision-recall, all categories (AP {:.3}, AP50 {:.3}, AP75 {:.3})",
                        report.stats[0], report.stats[1], report.stats[2]
                    ),
                    x_label: "recall".into(),
                    y_label: "precision".into(),
                    lines: vec![
                        line("IoU 0.50".into(), &c.iou_50),
                        line("IoU 0.75".into(), &c.iou_75),
                        line("IoU 0.50:0.95".into(), &c.iou_50_95),
                    ],
                    mark_x: None,
                },
                LinePanel {
                    title: format!(
                        "{iou}: the {} categories with the lowest AP (IoU 0.50:0.95)",
                        worst.len()
                    ),
                    x_label: "recall".into(),
                    y_label: "precision".into(),
                    lines: worst
                        .iter()
                        .map(|(k, v)| line(format!("{} (AP {:.3})", name(*k), ap_of(*k)), v))
                        .collect(),
                    mark_x: None,
                },
            ],
            (960, 760),
        )?;
        out.push(p);
    }
    let size = |v: f64| if v > -1.0 { v } else { f64::NAN };
    let p = dir.join(format!("{iou}_ap_by_size.{ext}"));
    bar_plot(
        &p,
        &format!("{iou}: AP by object size (all {:.3})", report.stats[0]),
        "AP",
        &[
            ("small".to_string(), size(report.stats[3])),
            ("medium".to_string(), size(report.stats[4])),
            ("large".to_string(), size(report.stats[5])),
        ],
        640,
    )?;
    out.push(p);
    let mut bars: Vec<(String, f64)> = report
        .per_category
        .iter()
        .filter(|c| c.ap > -1.0)
        .map(|c| (name(c.category_id), c.ap))
        .collect();
    bars.sort_by(|a, b| b.1.total_cmp(&a.1));
    let p = dir.join(format!("{iou}_ap_per_category.{ext}"));
    bar_plot(&p, &format!("{iou}: AP per category"), "AP", &bars, 640)?;
    out.push(p);
    Ok(out)
}

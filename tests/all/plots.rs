//! Plots read back: sizes, legends beside (never over) the data, lines drawn inside the axes,
//! heatmap cells coloured exactly where the matrix is non-zero, SVG output, and the plots the
//! commands write (`train`'s curve.png, `eval semantic --plot`, `eval video --plot`, `eval coco
//! --plot`).

use crate::common::{eval_semantic, shared_data, tiny_train, tmp};
use segrs::data::image_io::read_image;
use segrs::viz::plot::{COLORS, Line, LinePanel, heat_color, heatmap, line_plot};

fn rgb(path: &std::path::Path) -> (Vec<u8>, usize, usize) {
    let p = read_image(path).unwrap();
    (p.with_channels(3).to_rgb8(), p.width, p.height)
}

fn count_color(px: &[u8], w: usize, rect: (i32, i32, i32, i32), c: (u8, u8, u8)) -> usize {
    let (x0, y0, x1, y1) = rect;
    let mut n = 0;
    for y in y0.max(0)..y1 {
        for x in x0.max(0)..x1.min(w as i32) {
            let i = (y as usize * w + x as usize) * 3;
            if i + 2 < px.len() && (px[i], px[i + 1], px[i + 2]) == c {
                n += 1;
            }
        }
    }
    n
}

#[test]
fn line_plots_keep_the_legend_off_the_data() {
    let d = tmp("plots-lines");
    let p = d.join("curves.png");
    let line = |name: &str, f: fn(f64) -> f64| Line {
        name: name.into(),
        points: (0..30).map(|i| (i as f64, f(i as f64))).collect(),
    };
    let panels = [
        LinePanel {
            title: "loss".into(),
            x_label: "epoch".into(),
            y_label: "loss".into(),
            lines: vec![
                line("train", |x| 1.0 / (1.0 + x)),
                line("val", |x| 1.2 / (1.0 + 0.5 * x)),
            ],
            mark_x: Some((12.0, "best epoch 12".into())),
        },
        LinePanel {
            title: "validation".into(),
            x_label: "epoch".into(),
            y_label: "score".into(),
            lines: vec![line("mIoU", |x| 1.0 - 1.0 / (1.0 + x))],
            mark_x: None,
        },
    ];
    let layout = line_plot(&p, &panels, (900, 640)).unwrap();
    let (px, w, h) = rgb(&p);
    assert_eq!((w, h), (900, 640));
    assert_eq!(layout.plot_areas.len(), 2);
    for (area, legend) in layout.plot_areas.iter().zip(&layout.legends) {
        assert!(
            legend.0 >= area.2,
            "the legend {legend:?} starts right of the axes {area:?}"
        );
        // the lines are drawn inside the axes, and the legend holds their swatches
        for c in COLORS.iter().take(1) {
            assert!(
                count_color(&px, w, *area, *c) > 50,
                "line pixels in {area:?}"
            );
            assert!(
                count_color(&px, w, *legend, *c) > 10,
                "swatch in {legend:?}"
            );
        }
    }
    // SVG: the same plot as text, names included
    let s = d.join("curves.svg");
    line_plot(&s, &panels, (900, 640)).unwrap();
    let svg = std::fs::read_to_string(&s).unwrap();
    assert!(svg.starts_with("<svg") && svg.contains("best epoch 12") && svg.contains("mIoU"));
    let e = line_plot(&d.join("x.gif"), &panels, (100, 100))
        .unwrap_err()
        .to_string();
    assert!(e.contains(".png or .svg"), "{e}");
}

#[test]
fn a_150_class_confusion_matrix_names_every_class() {
    let d = tmp("plots-heatmap-150");
    let n = 150;
    let names: Vec<String> = (0..n).map(|i| format!("class {i}")).collect();
    let m: Vec<f64> = (0..n * n)
        .map(|i| ((i % n == i / n) as u8) as f64)
        .collect();
    let p = d.join("confusion.svg");
    let layout = heatmap(&p, "ADE20K-sized", &names, &m).unwrap();
    let svg = std::fs::read_to_string(&p).unwrap();
    let texts: Vec<&str> = svg.lines().map(str::trim).collect();
    for name in &names {
        // Each name twice: a row (ground truth) and a column (prediction).
        assert_eq!(texts.iter().filter(|t| *t == name).count(), 2, "{name}");
    }
    let (x0, y0, x1, y1) = layout.plot_areas[0];
    assert!(
        (y1 - y0) as usize >= 11 * n && (x1 - x0) as usize >= 11 * n,
        "rows of 11 px or more"
    );
}

#[test]
fn heatmap_cells_are_coloured_where_the_matrix_is_non_zero() {
    let d = tmp("plots-heatmap");
    let n = 6;
    let names: Vec<String> = (0..n).map(|i| format!("class {i}")).collect();
    let mut m = vec![0.0f64; n * n];
    for i in 0..n {
        m[i * n + i] = 0.7;
        m[i * n + (i + 1) % n] = 0.3;
    }
    let p = d.join("confusion.png");
    let layout = heatmap(&p, "confusion", &names, &m).unwrap();
    let (px, w, _) = rgb(&p);
    let (x0, y0, x1, y1) = layout.plot_areas[0];
    let (cw, ch) = ((x1 - x0) as f64 / n as f64, (y1 - y0) as f64 / n as f64);
    for r in 0..n {
        for c in 0..n {
            let (x, y) = (
                x0 + ((c as f64 + 0.5) * cw) as i32,
                y0 + ((r as f64 + 0.5) * ch) as i32,
            );
            let i = (y as usize * w + x as usize) * 3;
            let want = heat_color(m[r * n + c]);
            assert_eq!(
                (px[i], px[i + 1], px[i + 2]),
                (want.0, want.1, want.2),
                "cell ({r}, {c})"
            );
        }
    }
}

#[test]
fn the_commands_write_their_plots() {
    let Some(isbi) = shared_data("isbi2012_membrane") else {
        return;
    };
    let d = tmp("plots-cli");
    let run = d.join("run");
    let images = isbi.join("train/image");
    let gt = isbi.join("train/label");
    let (code, so, se) = tiny_train(
        &images,
        &gt,
        &run,
        "2",
        &[
            "--stems",
            "0-5",
            "--classes",
            "2",
            "--binary",
            "--in-channels",
            "1",
            "--val-split",
            "0.34",
        ],
    );
    assert_eq!(code, 0, "{so}{se}");
    let (_, w, h) = rgb(&run.join("curve.png"));
    assert_eq!((w, h), (900, 640));
    // eval semantic --plot on the ground truth against itself
    let plots = d.join("semantic");
    let (code, so, se) = eval_semantic(
        &gt,
        &gt,
        &[
            "--classes",
            "256",
            "--ignore-index",
            "none",
            "--stems",
            "0-2",
            "--plot",
            plots.to_str().unwrap(),
            "--plot-format",
            "svg",
        ],
    );
    assert_eq!(code, 0, "{so}{se}");
    for f in ["per_class_iou.svg", "per_class_dice.svg", "confusion.svg"] {
        let s = std::fs::read_to_string(plots.join(f)).unwrap();
        assert!(s.starts_with("<svg"), "{f}");
    }
    assert!(
        std::fs::read_to_string(plots.join("per_class_iou.svg"))
            .unwrap()
            .contains("255")
    );
}

#[test]
fn eval_coco_writes_pr_curves_and_ap_bars() {
    let Some(data) = shared_data("coco128_instances") else {
        return;
    };
    let d = tmp("plots-coco");
    let gt = data.join("annotations").join("instances_train2017.json");
    let dt = crate::common::fixtures().join("coco/coco128_results.json");
    let (code, out, err) = crate::common::segrs(&[
        "eval",
        "coco",
        "--gt",
        gt.to_str().unwrap(),
        "--dt",
        dt.to_str().unwrap(),
        "--plot",
        d.to_str().unwrap(),
    ]);
    assert_eq!(code, 0, "{out}{err}");
    let (px, w, h) = rgb(&d.join("segm_pr.png"));
    assert_eq!((w, h), (960, 760));
    // The three all-category curves are drawn in the first three line colours.
    for c in &COLORS[..3] {
        assert!(
            count_color(&px, w, (0, 0, w as i32, h as i32 / 2), *c) > 50,
            "curve colour {c:?} in the upper panel"
        );
    }
    let (_, bw, bh) = rgb(&d.join("segm_ap_by_size.png"));
    assert_eq!(bw, 640);
    assert!(bh >= 70 + 3 * 16);
    let (_, _, ch) = rgb(&d.join("segm_ap_per_category.png"));
    assert!(
        ch > 70 + 20 * 16,
        "a bar per category with ground truth and detections"
    );
    assert!(out.contains("segm_pr.png"));
}

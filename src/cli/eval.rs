//! `segrs eval semantic`: metrics of predicted label maps against ground truth.

use anyhow::{Context, Result, bail};
use clap::{Args, Subcommand};
use rayon::prelude::*;
use segrs::data::folder::{StemFilter, list_images};
use segrs::data::image_io::read_mask;
use segrs::io::write_json;
use segrs::metrics::semantic::evaluate_dirs;
use std::path::{Path, PathBuf};

#[derive(Subcommand, Debug)]
pub enum EvalCommand {
    /// Semantic segmentation: pixel accuracy, IoU / mIoU, Dice, Boundary F1 and Boundary IoU.
    Semantic(SemanticArgs),
    /// Video object segmentation: DAVIS J (region IoU) and F (boundary) with mean, recall, decay.
    Video(VideoArgs),
    /// COCO instance evaluation: the 12 COCOeval numbers (mask or box) and per-category AP.
    Coco(CocoArgs),
    /// COCO panoptic evaluation: PQ, SQ, RQ for all / things / stuff and per class.
    Panoptic(PanopticArgs),
}

#[derive(Args, Debug)]
pub struct SemanticArgs {
    /// Folder of predicted label PNGs (class index per pixel).
    #[arg(long)]
    pub pred: PathBuf,
    /// Folder of ground-truth masks with the same stems.
    #[arg(long)]
    pub gt: PathBuf,
    /// Number of classes.
    #[arg(long)]
    pub classes: usize,
    /// Ground-truth value that counts in no metric (`none` to disable).
    #[arg(long, default_value = "255", value_parser = parse_ignore)]
    pub ignore_index: IgnoreIndex,
    #[command(flatten)]
    pub labels: super::labels::LabelArgs,
    /// Write plots here: per-class IoU (sorted) and the row-normalised confusion matrix.
    #[arg(long)]
    pub plot: Option<PathBuf>,
    #[arg(long, value_enum, default_value_t = PlotFormat::Png)]
    pub plot_format: PlotFormat,
    /// Only these stems (e.g. `25-29` or `a,b`).
    #[arg(long)]
    pub stems: Option<StemFilter>,
    /// Write the numbers as JSON to this file.
    #[arg(long)]
    pub json: Option<PathBuf>,
    /// Also score segments as the ISBI 2012 challenge does, segments being the connected
    /// components of each class > 0: the foreground-restricted adapted Rand error and the
    /// variation of information (split / merge), per image and their mean; the pixel error
    /// (1 - accuracy) and the challenge's pixel error (1 - the foreground pixels' F-score).
    #[arg(long)]
    pub instances: bool,
    /// Components are 4-connected (scipy's default) or 8-connected.
    #[arg(long, default_value_t = 4, value_parser = parse_connectivity)]
    pub connectivity: u8,
}

fn parse_connectivity(s: &str) -> std::result::Result<u8, String> {
    match s {
        "4" => Ok(4),
        "8" => Ok(8),
        _ => Err(format!("connectivity {s}: 4 or 8")),
    }
}

/// `--ignore-index`: a label value, or `none`.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct IgnoreIndex(pub Option<u32>);

pub fn parse_ignore(s: &str) -> std::result::Result<IgnoreIndex, String> {
    if s.eq_ignore_ascii_case("none") {
        return Ok(IgnoreIndex(None));
    }
    s.parse::<u32>()
        .map(|v| IgnoreIndex(Some(v)))
        .map_err(|e| format!("{s}: {e}"))
}

pub fn run(cmd: EvalCommand) -> Result<()> {
    match cmd {
        EvalCommand::Semantic(a) => semantic(a),
        EvalCommand::Video(a) => video(a),
        EvalCommand::Coco(a) => coco(a),
        EvalCommand::Panoptic(a) => panoptic(a),
    }
}

fn semantic(a: SemanticArgs) -> Result<()> {
    let names = a.labels.names(a.classes)?;
    let conv = a.labels.convention(a.ignore_index.0)?;
    let (mut report, n, unmatched) = evaluate_dirs(
        &a.pred,
        &a.gt,
        a.classes,
        a.ignore_index.0,
        &conv,
        a.stems.as_ref(),
    )?;
    a.labels.report_lossy();
    if let Some(names) = &names {
        report.name_classes(names)?;
    }
    if let Some(dir) = &a.plot {
        let written = segrs::viz::plot::semantic_plots(
            dir,
            a.plot_format.ext(),
            &report,
            names.as_deref().unwrap_or(&[]),
        )?;
        for p in written {
            println!("wrote {}", p.display());
        }
    }
    println!("evaluated {n} image(s)");
    if unmatched > 0 {
        eprintln!(
            "note: {unmatched} ground-truth mask(s) have no prediction and were not evaluated"
        );
    }
    print!("{}", report.table(None));
    if a.instances {
        use segrs::ops::components::Connectivity;
        let (_, pairs, _) =
            segrs::metrics::semantic::load_pairs(&a.pred, &a.gt, &conv, a.stems.as_ref())?;
        let conn = if a.connectivity == 8 {
            Connectivity::Eight
        } else {
            Connectivity::Four
        };
        let s = segrs::metrics::segments::evaluate(&pairs, a.ignore_index.0, conn);
        println!(
            "segments ({}-connected components of each class > 0, {} image(s), mean):",
            s.connectivity, s.images
        );
        if let Some(acc) = report.pixel_accuracy {
            println!("  pixel error (1 - accuracy)         {:.4}", 1.0 - acc);
        }
        println!(
            "  ISBI pixel error (1 - F-score)     {:.4}  (foreground F-score {:.4}, pooled)",
            s.isbi_pixel_error, s.foreground_f_score
        );
        println!(
            "  adapted Rand error (foreground)    {:.4}  (precision {:.4}, recall {:.4})",
            s.mean.rand_error, s.mean.rand_precision, s.mean.rand_recall
        );
        println!(
            "  variation of information           {:.4}  (split {:.4}, merge {:.4})",
            s.mean.vi_split + s.mean.vi_merge,
            s.mean.vi_split,
            s.mean.vi_merge
        );
        report.segments = Some(s);
    }
    if let Some(path) = &a.json {
        write_json(path, &report)?;
        println!("wrote {}", path.display());
    }
    Ok(())
}

#[derive(Args, Debug)]
pub struct VideoArgs {
    /// Ground truth: a DAVIS `Annotations/480p` folder (one subfolder of PNG frames per sequence),
    /// or a DAVIS root holding `Annotations/480p` or `Annotations/`.
    #[arg(long)]
    pub gt: PathBuf,
    /// Predictions: one subfolder per sequence, PNGs named as the ground-truth frames.
    #[arg(long)]
    pub pred: PathBuf,
    /// How ground-truth values map to objects: `indexed` (k = object k, 255 = void, DAVIS 2017),
    /// `binary` ({0,255} single object, DAVIS 2016), or `auto` (binary when every value is 0 or 255).
    #[arg(long, value_enum, default_value_t = GtEncodingArg::Auto)]
    pub gt_encoding: GtEncodingArg,
    /// Only these sequences (comma-separated names).
    #[arg(long, value_delimiter = ',')]
    pub sequences: Option<Vec<String>>,
    /// Write the numbers as JSON to this file.
    #[arg(long)]
    pub json: Option<PathBuf>,
    /// Write J and F per frame for each object here.
    #[arg(long)]
    pub plot: Option<PathBuf>,
    #[arg(long, value_enum, default_value_t = PlotFormat::Png)]
    pub plot_format: PlotFormat,
}

/// The file format of plots.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum PlotFormat {
    Png,
    Svg,
}

impl PlotFormat {
    pub fn ext(self) -> &'static str {
        match self {
            Self::Png => "png",
            Self::Svg => "svg",
        }
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum GtEncodingArg {
    Auto,
    Indexed,
    Binary,
}

fn annotations_root(p: &Path) -> PathBuf {
    for cand in [p.join("Annotations").join("480p"), p.join("Annotations")] {
        if cand.is_dir() {
            return cand;
        }
    }
    p.to_path_buf()
}

fn video(a: VideoArgs) -> Result<()> {
    use segrs::metrics::video::{GtEncoding, evaluate_sequence, summarize};
    let gt_root = annotations_root(&a.gt);
    let mut seqs: Vec<String> = std::fs::read_dir(&gt_root)
        .with_context(|| format!("{}: cannot read", gt_root.display()))?
        .filter_map(|e| e.ok())
        .filter(|e| e.path().is_dir())
        .map(|e| e.file_name().to_string_lossy().to_string())
        .filter(|n| a.sequences.as_ref().is_none_or(|s| s.contains(n)))
        .collect();
    seqs.sort();
    if seqs.is_empty() {
        bail!("{}: no sequence folders", gt_root.display());
    }
    let mut objects = Vec::new();
    for seq in &seqs {
        let gt_frames = list_images(&gt_root.join(seq))?;
        let pred_dir = a.pred.join(seq);
        if !pred_dir.is_dir() {
            bail!("{}: no predictions for sequence {seq}", pred_dir.display());
        }
        let gts: Vec<segrs::data::image_io::LabelMap> = gt_frames
            .par_iter()
            .map(|(_, p)| read_mask(p))
            .collect::<Result<_>>()?;
        let n = gts.len();
        let preds: Vec<segrs::data::image_io::LabelMap> = gt_frames
            .par_iter()
            .enumerate()
            .map(|(i, (stem, gp))| {
                let g = &gts[i];
                let pp = pred_dir.join(format!("{stem}.png"));
                if !pp.exists() {
                    if i == 0 || i + 1 == n {
                        // First and last frames are not evaluated.
                        return Ok(segrs::data::image_io::LabelMap {
                            width: g.width,
                            height: g.height,
                            data: vec![0; g.data.len()],
                        });
                    }
                    bail!(
                        "{}: missing prediction for frame {} of sequence {seq}",
                        pp.display(),
                        gp.display()
                    );
                }
                let p = read_mask(&pp)?;
                if (p.width, p.height) != (g.width, g.height) {
                    bail!(
                        "{}: prediction is {}x{} but the frame is {}x{}",
                        pp.display(),
                        p.width,
                        p.height,
                        g.width,
                        g.height
                    );
                }
                Ok(p)
            })
            .collect::<Vec<Result<_>>>()
            .into_iter()
            .collect::<Result<_>>()?; // the first problem in frame order
        let enc = match a.gt_encoding {
            GtEncodingArg::Indexed => GtEncoding::Indexed,
            GtEncodingArg::Binary => GtEncoding::Binary,
            GtEncodingArg::Auto => {
                if gts
                    .iter()
                    .all(|g| g.data.iter().all(|&v| v == 0 || v == 255))
                {
                    GtEncoding::Binary
                } else {
                    GtEncoding::Indexed
                }
            }
        };
        objects.extend(evaluate_sequence(seq, &gts, &preds, enc)?);
    }
    let report = summarize(&objects);
    if let Some(dir) = &a.plot {
        for p in segrs::viz::plot::video_plots(dir, a.plot_format.ext(), &objects)? {
            println!("wrote {}", p.display());
        }
    }
    println!("{:<24}{:>8}{:>8}", "sequence", "J", "F");
    for (name, s) in &report.per_sequence {
        println!("{:<24}{:>8.4}{:>8.4}", name, s.j, s.f);
    }
    println!(
        "\nJ&F {:.4} | J mean {:.4} recall {:.4} decay {:.4} | F mean {:.4} recall {:.4} decay {:.4}",
        report.jf,
        report.j.mean,
        report.j.recall,
        report.j.decay,
        report.f.mean,
        report.f.recall,
        report.f.decay
    );
    if let Some(path) = &a.json {
        write_json(path, &report)?;
        println!("wrote {}", path.display());
    }
    Ok(())
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum CocoIouType {
    /// Mask IoU (instance segmentation).
    Segm,
    /// Box IoU (detection).
    Bbox,
    /// Boundary AP: IoU = min(mask IoU, boundary IoU), dilation ratio 0.02 (Cheng et al. 2021).
    Boundary,
}

#[derive(Args, Debug)]
pub struct CocoArgs {
    /// COCO instances JSON (ground truth).
    #[arg(long)]
    pub gt: PathBuf,
    /// COCO results JSON: a list of {image_id, category_id, segmentation (RLE) or bbox, score}.
    #[arg(long)]
    pub dt: PathBuf,
    #[arg(long, value_enum, default_value_t = CocoIouType::Segm)]
    pub iou_type: CocoIouType,
    /// Write {"stats": [12 numbers], "per_category": [{"category_id", "ap"}]} to this file.
    #[arg(long)]
    pub json: Option<PathBuf>,
    /// Give pycocotools' numbers where they differ from the correct ones (ground-truth
    /// annotations with id 0, which pycocotools takes for "unmatched").
    #[arg(long)]
    pub pycocotools_compat: bool,
    /// Write plots here: precision-recall curves (IoU 0.5 / 0.75 / 0.5:0.95, and the worst
    /// categories), AP by object size, AP per category.
    #[arg(long)]
    pub plot: Option<PathBuf>,
    #[arg(long, value_enum, default_value_t = PlotFormat::Png)]
    pub plot_format: PlotFormat,
}

#[derive(Args, Debug)]
pub struct PanopticArgs {
    /// Ground-truth COCO panoptic JSON.
    #[arg(long)]
    pub gt_json: PathBuf,
    /// Folder of ground-truth panoptic PNGs (id = R + 256 G + 256^2 B).
    #[arg(long)]
    pub gt_dir: PathBuf,
    #[arg(long)]
    pub pred_json: PathBuf,
    #[arg(long)]
    pub pred_dir: PathBuf,
    /// JSON list of categories (id, isthing, ...) to use instead of the ground truth's.
    #[arg(long)]
    pub categories: Option<PathBuf>,
    /// Write {"All", "Things", "Stuff", "per_class"} (fractions, as panopticapi) to this file.
    #[arg(long)]
    pub json: Option<PathBuf>,
}

fn coco(a: CocoArgs) -> Result<()> {
    use segrs::metrics::coco::evaluate_files_both;
    let both = |t: Option<hotcoco::IouType>| -> Result<segrs::metrics::coco::CocoReport> {
        let ev = match t {
            Some(t) => evaluate_files_both(&a.gt, &a.dt, t)?,
            None => segrs::metrics::boundary_ap::evaluate_files_both(&a.gt, &a.dt)?,
        };
        match ev.pycocotools {
            Some(py) if py.stats != ev.report.stats => {
                eprintln!(
                    "warning: {} has an annotation with id 0, which pycocotools takes for \"unmatched\" (a detection matched to it counts as a false positive there): AP {:.4} here, {:.4} with pycocotools{}",
                    a.gt.display(),
                    ev.report.stats[0],
                    py.stats[0],
                    if a.pycocotools_compat {
                        "; reporting pycocotools' numbers (--pycocotools-compat)"
                    } else {
                        "; renumber the annotations from 1, or pass --pycocotools-compat for its numbers"
                    }
                );
                Ok(if a.pycocotools_compat { py } else { ev.report })
            }
            _ => Ok(ev.report),
        }
    };
    let (report, name) = match a.iou_type {
        CocoIouType::Segm => (both(Some(hotcoco::IouType::Segm))?, "segm"),
        CocoIouType::Bbox => (both(Some(hotcoco::IouType::Bbox))?, "bbox"),
        CocoIouType::Boundary => (both(None)?, "boundary"),
    };
    print!("{}", report.table(name));
    if let Some(path) = &a.json {
        write_json(path, &report)?;
        println!("wrote {}", path.display());
    }
    if let Some(dir) = &a.plot {
        let gt = segrs::formats::coco::load_gt(&a.gt)?;
        let names: std::collections::HashMap<u64, String> = gt
            .dataset
            .categories
            .iter()
            .map(|c| (c.id, c.name.clone()))
            .collect();
        if report.curves.is_none() {
            eprintln!(
                "note: no precision-recall curves for this evaluation ({}); AP plots only",
                if name == "boundary" {
                    "boundary AP"
                } else {
                    "pycocotools' numbers"
                }
            );
        }
        for p in segrs::viz::plot::coco_plots(dir, a.plot_format.ext(), name, &report, &names)? {
            println!("wrote {}", p.display());
        }
    }
    Ok(())
}

fn panoptic(a: PanopticArgs) -> Result<()> {
    let r = segrs::metrics::panoptic::evaluate_files(
        &a.gt_json,
        &a.gt_dir,
        &a.pred_json,
        &a.pred_dir,
        a.categories.as_deref(),
    )?;
    println!("{:<8}{:>8}{:>8}{:>8}{:>6}", "", "PQ", "SQ", "RQ", "N");
    for (name, s) in [("All", &r.all), ("Things", &r.things), ("Stuff", &r.stuff)] {
        println!(
            "{:<8}{:>8.2}{:>8.2}{:>8.2}{:>6}",
            name,
            100.0 * s.pq,
            100.0 * s.sq,
            100.0 * s.rq,
            s.n
        );
    }
    if let Some(path) = &a.json {
        write_json(path, &r)?;
        println!("wrote {}", path.display());
    }
    Ok(())
}

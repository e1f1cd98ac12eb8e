//! `segrs viz`: pictures of instance masks (ground truth and predictions side by side), panoptic
//! maps, and semantic ground-truth-vs-prediction panels.

use anyhow::{Result, bail};
use clap::{Args, Subcommand};
use segrs::data::image_io::{read_image, read_mask};
use segrs::formats::coco::{decode_rowmajor, load_gt, load_results};
use segrs::formats::panoptic;
use segrs::viz::canvas::Canvas;
use segrs::viz::instances::{DrawnObject, color_of, draw_objects};
use segrs::viz::overlay::{colorize, overlay, panels};
use segrs::viz::palette::palette_for;
use std::collections::HashMap;
use std::path::{Path, PathBuf};

#[derive(Subcommand, Debug)]
pub enum VizCommand {
    /// COCO instances (and optional results): masks in distinct colours, contours, class + score.
    Instances(InstancesArgs),
    /// COCO panoptic maps over their images.
    Panoptic(PanopticArgs),
    /// Semantic label maps: image | ground truth | prediction | overlay.
    Semantic(SemanticArgs),
}

#[derive(Args, Debug)]
pub struct InstancesArgs {
    /// COCO instances JSON.
    #[arg(long)]
    pub gt: PathBuf,
    /// COCO results JSON, drawn beside the ground truth.
    #[arg(long)]
    pub dt: Option<PathBuf>,
    /// Folder holding the images named in the JSON.
    #[arg(long)]
    pub images: PathBuf,
    /// Draw detections with at least this score.
    #[arg(long, default_value_t = 0.5)]
    pub score_thr: f64,
    /// At most this many images.
    #[arg(long, default_value_t = 20)]
    pub max_images: usize,
    #[arg(long)]
    pub out: PathBuf,
}

#[derive(Args, Debug)]
pub struct PanopticArgs {
    #[arg(long)]
    pub json: PathBuf,
    /// Folder of panoptic PNGs.
    #[arg(long)]
    pub dir: PathBuf,
    #[arg(long)]
    pub images: PathBuf,
    #[arg(long)]
    pub categories: Option<PathBuf>,
    #[arg(long)]
    pub out: PathBuf,
}

#[derive(Args, Debug)]
pub struct SemanticArgs {
    #[arg(long)]
    pub image: PathBuf,
    #[arg(long)]
    pub gt: PathBuf,
    #[arg(long)]
    pub pred: PathBuf,
    #[arg(long)]
    pub classes: usize,
    #[arg(long)]
    pub out: PathBuf,
}

pub fn run(cmd: VizCommand) -> Result<()> {
    match cmd {
        VizCommand::Instances(a) => instances(a),
        VizCommand::Panoptic(a) => panoptic_viz(a),
        VizCommand::Semantic(a) => semantic(a),
    }
}

fn stem_of(file_name: &str) -> String {
    Path::new(file_name)
        .file_stem()
        .map(|s| s.to_string_lossy().to_string())
        .unwrap_or_else(|| file_name.to_string())
}

fn load_rgb(path: &Path, w: usize, h: usize) -> Result<Vec<u8>> {
    let pic = read_image(path)?;
    if (pic.width, pic.height) != (w, h) {
        bail!(
            "{}: image is {}x{} but the annotations say {}x{}",
            path.display(),
            pic.width,
            pic.height,
            w,
            h
        );
    }
    Ok(pic.to_rgb8())
}

fn coco_objects(
    coco: &hotcoco::COCO,
    image_id: u64,
    names: &HashMap<u64, String>,
    min_score: Option<f64>,
) -> Result<Vec<DrawnObject>> {
    let mut anns = coco.load_anns(&coco.get_ann_ids(&[image_id], &[], None, None));
    anns.sort_by(|a, b| {
        a.score
            .unwrap_or(1.0)
            .partial_cmp(&b.score.unwrap_or(1.0))
            .unwrap_or(std::cmp::Ordering::Equal)
    });
    let mut out = Vec::new();
    for (k, a) in anns.iter().enumerate() {
        if min_score.is_some_and(|t| a.score.unwrap_or(1.0) < t) {
            continue;
        }
        let Some(rle) = coco.ann_to_rle(a) else {
            bail!("annotation {} of image {image_id}: cannot rasterise", a.id)
        };
        let name = names
            .get(&a.category_id)
            .cloned()
            .unwrap_or_else(|| a.category_id.to_string());
        let label = match a.score {
            Some(s) => format!("{name} {s:.2}"),
            None => name,
        };
        out.push(DrawnObject {
            mask: decode_rowmajor(&rle),
            color: color_of(k + a.category_id as usize * 7),
            label: Some(label),
        });
    }
    Ok(out)
}

fn instances(a: InstancesArgs) -> Result<()> {
    let gt = load_gt(&a.gt)?;
    let dt = match &a.dt {
        Some(p) => Some(load_results(&gt, p, false)?),
        None => None,
    };
    let names: HashMap<u64, String> = gt
        .dataset
        .categories
        .iter()
        .map(|c| (c.id, c.name.clone()))
        .collect();
    let mut n = 0;
    for img in gt.dataset.images.iter().take(a.max_images) {
        let (w, h) = (img.width as usize, img.height as usize);
        let rgb = load_rgb(&a.images.join(&img.file_name), w, h)?;
        let gt_pic = draw_objects(&rgb, w, h, &coco_objects(&gt, img.id, &names, None)?, 0.45);
        let pic = match &dt {
            Some(dt) => {
                let d = draw_objects(
                    &rgb,
                    w,
                    h,
                    &coco_objects(dt, img.id, &names, Some(a.score_thr))?,
                    0.45,
                );
                panels(&[
                    ("ground truth", &gt_pic),
                    (&format!("predictions (score >= {})", a.score_thr), &d),
                ])
            }
            None => gt_pic,
        };
        pic.save_png(&a.out.join(format!("{}.png", stem_of(&img.file_name))))?;
        n += 1;
    }
    println!("wrote {n} picture(s) to {}", a.out.display());
    Ok(())
}

fn panoptic_viz(a: PanopticArgs) -> Result<()> {
    let pj = panoptic::read_json(&a.json)?;
    let cats = match &a.categories {
        Some(c) => panoptic::read_categories(c)?,
        None => pj.categories.clone(),
    };
    let by_id: HashMap<u32, &panoptic::PanopticCategory> = cats.iter().map(|c| (c.id, c)).collect();
    for ann in &pj.annotations {
        let png = a.dir.join(&ann.file_name);
        let ids = panoptic::read_id_png(&png)?;
        let stem = stem_of(&ann.file_name);
        let img = segrs::data::folder::list_images(&a.images)?
            .into_iter()
            .find(|(s, _)| *s == stem)
            .map(|(_, p)| p)
            .ok_or_else(|| anyhow::anyhow!("{}: no image named {stem}.*", a.images.display()))?;
        let rgb = load_rgb(&img, ids.width, ids.height)?;
        let objects: Vec<DrawnObject> = ann
            .segments_info
            .iter()
            .enumerate()
            .map(|(k, s)| {
                let cat = by_id.get(&s.category_id);
                let color = cat
                    .and_then(|c| if c.isthing { None } else { c.color })
                    .unwrap_or_else(|| color_of(k));
                let name = cat
                    .map(|c| c.name.clone())
                    .unwrap_or_else(|| s.category_id.to_string());
                let is_thing = cat.is_none_or(|c| c.isthing);
                DrawnObject {
                    mask: ids.data.iter().map(|&v| (v == s.id) as u8).collect(),
                    color,
                    label: is_thing.then_some(name),
                }
            })
            .collect();
        let pic = draw_objects(&rgb, ids.width, ids.height, &objects, 0.55);
        let orig = Canvas::from_rgb(ids.width, ids.height, rgb);
        panels(&[("image", &orig), ("panoptic", &pic)])
            .save_png(&a.out.join(format!("{stem}.png")))?;
    }
    println!(
        "wrote {} picture(s) to {}",
        pj.annotations.len(),
        a.out.display()
    );
    Ok(())
}

fn semantic(a: SemanticArgs) -> Result<()> {
    let pic = read_image(&a.image)?;
    let gt = read_mask(&a.gt)?;
    let pred = read_mask(&a.pred)?;
    for (p, m) in [(&a.gt, &gt), (&a.pred, &pred)] {
        if (m.width, m.height) != (pic.width, pic.height) {
            bail!(
                "{}: {}x{} but the image is {}x{}",
                p.display(),
                m.width,
                m.height,
                pic.width,
                pic.height
            );
        }
    }
    let pal = palette_for(a.classes);
    let rgb = pic.to_rgb8();
    let img = Canvas::from_rgb(pic.width, pic.height, rgb.clone());
    let out = panels(&[
        ("image", &img),
        ("ground truth", &colorize(&gt, &pal)),
        ("prediction", &colorize(&pred, &pal)),
        ("overlay", &overlay(&rgb, &pred, &pal, 0.45, Some(255))),
    ]);
    out.save_png(&a.out)?;
    println!("wrote {}", a.out.display());
    Ok(())
}

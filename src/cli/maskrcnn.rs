//! `segrs maskrcnn predict`: instance masks for a folder of images with a torchvision Mask R-CNN
//! checkpoint, written as COCO results and pictures; `segrs merge-results` joins the results of
//! sharded runs.

use anyhow::{Context, Result, bail};
use clap::{Args, Subcommand};
use segrs::data::folder::list_images;
use segrs::data::image_io::read_image;
use segrs::data::shard::Shard;
use segrs::formats::coco::{COCO_DETECTION_NAMES, load_gt, merge_results};
use segrs::models::mask_rcnn::{InstancePrediction, MaskRcnn, MaskRcnnConfig};
use segrs::viz::instances::{DrawnObject, color_of, draw_objects};
use std::path::{Path, PathBuf};

#[derive(Subcommand, Debug)]
pub enum MaskRcnnCommand {
    /// Detect and segment the instances of every image in a folder.
    Predict(PredictArgs),
}

#[derive(Args, Debug)]
pub struct PredictArgs {
    /// torchvision Mask R-CNN weights: `maskrcnn_resnet50_fpn[_v2]` state_dict (.pth) or safetensors.
    #[arg(long)]
    pub checkpoint: PathBuf,
    /// A folder of images (or one image).
    #[arg(long)]
    pub images: PathBuf,
    #[arg(long)]
    pub out: PathBuf,
    /// Keep detections scoring above this (`box_score_thresh`).
    #[arg(long, default_value_t = 0.05)]
    pub score_thresh: f32,
    /// Short side after resizing.
    #[arg(long, default_value_t = 800)]
    pub min_size: usize,
    /// Long side at most this after resizing.
    #[arg(long, default_value_t = 1333)]
    pub max_size: usize,
    /// Detections per image at most (`box_detections_per_img`).
    #[arg(long, default_value_t = 100)]
    pub detections: usize,
    /// COCO instances file: image ids and file names come from it, and the results are scored.
    #[arg(long)]
    pub gt: Option<PathBuf>,
    /// Class names, one per line, line k = label k (default: COCO's for 91-class checkpoints).
    #[arg(long)]
    pub labels: Option<PathBuf>,
    /// Process every N-th image starting at I (`I/N`); default from SLURM_ARRAY_TASK_ID /
    /// SLURM_ARRAY_TASK_COUNT or JOB_COMPLETION_INDEX (with --shards).
    #[arg(long)]
    pub shard: Option<String>,
    /// The number of shards of a Kubernetes Indexed Job (its index comes from JOB_COMPLETION_INDEX).
    #[arg(long)]
    pub shards: Option<usize>,
    /// Skip the pictures.
    #[arg(long)]
    pub no_overlays: bool,
}

#[derive(Args, Debug)]
pub struct MergeArgs {
    /// Results files, or folders whose `results*.json` files are taken.
    #[arg(required = true)]
    pub inputs: Vec<PathBuf>,
    #[arg(long)]
    pub out: PathBuf,
}

pub fn run(cmd: MaskRcnnCommand) -> Result<()> {
    match cmd {
        MaskRcnnCommand::Predict(a) => predict(a),
    }
}

/// The shard from `--shard`, or the scheduler's environment, or the whole folder.
pub fn resolve_shard(flag: Option<&str>, count: Option<usize>) -> Result<Shard> {
    match flag {
        Some(s) => Shard::parse(s),
        None => Ok(Shard::from_env(|k| std::env::var(k).ok(), count)?.unwrap_or(Shard::ALL)),
    }
}

fn class_names(a: &PredictArgs, num_classes: usize) -> Result<Vec<String>> {
    if let Some(p) = &a.labels {
        let text =
            std::fs::read_to_string(p).with_context(|| format!("{}: cannot read", p.display()))?;
        let names: Vec<String> = text.lines().map(|l| l.trim().to_string()).collect();
        if names.len() < num_classes {
            bail!(
                "{}: {} names for a checkpoint with {num_classes} classes (line k names label k, background first)",
                p.display(),
                names.len()
            );
        }
        return Ok(names);
    }
    Ok(if num_classes == COCO_DETECTION_NAMES.len() {
        COCO_DETECTION_NAMES.iter().map(|s| s.to_string()).collect()
    } else {
        (0..num_classes).map(|k| format!("class {k}")).collect()
    })
}

/// The category ids of the `--gt` file, when given.
fn gt_categories(a: &PredictArgs) -> Result<Option<std::collections::HashSet<u64>>> {
    let Some(p) = &a.gt else { return Ok(None) };
    let gt = load_gt(p)?;
    Ok(Some(gt.dataset.categories.iter().map(|c| c.id).collect()))
}

/// `(image_id, file name, path)` of every image: ids from `--gt`, else 1.. in name order.
fn numbered_images(a: &PredictArgs) -> Result<Vec<(u64, String, PathBuf)>> {
    let files: Vec<PathBuf> = if a.images.is_file() {
        vec![a.images.clone()]
    } else if a.images.is_dir() {
        list_images(&a.images)?
            .into_iter()
            .map(|(_, p)| p)
            .collect()
    } else {
        bail!("{}: no such image or folder", a.images.display());
    };
    if files.is_empty() {
        bail!("{}: no images", a.images.display());
    }
    let name = |p: &Path| p.file_name().unwrap().to_string_lossy().to_string();
    let Some(gt_path) = &a.gt else {
        return Ok(files
            .iter()
            .enumerate()
            .map(|(i, p)| (i as u64 + 1, name(p), p.clone()))
            .collect());
    };
    let gt = load_gt(gt_path)?;
    let ids: std::collections::HashMap<&str, u64> = gt
        .dataset
        .images
        .iter()
        .map(|im| (im.file_name.as_str(), im.id))
        .collect();
    files
        .iter()
        .map(|p| {
            let n = name(p);
            match ids.get(n.as_str()) {
                Some(&id) => Ok((id, n, p.clone())),
                None => bail!(
                    "{}: not an image of {} (no file_name {n:?} there)",
                    p.display(),
                    gt_path.display()
                ),
            }
        })
        .collect()
}

fn predict(a: PredictArgs) -> Result<()> {
    let shard = resolve_shard(a.shard.as_deref(), a.shards)?;
    let images = shard.select(numbered_images(&a)?);
    let model = MaskRcnn::load(&a.checkpoint)?;
    let names = class_names(&a, model.num_classes)?;
    let mut cfg = MaskRcnnConfig::default();
    cfg.transform.min_size = a.min_size;
    cfg.transform.max_size = a.max_size;
    cfg.boxes.score_thresh = a.score_thresh;
    cfg.boxes.detections_per_img = a.detections;
    if a.min_size == 0 || a.max_size < a.min_size || a.max_size > 8192 {
        bail!(
            "--min-size {} / --max-size {}: need 0 < min <= max <= 8192",
            a.min_size,
            a.max_size
        );
    }
    let overlays = a.out.join("overlays");
    std::fs::create_dir_all(if a.no_overlays { &a.out } else { &overlays })
        .with_context(|| format!("{}: cannot create", a.out.display()))?;
    let bar = indicatif::ProgressBar::new(images.len() as u64);
    bar.set_style(
        indicatif::ProgressStyle::with_template(
            "maskrcnn [{bar:30}] {pos}/{len} {msg} ({elapsed}<{eta})",
        )
        .unwrap(),
    );
    let categories = gt_categories(&a)?;
    let mut skipped: std::collections::BTreeMap<usize, usize> = Default::default();
    let mut records = Vec::new();
    for (id, file_name, path) in &images {
        bar.set_message(file_name.clone());
        let pic = read_image(path)?;
        let rgb = pic.to_rgb8();
        let pred = model
            .predict(&rgb, pic.height, pic.width, &cfg)
            .with_context(|| format!("{}", path.display()))?;
        for i in 0..pred.boxes.len() {
            // Scored against --gt: a class the ground truth does not have cannot be scored.
            if categories
                .as_ref()
                .is_some_and(|c| !c.contains(&(pred.labels[i] as u64)))
            {
                *skipped.entry(pred.labels[i]).or_default() += 1;
                continue;
            }
            records.push(pred.result_record(i, *id, file_name)?);
        }
        if !a.no_overlays {
            let stem = path.file_stem().unwrap().to_string_lossy().to_string();
            draw(&rgb, &pred, &names).save_png(&overlays.join(format!("{stem}.png")))?;
        }
        bar.inc(1);
    }
    bar.finish_and_clear();
    if !skipped.is_empty() {
        eprintln!(
            "note: {} detection(s) left out of the results: their classes are not categories of {} (label: count {:?})",
            skipped.values().sum::<usize>(),
            a.gt.as_ref().unwrap().display(),
            skipped
        );
    }
    let results = a.out.join(format!("results{}.json", shard.suffix()));
    segrs::io::write_json(&results, &records)?;
    println!(
        "{} detections in {} image(s) ({}, {} classes) -> {}",
        records.len(),
        images.len(),
        match model.variant {
            segrs::models::mask_rcnn::Variant::V1 => "maskrcnn_resnet50_fpn",
            segrs::models::mask_rcnn::Variant::V2 => "maskrcnn_resnet50_fpn_v2",
        },
        model.num_classes,
        results.display()
    );
    if let (Some(gt), true) = (&a.gt, shard == Shard::ALL) {
        for (iou, name) in [
            (hotcoco::IouType::Segm, "segm"),
            (hotcoco::IouType::Bbox, "bbox"),
        ] {
            let report = segrs::metrics::coco::evaluate_files(gt, &results, iou)?;
            print!("{}", report.table(name));
        }
    }
    Ok(())
}

/// Masks in distinct colours, boxes, and "name score" labels.
fn draw(rgb: &[u8], p: &InstancePrediction, names: &[String]) -> segrs::viz::canvas::Canvas {
    let objects: Vec<DrawnObject> = (0..p.boxes.len())
        .map(|i| DrawnObject {
            mask: p.mask(i),
            color: color_of(i),
            label: Some(format!(
                "{} {:.2}",
                names.get(p.labels[i]).map(String::as_str).unwrap_or("?"),
                p.scores[i]
            )),
        })
        .collect();
    let mut c = draw_objects(rgb, p.width, p.height, &objects, 0.45);
    for (i, b) in p.boxes.iter().enumerate() {
        c.rect_outline(b[0], b[1], b[2], b[3], color_of(i), 2);
    }
    c
}

pub fn merge(a: MergeArgs) -> Result<()> {
    let mut files = Vec::new();
    for p in &a.inputs {
        if p.is_dir() {
            let mut found: Vec<PathBuf> = std::fs::read_dir(p)
                .with_context(|| format!("{}: cannot read folder", p.display()))?
                .filter_map(|e| e.ok().map(|e| e.path()))
                .filter(|f| {
                    let n = f.file_name().unwrap().to_string_lossy();
                    n.starts_with("results") && n.ends_with(".json")
                })
                .collect();
            if found.is_empty() {
                bail!("{}: no results*.json files", p.display());
            }
            found.sort();
            files.extend(found);
        } else if p.is_file() {
            files.push(p.clone());
        } else {
            bail!("{}: no such file or folder", p.display());
        }
    }
    let merged = merge_results(&files)?;
    segrs::io::write_json(&a.out, &merged)?;
    println!(
        "{} detections from {} file(s) -> {}",
        merged.len(),
        files.len(),
        a.out.display()
    );
    Ok(())
}

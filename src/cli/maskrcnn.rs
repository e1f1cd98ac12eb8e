//! `segrs maskrcnn predict`: instance masks for a folder of images with a torchvision Mask R-CNN
//! checkpoint, written as COCO results and pictures; `segrs merge-results` joins the results of
//! sharded runs.

use super::{ShardArgs, progress_bar};
use anyhow::{Context, Result, bail};
use clap::{Args, Subcommand};
use segrs::data::folder::image_paths;
use segrs::data::image_io::read_image;
use segrs::data::shard::Shard;
use segrs::formats::coco::{COCO_DETECTION_NAMES, load_gt, merge_results};
use segrs::models::mask_rcnn::{InstancePrediction, MaskRcnn, MaskRcnnConfig};
use segrs::ops::Precision;
use segrs::viz::instances::{DrawnObject, color_of, draw_objects};
use std::path::{Path, PathBuf};

#[derive(Subcommand, Debug)]
pub enum MaskRcnnCommand {
    /// Detect and segment the instances of every image in a folder.
    Predict(PredictArgs),
    /// Train or fine-tune on a COCO instances dataset (or resume a run).
    Train(Box<TrainArgs>),
}

#[derive(Args, Debug)]
pub struct TrainArgs {
    /// COCO instances JSON of the training images (polygons or RLE; crowd regions are ignored).
    #[arg(long, required_unless_present = "resume")]
    pub data: Option<PathBuf>,
    /// The folder the JSON's `file_name`s are relative to.
    #[arg(long, required_unless_present = "resume")]
    pub images: Option<PathBuf>,
    /// COCO instances JSON of the validation images (mask and box AP every epoch).
    #[arg(long, requires = "val_images")]
    pub val_data: Option<PathBuf>,
    #[arg(long, requires = "val_data")]
    pub val_images: Option<PathBuf>,
    /// The run folder (checkpoints, metrics.jsonl, curve.png, best.safetensors).
    #[arg(long, required_unless_present = "resume")]
    pub out: Option<PathBuf>,
    /// Continue the run in this folder from its last checkpoint (with --epochs to extend it).
    #[arg(long, conflicts_with_all = ["data", "images", "out", "init"])]
    pub resume: Option<PathBuf>,
    /// Start from a torchvision checkpoint: Mask R-CNN weights (the class-dependent layers are
    /// replaced when the number of classes differs) or an ImageNet ResNet-50 (`resnet50-*.pth`,
    /// body only). Fresh weights otherwise.
    #[arg(long)]
    pub init: Option<PathBuf>,
    #[arg(long)]
    pub epochs: Option<usize>,
    /// Images per step.
    #[arg(long, default_value_t = 2)]
    pub batch_size: usize,
    /// Base learning rate (default: 0.02 x batch size / 16, the reference's linear scaling).
    #[arg(long)]
    pub lr: Option<f64>,
    #[arg(long, default_value_t = 0.9)]
    pub momentum: f64,
    #[arg(long, default_value_t = 1e-4)]
    pub weight_decay: f64,
    /// sgd or adamw.
    #[arg(long, default_value = "sgd")]
    pub optimizer: String,
    /// Decay: `steps` (x0.1 at --lr-steps) or `cosine`.
    #[arg(long, default_value = "steps")]
    pub schedule: String,
    /// Epochs after which the rate drops tenfold (default: at 2/3 and 8/9 of the run, as the
    /// reference's 16 and 22 of 26).
    #[arg(long, value_delimiter = ',')]
    pub lr_steps: Option<Vec<usize>>,
    /// Warm-up steps at the start of the first epoch.
    #[arg(long, default_value_t = 1000)]
    pub warmup_iters: usize,
    /// Short side after resizing.
    #[arg(long, default_value_t = 800)]
    pub min_size: usize,
    /// Long side at most this after resizing.
    #[arg(long, default_value_t = 1333)]
    pub max_size: usize,
    /// Backbone stages trained, from layer4 down (0-5; 5 also trains the stem). Default: 3
    /// with --init, 5 from fresh weights (as torchvision).
    #[arg(long)]
    pub trainable_layers: Option<usize>,
    /// The body's BatchNorms: `frozen` (FrozenBatchNorm2d, the default with --init) or `batch`
    /// (batch statistics, trained; the default from fresh weights, as torchvision's).
    #[arg(long)]
    pub batch_norm: Option<String>,
    /// Classes including the background (default: the largest category id + 1).
    #[arg(long)]
    pub num_classes: Option<usize>,
    #[arg(long, default_value_t = 0)]
    pub seed: u64,
    /// Probability of a horizontal flip per image.
    #[arg(long, default_value_t = 0.5)]
    pub flip: f64,
    #[arg(long)]
    pub quiet: bool,
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
    /// What the products compute in: f32, or bf16 (with f32 sums; needs AVX512_BF16, else f32
    /// runs and a note says why).
    #[arg(long, default_value_t = Precision::F32)]
    pub precision: Precision,
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
    #[command(flatten)]
    pub shard: ShardArgs,
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
        MaskRcnnCommand::Train(a) => train(*a),
    }
}

fn train(a: TrainArgs) -> Result<()> {
    use segrs::models::mask_rcnn::train::network::Norm;
    use segrs::train::mask_rcnn::{self as run, Decay, MaskRcnnTrainConfig, Optimizer, RunOptions};
    let opts = RunOptions { quiet: a.quiet };
    let state = if let Some(dir) = &a.resume {
        let cfg_path = dir.join("config.json");
        if let Some(epochs) = a.epochs {
            // Only the length of a run may change on resume.
            let text = std::fs::read_to_string(&cfg_path)
                .with_context(|| format!("{}: cannot read", cfg_path.display()))?;
            let mut cfg: MaskRcnnTrainConfig = serde_json::from_str(&text)
                .map_err(|e| anyhow::anyhow!("{}: {e}", cfg_path.display()))?;
            cfg.epochs = epochs;
            segrs::io::write_json(&cfg_path, &cfg)?;
        }
        run::train(None, dir, &opts)?
    } else {
        let (data, images, out) = (a.data.unwrap(), a.images.unwrap(), a.out.unwrap());
        let epochs = a.epochs.unwrap_or(26);
        let optimizer = match a.optimizer.as_str() {
            "sgd" => Optimizer::Sgd,
            "adamw" => Optimizer::Adamw,
            o => bail!("--optimizer must be sgd or adamw, got {o}"),
        };
        let decay = match a.schedule.as_str() {
            "steps" => Decay::Steps {
                epochs: a
                    .lr_steps
                    .unwrap_or_else(|| vec![(epochs * 2).div_ceil(3), (epochs * 8).div_ceil(9)]),
                gamma: 0.1,
            },
            "cosine" => Decay::Cosine,
            s => bail!("--schedule must be steps or cosine, got {s}"),
        };
        let norm = match a.batch_norm.as_deref() {
            Some("frozen") => Norm::Frozen,
            Some("batch") => Norm::Batch,
            None if a.init.is_some() => Norm::Frozen,
            None => Norm::Batch,
            Some(o) => bail!("--batch-norm must be frozen or batch, got {o}"),
        };
        let trainable_layers = match (a.trainable_layers, norm) {
            (Some(t), _) => t,
            (None, Norm::Batch) => 5,
            (None, Norm::Frozen) => 3,
        };
        if !(0.0..=1.0).contains(&a.flip) {
            bail!("--flip must be a probability, got {}", a.flip);
        }
        let cfg = MaskRcnnTrainConfig {
            train_json: data,
            train_images: images,
            val_json: a.val_data,
            val_images: a.val_images,
            init: a.init,
            epochs,
            batch_size: a.batch_size,
            lr: a.lr.unwrap_or(0.02 * a.batch_size as f64 / 16.0),
            momentum: a.momentum,
            weight_decay: a.weight_decay,
            optimizer,
            decay,
            warmup_iters: a.warmup_iters,
            warmup_factor: 1e-3,
            min_size: a.min_size,
            max_size: a.max_size,
            trainable_layers,
            norm,
            flip_prob: a.flip,
            seed: a.seed,
            num_classes: a.num_classes,
        };
        run::train(Some(cfg), &out, &opts)?
    };
    if let Some(best) = state.best_epoch {
        println!(
            "best epoch {best}{}",
            state
                .best_mask_ap
                .map(|m| format!(": mask AP {m:.4}"))
                .unwrap_or_default()
        );
    }
    Ok(())
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
    let files = image_paths(&a.images)?;
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
    let shard = a.shard.resolve()?;
    let images = shard.select(numbered_images(&a)?);
    let model = MaskRcnn::load_with(&a.checkpoint, super::on_this_cpu(a.precision))?;
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
    let bar = progress_bar("maskrcnn", images.len());
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

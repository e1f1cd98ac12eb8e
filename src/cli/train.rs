//! `segrs train`: a U-Net on a folder dataset.

use super::eval::{IgnoreIndex, parse_ignore};
use super::{DeviceArg, Floats, NormalizeArgs, ScheduleArg, UpsamplingArg, parse_floats};
use anyhow::{Result, bail};
use clap::Args;
use rand::SeedableRng;
use rand::seq::SliceRandom;
use segrs::data::folder::{MaskOptions, Sample, StemFilter, dataset_dirs, load_all, pair_folder};
use segrs::device::device;
use segrs::losses::LossConfig;
use segrs::models::unet::UNetConfig;
use segrs::train::{RunOptions, TrainConfig, train};
use std::path::PathBuf;

#[derive(Args, Debug)]
pub struct TrainArgs {
    /// Dataset folder holding images/ and masks/ (or image/ and label/) with matching stems.
    #[arg(long, required_unless_present_any = ["images", "resume"])]
    pub data: Option<PathBuf>,
    /// Image folder (instead of --data).
    #[arg(long, requires = "masks")]
    pub images: Option<PathBuf>,
    /// Mask folder (instead of --data).
    #[arg(long, requires = "images")]
    pub masks: Option<PathBuf>,
    /// Train only on these stems (e.g. `0-24`).
    #[arg(long)]
    pub stems: Option<StemFilter>,
    /// Validation dataset folder (images/ + masks/).
    #[arg(long, conflicts_with_all = ["val_split", "val_stems"])]
    pub val_data: Option<PathBuf>,
    /// Validate on these stems of --data (e.g. `25-29`); they are not trained on.
    #[arg(long, conflicts_with = "val_split")]
    pub val_stems: Option<StemFilter>,
    /// Fraction of the training images held out for validation (seeded shuffle). 0 disables.
    #[arg(long, default_value_t = 0.2)]
    pub val_split: f64,
    /// Number of classes.
    #[arg(long, required_unless_present = "resume")]
    pub classes: Option<usize>,
    /// Image channels the network takes (images are converted: RGB <-> gray).
    #[arg(long, default_value_t = 3)]
    pub in_channels: usize,
    #[command(flatten)]
    pub labels: super::labels::LabelArgs,
    /// Mask value that counts in no loss and no metric (`none` to disable).
    #[arg(long, default_value = "255", value_parser = parse_ignore)]
    pub ignore_index: IgnoreIndex,
    /// Channels of the first U-Net level (64 = classic).
    #[arg(long, default_value_t = 64)]
    pub base_width: usize,
    /// Down-sampling steps (4 = classic).
    #[arg(long, default_value_t = 4)]
    pub depth: usize,
    #[arg(long, value_enum, default_value_t = UpsamplingArg::Transpose)]
    pub upsampling: UpsamplingArg,
    /// Leave out BatchNorm (convolutions keep their bias).
    #[arg(long)]
    pub no_batchnorm: bool,
    #[command(flatten)]
    pub normalize: NormalizeArgs,
    /// Loss: ce, dice, focal, or a sum such as ce+dice.
    #[arg(long, default_value = "ce")]
    pub loss: String,
    /// Weights of the loss terms, e.g. `1,0.5`.
    #[arg(long, value_parser = parse_floats)]
    pub loss_weights: Option<Floats>,
    /// Per-class cross-entropy weights.
    #[arg(long, value_parser = parse_floats)]
    pub class_weights: Option<Floats>,
    /// Focal loss gamma.
    #[arg(long, default_value_t = 2.0)]
    pub focal_gamma: f32,
    /// Per-class focal alpha.
    #[arg(long, value_parser = parse_floats)]
    pub focal_alpha: Option<Floats>,
    /// The U-Net paper's loss weight map `W0,SIGMA` (the paper: `10,5`) on the cross-entropy and
    /// focal terms: class balance plus `W0 exp(-(d1 + d2)^2 / 2 SIGMA^2)` on background pixels
    /// between objects (connected components of each class > 0); computed once per mask.
    #[arg(long, value_parser = parse_floats)]
    pub border_weights: Option<Floats>,
    #[arg(long, default_value_t = 20)]
    pub epochs: usize,
    #[arg(long, default_value_t = 4)]
    pub batch_size: usize,
    /// Base learning rate (AdamW).
    #[arg(long, default_value_t = 1e-3)]
    pub lr: f64,
    #[arg(long, default_value_t = 1e-6)]
    pub min_lr: f64,
    #[arg(long, default_value_t = 1e-4)]
    pub weight_decay: f64,
    #[arg(long, value_enum, default_value_t = ScheduleArg::Cosine)]
    pub schedule: ScheduleArg,
    #[arg(long, default_value_t = 0)]
    pub warmup_steps: usize,
    /// Random square crop side for training (rounded up to the network stride).
    #[arg(long)]
    pub crop: Option<usize>,
    /// Disable random horizontal / vertical flips.
    #[arg(long)]
    pub no_flip: bool,
    #[command(flatten)]
    pub augment: super::augment::AugmentArgs,
    /// Clip the gradient norm.
    #[arg(long)]
    pub grad_clip: Option<f32>,
    #[arg(long, default_value_t = 42)]
    pub seed: u64,
    /// Run folder (checkpoints, metrics, curves).
    #[arg(long, required_unless_present = "resume")]
    pub out: Option<PathBuf>,
    /// Continue the run in this folder (after a kill, or with a larger --epochs).
    #[arg(long)]
    pub resume: Option<PathBuf>,
    /// Stop after this many epochs in this invocation (resumable).
    #[arg(long, hide = true)]
    pub stop_after: Option<usize>,
    #[arg(long, value_enum, default_value_t = DeviceArg::Cpu)]
    pub device: DeviceArg,
}

/// Splits samples into train and validation sets as the arguments say.
fn split(
    a: &TrainArgs,
    samples: Vec<Sample>,
    val_extra: Vec<Sample>,
    seed: u64,
) -> Result<(Vec<Sample>, Vec<Sample>)> {
    if a.val_data.is_some() {
        return Ok((samples, val_extra));
    }
    if let Some(f) = &a.val_stems {
        let (val, train): (Vec<Sample>, Vec<Sample>) =
            samples.into_iter().partition(|s| f.matches(&s.stem));
        if val.is_empty() {
            bail!("--val-stems selects no image");
        }
        return Ok((train, val));
    }
    if !(0.0..1.0).contains(&a.val_split) {
        bail!("--val-split must be in [0, 1), got {}", a.val_split);
    }
    let n_val = (samples.len() as f64 * a.val_split).round() as usize;
    if a.val_split > 0.0 && n_val == 0 {
        bail!(
            "--val-split {} of {} images holds out nothing; use --val-split 0 to train without validation",
            a.val_split,
            samples.len()
        );
    }
    let mut idx: Vec<usize> = (0..samples.len()).collect();
    idx.shuffle(&mut rand::rngs::SmallRng::seed_from_u64(seed));
    let val_idx: std::collections::HashSet<usize> = idx[..n_val].iter().copied().collect();
    let (mut train, mut val) = (Vec::new(), Vec::new());
    for (i, s) in samples.into_iter().enumerate() {
        if val_idx.contains(&i) {
            val.push(s)
        } else {
            train.push(s)
        }
    }
    if train.is_empty() {
        bail!("no training images left after the validation split");
    }
    Ok((train, val))
}

pub fn run(a: TrainArgs) -> Result<()> {
    let dev = device(a.device.into())?;
    let (run_dir, resume) = match (&a.resume, &a.out) {
        (Some(r), _) => (r.clone(), true),
        (None, Some(o)) => (o.clone(), false),
        (None, None) => bail!("give --out RUN_DIR (or --resume RUN_DIR)"),
    };
    let cfg = if resume {
        // Data options come from the saved run.
        let text = std::fs::read_to_string(run_dir.join("config.json")).map_err(|e| {
            anyhow::anyhow!(
                "{}: cannot read config.json to resume: {e}",
                run_dir.display()
            )
        })?;
        let mut c: TrainConfig = serde_json::from_str(&text)
            .map_err(|e| anyhow::anyhow!("{}/config.json: malformed: {e}", run_dir.display()))?;
        c.epochs = c.epochs.max(a.epochs);
        c
    } else {
        config_from_args(&a)?
    };
    let data_root = a.data.clone();
    let (images, masks) = match (&a.images, &a.masks, &data_root) {
        (Some(i), Some(m), _) => (i.clone(), m.clone()),
        (_, _, Some(d)) => dataset_dirs(d)?,
        _ => bail!("give --data DIR (or --images and --masks)"),
    };
    let mut labels = cfg.labels.clone();
    if cfg.binary && labels.binary_threshold.is_none() {
        labels.binary_threshold = Some(128); // configs written before the threshold existed
    }
    let mopts = MaskOptions {
        num_classes: cfg.unet.num_classes,
        labels,
        ignore_index: cfg.loss.ignore_index,
    };
    let paths = pair_folder(&images, &masks, a.stems.as_ref())?;
    eprintln!(
        "checking {} image/mask pairs in {}",
        paths.len(),
        images.display()
    );
    let samples = load_all(&paths, cfg.unet.in_channels, &mopts)?;
    a.labels.report_lossy();
    let val_extra = match &a.val_data {
        Some(v) => {
            let (vi, vm) = dataset_dirs(v)?;
            load_all(&pair_folder(&vi, &vm, None)?, cfg.unet.in_channels, &mopts)?
        }
        None => Vec::new(),
    };
    let (train_set, val_set) = split(&a, samples, val_extra, cfg.seed)?;
    eprintln!(
        "training on {} image(s), validating on {}; U-Net {} -> {} classes, base {} depth {} ({} parameters)",
        train_set.len(),
        val_set.len(),
        cfg.unet.in_channels,
        cfg.unet.num_classes,
        cfg.unet.base_width,
        cfg.unet.depth,
        cfg.unet.num_trainable_params()
    );
    let opts = RunOptions {
        stop_after: a.stop_after,
        quiet: false,
    };
    let out = train(&cfg, &train_set, &val_set, &run_dir, resume, &dev, &opts)?;
    println!("run folder: {}", run_dir.display());
    if let Some(best) = out.state.best_epoch {
        println!(
            "best epoch {best}: {}",
            run_dir.join("best.safetensors").display()
        );
    }
    if let Some(r) = &out.val_report {
        print!("{}", r.table(Some(&cfg.class_names)));
    }
    Ok(())
}

fn config_from_args(a: &TrainArgs) -> Result<TrainConfig> {
    let classes = a
        .classes
        .ok_or_else(|| anyhow::anyhow!("--classes is required"))?;
    let unet = UNetConfig {
        in_channels: a.in_channels,
        num_classes: classes,
        base_width: a.base_width,
        depth: a.depth,
        upsampling: a.upsampling.into(),
        batch_norm: !a.no_batchnorm,
    };
    unet.validate()?;
    if a.labels.binary && classes != 2 {
        bail!("--binary masks give 2 classes; pass --classes 2");
    }
    if a.batch_size == 0 || a.epochs == 0 {
        bail!("--batch-size and --epochs must be at least 1");
    }
    if !(a.lr > 0.0 && a.lr.is_finite()) {
        bail!("--lr must be positive");
    }
    let mut loss = LossConfig::parse(
        &a.loss,
        a.loss_weights.as_ref().map(|f| f.0.as_slice()),
        classes,
        if a.labels.binary {
            None
        } else {
            a.ignore_index.0
        },
    )?;
    for (name, w) in [
        ("--class-weights", &a.class_weights),
        ("--focal-alpha", &a.focal_alpha),
    ] {
        if let Some(Floats(w)) = w
            && w.len() != classes
        {
            bail!("{name} gives {} values for {classes} classes", w.len());
        }
    }
    loss.class_weights = a.class_weights.clone().map(|f| f.0);
    loss.focal_alpha = a.focal_alpha.clone().map(|f| f.0);
    loss.focal_gamma = a.focal_gamma;
    loss.border_weights = match &a.border_weights {
        None => None,
        Some(Floats(v)) if v.len() == 2 && v[0] >= 0.0 && v[1] > 0.0 && v[1] < 1000.0 => {
            Some((v[0], v[1]))
        }
        Some(Floats(v)) => bail!(
            "--border-weights {v:?}: give W0,SIGMA with W0 >= 0 and 0 < SIGMA < 1000 (the paper: 10,5)"
        ),
    };
    Ok(TrainConfig {
        unet,
        loss,
        normalize: a.normalize.resolve()?,
        binary: a.labels.binary,
        epochs: a.epochs,
        batch_size: a.batch_size,
        lr: a.lr,
        min_lr: a.min_lr.min(a.lr),
        weight_decay: a.weight_decay,
        schedule: a.schedule.into(),
        warmup_steps: a.warmup_steps,
        crop: a.crop,
        flips: !a.no_flip,
        geometry: a.augment.geometry()?,
        intensity: a.augment.intensity()?,
        seed: a.seed,
        grad_clip: a.grad_clip,
        class_names: a.labels.names(classes)?.unwrap_or_default(),
        labels: a.labels.convention(if a.labels.binary {
            None
        } else {
            a.ignore_index.0
        })?,
    })
}

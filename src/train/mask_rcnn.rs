//! Training Mask R-CNN on a COCO instances dataset, as torchvision's detection reference
//! (`references/detection/train.py`) runs it: SGD with momentum 0.9 and weight decay 1e-4 (or
//! AdamW), a linear warm-up over the first epoch's first iterations, step or cosine decay per
//! epoch, horizontal flips, images batched with padding; every epoch a checkpoint (exact state
//! for resuming, and `last.safetensors` with torchvision's keys), validation by COCO mask and
//! box AP, `best.safetensors` by mask AP, `metrics.jsonl` and `curve.png`.
//!
//! Run folder:
//! ```text
//! RUN_DIR/config.json      the configuration (fixed for the run; only epochs may grow)
//! RUN_DIR/state.json       epochs done, the newest checkpoint, the best epoch, the history
//! RUN_DIR/checkpoints/epoch-N/   model.bpk + optim.bpk (exact resume state)
//! RUN_DIR/last.safetensors, best.safetensors   torchvision state_dicts (`segrs maskrcnn predict`)
//! RUN_DIR/metrics.jsonl, curve.png, val_results.json
//! ```
//! Randomness (shuffling, flips, sampling) is drawn from generators seeded by (seed, epoch), so
//! a run resumed after a kill repeats the interrupted epoch exactly.

use super::trainer::{epoch_rng, progress_bar, write_jsonl};
use crate::data::coco_instances::{InstanceDataset, InstanceSample};
use crate::io::write_json;
use crate::metrics::coco::evaluate_files;
use crate::models::mask_rcnn::model::{MaskRcnn, MaskRcnnConfig, upgrade_legacy_keys};
use crate::models::mask_rcnn::train::init::{
    from_classification_resnet, is_classification_resnet, replace_class_layers, seeded_init,
};
use crate::models::mask_rcnn::train::layers::Readout;
use crate::models::mask_rcnn::train::losses::{
    LOSS_NAMES, Overrides, SamplingConfig, TrainImage, losses,
};
use crate::models::mask_rcnn::train::network::{self, FrozenStages, Network, Norm};
use crate::models::mask_rcnn::transform::{TransformConfig, resize_boxes, resize_mask_nearest};
use crate::weights::NamedTensors;
use anyhow::{Context, Result, bail};
use burn::module::Module;
use burn::optim::decay::WeightDecayConfig;
use burn::optim::momentum::MomentumConfig;
use burn::optim::{AdamWConfig, GradientsParams, ModuleOptimizer, SgdConfig};
use burn::prelude::*;
use rand::Rng;
use rand::seq::SliceRandom;
use rayon::prelude::*;
use serde::{Deserialize, Serialize};
use std::path::{Path, PathBuf};
use std::time::Instant;

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Optimizer {
    Sgd,
    Adamw,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Decay {
    /// Multiply by `gamma` at each listed epoch (`MultiStepLR`).
    Steps { epochs: Vec<usize>, gamma: f64 },
    /// Cosine from the base rate to zero over the run (`CosineAnnealingLR`, per epoch).
    Cosine,
}

/// Everything that defines a run.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct MaskRcnnTrainConfig {
    pub train_json: PathBuf,
    pub train_images: PathBuf,
    pub val_json: Option<PathBuf>,
    pub val_images: Option<PathBuf>,
    /// A torchvision checkpoint (COCO weights, or an ImageNet ResNet-50 for the body) to start
    /// from; fresh weights when absent.
    pub init: Option<PathBuf>,
    pub epochs: usize,
    pub batch_size: usize,
    pub lr: f64,
    pub momentum: f64,
    pub weight_decay: f64,
    pub optimizer: Optimizer,
    pub decay: Decay,
    /// Linear warm-up over the first `min(warmup_iters, steps per epoch - 1)` steps of the
    /// first epoch, from `warmup_factor` times the rate.
    pub warmup_iters: usize,
    pub warmup_factor: f64,
    pub min_size: usize,
    pub max_size: usize,
    pub trainable_layers: usize,
    /// The body's BatchNorms: frozen (fine-tuning) or trained with batch statistics.
    pub norm: Norm,
    pub flip_prob: f64,
    pub seed: u64,
    /// Classes including the background; `None`: the training set's largest category id + 1.
    pub num_classes: Option<usize>,
}

impl MaskRcnnTrainConfig {
    /// The learning rate at `step` (0-based) of `epoch` (1-based) with `steps` per epoch.
    pub fn lr_at(&self, epoch: usize, step: usize, steps: usize) -> f64 {
        let mut lr = match &self.decay {
            Decay::Steps { epochs, gamma } => {
                let passed = epochs.iter().filter(|&&e| epoch > e).count();
                self.lr * gamma.powi(passed as i32)
            }
            Decay::Cosine => {
                let t = (epoch - 1) as f64 / self.epochs.max(1) as f64;
                self.lr * 0.5 * (1.0 + (std::f64::consts::PI * t).cos())
            }
        };
        let warm = self.warmup_iters.min(steps.saturating_sub(1));
        if epoch == 1 && step < warm {
            let alpha = step as f64 / warm as f64;
            lr *= self.warmup_factor * (1.0 - alpha) + alpha;
        }
        lr
    }
}

/// One epoch of the history.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct EpochRecord {
    pub epoch: usize,
    pub steps: usize,
    /// The rate at the epoch's last step.
    pub lr: f64,
    /// Mean of each loss over the epoch, by torchvision's names, and their sum.
    pub losses: std::collections::BTreeMap<String, f64>,
    pub loss: f64,
    pub mask_ap: Option<f64>,
    pub mask_ap50: Option<f64>,
    pub box_ap: Option<f64>,
    pub box_ap50: Option<f64>,
    /// Mean time of a step's forward pass, backward pass and update (data loading excluded).
    pub step_seconds: f64,
    /// The whole epoch, with data loading and validation.
    pub seconds: f64,
}

#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub struct RunState {
    pub epochs_done: usize,
    pub checkpoint: Option<String>,
    pub best_epoch: Option<usize>,
    pub best_mask_ap: Option<f64>,
    pub history: Vec<EpochRecord>,
}

pub struct RunOptions {
    pub quiet: bool,
}

/// The weights a run starts from: fresh, or `init` adapted to `num_classes`.
pub fn initial_weights(cfg: &MaskRcnnTrainConfig, num_classes: usize) -> Result<NamedTensors> {
    let Some(path) = &cfg.init else {
        return Ok(seeded_init(num_classes, cfg.seed));
    };
    let mut named = NamedTensors::read(path)?;
    if is_classification_resnet(&named) {
        return Ok(from_classification_resnet(&named, num_classes, cfg.seed));
    }
    if named.get("backbone.body.conv1.weight").is_none() {
        bail!(
            "{}: neither a torchvision Mask R-CNN checkpoint nor an ImageNet ResNet-50",
            path.display()
        );
    }
    upgrade_legacy_keys(&mut named);
    replace_class_layers(&mut named, num_classes, cfg.seed);
    Ok(named)
}

/// The training model: the trained networks, the frozen front of the body and the full
/// state_dict the trained tensors are written over.
struct Model {
    net: Network,
    frozen: FrozenStages,
    base: NamedTensors,
}

impl Model {
    fn state_dict(&self) -> NamedTensors {
        let mut out = self.base.clone();
        self.net.export(&mut out, &Readout::Values);
        out
    }
}

/// A batch's samples decoded, flipped and transformed.
fn prepare(
    samples: &[&InstanceSample],
    flips: &[bool],
    transform: &TransformConfig,
) -> Result<Vec<TrainImage>> {
    samples
        .par_iter()
        .zip(flips)
        .map(|(s, &flip)| {
            let mut d = s.decode()?;
            if flip {
                d.flip_horizontal();
            }
            let input = transform.apply(&d.rgb, d.height, d.width);
            let size = input.resized;
            let mut boxes = d.boxes;
            resize_boxes(&mut boxes, (d.height, d.width), size);
            Ok(TrainImage {
                pixels: input.unpadded(),
                size,
                boxes,
                labels: d.categories.iter().map(|&c| c as usize).collect(),
                masks: d
                    .masks
                    .iter()
                    .map(|m| resize_mask_nearest(m, (d.height, d.width), size))
                    .collect(),
            })
        })
        .collect()
}

/// Trains (or resumes) the run in `run_dir`. Returns its final state.
pub fn train(
    cfg_in: Option<MaskRcnnTrainConfig>,
    run_dir: &Path,
    opts: &RunOptions,
) -> Result<RunState> {
    let (cfg, mut state) = open_run(cfg_in, run_dir)?;
    let train_set = InstanceDataset::load(&cfg.train_json, &cfg.train_images, true)?;
    let num_classes = cfg.num_classes.unwrap_or(train_set.num_classes());
    if train_set.num_classes() > num_classes {
        bail!(
            "{}: category ids up to {} need {} classes; the model has {num_classes}",
            cfg.train_json.display(),
            train_set.num_classes() - 1,
            train_set.num_classes(),
        );
    }
    if num_classes < 2 {
        bail!("a model needs at least 2 classes (background and one more)");
    }
    let val_set = match (&cfg.val_json, &cfg.val_images) {
        (Some(json), Some(images)) => Some(InstanceDataset::load(json, images, false)?),
        _ => None,
    };
    if !opts.quiet {
        let s = &train_set.skipped;
        eprintln!(
            "training on {} images of {} ({} crowd regions, {} degenerate boxes, {} images without objects left out)",
            train_set.samples.len(),
            cfg.train_json.display(),
            s.crowd,
            s.degenerate_boxes,
            s.empty_images
        );
    }
    let device = Device::flex().autodiff();
    let base = initial_weights(&cfg, num_classes)?;
    let (mut net, frozen) = network::load(&base, cfg.trainable_layers, cfg.norm, &device)?;
    let mut optim = match cfg.optimizer {
        Optimizer::Sgd => SgdConfig::new()
            .with_momentum(Some(MomentumConfig {
                momentum: cfg.momentum,
                dampening: 0.0,
                nesterov: false,
            }))
            .with_weight_decay(Some(WeightDecayConfig {
                penalty: cfg.weight_decay as f32,
            }))
            .init(),
        Optimizer::Adamw => AdamWConfig::new()
            .with_weight_decay(cfg.weight_decay as f32)
            .init(),
    };
    if let Some(ck) = &state.checkpoint {
        let dir = run_dir.join(ck);
        net = net
            .try_load_file(dir.join("model.bpk"))
            .map_err(|e| anyhow::anyhow!("{}: cannot load model state: {e:?}", dir.display()))?;
        optim = optim.load(dir.join("optim.bpk")).map_err(|e| {
            anyhow::anyhow!("{}: cannot load optimiser state: {e:?}", dir.display())
        })?;
        if !opts.quiet {
            eprintln!(
                "resuming {} after epoch {}",
                run_dir.display(),
                state.epochs_done
            );
        }
    }
    let mut model = Model { net, frozen, base };
    let transform = TransformConfig {
        min_size: cfg.min_size,
        max_size: cfg.max_size,
        size_divisible: 32,
    };
    let sampling = SamplingConfig::default();
    let n = train_set.samples.len();
    let steps = n.div_ceil(cfg.batch_size);
    for epoch in state.epochs_done + 1..=cfg.epochs {
        let start = Instant::now();
        let mut order: Vec<usize> = (0..n).collect();
        order.shuffle(&mut epoch_rng(cfg.seed, epoch, 1));
        let mut flip_rng = epoch_rng(cfg.seed, epoch, 2);
        let mut sample_rng = epoch_rng(cfg.seed, epoch, 3);
        let bar = progress_bar(steps, epoch, cfg.epochs, opts.quiet);
        let mut sums = [0.0f64; 5];
        let mut lr = cfg.lr;
        let mut step_time = 0.0f64;
        for (step, chunk) in order.chunks(cfg.batch_size).enumerate() {
            let samples: Vec<&InstanceSample> =
                chunk.iter().map(|&i| &train_set.samples[i]).collect();
            let flips: Vec<bool> = chunk
                .iter()
                .map(|_| flip_rng.random_bool(cfg.flip_prob))
                .collect();
            let batch = prepare(&samples, &flips, &transform)?;
            lr = cfg.lr_at(epoch, step, steps);
            let t0 = Instant::now();
            let (l, _) = losses(
                &model.net,
                &model.frozen,
                &batch,
                &sampling,
                &mut sample_rng,
                &Overrides::default(),
                &device,
            );
            let values = l.values();
            let total: f64 = values.iter().sum();
            if !total.is_finite() {
                bail!(
                    "the loss became {total} at epoch {epoch}, step {} ({}); the last good checkpoint is {}",
                    step + 1,
                    LOSS_NAMES
                        .iter()
                        .zip(values)
                        .map(|(k, v)| format!("{k} {v:.4}"))
                        .collect::<Vec<_>>()
                        .join(", "),
                    state
                        .checkpoint
                        .as_ref()
                        .map(|c| run_dir.join(c).display().to_string())
                        .unwrap_or_else(|| "none (no epoch completed)".into())
                );
            }
            let grads = GradientsParams::from_grads(l.total().backward(), &model.net);
            model.net = optim.step(lr, model.net, grads);
            step_time += t0.elapsed().as_secs_f64();
            for (s, v) in sums.iter_mut().zip(values) {
                *s += v;
            }
            bar.set_message(format!("loss {total:.4}"));
            bar.inc(1);
        }
        bar.finish_and_clear();
        let mut rec = EpochRecord {
            epoch,
            steps,
            lr,
            losses: LOSS_NAMES
                .iter()
                .zip(sums)
                .map(|(k, s)| (k.to_string(), s / steps as f64))
                .collect(),
            loss: sums.iter().sum::<f64>() / steps as f64,
            mask_ap: None,
            mask_ap50: None,
            box_ap: None,
            box_ap50: None,
            step_seconds: step_time / steps as f64,
            seconds: 0.0,
        };
        if let Some(set) = &val_set {
            let (m, b) = validate(&model.state_dict(), set, &transform, run_dir)?;
            (rec.mask_ap, rec.mask_ap50, rec.box_ap, rec.box_ap50) =
                (Some(m.0), Some(m.1), Some(b.0), Some(b.1));
        }
        rec.seconds = start.elapsed().as_secs_f64();
        if !opts.quiet {
            eprintln!(
                "epoch {epoch}/{}: loss {:.4}{} ({:.0} s)",
                cfg.epochs,
                rec.loss,
                rec.mask_ap
                    .map(|m| format!(", mask AP {m:.4}, box AP {:.4}", rec.box_ap.unwrap_or(0.0)))
                    .unwrap_or_default(),
                rec.seconds
            );
        }
        save_checkpoint(run_dir, &model, &optim, &mut state, rec)?;
    }
    Ok(state)
}

/// Creates the run folder, or reopens it (`cfg_in` None): the configuration and the state.
fn open_run(
    cfg_in: Option<MaskRcnnTrainConfig>,
    run_dir: &Path,
) -> Result<(MaskRcnnTrainConfig, RunState)> {
    let state_path = run_dir.join("state.json");
    match cfg_in {
        None => {
            let read = |p: &Path| -> Result<String> {
                std::fs::read_to_string(p).with_context(|| {
                    format!(
                        "{}: cannot read (is this a Mask R-CNN run folder?)",
                        p.display()
                    )
                })
            };
            let cfg: MaskRcnnTrainConfig =
                serde_json::from_str(&read(&run_dir.join("config.json"))?)
                    .map_err(|e| anyhow::anyhow!("{}/config.json: {e}", run_dir.display()))?;
            let state: RunState = if state_path.is_file() {
                serde_json::from_str(&read(&state_path)?)
                    .map_err(|e| anyhow::anyhow!("{}: {e}", state_path.display()))?
            } else {
                RunState::default()
            };
            Ok((cfg, state))
        }
        Some(cfg) => {
            if state_path.exists() {
                bail!(
                    "{}: already holds a run (state.json); resume it with --resume or choose another --out",
                    run_dir.display()
                );
            }
            if cfg.batch_size == 0 || cfg.epochs == 0 {
                bail!("batch size and epochs must be at least 1");
            }
            std::fs::create_dir_all(run_dir)
                .with_context(|| format!("{}: cannot create", run_dir.display()))?;
            write_json(&run_dir.join("config.json"), &cfg)?;
            Ok((cfg, RunState::default()))
        }
    }
}

/// COCO mask and box (AP, AP50) of the host model built from `state_dict` on a validation set.
fn validate(
    state_dict: &NamedTensors,
    set: &InstanceDataset,
    transform: &TransformConfig,
    run_dir: &Path,
) -> Result<((f64, f64), (f64, f64))> {
    let model = MaskRcnn::from_tensors(state_dict.clone())?;
    let json = &set.json;
    let cfg = MaskRcnnConfig {
        transform: *transform,
        ..Default::default()
    };
    let mut records = Vec::new();
    for s in &set.samples {
        let pic = crate::data::image_io::read_image(&s.path)?;
        let p = model.predict(&pic.to_rgb8(), pic.height, pic.width, &cfg)?;
        for i in 0..p.scores.len() {
            records.push(p.result_record(i, s.image_id, &s.file_name)?);
        }
    }
    if records.is_empty() {
        return Ok(((0.0, 0.0), (0.0, 0.0)));
    }
    let dt = run_dir.join("val_results.json");
    write_json(&dt, &records)?;
    let m = evaluate_files(json, &dt, hotcoco::IouType::Segm)?;
    let b = evaluate_files(json, &dt, hotcoco::IouType::Bbox)?;
    let ap = |s: &[f64]| (s[0].max(0.0), s[1].max(0.0));
    Ok((ap(&m.stats), ap(&b.stats)))
}

/// The exact state first (model, optimiser), then `last` / `best` safetensors, then the
/// pointer (`state.json`), then the history files.
fn save_checkpoint(
    run_dir: &Path,
    model: &Model,
    optim: &ModuleOptimizer,
    state: &mut RunState,
    rec: EpochRecord,
) -> Result<()> {
    let epoch = rec.epoch;
    let ck_name = format!("checkpoints/epoch-{epoch:04}");
    let ck_dir = run_dir.join(&ck_name);
    if ck_dir.exists() {
        std::fs::remove_dir_all(&ck_dir).ok();
    }
    std::fs::create_dir_all(&ck_dir)
        .with_context(|| format!("{}: cannot create", ck_dir.display()))?;
    // Reading the state_dict first also commits BatchNorm's pending running-statistics update,
    // which the saved state must include.
    let sd = model.state_dict();
    model
        .net
        .clone()
        .save_file(ck_dir.join("model.bpk"))
        .map_err(|e| anyhow::anyhow!("{}: cannot save model state: {e:?}", ck_dir.display()))?;
    optim
        .save(ck_dir.join("optim.bpk"))
        .map_err(|e| anyhow::anyhow!("{}: cannot save optimiser state: {e:?}", ck_dir.display()))?;
    let mut meta = std::collections::BTreeMap::new();
    meta.insert(
        "format".to_string(),
        "torchvision maskrcnn_resnet50_fpn".to_string(),
    );
    meta.insert("epoch".to_string(), epoch.to_string());
    write_safetensors(&run_dir.join("last.safetensors"), &sd, &meta)?;
    let improved = match (rec.mask_ap, state.best_mask_ap) {
        (Some(m), Some(b)) => m > b,
        _ => true,
    };
    if improved {
        write_safetensors(&run_dir.join("best.safetensors"), &sd, &meta)?;
        state.best_epoch = Some(epoch);
        state.best_mask_ap = rec.mask_ap;
    }
    let previous = state.checkpoint.replace(ck_name);
    state.epochs_done = epoch;
    state.history.push(rec);
    write_json(&run_dir.join("state.json"), state)?;
    if let Some(p) = previous
        && run_dir.join(&p) != ck_dir
    {
        std::fs::remove_dir_all(run_dir.join(p)).ok();
    }
    write_history(run_dir, state)
}

/// Writes through a temporary file and a rename, so a kill never leaves half a checkpoint.
fn write_safetensors(
    path: &Path,
    sd: &NamedTensors,
    meta: &std::collections::BTreeMap<String, String>,
) -> Result<()> {
    let tmp = path.with_extension("safetensors.tmp");
    crate::weights::safetensors::write(&tmp, &sd.tensors, meta)?;
    std::fs::rename(&tmp, path).with_context(|| format!("{}: cannot write", path.display()))
}

/// `metrics.jsonl` and `curve.png` (rewritten whole, so a resume never duplicates lines).
fn write_history(run_dir: &Path, state: &RunState) -> Result<()> {
    write_jsonl(&run_dir.join("metrics.jsonl"), &state.history)?;
    use crate::viz::plot::{Line, LinePanel, line_plot};
    let h = &state.history;
    let line = |name: &str, g: &dyn Fn(&EpochRecord) -> Option<f64>| Line {
        name: name.into(),
        points: h
            .iter()
            .map(|r| (r.epoch as f64, g(r).unwrap_or(f64::NAN)))
            .collect(),
    };
    let best = state
        .best_epoch
        .map(|b| (b as f64, format!("best epoch {b}")));
    let mut loss_lines = vec![line("total", &|r| Some(r.loss))];
    for k in LOSS_NAMES {
        loss_lines.push(line(k, &|r: &EpochRecord| r.losses.get(k).copied()));
    }
    line_plot(
        &run_dir.join("curve.png"),
        &[
            LinePanel {
                title: "training losses".into(),
                x_label: "epoch".into(),
                y_label: "loss".into(),
                lines: loss_lines,
                mark_x: best.clone(),
            },
            LinePanel {
                title: "validation".into(),
                x_label: "epoch".into(),
                y_label: "AP".into(),
                lines: vec![
                    line("mask AP", &|r| r.mask_ap),
                    line("mask AP50", &|r| r.mask_ap50),
                    line("box AP", &|r| r.box_ap),
                ],
                mark_x: best,
            },
        ],
        (900, 640),
    )
    .map(|_| ())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cfg(decay: Decay) -> MaskRcnnTrainConfig {
        MaskRcnnTrainConfig {
            train_json: PathBuf::new(),
            train_images: PathBuf::new(),
            val_json: None,
            val_images: None,
            init: None,
            epochs: 9,
            batch_size: 2,
            lr: 0.02,
            momentum: 0.9,
            weight_decay: 1e-4,
            optimizer: Optimizer::Sgd,
            decay,
            warmup_iters: 1000,
            warmup_factor: 1e-3,
            min_size: 800,
            max_size: 1333,
            trainable_layers: 3,
            norm: Norm::Frozen,
            flip_prob: 0.5,
            seed: 0,
            num_classes: Some(2),
        }
    }

    #[test]
    fn warm_up_and_step_decay_follow_the_reference() {
        let c = cfg(Decay::Steps {
            epochs: vec![6, 8],
            gamma: 0.1,
        });
        // Warm-up over min(1000, steps - 1) = 9 steps of epoch 1, linear from 1e-3.
        assert!((c.lr_at(1, 0, 10) - 0.02 * 1e-3).abs() < 1e-12);
        let mid = 0.02 * (1e-3 * (1.0 - 4.0 / 9.0) + 4.0 / 9.0);
        assert!((c.lr_at(1, 4, 10) - mid).abs() < 1e-12);
        assert_eq!(c.lr_at(1, 9, 10), 0.02);
        assert_eq!(c.lr_at(2, 0, 10), 0.02, "no warm-up after the first epoch");
        assert_eq!(c.lr_at(6, 3, 10), 0.02, "the drop comes after epoch 6");
        assert!((c.lr_at(7, 0, 10) - 0.002).abs() < 1e-12);
        assert!((c.lr_at(9, 0, 10) - 0.0002).abs() < 1e-12);
    }

    #[test]
    fn cosine_decay_runs_from_the_base_rate_towards_zero() {
        let c = cfg(Decay::Cosine);
        assert_eq!(
            c.lr_at(2, 0, 1),
            0.02 * 0.5 * (1.0 + (std::f64::consts::PI / 9.0).cos())
        );
        assert!(c.lr_at(9, 0, 1) < 0.02 * 0.04);
        // One step per epoch: nothing to warm up over.
        assert_eq!(c.lr_at(1, 0, 1), 0.02);
    }
}

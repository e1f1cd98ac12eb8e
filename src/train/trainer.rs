//! The training loop: AdamW with a learning-rate schedule, validation every epoch, atomic
//! checkpoints (every epoch, plus `best` by validation mIoU), resumable after a kill.
//!
//! Run folder:
//! ```text
//! RUN_DIR/config.json            the run's configuration
//! RUN_DIR/state.json             epochs done, best epoch, history (written last, atomically)
//! RUN_DIR/checkpoints/epoch-N/   model.bpk + optim.bpk (exact resume state)
//! RUN_DIR/last.safetensors       segrs checkpoint of the last epoch
//! RUN_DIR/best.safetensors       segrs checkpoint of the best epoch (val mIoU)
//! RUN_DIR/metrics.jsonl          one line per epoch
//! RUN_DIR/curve.png              training curves
//! ```

use super::config::TrainConfig;
use crate::data::augment::{AugmentConfig, Source, augment};
use crate::data::folder::Sample;
use crate::data::preprocess::{Normalize, pad_chw, round_up};
use crate::io::write_json;
use crate::losses::Targets;
use crate::metrics::semantic::{LabelPair, SemanticReport, evaluate};
use crate::models::tensor_io::tensor4;
use crate::models::unet::UNet;
use crate::models::unet::checkpoint::{self, CheckpointMeta};
use crate::predict::{SemanticPredictor, argmax_labels};
use anyhow::{Context, Result, bail};
use burn::optim::{AdamWConfig, GradientsParams, ModuleOptimizer};
use burn::prelude::*;
use rand::seq::SliceRandom;
use rand::{SeedableRng, rngs::SmallRng};
use serde::{Deserialize, Serialize};
use std::path::{Path, PathBuf};
use std::time::Instant;

#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub struct EpochRecord {
    pub epoch: usize,
    pub lr: f64,
    pub train_loss: f64,
    pub val_loss: Option<f64>,
    pub pixel_accuracy: Option<f64>,
    pub miou: Option<f64>,
    pub mean_dice: Option<f64>,
    pub seconds: f64,
    pub images_per_second: f64,
}

#[derive(Clone, Debug, Serialize, Deserialize, Default)]
pub struct RunState {
    pub epochs_done: usize,
    pub best_epoch: Option<usize>,
    pub best_miou: Option<f64>,
    pub checkpoint: Option<String>,
    pub history: Vec<EpochRecord>,
}

/// Knobs of one invocation (not part of the run's identity).
#[derive(Clone, Debug, Default)]
pub struct RunOptions {
    /// Stop after this many epochs in this invocation (the run stays resumable).
    pub stop_after: Option<usize>,
    pub quiet: bool,
}

pub struct TrainOutcome {
    pub state: RunState,
    pub model: UNet,
    /// Report of the best epoch's validation (recomputed from `best.safetensors`).
    pub val_report: Option<SemanticReport>,
}

/// A sample prepared once: CHW floats in [0, 1] (normalised after augmentation, which jitters
/// intensities in that range) and labels; with border weights, the mask's weight map as one
/// more channel after the image's (so that augmentation moves it with the pixels).
struct Prepared {
    chw: Vec<f32>,
    labels: Vec<u32>,
    weighted: bool,
    c: usize,
    h: usize,
    w: usize,
}

/// The generator of one stream (shuffling, augmentation, ...) of one epoch: a resumed run
/// draws what the interrupted one would have.
pub(crate) fn epoch_rng(seed: u64, epoch: usize, stream: u64) -> SmallRng {
    SmallRng::seed_from_u64(
        seed ^ (epoch as u64).wrapping_mul(0x9E37_79B9_7F4A_7C15)
            ^ stream.wrapping_mul(0xD1B5_4A32_D192_ED03),
    )
}

fn read_json<T: for<'a> Deserialize<'a>>(path: &Path) -> Result<T> {
    let text = std::fs::read_to_string(path)
        .with_context(|| format!("{}: cannot read", path.display()))?;
    serde_json::from_str(&text).with_context(|| format!("{}: malformed JSON", path.display()))
}

pub fn meta_of(cfg: &TrainConfig, epoch: usize) -> CheckpointMeta {
    CheckpointMeta {
        format: checkpoint::FORMAT.into(),
        unet: cfg.unet.clone(),
        normalize: cfg.normalize.clone(),
        ignore_index: cfg.loss.ignore_index,
        binary: cfg.binary,
        class_names: cfg.class_names.clone(),
        epoch,
        labels: cfg.labels.clone(),
    }
}

/// Validation loss and metrics of `model` on `val`.
pub fn validate(
    model: &UNet,
    cfg: &TrainConfig,
    val: &[Sample],
    device: &Device,
) -> (f64, SemanticReport) {
    let predictor = SemanticPredictor::burn(model, cfg.normalize.clone(), device.clone());
    let mut loss_sum = 0.0;
    let mut pairs = Vec::with_capacity(val.len());
    for sample in val {
        let (logits, ph, pw) = predictor.padded_logits(&sample.image);
        let (h, w) = (sample.image.height, sample.image.width);
        // Padding pixels get an out-of-range label, which the loss treats as ignored.
        let pad_label = cfg.unet.num_classes as f32;
        let lab: Vec<f32> = sample.mask.data.iter().map(|&v| v as f32).collect();
        let lab: Vec<u32> = pad_chw(&lab, 1, h, w, ph, pw, pad_label)
            .into_iter()
            .map(|v| v as u32)
            .collect();
        let targets = cfg.loss.targets(&lab, 1, ph, pw, device);
        let (loss, _) = cfg.loss.forward(logits.clone(), &targets);
        loss_sum += loss.into_scalar::<f32>() as f64;
        let pred = argmax_labels(logits, h, w).data;
        pairs.push(LabelPair {
            pred,
            gt: sample.mask.data.clone(),
            height: h,
            width: w,
        });
    }
    let report = evaluate(&pairs, cfg.unet.num_classes, cfg.loss.ignore_index).report();
    (loss_sum / val.len().max(1) as f64, report)
}

/// Trains (or resumes) a run in `run_dir`.
///
/// The seams follow a plain PyTorch training script: open (or resume) the run, restore the
/// model and optimiser state, then per epoch: batches -> optimiser steps
/// (`Epochs::run_epoch`, `Epochs::batch`, `step`), validation, and the checkpoint
/// (`save_checkpoint`).
pub fn train(
    cfg_in: &TrainConfig,
    train_set: &[Sample],
    val_set: &[Sample],
    run_dir: &Path,
    resume: bool,
    device: &Device,
    opts: &RunOptions,
) -> Result<TrainOutcome> {
    let (cfg, mut state) = open_run(cfg_in, train_set, run_dir, resume)?;
    let ad = device.clone().autodiff();
    let (mut model, mut optim) = restore(&cfg, &state, run_dir, &ad, opts.quiet)?;
    let prepared = prepare(&cfg, train_set)?;
    let stride = cfg.unet.stride();
    let steps_per_epoch = train_set.len().div_ceil(cfg.batch_size);
    let epochs = Epochs {
        cfg: &cfg,
        aug: AugmentConfig {
            crop: cfg.crop.map(|c| round_up(c, stride)),
            hflip: cfg.flips,
            vflip: cfg.flips,
            pad_label: cfg.loss.ignore_index.unwrap_or(cfg.unet.num_classes as u32),
            geometry: cfg.geometry,
            intensity: cfg.intensity,
        },
        prepared: &prepared,
        stride,
        steps_per_epoch,
        total_steps: steps_per_epoch * cfg.epochs,
        device: &ad,
        run_dir,
        quiet: opts.quiet,
    };
    let mut best_model_report: Option<SemanticReport> = None;

    for (ran, epoch) in (state.epochs_done + 1..=cfg.epochs).enumerate() {
        if opts.stop_after.is_some_and(|n| ran >= n) {
            break;
        }
        let start = Instant::now();
        let (trained, train_loss, lr) =
            epochs.run_epoch(model, &mut optim, epoch, state.epochs_done, start)?;
        model = trained;
        let train_secs = start.elapsed().as_secs_f64();
        let (val_loss, report) = if val_set.is_empty() {
            (None, None)
        } else {
            let (l, r) = validate(&model, &cfg, val_set, device);
            (Some(l), Some(r))
        };
        let rec = EpochRecord {
            epoch,
            lr,
            train_loss,
            val_loss,
            pixel_accuracy: report.as_ref().and_then(|r| r.pixel_accuracy),
            miou: report.as_ref().and_then(|r| r.miou),
            mean_dice: report.as_ref().and_then(|r| r.mean_dice),
            seconds: start.elapsed().as_secs_f64(),
            images_per_second: train_set.len() as f64 / train_secs.max(1e-9),
        };
        if !opts.quiet {
            log_epoch(&cfg, &rec);
        }
        if save_checkpoint(run_dir, &cfg, &model, &optim, &mut state, rec)? {
            best_model_report = report;
        }
    }
    if best_model_report.is_none() && !val_set.is_empty() && state.best_epoch.is_some() {
        let best = checkpoint::load(&run_dir.join("best.safetensors"), (None, None), device)?;
        best_model_report = Some(validate(&best.model, &cfg, val_set, device).1);
    }
    Ok(TrainOutcome {
        state,
        model: model.valid(),
        val_report: best_model_report,
    })
}

/// Creates the run folder, or reopens it on resume: the configuration to train with (the saved
/// one on resume, where only the number of epochs may grow) and the run's state. Writes
/// `config.json`.
fn open_run(
    cfg_in: &TrainConfig,
    train_set: &[Sample],
    run_dir: &Path,
    resume: bool,
) -> Result<(TrainConfig, RunState)> {
    std::fs::create_dir_all(run_dir)
        .with_context(|| format!("{}: cannot create run folder", run_dir.display()))?;
    let config_path = run_dir.join("config.json");
    let state_path = run_dir.join("state.json");
    let (cfg, state) = if resume {
        if !state_path.exists() {
            bail!(
                "{}: no state.json, nothing to resume (was a first epoch ever completed?)",
                run_dir.display()
            );
        }
        let mut saved: TrainConfig = read_json(&config_path)?;
        // Only the length of the run may change on resume.
        saved.epochs = cfg_in.epochs.max(saved.epochs);
        (saved, read_json::<RunState>(&state_path)?)
    } else {
        if state_path.exists() {
            bail!(
                "{}: already holds a run (state.json); use --resume {} or another --out",
                run_dir.display(),
                run_dir.display()
            );
        }
        (cfg_in.clone(), RunState::default())
    };
    cfg.unet.validate()?;
    if train_set.is_empty() {
        bail!("the training set is empty");
    }
    write_json(&config_path, &cfg)?;
    Ok((cfg, state))
}

/// The freshly initialised model and AdamW optimiser, or on resume their exact state from the
/// run's last checkpoint.
fn restore(
    cfg: &TrainConfig,
    state: &RunState,
    run_dir: &Path,
    ad: &Device,
    quiet: bool,
) -> Result<(UNet, ModuleOptimizer)> {
    // Seeded on the host: the device's generator is shared with anything else running.
    let init = crate::models::unet::state_dict::seeded_init(&cfg.unet, cfg.seed);
    let mut model = crate::models::unet::state_dict::import(&cfg.unet, &init, ad)?;
    let adam = AdamWConfig::new()
        .with_weight_decay(cfg.weight_decay as f32)
        .with_epsilon(1e-8)
        .with_grad_clipping(
            cfg.grad_clip
                .map(burn::optim::grad_clipping::GradientClippingConfig::Norm),
        );
    let mut optim = adam.init();
    if let Some(ck) = &state.checkpoint {
        let dir = run_dir.join(ck);
        model = model
            .try_load_file(dir.join("model.bpk"))
            .map_err(|e| anyhow::anyhow!("{}: cannot load model state: {e:?}", dir.display()))?;
        optim = optim.load(dir.join("optim.bpk")).map_err(|e| {
            anyhow::anyhow!("{}: cannot load optimiser state: {e:?}", dir.display())
        })?;
        if !quiet {
            eprintln!(
                "resuming {} after epoch {}",
                run_dir.display(),
                state.epochs_done
            );
        }
    }
    Ok((model, optim))
}

/// Preprocesses the training set once; without cropping, every image must have the same size.
fn prepare(cfg: &TrainConfig, train_set: &[Sample]) -> Result<Vec<Prepared>> {
    use rayon::prelude::*;
    let prepared: Vec<Prepared> = train_set
        .par_iter()
        .map(|s| {
            let pic = s.image.with_channels(cfg.unet.in_channels);
            let mut chw = Normalize::identity(pic.channels).to_chw(&pic);
            let weights = cfg.loss.weight_map(&s.mask.data, pic.height, pic.width);
            let weighted = weights.is_some();
            if let Some(w) = weights {
                chw.extend(w);
            }
            Prepared {
                chw,
                labels: s.mask.data.clone(),
                weighted,
                c: pic.channels,
                h: pic.height,
                w: pic.width,
            }
        })
        .collect();
    if cfg.crop.is_none() {
        let (h, w) = (prepared[0].h, prepared[0].w);
        if let Some(s) = train_set
            .iter()
            .find(|s| (s.image.height, s.image.width) != (h, w))
        {
            bail!(
                "training images differ in size ({} is {}x{}, others {}x{}); pass --crop",
                s.stem,
                s.image.width,
                s.image.height,
                w,
                h
            );
        }
    }
    Ok(prepared)
}

/// What every epoch of a run shares.
struct Epochs<'a> {
    cfg: &'a TrainConfig,
    aug: AugmentConfig,
    prepared: &'a [Prepared],
    stride: usize,
    steps_per_epoch: usize,
    total_steps: usize,
    /// The autodiff device.
    device: &'a Device,
    run_dir: &'a Path,
    quiet: bool,
}

/// One training batch on the device.
struct Batch {
    x: Tensor<4>,
    targets: Targets,
    n: usize,
}

impl Epochs<'_> {
    /// One pass over the (shuffled) training set: the model after it, the mean training loss
    /// and the last learning rate. `epochs_done` names the last good checkpoint in errors;
    /// `start` is when the epoch began (for the throughput shown).
    fn run_epoch(
        &self,
        mut model: UNet,
        optim: &mut ModuleOptimizer,
        epoch: usize,
        epochs_done: usize,
        start: Instant,
    ) -> Result<(UNet, f64, f64)> {
        let cfg = self.cfg;
        let mut order: Vec<usize> = (0..self.prepared.len()).collect();
        order.shuffle(&mut epoch_rng(cfg.seed, epoch, 1));
        let mut aug_rng = epoch_rng(cfg.seed, epoch, 2);
        let bar = progress_bar(self.steps_per_epoch, epoch, cfg.epochs, self.quiet);
        let mut loss_sum = 0.0;
        let mut lr = cfg.lr;
        for (b, chunk) in order.chunks(cfg.batch_size).enumerate() {
            let step_index = (epoch - 1) * self.steps_per_epoch + b;
            lr = cfg.lr_at(step_index, self.total_steps);
            let batch = self.batch(chunk, &mut aug_rng);
            let n = batch.n;
            let (stepped, loss_value) = step(model, optim, cfg, batch, lr);
            model = stepped;
            if !loss_value.is_finite() {
                bar.abandon();
                bail!(
                    "the loss became {loss_value} at epoch {epoch}, step {} (lr {lr:.3e}); the last good checkpoint is in {} (epoch {}); try a lower --lr",
                    b + 1,
                    self.run_dir.display(),
                    epochs_done
                );
            }
            loss_sum += loss_value;
            let done = (b + 1) as f64;
            let ips = ((b * cfg.batch_size + n) as f64) / start.elapsed().as_secs_f64().max(1e-9);
            bar.set_message(format!("loss {:.4} | {:.1} img/s", loss_sum / done, ips));
            bar.inc(1);
        }
        bar.finish_and_clear();
        Ok((model, loss_sum / self.steps_per_epoch as f64, lr))
    }

    /// The samples `chunk` augmented, padded to the network stride (padding is ignored by the
    /// loss) and stacked.
    fn batch(&self, chunk: &[usize], aug_rng: &mut SmallRng) -> Batch {
        use rand::Rng;
        use rayon::prelude::*;
        let (cfg, aug, stride) = (self.cfg, &self.aug, self.stride);
        // One seed per sample, drawn in order, so that the crops do not depend on the threads.
        let seeds: Vec<u64> = chunk.iter().map(|_| aug_rng.random()).collect();
        let crops: Vec<_> = chunk
            .par_iter()
            .zip(seeds)
            .map(|(&i, seed)| {
                let p = &self.prepared[i];
                let channels = p.c + p.weighted as usize;
                // Padding normalises to 0 (the image's mean); the weight map pads with 0.
                let fill: Vec<f32> = (0..channels)
                    .map(|ch| {
                        if ch < p.c {
                            cfg.normalize.channel(ch).0
                        } else {
                            0.0
                        }
                    })
                    .collect();
                let src = Source {
                    chw: &p.chw,
                    labels: &p.labels,
                    channels,
                    image_channels: p.c,
                    height: p.h,
                    width: p.w,
                    fill: &fill,
                };
                let mut crop = augment(&mut SmallRng::seed_from_u64(seed), &src, aug);
                let plane = crop.height * crop.width;
                for ch in 0..p.c {
                    let (m, s) = cfg.normalize.channel(ch);
                    let inv = 1.0 / s;
                    for v in &mut crop.chw[ch * plane..(ch + 1) * plane] {
                        *v = (*v - m) * inv;
                    }
                }
                crop
            })
            .collect();
        let (c, h, w) = (self.prepared[chunk[0]].c, crops[0].height, crops[0].width);
        let weighted = self.prepared[chunk[0]].weighted;
        let (ph, pw) = (round_up(h, stride), round_up(w, stride));
        let mut x = Vec::with_capacity(chunk.len() * c * ph * pw);
        let mut y = Vec::with_capacity(chunk.len() * ph * pw);
        let mut weights = Vec::new();
        for cr in &crops {
            x.extend(pad_chw(&cr.chw[..c * h * w], c, h, w, ph, pw, 0.0));
            if weighted {
                weights.extend(pad_chw(&cr.chw[c * h * w..], 1, h, w, ph, pw, 0.0));
            }
            let lab: Vec<f32> = cr.labels.iter().map(|&v| v as f32).collect();
            y.extend(
                pad_chw(&lab, 1, h, w, ph, pw, aug.pad_label as f32)
                    .into_iter()
                    .map(|v| v as u32),
            );
        }
        let n = chunk.len();
        Batch {
            x: tensor4(x, [n, c, ph, pw], self.device),
            targets: if weighted {
                cfg.loss
                    .targets_weighted(&y, &weights, n, ph, pw, self.device)
            } else {
                cfg.loss.targets(&y, n, ph, pw, self.device)
            },
            n,
        }
    }
}

/// One optimiser step: forward, loss, backward, AdamW update. Returns the model and the loss;
/// when the loss is not finite the model is returned unchanged.
fn step(
    model: UNet,
    optim: &mut ModuleOptimizer,
    cfg: &TrainConfig,
    batch: Batch,
    lr: f64,
) -> (UNet, f64) {
    let logits = model.forward(batch.x);
    let (loss, _) = cfg.loss.forward(logits, &batch.targets);
    let loss_value = loss.clone().into_scalar::<f32>() as f64;
    if !loss_value.is_finite() {
        return (model, loss_value);
    }
    let grads = GradientsParams::from_grads(loss.backward(), &model);
    (optim.step(lr, model, grads), loss_value)
}

fn log_epoch(cfg: &TrainConfig, rec: &EpochRecord) {
    eprintln!(
        "epoch {}/{}: train loss {:.4}{} | {:.1} img/s | {:.1}s",
        rec.epoch,
        cfg.epochs,
        rec.train_loss,
        match (&rec.val_loss, &rec.miou, &rec.mean_dice) {
            (Some(l), Some(m), Some(d)) => format!(" | val loss {l:.4} mIoU {m:.4} Dice {d:.4}"),
            _ => String::new(),
        },
        rec.images_per_second,
        rec.seconds
    );
}

/// Checkpoints the epoch `rec` describes: the exact state first (model and optimiser), then the
/// portable files (`last`, and `best` when validation mIoU improved), then the pointer
/// (`state.json`), then the history. Returns whether this epoch is the new best.
fn save_checkpoint(
    run_dir: &Path,
    cfg: &TrainConfig,
    model: &UNet,
    optim: &ModuleOptimizer,
    state: &mut RunState,
    rec: EpochRecord,
) -> Result<bool> {
    let epoch = rec.epoch;
    let ck_name = format!("checkpoints/epoch-{epoch:04}");
    let ck_dir = run_dir.join(&ck_name);
    if ck_dir.exists() {
        std::fs::remove_dir_all(&ck_dir).ok();
    }
    std::fs::create_dir_all(&ck_dir)
        .with_context(|| format!("{}: cannot create", ck_dir.display()))?;
    // `valid()` also commits BatchNorm's pending running-statistics update, which the saved
    // state must include.
    let valid = model.valid();
    model
        .clone()
        .save_file(ck_dir.join("model.bpk"))
        .map_err(|e| anyhow::anyhow!("{}: cannot save model state: {e:?}", ck_dir.display()))?;
    optim
        .save(ck_dir.join("optim.bpk"))
        .map_err(|e| anyhow::anyhow!("{}: cannot save optimiser state: {e:?}", ck_dir.display()))?;
    let meta = meta_of(cfg, epoch);
    checkpoint::save(&run_dir.join("last.safetensors"), &valid, &meta)?;
    let improved = match (rec.miou, state.best_miou) {
        (Some(m), Some(b)) => m > b,
        (Some(_), None) => true,
        (None, _) => true, // without validation, the last epoch is the best we know
    };
    if improved {
        checkpoint::save(&run_dir.join("best.safetensors"), &valid, &meta)?;
        state.best_epoch = Some(epoch);
        state.best_miou = rec.miou;
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
    write_history(run_dir, state)?;
    Ok(improved)
}

pub(crate) fn progress_bar(
    len: usize,
    epoch: usize,
    epochs: usize,
    quiet: bool,
) -> indicatif::ProgressBar {
    if quiet {
        return indicatif::ProgressBar::hidden();
    }
    let bar = indicatif::ProgressBar::new(len as u64);
    bar.set_style(
        indicatif::ProgressStyle::with_template(
            "{prefix} [{bar:30}] {pos}/{len} {msg} ({elapsed}<{eta})",
        )
        .unwrap()
        .progress_chars("=> "),
    );
    bar.set_prefix(format!("epoch {epoch}/{epochs}"));
    bar
}

/// `metrics.jsonl` and `curve.png` from the history (rewritten whole, so resume never duplicates).
pub fn write_history(run_dir: &Path, state: &RunState) -> Result<()> {
    write_jsonl(&run_dir.join("metrics.jsonl"), &state.history)?;
    let h = &state.history;
    let ep: Vec<f64> = h.iter().map(|r| r.epoch as f64).collect();
    let f = |g: &dyn Fn(&EpochRecord) -> Option<f64>| {
        h.iter()
            .map(|r| g(r).unwrap_or(f64::NAN))
            .collect::<Vec<_>>()
    };
    use crate::viz::plot::{Line, LinePanel, line_plot};
    let line = |name: &str, v: Vec<f64>| Line {
        name: name.into(),
        points: ep.iter().copied().zip(v).collect(),
    };
    let best = state
        .best_epoch
        .map(|b| (b as f64, format!("best epoch {b}")));
    line_plot(
        &run_dir.join("curve.png"),
        &[
            LinePanel {
                title: "loss".into(),
                x_label: "epoch".into(),
                y_label: "loss".into(),
                lines: vec![
                    line("train", f(&|r| Some(r.train_loss))),
                    line("validation", f(&|r| r.val_loss)),
                ],
                mark_x: best.clone(),
            },
            LinePanel {
                title: "validation".into(),
                x_label: "epoch".into(),
                y_label: "score".into(),
                lines: vec![
                    line("mIoU", f(&|r| r.miou)),
                    line("mean Dice", f(&|r| r.mean_dice)),
                    line("pixel accuracy", f(&|r| r.pixel_accuracy)),
                ],
                mark_x: best,
            },
        ],
        (900, 640),
    )
    .map(|_| ())
}

/// One JSON line per record, written atomically.
pub(crate) fn write_jsonl<T: Serialize>(path: &Path, records: &[T]) -> Result<()> {
    let mut lines = String::new();
    for r in records {
        lines.push_str(&serde_json::to_string(r)?);
        lines.push('\n');
    }
    crate::io::write_atomic(path, |w| {
        use std::io::Write;
        w.write_all(lines.as_bytes())?;
        Ok(())
    })
}

/// The paths a finished run leaves.
pub fn best_checkpoint(run_dir: &Path) -> PathBuf {
    run_dir.join("best.safetensors")
}

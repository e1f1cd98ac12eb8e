//! `segrs demo`: the built-in main job. Generates a deterministic synthetic dataset, trains a
//! compact U-Net, evaluates it on the validation split and writes pictures.

use super::DeviceArg;
use anyhow::{Result, bail};
use clap::Args;
use segrs::data::image_io::{write_label_png, write_png};
use segrs::data::synthetic::{CLASS_NAMES, dataset};
use segrs::device::device;
use segrs::io::write_json;
use segrs::ops::Precision;
use segrs::predict::SemanticPredictor;
use segrs::train::{RunOptions, demo_config, train};
use segrs::viz::overlay::{colorize, overlay, panels};
use segrs::viz::palette::palette_for;
use std::path::PathBuf;
use std::time::Instant;

#[derive(Args, Debug)]
pub struct DemoArgs {
    /// Output folder.
    #[arg(long, default_value = "segrs-demo")]
    pub out: PathBuf,
    #[arg(long, default_value_t = 8)]
    pub epochs: usize,
    #[arg(long, default_value_t = 240)]
    pub train_images: usize,
    #[arg(long, default_value_t = 48)]
    pub val_images: usize,
    /// Image side.
    #[arg(long, default_value_t = 64)]
    pub size: usize,
    #[arg(long, default_value_t = 7)]
    pub seed: u64,
    /// Replace an existing demo folder.
    #[arg(long)]
    pub force: bool,
    #[arg(long, value_enum, default_value_t = DeviceArg::Cpu)]
    pub device: DeviceArg,
    /// Inference engine (default: host on the CPU, burn on Vulkan).
    #[arg(long, value_enum)]
    pub engine: Option<super::EngineArg>,
}

pub fn run(a: DemoArgs) -> Result<()> {
    let start = Instant::now();
    let dev = device(a.device.into())?;
    if a.out.join("run").join("state.json").exists() {
        if !a.force {
            bail!(
                "{}: holds a previous demo; pass --force to replace it or choose another --out",
                a.out.display()
            );
        }
        std::fs::remove_dir_all(a.out.join("run"))?;
    }
    eprintln!(
        "generating {} + {} synthetic {}x{} images ({} classes)",
        a.train_images,
        a.val_images,
        a.size,
        a.size,
        CLASS_NAMES.len()
    );
    let train_set = dataset(a.seed, 0, a.train_images, a.size);
    let val_set = dataset(a.seed, a.train_images, a.val_images, a.size);
    // The validation split on disk, as a folder dataset segrs can read back.
    let data_dir = a.out.join("val_data");
    for s in &val_set {
        let rgb = s.image.to_rgb8();
        write_png(
            &data_dir.join("images").join(format!("{}.png", s.stem)),
            s.image.width,
            s.image.height,
            3,
            &rgb,
        )?;
        write_label_png(
            &data_dir.join("masks").join(format!("{}.png", s.stem)),
            &s.mask,
        )?;
    }
    let cfg = demo_config(a.epochs, a.seed);
    let run_dir = a.out.join("run");
    let outcome = train(
        &cfg,
        &train_set,
        &val_set,
        &run_dir,
        false,
        &dev,
        &RunOptions::default(),
    )?;

    // Evaluate the best checkpoint on the validation split, write predictions and pictures.
    let best = segrs::models::unet::checkpoint::load(
        &run_dir.join("best.safetensors"),
        (None, None),
        &dev,
    )?;
    let predictor = SemanticPredictor::new(
        &best.model,
        cfg.normalize.clone(),
        super::engine(a.engine, a.device, &dev, Precision::F32)?,
    )?;
    let palette = palette_for(CLASS_NAMES.len());
    let pred_dir = a.out.join("predictions");
    let mut pairs = Vec::new();
    for (i, s) in val_set.iter().enumerate() {
        let pred = predictor.predict(&s.image);
        write_label_png(&pred_dir.join(format!("{}.png", s.stem)), &pred)?;
        if i < 8 {
            let rgb = s.image.to_rgb8();
            let scale = |c: segrs::viz::canvas::Canvas| upscale(&c, 4);
            let panel = panels(&[
                (
                    "image",
                    &scale(segrs::viz::canvas::Canvas::from_rgb(
                        s.image.width,
                        s.image.height,
                        rgb.clone(),
                    )),
                ),
                ("ground truth", &scale(colorize(&s.mask, &palette))),
                ("prediction", &scale(colorize(&pred, &palette))),
                (
                    "overlay",
                    &scale(overlay(&rgb, &pred, &palette, 0.45, None)),
                ),
            ]);
            panel.save_png(&a.out.join("overlays").join(format!("{}.png", s.stem)))?;
        }
        pairs.push(segrs::metrics::semantic::LabelPair {
            pred: pred.data,
            gt: s.mask.data.clone(),
            height: s.image.height,
            width: s.image.width,
        });
    }
    let report = segrs::metrics::semantic::evaluate(&pairs, CLASS_NAMES.len(), None).report();
    write_json(&a.out.join("metrics.json"), &report)?;
    std::fs::copy(run_dir.join("curve.png"), a.out.join("curve.png"))?;
    let names: Vec<String> = CLASS_NAMES.iter().map(|s| s.to_string()).collect();
    print!("{}", report.table(Some(&names)));
    println!(
        "demo finished in {:.0}s: val mIoU {:.4} (best epoch {}); see {}/metrics.json, overlays/, curve.png",
        start.elapsed().as_secs_f64(),
        report.miou.unwrap_or(f64::NAN),
        outcome.state.best_epoch.unwrap_or(0),
        a.out.display()
    );
    Ok(())
}

/// Nearest-neighbour enlargement, so small demo images are visible.
fn upscale(c: &segrs::viz::canvas::Canvas, k: usize) -> segrs::viz::canvas::Canvas {
    let mut out = segrs::viz::canvas::Canvas::new(c.width * k, c.height * k, [0, 0, 0]);
    for y in 0..out.height {
        for x in 0..out.width {
            out.put(x as isize, y as isize, c.get(x / k, y / k));
        }
    }
    out
}

//! `segrs sam`: Segment Anything (SAM or SAM 2, by the checkpoint) from the command line.
//! Prompted masks (points, boxes, a mask from an earlier run) or `segrs sam auto` for the
//! automatic mask generator.

use anyhow::{Context, Result, bail};
use clap::{Args, Subcommand};
use segrs::data::image_io::{read_image, write_png};
use segrs::ops::Precision;
use segrs::sam::any_model::AnySam;
use segrs::sam::automatic::{AmgConfig, generate};
use segrs::sam::predictor::{ImageEmbedding, Prompt, save_embedding};
use segrs::sam::sam2_predictor::Postprocess;
use segrs::viz::canvas::Canvas;
use segrs::viz::prompts::{automatic_picture, batched_boxes_picture, prompt_picture};
use segrs::weights::{HostTensor, NamedTensors};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

#[derive(Args, Debug)]
#[command(args_conflicts_with_subcommands = true, subcommand_negates_reqs = true)]
pub struct SamArgs {
    #[command(subcommand)]
    pub command: Option<SamCommand>,
    #[command(flatten)]
    pub prompt: PromptArgs,
}

#[derive(Subcommand, Debug)]
pub enum SamCommand {
    /// Masks for everything in the image (SAM's automatic mask generator).
    Auto(AutoArgs),
    /// Track objects through a video with SAM 2 (from a first-frame mask, clicks or boxes).
    Video(super::sam_video::VideoArgs),
}

/// An `X,Y` point in image pixels.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct XY(pub f64, pub f64);

/// An `X1,Y1,X2,Y2` box in image pixels.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Xyxy(pub [f64; 4]);

fn numbers(s: &str, n: usize, what: &str) -> Result<Vec<f64>, String> {
    let v: Vec<f64> = s
        .split(',')
        .map(|t| {
            t.trim()
                .parse::<f64>()
                .map_err(|e| format!("{what} '{s}': '{t}': {e}"))
        })
        .collect::<Result<_, _>>()?;
    if v.len() != n || v.iter().any(|x| !x.is_finite()) {
        return Err(format!(
            "{what} '{s}': expected {n} comma-separated finite numbers"
        ));
    }
    Ok(v)
}

fn parse_xy(s: &str) -> Result<XY, String> {
    numbers(s, 2, "point").map(|v| XY(v[0], v[1]))
}

fn parse_xyxy(s: &str) -> Result<Xyxy, String> {
    numbers(s, 4, "box").map(|v| Xyxy([v[0], v[1], v[2], v[3]]))
}

#[derive(Args, Debug)]
pub struct PromptArgs {
    /// SAM or SAM 2 checkpoint: sam_vit_{b,l,h}_*.pth, mobile_sam.pt, sam2{,.1}_hiera_*.pt, or
    /// safetensors with the same keys.
    #[arg(long, required = true)]
    pub checkpoint: Option<PathBuf>,
    /// Arithmetic of the dense layers and convolutions: f32, or bf16 with f32 sums (on CPUs
    /// with AVX512_BF16; elsewhere f32 runs, with a note).
    #[arg(long, default_value_t = Precision::F32)]
    pub precision: Precision,
    /// The image (PNG, JPEG, TIFF, BMP; gray is replicated to RGB, alpha dropped).
    #[arg(long, required = true)]
    pub image: Option<PathBuf>,
    /// A point prompt X,Y in image pixels (repeat for several).
    #[arg(long = "point", value_parser = parse_xy)]
    pub points: Vec<XY>,
    /// The label of each point, 1 foreground or 0 background (default: all 1).
    #[arg(long = "label")]
    pub labels: Vec<i32>,
    /// A box X1,Y1,X2,Y2; several boxes are predicted as a batch, one mask set per box.
    #[arg(long = "box", value_parser = parse_xyxy)]
    pub boxes: Vec<Xyxy>,
    /// Low-res logits from an earlier run (its low_res_logits.safetensors); the best-scored
    /// mask in it is the mask prompt.
    #[arg(long)]
    pub mask_input: Option<PathBuf>,
    /// Return SAM's three masks (for ambiguous single clicks) instead of one.
    #[arg(long)]
    pub multimask: bool,
    /// SAM 2: fill background holes of at most this many low-resolution (256x256) pixels.
    #[arg(long, default_value_t = 0)]
    pub max_hole_area: usize,
    /// SAM 2: remove mask specks of at most this many low-resolution pixels.
    #[arg(long, default_value_t = 0)]
    pub max_sprinkle_area: usize,
    /// SAM 2: logits above this are the mask.
    #[arg(long, default_value_t = 0.0)]
    pub mask_threshold: f32,
    /// Write the image embedding here, for later runs with --embedding.
    #[arg(long)]
    pub save_embedding: Option<PathBuf>,
    /// Use a saved image embedding instead of running the image encoder.
    #[arg(long)]
    pub embedding: Option<PathBuf>,
    /// Output folder: mask_*.png, result.json, low_res_logits.safetensors, overlay.png.
    #[arg(long, required = true)]
    pub out: Option<PathBuf>,
}

#[derive(Args, Debug)]
pub struct AutoArgs {
    /// SAM or SAM 2 checkpoint (as for `segrs sam`).
    #[arg(long)]
    pub checkpoint: PathBuf,
    /// As for `segrs sam`.
    #[arg(long, default_value_t = Precision::F32)]
    pub precision: Precision,
    #[arg(long)]
    pub image: PathBuf,
    /// Output folder: masks.json and overlay.png.
    #[arg(long)]
    pub out: PathBuf,
    #[arg(long, default_value_t = 32)]
    pub points_per_side: usize,
    #[arg(long, default_value_t = 64)]
    pub points_per_batch: usize,
    /// Keep masks with a predicted IoU above this [default: 0.88 for SAM, 0.8 for SAM 2].
    #[arg(long)]
    pub pred_iou_thresh: Option<f32>,
    #[arg(long, default_value_t = 0.95)]
    pub stability_score_thresh: f32,
    #[arg(long, default_value_t = 1.0)]
    pub stability_score_offset: f32,
    #[arg(long, default_value_t = 0.7)]
    pub box_nms_thresh: f32,
    #[arg(long, default_value_t = 0)]
    pub crop_n_layers: usize,
    #[arg(long, default_value_t = 0.7)]
    pub crop_nms_thresh: f32,
    #[arg(long, default_value_t = 512.0 / 1500.0)]
    pub crop_overlap_ratio: f64,
    #[arg(long, default_value_t = 1)]
    pub crop_n_points_downscale_factor: usize,
    /// Remove holes and islands smaller than this many pixels (0 = off).
    #[arg(long, default_value_t = 0)]
    pub min_mask_region_area: usize,
    /// SAM 2: refine each mask once with its own logits as a mask prompt.
    #[arg(long)]
    pub use_m2m: bool,
    /// SAM 2: one mask per point instead of three.
    #[arg(long)]
    pub single_mask: bool,
    /// SAM 2: logits above this are the mask.
    #[arg(long, default_value_t = 0.0)]
    pub mask_threshold: f32,
}

pub fn run(a: SamArgs) -> Result<()> {
    match a.command {
        Some(SamCommand::Auto(x)) => run_auto(x),
        Some(SamCommand::Video(x)) => super::sam_video::run(x),
        None => run_prompt(a.prompt),
    }
}

fn load_model(path: &Path, precision: Precision) -> Result<AnySam> {
    let precision = super::on_this_cpu(precision);
    let t = std::time::Instant::now();
    let sam = AnySam::load_with(path, precision)?;
    eprintln!(
        "loaded {} from {} in {:.1} s",
        sam.variant(),
        path.display(),
        t.elapsed().as_secs_f64()
    );
    Ok(sam)
}

fn read_photo(path: &Path) -> Result<(Vec<u8>, usize, usize)> {
    let p = read_image(path)?;
    Ok((p.to_rgb8(), p.height, p.width))
}

fn spinner(msg: &str) -> indicatif::ProgressBar {
    let s = indicatif::ProgressBar::new_spinner();
    s.set_style(indicatif::ProgressStyle::with_template("{spinner} {msg} {elapsed}").unwrap());
    s.set_message(msg.to_string());
    s.enable_steady_tick(std::time::Duration::from_millis(200));
    s
}

fn embed(sam: &AnySam, rgb: &[u8], h: usize, w: usize, image: &Path) -> Result<ImageEmbedding> {
    let s = spinner(&format!(
        "encoding {} with {}",
        image.display(),
        sam.variant()
    ));
    let e = sam.set_image(rgb, h, w);
    s.finish_and_clear();
    let e = e.with_context(|| format!("{}: image encoder", image.display()))?;
    Ok(e)
}

fn read_mask_input(path: &Path, sam: &AnySam) -> Result<Vec<f32>> {
    let nt = NamedTensors::read(path)?;
    let Some(t) = nt.get("low_res_logits") else {
        bail!(
            "{}: no low_res_logits tensor (pass the low_res_logits.safetensors an earlier `segrs sam` run wrote)",
            path.display()
        );
    };
    let l = sam.low_res_size();
    if t.shape.len() != 3 || t.shape[1] != l || t.shape[2] != l || t.shape[0] == 0 {
        bail!(
            "{}: low_res_logits has shape {:?}; this model needs [k, {l}, {l}]",
            path.display(),
            t.shape
        );
    }
    let best = nt
        .get("scores")
        .filter(|s| s.data.len() == t.shape[0])
        .map(|s| {
            (0..s.data.len())
                .max_by(|&a, &b| s.data[a].total_cmp(&s.data[b]))
                .unwrap()
        })
        .unwrap_or(0);
    Ok(t.data[best * l * l..(best + 1) * l * l].to_vec())
}

fn run_prompt(a: PromptArgs) -> Result<()> {
    let (Some(ckpt), Some(image), Some(out)) = (a.checkpoint, a.image, a.out) else {
        bail!("--checkpoint, --image and --out are required");
    };
    let labels: Vec<i32> = if a.labels.is_empty() {
        vec![1; a.points.len()]
    } else if a.labels.len() == a.points.len() {
        a.labels.clone()
    } else {
        bail!(
            "{} --label values for {} --point values: give one label per point (or none for all 1)",
            a.labels.len(),
            a.points.len()
        );
    };
    if let Some(l) = labels.iter().find(|&&l| l != 0 && l != 1) {
        bail!("--label {l}: labels are 1 (foreground) or 0 (background)");
    }
    if a.points.is_empty() && a.boxes.is_empty() && a.mask_input.is_none() {
        bail!("no prompt: give --point, --box or --mask-input");
    }
    if a.boxes.len() > 1 && (!a.points.is_empty() || a.mask_input.is_some()) {
        bail!(
            "several --box values form a batch of box prompts; points and --mask-input go with one box at most"
        );
    }
    let sam = load_model(&ckpt, a.precision)?;
    let (rgb, h, w) = read_photo(&image)?;
    let points: Vec<(f64, f64, i32)> = a
        .points
        .iter()
        .zip(&labels)
        .map(|(p, &l)| (p.0, p.1, l))
        .collect();
    let mask_input = a
        .mask_input
        .as_deref()
        .map(|p| read_mask_input(p, &sam))
        .transpose()?;
    let emb = match &a.embedding {
        Some(p) => sam.load_embedding(p, (h, w))?,
        None => embed(&sam, &rgb, h, w, &image)?,
    };
    if let Some(p) = &a.save_embedding {
        save_embedding(p, &emb, sam.variant())?;
        eprintln!("wrote embedding {}", p.display());
    }
    let prompts: Vec<Prompt> = if a.boxes.len() > 1 {
        a.boxes
            .iter()
            .map(|b| Prompt {
                bbox: Some(b.0),
                ..Default::default()
            })
            .collect()
    } else {
        vec![Prompt {
            points: points.clone(),
            bbox: a.boxes.first().map(|b| b.0),
            mask_input,
        }]
    };
    let post = Postprocess {
        mask_threshold: a.mask_threshold,
        max_hole_area: a.max_hole_area,
        max_sprinkle_area: a.max_sprinkle_area,
    };
    use rayon::prelude::*;
    let t = std::time::Instant::now();
    let preds = prompts
        .par_iter()
        .map(|p| sam.predict(&emb, p, a.multimask, &post))
        .collect::<Result<Vec<_>>>()?;
    let dt = t.elapsed().as_secs_f64();
    std::fs::create_dir_all(&out).with_context(|| format!("{}: cannot create", out.display()))?;
    let mut names = Vec::new();
    let mut scores = Vec::new();
    let mut masks = Vec::new();
    let mut low = Vec::new();
    for p in &preds {
        for i in 0..p.logits.len() {
            let m = p.mask(i);
            let name = format!("mask_{}.png", names.len());
            let px: Vec<u8> = m.iter().map(|&v| v * 255).collect();
            write_png(&out.join(&name), w, h, 1, &px)?;
            names.push(name);
            scores.push(p.scores[i]);
            masks.push(m);
            low.extend_from_slice(&p.low_res[i]);
        }
    }
    let l = preds[0].low_res_size;
    let mut t = BTreeMap::new();
    t.insert(
        "low_res_logits".to_string(),
        HostTensor::new(vec![scores.len(), l, l], low),
    );
    t.insert(
        "scores".to_string(),
        HostTensor::new(vec![scores.len()], scores.clone()),
    );
    segrs::weights::safetensors::write(
        &out.join("low_res_logits.safetensors"),
        &t,
        &BTreeMap::new(),
    )?;
    let photo = Canvas::from_rgb(w, h, rgb);
    let pic = if prompts.len() > 1 {
        let boxes: Vec<[f64; 4]> = a.boxes.iter().map(|b| b.0).collect();
        batched_boxes_picture(&photo, &masks, &boxes)
    } else {
        prompt_picture(
            &photo,
            &masks,
            &scores,
            &points,
            a.boxes.first().map(|b| b.0),
        )
    };
    pic.save_png(&out.join("overlay.png"))?;
    let result = serde_json::json!({
        "scores": scores,
        "masks": names,
        "image_size": [h, w],
        "low_res_logits": "low_res_logits.safetensors",
        "model": sam.variant(),
        "object_scores": preds.iter().filter_map(|p| p.object_score).collect::<Vec<_>>(),
        "prompts": prompts.iter().map(|p| serde_json::json!({
            "points": p.points.iter().map(|q| [q.0, q.1]).collect::<Vec<_>>(),
            "labels": p.points.iter().map(|q| q.2).collect::<Vec<_>>(),
            "box": p.bbox,
            "mask_input": p.mask_input.is_some(),
        })).collect::<Vec<_>>(),
    });
    segrs::io::write_json(&out.join("result.json"), &result)?;
    for (n, s) in names.iter().zip(&scores) {
        println!("{n}  score {s:.4}");
    }
    eprintln!(
        "{} mask(s) from {} prompt set(s) in {:.0} ms -> {}",
        names.len(),
        prompts.len(),
        dt * 1e3,
        out.display()
    );
    Ok(())
}

fn run_auto(a: AutoArgs) -> Result<()> {
    let sam = load_model(&a.checkpoint, a.precision)?;
    let defaults = match &sam {
        AnySam::Sam(_) => AmgConfig::default(),
        AnySam::Sam2(_) => AmgConfig::sam2(),
    };
    let cfg = AmgConfig {
        points_per_side: a.points_per_side,
        points_per_batch: a.points_per_batch,
        pred_iou_thresh: a.pred_iou_thresh.unwrap_or(defaults.pred_iou_thresh),
        stability_score_thresh: a.stability_score_thresh,
        stability_score_offset: a.stability_score_offset,
        box_nms_thresh: a.box_nms_thresh,
        crop_n_layers: a.crop_n_layers,
        crop_nms_thresh: a.crop_nms_thresh,
        crop_overlap_ratio: a.crop_overlap_ratio,
        crop_n_points_downscale_factor: a.crop_n_points_downscale_factor,
        min_mask_region_area: a.min_mask_region_area,
        mask_threshold: a.mask_threshold,
        use_m2m: a.use_m2m,
        multimask_output: !a.single_mask,
    };
    if cfg.points_per_side > 1024 {
        bail!(
            "--points-per-side {} is absurd (the reference uses 32)",
            cfg.points_per_side
        );
    }
    let (rgb, h, w) = read_photo(&a.image)?;
    let bar = super::progress_bar("sam auto", 0);
    bar.set_message("points");
    let t = std::time::Instant::now();
    let recs = generate(&sam, &rgb, h, w, &cfg, &|done, total| {
        bar.set_length(total as u64);
        bar.set_position(done as u64);
    })
    .with_context(|| format!("{}: automatic masks", a.image.display()))?;
    bar.finish_and_clear();
    std::fs::create_dir_all(&a.out)
        .with_context(|| format!("{}: cannot create", a.out.display()))?;
    let json: Vec<serde_json::Value> = recs.iter().map(|r| r.to_json()).collect();
    segrs::io::write_atomic(&a.out.join("masks.json"), |f| {
        serde_json::to_writer(&mut *f, &json)?;
        Ok(())
    })?;
    let masks: Vec<(u64, Vec<u8>)> = recs.iter().map(|r| (r.area, r.mask_rowmajor())).collect();
    automatic_picture(&Canvas::from_rgb(w, h, rgb), &masks).save_png(&a.out.join("overlay.png"))?;
    eprintln!(
        "{} masks in {:.1} s -> {}",
        recs.len(),
        t.elapsed().as_secs_f64(),
        a.out.display()
    );
    Ok(())
}

//! `segrs panoptic predict`: a Mask2Former model folder (Hugging Face `config.json` +
//! `model.safetensors`) over a folder of images, written as COCO panoptic (PNGs + JSON, what
//! `segrs eval panoptic` reads), COCO instance results, or semantic index PNGs, with pictures.

use super::{ShardArgs, progress_bar};
use anyhow::{Context, Result, bail};
use clap::{Args, Subcommand, ValueEnum};
use segrs::data::folder::image_paths;
use segrs::data::image_io::{LabelMap, read_image, write_label_png};
use segrs::formats::panoptic::{PanopticAnnotation, PanopticCategory, segments_of, write_id_png};
use segrs::models::mask2former::postprocess::{instances, panoptic, semantic};
use segrs::models::mask2former::{Mask2Former, PostprocessConfig};
use segrs::ops::Precision;
use segrs::viz::instances::{DrawnObject, color_of, draw_objects};
use serde_json::{Value, json};
use std::path::{Path, PathBuf};

#[derive(Subcommand, Debug)]
pub enum PanopticCommand {
    /// Segment every image of a folder with a Mask2Former model.
    Predict(PredictArgs),
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum Task {
    /// Segment-id PNGs + COCO panoptic JSON.
    Panoptic,
    /// COCO results JSON (RLE masks, scores).
    Instance,
    /// Class-index PNGs.
    Semantic,
}

#[derive(Args, Debug)]
pub struct PredictArgs {
    /// A Mask2Former model folder as downloaded from the Hugging Face hub: config.json,
    /// model.safetensors (or shards, or pytorch_model.bin), preprocessor_config.json.
    #[arg(long)]
    pub model: PathBuf,
    /// A folder of images (or one image).
    #[arg(long)]
    pub images: PathBuf,
    #[arg(long)]
    pub out: PathBuf,
    /// What the backbone's and pixel decoder's products compute in: f32, or bf16 (with f32
    /// sums; needs AVX512_BF16, else f32 runs and a note says why). The query decoder stays
    /// f32.
    #[arg(long, default_value_t = Precision::F32)]
    pub precision: Precision,
    #[arg(long, value_enum, default_value_t = Task::Panoptic)]
    pub task: Task,
    /// COCO categories (a JSON list, or any COCO JSON with "categories"): the model's labels
    /// are matched to them by name, output category ids are theirs, and the stuff categories
    /// (isthing 0) are fused into one segment per image. Without it, category id = label index
    /// and nothing is fused.
    #[arg(long)]
    pub categories: Option<PathBuf>,
    /// A COCO JSON whose "images" give the image ids by file name (default: the file name's
    /// number, as COCO's 000000139.jpg -> 139, else 1.. in name order).
    #[arg(long)]
    pub gt: Option<PathBuf>,
    /// Class score a query needs to make a segment (panoptic, instance).
    #[arg(long, default_value_t = 0.5)]
    pub threshold: f32,
    /// Mask probability that counts as inside.
    #[arg(long, default_value_t = 0.5)]
    pub mask_threshold: f32,
    /// Share of its mask a segment must keep against the others (panoptic).
    #[arg(long, default_value_t = 0.8)]
    pub overlap_threshold: f32,
    #[command(flatten)]
    pub shard: ShardArgs,
    /// Skip the pictures.
    #[arg(long)]
    pub no_overlays: bool,
}

pub fn run(c: PanopticCommand) -> Result<()> {
    match c {
        PanopticCommand::Predict(a) => predict(a),
    }
}

/// Output categories: the model's labels mapped to category ids.
struct Categories {
    /// Category id per label index.
    ids: Vec<u32>,
    list: Vec<PanopticCategory>,
    /// Label indexes whose category is stuff.
    stuff: Vec<usize>,
}

fn categories(path: Option<&Path>, labels: &[String]) -> Result<Categories> {
    let Some(path) = path else {
        return Ok(Categories {
            ids: (0..labels.len() as u32).collect(),
            list: labels
                .iter()
                .enumerate()
                .map(|(i, n)| PanopticCategory {
                    id: i as u32,
                    name: n.clone(),
                    isthing: true,
                    color: None,
                })
                .collect(),
            stuff: Vec::new(),
        });
    };
    let text = std::fs::read_to_string(path)
        .with_context(|| format!("{}: cannot read", path.display()))?;
    let v: Value = serde_json::from_str(&text)
        .map_err(|e| anyhow::anyhow!("{}: malformed JSON: {e}", path.display()))?;
    let list = v.get("categories").cloned().unwrap_or(v);
    let list: Vec<PanopticCategory> = serde_json::from_value(list).map_err(|e| {
        anyhow::anyhow!(
            "{}: not a list of categories (id, name, isthing): {e}",
            path.display()
        )
    })?;
    let by_name: std::collections::HashMap<&str, &PanopticCategory> =
        list.iter().map(|c| (c.name.as_str(), c)).collect();
    let mut ids = Vec::with_capacity(labels.len());
    let mut stuff = Vec::new();
    let mut missing = Vec::new();
    for (i, name) in labels.iter().enumerate() {
        match by_name.get(name.as_str()) {
            Some(c) => {
                ids.push(c.id);
                if !c.isthing {
                    stuff.push(i);
                }
            }
            None => missing.push(name.as_str()),
        }
    }
    if !missing.is_empty() {
        bail!(
            "{}: {} of the model's labels have no category of that name (e.g. {:?})",
            path.display(),
            missing.len(),
            &missing[..missing.len().min(5)]
        );
    }
    Ok(Categories { ids, list, stuff })
}

/// `(image_id, file name, path)` of every image.
fn numbered_images(a: &PredictArgs) -> Result<Vec<(u64, String, PathBuf)>> {
    let files = image_paths(&a.images)?;
    let from_gt: Option<std::collections::HashMap<String, u64>> = match &a.gt {
        None => None,
        Some(p) => {
            let text = std::fs::read_to_string(p)
                .with_context(|| format!("{}: cannot read", p.display()))?;
            let v: Value = serde_json::from_str(&text)
                .map_err(|e| anyhow::anyhow!("{}: malformed JSON: {e}", p.display()))?;
            let images = v
                .get("images")
                .and_then(Value::as_array)
                .with_context(|| format!("{}: no \"images\" list", p.display()))?;
            Some(
                images
                    .iter()
                    .filter_map(|im| {
                        Some((
                            im.get("file_name")?.as_str()?.to_string(),
                            im.get("id")?.as_u64()?,
                        ))
                    })
                    .collect(),
            )
        }
    };
    files
        .iter()
        .enumerate()
        .map(|(i, p)| {
            let name = p.file_name().unwrap().to_string_lossy().to_string();
            let stem = p.file_stem().unwrap().to_string_lossy().to_string();
            let id = match &from_gt {
                Some(m) => *m.get(&name).with_context(|| {
                    format!(
                        "{}: not an image of {} (no file_name {name:?} there)",
                        p.display(),
                        a.gt.as_ref().unwrap().display()
                    )
                })?,
                None => stem.parse::<u64>().unwrap_or(i as u64 + 1),
            };
            Ok((id, name, p.clone()))
        })
        .collect()
}

fn predict(a: PredictArgs) -> Result<()> {
    let shard = a.shard.resolve()?;
    let images = shard.select(numbered_images(&a)?);
    for (flag, v) in [
        ("--threshold", a.threshold),
        ("--mask-threshold", a.mask_threshold),
        ("--overlap-threshold", a.overlap_threshold),
    ] {
        if !(0.0..=1.0).contains(&v) {
            bail!("{flag} {v}: must be between 0 and 1");
        }
    }
    let model = Mask2Former::load_with(&a.model, super::on_this_cpu(a.precision))?;
    let labels = model.config.labels.clone();
    let cats = categories(a.categories.as_deref(), &labels)?;
    let cfg = PostprocessConfig {
        threshold: a.threshold,
        mask_threshold: a.mask_threshold,
        overlap_mask_area_threshold: a.overlap_threshold,
        label_ids_to_fuse: cats.stuff.clone(),
    };
    let sub = match a.task {
        Task::Panoptic => Some("panoptic"),
        Task::Semantic => Some("semantic"),
        Task::Instance => None,
    };
    for d in sub
        .into_iter()
        .chain((!a.no_overlays).then_some("overlays"))
    {
        std::fs::create_dir_all(a.out.join(d))
            .with_context(|| format!("{}: cannot create", a.out.join(d).display()))?;
    }
    std::fs::create_dir_all(&a.out)
        .with_context(|| format!("{}: cannot create", a.out.display()))?;
    let bar = progress_bar("mask2former", images.len());
    let mut annotations: Vec<PanopticAnnotation> = Vec::new();
    let mut image_records = Vec::new();
    let mut records = Vec::new();
    let mut count = 0usize;
    for (id, file_name, path) in &images {
        bar.set_message(file_name.clone());
        let pic = read_image(path)?;
        let rgb = pic.to_rgb8();
        let (h, w) = (pic.height, pic.width);
        let pred = model.predict(&rgb, h, w);
        let stem = path.file_stem().unwrap().to_string_lossy().to_string();
        image_records.push(json!({"id": id, "file_name": file_name, "height": h, "width": w}));
        let name = |l: usize| labels.get(l).map(String::as_str).unwrap_or("?");
        let objects: Vec<DrawnObject> = match a.task {
            Task::Panoptic => {
                let p = panoptic(&pred, (h, w), &cfg);
                let map = LabelMap {
                    width: w,
                    height: h,
                    data: p.ids.clone(),
                };
                let png = format!("{stem}.png");
                write_id_png(&a.out.join("panoptic").join(&png), &map)?;
                // Queries fused into one stuff segment share its id: one entry per id.
                let mut seen = std::collections::HashSet::new();
                let unique: Vec<_> = p.segments.iter().filter(|s| seen.insert(s.id)).collect();
                let pairs: Vec<(u32, u32)> = unique
                    .iter()
                    .map(|s| (s.id, cats.ids[s.label_id]))
                    .collect();
                let segs = segments_of(&map, &pairs);
                count += segs.len();
                annotations.push(PanopticAnnotation {
                    image_id: json!(id),
                    file_name: png,
                    segments_info: segs,
                });
                unique
                    .iter()
                    .enumerate()
                    .map(|(k, s)| DrawnObject {
                        mask: p.ids.iter().map(|&v| (v == s.id) as u8).collect(),
                        color: color_of(k),
                        label: Some(format!("{} {:.2}", name(s.label_id), s.score)),
                    })
                    .collect()
            }
            Task::Instance => {
                let inst = instances(&pred, (h, w), &cfg);
                for (s, m) in inst.segments.iter().zip(&inst.masks) {
                    records.push(segrs::formats::coco::result_record(
                        *id,
                        file_name,
                        cats.ids[s.label_id] as u64,
                        mask_box(m, w),
                        s.score,
                        m,
                        h,
                        w,
                    )?);
                }
                count += inst.segments.len();
                inst.segments
                    .iter()
                    .zip(inst.masks)
                    .enumerate()
                    .map(|(k, (s, m))| DrawnObject {
                        mask: m,
                        color: color_of(k),
                        label: Some(format!("{} {:.2}", name(s.label_id), s.score)),
                    })
                    .collect()
            }
            Task::Semantic => {
                let map = semantic(&pred, (h, w));
                let mut present: Vec<u32> = map.clone();
                present.sort_unstable();
                present.dedup();
                count += present.len();
                write_label_png(
                    &a.out.join("semantic").join(format!("{stem}.png")),
                    &LabelMap {
                        width: w,
                        height: h,
                        data: map.clone(),
                    },
                )?;
                present
                    .iter()
                    .map(|&c| DrawnObject {
                        mask: map.iter().map(|&v| (v == c) as u8).collect(),
                        color: color_of(c as usize),
                        label: Some(name(c as usize).to_string()),
                    })
                    .collect()
            }
        };
        if !a.no_overlays {
            draw_objects(&rgb, w, h, &objects, 0.45)
                .save_png(&a.out.join("overlays").join(format!("{stem}.png")))?;
        }
        bar.inc(1);
    }
    bar.finish_and_clear();
    let suffix = shard.suffix();
    let written = match a.task {
        Task::Panoptic => {
            let p = a.out.join(format!("panoptic{suffix}.json"));
            segrs::io::write_json(
                &p,
                &json!({"images": image_records, "annotations": annotations, "categories": cats.list}),
            )?;
            format!(
                "{count} segments -> {} and {}",
                p.display(),
                a.out.join("panoptic").display()
            )
        }
        Task::Instance => {
            let p = a.out.join(format!("results{suffix}.json"));
            segrs::io::write_json(&p, &records)?;
            format!("{count} instances -> {}", p.display())
        }
        Task::Semantic => format!(
            "{count} class regions -> {}",
            a.out.join("semantic").display()
        ),
    };
    println!(
        "{} image(s), Mask2Former ({} classes): {written}",
        images.len(),
        labels.len()
    );
    Ok(())
}

/// The box `[x0, y0, x1, y1]` around a row-major mask (pixel edges).
fn mask_box(m: &[u8], w: usize) -> [f32; 4] {
    let mut b = [usize::MAX, usize::MAX, 0, 0];
    for (i, _) in m.iter().enumerate().filter(|(_, v)| **v != 0) {
        let (x, y) = (i % w, i / w);
        b = [b[0].min(x), b[1].min(y), b[2].max(x + 1), b[3].max(y + 1)];
    }
    if b[0] == usize::MAX {
        return [0.0; 4];
    }
    b.map(|v| v as f32)
}

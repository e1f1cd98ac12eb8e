//! `segrs data check`: what a dataset holds and what to pass for it, before a long run.

use anyhow::{Result, bail};
use clap::{Args, Subcommand};
use segrs::data::check::check_folder;
use segrs::data::folder::dataset_dirs;
use segrs::formats::coco_check::check_coco;
use segrs::io::write_json;
use std::path::PathBuf;

#[derive(Subcommand, Debug)]
pub enum DataCommand {
    /// Check a semantic dataset folder (images/ + masks/) or a COCO instances file.
    Check(CheckArgs),
}

#[derive(Args, Debug)]
pub struct CheckArgs {
    /// Dataset folder with images/ and masks/ (or give --images and --masks).
    pub dir: Option<PathBuf>,
    #[arg(long)]
    pub images: Option<PathBuf>,
    #[arg(long)]
    pub masks: Option<PathBuf>,
    /// A COCO instances file to check (with --images: the folder of its image files).
    #[arg(long)]
    pub coco: Option<PathBuf>,
    /// Number of classes, to find mask values out of range.
    #[arg(long)]
    pub classes: Option<usize>,
    /// Ignore value after conversion (`none` to disable).
    #[arg(long, default_value = "255", value_parser = super::eval::parse_ignore)]
    pub ignore_index: super::eval::IgnoreIndex,
    #[command(flatten)]
    pub labels: super::labels::LabelArgs,
    /// Write the findings as JSON to this file.
    #[arg(long)]
    pub json: Option<PathBuf>,
}

pub fn run(c: DataCommand) -> Result<()> {
    match c {
        DataCommand::Check(a) => check(a),
    }
}

fn check(a: CheckArgs) -> Result<()> {
    if let Some(coco) = &a.coco {
        let r = check_coco(coco, a.images.as_deref())?;
        println!(
            "{}: {} images, {} annotations ({} crowd), {} categories",
            coco.display(),
            r.images,
            r.annotations,
            r.crowd,
            r.categories
        );
        println!("segmentations: {:?}", r.segmentation_kinds);
        println!("annotations per category: {:?}", r.per_category);
        for w in &r.warnings {
            println!("warning: {w}");
        }
        for p in &r.problems {
            println!("problem: {p}");
        }
        if r.problems.is_empty() && r.warnings.is_empty() {
            println!("no problems found");
        }
        if let Some(j) = &a.json {
            write_json(j, &r)?;
        }
        return Ok(());
    }
    let (images, masks) = match (&a.images, &a.masks, &a.dir) {
        (Some(i), Some(m), _) => (i.clone(), m.clone()),
        (_, _, Some(d)) => dataset_dirs(d)?,
        _ => bail!("give a dataset folder, --images and --masks, or --coco FILE"),
    };
    let conv = a.labels.convention(a.ignore_index.0)?;
    let r = check_folder(&images, &masks, &conv, a.classes)?;
    println!(
        "{} image/mask pairs ({} images without a mask, {} masks without an image)",
        r.pairs,
        r.images_without_mask.len(),
        r.masks_without_image.len()
    );
    println!(
        "image sizes: {:?}; channels: {:?}",
        r.image_sizes, r.image_channels
    );
    println!("masks: {:?}", r.mask_kinds);
    let shown: Vec<String> = r
        .stored_values
        .iter()
        .take(40)
        .map(|(v, c)| format!("{v}: {c}"))
        .collect();
    println!(
        "stored mask values ({} distinct; value: pixels): {}{}",
        r.stored_values.len(),
        shown.join(", "),
        if r.stored_values.len() > 40 {
            ", ..."
        } else {
            ""
        }
    );
    if !conv.is_identity() {
        let shown: Vec<String> = r
            .classes
            .iter()
            .take(40)
            .map(|(v, c)| format!("{v}: {c}"))
            .collect();
        println!("after conversion (class: pixels): {}", shown.join(", "));
    }
    for (what, list) in [
        ("image without a mask", &r.images_without_mask),
        ("mask without an image", &r.masks_without_image),
        ("size mismatch", &r.size_mismatches),
        ("unreadable", &r.unreadable),
    ] {
        for item in list.iter().take(10) {
            println!("problem ({what}): {item}");
        }
        if list.len() > 10 {
            println!("problem ({what}): ... {} more", list.len() - 10);
        }
    }
    for adv in &r.advice {
        println!("advice: {adv}");
    }
    if let Some(j) = &a.json {
        write_json(j, &r)?;
    }
    Ok(())
}

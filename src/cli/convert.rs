//! `segrs convert`: between COCO instances JSON, per-instance PNG folders (DSB2018), label maps
//! (StarDist), COCO panoptic and semantic + instance maps.

use anyhow::Result;
use clap::{Args, Subcommand};
use hotcoco::Category;
use segrs::formats::{instances, panoptic};
use std::path::PathBuf;

#[derive(Subcommand, Debug)]
pub enum ConvertCommand {
    /// DSB2018 layout (ROOT/<id>/images/<id>.png + ROOT/<id>/masks/*.png) -> COCO instances JSON.
    DsbToCoco(DsbToCoco),
    /// Label maps (PNG/TIFF, each nonzero id an object; a file or a folder) -> COCO instances JSON.
    LabelmapToCoco(LabelmapToCoco),
    /// COCO instances JSON -> OUT/<stem>/masks/<ann id>.png and OUT/<stem>/labels.png.
    CocoToMasks(CocoToMasks),
    /// COCO panoptic (JSON + PNGs) -> OUT/semantic/*.png (category ids, void 255) and OUT/instance/*.png.
    PanopticToMaps(PanopticToMaps),
    /// Semantic + instance maps -> COCO panoptic JSON + PNGs.
    MapsToPanoptic(MapsToPanoptic),
}

#[derive(Args, Debug)]
pub struct DsbToCoco {
    #[arg(long)]
    pub data: PathBuf,
    #[arg(long)]
    pub out: PathBuf,
    /// Name of the single category (id 1).
    #[arg(long, default_value = "nucleus")]
    pub category: String,
}

#[derive(Args, Debug)]
pub struct LabelmapToCoco {
    #[arg(long)]
    pub labels: PathBuf,
    #[arg(long)]
    pub out: PathBuf,
    #[arg(long, default_value = "object")]
    pub category: String,
}

#[derive(Args, Debug)]
pub struct CocoToMasks {
    #[arg(long)]
    pub gt: PathBuf,
    #[arg(long)]
    pub out: PathBuf,
}

#[derive(Args, Debug)]
pub struct PanopticToMaps {
    #[arg(long)]
    pub json: PathBuf,
    /// Folder of panoptic PNGs.
    #[arg(long)]
    pub dir: PathBuf,
    /// Categories (with isthing) when the JSON has none.
    #[arg(long)]
    pub categories: Option<PathBuf>,
    #[arg(long)]
    pub out: PathBuf,
}

#[derive(Args, Debug)]
pub struct MapsToPanoptic {
    #[arg(long)]
    pub semantic: PathBuf,
    #[arg(long)]
    pub instance: PathBuf,
    #[arg(long)]
    pub categories: PathBuf,
    #[arg(long)]
    pub out_json: PathBuf,
    #[arg(long)]
    pub out_dir: PathBuf,
}

fn one_category(name: &str) -> Vec<Category> {
    vec![Category {
        id: 1,
        name: name.to_string(),
        ..Default::default()
    }]
}

/// Writes instance images as a one-category COCO instances file.
fn write_coco(
    imgs: &[instances::InstanceImage],
    category: &str,
    out: &std::path::Path,
) -> Result<()> {
    let ds = instances::to_coco(imgs, one_category(category))?;
    segrs::io::write_json(out, &ds)?;
    println!(
        "wrote {} ({} images, {} objects)",
        out.display(),
        ds.images.len(),
        ds.annotations.len()
    );
    Ok(())
}

pub fn run(cmd: ConvertCommand) -> Result<()> {
    match cmd {
        ConvertCommand::DsbToCoco(a) => {
            write_coco(&instances::read_dsb(&a.data, 1)?, &a.category, &a.out)?
        }
        ConvertCommand::LabelmapToCoco(a) => write_coco(
            &instances::read_label_maps(&a.labels, 1)?,
            &a.category,
            &a.out,
        )?,
        ConvertCommand::CocoToMasks(a) => {
            let gt = segrs::formats::coco::load_gt(&a.gt)?;
            let n = instances::write_dsb(&gt, &a.out)?;
            println!("wrote {n} masks under {}", a.out.display());
        }
        ConvertCommand::PanopticToMaps(a) => {
            let n = panoptic::convert_to_maps(&a.json, &a.dir, a.categories.as_deref(), &a.out)?;
            println!(
                "wrote {n} semantic + instance map pairs under {}",
                a.out.display()
            );
        }
        ConvertCommand::MapsToPanoptic(a) => {
            let n = panoptic::convert_from_maps(
                &a.semantic,
                &a.instance,
                &a.categories,
                &a.out_json,
                &a.out_dir,
            )?;
            println!(
                "wrote {} and {n} PNGs in {}",
                a.out_json.display(),
                a.out_dir.display()
            );
        }
    }
    Ok(())
}

//! `segrs predict`: label maps for a folder of images (or one image), with optional colour maps
//! and overlays.

use super::ShardArgs;
use super::{DeviceArg, NormalizeArgs};
use anyhow::{Context, Result, bail};
use clap::Args;
use segrs::data::folder::{IMAGE_EXTENSIONS, StemFilter, list_images};
use segrs::data::image_io::{read_image, write_label_png};
use segrs::data::rows::{LabelRowWriter, open_rows};
use segrs::device::device;
use segrs::io::write_atomic_file;
use segrs::models::unet::checkpoint;
use segrs::ops::Precision;
use segrs::predict::{SemanticPredictor, Tiling, argmax_row};
use segrs::viz::overlay::{colorize, overlay};
use segrs::viz::palette::palette_for;
use std::path::{Path, PathBuf};

#[derive(Args, Debug)]
pub struct PredictArgs {
    /// segrs checkpoint (.safetensors) or PyTorch U-Net state_dict (.pth).
    #[arg(long)]
    pub checkpoint: PathBuf,
    /// Folder of images, or one image file.
    #[arg(long)]
    pub images: PathBuf,
    /// Output folder: STEM.png label maps (class index per pixel, original size).
    #[arg(long)]
    pub out: PathBuf,
    /// Only these stems (e.g. `25-29`).
    #[arg(long)]
    pub stems: Option<StemFilter>,
    /// Also write overlay/STEM.png (image blended with class colours and contours).
    #[arg(long)]
    pub overlay: bool,
    /// Also write color/STEM.png (palette-coloured label map).
    #[arg(long)]
    pub color: bool,
    /// Checked against the checkpoint.
    #[arg(long)]
    pub in_channels: Option<usize>,
    /// Checked against the checkpoint.
    #[arg(long)]
    pub classes: Option<usize>,
    /// Write label maps with 255 for class 1 (binary models), for viewing.
    #[arg(long)]
    pub binary_255: bool,
    /// Write the values the training masks stored (undoing --reduce-zero-label / --label-map /
    /// --binary as recorded in the checkpoint) instead of class indices.
    #[arg(long, conflicts_with = "binary_255")]
    pub write_label_ids: bool,
    /// Preprocessing for a PyTorch state_dict (segrs checkpoints record their own).
    #[command(flatten)]
    pub normalize: NormalizeArgs,
    #[arg(long, value_enum, default_value_t = DeviceArg::Cpu)]
    pub device: DeviceArg,
    #[command(flatten)]
    pub shard: ShardArgs,
    /// Inference engine (default: host on the CPU, burn on Vulkan).
    #[arg(long, value_enum)]
    pub engine: Option<super::EngineArg>,
    /// Predict in overlapping tiles of this side (the U-Net paper's overlap-tile strategy, for
    /// images too large to predict at once); host engine. PNG and TIFF / BigTIFF images stream
    /// by rows (memory follows the tile size and the width, not the area) unless --overlay or
    /// --color asks for the whole picture.
    #[arg(long)]
    pub tile: Option<usize>,
    /// Arithmetic of the host engine's convolutions: f32, or bf16 with f32 sums (on CPUs with
    /// AVX512_BF16; elsewhere f32 runs, with a note).
    #[arg(long, default_value_t = Precision::F32)]
    pub precision: Precision,
    /// Pixels shared by neighbouring tiles, blended linearly (with --tile).
    #[arg(long, default_value_t = 64, requires = "tile")]
    pub overlap: usize,
}

fn inputs(images: &Path, stems: Option<&StemFilter>) -> Result<Vec<(String, PathBuf)>> {
    if images.is_file() {
        let stem = images
            .file_stem()
            .map(|s| s.to_string_lossy().to_string())
            .unwrap_or_default();
        return Ok(vec![(stem, images.to_path_buf())]);
    }
    if !images.is_dir() {
        bail!("{}: no such image or folder", images.display());
    }
    let all = list_images(images)?;
    let list: Vec<_> = all
        .into_iter()
        .filter(|(s, _)| stems.is_none_or(|f| f.matches(s)))
        .collect();
    if list.is_empty() {
        bail!(
            "{}: no images ({}){}",
            images.display(),
            IMAGE_EXTENSIONS.join(", "),
            if stems.is_some() {
                " match --stems"
            } else {
                ""
            }
        );
    }
    Ok(list)
}

pub fn run(a: PredictArgs) -> Result<()> {
    let dev = device(a.device.into())?;
    let loaded = checkpoint::load(&a.checkpoint, (a.in_channels, a.classes), &dev)?;
    let normalize = match &loaded.meta {
        Some(m) if !a.normalize.given() => m.normalize.clone(),
        _ => a.normalize.resolve()?,
    };
    let predictor = SemanticPredictor::new(
        &loaded.model,
        normalize,
        super::engine(a.engine, a.device, &dev, a.precision)?,
    )?;
    let label_ids = match (&loaded.meta, a.write_label_ids) {
        (_, false) => None,
        (Some(m), true) => Some(m.labels.clone()),
        (None, true) => bail!(
            "{}: --write-label-ids needs a segrs checkpoint (it records how masks became classes)",
            a.checkpoint.display()
        ),
    };
    if let Some(t) = a.tile
        && (t == 0 || t > 16384)
    {
        bail!("--tile {t} is outside 1..=16384");
    }
    let shard = a.shard.resolve()?;
    let list = shard.select(inputs(&a.images, a.stems.as_ref())?);
    std::fs::create_dir_all(&a.out)
        .with_context(|| format!("{}: cannot create", a.out.display()))?;
    let palette = palette_for(predictor.model.config.num_classes);
    let bar = super::progress_bar("predict", list.len());
    // The value written for a class: the stored label id, 255 for class 1 of a binary model, or
    // the class index.
    let written_value = |class: u32| -> u32 {
        let v = match &label_ids {
            Some(conv) => conv.stored_value(class),
            None => class,
        };
        if a.binary_255 {
            if v > 0 { 255 } else { 0 }
        } else {
            v
        }
    };
    let mut failures = Vec::new();
    for (stem, path) in &list {
        bar.set_message(stem.clone());
        let result = (|| -> Result<()> {
            let label_path = a.out.join(format!("{stem}.png"));
            if let Some(tile) = a.tile
                && !a.color
                && !a.overlay
            {
                // Rows stream in from the image and out to the label PNG: memory is bounded by
                // the tile size, whatever the image's.
                let mut src = open_rows(path)?;
                let w = src.width();
                let max_value = (0..predictor.model.config.num_classes as u32)
                    .map(written_value)
                    .max()
                    .unwrap_or(0);
                let mut labels = Vec::with_capacity(w);
                return write_atomic_file(&label_path, |file| {
                    let mut writer = LabelRowWriter::new(file, w, src.height(), max_value)?;
                    predictor
                        .predict_rows(
                            &mut *src,
                            Tiling {
                                tile,
                                overlap: a.overlap,
                            },
                            &mut |_, logits| {
                                labels.clear();
                                labels.extend(argmax_row(logits, w).map(written_value));
                                writer.write_row(&labels)
                            },
                            &|done, total| bar.set_message(format!("{stem}: tile {done}/{total}")),
                        )
                        .with_context(|| format!("{}", path.display()))?;
                    writer.finish()
                });
            }
            let pic = read_image(path)?;
            let labels = match a.tile {
                None => predictor.predict(&pic),
                Some(tile) => predictor
                    .predict_tiled(
                        &pic,
                        Tiling {
                            tile,
                            overlap: a.overlap,
                        },
                        &|done, total| bar.set_message(format!("{stem}: tile {done}/{total}")),
                    )
                    .with_context(|| format!("{}", path.display()))?,
            };
            let mut written = labels.clone();
            written.data.iter_mut().for_each(|v| *v = written_value(*v));
            write_label_png(&label_path, &written)?;
            if a.color {
                colorize(&labels, &palette)
                    .save_png(&a.out.join("color").join(format!("{stem}.png")))?;
            }
            if a.overlay {
                overlay(&pic.to_rgb8(), &labels, &palette, 0.45, None)
                    .save_png(&a.out.join("overlay").join(format!("{stem}.png")))?;
            }
            Ok(())
        })();
        if let Err(e) = result {
            failures.push(format!("{e:#}"));
        }
        bar.inc(1);
    }
    bar.finish_and_clear();
    println!(
        "wrote {} prediction(s) to {}",
        list.len() - failures.len(),
        a.out.display()
    );
    if !failures.is_empty() {
        bail!(
            "{} image(s) failed:\n  {}",
            failures.len(),
            failures.join("\n  ")
        );
    }
    Ok(())
}

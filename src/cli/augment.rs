//! The augmentation flags `segrs train` takes, and `segrs augment --preview`: a panel of one
//! image and its mask as training would see them.

use super::{Floats, parse_floats};
use anyhow::{Context, Result, bail};
use clap::Args;
use rand::SeedableRng;
use segrs::data::augment::{AugmentConfig, Elastic, Geometry, Intensity, Source, augment};
use segrs::data::folder::{MaskOptions, StemFilter, dataset_dirs, load_sample, pair_folder};
use segrs::data::image_io::LabelMap;
use segrs::data::preprocess::Normalize;
use segrs::viz::canvas::Canvas;
use segrs::viz::overlay::{overlay, panels};
use segrs::viz::palette::palette_for;
use std::path::PathBuf;

/// Geometric and intensity augmentation (all off unless given).
#[derive(Args, Debug, Clone, Default)]
pub struct AugmentArgs {
    /// The U-Net paper's elastic deformation: `SIGMA[,GRID]` pixels of random displacement on a
    /// coarse GRID x GRID grid (the paper: `10,3`; GRID defaults to 3), interpolated bicubically.
    #[arg(long, value_parser = parse_floats)]
    pub elastic: Option<Floats>,
    /// Random rotation within +-DEGREES about the crop's centre.
    #[arg(long, default_value_t = 0.0)]
    pub rotate: f32,
    /// Random zoom by a factor in [1/(1+S), 1+S].
    #[arg(long, default_value_t = 0.0)]
    pub scale: f32,
    /// Random brightness shift within +-B (pixel values in [0, 1]).
    #[arg(long, default_value_t = 0.0)]
    pub brightness: f32,
    /// Random contrast factor in [1-C, 1+C].
    #[arg(long, default_value_t = 0.0)]
    pub contrast: f32,
    /// Random gamma in [1/(1+G), 1+G].
    #[arg(long, default_value_t = 0.0)]
    pub gamma: f32,
}

impl AugmentArgs {
    pub fn geometry(&self) -> Result<Geometry> {
        let elastic = match &self.elastic {
            None => None,
            Some(Floats(v)) => {
                let sigma = v[0];
                let grid = v.get(1).copied().unwrap_or(3.0);
                if v.len() > 2
                    || !(0.0..=1000.0).contains(&sigma)
                    || grid.fract() != 0.0
                    || !(2.0..=64.0).contains(&grid)
                {
                    bail!(
                        "--elastic {v:?}: give SIGMA[,GRID] with 0 <= SIGMA <= 1000 and an integer GRID in 2..=64 (the paper: 10,3)"
                    );
                }
                Some(Elastic {
                    sigma,
                    grid: grid as usize,
                })
            }
        };
        if !(0.0..=180.0).contains(&self.rotate) {
            bail!("--rotate {} must be in 0..=180 degrees", self.rotate);
        }
        if !(0.0..=4.0).contains(&self.scale) {
            bail!("--scale {} must be in 0..=4", self.scale);
        }
        Ok(Geometry {
            rotate: self.rotate,
            scale: self.scale,
            elastic,
        })
    }

    pub fn intensity(&self) -> Result<Intensity> {
        for (name, v, max) in [
            ("--brightness", self.brightness, 1.0),
            ("--contrast", self.contrast, 1.0),
            ("--gamma", self.gamma, 4.0),
        ] {
            if !(0.0..=max).contains(&v) {
                bail!("{name} {v} must be in 0..={max}");
            }
        }
        Ok(Intensity {
            brightness: self.brightness,
            contrast: self.contrast,
            gamma: self.gamma,
        })
    }
}

#[derive(Args, Debug)]
pub struct AugmentPreviewArgs {
    /// Dataset folder holding images/ and masks/ (or image/ and label/).
    #[arg(long)]
    pub data: PathBuf,
    /// The image to show (its stem; default: the first).
    #[arg(long)]
    pub stem: Option<String>,
    /// Output PNG: the original and SAMPLES augmented versions, masks overlaid.
    #[arg(long)]
    pub preview: PathBuf,
    #[arg(long, default_value_t = 7)]
    pub samples: usize,
    /// Panels per row.
    #[arg(long, default_value_t = 4)]
    pub columns: usize,
    /// Random square crop side (default: the whole image).
    #[arg(long)]
    pub crop: Option<usize>,
    /// Disable random horizontal / vertical flips.
    #[arg(long)]
    pub no_flip: bool,
    #[arg(long, default_value_t = 0)]
    pub seed: u64,
    #[command(flatten)]
    pub augment: AugmentArgs,
    #[command(flatten)]
    pub labels: super::labels::LabelArgs,
}

pub fn run(a: AugmentPreviewArgs) -> Result<()> {
    if a.samples == 0 || a.samples > 64 || a.columns == 0 {
        bail!("--samples must be in 1..=64 and --columns at least 1");
    }
    if let Some(c) = a.crop
        && !(1..=4096).contains(&c)
    {
        bail!("--crop {c} is outside 1..=4096");
    }
    let (images, masks) = dataset_dirs(&a.data)?;
    let filter = match &a.stem {
        Some(s) => Some(
            s.parse::<StemFilter>()
                .map_err(|e| anyhow::anyhow!("--stem {s}: {e}"))?,
        ),
        None => None,
    };
    let pairs = pair_folder(&images, &masks, filter.as_ref())?;
    let pair = &pairs[0];
    let opts = MaskOptions {
        num_classes: u32::MAX as usize,
        labels: a.labels.convention(None)?,
        ignore_index: None,
    };
    let sample = load_sample(pair, 3, &opts)?;
    let pic = &sample.image;
    let chw = Normalize::identity(3).to_chw(pic);
    const PAD: u32 = u32::MAX;
    let cfg = AugmentConfig {
        crop: a.crop,
        hflip: !a.no_flip,
        vflip: !a.no_flip,
        pad_label: PAD,
        geometry: a.augment.geometry()?,
        intensity: a.augment.intensity()?,
    };
    let src = Source {
        chw: &chw,
        labels: &sample.mask.data,
        channels: 3,
        image_channels: 3,
        height: pic.height,
        width: pic.width,
        fill: &[0.5, 0.5, 0.5],
    };
    let classes = sample.mask.data.iter().copied().max().unwrap_or(0) as usize + 1;
    let palette = palette_for(classes.max(2));
    let draw = |chw: &[f32], labels: &[u32], h: usize, w: usize| -> Canvas {
        let plane = h * w;
        let rgb: Vec<u8> = (0..plane)
            .flat_map(|i| {
                (0..3).map(move |c| (chw[c * plane + i].clamp(0.0, 1.0) * 255.0).round() as u8)
            })
            .collect();
        let map = LabelMap {
            width: w,
            height: h,
            data: labels.to_vec(),
        };
        overlay(&rgb, &map, &palette, 0.35, Some(PAD))
    };
    let mut canvases = vec![(
        format!("{} (original)", pair.stem),
        draw(&chw, &sample.mask.data, pic.height, pic.width),
    )];
    let mut rng = rand::rngs::SmallRng::seed_from_u64(a.seed);
    for k in 0..a.samples {
        let crop = augment(&mut rng, &src, &cfg);
        canvases.push((
            format!("sample {}", k + 1),
            draw(&crop.chw, &crop.labels, crop.height, crop.width),
        ));
    }
    let rows: Vec<Canvas> = canvases
        .chunks(a.columns)
        .map(|row| {
            let items: Vec<(&str, &Canvas)> = row.iter().map(|(t, c)| (t.as_str(), c)).collect();
            panels(&items)
        })
        .collect();
    let gap = 6;
    let width = rows.iter().map(|r| r.width).max().unwrap_or(0);
    let height = rows.iter().map(|r| r.height + gap).sum::<usize>() - gap;
    let mut out = Canvas::new(width, height, [255, 255, 255]);
    let mut y = 0;
    for r in &rows {
        out.paste(r, 0, y);
        y += r.height + gap;
    }
    if let Some(dir) = a.preview.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::create_dir_all(dir)
            .with_context(|| format!("{}: cannot create", dir.display()))?;
    }
    out.save_png(&a.preview)?;
    println!(
        "wrote {} ({} augmented samples of {})",
        a.preview.display(),
        a.samples,
        pair.image.display()
    );
    Ok(())
}

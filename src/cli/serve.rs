//! `segrs serve`: the HTTP API and the click-to-segment page over the loaded models.

use super::NormalizeArgs;
use anyhow::{Context, Result, bail};
use clap::Args;
use segrs::data::image_io::decode_image;
use segrs::ops::Precision;
use segrs::predict::{Engine, SemanticPredictor};
use segrs::serve::{CachedImage, Models, SemanticModel, ServeConfig, State, image_id};
use std::path::PathBuf;
use std::time::Duration;

#[derive(Args, Debug)]
pub struct ServeArgs {
    /// SAM or SAM 2 checkpoint (as for `segrs sam`): the page and the /v1/sam routes.
    #[arg(long)]
    pub sam: Option<PathBuf>,
    /// U-Net checkpoint (segrs or a PyTorch state_dict): POST /v1/semantic/predict.
    #[arg(long)]
    pub unet: Option<PathBuf>,
    /// Mask R-CNN checkpoint (torchvision): POST /v1/instances/predict.
    #[arg(long)]
    pub maskrcnn: Option<PathBuf>,
    /// Arithmetic of the models' dense layers and convolutions: f32, or bf16 with f32 sums (on
    /// CPUs with AVX512_BF16; elsewhere f32 runs, with a note).
    #[arg(long, default_value_t = Precision::F32)]
    pub precision: Precision,
    /// Address to listen on; anything but loopback without --token is warned about.
    #[arg(long, default_value = "127.0.0.1")]
    pub host: String,
    /// Port (0: any free port, printed at start).
    #[arg(long, default_value_t = 8080)]
    pub port: u16,
    /// Require `Authorization: Bearer TOKEN` on the API and /metrics (the page asks for it).
    #[arg(long)]
    pub token: Option<String>,
    /// Bound of the image-embedding cache, in MiB.
    #[arg(long, default_value_t = 2048)]
    pub cache_mb: usize,
    /// Bound of the low-resolution logits kept for refinement (`mask_input_id`), in MiB.
    #[arg(long, default_value_t = 128)]
    pub logits_cache_mb: usize,
    /// Heavy requests run at once (image encoder, automatic masks, U-Net, Mask R-CNN), each on
    /// all cores, at a lower priority than clicks.
    #[arg(long, default_value_t = 1)]
    pub max_concurrency: usize,
    /// Clicks (mask decoder runs) at once, each on all cores; one at a time answers a stream of
    /// clicks soonest on a few cores, more help on many.
    #[arg(long, default_value_t = 1)]
    pub click_workers: usize,
    /// Requests that may wait per lane before the server answers 503.
    #[arg(long, default_value_t = 64)]
    pub max_queue: usize,
    /// Allow pages from this origin (or `*`) to call the API (CORS); off by default.
    #[arg(long)]
    pub cors: Option<String>,
    /// Largest request body, in MiB.
    #[arg(long, default_value_t = 32.0)]
    pub max_body_mb: f64,
    /// Largest image, in megapixels (checked from the header before decoding).
    #[arg(long, default_value_t = 40.0)]
    pub max_megapixels: f64,
    /// Time allowed per request, waiting included, in seconds.
    #[arg(long, default_value_t = 120.0)]
    pub timeout_s: f64,
    /// Warm the cache with IMAGE=EMBEDDING (an embedding file written by `segrs sam
    /// --save-embedding` for that image); repeat for several.
    #[arg(long = "warm", value_parser = parse_warm)]
    pub warm: Vec<(PathBuf, PathBuf)>,
    /// Preprocessing for a U-Net PyTorch state_dict (segrs checkpoints record their own).
    #[command(flatten)]
    pub normalize: NormalizeArgs,
}

fn parse_warm(s: &str) -> Result<(PathBuf, PathBuf), String> {
    match s.split_once('=') {
        Some((a, b)) if !a.is_empty() && !b.is_empty() => Ok((a.into(), b.into())),
        _ => Err(format!("--warm '{s}': expected IMAGE=EMBEDDING")),
    }
}

pub fn run(a: ServeArgs) -> Result<()> {
    if a.sam.is_none() && a.unet.is_none() && a.maskrcnn.is_none() {
        bail!("nothing to serve: give --sam, --unet and/or --maskrcnn");
    }
    let positive = |v: f64, what: &str| -> Result<f64> {
        if v.is_finite() && v > 0.0 {
            Ok(v)
        } else {
            bail!("{what} must be a positive number, got {v}")
        }
    };
    if a.max_concurrency == 0 || a.max_concurrency > 256 {
        bail!("--max-concurrency {} is outside 1..=256", a.max_concurrency);
    }
    if a.click_workers == 0 || a.click_workers > 256 {
        bail!("--click-workers {} is outside 1..=256", a.click_workers);
    }
    let config = ServeConfig {
        host: a.host.clone(),
        port: a.port,
        token: a.token.clone().filter(|t| !t.is_empty()),
        cors: a.cors.clone(),
        cache_bytes: a.cache_mb << 20,
        logits_bytes: a.logits_cache_mb << 20,
        heavy_workers: a.max_concurrency,
        light_workers: a.click_workers,
        max_queue: a.max_queue,
        max_body_bytes: (positive(a.max_body_mb, "--max-body-mb")? * 1048576.0) as usize,
        max_pixels: (positive(a.max_megapixels, "--max-megapixels")? * 1e6) as u64,
        timeout: Duration::from_secs_f64(positive(a.timeout_s, "--timeout-s")?),
    };
    let loopback = matches!(a.host.as_str(), "127.0.0.1" | "localhost" | "::1");
    if !loopback && config.token.is_none() {
        eprintln!(
            "warning: listening on {} without --token: anyone who can reach this address can use the models",
            a.host
        );
    }
    let precision = super::on_this_cpu(a.precision);
    let mut models = Models::default();
    if let Some(p) = &a.sam {
        let t = std::time::Instant::now();
        let m = segrs::sam::any_model::AnySam::load_with(p, precision)?;
        eprintln!(
            "loaded {} from {} in {:.1} s",
            m.variant(),
            p.display(),
            t.elapsed().as_secs_f64()
        );
        models.sam = Some(m);
    }
    if let Some(p) = &a.unet {
        let dev = segrs::device::device(segrs::device::DeviceKindArg::Cpu)?;
        let loaded = segrs::models::unet::checkpoint::load(p, (None, None), &dev)?;
        let normalize = match &loaded.meta {
            Some(m) if !a.normalize.given() => m.normalize.clone(),
            _ => a.normalize.resolve()?,
        };
        let num_classes = loaded.model.config.num_classes;
        let predictor = SemanticPredictor::new(&loaded.model, normalize, Engine::Host(precision))?;
        models.semantic = Some(SemanticModel {
            predictor: std::sync::Mutex::new(predictor),
            labels: loaded.meta.map(|m| m.labels),
            num_classes,
        });
        eprintln!("loaded U-Net ({num_classes} classes) from {}", p.display());
    }
    if let Some(p) = &a.maskrcnn {
        let m = segrs::models::mask_rcnn::MaskRcnn::load_with(p, precision)?;
        eprintln!(
            "loaded Mask R-CNN ({} classes) from {}",
            m.num_classes,
            p.display()
        );
        models.instances = Some(m);
    }
    let state = State::new(config, models)?;
    for (image, emb) in &a.warm {
        let Some(sam) = &state.models.sam else {
            bail!("--warm needs --sam");
        };
        let bytes =
            std::fs::read(image).with_context(|| format!("{}: cannot read", image.display()))?;
        let pic = decode_image(&bytes, &image.display().to_string(), None)?;
        let embedding = sam
            .load_embedding(emb, (pic.height, pic.width))
            .with_context(|| format!("--warm {}={}", image.display(), emb.display()))?;
        state.warm(CachedImage {
            id: image_id(&bytes),
            width: pic.width,
            height: pic.height,
            rgb: pic.to_rgb8(),
            embedding,
        });
        eprintln!("warmed the cache with {}", image.display());
    }
    segrs::serve::run(
        state,
        |addr| {
            use std::io::Write;
            println!("segrs serve: listening on http://{addr}");
            let _ = std::io::stdout().flush();
        },
        || eprintln!("segrs serve: stopping after the requests under way"),
    )
}

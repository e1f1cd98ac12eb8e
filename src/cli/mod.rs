//! The `segrs` command line.

pub mod augment;
pub mod convert;
pub mod data;
pub mod demo;
pub mod eval;
pub mod labels;
pub mod maskrcnn;
pub mod panoptic;
pub mod predict;
pub mod sam;
pub mod sam_video;
pub mod serve;
pub mod train;
pub mod viz;

use anyhow::Result;
use clap::{Args, Parser, Subcommand};
use segrs::data::shard::Shard;
use segrs::ops::Precision;

/// Which part of a folder this process takes, for runs split over a job array.
#[derive(Args, Debug, Clone, Default)]
pub struct ShardArgs {
    /// Process every N-th image starting at I (`I/N`); default from SLURM_ARRAY_TASK_ID /
    /// SLURM_ARRAY_TASK_COUNT or JOB_COMPLETION_INDEX (with --shards).
    #[arg(long)]
    pub shard: Option<String>,
    /// The number of shards of a Kubernetes Indexed Job (its index comes from JOB_COMPLETION_INDEX).
    #[arg(long)]
    pub shards: Option<usize>,
}

impl ShardArgs {
    /// The shard from `--shard`, or the scheduler's environment, or the whole folder.
    pub fn resolve(&self) -> Result<Shard> {
        match &self.shard {
            Some(s) => Shard::parse(s),
            None => {
                Ok(Shard::from_env(|k| std::env::var(k).ok(), self.shards)?.unwrap_or(Shard::ALL))
            }
        }
    }
}

/// A progress bar over `len` items, the command's name in front.
pub(crate) fn progress_bar(what: &str, len: usize) -> indicatif::ProgressBar {
    let bar = indicatif::ProgressBar::new(len as u64);
    bar.set_style(
        indicatif::ProgressStyle::with_template(
            "{prefix} [{bar:30}] {pos}/{len} {msg} ({elapsed}<{eta})",
        )
        .unwrap(),
    );
    bar.set_prefix(what.to_string());
    bar
}

#[derive(Parser, Debug)]
#[command(name = "segrs", version, about = "Image segmentation in Rust: train, predict, evaluate", long_about = None)]
pub struct Cli {
    /// CPU threads (0 = all cores).
    #[arg(long, global = true, default_value_t = 0)]
    pub threads: usize,
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Subcommand, Debug)]
pub enum Command {
    /// Train a U-Net on a folder dataset (images/ + masks/).
    Train(train::TrainArgs),
    /// Show what training's augmentation makes of an image and its mask (`--preview PNG`).
    Augment(augment::AugmentPreviewArgs),
    /// Predict label maps (and overlays) for a folder of images.
    Predict(predict::PredictArgs),
    /// Evaluate predictions against ground truth.
    #[command(subcommand)]
    Eval(eval::EvalCommand),
    /// Convert between COCO instances, instance-mask folders, label maps and COCO panoptic.
    #[command(subcommand)]
    Convert(convert::ConvertCommand),
    /// Check a dataset before a long run: pairs, sizes, mask values and conventions, COCO ids.
    #[command(subcommand)]
    Data(data::DataCommand),
    /// Pictures: instance masks, panoptic maps, semantic ground truth vs prediction.
    #[command(subcommand)]
    Viz(viz::VizCommand),
    /// Segment Anything: masks from point / box / mask prompts, or `sam auto` for everything.
    Sam(sam::SamArgs),
    /// Mask R-CNN (torchvision checkpoints): instance masks for a folder of images.
    #[command(subcommand)]
    Maskrcnn(maskrcnn::MaskRcnnCommand),
    /// Mask2Former (Hugging Face model folders): panoptic, instance or semantic segmentation.
    #[command(subcommand)]
    Panoptic(panoptic::PanopticCommand),
    /// Join COCO results files (e.g. the shards of one run) into one.
    MergeResults(maskrcnn::MergeArgs),
    /// Serve the models: an HTTP API and a click-to-segment page.
    Serve(serve::ServeArgs),
    /// The built-in end-to-end run: synthetic data, training, evaluation, pictures.
    Demo(demo::DemoArgs),
}

/// Runs the CLI; returns the process exit code. Errors are printed with their causes.
pub fn main() -> i32 {
    segrs::device::tune_allocator();
    let cli = Cli::parse();
    match run(cli) {
        Ok(()) => 0,
        Err(e) => {
            eprintln!("error: {e:#}");
            1
        }
    }
}

pub fn run(cli: Cli) -> anyhow::Result<()> {
    segrs::device::set_threads(cli.threads)?;
    match cli.command {
        Command::Train(a) => train::run(a),
        Command::Predict(a) => predict::run(a),
        Command::Augment(a) => augment::run(a),
        Command::Eval(c) => eval::run(c),
        Command::Demo(a) => demo::run(a),
        Command::Sam(a) => sam::run(a),
        Command::Maskrcnn(c) => maskrcnn::run(c),
        Command::Panoptic(c) => panoptic::run(c),
        Command::MergeResults(a) => maskrcnn::merge(a),
        Command::Convert(c) => convert::run(c),
        Command::Data(c) => data::run(c),
        Command::Viz(c) => viz::run(c),
        Command::Serve(a) => serve::run(a),
    }
}

/// `--device`: where tensors live.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum DeviceArg {
    /// burn's flex CPU backend.
    Cpu,
    /// burn's Vulkan GPU backend (build with `--features vulkan`).
    Vulkan,
}

impl From<DeviceArg> for segrs::device::DeviceKindArg {
    fn from(d: DeviceArg) -> Self {
        match d {
            DeviceArg::Cpu => Self::Cpu,
            DeviceArg::Vulkan => Self::Vulkan,
        }
    }
}

/// `--engine`: what runs a model's forward pass.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum EngineArg {
    /// segrs' own kernels on the CPU (Winograd, fused epilogues, folded BatchNorm); the default
    /// with `--device cpu`.
    Host,
    /// burn's ops on `--device` (flex on the CPU, or Vulkan); the default with `--device vulkan`.
    Burn,
}

/// The engine for `--engine` (if given) and `--device`: host on the CPU and burn on Vulkan
/// unless chosen otherwise; the host engine cannot run on a GPU device.
pub fn engine(
    engine: Option<EngineArg>,
    device: DeviceArg,
    dev: &burn::prelude::Device,
    precision: Precision,
) -> anyhow::Result<segrs::predict::Engine> {
    use segrs::predict::Engine;
    Ok(match (engine, device) {
        (Some(EngineArg::Host), DeviceArg::Vulkan) => anyhow::bail!(
            "--engine host runs on the CPU; use --engine burn (the default) with --device vulkan"
        ),
        (Some(EngineArg::Host) | None, DeviceArg::Cpu) => Engine::Host(on_this_cpu(precision)),
        (Some(EngineArg::Burn), _) | (None, DeviceArg::Vulkan) => {
            if precision != Precision::F32 {
                anyhow::bail!("--precision {precision} runs on the host engine (--device cpu)");
            }
            Engine::Burn(dev.clone())
        }
    })
}

/// `--precision` as this CPU can honour it: bf16 without AVX512_BF16 runs in f32, saying why.
pub fn on_this_cpu(asked: Precision) -> Precision {
    let (p, why) = asked.on_this_cpu();
    if let Some(why) = why {
        eprintln!("note: {why}");
    }
    p
}

/// `--upsampling`: the U-Net's expanding-path up-sampling.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum UpsamplingArg {
    /// ConvTranspose2d(c, c/2, 2, stride 2): the paper's "up-convolution".
    Transpose,
    /// Bilinear 2x up-sampling (align_corners = false) followed by a 1x1 conv halving channels.
    Bilinear,
}

impl From<UpsamplingArg> for segrs::models::unet::Upsampling {
    fn from(u: UpsamplingArg) -> Self {
        match u {
            UpsamplingArg::Transpose => Self::Transpose,
            UpsamplingArg::Bilinear => Self::Bilinear,
        }
    }
}

/// `--schedule`: the learning-rate schedule.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum ScheduleArg {
    /// Cosine decay from the base rate to `min_lr` over the run.
    Cosine,
    /// Polynomial decay `(1 - t/T)^0.9` (DeepLab / mmsegmentation).
    Poly,
    Constant,
}

impl From<ScheduleArg> for segrs::train::Schedule {
    fn from(s: ScheduleArg) -> Self {
        match s {
            ScheduleArg::Cosine => Self::Cosine,
            ScheduleArg::Poly => Self::Poly,
            ScheduleArg::Constant => Self::Constant,
        }
    }
}

/// A comma-separated list of numbers on the command line.
#[derive(Clone, Debug, PartialEq)]
pub struct Floats(pub Vec<f32>);

/// Parses `a,b,c` into floats.
pub fn parse_floats(s: &str) -> Result<Floats, String> {
    s.split(',')
        .map(|v| v.trim().parse::<f32>().map_err(|e| format!("'{v}': {e}")))
        .collect::<Result<Vec<_>, _>>()
        .and_then(|v| {
            if v.is_empty() {
                Err("empty list".into())
            } else {
                Ok(Floats(v))
            }
        })
}

#[derive(clap::Args, Debug, Clone)]
pub struct NormalizeArgs {
    /// Per-channel mean of pixels scaled to [0,1] (gray images use the first value).
    #[arg(long, value_parser = parse_floats)]
    pub mean: Option<Floats>,
    /// Per-channel std of pixels scaled to [0,1].
    #[arg(long, value_parser = parse_floats)]
    pub std: Option<Floats>,
}

impl NormalizeArgs {
    /// The given values, else torchvision's ImageNet statistics.
    pub fn resolve(&self) -> anyhow::Result<segrs::data::preprocess::Normalize> {
        let d = segrs::data::preprocess::Normalize::default();
        segrs::data::preprocess::Normalize::new(
            self.mean.clone().map(|f| f.0).unwrap_or(d.mean),
            self.std.clone().map(|f| f.0).unwrap_or(d.std),
        )
    }

    pub fn given(&self) -> bool {
        self.mean.is_some() || self.std.is_some()
    }
}

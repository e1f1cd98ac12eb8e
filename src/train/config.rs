//! Everything a training run is made of, saved as `RUN_DIR/config.json` so that `--resume`
//! continues the same run.

use crate::data::augment::{Geometry, Intensity};
use crate::data::preprocess::Normalize;
use crate::data::synthetic::CLASS_NAMES;
use crate::losses::LossConfig;
use crate::models::unet::{UNetConfig, Upsampling};
use serde::{Deserialize, Serialize};

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Schedule {
    /// Cosine decay from the base rate to `min_lr` over the run.
    Cosine,
    /// Polynomial decay `(1 - t/T)^0.9` (DeepLab / mmsegmentation).
    Poly,
    Constant,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct TrainConfig {
    pub unet: UNetConfig,
    pub loss: LossConfig,
    pub normalize: Normalize,
    pub binary: bool,
    pub epochs: usize,
    pub batch_size: usize,
    pub lr: f64,
    pub min_lr: f64,
    pub weight_decay: f64,
    pub schedule: Schedule,
    /// Linear warm-up steps.
    pub warmup_steps: usize,
    /// Square crop side for training (None: whole images, which must then share one size).
    pub crop: Option<usize>,
    pub flips: bool,
    /// Rotation, zoom and elastic deformation of the crops.
    #[serde(default)]
    pub geometry: Geometry,
    /// Brightness / contrast / gamma jitter.
    #[serde(default)]
    pub intensity: Intensity,
    pub seed: u64,
    pub grad_clip: Option<f32>,
    #[serde(default)]
    pub class_names: Vec<String>,
    /// How mask values become classes (binary threshold, zero-label reduction, label map).
    #[serde(default)]
    pub labels: crate::data::labels::LabelConvention,
}

impl TrainConfig {
    /// Learning rate at optimiser step `step` of `total` steps.
    pub fn lr_at(&self, step: usize, total: usize) -> f64 {
        if step < self.warmup_steps {
            return self.lr * (step + 1) as f64 / self.warmup_steps as f64;
        }
        let t = (step - self.warmup_steps) as f64
            / (total.saturating_sub(self.warmup_steps)).max(1) as f64;
        let t = t.min(1.0);
        match self.schedule {
            Schedule::Constant => self.lr,
            Schedule::Cosine => {
                self.min_lr
                    + 0.5 * (self.lr - self.min_lr) * (1.0 + (std::f64::consts::PI * t).cos())
            }
            Schedule::Poly => self.min_lr + (self.lr - self.min_lr) * (1.0 - t).powf(0.9),
        }
    }
}

/// The built-in demo's training configuration (`segrs demo`): a compact U-Net on the synthetic
/// shapes dataset of [`crate::data::synthetic`].
pub fn demo_config(epochs: usize, seed: u64) -> TrainConfig {
    let classes = CLASS_NAMES.len();
    let mut loss =
        LossConfig::parse("ce+dice", Some(&[1.0, 0.5]), classes, None).expect("valid loss spec");
    loss.dice_smooth = 1.0;
    TrainConfig {
        unet: UNetConfig {
            in_channels: 3,
            num_classes: classes,
            base_width: 16,
            depth: 3,
            upsampling: Upsampling::Transpose,
            batch_norm: true,
        },
        loss,
        normalize: Normalize::new(vec![0.5; 3], vec![0.25; 3]).expect("valid normalisation"),
        binary: false,
        epochs,
        batch_size: 8,
        lr: 3e-3,
        min_lr: 1e-5,
        weight_decay: 1e-4,
        schedule: Schedule::Cosine,
        warmup_steps: 10,
        crop: None,
        flips: true,
        geometry: Geometry::default(),
        intensity: Intensity::default(),
        seed,
        grad_clip: None,
        class_names: CLASS_NAMES.iter().map(|s| s.to_string()).collect(),
        labels: Default::default(),
    }
}

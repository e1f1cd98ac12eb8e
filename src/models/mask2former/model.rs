//! The whole Mask2Former as `Mask2FormerForUniversalSegmentation` runs it at test time, one
//! image per forward pass: the image processor's resize and normalisation -> Swin backbone ->
//! pixel decoder -> masked-attention transformer decoder -> class and mask logits.

use super::config::{BackboneConfig, Mask2FormerConfig, ModelFolder, Preprocess};
use super::pixel_decoder::PixelDecoder;
use super::swin::{FeatureMap, Swin};
use super::transformer_decoder::{Predictions, TransformerDecoder};
use crate::models::mask_rcnn::backbone::ResNet;
use crate::nn::Weights;
use crate::ops::Precision;
use crate::sam::resize::pil_resize_bilinear;
use anyhow::{Result, bail};
use std::path::Path;

/// The network that makes the four feature maps (strides 4-32).
enum Backbone {
    Swin(Swin),
    /// BatchNorm folded (the keys renamed to torchvision's at load).
    ResNet(ResNet),
}

impl Backbone {
    fn forward(&self, x: &[f32], h: usize, w: usize) -> Vec<FeatureMap> {
        match self {
            Self::Swin(s) => s.forward(x, h, w),
            Self::ResNet(r) => r
                .forward(x, h, w)
                .into_iter()
                .map(|f| FeatureMap {
                    data: f.data,
                    channels: f.c,
                    height: f.h,
                    width: f.w,
                })
                .collect(),
        }
    }
}

pub struct Mask2Former {
    pub config: Mask2FormerConfig,
    pub preprocess: Preprocess,
    backbone: Backbone,
    pixel_decoder: PixelDecoder,
    decoder: TransformerDecoder,
    /// Where the weights came from.
    pub source: String,
}

/// Keys a published checkpoint holds that inference does not use: the training criterion's
/// class weights, the classification LayerNorm of the Swin model the backbone wraps, the
/// relative-position index buffers (recomputed from the window size) and BatchNorm's counters.
fn ignored(key: &str) -> bool {
    key.starts_with("criterion.")
        || key.starts_with("model.pixel_level_module.encoder.swin.layernorm.")
        || key.starts_with("model.pixel_level_module.encoder.layernorm.")
        || key.ends_with("relative_position_index")
        || key.ends_with("num_batches_tracked")
}

impl Mask2Former {
    /// Reads a model folder (`config.json`, `preprocessor_config.json`, weights).
    pub fn load(dir: &Path) -> Result<Self> {
        Self::load_with(dir, Precision::F32)
    }

    /// [`load`](Self::load) with the backbone's and pixel decoder's convolutions, dense layers
    /// and attention products computing in `precision`. The query decoder stays f32: each of
    /// its layers thresholds the mask logits into the next layer's attention mask, which turns
    /// rounding into flipped pixels, and it is a small share of the time.
    pub fn load_with(dir: &Path, precision: Precision) -> Result<Self> {
        Self::from_folder_with(ModelFolder::read(dir)?, precision)
    }

    pub fn from_folder(folder: ModelFolder) -> Result<Self> {
        Self::from_folder_with(folder, Precision::F32)
    }

    pub fn from_folder_with(folder: ModelFolder, precision: Precision) -> Result<Self> {
        let ModelFolder {
            config,
            preprocess,
            weights,
        } = folder;
        let classes = weights
            .get("class_predictor.bias")
            .map(|t| t.data.len().saturating_sub(1))
            .unwrap_or(0);
        if classes == 0 {
            bail!(
                "{}: no class_predictor.bias: not a Mask2FormerForUniversalSegmentation checkpoint",
                weights.source
            );
        }
        if !config.labels.is_empty() && config.labels.len() != classes {
            bail!(
                "{}: config.json names {} labels but the class head predicts {classes} classes",
                weights.source,
                config.labels.len()
            );
        }
        let w = Weights::new(&weights).with_precision(precision);
        let plm = w.pp("model").pp("pixel_level_module");
        let backbone = match &config.backbone {
            BackboneConfig::Swin(c) => Backbone::Swin(Swin::load(&plm.pp("encoder"), c)),
            BackboneConfig::ResNet { .. } => Backbone::ResNet(ResNet::load(&plm.pp("encoder"))),
        };
        let channels = match &backbone {
            Backbone::Swin(s) => s.channels(),
            Backbone::ResNet(r) => r.channels(),
        };
        if channels != config.backbone.channels() {
            bail!(
                "{}: the backbone's weights have stage widths {channels:?}, config.json says {:?}",
                weights.source,
                config.backbone.channels()
            );
        }
        let pixel_decoder = PixelDecoder::load(&plm.pp("decoder"), &config, &channels);
        // The query decoder in f32 (see `load_with`).
        let w32 = w.clone().with_precision(Precision::F32);
        let decoder = TransformerDecoder::load(
            &w32.pp("model").pp("transformer_module"),
            &w32.pp("class_predictor"),
            &config,
            classes,
        );
        w.finish("Mask2Former")?;
        let unused: Vec<String> = w.unused(&[]).into_iter().filter(|k| !ignored(k)).collect();
        if !unused.is_empty() {
            bail!(
                "{}: {} weights that config.json's architecture has no place for (e.g. {}): the config and the weights disagree",
                weights.source,
                unused.len(),
                unused[..unused.len().min(3)].join(", ")
            );
        }
        let mut config = config;
        if config.labels.is_empty() {
            config.labels = (0..classes).map(|i| format!("LABEL_{i}")).collect();
        }
        Ok(Self {
            config,
            preprocess,
            backbone,
            pixel_decoder,
            decoder,
            source: weights.source.clone(),
        })
    }

    /// Classes the model predicts (without "no object").
    pub fn num_classes(&self) -> usize {
        self.config.labels.len()
    }

    /// The image processor on an RGB image (`h x w x 3` bytes): resized (Pillow's bilinear)
    /// to the processor's size, each side a multiple of its divisor, then scaled to 0-1 and
    /// normalised. Returns `[3, H, W]` and `(H, W)`.
    pub fn input(&self, rgb: &[u8], h: usize, w: usize) -> (Vec<f32>, (usize, usize)) {
        let (oh, ow) = self.preprocess.resized_size((h, w));
        let px = if (oh, ow) == (h, w) {
            rgb.to_vec()
        } else {
            pil_resize_bilinear(rgb, w, h, 3, ow, oh)
        };
        let p = &self.preprocess;
        let mut out = vec![0.0f32; 3 * oh * ow];
        for c in 0..3 {
            // as the processor: (x / 255 - mean) / std
            let (m, s) = (p.mean[c], p.std[c]);
            for (i, o) in out[c * oh * ow..(c + 1) * oh * ow].iter_mut().enumerate() {
                *o = (px[i * 3 + c] as f32 * (1.0 / 255.0) - m) / s;
            }
        }
        (out, (oh, ow))
    }

    /// The network on normalised pixels `[3, h, w]`.
    pub fn forward(&self, pixels: &[f32], (h, w): (usize, usize)) -> Predictions {
        let features = self.backbone.forward(pixels, h, w);
        let px = self.pixel_decoder.forward(&features);
        self.decoder.forward(&px)
    }

    /// Preprocessing and the network on an RGB image.
    pub fn predict(&self, rgb: &[u8], h: usize, w: usize) -> Predictions {
        let (x, size) = self.input(rgb, h, w);
        self.forward(&x, size)
    }

    /// The backbone's feature maps (for checks against the reference).
    pub fn backbone_features(&self, pixels: &[f32], (h, w): (usize, usize)) -> Vec<FeatureMap> {
        self.backbone.forward(pixels, h, w)
    }

    /// The pixel decoder's outputs (for checks against the reference).
    pub fn pixel_decoder_outputs(
        &self,
        pixels: &[f32],
        size: (usize, usize),
    ) -> super::pixel_decoder::PixelDecoderOutput {
        self.pixel_decoder
            .forward(&self.backbone_features(pixels, size))
    }
}

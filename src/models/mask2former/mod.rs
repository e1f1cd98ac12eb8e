//! Mask2Former (Cheng et al. 2022), universal segmentation (panoptic, instance and semantic
//! from one network), as Hugging Face `transformers`' `Mask2FormerForUniversalSegmentation`
//! with a Swin backbone (or a bottleneck ResNet, through Mask R-CNN's ResNet body), on the host
//! engine; one file per part:
//!
//! * `config`               the model folder: `config.json`, `preprocessor_config.json`, weights
//! * `swin`                 the Swin Transformer backbone (shifted windows, patch merging)
//! * `pixel_decoder`        multi-scale deformable attention encoder + FPN mask features
//! * `transformer_decoder`  masked-attention decoder, the class and mask heads
//! * `model`                the whole network: loading, preprocessing, forward
//! * `postprocess`          panoptic, instance and semantic outputs from the logits

pub mod config;
pub mod model;
pub mod pixel_decoder;
pub mod postprocess;
pub mod swin;
pub mod transformer_decoder;

pub use config::{BackboneConfig, Mask2FormerConfig, ModelFolder, Preprocess};
pub use model::Mask2Former;
pub use postprocess::{Instances, Panoptic, PostprocessConfig, Segment};
pub use transformer_decoder::Predictions;

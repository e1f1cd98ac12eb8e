//! Mask R-CNN (He et al. 2017) with a ResNet-50 + FPN backbone, as torchvision's
//! `maskrcnn_resnet50_fpn` (v1) and `_v2`, on the host engine, one file per part:
//!
//! * `transform`  normalise, resize (short side 800, long side <= 1333), pad to 32; boxes back
//! * `backbone`   the ResNet body, BatchNorm folded (C2-C5)
//! * `fpn`        the feature pyramid (P2-P5, max-pooled P6)
//! * `anchors`    anchors per level (sizes 32-512, ratios 0.5 / 1 / 2)
//! * `rpn`        the proposal head and proposal selection (top-n, NMS per level)
//! * `roi_heads`  multi-scale RoIAlign, the box head and predictor, detection postprocessing
//! * `mask_head`  the mask head and predictor, and the paste-back into the image
//! * `model`      a whole checkpoint: loading (legacy keys, variant detection), `predict`
//! * `train/`     the training forward pass: trainable networks, targets and sampling, the losses

pub mod anchors;
pub mod backbone;
pub mod fpn;
pub mod mask_head;
pub mod model;
pub mod roi_heads;
pub mod rpn;
pub mod train;
pub mod transform;

pub use model::{InstancePrediction, MaskRcnn, MaskRcnnConfig, Variant};

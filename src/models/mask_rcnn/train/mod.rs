//! Mask R-CNN in training mode, on burn's autodiff with the engine's training operations:
//! the trainable networks (`network`, `layers`), the targets and sampling (`targets`) and the
//! five losses of the training forward pass (`losses`). The run around them (data, optimiser,
//! checkpoints) is `crate::train::mask_rcnn`.

pub mod init;
pub mod layers;
pub mod losses;
pub mod network;
pub mod targets;

//! SAM 2 (Ravi et al. 2024): the networks, on the host engine, checked against the
//! official `sam2` package. The predictor lives in `crate::sam::sam2_predictor`; the prompt
//! encoder and mask decoder are SAM's (`models::sam`), which load SAM 2's extensions from
//! their keys.
//!
//! * `hiera`              the trunk: patch embedding, windowed position embeddings, multi-scale
//!   blocks with query pooling, windowed and global attention
//! * `fpn_neck`           lateral 1x1 convolutions and the top-down path
//! * `position_encoding`  the sine position encoding of feature maps
//! * `memory_encoder`     (video) a frame's mask and features -> its 64-d memory
//! * `memory_attention`   (video) the current frame attends to the memory bank
//! * `object_pointers`    (video) output tokens -> pointers, their tokens and temporal encoding
//! * `tracking_heads`     (video) the heads on a frame, a mask as output, a frame's memory
//! * `model`              a whole checkpoint: strict loading, variant detection, the image path

pub mod fpn_neck;
pub mod hiera;
pub mod memory_attention;
pub mod memory_encoder;
pub mod model;
pub mod object_pointers;
pub mod position_encoding;
pub mod tracking_heads;

//! Segment Anything (Kirillov et al. 2023) and MobileSAM (Zhang et al. 2023): the networks, on
//! host buffers with `gemm`, checked against the official `segment_anything` / `mobile_sam`
//! code. The predictor, the automatic mask generator and the pictures live in `crate::sam`.
//!
//! * `image_encoder`        ViT-B/L/H: windowed / global attention, decomposed relative positions
//! * `tiny_vit`             MobileSAM's encoder: MBConv, patch merging, biased window attention
//! * `neck`                 the encoders' shared neck and window partition
//! * `prompt_encoder`       random-Fourier positional encoding; point, box-corner and not-a-point
//!   embeddings; the mask-downscaling convolutions
//! * `two_way_transformer`  tokens and image attend to each other
//! * `mask_decoder`         output tokens, 4x upscaling, hypernetwork MLPs, IoU head
//! * `model`                a whole checkpoint: loading, variant detection

pub mod image_encoder;
pub mod mask_decoder;
pub mod model;
pub mod neck;
pub mod prompt_encoder;
pub mod tiny_vit;
pub mod two_way_transformer;

//! Segment Anything (Kirillov et al. 2023). Work in progress: the image encoder, the prompt
//! encoder and the mask decoder, checked against the official `segment_anything` package; the
//! predictor, automatic mask generator and CLI come next.
//!
//! * `image_encoder`        ViT with windowed / global attention, relative positions, neck
//! * `prompt_encoder`       random-Fourier positional encoding; point, box-corner and not-a-point
//!   embeddings; the mask-downscaling convolutions
//! * `two_way_transformer`  tokens and image attend to each other
//! * `mask_decoder`         output tokens, 4x upscaling, hypernetwork MLPs, IoU head

pub mod image_encoder;
pub mod mask_decoder;
pub mod model;
pub mod neck;
pub mod prompt_encoder;
pub mod tiny_vit;
pub mod two_way_transformer;

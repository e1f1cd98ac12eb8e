//! Segment Anything (Kirillov et al. 2023). Work in progress: so far the prompt encoder, checked
//! against the official `segment_anything` package; the image encoder, mask decoder, predictor
//! and CLI come next.
//!
//! * `prompt_encoder`  random-Fourier positional encoding; point, box-corner and not-a-point
//!   embeddings; the mask-downscaling convolutions

pub mod prompt_encoder;

//! The whole SAM network as the official checkpoints hold it: an image encoder (ViT-B/L/H, or
//! MobileSAM's TinyViT), the prompt encoder and the mask decoder, with the variant detected
//! from the keys. Reads `sam_vit_{b,l,h}_*.pth`, `mobile_sam.pt` and safetensors with the same
//! key names.

use super::image_encoder::ImageEncoder;
use super::mask_decoder::MaskDecoder;
use super::prompt_encoder::PromptEncoder;
use super::tiny_vit::TinyViT;
use crate::weights::NamedTensors;
use anyhow::{Context, Result, bail};
use std::path::Path;

/// The image encoder of a SAM checkpoint (one per loaded model, so the size difference between
/// the variants does not matter).
#[allow(clippy::large_enum_variant)]
pub enum Encoder {
    Vit(ImageEncoder),
    TinyVit(TinyViT),
}

impl Encoder {
    /// Side of the square model input (1024 for the official models).
    pub fn input_size(&self) -> usize {
        match self {
            Encoder::Vit(e) => e.grid * e.patch,
            Encoder::TinyVit(e) => e.img_size,
        }
    }

    /// Side of the square image embedding (64 for the official models).
    pub fn embedding_size(&self) -> usize {
        match self {
            Encoder::Vit(e) => e.grid,
            Encoder::TinyVit(e) => e.embedding_size(),
        }
    }

    /// `[C, G, G]` embedding of a normalised, zero-padded `[3, S, S]` input.
    pub fn forward(&self, image: &[f32]) -> Result<Vec<f32>> {
        match self {
            Encoder::Vit(e) => e.forward(image),
            Encoder::TinyVit(e) => e.forward(image),
        }
    }
}

pub struct Sam {
    /// `vit_b`, `vit_l`, `vit_h`, `vit_t` (MobileSAM) or `vit (custom)`.
    pub variant: String,
    pub image_encoder: Encoder,
    pub prompt_encoder: PromptEncoder,
    pub mask_decoder: MaskDecoder,
    /// Where the weights came from, for messages and embedding files.
    pub source: String,
    pub(crate) dense_pe: std::sync::OnceLock<std::sync::Arc<Vec<f32>>>,
}

/// The official pixel statistics (ImageNet, 0-255 scale).
pub const PIXEL_MEAN: [f32; 3] = [123.675, 116.28, 103.53];
pub const PIXEL_STD: [f32; 3] = [58.395, 57.12, 57.375];

impl Sam {
    pub fn load(path: &Path) -> Result<Self> {
        let w = NamedTensors::read(path)?;
        Self::from_tensors(&w).with_context(|| format!("loading SAM from {}", path.display()))
    }

    pub fn from_tensors(w: &NamedTensors) -> Result<Self> {
        let has = |k: &str| w.tensors.contains_key(k);
        if !has("prompt_encoder.pe_layer.positional_encoding_gaussian_matrix")
            || !has("mask_decoder.iou_token.weight")
        {
            let sample: Vec<&String> = w.tensors.keys().take(5).collect();
            bail!(
                "{}: not a SAM checkpoint (no prompt_encoder.* / mask_decoder.* keys; first keys {sample:?}). \
                 SAM 2 checkpoints (sam2_*.pt) are a different model.",
                w.source
            );
        }
        let (image_encoder, variant) = if has("image_encoder.patch_embed.proj.weight") {
            let e = ImageEncoder::load_auto(w, "image_encoder.")?;
            let v = match (e.dim, e.blocks_len()) {
                (768, 12) => "vit_b",
                (1024, 24) => "vit_l",
                (1280, 32) => "vit_h",
                _ => "vit (custom)",
            };
            (Encoder::Vit(e), v.to_string())
        } else if has("image_encoder.patch_embed.seq.0.c.weight") {
            (
                Encoder::TinyVit(TinyViT::load(w, "image_encoder.")?),
                "vit_t".to_string(),
            )
        } else {
            bail!(
                "{}: unknown SAM image encoder (neither ViT patch_embed.proj nor TinyViT patch_embed.seq keys)",
                w.source
            );
        };
        let g = image_encoder.embedding_size();
        let s = image_encoder.input_size();
        let prompt_encoder = PromptEncoder::load(w, "prompt_encoder.", (g, g), (s, s))?;
        let mask_decoder = MaskDecoder::load(w, "mask_decoder.")?;
        let enc_out = match &image_encoder {
            Encoder::Vit(e) => e.out_chans,
            Encoder::TinyVit(e) => e.out_chans,
        };
        if enc_out != prompt_encoder.embed_dim {
            bail!(
                "{}: the image encoder gives {enc_out} channels, the prompt encoder expects {}",
                w.source,
                prompt_encoder.embed_dim
            );
        }
        if mask_decoder.dim != prompt_encoder.embed_dim {
            bail!(
                "{}: mask decoder width {} differs from prompt encoder width {}",
                w.source,
                mask_decoder.dim,
                prompt_encoder.embed_dim
            );
        }
        Ok(Self {
            variant,
            image_encoder,
            prompt_encoder,
            mask_decoder,
            source: w.source.clone(),
            dense_pe: Default::default(),
        })
    }
}

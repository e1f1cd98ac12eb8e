//! The whole SAM network as the official checkpoints hold it: an image encoder (ViT-B/L/H, or
//! MobileSAM's TinyViT), the prompt encoder and the mask decoder, with the variant detected
//! from the keys. Reads `sam_vit_{b,l,h}_*.pth`, `mobile_sam.pt` and safetensors with the same
//! key names.

use super::image_encoder::ImageEncoder;
use super::mask_decoder::{DecoderOutput, HighRes, MaskDecoder};
use super::prompt_encoder::PointPrompt;
use super::prompt_encoder::PromptEncoder;
use super::tiny_vit::TinyViT;
use super::two_way_transformer::ImageSideCache;
use crate::nn::Weights;
use crate::ops::Precision;
use crate::ops::layout::transpose;
use crate::ops::resize::bilinear_plane;
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
        Self::load_with(path, Precision::F32)
    }

    /// [`load`](Self::load) with the dense layers and convolutions computing in `precision`.
    pub fn load_with(path: &Path, precision: Precision) -> Result<Self> {
        let w = NamedTensors::read(path)?;
        Self::from_tensors_with(&w, precision)
            .with_context(|| format!("loading SAM from {}", path.display()))
    }

    pub fn from_tensors(w: &NamedTensors) -> Result<Self> {
        Self::from_tensors_with(w, Precision::F32)
    }

    /// The model with its dense layers and convolutions computing in `precision`.
    pub fn from_tensors_with(w: &NamedTensors, precision: Precision) -> Result<Self> {
        let has = |k: &str| w.tensors.contains_key(k);
        if !has("prompt_encoder.pe_layer.positional_encoding_gaussian_matrix")
            || !has("mask_decoder.iou_token.weight")
        {
            let sample: Vec<&String> = w.tensors.keys().take(5).collect();
            bail!(
                "{}: neither a SAM nor a SAM 2 checkpoint (no prompt_encoder.* / mask_decoder.* nor \
                 sam_prompt_encoder.* / sam_mask_decoder.* keys; first keys {sample:?})",
                w.source
            );
        }
        let root = Weights::new(w).with_precision(precision);
        let (image_encoder, variant) = if has("image_encoder.patch_embed.proj.weight") {
            let e = ImageEncoder::load_auto(&root.pp("image_encoder"))?;
            let v = match (e.dim, e.blocks_len()) {
                (768, 12) => "vit_b",
                (1024, 24) => "vit_l",
                (1280, 32) => "vit_h",
                _ => "vit (custom)",
            };
            (Encoder::Vit(e), v.to_string())
        } else if has("image_encoder.patch_embed.seq.0.c.weight") {
            (
                Encoder::TinyVit(TinyViT::load(&root.pp("image_encoder"))?),
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
        let prompt_encoder = PromptEncoder::load(&root.pp("prompt_encoder"), (g, g), (s, s))?;
        let mask_decoder = MaskDecoder::load(&root.pp("mask_decoder"))?;
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

/// The encoder's output for one image, with the geometry needed to map masks back.
#[derive(Clone, Debug)]
pub struct ImageEmbedding {
    /// `[C, G, G]`.
    pub features: Vec<f32>,
    pub channels: usize,
    pub grid: usize,
    /// `(h, w)` of the image as given.
    pub original_size: (usize, usize),
    /// `(h, w)` after ResizeLongestSide, before padding.
    pub input_size: (usize, usize),
    /// SAM 2: the stride-4 `[C / 8, 4G, 4G]` and stride-8 `[C / 4, 2G, 2G]` backbone features,
    /// through the decoder's `conv_s0` / `conv_s1`.
    pub high_res: Option<std::sync::Arc<(Vec<f32>, Vec<f32>)>>,
    /// The features as rows `[G * G, C]`, made on first use by the decoder.
    rows: std::sync::OnceLock<std::sync::Arc<Vec<f32>>>,
    /// For prompts without a mask: the rows plus the no-mask embedding, and the decoder's
    /// prompt-independent projections of them, for the model (by source) that made them.
    no_mask: NoMaskCache,
}

type NoMaskCache =
    std::sync::Arc<std::sync::Mutex<Option<(String, std::sync::Arc<(Vec<f32>, ImageSideCache)>)>>>;

impl ImageEmbedding {
    pub fn new(
        features: Vec<f32>,
        channels: usize,
        grid: usize,
        original_size: (usize, usize),
        input_size: (usize, usize),
    ) -> Self {
        Self {
            features,
            channels,
            grid,
            original_size,
            input_size,
            high_res: None,
            rows: Default::default(),
            no_mask: Default::default(),
        }
    }

    /// The features as rows `[G * G, C]` (computed once).
    pub fn rows(&self) -> std::sync::Arc<Vec<f32>> {
        self.rows
            .get_or_init(|| {
                std::sync::Arc::new(transpose(
                    &self.features,
                    self.channels,
                    self.grid * self.grid,
                ))
            })
            .clone()
    }
}

/// A prompt encoder and mask decoder with the model's dense positional encoding (rows): the
/// part SAM and SAM 2 share.
pub(crate) struct Heads<'a> {
    pub prompt_encoder: &'a PromptEncoder,
    pub mask_decoder: &'a MaskDecoder,
    pub dense_pe: &'a [f32],
    /// The model's identity, for the per-image cache.
    pub source: &'a str,
}

impl Heads<'_> {
    /// The mask decoder on an embedding and sparse prompt embeddings, with a mask prompt or
    /// without one (then from the image side prepared once per image), with the embedding's
    /// high-resolution features when the model has them.
    pub fn decode(
        &self,
        e: &ImageEmbedding,
        sparse: &[Vec<f32>],
        mask_input: Option<&[f32]>,
    ) -> Result<DecoderOutput> {
        let g = e.grid;
        let c = e.channels;
        let rows = e.rows();
        let pe = self.dense_pe;
        let high_res = e.high_res.as_deref().map(|(s0, s1)| HighRes { s0, s1 });
        match mask_input {
            None => {
                let prepared = self.no_mask_side(e, &rows);
                self.mask_decoder.forward_rows(
                    &prepared.0,
                    pe,
                    sparse,
                    g,
                    g,
                    Some(&prepared.1),
                    high_res,
                )
            }
            Some(m) => {
                let dense = self.prompt_encoder.dense(Some(m)).context("mask input")?;
                let dense = transpose(&dense, c, g * g);
                let src: Vec<f32> = rows.iter().zip(&dense).map(|(a, b)| a + b).collect();
                self.mask_decoder
                    .forward_rows(&src, pe, sparse, g, g, None, high_res)
            }
        }
    }

    /// The image rows with the no-mask embedding added and the decoder's projections of them,
    /// made once per image (and per model).
    fn no_mask_side(
        &self,
        e: &ImageEmbedding,
        rows: &[f32],
    ) -> std::sync::Arc<(Vec<f32>, ImageSideCache)> {
        let mut slot = e.no_mask.lock().unwrap_or_else(|p| p.into_inner());
        if let Some((who, c)) = slot.as_ref()
            && who == self.source
        {
            return c.clone();
        }
        let nm = self.prompt_encoder.no_mask_embed();
        let mut src = rows.to_vec();
        src.chunks_mut(e.channels)
            .for_each(|r| r.iter_mut().zip(nm).for_each(|(v, a)| *v += a));
        let cache = self.mask_decoder.prepare(&src, self.dense_pe);
        let c = std::sync::Arc::new((src, cache));
        *slot = Some((self.source.to_string(), c.clone()));
        c
    }
}

/// Prompt encoding, mask decoding and mask postprocessing (`Sam.forward` and
/// `postprocess_masks` of the reference), on an image's embedding.
impl Sam {
    /// Single-prompt-set decoding on model-frame points (multimask): the three low-res
    /// logits and their IoU predictions. For benchmarks and the automatic generator.
    pub fn decode_points(
        &self,
        e: &ImageEmbedding,
        points: &[PointPrompt],
    ) -> Result<(Vec<Vec<f32>>, Vec<f32>)> {
        self.decode(e, points, None, None, true)
    }

    /// Prompt encoder + mask decoder on model-frame prompts: the selected low-res logits and
    /// their IoU predictions.
    pub(crate) fn decode(
        &self,
        e: &ImageEmbedding,
        points: &[PointPrompt],
        bbox: Option<[f64; 4]>,
        mask_input: Option<&[f32]>,
        multimask: bool,
    ) -> Result<(Vec<Vec<f32>>, Vec<f32>)> {
        self.check_embedding(e)?;
        let sparse = self.prompt_encoder.sparse(points, bbox)?;
        let heads = Heads {
            prompt_encoder: &self.prompt_encoder,
            mask_decoder: &self.mask_decoder,
            dense_pe: &self.dense_pe_rows(),
            source: &self.source,
        };
        let out = heads.decode(e, &sparse, mask_input)?;
        let (_, masks, scores) = out.select(multimask, false);
        Ok((masks, scores))
    }

    /// The dense positional encoding as rows `[G * G, C]`, computed once per model.
    pub(crate) fn dense_pe_rows(&self) -> std::sync::Arc<Vec<f32>> {
        self.dense_pe
            .get_or_init(|| {
                let (h, w) = self.prompt_encoder.embedding_size;
                std::sync::Arc::new(transpose(
                    &self.prompt_encoder.dense_pe(),
                    self.prompt_encoder.embed_dim,
                    h * w,
                ))
            })
            .clone()
    }

    /// Low-res logits -> model input size -> crop to the resized image -> original size.
    pub fn postprocess(&self, e: &ImageEmbedding, low: &[f32]) -> Vec<f32> {
        let s = self.image_encoder.input_size();
        let l = 4 * e.grid;
        let up = bilinear_plane(low, l, (l, l), (s, s), false);
        bilinear_plane(&up, s, e.input_size, e.original_size, false)
    }
}

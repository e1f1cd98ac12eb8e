//! A whole SAM 2 checkpoint's image path, as `SAM2Base.forward_image` and
//! `SAM2ImagePredictor` run it: the Hiera trunk, the FPN neck (the lowest level dropped after
//! feeding the top-down path, `scalp: 1`), the stride-4 / stride-8 levels through the
//! decoder's `conv_s0` / `conv_s1`, `no_mem_embed` added to the stride-16 image embedding, and
//! SAM's prompt encoder and (extended) mask decoder. Reads the official
//! `sam2{,.1}_hiera_{tiny,small,base_plus,large}.pt` (`{"model": state_dict}`) and safetensors
//! with the same keys, strictly: a missing, misshapen or unknown key is an error naming it.
//! The video parts' keys (memory attention and encoder, object pointers) are recognised and
//! left to the video model.

use super::fpn_neck::{FpnNeck, pointwise};
use super::hiera::Hiera;
use crate::models::sam::mask_decoder::MaskDecoder;
use crate::models::sam::model::{Heads, ImageEmbedding};
use crate::models::sam::prompt_encoder::{PointPrompt, PromptEncoder};
use crate::nn::Weights;
use crate::ops::Precision;
use crate::ops::layout::transpose;
use crate::weights::NamedTensors;
use anyhow::{Context, Result, bail};
use std::path::Path;

/// Keys of the video model (memory attention, memory encoder, object pointers, temporal
/// encodings), which the image path does not run.
pub const VIDEO_KEYS: [&str; 9] = [
    "memory_attention.",
    "memory_encoder.",
    "maskmem_tpos_enc",
    "no_mem_pos_enc",
    "no_obj_ptr",
    "obj_ptr_proj.",
    "obj_ptr_tpos_proj.",
    "mask_downsample.",
    "no_obj_embed_spatial",
];

/// The input side of the released models.
pub const DEFAULT_IMAGE_SIZE: usize = 1024;

/// ImageNet statistics on the 0-1 scale (`SAM2Transforms`).
pub const PIXEL_MEAN: [f32; 3] = [0.485, 0.456, 0.406];
pub const PIXEL_STD: [f32; 3] = [0.229, 0.224, 0.225];

pub struct Sam2 {
    /// `sam2.1_hiera_tiny`, `sam2_hiera_large`, ...
    pub variant: String,
    pub trunk: Hiera,
    pub neck: FpnNeck,
    no_mem_embed: Vec<f32>,
    pub prompt_encoder: PromptEncoder,
    pub mask_decoder: MaskDecoder,
    /// Side of the square model input (1024).
    pub image_size: usize,
    pub source: String,
    dense_pe: std::sync::OnceLock<std::sync::Arc<Vec<f32>>>,
}

/// The backbone's output on one image, as the video model keeps it.
#[derive(Clone)]
pub struct FrameFeatures {
    /// The stride-16 level `[G * G, C]`, without `no_mem_embed`.
    pub rows: Vec<f32>,
    /// The stride-4 `[C / 8, 4G, 4G]` and stride-8 `[C / 4, 2G, 2G]` levels through
    /// `conv_s0` / `conv_s1`.
    pub high_res: std::sync::Arc<(Vec<f32>, Vec<f32>)>,
}

/// The decoder's output for one prompt set, before upsampling.
#[derive(Clone, Debug)]
pub struct LowRes {
    /// `[4G, 4G]` logits per returned mask.
    pub masks: Vec<Vec<f32>>,
    pub scores: Vec<f32>,
    pub object_score: f32,
}

impl Sam2 {
    pub fn load(path: &Path) -> Result<Self> {
        Self::load_sized(path, DEFAULT_IMAGE_SIZE)
    }

    /// Loads a checkpoint to run at another square input size (a multiple of 32, as the
    /// official configs' `image_size`; the released models are trained at 1024).
    pub fn load_sized(path: &Path, image_size: usize) -> Result<Self> {
        let w = NamedTensors::read(path)?;
        Self::from_tensors_sized(&w, image_size)
            .with_context(|| format!("loading SAM 2 from {}", path.display()))
    }

    /// Whether the tensors look like a SAM 2 checkpoint (a Hiera trunk and SAM 2's heads).
    pub fn recognises(w: &NamedTensors) -> bool {
        w.tensors
            .contains_key("image_encoder.trunk.patch_embed.proj.weight")
            || w.tensors.contains_key("sam_mask_decoder.iou_token.weight")
    }

    pub fn from_tensors(w: &NamedTensors) -> Result<Self> {
        Self::from_tensors_sized(w, DEFAULT_IMAGE_SIZE)
    }

    pub fn from_tensors_sized(w: &NamedTensors, image_size: usize) -> Result<Self> {
        Self::from_tensors_sized_with(w, image_size, Precision::F32)
    }

    /// The model with its dense layers and convolutions computing in `precision`.
    pub fn from_tensors_sized_with(
        w: &NamedTensors,
        image_size: usize,
        precision: Precision,
    ) -> Result<Self> {
        if !(64..=4096).contains(&image_size) || !image_size.is_multiple_of(32) {
            bail!("a SAM 2 input size must be a multiple of 32 from 64 to 4096, not {image_size}");
        }
        let root = Weights::new(w).with_precision(precision);
        let trunk = Hiera::load(&root.pp("image_encoder.trunk"))?;
        let dims = trunk.config.stage_dims();
        let neck_w = root.pp("image_encoder.neck");
        let d = FpnNeck::width(&neck_w)?;
        // `conv_s0` / `conv_s1` follow the stride-4 / stride-8 levels; the neck folds them
        // into its lateral convolutions (from the f32 weights, then converted).
        let dec = root.pp("sam_mask_decoder");
        let dec_f32 = dec.clone().with_precision(Precision::F32);
        let post = vec![
            Some(pointwise(&dec_f32.pp("conv_s0"), d, d / 8)),
            Some(pointwise(&dec_f32.pp("conv_s1"), d, d / 4)),
        ];
        let neck = FpnNeck::load(&neck_w, &dims, post)?;
        let g = image_size / 16;
        let prompt_encoder = PromptEncoder::load(
            &root.pp("sam_prompt_encoder"),
            (g, g),
            (image_size, image_size),
        )?;
        let mask_decoder = MaskDecoder::load(&root.pp("sam_mask_decoder"))?;
        if prompt_encoder.embed_dim != d || mask_decoder.dim != d {
            bail!(
                "{}: the neck gives {d} channels, the prompt encoder and mask decoder expect {} and {}",
                w.source,
                prompt_encoder.embed_dim,
                mask_decoder.dim
            );
        }
        if !mask_decoder.high_res {
            bail!(
                "{}: the SAM 2 mask decoder has no conv_s0 / conv_s1 (use_high_res_features_in_sam)",
                w.source
            );
        }
        let no_mem_embed = root.get("no_mem_embed", &[1, 1, d]);
        root.finish("SAM 2")?;
        let unknown = root.unused(&VIDEO_KEYS);
        if !unknown.is_empty() {
            let n = unknown.len();
            let shown: Vec<&String> = unknown.iter().take(8).collect();
            bail!("{}: {n} key(s) that no SAM 2 part has: {shown:?}", w.source);
        }
        let version = if w.tensors.contains_key("no_obj_embed_spatial") {
            "sam2.1"
        } else {
            "sam2"
        };
        Ok(Self {
            variant: format!("{version}_hiera_{}", trunk.config.size),
            trunk,
            neck,
            no_mem_embed,
            prompt_encoder,
            mask_decoder,
            image_size,
            source: w.source.clone(),
            dense_pe: Default::default(),
        })
    }

    /// Side of the square image embedding (64).
    pub fn embedding_size(&self) -> usize {
        self.image_size / 16
    }

    /// The image path on a normalised `[3, S, S]` input: the image embedding `[C, G, G]` (with
    /// `no_mem_embed`) and the high-resolution features, for an image of `original_size`.
    pub fn encode(&self, input: &[f32], original_size: (usize, usize)) -> Result<ImageEmbedding> {
        let f = self.encode_features(input)?;
        Ok(self.embedding(&f.rows, f.high_res, original_size, true))
    }

    /// An embedding for the decoder from stride-16 rows `[G * G, C]` (the backbone's, with
    /// `no_mem_embed` added when `no_memory`, or memory-conditioned ones).
    pub fn embedding(
        &self,
        rows: &[f32],
        high_res: std::sync::Arc<(Vec<f32>, Vec<f32>)>,
        original_size: (usize, usize),
        no_memory: bool,
    ) -> ImageEmbedding {
        let (d, g, s) = (self.neck.d_model, self.embedding_size(), self.image_size);
        let features = if no_memory {
            let mut emb = rows.to_vec();
            emb.chunks_mut(d).for_each(|r| {
                r.iter_mut()
                    .zip(&self.no_mem_embed)
                    .for_each(|(v, a)| *v += a)
            });
            transpose(&emb, g * g, d)
        } else {
            transpose(rows, g * g, d)
        };
        let mut e = ImageEmbedding::new(features, d, g, original_size, (s, s));
        e.high_res = Some(high_res);
        e
    }

    /// The backbone on a normalised `[3, S, S]` input: the stride-16 level as rows and the
    /// stride-4 / stride-8 levels through `conv_s0` / `conv_s1` (`forward_image`).
    pub fn encode_features(&self, input: &[f32]) -> Result<FrameFeatures> {
        let s = self.image_size;
        let stages = self.trunk.forward(input, s)?;
        let levels = self.neck.forward(&stages)?;
        let d = self.neck.d_model;
        let at = |i: usize| (stages[i].h, stages[i].w);
        let ((h0, w0), (h1, w1), (h2, w2)) = (at(0), at(1), at(2));
        if (h2, w2) != (s / 16, s / 16) {
            bail!("the trunk gave a {h2}x{w2} stride-16 level for a {s} input");
        }
        let s0 = transpose(&levels[0], h0 * w0, d / 8);
        let s1 = transpose(&levels[1], h1 * w1, d / 4);
        let mut levels = levels;
        Ok(FrameFeatures {
            rows: levels.swap_remove(2),
            high_res: std::sync::Arc::new((s0, s1)),
        })
    }

    /// Checks that an embedding (e.g. read from disk) fits this model.
    pub fn check_embedding(&self, e: &ImageEmbedding) -> Result<()> {
        let g = self.embedding_size();
        let c = self.prompt_encoder.embed_dim;
        let hr_ok = e.high_res.as_deref().is_some_and(|(s0, s1)| {
            s0.len() == c / 8 * 16 * g * g && s1.len() == c / 4 * 4 * g * g
        });
        if e.grid != g || e.channels != c || e.features.len() != c * g * g || !hr_ok {
            bail!(
                "the embedding is {}x{}x{} (with{} high-resolution features of this model's size); this {} model makes {c}x{g}x{g} with them",
                e.channels,
                e.grid,
                e.grid,
                if hr_ok { "" } else { "out" },
                self.variant
            );
        }
        Ok(())
    }

    /// The dense positional encoding as rows, computed once.
    pub(crate) fn dense_pe_rows(&self) -> std::sync::Arc<Vec<f32>> {
        self.dense_pe
            .get_or_init(|| {
                let g = self.embedding_size();
                std::sync::Arc::new(transpose(
                    &self.prompt_encoder.dense_pe(),
                    self.prompt_encoder.embed_dim,
                    g * g,
                ))
            })
            .clone()
    }

    /// Prompt encoder + mask decoder on model-frame labelled points (box corners as labels 2 /
    /// 3, placed first; a padding point is always appended, as `SAM2ImagePredictor._predict`
    /// passes no separate boxes), an optional `[4G, 4G]` mask prompt; the masks as the
    /// decoder returns them (three, or one chosen by stability).
    pub fn decode(
        &self,
        e: &ImageEmbedding,
        points: &[PointPrompt],
        mask_input: Option<&[f32]>,
        multimask: bool,
    ) -> Result<LowRes> {
        self.check_embedding(e)?;
        let sparse = self.prompt_encoder.sparse_labelled(points, true)?;
        let heads = Heads {
            prompt_encoder: &self.prompt_encoder,
            mask_decoder: &self.mask_decoder,
            dense_pe: &self.dense_pe_rows(),
            source: &self.source,
        };
        let out = heads.decode(e, &sparse, mask_input)?;
        let (_, masks, scores) = out.select(multimask, true);
        Ok(LowRes {
            masks,
            scores,
            object_score: out.object_score,
        })
    }
}

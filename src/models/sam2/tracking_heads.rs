//! What SAM 2 does on one video frame around its networks (`SAM2Base._forward_sam_heads`,
//! `_use_mask_as_output`, `_encode_new_memory`): the prompt encoder and mask decoder on the
//! frame's (memory-conditioned) features, with masks replaced by -1024 where the object score
//! says the object is absent, the best mask by predicted IoU, upsampling to the model input and
//! the object pointer of the chosen output token; a given mask used as the output directly
//! (logits +-10, the pointer from the decoder on that mask); and a frame's memory from its
//! mask (binarised for prompted frames, else through the sigmoid, scaled to +-10) with the
//! "no object" embedding added where the object is absent.

use super::memory_encoder::{Memory, MemoryEncoder};
use super::model::Sam2;
use super::object_pointers::ObjectPointers;
use crate::models::sam::model::{Heads, ImageEmbedding};
use crate::models::sam::prompt_encoder::PointPrompt;
use crate::nn::{Conv2d, ConvSpec, Weights};
use crate::ops::Activation;
use crate::ops::resize::{bilinear_antialias, bilinear_plane};
use anyhow::{Result, bail};

/// The mask logit of frames where the object is absent.
pub const NO_OBJ_SCORE: f32 = -1024.0;

/// The video-only weights used around the heads.
pub struct TrackingParts {
    pub pointers: ObjectPointers,
    pub memory_encoder: MemoryEncoder,
    /// `mask_downsample`: a 4x4 stride-4 convolution taking a full-size mask to the decoder's
    /// mask-prompt size.
    mask_downsample: Conv2d,
    /// `[mem_dim]`, added to memories of frames without the object (SAM 2.1).
    no_obj_embed_spatial: Option<Vec<f32>>,
}

/// One frame's output of the heads.
#[derive(Clone, Debug)]
pub struct FrameOutput {
    /// `[4G, 4G]` logits per returned mask (three with multimask).
    pub low_res_multimasks: Vec<Vec<f32>>,
    pub ious: Vec<f32>,
    /// The chosen mask: highest predicted IoU with multimask, else the only one.
    pub best: usize,
    /// The chosen mask upsampled to the model input `[S, S]`.
    pub high_res_mask: Vec<f32>,
    pub obj_ptr: Vec<f32>,
    pub object_score: f32,
}

impl FrameOutput {
    pub fn low_res_mask(&self) -> &[f32] {
        &self.low_res_multimasks[self.best]
    }
}

impl TrackingParts {
    /// Loads the video parts from a SAM 2 checkpoint's root.
    pub fn load(w: &Weights) -> Result<Self> {
        let memory_encoder = MemoryEncoder::load(&w.pp("memory_encoder"))?;
        let pointers = ObjectPointers::load(w, memory_encoder.out_dim)?;
        let no_obj_embed_spatial = w
            .contains("no_obj_embed_spatial")
            .then(|| w.get("no_obj_embed_spatial", &[1, memory_encoder.out_dim]));
        Ok(Self {
            pointers,
            mask_downsample: Conv2d::load(
                &w.pp("mask_downsample"),
                ConvSpec::same(1, 1, 4).stride(4).pad(0),
            ),
            memory_encoder,
            no_obj_embed_spatial,
        })
    }

    /// `_forward_sam_heads`: model-frame points (none: a padding point) and/or a `[4G, 4G]` mask
    /// prompt on the frame's embedding.
    pub fn forward_heads(
        &self,
        sam: &Sam2,
        e: &ImageEmbedding,
        points: &[PointPrompt],
        mask_input: Option<&[f32]>,
        multimask: bool,
    ) -> Result<FrameOutput> {
        let pad = PointPrompt {
            x: 0.0,
            y: 0.0,
            label: -1,
        };
        let pts: &[PointPrompt] = if points.is_empty() {
            std::slice::from_ref(&pad)
        } else {
            points
        };
        let sparse = sam.prompt_encoder.sparse_labelled(pts, true)?;
        let pe = sam.dense_pe_rows();
        let heads = Heads {
            prompt_encoder: &sam.prompt_encoder,
            mask_decoder: &sam.mask_decoder,
            dense_pe: &pe,
            source: &sam.source,
        };
        let out = heads.decode(e, &sparse, mask_input)?;
        let (picked, mut masks, ious) = out.select(multimask, true);
        let present = out.object_score > 0.0;
        if !present {
            masks.iter_mut().for_each(|m| m.fill(NO_OBJ_SCORE));
        }
        let best = if multimask {
            (0..ious.len()).fold(0, |b, i| if ious[i] > ious[b] { i } else { b })
        } else {
            0
        };
        // The output token: the chosen multimask output's, else token 0.
        let c = sam.mask_decoder.dim;
        let token = if multimask { picked[best] } else { 0 };
        let obj_ptr = self.pointers.pointer(
            &out.mask_tokens[token * c..(token + 1) * c],
            out.object_score,
        );
        let l = out.height;
        let s = sam.image_size;
        let high_res_mask = bilinear_plane(&masks[best], l, (l, l), (s, s), false);
        Ok(FrameOutput {
            low_res_multimasks: masks,
            ious,
            best,
            high_res_mask,
            obj_ptr,
            object_score: out.object_score,
        })
    }

    /// `_use_mask_as_output`: a binary `[S, S]` mask as the frame's output (logits +-10, low-res
    /// by antialiased downsampling, IoU 1), its pointer from the decoder on the downsampled mask.
    pub fn mask_as_output(
        &self,
        sam: &Sam2,
        e: &ImageEmbedding,
        mask: &[f32],
    ) -> Result<FrameOutput> {
        let s = sam.image_size;
        if mask.len() != s * s {
            bail!(
                "a mask prompt must be {s}x{s} in the model frame, got {} values",
                mask.len()
            );
        }
        let high: Vec<f32> = mask.iter().map(|&m| m * 20.0 - 10.0).collect();
        let l = s / 4;
        let low = bilinear_antialias(&high, 1, (s, s), (l, l));
        let (prompt, _, _) = self.mask_downsample.forward(mask, s, s, Activation::None);
        let on_mask = self.forward_heads(sam, e, &[], Some(&prompt), false)?;
        let present = mask.iter().any(|&m| m > 0.0);
        let object_score = if present { 10.0 } else { -10.0 };
        let obj_ptr = if present {
            on_mask.obj_ptr
        } else {
            self.pointers.pointer(&[], -1.0)
        };
        Ok(FrameOutput {
            low_res_multimasks: vec![low],
            ious: vec![1.0],
            best: 0,
            high_res_mask: high,
            obj_ptr,
            object_score,
        })
    }

    /// `_encode_new_memory`: the memory of a frame from its raw stride-16 features `[C, G, G]`
    /// (without `no_mem_embed`), its chosen `[S, S]` mask logits and object score.
    pub fn encode_memory(
        &self,
        pix_feat: &[f32],
        grid: usize,
        high_res_mask: &[f32],
        object_score: f32,
        from_points: bool,
    ) -> Result<Memory> {
        let mask: Vec<f32> = high_res_mask
            .iter()
            .map(|&v| {
                let m = if from_points {
                    (v > 0.0) as u8 as f32
                } else {
                    1.0 / (1.0 + (-v).exp())
                };
                m * 20.0 - 10.0
            })
            .collect();
        let mut mem = self.memory_encoder.forward(pix_feat, &mask, grid, grid)?;
        if object_score <= 0.0
            && let Some(e) = &self.no_obj_embed_spatial
        {
            let hw = mem.h * mem.w;
            for (ch, v) in e.iter().enumerate() {
                mem.features[ch * hw..(ch + 1) * hw]
                    .iter_mut()
                    .for_each(|f| *f += v);
            }
        }
        Ok(mem)
    }
}

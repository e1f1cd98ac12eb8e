//! What SAM 2 does on one video frame around its networks (`SAM2Base._forward_sam_heads`,
//! `_use_mask_as_output`, `_encode_new_memory`): the prompt encoder and mask decoder on the
//! frame's (memory-conditioned) features, with masks replaced by -1024 where the object score
//! says the object is absent, the best mask by predicted IoU, upsampling to the model input and
//! the object pointer of the chosen output token; a given mask used as the output directly
//! (logits +-10, the pointer from the decoder on that mask); and a frame's memory from its
//! mask (binarised for prompted frames, else through the sigmoid, scaled to +-10) with the
//! "no object" embedding added where the object is absent; and the memory a frame attends to
//! (`_prepare_memory_conditioned_features`): every conditioning frame, the six frames before it
//! (after it in reverse), each with its temporal encoding, then up to 16 object pointers from
//! the past, through the memory attention.

use super::memory_attention::{MemoryAttention, MemoryBank};
use super::memory_encoder::{Memory, MemoryEncoder};
use super::model::Sam2;
use super::object_pointers::ObjectPointers;
use crate::models::sam::model::{Heads, ImageEmbedding};
use crate::models::sam::prompt_encoder::PointPrompt;
use crate::nn::{Conv2d, ConvSpec, Weights};
use crate::ops::Activation;
use crate::ops::layout::transpose;
use crate::ops::resize::{bilinear_antialias, bilinear_plane};
use anyhow::{Result, bail};

/// Memories per object: the conditioning frames plus this many minus one recent frames.
pub const NUM_MASKMEM: usize = 7;
/// Object pointers the memory attention sees at most.
pub const MAX_OBJ_PTRS: usize = 16;

/// What a processed frame leaves for later frames.
#[derive(Clone, Debug)]
pub struct StoredFrame {
    /// `[mem_dim, G, G]`, rounded to bfloat16 as the reference stores it.
    pub memory: Vec<f32>,
    /// `[mem_dim, G, G]` (the same for every frame: shared).
    pub pos: std::sync::Arc<Vec<f32>>,
    pub obj_ptr: Vec<f32>,
}

/// Rounds to the nearest bfloat16 (ties to even), as `tensor.to(torch.bfloat16)`.
pub fn round_bf16(x: &mut [f32]) {
    x.iter_mut()
        .for_each(|v| *v = half::bf16::from_f32(*v).to_f32());
}

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
    pub memory_attention: MemoryAttention,
    /// `[NUM_MASKMEM, mem_dim]`: temporal encodings of the memory slots.
    maskmem_tpos_enc: Vec<f32>,
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
        let mem_dim = memory_encoder.out_dim;
        Ok(Self {
            memory_attention: MemoryAttention::load(&w.pp("memory_attention"))?,
            maskmem_tpos_enc: w.get("maskmem_tpos_enc", &[NUM_MASKMEM, 1, 1, mem_dim]),
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

    /// The current frame's stride-16 features and position encoding (rows `[G * G, C]`)
    /// conditioned on the stored frames of one object: `cond` the conditioning frames (in the
    /// order they were added), `tracked` the others, by frame index. Returns rows `[G * G, C]`.
    #[allow(clippy::too_many_arguments)]
    pub fn condition<'a>(
        &self,
        frame: usize,
        curr: &[f32],
        curr_pos: &[f32],
        grid: usize,
        cond: &[(usize, &StoredFrame)],
        tracked: &dyn Fn(usize) -> Option<&'a StoredFrame>,
        num_frames: usize,
        reverse: bool,
    ) -> Result<Vec<f32>> {
        if cond.is_empty() {
            bail!("frame {frame}: no conditioning frame to track from (add a prompt first)");
        }
        let mem_dim = self.memory_encoder.out_dim;
        let hw = grid * grid;
        // (slot, frame): every conditioning frame at slot 0, then slots 1..7 for the frames
        // 6..1 before the current one (after it in reverse).
        let mut slots: Vec<(usize, &StoredFrame)> = cond.iter().map(|&(_, s)| (0, s)).collect();
        for t_pos in 1..NUM_MASKMEM {
            let t_rel = NUM_MASKMEM - t_pos;
            let prev = if reverse {
                frame.checked_add(t_rel)
            } else {
                frame.checked_sub(t_rel)
            };
            if let Some(p) = prev
                && let Some(s) = tracked(p)
            {
                slots.push((t_pos, s));
            }
        }
        let mut memory = Vec::new();
        let mut pos = Vec::new();
        for (t_pos, s) in &slots {
            if s.memory.len() != mem_dim * hw || s.pos.len() != mem_dim * hw {
                bail!("a stored memory is not {mem_dim}x{grid}x{grid}");
            }
            memory.extend(transpose(&s.memory, mem_dim, hw));
            let enc = &self.maskmem_tpos_enc[(NUM_MASKMEM - t_pos - 1) * mem_dim..][..mem_dim];
            let mut p = transpose(&s.pos, mem_dim, hw);
            p.chunks_mut(mem_dim)
                .for_each(|r| r.iter_mut().zip(enc).for_each(|(a, b)| *a += b));
            pos.extend(p);
        }
        // Object pointers: past conditioning frames with signed distances, then up to 15
        // frames back (forward in reverse) with plain distances.
        let max_ptrs = num_frames.min(MAX_OBJ_PTRS);
        let sign = if reverse { -1 } else { 1 };
        let mut ptrs: Vec<(i64, &[f32])> = cond
            .iter()
            .filter(|(t, _)| if reverse { *t >= frame } else { *t <= frame })
            .map(|(t, s)| ((frame as i64 - *t as i64) * sign, s.obj_ptr.as_slice()))
            .collect();
        for t_diff in 1..max_ptrs {
            let t = if reverse {
                frame as i64 + t_diff as i64
            } else {
                frame as i64 - t_diff as i64
            };
            if t < 0 || t >= num_frames as i64 {
                break;
            }
            let t = t as usize;
            // a tracked frame (every conditioning frame is already selected above)
            if let Some(s) = tracked(t) {
                ptrs.push((t_diff as i64, s.obj_ptr.as_slice()));
            }
        }
        let (ptr_rows, ptr_pos) = self.pointers.tokens(&ptrs, max_ptrs - 1);
        memory.extend(ptr_rows);
        pos.extend(ptr_pos);
        let bank = MemoryBank {
            features: &memory,
            pos: &pos,
            obj_ptr_tokens: ptrs.len() * (self.pointers.dim / mem_dim),
        };
        self.memory_attention.forward(curr, curr_pos, grid, &bank)
    }
}

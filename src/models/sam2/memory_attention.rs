//! SAM 2's memory attention: the current frame's stride-16 features (rows `[H * W, 256]`)
//! attend to themselves and then to the memory bank (past frames' 64-d memory features and
//! object-pointer tokens), in four pre-norm layers: self-attention with axial 2-D rotary
//! embeddings on queries and keys, cross-attention whose keys carry their position encoding and
//! the rotary embedding repeated per memory frame (the object-pointer tokens at the end stay
//! unrotated), and a ReLU MLP; a final LayerNorm. The input gets 0.1 x its position encoding.
//! One head of 256 as in every official config. Keys `memory_attention.*`.

use crate::nn::{Attention, LayerNorm, Linear, Weights};
use crate::ops::Activation;
use crate::ops::rope::AxialRope;
use anyhow::{Result, bail};

struct Layer {
    norm1: LayerNorm,
    self_attn: Attention,
    norm2: LayerNorm,
    cross_attn: Attention,
    norm3: LayerNorm,
    linear1: Linear,
    linear2: Linear,
}

pub struct MemoryAttention {
    layers: Vec<Layer>,
    norm: LayerNorm,
    pub d_model: usize,
    pub kv_dim: usize,
    rope: std::sync::Mutex<Option<(usize, std::sync::Arc<AxialRope>)>>,
}

/// The memory a frame attends to: rows `[n, kv_dim]` of features and of their position
/// encoding; the last `obj_ptr_tokens` rows are object pointers (no rotary embedding).
pub struct MemoryBank<'a> {
    pub features: &'a [f32],
    pub pos: &'a [f32],
    pub obj_ptr_tokens: usize,
}

impl MemoryAttention {
    /// Loads the module under `w` (`memory_attention`).
    pub fn load(w: &Weights) -> Result<Self> {
        let Some(&[d_model]) = w.shape("norm.weight") else {
            bail!("{}: no {}", w.source(), w.key("norm.weight"));
        };
        let Some(kv_dim) = w.dim("layers.0.cross_attn_image.k_proj.weight", 1) else {
            bail!(
                "{}: no {}",
                w.source(),
                w.key("layers.0.cross_attn_image.k_proj.weight")
            );
        };
        let ff = w.dim("layers.0.linear1.weight", 0).unwrap_or(2048);
        let layers = (0..w.count_blocks("layers"))
            .map(|i| {
                let l = w.pp("layers").pp(i);
                Layer {
                    norm1: LayerNorm::load(&l.pp("norm1"), d_model, 1e-5),
                    self_attn: Attention::load(&l.pp("self_attn"), d_model, d_model, 1),
                    norm2: LayerNorm::load(&l.pp("norm2"), d_model, 1e-5),
                    cross_attn: Attention::load_kv(
                        &l.pp("cross_attn_image"),
                        d_model,
                        kv_dim,
                        d_model,
                        1,
                    ),
                    norm3: LayerNorm::load(&l.pp("norm3"), d_model, 1e-5),
                    linear1: Linear::load(&l.pp("linear1"), d_model, ff),
                    linear2: Linear::load(&l.pp("linear2"), ff, d_model),
                }
            })
            .collect();
        Ok(Self {
            layers,
            norm: LayerNorm::load(&w.pp("norm"), d_model, 1e-5),
            d_model,
            kv_dim,
            rope: Default::default(),
        })
    }

    /// The rotary table of a `side x side` grid (one head of `d_model`).
    fn rope(&self, side: usize) -> std::sync::Arc<AxialRope> {
        let mut slot = self.rope.lock().unwrap_or_else(|p| p.into_inner());
        if let Some((s, r)) = slot.as_ref()
            && *s == side
        {
            return r.clone();
        }
        let r = std::sync::Arc::new(AxialRope::new(self.d_model, side, side, 10000.0));
        *slot = Some((side, r.clone()));
        r
    }

    /// The current frame's features `curr` and position encoding `curr_pos` (rows
    /// `[side * side, d_model]`) conditioned on `memory`; returns rows of the same shape.
    pub fn forward(
        &self,
        curr: &[f32],
        curr_pos: &[f32],
        side: usize,
        memory: &MemoryBank,
    ) -> Result<Vec<f32>> {
        let (d, n) = (self.d_model, side * side);
        let nk = memory.features.len() / self.kv_dim;
        if curr.len() != n * d || curr_pos.len() != n * d {
            bail!("memory attention: the frame must be {side}x{side}x{d}");
        }
        if memory.features.len() != nk * self.kv_dim
            || memory.pos.len() != memory.features.len()
            || memory.obj_ptr_tokens > nk
        {
            bail!(
                "memory attention: the memory must be rows of {} with their positions",
                self.kv_dim
            );
        }
        let rope = self.rope(side);
        let rotated = nk - memory.obj_ptr_tokens;
        let mut x: Vec<f32> = curr
            .iter()
            .zip(curr_pos)
            .map(|(a, p)| a + 0.1 * p)
            .collect();
        let keys_pos: Vec<f32> = memory
            .features
            .iter()
            .zip(memory.pos)
            .map(|(a, b)| a + b)
            .collect();
        for l in &self.layers {
            // self-attention, rotary on queries and keys
            let mut t = x.clone();
            l.norm1.forward(&mut t);
            let mut q = l.self_attn.q.forward(&t, n);
            let mut k = l.self_attn.k.forward(&t, n);
            let v = l.self_attn.v.forward(&t, n);
            rope.apply(&mut q, n);
            rope.apply(&mut k, n);
            let a = l
                .self_attn
                .forward_projected(&q, n, &k, &v, n, l.self_attn.hooks());
            x.iter_mut().zip(&a).for_each(|(s, o)| *s += o);
            // cross-attention to the memory, rotary repeated per memory frame
            let mut t = x.clone();
            l.norm2.forward(&mut t);
            let mut q = l.cross_attn.q.forward(&t, n);
            let mut k = l.cross_attn.k.forward(&keys_pos, nk);
            let v = l.cross_attn.v.forward(memory.features, nk);
            rope.apply(&mut q, n);
            rope.apply(&mut k[..rotated * d], rotated);
            let a = l
                .cross_attn
                .forward_projected(&q, n, &k, &v, nk, l.cross_attn.hooks());
            x.iter_mut().zip(&a).for_each(|(s, o)| *s += o);
            // MLP
            let mut t = x.clone();
            l.norm3.forward(&mut t);
            let mut hdn = l.linear1.forward(&t, n);
            Activation::Relu.apply(&mut hdn);
            let m = l.linear2.forward(&hdn, n);
            x.iter_mut().zip(&m).for_each(|(s, o)| *s += o);
        }
        self.norm.forward(&mut x);
        Ok(x)
    }
}

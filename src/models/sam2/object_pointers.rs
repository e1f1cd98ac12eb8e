//! SAM 2's object pointers: the mask decoder's output token of a frame, through a 3-layer MLP,
//! is that frame's pointer to the object (a learned "no object" pointer where the object score
//! says the object is absent). For the memory attention each 256-d pointer becomes four 64-d
//! tokens, and its temporal distance to the current frame a 1-D sine encoding through a linear
//! projection (SAM 2.1; 2.0 leaves pointer positions at zero). Keys `obj_ptr_proj.*`,
//! `no_obj_ptr`, `obj_ptr_tpos_proj.*`.

use crate::nn::{Linear, Mlp, Weights};
use crate::ops::Activation;
use anyhow::{Result, bail};

pub struct ObjectPointers {
    proj: Mlp,
    no_obj_ptr: Vec<f32>,
    tpos_proj: Option<Linear>,
    pub dim: usize,
    pub mem_dim: usize,
}

/// The transformer's 1-D sine encoding of a position: `dim / 2` sines then `dim / 2` cosines
/// of `pos / 10000^(2 floor(i / 2) / (dim / 2))` (`get_1d_sine_pe`).
pub fn sine_1d(pos: f32, dim: usize) -> Vec<f32> {
    let half = dim / 2;
    let scaled: Vec<f32> = (0..half)
        .map(|i| pos / 10000f32.powf((2 * (i / 2)) as f32 / half as f32))
        .collect();
    scaled
        .iter()
        .map(|v| v.sin())
        .chain(scaled.iter().map(|v| v.cos()))
        .collect()
}

impl ObjectPointers {
    /// Loads the pointer parts from the checkpoint's root; `mem_dim` is the memory width (64).
    pub fn load(w: &Weights, mem_dim: usize) -> Result<Self> {
        let Some(&[1, dim]) = w.shape("no_obj_ptr") else {
            bail!(
                "{}: no {} [1, C] (not a SAM 2 video model)",
                w.source(),
                w.key("no_obj_ptr")
            );
        };
        if dim % mem_dim != 0 {
            bail!(
                "{}: object pointers of {dim} do not split into {mem_dim}-d tokens",
                w.source()
            );
        }
        let p = w.pp("obj_ptr_proj");
        let proj = if p.contains("layers.0.weight") {
            Mlp::load_numbered(&p, &[dim, dim, dim, dim], Activation::Relu)
        } else {
            Mlp {
                layers: vec![Linear::load(&p, dim, dim)],
                act: Activation::None,
            }
        };
        Ok(Self {
            proj,
            no_obj_ptr: w.get("no_obj_ptr", &[1, dim]),
            tpos_proj: w
                .contains("obj_ptr_tpos_proj.weight")
                .then(|| Linear::load(&w.pp("obj_ptr_tpos_proj"), dim, mem_dim)),
            dim,
            mem_dim,
        })
    }

    /// A frame's pointer from its output token and object-score logit.
    pub fn pointer(&self, token: &[f32], object_score: f32) -> Vec<f32> {
        if object_score > 0.0 {
            self.proj.forward(token, 1)
        } else {
            self.no_obj_ptr.clone()
        }
    }

    /// Pointers with their signed temporal distances to the current frame as memory tokens:
    /// rows `[4n, mem_dim]` (each pointer's four pieces in order) and their positions
    /// (`sine_1d(t / t_diff_max)` projected, or at the memory width without a projection, repeated
    /// per piece).
    pub fn tokens(&self, ptrs: &[(i64, &[f32])], t_diff_max: usize) -> (Vec<f32>, Vec<f32>) {
        let split = self.dim / self.mem_dim;
        let mut rows = Vec::with_capacity(ptrs.len() * self.dim);
        let mut pos = Vec::with_capacity(ptrs.len() * self.dim);
        for (t, p) in ptrs {
            rows.extend_from_slice(p);
            let enc = match &self.tpos_proj {
                Some(l) => l.forward(&sine_1d(*t as f32 / t_diff_max.max(1) as f32, self.dim), 1),
                // SAM 2.0: the sine encoding at the memory width, unprojected.
                None => sine_1d(*t as f32 / t_diff_max.max(1) as f32, self.mem_dim),
            };
            for _ in 0..split {
                pos.extend_from_slice(&enc);
            }
        }
        (rows, pos)
    }
}

//! SAM 2's memory encoder: a frame's mask (high-resolution logits, already scaled for memory)
//! is downsampled 16x by four stride-2 3x3 convolutions with LayerNorm2d and GELU (1 -> 4 -> 16
//! -> 64 -> 256 channels) and a 1x1 projection, added to the projected stride-16 image features,
//! fused by two ConvNeXt blocks (7x7 depthwise convolution, LayerNorm2d, a GELU MLP, layer
//! scale, residual) and projected to the 64-channel memory, with its sine position encoding.
//! Maps are `[C, H, W]`. Keys `memory_encoder.*`.

use super::position_encoding::sine;
use crate::nn::{Conv2d, ConvSpec, LayerNorm2d, Linear, Weights};
use crate::ops::Activation;
use crate::ops::layout::transpose;
use anyhow::{Result, bail};

/// One ConvNeXt block of the fuser.
struct CxBlock {
    dwconv: Conv2d,
    norm: LayerNorm2d,
    pwconv1: Linear,
    pwconv2: Linear,
    gamma: Vec<f32>,
}

impl CxBlock {
    fn load(w: &Weights, dim: usize) -> Self {
        Self {
            dwconv: Conv2d::load(&w.pp("dwconv"), ConvSpec::same(dim, dim, 7).groups(dim)),
            norm: LayerNorm2d::load(&w.pp("norm"), dim, 1e-6),
            pwconv1: Linear::load(&w.pp("pwconv1"), dim, 4 * dim),
            pwconv2: Linear::load(&w.pp("pwconv2"), 4 * dim, dim),
            gamma: w.get("gamma", &[dim]),
        }
    }

    /// `x + gamma * mlp(norm(dwconv(x)))` on a `[C, H, W]` map.
    fn forward(&self, x: &mut [f32], h: usize, w: usize) {
        let c = self.gamma.len();
        let (mut y, _, _) = self.dwconv.forward(x, h, w, Activation::None);
        self.norm.forward(&mut y, h * w);
        let rows = transpose(&y, c, h * w);
        let mut hidden = self.pwconv1.forward(&rows, h * w);
        Activation::Gelu.apply(&mut hidden);
        let mut out = self.pwconv2.forward(&hidden, h * w);
        out.chunks_mut(c)
            .for_each(|r| r.iter_mut().zip(&self.gamma).for_each(|(v, g)| *v *= g));
        let out = transpose(&out, h * w, c);
        x.iter_mut().zip(&out).for_each(|(a, b)| *a += b);
    }
}

pub struct MemoryEncoder {
    /// `(conv, norm)` of each stride-2 step, then the 1x1 projection.
    downsampler: Vec<(Conv2d, LayerNorm2d)>,
    mask_proj: Conv2d,
    pix_feat_proj: Conv2d,
    fuser: Vec<CxBlock>,
    out_proj: Conv2d,
    pub in_dim: usize,
    pub out_dim: usize,
}

/// A frame's memory: features `[out_dim, H, W]` and their position encoding.
pub struct Memory {
    pub features: Vec<f32>,
    pub pos: Vec<f32>,
    pub h: usize,
    pub w: usize,
}

impl MemoryEncoder {
    /// Loads the encoder under `w` (`memory_encoder`).
    pub fn load(w: &Weights) -> Result<Self> {
        let Some(&[out_dim, in_dim, 1, 1]) = w.shape("out_proj.weight") else {
            bail!(
                "{}: no {} [64, 256, 1, 1]",
                w.source(),
                w.key("out_proj.weight")
            );
        };
        let d = w.pp("mask_downsampler.encoder");
        let mut downsampler = Vec::new();
        let mut cin = 1;
        for step in 0..4 {
            let cout = cin * 4;
            downsampler.push((
                Conv2d::load(
                    &d.pp(3 * step),
                    ConvSpec::same(cin, cout, 3).stride(2).pad(1),
                ),
                LayerNorm2d::load(&d.pp(3 * step + 1), cout, 1e-6),
            ));
            cin = cout;
        }
        let fuser = (0..w.pp("fuser").count_blocks("layers"))
            .map(|i| CxBlock::load(&w.pp("fuser.layers").pp(i), in_dim))
            .collect();
        Ok(Self {
            downsampler,
            mask_proj: Conv2d::load(&d.pp(12), ConvSpec::same(cin, in_dim, 1)),
            pix_feat_proj: Conv2d::load(&w.pp("pix_feat_proj"), ConvSpec::same(in_dim, in_dim, 1)),
            fuser,
            out_proj: Conv2d::load(&w.pp("out_proj"), ConvSpec::same(in_dim, out_dim, 1)),
            in_dim,
            out_dim,
        })
    }

    /// The memory of a frame: image features `[in_dim, h, w]` (stride 16) and the mask for
    /// memory `[16h, 16w]` (already through the sigmoid and scaling, as `skip_mask_sigmoid`).
    pub fn forward(&self, pix_feat: &[f32], mask: &[f32], h: usize, w: usize) -> Result<Memory> {
        if pix_feat.len() != self.in_dim * h * w || mask.len() != 256 * h * w {
            bail!(
                "memory encoder: features must be {}x{h}x{w} and the mask {}x{}",
                self.in_dim,
                16 * h,
                16 * w
            );
        }
        let (mut m, mut mh, mut mw) = (mask.to_vec(), 16 * h, 16 * w);
        for (conv, norm) in &self.downsampler {
            let (y, oh, ow) = conv.forward(&m, mh, mw, Activation::None);
            (m, mh, mw) = (y, oh, ow);
            norm.forward(&mut m, mh * mw);
            Activation::Gelu.apply(&mut m);
        }
        let (m, _, _) = self.mask_proj.forward(&m, h, w, Activation::None);
        let (mut x, _, _) = self.pix_feat_proj.forward(pix_feat, h, w, Activation::None);
        x.iter_mut().zip(&m).for_each(|(a, b)| *a += b);
        for b in &self.fuser {
            b.forward(&mut x, h, w);
        }
        let (features, _, _) = self.out_proj.forward(&x, h, w, Activation::None);
        Ok(Memory {
            features,
            pos: sine(self.out_dim, h, w),
            h,
            w,
        })
    }
}

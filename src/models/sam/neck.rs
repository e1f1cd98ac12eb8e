//! The image encoders' neck (SAM's ViTs and MobileSAM's TinyViT alike): 1x1 convolution to the
//! embedding width, LayerNorm2d, 3x3 convolution, LayerNorm2d (eps 1e-6, no biases on the
//! convolutions). Keys `{prefix}neck.{0,1,2,3}.*`.

use crate::nn::{Conv2d, ConvSpec, LayerNorm2d, Weights};
use crate::ops::Activation;
use crate::ops::layout::transpose;

pub(crate) struct Neck {
    pub out_chans: usize,
    conv0: Conv2d,
    ln1: LayerNorm2d,
    conv2: Conv2d,
    ln3: LayerNorm2d,
}

impl Neck {
    /// `w` scoped to the neck; `cin`: the encoder's last width; the output width is read from
    /// `0.weight`.
    pub(crate) fn load(w: &Weights, cin: usize) -> Self {
        let out = w.dim("0.weight", 0).unwrap_or(256);
        Self {
            out_chans: out,
            conv0: Conv2d::load_no_bias(&w.pp(0), ConvSpec::same(cin, out, 1)),
            ln1: LayerNorm2d::load(&w.pp(1), out, 1e-6),
            conv2: Conv2d::load_no_bias(&w.pp(2), ConvSpec::same(out, out, 3)),
            ln3: LayerNorm2d::load(&w.pp(3), out, 1e-6),
        }
    }

    /// Tokens `[h * w, cin]` -> embedding `[out, h, w]`.
    pub(crate) fn forward(&self, tokens: &[f32], h: usize, w: usize) -> Vec<f32> {
        let hw = h * w;
        let x = transpose(tokens, hw, self.conv0.cin());
        let (mut y, _, _) = self.conv0.forward(&x, h, w, Activation::None);
        self.ln1.forward(&mut y, hw);
        let (mut z, _, _) = self.conv2.forward(&y, h, w, Activation::None);
        self.ln3.forward(&mut z, hw);
        z
    }
}

/// Runs `attend` on every `ws x ws` window of an `h x w` grid of tokens (row-major), `c_in`
/// wide in and `c_out` wide out, windows in parallel. The grid is padded at the bottom and
/// right with `fill` tokens (zeros when None; no mask, as the reference encoders do); the
/// padded outputs are dropped.
#[allow(clippy::too_many_arguments)]
pub(crate) fn in_windows_padded(
    x: &[f32],
    h: usize,
    w: usize,
    c_in: usize,
    c_out: usize,
    ws: usize,
    fill: Option<&[f32]>,
    attend: impl Fn(Vec<f32>) -> Vec<f32> + Sync,
) -> Vec<f32> {
    use rayon::prelude::*;
    let (nh, nw) = (h.div_ceil(ws), w.div_ceil(ws));
    // (window row, window column, token row, token column) -> grid index when inside
    let inside = |wi: usize, y: usize, xx: usize| {
        let (gy, gx) = ((wi / nw) * ws + y, (wi % nw) * ws + xx);
        (gy < h && gx < w).then_some(gy * w + gx)
    };
    let outs: Vec<Vec<f32>> = (0..nh * nw)
        .into_par_iter()
        .map(|wi| {
            let mut win = vec![0.0f32; ws * ws * c_in];
            for y in 0..ws {
                for xx in 0..ws {
                    let dst = &mut win[(y * ws + xx) * c_in..(y * ws + xx + 1) * c_in];
                    match (inside(wi, y, xx), fill) {
                        (Some(g), _) => dst.copy_from_slice(&x[g * c_in..(g + 1) * c_in]),
                        (None, Some(f)) => dst.copy_from_slice(f),
                        (None, None) => {}
                    }
                }
            }
            attend(win)
        })
        .collect();
    let mut out = vec![0.0f32; h * w * c_out];
    for (wi, a) in outs.iter().enumerate() {
        for y in 0..ws {
            for xx in 0..ws {
                if let Some(g) = inside(wi, y, xx) {
                    out[g * c_out..(g + 1) * c_out]
                        .copy_from_slice(&a[(y * ws + xx) * c_out..(y * ws + xx + 1) * c_out]);
                }
            }
        }
    }
    out
}

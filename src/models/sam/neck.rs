//! The image encoders' neck (SAM's ViTs and MobileSAM's TinyViT alike): 1x1 convolution to the
//! embedding width, LayerNorm2d, 3x3 convolution, LayerNorm2d (eps 1e-6, no biases on the
//! convolutions). Keys `{prefix}neck.{0,1,2,3}.*`.

use crate::models::host::{conv2d, layer_norm2d, matmul_nt_par, transpose};
use crate::weights::{KeyCheck, NamedTensors};

pub(crate) struct Neck {
    pub out_chans: usize,
    cin: usize,
    w0: Vec<f32>,
    ln1: (Vec<f32>, Vec<f32>),
    w2: Vec<f32>,
    ln3: (Vec<f32>, Vec<f32>),
}

impl Neck {
    /// `cin`: the encoder's last width; the output width is read from `neck.0.weight`.
    pub(crate) fn load(src: &NamedTensors, ck: &mut KeyCheck, prefix: &str, cin: usize) -> Self {
        let out = src
            .get(&format!("{prefix}neck.0.weight"))
            .map(|t| t.shape[0])
            .unwrap_or(256);
        let mut v = |k: &str, shape: &[usize]| {
            ck.take(src, &format!("{prefix}neck.{k}"), shape)
                .map(|t| t.data.clone())
                .unwrap_or_else(|| vec![0.0; shape.iter().product()])
        };
        Self {
            out_chans: out,
            cin,
            w0: v("0.weight", &[out, cin, 1, 1]),
            ln1: (v("1.weight", &[out]), v("1.bias", &[out])),
            w2: v("2.weight", &[out, out, 3, 3]),
            ln3: (v("3.weight", &[out]), v("3.bias", &[out])),
        }
    }

    /// Tokens `[h * w, cin]` -> embedding `[out, h, w]`.
    pub(crate) fn forward(&self, tokens: &[f32], h: usize, w: usize) -> Vec<f32> {
        let (hw, out) = (h * w, self.out_chans);
        let y = matmul_nt_par(tokens, &self.w0, hw, self.cin, out);
        let mut y = transpose(&y, hw, out);
        layer_norm2d(&mut y, &self.ln1.0, &self.ln1.1, hw, 1e-6);
        let (mut z, _, _) = conv2d(&y, out, h, w, &self.w2, None, out, 3, 1, 1, 1);
        layer_norm2d(&mut z, &self.ln3.0, &self.ln3.1, hw, 1e-6);
        z
    }
}

/// Runs `attend` on every `ws x ws` window of an `h x w` grid of `c`-wide tokens (row-major),
/// windows in parallel. The grid is padded at the bottom and right with zero tokens (no mask,
/// as both reference encoders do); the padded outputs are dropped.
pub(crate) fn in_windows(
    x: &[f32],
    h: usize,
    w: usize,
    c: usize,
    ws: usize,
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
            let mut win = vec![0.0f32; ws * ws * c];
            for y in 0..ws {
                for xx in 0..ws {
                    if let Some(g) = inside(wi, y, xx) {
                        win[(y * ws + xx) * c..(y * ws + xx + 1) * c]
                            .copy_from_slice(&x[g * c..(g + 1) * c]);
                    }
                }
            }
            attend(win)
        })
        .collect();
    let mut out = vec![0.0f32; h * w * c];
    for (wi, a) in outs.iter().enumerate() {
        for y in 0..ws {
            for xx in 0..ws {
                if let Some(g) = inside(wi, y, xx) {
                    out[g * c..(g + 1) * c]
                        .copy_from_slice(&a[(y * ws + xx) * c..(y * ws + xx + 1) * c]);
                }
            }
        }
    }
    out
}

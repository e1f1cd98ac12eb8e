//! The Swin Transformer backbone (Liu et al. 2021) as `transformers`' `SwinBackbone` runs it for
//! Mask2Former: a 4x4 patch embedding, stages of blocks that attend within `ws x ws` windows
//! (every second block on windows shifted by `ws / 2`, with the mask that keeps regions brought
//! together by the cyclic shift apart), a learned relative-position bias per head, and patch
//! merging between stages. Each stage's output before merging, LayerNorm-ed, is a feature map
//! (strides 4, 8, 16, 32).
//!
//! Grids that are not multiples of the window are padded with zero tokens (after the block's
//! first LayerNorm, unmasked, as the reference pads them), and the windows are always
//! partitioned and shifted, however small the grid (the backbone's `always_partition`).

use super::config::SwinConfig;
use crate::nn::{Conv2d, ConvSpec, LayerNorm, Linear, Weights};
use crate::ops::attention::{HeadView, Hooks, attention};
use crate::ops::layout::transpose;
use crate::ops::profile::scope;
use crate::ops::simd::vectorized;
use crate::ops::{Activation, Precision};
use rayon::prelude::*;

/// The score added between tokens that the cyclic shift brought into one window from
/// different regions (the reference's value).
const SHIFT_MASK: f32 = -100.0;

struct Block {
    norm1: LayerNorm,
    /// Query, key and value projections in one `[3C, C]` product.
    qkv: Linear,
    proj: Linear,
    norm2: LayerNorm,
    fc1: Linear,
    fc2: Linear,
    heads: usize,
    shift: usize,
    /// The relative-position bias spread to every pair of a window's tokens:
    /// `[heads, ws^2, ws^2]`.
    bias: Vec<f32>,
}

struct Merging {
    norm: LayerNorm,
    reduction: Linear,
}

struct Stage {
    blocks: Vec<Block>,
    merge: Option<Merging>,
    /// The LayerNorm of the stage's feature map (`hidden_states_norms.stageN`).
    out_norm: LayerNorm,
    dim: usize,
}

pub struct Swin {
    patch: Conv2d,
    patch_size: usize,
    embed_norm: LayerNorm,
    stages: Vec<Stage>,
    ws: usize,
}

/// A feature map `[C, H, W]`.
#[derive(Clone, Debug)]
pub struct FeatureMap {
    pub data: Vec<f32>,
    pub channels: usize,
    pub height: usize,
    pub width: usize,
}

impl Swin {
    /// `w` is the backbone's scope (`model.pixel_level_module.encoder`).
    pub fn load(w: &Weights, cfg: &SwinConfig) -> Self {
        let eps = cfg.layer_norm_eps;
        let c0 = cfg.embed_dim;
        let emb = w.pp("embeddings");
        let patch = Conv2d::load(
            &emb.pp("patch_embeddings").pp("projection"),
            ConvSpec::same(3, c0, cfg.patch_size)
                .stride(cfg.patch_size)
                .pad(0),
        );
        let embed_norm = LayerNorm::load(&emb.pp("norm"), c0, eps);
        let ws = cfg.window_size;
        let stages = (0..cfg.depths.len())
            .map(|s| {
                let dim = c0 << s;
                let sw = w.pp("encoder").pp("layers").pp(s);
                let blocks = (0..cfg.depths[s])
                    .map(|b| {
                        let bw = sw.pp("blocks").pp(b);
                        load_block(&bw, dim, cfg.num_heads[s], ws, b % 2 == 1, cfg)
                    })
                    .collect();
                let merge = (s + 1 < cfg.depths.len()).then(|| {
                    let mw = sw.pp("downsample");
                    Merging {
                        norm: LayerNorm::load(&mw.pp("norm"), 4 * dim, eps),
                        reduction: Linear::load_no_bias(&mw.pp("reduction"), 4 * dim, 2 * dim),
                    }
                });
                let out_norm = LayerNorm::load(
                    &w.pp("hidden_states_norms").pp(format!("stage{}", s + 1)),
                    dim,
                    1e-5,
                );
                Stage {
                    blocks,
                    merge,
                    out_norm,
                    dim,
                }
            })
            .collect();
        Self {
            patch,
            patch_size: cfg.patch_size,
            embed_norm,
            stages,
            ws,
        }
    }

    /// The channels of the stages' feature maps.
    pub fn channels(&self) -> Vec<usize> {
        self.stages.iter().map(|s| s.dim).collect()
    }

    /// `[3, h, w]` normalised pixels -> one feature map per stage.
    pub fn forward(&self, x: &[f32], h: usize, w: usize) -> Vec<FeatureMap> {
        let p = self.patch_size;
        let (ph, pw) = (h.div_ceil(p) * p, w.div_ceil(p) * p);
        let padded;
        let x = if (ph, pw) != (h, w) {
            let mut buf = vec![0.0f32; 3 * ph * pw];
            for c in 0..3 {
                for y in 0..h {
                    buf[(c * ph + y) * pw..][..w].copy_from_slice(&x[(c * h + y) * w..][..w]);
                }
            }
            padded = buf;
            &padded[..]
        } else {
            x
        };
        let (y, mut gh, mut gw) = {
            let _t = scope("swin patch embedding", 0.0);
            self.patch.forward(x, ph, pw, Activation::None)
        };
        let c0 = self.patch.cout();
        let mut t = transpose(&y, c0, gh * gw);
        self.embed_norm.forward(&mut t);
        let mut maps = Vec::with_capacity(self.stages.len());
        for stage in &self.stages {
            for b in &stage.blocks {
                let _t = scope("swin blocks", 0.0);
                self.block(b, &mut t, gh, gw, stage.dim);
            }
            let mut f = t.clone();
            stage.out_norm.forward(&mut f);
            maps.push(FeatureMap {
                data: transpose(&f, gh * gw, stage.dim),
                channels: stage.dim,
                height: gh,
                width: gw,
            });
            if let Some(m) = &stage.merge {
                let _t = scope("swin patch merging", 0.0);
                (t, gh, gw) = merge(m, &t, gh, gw, stage.dim);
            }
        }
        maps
    }

    /// One block on the tokens `t [gh * gw, c]`, in place: windowed attention, then the MLP,
    /// each with its residual.
    fn block(&self, b: &Block, t: &mut [f32], gh: usize, gw: usize, c: usize) {
        let n = gh * gw;
        let x = b.norm1.forward_of(t);
        let qkv = b.qkv.forward(&x, n);
        let attended = windows(b, &qkv, gh, gw, c, self.ws);
        b.proj.forward_add(&attended, n, t);
        let x = b.norm2.forward_of(t);
        let hdn = b.fc1.forward_act(&x, n, Activation::Gelu);
        b.fc2.forward_add(&hdn, n, t);
    }
}

fn load_block(
    w: &Weights,
    dim: usize,
    heads: usize,
    ws: usize,
    odd: bool,
    cfg: &SwinConfig,
) -> Block {
    let eps = cfg.layer_norm_eps;
    let att = w.pp("attention");
    let sa = att.pp("self");
    // read in f32, joined, then converted once
    let sa32 = sa.clone().with_precision(Precision::F32);
    let (q, k, v) = (
        Linear::load(&sa32.pp("query"), dim, dim),
        Linear::load(&sa32.pp("key"), dim, dim),
        Linear::load(&sa32.pp("value"), dim, dim),
    );
    let qkv = Linear::new(
        [q.weight(), k.weight(), v.weight()].concat(),
        [q.b, k.b, v.b].concat(),
        dim,
        3 * dim,
    )
    .with_precision(w.precision());
    let side = 2 * ws - 1;
    let table = sa.get("relative_position_bias_table", &[side * side, heads]);
    let n = ws * ws;
    let mut bias = vec![0.0f32; heads * n * n];
    for i in 0..n {
        for j in 0..n {
            let dy = (i / ws) as isize - (j / ws) as isize + ws as isize - 1;
            let dx = (i % ws) as isize - (j % ws) as isize + ws as isize - 1;
            let idx = dy as usize * side + dx as usize;
            for h in 0..heads {
                bias[(h * n + i) * n + j] = table[idx * heads + h];
            }
        }
    }
    let hidden = (cfg.mlp_ratio * dim as f64) as usize;
    Block {
        norm1: LayerNorm::load(&w.pp("layernorm_before"), dim, eps),
        qkv,
        proj: Linear::load(&att.pp("output").pp("dense"), dim, dim),
        norm2: LayerNorm::load(&w.pp("layernorm_after"), dim, eps),
        fc1: Linear::load(&w.pp("intermediate").pp("dense"), dim, hidden),
        fc2: Linear::load(&w.pp("output").pp("dense"), hidden, dim),
        heads,
        shift: if odd { ws / 2 } else { 0 },
        bias,
    }
}

/// Windowed attention over projected tokens `qkv [gh * gw, 3c]` -> `[gh * gw, c]` (before the
/// output projection). The grid is padded to `(hp, wp)`, multiples of `ws`, and rolled up and
/// left by the block's shift; window `(r, s)` then holds rolled positions
/// `(r ws + i, s ws + j)`, each read from the grid position `((y + shift) mod hp, (x + shift)
/// mod wp)` (a padding token when outside the grid: its projection is the bias alone) and
/// written back there.
fn windows(b: &Block, qkv: &[f32], gh: usize, gw: usize, c: usize, ws: usize) -> Vec<f32> {
    let (hp, wp) = (gh.div_ceil(ws) * ws, gw.div_ceil(ws) * ws);
    let (nwh, nww) = (hp / ws, wp / ws);
    let s = b.shift;
    let n = ws * ws;
    let fill: Vec<f32> = b.qkv.b.clone();
    // Rolled position -> grid token, when inside the grid.
    let source = |ry: usize, rx: usize| {
        let (y, x) = ((ry + s) % hp, (rx + s) % wp);
        (y < gh && x < gw).then_some(y * gw + x)
    };
    // The shift mask's region of a rolled coordinate along an axis of length `len`.
    let region = |v: usize, len: usize| {
        if s == 0 {
            0
        } else {
            (v >= len - ws) as usize + (v >= len - s) as usize
        }
    };
    let kd = c / b.heads;
    let outs: Vec<Vec<f32>> = (0..nwh * nww)
        .into_par_iter()
        .map(|wi| {
            let (r0, c0) = ((wi / nww) * ws, (wi % nww) * ws);
            let mut win = vec![0.0f32; n * 3 * c];
            let mut labels = vec![0usize; n];
            for i in 0..n {
                let (ry, rx) = (r0 + i / ws, c0 + i % ws);
                let dst = &mut win[i * 3 * c..(i + 1) * 3 * c];
                match source(ry, rx) {
                    Some(g) => dst.copy_from_slice(&qkv[g * 3 * c..(g + 1) * 3 * c]),
                    None => dst.copy_from_slice(&fill),
                }
                labels[i] = region(ry, hp) * 3 + region(rx, wp);
            }
            let masked = labels.iter().any(|&l| l != labels[0]);
            let view = |which: usize| HeadView {
                data: &win,
                rows: n,
                stride: 3 * c,
                base: which * c,
                step: kd,
            };
            let add_bias = |head: usize, row0: usize, _q: &[f32], sc: &mut [f32]| {
                let bias = &b.bias[(head * n + row0) * n..][..sc.len()];
                vectorized(
                    #[inline(always)]
                    || sc.iter_mut().zip(bias).for_each(|(v, a)| *v += a),
                );
                if masked {
                    for (r, row) in sc.chunks_mut(n).enumerate() {
                        let li = labels[row0 + r];
                        for (v, &lj) in row.iter_mut().zip(&labels) {
                            if lj != li {
                                *v += SHIFT_MASK;
                            }
                        }
                    }
                }
            };
            let hooks = Hooks {
                bias: Some(&add_bias),
                precision: b.qkv.precision(),
                ..Hooks::default()
            };
            attention(
                view(0),
                view(1),
                view(2),
                b.heads,
                kd,
                1.0 / (kd as f32).sqrt(),
                hooks,
            )
        })
        .collect();
    let mut out = vec![0.0f32; gh * gw * c];
    for (wi, o) in outs.iter().enumerate() {
        let (r0, c0) = ((wi / nww) * ws, (wi % nww) * ws);
        for i in 0..n {
            if let Some(g) = source(r0 + i / ws, c0 + i % ws) {
                out[g * c..(g + 1) * c].copy_from_slice(&o[i * c..(i + 1) * c]);
            }
        }
    }
    out
}

/// Patch merging: the grid padded to even sides, each 2x2 cell's tokens concatenated in the
/// order (0, 0), (1, 0), (0, 1), (1, 1) (row, column), LayerNorm, then `4c -> 2c`.
fn merge(m: &Merging, t: &[f32], gh: usize, gw: usize, c: usize) -> (Vec<f32>, usize, usize) {
    let (oh, ow) = (gh.div_ceil(2), gw.div_ceil(2));
    let mut cat = vec![0.0f32; oh * ow * 4 * c];
    for y in 0..oh {
        for x in 0..ow {
            let dst = &mut cat[(y * ow + x) * 4 * c..][..4 * c];
            for (k, (dy, dx)) in [(0, 0), (1, 0), (0, 1), (1, 1)].into_iter().enumerate() {
                let (sy, sx) = (2 * y + dy, 2 * x + dx);
                if sy < gh && sx < gw {
                    dst[k * c..(k + 1) * c].copy_from_slice(&t[(sy * gw + sx) * c..][..c]);
                }
            }
        }
    }
    m.norm.forward(&mut cat);
    (m.reduction.forward(&cat, oh * ow), oh, ow)
}

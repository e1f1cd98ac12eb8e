//! MobileSAM's image encoder, TinyViT (Wu et al. 2022) as distilled from SAM's ViT-H (Zhang et al.
//! 2023): a convolutional stem and MBConv stage at 1/4 resolution, patch-merging downsamples,
//! then three stages of windowed attention blocks (learned per-offset attention biases, a
//! depthwise "local" convolution, an MLP), and SAM's neck to a `[256, 64, 64]` embedding.
//! Keys `image_encoder.*` as in `mobile_sam.pt`; BatchNorm is folded into the convolutions at
//! load. Widths, depths, heads, windows and ratios are read from the weights; the downsample
//! stride rule (stride 1 into 320/448/576 channels) and the 1024 input are the reference's.

use super::neck::{Neck, in_windows_padded};
use crate::nn::{Conv2d, ConvSpec, LayerNorm, Linear, Mlp, Weights};
use crate::ops::Activation;
use crate::ops::attention::{HeadView, Hooks, attention};
use crate::ops::layout::{add_assign, transpose};
use crate::ops::profile::scope;
use crate::ops::simd::vectorized;
use anyhow::{Result, bail};
use rayon::prelude::*;

/// The input side MobileSAM's TinyViT is built for (its reshapes are fixed to it).
pub const TINY_VIT_INPUT: usize = 1024;

/// TinyViT's `Conv2d_BN` (`{c, bn}`, padding k/2, BatchNorm eps 1e-5), folded.
struct ConvBn(Conv2d);

impl ConvBn {
    fn load(w: &Weights, cin: usize, cout: usize, k: usize, stride: usize, groups: usize) -> Self {
        let spec = ConvSpec::same(cin, cout, k).stride(stride).groups(groups);
        Self(Conv2d::load_bn(&w.pp("c"), &w.pp("bn"), spec, 1e-5))
    }

    /// `[Cin, H, W]` -> `([Cout, Ho, Wo], Ho, Wo)`, with `act`, profiled as `what`.
    fn forward(
        &self,
        what: &'static str,
        x: &[f32],
        h: usize,
        w: usize,
        act: Activation,
    ) -> (Vec<f32>, usize, usize) {
        let k = &self.0.kernel;
        let (ho, wo) = (h.div_ceil(k.stride), w.div_ceil(k.stride));
        let _t = scope(
            what,
            (2 * k.cout * k.cin / k.groups * k.k * k.k * ho * wo) as f64,
        );
        self.0.forward(x, h, w, act)
    }
}

struct MbConv {
    conv1: ConvBn,
    conv2: ConvBn,
    conv3: ConvBn,
}

struct PatchMerging {
    conv1: ConvBn,
    conv2: ConvBn,
    conv3: ConvBn,
}

impl PatchMerging {
    /// `[C, H, W]` -> `[Cout, H', W']`.
    fn forward(&self, x: &[f32], h: usize, w: usize) -> (Vec<f32>, usize, usize) {
        const WHAT: &str = "patch merging (1x1, depthwise 3x3, 1x1)";
        let (y, h, w) = self.conv1.forward(WHAT, x, h, w, Activation::Gelu);
        let (y, h, w) = self.conv2.forward(WHAT, &y, h, w, Activation::Gelu);
        self.conv3.forward(WHAT, &y, h, w, Activation::None)
    }
}

struct Block {
    norm: LayerNorm,
    qkv: Linear,
    proj: Linear,
    /// `[heads, ws * ws, ws * ws]`: the bias of each pair of a window's tokens.
    biases: Vec<f32>,
    heads: usize,
    ws: usize,
    local: ConvBn,
    mlp_norm: LayerNorm,
    mlp: Mlp,
}

struct Stage {
    dim: usize,
    blocks: Vec<Block>,
    downsample: Option<PatchMerging>,
}

pub struct TinyViT {
    pub img_size: usize,
    pub out_chans: usize,
    stem0: ConvBn,
    stem2: ConvBn,
    mbconv: Vec<MbConv>,
    down0: PatchMerging,
    stages: Vec<Stage>,
    neck: Neck,
    grid: usize,
}

fn merge_stride(out: usize) -> usize {
    if matches!(out, 320 | 448 | 576) { 1 } else { 2 }
}

impl TinyViT {
    /// Loads the encoder from `w` (scoped to `image_encoder`).
    pub fn load(w: &Weights) -> Result<Self> {
        let Some(s0) = w.shape("patch_embed.seq.0.c.weight") else {
            bail!(
                "{}: no {} (not a TinyViT)",
                w.source(),
                w.key("patch_embed.seq.0.c.weight")
            );
        };
        let Some(s2) = w.shape("patch_embed.seq.2.c.weight") else {
            bail!("{}: no {}", w.source(), w.key("patch_embed.seq.2.c.weight"));
        };
        let (half, e0) = (s0[0], s2[0]);
        let layers = w.pp("layers");
        let count = |stage: usize| layers.pp(stage).count_blocks("blocks");
        let stem0 = ConvBn::load(&w.pp("patch_embed.seq.0"), 3, half, 3, 2, 1);
        let stem2 = ConvBn::load(&w.pp("patch_embed.seq.2"), half, e0, 3, 2, 1);
        let hidden0 = w
            .dim("layers.0.blocks.0.conv1.c.weight", 0)
            .unwrap_or(4 * e0);
        let mbconv = (0..count(0))
            .map(|i| {
                let b = layers.pp(0).pp("blocks").pp(i);
                MbConv {
                    conv1: ConvBn::load(&b.pp("conv1"), e0, hidden0, 1, 1, 1),
                    conv2: ConvBn::load(&b.pp("conv2"), hidden0, hidden0, 3, 1, hidden0),
                    conv3: ConvBn::load(&b.pp("conv3"), hidden0, e0, 1, 1, 1),
                }
            })
            .collect();
        let merging = |stage: usize, cin: usize| -> Result<(PatchMerging, usize)> {
            let d = layers.pp(stage).pp("downsample");
            let Some(s) = d.shape("conv1.c.weight") else {
                bail!("{}: no {}", w.source(), d.key("conv1.c.weight"));
            };
            let out = s[0];
            Ok((
                PatchMerging {
                    conv1: ConvBn::load(&d.pp("conv1"), cin, out, 1, 1, 1),
                    conv2: ConvBn::load(&d.pp("conv2"), out, out, 3, merge_stride(out), out),
                    conv3: ConvBn::load(&d.pp("conv3"), out, out, 1, 1, 1),
                },
                out,
            ))
        };
        let (down0, mut dim) = merging(0, e0)?;
        let mut res = TINY_VIT_INPUT / 4 / merge_stride(dim);
        let mut stages = Vec::new();
        for stage in 1..4 {
            let mut blocks = Vec::new();
            for i in 0..count(stage) {
                let b = layers.pp(stage).pp("blocks").pp(i);
                let Some(ab) = b.shape("attn.attention_biases") else {
                    bail!("{}: no {}", w.source(), b.key("attn.attention_biases"));
                };
                let (heads, ws) = (ab[0], (ab[1] as f64).sqrt().round() as usize);
                if heads == 0 || dim % heads != 0 || ws * ws != ab[1] {
                    bail!(
                        "{}: {} has shape {ab:?}; expected [heads, ws^2]",
                        w.source(),
                        b.key("attn.attention_biases")
                    );
                }
                let hidden = b.dim("mlp.fc1.weight", 0).unwrap_or(4 * dim);
                let lk = b.dim("local_conv.c.weight", 3).unwrap_or(3);
                blocks.push(Block {
                    norm: LayerNorm::load(&b.pp("attn.norm"), dim, 1e-5),
                    qkv: Linear::load(&b.pp("attn.qkv"), dim, 3 * dim),
                    proj: Linear::load(&b.pp("attn.proj"), dim, dim),
                    biases: pair_biases(&b.get("attn.attention_biases", ab), heads, ws),
                    heads,
                    ws,
                    local: ConvBn::load(&b.pp("local_conv"), dim, dim, lk, 1, dim),
                    mlp_norm: LayerNorm::load(&b.pp("mlp.norm"), dim, 1e-5),
                    mlp: Mlp::load(
                        &b.pp("mlp"),
                        &["fc1", "fc2"],
                        &[dim, hidden, dim],
                        Activation::Gelu,
                    ),
                });
            }
            let this_dim = dim;
            let downsample = if stage < 3 {
                let (m, out) = merging(stage, dim)?;
                dim = out;
                res /= merge_stride(out);
                Some(m)
            } else {
                None
            };
            stages.push(Stage {
                dim: this_dim,
                blocks,
                downsample,
            });
        }
        let neck = Neck::load(&w.pp("neck"), dim);
        w.finish("MobileSAM TinyViT image encoder")?;
        if res == 0 {
            bail!("{}: TinyViT downsamples below one pixel", w.source());
        }
        Ok(Self {
            img_size: TINY_VIT_INPUT,
            out_chans: neck.out_chans,
            stem0,
            stem2,
            mbconv,
            down0,
            stages,
            neck,
            grid: res,
        })
    }

    pub fn embedding_size(&self) -> usize {
        self.grid
    }

    /// `[out_chans, G, G]` embedding of a normalised `[3, 1024, 1024]` input.
    pub fn forward(&self, image: &[f32]) -> Result<Vec<f32>> {
        let s = self.img_size;
        if image.len() != 3 * s * s {
            bail!(
                "TinyViT input must be 3x{s}x{s}, got {} values",
                image.len()
            );
        }
        const STEM: &str = "patch embedding (two 3x3 convolutions, stride 2)";
        let (x, h, w) = self.stem0.forward(STEM, image, s, s, Activation::Gelu);
        let (mut x, mut h, mut w) = self.stem2.forward(STEM, &x, h, w, Activation::None);
        for m in &self.mbconv {
            let (y, _, _) =
                m.conv1
                    .forward("MBConv 1x1 expand (+ GELU)", &x, h, w, Activation::Gelu);
            let (y, _, _) =
                m.conv2
                    .forward("MBConv depthwise 3x3 (+ GELU)", &y, h, w, Activation::Gelu);
            let (mut y, _, _) = m
                .conv3
                .forward("MBConv 1x1 project", &y, h, w, Activation::None);
            let _t = scope("MBConv residual + GELU", 0.0);
            y.par_iter_mut().zip(&x).for_each(|(a, b)| *a += b);
            Activation::Gelu.apply(&mut y);
            x = y;
        }
        let (y, nh, nw) = self.down0.forward(&x, h, w);
        (h, w) = (nh, nw);
        let mut c = self.stages[0].dim;
        let mut t = {
            let _t = scope("layout changes", 0.0);
            transpose(&y, c, h * w)
        };
        for st in &self.stages {
            for b in &st.blocks {
                let a = {
                    // qkv and proj (4 d^2 per padded token), scores and values (2 ws^2 d)
                    let (d, ws) = (st.dim, b.ws);
                    let padded = h.div_ceil(ws) * ws * w.div_ceil(ws) * ws;
                    let flops = 2 * padded * (4 * d * d + 2 * ws * ws * d);
                    let _t = scope(
                        "window attention (LayerNorm, qkv, scores, softmax, values, proj)",
                        flops as f64,
                    );
                    attention_windows(b, &t, h, w, st.dim)
                };
                {
                    let _t = scope("residual adds", 0.0);
                    add_assign(&mut t, &a);
                }
                t = {
                    let k = &b.local.0.kernel;
                    let _t = scope(
                        "local depthwise conv 3x3",
                        (2 * k.k * k.k * h * w * st.dim) as f64,
                    );
                    k.depthwise_rows(&t, h, w, Activation::None)
                };
                let mut n = t.clone();
                {
                    let _t = scope("LayerNorm", 0.0);
                    b.mlp_norm.forward(&mut n);
                }
                let m = {
                    let hidden = b.mlp.layers[0].out;
                    let _t = scope("MLP (fc1, GELU, fc2)", (4 * h * w * st.dim * hidden) as f64);
                    b.mlp.forward(&n, h * w)
                };
                let _t = scope("residual adds", 0.0);
                add_assign(&mut t, &m);
            }
            if let Some(d) = &st.downsample {
                let img = {
                    let _t = scope("layout changes", 0.0);
                    transpose(&t, h * w, st.dim)
                };
                let (y, nh, nw) = d.forward(&img, h, w);
                (h, w) = (nh, nw);
                c = d.conv3.0.cout();
                let _t = scope("layout changes", 0.0);
                t = transpose(&y, c, h * w);
            }
        }
        if h != self.grid || w != self.grid {
            bail!(
                "TinyViT produced a {h}x{w} grid, expected {0}x{0}",
                self.grid
            );
        }
        let _t = scope("neck", 0.0);
        Ok(self.neck.forward(&t, h, w))
    }
}

/// The block's attention over the `h x w` grid in `ws x ws` windows, the grid padded (bottom /
/// right, no mask) to multiples of the window as the reference does. LayerNorm, `qkv` and
/// `proj` act on each token alone, so they run over the grid's tokens in one product each; a
/// padded token (zero in the reference, before the norm) normalises to the norm's bias, whose
/// `qkv` fills the padding.
fn attention_windows(b: &Block, t: &[f32], h: usize, w: usize, c: usize) -> Vec<f32> {
    let n = h * w;
    let x = b.norm.forward_of(t);
    let qkv = b.qkv.forward(&x, n);
    let fill =
        (!h.is_multiple_of(b.ws) || !w.is_multiple_of(b.ws)).then(|| b.qkv.forward(&b.norm.b, 1));
    let o = in_windows_padded(&qkv, h, w, 3 * c, c, b.ws, fill.as_deref(), |win| {
        window_attention(b, &win, c)
    });
    b.proj.forward(&o, n)
}

/// `attention_biases [heads, ws^2]` indexed by offset (`|dy| * ws + |dx|`) spread to every pair
/// of a window's tokens: `[heads, ws^2, ws^2]`, as the reference caches them in eval mode.
fn pair_biases(offsets: &[f32], heads: usize, ws: usize) -> Vec<f32> {
    let n = ws * ws;
    let mut out = Vec::with_capacity(heads * n * n);
    for h in 0..heads {
        for i in 0..n {
            let (iy, ix) = (i / ws, i % ws);
            out.extend(
                (0..n).map(|j| offsets[h * n + iy.abs_diff(j / ws) * ws + ix.abs_diff(j % ws)]),
            );
        }
    }
    out
}

/// Attention within one window of projected tokens `qkv [ws * ws, 3c]` (per-head interleaved
/// q|k|v): scaled scores plus the pair bias, softmax, values; before the projection.
fn window_attention(b: &Block, qkv: &[f32], c: usize) -> Vec<f32> {
    let n = b.ws * b.ws;
    let kd = c / b.heads;
    // per-head interleaved q | k | v
    let view = |which: usize| HeadView {
        data: qkv,
        rows: n,
        stride: 3 * c,
        base: which * kd,
        step: 3 * kd,
    };
    let pair_bias = |head: usize, row0: usize, _q: &[f32], s: &mut [f32]| {
        let bias = &b.biases[(head * n + row0) * n..][..s.len()];
        vectorized(
            #[inline(always)]
            || s.iter_mut().zip(bias).for_each(|(v, a)| *v += a),
        );
    };
    let hooks = Hooks {
        bias: Some(&pair_bias),
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
}

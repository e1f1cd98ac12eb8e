//! MobileSAM's image encoder, TinyViT (Wu et al. 2022) as distilled from SAM's ViT-H (Zhang et al.
//! 2023): a convolutional stem and MBConv stage at 1/4 resolution, patch-merging downsamples,
//! then three stages of windowed attention blocks (learned per-offset attention biases, a
//! depthwise "local" convolution, an MLP), and SAM's neck to a `[256, 64, 64]` embedding.
//! Keys `image_encoder.*` as in `mobile_sam.pt`; BatchNorm is folded into the convolutions at
//! load. Widths, depths, heads, windows and ratios are read from the weights; the downsample
//! stride rule (stride 1 into 320/448/576 channels) and the 1024 input are the reference's.

use super::neck::{Neck, in_windows};
use super::prompt_encoder::gelu;
use super::two_way_transformer::linear;
use crate::models::host::{
    Linear, columns, conv2d, layer_norm, matmul, matmul_nt, softmax_rows, transpose,
};
use crate::weights::{KeyCheck, NamedTensors};
use anyhow::{Result, bail};
use rayon::prelude::*;

/// The input side MobileSAM's TinyViT is built for (its reshapes are fixed to it).
pub const TINY_VIT_INPUT: usize = 1024;

/// Conv2d + BatchNorm (eps 1e-5), folded.
struct ConvBn {
    w: Vec<f32>,
    b: Vec<f32>,
    cin: usize,
    cout: usize,
    k: usize,
    stride: usize,
    groups: usize,
}

impl ConvBn {
    #[allow(clippy::too_many_arguments)]
    fn load(
        src: &NamedTensors,
        ck: &mut KeyCheck,
        p: &str,
        cin: usize,
        cout: usize,
        k: usize,
        stride: usize,
        groups: usize,
    ) -> Self {
        let mut v = |key: &str, shape: &[usize]| {
            ck.take(src, &format!("{p}.{key}"), shape)
                .map(|t| t.data.clone())
                .unwrap_or_else(|| vec![1.0; shape.iter().product()])
        };
        let mut w = v("c.weight", &[cout, cin / groups, k, k]);
        let gamma = v("bn.weight", &[cout]);
        let beta = v("bn.bias", &[cout]);
        let mean = v("bn.running_mean", &[cout]);
        let var = v("bn.running_var", &[cout]);
        let per = w.len() / cout;
        let mut b = vec![0.0f32; cout];
        for c in 0..cout {
            let s = gamma[c] / (var[c] + 1e-5).sqrt();
            w[c * per..(c + 1) * per].iter_mut().for_each(|x| *x *= s);
            b[c] = beta[c] - mean[c] * s;
        }
        Self {
            w,
            b,
            cin,
            cout,
            k,
            stride,
            groups,
        }
    }

    /// `[Cin, H, W]` -> `([Cout, Ho, Wo], Ho, Wo)`.
    fn forward(&self, x: &[f32], h: usize, w: usize) -> (Vec<f32>, usize, usize) {
        conv2d(
            x,
            self.cin,
            h,
            w,
            &self.w,
            Some(&self.b),
            self.cout,
            self.k,
            self.stride,
            self.k / 2,
            self.groups,
        )
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
        let (y, h, w) = self.conv1.forward(x, h, w);
        let (y, h, w) = self.conv2.forward(&gelu(y), h, w);
        let (y, h, w) = self.conv3.forward(&gelu(y), h, w);
        (y, h, w)
    }
}

struct Block {
    norm: (Vec<f32>, Vec<f32>),
    qkv: Linear,
    proj: Linear,
    /// `[heads, ws * ws]`, indexed by `|dy| * ws + |dx|`.
    biases: Vec<f32>,
    heads: usize,
    ws: usize,
    local: ConvBn,
    mlp_norm: (Vec<f32>, Vec<f32>),
    fc1: Linear,
    fc2: Linear,
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
    pub fn load(src: &NamedTensors, prefix: &str) -> Result<Self> {
        let shape = |k: &str| src.get(&format!("{prefix}{k}")).map(|t| t.shape.clone());
        let Some(s0) = shape("patch_embed.seq.0.c.weight") else {
            bail!(
                "{}: no {prefix}patch_embed.seq.0.c.weight (not a TinyViT)",
                src.source
            );
        };
        let Some(s2) = shape("patch_embed.seq.2.c.weight") else {
            bail!("{}: no {prefix}patch_embed.seq.2.c.weight", src.source);
        };
        let (half, e0) = (s0[0], s2[0]);
        let count = |stage: usize| src.count_blocks(&format!("{prefix}layers.{stage}.blocks."));
        let mut ck = KeyCheck::default();
        let p = |k: &str| format!("{prefix}{k}");
        let stem0 = ConvBn::load(src, &mut ck, &p("patch_embed.seq.0"), 3, half, 3, 2, 1);
        let stem2 = ConvBn::load(src, &mut ck, &p("patch_embed.seq.2"), half, e0, 3, 2, 1);
        let hidden0 = shape("layers.0.blocks.0.conv1.c.weight")
            .map(|s| s[0])
            .unwrap_or(4 * e0);
        let mbconv = (0..count(0))
            .map(|i| {
                let b = p(&format!("layers.0.blocks.{i}"));
                MbConv {
                    conv1: ConvBn::load(src, &mut ck, &format!("{b}.conv1"), e0, hidden0, 1, 1, 1),
                    conv2: ConvBn::load(
                        src,
                        &mut ck,
                        &format!("{b}.conv2"),
                        hidden0,
                        hidden0,
                        3,
                        1,
                        hidden0,
                    ),
                    conv3: ConvBn::load(src, &mut ck, &format!("{b}.conv3"), hidden0, e0, 1, 1, 1),
                }
            })
            .collect();
        let merging =
            |ck: &mut KeyCheck, stage: usize, cin: usize| -> Result<(PatchMerging, usize)> {
                let Some(s) = shape(&format!("layers.{stage}.downsample.conv1.c.weight")) else {
                    bail!(
                        "{}: no {prefix}layers.{stage}.downsample.conv1.c.weight",
                        src.source
                    );
                };
                let out = s[0];
                let d = p(&format!("layers.{stage}.downsample"));
                Ok((
                    PatchMerging {
                        conv1: ConvBn::load(src, ck, &format!("{d}.conv1"), cin, out, 1, 1, 1),
                        conv2: ConvBn::load(
                            src,
                            ck,
                            &format!("{d}.conv2"),
                            out,
                            out,
                            3,
                            merge_stride(out),
                            out,
                        ),
                        conv3: ConvBn::load(src, ck, &format!("{d}.conv3"), out, out, 1, 1, 1),
                    },
                    out,
                ))
            };
        let (down0, mut dim) = merging(&mut ck, 0, e0)?;
        let mut res = TINY_VIT_INPUT / 4 / merge_stride(dim);
        let mut stages = Vec::new();
        for stage in 1..4 {
            let n = count(stage);
            let mut blocks = Vec::new();
            for i in 0..n {
                let b = p(&format!("layers.{stage}.blocks.{i}"));
                let Some(ab) = shape(&format!("layers.{stage}.blocks.{i}.attn.attention_biases"))
                else {
                    bail!("{}: no {b}.attn.attention_biases", src.source);
                };
                let (heads, ws) = (ab[0], (ab[1] as f64).sqrt().round() as usize);
                if heads == 0 || dim % heads != 0 || ws * ws != ab[1] {
                    bail!(
                        "{}: {b}.attn.attention_biases has shape {ab:?}; expected [heads, ws^2]",
                        src.source
                    );
                }
                let hidden = shape(&format!("layers.{stage}.blocks.{i}.mlp.fc1.weight"))
                    .map(|s| s[0])
                    .unwrap_or(4 * dim);
                let lk = shape(&format!("layers.{stage}.blocks.{i}.local_conv.c.weight"))
                    .map(|s| s[3])
                    .unwrap_or(3);
                let mut v = |k: &str, n: usize| {
                    ck.take(src, &format!("{b}.{k}"), &[n])
                        .map(|t| t.data.clone())
                        .unwrap_or_else(|| vec![0.0; n])
                };
                let norm = (v("attn.norm.weight", dim), v("attn.norm.bias", dim));
                let mlp_norm = (v("mlp.norm.weight", dim), v("mlp.norm.bias", dim));
                let biases = ck
                    .take(src, &format!("{b}.attn.attention_biases"), &ab)
                    .map(|t| t.data.clone())
                    .unwrap_or_default();
                blocks.push(Block {
                    norm,
                    qkv: linear(src, &mut ck, &format!("{b}.attn.qkv"), dim, 3 * dim),
                    proj: linear(src, &mut ck, &format!("{b}.attn.proj"), dim, dim),
                    biases,
                    heads,
                    ws,
                    local: ConvBn::load(
                        src,
                        &mut ck,
                        &format!("{b}.local_conv"),
                        dim,
                        dim,
                        lk,
                        1,
                        dim,
                    ),
                    mlp_norm,
                    fc1: linear(src, &mut ck, &format!("{b}.mlp.fc1"), dim, hidden),
                    fc2: linear(src, &mut ck, &format!("{b}.mlp.fc2"), hidden, dim),
                });
            }
            let downsample = if stage < 3 {
                let (m, out) = merging(&mut ck, stage, dim)?;
                Some((m, out))
            } else {
                None
            };
            let this_dim = dim;
            let downsample = downsample.map(|(m, out)| {
                dim = out;
                res /= merge_stride(out);
                m
            });
            stages.push(Stage {
                dim: this_dim,
                blocks,
                downsample,
            });
        }
        let neck = Neck::load(src, &mut ck, prefix, dim);
        ck.finish(src, "MobileSAM TinyViT image encoder")?;
        if res == 0 {
            bail!("{}: TinyViT downsamples below one pixel", src.source);
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
        let (x, h, w) = self.stem0.forward(image, s, s);
        let (mut x, mut h, mut w) = self.stem2.forward(&gelu(x), h, w);
        for m in &self.mbconv {
            let (y, _, _) = m.conv1.forward(&x, h, w);
            let (y, _, _) = m.conv2.forward(&gelu(y), h, w);
            let (y, _, _) = m.conv3.forward(&gelu(y), h, w);
            let mut y = y;
            y.par_iter_mut().zip(&x).for_each(|(a, b)| *a += b);
            x = gelu(y);
        }
        let (y, nh, nw) = self.down0.forward(&x, h, w);
        (h, w) = (nh, nw);
        let mut c = self.stages[0].dim;
        // Tokens `[H * W, C]` from here on.
        let mut t = transpose(&y, c, h * w);
        for st in &self.stages {
            for b in &st.blocks {
                let a = attention_windows(b, &t, h, w, st.dim);
                t.iter_mut().zip(&a).for_each(|(v, a)| *v += a);
                let img = transpose(&t, h * w, st.dim);
                let (img, _, _) = b.local.forward(&img, h, w);
                t = transpose(&img, st.dim, h * w);
                let mut n = t.clone();
                layer_norm(&mut n, st.dim, &b.mlp_norm.0, &b.mlp_norm.1, 1e-5);
                let hid = gelu(b.fc1.forward(&n, h * w));
                let m = b.fc2.forward(&hid, h * w);
                t.iter_mut().zip(&m).for_each(|(v, a)| *v += a);
            }
            if let Some(d) = &st.downsample {
                let img = transpose(&t, h * w, st.dim);
                let (y, nh, nw) = d.forward(&img, h, w);
                (h, w) = (nh, nw);
                c = d.conv3.cout;
                t = transpose(&y, c, h * w);
            }
        }
        if h != self.grid || w != self.grid {
            bail!(
                "TinyViT produced a {h}x{w} grid, expected {0}x{0}",
                self.grid
            );
        }
        Ok(self.neck.forward(&t, h, w))
    }
}

/// Windowed attention over an `h x w` token grid padded (bottom/right, zero tokens before the
/// LayerNorm, no mask) to multiples of the window, as the reference.
fn attention_windows(b: &Block, t: &[f32], h: usize, w: usize, c: usize) -> Vec<f32> {
    in_windows(t, h, w, c, b.ws, |mut win| window_attention(b, &mut win, c))
}

/// Attention within one window (`ws * ws` tokens): LayerNorm, per-head interleaved q|k|v,
/// scaled scores plus the offset bias, softmax, projection.
fn window_attention(b: &Block, win: &mut [f32], c: usize) -> Vec<f32> {
    let ws = b.ws;
    let n = ws * ws;
    layer_norm(win, c, &b.norm.0, &b.norm.1, 1e-5);
    let qkv = b.qkv.forward(win, n);
    let kd = c / b.heads;
    let scale = 1.0 / (kd as f32).sqrt();
    let mut o = vec![0.0f32; n * c];
    for hh in 0..b.heads {
        // per-head interleaved q | k | v
        let part = |off: usize| columns(&qkv, n, 3 * c, hh * 3 * kd + off * kd, kd);
        let (q, k, v) = (part(0), part(1), part(2));
        let mut s = matmul_nt(&q, &k, n, kd, n);
        let bias = &b.biases[hh * n..(hh + 1) * n];
        for i in 0..n {
            let (iy, ix) = (i / ws, i % ws);
            let row = &mut s[i * n..(i + 1) * n];
            for (j, sv) in row.iter_mut().enumerate() {
                let (jy, jx) = (j / ws, j % ws);
                *sv = *sv * scale + bias[iy.abs_diff(jy) * ws + ix.abs_diff(jx)];
            }
        }
        softmax_rows(&mut s, n);
        let oh = matmul(&s, &v, n, n, kd);
        for r in 0..n {
            o[r * c + hh * kd..r * c + (hh + 1) * kd].copy_from_slice(&oh[r * kd..(r + 1) * kd]);
        }
    }
    b.proj.forward(&o, n)
}

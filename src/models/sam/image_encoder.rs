//! SAM's image encoder: a ViT (patch embedding, absolute positions, transformer blocks with
//! windowed or global attention and decomposed relative positions) and a convolutional neck to
//! the 256-channel image embedding. Keys `image_encoder.*` as in the official checkpoints; the
//! sizes (width, depth, heads, patch) are read from the weights. Host buffers, `[H, W, C]` tokens.

use super::neck::{Neck, in_windows};
use super::prompt_encoder::gelu;
use super::two_way_transformer::linear;
use crate::models::host::{Linear, columns, dot, layer_norm, matmul, matmul_nt, softmax_rows_seq};
use crate::weights::{KeyCheck, NamedTensors};
use anyhow::{Result, bail};

struct Block {
    norm1: (Vec<f32>, Vec<f32>),
    qkv: Linear,
    proj: Linear,
    rel_h: Vec<f32>,
    rel_w: Vec<f32>,
    norm2: (Vec<f32>, Vec<f32>),
    lin1: Linear,
    lin2: Linear,
    window: usize,
}

pub struct ImageEncoder {
    pub dim: usize,
    pub heads: usize,
    pub patch: usize,
    pub grid: usize,
    pub out_chans: usize,
    patch_w: Vec<f32>,
    patch_b: Vec<f32>,
    pos: Vec<f32>,
    blocks: Vec<Block>,
    neck: Neck,
}

impl ImageEncoder {
    /// Loads a SAM ViT with everything read from the weights: heads from the width of the
    /// relative-position tables (`[2 * size - 1, head_dim]`), and each block's window from its
    /// table's length (a table as long as the grid means global attention).
    pub fn load_auto(src: &NamedTensors, prefix: &str) -> Result<Self> {
        let Some(pw) = src.get(&format!("{prefix}patch_embed.proj.weight")) else {
            bail!("{}: no {prefix}patch_embed.proj.weight", src.source);
        };
        let dim = pw.shape[0];
        let Some(pos) = src.get(&format!("{prefix}pos_embed")) else {
            bail!(
                "{}: no {prefix}pos_embed (SAM ViTs use absolute positions)",
                src.source
            );
        };
        let grid = pos.shape.get(1).copied().unwrap_or(0);
        let mut window = 0;
        let mut global = Vec::new();
        let mut heads = 0;
        let depth = src.count_blocks(&format!("{prefix}blocks."));
        for i in 0..depth {
            let Some(rel) = src.get(&format!("{prefix}blocks.{i}.attn.rel_pos_h")) else {
                if i == 0 {
                    bail!(
                        "{}: no {prefix}blocks.0.attn.rel_pos_h (SAM ViTs use relative positions)",
                        src.source
                    );
                }
                continue; // reported as missing by the key check
            };
            if rel.shape.len() != 2 || rel.shape[1] == 0 || dim % rel.shape[1] != 0 {
                bail!(
                    "{}: {prefix}blocks.{i}.attn.rel_pos_h has shape {:?}; expected [2 * window - 1, head_dim]",
                    src.source,
                    rel.shape
                );
            }
            heads = dim / rel.shape[1];
            let size = rel.shape[0].div_ceil(2);
            if size == grid {
                global.push(i);
            } else {
                window = size;
            }
        }
        Self::load(src, prefix, heads, window.max(1), &global)
    }

    /// Indices of the blocks with global attention.
    pub fn global_blocks(&self) -> Vec<usize> {
        (0..self.blocks.len())
            .filter(|&i| self.blocks[i].window == 0)
            .collect()
    }

    pub fn blocks_len(&self) -> usize {
        self.blocks.len()
    }

    /// Window size of the windowed blocks (0 when every block is global).
    pub fn window(&self) -> usize {
        self.blocks.iter().map(|b| b.window).max().unwrap_or(0)
    }

    /// `heads` and `window` are architecture constants not stored in the weights (SAM: 12/16/16
    /// heads for ViT-B/L/H, window 14); `global` lists the blocks with global attention.
    pub fn load(
        src: &NamedTensors,
        prefix: &str,
        heads: usize,
        window: usize,
        global: &[usize],
    ) -> Result<Self> {
        let Some(pw) = src.get(&format!("{prefix}patch_embed.proj.weight")) else {
            bail!(
                "{}: no {prefix}patch_embed.proj.weight (not a SAM ViT checkpoint?)",
                src.source
            );
        };
        let (dim, patch) = (pw.shape[0], pw.shape[2]);
        let grid = src
            .get(&format!("{prefix}pos_embed"))
            .map(|t| t.shape[1])
            .unwrap_or(0);
        let depth = src.count_blocks(&format!("{prefix}blocks."));
        let mlp = src
            .get(&format!("{prefix}blocks.0.mlp.lin1.weight"))
            .map(|t| t.shape[0])
            .unwrap_or(4 * dim);
        let mut ck = KeyCheck::default();
        let v = |ck: &mut KeyCheck, key: &str, shape: &[usize]| {
            ck.take(src, key, shape)
                .map(|t| t.data.clone())
                .unwrap_or_else(|| vec![0.0; shape.iter().product()])
        };
        let hd = dim / heads;
        let blocks = (0..depth)
            .map(|i| {
                let p = format!("{prefix}blocks.{i}");
                let win = if global.contains(&i) { 0 } else { window };
                let size = if win == 0 { grid } else { win };
                Block {
                    norm1: (
                        v(&mut ck, &format!("{p}.norm1.weight"), &[dim]),
                        v(&mut ck, &format!("{p}.norm1.bias"), &[dim]),
                    ),
                    qkv: linear(src, &mut ck, &format!("{p}.attn.qkv"), dim, 3 * dim),
                    proj: linear(src, &mut ck, &format!("{p}.attn.proj"), dim, dim),
                    rel_h: v(&mut ck, &format!("{p}.attn.rel_pos_h"), &[2 * size - 1, hd]),
                    rel_w: v(&mut ck, &format!("{p}.attn.rel_pos_w"), &[2 * size - 1, hd]),
                    norm2: (
                        v(&mut ck, &format!("{p}.norm2.weight"), &[dim]),
                        v(&mut ck, &format!("{p}.norm2.bias"), &[dim]),
                    ),
                    lin1: linear(src, &mut ck, &format!("{p}.mlp.lin1"), dim, mlp),
                    lin2: linear(src, &mut ck, &format!("{p}.mlp.lin2"), mlp, dim),
                    window: win,
                }
            })
            .collect();
        let neck = Neck::load(src, &mut ck, prefix, dim);
        let enc = Self {
            dim,
            heads,
            patch,
            grid,
            out_chans: neck.out_chans,
            patch_w: v(
                &mut ck,
                &format!("{prefix}patch_embed.proj.weight"),
                &[dim, 3, patch, patch],
            ),
            patch_b: v(&mut ck, &format!("{prefix}patch_embed.proj.bias"), &[dim]),
            pos: v(
                &mut ck,
                &format!("{prefix}pos_embed"),
                &[1, grid, grid, dim],
            ),
            blocks,
            neck,
        };
        ck.finish(src, "SAM image encoder")?;
        Ok(enc)
    }

    /// The image embedding `[out_chans, grid, grid]` of a normalised, padded `[3, S, S]` image
    /// (S = grid * patch).
    pub fn forward(&self, image: &[f32]) -> Result<Vec<f32>> {
        let (g, p, c) = (self.grid, self.patch, self.dim);
        let s = g * p;
        if image.len() != 3 * s * s {
            bail!(
                "image encoder input must be 3x{s}x{s}, got {} values",
                image.len()
            );
        }
        // Patch embedding as a matrix product: patches [g*g, 3*p*p] @ W^T.
        let mut patches = vec![0.0f32; g * g * 3 * p * p];
        for gy in 0..g {
            for gx in 0..g {
                let row = &mut patches[(gy * g + gx) * 3 * p * p..(gy * g + gx + 1) * 3 * p * p];
                for ch in 0..3 {
                    for y in 0..p {
                        let src = &image[(ch * s + gy * p + y) * s + gx * p
                            ..(ch * s + gy * p + y) * s + gx * p + p];
                        row[(ch * p + y) * p..(ch * p + y) * p + p].copy_from_slice(src);
                    }
                }
            }
        }
        let mut x = matmul_nt(&patches, &self.patch_w, g * g, 3 * p * p, c);
        for (i, v) in x.iter_mut().enumerate() {
            *v += self.patch_b[i % c] + self.pos[i];
        }
        for b in &self.blocks {
            let mut h = x.clone();
            layer_norm(&mut h, c, &b.norm1.0, &b.norm1.1, 1e-6);
            let a = if b.window == 0 {
                self.attention(b, &h, g, g)
            } else {
                self.windowed(b, &h, g)
            };
            x.iter_mut().zip(&a).for_each(|(v, a)| *v += a);
            let mut h = x.clone();
            layer_norm(&mut h, c, &b.norm2.0, &b.norm2.1, 1e-6);
            let m = b.lin2.forward(&gelu(b.lin1.forward(&h, g * g)), g * g);
            x.iter_mut().zip(&m).for_each(|(v, a)| *v += a);
        }
        Ok(self.neck.forward(&x, g, g))
    }

    /// Attention over windows of `window x window` tokens (the grid zero-padded to a multiple).
    fn windowed(&self, b: &Block, x: &[f32], g: usize) -> Vec<f32> {
        in_windows(x, g, g, self.dim, b.window, |win| {
            self.attention(b, &win, b.window, b.window)
        })
    }

    /// Multi-head self-attention over an `h x w` token grid with decomposed relative positions.
    fn attention(&self, b: &Block, x: &[f32], h: usize, w: usize) -> Vec<f32> {
        let (c, heads) = (self.dim, self.heads);
        let hd = c / heads;
        let n = h * w;
        let qkv = b.qkv.forward(x, n); // [n, 3c]: q | k | v, each heads x hd
        let scale = 1.0 / (hd as f32).sqrt();
        let head = |hh: usize| -> Vec<f32> {
            let part = |which: usize| columns(&qkv, n, 3 * c, which * c + hh * hd, hd);
            let (q, k, v) = (part(0), part(1), part(2));
            let mut attn = matmul_nt(&q, &k, n, hd, n);
            // rel_h[qy, ky] = q(qy, qx) . Rh[qy - ky + h - 1]; rel_w likewise on x.
            let mut rh = vec![0.0f32; h];
            let mut rw = vec![0.0f32; w];
            for qy in 0..h {
                for qx in 0..w {
                    let qv = &q[(qy * w + qx) * hd..(qy * w + qx + 1) * hd];
                    for (ky, r) in rh.iter_mut().enumerate() {
                        *r = dot(qv, &b.rel_h[(qy + h - 1 - ky) * hd..(qy + h - ky) * hd]);
                    }
                    for (kx, r) in rw.iter_mut().enumerate() {
                        *r = dot(qv, &b.rel_w[(qx + w - 1 - kx) * hd..(qx + w - kx) * hd]);
                    }
                    let row = &mut attn[(qy * w + qx) * n..(qy * w + qx + 1) * n];
                    for ky in 0..h {
                        for kx in 0..w {
                            let a = &mut row[ky * w + kx];
                            *a = *a * scale + rh[ky] + rw[kx];
                        }
                    }
                }
            }
            softmax_rows_seq(&mut attn, n);
            matmul(&attn, &v, n, n, hd)
        };
        // Heads in parallel for global attention; windows are already spread over threads.
        let outs: Vec<Vec<f32>> = if n >= 1024 {
            use rayon::prelude::*;
            (0..heads).into_par_iter().map(head).collect()
        } else {
            (0..heads).map(head).collect()
        };
        let mut out = vec![0.0f32; n * c];
        for (hh, o) in outs.iter().enumerate() {
            for r in 0..n {
                out[r * c + hh * hd..r * c + (hh + 1) * hd]
                    .copy_from_slice(&o[r * hd..(r + 1) * hd]);
            }
        }
        b.proj.forward(&out, n)
    }
}

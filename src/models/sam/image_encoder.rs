//! SAM's image encoder: a ViT (patch embedding, absolute positions, transformer blocks with
//! windowed or global attention and decomposed relative positions) and a convolutional neck to
//! the 256-channel image embedding. Keys `image_encoder.*` as in the official checkpoints; the
//! sizes (width, depth, heads, patch) are read from the weights. Host buffers, `[H, W, C]` tokens.

use super::neck::{Neck, in_windows_padded};
use crate::nn::{LayerNorm, Linear, Mlp, Weights};
use crate::ops::Activation;
use crate::ops::attention::{HeadView, Hooks, attention};
use crate::ops::layout::dot;
use crate::ops::matmul::matmul_nt;
use crate::ops::profile::scope;
use crate::ops::simd::vectorized;
use anyhow::{Result, bail};

struct Block {
    norm1: LayerNorm,
    qkv: Linear,
    proj: Linear,
    rel_h: Vec<f32>,
    rel_w: Vec<f32>,
    norm2: LayerNorm,
    mlp: Mlp,
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
    /// Loads a SAM ViT (`w` scoped to `image_encoder`) with everything read from the weights:
    /// heads from the width of the relative-position tables (`[2 * size - 1, head_dim]`), and
    /// each block's window from its table's length (a table as long as the grid means global
    /// attention).
    pub fn load_auto(w: &Weights) -> Result<Self> {
        let Some(pw) = w.shape("patch_embed.proj.weight") else {
            bail!("{}: no {}", w.source(), w.key("patch_embed.proj.weight"));
        };
        let dim = pw[0];
        let Some(pos) = w.shape("pos_embed") else {
            bail!(
                "{}: no {} (SAM ViTs use absolute positions)",
                w.source(),
                w.key("pos_embed")
            );
        };
        let grid = pos.get(1).copied().unwrap_or(0);
        let mut window = 0;
        let mut global = Vec::new();
        let mut heads = 0;
        let depth = w.count_blocks("blocks");
        for i in 0..depth {
            let key = format!("blocks.{i}.attn.rel_pos_h");
            let Some(rel) = w.shape(&key) else {
                if i == 0 {
                    bail!(
                        "{}: no {} (SAM ViTs use relative positions)",
                        w.source(),
                        w.key(&key)
                    );
                }
                continue; // reported as missing by the key check
            };
            if rel.len() != 2 || rel[1] == 0 || dim % rel[1] != 0 {
                bail!(
                    "{}: {} has shape {rel:?}; expected [2 * window - 1, head_dim]",
                    w.source(),
                    w.key(&key)
                );
            }
            heads = dim / rel[1];
            let size = rel[0].div_ceil(2);
            if size == grid {
                global.push(i);
            } else {
                window = size;
            }
        }
        Self::load(w, heads, window.max(1), &global)
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
    pub fn load(w: &Weights, heads: usize, window: usize, global: &[usize]) -> Result<Self> {
        let Some(pw) = w.shape("patch_embed.proj.weight") else {
            bail!(
                "{}: no {} (not a SAM ViT checkpoint?)",
                w.source(),
                w.key("patch_embed.proj.weight")
            );
        };
        let (dim, patch) = (pw[0], pw[2]);
        let grid = w.dim("pos_embed", 1).unwrap_or(0);
        let depth = w.count_blocks("blocks");
        let mlp = w.dim("blocks.0.mlp.lin1.weight", 0).unwrap_or(4 * dim);
        let hd = dim / heads;
        let blocks = (0..depth)
            .map(|i| {
                let b = w.pp("blocks").pp(i);
                let win = if global.contains(&i) { 0 } else { window };
                let size = if win == 0 { grid } else { win };
                Block {
                    norm1: LayerNorm::load(&b.pp("norm1"), dim, 1e-6),
                    qkv: Linear::load(&b.pp("attn.qkv"), dim, 3 * dim),
                    proj: Linear::load(&b.pp("attn.proj"), dim, dim),
                    rel_h: b.get("attn.rel_pos_h", &[2 * size - 1, hd]),
                    rel_w: b.get("attn.rel_pos_w", &[2 * size - 1, hd]),
                    norm2: LayerNorm::load(&b.pp("norm2"), dim, 1e-6),
                    mlp: Mlp::load(
                        &b.pp("mlp"),
                        &["lin1", "lin2"],
                        &[dim, mlp, dim],
                        Activation::Gelu,
                    ),
                    window: win,
                }
            })
            .collect();
        let neck = Neck::load(&w.pp("neck"), dim);
        let enc = Self {
            dim,
            heads,
            patch,
            grid,
            out_chans: neck.out_chans,
            patch_w: w.get("patch_embed.proj.weight", &[dim, 3, patch, patch]),
            patch_b: w.get("patch_embed.proj.bias", &[dim]),
            pos: w.get("pos_embed", &[1, grid, grid, dim]),
            blocks,
            neck,
        };
        w.finish("SAM image encoder")?;
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
        let n = g * g;
        // Patch embedding as a matrix product: patches [g*g, 3*p*p] @ W^T.
        let patch_t = scope("patch embedding", 2.0 * (n * 3 * p * p * c) as f64);
        let mut patches = vec![0.0f32; n * 3 * p * p];
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
        let mut x = matmul_nt(&patches, &self.patch_w, n, 3 * p * p, c);
        for (i, v) in x.iter_mut().enumerate() {
            *v += self.patch_b[i % c] + self.pos[i];
        }
        drop(patch_t);
        // each block's two branches added to the tokens as their last products are written
        for b in &self.blocks {
            let h = self.normed(&b.norm1, &x);
            self.attention(b, &h, g, &mut x);
            let h = self.normed(&b.norm2, &x);
            self.mlp(&b.mlp, &h, n, &mut x);
        }
        let (o, k) = (self.out_chans, 2 * n * self.out_chans);
        let _t = scope("neck", (k * c + k * o * 9) as f64);
        Ok(self.neck.forward(&x, g, g))
    }

    /// A LayerNorm'd copy of the tokens.
    fn normed(&self, norm: &LayerNorm, x: &[f32]) -> Vec<f32> {
        let _t = scope("LayerNorm", 0.0);
        norm.forward_of(x)
    }

    /// The block's MLP, `out += lin2(GELU(lin1(x)))`, each product timed.
    fn mlp(&self, mlp: &Mlp, x: &[f32], rows: usize, out: &mut [f32]) {
        let [lin1, lin2] = &mlp.layers[..] else {
            return mlp.forward_add(x, rows, out);
        };
        let h = {
            let _t = scope(
                "MLP lin1 (+ bias, GELU)",
                2.0 * (rows * lin1.inp * lin1.out) as f64,
            );
            lin1.forward_act(x, rows, mlp.act)
        };
        let _t = scope(
            "MLP lin2 (+ bias, residual)",
            2.0 * (rows * lin2.inp * lin2.out) as f64,
        );
        lin2.forward_add(&h, rows, out)
    }

    /// The block's attention over the `g x g` grid: global, or within windows of `window x
    /// window` tokens (the grid padded to a multiple). The projections run on the grid's tokens
    /// in one product each; a padded token's `qkv` is the projection's bias, what the
    /// reference's zero padding projects to, and the padded outputs are dropped before `proj`,
    /// whose output is added to the tokens `out_tokens` (the residual) as it is written.
    fn attention(&self, b: &Block, x: &[f32], g: usize, out_tokens: &mut [f32]) {
        let (c, n, ws) = (self.dim, g * g, b.window);
        let qkv = {
            let _t = scope(
                if ws == 0 {
                    "global attention qkv (+ bias)"
                } else {
                    "window attention qkv (+ bias)"
                },
                (2 * n * c * 3 * c) as f64,
            );
            b.qkv.forward(x, n)
        };
        let out = if ws == 0 {
            let _t = scope(
                "global attention scores + rel. pos. + softmax + values",
                core_flops(n, g, g, c) as f64,
            );
            self.core(b, &qkv, g, g)
        } else {
            let windows = g.div_ceil(ws).pow(2);
            let _t = scope(
                "window attention scores + rel. pos. + softmax + values",
                (windows * core_flops(ws * ws, ws, ws, c)) as f64,
            );
            let fill = (!b.qkv.b.is_empty()).then_some(&b.qkv.b[..]);
            in_windows_padded(&qkv, g, g, 3 * c, c, ws, fill, |win| {
                self.core(b, &win, ws, ws)
            })
        };
        let _t = scope(
            if ws == 0 {
                "global attention proj (+ bias, residual)"
            } else {
                "window attention proj (+ bias, residual)"
            },
            (2 * n * c * c) as f64,
        );
        b.proj.forward_add(&out, n, out_tokens)
    }

    /// Multi-head self-attention of projected tokens `qkv [h * w, 3c]` over an `h x w` grid,
    /// with decomposed relative positions: `rel_h[q, ky] = q . Rh[qy - ky + h - 1]` and `rel_w`
    /// likewise on x, added to the scores. Returns `[h * w, c]`, before the output projection.
    fn core(&self, b: &Block, qkv: &[f32], h: usize, w: usize) -> Vec<f32> {
        let (c, heads) = (self.dim, self.heads);
        let hd = c / heads;
        let n = h * w;
        let view = |which: usize| HeadView {
            data: qkv,
            rows: n,
            stride: 3 * c,
            base: which * c,
            step: hd,
        };
        // Rows `row0..` of the scores: query `row0 + i` sits at (qy, qx) of the grid. The dots
        // run in the wide-vector dispatch too (3 of the 12 ms per windowed layer).
        let rel_pos = |_head: usize, row0: usize, q: &[f32], attn: &mut [f32]| {
            vectorized(
                #[inline(always)]
                || {
                    let mut rh = vec![0.0f32; h];
                    let mut rw = vec![0.0f32; w];
                    for (i, qv) in q.chunks_exact(hd).enumerate() {
                        let (qy, qx) = ((row0 + i) / w, (row0 + i) % w);
                        for (ky, r) in rh.iter_mut().enumerate() {
                            *r = dot(qv, &b.rel_h[(qy + h - 1 - ky) * hd..(qy + h - ky) * hd]);
                        }
                        for (kx, r) in rw.iter_mut().enumerate() {
                            *r = dot(qv, &b.rel_w[(qx + w - 1 - kx) * hd..(qx + w - kx) * hd]);
                        }
                        let row = &mut attn[i * n..(i + 1) * n];
                        for (line, &a) in row.chunks_exact_mut(w).zip(&rh) {
                            for (x, &b) in line.iter_mut().zip(&rw) {
                                *x += a + b;
                            }
                        }
                    }
                },
            )
        };
        let hooks = Hooks {
            bias: Some(&rel_pos),
            precision: b.qkv.precision(),
            ..Hooks::default()
        };
        attention(
            view(0),
            view(1),
            view(2),
            heads,
            hd,
            1.0 / (hd as f32).sqrt(),
            hooks,
        )
    }
}

/// Floating-point operations of attention's core over an `h x w` grid of `n` tokens of width
/// `c`: the scores and the weighted values, and the decomposed relative positions.
fn core_flops(n: usize, h: usize, w: usize, c: usize) -> usize {
    4 * n * n * c + 2 * n * (h + w) * c
}

//! Hiera (Ryali et al. 2023), SAM 2's image trunk: a 7x7 stride-4 patch embedding, a
//! background position embedding resized bicubically to the grid plus a window embedding
//! tiled over it, then four stages of multi-scale blocks. The first block of stages 2-4 pools
//! its queries 2x2 (and its residual, through a linear projection, the same way) and doubles
//! the width and the heads; window sizes lag by one block, so that block still partitions with
//! the previous stage's window. Windows are zero-padded after the norm and attended without a
//! mask (padded positions are keys with the projection's bias, as in the reference); some
//! blocks attend globally. Positions are rows `[H * W, C]` (channels last, as the reference's
//! `B, H, W, C`). Keys `image_encoder.trunk.*`.

use crate::nn::{Conv2d, ConvSpec, LayerNorm, Linear, Mlp, Weights};
use crate::ops::Activation;
use crate::ops::attention::{HeadView, Hooks, attention};
use crate::ops::layout::transpose;
use crate::ops::resize::bicubic;
use anyhow::{Result, bail};
use rayon::prelude::*;

/// The trunk's shape: what the keys tell (widths, blocks per stage, embedding sizes) and what
/// only the official configs do (heads, windows, global blocks), looked up by stage layout.
#[derive(Clone, Debug, PartialEq)]
pub struct HieraConfig {
    /// `tiny`, `small`, `base_plus` or `large`.
    pub size: &'static str,
    pub embed_dim: usize,
    pub num_heads: usize,
    pub stages: Vec<usize>,
    pub global_att_blocks: Vec<usize>,
    pub window_spec: Vec<usize>,
}

/// An official trunk: what its keys cannot tell.
struct Official {
    size: &'static str,
    stages: [usize; 4],
    heads: usize,
    global: [usize; 3],
    windows: [usize; 4],
}

/// The official configs (`configs/sam2{,.1}/sam2{,.1}_hiera_{t,s,b+,l}.yaml`; 2.0 and 2.1 agree).
const OFFICIAL: [Official; 4] = [
    Official {
        size: "tiny",
        stages: [1, 2, 7, 2],
        heads: 1,
        global: [5, 7, 9],
        windows: [8, 4, 14, 7],
    },
    Official {
        size: "small",
        stages: [1, 2, 11, 2],
        heads: 1,
        global: [7, 10, 13],
        windows: [8, 4, 14, 7],
    },
    Official {
        size: "base_plus",
        stages: [2, 3, 16, 3],
        heads: 2,
        global: [12, 16, 20],
        windows: [8, 4, 14, 7],
    },
    Official {
        size: "large",
        stages: [2, 6, 36, 4],
        heads: 2,
        global: [23, 33, 43],
        windows: [8, 4, 16, 8],
    },
];

impl HieraConfig {
    /// Reads the widths and the stage layout from the keys under `w` (the trunk) and looks up
    /// the rest; a layout no official model has is an error naming it.
    pub fn detect(w: &Weights) -> Result<Self> {
        let Some(&[embed_dim, 3, 7, 7]) = w.shape("patch_embed.proj.weight") else {
            bail!(
                "{}: no {} [C, 3, 7, 7] (not a SAM 2 Hiera trunk)",
                w.source(),
                w.key("patch_embed.proj.weight")
            );
        };
        let depth = w.count_blocks("blocks");
        // The first block of stages 2-4 widens, so it alone has a residual projection.
        let starts: Vec<usize> = (0..depth)
            .filter(|&i| w.contains(&format!("blocks.{i}.proj.weight")))
            .collect();
        let mut bounds = vec![0];
        bounds.extend(&starts);
        bounds.push(depth);
        let stages: Vec<usize> = bounds.windows(2).map(|p| p[1] - p[0]).collect();
        let Some(o) = OFFICIAL
            .iter()
            .find(|o| o.stages.as_slice() == stages.as_slice())
        else {
            bail!(
                "{}: a Hiera trunk with {stages:?} blocks per stage is none of the official SAM 2 \
                 models (tiny [1, 2, 7, 2], small [1, 2, 11, 2], base_plus [2, 3, 16, 3], large [2, 6, 36, 4])",
                w.source()
            );
        };
        Ok(Self {
            size: o.size,
            embed_dim,
            num_heads: o.heads,
            stages,
            global_att_blocks: o.global.to_vec(),
            window_spec: o.windows.to_vec(),
        })
    }

    /// Index of the last block of each stage.
    pub fn stage_ends(&self) -> Vec<usize> {
        self.stages
            .iter()
            .scan(0, |acc, &n| {
                *acc += n;
                Some(*acc - 1)
            })
            .collect()
    }

    /// Width of each stage's output.
    pub fn stage_dims(&self) -> Vec<usize> {
        (0..self.stages.len())
            .map(|i| self.embed_dim << i)
            .collect()
    }
}

/// Rows per block of the MLP.
const MLP_ROWS: usize = 1024;

/// One multi-scale block: pre-norm windowed attention (pooling its queries at a stage change)
/// and a GELU MLP, both residual.
struct Block {
    dim: usize,
    dim_out: usize,
    heads: usize,
    norm1: LayerNorm,
    qkv: Linear,
    attn_proj: Linear,
    norm2: LayerNorm,
    mlp: Mlp,
    /// The residual's projection to the new width (stage changes only).
    proj: Option<Linear>,
    q_pool: bool,
    /// 0 = global attention.
    window: usize,
}

/// 2x2 max pooling (floor) of rows `[h * w, c]`: `nn.MaxPool2d(2, 2)` on the reference's
/// `B, C, H, W` view.
fn pool_rows(x: &[f32], h: usize, w: usize, c: usize) -> Vec<f32> {
    let (oh, ow) = (h / 2, w / 2);
    let row = |y: usize, xx: usize| &x[(y * w + xx) * c..][..c];
    let mut out = vec![0.0f32; oh * ow * c];
    for oy in 0..oh {
        for ox in 0..ow {
            let o = &mut out[(oy * ow + ox) * c..][..c];
            o.copy_from_slice(row(2 * oy, 2 * ox));
            for (dy, dx) in [(0, 1), (1, 0), (1, 1)] {
                o.iter_mut()
                    .zip(row(2 * oy + dy, 2 * ox + dx))
                    .for_each(|(a, &b)| *a = a.max(b));
            }
        }
    }
    out
}

impl Block {
    fn load(
        w: &Weights,
        dim: usize,
        dim_out: usize,
        heads: usize,
        q_pool: bool,
        window: usize,
    ) -> Self {
        Self {
            dim,
            dim_out,
            heads,
            norm1: LayerNorm::load(&w.pp("norm1"), dim, 1e-6),
            qkv: Linear::load(&w.pp("attn.qkv"), dim, 3 * dim_out),
            attn_proj: Linear::load(&w.pp("attn.proj"), dim_out, dim_out),
            norm2: LayerNorm::load(&w.pp("norm2"), dim_out, 1e-6),
            mlp: Mlp::load_numbered(
                &w.pp("mlp"),
                &[dim_out, 4 * dim_out, dim_out],
                Activation::Gelu,
            ),
            proj: (dim != dim_out).then(|| Linear::load(&w.pp("proj"), dim, dim_out)),
            q_pool,
            window,
        }
    }

    /// Rows `[h * w, dim]` -> rows `[h' * w', dim_out]` (`h' = h / 2` after a query pool):
    /// `x + attn(norm1(x))` (the residual projected and pooled at a stage change), then
    /// `x + mlp(norm2(x))`. Windowed blocks run in bands one window high, each band from the
    /// norm to the residual on one thread with its values in cache (windows never cross a
    /// band); global blocks run whole, the threads inside the attention.
    fn forward(&self, x: Vec<f32>, h: usize, w: usize) -> (Vec<f32>, usize, usize) {
        let (cin, c) = (self.dim, self.dim_out);
        let (oh, ow) = if self.q_pool { (h / 2, w / 2) } else { (h, w) };
        // Bands when there are enough to keep every thread busy; else the whole grid at once,
        // its windows (or the global attention) spread over the threads.
        let band = if self.window > 0 && h.div_ceil(self.window) >= 4 * rayon::current_num_threads()
        {
            self.window
        } else {
            h
        };
        let oband = if self.q_pool { band / 2 } else { band };
        let mut y = vec![0.0f32; oh * ow * c];
        let step = |b: usize, yb: &mut [f32]| {
            let (y0, y1) = (b * band, ((b + 1) * band).min(h));
            let rows = y1 - y0;
            let xb = &x[y0 * w * cin..y1 * w * cin];
            let xn = self.norm1.forward_of(xb);
            let shortcut = match &self.proj {
                Some(p) => {
                    let s = p.forward(&xn, rows * w);
                    if self.q_pool {
                        pool_rows(&s, rows, w, c)
                    } else {
                        s
                    }
                }
                None => xb.to_vec(),
            };
            let qkv = self.qkv.forward(&xn, rows * w);
            drop(xn);
            let orows = yb.len() / (ow * c);
            let attn = self.windowed_attention(&qkv, rows, w, orows, ow);
            drop(qkv);
            let o = self.attn_proj.forward(&attn, orows * ow);
            yb.iter_mut()
                .zip(o.iter().zip(&shortcut))
                .for_each(|(d, (a, s))| *d = a + s);
        };
        if band < h && oband > 0 {
            y.par_chunks_mut(oband * ow * c)
                .enumerate()
                .for_each(|(b, yb)| step(b, yb));
        } else {
            step(0, &mut y);
        }
        drop(x);
        // The MLP in blocks of rows, each block's hidden activations staying in cache.
        y.par_chunks_mut(MLP_ROWS * c).for_each(|blk| {
            let rows = blk.len() / c;
            let t = self.norm2.forward_of(blk);
            self.mlp.forward_add(&t, rows, blk);
        });
        (y, oh, ow)
    }

    /// Attention within windows of the qkv rows (`[h * w, 3 * dim_out]`), windows padded with
    /// the projection of zeros (the bias); queries pooled 2x2 per window when `q_pool`. Returns
    /// rows `[oh * ow, dim_out]` with the padding dropped.
    fn windowed_attention(
        &self,
        qkv: &[f32],
        h: usize,
        w: usize,
        oh: usize,
        ow: usize,
    ) -> Vec<f32> {
        let c = self.dim_out;
        let hd = c / self.heads;
        let (wh, ww) = if self.window > 0 {
            (self.window, self.window)
        } else {
            (h, w)
        };
        let (ny, nx) = (h.div_ceil(wh), w.div_ceil(ww));
        let (owh, oww) = if self.q_pool {
            (wh / 2, ww / 2)
        } else {
            (wh, ww)
        };
        let bias = &self.qkv.b;
        let one_window = |win: usize| {
            let (wy, wx) = (win / nx, win % nx);
            let mut buf = vec![0.0f32; wh * ww * 3 * c];
            for iy in 0..wh {
                for ix in 0..ww {
                    let (y, xx) = (wy * wh + iy, wx * ww + ix);
                    let dst = &mut buf[(iy * ww + ix) * 3 * c..][..3 * c];
                    if y < h && xx < w {
                        dst.copy_from_slice(&qkv[(y * w + xx) * 3 * c..][..3 * c]);
                    } else {
                        dst.copy_from_slice(bias);
                    }
                }
            }
            let kv = |base: usize| HeadView {
                data: &buf,
                rows: wh * ww,
                stride: 3 * c,
                base,
                step: hd,
            };
            let pooled;
            let q = if self.q_pool {
                let qs: Vec<f32> = buf.chunks(3 * c).flat_map(|r| &r[..c]).copied().collect();
                pooled = pool_rows(&qs, wh, ww, c);
                HeadView::packed(&pooled, owh * oww, hd)
            } else {
                kv(0)
            };
            attention(
                q,
                kv(c),
                kv(2 * c),
                self.heads,
                hd,
                1.0 / (hd as f32).sqrt(),
                Hooks {
                    precision: self.qkv.precision(),
                    ..Hooks::default()
                },
            )
        };
        // Many windows: one per task; a few large ones: one at a time, threads inside.
        let per_window: Vec<Vec<f32>> = if ny * nx >= rayon::current_num_threads() * 4 {
            (0..ny * nx).into_par_iter().map(one_window).collect()
        } else {
            (0..ny * nx).map(one_window).collect()
        };
        let mut out = vec![0.0f32; oh * ow * c];
        for (win, o) in per_window.iter().enumerate() {
            let (wy, wx) = (win / nx, win % nx);
            for iy in 0..owh {
                let y = wy * owh + iy;
                if y >= oh {
                    break;
                }
                for ix in 0..oww {
                    let xx = wx * oww + ix;
                    if xx < ow {
                        out[(y * ow + xx) * c..][..c]
                            .copy_from_slice(&o[(iy * oww + ix) * c..][..c]);
                    }
                }
            }
        }
        out
    }
}

type PosCache = std::sync::Mutex<Option<((usize, usize), std::sync::Arc<Vec<f32>>)>>;

pub struct Hiera {
    pub config: HieraConfig,
    patch_embed: Conv2d,
    /// `[C, bh, bw]` background and `[C, ws, ws]` window position embeddings.
    pos_embed: (Vec<f32>, usize, usize),
    pos_embed_window: (Vec<f32>, usize),
    blocks: Vec<Block>,
    /// The summed position embedding as rows, per grid size.
    pos_cache: PosCache,
}

/// One stage's output: rows `[h * w, c]`.
pub struct StageOutput {
    pub rows: Vec<f32>,
    pub h: usize,
    pub w: usize,
    pub c: usize,
}

impl Hiera {
    /// Loads the trunk under `w` (`image_encoder.trunk`).
    pub fn load(w: &Weights) -> Result<Self> {
        let config = HieraConfig::detect(w)?;
        let c0 = config.embed_dim;
        let Some(&[1, _, bh, bw]) = w.shape("pos_embed") else {
            bail!("{}: no {} [1, C, H, W]", w.source(), w.key("pos_embed"));
        };
        let ws0 = w
            .dim("pos_embed_window", 2)
            .unwrap_or(config.window_spec[0]);
        let ends = config.stage_ends();
        let q_pool_blocks: Vec<usize> = ends[..ends.len() - 1].iter().map(|e| e + 1).collect();
        let (mut dim, mut heads, mut stage) = (c0, config.num_heads, 0);
        let mut blocks = Vec::new();
        for i in 0..config.stages.iter().sum() {
            // The window lags by one block: read before the stage advances.
            let mut window = config.window_spec[stage];
            if config.global_att_blocks.contains(&i) {
                window = 0;
            }
            let mut dim_out = dim;
            if i > 0 && ends.contains(&(i - 1)) {
                dim_out = dim * 2;
                heads *= 2;
                stage += 1;
            }
            let q_pool = q_pool_blocks.contains(&i);
            if q_pool && window == 0 {
                bail!(
                    "{}: block {i} pools its queries under global attention, which the reference does not support",
                    w.source()
                );
            }
            blocks.push(Block::load(
                &w.pp("blocks").pp(i),
                dim,
                dim_out,
                heads,
                q_pool,
                window,
            ));
            dim = dim_out;
        }
        Ok(Self {
            patch_embed: Conv2d::load(
                &w.pp("patch_embed.proj"),
                ConvSpec::same(3, c0, 7).stride(4).pad(3),
            ),
            pos_embed: (w.get("pos_embed", &[1, c0, bh, bw]), bh, bw),
            pos_embed_window: (w.get("pos_embed_window", &[1, c0, ws0, ws0]), ws0),
            blocks,
            config,
            pos_cache: Default::default(),
        })
    }

    /// The position embedding of an `h x w` grid as rows: the background embedding resized
    /// bicubically plus the window embedding tiled (`_get_pos_embed`).
    fn pos_rows(&self, h: usize, w: usize) -> Result<std::sync::Arc<Vec<f32>>> {
        let mut slot = self.pos_cache.lock().unwrap_or_else(|p| p.into_inner());
        if let Some((hw, p)) = slot.as_ref()
            && *hw == (h, w)
        {
            return Ok(p.clone());
        }
        let c = self.config.embed_dim;
        let (bg, bh, bw) = &self.pos_embed;
        let (win, ws) = &self.pos_embed_window;
        if !h.is_multiple_of(*ws) || !w.is_multiple_of(*ws) {
            bail!(
                "a {h}x{w} patch grid does not tile with the {ws}x{ws} window position embedding"
            );
        }
        let mut pe = bicubic(bg, c, (*bh, *bw), (h, w));
        for ch in 0..c {
            for y in 0..h {
                let wrow = &win[(ch * ws + y % ws) * ws..][..*ws];
                let row = &mut pe[(ch * h + y) * w..][..w];
                row.iter_mut()
                    .enumerate()
                    .for_each(|(x, v)| *v += wrow[x % ws]);
            }
        }
        let p = std::sync::Arc::new(transpose(&pe, c, h * w));
        *slot = Some(((h, w), p.clone()));
        Ok(p)
    }

    /// A normalised `[3, S, S]` image -> the output of each stage, high resolution first.
    pub fn forward(&self, image: &[f32], size: usize) -> Result<Vec<StageOutput>> {
        if image.len() != 3 * size * size {
            bail!("Hiera: the input must be 3x{size}x{size}");
        }
        let (x, h, w) = self
            .patch_embed
            .forward(image, size, size, Activation::None);
        let c = self.config.embed_dim;
        let mut x = transpose(&x, c, h * w);
        let pe = self.pos_rows(h, w)?;
        x.iter_mut().zip(pe.iter()).for_each(|(a, b)| *a += b);
        let ends = self.config.stage_ends();
        let (mut h, mut w) = (h, w);
        let mut outs = Vec::new();
        for (i, b) in self.blocks.iter().enumerate() {
            (x, h, w) = b.forward(x, h, w);
            if ends.contains(&i) {
                outs.push(StageOutput {
                    rows: x.clone(),
                    h,
                    w,
                    c: b.dim_out,
                });
            }
        }
        Ok(outs)
    }
}

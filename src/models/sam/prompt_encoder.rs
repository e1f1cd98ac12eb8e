//! SAM's prompt encoder: points and box corners become sparse embeddings (a random-Fourier
//! positional encoding of the pixel-centre coordinates plus a learned embedding per kind), a
//! low-resolution mask becomes a dense embedding through two stride-2 convolutions with
//! LayerNorm2d and GELU. Computed on the host (a handful of vectors and one small image).
//! Keys as in the official checkpoints: `prompt_encoder.pe_layer.positional_encoding_gaussian_matrix`,
//! `prompt_encoder.point_embeddings.{0..3}.weight`, `prompt_encoder.not_a_point_embed.weight`,
//! `prompt_encoder.no_mask_embed.weight`, `prompt_encoder.mask_downscaling.{0,1,3,4,6}.*`.

use crate::nn::{Conv2d, ConvSpec, LayerNorm2d, Weights};
use crate::ops::Activation;
use anyhow::{Result, bail};

/// A point prompt: pixel coordinates in the model's input frame and its label.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct PointPrompt {
    pub x: f64,
    pub y: f64,
    /// 1 foreground, 0 background, -1 padding ("not a point").
    pub label: i32,
}

pub struct PromptEncoder {
    pub embed_dim: usize,
    /// (H, W) of the image embedding.
    pub embedding_size: (usize, usize),
    /// (H, W) of the padded model input (1024 x 1024 for SAM).
    pub input_size: (usize, usize),
    /// `[2, embed_dim / 2]`.
    gaussian: Vec<f32>,
    point_embeddings: [Vec<f32>; 4],
    not_a_point: Vec<f32>,
    no_mask: Vec<f32>,
    down: (Conv2d, LayerNorm2d, Conv2d, LayerNorm2d, Conv2d),
}

impl PromptEncoder {
    /// Loads the prompt encoder from `w` (scoped to `prompt_encoder`); the sizes come from the
    /// weights and the given geometry.
    pub fn load(
        w: &Weights,
        embedding_size: (usize, usize),
        input_size: (usize, usize),
    ) -> Result<Self> {
        let gkey = "pe_layer.positional_encoding_gaussian_matrix";
        let Some(gshape) = w.shape(gkey) else {
            bail!("{}: no {} (not a SAM checkpoint?)", w.source(), w.key(gkey))
        };
        if gshape.len() != 2 || gshape[0] != 2 {
            bail!(
                "{}: positional encoding matrix has shape {gshape:?}, expected [2, C/2]",
                w.source()
            );
        }
        let c = 2 * gshape[1];
        let Some(m) = w.dim("mask_downscaling.3.weight", 0) else {
            bail!("{}: no {}", w.source(), w.key("mask_downscaling.3.weight"));
        };
        let d = w.pp("mask_downscaling");
        // kernel = stride (2x2 stride 2, then 1x1), no padding
        let conv = |i: usize, cin: usize, cout: usize, k: usize| {
            Conv2d::load(&d.pp(i), ConvSpec::same(cin, cout, k).stride(k).pad(0))
        };
        let down = (
            conv(0, 1, m / 4, 2),
            LayerNorm2d::load(&d.pp(1), m / 4, 1e-6),
            conv(3, m / 4, m, 2),
            LayerNorm2d::load(&d.pp(4), m, 1e-6),
            conv(6, m, c, 1),
        );
        let point_embeddings: [Vec<f32>; 4] =
            std::array::from_fn(|i| w.pp("point_embeddings").pp(i).get("weight", &[1, c]));
        let enc = Self {
            embed_dim: c,
            embedding_size,
            input_size,
            gaussian: w.get(gkey, &[2, c / 2]),
            point_embeddings,
            not_a_point: w.get("not_a_point_embed.weight", &[1, c]),
            no_mask: w.get("no_mask_embed.weight", &[1, c]),
            down,
        };
        w.finish("SAM prompt encoder")?;
        Ok(enc)
    }

    /// Random-Fourier encoding of normalised coordinates in [0, 1]^2: `[sin(2 pi (2c - 1) G), cos(...)]`.
    fn pe_encoding(&self, x: f32, y: f32) -> Vec<f32> {
        let half = self.embed_dim / 2;
        let (x, y) = (2.0 * x - 1.0, 2.0 * y - 1.0);
        let mut out = vec![0.0f32; self.embed_dim];
        for j in 0..half {
            let v =
                (x * self.gaussian[j] + y * self.gaussian[half + j]) * (2.0 * std::f32::consts::PI);
            out[j] = v.sin();
            out[half + j] = v.cos();
        }
        out
    }

    /// The learned embedding used as the dense prompt when there is no mask, `[C]`.
    pub fn no_mask_embed(&self) -> &[f32] {
        &self.no_mask
    }

    /// The dense positional encoding of the image-embedding grid, `[C, H, W]`.
    pub fn dense_pe(&self) -> Vec<f32> {
        let (h, w) = self.embedding_size;
        let c = self.embed_dim;
        let mut out = vec![0.0f32; c * h * w];
        for yy in 0..h {
            for xx in 0..w {
                let e =
                    self.pe_encoding((xx as f32 + 0.5) / w as f32, (yy as f32 + 0.5) / h as f32);
                for k in 0..c {
                    out[(k * h + yy) * w + xx] = e[k];
                }
            }
        }
        out
    }

    /// Coordinates arrive in f64 (the automatic generator's points stay f64 in the reference
    /// until this division; the predictor's are f32 values) and are rounded to f32 here.
    fn coords_pe(&self, x: f64, y: f64) -> Vec<f32> {
        self.pe_encoding(
            ((x + 0.5) / self.input_size.1 as f64) as f32,
            ((y + 0.5) / self.input_size.0 as f64) as f32,
        )
    }

    /// Sparse embeddings `[N, C]` of one prompt set: the points (with a padding point when there
    /// is no box, as the reference does), then the two corners of the box.
    pub fn sparse(&self, points: &[PointPrompt], bbox: Option<[f64; 4]>) -> Result<Vec<Vec<f32>>> {
        if let Some(l) = points.iter().map(|p| p.label).find(|&l| l != 0 && l != 1) {
            bail!("point label {l}: labels are 1 (foreground) or 0 (background)");
        }
        let mut pts: Vec<PointPrompt> = points.to_vec();
        if let Some([x0, y0, x1, y1]) = bbox {
            pts.push(PointPrompt {
                x: x0,
                y: y0,
                label: 2,
            });
            pts.push(PointPrompt {
                x: x1,
                y: y1,
                label: 3,
            });
        }
        self.sparse_labelled(&pts, !points.is_empty() && bbox.is_none())
    }

    /// Sparse embeddings of labelled points, as `_embed_points`: labels 0 / 1 background /
    /// foreground, 2 / 3 the top-left / bottom-right box corners, -1 padding; `pad` appends the
    /// padding point (SAM 2's predictor always does, with its box corners placed first).
    pub fn sparse_labelled(&self, points: &[PointPrompt], pad: bool) -> Result<Vec<Vec<f32>>> {
        let mut out = Vec::with_capacity(points.len() + pad as usize);
        let padding = PointPrompt {
            // (0, 0) before the +0.5 shift; its encoding is replaced.
            x: -0.5,
            y: -0.5,
            label: -1,
        };
        for p in points.iter().chain(pad.then_some(&padding)) {
            let mut e = self.coords_pe(p.x, p.y);
            let add: &[f32] = match p.label {
                -1 => {
                    e.iter_mut().for_each(|v| *v = 0.0);
                    &self.not_a_point
                }
                l @ 0..=3 => &self.point_embeddings[l as usize],
                l => bail!(
                    "point label {l}: labels are 1 (foreground), 0 (background), 2 / 3 (box corners)"
                ),
            };
            e.iter_mut().zip(add).for_each(|(v, a)| *v += a);
            out.push(e);
        }
        Ok(out)
    }

    /// Dense embedding `[C, H, W]`: of a low-resolution mask (`[4H, 4W]` logits) or, without
    /// one, the learned no-mask embedding at every position.
    pub fn dense(&self, mask: Option<&[f32]>) -> Result<Vec<f32>> {
        let (h, w) = self.embedding_size;
        let c = self.embed_dim;
        let Some(mask) = mask else {
            let mut out = vec![0.0f32; c * h * w];
            for k in 0..c {
                out[k * h * w..(k + 1) * h * w].fill(self.no_mask[k]);
            }
            return Ok(out);
        };
        if mask.len() != 16 * h * w {
            bail!(
                "mask input has {} values; expected {}x{} (4x the embedding size)",
                mask.len(),
                4 * h,
                4 * w
            );
        }
        let (c0, l0, c1, l1, c2) = &self.down;
        let (mut x, _, _) = c0.forward(mask, 4 * h, 4 * w, Activation::None);
        l0.forward(&mut x, 2 * h * 2 * w);
        Activation::Gelu.apply(&mut x);
        let (mut x, _, _) = c1.forward(&x, 2 * h, 2 * w, Activation::None);
        l1.forward(&mut x, h * w);
        Activation::Gelu.apply(&mut x);
        Ok(c2.forward(&x, h, w, Activation::None).0)
    }
}

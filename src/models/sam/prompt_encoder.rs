//! SAM's prompt encoder: points and box corners become sparse embeddings (a random-Fourier
//! positional encoding of the pixel-centre coordinates plus a learned embedding per kind), a
//! low-resolution mask becomes a dense embedding through two stride-2 convolutions with
//! LayerNorm2d and GELU. Computed on the host (a handful of vectors and one small image).
//! Keys as in the official checkpoints: `prompt_encoder.pe_layer.positional_encoding_gaussian_matrix`,
//! `prompt_encoder.point_embeddings.{0..3}.weight`, `prompt_encoder.not_a_point_embed.weight`,
//! `prompt_encoder.no_mask_embed.weight`, `prompt_encoder.mask_downscaling.{0,1,3,4,6}.*`.

use crate::weights::{HostTensor, KeyCheck, NamedTensors};
use anyhow::{Result, bail};

/// A point prompt: pixel coordinates in the model's input frame and its label.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct PointPrompt {
    pub x: f64,
    pub y: f64,
    /// 1 foreground, 0 background, -1 padding ("not a point").
    pub label: i32,
}

struct Conv {
    w: Vec<f32>,
    b: Vec<f32>,
    cin: usize,
    cout: usize,
    k: usize,
}

struct LayerNorm2d {
    w: Vec<f32>,
    b: Vec<f32>,
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
    down: (Conv, LayerNorm2d, Conv, LayerNorm2d, Conv),
}

fn take(src: &NamedTensors, check: &mut KeyCheck, key: &str, shape: &[usize]) -> Vec<f32> {
    check
        .take(src, key, shape)
        .map(|t: &HostTensor| t.data.clone())
        .unwrap_or_default()
}

impl PromptEncoder {
    /// Loads the prompt encoder from a checkpoint's tensors (`prefix` is usually
    /// `"prompt_encoder."`); the sizes come from the weights and the given geometry.
    pub fn load(
        src: &NamedTensors,
        prefix: &str,
        embedding_size: (usize, usize),
        input_size: (usize, usize),
    ) -> Result<Self> {
        let g = src.get(&format!(
            "{prefix}pe_layer.positional_encoding_gaussian_matrix"
        ));
        let Some(g) = g else {
            bail!(
                "{}: no {prefix}pe_layer.positional_encoding_gaussian_matrix (not a SAM checkpoint?)",
                src.source
            )
        };
        if g.shape.len() != 2 || g.shape[0] != 2 {
            bail!(
                "{}: positional encoding matrix has shape {:?}, expected [2, C/2]",
                src.source,
                g.shape
            );
        }
        let c = 2 * g.shape[1];
        let m = src
            .get(&format!("{prefix}mask_downscaling.3.weight"))
            .map(|t| t.shape[0])
            .ok_or_else(|| {
                anyhow::anyhow!("{}: no {prefix}mask_downscaling.3.weight", src.source)
            })?;
        let mut ck = KeyCheck::default();
        let k = |n: &str| format!("{prefix}{n}");
        let conv = |name: &str, cin: usize, cout: usize, ks: usize, ck: &mut KeyCheck| Conv {
            w: take(src, ck, &k(&format!("{name}.weight")), &[cout, cin, ks, ks]),
            b: take(src, ck, &k(&format!("{name}.bias")), &[cout]),
            cin,
            cout,
            k: ks,
        };
        let c0 = conv("mask_downscaling.0", 1, m / 4, 2, &mut ck);
        let c1 = conv("mask_downscaling.3", m / 4, m, 2, &mut ck);
        let c2 = conv("mask_downscaling.6", m, c, 1, &mut ck);
        let ln = |name: &str, n: usize, ck: &mut KeyCheck| LayerNorm2d {
            w: take(src, ck, &k(&format!("{name}.weight")), &[n]),
            b: take(src, ck, &k(&format!("{name}.bias")), &[n]),
        };
        let l0 = ln("mask_downscaling.1", m / 4, &mut ck);
        let l1 = ln("mask_downscaling.4", m, &mut ck);
        let pe: [Vec<f32>; 4] = std::array::from_fn(|i| {
            take(
                src,
                &mut ck,
                &k(&format!("point_embeddings.{i}.weight")),
                &[1, c],
            )
        });
        let not_a_point = take(src, &mut ck, &k("not_a_point_embed.weight"), &[1, c]);
        let no_mask = take(src, &mut ck, &k("no_mask_embed.weight"), &[1, c]);
        ck.finish(src, "SAM prompt encoder")?;
        Ok(Self {
            embed_dim: c,
            embedding_size,
            input_size,
            gaussian: g.data.clone(),
            point_embeddings: pe,
            not_a_point,
            no_mask,
            down: (c0, l0, c1, l1, c2),
        })
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
        let mut out = Vec::new();
        let mut pts: Vec<PointPrompt> = points.to_vec();
        if !pts.is_empty() && bbox.is_none() {
            // The padding point sits at (0, 0) before the +0.5 shift; its encoding is replaced.
            pts.push(PointPrompt {
                x: -0.5,
                y: -0.5,
                label: -1,
            });
        }
        for p in &pts {
            let mut e = self.coords_pe(p.x, p.y);
            let add: &[f32] = match p.label {
                -1 => {
                    e.iter_mut().for_each(|v| *v = 0.0);
                    &self.not_a_point
                }
                0 => &self.point_embeddings[0],
                1 => &self.point_embeddings[1],
                l => bail!("point label {l}: labels are 1 (foreground) or 0 (background)"),
            };
            e.iter_mut().zip(add).for_each(|(v, a)| *v += a);
            out.push(e);
        }
        if let Some([x0, y0, x1, y1]) = bbox {
            for (i, (x, y)) in [(x0, y0), (x1, y1)].into_iter().enumerate() {
                let mut e = self.coords_pe(x, y);
                e.iter_mut()
                    .zip(&self.point_embeddings[2 + i])
                    .for_each(|(v, a)| *v += a);
                out.push(e);
            }
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
        let x = conv(c0, mask, 4 * h, 4 * w);
        let x = gelu(layer_norm2d(l0, x, 2 * h * 2 * w));
        let x = conv(c1, &x, 2 * h, 2 * w);
        let x = gelu(layer_norm2d(l1, x, h * w));
        Ok(conv(c2, &x, h, w))
    }
}

/// Convolution with kernel = stride (2x2 stride 2, or 1x1), no padding.
fn conv(c: &Conv, x: &[f32], h: usize, w: usize) -> Vec<f32> {
    let (y, _, _) =
        crate::models::host::conv2d(x, c.cin, h, w, &c.w, Some(&c.b), c.cout, c.k, c.k, 0, 1);
    y
}

/// LayerNorm over channels at each position (eps 1e-6), as SAM's `LayerNorm2d`.
fn layer_norm2d(ln: &LayerNorm2d, mut x: Vec<f32>, hw: usize) -> Vec<f32> {
    crate::models::host::layer_norm2d(&mut x, &ln.w, &ln.b, hw, 1e-6);
    x
}

/// Exact GELU, `x * Phi(x)` (PyTorch's default), in parallel chunks for large inputs.
pub fn gelu(mut x: Vec<f32>) -> Vec<f32> {
    gelu_inplace(&mut x);
    x
}

/// [`gelu`] in place.
pub fn gelu_inplace(x: &mut [f32]) {
    use rayon::prelude::*;
    let f = |v: &mut f32| *v = 0.5 * *v * (1.0 + erf(*v * std::f32::consts::FRAC_1_SQRT_2));
    if x.len() >= 1 << 16 {
        x.par_chunks_mut(1 << 14)
            .for_each(|c| c.iter_mut().for_each(f));
    } else {
        x.iter_mut().for_each(f);
    }
}

/// erf in f32 by a rational approximation on [-4, 4] (odd numerator of degree 13, even
/// denominator of degree 8; the form Eigen and XLA use), within 5e-7 of the true value.
#[inline]
pub fn erf(x: f32) -> f32 {
    let x = x.clamp(-4.0, 4.0);
    let x2 = x * x;
    let mut p = x2 * -2.726_142_3e-10 + 2.770_681_4e-8;
    p = x2 * p + -2.101_024e-6;
    p = x2 * p + -5.692_506_4e-5;
    p = x2 * p + -7.349_906_3e-4;
    p = x2 * p + -2.954_600_1e-3;
    p = x2 * p + -1.609_603_3e-2;
    p *= x;
    let mut q = x2 * -1.456_607_2e-5 + -2.133_740_6e-4;
    q = x2 * q + -1.682_827e-3;
    q = x2 * q + -7.373_329_2e-3;
    q = x2 * q + -1.426_474e-2;
    p / q
}

#[cfg(test)]
fn libm_erf(x: f64) -> f64 {
    // erf via the complementary error function's continued fraction for large |x| and a Taylor
    // series for small |x|; both converge to double precision in the ranges used.
    let ax = x.abs();
    let r = if ax < 2.5 {
        // Taylor series: erf(x) = 2/sqrt(pi) * sum (-1)^n x^(2n+1) / (n! (2n+1))
        let mut sum = ax;
        let mut term = ax;
        let x2 = ax * ax;
        let mut n = 0.0;
        loop {
            n += 1.0;
            term *= -x2 / n;
            let add = term / (2.0 * n + 1.0);
            sum += add;
            if add.abs() <= 1e-17 * sum.abs() || n > 200.0 {
                break;
            }
        }
        sum * 2.0 / std::f64::consts::PI.sqrt()
    } else {
        // Continued fraction for erfc (Lentz), then 1 - erfc.
        let x2 = ax * ax;
        let mut f = ax;
        let tiny = 1e-300;
        let mut c = f;
        let mut d = 0.0;
        for i in 1..200 {
            let a = i as f64 / 2.0;
            d = ax + a * d;
            d = if d.abs() < tiny { tiny } else { d };
            c = ax + a / c;
            c = if c.abs() < tiny { tiny } else { c };
            d = 1.0 / d;
            let delta = c * d;
            f *= delta;
            if (delta - 1.0).abs() < 1e-16 {
                break;
            }
        }
        1.0 - (-x2).exp() / (f * std::f64::consts::PI.sqrt())
    };
    if x < 0.0 { -r } else { r }
}

#[cfg(test)]
mod tests {
    #[test]
    fn fast_erf_is_accurate() {
        let mut worst = 0.0f64;
        for i in -60000..=60000 {
            let x = i as f32 * 1e-4;
            let e = (super::erf(x) as f64 - super::libm_erf(x as f64)).abs();
            worst = worst.max(e);
        }
        assert!(worst < 5e-7, "max erf error {worst:e}");
    }

    #[test]
    fn erf_values() {
        for (x, want) in [
            (0.0, 0.0),
            (0.5, 0.5204998778130465),
            (1.0, 0.8427007929497149),
            (2.0, 0.9953222650189527),
            (3.0, 0.9999779095030014),
            (-1.5, -0.9661051464753108),
        ] {
            assert!(
                (super::libm_erf(x) - want).abs() < 1e-12,
                "erf({x}) = {} vs {want}",
                super::libm_erf(x)
            );
        }
    }
}

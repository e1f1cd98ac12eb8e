//! SAM 2's feature pyramid neck (`FpnNeck`): a 1x1 lateral convolution per trunk stage to
//! the model width, and a top-down path (nearest 2x upsampling, summed) only into the levels
//! the config names (`fpn_top_down_levels: [2, 3]` in every official config: the two
//! high-resolution levels keep their lateral features alone). Positions are rows
//! `[H * W, C]`. Keys `image_encoder.neck.convs.{j}.conv.*`, `j = 0` for the lowest
//! resolution.

use super::hiera::StageOutput;
use crate::nn::{Linear, Weights};
use anyhow::{Result, bail};

pub struct FpnNeck {
    pub d_model: usize,
    /// The lateral 1x1 convolution of each level, high resolution first.
    pub laterals: Vec<Linear>,
    pub top_down_levels: Vec<usize>,
}

/// A 1x1 convolution `[cout, cin, 1, 1]` as a linear layer on rows.
pub fn pointwise(w: &Weights, cin: usize, cout: usize) -> Linear {
    Linear::new(
        w.get("weight", &[cout, cin, 1, 1]),
        w.get("bias", &[cout]),
        cin,
        cout,
    )
    .with_precision(w.precision())
}

/// `second(first(x))` of two linear layers as one (in f64, then rounded), in the precision of
/// `second`.
pub fn compose(first: &Linear, second: &Linear) -> Linear {
    let (i, m, o) = (first.inp, first.out, second.out);
    assert_eq!(second.inp, m, "composed layers must chain");
    let mut w = vec![0.0f32; o * i];
    let mut b = vec![0.0f32; o];
    let (first_w, second_w) = (first.weight(), second.weight());
    for r in 0..o {
        let s = &second_w[r * m..(r + 1) * m];
        for c in 0..i {
            w[r * i + c] = (0..m)
                .map(|k| s[k] as f64 * first_w[k * i + c] as f64)
                .sum::<f64>() as f32;
        }
        b[r] = (second.b[r] as f64 + (0..m).map(|k| s[k] as f64 * first.b[k] as f64).sum::<f64>())
            as f32;
    }
    Linear::new(w, b, i, o).with_precision(second.precision())
}

/// Nearest 2x upsampling of rows `[h * w, c]`.
fn upsample2(x: &[f32], h: usize, w: usize, c: usize) -> Vec<f32> {
    let mut out = vec![0.0f32; 4 * h * w * c];
    for y in 0..2 * h {
        for xx in 0..2 * w {
            out[(y * 2 * w + xx) * c..][..c].copy_from_slice(&x[((y / 2) * w + xx / 2) * c..][..c]);
        }
    }
    out
}

impl FpnNeck {
    /// `channels`: the trunk's stage widths, high resolution first.
    pub fn load(w: &Weights, channels: &[usize]) -> Result<Self> {
        let n = channels.len();
        let Some(d_model) = w.dim("convs.0.conv.weight", 0) else {
            bail!("{}: no {}", w.source(), w.key("convs.0.conv.weight"));
        };
        if w.count_blocks("convs") != n {
            bail!(
                "{}: the neck has {} lateral convolutions for a trunk of {n} stages",
                w.source(),
                w.count_blocks("convs")
            );
        }
        let laterals = (0..n)
            .map(|i| {
                pointwise(
                    &w.pp("convs").pp(n - 1 - i).pp("conv"),
                    channels[i],
                    d_model,
                )
            })
            .collect();
        Ok(Self {
            d_model,
            laterals,
            top_down_levels: vec![n - 2, n - 1],
        })
    }

    /// The pyramid, high resolution first, each level `[h * w, d_model]` or, where `post[i]`
    /// gives a further 1x1 projection, through it (folded into the lateral convolution on
    /// levels without a top-down input).
    pub fn forward(&self, xs: &[StageOutput], post: &[Option<&Linear>]) -> Result<Vec<Vec<f32>>> {
        let n = self.laterals.len();
        if xs.len() != n {
            bail!("the neck has {n} levels, the trunk gave {}", xs.len());
        }
        let mut out: Vec<Vec<f32>> = vec![Vec::new(); n];
        let mut prev: Option<(Vec<f32>, usize, usize)> = None;
        for i in (0..n).rev() {
            let x = &xs[i];
            let p = post.get(i).copied().flatten();
            let top_down = self.top_down_levels.contains(&i) && prev.is_some();
            if !top_down && let Some(p) = p {
                // Nothing above feeds this level: the two projections are one.
                out[i] = compose(&self.laterals[i], p).forward(&x.rows, x.h * x.w);
                prev = None;
                continue;
            }
            let mut f = self.laterals[i].forward(&x.rows, x.h * x.w);
            if top_down && let Some((up, ph, pw)) = &prev {
                if 2 * ph != x.h || 2 * pw != x.w {
                    bail!("FPN levels must halve: {ph}x{pw} above {}x{}", x.h, x.w);
                }
                let u = upsample2(up, *ph, *pw, self.d_model);
                f.iter_mut().zip(&u).for_each(|(a, b)| *a += b);
            }
            out[i] = match p {
                Some(p) => p.forward(&f, x.h * x.w),
                None => f.clone(),
            };
            prev = Some((f, x.h, x.w));
        }
        Ok(out)
    }
}

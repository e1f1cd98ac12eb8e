//! SAM 2's feature pyramid neck (`FpnNeck`): a 1x1 lateral convolution per trunk stage to
//! the model width, and a top-down path (nearest 2x upsampling, summed) only into the levels
//! the config names (`fpn_top_down_levels: [2, 3]` in every official config: the two
//! high-resolution levels keep their lateral features alone). Positions are rows
//! `[H * W, C]`. Keys `image_encoder.neck.convs.{j}.conv.*`, `j = 0` for the lowest
//! resolution.

use super::hiera::StageOutput;
use crate::nn::{Linear, Weights};
use crate::ops::Precision;
use anyhow::{Result, bail};

pub struct FpnNeck {
    pub d_model: usize,
    /// High resolution first.
    levels: Vec<Level>,
}

/// One pyramid level: its lateral 1x1 convolution (with the level's further projection folded
/// in when nothing above feeds it), whether the level above is added to it, and the further
/// projection that follows the sum when one is.
struct Level {
    lateral: Linear,
    top_down: bool,
    post: Option<Linear>,
    /// The projection is folded into `lateral`: its output is not `d_model` features, and
    /// the level below takes no sum from it.
    folded: bool,
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
    /// The model width of the neck under `w` (its lateral convolutions' outputs).
    pub fn width(w: &Weights) -> Result<usize> {
        match w.dim("convs.0.conv.weight", 0) {
            Some(d) => Ok(d),
            None => bail!("{}: no {}", w.source(), w.key("convs.0.conv.weight")),
        }
    }

    /// `channels`: the trunk's stage widths, high resolution first; `post[i]`: a further 1x1
    /// projection of level `i` (f32 layers `[d_model] -> [_]`; SAM 2's `conv_s0` / `conv_s1`).
    /// Where no level above feeds a level, its two projections are composed here, once, in
    /// f32 and then converted to the loader's precision.
    pub fn load(w: &Weights, channels: &[usize], post: Vec<Option<Linear>>) -> Result<Self> {
        let n = channels.len();
        if n == 0 {
            bail!("{}: a neck needs at least one trunk stage", w.source());
        }
        let d_model = Self::width(w)?;
        if w.count_blocks("convs") != n {
            bail!(
                "{}: the neck has {} lateral convolutions for a trunk of {n} stages",
                w.source(),
                w.count_blocks("convs")
            );
        }
        if post.len() > n {
            bail!("{} projections after a {n}-level neck", post.len());
        }
        if let Some(p) = post.iter().flatten().find(|p| p.inp != d_model) {
            bail!(
                "a projection of {} channels after a {d_model}-channel neck",
                p.inp
            );
        }
        let precision = w.precision();
        let f32_weights = w.clone().with_precision(Precision::F32);
        let top_down_levels = [n.saturating_sub(2), n - 1];
        let mut post = post;
        post.resize_with(n, || None);
        let mut levels: Vec<Level> = Vec::with_capacity(n);
        // Top-down: a listed level takes the sum only when the level above kept its own
        // lateral features (was not folded into a projection).
        let mut above_kept = false;
        for (i, p) in post.into_iter().enumerate().rev() {
            let lateral = pointwise(
                &f32_weights.pp("convs").pp(n - 1 - i).pp("conv"),
                channels[i],
                d_model,
            );
            let top_down = top_down_levels.contains(&i) && above_kept;
            let level = match p {
                Some(p) if !top_down => Level {
                    lateral: compose(&lateral, &p).with_precision(precision),
                    top_down,
                    post: None,
                    folded: true,
                },
                p => Level {
                    lateral: lateral.with_precision(precision),
                    top_down,
                    post: p.map(|p| p.with_precision(precision)),
                    folded: false,
                },
            };
            above_kept = !level.folded;
            levels.push(level);
        }
        levels.reverse();
        Ok(Self { d_model, levels })
    }

    /// The pyramid, high resolution first, each level `[h * w, d_model]` or, where the level
    /// has a further projection, through it.
    pub fn forward(&self, xs: &[StageOutput]) -> Result<Vec<Vec<f32>>> {
        let n = self.levels.len();
        if xs.len() != n {
            bail!("the neck has {n} levels, the trunk gave {}", xs.len());
        }
        let mut out: Vec<Vec<f32>> = vec![Vec::new(); n];
        let mut above: Option<(Vec<f32>, usize, usize)> = None;
        for (i, level) in self.levels.iter().enumerate().rev() {
            let x = &xs[i];
            let mut f = level.lateral.forward(&x.rows, x.h * x.w);
            if level.top_down {
                let Some((up, ph, pw)) = &above else {
                    bail!("the neck's level {i} has no level above it");
                };
                if 2 * ph != x.h || 2 * pw != x.w {
                    bail!("FPN levels must halve: {ph}x{pw} above {}x{}", x.h, x.w);
                }
                let u = upsample2(up, *ph, *pw, self.d_model);
                f.iter_mut().zip(&u).for_each(|(a, b)| *a += b);
            }
            let projected = level.post.as_ref().map(|p| p.forward(&f, x.h * x.w));
            out[i] = projected.unwrap_or_else(|| f.clone());
            above = (!level.folded).then_some((f, x.h, x.w));
        }
        Ok(out)
    }
}

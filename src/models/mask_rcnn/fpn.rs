//! The feature pyramid (Lin et al. 2017) as torchvision's `FeaturePyramidNetwork`: a 1x1 lateral
//! convolution per level, the coarser level's output added after a nearest-neighbour upsampling
//! to the finer level's size, a 3x3 output convolution per level, and a max-pooled extra level
//! (P6: `max_pool2d(P5, 1, 2)`, `LastLevelMaxPool`). The v2 models put a BatchNorm after every
//! convolution (folded here). Keys `backbone.fpn.{inner,layer}_blocks.{i}.0.*` (and `.1.*` for the
//! BatchNorm).

use super::backbone::FeatureMap;
use crate::nn::{Conv2d, ConvSpec, Weights};
use crate::ops::Activation;
use crate::ops::layout::add_assign;
use crate::ops::pool::max_pool2d;
use crate::ops::resize::nearest;

pub struct Fpn {
    inner: Vec<Conv2d>,
    layer: Vec<Conv2d>,
    pub out_channels: usize,
}

/// A convolution of a torchvision `Conv2dNormActivation` (`{i}.0`), with its BatchNorm (`{i}.1`)
/// folded when the model has one.
pub(crate) fn conv_norm(w: &Weights, spec: ConvSpec, batch_norm: bool) -> Conv2d {
    if batch_norm {
        Conv2d::load_bn(&w.pp(0), &w.pp(1), spec, 1e-5)
    } else {
        Conv2d::load(&w.pp(0), spec)
    }
}

impl Fpn {
    /// `w` scoped to `backbone.fpn`; `in_channels` of C2-C5.
    pub fn load(w: &Weights, in_channels: &[usize], out: usize, batch_norm: bool) -> Self {
        let inner = in_channels
            .iter()
            .enumerate()
            .map(|(i, &c)| {
                conv_norm(
                    &w.pp("inner_blocks").pp(i),
                    ConvSpec::same(c, out, 1),
                    batch_norm,
                )
            })
            .collect();
        let layer = (0..in_channels.len())
            .map(|i| {
                conv_norm(
                    &w.pp("layer_blocks").pp(i),
                    ConvSpec::same(out, out, 3),
                    batch_norm,
                )
            })
            .collect();
        Self {
            inner,
            layer,
            out_channels: out,
        }
    }

    /// P2-P5 and P6 from C2-C5.
    pub fn forward(&self, c: &[FeatureMap]) -> Vec<FeatureMap> {
        let n = c.len();
        let oc = self.out_channels;
        let last = &c[n - 1];
        let mut inner = self.inner[n - 1]
            .forward(&last.data, last.h, last.w, Activation::None)
            .0;
        let (mut ih, mut iw) = (last.h, last.w);
        let mut outs = vec![self.level(n - 1, &inner, ih, iw)];
        for i in (0..n - 1).rev() {
            let f = &c[i];
            let mut lateral = self.inner[i].forward(&f.data, f.h, f.w, Activation::None).0;
            add_assign(&mut lateral, &nearest(&inner, oc, (ih, iw), (f.h, f.w)));
            (inner, ih, iw) = (lateral, f.h, f.w);
            outs.insert(0, self.level(i, &inner, ih, iw));
        }
        let p5 = &outs[n - 1];
        let (p6, h6, w6) = max_pool2d(&p5.data, oc, p5.h, p5.w, 1, 2, 0);
        outs.push(FeatureMap {
            data: p6,
            c: oc,
            h: h6,
            w: w6,
        });
        outs
    }

    fn level(&self, i: usize, x: &[f32], h: usize, w: usize) -> FeatureMap {
        let (data, h, w) = self.layer[i].forward(x, h, w, Activation::None);
        FeatureMap {
            data,
            c: self.out_channels,
            h,
            w,
        }
    }
}

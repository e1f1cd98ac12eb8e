//! `nn.Conv2d`, optionally followed by an inference-mode BatchNorm that is folded into it at
//! load (`ConvBn`: one pass over the activations instead of two), and `nn.ConvTranspose2d`
//! with kernel 2, stride 2.

use super::loader::Weights;
use super::norm::LayerNorm2d;
use crate::ops::conv::ConvKernel;
use crate::ops::conv_transpose::ConvTranspose2x2;
use crate::ops::norm::{BatchNormParams, fold_batchnorm};
use crate::ops::{Activation, Precision};

/// The geometry of a square convolution.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ConvSpec {
    pub cin: usize,
    pub cout: usize,
    pub k: usize,
    pub stride: usize,
    pub pad: usize,
    pub groups: usize,
}

impl ConvSpec {
    /// Stride 1, "same" padding `k / 2`, dense.
    pub fn same(cin: usize, cout: usize, k: usize) -> Self {
        Self {
            cin,
            cout,
            k,
            stride: 1,
            pad: k / 2,
            groups: 1,
        }
    }

    pub fn stride(self, stride: usize) -> Self {
        Self { stride, ..self }
    }

    pub fn pad(self, pad: usize) -> Self {
        Self { pad, ..self }
    }

    pub fn groups(self, groups: usize) -> Self {
        Self { groups, ..self }
    }

    fn weight_shape(&self) -> [usize; 4] {
        [self.cout, self.cin / self.groups, self.k, self.k]
    }
}

#[derive(Clone, Debug)]
pub struct Conv2d {
    pub kernel: ConvKernel,
}

impl Conv2d {
    /// `weight` and `bias` under `w`.
    pub fn load(w: &Weights, spec: ConvSpec) -> Self {
        let weight = w.get("weight", &spec.weight_shape());
        let bias = w.get("bias", &[spec.cout]);
        Self::from_parts(weight, Some(bias), spec).with_precision(w.precision())
    }

    /// A convolution built with `bias=False`.
    pub fn load_no_bias(w: &Weights, spec: ConvSpec) -> Self {
        let weight = w.get("weight", &spec.weight_shape());
        Self::from_parts(weight, None, spec).with_precision(w.precision())
    }

    /// A convolution (`conv`) followed by a BatchNorm (`bn`: `weight`, `bias`, `running_mean`,
    /// `running_var`), folded. Torchvision's `FrozenBatchNorm2d` has the same keys.
    pub fn load_bn(conv: &Weights, bn: &Weights, spec: ConvSpec, eps: f32) -> Self {
        let mut weight = conv.get("weight", &spec.weight_shape());
        let mut bias = conv
            .get_opt("bias", &[spec.cout])
            .unwrap_or_else(|| vec![0.0; spec.cout]);
        let c = [spec.cout];
        let (gamma, beta) = (bn.get("weight", &c), bn.get("bias", &c));
        let (mean, var) = (bn.get("running_mean", &c), bn.get("running_var", &c));
        fold_batchnorm(
            &mut weight,
            &mut bias,
            &BatchNormParams {
                gamma: &gamma,
                beta: &beta,
                mean: &mean,
                var: &var,
                eps,
            },
        );
        Self::from_parts(weight, Some(bias), spec).with_precision(conv.precision())
    }

    /// The convolution computing in `precision` (see [`ConvKernel::with_precision`]).
    pub fn with_precision(self, precision: Precision) -> Self {
        Self {
            kernel: self.kernel.with_precision(precision),
        }
    }

    pub fn from_parts(weight: Vec<f32>, bias: Option<Vec<f32>>, s: ConvSpec) -> Self {
        Self {
            kernel: ConvKernel::new(weight, bias, s.cin, s.cout, s.k, s.stride, s.pad, s.groups),
        }
    }

    pub fn cin(&self) -> usize {
        self.kernel.cin
    }

    pub fn cout(&self) -> usize {
        self.kernel.cout
    }

    /// The same stride-1 convolution on `n` small maps at once (`[n, cin, h, w]` ->
    /// `[n, cout, h, w]`): the maps are laid side by side with `2 * pad` zero columns between
    /// them, so that one large product replaces `n` small ones (each map still sees only zero
    /// padding around it).
    pub fn forward_many(
        &self,
        x: &[f32],
        n: usize,
        h: usize,
        w: usize,
        act: Activation,
    ) -> Vec<f32> {
        let k = &self.kernel;
        assert!(
            k.stride == 1 && 2 * k.pad + 1 == k.k,
            "forward_many needs a stride-1 'same' convolution"
        );
        if n == 0 {
            return Vec::new();
        }
        let gutter = 2 * k.pad;
        let packed = pack_maps(x, n, k.cin, h, w, gutter);
        let wide = n * w + n.saturating_sub(1) * gutter;
        let (y, _, _) = k.forward(&packed, h, wide, act);
        unpack_maps(&y, n, k.cout, h, w, gutter, 1)
    }

    /// `[cin, h, w]` -> `([cout, ho, wo], ho, wo)`, with `act` applied.
    pub fn forward(
        &self,
        x: &[f32],
        h: usize,
        w: usize,
        act: Activation,
    ) -> (Vec<f32>, usize, usize) {
        self.kernel.forward(x, h, w, act)
    }
}

#[derive(Clone, Debug)]
pub struct ConvTranspose2d {
    pub op: ConvTranspose2x2,
}

impl ConvTranspose2d {
    /// Kernel 2, stride 2: `weight [cin, cout, 2, 2]`, `bias [cout]`.
    pub fn load(w: &Weights, cin: usize, cout: usize) -> Self {
        let weight = w.get("weight", &[cin, cout, 2, 2]);
        let bias = Some(w.get("bias", &[cout]));
        Self {
            op: ConvTranspose2x2::new(&weight, bias, cin, cout),
        }
    }

    /// The layer computing its product in `precision` on `[cin, h, w]` maps (the row layouts
    /// stay in f32).
    pub fn with_precision(self, precision: Precision) -> Self {
        Self {
            op: self.op.with_precision(precision),
        }
    }

    /// `[cin, h, w]` -> `[cout, 2h, 2w]`.
    pub fn forward(&self, x: &[f32], h: usize, w: usize, act: Activation) -> Vec<f32> {
        self.op.forward(x, h, w, act)
    }

    /// The same from position rows `[h * w, cin]`.
    pub fn forward_rows(&self, x: &[f32], h: usize, w: usize, act: Activation) -> Vec<f32> {
        self.op.forward_rows(x, h, w, act)
    }

    /// `act(convt(x) + skip)` (a skip connection added before the activation).
    pub fn forward_add(
        &self,
        x: &[f32],
        h: usize,
        w: usize,
        skip: Option<&[f32]>,
        act: Activation,
    ) -> Vec<f32> {
        self.op.forward_add(x, h, w, skip, act)
    }

    /// `proj @ act(convt(x) + skip)` (`proj` `[m, cout]`) -> `[m, 2h, 2w]`, without the
    /// full-resolution map (see `ConvTranspose2x2::forward_projected`).
    #[allow(clippy::too_many_arguments)]
    pub fn forward_projected(
        &self,
        x: &[f32],
        h: usize,
        w: usize,
        skip: Option<&[f32]>,
        act: Activation,
        proj: &[f32],
        m: usize,
    ) -> Vec<f32> {
        self.op.forward_projected(x, h, w, skip, act, proj, m)
    }

    /// [`forward_add`](Self::forward_add) from position rows `[h * w, cin]`.
    pub fn forward_rows_add(
        &self,
        x: &[f32],
        h: usize,
        w: usize,
        skip: Option<&[f32]>,
        act: Activation,
    ) -> Vec<f32> {
        self.op.forward_rows_add(x, h, w, skip, act)
    }

    /// `act(norm(convt(x) + skip))` from position rows `[h * w, cin]`, `norm` SAM's
    /// `LayerNorm2d` over the output channels, in one pass over the output.
    pub fn forward_rows_norm(
        &self,
        x: &[f32],
        h: usize,
        w: usize,
        skip: Option<&[f32]>,
        norm: &LayerNorm2d,
        act: Activation,
    ) -> Vec<f32> {
        self.op
            .forward_rows_norm(x, h, w, skip, (&norm.w, &norm.b, norm.eps), act)
    }
}

/// `[n, c, h, w]` maps side by side as one `[c, h, n * w + (n - 1) * gutter]` map, zeros between.
pub fn pack_maps(x: &[f32], n: usize, c: usize, h: usize, w: usize, gutter: usize) -> Vec<f32> {
    assert_eq!(x.len(), n * c * h * w, "packed maps size");
    let wide = n * w + n.saturating_sub(1) * gutter;
    let mut out = vec![0.0f32; c * h * wide];
    for i in 0..n {
        for ch in 0..c {
            for y in 0..h {
                let src = &x[((i * c + ch) * h + y) * w..][..w];
                out[(ch * h + y) * wide + i * (w + gutter)..][..w].copy_from_slice(src);
            }
        }
    }
    out
}

/// The inverse of [`pack_maps`] for an output `scale` times larger than the input (a stride-2
/// transposed convolution has `scale = 2`): `[c, h * scale, wide * scale]` -> `[n, c, h * scale,
/// w * scale]`.
pub fn unpack_maps(
    y: &[f32],
    n: usize,
    c: usize,
    h: usize,
    w: usize,
    gutter: usize,
    scale: usize,
) -> Vec<f32> {
    let wide = (n * w + n.saturating_sub(1) * gutter) * scale;
    let (oh, ow) = (h * scale, w * scale);
    let mut out = vec![0.0f32; n * c * oh * ow];
    for i in 0..n {
        for ch in 0..c {
            for yy in 0..oh {
                let src = &y[(ch * oh + yy) * wide + i * (w + gutter) * scale..][..ow];
                out[((i * c + ch) * oh + yy) * ow..][..ow].copy_from_slice(src);
            }
        }
    }
    out
}

//! The U-Net block: (3x3 conv, padding 1 -> BatchNorm -> ReLU) twice.
//! PyTorch keys: `block.0` conv, `block.1` BN, `block.3` conv, `block.4` BN (without BatchNorm:
//! `block.0` and `block.2`).

use crate::autodiff;
use burn::nn::conv::{Conv2d, Conv2dConfig};
use burn::nn::{BatchNorm, BatchNormConfig, PaddingConfig2d};
use burn::prelude::*;
use burn::tensor::activation::relu;

#[derive(Module, Debug)]
pub struct DoubleConv {
    pub conv1: Conv2d,
    pub bn1: Option<BatchNorm>,
    pub conv2: Conv2d,
    pub bn2: Option<BatchNorm>,
}

pub fn conv3x3(cin: usize, cout: usize, device: &Device) -> Conv2d {
    Conv2dConfig::new([cin, cout], [3, 3])
        .with_padding(PaddingConfig2d::Explicit(1, 1, 1, 1))
        .init(device)
}

impl DoubleConv {
    pub fn new(cin: usize, cout: usize, batch_norm: bool, device: &Device) -> Self {
        let bn = || batch_norm.then(|| BatchNormConfig::new(cout).init(device));
        Self {
            conv1: conv3x3(cin, cout, device),
            bn1: bn(),
            conv2: conv3x3(cout, cout, device),
            bn2: bn(),
        }
    }

    pub fn forward(&self, x: Tensor<4>) -> Tensor<4> {
        self.forward_with(x, false)
    }

    /// `engine`: run on the engine's training operations ([`crate::autodiff`]); the caller
    /// checks that they apply to `x`.
    pub fn forward_with(&self, x: Tensor<4>, engine: bool) -> Tensor<4> {
        if engine {
            let x = conv(&self.conv1, x, true);
            let x = norm_relu(self.bn1.as_ref(), x);
            let x = conv(&self.conv2, x, true);
            return norm_relu(self.bn2.as_ref(), x);
        }
        let mut x = self.conv1.forward(x);
        if let Some(bn) = &self.bn1 {
            x = bn.forward(x);
        }
        x = relu(x);
        x = self.conv2.forward(x);
        if let Some(bn) = &self.bn2 {
            x = bn.forward(x);
        }
        relu(x)
    }
}

/// A convolution on the engine's training operation when `engine` and the layer is one it runs
/// (U-Net's: square odd kernel, stride 1, no dilation, one group, symmetric "same" padding,
/// a bias), else burn's.
pub(super) fn conv(c: &Conv2d, x: Tensor<4>, engine: bool) -> Tensor<4> {
    let [kh, kw] = c.kernel_size;
    let pad = kh / 2;
    let same = match c.padding {
        PaddingConfig2d::Explicit(t, l, b, r) => [t, l, b, r] == [pad; 4],
        PaddingConfig2d::Same => true,
        PaddingConfig2d::Valid => pad == 0,
    };
    let fits = kh == kw && kh % 2 == 1 && c.stride == [1, 1] && c.dilation == [1, 1];
    match (&c.bias, engine && fits && same && c.groups == 1) {
        (Some(b), true) => autodiff::conv2d(x, c.weight.val(), b.val(), pad),
        _ => c.forward(x),
    }
}

/// BatchNorm (when present) then ReLU on the engine's fused training operation, the running
/// statistics updated as burn's `BatchNorm` does (biased batch variance, `momentum`).
fn norm_relu(bn: Option<&BatchNorm>, x: Tensor<4>) -> Tensor<4> {
    let Some(bn) = bn else {
        return relu(x);
    };
    if !bn.training.val().is_enabled() {
        return relu(bn.forward(x));
    }
    let device = x.device();
    let (y, stats) = autodiff::batch_norm_train(x, bn.gamma.val(), bn.beta.val(), bn.epsilon, true);
    autodiff::update_running_stats(bn, &stats, None, &device);
    y
}

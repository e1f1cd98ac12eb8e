//! The U-Net block: (3x3 conv, padding 1 -> BatchNorm -> ReLU) twice.
//! PyTorch keys: `block.0` conv, `block.1` BN, `block.3` conv, `block.4` BN (without BatchNorm:
//! `block.0` and `block.2`).

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

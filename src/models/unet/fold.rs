//! Inference form of the U-Net: each BatchNorm (eval mode, running statistics) is folded into the
//! convolution before it, `w' = w * g / sqrt(v + eps)`, `b' = (b - m) * g / sqrt(v + eps) + beta`,
//! which removes a full pass over every activation. PyTorch eager does not do this.

use super::double_conv::DoubleConv;
use super::unet::UNet;
use burn::module::Param;
use burn::nn::BatchNorm;
use burn::nn::conv::Conv2d;
use burn::prelude::*;

fn fold_conv(conv: &Conv2d, bn: &BatchNorm) -> Conv2d {
    let [cout, _, _, _] = conv.weight.shape().dims();
    let scale = bn.gamma.val() / (bn.running_var.value() + bn.epsilon).sqrt();
    let weight = conv.weight.val() * scale.clone().reshape([cout, 1, 1, 1]);
    let bias = match &conv.bias {
        Some(b) => b.val(),
        None => Tensor::zeros([cout], &conv.weight.device()),
    };
    let bias = (bias - bn.running_mean.value()) * scale + bn.beta.val();
    Conv2d {
        weight: Param::from_tensor(weight),
        bias: Some(Param::from_tensor(bias)),
        stride: conv.stride,
        kernel_size: conv.kernel_size,
        dilation: conv.dilation,
        groups: conv.groups,
        padding: conv.padding.clone(),
    }
}

fn fold_double(d: &DoubleConv) -> DoubleConv {
    let f = |conv: &Conv2d, bn: &Option<BatchNorm>| match bn {
        Some(bn) => fold_conv(conv, bn),
        None => conv.clone(),
    };
    DoubleConv {
        conv1: f(&d.conv1, &d.bn1),
        bn1: None,
        conv2: f(&d.conv2, &d.bn2),
        bn2: None,
    }
}

impl UNet {
    /// The same function in eval mode with BatchNorm folded away. Call on a `valid()` model.
    pub fn fold_batchnorm(&self) -> UNet {
        UNet {
            enc: self.enc.iter().map(fold_double).collect(),
            bottleneck: fold_double(&self.bottleneck),
            up: self.up.clone(),
            dec: self.dec.iter().map(fold_double).collect(),
            out_conv: self.out_conv.clone(),
            pool: self.pool.clone(),
            config: self.config.clone(),
            train_ops: self.train_ops,
        }
    }
}
